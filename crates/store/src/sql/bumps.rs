//! Fee bumps of broadcast transactions (`chain_tx_bumps`): each a replacement of the
//! transaction of record, stored unsigned, then signed; the one the chain includes is adopted
//! as the transaction of record before its owner is concluded.

use strongroom_chain::SignedTx;

use super::chain;
use super::*;

const BUMP_COLUMNS: &str =
    "owner_id, version, unsigned_tx, signed_tx, txid, created_at_ms, updated_at_ms";

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub(super) struct BumpRow {
    owner_id: String,
    version: i64,
    unsigned_tx: String,
    signed_tx: Option<String>,
    txid: Option<String>,
    created_at_ms: i64,
    updated_at_ms: i64,
}

impl BumpRow {
    fn to_domain(&self) -> Result<Bump> {
        let corrupt = |w: &str| {
            StoreError::Corrupt(format!("bump {} of {}: {w}", self.version, self.owner_id))
        };
        let signed = chain::signed_of(&self.signed_tx, &self.txid).map_err(&corrupt)?;
        Ok(Bump {
            owner_id: uuid(&self.owner_id)?,
            version: u32::try_from(self.version).map_err(|_| corrupt("version"))?,
            unsigned_tx: self.unsigned_tx.clone(),
            signed,
            created_at: Timestamp::from_unix_ms(self.created_at_ms),
            updated_at: Timestamp::from_unix_ms(self.updated_at_ms),
        })
    }

    fn entity(&self) -> String {
        format!("bump/{}/{}", self.owner_id, self.version)
    }
}

async fn rows<'e, E>(exec: E, id: Uuid, lock: Option<Backend>) -> Result<Vec<BumpRow>>
where
    E: sqlx::Executor<'e, Database = sqlx::Any>,
{
    let sql = format!(
        "SELECT {BUMP_COLUMNS} FROM chain_tx_bumps WHERE owner_id = $1 ORDER BY version{}",
        lock.map_or("", for_update)
    );
    let found = sqlx::query(&sql).bind(id.to_string()).fetch_all(exec).await?;
    found.iter().map(row_of::<BumpRow>).collect()
}

/// The owner, locked, which must be broadcast (a bump replaces a transaction the network
/// has and leaves waiting).
async fn broadcast_owner(w: &mut WriteTx, id: Uuid, what: &str) -> Result<chain::Owner> {
    let owner = chain::lock_owner(w, id).await?;
    if owner.state() != WithdrawalState::Broadcast {
        return Err(StoreError::Refused(format!(
            "a {what} is for a broadcast transaction; this {} is {}",
            owner.kind(),
            owner.state().as_str()
        )));
    }
    Ok(owner)
}

pub(super) async fn stage_bump(
    w: &mut WriteTx,
    ctx: &WriteCtx,
    id: Uuid,
    unsigned: Vec<u8>,
) -> Result<Staged> {
    let owner = broadcast_owner(w, id, "fee bump").await?;
    chain::lock_chain_tx(w, id).await?;
    let before = rows(&mut *w.tx, id, Some(w.backend)).await?;
    if let Some(last) = before.last().filter(|b| b.signed_tx.is_none()) {
        // One bump at a time: the one waiting for signatures stands.
        return Ok(Staged {
            action: "bump.pending".into(),
            subject: owner.subject(id),
            detail: serde_json::json!({ "version": last.version }),
            result: to_json(&last.to_domain()?)?,
        });
    }
    let version = before.last().map_or(1, |b| b.version.saturating_add(1));
    if version > i64::from(MAX_BUMPS) {
        return Err(StoreError::Refused(format!(
            "the transaction was bumped {MAX_BUMPS} times already, the most it may be"
        )));
    }
    let row = BumpRow {
        owner_id: id.to_string(),
        version,
        unsigned_tx: hex::encode(&unsigned),
        signed_tx: None,
        txid: None,
        created_at_ms: ctx.now.unix_ms(),
        updated_at_ms: ctx.now.unix_ms(),
    };
    w.insert(
        "chain_tx_bumps",
        &BUMP_COLUMNS.split(", ").collect::<Vec<_>>(),
        vec![
            Val::Text(row.owner_id.clone()),
            Val::Int(row.version),
            Val::Text(row.unsigned_tx.clone()),
            Val::OptText(None),
            Val::OptText(None),
            Val::Int(row.created_at_ms),
            Val::Int(row.updated_at_ms),
        ],
    )
    .await?;
    w.record(row.entity(), None, Some(hash_of(&row)?));
    Ok(Staged {
        action: format!("{}.fee_bump", owner.kind()),
        subject: owner.subject(id),
        detail: serde_json::json!({ "version": version }),
        result: to_json(&row.to_domain()?)?,
    })
}

pub(super) async fn stage_bump_signed(
    w: &mut WriteTx,
    ctx: &WriteCtx,
    id: Uuid,
    version: u32,
    signed: SignedTx,
) -> Result<Staged> {
    let owner = broadcast_owner(w, id, "signed fee bump").await?;
    let all = rows(&mut *w.tx, id, Some(w.backend)).await?;
    let before = all
        .iter()
        .find(|b| b.version == i64::from(version))
        .ok_or(StoreError::NotFound { entity: "fee bump", id: format!("{id}/{version}") })?;
    if before.signed_tx.is_some() {
        // Written once: the stored one stands.
        return Ok(Staged {
            action: "bump.signed_already".into(),
            subject: owner.subject(id),
            detail: serde_json::json!({ "version": version }),
            result: to_json(&before.to_domain()?)?,
        });
    }
    let mut after = before.clone();
    after.signed_tx = Some(hex::encode(&signed.raw));
    after.txid = Some(signed.txid.clone());
    after.updated_at_ms = ctx.now.unix_ms();
    w.write(
        "UPDATE chain_tx_bumps SET signed_tx = $1, txid = $2, updated_at_ms = $3 WHERE owner_id = $4 AND version = $5".into(),
        vec![
            Val::OptText(after.signed_tx.clone()),
            Val::OptText(after.txid.clone()),
            Val::Int(after.updated_at_ms),
            Val::Text(after.owner_id.clone()),
            Val::Int(after.version),
        ],
    )
    .await?;
    w.record(after.entity(), Some(hash_of(before)?), Some(hash_of(&after)?));
    Ok(Staged {
        action: format!("{}.fee_bump_signed", owner.kind()),
        subject: owner.subject(id),
        detail: serde_json::json!({ "version": version, "txid": signed.txid }),
        result: to_json(&after.to_domain()?)?,
    })
}

pub(super) async fn stage_adopt(
    w: &mut WriteTx,
    ctx: &WriteCtx,
    id: Uuid,
    version: u32,
) -> Result<Staged> {
    let owner = broadcast_owner(w, id, "mined fee bump").await?;
    let old = chain::lock_chain_tx(w, id).await?;
    let all = rows(&mut *w.tx, id, Some(w.backend)).await?;
    let bump = all
        .iter()
        .find(|b| b.version == i64::from(version))
        .ok_or(StoreError::NotFound { entity: "fee bump", id: format!("{id}/{version}") })?;
    let (Some(signed), Some(txid)) = (&bump.signed_tx, &bump.txid) else {
        return Err(StoreError::Refused(format!("fee bump {version} is not signed")));
    };
    let mut new = old.clone();
    new.replace_with(&bump.unsigned_tx, signed, txid, ctx.now.unix_ms());
    if new.same_transaction(&old) {
        return Ok(Staged {
            action: "bump.adopted_already".into(),
            subject: owner.subject(id),
            detail: serde_json::json!({ "version": version }),
            result: to_json(&old.to_domain()?)?,
        });
    }
    chain::replace_chain_tx(w, &old, &new).await?;
    Ok(Staged {
        action: format!("{}.fee_bump_mined", owner.kind()),
        subject: owner.subject(id),
        detail: serde_json::json!({ "version": version, "txid": txid, "replaced": old.txid() }),
        result: to_json(&new.to_domain()?)?,
    })
}

impl SqlStore {
    pub(super) async fn read_bumps(&self, id: Uuid) -> Result<Vec<Bump>> {
        rows(&self.pool, id, None).await?.iter().map(BumpRow::to_domain).collect()
    }

    pub(super) async fn bump_entity_states(&self, out: &mut Vec<(String, Digest32)>) -> Result<()> {
        let sql = format!("SELECT {BUMP_COLUMNS} FROM chain_tx_bumps");
        for r in sqlx::query(&sql).fetch_all(&self.pool).await? {
            let row = row_of::<BumpRow>(&r)?;
            out.push((row.entity(), hash_of(&row)?));
        }
        Ok(())
    }
}
