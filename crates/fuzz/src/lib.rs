//! Fuzz targets for every parser that takes bytes from outside: one `pub fn <target>(data)`
//! per parser, driven by cargo-fuzz from `fuzz/` (nightly, libFuzzer) and replayed over the
//! committed corpora by `tests/corpus.rs` on the stable toolchain.
//!
//! | target | what arrives from outside | where it comes from |
//! |---|---|---|
//! | [`intent`] | an intent's canonical encoding, or its JSON | signer requests, bundles, the console |
//! | [`eth_tx`] | an unsigned or signed EIP-1559 transaction | signer requests, the engine's store |
//! | [`psbt`] | a cosigner's PSBT file, binary (BIP-174) or base64 | Sparrow, hardware wallets, bundles |
//! | [`cold_bundle`] | a signing bundle file | the air gap, both ways |
//! | [`signer_frame`] | one wire frame's body | peers and orchestrators over mTLS |
//! | [`sign_request`] | a signing request's JSON | the orchestrator |
//! | [`governance`] | governance entries, a genesis, a passkey assertion, a policy | members, peers, bundles, the API |
//! | [`api_body`] | the JSON body (or query string) of an API request | any HTTPS client |
//!
//! Each target must never panic on any input. Where a property exists it is checked (a
//! decoded value encodes back to the same bytes; what the decoder accepts is what the
//! builder would have built; a refusal is a typed error that survives the wire), and a
//! broken property panics through [`broken`] so that libFuzzer keeps the input.
//!
//! The fixed world the targets decode against (governance members and their keys, the
//! wallets, the signer's key) is in [`fixtures`]; [`seeds`] builds the valid inputs the
//! corpora start from, with the project's own encoders.
//!
//! This crate is a test harness: it depends on the parsers' crates and nothing depends on it.
#![forbid(unsafe_code)]

pub mod fixtures;
pub mod seeds;

mod api;
mod bitcoin;
mod cold;
mod ethereum;
mod governance;
mod intent;
mod signer;

pub use api::{api_body, API_BODIES};
pub use bitcoin::psbt;
pub use cold::cold_bundle;
pub use ethereum::eth_tx;
pub use governance::governance;
pub use intent::intent;
pub use signer::{sign_request, signer_frame};

/// How far an input got. Ordered: a target that tries several decoders reports the best.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Verdict {
    /// The bytes do not parse as the format at all.
    Malformed,
    /// They parse, and a check refused them with a typed error.
    Refused,
    /// Every check passed: a signer (or the server) would act on them.
    Accepted,
}

/// A fuzz target: every one takes arbitrary bytes and never panics unless a property broke.
pub type Target = fn(&[u8]) -> Verdict;

/// Every target by the name of its cargo-fuzz binary and corpus folder.
pub const TARGETS: &[(&str, Target)] = &[
    ("intent", intent),
    ("eth_tx", eth_tx),
    ("psbt", psbt),
    ("cold_bundle", cold_bundle),
    ("signer_frame", signer_frame),
    ("sign_request", sign_request),
    ("governance", governance),
    ("api_body", api_body),
];

/// A broken property: the one place this crate panics, so libFuzzer saves the input that
/// broke it (a fuzzer learns of a failure only through a crash).
#[allow(clippy::panic)] // See above: a panic is how a property failure reaches the fuzzer.
#[track_caller]
pub(crate) fn broken(what: std::fmt::Arguments<'_>) -> ! {
    panic!("fuzz property broken: {what}")
}

/// Check a property; [`broken`] if it does not hold.
#[track_caller]
pub(crate) fn ensure(holds: bool, what: impl FnOnce() -> String) {
    if !holds {
        broken(format_args!("{}", what()));
    }
}

/// A value must survive JSON: serialize, read back, compare.
#[track_caller]
pub(crate) fn json_round_trip<T>(what: &str, value: &T)
where
    T: serde::Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
{
    let text = match serde_json::to_vec(value) {
        Ok(t) => t,
        Err(e) => broken(format_args!("{what} does not serialize: {e}")),
    };
    match serde_json::from_slice::<T>(&text) {
        Ok(back) => ensure(&back == value, || {
            format!("{what} changes through JSON: {value:?} became {back:?}")
        }),
        Err(e) => broken(format_args!(
            "{what} does not read back its own JSON ({e}): {}",
            String::from_utf8_lossy(&text)
        )),
    }
}
