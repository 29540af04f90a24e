//! Sweeps from deposit addresses to the hot wallet and from hot to cold.

use super::*;

#[async_trait]
impl Sweeps for SqlStore {
    async fn create_sweep(&self, ctx: &WriteCtx, sweep: Sweep) -> Result<Sweep> {
        let job = job(move |w, ctx| {
            let sweep = sweep.clone();
            Box::pin(async move { sweeps::stage_create(w, ctx, sweep).await })
        });
        self.submit(ctx, None, job).await.and_then(from_json)
    }

    async fn get_sweep(&self, id: Uuid) -> Result<Sweep> {
        self.read_sweep(id).await
    }

    async fn list_sweeps(
        &self,
        chain: &strongroom_units::ChainId,
        open: bool,
    ) -> Result<Vec<Sweep>> {
        self.read_sweeps(chain, open).await
    }

    async fn open_refill(&self, ctx: &WriteCtx, refill: Refill) -> Result<Refill> {
        let (chain, asset) =
            (refill.intent.chain.as_str().to_owned(), refill.intent.asset.symbol.to_string());
        if let Some(open) = self.open_refill_of(&chain, &asset).await? {
            return Ok(open);
        }
        let job = job(move |w, ctx| {
            let refill = refill.clone();
            Box::pin(async move { refills::stage_open(w, ctx, refill).await })
        });
        match self.submit(ctx, None, job).await.and_then(from_json) {
            // Another writer opened one first (the partial unique index): that one stands.
            Err(StoreError::Constraint { unique: true, .. }) => self
                .open_refill_of(&chain, &asset)
                .await?
                .ok_or_else(|| StoreError::Stale { entity: "refill".into() }),
            other => other,
        }
    }

    async fn get_refill(&self, id: Uuid) -> Result<Refill> {
        self.read_refill(id).await
    }

    async fn list_refills(
        &self,
        open: bool,
        after: Option<&Keyset>,
        limit: u32,
    ) -> Result<Vec<Refill>> {
        self.read_refills(open, after, limit).await
    }

    async fn update_refill(
        &self,
        ctx: &WriteCtx,
        id: Uuid,
        change: RefillChange,
    ) -> Result<Refill> {
        let job = job(move |w, ctx| {
            let change = change.clone();
            Box::pin(async move { refills::stage_update(w, ctx, id, change).await })
        });
        self.submit(ctx, None, job).await.and_then(from_json)
    }
}
