//! Mutual TLS 1.3 with pinned certificates. A node accepts a connection only from a client
//! whose certificate's SHA-256 is one it was configured with (a peer node or an
//! orchestrator), and connects only to a peer whose certificate has the pinned hash. The
//! pin names the party: the identity of every frame's sender comes from here, not from the
//! frame. The handshake signatures are checked by rustls' own verifiers.
//!
//! In development the certificates are issued by the dev CA (see [`issue`]); in production
//! any certificate will do, since trust is the pin, not the issuer.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};
use sha2::{Digest, Sha256};

/// Who is at the other end of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Identity {
    Node(u16),
    Orchestrator,
    /// A member's client that may push governance entries (and read status), nothing else.
    Pusher,
}

/// SHA-256 of a certificate's DER, lower-case hex: the pin.
pub fn fingerprint(cert: &[u8]) -> String {
    hex::encode(Sha256::digest(cert))
}

/// Pins: certificate fingerprint → identity.
pub type Pins = BTreeMap<String, Identity>;

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

#[derive(Debug)]
struct PinnedClients {
    pins: Pins,
    provider: Arc<CryptoProvider>,
}

impl ClientCertVerifier for PinnedClients {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }
    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        if self.pins.contains_key(&fingerprint(end_entity)) {
            Ok(ClientCertVerified::assertion())
        } else {
            Err(rustls::Error::General("client certificate is not pinned".into()))
        }
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

#[derive(Debug)]
struct PinnedServer {
    pin: String,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for PinnedServer {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if fingerprint(end_entity) == self.pin {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General("server certificate does not match its pin".into()))
        }
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

/// A certificate chain and its private key, loaded from PEM files.
pub struct Credentials {
    pub certs: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let fp = self.certs.first().map(|c| fingerprint(c)).unwrap_or_default();
        f.debug_struct("Credentials").field("cert_sha256", &fp).field("key", &"<redacted>").finish()
    }
}

impl Credentials {
    pub fn load(cert: &Path, key: &Path) -> anyhow::Result<Self> {
        let certs = rustls_pemfile::certs(&mut std::fs::read(cert)?.as_slice())
            .collect::<Result<Vec<_>, _>>()?;
        anyhow::ensure!(!certs.is_empty(), "{}: no certificate", cert.display());
        let key = rustls_pemfile::private_key(&mut std::fs::read(key)?.as_slice())?
            .ok_or_else(|| anyhow::anyhow!("{}: no private key", key.display()))?;
        Ok(Credentials { certs, key })
    }

    pub fn fingerprint(&self) -> String {
        self.certs.first().map(|c| fingerprint(c)).unwrap_or_default()
    }

    fn key(&self) -> PrivateKeyDer<'static> {
        self.key.clone_key()
    }
}

/// The listening side: TLS 1.3 only, client certificate required and pinned.
pub fn server_config(creds: &Credentials, pins: Pins) -> anyhow::Result<rustls::ServerConfig> {
    let provider = provider();
    let verifier = Arc::new(PinnedClients { pins, provider: provider.clone() });
    Ok(rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_single_cert(creds.certs.clone(), creds.key())?)
}

/// The connecting side: TLS 1.3 only, presents `creds`, accepts only the pinned server.
pub fn client_config(
    creds: &Credentials,
    server_pin: &str,
) -> anyhow::Result<rustls::ClientConfig> {
    let provider = provider();
    let verifier =
        Arc::new(PinnedServer { pin: server_pin.to_string(), provider: provider.clone() });
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_client_auth_cert(creds.certs.clone(), creds.key())?)
}

/// Connect to `addr` over TCP (3 s) and TLS 1.3 (5 s), presenting `creds` and accepting
/// only the certificate pinned by `pin`.
pub async fn connect(
    creds: &Credentials,
    pin: &str,
    addr: std::net::SocketAddr,
) -> anyhow::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    use std::time::Duration;
    let config = client_config(creds, &pin.to_lowercase())?;
    let tcp = tokio::time::timeout(Duration::from_secs(3), tokio::net::TcpStream::connect(addr))
        .await??;
    tcp.set_nodelay(true)?;
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    Ok(tokio::time::timeout(Duration::from_secs(5), connector.connect(server_name(), tcp))
        .await??)
}

/// The name a client puts in its SNI; trust comes from the pin, not from this name.
pub fn server_name() -> ServerName<'static> {
    ServerName::IpAddress(std::net::Ipv4Addr::LOCALHOST.into())
}

/// Issue a certificate for `name` (a node or the orchestrator) from the dev CA, valid for
/// both client and server authentication, and write it with its key (mode 0600) as
/// `DIR/NAME.pem` and `DIR/NAME-key.pem`. Returns its fingerprint. Keeps existing files.
pub fn issue(
    ca_cert: &Path,
    ca_key: &Path,
    dir: &Path,
    name: &str,
    now: strongroom_core::Timestamp,
) -> anyhow::Result<String> {
    use rcgen::{CertificateParams, DnType, KeyPair};
    let cert_path = dir.join(format!("{name}.pem"));
    let key_path = dir.join(format!("{name}-key.pem"));
    if cert_path.exists() && key_path.exists() {
        return Ok(Credentials::load(&cert_path, &key_path)?.fingerprint());
    }
    let ca_key = KeyPair::from_pem(&std::fs::read_to_string(ca_key)?)?;
    // The issuer is named by its distinguished name and key: rebuild the dev CA's
    // (see strongroom-server's pki) around its key.
    anyhow::ensure!(ca_cert.exists(), "{}: no CA certificate", ca_cert.display());
    let mut ca_params = CertificateParams::default();
    ca_params.distinguished_name.push(DnType::CommonName, "Strongroom development CA");
    ca_params.distinguished_name.push(DnType::OrganizationName, "Strongroom");
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Constrained(0));
    let ca = ca_params.self_signed(&ca_key)?;
    let (key, params) = leaf(name, now, 365)?;
    let cert = params.signed_by(&key, &ca, &ca_key)?;
    std::fs::create_dir_all(dir)?;
    write(&cert_path, cert.pem().as_bytes(), false)?;
    write(&key_path, key.serialize_pem().as_bytes(), true)?;
    Ok(fingerprint(cert.der()))
}

/// Make a self-signed certificate for `name` (a signer node, an orchestrator, or a member's
/// pusher: trust is the pin, so no CA is needed), valid for client and server
/// authentication for ten years, and write it with its key (mode 0600) as `DIR/NAME.pem` and
/// `DIR/NAME-key.pem`. Returns its pin (the SHA-256 of the certificate) for the other side's
/// configuration. Keeps existing files, so running it again prints the same pin.
pub fn self_signed(
    dir: &Path,
    name: &str,
    now: strongroom_core::Timestamp,
) -> anyhow::Result<String> {
    self_signed_for(dir, name, &[], now)
}

/// [`self_signed`], also valid for `hosts` (DNS names or IP addresses): a node's or an API
/// server's address on its own host.
pub fn self_signed_for(
    dir: &Path,
    name: &str,
    hosts: &[String],
    now: strongroom_core::Timestamp,
) -> anyhow::Result<String> {
    anyhow::ensure!(
        !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'),
        "{name:?}: a name is letters, digits, '-' and '_'"
    );
    let cert_path = dir.join(format!("{name}.pem"));
    let key_path = dir.join(format!("{name}-key.pem"));
    if cert_path.exists() && key_path.exists() {
        return Ok(Credentials::load(&cert_path, &key_path)?.fingerprint());
    }
    let (key, mut params) = leaf(name, now, 3650)?;
    for h in hosts {
        let san = match h.parse::<std::net::IpAddr>() {
            Ok(ip) => rcgen::SanType::IpAddress(ip),
            Err(_) => rcgen::SanType::DnsName(h.as_str().try_into()?),
        };
        if !params.subject_alt_names.contains(&san) {
            params.subject_alt_names.push(san);
        }
    }
    let cert = params.self_signed(&key)?;
    std::fs::create_dir_all(dir)?;
    write(&key_path, key.serialize_pem().as_bytes(), true)?;
    write(&cert_path, cert.pem().as_bytes(), false)?;
    Ok(fingerprint(cert.der()))
}

/// A new key and the certificate parameters for `name`: client and server authentication,
/// valid from an hour before `now` for `days`.
fn leaf(
    name: &str,
    now: strongroom_core::Timestamp,
    days: i64,
) -> anyhow::Result<(rcgen::KeyPair, rcgen::CertificateParams)> {
    use rcgen::{CertificateParams, DnType, ExtendedKeyUsagePurpose, KeyPair, SanType};
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(vec![format!("{name}.strongroom.internal")])?;
    params.distinguished_name.push(DnType::CommonName, name);
    params.subject_alt_names.push(SanType::IpAddress(std::net::Ipv4Addr::LOCALHOST.into()));
    params.extended_key_usages =
        vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
    let now = time::OffsetDateTime::from_unix_timestamp(now.unix_ms() / 1000)?;
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now + time::Duration::days(days);
    Ok((key, params))
}

/// Write a file, 0600 when it holds a secret.
pub fn write(path: &Path, bytes: &[u8], secret: bool) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(if secret { 0o600 } else { 0o644 });
    }
    let mut f = options.open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}
