//! The relayer: an Ethereum account of the online side that submits Safe transactions (and
//! a new Safe's creation) as EIP-1559 transactions it signs itself and sends with
//! `eth_sendRawTransaction`. No node needs to unlock an account for it.
//!
//! The relayer pays gas and nothing else. It is not an owner of any Safe: a Safe moves funds
//! only on its owners' signatures, which travel inside the call data the relayer carries
//! (`execTransaction` checks them), so a stolen relayer key can spend the relayer's gas
//! money but not a coin of the Safe's. The key lives in a file (64 hex digits, mode 0600)
//! that [`RelayerKey::write_new`] makes; in memory it is zeroized on drop and never printed.
//!
//! What this module does not do: decide whether a movement is allowed (the governance gate
//! and the offline signers do), or check what the call data does (the Safe's owners signed
//! it; [`crate::safe::check_safe_tx`] is what they ran).

use std::path::{Path, PathBuf};
use std::time::Duration;

use alloy_consensus::{SignableTransaction, TxEip1559};
use alloy_eips::eip2718::Encodable2718;
use alloy_primitives::{Address as EthAddress, Signature, TxKind, U256};
use k256::elliptic_curve::zeroize::Zeroizing;
use serde_json::{json, Value};
use strongroom_chain::{ChainClient, ClientError, SignedTx};
use strongroom_core::Env;

use crate::rpc::EthRpc;

/// Why a relayed transaction was not made, sent or mined.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RelayError {
    /// The key file is missing, unreadable, too open or not a key (the operator's to fix).
    #[error("relayer key file {path}: {why}")]
    KeyFile { path: PathBuf, why: String },
    /// The relayer cannot pay for the gas this transaction may use.
    #[error(
        "the relayer {relayer} holds {balance_wei} wei but this transaction may cost up to \
         {needed_wei} wei in gas ({gas_limit} gas at up to {max_fee_per_gas} wei): send the \
         relayer ETH for gas (it pays gas only; the Safe pays the withdrawal)"
    )]
    Underfunded {
        relayer: EthAddress,
        balance_wei: u128,
        needed_wei: u128,
        gas_limit: u64,
        max_fee_per_gas: u128,
    },
    /// The fee the network asks now is above what the caller allows (the intent's fee cap).
    #[error(
        "the network fee now is at least {min_fee_wei} wei ({gas_limit} gas), above the cap of \
         {cap_wei} wei: try again when fees are lower, or raise the cap in a new intent"
    )]
    FeeAboveCap { min_fee_wei: u128, cap_wei: u128, gas_limit: u64 },
    /// The node simulated the transaction and it fails (bad owner signatures, a spent Safe
    /// nonce, too little in the Safe): nothing was sent.
    #[error("the transaction would fail, so it was not sent: {0}")]
    WouldFail(String),
    /// It was mined and reverted: the relayer paid the gas, the Safe moved nothing.
    #[error("transaction {txid} from the relayer was mined and reverted")]
    Reverted { txid: String },
    /// It was sent and is not in a block yet: it may still be mined (the same signed
    /// transaction is safe to send again).
    #[error("transaction {txid} was sent but not mined within {waited_s} s")]
    NotMined { txid: String, waited_s: u64 },
    /// The node failed or refused a call.
    #[error("node: {0}")]
    Node(#[from] ClientError),
    /// A bug or an impossible value (an overflowing fee, a signature that does not verify).
    #[error("internal: {0}")]
    Internal(String),
}

/// The relayer's secp256k1 key. Zeroized on drop; `Debug` shows its address only.
pub struct RelayerKey {
    key: k256::ecdsa::SigningKey,
    address: EthAddress,
}

impl std::fmt::Debug for RelayerKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RelayerKey")
            .field("address", &self.address)
            .field("key", &"<redacted>")
            .finish()
    }
}

impl RelayerKey {
    /// A fresh key from `env`'s randomness.
    pub fn generate(env: &dyn Env) -> Result<Self, RelayError> {
        // A random 32-byte string is a valid scalar but with probability ~2^-128; a few
        // draws bound the loop.
        for _ in 0..8 {
            let mut bytes = Zeroizing::new([0u8; 32]);
            env.fill_random(bytes.as_mut());
            if let Ok(key) = k256::ecdsa::SigningKey::from_slice(bytes.as_ref()) {
                return Ok(Self::from_signing_key(key));
            }
        }
        Err(RelayError::Internal("the random source gave no valid key in 8 draws".into()))
    }

    fn from_signing_key(key: k256::ecdsa::SigningKey) -> Self {
        let address = EthAddress::from_public_key(key.verifying_key());
        RelayerKey { key, address }
    }

    /// A key written as 64 hex digits (an optional `0x` and surrounding whitespace ignored).
    pub fn from_hex(text: &str) -> Result<Self, String> {
        let mut bytes = Zeroizing::new([0u8; 32]);
        let digits = text.trim();
        let digits = digits.strip_prefix("0x").unwrap_or(digits);
        hex::decode_to_slice(digits, bytes.as_mut())
            .map_err(|_| "expected 64 hex digits".to_owned())?;
        let key = k256::ecdsa::SigningKey::from_slice(bytes.as_ref())
            .map_err(|_| "not a valid secp256k1 key".to_owned())?;
        Ok(Self::from_signing_key(key))
    }

    /// Read the key file at `path`. Refused on Unix when its group or others may read it,
    /// as `ssh` refuses such a key: `chmod 600` it.
    pub fn from_file(path: &Path) -> Result<Self, RelayError> {
        let fail = |why: String| RelayError::KeyFile { path: path.to_owned(), why };
        let meta = std::fs::metadata(path).map_err(|e| fail(e.to_string()))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                return Err(fail(format!(
                    "mode {mode:o} lets others read it; it must be 600 (chmod 600 {})",
                    path.display()
                )));
            }
        }
        if !meta.is_file() {
            return Err(fail("not a file".into()));
        }
        let text = Zeroizing::new(std::fs::read_to_string(path).map_err(|e| fail(e.to_string()))?);
        Self::from_hex(&text).map_err(fail)
    }

    /// Write this key to a new file at `path` with mode 0600 (refused if the file exists).
    pub fn write_new(&self, path: &Path) -> Result<(), RelayError> {
        use std::io::Write;
        let fail = |why: String| RelayError::KeyFile { path: path.to_owned(), why };
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        // The key and its hex text live only in buffers that are wiped when dropped.
        let secret = Zeroizing::new(self.key.to_bytes());
        let mut text = Zeroizing::new([0u8; 65]);
        let (digits, newline) = text.split_at_mut(64);
        hex::encode_to_slice(secret.as_slice(), digits)
            .map_err(|e| RelayError::Internal(format!("hex: {e}")))?;
        if let Some(b) = newline.first_mut() {
            *b = b'\n';
        }
        let mut file = options.open(path).map_err(|e| fail(e.to_string()))?;
        let written = file.write_all(text.as_slice()).and_then(|()| file.sync_all());
        if let Err(e) = written {
            drop(file);
            let _ = std::fs::remove_file(path);
            return Err(fail(e.to_string()));
        }
        Ok(())
    }

    /// The relayer's Ethereum address: the one to fund with gas money.
    pub fn address(&self) -> EthAddress {
        self.address
    }

    /// Sign `tx` (EIP-1559) with this key: the raw transaction and its id.
    pub fn sign(&self, tx: TxEip1559) -> Result<SignedTx, RelayError> {
        let hash = tx.signature_hash();
        let (sig, recid) = self
            .key
            .sign_prehash_recoverable(hash.as_slice())
            .map_err(|e| RelayError::Internal(format!("signing: {e}")))?;
        // EIP-2: only the low-s form is valid; flipping s flips the recovered point's parity.
        let (sig, parity) = match sig.normalize_s() {
            Some(low) => (low, !recid.is_y_odd()),
            None => (sig, recid.is_y_odd()),
        };
        let signature = Signature::from_signature_and_parity(sig, parity);
        if signature.recover_address_from_prehash(&hash).ok() != Some(self.address) {
            return Err(RelayError::Internal(
                "the signature does not recover to the relayer".into(),
            ));
        }
        let signed = tx.into_signed(signature);
        let txid = format!("{:#x}", signed.hash());
        let raw = alloy_consensus::TxEnvelope::Eip1559(signed).encoded_2718();
        Ok(SignedTx { raw, txid })
    }
}

/// A transaction for the relayer to sign and send: a call (to a Safe, the factory) or a
/// contract creation (dev contracts), with no value: the relayer never pays anything but gas.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relay {
    /// `None` creates a contract from `data`.
    pub to: Option<EthAddress>,
    pub data: Vec<u8>,
    /// The most the whole fee may be, in wei (the intent's fee cap for a withdrawal).
    pub fee_cap_wei: Option<u128>,
}

/// A relayed transaction, mined and successful.
#[derive(Debug, Clone)]
pub struct Relayed {
    pub txid: String,
    /// The relayer: the transaction's `from`.
    pub from: EthAddress,
    pub block: u64,
    pub gas_used: u64,
    /// What the relayer paid, in wei.
    pub fee_paid_wei: u128,
    /// The created contract, for a creation.
    pub contract_address: Option<EthAddress>,
    /// The node's receipt, as it sent it (its logs, for callers that read events).
    pub receipt: Value,
}

/// Headroom over the node's gas estimate: a quarter more (Safe's own tools add a margin too;
/// `execTransaction` needs some gas left after the inner call).
fn with_headroom(estimate: u64) -> u64 {
    estimate.saturating_add(estimate / 4).saturating_add(10_000)
}

/// Simulate, price, sign and send `relay` from `key`'s account through `rpc`, then wait up
/// to `wait` for it to be mined. Nothing is sent when the node's simulation fails, when the
/// fee would pass `relay.fee_cap_wei`, or when the relayer holds too little ETH for the gas.
pub async fn submit(
    rpc: &EthRpc,
    key: &RelayerKey,
    relay: &Relay,
    wait: Duration,
) -> Result<Relayed, RelayError> {
    rpc.check_chain().await?;
    let from = key.address();
    let data = format!("0x{}", hex::encode(&relay.data));
    let mut call = json!({"from": from.to_string(), "data": data, "value": "0x0"});
    if let (Some(to), Some(obj)) = (relay.to, call.as_object_mut()) {
        obj.insert("to".into(), Value::String(to.to_string()));
    }
    // The node runs it first: a call that would revert (bad owner signatures, a spent nonce)
    // costs the relayer nothing.
    let estimate = rpc.call("eth_estimateGas", json!([call])).await.map_err(|e| {
        if e.retryable {
            RelayError::Node(e)
        } else {
            RelayError::WouldFail(e.message)
        }
    })?;
    let gas_limit = with_headroom(quantity(&estimate)?);
    let quote = rpc.fee_quote().await?;
    let tip = quote.max_priority_fee_per_gas;
    let floor = quote.base_fee_per_gas.checked_add(tip).ok_or_else(overflow)?;
    let mut max_fee_per_gas = quote
        .base_fee_per_gas
        .checked_mul(2)
        .and_then(|b| b.checked_add(tip))
        .ok_or_else(overflow)?;
    if let Some(cap) = relay.fee_cap_wei {
        // Offer as much above the floor as the cap leaves room for.
        let per_gas_cap = cap / u128::from(gas_limit.max(1));
        if per_gas_cap < floor {
            return Err(RelayError::FeeAboveCap {
                min_fee_wei: floor.saturating_mul(u128::from(gas_limit)),
                cap_wei: cap,
                gas_limit,
            });
        }
        max_fee_per_gas = max_fee_per_gas.min(per_gas_cap);
    }
    let needed_wei = u128::from(gas_limit).checked_mul(max_fee_per_gas).ok_or_else(overflow)?;
    let balance = rpc.call("eth_getBalance", json!([from.to_string(), "pending"])).await?;
    let balance_wei = u128::try_from(quantity_u256(&balance)?).unwrap_or(u128::MAX);
    if balance_wei < needed_wei {
        return Err(RelayError::Underfunded {
            relayer: from,
            balance_wei,
            needed_wei,
            gas_limit,
            max_fee_per_gas,
        });
    }
    let nonce = quantity(
        &rpc.call("eth_getTransactionCount", json!([from.to_string(), "pending"])).await?,
    )?;
    let tx = TxEip1559 {
        chain_id: rpc.codec().chain_id(),
        nonce,
        gas_limit,
        max_fee_per_gas,
        max_priority_fee_per_gas: tip.min(max_fee_per_gas),
        to: relay.to.map_or(TxKind::Create, TxKind::Call),
        value: U256::ZERO,
        access_list: Default::default(),
        input: relay.data.clone().into(),
    };
    let signed = key.sign(tx)?;
    tracing::info!(relayer = %from, txid = %signed.txid, gas_limit, max_fee_per_gas, "relaying a transaction");
    rpc.broadcast(&signed).await?;
    let receipt = wait_for_receipt(rpc, &signed.txid, wait).await?;
    if receipt.get("status").and_then(Value::as_str) != Some("0x1") {
        return Err(RelayError::Reverted { txid: signed.txid });
    }
    let gas_used = quantity(receipt.get("gasUsed").unwrap_or(&Value::Null))?;
    let price = quantity_u256(receipt.get("effectiveGasPrice").unwrap_or(&Value::Null))?;
    let fee_paid_wei = u128::try_from(price)
        .ok()
        .and_then(|p| p.checked_mul(u128::from(gas_used)))
        .ok_or_else(overflow)?;
    let contract_address = receipt
        .get("contractAddress")
        .and_then(Value::as_str)
        .and_then(|a| a.parse::<EthAddress>().ok());
    Ok(Relayed {
        txid: signed.txid,
        from,
        block: quantity(receipt.get("blockNumber").unwrap_or(&Value::Null))?,
        gas_used,
        fee_paid_wei,
        contract_address,
        receipt,
    })
}

/// Poll for `txid`'s receipt every 100 ms for up to `wait`.
pub async fn wait_for_receipt(
    rpc: &EthRpc,
    txid: &str,
    wait: Duration,
) -> Result<Value, RelayError> {
    let step = Duration::from_millis(100);
    let polls = wait.as_millis() / step.as_millis();
    for _ in 0..=polls {
        let r = rpc.call("eth_getTransactionReceipt", json!([txid])).await?;
        if !r.is_null() {
            return Ok(r);
        }
        tokio::time::sleep(step).await;
    }
    Err(RelayError::NotMined { txid: txid.to_owned(), waited_s: wait.as_secs() })
}

fn overflow() -> RelayError {
    RelayError::Internal("a fee overflows".into())
}

fn quantity_u256(v: &Value) -> Result<U256, RelayError> {
    let bad = || {
        RelayError::Node(ClientError {
            message: format!("expected a hex quantity, got {v}"),
            retryable: false,
        })
    };
    let s = v.as_str().ok_or_else(bad)?;
    let digits = s.strip_prefix("0x").ok_or_else(bad)?;
    U256::from_str_radix(digits, 16).map_err(|_| bad())
}

fn quantity(v: &Value) -> Result<u64, RelayError> {
    u64::try_from(quantity_u256(v)?).map_err(|_| {
        RelayError::Node(ClientError {
            message: format!("quantity {v} is too large"),
            retryable: false,
        })
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn a_signed_transaction_recovers_to_the_relayer_and_the_key_is_never_printed() {
        let key = RelayerKey::from_hex(&format!("0x{}", "07".repeat(32))).unwrap();
        let tx = TxEip1559 {
            chain_id: 31337,
            nonce: 3,
            gas_limit: 100_000,
            max_fee_per_gas: 3_000_000_000,
            max_priority_fee_per_gas: 1_000_000_000,
            to: TxKind::Call(EthAddress::repeat_byte(0x22)),
            value: U256::ZERO,
            access_list: Default::default(),
            input: vec![1, 2, 3].into(),
        };
        let signed = key.sign(tx).unwrap();
        use alloy_consensus::transaction::SignerRecoverable;
        use alloy_eips::eip2718::Decodable2718;
        let envelope =
            alloy_consensus::TxEnvelope::decode_2718(&mut signed.raw.as_slice()).unwrap();
        assert_eq!(envelope.recover_signer().unwrap(), key.address());
        assert_eq!(format!("{:#x}", envelope.tx_hash()), signed.txid);
        let shown = format!("{key:?}");
        assert!(shown.contains("<redacted>") && !shown.contains(&"07".repeat(32)), "{shown}");
    }

    #[test]
    fn key_files_are_made_private_and_open_ones_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("relayer.key");
        let env = strongroom_core::FixedEnv::new(strongroom_core::Timestamp::from_unix_ms(0), 9);
        let key = RelayerKey::generate(&env).unwrap();
        key.write_new(&path).unwrap();
        assert_eq!(RelayerKey::from_file(&path).unwrap().address(), key.address());
        let err = key.write_new(&path).unwrap_err().to_string();
        assert!(err.contains("exists"), "{err}");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
            let err = RelayerKey::from_file(&path).unwrap_err().to_string();
            assert!(err.contains("chmod 600"), "{err}");
        }
        let bad = dir.path().join("bad.key");
        std::fs::write(&bad, "not hex\n").unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&bad, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        let err = RelayerKey::from_file(&bad).unwrap_err().to_string();
        assert!(err.contains("64 hex digits") && !err.contains("not hex"), "{err}");
    }
}
