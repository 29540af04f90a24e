//! A node's secrets on its own disk, each file sealed with AES-256-GCM under the node's
//! key-encryption key (`strongroom_crypto::seal`). The associated data names the node, the
//! kind of record and its slot, so a sealed file moved to another slot or node does not
//! open. Nothing here goes to the shared database.
//!
//! Layout under the data folder:
//! - `primes/N.sealed`: Paillier primes made ahead of time (consumed by aux info);
//! - `aux.sealed`: this node's CGGMP21 auxiliary info;
//! - `keys/ID.sealed` and `keys/ID.json`: a key share, and its public facts;
//! - `presig/ID/SIGNERS/PID.sealed`: presignatures. Using one first renames it to
//!   `PID.claimed` (atomic: of two concurrent users only one succeeds), then deletes it once
//!   the partial signature is made. A `.claimed` file found at start is deleted unused.
//!
//! Every write goes to a temporary file, is synced, then renamed into place.

use std::path::{Path, PathBuf};

use strongroom_core::Env;
use strongroom_crypto::seal::{self, KeyEncryptionKey};
use zeroize::Zeroizing;

use crate::wire::KeyInfo;

#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: {source}")]
    Seal { path: PathBuf, source: strongroom_crypto::seal::SealError },
    #[error("{0}: not found")]
    NotFound(String),
    #[error("{0}")]
    Invalid(String),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> VaultError + '_ {
    move |source| VaultError::Io { path: path.to_path_buf(), source }
}

/// Names used in paths must be plain: no separators, no dots at the start.
pub fn check_name(name: &str) -> Result<(), VaultError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(VaultError::Invalid(format!("bad name {name:?}: use letters, digits, - _ .")))
    }
}

pub struct Vault {
    dir: PathBuf,
    node: u16,
    kek: Box<dyn KeyEncryptionKey>,
}

impl std::fmt::Debug for Vault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vault").field("dir", &self.dir).field("kek", &self.kek.id()).finish()
    }
}

impl Vault {
    pub fn open(dir: &Path, node: u16, kek: Box<dyn KeyEncryptionKey>) -> Result<Self, VaultError> {
        for sub in ["primes", "keys", "presig", "tmp"] {
            let p = dir.join(sub);
            std::fs::create_dir_all(&p).map_err(io(&p))?;
        }
        let vault = Vault { dir: dir.to_path_buf(), node, kek };
        vault.drop_claimed(&dir.join("presig"))?;
        vault.finish_commits()?;
        Ok(vault)
    }

    /// Presignatures claimed before a crash are never used: delete them.
    fn drop_claimed(&self, dir: &Path) -> Result<(), VaultError> {
        let Ok(entries) = std::fs::read_dir(dir) else { return Ok(()) };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                self.drop_claimed(&p)?;
            } else if p.extension().is_some_and(|x| x == "claimed") {
                std::fs::remove_file(&p).map_err(io(&p))?;
            }
        }
        Ok(())
    }

    fn aad(&self, kind: &str, slot: &str) -> Vec<u8> {
        format!("strongroom/signer/v1\0node={}\0{kind}\0{slot}", self.node).into_bytes()
    }

    fn write_atomic(&self, path: &Path, bytes: &[u8], secret: bool) -> Result<(), VaultError> {
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let tmp = self.dir.join("tmp").join(format!("{name}.tmp"));
        crate::tls::write(&tmp, bytes, secret).map_err(io(&tmp))?;
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(io(parent))?;
        }
        std::fs::rename(&tmp, path).map_err(io(path))?;
        if let Some(parent) = path.parent() {
            if let Ok(d) = std::fs::File::open(parent) {
                let _ = d.sync_all();
            }
        }
        Ok(())
    }

    fn put_sealed(
        &self,
        path: &Path,
        kind: &str,
        slot: &str,
        plain: &[u8],
        env: &dyn Env,
    ) -> Result<(), VaultError> {
        let sealed = seal::seal(self.kek.as_ref(), plain, &self.aad(kind, slot), env)
            .map_err(|source| VaultError::Seal { path: path.to_path_buf(), source })?;
        self.write_atomic(path, &sealed, true)
    }

    fn get_sealed(
        &self,
        path: &Path,
        kind: &str,
        slot: &str,
    ) -> Result<Zeroizing<Vec<u8>>, VaultError> {
        let sealed = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(VaultError::NotFound(format!("{kind} {slot}")))
            }
            Err(e) => return Err(VaultError::Io { path: path.to_path_buf(), source: e }),
        };
        seal::open(self.kek.as_ref(), &sealed, &self.aad(kind, slot))
            .map_err(|source| VaultError::Seal { path: path.to_path_buf(), source })
    }

    // --- Paillier primes -------------------------------------------------------------

    pub fn primes_count(&self) -> usize {
        std::fs::read_dir(self.dir.join("primes"))
            .map(|d| {
                d.flatten().filter(|e| e.path().extension().is_some_and(|x| x == "sealed")).count()
            })
            .unwrap_or(0)
    }

    pub fn put_primes(&self, id: &str, json: &[u8], env: &dyn Env) -> Result<(), VaultError> {
        check_name(id)?;
        let path = self.dir.join("primes").join(format!("{id}.sealed"));
        self.put_sealed(&path, "primes", id, json, env)
    }

    /// Take one set of primes out of the pool (deleting it: primes are used once).
    pub fn take_primes(&self) -> Result<Zeroizing<Vec<u8>>, VaultError> {
        let dir = self.dir.join("primes");
        let mut names: Vec<String> = std::fs::read_dir(&dir)
            .map_err(io(&dir))?
            .flatten()
            .filter_map(|e| {
                e.file_name().to_str().and_then(|n| n.strip_suffix(".sealed")).map(String::from)
            })
            .collect();
        names.sort();
        let id = names.into_iter().next().ok_or_else(|| VaultError::NotFound("primes".into()))?;
        let path = dir.join(format!("{id}.sealed"));
        let plain = self.get_sealed(&path, "primes", &id)?;
        std::fs::remove_file(&path).map_err(io(&path))?;
        Ok(plain)
    }

    // --- auxiliary info ----------------------------------------------------------------

    pub fn put_aux(&self, json: &[u8], env: &dyn Env) -> Result<(), VaultError> {
        self.put_sealed(&self.dir.join("aux.sealed"), "aux", "", json, env)
    }

    pub fn aux(&self) -> Result<Zeroizing<Vec<u8>>, VaultError> {
        self.get_sealed(&self.dir.join("aux.sealed"), "aux", "")
    }

    pub fn has_aux(&self) -> bool {
        self.dir.join("aux.sealed").exists()
    }

    /// Auxiliary info made for another node set than the first (after a quarantine or an
    /// enrolment): `aux/1-2-4.sealed`, the set in its name and in its sealing slot.
    pub fn put_aux_for(&self, set: &[u16], json: &[u8], env: &dyn Env) -> Result<(), VaultError> {
        let slot = set_slot(set);
        let path = self.dir.join("aux").join(format!("{slot}.sealed"));
        self.put_sealed(&path, "aux", &slot, json, env)
    }

    /// The auxiliary info made for `set` by [`Vault::put_aux_for`], if any.
    pub fn aux_for(&self, set: &[u16]) -> Result<Zeroizing<Vec<u8>>, VaultError> {
        let slot = set_slot(set);
        self.get_sealed(&self.dir.join("aux").join(format!("{slot}.sealed")), "aux", &slot)
    }

    /// The node sets with auxiliary info of their own (besides the first).
    pub fn aux_sets(&self) -> Vec<Vec<u16>> {
        let Ok(d) = std::fs::read_dir(self.dir.join("aux")) else { return Vec::new() };
        let mut sets: Vec<Vec<u16>> = d
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().to_str()?.strip_suffix(".sealed")?.to_owned();
                name.split('-').map(|n| n.parse().ok()).collect()
            })
            .collect();
        sets.sort();
        sets
    }

    // --- key shares --------------------------------------------------------------------

    pub fn put_key(&self, info: &KeyInfo, share: &[u8], env: &dyn Env) -> Result<(), VaultError> {
        check_name(&info.key_id)?;
        let dir = self.dir.join("keys");
        let public =
            serde_json::to_vec_pretty(info).map_err(|e| VaultError::Invalid(e.to_string()))?;
        let sealed = dir.join(format!("{}.sealed", info.key_id));
        if sealed.exists() {
            return Err(VaultError::Invalid(format!("key {} already exists", info.key_id)));
        }
        // The public facts bind the share: both are written, the share last.
        let aad_slot = format!("{}:{}", info.key_id, hex::encode(sha2_256(&public)));
        self.write_atomic(&dir.join(format!("{}.json", info.key_id)), &public, false)?;
        self.put_sealed(&sealed, "key", &aad_slot, share, env)
    }

    /// Keep a refreshed share beside the current one (`ID.next.sealed`), with the key's
    /// public facts unchanged.
    pub fn put_next_share(
        &self,
        key_id: &str,
        share: &[u8],
        env: &dyn Env,
    ) -> Result<(), VaultError> {
        let info = self.key_info(key_id)?;
        self.put_next(&info, share, env)
    }

    /// Keep a new share for `info.key_id` beside the current one, with new public facts
    /// (`ID.next.json`, when the parties change: a refresh without a quarantined node, a
    /// node enrolled). Nothing changes until [`Vault::commit_next_share`].
    pub fn put_next(&self, info: &KeyInfo, share: &[u8], env: &dyn Env) -> Result<(), VaultError> {
        check_name(&info.key_id)?;
        let key_id = &info.key_id;
        let dir = self.dir.join("keys");
        let current = std::fs::read(dir.join(format!("{key_id}.json")))
            .map_err(|_| VaultError::NotFound(format!("key {key_id}")))?;
        let public =
            serde_json::to_vec_pretty(info).map_err(|e| VaultError::Invalid(e.to_string()))?;
        let next_json = dir.join(format!("{key_id}.next.json"));
        self.discard_next_share(key_id)?;
        if public != current {
            self.write_atomic(&next_json, &public, false)?;
        }
        let slot = format!("{key_id}:{}", hex::encode(sha2_256(&public)));
        let path = dir.join(format!("{key_id}.next.sealed"));
        self.put_sealed(&path, "key", &slot, share, env)
    }

    /// Make the new share (and its public facts) current: renames, share first. A crash
    /// between the two renames is finished by [`Vault::open`]. `Ok(false)` if there was none.
    pub fn commit_next_share(&self, key_id: &str) -> Result<bool, VaultError> {
        check_name(key_id)?;
        let dir = self.dir.join("keys");
        let next = dir.join(format!("{key_id}.next.sealed"));
        if !next.exists() {
            return Ok(false);
        }
        let current = dir.join(format!("{key_id}.sealed"));
        std::fs::rename(&next, &current).map_err(io(&current))?;
        let next_json = dir.join(format!("{key_id}.next.json"));
        if next_json.exists() {
            let json = dir.join(format!("{key_id}.json"));
            std::fs::rename(&next_json, &json).map_err(io(&json))?;
        }
        Ok(true)
    }

    /// Drop a new share not committed (its public facts first, so that a crash leaves
    /// nothing [`Vault::open`] could take for a commit in progress).
    pub fn discard_next_share(&self, key_id: &str) -> Result<(), VaultError> {
        check_name(key_id)?;
        for name in [format!("{key_id}.next.json"), format!("{key_id}.next.sealed")] {
            let path = self.dir.join("keys").join(name);
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(VaultError::Io { path, source: e }),
            }
        }
        Ok(())
    }

    /// A commit cut between its two renames leaves `ID.next.json` without `ID.next.sealed`,
    /// and `ID.sealed` bound to it: finish it. The same file left by a `put_next` cut short
    /// (`ID.sealed` does not open under it) is dropped.
    fn finish_commits(&self) -> Result<(), VaultError> {
        let dir = self.dir.join("keys");
        let Ok(entries) = std::fs::read_dir(&dir) else { return Ok(()) };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(key_id) = name.strip_suffix(".next.json") else { continue };
            if dir.join(format!("{key_id}.next.sealed")).exists() {
                continue;
            }
            let public = std::fs::read(e.path()).map_err(io(&e.path()))?;
            let slot = format!("{key_id}:{}", hex::encode(sha2_256(&public)));
            let sealed = dir.join(format!("{key_id}.sealed"));
            if self.get_sealed(&sealed, "key", &slot).is_ok() {
                let json = dir.join(format!("{key_id}.json"));
                std::fs::rename(e.path(), &json).map_err(io(&json))?;
            } else {
                std::fs::remove_file(e.path()).map_err(io(&e.path()))?;
            }
        }
        Ok(())
    }

    pub fn key_info(&self, key_id: &str) -> Result<KeyInfo, VaultError> {
        check_name(key_id)?;
        let path = self.dir.join("keys").join(format!("{key_id}.json"));
        let bytes =
            std::fs::read(&path).map_err(|_| VaultError::NotFound(format!("key {key_id}")))?;
        serde_json::from_slice(&bytes).map_err(|e| VaultError::Invalid(e.to_string()))
    }

    /// The share, opened only if its public facts are the ones it was sealed with.
    pub fn key_share(&self, key_id: &str) -> Result<(KeyInfo, Zeroizing<Vec<u8>>), VaultError> {
        check_name(key_id)?;
        let dir = self.dir.join("keys");
        let public_path = dir.join(format!("{key_id}.json"));
        let public = std::fs::read(&public_path)
            .map_err(|_| VaultError::NotFound(format!("key {key_id}")))?;
        let info: KeyInfo =
            serde_json::from_slice(&public).map_err(|e| VaultError::Invalid(e.to_string()))?;
        let aad_slot = format!("{key_id}:{}", hex::encode(sha2_256(&public)));
        let share = self.get_sealed(&dir.join(format!("{key_id}.sealed")), "key", &aad_slot)?;
        Ok((info, share))
    }

    pub fn keys(&self) -> Vec<KeyInfo> {
        let dir = self.dir.join("keys");
        let mut out: Vec<KeyInfo> = std::fs::read_dir(&dir)
            .map(|d| {
                d.flatten()
                    .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
                    .filter(|e| {
                        let name = e.file_name().to_string_lossy().into_owned();
                        !name.starts_with('.') && !name.ends_with(".next.json")
                    })
                    .filter_map(|e| std::fs::read(e.path()).ok())
                    .filter_map(|b| serde_json::from_slice(&b).ok())
                    .collect()
            })
            .unwrap_or_default();
        out.sort_by(|a, b| a.key_id.cmp(&b.key_id));
        out
    }

    // --- presignatures -----------------------------------------------------------------

    fn presig_dir(&self, key_id: &str, signers: &[u16]) -> PathBuf {
        let set: Vec<String> = signers.iter().map(u16::to_string).collect();
        self.dir.join("presig").join(key_id).join(set.join("-"))
    }

    fn presig_slot(key_id: &str, signers: &[u16], id: &str) -> String {
        format!("{key_id}/{signers:?}/{id}")
    }

    pub fn put_presig(
        &self,
        key_id: &str,
        signers: &[u16],
        id: &str,
        json: &[u8],
        env: &dyn Env,
    ) -> Result<(), VaultError> {
        check_name(key_id)?;
        check_name(id)?;
        let path = self.presig_dir(key_id, signers).join(format!("{id}.sealed"));
        self.put_sealed(&path, "presig", &Self::presig_slot(key_id, signers, id), json, env)
    }

    /// Claim a presignature for one use. After this returns, no other caller can get it,
    /// even if this process dies before [`Claimed::consume`].
    pub fn claim_presig(
        &self,
        key_id: &str,
        signers: &[u16],
        id: &str,
    ) -> Result<Claimed, VaultError> {
        check_name(key_id)?;
        check_name(id)?;
        let dir = self.presig_dir(key_id, signers);
        let from = dir.join(format!("{id}.sealed"));
        let to = dir.join(format!("{id}.claimed"));
        std::fs::rename(&from, &to).map_err(|_| {
            VaultError::NotFound(format!("presignature {id} for {key_id} {signers:?}"))
        })?;
        let plain = self.get_sealed(&to, "presig", &Self::presig_slot(key_id, signers, id));
        match plain {
            Ok(plain) => Ok(Claimed { path: to, plain }),
            Err(e) => {
                let _ = std::fs::remove_file(&to);
                Err(e)
            }
        }
    }

    /// Delete every presignature made with `node` (quarantined: its half of each is in
    /// hands no longer trusted). Returns how many went.
    pub fn discard_presigs_with(&self, node: u16) -> Result<usize, VaultError> {
        let mut gone = 0;
        for entry in self.presigs().into_iter().filter(|e| e.signers.contains(&node)) {
            let dir = self.presig_dir(&entry.key_id, &entry.signers);
            gone += entry.ids.len();
            std::fs::remove_dir_all(&dir).map_err(io(&dir))?;
        }
        Ok(gone)
    }

    pub fn presigs(&self) -> Vec<crate::wire::PoolEntry> {
        let mut out = Vec::new();
        let root = self.dir.join("presig");
        for key in std::fs::read_dir(&root).into_iter().flatten().flatten() {
            let key_id = key.file_name().to_string_lossy().into_owned();
            for set in std::fs::read_dir(key.path()).into_iter().flatten().flatten() {
                let signers: Vec<u16> = set
                    .file_name()
                    .to_string_lossy()
                    .split('-')
                    .filter_map(|s| s.parse().ok())
                    .collect();
                let mut ids: Vec<String> = std::fs::read_dir(set.path())
                    .into_iter()
                    .flatten()
                    .flatten()
                    .filter_map(|e| {
                        e.file_name()
                            .to_str()
                            .and_then(|n| n.strip_suffix(".sealed"))
                            .map(String::from)
                    })
                    .collect();
                ids.sort();
                out.push(crate::wire::PoolEntry { key_id: key_id.clone(), signers, ids });
            }
        }
        out.sort_by(|a, b| (&a.key_id, &a.signers).cmp(&(&b.key_id, &b.signers)));
        out
    }
}

/// A presignature taken out of the pool. Its file is gone for good once consumed.
pub struct Claimed {
    path: PathBuf,
    pub plain: Zeroizing<Vec<u8>>,
}

impl std::fmt::Debug for Claimed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Claimed").field("path", &self.path).finish_non_exhaustive()
    }
}

impl Claimed {
    /// Delete the claimed file. Called after the partial signature is made and before it
    /// leaves the node.
    pub fn consume(self) -> Result<(), VaultError> {
        std::fs::remove_file(&self.path).map_err(io(&self.path))
    }
}

fn sha2_256(b: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(b).into()
}

/// A node set as a file name and sealing slot: `1-2-4`.
fn set_slot(set: &[u16]) -> String {
    let mut sorted = set.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    sorted.iter().map(u16::to_string).collect::<Vec<_>>().join("-")
}

#[cfg(test)]
mod tests {
    use super::*;
    use strongroom_core::{FixedEnv, Timestamp};
    use strongroom_crypto::seal::SoftwareKek;

    fn vault(dir: &Path, node: u16) -> Vault {
        Vault::open(dir, node, Box::new(SoftwareKek::from_bytes([node as u8; 32]))).unwrap()
    }

    #[test]
    fn auxiliary_info_is_kept_per_node_set_and_bound_to_it() {
        let dir = tempfile::tempdir().unwrap();
        let env = FixedEnv::new(Timestamp::from_unix_ms(0), 1);
        let v = vault(dir.path(), 1);
        v.put_aux(b"first", &env).unwrap();
        v.put_aux_for(&[4, 1, 2], b"after the quarantine", &env).unwrap();
        assert_eq!(v.aux().unwrap().as_slice(), b"first");
        assert_eq!(v.aux_for(&[1, 2, 4]).unwrap().as_slice(), b"after the quarantine");
        assert!(matches!(v.aux_for(&[1, 2, 3]), Err(VaultError::NotFound(_))));
        assert_eq!(v.aux_sets(), vec![vec![1, 2, 4]]);
        // A sealed file moved to another set's name does not open.
        let aux = dir.path().join("aux");
        std::fs::copy(aux.join("1-2-4.sealed"), aux.join("1-2-5.sealed")).unwrap();
        assert!(v.aux_for(&[1, 2, 5]).is_err());
    }

    #[test]
    fn a_presignature_is_claimed_once_and_a_crash_leaves_it_unused() {
        let dir = tempfile::tempdir().unwrap();
        let env = FixedEnv::new(Timestamp::from_unix_ms(0), 1);
        let v = vault(dir.path(), 1);
        v.put_presig("k", &[1, 2], "p1", b"secret-presig", &env).unwrap();
        v.put_presig("k", &[1, 2], "p2", b"other", &env).unwrap();
        assert_eq!(v.presigs()[0].ids, vec!["p1".to_string(), "p2".to_string()]);
        let c = v.claim_presig("k", &[1, 2], "p1").unwrap();
        assert_eq!(c.plain.as_slice(), b"secret-presig");
        assert!(matches!(v.claim_presig("k", &[1, 2], "p1"), Err(VaultError::NotFound(_))));
        assert!(matches!(v.claim_presig("k", &[1, 3], "p2"), Err(VaultError::NotFound(_))));
        c.consume().unwrap();
        // Claimed but not consumed (a crash): gone after restart, never handed out again.
        let _lost = v.claim_presig("k", &[1, 2], "p2").unwrap();
        drop(v);
        let v = vault(dir.path(), 1);
        assert!(v.presigs()[0].ids.is_empty());
        assert!(v.claim_presig("k", &[1, 2], "p2").is_err());
    }

    #[test]
    fn sealed_records_do_not_open_in_another_slot_or_node() {
        let dir = tempfile::tempdir().unwrap();
        let env = FixedEnv::new(Timestamp::from_unix_ms(0), 2);
        let v = vault(dir.path(), 1);
        v.put_presig("k", &[1, 2], "a", b"A", &env).unwrap();
        let from = dir.path().join("presig/k/1-2/a.sealed");
        std::fs::copy(&from, dir.path().join("presig/k/1-2/b.sealed")).unwrap();
        assert!(matches!(v.claim_presig("k", &[1, 2], "b"), Err(VaultError::Seal { .. })));
        // The same files under another node's KEK do not open either.
        let other = vault(dir.path(), 2);
        assert!(other.claim_presig("k", &[1, 2], "a").is_err());
        assert!(check_name("../etc").is_err() && check_name(".hidden").is_err());
        assert!(check_name("hot-eth-1").is_ok());
    }

    #[test]
    fn refreshed_shares_commit_or_discard() {
        let dir = tempfile::tempdir().unwrap();
        let env = FixedEnv::new(Timestamp::from_unix_ms(0), 3);
        let v = vault(dir.path(), 1);
        let info = KeyInfo {
            key_id: "k".into(),
            scheme: crate::wire::Scheme::FrostEd25519,
            threshold: 2,
            parties: vec![1, 2, 3],
            public_key: "00".into(),
            chain_code: None,
        };
        v.put_key(&info, b"old", &env).unwrap();
        assert!(v.put_key(&info, b"again", &env).is_err(), "a key is never overwritten");
        v.put_next_share("k", b"new", &env).unwrap();
        assert_eq!(v.key_share("k").unwrap().1.as_slice(), b"old", "old until committed");
        v.discard_next_share("k").unwrap();
        assert!(!v.commit_next_share("k").unwrap(), "nothing to commit");
        v.put_next_share("k", b"new", &env).unwrap();
        assert!(v.commit_next_share("k").unwrap());
        assert_eq!(v.key_share("k").unwrap().1.as_slice(), b"new");
    }

    #[test]
    fn new_parties_commit_with_their_share_even_across_a_crash() {
        let dir = tempfile::tempdir().unwrap();
        let env = FixedEnv::new(Timestamp::from_unix_ms(0), 4);
        let v = vault(dir.path(), 1);
        let info = KeyInfo {
            key_id: "k".into(),
            scheme: crate::wire::Scheme::FrostTaproot,
            threshold: 2,
            parties: vec![1, 2, 3],
            public_key: "00".into(),
            chain_code: None,
        };
        v.put_key(&info, b"old", &env).unwrap();
        let without_3 = KeyInfo { parties: vec![1, 2], ..info.clone() };
        v.put_next(&without_3, b"new", &env).unwrap();
        assert_eq!(v.keys(), vec![info.clone()], "the next facts are not a key of their own");
        assert_eq!(v.key_share("k").unwrap().0, info, "old until committed");
        // A put cut short (facts written, share not): dropped at the next open.
        std::fs::remove_file(dir.path().join("keys/k.next.sealed")).unwrap();
        drop(v);
        let v = vault(dir.path(), 1);
        assert!(!dir.path().join("keys/k.next.json").exists());
        assert_eq!(v.key_share("k").unwrap().1.as_slice(), b"old");
        // A commit cut between its renames (share current, facts still next): finished.
        v.put_next(&without_3, b"new", &env).unwrap();
        std::fs::rename(dir.path().join("keys/k.next.sealed"), dir.path().join("keys/k.sealed"))
            .unwrap();
        drop(v);
        let v = vault(dir.path(), 1);
        let (now, share) = v.key_share("k").unwrap();
        assert_eq!((now.parties, share.as_slice()), (vec![1, 2], b"new".as_slice()));
        // A whole commit.
        let with_4 = KeyInfo { parties: vec![1, 2, 4], ..without_3 };
        v.put_next(&with_4, b"newer", &env).unwrap();
        assert!(v.commit_next_share("k").unwrap());
        assert_eq!(v.key_share("k").unwrap().0, with_4);
    }

    #[test]
    fn presignatures_with_a_quarantined_node_are_discarded() {
        let dir = tempfile::tempdir().unwrap();
        let env = FixedEnv::new(Timestamp::from_unix_ms(0), 5);
        let v = vault(dir.path(), 1);
        v.put_presig("k", &[1, 2], "a", b"A", &env).unwrap();
        v.put_presig("k", &[1, 3], "b", b"B", &env).unwrap();
        v.put_presig("k", &[1, 3], "c", b"C", &env).unwrap();
        assert_eq!(v.discard_presigs_with(3).unwrap(), 2);
        assert_eq!(v.discard_presigs_with(3).unwrap(), 0);
        let left: Vec<Vec<u16>> = v.presigs().into_iter().map(|e| e.signers).collect();
        assert_eq!(left, vec![vec![1, 2]]);
        assert!(v.claim_presig("k", &[1, 3], "b").is_err());
    }
}
