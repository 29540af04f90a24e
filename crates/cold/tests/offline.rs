#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]
//! The cold path end to end, with the real `strongroom-cold` binary: three key holders make
//! their keys, build a 2-of-3 P2WSH wallet, a quorum approves a withdrawal, the online side
//! produces a bundle, two signers — each in a network namespace with no interfaces — check
//! it, show it and sign it, and the combined transaction passes Bitcoin Core's consensus
//! check. Tampered bundles, missing approvals, a second transaction for the same request and
//! a wrong passphrase are refused.
//!
//! Network namespaces need root (`unshare --net`); under `STRONGROOM_REQUIRE_NETNS=1` (CI)
//! their absence fails the test instead of skipping it.

mod support;

use std::path::Path;
use std::process::Command;

use fixtures::{funding, regtest_intent};
use strongroom_chain_bitcoin::bitcoin::{self, Amount, TxOut};
use strongroom_chain_bitcoin::psbt::{from_base64, to_base64};
use strongroom_chain_bitcoin::wallet::ColdWallet;
use strongroom_chain_bitcoin::{Keychain, Multisig};
use strongroom_cold::bundle::{Bundle, Payload};
use strongroom_cold::online::{finalize_bitcoin, prepare_bitcoin, Request};
use strongroom_core::{Env, Intent, SystemEnv, Timestamp};
use strongroom_governance::approval::Approval;
use strongroom_governance::log::replay;
use strongroom_governance::Role;
use strongroom_units::chain::BITCOIN_REGTEST;
use support::{
    approve, cold, governance, key_holders, netns_available, p, refused_offline, sign_showing,
    write_bundle, Holders,
};

#[path = "../../chain-bitcoin/tests/support/fixtures.rs"]
mod fixtures;

fn intent(dest: &str, sat: u128, request: u128, now: Timestamp) -> Intent {
    regtest_intent(dest, sat, 50_000, request, now.plus_ms(86_400_000))
}

#[test]
fn a_two_of_three_cold_withdrawal_signed_offline_passes_bitcoin_core() {
    let netns = netns_available();
    if !netns {
        eprintln!("skipped: `unshare --net` is not available (run as root, or set STRONGROOM_REQUIRE_NETNS=1 to fail instead)");
        return;
    }
    let env = SystemEnv::new();
    let now = env.now();
    let dir = tempfile::tempdir().unwrap();
    let gov = governance(now);
    // Key ceremony: three holders, three offline homes, three passphrases.
    let Holders { genesis_file, homes, passes, keys: account_keys } =
        key_holders(dir.path(), BITCOIN_REGTEST, &gov);
    for k in &account_keys {
        assert!(k.starts_with('[') && k.contains("]tpub"), "{k}");
    }
    let mut args = vec!["descriptor", "--chain", BITCOIN_REGTEST, "--threshold", "2"];
    for k in &account_keys {
        args.extend(["--key", k.as_str()]);
    }
    let o = cold(false, &args, "");
    assert!(o.ok, "{}", o.stderr);
    let descriptor = o.stdout.trim().to_owned();
    for home in &homes {
        let o = cold(
            false,
            &[
                "install-wallet",
                "--home",
                p(home),
                "--wallet",
                "cold-btc-1",
                "--descriptor",
                &descriptor,
            ],
            "",
        );
        assert!(o.ok && o.stdout.contains("2-of-3"), "{} {}", o.stdout, o.stderr);
    }
    // A stranger's home refuses a wallet that does not include its key.
    let stranger = dir.path().join("stranger");
    let sp = dir.path().join("pass-s");
    std::fs::write(&sp, "stranger passphrase, long enough\n").unwrap();
    assert!(
        cold(
            false,
            &[
                "init",
                "--home",
                p(&stranger),
                "--chain",
                BITCOIN_REGTEST,
                "--genesis",
                p(&genesis_file),
                "--pin",
                &gov.pin,
                "--passphrase-file",
                p(&sp)
            ],
            ""
        )
        .ok
    );
    let o = cold(
        false,
        &[
            "install-wallet",
            "--home",
            p(&stranger),
            "--wallet",
            "cold-btc-1",
            "--descriptor",
            &descriptor,
        ],
        "",
    );
    assert!(!o.ok && o.stderr.contains("does not include this signer's key"), "{}", o.stderr);

    // The online side watches the same wallet (public keys only) and sees two deposits.
    let multisig = Multisig::from_descriptor(&descriptor, bitcoin::Network::Regtest).unwrap();
    let mut wallet = ColdWallet::new(&multisig).unwrap();
    let a = wallet.next_address();
    assert_eq!(a, multisig.address(Keychain::Receive, 0).unwrap());
    wallet.add_transaction(funding(&a, 150_000_000, 1), 1).unwrap();
    let b = wallet.next_address();
    wallet.add_transaction(funding(&b, 30_000_000, 2), 2).unwrap();

    let dest = "bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080";
    let i = intent(dest, 160_000_000, 1, now);
    let state = replay(&gov.genesis, &gov.pin, &gov.log, now).unwrap();
    let moved = |_: &strongroom_governance::policy::VelocityLimit| strongroom_units::Amount::ZERO;
    let one = [approve("ann", 3, &i, now)];
    let two = [approve("ann", 3, &i, now), approve("ops", 4, &i, now)];
    let req = |approvals: &'static [Approval]| Request {
        intent: &i,
        initiator: "eve",
        initiator_role: Role::Operator,
        approvals,
        log: &gov.log,
        state: &state,
        moved: &moved,
    };
    // No bundle before a quorum has approved.
    let one: &'static [Approval] = Box::leak(Box::new(one));
    let two: &'static [Approval] = Box::leak(Box::new(two));
    let err = prepare_bitcoin(&mut wallet, &req(one), 5, &env).unwrap_err();
    assert!(err.to_string().contains("1 of 2 approvals"), "{err}");
    let (bundle, decoded) = prepare_bitcoin(&mut wallet, &req(two), 5, &env).unwrap();
    assert_eq!(decoded.inputs.len(), 2);
    let bundle_file = dir.path().join("bundle.json");
    write_bundle(&bundle_file, &bundle);

    // Two holders sign, each offline, after reading what they sign.
    let mut signed = Vec::new();
    for n in [0usize, 2] {
        let out = dir.path().join(format!("signed-{n}.json"));
        let words = [
            "Cold withdrawal from wallet cold-btc-1 (2-of-3",
            "Send 1.60000000 BTC (160000000 sat)",
            dest,
            "fee 0.0000",
            "back to this wallet",
            "policy v1 rule cold-needs-two: allowed",
            "approvals from ann, ops",
        ];
        signed.push(sign_showing(&homes[n], &bundle_file, &out, &passes[n], &words));
    }
    // One signature does not make a transaction; two do, and Bitcoin Core's consensus code
    // accepts every input (finalize_bitcoin runs libbitcoinconsensus).
    assert!(finalize_bitcoin(&signed[..1]).is_err());
    let tx = finalize_bitcoin(&signed).unwrap();
    let to = strongroom_chain_bitcoin::address(dest, bitcoin::Network::Regtest).unwrap();
    assert!(tx
        .output
        .iter()
        .any(|o| o.script_pubkey == to.script_pubkey() && o.value.to_sat() == 160_000_000));
    assert_eq!(tx.input.len(), 2);
    assert!(tx.input.iter().all(|i| i.witness.len() == 4), "0, two signatures, the witness script");

    // Refusals, each offline; none writes a bundle.
    let refused = |home: &Path, pass: &Path, b: &Bundle, answer: &str, why: &str| {
        refused_offline(dir.path(), home, pass, b, answer, why)
    };
    // An extra output to an address the intent does not name, paid from the change.
    let mut extra = bundle.clone();
    let Payload::BitcoinPsbt { psbt } = &bundle.transaction else { panic!("a PSBT bundle") };
    let mut ps = from_base64(psbt).unwrap();
    let thief = Multisig::new(1, &account_keys[..1], bitcoin::Network::Regtest)
        .unwrap()
        .address(Keychain::Receive, 9)
        .unwrap();
    let change =
        ps.unsigned_tx.output.iter_mut().find(|o| o.script_pubkey != to.script_pubkey()).unwrap();
    change.value = Amount::from_sat(change.value.to_sat() - 5_000_000);
    ps.unsigned_tx
        .output
        .push(TxOut { value: Amount::from_sat(5_000_000), script_pubkey: thief.script_pubkey() });
    ps.outputs.push(Default::default());
    extra.transaction = Payload::BitcoinPsbt { psbt: to_base64(&ps) };
    refused(&homes[1], &passes[1], &extra, "yes\n", "which the intent does not name");
    // One approval stripped: the signer's own governance check refuses.
    let mut fewer = bundle.clone();
    fewer.approvals.truncate(1);
    refused(&homes[1], &passes[1], &fewer, "yes\n", "1 of 2 approvals");
    // The asset relabelled: approvers were shown (and signed) "XBT", but the registry the
    // signer pins names the regtest chain's coin BTC.
    let mut relabelled = bundle.clone();
    relabelled.intent.asset.symbol = strongroom_units::AssetSymbol::parse("XBT").unwrap();
    relabelled.approvals = vec![
        approve("ann", 3, &relabelled.intent, now),
        approve("ops", 4, &relabelled.intent, now),
    ];
    refused(&homes[1], &passes[1], &relabelled, "yes\n", "registered as BTC");
    // A governance log that does not chain to the pinned genesis.
    let mut forged = bundle.clone();
    forged.governance[0].signoffs.pop();
    refused(&homes[1], &passes[1], &forged, "yes\n", "governance");
    // The holder does not confirm; then a wrong passphrase.
    refused(&homes[1], &passes[1], &bundle, "no\n", "the answer was not yes");
    refused(&homes[1], &passes[0], &bundle, "yes\n", "wrong passphrase");
    // Holder 1 signed request 1 already; the same request as another transaction is refused.
    wallet.cancel(&from_base64(psbt).unwrap());
    let (again, _) = prepare_bitcoin(&mut wallet, &req(two), 7, &env).unwrap();
    assert_ne!(again.transaction, bundle.transaction);
    refused(&homes[0], &passes[0], &again, "yes\n", "signing another would pay it twice");

    // Backup and restore: the restored key is the same key.
    let backup = dir.path().join("holder-1.backup");
    let bp = dir.path().join("backup-pass");
    std::fs::write(&bp, "a different backup passphrase\n").unwrap();
    let o = cold(
        true,
        &[
            "backup",
            "--home",
            p(&homes[0]),
            "--out",
            p(&backup),
            "--passphrase-file",
            p(&passes[0]),
            "--backup-passphrase-file",
            p(&bp),
        ],
        "",
    );
    assert!(o.ok, "{}", o.stderr);
    let restore = |home: &Path, backup_pass: &Path| {
        let args = [
            "init",
            "--home",
            p(home),
            "--chain",
            BITCOIN_REGTEST,
            "--genesis",
            p(&genesis_file),
            "--pin",
            &gov.pin,
            "--passphrase-file",
            p(&passes[1]),
            "--restore",
            p(&backup),
            "--backup-passphrase-file",
            p(backup_pass),
        ];
        cold(true, &args, "")
    };
    let o = restore(&dir.path().join("restored"), &bp);
    assert!(o.ok, "{}", o.stderr);
    assert_eq!(o.stdout.lines().nth(1), Some(account_keys[0].as_str()));
    // A backup does not open with the key's own passphrase.
    let o = restore(&dir.path().join("r2"), &passes[0]);
    assert!(!o.ok && o.stderr.contains("wrong passphrase"), "{}", o.stderr);
}

/// The offline signer's dependency tree holds no networking crate.
#[test]
fn the_offline_signer_links_no_networking_crate() {
    let manifest = concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml");
    let out = Command::new(env!("CARGO"))
        .args([
            "tree",
            "--manifest-path",
            manifest,
            "-p",
            "strongroom-cold",
            "-e",
            "normal",
            "--prefix",
            "none",
            "--format",
            "{p}",
            "--offline",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let tree = String::from_utf8_lossy(&out.stdout);
    let crates: std::collections::BTreeSet<&str> =
        tree.lines().filter_map(|l| l.split_whitespace().next()).collect();
    assert!(
        crates.contains("strongroom-chain-bitcoin") && crates.contains("bitcoin"),
        "the tree was read: {crates:?}"
    );
    let networking = [
        "tokio",
        "mio",
        "socket2",
        "hyper",
        "hyper-util",
        "h2",
        "reqwest",
        "ureq",
        "curl",
        "isahc",
        "rustls",
        "tokio-rustls",
        "native-tls",
        "openssl",
        "axum",
        "tonic",
        "tower",
        "async-nats",
        "sqlx",
        "tungstenite",
        "url",
        "webauthn-rs",
        "electrum-client",
        "esplora-client",
        "bitcoincore-rpc",
        "jsonrpc",
        "nix",
    ];
    let found: Vec<&&str> = networking.iter().filter(|n| crates.contains(**n)).collect();
    assert!(found.is_empty(), "networking crates in strongroom-cold's tree: {found:?}");
}
