//! The signer nodes' latest refusal of each withdrawal, as the node sent it: kept so the API
//! can say why a withdrawal does not move. A record of what the nodes said, never an input
//! to any decision.

use strongroom_governance::refusal::Refusal;

use super::*;

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub(super) struct RefusalRow {
    withdrawal_id: String,
    refusal: String,
    created_at_ms: i64,
}

impl RefusalRow {
    fn entity(&self) -> String {
        format!("signer_refusal/{}", self.withdrawal_id)
    }

    fn parse(&self) -> Result<Refusal> {
        serde_json::from_str(&self.refusal)
            .map_err(|e| StoreError::Corrupt(format!("signer refusal: {e}")))
    }
}

const COLUMNS: &str = "withdrawal_id, refusal, created_at_ms";

pub(super) async fn stage_note(
    w: &mut WriteTx,
    ctx: &WriteCtx,
    withdrawal_id: Uuid,
    refusal: Refusal,
) -> Result<Staged> {
    // The withdrawal must exist (and is locked, so a concurrent transition waits).
    lock_withdrawal(w, withdrawal_id).await?;
    let after = RefusalRow {
        withdrawal_id: withdrawal_id.to_string(),
        refusal: serde_json::to_string(&refusal).map_err(|e| StoreError::Corrupt(e.to_string()))?,
        created_at_ms: ctx.now.unix_ms(),
    };
    let sql = format!(
        "SELECT {COLUMNS} FROM signer_refusals WHERE withdrawal_id = $1{}",
        for_update(w.backend)
    );
    let before = sqlx::query(&sql)
        .bind(&after.withdrawal_id)
        .fetch_optional(&mut *w.tx)
        .await?
        .map(|r| row_of::<RefusalRow>(&r))
        .transpose()?;
    let values = vec![
        Val::Text(after.refusal.clone()),
        Val::Int(after.created_at_ms),
        Val::Text(after.withdrawal_id.clone()),
    ];
    if before.is_some() {
        let sql =
            "UPDATE signer_refusals SET refusal = $1, created_at_ms = $2 WHERE withdrawal_id = $3";
        w.write(sql.into(), values).await?;
    } else {
        w.insert("signer_refusals", &["refusal", "created_at_ms", "withdrawal_id"], values).await?;
    }
    w.record(after.entity(), before.as_ref().map(hash_of).transpose()?, Some(hash_of(&after)?));
    Ok(Staged {
        action: "withdrawal.signer_refused".into(),
        subject: format!("withdrawal/{withdrawal_id}"),
        detail: serde_json::json!({ "refusal": refusal }),
        result: serde_json::Value::Null,
    })
}

impl SqlStore {
    pub(super) async fn read_signer_refusal(&self, withdrawal_id: Uuid) -> Result<Option<Refusal>> {
        let sql = format!("SELECT {COLUMNS} FROM signer_refusals WHERE withdrawal_id = $1");
        sqlx::query(&sql)
            .bind(withdrawal_id.to_string())
            .fetch_optional(&self.pool)
            .await?
            .map(|r| row_of::<RefusalRow>(&r)?.parse())
            .transpose()
    }

    pub(super) async fn refusal_entity_states(
        &self,
        out: &mut Vec<(String, Digest32)>,
    ) -> Result<()> {
        for r in sqlx::query(&format!("SELECT {COLUMNS} FROM signer_refusals"))
            .fetch_all(&self.pool)
            .await?
        {
            let row = row_of::<RefusalRow>(&r)?;
            out.push((row.entity(), hash_of(&row)?));
        }
        Ok(())
    }
}
