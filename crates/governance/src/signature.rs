//! The two signature checks governance makes, each in one place: Ed25519 for members' keys
//! (approvals, initiations, signoffs on log entries) and ECDSA P-256 with SHA-256 (ES256) for
//! passkeys. Every signer node and the offline signer run exactly these functions, and the
//! published Wycheproof vectors run against them (`tests/wycheproof.rs`).
//!
//! Both take the signature as the bytes that arrived, so that the checks on its encoding
//! (length, DER) are part of what is tested, not something each caller repeats.

// One trait (the `signature` crate's) for both curves.
use ed25519_dalek::Verifier as _;

/// A member's Ed25519 public key from its 32-byte encoding (RFC 8032 §5.1.3), or `None` if
/// it is not 32 bytes or not the encoding of a curve point.
pub fn ed25519_key(bytes: &[u8]) -> Option<ed25519_dalek::VerifyingKey> {
    let bytes: &[u8; 32] = bytes.try_into().ok()?;
    ed25519_dalek::VerifyingKey::from_bytes(bytes).ok()
}

/// Whether `signature` is `key`'s Ed25519 signature (RFC 8032, pure Ed25519) over `message`.
///
/// Refused: anything but 64 bytes (a truncated signature or one with bytes appended), an `R`
/// that is not a point, and an `S` that is not below the group order ℓ (RFC 8032 §5.1.7 step
/// 1: the malleable second form of a signature is not a signature). The equation is checked
/// without the cofactor, as ed25519-dalek's `verify` does.
pub fn ed25519_verify(key: &ed25519_dalek::VerifyingKey, message: &[u8], signature: &[u8]) -> bool {
    let Ok(bytes) = <[u8; 64]>::try_from(signature) else {
        return false;
    };
    key.verify(message, &ed25519_dalek::Signature::from_bytes(&bytes)).is_ok()
}

/// A passkey's P-256 public key from its SEC1 encoding (compressed or uncompressed), or
/// `None` if it is not a point of the curve other than the identity.
pub fn p256_key(sec1: &[u8]) -> Option<p256::ecdsa::VerifyingKey> {
    p256::ecdsa::VerifyingKey::from_sec1_bytes(sec1).ok()
}

/// Whether `der` is `key`'s ECDSA P-256 signature over SHA-256(`message`), as WebAuthn's
/// ES256 carries it: ASN.1 DER (no BER: no long or indefinite lengths, no padded or negative
/// integers), `r` and `s` in [1, n−1]. Either `s` is accepted, as ES256 does not fix one.
pub fn p256_verify(key: &p256::ecdsa::VerifyingKey, message: &[u8], der: &[u8]) -> bool {
    let Ok(sig) = p256::ecdsa::Signature::from_der(der) else {
        return false;
    };
    key.verify(message, &sig).is_ok()
}
