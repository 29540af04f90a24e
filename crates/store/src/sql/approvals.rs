//! Submitted approvals of withdrawals: kept and handed on, never trusted.

use strongroom_governance::approval::Approval;

use super::*;

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub(super) struct ApprovalRow {
    withdrawal_id: String,
    approver: String,
    approval: String,
    created_at_ms: i64,
}

impl ApprovalRow {
    fn entity(&self) -> String {
        format!("approval/{}/{}", self.withdrawal_id, self.approver)
    }
}

pub(super) async fn stage_add(
    w: &mut WriteTx,
    ctx: &WriteCtx,
    withdrawal_id: Uuid,
    approval: Approval,
) -> Result<Staged> {
    // The withdrawal must exist (and is locked, so a concurrent transition waits).
    let (_, wd) = lock_withdrawal(w, withdrawal_id).await?;
    if approval.intent_hash != wd.intent_hash {
        return Err(StoreError::Refused("the approval is for another intent".into()));
    }
    let after = ApprovalRow {
        withdrawal_id: withdrawal_id.to_string(),
        approver: approval.approver.clone(),
        approval: serde_json::to_string(&approval)
            .map_err(|e| StoreError::Corrupt(e.to_string()))?,
        created_at_ms: ctx.now.unix_ms(),
    };
    let sql = format!(
        "SELECT withdrawal_id, approver, approval, created_at_ms FROM approvals WHERE withdrawal_id = $1 AND approver = $2{}",
        for_update(w.backend)
    );
    let before = sqlx::query(&sql)
        .bind(&after.withdrawal_id)
        .bind(&after.approver)
        .fetch_optional(&mut *w.tx)
        .await?
        .map(|r| row_of::<ApprovalRow>(&r))
        .transpose()?;
    if before.is_some() {
        w.write(
            "UPDATE approvals SET approval = $1, created_at_ms = $2 WHERE withdrawal_id = $3 AND approver = $4".into(),
            vec![
                Val::Text(after.approval.clone()),
                Val::Int(after.created_at_ms),
                Val::Text(after.withdrawal_id.clone()),
                Val::Text(after.approver.clone()),
            ],
        )
        .await?;
    } else {
        w.insert(
            "approvals",
            &["withdrawal_id", "approver", "approval", "created_at_ms"],
            vec![
                Val::Text(after.withdrawal_id.clone()),
                Val::Text(after.approver.clone()),
                Val::Text(after.approval.clone()),
                Val::Int(after.created_at_ms),
            ],
        )
        .await?;
    }
    w.record(after.entity(), before.as_ref().map(hash_of).transpose()?, Some(hash_of(&after)?));
    Ok(Staged {
        action: "withdrawal.approval_submitted".into(),
        subject: format!("withdrawal/{withdrawal_id}"),
        detail: serde_json::json!({
            "approver": approval.approver, "policy_version": approval.policy_version,
            "expires_at_ms": approval.expires_at.unix_ms(),
        }),
        result: serde_json::Value::Null,
    })
}

impl SqlStore {
    pub(super) async fn read_approvals(&self, withdrawal_id: Uuid) -> Result<Vec<Approval>> {
        let rows = sqlx::query(
            "SELECT withdrawal_id, approver, approval, created_at_ms FROM approvals WHERE withdrawal_id = $1 ORDER BY approver",
        )
        .bind(withdrawal_id.to_string())
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let row = row_of::<ApprovalRow>(r)?;
                serde_json::from_str(&row.approval)
                    .map_err(|e| StoreError::Corrupt(format!("approval: {e}")))
            })
            .collect()
    }

    pub(super) async fn approval_entity_states(
        &self,
        out: &mut Vec<(String, Digest32)>,
    ) -> Result<()> {
        for r in
            sqlx::query("SELECT withdrawal_id, approver, approval, created_at_ms FROM approvals")
                .fetch_all(&self.pool)
                .await?
        {
            let row = row_of::<ApprovalRow>(&r)?;
            out.push((row.entity(), hash_of(&row)?));
        }
        Ok(())
    }
}
