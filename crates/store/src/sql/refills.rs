//! Refills of a hot wallet from cold storage that the server prepares for the offline
//! signers (`cold_refills`).

use strongroom_governance::approval::Approval;

use super::*;

pub(super) const REFILL_COLUMNS: &str = "id, chain, asset, wallet, intent, intent_hash, state, approvals, bundle, waiting_for, created_at_ms, updated_at_ms";

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub(super) struct RefillRow {
    id: String,
    chain: String,
    asset: String,
    wallet: String,
    intent: String,
    intent_hash: String,
    state: String,
    approvals: String,
    bundle: Option<String>,
    waiting_for: Option<String>,
    created_at_ms: i64,
    updated_at_ms: i64,
}

fn corrupt_json(e: serde_json::Error) -> StoreError {
    StoreError::Corrupt(e.to_string())
}

impl RefillRow {
    fn from_domain(r: &Refill) -> Result<Self> {
        Ok(RefillRow {
            id: r.id.to_string(),
            chain: r.intent.chain.as_str().to_owned(),
            asset: r.intent.asset.symbol.to_string(),
            wallet: r.intent.source_wallet.as_str().to_owned(),
            intent: serde_json::to_string(&r.intent).map_err(corrupt_json)?,
            intent_hash: r.intent_hash.clone(),
            state: r.state.as_str().to_owned(),
            approvals: serde_json::to_string(&r.approvals).map_err(corrupt_json)?,
            bundle: r.bundle.clone(),
            waiting_for: r.waiting_for.clone(),
            created_at_ms: r.created_at.unix_ms(),
            updated_at_ms: r.updated_at.unix_ms(),
        })
    }

    fn to_domain(&self) -> Result<Refill> {
        let corrupt = |w: &str| StoreError::Corrupt(format!("refill {}: {w}", self.id));
        let intent: Intent = serde_json::from_str(&self.intent).map_err(|_| corrupt("intent"))?;
        // The intent is the truth; the columns copied out of it, and its hash, must agree.
        let hash = intent.hash().map_err(|_| corrupt("intent"))?.to_hex();
        if intent.chain.as_str() != self.chain
            || intent.asset.symbol.to_string() != self.asset
            || hash != self.intent_hash
        {
            return Err(corrupt("does not match its intent"));
        }
        Ok(Refill {
            id: uuid(&self.id)?,
            intent,
            intent_hash: self.intent_hash.clone(),
            state: RefillState::parse(&self.state).ok_or_else(|| corrupt("state"))?,
            approvals: serde_json::from_str(&self.approvals).map_err(|_| corrupt("approvals"))?,
            bundle: self.bundle.clone(),
            waiting_for: self.waiting_for.clone(),
            created_at: Timestamp::from_unix_ms(self.created_at_ms),
            updated_at: Timestamp::from_unix_ms(self.updated_at_ms),
        })
    }

    fn entity(&self) -> String {
        format!("refill/{}", self.id)
    }

    fn values(&self) -> Vec<Val> {
        vec![
            Val::Text(self.id.clone()),
            Val::Text(self.chain.clone()),
            Val::Text(self.asset.clone()),
            Val::Text(self.wallet.clone()),
            Val::Text(self.intent.clone()),
            Val::Text(self.intent_hash.clone()),
            Val::Text(self.state.clone()),
            Val::Text(self.approvals.clone()),
            Val::OptText(self.bundle.clone()),
            Val::OptText(self.waiting_for.clone()),
            Val::Int(self.created_at_ms),
            Val::Int(self.updated_at_ms),
        ]
    }
}

pub(super) async fn stage_open(w: &mut WriteTx, _ctx: &WriteCtx, refill: Refill) -> Result<Staged> {
    if refill.state != RefillState::AwaitingApprovals
        || refill.bundle.is_some()
        || !refill.approvals.is_empty()
    {
        return Err(StoreError::Refused("a new refill starts awaiting approvals, empty".into()));
    }
    let row = RefillRow::from_domain(&refill)?;
    // The row's own check: its hash is its intent's.
    row.to_domain()?;
    w.insert("cold_refills", &REFILL_COLUMNS.split(", ").collect::<Vec<_>>(), row.values()).await?;
    w.record(row.entity(), None, Some(hash_of(&row)?));
    Ok(Staged {
        action: "refill.requested".into(),
        subject: row.entity(),
        detail: serde_json::json!({
            "chain": row.chain, "asset": row.asset, "from_wallet": row.wallet,
            "to": refill.intent.destination.as_str(), "amount": refill.intent.amount.to_string(),
            "intent_hash": row.intent_hash,
        }),
        result: to_json(&refill)?,
    })
}

pub(super) async fn stage_update(
    w: &mut WriteTx,
    ctx: &WriteCtx,
    id: Uuid,
    change: RefillChange,
) -> Result<Staged> {
    let sql =
        format!("SELECT {REFILL_COLUMNS} FROM cold_refills WHERE id = $1{}", for_update(w.backend));
    let before = sqlx::query(&sql)
        .bind(id.to_string())
        .fetch_optional(&mut *w.tx)
        .await?
        .ok_or(StoreError::NotFound { entity: "refill", id: id.to_string() })?;
    let before = row_of::<RefillRow>(&before)?;
    let mut refill = before.to_domain()?;
    let ended = |to: RefillState| StoreError::InvalidTransition {
        from: refill.state.as_str(),
        to: to.as_str(),
    };
    let (action, detail) = match &change {
        RefillChange::Approval(a) => {
            if !refill.state.is_open() {
                return Err(ended(refill.state));
            }
            if a.intent_hash != refill.intent_hash {
                return Err(StoreError::Refused(
                    "the approval is for another intent than this refill's".into(),
                ));
            }
            let mut approvals: Vec<Approval> =
                refill.approvals.iter().filter(|x| x.approver != a.approver).cloned().collect();
            approvals.push(a.clone());
            refill.approvals = approvals;
            ("refill.approved", serde_json::json!({ "approver": a.approver }))
        }
        RefillChange::Waiting(why) => {
            if refill.state != RefillState::AwaitingApprovals {
                return Err(ended(RefillState::AwaitingApprovals));
            }
            refill.waiting_for = Some(why.clone());
            ("refill.waiting", serde_json::json!({ "waiting_for": why }))
        }
        RefillChange::Bundle(bundle) => {
            if !refill.state.may_become(RefillState::Ready) {
                return Err(ended(RefillState::Ready));
            }
            refill.state = RefillState::Ready;
            refill.bundle = Some(bundle.clone());
            refill.waiting_for = None;
            ("refill.ready", serde_json::json!({}))
        }
        RefillChange::Reopen(why) => {
            if refill.state != RefillState::Ready {
                return Err(ended(RefillState::AwaitingApprovals));
            }
            refill.state = RefillState::AwaitingApprovals;
            refill.bundle = None;
            refill.waiting_for = Some(why.clone());
            ("refill.reopened", serde_json::json!({ "waiting_for": why }))
        }
        RefillChange::End(to) => {
            if !refill.state.may_become(*to) || to.is_open() {
                return Err(ended(*to));
            }
            refill.state = *to;
            ("refill.ended", serde_json::json!({ "state": to.as_str() }))
        }
    };
    refill.updated_at = ctx.now;
    let after = RefillRow::from_domain(&refill)?;
    if after.approvals == before.approvals
        && after.state == before.state
        && after.bundle == before.bundle
        && after.waiting_for == before.waiting_for
    {
        // Nothing changes (the same reason noted again): no write, but still one answer.
        return Ok(Staged {
            action: "refill.unchanged".into(),
            subject: after.entity(),
            detail,
            result: to_json(&before.to_domain()?)?,
        });
    }
    w.write(
        "UPDATE cold_refills SET state = $1, approvals = $2, bundle = $3, waiting_for = $4, updated_at_ms = $5 WHERE id = $6".into(),
        vec![
            Val::Text(after.state.clone()),
            Val::Text(after.approvals.clone()),
            Val::OptText(after.bundle.clone()),
            Val::OptText(after.waiting_for.clone()),
            Val::Int(after.updated_at_ms),
            Val::Text(after.id.clone()),
        ],
    )
    .await?;
    w.record(after.entity(), Some(hash_of(&before)?), Some(hash_of(&after)?));
    Ok(Staged { action: action.into(), subject: after.entity(), detail, result: to_json(&refill)? })
}

impl SqlStore {
    pub(super) async fn read_refill(&self, id: Uuid) -> Result<Refill> {
        let sql = format!("SELECT {REFILL_COLUMNS} FROM cold_refills WHERE id = $1");
        let row = sqlx::query(&sql)
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await?
            .ok_or(StoreError::NotFound { entity: "refill", id: id.to_string() })?;
        row_of::<RefillRow>(&row)?.to_domain()
    }

    /// The open refill of `chain` and `asset`, if any.
    pub(super) async fn open_refill_of(&self, chain: &str, asset: &str) -> Result<Option<Refill>> {
        let sql = format!(
            "SELECT {REFILL_COLUMNS} FROM cold_refills WHERE chain = $1 AND asset = $2 AND state IN ('awaiting_approvals', 'ready')"
        );
        let row = sqlx::query(&sql).bind(chain).bind(asset).fetch_optional(&self.pool).await?;
        row.map(|r| row_of::<RefillRow>(&r)?.to_domain()).transpose()
    }

    pub(super) async fn read_refills(
        &self,
        open: bool,
        after: Option<&Keyset>,
        limit: u32,
    ) -> Result<Vec<Refill>> {
        let sql = format!(
            "SELECT {REFILL_COLUMNS} FROM cold_refills \
             WHERE ($1 = 0 OR state IN ('awaiting_approvals', 'ready')) \
             AND (CAST($2 AS BIGINT) IS NULL OR created_at_ms < $2 OR (created_at_ms = $2 AND id > $3)) \
             ORDER BY created_at_ms DESC, id LIMIT $4"
        );
        let rows = sqlx::query(&sql)
            .bind(i64::from(open))
            .bind(after.map(|k| k.at_ms))
            .bind(after.map_or("", |k| k.id.as_str()))
            .bind(i64::from(limit.clamp(1, 1001)))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(|r| row_of::<RefillRow>(r)?.to_domain()).collect()
    }

    pub(super) async fn refill_entity_states(
        &self,
        out: &mut Vec<(String, Digest32)>,
    ) -> Result<()> {
        for r in sqlx::query(&format!("SELECT {REFILL_COLUMNS} FROM cold_refills"))
            .fetch_all(&self.pool)
            .await?
        {
            let row = row_of::<RefillRow>(&r)?;
            out.push((row.entity(), hash_of(&row)?));
        }
        Ok(())
    }
}
