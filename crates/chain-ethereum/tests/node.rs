#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::print_stderr
)] // Test code.
#![allow(clippy::disallowed_methods)]
//! The RPC client against a real node (anvil): broadcast is idempotent, status follows a
//! transaction into a block and counts confirmations, balances and incoming transfers
//! match what was sent, and a node that refuses or cannot be reached gives a clear error.

use std::path::Path;
use std::time::Duration;

use k256::ecdsa::SigningKey;
use serde_json::json;
use strongroom_chain::{ChainClient, TxCodec, TxStatus};
use strongroom_chain_ethereum::rpc::{EthRpc, Retry};
use strongroom_chain_ethereum::{anvil, EthParams, NATIVE_TRANSFER_GAS};
use strongroom_core::{Intent, IntentAsset, Timestamp, WalletId};
use strongroom_units::{Address, Amount, AssetSymbol, ChainId};

const DEST: &str = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed";

async fn node() -> Option<anvil::Anvil> {
    let a = anvil::for_tests(Path::new(env!("CARGO_MANIFEST_DIR")), 31337, &[]).await.unwrap();
    if a.is_none() {
        eprintln!("skipped: no anvil (scripts/install-eth-tools)");
    }
    a
}

fn chain() -> ChainId {
    ChainId::parse("eip155:31337").unwrap()
}

fn key() -> SigningKey {
    SigningKey::from_slice(&[5; 32]).unwrap()
}

fn sign(digest: &[u8; 32]) -> Vec<u8> {
    let (sig, _) = key().sign_prehash_recoverable(digest).unwrap();
    sig.normalize_s().unwrap_or(sig).to_bytes().to_vec()
}

fn eth_intent(amount: u128) -> Intent {
    Intent {
        chain: chain(),
        asset: IntentAsset {
            symbol: AssetSymbol::parse("ETH").unwrap(),
            decimals: 18,
            contract: None,
        },
        source_wallet: WalletId::parse("hot-eth-1").unwrap(),
        destination: Address::parse(&chain(), DEST).unwrap(),
        amount: Amount::from_base_units(amount).unwrap(),
        fee_cap: Amount::from_base_units(10u128.pow(16)).unwrap(),
        expires_at: Timestamp::from_unix_ms(i64::MAX),
        request_id: uuid::Uuid::from_u128(1),
    }
}

#[tokio::test]
async fn a_transfer_is_broadcast_once_confirmed_and_seen_arriving() {
    let Some(node) = node().await else { return };
    let rpc = EthRpc::new(&node.url, chain(), Retry::default()).unwrap();
    rpc.check_chain().await.unwrap();
    let codec = rpc.codec().clone();
    let pk = key().verifying_key().to_encoded_point(true).as_bytes().to_vec();
    let from = codec.address_of(&pk).unwrap();
    rpc.call("anvil_setBalance", json!([from.as_str(), "0xde0b6b3a7640000"])).await.unwrap();
    assert_eq!(rpc.balance(&from, None).await.unwrap().base_units(), 10u128.pow(18));

    let fees = rpc.fee_quote().await.unwrap();
    let params = EthParams {
        nonce: rpc.nonce(&from, true).await.unwrap(),
        gas_limit: NATIVE_TRANSFER_GAS,
        max_fee_per_gas: fees.base_fee_per_gas * 2 + fees.max_priority_fee_per_gas,
        max_priority_fee_per_gas: fees.max_priority_fee_per_gas,
    };
    let amount = 123_456_789_000u128;
    let unsigned = codec.build(&eth_intent(amount), &params).unwrap();
    let digest = codec.digests(&unsigned).unwrap()[0];
    let signed = codec.attach(&unsigned, &pk, &[sign(&digest)]).unwrap();

    let start = rpc.head().await.unwrap();
    assert_eq!(rpc.status(&signed.txid).await.unwrap(), TxStatus::Unknown);
    assert_eq!(rpc.broadcast(&signed).await.unwrap(), signed.txid);
    // Sending it again (anvil has mined it already) is not an error and changes nothing.
    assert_eq!(rpc.broadcast(&signed).await.unwrap(), signed.txid);
    // anvil mines each transaction as it arrives, a moment after accepting it.
    let mut status = rpc.status(&signed.txid).await.unwrap();
    for _ in 0..100 {
        if matches!(status, TxStatus::Included { .. }) {
            break;
        }
        assert_eq!(status, TxStatus::Pending);
        tokio::time::sleep(Duration::from_millis(20)).await;
        status = rpc.status(&signed.txid).await.unwrap();
    }
    let TxStatus::Included { block, confirmations, success, fee_paid } = status else {
        panic!("not included: {status:?}")
    };
    assert_eq!(rpc.nonce(&from, false).await.unwrap(), params.nonce + 1);
    assert!(success);
    assert_eq!(confirmations, 1);
    assert!(fee_paid.base_units() >= u128::from(NATIVE_TRANSFER_GAS) * fees.base_fee_per_gas);
    assert!(fee_paid.base_units() <= u128::from(NATIVE_TRANSFER_GAS) * params.max_fee_per_gas);
    rpc.call("anvil_mine", json!(["0x2"])).await.unwrap();
    let TxStatus::Included { confirmations, block: again, .. } =
        rpc.status(&signed.txid).await.unwrap()
    else {
        panic!("vanished")
    };
    assert_eq!((confirmations, &again), (3, &block));
    assert_eq!(rpc.block(block.number).await.unwrap().as_ref(), Some(&block));

    // The chain moved exactly the amount plus the fee.
    let dest = Address::parse(&chain(), DEST).unwrap();
    assert_eq!(rpc.balance(&dest, None).await.unwrap().base_units(), amount);
    assert_eq!(
        rpc.balance(&from, None).await.unwrap().base_units(),
        10u128.pow(18) - amount - fee_paid.base_units()
    );

    // The watcher's view: one incoming transfer to DEST, in that block.
    let head = rpc.head().await.unwrap();
    let watch = |a: &Address| std::iter::once((a.clone(), uuid::Uuid::nil())).collect();
    let seen = rpc.incoming(start.number, head.number, &watch(&dest), &[]).await.unwrap();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(
        (seen[0].txid.as_str(), seen[0].amount.base_units(), &seen[0].block),
        (signed.txid.as_str(), amount, &block)
    );
    assert_eq!(seen[0].from.as_ref(), Some(&from));
    assert!(rpc.incoming(start.number, head.number, &watch(&from), &[]).await.unwrap().is_empty());
}

#[tokio::test]
async fn refusals_and_outages_are_clear_errors() {
    let Some(node) = node().await else { return };
    // The wrong chain is caught before anything is sent.
    let wrong =
        EthRpc::new(&node.url, ChainId::parse("eip155:1").unwrap(), Retry::default()).unwrap();
    let e = wrong.check_chain().await.unwrap_err();
    assert!(e.message.contains("chain id 31337, not 1"), "{e}");

    // A transaction from an account with no funds is refused by the node, not retried.
    let rpc = EthRpc::new(&node.url, chain(), Retry::default()).unwrap();
    let codec = rpc.codec().clone();
    let pk = key().verifying_key().to_encoded_point(true).as_bytes().to_vec();
    let params = EthParams {
        nonce: 0,
        gas_limit: 21_000,
        max_fee_per_gas: 10u128.pow(10),
        max_priority_fee_per_gas: 1,
    };
    let unsigned = codec.build(&eth_intent(1), &params).unwrap();
    let signed =
        codec.attach(&unsigned, &pk, &[sign(&codec.digests(&unsigned).unwrap()[0])]).unwrap();
    let e = rpc.broadcast(&signed).await.unwrap_err();
    assert!(!e.retryable && e.message.contains("eth_sendRawTransaction"), "{e}");
    assert_eq!(rpc.status(&signed.txid).await.unwrap(), TxStatus::Unknown);

    // A node that is down: retried with backoff, then a retryable error naming the call.
    let url = node.url.clone();
    node.stop().await;
    let quick = Retry {
        attempts: 3,
        first_delay: Duration::from_millis(10),
        timeout: Duration::from_secs(2),
    };
    let down = EthRpc::new(&url, chain(), quick).unwrap();
    let e = down.head().await.unwrap_err();
    assert!(e.retryable && e.message.contains("eth_blockNumber"), "{e}");
}

/// Token transfers into watched addresses are found whether the watched set is small (named
/// to the node in the log filter) or large (every transfer of the token read and matched
/// here): the same transfer either way, and none to an address nobody watches.
#[tokio::test]
async fn token_transfers_are_found_in_small_and_large_watched_sets() {
    let Some(node) = node().await else { return };
    let rpc = EthRpc::new(&node.url, chain(), Retry::default()).unwrap();
    let accounts = rpc.call("eth_accounts", json!([])).await.unwrap();
    let from = accounts[0].as_str().unwrap().to_owned();
    let token = anvil::deploy_test_token(&rpc, &from, "Test", "TST", 6).await.unwrap();
    let start = rpc.head().await.unwrap().number;
    let dest = Address::parse(&chain(), DEST).unwrap();
    let stranger = Address::parse(&chain(), "0x00000000000000000000000000000000000000aa").unwrap();
    anvil::mint_test_token(&rpc, &from, &token, &dest, 7_000_000).await.unwrap();
    anvil::mint_test_token(&rpc, &from, &token, &stranger, 5).await.unwrap();
    let head = rpc.head().await.unwrap().number;
    let contracts = [token.clone()];
    let small: strongroom_chain::Watched = [(dest.clone(), uuid::Uuid::nil())].into();
    let mut large = small.clone();
    for i in 0..1_500u64 {
        let a = Address::parse(&chain(), &format!("0x{:040x}", 0x1000 + i)).unwrap();
        large.insert(a, uuid::Uuid::nil());
    }
    for watched in [&small, &large] {
        let seen = rpc.incoming(start, head, watched, &contracts).await.unwrap();
        assert_eq!(seen.len(), 1, "{} watched: {seen:?}", watched.len());
        assert_eq!((&seen[0].to, seen[0].amount.base_units()), (&dest, 7_000_000));
        assert_eq!(seen[0].contract.as_ref(), Some(&token));
    }
}
