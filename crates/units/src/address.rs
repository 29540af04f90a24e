//! Destination addresses, validated and normalised per chain family.
//!
//! Ethereum: `0x` + 40 hex digits; a mixed-case address must carry a valid EIP-55 checksum,
//! and every address is stored in its EIP-55 form. Bitcoin: SegWit addresses (BIP-173
//! bech32 for v0, BIP-350 bech32m for v1+) whose human-readable part matches the network;
//! stored in lower case.

use std::fmt;

use serde::{Deserialize, Serialize};
use sha3::{Digest, Keccak256};

use crate::chain::{ChainFamily, ChainId, BITCOIN_MAINNET, BITCOIN_TESTNET};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AddressError {
    #[error("not an Ethereum address: expected 0x followed by 40 hex digits")]
    EthereumFormat,
    #[error("Ethereum address checksum (EIP-55) does not match: check for a typo")]
    EthereumChecksum,
    #[error("not a Bitcoin SegWit address: {0}")]
    BitcoinFormat(String),
    #[error("address is not in its canonical form")]
    NotCanonical,
    #[error("Bitcoin address is for network {found:?}, but this asset is on {expected:?}")]
    BitcoinNetwork { expected: String, found: String },
}

/// A validated address in its canonical form for its chain.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "RawAddress")]
pub struct Address {
    family: ChainFamily,
    canonical: String,
}

impl Address {
    pub fn parse(chain: &ChainId, text: &str) -> Result<Self, AddressError> {
        let canonical = match chain.family() {
            ChainFamily::Ethereum => parse_ethereum(text)?,
            ChainFamily::Bitcoin => parse_bitcoin(chain, text)?,
        };
        Ok(Address { family: chain.family(), canonical })
    }
    pub fn family(&self) -> ChainFamily {
        self.family
    }
    pub fn as_str(&self) -> &str {
        &self.canonical
    }
}

/// The unchecked wire form; deserializing an [`Address`] validates it and requires the
/// canonical form, so stored or transmitted addresses cannot smuggle in a variant.
#[derive(Deserialize)]
struct RawAddress {
    family: ChainFamily,
    canonical: String,
}

impl TryFrom<RawAddress> for Address {
    type Error = AddressError;
    fn try_from(raw: RawAddress) -> Result<Self, Self::Error> {
        let canonical = match raw.family {
            ChainFamily::Ethereum => parse_ethereum(&raw.canonical)?,
            ChainFamily::Bitcoin => {
                bech32::segwit::decode(&raw.canonical)
                    .map_err(|e| AddressError::BitcoinFormat(e.to_string()))?;
                raw.canonical.to_ascii_lowercase()
            }
        };
        if canonical != raw.canonical {
            return Err(AddressError::NotCanonical);
        }
        Ok(Address { family: raw.family, canonical })
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.canonical)
    }
}

impl fmt::Debug for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Address({})", self.canonical)
    }
}

/// EIP-55: upper-case each hex letter whose nibble in keccak256(lowercase hex) is >= 8.
pub fn eip55_checksum(lower_hex40: &str) -> String {
    let hash = Keccak256::digest(lower_hex40.as_bytes());
    let mut out = String::with_capacity(42);
    out.push_str("0x");
    for (i, c) in lower_hex40.chars().enumerate() {
        let byte = hash.get(i / 2).copied().unwrap_or(0);
        let nibble = if i % 2 == 0 { byte >> 4 } else { byte & 0x0f };
        if c.is_ascii_alphabetic() && nibble >= 8 {
            out.push(c.to_ascii_uppercase());
        } else {
            out.push(c);
        }
    }
    out
}

fn parse_ethereum(text: &str) -> Result<String, AddressError> {
    let hex = text.strip_prefix("0x").ok_or(AddressError::EthereumFormat)?;
    if hex.len() != 40 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(AddressError::EthereumFormat);
    }
    let lower = hex.to_ascii_lowercase();
    let checksummed = eip55_checksum(&lower);
    let has_lower = hex.bytes().any(|b| b.is_ascii_lowercase());
    let has_upper = hex.bytes().any(|b| b.is_ascii_uppercase());
    // A single-case address carries no checksum; a mixed-case one must match exactly.
    if has_lower && has_upper && checksummed.get(2..) != Some(hex) {
        return Err(AddressError::EthereumChecksum);
    }
    Ok(checksummed)
}

fn parse_bitcoin(chain: &ChainId, text: &str) -> Result<String, AddressError> {
    let (hrp, _version, _program) =
        bech32::segwit::decode(text).map_err(|e| AddressError::BitcoinFormat(e.to_string()))?;
    let expected = match chain.as_str() {
        BITCOIN_MAINNET => "bc",
        BITCOIN_TESTNET => "tb",
        _ => "bcrt",
    };
    // Upper-case bech32 is valid (QR codes use it); the network prefix compares in lower case.
    let found = hrp.as_str().to_ascii_lowercase();
    if found != expected {
        return Err(AddressError::BitcoinNetwork { expected: expected.into(), found });
    }
    Ok(text.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eth() -> ChainId {
        ChainId::parse("eip155:1").unwrap()
    }

    /// The test vectors published in EIP-55.
    const EIP55_VECTORS: [&str; 8] = [
        "0x52908400098527886E0F7030069857D2E4169EE7",
        "0x8617E340B3D01FA5F11F306F4090FD50E238070D",
        "0xde709f2102306220921060314715629080e2fb77",
        "0x27b1fdb04752bbc536007a920d24acb045561c26",
        "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed",
        "0xfB6916095ca1df60bB79Ce92cE3Ea74c37c5d359",
        "0xdbF03B407c01E7cD3CBea99509d93f8DDDC8C6FB",
        "0xD1220A0cf47c7B9Be7A2E6BA89F429762e7b9aDb",
    ];

    #[test]
    fn eip55_vectors_round_trip() {
        for v in EIP55_VECTORS {
            let parsed = Address::parse(&eth(), v).unwrap();
            // All-caps and all-lower vectors normalise to the checksum form of the same bytes.
            assert_eq!(parsed.as_str().to_ascii_lowercase(), v.to_ascii_lowercase());
            if v.get(2..).is_some_and(|h| {
                h.bytes().any(|b| b.is_ascii_lowercase())
                    && h.bytes().any(|b| b.is_ascii_uppercase())
            }) {
                assert_eq!(parsed.as_str(), v);
            }
        }
    }

    #[test]
    fn eip55_bad_checksum_is_refused() {
        // One letter's case flipped.
        let bad = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAeD";
        assert_eq!(Address::parse(&eth(), bad), Err(AddressError::EthereumChecksum));
        assert_eq!(Address::parse(&eth(), "0x1234"), Err(AddressError::EthereumFormat));
        assert_eq!(
            Address::parse(&eth(), "5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed"),
            Err(AddressError::EthereumFormat)
        );
    }

    #[test]
    fn deserializing_validates() {
        let ok =
            r#"{"family":"ethereum","canonical":"0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed"}"#;
        assert!(serde_json::from_str::<Address>(ok).is_ok());
        let lower =
            r#"{"family":"ethereum","canonical":"0x5aaeb6053f3e94c9b9a09f33669435e7ef1beaed"}"#;
        assert!(serde_json::from_str::<Address>(lower).is_err());
        let junk = r#"{"family":"bitcoin","canonical":"bc1qnotanaddress"}"#;
        assert!(serde_json::from_str::<Address>(junk).is_err());
    }

    #[test]
    fn bip173_and_bip350_vectors() {
        let main = ChainId::parse(BITCOIN_MAINNET).unwrap();
        // BIP-173 valid P2WPKH and BIP-350 valid P2TR.
        assert!(Address::parse(&main, "BC1QW508D6QEJXTDG4Y5R3ZARVARY0C5XW7KV8F3T4").is_ok());
        assert!(Address::parse(
            &main,
            "bc1p0xlxvlhemja6c4dqv22uapctqupfhlxm9h8z3k2e72q4k9hcz7vqzk5jj0"
        )
        .is_ok());
        // BIP-350: a v1 address encoded with bech32 (not bech32m) is invalid.
        assert!(Address::parse(
            &main,
            "bc1pw508d6qejxtdg4y5r3zarvary0c5xw7kw508d6qejxtdg4y5r3zarvary0c5xw7k7grplx"
        )
        .is_err());
        // Wrong network.
        assert!(matches!(
            Address::parse(&main, "tb1qrp33g0q5c5txsp9arysrx4k6zdkfs4nce4xj0gdcccefvpysxf3q0sl5k7"),
            Err(AddressError::BitcoinNetwork { .. })
        ));
        // Mixed case is invalid in bech32.
        assert!(Address::parse(&main, "bc1QW508D6QEJXTDG4Y5R3ZARVARY0C5XW7KV8F3T4").is_err());
    }
}
