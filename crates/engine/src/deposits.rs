//! Deposits: each customer's address (a non-hardened BIP-32 child of the hot wallet's
//! threshold key, so no new key and no signer round trip), and the watcher that reads the
//! chain block by block, notices reorganisations by block hash, credits transfers after N
//! confirmations and takes back credits whose transactions left the chain.

use std::collections::HashMap;
use std::sync::Arc;

use strongroom_chain::{BlockRef, ChainClient, TxCodec, TxStatus};
use strongroom_chain_ethereum::EthCodec;
use strongroom_core::ledger::TREASURY_CUSTOMER;
use strongroom_core::{new_id, Env, WalletId};
use strongroom_mpc::ecdsa::MasterPublic;
use strongroom_store::{
    AddressDeriver, ChainDepositState, DepositAddress, NewDepositAddress, ScanBatch, SeenTransfer,
    Store, WriteCtx,
};
use strongroom_units::{Address, AssetSymbol, ChainFamily, ChainId};
use uuid::Uuid;

use crate::{EngineError, TxSigner};

/// The BIP-32 path of customer address `index` below the wallet key: `[0, index]`
/// (non-hardened, so the online side derives it from the public key alone).
pub fn deposit_path(index: u32) -> [u32; 2] {
    [0, index]
}

/// The address a public key controls on one chain.
type AddressOf = Arc<dyn Fn(&[u8]) -> Result<Address, strongroom_chain::ChainError> + Send + Sync>;

/// Derives deposit addresses on `chain` from a wallet's public key and chain code: the
/// child key's Ethereum address, or its P2WPKH address on Bitcoin.
pub fn deriver(master: MasterPublic, chain: ChainId) -> Result<AddressDeriver, EngineError> {
    let address_of: AddressOf = match chain.family() {
        ChainFamily::Ethereum => {
            let codec = EthCodec::new(chain)?;
            Arc::new(move |pk| codec.address_of(pk))
        }
        ChainFamily::Bitcoin => Arc::new(move |pk| {
            strongroom_chain_bitcoin::hot::HotCodec::p2wpkh(chain.clone(), pk)?.own_address()
        }),
    };
    Ok(Arc::new(move |index| {
        let child = master.derive(&deposit_path(index)).map_err(|e| e.to_string())?;
        address_of(&child).map(|a| a.as_str().to_owned()).map_err(|e| e.to_string())
    }))
}

/// The customer's deposit address on `chain`, derived from `wallet`'s key (made once).
pub async fn deposit_address(
    store: &dyn Store,
    signer: &dyn TxSigner,
    env: &dyn Env,
    chain: &ChainId,
    wallet: &WalletId,
    customer_id: Uuid,
) -> Result<DepositAddress, EngineError> {
    let master = signer.master(wallet).await?;
    let new = NewDepositAddress {
        chain: chain.clone(),
        wallet: wallet.as_str().to_owned(),
        customer_id,
        derive: deriver(master, chain.clone())?,
    };
    let ctx = WriteCtx { actor: "engine".into(), now: env.now(), request_id: None };
    Ok(store.deposit_address(&ctx, new).await?)
}

#[derive(Debug, Clone)]
pub struct WatchConfig {
    pub chain: ChainId,
    /// Blocks on top of (and including) the deposit's before it is credited.
    pub confirmations: u64,
    /// The chain's native coin.
    pub native: AssetSymbol,
    /// Tokens to watch: symbol and contract.
    pub tokens: Vec<(AssetSymbol, Address)>,
    /// Our hot wallets' addresses: transfers into them are the treasury's.
    pub hot_wallets: Vec<Address>,
    /// Our other addresses (the cold wallet's): a payment from one of them into a watched
    /// address (a refill of the hot wallet from cold) moves within custody, no deposit.
    pub internal: Vec<Address>,
    /// The wallets whose customers' deposit addresses are watched: the chain's hot wallet
    /// and every key migrated into it (their addresses stay watched).
    pub wallets: Vec<WalletId>,
    /// Where to start on a fresh database.
    pub start_block: u64,
    /// Most blocks read per pass.
    pub max_blocks: u64,
    /// How far back block hashes are compared to find a reorganisation.
    pub reorg_window: u32,
}

/// What one pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WatchReport {
    pub reorganised_from: Option<u64>,
    pub blocks: usize,
    pub seen: usize,
    pub credited: usize,
    pub reversed: usize,
    pub held: usize,
    pub dropped: usize,
}

pub struct DepositWatcher {
    store: Arc<dyn Store>,
    client: Arc<dyn ChainClient>,
    env: Arc<dyn Env>,
    cfg: WatchConfig,
    /// Whose each watched address is: the deposit addresses loaded so far (they are only
    /// ever added, so each pass loads the new ones) and the hot wallets.
    owners: tokio::sync::Mutex<Owners>,
}

/// The watched addresses and where the next incremental load starts.
#[derive(Default)]
struct Owners {
    by_address: HashMap<Address, Uuid>,
    /// Per wallet, the path index after the highest loaded.
    next_index: HashMap<WalletId, u64>,
}

/// How many addresses one read of new deposit addresses returns.
const ADDRESS_PAGE: u32 = 10_000;
/// How far back each incremental load reads (addresses made concurrently may commit a
/// little out of index order).
const ADDRESS_OVERLAP: u64 = 64;

impl std::fmt::Debug for DepositWatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DepositWatcher").field("chain", &self.cfg.chain).finish_non_exhaustive()
    }
}

impl DepositWatcher {
    pub fn new(
        store: Arc<dyn Store>,
        client: Arc<dyn ChainClient>,
        env: Arc<dyn Env>,
        cfg: WatchConfig,
    ) -> Self {
        DepositWatcher { store, client, env, cfg, owners: tokio::sync::Mutex::default() }
    }

    /// Load the deposit addresses made since the last load into `owners`.
    async fn load_new_addresses(&self, owners: &mut Owners) -> Result<(), EngineError> {
        let chain = &self.cfg.chain;
        if owners.by_address.is_empty() {
            for h in &self.cfg.hot_wallets {
                owners.by_address.insert(h.clone(), TREASURY_CUSTOMER);
            }
        }
        for wallet in &self.cfg.wallets {
            let loaded = owners.next_index.get(wallet).copied().unwrap_or(0);
            let mut from = loaded.saturating_sub(ADDRESS_OVERLAP);
            let mut next = loaded;
            loop {
                let page = self
                    .store
                    .deposit_addresses_from(chain, wallet.as_str(), from, ADDRESS_PAGE)
                    .await?;
                let full = page.len() == ADDRESS_PAGE as usize;
                for a in &page {
                    let address = Address::parse(chain, &a.address)
                        .map_err(|e| strongroom_store::StoreError::Corrupt(e.to_string()))?;
                    owners.by_address.insert(address, a.customer_id);
                    next = next.max(u64::from(a.path_index).saturating_add(1));
                    from = from.max(u64::from(a.path_index));
                }
                if !full {
                    break;
                }
                from = from.saturating_add(1);
            }
            owners.next_index.insert(wallet.clone(), next);
        }
        Ok(())
    }

    fn ctx(&self) -> WriteCtx {
        WriteCtx { actor: "watcher".into(), now: self.env.now(), request_id: None }
    }

    /// One pass: reorganisation check, read new blocks, resolve orphans, credit what is
    /// deep enough.
    pub async fn run_once(&self) -> Result<WatchReport, EngineError> {
        let mut report = WatchReport::default();
        let chain = &self.cfg.chain;
        if let Some(fork) = self.find_fork().await? {
            tracing::warn!(
                chain = chain.as_str(),
                fork,
                "chain reorganisation: rewinding the deposit watcher"
            );
            self.store.rewind_chain(&self.ctx(), chain, fork).await?;
            report.reorganised_from = Some(fork);
        }
        self.scan(&mut report).await?;
        self.resolve_orphans(&mut report).await?;
        self.credit(&mut report).await?;
        Ok(report)
    }

    /// The lowest stored block whose hash the chain no longer has, if any.
    async fn find_fork(&self) -> Result<Option<u64>, EngineError> {
        let recent = self.store.recent_blocks(&self.cfg.chain, self.cfg.reorg_window).await?;
        let mut fork = None;
        for b in recent {
            match self.client.block(b.number).await? {
                Some(now) if now.hash == b.hash => break,
                _ => fork = Some(b.number),
            }
        }
        Ok(fork)
    }

    async fn scan(&self, report: &mut WatchReport) -> Result<(), EngineError> {
        let chain = &self.cfg.chain;
        let from = self.store.chain_cursor(chain).await?.unwrap_or(self.cfg.start_block);
        let head = self.client.head().await?;
        if from > head.number {
            return Ok(());
        }
        let to = head.number.min(from.saturating_add(self.cfg.max_blocks.max(1) - 1));
        let mut blocks = Vec::new();
        for n in from..=to {
            match self.client.block(n).await? {
                Some(b) => blocks.push(b),
                None => break,
            }
        }
        let Some(last) = blocks.last() else { return Ok(()) };
        let to = last.number;

        // Whose each address is (addresses are canonical, so they compare as they are).
        let mut guard = self.owners.lock().await;
        self.load_new_addresses(&mut guard).await?;
        let owners = &guard.by_address;
        let contracts: Vec<Address> = self.cfg.tokens.iter().map(|(_, c)| c.clone()).collect();
        let incoming = self.client.incoming(from, to, owners, &contracts).await?;

        let by_number: HashMap<u64, &BlockRef> = blocks.iter().map(|b| (b.number, b)).collect();
        let mut transfers = Vec::new();
        for t in incoming {
            // A block that changed between the two reads: try again next pass.
            if by_number.get(&t.block.number).map(|b| &b.hash) != Some(&t.block.hash) {
                tracing::info!(
                    block = t.block.number,
                    "block changed while reading; will read again"
                );
                return Ok(());
            }
            // A movement between our own addresses (a sweep or a gas top-up) is no deposit.
            if t.from
                .as_ref()
                .is_some_and(|f| owners.contains_key(f) || self.cfg.internal.contains(f))
            {
                continue;
            }
            let Some(customer_id) = owners.get(&t.to).copied() else {
                continue;
            };
            let asset = match &t.contract {
                None => self.cfg.native.clone(),
                Some(c) => match self.cfg.tokens.iter().find(|(_, tc)| tc == c) {
                    Some((symbol, _)) => symbol.clone(),
                    None => continue,
                },
            };
            transfers.push(SeenTransfer {
                txid: t.txid,
                log_index: t.index,
                to_address: t.to.as_str().to_owned(),
                customer_id,
                asset,
                amount: t.amount,
                block: t.block,
            });
        }
        report.blocks = blocks.len();
        report.seen = transfers.len();
        for batch in batches(chain, blocks, transfers, to.saturating_add(1)) {
            self.store.record_scan(&self.ctx(), batch).await?;
        }
        Ok(())
    }

    async fn resolve_orphans(&self, report: &mut WatchReport) -> Result<(), EngineError> {
        let chain = &self.cfg.chain;
        for d in self.store.chain_deposits(chain, Some(ChainDepositState::Orphaned)).await? {
            // Back in the mempool or in a block the scan has not reached: wait for it.
            if self.client.status(&d.transfer.txid).await? != TxStatus::Unknown {
                continue;
            }
            let t = &d.transfer;
            let done = self
                .store
                .resolve_orphan(&self.ctx(), chain, &t.txid, t.log_index, new_id(self.env.as_ref()))
                .await?;
            match done.state {
                ChainDepositState::Reversed => {
                    report.reversed += 1;
                    tracing::error!(txid = %t.txid, customer = %t.customer_id, amount = %t.amount, asset = %t.asset,
                        "ALERT: a credited deposit was reorganised off the chain; its credit was reversed");
                }
                ChainDepositState::Held => {
                    report.held += 1;
                    tracing::error!(txid = %t.txid, customer = %t.customer_id, amount = %t.amount, asset = %t.asset,
                        "ALERT: a credited deposit was reorganised off the chain after the customer used it; held for the security team");
                }
                _ => report.dropped += 1,
            }
        }
        Ok(())
    }

    async fn credit(&self, report: &mut WatchReport) -> Result<(), EngineError> {
        let chain = &self.cfg.chain;
        let head = self.client.head().await?;
        for d in self.store.uncredited_deposits(chain).await? {
            let t = &d.transfer;
            let depth = head.number.saturating_add(1).saturating_sub(t.block.number);
            if depth < self.cfg.confirmations {
                continue;
            }
            // Still in the canonical chain at that height? Otherwise the next pass rewinds.
            if self.client.block(t.block.number).await?.map(|b| b.hash)
                != Some(t.block.hash.clone())
            {
                continue;
            }
            let env = self.env.as_ref();
            self.store
                .credit_chain_deposit(
                    &self.ctx(),
                    chain,
                    &t.txid,
                    t.log_index,
                    [new_id(env), new_id(env)],
                )
                .await?;
            tracing::info!(txid = %t.txid, customer = %t.customer_id, amount = %t.amount, asset = %t.asset, "deposit credited");
            report.credited += 1;
        }
        Ok(())
    }
}

/// Most transfers stored in one commit (an audit record holds at most 32 changes: these and
/// the cursor).
pub const MAX_TRANSFERS_PER_COMMIT: usize = 30;

/// Split what a pass read into commits of at most [`MAX_TRANSFERS_PER_COMMIT`] transfers.
/// Each commit moves the cursor only past blocks whose transfers are all stored (a block
/// with more than that many is stored in several commits that leave the cursor on it).
fn batches(
    chain: &ChainId,
    blocks: Vec<BlockRef>,
    mut transfers: Vec<SeenTransfer>,
    next_block: u64,
) -> Vec<ScanBatch> {
    transfers.sort_by_key(|t| (t.block.number, t.log_index));
    let mut out = Vec::new();
    let mut pending: Vec<SeenTransfer> = Vec::new();
    let mut from = 0;
    for (i, b) in blocks.iter().enumerate() {
        let mut here: Vec<SeenTransfer> =
            transfers.iter().filter(|t| t.block.number == b.number).cloned().collect();
        if pending.len() + here.len() > MAX_TRANSFERS_PER_COMMIT && !pending.is_empty() {
            out.push(ScanBatch {
                chain: chain.clone(),
                blocks: blocks.get(from..i).unwrap_or_default().to_vec(),
                transfers: std::mem::take(&mut pending),
                next_block: b.number,
            });
            from = i;
        }
        while here.len() > MAX_TRANSFERS_PER_COMMIT {
            let rest = here.split_off(MAX_TRANSFERS_PER_COMMIT);
            out.push(ScanBatch {
                chain: chain.clone(),
                blocks: blocks.get(from..=i).unwrap_or_default().to_vec(),
                transfers: here,
                next_block: b.number,
            });
            here = rest;
        }
        pending.extend(here);
    }
    out.push(ScanBatch {
        chain: chain.clone(),
        blocks: blocks.get(from..).unwrap_or_default().to_vec(),
        transfers: pending,
        next_block,
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(block: u64, i: u64) -> SeenTransfer {
        SeenTransfer {
            txid: format!("0x{block}-{i}"),
            log_index: i,
            to_address: "a".into(),
            customer_id: Uuid::nil(),
            asset: AssetSymbol::parse("ETH").unwrap(),
            amount: strongroom_units::Amount::from_base_units(1).unwrap(),
            block: BlockRef { number: block, hash: format!("0x{block}") },
        }
    }

    #[test]
    fn scans_are_split_into_commits_that_fit_an_audit_record() {
        let chain = ChainId::parse("eip155:1").unwrap();
        let blocks: Vec<BlockRef> =
            (10..15).map(|n| BlockRef { number: n, hash: format!("0x{n}") }).collect();
        // Block 11 holds 70 transfers, block 13 holds 5.
        let mut transfers: Vec<SeenTransfer> = (0..70).map(|i| t(11, i)).collect();
        transfers.extend((0..5).map(|i| t(13, i)));
        let out = batches(&chain, blocks, transfers.clone(), 15);
        assert!(out.iter().all(|b| b.transfers.len() <= MAX_TRANSFERS_PER_COMMIT));
        let mut all: Vec<_> = out.iter().flat_map(|b| b.transfers.clone()).collect();
        all.sort_by_key(|t| (t.block.number, t.log_index));
        assert_eq!(all, transfers, "every transfer exactly once");
        // The cursor never passes a block whose transfers are not all stored.
        let nexts: Vec<u64> = out.iter().map(|b| b.next_block).collect();
        assert_eq!(nexts, vec![11, 11, 15]);
        assert!(out.windows(2).all(|w| w[0].next_block <= w[1].next_block));
        // Few transfers: one commit.
        let one =
            batches(&chain, vec![BlockRef { number: 1, hash: "0x1".into() }], vec![t(1, 0)], 2);
        assert_eq!(one.len(), 1);
    }
}
