//! `strongroom`: the command-line entry point. A thin main: it parses arguments, reads
//! configuration and wires the library crates together.
#![forbid(unsafe_code)]
// A command-line program talks to its user on stdout and stderr.
#![allow(clippy::print_stdout, clippy::print_stderr)]

mod bench;
mod bench_mpc;
mod bench_profiles;
mod bench_watcher;
mod bitcoin;
mod chain;
mod client;
mod cold;
mod drill;
mod exit;
mod governance;
mod risk;
mod risk_models;
mod signers;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::{Args, CommandFactory, Parser, Subcommand};
use exit::{Exit, Output, Usage};
use strongroom_core::Env;
use strongroom_crypto::generate_token;
use strongroom_runtime::settings::{AccountsSettings, AlertSettings, RiskSettings, SmtpSettings};
use strongroom_runtime::{Runtime, Settings};
use strongroom_server::pki::DevPki;
use strongroom_store::{verify::MismatchKind, NewApiToken, Role, SqlStore, WriteCtx};
use strongroom_units::AssetRegistry;

use strongroom_core::SystemEnv;
use strongroom_store::prelude::*;

/// Log format on stderr.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    /// One JSON object a line, for a log collector.
    #[default]
    Json,
    /// Short lines for people (coloured on a terminal only).
    Pretty,
}

/// Default data folder of `strongroom dev`, relative to the working directory.
pub(crate) const DEV_DATA_DIR: &str = ".strongroom/dev";

#[derive(Debug, Parser)]
#[command(
    name = "strongroom",
    version,
    about = "Self-hosted custody security platform",
    long_about = "Self-hosted custody security platform: the server (`dev`, `serve`), its \
                  database and keys, governance, withdrawals, the signer nodes and the online \
                  half of cold storage.\n\n\
                  Exit codes: 0 done; 1 the command ran and found a problem (tampering, a \
                  difference, a refusal, a failed drill check, a \"no\" at a prompt); 2 it could \
                  not run (configuration, server, files, a prompt with no terminal); 64 a wrong \
                  command line."
)]
struct Cli {
    /// Log format on stderr (default: `pretty` for `dev`, `json` for everything else).
    #[arg(long, global = true, value_enum)]
    log_format: Option<LogFormat>,
    /// How to print results: `text` for people, or `json`: one JSON document on stdout and
    /// nothing else there (what is shown before a confirmation then goes to stderr). For
    /// commands that print data; `dev`, `serve`, `signer --config` (a node), `cold`, `risk`,
    /// `bench` and `completions` refuse it (exit 64).
    #[arg(long, global = true, value_enum, default_value_t = Output::Text)]
    output: Output,
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
        /// The folder for the database, keys, certificates and logs; kept across starts.
        #[arg(long, default_value = DEV_DATA_DIR)]
        data_dir: PathBuf,
        /// Where the HTTPS API listens (address:port).
        #[arg(long, default_value = "127.0.0.1:8443")]
        listen: std::net::SocketAddr,
        /// First of the three signer nodes' ports (loopback).
        #[arg(long, default_value_t = 7101)]
        signer_base_port: u16,
        /// Do not start the signer nodes.
        #[arg(long)]
        no_signers: bool,
        /// Refresh the FROST keys' shares this often, in seconds (`[signers]
        /// refresh_every_secs` in a `serve` configuration; none by default).
        #[arg(long)]
        refresh_every_secs: Option<u64>,
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
        /// An Esplora server for Bitcoin regtest. Default: the local regtest backend, whose
        /// chain is kept in DATA_DIR/bitcoin (blocks mined every second while transactions
        /// wait; `POST URL/regtest/fund`, `/regtest/mine` and `/regtest/reorg` drive it).
        #[arg(long)]
        btc_esplora: Option<String>,
        /// Run without Bitcoin (Ethereum only).
        #[arg(long)]
        no_bitcoin: bool,
        /// Run without Ethereum (Bitcoin only: no anvil needed).
        #[arg(long)]
        no_ethereum: bool,
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
        /// The exchange's event webhook: withdrawal, deposit, review and governance events as
        /// Standard Webhooks (every event from the stack's start, each at least once).
        #[arg(long)]
        events_webhook: Option<String>,
        /// The file holding the event webhook's secret (`whsec_` and base64); without it, dev
        /// writes a new one to DATA_DIR/events-webhook.secret.
        #[arg(long, requires = "events_webhook")]
        events_webhook_secret: Option<PathBuf>,
        /// Attempts before an event delivery becomes a dead letter (GET /v1/events/dead-letters).
        #[arg(long, requires = "events_webhook")]
        events_max_attempts: Option<u32>,
        /// An SMTP relay (`host:port`) for the security team's alert e-mail.
        #[arg(long, requires = "alert_email_to")]
        alert_smtp: Option<String>,
        /// Who gets alert e-mail (repeatable).
        #[arg(long)]
        alert_email_to: Vec<String>,
        /// The sender address of alert e-mail.
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
        /// Below this much BTC in the hot wallet, a refill from cold is requested.
        #[arg(long, default_value = "0.2")]
        hot_btc_low: String,
        /// What the hot wallet keeps after a sweep (BTC).
        #[arg(long, default_value = "0.5")]
        hot_btc_target: String,
        /// Above this much BTC in the hot wallet, the excess is swept to cold (a 2-of-3 P2WSH
        /// multisig of the dev owner keys).
        #[arg(long, default_value = "2")]
        hot_btc_high: String,
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
        /// A DNS name or IP address the certificate is also valid for (repeatable): a
        /// node's address on its own host.
        #[arg(long)]
        host: Vec<String>,
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
    /// Compare ledger custody with on-chain balances (hot and cold wallets and deposit
    /// addresses of the chain the runtime last ran); exits 1 on any difference.
    Reconcile {
        /// A `serve` configuration (its database, data folder and assets).
        #[arg(long, conflicts_with = "data_dir")]
        config: Option<PathBuf>,
        /// A dev stack's data folder.
        #[arg(long, default_value = DEV_DATA_DIR)]
        data_dir: PathBuf,
    },
    /// Run one MPC signer node (what `strongroom-signer` runs), or set one up
    /// (`strongroom signer init`).
    #[command(args_conflicts_with_subcommands = true)]
    Signer {
        #[command(subcommand)]
        command: Option<signers::SignerCommand>,
        /// The node's configuration (`strongroom signer init` writes it).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Exit when standard input closes (used by `strongroom dev` for its children).
        #[arg(long, hide = true)]
        exit_with_stdin: bool,
    },
    /// Talk to the signer nodes as the orchestrator.
    Mpc {
        #[command(subcommand)]
        command: signers::MpcCommand,
    },
    /// Rehearse an incident on a dev or staging stack and time it (docs/incident-response.md).
    Drill {
        #[command(subcommand)]
        command: drill::DrillCommand,
    },
    /// Run the API and the engine runtime from a configuration file (PostgreSQL via
    /// `database_url`); `STRONGROOM_<KEY>` environment variables override it.
    Serve {
        /// The configuration file (TOML), e.g. docs/strongroom.example.toml.
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
    /// Print a shell completion script, e.g. `strongroom completions bash >
    /// /etc/bash_completion.d/strongroom`, or `source <(strongroom completions bash)`.
    Completions {
        /// The shell: bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
}

#[derive(Debug, Subcommand)]
enum AuditCommand {
    /// Walk the hash chain and compare every row with its last audited state. Exit 0 when
    /// intact, 1 when tampering is found.
    Verify(DbArgs),
    /// Check a signer node's own audit log (`DATA/audit.jsonl` in the node's data folder).
    /// Exit 0 when intact, 1 when broken.
    VerifyNode {
        /// The node's audit log, e.g. .strongroom/dev/signers/node-1/audit.jsonl.
        file: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
enum StaffCommand {
    /// Add a staff account; it signs in at `/v1/auth/login` and should turn on TOTP or a
    /// passkey at once (approving needs a 2FA sign-in).
    Add {
        /// The account's e-mail address (its sign-in name).
        #[arg(long)]
        email: String,
        /// operator, approver, analyst, admin or auditor.
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
    /// Make the personal-data key (DATA/personal-data.key, mode 0600, or the configuration's
    /// `[personal_data] key_file`) once; `serve` refuses to start without one. Keep a copy
    /// offline: without it, sealed personal data cannot be read.
    Init(DbArgs),
    /// Make a new personal-data key and re-seal everything under it (contacts, e-mail
    /// addresses and their index, TOTP seeds, devices, API signing keys). Run it with the
    /// server stopped; if interrupted, run it again: it finishes with the same new key
    /// (DATA/personal-data.key.next) and then replaces DATA/personal-data.key.
    Rotate(DbArgs),
    /// Create a key-encryption key inside a hardware security module (PKCS#11): an AES-256
    /// key and an HMAC key, generated in the token, sensitive and never extractable. Point a
    /// signer node's `kek_pkcs11` or the server's `[personal_data.pkcs11]` at it. The PIN is
    /// read from the environment variable named.
    HsmInit {
        /// The vendor's PKCS#11 module, e.g. /usr/lib/softhsm/libsofthsm2.so.
        #[arg(long)]
        module: PathBuf,
        /// The token's label.
        #[arg(long)]
        token: String,
        /// The key's label in the token.
        #[arg(long)]
        key: String,
        /// The environment variable that holds the user PIN.
        #[arg(long, default_value = "STRONGROOM_HSM_PIN")]
        pin_env: String,
    },
}

#[derive(Debug, Subcommand)]
enum TokenCommand {
    /// Create a token and print it once (`srt_…`; stdout holds only the token, and with
    /// `--sign` its signing key on a second line).
    Create {
        /// A name for people (e.g. backend), shown in the audit log.
        #[arg(long)]
        name: String,
        /// operator, service, auditor, approver, analyst or admin.
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
        /// The token's id: the part of `srt_ID_SECRET` between the underscores.
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
    /// A `serve` configuration: its `database_url` and key file.
    #[arg(long, conflicts_with = "database_url")]
    config: Option<PathBuf>,
    /// The database, e.g. postgres://strongroom@db/strongroom or sqlite:///var/lib/x.db.
    #[arg(long, env = "STRONGROOM_DATABASE_URL")]
    database_url: Option<String>,
    /// A dev stack's data folder (its `strongroom.db` and `personal-data.key`).
    #[arg(long, default_value = DEV_DATA_DIR)]
    data_dir: PathBuf,
}

impl DbArgs {
    pub(crate) fn url(&self) -> anyhow::Result<String> {
        if let Some(url) = &self.database_url {
            return Ok(url.clone());
        }
        if let Some(path) = &self.config {
            return Ok(Settings::load(path, std::env::vars())?.database_url);
        }
        let db = self.data_dir.join("strongroom.db");
        if !db.exists() {
            anyhow::bail!(
                "no database at {}: pass --database-url or --config, or run `strongroom dev` first",
                db.display()
            );
        }
        Ok(Settings::sqlite_url(&absolute(&self.data_dir)?))
    }

    /// The personal-data key's file: the configuration's, else the data folder's.
    pub(crate) fn key_file(&self) -> anyhow::Result<PathBuf> {
        if let Some(path) = &self.config {
            return Ok(Settings::load(path, std::env::vars())?.personal_data_key_file());
        }
        Ok(absolute(&self.data_dir)?.join("personal-data.key"))
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
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        // Help and version are not errors; a wrong command line is a usage error (64).
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { Exit::Usage } else { Exit::Ok }.into();
        }
    };
    let default_format = match cli.command {
        Command::Dev { .. } => LogFormat::Pretty,
        _ => LogFormat::Json,
    };
    init_logging(cli.log_format.unwrap_or(default_format));
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return Exit::Failed.into();
        }
    };
    match runtime.block_on(run(cli.command, cli.output)) {
        Ok(exit) => exit.into(),
        Err(e) => {
            eprintln!("error: {e:#}");
            Exit::of(&e).into()
        }
    }
}

fn init_logging(format: LogFormat) {
    use std::io::IsTerminal;
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("STRONGROOM_LOG")
        .unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,hyper=warn,rustls=warn"));
    // Colour only for a person at a terminal: a log file or a journal gets plain text
    // (NO_COLOR, https://no-color.org, turns it off there too).
    let ansi = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    match format {
        LogFormat::Json => builder.json().flatten_event(true).with_current_span(true).init(),
        LogFormat::Pretty => builder.compact().init(),
    }
}

/// Whether `command` can print its result as JSON (`--output json`). The others run a
/// server or a node, or print for people: risk and bench reports, completion scripts.
fn prints_json(command: &Command) -> bool {
    !matches!(
        command,
        Command::Dev { .. }
            | Command::Serve { .. }
            | Command::Signer { command: None, .. }
            | Command::Risk { .. }
            | Command::Bench { .. }
            | Command::Completions { .. }
    )
}

async fn run(command: Command, output: Output) -> anyhow::Result<Exit> {
    if output.is_json() && !prints_json(&command) {
        return Err(Usage(
            "--output json: this command prints no JSON (dev, serve, a signer node, risk, bench \
             and completions print for people)"
                .into(),
        )
        .into());
    }
    let json = output.is_json();
    match command {
        Command::Dev {
            data_dir,
            listen,
            signer_base_port,
            no_signers,
            refresh_every_secs,
            test_primes,
            eth_rpc,
            no_chain,
            confirmations,
            governance,
            risk_lists,
            risk_rules,
            risk_webhook,
            risk_webhook_secret,
            events_webhook,
            events_webhook_secret,
            events_max_attempts,
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
            hot_btc_low,
            hot_btc_target,
            hot_btc_high,
            btc_esplora,
            no_bitcoin,
            no_ethereum,
            min_cold_bps,
        } => {
            let signers =
                (!no_signers).then_some((signer_base_port, test_primes, refresh_every_secs));
            let btc_treasury = treasury.then_some(chain::DevTreasury {
                low: hot_btc_low,
                target: hot_btc_target,
                high: hot_btc_high,
                min_cold_bps,
            });
            let treasury = treasury.then_some(chain::DevTreasury {
                low: hot_eth_low,
                target: hot_eth_target,
                high: hot_eth_high,
                min_cold_bps,
            });
            let chain = (!no_chain && !no_signers && !no_ethereum).then_some((
                eth_rpc,
                confirmations,
                treasury,
            ));
            let btc =
                (!no_chain && !no_signers && !no_bitcoin).then_some(bitcoin::DevBitcoinOptions {
                    esplora: btc_esplora,
                    confirmations,
                    treasury: btc_treasury,
                });
            let mut settings = Settings::dev(&absolute(&data_dir)?, listen);
            settings.risk = RiskSettings {
                lists: risk_lists,
                rules: risk_rules,
                geo: risk_geo,
                nats,
                drift_window: None,
                retrain_labels: None,
                auto_promote: false,
            };
            settings.alerts = AlertSettings {
                webhook_url: risk_webhook,
                webhook_secret_file: risk_webhook_secret,
                webhook_ca_file: None,
                smtp: alert_smtp.map(|relay| SmtpSettings {
                    ca_file: alert_smtp_ca,
                    ..SmtpSettings::new(relay, alert_email_from)
                }),
                security_team: alert_email_to,
            };
            if let Some(url) = events_webhook {
                let secret = match events_webhook_secret {
                    Some(file) => file,
                    None => {
                        let file = settings.data_dir.join("events-webhook.secret");
                        if !file.exists() {
                            std::fs::create_dir_all(&settings.data_dir)?;
                            let secret = strongroom_runtime::events::new_secret(&SystemEnv::new());
                            write_secret(&file, &secret)?;
                        }
                        file
                    }
                };
                settings.events = strongroom_runtime::settings::EventSettings {
                    webhook_url: Some(url),
                    webhook_secret_file: Some(secret),
                    max_attempts: events_max_attempts,
                    from_start: true,
                    ..Default::default()
                };
            }
            settings.accounts = AccountsSettings {
                public_url,
                withdrawal_lock_secs: Some(withdrawal_lock_secs),
                whitelist_delay_secs: Some(whitelist_delay_secs),
            };
            let governance = match governance {
                Some(dir) => DevGovernance::Pinned(dir),
                None => DevGovernance::Own { delay_secs: governance_delay_secs },
            };
            dev(settings, signers, (chain, btc), &governance).await
        }
        Command::Governance { command } => governance::run(command, output).await,
        Command::Withdrawal { command } => governance::withdrawal(command, output).await,
        Command::Cold { command } => cold::run(command, output).await,
        Command::Risk { command } => risk::run(command).await,
        Command::Reconcile { config, data_dir } => {
            let (url, data_dir, registry) = match config {
                Some(path) => {
                    let s = Settings::load(&path, std::env::vars())?;
                    let registry = AssetRegistry::from_specs(&s.assets)?;
                    (s.database_url, s.data_dir, registry)
                }
                None => {
                    let data_dir = absolute(&data_dir)?;
                    (Settings::sqlite_url(&data_dir), data_dir, AssetRegistry::dev())
                }
            };
            let store = SqlStore::connect(&url, strongroom_store::sql_options(2))
                .await
                .with_context(|| format!("connecting to {}", redact_url(&url)))?;
            chain::reconcile_command(&data_dir, &store, &registry, output).await
        }
        Command::Certificate { dir, name, host } => {
            let pin = strongroom_signer::tls::self_signed_for(
                &dir,
                &name,
                &host,
                SystemEnv::new().now(),
            )?;
            if json {
                let key = |suffix: &str| dir.join(format!("{name}{suffix}"));
                Output::print_json(&serde_json::json!({
                    "pin": pin, "cert": key(".pem"), "key": key("-key.pem"),
                }))?;
            } else {
                println!("{pin}");
            }
            Ok(Exit::Ok)
        }
        Command::Signer { command: Some(c), .. } => signers::signer(c, output),
        Command::Signer { command: None, config: Some(config), exit_with_stdin } => {
            run_signer(&config, exit_with_stdin).await
        }
        Command::Signer { command: None, config: None, .. } => Err(Usage(
            "strongroom signer --config FILE runs a node; `strongroom signer init` sets one up"
                .into(),
        )
        .into()),
        Command::Mpc { command } => signers::mpc(command, output).await,
        Command::Drill { command } => drill::run(command, output).await,
        Command::Serve { config } => serve(Settings::load(&config, std::env::vars())?).await,
        Command::Migrate(db) => {
            db.open().await?;
            if json {
                Output::print_json(&serde_json::json!({ "migrated": true }))?;
            } else {
                println!("migrations applied");
            }
            Ok(Exit::Ok)
        }
        Command::Audit { command: AuditCommand::Verify(db) } => {
            audit_verify(&db.open().await?, output).await
        }
        Command::Audit { command: AuditCommand::VerifyNode { file } } => {
            let verified = strongroom_signer::nodelog::verify(&file);
            if json {
                let doc = match &verified {
                    Ok((count, head)) => serde_json::json!({
                        "intact": true, "records": count, "head": head.to_hex(),
                    }),
                    Err(e) => serde_json::json!({ "intact": false, "error": format!("{e:#}") }),
                };
                Output::print_json(&doc)?;
            } else {
                match &verified {
                    Ok((count, head)) => {
                        println!("node audit log intact: {count} records, head {}", head.to_hex())
                    }
                    Err(e) => println!("node audit log BROKEN: {e:#}"),
                }
            }
            Ok(if verified.is_ok() { Exit::Ok } else { Exit::Problem })
        }
        Command::Token { command } => token(command, output).await,
        Command::Keys { command: KeysCommand::Rotate(db) } => rotate_keys(db, output).await,
        Command::Keys { command: KeysCommand::HsmInit { module, token, key, pin_env } } => {
            use strongroom_crypto::seal::KeyEncryptionKey;
            let cfg = strongroom_hsm::Pkcs11Config { module, token, key, pin_env };
            let pin = strongroom_hsm::Pkcs11Kek::pin(&cfg)?;
            let kek = strongroom_hsm::Pkcs11Kek::create(&cfg, &pin)?;
            if json {
                Output::print_json(&serde_json::json!({
                    "key_id": kek.id(), "token": cfg.token, "key": cfg.key,
                }))?;
            } else {
                println!("{}", kek.id());
            }
            eprintln!(
                "created key {:?} in token {:?} (not extractable); configure kek_pkcs11 / [personal_data.pkcs11] with it",
                cfg.key, cfg.token
            );
            Ok(Exit::Ok)
        }
        Command::Keys { command: KeysCommand::Init(db) } => {
            let file = db.key_file()?;
            if file.exists() {
                anyhow::bail!(
                    "{} exists already: a second key would orphan what the first sealed",
                    file.display()
                );
            }
            if let Some(dir) = file.parent() {
                std::fs::create_dir_all(dir)?;
            }
            let env = SystemEnv::new();
            let k = strongroom_crypto::seal::SoftwareKek::generate(&env);
            write_secret(&file, &k.expose_hex())?;
            if json {
                Output::print_json(&serde_json::json!({ "key_file": file }))?;
            } else {
                println!(
                    "personal-data key written to {} (mode 0600); keep a copy offline",
                    file.display()
                );
            }
            Ok(Exit::Ok)
        }
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
            let kek = personal_data_key(&db.key_file()?, None)?;
            let store = db.open().await?;
            let id = strongroom_server::accounts::create_staff(
                &store, &kek, &env, &email, &password, role, member,
            )
            .await
            .map_err(anyhow::Error::msg)?;
            if json {
                Output::print_json(&serde_json::json!({
                    "id": id.to_string(), "email": email, "role": role.as_str(),
                }))?;
            } else {
                println!("staff account {id} ({}) created for {email}", role.as_str());
            }
            Ok(Exit::Ok)
        }
        Command::Bench { command } => bench::run(command).await,
        Command::Completions { shell } => {
            use std::io::Write;
            // Into a buffer first: clap_complete panics on a write error (a closed pipe).
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "strongroom", &mut script);
            std::io::stdout().write_all(&script)?;
            Ok(Exit::Ok)
        }
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

async fn run_signer(config: &Path, exit_with_stdin: bool) -> anyhow::Result<Exit> {
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
    Ok(Exit::Ok)
}

/// Whose governance a dev stack runs under.
enum DevGovernance {
    /// A genesis made with `strongroom governance init` (`--governance DIR`).
    Pinned(PathBuf),
    /// Its own dev genesis, with this time-lock.
    Own { delay_secs: u64 },
}

/// What `dev` was asked for Ethereum: a node's URL (or anvil), confirmations, a treasury.
type EthOptions = (Option<String>, u64, Option<chain::DevTreasury>);

async fn dev(
    mut settings: Settings,
    signer_opts: Option<(u16, Option<PathBuf>, Option<u64>)>,
    (chain_opts, btc_opts): (Option<EthOptions>, Option<bitcoin::DevBitcoinOptions>),
    governance: &DevGovernance,
) -> anyhow::Result<Exit> {
    let data_dir = settings.data_dir.clone();
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("creating {}", data_dir.display()))?;
    let env = Arc::new(SystemEnv::new());
    let store = SqlStore::connect(
        &settings.database_url,
        strongroom_store::sql_options(settings.max_db_connections),
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
    let kek = personal_data_key(&settings.personal_data_key_file(), Some(env.as_ref()))?;

    // What a developer's machine lacks: three local signer processes and a local chain.
    let refresh_every_secs = signer_opts.as_ref().and_then(|o| o.2);
    // The dev keys, Bitcoin's hot key only when Bitcoin runs.
    let keys: Vec<_> = signers::DEV_KEYS
        .iter()
        .copied()
        .filter(|(id, _)| btc_opts.is_some() || *id != bitcoin::DEV_HOT_WALLET)
        .collect();
    let signers = match signer_opts {
        Some((port, primes, _)) => {
            let pki = DevPki::in_dir(&data_dir.join("tls"));
            pki.ensure(&["localhost".to_string()], env.now())?;
            Some(
                signers::start_cluster(
                    &data_dir,
                    &pki.ca_cert,
                    &pki.ca_key,
                    port,
                    primes,
                    governance.map(|(file, pin, _)| (file, pin)),
                    &keys,
                )
                .await?,
            )
        }
        None => None,
    };
    let mut dev_chain = None;
    let mut dev_bitcoin = None;
    if let Some(s) = &signers {
        let mut sg = s.settings();
        sg.refresh_every_secs = refresh_every_secs;
        settings.signers = Some(sg);
        let orch = strongroom_runtime::signing::orchestrator(&s.settings())?;
        let signer =
            Arc::new(strongroom_runtime::signing::OrchestratorSigner::new(orch, env.clone()));
        if let Some((rpc, confirmations, treasury)) = chain_opts {
            dev_chain = chain::prepare_dev_chain(
                &data_dir,
                store.as_ref(),
                signer.clone(),
                rpc,
                confirmations,
                treasury,
            )
            .await?;
        }
        if let Some(opts) = btc_opts {
            dev_bitcoin = Some(
                bitcoin::prepare(&data_dir, signer, opts).await.context("the dev Bitcoin chain")?,
            );
        }
    }
    if let Some(c) = &dev_chain {
        settings.chains.push(c.settings.clone());
        settings.treasury.assets = c.marks.clone();
    }
    if let Some(b) = &dev_bitcoin {
        settings.chains.push(b.settings.clone());
        settings.treasury.assets.extend(b.marks.clone());
    }
    let options = strongroom_runtime::Options {
        personal_data_key: Some(Arc::new(kek)),
        // The dev genesis's keys are all on this machine, so a quorum-signed credit would
        // prove nothing: operators may credit customers by hand here. A genesis of your own
        // (`--governance`) turns that off.
        hand_credits: if self_governed {
            strongroom_server::HandCredits::Always
        } else {
            strongroom_server::HandCredits::Never
        },
        dev_pki: true,
        engine: engine_options()?,
    };
    // The same runtime `serve` runs.
    let runtime = Runtime::start(&settings, store.clone(), env.clone(), options).await?;

    let url = format!("https://{}", runtime.addr());
    let ca = runtime.ca.as_ref().map(|p| p.display().to_string()).unwrap_or_default();
    println!("Strongroom dev server is running.");
    println!();
    println!("  URL:            {url}");
    println!("  CA certificate: {ca}");
    println!("  Operator token: {}", token.token.expose_secret());
    println!("  (also in {}; a new token is made at every start)", token_path.display());
    println!("  Database:       {}", settings.database_url);
    println!("  OpenAPI:        {url}/v1/openapi.json");
    if let (Some(hook), Some(secret)) =
        (&settings.events.webhook_url, &settings.events.webhook_secret_file)
    {
        println!("  Event webhook:  {hook} (Standard Webhooks; secret in {})", secret.display());
    }
    if let Some(s) = &signers {
        println!("  Signer nodes:   3 (2-of-3), logs in {}", data_dir.join("signers").display());
        for k in &s.keys {
            println!("  Key {:<14}  {:?} {}", k.key_id, k.scheme, k.public_key);
        }
    }
    if let Some(c) = &dev_chain {
        println!("  Ethereum:       {} (chain {})", c.settings.rpc_url, chain::DEV_CHAIN);
        println!("  Hot wallet:     hot-eth-1 {}", c.hot.as_str());
        if let Some(cold) = &c.settings.cold_address {
            println!(
                "  Cold wallet:    cold-eth-1 {cold} (2-of-3 Safe; dev owner keys sealed in {})",
                data_dir.join("cold").display()
            );
        }
    }
    if let Some(b) = &dev_bitcoin {
        let local = if b.local.is_some() { " (local regtest backend)" } else { "" };
        println!(
            "  Bitcoin:        {} Esplora{local} (chain {})",
            b.settings.rpc_url, b.settings.chain
        );
        println!("  Hot wallet:     {} {}", bitcoin::DEV_HOT_WALLET, b.hot.as_str());
        if let Some(cold) = &b.settings.cold_address {
            println!("  Cold wallet:    cold-btc-1 {cold} (2-of-3 P2WSH of the same owner keys)");
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
    runtime.run_until(stop_signal()).await;
    if let Some(s) = signers {
        s.stop().await;
    }
    drop(dev_chain);
    drop(dev_bitcoin);
    Ok(Exit::Ok)
}

/// Ctrl-C or SIGTERM.
async fn stop_signal() {
    if let Err(e) = strongroom_signer::node::shutdown_signal().await {
        tracing::warn!(error = %e, "no signal handler; stopping");
    }
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

/// Crash tests only: `STRONGROOM_TEST_STOP_AFTER=signed|sent` makes the engine die like a
/// killed process right after that step of a withdrawal.
fn engine_options() -> anyhow::Result<strongroom_runtime::chains::EngineOptions> {
    let stop_at = match std::env::var("STRONGROOM_TEST_STOP_AFTER") {
        Ok(v) => Some(
            strongroom_engine::StopPoint::parse(&v)
                .context("STRONGROOM_TEST_STOP_AFTER: signed or sent")?,
        ),
        Err(_) => None,
    };
    Ok(strongroom_runtime::chains::EngineOptions { stop_at })
}

async fn serve(settings: Settings) -> anyhow::Result<Exit> {
    settings.check_production()?;
    let env = Arc::new(SystemEnv::new());
    // Personal data and secrets at rest: the key in a hardware security module
    // ([personal_data.pkcs11]), STRONGROOM_PERSONAL_DATA_KEY, or the key file that
    // `strongroom keys init` made. Never made here: a new key would orphan sealed data. Checked
    // before anything touches the database.
    let kek: Arc<dyn strongroom_crypto::seal::KeyEncryptionKey> =
        match &settings.personal_data.pkcs11 {
            Some(p11) => Arc::new(
                strongroom_hsm::Pkcs11Kek::open(p11)
                    .context("the personal-data key in the hardware security module")?,
            ),
            None => Arc::new(personal_data_key(&settings.personal_data_key_file(), None)?),
        };
    let store = SqlStore::connect(
        &settings.database_url,
        strongroom_store::sql_options(settings.max_db_connections),
    )
    .await
    .with_context(|| format!("connecting to {}", redact_url(&settings.database_url)))?;
    store.migrate().await.context("migrating")?;
    let options = strongroom_runtime::Options {
        personal_data_key: Some(kek),
        engine: engine_options()?,
        ..Default::default()
    };
    tracing::info!(database = %redact_url(&settings.database_url), chains = settings.chains.len(), "starting");
    let runtime = Runtime::start(&settings, Arc::new(store), env, options).await?;
    runtime.run_until(stop_signal()).await;
    Ok(Exit::Ok)
}

/// `audit verify`: exit 0 when the chain is intact and every row matches its audited state,
/// 1 (a problem found) otherwise.
async fn audit_verify(store: &SqlStore, output: Output) -> anyhow::Result<Exit> {
    let report = strongroom_store::verify_audit(store).await?;
    let what = |kind: &MismatchKind| match kind {
        MismatchKind::Edited => "changed outside Strongroom".to_owned(),
        MismatchKind::NotAudited => "exists but was never audited (inserted by hand?)".to_owned(),
        MismatchKind::Missing => "audited but missing (deleted by hand?)".to_owned(),
        MismatchKind::Rewritten { seq } => format!(
            "audit record {seq} re-created it over a state it never left (deleted by hand, \
             then its key reused?)"
        ),
    };
    let intact = report.chain_break.is_none() && report.mismatch_count == 0;
    if output.is_json() {
        let mismatches: Vec<serde_json::Value> = report
            .mismatches
            .iter()
            .map(|m| {
                let kind = match &m.kind {
                    MismatchKind::Edited => "edited",
                    MismatchKind::NotAudited => "not_audited",
                    MismatchKind::Missing => "missing",
                    MismatchKind::Rewritten { .. } => "rewritten",
                };
                serde_json::json!({
                    "entity": m.entity.to_string(), "kind": kind, "what": what(&m.kind),
                })
            })
            .collect();
        Output::print_json(&serde_json::json!({
            "intact": intact,
            "records": report.records,
            "head": report.head.to_hex(),
            "chain_break": report.chain_break.as_ref().map(ToString::to_string),
            "mismatch_count": report.mismatch_count,
            "mismatches": mismatches,
        }))?;
        return Ok(if intact { Exit::Ok } else { Exit::Problem });
    }
    if let Some(b) = &report.chain_break {
        println!("AUDIT LOG BROKEN: {b}");
        println!(
            "{} records before it verified; last good head {}",
            report.records,
            report.head.to_hex()
        );
        return Ok(Exit::Problem);
    }
    if report.mismatch_count > 0 {
        println!(
            "AUDIT CHAIN INTACT ({} records) BUT {} ROWS DIFFER FROM THEIR AUDITED STATE:",
            report.records, report.mismatch_count
        );
        for m in &report.mismatches {
            println!("  {}: {}", m.entity, what(&m.kind));
        }
        return Ok(Exit::Problem);
    }
    println!(
        "audit log intact: {} records, head {}; every row matches its audited state",
        report.records,
        report.head.to_hex()
    );
    Ok(Exit::Ok)
}

/// The key that seals personal data and secrets at rest: STRONGROOM_PERSONAL_DATA_KEY (64 hex
/// digits), else `key_file`; made there (mode 0600) when `make` gives randomness (dev only:
/// `serve` needs `strongroom keys init`).
fn personal_data_key(
    key_file: &Path,
    make: Option<&dyn strongroom_core::Env>,
) -> anyhow::Result<strongroom_crypto::seal::SoftwareKek> {
    Ok(match (std::env::var("STRONGROOM_PERSONAL_DATA_KEY"), make) {
        (Ok(_), _) => {
            strongroom_crypto::seal::SoftwareKek::from_env_var("STRONGROOM_PERSONAL_DATA_KEY")?
        }
        (Err(_), _) if key_file.exists() => {
            strongroom_crypto::seal::SoftwareKek::from_file(key_file)?
        }
        (Err(_), Some(env)) => {
            let k = strongroom_crypto::seal::SoftwareKek::generate(env);
            write_secret(key_file, &k.expose_hex())?;
            k
        }
        (Err(_), None) => anyhow::bail!(
            "no personal-data key at {}: run `strongroom keys init` once (or set STRONGROOM_PERSONAL_DATA_KEY)",
            key_file.display()
        ),
    })
}

async fn rotate_keys(db: DbArgs, output: Output) -> anyhow::Result<Exit> {
    use strongroom_crypto::seal::{KeyEncryptionKey, SoftwareKek};
    let env = SystemEnv::new();
    let data_dir = absolute(&db.data_dir)?;
    let key_file = db.key_file()?;
    let old = personal_data_key(&key_file, None)?;
    let next_file = key_file.with_extension("key.next");
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
    let json = output.is_json();
    if !json {
        println!(
            "re-sealed under {}: {} contacts, {} accounts, {} devices, {} API signing keys ({} already were)",
            new.id(),
            r.contacts,
            r.accounts,
            r.devices,
            r.tokens,
            r.unchanged
        );
    }
    let in_env = std::env::var_os("STRONGROOM_PERSONAL_DATA_KEY").is_some();
    let key_file = data_dir.join("personal-data.key");
    if in_env {
        let say = format!(
            "set STRONGROOM_PERSONAL_DATA_KEY to the key in {}, then delete that file",
            next_file.display()
        );
        if json {
            eprintln!("{say}");
        } else {
            println!("{say}");
        }
    } else {
        std::fs::rename(&next_file, &key_file)?;
        if !json {
            println!("{} now holds the new key; the old one is gone", key_file.display());
        }
    }
    if json {
        Output::print_json(&serde_json::json!({
            "key_id": new.id().to_string(),
            "contacts": r.contacts, "accounts": r.accounts, "devices": r.devices,
            "tokens": r.tokens, "unchanged": r.unchanged,
            "key_file": if in_env { &next_file } else { &key_file },
        }))?;
    }
    Ok(Exit::Ok)
}

async fn token(command: TokenCommand, output: Output) -> anyhow::Result<Exit> {
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
                let kek = personal_data_key(&db.key_file()?, None)?;
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
            if output.is_json() {
                Output::print_json(&serde_json::json!({
                    "id": t.id,
                    "token": t.token.expose_secret(),
                    "role": role.as_str(),
                    "signing_key": signing_key.as_ref().map(|k| k.as_str()),
                }))?;
            } else {
                println!("{}", t.token.expose_secret());
                if let Some(k) = &signing_key {
                    println!("{}", k.as_str());
                }
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
            if output.is_json() {
                Output::print_json(&serde_json::json!({ "id": id, "revoked": true }))?;
            } else {
                println!("token {id} revoked");
            }
        }
    }
    Ok(Exit::Ok)
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
        let c = Settings::load(Path::new(path), []).unwrap();
        assert!(c.database_url.starts_with("postgres://"));
        // Both kinds of chain, with a sweep minimum a TOML integer can say.
        let kinds: Vec<_> = c.chains.iter().map(|ch| (ch.kind, ch.min_sweep_native)).collect();
        assert_eq!(
            kinds,
            vec![
                (strongroom_runtime::settings::ChainKind::Ethereum, 1_000_000_000_000_000),
                (strongroom_runtime::settings::ChainKind::Bitcoin, 50_000),
            ]
        );
        c.check_production().unwrap();
        AssetRegistry::from_specs(&c.assets).unwrap();
        let rules = c.accounts.rules(c.listen.port()).unwrap();
        assert_eq!(
            (rules.rp_id.as_str(), rules.withdrawal_lock_ms),
            ("custody.example.com", 86_400_000)
        );
        let plain =
            AccountsSettings { public_url: Some("http://x.example".into()), ..Default::default() };
        assert!(plain.rules(8443).is_err(), "WebAuthn needs an https origin");
    }
}
