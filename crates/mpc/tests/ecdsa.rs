//! CGGMP21 threshold ECDSA end to end in one process: auxiliary info (from the committed
//! test-only primes), 2-of-3 key generation, presignatures, BIP-32 child keys, signing.
//! Every signature is checked by libsecp256k1 (the `secp256k1` crate), and child public
//! keys by an independent BIP-32 CKDpub written here on k256.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)] // Test code.

use std::sync::OnceLock;

use hmac::{Hmac, Mac};
use k256::elliptic_curve::sec1::{FromEncodedPoint, ToEncodedPoint};
use k256::elliptic_curve::PrimeField;
use rand_core::OsRng;
use sha2::{Digest, Sha256, Sha512};
use strongroom_mpc::ecdsa::{self, KeyShare, Parties, Primes};
use strongroom_mpc::{Envelope, ExecutionId, MpcError};

/// TEST ONLY primes, generated once by `examples/test-primes.rs` and committed so tests do
/// not spend minutes finding safe primes. Public, so never fit for a real key.
fn test_primes() -> Vec<Primes> {
    let text = include_str!("fixtures/test-primes.json");
    serde_json::from_str(text).unwrap()
}

/// One 2-of-3 key for the whole file (aux info is the slow step: do it once).
fn keys() -> &'static Vec<KeyShare> {
    static KEYS: OnceLock<Vec<KeyShare>> = OnceLock::new();
    KEYS.get_or_init(|| {
        let parties = Parties::new([1, 2, 3]).unwrap();
        let eid = ExecutionId::derive("aux", b"group-1", b"");
        let mut rngs = [OsRng, OsRng, OsRng];
        let sessions = rngs
            .iter_mut()
            .zip(test_primes())
            .zip(1u16..)
            .map(|((rng, primes), me)| {
                ecdsa::aux_info(&eid, me, &parties, primes, Default::default(), rng).unwrap()
            })
            .collect();
        let aux = ecdsa::run_local(sessions).unwrap();

        let eid = ExecutionId::derive("keygen", b"key-1", b"");
        let mut rngs = [OsRng, OsRng, OsRng];
        let sessions = rngs
            .iter_mut()
            .zip(1u16..)
            .map(|(rng, me)| ecdsa::keygen(&eid, me, &parties, 2, rng).unwrap())
            .collect();
        let incomplete = ecdsa::run_local(sessions).unwrap();
        incomplete.into_iter().zip(aux).map(|(i, a)| ecdsa::complete(i, a).unwrap()).collect()
    })
}

fn presign(signers: &[u16], request: &[u8]) -> Vec<ecdsa::Presignature> {
    let keys = keys();
    let set = Parties::new(signers.iter().copied()).unwrap();
    let eid = ExecutionId::derive("presign", request, b"");
    let mut rngs: Vec<OsRng> = signers.iter().map(|_| OsRng).collect();
    let sessions = rngs
        .iter_mut()
        .zip(signers)
        .map(|(rng, me)| ecdsa::presign(&eid, *me, &set, &keys[usize::from(*me) - 1], rng).unwrap())
        .collect();
    ecdsa::run_local(sessions).unwrap()
}

fn verify_libsecp(public: &[u8; 33], digest: &[u8; 32], sig: &[u8; 64]) {
    let pk = secp256k1::PublicKey::from_slice(public).unwrap();
    let msg = secp256k1::Message::from_digest(*digest);
    let sig = secp256k1::ecdsa::Signature::from_compact(sig).unwrap();
    secp256k1::SECP256K1.verify_ecdsa(&msg, &sig, &pk).unwrap();
}

/// BIP-32 CKDpub for non-hardened indices, written from the BIP's text on k256.
fn ckd_pub(public: [u8; 33], chain_code: [u8; 32], path: &[u32]) -> [u8; 33] {
    let mut point = k256::PublicKey::from_sec1_bytes(&public).unwrap().to_projective();
    let mut chain = chain_code;
    for i in path {
        assert!(*i < 0x8000_0000);
        let mut mac = Hmac::<Sha512>::new_from_slice(&chain).unwrap();
        mac.update(point.to_affine().to_encoded_point(true).as_bytes());
        mac.update(&i.to_be_bytes());
        let out = mac.finalize().into_bytes();
        let il = k256::Scalar::from_repr(*k256::FieldBytes::from_slice(&out[..32])).unwrap();
        point += k256::ProjectivePoint::GENERATOR * il;
        chain.copy_from_slice(&out[32..]);
    }
    let affine =
        k256::AffinePoint::from_encoded_point(&point.to_affine().to_encoded_point(true)).unwrap();
    affine.to_encoded_point(true).as_bytes().try_into().unwrap()
}

fn sign(signers: &[u16], presigs: Vec<ecdsa::Presignature>, path: &[u32], msg: &[u8]) -> [u8; 64] {
    let keys = keys();
    let digest: [u8; 32] = Sha256::digest(msg).into();
    let partials: Vec<_> = presigs
        .into_iter()
        .zip(signers)
        .map(|(p, me)| {
            let master = ecdsa::MasterPublic::of(&keys[usize::from(*me) - 1]).unwrap();
            ecdsa::partial_sign(p, &master, path, &digest).unwrap()
        })
        .collect();
    let public = ecdsa::public_key(&keys[0], path).unwrap();
    let sig = ecdsa::combine(&partials, &public, &digest).unwrap();
    verify_libsecp(&public, &digest, &sig);
    sig
}

#[test]
fn every_pair_signs_for_the_master_key_and_libsecp256k1_accepts() {
    let keys = keys();
    let master = ecdsa::public_key(&keys[0], &[]).unwrap();
    for k in keys {
        assert_eq!(ecdsa::public_key(k, &[]).unwrap(), master, "all shares agree on the key");
    }
    for signers in [[1u16, 2], [1, 3], [2, 3]] {
        let presigs = presign(&signers, format!("req-{signers:?}").as_bytes());
        let sig = sign(&signers, presigs, &[], b"withdrawal 42");
        // Low-s (BIP-62 / libsecp256k1 normalised form).
        let mut normalized = secp256k1::ecdsa::Signature::from_compact(&sig).unwrap();
        normalized.normalize_s();
        assert_eq!(normalized.serialize_compact(), sig);
    }
}

#[test]
fn child_keys_follow_bip32_and_sign() {
    let keys = keys();
    let epub = keys[0].extended_public_key().unwrap();
    let master = ecdsa::public_key(&keys[0], &[]).unwrap();
    for path in [vec![0u32], vec![7, 1_000_000], vec![0x7fff_ffff, 3, 5]] {
        let child = ecdsa::public_key(&keys[0], &path).unwrap();
        assert_ne!(child, master);
        assert_eq!(child, ckd_pub(master, epub.chain_code, &path), "path {path:?}");
        // The public half alone derives the same child (no share needed for addresses).
        let public = ecdsa::MasterPublic { public_key: master, chain_code: epub.chain_code };
        assert_eq!(public.derive(&path).unwrap(), child);
        let presigs = presign(&[1, 3], format!("child-{path:?}").as_bytes());
        sign(&[1, 3], presigs, &path, b"customer deposit sweep");
    }
    assert!(ecdsa::path(&[0x8000_0000]).is_err(), "hardened indices are refused");
}

#[test]
fn a_signature_for_another_message_or_key_does_not_verify() {
    let keys = keys();
    let presigs = presign(&[2, 3], b"other");
    let digest: [u8; 32] = Sha256::digest(b"pay alice").into();
    let partials: Vec<_> = presigs
        .into_iter()
        .zip([2u16, 3])
        .map(|(p, me)| {
            let master = ecdsa::MasterPublic::of(&keys[usize::from(me) - 1]).unwrap();
            ecdsa::partial_sign(p, &master, &[], &digest).unwrap()
        })
        .collect();
    let wrong: [u8; 32] = Sha256::digest(b"pay mallory").into();
    let public = ecdsa::public_key(&keys[0], &[]).unwrap();
    assert!(matches!(ecdsa::combine(&partials, &public, &wrong), Err(MpcError::Misbehaved { .. })));
    let child = ecdsa::public_key(&keys[0], &[9]).unwrap();
    assert!(ecdsa::combine(&partials, &child, &digest).is_err());
    // A signer that sends a partial signature from another presignature spoils the result.
    let mut partials = partials;
    let other = presign(&[2, 3], b"other-2");
    let master = ecdsa::MasterPublic::of(&keys[1]).unwrap();
    let stray =
        ecdsa::partial_sign(other.into_iter().next().unwrap(), &master, &[], &digest).unwrap();
    partials[0] = stray;
    assert!(ecdsa::combine(&partials, &public, &digest).is_err());
}

/// Start a presignature session for parties 1 and 2 and return them with party 2's first
/// message to party 1.
fn first_message<'a>(
    eid: &'a ExecutionId,
    set: &'a Parties,
    rngs: &'a mut [OsRng; 2],
) -> (ecdsa::Session<'a, ecdsa::Presignature>, Vec<Envelope<Vec<u8>>>) {
    let keys = keys();
    let [r1, r2] = rngs;
    let mut p1 = ecdsa::presign(eid, 1, set, &keys[0], r1).unwrap();
    let mut p2 = ecdsa::presign(eid, 2, set, &keys[1], r2).unwrap();
    p1.step(None).unwrap();
    let out = p2.step(None).unwrap().outgoing;
    assert!(!out.is_empty());
    (p1, out)
}

#[test]
fn replayed_foreign_and_garbage_messages_are_refused_or_blamed() {
    let set = Parties::new([1, 2]).unwrap();
    let eid = ExecutionId::derive("presign", b"victim", b"");
    let mut rngs = [OsRng, OsRng];
    let (mut p1, out) = first_message(&eid, &set, &mut rngs);
    let msg = out[0].clone();

    // The same message from an older session is refused on its execution id.
    let old = ExecutionId::derive("presign", b"older", b"");
    let replay = Envelope { eid: old, ..msg.clone() };
    assert_eq!(p1.step(Some(replay)).unwrap_err(), MpcError::WrongExecution { from: 2 });
    // A party outside the session.
    let stranger = Envelope { from: 3, ..msg.clone() };
    assert_eq!(p1.step(Some(stranger)).unwrap_err(), MpcError::UnknownSender { from: 3 });
    // Delivered once: accepted. Delivered twice: a duplicate.
    p1.step(Some(msg.clone())).unwrap();
    assert!(matches!(p1.step(Some(msg)).unwrap_err(), MpcError::Duplicate { from: 2, .. }));

    // Garbage in the next message ends the session and names the sender.
    let set2 = Parties::new([1, 2]).unwrap();
    let eid2 = ExecutionId::derive("presign", b"garbage", b"");
    let mut rngs2 = [OsRng, OsRng];
    let (mut q1, out) = first_message(&eid2, &set2, &mut rngs2);
    let garbage = Envelope { payload: b"{\"not\":\"cggmp\"}".to_vec(), ..out[0].clone() };
    match q1.step(Some(garbage)).unwrap_err() {
        MpcError::Misbehaved { culprits, .. } => assert_eq!(culprits, vec![2]),
        other => panic!("expected a culprit, got {other:?}"),
    }
    assert_eq!(q1.step(None).unwrap_err(), MpcError::Finished);
}

#[test]
fn parameters_are_checked() {
    assert!(Parties::new([1]).is_err());
    assert!(Parties::new([0, 1]).is_err());
    assert!(Parties::new(1..=11).is_err());
    let keys = keys();
    let three = Parties::new([1, 2, 3]).unwrap();
    let eid = ExecutionId::derive("presign", b"x", b"");
    let mut rng = OsRng;
    // A 2-of-3 key presigns with exactly two signers.
    assert!(ecdsa::presign(&eid, 1, &three, &keys[0], &mut rng).is_err());
    let pair = Parties::new([2, 3]).unwrap();
    assert!(ecdsa::presign(&eid, 1, &pair, &keys[0], &mut rng).is_err());
    let mut rng = OsRng;
    assert!(ecdsa::keygen(&eid, 1, &three, 4, &mut rng).is_err());
}

#[test]
fn keygen_works_for_thresholds_up_to_ten_parties() {
    for (n, t) in [(2u16, 2u16), (5, 3), (10, 7)] {
        let parties = Parties::new(1..=n).unwrap();
        let eid = ExecutionId::derive("keygen", format!("{t}-of-{n}").as_bytes(), b"");
        let mut rngs: Vec<OsRng> = (0..n).map(|_| OsRng).collect();
        let sessions = rngs
            .iter_mut()
            .zip(1u16..)
            .map(|(rng, me)| ecdsa::keygen(&eid, me, &parties, t, rng).unwrap())
            .collect();
        let shares = ecdsa::run_local(sessions).unwrap();
        let first = shares[0].shared_public_key;
        assert!(shares.iter().all(|s| s.shared_public_key == first));
        assert_eq!(shares.len(), usize::from(n));
    }
}
