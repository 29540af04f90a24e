//! The online side of a cold movement. A bundle is produced only when the governance gate
//! already allows the movement with the approvals at hand (so key holders are never asked to
//! sign what a quorum has not approved), and the bundles that come back are combined,
//! finalized and checked by Bitcoin Core's consensus code.

use strongroom_chain_bitcoin::bitcoin::Transaction;
use strongroom_chain_bitcoin::psbt::{combine, finalize, from_base64, to_base64, Decoded};
use strongroom_chain_bitcoin::wallet::ColdWallet;
use strongroom_core::{Env, Intent};
use strongroom_governance::approval::Approval;
use strongroom_governance::gate::{decide, Subject};
use strongroom_governance::log::{Entry, State};
use strongroom_governance::policy::{Tier, VelocityLimit};
use strongroom_governance::Role;
use strongroom_units::Amount;

use crate::bundle::{Bundle, Payload, FORMAT};
use crate::ColdError;

/// Who asks for a cold movement, with which approvals, under which governance.
pub struct Request<'a> {
    pub intent: &'a Intent,
    pub initiator: &'a str,
    pub initiator_role: Role,
    pub approvals: &'a [Approval],
    /// The whole governance log and the state it replays to.
    pub log: &'a [Entry],
    pub state: &'a State,
    /// How much each velocity limit has already moved (the online estimate; the signers
    /// count for themselves).
    pub moved: &'a dyn Fn(&VelocityLimit) -> Amount,
}

impl std::fmt::Debug for Request<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Request")
            .field("intent", self.intent)
            .field("initiator", &self.initiator)
            .field("approvals", &self.approvals.len())
            .finish_non_exhaustive()
    }
}

/// Build the unsigned PSBT for `req.intent` from `wallet` and wrap it in a bundle, once the
/// gate allows it.
pub fn prepare_bitcoin(
    wallet: &mut ColdWallet,
    req: &Request<'_>,
    sat_per_vb: u64,
    env: &dyn Env,
) -> Result<(Bundle, Decoded), ColdError> {
    let subject = Subject {
        intent: req.intent,
        tier: Tier::Cold,
        own_destination: false,
        customer_id: None,
        initiator: req.initiator,
        initiator_role: req.initiator_role,
    };
    let d = decide(req.state, &subject, req.approvals, req.moved, env.now());
    if !d.allowed() {
        return Err(ColdError::Refused(format!(
            "no bundle until governance allows the movement: {}",
            d.explain()
        )));
    }
    let (psbt, decoded) = wallet.prepare(req.intent, sat_per_vb, env)?;
    let bundle = Bundle {
        format: FORMAT.to_owned(),
        intent: req.intent.clone(),
        initiator: req.initiator.to_owned(),
        initiator_role: req.initiator_role,
        approvals: req.approvals.to_vec(),
        governance: req.log.to_vec(),
        transaction: Payload::BitcoinPsbt { psbt: to_base64(&psbt) },
        signed_by: Vec::new(),
    };
    Ok((bundle, decoded))
}

/// Combine the signed bundles that came back from the key holders (all for the same
/// intent and unsigned transaction), finalize, and check with Bitcoin Core's consensus code.
pub fn finalize_bitcoin(bundles: &[Bundle]) -> Result<Transaction, ColdError> {
    let mut psbts = Vec::new();
    let mut first: Option<&Bundle> = None;
    for b in bundles {
        if let Some(f) = first {
            if f.intent != b.intent {
                return Err(ColdError::Refused("the bundles are for different intents".into()));
            }
        } else {
            first = Some(b);
        }
        let Payload::BitcoinPsbt { psbt } = &b.transaction;
        psbts.push(from_base64(psbt)?);
    }
    let mut iter = psbts.into_iter();
    let base = iter.next().ok_or_else(|| ColdError::Refused("no bundles to combine".into()))?;
    Ok(finalize(combine(base, iter.collect())?)?)
}
