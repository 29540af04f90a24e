//! FROST end to end in one process: DKG, then signing by every 2-of-3 subset, checked by
//! verifiers that share no code with frost (k256's BIP-340, ed25519-dalek). Replayed and
//! forged messages are refused or blamed on their sender.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)] // Test code.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use frost_core::Ciphersuite;
use strongroom_core::{FixedEnv, Timestamp};
use strongroom_mpc::frost::{
    Dkg, DkgPayload, Ed25519, KeyShare, Repair, Repaired, Secp256k1Taproot, SignPayload, Signer,
    Step,
};
use strongroom_mpc::Envelope;
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

/// A hot Bitcoin wallet on the FROST-Taproot key: coins paid to its P2TR address are spent
/// by a 2-of-3 signature over the BIP-341 sighash, which libsecp256k1's BIP-340 verifier
/// accepts for the output key (and libbitcoinconsensus finds nothing wrong with the rest);
/// the same signature on a changed transaction, or another group's, is refused.
#[test]
fn a_frost_taproot_key_spend_passes_bitcoin_core() {
    use strongroom_chain_bitcoin::bitcoin::{
        absolute::LockTime, transaction::Version, Amount, Network, OutPoint, ScriptBuf, Sequence,
        Transaction, TxIn, TxOut, Witness,
    };
    use strongroom_chain_bitcoin::hot::{
        attach_key_spend, key_spend_sighash, p2tr_address, verify_key_spend,
    };
    let shares = dkg::<Secp256k1Taproot>(3, 2, 11);
    let group = shares[0].group_key().unwrap();
    let hot = p2tr_address(&group, Network::Regtest).unwrap();
    assert!(hot.to_string().starts_with("bcrt1p"), "{hot}");
    let funding = Transaction {
        version: Version::TWO,
        lock_time: LockTime::ZERO,
        input: vec![TxIn {
            previous_output: OutPoint::null(),
            script_sig: ScriptBuf::new(),
            sequence: Sequence::MAX,
            witness: Witness::new(),
        }],
        output: vec![TxOut { value: Amount::from_sat(50_000), script_pubkey: hot.script_pubkey() }],
    };
    let prevout = OutPoint { txid: funding.compute_txid(), vout: 0 };
    let elsewhere = p2tr_address(&[2u8; 32], Network::Regtest).unwrap();
    let mut spend = Transaction {
        version: Version::TWO,
        lock_time: LockTime::ZERO,
        input: vec![TxIn {
            previous_output: prevout,
            script_sig: ScriptBuf::new(),
            sequence: Sequence::ENABLE_RBF_NO_LOCKTIME,
            witness: Witness::new(),
        }],
        output: vec![TxOut {
            value: Amount::from_sat(49_000),
            script_pubkey: elsewhere.script_pubkey(),
        }],
    };
    let spent = vec![funding.output[0].clone()];
    let sighash = key_spend_sighash(&spend, 0, &spent).unwrap();
    let sig = sign(&shares, &[1, 3], &sighash, 12).unwrap();
    attach_key_spend(&mut spend, 0, &sig).unwrap();
    let lookup = |op: &OutPoint| (*op == prevout).then(|| spent[0].clone());
    spend.verify(lookup).unwrap();
    verify_key_spend(&spend, 0, &spent).unwrap();
    // The signature does not carry over to a changed transaction.
    let mut changed = spend.clone();
    changed.output[0].value = Amount::from_sat(49_001);
    assert!(verify_key_spend(&changed, 0, &spent).is_err());
    // Nor does another group's signature count for this key.
    let others = dkg::<Secp256k1Taproot>(3, 2, 13);
    let mut forged = spend.clone();
    attach_key_spend(&mut forged, 0, &sign(&others, &[1, 2], &sighash, 14).unwrap()).unwrap();
    assert!(verify_key_spend(&forged, 0, &spent).is_err());
    // Each 2-of-3 subset signs for the same key.
    for signers in [[1, 2], [2, 3]] {
        let mut again = spend.clone();
        attach_key_spend(&mut again, 0, &sign(&shares, &signers, &sighash, 15).unwrap()).unwrap();
        verify_key_spend(&again, 0, &spent).unwrap();
    }
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

/// Run DKG-shaped sessions (fresh or refresh) to the end, delivering in order.
fn run_dkg<C: Ciphersuite>(
    mut parties: BTreeMap<u16, Dkg<C>>,
    mut queue: VecDeque<Envelope<DkgPayload<C>>>,
) -> Result<Vec<KeyShare<C>>, MpcError> {
    let ids: Vec<u16> = parties.keys().copied().collect();
    let mut done = BTreeMap::new();
    while let Some(msg) = queue.pop_front() {
        let to: Vec<u16> = match msg.to {
            Some(to) => vec![to],
            None => ids.iter().copied().filter(|p| *p != msg.from).collect(),
        };
        for p in to {
            match parties.get_mut(&p).unwrap().handle(msg.clone())? {
                Step::Wait => {}
                Step::Send(out) => queue.extend(out),
                Step::Finished(share) => {
                    done.insert(p, share);
                }
            }
        }
    }
    Ok(done.into_values().collect())
}

fn secret_bytes<C: Ciphersuite>(k: &KeyShare<C>) -> Vec<u8> {
    k.key_package.signing_share().serialize()
}

#[test]
fn refresh_keeps_the_key_and_retires_old_shares() {
    let old = dkg::<Secp256k1Taproot>(3, 2, 11);
    let e = env(12);
    let eid = ExecutionId::derive("refresh", b"hot-btc-1", b"");
    let mut parties = BTreeMap::new();
    let mut queue = VecDeque::new();
    for s in &old {
        let (p, out) = Dkg::start_refresh(eid, s, [1, 2, 3].into(), EnvRng(&e)).unwrap();
        parties.insert(s.me, p);
        queue.extend(out);
    }
    let new = run_dkg(parties, queue).unwrap();
    assert_eq!(new.len(), 3);
    for (o, n) in old.iter().zip(&new) {
        assert_eq!(o.group_key().unwrap(), n.group_key().unwrap(), "same group key");
        assert_ne!(secret_bytes(o), secret_bytes(n), "new share");
    }
    let group = new[0].group_key().unwrap();
    let key = k256::schnorr::VerifyingKey::from_bytes(&group[group.len() - 32..]).unwrap();
    let sig = sign(&new, &[1, 3], b"after refresh", 13).unwrap();
    key.verify_raw(b"after refresh", &k256::schnorr::Signature::try_from(sig.as_slice()).unwrap())
        .unwrap();
    // An old share does not sign with a new one: the stolen-share window is closed.
    let mixed = vec![
        KeyShare::<Secp256k1Taproot>::from_bytes(&old[0].to_bytes().unwrap()).unwrap(),
        KeyShare::<Secp256k1Taproot>::from_bytes(&new[2].to_bytes().unwrap()).unwrap(),
    ];
    assert!(sign(&mixed, &[1, 3], b"mixed", 14).is_err());
}

/// Run a repair (or an enrolment) to the end; the rebuilt share and the helpers' states.
fn run_repair<'k, C: Ciphersuite>(
    shares: &'k [KeyShare<C>],
    helpers: &[u16],
    lost: u16,
    seed: u64,
) -> (KeyShare<C>, Vec<Repair<'k, C>>) {
    let e = env(seed);
    let eid = ExecutionId::derive("repair", &lost.to_be_bytes(), b"");
    let set: BTreeSet<u16> = helpers.iter().copied().collect();
    let mut target = Repair::<C>::start_lost(eid, lost, set.clone()).unwrap();
    let mut machines = BTreeMap::new();
    let mut queue = VecDeque::new();
    for s in shares.iter().filter(|s| set.contains(&s.me)) {
        let (m, out) = Repair::start_helper(eid, s, set.clone(), lost, EnvRng(&e)).unwrap();
        machines.insert(s.me, m);
        queue.extend(out);
    }
    let mut restored = None;
    while let Some(msg) = queue.pop_front() {
        let step = match msg.to {
            Some(to) if to == lost => target.handle(msg).unwrap(),
            Some(to) => machines.get_mut(&to).unwrap().handle(msg).unwrap(),
            None => panic!("repairs send no broadcast"),
        };
        match step {
            Step::Send(out) => queue.extend(out),
            Step::Finished(Repaired::Restored(k)) => restored = Some(k),
            Step::Wait | Step::Finished(Repaired::Helped) => {}
        }
    }
    (restored.expect("the party got its share"), machines.into_values().collect())
}

fn copy<C: Ciphersuite>(k: &KeyShare<C>) -> KeyShare<C> {
    KeyShare::from_bytes(&k.to_bytes().unwrap()).unwrap()
}

/// Node 3 is compromised: nodes 1 and 2 refresh without it (same group key, its share
/// dead), then enrol node 4, whose share is checked against a verifying share every helper
/// computes alike; {1, 4} and {2, 4} sign under the old group key, node 3's share never
/// again.
#[test]
fn refresh_without_a_party_then_enrol_a_new_one() {
    let old = dkg::<Secp256k1Taproot>(3, 2, 41);
    let e = env(42);
    let eid = ExecutionId::derive("refresh", b"without-3", b"");
    let mut parties = BTreeMap::new();
    let mut queue = VecDeque::new();
    for s in old.iter().filter(|s| s.me != 3) {
        let (p, out) = Dkg::start_refresh(eid, s, [1, 2].into(), EnvRng(&e)).unwrap();
        parties.insert(s.me, p);
        queue.extend(out);
    }
    // A refresh with too few parties, or with one that holds no share, does not start.
    assert!(Dkg::start_refresh(eid, &old[0], [1].into(), EnvRng(&e)).is_err());
    assert!(Dkg::start_refresh(eid, &old[0], [1, 4].into(), EnvRng(&e)).is_err());
    let new = run_dkg(parties, queue).unwrap();
    assert_eq!(new.len(), 2);
    assert_eq!(new[0].public.verifying_shares().len(), 2, "party 3 is out of the group");
    assert_eq!(new[0].group_key().unwrap(), old[0].group_key().unwrap());
    // Party 3's share signs with neither new share.
    assert!(sign(&[copy(&new[0]), copy(&old[2])], &[1, 3], b"old", 43).is_err());
    assert!(sign(&[copy(&new[1]), copy(&old[2])], &[2, 3], b"old", 44).is_err());

    let (four, helpers) = run_repair(&new, &[1, 2], 4, 45);
    let grown: Vec<KeyShare<Secp256k1Taproot>> =
        helpers.iter().map(|h| h.enrolled().expect("a helper that enrolled")).collect();
    assert!(grown.iter().all(|g| g.public == four.public), "every party sees the same group");
    assert_eq!(four.public.verifying_shares().len(), 3);
    let group = four.group_key().unwrap();
    let key = k256::schnorr::VerifyingKey::from_bytes(&group[group.len() - 32..]).unwrap();
    let all = vec![copy(&grown[0]), copy(&grown[1]), copy(&four)];
    for pair in [[1, 4], [2, 4], [1, 2]] {
        let sig = sign(&all, &pair, b"after enrolment", 46).unwrap();
        key.verify_raw(
            b"after enrolment",
            &k256::schnorr::Signature::try_from(sig.as_slice()).unwrap(),
        )
        .unwrap();
    }
    // A repair of a party that holds a share (not an enrolment) changes no helper's group.
    let (_, helpers) = run_repair(&all, &[1, 4], 2, 47);
    assert!(helpers.iter().all(|h| h.enrolled().is_none()));
}

#[test]
fn two_helpers_rebuild_a_lost_share_without_learning_it() {
    let shares = dkg::<Ed25519>(3, 2, 21);
    let e = env(22);
    let eid = ExecutionId::derive("repair", b"node-2", b"");
    let helpers: BTreeSet<u16> = [1, 3].into();
    let mut lost = Repair::<Ed25519>::start_lost(eid, 2, helpers.clone()).unwrap();
    let mut h1 = Repair::start_helper(eid, &shares[0], helpers.clone(), 2, EnvRng(&e)).unwrap();
    let mut h3 = Repair::start_helper(eid, &shares[2], helpers.clone(), 2, EnvRng(&e)).unwrap();
    let mut queue: VecDeque<_> = h1.1.drain(..).chain(h3.1.drain(..)).collect();
    let mut restored = None;
    while let Some(msg) = queue.pop_front() {
        let step = match msg.to {
            Some(1) => h1.0.handle(msg).unwrap(),
            Some(3) => h3.0.handle(msg).unwrap(),
            Some(2) => lost.handle(msg).unwrap(),
            other => panic!("unexpected recipient {other:?}"),
        };
        match step {
            Step::Wait => {}
            Step::Send(out) => queue.extend(out),
            Step::Finished(Repaired::Restored(k)) => restored = Some(k),
            Step::Finished(Repaired::Helped) => {}
        }
    }
    assert!(h1.0.is_done() && h3.0.is_done());
    let restored = restored.expect("party 2 got its share back");
    assert_eq!(secret_bytes(&restored), secret_bytes(&shares[1]), "the same share");
    let both =
        vec![KeyShare::<Ed25519>::from_bytes(&shares[0].to_bytes().unwrap()).unwrap(), restored];
    let sig = sign(&both, &[1, 2], b"after repair", 23).unwrap();
    let group: [u8; 32] = shares[0].group_key().unwrap().try_into().unwrap();
    let key = ed25519_dalek::VerifyingKey::from_bytes(&group).unwrap();
    key.verify_strict(
        b"after repair",
        &ed25519_dalek::Signature::from_bytes(&sig.try_into().unwrap()),
    )
    .unwrap();
    // A helper set that includes the lost party, or a single helper, is refused.
    assert!(Repair::<Ed25519>::start_lost(eid, 2, [2, 3].into()).is_err());
    assert!(Repair::<Ed25519>::start_lost(eid, 2, [3].into()).is_err());
}

#[test]
fn a_round_two_message_that_comes_early_is_refused_without_harm() {
    let e = env(31);
    let eid = ExecutionId::derive("dkg", b"ooo", b"");
    let mut parties = BTreeMap::new();
    let mut round1 = Vec::new();
    for me in 1..=3u16 {
        let (p, out) = Dkg::<Secp256k1Taproot>::start(eid, me, 3, 2, EnvRng(&e)).unwrap();
        parties.insert(me, p);
        round1.extend(out);
    }
    // Parties 1 and 2 finish round 1 (they hear from everyone); party 3 hears only from 1.
    let mut round2 = Vec::new();
    for msg in &round1 {
        for p in [1u16, 2] {
            if p != msg.from {
                if let Step::Send(out) = parties.get_mut(&p).unwrap().handle(msg.clone()).unwrap() {
                    round2.extend(out);
                }
            }
        }
    }
    let p3 = parties.get_mut(&3).unwrap();
    assert!(matches!(p3.handle(round1[0].clone()).unwrap(), Step::Wait));
    let early = round2.iter().find(|m| m.to == Some(3)).unwrap().clone();
    assert!(matches!(
        p3.handle(early.clone()),
        Err(MpcError::WrongRound { expected: 1, got: 2, .. })
    ));
    // Round 1 completes; the early message is accepted when offered again.
    let Step::Send(out3) = p3.handle(round1[1].clone()).unwrap() else { panic!("round 2") };
    round2.extend(out3);
    let mut done = 0;
    for msg in round2 {
        let to = msg.to.unwrap();
        if let Step::Finished(_) = parties.get_mut(&to).unwrap().handle(msg).unwrap() {
            done += 1;
        }
    }
    assert_eq!(done, 3, "every party finishes, party 3 included");
}
