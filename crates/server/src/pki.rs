//! The development PKI: a CA and a server certificate made at first start and kept in the
//! data folder, so `curl --cacert DATA/tls/ca.pem` trusts the dev server. Production
//! deployments bring their own certificate and key instead (`[tls]` in the config).
//!
//! Key files are written with mode 0600. Key generation uses the operating system's random
//! source through `ring`, as every TLS stack does.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SanType,
};
use strongroom_core::Timestamp;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PkiError {
    #[error("could not write {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
    #[error("could not read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("certificate generation failed: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("bad time for certificate validity")]
    Time,
}

/// Paths of the dev PKI's files.
#[derive(Debug, Clone)]
pub struct DevPki {
    pub ca_cert: PathBuf,
    pub ca_key: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
}

impl DevPki {
    pub fn in_dir(dir: &Path) -> Self {
        DevPki {
            ca_cert: dir.join("ca.pem"),
            ca_key: dir.join("ca-key.pem"),
            server_cert: dir.join("server.pem"),
            server_key: dir.join("server-key.pem"),
        }
    }

    /// Create the CA and server certificate unless both already exist. Returns whether it
    /// created them.
    pub fn ensure(&self, hosts: &[String], now: Timestamp) -> Result<bool, PkiError> {
        if self.ca_cert.exists() && self.server_cert.exists() && self.server_key.exists() {
            return Ok(false);
        }
        if let Some(dir) = self.ca_cert.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|source| PkiError::Write { path: dir.into(), source })?;
        }
        let not_before = to_time(now.plus_ms(-3_600_000))?;
        let ca_key = KeyPair::generate()?;
        let mut ca = CertificateParams::default();
        ca.distinguished_name = name("Strongroom development CA");
        ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        ca.not_before = not_before;
        ca.not_after = to_time(now.plus_ms(10 * 365 * 86_400_000))?;
        let ca_cert = ca.self_signed(&ca_key)?;

        let server_key = KeyPair::generate()?;
        let mut server = CertificateParams::new(hosts.to_vec())?;
        server.distinguished_name = name("Strongroom development server");
        server
            .subject_alt_names
            .push(SanType::IpAddress(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST)));
        server
            .subject_alt_names
            .push(SanType::IpAddress(std::net::IpAddr::V6(std::net::Ipv6Addr::LOCALHOST)));
        server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        server.not_before = not_before;
        server.not_after = to_time(now.plus_ms(365 * 86_400_000))?;
        let server_cert = server.signed_by(&server_key, &ca_cert, &ca_key)?;

        write(&self.ca_cert, ca_cert.pem().as_bytes(), false)?;
        write(&self.ca_key, ca_key.serialize_pem().as_bytes(), true)?;
        write(&self.server_cert, server_cert.pem().as_bytes(), false)?;
        write(&self.server_key, server_key.serialize_pem().as_bytes(), true)?;
        Ok(true)
    }
}

fn name(cn: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    dn.push(DnType::OrganizationName, "Strongroom");
    dn
}

fn to_time(t: Timestamp) -> Result<time::OffsetDateTime, PkiError> {
    time::OffsetDateTime::from_unix_timestamp(t.unix_ms() / 1000).map_err(|_| PkiError::Time)
}

fn write(path: &Path, bytes: &[u8], secret: bool) -> Result<(), PkiError> {
    use std::io::Write;
    let err = |source| PkiError::Write { path: path.into(), source };
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(if secret { 0o600 } else { 0o644 });
    }
    let mut f = options.open(path).map_err(err)?;
    f.write_all(bytes).map_err(err)?;
    f.sync_all().map_err(err)
}

/// Read a file, naming it in the error.
pub fn read(path: &Path) -> Result<Vec<u8>, PkiError> {
    std::fs::read(path).map_err(|source| PkiError::Read { path: path.into(), source })
}
