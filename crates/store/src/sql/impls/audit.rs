//! The backend, health, and the audit log as `verify_audit` reads it.

use super::*;

#[async_trait]
impl AuditStore for SqlStore {
    fn backend(&self) -> Backend {
        self.backend
    }

    async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").fetch_one(&self.pool).await?;
        Ok(())
    }

    async fn audit_page(&self, after: u64, limit: u32) -> Result<Vec<StoredAuditRecord>> {
        // Beyond any record: an empty page.
        let after = i64::try_from(after).unwrap_or(i64::MAX);
        let rows = sqlx::query("SELECT seq, at_ms, actor, action, subject, changes, detail, prev_hash, leaf_hash FROM audit_log WHERE seq > $1 ORDER BY seq LIMIT $2")
            .bind(after)
            .bind(i64::from(limit.clamp(1, 10_000)))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(stored_record).collect()
    }

    async fn audit_head(&self) -> Result<u64> {
        let head: Option<i64> = sqlx::query("SELECT MAX(seq) AS head FROM audit_log")
            .fetch_one(&self.pool)
            .await?
            .try_get("head")?;
        u64::try_from(head.unwrap_or(0)).map_err(|_| StoreError::Corrupt("audit seq".into()))
    }

    async fn audit_matching(
        &self,
        after: u64,
        prefixes: &[&str],
        limit: u32,
        scan: u32,
    ) -> Result<(Vec<StoredAuditRecord>, u64)> {
        let first = i64::try_from(after).unwrap_or(i64::MAX);
        let head: Option<i64> = sqlx::query("SELECT MAX(seq) AS head FROM audit_log")
            .fetch_one(&self.pool)
            .await?
            .try_get("head")?;
        // Sequence numbers have no gaps: the window is the next `scan` records.
        let last = head.unwrap_or(0).min(first.saturating_add(i64::from(scan.max(1))));
        if last <= first || prefixes.is_empty() {
            return Ok((Vec::new(), after));
        }
        // `substr` rather than LIKE: an action's `_` is not a wildcard.
        let mut n = 3;
        let mut matches = Vec::new();
        for p in prefixes {
            matches.push(format!("substr(action, 1, {}) = ${n}", p.len()));
            n += 1;
        }
        let sql = format!(
            "SELECT seq, at_ms, actor, action, subject, changes, detail, prev_hash, leaf_hash FROM audit_log \
             WHERE seq > $1 AND seq <= $2 AND ({}) ORDER BY seq LIMIT ${n}",
            matches.join(" OR ")
        );
        let mut q = sqlx::query(&sql).bind(first).bind(last);
        for p in prefixes {
            q = q.bind(*p);
        }
        let rows = q.bind(i64::from(limit.clamp(1, 10_000))).fetch_all(&self.pool).await?;
        let records = rows.iter().map(stored_record).collect::<Result<Vec<_>>>()?;
        // A full page ends at its last record; otherwise the whole window was looked at.
        let cursor = match records.last() {
            Some(r) if records.len() >= limit.clamp(1, 10_000) as usize => r.record.seq,
            _ => u64::try_from(last).map_err(|_| StoreError::Corrupt("seq".into()))?,
        };
        Ok((records, cursor))
    }

    async fn entity_states(&self) -> Result<Vec<(String, Digest32)>> {
        let mut out = Vec::new();
        for r in sqlx::query("SELECT id, external_id, created_at_ms FROM customers")
            .fetch_all(&self.pool)
            .await?
        {
            let row = row_of::<CustomerRow>(&r)?;
            out.push((format!("customer/{}", row.id), hash_of(&row)?));
        }
        for r in sqlx::query(
            "SELECT key, customer_id, asset, bucket, balance, version, updated_at_ms FROM accounts",
        )
        .fetch_all(&self.pool)
        .await?
        {
            let row = row_of::<AccountRow>(&r)?;
            out.push((format!("account/{}", row.key), row.hash()?));
        }
        for r in sqlx::query(&format!("SELECT {WITHDRAWAL_COLUMNS} FROM withdrawals"))
            .fetch_all(&self.pool)
            .await?
        {
            let row = row_of::<WithdrawalRow>(&r)?;
            out.push((format!("withdrawal/{}", row.id), hash_of(&row)?));
        }
        for r in sqlx::query("SELECT id, customer_id, asset, amount, reference, entry_id, created_at_ms FROM deposits").fetch_all(&self.pool).await? {
            let row = row_of::<DepositRow>(&r)?;
            out.push((format!("deposit/{}", row.id), hash_of(&row)?));
        }
        for r in sqlx::query(TOKEN_SELECT).fetch_all(&self.pool).await? {
            let row = row_of::<TokenRow>(&r)?;
            out.push((format!("token/{}", row.id), hash_of(&row)?));
        }
        let entries = sqlx::query(
            "SELECT id, kind, reference, created_at_ms FROM journal_entries ORDER BY id",
        )
        .fetch_all(&self.pool)
        .await?;
        let postings = sqlx::query("SELECT entry_id, n, account_key, asset, side, amount, balance_after FROM postings ORDER BY entry_id, n").fetch_all(&self.pool).await?;
        let mut postings = postings.iter().peekable();
        for r in entries {
            let id: String = r.try_get("id")?;
            let mut row = EntryRow {
                id: id.clone(),
                kind: r.try_get("kind")?,
                reference: r.try_get("reference")?,
                created_at_ms: r.try_get("created_at_ms")?,
                postings: Vec::new(),
            };
            while let Some(p) = postings.peek() {
                let entry_id: String = p.try_get("entry_id")?;
                if entry_id < id {
                    // A posting whose entry does not exist: report it as its own entity.
                    out.push((format!("posting/{entry_id}"), Digest32::ZERO));
                    postings.next();
                    continue;
                }
                if entry_id != id {
                    break;
                }
                row.postings.push(PostingRow {
                    n: p.try_get("n")?,
                    account_key: p.try_get("account_key")?,
                    asset: p.try_get("asset")?,
                    side: p.try_get("side")?,
                    amount: p.try_get("amount")?,
                    balance_after: p.try_get("balance_after")?,
                });
                postings.next();
            }
            out.push((format!("entry/{}", row.id), row.hash()?));
        }
        for p in postings {
            let entry_id: String = p.try_get("entry_id")?;
            out.push((format!("posting/{entry_id}"), Digest32::ZERO));
        }
        self.chain_entity_states(&mut out).await?;
        self.bump_entity_states(&mut out).await?;
        self.deposit_entity_states(&mut out).await?;
        self.sweep_entity_states(&mut out).await?;
        self.refill_entity_states(&mut out).await?;
        self.approval_entity_states(&mut out).await?;
        self.refusal_entity_states(&mut out).await?;
        self.denial_entity_states(&mut out).await?;
        self.initiation_entity_states(&mut out).await?;
        self.governance_entity_states(&mut out).await?;
        self.risk_entity_states(&mut out).await?;
        self.risk_model_entity_states(&mut out).await?;
        self.contact_entity_states(&mut out).await?;
        self.auth_entity_states(&mut out).await?;
        Ok(out)
    }
}

fn stored_record(r: &AnyRow) -> Result<StoredAuditRecord> {
    let seq: i64 = r.try_get("seq")?;
    let changes: String = r.try_get("changes")?;
    Ok(StoredAuditRecord {
        record: AuditRecord {
            seq: u64::try_from(seq).map_err(|_| StoreError::Corrupt(format!("audit seq {seq}")))?,
            at_ms: r.try_get("at_ms")?,
            actor: r.try_get("actor")?,
            action: r.try_get("action")?,
            subject: r.try_get("subject")?,
            changes: serde_json::from_str(&changes)
                .map_err(|e| StoreError::Corrupt(format!("audit record {seq} changes: {e}")))?,
            detail: r.try_get("detail")?,
            prev_hash: digest(&r.try_get::<String, _>("prev_hash")?)?,
        },
        leaf_hash: digest(&r.try_get::<String, _>("leaf_hash")?)?,
    })
}
