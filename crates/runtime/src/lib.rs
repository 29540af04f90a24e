//! The engine runtime: one running Strongroom, built from [`Settings`].
//!
//! [`Runtime::start`] opens nothing itself but what the settings name: it reaches the signer
//! nodes (`[signers]`), connects every `[[chains]]` entry (its node's chain id checked, the
//! hot wallet's key agreed by every live node), builds the risk engine and alerts, then the
//! API with everything it needs at construction, and only then starts the workers: per
//! chain the withdrawal engine, deposit watcher, sweeper, treasury and reconciliation; the
//! risk worker; the presignature refill. `strongroom serve` and `strongroom dev` both run
//! it; dev only adds what a developer's machine lacks (a local chain, three local signer
//! processes, a dev CA, a dev genesis).
#![forbid(unsafe_code)]

pub mod chains;
pub mod events;
pub mod http;
pub mod incidents;
pub mod lease;
pub mod mail;
pub mod probes;
pub mod refills;
pub mod risk;
pub mod risk_models;
pub mod settings;
pub mod signing;

use std::path::PathBuf;
use std::sync::Arc;

use strongroom_core::withdrawal::WithdrawalRules;
use strongroom_core::Env;
use strongroom_server::tls;
use strongroom_server::{AppState, HandCredits};
use strongroom_store::{Store, StoreError};
use strongroom_units::{AssetRegistry, ChainId};

pub use settings::Settings;

/// Why the runtime could not start (or a worker could not act).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RuntimeError {
    /// The configuration is wrong or incomplete.
    #[error("configuration: {0}")]
    Config(String),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("database: {0}")]
    Store(#[from] StoreError),
    /// A chain's node could not be used.
    #[error("{chain}: {detail}")]
    Chain { chain: String, detail: String },
    /// The signer nodes could not be used.
    #[error("signer nodes: {0}")]
    Signers(String),
    #[error("risk: {0}")]
    Risk(String),
    /// A move in the risk model registry was refused.
    #[error("risk model: {0}")]
    Model(#[from] risk_models::ModelRefusal),
    #[error("TLS: {0}")]
    Tls(String),
}

impl RuntimeError {
    pub fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        RuntimeError::Io { what: what.into(), source }
    }
    pub fn chain(chain: &ChainId, detail: impl std::fmt::Display) -> Self {
        RuntimeError::Chain { chain: chain.as_str().to_owned(), detail: detail.to_string() }
    }
}

/// What a caller decides beside the settings.
#[derive(Clone, Default)]
pub struct Options {
    /// The key that seals personal data (the caller loads it: `strongroom keys init`).
    pub personal_data_key: Option<Arc<dyn strongroom_crypto::seal::KeyEncryptionKey>>,
    /// INSECURE unless `Never`: credits by hand (the dev stack's own genesis).
    pub hand_credits: HandCredits,
    /// When `[tls]` names no certificate, make a development CA in `DATA/tls` (dev only;
    /// `serve` refuses instead).
    pub dev_pki: bool,
    pub engine: chains::EngineOptions,
}

impl std::fmt::Debug for Options {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Options")
            .field("personal_data_key", &self.personal_data_key.is_some())
            .field("hand_credits", &self.hand_credits)
            .field("dev_pki", &self.dev_pki)
            .finish_non_exhaustive()
    }
}

/// A running Strongroom: the API and every worker.
#[derive(Debug)]
pub struct Runtime {
    pub state: AppState,
    api: tls::Running,
    /// The development CA, when one was made.
    pub ca: Option<PathBuf>,
    /// Each connected chain, as `DATA/chain.json` records the first.
    pub chains: Vec<chains::ChainFile>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Runtime {
    /// Start everything the settings name.
    pub async fn start(
        settings: &Settings,
        store: Arc<dyn Store>,
        env: Arc<dyn Env>,
        options: Options,
    ) -> Result<Runtime, RuntimeError> {
        let (cert, key, ca) = match (&settings.tls.cert, &settings.tls.key) {
            (Some(c), Some(k)) => (c.clone(), k.clone(), None),
            _ if options.dev_pki => {
                let pki = strongroom_server::pki::DevPki::in_dir(&settings.data_dir.join("tls"));
                let hosts = vec!["localhost".to_string()];
                if pki.ensure(&hosts, env.now()).map_err(|e| RuntimeError::Tls(e.to_string()))? {
                    tracing::info!(ca = %pki.ca_cert.display(), "created development CA and server certificate");
                }
                (pki.server_cert, pki.server_key, Some(pki.ca_cert))
            }
            _ => return Err(RuntimeError::Config("[tls] cert and key are required".into())),
        };
        let tls_config =
            tls::server_config(&cert, &key).map_err(|e| RuntimeError::Tls(e.to_string()))?;
        let registry = AssetRegistry::from_specs(&settings.assets)
            .map_err(|e| RuntimeError::Config(format!("[[assets]]: {e}")))?;
        let mut rules = WithdrawalRules {
            intent_ttl_ms: i64::from(settings.withdrawals.intent_ttl_secs) * 1000,
            ..WithdrawalRules::default()
        };
        let accounts = strongroom_server::accounts::Accounts::new(
            settings.accounts.rules(settings.listen.port())?,
        )
        .map_err(RuntimeError::Config)?;

        // The risk engine and alerts.
        let risk = risk::Risk::new(
            store.clone(),
            risk_options(settings, options.personal_data_key.clone())?,
            env.clone(),
        )?;

        // The treasury's ledger account (gas money, fees, sweeps): made once, idempotently.
        let ctx = strongroom_store::WriteCtx {
            actor: "runtime".into(),
            now: env.now(),
            request_id: None,
        };
        store.ensure_treasury(&ctx).await?;

        // This process's name in work leases (several instances may share the database).
        let instance = lease::Instance::new(env.as_ref(), &settings.leases);
        tracing::info!(instance = instance.name, "instance");

        // The signer nodes and every chain.
        let mut tasks = Vec::new();
        let mut connected = Vec::new();
        let mut probes: Vec<Arc<dyn strongroom_server::ops::Probe>> = Vec::new();
        let mut signers = None;
        if let Some(s) = &settings.signers {
            let orch = signing::orchestrator(s)?;
            let signer = Arc::new(signing::OrchestratorSigner::new(orch, env.clone()));
            signers = Some(signer.clone());
            probes.push(Arc::new(probes::SignerProbe { signer: signer.clone() }));
            let refill = instance.leader(store.clone(), env.clone(), "presignatures");
            tasks.push(tokio::spawn(signing::refill_forever(
                refill,
                signer.clone(),
                s.presignatures,
            )));
            if let Some(secs) = s.refresh_every_secs {
                tasks.push(tokio::spawn(signing::refresh_forever(
                    instance.leader(store.clone(), env.clone(), "frost-refresh"),
                    signer.clone(),
                    store.clone(),
                    risk.alerts().clone(),
                    std::time::Duration::from_secs(secs.max(1)),
                )));
            }
            for c in &settings.chains {
                connected.push(
                    chains::HotChain::connect(
                        c,
                        store.clone(),
                        signer.clone(),
                        env.clone(),
                        settings.withdrawals.require_risk,
                        &options.engine,
                        &instance,
                    )
                    .await?,
                );
            }
        } else if !settings.chains.is_empty() {
            return Err(RuntimeError::Config("[[chains]] needs [signers]".into()));
        }

        // Each chain pays out from its hot wallet in use (after a key migration, the new key).
        for c in &connected {
            rules.hot_wallets.insert(c.chain.clone(), c.wallet.clone());
        }
        // The API, whole.
        let mut builder = AppState::builder(store.clone(), env.clone(), registry.clone(), rules)
            .accounts(accounts)
            .hand_credits(options.hand_credits)
            .notifier(risk.notifier())
            .destination_screen(risk.screen())
            .risk_scorer(risk.scorer())
            .trusted_proxies(settings.trusted_proxies.clone())
            .map_err(RuntimeError::Config)?;
        if let Some(k) = &options.personal_data_key {
            builder = builder.personal_data_key(k.clone());
        }
        for c in &connected {
            probes.push(Arc::new(c.probe(store.clone())));
        }
        for p in probes {
            builder = builder.probe(p);
        }
        let addresses: Vec<chains::ChainAddresses> =
            connected.iter().map(|c| c.deposit_addresses(store.clone(), env.clone())).collect();
        let ours: Vec<_> = addresses.iter().map(chains::ChainAddresses::ours).collect();
        if !addresses.is_empty() {
            builder = builder.deposit_addresses(Arc::new(chains::DepositAddresses(addresses)));
        }
        let state = builder.build();

        // The workers.
        let chains: Vec<chains::ChainFile> = connected.iter().map(|c| c.file()).collect();
        if let Some(first) = chains.first() {
            let path = chains::ChainFile::path(&settings.data_dir);
            let text = serde_json::to_vec_pretty(first)
                .map_err(|e| RuntimeError::Config(e.to_string()))?;
            std::fs::write(&path, text)
                .map_err(|e| RuntimeError::io(format!("writing {}", path.display()), e))?;
            let path = chains::ChainFile::list_path(&settings.data_dir);
            let text = serde_json::to_vec_pretty(&chains)
                .map_err(|e| RuntimeError::Config(e.to_string()))?;
            std::fs::write(&path, text)
                .map_err(|e| RuntimeError::io(format!("writing {}", path.display()), e))?;
        }
        // Every hot wallet by chain, migrated ones too (a freeze names a wallet).
        let hot_wallets: Vec<(String, String)> = connected
            .iter()
            .flat_map(|c| {
                std::iter::once(&c.wallet)
                    .chain(c.former.iter().map(|(w, _)| w))
                    .map(|w| (w.as_str().to_owned(), c.chain.as_str().to_owned()))
            })
            .collect();
        for (i, (c, ours)) in connected.into_iter().zip(ours).enumerate() {
            let wallets = c.wallets();
            let follow = chains::Follow {
                settings: c.settings.clone(),
                store: store.clone(),
                signer: c.signer(),
                env: env.clone(),
                require_risk: settings.withdrawals.require_risk,
                opts: options.engine.clone(),
                instance: instance.clone(),
                registry: registry.clone(),
                marks: settings.treasury.assets.clone(),
                api: state.clone(),
                ours,
                chain_file: (i == 0).then(|| chains::ChainFile::path(&settings.data_dir)),
            };
            let running = c.spawn(
                store.clone(),
                env.clone(),
                &registry,
                &settings.treasury.assets,
                state.clone(),
                &instance,
            )?;
            // The workers move to a new key when governance migrates this chain's hot key.
            tasks.push(tokio::spawn(chains::follow_migrations(follow, running, wallets)));
        }
        // Incident steps in the governance log: staff alerts, and notices to the customers a
        // freeze stops.
        tasks.push(tokio::spawn(incidents::notices_forever(
            instance.leader(store.clone(), env.clone(), "incidents"),
            store.clone(),
            risk.alerts().clone(),
            registry.clone(),
            hot_wallets,
            signers,
            env.clone(),
        )));
        // Events into the outbox for the exchange's webhook (the outbox worker delivers).
        if let Some(hook) = settings.events.hook()? {
            tasks.push(tokio::spawn(events::project_forever(
                instance.leader(store.clone(), env.clone(), "events"),
                store.clone(),
                env.clone(),
                hook.families,
                hook.from_start,
            )));
        }
        tasks.extend(risk.start(&instance).await?);

        let (app, _) = strongroom_server::app(state.clone());
        let listener = tokio::net::TcpListener::bind(settings.listen).await.map_err(|e| {
            RuntimeError::io(
                format!("cannot listen on {} (is another server running?)", settings.listen),
                e,
            )
        })?;
        let api =
            tls::serve(listener, tls_config, app).map_err(|e| RuntimeError::Tls(e.to_string()))?;
        tracing::info!(addr = %api.addr, chains = chains.len(), "serving HTTPS (TLS 1.3 only) with the engine runtime");
        Ok(Runtime { state, api, ca, chains, tasks })
    }

    /// The address the API listens on.
    pub fn addr(&self) -> std::net::SocketAddr {
        self.api.addr
    }

    /// Serve until `stop` resolves, then stop the API (finishing requests under way) and
    /// every worker.
    pub async fn run_until(self, stop: impl std::future::Future<Output = ()>) {
        let Runtime { api, tasks, .. } = self;
        stop.await;
        tracing::info!("shutting down");
        api.shutdown().await;
        for t in tasks {
            t.abort();
        }
    }
}

/// The risk engine's options from `[risk]` and `[alerts]`.
fn risk_options(
    settings: &Settings,
    personal_data: Option<Arc<dyn strongroom_crypto::seal::KeyEncryptionKey>>,
) -> Result<risk::RiskOptions, RuntimeError> {
    let a = &settings.alerts;
    let webhook = match (&a.webhook_url, &a.webhook_secret_file) {
        (Some(url), Some(secret)) => Some(risk::Webhook {
            url: url.clone(),
            secret_file: secret.clone(),
            ca_file: a.webhook_ca_file.clone(),
        }),
        (None, None) => None,
        _ => {
            return Err(RuntimeError::Config(
                "[alerts] webhook_url needs webhook_secret_file, and the other way round".into(),
            ))
        }
    };
    let mail = match &a.smtp {
        Some(s) => {
            let config = |e: mail::MailError| match e {
                mail::MailError::Config(what) => {
                    RuntimeError::Config(format!("[alerts] smtp: {what}"))
                }
                other => RuntimeError::Config(format!("[alerts] smtp: {other}")),
            };
            let login = match (&s.username, &s.password_file) {
                (Some(user), Some(file)) => {
                    Some(mail::Login::from_file(user, file).map_err(config)?)
                }
                (None, None) => None,
                _ => {
                    return Err(RuntimeError::Config(
                        "[alerts] smtp: username needs password_file, and the other way round"
                            .into(),
                    ))
                }
            };
            // Unset: what a relay with a CA file meant before `tls` existed.
            let tls = s.tls.unwrap_or(match s.ca_file {
                Some(_) => mail::Tls::StartTls,
                None => mail::Tls::None,
            });
            let smtp = mail::Smtp::new(mail::SmtpOptions {
                relay: s.relay.clone(),
                from: s.from.clone(),
                tls,
                ca_file: s.ca_file.clone(),
                login,
                timeout: std::time::Duration::from_secs(
                    s.timeout_secs.unwrap_or(mail::DEFAULT_TIMEOUT_SECS),
                ),
            })
            .map_err(config)?;
            Some((smtp, a.security_team.clone()))
        }
        None => None,
    };
    Ok(risk::RiskOptions {
        lists: settings.risk.lists.clone(),
        rules: settings.risk.rules.clone(),
        webhook,
        mail,
        nats: settings.risk.nats.clone(),
        geo: settings.risk.geo.clone(),
        personal_data,
        drift_window: settings.risk.drift_window,
        retrain_labels: settings.risk.retrain_labels,
        auto_promote: settings.risk.auto_promote,
        events: settings.events.hook()?,
    })
}
