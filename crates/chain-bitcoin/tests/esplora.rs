#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]
//! The online cold wallet against an Esplora server: a small local server that speaks the
//! Esplora API over a real socket (no bitcoind exists here) and, like a node, accepts a
//! transaction only if Bitcoin Core's consensus code verifies every input against the
//! outputs it spends. The wallet finds its coins, a 2-of-3 withdrawal is built, signed,
//! finalized and broadcast (twice: idempotent), a forged one is refused, and the change is
//! found again on the next sync.

#[path = "support/esplora_server.rs"]
mod esplora_server;

use std::sync::Arc;

use bitcoin::{Amount, Network};
use esplora_server::{serve, Shared};
use fixtures::{funding, regtest_intent, DEST};
use strongroom_chain_bitcoin::esplora::{Esplora, TxState};
use strongroom_chain_bitcoin::keys::ColdSecret;
use strongroom_chain_bitcoin::psbt::{combine, finalize};
use strongroom_chain_bitcoin::wallet::ColdWallet;
use strongroom_chain_bitcoin::{BtcError, Multisig};
use strongroom_core::env::FixedEnv;
use strongroom_core::{Intent, Timestamp};

#[path = "support/fixtures.rs"]
mod fixtures;

fn intent(sat: u128) -> Intent {
    regtest_intent(DEST, sat, 50_000, 9, Timestamp::from_unix_ms(1_800_086_400_000))
}

const NET: Network = Network::Regtest;

fn env(seed: u64) -> FixedEnv {
    FixedEnv::new(Timestamp::from_unix_ms(1_800_000_000_000), seed)
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
