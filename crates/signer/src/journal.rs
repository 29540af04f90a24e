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

#[derive(Debug)]
pub struct Journal {
    log: NodeLog,
    /// Intent request id → hex digest of the transaction signed for it.
    signed: Mutex<HashMap<String, String>>,
}

impl Journal {
    pub fn open(path: &Path, node: u16) -> anyhow::Result<Journal> {
        let log = NodeLog::open(path, node)?;
        let mut signed = HashMap::new();
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
                let id = r.subject.trim_start_matches("intent/").to_owned();
                signed.insert(id, digest.to_owned());
            }
        }
        Ok(Journal { log, signed: Mutex::new(signed) })
    }

    /// Whether this node already signed `digest` for `request_id` (a repeat), or nothing
    /// for it yet; another transaction for it is refused.
    pub fn signed(&self, request_id: &str, digest: &[u8]) -> Result<bool, Reason> {
        let signed = self
            .signed
            .lock()
            .map_err(|_| Reason::Internal { detail: "journal lock poisoned".into() })?;
        let offered = hex::encode(digest);
        match signed.get(request_id) {
            Some(d) if *d == offered => Ok(true),
            Some(d) => Err(Reason::AlreadySigned {
                request_id: request_id.to_owned(),
                signed: d.clone(),
                offered,
            }),
            None => Ok(false),
        }
    }

    /// Record that this node signs the transaction `digest` names (its signing digest, or
    /// for a transaction with one signature per input its id) for the intent `request_id`,
    /// or refuse when it signed another transaction for that intent. The same one again is
    /// allowed: it is the same transaction, and cannot pay twice.
    pub fn claim(
        &self,
        request_id: &str,
        intent_hash: &str,
        digest: &[u8],
        at_ms: i64,
    ) -> Result<(), Reason> {
        let mut signed = self
            .signed
            .lock()
            .map_err(|_| Reason::Internal { detail: "journal lock poisoned".into() })?;
        let offered = hex::encode(digest);
        match signed.get(request_id) {
            Some(d) if *d == offered => return Ok(()),
            Some(d) => {
                return Err(Reason::AlreadySigned {
                    request_id: request_id.to_owned(),
                    signed: d.clone(),
                    offered,
                })
            }
            None => {}
        }
        self.log
            .append(
                at_ms,
                SIGNED,
                &format!("intent/{request_id}"),
                serde_json::json!({ "digest": offered, "intent": intent_hash }),
            )
            .map_err(|e| Reason::Internal { detail: format!("journal: {e}") })?;
        signed.insert(request_id.to_owned(), offered);
        Ok(())
    }
}
