//! What the signer-process tests share: starting `strongroom-signer` processes on loopback
//! with a dev CA, waiting for them, speaking as one of them, and checking signatures with
//! independent verifiers.
#![allow(dead_code)] // Each test binary uses its own part.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)] // Test code.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use strongroom_core::{Env, SystemEnv};
use strongroom_mpc::ExecutionId;
use strongroom_signer::cluster::{self, Cluster, Options};
use strongroom_signer::tls::{self, Credentials};
use strongroom_signer::wire::{SignRequest, TxFormat};
use strongroom_signer::Orchestrator;
use tokio::net::TcpStream;

pub struct Proc {
    pub child: Child,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn free_addr() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

pub fn start(config: &Path, log: &Path) -> Proc {
    let child = Command::new(env!("CARGO_BIN_EXE_strongroom-signer"))
        .arg("--config")
        .arg(config)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap();
    Proc { child }
}

pub fn primes_fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../mpc/tests/fixtures/test-primes.json")
}

pub fn eid(tag: &str) -> ExecutionId {
    let mut r = [0u8; 16];
    SystemEnv::new().fill_random(&mut r);
    ExecutionId::derive(tag, &r, b"")
}

/// A new request id: each intent is signed at most once by the nodes' journals.
pub fn fresh_id() -> uuid::Uuid {
    let mut r = [0u8; 16];
    SystemEnv::new().fill_random(&mut r);
    uuid::Uuid::from_bytes(r)
}

/// A proof of control with `challenge`: the one kind of message nodes sign.
pub fn proof_request(challenge: &[u8]) -> SignRequest {
    SignRequest {
        format: TxFormat::ProofOfControl,
        tx: hex::encode(challenge),
        ..Default::default()
    }
}

pub fn verify_ecdsa(pk: &[u8], digest: &[u8], sig: &[u8]) {
    let pk = secp256k1::PublicKey::from_slice(pk).unwrap();
    let msg = secp256k1::Message::from_digest(digest.try_into().unwrap());
    let sig = secp256k1::ecdsa::Signature::from_compact(sig).unwrap();
    secp256k1::SECP256K1.verify_ecdsa(&msg, &sig, &pk).unwrap();
}

/// BIP-340 by libsecp256k1 (32-byte messages, as a Taproot sighash is) and by k256.
pub fn verify_bip340(pk: &[u8], msg: &[u8], sig: &[u8]) {
    let xonly = secp256k1::XOnlyPublicKey::from_slice(pk).unwrap();
    let m = secp256k1::Message::from_digest(msg.try_into().unwrap());
    let s = secp256k1::schnorr::Signature::from_slice(sig).unwrap();
    secp256k1::SECP256K1.verify_schnorr(&s, &m, &xonly).unwrap();
    let vk = k256::schnorr::VerifyingKey::from_bytes(pk).unwrap();
    let sig = k256::schnorr::Signature::try_from(sig).unwrap();
    vk.verify_raw(msg, &sig).unwrap();
}

pub fn verify_ed25519(pk: &[u8], msg: &[u8], sig: &[u8]) {
    use ed25519_dalek::Verifier;
    let vk = ed25519_dalek::VerifyingKey::from_bytes(pk.try_into().unwrap()).unwrap();
    let sig = ed25519_dalek::Signature::from_slice(sig).unwrap();
    vk.verify(msg, &sig).unwrap();
}

/// A dev CA and three nodes' configs and certificates under `dir` (test primes); the CA's
/// certificate and key paths.
pub fn prepare(dir: &Path, governance: Option<(PathBuf, String)>) -> (Cluster, PathBuf, PathBuf) {
    prepare_n(dir, governance, 3)
}

/// [`prepare`] with `n` nodes.
pub fn prepare_n(
    dir: &Path,
    governance: Option<(PathBuf, String)>,
    n: u16,
) -> (Cluster, PathBuf, PathBuf) {
    let env = SystemEnv::new();
    let ca = dir.join("ca.pem");
    let ca_key = dir.join("ca-key.pem");
    cluster::ensure_ca(&ca, &ca_key, env.now()).unwrap();
    let opts = Options {
        n,
        addrs: (0..n).map(|_| free_addr()).collect(),
        test_primes_file: Some(primes_fixture()),
        governance,
    };
    let cl = cluster::prepare(&dir.join("signers"), &ca, &ca_key, &opts, &env).unwrap();
    (cl, ca, ca_key)
}

pub async fn wait_live(o: &Orchestrator, want: usize) {
    for _ in 0..200 {
        if o.live_nodes().await.len() >= want {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("nodes did not come up");
}

/// A client holding node `id`'s certificate: what a compromised node could send.
pub async fn impersonate(
    cluster: &Cluster,
    id: u16,
    target: u16,
) -> tokio_rustls::client::TlsStream<TcpStream> {
    let certs = cluster.dir.join("certs");
    let creds = Credentials::load(
        &certs.join(format!("signer-{id}.pem")),
        &certs.join(format!("signer-{id}-key.pem")),
    )
    .unwrap();
    let t = cluster.nodes.iter().find(|n| n.id == target).unwrap();
    let config = tls::client_config(&creds, &t.cert_sha256).unwrap();
    let tcp = TcpStream::connect(t.addr).await.unwrap();
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(tls::server_name(), tcp)
        .await
        .unwrap()
}
