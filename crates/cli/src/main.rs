//! `strongroom`: the command-line entry point. A thin main: it parses arguments, reads
//! configuration and wires the library crates together.
#![forbid(unsafe_code)]
// A command-line program talks to its user on stdout and stderr.
#![allow(clippy::print_stdout, clippy::print_stderr)]

mod bench;
mod bench_mpc;
mod chain;
mod client;
mod cold;
mod config;
mod governance;
mod mail;
mod risk;
mod signers;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use strongroom_core::withdrawal::WithdrawalRules;
use strongroom_core::Env;
use strongroom_crypto::generate_token;
use strongroom_server::{pki::DevPki, tls, AppState};
use strongroom_store::{verify::MismatchKind, NewApiToken, Role, SqlStore, Store, WriteCtx};
use strongroom_units::AssetRegistry;

use crate::config::{Config, LogFormat};
use strongroom_core::SystemEnv;

/// Default data folder of `strongroom dev`, relative to the working directory.
pub(crate) const DEV_DATA_DIR: &str = ".strongroom/dev";

#[derive(Debug, Parser)]
#[command(name = "strongroom", version, about = "Self-hosted custody security platform")]
struct Cli {
    /// Log format on stderr.
    #[arg(long, global = true, value_enum)]
    log_format: Option<LogFormat>,
    #[command(subcommand)]
    command: Command,
}

// Parsed once at start; the size of `dev`'s flags does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
enum Command {
    /// Run everything on this machine: SQLite in a data folder, a dev CA, an operator token,
    /// and the HTTPS API.
    Dev {
        #[arg(long, default_value = DEV_DATA_DIR)]
        data_dir: PathBuf,
        #[arg(long, default_value = "127.0.0.1:8443")]
        listen: std::net::SocketAddr,
        /// First of the three signer nodes' ports (loopback).
        #[arg(long, default_value_t = 7101)]
        signer_base_port: u16,
        /// Do not start the signer nodes.
        #[arg(long)]
        no_signers: bool,
        /// TEST ONLY: pregenerated Paillier primes for the signer nodes (public, never for
        /// real keys).
        #[arg(long, hide = true)]
        test_primes: Option<PathBuf>,
        /// An Ethereum node's JSON-RPC URL (chain id 31337). Default: start anvil from the
        /// project's install (scripts/install-eth-tools), if there is one.
        #[arg(long)]
        eth_rpc: Option<String>,
        /// Run without a chain (no withdrawal engine).
        #[arg(long)]
        no_chain: bool,
        /// Confirmations before a withdrawal is settled.
        #[arg(long, default_value_t = 2)]
        confirmations: u64,
        /// Put the signer nodes under governance: the folder `strongroom governance init`
        /// wrote. Its genesis is pinned by the nodes (for good: later starts keep it) and
        /// installed in the database.
        #[arg(long)]
        governance: Option<PathBuf>,
        /// A folder of sanctions and scam address lists for the risk engine (`*.txt`, one
        /// address a line; `*.csv` with an `address` column), reloaded when it changes.
        #[arg(long)]
        risk_lists: Option<PathBuf>,
        /// The risk rule set (TOML); built-in defaults otherwise.
        #[arg(long)]
        risk_rules: Option<PathBuf>,
        /// The security team's webhook for risk alerts (signed with HMAC-SHA256).
        #[arg(long, requires = "risk_webhook_secret")]
        risk_webhook: Option<String>,
        /// The file holding the webhook's HMAC secret.
        #[arg(long, requires = "risk_webhook")]
        risk_webhook_secret: Option<PathBuf>,
        /// An SMTP relay (`host:port`) for the security team's alert e-mail.
        #[arg(long, requires = "alert_email_to")]
        alert_smtp: Option<String>,
        /// Who gets alert e-mail (repeatable).
        #[arg(long)]
        alert_email_to: Vec<String>,
        #[arg(long, default_value = "strongroom@localhost")]
        alert_email_from: String,
        /// Upgrade the SMTP connection with STARTTLS, trusting this CA certificate (PEM).
        #[arg(long)]
        alert_smtp_ca: Option<PathBuf>,
        /// Also take risk events from this NATS server's JetStream (stream STRONGROOM_RISK,
        /// subjects strongroom.risk.events.<kind>).
        #[arg(long)]
        nats: Option<String>,
        /// IPv4 ranges → places for impossible travel (CSV `start_ip,end_ip,lat,lon,country`).
        #[arg(long)]
        risk_geo: Option<PathBuf>,
        /// Seconds withdrawals stay locked after a customer's password, 2FA, e-mail or
        /// whitelist change.
        #[arg(long, default_value_t = 86_400)]
        withdrawal_lock_secs: u64,
        /// Seconds before a new customer whitelist address (or whitelist-only mode turned
        /// off) takes effect.
        #[arg(long, default_value_t = 86_400)]
        whitelist_delay_secs: u64,
        /// The dev genesis's time-lock, in seconds: how long a new whitelist entry, asset or
        /// customer passkey waits before the signer nodes use it (only when this start makes
        /// the dev genesis).
        #[arg(long, default_value_t = 86_400)]
        governance_delay_secs: u64,
        /// The console's origin, for WebAuthn passkeys (default `https://localhost:<port>`).
        #[arg(long)]
        public_url: Option<String>,
        /// Run the treasury: deploy a dev cold wallet (a 2-of-3 Safe whose owner keys are
        /// made at first start, sealed in DATA/cold) and keep the hot wallet's ETH between
        /// the watermarks below, sweeping the excess to cold.
        #[arg(long)]
        treasury: bool,
        /// Below this much ETH in the hot wallet, a refill from cold is requested.
        #[arg(long, default_value = "1")]
        hot_eth_low: String,
        /// What the hot wallet keeps after a sweep (ETH).
        #[arg(long, default_value = "3")]
        hot_eth_target: String,
        /// Above this much ETH in the hot wallet, the excess is swept to cold.
        #[arg(long, default_value = "5")]
        hot_eth_high: String,
        /// The least share of holdings to keep cold, in basis points (9500 = 95%).
        #[arg(long, default_value_t = 9_500)]
        min_cold_bps: u32,
    },
    /// The governance log (members, quorum, policy, whitelists, freezes), on files.
    Governance {
        #[command(subcommand)]
        command: governance::GovernanceCommand,
    },
    /// Cold withdrawals on files: intent, approvals, the signing bundle, and sending what the
    /// offline signers returned.
    Cold {
        #[command(subcommand)]
        command: cold::ColdCommand,
    },
    /// Make a self-signed mutual-TLS identity and print its pin: a signer node's, an
    /// orchestrator's, or a member's for `governance push` (the nodes list it in `pushers`).
    /// Trust is the pin (the certificate's SHA-256), so no CA is involved. Keeps existing
    /// files: run again, it prints the same pin.
    Certificate {
        /// Where to write NAME.pem and NAME-key.pem (the key mode 0600).
        #[arg(long)]
        dir: PathBuf,
        /// e.g. signer-1, orchestrator, pusher-ada.
        #[arg(long)]
        name: String,
    },
    /// Withdrawals: `initiate` signs a request as the exchange's backend, `approve` signs an
    /// approval on the approver's machine.
    Withdrawal {
        #[command(subcommand)]
        command: governance::WithdrawalCommand,
    },
    /// The risk models offline (`eval`: progressive validation over a labelled CSV).
    Risk {
        #[command(subcommand)]
        command: risk::RiskCommand,
    },
    /// Compare ledger custody with on-chain balances (the dev chain's hot wallet); exits 1
    /// on any difference.
    Reconcile {
        #[arg(long, default_value = DEV_DATA_DIR)]
        data_dir: PathBuf,
    },
    /// Run one MPC signer node (what `strongroom-signer` runs).
    Signer {
        #[arg(long)]
        config: PathBuf,
        /// Exit when standard input closes (used by `strongroom dev` for its children).
        #[arg(long, hide = true)]
        exit_with_stdin: bool,
    },
    /// Talk to the signer nodes as the orchestrator.
    Mpc {
        #[command(subcommand)]
        command: signers::MpcCommand,
    },
    /// Run the API server from a configuration file (PostgreSQL via `database_url`).
    Serve {
        #[arg(long)]
        config: PathBuf,
    },
    /// Apply database migrations.
    Migrate(DbArgs),
    /// Audit log tools.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// API tokens.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Staff accounts (operators, approvers, analysts, admins, auditors) for the console.
    Staff {
        #[command(subcommand)]
        command: StaffCommand,
    },
    /// The key that seals personal data and secrets at rest.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Benchmarks (see README, Performance).
    Bench {
        #[command(subcommand)]
        command: bench::BenchCommand,
    },
}

#[derive(Debug, Subcommand)]
enum AuditCommand {
    /// Walk the hash chain and compare every row with its last audited state. Exit 0 when
    /// intact, 1 when tampering is found.
    Verify(DbArgs),
    /// Check a signer node's own audit log (`DATA/audit.jsonl` in the node's data folder).
    VerifyNode { file: PathBuf },
}

#[derive(Debug, Subcommand)]
enum StaffCommand {
    /// Add a staff account; it signs in at `/v1/auth/login` and should turn on TOTP or a
    /// passkey at once (approving needs a 2FA sign-in).
    Add {
        #[arg(long)]
        email: String,
        #[arg(long, value_parser = parse_role)]
        role: Role,
        /// Approvers: the governance member they approve as.
        #[arg(long)]
        member: Option<String>,
        /// A file holding the first password (read, then the file can go).
        #[arg(long)]
        password_file: PathBuf,
        #[command(flatten)]
        db: DbArgs,
    },
}

#[derive(Debug, Subcommand)]
enum KeysCommand {
    /// Make a new personal-data key and re-seal everything under it (contacts, e-mail
    /// addresses and their index, TOTP seeds, devices, API signing keys). Run it with the
    /// server stopped; if interrupted, run it again: it finishes with the same new key
    /// (DATA/personal-data.key.next) and then replaces DATA/personal-data.key.
    Rotate(DbArgs),
}

#[derive(Debug, Subcommand)]
enum TokenCommand {
    /// Create a token and print it once.
    Create {
        #[arg(long)]
        name: String,
        #[arg(long, value_parser = parse_role)]
        role: Role,
        /// Limit the token to a resource (`withdrawals`, `customers:read`, …; repeatable).
        #[arg(long)]
        scope: Vec<String>,
        /// Accept it only from this IP address or CIDR range (repeatable).
        #[arg(long)]
        allow_ip: Vec<String>,
        /// Require every request to be signed (HMAC-SHA256); prints the signing key once.
        #[arg(long)]
        sign: bool,
        #[command(flatten)]
        db: DbArgs,
    },
    /// Revoke a token by id (the part after `srt_`).
    Revoke {
        id: String,
        #[command(flatten)]
        db: DbArgs,
    },
}

fn parse_role(s: &str) -> Result<Role, String> {
    Role::parse(s).ok_or_else(|| {
        format!("role must be operator, service, auditor, approver, analyst or admin, not {s:?}")
    })
}

/// Which database a command works on: `--database-url`, else the config's, else the dev
/// data folder's SQLite file.
#[derive(Debug, Clone, Args)]
pub(crate) struct DbArgs {
    #[arg(long, conflicts_with = "database_url")]
    config: Option<PathBuf>,
    #[arg(long, env = "STRONGROOM_DATABASE_URL")]
    database_url: Option<String>,
    #[arg(long, default_value = DEV_DATA_DIR)]
    data_dir: PathBuf,
}

impl DbArgs {
    pub(crate) fn url(&self) -> anyhow::Result<String> {
        if let Some(url) = &self.database_url {
            return Ok(url.clone());
        }
        if let Some(path) = &self.config {
            return Ok(Config::load(path)?.database_url);
        }
        let db = self.data_dir.join("strongroom.db");
        if !db.exists() {
            anyhow::bail!(
                "no database at {}: pass --database-url or --config, or run `strongroom dev` first",
                db.display()
            );
        }
        Ok(Config::sqlite_url(&absolute(&self.data_dir)?))
    }

    pub(crate) async fn open(&self) -> anyhow::Result<SqlStore> {
        let url = self.url()?;
        let store = SqlStore::connect(&url, Default::default())
            .await
            .with_context(|| format!("connecting to {}", redact_url(&url)))?;
        store.migrate().await.context("migrating")?;
        Ok(store)
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let default_format = match cli.command {
        Command::Dev { .. } => LogFormat::Pretty,
        _ => LogFormat::Json,
    };
    init_logging(cli.log_format.unwrap_or(default_format));
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli.command)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("STRONGROOM_LOG")
        .unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,hyper=warn,rustls=warn"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().flatten_event(true).with_current_span(true).init(),
        LogFormat::Pretty => builder.compact().init(),
    }
}

async fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Dev {
            data_dir,
            listen,
            signer_base_port,
            no_signers,
            test_primes,
            eth_rpc,
            no_chain,
            confirmations,
            governance,
            risk_lists,
            risk_rules,
            risk_webhook,
            risk_webhook_secret,
            alert_smtp,
            alert_email_to,
            alert_email_from,
            alert_smtp_ca,
            nats,
            risk_geo,
            withdrawal_lock_secs,
            whitelist_delay_secs,
            governance_delay_secs,
            public_url,
            treasury,
            hot_eth_low,
            hot_eth_target,
            hot_eth_high,
            min_cold_bps,
        } => {
            let signers = (!no_signers).then_some((signer_base_port, test_primes));
            let treasury = treasury.then_some(chain::DevTreasury {
                low: hot_eth_low,
                target: hot_eth_target,
                high: hot_eth_high,
                min_cold_bps,
            });
            let chain = (!no_chain && !no_signers).then_some((eth_rpc, confirmations, treasury));
            let risk = risk::RiskOptions {
                lists: risk_lists,
                rules: risk_rules,
                webhook: risk_webhook.zip(risk_webhook_secret),
                mail: alert_smtp.map(|relay| {
                    let smtp =
                        mail::Smtp { relay, from: alert_email_from, starttls_ca: alert_smtp_ca };
                    (smtp, alert_email_to)
                }),
                nats,
                geo: risk_geo,
                personal_data: None,
            };
            let accounts = config::AccountsConfig {
                public_url,
                withdrawal_lock_secs: Some(withdrawal_lock_secs),
                whitelist_delay_secs: Some(whitelist_delay_secs),
            }
            .rules(listen.port())?;
            let governance = match governance {
                Some(dir) => DevGovernance::Pinned(dir),
                None => DevGovernance::Own { delay_secs: governance_delay_secs },
            };
            dev(&data_dir, listen, signers, chain, &governance, risk, accounts).await
        }
        Command::Governance { command } => governance::run(command).await,
        Command::Withdrawal { command } => governance::withdrawal(command).await,
        Command::Cold { command } => cold::run(command).await,
        Command::Risk { command } => risk::run(command).await,
        Command::Reconcile { data_dir } => {
            let data_dir = absolute(&data_dir)?;
            let store =
                SqlStore::connect(&Config::sqlite_url(&data_dir), strongroom_store::sql_options(2))
                    .await?;
            chain::reconcile_command(&data_dir, &store).await
        }
        Command::Certificate { dir, name } => {
            let pin = strongroom_signer::tls::self_signed(&dir, &name, SystemEnv::new().now())?;
            println!("{pin}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Signer { config, exit_with_stdin } => run_signer(&config, exit_with_stdin).await,
        Command::Mpc { command } => signers::mpc(command).await,
        Command::Serve { config } => serve(Config::load(&config)?).await,
        Command::Migrate(db) => {
            db.open().await?;
            println!("migrations applied");
            Ok(ExitCode::SUCCESS)
        }
        Command::Audit { command: AuditCommand::Verify(db) } => {
            audit_verify(&db.open().await?).await
        }
        Command::Audit { command: AuditCommand::VerifyNode { file } } => {
            match strongroom_signer::nodelog::verify(&file) {
                Ok((count, head)) => {
                    println!("node audit log intact: {count} records, head {}", head.to_hex());
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) => {
                    println!("node audit log BROKEN: {e:#}");
                    Ok(ExitCode::from(1))
                }
            }
        }
        Command::Token { command } => token(command).await,
        Command::Keys { command: KeysCommand::Rotate(db) } => rotate_keys(db).await,
        Command::Staff {
            command: StaffCommand::Add { email, role, member, password_file, db },
        } => {
            let env = SystemEnv::new();
            let text = zeroize::Zeroizing::new(
                std::fs::read_to_string(&password_file)
                    .with_context(|| format!("reading {}", password_file.display()))?,
            );
            let password =
                strongroom_crypto::SecretString::new(text.trim_end_matches('\n').to_owned());
            let kek = personal_data_key(&absolute(&db.data_dir)?, None)?;
            let store = db.open().await?;
            let id = strongroom_server::accounts::create_staff(
                &store, &kek, &env, &email, &password, role, member,
            )
            .await
            .map_err(anyhow::Error::msg)?;
            println!("staff account {id} ({}) created for {email}", role.as_str());
            Ok(ExitCode::SUCCESS)
        }
        Command::Bench { command } => bench::run(command).await,
    }
}

pub(crate) fn absolute(p: &Path) -> anyhow::Result<PathBuf> {
    std::path::absolute(p).with_context(|| format!("resolving {}", p.display()))
}

/// Hide a password in a database URL before printing it.
fn redact_url(url: &str) -> String {
    match (url.find("://"), url.find('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            match creds.split_once(':') {
                Some((user, _)) => format!("{}{user}:****{}", &url[..s + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

struct Started {
    running: tls::Running,
    ca: Option<PathBuf>,
    state: AppState,
}

async fn start(
    config: &Config,
    store: Arc<SqlStore>,
    env: Arc<SystemEnv>,
) -> anyhow::Result<Started> {
    let (cert, key, ca) = match (&config.tls.cert, &config.tls.key) {
        (Some(c), Some(k)) => (c.clone(), k.clone(), None),
        _ => {
            let pki = DevPki::in_dir(&config.data_dir.join("tls"));
            let hosts = vec!["localhost".to_string()];
            if pki.ensure(&hosts, env.now())? {
                tracing::info!(ca = %pki.ca_cert.display(), "created development CA and server certificate");
            }
            (pki.server_cert, pki.server_key, Some(pki.ca_cert))
        }
    };
    let tls_config = tls::server_config(&cert, &key)?;
    let registry = AssetRegistry::from_specs(&config.assets).context("[[assets]]")?;
    let rules =
        WithdrawalRules { intent_ttl_ms: i64::from(config.withdrawals.intent_ttl_secs) * 1000 };
    let state = AppState::new(store, env, registry, rules);
    let (app, _) = strongroom_server::app(state.clone());
    let listener = tokio::net::TcpListener::bind(config.listen).await.with_context(|| {
        format!("cannot listen on {} (is another server running? pass --listen)", config.listen)
    })?;
    let running = tls::serve(listener, tls_config, app)?;
    Ok(Started { running, ca, state })
}

async fn wait_for_signal(running: tls::Running) {
    let stop = running.shutdown_handle();
    tokio::spawn(async move {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        {
            let mut term =
                match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                    Ok(s) => s,
                    Err(_) => {
                        let _ = ctrl_c.await;
                        let _ = stop.send(true);
                        return;
                    }
                };
            tokio::select! { _ = ctrl_c => {}, _ = term.recv() => {} }
        }
        #[cfg(not(unix))]
        let _ = ctrl_c.await;
        tracing::info!("shutting down");
        let _ = stop.send(true);
    });
    running.wait().await;
}

async fn run_signer(config: &Path, exit_with_stdin: bool) -> anyhow::Result<ExitCode> {
    let text =
        std::fs::read_to_string(config).with_context(|| format!("reading {}", config.display()))?;
    let cfg: strongroom_signer::Config = toml::from_str(&text)?;
    let node = strongroom_signer::Node::new(cfg, Arc::new(SystemEnv::new()))?;
    node.start().await?;
    if exit_with_stdin {
        tokio::task::spawn_blocking(|| {
            use std::io::Read;
            let mut buf = [0u8; 64];
            while matches!(std::io::stdin().read(&mut buf), Ok(n) if n > 0) {}
        })
        .await?;
    } else {
        strongroom_signer::node::shutdown_signal().await?;
    }
    node.drain(strongroom_signer::node::DRAIN).await;
    Ok(ExitCode::SUCCESS)
}

/// Whose governance a dev stack runs under.
enum DevGovernance {
    /// A genesis made with `strongroom governance init` (`--governance DIR`).
    Pinned(PathBuf),
    /// Its own dev genesis, with this time-lock.
    Own { delay_secs: u64 },
}

async fn dev(
    data_dir: &Path,
    listen: std::net::SocketAddr,
    signer_opts: Option<(u16, Option<PathBuf>)>,
    chain_opts: Option<(Option<String>, u64, Option<chain::DevTreasury>)>,
    governance: &DevGovernance,
    risk_opts: risk::RiskOptions,
    accounts: strongroom_server::accounts::AccountRules,
) -> anyhow::Result<ExitCode> {
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("creating {}", data_dir.display()))?;
    let data_dir = absolute(data_dir)?;
    let config = Config {
        listen,
        database_url: Config::sqlite_url(&data_dir),
        data_dir: data_dir.clone(),
        tls: Default::default(),
        max_db_connections: 8,
        assets: strongroom_units::chain::dev_specs(),
        withdrawals: Default::default(),
        accounts: Default::default(),
    };
    let env = Arc::new(SystemEnv::new());
    let store = SqlStore::connect(
        &config.database_url,
        strongroom_store::sql_options(config.max_db_connections),
    )
    .await?;
    store.migrate().await?;
    let store = Arc::new(store);

    // A fresh operator token each start, written beside the database for scripts.
    let token = generate_token(env.as_ref());
    let ctx = WriteCtx { actor: "cli:dev".into(), now: env.now(), request_id: None };
    store
        .create_token(
            &ctx,
            NewApiToken {
                id: token.id.clone(),
                name: "dev-operator".into(),
                role: Role::Operator,
                token_hash: token.hash.clone(),
                restrictions: None,
            },
        )
        .await?;
    let token_path = data_dir.join("operator.token");
    write_secret(&token_path, token.token.expose_secret())?;

    // Without `--governance`, a dev stack governs itself: a dev genesis whose members' keys
    // it keeps (DATA/governance/keys), with a starter policy, so the nodes decide from the
    // first start.
    let (starter, governance_dir) = match governance {
        DevGovernance::Own { delay_secs } => {
            (governance::make_dev_genesis(&data_dir, env.as_ref(), *delay_secs)?, None)
        }
        DevGovernance::Pinned(dir) => (Vec::new(), Some(dir.as_path())),
    };
    let self_governed = governance::dev_keys(&data_dir).is_dir();
    let governance = governance::dev_pin(&data_dir, governance_dir)?;
    if let Some((_, pin, genesis)) = &governance {
        store
            .write_governance(
                &ctx,
                strongroom_store::GovernanceWrite::Genesis {
                    pin: pin.clone(),
                    genesis: genesis.clone(),
                },
            )
            .await
            .context("installing the governance genesis")?;
        for entry in starter {
            let mut open = entry.clone();
            open.signoffs.clear();
            store
                .write_governance(&ctx, strongroom_store::GovernanceWrite::Propose(open.clone()))
                .await?;
            store
                .write_governance(
                    &ctx,
                    strongroom_store::GovernanceWrite::Commit { expected: open, entry },
                )
                .await
                .context("installing the dev starter policy")?;
        }
    }
    let governed = governance.is_some();
    // The personal-data key: STRONGROOM_PERSONAL_DATA_KEY (hex), or a key made on first start
    // in DATA/personal-data.key (mode 0600).
    let kek = personal_data_key(&data_dir, Some(env.as_ref()))?;
    let kek: Arc<dyn strongroom_crypto::seal::KeyEncryptionKey> = Arc::new(kek);
    let mut risk_opts = risk_opts;
    risk_opts.personal_data = Some(kek.clone());
    let started = start(&config, store.clone(), env).await?;
    if self_governed {
        // The dev genesis's keys are all on this machine, so a quorum-signed credit would
        // prove nothing: operators may credit customers by hand here. A genesis of your own
        // (`--governance`) turns that off.
        started.state.set_hand_credits(strongroom_server::HandCredits::Always);
    }
    started.state.set_personal_data_key(kek);
    started.state.set_accounts(
        strongroom_server::accounts::Accounts::new(accounts).map_err(anyhow::Error::msg)?,
    );
    // The risk engine: screens destinations at the API and assesses every withdrawal before
    // the engine may build it.
    let risk_worker = risk::start_worker(store.clone(), risk_opts, &started.state).await?;
    let signers = match signer_opts {
        Some((port, primes)) => {
            let pki = DevPki::in_dir(&config.data_dir.join("tls"));
            Some(
                signers::start_cluster(
                    &data_dir,
                    &pki.ca_cert,
                    &pki.ca_key,
                    port,
                    primes,
                    Some(2),
                    governance.map(|(file, pin, _)| (file, pin)),
                )
                .await?,
            )
        }
        None => None,
    };
    let chain = match (&signers, chain_opts) {
        (Some(_), Some((rpc, confirmations, treasury))) => {
            let orch = signers::ClusterFile::load(&data_dir)?.orchestrator()?;
            chain::start_dev_chain(
                &data_dir,
                store.clone(),
                orch,
                rpc,
                confirmations,
                &started.state,
                true,
                treasury,
            )
            .await?
        }
        _ => None,
    };
    let url = format!("https://{}", started.running.addr);
    let ca = started.ca.map(|p| p.display().to_string()).unwrap_or_default();
    println!("Strongroom dev server is running.");
    println!();
    println!("  URL:            {url}");
    println!("  CA certificate: {ca}");
    println!("  Operator token: {}", token.token.expose_secret());
    println!("  (also in {}; a new token is made at every start)", token_path.display());
    println!("  Database:       {}", config.database_url);
    println!("  OpenAPI:        {url}/v1/openapi.json");
    if let Some(s) = &signers {
        println!("  Signer nodes:   3 (2-of-3), logs in {}", data_dir.join("signers").display());
        for k in &s.keys {
            println!("  Key {:<10}  {:?} {}", k.key_id, k.scheme, k.public_key);
        }
    }
    if let Some(c) = &chain {
        println!("  Ethereum:       {} (chain {})", c.rpc_url, chain::DEV_CHAIN);
        println!("  Hot wallet:     hot-eth-1 {}", c.hot_wallet.as_str());
        if let Some(cold) = &c.cold_wallet {
            println!(
                "  Cold wallet:    cold-eth-1 {cold} (2-of-3 Safe; dev owner keys sealed in {})",
                data_dir.join("cold").display()
            );
        }
    }
    println!();
    println!("Try:");
    println!("  curl --cacert {ca} {url}/v1/health");
    println!(
        "  curl --cacert {ca} -H \"Authorization: Bearer $(cat {})\" {url}/v1/assets",
        token_path.display()
    );
    println!();
    if governed {
        println!(
            "  Governance:     signer nodes pin the genesis in {}",
            data_dir.join("governance").display()
        );
    }
    if self_governed {
        println!(
            "  (the dev genesis: admins ada, bob, cy (quorum 2), approvers ann, al, security officer sec; keys in {})",
            governance::dev_keys(&data_dir).display()
        );
    }
    if signers.is_some() {
        println!("  strongroom mpc prove --key hot-btc-1 --challenge $(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \\n')");
    }
    println!();
    println!("Stop with Ctrl-C. Data stays in {}.", data_dir.display());
    wait_for_signal(started.running).await;
    risk_worker.abort();
    if let Some(c) = chain {
        c.stop();
    }
    if let Some(s) = signers {
        s.stop().await;
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn write_secret(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut f = options.open(path).with_context(|| format!("writing {}", path.display()))?;
    f.write_all(text.as_bytes())?;
    f.write_all(b"\n")?;
    Ok(())
}

async fn serve(config: Config) -> anyhow::Result<ExitCode> {
    let env = Arc::new(SystemEnv::new());
    let store = SqlStore::connect(
        &config.database_url,
        strongroom_store::sql_options(config.max_db_connections),
    )
    .await
    .with_context(|| format!("connecting to {}", redact_url(&config.database_url)))?;
    store.migrate().await.context("migrating")?;
    let started = start(&config, Arc::new(store), env.clone()).await?;
    // Personal data and secrets at rest: STRONGROOM_PERSONAL_DATA_KEY, or DATA/personal-data.key
    // (made there, mode 0600, on first start). Accounts and contacts need it.
    let kek = personal_data_key(&config.data_dir, Some(env.as_ref()))?;
    started.state.set_personal_data_key(Arc::new(kek));
    started.state.set_accounts(
        strongroom_server::accounts::Accounts::new(config.accounts.rules(config.listen.port())?)
            .map_err(anyhow::Error::msg)?,
    );
    tracing::info!(addr = %started.running.addr, database = %redact_url(&config.database_url), "serving HTTPS (TLS 1.3 only)");
    wait_for_signal(started.running).await;
    Ok(ExitCode::SUCCESS)
}

async fn audit_verify(store: &SqlStore) -> anyhow::Result<ExitCode> {
    let report = strongroom_store::verify_audit(store).await?;
    if let Some(b) = &report.chain_break {
        println!("AUDIT LOG BROKEN: {b}");
        println!(
            "{} records before it verified; last good head {}",
            report.records,
            report.head.to_hex()
        );
        return Ok(ExitCode::from(1));
    }
    if report.mismatch_count > 0 {
        println!(
            "AUDIT CHAIN INTACT ({} records) BUT {} ROWS DIFFER FROM THEIR AUDITED STATE:",
            report.records, report.mismatch_count
        );
        for m in &report.mismatches {
            let what = match &m.kind {
                MismatchKind::Edited => "changed outside Strongroom".to_owned(),
                MismatchKind::NotAudited => {
                    "exists but was never audited (inserted by hand?)".to_owned()
                }
                MismatchKind::Missing => "audited but missing (deleted by hand?)".to_owned(),
                MismatchKind::Rewritten { seq } => format!(
                    "audit record {seq} re-created it over a state it never left (deleted by \
                     hand, then its key reused?)"
                ),
            };
            println!("  {}: {what}", m.entity);
        }
        return Ok(ExitCode::from(1));
    }
    println!(
        "audit log intact: {} records, head {}; every row matches its audited state",
        report.records,
        report.head.to_hex()
    );
    Ok(ExitCode::SUCCESS)
}

/// The key that seals personal data and secrets at rest: STRONGROOM_PERSONAL_DATA_KEY (64 hex
/// digits), else DATA/personal-data.key; made there (mode 0600) when `make` gives randomness.
fn personal_data_key(
    data_dir: &Path,
    make: Option<&dyn strongroom_core::Env>,
) -> anyhow::Result<strongroom_crypto::seal::SoftwareKek> {
    let key_file = data_dir.join("personal-data.key");
    Ok(match (std::env::var("STRONGROOM_PERSONAL_DATA_KEY"), make) {
        (Ok(_), _) => {
            strongroom_crypto::seal::SoftwareKek::from_env_var("STRONGROOM_PERSONAL_DATA_KEY")?
        }
        (Err(_), _) if key_file.exists() => {
            strongroom_crypto::seal::SoftwareKek::from_file(&key_file)?
        }
        (Err(_), Some(env)) => {
            let k = strongroom_crypto::seal::SoftwareKek::generate(env);
            write_secret(&key_file, &k.expose_hex())?;
            k
        }
        (Err(_), None) => anyhow::bail!(
            "no personal-data key: set STRONGROOM_PERSONAL_DATA_KEY or run `strongroom dev` in {}",
            data_dir.display()
        ),
    })
}

async fn rotate_keys(db: DbArgs) -> anyhow::Result<ExitCode> {
    use strongroom_crypto::seal::{KeyEncryptionKey, SoftwareKek};
    let env = SystemEnv::new();
    let data_dir = absolute(&db.data_dir)?;
    let old = personal_data_key(&data_dir, None)?;
    let next_file = data_dir.join("personal-data.key.next");
    let new = if next_file.exists() {
        SoftwareKek::from_file(&next_file)?
    } else {
        let k = SoftwareKek::generate(&env);
        write_secret(&next_file, &k.expose_hex())?;
        k
    };
    if old.id() == new.id() {
        anyhow::bail!("{} holds the current key already", next_file.display());
    }
    let store = db.open().await?;
    let r = strongroom_server::rotate::rotate(&store, &old, &new, &env)
        .await
        .map_err(anyhow::Error::msg)
        .context("re-sealing (nothing is lost: run `keys rotate` again to finish)")?;
    println!(
        "re-sealed under {}: {} contacts, {} accounts, {} devices, {} API signing keys ({} already were)",
        new.id(),
        r.contacts,
        r.accounts,
        r.devices,
        r.tokens,
        r.unchanged
    );
    if std::env::var_os("STRONGROOM_PERSONAL_DATA_KEY").is_some() {
        println!(
            "set STRONGROOM_PERSONAL_DATA_KEY to the key in {}, then delete that file",
            next_file.display()
        );
    } else {
        std::fs::rename(&next_file, data_dir.join("personal-data.key"))?;
        println!(
            "{} now holds the new key; the old one is gone",
            data_dir.join("personal-data.key").display()
        );
    }
    Ok(ExitCode::SUCCESS)
}

async fn token(command: TokenCommand) -> anyhow::Result<ExitCode> {
    let env = SystemEnv::new();
    let ctx = WriteCtx { actor: "cli".into(), now: env.now(), request_id: None };
    match command {
        TokenCommand::Create { name, role, scope, allow_ip, sign, db } => {
            for rule in &allow_ip {
                let addr = rule.split_once('/').map_or(rule.as_str(), |(a, _)| a);
                if addr.parse::<std::net::IpAddr>().is_err() {
                    anyhow::bail!("--allow-ip {rule:?} is not an IP address or CIDR range");
                }
            }
            let store = db.open().await?;
            let t = generate_token(&env);
            let mut signing_key = None;
            let sealed = if sign {
                let kek = personal_data_key(&db.data_dir, None)?;
                let mut key = zeroize::Zeroizing::new([0u8; 32]);
                env.fill_random(key.as_mut());
                let sealed =
                    strongroom_server::clients::seal_signing_key(&kek, &t.id, key.as_ref(), &env)
                        .map_err(anyhow::Error::msg)?;
                signing_key = Some(zeroize::Zeroizing::new(hex::encode(key.as_slice())));
                Some(sealed)
            } else {
                None
            };
            let restrictions = (!scope.is_empty() || !allow_ip.is_empty() || sign).then(|| {
                strongroom_store::TokenRestrictions {
                    scopes: (!scope.is_empty()).then_some(scope),
                    allowed_ips: (!allow_ip.is_empty()).then_some(allow_ip),
                    signing_key: sealed,
                }
            });
            store
                .create_token(
                    &ctx,
                    NewApiToken {
                        id: t.id.clone(),
                        name,
                        role,
                        token_hash: t.hash.clone(),
                        restrictions,
                    },
                )
                .await?;
            println!("{}", t.token.expose_secret());
            if let Some(k) = &signing_key {
                println!("{}", k.as_str());
            }
            eprintln!(
                "token {} ({}) created; it is shown only once{}",
                t.id,
                role.as_str(),
                if sign { " (second line: its request-signing key, also shown once)" } else { "" }
            );
        }
        TokenCommand::Revoke { id, db } => {
            let store = db.open().await?;
            store.revoke_token(&ctx, &id).await?;
            println!("token {id} revoked");
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_redacted_from_urls() {
        assert_eq!(redact_url("postgres://u:secret@h/db"), "postgres://u:****@h/db");
        assert_eq!(redact_url("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(redact_url("sqlite:///x.db"), "sqlite:///x.db");
    }

    #[test]
    fn example_config_parses() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/strongroom.example.toml");
        let c = Config::load(Path::new(path)).unwrap();
        assert!(c.database_url.starts_with("postgres://"));
        AssetRegistry::from_specs(&c.assets).unwrap();
        let rules = c.accounts.rules(c.listen.port()).unwrap();
        assert_eq!(
            (rules.rp_id.as_str(), rules.withdrawal_lock_ms),
            ("custody.example.com", 86_400_000)
        );
        let plain = config::AccountsConfig {
            public_url: Some("http://x.example".into()),
            ..Default::default()
        };
        assert!(plain.rules(8443).is_err(), "WebAuthn needs an https origin");
    }
}
