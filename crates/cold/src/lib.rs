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
//! - [`cli`]: the `strongroom-cold` command line (its flags and their help), so that tests
//!   and completion scripts see the same command the binary parses.

pub mod bundle;
pub mod cli;
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

impl ColdError {
    /// Whether this is a finding about what was offered (a bundle or PSBT that the checks
    /// refused, or that does not parse), rather than a failure to run: the binaries exit 1
    /// for it, not 2.
    pub fn is_refusal(&self) -> bool {
        match self {
            ColdError::Refused(_) | ColdError::Malformed(_) => true,
            ColdError::Bitcoin(b) => is_bitcoin_refusal(b),
            ColdError::Key(_) | ColdError::Io(_) => false,
        }
    }
}

/// Whether a Bitcoin error refuses what was offered (a PSBT that changes the transaction, a
/// signature or a transaction that does not verify, a PSBT that does not parse), as
/// [`ColdError::is_refusal`] does.
pub fn is_bitcoin_refusal(e: &strongroom_chain_bitcoin::BtcError) -> bool {
    use strongroom_chain_bitcoin::BtcError;
    matches!(
        e,
        BtcError::Refused(_)
            | BtcError::Psbt(_)
            | BtcError::Consensus(_)
            | BtcError::UnsignedTxChanged { .. }
            | BtcError::BadSignature { .. }
    )
}

impl From<std::io::Error> for ColdError {
    fn from(e: std::io::Error) -> Self {
        ColdError::Io(e.to_string())
    }
}
