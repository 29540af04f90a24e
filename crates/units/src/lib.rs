//! Money, assets and addresses.
//!
//! This crate knows nothing of storage, HTTP, keys or any other Strongroom crate. It gives
//! the rest of the system one way to hold an amount ([`Amount`], integer base units with
//! checked arithmetic), to name an asset ([`Asset`], [`AssetRegistry`]) and a chain
//! ([`ChainId`], CAIP-2), and to validate a destination ([`Address`]).
#![forbid(unsafe_code)]

pub mod address;
pub mod amount;
pub mod chain;

pub use address::{Address, AddressError};
pub use amount::{Amount, AmountError, MAX_DECIMALS};
pub use chain::{
    Asset, AssetRegistry, AssetSpec, AssetSymbol, ChainError, ChainFamily, ChainId, RegistryError,
};
