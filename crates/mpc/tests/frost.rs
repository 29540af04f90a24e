//! FROST end to end in one process: DKG, then signing by every 2-of-3 subset, checked by
//! verifiers that share no code with frost (k256's BIP-340, ed25519-dalek). Replayed and
//! forged messages are refused or blamed on their sender.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)] // Test code.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use frost_core::Ciphersuite;
use strongroom_core::{FixedEnv, Timestamp};
use strongroom_mpc::frost::{Dkg, Ed25519, KeyShare, Secp256k1Taproot, SignPayload, Signer, Step};
use strongroom_mpc::{EnvRng, ExecutionId, MpcError};

fn env(seed: u64) -> FixedEnv {
    FixedEnv::new(Timestamp::from_unix_ms(0), seed)
}

/// Deliver every message until all parties finish; broadcasts go to every other party.
fn dkg<C: Ciphersuite>(n: u16, t: u16, seed: u64) -> Vec<KeyShare<C>> {
    let e = env(seed);
    let eid = ExecutionId::derive("dkg", b"key-1", b"");
    let mut parties = BTreeMap::new();
    let mut queue = VecDeque::new();
    for me in 1..=n {
        let (p, out) = Dkg::<C>::start(eid, me, n, t, EnvRng(&e)).unwrap();
        parties.insert(me, p);
        queue.extend(out);
    }
    let mut done = BTreeMap::new();
    while let Some(msg) = queue.pop_front() {
        let to: Vec<u16> = match msg.to {
            Some(to) => vec![to],
            None => (1..=n).filter(|p| *p != msg.from).collect(),
        };
        for p in to {
            match parties.get_mut(&p).unwrap().handle(msg.clone()).unwrap() {
                Step::Wait => {}
                Step::Send(out) => queue.extend(out),
                Step::Finished(share) => {
                    done.insert(p, share);
                }
            }
        }
    }
    assert_eq!(done.len(), usize::from(n));
    done.into_values().collect()
}

fn sign<C: Ciphersuite>(
    shares: &[KeyShare<C>],
    signers: &[u16],
    message: &[u8],
    seed: u64,
) -> Result<Vec<u8>, MpcError> {
    let e = env(seed);
    let eid = ExecutionId::derive("sign", b"request-1", message);
    let set: BTreeSet<u16> = signers.iter().copied().collect();
    let mut parties = BTreeMap::new();
    let mut queue = VecDeque::new();
    for s in shares.iter().filter(|s| set.contains(&s.me)) {
        let (p, out) = Signer::start(eid, s, set.clone(), message, EnvRng(&e))?;
        parties.insert(s.me, p);
        queue.extend(out);
    }
    let mut signatures = Vec::new();
    while let Some(msg) = queue.pop_front() {
        for p in set.iter().copied().filter(|p| *p != msg.from) {
            match parties.get_mut(&p).unwrap().handle(msg.clone())? {
                Step::Wait => {}
                Step::Send(out) => queue.extend(out),
                Step::Finished(sig) => signatures.push(sig.serialize().unwrap()),
            }
        }
    }
    assert_eq!(signatures.len(), signers.len(), "every signer aggregates");
    assert!(signatures.windows(2).all(|w| w[0] == w[1]));
    Ok(signatures.remove(0))
}

#[test]
fn taproot_2_of_3_signatures_verify_with_bip340() {
    let shares = dkg::<Secp256k1Taproot>(3, 2, 1);
    let group = shares[0].group_key().unwrap();
    assert!(shares.iter().all(|s| s.group_key().unwrap() == group), "all parties agree on the key");
    let key = k256::schnorr::VerifyingKey::from_bytes(&group[group.len() - 32..]).unwrap();
    let message = b"strongroom intent hash 0123456789";
    for signers in [[1, 2], [1, 3], [2, 3]] {
        let sig = sign(&shares, &signers, message, 7).unwrap();
        let sig = k256::schnorr::Signature::try_from(sig.as_slice()).unwrap();
        key.verify_raw(message, &sig).unwrap();
        assert!(key.verify_raw(b"another message", &sig).is_err());
    }
    // The key no party holds: fewer than the threshold cannot sign.
    assert!(matches!(sign(&shares, &[1], message, 8), Err(MpcError::Parameters(_))));
}

#[test]
fn ed25519_2_of_3_signatures_verify_with_dalek() {
    let shares = dkg::<Ed25519>(3, 2, 2);
    let group: [u8; 32] = shares[0].group_key().unwrap().try_into().unwrap();
    let key = ed25519_dalek::VerifyingKey::from_bytes(&group).unwrap();
    let message = b"withdrawal 42";
    for signers in [[1, 2], [2, 3], [1, 3]] {
        let sig: [u8; 64] = sign(&shares, &signers, message, 9).unwrap().try_into().unwrap();
        key.verify_strict(message, &ed25519_dalek::Signature::from_bytes(&sig)).unwrap();
    }
}

#[test]
fn three_of_five_and_bad_parameters() {
    let shares = dkg::<Ed25519>(5, 3, 3);
    let group: [u8; 32] = shares[0].group_key().unwrap().try_into().unwrap();
    let key = ed25519_dalek::VerifyingKey::from_bytes(&group).unwrap();
    let sig: [u8; 64] = sign(&shares, &[2, 4, 5], b"m", 4).unwrap().try_into().unwrap();
    key.verify_strict(b"m", &ed25519_dalek::Signature::from_bytes(&sig)).unwrap();
    let e = env(0);
    let eid = ExecutionId::derive("dkg", b"k", b"");
    for (me, n, t) in [(1, 3, 1), (1, 3, 4), (0, 3, 2), (4, 3, 2)] {
        assert!(Dkg::<Ed25519>::start(eid, me, n, t, EnvRng(&e)).is_err(), "{me} {n} {t}");
    }
}

#[test]
fn messages_from_another_execution_are_refused() {
    let shares = dkg::<Secp256k1Taproot>(3, 2, 5);
    let e = env(6);
    let set: BTreeSet<u16> = [1, 2].into();
    let a = ExecutionId::derive("sign", b"request-A", b"m");
    let b = ExecutionId::derive("sign", b"request-B", b"m");
    assert_ne!(a, b);
    assert_ne!(a, ExecutionId::derive("sign", b"request-A", b"m2"));
    let (_, from_a) = Signer::start(a, &shares[0], set.clone(), b"m", EnvRng(&e)).unwrap();
    let (mut in_b, _) = Signer::start(b, &shares[1], set.clone(), b"m", EnvRng(&e)).unwrap();
    let replayed = from_a[0].clone();
    assert_eq!(in_b.handle(replayed).unwrap_err(), MpcError::WrongExecution { from: 1 });
    // A party outside the signer set is refused too.
    let mut outsider = from_a[0].clone();
    outsider.eid = b;
    outsider.from = 3;
    assert_eq!(in_b.handle(outsider).unwrap_err(), MpcError::UnknownSender { from: 3 });
}

#[test]
fn a_bad_signature_share_names_its_sender() {
    let shares = dkg::<Secp256k1Taproot>(3, 2, 11);
    let e = env(12);
    let set: BTreeSet<u16> = [1, 2].into();
    let eid = ExecutionId::derive("sign", b"r", b"m");
    let (mut p1, out1) = Signer::start(eid, &shares[0], set.clone(), b"m", EnvRng(&e)).unwrap();
    let (mut p2, out2) = Signer::start(eid, &shares[1], set.clone(), b"m", EnvRng(&e)).unwrap();
    let Step::Send(_) = p1.handle(out2[0].clone()).unwrap() else { panic!() };
    let Step::Send(share2) = p2.handle(out1[0].clone()).unwrap() else { panic!() };
    // Party 2's real share, replaced by a share party 2 made for another message.
    let other = ExecutionId::derive("sign", b"r", b"other");
    let (mut q1, o1) = Signer::start(other, &shares[0], set.clone(), b"other", EnvRng(&e)).unwrap();
    let (mut q2, o2) = Signer::start(other, &shares[1], set.clone(), b"other", EnvRng(&e)).unwrap();
    let _ = q1.handle(o2[0].clone()).unwrap();
    let Step::Send(forged) = q2.handle(o1[0].clone()).unwrap() else { panic!() };
    let SignPayload::Share(bad) = forged[0].payload.clone() else { panic!() };
    let mut msg = share2[0].clone();
    msg.payload = SignPayload::Share(bad);
    match p1.handle(msg) {
        Err(MpcError::Misbehaved { culprits, .. }) => assert_eq!(culprits, vec![2]),
        other => panic!("expected party 2 to be blamed, got {other:?}"),
    }
}

#[test]
fn key_shares_never_print_their_secret() {
    let shares = dkg::<Ed25519>(2, 2, 13);
    let printed = format!("{:?}", shares[0]);
    assert!(printed.contains("<redacted>"));
    let secret = shares[0].key_package.signing_share().serialize();
    assert!(!printed.contains(&format!("{secret:?}")));
}
