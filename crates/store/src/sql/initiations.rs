//! Who asked for a withdrawal, signed (`governance::initiation::Initiation`): the initiating
//! member's request (the exchange's backend, a staff operator) and the customer's own, kept
//! beside the withdrawal and written in the same transaction, so that the engine can hand
//! them to the signer nodes, which check the intent against them. Nothing online decides on
//! them: the nodes do.

use strongroom_governance::initiation::Initiation;

use super::*;
use crate::{Initiations, WithdrawalRecords};

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub(super) struct InitiationRow {
    withdrawal_id: String,
    kind: String,
    initiation: String,
    created_at_ms: i64,
}

impl InitiationRow {
    fn entity(&self) -> String {
        format!("initiation/{}/{}", self.withdrawal_id, self.kind)
    }

    fn parse(&self) -> Result<Initiation> {
        serde_json::from_str(&self.initiation)
            .map_err(|e| StoreError::Corrupt(format!("initiation: {e}")))
    }
}

const COLUMNS: &str = "withdrawal_id, kind, initiation, created_at_ms";
const MEMBER: &str = "member";
const CUSTOMER: &str = "customer";

/// The withdrawal, its signed requests and its risk context, in one transaction.
pub(super) async fn stage_request(
    w: &mut WriteTx,
    ctx: &WriteCtx,
    planned: PlannedWithdrawal,
    records: WithdrawalRecords,
) -> Result<Staged> {
    let WithdrawalRecords { signed, context } = records;
    let withdrawal_id = planned.withdrawal.id;
    let mut staged = stage_withdrawal(w, ctx, planned).await?;
    if let Some(event) = context {
        super::risk::stage_event(w, ctx, event).await?;
        w.fault("withdrawal.after_context")?;
    }
    for (kind, initiation) in [(MEMBER, &signed.member), (CUSTOMER, &signed.customer)] {
        let Some(initiation) = initiation else { continue };
        let row = InitiationRow {
            withdrawal_id: withdrawal_id.to_string(),
            kind: kind.to_owned(),
            initiation: serde_json::to_string(initiation)
                .map_err(|e| StoreError::Corrupt(e.to_string()))?,
            created_at_ms: ctx.now.unix_ms(),
        };
        w.insert(
            "withdrawal_initiations",
            &["withdrawal_id", "kind", "initiation", "created_at_ms"],
            vec![
                Val::Text(row.withdrawal_id.clone()),
                Val::Text(row.kind.clone()),
                Val::Text(row.initiation.clone()),
                Val::Int(row.created_at_ms),
            ],
        )
        .await?;
        w.fault("withdrawal.after_initiation")?;
        w.record(row.entity(), None, Some(hash_of(&row)?));
        if let Some(d) = staged.detail.as_object_mut() {
            d.insert(format!("{kind}_initiator"), initiation.initiator.clone().into());
        }
    }
    Ok(staged)
}

impl SqlStore {
    pub(super) async fn read_initiations(&self, withdrawal_id: Uuid) -> Result<Initiations> {
        let sql = format!("SELECT {COLUMNS} FROM withdrawal_initiations WHERE withdrawal_id = $1");
        let mut out = Initiations::default();
        for r in sqlx::query(&sql).bind(withdrawal_id.to_string()).fetch_all(&self.pool).await? {
            let row = row_of::<InitiationRow>(&r)?;
            match row.kind.as_str() {
                MEMBER => out.member = Some(row.parse()?),
                CUSTOMER => out.customer = Some(row.parse()?),
                other => return Err(StoreError::Corrupt(format!("initiation kind {other}"))),
            }
        }
        Ok(out)
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
