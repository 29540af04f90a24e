//! The governance gate over stored state, for the online side: the engine (to hold back what
//! the signer nodes would refuse, before a nonce is spent) and the API (to say why a
//! withdrawal waits). It replays the stored log, reads the submitted approvals and estimates
//! the velocity already used from the withdrawals that got past building. Only the signer
//! nodes' own decision counts; this one merely agrees with it ahead of time.

use strongroom_core::withdrawal::WithdrawalState;
use strongroom_core::{Intent, Timestamp};
use strongroom_governance::approval::Approval;
use strongroom_governance::gate::{decide, Subject};
use strongroom_governance::log::{replay, Entry};
use strongroom_governance::policy::{Decision, Tier, VelocityLimit};
use uuid::Uuid;

use crate::{Store, StoreError, WithdrawalFilter};

/// What is decided.
#[derive(Debug, Clone)]
pub struct Movement<'a> {
    /// The withdrawal's or sweep's id.
    pub id: Uuid,
    pub intent: &'a Intent,
    /// A customer's withdrawal (its approvals are read), and whose.
    pub customer_id: Option<Uuid>,
    /// It pays the sending wallet's own address (a deposit address sweeping home).
    pub own_destination: bool,
}

#[derive(Debug, Clone)]
pub enum Gate {
    /// No genesis is installed: no governance.
    Ungoverned,
    /// The stored log does not verify (a row inserted or edited): nothing may be signed.
    Invalid(String),
    Decided {
        decision: Decision,
        /// What the signer nodes get with the request.
        approvals: Vec<Approval>,
        entries: Vec<Entry>,
    },
}

pub async fn gate(store: &dyn Store, m: &Movement<'_>, now: Timestamp) -> Result<Gate, StoreError> {
    let rec = store.governance().await?;
    let Some((pin, genesis)) = &rec.genesis else { return Ok(Gate::Ungoverned) };
    let state = match replay(genesis, pin, &rec.entries, now) {
        Ok(s) => s,
        Err(e) => {
            return Ok(Gate::Invalid(format!("the stored governance log does not verify: {e}")))
        }
    };
    let approvals = match m.customer_id {
        Some(_) => store.approvals(m.id).await?,
        None => Vec::new(),
    };
    // The nodes count what they signed; estimate the same from the withdrawals that got that
    // far (sweeps stay in custody and do not count).
    let mut recent = Vec::new();
    if state.policy.as_ref().is_some_and(|p| !p.velocity.is_empty()) {
        for st in [
            WithdrawalState::Built,
            WithdrawalState::Signed,
            WithdrawalState::Broadcast,
            WithdrawalState::Settled,
        ] {
            let filter =
                WithdrawalFilter { customer_id: None, state: Some(st), after: None, limit: 1000 };
            recent.extend(store.list_withdrawals(&filter).await?);
        }
    }
    let moved = |l: &VelocityLimit| {
        let others = recent.iter().filter(|r| r.id != m.id).map(|r| {
            let i = &r.intent;
            (r.updated_at.unix_ms(), i.source_wallet.as_str(), i.asset.symbol.as_str(), i.amount)
        });
        l.moved(now, others)
    };
    let customer = m.customer_id.map(|c| c.to_string());
    let subject = Subject {
        intent: m.intent,
        tier: Tier::Hot,
        own_destination: m.own_destination,
        customer_id: customer.as_deref(),
        // The signers check who asked (an initiation, when the policy requires one); the
        // online estimate leaves that to them.
        initiator: strongroom_governance::policy::Initiator::NotChecked,
        fee: None,
    };
    let decision = decide(&state, &subject, &approvals, &moved, now);
    Ok(Gate::Decided { decision, approvals, entries: rec.entries })
}
