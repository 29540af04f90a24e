//! Files for a local group of signer nodes (development and tests): a certificate per node
//! and one for the orchestrator, issued by the dev CA; a key-encryption key per node; one
//! config per node pinning the others' certificates. `strongroom dev` uses this for its
//! three signers; production writes its own configs.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use strongroom_core::{Env, Timestamp};

use crate::client::NodeAddr;
use crate::tls::{self, Credentials};

/// Where a prepared cluster's files are.
#[derive(Debug, Clone)]
pub struct Cluster {
    pub dir: PathBuf,
    pub nodes: Vec<NodeAddr>,
    pub configs: Vec<PathBuf>,
    pub orchestrator_cert: PathBuf,
    pub orchestrator_key: PathBuf,
    /// A members' client certificate every node pins as a pusher (`governance push`).
    pub pusher_cert: PathBuf,
    pub pusher_key: PathBuf,
}

impl Cluster {
    pub fn orchestrator_credentials(&self) -> anyhow::Result<Credentials> {
        Credentials::load(&self.orchestrator_cert, &self.orchestrator_key)
    }

    pub fn pusher_credentials(&self) -> anyhow::Result<Credentials> {
        Credentials::load(&self.pusher_cert, &self.pusher_key)
    }
}

/// Options for [`prepare`].
#[derive(Debug, Clone)]
pub struct Options {
    pub n: u16,
    pub addrs: Vec<SocketAddr>,
    /// TEST ONLY primes (see `node::Config::test_primes_file`).
    pub test_primes_file: Option<PathBuf>,
    /// The governance genesis file and the hash every node pins. `None` writes
    /// `insecure_no_governance = true` into every node's configuration: nodes that sign
    /// whatever matches the orchestrator's intent, for development only.
    pub governance: Option<(PathBuf, String)>,
}

/// Create a CA (if `ca_cert`/`ca_key` do not exist yet) with the dev CA's name.
pub fn ensure_ca(ca_cert: &Path, ca_key: &Path, now: Timestamp) -> anyhow::Result<()> {
    if ca_cert.exists() && ca_key.exists() {
        return Ok(());
    }
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
    let key = KeyPair::generate()?;
    let mut p = CertificateParams::default();
    p.distinguished_name.push(DnType::CommonName, "Strongroom development CA");
    p.distinguished_name.push(DnType::OrganizationName, "Strongroom");
    p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    let t = time::OffsetDateTime::from_unix_timestamp(now.unix_ms() / 1000)?;
    p.not_before = t - time::Duration::hours(1);
    p.not_after = t + time::Duration::days(3650);
    let cert = p.self_signed(&key)?;
    if let Some(d) = ca_cert.parent() {
        std::fs::create_dir_all(d)?;
    }
    tls::write(ca_cert, cert.pem().as_bytes(), false)?;
    tls::write(ca_key, key.serialize_pem().as_bytes(), true)?;
    Ok(())
}

/// Write (or reuse) everything `n` nodes need under `dir`. Existing certificates and keys
/// are kept, so a restarted cluster keeps its shares and pins.
pub fn prepare(
    dir: &Path,
    ca_cert: &Path,
    ca_key: &Path,
    opts: &Options,
    env: &dyn Env,
) -> anyhow::Result<Cluster> {
    anyhow::ensure!(opts.addrs.len() == usize::from(opts.n), "one address per node");
    std::fs::create_dir_all(dir)?;
    let now = env.now();
    let certs = dir.join("certs");
    let orch_pin = tls::issue(ca_cert, ca_key, &certs, "orchestrator", now)?;
    // A member's own certificate, self-signed as a member would make it (`strongroom
    // certificate`): the nodes trust its pin, not an issuer.
    let pusher_pin = tls::self_signed(&certs, "pusher", now)?;
    let mut nodes = Vec::new();
    for (i, addr) in (1..=opts.n).zip(&opts.addrs) {
        let pin = tls::issue(ca_cert, ca_key, &certs, &format!("signer-{i}"), now)?;
        nodes.push(NodeAddr { id: i, addr: *addr, cert_sha256: pin });
    }
    let mut configs = Vec::new();
    for node in &nodes {
        let home = dir.join(format!("signer-{}", node.id));
        std::fs::create_dir_all(&home)?;
        let kek = home.join("kek.hex");
        if !kek.exists() {
            let mut k = zeroize::Zeroizing::new([0u8; 32]);
            env.fill_random(k.as_mut());
            tls::write(&kek, hex::encode(&k[..]).as_bytes(), true)?;
        }
        let mut toml = String::new();
        toml.push_str(&format!("id = {}\nlisten = \"{}\"\n", node.id, node.addr));
        toml.push_str(&format!("data_dir = {:?}\n", home.join("data")));
        toml.push_str(&format!("cert = {:?}\n", certs.join(format!("signer-{}.pem", node.id))));
        toml.push_str(&format!("key = {:?}\n", certs.join(format!("signer-{}-key.pem", node.id))));
        toml.push_str(&format!("kek_file = {kek:?}\n"));
        toml.push_str(&format!("orchestrators = [\"{orch_pin}\"]\n"));
        toml.push_str(&format!("pushers = [\"{pusher_pin}\"]\n"));
        match &opts.governance {
            Some((genesis, pin)) => toml
                .push_str(&format!("governance_genesis = {genesis:?}\ngovernance_pin = {pin:?}\n")),
            None => toml.push_str("insecure_no_governance = true\n"),
        }
        if let Some(p) = &opts.test_primes_file {
            toml.push_str(&format!("test_primes_file = {p:?}\n"));
        }
        for peer in nodes.iter().filter(|p| p.id != node.id) {
            toml.push_str(&format!(
                "\n[[peers]]\nid = {}\naddr = \"{}\"\ncert_sha256 = \"{}\"\n",
                peer.id, peer.addr, peer.cert_sha256
            ));
        }
        let path = home.join("signer.toml");
        tls::write(&path, toml.as_bytes(), false)?;
        configs.push(path);
    }
    Ok(Cluster {
        dir: dir.to_path_buf(),
        nodes,
        configs,
        orchestrator_cert: certs.join("orchestrator.pem"),
        orchestrator_key: certs.join("orchestrator-key.pem"),
        pusher_cert: certs.join("pusher.pem"),
        pusher_key: certs.join("pusher-key.pem"),
    })
}
