//! The `serve` configuration file (TOML). `strongroom dev` builds the same structure in code.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::Deserialize;
use strongroom_units::AssetSpec;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Address to listen on (HTTPS).
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// `sqlite://PATH?mode=rwc` or `postgres://USER@HOST:PORT/DB`.
    pub database_url: String,
    /// Where the dev PKI lives when `[tls]` names no certificate.
    pub data_dir: PathBuf,
    #[serde(default)]
    pub tls: TlsConfig,
    #[serde(default = "default_max_connections")]
    pub max_db_connections: u32,
    /// Assets this deployment handles; defaults to the development set (ETH on anvil,
    /// BTC regtest).
    #[serde(default = "strongroom_units::chain::dev_specs")]
    pub assets: Vec<AssetSpec>,
    #[serde(default)]
    pub withdrawals: WithdrawalsConfig,
    #[serde(default)]
    pub accounts: AccountsConfig,
}

/// Customers' and staff's accounts (`[accounts]`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccountsConfig {
    /// The console's origin (`https://…`): the WebAuthn relying party is its host. Default:
    /// `https://localhost:<listen port>`.
    pub public_url: Option<String>,
    /// Seconds withdrawals stay locked after a security change (default 24 h).
    pub withdrawal_lock_secs: Option<u64>,
    /// Seconds before a new customer whitelist address is usable (default 24 h).
    pub whitelist_delay_secs: Option<u64>,
}

impl AccountsConfig {
    /// The rules these settings make, for a server listening on `port`.
    pub fn rules(&self, port: u16) -> anyhow::Result<strongroom_server::accounts::AccountRules> {
        let origin = self.public_url.clone().unwrap_or_else(|| format!("https://localhost:{port}"));
        let host = reqwest::Url::parse(&origin)
            .ok()
            .filter(|u| u.scheme() == "https")
            .and_then(|u| u.host_str().map(str::to_owned))
            .ok_or_else(|| anyhow::anyhow!("public URL {origin:?} is not an https URL"))?;
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

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain. With `key`; when both are absent a dev CA and certificate are
    /// made in `data_dir/tls`.
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WithdrawalsConfig {
    /// How long a withdrawal's intent stays valid for approval and signing.
    #[serde(default = "default_ttl")]
    pub intent_ttl_secs: u32,
}

impl Default for WithdrawalsConfig {
    fn default() -> Self {
        WithdrawalsConfig { intent_ttl_secs: default_ttl() }
    }
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Json,
    Pretty,
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

impl Config {
    pub fn load(path: &Path) -> anyhow::Result<Config> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let config: Config =
            toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        if config.tls.cert.is_some() != config.tls.key.is_some() {
            anyhow::bail!("{}: [tls] needs both cert and key, or neither", path.display());
        }
        Ok(config)
    }

    /// The SQLite URL for a file in `dir`.
    pub fn sqlite_url(dir: &Path) -> String {
        format!("sqlite://{}?mode=rwc", dir.join("strongroom.db").display())
    }
}
