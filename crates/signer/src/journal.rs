//! The node's signing journal: for every intent it signed, the digest of the one
//! transaction it signed for it. An approved withdrawal is a licence for one transaction,
//! not for a transaction at nonce n, another at n+1, and so on until its approvals expire:
//! a node signs an intent again only for the very same transaction (the engine asking a
//! second time after a crash). The journal is a hash-chained [`NodeLog`] in
//! `DATA/journal.jsonl`, synced before the signature share leaves the node, and read back
//! on start, so a restart forgets nothing; a journal that does not verify stops the node.
//!
//! With a 2-of-3 group any two signing pairs share a node, so one honest node's journal is
//! enough; larger groups share journals over the node mesh (issue "Signers decide (2)").

use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;

use crate::nodelog::NodeLog;
use crate::wire::Reason;

const SIGNED: &str = "intent.signed";

/// How many transactions a node signs for one intent: the first and at most this many
/// replacements of it, each consuming exactly what the first did (fee bumps).
pub const MAX_VERSIONS: usize = 5;

/// What a node signed for one intent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Signed {
    /// Hex identity of each transaction signed for it, the first first.
    identities: Vec<String>,
    /// Hex of what they consume (`None` in records written before fee bumps: then no
    /// replacement is signed).
    consumes: Option<String>,
}

#[derive(Debug)]
pub struct Journal {
    log: NodeLog,
    /// Intent request id → the transactions signed for it.
    signed: Mutex<HashMap<String, Signed>>,
}

/// Whether `identity` (consuming `consumes`) may be signed for an intent that already has
/// `before`: `Ok(true)` for one of the same transactions again, `Ok(false)` for a first or a
/// replacement (the same consumption, within [`MAX_VERSIONS`]), a refusal otherwise.
fn decide(
    request_id: &str,
    before: Option<&Signed>,
    identity: &str,
    consumes: &str,
) -> Result<bool, Reason> {
    let Some(b) = before else { return Ok(false) };
    if b.identities.iter().any(|i| i == identity) {
        return Ok(true);
    }
    if b.consumes.as_deref() != Some(consumes) {
        return Err(Reason::AlreadySigned {
            request_id: request_id.to_owned(),
            signed: b.identities.first().cloned().unwrap_or_default(),
            offered: identity.to_owned(),
        });
    }
    if b.identities.len() >= MAX_VERSIONS {
        return Err(Reason::Replacements {
            request_id: request_id.to_owned(),
            signed: b.identities.len(),
            max: MAX_VERSIONS,
        });
    }
    Ok(false)
}

impl Journal {
    pub fn open(path: &Path, node: u16) -> anyhow::Result<Journal> {
        let log = NodeLog::open(path, node)?;
        let mut signed: HashMap<String, Signed> = HashMap::new();
        if path.exists() {
            for r in crate::nodelog::records(path)? {
                if r.action != SIGNED {
                    continue;
                }
                let detail: serde_json::Value = serde_json::from_str(&r.detail)?;
                let digest = detail
                    .get("digest")
                    .and_then(|d| d.as_str())
                    .ok_or_else(|| anyhow::anyhow!("journal record {} has no digest", r.seq))?;
                let consumes = detail.get("consumes").and_then(|d| d.as_str()).map(str::to_owned);
                let id = r.subject.trim_start_matches("intent/").to_owned();
                let e = signed.entry(id).or_default();
                if e.identities.is_empty() {
                    e.consumes = consumes;
                }
                e.identities.push(digest.to_owned());
            }
        }
        Ok(Journal { log, signed: Mutex::new(signed) })
    }

    /// Whether this node already signed the transaction `identity` for `request_id` (a
    /// repeat), or may sign it: nothing signed for the intent yet, or a replacement that
    /// consumes exactly what the first did (`consumes`), within [`MAX_VERSIONS`]. Another
    /// transaction for it is refused (`already_signed`, or `replacements` past the bound).
    pub fn signed(
        &self,
        request_id: &str,
        identity: &[u8],
        consumes: &[u8],
    ) -> Result<bool, Reason> {
        let signed = self
            .signed
            .lock()
            .map_err(|_| Reason::Internal { detail: "journal lock poisoned".into() })?;
        decide(request_id, signed.get(request_id), &hex::encode(identity), &hex::encode(consumes))
    }

    /// Record that this node signs the transaction `identity` names (its signing digest, or
    /// for a transaction with one signature per input its id) for the intent `request_id`,
    /// or refuse as [`Journal::signed`] does. The same one again is allowed: it is the same
    /// transaction, and cannot pay twice; a replacement consumes what the first one did, so
    /// at most one of them can ever confirm.
    pub fn claim(
        &self,
        request_id: &str,
        intent_hash: &str,
        identity: &[u8],
        consumes: &[u8],
        at_ms: i64,
    ) -> Result<(), Reason> {
        let mut signed = self
            .signed
            .lock()
            .map_err(|_| Reason::Internal { detail: "journal lock poisoned".into() })?;
        let (offered, consumed) = (hex::encode(identity), hex::encode(consumes));
        if decide(request_id, signed.get(request_id), &offered, &consumed)? {
            return Ok(());
        }
        self.log
            .append(
                at_ms,
                SIGNED,
                &format!("intent/{request_id}"),
                serde_json::json!({ "digest": offered, "intent": intent_hash, "consumes": consumed }),
            )
            .map_err(|e| Reason::Internal { detail: format!("journal: {e}") })?;
        let e = signed.entry(request_id.to_owned()).or_default();
        if e.identities.is_empty() {
            e.consumes = Some(consumed);
        }
        e.identities.push(offered);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replacement_must_consume_what_the_first_did_and_stay_within_the_bound() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal.jsonl");
        let j = Journal::open(&path, 1).unwrap();
        j.claim("r", "h", b"tx1", b"coins-a", 1).unwrap();
        assert!(j.signed("r", b"tx1", b"coins-a").unwrap(), "the same transaction again");
        assert!(!j.signed("r", b"tx2", b"coins-a").unwrap(), "a fee bump on the same coins");
        assert!(matches!(j.signed("r", b"tx2", b"coins-b"), Err(Reason::AlreadySigned { .. })));
        for n in 2..=MAX_VERSIONS {
            j.claim("r", "h", format!("tx{n}").as_bytes(), b"coins-a", 1).unwrap();
        }
        assert!(matches!(
            j.claim("r", "h", b"one-too-many", b"coins-a", 1),
            Err(Reason::Replacements { signed: MAX_VERSIONS, max: MAX_VERSIONS, .. })
        ));
        // Read back after a restart, it decides the same.
        drop(j);
        let j = Journal::open(&path, 1).unwrap();
        assert!(j.signed("r", b"tx3", b"coins-a").unwrap());
        assert!(matches!(j.signed("r", b"x", b"coins-b"), Err(Reason::AlreadySigned { .. })));
        assert!(matches!(j.signed("r", b"x", b"coins-a"), Err(Reason::Replacements { .. })));
    }
}
