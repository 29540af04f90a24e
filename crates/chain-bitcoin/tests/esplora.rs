#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]
//! The online cold wallet against an Esplora server: a small local server that speaks the
//! Esplora API over a real socket (no bitcoind exists here) and, like a node, accepts a
//! transaction only if Bitcoin Core's consensus code verifies every input against the
//! outputs it spends. The wallet finds its coins, a 2-of-3 withdrawal is built, signed,
//! finalized and broadcast (twice: idempotent), a forged one is refused, and the change is
//! found again on the next sync.

use std::collections::BTreeMap;
use std::str::FromStr;
use std::sync::{Arc, Mutex};

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::Router;
use bitcoin::absolute::LockTime;
use bitcoin::consensus::encode::{deserialize_hex, serialize_hex};
use bitcoin::transaction::Version;
use bitcoin::{
    Amount, Network, OutPoint, ScriptBuf, Sequence, Transaction, TxIn, TxOut, Txid, Witness,
};
use strongroom_chain_bitcoin::esplora::{Esplora, TxState};
use strongroom_chain_bitcoin::keys::ColdSecret;
use strongroom_chain_bitcoin::psbt::{combine, finalize};
use strongroom_chain_bitcoin::wallet::ColdWallet;
use strongroom_chain_bitcoin::{BtcError, Multisig};
use strongroom_core::env::FixedEnv;
use strongroom_core::{Intent, IntentAsset, Timestamp, WalletId};
use strongroom_units::chain::BITCOIN_REGTEST;
use strongroom_units::{Address, AssetSymbol, ChainId};

const NET: Network = Network::Regtest;
const DEST: &str = "bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080";

/// The chain as the fake server knows it: transactions (with their height, `None` in the
/// mempool) and which outputs are spent.
#[derive(Default)]
struct Chain {
    txs: BTreeMap<Txid, (Transaction, Option<u32>)>,
    spent: BTreeMap<OutPoint, Txid>,
    /// How many requests failed on purpose before answering (to exercise retries).
    fail_next: u32,
}

type Shared = Arc<Mutex<Chain>>;

fn addr_of(spk: &ScriptBuf) -> String {
    bitcoin::Address::from_script(spk, NET).map(|a| a.to_string()).unwrap_or_default()
}

async fn tip() -> String {
    "120".into()
}

async fn address(State(c): State<Shared>, Path(a): Path<String>) -> (StatusCode, String) {
    let c = c.lock().unwrap();
    let n = c
        .txs
        .values()
        .filter(|(tx, _)| tx.output.iter().any(|o| addr_of(&o.script_pubkey) == a))
        .count();
    let body = serde_json::json!({"address": a, "chain_stats": {"tx_count": n}, "mempool_stats": {"tx_count": 0}});
    (StatusCode::OK, body.to_string())
}

async fn utxo(State(c): State<Shared>, Path(a): Path<String>) -> (StatusCode, String) {
    let mut c = c.lock().unwrap();
    if c.fail_next > 0 {
        c.fail_next -= 1;
        return (StatusCode::SERVICE_UNAVAILABLE, "busy".into());
    }
    let mut out = Vec::new();
    for (txid, (tx, height)) in &c.txs {
        for (vout, o) in tx.output.iter().enumerate() {
            let op = OutPoint { txid: *txid, vout: vout as u32 };
            if addr_of(&o.script_pubkey) == a && !c.spent.contains_key(&op) {
                let status = match height {
                    Some(h) => serde_json::json!({"confirmed": true, "block_height": h}),
                    None => serde_json::json!({"confirmed": false}),
                };
                out.push(serde_json::json!({"txid": txid.to_string(), "vout": vout, "value": o.value.to_sat(), "status": status}));
            }
        }
    }
    (StatusCode::OK, serde_json::Value::Array(out).to_string())
}

async fn tx_hex(State(c): State<Shared>, Path(txid): Path<String>) -> (StatusCode, String) {
    let c = c.lock().unwrap();
    match Txid::from_str(&txid).ok().and_then(|t| c.txs.get(&t)) {
        Some((tx, _)) => (StatusCode::OK, serialize_hex(tx)),
        None => (StatusCode::NOT_FOUND, "Transaction not found".into()),
    }
}

async fn tx_status(State(c): State<Shared>, Path(txid): Path<String>) -> (StatusCode, String) {
    let c = c.lock().unwrap();
    match Txid::from_str(&txid).ok().and_then(|t| c.txs.get(&t)) {
        Some((_, Some(h))) => {
            (StatusCode::OK, serde_json::json!({"confirmed": true, "block_height": h}).to_string())
        }
        Some((_, None)) => (StatusCode::OK, serde_json::json!({"confirmed": false}).to_string()),
        None => (StatusCode::NOT_FOUND, "Transaction not found".into()),
    }
}

/// Like a node: every input must spend a known, unspent output and pass libbitcoinconsensus.
async fn submit(State(c): State<Shared>, body: String) -> (StatusCode, String) {
    let mut c = c.lock().unwrap();
    let tx: Transaction = match deserialize_hex(body.trim()) {
        Ok(tx) => tx,
        Err(e) => return (StatusCode::BAD_REQUEST, format!("TX decode failed: {e}")),
    };
    let txid = tx.compute_txid();
    if c.txs.contains_key(&txid) {
        return (StatusCode::BAD_REQUEST, "sendrawtransaction RPC error: {\"code\":-27,\"message\":\"Transaction already in block chain\"}".into());
    }
    let mut prevouts = BTreeMap::new();
    for i in &tx.input {
        let Some((prev, _)) = c.txs.get(&i.previous_output.txid) else {
            return (StatusCode::BAD_REQUEST, "bad-txns-inputs-missingorspent".into());
        };
        if c.spent.contains_key(&i.previous_output) {
            return (StatusCode::BAD_REQUEST, "bad-txns-inputs-missingorspent".into());
        }
        prevouts.insert(i.previous_output, prev.output[i.previous_output.vout as usize].clone());
    }
    if let Err(e) = tx.verify(|op| prevouts.get(op).cloned()) {
        return (StatusCode::BAD_REQUEST, format!("mandatory-script-verify-flag-failed ({e})"));
    }
    for i in &tx.input {
        c.spent.insert(i.previous_output, txid);
    }
    c.txs.insert(txid, (tx, None));
    (StatusCode::OK, txid.to_string())
}

async fn fees() -> String {
    serde_json::json!({"1": 12.3, "3": 8.0, "6": 4.1, "144": 1.0}).to_string()
}

async fn serve(chain: Shared) -> String {
    let app = Router::new()
        .route("/blocks/tip/height", get(tip))
        .route("/address/{a}", get(address))
        .route("/address/{a}/utxo", get(utxo))
        .route("/tx/{txid}/hex", get(tx_hex))
        .route("/tx/{txid}/status", get(tx_status))
        .route("/tx", post(submit))
        .route("/fee-estimates", get(fees))
        .with_state(chain);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    url
}

fn env(seed: u64) -> FixedEnv {
    FixedEnv::new(Timestamp::from_unix_ms(1_800_000_000_000), seed)
}

fn intent(sat: u128) -> Intent {
    let chain = ChainId::parse(BITCOIN_REGTEST).unwrap();
    Intent {
        destination: Address::parse(&chain, DEST).unwrap(),
        asset: IntentAsset {
            symbol: AssetSymbol::parse("BTC").unwrap(),
            decimals: 8,
            contract: None,
        },
        chain,
        source_wallet: WalletId::parse("cold-btc-1").unwrap(),
        amount: strongroom_units::Amount::from_base_units(sat).unwrap(),
        fee_cap: strongroom_units::Amount::from_base_units(50_000).unwrap(),
        expires_at: Timestamp::from_unix_ms(1_800_086_400_000),
        request_id: uuid::Uuid::from_u128(9),
    }
}

fn funding(to: &bitcoin::Address, sat: u64, n: u8) -> Transaction {
    Transaction {
        version: Version::TWO,
        lock_time: LockTime::ZERO,
        input: vec![TxIn {
            previous_output: OutPoint {
                txid: Txid::from_str(&format!("{n:02x}").repeat(32)).unwrap(),
                vout: 0,
            },
            script_sig: ScriptBuf::new(),
            sequence: Sequence::MAX,
            witness: Witness::new(),
        }],
        output: vec![TxOut { value: Amount::from_sat(sat), script_pubkey: to.script_pubkey() }],
    }
}

#[tokio::test]
async fn the_cold_wallet_syncs_spends_and_broadcasts_through_esplora() {
    let secrets: Vec<ColdSecret> = (1..=3).map(|i| ColdSecret::generate(&env(i))).collect();
    let keys: Vec<String> = secrets.iter().map(|s| s.account_key(NET).unwrap()).collect();
    let multisig = Multisig::new(2, &keys, NET).unwrap();
    let chain: Shared = Arc::default();
    {
        let mut c = chain.lock().unwrap();
        // Deposits at receive addresses 0 and 3 (a gap the sync must walk over).
        for (n, index, sat) in [(1u8, 0u32, 150_000_000u64), (2, 3, 30_000_000)] {
            let a = multisig.address(strongroom_chain_bitcoin::Keychain::Receive, index).unwrap();
            let tx = funding(&a, sat, n);
            c.txs.insert(tx.compute_txid(), (tx, Some(100)));
        }
        c.fail_next = 2;
    }
    let url = serve(chain.clone()).await;
    let esplora = Esplora::new(&url).unwrap();
    assert_eq!(esplora.tip_height().await.unwrap(), 120);
    assert_eq!(esplora.fee_rate(6).await.unwrap(), 5, "4.1 sat/vB rounded up");
    assert_eq!(esplora.fee_rate(2).await.unwrap(), 13, "the 1-block estimate, rounded up");

    let mut wallet = ColdWallet::new(&multisig).unwrap();
    assert_eq!(esplora.sync(&mut wallet, 5, 1).await.unwrap(), 2, "both coins, after two 503s");
    assert_eq!(wallet.balance_sat(), 180_000_000);

    let i = intent(160_000_000);
    let rate = esplora.fee_rate(6).await.unwrap();
    let (psbt, decoded) = wallet.prepare(&i, rate, &env(7)).unwrap();
    let mut a = psbt.clone();
    let mut b = psbt.clone();
    secrets[0].sign(&mut a, NET).unwrap();
    secrets[1].sign(&mut b, NET).unwrap();
    let tx = finalize(combine(psbt.clone(), vec![a, b]).unwrap()).unwrap();

    // A forged copy (one more satoshi to the destination) is refused by the server's
    // consensus check, with its reason.
    let mut forged = tx.clone();
    forged.output.iter_mut().find(|o| o.value.to_sat() == 160_000_000).unwrap().value =
        Amount::from_sat(160_000_001);
    match esplora.broadcast(&forged).await {
        Err(BtcError::Refused(why)) => {
            assert!(why.contains("mandatory-script-verify-flag-failed"), "{why}")
        }
        other => panic!("a forged transaction was not refused: {other:?}"),
    }
    assert_eq!(esplora.status(&forged.compute_txid()).await.unwrap(), TxState::Unknown);

    let txid = esplora.broadcast(&tx).await.unwrap();
    assert_eq!(txid, tx.compute_txid());
    assert_eq!(esplora.broadcast(&tx).await.unwrap(), txid, "sending again is not an error");
    assert_eq!(esplora.status(&txid).await.unwrap(), TxState::Mempool);

    // A fresh watch-only wallet finds only the change now.
    let mut again = ColdWallet::new(&multisig).unwrap();
    assert_eq!(esplora.sync(&mut again, 5, 2).await.unwrap(), 1);
    let change = decoded.change.iter().map(|(_, _, sat)| sat).sum::<u64>();
    assert_eq!(again.balance_sat(), change);
    assert_eq!(change, 180_000_000 - 160_000_000 - decoded.fee_sat);

    // A server that lies about a transaction is caught.
    let other =
        funding(&multisig.address(strongroom_chain_bitcoin::Keychain::Receive, 9).unwrap(), 1, 3);
    chain.lock().unwrap().txs.insert(txid, (other, Some(101)));
    assert!(
        matches!(esplora.transaction(&txid).await, Err(BtcError::Backend(m)) if m.contains("the server sent"))
    );
}
