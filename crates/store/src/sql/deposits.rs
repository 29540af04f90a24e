//! Deposits watched on chain: deposit addresses, the watcher's cursor and block hashes, and
//! each transfer into our addresses from seen to credited (or, after a reorganisation,
//! dropped, reversed or held).

use strongroom_chain::BlockRef;
use strongroom_core::ledger::{AccountRef, JournalEntry};
use strongroom_units::ChainId;

use super::*;

/// Block hashes kept per chain for spotting reorganisations.
const KEEP_BLOCKS: i64 = 512;

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub(super) struct DepositAddressRow {
    chain: String,
    customer_id: String,
    wallet: String,
    path_index: i64,
    address: String,
    created_at_ms: i64,
}

impl DepositAddressRow {
    /// The audited entity: `deposit_address/CHAIN/CUSTOMER` for the chain's first hot wallet
    /// (`hot-<family>-1`, the only one before key migrations, so earlier audit records keep
    /// their names), `deposit_address/CHAIN/CUSTOMER/WALLET` for any other.
    fn entity(&self) -> String {
        let base = format!("deposit_address/{}/{}", self.chain, self.customer_id);
        let first = if self.chain.starts_with("bip122:") { "hot-btc-1" } else { "hot-eth-1" };
        if self.wallet == first {
            base
        } else {
            format!("{base}/{}", self.wallet)
        }
    }

    fn to_domain(&self) -> Result<DepositAddress> {
        Ok(DepositAddress {
            chain: ChainId::parse(&self.chain).map_err(|e| StoreError::Corrupt(e.to_string()))?,
            customer_id: uuid(&self.customer_id)?,
            wallet: self.wallet.clone(),
            path_index: u32::try_from(self.path_index)
                .map_err(|_| StoreError::Corrupt("path index".into()))?,
            address: self.address.clone(),
            created_at: Timestamp::from_unix_ms(self.created_at_ms),
        })
    }
}

const ADDRESS_COLUMNS: &str = "chain, customer_id, wallet, path_index, address, created_at_ms";

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub(super) struct ChainDepositRow {
    chain: String,
    txid: String,
    log_index: i64,
    to_address: String,
    customer_id: String,
    asset: String,
    amount: String,
    block_number: i64,
    block_hash: String,
    state: String,
    deposit_id: Option<String>,
    created_at_ms: i64,
    updated_at_ms: i64,
}

const DEPOSIT_COLUMN_LIST: [&str; 13] = [
    "chain",
    "txid",
    "log_index",
    "to_address",
    "customer_id",
    "asset",
    "amount",
    "block_number",
    "block_hash",
    "state",
    "deposit_id",
    "created_at_ms",
    "updated_at_ms",
];

impl ChainDepositRow {
    fn to_domain(&self) -> Result<ChainDeposit> {
        let corrupt = |w: &str| {
            StoreError::Corrupt(format!("chain deposit {}:{}: {w}", self.txid, self.log_index))
        };
        Ok(ChainDeposit {
            chain: ChainId::parse(&self.chain).map_err(|_| corrupt("chain"))?,
            transfer: SeenTransfer {
                txid: self.txid.clone(),
                log_index: u64::try_from(self.log_index).map_err(|_| corrupt("log index"))?,
                to_address: self.to_address.clone(),
                customer_id: uuid(&self.customer_id)?,
                asset: symbol(&self.asset)?,
                amount: amount(&self.amount)?,
                block: BlockRef {
                    number: u64::try_from(self.block_number).map_err(|_| corrupt("block"))?,
                    hash: self.block_hash.clone(),
                },
            },
            state: ChainDepositState::parse(&self.state).ok_or_else(|| corrupt("state"))?,
            deposit_id: self.deposit_id.as_deref().map(uuid).transpose()?,
            created_at: Timestamp::from_unix_ms(self.created_at_ms),
            updated_at: Timestamp::from_unix_ms(self.updated_at_ms),
        })
    }

    fn entity(&self) -> String {
        format!("chain_deposit/{}/{}/{}", self.chain, self.txid, self.log_index)
    }

    async fn update(&self, w: &mut WriteTx, before: &ChainDepositRow) -> Result<()> {
        w.write(
            "UPDATE chain_deposits SET block_number = $1, block_hash = $2, state = $3, deposit_id = $4, updated_at_ms = $5 WHERE chain = $6 AND txid = $7 AND log_index = $8".into(),
            vec![
                Val::Int(self.block_number),
                Val::Text(self.block_hash.clone()),
                Val::Text(self.state.clone()),
                Val::OptText(self.deposit_id.clone()),
                Val::Int(self.updated_at_ms),
                Val::Text(self.chain.clone()),
                Val::Text(self.txid.clone()),
                Val::Int(self.log_index),
            ],
        )
        .await?;
        w.record(self.entity(), Some(hash_of(before)?), Some(hash_of(self)?));
        Ok(())
    }
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub(super) struct CursorRow {
    chain: String,
    next_block: i64,
    updated_at_ms: i64,
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub(super) struct BlockRow {
    chain: String,
    number: i64,
    hash: String,
}

fn int(v: u64, what: &str) -> Result<i64> {
    i64::try_from(v).map_err(|_| StoreError::Refused(format!("{what} {v} is too large")))
}

fn lock_suffix(w: &WriteTx) -> &'static str {
    for_update(w.backend)
}

async fn lock_deposit(
    w: &mut WriteTx,
    chain: &str,
    txid: &str,
    log_index: i64,
) -> Result<Option<ChainDepositRow>> {
    let sql = format!(
        "SELECT {} FROM chain_deposits WHERE chain = $1 AND txid = $2 AND log_index = $3{}",
        DEPOSIT_COLUMN_LIST.join(", "),
        lock_suffix(w)
    );
    let row =
        sqlx::query(&sql).bind(chain).bind(txid).bind(log_index).fetch_optional(&mut *w.tx).await?;
    row.map(|r| row_of::<ChainDepositRow>(&r)).transpose()
}

async fn set_cursor(w: &mut WriteTx, ctx: &WriteCtx, chain: &str, next: i64) -> Result<()> {
    let sql = format!(
        "SELECT chain, next_block, updated_at_ms FROM chain_cursors WHERE chain = $1{}",
        lock_suffix(w)
    );
    let before = sqlx::query(&sql)
        .bind(chain)
        .fetch_optional(&mut *w.tx)
        .await?
        .map(|r| row_of::<CursorRow>(&r))
        .transpose()?;
    let after =
        CursorRow { chain: chain.to_owned(), next_block: next, updated_at_ms: ctx.now.unix_ms() };
    match &before {
        Some(_) => {
            w.write(
                "UPDATE chain_cursors SET next_block = $1, updated_at_ms = $2 WHERE chain = $3"
                    .into(),
                vec![Val::Int(next), Val::Int(after.updated_at_ms), Val::Text(after.chain.clone())],
            )
            .await?
        }
        None => {
            w.insert(
                "chain_cursors",
                &["chain", "next_block", "updated_at_ms"],
                vec![Val::Text(after.chain.clone()), Val::Int(next), Val::Int(after.updated_at_ms)],
            )
            .await?
        }
    }
    w.record(
        format!("cursor/{chain}"),
        before.as_ref().map(hash_of).transpose()?,
        Some(hash_of(&after)?),
    );
    Ok(())
}

/// Delete the chain's stored blocks matching `condition` (on `number`, parameter $2).
/// Block hashes are the watcher's memory of what it read, not custody state: they are not
/// audited row by row (a scan commits with one record), and an edited hash can only make
/// the watcher rewind and read again, since every credit re-checks its block on chain.
async fn delete_blocks(w: &mut WriteTx, chain: &str, condition: &str, bound: i64) -> Result<()> {
    w.write(
        format!("DELETE FROM chain_blocks WHERE chain = $1 AND number {condition} $2"),
        vec![Val::Text(chain.to_owned()), Val::Int(bound)],
    )
    .await
}

pub(super) async fn stage_address(
    w: &mut WriteTx,
    ctx: &WriteCtx,
    new: NewDepositAddress,
) -> Result<Staged> {
    let next = sqlx::query("SELECT COALESCE(MAX(path_index) + 1, 0) AS next FROM deposit_addresses WHERE chain = $1 AND wallet = $2")
        .bind(new.chain.as_str())
        .bind(&new.wallet)
        .fetch_one(&mut *w.tx)
        .await?;
    let index: i64 = next.try_get("next")?;
    let address = (new.derive)(
        u32::try_from(index)
            .map_err(|_| StoreError::Refused("address index space exhausted".into()))?,
    )
    .map_err(StoreError::Refused)?;
    let row = DepositAddressRow {
        chain: new.chain.as_str().to_owned(),
        customer_id: new.customer_id.to_string(),
        wallet: new.wallet.clone(),
        path_index: index,
        address,
        created_at_ms: ctx.now.unix_ms(),
    };
    w.insert(
        "deposit_addresses",
        &["chain", "customer_id", "wallet", "path_index", "address", "created_at_ms"],
        vec![
            Val::Text(row.chain.clone()),
            Val::Text(row.customer_id.clone()),
            Val::Text(row.wallet.clone()),
            Val::Int(row.path_index),
            Val::Text(row.address.clone()),
            Val::Int(row.created_at_ms),
        ],
    )
    .await?;
    let subject = row.entity();
    w.record(subject.clone(), None, Some(hash_of(&row)?));
    Ok(Staged {
        action: "deposit_address.created".into(),
        subject,
        detail: serde_json::json!({ "wallet": row.wallet, "path_index": index, "address": row.address }),
        result: to_json(&row.to_domain()?)?,
    })
}

pub(super) async fn stage_scan(
    w: &mut WriteTx,
    ctx: &WriteCtx,
    batch: ScanBatch,
) -> Result<Staged> {
    let chain = batch.chain.as_str().to_owned();
    for b in &batch.blocks {
        let number = int(b.number, "block")?;
        let existing = sqlx::query(
            "SELECT chain, number, hash FROM chain_blocks WHERE chain = $1 AND number = $2",
        )
        .bind(&chain)
        .bind(number)
        .fetch_optional(&mut *w.tx)
        .await?
        .map(|r| row_of::<BlockRow>(&r))
        .transpose()?;
        match existing {
            Some(row) if row.hash == b.hash => {}
            Some(row) => {
                return Err(StoreError::Refused(format!(
                    "block {} was {} and is now {}: rewind before scanning again",
                    b.number, row.hash, b.hash
                )))
            }
            None => {
                w.insert(
                    "chain_blocks",
                    &["chain", "number", "hash"],
                    vec![Val::Text(chain.clone()), Val::Int(number), Val::Text(b.hash.clone())],
                )
                .await?;
            }
        }
    }
    let mut new_transfers = 0;
    for t in &batch.transfers {
        let log_index = int(t.log_index, "log index")?;
        let row = ChainDepositRow {
            chain: chain.clone(),
            txid: t.txid.clone(),
            log_index,
            to_address: t.to_address.clone(),
            customer_id: t.customer_id.to_string(),
            asset: t.asset.to_string(),
            amount: t.amount.to_string(),
            block_number: int(t.block.number, "block")?,
            block_hash: t.block.hash.clone(),
            state: ChainDepositState::Seen.as_str().into(),
            deposit_id: None,
            created_at_ms: ctx.now.unix_ms(),
            updated_at_ms: ctx.now.unix_ms(),
        };
        match lock_deposit(w, &chain, &t.txid, log_index).await? {
            None => {
                let vals = vec![
                    Val::Text(row.chain.clone()),
                    Val::Text(row.txid.clone()),
                    Val::Int(row.log_index),
                    Val::Text(row.to_address.clone()),
                    Val::Text(row.customer_id.clone()),
                    Val::Text(row.asset.clone()),
                    Val::Text(row.amount.clone()),
                    Val::Int(row.block_number),
                    Val::Text(row.block_hash.clone()),
                    Val::Text(row.state.clone()),
                    Val::OptText(None),
                    Val::Int(row.created_at_ms),
                    Val::Int(row.updated_at_ms),
                ];
                w.insert("chain_deposits", &DEPOSIT_COLUMN_LIST, vals).await?;
                w.record(row.entity(), None, Some(hash_of(&row)?));
                new_transfers += 1;
            }
            // Seen again: after a reorganisation it may sit in another block now. A dropped
            // one that came back is a deposit again; reversed or held ones stay as they are
            // (the engine alerts).
            Some(before) if matches!(before.state.as_str(), "seen" | "orphaned" | "dropped") => {
                if before.block_hash != row.block_hash || before.state != "seen" {
                    let mut after = before.clone();
                    after.block_number = row.block_number;
                    after.block_hash = row.block_hash.clone();
                    after.state = "seen".into();
                    after.updated_at_ms = ctx.now.unix_ms();
                    after.update(w, &before).await?;
                }
            }
            Some(_) => {}
        }
    }
    let next = int(batch.next_block, "block")?;
    set_cursor(w, ctx, &chain, next).await?;
    delete_blocks(w, &chain, "<", next.saturating_sub(KEEP_BLOCKS)).await?;
    Ok(Staged {
        action: "chain.scanned".into(),
        subject: format!("cursor/{chain}"),
        detail: serde_json::json!({ "blocks": batch.blocks.len(), "new_transfers": new_transfers, "next_block": next }),
        result: serde_json::Value::Null,
    })
}

pub(super) async fn stage_rewind(
    w: &mut WriteTx,
    ctx: &WriteCtx,
    chain: &ChainId,
    fork: u64,
) -> Result<Staged> {
    let chain = chain.as_str().to_owned();
    let fork = int(fork, "block")?;
    delete_blocks(w, &chain, ">=", fork).await?;
    let sql = format!(
        "SELECT {} FROM chain_deposits WHERE chain = $1 AND block_number >= $2 AND state = 'seen'{}",
        DEPOSIT_COLUMN_LIST.join(", "),
        lock_suffix(w)
    );
    let rows = sqlx::query(&sql).bind(&chain).bind(fork).fetch_all(&mut *w.tx).await?;
    let mut orphaned = Vec::new();
    for r in rows {
        let before = row_of::<ChainDepositRow>(&r)?;
        let mut after = before.clone();
        after.state = "orphaned".into();
        after.updated_at_ms = ctx.now.unix_ms();
        after.update(w, &before).await?;
        orphaned.push(format!("{}:{}", after.txid, after.log_index));
    }
    set_cursor(w, ctx, &chain, fork).await?;
    Ok(Staged {
        action: "chain.reorganised".into(),
        subject: format!("cursor/{chain}"),
        detail: serde_json::json!({ "fork": fork, "orphaned": orphaned }),
        result: serde_json::Value::Null,
    })
}

pub(super) async fn stage_credit(
    w: &mut WriteTx,
    ctx: &WriteCtx,
    chain: &ChainId,
    txid: &str,
    log_index: u64,
    [deposit_id, entry_id]: [Uuid; 2],
) -> Result<Staged> {
    let before = lock_deposit(w, chain.as_str(), txid, int(log_index, "log index")?).await?.ok_or(
        StoreError::NotFound { entity: "chain deposit", id: format!("{txid}:{log_index}") },
    )?;
    if before.state != "seen" || before.deposit_id.is_some() {
        return Err(StoreError::Refused(format!(
            "deposit {txid}:{log_index} is {}{}",
            before.state,
            if before.deposit_id.is_some() { " and credited" } else { "" }
        )));
    }
    let new = NewDeposit {
        id: deposit_id,
        entry_id,
        customer_id: uuid(&before.customer_id)?,
        asset: symbol(&before.asset)?,
        amount: amount(&before.amount)?,
        reference: format!("{txid}:{log_index}"),
    };
    // The ledger credit and the deposit row, exactly as an operator credit makes them.
    super::stage_deposit(w, ctx, new).await?;
    w.flush().await?;
    let mut after = before.clone();
    after.deposit_id = Some(deposit_id.to_string());
    after.updated_at_ms = ctx.now.unix_ms();
    after.update(w, &before).await?;
    Ok(Staged {
        action: "deposit.credited".into(),
        subject: after.entity(),
        detail: serde_json::json!({
            "customer_id": after.customer_id, "asset": after.asset, "amount": after.amount,
            "block": after.block_number, "block_hash": after.block_hash, "deposit_id": deposit_id,
        }),
        result: to_json(&after.to_domain()?)?,
    })
}

pub(super) async fn stage_resolve(
    w: &mut WriteTx,
    ctx: &WriteCtx,
    chain: &ChainId,
    txid: &str,
    log_index: u64,
    entry_id: Uuid,
) -> Result<Staged> {
    let before = lock_deposit(w, chain.as_str(), txid, int(log_index, "log index")?).await?.ok_or(
        StoreError::NotFound { entity: "chain deposit", id: format!("{txid}:{log_index}") },
    )?;
    if before.state != "orphaned" {
        return Err(StoreError::Refused(format!(
            "deposit {txid}:{log_index} is {}, not orphaned",
            before.state
        )));
    }
    let mut after = before.clone();
    after.updated_at_ms = ctx.now.unix_ms();
    let customer = uuid(&before.customer_id)?;
    let asset = symbol(&before.asset)?;
    let amt = amount(&before.amount)?;
    let action = if before.deposit_id.is_none() {
        after.state = "dropped".into();
        "deposit.dropped"
    } else {
        let key = AccountRef::available(customer, &asset).key();
        let available = w
            .select_accounts(std::iter::once(&key))
            .await?
            .get(&key)
            .map(|a| a.balance())
            .transpose()?
            .unwrap_or(Amount::ZERO);
        if available >= amt {
            let entry = JournalEntry::deposit_reversal(entry_id, customer, &asset, amt)?;
            w.apply_entry(&entry, &after.entity(), ctx.now).await?;
            w.flush().await?;
            after.state = "reversed".into();
            "deposit.reversed"
        } else {
            // The customer has already moved it: nothing can be taken back automatically.
            after.state = "held".into();
            "alert.deposit_reorganised_after_use"
        }
    };
    after.update(w, &before).await?;
    Ok(Staged {
        action: action.into(),
        subject: after.entity(),
        detail: serde_json::json!({
            "customer_id": after.customer_id, "asset": after.asset, "amount": after.amount,
            "orphaned_block": before.block_number, "orphaned_block_hash": before.block_hash,
        }),
        result: to_json(&after.to_domain()?)?,
    })
}

impl SqlStore {
    pub(super) async fn read_deposit_address(
        &self,
        chain: &ChainId,
        wallet: &str,
        customer: Uuid,
    ) -> Result<Option<DepositAddress>> {
        let sql = format!(
            "SELECT {ADDRESS_COLUMNS} FROM deposit_addresses WHERE chain = $1 AND wallet = $2 AND customer_id = $3"
        );
        let row = sqlx::query(&sql)
            .bind(chain.as_str())
            .bind(wallet)
            .bind(customer.to_string())
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| row_of::<DepositAddressRow>(&r)?.to_domain()).transpose()
    }

    pub(super) async fn read_deposit_address_by_address(
        &self,
        chain: &ChainId,
        address: &str,
    ) -> Result<Option<DepositAddress>> {
        let sql = format!(
            "SELECT {ADDRESS_COLUMNS} FROM deposit_addresses WHERE chain = $1 AND LOWER(address) = LOWER($2)"
        );
        let row =
            sqlx::query(&sql).bind(chain.as_str()).bind(address).fetch_optional(&self.pool).await?;
        row.map(|r| row_of::<DepositAddressRow>(&r)?.to_domain()).transpose()
    }

    pub(super) async fn read_deposit_addresses(
        &self,
        chain: &ChainId,
    ) -> Result<Vec<DepositAddress>> {
        let sql = format!(
            "SELECT {ADDRESS_COLUMNS} FROM deposit_addresses WHERE chain = $1 ORDER BY wallet, path_index"
        );
        let rows = sqlx::query(&sql).bind(chain.as_str()).fetch_all(&self.pool).await?;
        rows.iter().map(|r| row_of::<DepositAddressRow>(r)?.to_domain()).collect()
    }

    pub(super) async fn read_deposit_addresses_from(
        &self,
        chain: &ChainId,
        wallet: &str,
        from_index: u64,
        limit: u32,
    ) -> Result<Vec<DepositAddress>> {
        let sql = format!(
            "SELECT {ADDRESS_COLUMNS} FROM deposit_addresses WHERE chain = $1 AND wallet = $2 AND path_index >= $3 ORDER BY path_index LIMIT $4"
        );
        let rows = sqlx::query(&sql)
            .bind(chain.as_str())
            .bind(wallet)
            .bind(i64::try_from(from_index).unwrap_or(i64::MAX))
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(|r| row_of::<DepositAddressRow>(r)?.to_domain()).collect()
    }

    pub(super) async fn read_cursor(&self, chain: &ChainId) -> Result<Option<u64>> {
        let row = sqlx::query("SELECT next_block FROM chain_cursors WHERE chain = $1")
            .bind(chain.as_str())
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| {
            let n: i64 = r.try_get("next_block")?;
            u64::try_from(n).map_err(|_| StoreError::Corrupt("cursor".into()))
        })
        .transpose()
    }

    pub(super) async fn read_blocks(&self, chain: &ChainId, limit: u32) -> Result<Vec<BlockRef>> {
        let rows = sqlx::query("SELECT chain, number, hash FROM chain_blocks WHERE chain = $1 ORDER BY number DESC LIMIT $2")
            .bind(chain.as_str())
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                let b = row_of::<BlockRow>(r)?;
                Ok(BlockRef {
                    number: u64::try_from(b.number)
                        .map_err(|_| StoreError::Corrupt("block".into()))?,
                    hash: b.hash,
                })
            })
            .collect()
    }

    /// Watched transfers on `chain` in `state` (any when `None`); with `uncredited`, only
    /// those not credited yet (the watcher's working set, which stays small while credited
    /// history grows).
    pub(super) async fn read_chain_deposits(
        &self,
        chain: &ChainId,
        state: Option<ChainDepositState>,
        uncredited: bool,
    ) -> Result<Vec<ChainDeposit>> {
        let sql = format!(
            "SELECT {} FROM chain_deposits WHERE chain = $1 AND (CAST($2 AS TEXT) IS NULL OR state = $2){} ORDER BY block_number, txid, log_index",
            DEPOSIT_COLUMN_LIST.join(", "),
            if uncredited { " AND deposit_id IS NULL" } else { "" }
        );
        let rows = sqlx::query(&sql)
            .bind(chain.as_str())
            .bind(state.map(|s| s.as_str().to_owned()))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(|r| row_of::<ChainDepositRow>(r)?.to_domain()).collect()
    }

    pub(super) async fn read_chain_deposit(
        &self,
        chain: &ChainId,
        txid: &str,
        log_index: u64,
    ) -> Result<Option<ChainDeposit>> {
        let sql = format!(
            "SELECT {} FROM chain_deposits WHERE chain = $1 AND txid = $2 AND log_index = $3",
            DEPOSIT_COLUMN_LIST.join(", ")
        );
        let row = sqlx::query(&sql)
            .bind(chain.as_str())
            .bind(txid)
            .bind(int(log_index, "log index")?)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| row_of::<ChainDepositRow>(&r)?.to_domain()).transpose()
    }

    /// State hashes of the deposit tables, for `verify_audit`.
    pub(super) async fn deposit_entity_states(
        &self,
        out: &mut Vec<(String, Digest32)>,
    ) -> Result<()> {
        for r in sqlx::query(&format!("SELECT {ADDRESS_COLUMNS} FROM deposit_addresses"))
            .fetch_all(&self.pool)
            .await?
        {
            let row = row_of::<DepositAddressRow>(&r)?;
            out.push((row.entity(), hash_of(&row)?));
        }
        for r in
            sqlx::query(&format!("SELECT {} FROM chain_deposits", DEPOSIT_COLUMN_LIST.join(", ")))
                .fetch_all(&self.pool)
                .await?
        {
            let row = row_of::<ChainDepositRow>(&r)?;
            out.push((row.entity(), hash_of(&row)?));
        }
        for r in sqlx::query("SELECT chain, next_block, updated_at_ms FROM chain_cursors")
            .fetch_all(&self.pool)
            .await?
        {
            let row = row_of::<CursorRow>(&r)?;
            out.push((format!("cursor/{}", row.chain), hash_of(&row)?));
        }
        Ok(())
    }
}
