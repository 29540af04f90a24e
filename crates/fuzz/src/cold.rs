//! Signing bundles, the one file that crosses the air gap: `Bundle::from_json` (what
//! `strongroom-cold sign` reads) and then everything `ColdHome::review` does with it short of
//! the disk (the governance log extended from the signer's own copy, the gate as a cold
//! movement, the installed wallet, the PSBT or Safe transaction decoded against the intent),
//! and the online side's `finalize_bitcoin` / `finalize_safe` on a bundle coming back.

use strongroom_chain_bitcoin::bitcoin::Psbt;
use strongroom_chain_bitcoin::psbt::from_base64;
use strongroom_chain_ethereum::safe::check_safe_tx;
use strongroom_cold::bundle::{Bundle, Payload};
use strongroom_cold::interop::{export_psbt, import_psbt, PsbtFormat};
use strongroom_cold::online::{finalize_bitcoin, finalize_safe};
use strongroom_governance::gate::{decide, Subject};
use strongroom_governance::log::extend;
use strongroom_governance::policy::{Initiator, Tier, VelocityLimit};
use strongroom_units::Amount;

use crate::fixtures::{fixtures, Fixtures};
use crate::{broken, ensure, Verdict};

/// A bundle file's bytes.
///
/// Properties: a bundle survives its own JSON (`to_json` then `from_json`); every step of
/// the review returns a typed refusal or passes, and a PSBT in it obeys the `psbt` target's
/// properties against the bundle's own intent.
pub fn cold_bundle(data: &[u8]) -> Verdict {
    let Ok(b) = Bundle::from_json(data) else {
        return Verdict::Malformed;
    };
    match b.to_json().map(|json| Bundle::from_json(&json)) {
        Ok(Ok(again)) => ensure(again == b, || "a bundle changes through its own JSON".into()),
        Ok(Err(e)) => broken(format_args!("a bundle does not read back its own JSON: {e}")),
        Err(e) => broken(format_args!("a bundle read from JSON does not write: {e}")),
    }
    let fx = fixtures();
    // Every part runs whatever the others decided, so the fuzzer reaches all of them.
    let governance = review_governance(fx, &b);
    let transaction = review_transaction(fx, &b);
    let _ = finalize_bitcoin(std::slice::from_ref(&b));
    let _ = finalize_safe(std::slice::from_ref(&b), &fx.safe_owners, 1);
    governance.min(transaction)
}

/// The governance half of `ColdHome::review`, on a signer holding the fixtures' log.
fn review_governance(fx: &Fixtures, b: &Bundle) -> Verdict {
    let intent = &b.intent;
    if fx.now >= intent.expires_at {
        return Verdict::Refused;
    }
    let state = match extend(&fx.genesis, &fx.pin, &fx.log, &b.governance, fx.now, &|_| None) {
        Ok(Some((new, state))) => {
            ensure(new.len() + fx.log.len() == b.governance.len(), || {
                "extend returned entries the bundle does not hold".into()
            });
            state
        }
        Ok(None) => fx.state.clone(),
        Err(_) => return Verdict::Refused,
    };
    let subject = Subject {
        intent,
        tier: Tier::Cold,
        own_destination: false,
        customer_id: None,
        initiator: Initiator::claimed(&b.initiator, &state.members),
        fee: None,
    };
    let moved = |_: &VelocityLimit| Amount::ZERO;
    let d = decide(&state, &subject, &b.approvals, &moved, fx.now);
    let _ = d.explain();
    if d.allowed() {
        Verdict::Accepted
    } else {
        Verdict::Refused
    }
}

/// The transaction half: the wallet the intent names must be the kind of the payload, and
/// the payload must decode to exactly the intent.
fn review_transaction(fx: &Fixtures, b: &Bundle) -> Verdict {
    let intent = &b.intent;
    match (&b.transaction, intent.source_wallet.as_str()) {
        (Payload::BitcoinPsbt { psbt }, "cold-btc-1") => match from_base64(psbt) {
            Ok(p) => {
                interop(fx, b, &p);
                crate::bitcoin::check(&p, intent, &fx.multisig)
            }
            Err(_) => Verdict::Malformed,
        },
        (Payload::BitcoinPsbt { psbt }, _) => {
            // Not this signer's wallet; the PSBT is still parsed by the online side.
            let _ = from_base64(psbt);
            Verdict::Refused
        }
        (Payload::SafeTransaction(p), wallet) => {
            let _ = p.signatures();
            let Ok((safe, tx)) = p.parse() else {
                return Verdict::Malformed;
            };
            let checked = check_safe_tx(&tx, safe, intent);
            if wallet == "cold-eth-1" && safe == fx.safe && checked.is_ok() {
                Verdict::Accepted
            } else {
                Verdict::Refused
            }
        }
    }
}

/// `strongroom-cold export-psbt` and `import-psbt` on the bundle's own PSBT. Properties: the
/// file exported, in either form, reads back as the bundle's PSBT; importing it back adds
/// nothing (unless an input is finalized), so it is refused.
fn interop(fx: &Fixtures, b: &Bundle, p: &Psbt) {
    for format in [PsbtFormat::Binary, PsbtFormat::Base64] {
        let Ok((file, _)) = export_psbt(b, &fx.multisig, format) else {
            continue;
        };
        match strongroom_chain_bitcoin::psbt::from_file(&file) {
            Ok(back) => ensure(&back == p, || format!("{format:?} export reads back otherwise")),
            Err(e) => broken(format_args!("a {format:?} export does not read back: {e}")),
        }
        // (A finalized input's witness signatures are new to its partial signatures.)
        let imported = import_psbt(b, &file, &fx.multisig);
        ensure(
            imported.is_err() || p.inputs.iter().any(|i| i.final_script_witness.is_some()),
            || "a bundle's own PSBT imported into it added signatures".into(),
        );
    }
}
