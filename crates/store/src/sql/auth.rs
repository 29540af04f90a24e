//! Account-security records (migration 0010): written in audited, all-or-nothing batches,
//! each record compare-and-swap on its version.

use super::*;

const COLUMNS: &str = "kind, id, owner, lookup, body, version, updated_at_ms";

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
struct AuthRow {
    kind: String,
    id: String,
    owner: String,
    lookup: Option<String>,
    body: String,
    version: i64,
    updated_at_ms: i64,
}

impl AuthRow {
    fn entity(&self) -> String {
        format!("auth/{}/{}", self.kind, self.id)
    }
    fn record(self) -> Result<AuthRecord> {
        let body = serde_json::from_str(&self.body)
            .map_err(|e| StoreError::Corrupt(format!("auth record {}: {e}", self.entity())))?;
        Ok(AuthRecord {
            kind: self.kind,
            id: self.id,
            owner: self.owner,
            lookup: self.lookup,
            body,
            version: self.version,
            updated_at_ms: self.updated_at_ms,
        })
    }
}

pub(super) async fn stage_write(
    w: &mut WriteTx,
    ctx: &WriteCtx,
    action: String,
    subject: String,
    writes: Vec<AuthWrite>,
) -> Result<Staged> {
    let mut written = Vec::new();
    for wr in writes {
        let sql = format!(
            "SELECT {COLUMNS} FROM auth_records WHERE kind = $1 AND id = $2{}",
            for_update(w.backend)
        );
        let before = sqlx::query(&sql)
            .bind(&wr.kind)
            .bind(&wr.id)
            .fetch_optional(&mut *w.tx)
            .await?
            .map(|r| row_of::<AuthRow>(&r))
            .transpose()?;
        let entity = format!("auth/{}/{}", wr.kind, wr.id);
        match (wr.expect, &before) {
            (Expect::Absent, None) => {}
            (Expect::Version(v), Some(b)) if b.version == v => {}
            _ => return Err(StoreError::Stale { entity }),
        }
        let before_hash = before.as_ref().map(hash_of).transpose()?;
        let Some(body) = wr.body else {
            w.write(
                "DELETE FROM auth_records WHERE kind = $1 AND id = $2".into(),
                vec![Val::Text(wr.kind.clone()), Val::Text(wr.id.clone())],
            )
            .await?;
            w.record(entity, before_hash, None);
            continue;
        };
        let after = AuthRow {
            kind: wr.kind,
            id: wr.id,
            owner: wr.owner,
            lookup: wr.lookup,
            body: serde_json::to_string(&body).map_err(|e| StoreError::Corrupt(e.to_string()))?,
            version: before.as_ref().map_or(1, |b| b.version.saturating_add(1)),
            updated_at_ms: ctx.now.unix_ms(),
        };
        if before.is_some() {
            w.write(
                "UPDATE auth_records SET owner = $1, lookup = $2, body = $3, version = $4, updated_at_ms = $5 WHERE kind = $6 AND id = $7".into(),
                vec![
                    Val::Text(after.owner.clone()),
                    Val::OptText(after.lookup.clone()),
                    Val::Text(after.body.clone()),
                    Val::Int(after.version),
                    Val::Int(after.updated_at_ms),
                    Val::Text(after.kind.clone()),
                    Val::Text(after.id.clone()),
                ],
            )
            .await?;
        } else {
            w.insert(
                "auth_records",
                &["kind", "id", "owner", "lookup", "body", "version", "updated_at_ms"],
                vec![
                    Val::Text(after.kind.clone()),
                    Val::Text(after.id.clone()),
                    Val::Text(after.owner.clone()),
                    Val::OptText(after.lookup.clone()),
                    Val::Text(after.body.clone()),
                    Val::Int(after.version),
                    Val::Int(after.updated_at_ms),
                ],
            )
            .await?;
        }
        w.record(after.entity(), before_hash, Some(hash_of(&after)?));
        written.push(after.record()?);
    }
    let result = serde_json::to_value(&written).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    Ok(Staged { action, subject, detail: serde_json::Value::Null, result })
}

impl SqlStore {
    pub(super) async fn read_auth(&self, kind: &str, id: &str) -> Result<Option<AuthRecord>> {
        sqlx::query(&format!("SELECT {COLUMNS} FROM auth_records WHERE kind = $1 AND id = $2"))
            .bind(kind)
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .map(|r| row_of::<AuthRow>(&r)?.record())
            .transpose()
    }

    pub(super) async fn read_auth_by_lookup(
        &self,
        kind: &str,
        lookup: &str,
    ) -> Result<Option<AuthRecord>> {
        sqlx::query(&format!("SELECT {COLUMNS} FROM auth_records WHERE kind = $1 AND lookup = $2"))
            .bind(kind)
            .bind(lookup)
            .fetch_optional(&self.pool)
            .await?
            .map(|r| row_of::<AuthRow>(&r)?.record())
            .transpose()
    }

    pub(super) async fn read_auth_owned(&self, kind: &str, owner: &str) -> Result<Vec<AuthRecord>> {
        sqlx::query(&format!(
            "SELECT {COLUMNS} FROM auth_records WHERE kind = $1 AND owner = $2 ORDER BY id"
        ))
        .bind(kind)
        .bind(owner)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(|r| row_of::<AuthRow>(r)?.record())
        .collect()
    }

    pub(super) async fn read_auth_kind(&self, kind: &str) -> Result<Vec<AuthRecord>> {
        sqlx::query(&format!("SELECT {COLUMNS} FROM auth_records WHERE kind = $1 ORDER BY id"))
            .bind(kind)
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(|r| row_of::<AuthRow>(r)?.record())
            .collect()
    }

    pub(super) async fn auth_entity_states(&self, out: &mut Vec<(String, Digest32)>) -> Result<()> {
        for r in sqlx::query(&format!("SELECT {COLUMNS} FROM auth_records"))
            .fetch_all(&self.pool)
            .await?
        {
            let row = row_of::<AuthRow>(&r)?;
            out.push((row.entity(), hash_of(&row)?));
        }
        Ok(())
    }
}
