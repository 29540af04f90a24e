//! Sweeps and top-ups: movements between our own addresses.

use strongroom_core::withdrawal::WithdrawalState;

use super::*;

pub(super) const SWEEP_COLUMNS: &str = "id, chain, kind, wallet, path, from_address, to_address, asset, amount, intent, state, created_at_ms, updated_at_ms";

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub(super) struct SweepRow {
    id: String,
    chain: String,
    kind: String,
    wallet: String,
    path: String,
    from_address: String,
    to_address: String,
    asset: String,
    amount: String,
    intent: String,
    state: String,
    created_at_ms: i64,
    updated_at_ms: i64,
}

impl SweepRow {
    pub(super) fn from_domain(s: &Sweep) -> Result<Self> {
        Ok(SweepRow {
            id: s.id.to_string(),
            chain: s.intent.chain.as_str().to_owned(),
            kind: s.kind.as_str().to_owned(),
            wallet: s.intent.source_wallet.as_str().to_owned(),
            path: serde_json::to_string(&s.path).map_err(|e| StoreError::Corrupt(e.to_string()))?,
            from_address: s.from_address.clone(),
            to_address: s.intent.destination.as_str().to_owned(),
            asset: s.intent.asset.symbol.to_string(),
            amount: s.intent.amount.to_string(),
            intent: serde_json::to_string(&s.intent)
                .map_err(|e| StoreError::Corrupt(e.to_string()))?,
            state: s.state.as_str().to_owned(),
            created_at_ms: s.created_at.unix_ms(),
            updated_at_ms: s.updated_at.unix_ms(),
        })
    }

    pub(super) fn to_domain(&self) -> Result<Sweep> {
        let corrupt = |w: &str| StoreError::Corrupt(format!("sweep {}: {w}", self.id));
        let intent: Intent = serde_json::from_str(&self.intent).map_err(|_| corrupt("intent"))?;
        // The intent is the truth; the columns copied out of it must agree.
        if intent.destination.as_str() != self.to_address
            || intent.amount.to_string() != self.amount
        {
            return Err(corrupt("does not match its intent"));
        }
        Ok(Sweep {
            id: uuid(&self.id)?,
            kind: SweepKind::parse(&self.kind).ok_or_else(|| corrupt("kind"))?,
            path: serde_json::from_str(&self.path).map_err(|_| corrupt("path"))?,
            from_address: self.from_address.clone(),
            intent,
            state: WithdrawalState::parse(&self.state).ok_or_else(|| corrupt("state"))?,
            created_at: Timestamp::from_unix_ms(self.created_at_ms),
            updated_at: Timestamp::from_unix_ms(self.updated_at_ms),
        })
    }

    pub(super) fn entity(&self) -> String {
        format!("sweep/{}", self.id)
    }
}

pub(super) async fn lock_sweep(w: &mut WriteTx, id: Uuid) -> Result<Option<SweepRow>> {
    let sql = format!("SELECT {SWEEP_COLUMNS} FROM sweeps WHERE id = $1{}", for_update(w.backend));
    let row = sqlx::query(&sql).bind(id.to_string()).fetch_optional(&mut *w.tx).await?;
    row.map(|r| row_of::<SweepRow>(&r)).transpose()
}

/// Write a sweep's new state and note the change.
pub(super) async fn set_sweep_state(
    w: &mut WriteTx,
    ctx: &WriteCtx,
    before: &SweepRow,
    to: WithdrawalState,
) -> Result<SweepRow> {
    let mut after = before.clone();
    after.state = to.as_str().to_owned();
    after.updated_at_ms = ctx.now.unix_ms();
    w.write(
        "UPDATE sweeps SET state = $1, updated_at_ms = $2 WHERE id = $3".into(),
        vec![
            Val::Text(after.state.clone()),
            Val::Int(after.updated_at_ms),
            Val::Text(after.id.clone()),
        ],
    )
    .await?;
    w.record(after.entity(), Some(hash_of(before)?), Some(hash_of(&after)?));
    Ok(after)
}

pub(super) async fn stage_create(w: &mut WriteTx, _ctx: &WriteCtx, sweep: Sweep) -> Result<Staged> {
    if sweep.state != WithdrawalState::Reserved {
        return Err(StoreError::Refused("a new sweep starts reserved".into()));
    }
    let row = SweepRow::from_domain(&sweep)?;
    w.insert(
        "sweeps",
        &SWEEP_COLUMNS.split(", ").collect::<Vec<_>>(),
        vec![
            Val::Text(row.id.clone()),
            Val::Text(row.chain.clone()),
            Val::Text(row.kind.clone()),
            Val::Text(row.wallet.clone()),
            Val::Text(row.path.clone()),
            Val::Text(row.from_address.clone()),
            Val::Text(row.to_address.clone()),
            Val::Text(row.asset.clone()),
            Val::Text(row.amount.clone()),
            Val::Text(row.intent.clone()),
            Val::Text(row.state.clone()),
            Val::Int(row.created_at_ms),
            Val::Int(row.updated_at_ms),
        ],
    )
    .await?;
    w.record(row.entity(), None, Some(hash_of(&row)?));
    Ok(Staged {
        action: format!("{}.planned", row.kind),
        subject: row.entity(),
        detail: serde_json::json!({
            "from": row.from_address, "to": row.to_address, "asset": row.asset, "amount": row.amount, "path": row.path,
        }),
        result: to_json(&sweep)?,
    })
}

impl SqlStore {
    pub(super) async fn read_sweep(&self, id: Uuid) -> Result<Sweep> {
        let sql = format!("SELECT {SWEEP_COLUMNS} FROM sweeps WHERE id = $1");
        let row = sqlx::query(&sql)
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await?
            .ok_or(StoreError::NotFound { entity: "sweep", id: id.to_string() })?;
        row_of::<SweepRow>(&row)?.to_domain()
    }

    pub(super) async fn read_sweeps(
        &self,
        chain: &strongroom_units::ChainId,
        open: bool,
    ) -> Result<Vec<Sweep>> {
        let sql = format!(
            "SELECT {SWEEP_COLUMNS} FROM sweeps WHERE chain = $1 AND ($2 = 0 OR state NOT IN ('settled', 'failed', 'cancelled')) ORDER BY created_at_ms, id"
        );
        let rows = sqlx::query(&sql)
            .bind(chain.as_str())
            .bind(i64::from(open))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(|r| row_of::<SweepRow>(r)?.to_domain()).collect()
    }

    pub(super) async fn sweep_entity_states(
        &self,
        out: &mut Vec<(String, Digest32)>,
    ) -> Result<()> {
        for r in sqlx::query(&format!("SELECT {SWEEP_COLUMNS} FROM sweeps"))
            .fetch_all(&self.pool)
            .await?
        {
            let row = row_of::<SweepRow>(&r)?;
            out.push((row.entity(), hash_of(&row)?));
        }
        Ok(())
    }
}
