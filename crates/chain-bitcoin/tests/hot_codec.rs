//! The hot wallet's P2WPKH codec: the chain adapter suite every codec passes, each refusal
//! of the decoder (the same that the signer nodes run), and a signed transaction checked by
//! Bitcoin Core's consensus code (libbitcoinconsensus).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)] // Test code.

use bitcoin::psbt::{Psbt, PsbtSighashType};
use bitcoin::sighash::EcdsaSighashType;
use bitcoin::{
    absolute, Amount as Sat, Network, OutPoint, ScriptBuf, Sequence, Transaction, TxIn, TxOut,
    Witness,
};
use strongroom_chain::conformance::{codec_suite, CodecFixture};
use strongroom_chain::{check_movement, ChainError, TxCodec};
use strongroom_chain_bitcoin::hot::{self, verify_signed, HotCodec, HotCoin, HotParams};
use strongroom_core::{Intent, IntentAsset, Timestamp, TxRefusal, WalletId};
use strongroom_units::chain::{BITCOIN_REGTEST, BITCOIN_TESTNET};
use strongroom_units::{Address, Amount, AssetSymbol, ChainId};

#[path = "support/fixtures.rs"]
mod fixtures;

fn regtest() -> ChainId {
    ChainId::parse(BITCOIN_REGTEST).unwrap()
}

use fixtures::public;

fn sign_with(b: u8) -> impl Fn(&[u8; 32]) -> Vec<u8> {
    move |d| fixtures::sign(b, d)
}

/// An address of someone else's key (by seed byte).
fn address(b: u8) -> Address {
    let a = hot::p2wpkh_address(&public(b), Network::Regtest).unwrap();
    Address::parse(&regtest(), &a.to_string()).unwrap()
}

fn intent(amount: u128, fee_cap: u128) -> Intent {
    Intent {
        chain: regtest(),
        asset: IntentAsset {
            symbol: AssetSymbol::parse("BTC").unwrap(),
            decimals: 8,
            contract: None,
        },
        destination: address(9),
        source_wallet: WalletId::parse("hot-btc-1").unwrap(),
        amount: Amount::from_base_units(amount).unwrap(),
        fee_cap: Amount::from_base_units(fee_cap).unwrap(),
        expires_at: Timestamp::from_unix_ms(i64::MAX / 2),
        request_id: uuid::Uuid::from_u128(amount),
    }
}

fn codec() -> HotCodec {
    HotCodec::p2wpkh(regtest(), &public(1)).unwrap()
}

fn coins(c: &HotCodec) -> Vec<HotCoin> {
    let a = fixtures::funding_to(c.script(), &[50_000, 120_000], 1);
    let b = fixtures::funding_to(c.script(), &[7_000], 2);
    vec![HotCoin { tx: a.clone(), vout: 0 }, HotCoin { tx: a, vout: 1 }, HotCoin { tx: b, vout: 0 }]
}

fn params(c: &HotCodec) -> HotParams {
    HotParams { coins: coins(c), fee_rate: 2 }
}

#[test]
fn the_hot_codec_passes_the_adapter_suite() {
    let c = codec();
    let sign = sign_with(1);
    let sign_other = sign_with(2);
    let fixture = CodecFixture {
        // One coin, two coins with change, and everything but dust.
        intents: vec![intent(100_000, 10_000), intent(150_000, 10_000), intent(176_000, 10_000)],
        params: params(&c),
        over_cap: HotParams { coins: coins(&c), fee_rate: 100 },
        other_address: address(8),
        other_contract: address(7),
        other_chain: ChainId::parse(BITCOIN_TESTNET).unwrap(),
        public_key: public(1),
        sign: &sign,
        sign_other: &sign_other,
    };
    codec_suite(&c, &fixture).unwrap();
}

#[test]
fn build_picks_coins_pays_change_home_and_keeps_to_the_fee_rate() {
    let c = codec();
    let i = intent(100_000, 10_000);
    let tx = c.parse(&c.build(&i, &params(&c)).unwrap()).unwrap();
    check_movement(&tx.movement, &i).unwrap();
    assert_eq!(tx.spent, vec![120_000], "the largest coin alone pays it");
    let psbt = Psbt::deserialize(&c.build(&i, &params(&c)).unwrap()).unwrap();
    assert_eq!(psbt.unsigned_tx.output.len(), 2);
    assert_eq!(&psbt.unsigned_tx.output[1].script_pubkey, c.script(), "change comes home");
    let fee = tx.movement.max_fee.base_units();
    // 2 sat/vB over the largest-signature size of one input and two P2WPKH outputs.
    assert_eq!(fee, 2 * 141, "fee {fee}");
    // Too little in the wallet: a clear refusal, not a short payment.
    assert!(matches!(c.build(&intent(200_000, 10_000), &params(&c)), Err(ChainError::Build(_))));
    // A coin of another key among the coins given is refused, not spent.
    let mut foreign = params(&c);
    foreign.coins.push(HotCoin {
        tx: fixtures::funding_to(&ScriptBuf::new_op_return([1u8; 4]), &[1_000], 3),
        vout: 0,
    });
    assert!(matches!(c.build(&i, &foreign), Err(ChainError::Build(_))));
}

/// The honest PSBT for `i`, changed by `f`.
fn tampered(i: &Intent, f: impl FnOnce(&mut Psbt)) -> Vec<u8> {
    let c = codec();
    let mut psbt = Psbt::deserialize(&c.build(i, &params(&c)).unwrap()).unwrap();
    f(&mut psbt);
    psbt.serialize()
}

fn refusal(bytes: &[u8]) -> TxRefusal {
    match codec().decode(bytes) {
        Err(ChainError::Refused(r)) => r,
        other => panic!("expected a typed refusal, got {other:?}"),
    }
}

fn attacker() -> ScriptBuf {
    bitcoin::Address::from_str_unchecked(address(6).as_str()).script_pubkey()
}

trait Unchecked {
    fn from_str_unchecked(s: &str) -> bitcoin::Address;
}
impl Unchecked for bitcoin::Address {
    fn from_str_unchecked(s: &str) -> bitcoin::Address {
        use std::str::FromStr;
        bitcoin::Address::from_str(s).unwrap().assume_checked()
    }
}

#[test]
fn every_refusal_of_the_decoder() {
    let i = intent(100_000, 10_000);
    let c = codec();
    assert!(c.decode(&c.build(&i, &params(&c)).unwrap()).is_ok());

    // An attacker's output taken out of the change.
    let extra = tampered(&i, |p| {
        p.unsigned_tx.output[1].value =
            Sat::from_sat(p.unsigned_tx.output[1].value.to_sat() - 5_000);
        p.unsigned_tx.output.push(TxOut { value: Sat::from_sat(5_000), script_pubkey: attacker() });
        p.outputs.push(Default::default());
    });
    assert!(
        matches!(refusal(&extra), TxRefusal::UnnamedOutput { output: 2, amount, .. } if amount.base_units() == 5_000)
    );
    // The change sent to a script that is not the key's own.
    let change = tampered(&i, |p| p.unsigned_tx.output[1].script_pubkey = attacker());
    assert!(matches!(refusal(&change), TxRefusal::UnnamedOutput { output: 1, .. }));
    // An output with no address (data carrier) is not a payment either.
    let data = tampered(&i, |p| {
        p.unsigned_tx.output[1].script_pubkey = ScriptBuf::new_op_return([0u8; 8])
    });
    assert!(matches!(refusal(&data), TxRefusal::UnnamedOutput { output: 1, .. }));
    // A lying amount: the witness UTXO says less than the coin holds (the difference would
    // be a hidden fee).
    let lie = tampered(&i, |p| {
        let u = p.inputs[0].witness_utxo.as_mut().unwrap();
        u.value = Sat::from_sat(u.value.to_sat() - 20_000);
    });
    assert!(matches!(refusal(&lie), TxRefusal::PreviousMismatch { input: 0, .. }));
    // Another previous transaction than the one spent.
    let swapped = tampered(&i, |p| {
        p.inputs[0].non_witness_utxo = Some(fixtures::funding_to(c.script(), &[1, 120_000], 9))
    });
    assert!(matches!(refusal(&swapped), TxRefusal::PreviousMismatch { input: 0, .. }));
    // No previous transaction at all.
    let missing = tampered(&i, |p| p.inputs[0].non_witness_utxo = None);
    assert_eq!(refusal(&missing), TxRefusal::MissingPrevious { input: 0 });
    // A signature hash type that would let others change the outputs.
    for t in
        [EcdsaSighashType::None, EcdsaSighashType::Single, EcdsaSighashType::AllPlusAnyoneCanPay]
    {
        let loose = tampered(&i, |p| p.inputs[0].sighash_type = Some(PsbtSighashType::from(t)));
        assert_eq!(refusal(&loose), TxRefusal::Sighash { input: 0, sighash: t.to_u32() });
    }
    // SIGHASH_ALL stated is what is signed anyway.
    let all = tampered(&i, |p| {
        p.inputs[0].sighash_type = Some(PsbtSighashType::from(EcdsaSighashType::All))
    });
    assert!(c.decode(&all).is_ok());
    // Another key's coin among the inputs (the PSBT saying so does not make it ours).
    let theirs = fixtures::funding_to(&attacker(), &[30_000], 4);
    let foreign = tampered(&i, |p| {
        p.unsigned_tx.input.push(TxIn {
            previous_output: OutPoint { txid: theirs.compute_txid(), vout: 0 },
            script_sig: ScriptBuf::new(),
            sequence: Sequence::ENABLE_RBF_NO_LOCKTIME,
            witness: Witness::new(),
        });
        p.inputs.push(bitcoin::psbt::Input {
            non_witness_utxo: Some(theirs.clone()),
            ..Default::default()
        });
    });
    assert!(matches!(refusal(&foreign), TxRefusal::ForeignInput { input: 1, .. }));
    // Outputs worth more than the inputs.
    let over = tampered(&i, |p| p.unsigned_tx.output[1].value = Sat::from_sat(1_000_000));
    assert!(matches!(refusal(&over), TxRefusal::OutputsExceedInputs { .. }));
    // Fields a plain transfer does not set.
    let locked = tampered(&i, |p| {
        p.unsigned_tx.lock_time = absolute::LockTime::from_height(900_000).unwrap()
    });
    assert!(matches!(refusal(&locked), TxRefusal::UnexpectedField { .. }));
    let relative = tampered(&i, |p| p.unsigned_tx.input[0].sequence = Sequence::from_height(10));
    assert!(matches!(refusal(&relative), TxRefusal::UnexpectedField { .. }));
    let scripted = tampered(&i, |p| p.inputs[0].witness_script = Some(attacker()));
    assert!(matches!(refusal(&scripted), TxRefusal::UnexpectedField { .. }));
    // The fee above the intent's cap, and a payment other than the intent's, are caught
    // by the one comparison every chain shares.
    let greedy = tampered(&i, |p| {
        p.unsigned_tx.output[1].value =
            Sat::from_sat(p.unsigned_tx.output[1].value.to_sat() - 15_000)
    });
    assert!(matches!(
        check_movement(&c.decode(&greedy).unwrap(), &i),
        Err(ChainError::FeeAboveCap { .. })
    ));
    let redirected = tampered(&i, |p| p.unsigned_tx.output[0].script_pubkey = attacker());
    assert!(matches!(
        check_movement(&c.decode(&redirected).unwrap(), &i),
        Err(ChainError::Mismatch { field: "destination", .. })
    ));
    // Not a PSBT, or one with a byte more.
    assert!(matches!(c.decode(b"psbt\xff\x00"), Err(ChainError::Decode(_))));
}

#[test]
fn a_signed_spend_passes_bitcoin_cores_consensus_check() {
    let c = codec();
    let i = intent(150_000, 10_000);
    let p = params(&c);
    let unsigned = c.build(&i, &p).unwrap();
    let digests = c.digests(&unsigned).unwrap();
    assert_eq!(digests.len(), 2, "two coins");
    let sigs: Vec<Vec<u8>> = digests.iter().map(sign_with(1)).collect();
    let signed = c.attach(&unsigned, &public(1), &sigs).unwrap();
    verify_signed(&signed.raw, &p.coins).unwrap();
    assert_eq!(
        signed.txid,
        c.parse(&unsigned).unwrap().txid.to_string(),
        "segwit: the id does not change"
    );
    // The signatures swapped between the inputs: refused before anything is sent.
    let swapped = vec![sigs[1].clone(), sigs[0].clone()];
    assert!(matches!(c.attach(&unsigned, &public(1), &swapped), Err(ChainError::Signature(_))));
    // Bitcoin Core refuses the spend against amounts other than the coins' (what signing
    // over a lying amount gives): the signature commits to the amount spent.
    let tx: Transaction = bitcoin::consensus::deserialize(&signed.raw).unwrap();
    let mut spent: std::collections::BTreeMap<OutPoint, TxOut> =
        p.coins.iter().map(|c| (c.outpoint(), c.tx.output[c.vout as usize].clone())).collect();
    strongroom_chain_bitcoin::psbt::verify(&tx, &spent).unwrap();
    let first = tx.input[0].previous_output;
    spent.get_mut(&first).unwrap().value = Sat::from_sat(119_000);
    assert!(strongroom_chain_bitcoin::psbt::verify(&tx, &spent).is_err());
    // A deposit child key's wallet is another script: its codec does not take the parent's coins.
    let child = HotCodec::p2wpkh(regtest(), &public(2)).unwrap();
    assert!(matches!(
        child.decode(&unsigned),
        Err(ChainError::Refused(TxRefusal::ForeignInput { input: 0, .. }))
    ));
}
