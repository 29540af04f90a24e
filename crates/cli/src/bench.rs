//! `strongroom bench ingest`: withdrawal-request ingestion over HTTPS on PostgreSQL,
//! measured beside `pgbench`'s TPC-B-like run on the same server in the same run.
//!
//! Each ingested request is the real path: TLS 1.3, token check, JSON validation, intent
//! hashing, then one PostgreSQL transaction holding the reservation, the withdrawal, the
//! journal entry, the audit record and the idempotency key.

use crate::exit::Exit;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Subcommand;
use sqlx::Executor;
use strongroom_core::withdrawal::WithdrawalRules;
use strongroom_core::{new_id, Env};
use strongroom_crypto::generate_token;
use strongroom_server::{pki::DevPki, tls, AppState};
use strongroom_store::{NewApiToken, NewCustomer, NewDeposit, Role, SqlStore, WriteCtx};
use strongroom_units::{Amount, AssetRegistry, AssetSymbol};

use strongroom_core::SystemEnv;
use strongroom_store::prelude::*;

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Withdrawal ingestion vs. pgbench TPC-B on the same PostgreSQL server.
    Ingest {
        /// A PostgreSQL server URL whose user may create databases; the benchmark makes and
        /// drops its own databases there.
        #[arg(long, env = "STRONGROOM_BENCH_POSTGRES_URL")]
        postgres_url: String,
        /// Concurrent clients, for both runs.
        #[arg(long, default_value_t = 8)]
        clients: u32,
        /// How long each run lasts, in seconds.
        #[arg(long, default_value_t = 15)]
        seconds: u64,
        /// Connections for the paced run (default: `clients`). Latency is counted from each
        /// request's scheduled time, so a slow response that delays the next request on its
        /// connection is charged in full.
        #[arg(long)]
        paced_clients: Option<u32>,
        /// Load generator for the saturated run: `builtin` (Rust clients in this process) or
        /// `wrk` (a separate C process, as pgbench's client is).
        #[arg(long, value_enum, default_value = "builtin")]
        load: Load,
        /// Skip pgbench (for a quick look).
        #[arg(long)]
        no_pgbench: bool,
        /// Also run the saturated ingestion against two API instances on the same database
        /// (each with its own connection pool and commit queue, as two `serve` processes
        /// have), clients split between them, and report it against one instance.
        #[arg(long)]
        two_instances: bool,
        /// Write the figures as JSON here too.
        #[arg(long)]
        json: Option<std::path::PathBuf>,
    },
    /// Threshold signing: presignature CPU networked vs in process vs libsecp256k1, online
    /// ECDSA and FROST signing latency over mTLS.
    Mpc {
        /// Presignatures generated for the CPU comparison.
        #[arg(long, default_value_t = 10)]
        presignatures: usize,
        /// Signatures timed online, for each scheme.
        #[arg(long, default_value_t = 200)]
        signatures: usize,
        /// TEST-ONLY primes for the benchmark's auxiliary info.
        #[arg(long, default_value = "crates/mpc/tests/fixtures/test-primes.json")]
        primes: std::path::PathBuf,
        /// First of the benchmark nodes' loopback ports (it uses a few from there).
        #[arg(long, default_value_t = 7201)]
        base_port: u16,
    },
    /// Risk scoring in process: assess and learn per withdrawal event, the full engine vs
    /// the same engine with lists and rules only; events/s and latency per event.
    Risk {
        /// Withdrawal events scored (each assessed, then learnt from).
        #[arg(long, default_value_t = 200_000)]
        events: usize,
        /// Customers the events are spread over.
        #[arg(long, default_value_t = 10_000)]
        customers: usize,
        /// Also score over HTTPS (`POST /v1/risk/score`) from this many connections.
        #[arg(long)]
        http_clients: Option<u32>,
        /// How long the HTTPS run lasts, in seconds.
        #[arg(long, default_value_t = 10)]
        http_seconds: u64,
        /// Also measure this many customers' profiles: encoded size, and kept in and read
        /// back from a database (SQLite; PostgreSQL too with `--postgres-url`).
        #[arg(long)]
        profiles: Option<usize>,
        /// Withdrawals in each of those customers' histories.
        #[arg(long, default_value_t = 40)]
        profile_withdrawals: usize,
        /// A PostgreSQL server URL whose user may create databases, to keep the profiles in
        /// PostgreSQL too.
        #[arg(long, env = "STRONGROOM_BENCH_POSTGRES_URL")]
        postgres_url: Option<String>,
    },
    /// The deposit watcher's cost per block with many watched addresses (PostgreSQL, anvil),
    /// against 1,000 addresses in the same run.
    Watcher {
        /// A PostgreSQL server URL whose user may create databases; the benchmark makes and
        /// drops its own databases there.
        #[arg(long, env = "STRONGROOM_BENCH_POSTGRES_URL")]
        postgres_url: String,
        /// Deposit addresses watched.
        #[arg(long, default_value_t = 1_000_000)]
        addresses: usize,
        /// Blocks mined and scanned.
        #[arg(long, default_value_t = 20)]
        blocks: usize,
        /// Transfers per block (a tenth of them to watched addresses).
        #[arg(long, default_value_t = 50)]
        transfers: usize,
    },
    /// What a sign-in costs the server in one thread: an Argon2id password check at the
    /// production parameters and a TOTP check, against a session-token check (SHA-256) as the
    /// baseline, in the same run.
    Login {
        /// Sign-ins timed, for each check.
        #[arg(long, default_value_t = 40)]
        rounds: usize,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Load {
    Builtin,
    Wrk,
}

/// `bench login`.
fn login(rounds: usize) -> anyhow::Result<()> {
    use strongroom_crypto::{password, totp::Totp, SecretString};
    let env = SystemEnv::new();
    let rounds = rounds.max(5);
    let pw = SecretString::new("correct horse battery staple".into());
    let phc = password::hash_password(&pw, &env).map_err(|e| anyhow::anyhow!("{e}"))?;
    let token = generate_token(&env);
    let seed = [7u8; 20];
    let now = 1_800_000_000u64;
    let code = Totp::default().code(&seed, now);
    let time = |n: usize, f: &mut dyn FnMut() -> bool| -> anyhow::Result<Vec<f64>> {
        let mut lat = Vec::with_capacity(n);
        for _ in 0..n {
            let t = env.monotonic();
            anyhow::ensure!(f(), "a check that must pass failed");
            lat.push(env.monotonic().saturating_sub(t).as_secs_f64() * 1e6);
        }
        lat.sort_by(f64::total_cmp);
        Ok(lat)
    };
    let argon = time(rounds, &mut || password::verify_password(&pw, &phc))?;
    let totp =
        time(rounds * 1000, &mut || Totp::default().verify(&seed, &code, now, 1, None).is_some())?;
    let tok =
        time(rounds * 1000, &mut || strongroom_crypto::token_matches(&token.token, &token.hash))?;
    let stat = |v: &[f64]| {
        let mean = v.iter().sum::<f64>() / v.len().max(1) as f64;
        let p99 = v.get(v.len().saturating_mul(99) / 100).copied().unwrap_or(mean);
        (mean, p99)
    };
    let (base, _) = stat(&tok);
    println!(
        "{:<44} {:>12} {:>12} {:>14}",
        "check (one thread)", "mean µs", "p99 µs", "× token check"
    );
    for (name, v) in [
        ("session token (SHA-256, baseline)", &tok),
        ("TOTP code (HMAC-SHA1, window ±1)", &totp),
        ("password (Argon2id m=19 MiB t=2 p=1)", &argon),
    ] {
        let (mean, p99) = stat(v);
        println!("{name:<44} {mean:>12.2} {p99:>12.2} {:>14.0}", mean / base.max(1e-9));
    }
    let (argon_mean, _) = stat(&argon);
    println!(
        "password sign-ins per second per core: {:.0} (the per-IP and per-account limits cap guessing far below this)",
        1e6 / argon_mean.max(1e-9)
    );
    Ok(())
}

pub async fn run(command: BenchCommand) -> anyhow::Result<Exit> {
    if let BenchCommand::Login { rounds } = command {
        login(rounds)?;
        return Ok(Exit::Ok);
    }
    if let BenchCommand::Risk {
        events,
        customers,
        http_clients,
        http_seconds,
        profiles,
        profile_withdrawals,
        postgres_url,
    } = command
    {
        crate::risk::bench(events, customers);
        if let Some(n) = profiles {
            crate::bench_profiles::run(n, profile_withdrawals, postgres_url.as_deref()).await?;
        }
        if let Some(clients) = http_clients {
            crate::risk::bench_http(clients, http_seconds, customers).await?;
        }
        return Ok(Exit::Ok);
    }
    if let BenchCommand::Watcher { postgres_url, addresses, blocks, transfers } = command {
        crate::bench_watcher::run(&postgres_url, addresses, blocks, transfers).await?;
        return Ok(Exit::Ok);
    }
    if let BenchCommand::Mpc { presignatures, signatures, primes, base_port } = command {
        crate::bench_mpc::run(presignatures, signatures, primes, base_port).await?;
        return Ok(Exit::Ok);
    }
    let BenchCommand::Ingest {
        postgres_url,
        clients,
        seconds,
        paced_clients,
        load,
        no_pgbench,
        two_instances,
        json,
    } = command
    else {
        return Ok(Exit::Ok);
    };
    let paced_clients = paced_clients.unwrap_or(clients);
    let pg = if no_pgbench { None } else { Some(pgbench(&postgres_url, clients, seconds).await?) };
    if let Some(pg) = &pg {
        println!("pgbench TPC-B (scale 1, {clients} clients, {seconds} s): {:.0} tps, average latency {:.2} ms", pg.tps, pg.latency_avg_ms);
    }
    let saturated = match load {
        Load::Builtin => ingest(&postgres_url, clients, seconds, None, 1).await?,
        Load::Wrk => ingest_wrk(&postgres_url, clients, seconds).await?,
    };
    println!(
        "withdrawal ingestion, saturated ({load:?} load): {:.0} req/s, p50 {:.2} ms, p99 {:.2} ms ({} requests, {} errors, {clients} clients)",
        saturated.tps, saturated.p50_ms, saturated.p99_ms, saturated.ok, saturated.errors
    );
    let two = if two_instances {
        let two = ingest(&postgres_url, clients, seconds, None, 2).await?;
        println!(
            "withdrawal ingestion, saturated, two instances on one database: {:.0} req/s, p50 {:.2} ms, p99 {:.2} ms ({} requests, {} errors); two / one instance: {:.2}{}",
            two.tps,
            two.p50_ms,
            two.p99_ms,
            two.ok,
            two.errors,
            two.tps / saturated.tps.max(1.0),
            pg.as_ref().map(|p| format!(", two instances / pgbench: {:.2}", two.tps / p.tps)).unwrap_or_default()
        );
        Some(two)
    } else {
        None
    };
    // Latency at the target load: half of pgbench's rate, offered at a fixed pace.
    let paced = match &pg {
        Some(pg) => Some((
            pg.tps * 0.5,
            ingest(&postgres_url, paced_clients, seconds, Some(pg.tps * 0.5), 1).await?,
        )),
        None => None,
    };
    if let (Some(pg), Some((offered, paced))) = (&pg, &paced) {
        println!(
            "withdrawal ingestion at {offered:.0} req/s offered (0.5 x pgbench, {paced_clients} connections): {:.0} req/s done, p50 {:.2} ms, p99 {:.2} ms ({} errors)",
            paced.tps, paced.p50_ms, paced.p99_ms, paced.errors
        );
        println!(
            "ratio saturated ingestion / pgbench: {:.2} (aim >= 0.50); p99 at 0.5 x pgbench: {:.2} ms (aim < 20 ms)",
            saturated.tps / pg.tps,
            paced.p99_ms
        );
    }
    if let Some(path) = json {
        let doc = serde_json::json!({
            "clients": clients,
            "paced_clients": paced_clients,
            "load": format!("{load:?}"),
            "seconds": seconds,
            "pgbench": pg.as_ref().map(|p| serde_json::json!({ "tps": p.tps, "latency_avg_ms": p.latency_avg_ms })),
            "saturated": saturated.to_json(),
            "paced": paced.as_ref().map(|(offered, p)| serde_json::json!({ "offered_rps": offered, "result": p.to_json() })),
            "ratio": pg.as_ref().map(|p| saturated.tps / p.tps),
            "two_instances": two.as_ref().map(IngestResult::to_json),
        });
        std::fs::write(&path, serde_json::to_string_pretty(&doc)?)?;
    }
    let errors = saturated.errors
        + paced.as_ref().map_or(0, |(_, p)| p.errors)
        + two.as_ref().map_or(0, |t| t.errors);
    Ok(if errors == 0 { Exit::Ok } else { Exit::Problem })
}

struct IngestResult {
    tps: f64,
    p50_ms: f64,
    p99_ms: f64,
    ok: u64,
    errors: u64,
}

impl IngestResult {
    fn to_json(&self) -> serde_json::Value {
        serde_json::json!({ "tps": self.tps, "p50_ms": self.p50_ms, "p99_ms": self.p99_ms, "ok": self.ok, "errors": self.errors })
    }
}

const WRK_SCRIPT: &str = r#"
-- Unique idempotency key per request; customers round-robin.
local counter = 0
local id = 0
function setup(thread)
  id = id + 1
  thread:set("tid", id)
end
request = function()
  counter = counter + 1
  local c = customers[(counter % #customers) + 1]
  local body = '{"customer_id":"' .. c .. '","asset":"ETH","destination":"0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed","amount":"0.001"}'
  wrk.headers["Idempotency-Key"] = "wrk-" .. tid .. "-" .. counter
  return wrk.format("POST", "/v1/withdrawals", wrk.headers, body)
end
"#;

/// The same ingestion driven by `wrk` (a C load generator, like pgbench's client) from its
/// own process, so the server's share of the 2 cores is not also spent on the clients.
async fn ingest_wrk(url: &str, clients: u32, seconds: u64) -> anyhow::Result<IngestResult> {
    let f = fixture(url, clients, 1).await?;
    let customers: Vec<String> = f.customers.iter().map(|c| format!("\"{c}\"")).collect();
    let script = format!("customers = {{{}}}\n{WRK_SCRIPT}", customers.join(", "));
    let script_path = f._dir.path().join("withdrawals.lua");
    std::fs::write(&script_path, script)?;
    let run = |secs: u64| {
        tokio::process::Command::new("wrk")
            .args([
                "-t",
                "2",
                "-c",
                &clients.to_string(),
                "-d",
                &format!("{secs}s"),
                "--latency",
                "-s",
            ])
            .arg(&script_path)
            .args([
                "-H",
                &format!("Authorization: {}", f.auth),
                "-H",
                "Content-Type: application/json",
            ])
            .arg(format!("https://127.0.0.1:{}/v1/withdrawals", f.addr(0).port()))
            .output()
    };
    run(2).await.context("running wrk (apt-get install wrk)")?;
    let out = run(seconds).await?;
    f.stop().await;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        anyhow::bail!("wrk failed: {}{}", text, String::from_utf8_lossy(&out.stderr));
    }
    let ms = |v: &str| -> Option<f64> {
        let (num, unit) = v.split_at(v.find(|c: char| c.is_ascii_alphabetic())?);
        let n: f64 = num.parse().ok()?;
        Some(match unit {
            "us" => n / 1000.0,
            "ms" => n,
            "s" => n * 1000.0,
            _ => return None,
        })
    };
    let field =
        |prefix: &str| text.lines().find_map(|l| l.trim().strip_prefix(prefix)).map(str::trim);
    let tps: f64 = field("Requests/sec:")
        .and_then(|v| v.parse().ok())
        .context("no Requests/sec in wrk output")?;
    let p50 = field("50%").and_then(ms).unwrap_or(0.0);
    let p99 = field("99%").and_then(ms).unwrap_or(0.0);
    let errors: u64 = field("Non-2xx or 3xx responses:").and_then(|v| v.parse().ok()).unwrap_or(0);
    let total: u64 = text
        .lines()
        .find_map(|l| l.trim().split_once(" requests in "))
        .and_then(|(n, _)| n.trim().parse().ok())
        .unwrap_or(0);
    Ok(IngestResult { tps, p50_ms: p50, p99_ms: p99, ok: total.saturating_sub(errors), errors })
}

struct PgbenchResult {
    tps: f64,
    latency_avg_ms: f64,
}

/// A new database named for this process, so that two benchmarks on one server never
/// share (or drop) each other's. Returns its name and URL.
pub(crate) async fn fresh_db(url: &str, kind: &str) -> anyhow::Result<(String, String)> {
    sqlx::any::install_default_drivers();
    let name = format!("strongroom_bench_{kind}_{}", std::process::id());
    let mut admin = <sqlx::AnyConnection as sqlx::Connection>::connect(url)
        .await
        .context("connecting to PostgreSQL")?;
    admin.execute(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)").as_str()).await?;
    admin.execute(format!("CREATE DATABASE {name}").as_str()).await?;
    let db_url = strongroom_store::with_database(url, &name);
    Ok((name, db_url))
}

pub(crate) async fn drop_db(url: &str, name: &str) -> anyhow::Result<()> {
    let mut admin = <sqlx::AnyConnection as sqlx::Connection>::connect(url).await?;
    admin.execute(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)").as_str()).await?;
    Ok(())
}

/// A fresh database with one service token and `clients` funded customers, served over
/// HTTPS by `instances` in-process servers, each with its own store (pool and commit queue).
struct Fixture {
    server_url: String,
    db_name: String,
    env: Arc<SystemEnv>,
    instances: Vec<(Arc<SqlStore>, tls::Running)>,
    base: String,
    ca_pem: Vec<u8>,
    auth: String,
    customers: Vec<uuid::Uuid>,
    _dir: tempfile::TempDir,
}

async fn fixture(url: &str, clients: u32, instances: usize) -> anyhow::Result<Fixture> {
    let env = Arc::new(SystemEnv::new());
    let (db_name, db_url) = fresh_db(url, "ingest").await?;
    let store = Arc::new(
        SqlStore::connect(&db_url, strongroom_store::sql_options(clients.max(4) * 2)).await?,
    );
    store.migrate().await?;

    let ctx = WriteCtx { actor: "bench".into(), now: env.now(), request_id: None };
    let token = generate_token(env.as_ref());
    store
        .create_token(
            &ctx,
            NewApiToken {
                id: token.id.clone(),
                name: "bench".into(),
                role: Role::Service,
                token_hash: token.hash.clone(),
                restrictions: None,
            },
        )
        .await?;
    let eth = AssetSymbol::parse("ETH")?;
    let mut customers = Vec::new();
    for i in 0..clients {
        let id = new_id(env.as_ref());
        store
            .create_customer(&ctx, None, NewCustomer { id, external_id: format!("bench-{i}") })
            .await?;
        let amount = Amount::from_base_units(10u128.pow(30))?;
        store
            .credit_deposit(
                &ctx,
                None,
                NewDeposit {
                    id: new_id(env.as_ref()),
                    entry_id: new_id(env.as_ref()),
                    customer_id: id,
                    asset: eth.clone(),
                    amount,
                    reference: format!("bench-{i}"),
                },
            )
            .await?;
        customers.push(id);
    }

    let dir = tempfile::tempdir()?;
    let pki = DevPki::in_dir(dir.path());
    pki.ensure(&["localhost".into()], env.now())?;
    let tls_config = tls::server_config(&pki.server_cert, &pki.server_key)?;
    let serve = |store: Arc<SqlStore>| {
        let state =
            AppState::new(store, env.clone(), AssetRegistry::dev(), WithdrawalRules::default());
        let (app, _) = strongroom_server::app(state);
        let config = tls_config.clone();
        async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
            anyhow::Ok(tls::serve(listener, config, app)?)
        }
    };
    let running = serve(store.clone()).await?;
    let base = format!("https://localhost:{}", running.addr.port());
    // Further instances: their own pools on the same database.
    let mut more = Vec::new();
    for _ in 1..instances.max(1) {
        let other = Arc::new(
            SqlStore::connect(&db_url, strongroom_store::sql_options(clients.max(4) * 2)).await?,
        );
        let r = serve(other.clone()).await?;
        more.push((other, r));
    }

    let ca_pem = std::fs::read(&pki.ca_cert)?;
    let auth = format!("Bearer {}", token.token.expose_secret());
    Ok(Fixture {
        server_url: url.to_owned(),
        db_name,
        env,
        instances: std::iter::once((store, running)).chain(more).collect(),
        base,
        ca_pem,
        auth,
        customers,
        _dir: dir,
    })
}

impl Fixture {
    /// The address of the instance client `i` talks to (clients are spread round-robin).
    fn addr(&self, i: usize) -> std::net::SocketAddr {
        let n = self.instances.len().max(1);
        self.instances.get(i % n).map_or_else(|| ([127, 0, 0, 1], 0).into(), |(_, r)| r.addr)
    }

    async fn stop(self) {
        for (store, running) in self.instances {
            running.shutdown().await;
            store.close().await;
        }
        if let Err(e) = drop_db(&self.server_url, &self.db_name).await {
            tracing::warn!(error = %e, database = %self.db_name, "could not drop the benchmark database");
        }
    }
}

/// Drive `POST /v1/withdrawals` from `clients` connections for `seconds` after a 2 s
/// warm-up: flat out when `rate` is `None`, otherwise at `rate` requests per second in all,
/// with latency counted from each request's scheduled time (no coordinated omission).
async fn ingest(
    url: &str,
    clients: u32,
    seconds: u64,
    rate: Option<f64>,
    instances: usize,
) -> anyhow::Result<IngestResult> {
    let f = fixture(url, clients, instances).await?;
    let size = |store: Arc<SqlStore>| async move {
        let row = sqlx::query(
            "SELECT pg_database_size(current_database()) AS bytes, pg_total_relation_size('audit_log') AS audit",
        )
        .fetch_one(store.pool())
        .await?;
        use sqlx::Row;
        anyhow::Ok((row.try_get::<i64, _>("bytes")?, row.try_get::<i64, _>("audit")?))
    };
    let first_store = f.instances.first().map(|(s, _)| s.clone()).context("no instance")?;
    let (base_bytes, base_audit) = size(first_store.clone()).await?;
    let env = f.env.clone();
    let ca = reqwest::Certificate::from_pem(&f.ca_pem)?;
    let base = f.base.clone();
    let measure_from = env.monotonic() + Duration::from_secs(2);
    let until = measure_from + Duration::from_secs(seconds);
    let mut tasks = Vec::new();
    for (i, customer) in f.customers.iter().copied().enumerate() {
        let client = reqwest::Client::builder()
            .use_rustls_tls()
            .tls_built_in_root_certs(false)
            .add_root_certificate(ca.clone())
            .min_tls_version(reqwest::tls::Version::TLS_1_3)
            .resolve("localhost", f.addr(i))
            .build()?;
        let env = env.clone();
        let url = format!("{base}/v1/withdrawals");
        let auth = f.auth.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut errors = 0u64;
            let mut n = 0u64;
            // Each client's share of the rate, phase-shifted so clients do not fire together.
            let interval = rate.map(|r| Duration::from_secs_f64(f64::from(clients) / r.max(1.0)));
            let start = env.monotonic();
            loop {
                let t0 = match interval {
                    Some(iv) => {
                        let phase = iv.mul_f64(i as f64 / f64::from(clients));
                        let scheduled = start + phase + iv.mul_f64(n as f64);
                        let now = env.monotonic();
                        if scheduled > now {
                            tokio::time::sleep(scheduled - now).await;
                        }
                        scheduled
                    }
                    None => env.monotonic(),
                };
                if t0 >= until {
                    break;
                }
                n += 1;
                let body = serde_json::json!({ "customer_id": customer, "asset": "ETH", "destination": "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed", "amount": "0.001" });
                let r = client.post(&url).header("authorization", &auth).header("idempotency-key", format!("bench-{i}-{n}")).json(&body).send().await;
                let ok = matches!(&r, Ok(resp) if resp.status() == reqwest::StatusCode::CREATED);
                let t1 = env.monotonic();
                if t0 >= measure_from && t1 <= until {
                    if ok {
                        latencies.push(t1.saturating_sub(t0));
                    } else {
                        errors += 1;
                    }
                }
            }
            (latencies, errors)
        }));
    }
    let mut all = Vec::new();
    let mut errors = 0;
    for t in tasks {
        let (l, e) = t.await?;
        all.extend(l);
        errors += e;
    }
    // What the database grew by per withdrawal (withdrawal, journal, postings, idempotency
    // key, audit record, indexes), for the capacity figures in docs/scale.md.
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM withdrawals")
        .fetch_one(first_store.pool())
        .await?;
    let (bytes, audit) = size(first_store).await?;
    if n > 0 {
        println!(
            "  database: {n} withdrawals grew it by {:.1} MiB: {} bytes per withdrawal in all, {} of them the audit log's",
            (bytes - base_bytes) as f64 / 1_048_576.0,
            (bytes - base_bytes) / n,
            (audit - base_audit) / n
        );
    }
    f.stop().await;
    all.sort();
    let pct = |p: f64| -> f64 {
        let idx = ((all.len() as f64 - 1.0) * p).round() as usize;
        all.get(idx).map_or(0.0, |d| d.as_secs_f64() * 1000.0)
    };
    Ok(IngestResult {
        tps: all.len() as f64 / seconds as f64,
        p50_ms: pct(0.50),
        p99_ms: pct(0.99),
        ok: all.len() as u64,
        errors,
    })
}

async fn pgbench(url: &str, clients: u32, seconds: u64) -> anyhow::Result<PgbenchResult> {
    let (db_name, db_url) = fresh_db(url, "pgbench").await?;
    let init = tokio::process::Command::new("pgbench")
        .args(["-i", "-s", "1", "-q", &db_url])
        .output()
        .await
        .context("running pgbench (install postgresql-contrib or postgresql-client)")?;
    if !init.status.success() {
        anyhow::bail!("pgbench -i failed: {}", String::from_utf8_lossy(&init.stderr));
    }
    let jobs = clients.min(2).to_string();
    let out = tokio::process::Command::new("pgbench")
        .args(["-c", &clients.to_string(), "-j", &jobs, "-T", &seconds.to_string(), &db_url])
        .output()
        .await?;
    if !out.status.success() {
        anyhow::bail!("pgbench failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    drop_db(url, &db_name).await?;
    let text = String::from_utf8_lossy(&out.stdout);
    let number_after = |prefix: &str| -> Option<f64> {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(prefix))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse().ok())
    };
    let tps = number_after("tps = ").context("no tps in pgbench output")?;
    let latency_avg_ms = number_after("latency average = ").unwrap_or(0.0);
    Ok(PgbenchResult { tps, latency_avg_ms })
}
