//! Withdrawals from request to settlement, who asked (initiations), approvals, and the signer
//! nodes' latest refusal.

use super::*;

#[async_trait]
impl Withdrawals for SqlStore {
    async fn request_withdrawal(
        &self,
        ctx: &WriteCtx,
        idem: Option<&Idempotency>,
        planned: PlannedWithdrawal,
    ) -> Result<Withdrawal> {
        let job = job(move |w, ctx| {
            let planned = planned.clone();
            Box::pin(async move { stage_withdrawal(w, ctx, planned).await })
        });
        let result = self.submit(ctx, idem, job).await;
        self.settle(result.and_then(from_json), idem).await
    }

    async fn request_withdrawal_with(
        &self,
        ctx: &WriteCtx,
        idem: Option<&Idempotency>,
        planned: PlannedWithdrawal,
        records: WithdrawalRecords,
    ) -> Result<Withdrawal> {
        let job = job(move |w, ctx| {
            let (planned, records) = (planned.clone(), records.clone());
            Box::pin(async move { initiations::stage_request(w, ctx, planned, records).await })
        });
        let result = self.submit(ctx, idem, job).await;
        self.settle(result.and_then(from_json), idem).await
    }

    async fn initiations(&self, withdrawal_id: Uuid) -> Result<Initiations> {
        self.read_initiations(withdrawal_id).await
    }

    async fn withdrawal_backlog(&self, now_ms: i64) -> Result<Vec<StateBacklog>> {
        let mut out = Vec::new();
        for state in [
            WithdrawalState::Reserved,
            WithdrawalState::Built,
            WithdrawalState::Signed,
            WithdrawalState::Broadcast,
        ] {
            let row = sqlx::query(
                "SELECT COUNT(*) AS n, MIN(created_at_ms) AS oldest FROM withdrawals WHERE state = $1",
            )
            .bind(state.as_str())
            .fetch_one(&self.pool)
            .await?;
            let n: i64 = row.try_get("n")?;
            let oldest: Option<i64> = row.try_get("oldest")?;
            out.push(StateBacklog {
                state,
                count: u64::try_from(n).unwrap_or(0),
                oldest_ms: oldest.map_or(0, |o| now_ms.saturating_sub(o)),
            });
        }
        Ok(out)
    }

    async fn transition_withdrawal(
        &self,
        ctx: &WriteCtx,
        idem: Option<&Idempotency>,
        id: Uuid,
        to: WithdrawalState,
        entry_id: Uuid,
    ) -> Result<Withdrawal> {
        let job = job(move |w, ctx| {
            Box::pin(async move { stage_transition(w, ctx, id, to, entry_id).await })
        });
        let result = self.submit(ctx, idem, job).await;
        self.settle(result.and_then(from_json), idem).await
    }

    async fn deny_withdrawal(
        &self,
        ctx: &WriteCtx,
        idem: Option<&Idempotency>,
        id: Uuid,
        denial: crate::types::Denial,
        entry_id: Uuid,
    ) -> Result<Withdrawal> {
        let job = job(move |w, ctx| {
            let d = denial.clone();
            Box::pin(async move { denials::stage_deny(w, ctx, id, d, entry_id).await })
        });
        let result = self.submit(ctx, idem, job).await;
        self.settle(result.and_then(from_json), idem).await
    }

    async fn withdrawal_denial(&self, id: Uuid) -> Result<Option<crate::types::Denial>> {
        self.read_denial(id).await
    }

    async fn get_withdrawal(&self, id: Uuid) -> Result<Withdrawal> {
        let row =
            sqlx::query(&format!("SELECT {WITHDRAWAL_COLUMNS} FROM withdrawals WHERE id = $1"))
                .bind(id.to_string())
                .fetch_optional(&self.pool)
                .await?
                .ok_or(StoreError::NotFound { entity: "withdrawal", id: id.to_string() })?;
        row_of::<WithdrawalRow>(&row)?.to_domain()
    }

    async fn list_withdrawals(&self, filter: &WithdrawalFilter) -> Result<Vec<Withdrawal>> {
        let sql = format!(
            "SELECT {WITHDRAWAL_COLUMNS} FROM withdrawals \
             WHERE (CAST($1 AS TEXT) IS NULL OR customer_id = $1) AND (CAST($2 AS TEXT) IS NULL OR state = $2) \
             AND (CAST($3 AS BIGINT) IS NULL OR created_at_ms < $3 OR (created_at_ms = $3 AND id > $4)) \
             ORDER BY created_at_ms DESC, id LIMIT $5"
        );
        let after = filter.after.as_ref();
        let rows = sqlx::query(&sql)
            .bind(filter.customer_id.map(|c| c.to_string()))
            .bind(filter.state.map(|s| s.as_str().to_string()))
            .bind(after.map(|k| k.at_ms))
            .bind(after.map_or("", |k| k.id.as_str()))
            .bind(i64::from(filter.limit.clamp(1, 1001)))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(|r| row_of::<WithdrawalRow>(r)?.to_domain()).collect()
    }

    async fn add_approval(
        &self,
        ctx: &WriteCtx,
        withdrawal_id: Uuid,
        approval: strongroom_governance::approval::Approval,
    ) -> Result<Vec<strongroom_governance::approval::Approval>> {
        let job = job(move |w, ctx| {
            let a = approval.clone();
            Box::pin(async move { approvals::stage_add(w, ctx, withdrawal_id, a).await })
        });
        self.submit(ctx, None, job).await?;
        self.read_approvals(withdrawal_id).await
    }

    async fn approvals(
        &self,
        withdrawal_id: Uuid,
    ) -> Result<Vec<strongroom_governance::approval::Approval>> {
        self.read_approvals(withdrawal_id).await
    }

    async fn note_signer_refusal(
        &self,
        ctx: &WriteCtx,
        withdrawal_id: Uuid,
        refusal: &strongroom_governance::refusal::Refusal,
    ) -> Result<()> {
        let refusal = refusal.clone();
        let job = job(move |w, ctx| {
            let r = refusal.clone();
            Box::pin(async move { refusals::stage_note(w, ctx, withdrawal_id, r).await })
        });
        self.submit(ctx, None, job).await.map(|_| ())
    }

    async fn signer_refusal(
        &self,
        withdrawal_id: Uuid,
    ) -> Result<Option<strongroom_governance::refusal::Refusal>> {
        self.read_signer_refusal(withdrawal_id).await
    }
}
