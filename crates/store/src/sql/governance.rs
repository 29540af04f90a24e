//! The governance log's rows: kept in order, never trusted (signer nodes verify it).

use strongroom_governance::log::{Entry, Genesis};

use super::*;

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
struct GenesisRow {
    pin: String,
    genesis: String,
    created_at_ms: i64,
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
struct EntryRow {
    seq: i64,
    entry: String,
    created_at_ms: i64,
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
struct ProposalRow {
    entry: String,
    created_at_ms: i64,
}

fn to_text<T: Serialize>(v: &T) -> Result<String> {
    serde_json::to_string(v).map_err(|e| StoreError::Corrupt(e.to_string()))
}

fn entry_of(text: &str) -> Result<Entry> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt(format!("governance entry: {e}")))
}

fn seq_i64(seq: u64) -> Result<i64> {
    i64::try_from(seq).map_err(|_| StoreError::Refused("governance entry number too large".into()))
}

async fn locked_proposal(w: &mut WriteTx) -> Result<Option<ProposalRow>> {
    let sql = format!(
        "SELECT entry, created_at_ms FROM governance_proposal WHERE id = 1{}",
        for_update(w.backend)
    );
    let row = sqlx::query(&sql).fetch_optional(&mut *w.tx).await?;
    row.map(|r| row_of::<ProposalRow>(&r)).transpose()
}

async fn head_seq(w: &mut WriteTx) -> Result<u64> {
    let n: i64 = sqlx::query("SELECT COUNT(*) AS n FROM governance_entries")
        .fetch_one(&mut *w.tx)
        .await?
        .try_get("n")?;
    Ok(u64::try_from(n).unwrap_or(0))
}

/// The open proposal, which must still be `expected`.
async fn expect_open(w: &mut WriteTx, expected: &Entry) -> Result<ProposalRow> {
    let open = locked_proposal(w).await?;
    match open {
        Some(row) if entry_of(&row.entry)? == *expected => Ok(row),
        Some(_) => Err(StoreError::Refused(
            "the proposal changed meanwhile (another signature or proposal came first)".into(),
        )),
        None => Err(StoreError::NotFound {
            entity: "governance proposal",
            id: expected.seq.to_string(),
        }),
    }
}

pub(super) async fn stage(w: &mut WriteTx, ctx: &WriteCtx, op: GovernanceWrite) -> Result<Staged> {
    let now = ctx.now.unix_ms();
    let staged = |action: &str, subject: String, detail: serde_json::Value| Staged {
        action: format!("governance.{action}"),
        subject,
        detail,
        result: serde_json::Value::Null,
    };
    match op {
        GovernanceWrite::Genesis { pin, genesis } => {
            let sql = format!(
                "SELECT pin, genesis, created_at_ms FROM governance_genesis WHERE id = 1{}",
                for_update(w.backend)
            );
            let before = sqlx::query(&sql)
                .fetch_optional(&mut *w.tx)
                .await?
                .map(|r| row_of::<GenesisRow>(&r))
                .transpose()?;
            if let Some(b) = before {
                if b.pin == pin {
                    return Ok(staged(
                        "genesis_confirmed",
                        "governance/genesis".into(),
                        serde_json::json!({ "pin": pin }),
                    ));
                }
                return Err(StoreError::Refused(format!(
                    "another governance genesis ({}) is installed; it cannot be replaced",
                    b.pin
                )));
            }
            let row =
                GenesisRow { pin: pin.clone(), genesis: to_text(&genesis)?, created_at_ms: now };
            w.insert(
                "governance_genesis",
                &["id", "pin", "genesis", "created_at_ms"],
                vec![
                    Val::Int(1),
                    Val::Text(row.pin.clone()),
                    Val::Text(row.genesis.clone()),
                    Val::Int(now),
                ],
            )
            .await?;
            w.record("governance/genesis".into(), None, Some(hash_of(&row)?));
            Ok(staged(
                "genesis_installed",
                "governance/genesis".into(),
                serde_json::json!({ "pin": pin, "quorum": genesis.quorum, "members": genesis.members.len() }),
            ))
        }
        GovernanceWrite::Propose(entry) => {
            if let Some(open) = locked_proposal(w).await? {
                let e = entry_of(&open.entry)?;
                return Err(StoreError::Refused(format!(
                    "governance change {} is still open: sign it, or withdraw it first",
                    e.seq
                )));
            }
            let next = head_seq(w).await?.saturating_add(1);
            if entry.seq != next {
                return Err(StoreError::Refused(format!(
                    "the next governance entry is number {next}, not {}",
                    entry.seq
                )));
            }
            let row = ProposalRow { entry: to_text(&entry)?, created_at_ms: now };
            w.insert(
                "governance_proposal",
                &["id", "entry", "created_at_ms"],
                vec![Val::Int(1), Val::Text(row.entry.clone()), Val::Int(now)],
            )
            .await?;
            w.record("governance/proposal".into(), None, Some(hash_of(&row)?));
            Ok(staged(
                "proposed",
                format!("governance/entry/{}", entry.seq),
                serde_json::to_value(&entry.change).unwrap_or_default(),
            ))
        }
        GovernanceWrite::Update { expected, entry } => {
            let before = expect_open(w, &expected).await?;
            let row = ProposalRow { entry: to_text(&entry)?, created_at_ms: before.created_at_ms };
            w.write(
                "UPDATE governance_proposal SET entry = $1 WHERE id = 1".into(),
                vec![Val::Text(row.entry.clone())],
            )
            .await?;
            w.record("governance/proposal".into(), Some(hash_of(&before)?), Some(hash_of(&row)?));
            let signers: Vec<&str> = entry.signoffs.iter().map(|s| s.member.as_str()).collect();
            Ok(staged(
                "signed",
                format!("governance/entry/{}", entry.seq),
                serde_json::json!({ "signed_by": signers }),
            ))
        }
        GovernanceWrite::Commit { expected, entry } => {
            let before = expect_open(w, &expected).await?;
            let next = head_seq(w).await?.saturating_add(1);
            if entry.seq != next {
                return Err(StoreError::Refused(format!(
                    "the next governance entry is number {next}, not {}",
                    entry.seq
                )));
            }
            let row =
                EntryRow { seq: seq_i64(entry.seq)?, entry: to_text(&entry)?, created_at_ms: now };
            w.write("DELETE FROM governance_proposal WHERE id = 1".into(), vec![]).await?;
            w.insert(
                "governance_entries",
                &["seq", "entry", "created_at_ms"],
                vec![Val::Int(row.seq), Val::Text(row.entry.clone()), Val::Int(now)],
            )
            .await?;
            w.record("governance/proposal".into(), Some(hash_of(&before)?), None);
            w.record(format!("governance/entry/{}", entry.seq), None, Some(hash_of(&row)?));
            let signers: Vec<&str> = entry.signoffs.iter().map(|s| s.member.as_str()).collect();
            Ok(staged(
                "committed",
                format!("governance/entry/{}", entry.seq),
                serde_json::json!({ "change": entry.change, "signed_by": signers }),
            ))
        }
        GovernanceWrite::Withdraw { seq } => {
            let open = locked_proposal(w).await?;
            let Some(before) = open.filter(|r| entry_of(&r.entry).is_ok_and(|e| e.seq == seq))
            else {
                return Err(StoreError::NotFound {
                    entity: "governance proposal",
                    id: seq.to_string(),
                });
            };
            w.write("DELETE FROM governance_proposal WHERE id = 1".into(), vec![]).await?;
            w.record("governance/proposal".into(), Some(hash_of(&before)?), None);
            Ok(staged("withdrawn", format!("governance/entry/{seq}"), serde_json::Value::Null))
        }
    }
}

impl SqlStore {
    pub(super) async fn read_governance(&self) -> Result<GovernanceRecord> {
        let genesis =
            sqlx::query("SELECT pin, genesis, created_at_ms FROM governance_genesis WHERE id = 1")
                .fetch_optional(&self.pool)
                .await?
                .map(|r| -> Result<(String, Genesis)> {
                    let row = row_of::<GenesisRow>(&r)?;
                    let g = serde_json::from_str(&row.genesis)
                        .map_err(|e| StoreError::Corrupt(format!("governance genesis: {e}")))?;
                    Ok((row.pin, g))
                })
                .transpose()?;
        let mut entries = Vec::new();
        for r in
            sqlx::query("SELECT seq, entry, created_at_ms FROM governance_entries ORDER BY seq")
                .fetch_all(&self.pool)
                .await?
        {
            entries.push(entry_of(&row_of::<EntryRow>(&r)?.entry)?);
        }
        let proposal =
            sqlx::query("SELECT entry, created_at_ms FROM governance_proposal WHERE id = 1")
                .fetch_optional(&self.pool)
                .await?
                .map(|r| row_of::<ProposalRow>(&r).and_then(|p| entry_of(&p.entry)))
                .transpose()?;
        Ok(GovernanceRecord { genesis, entries, proposal })
    }

    pub(super) async fn governance_entity_states(
        &self,
        out: &mut Vec<(String, Digest32)>,
    ) -> Result<()> {
        if let Some(r) = sqlx::query("SELECT pin, genesis, created_at_ms FROM governance_genesis")
            .fetch_optional(&self.pool)
            .await?
        {
            out.push(("governance/genesis".into(), hash_of(&row_of::<GenesisRow>(&r)?)?));
        }
        for r in sqlx::query("SELECT seq, entry, created_at_ms FROM governance_entries")
            .fetch_all(&self.pool)
            .await?
        {
            let row = row_of::<EntryRow>(&r)?;
            out.push((format!("governance/entry/{}", row.seq), hash_of(&row)?));
        }
        if let Some(r) = sqlx::query("SELECT entry, created_at_ms FROM governance_proposal")
            .fetch_optional(&self.pool)
            .await?
        {
            out.push(("governance/proposal".into(), hash_of(&row_of::<ProposalRow>(&r)?)?));
        }
        Ok(())
    }
}
