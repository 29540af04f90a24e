//! Transactions on chain for withdrawals and sweeps: built (nonce reserved), signed, broadcast,
//! concluded.

use super::*;

#[async_trait]
impl ChainTxs for SqlStore {
    async fn build_tx(&self, ctx: &WriteCtx, build: BuildTx) -> Result<ChainTx> {
        let id = build.owner_id;
        if let Some(tx) = chain::read_chain_tx(&self.pool, self.backend, id).await? {
            return Ok(tx);
        }
        let job = job(move |w, ctx| {
            let build = build.clone();
            Box::pin(async move { chain::stage_build(w, ctx, build).await })
        });
        self.chain_command(ctx, id, job, |_, _| true).await
    }

    async fn record_signed(
        &self,
        ctx: &WriteCtx,
        id: Uuid,
        signed: strongroom_chain::SignedTx,
    ) -> Result<ChainTx> {
        let job = job(move |w, ctx| {
            let signed = signed.clone();
            Box::pin(async move { chain::stage_signed(w, ctx, id, signed).await })
        });
        self.chain_command(ctx, id, job, |tx, _| tx.signed.is_some()).await
    }

    async fn record_broadcast(&self, ctx: &WriteCtx, id: Uuid) -> Result<ChainTx> {
        let job =
            job(move |w, ctx| Box::pin(async move { chain::stage_broadcast(w, ctx, id).await }));
        self.chain_command(ctx, id, job, |_, state| {
            matches!(
                state,
                WithdrawalState::Broadcast | WithdrawalState::Settled | WithdrawalState::Failed
            )
        })
        .await
    }

    async fn conclude_tx(
        &self,
        ctx: &WriteCtx,
        id: Uuid,
        conclusion: Conclusion,
    ) -> Result<ChainTx> {
        let job = job(move |w, ctx| {
            let c = conclusion.clone();
            Box::pin(async move { chain::stage_conclude(w, ctx, id, c).await })
        });
        self.chain_command(ctx, id, job, |_, state| state.is_final()).await
    }

    async fn bump_tx(&self, ctx: &WriteCtx, id: Uuid, unsigned: Vec<u8>) -> Result<Bump> {
        let job = job(move |w, ctx| {
            let unsigned = unsigned.clone();
            Box::pin(async move { bumps::stage_bump(w, ctx, id, unsigned).await })
        });
        self.submit(ctx, None, job).await.and_then(from_json)
    }

    async fn record_bump_signed(
        &self,
        ctx: &WriteCtx,
        id: Uuid,
        version: u32,
        signed: strongroom_chain::SignedTx,
    ) -> Result<Bump> {
        let job = job(move |w, ctx| {
            let signed = signed.clone();
            Box::pin(async move { bumps::stage_bump_signed(w, ctx, id, version, signed).await })
        });
        self.submit(ctx, None, job).await.and_then(from_json)
    }

    async fn bumps(&self, id: Uuid) -> Result<Vec<Bump>> {
        self.read_bumps(id).await
    }

    async fn adopt_bump(&self, ctx: &WriteCtx, id: Uuid, version: u32) -> Result<ChainTx> {
        // Adopted already: nothing to write.
        let bump = self.read_bumps(id).await?.into_iter().find(|b| b.version == version);
        if let (Some(tx), Some(b)) =
            (chain::read_chain_tx(&self.pool, self.backend, id).await?, bump)
        {
            if b.signed.is_some() && tx.signed == b.signed {
                return Ok(tx);
            }
        }
        let job = job(move |w, ctx| {
            Box::pin(async move { bumps::stage_adopt(w, ctx, id, version).await })
        });
        self.submit(ctx, None, job).await.and_then(from_json)
    }

    async fn chain_tx(&self, owner_id: Uuid) -> Result<Option<ChainTx>> {
        chain::read_chain_tx(&self.pool, self.backend, owner_id).await
    }

    async fn reserved_coins(
        &self,
        chain: &strongroom_units::ChainId,
        coins: &[String],
    ) -> Result<std::collections::BTreeMap<String, Uuid>> {
        chain::reserved_coins(&self.pool, chain, coins).await
    }
}
