//! The dev stack's three signer nodes: start them as child processes of `strongroom dev`
//! (this same binary, `strongroom signer --config …`), and on first start run auxiliary
//! info and key generation for one ECDSA and one FROST-Taproot 2-of-3 key. Also the
//! `strongroom mpc` commands, which talk to those nodes as the orchestrator.

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use clap::Subcommand;
use serde::{Deserialize, Serialize};
use strongroom_core::{Env, SystemEnv};
use strongroom_mpc::ExecutionId;
use strongroom_signer::cluster::{self, Cluster, Options};
use strongroom_signer::tls::Credentials;
use strongroom_signer::wire::{KeyInfo, Scheme, SignRequest, TxFormat};
use strongroom_signer::{NodeAddr, Orchestrator};
use strongroom_store::prelude::*;

use crate::exit::{Exit, Output};

/// The dev keys made on first start: Ethereum's hot wallet, Bitcoin's (P2WPKH of an ECDSA
/// key, so deposit addresses are its children) and a FROST-Taproot key (proofs of control).
pub const DEV_KEYS: [(&str, Scheme); 3] = [
    ("hot-eth-1", Scheme::Ecdsa),
    (crate::bitcoin::DEV_HOT_WALLET, Scheme::Ecdsa),
    ("hot-btc-1", Scheme::FrostTaproot),
];

/// What `strongroom mpc` needs to find the nodes (written by `strongroom dev`).
#[derive(Debug, Serialize, Deserialize)]
pub struct ClusterFile {
    pub nodes: Vec<(u16, SocketAddr, String)>,
    pub orchestrator_cert: PathBuf,
    pub orchestrator_key: PathBuf,
    #[serde(default)]
    pub pusher_cert: Option<PathBuf>,
    #[serde(default)]
    pub pusher_key: Option<PathBuf>,
}

impl ClusterFile {
    pub fn path(data_dir: &Path) -> PathBuf {
        data_dir.join("signers").join("cluster.json")
    }

    pub fn orchestrator(&self) -> anyhow::Result<Orchestrator> {
        let nodes = self
            .nodes
            .iter()
            .map(|(id, addr, pin)| NodeAddr { id: *id, addr: *addr, cert_sha256: pin.clone() })
            .collect();
        let creds = Credentials::load(&self.orchestrator_cert, &self.orchestrator_key)?;
        Ok(Orchestrator::new(nodes, creds))
    }

    pub fn load(data_dir: &Path) -> anyhow::Result<Self> {
        let p = Self::path(data_dir);
        let text = std::fs::read_to_string(&p)
            .with_context(|| format!("{}: run `strongroom dev` first", p.display()))?;
        Ok(serde_json::from_str(&text)?)
    }
}

/// A client for pushing governance to nodes: the `nodes` given as `ID@HOST:PORT#PIN` with
/// the pusher certificate `cert`/`key`, or else the development cluster under `data_dir`.
pub fn pusher(
    data_dir: &Path,
    nodes: &[String],
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
) -> anyhow::Result<Orchestrator> {
    if nodes.is_empty() {
        let file = ClusterFile::load(data_dir)?;
        let (cert, key) = match (cert, key, file.pusher_cert, file.pusher_key) {
            (Some(c), Some(k), _, _) | (None, None, Some(c), Some(k)) => (c, k),
            _ => anyhow::bail!(
                "the development cluster has no pusher certificate (restart `strongroom dev`), \
                 or give --cert and --key"
            ),
        };
        let addrs = file
            .nodes
            .iter()
            .map(|(id, addr, pin)| NodeAddr { id: *id, addr: *addr, cert_sha256: pin.clone() })
            .collect();
        return Ok(Orchestrator::new(addrs, Credentials::load(&cert, &key)?));
    }
    let addrs = nodes.iter().map(|n| parse_node(n)).collect::<anyhow::Result<Vec<_>>>()?;
    let (Some(cert), Some(key)) = (cert, key) else {
        anyhow::bail!("--node needs --cert and --key: the certificate the nodes pin as a pusher")
    };
    Ok(Orchestrator::new(addrs, Credentials::load(&cert, &key)?))
}

/// `ID@HOST:PORT#CERT_SHA256`.
fn parse_node(s: &str) -> anyhow::Result<NodeAddr> {
    let p = strongroom_signer::provision::parse_peer(s)?;
    Ok(NodeAddr { id: p.id, addr: p.addr, cert_sha256: p.cert_sha256 })
}

/// Running signer processes, watched by `strongroom dev`: one that dies is reported and
/// started again, unless its folder holds a `maintenance` file (a drill or an operator is
/// working on it), until that file goes. Killed when dropped.
#[derive(Debug)]
pub struct Signers {
    nodes: std::sync::Arc<std::sync::Mutex<Vec<NodeProcess>>>,
    watch: tokio::task::JoinHandle<()>,
    pub keys: Vec<KeyInfo>,
    pub file: ClusterFile,
}

/// One node process and how to start it again.
#[derive(Debug)]
struct NodeProcess {
    id: u16,
    config: PathBuf,
    log: PathBuf,
    child: Option<tokio::process::Child>,
}

/// The file that keeps `strongroom dev` from restarting a node: `DIR/maintenance`, beside
/// the node's `signer.toml`.
pub fn maintenance_file(config: &Path) -> PathBuf {
    config.parent().unwrap_or(Path::new(".")).join("maintenance")
}

/// Where `strongroom dev` writes a node's process id: `node.pid` beside its `signer.toml`.
pub fn pid_file(config: &Path) -> PathBuf {
    config.parent().unwrap_or(Path::new(".")).join("node.pid")
}

impl NodeProcess {
    /// Start the node (it exits when this process's end of its stdin closes).
    fn spawn(&mut self) -> anyhow::Result<()> {
        let exe = std::env::current_exe()?;
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log)?;
        let child = tokio::process::Command::new(&exe)
            .arg("signer")
            .arg("--config")
            .arg(&self.config)
            .arg("--exit-with-stdin")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting signer {}", self.id))?;
        if let Some(pid) = child.id() {
            std::fs::write(pid_file(&self.config), format!("{pid}\n"))?;
        }
        self.child = Some(child);
        Ok(())
    }

    /// One look: report a node that exited, start one that is down and not under
    /// maintenance.
    fn tend(&mut self) {
        if let Some(c) = &mut self.child {
            match c.try_wait() {
                Ok(None) => return,
                Ok(Some(status)) => {
                    tracing::error!(alert = true, node = self.id, %status, "signer node exited");
                    eprintln!("  signer node {} exited ({status})", self.id);
                }
                Err(e) => tracing::warn!(node = self.id, error = %e, "signer node not readable"),
            }
            self.child = None;
        }
        if maintenance_file(&self.config).exists() {
            return;
        }
        match self.spawn() {
            Ok(()) => {
                tracing::warn!(node = self.id, "signer node started again");
                eprintln!("  signer node {} started again", self.id);
            }
            Err(e) => {
                tracing::error!(alert = true, node = self.id, error = %e, "signer node does not start")
            }
        }
    }
}

fn eid(env: &dyn Env, kind: &str) -> ExecutionId {
    let mut r = [0u8; 16];
    env.fill_random(&mut r);
    ExecutionId::derive(kind, &r, b"")
}

/// Start three signer nodes (their files under `DATA/signers`) and make sure the dev keys
/// exist.
pub async fn start_cluster(
    data_dir: &Path,
    ca_cert: &Path,
    ca_key: &Path,
    base_port: u16,
    test_primes: Option<PathBuf>,
    governance: Option<(PathBuf, String)>,
    keys: &[(&str, Scheme)],
) -> anyhow::Result<Signers> {
    let env = SystemEnv::new();
    let addrs: Vec<SocketAddr> =
        (0..3u16).map(|i| SocketAddr::from(([127, 0, 0, 1], base_port + i))).collect();
    let opts = Options { n: 3, addrs, test_primes_file: test_primes, governance };
    let dir = data_dir.join("signers");
    let cl: Cluster = cluster::prepare(&dir, ca_cert, ca_key, &opts, &env)?;
    let file = ClusterFile {
        nodes: cl.nodes.iter().map(|n| (n.id, n.addr, n.cert_sha256.clone())).collect(),
        orchestrator_cert: cl.orchestrator_cert.clone(),
        orchestrator_key: cl.orchestrator_key.clone(),
        pusher_cert: Some(cl.pusher_cert.clone()),
        pusher_key: Some(cl.pusher_key.clone()),
    };
    std::fs::write(ClusterFile::path(data_dir), serde_json::to_vec_pretty(&file)?)?;

    let mut nodes = Vec::new();
    for (config, node) in cl.configs.iter().zip(&cl.nodes) {
        let mut p = NodeProcess {
            id: node.id,
            config: config.clone(),
            log: dir.join(format!("signer-{}.log", node.id)),
            child: None,
        };
        // A maintenance file left by an interrupted drill is stale at a fresh start.
        let _ = std::fs::remove_file(maintenance_file(config));
        let _ = std::fs::remove_file(&p.log);
        p.spawn()?;
        nodes.push(p);
    }
    let nodes = std::sync::Arc::new(std::sync::Mutex::new(nodes));
    let watched = nodes.clone();
    let watch = tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_millis(500)).await;
            if let Ok(mut nodes) = watched.lock() {
                nodes.iter_mut().for_each(NodeProcess::tend);
            }
        }
    });
    let orch = file.orchestrator()?;
    for _ in 0..200 {
        if orch.live_nodes().await.len() == 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    anyhow::ensure!(
        orch.live_nodes().await.len() == 3,
        "signer nodes did not start (see {})",
        dir.display()
    );
    let keys = ensure_keys(&orch, &env, keys).await?;
    Ok(Signers { nodes, watch, keys, file })
}

/// A progress bar redrawn in place on a terminal; elsewhere (a log file, a journal) one line
/// when the step is done, and nothing in between.
fn progress(label: &str, done: usize, total: usize, secs: u64) {
    use std::io::IsTerminal;
    if !std::io::stderr().is_terminal() {
        if done >= total {
            eprintln!("  {label}: {done}/{total} in {secs}s");
        }
        return;
    }
    let width = 24;
    let filled = (done * width).checked_div(total).unwrap_or(width).min(width);
    let bar: String = "#".repeat(filled) + &"-".repeat(width - filled);
    eprint!("\r  {label:<34} [{bar}] {done}/{total}  {secs:>3}s ");
    let _ = std::io::stderr().flush();
}

/// End a progress bar's line (on a terminal only: elsewhere it printed whole lines).
fn progress_done() {
    use std::io::IsTerminal;
    if std::io::stderr().is_terminal() {
        eprintln!();
    }
}

async fn ensure_keys(
    orch: &Orchestrator,
    env: &SystemEnv,
    keys: &[(&str, Scheme)],
) -> anyhow::Result<Vec<KeyInfo>> {
    let status = orch.status(1).await.map_err(|e| anyhow::anyhow!("{e}"))?;
    let missing: Vec<_> =
        keys.iter().filter(|(id, _)| !status.keys.iter().any(|k| k.key_id == *id)).collect();
    if !status.aux_ready {
        eprintln!("First start: preparing threshold keys (2-of-3) on the three signer nodes.");
        aux_info(orch, env, &orch.node_ids()).await?;
    }
    for (id, scheme) in missing {
        orch.keygen(eid(env, "keygen"), id, *scheme, &[1, 2, 3], 2)
            .await
            .map_err(|e| anyhow::anyhow!("key generation for {id}: {e}"))?;
        eprintln!("  Key {id} ({scheme:?}) generated across nodes 1, 2, 3.");
    }
    let status = orch.status(1).await.map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(status.keys)
}

/// Wait until every node has Paillier primes (each finds them in the background), then run
/// auxiliary info across all of them, showing progress.
/// The nodes a new key is made among: every configured node governance has not
/// quarantined (as any of them reports).
async fn key_parties(orch: &Orchestrator) -> Vec<u16> {
    let mut quarantined = std::collections::BTreeSet::new();
    for n in orch.live_nodes().await {
        if let Ok(s) = orch.status(n).await {
            quarantined.extend(s.quarantined);
        }
    }
    orch.node_ids().into_iter().filter(|n| !quarantined.contains(n)).collect()
}

/// Auxiliary info for `nodes` (threshold ECDSA keys are made among a set that has it).
async fn aux_info(orch: &Orchestrator, env: &SystemEnv, nodes: &[u16]) -> anyhow::Result<()> {
    let nodes = nodes.to_vec();
    let start = env.monotonic();
    loop {
        let mut ready = 0;
        for n in &nodes {
            if let Ok(s) = orch.status(*n).await {
                ready += usize::from(s.primes_ready > 0 || s.aux_ready);
            }
        }
        let secs = (env.monotonic() - start).as_secs();
        progress("Paillier primes (per node)", ready, nodes.len(), secs);
        if ready == nodes.len() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    progress_done();
    let aux = orch.aux_info(eid(env, "aux"), &nodes);
    tokio::pin!(aux);
    let started = env.monotonic();
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        tokio::select! {
            r = &mut aux => { r.map_err(|e| anyhow::anyhow!("auxiliary info: {e}"))?; break; }
            _ = tick.tick() => progress("Auxiliary info (ZK proofs)", 0, 1, (env.monotonic() - started).as_secs()),
        }
    }
    progress("Auxiliary info (ZK proofs)", 1, 1, (env.monotonic() - started).as_secs());
    progress_done();
    Ok(())
}

impl Signers {
    /// Process ids of the nodes, in node order.
    pub fn pids(&self) -> Vec<String> {
        match self.nodes.lock() {
            Ok(nodes) => nodes
                .iter()
                .filter_map(|n| n.child.as_ref().and_then(|c| c.id()))
                .map(|p| p.to_string())
                .collect(),
            Err(_) => Vec::new(),
        }
    }

    /// The runtime's `[signers]` for these nodes.
    pub fn settings(&self) -> strongroom_runtime::settings::SignersSettings {
        strongroom_runtime::settings::SignersSettings {
            cert: self.file.orchestrator_cert.clone(),
            key: self.file.orchestrator_key.clone(),
            nodes: self
                .file
                .nodes
                .iter()
                .map(|(id, addr, pin)| strongroom_runtime::settings::NodeSettings {
                    id: *id,
                    addr: *addr,
                    pin: pin.clone(),
                })
                .collect(),
            presignatures: 2,
            refresh_every_secs: None,
        }
    }

    pub async fn stop(self) {
        self.watch.abort();
        let children: Vec<tokio::process::Child> = match self.nodes.lock() {
            Ok(mut nodes) => nodes.iter_mut().filter_map(|n| n.child.take()).collect(),
            Err(_) => Vec::new(),
        };
        for mut c in children {
            let _ = c.kill().await;
        }
    }
}

/// The intent a dev raw-message request carries: nothing moves (amount and fee cap zero).
/// Which nodes an `mpc` command talks to: a `serve` configuration's `[signers]`, or a dev
/// stack's cluster.
#[derive(Debug, Clone, clap::Args)]
pub struct NodesArgs {
    /// A `serve` configuration: the nodes and orchestrator certificate of its `[signers]`.
    #[arg(long, conflicts_with = "data_dir")]
    config: Option<PathBuf>,
    /// A dev stack's data folder.
    #[arg(long, default_value = crate::DEV_DATA_DIR)]
    data_dir: PathBuf,
}

impl NodesArgs {
    fn orchestrator(&self) -> anyhow::Result<Orchestrator> {
        match &self.config {
            Some(path) => {
                let s = strongroom_runtime::Settings::load(path, std::env::vars())?;
                let signers = s
                    .signers
                    .as_ref()
                    .with_context(|| format!("{}: no [signers]", path.display()))?;
                Ok(strongroom_runtime::signing::orchestrator(signers)?)
            }
            None => ClusterFile::load(&crate::absolute(&self.data_dir)?)?.orchestrator(),
        }
    }

    /// The stored governance log (nodes keep what extends their own copy).
    async fn governance(&self) -> anyhow::Result<Vec<strongroom_governance::log::Entry>> {
        let url = match &self.config {
            Some(path) => strongroom_runtime::Settings::load(path, std::env::vars())?.database_url,
            None => strongroom_runtime::Settings::sqlite_url(&crate::absolute(&self.data_dir)?),
        };
        let store =
            strongroom_store::SqlStore::connect(&url, strongroom_store::sql_options(1)).await?;
        Ok(store.governance().await?.entries)
    }
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum SchemeArg {
    /// Threshold ECDSA (CGGMP21) on secp256k1: Ethereum, Bitcoin P2WPKH.
    Ecdsa,
    /// FROST BIP-340 Schnorr: Bitcoin Taproot.
    FrostTaproot,
    /// FROST Ed25519.
    FrostEd25519,
}

#[derive(Debug, Subcommand)]
pub enum MpcCommand {
    /// Each node's keys, presignature pool and readiness.
    Status {
        #[command(flatten)]
        nodes: NodesArgs,
    },
    /// Auxiliary info for threshold ECDSA (once per node set, before the first ECDSA key):
    /// waits until every node has its Paillier primes, then runs the protocol.
    AuxInfo {
        #[command(flatten)]
        nodes: NodesArgs,
    },
    /// Generate a threshold key across the nodes (the key ceremony): no node ever holds
    /// the whole key. Refused if the key id exists.
    Keygen {
        #[command(flatten)]
        nodes: NodesArgs,
        /// Key id, e.g. hot-eth-1: the wallet name `[[chains]] hot_wallet` uses.
        #[arg(long)]
        key: String,
        /// The threshold signature scheme (which chains the key serves).
        #[arg(long, value_enum)]
        scheme: SchemeArg,
        /// How many nodes must sign.
        #[arg(long)]
        threshold: u16,
    },
    /// Refresh a FROST key's shares (same group key, new shares; old ones useless). Nodes
    /// governance quarantined are left out: their shares stop counting.
    Refresh {
        #[command(flatten)]
        nodes: NodesArgs,
        /// Key id, e.g. hot-btc-1.
        #[arg(long)]
        key: String,
    },
    /// Rebuild a node's lost share of a FROST key from the others (none of them learns it),
    /// or enrol a new node: with `--node` a party of the key, its share is rebuilt; with a
    /// node outside the key, every party helps it join (after quarantining a node, refresh
    /// first). The node must hold no copy of the key.
    Repair {
        #[command(flatten)]
        nodes: NodesArgs,
        /// Key id, e.g. hot-btc-1.
        #[arg(long)]
        key: String,
        /// The node whose share is rebuilt, or which joins.
        #[arg(long)]
        node: u16,
    },
    /// Prove control of a key: the nodes build a statement naming the key and your
    /// challenge, and sign its tagged hash (nodes never sign bytes or digests a caller
    /// supplies; under governance the policy must list `proof_of_control` in `messages`).
    Prove {
        #[command(flatten)]
        nodes: NodesArgs,
        /// Key id, e.g. hot-eth-1 (ECDSA) or hot-btc-1 (FROST Taproot).
        #[arg(long)]
        key: String,
        /// The verifier's challenge, 16 to 64 bytes in hex.
        #[arg(long)]
        challenge: String,
        /// Which nodes sign, e.g. 1,2 (default: the first two that answer).
        #[arg(long, value_delimiter = ',')]
        signers: Vec<u16>,
    },
}

/// `strongroom signer …` besides running a node.
#[derive(Debug, Subcommand)]
pub enum SignerCommand {
    /// Seal a backup of this node (its key shares, auxiliary info, certificate and key, and
    /// the governance, journal and audit state it decides with) under a passphrase, or to a
    /// quorum of recovery keys (`--recovery-key` for each holder, `--quorum K`). Take it with
    /// the node stopped. Presignatures are never backed up.
    Backup {
        /// The node's configuration (signer.toml).
        #[arg(long)]
        config: PathBuf,
        /// Where to write the sealed backup (mode 0600).
        #[arg(long)]
        out: PathBuf,
        /// The environment variable holding the passphrase (at least 12 characters).
        #[arg(long, default_value = "STRONGROOM_BACKUP_PASSPHRASE")]
        passphrase_env: String,
        /// Seal to recovery keys instead of a passphrase: a holder's public key (hex, from
        /// `strongroom signer recovery-key`); repeat for each holder.
        #[arg(long = "recovery-key", requires = "quorum")]
        recovery_keys: Vec<String>,
        /// How many of the recovery keys' holders open it together.
        #[arg(long, requires = "recovery_keys")]
        quorum: Option<usize>,
    },
    /// Make a recovery key for sealed backups: the secret half goes to FILE (mode 0600) for
    /// its holder to keep offline; the public half is printed, for `backup --recovery-key`.
    RecoveryKey {
        /// Where the secret half is written.
        #[arg(long)]
        out: PathBuf,
    },
    /// Restore a sealed backup onto a fresh host: the shares are re-sealed under this host's
    /// key-encryption key (its signer.toml names it) and the same certificate is put back, so
    /// the other nodes' pins accept it. Refused for another node or a folder that holds keys.
    Restore {
        /// The node's configuration on the new host (same id; its own KEK).
        #[arg(long)]
        config: PathBuf,
        /// The sealed backup.
        #[arg(long)]
        backup: PathBuf,
        /// A recovery key holder's secret file, for a backup sealed to recovery keys; repeat
        /// for as many holders as its quorum needs.
        #[arg(long = "recovery-secret")]
        recovery_secrets: Vec<PathBuf>,
        /// The environment variable holding the passphrase.
        #[arg(long, default_value = "STRONGROOM_BACKUP_PASSPHRASE")]
        passphrase_env: String,
    },
    /// Set up a node on its own host: its folder, a self-signed certificate (trust is its
    /// pin, printed), a key-encryption key (DIR/kek, mode 0600, unless --kek-env), and
    /// DIR/signer.toml. Run it first to get the pin to give the other nodes and the API host;
    /// run it again with their pins and the governance folder. Keys are kept across runs.
    Init {
        /// The node's folder, e.g. /var/lib/strongroom-signer.
        #[arg(long)]
        dir: PathBuf,
        /// The node's party number (1..=n), unique in the set.
        #[arg(long)]
        id: u16,
        /// Where it listens for its peers and the orchestrator (mutual TLS).
        #[arg(long)]
        listen: std::net::SocketAddr,
        /// Another name or address for the certificate (repeatable).
        #[arg(long)]
        host: Vec<String>,
        /// Another node: ID@HOST:PORT#PIN (repeatable).
        #[arg(long = "peer")]
        peers: Vec<String>,
        /// The orchestrator's certificate pin (the API host's `[signers] cert`; repeatable).
        #[arg(long = "orchestrator")]
        orchestrators: Vec<String>,
        /// A member's pusher certificate pin (`governance push`; repeatable).
        #[arg(long = "pusher")]
        pushers: Vec<String>,
        /// The governance folder `strongroom governance init` wrote: its genesis is pinned.
        #[arg(long)]
        governance: Option<PathBuf>,
        /// Read the key-encryption key from this environment variable (64 hex digits)
        /// instead of DIR/kek.
        #[arg(long)]
        kek_env: Option<String>,
        /// Serve health and Prometheus metrics here (plain HTTP; loopback).
        #[arg(long)]
        metrics_listen: Option<std::net::SocketAddr>,
        /// TEST ONLY: pregenerated public Paillier primes.
        #[arg(long, hide = true)]
        test_primes: Option<PathBuf>,
    },
}

/// The backup passphrase from the environment variable named.
fn backup_passphrase(var: &str) -> anyhow::Result<strongroom_crypto::SecretString> {
    let p = std::env::var(var).with_context(|| {
        format!("set ${var} to the backup's passphrase (at least 12 characters)")
    })?;
    Ok(strongroom_crypto::SecretString::new(p))
}

fn node_config(path: &std::path::Path) -> anyhow::Result<strongroom_signer::Config> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("{}", path.display()))
}

/// `strongroom signer init|backup|restore`.
pub fn signer(cmd: SignerCommand, output: Output) -> anyhow::Result<Exit> {
    match cmd {
        SignerCommand::RecoveryKey { out } => {
            let env = SystemEnv::new();
            let secret = strongroom_crypto::recovery::RecoverySecret::generate(&env);
            crate::write_secret(&out, &secret.to_hex())?;
            let public = secret.public().to_hex();
            output
                .print(&public, serde_json::json!({ "public_key": public, "secret_file": out }))?;
            eprintln!(
                "the secret half is in {} (keep it offline); give the line above to whoever takes backups",
                out.display()
            );
            Ok(Exit::Ok)
        }
        SignerCommand::Backup { config, out, passphrase_env, recovery_keys, quorum } => {
            use strongroom_signer::backup::Sealing;
            let cfg = node_config(&config)?;
            let kek = strongroom_signer::node::load_kek(&cfg)?;
            let holders = recovery_keys
                .iter()
                .map(|k| strongroom_crypto::recovery::RecoveryPublic::parse(k))
                .collect::<Result<Vec<_>, _>>()?;
            let pass;
            let sealing = match quorum {
                Some(k) => Sealing::Quorum { holders: &holders, k },
                None => {
                    pass = backup_passphrase(&passphrase_env)?;
                    Sealing::Passphrase(&pass)
                }
            };
            let (sealed, summary) =
                strongroom_signer::backup::export(&cfg, kek, sealing, &SystemEnv::new())?;
            crate::write_secret(&out, &sealed)?;
            let keys: Vec<&str> = summary.keys.iter().map(|k| k.key_id.as_str()).collect();
            output.print(
                &format!(
                    "node {}: {} keys ({}){} sealed {} in {}",
                    summary.node,
                    keys.len(),
                    keys.join(", "),
                    if summary.aux { " and its auxiliary info" } else { "" },
                    match quorum {
                        Some(k) => format!("to {k} of {} recovery keys", holders.len()),
                        None => "under the passphrase".to_owned(),
                    },
                    out.display()
                ),
                serde_json::json!({
                    "node": summary.node, "keys": keys, "aux_info": summary.aux, "out": out,
                    "sealed_to": match quorum {
                        Some(k) => {
                            serde_json::json!({ "recovery_keys": holders.len(), "quorum": k })
                        }
                        None => serde_json::json!("passphrase"),
                    },
                }),
            )?;
            Ok(Exit::Ok)
        }
        SignerCommand::Restore { config, backup, passphrase_env, recovery_secrets } => {
            use strongroom_crypto::recovery::{is_quorum_sealed, RecoverySecret};
            use strongroom_signer::backup::Unlock;
            let cfg = node_config(&config)?;
            let sealed = std::fs::read_to_string(&backup)
                .with_context(|| format!("reading {}", backup.display()))?;
            let kek = strongroom_signer::node::load_kek(&cfg)?;
            let (pass, secrets);
            let unlock = if is_quorum_sealed(&sealed) {
                anyhow::ensure!(
                    !recovery_secrets.is_empty(),
                    "{} is sealed to recovery keys: give their holders' --recovery-secret files",
                    backup.display()
                );
                secrets = recovery_secrets
                    .iter()
                    .map(|f| {
                        let text = zeroize::Zeroizing::new(
                            std::fs::read_to_string(f)
                                .with_context(|| format!("reading {}", f.display()))?,
                        );
                        Ok(RecoverySecret::from_hex(&text)?)
                    })
                    .collect::<anyhow::Result<Vec<_>>>()?;
                Unlock::Recovery(&secrets)
            } else {
                pass = backup_passphrase(&passphrase_env)?;
                Unlock::Passphrase(&pass)
            };
            let summary =
                strongroom_signer::backup::restore(&cfg, kek, &sealed, unlock, &SystemEnv::new())?;
            let keys: Vec<&str> = summary.keys.iter().map(|k| k.key_id.as_str()).collect();
            output.print(
                &format!(
                    "node {} restored: {} keys ({}) sealed under this host's key; start it with `strongroom signer --config {}`",
                    summary.node,
                    keys.len(),
                    keys.join(", "),
                    config.display()
                ),
                serde_json::json!({ "node": summary.node, "keys": keys, "config": config }),
            )?;
            Ok(Exit::Ok)
        }
        SignerCommand::Init {
            dir,
            id,
            listen,
            host,
            peers,
            orchestrators,
            pushers,
            governance,
            kek_env,
            metrics_listen,
            test_primes,
        } => {
            let env = SystemEnv::new();
            let opts = strongroom_signer::provision::InitOptions {
                dir,
                id,
                listen,
                hosts: host,
                peers: peers
                    .iter()
                    .map(|p| strongroom_signer::provision::parse_peer(p))
                    .collect::<anyhow::Result<_>>()?,
                orchestrators: orchestrators.iter().map(|p| p.to_lowercase()).collect(),
                pushers: pushers.iter().map(|p| p.to_lowercase()).collect(),
                governance,
                kek_env,
                metrics_listen,
                test_primes_file: test_primes,
            };
            let done = strongroom_signer::provision::init(&opts, env.now(), &env)?;
            output.print(
                &done.pin,
                serde_json::json!({
                    "pin": done.pin, "config": done.config, "missing": done.missing,
                }),
            )?;
            if done.missing.is_empty() {
                eprintln!(
                    "wrote {}: start the node with `strongroom signer --config {0}`",
                    done.config.display()
                );
            } else {
                eprintln!(
                    "wrote {}; before it can run it needs {}",
                    done.config.display(),
                    done.missing.join(", ")
                );
            }
            Ok(Exit::Ok)
        }
    }
}

/// A key as the live nodes report it (from the first that holds it), and the nodes any of
/// them knows to be quarantined.
async fn key_as_nodes_see_it(
    orch: &strongroom_signer::Orchestrator,
    key: &str,
) -> anyhow::Result<(strongroom_signer::wire::KeyInfo, Vec<u16>)> {
    let mut statuses = Vec::new();
    for n in orch.live_nodes().await {
        if let Ok(status) = orch.status(n).await {
            statuses.push(status);
        }
    }
    let quarantined: std::collections::BTreeSet<u16> =
        statuses.iter().flat_map(|s| s.quarantined.iter().copied()).collect();
    // A quarantined node's word on the key counts for nothing.
    let info = statuses
        .into_iter()
        .filter(|s| !quarantined.contains(&s.node))
        .find_map(|s| s.keys.into_iter().find(|k| k.key_id == key))
        .with_context(|| format!("no live signer node holds {key}"))?;
    Ok((info, quarantined.into_iter().collect()))
}

pub async fn mpc(cmd: MpcCommand, output: Output) -> anyhow::Result<Exit> {
    let env = SystemEnv::new();
    match cmd {
        // Text: one JSON object a line, a node each. JSON: one array of them.
        MpcCommand::Status { nodes } => {
            let orch = nodes.orchestrator()?;
            let mut all = Vec::new();
            for n in orch.node_ids() {
                let (line, status) = match orch.status(n).await {
                    Ok(s) => (serde_json::to_string(&s)?, serde_json::to_value(&s)?),
                    Err(e) => {
                        let v = serde_json::json!({ "node": n, "error": e.to_string() });
                        (v.to_string(), v)
                    }
                };
                if !output.is_json() {
                    println!("{line}");
                }
                all.push(status);
            }
            if output.is_json() {
                Output::print_json(&serde_json::Value::Array(all))?;
            }
            Ok(Exit::Ok)
        }
        MpcCommand::AuxInfo { nodes } => {
            let orch = nodes.orchestrator()?;
            // For the nodes a new key would be made among (a quarantined one is left out).
            let parties = key_parties(&orch).await;
            aux_info(&orch, &env, &parties).await?;
            output.print(
                &format!("auxiliary info ready on nodes {parties:?}"),
                serde_json::json!({ "aux_info": true, "nodes": parties }),
            )?;
            Ok(Exit::Ok)
        }
        MpcCommand::Keygen { nodes, key, scheme, threshold } => {
            let orch = nodes.orchestrator()?;
            // A node governance quarantined takes part in no new key.
            let parties = key_parties(&orch).await;
            let live: Vec<u16> =
                orch.live_nodes().await.into_iter().filter(|n| parties.contains(n)).collect();
            anyhow::ensure!(
                live.len() == parties.len(),
                "every node must be up for a key ceremony: {} of {} answer",
                live.len(),
                parties.len()
            );
            anyhow::ensure!(
                threshold >= 2 && usize::from(threshold) <= parties.len(),
                "the threshold must be at least 2 and at most the {} nodes",
                parties.len()
            );
            let scheme = match scheme {
                SchemeArg::Ecdsa => Scheme::Ecdsa,
                SchemeArg::FrostTaproot => Scheme::FrostTaproot,
                SchemeArg::FrostEd25519 => Scheme::FrostEd25519,
            };
            let info = orch
                .keygen(eid(&env, "keygen"), &key, scheme, &parties, threshold)
                .await
                .map_err(|e| anyhow::anyhow!("key generation for {key}: {e}"))?;
            // JSON already: one line in text, the document in JSON.
            output.print(&serde_json::to_string(&info)?, serde_json::to_value(&info)?)?;
            Ok(Exit::Ok)
        }
        MpcCommand::Refresh { nodes, key } => {
            let orch = nodes.orchestrator()?;
            let (info, quarantined) = key_as_nodes_see_it(&orch, &key).await?;
            let parties: Vec<u16> =
                info.parties.iter().copied().filter(|p| !quarantined.contains(p)).collect();
            let now = orch
                .refresh(eid(&env, "refresh"), &info, &parties)
                .await
                .map_err(|e| anyhow::anyhow!("refreshing {key}: {e}"))?;
            let left: Vec<u16> =
                info.parties.iter().copied().filter(|p| !now.parties.contains(p)).collect();
            output.print(
                &format!(
                    "{key}: shares refreshed on nodes {:?}{}; the group key is unchanged",
                    now.parties,
                    if left.is_empty() {
                        String::new()
                    } else {
                        format!(" (quarantined node {left:?} left out: its share no longer signs)")
                    }
                ),
                serde_json::json!({ "key": key, "parties": now.parties, "left_out": left }),
            )?;
            Ok(Exit::Ok)
        }
        MpcCommand::Repair { nodes, key, node } => {
            let orch = nodes.orchestrator()?;
            let (info, quarantined) = key_as_nodes_see_it(&orch, &key).await?;
            anyhow::ensure!(
                !quarantined.contains(&node),
                "node {node} is quarantined: it never rejoins (enrol a new node instead)"
            );
            let now = if info.parties.contains(&node) {
                let helpers: Vec<u16> = info
                    .parties
                    .iter()
                    .copied()
                    .filter(|p| *p != node && !quarantined.contains(p))
                    .take(usize::from(info.threshold))
                    .collect();
                orch.repair(eid(&env, "repair"), &info, &helpers, node)
                    .await
                    .map_err(|e| anyhow::anyhow!("repairing node {node}'s share of {key}: {e}"))?
            } else {
                orch.enrol(eid(&env, "enrol"), &info, node)
                    .await
                    .map_err(|e| anyhow::anyhow!("enrolling node {node} into {key}: {e}"))?
            };
            output.print(
                &format!("{key}: node {node} holds its share; parties {:?}", now.parties),
                serde_json::json!({ "key": key, "node": node, "parties": now.parties }),
            )?;
            Ok(Exit::Ok)
        }
        MpcCommand::Prove { nodes, key, challenge, signers } => {
            let orch = nodes.orchestrator()?;
            // Nodes learn the governance log with requests: carry the stored one (each node
            // verifies it against its pin and keeps what extends its own copy).
            let governance = nodes.governance().await?;
            let live = orch.live_nodes().await;
            let signers =
                if signers.is_empty() { live.iter().copied().take(2).collect() } else { signers };
            let first = *signers.first().context("no live signer nodes")?;
            let status = orch.status(first).await.map_err(|e| anyhow::anyhow!("{e}"))?;
            let info = status.keys.into_iter().find(|k| k.key_id == key).context("no such key")?;
            let challenge_bytes = hex::decode(&challenge).context("the challenge is not hex")?;
            let req = SignRequest {
                format: TxFormat::ProofOfControl,
                tx: challenge,
                governance,
                ..Default::default()
            };
            let signed = orch
                .sign_pooled(&env, &info, &signers, &req)
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            let proof = serde_json::json!({
                "key": key,
                "scheme": info.scheme,
                "signers": signed.signers,
                "public_key": hex::encode(&signed.public_key),
                "statement": strongroom_signer::check::proof_of_control(&info, &challenge_bytes),
                "signed": hex::encode(&signed.signed_bytes),
                "signature": hex::encode(&signed.signature),
            });
            // JSON already: one line in text, the document in JSON.
            output.print(&proof.to_string(), proof)?;
            Ok(Exit::Ok)
        }
    }
}

impl Drop for Signers {
    fn drop(&mut self) {
        // The watcher owns the last handles on the processes: they die with it.
        self.watch.abort();
    }
}
