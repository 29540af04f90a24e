//! Setting up one signer node on its own host (`strongroom signer init`): its folder, its
//! self-signed mutual-TLS identity (trust is the pin), its key-encryption key, and its
//! configuration once the other pins are known.
//!
//! Run once to make the identity and print the pin; run again with the peers',
//! orchestrator's and pushers' pins and the governance folder to write the configuration.
//! Running it again keeps the key, the certificate and the key-encryption key.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Serialize;
use strongroom_core::{Env, Timestamp};
use strongroom_governance::log::Genesis;

use crate::node::PeerConfig;
use crate::tls;

/// What `strongroom signer init` is told.
#[derive(Debug, Clone)]
pub struct InitOptions {
    /// The node's folder (configuration, certificate, keys, data).
    pub dir: PathBuf,
    pub id: u16,
    pub listen: SocketAddr,
    /// Names and addresses the certificate is valid for besides the listen address.
    pub hosts: Vec<String>,
    pub peers: Vec<PeerConfig>,
    pub orchestrators: Vec<String>,
    pub pushers: Vec<String>,
    /// A governance folder (`strongroom governance init`): `genesis.json` and `pin`.
    pub governance: Option<PathBuf>,
    /// Take the key-encryption key from this environment variable instead of a file.
    pub kek_env: Option<String>,
    /// Health and metrics (plain HTTP): keep it on loopback or a management network.
    pub metrics_listen: Option<SocketAddr>,
    /// TEST ONLY: pregenerated (public) Paillier primes.
    pub test_primes_file: Option<PathBuf>,
}

/// What it did.
#[derive(Debug, Clone)]
pub struct Initialized {
    /// The SHA-256 of the node's certificate: what peers and the orchestrator pin.
    pub pin: String,
    pub config: PathBuf,
    /// What the configuration still lacks before the node can run.
    pub missing: Vec<&'static str>,
}

#[derive(Serialize)]
struct Peer<'a> {
    id: u16,
    addr: SocketAddr,
    cert_sha256: &'a str,
}

/// The configuration file, as written (what it leaves out takes its default).
#[derive(Serialize)]
struct Written<'a> {
    id: u16,
    listen: SocketAddr,
    data_dir: &'a Path,
    cert: &'a Path,
    key: &'a Path,
    #[serde(skip_serializing_if = "Option::is_none")]
    kek_file: Option<&'a Path>,
    #[serde(skip_serializing_if = "Option::is_none")]
    kek_env: Option<&'a str>,
    orchestrators: &'a [String],
    pushers: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    governance_genesis: Option<&'a Path>,
    #[serde(skip_serializing_if = "Option::is_none")]
    governance_pin: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    metrics_listen: Option<SocketAddr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    test_primes_file: Option<&'a Path>,
    peers: Vec<Peer<'a>>,
}

/// Make (or keep) the node's identity and key-encryption key, and write its configuration.
pub fn init(opts: &InitOptions, now: Timestamp, env: &dyn Env) -> anyhow::Result<Initialized> {
    let dir = std::path::absolute(&opts.dir)?;
    std::fs::create_dir_all(dir.join("data"))?;
    let mut hosts = opts.hosts.clone();
    hosts.push(opts.listen.ip().to_string());
    let pin = tls::self_signed_for(&dir, "node", &hosts, now)?;
    let kek_file = dir.join("kek");
    if opts.kek_env.is_none() && !kek_file.exists() {
        let mut k = zeroize::Zeroizing::new([0u8; 32]);
        env.fill_random(k.as_mut());
        let text = zeroize::Zeroizing::new(hex::encode(&k[..]));
        tls::write(&kek_file, text.as_bytes(), true)?;
    }
    let governance = match &opts.governance {
        Some(g) => {
            let genesis_bytes = std::fs::read(g.join("genesis.json"))
                .map_err(|e| anyhow::anyhow!("{}: {e}", g.join("genesis.json").display()))?;
            let genesis: Genesis = serde_json::from_slice(&genesis_bytes)?;
            let pin = std::fs::read_to_string(g.join("genesis.pin"))
                .map_err(|e| anyhow::anyhow!("{}: {e}", g.join("genesis.pin").display()))?
                .trim()
                .to_lowercase();
            anyhow::ensure!(
                hex::encode(genesis.hash()?) == pin,
                "{}: genesis.json does not hash to genesis.pin",
                g.display()
            );
            let copy = dir.join("genesis.json");
            if copy.exists() {
                let old: Genesis = serde_json::from_slice(&std::fs::read(&copy)?)?;
                anyhow::ensure!(
                    hex::encode(old.hash()?) == pin,
                    "this node already pins another genesis ({}): a node's pin never changes",
                    copy.display()
                );
            } else {
                tls::write(&copy, &genesis_bytes, false)?;
            }
            Some((copy, pin))
        }
        None => None,
    };
    for p in &opts.peers {
        anyhow::ensure!(p.id != opts.id, "peer {} is this node", p.id);
        check_pin(&p.cert_sha256)?;
    }
    for p in opts.orchestrators.iter().chain(&opts.pushers) {
        check_pin(p)?;
    }
    let data_dir = dir.join("data");
    let cert = dir.join("node.pem");
    let key = dir.join("node-key.pem");
    let written = Written {
        id: opts.id,
        listen: opts.listen,
        data_dir: &data_dir,
        cert: &cert,
        key: &key,
        kek_file: opts.kek_env.is_none().then_some(kek_file.as_path()),
        kek_env: opts.kek_env.as_deref(),
        orchestrators: &opts.orchestrators,
        pushers: &opts.pushers,
        governance_genesis: governance.as_ref().map(|(p, _)| p.as_path()),
        governance_pin: governance.as_ref().map(|(_, pin)| pin.as_str()),
        metrics_listen: opts.metrics_listen,
        test_primes_file: opts.test_primes_file.as_deref(),
        peers: opts
            .peers
            .iter()
            .map(|p| Peer { id: p.id, addr: p.addr, cert_sha256: &p.cert_sha256 })
            .collect(),
    };
    let text = format!(
        "# Written by `strongroom signer init`; run it again to change it.\n{}",
        toml::to_string(&written)?
    );
    let config = dir.join("signer.toml");
    tls::write(&config, text.as_bytes(), false)?;
    let mut missing = Vec::new();
    if opts.peers.is_empty() {
        missing.push("peers (--peer ID@HOST:PORT#PIN)");
    }
    if opts.orchestrators.is_empty() {
        missing.push("an orchestrator (--orchestrator PIN)");
    }
    if governance.is_none() {
        missing.push("a governance genesis (--governance DIR)");
    }
    Ok(Initialized { pin, config, missing })
}

fn check_pin(pin: &str) -> anyhow::Result<()> {
    anyhow::ensure!(
        pin.len() == 64 && pin.chars().all(|c| c.is_ascii_hexdigit()),
        "{pin:?}: a pin is a certificate's SHA-256 in hex (64 characters)"
    );
    Ok(())
}

/// `ID@HOST:PORT#CERT_SHA256`, as `strongroom signer init --peer` and `governance push
/// --node` take them.
pub fn parse_peer(s: &str) -> anyhow::Result<PeerConfig> {
    let bad = || anyhow::anyhow!("{s:?}: a node is ID@HOST:PORT#CERT_SHA256");
    let (id, rest) = s.split_once('@').ok_or_else(bad)?;
    let (addr, pin) = rest.split_once('#').ok_or_else(bad)?;
    let pin = pin.to_lowercase();
    check_pin(&pin)?;
    Ok(PeerConfig { id: id.parse().map_err(|_| bad())?, addr: addr.parse()?, cert_sha256: pin })
}
