//! The configuration of a Strongroom deployment: one TOML file (`strongroom serve --config
//! FILE`), every setting of which an environment variable can override
//! (`STRONGROOM_<SECTION>__<KEY>`, e.g. `STRONGROOM_DATABASE_URL`,
//! `STRONGROOM_SIGNERS__PRESIGNATURES`, `STRONGROOM_TLS__CERT`), through figment.
//! `strongroom dev` builds the same structure in code.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::providers::{Format, Toml};
use figment::Figment;
use serde::Deserialize;
use strongroom_units::AssetSpec;

use crate::RuntimeError;

/// The top-level keys environment variables may set (others, such as
/// `STRONGROOM_PERSONAL_DATA_KEY` or `STRONGROOM_LOG`, mean something else).
const SECTIONS: [&str; 17] = [
    "listen",
    "trusted_proxies",
    "database_url",
    "data_dir",
    "tls",
    "max_db_connections",
    "assets",
    "withdrawals",
    "accounts",
    "personal_data",
    "signers",
    "chains",
    "risk",
    "alerts",
    "events",
    "treasury",
    "leases",
];

/// The prefix of overriding environment variables.
pub const ENV_PREFIX: &str = "STRONGROOM_";

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Address to listen on (HTTPS).
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// The load balancers in front of the API (addresses or CIDR ranges): only from them are
    /// `Forwarded` and `X-Forwarded-For` believed, for IP allow-lists, limits and logs.
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
    /// `sqlite://PATH?mode=rwc` or `postgres://USER@HOST:PORT/DB`.
    pub database_url: String,
    /// The server's own files (the personal-data key by default).
    pub data_dir: PathBuf,
    #[serde(default)]
    pub tls: TlsSettings,
    #[serde(default = "default_max_connections")]
    pub max_db_connections: u32,
    /// Assets this deployment handles (symbol, chain, contract, decimals). Required: no
    /// development set is assumed.
    #[serde(default)]
    pub assets: Vec<AssetSpec>,
    #[serde(default)]
    pub withdrawals: WithdrawalsSettings,
    #[serde(default)]
    pub accounts: AccountsSettings,
    #[serde(default)]
    pub personal_data: PersonalDataSettings,
    /// The signer nodes, when this deployment moves money.
    pub signers: Option<SignersSettings>,
    /// The chains whose hot wallets this deployment runs.
    #[serde(default)]
    pub chains: Vec<ChainSettings>,
    #[serde(default)]
    pub risk: RiskSettings,
    #[serde(default)]
    pub alerts: AlertSettings,
    #[serde(default)]
    pub events: EventSettings,
    #[serde(default)]
    pub treasury: TreasurySettings,
    #[serde(default)]
    pub leases: LeaseSettings,
}

/// `[leases]`: how long an instance's claim on work lasts without renewal, that is, how soon
/// another instance takes over from one that died. Shorter takes over sooner; it must stay
/// well above the longest step (a signing round) and the instances' clock skew.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LeaseSettings {
    /// One withdrawal or sweep (renewed before each step).
    #[serde(default = "default_job_lease_ms")]
    pub job_ms: i64,
    /// A singleton job: a chain's watcher and treasury, reconciliation, presignature refill,
    /// the risk engine's assessments (renewed on every pass).
    #[serde(default = "default_leader_lease_ms")]
    pub leader_ms: i64,
}

impl Default for LeaseSettings {
    fn default() -> Self {
        LeaseSettings { job_ms: default_job_lease_ms(), leader_ms: default_leader_lease_ms() }
    }
}

fn default_job_lease_ms() -> i64 {
    strongroom_engine::JOB_LEASE_MS
}
fn default_leader_lease_ms() -> i64 {
    crate::lease::LEADER_LEASE_MS
}

/// The API's certificate (`[tls]`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSettings {
    /// PEM certificate chain.
    pub cert: Option<PathBuf>,
    /// PEM private key.
    pub key: Option<PathBuf>,
}

/// `[withdrawals]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WithdrawalsSettings {
    /// How long a withdrawal's intent stays valid for approval and signing.
    #[serde(default = "default_ttl")]
    pub intent_ttl_secs: u32,
    /// Customer withdrawals wait for the risk engine's clearance before they are built.
    #[serde(default = "default_true")]
    pub require_risk: bool,
}

impl Default for WithdrawalsSettings {
    fn default() -> Self {
        WithdrawalsSettings { intent_ttl_secs: default_ttl(), require_risk: true }
    }
}

/// Customers' and staff's accounts (`[accounts]`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccountsSettings {
    /// The console's origin (`https://…`): the WebAuthn relying party is its host. Default:
    /// `https://localhost:<listen port>`.
    pub public_url: Option<String>,
    /// Seconds withdrawals stay locked after a security change (default 24 h).
    pub withdrawal_lock_secs: Option<u64>,
    /// Seconds before a new customer whitelist address is usable (default 24 h).
    pub whitelist_delay_secs: Option<u64>,
}

/// The key that seals personal data (`[personal_data]`): the environment variable
/// `STRONGROOM_PERSONAL_DATA_KEY` (hex), else this file (`strongroom keys init` makes it).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PersonalDataSettings {
    /// Default: `DATA/personal-data.key`.
    pub key_file: Option<PathBuf>,
    /// The key inside a hardware security module instead (`[personal_data.pkcs11]`: module,
    /// token, key label, the environment variable with the PIN). The server does not start
    /// when the token is missing.
    pub pkcs11: Option<strongroom_hsm::Pkcs11Config>,
}

/// How to reach the signer nodes (`[signers]`): the orchestrator's client certificate,
/// which every node pins, and each node's address and certificate pin.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignersSettings {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub nodes: Vec<NodeSettings>,
    /// Presignatures kept ready per pair of live nodes for each ECDSA hot key.
    #[serde(default = "default_presignatures")]
    pub presignatures: usize,
    /// Refresh every FROST key's shares this often (seconds; none by default): the same
    /// group key, new shares, so a share copied before stops counting. Node backups hold
    /// shares, so take new ones after each refresh.
    #[serde(default)]
    pub refresh_every_secs: Option<u64>,
}

/// One signer node.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeSettings {
    pub id: u16,
    /// `host:port` (an IP address and port).
    pub addr: SocketAddr,
    /// SHA-256 of the node's certificate (DER), hex: what `strongroom signer init` prints.
    pub pin: String,
}

/// What kind of chain a `[[chains]]` entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChainKind {
    Ethereum,
    Bitcoin,
}

/// One chain (`[[chains]]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChainSettings {
    pub kind: ChainKind,
    /// CAIP-2 id (`eip155:1`).
    pub chain: String,
    /// The node's JSON-RPC URL (`http://` or `https://`).
    pub rpc_url: String,
    /// A CA certificate (PEM) trusted for this endpoint besides the platform's roots.
    pub ca_file: Option<PathBuf>,
    #[serde(default = "default_confirmations")]
    pub confirmations: u64,
    /// The signer nodes' key that is this chain's hot wallet.
    pub hot_wallet: String,
    /// The symbol fees are paid in (the chain's native asset).
    pub fee_asset: String,
    /// The first block the deposit watcher reads.
    #[serde(default)]
    pub start_block: u64,
    /// The cold wallet's address (on the governance whitelist as internal), where the
    /// treasury sweeps and whose balance counts as custody.
    pub cold_address: Option<String>,
    /// The cold wallet's name in reports (default `cold`); on Bitcoin, the wallet id the key
    /// holders installed it under (`strongroom-cold install-wallet --wallet`).
    pub cold_wallet: Option<String>,
    /// Bitcoin: the cold wallet's descriptor (`wsh(sortedmulti(…))`, public keys only). With
    /// it the server prepares refills of the hot wallet for the offline signers: when the hot
    /// wallet falls below its low watermark it asks for one, and once governance allows it
    /// makes the signing bundle from the cold wallet's coins (`GET /v1/treasury/refills`).
    #[serde(default)]
    pub cold_descriptor: Option<String>,
    /// Bitcoin: after how long in the mempool a withdrawal's or sweep's transaction gets a
    /// fee bump (the same coins at today's estimate, under the intent's cap), when that pays
    /// enough more; absent, never.
    #[serde(default)]
    pub fee_bump_after_secs: Option<u64>,
    /// Least native balance worth sweeping from a deposit address (base units).
    #[serde(default = "default_min_native")]
    /// (TOML integers are 64-bit: up to 18.4 ETH in wei, which is all a sweep minimum needs.)
    pub min_sweep_native: u64,
}

/// `[risk]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RiskSettings {
    /// A folder of sanctions and scam lists (reloaded when a file changes).
    pub lists: Option<PathBuf>,
    /// A rule set (TOML); the default rules otherwise.
    pub rules: Option<PathBuf>,
    /// IPv4 ranges → places, for impossible travel.
    pub geo: Option<PathBuf>,
    /// A NATS server whose JetStream carries risk events.
    pub nats: Option<String>,
    /// Assessments per drift window: the score's and each feature's distribution over a
    /// window is compared with the first window's, and a shift raises a `risk_drift` alert.
    pub drift_window: Option<usize>,
    /// Train a candidate model and put it in shadow each time this many more analysts'
    /// decisions have come in than the newest registered version was trained on.
    pub retrain_labels: Option<u64>,
    /// Promote a shadow once it ranked at least as well as the live model on enough labels.
    #[serde(default)]
    pub auto_promote: bool,
}

/// `[events]`: the exchange's event webhook (Standard Webhooks): withdrawal, deposit,
/// review and governance events, each delivered at least once under its event id.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventSettings {
    pub webhook_url: Option<String>,
    /// The file holding the Standard Webhooks secret (`whsec_` and base64).
    pub webhook_secret_file: Option<PathBuf>,
    /// A CA certificate (PEM) trusted for the receiver besides the platform's roots.
    pub webhook_ca_file: Option<PathBuf>,
    /// Only these families: `withdrawal`, `deposit`, `review`, `governance` (all by default).
    #[serde(default)]
    pub types: Vec<String>,
    /// Attempts before a delivery becomes a dead letter.
    pub max_attempts: Option<u32>,
    /// On the first start with a webhook, deliver the events already in the audit log too
    /// (otherwise only later ones; `GET /v1/events` reads every one).
    #[serde(default)]
    pub from_start: bool,
}

impl EventSettings {
    /// The webhook, when one is set.
    pub fn hook(&self) -> Result<Option<crate::events::HookSettings>, RuntimeError> {
        let (url, secret) = match (&self.webhook_url, &self.webhook_secret_file) {
            (Some(u), Some(s)) => (u.clone(), s.clone()),
            (None, None) => return Ok(None),
            _ => {
                return Err(RuntimeError::Config(
                    "[events] webhook_url needs webhook_secret_file, and the other way round"
                        .into(),
                ))
            }
        };
        let families = self
            .types
            .iter()
            .map(|t| {
                strongroom_server::events::Family::parse(t).ok_or_else(|| {
                    RuntimeError::Config(format!(
                        "[events] types: unknown family {t:?} (withdrawal, deposit, review, governance)"
                    ))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Some(crate::events::HookSettings {
            url,
            secret_file: secret,
            ca_file: self.webhook_ca_file.clone(),
            families,
            max_attempts: self.max_attempts.unwrap_or(crate::events::DEFAULT_MAX_ATTEMPTS),
            from_start: self.from_start,
        }))
    }
}

/// `[alerts]`: where the security team hears of incidents.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertSettings {
    pub webhook_url: Option<String>,
    /// The file holding the webhook's HMAC secret.
    pub webhook_secret_file: Option<PathBuf>,
    /// A CA certificate (PEM) trusted for the webhook besides the platform's roots.
    pub webhook_ca_file: Option<PathBuf>,
    pub smtp: Option<SmtpSettings>,
    /// The security team's addresses.
    #[serde(default)]
    pub security_team: Vec<String>,
}

/// An SMTP relay (sent through lettre, see `crate::mail`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmtpSettings {
    /// `host:port`.
    pub relay: String,
    pub from: String,
    /// `"none"` (plain TCP: only for a relay on this host), `"starttls"` (refused when the
    /// relay does not offer it) or `"implicit"` (TLS from the first byte, usually port 465).
    /// Unset: `"starttls"` when `ca_file` is set, else `"none"` (the behaviour before this key).
    pub tls: Option<crate::mail::Tls>,
    /// A CA certificate (PEM) trusted besides the platform's roots. Its former name,
    /// `starttls_ca`, is still read (giving both is an error).
    #[serde(alias = "starttls_ca")]
    pub ca_file: Option<PathBuf>,
    /// AUTH (PLAIN or LOGIN, over TLS only) as this user, with `password_file`.
    pub username: Option<String>,
    /// The file holding the password (read once at start; trailing line break ignored).
    pub password_file: Option<PathBuf>,
    /// The most a whole send may take (30 s when unset).
    pub timeout_secs: Option<u64>,
}

impl SmtpSettings {
    /// A relay with every optional setting unset.
    pub fn new(relay: impl Into<String>, from: impl Into<String>) -> SmtpSettings {
        SmtpSettings {
            relay: relay.into(),
            from: from.into(),
            tls: None,
            ca_file: None,
            username: None,
            password_file: None,
            timeout_secs: None,
        }
    }
}

/// `[treasury]`: hot-wallet watermarks per asset; sweeps go to the asset's chain's
/// `cold_address`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TreasurySettings {
    #[serde(default)]
    pub assets: Vec<WatermarkSettings>,
}

/// One asset's watermarks, as decimal amounts of the asset.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WatermarkSettings {
    pub asset: String,
    pub low: String,
    pub target: String,
    pub high: String,
    /// The least cold share, in basis points (default 9500 = 95%).
    #[serde(default = "default_min_cold_bps")]
    pub min_cold_bps: u32,
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8443))
}
fn default_max_connections() -> u32 {
    16
}
fn default_ttl() -> u32 {
    24 * 3600
}
fn default_true() -> bool {
    true
}
fn default_presignatures() -> usize {
    2
}
fn default_confirmations() -> u64 {
    12
}
fn default_min_native() -> u64 {
    1_000_000_000_000_000
}
fn default_min_cold_bps() -> u32 {
    9500
}

impl Settings {
    /// Read `path`, then let `STRONGROOM_…` variables in `vars` override it.
    pub fn load(
        path: &Path,
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Settings, RuntimeError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| RuntimeError::io(format!("reading {}", path.display()), e))?;
        Self::parse(&text, vars).map_err(|e| match e {
            RuntimeError::Config(m) => RuntimeError::Config(format!("{}: {m}", path.display())),
            other => other,
        })
    }

    /// Parse a configuration's text with overrides from `vars` (the process environment, for
    /// binaries: [`std::env::vars`]).
    pub fn parse(
        text: &str,
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Settings, RuntimeError> {
        let mut figment = Figment::from(Toml::string(text));
        for (name, value) in vars {
            let Some(rest) = name.strip_prefix(ENV_PREFIX) else { continue };
            let key = rest.to_ascii_lowercase();
            let top = key.split("__").next().unwrap_or_default();
            if !SECTIONS.contains(&top) {
                continue;
            }
            let path = key.replace("__", ".");
            // One variable at a time, parsed as figment parses the environment (numbers,
            // booleans, inline arrays and tables), nested by `__`.
            let value: figment::value::Value =
                value.parse().unwrap_or_else(|_| figment::value::Value::from(value.clone()));
            figment = figment.merge((path.as_str(), value));
        }
        let settings: Settings =
            figment.extract().map_err(|e| RuntimeError::Config(e.to_string()))?;
        if settings.tls.cert.is_some() != settings.tls.key.is_some() {
            return Err(RuntimeError::Config("[tls] needs both cert and key, or neither".into()));
        }
        Ok(settings)
    }

    /// What a production server refuses to guess: its certificate, its assets, and every
    /// chain it runs named with its signer nodes.
    pub fn check_production(&self) -> Result<(), RuntimeError> {
        let bad = |m: &str| Err(RuntimeError::Config(m.to_owned()));
        if self.tls.cert.is_none() {
            return bad("[tls] cert and key are required (no development CA is made for serve)");
        }
        if self.assets.is_empty() {
            return bad("[[assets]] is empty: name the assets this deployment holds");
        }
        if !self.chains.is_empty() && self.signers.is_none() {
            return bad("[[chains]] needs [signers]: the nodes that hold the hot wallets' keys");
        }
        Ok(())
    }

    /// The SQLite URL for a file in `dir`.
    pub fn sqlite_url(dir: &Path) -> String {
        format!("sqlite://{}?mode=rwc", dir.join("strongroom.db").display())
    }

    /// A dev stack's settings: SQLite in `data_dir`, the development assets.
    pub fn dev(data_dir: &Path, listen: SocketAddr) -> Settings {
        Settings {
            listen,
            trusted_proxies: Vec::new(),
            database_url: Self::sqlite_url(data_dir),
            data_dir: data_dir.to_path_buf(),
            tls: TlsSettings::default(),
            max_db_connections: 8,
            assets: strongroom_units::chain::dev_specs(),
            withdrawals: WithdrawalsSettings::default(),
            accounts: AccountsSettings::default(),
            personal_data: PersonalDataSettings::default(),
            signers: None,
            chains: Vec::new(),
            risk: RiskSettings::default(),
            alerts: AlertSettings::default(),
            events: EventSettings::default(),
            treasury: TreasurySettings::default(),
            leases: LeaseSettings::default(),
        }
    }

    /// The personal-data key's file.
    pub fn personal_data_key_file(&self) -> PathBuf {
        self.personal_data
            .key_file
            .clone()
            .unwrap_or_else(|| self.data_dir.join("personal-data.key"))
    }
}

impl AccountsSettings {
    /// The rules these settings make, for a server listening on `port`.
    pub fn rules(
        &self,
        port: u16,
    ) -> Result<strongroom_server::accounts::AccountRules, RuntimeError> {
        let origin = self.public_url.clone().unwrap_or_else(|| format!("https://localhost:{port}"));
        let host = reqwest::Url::parse(&origin)
            .ok()
            .filter(|u| u.scheme() == "https")
            .and_then(|u| u.host_str().map(str::to_owned))
            .ok_or_else(|| {
                RuntimeError::Config(format!("public URL {origin:?} is not an https URL"))
            })?;
        let ms = |s: u64| i64::try_from(s.saturating_mul(1000)).unwrap_or(i64::MAX);
        let defaults = strongroom_server::accounts::AccountRules::default();
        Ok(strongroom_server::accounts::AccountRules {
            withdrawal_lock_ms: self.withdrawal_lock_secs.map_or(defaults.withdrawal_lock_ms, ms),
            whitelist_delay_ms: self.whitelist_delay_secs.map_or(defaults.whitelist_delay_ms, ms),
            rp_id: host,
            rp_origin: origin,
            ..defaults
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = r#"
database_url = "sqlite://x.db"
data_dir = "/tmp/x"
[[assets]]
symbol = "ETH"
chain = "eip155:1"
decimals = 18
min_withdrawal = "0.001"
fee_cap = "5000000000000000"
"#;

    fn vars(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter().map(|(a, b)| ((*a).to_owned(), (*b).to_owned())).collect()
    }

    #[test]
    fn the_environment_overrides_the_file() {
        let s = Settings::parse(
            BASE,
            vars(&[
                ("STRONGROOM_DATABASE_URL", "postgres://db/strongroom"),
                ("STRONGROOM_LISTEN", "0.0.0.0:9443"),
                ("STRONGROOM_TRUSTED_PROXIES", "[\"10.0.0.0/8\", \"192.0.2.10\"]"),
                ("STRONGROOM_WITHDRAWALS__INTENT_TTL_SECS", "60"),
                ("STRONGROOM_TLS__CERT", "/etc/strongroom/api.pem"),
                ("STRONGROOM_TLS__KEY", "/etc/strongroom/api.key"),
                // Not settings: left alone rather than refused as unknown fields.
                ("STRONGROOM_LOG", "debug"),
                ("STRONGROOM_PERSONAL_DATA_KEY", "00"),
                ("HOME", "/root"),
            ]),
        )
        .unwrap();
        assert_eq!(s.database_url, "postgres://db/strongroom");
        assert_eq!(s.listen, "0.0.0.0:9443".parse().unwrap());
        assert_eq!(s.withdrawals.intent_ttl_secs, 60);
        assert_eq!(s.trusted_proxies, ["10.0.0.0/8", "192.0.2.10"]);
        assert_eq!(s.tls.cert.as_deref(), Some(Path::new("/etc/strongroom/api.pem")));
        assert!(s.check_production().is_ok());
    }

    #[test]
    fn serve_refuses_what_it_would_have_to_guess() {
        let s = Settings::parse(BASE, []).unwrap();
        let e = s.check_production().unwrap_err().to_string();
        assert!(e.contains("[tls]"), "{e}");
        let no_assets =
            "database_url = \"sqlite://x\"\ndata_dir = \"/x\"\n[tls]\ncert = \"c\"\nkey = \"k\"\n";
        let e = Settings::parse(no_assets, []).unwrap().check_production().unwrap_err();
        assert!(e.to_string().contains("[[assets]]"), "{e}");
        let half = format!("{BASE}[tls]\ncert = \"c\"\n");
        assert!(Settings::parse(&half, []).unwrap_err().to_string().contains("both cert and key"));
        let typo = format!("{BASE}[withdrawals]\nintent_ttl = 5\n");
        assert!(Settings::parse(&typo, []).is_err(), "unknown fields are refused");
        let chain = format!(
            "{BASE}[tls]\ncert = \"c\"\nkey = \"k\"\n[[chains]]\nkind = \"ethereum\"\nchain = \"eip155:1\"\nrpc_url = \"https://rpc\"\nhot_wallet = \"hot-eth-1\"\nfee_asset = \"ETH\"\n"
        );
        let e = Settings::parse(&chain, []).unwrap().check_production().unwrap_err();
        assert!(e.to_string().contains("[signers]"), "{e}");
    }
}
