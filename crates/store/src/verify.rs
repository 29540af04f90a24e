//! `strongroom audit verify`: walk the audit chain, then check that the live tables are
//! exactly what the chain says they should be.
//!
//! Two kinds of tampering are found:
//! - an edited, deleted or reordered audit record breaks the hash chain ([`ChainBreak`]);
//! - a row edited, inserted or deleted outside Strongroom no longer matches the state hash
//!   the last audit record for it wrote ([`StateMismatch`]);
//! - a row deleted outside Strongroom whose key a later write reused (a governance entry's
//!   sequence number, say) shows as a record that changes the entity from another state than
//!   the one the log last gave it ([`MismatchKind::Rewritten`]): every change must start
//!   where the one before it ended.

use std::collections::BTreeMap;

use strongroom_audit::{ChainBreak, ChainVerifier, Digest32};

use crate::{Result, Store};

/// Most mismatches a report lists; the count is always exact.
pub const MAX_REPORTED_MISMATCHES: usize = 100;
const PAGE: u32 = 1000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MismatchKind {
    /// The row exists but differs from its last audited state.
    Edited,
    /// The row exists but no audit record ever created it.
    NotAudited,
    /// The audit log says the row exists, but it does not.
    Missing,
    /// Audit record `seq` changed the row from another state than the log last gave it:
    /// it was deleted or edited outside Strongroom in between (and its key reused).
    Rewritten { seq: u64 },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateMismatch {
    pub entity: String,
    pub kind: MismatchKind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditReport {
    /// Records that verified before the first break (all of them when there is none).
    pub records: u64,
    /// Leaf hash of the last verified record.
    pub head: Digest32,
    pub chain_break: Option<ChainBreak>,
    pub mismatch_count: usize,
    pub mismatches: Vec<StateMismatch>,
}

impl AuditReport {
    pub fn is_intact(&self) -> bool {
        self.chain_break.is_none() && self.mismatch_count == 0
    }
}

pub async fn verify_audit(store: &dyn Store) -> Result<AuditReport> {
    // A server may commit between reading the log and reading the rows: a row then looks
    // newer than its last audited state. When the log grew during a pass, the pass is
    // repeated; a row edited outside Strongroom stays different however often it is read.
    let mut attempt = 0;
    loop {
        let (report, last_seq) = verify_pass(store).await?;
        attempt += 1;
        let grew = !store.audit_page(last_seq, 1).await?.is_empty();
        if report.mismatch_count == 0 || report.chain_break.is_some() || !grew || attempt >= 20 {
            return Ok(report);
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
}

/// One pass: the report and the last sequence number read.
async fn verify_pass(store: &dyn Store) -> Result<(AuditReport, u64)> {
    let mut verifier = ChainVerifier::default();
    let mut audited: BTreeMap<String, Option<Digest32>> = BTreeMap::new();
    let mut rewritten: Vec<(String, u64)> = Vec::new();
    let mut after = 0u64;
    let mut chain_break = None;
    'pages: loop {
        let page = store.audit_page(after, PAGE).await?;
        let Some(last) = page.last() else { break };
        after = last.record.seq;
        for stored in &page {
            if let Err(b) = verifier.push(&stored.record, stored.leaf_hash) {
                chain_break = Some(b);
                break 'pages;
            }
            for c in &stored.record.changes {
                let prior = audited.insert(c.entity.clone(), c.after);
                if let Some(Some(was)) = prior {
                    if c.before != Some(was) {
                        rewritten.push((c.entity.clone(), stored.record.seq));
                    }
                }
            }
        }
    }
    let mut mismatches = Vec::new();
    let mut mismatch_count = 0usize;
    let mut note = |entity: String, kind: MismatchKind| {
        mismatch_count += 1;
        if mismatches.len() < MAX_REPORTED_MISMATCHES {
            mismatches.push(StateMismatch { entity, kind });
        }
    };
    // States are compared only against an intact chain: after a break nothing in the log
    // can be trusted, and the break is the finding.
    if chain_break.is_none() {
        for (entity, seq) in rewritten {
            note(entity, MismatchKind::Rewritten { seq });
        }
        for (entity, hash) in store.entity_states().await? {
            match audited.remove(&entity) {
                Some(Some(expected)) if expected == hash => {}
                Some(_) => note(entity, MismatchKind::Edited),
                None => note(entity, MismatchKind::NotAudited),
            }
        }
        for (entity, after) in audited {
            if after.is_some() {
                note(entity, MismatchKind::Missing);
            }
        }
    }
    let report = AuditReport {
        records: verifier.count(),
        head: verifier.head(),
        chain_break,
        mismatch_count,
        mismatches,
    };
    Ok((report, after))
}
