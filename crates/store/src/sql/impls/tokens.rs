//! API tokens and their restrictions.

use super::*;

#[async_trait]
impl Tokens for SqlStore {
    async fn create_token(&self, ctx: &WriteCtx, token: NewApiToken) -> Result<ApiTokenRecord> {
        let mut w = self.begin_write().await?;
        let row = TokenRow {
            id: token.id.clone(),
            name: token.name.clone(),
            role: token.role.as_str().into(),
            token_hash: token.token_hash.clone(),
            created_at_ms: ctx.now.unix_ms(),
            revoked_at_ms: None,
            restrictions: token
                .restrictions
                .as_ref()
                .map(serde_json::to_string)
                .transpose()
                .map_err(|e| StoreError::Corrupt(e.to_string()))?,
        };
        w.insert(
            "api_tokens",
            &["id", "name", "role", "token_hash", "created_at_ms", "restrictions"],
            vec![
                Val::Text(row.id.clone()),
                Val::Text(row.name.clone()),
                Val::Text(row.role.clone()),
                Val::Text(row.token_hash.clone()),
                Val::Int(row.created_at_ms),
                Val::OptText(row.restrictions.clone()),
            ],
        )
        .await?;
        let subject = format!("token/{}", row.id);
        w.record(subject.clone(), None, Some(hash_of(&row)?));
        let record = row.to_domain()?;
        let detail = serde_json::json!({ "name": token.name, "role": token.role });
        w.commit(ctx, "token.created", subject, detail, None, &()).await?;
        Ok(record)
    }

    async fn get_token(&self, id: &str) -> Result<ApiTokenRecord> {
        let row = sqlx::query(&format!("{TOKEN_SELECT} WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| StoreError::NotFound {
                entity: "token",
                id: id.chars().take(32).collect(),
            })?;
        row_of::<TokenRow>(&row)?.to_domain()
    }

    async fn revoke_token(&self, ctx: &WriteCtx, id: &str) -> Result<ApiTokenRecord> {
        let mut w = self.begin_write().await?;
        let before = lock_token(&mut w, id).await?;
        let mut after = before.clone();
        after.revoked_at_ms = Some(before.revoked_at_ms.unwrap_or(ctx.now.unix_ms()));
        w.write(
            "UPDATE api_tokens SET revoked_at_ms = $1 WHERE id = $2".into(),
            vec![Val::OptInt(after.revoked_at_ms), Val::Text(id.to_owned())],
        )
        .await?;
        let subject = format!("token/{id}");
        w.record(subject.clone(), Some(hash_of(&before)?), Some(hash_of(&after)?));
        w.commit(ctx, "token.revoked", subject, serde_json::json!({}), None, &()).await?;
        after.to_domain()
    }

    async fn list_tokens(&self) -> Result<Vec<ApiTokenRecord>> {
        sqlx::query(&format!("{TOKEN_SELECT} ORDER BY id"))
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(|r| row_of::<TokenRow>(r)?.to_domain())
            .collect()
    }

    async fn set_token_restrictions(
        &self,
        ctx: &WriteCtx,
        id: &str,
        restrictions: Option<TokenRestrictions>,
    ) -> Result<ApiTokenRecord> {
        let mut w = self.begin_write().await?;
        let before = lock_token(&mut w, id).await?;
        let mut after = before.clone();
        after.restrictions = restrictions
            .as_ref()
            .map(serde_json::to_string)
            .transpose()
            .map_err(|e| StoreError::Corrupt(e.to_string()))?;
        w.write(
            "UPDATE api_tokens SET restrictions = $1 WHERE id = $2".into(),
            vec![Val::OptText(after.restrictions.clone()), Val::Text(id.to_owned())],
        )
        .await?;
        let subject = format!("token/{id}");
        w.record(subject.clone(), Some(hash_of(&before)?), Some(hash_of(&after)?));
        w.commit(ctx, "token.restrictions_set", subject, serde_json::json!({}), None, &()).await?;
        after.to_domain()
    }

    async fn use_nonce(
        &self,
        token_id: &str,
        nonce: &str,
        now_ms: i64,
        expires_at_ms: i64,
    ) -> Result<bool> {
        sqlx::query("DELETE FROM request_nonces WHERE expires_at_ms < $1")
            .bind(now_ms)
            .execute(&self.pool)
            .await?;
        let inserted = sqlx::query(
            "INSERT INTO request_nonces (token_id, nonce, expires_at_ms) VALUES ($1, $2, $3) \
             ON CONFLICT (token_id, nonce) DO NOTHING",
        )
        .bind(token_id)
        .bind(nonce)
        .bind(expires_at_ms)
        .execute(&self.pool)
        .await?;
        Ok(inserted.rows_affected() == 1)
    }
}
