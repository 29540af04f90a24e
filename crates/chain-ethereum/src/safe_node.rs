//! A Safe on a node: read what a deployed Safe says of itself, deploy a new one through the
//! standard `SafeProxyFactory` (its address predicted first and checked after), and execute
//! an owner-signed Safe transaction. Every transaction here is signed and paid for by the
//! [relayer](crate::relayer), never by an account the node unlocks.

use std::time::Duration;

use alloy_primitives::{Address as EthAddress, B256, U256};
use alloy_sol_types::{SolCall, SolEvent};
use serde_json::{json, Value};
use strongroom_chain::ClientError;

use crate::relayer::{submit, Relay, RelayError, Relayed, RelayerKey};
use crate::rpc::EthRpc;
use crate::safe::code_hash;
use crate::safe::{
    get_owners_calldata, get_threshold_calldata, nonce_calldata, version_calldata, ISafe,
    ISafeProxyFactory, SafeContracts, SafeDeployment, FALLBACK_HANDLER_STORAGE_SLOT, SAFE_VERSION,
};

/// How long to wait for a relayed transaction to be mined.
pub const MINED_WITHIN: Duration = Duration::from_secs(60);

/// What a deployed Safe reports about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SafeState {
    pub owners: Vec<EthAddress>,
    pub threshold: u64,
    pub nonce: u64,
    pub version: String,
    /// The fallback handler, from its storage slot.
    pub fallback_handler: EthAddress,
    /// The singleton the proxy delegates to (storage slot 0), whose code is a Safe 1.4.1
    /// release singleton's.
    pub singleton: EthAddress,
}

/// The outcome of [`deploy_safe`].
#[derive(Debug, Clone)]
pub struct DeployedSafe {
    pub address: EthAddress,
    /// The factory's creation transaction; `None` when the Safe was already there.
    pub created_by: Option<Relayed>,
    pub state: SafeState,
}

fn node_said(what: String) -> RelayError {
    RelayError::Node(ClientError { message: what, retryable: false })
}

/// `eth_call` of `data` on `to` at the latest block: the returned bytes.
pub async fn eth_call(rpc: &EthRpc, to: EthAddress, data: &[u8]) -> Result<Vec<u8>, ClientError> {
    let call =
        json!([{"to": to.to_string(), "data": format!("0x{}", hex::encode(data))}, "latest"]);
    let r = rpc.call("eth_call", call).await?;
    let text = r.as_str().unwrap_or_default();
    hex::decode(text.trim_start_matches("0x"))
        .map_err(|e| ClientError { message: format!("eth_call: {e}"), retryable: false })
}

/// Whether `address` holds code.
pub async fn has_code(rpc: &EthRpc, address: EthAddress) -> Result<bool, ClientError> {
    let code = rpc.call("eth_getCode", json!([address.to_string(), "latest"])).await?;
    Ok(code.as_str().is_some_and(|c| c.len() > 2))
}

/// keccak256 of the code at `address` (that of no code when there is none).
pub async fn code_hash_at(rpc: &EthRpc, address: EthAddress) -> Result<B256, ClientError> {
    let code = rpc.call("eth_getCode", json!([address.to_string(), "latest"])).await?;
    let code = hex::decode(code.as_str().unwrap_or_default().trim_start_matches("0x"))
        .map_err(|e| ClientError { message: format!("eth_getCode: {e}"), retryable: false })?;
    Ok(alloy_primitives::keccak256(code))
}

/// Check that `contracts` are Safe 1.4.1's release contracts by their code (see
/// [`code_hash`]): a chain where those addresses hold something else, or a factory that
/// only claims to be one, is refused before a Safe is created with them.
pub async fn check_contracts(rpc: &EthRpc, contracts: &SafeContracts) -> Result<(), RelayError> {
    let singletons = [code_hash::SINGLETON, code_hash::SINGLETON_L2];
    for (what, address, expected) in [
        ("Safe singleton", contracts.singleton, &singletons[..]),
        ("SafeProxyFactory", contracts.factory, &[code_hash::FACTORY][..]),
        (
            "CompatibilityFallbackHandler",
            contracts.fallback_handler,
            &[code_hash::FALLBACK_HANDLER][..],
        ),
    ] {
        if !has_code(rpc, address).await? {
            return Err(node_said(format!(
                "no {what} at {address} on this chain (on a dev node, deploy the Safe contracts \
                 first: `strongroom cold deploy-safe-contracts`)"
            )));
        }
        let got = code_hash_at(rpc, address).await?;
        if !expected.contains(&got) {
            return Err(node_said(format!(
                "the contract at {address} is not Safe {SAFE_VERSION}'s {what} (its code hashes \
                 to {got})"
            )));
        }
    }
    Ok(())
}

/// Storage word `slot` of `address`.
async fn storage_word(rpc: &EthRpc, address: EthAddress, slot: B256) -> Result<B256, RelayError> {
    let word = rpc
        .call("eth_getStorageAt", json!([address.to_string(), format!("{slot:#x}"), "latest"]))
        .await?;
    word.as_str()
        .and_then(|s| s.parse::<B256>().ok())
        .ok_or_else(|| node_said(format!("eth_getStorageAt returned {word}")))
}

/// What the Safe at `safe` says of itself: owners, threshold, nonce, `VERSION`, fallback
/// handler and singleton. Refused unless it is a `SafeProxy` in front of a Safe 1.4.1
/// singleton (by their code, [`code_hash`]): a contract that only answers like a Safe is
/// not one.
pub async fn read_safe(rpc: &EthRpc, safe: EthAddress) -> Result<SafeState, RelayError> {
    let not_safe = |what: &str, e: String| node_said(format!("{safe} is not a Safe ({what}: {e})"));
    let code = code_hash_at(rpc, safe).await?;
    if code != code_hash::PROXY {
        return Err(not_safe(
            "code",
            format!("not a Safe {SAFE_VERSION} proxy; its code hashes to {code}"),
        ));
    }
    // A SafeProxy keeps its singleton's address in storage slot 0.
    let singleton = EthAddress::from_word(storage_word(rpc, safe, B256::ZERO).await?);
    let code = code_hash_at(rpc, singleton).await?;
    if code != code_hash::SINGLETON && code != code_hash::SINGLETON_L2 {
        return Err(not_safe(
            "singleton",
            format!(
                "{singleton} is not a Safe {SAFE_VERSION} singleton; its code hashes to {code}"
            ),
        ));
    }
    let owners = ISafe::getOwnersCall::abi_decode_returns(
        &eth_call(rpc, safe, &get_owners_calldata()).await?,
    )
    .map_err(|e| not_safe("getOwners", e.to_string()))?;
    let word = |b: Vec<u8>, what: &str| -> Result<u64, RelayError> {
        let v = U256::try_from_be_slice(&b)
            .ok_or_else(|| not_safe(what, format!("{} bytes", b.len())))?;
        u64::try_from(v).map_err(|_| not_safe(what, v.to_string()))
    };
    let threshold = word(eth_call(rpc, safe, &get_threshold_calldata()).await?, "getThreshold")?;
    let nonce = word(eth_call(rpc, safe, &nonce_calldata()).await?, "nonce")?;
    let version =
        ISafe::VERSIONCall::abi_decode_returns(&eth_call(rpc, safe, &version_calldata()).await?)
            .map_err(|e| not_safe("VERSION", e.to_string()))?;
    let fallback_handler =
        EthAddress::from_word(storage_word(rpc, safe, FALLBACK_HANDLER_STORAGE_SLOT).await?);
    Ok(SafeState { owners, threshold, nonce, version, fallback_handler, singleton })
}

/// The proxy creation code the factory at `factory` deploys (`proxyCreationCode()`), which
/// [`SafeDeployment::predict_address`] needs, read from the chain as Safe's tools read it.
pub async fn proxy_creation_code(rpc: &EthRpc, factory: EthAddress) -> Result<Vec<u8>, RelayError> {
    if !has_code(rpc, factory).await? {
        return Err(node_said(format!(
            "no SafeProxyFactory at {factory} on this chain (on a dev node, deploy the Safe \
             contracts first: `strongroom cold deploy-safe-contracts`)"
        )));
    }
    let out =
        eth_call(rpc, factory, &ISafeProxyFactory::proxyCreationCodeCall {}.abi_encode()).await?;
    let code = ISafeProxyFactory::proxyCreationCodeCall::abi_decode_returns(&out)
        .map_err(|e| node_said(format!("{factory} is not a SafeProxyFactory: {e}")))?;
    Ok(code.to_vec())
}

/// The address `deployment` will have (or has), without sending anything.
pub async fn predict_safe(
    rpc: &EthRpc,
    deployment: &SafeDeployment,
) -> Result<EthAddress, RelayError> {
    let code = proxy_creation_code(rpc, deployment.contracts().factory).await?;
    Ok(deployment.predict_address(&code))
}

/// Check that the Safe at `safe`, which reports `state` ([`read_safe`] checked its code), is
/// the one `deployment` describes: its singleton, owners, threshold, fallback handler and
/// version.
fn check_deployed(
    safe: EthAddress,
    state: &SafeState,
    deployment: &SafeDeployment,
) -> Result<(), RelayError> {
    let wrong = |what: String| node_said(format!("the Safe at {safe} {what}"));
    let singleton = state.singleton;
    if singleton != deployment.contracts().singleton {
        return Err(wrong(format!(
            "delegates to {singleton}, not {}",
            deployment.contracts().singleton
        )));
    }
    if state.owners != deployment.owners() {
        return Err(wrong(format!("has owners {:?}, not {:?}", state.owners, deployment.owners())));
    }
    if state.threshold != deployment.threshold() {
        return Err(wrong(format!(
            "has threshold {}, not {}",
            state.threshold,
            deployment.threshold()
        )));
    }
    if state.fallback_handler != deployment.contracts().fallback_handler {
        return Err(wrong(format!("has fallback handler {}", state.fallback_handler)));
    }
    if state.version != SAFE_VERSION {
        return Err(wrong(format!("is version {}, not {}", state.version, SAFE_VERSION)));
    }
    Ok(())
}

/// Deploy `deployment` through its factory, the relayer signing and paying: the address is
/// predicted first (`CREATE2`), the factory's `ProxyCreation` event must name that address,
/// and the new Safe must then report the owners, threshold, fallback handler and version
/// asked for. A Safe already at the predicted address (the same owners, threshold and salt
/// nonce were deployed before) is checked the same way and returned without a transaction.
pub async fn deploy_safe(
    rpc: &EthRpc,
    relayer: &RelayerKey,
    deployment: &SafeDeployment,
) -> Result<DeployedSafe, RelayError> {
    let contracts = deployment.contracts();
    check_contracts(rpc, contracts).await?;
    let predicted = predict_safe(rpc, deployment).await?;
    if has_code(rpc, predicted).await? {
        let state = read_safe(rpc, predicted).await?;
        check_deployed(predicted, &state, deployment)?;
        return Ok(DeployedSafe { address: predicted, created_by: None, state });
    }
    let relay = Relay {
        to: Some(contracts.factory),
        data: deployment.create_calldata(),
        fee_cap_wei: None,
    };
    let relayed = submit(rpc, relayer, &relay, MINED_WITHIN).await?;
    let created = proxy_created(&relayed.receipt, contracts.factory)?;
    if created != predicted {
        return Err(RelayError::Internal(format!(
            "the factory created {created}, but CREATE2 predicted {predicted}"
        )));
    }
    let state = read_safe(rpc, created).await?;
    check_deployed(created, &state, deployment)?;
    Ok(DeployedSafe { address: created, created_by: Some(relayed), state })
}

/// The proxy the factory's `ProxyCreation` event in `receipt` names.
fn proxy_created(receipt: &Value, factory: EthAddress) -> Result<EthAddress, RelayError> {
    let logs = receipt.get("logs").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
    for log in logs {
        let from_factory =
            log.get("address").and_then(Value::as_str).and_then(|a| a.parse::<EthAddress>().ok())
                == Some(factory);
        if !from_factory {
            continue;
        }
        let topics = crate::rpc::log_topics(log);
        let data = log.get("data").and_then(Value::as_str).unwrap_or_default();
        let data = hex::decode(data.trim_start_matches("0x")).unwrap_or_default();
        if let Ok(event) = ISafeProxyFactory::ProxyCreation::decode_raw_log(topics, &data) {
            return Ok(event.proxy);
        }
    }
    Err(node_said(format!("the factory's receipt has no ProxyCreation event: {receipt}")))
}

/// Send `exec_calldata` (an `execTransaction` with the owners' signatures) to the Safe at
/// `safe` through the relayer, keeping the whole network fee within `fee_cap_wei`. The
/// relayer pays the gas; the Safe pays what its owners signed, and nothing if they did not.
pub async fn execute(
    rpc: &EthRpc,
    relayer: &RelayerKey,
    safe: EthAddress,
    exec_calldata: Vec<u8>,
    fee_cap_wei: u128,
) -> Result<Relayed, RelayError> {
    let relay = Relay { to: Some(safe), data: exec_calldata, fee_cap_wei: Some(fee_cap_wei) };
    let relayed = submit(rpc, relayer, &relay, MINED_WITHIN).await?;
    // With safeTxGas and gasPrice 0 (all the signers sign), a failing inner call reverts the
    // whole transaction (GS013); a Safe that emitted no ExecutionSuccess did not execute.
    if !has_event(&relayed.receipt, safe, ISafe::ExecutionSuccess::SIGNATURE_HASH) {
        return Err(RelayError::Reverted { txid: relayed.txid });
    }
    Ok(relayed)
}

fn has_event(receipt: &Value, emitter: EthAddress, topic0: B256) -> bool {
    receipt.get("logs").and_then(Value::as_array).into_iter().flatten().any(|log| {
        log.get("address").and_then(Value::as_str).and_then(|a| a.parse::<EthAddress>().ok())
            == Some(emitter)
            && log
                .get("topics")
                .and_then(Value::as_array)
                .and_then(|t| t.first())
                .and_then(Value::as_str)
                .and_then(|t| t.parse::<B256>().ok())
                == Some(topic0)
    })
}
