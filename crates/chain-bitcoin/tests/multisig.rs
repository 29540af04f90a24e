#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]
//! A 2-of-3 P2WSH cold wallet end to end in one process: keys, descriptor, a funded
//! watch-only wallet, a PSBT for an intent, the decoder's refusals, two signatures, and
//! Bitcoin Core's consensus check on the result. Plus the BIP-32 and BIP-174 vectors.

use std::str::FromStr;

use bitcoin::bip32::{DerivationPath, Xpriv, Xpub};
use bitcoin::secp256k1::Secp256k1;
use bitcoin::{Amount, Network, OutPoint, Psbt, TxOut};
use fixtures::{funding, regtest_intent, DEST};
use strongroom_chain_bitcoin::keys::ColdSecret;
use strongroom_chain_bitcoin::psbt::{combine, decode, finalize, verify};
use strongroom_chain_bitcoin::wallet::ColdWallet;
use strongroom_chain_bitcoin::{BtcError, Keychain, Multisig};
use strongroom_core::env::FixedEnv;
use strongroom_core::{Intent, Timestamp};

#[path = "support/fixtures.rs"]
mod fixtures;

fn intent(to: &str, sat: u128, fee_cap: u128) -> Intent {
    regtest_intent(to, sat, fee_cap, 7, Timestamp::from_unix_ms(1_800_086_400_000))
}

const NET: Network = Network::Regtest;

fn env(seed: u64) -> FixedEnv {
    FixedEnv::new(Timestamp::from_unix_ms(1_800_000_000_000), seed)
}

struct Setup {
    secrets: Vec<ColdSecret>,
    multisig: Multisig,
    wallet: ColdWallet,
}

fn setup() -> Setup {
    let secrets: Vec<ColdSecret> = (1..=3).map(|i| ColdSecret::generate(&env(i))).collect();
    let keys: Vec<String> = secrets.iter().map(|s| s.account_key(NET).unwrap()).collect();
    let multisig = Multisig::new(2, &keys, NET).unwrap();
    let mut wallet = ColdWallet::new(&multisig).unwrap();
    let a = wallet.next_address();
    let b = wallet.next_address();
    wallet.add_transaction(funding(&a, 150_000_000, 1), 1).unwrap();
    wallet.add_transaction(funding(&b, 30_000_000, 2), 2).unwrap();
    Setup { secrets, multisig, wallet }
}

#[test]
fn two_of_three_signatures_make_a_transaction_bitcoin_core_accepts() {
    let mut s = setup();
    assert_eq!(s.wallet.balance_sat(), 180_000_000);
    // A "deposit" that is a coinbase (as a lying server might send) is refused, not a crash.
    let mut coinbase = funding(&s.wallet.next_address(), 5_000_000_000, 3);
    coinbase.input[0].previous_output = OutPoint::null();
    assert!(matches!(s.wallet.add_transaction(coinbase, 3), Err(BtcError::Refused(_))));
    assert_eq!(s.wallet.balance_sat(), 180_000_000);
    let i = intent(DEST, 160_000_000, 20_000);
    let (psbt, decoded) = s.wallet.prepare(&i, 5, &env(9)).unwrap();
    assert_eq!(decoded.amount_sat, 160_000_000);
    assert_eq!(decoded.inputs.len(), 2, "coin selection needs both coins");
    assert_eq!(decoded.change.len(), 1);
    let total_in: u64 = decoded.inputs.iter().map(|(_, v)| v).sum();
    assert_eq!(total_in, 160_000_000 + decoded.change[0].2 + decoded.fee_sat);
    assert!(decoded.fee_sat > 0 && decoded.fee_sat <= 20_000);
    let words = decoded.describe("BTC");
    assert!(words.contains("1.60000000 BTC") && words.contains(DEST), "{words}");

    // One signature is not enough to finalize.
    let mut one = psbt.clone();
    assert_eq!(s.secrets[0].sign(&mut one, NET).unwrap(), 2);
    assert!(matches!(finalize(one.clone()), Err(BtcError::Finalize(_))));

    let mut two = psbt.clone();
    assert_eq!(s.secrets[2].sign(&mut two, NET).unwrap(), 2);
    let tx = finalize(combine(psbt.clone(), vec![one, two]).unwrap()).unwrap();
    assert_eq!(tx.output.iter().map(|o| o.value.to_sat()).sum::<u64>(), total_in - decoded.fee_sat);

    // The consensus check is real: the same signatures on a changed transaction fail it.
    let spent: std::collections::BTreeMap<OutPoint, TxOut> = psbt
        .unsigned_tx
        .input
        .iter()
        .zip(&psbt.inputs)
        .map(|(i, p)| (i.previous_output, p.witness_utxo.clone().unwrap()))
        .collect();
    verify(&tx, &spent).unwrap();
    let mut forged = tx.clone();
    let pay = forged.output.iter_mut().find(|o| o.value.to_sat() == 160_000_000).unwrap();
    pay.value = Amount::from_sat(160_000_001);
    assert!(matches!(verify(&forged, &spent), Err(BtcError::Consensus(_))));
    // A key outside the wallet signs nothing.
    let stranger = ColdSecret::generate(&env(77));
    let mut p = psbt;
    assert!(matches!(stranger.sign(&mut p, NET), Err(BtcError::Sign(_))));
}

#[test]
fn the_decoder_refuses_what_the_intent_does_not_name() {
    let mut s = setup();
    let i = intent(DEST, 50_000_000, 20_000);
    let (psbt, _) = s.wallet.prepare(&i, 5, &env(9)).unwrap();
    let refused = |p: &Psbt, i: &Intent| match decode(p, i, &s.multisig) {
        Err(BtcError::Refused(why)) => why,
        other => panic!("expected a refusal, got {other:?}"),
    };

    // An extra output to an attacker, paid out of the change.
    let mut extra = psbt.clone();
    let other_keys: Vec<String> =
        (4..=6).map(|n| ColdSecret::generate(&env(n)).account_key(NET).unwrap()).collect();
    let other_wallet = Multisig::new(2, &other_keys, NET).unwrap();
    let attacker = other_wallet.address(Keychain::Receive, 0).unwrap();
    let change =
        extra.unsigned_tx.output.iter_mut().find(|o| o.value.to_sat() != 50_000_000).unwrap();
    change.value = Amount::from_sat(change.value.to_sat() - 1_000_000);
    extra.unsigned_tx.output.push(TxOut {
        value: Amount::from_sat(1_000_000),
        script_pubkey: attacker.script_pubkey(),
    });
    extra.outputs.push(Default::default());
    assert!(refused(&extra, &i).contains("which the intent does not name"));

    // Change redirected: the output keeps the PSBT's derivation claims, but the script is
    // the attacker's; the signer derives the script itself.
    let mut redirected = psbt.clone();
    let n =
        redirected.unsigned_tx.output.iter().position(|o| o.value.to_sat() != 50_000_000).unwrap();
    redirected.unsigned_tx.output[n].script_pubkey = attacker.script_pubkey();
    assert!(refused(&redirected, &i).contains("does not name"));

    // Change to the wallet's *receive* keychain is not change.
    let mut receive = psbt.clone();
    let (spk, _) = s.multisig.scripts(Keychain::Receive, 5).unwrap();
    receive.unsigned_tx.output[n].script_pubkey = spk;
    assert!(refused(&receive, &i).contains("does not name"));

    // Another amount, another destination.
    assert!(refused(&psbt, &intent(DEST, 50_000_001, 20_000)).contains("does not name"));
    let other = other_wallet.address(Keychain::Receive, 1).unwrap().to_string();
    let other = other.as_str();
    assert!(refused(&psbt, &intent(other, 50_000_000, 20_000)).contains("does not name"));

    // A fee above the intent's cap.
    assert!(refused(&psbt, &intent(DEST, 50_000_000, 10)).contains("above the intent's cap"));

    // An input without its previous transaction (the segwit v0 fee attack).
    let mut bare = psbt.clone();
    bare.inputs[0].non_witness_utxo = None;
    assert!(refused(&bare, &i).contains("previous transaction"));

    // An input whose witness UTXO lies about the amount.
    let mut lie = psbt.clone();
    let mut u = lie.inputs[0].witness_utxo.clone().unwrap();
    u.value = Amount::from_sat(u.value.to_sat() + 10_000_000);
    lie.inputs[0].witness_utxo = Some(u);
    assert!(refused(&lie, &i).contains("differs"));

    // SIGHASH_NONE would let anyone rewrite the outputs.
    let mut none = psbt.clone();
    none.inputs[0].sighash_type =
        Some(bitcoin::psbt::PsbtSighashType::from(bitcoin::sighash::EcdsaSighashType::None));
    assert!(refused(&none, &i).contains("only ALL"));

    // The same PSBT decoded against another wallet (a signer with another descriptor).
    assert!(
        matches!(decode(&psbt, &i, &other_wallet), Err(BtcError::Refused(w)) if w.contains("not a coin of this wallet"))
    );

    // The untouched PSBT decodes.
    let d = decode(&psbt, &i, &s.multisig).unwrap();
    assert_eq!(d.destination, DEST);
}

#[test]
fn descriptors_round_trip_and_bad_key_sets_are_refused() {
    let s = setup();
    let text = s.multisig.descriptor();
    assert!(
        text.starts_with("wsh(sortedmulti(2,[")
            && text.replace('\'', "h").contains("/48h/1h/0h/2h]tpub")
            && text.contains("/<0;1>/*"),
        "{text}"
    );
    assert!(text.contains('#'), "the descriptor carries its checksum: {text}");
    let back = Multisig::from_descriptor(&text, NET).unwrap();
    assert_eq!(back, s.multisig);
    // A flipped checksum character is refused.
    let mut bad = text.clone();
    let last = bad.pop().unwrap();
    bad.push(if last == 'q' { 'p' } else { 'q' });
    assert!(Multisig::from_descriptor(&bad, NET).is_err());
    let keys = s.multisig.keys().to_vec();
    assert!(Multisig::new(4, &keys, NET).is_err(), "4 of 3");
    assert!(Multisig::new(0, &keys, NET).is_err(), "0 of 3");
    let twice = vec![keys[0].clone(), keys[0].clone(), keys[1].clone()];
    assert!(Multisig::new(2, &twice, NET).is_err(), "a key twice");
    let bare: String = keys[0].split(']').nth(1).unwrap().to_owned();
    assert!(Multisig::new(2, &[bare, keys[1].clone(), keys[2].clone()], NET).is_err(), "no origin");
    assert!(Multisig::new(2, &keys, Network::Bitcoin).is_err(), "test keys on mainnet");
    // Receive and change addresses differ and are native segwit v0 script hashes.
    let r = s.multisig.address(Keychain::Receive, 0).unwrap().to_string();
    let c = s.multisig.address(Keychain::Change, 0).unwrap().to_string();
    assert!(r.starts_with("bcrt1q") && r.len() == 64 && r != c);
}

/// An outside cosigner's PSBT (as Sparrow or a hardware wallet returns it) merged back:
/// the file forms round-trip, only verified signatures by the input's own keys are taken,
/// a finalized input gives up its signatures, and a changed transaction is refused with its
/// own error before anything else.
#[test]
fn an_outside_cosigners_psbt_gives_up_only_verified_signatures_on_the_same_transaction() {
    use bdk_wallet::miniscript::psbt::PsbtExt;
    use strongroom_chain_bitcoin::psbt::{from_file, import, to_base64, to_bip174, MAGIC};

    let mut s = setup();
    let i = intent(DEST, 160_000_000, 20_000);
    let (psbt, _) = s.wallet.prepare(&i, 5, &env(9)).unwrap();
    // Both file forms, and what is neither.
    let binary = to_bip174(&psbt);
    assert!(binary.starts_with(MAGIC));
    assert_eq!(from_file(&binary).unwrap(), psbt);
    assert_eq!(from_file(format!("{}\n", to_base64(&psbt)).as_bytes()).unwrap(), psbt);
    assert!(matches!(from_file(b"not a psbt"), Err(BtcError::Psbt(_))));
    assert!(matches!(from_file(&binary[..binary.len() - 3]), Err(BtcError::Psbt(_))));
    // Everything a cosigner needs travels in it.
    assert_eq!(psbt.xpub.len(), 3, "the three account keys as global xpubs");
    for input in &psbt.inputs {
        assert!(input.non_witness_utxo.is_some() && input.witness_utxo.is_some());
        assert!(input.witness_script.is_some() && input.bip32_derivation.len() == 3);
    }

    // Holder 2 signs elsewhere; its two signatures come back and are merged.
    let fp2 = s.secrets[2].fingerprint(NET).unwrap();
    let mut theirs = psbt.clone();
    s.secrets[2].sign(&mut theirs, NET).unwrap();
    let got = import(&psbt, &theirs, &i, &s.multisig).unwrap();
    assert_eq!((got.added, got.signers.clone()), (2, vec![fp2.clone()]));
    assert_eq!(got.decoded.amount_sat, 160_000_000);
    // What we had is kept: a second import of the same signatures adds nothing.
    assert_eq!(import(&got.psbt, &theirs, &i, &s.multisig).unwrap().added, 0);
    let mut ours = got.psbt.clone();
    s.secrets[0].sign(&mut ours, NET).unwrap();
    let tx = finalize(ours).unwrap();
    assert_eq!(tx.compute_txid(), psbt.unsigned_tx.compute_txid());

    // A changed transaction: refused with the typed error, whatever it carries.
    let mut changed = theirs.clone();
    changed.unsigned_tx.output[0].value =
        Amount::from_sat(changed.unsigned_tx.output[0].value.to_sat() - 1);
    let want = (psbt.unsigned_tx.compute_txid(), changed.unsigned_tx.compute_txid());
    assert!(matches!(
        import(&psbt, &changed, &i, &s.multisig),
        Err(BtcError::UnsignedTxChanged { ours, theirs }) if (ours, theirs) == want
    ));
    let mut locktime = theirs.clone();
    locktime.unsigned_tx.lock_time = bitcoin::absolute::LockTime::from_consensus(1);
    assert!(matches!(
        import(&psbt, &locktime, &i, &s.multisig),
        Err(BtcError::UnsignedTxChanged { .. })
    ));

    let bad = |p: &Psbt| match import(&psbt, p, &i, &s.multisig) {
        Err(BtcError::BadSignature { why, .. }) => why,
        other => panic!("expected a refused signature, got {other:?}"),
    };
    // A signature by the right key over another transaction (another fee) does not verify.
    let mut other = psbt.clone();
    let out = &mut other.unsigned_tx.output[0];
    out.value = Amount::from_sat(out.value.to_sat() - 1);
    s.secrets[2].sign(&mut other, NET).unwrap();
    let mut wrong = theirs.clone();
    let (key, sig) = other.inputs[0].partial_sigs.pop_first().unwrap();
    assert_ne!(wrong.inputs[0].partial_sigs.insert(key, sig), Some(sig));
    assert!(bad(&wrong).contains("does not verify"));
    // A key that is not in the input's script (the stranger signs its own copy).
    let stranger = ColdSecret::generate(&env(77));
    let secp = Secp256k1::new();
    let stranger_key = bitcoin::PrivateKey::new(
        Xpriv::new_master(bitcoin::NetworkKind::Test, stranger.expose_bytes()).unwrap().private_key,
        NET,
    );
    let mut outsider = theirs.clone();
    outsider.inputs[0].partial_sigs.insert(stranger_key.public_key(&secp), sig);
    assert!(bad(&outsider).contains("not in this input's script"));
    // A valid signature that is not SIGHASH_ALL.
    let mut none = theirs.clone();
    let (k0, s0) = none.inputs[0].partial_sigs.pop_first().unwrap();
    none.inputs[0].partial_sigs.insert(
        k0,
        bitcoin::ecdsa::Signature {
            signature: s0.signature,
            sighash_type: bitcoin::sighash::EcdsaSighashType::None,
        },
    );
    assert!(bad(&none).contains("only SIGHASH_ALL"));

    // A cosigner that had two keys' signatures and finalized: the witness's signatures are
    // matched to their keys and taken like partial ones.
    let mut finalized = psbt.clone();
    s.secrets[1].sign(&mut finalized, NET).unwrap();
    s.secrets[2].sign(&mut finalized, NET).unwrap();
    finalized.finalize_mut(&Secp256k1::verification_only()).unwrap();
    assert!(finalized
        .inputs
        .iter()
        .all(|p| p.final_script_witness.is_some() && p.partial_sigs.is_empty()));
    let got = import(&psbt, &finalized, &i, &s.multisig).unwrap();
    assert_eq!(got.added, 4);
    assert_eq!(finalize(got.psbt).unwrap().compute_txid(), psbt.unsigned_tx.compute_txid());
}

#[derive(serde::Deserialize)]
struct Bip32Doc {
    vectors: Vec<Bip32Vector>,
}
#[derive(serde::Deserialize)]
struct Bip32Vector {
    seed: String,
    derivations: Vec<Bip32Step>,
}
#[derive(serde::Deserialize)]
struct Bip32Step {
    path: String,
    xprv: String,
    xpub: String,
}

#[test]
fn bip32_test_vectors() {
    let doc: Bip32Doc = serde_json::from_str(include_str!("vectors/bip32.json")).unwrap();
    let secp = Secp256k1::new();
    let mut n = 0;
    for v in doc.vectors {
        let master =
            Xpriv::new_master(bitcoin::NetworkKind::Main, &hex::decode(&v.seed).unwrap()).unwrap();
        for step in v.derivations {
            let path = DerivationPath::from_str(&step.path).unwrap();
            let sk = master.derive_priv(&secp, &path).unwrap();
            assert_eq!(sk.to_string(), step.xprv, "{}", step.path);
            assert_eq!(Xpub::from_priv(&secp, &sk).to_string(), step.xpub, "{}", step.path);
            n += 1;
        }
    }
    assert_eq!(n, 14);
}

#[derive(serde::Deserialize)]
struct Bip174Doc {
    invalid: Vec<Bip174Vector>,
    valid: Vec<Bip174Vector>,
}
#[derive(serde::Deserialize)]
struct Bip174Vector {
    name: String,
    hex: String,
    #[serde(default)]
    error: String,
}

#[test]
fn bip174_test_vectors() {
    let doc: Bip174Doc = serde_json::from_str(include_str!("vectors/bip174.json")).unwrap();
    assert!(doc.invalid.len() >= 4 && doc.valid.len() >= 6);
    for v in &doc.invalid {
        let err = Psbt::deserialize(&hex::decode(&v.hex).unwrap()).expect_err(&v.name);
        assert!(format!("{err:?}").contains(&v.error), "{}: {err:?}", v.name);
    }
    for v in &doc.valid {
        let bytes = hex::decode(&v.hex).unwrap();
        let psbt = Psbt::deserialize(&bytes).unwrap_or_else(|e| panic!("{}: {e}", v.name));
        assert_eq!(psbt.serialize(), bytes, "{} round-trips", v.name);
        // Through base64, as bundles carry it.
        let b64 = strongroom_chain_bitcoin::psbt::to_base64(&psbt);
        assert_eq!(strongroom_chain_bitcoin::psbt::from_base64(&b64).unwrap(), psbt);
    }
}

/// Found by fuzzing (`fuzz/corpus/psbt`): an input with only its previous transaction and a
/// `vout` past that transaction's outputs made miniscript's finalizer index out of bounds
/// (a panic on the online side, from a bundle coming back). `finalize` refuses it first.
#[test]
fn finalize_refuses_inputs_it_cannot_find_the_spent_output_of() {
    let mut s = setup();
    let (psbt, _) = s.wallet.prepare(&intent(DEST, 160_000_000, 20_000), 5, &env(9)).unwrap();
    let mut no_witness_utxo = psbt.clone();
    no_witness_utxo.inputs[0].witness_utxo = None;
    no_witness_utxo.unsigned_tx.input[0].previous_output.vout = 65_536;
    assert!(matches!(finalize(no_witness_utxo), Err(BtcError::Finalize(_))));
    let mut past_the_outputs = psbt;
    past_the_outputs.unsigned_tx.input[0].previous_output.vout = 65_536;
    assert!(matches!(finalize(past_the_outputs), Err(BtcError::Finalize(_))));
}
