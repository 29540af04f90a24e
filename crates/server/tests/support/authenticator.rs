//! A software WebAuthn authenticator for tests: one P-256 (ES256) credential per instance,
//! "none" attestation, user presence and verification asserted, a signature counter. It
//! does what a platform authenticator does with `navigator.credentials.create/get` options
//! (W3C WebAuthn Level 2 §6.1, §6.5.1, §6.5.2), with real ECDSA, so the server's
//! verification (webauthn-rs) is exercised for real.
#![allow(dead_code)]

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use p256::ecdsa::signature::Signer;
use p256::ecdsa::{Signature, SigningKey};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

pub struct SoftAuthenticator {
    key: SigningKey,
    cred_id: Vec<u8>,
    user_handle: Vec<u8>,
    counter: u32,
    /// The origin the "browser" puts in the client data (tests change it to attack).
    pub origin: String,
    /// Whether assertions claim user verification (UV).
    pub user_verified: bool,
}

// Minimal CBOR (RFC 8949) for the attestation object and the COSE key.
fn head(major: u8, n: u64, out: &mut Vec<u8>) {
    let m = major << 5;
    match n {
        0..=23 => out.push(m | n as u8),
        24..=0xff => out.extend([m | 24, n as u8]),
        0x100..=0xffff => {
            out.push(m | 25);
            out.extend((n as u16).to_be_bytes())
        }
        _ => {
            out.push(m | 26);
            out.extend((n as u32).to_be_bytes())
        }
    }
}
fn int(i: i64, out: &mut Vec<u8>) {
    if i >= 0 {
        head(0, i as u64, out)
    } else {
        head(1, (-1 - i) as u64, out)
    }
}
fn bytes(b: &[u8], out: &mut Vec<u8>) {
    head(2, b.len() as u64, out);
    out.extend_from_slice(b);
}
fn text(s: &str, out: &mut Vec<u8>) {
    head(3, s.len() as u64, out);
    out.extend_from_slice(s.as_bytes());
}

fn random<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    let mut f = std::fs::File::open("/dev/urandom").unwrap();
    std::io::Read::read_exact(&mut f, &mut b).unwrap();
    b
}

fn b64(v: &Value) -> Vec<u8> {
    let s = v.as_str().unwrap_or_else(|| panic!("expected base64url text, got {v}"));
    B64.decode(s.trim_end_matches('=')).unwrap()
}

impl SoftAuthenticator {
    pub fn new(origin: &str) -> Self {
        let key = loop {
            if let Ok(k) = SigningKey::from_slice(&random::<32>()) {
                break k;
            }
        };
        SoftAuthenticator {
            key,
            cred_id: random::<16>().to_vec(),
            user_handle: Vec::new(),
            counter: 0,
            origin: origin.into(),
            user_verified: true,
        }
    }

    /// The credential's public key, SEC1 uncompressed.
    pub fn public_key_sec1(&self) -> Vec<u8> {
        self.key.verifying_key().to_encoded_point(false).as_bytes().to_vec()
    }

    pub fn credential_id_b64(&self) -> String {
        B64.encode(&self.cred_id)
    }

    fn client_data(&self, kind: &str, challenge: &Value) -> Vec<u8> {
        json!({
            "type": kind,
            "challenge": B64.encode(b64(challenge)),
            "origin": self.origin,
            "crossOrigin": false,
        })
        .to_string()
        .into_bytes()
    }

    /// Answer `navigator.credentials.create({publicKey})` for `options` (the server's
    /// `{"publicKey": …}`): a `RegisterPublicKeyCredential`.
    pub fn create(&mut self, options: &Value) -> Value {
        let pk = &options["publicKey"];
        let rp_id = pk["rp"]["id"].as_str().unwrap();
        self.user_handle = b64(&pk["user"]["id"]);
        let client_data = self.client_data("webauthn.create", &pk["challenge"]);
        let point = self.key.verifying_key().to_encoded_point(false);
        let mut cose = Vec::new();
        head(5, 5, &mut cose);
        int(1, &mut cose); // kty: EC2
        int(2, &mut cose);
        int(3, &mut cose); // alg: ES256
        int(-7, &mut cose);
        int(-1, &mut cose); // crv: P-256
        int(1, &mut cose);
        int(-2, &mut cose);
        bytes(point.x().unwrap(), &mut cose);
        int(-3, &mut cose);
        bytes(point.y().unwrap(), &mut cose);
        let mut auth = Sha256::digest(rp_id.as_bytes()).to_vec();
        auth.push(0x01 | 0x04 | 0x40); // user present, user verified, attested credential
        auth.extend(self.counter.to_be_bytes());
        auth.extend([0u8; 16]); // AAGUID
        auth.extend((self.cred_id.len() as u16).to_be_bytes());
        auth.extend(&self.cred_id);
        auth.extend(cose);
        let mut att = Vec::new();
        head(5, 3, &mut att);
        text("fmt", &mut att);
        text("none", &mut att);
        text("attStmt", &mut att);
        head(5, 0, &mut att);
        text("authData", &mut att);
        bytes(&auth, &mut att);
        json!({
            "id": B64.encode(&self.cred_id),
            "rawId": B64.encode(&self.cred_id),
            "type": "public-key",
            "response": {
                "attestationObject": B64.encode(att),
                "clientDataJSON": B64.encode(client_data),
            },
            "extensions": {},
        })
    }

    /// Answer `navigator.credentials.get({publicKey})` for `options`: a `PublicKeyCredential`
    /// whose signature covers the authenticator data and the hash of the client data.
    pub fn get(&mut self, options: &Value) -> Value {
        let pk = &options["publicKey"];
        let rp_id = pk["rpId"].as_str().unwrap();
        self.sign_assertion(rp_id, &pk["challenge"])
    }

    /// An assertion over any challenge (base64url), e.g. an intent hash.
    pub fn sign_assertion(&mut self, rp_id: &str, challenge: &Value) -> Value {
        self.counter += 1;
        let client_data = self.client_data("webauthn.get", challenge);
        let mut auth = Sha256::digest(rp_id.as_bytes()).to_vec();
        auth.push(if self.user_verified { 0x01 | 0x04 } else { 0x01 });
        auth.extend(self.counter.to_be_bytes());
        let mut signed = auth.clone();
        signed.extend(Sha256::digest(&client_data));
        let sig: Signature = self.key.sign(&signed);
        json!({
            "id": B64.encode(&self.cred_id),
            "rawId": B64.encode(&self.cred_id),
            "type": "public-key",
            "response": {
                "authenticatorData": B64.encode(auth),
                "clientDataJSON": B64.encode(client_data),
                "signature": B64.encode(sig.to_der().as_bytes()),
                "userHandle": B64.encode(&self.user_handle),
            },
            "extensions": {},
        })
    }
}
