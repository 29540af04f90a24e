//! The valid inputs each corpus starts from, made with the project's own encoders over the
//! [`crate::fixtures`] (plus the published vectors the crates already carry), so the fuzzer
//! begins inside every format instead of guessing its way in. Deterministic: fixed keys,
//! deterministic signatures (RFC 6979, Ed25519) and a seeded environment, so regenerating
//! writes the same files (`tests/corpus.rs`, `write_seeds`, names them by SHA-1 like
//! libFuzzer does).

use ed25519_dalek::Signer;
use serde_json::json;
use strongroom_chain::TxCodec;
use strongroom_chain_bitcoin::bitcoin::{self, Network, Psbt, Witness};
use strongroom_chain_bitcoin::psbt::{combine, to_base64};
use strongroom_chain_ethereum::safe::{safe_tx_hash, sign_hash, transfer_tx};
use strongroom_chain_ethereum::EthParams;
use strongroom_cold::bundle::{Bundle, OwnerSignature, Payload, SafePayload, FORMAT};
use strongroom_core::{Intent, Timestamp};
use strongroom_governance::approval::Approval;
use strongroom_governance::log::{AssetSpec, Change, Entry, FreezeScope, Signoff, WhitelistScope};
use strongroom_governance::policy::Policy;
use strongroom_governance::refusal::{Reason, Refusal};
use strongroom_governance::Role;
use strongroom_mpc::{Envelope, ExecutionId};
use strongroom_signer::wire::{Control, Frame, Head, Proto, Reply, Request, SignRequest, TxFormat};
use strongroom_units::Amount as Units;
use uuid::Uuid;

use crate::fixtures::{
    append, assert_passkey, cold_secrets, fixtures, hot_key, member_key, member_spec, owner_keys,
    passkey_spec, Fixtures, BTC_DEST, DAY_MS, ETH_DEST, GENESIS_MS, MINUTE_MS, NOW_MS,
    PASSKEY_CHALLENGE, POLICY_TOML,
};
use crate::{Verdict, API_BODIES};

/// One seed: which target it feeds, the bytes, and how far the target must take them.
#[derive(Debug, Clone)]
pub struct Seed {
    pub target: &'static str,
    pub what: String,
    pub bytes: Vec<u8>,
    pub expect: Verdict,
}

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

struct Seeds(Vec<Seed>);

impl Seeds {
    fn add(
        &mut self,
        target: &'static str,
        what: impl Into<String>,
        bytes: Vec<u8>,
        expect: Verdict,
    ) {
        self.0.push(Seed { target, what: what.into(), bytes, expect });
    }
}

/// Every seed of every target.
pub fn all() -> Result<Vec<Seed>, String> {
    let fx = fixtures();
    let mut s = Seeds(Vec::new());
    intents(fx, &mut s)?;
    let eth = ethereum(fx, &mut s)?;
    let psbts = bitcoin(fx, &mut s)?;
    bundles(fx, &psbts, &mut s)?;
    signer(fx, &eth, &mut s)?;
    governance(fx, &mut s)?;
    api(fx, &mut s)?;
    Ok(s.0)
}

fn intents(fx: &Fixtures, s: &mut Seeds) -> Result<(), String> {
    for (name, i) in [
        ("ETH", &fx.eth_intent),
        ("USDT", &fx.token_intent),
        ("BTC", &fx.btc_intent),
        ("Safe ETH", &fx.safe_intent),
    ] {
        s.add(
            "intent",
            format!("{name} intent, encoded"),
            i.encode().map_err(err)?,
            Verdict::Accepted,
        );
        s.add(
            "intent",
            format!("{name} intent, JSON"),
            serde_json::to_vec(i).map_err(err)?,
            Verdict::Accepted,
        );
    }
    // The published version-1 vectors (crates/core/tests/vectors/intent-v1.json).
    let doc: serde_json::Value =
        serde_json::from_str(include_str!("../../core/tests/vectors/intent-v1.json"))
            .map_err(err)?;
    for (list, expect) in [("valid", Verdict::Accepted), ("invalid", Verdict::Malformed)] {
        for v in doc.get(list).and_then(|l| l.as_array()).ok_or("intent vectors: no list")? {
            let hex_text = v.get("encoding_hex").and_then(|h| h.as_str()).ok_or("no encoding")?;
            let what = v.get("description").and_then(|d| d.as_str()).unwrap_or(list);
            s.add("intent", format!("vector: {what}"), hex::decode(hex_text).map_err(err)?, expect);
        }
    }
    Ok(())
}

/// The unsigned and signed Ethereum transactions, for the signer seeds too.
struct Eth {
    native: Vec<u8>,
    token: Vec<u8>,
}

fn ethereum(fx: &Fixtures, s: &mut Seeds) -> Result<Eth, String> {
    let native_params = EthParams {
        nonce: 0,
        gas_limit: 21_000,
        max_fee_per_gas: 100_000_000_000,
        max_priority_fee_per_gas: 1_000_000_000,
    };
    let token_params = EthParams { nonce: 7, gas_limit: 100_000, ..native_params };
    let native = fx.eth.build(&fx.eth_intent, &native_params).map_err(err)?;
    let token = fx.eth.build(&fx.token_intent, &token_params).map_err(err)?;
    let key = hot_key()?;
    let public = key.verifying_key().to_encoded_point(true).as_bytes().to_vec();
    for (name, unsigned) in [("ETH", &native), ("USDT transfer", &token)] {
        s.add("eth_tx", format!("unsigned {name}"), unsigned.clone(), Verdict::Accepted);
        let [digest] = fx.eth.digests(unsigned).map_err(err)?[..] else {
            return Err("one digest expected".into());
        };
        let (sig, _) = key.sign_prehash_recoverable(&digest).map_err(err)?;
        let sig = sig.normalize_s().unwrap_or(sig);
        let signed = fx.eth.attach(unsigned, &public, &[sig.to_bytes().to_vec()]).map_err(err)?;
        s.add("eth_tx", format!("signed {name}"), signed.raw, Verdict::Accepted);
    }
    Ok(Eth { native, token })
}

/// The PSBTs the bundles carry: unsigned, and signed by the first key holder.
struct Psbts {
    unsigned: Psbt,
    one: Psbt,
}

fn bitcoin(fx: &Fixtures, s: &mut Seeds) -> Result<Psbts, String> {
    let unsigned = fx.psbt.clone();
    let secrets = cold_secrets()?;
    let mut one = unsigned.clone();
    let mut two = unsigned.clone();
    if let (Some(first), Some(third)) = (secrets.first(), secrets.get(2)) {
        first.sign(&mut one, Network::Regtest).map_err(err)?;
        third.sign(&mut two, Network::Regtest).map_err(err)?;
    }
    let both = combine(one.clone(), vec![two]).map_err(err)?;
    for (name, p) in [("unsigned", &unsigned), ("one signature", &one), ("two signatures", &both)] {
        s.add("psbt", format!("{name}, binary"), p.serialize(), Verdict::Accepted);
    }
    s.add("psbt", "unsigned, base64", to_base64(&unsigned).into_bytes(), Verdict::Accepted);
    s.add(
        "psbt",
        "two signatures, finalized by hand",
        finalized(&both)?.serialize(),
        Verdict::Accepted,
    );
    // BIP-174's valid vectors (crates/chain-bitcoin/tests/vectors/bip174.json): they parse,
    // and are no coins of this wallet.
    let doc: serde_json::Value =
        serde_json::from_str(include_str!("../../chain-bitcoin/tests/vectors/bip174.json"))
            .map_err(err)?;
    for v in doc.get("valid").and_then(|l| l.as_array()).ok_or("bip174: no valid list")? {
        let hex_text = v.get("hex").and_then(|h| h.as_str()).ok_or("bip174: no hex")?;
        let name = v.get("name").and_then(|n| n.as_str()).unwrap_or("vector");
        s.add(
            "psbt",
            format!("BIP-174 {name}"),
            hex::decode(hex_text).map_err(err)?,
            Verdict::Refused,
        );
    }
    Ok(Psbts { unsigned, one })
}

/// `psbt` with every input finalized as a P2WSH multisig witness (the empty element
/// CHECKMULTISIG pops, the signatures in the script's key order, the script) and its partial
/// signatures dropped, as a cosigner's wallet that finalizes returns it.
fn finalized(psbt: &Psbt) -> Result<Psbt, String> {
    let mut out = psbt.clone();
    for input in &mut out.inputs {
        let script = input.witness_script.clone().ok_or("no witness script")?;
        let mut elements: Vec<Vec<u8>> = vec![Vec::new()];
        for instruction in script.instructions() {
            if let Ok(bitcoin::script::Instruction::PushBytes(b)) = instruction {
                if let Ok(key) = bitcoin::PublicKey::from_slice(b.as_bytes()) {
                    if let Some(sig) = input.partial_sigs.get(&key) {
                        elements.push(sig.to_vec());
                    }
                }
            }
        }
        elements.push(script.to_bytes());
        input.final_script_witness = Some(Witness::from_slice(&elements));
        input.partial_sigs.clear();
    }
    Ok(out)
}

fn approve(who: &str, intent: &Intent) -> Result<Approval, String> {
    let key = member_key(who).ok_or("no such member")?;
    Ok(Approval::sign(
        who,
        &key,
        &intent.hash().map_err(err)?,
        1,
        Timestamp::from_unix_ms(NOW_MS + 3_600_000),
    ))
}

fn bundle(fx: &Fixtures, intent: &Intent, transaction: Payload) -> Result<Bundle, String> {
    Ok(Bundle {
        format: FORMAT.to_owned(),
        intent: intent.clone(),
        initiator: "eve".to_owned(),
        initiator_role: Role::Operator,
        approvals: vec![approve("ann", intent)?, approve("ben", intent)?],
        governance: fx.log.clone(),
        transaction,
        signed_by: Vec::new(),
    })
}

fn bundles(fx: &Fixtures, psbts: &Psbts, s: &mut Seeds) -> Result<(), String> {
    let unsigned =
        bundle(fx, &fx.btc_intent, Payload::BitcoinPsbt { psbt: to_base64(&psbts.unsigned) })?;
    s.add("cold_bundle", "Bitcoin, unsigned", unsigned.to_json().map_err(err)?, Verdict::Accepted);
    let mut signed =
        bundle(fx, &fx.btc_intent, Payload::BitcoinPsbt { psbt: to_base64(&psbts.one) })?;
    let fingerprint =
        cold_secrets()?.first().ok_or("no secret")?.fingerprint(Network::Regtest).map_err(err)?;
    signed.signed_by.push(fingerprint);
    s.add(
        "cold_bundle",
        "Bitcoin, one signature",
        signed.to_json().map_err(err)?,
        Verdict::Accepted,
    );

    let tx = transfer_tx(&fx.safe_intent, 0).map_err(err)?;
    let mut payload = SafePayload::new(fx.safe, &tx);
    let chain_id = fx.eth.chain_id();
    let hash = safe_tx_hash(chain_id, fx.safe, &tx);
    let owners = owner_keys()?;
    let owner = owners.first().ok_or("no owner")?;
    let sig = sign_hash(&hash, owner).map_err(err)?;
    payload.signatures.push(OwnerSignature {
        owner: strongroom_chain_ethereum::safe::address_of_key(owner).to_checksum(None),
        signature: format!("0x{}", hex::encode(sig)),
    });
    let safe = bundle(fx, &fx.safe_intent, Payload::SafeTransaction(payload))?;
    s.add(
        "cold_bundle",
        "Safe, one owner's signature",
        safe.to_json().map_err(err)?,
        Verdict::Accepted,
    );
    Ok(())
}

fn sign_request(
    fx: &Fixtures,
    intent: &Intent,
    format: TxFormat,
    tx: &[u8],
) -> Result<SignRequest, String> {
    let approvals = match format {
        TxFormat::Eip1559 => vec![approve("ann", intent)?],
        _ => Vec::new(),
    };
    Ok(SignRequest {
        intent: hex::encode(intent.encode().map_err(err)?),
        format,
        tx: hex::encode(tx),
        approvals,
        governance: fx.log.clone(),
        customer_id: Some("customer-1".to_owned()),
        ..SignRequest::default()
    })
}

/// A Bitcoin hot-wallet spend from the fixtures' hot key (a P2WPKH PSBT), as a signing
/// request; and the same with an attacker's output taken out of the change.
fn bitcoin_hot(fx: &Fixtures) -> Result<(SignRequest, SignRequest), String> {
    use strongroom_chain_bitcoin::bitcoin::{
        absolute, transaction, Amount, OutPoint, ScriptBuf, Sequence, Transaction, TxIn, TxOut,
    };
    use strongroom_chain_bitcoin::hot::{HotCodec, HotCoin, HotParams};
    let intent = crate::fixtures::make_intent(
        strongroom_units::chain::BITCOIN_REGTEST,
        "BTC",
        8,
        None,
        "hot-eth-1",
        BTC_DEST,
        150_000,
        10_000,
        7,
    )?;
    let public = hex::decode(&fx.key_info.public_key).map_err(err)?;
    let codec = HotCodec::p2wpkh(intent.chain.clone(), &public).map_err(err)?;
    let funding = Transaction {
        version: transaction::Version::TWO,
        lock_time: absolute::LockTime::ZERO,
        input: vec![TxIn {
            previous_output: OutPoint::null(),
            script_sig: ScriptBuf::new(),
            sequence: Sequence::MAX,
            witness: Witness::new(),
        }],
        output: [120_000, 50_000]
            .map(|v| TxOut { value: Amount::from_sat(v), script_pubkey: codec.script().clone() })
            .to_vec(),
    };
    let coins = vec![HotCoin { tx: funding.clone(), vout: 0 }, HotCoin { tx: funding, vout: 1 }];
    let unsigned = codec.build(&intent, &HotParams { coins, fee_rate: 2 }).map_err(err)?;
    let mut attacked = Psbt::deserialize(&unsigned).map_err(err)?;
    let change = attacked.unsigned_tx.output.get_mut(1).ok_or("no change output")?;
    change.value = Amount::from_sat(change.value.to_sat().saturating_sub(5_000));
    attacked.unsigned_tx.output.push(TxOut {
        value: Amount::from_sat(5_000),
        script_pubkey: ScriptBuf::new_p2wsh(&ScriptBuf::new().wscript_hash()),
    });
    attacked.outputs.push(Default::default());
    let request = |tx: &[u8]| SignRequest {
        intent: intent.encode().map(hex::encode).unwrap_or_default(),
        format: TxFormat::BitcoinPsbt,
        tx: hex::encode(tx),
        input: 1,
        ..SignRequest::default()
    };
    Ok((request(&unsigned), request(&attacked.serialize())))
}

fn body(frame: &Frame) -> Result<Vec<u8>, String> {
    frame.encode().map_err(err)?.get(4..).map(<[u8]>::to_vec).ok_or_else(|| "short frame".into())
}

fn signer(fx: &Fixtures, eth: &Eth, s: &mut Seeds) -> Result<(), String> {
    let native = sign_request(fx, &fx.eth_intent, TxFormat::Eip1559, &eth.native)?;
    let token = sign_request(fx, &fx.token_intent, TxFormat::Eip1559, &eth.token)?;
    let proof = sign_request(fx, &fx.eth_intent, TxFormat::ProofOfControl, &[0x42; 32])?;
    let raw = sign_request(fx, &fx.eth_intent, TxFormat::RawMessage, &[0x42; 32])?;
    // The token transaction under the native intent: a typed mismatch.
    let mismatch = sign_request(fx, &fx.eth_intent, TxFormat::Eip1559, &eth.token)?;
    let (btc, btc_attacked) = bitcoin_hot(fx)?;
    for (what, r, expect) in [
        ("BTC hot spend", &btc, Verdict::Accepted),
        ("BTC hot spend with an attacker's output (refused)", &btc_attacked, Verdict::Refused),
        ("ETH", &native, Verdict::Accepted),
        ("USDT", &token, Verdict::Accepted),
        ("proof of control", &proof, Verdict::Accepted),
        ("raw message (refused)", &raw, Verdict::Refused),
        ("transaction not the intent's (refused)", &mismatch, Verdict::Refused),
    ] {
        s.add("sign_request", what, serde_json::to_vec(r).map_err(err)?, expect);
    }

    let eid = ExecutionId([0x0e; 32]);
    let sign = |id: u64, request: SignRequest| {
        Frame::Control(Control::Request {
            id,
            body: Request::Sign {
                eid: hex::encode(eid.0),
                key_id: "hot-eth-1".to_owned(),
                signers: vec![1, 2],
                presignature: Some("presig-1".to_owned()),
                request,
            },
        })
    };
    let frames = [
        ("sign ETH", sign(1, native), Verdict::Accepted),
        ("sign USDT", sign(2, token), Verdict::Accepted),
        ("sign raw (refused)", sign(3, raw), Verdict::Refused),
        (
            "status",
            Frame::Control(Control::Request { id: 4, body: Request::Status }),
            Verdict::Accepted,
        ),
        (
            "push",
            Frame::Control(Control::Request {
                id: 5,
                body: Request::Push { entries: fx.log.clone() },
            }),
            Verdict::Accepted,
        ),
        (
            "head reply",
            Frame::Control(Control::Response {
                id: 5,
                body: Ok(Reply::Head(Head { seq: 1, hash: fx.state.head.clone() })),
            }),
            Verdict::Accepted,
        ),
        (
            "refusal",
            Frame::Control(Control::Response {
                id: 1,
                body: Err(Refusal::new(
                    2,
                    Reason::FeeAboveIntentCap { max_fee: Units::MAX, cap: Units::ZERO },
                )),
            }),
            Verdict::Accepted,
        ),
        (
            "MPC message",
            Frame::Mpc {
                proto: Proto::Ecdsa,
                envelope: Envelope { eid, round: 2, from: 1, to: Some(3), payload: vec![0xab; 40] },
            },
            Verdict::Accepted,
        ),
        (
            "abort",
            Frame::Abort { eid, from: 2, reason: "refused: frozen".to_owned() },
            Verdict::Accepted,
        ),
    ];
    for (what, frame, expect) in frames {
        s.add("signer_frame", what, body(&frame)?, expect);
    }
    Ok(())
}

/// A log using every kind of change, each signed as the rules need, over the fixtures'
/// genesis (the installed policy first).
fn long_log(fx: &Fixtures) -> Result<Vec<Entry>, String> {
    let g = &fx.genesis;
    let mut log = fx.log.clone();
    let at = |n: i64| GENESIS_MS + n * MINUTE_MS;
    let internal = WhitelistScope::Internal { chain: fx.eth_chain.as_str().to_owned() };
    let customer = WhitelistScope::Customer {
        customer_id: "customer-1".to_owned(),
        chain: fx.eth_chain.as_str().to_owned(),
    };
    let asset = |symbol: &str, contract: &str| AssetSpec {
        chain: fx.eth_chain.as_str().to_owned(),
        symbol: symbol.to_owned(),
        decimals: 6,
        contract: Some(contract.to_owned()),
    };
    let hot_public = hex::encode(hot_key()?.verifying_key().to_encoded_point(true).as_bytes());
    let steps: Vec<(Change, Vec<&str>)> = vec![
        (
            Change::WhitelistAdd {
                scope: internal.clone(),
                address: ETH_DEST.to_owned(),
                label: "cold".into(),
            },
            vec!["ada", "bob"],
        ),
        (Change::Freeze { scope: FreezeScope::Global, reason: Some("drill".into()) }, vec!["sec"]),
        (Change::Unfreeze { scope: FreezeScope::Global }, vec!["ada", "bob"]),
        (
            Change::FreezeUntil {
                scope: FreezeScope::Asset { asset: "USDT".into() },
                until: Timestamp::from_unix_ms(at(5) + DAY_MS),
                reason: None,
            },
            vec!["sec"],
        ),
        (
            Change::AssetAdd { asset: asset("USDC", "0xA0b86991c6218b36c1d19D4a2e9Eb0cE3606eB48") },
            vec!["ada", "bob"],
        ),
        (Change::CancelPending { seq: 2 }, vec!["ada"]),
        (Change::QuarantineNode { node: 3, reason: Some("host lost".into()) }, vec!["sec"]),
        (
            Change::MigrateKey {
                from: "hot-eth-1".into(),
                to: "hot-eth-2".into(),
                to_public_key: hot_public,
            },
            vec!["ada", "bob"],
        ),
        (Change::RetireKey { key: "hot-eth-0".into() }, vec!["ada"]),
        (
            Change::LedgerCredit {
                customer_id: "customer-1".into(),
                asset: "ETH".into(),
                amount: Units::from_base_units(5).map_err(err)?,
                reference: "correction 42".into(),
            },
            vec!["ada", "bob"],
        ),
        (
            Change::AddMember { member: member_spec("dan", &[Role::Admin]).ok_or("dan")? },
            vec!["ada", "bob"],
        ),
        (Change::SetQuorum { quorum: 3 }, vec!["ada", "bob"]),
        (Change::RemoveMember { id: "eve".into() }, vec!["ada", "bob", "cy"]),
        (
            Change::WhitelistAdd {
                scope: customer.clone(),
                address: ETH_DEST.to_owned(),
                label: "mine".into(),
            },
            vec!["ada", "bob", "cy"],
        ),
        (Change::WhitelistRemove { scope: customer, address: ETH_DEST.to_owned() }, vec!["ada"]),
        (
            Change::SetPasskey { id: "bob".into(), passkey: passkey_spec()? },
            vec!["ada", "bob", "cy"],
        ),
        (
            Change::AssetRemove { chain: fx.eth_chain.as_str().to_owned(), symbol: "USDC".into() },
            vec!["ada"],
        ),
        (
            Change::SetPolicy {
                policy: Policy { version: 2, ..Policy::from_toml(POLICY_TOML).map_err(err)? },
            },
            vec!["ada", "bob", "cy"],
        ),
    ];
    for (n, (change, signers)) in (2i64..).zip(steps) {
        append(g, &mut log, change, &signers, at(n))?;
    }
    // A freeze signed with ada's passkey (registered in the genesis): not a change to who
    // governs, so a passkey may sign it.
    let pin = &fx.pin;
    let state = strongroom_governance::log::replay(g, pin, &log, Timestamp::from_unix_ms(i64::MAX))
        .map_err(err)?;
    let mut e = state.propose(
        Change::Freeze { scope: FreezeScope::Wallet { wallet: "hot-eth-2".into() }, reason: None },
        Timestamp::from_unix_ms(at(40)),
    );
    let hash = e.hash().map_err(err)?;
    e.signoffs.push(Signoff::passkey("ada", assert_passkey(&hash)?));
    log.push(e);
    Ok(log)
}

fn governance(fx: &Fixtures, s: &mut Seeds) -> Result<(), String> {
    let with = |mode: u8, body: Vec<u8>| [vec![mode], body].concat();
    let long = long_log(fx)?;
    s.add(
        "governance",
        "the installed log",
        with(0, serde_json::to_vec(&fx.log).map_err(err)?),
        Verdict::Accepted,
    );
    s.add(
        "governance",
        "a log of every change",
        with(0, serde_json::to_vec(&long).map_err(err)?),
        Verdict::Accepted,
    );
    let scenario = json!({ "entries": long });
    s.add(
        "governance",
        "every change, re-signed",
        with(1, serde_json::to_vec(&scenario).map_err(err)?),
        Verdict::Accepted,
    );
    let scenario = json!({ "genesis": fx.genesis, "entries": fx.log });
    s.add(
        "governance",
        "genesis and policy, re-signed",
        with(1, serde_json::to_vec(&scenario).map_err(err)?),
        Verdict::Accepted,
    );
    let scenario = json!({ "genesis": fx.genesis, "entries": long });
    s.add(
        "governance",
        "genesis and every change, re-signed",
        with(1, serde_json::to_vec(&scenario).map_err(err)?),
        Verdict::Accepted,
    );
    // Time-bound changes first in a log of their own, where the fuzzer can move the clocks of
    // the genesis and the entry together.
    let first = |change: Change, signers: &[&str]| -> Result<Vec<u8>, String> {
        let mut log = Vec::new();
        append(&fx.genesis, &mut log, change, signers, GENESIS_MS + MINUTE_MS)?;
        let scenario = json!({ "genesis": fx.genesis, "entries": log });
        Ok(with(1, serde_json::to_vec(&scenario).map_err(err)?))
    };
    let until = Timestamp::from_unix_ms(GENESIS_MS + DAY_MS);
    let freeze = Change::FreezeUntil { scope: FreezeScope::Global, until, reason: None };
    s.add("governance", "a time-boxed freeze first", first(freeze, &["sec"])?, Verdict::Accepted);
    let internal = WhitelistScope::Internal { chain: fx.eth_chain.as_str().to_owned() };
    let add = Change::WhitelistAdd {
        scope: internal,
        address: ETH_DEST.to_owned(),
        label: String::new(),
    };
    s.add(
        "governance",
        "a whitelist addition first",
        first(add, &["ada", "bob"])?,
        Verdict::Accepted,
    );
    s.add(
        "governance",
        "the genesis",
        with(2, serde_json::to_vec(&fx.genesis).map_err(err)?),
        Verdict::Accepted,
    );
    let assertion = assert_passkey(&PASSKEY_CHALLENGE)?;
    s.add(
        "governance",
        "a passkey assertion",
        with(3, serde_json::to_vec(&assertion).map_err(err)?),
        Verdict::Accepted,
    );
    s.add("governance", "the policy", with(4, POLICY_TOML.as_bytes().to_vec()), Verdict::Accepted);
    Ok(())
}

fn api(fx: &Fixtures, s: &mut Seeds) -> Result<(), String> {
    let customer = Uuid::from_u128(0x42);
    let approval = approve("ann", &fx.eth_intent)?;
    let freeze =
        fx.state.propose(Change::Freeze { scope: FreezeScope::Global, reason: None }, fx.now);
    let freeze_hash = freeze.hash().map_err(err)?;
    let ada = member_key("ada").ok_or("ada")?;
    let b64 = |b: &[u8]| {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
    };
    let passkey_login = assert_passkey(&PASSKEY_CHALLENGE)?;
    let bodies: Vec<(&str, serde_json::Value)> = vec![
        ("POST /v1/customers", json!({ "external_id": "user-42" })),
        ("POST /v1/customers/{id}/deposit-address", json!({ "asset": "ETH" })),
        (
            "POST /v1/withdrawals/{id}/approvals",
            json!({
                "approver": approval.approver,
                "intent_hash": approval.intent_hash,
                "policy_version": approval.policy_version,
                "expires_at_ms": approval.expires_at.unix_ms(),
                "signature": approval.signature,
            }),
        ),
        (
            "POST /v1/deposits",
            json!({ "customer_id": customer, "asset": "ETH", "amount": "1.5", "reference": "0x5e1f:0" }),
        ),
        (
            "POST /v1/withdrawals",
            json!({
                "customer_id": customer, "asset": "USDT", "destination": ETH_DEST, "amount": "25.5",
                "device_id": "device-1", "ip": "203.0.113.7",
            }),
        ),
        ("POST /v1/withdrawals/{id}/deny", json!({ "reason": "the customer did not ask for it" })),
        ("POST /v1/withdrawals/{id}/cancel (empty)", json!({})),
        (
            "POST /v1/me/withdrawals",
            json!({ "asset": "BTC", "destination": BTC_DEST, "amount": "0.001" }),
        ),
        (
            "POST /v1/governance/genesis",
            json!({ "genesis": fx.genesis, "pin": fx.pin.to_uppercase() }),
        ),
        (
            "POST /v1/governance/proposals",
            json!({ "change": serde_json::to_value(&freeze.change).map_err(err)? }),
        ),
        (
            "POST /v1/governance/proposals/{seq}/signoffs",
            json!({ "member": "ada", "signature": hex::encode(ada.sign(&freeze_hash).to_bytes()) }),
        ),
        ("POST /v1/governance/proposals/{seq}/withdraw (empty)", json!({})),
        (
            "POST /v1/risk/events",
            json!({ "customer_id": customer, "kind": "login", "device_id": "device-1", "ip": "203.0.113.7" }),
        ),
        ("POST /v1/risk/reviews/{id}/assign", json!({ "assignee": "analyst-1" })),
        (
            "POST /v1/risk/reviews/{id}/notes, release, reject",
            json!({ "text": "called the customer" }),
        ),
        (
            "POST /v1/risk/score",
            json!({ "customer_id": customer, "asset": "ETH", "amount": "0.25", "destination": ETH_DEST, "device_id": null, "ip": null }),
        ),
        (
            "POST /v1/customers/{id}/contact",
            json!({ "email": "ann@example.com", "anti_phishing_code": "blue-fox" }),
        ),
        (
            "POST /v1/auth/register",
            json!({ "email": "ann@example.com", "password": "correct horse battery staple", "device_name": "laptop" }),
        ),
        (
            "POST /v1/auth/login",
            json!({ "email": "ann@example.com", "password": "correct horse battery staple", "totp_code": "123456", "device_id": customer }),
        ),
        ("POST /v1/auth/passkey/options", json!({ "email": "ann@example.com" })),
        (
            "POST /v1/auth/passkey/login",
            json!({
                "ceremony_id": customer,
                "credential": {
                    "id": b64(b"fuzz-passkey"),
                    "rawId": b64(b"fuzz-passkey"),
                    "type": "public-key",
                    "response": {
                        "authenticatorData": passkey_login.authenticator_data,
                        "clientDataJSON": passkey_login.client_data_json,
                        "signature": passkey_login.signature,
                        "userHandle": b64(customer.as_bytes()),
                    },
                    "extensions": {},
                },
            }),
        ),
        (
            "POST /v1/me/password",
            json!({ "current_password": "old secret", "new_password": "new secret words" }),
        ),
        ("POST /v1/me/totp/confirm, disable", json!({ "code": "123456" })),
        (
            "POST /v1/me/passkeys",
            json!({
                "ceremony_id": customer,
                "name": "security key",
                "credential": {
                    "id": b64(b"fuzz-passkey"),
                    "rawId": b64(b"fuzz-passkey"),
                    "type": "public-key",
                    "response": {
                        "attestationObject": b64(&[0xa3, 0x63, 0x66, 0x6d, 0x74, 0x64, 0x6e, 0x6f, 0x6e, 0x65]),
                        "clientDataJSON": passkey_login.client_data_json,
                        "transports": ["usb"],
                    },
                    "extensions": {},
                },
            }),
        ),
        ("POST /v1/me/anti-phishing-code", json!({ "anti_phishing_code": "blue-fox" })),
        (
            "POST /v1/me/withdrawals/challenge",
            json!({ "asset": "ETH", "destination": ETH_DEST, "amount": "0.1" }),
        ),
        (
            "POST /v1/me/whitelist",
            json!({ "asset": "ETH", "address": ETH_DEST, "label": "my cold wallet" }),
        ),
        ("POST /v1/me/whitelist/mode", json!({ "enabled": false, "totp_code": "123456" })),
        ("POST /v1/events/dead-letters/{id}/redeliver (empty)", json!({})),
    ];
    let queries: Vec<(&str, String)> = vec![
        ("GET /v1/withdrawals?…", format!("customer_id={customer}&state=reserved&limit=10")),
        ("GET /v1/customers/{id}/ledger?…", "limit=100".to_owned()),
        // The next page: a cursor as the API hands it out (time, posting number, entry id).
        (
            "GET /v1/customers/{id}/ledger?…",
            "after=MTc2NzIyNTYwMDAwMDoxOjBmOGUyYzRhLTViN2QtNGUxZi05YTNjLTJkNmI4ZTBmMWE0Yw&limit=2"
                .to_owned(),
        ),
        ("GET /v1/customers?…", "external_id=user-42".to_owned()),
        ("GET /v1/audit?…", "after=10&limit=100".to_owned()),
        ("GET /v1/risk/events?…", format!("customer_id={customer}")),
        ("GET /v1/risk/reviews?…", "state=open&limit=50".to_owned()),
        ("GET /v1/events?…", "after=evt_1207&limit=100&type=withdrawal,deposit".to_owned()),
        ("GET /v1/events/dead-letters?…", "after=evt_12&limit=10".to_owned()),
    ];
    let index = |name: &str| {
        API_BODIES
            .iter()
            .position(|(n, _)| *n == name)
            .and_then(|i| u8::try_from(i).ok())
            .ok_or_else(|| format!("no API body named {name}"))
    };
    for (name, value) in bodies {
        let bytes = serde_json::to_vec(&value).map_err(err)?;
        s.add("api_body", name, [vec![index(name)?], bytes].concat(), Verdict::Accepted);
    }
    for (name, query) in queries {
        s.add(
            "api_body",
            name,
            [vec![index(name)?], query.into_bytes()].concat(),
            Verdict::Accepted,
        );
    }
    // Another list's cursor (an event id) is not a cursor here.
    let name = "GET /v1/withdrawals?…";
    s.add(
        "api_body",
        name,
        [vec![index(name)?], b"after=evt_12".to_vec()].concat(),
        Verdict::Refused,
    );
    Ok(())
}
