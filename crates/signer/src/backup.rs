//! Sealed backups of a node: its key shares, auxiliary info and mTLS identity, and the state
//! it decides with (its copy of the governance log and when it saw each entry, its signing
//! journal, velocity records, customers' keys, its audit log), sealed under a passphrase
//! (Argon2id, `strongroom_crypto::passphrase`) or to a quorum of recovery keys, any `k` of
//! whose holders open it together (`strongroom_crypto::recovery`). A restore on a fresh host re-seals every
//! secret under that host's own key-encryption key and puts the same certificate back, so
//! the other nodes' pins accept the node as before.
//!
//! Presignatures and unused Paillier primes are never in a backup: a presignature restored
//! after it was used would sign twice with one nonce, which gives the key away.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use strongroom_core::Env;
use strongroom_crypto::seal::KeyEncryptionKey;
use strongroom_crypto::SecretString;
use zeroize::Zeroizing;

use crate::node::Config;
use crate::vault::Vault;
use crate::wire::KeyInfo;

/// The node state files a backup carries (public or integrity-protected, not secret).
const STATE_FILES: [&str; 6] = [
    "governance.jsonl",
    "governance-seen.jsonl",
    "journal.jsonl",
    "velocity.jsonl",
    "customer-keys.jsonl",
    "audit.jsonl",
];

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BackupError {
    #[error("the backup is for node {backup}, this configuration is node {config}")]
    WrongNode { backup: u16, config: u16 },
    #[error("{0} holds keys already: a restore goes onto a fresh data folder only")]
    NotFresh(String),
    #[error("{path} holds another certificate than the backup's: restoring would change this node's pin")]
    OtherCertificate { path: String },
    #[error("the backup: {0}")]
    Sealed(#[from] strongroom_crypto::passphrase::PassphraseError),
    #[error("the backup: {0}")]
    Recovery(#[from] strongroom_crypto::recovery::RecoveryError),
    #[error("the backup is malformed: {0}")]
    Malformed(String),
    #[error("{0}")]
    Io(String),
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> BackupError + '_ {
    move |e| BackupError::Io(format!("{}: {e}", path.display()))
}

/// What a backup holds. Never printed: its `Debug` names only the node and the keys.
#[derive(Serialize, Deserialize)]
struct Contents {
    version: u8,
    node: u16,
    created_at_ms: i64,
    cert_pem: String,
    key_pem: String,
    /// Hex of the CGGMP21 auxiliary info (secret).
    aux: Option<String>,
    /// Auxiliary info made for other node sets, with each set (hex, secret).
    #[serde(default)]
    aux_sets: Vec<(Vec<u16>, String)>,
    /// Each key's public facts and its share (hex, secret).
    keys: Vec<(KeyInfo, String)>,
    files: BTreeMap<String, String>,
}

impl Drop for Contents {
    fn drop(&mut self) {
        use zeroize::Zeroize;
        self.key_pem.zeroize();
        if let Some(a) = &mut self.aux {
            a.zeroize();
        }
        for (_, a) in &mut self.aux_sets {
            a.zeroize();
        }
        for (_, share) in &mut self.keys {
            share.zeroize();
        }
    }
}

/// A summary of what a backup holds (nothing secret).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    pub node: u16,
    pub created_at_ms: i64,
    pub keys: Vec<KeyInfo>,
    pub aux: bool,
}

fn label(node: u16) -> String {
    format!("signer-backup-node-{node}")
}

/// How a backup is sealed: under a passphrase, or to a quorum of recovery keys (any `k` of
/// their holders together open it; `strongroom_crypto::recovery`).
#[derive(Debug, Clone, Copy)]
pub enum Sealing<'a> {
    Passphrase(&'a SecretString),
    Quorum { holders: &'a [strongroom_crypto::recovery::RecoveryPublic], k: usize },
}

/// What opens a backup: its passphrase, or enough of its recovery keys' secrets.
#[derive(Debug, Clone, Copy)]
pub enum Unlock<'a> {
    Passphrase(&'a SecretString),
    Recovery(&'a [strongroom_crypto::recovery::RecoverySecret]),
}

/// Seal a backup of the node `cfg` describes as `sealing` says; `kek` opens its vault.
/// Best taken with the node stopped (a signature made meanwhile would be missing from the
/// copied journal, and counted again on the mesh after a restore).
pub fn export(
    cfg: &Config,
    kek: Box<dyn KeyEncryptionKey>,
    sealing: Sealing<'_>,
    env: &dyn Env,
) -> Result<(String, Summary), BackupError> {
    let vault =
        Vault::open(&cfg.data_dir, cfg.id, kek).map_err(|e| BackupError::Io(e.to_string()))?;
    let mut keys = Vec::new();
    for info in vault.keys() {
        let (info, share) =
            vault.key_share(&info.key_id).map_err(|e| BackupError::Io(e.to_string()))?;
        keys.push((info, hex::encode(share.as_slice())));
    }
    let aux = if vault.has_aux() {
        Some(hex::encode(vault.aux().map_err(|e| BackupError::Io(e.to_string()))?.as_slice()))
    } else {
        None
    };
    let mut aux_sets = Vec::new();
    for set in vault.aux_sets() {
        let a = vault.aux_for(&set).map_err(|e| BackupError::Io(e.to_string()))?;
        aux_sets.push((set, hex::encode(a.as_slice())));
    }
    let mut files = BTreeMap::new();
    for name in STATE_FILES {
        let path = cfg.data_dir.join(name);
        if path.exists() {
            files.insert(name.to_owned(), std::fs::read_to_string(&path).map_err(io(&path))?);
        }
    }
    let contents = Contents {
        version: 1,
        node: cfg.id,
        created_at_ms: env.now().unix_ms(),
        cert_pem: std::fs::read_to_string(&cfg.cert).map_err(io(&cfg.cert))?,
        key_pem: std::fs::read_to_string(&cfg.key).map_err(io(&cfg.key))?,
        aux,
        aux_sets,
        keys,
        files,
    };
    let summary = summary(&contents);
    let json = Zeroizing::new(
        serde_json::to_vec(&contents).map_err(|e| BackupError::Malformed(e.to_string()))?,
    );
    let sealed = match sealing {
        Sealing::Passphrase(p) => {
            strongroom_crypto::passphrase::seal(&json, p, &label(cfg.id), env)?
        }
        Sealing::Quorum { holders, k } => {
            strongroom_crypto::recovery::seal(&json, holders, k, &label(cfg.id), env)?
        }
    };
    Ok((sealed, summary))
}

fn summary(c: &Contents) -> Summary {
    Summary {
        node: c.node,
        created_at_ms: c.created_at_ms,
        keys: c.keys.iter().map(|(k, _)| k.clone()).collect(),
        aux: c.aux.is_some(),
    }
}

/// Restore `sealed` onto the fresh host `cfg` describes, every secret re-sealed under `kek`
/// (this host's own key-encryption key). Refused for another node, a data folder that holds
/// keys, or a certificate file that differs from the backup's.
pub fn restore(
    cfg: &Config,
    kek: Box<dyn KeyEncryptionKey>,
    sealed: &str,
    unlock: Unlock<'_>,
    env: &dyn Env,
) -> Result<Summary, BackupError> {
    // A folder that holds anything is refused before the (slow) passphrase is tried.
    let vault =
        Vault::open(&cfg.data_dir, cfg.id, kek).map_err(|e| BackupError::Io(e.to_string()))?;
    if !vault.keys().is_empty() || vault.has_aux() {
        return Err(BackupError::NotFresh(cfg.data_dir.display().to_string()));
    }
    for name in STATE_FILES {
        if cfg.data_dir.join(name).exists() {
            return Err(BackupError::NotFresh(cfg.data_dir.display().to_string()));
        }
    }
    let wrong_node = |found: &str| BackupError::WrongNode {
        backup: found.strip_prefix("signer-backup-node-").and_then(|n| n.parse().ok()).unwrap_or(0),
        config: cfg.id,
    };
    let plain = match unlock {
        Unlock::Passphrase(p) => strongroom_crypto::passphrase::open(sealed, p, &label(cfg.id))
            .map_err(|e| match e {
                strongroom_crypto::passphrase::PassphraseError::WrongLabel { found, .. } => {
                    wrong_node(&found)
                }
                other => BackupError::Sealed(other),
            })?,
        Unlock::Recovery(secrets) => {
            strongroom_crypto::recovery::open(sealed, secrets, &label(cfg.id)).map_err(
                |e| match e {
                    strongroom_crypto::recovery::RecoveryError::WrongLabel { found, .. } => {
                        wrong_node(&found)
                    }
                    other => BackupError::Recovery(other),
                },
            )?
        }
    };
    let contents: Contents =
        serde_json::from_slice(&plain).map_err(|e| BackupError::Malformed(e.to_string()))?;
    if contents.version != 1 {
        return Err(BackupError::Malformed(format!("version {}", contents.version)));
    }
    if contents.node != cfg.id {
        return Err(BackupError::WrongNode { backup: contents.node, config: cfg.id });
    }
    // The same identity, or none yet: the peers pin this certificate.
    for (path, pem, secret) in
        [(&cfg.cert, &contents.cert_pem, false), (&cfg.key, &contents.key_pem, true)]
    {
        match std::fs::read_to_string(path) {
            Ok(have) if &have == pem => {}
            Ok(_) => {
                return Err(BackupError::OtherCertificate { path: path.display().to_string() })
            }
            Err(_) => {
                if let Some(dir) = path.parent() {
                    std::fs::create_dir_all(dir).map_err(io(dir))?;
                }
                crate::tls::write(path, pem.as_bytes(), secret).map_err(io(path))?;
            }
        }
    }
    let bad = |e: hex::FromHexError| BackupError::Malformed(e.to_string());
    if let Some(aux) = &contents.aux {
        let aux = Zeroizing::new(hex::decode(aux).map_err(bad)?);
        vault.put_aux(&aux, env).map_err(|e| BackupError::Io(e.to_string()))?;
    }
    for (set, aux) in &contents.aux_sets {
        let aux = Zeroizing::new(hex::decode(aux).map_err(bad)?);
        vault.put_aux_for(set, &aux, env).map_err(|e| BackupError::Io(e.to_string()))?;
    }
    for (info, share) in &contents.keys {
        let share = Zeroizing::new(hex::decode(share).map_err(bad)?);
        vault.put_key(info, &share, env).map_err(|e| BackupError::Io(e.to_string()))?;
    }
    for (name, text) in &contents.files {
        if !STATE_FILES.contains(&name.as_str()) {
            return Err(BackupError::Malformed(format!("unexpected file {name}")));
        }
        let path = cfg.data_dir.join(name);
        std::fs::write(&path, text).map_err(io(&path))?;
    }
    let log = crate::nodelog::NodeLog::open(&cfg.data_dir.join("audit.jsonl"), cfg.id)
        .map_err(|e| BackupError::Io(e.to_string()))?;
    let summary = summary(&contents);
    log.append(
        env.now().unix_ms(),
        "node.restored",
        "node",
        serde_json::json!({
            "backup_made_ms": contents.created_at_ms,
            "keys": summary.keys.iter().map(|k| k.key_id.clone()).collect::<Vec<_>>(),
        }),
    )
    .map_err(|e| BackupError::Io(e.to_string()))?;
    Ok(summary)
}
