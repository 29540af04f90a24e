//! The online cold wallet's view of the Bitcoin network through an Esplora server (the REST
//! API of Blockstream's and mempool.space's explorers, which can front one's own bitcoind):
//! the wallet's coins and their transactions, fee estimates, broadcasting, and status.
//! Feature `esplora`; the offline signer builds without it.
//!
//! Nothing read here is trusted for signing: the signers check every input against its full
//! previous transaction themselves, and transactions fetched here are checked against the id
//! they were asked for.

use std::str::FromStr;
use std::time::Duration;

use bitcoin::consensus::encode::{deserialize_hex, serialize_hex};
use bitcoin::{OutPoint, Transaction, Txid};

use crate::wallet::ColdWallet;
use crate::{BtcError, Keychain};

/// An Esplora server's base URL (e.g. `https://blockstream.info/api`).
#[derive(Debug, Clone)]
pub struct Esplora {
    base: String,
    http: reqwest::Client,
    attempts: u32,
}

/// One unspent output of an address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Utxo {
    pub outpoint: OutPoint,
    pub value: u64,
    /// The block it is in, if confirmed.
    pub height: Option<u32>,
}

/// Where a transaction is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxState {
    Unknown,
    Mempool,
    Confirmed { height: u32 },
}

fn backend(e: impl std::fmt::Display) -> BtcError {
    BtcError::Backend(e.to_string())
}

impl Esplora {
    /// A client for `base`; an `https://` server must chain to the platform's trust roots.
    pub fn new(base: &str) -> Result<Self, BtcError> {
        Self::with_ca(base, None)
    }

    /// A client for `base` that also trusts the CA certificates in `extra_ca_pem`.
    pub fn with_ca(base: &str, extra_ca_pem: Option<&[u8]>) -> Result<Self, BtcError> {
        let mut builder =
            reqwest::Client::builder().use_rustls_tls().timeout(Duration::from_secs(15));
        if let Some(pem) = extra_ca_pem {
            let certs = reqwest::Certificate::from_pem_bundle(pem).map_err(backend)?;
            if certs.is_empty() {
                return Err(backend("CA file: no certificate in it"));
            }
            for c in certs {
                builder = builder.add_root_certificate(c);
            }
        }
        let http = builder.build().map_err(backend)?;
        Ok(Esplora { base: base.trim_end_matches('/').to_owned(), http, attempts: 4 })
    }

    /// GET `path`: the body, `None` on 404; retried on connection errors and 5xx/429.
    async fn get(&self, path: &str) -> Result<Option<String>, BtcError> {
        let url = format!("{}{path}", self.base);
        let mut delay = Duration::from_millis(100);
        let mut attempt = 1;
        loop {
            let result = self.http.get(&url).send().await;
            let retry = match result {
                Ok(r) if r.status().as_u16() == 404 => return Ok(None),
                Ok(r) if r.status().is_success() => {
                    return r.text().await.map(Some).map_err(backend)
                }
                Ok(r) if r.status().is_server_error() || r.status().as_u16() == 429 => {
                    format!("GET {path}: HTTP {}", r.status())
                }
                Ok(r) => {
                    let status = r.status();
                    let body = r.text().await.unwrap_or_default();
                    return Err(backend(format!("GET {path}: HTTP {status}: {}", body.trim())));
                }
                Err(e) => format!("GET {path}: {e}"),
            };
            if attempt >= self.attempts {
                return Err(backend(retry));
            }
            tracing::warn!(path, attempt, error = %retry, "esplora call failed, retrying");
            tokio::time::sleep(delay).await;
            delay = delay.saturating_mul(2);
            attempt += 1;
        }
    }

    fn json(text: &str, what: &str) -> Result<serde_json::Value, BtcError> {
        serde_json::from_str(text).map_err(|e| backend(format!("{what}: unreadable answer: {e}")))
    }

    /// The height of the best block.
    pub async fn tip_height(&self) -> Result<u32, BtcError> {
        let text = self.get("/blocks/tip/height").await?.ok_or_else(|| backend("no tip"))?;
        text.trim().parse().map_err(|_| backend(format!("tip height {text:?}")))
    }

    /// Whether `address` ever received anything (confirmed or in the mempool).
    pub async fn used(&self, address: &bitcoin::Address) -> Result<bool, BtcError> {
        let Some(text) = self.get(&format!("/address/{address}")).await? else {
            return Ok(false);
        };
        let v = Self::json(&text, "address")?;
        let count = |k: &str| {
            v.get(k).and_then(|s| s.get("tx_count")).and_then(|n| n.as_u64()).unwrap_or(0)
        };
        Ok(count("chain_stats") + count("mempool_stats") > 0)
    }

    /// The unspent outputs of `address`.
    pub async fn utxos(&self, address: &bitcoin::Address) -> Result<Vec<Utxo>, BtcError> {
        let text =
            self.get(&format!("/address/{address}/utxo")).await?.unwrap_or_else(|| "[]".into());
        let v = Self::json(&text, "utxo")?;
        let list = v.as_array().ok_or_else(|| backend("utxo: not a list"))?;
        list.iter()
            .map(|u| {
                let txid = u
                    .get("txid")
                    .and_then(|t| t.as_str())
                    .ok_or_else(|| backend("utxo without txid"))?;
                let txid = Txid::from_str(txid).map_err(backend)?;
                let vout = u
                    .get("vout")
                    .and_then(|n| n.as_u64())
                    .ok_or_else(|| backend("utxo without vout"))?;
                let value = u
                    .get("value")
                    .and_then(|n| n.as_u64())
                    .ok_or_else(|| backend("utxo without value"))?;
                let status = u.get("status");
                let confirmed =
                    status.and_then(|s| s.get("confirmed")).and_then(|c| c.as_bool()) == Some(true);
                let height = status
                    .and_then(|s| s.get("block_height"))
                    .and_then(|h| h.as_u64())
                    .and_then(|h| u32::try_from(h).ok())
                    .filter(|_| confirmed);
                let vout = u32::try_from(vout).map_err(backend)?;
                Ok(Utxo { outpoint: OutPoint { txid, vout }, value, height })
            })
            .collect()
    }

    /// The transaction `txid`, checked to be that transaction.
    pub async fn transaction(&self, txid: &Txid) -> Result<Transaction, BtcError> {
        let text = self
            .get(&format!("/tx/{txid}/hex"))
            .await?
            .ok_or_else(|| backend(format!("transaction {txid} is unknown")))?;
        let tx: Transaction = deserialize_hex(text.trim()).map_err(backend)?;
        if tx.compute_txid() != *txid {
            return Err(backend(format!(
                "asked for {txid}, the server sent {}",
                tx.compute_txid()
            )));
        }
        Ok(tx)
    }

    pub async fn status(&self, txid: &Txid) -> Result<TxState, BtcError> {
        let Some(text) = self.get(&format!("/tx/{txid}/status")).await? else {
            return Ok(TxState::Unknown);
        };
        let v = Self::json(&text, "status")?;
        let confirmed = v.get("confirmed").and_then(|c| c.as_bool()) == Some(true);
        let height =
            v.get("block_height").and_then(|h| h.as_u64()).and_then(|h| u32::try_from(h).ok());
        Ok(match (confirmed, height) {
            (true, Some(height)) => TxState::Confirmed { height },
            _ => TxState::Mempool,
        })
    }

    /// A fee rate for confirmation within `blocks`, in whole sat/vB (rounded up), from the
    /// server's estimates; the nearest target at or below `blocks` that it has.
    pub async fn fee_rate(&self, blocks: u16) -> Result<u64, BtcError> {
        let text = self.get("/fee-estimates").await?.ok_or_else(|| backend("no fee estimates"))?;
        let v = Self::json(&text, "fee-estimates")?;
        let map = v.as_object().ok_or_else(|| backend("fee-estimates: not a map"))?;
        let best = map
            .iter()
            .filter_map(|(k, r)| Some((k.parse::<u16>().ok()?, r.as_f64()?)))
            .filter(|(k, _)| *k <= blocks)
            .max_by_key(|(k, _)| *k)
            .ok_or_else(|| backend(format!("no fee estimate for {blocks} blocks or fewer")))?;
        // A rate, not money: rounded up to a whole sat/vB, at least 1.
        let rate = best.1.ceil();
        if !(rate.is_finite() && (0.0..1e9).contains(&rate)) {
            return Err(backend(format!("fee estimate {} sat/vB", best.1)));
        }
        Ok(format!("{rate:.0}").parse::<u64>().unwrap_or(1).max(1))
    }

    /// Send `tx`. Sending a transaction the server already has is not an error.
    pub async fn broadcast(&self, tx: &Transaction) -> Result<Txid, BtcError> {
        let txid = tx.compute_txid();
        let url = format!("{}/tx", self.base);
        let resp = self.http.post(&url).body(serialize_hex(tx)).send().await.map_err(backend)?;
        let status = resp.status();
        let body = resp.text().await.unwrap_or_default();
        if status.is_success() {
            return if body.trim() == txid.to_string() {
                Ok(txid)
            } else {
                Err(backend(format!("the server answered {:?} for {txid}", body.trim())))
            };
        }
        if self.status(&txid).await? != TxState::Unknown {
            return Ok(txid);
        }
        Err(BtcError::Refused(format!("the server refused {txid}: HTTP {status}: {}", body.trim())))
    }

    /// Find the wallet's coins: walk each keychain until `gap` unused addresses in a row,
    /// and give the wallet every transaction that created one of its unspent outputs.
    /// Returns how many unspent outputs were found.
    pub async fn sync(
        &self,
        wallet: &mut ColdWallet,
        gap: u32,
        seen_at: u64,
    ) -> Result<usize, BtcError> {
        let mut found = 0;
        for keychain in [Keychain::Receive, Keychain::Change] {
            let mut unused = 0;
            let mut index = 0u32;
            while unused < gap {
                let address = wallet.multisig().address(keychain, index)?;
                if self.used(&address).await? {
                    unused = 0;
                    wallet.reveal_to(keychain, index);
                    for u in self.utxos(&address).await? {
                        let tx = self.transaction(&u.outpoint.txid).await?;
                        wallet.add_transaction(tx, seen_at)?;
                        found += 1;
                    }
                } else {
                    unused += 1;
                }
                index = index.checked_add(1).ok_or_else(|| backend("address index overflow"))?;
            }
        }
        Ok(found)
    }
}

/// A block as the Esplora server names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockInfo {
    pub height: u32,
    pub hash: bitcoin::BlockHash,
}

/// What the server says of one transaction: where it is and the fee it paid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxInfo {
    pub state: TxState,
    /// The block it is in, with its hash, when confirmed.
    pub block: Option<BlockInfo>,
    /// In satoshis.
    pub fee: u64,
}

impl Esplora {
    /// The best block, height and hash read together (the hash first, then that block's
    /// height, so a block found meanwhile cannot mix the two).
    pub async fn tip(&self) -> Result<BlockInfo, BtcError> {
        let text = self.get("/blocks/tip/hash").await?.ok_or_else(|| backend("no tip"))?;
        let hash = bitcoin::BlockHash::from_str(text.trim()).map_err(backend)?;
        let info = self
            .get(&format!("/block/{hash}"))
            .await?
            .ok_or_else(|| backend(format!("the tip {hash} is unknown")))?;
        let v = Self::json(&info, "block")?;
        let height = v
            .get("height")
            .and_then(|h| h.as_u64())
            .and_then(|h| u32::try_from(h).ok())
            .ok_or_else(|| backend("block without height"))?;
        Ok(BlockInfo { height, hash })
    }

    /// The hash of the best chain's block at `height`, `None` above the tip.
    pub async fn block_hash(&self, height: u32) -> Result<Option<bitcoin::BlockHash>, BtcError> {
        let Some(text) = self.get(&format!("/block-height/{height}")).await? else {
            return Ok(None);
        };
        bitcoin::BlockHash::from_str(text.trim()).map(Some).map_err(backend)
    }

    /// The block `hash`, whole, checked to be that block (its header hashes to `hash` and its
    /// transactions to the header's merkle root).
    pub async fn block(&self, hash: &bitcoin::BlockHash) -> Result<bitcoin::Block, BtcError> {
        let url = format!("{}/block/{hash}/raw", self.base);
        let resp = self.http.get(&url).send().await.map_err(backend)?;
        if !resp.status().is_success() {
            return Err(backend(format!("GET /block/{hash}/raw: HTTP {}", resp.status())));
        }
        let bytes = resp.bytes().await.map_err(backend)?;
        let block: bitcoin::Block = bitcoin::consensus::deserialize(&bytes).map_err(backend)?;
        if block.block_hash() != *hash || !block.check_merkle_root() {
            return Err(backend(format!("the server sent another block than {hash}")));
        }
        Ok(block)
    }

    /// Where `txid` is and what fee it paid (`None` if the server does not know it).
    pub async fn tx_info(&self, txid: &Txid) -> Result<Option<TxInfo>, BtcError> {
        let Some(text) = self.get(&format!("/tx/{txid}")).await? else {
            return Ok(None);
        };
        let v = Self::json(&text, "tx")?;
        let fee = v.get("fee").and_then(|f| f.as_u64()).unwrap_or(0);
        let status = v.get("status");
        let confirmed =
            status.and_then(|s| s.get("confirmed")).and_then(|c| c.as_bool()) == Some(true);
        let height = status
            .and_then(|s| s.get("block_height"))
            .and_then(|h| h.as_u64())
            .and_then(|h| u32::try_from(h).ok());
        let hash = status
            .and_then(|s| s.get("block_hash"))
            .and_then(|h| h.as_str())
            .and_then(|h| bitcoin::BlockHash::from_str(h).ok());
        Ok(Some(match (confirmed, height, hash) {
            (true, Some(height), Some(hash)) => TxInfo {
                state: TxState::Confirmed { height },
                block: Some(BlockInfo { height, hash }),
                fee,
            },
            (true, _, _) => return Err(backend(format!("{txid}: confirmed without its block"))),
            _ => TxInfo { state: TxState::Mempool, block: None, fee },
        }))
    }
}
