//! The SQL backends. One implementation over sqlx's `Any` driver; what differs between
//! SQLite and PostgreSQL (migrations, connection settings, how a writer takes the lock) is
//! decided by [`Backend`]. See `docs/adr/0001-storage.md`.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{Any, AnyPool, Executor, Row, Transaction};
use strongroom_audit::{state_hash, AuditRecord, Change, Digest32};
use strongroom_core::intent::Intent;
use strongroom_core::ledger::{apply_posting, AccountRef, Bucket, JournalEntry};
use strongroom_core::withdrawal::{PlannedWithdrawal, Withdrawal, WithdrawalState};
use strongroom_core::Timestamp;
use strongroom_units::{Amount, AssetSymbol};
use tokio::sync::{mpsc, oneshot, Mutex, OwnedMutexGuard};
use uuid::Uuid;

use crate::prelude::*;
use crate::types::*;
use crate::{Faults, Result, StoreError};

mod approvals;
mod auth;
mod bumps;
mod chain;
mod denials;
mod deposits;
mod governance;
mod impls;
mod initiations;
mod refills;
mod refusals;
mod risk;
mod risk_models;
mod sweeps;

/// Which database a store talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// `url` with its database name replaced by `database` (query string kept). Tests and the
/// benchmark use it to make throwaway databases on one PostgreSQL server.
pub fn with_database(url: &str, database: &str) -> String {
    let (head, query) = match url.split_once('?') {
        Some((h, q)) => (h, format!("?{q}")),
        None => (url, String::new()),
    };
    let authority_start = head.find("://").map_or(0, |i| i + 3);
    let base = match head.get(authority_start..).and_then(|rest| rest.find('/')) {
        Some(i) => head.get(..authority_start + i).unwrap_or(head),
        None => head,
    };
    format!("{base}/{database}{query}")
}

impl Backend {
    pub fn from_url(url: &str) -> Result<Backend> {
        if url.starts_with("sqlite:") {
            Ok(Backend::Sqlite)
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Ok(Backend::Postgres)
        } else {
            Err(StoreError::UnsupportedUrl(url.chars().take(32).collect()))
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }
}

/// The store over a SQL database.
#[derive(Debug, Clone)]
pub struct SqlStore {
    pool: AnyPool,
    backend: Backend,
    /// SQLite has one writer at a time; queueing writers here, rather than in SQLite's busy
    /// handler, keeps latency fair and avoids lock-upgrade failures.
    write_lock: Arc<Mutex<()>>,
    /// PostgreSQL writers queue here, in this process, for the audit head, rather than as
    /// many backends waiting on one row lock (which collapses throughput on a small
    /// machine). The row lock still orders writers across processes.
    commit_lock: Arc<Mutex<()>>,
    faults: Arc<Faults>,
    /// The group-commit writer; `None` only inside the writer task itself.
    batcher: Option<mpsc::Sender<Pending>>,
}

/// Most commands one group commit carries.
pub const MAX_BATCH: usize = 64;

/// Settings for [`SqlStore::connect`].
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    pub max_connections: u32,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        ConnectOptions { max_connections: 16 }
    }
}

impl SqlStore {
    /// Connect to `url` (`sqlite://PATH?mode=rwc` or `postgres://…`). Does not migrate.
    pub async fn connect(url: &str, options: ConnectOptions) -> Result<SqlStore> {
        sqlx::any::install_default_drivers();
        let backend = Backend::from_url(url)?;
        let mut pool = AnyPoolOptions::new().max_connections(options.max_connections.max(1));
        if backend == Backend::Sqlite {
            pool = pool.after_connect(|conn, _meta| {
                Box::pin(async move {
                    // WAL lets readers run beside the writer; FULL sync because a custody
                    // ledger must not lose a committed write on power loss.
                    conn.execute("PRAGMA journal_mode = WAL").await?;
                    conn.execute("PRAGMA synchronous = FULL").await?;
                    conn.execute("PRAGMA foreign_keys = ON").await?;
                    conn.execute("PRAGMA busy_timeout = 10000").await?;
                    Ok(())
                })
            });
        }
        let pool = pool.connect(url).await?;
        Ok(SqlStore {
            pool,
            backend,
            write_lock: Arc::new(Mutex::new(())),
            commit_lock: Arc::new(Mutex::new(())),
            faults: Arc::new(Faults::default()),
            batcher: None,
        }
        .with_batcher())
    }

    /// Apply pending migrations for this backend.
    pub async fn migrate(&self) -> Result<()> {
        match self.backend {
            Backend::Sqlite => sqlx::migrate!("./migrations/sqlite").run(&self.pool).await?,
            Backend::Postgres => sqlx::migrate!("./migrations/postgres").run(&self.pool).await?,
        }
        Ok(())
    }

    /// The fault injector (tests only arm it).
    pub fn faults(&self) -> &Faults {
        &self.faults
    }

    /// The underlying pool, for tests that play an attacker editing rows by hand.
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// Start a write. On SQLite this takes the database's write lock at once (one writer at
    /// a time, queued in-process); on PostgreSQL writers run concurrently, locking the rows
    /// they touch, and meet only at the audit head when they commit.
    async fn begin_write(&self) -> Result<WriteTx> {
        let guard = match self.backend {
            Backend::Sqlite => Some(self.write_lock.clone().lock_owned().await),
            Backend::Postgres => None,
        };
        let mut tx = self.pool.begin().await?;
        if self.backend == Backend::Sqlite {
            // A no-op write takes SQLite's write lock now (like BEGIN IMMEDIATE), so every
            // read in this transaction sees the latest committed state.
            sqlx::query("UPDATE audit_head SET id = id WHERE id = 1").execute(&mut *tx).await?;
        }
        Ok(WriteTx {
            tx,
            _guard: guard,
            backend: self.backend,
            commit_lock: self.commit_lock.clone(),
            changes: Vec::new(),
            queued: Vec::new(),
            faults: self.faults.clone(),
        })
    }

    /// The stored result for an idempotency key that another request has completed.
    async fn completed<T: DeserializeOwned>(&self, idem: &Idempotency) -> Result<Option<T>> {
        let row = sqlx::query(
            "SELECT request_hash, response FROM idempotency_keys WHERE principal = $1 AND key = $2",
        )
        .bind(&idem.principal)
        .bind(&idem.key)
        .fetch_optional(&self.pool)
        .await?;
        decode_idempotent(row, idem)
    }

    /// When a keyed write fails, the key may have been completed meanwhile by a concurrent
    /// request with the same key (that is why this one lost a race): answer as a retry would.
    async fn settle<T: DeserializeOwned>(
        &self,
        result: Result<T>,
        idem: Option<&Idempotency>,
    ) -> Result<T> {
        match (result, idem) {
            (Err(e), Some(idem)) if !matches!(e, StoreError::InjectedFault(_)) => {
                match self.completed(idem).await? {
                    Some(done) => Ok(done),
                    None => Err(match e {
                        StoreError::IdempotencyRace => {
                            StoreError::Corrupt("idempotency race without a winner".into())
                        }
                        other => other,
                    }),
                }
            }
            (result, _) => result,
        }
    }
}

/// Every column of an API token row.
const TOKEN_SELECT: &str =
    "SELECT id, name, role, token_hash, created_at_ms, revoked_at_ms, restrictions FROM api_tokens";

/// The token `id`, locked for this write.
async fn lock_token(w: &mut WriteTx, id: &str) -> Result<TokenRow> {
    let row = sqlx::query(&format!("{TOKEN_SELECT} WHERE id = $1{}", for_update(w.backend)))
        .bind(id)
        .fetch_optional(&mut *w.tx)
        .await?
        .ok_or_else(|| StoreError::NotFound {
            entity: "token",
            id: id.chars().take(32).collect(),
        })?;
    row_of::<TokenRow>(&row)
}

fn for_update(backend: Backend) -> &'static str {
    match backend {
        Backend::Postgres => " FOR UPDATE",
        // SQLite writers already hold the database write lock.
        Backend::Sqlite => "",
    }
}

fn decode_idempotent<T: DeserializeOwned>(
    row: Option<AnyRow>,
    idem: &Idempotency,
) -> Result<Option<T>> {
    let Some(row) = row else { return Ok(None) };
    let hash: String = row.try_get("request_hash")?;
    if hash != idem.request_hash {
        return Err(StoreError::IdempotencyConflict);
    }
    let response: String = row.try_get("response")?;
    serde_json::from_str(&response)
        .map(Some)
        .map_err(|e| StoreError::Corrupt(format!("idempotency response: {e}")))
}

/// One write in progress: a transaction, the entity changes it made, and at the end the
/// idempotency row and one audit record, committed together.
struct WriteTx {
    tx: Transaction<'static, Any>,
    _guard: Option<OwnedMutexGuard<()>>,
    backend: Backend,
    commit_lock: Arc<Mutex<()>>,
    changes: Vec<Change>,
    /// PostgreSQL: entity writes waiting to go out as one statement at commit.
    queued: Vec<(String, Vec<Val>)>,
    faults: Arc<Faults>,
}

/// A value bound to a queued statement.
#[derive(Debug, Clone)]
enum Val {
    Text(String),
    Int(i64),
    OptInt(Option<i64>),
    OptText(Option<String>),
}

fn bind_all<'q>(
    mut q: sqlx::query::Query<'q, Any, sqlx::any::AnyArguments<'q>>,
    vals: &'q [Val],
) -> sqlx::query::Query<'q, Any, sqlx::any::AnyArguments<'q>> {
    for v in vals {
        q = match v {
            Val::Text(t) => q.bind(t.as_str()),
            Val::Int(i) => q.bind(*i),
            Val::OptInt(i) => q.bind(*i),
            Val::OptText(t) => q.bind(t.as_deref()),
        };
    }
    q
}

/// `$n` becomes `$(n + offset)`, to join statements numbered from 1 into one.
fn renumber(sql: &str, offset: usize) -> String {
    let mut out = String::with_capacity(sql.len() + 16);
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '$' {
            out.push(c);
            continue;
        }
        let mut digits = String::new();
        while let Some(d) = chars.peek().filter(|d| d.is_ascii_digit()) {
            digits.push(*d);
            chars.next();
        }
        match digits.parse::<usize>() {
            Ok(n) => out.push_str(&format!("${}", n + offset)),
            Err(_) => {
                out.push('$');
                out.push_str(&digits);
            }
        }
    }
    out
}

/// Turn a constraint violation into `StoreError::Constraint` naming its table, so a
/// command can say what it means ("customer exists") wherever the statement ran.
fn constraint_error(e: sqlx::Error) -> StoreError {
    if let sqlx::Error::Database(db) = &e {
        let unique = db.is_unique_violation();
        if unique || db.is_foreign_key_violation() {
            // PostgreSQL names the table; SQLite says "UNIQUE constraint failed: table.col".
            let table = db.table().map(str::to_owned).or_else(|| {
                db.message()
                    .split_once("failed: ")
                    .and_then(|(_, rest)| rest.split('.').next())
                    .map(str::to_owned)
            });
            return StoreError::Constraint { table: table.unwrap_or_default(), unique };
        }
    }
    e.into()
}

impl WriteTx {
    /// A statement that changes entities. SQLite runs it now; PostgreSQL queues it and
    /// sends every queued statement as one (data-modifying CTEs) at commit, which saves a
    /// round trip per statement while the transaction holds its row locks.
    async fn write(&mut self, sql: String, vals: Vec<Val>) -> Result<()> {
        match self.backend {
            Backend::Sqlite => {
                bind_all(sqlx::query(&sql), &vals)
                    .execute(&mut *self.tx)
                    .await
                    .map_err(constraint_error)?;
            }
            Backend::Postgres => self.queued.push((sql, vals)),
        }
        Ok(())
    }

    /// `INSERT INTO table (columns) VALUES ($1, …)`, with one value per column.
    async fn insert(&mut self, table: &str, columns: &[&str], vals: Vec<Val>) -> Result<()> {
        if columns.len() != vals.len() {
            return Err(StoreError::Corrupt(format!(
                "insert into {table}: {} columns, {} values",
                columns.len(),
                vals.len()
            )));
        }
        let params: Vec<String> = (1..=vals.len()).map(|i| format!("${i}")).collect();
        let sql =
            format!("INSERT INTO {table} ({}) VALUES ({})", columns.join(", "), params.join(", "));
        self.write(sql, vals).await
    }

    async fn flush(&mut self) -> Result<()> {
        let queued = std::mem::take(&mut self.queued);
        let last = queued.len().saturating_sub(1);
        let mut sql = String::new();
        let mut vals: Vec<Val> = Vec::new();
        for (i, (stmt, v)) in queued.into_iter().enumerate() {
            let stmt = renumber(&stmt, vals.len());
            if i < last {
                sql.push_str(if i == 0 { "WITH " } else { ", " });
                sql.push_str(&format!("w{i} AS ({stmt} RETURNING 1)"));
            } else {
                if i > 0 {
                    sql.push(' ');
                }
                sql.push_str(&stmt);
            }
            vals.extend(v);
        }
        if !sql.is_empty() {
            bind_all(sqlx::query(&sql), &vals)
                .execute(&mut *self.tx)
                .await
                .map_err(constraint_error)?;
        }
        Ok(())
    }

    fn fault(&self, point: &'static str) -> Result<()> {
        self.faults.check(point)
    }

    fn record(&mut self, entity: String, before: Option<Digest32>, after: Option<Digest32>) {
        self.changes.push(change(entity, before, after));
    }

    /// Lock the entry's accounts in key order (so two writers touching the same accounts
    /// cannot deadlock), creating missing ones first as empty version-0 rows that mean
    /// "did not exist". An account for an unknown customer fails its foreign key.
    async fn lock_accounts(
        &mut self,
        entry: &JournalEntry,
        now: Timestamp,
    ) -> Result<BTreeMap<String, AccountRow>> {
        let mut wanted: BTreeMap<String, &AccountRef> = BTreeMap::new();
        for p in entry.postings() {
            wanted.insert(p.account.key(), &p.account);
        }
        let mut locked = self.select_accounts(wanted.keys()).await?;
        let missing: Vec<(&String, &&AccountRef)> =
            wanted.iter().filter(|(k, _)| !locked.contains_key(*k)).collect();
        if !missing.is_empty() {
            for (key, account) in &missing {
                let inserted = sqlx::query("INSERT INTO accounts (key, customer_id, asset, bucket, balance, version, updated_at_ms) VALUES ($1, $2, $3, $4, '0', 0, $5) ON CONFLICT (key) DO NOTHING")
                    .bind(*key)
                    .bind(customer_of(account))
                    .bind(account.asset().to_string())
                    .bind(bucket_name(account))
                    .bind(now.unix_ms())
                    .execute(&mut *self.tx)
                    .await;
                match (inserted, customer_of(account)) {
                    (Err(e), Some(customer)) if is_foreign_key_violation(&e) => {
                        return Err(StoreError::NotFound { entity: "customer", id: customer })
                    }
                    (other, _) => {
                        other?;
                    }
                }
            }
            locked.extend(self.select_accounts(missing.iter().map(|(k, _)| *k)).await?);
        }
        Ok(locked)
    }

    async fn select_accounts<'k>(
        &mut self,
        keys: impl Iterator<Item = &'k String>,
    ) -> Result<BTreeMap<String, AccountRow>> {
        let keys: Vec<&String> = keys.collect();
        let params: Vec<String> = (1..=keys.len()).map(|i| format!("${i}")).collect();
        let sql = format!(
            "SELECT key, customer_id, asset, bucket, balance, version, updated_at_ms FROM accounts WHERE key IN ({}) ORDER BY key{}",
            params.join(", "),
            for_update(self.backend)
        );
        let mut q = sqlx::query(&sql);
        for key in keys {
            q = q.bind(key);
        }
        let rows = q.fetch_all(&mut *self.tx).await?;
        rows.iter().map(|r| row_of::<AccountRow>(r).map(|a| (a.key.clone(), a))).collect()
    }

    /// Apply a journal entry: update each account (refusing negative balances), store the
    /// entry and its postings, and note every change for the audit record.
    async fn apply_entry(
        &mut self,
        entry: &JournalEntry,
        reference: &str,
        now: Timestamp,
    ) -> Result<()> {
        let mut accounts = self.lock_accounts(entry, now).await?;
        let mut before_hashes: BTreeMap<String, Option<Digest32>> = BTreeMap::new();
        let mut postings = Vec::with_capacity(entry.postings().len());
        for (n, p) in entry.postings().iter().enumerate() {
            let key = p.account.key();
            let account = accounts
                .get_mut(&key)
                .ok_or_else(|| StoreError::Corrupt(format!("account {key} vanished")))?;
            if !before_hashes.contains_key(&key) {
                // Version 0 is the empty row made by lock_accounts: "did not exist".
                let before = if account.version == 0 { None } else { Some(account.hash()?) };
                before_hashes.insert(key.clone(), before);
            }
            let after_balance = apply_posting(account.balance()?, p)?;
            account.balance = after_balance.to_string();
            account.version += 1;
            account.updated_at_ms = now.unix_ms();
            postings.push(PostingRow {
                n: i64::try_from(n).map_err(|_| StoreError::Corrupt("posting index".into()))?,
                account_key: key,
                asset: p.account.asset().to_string(),
                side: p.side.as_str().into(),
                amount: p.amount.to_string(),
                balance_after: after_balance.to_string(),
            });
        }
        // One statement updates every account of the entry.
        let changed: Vec<&AccountRow> =
            before_hashes.keys().filter_map(|k| accounts.get(k)).collect();
        let mut sql = String::from("UPDATE accounts SET ");
        // Parameters per account: key, balance, version, updated_at_ms (4 each).
        for (column, cast, offset) in
            [("balance", "TEXT", 2), ("version", "BIGINT", 3), ("updated_at_ms", "BIGINT", 4)]
        {
            sql.push_str(&format!("{column} = CASE key"));
            for i in 0..changed.len() {
                sql.push_str(&format!(
                    " WHEN ${} THEN CAST(${} AS {cast})",
                    i * 4 + 1,
                    i * 4 + offset
                ));
            }
            sql.push_str(" END, ");
        }
        sql.truncate(sql.len() - 2);
        let keys: Vec<String> = (0..changed.len()).map(|i| format!("${}", i * 4 + 1)).collect();
        sql.push_str(&format!(" WHERE key IN ({})", keys.join(", ")));
        let mut vals = Vec::with_capacity(changed.len() * 4);
        for a in &changed {
            vals.extend([
                Val::Text(a.key.clone()),
                Val::Text(a.balance.clone()),
                Val::Int(a.version),
                Val::Int(a.updated_at_ms),
            ]);
        }
        self.write(sql, vals).await?;
        for (key, before) in before_hashes {
            if let Some(after) = accounts.get(&key) {
                self.record(format!("account/{key}"), before, Some(after.hash()?));
            }
        }
        let row = EntryRow {
            id: entry.id().to_string(),
            kind: entry.kind().as_str().into(),
            reference: reference.into(),
            created_at_ms: now.unix_ms(),
            postings,
        };
        self.insert(
            "journal_entries",
            &["id", "kind", "reference", "created_at_ms"],
            vec![
                Val::Text(row.id.clone()),
                Val::Text(row.kind.clone()),
                Val::Text(row.reference.clone()),
                Val::Int(row.created_at_ms),
            ],
        )
        .await?;
        let values: Vec<String> = (0..row.postings.len())
            .map(|i| {
                let b = i * 7;
                format!(
                    "(${}, ${}, ${}, ${}, ${}, ${}, ${})",
                    b + 1,
                    b + 2,
                    b + 3,
                    b + 4,
                    b + 5,
                    b + 6,
                    b + 7
                )
            })
            .collect();
        let sql = format!("INSERT INTO postings (entry_id, n, account_key, asset, side, amount, balance_after) VALUES {}", values.join(", "));
        let mut vals = Vec::with_capacity(row.postings.len() * 7);
        for p in &row.postings {
            vals.extend([
                Val::Text(row.id.clone()),
                Val::Int(p.n),
                Val::Text(p.account_key.clone()),
                Val::Text(p.asset.clone()),
                Val::Text(p.side.clone()),
                Val::Text(p.amount.clone()),
                Val::Text(p.balance_after.clone()),
            ]);
        }
        self.write(sql, vals).await?;
        self.record(format!("entry/{}", row.id), None, Some(row.hash()?));
        Ok(())
    }

    /// Finish one command inside this transaction: record its idempotency key and response,
    /// send its queued statements, and hand back its audit record, still unchained.
    async fn finish_job(
        &mut self,
        ctx: &WriteCtx,
        idem: Option<&Idempotency>,
        staged: Staged,
    ) -> Result<Draft> {
        let mut detail = staged.detail;
        if let (Some(rid), Some(obj)) = (&ctx.request_id, detail.as_object_mut()) {
            obj.insert("request_id".into(), serde_json::Value::String(rid.clone()));
        }
        if let Some(idem) = idem {
            self.insert(
                "idempotency_keys",
                &["principal", "key", "request_hash", "response", "created_at_ms"],
                vec![
                    Val::Text(idem.principal.clone()),
                    Val::Text(idem.key.clone()),
                    Val::Text(idem.request_hash.clone()),
                    Val::Text(staged.result.to_string()),
                    Val::Int(ctx.now.unix_ms()),
                ],
            )
            .await
            .map_err(|e| e.on_unique("idempotency_keys", || StoreError::IdempotencyRace))?;
        }
        self.flush()
            .await
            .map_err(|e| e.on_unique("idempotency_keys", || StoreError::IdempotencyRace))?;
        Ok(Draft {
            at_ms: ctx.now.unix_ms(),
            actor: ctx.actor.clone(),
            action: staged.action,
            subject: staged.subject,
            changes: std::mem::take(&mut self.changes),
            detail: detail.to_string(),
        })
    }

    /// Chain the drafts onto the audit head, append them, and commit.
    async fn append_and_commit(mut self, drafts: Vec<Draft>) -> Result<()> {
        // The serialised part: take the audit head, append (the head follows), commit.
        let _commit_turn = match self.backend {
            Backend::Postgres => Some(self.commit_lock.clone().lock_owned().await),
            Backend::Sqlite => None,
        };
        let head_sql = format!(
            "SELECT seq, leaf_hash FROM audit_head WHERE id = 1{}",
            for_update(self.backend)
        );
        let head = sqlx::query(&head_sql).fetch_one(&mut *self.tx).await?;
        let mut seq: i64 = head.try_get("seq")?;
        let mut prev = digest(&head.try_get::<String, _>("leaf_hash")?)?;
        let mut vals = Vec::with_capacity(drafts.len() * 9);
        let mut rows = Vec::with_capacity(drafts.len());
        for d in drafts {
            seq += 1;
            let record = AuditRecord {
                seq: u64::try_from(seq).map_err(|_| StoreError::Corrupt("audit seq".into()))?,
                at_ms: d.at_ms,
                actor: d.actor,
                action: d.action,
                subject: d.subject,
                changes: d.changes,
                detail: d.detail,
                prev_hash: prev,
            };
            let leaf = record.leaf_hash().map_err(|e| StoreError::Corrupt(e.to_string()))?;
            let changes = serde_json::to_string(&record.changes)
                .map_err(|e| StoreError::Corrupt(e.to_string()))?;
            let b = rows.len() * 9;
            rows.push(format!(
                "(${}, ${}, ${}, ${}, ${}, ${}, ${}, ${}, ${})",
                b + 1,
                b + 2,
                b + 3,
                b + 4,
                b + 5,
                b + 6,
                b + 7,
                b + 8,
                b + 9
            ));
            vals.extend([
                Val::Int(seq),
                Val::Int(record.at_ms),
                Val::Text(record.actor),
                Val::Text(record.action),
                Val::Text(record.subject),
                Val::Text(changes),
                Val::Text(record.detail),
                Val::Text(record.prev_hash.to_hex()),
                Val::Text(leaf.to_hex()),
            ]);
            prev = leaf;
        }
        let sql = format!(
            "INSERT INTO audit_log (seq, at_ms, actor, action, subject, changes, detail, prev_hash, leaf_hash) VALUES {}",
            rows.join(", ")
        );
        bind_all(sqlx::query(&sql), &vals).execute(&mut *self.tx).await?;
        // The audit_head row follows by trigger (migration 0002).
        self.fault("audit.after_append")?;
        self.tx.commit().await?;
        Ok(())
    }

    /// One command, committed alone (used for the rarer, unbatched commands).
    async fn commit<T: Serialize>(
        mut self,
        ctx: &WriteCtx,
        action: &str,
        subject: String,
        detail: serde_json::Value,
        idem: Option<&Idempotency>,
        result: &T,
    ) -> Result<()> {
        let result =
            serde_json::to_value(result).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let draft = self
            .finish_job(ctx, idem, Staged { action: action.into(), subject, detail, result })
            .await?;
        self.append_and_commit(vec![draft]).await
    }
}

/// What a command leaves for its audit record and its caller.
#[derive(Debug)]
struct Staged {
    action: String,
    subject: String,
    detail: serde_json::Value,
    result: serde_json::Value,
}

/// An audit record before it is chained.
#[derive(Debug)]
struct Draft {
    at_ms: i64,
    actor: String,
    action: String,
    subject: String,
    changes: Vec<Change>,
    detail: String,
}

type BoxFut<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;

/// A command's work inside a write transaction. Re-runnable: a batch that fails is rolled
/// back and its commands run again one by one.
type Job =
    Arc<dyn for<'a> Fn(&'a mut WriteTx, &'a WriteCtx) -> BoxFut<'a, Result<Staged>> + Send + Sync>;

fn job<F>(f: F) -> Job
where
    F: for<'a> Fn(&'a mut WriteTx, &'a WriteCtx) -> BoxFut<'a, Result<Staged>>
        + Send
        + Sync
        + 'static,
{
    Arc::new(f)
}

/// A command waiting for the group-commit writer.
struct Pending {
    job: Job,
    ctx: WriteCtx,
    idem: Option<Idempotency>,
    reply: oneshot::Sender<Result<serde_json::Value>>,
}

impl std::fmt::Debug for Pending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pending").field("ctx", &self.ctx).finish_non_exhaustive()
    }
}

impl SqlStore {
    fn with_batcher(mut self) -> Self {
        let (tx, rx) = mpsc::channel(4 * MAX_BATCH);
        tokio::spawn(batch_loop(self.clone(), rx));
        self.batcher = Some(tx);
        self
    }

    /// Run a command through the group-commit writer and wait for its result.
    async fn submit(
        &self,
        ctx: &WriteCtx,
        idem: Option<&Idempotency>,
        job: Job,
    ) -> Result<serde_json::Value> {
        let batcher =
            self.batcher.as_ref().ok_or_else(|| StoreError::Corrupt("no writer".into()))?;
        let (reply, wait) = oneshot::channel();
        batcher
            .send(Pending { job, ctx: ctx.clone(), idem: idem.cloned(), reply })
            .await
            .map_err(|_| StoreError::Corrupt("the writer has stopped".into()))?;
        wait.await.map_err(|_| StoreError::Corrupt("the writer dropped a command".into()))?
    }

    /// Run `batch` in one transaction. On failure, which command failed (None: the commit).
    async fn run_batch(
        &self,
        batch: &[Pending],
    ) -> Result<Vec<serde_json::Value>, (Option<usize>, StoreError)> {
        let mut w = self.begin_write().await.map_err(|e| (None, e))?;
        let mut drafts = Vec::with_capacity(batch.len());
        let mut results = Vec::with_capacity(batch.len());
        for (i, p) in batch.iter().enumerate() {
            let staged = (p.job)(&mut w, &p.ctx).await.map_err(|e| (Some(i), e))?;
            results.push(staged.result.clone());
            drafts.push(
                w.finish_job(&p.ctx, p.idem.as_ref(), staged).await.map_err(|e| (Some(i), e))?,
            );
        }
        w.append_and_commit(drafts).await.map_err(|e| (None, e))?;
        Ok(results)
    }
}

/// The group-commit writer: takes every command waiting (up to [`MAX_BATCH`]) and commits
/// them in one transaction, with one audit-head lock and one WAL flush. If any fails, the
/// batch is rolled back and each command runs again alone, which gives the same results as
/// running them one after another.
async fn batch_loop(store: SqlStore, mut rx: mpsc::Receiver<Pending>) {
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(p) => batch.push(p),
                Err(_) => break,
            }
        }
        match store.run_batch(&batch).await {
            Ok(results) => {
                for (p, r) in batch.into_iter().zip(results) {
                    let _ = p.reply.send(Ok(r));
                }
            }
            Err((_, e)) if batch.len() == 1 => {
                if let Some(p) = batch.into_iter().next() {
                    let _ = p.reply.send(Err(e));
                }
            }
            Err((failed, e)) => {
                // An injected fault is one-shot: give it to the command that met it (or the
                // first one, when it was met at commit) instead of running that one again.
                let mut fault =
                    matches!(e, StoreError::InjectedFault(_)).then_some((failed.unwrap_or(0), e));
                for (i, p) in batch.into_iter().enumerate() {
                    let result = match fault.take_if(|(at, _)| *at == i) {
                        Some((_, e)) => Err(e),
                        None => store
                            .run_batch(std::slice::from_ref(&p))
                            .await
                            .map(|mut r| r.remove(0))
                            .map_err(|(_, e)| e),
                    };
                    let _ = p.reply.send(result);
                }
            }
        }
    }
}

fn row_of<T: for<'r> sqlx::FromRow<'r, AnyRow>>(row: &AnyRow) -> Result<T> {
    Ok(T::from_row(row)?)
}

fn from_json<T: DeserializeOwned>(v: serde_json::Value) -> Result<T> {
    serde_json::from_value(v).map_err(|e| StoreError::Corrupt(format!("command result: {e}")))
}

fn customer_of(account: &AccountRef) -> Option<String> {
    match account {
        AccountRef::Customer { customer_id, .. } => Some(customer_id.to_string()),
        AccountRef::Custody { .. } => None,
    }
}

fn bucket_name(account: &AccountRef) -> &'static str {
    match account {
        AccountRef::Customer { bucket: Bucket::Available, .. } => "available",
        AccountRef::Customer { bucket: Bucket::Pending, .. } => "pending",
        AccountRef::Custody { .. } => "custody",
    }
}

fn digest(hex: &str) -> Result<Digest32> {
    Digest32::from_hex(hex).map_err(|_| StoreError::Corrupt(format!("bad hash {hex:?}")))
}

fn uuid(text: &str) -> Result<Uuid> {
    Uuid::parse_str(text).map_err(|_| StoreError::Corrupt(format!("bad uuid {text:?}")))
}

fn amount(text: &str) -> Result<Amount> {
    text.parse().map_err(|_| StoreError::Corrupt(format!("bad amount {text:?}")))
}

fn symbol(text: &str) -> Result<AssetSymbol> {
    AssetSymbol::parse(text).map_err(|_| StoreError::Corrupt(format!("bad asset {text:?}")))
}

fn hash_of<T: Serialize>(row: &T) -> Result<Digest32> {
    state_hash(row).map_err(|e| StoreError::Corrupt(e.to_string()))
}

// Rows exactly as stored. The audit log records the state hash of these, and
// `verify_audit` recomputes it from the live tables, so any hand edit shows.

#[derive(Debug, Clone, Serialize, Deserialize, sqlx::FromRow)]
pub(crate) struct AccountRow {
    key: String,
    customer_id: Option<String>,
    asset: String,
    bucket: String,
    balance: String,
    version: i64,
    updated_at_ms: i64,
}

impl AccountRow {
    fn balance(&self) -> Result<Amount> {
        amount(&self.balance)
    }
    fn hash(&self) -> Result<Digest32> {
        hash_of(self)
    }
}

#[derive(Debug, Clone, Serialize)]
struct PostingRow {
    n: i64,
    account_key: String,
    asset: String,
    side: String,
    amount: String,
    balance_after: String,
}

#[derive(Debug, Clone, Serialize)]
struct EntryRow {
    id: String,
    kind: String,
    reference: String,
    created_at_ms: i64,
    postings: Vec<PostingRow>,
}

impl EntryRow {
    fn hash(&self) -> Result<Digest32> {
        hash_of(self)
    }
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
struct CustomerRow {
    id: String,
    external_id: String,
    created_at_ms: i64,
}

impl CustomerRow {
    fn to_domain(&self) -> Result<Customer> {
        Ok(Customer {
            id: uuid(&self.id)?,
            external_id: self.external_id.clone(),
            created_at: Timestamp::from_unix_ms(self.created_at_ms),
        })
    }
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
struct WithdrawalRow {
    id: String,
    customer_id: String,
    asset: String,
    destination: String,
    amount: String,
    intent: String,
    intent_hash: String,
    state: String,
    created_at_ms: i64,
    updated_at_ms: i64,
}

const WITHDRAWAL_COLUMN_LIST: [&str; 10] = [
    "id",
    "customer_id",
    "asset",
    "destination",
    "amount",
    "intent",
    "intent_hash",
    "state",
    "created_at_ms",
    "updated_at_ms",
];

const WITHDRAWAL_COLUMNS: &str = "id, customer_id, asset, destination, amount, intent, intent_hash, state, created_at_ms, updated_at_ms";

impl WithdrawalRow {
    fn from_domain(w: &Withdrawal) -> Result<Self> {
        Ok(WithdrawalRow {
            id: w.id.to_string(),
            customer_id: w.customer_id.to_string(),
            asset: w.intent.asset.symbol.to_string(),
            destination: w.intent.destination.to_string(),
            amount: w.intent.amount.to_string(),
            intent: serde_json::to_string(&w.intent)
                .map_err(|e| StoreError::Corrupt(e.to_string()))?,
            intent_hash: w.intent_hash.clone(),
            state: w.state.as_str().into(),
            created_at_ms: w.created_at.unix_ms(),
            updated_at_ms: w.updated_at.unix_ms(),
        })
    }
    fn to_domain(&self) -> Result<Withdrawal> {
        let intent: Intent = serde_json::from_str(&self.intent)
            .map_err(|e| StoreError::Corrupt(format!("withdrawal {} intent: {e}", self.id)))?;
        // The intent is the truth; its hash and the columns copied out of it for queries
        // must agree with it.
        let hash = intent.hash().map_err(|e| StoreError::Corrupt(e.to_string()))?.to_hex();
        if hash != self.intent_hash
            || intent.amount.to_string() != self.amount
            || intent.destination.as_str() != self.destination
        {
            return Err(StoreError::Corrupt(format!(
                "withdrawal {} does not match its intent",
                self.id
            )));
        }
        Ok(Withdrawal {
            id: uuid(&self.id)?,
            customer_id: uuid(&self.customer_id)?,
            intent,
            intent_hash: self.intent_hash.clone(),
            state: WithdrawalState::parse(&self.state)
                .ok_or_else(|| StoreError::Corrupt(format!("bad state {:?}", self.state)))?,
            created_at: Timestamp::from_unix_ms(self.created_at_ms),
            updated_at: Timestamp::from_unix_ms(self.updated_at_ms),
        })
    }
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
struct DepositRow {
    id: String,
    customer_id: String,
    asset: String,
    amount: String,
    reference: String,
    entry_id: String,
    created_at_ms: i64,
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
struct TokenRow {
    id: String,
    name: String,
    role: String,
    token_hash: String,
    created_at_ms: i64,
    revoked_at_ms: Option<i64>,
    /// Absent from the hash when NULL, so rows made before migration 0011 keep theirs.
    #[serde(skip_serializing_if = "Option::is_none")]
    restrictions: Option<String>,
}

impl TokenRow {
    fn to_domain(&self) -> Result<ApiTokenRecord> {
        Ok(ApiTokenRecord {
            id: self.id.clone(),
            name: self.name.clone(),
            role: Role::parse(&self.role)
                .ok_or_else(|| StoreError::Corrupt(format!("bad role {:?}", self.role)))?,
            token_hash: self.token_hash.clone(),
            created_at: Timestamp::from_unix_ms(self.created_at_ms),
            revoked_at: self.revoked_at_ms.map(Timestamp::from_unix_ms),
            restrictions: self
                .restrictions
                .as_deref()
                .map(serde_json::from_str)
                .transpose()
                .map_err(|e| StoreError::Corrupt(format!("token restrictions: {e}")))?,
        })
    }
}

fn is_foreign_key_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if db.is_foreign_key_violation())
}

// The keyed commands, as work inside a write transaction. Each leaves its writes queued or
// done, its entity changes noted on the transaction, and returns its audit fields and result.

async fn stage_customer(w: &mut WriteTx, ctx: &WriteCtx, new: NewCustomer) -> Result<Staged> {
    let row = CustomerRow {
        id: new.id.to_string(),
        external_id: new.external_id.clone(),
        created_at_ms: ctx.now.unix_ms(),
    };
    w.insert(
        "customers",
        &["id", "external_id", "created_at_ms"],
        vec![
            Val::Text(row.id.clone()),
            Val::Text(row.external_id.clone()),
            Val::Int(row.created_at_ms),
        ],
    )
    .await?;
    w.fault("customer.after_insert")?;
    w.record(format!("customer/{}", row.id), None, Some(hash_of(&row)?));
    Ok(Staged {
        action: "customer.created".into(),
        subject: format!("customer/{}", row.id),
        detail: serde_json::json!({ "external_id": new.external_id }),
        result: to_json(&row.to_domain()?)?,
    })
}

async fn stage_deposit(w: &mut WriteTx, ctx: &WriteCtx, new: NewDeposit) -> Result<Staged> {
    // UNIQUE (asset, reference) is what refuses a second credit, wherever it is caught.
    let entry = JournalEntry::deposit(new.entry_id, new.customer_id, &new.asset, new.amount)?;
    let subject = format!("deposit/{}", new.id);
    w.apply_entry(&entry, &subject, ctx.now).await?;
    w.fault("deposit.after_postings")?;
    let row = DepositRow {
        id: new.id.to_string(),
        customer_id: new.customer_id.to_string(),
        asset: new.asset.to_string(),
        amount: new.amount.to_string(),
        reference: new.reference.clone(),
        entry_id: new.entry_id.to_string(),
        created_at_ms: ctx.now.unix_ms(),
    };
    w.insert(
        "deposits",
        &["id", "customer_id", "asset", "amount", "reference", "entry_id", "created_at_ms"],
        vec![
            Val::Text(row.id.clone()),
            Val::Text(row.customer_id.clone()),
            Val::Text(row.asset.clone()),
            Val::Text(row.amount.clone()),
            Val::Text(row.reference.clone()),
            Val::Text(row.entry_id.clone()),
            Val::Int(row.created_at_ms),
        ],
    )
    .await?;
    w.record(subject.clone(), None, Some(hash_of(&row)?));
    let deposit = Deposit {
        id: new.id,
        customer_id: new.customer_id,
        asset: new.asset.clone(),
        amount: new.amount,
        reference: new.reference.clone(),
        entry_id: new.entry_id,
        created_at: ctx.now,
    };
    Ok(Staged {
        action: "deposit.credited".into(),
        subject,
        detail: serde_json::json!({ "customer_id": new.customer_id, "asset": new.asset, "amount": new.amount, "reference": new.reference }),
        result: to_json(&deposit)?,
    })
}

async fn stage_withdrawal(
    w: &mut WriteTx,
    ctx: &WriteCtx,
    planned: PlannedWithdrawal,
) -> Result<Staged> {
    let wd = &planned.withdrawal;
    let subject = format!("withdrawal/{}", wd.id);
    w.apply_entry(&planned.reservation, &subject, ctx.now).await?;
    w.fault("withdrawal.after_reserve")?;
    let row = WithdrawalRow::from_domain(wd)?;
    w.insert(
        "withdrawals",
        &WITHDRAWAL_COLUMN_LIST,
        vec![
            Val::Text(row.id.clone()),
            Val::Text(row.customer_id.clone()),
            Val::Text(row.asset.clone()),
            Val::Text(row.destination.clone()),
            Val::Text(row.amount.clone()),
            Val::Text(row.intent.clone()),
            Val::Text(row.intent_hash.clone()),
            Val::Text(row.state.clone()),
            Val::Int(row.created_at_ms),
            Val::Int(row.updated_at_ms),
        ],
    )
    .await?;
    w.fault("withdrawal.after_insert")?;
    w.record(subject.clone(), None, Some(hash_of(&row)?));
    Ok(Staged {
        action: "withdrawal.requested".into(),
        subject,
        detail: serde_json::json!({
            "customer_id": wd.customer_id, "asset": wd.intent.asset.symbol, "amount": wd.intent.amount,
            "destination": wd.intent.destination.as_str(), "intent_hash": wd.intent_hash,
        }),
        result: to_json(wd)?,
    })
}

async fn stage_transition(
    w: &mut WriteTx,
    ctx: &WriteCtx,
    id: Uuid,
    to: WithdrawalState,
    entry_id: Uuid,
) -> Result<Staged> {
    let (before, mut wd) = lock_withdrawal(w, id).await?;
    if !wd.state.can_become(to)
        || (to == WithdrawalState::Settled && wd.state != WithdrawalState::Reserved)
    {
        return Err(StoreError::InvalidTransition { from: wd.state.as_str(), to: to.as_str() });
    }
    let (c, asset, amt) = (wd.customer_id, wd.intent.asset.symbol.clone(), wd.intent.amount);
    let entry = match to {
        WithdrawalState::Cancelled => JournalEntry::release(entry_id, c, &asset, amt)?,
        WithdrawalState::Settled => JournalEntry::settle(entry_id, c, &asset, amt)?,
        // The chain states have their own commands, which store the transaction with them.
        WithdrawalState::Reserved
        | WithdrawalState::Built
        | WithdrawalState::Signed
        | WithdrawalState::Broadcast
        | WithdrawalState::Failed => {
            return Err(StoreError::InvalidTransition { from: wd.state.as_str(), to: to.as_str() })
        }
    };
    let subject = format!("withdrawal/{id}");
    w.apply_entry(&entry, &subject, ctx.now).await?;
    let from = wd.state;
    set_state(w, ctx, &before, &mut wd, to).await?;
    w.fault("withdrawal.after_transition")?;
    Ok(Staged {
        action: format!("withdrawal.{}", to.as_str()),
        subject,
        detail: serde_json::json!({ "from": from.as_str(), "to": to.as_str() }),
        result: to_json(&wd)?,
    })
}

/// Lock a withdrawal's row: two concurrent commands must not both see the old state.
/// Statements queued by earlier commands of the same batch are already sent, so this sees
/// them.
async fn lock_withdrawal(w: &mut WriteTx, id: Uuid) -> Result<(WithdrawalRow, Withdrawal)> {
    let sql = format!(
        "SELECT {WITHDRAWAL_COLUMNS} FROM withdrawals WHERE id = $1{}",
        for_update(w.backend)
    );
    let row = sqlx::query(&sql)
        .bind(id.to_string())
        .fetch_optional(&mut *w.tx)
        .await?
        .ok_or(StoreError::NotFound { entity: "withdrawal", id: id.to_string() })?;
    let before = row_of::<WithdrawalRow>(&row)?;
    let wd = before.to_domain()?;
    Ok((before, wd))
}

/// Write a withdrawal's new state and note the change for the audit record.
async fn set_state(
    w: &mut WriteTx,
    ctx: &WriteCtx,
    before: &WithdrawalRow,
    wd: &mut Withdrawal,
    to: WithdrawalState,
) -> Result<()> {
    wd.state = to;
    wd.updated_at = ctx.now;
    let after = WithdrawalRow::from_domain(wd)?;
    w.write(
        "UPDATE withdrawals SET state = $1, updated_at_ms = $2 WHERE id = $3".into(),
        vec![
            Val::Text(after.state.clone()),
            Val::Int(after.updated_at_ms),
            Val::Text(after.id.clone()),
        ],
    )
    .await?;
    w.record(format!("withdrawal/{}", after.id), Some(hash_of(before)?), Some(hash_of(&after)?));
    Ok(())
}

fn to_json<T: Serialize>(value: &T) -> Result<serde_json::Value> {
    serde_json::to_value(value).map_err(|e| StoreError::Corrupt(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_are_renumbered_for_joining() {
        assert_eq!(
            renumber("INSERT INTO t (a, b) VALUES ($1, $2)", 3),
            "INSERT INTO t (a, b) VALUES ($4, $5)"
        );
        assert_eq!(renumber("x = $10 AND y = $9", 1), "x = $11 AND y = $10");
        assert_eq!(renumber("no params", 5), "no params");
    }

    #[test]
    fn withdrawal_column_list_and_string_agree() {
        assert_eq!(WITHDRAWAL_COLUMNS, WITHDRAWAL_COLUMN_LIST.join(", "));
    }

    #[test]
    fn database_urls_get_a_new_database_name() {
        assert_eq!(
            with_database("postgres://u@h:5432/postgres?sslmode=disable", "x"),
            "postgres://u@h:5432/x?sslmode=disable"
        );
        assert_eq!(with_database("postgres://u@h:5432", "x"), "postgres://u@h:5432/x");
    }
}
