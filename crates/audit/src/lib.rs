//! The audit trail's record format and its verification. Pure: no storage, no clock.
//!
//! Every state change appends one [`AuditRecord`]. Records form a hash chain: each carries
//! the leaf hash of the one before it, so editing, deleting or reordering any stored record
//! breaks every link after it, and [`ChainVerifier`] names the first broken one.
//!
//! The leaf hash is RFC 6962's `SHA-256(0x00 || leaf)`, so the same hashes become the leaves
//! of a Merkle tree (signed tree heads, inclusion and consistency proofs) without a change of
//! format. `docs/adr/0003-audit-records.md` explains the choice.
#![forbid(unsafe_code)]

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub const RECORD_VERSION: u8 = 1;
/// Longest text field of a record, in bytes.
pub const MAX_TEXT_LEN: usize = 1024;
/// Most entity changes one record may carry.
pub const MAX_CHANGES: usize = 32;

/// A 32-byte SHA-256 digest.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Digest32(pub [u8; 32]);

impl Digest32 {
    pub const ZERO: Digest32 = Digest32([0u8; 32]);
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
    pub fn from_hex(text: &str) -> Result<Self, AuditError> {
        let mut out = [0u8; 32];
        hex::decode_to_slice(text, &mut out).map_err(|_| AuditError::BadHex)?;
        Ok(Digest32(out))
    }
}

impl std::fmt::Debug for Digest32 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.to_hex())
    }
}

impl Serialize for Digest32 {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}
impl<'de> Deserialize<'de> for Digest32 {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Digest32::from_hex(&s).map_err(serde::de::Error::custom)
    }
}

/// The hash of an entity's state, as recorded before and after a change. Domain-separated
/// so it can never equal a record or intent hash.
pub fn state_hash<T: Serialize>(state: &T) -> Result<Digest32, AuditError> {
    let json = serde_json::to_vec(state).map_err(|e| AuditError::Encode(e.to_string()))?;
    let mut h = Sha256::new();
    h.update(b"strongroom/state/v1\0");
    h.update(&json);
    Ok(Digest32(h.finalize().into()))
}

/// One entity's state before and after a change. `None` means "did not exist".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    pub entity: String,
    pub before: Option<Digest32>,
    pub after: Option<Digest32>,
}

/// What happened, by whom, when, and to what. `detail` is stored as the exact JSON text
/// that was hashed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// Position in the log, from 1.
    pub seq: u64,
    /// Unix milliseconds.
    pub at_ms: i64,
    /// Who: `token:<id>`, `system`, `cli`.
    pub actor: String,
    /// What: `withdrawal.requested`, `deposit.credited`, …
    pub action: String,
    /// The main thing acted on: `withdrawal/<id>`.
    pub subject: String,
    pub changes: Vec<Change>,
    /// Extra facts as JSON text (request id, amounts).
    pub detail: String,
    /// Leaf hash of record `seq - 1`; zeros for the first record.
    pub prev_hash: Digest32,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuditError {
    #[error("audit field {0} is longer than {MAX_TEXT_LEN} bytes")]
    FieldTooLong(&'static str),
    #[error("an audit record may carry at most {MAX_CHANGES} changes")]
    TooManyChanges,
    #[error("not a 64-digit hex hash")]
    BadHex,
    #[error("could not encode state: {0}")]
    Encode(String),
}

impl AuditRecord {
    /// The canonical leaf encoding: version, then each field in order; text as u32
    /// big-endian length + UTF-8; hashes as 32 raw bytes behind a presence byte.
    pub fn encode(&self) -> Result<Vec<u8>, AuditError> {
        let mut out = Vec::with_capacity(256);
        out.push(RECORD_VERSION);
        out.extend_from_slice(&self.seq.to_be_bytes());
        out.extend_from_slice(&self.at_ms.to_be_bytes());
        put_text(&mut out, "actor", &self.actor)?;
        put_text(&mut out, "action", &self.action)?;
        put_text(&mut out, "subject", &self.subject)?;
        if self.changes.len() > MAX_CHANGES {
            return Err(AuditError::TooManyChanges);
        }
        out.push(u8::try_from(self.changes.len()).map_err(|_| AuditError::TooManyChanges)?);
        for c in &self.changes {
            put_text(&mut out, "change.entity", &c.entity)?;
            put_opt_hash(&mut out, c.before);
            put_opt_hash(&mut out, c.after);
        }
        // The detail can be long; its hash stands in for it.
        out.extend_from_slice(&Sha256::digest(self.detail.as_bytes()));
        out.extend_from_slice(&self.prev_hash.0);
        Ok(out)
    }

    /// RFC 6962 leaf hash: `SHA-256(0x00 || encoding)`.
    pub fn leaf_hash(&self) -> Result<Digest32, AuditError> {
        let mut h = Sha256::new();
        h.update([0u8]);
        h.update(self.encode()?);
        Ok(Digest32(h.finalize().into()))
    }
}

fn put_text(out: &mut Vec<u8>, field: &'static str, text: &str) -> Result<(), AuditError> {
    if text.len() > MAX_TEXT_LEN {
        return Err(AuditError::FieldTooLong(field));
    }
    let len = u32::try_from(text.len()).map_err(|_| AuditError::FieldTooLong(field))?;
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(text.as_bytes());
    Ok(())
}

fn put_opt_hash(out: &mut Vec<u8>, h: Option<Digest32>) {
    match h {
        None => out.push(0),
        Some(d) => {
            out.push(1);
            out.extend_from_slice(&d.0);
        }
    }
}

/// Where and why a chain stopped verifying.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ChainBreak {
    #[error(
        "record {seq}: expected sequence number {expected} (a record is missing or reordered)"
    )]
    Gap { seq: u64, expected: u64 },
    #[error("record {seq}: prev_hash does not match the leaf hash of record {prev} (an earlier record was changed or removed)")]
    PrevMismatch { seq: u64, prev: u64 },
    #[error("record {seq}: stored leaf hash does not match its contents (the record was edited)")]
    LeafMismatch { seq: u64 },
    #[error("record {seq}: cannot be encoded: {reason}")]
    Unencodable { seq: u64, reason: String },
}

impl ChainBreak {
    pub fn seq(&self) -> u64 {
        match self {
            ChainBreak::Gap { seq, .. }
            | ChainBreak::PrevMismatch { seq, .. }
            | ChainBreak::LeafMismatch { seq }
            | ChainBreak::Unencodable { seq, .. } => *seq,
        }
    }
}

/// Walks a log in order, one record at a time, so a log of any length verifies in bounded
/// memory.
#[derive(Debug, Clone)]
pub struct ChainVerifier {
    next_seq: u64,
    prev: Digest32,
}

impl Default for ChainVerifier {
    fn default() -> Self {
        ChainVerifier { next_seq: 1, prev: Digest32::ZERO }
    }
}

impl ChainVerifier {
    /// Check the next record and the leaf hash it was stored with.
    pub fn push(&mut self, record: &AuditRecord, stored_leaf: Digest32) -> Result<(), ChainBreak> {
        let seq = record.seq;
        if seq != self.next_seq {
            return Err(ChainBreak::Gap { seq, expected: self.next_seq });
        }
        let leaf = record
            .leaf_hash()
            .map_err(|e| ChainBreak::Unencodable { seq, reason: e.to_string() })?;
        if leaf != stored_leaf {
            return Err(ChainBreak::LeafMismatch { seq });
        }
        if record.prev_hash != self.prev {
            return Err(ChainBreak::PrevMismatch { seq, prev: seq.saturating_sub(1) });
        }
        self.prev = leaf;
        self.next_seq = seq.saturating_add(1);
        Ok(())
    }

    /// Records verified so far.
    pub fn count(&self) -> u64 {
        self.next_seq.saturating_sub(1)
    }

    /// Leaf hash of the last verified record.
    pub fn head(&self) -> Digest32 {
        self.prev
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(n: u64) -> Vec<(AuditRecord, Digest32)> {
        let mut prev = Digest32::ZERO;
        (1..=n)
            .map(|seq| {
                let r = AuditRecord {
                    seq,
                    at_ms: 1_700_000_000_000 + seq as i64,
                    actor: "token:ops".into(),
                    action: "deposit.credited".into(),
                    subject: format!("deposit/{seq}"),
                    changes: vec![Change {
                        entity: "account/x".into(),
                        before: (seq > 1).then_some(Digest32([seq as u8; 32])),
                        after: Some(Digest32([seq as u8 + 1; 32])),
                    }],
                    detail: format!("{{\"n\":{seq}}}"),
                    prev_hash: prev,
                };
                let leaf = r.leaf_hash().unwrap();
                prev = leaf;
                (r, leaf)
            })
            .collect()
    }

    fn verify(records: &[(AuditRecord, Digest32)]) -> Result<u64, ChainBreak> {
        let mut v = ChainVerifier::default();
        for (r, leaf) in records {
            v.push(r, *leaf)?;
        }
        Ok(v.count())
    }

    #[test]
    fn an_intact_chain_verifies() {
        assert_eq!(verify(&chain(10)), Ok(10));
    }

    #[test]
    fn an_edited_field_is_found_at_its_record() {
        let mut c = chain(10);
        c[4].0.detail = "{\"n\":999}".into();
        assert_eq!(verify(&c), Err(ChainBreak::LeafMismatch { seq: 5 }));
    }

    #[test]
    fn an_edited_record_with_recomputed_hash_breaks_the_next_link() {
        let mut c = chain(10);
        c[4].0.actor = "token:mallory".into();
        c[4].1 = c[4].0.leaf_hash().unwrap();
        assert_eq!(verify(&c), Err(ChainBreak::PrevMismatch { seq: 6, prev: 5 }));
    }

    #[test]
    fn a_deleted_record_is_a_gap() {
        let mut c = chain(10);
        c.remove(3);
        assert_eq!(verify(&c), Err(ChainBreak::Gap { seq: 5, expected: 4 }));
    }

    #[test]
    fn leaf_hash_uses_the_rfc6962_leaf_prefix() {
        let (r, leaf) = chain(1).remove(0);
        let mut h = Sha256::new();
        h.update([0u8]);
        h.update(r.encode().unwrap());
        assert_eq!(leaf.0, <[u8; 32]>::from(h.finalize()));
    }

    #[test]
    fn state_hashes_differ_with_state() {
        assert_ne!(state_hash(&("a", 1)).unwrap(), state_hash(&("a", 2)).unwrap());
        assert_eq!(state_hash(&("a", 1)).unwrap(), state_hash(&("a", 1)).unwrap());
    }
}
