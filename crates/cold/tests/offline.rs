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
    // Exit 1 when the checks refuse the bundle, 2 when signing could not run.
    let refused = |home: &Path, pass: &Path, b: &Bundle, yes: bool, why: &str, code: i32| {
        assert_eq!(refused_offline(dir.path(), home, pass, b, yes, why), Some(code), "{why}")
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
    refused(&homes[1], &passes[1], &extra, true, "which the intent does not name", 1);
    // One approval stripped: the signer's own governance check refuses.
    let mut fewer = bundle.clone();
    fewer.approvals.truncate(1);
    refused(&homes[1], &passes[1], &fewer, true, "1 of 2 approvals", 1);
    // The asset relabelled: approvers were shown (and signed) "XBT", but the registry the
    // signer pins names the regtest chain's coin BTC.
    let mut relabelled = bundle.clone();
    relabelled.intent.asset.symbol = strongroom_units::AssetSymbol::parse("XBT").unwrap();
    relabelled.approvals = vec![
        approve("ann", 3, &relabelled.intent, now),
        approve("ops", 4, &relabelled.intent, now),
    ];
    refused(&homes[1], &passes[1], &relabelled, true, "registered as BTC", 1);
    // A governance log that does not chain to the pinned genesis.
    let mut forged = bundle.clone();
    forged.governance[0].signoffs.pop();
    refused(&homes[1], &passes[1], &forged, true, "governance", 1);
    // No terminal to confirm on and no --yes: it stops at once rather than read the end of
    // stdin as an answer. Then a wrong passphrase.
    let no_tty = "`strongroom-cold sign` needs confirmation: pass --yes (stdin is not a terminal)";
    refused(&homes[1], &passes[1], &bundle, false, no_tty, 2);
    refused(&homes[1], &passes[0], &bundle, true, "wrong passphrase", 2);
    // Holder 1 signed request 1 already; the same request as another transaction is refused.
    wallet.cancel(&from_base64(psbt).unwrap());
    let (again, _) = prepare_bitcoin(&mut wallet, &req(two), 7, &env).unwrap();
    assert_ne!(again.transaction, bundle.transaction);
    refused(&homes[0], &passes[0], &again, true, "signing another would pay it twice", 1);

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

/// `tools/interop/psbt_cosigner.py` (embit) with `args`: its standard output, and whether it
/// succeeded.
fn cosigner(python: &Path, args: &[&str]) -> (bool, String) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tools/interop/psbt_cosigner.py");
    let o = Command::new(python).arg(script).args(args).output().unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(stderr.is_empty() || !o.status.success(), "{stderr}");
    (o.status.success(), format!("{}{stderr}", String::from_utf8_lossy(&o.stdout)))
}

/// A Sparrow-style cosigner, played by embit (an independent Python implementation of
/// BIP-32, BIP-174 and descriptors): its account key joins a 2-of-3 wallet beside two
/// `strongroom-cold` keys; embit derives the same addresses from the exported descriptor;
/// `strongroom-cold export-psbt` writes a real withdrawal's PSBT as a BIP-174 file (binary
/// and base64), which embit parses, checks against the intent and signs with the hardware
/// key's xprv; `import-psbt` merges that signature into the bundle, a Strongroom holder
/// signs the same bundle, and the finalized transaction passes Bitcoin Core's consensus
/// code. PSBTs embit changed (output amounts, an extra output) are refused with
/// `BtcError::UnsignedTxChanged`. Needs no network namespace (the binary runs directly):
/// what is shown here is the file formats, not the air gap.
#[test]
fn a_sparrow_style_cosigner_signs_the_exported_psbt_with_embit() {
    use bitcoin::bip32::Xpriv;
    use strongroom_chain_bitcoin::psbt::{to_bip174, verify};
    use strongroom_chain_bitcoin::BtcError;
    use strongroom_cold::interop::import_psbt;
    use strongroom_cold::ColdError;

    let Some(python) = support::interop_python() else { return };
    let env = SystemEnv::new();
    let now = env.now();
    let dir = tempfile::tempdir().unwrap();
    let f = |name: &str| dir.path().join(name);
    let gov = governance(now);
    let genesis_file = f("genesis.json");
    std::fs::write(&genesis_file, serde_json::to_vec(&gov.genesis).unwrap()).unwrap();

    // The hardware wallet's key: a BIP-32 root the test hands to embit as a tprv; embit
    // exports its BIP-48 account key with origin, as Sparrow does from a device.
    let hw_root = Xpriv::new_master(bitcoin::NetworkKind::Test, &[0x5a; 32]).unwrap();
    let hw_root = hw_root.to_string();
    let (ok, hw_key) = cosigner(&python, &["account", "--xprv", &hw_root]);
    assert!(ok, "{hw_key}");
    let hw_key = hw_key.trim().to_owned();
    assert!(hw_key.starts_with('[') && hw_key.contains("/48h/1h/0h/2h]tpub"), "{hw_key}");
    let hw_fp = hw_key[1..9].to_owned();

    // Two holders on strongroom-cold, and the wallet of the three keys.
    let mut homes = Vec::new();
    let mut passes = Vec::new();
    let mut keys = Vec::new();
    for n in 0..2 {
        let (home, pass) = (f(&format!("holder-{n}")), f(&format!("pass-{n}")));
        std::fs::write(&pass, format!("holder {n} passphrase, long enough\n")).unwrap();
        let args = [
            "init",
            "--home",
            p(&home),
            "--chain",
            BITCOIN_REGTEST,
            "--genesis",
            p(&genesis_file),
            "--pin",
            &gov.pin,
            "--passphrase-file",
            p(&pass),
        ];
        let o = cold(false, &args, "");
        assert!(o.ok, "{}", o.stderr);
        keys.push(o.stdout.lines().next().unwrap().to_owned());
        homes.push(home);
        passes.push(pass);
    }
    keys.push(hw_key.clone());
    let mut args = vec!["descriptor", "--chain", BITCOIN_REGTEST, "--threshold", "2"];
    for k in &keys {
        args.extend(["--key", k.as_str()]);
    }
    let o = cold(false, &args, "");
    assert!(o.ok, "{}", o.stderr);
    let descriptor = o.stdout.trim().to_owned();
    assert!(
        descriptor.contains("/<0;1>/*") && descriptor.contains(hw_key.split(']').nth(1).unwrap()),
        "{descriptor}"
    );
    for home in &homes {
        let args = [
            "install-wallet",
            "--home",
            p(home),
            "--wallet",
            "cold-btc-1",
            "--descriptor",
            &descriptor,
        ];
        assert!(cold(false, &args, "").ok);
    }
    let multisig = Multisig::from_descriptor(&descriptor, bitcoin::Network::Regtest).unwrap();

    // The descriptor as a holder exports it for a watch-only import: embit checks each
    // checksum (BIP-380) and derives the same receive and change addresses as we do.
    let o =
        cold(false, &["wallet-descriptor", "--home", p(&homes[0]), "--wallet", "cold-btc-1"], "");
    assert!(o.ok && o.stdout.trim() == descriptor, "{} {}", o.stdout, o.stderr);
    let o = cold(
        false,
        &["wallet-descriptor", "--home", p(&homes[0]), "--wallet", "cold-btc-1", "--bitcoin-core"],
        "",
    );
    assert!(o.ok, "{}", o.stderr);
    let core: serde_json::Value = serde_json::from_str(&o.stdout).unwrap();
    let ours = |k: Keychain| -> Vec<String> {
        (0..3).map(|i| multisig.address(k, i).unwrap().to_string()).collect()
    };
    let embit = |d: &str| -> serde_json::Value {
        let (ok, out) = cosigner(&python, &["descriptor", "--descriptor", d]);
        assert!(ok, "{out}");
        serde_json::from_str(&out).unwrap()
    };
    let seen = embit(&descriptor);
    assert_eq!(seen["checksum"], true);
    assert_eq!(
        seen["branches"],
        serde_json::json!([ours(Keychain::Receive), ours(Keychain::Change)])
    );
    for (entry, keychain, internal) in
        [(&core[0], Keychain::Receive, false), (&core[1], Keychain::Change, true)]
    {
        assert_eq!(entry["internal"], internal);
        let seen = embit(entry["desc"].as_str().unwrap());
        assert_eq!(seen["checksum"], true, "{entry}");
        assert_eq!(seen["branches"], serde_json::json!([ours(keychain)]));
    }
    // A descriptor with a wrong checksum is refused by embit too.
    let mut broken = descriptor.clone();
    let last = broken.pop().unwrap();
    broken.push(if last == 'q' { 'p' } else { 'q' });
    assert!(!cosigner(&python, &["descriptor", "--descriptor", &broken]).0);

    // The online side: a watch-only wallet with two deposits, a withdrawal a quorum approved.
    let mut wallet = ColdWallet::new(&multisig).unwrap();
    let a = wallet.next_address();
    wallet.add_transaction(funding(&a, 150_000_000, 1), 1).unwrap();
    let b = wallet.next_address();
    wallet.add_transaction(funding(&b, 30_000_000, 2), 2).unwrap();
    let dest = "bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080";
    let i = intent(dest, 160_000_000, 11, now);
    let state = replay(&gov.genesis, &gov.pin, &gov.log, now).unwrap();
    let moved = |_: &strongroom_governance::policy::VelocityLimit| strongroom_units::Amount::ZERO;
    let approvals = [approve("ann", 3, &i, now), approve("ops", 4, &i, now)];
    let req = Request {
        intent: &i,
        initiator: "eve",
        initiator_role: Role::Operator,
        approvals: &approvals,
        log: &gov.log,
        state: &state,
        moved: &moved,
    };
    let (bundle, decoded) = prepare_bitcoin(&mut wallet, &req, 5, &env).unwrap();
    assert_eq!(decoded.inputs.len(), 2);
    write_bundle(&f("bundle.json"), &bundle);
    let Payload::BitcoinPsbt { psbt } = &bundle.transaction else { panic!("a PSBT bundle") };
    let unsigned = from_base64(psbt).unwrap();

    // Export, after holder 0's full review: the binary BIP-174 file and its base64.
    let export = |out: &Path, extra: &[&str]| {
        let mut args = vec!["export-psbt", "--home", p(&homes[0]), "--in"];
        let (bundle_file, out) = (f("bundle.json"), out.to_owned());
        args.extend([p(&bundle_file), "--out", p(&out)]);
        args.extend(extra);
        let o = cold(false, &args, "");
        assert!(o.ok && o.stdout.contains("Send 1.60000000 BTC"), "{} {}", o.stdout, o.stderr);
    };
    export(&f("withdrawal.psbt"), &[]);
    export(&f("withdrawal.txt"), &["--base64"]);
    let binary = std::fs::read(f("withdrawal.psbt")).unwrap();
    assert!(binary.starts_with(b"psbt\xff"));
    assert_eq!(binary, to_bip174(&unsigned));
    assert_eq!(std::fs::read_to_string(f("withdrawal.txt")).unwrap().trim(), psbt.as_str());
    // Everything a cosigner needs is in it: previous transactions and witness UTXOs, the
    // witness scripts, every key's origin, and the three account xpubs.
    assert_eq!(unsigned.xpub.len(), 3);
    for input in &unsigned.inputs {
        assert!(input.witness_utxo.is_some() && input.non_witness_utxo.is_some());
        assert!(input.witness_script.is_some());
        assert_eq!(input.bip32_derivation.len(), 3);
        assert!(input.bip32_derivation.values().any(|(fp, _)| fp.to_string() == hw_fp));
    }

    // The hardware wallet, played by embit: it reads each form, checks what it pays against
    // the intent (and the change against the descriptor), and signs both inputs.
    let pay = format!("{dest}:160000000");
    let sign = |input: &Path, out: &Path| {
        let args = [
            "sign",
            "--psbt",
            p(input),
            "--descriptor",
            &descriptor,
            "--xprv",
            &hw_root,
            "--pay",
            &pay,
            "--fee-max",
            "50000",
            "--out",
            p(out),
        ];
        let (ok, out) = cosigner(&python, &args);
        assert!(ok, "{out}");
        serde_json::from_str::<serde_json::Value>(&out).unwrap()
    };
    let seen = sign(&f("withdrawal.psbt"), &f("hw-signed.psbt"));
    let again = sign(&f("withdrawal.txt"), &f("hw-signed-2.psbt"));
    assert_eq!((seen["read"].as_str(), again["read"].as_str()), (Some("binary"), Some("base64")));
    assert_eq!(seen["txid"], unsigned.unsigned_tx.compute_txid().to_string());
    assert_eq!(seen["txid"], again["txid"]);
    assert_eq!(seen["signed"], 2);
    assert_eq!(seen["fee"], decoded.fee_sat);
    let (change_addr, change_index, change_sat) = decoded.change[0].clone();
    let mut outputs = seen["outputs"].as_array().unwrap().clone();
    outputs.sort_by_key(|o| o["kind"].as_str().map(str::to_owned));
    assert_eq!(
        serde_json::Value::Array(outputs),
        serde_json::json!([
            {"address": change_addr, "value": change_sat, "kind": "change", "index": change_index},
            {"address": dest, "value": 160_000_000, "kind": "payment"},
        ])
    );

    // Back on holder 0's machine: the bundle is reviewed again and the hardware wallet's
    // signatures merged; then holder 0 signs with its own key, and the two signatures make a
    // transaction that Bitcoin Core's consensus code accepts.
    let import_into = |bundle_file: &Path, psbt: &Path, out: &Path| {
        let args = [
            "import-psbt",
            "--home",
            p(&homes[0]),
            "--in",
            p(bundle_file),
            "--psbt",
            p(psbt),
            "--out",
            p(out),
        ];
        cold(false, &args, "")
    };
    let import = |psbt: &Path, out: &Path| import_into(&f("bundle.json"), psbt, out);
    let o = import(&f("hw-signed.psbt"), &f("cosigned.json"));
    assert!(o.ok, "{}", o.stderr);
    assert!(
        o.stdout.contains(&format!("imported 2 signature(s) from key(s) {hw_fp}")),
        "{}",
        o.stdout
    );
    let cosigned = Bundle::from_json(&std::fs::read(f("cosigned.json")).unwrap()).unwrap();
    assert_eq!(cosigned.signed_by, [hw_fp.as_str()]);
    assert!(finalize_bitcoin(std::slice::from_ref(&cosigned)).is_err(), "one key is not two");
    let o = cold(
        false,
        &[
            "sign",
            "--home",
            p(&homes[0]),
            "--in",
            p(&f("cosigned.json")),
            "--out",
            p(&f("both.json")),
            "--passphrase-file",
            p(&passes[0]),
            "--yes",
        ],
        "",
    );
    assert!(o.ok, "{} {}", o.stdout, o.stderr);
    let both = Bundle::from_json(&std::fs::read(f("both.json")).unwrap()).unwrap();
    assert_eq!(both.signed_by.len(), 2);
    let tx = finalize_bitcoin(std::slice::from_ref(&both)).unwrap();
    let spent: std::collections::BTreeMap<_, _> = unsigned
        .unsigned_tx
        .input
        .iter()
        .zip(&unsigned.inputs)
        .map(|(i, p)| (i.previous_output, p.witness_utxo.clone().unwrap()))
        .collect();
    verify(&tx, &spent).unwrap();
    assert_eq!(tx.compute_txid(), unsigned.unsigned_tx.compute_txid());
    let to = strongroom_chain_bitcoin::address(dest, bitcoin::Network::Regtest).unwrap();
    assert!(tx
        .output
        .iter()
        .any(|o| o.script_pubkey == to.script_pubkey() && o.value.to_sat() == 160_000_000));
    // The same signatures a second time add nothing, and are refused.
    let o = import_into(&f("cosigned.json"), &f("hw-signed-2.psbt"), &f("never.json"));
    assert!(!o.ok && o.stderr.contains("no signature that the bundle lacks"), "{}", o.stderr);
    assert!(!f("never.json").exists());

    // PSBTs embit changed and then signed (so their signatures are genuine, over another
    // transaction) are refused before any signature is looked at, with the typed error.
    let thief = Multisig::new(1, &keys[2..], bitcoin::Network::Regtest)
        .unwrap()
        .address(Keychain::Receive, 9)
        .unwrap()
        .to_string();
    let withdrawal = f("withdrawal.psbt");
    for mode in ["amount", "extra-output"] {
        let bad = f(&format!("tampered-{mode}.psbt"));
        let args = [
            "tamper",
            "--psbt",
            p(&withdrawal),
            "--mode",
            mode,
            "--to",
            &thief,
            "--xprv",
            &hw_root,
            "--out",
            p(&bad),
        ];
        let (ok, out) = cosigner(&python, &args);
        assert!(ok, "{out}");
        let o = import(&bad, &f("never.json"));
        assert!(
            !o.ok && o.stderr.contains("the imported PSBT changes the transaction"),
            "{mode}: {}",
            o.stderr
        );
        assert!(!f("never.json").exists());
        match import_psbt(&bundle, &std::fs::read(&bad).unwrap(), &multisig) {
            Err(ColdError::Bitcoin(BtcError::UnsignedTxChanged { ours, theirs })) => {
                assert_eq!(ours, unsigned.unsigned_tx.compute_txid());
                assert_ne!(theirs, ours);
            }
            other => panic!("{mode}: expected UnsignedTxChanged, got {other:?}"),
        }
        // embit's own checks, as the hardware wallet runs them, refuse the changed file too.
        let (ok, out) = cosigner(
            &python,
            &[
                "sign",
                "--psbt",
                p(&bad),
                "--descriptor",
                &descriptor,
                "--xprv",
                &hw_root,
                "--pay",
                &pay,
                "--fee-max",
                "50000",
                "--out",
                p(&f("never.psbt")),
            ],
        );
        assert!(!ok && out.contains("refused"), "{mode}: {out}");
    }
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

/// Every subcommand and every flag of `strongroom-cold` says what it is (`--help` shows it):
/// the key holders' tool is used rarely, on a machine with nothing else to ask.
#[test]
fn every_subcommand_and_flag_of_strongroom_cold_has_help() {
    fn walk(cmd: &clap::Command, path: &str, seen: &mut Vec<String>, bare: &mut Vec<String>) {
        for a in cmd.get_arguments().filter(|a| !a.is_hide_set()) {
            let name = format!(
                "{path} {}",
                a.get_long().map_or(a.get_id().to_string(), |l| format!("--{l}"))
            );
            if a.get_help().is_none() && a.get_long_help().is_none() {
                bare.push(name.clone());
            }
            seen.push(name);
        }
        for sub in cmd.get_subcommands() {
            let name = format!("{path} {}", sub.get_name());
            if sub.get_about().is_none() && sub.get_long_about().is_none() {
                bare.push(name.clone());
            }
            seen.push(name.clone());
            walk(sub, &name, seen, bare);
        }
    }
    let mut cmd = strongroom_cold::cli::command();
    cmd.build();
    let (mut seen, mut bare) = (Vec::new(), Vec::new());
    walk(&cmd, "strongroom-cold", &mut seen, &mut bare);
    assert!(bare.is_empty(), "without help text: {bare:#?}");
    // The walk did see the tree.
    for expected in [
        "strongroom-cold sign --yes",
        "strongroom-cold init --pin",
        "strongroom-cold completions shell",
    ] {
        assert!(seen.iter().any(|s| s == expected), "{expected} not in {seen:#?}");
    }
}

/// The command line as scripts use it: completion scripts, one JSON document on stdout with
/// `--output json`, a confirmation that cannot be asked for failing at once (exit 2), and a
/// wrong command line exiting 64.
#[test]
fn strongroom_cold_completes_prints_json_and_exits_with_distinct_codes() {
    let o = cold(false, &["completions", "bash"], "");
    assert!(o.ok, "{}", o.stderr);
    for word in ["strongroom-cold", "sign", "export-psbt", "wallet-descriptor", "--passphrase-file"]
    {
        assert!(o.stdout.contains(word), "{word} not in the bash script");
    }

    assert_eq!(cold(false, &["--help"], "").code, Some(0));
    let o = cold(false, &["sing"], "");
    assert_eq!(o.code, Some(64), "a wrong command line: {}", o.stderr);
    assert_eq!(cold(false, &["sign", "--home", "h"], "").code, Some(64), "missing --in, --out");

    // No terminal and no --yes: stopped before anything is read, even with "yes" piped in.
    let o = cold(false, &["sign", "--home", "h", "--in", "b.json", "--out", "o.json"], "yes\n");
    assert_eq!(o.code, Some(2), "{}", o.stderr);
    assert!(
        o.stderr.contains("needs confirmation: pass --yes (stdin is not a terminal)"),
        "{}",
        o.stderr
    );
    assert!(o.stdout.is_empty());

    // A home, its account key and a 1-of-1 descriptor, each as one JSON document.
    let dir = tempfile::tempdir().unwrap();
    let gov = governance(SystemEnv::new().now());
    let genesis = dir.path().join("genesis.json");
    std::fs::write(&genesis, serde_json::to_vec(&gov.genesis).unwrap()).unwrap();
    let pass = dir.path().join("pass");
    std::fs::write(&pass, "a passphrase long enough\n").unwrap();
    let home = dir.path().join("home");
    let json = |args: &[&str]| {
        let o = cold(false, &[args, &["--output", "json"]].concat(), "");
        assert!(o.ok, "{args:?}: {}", o.stderr);
        serde_json::from_str::<serde_json::Value>(&o.stdout)
            .unwrap_or_else(|e| panic!("{args:?}: not one JSON document ({e}): {}", o.stdout))
    };
    let made = json(&[
        "init",
        "--home",
        p(&home),
        "--chain",
        BITCOIN_REGTEST,
        "--genesis",
        p(&genesis),
        "--pin",
        &gov.pin,
        "--passphrase-file",
        p(&pass),
    ]);
    let account_key = made["account_key"].as_str().unwrap().to_owned();
    assert!(account_key.contains("]tpub"), "{made}");
    let shown = json(&["account-key", "--home", p(&home)]);
    assert_eq!(shown["account_key"], account_key.as_str());
    assert_eq!(shown["fingerprint"], made["fingerprint"]);
    let d = json(&[
        "descriptor",
        "--chain",
        BITCOIN_REGTEST,
        "--threshold",
        "1",
        "--key",
        &account_key,
    ]);
    assert!(d["descriptor"].as_str().unwrap().starts_with("wsh(sortedmulti(1,"), "{d}");
}
