//! Secrets sealed under a passphrase: cold keys on their offline machines, and their
//! backups. Argon2id (RFC 9106's second recommended setting: 64 MiB, 3 passes, 4 lanes)
//! turns the passphrase and a random 128-bit salt into an AES-256 key; AES-256-GCM seals the
//! secret, with the label and the KDF parameters as associated data, so neither can be
//! changed without the passphrase. A backup is sealed the same way, at least as strongly:
//! [`open`] refuses anything made with weaker parameters than [`MIN_MEMORY_KIB`] and
//! [`MIN_PASSES`].
//!
//! Text form, one line: `strongroom-sealed-v1:<label>:m=<kib>,t=<passes>,p=<lanes>:<salt>:<nonce>:<ciphertext>` (hex).

use argon2::{Algorithm, Argon2, Params, Version};
use strongroom_core::Env;
use zeroize::Zeroizing;

use crate::seal::{aead_decrypt, aead_encrypt, SealError, NONCE_LEN};
use crate::SecretString;

pub const MEMORY_KIB: u32 = 64 * 1024;
pub const PASSES: u32 = 3;
pub const LANES: u32 = 4;
pub const MIN_MEMORY_KIB: u32 = 64 * 1024;
pub const MIN_PASSES: u32 = 3;
/// Shortest passphrase accepted for a cold key.
pub const MIN_LEN: usize = 12;

const PREFIX: &str = "strongroom-sealed-v1";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PassphraseError {
    #[error("a passphrase needs at least {MIN_LEN} characters")]
    TooShort,
    #[error("not a passphrase-sealed secret")]
    Malformed,
    #[error("sealed for {found}, not {expected}")]
    WrongLabel { expected: String, found: String },
    #[error("sealed with weaker parameters than this build accepts (m={0} KiB, t={1})")]
    TooWeak(u32, u32),
    #[error("wrong passphrase, or the file was altered")]
    Authentication,
    #[error("key derivation failed: {0}")]
    Kdf(String),
}

fn derive(
    pass: &SecretString,
    salt: &[u8],
    m: u32,
    t: u32,
    p: u32,
) -> Result<Zeroizing<[u8; 32]>, PassphraseError> {
    let params = Params::new(m, t, p, Some(32)).map_err(|e| PassphraseError::Kdf(e.to_string()))?;
    let mut key = Zeroizing::new([0u8; 32]);
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
        .hash_password_into(pass.expose_secret().as_bytes(), salt, key.as_mut())
        .map_err(|e| PassphraseError::Kdf(e.to_string()))?;
    Ok(key)
}

fn aad(label: &str, m: u32, t: u32, p: u32) -> Vec<u8> {
    format!("{PREFIX}:{label}:m={m},t={t},p={p}").into_bytes()
}

/// Seal `secret` under `pass` for `label` (what it is, e.g. `cold-key`), with a fresh salt
/// and nonce from `env`.
pub fn seal(
    secret: &[u8],
    pass: &SecretString,
    label: &str,
    env: &dyn Env,
) -> Result<String, PassphraseError> {
    if pass.expose_secret().chars().count() < MIN_LEN {
        return Err(PassphraseError::TooShort);
    }
    if label.is_empty() || label.contains(':') {
        return Err(PassphraseError::Malformed);
    }
    let mut salt = [0u8; 16];
    env.fill_random(&mut salt);
    let mut nonce = [0u8; NONCE_LEN];
    env.fill_random(&mut nonce);
    let key = derive(pass, &salt, MEMORY_KIB, PASSES, LANES)?;
    let ct = aead_encrypt(&key, &nonce, &aad(label, MEMORY_KIB, PASSES, LANES), secret)
        .map_err(|_| PassphraseError::Malformed)?;
    Ok(format!(
        "{PREFIX}:{label}:m={MEMORY_KIB},t={PASSES},p={LANES}:{}:{}:{}",
        hex::encode(salt),
        hex::encode(nonce),
        hex::encode(ct)
    ))
}

/// Open what [`seal`] made for `label`.
pub fn open(
    sealed: &str,
    pass: &SecretString,
    label: &str,
) -> Result<Zeroizing<Vec<u8>>, PassphraseError> {
    let parts: Vec<&str> = sealed.trim().split(':').collect();
    let [prefix, found, params, salt, nonce, ct] = parts.as_slice() else {
        return Err(PassphraseError::Malformed);
    };
    if *prefix != PREFIX {
        return Err(PassphraseError::Malformed);
    }
    if *found != label {
        return Err(PassphraseError::WrongLabel { expected: label.into(), found: (*found).into() });
    }
    let mut mtp = [0u32; 3];
    let fields: Vec<&str> = params.split(',').collect();
    for ((slot, field), name) in mtp.iter_mut().zip(&fields).zip(["m=", "t=", "p="]) {
        *slot = field
            .strip_prefix(name)
            .and_then(|v| v.parse().ok())
            .ok_or(PassphraseError::Malformed)?;
    }
    let [m, t, p] = mtp;
    if fields.len() != 3 {
        return Err(PassphraseError::Malformed);
    }
    if m < MIN_MEMORY_KIB || t < MIN_PASSES {
        return Err(PassphraseError::TooWeak(m, t));
    }
    let salt = hex::decode(salt).map_err(|_| PassphraseError::Malformed)?;
    let nonce: [u8; NONCE_LEN] = hex::decode(nonce)
        .ok()
        .and_then(|n| n.try_into().ok())
        .ok_or(PassphraseError::Malformed)?;
    let ct = hex::decode(ct).map_err(|_| PassphraseError::Malformed)?;
    let key = derive(pass, &salt, m, t, p)?;
    aead_decrypt(&key, &nonce, &aad(label, m, t, p), &ct).map_err(|e| match e {
        SealError::Authentication => PassphraseError::Authentication,
        _ => PassphraseError::Malformed,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use strongroom_core::{FixedEnv, Timestamp};

    use super::*;

    fn pass(s: &str) -> SecretString {
        SecretString::new(s.into())
    }

    #[test]
    fn opens_only_with_its_passphrase_label_and_parameters() {
        let env = FixedEnv::new(Timestamp::from_unix_ms(0), 3);
        let secret = [7u8; 32];
        let sealed = seal(&secret, &pass("correct horse battery"), "cold-key", &env).unwrap();
        assert!(!sealed.contains(&hex::encode(secret)));
        assert_eq!(
            open(&sealed, &pass("correct horse battery"), "cold-key").unwrap().as_slice(),
            &secret
        );
        assert_eq!(
            open(&sealed, &pass("correct horse batterY"), "cold-key"),
            Err(PassphraseError::Authentication)
        );
        assert!(matches!(
            open(&sealed, &pass("correct horse battery"), "backup"),
            Err(PassphraseError::WrongLabel { .. })
        ));
        // Lowering the recorded cost is refused before any work is done...
        let weak = sealed.replace("m=65536,t=3", "m=65536,t=1");
        assert_eq!(
            open(&weak, &pass("correct horse battery"), "cold-key"),
            Err(PassphraseError::TooWeak(65536, 1))
        );
        // ...and raising it fails authentication (the parameters are associated data).
        let other = sealed.replace("t=3,p=4", "t=4,p=4");
        assert_eq!(
            open(&other, &pass("correct horse battery"), "cold-key"),
            Err(PassphraseError::Authentication)
        );
        // One flipped ciphertext bit.
        let mut bad = sealed.clone();
        let last = bad.pop().unwrap();
        bad.push(if last == '0' { '1' } else { '0' });
        assert_eq!(
            open(&bad, &pass("correct horse battery"), "cold-key"),
            Err(PassphraseError::Authentication)
        );
        assert_eq!(seal(&secret, &pass("short"), "cold-key", &env), Err(PassphraseError::TooShort));
    }
}
