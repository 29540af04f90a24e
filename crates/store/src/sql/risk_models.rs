//! The risk model registry: versions, their status, and every change audited.

use super::*;

const COLUMNS: &str =
    "version, status, params, trained_on, state, note, created_at_ms, updated_at_ms, live_since_ms";
/// The same without the state (lists).
const LIST_COLUMNS: &str =
    "version, status, params, trained_on, '' AS state, note, created_at_ms, updated_at_ms, live_since_ms";

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub(super) struct ModelRow {
    version: i64,
    status: String,
    params: String,
    trained_on: String,
    state: String,
    note: String,
    created_at_ms: i64,
    updated_at_ms: i64,
    live_since_ms: Option<i64>,
}

impl ModelRow {
    fn entity(&self) -> String {
        format!("risk_model/{}", self.version)
    }

    fn to_domain(&self) -> Result<RiskModel> {
        let corrupt = |w: &str| StoreError::Corrupt(format!("risk model {}: {w}", self.version));
        Ok(RiskModel {
            version: self.version,
            status: ModelStatus::parse(&self.status).ok_or_else(|| corrupt("status"))?,
            params: serde_json::from_str(&self.params).map_err(|_| corrupt("params"))?,
            trained_on: serde_json::from_str(&self.trained_on)
                .map_err(|_| corrupt("trained_on"))?,
            note: self.note.clone(),
            created_at: Timestamp::from_unix_ms(self.created_at_ms),
            updated_at: Timestamp::from_unix_ms(self.updated_at_ms),
            live_since: self.live_since_ms.map(Timestamp::from_unix_ms),
        })
    }
}

fn json(v: &serde_json::Value) -> Result<String> {
    serde_json::to_string(v).map_err(|e| StoreError::Corrupt(e.to_string()))
}

async fn locked(w: &mut WriteTx, version: i64) -> Result<Option<ModelRow>> {
    let sql =
        format!("SELECT {COLUMNS} FROM risk_models WHERE version = $1{}", for_update(w.backend));
    sqlx::query(&sql)
        .bind(version)
        .fetch_optional(&mut *w.tx)
        .await?
        .map(|r| row_of::<ModelRow>(&r))
        .transpose()
}

async fn with_status(w: &mut WriteTx, status: ModelStatus) -> Result<Vec<ModelRow>> {
    let sql = format!(
        "SELECT {COLUMNS} FROM risk_models WHERE status = $1 ORDER BY version{}",
        for_update(w.backend)
    );
    sqlx::query(&sql)
        .bind(status.as_str())
        .fetch_all(&mut *w.tx)
        .await?
        .iter()
        .map(row_of::<ModelRow>)
        .collect()
}

/// Write `after` over `before` (same version), recorded in the audit chain.
async fn update(w: &mut WriteTx, before: &ModelRow, after: &ModelRow) -> Result<()> {
    w.write(
        "UPDATE risk_models SET status = $1, note = $2, updated_at_ms = $3, live_since_ms = $4 WHERE version = $5"
            .into(),
        vec![
            Val::Text(after.status.clone()),
            Val::Text(after.note.clone()),
            Val::Int(after.updated_at_ms),
            Val::OptInt(after.live_since_ms),
            Val::Int(after.version),
        ],
    )
    .await?;
    w.record(after.entity(), Some(hash_of(before)?), Some(hash_of(after)?));
    Ok(())
}

pub(super) async fn stage_register(
    w: &mut WriteTx,
    ctx: &WriteCtx,
    m: NewRiskModel,
) -> Result<Staged> {
    // The last version, locked with the table's rows (a concurrent registration waits).
    let sql = format!(
        "SELECT {COLUMNS} FROM risk_models ORDER BY version DESC LIMIT 1{}",
        for_update(w.backend)
    );
    let last = sqlx::query(&sql)
        .fetch_optional(&mut *w.tx)
        .await?
        .map(|r| row_of::<ModelRow>(&r))
        .transpose()?;
    let version = last.map_or(1, |l| l.version + 1);
    let now = ctx.now.unix_ms();
    let row = ModelRow {
        version,
        status: ModelStatus::Candidate.as_str().into(),
        params: json(&m.params)?,
        trained_on: json(&m.trained_on)?,
        state: hex::encode(&m.state),
        note: m.note,
        created_at_ms: now,
        updated_at_ms: now,
        live_since_ms: None,
    };
    w.insert(
        "risk_models",
        &[
            "version",
            "status",
            "params",
            "trained_on",
            "state",
            "note",
            "created_at_ms",
            "updated_at_ms",
            "live_since_ms",
        ],
        vec![
            Val::Int(row.version),
            Val::Text(row.status.clone()),
            Val::Text(row.params.clone()),
            Val::Text(row.trained_on.clone()),
            Val::Text(row.state.clone()),
            Val::Text(row.note.clone()),
            Val::Int(row.created_at_ms),
            Val::Int(row.updated_at_ms),
            Val::OptInt(None),
        ],
    )
    .await?;
    w.record(row.entity(), None, Some(hash_of(&row)?));
    let model = row.to_domain()?;
    Ok(Staged {
        action: "risk.model_registered".into(),
        subject: format!("risk_model/{version}"),
        detail: serde_json::json!({ "params": model.params, "trained_on": model.trained_on, "note": model.note }),
        result: serde_json::to_value(&model).map_err(|e| StoreError::Corrupt(e.to_string()))?,
    })
}

pub(super) async fn stage_status(
    w: &mut WriteTx,
    ctx: &WriteCtx,
    version: i64,
    to: ModelStatus,
    note: String,
) -> Result<Staged> {
    let before = locked(w, version)
        .await?
        .ok_or(StoreError::NotFound { entity: "risk model", id: version.to_string() })?;
    let from = ModelStatus::parse(&before.status)
        .ok_or_else(|| StoreError::Corrupt(format!("risk model {version}: status")))?;
    let allowed = match to {
        ModelStatus::Shadow => matches!(from, ModelStatus::Candidate | ModelStatus::Retired),
        ModelStatus::Live => from != ModelStatus::Live,
        ModelStatus::Retired => matches!(from, ModelStatus::Candidate | ModelStatus::Shadow),
        ModelStatus::Candidate => false,
    };
    if !allowed {
        return Err(StoreError::InvalidTransition { from: from.as_str(), to: to.as_str() });
    }
    let now = ctx.now.unix_ms();
    // The one it replaces steps aside: the previous shadow, or the previous live one.
    let displaced = match to {
        ModelStatus::Shadow => with_status(w, ModelStatus::Shadow).await?,
        ModelStatus::Live => with_status(w, ModelStatus::Live).await?,
        _ => Vec::new(),
    };
    let mut replaced = Vec::new();
    for d in displaced.into_iter().filter(|d| d.version != version) {
        let after = ModelRow {
            status: ModelStatus::Retired.as_str().into(),
            note: format!("replaced by version {version}"),
            updated_at_ms: now,
            ..d.clone()
        };
        update(w, &d, &after).await?;
        replaced.push(d.version);
    }
    let after = ModelRow {
        status: to.as_str().into(),
        note: note.clone(),
        updated_at_ms: now,
        live_since_ms: if to == ModelStatus::Live { Some(now) } else { before.live_since_ms },
        ..before.clone()
    };
    update(w, &before, &after).await?;
    let model = after.to_domain()?;
    Ok(Staged {
        action: format!("risk.model_{}", to.as_str()),
        subject: format!("risk_model/{version}"),
        detail: serde_json::json!({ "from": from.as_str(), "to": to.as_str(), "note": note, "replaced": replaced }),
        result: serde_json::to_value(&model).map_err(|e| StoreError::Corrupt(e.to_string()))?,
    })
}

impl SqlStore {
    pub(super) async fn read_risk_models(&self) -> Result<Vec<RiskModel>> {
        sqlx::query(&format!("SELECT {LIST_COLUMNS} FROM risk_models ORDER BY version"))
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(|r| row_of::<ModelRow>(r)?.to_domain())
            .collect()
    }

    pub(super) async fn read_risk_model_state(&self, version: i64) -> Result<Option<Vec<u8>>> {
        sqlx::query("SELECT state FROM risk_models WHERE version = $1")
            .bind(version)
            .fetch_optional(&self.pool)
            .await?
            .map(|r| {
                let s: String = r.try_get("state")?;
                hex::decode(s)
                    .map_err(|_| StoreError::Corrupt(format!("risk model {version}: state")))
            })
            .transpose()
    }

    pub(super) async fn risk_model_entity_states(
        &self,
        out: &mut Vec<(String, Digest32)>,
    ) -> Result<()> {
        for r in
            sqlx::query(&format!("SELECT {COLUMNS} FROM risk_models")).fetch_all(&self.pool).await?
        {
            let row = row_of::<ModelRow>(&r)?;
            out.push((row.entity(), hash_of(&row)?));
        }
        Ok(())
    }
}
