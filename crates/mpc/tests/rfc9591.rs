//! RFC 9591, Appendix E.1: FROST(Ed25519, SHA-512) test vectors, as a data file
//! (`tests/vectors/rfc9591-e1-ed25519.json`). With the RFC's shares and nonces, the
//! ciphersuite our state machines use must reproduce the RFC's commitments, signature shares
//! and signature byte for byte.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)] // Test code.

use std::collections::BTreeMap;

use frost_core::keys::{KeyPackage, PublicKeyPackage, SigningShare, VerifyingShare};
use frost_core::round1::{Nonce, SigningCommitments, SigningNonces};
use frost_core::{Identifier, SigningPackage, VerifyingKey};
use serde_json::Value;
use strongroom_mpc::frost::Ed25519;

type C = Ed25519;

fn bytes(v: &Value) -> Vec<u8> {
    hex::decode(v.as_str().unwrap()).unwrap()
}

#[test]
fn rfc9591_e1_ed25519_vectors() {
    let doc: Value = serde_json::from_str(include_str!("vectors/rfc9591-e1-ed25519.json")).unwrap();
    assert_eq!(doc["config"]["name"], "FROST(Ed25519, SHA-512)");
    let inputs = &doc["inputs"];
    let min: u16 = doc["config"]["MIN_PARTICIPANTS"].as_str().unwrap().parse().unwrap();
    let message = bytes(&inputs["message"]);
    let verifying_key =
        VerifyingKey::<C>::deserialize(&bytes(&inputs["verifying_key_key"])).unwrap();

    let mut key_packages = BTreeMap::new();
    let mut verifying_shares = BTreeMap::new();
    for p in inputs["participant_shares"].as_array().unwrap() {
        let id = Identifier::<C>::try_from(p["identifier"].as_u64().unwrap() as u16).unwrap();
        let share = SigningShare::<C>::deserialize(&bytes(&p["participant_share"])).unwrap();
        let verifying = VerifyingShare::<C>::from(share);
        verifying_shares.insert(id, verifying);
        key_packages.insert(id, KeyPackage::new(id, share, verifying, verifying_key, min));
    }
    let public = PublicKeyPackage::new(verifying_shares, verifying_key, Some(min));

    let mut nonces = BTreeMap::new();
    let mut commitments = BTreeMap::new();
    for o in doc["round_one_outputs"]["outputs"].as_array().unwrap() {
        let id = Identifier::<C>::try_from(o["identifier"].as_u64().unwrap() as u16).unwrap();
        let n = SigningNonces::<C>::from_nonces(
            Nonce::deserialize(&bytes(&o["hiding_nonce"])).unwrap(),
            Nonce::deserialize(&bytes(&o["binding_nonce"])).unwrap(),
        );
        let c = SigningCommitments::from(&n);
        assert_eq!(c.hiding().serialize().unwrap(), bytes(&o["hiding_nonce_commitment"]));
        assert_eq!(c.binding().serialize().unwrap(), bytes(&o["binding_nonce_commitment"]));
        nonces.insert(id, n);
        commitments.insert(id, c);
    }
    let package = SigningPackage::new(commitments, &message);

    let mut shares = BTreeMap::new();
    for o in doc["round_two_outputs"]["outputs"].as_array().unwrap() {
        let id = Identifier::<C>::try_from(o["identifier"].as_u64().unwrap() as u16).unwrap();
        let share = frost_core::round2::sign(&package, &nonces[&id], &key_packages[&id]).unwrap();
        assert_eq!(
            share.serialize(),
            bytes(&o["sig_share"]),
            "signature share of participant {id:?}"
        );
        shares.insert(id, share);
    }
    let signature = frost_core::aggregate(&package, &shares, &public).unwrap();
    let signature = signature.serialize().unwrap();
    assert_eq!(signature, bytes(&doc["final_output"]["sig"]));

    // And a plain Ed25519 verifier accepts it.
    let key = ed25519_dalek::VerifyingKey::from_bytes(
        &verifying_key.serialize().unwrap().try_into().unwrap(),
    )
    .unwrap();
    let sig: [u8; 64] = signature.try_into().unwrap();
    key.verify_strict(&message, &ed25519_dalek::Signature::from_bytes(&sig)).unwrap();
}
