//! Approvers' denials: a reserved withdrawal cancelled, with who denied it and why, in one
//! transaction.

use crate::types::Denial;

use super::*;

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
struct DenialRow {
    withdrawal_id: String,
    denied_by: String,
    reason: String,
    denied_at_ms: i64,
}

const COLUMNS: &str = "withdrawal_id, denied_by, reason, denied_at_ms";

pub(super) async fn stage_deny(
    w: &mut WriteTx,
    ctx: &WriteCtx,
    id: Uuid,
    denial: Denial,
    entry_id: Uuid,
) -> Result<Staged> {
    // The cancellation first: it locks the withdrawal and refuses anything but `reserved`.
    let cancelled = stage_transition(w, ctx, id, WithdrawalState::Cancelled, entry_id).await?;
    let row = DenialRow {
        withdrawal_id: id.to_string(),
        denied_by: denial.by.clone(),
        reason: denial.reason.clone(),
        denied_at_ms: denial.at.unix_ms(),
    };
    w.insert(
        "withdrawal_denials",
        &["withdrawal_id", "denied_by", "reason", "denied_at_ms"],
        vec![
            Val::Text(row.withdrawal_id.clone()),
            Val::Text(row.denied_by.clone()),
            Val::Text(row.reason.clone()),
            Val::Int(row.denied_at_ms),
        ],
    )
    .await?;
    w.fault("withdrawal.after_denial")?;
    w.record(format!("withdrawal_denial/{id}"), None, Some(hash_of(&row)?));
    Ok(Staged {
        action: "withdrawal.denied".into(),
        subject: format!("withdrawal/{id}"),
        detail: serde_json::json!({ "by": denial.by, "reason": denial.reason }),
        result: cancelled.result,
    })
}

impl SqlStore {
    pub(super) async fn denial_entity_states(
        &self,
        out: &mut Vec<(String, Digest32)>,
    ) -> Result<()> {
        let sql = format!("SELECT {COLUMNS} FROM withdrawal_denials");
        for r in sqlx::query(&sql).fetch_all(&self.pool).await? {
            let row = row_of::<DenialRow>(&r)?;
            out.push((format!("withdrawal_denial/{}", row.withdrawal_id), hash_of(&row)?));
        }
        Ok(())
    }

    pub(super) async fn read_denial(&self, id: Uuid) -> Result<Option<Denial>> {
        let sql = format!("SELECT {COLUMNS} FROM withdrawal_denials WHERE withdrawal_id = $1");
        sqlx::query(&sql)
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await?
            .map(|r| {
                let row = row_of::<DenialRow>(&r)?;
                Ok(Denial {
                    by: row.denied_by,
                    reason: row.reason,
                    at: Timestamp::from_unix_ms(row.denied_at_ms),
                })
            })
            .transpose()
    }
}
