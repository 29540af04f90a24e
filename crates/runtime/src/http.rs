//! Outbound HTTPS: every client trusts the platform's roots (`rustls-native-certs`, which
//! honours `SSL_CERT_FILE` and `SSL_CERT_DIR`), and a CA file per endpoint adds a private
//! PKI's root.

use std::path::Path;

use crate::RuntimeError;

/// The certificates in a PEM file, refused when it holds none.
pub fn ca_certificates(path: &Path) -> Result<Vec<reqwest::Certificate>, RuntimeError> {
    let pem = std::fs::read(path)
        .map_err(|e| RuntimeError::io(format!("reading CA file {}", path.display()), e))?;
    let certs = reqwest::Certificate::from_pem_bundle(&pem)
        .map_err(|e| RuntimeError::Config(format!("CA file {}: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(RuntimeError::Config(format!(
            "CA file {}: no certificate in it",
            path.display()
        )));
    }
    Ok(certs)
}

/// A CA file's bytes, for clients built in other crates.
pub fn read_ca(path: Option<&Path>) -> Result<Option<Vec<u8>>, RuntimeError> {
    match path {
        Some(p) => {
            ca_certificates(p)?;
            std::fs::read(p)
                .map(Some)
                .map_err(|e| RuntimeError::io(format!("reading CA file {}", p.display()), e))
        }
        None => Ok(None),
    }
}
