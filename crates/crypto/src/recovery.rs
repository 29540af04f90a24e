//! Secrets sealed to a quorum of recovery keys: any `k` of `n` holders open them together,
//! fewer learn nothing. For a signer node's backup when no single passphrase should open it.
//!
//! A recovery key is an X25519 key pair; its holder keeps the secret half offline. Sealing:
//! a random 256-bit data key encrypts the secret (AES-256-GCM); then, for every set of `k`
//! holders, the data key is wrapped once per holder in turn, innermost first, each layer an
//! ECIES box to that holder (an ephemeral X25519 key, HKDF-SHA256 over the shared secret and
//! both public keys, AES-256-GCM with the label, the set and the layer as associated data).
//! A set's copy opens only with every one of its holders' secrets. With the small quorums
//! custody uses (2 of 3, 3 of 5: 3 and 10 sets) this needs no secret sharing scheme of its
//! own: less code to trust, only the primitives used everywhere else here.
//!
//! Text form: `strongroom-quorum-v1:` followed by JSON ([`QuorumSealed`]).

use hkdf::Hkdf;
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use strongroom_core::Env;
use x25519_dalek::{PublicKey, StaticSecret};
use zeroize::Zeroizing;

use crate::seal::{aead_decrypt, aead_encrypt, NONCE_LEN};

const PREFIX: &str = "strongroom-quorum-v1:";
const INFO: &[u8] = b"strongroom/recovery/v1";
/// The most holders a quorum may name (the sets grow as n choose k).
pub const MAX_HOLDERS: usize = 9;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RecoveryError {
    #[error("a quorum of {k} of {n} recovery keys is not possible (2 ≤ k ≤ n ≤ {MAX_HOLDERS}, each key once)")]
    Quorum { k: usize, n: usize },
    #[error("not a recovery key: {0}")]
    BadKey(String),
    #[error("not sealed to a quorum of recovery keys")]
    Malformed,
    #[error("sealed for {found}, not {expected}")]
    WrongLabel { expected: String, found: String },
    #[error("{given} of the recovery keys it was sealed to are here; it needs {needed}")]
    TooFew { given: usize, needed: usize },
    #[error("a recovery key does not open it, or it was altered")]
    Authentication,
}

/// A recovery key's secret half. Zeroized; never printed.
pub struct RecoverySecret(StaticSecret);

impl std::fmt::Debug for RecoverySecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RecoverySecret(<redacted>)")
    }
}

impl RecoverySecret {
    /// A new key pair from `env`'s randomness.
    pub fn generate(env: &dyn Env) -> RecoverySecret {
        let mut b = Zeroizing::new([0u8; 32]);
        env.fill_random(b.as_mut());
        RecoverySecret(StaticSecret::from(*b))
    }

    /// The secret as its holder keeps it (hex, 64 characters).
    pub fn to_hex(&self) -> Zeroizing<String> {
        Zeroizing::new(hex::encode(self.0.as_bytes()))
    }

    pub fn from_hex(text: &str) -> Result<RecoverySecret, RecoveryError> {
        let bytes = Zeroizing::new(hex::decode(text.trim()).map_err(|_| bad_key("not hex"))?);
        let arr: [u8; 32] = bytes.as_slice().try_into().map_err(|_| bad_key("not 32 bytes"))?;
        Ok(RecoverySecret(StaticSecret::from(arr)))
    }

    pub fn public(&self) -> RecoveryPublic {
        RecoveryPublic(PublicKey::from(&self.0).to_bytes())
    }
}

fn bad_key(why: &str) -> RecoveryError {
    RecoveryError::BadKey(why.to_owned())
}

/// A recovery key's public half (hex when written).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct RecoveryPublic([u8; 32]);

impl RecoveryPublic {
    pub fn parse(text: &str) -> Result<RecoveryPublic, RecoveryError> {
        let bytes = hex::decode(text.trim()).map_err(|_| bad_key("not hex"))?;
        let arr: [u8; 32] = bytes.try_into().map_err(|_| bad_key("not 32 bytes"))?;
        Ok(RecoveryPublic(arr))
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

/// What [`seal`] makes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct QuorumSealed {
    pub label: String,
    pub k: usize,
    /// The holders' public keys (hex), in the order sets name them.
    pub holders: Vec<String>,
    /// Each set of `k` holders (indices into `holders`) and its copy of the data key.
    pub sets: Vec<(Vec<usize>, String)>,
    /// Hex: nonce, then the secret under the data key.
    pub nonce: String,
    pub ciphertext: String,
}

fn aad(label: &str, k: usize, holders: &[String]) -> Vec<u8> {
    format!("{PREFIX}{label}:{k}:{}", holders.join(",")).into_bytes()
}

fn layer_aad(base: &[u8], set: &[usize], layer: usize) -> Vec<u8> {
    let mut a = base.to_vec();
    a.extend_from_slice(format!(":{set:?}:{layer}").as_bytes());
    a
}

/// The key for one box between `shared` and the two public keys.
fn box_key(shared: &[u8; 32], eph: &[u8; 32], to: &[u8; 32]) -> Zeroizing<[u8; 32]> {
    let salt = [eph.as_slice(), to.as_slice()].concat();
    let mut key = Zeroizing::new([0u8; 32]);
    // 32 bytes is always a valid HKDF-SHA256 output length.
    let _ = Hkdf::<Sha256>::new(Some(&salt), shared).expand(INFO, key.as_mut());
    key
}

fn box_to(
    to: &RecoveryPublic,
    plain: &[u8],
    aad: &[u8],
    env: &dyn Env,
) -> Result<Vec<u8>, RecoveryError> {
    let eph = RecoverySecret::generate(env);
    let eph_pub = eph.public();
    let shared = Zeroizing::new(eph.0.diffie_hellman(&PublicKey::from(to.0)).to_bytes());
    let key = box_key(&shared, &eph_pub.0, &to.0);
    let mut nonce = [0u8; NONCE_LEN];
    env.fill_random(&mut nonce);
    let ct = aead_encrypt(&key, &nonce, aad, plain).map_err(|_| RecoveryError::Malformed)?;
    let mut out = eph_pub.0.to_vec();
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&ct);
    Ok(out)
}

fn open_box(
    with: &RecoverySecret,
    boxed: &[u8],
    aad: &[u8],
) -> Result<Zeroizing<Vec<u8>>, RecoveryError> {
    let (eph, rest) = boxed.split_at_checked(32).ok_or(RecoveryError::Malformed)?;
    let (nonce, ct) = rest.split_at_checked(NONCE_LEN).ok_or(RecoveryError::Malformed)?;
    let eph: [u8; 32] = eph.try_into().map_err(|_| RecoveryError::Malformed)?;
    let nonce: [u8; NONCE_LEN] = nonce.try_into().map_err(|_| RecoveryError::Malformed)?;
    let shared = Zeroizing::new(with.0.diffie_hellman(&PublicKey::from(eph)).to_bytes());
    let key = box_key(&shared, &eph, &with.public().0);
    aead_decrypt(&key, &nonce, aad, ct).map_err(|_| RecoveryError::Authentication)
}

/// Every set of `k` indices out of `0..n`, in order.
fn sets(n: usize, k: usize) -> Vec<Vec<usize>> {
    let mut out = Vec::new();
    let mut cur = Vec::new();
    fn go(start: usize, n: usize, k: usize, cur: &mut Vec<usize>, out: &mut Vec<Vec<usize>>) {
        if cur.len() == k {
            out.push(cur.clone());
            return;
        }
        for i in start..n {
            cur.push(i);
            go(i + 1, n, k, cur, out);
            cur.pop();
        }
    }
    go(0, n, k, &mut cur, &mut out);
    out
}

/// Seal `secret` for `label` so that any `k` of `holders` open it.
pub fn seal(
    secret: &[u8],
    holders: &[RecoveryPublic],
    k: usize,
    label: &str,
    env: &dyn Env,
) -> Result<String, RecoveryError> {
    let n = holders.len();
    let mut distinct = holders.to_vec();
    distinct.sort();
    distinct.dedup();
    if k < 2 || k > n || n > MAX_HOLDERS || distinct.len() != n {
        return Err(RecoveryError::Quorum { k, n });
    }
    let hex_holders: Vec<String> = holders.iter().map(RecoveryPublic::to_hex).collect();
    let base = aad(label, k, &hex_holders);
    let mut data_key = Zeroizing::new([0u8; 32]);
    env.fill_random(data_key.as_mut());
    let mut nonce = [0u8; NONCE_LEN];
    env.fill_random(&mut nonce);
    let ciphertext =
        aead_encrypt(&data_key, &nonce, &base, secret).map_err(|_| RecoveryError::Malformed)?;
    let mut copies = Vec::new();
    for set in sets(n, k) {
        let mut wrapped = Zeroizing::new(data_key.to_vec());
        for (layer, i) in set.iter().enumerate() {
            let to = holders.get(*i).ok_or(RecoveryError::Malformed)?;
            wrapped = Zeroizing::new(box_to(to, &wrapped, &layer_aad(&base, &set, layer), env)?);
        }
        copies.push((set, hex::encode(wrapped.as_slice())));
    }
    let sealed = QuorumSealed {
        label: label.to_owned(),
        k,
        holders: hex_holders,
        sets: copies,
        nonce: hex::encode(nonce),
        ciphertext: hex::encode(ciphertext),
    };
    let json = serde_json::to_string(&sealed).map_err(|_| RecoveryError::Malformed)?;
    Ok(format!("{PREFIX}{json}"))
}

/// Whether `text` is sealed to a quorum (rather than, say, a passphrase).
pub fn is_quorum_sealed(text: &str) -> bool {
    text.trim_start().starts_with(PREFIX)
}

/// The quorum and holders `text` was sealed to (without opening it).
pub fn describe(text: &str) -> Result<QuorumSealed, RecoveryError> {
    let json = text.trim().strip_prefix(PREFIX).ok_or(RecoveryError::Malformed)?;
    serde_json::from_str(json).map_err(|_| RecoveryError::Malformed)
}

/// Open what [`seal`] made for `label`, with the secrets of at least `k` of its holders.
pub fn open(
    text: &str,
    secrets: &[RecoverySecret],
    label: &str,
) -> Result<Zeroizing<Vec<u8>>, RecoveryError> {
    let sealed = describe(text)?;
    if sealed.label != label {
        return Err(RecoveryError::WrongLabel { expected: label.into(), found: sealed.label });
    }
    let here: Vec<usize> = sealed
        .holders
        .iter()
        .enumerate()
        .filter(|(_, h)| secrets.iter().any(|s| &s.public().to_hex() == *h))
        .map(|(i, _)| i)
        .collect();
    if here.len() < sealed.k {
        return Err(RecoveryError::TooFew { given: here.len(), needed: sealed.k });
    }
    let base = aad(label, sealed.k, &sealed.holders);
    let (set, copy) = sealed
        .sets
        .iter()
        .find(|(set, _)| set.len() == sealed.k && set.iter().all(|i| here.contains(i)))
        .ok_or(RecoveryError::Malformed)?;
    let mut wrapped = Zeroizing::new(hex::decode(copy).map_err(|_| RecoveryError::Malformed)?);
    for (layer, i) in set.iter().enumerate().rev() {
        let hex_key = sealed.holders.get(*i).ok_or(RecoveryError::Malformed)?;
        let secret = secrets
            .iter()
            .find(|s| &s.public().to_hex() == hex_key)
            .ok_or(RecoveryError::Malformed)?;
        wrapped = open_box(secret, &wrapped, &layer_aad(&base, set, layer))?;
    }
    let data_key: [u8; 32] =
        wrapped.as_slice().try_into().map_err(|_| RecoveryError::Authentication)?;
    let data_key = Zeroizing::new(data_key);
    let nonce: [u8; NONCE_LEN] = hex::decode(&sealed.nonce)
        .ok()
        .and_then(|n| n.try_into().ok())
        .ok_or(RecoveryError::Malformed)?;
    let ct = hex::decode(&sealed.ciphertext).map_err(|_| RecoveryError::Malformed)?;
    aead_decrypt(&data_key, &nonce, &base, &ct).map_err(|_| RecoveryError::Authentication)
}

#[cfg(test)]
mod tests {
    use super::*;
    use strongroom_core::{FixedEnv, Timestamp};

    fn env(seed: u64) -> FixedEnv {
        FixedEnv::new(Timestamp::from_unix_ms(0), seed)
    }

    #[test]
    fn any_two_of_three_open_it_and_one_does_not() {
        let e = env(7);
        let keys: Vec<RecoverySecret> = (0..3).map(|_| RecoverySecret::generate(&e)).collect();
        let holders: Vec<RecoveryPublic> = keys.iter().map(RecoverySecret::public).collect();
        let sealed = seal(b"node shares", &holders, 2, "signer-backup-node-2", &e).unwrap();
        assert!(is_quorum_sealed(&sealed));
        assert_eq!(describe(&sealed).unwrap().sets.len(), 3);
        for pair in [[0, 1], [0, 2], [2, 1]] {
            let two: Vec<RecoverySecret> = pair
                .iter()
                .map(|i| RecoverySecret::from_hex(&keys[*i].to_hex()).unwrap())
                .collect();
            let plain = open(&sealed, &two, "signer-backup-node-2").unwrap();
            assert_eq!(plain.as_slice(), b"node shares", "{pair:?}");
        }
        let one = [RecoverySecret::from_hex(&keys[1].to_hex()).unwrap()];
        assert_eq!(
            open(&sealed, &one, "signer-backup-node-2").unwrap_err(),
            RecoveryError::TooFew { given: 1, needed: 2 }
        );
        // A stranger's key does not count; another label is refused.
        let stranger = [
            RecoverySecret::from_hex(&keys[1].to_hex()).unwrap(),
            RecoverySecret::generate(&env(8)),
        ];
        assert!(matches!(
            open(&sealed, &stranger, "signer-backup-node-2"),
            Err(RecoveryError::TooFew { given: 1, needed: 2 })
        ));
        let two = [
            RecoverySecret::from_hex(&keys[0].to_hex()).unwrap(),
            RecoverySecret::from_hex(&keys[1].to_hex()).unwrap(),
        ];
        assert!(matches!(
            open(&sealed, &two, "signer-backup-node-3"),
            Err(RecoveryError::WrongLabel { .. })
        ));
        // Any altered byte of the data or of a set's copy is refused.
        let mut s = describe(&sealed).unwrap();
        let mut ct = hex::decode(&s.ciphertext).unwrap();
        ct[0] ^= 1;
        s.ciphertext = hex::encode(ct);
        let altered = format!("{PREFIX}{}", serde_json::to_string(&s).unwrap());
        assert_eq!(
            open(&altered, &two, "signer-backup-node-2"),
            Err(RecoveryError::Authentication)
        );
        let mut s = describe(&sealed).unwrap();
        let mut copy = hex::decode(&s.sets[0].1).unwrap();
        let last = copy.len() - 1;
        copy[last] ^= 1;
        s.sets[0].1 = hex::encode(copy);
        let altered = format!("{PREFIX}{}", serde_json::to_string(&s).unwrap());
        assert_eq!(
            open(&altered, &two, "signer-backup-node-2"),
            Err(RecoveryError::Authentication)
        );
        // Holders swapped between sets do not open it either (the holders are bound).
        let mut s = describe(&sealed).unwrap();
        s.holders.swap(0, 1);
        let altered = format!("{PREFIX}{}", serde_json::to_string(&s).unwrap());
        assert!(open(&altered, &two, "signer-backup-node-2").is_err());
    }

    #[test]
    fn impossible_quorums_are_refused_and_secrets_never_print() {
        let e = env(9);
        let a = RecoverySecret::generate(&e).public();
        let b = RecoverySecret::generate(&e).public();
        assert!(matches!(seal(b"x", &[a, b], 3, "l", &e), Err(RecoveryError::Quorum { .. })));
        assert!(matches!(seal(b"x", &[a, b], 1, "l", &e), Err(RecoveryError::Quorum { .. })));
        assert!(matches!(seal(b"x", &[a, a], 2, "l", &e), Err(RecoveryError::Quorum { .. })));
        let s = RecoverySecret::generate(&e);
        assert_eq!(format!("{s:?}"), "RecoverySecret(<redacted>)");
        assert_eq!(sets(5, 3).len(), 10);
    }
}
