//! Cold signing: what crosses the air gap, what the offline signer checks, and how the online
//! side prepares and finishes a cold movement.
//!
//! - [`bundle::Bundle`]: one file with the intent, the unsigned transaction (a PSBT), the
//!   approvals and the governance log, which travels to each key holder and back.
//! - [`home::ColdHome`]: the offline signer's own state: its sealed key, the governance
//!   genesis it pins, the wallets it installed at the key ceremony, its copy of the log and
//!   a journal of what it signed. [`home::ColdHome::review`] decides from those alone.
//! - [`online`]: the online side: a bundle is produced only once the governance gate allows
//!   the movement (a quorum has approved), and the returned bundles are combined, finalized
//!   and checked by Bitcoin Core's consensus code.
//! - [`interop`]: a bundle's PSBT as a plain BIP-174 file for a cosigner outside Strongroom
//!   (Sparrow, a hardware wallet), and its signatures merged back after checking.

pub mod bundle;
pub mod home;
pub mod interop;
pub mod online;

/// Why the cold side refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ColdError {
    #[error("refused: {0}")]
    Refused(String),
    #[error("{0}")]
    Bitcoin(#[from] strongroom_chain_bitcoin::BtcError),
    #[error("key: {0}")]
    Key(#[from] strongroom_crypto::passphrase::PassphraseError),
    #[error("the bundle is malformed: {0}")]
    Malformed(String),
    #[error("{0}")]
    Io(String),
}

impl From<std::io::Error> for ColdError {
    fn from(e: std::io::Error) -> Self {
        ColdError::Io(e.to_string())
    }
}
