//! Deposit addresses and the deposit watcher: its cursor, the blocks it saw, transfers found,
//! credited, reversed or orphaned.

use super::*;

#[async_trait]
impl Deposits for SqlStore {
    async fn deposit_address(
        &self,
        ctx: &WriteCtx,
        new: NewDepositAddress,
    ) -> Result<DepositAddress> {
        // Concurrent first requests race for the next index; the loser sees the winner's.
        for _ in 0..5 {
            if let Some(a) =
                self.read_deposit_address(&new.chain, &new.wallet, new.customer_id).await?
            {
                return Ok(a);
            }
            let n = new.clone();
            let job = job(move |w, ctx| {
                let n = n.clone();
                Box::pin(async move { deposits::stage_address(w, ctx, n).await })
            });
            match self.submit(ctx, None, job).await.and_then(from_json) {
                Err(StoreError::Constraint { table, unique: true })
                    if table == "deposit_addresses" =>
                {
                    continue
                }
                other => return other,
            }
        }
        Err(StoreError::Refused("could not allocate a deposit address (contention)".into()))
    }

    async fn deposit_addresses(
        &self,
        chain: &strongroom_units::ChainId,
    ) -> Result<Vec<DepositAddress>> {
        self.read_deposit_addresses(chain).await
    }

    async fn deposit_addresses_from(
        &self,
        chain: &strongroom_units::ChainId,
        wallet: &str,
        from_index: u64,
        limit: u32,
    ) -> Result<Vec<DepositAddress>> {
        self.read_deposit_addresses_from(chain, wallet, from_index, limit).await
    }

    async fn find_deposit_address(
        &self,
        chain: &strongroom_units::ChainId,
        address: &str,
    ) -> Result<Option<DepositAddress>> {
        self.read_deposit_address_by_address(chain, address).await
    }

    async fn chain_cursor(&self, chain: &strongroom_units::ChainId) -> Result<Option<u64>> {
        self.read_cursor(chain).await
    }

    async fn recent_blocks(
        &self,
        chain: &strongroom_units::ChainId,
        limit: u32,
    ) -> Result<Vec<strongroom_chain::BlockRef>> {
        self.read_blocks(chain, limit).await
    }

    async fn record_scan(&self, ctx: &WriteCtx, batch: ScanBatch) -> Result<()> {
        let job = job(move |w, ctx| {
            let batch = batch.clone();
            Box::pin(async move { deposits::stage_scan(w, ctx, batch).await })
        });
        self.submit(ctx, None, job).await.map(|_| ())
    }

    async fn rewind_chain(
        &self,
        ctx: &WriteCtx,
        chain: &strongroom_units::ChainId,
        fork: u64,
    ) -> Result<()> {
        let chain = chain.clone();
        let job = job(move |w, ctx| {
            let chain = chain.clone();
            Box::pin(async move { deposits::stage_rewind(w, ctx, &chain, fork).await })
        });
        self.submit(ctx, None, job).await.map(|_| ())
    }

    async fn chain_deposits(
        &self,
        chain: &strongroom_units::ChainId,
        state: Option<ChainDepositState>,
    ) -> Result<Vec<ChainDeposit>> {
        self.read_chain_deposits(chain, state, false).await
    }

    async fn uncredited_deposits(
        &self,
        chain: &strongroom_units::ChainId,
    ) -> Result<Vec<ChainDeposit>> {
        self.read_chain_deposits(chain, Some(ChainDepositState::Seen), true).await
    }

    async fn credit_chain_deposit(
        &self,
        ctx: &WriteCtx,
        chain: &strongroom_units::ChainId,
        txid: &str,
        log_index: u64,
        ids: [Uuid; 2],
    ) -> Result<ChainDeposit> {
        let (c, t) = (chain.clone(), txid.to_owned());
        let job = job(move |w, ctx| {
            let (c, t) = (c.clone(), t.clone());
            Box::pin(async move { deposits::stage_credit(w, ctx, &c, &t, log_index, ids).await })
        });
        match self.submit(ctx, None, job).await.and_then(from_json) {
            // Credited already (by a concurrent pass): answer with what is stored.
            Err(StoreError::Refused(m)) => {
                match self.read_chain_deposit(chain, txid, log_index).await? {
                    Some(d) if d.deposit_id.is_some() => Ok(d),
                    _ => Err(StoreError::Refused(m)),
                }
            }
            other => other,
        }
    }

    async fn resolve_orphan(
        &self,
        ctx: &WriteCtx,
        chain: &strongroom_units::ChainId,
        txid: &str,
        log_index: u64,
        entry_id: Uuid,
    ) -> Result<ChainDeposit> {
        let (c, t) = (chain.clone(), txid.to_owned());
        let job = job(move |w, ctx| {
            let (c, t) = (c.clone(), t.clone());
            Box::pin(
                async move { deposits::stage_resolve(w, ctx, &c, &t, log_index, entry_id).await },
            )
        });
        self.submit(ctx, None, job).await.and_then(from_json)
    }
}
