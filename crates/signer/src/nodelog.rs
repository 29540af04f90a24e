//! Each node's own audit log: what it generated, signed, refused and why sessions failed
//! (with the culprits), as hash-chained `strongroom-audit` records, one JSON line each, in
//! `DATA/audit.jsonl`. It lives beside the shares, not in the shared database, so a
//! compromised orchestrator or database cannot rewrite what a signer did. `strongroom audit
//! verify-node FILE` checks the chain.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use strongroom_audit::{AuditRecord, ChainVerifier, Digest32};

#[derive(Serialize, Deserialize)]
struct Line {
    record: AuditRecord,
    leaf: Digest32,
}

#[derive(Debug)]
struct Head {
    seq: u64,
    prev: Digest32,
}

#[derive(Debug)]
pub struct NodeLog {
    path: PathBuf,
    actor: String,
    head: Mutex<Head>,
}

/// Verify a node log; returns the number of records and the head hash.
pub fn verify(path: &Path) -> anyhow::Result<(u64, Digest32)> {
    let mut v = ChainVerifier::default();
    read(path, |record, leaf| v.push(record, leaf).map_err(|e| anyhow::anyhow!("{e}")))?;
    Ok((v.count(), v.head()))
}

/// Every record of a node log, after checking the whole chain.
pub fn records(path: &Path) -> anyhow::Result<Vec<AuditRecord>> {
    let mut v = ChainVerifier::default();
    let mut all = Vec::new();
    read(path, |record, leaf| {
        v.push(record, leaf).map_err(|e| anyhow::anyhow!("{e}"))?;
        all.push(record.clone());
        Ok(())
    })?;
    Ok(all)
}

fn read(
    path: &Path,
    mut each: impl FnMut(&AuditRecord, Digest32) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let f = std::fs::File::open(path)?;
    for (i, line) in std::io::BufReader::new(f).lines().enumerate() {
        let line = line?;
        let parsed: Line = serde_json::from_str(&line)
            .map_err(|e| anyhow::anyhow!("line {}: not an audit record: {e}", i + 1))?;
        each(&parsed.record, parsed.leaf)?;
    }
    Ok(())
}

impl NodeLog {
    /// Open (or create) the log and check its chain. A last line cut short by a crash is
    /// dropped; any other damage stops the node.
    pub fn open(path: &Path, node: u16) -> anyhow::Result<Self> {
        if path.exists() {
            let text = std::fs::read_to_string(path)?;
            if !text.is_empty() && !text.ends_with('\n') {
                let keep = text.rfind('\n').map(|i| i + 1).unwrap_or(0);
                tracing::warn!(node, "audit log ends in a partial record (a crash?); dropping it");
                let f = std::fs::OpenOptions::new().write(true).open(path)?;
                f.set_len(u64::try_from(keep)?)?;
                f.sync_all()?;
            }
        }
        let (seq, prev) = if path.exists() {
            verify(path).map_err(|e| {
                anyhow::anyhow!("{}: the node's audit log does not verify: {e}", path.display())
            })?
        } else {
            (0, Digest32::ZERO)
        };
        Ok(NodeLog {
            path: path.to_path_buf(),
            actor: format!("signer:{node}"),
            head: Mutex::new(Head { seq, prev }),
        })
    }

    /// Append one record (synced before returning).
    pub fn append(
        &self,
        at_ms: i64,
        action: &str,
        subject: &str,
        detail: serde_json::Value,
    ) -> anyhow::Result<()> {
        let mut head = self.head.lock().map_err(|_| anyhow::anyhow!("audit log lock"))?;
        let record = AuditRecord {
            seq: head.seq + 1,
            at_ms,
            actor: self.actor.clone(),
            action: action.to_string(),
            subject: subject.to_string(),
            changes: vec![],
            detail: detail.to_string(),
            prev_hash: head.prev,
        };
        let leaf = record.leaf_hash()?;
        let mut line = serde_json::to_string(&Line { record, leaf })?;
        line.push('\n');
        let mut f = std::fs::OpenOptions::new().create(true).append(true).open(&self.path)?;
        f.write_all(line.as_bytes())?;
        f.sync_data()?;
        head.seq += 1;
        head.prev = leaf;
        Ok(())
    }
}
