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
}
