//! Secret types, API tokens, and sealing at rest (AES-256-GCM envelope encryption, [`seal`]).
//!
//! Secrets are their own types: zeroized on drop, `Debug` prints `<redacted>`, and there is
//! no `Serialize`. The only way to the bytes is a call named `expose_secret`, which is easy
//! to find in review. Randomness comes from the caller's [`Env`].
#![forbid(unsafe_code)]

pub mod passphrase;
pub mod password;
pub mod recovery;
pub mod seal;
pub mod totp;

use sha2::{Digest, Sha256};
use strongroom_core::Env;
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

/// A secret string: zeroized on drop, never printed.
pub struct SecretString(Zeroizing<String>);

impl SecretString {
    pub fn new(s: String) -> Self {
        SecretString(Zeroizing::new(s))
    }
    pub fn expose_secret(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for SecretString {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretString(<redacted>)")
    }
}

/// Prefix of every API token, so secret scanners can find leaked ones.
pub const TOKEN_PREFIX: &str = "srt";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    #[error("not a Strongroom API token")]
    Malformed,
}

/// A freshly made API token: the id is public, the whole token is secret and is shown once.
#[derive(Debug)]
pub struct NewToken {
    pub id: String,
    pub token: SecretString,
    /// What the store keeps: the hash, never the token.
    pub hash: String,
}

/// Make a token `srt_<id>_<secret>`: a 64-bit id (for lookup and audit) and a 256-bit secret.
pub fn generate_token(env: &dyn Env) -> NewToken {
    let mut id = [0u8; 8];
    env.fill_random(&mut id);
    let mut secret = Zeroizing::new([0u8; 32]);
    env.fill_random(secret.as_mut());
    let id = hex::encode(id);
    let token = SecretString::new(format!("{TOKEN_PREFIX}_{id}_{}", hex::encode(secret.as_ref())));
    let hash = hash_token(&token);
    NewToken { id, token, hash }
}

/// The token's id, read from its text without checking the secret.
pub fn token_id(token: &str) -> Result<&str, TokenError> {
    let rest = token
        .strip_prefix(TOKEN_PREFIX)
        .and_then(|r| r.strip_prefix('_'))
        .ok_or(TokenError::Malformed)?;
    let (id, secret) = rest.split_once('_').ok_or(TokenError::Malformed)?;
    let hex_of = |s: &str, n: usize| {
        s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    };
    if hex_of(id, 16) && hex_of(secret, 64) {
        Ok(id)
    } else {
        Err(TokenError::Malformed)
    }
}

/// The stored form of a token. Tokens carry 256 bits of entropy, so a domain-separated
/// SHA-256 is enough: there is nothing to brute-force that a slow hash would protect.
pub fn hash_token(token: &SecretString) -> String {
    let mut h = Sha256::new();
    h.update(b"strongroom/api-token/v1\0");
    h.update(token.expose_secret().as_bytes());
    hex::encode(h.finalize())
}

/// Compare a presented token with a stored hash in constant time.
pub fn token_matches(presented: &SecretString, stored_hash: &str) -> bool {
    hash_token(presented).as_bytes().ct_eq(stored_hash.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use strongroom_core::{FixedEnv, Timestamp};

    #[test]
    fn tokens_round_trip_and_never_print() {
        let env = FixedEnv::new(Timestamp::from_unix_ms(0), 1);
        let t = generate_token(&env);
        assert_eq!(token_id(t.token.expose_secret()).unwrap(), t.id);
        assert!(token_matches(&t.token, &t.hash));
        assert!(!token_matches(
            &SecretString::new(format!("{}0", t.token.expose_secret())),
            &t.hash
        ));
        let debug = format!("{t:?}");
        assert!(!debug.contains(t.token.expose_secret()), "{debug}");
        assert!(debug.contains("<redacted>"));
        let other = generate_token(&env);
        assert_ne!(other.token.expose_secret(), t.token.expose_secret());
    }

    #[test]
    fn malformed_tokens_are_refused() {
        for bad in [
            "",
            "srt_",
            "srt_abc_def",
            "Bearer x",
            &format!("srt_{}_{}", "A".repeat(16), "0".repeat(64)),
        ] {
            assert_eq!(token_id(bad), Err(TokenError::Malformed), "{bad}");
        }
    }
}
