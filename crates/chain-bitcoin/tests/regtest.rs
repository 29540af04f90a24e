//! The local regtest backend, read through the one chain boundary (`BtcClient`, the
//! `ChainClient` over Esplora): a payment waits in the mempool, is mined and counts
//! confirmations; deposits are found by block; a reorganisation that drops a transaction
//! makes it unknown and one that keeps it mines it again under another block; the mempool
//! refuses what Bitcoin Core refuses (a bad signature, a spent or immature coin, more out
//! than in) and replaces a transaction only by one that signals it and pays more.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)] // Test code.

use std::collections::HashMap;
use std::str::FromStr;

use bitcoin::secp256k1::Secp256k1;
use bitcoin::{Network, OutPoint, Transaction};
use strongroom_chain::{ChainClient, TxCodec, TxStatus};
use strongroom_chain_bitcoin::bitcoin;
use strongroom_chain_bitcoin::client::BtcClient;
use strongroom_chain_bitcoin::esplora::Esplora;
use strongroom_chain_bitcoin::hot::{self, HotCodec, HotCoin, HotParams};
use strongroom_chain_bitcoin::regtest::Regtest;
use strongroom_core::{Intent, IntentAsset, Timestamp, WalletId};
use strongroom_units::chain::BITCOIN_REGTEST;
use strongroom_units::{Address, Amount, AssetSymbol, ChainId};

fn chain() -> ChainId {
    ChainId::parse(BITCOIN_REGTEST).unwrap()
}

#[path = "support/fixtures.rs"]
mod fixtures;
use fixtures::{public, secret};

/// Key `b`'s compact signature over each digest of `unsigned`.
fn sign_all(codec: &HotCodec, unsigned: &[u8], b: u8) -> Vec<Vec<u8>> {
    codec.digests(unsigned).unwrap().iter().map(|d| fixtures::sign(b, d)).collect()
}

fn btc_address(b: u8) -> bitcoin::Address {
    hot::p2wpkh_address(&public(b), Network::Regtest).unwrap()
}

fn address(b: u8) -> Address {
    Address::parse(&chain(), &btc_address(b).to_string()).unwrap()
}

async fn start() -> (Regtest, BtcClient) {
    let node = Regtest::new().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(node.clone().serve(listener));
    let client = BtcClient::new(Esplora::new(&url).unwrap(), chain()).unwrap();
    (node, client)
}

fn intent(to: Address, sat: u128) -> Intent {
    Intent {
        chain: chain(),
        asset: IntentAsset {
            symbol: AssetSymbol::parse("BTC").unwrap(),
            decimals: 8,
            contract: None,
        },
        destination: to,
        source_wallet: WalletId::parse("hot-btc-1").unwrap(),
        amount: Amount::from_base_units(sat).unwrap(),
        fee_cap: Amount::from_base_units(50_000).unwrap(),
        expires_at: Timestamp::from_unix_ms(4_000_000_000_000),
        request_id: uuid::Uuid::from_u128(sat),
    }
}

/// Key `b`'s spend of its coins paying `sat` to `to` at `fee_rate`, signed by `signer`.
async fn spend(
    client: &BtcClient,
    b: u8,
    signer: u8,
    to: Address,
    sat: u128,
    fee_rate: u64,
) -> strongroom_chain::SignedTx {
    let codec = HotCodec::p2wpkh(chain(), &public(b)).unwrap();
    let coins = client
        .coins(&address(b), true)
        .await
        .unwrap()
        .into_iter()
        .map(|(u, tx)| HotCoin { tx, vout: u.outpoint.vout })
        .collect();
    let unsigned = codec.build(&intent(to, sat), &HotParams { coins, fee_rate }).unwrap();
    let sigs = sign_all(&codec, &unsigned, signer);
    if signer == b {
        codec.attach(&unsigned, &public(b), &sigs).unwrap()
    } else {
        // Put another key's signatures in by hand (attach refuses them).
        let psbt = bitcoin::psbt::Psbt::deserialize(&unsigned).unwrap();
        let mut tx = psbt.unsigned_tx;
        let pk = secret(signer).public_key(&Secp256k1::new());
        for (i, s) in tx.input.iter_mut().zip(&sigs) {
            let sig = bitcoin::ecdsa::Signature {
                signature: bitcoin::secp256k1::ecdsa::Signature::from_compact(s).unwrap(),
                sighash_type: bitcoin::sighash::EcdsaSighashType::All,
            };
            i.witness = bitcoin::Witness::p2wpkh(&sig, &pk);
        }
        strongroom_chain::SignedTx {
            raw: bitcoin::consensus::serialize(&tx),
            txid: tx.compute_txid().to_string(),
        }
    }
}

#[tokio::test]
async fn payments_are_mined_confirmed_and_found_as_deposits() {
    let (node, client) = start().await;
    let head = client.head().await.unwrap();
    assert_eq!(head.number, 101, "the faucet mined 101 blocks");
    assert_eq!(client.block(101).await.unwrap().unwrap(), head);
    assert_eq!(client.block(102).await.unwrap(), None);

    let txid = node.fund(&btc_address(1), 250_000).unwrap().to_string();
    assert_eq!(client.status(&txid).await.unwrap(), TxStatus::Pending);
    // Unconfirmed coins are not balance.
    assert!(client.balance(&address(1), None).await.unwrap().is_zero());
    node.mine(1, None).unwrap();
    let TxStatus::Included { block, confirmations, success, fee_paid } =
        client.status(&txid).await.unwrap()
    else {
        panic!("not mined");
    };
    assert_eq!((block.number, confirmations, success), (102, 1, true));
    assert_eq!(fee_paid.base_units(), 1_000, "the faucet pays 1,000 sat");
    node.mine(2, None).unwrap();
    let TxStatus::Included { confirmations, .. } = client.status(&txid).await.unwrap() else {
        panic!("left the chain");
    };
    assert_eq!(confirmations, 3);
    assert_eq!(client.balance(&address(1), None).await.unwrap().base_units(), 250_000);

    // The deposit, found in its block by output; other addresses' outputs are not.
    let watched: HashMap<Address, uuid::Uuid> = [(address(1), uuid::Uuid::from_u128(7))].into();
    let found = client.incoming(100, 104, &watched, &[]).await.unwrap();
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!((found[0].txid.as_str(), found[0].block.number), (txid.as_str(), 102));
    assert_eq!((found[0].to.clone(), found[0].amount.base_units()), (address(1), 250_000));
    assert!(client.incoming(103, 104, &watched, &[]).await.unwrap().is_empty());
    let token = address(5);
    assert!(!client.incoming(100, 104, &watched, &[token]).await.unwrap_err().retryable);

    // A spend by the key, through the hot codec, accepted and mined.
    let paid = spend(&client, 1, 1, address(2), 100_000, 5).await;
    assert_eq!(client.broadcast(&paid).await.unwrap(), paid.txid);
    // Sending it again is not an error.
    assert_eq!(client.broadcast(&paid).await.unwrap(), paid.txid);
    node.mine(1, None).unwrap();
    assert_eq!(client.balance(&address(2), None).await.unwrap().base_units(), 100_000);
    let change = client.balance(&address(1), None).await.unwrap().base_units();
    let TxStatus::Included { fee_paid, .. } = client.status(&paid.txid).await.unwrap() else {
        panic!("not mined");
    };
    assert_eq!(change + 100_000 + fee_paid.base_units(), 250_000, "to the satoshi");
}

#[tokio::test]
async fn the_mempool_refuses_what_bitcoin_core_refuses() {
    let (node, client) = start().await;
    node.fund(&btc_address(1), 250_000).unwrap();
    node.mine(1, None).unwrap();

    // Another key's signature over key 1's coin: the script check fails.
    let forged = spend(&client, 1, 3, address(2), 100_000, 5).await;
    let e = client.broadcast(&forged).await.unwrap_err();
    assert!(!e.retryable && e.message.contains("script-verify"), "{e}");

    // More out than in.
    let honest = spend(&client, 1, 1, address(2), 100_000, 5).await;
    let mut tx: Transaction = bitcoin::consensus::deserialize(&honest.raw).unwrap();
    tx.output[0].value = bitcoin::Amount::from_sat(300_000);
    let raw = bitcoin::consensus::serialize(&tx);
    let e = client
        .broadcast(&strongroom_chain::SignedTx { raw, txid: tx.compute_txid().to_string() })
        .await
        .unwrap_err();
    assert!(!e.retryable && e.message.contains("in-belowout"), "{e}");

    // The honest spend, then a replacement paying less: refused; paying more: replaces it.
    client.broadcast(&honest).await.unwrap();
    let cheaper = spend_same_coins(&honest, &client, 2).await;
    let e = client.broadcast(&cheaper).await.unwrap_err();
    assert!(e.message.contains("insufficient fee"), "{e}");
    let dearer = spend_same_coins(&honest, &client, 20).await;
    client.broadcast(&dearer).await.unwrap();
    assert_eq!(node.mempool(), vec![dearer.txid.parse().unwrap()]);
    assert_eq!(client.status(&honest.txid).await.unwrap(), TxStatus::Unknown);
    node.mine(1, None).unwrap();
    // Its coin is spent now.
    let e = client.broadcast(&honest).await.unwrap_err();
    assert!(e.message.contains("missingorspent"), "{e}");

    // A coinbase 1 block deep cannot be spent (a coinbase needs 100 confirmations).
    let miner = btc_address(4);
    node.mine(1, Some(&miner)).unwrap();
    let coins = client.coins(&address(4), false).await.unwrap();
    assert_eq!(coins.len(), 1);
    let codec = HotCodec::p2wpkh(chain(), &public(4)).unwrap();
    let params =
        HotParams { coins: vec![HotCoin { tx: coins[0].1.clone(), vout: 0 }], fee_rate: 2 };
    let unsigned = codec.build(&intent(address(2), 1_000_000), &params).unwrap();
    let sigs = sign_all(&codec, &unsigned, 4);
    let signed = codec.attach(&unsigned, &public(4), &sigs).unwrap();
    let e = client.broadcast(&signed).await.unwrap_err();
    assert!(e.message.contains("premature-spend-of-coinbase"), "{e}");
    node.mine(99, None).unwrap();
    client.broadcast(&signed).await.unwrap();
}

/// `honest`'s coins paying the same, at another fee rate.
async fn spend_same_coins(
    honest: &strongroom_chain::SignedTx,
    client: &BtcClient,
    fee_rate: u64,
) -> strongroom_chain::SignedTx {
    let tx: Transaction = bitcoin::consensus::deserialize(&honest.raw).unwrap();
    let spent: Vec<OutPoint> = tx.input.iter().map(|i| i.previous_output).collect();
    let codec = HotCodec::p2wpkh(chain(), &public(1)).unwrap();
    let mut coins = Vec::new();
    for op in spent {
        let prev = client.esplora().transaction(&op.txid).await.unwrap();
        coins.push(HotCoin { tx: prev, vout: op.vout });
    }
    let unsigned =
        codec.build(&intent(address(2), 100_000), &HotParams { coins, fee_rate }).unwrap();
    let sigs = sign_all(&codec, &unsigned, 1);
    codec.attach(&unsigned, &public(1), &sigs).unwrap()
}

#[tokio::test]
async fn reorganisations_drop_or_remine_transactions() {
    let (node, client) = start().await;
    let kept = node.fund(&btc_address(1), 100_000).unwrap().to_string();
    node.mine(1, None).unwrap();
    let before = client.block(102).await.unwrap().unwrap();
    // Kept: mined again in the new branch, under another block hash.
    node.reorg(1, true).unwrap();
    assert_eq!(client.head().await.unwrap().number, 103);
    let after = client.block(102).await.unwrap().unwrap();
    assert_ne!(before.hash, after.hash, "a new block replaced it");
    let TxStatus::Included { block, .. } = client.status(&kept).await.unwrap() else {
        panic!("the kept transaction is not in the new branch");
    };
    assert_eq!(block, after);

    // Dropped (a conflicting branch): unknown, no longer a deposit, the balance gone.
    let dropped = node.fund(&btc_address(2), 70_000).unwrap().to_string();
    node.mine(1, None).unwrap();
    let watched: HashMap<Address, uuid::Uuid> = [(address(2), uuid::Uuid::from_u128(2))].into();
    assert_eq!(client.incoming(104, 104, &watched, &[]).await.unwrap().len(), 1);
    node.reorg(1, false).unwrap();
    assert_eq!(client.status(&dropped).await.unwrap(), TxStatus::Unknown);
    assert!(client.incoming(104, 105, &watched, &[]).await.unwrap().is_empty());
    assert!(client.balance(&address(2), None).await.unwrap().is_zero());
    assert!(node.reorg(500, false).is_err(), "deeper than the chain");

    // Fee estimates as set.
    node.set_fee_estimates([(1u16, 30.2), (6, 9.0)].into_iter().collect());
    assert_eq!(client.fee_rate(3).await.unwrap(), 31);
    assert_eq!(client.fee_rate(6).await.unwrap(), 9);
    let _ = bitcoin::Txid::from_str(&kept).unwrap();
}

#[tokio::test]
async fn a_kept_chain_comes_back_after_a_restart_and_a_tampered_one_is_refused() {
    let dir = std::env::temp_dir().join(format!("regtest-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("chain.json");
    let _ = std::fs::remove_file(&path);
    let node = Regtest::open(&path).unwrap();
    let paid = node.fund(&btc_address(1), 40_000).unwrap();
    node.mine(1, None).unwrap();
    let waiting = node.fund(&btc_address(2), 30_000).unwrap();
    let tip = node.tip_height();
    drop(node);
    let again = Regtest::open(&path).unwrap();
    assert_eq!(again.tip_height(), tip);
    assert_eq!(again.utxos(&btc_address(1)).len(), 1, "the mined payment is there");
    assert_eq!(again.mempool(), vec![waiting], "and the waiting one is in the mempool again");
    assert_ne!(paid, waiting);
    drop(again);
    // A block changed on disk no longer fits its chain.
    let text = std::fs::read_to_string(&path).unwrap();
    let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let block = v["blocks"][50].as_str().unwrap().to_owned();
    let flipped = format!("{}{}", &block[..100], if &block[100..101] == "0" { "1" } else { "0" });
    v["blocks"][50] = serde_json::Value::String(format!("{flipped}{}", &block[101..]));
    std::fs::write(&path, v.to_string()).unwrap();
    let e = Regtest::open(&path).unwrap_err();
    assert!(e.to_string().contains("does not fit the chain"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}
