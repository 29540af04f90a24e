//! The intent: a chain-agnostic description of one movement of funds, and its hash.
//!
//! Approvers sign the intent hash; every signer decodes the raw transaction, rebuilds the
//! intent and recomputes the hash. So the encoding is canonical (one byte string per intent,
//! one intent per byte string), versioned, and the hash is domain-separated.
//!
//! # Encoding, version 1 (see `docs/adr/0002-intent-encoding.md`)
//! ```text
//! version        u8 = 1
//! chain          str   CAIP-2 chain id
//! asset.symbol   str
//! asset.decimals u8
//! asset.contract str   canonical contract address, "" for a native coin
//! source_wallet  str
//! destination    str   canonical address for the chain (EIP-55, lower-case bech32)
//! amount         u128  big-endian, base units
//! fee_cap        u128  big-endian, base units of the chain's fee asset
//! expires_at     i64   big-endian, Unix milliseconds
//! request_id     [16]  UUID bytes
//! ```
//! `str` is a big-endian u16 byte length followed by that many UTF-8 bytes. Nothing may
//! follow the last field.
//!
//! # Hash
//! `SHA-256(SHA-256(tag) || SHA-256(tag) || encoding)` with `tag = "strongroom/intent/v1"`:
//! the BIP-340 tagged-hash construction, so an intent hash can never collide with a hash of
//! another kind of message.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use strongroom_units::{Address, Amount, AssetSymbol, ChainId};
use uuid::Uuid;

use crate::env::Timestamp;

pub const INTENT_VERSION: u8 = 1;
pub const INTENT_HASH_TAG: &str = "strongroom/intent/v1";
/// Longest string field, in bytes.
pub const MAX_FIELD_LEN: usize = 256;

/// A wallet's identifier, e.g. `hot-eth-1`: lower-case letters, digits and dashes.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct WalletId(String);

impl WalletId {
    pub fn parse(text: &str) -> Result<Self, IntentError> {
        let ok = (1..=64).contains(&text.len())
            && text.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if ok {
            Ok(WalletId(text.to_owned()))
        } else {
            Err(IntentError::BadWalletId)
        }
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}
impl TryFrom<String> for WalletId {
    type Error = IntentError;
    fn try_from(v: String) -> Result<Self, Self::Error> {
        WalletId::parse(&v)
    }
}
impl From<WalletId> for String {
    fn from(v: WalletId) -> Self {
        v.0
    }
}

/// What an intent says about its asset. Decimals and contract are part of the intent so a
/// signer never has to trust a registry lookup to know what "USDC" means.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IntentAsset {
    pub symbol: AssetSymbol,
    pub decimals: u8,
    pub contract: Option<Address>,
}

/// One movement of funds, independent of how a chain encodes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Intent {
    pub chain: ChainId,
    pub asset: IntentAsset,
    pub source_wallet: WalletId,
    pub destination: Address,
    pub amount: Amount,
    pub fee_cap: Amount,
    pub expires_at: Timestamp,
    pub request_id: Uuid,
}

/// A 32-byte intent hash.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IntentHash(pub [u8; 32]);

impl IntentHash {
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}
impl std::fmt::Debug for IntentHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "IntentHash({})", self.to_hex())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IntentError {
    #[error("intent encoding is truncated")]
    Truncated,
    #[error("intent encoding has {0} bytes after its last field")]
    TrailingBytes(usize),
    #[error("intent version {0} is not supported (this build reads version {INTENT_VERSION})")]
    UnsupportedVersion(u8),
    #[error("intent field {0} is longer than {MAX_FIELD_LEN} bytes")]
    FieldTooLong(&'static str),
    #[error("intent field {field} is invalid: {reason}")]
    InvalidField { field: &'static str, reason: String },
    #[error("wallet id must be 1-64 lower-case letters, digits or dashes")]
    BadWalletId,
}

impl Intent {
    /// The canonical version-1 encoding. What [`Intent::decode`] would refuse is refused
    /// here too, so every encoding decodes back to its intent: an intent read from JSON (a
    /// signing bundle) may carry any `u8` as its decimals, and addresses of another chain.
    pub fn encode(&self) -> Result<Vec<u8>, IntentError> {
        if self.asset.decimals > strongroom_units::MAX_DECIMALS {
            return Err(IntentError::InvalidField {
                field: "asset.decimals",
                reason: format!("{} is too many", self.asset.decimals),
            });
        }
        if let Some(contract) = &self.asset.contract {
            canonical_address(&self.chain, contract.as_str(), "asset.contract")?;
        }
        canonical_address(&self.chain, self.destination.as_str(), "destination")?;
        let mut out = Vec::with_capacity(256);
        out.push(INTENT_VERSION);
        put_str(&mut out, "chain", self.chain.as_str())?;
        put_str(&mut out, "asset.symbol", self.asset.symbol.as_str())?;
        out.push(self.asset.decimals);
        put_str(
            &mut out,
            "asset.contract",
            self.asset.contract.as_ref().map_or("", |c| c.as_str()),
        )?;
        put_str(&mut out, "source_wallet", self.source_wallet.as_str())?;
        put_str(&mut out, "destination", self.destination.as_str())?;
        out.extend_from_slice(&self.amount.base_units().to_be_bytes());
        out.extend_from_slice(&self.fee_cap.base_units().to_be_bytes());
        out.extend_from_slice(&self.expires_at.unix_ms().to_be_bytes());
        out.extend_from_slice(self.request_id.as_bytes());
        Ok(out)
    }

    /// Decode a canonical encoding. Anything that would not re-encode to the same bytes
    /// (a non-canonical address, trailing bytes, an unknown version) is refused.
    pub fn decode(bytes: &[u8]) -> Result<Self, IntentError> {
        let mut r = Reader { bytes, pos: 0 };
        let version = r.u8()?;
        if version != INTENT_VERSION {
            return Err(IntentError::UnsupportedVersion(version));
        }
        let invalid =
            |field: &'static str, reason: String| IntentError::InvalidField { field, reason };
        let chain = ChainId::parse(r.str()?).map_err(|e| invalid("chain", e.to_string()))?;
        let symbol =
            AssetSymbol::parse(r.str()?).map_err(|e| invalid("asset.symbol", e.to_string()))?;
        let decimals = r.u8()?;
        if decimals > strongroom_units::MAX_DECIMALS {
            return Err(invalid("asset.decimals", format!("{decimals} is too many")));
        }
        let contract = match r.str()? {
            "" => None,
            c => Some(canonical_address(&chain, c, "asset.contract")?),
        };
        let source_wallet = WalletId::parse(r.str()?)?;
        let destination = canonical_address(&chain, r.str()?, "destination")?;
        let amount =
            Amount::from_base_units(r.u128()?).map_err(|e| invalid("amount", e.to_string()))?;
        let fee_cap =
            Amount::from_base_units(r.u128()?).map_err(|e| invalid("fee_cap", e.to_string()))?;
        let expires_at = Timestamp::from_unix_ms(r.i64()?);
        let request_id = Uuid::from_bytes(r.array16()?);
        if r.pos != bytes.len() {
            return Err(IntentError::TrailingBytes(bytes.len().saturating_sub(r.pos)));
        }
        Ok(Intent {
            chain,
            asset: IntentAsset { symbol, decimals, contract },
            source_wallet,
            destination,
            amount,
            fee_cap,
            expires_at,
            request_id,
        })
    }

    pub fn hash(&self) -> Result<IntentHash, IntentError> {
        Ok(hash_encoded(&self.encode()?))
    }
}

/// The tagged hash of an already-encoded intent.
pub fn hash_encoded(encoding: &[u8]) -> IntentHash {
    let tag = Sha256::digest(INTENT_HASH_TAG.as_bytes());
    let mut h = Sha256::new();
    h.update(tag);
    h.update(tag);
    h.update(encoding);
    IntentHash(h.finalize().into())
}

fn canonical_address(
    chain: &ChainId,
    text: &str,
    field: &'static str,
) -> Result<Address, IntentError> {
    let a = Address::parse(chain, text)
        .map_err(|e| IntentError::InvalidField { field, reason: e.to_string() })?;
    if a.as_str() != text {
        return Err(IntentError::InvalidField {
            field,
            reason: "address is not in canonical form".into(),
        });
    }
    Ok(a)
}

fn put_str(out: &mut Vec<u8>, field: &'static str, s: &str) -> Result<(), IntentError> {
    if s.len() > MAX_FIELD_LEN {
        return Err(IntentError::FieldTooLong(field));
    }
    let len = u16::try_from(s.len()).map_err(|_| IntentError::FieldTooLong(field))?;
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(s.as_bytes());
    Ok(())
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], IntentError> {
        let end = self.pos.checked_add(n).ok_or(IntentError::Truncated)?;
        let s = self.bytes.get(self.pos..end).ok_or(IntentError::Truncated)?;
        self.pos = end;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8, IntentError> {
        self.take(1)?.first().copied().ok_or(IntentError::Truncated)
    }
    fn fixed<const N: usize>(&mut self) -> Result<[u8; N], IntentError> {
        self.take(N)?.try_into().map_err(|_| IntentError::Truncated)
    }
    fn u128(&mut self) -> Result<u128, IntentError> {
        Ok(u128::from_be_bytes(self.fixed()?))
    }
    fn i64(&mut self) -> Result<i64, IntentError> {
        Ok(i64::from_be_bytes(self.fixed()?))
    }
    fn array16(&mut self) -> Result<[u8; 16], IntentError> {
        self.fixed()
    }
    fn str(&mut self) -> Result<&'a str, IntentError> {
        let len = usize::from(u16::from_be_bytes(self.fixed()?));
        if len > MAX_FIELD_LEN {
            return Err(IntentError::FieldTooLong("string"));
        }
        std::str::from_utf8(self.take(len)?)
            .map_err(|_| IntentError::InvalidField { field: "string", reason: "not UTF-8".into() })
    }
}
