//! `strongroom risk`: the risk models offline. `eval` replays a labelled CSV through them
//! with progressive validation and prints ROC AUC and PR AUC per model.

use std::path::PathBuf;

use anyhow::Context;
use clap::Subcommand;

#[derive(Debug, Subcommand)]
pub enum RiskCommand {
    /// Progressive validation over a labelled CSV (plain or gzipped, numeric feature
    /// columns): score each row, then learn from it; print ROC AUC and PR AUC.
    Eval {
        file: PathBuf,
        /// The label column (0/1 or true/false); every other column is a feature.
        #[arg(long)]
        label_column: String,
        /// Only the first N rows.
        #[arg(long)]
        limit: Option<usize>,
        /// Leave a column out (repeatable), e.g. an id or a text column.
        #[arg(long = "skip-column")]
        skip: Vec<String>,
    },
    /// Replay the stored withdrawals (and logins, security changes) through a candidate
    /// rule set beside the current one, before publishing it: decisions of each, what
    /// changes, how each agrees with analysts' decisions, what shadow rules would do.
    Backtest {
        /// The candidate rule set (TOML).
        #[arg(long)]
        rules: PathBuf,
        /// The rule set in force (default: the built-in rules).
        #[arg(long)]
        current: Option<PathBuf>,
        /// The lists folder (as `dev --risk-lists`).
        #[arg(long)]
        lists: Option<PathBuf>,
        /// The geo table (as `dev --risk-geo`).
        #[arg(long)]
        geo: Option<PathBuf>,
        #[command(flatten)]
        db: crate::DbArgs,
    },
}

pub async fn run(cmd: RiskCommand) -> anyhow::Result<std::process::ExitCode> {
    match cmd {
        RiskCommand::Backtest { rules, current, lists, geo, db } => {
            let read = |p: &PathBuf| -> anyhow::Result<RuleSet> {
                Ok(RuleSet::from_toml(
                    &std::fs::read_to_string(p)
                        .with_context(|| format!("reading {}", p.display()))?,
                )?)
            };
            let candidate = read(&rules)?;
            let current = match &current {
                Some(p) => read(p)?,
                None => RuleSet::from_toml(DEFAULT_RULES)?,
            };
            let lists = match &lists {
                Some(d) => load_lists(d)?,
                None => Lists::default(),
            };
            let geo = geo.as_deref().map(load_geo).transpose()?;
            let store = db.open().await?;
            // Opens the events' sealed IP addresses, when this machine has the key.
            let kek = crate::personal_data_key(&db.data_dir, None).ok();
            let kek = kek.as_ref().map(|k| k as &dyn strongroom_crypto::seal::KeyEncryptionKey);
            backtest(&store, current, candidate, &lists, geo, kek).await?;
        }
        RiskCommand::Eval { file, label_column, limit, skip } => {
            let input = std::fs::File::open(&file)
                .with_context(|| format!("opening {}", file.display()))?;
            let table = strongroom_risk::eval::read_table(
                std::io::BufReader::new(input),
                &label_column,
                &skip,
                limit,
            )?;
            use strongroom_core::Env;
            let env = strongroom_core::SystemEnv::new();
            let started = env.monotonic();
            let report = strongroom_risk::eval::evaluate(&table, &Default::default())?;
            let secs = env.monotonic().saturating_sub(started).as_secs_f64().max(1e-9);
            println!(
                "{} rows ({} positive), {} features: {}",
                report.rows,
                report.positives,
                report.features.len(),
                report.features.join(", ")
            );
            println!("{:<40} {:>8} {:>8}", "model", "ROC AUC", "PR AUC");
            for m in &report.models {
                println!("{:<40} {:>8.4} {:>8.4}", m.name, m.roc_auc, m.pr_auc);
            }
            if let Some(best) = report.best() {
                println!("ROC AUC {:.4}", best.roc_auc);
                println!("PR AUC {:.4}", best.pr_auc);
                println!("best: {}", best.name);
            }
            println!(
                "{:.0} rows/s through all models (each row scored and learned by each); models hold {} bytes",
                report.rows as f64 / secs,
                report.model_bytes
            );
        }
    }
    Ok(std::process::ExitCode::SUCCESS)
}

// ---------- the risk worker of the dev stack ----------

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use strongroom_core::withdrawal::{Withdrawal, WithdrawalState};
use strongroom_core::{Env, SystemEnv};
use strongroom_risk::engine::{Assessment, Decision, RiskEngine};
use strongroom_risk::lists::{ListKind, Lists};
use strongroom_risk::profile::{Activity, WithdrawalEvent};
use strongroom_risk::rules::{RuleSet, DEFAULT_RULES};
use strongroom_store::{RiskReview, RiskState, SqlStore, Store, WithdrawalFilter, WriteCtx};
use uuid::Uuid;

use crate::client::at;

/// Where the risk worker gets its lists and rules, and where it sends alerts.
#[derive(Debug, Clone, Default)]
pub struct RiskOptions {
    /// A folder of lists: `*.txt` one address a line (sanctions when the name says
    /// "sanction", else scam), `*.csv` with an `address` column (scam). Reloaded when a file
    /// changes.
    pub lists: Option<PathBuf>,
    /// A rule set (TOML); the default rules otherwise.
    pub rules: Option<PathBuf>,
    /// The security team's webhook and the file holding its HMAC secret.
    pub webhook: Option<(String, PathBuf)>,
    /// The security team's e-mail: the relay and the recipients.
    pub mail: Option<(crate::mail::Smtp, Vec<String>)>,
    /// A NATS server whose JetStream carries risk events.
    pub nats: Option<String>,
    /// IPv4 ranges → places (`start_ip,end_ip,lat,lon,country`), for impossible travel.
    pub geo: Option<PathBuf>,
    /// The key that opens customers' sealed contact details (for their alert e-mail).
    pub personal_data: Option<Arc<dyn strongroom_crypto::seal::KeyEncryptionKey>>,
}

fn load_geo(path: &std::path::Path) -> anyhow::Result<strongroom_risk::geo::GeoTable> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(strongroom_risk::geo::GeoTable::from_csv(&text)?)
}

/// Load every list in `dir`.
pub fn load_lists(dir: &std::path::Path) -> anyhow::Result<Lists> {
    let mut lists = Lists::default();
    let mut names: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    names.sort();
    for path in names {
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_owned();
        let ext = path.extension().and_then(|e| e.to_str()).unwrap_or_default();
        if ext != "txt" && ext != "csv" {
            continue;
        }
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        match ext {
            "txt" => {
                let kind = if name.to_lowercase().contains("sanction") {
                    ListKind::Sanctions
                } else {
                    ListKind::Scam
                };
                lists.add_lines(kind, &name, &text);
            }
            _ => {
                lists.add_csv(ListKind::Scam, &name, &text)?;
            }
        }
    }
    Ok(lists)
}

/// The newest modification time among the folder's files (to notice changes).
fn stamp(dir: &std::path::Path) -> Option<std::time::SystemTime> {
    std::fs::read_dir(dir).ok()?.filter_map(|e| e.ok()?.metadata().ok()?.modified().ok()).max()
}

/// Signed webhooks to the security team.
#[derive(Clone)]
pub struct Alerts {
    webhook: Option<(String, Arc<zeroize::Zeroizing<Vec<u8>>>)>,
    mail: Option<(crate::mail::Smtp, Vec<String>)>,
    client: reqwest::Client,
    /// To e-mail customers: their sealed contacts and the key that opens them.
    customers: Option<(Arc<SqlStore>, Arc<dyn strongroom_crypto::seal::KeyEncryptionKey>)>,
}

impl std::fmt::Debug for Alerts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Alerts").field("webhook", &self.webhook.as_ref().map(|w| &w.0)).finish()
    }
}

impl Alerts {
    pub fn new(
        webhook: Option<(String, PathBuf)>,
        mail: Option<(crate::mail::Smtp, Vec<String>)>,
    ) -> anyhow::Result<Self> {
        let webhook = match webhook {
            Some((url, secret)) => {
                let s = std::fs::read(&secret)
                    .with_context(|| format!("reading {}", secret.display()))?;
                let trimmed = String::from_utf8_lossy(&s).trim().as_bytes().to_vec();
                Some((url, Arc::new(zeroize::Zeroizing::new(trimmed))))
            }
            None => None,
        };
        let client =
            reqwest::Client::builder().use_rustls_tls().timeout(Duration::from_secs(10)).build()?;
        Ok(Alerts { webhook, mail, client, customers: None })
    }

    /// E-mail the customer (when they left an address), with their anti-phishing code first.
    pub fn notify_customer(&self, customer_id: Uuid, subject: &str, text: &str) {
        let (Some((smtp, _)), Some((store, kek))) = (self.mail.clone(), self.customers.clone())
        else {
            return;
        };
        let (subject, text) = (subject.to_owned(), text.to_owned());
        tokio::spawn(async move {
            let sealed = match store.customer_contact(customer_id).await {
                Ok(Some(s)) => s,
                Ok(None) => return,
                Err(e) => return tracing::warn!(error = %e, "customer contact unreadable"),
            };
            let c = match strongroom_server::contact::open_contact(
                kek.as_ref(),
                customer_id,
                &sealed,
            ) {
                Ok(c) => c,
                Err(e) => {
                    return tracing::error!(alert = true, error = %e, %customer_id, "a sealed contact does not open")
                }
            };
            let code = match &c.anti_phishing_code {
                Some(code) => format!("Your anti-phishing code: {code}\n\n"),
                None => String::new(),
            };
            let body = format!("{code}{text}\n\nIf this was not you, contact support at once.\n");
            for attempt in 0..5u64 {
                match smtp.send(std::slice::from_ref(&c.email), &subject, &body).await {
                    Ok(()) => return,
                    Err(e) => tracing::warn!(error = %format!("{e:#}"), "customer e-mail not sent"),
                }
                tokio::time::sleep(Duration::from_millis(500 * (attempt + 1))).await;
            }
        });
    }

    /// Log the alert and post it to the webhook, signed: header
    /// `X-Strongroom-Signature: t=<unix ms>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`.
    pub fn send(&self, kind: &str, detail: serde_json::Value) {
        let body = serde_json::json!({ "kind": kind, "detail": detail }).to_string();
        tracing::warn!(alert = true, kind, detail = %body, "security alert");
        if let Some((smtp, to)) = self.mail.clone() {
            let subject = format!("[Strongroom] {}", kind.replace('_', " "));
            let text = format!(
                "Strongroom security alert: {kind}\n\n{}\n",
                serde_json::to_string_pretty(&detail).unwrap_or_default()
            );
            tokio::spawn(async move {
                for attempt in 0..5u64 {
                    match smtp.send(&to, &subject, &text).await {
                        Ok(()) => return,
                        Err(e) => {
                            tracing::warn!(error = %format!("{e:#}"), "alert e-mail not sent")
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(500 * (attempt + 1))).await;
                }
            });
        }
        let Some((url, secret)) = self.webhook.clone() else { return };
        let client = self.client.clone();
        let t = SystemEnv::new().now().unix_ms();
        tokio::spawn(async move {
            use hmac::{Hmac, Mac};
            let Ok(mut mac) = Hmac::<sha2::Sha256>::new_from_slice(secret.as_slice()) else {
                return;
            };
            mac.update(format!("{t}.{body}").as_bytes());
            let sig = hex::encode(mac.finalize().into_bytes());
            for attempt in 0..5u64 {
                let sent = client
                    .post(&url)
                    .header("content-type", "application/json")
                    .header("x-strongroom-signature", format!("t={t},v1={sig}"))
                    .body(body.clone())
                    .send()
                    .await;
                match sent {
                    Ok(r) if r.status().is_success() => return,
                    Ok(r) => tracing::warn!(status = %r.status(), "webhook refused the alert"),
                    Err(e) => tracing::warn!(error = %e, "webhook unreachable"),
                }
                tokio::time::sleep(Duration::from_millis(500 * (attempt + 1))).await;
            }
        });
    }
}

impl strongroom_server::accounts::Notifier for Alerts {
    fn notify_customer(&self, customer_id: Uuid, subject: &str, text: &str) {
        Alerts::notify_customer(self, customer_id, subject, text)
    }
}

/// Screens destinations at the API with the current lists.
#[derive(Debug)]
pub struct ListScreen {
    lists: Arc<RwLock<Arc<Lists>>>,
    alerts: Alerts,
}

impl strongroom_server::DestinationScreen for ListScreen {
    fn screen(&self, customer_id: Uuid, chain: &str, address: &str) -> Option<String> {
        let lists = self.lists.read().ok()?.clone();
        let hit = lists.check(address)?;
        let why = format!("the destination is on the {} list {}", hit.kind.as_str(), hit.source);
        self.alerts.notify_customer(
            customer_id,
            "Your withdrawal was refused",
            &format!("A withdrawal to {address} was refused: that address is on a sanctions or scam list."),
        );
        self.alerts.send(
            "withdrawal_blocked",
            serde_json::json!({ "customer_id": customer_id, "chain": chain, "destination": address,
                "reason": why, "label": hit.label }),
        );
        Some(why)
    }
}

fn assessment_json(a: &Assessment) -> serde_json::Value {
    let reasons = |r: &[strongroom_risk::engine::Reason]| -> Vec<serde_json::Value> {
        r.iter()
            .map(|r| serde_json::json!({ "source": r.source, "detail": r.detail, "points": r.points }))
            .collect()
    };
    serde_json::json!({
        "reasons": reasons(&a.reasons),
        "shadow": reasons(&a.shadow),
        "features": a.features.iter().map(|(n, v)| serde_json::json!({ "name": n, "value": v })).collect::<Vec<_>>(),
        "rules_version": a.rules_version,
    })
}

fn features_of(review: &RiskReview) -> Vec<f64> {
    at(&review.assessment, "/features")
        .as_array()
        .map(|f| f.iter().map(|x| at(x, "/value").as_f64().unwrap_or(0.0)).collect())
        .unwrap_or_default()
}

/// The engine shared by the worker and the API's scoring route.
#[derive(Debug, Clone)]
pub struct SharedEngine(Arc<std::sync::Mutex<RiskEngine>>);

impl SharedEngine {
    pub fn new(engine: RiskEngine) -> Self {
        SharedEngine(Arc::new(std::sync::Mutex::new(engine)))
    }
    fn with<R>(&self, f: impl FnOnce(&mut RiskEngine) -> R) -> R {
        let mut guard = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        f(&mut guard)
    }
    pub fn assess(&self, ev: &WithdrawalEvent, lists: &Lists) -> Assessment {
        self.with(|e| e.assess(ev, lists))
    }
    pub fn record(&self, ev: &WithdrawalEvent) {
        self.with(|e| e.record(ev))
    }
    fn record_activity(&self, customer: &str, a: &Activity, at_ms: i64) {
        self.with(|e| e.record_activity(customer, a, at_ms))
    }
    fn feedback(&self, features: &[f64], rejected: bool) {
        self.with(|e| e.feedback(features, rejected))
    }
}

/// `POST /v1/risk/score` on the shared engine and the current lists.
#[derive(Debug)]
pub struct EngineScorer {
    pub engine: SharedEngine,
    pub lists: Arc<RwLock<Arc<Lists>>>,
}

impl strongroom_server::RiskScorer for EngineScorer {
    fn score(
        &self,
        i: &strongroom_server::ScoreInput,
        now_ms: i64,
    ) -> (String, u32, Vec<(String, String, u32)>) {
        let lists = self.lists.read().map(|l| l.clone()).unwrap_or_default();
        let ev = WithdrawalEvent {
            customer: i.customer_id.to_string(),
            at_ms: now_ms,
            asset: i.asset.clone(),
            amount: i.amount,
            destination: i.destination.clone(),
            device: i.device_id.clone(),
            ip: i.ip.clone(),
        };
        let a = self.engine.assess(&ev, &lists);
        let reasons = a.reasons.into_iter().map(|r| (r.source, r.detail, r.points)).collect();
        (a.decision.as_str().to_owned(), a.score, reasons)
    }
}

struct Worker {
    store: Arc<SqlStore>,
    engine: SharedEngine,
    lists: Arc<RwLock<Arc<Lists>>>,
    alerts: Alerts,
    /// Device and IP a withdrawal was requested from.
    contexts: Contexts,
    last_event_ms: i64,
    learned: HashSet<Uuid>,
    /// Rejected or blocked withdrawals already seen out of `reserved` (never read again).
    closed: HashSet<Uuid>,
    env: SystemEnv,
    /// Opens events' sealed IP addresses.
    kek: Option<Arc<dyn strongroom_crypto::seal::KeyEncryptionKey>>,
}

type Contexts = HashMap<Uuid, (Option<String>, Option<String>)>;

/// A stored withdrawal as the risk engine sees it, with the device and IP it came from.
fn withdrawal_event(w: &Withdrawal, contexts: &Contexts) -> WithdrawalEvent {
    let (device, ip) = contexts.get(&w.id).cloned().unwrap_or((None, None));
    WithdrawalEvent {
        customer: w.customer_id.to_string(),
        at_ms: w.created_at.unix_ms(),
        asset: w.intent.asset.symbol.to_string(),
        amount: w.intent.amount.base_units(),
        destination: w.intent.destination.as_str().to_owned(),
        device,
        ip,
    }
}

impl Worker {
    fn event(&self, w: &Withdrawal) -> WithdrawalEvent {
        withdrawal_event(w, &self.contexts)
    }

    fn ctx(&self) -> WriteCtx {
        WriteCtx { actor: "risk".into(), now: self.env.now(), request_id: None }
    }

    async fn events(&mut self) -> anyhow::Result<()> {
        loop {
            let batch = self.store.risk_events(self.last_event_ms, 1000).await?;
            if batch.is_empty() {
                return Ok(());
            }
            for e in batch {
                self.last_event_ms = self.last_event_ms.max(e.at.unix_ms());
                let s = |k: &str| at(&e.data, &format!("/{k}")).as_str().map(str::to_owned);
                let ip =
                    strongroom_server::risk::event_ip(self.kek.as_deref(), e.customer_id, &e.data);
                match e.kind.as_str() {
                    "withdrawal_context" => {
                        if let Some(id) = s("withdrawal_id").and_then(|i| Uuid::parse_str(&i).ok())
                        {
                            self.contexts.insert(id, (s("device_id"), ip));
                        }
                    }
                    "login" => self.engine.record_activity(
                        &e.customer_id.to_string(),
                        &Activity::Login { device: s("device_id"), ip },
                        e.at.unix_ms(),
                    ),
                    "security_change" => self.engine.record_activity(
                        &e.customer_id.to_string(),
                        &Activity::SecurityChange,
                        e.at.unix_ms(),
                    ),
                    _ => {}
                }
            }
        }
    }

    /// What already happened: past withdrawals are the customers' usual; analysts'
    /// decisions teach the model.
    async fn replay(&mut self) -> anyhow::Result<()> {
        self.events().await?;
        let mut past = Vec::new();
        for st in [
            WithdrawalState::Built,
            WithdrawalState::Signed,
            WithdrawalState::Broadcast,
            WithdrawalState::Settled,
        ] {
            past.extend(
                self.store
                    .list_withdrawals(&WithdrawalFilter {
                        customer_id: None,
                        state: Some(st),
                        limit: 1000,
                    })
                    .await?,
            );
        }
        past.sort_by_key(|w| w.created_at);
        for w in &past {
            let ev = self.event(w);
            self.engine.record(&ev);
        }
        self.learn().await
    }

    async fn learn(&mut self) -> anyhow::Result<()> {
        for st in [RiskState::Released, RiskState::Rejected] {
            for r in self.store.list_risk_reviews(Some(st), 1000).await? {
                if self.learned.insert(r.withdrawal_id) {
                    self.engine.feedback(&features_of(&r), st == RiskState::Rejected);
                    if st == RiskState::Released {
                        let w = self.store.get_withdrawal(r.withdrawal_id).await?;
                        let ev = self.event(&w);
                        self.engine.record(&ev);
                    }
                }
            }
        }
        Ok(())
    }

    async fn pass(&mut self) -> anyhow::Result<()> {
        self.events().await?;
        let lists = self.lists.read().map_err(|_| anyhow::anyhow!("lists poisoned"))?.clone();
        let reserved = self
            .store
            .list_withdrawals(&WithdrawalFilter {
                customer_id: None,
                state: Some(WithdrawalState::Reserved),
                limit: 1000,
            })
            .await?;
        for w in reserved {
            if self.store.risk_review(w.id).await?.is_some() {
                continue;
            }
            let ev = self.event(&w);
            let a = self.engine.assess(&ev, &lists);
            let state = match a.decision {
                Decision::Allow => RiskState::Cleared,
                Decision::Review => RiskState::Open,
                Decision::Block => RiskState::Blocked,
            };
            let now = self.env.now();
            let review = RiskReview {
                withdrawal_id: w.id,
                customer_id: w.customer_id,
                decision: a.decision.as_str().into(),
                state,
                score: a.score,
                assessment: assessment_json(&a),
                assignee: None,
                notes: Vec::new(),
                decided_by: None,
                created_at: now,
                updated_at: now,
            };
            let kept = self.store.assess_withdrawal(&self.ctx(), review).await?;
            let detail = serde_json::json!({
                "withdrawal_id": w.id, "customer_id": w.customer_id, "asset": ev.asset,
                "amount": w.intent.amount.to_string(), "destination": ev.destination,
                "score": kept.score, "reasons": at(&kept.assessment, "/reasons"),
            });
            let what = format!(
                "{} {} to {}",
                w.intent.amount.format_decimal(w.intent.asset.decimals).unwrap_or_default(),
                ev.asset,
                ev.destination
            );
            match kept.state {
                RiskState::Cleared => self.engine.record(&ev),
                RiskState::Open => {
                    self.alerts.notify_customer(
                        w.customer_id,
                        "Your withdrawal is on hold for a security review",
                        &format!("Your withdrawal of {what} is on hold while our security team reviews it."),
                    );
                    self.alerts.send("withdrawal_paused", detail)
                }
                RiskState::Blocked => {
                    self.alerts.notify_customer(
                        w.customer_id,
                        "Your withdrawal was refused",
                        &format!("Your withdrawal of {what} was refused by our security checks."),
                    );
                    self.alerts.send("withdrawal_blocked", detail)
                }
                _ => {}
            }
        }
        // Rejected or blocked withdrawals still reserved are cancelled (funds released).
        for st in [RiskState::Rejected, RiskState::Blocked] {
            for r in self.store.list_risk_reviews(Some(st), 1000).await? {
                if self.closed.contains(&r.withdrawal_id) {
                    continue;
                }
                let w = self.store.get_withdrawal(r.withdrawal_id).await?;
                if w.state != WithdrawalState::Reserved {
                    self.closed.insert(w.id);
                } else {
                    let entry = strongroom_core::new_id(&self.env);
                    match self
                        .store
                        .transition_withdrawal(
                            &self.ctx(),
                            None,
                            w.id,
                            WithdrawalState::Cancelled,
                            entry,
                        )
                        .await
                    {
                        Ok(_) | Err(strongroom_store::StoreError::InvalidTransition { .. }) => {}
                        Err(e) => return Err(e.into()),
                    }
                }
            }
        }
        self.learn().await
    }
}

/// Start the risk worker and connect destination screening to the API.
pub async fn start_worker(
    store: Arc<SqlStore>,
    opts: RiskOptions,
    api: &strongroom_server::AppState,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let rules = match &opts.rules {
        Some(f) => RuleSet::from_toml(
            &std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?,
        )?,
        None => RuleSet::from_toml(DEFAULT_RULES)?,
    };
    let lists = match &opts.lists {
        Some(dir) => load_lists(dir)?,
        None => Lists::default(),
    };
    tracing::info!(
        addresses = lists.len(),
        rules = rules.rules.len(),
        version = rules.version,
        "risk engine"
    );
    let lists = Arc::new(RwLock::new(Arc::new(lists)));
    let mut alerts = Alerts::new(opts.webhook.clone(), opts.mail.clone())?;
    if let Some(kek) = &opts.personal_data {
        alerts.customers = Some((store.clone(), kek.clone()));
    }
    api.set_notifier(Arc::new(alerts.clone()));
    api.set_destination_screen(Arc::new(ListScreen {
        lists: lists.clone(),
        alerts: alerts.clone(),
    }));
    let mut engine = RiskEngine::new(rules);
    if let Some(g) = &opts.geo {
        engine.set_geo(load_geo(g)?);
    }
    let engine = SharedEngine::new(engine);
    api.set_risk_scorer(Arc::new(EngineScorer { engine: engine.clone(), lists: lists.clone() }));
    let mut worker = Worker {
        store,
        engine,
        lists: lists.clone(),
        alerts,
        contexts: HashMap::new(),
        last_event_ms: 0,
        learned: HashSet::new(),
        closed: HashSet::new(),
        env: SystemEnv::new(),
        kek: opts.personal_data.clone(),
    };
    worker.replay().await?;
    let nats = opts
        .nats
        .clone()
        .map(|url| start_nats_ingest(worker.store.clone(), url, opts.personal_data.clone()));
    let dir = opts.lists.clone();
    Ok(tokio::spawn(async move {
        let mut seen = dir.as_deref().and_then(stamp);
        let mut ticks = 0u64;
        loop {
            // Lists reload without a restart when a file in their folder changes.
            ticks += 1;
            if let (Some(d), true) = (&dir, ticks % 10 == 0) {
                let now = stamp(d);
                if now != seen {
                    match load_lists(d) {
                        Ok(l) => {
                            tracing::info!(addresses = l.len(), "risk lists reloaded");
                            if let Ok(mut w) = lists.write() {
                                *w = Arc::new(l);
                            }
                            seen = now;
                        }
                        Err(e) => tracing::warn!(error = %e, "risk lists not reloaded"),
                    }
                }
            }
            if nats.as_ref().is_some_and(|n| n.is_finished()) {
                tracing::error!("NATS ingestion ended");
            }
            if let Err(e) = worker.pass().await {
                tracing::warn!(error = %e, "risk pass failed; will retry");
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }))
}

/// `strongroom bench risk`: events/s and latency of assess + learn in one thread.
pub fn bench(events: usize, customers: usize) {
    use strongroom_risk::Rng;
    let env = SystemEnv::new();
    let mut lists = Lists::default();
    let listed: String = (0..10_000u64)
        .map(|i| format!("0x{:040x}\n", i.wrapping_mul(0x9E37_79B9_7F4A_7C15)))
        .collect();
    lists.add_lines(ListKind::Sanctions, "synthetic", &listed);
    let run = |models: bool| -> (f64, Vec<u64>, usize) {
        let mut engine = match RuleSet::from_toml(DEFAULT_RULES) {
            Ok(r) => RiskEngine::new(r),
            Err(_) => return (0.0, vec![], 0),
        };
        engine.set_models(models);
        let mut rng = Rng::new(11);
        let customers = customers.max(1);
        let mut make = |i: usize| {
            let c = rng.below(customers);
            let new_dest = rng.unit() < 0.05;
            WithdrawalEvent {
                customer: format!("customer-{c}"),
                at_ms: 1_800_000_000_000 + i as i64 * 50,
                asset: "ETH".into(),
                amount: (c as u128 % 10 + 1)
                    * 10u128.pow(17)
                    * (1 + u128::from(rng.unit() < 0.01) * 20),
                destination: if new_dest {
                    format!("0x{:040x}", rng.next_u64())
                } else {
                    format!("0x{:040x}", c * 8 + rng.below(5))
                },
                device: Some(format!("device-{}", c * 4 + usize::from(rng.unit() < 0.02))),
                ip: Some(format!("10.0.{}.{}", c % 250, c % 200)),
            }
        };
        // Warm up: every customer has a history; the supervised model has labels.
        for i in 0..customers * 5 {
            let ev = make(i);
            engine.record(&ev);
        }
        for k in 0..20 {
            let mut f = vec![0.0; strongroom_risk::profile::FEATURES.len()];
            if let Some(x) = f.first_mut() {
                *x = if k % 2 == 0 { 20.0 } else { 1.0 };
            }
            engine.feedback(&f, k % 2 == 0);
        }
        let stream: Vec<WithdrawalEvent> = (0..events).map(|i| make(customers * 5 + i)).collect();
        let mut lat = Vec::with_capacity(stream.len());
        let mut paused = 0;
        let start = env.monotonic();
        for ev in &stream {
            let t = env.monotonic();
            let a = engine.assess(ev, &lists);
            if a.decision != Decision::Allow {
                paused += 1;
            } else {
                engine.record(ev);
            }
            lat.push(
                u64::try_from(env.monotonic().saturating_sub(t).as_nanos()).unwrap_or(u64::MAX),
            );
        }
        let secs = env.monotonic().saturating_sub(start).as_secs_f64().max(1e-9);
        lat.sort_unstable();
        (stream.len() as f64 / secs, lat, paused)
    };
    let pct = |l: &[u64], p: f64| {
        l.get(((l.len() as f64 * p) as usize).min(l.len().saturating_sub(1))).copied().unwrap_or(0)
            as f64
            / 1000.0
    };
    let (base_rate, base_lat, _) = run(false);
    let (rate, lat, paused) = run(true);
    println!("risk scoring in one thread: {events} withdrawal events over {customers} customers (assess + learn each)");
    println!(
        "  lists + rules only (baseline): {:>9.0} events/s  p50 {:>6.2} µs  p99 {:>6.2} µs",
        base_rate,
        pct(&base_lat, 0.5),
        pct(&base_lat, 0.99)
    );
    println!(
        "  full engine (with models):     {:>9.0} events/s  p50 {:>6.2} µs  p99 {:>6.2} µs",
        rate,
        pct(&lat, 0.5),
        pct(&lat, 0.99)
    );
    println!(
        "  full ÷ baseline throughput: {:.2}; paused or blocked: {paused}",
        rate / base_rate.max(1e-9)
    );
    let per_customer =
        RiskEngine::new(RuleSet::from_toml(DEFAULT_RULES).unwrap_or_else(|_| RuleSet {
            version: 0,
            review_at: 1,
            block_at: 1,
            rules: vec![],
        }))
        .max_bytes_per_customer();
    println!("  memory per customer: at most {per_customer} bytes (bounded histories)");
}

/// Replay what is stored through `current` and `candidate` side by side.
async fn backtest(
    store: &SqlStore,
    current: RuleSet,
    candidate: RuleSet,
    lists: &Lists,
    geo: Option<strongroom_risk::geo::GeoTable>,
    kek: Option<&dyn strongroom_crypto::seal::KeyEncryptionKey>,
) -> anyhow::Result<()> {
    let events = store.risk_events(i64::MIN, 1_000_000).await?;
    let mut withdrawals = Vec::new();
    for st in [
        WithdrawalState::Reserved,
        WithdrawalState::Built,
        WithdrawalState::Signed,
        WithdrawalState::Broadcast,
        WithdrawalState::Settled,
        WithdrawalState::Failed,
        WithdrawalState::Cancelled,
    ] {
        withdrawals.extend(
            store
                .list_withdrawals(&WithdrawalFilter {
                    customer_id: None,
                    state: Some(st),
                    limit: 1000,
                })
                .await?,
        );
    }
    withdrawals.sort_by_key(|w| (w.created_at, w.id));
    let reviews: HashMap<Uuid, RiskReview> = store
        .list_risk_reviews(None, 1000)
        .await?
        .into_iter()
        .map(|r| (r.withdrawal_id, r))
        .collect();
    let (cur_version, cand_version) = (current.version, candidate.version);
    let mut engines = [RiskEngine::new(current), RiskEngine::new(candidate)];
    if let Some(g) = geo {
        for e in &mut engines {
            e.set_geo(g.clone());
        }
    }
    // The device and address each withdrawal came from (recorded just after it).
    let contexts: Contexts = events
        .iter()
        .filter(|e| e.kind == "withdrawal_context")
        .filter_map(|e| {
            let s = |k: &str| at(&e.data, &format!("/{k}")).as_str().map(str::to_owned);
            let id = Uuid::parse_str(&s("withdrawal_id")?).ok()?;
            let ip = strongroom_server::risk::event_ip(kek, e.customer_id, &e.data);
            Some((id, (s("device_id"), ip)))
        })
        .collect();
    #[derive(Default)]
    struct Tally {
        allow: usize,
        review: usize,
        block: usize,
        /// Flagged (review or block) among those analysts rejected, and released.
        flagged_rejected: usize,
        flagged_released: usize,
    }
    let (mut cur, mut cand) = (Tally::default(), Tally::default());
    let (mut rejected, mut released) = (0usize, 0usize);
    let mut changed = Vec::new();
    let mut shadow: HashMap<String, usize> = HashMap::new();
    let mut ev_iter = events.iter().peekable();
    let [cur_engine, cand_engine] = &mut engines;
    for w in &withdrawals {
        while let Some(e) = ev_iter.next_if(|e| e.at <= w.created_at) {
            let s = |k: &str| at(&e.data, &format!("/{k}")).as_str().map(str::to_owned);
            let c = e.customer_id.to_string();
            for engine in [&mut *cur_engine, &mut *cand_engine] {
                match e.kind.as_str() {
                    "login" => engine.record_activity(
                        &c,
                        &Activity::Login {
                            device: s("device_id"),
                            ip: strongroom_server::risk::event_ip(kek, e.customer_id, &e.data),
                        },
                        e.at.unix_ms(),
                    ),
                    "security_change" => {
                        engine.record_activity(&c, &Activity::SecurityChange, e.at.unix_ms())
                    }
                    _ => {}
                }
            }
        }
        let ev = withdrawal_event(w, &contexts);
        let (a, b) = (cur_engine.assess(&ev, lists), cand_engine.assess(&ev, lists));
        let outcome = reviews.get(&w.id).map(|r| r.state);
        for (t, x) in [(&mut cur, &a), (&mut cand, &b)] {
            match x.decision {
                Decision::Allow => t.allow += 1,
                Decision::Review => t.review += 1,
                Decision::Block => t.block += 1,
            }
            let flagged = usize::from(x.decision != Decision::Allow);
            match outcome {
                Some(RiskState::Rejected) => t.flagged_rejected += flagged,
                Some(RiskState::Released) => t.flagged_released += flagged,
                _ => {}
            }
        }
        match outcome {
            Some(RiskState::Rejected) => rejected += 1,
            Some(RiskState::Released) => released += 1,
            _ => {}
        }
        for r in &b.shadow {
            *shadow.entry(r.source.clone()).or_default() += 1;
        }
        if a.decision != b.decision {
            changed.push((w.id, a.decision, b.decision));
        }
        // What actually went out is what is usual from now on.
        let went_out =
            matches!(outcome, None | Some(RiskState::Cleared) | Some(RiskState::Released))
                && w.state != WithdrawalState::Cancelled;
        if went_out {
            cur_engine.record(&ev);
            cand_engine.record(&ev);
        }
    }
    println!(
        "backtest over {} stored withdrawals ({} with an analyst's decision)",
        withdrawals.len(),
        rejected + released
    );
    println!("{:<22} {:>7} {:>7} {:>7}", "rules", "allow", "review", "block");
    for (name, version, t) in [("current", cur_version, &cur), ("candidate", cand_version, &cand)] {
        println!(
            "{:<22} {:>7} {:>7} {:>7}",
            format!("{name} v{version}"),
            t.allow,
            t.review,
            t.block
        );
    }
    println!("changed decisions: {}", changed.len());
    for (id, from, to) in changed.iter().take(20) {
        println!("  {id}: {} -> {}", from.as_str(), to.as_str());
    }
    println!(
        "analysts rejected {rejected}: current flags {}, candidate flags {}",
        cur.flagged_rejected, cand.flagged_rejected
    );
    println!(
        "analysts released {released}: current flags {}, candidate flags {}",
        cur.flagged_released, cand.flagged_released
    );
    let mut shadow: Vec<(String, usize)> = shadow.into_iter().collect();
    shadow.sort();
    for (rule, n) in shadow {
        println!("shadow {rule}: would have fired {n} times");
    }
    Ok(())
}

/// The JetStream stream and subjects risk events arrive on, and the durable consumer that
/// risk workers share (each message goes to one of them).
pub const NATS_STREAM: &str = "STRONGROOM_RISK";
pub const NATS_SUBJECTS: &str = "strongroom.risk.events.>";
pub const NATS_CONSUMER: &str = "risk-workers";

/// A risk event as published on NATS (subject `strongroom.risk.events.<kind>`).
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct NatsEvent {
    customer_id: Uuid,
    kind: String,
    device_id: Option<String>,
    ip: Option<String>,
}

/// Take risk events from JetStream into the store (where the risk worker reads them). Each
/// message is acknowledged only after it is stored; its id comes from its stream sequence,
/// so a redelivered message is stored once.
pub fn start_nats_ingest(
    store: Arc<SqlStore>,
    url: String,
    kek: Option<Arc<dyn strongroom_crypto::seal::KeyEncryptionKey>>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            if let Err(e) = nats_ingest(store.as_ref(), &url, kek.as_deref()).await {
                tracing::warn!(error = %format!("{e:#}"), url, "NATS ingestion stopped; reconnecting");
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    })
}

async fn nats_ingest(
    store: &SqlStore,
    url: &str,
    kek: Option<&dyn strongroom_crypto::seal::KeyEncryptionKey>,
) -> anyhow::Result<()> {
    use async_nats::jetstream::{self, consumer::pull, stream};
    use futures_util::StreamExt;
    let client = async_nats::connect(url).await.context("connecting to NATS")?;
    let js = jetstream::new(client);
    let stream = js
        .get_or_create_stream(stream::Config {
            name: NATS_STREAM.into(),
            subjects: vec![NATS_SUBJECTS.into()],
            ..Default::default()
        })
        .await
        .map_err(|e| anyhow::anyhow!("stream {NATS_STREAM}: {e}"))?;
    let consumer = stream
        .get_or_create_consumer(
            NATS_CONSUMER,
            pull::Config {
                durable_name: Some(NATS_CONSUMER.into()),
                ack_policy: jetstream::consumer::AckPolicy::Explicit,
                ..Default::default()
            },
        )
        .await
        .map_err(|e| anyhow::anyhow!("consumer {NATS_CONSUMER}: {e}"))?;
    tracing::info!(url, stream = NATS_STREAM, "taking risk events from NATS JetStream");
    let mut messages = consumer.messages().await.map_err(|e| anyhow::anyhow!("{e}"))?;
    let env = SystemEnv::new();
    while let Some(m) = messages.next().await {
        let m = m.map_err(|e| anyhow::anyhow!("{e}"))?;
        let seq = m.info().map(|i| i.stream_sequence).map_err(|e| anyhow::anyhow!("{e}"))?;
        match serde_json::from_slice::<NatsEvent>(&m.payload) {
            Ok(e)
                if ["login", "security_change", "trade", "deposit"].contains(&e.kind.as_str()) =>
            {
                use sha2::Digest;
                let h = sha2::Sha256::digest(format!("{NATS_STREAM}/{seq}").as_bytes());
                let id = Uuid::from_slice(h.get(..16).unwrap_or_default()).unwrap_or_default();
                let ev = strongroom_store::RiskEvent {
                    id,
                    customer_id: e.customer_id,
                    kind: e.kind,
                    at: env.now(),
                    data: {
                        let mut d = strongroom_server::risk::event_data(
                            kek,
                            &env,
                            e.customer_id,
                            e.device_id.as_deref(),
                            e.ip.as_deref(),
                        );
                        d.insert("nats_seq".into(), seq.into());
                        d.into()
                    },
                };
                let ctx = WriteCtx { actor: "risk:nats".into(), now: env.now(), request_id: None };
                match store.add_risk_event(&ctx, ev).await {
                    Ok(_) | Err(strongroom_store::StoreError::Constraint { unique: true, .. }) => {}
                    Err(strongroom_store::StoreError::Constraint { unique: false, .. }) => {
                        tracing::warn!(seq, customer = %e.customer_id, "risk event for an unknown customer dropped");
                    }
                    // Not acknowledged: it comes again.
                    Err(e) => return Err(e.into()),
                }
            }
            Ok(e) => tracing::warn!(seq, kind = e.kind, "risk event of an unknown kind dropped"),
            Err(e) => tracing::warn!(seq, error = %e, "malformed risk event dropped"),
        }
        m.ack().await.map_err(|e| anyhow::anyhow!("ack: {e}"))?;
    }
    Ok(())
}

/// `strongroom bench risk --http-clients N`: `POST /v1/risk/score` over HTTPS (TLS 1.3) from
/// N connections for `seconds`, on the same engine warmed the same way.
pub async fn bench_http(clients: u32, seconds: u64, customers: usize) -> anyhow::Result<()> {
    use strongroom_server::{pki::DevPki, tls, AppState};
    use strongroom_store::{NewApiToken, Role};
    let env = Arc::new(SystemEnv::new());
    let dir = tempfile::tempdir()?;
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("bench.db").display());
    let store = Arc::new(SqlStore::connect(&url, strongroom_store::sql_options(4)).await?);
    store.migrate().await?;
    let ctx = WriteCtx { actor: "bench".into(), now: env.now(), request_id: None };
    let token = strongroom_crypto::generate_token(env.as_ref());
    let t = NewApiToken {
        id: token.id.clone(),
        name: "bench".into(),
        role: Role::Service,
        token_hash: token.hash.clone(),
        restrictions: None,
    };
    store.create_token(&ctx, t).await?;
    let mut engine = RiskEngine::new(RuleSet::from_toml(DEFAULT_RULES)?);
    for i in 0..customers.max(1) * 5 {
        let c = i % customers.max(1);
        engine.record(&WithdrawalEvent {
            customer: uuid::Uuid::from_u128(c as u128).to_string(),
            at_ms: env.now().unix_ms() - 86_400_000 + i as i64,
            asset: "ETH".into(),
            amount: (c as u128 % 10 + 1) * 10u128.pow(17),
            destination: format!("0x{:040x}", c * 8 + i % 5),
            device: Some(format!("device-{c}")),
            ip: Some("10.0.0.1".into()),
        });
    }
    let state = AppState::new(
        store.clone(),
        env.clone(),
        strongroom_units::AssetRegistry::dev(),
        Default::default(),
    );
    let lists = Arc::new(RwLock::new(Arc::new(Lists::default())));
    state.set_risk_scorer(Arc::new(EngineScorer { engine: SharedEngine::new(engine), lists }));
    let pki = DevPki::in_dir(dir.path());
    pki.ensure(&["localhost".into()], env.now())?;
    let config = tls::server_config(&pki.server_cert, &pki.server_key)?;
    let (app, _) = strongroom_server::app(state);
    let running = tls::serve(tokio::net::TcpListener::bind("127.0.0.1:0").await?, config, app)?;
    let ca = reqwest::Certificate::from_pem(&std::fs::read(&pki.ca_cert)?)?;
    let auth = format!("Bearer {}", token.token.expose_secret());
    let base = format!("https://localhost:{}/v1/risk/score", running.addr.port());
    let warm_until = env.monotonic() + Duration::from_secs(2);
    let until = warm_until + Duration::from_secs(seconds);
    let mut tasks = Vec::new();
    for k in 0..clients {
        let client = reqwest::Client::builder()
            .use_rustls_tls()
            .tls_built_in_root_certs(false)
            .add_root_certificate(ca.clone())
            .min_tls_version(reqwest::tls::Version::TLS_1_3)
            .resolve("localhost", running.addr)
            .build()?;
        let (env, auth, base) = (env.clone(), auth.clone(), base.clone());
        let customers = customers.max(1);
        tasks.push(tokio::spawn(async move {
            let (mut lat, mut errors, mut n) = (Vec::new(), 0u64, 0usize);
            loop {
                let t0 = env.monotonic();
                if t0 >= until {
                    break;
                }
                n += 1;
                let c = (n * 7919 + k as usize) % customers;
                let body = serde_json::json!({ "customer_id": uuid::Uuid::from_u128(c as u128), "asset": "ETH",
                    "amount": "0.3", "destination": format!("0x{:040x}", c * 8 + n % 6), "device_id": format!("device-{c}") });
                let r = client.post(&base).header("authorization", &auth).header("idempotency-key", format!("b-{k}-{n}")).json(&body).send().await;
                let ok = matches!(&r, Ok(resp) if resp.status().is_success());
                let t1 = env.monotonic();
                if t0 >= warm_until && t1 <= until {
                    if ok {
                        lat.push(t1.saturating_sub(t0));
                    } else {
                        errors += 1;
                    }
                }
            }
            (lat, errors)
        }));
    }
    let (mut all, mut errors) = (Vec::new(), 0u64);
    for t in tasks {
        let (l, e) = t.await?;
        all.extend(l);
        errors += e;
    }
    running.shutdown().await;
    store.close().await;
    all.sort();
    let pct = |p: f64| {
        all.get(((all.len() as f64 - 1.0).max(0.0) * p).round() as usize)
            .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
    };
    println!(
        "  over HTTPS ({clients} connections, {seconds} s): {:>9.0} events/s  p50 {:>6.2} ms  p99 {:>6.2} ms  errors {errors}",
        all.len() as f64 / seconds.max(1) as f64,
        pct(0.5),
        pct(0.99)
    );
    Ok(())
}
