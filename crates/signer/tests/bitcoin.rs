//! Bitcoin hot-wallet spends through three `strongroom-signer` processes, the attacker in the
//! orchestrator's seat: every refusal of the Bitcoin decoder (an attacker's output, change
//! to a foreign script, a lying amount, another previous transaction, none at all, a
//! signature hash other than the default, a foreign input, outputs above inputs, fields a
//! plain transfer does not set), a fee above the intent's cap, another destination, a
//! second transaction for a signed intent on other coins, a sixth version of it and a
//! deposit key paying out are refused by the nodes with a typed reason; the honest spend is
//! signed 2-of-3 input by input and passes Bitcoin Core's consensus check, and a fee bump on
//! the same coins is signed.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)] // Test code.

use strongroom_chain::TxCodec;
use strongroom_chain_bitcoin::bitcoin::psbt::{Psbt, PsbtSighashType};
use strongroom_chain_bitcoin::bitcoin::sighash::EcdsaSighashType;
use strongroom_chain_bitcoin::bitcoin::{
    self, absolute, Amount as Sat, OutPoint, ScriptBuf, Sequence, TxIn, TxOut, Witness,
};
use strongroom_chain_bitcoin::hot::{verify_signed, HotCodec, HotCoin, HotParams};
use strongroom_core::{Env, Intent, IntentAsset, SystemEnv, Timestamp, WalletId};
use strongroom_signer::wire::{KeyInfo, Reason, Refusal, Scheme, SignRequest, TxFormat};
use strongroom_signer::Orchestrator;
use strongroom_units::chain::BITCOIN_REGTEST;
use strongroom_units::{Address, Amount, AssetSymbol, ChainId};

mod common;
use common::*;

#[path = "../../chain-bitcoin/tests/support/fixtures.rs"]
mod fixtures;

fn regtest() -> ChainId {
    ChainId::parse(BITCOIN_REGTEST).unwrap()
}

/// The attacker's own address.
fn attacker() -> ScriptBuf {
    // A P2WSH output of an empty script: nobody's wallet but the attacker's, in this story.
    ScriptBuf::new_p2wsh(&ScriptBuf::new().wscript_hash())
}

fn intent(to: &Address, amount: u128) -> Intent {
    Intent {
        chain: regtest(),
        asset: IntentAsset {
            symbol: AssetSymbol::parse("BTC").unwrap(),
            decimals: 8,
            contract: None,
        },
        destination: to.clone(),
        source_wallet: WalletId::parse("hot-btc-1").unwrap(),
        amount: Amount::from_base_units(amount).unwrap(),
        fee_cap: Amount::from_base_units(10_000).unwrap(),
        expires_at: Timestamp::from_unix_ms(SystemEnv::new().now().unix_ms() + 3_600_000),
        request_id: fresh_id(),
    }
}

fn request(i: &Intent, tx: &[u8], input: u32, path: Vec<u32>) -> SignRequest {
    SignRequest {
        intent: hex::encode(i.encode().unwrap()),
        format: TxFormat::BitcoinPsbt,
        tx: hex::encode(tx),
        input,
        path,
        ..Default::default()
    }
}

fn tampered(unsigned: &[u8], f: impl FnOnce(&mut Psbt)) -> Vec<u8> {
    let mut psbt = Psbt::deserialize(unsigned).unwrap();
    f(&mut psbt);
    psbt.serialize()
}

fn refused_as(r: &Refusal, want: &str) -> bool {
    matches!(&r.reason, Reason::TxRefused { refusal } if refusal.code() == want)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_nodes_refuse_every_bitcoin_decoder_refusal_and_sign_the_honest_spend() {
    let tmp = tempfile::tempdir().unwrap();
    let (cl, _, _) = prepare(tmp.path(), None);
    let log = |i: u16| tmp.path().join(format!("signer-{i}.log"));
    let _procs: Vec<Proc> = cl.configs.iter().zip(1u16..).map(|(c, i)| start(c, &log(i))).collect();
    let orch = Orchestrator::new(cl.nodes.clone(), cl.orchestrator_credentials().unwrap());
    wait_live(&orch, 3).await;
    orch.aux_info(eid("aux"), &[1, 2, 3]).await.unwrap();
    let key: KeyInfo =
        orch.keygen(eid("kg"), "hot-btc-1", Scheme::Ecdsa, &[1, 2, 3], 2).await.unwrap();
    let public = hex::decode(&key.public_key).unwrap();
    let codec = HotCodec::p2wpkh(regtest(), &public).unwrap();
    let own = codec.own_address().unwrap();

    let a = fixtures::funding_to(codec.script(), &[50_000, 120_000], 1);
    let coins = vec![HotCoin { tx: a.clone(), vout: 0 }, HotCoin { tx: a, vout: 1 }];
    let params = HotParams { coins: coins.clone(), fee_rate: 3 };
    let outside = Address::parse(&regtest(), fixtures::DEST).unwrap();
    let pay = intent(&outside, 150_000);
    let unsigned = codec.build(&pay, &params).unwrap();
    assert_eq!(codec.digests(&unsigned).unwrap().len(), 2, "two coins, two signatures");

    // One presignature serves every refused attempt: a node refuses before it uses one.
    let p = orch.presign(eid("ps"), "hot-btc-1", &[1, 2]).await.unwrap();
    let sign = |req: SignRequest| {
        let (orch, key, p) = (&orch, &key, p.clone());
        async move { orch.sign(eid("sign"), key, &[1, 2], Some(&p), &req).await }
    };

    let mut attacks: Vec<(&str, Vec<u8>)> = vec![
        (
            "unnamed_output",
            tampered(&unsigned, |t| {
                let change = t.unsigned_tx.output[1].value.to_sat();
                t.unsigned_tx.output[1].value = Sat::from_sat(change - 5_000);
                t.unsigned_tx
                    .output
                    .push(TxOut { value: Sat::from_sat(5_000), script_pubkey: attacker() });
                t.outputs.push(Default::default());
            }),
        ),
        (
            "unnamed_output",
            tampered(&unsigned, |t| t.unsigned_tx.output[1].script_pubkey = attacker()),
        ),
        (
            "previous_mismatch",
            tampered(&unsigned, |t| {
                let u = t.inputs[0].witness_utxo.as_mut().unwrap();
                u.value = Sat::from_sat(u.value.to_sat() - 20_000);
            }),
        ),
        (
            "previous_mismatch",
            tampered(&unsigned, |t| {
                t.inputs[1].non_witness_utxo =
                    Some(fixtures::funding_to(codec.script(), &[1, 1], 7))
            }),
        ),
        ("missing_previous", tampered(&unsigned, |t| t.inputs[1].non_witness_utxo = None)),
        (
            "outputs_exceed_inputs",
            tampered(&unsigned, |t| t.unsigned_tx.output[1].value = Sat::from_sat(1_000_000)),
        ),
        (
            "unexpected_field",
            tampered(&unsigned, |t| {
                t.unsigned_tx.lock_time = absolute::LockTime::from_height(900_000).unwrap()
            }),
        ),
    ];
    for t in
        [EcdsaSighashType::None, EcdsaSighashType::Single, EcdsaSighashType::AllPlusAnyoneCanPay]
    {
        attacks.push((
            "sighash",
            tampered(&unsigned, |p| p.inputs[0].sighash_type = Some(PsbtSighashType::from(t))),
        ));
    }
    let theirs = fixtures::funding_to(&attacker(), &[30_000], 4);
    attacks.push((
        "foreign_input",
        tampered(&unsigned, |t| {
            t.unsigned_tx.input.push(TxIn {
                previous_output: OutPoint { txid: theirs.compute_txid(), vout: 0 },
                script_sig: ScriptBuf::new(),
                sequence: Sequence::ENABLE_RBF_NO_LOCKTIME,
                witness: Witness::new(),
            });
            t.inputs.push(bitcoin::psbt::Input {
                non_witness_utxo: Some(theirs.clone()),
                ..Default::default()
            });
        }),
    ));
    for (want, tx) in &attacks {
        for input in [0, 1] {
            let r = sign(request(&pay, tx, input, vec![])).await.unwrap_err();
            assert!(refused_as(&r, want), "{want}, input {input}: {r:?}");
            assert!(r.node == 1 || r.node == 2, "a node refused, not the orchestrator: {r:?}");
        }
    }
    // The fee above the intent's cap, and another destination, through the comparison every
    // chain shares.
    let greedy = tampered(&unsigned, |t| {
        let change = t.unsigned_tx.output[1].value.to_sat();
        t.unsigned_tx.output[1].value = Sat::from_sat(change - 15_000);
    });
    let r = sign(request(&pay, &greedy, 0, vec![])).await.unwrap_err();
    assert!(matches!(r.reason, Reason::FeeAboveIntentCap { .. }), "{r:?}");
    let redirected = tampered(&unsigned, |t| t.unsigned_tx.output[0].script_pubkey = attacker());
    let r = sign(request(&pay, &redirected, 0, vec![])).await.unwrap_err();
    assert!(
        matches!(&r.reason, Reason::TxMismatch { field, .. } if field == "destination"),
        "{r:?}"
    );
    // No such input; and not a PSBT at all.
    let r = sign(request(&pay, &unsigned, 2, vec![])).await.unwrap_err();
    assert!(matches!(r.reason, Reason::BadRequest { .. }), "{r:?}");
    let r = sign(request(&pay, b"psbt\xff\x00", 0, vec![])).await.unwrap_err();
    assert!(matches!(r.reason, Reason::Undecodable { .. }), "{r:?}");

    // The honest spend: each input signed by nodes 1 and 2 over the digest the codec
    // computes here, the signatures attached, Bitcoin Core's script check passes.
    let digests = codec.digests(&unsigned).unwrap();
    let mut signatures = Vec::new();
    for (n, digest) in digests.iter().enumerate() {
        let p = orch.presign(eid("ps"), "hot-btc-1", &[1, 2]).await.unwrap();
        let req = request(&pay, &unsigned, u32::try_from(n).unwrap(), vec![]);
        let s = orch.sign(eid("sign"), &key, &[1, 2], Some(&p), &req).await.unwrap();
        assert_eq!(&s.signed_bytes, digest, "input {n}: the nodes sign its BIP-143 digest");
        assert_eq!(s.public_key, public);
        signatures.push(s.signature);
    }
    let signed = codec.attach(&unsigned, &public, &signatures).unwrap();
    verify_signed(&signed.raw, &coins).unwrap();

    // A fee bump: another transaction for the intent on exactly the same coins (so at most
    // one of them can ever confirm) is signed, by node 2, which signed the first, and node 3,
    // which had not.
    let p = orch.presign(eid("ps"), "hot-btc-1", &[2, 3]).await.unwrap();
    let bump =
        |fee_rate: u64| codec.build(&pay, &HotParams { coins: coins.clone(), fee_rate }).unwrap();
    let other = bump(4);
    assert_ne!(other, unsigned);
    let s = orch
        .sign(eid("sign"), &key, &[2, 3], Some(&p), &request(&pay, &other, 0, vec![]))
        .await
        .unwrap();
    assert_eq!(s.signed_bytes, codec.digests(&other).unwrap()[0], "the replacement's digest");
    // One that spends another set of coins could confirm beside the first and pay the
    // intent twice: refused by every node that signed for the intent.
    let extra = fixtures::funding_to(codec.script(), &[40_000], 6);
    // (120,000 and 40,000 sat: both needed, and not the first's pair.)
    let more_coins = vec![coins[1].clone(), HotCoin { tx: extra, vout: 0 }];
    let elsewhere = codec.build(&pay, &HotParams { coins: more_coins, fee_rate: 4 }).unwrap();
    let p12 = orch.presign(eid("ps"), "hot-btc-1", &[1, 2]).await.unwrap();
    let r = orch
        .sign(eid("sign"), &key, &[1, 2], Some(&p12), &request(&pay, &elsewhere, 0, vec![]))
        .await
        .unwrap_err();
    assert!(matches!(r.reason, Reason::AlreadySigned { .. }), "{r:?}");
    // Asking nodes 1 and 2 again for the first transaction is allowed (a crash retry).
    let again = orch
        .sign(eid("sign"), &key, &[1, 2], Some(&p12), &request(&pay, &unsigned, 1, vec![]))
        .await
        .unwrap();
    assert_eq!(again.signed_bytes, digests[1]);
    // Bumps are bounded: node 2 has signed two versions; three more, and the sixth is
    // refused with a typed reason.
    for fee_rate in [5, 6, 7] {
        let p = orch.presign(eid("ps"), "hot-btc-1", &[1, 2]).await.unwrap();
        orch.sign(eid("sign"), &key, &[1, 2], Some(&p), &request(&pay, &bump(fee_rate), 0, vec![]))
            .await
            .unwrap();
    }
    let p = orch.presign(eid("ps"), "hot-btc-1", &[1, 2]).await.unwrap();
    let r = orch
        .sign(eid("sign"), &key, &[1, 2], Some(&p), &request(&pay, &bump(8), 0, vec![]))
        .await
        .unwrap_err();
    assert!(
        matches!(r.reason, Reason::Replacements { signed: 5, max: 5, .. }) && r.node == 2,
        "{r:?}"
    );

    // A deposit address (the key's child at [0, 7]) spends only into its own wallet.
    let p = orch.presign(eid("ps"), "hot-btc-1", &[2, 3]).await.unwrap();
    let master = strongroom_signer::check::master_public(&key).unwrap();
    let child_pk = master.derive(&[0, 7]).unwrap();
    let child = HotCodec::p2wpkh(regtest(), &child_pk).unwrap();
    let deposit = vec![HotCoin { tx: fixtures::funding_to(child.script(), &[80_000], 5), vout: 0 }];
    let deposit_params = HotParams { coins: deposit.clone(), fee_rate: 3 };
    let out = intent(&outside, 60_000);
    let r = orch
        .sign(
            eid("sign"),
            &key,
            &[2, 3],
            Some(&p),
            &request(&out, &child.build(&out, &deposit_params).unwrap(), 0, vec![0, 7]),
        )
        .await
        .unwrap_err();
    assert!(matches!(r.reason, Reason::ChildKeyPaysOut { .. }), "{r:?}");
    // The parent's coins are not the child's: a child request over the parent's PSBT.
    let r = orch
        .sign(eid("sign"), &key, &[2, 3], Some(&p), &request(&pay, &unsigned, 0, vec![0, 7]))
        .await
        .unwrap_err();
    assert!(refused_as(&r, "foreign_input"), "{r:?}");
    let sweep = intent(&own, 60_000);
    let p = orch.presign(eid("ps"), "hot-btc-1", &[1, 3]).await.unwrap();
    let unsigned_sweep = child.build(&sweep, &deposit_params).unwrap();
    let s = orch
        .sign(
            eid("sign"),
            &key,
            &[1, 3],
            Some(&p),
            &request(&sweep, &unsigned_sweep, 0, vec![0, 7]),
        )
        .await
        .unwrap();
    assert_eq!(s.public_key, child_pk.to_vec());
    let signed = child.attach(&unsigned_sweep, &child_pk, &[s.signature]).unwrap();
    verify_signed(&signed.raw, &deposit).unwrap();
}
