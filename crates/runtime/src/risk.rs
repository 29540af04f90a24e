//! The risk worker: every reserved withdrawal assessed once (allow, review, block), rejected
//! and blocked ones cancelled, analysts' decisions fed back, lists reloaded when their files
//! change, risk events taken from NATS JetStream; and the alerts it raises (signed webhooks,
//! e-mail to the security team and to customers with their anti-phishing code).

use std::path::PathBuf;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use strongroom_core::withdrawal::{Withdrawal, WithdrawalState};
use strongroom_core::Env;
use strongroom_risk::engine::{Assessment, Decision, RiskEngine};
use strongroom_risk::lists::{ListKind, Lists};
use strongroom_risk::profile::{Activity, WithdrawalEvent};
use strongroom_risk::rules::{RuleSet, DEFAULT_RULES};
use strongroom_store::{ModelStatus, RiskReview, RiskState, Store, WithdrawalFilter, WriteCtx};
use uuid::Uuid;

use crate::RuntimeError;

/// The value at a JSON pointer, or null.
fn at<'a>(v: &'a serde_json::Value, pointer: &str) -> &'a serde_json::Value {
    static NULL: serde_json::Value = serde_json::Value::Null;
    v.pointer(pointer).unwrap_or(&NULL)
}

/// The security team's webhook: where, the file holding its HMAC secret, and a CA trusted
/// for it besides the platform's roots.
#[derive(Debug, Clone)]
pub struct Webhook {
    pub url: String,
    pub secret_file: PathBuf,
    pub ca_file: Option<PathBuf>,
}

/// Where the risk worker gets its lists and rules, and where it sends alerts.
#[derive(Debug, Clone, Default)]
pub struct RiskOptions {
    /// A folder of lists: `*.txt` one address a line (sanctions when the name says
    /// "sanction", else scam), `*.csv` with an `address` column (scam). Reloaded when a file
    /// changes.
    pub lists: Option<PathBuf>,
    /// A rule set (TOML); the default rules otherwise.
    pub rules: Option<PathBuf>,
    /// The security team's webhook.
    pub webhook: Option<Webhook>,
    /// The security team's e-mail: the relay and the recipients.
    pub mail: Option<(crate::mail::Smtp, Vec<String>)>,
    /// A NATS server whose JetStream carries risk events.
    pub nats: Option<String>,
    /// IPv4 ranges → places (`start_ip,end_ip,lat,lon,country`), for impossible travel.
    pub geo: Option<PathBuf>,
    /// The key that opens customers' sealed contact details (for their alert e-mail).
    pub personal_data: Option<Arc<dyn strongroom_crypto::seal::KeyEncryptionKey>>,
    /// Assessments per drift window (the engine's default otherwise).
    pub drift_window: Option<usize>,
    /// Train a candidate model and put it in shadow each time this many more analysts'
    /// decisions have come in than the newest registered version was trained on.
    pub retrain_labels: Option<u64>,
    /// Promote a shadow as soon as its comparison with the live model allows it.
    pub auto_promote: bool,
    /// The exchange's event webhook (delivered by the same outbox worker).
    pub events: Option<crate::events::HookSettings>,
}

/// Load an IPv4 → place table (CSV `start_ip,end_ip,lat,lon,country`).
pub fn load_geo(path: &std::path::Path) -> Result<strongroom_risk::geo::GeoTable, RuntimeError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| RuntimeError::io(format!("reading {}", path.display()), e))?;
    strongroom_risk::geo::GeoTable::from_csv(&text)
        .map_err(|e| RuntimeError::Config(format!("{}: {e}", path.display())))
}

/// Load every list in `dir`.
pub fn load_lists(dir: &std::path::Path) -> Result<Lists, RuntimeError> {
    let mut lists = Lists::default();
    let mut names: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| RuntimeError::io(format!("reading {}", dir.display()), e))?
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
            .map_err(|e| RuntimeError::io(format!("reading {}", path.display()), e))?;
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
                lists
                    .add_csv(ListKind::Scam, &name, &text)
                    .map_err(|e| RuntimeError::Config(format!("{}: {e}", path.display())))?;
            }
        }
    }
    Ok(lists)
}

/// The newest modification time among the folder's files (to notice changes).
fn stamp(dir: &std::path::Path) -> Option<std::time::SystemTime> {
    std::fs::read_dir(dir).ok()?.filter_map(|e| e.ok()?.metadata().ok()?.modified().ok()).max()
}

/// Where an outbox message goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channel {
    /// The security team's signed webhook.
    Webhook,
    /// The security team's e-mail.
    TeamMail,
    /// A customer's own e-mail (their sealed address is opened at delivery).
    CustomerMail,
    /// The exchange's event webhook (Standard Webhooks; [`crate::events`]).
    Events,
}

impl Channel {
    pub const ALL: [Channel; 4] =
        [Channel::Webhook, Channel::TeamMail, Channel::CustomerMail, Channel::Events];

    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Webhook => "webhook",
            Channel::TeamMail => "team_mail",
            Channel::CustomerMail => "customer_mail",
            Channel::Events => strongroom_server::events::CHANNEL,
        }
    }

    pub fn parse(s: &str) -> Option<Channel> {
        Channel::ALL.into_iter().find(|c| c.as_str() == s)
    }
}

/// How long one delivery attempt may hold an outbox message before another instance may
/// try it.
const OUTBOX_CLAIM_MS: i64 = 60_000;

/// The wait before the next attempt after `attempts` failures: 1 s doubling to an hour.
pub fn outbox_backoff_ms(attempts: u32) -> i64 {
    1_000i64.saturating_mul(1i64 << attempts.min(12)).min(3_600_000)
}

/// Alerts to the security team (signed webhooks, e-mail) and notices to customers, through
/// the durable outbox: each is written to the database first, then delivered at least once
/// by whichever instance claims it, with retries and backoff that survive restarts.
#[derive(Clone)]
pub struct Alerts {
    store: Arc<dyn Store>,
    webhook: Option<(String, Arc<zeroize::Zeroizing<Vec<u8>>>)>,
    mail: Option<(crate::mail::Smtp, Vec<String>)>,
    client: reqwest::Client,
    env: Arc<dyn Env>,
    /// To e-mail customers: the key that opens their sealed contacts.
    customers: Option<Arc<dyn strongroom_crypto::seal::KeyEncryptionKey>>,
    /// The exchange's event webhook.
    events: Option<crate::events::Hook>,
}

impl std::fmt::Debug for Alerts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Alerts").field("webhook", &self.webhook.as_ref().map(|w| &w.0)).finish()
    }
}

/// Why one delivery attempt failed (kept on the message, retried later).
#[derive(Debug, thiserror::Error)]
enum Undelivered {
    #[error("webhook refused the alert: HTTP {0}")]
    Refused(u16),
    #[error("webhook unreachable: {0}")]
    Unreachable(String),
    #[error("e-mail not sent: {0}")]
    Mail(String),
    #[error("{0}")]
    Store(#[from] strongroom_store::StoreError),
    #[error("a sealed contact does not open: {0}")]
    Contact(String),
    #[error("{0}")]
    Event(#[from] crate::events::HookError),
}

impl Undelivered {
    /// No further attempt can succeed.
    fn is_final(&self) -> bool {
        matches!(self, Undelivered::Event(crate::events::HookError::Gone))
    }
}

impl Alerts {
    pub fn new(
        store: Arc<dyn Store>,
        webhook: Option<Webhook>,
        mail: Option<(crate::mail::Smtp, Vec<String>)>,
        env: Arc<dyn Env>,
    ) -> Result<Self, RuntimeError> {
        let mut builder =
            reqwest::Client::builder().use_rustls_tls().timeout(Duration::from_secs(10));
        let webhook = match webhook {
            Some(Webhook { url, secret_file: secret, ca_file }) => {
                if let Some(ca) = ca_file {
                    for c in crate::http::ca_certificates(&ca)? {
                        builder = builder.add_root_certificate(c);
                    }
                }
                let s = std::fs::read(&secret)
                    .map_err(|e| RuntimeError::io(format!("reading {}", secret.display()), e))?;
                let trimmed = String::from_utf8_lossy(&s).trim().as_bytes().to_vec();
                Some((url, Arc::new(zeroize::Zeroizing::new(trimmed))))
            }
            None => None,
        };
        let client = builder
            .build()
            .map_err(|e| RuntimeError::Config(format!("webhook HTTP client: {e}")))?;
        Ok(Alerts { store, webhook, mail, client, env, customers: None, events: None })
    }

    /// Deliver events to the exchange's webhook.
    pub fn with_events(mut self, hook: crate::events::Hook) -> Self {
        self.events = Some(hook);
        self
    }

    /// Let customer notices be delivered, with the key that opens their sealed addresses.
    pub fn with_customers(
        mut self,
        kek: Arc<dyn strongroom_crypto::seal::KeyEncryptionKey>,
    ) -> Self {
        self.customers = Some(kek);
        self
    }

    async fn put(
        &self,
        id: &str,
        channel: Channel,
        kind: &str,
        body: serde_json::Value,
    ) -> Result<(), RuntimeError> {
        let message = strongroom_store::NewOutboxMessage {
            id: format!("{id}/{}", channel.as_str()),
            channel: channel.as_str().into(),
            kind: kind.into(),
            body,
            created_at_ms: self.env.now().unix_ms(),
        };
        self.store.enqueue(message).await?;
        Ok(())
    }

    /// Raise an alert: logged now, and put in the outbox for each channel the team set up,
    /// under `id` (a step retried after a crash raises the same id, which adds nothing).
    pub async fn raise(
        &self,
        id: &str,
        kind: &str,
        detail: serde_json::Value,
    ) -> Result<(), RuntimeError> {
        let body = serde_json::json!({ "kind": kind, "detail": detail });
        tracing::warn!(alert = true, kind, id, detail = %body, "security alert");
        if self.webhook.is_some() {
            self.put(id, Channel::Webhook, kind, body.clone()).await?;
        }
        if self.mail.is_some() {
            self.put(id, Channel::TeamMail, kind, body).await?;
        }
        Ok(())
    }

    /// Tell a customer (when mail is set up and they left an address, which is looked up
    /// at delivery), under `id` as for [`Alerts::raise`].
    pub async fn tell_customer(
        &self,
        id: &str,
        customer_id: Uuid,
        subject: &str,
        text: &str,
    ) -> Result<(), RuntimeError> {
        if self.mail.is_none() || self.customers.is_none() {
            return Ok(());
        }
        let body =
            serde_json::json!({ "customer_id": customer_id, "subject": subject, "text": text });
        self.put(id, Channel::CustomerMail, "customer_notice", body).await
    }

    /// Tell a customer by e-mail (as [`Alerts::tell_customer`]) and the exchange's webhook
    /// (a `customer_notice` event naming the customer, for the exchange's own channels), under
    /// `id`.
    pub async fn tell_customer_everywhere(
        &self,
        id: &str,
        customer_id: Uuid,
        subject: &str,
        text: &str,
    ) -> Result<(), RuntimeError> {
        self.tell_customer(id, customer_id, subject, text).await?;
        if self.webhook.is_some() {
            let body = serde_json::json!({
                "kind": "customer_notice",
                "detail": { "customer_id": customer_id, "subject": subject, "text": text },
            });
            self.put(id, Channel::Webhook, "customer_notice", body).await?;
        }
        Ok(())
    }

    /// [`Alerts::raise`] from code that cannot wait (a fresh id each time).
    pub fn send(&self, kind: &str, detail: serde_json::Value) {
        let (alerts, kind) = (self.clone(), kind.to_owned());
        let id = format!("{kind}/{}", strongroom_core::new_id(self.env.as_ref()));
        tokio::spawn(async move {
            if let Err(e) = alerts.raise(&id, &kind, detail).await {
                tracing::error!(alert = true, kind, error = %e, "alert not queued");
            }
        });
    }

    /// [`Alerts::tell_customer`] from code that cannot wait (a fresh id each time).
    pub fn notify_customer(&self, customer_id: Uuid, subject: &str, text: &str) {
        let (alerts, subject, text) = (self.clone(), subject.to_owned(), text.to_owned());
        let id = format!("notice/{}", strongroom_core::new_id(self.env.as_ref()));
        tokio::spawn(async move {
            if let Err(e) = alerts.tell_customer(&id, customer_id, &subject, &text).await {
                tracing::error!(%customer_id, error = %e, "customer notice not queued");
            }
        });
    }

    /// Deliver what is due, as `worker`; returns how many were delivered.
    pub async fn deliver_due(&self, worker: &str) -> Result<usize, RuntimeError> {
        let now = self.env.now().unix_ms();
        let due = self.store.claim_outbox(worker, now, OUTBOX_CLAIM_MS, 16).await?;
        let mut delivered = 0;
        for m in due {
            let outcome = match Channel::parse(&m.channel) {
                Some(c) => self.deliver(c, &m).await,
                None => Err(Undelivered::Mail(format!("unknown channel {}", m.channel))),
            };
            let now = self.env.now().unix_ms();
            match outcome {
                Ok(()) => {
                    self.store.outbox_delivered(&m.id, worker, now).await?;
                    delivered += 1;
                }
                Err(e) => {
                    let attempts = m.attempts.saturating_add(1);
                    let limit = match (&self.events, Channel::parse(&m.channel)) {
                        (Some(hook), Some(Channel::Events)) => Some(hook.max_attempts),
                        _ => None,
                    };
                    if e.is_final() || limit.is_some_and(|l| attempts >= l) {
                        tracing::error!(id = m.id, attempts, error = %e, "not delivered; a dead letter now (GET /v1/events/dead-letters)");
                        self.store.outbox_dead(&m.id, worker, &e.to_string(), now).await?;
                    } else {
                        let next = now.saturating_add(outbox_backoff_ms(m.attempts));
                        tracing::warn!(id = m.id, attempts, error = %e, "not delivered; will retry");
                        self.store.outbox_failed(&m.id, worker, &e.to_string(), next).await?;
                    }
                }
            }
        }
        Ok(delivered)
    }

    /// Deliver from the outbox forever (every instance does; each message is claimed by one).
    pub fn deliver_forever(self, worker: String) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            loop {
                match self.deliver_due(&worker).await {
                    Ok(n) if n > 0 => continue,
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "outbox pass failed"),
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        })
    }

    async fn deliver(
        &self,
        channel: Channel,
        m: &strongroom_store::OutboxMessage,
    ) -> Result<(), Undelivered> {
        match channel {
            Channel::Webhook => {
                // Set up no longer: nothing to deliver to.
                let Some((url, secret)) = &self.webhook else { return Ok(()) };
                self.post(url, secret, &m.body.to_string()).await
            }
            Channel::Events => {
                // Set up no longer: nothing to deliver to.
                let Some(hook) = &self.events else { return Ok(()) };
                let id = at(&m.body, "/id").as_str().unwrap_or(m.id.as_str());
                let now_secs = self.env.now().unix_ms() / 1000;
                Ok(hook.post(id, &m.body.to_string(), now_secs).await?)
            }
            Channel::TeamMail => {
                let Some((smtp, to)) = &self.mail else { return Ok(()) };
                let kind = m.kind.as_str();
                let subject = format!("[Strongroom] {}", kind.replace('_', " "));
                let text = format!(
                    "Strongroom security alert: {kind}\n\n{}\n",
                    serde_json::to_string_pretty(at(&m.body, "/detail")).unwrap_or_default()
                );
                smtp.send(to, &subject, &text)
                    .await
                    .map_err(|e| Undelivered::Mail(format!("{e:#}")))
            }
            Channel::CustomerMail => {
                let (Some((smtp, _)), Some(kek)) = (&self.mail, &self.customers) else {
                    return Ok(());
                };
                let Some(customer_id) =
                    at(&m.body, "/customer_id").as_str().and_then(|c| Uuid::parse_str(c).ok())
                else {
                    return Err(Undelivered::Contact("the notice names no customer".into()));
                };
                // No address left: nothing to send.
                let Some(sealed) = self.store.customer_contact(customer_id).await? else {
                    return Ok(());
                };
                let c =
                    strongroom_server::contact::open_contact(kek.as_ref(), customer_id, &sealed)
                        .map_err(|e| Undelivered::Contact(e.to_string()))?;
                let code = match &c.anti_phishing_code {
                    Some(code) => format!("Your anti-phishing code: {code}\n\n"),
                    None => String::new(),
                };
                let subject = at(&m.body, "/subject").as_str().unwrap_or("Strongroom");
                let text = at(&m.body, "/text").as_str().unwrap_or_default();
                let body =
                    format!("{code}{text}\n\nIf this was not you, contact support at once.\n");
                smtp.send(std::slice::from_ref(&c.email), subject, &body)
                    .await
                    .map_err(|e| Undelivered::Mail(format!("{e:#}")))
            }
        }
    }

    /// POST the alert, signed: header
    /// `X-Strongroom-Signature: t=<unix ms>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`.
    async fn post(&self, url: &str, secret: &[u8], body: &str) -> Result<(), Undelivered> {
        use hmac::{Hmac, Mac};
        let t = self.env.now().unix_ms();
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret)
            .map_err(|e| Undelivered::Unreachable(e.to_string()))?;
        mac.update(format!("{t}.{body}").as_bytes());
        let sig = hex::encode(mac.finalize().into_bytes());
        let sent = self
            .client
            .post(url)
            .header("content-type", "application/json")
            .header("x-strongroom-signature", format!("t={t},v1={sig}"))
            .body(body.to_owned())
            .send()
            .await;
        match sent {
            Ok(r) if r.status().is_success() => Ok(()),
            Ok(r) => Err(Undelivered::Refused(r.status().as_u16())),
            Err(e) => {
                Err(Undelivered::Unreachable(strongroom_chain_ethereum::rpc::with_causes(&e)))
            }
        }
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

fn model_json(m: strongroom_risk::engine::ModelScore) -> serde_json::Value {
    serde_json::json!({ "version": m.version, "probability": m.probability, "anomaly": m.anomaly })
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
        "model": a.model.map(model_json),
        "shadow_model": a.shadow_model.map(model_json),
    })
}

/// The features of an assessed withdrawal, as assessed.
pub(crate) fn features_of(review: &RiskReview) -> Vec<f64> {
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
    /// Put the kept profiles of those of `customers` not in memory into memory (a customer
    /// with none starts empty).
    pub async fn load_profiles(
        &self,
        store: &dyn Store,
        customers: impl IntoIterator<Item = String>,
    ) -> Result<(), RuntimeError> {
        let mut missing: Vec<String> =
            self.with(|e| customers.into_iter().filter(|c| !e.has_profile(c)).collect());
        missing.sort();
        missing.dedup();
        if missing.is_empty() {
            return Ok(());
        }
        let found = store.risk_profiles(&missing).await?;
        self.with(|e| {
            for (c, bytes) in &found {
                if e.has_profile(c) {
                    continue; // learned meanwhile: newer than what was read
                }
                if let Err(err) = e.load_encoded_profile(c, bytes) {
                    // Derived state: start the customer afresh rather than stop scoring.
                    tracing::error!(customer = c, error = %err, "a kept risk profile does not decode; starting it afresh");
                }
            }
        });
        Ok(())
    }
}

/// `POST /v1/risk/score` on the shared engine and the current lists.
#[derive(Debug)]
pub struct EngineScorer {
    pub engine: SharedEngine,
    pub lists: Arc<RwLock<Arc<Lists>>>,
    /// Where customers' profiles are kept (none: only what is in memory).
    pub store: Option<Arc<dyn Store>>,
}

#[async_trait::async_trait]
impl strongroom_server::RiskScorer for EngineScorer {
    async fn score(
        &self,
        i: &strongroom_server::ScoreInput,
        now_ms: i64,
    ) -> Result<(String, u32, Vec<(String, String, u32)>), String> {
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
        if let Some(store) = &self.store {
            self.engine
                .load_profiles(store.as_ref(), [ev.customer.clone()])
                .await
                .map_err(|e| e.to_string())?;
        }
        let a = self.engine.assess(&ev, &lists);
        let reasons = a.reasons.into_iter().map(|r| (r.source, r.detail, r.points)).collect();
        Ok((a.decision.as_str().to_owned(), a.score, reasons))
    }
}

/// How far the worker has read the event streams (kept in the same commits as what it
/// learned from them).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct Cursor {
    /// The newest risk event taken in.
    events_ms: i64,
    /// The newest review change taken in.
    reviews_ms: i64,
}

/// Named states in the risk worker's commits.
const MODELS: &str = "models";
const CURSOR: &str = "cursor";

/// Profiles changed by other instances' commits above which a follower drops its whole
/// cache instead of each one.
const FORGET_ALL_ABOVE: u32 = 10_000;

struct Worker {
    store: Arc<dyn Store>,
    engine: SharedEngine,
    lists: Arc<RwLock<Arc<Lists>>>,
    alerts: Alerts,
    /// Where the streams have been read up to.
    cursor: Cursor,
    /// The cursor as last committed or read.
    kept_cursor: Cursor,
    /// The commit the engine's state is based on.
    version: i64,
    /// Learning and assessing is one instance's job (it commits what it learned); every
    /// other instance follows its commits, for the API's scoring.
    leader: crate::lease::Leader,
    leading: bool,
    /// Rejected or blocked withdrawals already seen out of `reserved` (never read again).
    closed: HashSet<Uuid>,
    env: Arc<dyn Env>,
    /// Opens events' sealed IP addresses.
    kek: Option<Arc<dyn strongroom_crypto::seal::KeyEncryptionKey>>,
    retrain_labels: Option<u64>,
    auto_promote: bool,
    /// Labels seen when the shadow was last compared (to compare again only after more).
    compared_at: u64,
}

/// How far back each read of risk events and reviews goes past the newest one seen:
/// instances write them with their own clocks and commit them a little later. What is read
/// twice is learned once (each profile keeps the ids it took in).
const EVENT_OVERLAP_MS: i64 = 60_000;

/// Device and IP each withdrawal was requested from.
pub type Contexts = HashMap<Uuid, (Option<String>, Option<String>)>;

/// A stored withdrawal as the risk engine sees it, with the device and IP it came from.
pub fn withdrawal_event(
    w: &Withdrawal,
    (device, ip): (Option<String>, Option<String>),
) -> WithdrawalEvent {
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
    /// `w` as the engine sees it, with the device and IP of its context event (found by the
    /// id derived from the withdrawal's).
    async fn event(&self, w: &Withdrawal) -> Result<WithdrawalEvent, RuntimeError> {
        let context = self
            .store
            .risk_event(strongroom_store::RiskEvent::context_id(w.id))
            .await?
            .map(|e| {
                let device = at(&e.data, "/device_id").as_str().map(str::to_owned);
                (
                    device,
                    strongroom_server::risk::event_ip(self.kek.as_deref(), e.customer_id, &e.data),
                )
            })
            .unwrap_or_default();
        Ok(withdrawal_event(w, context))
    }

    fn ctx(&self) -> WriteCtx {
        WriteCtx { actor: "risk".into(), now: self.env.now(), request_id: None }
    }

    /// Take the last commit's state: the models, the cursor, and which kept profiles in
    /// memory are out of date.
    async fn follow(&mut self) -> Result<(), RuntimeError> {
        let version = self.store.risk_learning_version().await?;
        if version == self.version {
            return Ok(());
        }
        // The commit first, then what changed since ours: a commit landing in between is
        // counted as changed too (dropping a profile too many costs one read).
        let kept = self.store.risk_learning().await?;
        let changed = self
            .store
            .risk_profiles_changed(self.version.max(0), FORGET_ALL_ABOVE.saturating_add(1))
            .await?;
        let all = self.version < 0 || changed.len() > FORGET_ALL_ABOVE as usize;
        self.engine.with(|e| {
            if all {
                e.forget_profiles();
            } else {
                for c in &changed {
                    e.forget_profile(c);
                }
            }
            if let Some(m) = kept.state.get(MODELS) {
                if let Err(err) = e.restore_models(m) {
                    tracing::error!(error = %err, "the kept risk models do not load; keeping these");
                }
            }
        });
        self.cursor =
            kept.state.get(CURSOR).and_then(|c| serde_json::from_slice(c).ok()).unwrap_or_default();
        self.kept_cursor = self.cursor;
        self.version = kept.version;
        Ok(())
    }

    /// Start from what was kept: every profile read again when needed.
    async fn resync(&mut self) -> Result<(), RuntimeError> {
        self.engine.with(|e| e.forget_profiles());
        self.version = -1;
        self.follow().await
    }

    /// Keep what this pass learned, with the cursor, on top of the last commit.
    async fn commit(&mut self) -> Result<(), RuntimeError> {
        let (profiles, models) = self.engine.with(|e| (e.take_dirty_profiles(), e.take_models()));
        if profiles.is_empty() && models.is_none() && self.cursor == self.kept_cursor {
            return Ok(());
        }
        let cursor = serde_json::to_vec(&self.cursor).unwrap_or_default();
        let mut state = vec![(CURSOR.to_owned(), cursor)];
        if let Some(m) = models {
            state.push((MODELS.to_owned(), m));
        }
        let now = self.env.now().unix_ms();
        match self.store.commit_risk_learning(self.version, now, profiles, state).await {
            Ok(v) => {
                self.version = v;
                self.kept_cursor = self.cursor;
                Ok(())
            }
            Err(strongroom_store::StoreError::Stale { .. }) => {
                // Another instance led meanwhile: what this pass learned is learned again
                // from the streams by whoever leads, on top of what was kept.
                tracing::warn!("risk learning committed by another instance; reading it again");
                self.resync().await
            }
            Err(e) => {
                // Not kept: start again from what was.
                self.resync().await?;
                Err(e.into())
            }
        }
    }

    /// Take in the risk events written since the last read.
    async fn events(&mut self) -> Result<(), RuntimeError> {
        let mut after = self.cursor.events_ms.saturating_sub(EVENT_OVERLAP_MS);
        loop {
            let batch = self.store.risk_events(after, 1000).await?;
            let full = batch.len() == 1000;
            self.engine
                .load_profiles(self.store.as_ref(), batch.iter().map(|e| e.customer_id.to_string()))
                .await?;
            for e in batch {
                after = after.max(e.at.unix_ms());
                self.cursor.events_ms = self.cursor.events_ms.max(e.at.unix_ms());
                let s = |k: &str| at(&e.data, &format!("/{k}")).as_str().map(str::to_owned);
                let activity = match e.kind.as_str() {
                    "login" => Activity::Login {
                        device: s("device_id"),
                        ip: strongroom_server::risk::event_ip(
                            self.kek.as_deref(),
                            e.customer_id,
                            &e.data,
                        ),
                    },
                    "security_change" => Activity::SecurityChange,
                    _ => continue,
                };
                let (id, customer) = (e.id.to_string(), e.customer_id.to_string());
                self.engine
                    .with(|en| en.record_activity_once(&id, &customer, &activity, e.at.unix_ms()));
            }
            if !full {
                return Ok(());
            }
        }
    }

    /// Take in the reviews decided since the last read, in the order they changed. Cleared
    /// and released withdrawals become the customer's usual; analysts' decisions (released,
    /// rejected) teach the model.
    async fn learn(&mut self) -> Result<(), RuntimeError> {
        let mut after = self.cursor.reviews_ms.saturating_sub(EVENT_OVERLAP_MS);
        loop {
            let batch = self.store.risk_reviews_since(after, 1000).await?;
            let full = batch.len() == 1000;
            self.engine
                .load_profiles(self.store.as_ref(), batch.iter().map(|r| r.customer_id.to_string()))
                .await?;
            for r in batch {
                let at = r.updated_at.unix_ms();
                after = after.max(at);
                self.cursor.reviews_ms = self.cursor.reviews_ms.max(at);
                let decided = matches!(
                    r.state,
                    RiskState::Cleared | RiskState::Released | RiskState::Rejected
                );
                if !decided {
                    continue;
                }
                let customer = r.customer_id.to_string();
                if r.state != RiskState::Cleared {
                    let id = format!("label/{}", r.withdrawal_id);
                    let features = features_of(&r);
                    let rejected = r.state == RiskState::Rejected;
                    self.engine.with(|e| e.feedback_once(&id, &customer, &features, rejected));
                }
                if r.state != RiskState::Rejected {
                    let id = format!("withdrawal/{}", r.withdrawal_id);
                    if self
                        .engine
                        .with(|e| e.profile(&customer).is_some_and(|p| p.has_applied(&id)))
                    {
                        continue;
                    }
                    let w = self.store.get_withdrawal(r.withdrawal_id).await?;
                    let ev = self.event(&w).await?;
                    self.engine.with(|e| e.record_once(&id, &ev));
                }
            }
            if !full {
                return Ok(());
            }
        }
    }

    /// Install what the registry says: its live model and its shadow (each instance does;
    /// the leader's next commit keeps them with what they learn).
    async fn registry(&mut self) -> Result<Vec<strongroom_store::RiskModel>, RuntimeError> {
        let models = self.store.risk_models().await?;
        let of = |s: ModelStatus| models.iter().find(|m| m.status == s).map(|m| m.version);
        let (live, shadow) = (of(ModelStatus::Live), of(ModelStatus::Shadow));
        let (now_live, now_shadow) = self.engine.with(|e| (e.live_version(), e.shadow_version()));
        if let Some(v) = live.filter(|v| *v != now_live) {
            let state = self.store.risk_model_state(v).await?.unwrap_or_default();
            self.engine
                .with(|e| e.install_live(v, &state))
                .map_err(|e| RuntimeError::Risk(format!("model version {v}: {e}")))?;
            tracing::info!(version = v, "risk model live");
        }
        let now_shadow = if live == now_shadow && live.is_some() { None } else { now_shadow };
        if shadow != now_shadow {
            let state = match shadow {
                Some(v) => Some((v, self.store.risk_model_state(v).await?.unwrap_or_default())),
                None => None,
            };
            self.engine
                .with(|e| e.install_shadow(state.as_ref().map(|(v, s)| (*v, s.as_slice()))))
                .map_err(|e| RuntimeError::Risk(format!("shadow model: {e}")))?;
            tracing::info!(version = ?shadow, "risk shadow model");
        }
        Ok(models)
    }

    async fn pass(&mut self) -> Result<(), RuntimeError> {
        let leading = self.leader.lead().await;
        if leading && !self.leading {
            // Taking over: from what the last leader kept.
            self.resync().await?;
        }
        self.leading = leading;
        if !leading {
            self.follow().await?;
            return self.registry().await.map(drop);
        }
        let models = self.registry().await?;
        self.events().await?;
        self.assess().await?;
        self.learn().await?;
        self.commit().await?;
        self.retrain(&models).await
    }

    /// Retraining on its own (`retrain_labels`): a candidate trained on every labelled
    /// decision goes into shadow once enough new ones came in; with `auto_promote`, a shadow
    /// is promoted as soon as its comparison allows. Audited as `risk:retrain`; a refused
    /// promotion waits for more labels.
    async fn retrain(
        &mut self,
        models: &[strongroom_store::RiskModel],
    ) -> Result<(), RuntimeError> {
        let Some(every) = self.retrain_labels.filter(|n| *n > 0) else { return Ok(()) };
        let seen = self.engine.with(|e| e.labels_seen());
        let ctx = WriteCtx { actor: "risk:retrain".into(), now: self.env.now(), request_id: None };
        if let Some(shadow) = models.iter().find(|m| m.status == ModelStatus::Shadow) {
            if self.auto_promote && seen > self.compared_at {
                self.compared_at = seen;
                match crate::risk_models::promote(self.store.as_ref(), &ctx, shadow.version, None)
                    .await
                {
                    Ok(m) => {
                        tracing::info!(version = m.version, note = m.note, "risk model promoted")
                    }
                    Err(RuntimeError::Model(why)) => {
                        tracing::debug!(%why, "shadow not promoted yet")
                    }
                    Err(e) => return Err(e),
                }
            }
            return Ok(());
        }
        let trained = models
            .iter()
            .filter_map(|m| m.trained_on.get("labels").and_then(serde_json::Value::as_u64))
            .max()
            .unwrap_or(0);
        if seen < trained.saturating_add(every) {
            return Ok(());
        }
        let note = format!("retrained after {} new labelled decisions", seen - trained);
        let m = crate::risk_models::train_candidate(self.store.as_ref(), &ctx, &note).await?;
        crate::risk_models::shadow(
            self.store.as_ref(),
            &ctx,
            m.version,
            "retrained: compare with the live model",
        )
        .await?;
        tracing::info!(version = m.version, "risk model retrained and in shadow");
        Ok(())
    }

    /// The leader's part: assess new withdrawals, cancel rejected and blocked ones.
    async fn assess(&mut self) -> Result<(), RuntimeError> {
        let lists =
            self.lists.read().map_err(|_| RuntimeError::Risk("lists poisoned".into()))?.clone();
        let reserved = self
            .store
            .list_withdrawals(&WithdrawalFilter {
                customer_id: None,
                state: Some(WithdrawalState::Reserved),
                after: None,
                limit: 1000,
            })
            .await?;
        self.engine
            .load_profiles(self.store.as_ref(), reserved.iter().map(|w| w.customer_id.to_string()))
            .await?;
        for w in reserved {
            if self.store.risk_review(w.id).await?.is_some() {
                continue;
            }
            let ev = self.event(&w).await?;
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
            // The alerts go in the outbox before the review is written, under ids of their
            // own: a crash between the two assesses again and queues nothing twice.
            let detail = serde_json::json!({
                "withdrawal_id": w.id, "customer_id": w.customer_id, "asset": ev.asset,
                "amount": w.intent.amount.to_string(), "destination": ev.destination,
                "score": review.score, "reasons": at(&review.assessment, "/reasons"),
            });
            let what = format!(
                "{} {} to {}",
                w.intent.amount.format_decimal(w.intent.asset.decimals).unwrap_or_default(),
                ev.asset,
                ev.destination
            );
            let notice = match review.state {
                RiskState::Open => Some((
                    "withdrawal_paused",
                    "Your withdrawal is on hold for a security review",
                    format!(
                        "Your withdrawal of {what} is on hold while our security team reviews it."
                    ),
                )),
                RiskState::Blocked => Some((
                    "withdrawal_blocked",
                    "Your withdrawal was refused",
                    format!("Your withdrawal of {what} was refused by our security checks."),
                )),
                _ => None,
            };
            if let Some((kind, subject, text)) = notice {
                let id = format!("{kind}/{}", w.id);
                self.alerts.tell_customer(&id, w.customer_id, subject, &text).await?;
                self.alerts.raise(&id, kind, detail).await?;
            }
            self.store.assess_withdrawal(&self.ctx(), review).await?;
            // What the engine sees, watched for drift: an alert per shifted quantity and
            // window (its id is both, so a window read again after a crash adds nothing).
            for d in self.engine.with(|e| e.observe(&a)) {
                let id = format!("risk_drift/{}/{}", d.what, d.window);
                let detail = serde_json::json!({
                    "what": d.what, "psi": d.psi, "window": d.window,
                    "threshold": strongroom_risk::drift::ALERT_PSI,
                });
                self.alerts.raise(&id, "risk_drift", detail).await?;
            }
        }
        // Rejected or blocked withdrawals still reserved are cancelled (funds released).
        for st in [RiskState::Rejected, RiskState::Blocked] {
            for r in self.store.list_risk_reviews(Some(st), None, 1000).await? {
                if self.closed.contains(&r.withdrawal_id) {
                    continue;
                }
                let w = self.store.get_withdrawal(r.withdrawal_id).await?;
                if w.state != WithdrawalState::Reserved {
                    self.closed.insert(w.id);
                } else {
                    let entry = strongroom_core::new_id(self.env.as_ref());
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
        Ok(())
    }
}

/// The risk engine, built before the API so the API gets its screen, scorer and notifier
/// at construction; [`Risk::start`] then runs the worker.
#[derive(Debug)]
pub struct Risk {
    store: Arc<dyn Store>,
    engine: SharedEngine,
    lists: Arc<RwLock<Arc<Lists>>>,
    alerts: Alerts,
    opts: RiskOptions,
    env: Arc<dyn Env>,
}

impl Risk {
    /// Load the rules, lists and geography, and make the alert channels.
    pub fn new(
        store: Arc<dyn Store>,
        opts: RiskOptions,
        env: Arc<dyn Env>,
    ) -> Result<Risk, RuntimeError> {
        let bad = |what: String| {
            move |e: strongroom_risk::rules::RuleError| RuntimeError::Config(format!("{what}: {e}"))
        };
        let rules = match &opts.rules {
            Some(f) => RuleSet::from_toml(
                &std::fs::read_to_string(f)
                    .map_err(|e| RuntimeError::io(format!("reading {}", f.display()), e))?,
            )
            .map_err(bad(f.display().to_string()))?,
            None => RuleSet::from_toml(DEFAULT_RULES).map_err(bad("default rules".into()))?,
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
        let mut alerts =
            Alerts::new(store.clone(), opts.webhook.clone(), opts.mail.clone(), env.clone())?;
        if let Some(kek) = &opts.personal_data {
            alerts = alerts.with_customers(kek.clone());
        }
        if let Some(hook) = &opts.events {
            alerts = alerts.with_events(crate::events::Hook::new(hook)?);
        }
        let mut engine = RiskEngine::new(rules);
        if let Some(g) = &opts.geo {
            engine.set_geo(load_geo(g)?);
        }
        if let Some(n) = opts.drift_window {
            engine.set_drift_window(n);
        }
        Ok(Risk { store, engine: SharedEngine::new(engine), lists, alerts, opts, env })
    }

    /// Customer e-mail, for the API.
    pub fn notifier(&self) -> Arc<dyn strongroom_server::accounts::Notifier> {
        Arc::new(self.alerts.clone())
    }

    /// The alerts this engine raises (the runtime's other workers raise theirs here too).
    pub fn alerts(&self) -> &Alerts {
        &self.alerts
    }

    /// Destination screening with the current lists, for the API.
    pub fn screen(&self) -> Arc<dyn strongroom_server::DestinationScreen> {
        Arc::new(ListScreen { lists: self.lists.clone(), alerts: self.alerts.clone() })
    }

    /// `POST /v1/risk/score` on the shared engine, for the API.
    pub fn scorer(&self) -> Arc<dyn strongroom_server::RiskScorer> {
        Arc::new(EngineScorer {
            engine: self.engine.clone(),
            lists: self.lists.clone(),
            store: Some(self.store.clone()),
        })
    }

    /// Start from what the risk worker last kept, then assess withdrawals as they arrive
    /// and learn from what happens (while this instance leads `risk`, committing what it
    /// learned; otherwise following those commits), and deliver the outbox.
    pub async fn start(
        self,
        instance: &crate::lease::Instance,
    ) -> Result<Vec<tokio::task::JoinHandle<()>>, RuntimeError> {
        let Risk { store, engine, lists, alerts, opts, env } = self;
        let worker_name = instance.name.clone();
        let leader = instance.leader(store.clone(), env.clone(), "risk");
        let mut worker = Worker {
            store,
            engine,
            lists: lists.clone(),
            alerts,
            cursor: Cursor::default(),
            kept_cursor: Cursor::default(),
            version: -1,
            leader,
            leading: false,
            closed: HashSet::new(),
            env: env.clone(),
            kek: opts.personal_data.clone(),
            retrain_labels: opts.retrain_labels,
            auto_promote: opts.auto_promote,
            compared_at: 0,
        };
        // What was kept: the models and the cursor (profiles are read when needed).
        worker.resync().await?;
        let delivering = worker.alerts.clone().deliver_forever(worker_name);
        let nats = opts.nats.clone().map(|url| {
            start_nats_ingest(worker.store.clone(), url, opts.personal_data.clone(), env.clone())
        });
        let dir = opts.lists.clone();
        let assessing = tokio::spawn(async move {
            let mut seen = dir.as_deref().and_then(stamp);
            let mut ticks = 0u64;
            loop {
                // Lists reload without a restart when a file in their folder changes.
                ticks += 1;
                if let (Some(d), true) = (&dir, ticks.is_multiple_of(10)) {
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
        });
        Ok(vec![assessing, delivering])
    }
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
    store: Arc<dyn Store>,
    url: String,
    kek: Option<Arc<dyn strongroom_crypto::seal::KeyEncryptionKey>>,
    env: Arc<dyn Env>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            if let Err(e) = nats_ingest(store.as_ref(), &url, kek.as_deref(), env.as_ref()).await {
                tracing::warn!(error = %format!("{e:#}"), url, "NATS ingestion stopped; reconnecting");
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    })
}

async fn nats_ingest(
    store: &dyn Store,
    url: &str,
    kek: Option<&dyn strongroom_crypto::seal::KeyEncryptionKey>,
    env: &dyn Env,
) -> Result<(), RuntimeError> {
    let nats = |e: String| RuntimeError::Risk(format!("NATS: {e}"));
    use async_nats::jetstream::{self, consumer::pull, stream};
    use futures_util::StreamExt;
    let client = async_nats::connect(url).await.map_err(|e| nats(format!("connecting: {e}")))?;
    let js = jetstream::new(client);
    let stream = js
        .get_or_create_stream(stream::Config {
            name: NATS_STREAM.into(),
            subjects: vec![NATS_SUBJECTS.into()],
            ..Default::default()
        })
        .await
        .map_err(|e| nats(format!("stream {NATS_STREAM}: {e}")))?;
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
        .map_err(|e| nats(format!("consumer {NATS_CONSUMER}: {e}")))?;
    tracing::info!(url, stream = NATS_STREAM, "taking risk events from NATS JetStream");
    let mut messages = consumer.messages().await.map_err(|e| nats(e.to_string()))?;
    while let Some(m) = messages.next().await {
        let m = m.map_err(|e| nats(e.to_string()))?;
        let seq = m.info().map(|i| i.stream_sequence).map_err(|e| nats(e.to_string()))?;
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
                            env,
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
        m.ack().await.map_err(|e| nats(format!("ack: {e}")))?;
    }
    Ok(())
}
