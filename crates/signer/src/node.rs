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
use std::path::PathBuf;
use std::sync::{mpsc as stdmpsc, Arc, Mutex};
use std::time::Duration;

use serde::Deserialize;
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

/// A node's configuration file (TOML).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// This node's party number, 1..=n.
    pub id: u16,
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    /// The other nodes, with the SHA-256 of their certificates.
    pub peers: Vec<PeerConfig>,
    /// Certificate SHA-256s of the orchestrators allowed to send requests.
    pub orchestrators: Vec<String>,
    /// The key-encryption key: a file holding 64 hex characters…
    #[serde(default)]
    pub kek_file: Option<PathBuf>,
    /// …or the name of an environment variable holding them.
    #[serde(default)]
    pub kek_env: Option<String>,
    /// Run with no governance genesis: the node then signs whatever matches the
    /// orchestrator's own intent. For development only; the node says so loudly at start
    /// and at every signature. Without it a node refuses to start unpinned.
    #[serde(default)]
    pub insecure_no_governance: bool,
    /// TEST ONLY: load pregenerated Paillier primes (a JSON list, one per node) instead of
    /// generating them. Committed test primes are public: never use this for real keys.
    #[serde(default)]
    pub test_primes_file: Option<PathBuf>,
    /// Sets of primes to keep ready for auxiliary info (generated in the background).
    #[serde(default = "one")]
    pub primes_pool: usize,
    #[serde(default)]
    pub timeouts: Timeouts,
    /// The governance genesis (JSON) and its hash, pinned: with both set the node signs only
    /// what the policy in force allows, with valid approvals, no freeze, and whitelist
    /// time-locks respected.
    #[serde(default)]
    pub governance_genesis: Option<PathBuf>,
    #[serde(default)]
    pub governance_pin: Option<String>,
    /// Certificate SHA-256s of members' clients that may push governance entries to this
    /// node directly (`strongroom governance push`), past the orchestrator. They can do
    /// nothing else.
    #[serde(default)]
    pub pushers: Vec<String>,
    #[serde(default)]
    pub mesh: MeshConfig,
    /// Health (`GET /health`) and Prometheus metrics (`GET /metrics`) over plain HTTP on this
    /// address: loopback only unless `metrics_remote` is set.
    #[serde(default)]
    pub metrics_listen: Option<SocketAddr>,
    /// Allow `metrics_listen` on a non-loopback (management) address.
    #[serde(default)]
    pub metrics_remote: bool,
}

fn one() -> usize {
    1
}

/// How often a node exchanges governance heads and velocity records with every peer, and
/// how long it waits for one.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MeshConfig {
    pub interval_ms: u64,
    pub timeout_ms: u64,
}

impl Default for MeshConfig {
    fn default() -> Self {
        MeshConfig { interval_ms: 2_000, timeout_ms: 2_000 }
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct PeerConfig {
    pub id: u16,
    pub addr: SocketAddr,
    pub cert_sha256: String,
}

/// How long each kind of session may take before the node gives up on missing peers.
#[derive(Debug, Clone, Copy, Deserialize)]
pub struct Timeouts {
    pub aux_ms: u64,
    pub keygen_ms: u64,
    pub presign_ms: u64,
    pub sign_ms: u64,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts { aux_ms: 600_000, keygen_ms: 30_000, presign_ms: 60_000, sign_ms: 10_000 }
    }
}

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
    match (&cfg.kek_file, &cfg.kek_env) {
        (Some(p), None) => Ok(Box::new(SoftwareKek::from_file(p)?)),
        (None, Some(v)) => Ok(Box::new(SoftwareKek::from_env_var(v)?)),
        _ => anyhow::bail!("set exactly one of kek_file and kek_env"),
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
        }
    }

    /// Whether the node is finishing its sessions before it stops.
    pub fn is_draining(&self) -> bool {
        self.draining.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Bind and serve until the process ends. Returns the bound address once listening.
    pub async fn start(self: &Arc<Self>) -> anyhow::Result<SocketAddr> {
        let pins = self.pins();
        let acceptor = TlsAcceptor::from(Arc::new(tls::server_config(&self.creds, pins.clone())?));
        let listener = TcpListener::bind(self.cfg.listen).await?;
        let addr = listener.local_addr()?;
        if let Some(m) = self.cfg.metrics_listen {
            crate::health::check_listen(m, self.cfg.metrics_remote)?;
            let metrics = TcpListener::bind(m).await?;
            tracing::info!(node = self.cfg.id, addr = %metrics.local_addr()?, "health and metrics");
            crate::health::spawn(self.clone(), metrics);
        }
        self.spawn_prime_generator();
        self.spawn_mesh();
        let node = self.clone();
        tokio::spawn(async move {
            loop {
                let Ok((tcp, peer_addr)) = listener.accept().await else { continue };
                let _ = tcp.set_nodelay(true);
                let node = node.clone();
                let acceptor = acceptor.clone();
                let pins = pins.clone();
                tokio::spawn(async move {
                    let tls =
                        match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp))
                            .await
                        {
                            Ok(Ok(t)) => t,
                            Ok(Err(e)) => {
                                tracing::warn!(%peer_addr, error = %e, "TLS handshake refused");
                                return;
                            }
                            Err(_) => return,
                        };
                    let who = tls
                        .get_ref()
                        .1
                        .peer_certificates()
                        .and_then(|c| c.first())
                        .and_then(|c| pins.get(&tls::fingerprint(c)).copied());
                    let Some(who) = who else { return };
                    node.serve_connection(tls, who).await;
                });
            }
        });
        tracing::info!(node = self.cfg.id, %addr, "signer node listening (mTLS 1.3, pinned)");
        Ok(addr)
    }

    async fn serve_connection(
        self: Arc<Self>,
        tls: tokio_rustls::server::TlsStream<TcpStream>,
        who: Identity,
    ) {
        let (rd, mut wr) = tokio::io::split(tls);
        let mut rd = BufReader::new(rd);
        let (reply_tx, mut reply_rx) = mpsc::unbounded_channel::<Frame>();
        let writer = tokio::spawn(async move {
            while let Some(f) = reply_rx.recv().await {
                if wire::write_frame(&mut wr, &f).await.is_err() {
                    break;
                }
            }
            let _ = wr.shutdown().await;
        });
        loop {
            let body = match wire::read_frame(&mut rd).await {
                Ok(Some(b)) => b,
                Ok(None) => break,
                Err(e) => {
                    tracing::warn!(node = self.cfg.id, peer = ?who, error = %e, "bad frame; closing");
                    break;
                }
            };
            let frame = match Frame::decode(&body) {
                Ok(f) => f,
                Err(e) => {
                    tracing::warn!(node = self.cfg.id, peer = ?who, error = %e, "undecodable frame; closing");
                    break;
                }
            };
            match (who, frame) {
                (Identity::Orchestrator, Frame::Control(Control::Request { id, body })) => {
                    let node = self.clone();
                    let tx = reply_tx.clone();
                    tokio::spawn(async move {
                        let body = node.handle(body).await;
                        let _ = tx.send(Frame::Control(Control::Response { id, body }));
                    });
                }
                // Peers and pushers get a typed answer to anything they send, and may ask
                // for nothing beyond their part.
                (
                    Identity::Node(_) | Identity::Pusher,
                    Frame::Control(Control::Request { id, body }),
                ) => {
                    let node = self.clone();
                    let tx = reply_tx.clone();
                    tokio::spawn(async move {
                        let body = node.handle_limited(who, body).await;
                        let _ = tx.send(Frame::Control(Control::Response { id, body }));
                    });
                }
                (Identity::Node(peer), Frame::Mpc { envelope, .. }) => {
                    if envelope.from != peer {
                        tracing::warn!(
                            node = self.cfg.id,
                            peer,
                            claimed = envelope.from,
                            "frame claims another sender; closing"
                        );
                        break;
                    }
                    self.route(envelope.eid, Inbound::Msg(envelope));
                }
                (Identity::Node(peer), Frame::Abort { eid, from, reason }) => {
                    if from != peer {
                        break;
                    }
                    self.route(eid, Inbound::Abort { from, reason });
                }
                (who, _) => {
                    tracing::warn!(node = self.cfg.id, peer = ?who, "frame not allowed from this party; closing");
                    break;
                }
            }
        }
        drop(reply_tx);
        let _ = writer.await;
    }

    fn route(&self, eid: ExecutionId, msg: Inbound) {
        let Ok(mut r) = self.routing.lock() else { return };
        if let Some(tx) = r.sessions.get(&eid) {
            let _ = tx.send(msg);
            return;
        }
        if r.finished.contains(&eid) {
            let from = match &msg {
                Inbound::Msg(e) => e.from,
                Inbound::Abort { from, .. } => *from,
            };
            tracing::warn!(node = self.cfg.id, from, eid = %eid_hex(&eid),
                "message for an ended session refused (replay or straggler)");
            let _ = self.audit("message.refused", &format!("node/{from}"),
                serde_json::json!({"eid": eid_hex(&eid), "from": from, "reason": "session already ended"}));
            return;
        }
        if !r.pending.contains_key(&eid) && r.pending.len() >= MAX_PENDING_SESSIONS {
            tracing::warn!(node = self.cfg.id, "too many pending sessions; message dropped");
            return;
        }
        let q = r.pending.entry(eid).or_default();
        if q.len() < MAX_PENDING_MESSAGES {
            q.push(msg);
        }
    }

    /// Register a session and get its inbox (with anything that arrived early).
    fn open_session(&self, eid: ExecutionId) -> Result<stdmpsc::Receiver<Inbound>, Refusal> {
        let mut r = self.routing.lock().map_err(|_| internal(self.cfg.id, "lock"))?;
        if let Some(reason) = r.aborted.get(&eid) {
            let detail = reason.clone();
            return Err(Refusal::new(self.cfg.id, Reason::Aborted { by: 0, detail }));
        }
        if r.finished.contains(&eid) || r.sessions.contains_key(&eid) {
            return Err(bad_request(self.cfg.id, "execution id already used"));
        }
        let (tx, rx) = stdmpsc::channel();
        for m in r.pending.remove(&eid).unwrap_or_default() {
            let _ = tx.send(m);
        }
        r.sessions.insert(eid, tx);
        Ok(rx)
    }

    fn close_session(&self, eid: ExecutionId) {
        if let Ok(mut r) = self.routing.lock() {
            r.sessions.remove(&eid);
            r.pending.remove(&eid);
            if r.finished.insert(eid) {
                r.finished_order.push_back(eid);
            }
            while r.finished_order.len() > MAX_FINISHED {
                if let Some(old) = r.finished_order.pop_front() {
                    r.finished.remove(&old);
                    r.aborted.remove(&old);
                }
            }
        }
    }

    fn peer(&self, id: u16) -> Option<&PeerConfig> {
        self.cfg.peers.iter().find(|p| p.id == id)
    }

    /// Queue a frame for a peer, opening the link if needed.
    fn send(self: &Arc<Self>, to: u16, frame: Frame) {
        let Ok(mut links) = self.links.lock() else { return };
        if let Some(tx) = links.get(&to) {
            if tx.send(frame.clone()).is_ok() {
                return;
            }
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let _ = tx.send(frame);
        links.insert(to, tx);
        let node = self.clone();
        tokio::spawn(async move { node.link(to, rx).await });
    }

    /// The outbound link to one peer: connect, write frames; reconnect on failure.
    async fn link(self: Arc<Self>, to: u16, mut rx: mpsc::UnboundedReceiver<Frame>) {
        let Some(peer) = self.peer(to).cloned() else {
            tracing::warn!(node = self.cfg.id, to, "no such peer");
            return;
        };
        type Link = (
            tokio::io::WriteHalf<tokio_rustls::client::TlsStream<TcpStream>>,
            Arc<std::sync::atomic::AtomicBool>,
        );
        let mut conn: Option<Link> = None;
        while let Some(frame) = rx.recv().await {
            for attempt in 0..2 {
                // A connection the peer closed (it restarted, say) is not written to: a write
                // into a dead socket can "succeed" and the frame would be lost.
                if conn
                    .as_ref()
                    .is_some_and(|(_, open)| !open.load(std::sync::atomic::Ordering::Acquire))
                {
                    conn = None;
                }
                if conn.is_none() {
                    match self.connect(&peer).await {
                        Ok(c) => conn = Some(c),
                        Err(e) => {
                            tracing::warn!(node = self.cfg.id, to, error = %e, "peer unreachable");
                            break;
                        }
                    }
                }
                let Some((w, _)) = conn.as_mut() else { break };
                match wire::write_frame(w, &frame).await {
                    Ok(()) => break,
                    Err(e) => {
                        conn = None;
                        if attempt == 1 {
                            tracing::warn!(node = self.cfg.id, to, error = %e, "send failed");
                        }
                    }
                }
            }
        }
    }

    async fn connect(
        &self,
        peer: &PeerConfig,
    ) -> anyhow::Result<(
        tokio::io::WriteHalf<tokio_rustls::client::TlsStream<TcpStream>>,
        Arc<std::sync::atomic::AtomicBool>,
    )> {
        let tls = tls::connect(&self.creds, &peer.cert_sha256, peer.addr).await?;
        let (rd, wr) = tokio::io::split(tls);
        let open = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let flag = open.clone();
        // Peers never answer on this connection; reading it tells when the peer closes it.
        tokio::spawn(async move {
            let mut rd = BufReader::new(rd);
            while let Ok(Some(_)) = wire::read_frame(&mut rd).await {}
            flag.store(false, std::sync::atomic::Ordering::Release);
        });
        Ok((wr, open))
    }

    // --- requests --------------------------------------------------------------------

    /// What a peer node (the mesh exchange) or a pusher (a push, the status) may ask.
    async fn handle_limited(
        self: &Arc<Self>,
        who: Identity,
        req: Request,
    ) -> Result<Reply, Refusal> {
        let me = self.cfg.id;
        match (who, req) {
            (Identity::Node(peer), Request::Mesh { head, since }) => {
                let mesh = self
                    .mesh
                    .clone()
                    .ok_or_else(|| bad_request(me, "this node has no governance to exchange"))?;
                let state = mesh.answer(&head, since).map_err(|r| Refusal::new(me, r))?;
                // The asker knows more: learn it now rather than at the next round.
                if head.seq > state.head.seq {
                    if let Some(p) = self.peer(peer).cloned() {
                        let node = self.clone();
                        tokio::spawn(async move {
                            let x = mesh.exchange(&p).await;
                            node.note_exchanges(&[x]);
                        });
                    }
                }
                Ok(Reply::Mesh(state))
            }
            (Identity::Pusher, req @ (Request::Push { .. } | Request::Status)) => {
                self.handle(req).await
            }
            (who, req) => {
                let op = serde_json::to_value(&req)
                    .ok()
                    .and_then(|v| v.get("op").and_then(|o| o.as_str()).map(str::to_owned))
                    .unwrap_or_default();
                let r = bad_request(me, format!("{who:?} may not send a {op} request"));
                tracing::warn!(node = me, peer = ?who, op, "request not allowed from this party");
                let _ = self.audit(
                    "request.refused",
                    &format!("{who:?}").to_lowercase(),
                    serde_json::json!({"op": op, "refusal": r}),
                );
                Err(r)
            }
        }
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
            Request::Refresh { eid, key_id } => {
                let eid = parse_eid(&eid).map_err(|m| bad_request(me, m))?;
                self.blocking(move |node| node.run_refresh(eid, key_id)).await
            }
            Request::CommitRefresh { key_id } => {
                let committed =
                    self.vault.commit_next_share(&key_id).map_err(|e| from_vault(me, e))?;
                if committed {
                    self.audit("key.refreshed", &format!("key/{key_id}"), serde_json::json!({}))?;
                    tracing::info!(node = me, key = %key_id, "refreshed share is now current; old share destroyed");
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

    async fn blocking<F>(self: &Arc<Self>, f: F) -> Result<Reply, Refusal>
    where
        F: FnOnce(&Arc<Node>) -> Result<Reply, Refusal> + Send + 'static,
    {
        let node = self.clone();
        let handle = tokio::runtime::Handle::current();
        let me = self.cfg.id;
        tokio::task::spawn_blocking(move || {
            let _guard = handle.enter();
            f(&node)
        })
        .await
        .map_err(|e| internal(me, e.to_string()))?
    }

    /// Drive one session on this thread until it finishes, fails, or times out. On failure
    /// every other party is told to stop.
    fn drive<O>(
        self: &Arc<Self>,
        eid: ExecutionId,
        proto: Proto,
        others: &[u16],
        timeout_ms: u64,
        rx: &stdmpsc::Receiver<Inbound>,
        mut step: impl FnMut(Option<Wire>) -> Stepped<O>,
    ) -> Result<O, Refusal> {
        let me = self.cfg.id;
        let deadline = self.env.monotonic() + Duration::from_millis(timeout_ms);
        let mut heard: BTreeMap<u16, usize> = others.iter().map(|p| (*p, 0)).collect();
        let result = (|| {
            let mut input: Option<Envelope<Vec<u8>>> = None;
            // Messages for a later round than the party is in (peers run ahead): kept and
            // fed again after every step until they fit.
            let mut deferred: Vec<Envelope<Vec<u8>>> = Vec::new();
            loop {
                let kept = input.clone();
                let (mut out, mut output) = match step(input.take()) {
                    Ok(x) => x,
                    // A duplicate or a message from elsewhere is refused; the session goes on.
                    Err(
                        e @ (MpcError::Duplicate { .. }
                        | MpcError::WrongExecution { .. }
                        | MpcError::NotForMe { .. }),
                    ) => {
                        tracing::warn!(node = me, eid = %eid_hex(&eid), error = %e, "message refused");
                        (vec![], None)
                    }
                    Err(MpcError::WrongRound { expected, got, .. }) if got > expected => {
                        deferred.extend(kept);
                        (vec![], None)
                    }
                    Err(e) => return Err(from_mpc(me, e)),
                };
                let mut progressed = !out.is_empty();
                while progressed && output.is_none() && !deferred.is_empty() {
                    progressed = false;
                    for env in std::mem::take(&mut deferred) {
                        if output.is_some() {
                            deferred.push(env);
                            continue;
                        }
                        match step(Some(env.clone())) {
                            Ok((more, o)) => {
                                progressed = true;
                                out.extend(more);
                                output = o;
                            }
                            Err(MpcError::WrongRound { expected, got, .. }) if got > expected => {
                                deferred.push(env)
                            }
                            Err(e) => return Err(from_mpc(me, e)),
                        }
                    }
                }
                for env in out {
                    let targets: Vec<u16> = match env.to {
                        Some(t) => vec![t],
                        None => others.to_vec(),
                    };
                    for t in targets {
                        self.send(t, Frame::Mpc { proto, envelope: env.clone() });
                    }
                }
                if let Some(o) = output {
                    return Ok(o);
                }
                let now = self.env.monotonic();
                let left = deadline.checked_sub(now).unwrap_or_default();
                match rx.recv_timeout(left) {
                    Ok(Inbound::Msg(env)) => {
                        if let Some(n) = heard.get_mut(&env.from) {
                            *n += 1;
                        }
                        input = Some(env);
                    }
                    Ok(Inbound::Abort { from, reason }) => {
                        return Err(Refusal::new(me, Reason::Aborted { by: from, detail: reason }));
                    }
                    Err(_) => {
                        let most = heard.values().copied().max().unwrap_or(0);
                        let slow: Vec<u16> = heard
                            .iter()
                            .filter(|(_, n)| **n < most.max(1))
                            .map(|(p, _)| *p)
                            .collect();
                        return Err(Refusal {
                            node: me,
                            reason: Reason::Timeout { after_ms: timeout_ms },
                            culprits: slow,
                        });
                    }
                }
            }
        })();
        if let Err(r) = &result {
            let _ = self.audit(
                "session.failed",
                &format!("session/{}", eid_hex(&eid)),
                serde_json::json!({"proto": proto, "refusal": r}),
            );
            tracing::warn!(node = me, eid = %eid_hex(&eid), code = r.reason.code(),
                culprits = ?r.culprits, reason = %r.reason, "session failed");
            for p in others {
                self.send(*p, Frame::Abort { eid, from: me, reason: r.reason.to_string() });
            }
        }
        self.close_session(eid);
        result
    }

    fn others(&self, parties: &[u16]) -> Result<Vec<u16>, Refusal> {
        let me = self.cfg.id;
        if !parties.contains(&me) {
            return Err(bad_request(me, format!("node {me} is not in {parties:?}")));
        }
        let others: Vec<u16> = parties.iter().copied().filter(|p| *p != me).collect();
        for p in &others {
            if self.peer(*p).is_none() {
                return Err(bad_request(me, format!("node {p} is not a configured peer")));
            }
        }
        Ok(others)
    }

    fn run_aux(self: &Arc<Self>, eid: ExecutionId, parties: Vec<u16>) -> Result<Reply, Refusal> {
        let me = self.cfg.id;
        if self.vault.has_aux() {
            return Ok(Reply::AuxReady);
        }
        let set = ecdsa::Parties::new(parties.iter().copied()).map_err(|e| from_mpc(me, e))?;
        let others = self.others(set.numbers())?;
        let rx = self.open_session(eid)?;
        let primes = {
            let _g = self.primes_lock.lock().map_err(|_| internal(me, "lock"))?;
            match self.vault.take_primes() {
                Ok(json) => serde_json::from_slice::<ecdsa::Primes>(&json)
                    .map_err(|e| internal(me, e.to_string()))?,
                Err(VaultError::NotFound(_)) => {
                    tracing::info!(node = me, "no primes ready: generating now");
                    ecdsa::generate_primes(&mut EnvRng(self.env.as_ref()))
                }
                Err(e) => return Err(from_vault(me, e)),
            }
        };
        let mut rng = EnvRng(self.env.as_ref());
        let mut session = ecdsa::aux_info(&eid, me, &set, primes, Default::default(), &mut rng)
            .map_err(|e| from_mpc(me, e))?;
        let aux = self.drive(eid, Proto::Ecdsa, &others, self.cfg.timeouts.aux_ms, &rx, |m| {
            session.step(m).map(|p| (p.outgoing, p.output))
        })?;
        let json = zeroize::Zeroizing::new(
            serde_json::to_vec(&aux).map_err(|e| internal(me, e.to_string()))?,
        );
        self.vault.put_aux(&json, self.env.as_ref()).map_err(|e| from_vault(me, e))?;
        self.audit(
            "aux.ready",
            "aux",
            serde_json::json!({"eid": eid_hex(&eid), "parties": parties}),
        )?;
        tracing::info!(node = me, "auxiliary info ready");
        Ok(Reply::AuxReady)
    }

    fn run_keygen(
        self: &Arc<Self>,
        eid: ExecutionId,
        key_id: String,
        scheme: Scheme,
        parties: Vec<u16>,
        threshold: u16,
    ) -> Result<Reply, Refusal> {
        let me = self.cfg.id;
        if let Ok(info) = self.vault.key_info(&key_id) {
            return Err(bad_request(me, format!("key {} already exists", info.key_id)));
        }
        let set = ecdsa::Parties::new(parties.iter().copied()).map_err(|e| from_mpc(me, e))?;
        let others = self.others(set.numbers())?;
        let n = u16::try_from(set.numbers().len()).map_err(|_| bad_request(me, "n"))?;
        if set.numbers() != (1..=n).collect::<Vec<_>>().as_slice() {
            return Err(bad_request(me, "key parties must be nodes 1..=n"));
        }
        let rx = self.open_session(eid)?;
        let timeout = self.cfg.timeouts.keygen_ms;
        let (info, share) = match scheme {
            Scheme::Ecdsa => {
                let aux_json = self.vault.aux().map_err(|_| {
                    self.close_session(eid);
                    not_found(me, "auxiliary info is not ready: run aux info first")
                })?;
                let aux: ecdsa::AuxInfo =
                    serde_json::from_slice(&aux_json).map_err(|e| internal(me, e.to_string()))?;
                let mut rng = EnvRng(self.env.as_ref());
                let mut session = ecdsa::keygen(&eid, me, &set, threshold, &mut rng)
                    .map_err(|e| from_mpc(me, e))?;
                let incomplete = self.drive(eid, Proto::Ecdsa, &others, timeout, &rx, |m| {
                    session.step(m).map(|p| (p.outgoing, p.output))
                })?;
                let key = ecdsa::complete(incomplete, aux).map_err(|e| from_mpc(me, e))?;
                let public = ecdsa::public_key(&key, &[]).map_err(|e| from_mpc(me, e))?;
                let chain = key.extended_public_key().map(|x| hex::encode(x.chain_code));
                let share = zeroize::Zeroizing::new(
                    serde_json::to_vec(&key).map_err(|e| internal(me, e.to_string()))?,
                );
                let info = KeyInfo {
                    key_id: key_id.clone(),
                    scheme,
                    threshold,
                    parties: set.numbers().to_vec(),
                    public_key: hex::encode(public),
                    chain_code: chain,
                };
                (info, share)
            }
            Scheme::FrostTaproot => self.frost_keygen::<Secp256k1Taproot>(
                eid, &key_id, scheme, n, threshold, &others, &rx,
            )?,
            Scheme::FrostEd25519 => {
                self.frost_keygen::<Ed25519>(eid, &key_id, scheme, n, threshold, &others, &rx)?
            }
        };
        self.vault.put_key(&info, &share, self.env.as_ref()).map_err(|e| from_vault(me, e))?;
        self.audit(
            "key.generated",
            &format!("key/{key_id}"),
            serde_json::json!({
            "eid": eid_hex(&eid), "scheme": scheme, "threshold": threshold,
            "parties": info.parties, "public_key": info.public_key}),
        )?;
        tracing::info!(node = me, key = %key_id, scheme = ?scheme, public_key = %info.public_key, "key share stored (sealed)");
        Ok(Reply::Key(info))
    }

    #[allow(clippy::too_many_arguments)]
    fn frost_keygen<C: frost_core::Ciphersuite>(
        self: &Arc<Self>,
        eid: ExecutionId,
        key_id: &str,
        scheme: Scheme,
        n: u16,
        threshold: u16,
        others: &[u16],
        rx: &stdmpsc::Receiver<Inbound>,
    ) -> Result<(KeyInfo, zeroize::Zeroizing<Vec<u8>>), Refusal> {
        let me = self.cfg.id;
        let (mut dkg, first) =
            frost::Dkg::<C>::start(eid, me, n, threshold, EnvRng(self.env.as_ref()))
                .map_err(|e| from_mpc(me, e))?;
        let stepper = frost_stepper(first, |e| dkg.handle(e));
        let share =
            self.drive(eid, Proto::FrostDkg, others, self.cfg.timeouts.keygen_ms, rx, stepper)?;
        let public = public_key_bytes(scheme, share.group_key().map_err(|e| from_mpc(me, e))?);
        let bytes = share.to_bytes().map_err(|e| from_mpc(me, e))?;
        let mut parties: Vec<u16> = others.to_vec();
        parties.push(me);
        parties.sort_unstable();
        let info = KeyInfo {
            key_id: key_id.to_string(),
            scheme,
            threshold,
            parties,
            public_key: hex::encode(public),
            chain_code: None,
        };
        Ok((info, bytes))
    }

    fn run_presign(
        self: &Arc<Self>,
        eid: ExecutionId,
        key_id: String,
        signers: Vec<u16>,
    ) -> Result<Reply, Refusal> {
        let me = self.cfg.id;
        let (info, share) = self.vault.key_share(&key_id).map_err(|e| from_vault(me, e))?;
        if info.scheme != Scheme::Ecdsa {
            return Err(bad_request(me, "presignatures are for ECDSA keys"));
        }
        let key: ecdsa::KeyShare =
            serde_json::from_slice(&share).map_err(|e| internal(me, e.to_string()))?;
        drop(share);
        let set = ecdsa::Parties::new(signers.iter().copied()).map_err(|e| from_mpc(me, e))?;
        let others = self.others(set.numbers())?;
        let rx = self.open_session(eid)?;
        let mut rng = EnvRng(self.env.as_ref());
        let mut session = match ecdsa::presign(&eid, me, &set, &key, &mut rng) {
            Ok(s) => s,
            Err(e) => {
                self.close_session(eid);
                return Err(from_mpc(me, e));
            }
        };
        let presig =
            self.drive(eid, Proto::Ecdsa, &others, self.cfg.timeouts.presign_ms, &rx, |m| {
                session.step(m).map(|p| (p.outgoing, p.output))
            })?;
        let json = zeroize::Zeroizing::new(
            serde_json::to_vec(&presig).map_err(|e| internal(me, e.to_string()))?,
        );
        let id = eid_hex(&eid);
        self.vault
            .put_presig(&key_id, set.numbers(), &id, &json, self.env.as_ref())
            .map_err(|e| from_vault(me, e))?;
        self.audit(
            "presignature.made",
            &format!("key/{key_id}"),
            serde_json::json!({"id": id, "signers": set.numbers()}),
        )?;
        Ok(Reply::Presigned { id })
    }

    fn run_refresh(self: &Arc<Self>, eid: ExecutionId, key_id: String) -> Result<Reply, Refusal> {
        let me = self.cfg.id;
        let (info, bytes) = self.vault.key_share(&key_id).map_err(|e| from_vault(me, e))?;
        let others = self.others(&info.parties)?;
        let n = u16::try_from(info.parties.len()).map_err(|_| bad_request(me, "n"))?;
        match info.scheme {
            Scheme::FrostTaproot => self.frost_refresh::<Secp256k1Taproot>(eid, &info, &bytes, n, &others),
            Scheme::FrostEd25519 => self.frost_refresh::<Ed25519>(eid, &info, &bytes, n, &others),
            Scheme::Ecdsa => Err(bad_request(me, "cggmp21 0.6 cannot refresh t-of-n ECDSA keys: generate a new key and move the funds",
            )),
        }
    }

    fn frost_refresh<C: frost_core::Ciphersuite>(
        self: &Arc<Self>,
        eid: ExecutionId,
        info: &KeyInfo,
        bytes: &[u8],
        n: u16,
        others: &[u16],
    ) -> Result<Reply, Refusal> {
        let me = self.cfg.id;
        let old = frost::KeyShare::<C>::from_bytes(bytes).map_err(|e| from_mpc(me, e))?;
        let rx = self.open_session(eid)?;
        let (mut dkg, first) =
            match frost::Dkg::<C>::start_refresh(eid, &old, n, EnvRng(self.env.as_ref())) {
                Ok(x) => x,
                Err(e) => {
                    self.close_session(eid);
                    return Err(from_mpc(me, e));
                }
            };
        let stepper = frost_stepper(first, |e| dkg.handle(e));
        let new =
            self.drive(eid, Proto::FrostDkg, others, self.cfg.timeouts.keygen_ms, &rx, stepper)?;
        let public = public_key_bytes(info.scheme, new.group_key().map_err(|e| from_mpc(me, e))?);
        if hex::encode(&public) != info.public_key {
            return Err(culprit(me, "refresh produced another group key"));
        }
        let share = new.to_bytes().map_err(|e| from_mpc(me, e))?;
        self.vault
            .put_next_share(&info.key_id, &share, self.env.as_ref())
            .map_err(|e| from_vault(me, e))?;
        self.audit(
            "key.refresh.prepared",
            &format!("key/{}", info.key_id),
            serde_json::json!({"eid": eid_hex(&eid)}),
        )?;
        tracing::info!(node = me, key = %info.key_id, "refreshed share sealed; waiting for commit");
        Ok(Reply::KeyUpdated(info.clone()))
    }

    fn run_repair<C: frost_core::Ciphersuite>(
        self: &Arc<Self>,
        eid: ExecutionId,
        key_id: String,
        scheme: Scheme,
        helpers: Vec<u16>,
        lost: u16,
    ) -> Result<Reply, Refusal> {
        let me = self.cfg.id;
        let helper_set: BTreeSet<u16> = helpers.iter().copied().collect();
        let mut everyone: Vec<u16> = helper_set.iter().copied().collect();
        everyone.push(lost);
        let others = self.others(&everyone)?;
        if me == lost {
            if self.vault.key_info(&key_id).is_ok() {
                return Err(bad_request(
                    me,
                    format!("key {key_id} is present here; remove it before a repair"),
                ));
            }
            let rx = self.open_session(eid)?;
            let mut repair =
                frost::Repair::<C>::start_lost(eid, me, helper_set).map_err(|e| from_mpc(me, e))?;
            let restored =
                self.drive(eid, Proto::FrostDkg, &others, self.cfg.timeouts.keygen_ms, &rx, |m| {
                    let Some(env) = m else { return Ok((vec![], None)) };
                    match repair.handle(decode_env::<frost::RepairPayload<C>>(env)?)? {
                        frost::Step::Finished(frost::Repaired::Restored(k)) => {
                            Ok((vec![], Some(k)))
                        }
                        _ => Ok((vec![], None)),
                    }
                })?;
            let public =
                public_key_bytes(scheme, restored.group_key().map_err(|e| from_mpc(me, e))?);
            let mut parties: Vec<u16> = Vec::new();
            for id in restored.public.verifying_shares().keys() {
                if let Some(p) = (1..=10u16)
                    .find(|p| frost_core::Identifier::<C>::try_from(*p).ok().as_ref() == Some(id))
                {
                    parties.push(p);
                }
            }
            let info = KeyInfo {
                key_id: key_id.clone(),
                scheme,
                threshold: *restored.key_package.min_signers(),
                parties,
                public_key: hex::encode(public),
                chain_code: None,
            };
            let share = restored.to_bytes().map_err(|e| from_mpc(me, e))?;
            self.vault.put_key(&info, &share, self.env.as_ref()).map_err(|e| from_vault(me, e))?;
            self.audit(
                "key.repaired",
                &format!("key/{key_id}"),
                serde_json::json!({
                "eid": eid_hex(&eid), "helpers": helpers, "public_key": info.public_key}),
            )?;
            tracing::info!(node = me, key = %key_id, "share repaired and sealed");
            Ok(Reply::KeyUpdated(info))
        } else {
            let (info, bytes) = self.vault.key_share(&key_id).map_err(|e| from_vault(me, e))?;
            let share = frost::KeyShare::<C>::from_bytes(&bytes).map_err(|e| from_mpc(me, e))?;
            drop(bytes);
            let rx = self.open_session(eid)?;
            let started = frost::Repair::start_helper(
                eid,
                &share,
                helper_set,
                lost,
                EnvRng(self.env.as_ref()),
            );
            let (mut repair, first) = match started {
                Ok(x) => x,
                Err(e) => {
                    self.close_session(eid);
                    return Err(from_mpc(me, e));
                }
            };
            let mut first = Some(first);
            self.drive(eid, Proto::FrostDkg, &others, self.cfg.timeouts.keygen_ms, &rx, |m| {
                if let Some(out) = first.take() {
                    return Ok((encode_all(out)?, None));
                }
                let Some(env) = m else { return Ok((vec![], None)) };
                let out = match repair.handle(decode_env::<frost::RepairPayload<C>>(env)?)? {
                    frost::Step::Send(out) => encode_all(out)?,
                    _ => vec![],
                };
                Ok((out, repair.is_done().then_some(())))
            })?;
            self.audit(
                "key.repair.helped",
                &format!("key/{key_id}"),
                serde_json::json!({
                "eid": eid_hex(&eid), "helpers": helpers, "lost": lost}),
            )?;
            tracing::info!(node = me, key = %key_id, lost, "helped repair a lost share");
            Ok(Reply::KeyUpdated(info))
        }
    }

    /// Decode the request, run every check, record the signing in the journal, and return
    /// what to sign.
    fn precheck(&self, info: &KeyInfo, req: &SignRequest) -> Result<check::ToSign, Refusal> {
        let me = self.cfg.id;
        let refuse = |r: Reason| Refusal::new(me, r);
        if !req.path.is_empty() && info.scheme != Scheme::Ecdsa {
            return Err(bad_request(me, "derivation paths are for ECDSA keys"));
        }
        let to_sign = check::decode(info, req).map_err(refuse)?;
        if let Some(mesh) = &self.mesh {
            // Hear from the peers first: the newest governance any of them verified, and
            // what the group signed. Too few answers and the node cannot know either.
            let exchanges =
                tokio::runtime::Handle::current().block_on(mesh.exchange_all(Some(&info.parties)));
            self.note_exchanges(&exchanges);
            let reached = Mesh::reached(&exchanges);
            let need = Mesh::needed(&info.parties, info.threshold);
            if reached.len() < need {
                return Err(refuse(Reason::MeshIncomplete {
                    reached: reached.into_iter().collect(),
                    need,
                }));
            }
        }
        let now = self.env.now();
        if let Some(gov) = &self.governance {
            gov.extend(&req.governance, now).map_err(refuse)?;
        }
        match &to_sign.decoded {
            check::Decoded::Message { kind, .. } => {
                if let Some(gov) = &self.governance {
                    gov.allows_message(*kind).map_err(refuse)?;
                }
            }
            check::Decoded::Eip1559 { tx, intent } => {
                let request_id = intent.request_id.to_string();
                let repeat = self.journal.signed(&request_id, &to_sign.bytes).map_err(refuse)?;
                if let Some(gov) = &self.governance {
                    gov.signed_elsewhere(&request_id, &to_sign.bytes).map_err(refuse)?;
                }
                let ctx = CheckContext {
                    node: me,
                    key: info,
                    intent,
                    request: req,
                    tx,
                    digest: &to_sign.bytes,
                    now,
                    repeat,
                };
                for c in &self.checks {
                    c.check(&ctx).map_err(refuse)?;
                }
                let hash = intent.hash().map_err(|e| internal(me, e.to_string()))?.to_hex();
                self.journal
                    .claim(&request_id, &hash, &to_sign.bytes, now.unix_ms())
                    .map_err(refuse)?;
                if self.governance.is_none() {
                    tracing::warn!(node = me, intent = %hash,
                        "INSECURE: signing with no governance (insecure_no_governance)");
                }
            }
        }
        Ok(to_sign)
    }

    fn run_sign(
        self: &Arc<Self>,
        eid: ExecutionId,
        key_id: String,
        signers: Vec<u16>,
        presignature: Option<String>,
        req: SignRequest,
    ) -> Result<Reply, Refusal> {
        let me = self.cfg.id;
        let info = self.vault.key_info(&key_id).map_err(|e| from_vault(me, e))?;
        let checked = self.precheck(&info, &req);
        let to_sign = match checked {
            Ok(t) => t,
            Err(r) => {
                tracing::warn!(node = me, key = %key_id, code = r.reason.code(),
                    reason = %r.reason, "signing refused");
                let _ = self.audit(
                    "sign.refused",
                    &format!("key/{key_id}"),
                    serde_json::json!({
                    "eid": eid_hex(&eid), "signers": signers, "refusal": r,
                    "intent": intent_hash(&req.intent)}),
                );
                // Tell the other signers at once: the session cannot complete without us.
                for p in signers.iter().filter(|p| **p != me && self.peer(**p).is_some()) {
                    let reason = format!("refused: {}", r.reason);
                    self.send(*p, Frame::Abort { eid, from: me, reason });
                }
                self.close_session(eid);
                return Err(r);
            }
        };
        match info.scheme {
            Scheme::Ecdsa => {
                let id = presignature
                    .ok_or_else(|| bad_request(me, "ECDSA signing needs a presignature id"))?;
                let digest = <[u8; 32]>::try_from(to_sign.bytes.as_slice())
                    .map_err(|_| internal(me, "digest is not 32 bytes"))?;
                let set =
                    ecdsa::Parties::new(signers.iter().copied()).map_err(|e| from_mpc(me, e))?;
                self.others(set.numbers())?;
                // Issuing a partial signature needs the presignature and the key's public
                // half only: the share itself stays sealed.
                let master = master_public(&info).map_err(|m| internal(me, m))?;
                let claimed = self
                    .vault
                    .claim_presig(&key_id, set.numbers(), &id)
                    .map_err(|e| from_vault(me, e))?;
                let presig: ecdsa::Presignature = serde_json::from_slice(&claimed.plain)
                    .map_err(|e| internal(me, e.to_string()))?;
                let partial = ecdsa::partial_sign(presig, &master, &req.path, &digest)
                    .map_err(|e| from_mpc(me, e))?;
                // The presignature is gone, and the signing recorded, before the partial
                // signature leaves the node.
                claimed.consume().map_err(|e| from_vault(me, e))?;
                self.audit(
                    "signature.partial",
                    &format!("key/{key_id}"),
                    serde_json::json!({
                    "eid": eid_hex(&eid), "presignature": id, "signers": signers,
                    "path": req.path, "digest": hex::encode(digest),
                    "intent": intent_hash(&req.intent)}),
                )?;
                let public = master.derive(&req.path).map_err(|e| from_mpc(me, e))?;
                let partial =
                    serde_json::to_vec(&partial).map_err(|e| internal(me, e.to_string()))?;
                tracing::info!(node = me, key = %key_id, presignature = %id, "partial signature issued");
                Ok(Reply::Partial {
                    partial: hex::encode(partial),
                    public_key: hex::encode(public),
                    digest: hex::encode(digest),
                })
            }
            Scheme::FrostTaproot => self.frost_sign::<Secp256k1Taproot>(
                eid,
                &key_id,
                info.scheme,
                signers,
                &to_sign.bytes,
            ),
            Scheme::FrostEd25519 => {
                self.frost_sign::<Ed25519>(eid, &key_id, info.scheme, signers, &to_sign.bytes)
            }
        }
    }

    fn frost_sign<C: frost_core::Ciphersuite>(
        self: &Arc<Self>,
        eid: ExecutionId,
        key_id: &str,
        scheme: Scheme,
        signers: Vec<u16>,
        message: &[u8],
    ) -> Result<Reply, Refusal> {
        let me = self.cfg.id;
        let (_, bytes) = self.vault.key_share(key_id).map_err(|e| from_vault(me, e))?;
        let share = frost::KeyShare::<C>::from_bytes(&bytes).map_err(|e| from_mpc(me, e))?;
        drop(bytes);
        let set: BTreeSet<u16> = signers.iter().copied().collect();
        let others = self.others(&set.iter().copied().collect::<Vec<_>>())?;
        let rx = self.open_session(eid)?;
        let started = frost::Signer::start(eid, &share, set, message, EnvRng(self.env.as_ref()));
        let (mut signer, first) = match started {
            Ok(s) => s,
            Err(e) => {
                self.close_session(eid);
                return Err(from_mpc(me, e));
            }
        };
        let stepper = frost_stepper(first, |e| signer.handle(e));
        let sig =
            self.drive(eid, Proto::FrostSign, &others, self.cfg.timeouts.sign_ms, &rx, stepper)?;
        let sig = sig.serialize().map_err(|e| internal(me, e.to_string()))?;
        self.audit(
            "signature.made",
            &format!("key/{key_id}"),
            serde_json::json!({
            "eid": eid_hex(&eid), "scheme": scheme, "message": hex::encode(message)}),
        )?;
        let public = public_key_bytes(scheme, share.group_key().map_err(|e| from_mpc(me, e))?);
        Ok(Reply::Signature {
            signature: hex::encode(sig),
            public_key: hex::encode(public),
            message: hex::encode(message),
        })
    }
}

/// An ECDSA key's public half from its stored facts.
fn master_public(info: &KeyInfo) -> Result<ecdsa::MasterPublic, String> {
    let pk = hex::decode(&info.public_key).map_err(|e| e.to_string())?;
    let cc = hex::decode(info.chain_code.as_deref().ok_or("no chain code")?)
        .map_err(|e| e.to_string())?;
    Ok(ecdsa::MasterPublic {
        public_key: <[u8; 33]>::try_from(pk.as_slice()).map_err(|_| "public key length")?,
        chain_code: <[u8; 32]>::try_from(cc.as_slice()).map_err(|_| "chain code length")?,
    })
}

/// The intent's hash (hex), or a note that it did not decode.
fn intent_hash(intent_hex: &str) -> String {
    hex::decode(intent_hex)
        .ok()
        .and_then(|b| Intent::decode(&b).ok())
        .and_then(|i| i.hash().ok())
        .map(|h| h.to_hex())
        .unwrap_or_else(|| "undecodable".into())
}

/// The form users see: x-only (BIP-340, the P2TR output key) for Taproot; as serialized
/// otherwise.
fn public_key_bytes(scheme: Scheme, key: Vec<u8>) -> Vec<u8> {
    match scheme {
        Scheme::FrostTaproot if key.len() == 33 => key.get(1..).map(<[u8]>::to_vec).unwrap_or(key),
        _ => key,
    }
}

/// An MPC message as it travels: the payload already encoded.
type Wire = Envelope<Vec<u8>>;
/// What one step of a session gives [`Node::drive`]: messages to send, and the output once
/// the protocol finished.
type Stepped<T> = Result<(Vec<Wire>, Option<T>), MpcError>;

/// Adapt a typed FROST state machine (its first outbox and its `handle`) to the byte
/// interface [`Node::drive`] runs.
fn frost_stepper<P, T>(
    first: Vec<Envelope<P>>,
    mut handle: impl FnMut(Envelope<P>) -> Result<frost::Step<P, T>, MpcError>,
) -> impl FnMut(Option<Wire>) -> Stepped<T>
where
    P: serde::Serialize + serde::de::DeserializeOwned,
{
    let mut first = Some(first);
    move |m| {
        if let Some(out) = first.take() {
            return Ok((encode_all(out)?, None));
        }
        let Some(env) = m else { return Ok((vec![], None)) };
        match handle(decode_env::<P>(env)?)? {
            frost::Step::Wait => Ok((vec![], None)),
            frost::Step::Send(out) => Ok((encode_all(out)?, None)),
            frost::Step::Finished(t) => Ok((vec![], Some(t))),
        }
    }
}

fn encode_all<P: serde::Serialize>(
    out: Vec<Envelope<P>>,
) -> Result<Vec<Envelope<Vec<u8>>>, MpcError> {
    out.into_iter()
        .map(|e| {
            let payload =
                serde_json::to_vec(&e.payload).map_err(|x| MpcError::Parameters(x.to_string()))?;
            Ok(Envelope { eid: e.eid, round: e.round, from: e.from, to: e.to, payload })
        })
        .collect()
}

fn decode_env<P: serde::de::DeserializeOwned>(
    e: Envelope<Vec<u8>>,
) -> Result<Envelope<P>, MpcError> {
    let payload = serde_json::from_slice(&e.payload).map_err(|x| MpcError::Misbehaved {
        culprits: vec![e.from],
        reason: format!("undecodable message: {x}"),
    })?;
    Ok(Envelope { eid: e.eid, round: e.round, from: e.from, to: e.to, payload })
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
