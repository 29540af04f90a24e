//! Withdrawal policies: ordered rules, the first that matches decides; velocity limits cap
//! what moves per wallet and asset in a period, whatever the rules say. Every decision names
//! the rule (or limit) and the policy version that made it.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use strongroom_core::{Intent, IntentHash, Timestamp};
use strongroom_units::Amount;

use crate::approval::Approval;
use crate::member::Member;
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

/// The most one transaction may pay in fees on `chain`, in its fee asset's base units
/// (`fee_asset`, the chain's native coin), when it moves one of `assets` (any asset when
/// absent). The first entry that matches a movement applies; a movement whose fee no entry
/// bounds is refused by the signers (fail closed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeeCeiling {
    pub chain: String,
    pub fee_asset: String,
    #[serde(default)]
    pub assets: Option<Vec<String>>,
    pub max_fee: Amount,
}

/// An approval may not be made to last longer than this when the policy names no maximum.
pub const DEFAULT_APPROVAL_LIFETIME_SECS: u64 = 86_400;
/// Nor longer than this, whatever the policy says: a week-old "yes" is no approval.
pub const MAX_APPROVAL_LIFETIME_SECS: u64 = 7 * 86_400;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    pub version: u64,
    pub rules: Vec<Rule>,
    #[serde(default)]
    pub velocity: Vec<VelocityLimit>,
    /// Fee ceilings per chain (and asset moved).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fees: Vec<FeeCeiling>,
    /// How far ahead of the signer's clock an approval may expire (default one day, at most
    /// [`MAX_APPROVAL_LIFETIME_SECS`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_approval_lifetime_secs: Option<u64>,
    /// The message kinds (not transactions) the signers may sign; none unless listed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub messages: Vec<MessageKind>,
    /// Signers sign only movements leaving custody whose initiator signed the request
    /// themselves ([`crate::initiation`]): the exchange's backend with its API client key, or
    /// a staff member, a member of the log with the operator's role. Movements within custody
    /// (internal destinations) need none. Off by default for now.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub require_initiation: bool,
}

/// A message a signer node builds itself and signs (never a caller's bytes or digest).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MessageKind {
    /// "This key is ours": a statement naming the key and a verifier's challenge.
    ProofOfControl,
}

impl std::fmt::Display for MessageKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MessageKind::ProofOfControl => f.write_str("proof_of_control"),
        }
    }
}

impl Policy {
    /// The approval lifetime in force.
    pub fn approval_lifetime_secs(&self) -> u64 {
        self.max_approval_lifetime_secs.unwrap_or(DEFAULT_APPROVAL_LIFETIME_SECS)
    }

    /// The fee ceiling for moving `asset` on `chain`, if the policy names one.
    pub fn fee_ceiling(&self, chain: &str, asset: &str) -> Option<&FeeCeiling> {
        self.fees.iter().find(|f| {
            f.chain == chain && f.assets.as_ref().is_none_or(|a| a.iter().any(|x| x == asset))
        })
    }
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
    #[error("approvals may last at most {MAX_APPROVAL_LIFETIME_SECS} s, not {0} s")]
    ApprovalLifetime(u64),
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
        if self.max_approval_lifetime_secs.is_some_and(|l| l == 0 || l > MAX_APPROVAL_LIFETIME_SECS)
        {
            return Err(PolicyError::ApprovalLifetime(self.approval_lifetime_secs()));
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

/// Who asked for a movement, as far as the decider knows it. Roles are always the
/// governance log's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Initiator<'a> {
    /// Proven by the initiator's signature over what they asked
    /// ([`crate::initiation::Initiation`], checked by a signer).
    Attested { member: &'a str, roles: &'a [Role] },
    /// Named by the online side, unproven: counts for keeping the initiator's own approval
    /// out, but under `require_initiation` a signer refuses it.
    Claimed { member: &'a str, roles: &'a [Role] },
    /// Nobody is named.
    Unknown,
    /// The online estimate, made before the signers check who asked: the requirement is
    /// theirs to enforce.
    NotChecked,
}

impl<'a> Initiator<'a> {
    /// `member` as named by the online side, with their roles from `members` (none if they
    /// are not a member; `Unknown` if `member` is empty).
    pub fn claimed(member: &'a str, members: &'a BTreeMap<String, Member>) -> Initiator<'a> {
        if member.is_empty() {
            return Initiator::Unknown;
        }
        let roles = members.get(member).map_or(&[][..], |m| m.roles.as_slice());
        Initiator::Claimed { member, roles }
    }

    fn member(&self) -> Option<&'a str> {
        match self {
            Initiator::Attested { member, .. } | Initiator::Claimed { member, .. } => Some(member),
            _ => None,
        }
    }

    fn roles(&self) -> &'a [Role] {
        match self {
            Initiator::Attested { roles, .. } | Initiator::Claimed { roles, .. } => roles,
            _ => &[],
        }
    }
}

/// A withdrawal (or internal transfer) as the policy sees it.
#[derive(Debug, Clone)]
pub struct Request<'a> {
    pub intent: &'a Intent,
    pub intent_hash: IntentHash,
    pub tier: Tier,
    pub destination: Destination,
    /// Who asked for it.
    pub initiator: Initiator<'a>,
    /// The most the transaction can pay in fees, as a signer decoded it from the
    /// transaction; `None` where no transaction exists yet (the online estimate), which
    /// skips the fee ceiling and counts no fee.
    pub fee: Option<Amount>,
}

/// What a freeze stops.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum FreezeScope {
    Global,
    Asset { asset: String },
    Wallet { wallet: String },
}

impl std::fmt::Display for FreezeScope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FreezeScope::Global => f.write_str("global"),
            FreezeScope::Asset { asset } => write!(f, "asset {asset}"),
            FreezeScope::Wallet { wallet } => write!(f, "wallet {wallet}"),
        }
    }
}

/// Why the governance state stops a movement outright.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Block {
    #[error("frozen by governance ({scope}){}", until_ms.map(|u| format!(" until {u} ms")).unwrap_or_default())]
    Frozen {
        scope: FreezeScope,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        until_ms: Option<i64>,
    },
    #[error("no policy is in force: nothing may be signed")]
    NoPolicy,
    #[error("{address} is on the {list} whitelist but its time-lock runs until {until_ms} ms")]
    TimeLocked { list: String, address: String, until_ms: i64 },
    #[error("velocity limit {limit}: {max_amount} {asset} per {period_secs} s would be exceeded")]
    Velocity { limit: String, asset: String, max_amount: Amount, period_secs: u64 },
    #[error(
        "no fee ceiling in the policy bounds {asset} on {chain}: fees are not signed unbounded"
    )]
    NoFeeCeiling { chain: String, asset: String },
    #[error("the transaction may pay {fee} {fee_asset} in fees, above the ceiling of {ceiling}")]
    FeeAboveCeiling { fee_asset: String, fee: Amount, ceiling: Amount },
    /// The rule's own `block` action, with its governed reason.
    #[error("{reason}")]
    Rule { reason: String },
    #[error("no rule matches")]
    NoRuleMatches,
    #[error("the asset registry names no asset at {} on {chain}", contract.as_deref().unwrap_or("the native coin"))]
    UnknownAsset { chain: String, contract: Option<String> },
    #[error("the contract the transaction moves is registered as {registered} ({registered_decimals} decimals), not {claimed} ({claimed_decimals} decimals)")]
    AssetMislabelled {
        registered: String,
        registered_decimals: u8,
        claimed: String,
        claimed_decimals: u8,
    },
    #[error("{symbol} is registered, but its time-lock runs until {until_ms} ms")]
    AssetTimeLocked { symbol: String, until_ms: i64 },
    #[error("the policy does not let the signers sign {message} messages")]
    MessageNotAllowed { message: MessageKind },
    #[error("the intent cannot be hashed: {detail}")]
    Intent { detail: String },
    /// The customer has a passkey the signer has held past its time-lock, and the request
    /// carries no signature of theirs.
    #[error("customer {customer_id} signs their own withdrawals (a registered passkey), and this request carries no signature of theirs")]
    CustomerNotSigned { customer_id: String },
    /// The policy requires a signed initiation and the request has none (`claimed`: the
    /// member the online side named instead, if any).
    #[error("the policy requires the initiator's own signature on the request{}", claimed.as_deref().map(|c| format!(" ({c} is only named, not proven)")).unwrap_or_default())]
    Unattested { claimed: Option<String> },
    /// Governance moves this key's funds to another key: it pays only that key's address.
    #[error("key {key} is moving to {to} (governance entry {seq}): it pays only {address}")]
    KeyMigrating { key: String, to: String, address: String, seq: u64 },
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
    Block(Block),
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
    let asset = intent.asset.symbol.as_str();
    // What stays in custody (sweeps home, hot to cold) is the engine's own movement: its fee
    // is bounded and counted like any other, and it needs no initiator's signature.
    if policy.require_initiation
        && req.destination != Destination::Internal
        && !matches!(req.initiator, Initiator::Attested { .. } | Initiator::NotChecked)
    {
        let claimed = req.initiator.member().map(str::to_owned);
        return decide(Outcome::Block(Block::Unattested { claimed }), "require_initiation");
    }
    // The fee is bounded by the policy, whatever the intent's own cap says, and the fee
    // asset it is paid in counts against velocity even when the movement stays in custody:
    // a drain through fees is still a drain.
    let mut fee_spent: Option<(&str, Amount)> = None;
    if let Some(fee) = req.fee {
        let Some(ceiling) = policy.fee_ceiling(intent.chain.as_str(), asset) else {
            return decide(
                Outcome::Block(Block::NoFeeCeiling {
                    chain: intent.chain.as_str().to_owned(),
                    asset: asset.to_owned(),
                }),
                "fees",
            );
        };
        if fee > ceiling.max_fee {
            return decide(
                Outcome::Block(Block::FeeAboveCeiling {
                    fee_asset: ceiling.fee_asset.clone(),
                    fee,
                    ceiling: ceiling.max_fee,
                }),
                "fees",
            );
        }
        fee_spent = Some((ceiling.fee_asset.as_str(), fee));
    }
    let leaves = req.destination != Destination::Internal;
    for v in &policy.velocity {
        if v.wallet.as_deref().is_some_and(|w| w != intent.source_wallet.as_str()) {
            continue;
        }
        let mut adds = Amount::ZERO;
        if leaves && v.asset == asset {
            adds = intent.amount;
        }
        if let Some((_, fee)) = fee_spent.filter(|(a, _)| *a == v.asset) {
            adds = adds.checked_add(fee).unwrap_or(Amount::MAX);
        }
        if adds == Amount::ZERO {
            continue;
        }
        let after = moved(v).checked_add(adds);
        if after.is_err() || after.is_ok_and(|a| a > v.max_amount) {
            return decide(
                Outcome::Block(Block::Velocity {
                    limit: v.name.clone(),
                    asset: v.asset.clone(),
                    max_amount: v.max_amount,
                    period_secs: v.period_secs,
                }),
                &v.name,
            );
        }
    }
    let Some(rule) = policy.rules.iter().find(|r| matches(&r.when, req, now)) else {
        return decide(Outcome::Block(Block::NoRuleMatches), "");
    };
    match &rule.action {
        Action::Allow => decide(Outcome::Allow, &rule.name),
        Action::Block { reason } => {
            decide(Outcome::Block(Block::Rule { reason: reason.clone() }), &rule.name)
        }
        Action::Approvals { count, roles } => {
            let mut counted = BTreeSet::new();
            let mut not_counted = Vec::new();
            for a in approvals {
                let Some(m) = members.get(&a.approver) else {
                    not_counted.push(format!("{}: not a member", a.approver));
                    continue;
                };
                if req.initiator.member() == Some(a.approver.as_str()) {
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
                let longest = policy.approval_lifetime_secs().saturating_mul(1000);
                if a.expires_at.unix_ms().saturating_sub(now.unix_ms())
                    > i64::try_from(longest).unwrap_or(i64::MAX)
                {
                    not_counted.push(format!(
                        "{}: the approval lasts beyond the policy's {} s maximum",
                        a.approver,
                        policy.approval_lifetime_secs()
                    ));
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
        && c.initiator_roles
            .as_ref()
            .is_none_or(|r| req.initiator.roles().iter().any(|role| r.contains(role)))
        && c.utc_hours.is_none_or(|[from, to]| {
            let hour = u8::try_from(now.unix_ms().rem_euclid(86_400_000) / 3_600_000).unwrap_or(0);
            if from <= to {
                (from..to).contains(&hour)
            } else {
                hour >= from || hour < to
            }
        })
}
