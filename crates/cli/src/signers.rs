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

/// The dev keys made on first start.
pub const DEV_KEYS: [(&str, Scheme); 2] =
    [("hot-eth-1", Scheme::Ecdsa), ("hot-btc-1", Scheme::FrostTaproot)];

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
    let bad = || anyhow::anyhow!("{s:?}: a node is ID@HOST:PORT#CERT_SHA256");
    let (id, rest) = s.split_once('@').ok_or_else(bad)?;
    let (addr, pin) = rest.split_once('#').ok_or_else(bad)?;
    let pin = pin.to_lowercase();
    anyhow::ensure!(
        pin.len() == 64 && pin.chars().all(|c| c.is_ascii_hexdigit()),
        "{s:?}: the pin is the certificate's SHA-256 in hex (64 characters)"
    );
    Ok(NodeAddr { id: id.parse().map_err(|_| bad())?, addr: addr.parse()?, cert_sha256: pin })
}

/// Running signer processes; killed when dropped.
#[derive(Debug)]
pub struct Signers {
    children: Vec<tokio::process::Child>,
    refill: Option<tokio::task::JoinHandle<()>>,
    pub keys: Vec<KeyInfo>,
}

/// Keep `target` presignatures of `hot-eth-1` ready for every pair of live nodes.
fn spawn_refill(orch: Orchestrator, target: usize) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let env = SystemEnv::new();
        loop {
            let live = orch.live_nodes().await;
            for (i, a) in live.iter().enumerate() {
                for b in live.iter().skip(i + 1) {
                    match orch.fill_pool(&env, "hot-eth-1", &[*a, *b], target, 1).await {
                        Ok(0) => {}
                        Ok(n) => {
                            tracing::info!(signers = ?[a, b], made = n, "presignature pool refilled")
                        }
                        Err(e) => tracing::warn!(error = %e, "presignature refill failed"),
                    }
                }
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    })
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
    refill: Option<usize>,
    governance: Option<(PathBuf, String)>,
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

    let exe = std::env::current_exe()?;
    let mut children = Vec::new();
    for (config, node) in cl.configs.iter().zip(&cl.nodes) {
        let log = dir.join(format!("signer-{}.log", node.id));
        let child = tokio::process::Command::new(&exe)
            .arg("signer")
            .arg("--config")
            .arg(config)
            .arg("--exit-with-stdin")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting signer {}", node.id))?;
        children.push(child);
    }
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
    let keys = ensure_keys(&orch, &env).await?;
    let refill = match refill {
        Some(target) => Some(spawn_refill(file.orchestrator()?, target)),
        None => None,
    };
    Ok(Signers { children, refill, keys })
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

async fn ensure_keys(orch: &Orchestrator, env: &SystemEnv) -> anyhow::Result<Vec<KeyInfo>> {
    let status = orch.status(1).await.map_err(|e| anyhow::anyhow!("{e}"))?;
    let missing: Vec<_> =
        DEV_KEYS.iter().filter(|(id, _)| !status.keys.iter().any(|k| k.key_id == *id)).collect();
    if !status.aux_ready {
        eprintln!("First start: preparing threshold keys (2-of-3) on the three signer nodes.");
        let start = env.monotonic();
        // Each node finds its Paillier primes in the background; wait for all three.
        loop {
            let mut ready = 0;
            for n in 1..=3 {
                if let Ok(s) = orch.status(n).await {
                    ready += usize::from(s.primes_ready > 0 || s.aux_ready);
                }
            }
            progress("Paillier primes (per node)", ready, 3, (env.monotonic() - start).as_secs());
            if ready == 3 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        progress_done();
        let aux = orch.aux_info(eid(env, "aux"), &[1, 2, 3]);
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

impl Signers {
    /// Process ids of the nodes, in node order.
    pub fn pids(&self) -> Vec<String> {
        self.children.iter().filter_map(|c| c.id()).map(|p| p.to_string()).collect()
    }

    pub async fn stop(mut self) {
        if let Some(r) = self.refill.take() {
            r.abort();
        }
        for c in &mut self.children {
            let _ = c.kill().await;
        }
    }
}

/// The intent a dev raw-message request carries: nothing moves (amount and fee cap zero).
#[derive(Debug, Subcommand)]
pub enum MpcCommand {
    /// Each node's keys, presignature pool and readiness.
    Status {
        #[arg(long, default_value = crate::DEV_DATA_DIR)]
        data_dir: PathBuf,
    },
    /// Prove control of a key: the nodes build a statement naming the key and your
    /// challenge, and sign its tagged hash (nodes never sign bytes or digests a caller
    /// supplies; under governance the policy must list `proof_of_control` in `messages`).
    Prove {
        #[arg(long, default_value = crate::DEV_DATA_DIR)]
        data_dir: PathBuf,
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

pub async fn mpc(cmd: MpcCommand) -> anyhow::Result<std::process::ExitCode> {
    let env = SystemEnv::new();
    match cmd {
        MpcCommand::Status { data_dir } => {
            let orch = ClusterFile::load(&crate::absolute(&data_dir)?)?.orchestrator()?;
            for n in orch.node_ids() {
                match orch.status(n).await {
                    Ok(s) => println!("{}", serde_json::to_string(&s)?),
                    Err(e) => println!("{{\"node\":{n},\"error\":{:?}}}", e.to_string()),
                }
            }
            Ok(std::process::ExitCode::SUCCESS)
        }
        MpcCommand::Prove { data_dir, key, challenge, signers } => {
            let data_dir = crate::absolute(&data_dir)?;
            let orch = ClusterFile::load(&data_dir)?.orchestrator()?;
            // Nodes learn the governance log with requests: carry the stored one (each node
            // verifies it against its pin and keeps what extends its own copy).
            let governance = {
                use strongroom_store::Store;
                let url = crate::config::Config::sqlite_url(&data_dir);
                let store =
                    strongroom_store::SqlStore::connect(&url, strongroom_store::sql_options(1))
                        .await?;
                store.governance().await?.entries
            };
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
            println!(
                "{}",
                serde_json::json!({
                    "key": key,
                    "scheme": info.scheme,
                    "signers": signed.signers,
                    "public_key": hex::encode(&signed.public_key),
                    "statement": strongroom_signer::check::proof_of_control(&info, &challenge_bytes),
                    "signed": hex::encode(&signed.signed_bytes),
                    "signature": hex::encode(&signed.signature),
                })
            );
            Ok(std::process::ExitCode::SUCCESS)
        }
    }
}
