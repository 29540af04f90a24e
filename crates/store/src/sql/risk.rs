//! The risk engine's reviews and the events it learns from.

use super::*;

const REVIEW_COLUMNS: &str = "withdrawal_id, customer_id, decision, state, score, assessment, assignee, notes, decided_by, created_at_ms, updated_at_ms";

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
struct ReviewRow {
    withdrawal_id: String,
    customer_id: String,
    decision: String,
    state: String,
    score: i64,
    assessment: String,
    assignee: Option<String>,
    notes: String,
    decided_by: Option<String>,
    created_at_ms: i64,
    updated_at_ms: i64,
}

fn text<T: Serialize>(v: &T) -> Result<String> {
    serde_json::to_string(v).map_err(|e| StoreError::Corrupt(e.to_string()))
}

impl ReviewRow {
    fn from_domain(r: &RiskReview) -> Result<Self> {
        Ok(ReviewRow {
            withdrawal_id: r.withdrawal_id.to_string(),
            customer_id: r.customer_id.to_string(),
            decision: r.decision.clone(),
            state: r.state.as_str().to_owned(),
            score: i64::from(r.score),
            assessment: text(&r.assessment)?,
            assignee: r.assignee.clone(),
            notes: text(&r.notes)?,
            decided_by: r.decided_by.clone(),
            created_at_ms: r.created_at.unix_ms(),
            updated_at_ms: r.updated_at.unix_ms(),
        })
    }

    fn to_domain(&self) -> Result<RiskReview> {
        let corrupt =
            |w: &str| StoreError::Corrupt(format!("risk review {}: {w}", self.withdrawal_id));
        Ok(RiskReview {
            withdrawal_id: uuid(&self.withdrawal_id)?,
            customer_id: uuid(&self.customer_id)?,
            decision: self.decision.clone(),
            state: RiskState::parse(&self.state).ok_or_else(|| corrupt("state"))?,
            score: u32::try_from(self.score).map_err(|_| corrupt("score"))?,
            assessment: serde_json::from_str(&self.assessment)
                .map_err(|_| corrupt("assessment"))?,
            assignee: self.assignee.clone(),
            notes: serde_json::from_str(&self.notes).map_err(|_| corrupt("notes"))?,
            decided_by: self.decided_by.clone(),
            created_at: Timestamp::from_unix_ms(self.created_at_ms),
            updated_at: Timestamp::from_unix_ms(self.updated_at_ms),
        })
    }

    fn entity(&self) -> String {
        format!("risk_review/{}", self.withdrawal_id)
    }

    fn values(&self) -> Vec<Val> {
        vec![
            Val::Text(self.withdrawal_id.clone()),
            Val::Text(self.customer_id.clone()),
            Val::Text(self.decision.clone()),
            Val::Text(self.state.clone()),
            Val::Int(self.score),
            Val::Text(self.assessment.clone()),
            Val::OptText(self.assignee.clone()),
            Val::Text(self.notes.clone()),
            Val::OptText(self.decided_by.clone()),
            Val::Int(self.created_at_ms),
            Val::Int(self.updated_at_ms),
        ]
    }
}

async fn locked(w: &mut WriteTx, id: Uuid) -> Result<Option<ReviewRow>> {
    let sql = format!(
        "SELECT {REVIEW_COLUMNS} FROM risk_reviews WHERE withdrawal_id = $1{}",
        for_update(w.backend)
    );
    let row = sqlx::query(&sql).bind(id.to_string()).fetch_optional(&mut *w.tx).await?;
    row.map(|r| row_of::<ReviewRow>(&r)).transpose()
}

/// The assessment, once per withdrawal: a second one returns the first unchanged.
pub(super) async fn stage_assess(
    w: &mut WriteTx,
    ctx: &WriteCtx,
    review: RiskReview,
) -> Result<Staged> {
    let id = review.withdrawal_id;
    if let Some(existing) = locked(w, id).await? {
        return Ok(Staged {
            action: "risk.assessment_repeated".into(),
            subject: format!("withdrawal/{id}"),
            detail: serde_json::Value::Null,
            result: serde_json::to_value(existing.to_domain()?)
                .map_err(|e| StoreError::Corrupt(e.to_string()))?,
        });
    }
    let (_, wd) = lock_withdrawal(w, id).await?;
    if wd.customer_id != review.customer_id {
        return Err(StoreError::Refused("the assessment names another customer".into()));
    }
    let mut review = review;
    review.created_at = ctx.now;
    review.updated_at = ctx.now;
    let row = ReviewRow::from_domain(&review)?;
    let cols: Vec<&str> = REVIEW_COLUMNS.split(", ").collect();
    w.insert("risk_reviews", &cols, row.values()).await?;
    w.record(row.entity(), None, Some(hash_of(&row)?));
    Ok(Staged {
        action: format!("risk.{}", review.decision),
        subject: format!("withdrawal/{id}"),
        detail: serde_json::json!({ "score": review.score, "state": review.state.as_str(), "assessment": review.assessment }),
        result: serde_json::to_value(&review).map_err(|e| StoreError::Corrupt(e.to_string()))?,
    })
}

pub(super) async fn stage_review(
    w: &mut WriteTx,
    ctx: &WriteCtx,
    id: Uuid,
    action: ReviewAction,
) -> Result<Staged> {
    let before = locked(w, id)
        .await?
        .ok_or(StoreError::NotFound { entity: "risk review", id: id.to_string() })?;
    let mut r = before.to_domain()?;
    let note = |r: &mut RiskReview, text: Option<String>| {
        if let Some(t) = text.filter(|t| !t.is_empty()) {
            r.notes.push(ReviewNote { by: ctx.actor.clone(), at_ms: ctx.now.unix_ms(), text: t });
        }
    };
    let verb = match action {
        ReviewAction::Assign(who) => {
            r.assignee = Some(who);
            "assigned"
        }
        ReviewAction::Note(t) => {
            note(&mut r, Some(t));
            "noted"
        }
        ReviewAction::Release(t) | ReviewAction::Reject(t) if r.state != RiskState::Open => {
            let _ = t;
            return Err(StoreError::InvalidTransition { from: r.state.as_str(), to: "decided" });
        }
        ReviewAction::Release(t) => {
            note(&mut r, t);
            r.state = RiskState::Released;
            r.decided_by = Some(ctx.actor.clone());
            "released"
        }
        ReviewAction::Reject(t) => {
            note(&mut r, t);
            r.state = RiskState::Rejected;
            r.decided_by = Some(ctx.actor.clone());
            "rejected"
        }
    };
    r.updated_at = ctx.now;
    // The assessment is not rewritten: keep its stored text byte for byte (a float read back
    // and printed again need not be the same text).
    let after = ReviewRow { assessment: before.assessment.clone(), ..ReviewRow::from_domain(&r)? };
    w.write(
        "UPDATE risk_reviews SET state = $1, assignee = $2, notes = $3, decided_by = $4, updated_at_ms = $5 WHERE withdrawal_id = $6".into(),
        vec![
            Val::Text(after.state.clone()),
            Val::OptText(after.assignee.clone()),
            Val::Text(after.notes.clone()),
            Val::OptText(after.decided_by.clone()),
            Val::Int(after.updated_at_ms),
            Val::Text(after.withdrawal_id.clone()),
        ],
    )
    .await?;
    w.record(after.entity(), Some(hash_of(&before)?), Some(hash_of(&after)?));
    Ok(Staged {
        action: format!("risk.review_{verb}"),
        subject: format!("withdrawal/{id}"),
        detail: serde_json::json!({ "state": r.state.as_str(), "assignee": r.assignee }),
        result: serde_json::to_value(&r).map_err(|e| StoreError::Corrupt(e.to_string()))?,
    })
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
struct EventRow {
    id: String,
    customer_id: String,
    kind: String,
    at_ms: i64,
    data: String,
}

fn event_of(r: &sqlx::any::AnyRow) -> Result<RiskEvent> {
    let row = row_of::<EventRow>(r)?;
    Ok(RiskEvent {
        id: uuid(&row.id)?,
        customer_id: uuid(&row.customer_id)?,
        kind: row.kind,
        at: Timestamp::from_unix_ms(row.at_ms),
        data: serde_json::from_str(&row.data).map_err(|e| StoreError::Corrupt(e.to_string()))?,
    })
}

pub(super) async fn stage_event(w: &mut WriteTx, _ctx: &WriteCtx, ev: RiskEvent) -> Result<Staged> {
    let row = EventRow {
        id: ev.id.to_string(),
        customer_id: ev.customer_id.to_string(),
        kind: ev.kind.clone(),
        at_ms: ev.at.unix_ms(),
        data: text(&ev.data)?,
    };
    w.insert(
        "risk_events",
        &["id", "customer_id", "kind", "at_ms", "data"],
        vec![
            Val::Text(row.id.clone()),
            Val::Text(row.customer_id.clone()),
            Val::Text(row.kind.clone()),
            Val::Int(row.at_ms),
            Val::Text(row.data.clone()),
        ],
    )
    .await?;
    w.record(format!("risk_event/{}", row.id), None, Some(hash_of(&row)?));
    Ok(Staged {
        action: format!("risk.event_{}", ev.kind),
        subject: format!("customer/{}", ev.customer_id),
        detail: serde_json::Value::Null,
        result: serde_json::to_value(&ev).map_err(|e| StoreError::Corrupt(e.to_string()))?,
    })
}

impl SqlStore {
    pub(super) async fn read_risk_review(&self, id: Uuid) -> Result<Option<RiskReview>> {
        let sql = format!("SELECT {REVIEW_COLUMNS} FROM risk_reviews WHERE withdrawal_id = $1");
        let row = sqlx::query(&sql).bind(id.to_string()).fetch_optional(&self.pool).await?;
        row.map(|r| row_of::<ReviewRow>(&r).and_then(|r| r.to_domain())).transpose()
    }

    pub(super) async fn read_risk_reviews(
        &self,
        state: Option<RiskState>,
        after: Option<&Keyset>,
        limit: u32,
    ) -> Result<Vec<RiskReview>> {
        let sql = format!(
            "SELECT {REVIEW_COLUMNS} FROM risk_reviews WHERE (CAST($1 AS TEXT) IS NULL OR state = $1) \
             AND (CAST($2 AS BIGINT) IS NULL OR created_at_ms > $2 OR (created_at_ms = $2 AND withdrawal_id > $3)) \
             ORDER BY created_at_ms, withdrawal_id LIMIT $4"
        );
        let rows = sqlx::query(&sql)
            .bind(state.map(|s| s.as_str()))
            .bind(after.map(|k| k.at_ms))
            .bind(after.map_or("", |k| k.id.as_str()))
            .bind(i64::from(limit.clamp(1, 1001)))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(|r| row_of::<ReviewRow>(r).and_then(|r| r.to_domain())).collect()
    }

    pub(super) async fn read_risk_reviews_since(
        &self,
        updated_after_ms: i64,
        limit: u32,
    ) -> Result<Vec<RiskReview>> {
        let sql = format!("SELECT {REVIEW_COLUMNS} FROM risk_reviews WHERE updated_at_ms > $1 ORDER BY updated_at_ms, withdrawal_id LIMIT $2");
        let rows = sqlx::query(&sql)
            .bind(updated_after_ms)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(|r| row_of::<ReviewRow>(r).and_then(|r| r.to_domain())).collect()
    }

    pub(super) async fn read_risk_events(
        &self,
        after_ms: i64,
        limit: u32,
    ) -> Result<Vec<RiskEvent>> {
        let rows = sqlx::query("SELECT id, customer_id, kind, at_ms, data FROM risk_events WHERE at_ms > $1 ORDER BY at_ms, id LIMIT $2")
            .bind(after_ms)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(event_of).collect()
    }

    pub(super) async fn read_customer_risk_events(
        &self,
        customer_id: Uuid,
        after: Option<&Keyset>,
        limit: u32,
    ) -> Result<Vec<RiskEvent>> {
        let rows = sqlx::query(
            "SELECT id, customer_id, kind, at_ms, data FROM risk_events WHERE customer_id = $1 \
             AND (CAST($2 AS BIGINT) IS NULL OR at_ms < $2 OR (at_ms = $2 AND id > $3)) \
             ORDER BY at_ms DESC, id LIMIT $4",
        )
        .bind(customer_id.to_string())
        .bind(after.map(|k| k.at_ms))
        .bind(after.map_or("", |k| k.id.as_str()))
        .bind(i64::from(limit.clamp(1, 1001)))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(event_of).collect()
    }

    pub(super) async fn read_risk_event(&self, id: Uuid) -> Result<Option<RiskEvent>> {
        sqlx::query("SELECT id, customer_id, kind, at_ms, data FROM risk_events WHERE id = $1")
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(event_of)
            .transpose()
    }

    pub(super) async fn risk_entity_states(&self, out: &mut Vec<(String, Digest32)>) -> Result<()> {
        let sql = format!("SELECT {REVIEW_COLUMNS} FROM risk_reviews");
        for r in sqlx::query(&sql).fetch_all(&self.pool).await? {
            let row = row_of::<ReviewRow>(&r)?;
            out.push((row.entity(), hash_of(&row)?));
        }
        for r in sqlx::query("SELECT id, customer_id, kind, at_ms, data FROM risk_events")
            .fetch_all(&self.pool)
            .await?
        {
            let row = row_of::<EventRow>(&r)?;
            out.push((format!("risk_event/{}", row.id), hash_of(&row)?));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
struct ContactRow {
    customer_id: String,
    sealed: String,
    updated_at_ms: i64,
}

/// Keep a customer's sealed contact details (replacing earlier ones).
pub(super) async fn stage_contact(
    w: &mut WriteTx,
    ctx: &WriteCtx,
    customer_id: Uuid,
    sealed: Vec<u8>,
) -> Result<Staged> {
    let sql = format!(
        "SELECT customer_id, sealed, updated_at_ms FROM customer_contacts WHERE customer_id = $1{}",
        for_update(w.backend)
    );
    let before = sqlx::query(&sql)
        .bind(customer_id.to_string())
        .fetch_optional(&mut *w.tx)
        .await?
        .map(|r| row_of::<ContactRow>(&r))
        .transpose()?;
    let after = ContactRow {
        customer_id: customer_id.to_string(),
        sealed: hex::encode(&sealed),
        updated_at_ms: ctx.now.unix_ms(),
    };
    if before.is_some() {
        w.write(
            "UPDATE customer_contacts SET sealed = $1, updated_at_ms = $2 WHERE customer_id = $3"
                .into(),
            vec![
                Val::Text(after.sealed.clone()),
                Val::Int(after.updated_at_ms),
                Val::Text(after.customer_id.clone()),
            ],
        )
        .await?;
    } else {
        w.insert(
            "customer_contacts",
            &["customer_id", "sealed", "updated_at_ms"],
            vec![
                Val::Text(after.customer_id.clone()),
                Val::Text(after.sealed.clone()),
                Val::Int(after.updated_at_ms),
            ],
        )
        .await?;
    }
    let entity = format!("customer_contact/{customer_id}");
    w.record(entity, before.as_ref().map(hash_of).transpose()?, Some(hash_of(&after)?));
    Ok(Staged {
        action: "customer.contact_set".into(),
        subject: format!("customer/{customer_id}"),
        detail: serde_json::Value::Null,
        result: serde_json::Value::Null,
    })
}

impl SqlStore {
    pub(super) async fn read_contact(&self, customer_id: Uuid) -> Result<Option<Vec<u8>>> {
        let row = sqlx::query("SELECT customer_id, sealed, updated_at_ms FROM customer_contacts WHERE customer_id = $1")
            .bind(customer_id.to_string())
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| {
            let row = row_of::<ContactRow>(&r)?;
            hex::decode(&row.sealed)
                .map_err(|_| StoreError::Corrupt("sealed contact is not hex".into()))
        })
        .transpose()
    }

    pub(super) async fn read_contacts(&self) -> Result<Vec<(Uuid, Vec<u8>)>> {
        sqlx::query(
            "SELECT customer_id, sealed, updated_at_ms FROM customer_contacts ORDER BY customer_id",
        )
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(|r| {
            let row = row_of::<ContactRow>(r)?;
            let id = Uuid::parse_str(&row.customer_id)
                .map_err(|_| StoreError::Corrupt("contact customer id".into()))?;
            let sealed = hex::decode(&row.sealed)
                .map_err(|_| StoreError::Corrupt("sealed contact is not hex".into()))?;
            Ok((id, sealed))
        })
        .collect()
    }

    pub(super) async fn contact_entity_states(
        &self,
        out: &mut Vec<(String, Digest32)>,
    ) -> Result<()> {
        for r in sqlx::query("SELECT customer_id, sealed, updated_at_ms FROM customer_contacts")
            .fetch_all(&self.pool)
            .await?
        {
            let row = row_of::<ContactRow>(&r)?;
            out.push((format!("customer_contact/{}", row.customer_id), hash_of(&row)?));
        }
        Ok(())
    }
}
