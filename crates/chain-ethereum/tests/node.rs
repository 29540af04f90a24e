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
//! A Safe created through the standard factory by the relayer is a valid Safe 1.4.1 at the
//! address `CREATE2` predicted, and a relayer short of gas money is refused before sending.

use std::path::Path;
use std::time::Duration;

use alloy_sol_types::SolCall;
use k256::ecdsa::SigningKey;
use serde_json::json;
use strongroom_chain::{ChainClient, TxCodec, TxStatus};
use strongroom_chain_ethereum::relayer::{self, Relay, RelayError, RelayerKey};
use strongroom_chain_ethereum::rpc::{EthRpc, Retry};
use strongroom_chain_ethereum::safe::{
    code_hash, get_owners_calldata, get_threshold_calldata, keccak, version_calldata, EthAddress,
    ISafe, SafeContracts, SafeDeployment, FALLBACK_HANDLER_STORAGE_SLOT, U256,
};
use strongroom_chain_ethereum::{anvil, safe_node, EthParams, NATIVE_TRANSFER_GAS};
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

/// Anvil's Safe contracts and a funded relayer that is none of the node's accounts.
async fn safe_contracts(
    rpc: &EthRpc,
) -> (strongroom_chain_ethereum::relayer::RelayerKey, strongroom_chain_ethereum::safe::SafeContracts)
{
    let relayer = RelayerKey::from_hex(&"5e".repeat(32)).unwrap();
    rpc.call("anvil_setBalance", json!([relayer.address().to_string(), "0x8ac7230489e80000"]))
        .await
        .unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let contracts = anvil::deploy_safe_contracts(rpc, &relayer, root).await.unwrap();
    (relayer, contracts)
}

async fn tx_field(rpc: &EthRpc, txid: &str, field: &str) -> String {
    let tx = rpc.call("eth_getTransactionByHash", json!([txid])).await.unwrap();
    tx[field].as_str().unwrap().to_owned()
}

/// The Safe is created the way Safe{Wallet} and the Safe SDK create one: one
/// `createProxyWithNonce(singleton, setup(...), saltNonce)` call to `SafeProxyFactory`, at
/// the address computed here beforehand, and it is a working Safe 1.4.1 with the owners,
/// threshold and fallback handler asked for. The relayer's own signed transaction made it.
#[tokio::test]
async fn a_safe_made_through_the_factory_is_where_create2_said_and_is_a_valid_safe() {
    let Some(node) = node().await else { return };
    let rpc = EthRpc::new(&node.url, chain(), Retry::default()).unwrap();
    let (relayer, contracts) = safe_contracts(&rpc).await;
    for a in [contracts.singleton, contracts.factory, contracts.fallback_handler] {
        assert!(safe_node::has_code(&rpc, a).await.unwrap(), "{a}");
    }
    // The same addresses again, and nothing sent: the deterministic deployer put them there.
    let nonce = |a: EthAddress| {
        let rpc = rpc.clone();
        async move {
            let n = rpc.call("eth_getTransactionCount", json!([a.to_string(), "latest"])).await;
            u64::from_str_radix(n.unwrap().as_str().unwrap().trim_start_matches("0x"), 16).unwrap()
        }
    };
    let sent = nonce(relayer.address()).await;
    assert_eq!(sent, 3, "one transaction per contract");
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    assert_eq!(anvil::deploy_safe_contracts(&rpc, &relayer, root).await.unwrap(), contracts);
    assert_eq!(nonce(relayer.address()).await, sent);
    // The factory's proxy creation code is the npm artifact's SafeProxy.
    let code = safe_node::proxy_creation_code(&rpc, contracts.factory).await.unwrap();
    assert_eq!(code, anvil::safe_proxy_creation_code(root).unwrap());
    // The npm artifacts are Safe 1.4.1's release: the contracts' code hashes are those of the
    // canonical deployment, and so is the init code of a proxy for the canonical singleton.
    safe_node::check_contracts(&rpc, &contracts).await.unwrap();
    let mut init = code.clone();
    init.extend_from_slice(&[0u8; 12]);
    init.extend_from_slice(SafeContracts::CANONICAL.singleton.as_slice());
    assert_eq!(
        hex::encode(keccak(&init)),
        "76733d705f71b79841c0ee960a0ca880f779cde7ef446c989e6d23efc0a4adfb"
    );
    // Contracts that are not the release are refused before anything is sent, and so are
    // the canonical addresses on a chain that does not have them.
    let fake = SafeContracts { factory: contracts.fallback_handler, ..contracts };
    let e = safe_node::check_contracts(&rpc, &fake).await.unwrap_err().to_string();
    assert!(e.contains("is not Safe 1.4.1's SafeProxyFactory"), "{e}");
    let e = safe_node::check_contracts(&rpc, &SafeContracts::CANONICAL).await.unwrap_err();
    assert!(e.to_string().contains("deploy-safe-contracts"), "{e}");

    let owners: Vec<EthAddress> = (1u8..=3).map(|n| EthAddress::repeat_byte(0x10 * n)).collect();
    let deployment = SafeDeployment::new(contracts, owners.clone(), 2, U256::from(7u64)).unwrap();
    // Known before deployment, from the factory's address, the salt and the code alone.
    let predicted = deployment.predict_address(&code);
    let mut packed = keccak(&deployment.initializer()).to_vec();
    packed.extend_from_slice(&U256::from(7u64).to_be_bytes::<32>());
    assert_eq!(
        deployment.salt().0,
        keccak(&packed),
        "keccak256(keccak256(initializer) || saltNonce)"
    );
    assert!(!safe_node::has_code(&rpc, predicted).await.unwrap());
    assert_eq!(safe_node::predict_safe(&rpc, &deployment).await.unwrap(), predicted);

    let safe = safe_node::deploy_safe(&rpc, &relayer, &deployment).await.unwrap();
    assert_eq!(safe.address, predicted, "the factory's ProxyCreation names the predicted address");
    assert_eq!(safe_node::code_hash_at(&rpc, predicted).await.unwrap(), code_hash::PROXY);
    let tx = safe.created_by.as_ref().expect("a creation transaction");
    // The outer transaction is the relayer's own EIP-1559 transaction to the factory, and
    // the relayer is none of the accounts the node unlocks.
    assert_eq!(tx.from, relayer.address());
    assert_eq!(
        tx_field(&rpc, &tx.txid, "from").await.parse::<EthAddress>().unwrap(),
        relayer.address()
    );
    assert_eq!(tx_field(&rpc, &tx.txid, "type").await, "0x2");
    assert_eq!(
        tx_field(&rpc, &tx.txid, "to").await.parse::<EthAddress>().unwrap(),
        contracts.factory
    );
    let unlocked = rpc.call("eth_accounts", json!([])).await.unwrap();
    assert!(!unlocked.as_array().unwrap().iter().any(|a| a
        .as_str()
        .unwrap()
        .parse::<EthAddress>()
        .unwrap()
        == relayer.address()));

    // A valid Safe: what it says of itself, read with plain calls.
    let call = |data: Vec<u8>| {
        let rpc = rpc.clone();
        async move { safe_node::eth_call(&rpc, predicted, &data).await.unwrap() }
    };
    let got = ISafe::getOwnersCall::abi_decode_returns(&call(get_owners_calldata()).await).unwrap();
    assert_eq!(got, owners, "getOwners, in the order given");
    let threshold = call(get_threshold_calldata()).await;
    assert_eq!(U256::from_be_slice(&threshold), U256::from(2u64), "getThreshold");
    let version = ISafe::VERSIONCall::abi_decode_returns(&call(version_calldata()).await).unwrap();
    assert_eq!(version, "1.4.1");
    let slot = rpc
        .call(
            "eth_getStorageAt",
            json!([predicted.to_string(), format!("{FALLBACK_HANDLER_STORAGE_SLOT:#x}"), "latest"]),
        )
        .await
        .unwrap();
    let slot: alloy_primitives::B256 = slot.as_str().unwrap().parse().unwrap();
    assert_eq!(EthAddress::from_word(slot), contracts.fallback_handler, "fallback handler slot");
    let state = safe_node::read_safe(&rpc, predicted).await.unwrap();
    assert_eq!((state.nonce, state.threshold, state.version.as_str()), (0, 2, "1.4.1"));
    assert_eq!(state.singleton, contracts.singleton);
    // What is not a SafeProxy in front of a release singleton is not read as a Safe: the
    // singleton itself, another contract, an account.
    for a in [contracts.singleton, contracts.factory, EthAddress::repeat_byte(0x77)] {
        let e = safe_node::read_safe(&rpc, a).await.unwrap_err().to_string();
        assert!(e.contains("is not a Safe"), "{e}");
    }

    // Deploying the same again finds it and sends nothing; another salt nonce, another Safe.
    let sent = nonce(relayer.address()).await;
    let again = safe_node::deploy_safe(&rpc, &relayer, &deployment).await.unwrap();
    assert!(again.created_by.is_none());
    assert_eq!((again.address, nonce(relayer.address()).await), (predicted, sent));
    let other = SafeDeployment::new(contracts, owners.clone(), 2, U256::from(8u64)).unwrap();
    assert_ne!(other.predict_address(&code), predicted);

    // What `setup` would refuse is refused before anything is sent.
    for (owners, threshold, why) in [
        (vec![owners[0], owners[0]], 1, "named twice"),
        (owners.clone(), 0, "threshold"),
        (owners.clone(), 4, "threshold"),
        (vec![], 1, "0 owners"),
        (vec![EthAddress::with_last_byte(1)], 1, "cannot be an owner"),
    ] {
        let e = SafeDeployment::new(contracts, owners, threshold, U256::ZERO).unwrap_err();
        assert!(e.to_string().contains(why), "{e}");
    }
    node.stop().await;
}

/// A relayer without enough ETH for the gas is refused with the amounts and what to do,
/// before anything is signed or sent; so is a fee above the caller's cap, and a call the
/// node's simulation says would fail.
#[tokio::test]
async fn a_relayer_short_of_gas_money_is_refused_before_sending() {
    let Some(node) = node().await else { return };
    let rpc = EthRpc::new(&node.url, chain(), Retry::default()).unwrap();
    let (_, contracts) = safe_contracts(&rpc).await;
    let poor = RelayerKey::from_hex(&"a1".repeat(32)).unwrap();
    let deployment =
        SafeDeployment::new(contracts, vec![EthAddress::repeat_byte(0x44)], 1, U256::ZERO).unwrap();
    let relay = Relay {
        to: Some(contracts.factory),
        data: deployment.create_calldata(),
        fee_cap_wei: None,
    };
    for balance in ["0x0", "0x3e8"] {
        rpc.call("anvil_setBalance", json!([poor.address().to_string(), balance])).await.unwrap();
        let e = relayer::submit(&rpc, &poor, &relay, Duration::from_secs(5)).await.unwrap_err();
        let RelayError::Underfunded { relayer, balance_wei, needed_wei, .. } = &e else {
            panic!("{e}")
        };
        assert_eq!(*relayer, poor.address());
        assert_eq!(
            *balance_wei,
            u128::from_str_radix(balance.trim_start_matches("0x"), 16).unwrap()
        );
        assert!(*needed_wei > *balance_wei);
        let text = e.to_string();
        assert!(
            text.contains(&format!("the relayer {}", poor.address()))
                && text.contains("send the relayer ETH for gas"),
            "{text}"
        );
        let e = safe_node::deploy_safe(&rpc, &poor, &deployment).await.unwrap_err();
        assert!(matches!(e, RelayError::Underfunded { .. }), "{e}");
    }
    let sent = rpc.call("eth_getTransactionCount", json!([poor.address().to_string(), "latest"]));
    assert_eq!(sent.await.unwrap(), "0x0", "nothing was sent");
    let predicted = safe_node::predict_safe(&rpc, &deployment).await.unwrap();
    assert!(!safe_node::has_code(&rpc, predicted).await.unwrap());

    // Funded, but the caller allows less fee than the network asks.
    rpc.call("anvil_setBalance", json!([poor.address().to_string(), "0xde0b6b3a7640000"]))
        .await
        .unwrap();
    let capped = Relay { fee_cap_wei: Some(1_000), ..relay.clone() };
    let e = relayer::submit(&rpc, &poor, &capped, Duration::from_secs(5)).await.unwrap_err();
    assert!(matches!(e, RelayError::FeeAboveCap { cap_wei: 1_000, .. }), "{e}");
    // A call that reverts is found by the node's simulation: not sent, nothing paid.
    let garbage = Relay {
        to: Some(contracts.factory),
        data: vec![0xde, 0xad, 0xbe, 0xef],
        fee_cap_wei: None,
    };
    let e = relayer::submit(&rpc, &poor, &garbage, Duration::from_secs(5)).await.unwrap_err();
    assert!(matches!(e, RelayError::WouldFail(_)), "{e}");
    let sent = rpc.call("eth_getTransactionCount", json!([poor.address().to_string(), "latest"]));
    assert_eq!(sent.await.unwrap(), "0x0", "nothing was sent");
    // With the money and no cap, the same creation goes through.
    let made = relayer::submit(&rpc, &poor, &relay, Duration::from_secs(10)).await.unwrap();
    assert_eq!(made.from, poor.address());
    assert!(safe_node::has_code(&rpc, predicted).await.unwrap());
    node.stop().await;
}
