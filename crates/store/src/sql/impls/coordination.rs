//! Leases, shared counters and the outbox (migration 0016). Each call is one statement (or
//! one short transaction) straight on the pool: coordination state does not go through the
//! audited group-commit writer, and each statement is atomic on both backends (an upsert
//! with a condition, or an update whose condition is checked again on the locked row).

use super::*;
use crate::MAX_RATE_WINDOW_MS;

fn lease_of(row: &AnyRow) -> Result<Lease> {
    Ok(Lease {
        name: row.try_get("name")?,
        holder: row.try_get("holder")?,
        token: row.try_get("token")?,
        expires_at_ms: row.try_get("expires_at_ms")?,
    })
}

const OUTBOX_COLUMNS: &str = "id, channel, kind, body, created_at_ms, attempts, next_attempt_ms, delivered_at_ms, last_error, dead_at_ms";

fn message_of(row: &AnyRow) -> Result<OutboxMessage> {
    let body: String = row.try_get("body")?;
    let attempts: i64 = row.try_get("attempts")?;
    Ok(OutboxMessage {
        id: row.try_get("id")?,
        channel: row.try_get("channel")?,
        kind: row.try_get("kind")?,
        body: serde_json::from_str(&body)
            .map_err(|e| StoreError::Corrupt(format!("outbox body: {e}")))?,
        created_at_ms: row.try_get("created_at_ms")?,
        attempts: u32::try_from(attempts).unwrap_or(u32::MAX),
        next_attempt_ms: row.try_get("next_attempt_ms")?,
        delivered_at_ms: row.try_get("delivered_at_ms")?,
        last_error: row.try_get("last_error")?,
        dead_at_ms: row.try_get("dead_at_ms")?,
    })
}

#[async_trait]
impl Coordination for SqlStore {
    async fn acquire_lease(
        &self,
        name: &str,
        holder: &str,
        now_ms: i64,
        ttl_ms: i64,
    ) -> Result<Option<Lease>> {
        let until = now_ms.saturating_add(ttl_ms.max(1));
        let row = sqlx::query(
            "INSERT INTO leases (name, holder, token, expires_at_ms) VALUES ($1, $2, 1, $3) \
             ON CONFLICT (name) DO UPDATE SET \
               token = CASE WHEN leases.holder = excluded.holder THEN leases.token ELSE leases.token + 1 END, \
               holder = excluded.holder, expires_at_ms = excluded.expires_at_ms \
             WHERE leases.holder = excluded.holder OR leases.expires_at_ms <= $4 \
             RETURNING name, holder, token, expires_at_ms",
        )
        .bind(name)
        .bind(holder)
        .bind(until)
        .bind(now_ms)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(lease_of).transpose()
    }

    async fn release_lease(&self, name: &str, holder: &str) -> Result<()> {
        sqlx::query("DELETE FROM leases WHERE name = $1 AND holder = $2")
            .bind(name)
            .bind(holder)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn leases(&self, prefix: &str) -> Result<Vec<Lease>> {
        let rows = sqlx::query(
            "SELECT name, holder, token, expires_at_ms FROM leases \
             WHERE substr(name, 1, length($1)) = $1 ORDER BY name",
        )
        .bind(prefix)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(lease_of).collect()
    }

    async fn count_hit(&self, name: &str, now_ms: i64, window_ms: i64) -> Result<u64> {
        if !(1..=MAX_RATE_WINDOW_MS).contains(&window_ms) {
            return Err(StoreError::Refused(format!(
                "a rate window of {window_ms} ms is outside 1..={MAX_RATE_WINDOW_MS}"
            )));
        }
        sqlx::query("DELETE FROM rate_counters WHERE window_start_ms < $1")
            .bind(now_ms.saturating_sub(MAX_RATE_WINDOW_MS))
            .execute(&self.pool)
            .await?;
        // Every expression in SET reads the row as it was, on both backends.
        let row = sqlx::query(
            "INSERT INTO rate_counters (name, window_start_ms, hits) VALUES ($1, $2, 1) \
             ON CONFLICT (name) DO UPDATE SET \
               hits = CASE WHEN rate_counters.window_start_ms <= $3 THEN 1 ELSE rate_counters.hits + 1 END, \
               window_start_ms = CASE WHEN rate_counters.window_start_ms <= $3 THEN excluded.window_start_ms ELSE rate_counters.window_start_ms END \
             RETURNING hits",
        )
        .bind(name)
        .bind(now_ms)
        .bind(now_ms.saturating_sub(window_ms))
        .fetch_one(&self.pool)
        .await?;
        let hits: i64 = row.try_get("hits")?;
        Ok(u64::try_from(hits).unwrap_or(0))
    }

    async fn hits(&self, name: &str, now_ms: i64, window_ms: i64) -> Result<u64> {
        let row =
            sqlx::query("SELECT hits FROM rate_counters WHERE name = $1 AND window_start_ms > $2")
                .bind(name)
                .bind(now_ms.saturating_sub(window_ms))
                .fetch_optional(&self.pool)
                .await?;
        let hits: i64 = row.map(|r| r.try_get("hits")).transpose()?.unwrap_or(0);
        Ok(u64::try_from(hits).unwrap_or(0))
    }

    async fn enqueue(&self, m: NewOutboxMessage) -> Result<bool> {
        let body =
            serde_json::to_string(&m.body).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let done = sqlx::query(
            "INSERT INTO outbox (id, channel, kind, body, created_at_ms, next_attempt_ms) \
             VALUES ($1, $2, $3, $4, $5, $5) ON CONFLICT (id) DO NOTHING",
        )
        .bind(&m.id)
        .bind(&m.channel)
        .bind(&m.kind)
        .bind(body)
        .bind(m.created_at_ms)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn claim_outbox(
        &self,
        holder: &str,
        now_ms: i64,
        claim_ms: i64,
        limit: u32,
    ) -> Result<Vec<OutboxMessage>> {
        // The outer conditions are checked again on each locked row (PostgreSQL) or under
        // the one writer (SQLite): two instances never both claim a message.
        let rows = sqlx::query(&format!(
            "UPDATE outbox SET claimed_by = $1, claimed_until_ms = $2 \
             WHERE id IN (SELECT id FROM outbox WHERE delivered_at_ms IS NULL \
                          AND dead_at_ms IS NULL \
                          AND next_attempt_ms <= $3 AND claimed_until_ms <= $3 \
                          ORDER BY next_attempt_ms, id LIMIT $4) \
               AND delivered_at_ms IS NULL AND dead_at_ms IS NULL AND claimed_until_ms <= $3 \
             RETURNING {OUTBOX_COLUMNS}"
        ))
        .bind(holder)
        .bind(now_ms.saturating_add(claim_ms.max(1)))
        .bind(now_ms)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        let mut out = rows.iter().map(message_of).collect::<Result<Vec<_>>>()?;
        out.sort_by(|a, b| (a.next_attempt_ms, &a.id).cmp(&(b.next_attempt_ms, &b.id)));
        Ok(out)
    }

    async fn outbox_delivered(&self, id: &str, holder: &str, now_ms: i64) -> Result<()> {
        sqlx::query(
            "UPDATE outbox SET delivered_at_ms = $1, claimed_until_ms = 0, last_error = NULL \
             WHERE id = $2 AND claimed_by = $3 AND delivered_at_ms IS NULL",
        )
        .bind(now_ms)
        .bind(id)
        .bind(holder)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn outbox_failed(
        &self,
        id: &str,
        holder: &str,
        error: &str,
        next_attempt_ms: i64,
    ) -> Result<()> {
        self.record_failure(id, holder, error, "next_attempt_ms", next_attempt_ms).await
    }

    async fn outbox_dead(&self, id: &str, holder: &str, error: &str, now_ms: i64) -> Result<()> {
        self.record_failure(id, holder, error, "dead_at_ms", now_ms).await
    }

    async fn dead_letters(
        &self,
        channel: &str,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<OutboxMessage>> {
        let rows = sqlx::query(&format!(
            "SELECT {OUTBOX_COLUMNS} FROM outbox WHERE channel = $1 AND dead_at_ms IS NOT NULL \
             AND delivered_at_ms IS NULL AND id > $2 ORDER BY id LIMIT $3"
        ))
        .bind(channel)
        .bind(after.unwrap_or(""))
        .bind(i64::from(limit.clamp(1, 1_000)))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(message_of).collect()
    }

    async fn redeliver(&self, id: &str, now_ms: i64) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE outbox SET dead_at_ms = NULL, attempts = 0, next_attempt_ms = $1, \
             claimed_until_ms = 0 WHERE id = $2 AND dead_at_ms IS NOT NULL AND delivered_at_ms IS NULL",
        )
        .bind(now_ms)
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn dead_letter_count(&self) -> Result<u64> {
        let row = sqlx::query(
            "SELECT COUNT(*) AS n FROM outbox WHERE dead_at_ms IS NOT NULL AND delivered_at_ms IS NULL",
        )
        .fetch_one(&self.pool)
        .await?;
        let n: i64 = row.try_get("n")?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    async fn outbox_message(&self, id: &str) -> Result<Option<OutboxMessage>> {
        let row = sqlx::query(&format!("SELECT {OUTBOX_COLUMNS} FROM outbox WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(message_of).transpose()
    }

    async fn outbox_backlog(&self, now_ms: i64) -> Result<(u64, i64)> {
        let row = sqlx::query(
            "SELECT COUNT(*) AS n, MIN(created_at_ms) AS oldest FROM outbox \
             WHERE delivered_at_ms IS NULL AND dead_at_ms IS NULL",
        )
        .fetch_one(&self.pool)
        .await?;
        let n: i64 = row.try_get("n")?;
        let oldest: Option<i64> = row.try_get("oldest")?;
        Ok((u64::try_from(n).unwrap_or(0), oldest.map_or(0, |o| now_ms.saturating_sub(o))))
    }

    async fn put_report(&self, name: &str, body: &serde_json::Value, now_ms: i64) -> Result<()> {
        let body = serde_json::to_string(body).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        sqlx::query(
            "INSERT INTO job_reports (name, body, updated_at_ms) VALUES ($1, $2, $3) \
             ON CONFLICT (name) DO UPDATE SET body = excluded.body, updated_at_ms = excluded.updated_at_ms",
        )
        .bind(name)
        .bind(body)
        .bind(now_ms)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn report(&self, name: &str) -> Result<Option<serde_json::Value>> {
        let row = sqlx::query("SELECT body FROM job_reports WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.pool)
            .await?;
        let Some(row) = row else { return Ok(None) };
        let body: String = row.try_get("body")?;
        serde_json::from_str(&body)
            .map(Some)
            .map_err(|e| StoreError::Corrupt(format!("job report {name}: {e}")))
    }
}

impl SqlStore {
    /// A failed attempt by the message's claimer: counted, its error kept (500 characters at
    /// most), the claim released, and `column` (when it is due again, or when it died) set.
    async fn record_failure(
        &self,
        id: &str,
        holder: &str,
        error: &str,
        column: &'static str,
        at_ms: i64,
    ) -> Result<()> {
        let error: String = error.chars().take(500).collect();
        sqlx::query(&format!(
            "UPDATE outbox SET attempts = attempts + 1, {column} = $1, last_error = $2, \
             claimed_until_ms = 0 WHERE id = $3 AND claimed_by = $4 AND delivered_at_ms IS NULL"
        ))
        .bind(at_ms)
        .bind(error)
        .bind(id)
        .bind(holder)
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}
