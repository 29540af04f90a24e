//! The online side of a cold movement. A bundle is produced only when the governance gate
//! already allows the movement with the approvals at hand (so key holders are never asked to
//! sign what a quorum has not approved), and the bundles that come back are combined,
//! finalized and checked by Bitcoin Core's consensus code.

use strongroom_chain_bitcoin::bitcoin::Transaction;
use strongroom_chain_bitcoin::psbt::{combine, finalize, from_base64, to_base64, Decoded};
use strongroom_chain_bitcoin::wallet::ColdWallet;
use strongroom_chain_ethereum::safe::{
    check_safe_tx, exec_calldata, recover_owner, safe_tx_hash, transfer_tx, EthAddress, SafeTx,
};
use strongroom_core::{Env, Intent};
use strongroom_governance::approval::Approval;
use strongroom_governance::gate::{decide, Subject};
use strongroom_governance::log::{Entry, State};
use strongroom_governance::policy::{Initiator, Tier, VelocityLimit};
use strongroom_governance::Role;
use strongroom_units::Amount;

use crate::bundle::{Bundle, Payload, SafePayload, FORMAT};
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

/// The gate's decision on `req` as a cold movement; anything but "allow" is an error (the
/// check a bundle is made under, for callers that wait for approvals before looking for
/// coins).
pub fn allowed(req: &Request<'_>, env: &dyn Env) -> Result<(), ColdError> {
    gate(req, env)
}

/// The gate's decision on `req` as a cold movement; anything but "allow" is an error.
fn gate(req: &Request<'_>, env: &dyn Env) -> Result<(), ColdError> {
    let subject = Subject {
        intent: req.intent,
        tier: Tier::Cold,
        own_destination: false,
        customer_id: None,
        initiator: Initiator::claimed(req.initiator, &req.state.members),
        fee: None,
    };
    let d = decide(req.state, &subject, req.approvals, req.moved, env.now());
    if !d.allowed() {
        return Err(ColdError::Refused(format!(
            "no bundle until governance allows the movement: {}",
            d.explain()
        )));
    }
    Ok(())
}

fn bundle(req: &Request<'_>, transaction: Payload) -> Bundle {
    Bundle {
        format: FORMAT.to_owned(),
        intent: req.intent.clone(),
        initiator: req.initiator.to_owned(),
        initiator_role: req.initiator_role,
        approvals: req.approvals.to_vec(),
        governance: req.log.to_vec(),
        transaction,
        signed_by: Vec::new(),
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
    gate(req, env)?;
    let (psbt, decoded) = wallet.prepare(req.intent, sat_per_vb, env)?;
    Ok((bundle(req, Payload::BitcoinPsbt { psbt: to_base64(&psbt) }), decoded))
}

/// The Safe transaction for `req.intent` at the Safe's next `nonce`, in a bundle, once the
/// gate allows it (the same decoder the signers run checks it here too).
pub fn prepare_safe(
    safe: EthAddress,
    nonce: u64,
    req: &Request<'_>,
    env: &dyn Env,
) -> Result<Bundle, ColdError> {
    gate(req, env)?;
    let tx = transfer_tx(req.intent, nonce).map_err(|e| ColdError::Refused(e.to_string()))?;
    check_safe_tx(&tx, safe, req.intent).map_err(|e| ColdError::Refused(e.to_string()))?;
    Ok(bundle(req, Payload::SafeTransaction(SafePayload::new(safe, &tx))))
}

/// Collect the owners' signatures from the returned bundles, keep those that recover to
/// their owner over the hash computed here and belong to `owners`, and build the
/// `execTransaction` call data once `threshold` distinct owners have signed. Returns the
/// Safe's address and the call data.
pub fn finalize_safe(
    bundles: &[Bundle],
    owners: &[EthAddress],
    threshold: usize,
) -> Result<(EthAddress, Vec<u8>), ColdError> {
    let mut found: Vec<(EthAddress, [u8; 65])> = Vec::new();
    let mut first: Option<(&Bundle, EthAddress, SafeTx)> = None;
    for b in bundles {
        let Payload::SafeTransaction(p) = &b.transaction else {
            return Err(ColdError::Refused("not a Safe bundle".into()));
        };
        let (safe, tx) = p.parse()?;
        match &first {
            Some((f, s, t)) if f.intent != b.intent || *s != safe || *t != tx => {
                return Err(ColdError::Refused("the bundles are for different transactions".into()))
            }
            Some(_) => {}
            None => first = Some((b, safe, tx)),
        }
        found.extend(p.signatures()?);
    }
    let (b, safe, tx) = first.ok_or_else(|| ColdError::Refused("no bundles to combine".into()))?;
    let chain_id = b
        .intent
        .chain
        .eip155_id()
        .ok_or_else(|| ColdError::Refused("not an EIP-155 chain".into()))?;
    let hash = safe_tx_hash(chain_id, safe, &tx);
    let mut good: Vec<(EthAddress, [u8; 65])> = Vec::new();
    for (owner, sig) in found {
        let signer = recover_owner(&hash, &sig).map_err(|e| ColdError::Refused(e.to_string()))?;
        if signer != owner {
            return Err(ColdError::Refused(format!(
                "the signature under {owner}'s name is by {signer}"
            )));
        }
        if !owners.contains(&owner) {
            return Err(ColdError::Refused(format!("{owner} is not an owner of the Safe")));
        }
        if !good.iter().any(|(o, _)| *o == owner) {
            good.push((owner, sig));
        }
    }
    if good.len() < threshold {
        return Err(ColdError::Refused(format!(
            "{} of {threshold} owners have signed",
            good.len()
        )));
    }
    Ok((safe, exec_calldata(&tx, &good)))
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
        let Payload::BitcoinPsbt { psbt } = &b.transaction else {
            return Err(ColdError::Refused("not a Bitcoin bundle".into()));
        };
        psbts.push(from_base64(psbt)?);
    }
    let mut iter = psbts.into_iter();
    let base = iter.next().ok_or_else(|| ColdError::Refused("no bundles to combine".into()))?;
    Ok(finalize(combine(base, iter.collect())?)?)
}
