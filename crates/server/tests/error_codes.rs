//! Every error code the API's source can send is in the table of `docs/adr/0004-error-codes.md`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)] // Test code.

use std::collections::BTreeSet;
use std::path::Path;

/// The codes in the ADR's table: every backticked word of each row's first column.
fn documented() -> BTreeSet<String> {
    let adr = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/adr/0004-error-codes.md"),
    )
    .unwrap();
    adr.lines()
        .filter_map(|l| l.strip_prefix("| "))
        .filter_map(|l| l.split(" |").next())
        .flat_map(|first| {
            first.split('`').skip(1).step_by(2).map(str::to_owned).collect::<Vec<_>>()
        })
        .collect()
}

/// The first string literal of every `ApiError::…(` call (after an optional status).
fn used(dir: &Path, out: &mut BTreeSet<(String, String)>) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let p = entry.path();
        if p.is_dir() {
            used(&p, out);
            continue;
        }
        let text = std::fs::read_to_string(&p).unwrap();
        for (i, _) in text.match_indices("ApiError::") {
            let rest = &text[i + "ApiError::".len()..];
            let Some(q) = rest.find('"') else { continue };
            let head = &rest[..q];
            // Only `name(` then whitespace and an optional `StatusCode::X,` before the quote.
            let Some(open) = head.find('(') else { continue };
            let name = &head[..open];
            let args = head[open + 1..].trim();
            let args = args.strip_prefix("StatusCode::").map_or(args, |a| {
                a.trim_start_matches(|c: char| c.is_ascii_uppercase() || c == '_')
                    .trim_start_matches(',')
                    .trim()
            });
            // `internal(…)` takes a message for the log; its code is always `internal`.
            let named = name.chars().all(|c| c.is_ascii_lowercase() || c == '_');
            if !named || name == "internal" || !args.is_empty() {
                continue;
            }
            let code: String = rest[q + 1..].chars().take_while(|c| *c != '"').collect();
            if code.chars().all(|c| c.is_ascii_lowercase() || c == '_') && !code.is_empty() {
                out.insert((code, p.display().to_string()));
            }
        }
    }
}

#[test]
fn every_code_the_api_sends_is_documented() {
    let doc = documented();
    assert!(doc.contains("unauthorized") && doc.contains("credit_not_governed"), "{doc:?}");
    let mut found = BTreeSet::new();
    used(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"), &mut found);
    assert!(found.len() > 40, "the scan finds the API's codes: {found:?}");
    let missing: Vec<_> = found.iter().filter(|(c, _)| !doc.contains(c)).collect();
    assert!(missing.is_empty(), "codes missing from docs/adr/0004-error-codes.md: {missing:?}");
}
