//! The signer refusal codes documented in ADR 0010 are exactly the codes the nodes send.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)] // Test code.

use strongroom_core::TxRefusal;
use strongroom_governance::refusal::Reason;

/// The first column of every table row in `section` (``| `code` | …``).
fn codes(section: &str) -> Vec<&str> {
    section
        .lines()
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| l.split('`').next())
        .collect()
}

#[test]
fn the_documented_refusal_codes_are_the_codes_in_the_code() {
    let adr = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../docs/adr/0010-signers-decide.md"),
    )
    .unwrap();
    let section = adr.split("## Typed refusals").nth(1).expect("a Typed refusals section");
    let section = section.split("\n## ").next().unwrap();
    let (reasons, shapes) =
        section.split_once("\n### Transaction shapes").expect("a Transaction shapes table");
    assert_eq!(
        codes(reasons),
        Reason::CODES,
        "docs/adr/0010-signers-decide.md and Reason::CODES differ"
    );
    assert_eq!(
        codes(shapes),
        TxRefusal::CODES,
        "docs/adr/0010-signers-decide.md and TxRefusal::CODES differ"
    );
}
