//! Approvals made with a passkey (W3C WebAuthn Level 2, ES256 only), verified here so that
//! every signer node checks them itself, with no server in between.
//!
//! A member may register a passkey in the governance log ([`PasskeySpec`]: the relying
//! party, the console's origin and the credential's P-256 public key). An approval made with
//! it is a WebAuthn assertion whose **challenge is the approval's message**
//! ([`crate::approval::Approval::message`]: the intent hash, the policy version and the
//! expiry, tagged and hashed). It verifies only if:
//! - the client data is a `webauthn.get` for that exact challenge, from the member's origin;
//! - the authenticator data is for the member's relying party (its SHA-256), with the user
//!   present (UP) and verified (UV: PIN or biometrics — the second factor);
//! - the ECDSA P-256 signature over `authenticatorData || SHA-256(clientDataJSON)` verifies
//!   under the registered key.

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use p256::ecdsa::{Signature, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// A member's passkey, as written in the log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PasskeySpec {
    /// The relying party id (the console's domain).
    pub rp_id: String,
    /// The console's origin (`https://…`).
    pub origin: String,
    /// The credential's id (base64url), for the browser's `allowCredentials`.
    pub credential_id: String,
    /// SEC1 uncompressed P-256 public key (hex, 65 bytes).
    pub public_key: String,
}

/// A parsed passkey.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Passkey {
    pub rp_id: String,
    pub origin: String,
    pub credential_id: String,
    pub key: VerifyingKey,
}

impl Passkey {
    pub fn parse(spec: &PasskeySpec) -> Result<Passkey, String> {
        let bytes = hex::decode(&spec.public_key).map_err(|_| "passkey public key is not hex")?;
        let key =
            crate::signature::p256_key(&bytes).ok_or("passkey public key is not a P-256 point")?;
        if !spec.origin.starts_with("https://") || spec.rp_id.is_empty() {
            return Err("a passkey needs an https origin and a relying party id".into());
        }
        Ok(Passkey {
            rp_id: spec.rp_id.clone(),
            origin: spec.origin.clone(),
            credential_id: spec.credential_id.clone(),
            key,
        })
    }
}

/// What `navigator.credentials.get` returned, base64url without padding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Assertion {
    pub authenticator_data: String,
    pub client_data_json: String,
    /// DER-encoded ECDSA signature.
    pub signature: String,
}

const UP: u8 = 0x01;
const UV: u8 = 0x04;

fn b64(s: &str, what: &str) -> Result<Vec<u8>, String> {
    B64.decode(s.trim_end_matches('=')).map_err(|_| format!("{what} is not base64url"))
}

/// Check `a` against `key` for `challenge` (see the module's list).
pub fn verify(key: &Passkey, challenge: &[u8; 32], a: &Assertion) -> Result<(), String> {
    let auth = b64(&a.authenticator_data, "authenticator data")?;
    let client_json = b64(&a.client_data_json, "client data")?;
    let sig = b64(&a.signature, "signature")?;
    let client: serde_json::Value =
        serde_json::from_slice(&client_json).map_err(|_| "client data is not JSON")?;
    let field = |k: &str| client.get(k).and_then(|v| v.as_str()).unwrap_or("");
    if field("type") != "webauthn.get" {
        return Err("not a WebAuthn assertion (type)".into());
    }
    let signed_challenge = b64(field("challenge"), "challenge")?;
    if signed_challenge != challenge {
        return Err("the passkey signed another challenge (another intent or approval)".into());
    }
    if field("origin") != key.origin {
        return Err(format!("signed for origin {:?}, not {:?}", field("origin"), key.origin));
    }
    let (rp_hash, rest) = auth.split_at_checked(32).ok_or("authenticator data too short")?;
    if rp_hash != Sha256::digest(key.rp_id.as_bytes()).as_slice() {
        return Err("signed for another relying party".into());
    }
    let flags = *rest.first().ok_or("authenticator data too short")?;
    if flags & UP == 0 || flags & UV == 0 {
        return Err("the authenticator did not verify the user (UP and UV are required)".into());
    }
    if Signature::from_der(&sig).is_err() {
        return Err("signature is not DER ECDSA".into());
    }
    let mut signed = auth.clone();
    signed.extend_from_slice(&Sha256::digest(&client_json));
    if !crate::signature::p256_verify(&key.key, &signed, &sig) {
        return Err("the passkey's signature does not verify".into());
    }
    Ok(())
}

/// The challenge, as a browser's `PublicKeyCredentialRequestOptions.challenge` carries it.
pub fn challenge_b64(challenge: &[u8; 32]) -> String {
    B64.encode(challenge)
}
