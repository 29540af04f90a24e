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
        after: Option<&Keyset>,
        limit: u32,
    ) -> Result<Vec<RiskReview>> {
        self.read_risk_reviews(state, after, limit).await
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

    async fn risk_event(&self, id: Uuid) -> Result<Option<RiskEvent>> {
        self.read_risk_event(id).await
    }

    async fn customer_risk_events(
        &self,
        customer_id: Uuid,
        after: Option<&Keyset>,
        limit: u32,
    ) -> Result<Vec<RiskEvent>> {
        self.read_customer_risk_events(customer_id, after, limit).await
    }

    async fn risk_profiles(&self, customers: &[String]) -> Result<Vec<(String, Vec<u8>)>> {
        let mut out = Vec::with_capacity(customers.len());
        for chunk in customers.chunks(500) {
            let marks: Vec<String> = (1..=chunk.len()).map(|i| format!("${i}")).collect();
            let sql = format!(
                "SELECT customer, data FROM risk_profiles WHERE customer IN ({})",
                marks.join(", ")
            );
            let mut q = sqlx::query(&sql);
            for c in chunk {
                q = q.bind(c);
            }
            for r in q.fetch_all(&self.pool).await? {
                out.push((r.try_get::<String, _>("customer")?, r.try_get::<Vec<u8>, _>("data")?));
            }
        }
        Ok(out)
    }

    async fn risk_profiles_changed(&self, after_version: i64, limit: u32) -> Result<Vec<String>> {
        let rows = sqlx::query(
            "SELECT customer FROM risk_profiles WHERE version > $1 ORDER BY version, customer LIMIT $2",
        )
        .bind(after_version)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|r| Ok(r.try_get::<String, _>("customer")?)).collect()
    }

    async fn risk_learning_version(&self) -> Result<i64> {
        let row = sqlx::query("SELECT version FROM risk_learning_head WHERE id = 1")
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get::<i64, _>("version")?)
    }

    async fn risk_learning(&self) -> Result<RiskLearning> {
        // One transaction: the version and the states of the same commit.
        let mut tx = self.pool.begin().await?;
        let version: i64 = sqlx::query("SELECT version FROM risk_learning_head WHERE id = 1")
            .fetch_one(&mut *tx)
            .await?
            .try_get("version")?;
        let mut state = std::collections::BTreeMap::new();
        for r in sqlx::query("SELECT name, data FROM risk_learning").fetch_all(&mut *tx).await? {
            state.insert(r.try_get::<String, _>("name")?, r.try_get::<Vec<u8>, _>("data")?);
        }
        tx.commit().await?;
        Ok(RiskLearning { version, state })
    }

    async fn commit_risk_learning(
        &self,
        base: i64,
        now_ms: i64,
        profiles: Vec<(String, Vec<u8>)>,
        state: Vec<(String, Vec<u8>)>,
    ) -> Result<i64> {
        let version = base.checked_add(1).ok_or_else(|| StoreError::Refused("version".into()))?;
        // SQLite: behind this process's other writers (one writer at a time).
        let _writer = match self.backend {
            Backend::Sqlite => Some(self.write_lock.clone().lock_owned().await),
            Backend::Postgres => None,
        };
        let mut w = self.pool.begin().await?;
        // The head first: a concurrent commit on PostgreSQL waits here, then finds it moved.
        let moved = sqlx::query(
            "UPDATE risk_learning_head SET version = $1, updated_at_ms = $2 WHERE id = 1 AND version = $3",
        )
        .bind(version)
        .bind(now_ms)
        .bind(base)
        .execute(&mut *w)
        .await?;
        if moved.rows_affected() != 1 {
            return Err(StoreError::Stale { entity: "risk learning".into() });
        }
        for (customer, data) in profiles {
            sqlx::query(
                "INSERT INTO risk_profiles (customer, data, version) VALUES ($1, $2, $3) \
                 ON CONFLICT (customer) DO UPDATE SET data = excluded.data, version = excluded.version",
            )
            .bind(customer)
            .bind(data)
            .bind(version)
            .execute(&mut *w)
            .await?;
        }
        for (name, data) in state {
            sqlx::query(
                "INSERT INTO risk_learning (name, data, version) VALUES ($1, $2, $3) \
                 ON CONFLICT (name) DO UPDATE SET data = excluded.data, version = excluded.version",
            )
            .bind(name)
            .bind(data)
            .bind(version)
            .execute(&mut *w)
            .await?;
        }
        w.commit().await?;
        Ok(version)
    }

    async fn register_risk_model(&self, ctx: &WriteCtx, model: NewRiskModel) -> Result<RiskModel> {
        let job = job(move |w, ctx| {
            let m = model.clone();
            Box::pin(async move { risk_models::stage_register(w, ctx, m).await })
        });
        self.submit(ctx, None, job).await.and_then(from_json)
    }

    async fn set_risk_model_status(
        &self,
        ctx: &WriteCtx,
        version: i64,
        to: ModelStatus,
        note: String,
    ) -> Result<RiskModel> {
        let job = job(move |w, ctx| {
            let n = note.clone();
            Box::pin(async move { risk_models::stage_status(w, ctx, version, to, n).await })
        });
        self.submit(ctx, None, job).await.and_then(from_json)
    }

    async fn risk_models(&self) -> Result<Vec<RiskModel>> {
        self.read_risk_models().await
    }

    async fn risk_model_state(&self, version: i64) -> Result<Option<Vec<u8>>> {
        self.read_risk_model_state(version).await
    }
}
