//! The stored governance log (a copy: the signer nodes keep their own).

use super::*;

#[async_trait]
impl GovernanceStore for SqlStore {
    async fn governance(&self) -> Result<GovernanceRecord> {
        self.read_governance().await
    }

    async fn write_governance(
        &self,
        ctx: &WriteCtx,
        op: GovernanceWrite,
    ) -> Result<GovernanceRecord> {
        let job = job(move |w, ctx| {
            let op = op.clone();
            Box::pin(async move { governance::stage(w, ctx, op).await })
        });
        self.submit(ctx, None, job).await?;
        self.read_governance().await
    }
}
