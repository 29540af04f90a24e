//! A small local server that speaks the Esplora API over a real socket (no bitcoind exists
//! here) and, like a node, accepts a transaction only if Bitcoin Core's consensus code
//! verifies every input against the outputs it spends. Shared by the chain-bitcoin and CLI
//! tests (`#[path]`).
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::str::FromStr;
use std::sync::{Arc, Mutex};

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::Router;
use strongroom_chain_bitcoin::bitcoin::consensus::encode::{deserialize_hex, serialize_hex};
use strongroom_chain_bitcoin::bitcoin::{Network, OutPoint, ScriptBuf, Transaction, Txid};

const NET: Network = Network::Regtest;

/// The chain as the fake server knows it: transactions (with their height, `None` in the
/// mempool) and which outputs are spent.
#[derive(Default)]
pub struct Chain {
    pub txs: BTreeMap<Txid, (Transaction, Option<u32>)>,
    pub spent: BTreeMap<OutPoint, Txid>,
    /// How many requests failed on purpose before answering (to exercise retries).
    pub fail_next: u32,
}

pub type Shared = Arc<Mutex<Chain>>;

fn addr_of(spk: &ScriptBuf) -> String {
    strongroom_chain_bitcoin::bitcoin::Address::from_script(spk, NET)
        .map(|a| a.to_string())
        .unwrap_or_default()
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

pub async fn serve(chain: Shared) -> String {
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
