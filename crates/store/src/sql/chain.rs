//! Withdrawals on chain: nonce allocation, the stored transaction and its life after
//! signing. Every command here locks the withdrawal row first, so two engines working on
//! the same withdrawal serialise, and the loser sees the winner's result.

use strongroom_chain::{BlockRef, SignedTx};
use strongroom_core::ledger::{JournalEntry, TREASURY_CUSTOMER, TREASURY_EXTERNAL_ID};
use strongroom_units::ChainId;

use super::sweeps::{self, SweepRow};
use super::*;

pub(super) const CHAIN_TX_COLUMN_LIST: [&str; 14] = [
    "owner_id",
    "chain",
    "wallet",
    "nonce",
    "unsigned_tx",
    "fee_asset",
    "fee_reserved",
    "signed_tx",
    "txid",
    "block_number",
    "block_hash",
    "fee_paid",
    "created_at_ms",
    "updated_at_ms",
];

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub(super) struct ChainTxRow {
    owner_id: String,
    chain: String,
    wallet: String,
    nonce: i64,
    unsigned_tx: String,
    fee_asset: String,
    fee_reserved: String,
    signed_tx: Option<String>,
    txid: Option<String>,
    block_number: Option<i64>,
    block_hash: Option<String>,
    fee_paid: Option<String>,
    created_at_ms: i64,
    updated_at_ms: i64,
}

impl ChainTxRow {
    pub(super) fn to_domain(&self) -> Result<ChainTx> {
        let corrupt =
            |what: &str| StoreError::Corrupt(format!("chain tx {}: {what}", self.owner_id));
        let signed = signed_of(&self.signed_tx, &self.txid).map_err(&corrupt)?;
        let block = match (self.block_number, &self.block_hash) {
            (Some(n), Some(h)) => Some(BlockRef {
                number: u64::try_from(n).map_err(|_| corrupt("block number"))?,
                hash: h.clone(),
            }),
            (None, None) => None,
            _ => return Err(corrupt("block number and hash disagree")),
        };
        Ok(ChainTx {
            owner_id: uuid(&self.owner_id)?,
            chain: ChainId::parse(&self.chain).map_err(|_| corrupt("chain"))?,
            wallet: self.wallet.clone(),
            nonce: u64::try_from(self.nonce).map_err(|_| corrupt("nonce"))?,
            unsigned_tx: self.unsigned_tx.clone(),
            fee_asset: symbol(&self.fee_asset)?,
            fee_reserved: amount(&self.fee_reserved)?,
            signed,
            block,
            fee_paid: self.fee_paid.as_deref().map(amount).transpose()?,
            created_at: Timestamp::from_unix_ms(self.created_at_ms),
            updated_at: Timestamp::from_unix_ms(self.updated_at_ms),
        })
    }

    /// This row with another version of its transaction (a mined fee bump).
    pub(super) fn replace_with(&mut self, unsigned: &str, signed: &str, txid: &str, now_ms: i64) {
        self.unsigned_tx = unsigned.to_owned();
        self.signed_tx = Some(signed.to_owned());
        self.txid = Some(txid.to_owned());
        self.updated_at_ms = now_ms;
    }

    /// Whether both rows hold the same transaction.
    pub(super) fn same_transaction(&self, other: &ChainTxRow) -> bool {
        self.txid == other.txid && self.signed_tx == other.signed_tx
    }

    pub(super) fn txid(&self) -> Option<&str> {
        self.txid.as_deref()
    }

    fn values(&self) -> Vec<Val> {
        let opt = |v: &Option<String>| Val::OptText(v.clone());
        vec![
            Val::Text(self.owner_id.clone()),
            Val::Text(self.chain.clone()),
            Val::Text(self.wallet.clone()),
            Val::Int(self.nonce),
            Val::Text(self.unsigned_tx.clone()),
            Val::Text(self.fee_asset.clone()),
            Val::Text(self.fee_reserved.clone()),
            opt(&self.signed_tx),
            opt(&self.txid),
            Val::OptInt(self.block_number),
            opt(&self.block_hash),
            opt(&self.fee_paid),
            Val::Int(self.created_at_ms),
            Val::Int(self.updated_at_ms),
        ]
    }
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub(super) struct NonceRow {
    chain: String,
    wallet: String,
    next_nonce: i64,
    updated_at_ms: i64,
}

/// A stored signed transaction from its two columns (both or neither).
pub(super) fn signed_of(
    raw: &Option<String>,
    txid: &Option<String>,
) -> std::result::Result<Option<SignedTx>, &'static str> {
    match (raw, txid) {
        (Some(raw), Some(txid)) => Ok(Some(SignedTx {
            raw: hex::decode(raw).map_err(|_| "signed_tx is not hex")?,
            txid: txid.clone(),
        })),
        (None, None) => Ok(None),
        _ => Err("signed_tx and txid disagree"),
    }
}

/// A coin a built transaction spends, and whose transaction it is.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub(super) struct CoinRow {
    chain: String,
    coin: String,
    owner_id: String,
    created_at_ms: i64,
}

/// Of `coins` on `chain`, the reserved ones and their owners.
pub(super) async fn reserved_coins<'e, E>(
    exec: E,
    chain: &ChainId,
    coins: &[String],
) -> Result<BTreeMap<String, Uuid>>
where
    E: sqlx::Executor<'e, Database = sqlx::Any>,
{
    if coins.is_empty() {
        return Ok(BTreeMap::new());
    }
    let params: Vec<String> = (2..coins.len().saturating_add(2)).map(|i| format!("${i}")).collect();
    let sql = format!(
        "SELECT chain, coin, owner_id, created_at_ms FROM coin_reservations WHERE chain = $1 AND coin IN ({})",
        params.join(", ")
    );
    let mut q = sqlx::query(&sql).bind(chain.as_str().to_owned());
    for c in coins {
        q = q.bind(c.clone());
    }
    let mut out = BTreeMap::new();
    for r in q.fetch_all(exec).await? {
        let row = row_of::<CoinRow>(&r)?;
        let owner = uuid(&row.owner_id)?;
        out.insert(row.coin, owner);
    }
    Ok(out)
}

fn chain_tx_sql(backend: Backend, lock: bool) -> String {
    format!(
        "SELECT {} FROM chain_txs WHERE owner_id = $1{}",
        CHAIN_TX_COLUMN_LIST.join(", "),
        if lock { for_update(backend) } else { "" }
    )
}

pub(super) async fn read_chain_tx(
    pool: &AnyPool,
    backend: Backend,
    id: Uuid,
) -> Result<Option<ChainTx>> {
    let row = sqlx::query(&chain_tx_sql(backend, false))
        .bind(id.to_string())
        .fetch_optional(pool)
        .await?;
    row.map(|r| row_of::<ChainTxRow>(&r)?.to_domain()).transpose()
}

pub(super) async fn lock_chain_tx(w: &mut WriteTx, id: Uuid) -> Result<ChainTxRow> {
    let row = sqlx::query(&chain_tx_sql(w.backend, true))
        .bind(id.to_string())
        .fetch_optional(&mut *w.tx)
        .await?
        .ok_or(StoreError::NotFound { entity: "chain transaction", id: id.to_string() })?;
    row_of::<ChainTxRow>(&row)
}

/// Rewrite a chain_txs row and note the change.
async fn update_chain_tx(w: &mut WriteTx, before: &ChainTxRow, after: &ChainTxRow) -> Result<()> {
    w.write(
        "UPDATE chain_txs SET signed_tx = $1, txid = $2, block_number = $3, block_hash = $4, fee_paid = $5, updated_at_ms = $6 WHERE owner_id = $7".into(),
        vec![
            Val::OptText(after.signed_tx.clone()),
            Val::OptText(after.txid.clone()),
            Val::OptInt(after.block_number),
            Val::OptText(after.block_hash.clone()),
            Val::OptText(after.fee_paid.clone()),
            Val::Int(after.updated_at_ms),
            Val::Text(after.owner_id.clone()),
        ],
    )
    .await?;
    w.record(format!("chain_tx/{}", after.owner_id), Some(hash_of(before)?), Some(hash_of(after)?));
    Ok(())
}

/// Replace the transaction of a chain_txs row by another version of it (a mined fee bump)
/// and note the change.
pub(super) async fn replace_chain_tx(
    w: &mut WriteTx,
    before: &ChainTxRow,
    after: &ChainTxRow,
) -> Result<()> {
    w.write(
        "UPDATE chain_txs SET unsigned_tx = $1, signed_tx = $2, txid = $3, updated_at_ms = $4 WHERE owner_id = $5".into(),
        vec![
            Val::Text(after.unsigned_tx.clone()),
            Val::OptText(after.signed_tx.clone()),
            Val::OptText(after.txid.clone()),
            Val::Int(after.updated_at_ms),
            Val::Text(after.owner_id.clone()),
        ],
    )
    .await?;
    w.record(format!("chain_tx/{}", after.owner_id), Some(hash_of(before)?), Some(hash_of(after)?));
    Ok(())
}

/// The withdrawal or sweep a chain transaction belongs to, locked for this write.
pub(super) enum Owner {
    Withdrawal(WithdrawalRow, Withdrawal),
    Sweep(SweepRow, Sweep),
}

impl Owner {
    pub(super) fn state(&self) -> WithdrawalState {
        match self {
            Owner::Withdrawal(_, w) => w.state,
            Owner::Sweep(_, s) => s.state,
        }
    }
    fn intent(&self) -> &strongroom_core::Intent {
        match self {
            Owner::Withdrawal(_, w) => &w.intent,
            Owner::Sweep(_, s) => &s.intent,
        }
    }
    /// The sending account whose nonces the transaction uses.
    fn account(&self) -> String {
        match self {
            Owner::Withdrawal(_, w) => w.intent.source_wallet.as_str().to_owned(),
            Owner::Sweep(_, s) => s.account(),
        }
    }
    /// `withdrawal` or `sweep`: the audit subject's and actions' prefix.
    pub(super) fn kind(&self) -> &'static str {
        match self {
            Owner::Withdrawal(..) => "withdrawal",
            Owner::Sweep(..) => "sweep",
        }
    }
    pub(super) fn subject(&self, id: Uuid) -> String {
        format!("{}/{id}", self.kind())
    }
    fn refuse(&self, to: WithdrawalState) -> StoreError {
        StoreError::InvalidTransition { from: self.state().as_str(), to: to.as_str() }
    }
    async fn set_state(
        &mut self,
        w: &mut WriteTx,
        ctx: &WriteCtx,
        to: WithdrawalState,
    ) -> Result<()> {
        match self {
            Owner::Withdrawal(before, wd) => set_state(w, ctx, before, wd, to).await,
            Owner::Sweep(before, sweep) => {
                sweeps::set_sweep_state(w, ctx, before, to).await?;
                sweep.state = to;
                Ok(())
            }
        }
    }
}

/// Lock the withdrawal or sweep with this id.
pub(super) async fn lock_owner(w: &mut WriteTx, id: Uuid) -> Result<Owner> {
    match lock_withdrawal(w, id).await {
        Ok((row, wd)) => Ok(Owner::Withdrawal(row, wd)),
        Err(StoreError::NotFound { .. }) => match sweeps::lock_sweep(w, id).await? {
            Some(row) => {
                let sweep = row.to_domain()?;
                Ok(Owner::Sweep(row, sweep))
            }
            None => Err(StoreError::NotFound { entity: "withdrawal or sweep", id: id.to_string() }),
        },
        Err(e) => Err(e),
    }
}

pub(super) async fn stage_build(w: &mut WriteTx, ctx: &WriteCtx, b: BuildTx) -> Result<Staged> {
    let mut owner = lock_owner(w, b.owner_id).await?;
    if owner.state() != WithdrawalState::Reserved {
        return Err(owner.refuse(WithdrawalState::Built));
    }
    if owner.intent().chain != b.chain || owner.account() != b.wallet {
        return Err(StoreError::Refused(format!(
            "{} pays from {} on {}, not {} on {}",
            owner.kind(),
            owner.account(),
            owner.intent().chain.as_str(),
            b.wallet,
            b.chain.as_str()
        )));
    }
    // The wallet's nonce row, locked: concurrent builds for one wallet take turns here.
    let nonce_sql = format!(
        "SELECT chain, wallet, next_nonce, updated_at_ms FROM wallet_nonces WHERE chain = $1 AND wallet = $2{}",
        for_update(w.backend)
    );
    let existing = sqlx::query(&nonce_sql)
        .bind(b.chain.as_str())
        .bind(&b.wallet)
        .fetch_optional(&mut *w.tx)
        .await?
        .map(|r| row_of::<NonceRow>(&r))
        .transpose()?;
    let floor = i64::try_from(b.nonce_floor)
        .map_err(|_| StoreError::Refused("nonce floor too large".into()))?;
    let nonce = existing.as_ref().map_or(floor, |n| n.next_nonce.max(floor));
    let unsigned =
        (b.build)(u64::try_from(nonce).map_err(|_| StoreError::Corrupt("negative nonce".into()))?)
            .map_err(StoreError::Refused)?;
    let after_nonce = NonceRow {
        chain: b.chain.as_str().to_owned(),
        wallet: b.wallet.clone(),
        next_nonce: nonce
            .checked_add(1)
            .ok_or_else(|| StoreError::Corrupt("nonce overflow".into()))?,
        updated_at_ms: ctx.now.unix_ms(),
    };
    match &existing {
        Some(_) => {
            w.write(
                "UPDATE wallet_nonces SET next_nonce = $1, updated_at_ms = $2 WHERE chain = $3 AND wallet = $4".into(),
                vec![
                    Val::Int(after_nonce.next_nonce),
                    Val::Int(after_nonce.updated_at_ms),
                    Val::Text(after_nonce.chain.clone()),
                    Val::Text(after_nonce.wallet.clone()),
                ],
            )
            .await?
        }
        None => {
            w.insert(
                "wallet_nonces",
                &["chain", "wallet", "next_nonce", "updated_at_ms"],
                vec![
                    Val::Text(after_nonce.chain.clone()),
                    Val::Text(after_nonce.wallet.clone()),
                    Val::Int(after_nonce.next_nonce),
                    Val::Int(after_nonce.updated_at_ms),
                ],
            )
            .await?
        }
    }
    w.record(
        format!("nonce/{}/{}", after_nonce.chain, after_nonce.wallet),
        existing.as_ref().map(hash_of).transpose()?,
        Some(hash_of(&after_nonce)?),
    );
    // The coins it spends, each reserved for this owner (builds for one wallet take turns
    // on its nonce row, so the check and the insert cannot interleave with another's).
    let mut coins = b.coins.clone();
    coins.sort();
    coins.dedup();
    let held = reserved_coins(&mut *w.tx, &b.chain, &coins).await?;
    for coin in &coins {
        match held.get(coin) {
            Some(o) if *o == b.owner_id => {}
            Some(o) => {
                return Err(StoreError::CoinTaken { coin: coin.clone(), owner: o.to_string() })
            }
            None => {
                let row = CoinRow {
                    chain: b.chain.as_str().to_owned(),
                    coin: coin.clone(),
                    owner_id: b.owner_id.to_string(),
                    created_at_ms: ctx.now.unix_ms(),
                };
                w.insert(
                    "coin_reservations",
                    &["chain", "coin", "owner_id", "created_at_ms"],
                    vec![
                        Val::Text(row.chain.clone()),
                        Val::Text(row.coin.clone()),
                        Val::Text(row.owner_id.clone()),
                        Val::Int(row.created_at_ms),
                    ],
                )
                .await
                .map_err(|e| {
                    e.on_unique("coin_reservations", || StoreError::CoinTaken {
                        coin: coin.clone(),
                        owner: "another withdrawal".into(),
                    })
                })?;
                w.record(format!("coin/{}/{}", row.chain, row.coin), None, Some(hash_of(&row)?));
            }
        }
    }
    let subject = owner.subject(b.owner_id);
    // The fee, set aside from the treasury (which must hold enough of the fee asset).
    if !b.fee_reserve.is_zero() {
        let entry = JournalEntry::fee_reserve(b.fee_entry_id, &b.fee_asset, b.fee_reserve)?;
        w.apply_entry(&entry, &subject, ctx.now).await?;
    }
    w.fault("withdrawal.after_fee_reserve")?;
    let row = ChainTxRow {
        owner_id: b.owner_id.to_string(),
        chain: b.chain.as_str().to_owned(),
        wallet: b.wallet.clone(),
        nonce,
        unsigned_tx: hex::encode(&unsigned),
        fee_asset: b.fee_asset.to_string(),
        fee_reserved: b.fee_reserve.to_string(),
        signed_tx: None,
        txid: None,
        block_number: None,
        block_hash: None,
        fee_paid: None,
        created_at_ms: ctx.now.unix_ms(),
        updated_at_ms: ctx.now.unix_ms(),
    };
    w.insert("chain_txs", &CHAIN_TX_COLUMN_LIST, row.values()).await?;
    w.record(format!("chain_tx/{}", row.owner_id), None, Some(hash_of(&row)?));
    owner.set_state(w, ctx, WithdrawalState::Built).await?;
    w.fault("withdrawal.after_build")?;
    Ok(Staged {
        action: format!("{}.built", owner.kind()),
        subject,
        detail: serde_json::json!({
            "chain": row.chain, "wallet": row.wallet, "nonce": nonce, "coins": coins,
            "fee_reserved": row.fee_reserved, "fee_asset": row.fee_asset,
        }),
        result: to_json(&row.to_domain()?)?,
    })
}

pub(super) async fn stage_signed(
    w: &mut WriteTx,
    ctx: &WriteCtx,
    id: Uuid,
    signed: SignedTx,
) -> Result<Staged> {
    let mut owner = lock_owner(w, id).await?;
    if owner.state() != WithdrawalState::Built {
        return Err(owner.refuse(WithdrawalState::Signed));
    }
    let old = lock_chain_tx(w, id).await?;
    let mut new = old.clone();
    new.signed_tx = Some(hex::encode(&signed.raw));
    new.txid = Some(signed.txid.clone());
    new.updated_at_ms = ctx.now.unix_ms();
    update_chain_tx(w, &old, &new).await?;
    owner.set_state(w, ctx, WithdrawalState::Signed).await?;
    w.fault("withdrawal.after_signed")?;
    Ok(Staged {
        action: format!("{}.signed", owner.kind()),
        subject: owner.subject(id),
        detail: serde_json::json!({ "txid": signed.txid, "nonce": old.nonce }),
        result: to_json(&new.to_domain()?)?,
    })
}

pub(super) async fn stage_broadcast(w: &mut WriteTx, ctx: &WriteCtx, id: Uuid) -> Result<Staged> {
    let mut owner = lock_owner(w, id).await?;
    if owner.state() != WithdrawalState::Signed {
        return Err(owner.refuse(WithdrawalState::Broadcast));
    }
    let tx = lock_chain_tx(w, id).await?;
    owner.set_state(w, ctx, WithdrawalState::Broadcast).await?;
    Ok(Staged {
        action: format!("{}.broadcast", owner.kind()),
        subject: owner.subject(id),
        detail: serde_json::json!({ "txid": tx.txid }),
        result: to_json(&tx.to_domain()?)?,
    })
}

pub(super) async fn stage_conclude(
    w: &mut WriteTx,
    ctx: &WriteCtx,
    id: Uuid,
    c: Conclusion,
) -> Result<Staged> {
    let mut owner = lock_owner(w, id).await?;
    let to = if c.success { WithdrawalState::Settled } else { WithdrawalState::Failed };
    if owner.state() != WithdrawalState::Broadcast {
        return Err(owner.refuse(to));
    }
    let old = lock_chain_tx(w, id).await?;
    let reserved = amount(&old.fee_reserved)?;
    let fee_asset = symbol(&old.fee_asset)?;
    let unburned = reserved.checked_sub(c.fee_paid).map_err(|_| {
        StoreError::Refused(format!("fee paid {} exceeds the {} reserved", c.fee_paid, reserved))
    })?;
    let subject = owner.subject(id);
    let [customer_entry, fee_entry, release_entry] = c.entry_ids;
    // A withdrawal's funds leave custody (or return to the customer); a sweep's stay ours.
    if let Owner::Withdrawal(_, wd) = &owner {
        let (customer, asset, amt) =
            (wd.customer_id, wd.intent.asset.symbol.clone(), wd.intent.amount);
        let entry = if c.success {
            JournalEntry::settle(customer_entry, customer, &asset, amt)?
        } else {
            JournalEntry::release(customer_entry, customer, &asset, amt)?
        };
        w.apply_entry(&entry, &subject, ctx.now).await?;
    }
    // The entries share accounts (custody, the treasury's pending): each must read what the
    // one before wrote, so on PostgreSQL the queued writes go out in between.
    if !c.fee_paid.is_zero() {
        w.flush().await?;
        w.apply_entry(
            &JournalEntry::fee_paid(fee_entry, &fee_asset, c.fee_paid)?,
            &subject,
            ctx.now,
        )
        .await?;
    }
    if !unburned.is_zero() {
        w.flush().await?;
        w.apply_entry(
            &JournalEntry::fee_release(release_entry, &fee_asset, unburned)?,
            &subject,
            ctx.now,
        )
        .await?;
    }
    w.fault("withdrawal.after_conclude_entries")?;
    let mut new = old.clone();
    new.block_number = Some(
        i64::try_from(c.block.number)
            .map_err(|_| StoreError::Refused("block number too large".into()))?,
    );
    new.block_hash = Some(c.block.hash.clone());
    new.fee_paid = Some(c.fee_paid.to_string());
    new.updated_at_ms = ctx.now.unix_ms();
    update_chain_tx(w, &old, &new).await?;
    owner.set_state(w, ctx, to).await?;
    Ok(Staged {
        action: format!("{}.{}", owner.kind(), to.as_str()),
        subject,
        detail: serde_json::json!({
            "txid": old.txid, "block": c.block.number, "block_hash": c.block.hash,
            "fee_paid": c.fee_paid, "fee_asset": old.fee_asset,
        }),
        result: to_json(&new.to_domain()?)?,
    })
}

impl SqlStore {
    /// Run a chain command; if it lost a race (its owner moved on), answer with the
    /// stored transaction when it already satisfies the caller.
    pub(super) async fn chain_command(
        &self,
        ctx: &WriteCtx,
        id: Uuid,
        job: Job,
        done: fn(&ChainTx, WithdrawalState) -> bool,
    ) -> Result<ChainTx> {
        match self.submit(ctx, None, job).await.and_then(from_json) {
            Err(StoreError::InvalidTransition { from, to }) => {
                let state =
                    WithdrawalState::parse(from).ok_or_else(|| StoreError::Corrupt(from.into()))?;
                match read_chain_tx(&self.pool, self.backend, id).await? {
                    Some(tx) if done(&tx, state) => Ok(tx),
                    _ => Err(StoreError::InvalidTransition { from, to }),
                }
            }
            other => other,
        }
    }

    pub(super) async fn ensure_treasury_row(&self, ctx: &WriteCtx) -> Result<Customer> {
        match self.get_customer(TREASURY_CUSTOMER).await {
            Err(StoreError::NotFound { .. }) => {}
            other => return other,
        }
        let new = NewCustomer { id: TREASURY_CUSTOMER, external_id: TREASURY_EXTERNAL_ID.into() };
        match self.create_customer(ctx, None, new).await {
            Err(StoreError::CustomerExists(_)) | Err(StoreError::Constraint { .. }) => {
                self.get_customer(TREASURY_CUSTOMER).await
            }
            other => other,
        }
    }

    /// State hashes of the chain tables, for `verify_audit`.
    pub(super) async fn chain_entity_states(
        &self,
        out: &mut Vec<(String, Digest32)>,
    ) -> Result<()> {
        let sql = format!("SELECT {} FROM chain_txs", CHAIN_TX_COLUMN_LIST.join(", "));
        for r in sqlx::query(&sql).fetch_all(&self.pool).await? {
            let row = row_of::<ChainTxRow>(&r)?;
            out.push((format!("chain_tx/{}", row.owner_id), hash_of(&row)?));
        }
        for r in sqlx::query("SELECT chain, wallet, next_nonce, updated_at_ms FROM wallet_nonces")
            .fetch_all(&self.pool)
            .await?
        {
            let row = row_of::<NonceRow>(&r)?;
            out.push((format!("nonce/{}/{}", row.chain, row.wallet), hash_of(&row)?));
        }
        for r in sqlx::query("SELECT chain, coin, owner_id, created_at_ms FROM coin_reservations")
            .fetch_all(&self.pool)
            .await?
        {
            let row = row_of::<CoinRow>(&r)?;
            out.push((format!("coin/{}/{}", row.chain, row.coin), hash_of(&row)?));
        }
        Ok(())
    }
}
