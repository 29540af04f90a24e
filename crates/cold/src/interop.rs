//! A bundle's Bitcoin PSBT for cosigners outside Strongroom: out as a plain BIP-174 file
//! (binary `.psbt` or base64 text, what Sparrow, Bitcoin Core and hardware wallets read),
//! and back with their signatures merged into the bundle.
//!
//! Nothing here weakens the bundle's checks: the PSBT is decoded against the bundle's intent
//! and the wallet's descriptor before it leaves, and what comes back is taken only if its
//! unsigned transaction is exactly the bundle's, and then only its signatures, each verified
//! ([`strongroom_chain_bitcoin::psbt::import`]). An outside cosigner checks only what its own
//! wallet shows it (outputs and amounts); the governance checks stay with the online gate and
//! the Strongroom signers.

use strongroom_chain_bitcoin::bitcoin::Psbt;
pub use strongroom_chain_bitcoin::psbt::Imported;
use strongroom_chain_bitcoin::psbt::{self, Decoded};
use strongroom_chain_bitcoin::Multisig;

use crate::bundle::{Bundle, Payload};
use crate::ColdError;

/// How a PSBT file is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PsbtFormat {
    /// Binary BIP-174, the `.psbt` file wallets save.
    Binary,
    /// The same bytes as base64 text (one line), for copying and pasting.
    Base64,
}

/// The bundle's PSBT, parsed; a bundle of another kind is refused.
pub fn bundle_psbt(bundle: &Bundle) -> Result<Psbt, ColdError> {
    let Payload::BitcoinPsbt { psbt } = &bundle.transaction else {
        return Err(ColdError::Refused("not a Bitcoin bundle: it carries no PSBT".into()));
    };
    Ok(psbt::from_base64(psbt)?)
}

/// The bundle's PSBT (unsigned, or with the signatures it has so far) as a file in `format`,
/// after decoding it against the bundle's intent and `wallet`: a PSBT that pays anything the
/// intent does not name never leaves.
pub fn export_psbt(
    bundle: &Bundle,
    wallet: &Multisig,
    format: PsbtFormat,
) -> Result<(Vec<u8>, Decoded), ColdError> {
    let p = bundle_psbt(bundle)?;
    let decoded = psbt::decode(&p, &bundle.intent, wallet)?;
    let bytes = match format {
        PsbtFormat::Binary => psbt::to_bip174(&p),
        PsbtFormat::Base64 => format!("{}\n", psbt::to_base64(&p)).into_bytes(),
    };
    Ok((bytes, decoded))
}

/// The bundle with the signatures of `file` (a PSBT an outside cosigner signed, binary or
/// base64) merged into its PSBT, and the fingerprints of their keys added to `signed_by`.
/// Refused: a file whose unsigned transaction is not the bundle's
/// ([`strongroom_chain_bitcoin::BtcError::UnsignedTxChanged`], inside
/// [`ColdError::Bitcoin`]), a signature that does not verify, and a file that adds no
/// signature.
pub fn import_psbt(
    bundle: &Bundle,
    file: &[u8],
    wallet: &Multisig,
) -> Result<(Bundle, Imported), ColdError> {
    let ours = bundle_psbt(bundle)?;
    let theirs = psbt::from_file(file)?;
    let imported = psbt::import(&ours, &theirs, &bundle.intent, wallet)?;
    if imported.added == 0 {
        return Err(ColdError::Refused(
            "the PSBT carries no signature that the bundle lacks; nothing was imported".into(),
        ));
    }
    let mut out = bundle.clone();
    out.transaction = Payload::BitcoinPsbt { psbt: psbt::to_base64(&imported.psbt) };
    for fp in &imported.signers {
        if !out.signed_by.contains(fp) {
            out.signed_by.push(fp.clone());
        }
    }
    Ok((out, imported))
}
