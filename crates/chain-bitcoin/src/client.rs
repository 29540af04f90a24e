//! Bitcoin through the one chain boundary: [`BtcClient`] is the [`ChainClient`] over an
//! Esplora server (feature `esplora`), so the engine's withdrawal driver and deposit
//! watcher read Bitcoin as they read Ethereum.
//!
//! A deposit is an output paying a watched address: its index is the output's position
//! (`vout`), so `(txid, vout)` names it once, and its payer is the address of a coin the
//! transaction spends (a watched one if any: then it is our own transaction, its change or a
//! sweep, which the watcher does not credit). Coinbase outputs are not deposits (they cannot
//! be spent for 100 blocks, and no customer mines into an exchange's address).

use std::collections::BTreeMap;

use async_trait::async_trait;
use bitcoin::{Network, Transaction, Txid};
use strongroom_chain::{
    BlockRef, ChainClient, ClientError, IncomingTransfer, SignedTx, TxStatus, Watched,
};
use strongroom_units::{Address, Amount, ChainId};

use crate::esplora::{Esplora, TxState, Utxo};
use crate::BtcError;

/// A Bitcoin network's node, through Esplora.
#[derive(Debug, Clone)]
pub struct BtcClient {
    esplora: Esplora,
    chain: ChainId,
    network: Network,
}

fn client_error(e: BtcError) -> ClientError {
    // The server refusing a transaction is final; anything else (unreachable, busy, an
    // unreadable answer) may pass.
    let retryable = !matches!(e, BtcError::Refused(_));
    ClientError { message: e.to_string(), retryable }
}

fn final_error(message: String) -> ClientError {
    ClientError { message, retryable: false }
}

fn sat(v: u64) -> Result<Amount, ClientError> {
    Amount::from_base_units(u128::from(v)).map_err(|e| final_error(e.to_string()))
}

impl BtcClient {
    pub fn new(esplora: Esplora, chain: ChainId) -> Result<Self, BtcError> {
        let network = crate::network(&chain)?;
        Ok(BtcClient { esplora, chain, network })
    }

    pub fn esplora(&self) -> &Esplora {
        &self.esplora
    }

    pub fn chain(&self) -> &ChainId {
        &self.chain
    }

    fn address(&self, a: &Address) -> Result<bitcoin::Address, ClientError> {
        crate::address(a.as_str(), self.network).map_err(|e| final_error(e.to_string()))
    }

    /// The coins of `address`, each with the whole transaction that made it (which the
    /// signer nodes need to check the amount): confirmed ones only, unless `pending`.
    pub async fn coins(
        &self,
        address: &Address,
        pending: bool,
    ) -> Result<Vec<(Utxo, Transaction)>, ClientError> {
        let a = self.address(address)?;
        let mut out = Vec::new();
        let mut txs: BTreeMap<Txid, Transaction> = BTreeMap::new();
        for u in self.esplora.utxos(&a).await.map_err(client_error)? {
            if u.height.is_none() && !pending {
                continue;
            }
            let tx = match txs.get(&u.outpoint.txid) {
                Some(tx) => tx.clone(),
                None => {
                    let tx =
                        self.esplora.transaction(&u.outpoint.txid).await.map_err(client_error)?;
                    txs.insert(u.outpoint.txid, tx.clone());
                    tx
                }
            };
            out.push((u, tx));
        }
        Ok(out)
    }

    fn address_of(&self, script: &bitcoin::ScriptBuf) -> Option<Address> {
        let a = bitcoin::Address::from_script(script, self.network).ok()?;
        Address::parse(&self.chain, &a.to_string()).ok()
    }

    /// Who paid `tx`, as far as a deposit watcher needs to know: one of the watched addresses
    /// if any input spends its coin (our own transaction: its change or a sweep is no deposit),
    /// else the first input's address. Looked up only for transactions that pay a watched
    /// address.
    async fn payer(
        &self,
        tx: &Transaction,
        watched: &Watched,
    ) -> Result<Option<Address>, ClientError> {
        let mut first = None;
        for input in &tx.input {
            let prev = self
                .esplora
                .transaction(&input.previous_output.txid)
                .await
                .map_err(client_error)?;
            let spent = usize::try_from(input.previous_output.vout)
                .ok()
                .and_then(|n| prev.output.get(n))
                .and_then(|o| self.address_of(&o.script_pubkey));
            if let Some(a) = spent {
                if watched.contains_key(&a) {
                    return Ok(Some(a));
                }
                first = first.or(Some(a));
            }
        }
        Ok(first)
    }

    /// A fee rate for confirmation within `blocks`, in sat/vB.
    pub async fn fee_rate(&self, blocks: u16) -> Result<u64, ClientError> {
        self.esplora.fee_rate(blocks).await.map_err(client_error)
    }
}

#[async_trait]
impl ChainClient for BtcClient {
    async fn broadcast(&self, tx: &SignedTx) -> Result<String, ClientError> {
        let t: Transaction = bitcoin::consensus::deserialize(&tx.raw)
            .map_err(|e| final_error(format!("not a Bitcoin transaction: {e}")))?;
        let txid = self.esplora.broadcast(&t).await.map_err(client_error)?;
        Ok(txid.to_string())
    }

    async fn status(&self, txid: &str) -> Result<TxStatus, ClientError> {
        let id: Txid =
            txid.parse().map_err(|e| final_error(format!("transaction id {txid}: {e}")))?;
        let Some(info) = self.esplora.tx_info(&id).await.map_err(client_error)? else {
            return Ok(TxStatus::Unknown);
        };
        match (info.state, info.block) {
            (TxState::Confirmed { height }, Some(block)) => {
                let tip = self.esplora.tip_height().await.map_err(client_error)?;
                Ok(TxStatus::Included {
                    block: BlockRef { number: u64::from(height), hash: block.hash.to_string() },
                    confirmations: u64::from(tip.saturating_sub(height)).saturating_add(1),
                    // A Bitcoin transaction in a block did all it says: nothing reverts.
                    success: true,
                    fee_paid: sat(info.fee)?,
                })
            }
            (TxState::Unknown, _) => Ok(TxStatus::Unknown),
            _ => Ok(TxStatus::Pending),
        }
    }

    async fn head(&self) -> Result<BlockRef, ClientError> {
        let tip = self.esplora.tip().await.map_err(client_error)?;
        Ok(BlockRef { number: u64::from(tip.height), hash: tip.hash.to_string() })
    }

    async fn block(&self, number: u64) -> Result<Option<BlockRef>, ClientError> {
        let Ok(height) = u32::try_from(number) else {
            return Ok(None);
        };
        let hash = self.esplora.block_hash(height).await.map_err(client_error)?;
        Ok(hash.map(|h| BlockRef { number, hash: h.to_string() }))
    }

    /// Confirmed coins only: what the address could spend now.
    async fn balance(
        &self,
        address: &Address,
        contract: Option<&Address>,
    ) -> Result<Amount, ClientError> {
        if contract.is_some() {
            return Err(final_error("Bitcoin has no token contracts".into()));
        }
        let a = self.address(address)?;
        let utxos = self.esplora.utxos(&a).await.map_err(client_error)?;
        let total = utxos
            .iter()
            .filter(|u| u.height.is_some())
            .try_fold(0u64, |t, u| t.checked_add(u.value))
            .ok_or_else(|| final_error("balance overflows".into()))?;
        sat(total)
    }

    async fn incoming(
        &self,
        from: u64,
        to: u64,
        watched: &Watched,
        contracts: &[Address],
    ) -> Result<Vec<IncomingTransfer>, ClientError> {
        if !contracts.is_empty() {
            return Err(final_error("Bitcoin has no token contracts".into()));
        }
        let mut found = Vec::new();
        for number in from..=to {
            let Some(block_ref) = self.block(number).await? else {
                break;
            };
            let hash = block_ref
                .hash
                .parse()
                .map_err(|e| final_error(format!("block hash {}: {e}", block_ref.hash)))?;
            let block = self.esplora.block(&hash).await.map_err(client_error)?;
            for tx in block.txdata.iter().filter(|t| !t.is_coinbase()) {
                let txid = tx.compute_txid().to_string();
                let mut from = None;
                for (vout, out) in tx.output.iter().enumerate() {
                    let Some(to) = self.address_of(&out.script_pubkey) else {
                        continue;
                    };
                    if !watched.contains_key(&to) {
                        continue;
                    }
                    if from.is_none() {
                        from = Some(self.payer(tx, watched).await?);
                    }
                    found.push(IncomingTransfer {
                        block: block_ref.clone(),
                        txid: txid.clone(),
                        index: u64::try_from(vout).unwrap_or(u64::MAX),
                        contract: None,
                        from: from.clone().flatten(),
                        to,
                        amount: sat(out.value.to_sat())?,
                    });
                }
            }
        }
        Ok(found)
    }
}
