//! The whole pre-signing decision on one movement, from the governance state: freezes first,
//! then where the money goes (our own wallet, a whitelist entry in force or still in its
//! time-lock, anywhere else), then the policy with its velocity limits and approvals.
//!
//! Signer nodes decide with it before they sign; the engine and the API use the same
//! function to hold back (and explain) what the signers would refuse. Only the signers'
//! decision counts.

use strongroom_core::{Intent, Timestamp};
use strongroom_units::Amount;

use crate::approval::Approval;
use crate::log::{AssetLookup, Listed, State, WhitelistScope};
use crate::policy::{
    evaluate, Block, Decision, Destination, Initiator, Outcome, Request, Tier, VelocityLimit,
};

/// The movement as the gate sees it.
#[derive(Debug, Clone)]
pub struct Subject<'a> {
    pub intent: &'a Intent,
    pub tier: Tier,
    /// The destination is the paying wallet's own address (a deposit address sweeping home).
    pub own_destination: bool,
    /// Whose withdrawal it is, for the customer whitelist.
    pub customer_id: Option<&'a str>,
    /// Who asked for it (roles from the log).
    pub initiator: Initiator<'a>,
    /// The transaction's maximum fee as a signer decoded it (`None` online, before a
    /// transaction exists): bounded by the policy's fee ceiling and counted for velocity.
    pub fee: Option<Amount>,
}

/// Where `s` pays, by the whitelists in force at `now`; an address still in its
/// time-lock is a [`Block::TimeLocked`] that says until when.
pub fn destination(state: &State, s: &Subject<'_>, now: Timestamp) -> Result<Destination, Block> {
    let locked = |list: &str, from: Timestamp| Block::TimeLocked {
        list: list.to_owned(),
        address: s.intent.destination.as_str().to_owned(),
        until_ms: from.unix_ms(),
    };
    if s.own_destination {
        return Ok(Destination::Internal);
    }
    let chain = s.intent.chain.as_str().to_owned();
    let dest = s.intent.destination.as_str();
    match state.listed(&WhitelistScope::Internal { chain: chain.clone() }, dest, now) {
        Listed::Usable => return Ok(Destination::Internal),
        Listed::Pending(from) => return Err(locked("internal", from)),
        Listed::No => {}
    }
    if let Some(c) = s.customer_id {
        let scope = WhitelistScope::Customer { customer_id: c.to_owned(), chain };
        match state.listed(&scope, dest, now) {
            Listed::Usable => return Ok(Destination::CustomerWhitelisted),
            Listed::Pending(from) => return Err(locked("customer's", from)),
            Listed::No => {}
        }
    }
    Ok(Destination::External)
}

/// The intent's asset checked against the registry: registered at its contract, out of its
/// time-lock, under the symbol and decimals the intent claims.
pub fn asset(state: &State, intent: &strongroom_core::Intent, now: Timestamp) -> Result<(), Block> {
    let chain = intent.chain.as_str();
    let contract = intent.asset.contract.as_ref().map(|c| c.as_str());
    match state.asset(chain, contract, now) {
        AssetLookup::Unknown => Err(Block::UnknownAsset {
            chain: chain.to_owned(),
            contract: contract.map(str::to_owned),
        }),
        AssetLookup::Pending(spec, from) => {
            Err(Block::AssetTimeLocked { symbol: spec.symbol.clone(), until_ms: from.unix_ms() })
        }
        AssetLookup::Usable(spec) => {
            let claimed = intent.asset.symbol.as_str();
            if spec.symbol != claimed || spec.decimals != intent.asset.decimals {
                return Err(Block::AssetMislabelled {
                    registered: spec.symbol.clone(),
                    registered_decimals: spec.decimals,
                    claimed: claimed.to_owned(),
                    claimed_decimals: intent.asset.decimals,
                });
            }
            Ok(())
        }
    }
}

/// Decide `s` under the state in force: a frozen scope, a missing policy or a destination in
/// its time-lock block (rule `freeze`, `policy` or `whitelist`); otherwise the policy decides.
pub fn decide(
    state: &State,
    s: &Subject<'_>,
    approvals: &[Approval],
    moved: &dyn Fn(&VelocityLimit) -> Amount,
    now: Timestamp,
) -> Decision {
    let version = state.policy.as_ref().map_or(0, |p| p.version);
    let block = |rule: &str, why: Block| Decision {
        outcome: Outcome::Block(why),
        rule: rule.to_owned(),
        version,
    };
    let intent = s.intent;
    // What moves is named by the registry, from the contract the transaction moves (a
    // signer has checked that it is the intent's), never by the symbol a request gives it:
    // the freezes, rules and limits below then apply to the real asset.
    if let Err(why) = asset(state, intent, now) {
        return block("assets", why);
    }
    let (asset, wallet) = (intent.asset.symbol.as_str(), intent.source_wallet.as_str());
    if let Some(f) = state.frozen(asset, wallet, now) {
        let until_ms = f.until.map(|u| u.unix_ms());
        return block("freeze", Block::Frozen { scope: f.scope, until_ms });
    }
    let Some(policy) = &state.policy else {
        return block("policy", Block::NoPolicy);
    };
    let destination = match destination(state, s, now) {
        Ok(d) => d,
        Err(why) => return block("whitelist", why),
    };
    let intent_hash = match intent.hash() {
        Ok(h) => h,
        Err(e) => return block("intent", Block::Intent { detail: e.to_string() }),
    };
    let req = Request {
        intent,
        intent_hash,
        tier: s.tier,
        destination,
        initiator: s.initiator,
        fee: s.fee,
    };
    evaluate(policy, &state.members, &req, approvals, moved, now)
}

impl Decision {
    /// One line for people: what decided, and what is missing.
    pub fn explain(&self) -> String {
        let by = if self.rule.is_empty() {
            format!("policy v{}", self.version)
        } else {
            format!("policy v{} rule {}", self.version, self.rule)
        };
        match &self.outcome {
            Outcome::Allow => format!("{by}: allowed"),
            Outcome::Wait { have, need, not_counted } => {
                let why = if not_counted.is_empty() {
                    String::new()
                } else {
                    format!(" (not counted: {})", not_counted.join("; "))
                };
                format!("{by}: {have} of {need} approvals{why}")
            }
            Outcome::Block(reason) => format!("{by}: {reason}"),
        }
    }
}
