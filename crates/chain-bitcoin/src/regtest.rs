//! A local Bitcoin backend for development and tests (feature `regtest`): a regtest chain of
//! real blocks (proof of work at regtest's target, BIP-34 heights, merkle roots), a mempool
//! that takes a transaction only when every input spends a known, unspent, mature output, the
//! amounts add up, and Bitcoin Core's consensus code (libbitcoinconsensus) verifies every
//! input's script against the output it spends (Taproot key-path spends, which the bundled
//! library does not check, are verified with libsecp256k1's BIP-340 verifier); BIP-125
//! replacement of a transaction that signals it by one paying more; blocks mined on demand,
//! and reorganisations that replace the last blocks, returning their transactions to the
//! mempool or dropping them as a conflicting chain would.
//!
//! It serves the part of the Esplora REST API the platform reads ([`crate::esplora`]), plus
//! `/regtest/*` controls: mine, reorganise, pay from the faucet (a key that mines the first
//! 101 blocks), set the fee estimates. No bitcoind is needed, so `strongroom dev` and the
//! tests run on a machine that has none.

use std::collections::{BTreeMap, BTreeSet};
use std::str::FromStr;
use std::sync::{Arc, Mutex, MutexGuard};

use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use bitcoin::blockdata::constants::{genesis_block, COINBASE_MATURITY};
use bitcoin::consensus::encode::{deserialize_hex, serialize, serialize_hex};
use bitcoin::hashes::{sha256, Hash};
use bitcoin::key::CompressedPublicKey;
use bitcoin::secp256k1::{Message, Secp256k1, SecretKey};
use bitcoin::sighash::{EcdsaSighashType, SighashCache};
use bitcoin::{
    absolute, block, script, transaction, Amount, Block, BlockHash, CompactTarget, Network,
    OutPoint, ScriptBuf, Sequence, Transaction, TxIn, TxMerkleNode, TxOut, Txid, Witness,
};
use serde::Deserialize;

use crate::BtcError;

/// Regtest's proof-of-work limit, as its genesis block states it.
const REGTEST_BITS: u32 = 0x207f_ffff;
/// Regtest halves the subsidy every 150 blocks.
const HALVING: u32 = 150;
/// The faucet's fee for a payment, in satoshis (about 7 sat/vB for one input, two outputs).
const FAUCET_FEE: u64 = 1_000;

/// A coin in the chain's unspent set.
#[derive(Debug, Clone)]
struct Coin {
    out: TxOut,
    height: u32,
    coinbase: bool,
}

/// Why the backend refused something, worded as Bitcoin Core words it.
fn refuse(why: impl std::fmt::Display) -> BtcError {
    BtcError::Refused(why.to_string())
}

/// The chain and mempool.
#[derive(Debug)]
struct Node {
    network: Network,
    /// The canonical chain, genesis first: index = height.
    blocks: Vec<Block>,
    /// Accepted transactions not yet in a block, in arrival order (parents before children).
    mempool: Vec<Transaction>,
    fee_estimates: BTreeMap<u16, f64>,
    faucet_key: SecretKey,
    faucet_script: ScriptBuf,
    /// Blocks mined so far, counting orphaned ones: each coinbase differs, so a block mined
    /// to replace another has another hash.
    mined: u64,
    /// The unspent coins and where each confirmed transaction is, kept with the tip.
    view: View,
    /// Where the chain is kept between runs (rewritten after every change), if anywhere.
    file: Option<std::path::PathBuf>,
}

/// What the chain holds at its tip: unspent coins and where each transaction is.
#[derive(Debug, Default)]
struct View {
    utxos: BTreeMap<OutPoint, Coin>,
    confirmed: BTreeMap<Txid, (u32, usize)>,
}

impl View {
    /// The view of `blocks`, genesis first.
    fn replay(blocks: &[Block]) -> View {
        let mut v = View::default();
        for (height, block) in blocks.iter().enumerate() {
            v.apply(block, u32::try_from(height).unwrap_or(u32::MAX));
        }
        v
    }

    /// Move the tip onto `block` at `height`.
    fn apply(&mut self, block: &Block, height: u32) {
        for (n, tx) in block.txdata.iter().enumerate() {
            let txid = tx.compute_txid();
            let coinbase = tx.is_coinbase();
            if !coinbase {
                for i in &tx.input {
                    self.utxos.remove(&i.previous_output);
                }
            }
            for (vout, out) in tx.output.iter().enumerate() {
                let vout = u32::try_from(vout).unwrap_or(u32::MAX);
                self.utxos
                    .insert(OutPoint { txid, vout }, Coin { out: out.clone(), height, coinbase });
            }
            self.confirmed.insert(txid, (height, n));
        }
    }
}

impl Node {
    fn new(network: Network) -> Result<Node, BtcError> {
        let seed = sha256::Hash::hash(b"strongroom regtest faucet");
        let faucet_key = SecretKey::from_slice(seed.as_byte_array()).map_err(refuse)?;
        let compressed = CompressedPublicKey(faucet_key.public_key(&Secp256k1::signing_only()));
        let faucet_script = ScriptBuf::new_p2wpkh(&compressed.wpubkey_hash());
        let fee_estimates = [(1u16, 12.3), (3, 8.0), (6, 4.1), (144, 1.0)].into_iter().collect();
        let blocks = vec![genesis_block(network)];
        let view = View::replay(&blocks);
        Ok(Node {
            network,
            blocks,
            mempool: Vec::new(),
            fee_estimates,
            faucet_key,
            faucet_script,
            mined: 0,
            view,
            file: None,
        })
    }

    /// Write the chain to its file, if it has one (a new file, then renamed over the old).
    fn save(&self) -> Result<(), BtcError> {
        let Some(path) = &self.file else {
            return Ok(());
        };
        let body = serde_json::json!({
            "blocks": self.blocks.iter().map(|b| hex::encode(serialize(b))).collect::<Vec<_>>(),
            "mempool": self.mempool.iter().map(serialize_hex).collect::<Vec<_>>(),
            "mined": self.mined,
        });
        let tmp = path.with_extension("tmp");
        let io = |e: std::io::Error| BtcError::Backend(format!("{}: {e}", path.display()));
        std::fs::write(&tmp, body.to_string()).map_err(io)?;
        std::fs::rename(&tmp, path).map_err(io)
    }

    /// The chain kept in `path`, checked block by block (each on its parent, its proof of
    /// work and merkle root valid) and its mempool taken again.
    fn load(&mut self, path: &std::path::Path) -> Result<(), BtcError> {
        let bad = |why: String| BtcError::Backend(format!("{}: {why}", path.display()));
        let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
        let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
        let list = |k: &str| -> Result<Vec<Vec<u8>>, BtcError> {
            v.get(k)
                .and_then(|l| l.as_array())
                .ok_or_else(|| bad(format!("no {k}")))?
                .iter()
                .map(|h| {
                    hex::decode(h.as_str().unwrap_or_default()).map_err(|e| bad(e.to_string()))
                })
                .collect()
        };
        let mut blocks: Vec<Block> = Vec::new();
        for raw in list("blocks")? {
            let b: Block = bitcoin::consensus::deserialize(&raw).map_err(|e| bad(e.to_string()))?;
            let parent = blocks.last().map(Block::block_hash);
            let linked = parent.is_none_or(|p| b.header.prev_blockhash == p);
            if !linked
                || !b.check_merkle_root()
                || b.header.validate_pow(b.header.target()).is_err()
            {
                return Err(bad(format!("block {} does not fit the chain", b.block_hash())));
            }
            blocks.push(b);
        }
        if blocks.first().map(Block::block_hash) != Some(genesis_block(self.network).block_hash()) {
            return Err(bad("another network's chain".into()));
        }
        self.blocks = blocks;
        self.view = View::replay(&self.blocks);
        self.mined = v.get("mined").and_then(|m| m.as_u64()).unwrap_or(0);
        self.mempool.clear();
        for raw in list("mempool")? {
            let tx: Transaction =
                bitcoin::consensus::deserialize(&raw).map_err(|e| bad(e.to_string()))?;
            let _ = self.accept(tx);
        }
        Ok(())
    }

    fn tip_height(&self) -> u32 {
        u32::try_from(self.blocks.len().saturating_sub(1)).unwrap_or(u32::MAX)
    }

    fn view(&self) -> &View {
        &self.view
    }

    /// The outputs the mempool creates and the ones it spends.
    fn mempool_outputs(&self) -> (BTreeMap<OutPoint, TxOut>, BTreeMap<OutPoint, Txid>) {
        let mut created = BTreeMap::new();
        let mut spent = BTreeMap::new();
        for tx in &self.mempool {
            let txid = tx.compute_txid();
            for i in &tx.input {
                spent.insert(i.previous_output, txid);
            }
            for (vout, out) in tx.output.iter().enumerate() {
                created
                    .insert(OutPoint { txid, vout: u32::try_from(vout).unwrap_or(0) }, out.clone());
            }
        }
        (created, spent)
    }

    fn fee_of(&self, tx: &Transaction, view: &View) -> Option<u64> {
        let (created, _) = self.mempool_outputs();
        let mut total: u64 = 0;
        for i in &tx.input {
            let v = view
                .utxos
                .get(&i.previous_output)
                .map(|c| c.out.value)
                .or_else(|| created.get(&i.previous_output).map(|o| o.value))
                .or_else(|| self.spent_output(&i.previous_output))?;
            total = total.checked_add(v.to_sat())?;
        }
        let out: u64 = tx.output.iter().map(|o| o.value.to_sat()).sum();
        total.checked_sub(out)
    }

    /// An output already spent in the chain (for the fee of a confirmed transaction).
    fn spent_output(&self, op: &OutPoint) -> Option<Amount> {
        self.find_tx(&op.txid)
            .and_then(|tx| tx.output.get(usize::try_from(op.vout).ok()?))
            .map(|o| o.value)
    }

    fn find_tx(&self, txid: &Txid) -> Option<&Transaction> {
        match self.view.confirmed.get(txid) {
            Some((height, n)) => self.blocks.get(usize::try_from(*height).ok()?)?.txdata.get(*n),
            None => self.mempool.iter().find(|t| t.compute_txid() == *txid),
        }
    }

    /// Take `tx` into the mempool as Bitcoin Core would (without its standardness rules).
    fn accept(&mut self, tx: Transaction) -> Result<Txid, BtcError> {
        let txid = tx.compute_txid();
        if tx.is_coinbase() || tx.input.is_empty() || tx.output.is_empty() {
            return Err(refuse("bad-txns-vin-empty or coinbase"));
        }
        let view = self.view();
        if view.confirmed.contains_key(&txid) {
            return Err(refuse("Transaction outputs already in utxo set"));
        }
        if self.mempool.iter().any(|t| t.compute_txid() == txid) {
            return Err(refuse("txn-already-in-mempool"));
        }
        let (created, spent_in_pool) = self.mempool_outputs();
        let next = self.tip_height().saturating_add(1);
        let mut prevouts = BTreeMap::new();
        let mut conflicts = BTreeSet::new();
        let mut seen = BTreeSet::new();
        for i in &tx.input {
            if !seen.insert(i.previous_output) {
                return Err(refuse("bad-txns-inputs-duplicate"));
            }
            let out = match view.utxos.get(&i.previous_output) {
                Some(c) if c.coinbase && next.saturating_sub(c.height) < COINBASE_MATURITY => {
                    return Err(refuse("bad-txns-premature-spend-of-coinbase"));
                }
                Some(c) => c.out.clone(),
                None => created
                    .get(&i.previous_output)
                    .cloned()
                    .ok_or_else(|| refuse("bad-txns-inputs-missingorspent"))?,
            };
            if let Some(other) = spent_in_pool.get(&i.previous_output) {
                conflicts.insert(*other);
            }
            prevouts.insert(i.previous_output, out);
        }
        let total_in: u64 = prevouts.values().map(|o| o.value.to_sat()).sum();
        let total_out: u64 = tx.output.iter().map(|o| o.value.to_sat()).sum();
        let fee = total_in.checked_sub(total_out).ok_or_else(|| refuse("bad-txns-in-belowout"))?;
        crate::psbt::verify(&tx, &prevouts)
            .map_err(|e| refuse(format!("mandatory-script-verify-flag-failed ({e})")))?;
        let spent: Vec<TxOut> =
            tx.input.iter().filter_map(|i| prevouts.get(&i.previous_output).cloned()).collect();
        for (n, out) in spent.iter().enumerate() {
            if out.script_pubkey.is_p2tr() {
                crate::hot::verify_key_spend(&tx, n, &spent)
                    .map_err(|e| refuse(format!("mandatory-script-verify-flag-failed ({e})")))?;
            }
        }
        if !conflicts.is_empty() {
            self.replace(&tx, fee, &conflicts)?;
        }
        self.mempool.push(tx);
        Ok(txid)
    }

    /// BIP-125: `conflicts` leave the mempool (with their descendants) only if each signals
    /// replaceability and `tx` pays more in fees than all of them together.
    fn replace(
        &mut self,
        tx: &Transaction,
        fee: u64,
        conflicts: &BTreeSet<Txid>,
    ) -> Result<(), BtcError> {
        let mut evicted = conflicts.clone();
        loop {
            let before = evicted.len();
            for t in &self.mempool {
                if t.input.iter().any(|i| evicted.contains(&i.previous_output.txid)) {
                    evicted.insert(t.compute_txid());
                }
            }
            if evicted.len() == before {
                break;
            }
        }
        let mut old_fees: u64 = 0;
        for t in self.mempool.iter().filter(|t| evicted.contains(&t.compute_txid())) {
            if conflicts.contains(&t.compute_txid()) && !t.is_explicitly_rbf() {
                return Err(refuse("txn-mempool-conflict"));
            }
            old_fees = old_fees.saturating_add(self.fee_of(t, &self.view).unwrap_or(0));
        }
        if fee <= old_fees {
            return Err(refuse(format!(
                "insufficient fee, rejecting replacement {}; new fee {fee} <= old fees {old_fees}",
                tx.compute_txid()
            )));
        }
        self.mempool.retain(|t| !evicted.contains(&t.compute_txid()));
        Ok(())
    }

    fn subsidy(height: u32) -> u64 {
        let halvings = height / HALVING;
        if halvings >= 64 {
            0
        } else {
            (50 * 100_000_000u64) >> halvings
        }
    }

    /// Mine one block on the tip with every mempool transaction, paying `to`.
    fn mine_one(&mut self, to: &ScriptBuf) -> Result<BlockHash, BtcError> {
        let view = self.view();
        let height = self.tip_height().saturating_add(1);
        let fees: u64 = self.mempool.iter().filter_map(|t| self.fee_of(t, view)).sum();
        self.mined = self.mined.saturating_add(1);
        let coinbase = Transaction {
            version: transaction::Version::TWO,
            lock_time: absolute::LockTime::ZERO,
            input: vec![TxIn {
                previous_output: OutPoint::null(),
                script_sig: script::Builder::new()
                    .push_int(i64::from(height))
                    .push_int(i64::try_from(self.mined).unwrap_or(0))
                    .into_script(),
                sequence: Sequence::MAX,
                witness: Witness::new(),
            }],
            output: vec![TxOut {
                value: Amount::from_sat(Self::subsidy(height).saturating_add(fees)),
                script_pubkey: to.clone(),
            }],
        };
        let mut txdata = vec![coinbase];
        txdata.append(&mut self.mempool);
        let prev = self.blocks.last().map(|b| b.block_hash()).unwrap_or_else(BlockHash::all_zeros);
        let time = self.blocks.last().map_or(1_296_688_602, |b| b.header.time).saturating_add(600);
        let mut block = Block {
            header: block::Header {
                version: block::Version::from_consensus(0x2000_0000),
                prev_blockhash: prev,
                merkle_root: TxMerkleNode::all_zeros(),
                time,
                bits: CompactTarget::from_consensus(REGTEST_BITS),
                nonce: 0,
            },
            txdata,
        };
        block.header.merkle_root =
            block.compute_merkle_root().ok_or_else(|| refuse("empty block"))?;
        let target = block.header.target();
        while block.header.validate_pow(target).is_err() {
            block.header.nonce = block.header.nonce.wrapping_add(1);
        }
        let hash = block.block_hash();
        self.view.apply(&block, height);
        self.blocks.push(block);
        Ok(hash)
    }

    fn mine(&mut self, blocks: u32, to: Option<ScriptBuf>) -> Result<Vec<BlockHash>, BtcError> {
        let to = to.unwrap_or_else(|| self.faucet_script.clone());
        (0..blocks).map(|_| self.mine_one(&to)).collect()
    }

    /// Replace the last `depth` blocks by `depth + 1` new ones. Their transactions go back to
    /// the mempool (and into the new blocks) when `keep`, or are dropped, as when a
    /// conflicting spend won on the other branch.
    fn reorg(&mut self, depth: u32, keep: bool) -> Result<Vec<BlockHash>, BtcError> {
        let depth = usize::try_from(depth).map_err(refuse)?;
        if depth == 0 || depth >= self.blocks.len() {
            return Err(refuse(format!("cannot replace {depth} of {} blocks", self.blocks.len())));
        }
        let orphaned = self.blocks.split_off(self.blocks.len().saturating_sub(depth));
        self.view = View::replay(&self.blocks);
        let pool = std::mem::take(&mut self.mempool);
        if keep {
            for tx in orphaned.into_iter().flat_map(|b| b.txdata).filter(|t| !t.is_coinbase()) {
                // What no longer fits (a spend of an orphaned coinbase) is dropped.
                let _ = self.accept(tx);
            }
        }
        let depth = u32::try_from(depth).map_err(refuse)?;
        let hashes = self.mine(depth.saturating_add(1), None)?;
        // What waited in the mempool before waits again, if it still spends unspent coins.
        for tx in pool {
            let _ = self.accept(tx);
        }
        Ok(hashes)
    }

    /// Pay `sats` to `to` from the faucet's mature coins; the transaction waits in the mempool.
    fn fund(&mut self, to: ScriptBuf, sats: u64) -> Result<Txid, BtcError> {
        let view = self.view();
        let (created, spent) = self.mempool_outputs();
        let next = self.tip_height().saturating_add(1);
        let mut coins: Vec<(OutPoint, TxOut)> = view
            .utxos
            .iter()
            .filter(|(_, c)| !c.coinbase || next.saturating_sub(c.height) >= COINBASE_MATURITY)
            .map(|(op, c)| (*op, c.out.clone()))
            .chain(created)
            .filter(|(op, o)| o.script_pubkey == self.faucet_script && !spent.contains_key(op))
            .collect();
        coins.sort_by_key(|(op, o)| (std::cmp::Reverse(o.value), *op));
        let need = sats.checked_add(FAUCET_FEE).ok_or_else(|| refuse("amount too large"))?;
        let mut chosen = Vec::new();
        let mut total: u64 = 0;
        for (op, o) in coins {
            if total >= need {
                break;
            }
            total = total.saturating_add(o.value.to_sat());
            chosen.push((op, o));
        }
        if total < need {
            return Err(refuse(format!(
                "the faucet holds {total} sat in mature coins, not {need}: mine more blocks"
            )));
        }
        let mut output = vec![TxOut { value: Amount::from_sat(sats), script_pubkey: to }];
        let change = total.saturating_sub(need);
        if change >= 1_000 {
            output.push(TxOut {
                value: Amount::from_sat(change),
                script_pubkey: self.faucet_script.clone(),
            });
        }
        let mut tx = Transaction {
            version: transaction::Version::TWO,
            lock_time: absolute::LockTime::ZERO,
            input: chosen
                .iter()
                .map(|(op, _)| TxIn {
                    previous_output: *op,
                    script_sig: ScriptBuf::new(),
                    sequence: Sequence::ENABLE_RBF_NO_LOCKTIME,
                    witness: Witness::new(),
                })
                .collect(),
            output,
        };
        let secp = Secp256k1::signing_only();
        let pk = self.faucet_key.public_key(&secp);
        let mut witnesses = Vec::new();
        {
            let mut cache = SighashCache::new(&tx);
            for (n, (_, o)) in chosen.iter().enumerate() {
                let h = cache
                    .p2wpkh_signature_hash(n, &o.script_pubkey, o.value, EcdsaSighashType::All)
                    .map_err(refuse)?;
                let sig =
                    secp.sign_ecdsa(&Message::from_digest(h.to_byte_array()), &self.faucet_key);
                let sig = bitcoin::ecdsa::Signature {
                    signature: sig,
                    sighash_type: EcdsaSighashType::All,
                };
                witnesses.push(Witness::p2wpkh(&sig, &pk));
            }
        }
        for (input, w) in tx.input.iter_mut().zip(witnesses) {
            input.witness = w;
        }
        self.accept(tx)
    }

    fn block_at(&self, hash: &BlockHash) -> Option<(u32, &Block)> {
        self.blocks
            .iter()
            .enumerate()
            .find(|(_, b)| b.block_hash() == *hash)
            .map(|(h, b)| (u32::try_from(h).unwrap_or(u32::MAX), b))
    }

    fn address_of(&self, spk: &ScriptBuf) -> Option<String> {
        bitcoin::Address::from_script(spk, self.network).ok().map(|a| a.to_string())
    }

    fn status_json(&self, txid: &Txid, view: &View) -> Option<serde_json::Value> {
        if let Some((height, _)) = view.confirmed.get(txid) {
            let hash = self.blocks.get(usize::try_from(*height).ok()?)?.block_hash();
            return Some(serde_json::json!({
                "confirmed": true, "block_height": height, "block_hash": hash.to_string(),
            }));
        }
        self.mempool
            .iter()
            .any(|t| t.compute_txid() == *txid)
            .then(|| serde_json::json!({ "confirmed": false }))
    }
}

/// A running local backend: its state, shared with the HTTP server.
#[derive(Debug, Clone)]
pub struct Regtest {
    node: Arc<Mutex<Node>>,
}

/// An answer for a request, as an Esplora server gives it.
type Answer = Result<Response, (StatusCode, String)>;

fn not_found(what: &str) -> (StatusCode, String) {
    (StatusCode::NOT_FOUND, format!("{what} not found"))
}

fn bad(e: impl std::fmt::Display) -> (StatusCode, String) {
    (StatusCode::BAD_REQUEST, e.to_string())
}

fn text(body: String) -> Answer {
    Ok(([(header::CONTENT_TYPE, "text/plain")], body).into_response())
}

fn json(v: serde_json::Value) -> Answer {
    Ok(Json(v).into_response())
}

impl Regtest {
    /// A regtest chain whose faucet has mined the first 101 blocks (so one coinbase is
    /// mature).
    pub fn new() -> Result<Regtest, BtcError> {
        let mut node = Node::new(Network::Regtest)?;
        node.mine(101, None)?;
        Ok(Regtest { node: Arc::new(Mutex::new(node)) })
    }

    /// The chain kept in `path` (a development stack's, across restarts): loaded and checked
    /// when the file exists, a new one (101 blocks to the faucet) otherwise; rewritten after
    /// every change.
    pub fn open(path: &std::path::Path) -> Result<Regtest, BtcError> {
        let mut node = Node::new(Network::Regtest)?;
        if path.exists() {
            node.load(path)?;
        } else {
            node.mine(101, None)?;
        }
        node.file = Some(path.to_path_buf());
        node.save()?;
        Ok(Regtest { node: Arc::new(Mutex::new(node)) })
    }

    fn lock(&self) -> MutexGuard<'_, Node> {
        self.node.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Run a change and keep the chain (when it has a file).
    fn change<T>(&self, f: impl FnOnce(&mut Node) -> Result<T, BtcError>) -> Result<T, BtcError> {
        let mut node = self.lock();
        let out = f(&mut node)?;
        node.save()?;
        Ok(out)
    }

    /// Mine `blocks` blocks (every mempool transaction goes into the first), the coinbase to
    /// `to` (the faucet when `None`).
    pub fn mine(
        &self,
        blocks: u32,
        to: Option<&bitcoin::Address>,
    ) -> Result<Vec<BlockHash>, BtcError> {
        self.change(|n| n.mine(blocks, to.map(bitcoin::Address::script_pubkey)))
    }

    /// Replace the last `depth` blocks by a longer branch; see the module's documentation.
    pub fn reorg(&self, depth: u32, keep_transactions: bool) -> Result<Vec<BlockHash>, BtcError> {
        self.change(|n| n.reorg(depth, keep_transactions))
    }

    /// Pay `sats` to `to` from the faucet (into the mempool; mine to confirm it).
    pub fn fund(&self, to: &bitcoin::Address, sats: u64) -> Result<Txid, BtcError> {
        self.change(|n| n.fund(to.script_pubkey(), sats))
    }

    /// Submit a raw transaction, as `POST /tx` does.
    pub fn submit(&self, tx: Transaction) -> Result<Txid, BtcError> {
        self.change(|n| n.accept(tx))
    }

    pub fn tip_height(&self) -> u32 {
        self.lock().tip_height()
    }

    /// The transactions in the mempool.
    pub fn mempool(&self) -> Vec<Txid> {
        self.lock().mempool.iter().map(Transaction::compute_txid).collect()
    }

    /// Set the estimates `/fee-estimates` serves (sat/vB by confirmation target).
    pub fn set_fee_estimates(&self, estimates: BTreeMap<u16, f64>) {
        self.lock().fee_estimates = estimates;
    }

    /// The Esplora API and the controls, for `axum::serve`.
    pub fn router(&self) -> Router {
        Router::new()
            .route("/blocks/tip/height", get(tip_height))
            .route("/blocks/tip/hash", get(tip_hash))
            .route("/block-height/{height}", get(block_height))
            .route("/block/{hash}", get(block_info))
            .route("/block/{hash}/status", get(block_status))
            .route("/block/{hash}/txids", get(block_txids))
            .route("/block/{hash}/raw", get(block_raw))
            .route("/tx", post(submit))
            .route("/tx/{txid}", get(tx_info))
            .route("/tx/{txid}/hex", get(tx_hex))
            .route("/tx/{txid}/status", get(tx_status))
            .route("/address/{address}", get(address_info))
            .route("/address/{address}/utxo", get(address_utxo))
            .route("/fee-estimates", get(fee_estimates).put(set_fee_estimates))
            .route("/regtest/mine", post(mine))
            .route("/regtest/reorg", post(reorg))
            .route("/regtest/fund", post(fund))
            .with_state(self.clone())
    }

    /// Serve on `listener` until the task is dropped.
    pub async fn serve(self, listener: tokio::net::TcpListener) -> std::io::Result<()> {
        axum::serve(listener, self.router()).await
    }
}

async fn tip_height(State(r): State<Regtest>) -> Answer {
    text(r.lock().tip_height().to_string())
}

async fn tip_hash(State(r): State<Regtest>) -> Answer {
    let node = r.lock();
    let hash = node.blocks.last().map(|b| b.block_hash()).ok_or_else(|| not_found("tip"))?;
    text(hash.to_string())
}

async fn block_height(State(r): State<Regtest>, Path(height): Path<u32>) -> Answer {
    let node = r.lock();
    let block = usize::try_from(height)
        .ok()
        .and_then(|h| node.blocks.get(h))
        .ok_or_else(|| not_found("Block"))?;
    text(block.block_hash().to_string())
}

fn parse_hash(hash: &str) -> Result<BlockHash, (StatusCode, String)> {
    BlockHash::from_str(hash).map_err(|_| bad("Invalid hex string"))
}

async fn block_info(State(r): State<Regtest>, Path(hash): Path<String>) -> Answer {
    let node = r.lock();
    let (height, b) = node.block_at(&parse_hash(&hash)?).ok_or_else(|| not_found("Block"))?;
    json(serde_json::json!({
        "id": b.block_hash().to_string(), "height": height, "timestamp": b.header.time,
        "tx_count": b.txdata.len(), "previousblockhash": b.header.prev_blockhash.to_string(),
    }))
}

async fn block_status(State(r): State<Regtest>, Path(hash): Path<String>) -> Answer {
    let node = r.lock();
    let found = node.block_at(&parse_hash(&hash)?);
    json(match found {
        Some((height, _)) => serde_json::json!({ "in_best_chain": true, "height": height }),
        None => serde_json::json!({ "in_best_chain": false }),
    })
}

async fn block_txids(State(r): State<Regtest>, Path(hash): Path<String>) -> Answer {
    let node = r.lock();
    let (_, b) = node.block_at(&parse_hash(&hash)?).ok_or_else(|| not_found("Block"))?;
    let ids: Vec<String> = b.txdata.iter().map(|t| t.compute_txid().to_string()).collect();
    json(serde_json::json!(ids))
}

async fn block_raw(State(r): State<Regtest>, Path(hash): Path<String>) -> Answer {
    let node = r.lock();
    let (_, b) = node.block_at(&parse_hash(&hash)?).ok_or_else(|| not_found("Block"))?;
    Ok(([(header::CONTENT_TYPE, "application/octet-stream")], serialize(b)).into_response())
}

async fn submit(State(r): State<Regtest>, body: String) -> Answer {
    let tx: Transaction =
        deserialize_hex(body.trim()).map_err(|e| bad(format!("TX decode failed: {e}")))?;
    let txid = r.submit(tx).map_err(|e| {
        bad(format!(
            "sendrawtransaction RPC error: {}",
            e.to_string().trim_start_matches("refused: ")
        ))
    })?;
    text(txid.to_string())
}

fn parse_txid(txid: &str) -> Result<Txid, (StatusCode, String)> {
    Txid::from_str(txid).map_err(|_| bad("Invalid hex string"))
}

async fn tx_info(State(r): State<Regtest>, Path(txid): Path<String>) -> Answer {
    let txid = parse_txid(&txid)?;
    let node = r.lock();
    let view = node.view();
    let tx = node.find_tx(&txid).ok_or_else(|| not_found("Transaction"))?;
    let status = node.status_json(&txid, view).ok_or_else(|| not_found("Transaction"))?;
    let vout: Vec<serde_json::Value> = tx
        .output
        .iter()
        .map(|o| {
            serde_json::json!({
                "scriptpubkey": o.script_pubkey.to_hex_string(),
                "scriptpubkey_address": node.address_of(&o.script_pubkey),
                "value": o.value.to_sat(),
            })
        })
        .collect();
    let fee = if tx.is_coinbase() { Some(0) } else { node.fee_of(tx, view) };
    json(serde_json::json!({
        "txid": txid.to_string(), "version": tx.version.0, "locktime": tx.lock_time.to_consensus_u32(),
        "vout": vout, "fee": fee, "weight": tx.weight().to_wu(), "status": status,
    }))
}

async fn tx_hex(State(r): State<Regtest>, Path(txid): Path<String>) -> Answer {
    let txid = parse_txid(&txid)?;
    let node = r.lock();
    let tx = node.find_tx(&txid).ok_or_else(|| not_found("Transaction"))?;
    text(serialize_hex(tx))
}

async fn tx_status(State(r): State<Regtest>, Path(txid): Path<String>) -> Answer {
    let txid = parse_txid(&txid)?;
    let node = r.lock();
    let view = node.view();
    json(node.status_json(&txid, view).ok_or_else(|| not_found("Transaction"))?)
}

fn parse_address(node: &Node, a: &str) -> Result<ScriptBuf, (StatusCode, String)> {
    crate::address(a, node.network).map(|a| a.script_pubkey()).map_err(bad)
}

async fn address_info(State(r): State<Regtest>, Path(a): Path<String>) -> Answer {
    let node = r.lock();
    let spk = parse_address(&node, &a)?;
    let pays = |tx: &Transaction| tx.output.iter().any(|o| o.script_pubkey == spk);
    let chain = node.blocks.iter().flat_map(|b| b.txdata.iter()).filter(|t| pays(t)).count();
    let pool = node.mempool.iter().filter(|t| pays(t)).count();
    json(serde_json::json!({
        "address": a, "chain_stats": { "tx_count": chain }, "mempool_stats": { "tx_count": pool },
    }))
}

async fn address_utxo(State(r): State<Regtest>, Path(a): Path<String>) -> Answer {
    let node = r.lock();
    let spk = parse_address(&node, &a)?;
    let view = node.view();
    let (created, spent) = node.mempool_outputs();
    let mut out = Vec::new();
    for (op, c) in
        view.utxos.iter().filter(|(op, c)| c.out.script_pubkey == spk && !spent.contains_key(op))
    {
        let hash = node
            .blocks
            .get(usize::try_from(c.height).unwrap_or(usize::MAX))
            .map(|b| b.block_hash().to_string());
        out.push(serde_json::json!({
            "txid": op.txid.to_string(), "vout": op.vout, "value": c.out.value.to_sat(),
            "status": { "confirmed": true, "block_height": c.height, "block_hash": hash },
        }));
    }
    for (op, o) in
        created.iter().filter(|(op, o)| o.script_pubkey == spk && !spent.contains_key(op))
    {
        out.push(serde_json::json!({
            "txid": op.txid.to_string(), "vout": op.vout, "value": o.value.to_sat(),
            "status": { "confirmed": false },
        }));
    }
    json(serde_json::Value::Array(out))
}

async fn fee_estimates(State(r): State<Regtest>) -> Answer {
    let node = r.lock();
    let map: serde_json::Map<String, serde_json::Value> =
        node.fee_estimates.iter().map(|(k, v)| (k.to_string(), serde_json::json!(v))).collect();
    json(serde_json::Value::Object(map))
}

async fn set_fee_estimates(
    State(r): State<Regtest>,
    Json(estimates): Json<BTreeMap<u16, f64>>,
) -> Answer {
    r.set_fee_estimates(estimates);
    json(serde_json::json!({}))
}

#[derive(Deserialize)]
struct MineBody {
    blocks: u32,
    #[serde(default)]
    address: Option<String>,
}

async fn mine(State(r): State<Regtest>, Json(b): Json<MineBody>) -> Answer {
    let to = b.address.as_deref().map(|a| parse_address(&r.lock(), a)).transpose()?;
    let hashes = r.change(|n| n.mine(b.blocks.min(1_000), to)).map_err(bad)?;
    let hashes: Vec<String> = hashes.iter().map(ToString::to_string).collect();
    json(serde_json::json!(hashes))
}

#[derive(Deserialize)]
struct ReorgBody {
    depth: u32,
    #[serde(default)]
    keep_transactions: bool,
}

async fn reorg(State(r): State<Regtest>, Json(b): Json<ReorgBody>) -> Answer {
    let hashes = r.reorg(b.depth, b.keep_transactions).map_err(bad)?;
    let hashes: Vec<String> = hashes.iter().map(ToString::to_string).collect();
    json(serde_json::json!(hashes))
}

#[derive(Deserialize)]
struct FundBody {
    address: String,
    sats: u64,
}

async fn fund(State(r): State<Regtest>, Json(b): Json<FundBody>) -> Answer {
    let to = parse_address(&r.lock(), &b.address)?;
    let txid = r.change(|n| n.fund(to, b.sats)).map_err(bad)?;
    text(txid.to_string())
}

impl Regtest {
    /// The chain's unspent outputs paying `address`, confirmed ones with their height.
    pub fn utxos(&self, address: &bitcoin::Address) -> Vec<(OutPoint, u64, Option<u32>)> {
        let node = self.lock();
        let spk = address.script_pubkey();
        let view = node.view();
        let (created, spent) = node.mempool_outputs();
        let confirmed = view
            .utxos
            .iter()
            .filter(|(op, c)| c.out.script_pubkey == spk && !spent.contains_key(op))
            .map(|(op, c)| (*op, c.out.value.to_sat(), Some(c.height)));
        let pending = created
            .iter()
            .filter(|(op, o)| o.script_pubkey == spk && !spent.contains_key(op))
            .map(|(op, o)| (*op, o.value.to_sat(), None));
        confirmed.chain(pending).collect()
    }
}
