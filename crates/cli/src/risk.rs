//! `strongroom risk`: the risk models offline. `eval` replays a labelled CSV through them
//! with progressive validation and prints ROC AUC and PR AUC per model.

use std::path::PathBuf;

use anyhow::Context;
use clap::Subcommand;

#[derive(Debug, Subcommand)]
pub enum RiskCommand {
    /// Progressive validation over a labelled CSV (plain or gzipped, numeric feature
    /// columns), or over every data set a folder's `datasets.toml` names: score each row,
    /// then learn from it; print each model's ROC AUC, PR AUC and rows per second.
    Eval {
        /// A CSV file, or a folder with `datasets.toml` (`[[dataset]]`: name, file, label,
        /// skip, limit, missing_as_missing); `scripts/risk-datasets` makes one.
        path: PathBuf,
        /// The label column (0/1 or true/false); every other column is a feature. Needed
        /// for a file.
        #[arg(long)]
        label_column: Option<String>,
        /// Only the first N rows.
        #[arg(long)]
        limit: Option<usize>,
        /// Leave a column out (repeatable), e.g. an id or a text column.
        #[arg(long = "skip-column")]
        skip: Vec<String>,
        /// Take empty cells (and NA, NaN, ?, null) as missing values, a signal of their
        /// own, instead of stopping at the first one.
        #[arg(long)]
        missing_as_missing: bool,
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
    /// The model registry: train a candidate on analysts' decisions, score it in shadow,
    /// compare, promote, roll back (each move audited).
    Models {
        #[command(subcommand)]
        command: crate::risk_models::ModelsCommand,
    },
}

pub async fn run(cmd: RiskCommand) -> anyhow::Result<crate::exit::Exit> {
    match cmd {
        RiskCommand::Models { command } => return crate::risk_models::run(command).await,
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
            let kek = crate::personal_data_key(&db.key_file()?, None).ok();
            let kek = kek.as_ref().map(|k| k as &dyn strongroom_crypto::seal::KeyEncryptionKey);
            backtest(&store, current, candidate, &lists, geo, kek).await?;
        }
        RiskCommand::Eval { path, label_column, limit, skip, missing_as_missing } => {
            let specs = if path.is_dir() {
                let toml_path = path.join("datasets.toml");
                let text = std::fs::read_to_string(&toml_path)
                    .with_context(|| format!("reading {}", toml_path.display()))?;
                strongroom_risk::eval::read_suite(&text)?
            } else {
                let label = label_column.context("--label-column names the label of a file")?;
                vec![strongroom_risk::eval::DatasetSpec {
                    name: path.file_name().map_or("data".into(), |n| n.to_string_lossy().into()),
                    file: path.to_string_lossy().into(),
                    label,
                    skip,
                    limit,
                    missing_as_missing,
                }]
            };
            let folder = if path.is_dir() { path.clone() } else { PathBuf::new() };
            let mut table = Vec::new();
            for spec in &specs {
                let file = folder.join(&spec.file);
                let input = std::fs::File::open(&file)
                    .with_context(|| format!("opening {}", file.display()))?;
                let data = strongroom_risk::eval::read_table_with(
                    std::io::BufReader::new(input),
                    &spec.label,
                    &spec.skip,
                    spec.limit.or(limit),
                    spec.missing_as_missing || missing_as_missing,
                )
                .with_context(|| format!("data set {}", spec.name))?;
                use strongroom_core::Env;
                let env = strongroom_core::SystemEnv::new();
                let clock = || env.monotonic();
                let report =
                    strongroom_risk::eval::evaluate_timed(&data, &Default::default(), Some(&clock))
                        .with_context(|| format!("data set {}", spec.name))?;
                println!(
                    "{}: {} rows ({} positive), {} features: {}",
                    spec.name,
                    report.rows,
                    report.positives,
                    report.features.len(),
                    report.features.join(", ")
                );
                table.push((spec.name.clone(), report));
            }
            print!("\n{}", strongroom_risk::eval::table(&table));
        }
    }
    Ok(crate::exit::Exit::Ok)
}

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use strongroom_core::withdrawal::WithdrawalState;
use strongroom_core::{Env, SystemEnv};
use strongroom_risk::engine::{Decision, RiskEngine};
use strongroom_risk::lists::{ListKind, Lists};
use strongroom_risk::profile::{Activity, WithdrawalEvent};
use strongroom_risk::rules::{RuleSet, DEFAULT_RULES};
use strongroom_runtime::risk::{
    load_geo, load_lists, withdrawal_event, Contexts, EngineScorer, SharedEngine,
};
use strongroom_store::{RiskReview, RiskState, SqlStore, WithdrawalFilter, WriteCtx};
use uuid::Uuid;

use crate::client::at;
use strongroom_store::prelude::*;

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
        let before = crate::bench_watcher::rss_mb();
        for i in 0..customers * 5 {
            let ev = make(i);
            engine.record(&ev);
        }
        // Measured on the first run only (the second reuses the first's freed pages); the
        // profiles are the same in both, the models fixed in size.
        if !models {
            let grown = crate::bench_watcher::rss_mb() - before;
            println!(
                "  resident memory of {customers} profiles after five withdrawals each: {:.1} MiB, about {:.0} bytes per customer",
                grown,
                grown * 1_048_576.0 / customers as f64
            );
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
        if models {
            println!(
                "  the models' snapshot (kept with each commit that changed them): {} bytes",
                engine.models_snapshot().len()
            );
        }
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
    let per_customer = strongroom_risk::profile::Profile::max_bytes(&Default::default());
    println!(
        "  memory per customer: at most {per_customer} bytes in memory, {} encoded (fixed-size histories and digests)",
        strongroom_risk::profile::MAX_ENCODED
    );
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
                    after: None,
                    limit: 1000,
                })
                .await?,
        );
    }
    withdrawals.sort_by_key(|w| (w.created_at, w.id));
    let reviews: HashMap<Uuid, RiskReview> = store
        .list_risk_reviews(None, None, 1000)
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
        let ev = withdrawal_event(w, contexts.get(&w.id).cloned().unwrap_or_default());
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
    let lists = Arc::new(RwLock::new(Arc::new(Lists::default())));
    let state = AppState::builder(
        store.clone(),
        env.clone(),
        strongroom_units::AssetRegistry::dev(),
        Default::default(),
    )
    .risk_scorer(Arc::new(EngineScorer { engine: SharedEngine::new(engine), lists, store: None }))
    .build();
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
