//! Chains, assets and the asset registry.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::address::{Address, AddressError};
use crate::amount::{Amount, AmountError, MAX_DECIMALS};

/// A chain named by its CAIP-2 id (`namespace:reference`), e.g. `eip155:1` for Ethereum
/// mainnet or `bip122:000000000019d6689c085ae165831e93` for Bitcoin mainnet.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ChainId(String);

/// Bitcoin networks by the CAIP-2 reference (the first 16 bytes of the genesis block hash).
pub const BITCOIN_MAINNET: &str = "bip122:000000000019d6689c085ae165831e93";
pub const BITCOIN_TESTNET: &str = "bip122:000000000933ea01ad0ee984209779ba";
pub const BITCOIN_REGTEST: &str = "bip122:0f9188f13cb7b2c71f2a335e3a4fc328";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ChainError {
    #[error("chain id {0:?} is not a CAIP-2 id this build knows (eip155:<n> or bip122:<genesis>)")]
    Unknown(String),
}

/// The chain families Strongroom has adapters for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChainFamily {
    Ethereum,
    Bitcoin,
}

impl ChainId {
    pub fn parse(text: &str) -> Result<Self, ChainError> {
        let unknown = || ChainError::Unknown(text.chars().take(80).collect());
        let (namespace, reference) = text.split_once(':').ok_or_else(unknown)?;
        match namespace {
            "eip155" => {
                let ok = !reference.is_empty()
                    && reference.len() <= 20
                    && reference.bytes().all(|b| b.is_ascii_digit())
                    && !reference.starts_with('0')
                    && reference.parse::<u64>().is_ok();
                if !ok {
                    return Err(unknown());
                }
            }
            "bip122" => {
                if ![BITCOIN_MAINNET, BITCOIN_TESTNET, BITCOIN_REGTEST].contains(&text) {
                    return Err(unknown());
                }
            }
            _ => return Err(unknown()),
        }
        Ok(ChainId(text.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn family(&self) -> ChainFamily {
        if self.0.starts_with("eip155:") {
            ChainFamily::Ethereum
        } else {
            ChainFamily::Bitcoin
        }
    }

    /// The EIP-155 chain id, for Ethereum-family chains.
    pub fn eip155_id(&self) -> Option<u64> {
        self.0.strip_prefix("eip155:").and_then(|r| r.parse().ok())
    }
}

impl TryFrom<String> for ChainId {
    type Error = ChainError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        ChainId::parse(&value)
    }
}

impl From<ChainId> for String {
    fn from(value: ChainId) -> Self {
        value.0
    }
}

impl fmt::Display for ChainId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for ChainId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ChainId({})", self.0)
    }
}

/// An asset's registry key: upper-case letters and digits, 1 to 16 characters (`ETH`, `USDC`).
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct AssetSymbol(String);

impl AssetSymbol {
    pub fn parse(text: &str) -> Result<Self, RegistryError> {
        let ok = (1..=16).contains(&text.len())
            && text.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit());
        if ok {
            Ok(AssetSymbol(text.to_owned()))
        } else {
            Err(RegistryError::BadSymbol(text.chars().take(32).collect()))
        }
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for AssetSymbol {
    type Error = RegistryError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        AssetSymbol::parse(&value)
    }
}
impl From<AssetSymbol> for String {
    fn from(value: AssetSymbol) -> Self {
        value.0
    }
}
impl fmt::Display for AssetSymbol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
impl fmt::Debug for AssetSymbol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AssetSymbol({})", self.0)
    }
}

/// One asset: where it lives, how many decimals it has, and its token contract if any.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Asset {
    pub symbol: AssetSymbol,
    pub chain: ChainId,
    pub decimals: u8,
    /// The token contract (ERC-20); `None` for the chain's native coin.
    pub contract: Option<Address>,
    /// Withdrawals below this are refused as dust.
    pub min_withdrawal: Amount,
    /// The most a withdrawal of this asset may spend on network fees, in the fee asset's base
    /// units (wei for Ethereum-family chains, satoshi for Bitcoin).
    pub fee_cap: Amount,
}

impl Asset {
    pub fn family(&self) -> ChainFamily {
        self.chain.family()
    }
    /// Parse a decimal amount of this asset, exactly.
    pub fn parse_amount(&self, text: &str) -> Result<Amount, AmountError> {
        Amount::parse_decimal(text, self.decimals)
    }
    /// Parse a destination address on this asset's chain.
    pub fn parse_address(&self, text: &str) -> Result<Address, AddressError> {
        Address::parse(&self.chain, text)
    }
}

/// How an asset is written in configuration files.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AssetSpec {
    pub symbol: String,
    pub chain: String,
    pub decimals: u8,
    #[serde(default)]
    pub contract: Option<String>,
    /// Decimal string in the asset's units.
    pub min_withdrawal: String,
    /// Decimal string of base units of the chain's fee asset.
    pub fee_cap: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RegistryError {
    #[error("unknown asset {0:?}")]
    UnknownAsset(String),
    #[error("asset symbol {0:?} must be 1-16 upper-case letters or digits")]
    BadSymbol(String),
    #[error("asset {0} is declared twice")]
    Duplicate(String),
    #[error("asset {symbol}: {reason}")]
    Invalid { symbol: String, reason: String },
}

/// The assets this deployment handles, by symbol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AssetRegistry {
    assets: BTreeMap<AssetSymbol, Asset>,
}

impl AssetRegistry {
    /// Build a registry from specs, validating each one.
    pub fn from_specs(specs: &[AssetSpec]) -> Result<Self, RegistryError> {
        let mut assets = BTreeMap::new();
        for spec in specs {
            let asset = Self::asset_from_spec(spec)?;
            if assets.insert(asset.symbol.clone(), asset).is_some() {
                return Err(RegistryError::Duplicate(spec.symbol.clone()));
            }
        }
        Ok(AssetRegistry { assets })
    }

    fn asset_from_spec(spec: &AssetSpec) -> Result<Asset, RegistryError> {
        let invalid =
            |reason: String| RegistryError::Invalid { symbol: spec.symbol.clone(), reason };
        let symbol = AssetSymbol::parse(&spec.symbol)?;
        let chain = ChainId::parse(&spec.chain).map_err(|e| invalid(e.to_string()))?;
        if spec.decimals > MAX_DECIMALS {
            return Err(invalid(format!("decimals {} above {MAX_DECIMALS}", spec.decimals)));
        }
        let contract = match (&spec.contract, chain.family()) {
            (None, _) => None,
            (Some(c), ChainFamily::Ethereum) => {
                Some(Address::parse(&chain, c).map_err(|e| invalid(format!("contract: {e}")))?)
            }
            (Some(_), ChainFamily::Bitcoin) => {
                return Err(invalid("Bitcoin assets have no contract".into()))
            }
        };
        let min_withdrawal = Amount::parse_decimal(&spec.min_withdrawal, spec.decimals)
            .map_err(|e| invalid(format!("min_withdrawal: {e}")))?;
        if min_withdrawal.is_zero() {
            return Err(invalid("min_withdrawal must be above zero".into()));
        }
        let fee_cap = Amount::parse_decimal(&spec.fee_cap, 0)
            .map_err(|e| invalid(format!("fee_cap: {e}")))?;
        Ok(Asset { symbol, chain, decimals: spec.decimals, contract, min_withdrawal, fee_cap })
    }

    /// The assets of a development deployment: anvil's Ethereum (chain id 31337) and
    /// Bitcoin regtest.
    pub fn dev() -> Self {
        Self::from_specs(&dev_specs()).unwrap_or_else(|_| AssetRegistry { assets: BTreeMap::new() })
    }

    pub fn get(&self, symbol: &str) -> Result<&Asset, RegistryError> {
        self.assets
            .iter()
            .find(|(k, _)| k.as_str() == symbol)
            .map(|(_, v)| v)
            .ok_or_else(|| RegistryError::UnknownAsset(symbol.chars().take(32).collect()))
    }

    pub fn iter(&self) -> impl Iterator<Item = &Asset> {
        self.assets.values()
    }
}

/// Where `strongroom dev` deploys its test ERC-20 on anvil.
pub const DEV_TOKEN_CONTRACT: &str = "0x5FbDB2315678afecb367f032d93F642f64180aa3";

/// The development asset list, also used as the default configuration.
pub fn dev_specs() -> Vec<AssetSpec> {
    vec![
        AssetSpec {
            symbol: "ETH".into(),
            chain: "eip155:31337".into(),
            decimals: 18,
            contract: None,
            min_withdrawal: "0.0001".into(),
            // 21,000 gas at up to 1,000 gwei.
            fee_cap: "21000000000000000".into(),
        },
        AssetSpec {
            symbol: "USDT".into(),
            chain: "eip155:31337".into(),
            decimals: 6,
            // The test ERC-20 that `strongroom dev` deploys: the first contract anvil's first
            // account creates (CREATE address of that account at nonce 0).
            contract: Some(DEV_TOKEN_CONTRACT.into()),
            min_withdrawal: "1".into(),
            // 100,000 gas at up to 1,000 gwei.
            fee_cap: "100000000000000000".into(),
        },
        AssetSpec {
            symbol: "BTC".into(),
            chain: BITCOIN_REGTEST.into(),
            decimals: 8,
            contract: None,
            min_withdrawal: "0.00001".into(),
            fee_cap: "100000".into(),
        },
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dev_registry_has_eth_and_btc() {
        let r = AssetRegistry::dev();
        assert_eq!(r.get("ETH").unwrap().decimals, 18);
        assert_eq!(r.get("BTC").unwrap().chain.as_str(), BITCOIN_REGTEST);
        assert!(matches!(r.get("DOGE"), Err(RegistryError::UnknownAsset(_))));
    }

    #[test]
    fn specs_are_validated() {
        let mut spec = dev_specs().remove(0);
        spec.symbol = "USDC".into();
        spec.decimals = 6;
        spec.contract = Some("0xA0b86991c6218b36c1d19D4a2e9Eb0cE3606eB48".into());
        spec.min_withdrawal = "1".into();
        let r = AssetRegistry::from_specs(&[spec.clone()]).unwrap();
        assert!(r.get("USDC").unwrap().contract.is_some());

        let mut bad = spec.clone();
        bad.contract = Some("0xa0B86991c6218b36c1d19D4a2e9Eb0cE3606eB48".into());
        assert!(AssetRegistry::from_specs(&[bad]).is_err(), "bad checksum");
        let mut bad = spec.clone();
        bad.min_withdrawal = "0.0000001".into();
        assert!(AssetRegistry::from_specs(&[bad]).is_err(), "too precise");
        assert!(matches!(
            AssetRegistry::from_specs(&[spec.clone(), spec]),
            Err(RegistryError::Duplicate(_))
        ));
    }

    #[test]
    fn chain_ids_are_caip2() {
        assert_eq!(ChainId::parse("eip155:1").unwrap().eip155_id(), Some(1));
        for bad in ["eip155:", "eip155:01", "eip155:x", "cosmos:hub", "bip122:00", "eip155"] {
            assert!(ChainId::parse(bad).is_err(), "{bad}");
        }
    }
}
