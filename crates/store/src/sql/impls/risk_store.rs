//! Risk assessments, the review queue and risk events.

use super::*;

#[async_trait]
impl RiskStore for SqlStore {
    async fn assess_withdrawal(&self, ctx: &WriteCtx, review: RiskReview) -> Result<RiskReview> {
        let job = job(move |w, ctx| {
            let r = review.clone();
            Box::pin(async move { risk::stage_assess(w, ctx, r).await })
        });
        self.submit(ctx, None, job).await.and_then(from_json)
    }

    async fn review_withdrawal(
        &self,
        ctx: &WriteCtx,
        id: Uuid,
        action: ReviewAction,
    ) -> Result<RiskReview> {
        let job = job(move |w, ctx| {
            let a = action.clone();
            Box::pin(async move { risk::stage_review(w, ctx, id, a).await })
        });
        self.submit(ctx, None, job).await.and_then(from_json)
    }

    async fn risk_review(&self, id: Uuid) -> Result<Option<RiskReview>> {
        self.read_risk_review(id).await
    }

    async fn list_risk_reviews(
        &self,
        state: Option<RiskState>,
        limit: u32,
    ) -> Result<Vec<RiskReview>> {
        self.read_risk_reviews(state, limit).await
    }

    async fn risk_reviews_since(
        &self,
        updated_after_ms: i64,
        limit: u32,
    ) -> Result<Vec<RiskReview>> {
        self.read_risk_reviews_since(updated_after_ms, limit).await
    }

    async fn add_risk_event(&self, ctx: &WriteCtx, event: RiskEvent) -> Result<RiskEvent> {
        let job = job(move |w, ctx| {
            let e = event.clone();
            Box::pin(async move { risk::stage_event(w, ctx, e).await })
        });
        self.submit(ctx, None, job).await.and_then(from_json)
    }

    async fn review_queue(&self) -> Result<u64> {
        let row = sqlx::query("SELECT COUNT(*) AS n FROM risk_reviews WHERE state = $1")
            .bind(RiskState::Open.as_str())
            .fetch_one(&self.pool)
            .await?;
        let n: i64 = row.try_get("n")?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    async fn risk_events(&self, after_ms: i64, limit: u32) -> Result<Vec<RiskEvent>> {
        self.read_risk_events(after_ms, limit).await
    }
}
