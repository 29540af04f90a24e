//! Password hashing with Argon2id at OWASP's recommended cost (19 MiB, 2 passes, 1 lane),
//! stored as a PHC string so the parameters travel with each hash and can be raised later
//! ([`needs_rehash`]). Recovery codes are random and 80 bits strong, so a domain-separated
//! SHA-256 is enough for them (like API tokens).

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use sha2::{Digest, Sha256};
use strongroom_core::Env;
use subtle::ConstantTimeEq;

use crate::SecretString;

/// OWASP Password Storage Cheat Sheet, Argon2id, first option: m = 19 MiB, t = 2, p = 1.
pub const MEMORY_KIB: u32 = 19 * 1024;
pub const PASSES: u32 = 2;
pub const LANES: u32 = 1;

/// Shortest password accepted (NIST SP 800-63B asks for at least 8; we ask for more).
pub const MIN_LEN: usize = 12;
/// Longest password accepted, so hashing cost stays bounded.
pub const MAX_LEN: usize = 256;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PasswordError {
    #[error("a password needs at least {MIN_LEN} characters")]
    TooShort,
    #[error("a password may have at most {MAX_LEN} characters")]
    TooLong,
    #[error("password hashing failed: {0}")]
    Hash(String),
}

fn hasher() -> Result<Argon2<'static>, PasswordError> {
    let params = Params::new(MEMORY_KIB, PASSES, LANES, None)
        .map_err(|e| PasswordError::Hash(e.to_string()))?;
    Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
}

/// Whether `password` is acceptable as a new password.
pub fn check_new(password: &SecretString) -> Result<(), PasswordError> {
    let n = password.expose_secret().chars().count();
    if n < MIN_LEN {
        return Err(PasswordError::TooShort);
    }
    if n > MAX_LEN {
        return Err(PasswordError::TooLong);
    }
    Ok(())
}

/// The PHC string (`$argon2id$v=19$m=19456,t=2,p=1$salt$hash`) of `password` with a fresh
/// 128-bit salt from `env`.
pub fn hash_password(password: &SecretString, env: &dyn Env) -> Result<String, PasswordError> {
    let mut salt = [0u8; 16];
    env.fill_random(&mut salt);
    let salt = SaltString::encode_b64(&salt).map_err(|e| PasswordError::Hash(e.to_string()))?;
    hasher()?
        .hash_password(password.expose_secret().as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| PasswordError::Hash(e.to_string()))
}

/// Whether `password` matches the stored PHC string. A malformed hash matches nothing.
/// The hash's own parameters are used (bounded by the argon2 crate), so old hashes verify.
pub fn verify_password(password: &SecretString, phc: &str) -> bool {
    let Ok(parsed) = PasswordHash::new(phc) else { return false };
    if parsed.algorithm.as_str() != "argon2id" {
        return false;
    }
    Argon2::default().verify_password(password.expose_secret().as_bytes(), &parsed).is_ok()
}

/// Whether a stored hash was made with weaker parameters than today's.
pub fn needs_rehash(phc: &str) -> bool {
    let Ok(parsed) = PasswordHash::new(phc) else { return true };
    let Ok(params) = Params::try_from(&parsed) else { return true };
    parsed.algorithm.as_str() != "argon2id"
        || params.m_cost() < MEMORY_KIB
        || params.t_cost() < PASSES
}

/// Spend the same time as checking a real password, for a login name that does not exist,
/// so response times do not tell which accounts exist.
pub fn burn_time(password: &SecretString) {
    let _ = verify_password(password, DUMMY);
}

/// A valid hash of a random password nobody knows.
const DUMMY: &str = "$argon2id$v=19$m=19456,t=2,p=1$c3Ryb25ncm9vbWR1bW15$Q8bZ3a0wNn7yT2m3Xx2w3j0mO1m5XnK0q7b5m9cQm2Y";

/// Ten single-use recovery codes (`xxxxx-xxxxx`, 80 bits each), shown once.
pub fn recovery_codes(env: &dyn Env) -> Vec<SecretString> {
    (0..10)
        .map(|_| {
            let mut b = [0u8; 10];
            env.fill_random(&mut b);
            let s = crate::totp::base32(&b).to_ascii_lowercase();
            let (a, z) = s.split_at(s.len() / 2);
            SecretString::new(format!("{a}-{z}"))
        })
        .collect()
}

/// The stored form of a recovery code (case and dashes ignored).
pub fn hash_recovery_code(code: &str) -> String {
    let norm: String = code
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .map(|c| c.to_ascii_lowercase())
        .collect();
    let mut h = Sha256::new();
    h.update(b"strongroom/recovery-code/v1\0");
    h.update(norm.as_bytes());
    hex::encode(h.finalize())
}

/// The index of the stored hash `code` matches, compared in constant time.
pub fn match_recovery_code(code: &str, stored: &[String]) -> Option<usize> {
    let h = hash_recovery_code(code);
    let mut found = None;
    for (i, s) in stored.iter().enumerate() {
        if bool::from(h.as_bytes().ct_eq(s.as_bytes())) {
            found = Some(i);
        }
    }
    found
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;
    use strongroom_core::{FixedEnv, Timestamp};

    fn env() -> FixedEnv {
        FixedEnv::new(Timestamp::from_unix_ms(0), 7)
    }

    #[test]
    fn a_hash_is_argon2id_with_owasp_parameters_and_verifies_only_its_password() {
        let pw = SecretString::new("correct horse battery staple".into());
        let h = hash_password(&pw, &env()).unwrap();
        assert!(h.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{h}");
        assert!(verify_password(&pw, &h));
        assert!(!verify_password(&SecretString::new("correct horse battery stapler".into()), &h));
        assert!(!needs_rehash(&h));
        assert!(!h.contains("horse"));
    }

    #[test]
    fn weaker_or_malformed_hashes_are_flagged_and_match_nothing_malformed() {
        let pw = SecretString::new("correct horse battery staple".into());
        let weak = Argon2::new(
            Algorithm::Argon2id,
            Version::V0x13,
            Params::new(1024, 1, 1, None).unwrap(),
        )
        .hash_password(
            b"correct horse battery staple",
            &SaltString::encode_b64(&[1u8; 16]).unwrap(),
        )
        .unwrap()
        .to_string();
        assert!(verify_password(&pw, &weak), "old parameters still verify");
        assert!(needs_rehash(&weak));
        assert!(!verify_password(&pw, "not a hash"));
        assert!(!verify_password(&pw, ""));
        assert!(PasswordHash::new(DUMMY).is_ok(), "the timing decoy is a real hash");
        burn_time(&pw);
    }

    #[test]
    fn argon2id_matches_the_rfc_9106_test_vector() {
        // RFC 9106 §5.3 (Argon2id with secret and associated data).
        let params = argon2::ParamsBuilder::new()
            .m_cost(32)
            .t_cost(3)
            .p_cost(4)
            .output_len(32)
            .data(argon2::AssociatedData::new(&[4u8; 12]).unwrap())
            .build()
            .unwrap();
        let a = Argon2::new_with_secret(&[3u8; 8], Algorithm::Argon2id, Version::V0x13, params)
            .unwrap();
        let mut out = [0u8; 32];
        a.hash_password_into(&[1u8; 32], &[2u8; 16], &mut out).unwrap();
        assert_eq!(
            hex::encode(out),
            "0d640df58d78766c08c037a34a8b53c9d01ef0452d75b65eb52520e96b01e659"
        );
    }

    #[test]
    fn new_passwords_have_a_length_policy() {
        assert_eq!(check_new(&SecretString::new("short".into())), Err(PasswordError::TooShort));
        assert_eq!(check_new(&SecretString::new("x".repeat(257))), Err(PasswordError::TooLong));
        assert!(check_new(&SecretString::new("twelve chars".into())).is_ok());
    }

    #[test]
    fn recovery_codes_are_distinct_and_match_once_stored() {
        let codes = recovery_codes(&env());
        assert_eq!(codes.len(), 10);
        let stored: Vec<String> =
            codes.iter().map(|c| hash_recovery_code(c.expose_secret())).collect();
        let mut uniq = stored.clone();
        uniq.sort();
        uniq.dedup();
        assert_eq!(uniq.len(), 10);
        let third = codes[2].expose_secret().to_ascii_uppercase();
        assert_eq!(match_recovery_code(&third, &stored), Some(2));
        assert_eq!(match_recovery_code("aaaaa-bbbbb", &stored), None);
    }
}
