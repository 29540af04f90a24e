//! PSBTs as they arrive from outside: a cosigner's file (Sparrow, a hardware wallet: binary
//! BIP-174 or its base64, `psbt::from_file`) merged into the online side's own PSBT
//! (`psbt::import`), and a bundle's base64; decoded against the fixed 2-of-3 cold wallet and
//! intent, then finalized as the online side would.

use strongroom_chain_bitcoin::bitcoin::Psbt;
use strongroom_chain_bitcoin::psbt::{
    decode, finalize, from_base64, from_file, import, to_base64, Decoded,
};
use strongroom_chain_bitcoin::{Keychain, Multisig};
use strongroom_core::Intent;

use crate::fixtures::{fixtures, Fixtures};
use crate::{broken, ensure, Verdict};

/// The bytes as a cosigner's PSBT file.
///
/// Properties: a parsed PSBT serializes to bytes that parse and serialize the same, and
/// survives base64; finalizing never panics; what `decode` accepts pays exactly the intent's
/// amount to its destination, within the fee cap, with every other output change to the
/// wallet's own change keychain and the amounts adding up; what `import` merges into the
/// fixtures' PSBT keeps its unsigned transaction and decodes as it did, with only
/// signatures added.
pub fn psbt(data: &[u8]) -> Verdict {
    let fx = fixtures();
    let Ok(p) = from_file(data) else {
        return Verdict::Malformed;
    };
    check(&p, &fx.btc_intent, &fx.multisig).max(merge(fx, &p))
}

/// A cosigner's PSBT merged into ours.
fn merge(fx: &Fixtures, theirs: &Psbt) -> Verdict {
    let ours = &fx.psbt;
    match import(ours, theirs, &fx.btc_intent, &fx.multisig) {
        Ok(imported) => {
            ensure(imported.psbt.unsigned_tx == ours.unsigned_tx, || {
                "an import changed the unsigned transaction".into()
            });
            match (decode(ours, &fx.btc_intent, &fx.multisig), &imported.decoded) {
                (Ok(before), after) => ensure(&before == after, || {
                    format!("an import changed what the PSBT pays: {before:?} became {after:?}")
                }),
                (Err(e), _) => broken(format_args!("an import succeeded over a refused PSBT: {e}")),
            }
            let before: usize = ours.inputs.iter().map(|i| i.partial_sigs.len()).sum();
            let after: usize = imported.psbt.inputs.iter().map(|i| i.partial_sigs.len()).sum();
            ensure(after == before + imported.added, || {
                format!("{} signatures added, but {before} became {after}", imported.added)
            });
            let _ = finalize(imported.psbt);
            Verdict::Accepted
        }
        Err(_) => Verdict::Refused,
    }
}

/// Everything a cosigner and the online side do with a parsed PSBT.
pub(crate) fn check(p: &Psbt, intent: &Intent, wallet: &Multisig) -> Verdict {
    let bytes = p.serialize();
    match Psbt::deserialize(&bytes) {
        Ok(again) => ensure(again.serialize() == bytes, || "serialization is not stable".into()),
        Err(e) => broken(format_args!("a PSBT's own serialization does not parse: {e}")),
    }
    match from_base64(&to_base64(p)) {
        Ok(again) => ensure(&again == p, || "a PSBT changes through base64".into()),
        Err(e) => broken(format_args!("a PSBT's own base64 does not parse: {e}")),
    }
    // Anything may fail here, typed; nothing may panic (miniscript, then Bitcoin Core's
    // interpreter over whatever scripts and witnesses the file holds).
    let _ = finalize(p.clone());
    match decode(p, intent, wallet) {
        Ok(d) => {
            check_decoded(p, intent, wallet, &d);
            Verdict::Accepted
        }
        Err(_) => Verdict::Refused,
    }
}

fn check_decoded(p: &Psbt, intent: &Intent, wallet: &Multisig, d: &Decoded) {
    ensure(u128::from(d.amount_sat) == intent.amount.base_units(), || {
        format!("decoded amount {} is not the intent's", d.amount_sat)
    });
    ensure(d.destination == intent.destination.as_str(), || {
        format!("decoded destination {} is not the intent's", d.destination)
    });
    ensure(u128::from(d.fee_sat) <= intent.fee_cap.base_units(), || {
        format!("fee {} above the cap", d.fee_sat)
    });
    let total_in: u128 = d.inputs.iter().map(|(_, v)| u128::from(*v)).sum();
    let change: u128 = d.change.iter().map(|(_, _, v)| u128::from(*v)).sum();
    ensure(total_in == u128::from(d.amount_sat) + change + u128::from(d.fee_sat), || {
        format!("inputs {total_in} ≠ payment + change {change} + fee: {d:?}")
    });
    ensure(d.inputs.len() == p.unsigned_tx.input.len(), || "inputs dropped".into());
    ensure(d.change.len() + 1 == p.unsigned_tx.output.len(), || {
        "an output is neither the payment nor change".into()
    });
    for (address, index, _) in &d.change {
        match wallet.address(Keychain::Change, *index) {
            Ok(a) => ensure(a.to_string() == *address, || {
                format!("change {address} is not the wallet's change #{index}")
            }),
            Err(e) => broken(format_args!("change index {index} has no address: {e}")),
        }
    }
}
