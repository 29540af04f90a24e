//! Published intent test vectors: `tests/vectors/intent-v1.json`.
//!
//! Each vector gives an intent, its canonical encoding and its hash. Another implementation
//! (an approver's device, a signer in another language) must produce the same bytes. Run
//! with `STRONGROOM_WRITE_VECTORS=1` to rewrite the file after a deliberate format change,
//! which must also bump the intent version.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::print_stdout,
    clippy::print_stderr
)] // Test code.

use serde::{Deserialize, Serialize};
use strongroom_core::intent::{hash_encoded, Intent, IntentError};

#[derive(Debug, Serialize, Deserialize)]
struct Vector {
    description: String,
    intent: Intent,
    encoding_hex: String,
    hash_hex: String,
}

#[derive(Debug, Serialize, Deserialize)]
struct Invalid {
    description: String,
    encoding_hex: String,
    error: String,
}

#[derive(Debug, Serialize, Deserialize)]
struct File {
    format: String,
    hash: String,
    valid: Vec<Vector>,
    invalid: Vec<Invalid>,
}

const PATH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/vectors/intent-v1.json");

fn intents() -> Vec<(&'static str, serde_json::Value)> {
    vec![
        (
            "native ETH on anvil",
            serde_json::json!({
                "chain": "eip155:31337",
                "asset": {"symbol": "ETH", "decimals": 18, "contract": null},
                "source_wallet": "hot-eth-1",
                "destination": {"family": "ethereum", "canonical": "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed"},
                "amount": "100000000000000000",
                "fee_cap": "21000000000000000",
                "expires_at": 1767225600000i64,
                "request_id": "5f1c7d3e-8a2b-4c6d-9e0f-1a2b3c4d5e6f"
            }),
        ),
        (
            "ERC-20 USDC on mainnet, contract named",
            serde_json::json!({
                "chain": "eip155:1",
                "asset": {"symbol": "USDC", "decimals": 6, "contract": {"family": "ethereum", "canonical": "0xA0b86991c6218b36c1d19D4a2e9Eb0cE3606eB48"}},
                "source_wallet": "hot-eth-1",
                "destination": {"family": "ethereum", "canonical": "0xfB6916095ca1df60bB79Ce92cE3Ea74c37c5d359"},
                "amount": "2500000000",
                "fee_cap": "5000000000000000",
                "expires_at": 1767225600000i64,
                "request_id": "00000000-0000-4000-8000-000000000001"
            }),
        ),
        (
            "BTC to a P2TR address, largest amount",
            serde_json::json!({
                "chain": "bip122:000000000019d6689c085ae165831e93",
                "asset": {"symbol": "BTC", "decimals": 8, "contract": null},
                "source_wallet": "cold-btc-vault",
                "destination": {"family": "bitcoin", "canonical": "bc1p0xlxvlhemja6c4dqv22uapctqupfhlxm9h8z3k2e72q4k9hcz7vqzk5jj0"},
                "amount": "99999999999999999999999999999999999999",
                "fee_cap": "100000",
                "expires_at": -1i64,
                "request_id": "ffffffff-ffff-4fff-bfff-ffffffffffff"
            }),
        ),
    ]
}

fn build() -> File {
    let valid: Vec<Vector> = intents()
        .into_iter()
        .map(|(d, json)| {
            let intent: Intent = serde_json::from_value(json).unwrap();
            let enc = intent.encode().unwrap();
            Vector {
                description: d.into(),
                hash_hex: intent.hash().unwrap().to_hex(),
                encoding_hex: hex::encode(&enc),
                intent,
            }
        })
        .collect();
    let first = hex::decode(&valid[0].encoding_hex).unwrap();
    let mut trailing = first.clone();
    trailing.push(0);
    let mut v2 = first.clone();
    v2[0] = 2;
    let truncated = first[..first.len() - 1].to_vec();
    // Destination in lower case: a valid address, but not canonical (EIP-55) form.
    let lower = hex::encode(&first).replace(
        &hex::encode("0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed"),
        &hex::encode("0x5aaeb6053f3e94c9b9a09f33669435e7ef1beaed"),
    );
    let invalid = vec![
        Invalid {
            description: "trailing byte".into(),
            encoding_hex: hex::encode(trailing),
            error: IntentError::TrailingBytes(1).to_string(),
        },
        Invalid {
            description: "unknown version".into(),
            encoding_hex: hex::encode(v2),
            error: IntentError::UnsupportedVersion(2).to_string(),
        },
        Invalid {
            description: "truncated".into(),
            encoding_hex: hex::encode(truncated),
            error: IntentError::Truncated.to_string(),
        },
        Invalid {
            description: "non-canonical destination".into(),
            encoding_hex: lower,
            error: "intent field destination is invalid: address is not in canonical form".into(),
        },
    ];
    File {
        format: "strongroom intent v1: see crates/core/src/intent.rs and docs/adr/0002-intent-encoding.md".into(),
        hash: "SHA-256(SHA-256(tag) || SHA-256(tag) || encoding), tag = \"strongroom/intent/v1\"".into(),
        valid,
        invalid,
    }
}

#[test]
fn published_vectors_match_this_implementation() {
    let built = build();
    if std::env::var_os("STRONGROOM_WRITE_VECTORS").is_some() {
        std::fs::write(PATH, serde_json::to_string_pretty(&built).unwrap() + "\n").unwrap();
    }
    let published: File = serde_json::from_str(&std::fs::read_to_string(PATH).unwrap()).unwrap();
    assert_eq!(published.valid.len(), 3);
    for v in &published.valid {
        let enc = v.intent.encode().unwrap();
        assert_eq!(hex::encode(&enc), v.encoding_hex, "{}", v.description);
        assert_eq!(v.intent.hash().unwrap().to_hex(), v.hash_hex, "{}", v.description);
        assert_eq!(hash_encoded(&enc).to_hex(), v.hash_hex);
        assert_eq!(Intent::decode(&enc).unwrap(), v.intent, "{}", v.description);
    }
    for v in &published.invalid {
        let err = Intent::decode(&hex::decode(&v.encoding_hex).unwrap()).unwrap_err();
        assert_eq!(err.to_string(), v.error, "{}", v.description);
    }
}

#[test]
fn every_field_changes_the_hash() {
    let base: Intent = serde_json::from_value(intents()[1].1.clone()).unwrap();
    let h = base.hash().unwrap();
    let mut variants = Vec::new();
    let mut i = base.clone();
    i.amount = strongroom_units::Amount::from_base_units(2500000001).unwrap();
    variants.push(i);
    let mut i = base.clone();
    i.fee_cap = strongroom_units::Amount::from_base_units(1).unwrap();
    variants.push(i);
    let mut i = base.clone();
    i.expires_at = strongroom_core::Timestamp::from_unix_ms(1);
    variants.push(i);
    let mut i = base.clone();
    i.request_id = uuid::Uuid::nil();
    variants.push(i);
    let mut i = base.clone();
    i.asset.decimals = 18;
    variants.push(i);
    let mut i = base.clone();
    i.asset.contract = None;
    variants.push(i);
    let mut i = base.clone();
    i.chain = strongroom_units::ChainId::parse("eip155:10").unwrap();
    variants.push(i);
    let mut i = base.clone();
    i.source_wallet = strongroom_core::WalletId::parse("hot-eth-2").unwrap();
    variants.push(i);
    for v in variants {
        assert_ne!(v.hash().unwrap(), h, "{v:?}");
    }
}

/// Found by fuzzing (`fuzz/corpus/intent`): an intent read from JSON with 81 decimals, or
/// with another chain's address, encoded to bytes that `decode` refuses, so it had a hash no
/// signer could ever recompute. `encode` now refuses what `decode` refuses.
#[test]
fn an_intent_that_would_not_decode_does_not_encode() {
    let base: Intent = serde_json::from_value(intents()[0].1.clone()).unwrap();
    let mut i = base.clone();
    i.asset.decimals = 81;
    assert!(matches!(i.encode(), Err(IntentError::InvalidField { field: "asset.decimals", .. })));
    assert!(i.hash().is_err());
    let mut i = base.clone();
    let bitcoin =
        strongroom_units::ChainId::parse("bip122:000000000019d6689c085ae165831e93").unwrap();
    i.destination =
        strongroom_units::Address::parse(&bitcoin, "bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4")
            .unwrap();
    assert!(matches!(i.encode(), Err(IntentError::InvalidField { field: "destination", .. })));
    let enc = base.encode().unwrap();
    assert_eq!(Intent::decode(&enc).unwrap(), base);
}
