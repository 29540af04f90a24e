//! Customers, the double-entry ledger and its balances, deposits credited by hand or
//! governance, the treasury account.

use super::*;

#[async_trait]
impl Ledger for SqlStore {
    async fn create_customer(
        &self,
        ctx: &WriteCtx,
        idem: Option<&Idempotency>,
        new: NewCustomer,
    ) -> Result<Customer> {
        let external_id = new.external_id.clone();
        let exists = move || StoreError::CustomerExists(external_id);
        let job = job(move |w, ctx| {
            let new = new.clone();
            Box::pin(async move { stage_customer(w, ctx, new).await })
        });
        let result =
            self.submit(ctx, idem, job).await.map_err(|e| e.on_unique("customers", exists));
        self.settle(result.and_then(from_json), idem).await
    }

    async fn get_customer(&self, id: Uuid) -> Result<Customer> {
        let row = sqlx::query("SELECT id, external_id, created_at_ms FROM customers WHERE id = $1")
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await?
            .ok_or(StoreError::NotFound { entity: "customer", id: id.to_string() })?;
        row_of::<CustomerRow>(&row)?.to_domain()
    }

    async fn customer_by_external_id(&self, external_id: &str) -> Result<Option<Customer>> {
        sqlx::query("SELECT id, external_id, created_at_ms FROM customers WHERE external_id = $1")
            .bind(external_id)
            .fetch_optional(&self.pool)
            .await?
            .map(|row| row_of::<CustomerRow>(&row)?.to_domain())
            .transpose()
    }

    async fn credit_deposit(
        &self,
        ctx: &WriteCtx,
        idem: Option<&Idempotency>,
        new: NewDeposit,
    ) -> Result<Deposit> {
        let (asset, reference) = (new.asset.to_string(), new.reference.clone());
        let credited = move || StoreError::DepositAlreadyCredited { asset, reference };
        let job = job(move |w, ctx| {
            let new = new.clone();
            Box::pin(async move { stage_deposit(w, ctx, new).await })
        });
        let result =
            self.submit(ctx, idem, job).await.map_err(|e| e.on_unique("deposits", credited));
        self.settle(result.and_then(from_json), idem).await
    }

    async fn ensure_treasury(&self, ctx: &WriteCtx) -> Result<Customer> {
        self.ensure_treasury_row(ctx).await
    }

    async fn balances(&self, customer_id: Uuid) -> Result<Vec<Balance>> {
        self.get_customer(customer_id).await?;
        let rows = sqlx::query(
            "SELECT asset, bucket, balance FROM accounts WHERE customer_id = $1 ORDER BY asset",
        )
        .bind(customer_id.to_string())
        .fetch_all(&self.pool)
        .await?;
        let mut out: Vec<Balance> = Vec::new();
        for r in rows {
            let asset = symbol(&r.try_get::<String, _>("asset")?)?;
            let bucket: String = r.try_get("bucket")?;
            let value = amount(&r.try_get::<String, _>("balance")?)?;
            let idx = match out.iter().position(|b| b.asset == asset) {
                Some(i) => i,
                None => {
                    out.push(Balance { asset, available: Amount::ZERO, pending: Amount::ZERO });
                    out.len() - 1
                }
            };
            if let Some(b) = out.get_mut(idx) {
                match bucket.as_str() {
                    "available" => b.available = value,
                    "pending" => b.pending = value,
                    other => {
                        return Err(StoreError::Corrupt(format!(
                            "customer account in bucket {other}"
                        )))
                    }
                }
            }
        }
        Ok(out)
    }

    async fn ledger_lines(
        &self,
        customer_id: Uuid,
        after: Option<&Keyset>,
        limit: u32,
    ) -> Result<Vec<LedgerLine>> {
        self.get_customer(customer_id).await?;
        let rows = sqlx::query(
            "SELECT p.entry_id, p.n, e.kind, e.reference, p.account_key, p.asset, p.side, p.amount, p.balance_after, e.created_at_ms \
             FROM postings p JOIN journal_entries e ON e.id = p.entry_id JOIN accounts a ON a.key = p.account_key \
             WHERE a.customer_id = $1 AND (CAST($2 AS BIGINT) IS NULL OR e.created_at_ms < $2 \
               OR (e.created_at_ms = $2 AND (p.entry_id > $3 OR (p.entry_id = $3 AND p.n > $4)))) \
             ORDER BY e.created_at_ms DESC, p.entry_id, p.n LIMIT $5",
        )
        .bind(customer_id.to_string())
        .bind(after.map(|k| k.at_ms))
        .bind(after.map_or("", |k| k.id.as_str()))
        .bind(after.map_or(0, |k| k.n))
        .bind(i64::from(limit.clamp(1, 1001)))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(LedgerLine {
                    entry_id: uuid(&r.try_get::<String, _>("entry_id")?)?,
                    kind: r.try_get("kind")?,
                    reference: r.try_get("reference")?,
                    account: r.try_get("account_key")?,
                    asset: symbol(&r.try_get::<String, _>("asset")?)?,
                    side: r.try_get("side")?,
                    amount: amount(&r.try_get::<String, _>("amount")?)?,
                    balance_after: amount(&r.try_get::<String, _>("balance_after")?)?,
                    created_at: Timestamp::from_unix_ms(r.try_get("created_at_ms")?),
                    n: r.try_get("n")?,
                })
            })
            .collect()
    }

    async fn holders(
        &self,
        asset: Option<&strongroom_units::AssetSymbol>,
        after: Option<Uuid>,
        limit: u32,
    ) -> Result<Vec<Uuid>> {
        let base = "SELECT DISTINCT customer_id FROM accounts WHERE customer_id IS NOT NULL \
                    AND customer_id <> $1 AND customer_id > $2 AND bucket <> 'custody' \
                    AND balance <> '0'";
        let after = after.map(|a| a.to_string()).unwrap_or_default();
        let treasury = strongroom_core::ledger::TREASURY_CUSTOMER.to_string();
        let rows = match asset {
            Some(a) => {
                sqlx::query(&format!("{base} AND asset = $3 ORDER BY customer_id LIMIT $4"))
                    .bind(treasury)
                    .bind(after)
                    .bind(a.as_str().to_owned())
                    .bind(i64::from(limit))
                    .fetch_all(&self.pool)
                    .await?
            }
            None => {
                sqlx::query(&format!("{base} ORDER BY customer_id LIMIT $3"))
                    .bind(treasury)
                    .bind(after)
                    .bind(i64::from(limit))
                    .fetch_all(&self.pool)
                    .await?
            }
        };
        rows.iter()
            .map(|r| {
                let id: String = r.try_get("customer_id")?;
                Uuid::parse_str(&id).map_err(|e| StoreError::Corrupt(e.to_string()))
            })
            .collect()
    }

    async fn custody_totals(&self) -> Result<Vec<CustodyTotal>> {
        let rows = sqlx::query("SELECT asset, bucket, balance FROM accounts ORDER BY asset")
            .fetch_all(&self.pool)
            .await?;
        let mut out: Vec<CustodyTotal> = Vec::new();
        for r in rows {
            let asset = symbol(&r.try_get::<String, _>("asset")?)?;
            let bucket: String = r.try_get("bucket")?;
            let value = amount(&r.try_get::<String, _>("balance")?)?;
            if out.last().map(|t| &t.asset) != Some(&asset) {
                out.push(CustodyTotal {
                    asset: asset.clone(),
                    custody: Amount::ZERO,
                    customers: Amount::ZERO,
                });
            }
            if let Some(t) = out.last_mut() {
                let overflow = |_| StoreError::Corrupt("balance total overflows".into());
                if bucket == "custody" {
                    t.custody = t.custody.checked_add(value).map_err(overflow)?;
                } else {
                    t.customers = t.customers.checked_add(value).map_err(overflow)?;
                }
            }
        }
        Ok(out)
    }
}
