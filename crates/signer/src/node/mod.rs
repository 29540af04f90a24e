//! One signer node: a TLS listener for peers and orchestrators, one outbound link per peer,
//! and one OS thread per protocol session (the sans-IO state machines are CPU-bound and
//! not `Send`; the thread owns the session and is fed through a channel).
//!
//! Message routing: a frame from a peer is delivered to the session with its execution id.
//! A frame for a session that has not started here yet is held briefly (peers start at
//! slightly different times); a frame for a session that already ended is a replay and is
//! refused and logged. The sender written in a frame must be the node its TLS certificate
//! pins, or the frame is dropped and the connection closed.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::{mpsc as stdmpsc, Arc, Mutex};
use std::time::Duration;

use strongroom_core::{Env, Intent};
use strongroom_mpc::frost::{self, Ed25519, Secp256k1Taproot};
use strongroom_mpc::{ecdsa, EnvRng, Envelope, ExecutionId, MpcError};
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;

use crate::check::{self, CheckContext, PreSignCheck, TxMatchesIntent};
use crate::mesh::{Exchange, Mesh};
use crate::tls::{self, Credentials, Identity, Pins};
use crate::vault::{Vault, VaultError};
use crate::wire::{
    self, eid_hex, parse_eid, Control, Frame, KeyInfo, NodeStatus, Proto, Reason, Refusal, Reply,
    Request, Scheme, SignRequest,
};

mod config;
mod sessions;
mod transport;

pub use config::{Config, MeshConfig, PeerConfig, Timeouts};

/// What a session thread receives.
enum Inbound {
    Msg(Envelope<Vec<u8>>),
    Abort { from: u16, reason: String },
}

/// Held messages for sessions not started yet: at most this many sessions, this many each.
const MAX_PENDING_SESSIONS: usize = 256;
const MAX_PENDING_MESSAGES: usize = 256;
/// Ended sessions remembered for replay detection.
const MAX_FINISHED: usize = 100_000;

#[derive(Default)]
struct Routing {
    sessions: HashMap<ExecutionId, stdmpsc::Sender<Inbound>>,
    pending: HashMap<ExecutionId, Vec<Inbound>>,
    finished: HashSet<ExecutionId>,
    finished_order: VecDeque<ExecutionId>,
    /// Why the orchestrator ended a session (it may do so before the request that would
    /// have started it here arrives).
    aborted: HashMap<ExecutionId, String>,
}

pub struct Node {
    cfg: Config,
    env: Arc<dyn Env + Send + Sync>,
    vault: Vault,
    creds: Credentials,
    routing: Mutex<Routing>,
    links: Mutex<HashMap<u16, mpsc::UnboundedSender<Frame>>>,
    checks: Vec<Box<dyn PreSignCheck>>,
    governance: Option<Arc<crate::governance::NodeGovernance>>,
    mesh: Option<Arc<Mesh>>,
    journal: crate::journal::Journal,
    log: crate::nodelog::NodeLog,
    /// Serializes uses of the prime pool.
    primes_lock: Mutex<()>,
    /// Set on shutdown: no new session starts; running ones finish.
    draining: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node").field("id", &self.cfg.id).finish_non_exhaustive()
    }
}

fn bad_request(node: u16, detail: impl Into<String>) -> Refusal {
    Refusal::new(node, Reason::BadRequest { detail: detail.into() })
}

fn internal(node: u16, detail: impl Into<String>) -> Refusal {
    Refusal::new(node, Reason::Internal { detail: detail.into() })
}

fn not_found(node: u16, what: impl Into<String>) -> Refusal {
    Refusal::new(node, Reason::NotFound { what: what.into() })
}

fn culprit(node: u16, detail: impl Into<String>) -> Refusal {
    Refusal::new(node, Reason::Culprit { detail: detail.into() })
}

fn from_mpc(node: u16, e: MpcError) -> Refusal {
    match e {
        MpcError::Misbehaved { culprits, reason } => {
            Refusal { node, reason: Reason::Culprit { detail: reason }, culprits }
        }
        MpcError::Parameters(m) => bad_request(node, m),
        other => culprit(node, other.to_string()),
    }
}

fn from_vault(node: u16, e: VaultError) -> Refusal {
    match e {
        VaultError::NotFound(m) => not_found(node, m),
        VaultError::Invalid(m) => bad_request(node, m),
        other => internal(node, other.to_string()),
    }
}

/// Load the KEK named by the config.
pub fn load_kek(
    cfg: &Config,
) -> anyhow::Result<Box<dyn strongroom_crypto::seal::KeyEncryptionKey>> {
    use strongroom_crypto::seal::SoftwareKek;
    match (&cfg.kek_file, &cfg.kek_env, &cfg.kek_pkcs11) {
        (Some(p), None, None) => Ok(Box::new(SoftwareKek::from_file(p)?)),
        (None, Some(v), None) => Ok(Box::new(SoftwareKek::from_env_var(v)?)),
        (None, None, Some(p)) => Ok(Box::new(strongroom_hsm::Pkcs11Kek::open(p)?)),
        _ => anyhow::bail!("set exactly one of kek_file, kek_env and kek_pkcs11"),
    }
}

impl Node {
    pub fn new(cfg: Config, env: Arc<dyn Env + Send + Sync>) -> anyhow::Result<Arc<Node>> {
        anyhow::ensure!(cfg.id >= 1, "node id must be at least 1");
        let kek = load_kek(&cfg)?;
        let vault = Vault::open(&cfg.data_dir, cfg.id, kek)?;
        let log = crate::nodelog::NodeLog::open(&cfg.data_dir.join("audit.jsonl"), cfg.id)?;
        let creds = Credentials::load(&cfg.cert, &cfg.key)?;
        let governance = match (&cfg.governance_genesis, &cfg.governance_pin) {
            (Some(g), Some(pin)) => Some(Arc::new(crate::governance::NodeGovernance::open(
                cfg.id,
                g,
                pin,
                &cfg.data_dir,
                env.now(),
            )?)),
            (None, None) if cfg.insecure_no_governance => {
                tracing::warn!(
                    node = cfg.id,
                    "INSECURE: no governance genesis is pinned; this node signs whatever matches \
                     the orchestrator's intent (insecure_no_governance = true, development only)"
                );
                None
            }
            (None, None) => anyhow::bail!(
                "no governance genesis is pinned: a node without one would sign whatever the \
                 orchestrator asks. Set governance_genesis and governance_pin (see `strongroom \
                 governance init`), or insecure_no_governance = true for development"
            ),
            _ => anyhow::bail!("set both governance_genesis and governance_pin, or neither"),
        };
        anyhow::ensure!(
            governance.is_none() || !cfg.insecure_no_governance,
            "insecure_no_governance = true and a governance genesis: choose one"
        );
        let journal = crate::journal::Journal::open(&cfg.data_dir.join("journal.jsonl"), cfg.id)?;
        let mut checks: Vec<Box<dyn PreSignCheck>> = vec![Box::new(TxMatchesIntent)];
        if let Some(gov) = &governance {
            checks.push(Box::new(crate::governance::GovernanceCheck { gov: gov.clone() }));
        }
        let mesh = match &governance {
            Some(gov) => Some(Arc::new(Mesh::new(
                cfg.id,
                cfg.peers.clone(),
                Credentials::load(&cfg.cert, &cfg.key)?,
                gov.clone(),
                env.clone(),
                Duration::from_millis(cfg.mesh.timeout_ms),
            ))),
            None => None,
        };
        let node = Arc::new(Node {
            cfg,
            env,
            vault,
            creds,
            routing: Mutex::new(Routing::default()),
            links: Mutex::new(HashMap::new()),
            checks,
            governance,
            mesh,
            journal,
            log,
            primes_lock: Mutex::new(()),
            draining: std::sync::atomic::AtomicBool::new(false),
        });
        node.load_test_primes()?;
        node.enforce_quarantine();
        Ok(node)
    }

    pub fn id(&self) -> u16 {
        self.cfg.id
    }

    /// Append to this node's own audit log. A failure to record is logged loudly; the
    /// caller decides whether the action may stand without it.
    fn audit(&self, action: &str, subject: &str, detail: serde_json::Value) -> Result<(), Refusal> {
        self.log.append(self.env.now().unix_ms(), action, subject, detail).map_err(|e| {
            tracing::error!(node = self.cfg.id, error = %e, action, "could not write the node audit log");
            internal(self.cfg.id, format!("audit log: {e}"))
        })
    }

    fn load_test_primes(&self) -> anyhow::Result<()> {
        let Some(path) = &self.cfg.test_primes_file else { return Ok(()) };
        if self.vault.has_aux() || self.vault.primes_count() > 0 {
            return Ok(());
        }
        let all: Vec<serde_json::Value> = serde_json::from_slice(&std::fs::read(path)?)?;
        let mine = all.get(usize::from(self.cfg.id - 1)).ok_or_else(|| {
            anyhow::anyhow!("{}: no primes for node {}", path.display(), self.cfg.id)
        })?;
        tracing::warn!(
            node = self.cfg.id,
            "using TEST-ONLY pregenerated primes; never for real keys"
        );
        self.vault.put_primes("test", &serde_json::to_vec(mine)?, self.env.as_ref())?;
        Ok(())
    }

    /// Keep `primes_pool` sets of primes ready, generating them on a background thread.
    fn spawn_prime_generator(self: &Arc<Self>) {
        let node = self.clone();
        std::thread::spawn(move || loop {
            if node.vault.has_aux() || node.vault.primes_count() >= node.cfg.primes_pool {
                return;
            }
            tracing::info!(node = node.cfg.id, "generating Paillier primes (takes a while)");
            let mut rng = EnvRng(node.env.as_ref());
            let primes = ecdsa::generate_primes(&mut rng);
            let json = match serde_json::to_vec(&primes) {
                Ok(j) => zeroize::Zeroizing::new(j),
                Err(_) => return,
            };
            let mut id = [0u8; 8];
            node.env.fill_random(&mut id);
            if let Err(e) = node.vault.put_primes(&hex::encode(id), &json, node.env.as_ref()) {
                tracing::error!(error = %e, "could not store primes");
                return;
            }
            tracing::info!(node = node.cfg.id, "primes ready");
        });
    }

    fn pins(&self) -> Pins {
        let mut pins = Pins::new();
        for p in &self.cfg.peers {
            pins.insert(p.cert_sha256.to_lowercase(), Identity::Node(p.id));
        }
        for o in &self.cfg.orchestrators {
            pins.insert(o.to_lowercase(), Identity::Orchestrator);
        }
        // A pusher's certificate never stands for a node or an orchestrator.
        for p in &self.cfg.pushers {
            pins.entry(p.to_lowercase()).or_insert(Identity::Pusher);
        }
        pins
    }

    /// Exchange heads and records with every peer now and then, so that a freeze pushed to
    /// one node reaches all of them within seconds whatever the orchestrator does.
    fn spawn_mesh(self: &Arc<Self>) {
        let Some(mesh) = self.mesh.clone() else { return };
        let node = self.clone();
        let every = Duration::from_millis(self.cfg.mesh.interval_ms.max(100));
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                let exchanges = mesh.exchange_all(None).await;
                node.note_exchanges(&exchanges);
            }
        });
    }

    /// Log what an exchange brought; audit new governance and refused entries.
    fn note_exchanges(&self, exchanges: &[Exchange]) {
        let me = self.cfg.id;
        for x in exchanges {
            match x {
                Exchange::Heard { peer, peer_head, grew, records } => {
                    if *grew {
                        self.enforce_quarantine();
                        let head = self.mesh.as_ref().and_then(|m| m.governance().head().ok());
                        tracing::info!(node = me, peer, ?head, "governance learnt from a peer");
                        let _ = self.audit(
                            "governance.learnt",
                            &format!("node/{peer}"),
                            serde_json::json!({"from": peer, "head": head, "peer_head": peer_head}),
                        );
                    }
                    if *records > 0 {
                        tracing::debug!(node = me, peer, records, "velocity records from a peer");
                    }
                }
                Exchange::Refused { peer, reason } => {
                    tracing::warn!(node = me, peer, %reason, "a peer's governance entries refused");
                    let _ = self.audit(
                        "mesh.refused",
                        &format!("node/{peer}"),
                        serde_json::json!({"from": peer, "refusal": Refusal::new(me, reason.clone())}),
                    );
                }
                Exchange::Unreachable { peer, detail } => {
                    tracing::debug!(node = me, peer, %detail, "peer unreachable over the mesh");
                }
            }
        }
    }

    /// What the node holds and how ready it is (no key material).
    pub fn status(&self) -> NodeStatus {
        NodeStatus {
            node: self.cfg.id,
            aux_ready: self.vault.has_aux(),
            primes_ready: self.vault.primes_count(),
            keys: self.vault.keys(),
            presignatures: self.vault.presigs(),
            governance: self.governance.as_ref().and_then(|g| g.head().ok()),
            quarantined: self
                .governance
                .as_ref()
                .and_then(|g| g.quarantined().ok())
                .unwrap_or_default(),
        }
    }

    /// Refuse a session or message that involves a node governance quarantined (audited).
    pub(crate) fn refuse_quarantined(&self, parties: &[u16]) -> Result<(), Refusal> {
        let Some(gov) = &self.governance else { return Ok(()) };
        gov.refuse_quarantined(parties).map_err(|reason| {
            let r = Refusal::new(self.cfg.id, reason);
            tracing::warn!(node = self.cfg.id, ?parties, reason = %r.reason, "quarantined node refused");
            let _ = self.audit(
                "session.refused",
                "session",
                serde_json::json!({"parties": parties, "refusal": r}),
            );
            r
        })
    }

    /// Discard every presignature made with a quarantined node (its half is in hands no
    /// longer trusted). Run at start and whenever governance grows.
    pub(crate) fn enforce_quarantine(&self) {
        let Some(gov) = &self.governance else { return };
        for node in gov.quarantined().unwrap_or_default() {
            match self.vault.discard_presigs_with(node) {
                Ok(0) => {}
                Ok(gone) => {
                    tracing::warn!(
                        node = self.cfg.id,
                        quarantined = node,
                        gone,
                        "presignatures with a quarantined node discarded"
                    );
                    let _ = self.audit(
                        "presig.discarded",
                        &format!("node/{node}"),
                        serde_json::json!({"quarantined": node, "discarded": gone}),
                    );
                }
                Err(e) => {
                    tracing::error!(node = self.cfg.id, error = %e, "could not discard presignatures")
                }
            }
        }
    }

    /// Whether the node is finishing its sessions before it stops.
    pub fn is_draining(&self) -> bool {
        self.draining.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Stop taking new sessions and wait (at most `within`) for those running to end, so a
    /// restart or a host shutdown never cuts a signing session in half. Returns whether every
    /// session ended.
    pub async fn drain(&self, within: Duration) -> bool {
        use std::sync::atomic::Ordering;
        self.draining.store(true, Ordering::Release);
        let running = || self.routing.lock().map(|r| r.sessions.len()).unwrap_or(0);
        let _ = tokio::time::timeout(within, async {
            while running() > 0 {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await;
        let left = running();
        let _ = self.audit("node.stopped", "node", serde_json::json!({"sessions_cut": left}));
        if left == 0 {
            tracing::info!(node = self.cfg.id, "drained: no session running; stopping");
        } else {
            tracing::warn!(node = self.cfg.id, left, "stopping with sessions still running");
        }
        left == 0
    }

    pub async fn handle(self: &Arc<Self>, req: Request) -> Result<Reply, Refusal> {
        let me = self.cfg.id;
        let starts_work = matches!(
            req,
            Request::AuxInfo { .. }
                | Request::Keygen { .. }
                | Request::Presign { .. }
                | Request::Sign { .. }
                | Request::Refresh { .. }
                | Request::Repair { .. }
        );
        if starts_work && self.draining.load(std::sync::atomic::Ordering::Acquire) {
            let detail = "the node is shutting down".to_owned();
            return Err(Refusal::new(me, Reason::Unreachable { detail }));
        }
        match req {
            Request::Status => Ok(Reply::Status(self.status())),
            Request::Push { entries } => {
                let gov = self
                    .governance
                    .clone()
                    .ok_or_else(|| bad_request(me, "this node has no governance genesis"))?;
                let before = gov.head().map_err(|r| Refusal::new(me, r))?;
                if let Err(reason) = gov.extend(&entries, self.env.now()) {
                    let r = Refusal::new(me, reason);
                    let _ = self.audit(
                        "governance.push_refused",
                        "governance",
                        serde_json::json!({"entries": entries.len(), "refusal": r}),
                    );
                    return Err(r);
                }
                let head = gov.head().map_err(|r| Refusal::new(me, r))?;
                if head != before {
                    self.enforce_quarantine();
                    self.audit(
                        "governance.pushed",
                        "governance",
                        serde_json::json!({"before": before, "head": head}),
                    )?;
                    tracing::info!(node = me, seq = head.seq, "governance entries pushed");
                    // Tell the peers now: each one's answer makes it ask back for the rest.
                    if let Some(mesh) = self.mesh.clone() {
                        let node = self.clone();
                        tokio::spawn(async move {
                            let x = mesh.exchange_all(None).await;
                            node.note_exchanges(&x);
                        });
                    }
                }
                Ok(Reply::Head(head))
            }
            Request::Mesh { .. } => {
                Err(bad_request(me, "mesh exchanges are between signer nodes only"))
            }
            Request::Abort { eid, reason } => {
                let eid = parse_eid(&eid).map_err(|m| bad_request(me, m))?;
                if let Ok(mut r) = self.routing.lock() {
                    r.aborted.insert(eid, reason.clone());
                }
                self.route(eid, Inbound::Abort { from: 0, reason });
                self.close_session(eid);
                Ok(Reply::Aborted)
            }
            Request::AuxInfo { eid, parties } => {
                let eid = parse_eid(&eid).map_err(|m| bad_request(me, m))?;
                self.blocking(move |node| node.run_aux(eid, parties)).await
            }
            Request::Keygen { eid, key_id, scheme, parties, threshold } => {
                let eid = parse_eid(&eid).map_err(|m| bad_request(me, m))?;
                crate::vault::check_name(&key_id).map_err(|e| from_vault(me, e))?;
                self.blocking(move |node| node.run_keygen(eid, key_id, scheme, parties, threshold))
                    .await
            }
            Request::Presign { eid, key_id, signers } => {
                let eid = parse_eid(&eid).map_err(|m| bad_request(me, m))?;
                self.blocking(move |node| node.run_presign(eid, key_id, signers)).await
            }
            Request::Refresh { eid, key_id, parties } => {
                let eid = parse_eid(&eid).map_err(|m| bad_request(me, m))?;
                self.blocking(move |node| node.run_refresh(eid, key_id, parties)).await
            }
            Request::CommitRefresh { key_id } => {
                let committed =
                    self.vault.commit_next_share(&key_id).map_err(|e| from_vault(me, e))?;
                if committed {
                    let parties =
                        self.vault.key_info(&key_id).map(|k| k.parties).unwrap_or_default();
                    self.audit(
                        "key.refreshed",
                        &format!("key/{key_id}"),
                        serde_json::json!({"parties": parties}),
                    )?;
                    tracing::info!(node = me, key = %key_id, ?parties, "new share is now current; old share destroyed");
                }
                Ok(Reply::Done)
            }
            Request::DiscardRefresh { key_id } => {
                self.vault.discard_next_share(&key_id).map_err(|e| from_vault(me, e))?;
                Ok(Reply::Done)
            }
            Request::Repair { eid, key_id, scheme, helpers, lost } => {
                let eid = parse_eid(&eid).map_err(|m| bad_request(me, m))?;
                crate::vault::check_name(&key_id).map_err(|e| from_vault(me, e))?;
                self.blocking(move |node| match scheme {
                    Scheme::FrostTaproot => {
                        node.run_repair::<Secp256k1Taproot>(eid, key_id, scheme, helpers, lost)
                    }
                    Scheme::FrostEd25519 => {
                        node.run_repair::<Ed25519>(eid, key_id, scheme, helpers, lost)
                    }
                    Scheme::Ecdsa => Err(bad_request(
                        node.id(),
                        "repair is for FROST keys (cggmp21 0.6 has no t-of-n repair or refresh)",
                    )),
                })
                .await
            }
            Request::Sign { eid, key_id, signers, presignature, request } => {
                let eid = parse_eid(&eid).map_err(|m| bad_request(me, m))?;
                self.blocking(move |node| {
                    node.run_sign(eid, key_id, signers, presignature, request)
                })
                .await
            }
        }
    }
}

/// Wait for SIGTERM (systemd, container runtimes) or Ctrl-C.
pub async fn shutdown_signal() -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            _ = term.recv() => {}
            r = tokio::signal::ctrl_c() => r?,
        }
        Ok(())
    }
    #[cfg(not(unix))]
    {
        Ok(tokio::signal::ctrl_c().await?)
    }
}

/// How long a stopping node lets running sessions finish.
pub const DRAIN: Duration = Duration::from_secs(30);

/// JSON logs on stderr, `STRONGROOM_LOG` (or `RUST_LOG`) to filter (default `info`).
pub fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("STRONGROOM_LOG")
        .or_else(|_| EnvFilter::try_from_default_env())
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .json()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}
