//! A node's configuration file (TOML).

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

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
    /// …or the name of an environment variable holding them…
    #[serde(default)]
    pub kek_env: Option<String>,
    /// …or a key inside a hardware security module (PKCS#11): the module, the token's
    /// label, the key's label and the environment variable holding the PIN. A node whose
    /// token is missing does not start.
    #[serde(default)]
    pub kek_pkcs11: Option<strongroom_hsm::Pkcs11Config>,
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
