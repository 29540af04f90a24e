//! A JSON-RPC client for an Ethereum node, with retries for what may succeed later
//! (connection refused, timeouts, HTTP 5xx) and none for what the node refused.

use std::time::Duration;

use alloy_primitives::{Address as EthAddress, B256, U256};
use alloy_sol_types::{SolCall, SolEvent};
use async_trait::async_trait;
use serde_json::{json, Value};
use strongroom_chain::{BlockRef, ChainClient, ClientError, IncomingTransfer, SignedTx, TxStatus};
use strongroom_units::{Address, Amount, ChainId};

use crate::{eth_address, EthCodec, IERC20};

/// How often and how patiently to retry a call that failed for a reason that may pass.
#[derive(Debug, Clone, Copy)]
pub struct Retry {
    pub attempts: u32,
    pub first_delay: Duration,
    pub timeout: Duration,
}

impl Default for Retry {
    fn default() -> Self {
        Retry {
            attempts: 5,
            first_delay: Duration::from_millis(100),
            timeout: Duration::from_secs(10),
        }
    }
}

/// A node's JSON-RPC endpoint.
#[derive(Debug, Clone)]
pub struct EthRpc {
    url: String,
    http: reqwest::Client,
    codec: EthCodec,
    retry: Retry,
}

/// Fees the node suggests now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FeeQuote {
    pub base_fee_per_gas: u128,
    pub max_priority_fee_per_gas: u128,
}

impl EthRpc {
    /// A client for `url`; an `https://` endpoint must chain to the platform's trust roots.
    pub fn new(url: &str, chain: ChainId, retry: Retry) -> Result<Self, ClientError> {
        Self::with_ca(url, chain, retry, None)
    }

    /// A client for `url` that also trusts the CA certificates in `extra_ca_pem` (a private
    /// PKI's root, for an `https://` node inside the exchange).
    pub fn with_ca(
        url: &str,
        chain: ChainId,
        retry: Retry,
        extra_ca_pem: Option<&[u8]>,
    ) -> Result<Self, ClientError> {
        let mut builder = reqwest::Client::builder().use_rustls_tls().timeout(retry.timeout);
        if let Some(pem) = extra_ca_pem {
            let certs = reqwest::Certificate::from_pem_bundle(pem)
                .map_err(|e| fatal(format!("CA file: {e}")))?;
            if certs.is_empty() {
                return Err(fatal("CA file: no certificate in it".to_owned()));
            }
            for c in certs {
                builder = builder.add_root_certificate(c);
            }
        }
        let http = builder.build().map_err(|e| fatal(format!("HTTP client: {e}")))?;
        let codec = EthCodec::new(chain).map_err(|e| fatal(e.to_string()))?;
        Ok(EthRpc { url: url.to_owned(), http, codec, retry })
    }

    pub fn codec(&self) -> &EthCodec {
        &self.codec
    }

    /// One JSON-RPC call, retried with exponential backoff while the failure is retryable.
    pub async fn call(&self, method: &str, params: Value) -> Result<Value, ClientError> {
        let mut delay = self.retry.first_delay;
        let mut attempt = 1;
        loop {
            match self.call_once(method, &params).await {
                Err(e) if e.retryable && attempt < self.retry.attempts => {
                    tracing::warn!(method, attempt, error = %e.message, "node call failed, retrying");
                    tokio::time::sleep(delay).await;
                    delay = delay.saturating_mul(2);
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    async fn call_once(&self, method: &str, params: &Value) -> Result<Value, ClientError> {
        let body = json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params});
        let resp = self.http.post(&self.url).json(&body).send().await.map_err(|e| ClientError {
            message: format!("{method}: {}", with_causes(&e)),
            retryable: true,
        })?;
        let status = resp.status();
        if status.is_server_error() || status.as_u16() == 429 {
            return Err(ClientError {
                message: format!("{method}: HTTP {status}"),
                retryable: true,
            });
        }
        let v: Value = resp.json().await.map_err(|e| ClientError {
            message: format!("{method}: unreadable response: {e}"),
            retryable: status.is_server_error(),
        })?;
        if let Some(err) = v.get("error") {
            let msg = err.get("message").and_then(Value::as_str).unwrap_or("unknown error");
            return Err(fatal(format!("{method}: {msg}")));
        }
        v.get("result").cloned().ok_or_else(|| fatal(format!("{method}: no result")))
    }

    pub async fn chain_id(&self) -> Result<u64, ClientError> {
        quantity_u64(&self.call("eth_chainId", json!([])).await?)
    }

    /// Check that the node serves the chain this client was made for.
    pub async fn check_chain(&self) -> Result<(), ClientError> {
        let got = self.chain_id().await?;
        if got != self.codec.chain_id() {
            return Err(fatal(format!(
                "the node at {} serves chain id {got}, not {}",
                self.url,
                self.codec.chain_id()
            )));
        }
        Ok(())
    }

    /// The account's next nonce, counting transactions in the mempool (`pending`) or only
    /// mined ones (`latest`).
    pub async fn nonce(&self, address: &Address, pending: bool) -> Result<u64, ClientError> {
        let tag = if pending { "pending" } else { "latest" };
        quantity_u64(&self.call("eth_getTransactionCount", json!([address.as_str(), tag])).await?)
    }

    pub async fn fee_quote(&self) -> Result<FeeQuote, ClientError> {
        let block = self.call("eth_getBlockByNumber", json!(["latest", false])).await?;
        let base = quantity_u128(block.get("baseFeePerGas").unwrap_or(&Value::Null))?;
        let tip = quantity_u128(&self.call("eth_maxPriorityFeePerGas", json!([])).await?)?;
        Ok(FeeQuote { base_fee_per_gas: base, max_priority_fee_per_gas: tip })
    }

    /// Gas for a call from `from` to `to` with `data`, as the node estimates it.
    pub async fn estimate_gas(
        &self,
        from: &Address,
        to: &Address,
        value: u128,
        data: &[u8],
    ) -> Result<u64, ClientError> {
        let call = json!({
            "from": from.as_str(), "to": to.as_str(),
            "value": format!("{value:#x}"), "data": format!("0x{}", hex::encode(data)),
        });
        quantity_u64(&self.call("eth_estimateGas", json!([call])).await?)
    }

    async fn tx_known(&self, txid: &str) -> Result<bool, ClientError> {
        Ok(!self.call("eth_getTransactionByHash", json!([txid])).await?.is_null())
    }
}

#[async_trait]
impl ChainClient for EthRpc {
    async fn broadcast(&self, tx: &SignedTx) -> Result<String, ClientError> {
        let raw = format!("0x{}", hex::encode(&tx.raw));
        match self.call("eth_sendRawTransaction", json!([raw])).await {
            Ok(v) => {
                let id = v.as_str().unwrap_or_default().to_owned();
                if !id.eq_ignore_ascii_case(&tx.txid) {
                    return Err(fatal(format!("node returned id {id} for {}", tx.txid)));
                }
                Ok(tx.txid.clone())
            }
            // Sent before (in the mempool or mined): the same transaction is not an error.
            Err(e) if !e.retryable && self.tx_known(&tx.txid).await? => {
                tracing::info!(txid = %tx.txid, reason = %e.message, "transaction already known to the node");
                Ok(tx.txid.clone())
            }
            Err(e) => Err(e),
        }
    }

    async fn status(&self, txid: &str) -> Result<TxStatus, ClientError> {
        let receipt = self.call("eth_getTransactionReceipt", json!([txid])).await?;
        if receipt.is_null() {
            return Ok(if self.tx_known(txid).await? {
                TxStatus::Pending
            } else {
                TxStatus::Unknown
            });
        }
        let number = quantity_u64(field(&receipt, "blockNumber")?)?;
        let hash = field(&receipt, "blockHash")?.as_str().unwrap_or_default().to_owned();
        let head = self.head().await?;
        let gas_used = quantity_u128(field(&receipt, "gasUsed")?)?;
        let price = quantity_u128(field(&receipt, "effectiveGasPrice")?)?;
        let fee = gas_used.checked_mul(price).ok_or_else(|| fatal("fee overflows".into()))?;
        Ok(TxStatus::Included {
            block: BlockRef { number, hash },
            confirmations: head.number.saturating_sub(number).saturating_add(1),
            success: quantity_u64(field(&receipt, "status")?)? == 1,
            fee_paid: Amount::from_base_units(fee).map_err(|e| fatal(e.to_string()))?,
        })
    }

    async fn head(&self) -> Result<BlockRef, ClientError> {
        let number = quantity_u64(&self.call("eth_blockNumber", json!([])).await?)?;
        self.block(number).await?.ok_or_else(|| ClientError {
            message: format!("block {number} vanished (reorg in progress?)"),
            retryable: true,
        })
    }

    async fn block(&self, number: u64) -> Result<Option<BlockRef>, ClientError> {
        let b = self.call("eth_getBlockByNumber", json!([format!("{number:#x}"), false])).await?;
        if b.is_null() {
            return Ok(None);
        }
        let hash = field(&b, "hash")?.as_str().unwrap_or_default().to_owned();
        Ok(Some(BlockRef { number, hash }))
    }

    async fn balance(
        &self,
        address: &Address,
        contract: Option<&Address>,
    ) -> Result<Amount, ClientError> {
        let v = match contract {
            None => quantity_u256(
                &self.call("eth_getBalance", json!([address.as_str(), "latest"])).await?,
            )?,
            Some(token) => {
                let owner = eth_address(address).map_err(|e| fatal(e.to_string()))?;
                let data = IERC20::balanceOfCall { owner }.abi_encode();
                let call =
                    json!({"to": token.as_str(), "data": format!("0x{}", hex::encode(data))});
                let out = self.call("eth_call", json!([call, "latest"])).await?;
                let bytes = hex_bytes(&out)?;
                IERC20::balanceOfCall::abi_decode_returns(&bytes)
                    .map_err(|e| fatal(format!("balanceOf: {e}")))?
            }
        };
        let v = u128::try_from(v).map_err(|_| fatal("balance above 2^128".into()))?;
        Amount::from_base_units(v).map_err(|e| fatal(e.to_string()))
    }

    async fn incoming(
        &self,
        from: u64,
        to: u64,
        watched: &strongroom_chain::Watched,
        contracts: &[Address],
    ) -> Result<Vec<IncomingTransfer>, ClientError> {
        let mut out = Vec::new();
        if watched.is_empty() || from > to {
            return Ok(out);
        }
        let ours = |a: EthAddress| {
            self.codec.address(a).is_ok_and(|address| watched.contains_key(&address))
        };
        // Native coin: plain transfers to our addresses that succeeded.
        for number in from..=to {
            let b =
                self.call("eth_getBlockByNumber", json!([format!("{number:#x}"), true])).await?;
            if b.is_null() {
                break;
            }
            let block = BlockRef { number, hash: str_field(&b, "hash")? };
            let txs = b.get("transactions").and_then(Value::as_array).cloned().unwrap_or_default();
            for tx in txs {
                let Some(dest) =
                    tx.get("to").and_then(Value::as_str).and_then(|t| t.parse::<EthAddress>().ok())
                else {
                    continue;
                };
                let value = quantity_u256(field(&tx, "value")?)?;
                if value.is_zero() || !ours(dest) {
                    continue;
                }
                let txid = str_field(&tx, "hash")?;
                let receipt = self.call("eth_getTransactionReceipt", json!([txid])).await?;
                if quantity_u64(field(&receipt, "status")?)? != 1 {
                    continue;
                }
                let from_addr = tx
                    .get("from")
                    .and_then(Value::as_str)
                    .and_then(|t| t.parse::<EthAddress>().ok());
                out.push(IncomingTransfer {
                    block: block.clone(),
                    txid,
                    index: 0,
                    contract: None,
                    from: from_addr
                        .map(|a| self.codec.address(a))
                        .transpose()
                        .map_err(|e| fatal(e.to_string()))?,
                    to: self.codec.address(dest).map_err(|e| fatal(e.to_string()))?,
                    amount: amount(value)?,
                });
            }
        }
        // Tokens: Transfer events whose recipient is ours. A few addresses are named to the
        // node; many are matched here, over every transfer of the watched tokens.
        if !contracts.is_empty() {
            let recipients = if watched.len() <= NAMED_RECIPIENTS {
                let topic_to: Vec<String> = watched
                    .keys()
                    .filter_map(|a| eth_address(a).ok())
                    .map(|a| format!("{:#x}", B256::left_padding_from(a.as_slice())))
                    .collect();
                Value::from(topic_to)
            } else {
                Value::Null
            };
            let filter = json!({
                "fromBlock": format!("{from:#x}"), "toBlock": format!("{to:#x}"),
                "address": contracts.iter().map(|c| c.as_str()).collect::<Vec<_>>(),
                "topics": [format!("{:#x}", IERC20::Transfer::SIGNATURE_HASH), Value::Null, recipients],
            });
            let logs = self.call("eth_getLogs", json!([filter])).await?;
            for log in logs.as_array().cloned().unwrap_or_default() {
                if log.get("removed").and_then(Value::as_bool) == Some(true) {
                    continue;
                }
                let topics = log_topics(&log);
                let data = hex_bytes(field(&log, "data")?)?;
                let event = IERC20::Transfer::decode_raw_log(topics, &data)
                    .map_err(|e| fatal(format!("Transfer event: {e}")))?;
                if !ours(event.to) {
                    continue;
                }
                let contract: EthAddress =
                    str_field(&log, "address")?.parse().map_err(|_| fatal("log address".into()))?;
                let addr = |a: EthAddress| self.codec.address(a).map_err(|e| fatal(e.to_string()));
                out.push(IncomingTransfer {
                    block: BlockRef {
                        number: quantity_u64(field(&log, "blockNumber")?)?,
                        hash: str_field(&log, "blockHash")?,
                    },
                    txid: str_field(&log, "transactionHash")?,
                    index: quantity_u64(field(&log, "logIndex")?)?,
                    contract: Some(addr(contract)?),
                    from: Some(addr(event.from)?),
                    to: addr(event.to)?,
                    amount: amount(event.value)?,
                });
            }
        }
        Ok(out)
    }
}

/// Up to this many watched addresses are named to the node in a token-transfer filter;
/// beyond it, every transfer of the watched tokens is read and matched here.
const NAMED_RECIPIENTS: usize = 1_000;

/// An error and its causes, `: `-separated (reqwest names only the outermost: "error
/// sending request"; the cause says which certificate or connection failed).
pub fn with_causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut next = e.source();
    while let Some(cause) = next {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        next = cause.source();
    }
    text
}

fn fatal(message: String) -> ClientError {
    ClientError { message, retryable: false }
}

fn field<'a>(v: &'a Value, name: &str) -> Result<&'a Value, ClientError> {
    v.get(name).ok_or_else(|| fatal(format!("node response has no {name}")))
}

fn str_field(v: &Value, name: &str) -> Result<String, ClientError> {
    field(v, name)?
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| fatal(format!("{name} is not a string")))
}

fn quantity_u256(v: &Value) -> Result<U256, ClientError> {
    let s = v.as_str().ok_or_else(|| fatal(format!("expected a hex quantity, got {v}")))?;
    let digits = s.strip_prefix("0x").ok_or_else(|| fatal(format!("quantity without 0x: {s}")))?;
    U256::from_str_radix(digits, 16).map_err(|e| fatal(format!("quantity {s}: {e}")))
}

fn quantity_u128(v: &Value) -> Result<u128, ClientError> {
    u128::try_from(quantity_u256(v)?).map_err(|_| fatal(format!("quantity {v} is too large")))
}

fn quantity_u64(v: &Value) -> Result<u64, ClientError> {
    u64::try_from(quantity_u256(v)?).map_err(|_| fatal(format!("quantity {v} is too large")))
}

fn amount(v: U256) -> Result<Amount, ClientError> {
    let v = u128::try_from(v).map_err(|_| fatal("amount above 2^128".into()))?;
    Amount::from_base_units(v).map_err(|e| fatal(e.to_string()))
}

/// A JSON-RPC log's topics (those that are not 32-byte hex are left out).
pub(crate) fn log_topics(log: &Value) -> Vec<B256> {
    log.get("topics")
        .and_then(Value::as_array)
        .map(|t| t.iter().filter_map(|x| x.as_str()?.parse().ok()).collect())
        .unwrap_or_default()
}

fn hex_bytes(v: &Value) -> Result<Vec<u8>, ClientError> {
    let s = v.as_str().ok_or_else(|| fatal(format!("expected hex data, got {v}")))?;
    hex::decode(s.trim_start_matches("0x")).map_err(|e| fatal(format!("hex data: {e}")))
}
