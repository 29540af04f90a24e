//! Withdrawal policies: ordered rules, the first that matches decides; velocity limits cap
//! what moves per wallet and asset in a period, whatever the rules say. Every decision names
//! the rule (or limit) and the policy version that made it.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use strongroom_core::{Intent, IntentHash, Timestamp};
use strongroom_units::Amount;

use crate::approval::Approval;
use crate::log::Member;
use crate::Role;

/// Where the money sits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Tier {
    Hot,
    Cold,
}

/// Where the money goes, as the governance state classifies the destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Destination {
    /// One of our own wallets, whitelisted in the governance log (hot ↔ cold).
    Internal,
    /// On the customer's own withdrawal whitelist.
    CustomerWhitelisted,
    /// Anywhere else.
    External,
}

/// What a rule looks at. An absent field matches anything.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Conditions {
    pub tier: Option<Tier>,
    pub assets: Option<Vec<String>>,
    /// Base units, inclusive.
    pub min_amount: Option<Amount>,
    /// Base units, inclusive.
    pub max_amount: Option<Amount>,
    pub destinations: Option<Vec<Destination>>,
    pub initiator_roles: Option<Vec<Role>>,
    /// `[from, to)` hours of the day, UTC; `from > to` wraps past midnight.
    pub utc_hours: Option<[u8; 2]>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Action {
    Allow,
    /// `count` distinct approvers holding one of `roles`; the initiator never counts.
    Approvals {
        count: u8,
        roles: Vec<Role>,
    },
    Block {
        reason: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    pub name: String,
    #[serde(default)]
    pub when: Conditions,
    pub action: Action,
}

/// At most `max_amount` of `asset` leaves `wallet` (every wallet when absent) per period.
/// Movements to internal destinations (our own wallets) stay in custody: they neither count
/// nor are limited.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VelocityLimit {
    pub name: String,
    pub wallet: Option<String>,
    pub asset: String,
    pub period_secs: u64,
    pub max_amount: Amount,
}

impl VelocityLimit {
    /// How much this limit's asset (and wallet, if it names one) moved within its period
    /// before `now`, over `movements` given as (time in unix ms, wallet, asset, amount). The
    /// one definition of the window, used by the signer nodes, the offline signer and the
    /// online estimate alike.
    pub fn moved<'a>(
        &self,
        now: Timestamp,
        movements: impl IntoIterator<Item = (i64, &'a str, &'a str, Amount)>,
    ) -> Amount {
        let period = i64::try_from(self.period_secs.saturating_mul(1000)).unwrap_or(i64::MAX);
        let since = now.unix_ms().saturating_sub(period);
        movements
            .into_iter()
            .filter(|(at, _, asset, _)| *at > since && *asset == self.asset)
            .filter(|(_, wallet, _, _)| self.wallet.as_deref().is_none_or(|w| w == *wallet))
            .fold(Amount::ZERO, |acc, (_, _, _, amount)| acc.checked_add(amount).unwrap_or(acc))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    pub version: u64,
    pub rules: Vec<Rule>,
    #[serde(default)]
    pub velocity: Vec<VelocityLimit>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyError {
    #[error("policy is not valid TOML for a policy: {0}")]
    Parse(String),
    #[error("policy has no rules")]
    NoRules,
    #[error("the last rule must match everything (no `when`), so every request gets a decision")]
    NoDefault,
    #[error("rule name {0:?} is used twice")]
    DuplicateName(String),
    #[error("rule {0}: min_amount is above max_amount")]
    EmptyRange(String),
    #[error("rule {0}: approvals need a count from 1 to 10 and at least one role")]
    BadApprovals(String),
    #[error("rule {0}: hours must be below 24")]
    BadHours(String),
    #[error("velocity limit {0}: the period must be at least one second")]
    BadPeriod(String),
}

impl Policy {
    pub fn from_toml(text: &str) -> Result<Policy, PolicyError> {
        let p: Policy = toml::from_str(text).map_err(|e| PolicyError::Parse(e.to_string()))?;
        p.validate()?;
        Ok(p)
    }

    /// Refuse policies that could leave a request undecided or say something impossible.
    pub fn validate(&self) -> Result<(), PolicyError> {
        let last = self.rules.last().ok_or(PolicyError::NoRules)?;
        if last.when != Conditions::default() {
            return Err(PolicyError::NoDefault);
        }
        let mut names = BTreeSet::new();
        for r in &self.rules {
            if !names.insert(r.name.as_str()) {
                return Err(PolicyError::DuplicateName(r.name.clone()));
            }
            if let (Some(min), Some(max)) = (r.when.min_amount, r.when.max_amount) {
                if min > max {
                    return Err(PolicyError::EmptyRange(r.name.clone()));
                }
            }
            if let Action::Approvals { count, roles } = &r.action {
                if !(1..=10).contains(count) || roles.is_empty() {
                    return Err(PolicyError::BadApprovals(r.name.clone()));
                }
            }
            if r.when.utc_hours.is_some_and(|[a, b]| a > 23 || b > 23) {
                return Err(PolicyError::BadHours(r.name.clone()));
            }
        }
        for v in &self.velocity {
            if v.period_secs == 0 {
                return Err(PolicyError::BadPeriod(v.name.clone()));
            }
            if !names.insert(v.name.as_str()) {
                return Err(PolicyError::DuplicateName(v.name.clone()));
            }
        }
        Ok(())
    }
}

/// A withdrawal (or internal transfer) as the policy sees it.
#[derive(Debug, Clone)]
pub struct Request<'a> {
    pub intent: &'a Intent,
    pub intent_hash: IntentHash,
    pub tier: Tier,
    pub destination: Destination,
    /// The member who asked for it, and as what.
    pub initiator: &'a str,
    pub initiator_role: Role,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Allow,
    /// Not yet: `have` valid approvals of `need`; why others did not count.
    Wait {
        have: usize,
        need: usize,
        not_counted: Vec<String>,
    },
    Block(String),
}

/// What the policy decided, and which rule (or velocity limit) of which version decided it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub outcome: Outcome,
    pub rule: String,
    pub version: u64,
}

impl Decision {
    pub fn allowed(&self) -> bool {
        self.outcome == Outcome::Allow
    }
}

/// Decide `req` under `policy`. `moved` says how much of a velocity limit's asset already
/// left in its current window (the caller counts, from what it has itself signed).
pub fn evaluate(
    policy: &Policy,
    members: &BTreeMap<String, Member>,
    req: &Request<'_>,
    approvals: &[Approval],
    moved: &dyn Fn(&VelocityLimit) -> Amount,
    now: Timestamp,
) -> Decision {
    let decide =
        |outcome, rule: &str| Decision { outcome, rule: rule.to_owned(), version: policy.version };
    let intent = req.intent;
    let leaves = req.destination != Destination::Internal;
    for v in policy.velocity.iter().filter(|_| leaves) {
        let applies = v.asset == intent.asset.symbol.as_str()
            && v.wallet.as_deref().is_none_or(|w| w == intent.source_wallet.as_str());
        if !applies {
            continue;
        }
        let after = moved(v).checked_add(intent.amount);
        if after.is_err() || after.is_ok_and(|a| a > v.max_amount) {
            return decide(
                Outcome::Block(format!(
                    "velocity limit {}: {} {} per {} s would be exceeded",
                    v.name, v.max_amount, v.asset, v.period_secs
                )),
                &v.name,
            );
        }
    }
    let Some(rule) = policy.rules.iter().find(|r| matches(&r.when, req, now)) else {
        return decide(Outcome::Block("no rule matches".into()), "");
    };
    match &rule.action {
        Action::Allow => decide(Outcome::Allow, &rule.name),
        Action::Block { reason } => decide(Outcome::Block(reason.clone()), &rule.name),
        Action::Approvals { count, roles } => {
            let mut counted = BTreeSet::new();
            let mut not_counted = Vec::new();
            for a in approvals {
                let Some(m) = members.get(&a.approver) else {
                    not_counted.push(format!("{}: not a member", a.approver));
                    continue;
                };
                if a.approver == req.initiator {
                    not_counted.push(format!(
                        "{}: the initiator never approves their own request",
                        a.approver
                    ));
                    continue;
                }
                if !m.roles.iter().any(|r| roles.contains(r)) {
                    not_counted.push(format!("{}: lacks the role this rule needs", a.approver));
                    continue;
                }
                if let Err(e) = a.verify(m, &req.intent_hash, policy.version, now) {
                    not_counted.push(e.to_string());
                    continue;
                }
                if !counted.insert(a.approver.as_str()) {
                    not_counted
                        .push(format!("{}: already counted (one approval per person)", a.approver));
                }
            }
            let need = usize::from(*count);
            if counted.len() >= need {
                decide(Outcome::Allow, &rule.name)
            } else {
                decide(Outcome::Wait { have: counted.len(), need, not_counted }, &rule.name)
            }
        }
    }
}

fn matches(c: &Conditions, req: &Request<'_>, now: Timestamp) -> bool {
    let i = req.intent;
    let amount = i.amount;
    c.tier.is_none_or(|t| t == req.tier)
        && c.assets.as_ref().is_none_or(|a| a.iter().any(|s| s == i.asset.symbol.as_str()))
        && c.min_amount.is_none_or(|m| amount >= m)
        && c.max_amount.is_none_or(|m| amount <= m)
        && c.destinations.as_ref().is_none_or(|d| d.contains(&req.destination))
        && c.initiator_roles.as_ref().is_none_or(|r| r.contains(&req.initiator_role))
        && c.utc_hours.is_none_or(|[from, to]| {
            let hour = u8::try_from(now.unix_ms().rem_euclid(86_400_000) / 3_600_000).unwrap_or(0);
            if from <= to {
                (from..to).contains(&hour)
            } else {
                hour >= from || hour < to
            }
        })
}
