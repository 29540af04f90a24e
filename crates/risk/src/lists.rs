//! Sanctions and scam address lists, normalised per chain so one address matches however it
//! is written: `0x` hex (Ethereum and its kin) and bech32 (`bc1…`, `tb1…`, `ltc1…`) compare
//! without case; base58 and other encodings compare exactly.

use std::collections::HashMap;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ListKind {
    /// A hit blocks the withdrawal.
    Sanctions,
    /// Known scam or phishing addresses: a hit blocks too (no customer meant to pay them).
    Scam,
}

impl ListKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ListKind::Sanctions => "sanctions",
            ListKind::Scam => "scam",
        }
    }
}

/// Why an address is listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListHit {
    pub kind: ListKind,
    /// The list it came from (its file name).
    pub source: String,
    /// The list's own label for it, if any.
    pub label: String,
}

#[derive(Debug, Clone, Default)]
pub struct Lists {
    entries: HashMap<String, ListHit>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{list}: {reason}")]
pub struct ListError {
    pub list: String,
    pub reason: String,
}

/// The form addresses are compared in.
pub fn normalize(address: &str) -> String {
    let a = address.trim();
    let lower = a.to_ascii_lowercase();
    let bech32 = ["bc1", "tb1", "bcrt1", "ltc1", "tltc1"].iter().any(|p| lower.starts_with(p));
    if lower.starts_with("0x") || bech32 {
        lower
    } else {
        a.to_owned()
    }
}

impl Lists {
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Add a list with one address a line (blank lines and `#` comments skipped). Sanctions
    /// win over scam labels for an address on both.
    pub fn add_lines(&mut self, kind: ListKind, source: &str, text: &str) -> usize {
        let mut n = 0;
        for line in text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
            self.insert(
                normalize(line),
                ListHit { kind, source: source.to_owned(), label: String::new() },
            );
            n += 1;
        }
        n
    }

    /// Add a CSV list whose address column is `address` or `banned_address` (a label from
    /// `etherscan_tag`, `wallet_tag` or `label` when present).
    pub fn add_csv(
        &mut self,
        kind: ListKind,
        source: &str,
        text: &str,
    ) -> Result<usize, ListError> {
        let err = |reason: String| ListError { list: source.to_owned(), reason };
        let mut r = csv::ReaderBuilder::new().trim(csv::Trim::All).from_reader(text.as_bytes());
        let headers: Vec<String> =
            r.headers().map_err(|e| err(e.to_string()))?.iter().map(str::to_owned).collect();
        let find = |names: &[&str]| headers.iter().position(|h| names.contains(&h.as_str()));
        let at = find(&["address", "banned_address"])
            .ok_or_else(|| err(format!("no address column (columns: {})", headers.join(", "))))?;
        let label_at = find(&["etherscan_tag", "wallet_tag", "label"]);
        let mut n = 0;
        for rec in r.records() {
            let rec = rec.map_err(|e| err(e.to_string()))?;
            let Some(address) = rec.get(at).filter(|a| !a.is_empty()) else { continue };
            let label = label_at.and_then(|i| rec.get(i)).unwrap_or_default().to_owned();
            self.insert(normalize(address), ListHit { kind, source: source.to_owned(), label });
            n += 1;
        }
        Ok(n)
    }

    fn insert(&mut self, key: String, hit: ListHit) {
        match self.entries.get(&key) {
            Some(old) if old.kind <= hit.kind => {}
            _ => {
                self.entries.insert(key, hit);
            }
        }
    }

    pub fn check(&self, address: &str) -> Option<&ListHit> {
        self.entries.get(&normalize(address))
    }
}
