//! The domain core: intents and their hash, the double-entry ledger, withdrawal and deposit
//! lifecycles, and the [`env::Env`] through which time and randomness come in.
//!
//! Pure: this crate does no I/O and reads neither the clock nor the OS random source. It
//! knows `units` and nothing else of Strongroom: no SQL, no HTTP, no keys.
#![forbid(unsafe_code)]

pub mod env;
pub mod intent;
pub mod ledger;
#[cfg(feature = "system")]
pub mod sysenv;
pub mod tx;
pub mod withdrawal;

pub use env::{new_id, Env, FixedEnv, Timestamp};
pub use intent::{Intent, IntentAsset, IntentError, IntentHash, WalletId};
#[cfg(feature = "system")]
pub use sysenv::SystemEnv;
pub use tx::TxRefusal;
