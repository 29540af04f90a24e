//! The initiator's signed request for a withdrawal (`governance::initiation::Initiation`),
//! kept beside the withdrawal it asked for and written in the same transaction, so that the
//! engine can hand it to the signer nodes, which check the intent against it. Nothing online
//! decides on it: the nodes do.

use strongroom_governance::initiation::Initiation;

use super::*;

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub(super) struct InitiationRow {
    withdrawal_id: String,
    initiation: String,
    created_at_ms: i64,
}

impl InitiationRow {
    fn entity(&self) -> String {
        format!("initiation/{}", self.withdrawal_id)
    }

    fn parse(&self) -> Result<Initiation> {
        serde_json::from_str(&self.initiation)
            .map_err(|e| StoreError::Corrupt(format!("initiation: {e}")))
    }
}

const COLUMNS: &str = "withdrawal_id, initiation, created_at_ms";

/// The withdrawal and its initiation, in one transaction.
pub(super) async fn stage_request(
    w: &mut WriteTx,
    ctx: &WriteCtx,
    planned: PlannedWithdrawal,
    initiation: Initiation,
) -> Result<Staged> {
    let withdrawal_id = planned.withdrawal.id;
    let mut staged = stage_withdrawal(w, ctx, planned).await?;
    let row = InitiationRow {
        withdrawal_id: withdrawal_id.to_string(),
        initiation: serde_json::to_string(&initiation)
            .map_err(|e| StoreError::Corrupt(e.to_string()))?,
        created_at_ms: ctx.now.unix_ms(),
    };
    w.insert(
        "withdrawal_initiations",
        &["withdrawal_id", "initiation", "created_at_ms"],
        vec![
            Val::Text(row.withdrawal_id.clone()),
            Val::Text(row.initiation.clone()),
            Val::Int(row.created_at_ms),
        ],
    )
    .await?;
    w.fault("withdrawal.after_initiation")?;
    w.record(row.entity(), None, Some(hash_of(&row)?));
    if let Some(d) = staged.detail.as_object_mut() {
        d.insert("initiator".into(), initiation.initiator.clone().into());
    }
    Ok(staged)
}

impl SqlStore {
    pub(super) async fn read_initiation(&self, withdrawal_id: Uuid) -> Result<Option<Initiation>> {
        let sql = format!("SELECT {COLUMNS} FROM withdrawal_initiations WHERE withdrawal_id = $1");
        sqlx::query(&sql)
            .bind(withdrawal_id.to_string())
            .fetch_optional(&self.pool)
            .await?
            .map(|r| row_of::<InitiationRow>(&r)?.parse())
            .transpose()
    }

    pub(super) async fn initiation_entity_states(
        &self,
        out: &mut Vec<(String, Digest32)>,
    ) -> Result<()> {
        for r in sqlx::query(&format!("SELECT {COLUMNS} FROM withdrawal_initiations"))
            .fetch_all(&self.pool)
            .await?
        {
            let row = row_of::<InitiationRow>(&r)?;
            out.push((row.entity(), hash_of(&row)?));
        }
        Ok(())
    }
}
