//! The decision on one withdrawal: lists first (a hit blocks), then the rules and the models
//! over the customer's features. Every decision carries its reasons.

use std::collections::HashMap;

use crate::ftrl::{Ftrl, FtrlConfig};
use crate::geo::GeoTable;
use crate::hst::{HalfSpaceTrees, HstConfig};
use crate::lists::Lists;
use crate::profile::{Activity, Bounds, Profile, WithdrawalEvent, FEATURES};
use crate::rules::{Hard, RuleSet};
use crate::scale::MinMax;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Allow,
    /// Paused until an analyst releases or rejects it.
    Review,
    Block,
}

impl Decision {
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Allow => "allow",
            Decision::Review => "review",
            Decision::Block => "block",
        }
    }
}

/// One reason, as reviewers see it.
#[derive(Debug, Clone, PartialEq)]
pub struct Reason {
    /// `list:sanctions`, `rule:NAME`, `model:half-space-trees`, `model:ftrl`.
    pub source: String,
    pub detail: String,
    pub points: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Assessment {
    pub decision: Decision,
    pub score: u32,
    pub reasons: Vec<Reason>,
    /// What shadow rules would have added (recorded, not applied).
    pub shadow: Vec<Reason>,
    /// The features, by name, as scored.
    pub features: Vec<(&'static str, f64)>,
    pub rules_version: u64,
}

/// Analysts' labels needed before the supervised model's score counts.
const MIN_LABELS: usize = 10;

#[derive(Debug)]
pub struct RiskEngine {
    rules: RuleSet,
    bounds: Bounds,
    profiles: HashMap<String, Profile>,
    scaler: MinMax,
    hst: HalfSpaceTrees,
    ftrl: Ftrl,
    labels: usize,
    models: bool,
    geo: Option<GeoTable>,
}

impl RiskEngine {
    pub fn new(rules: RuleSet) -> Self {
        let names: Vec<String> = FEATURES.iter().map(|f| (*f).to_owned()).collect();
        RiskEngine {
            rules,
            bounds: Bounds::default(),
            profiles: HashMap::new(),
            scaler: MinMax::new(FEATURES.len()),
            hst: HalfSpaceTrees::new(
                FEATURES.len(),
                &HstConfig { window: 64, ..HstConfig::default() },
            ),
            ftrl: Ftrl::new(&names, FtrlConfig::default()),
            labels: 0,
            models: true,
            geo: None,
        }
    }

    /// Place IP addresses with this table (impossible travel, new countries).
    pub fn set_geo(&mut self, geo: GeoTable) {
        self.geo = Some(geo);
    }

    /// Turn the models off (lists and rules only): the baseline of `strongroom bench risk`.
    pub fn set_models(&mut self, on: bool) {
        self.models = on;
    }

    pub fn rules(&self) -> &RuleSet {
        &self.rules
    }

    /// Replace the rule set (a new version).
    pub fn set_rules(&mut self, rules: RuleSet) {
        self.rules = rules;
    }

    fn features(&self, ev: &WithdrawalEvent) -> Vec<f64> {
        match self.profiles.get(&ev.customer) {
            Some(p) => p.features(ev, self.geo.as_ref()),
            None => Profile::default().features(ev, self.geo.as_ref()),
        }
    }

    /// Decide `ev` (nothing is learned: see [`RiskEngine::record`]).
    pub fn assess(&self, ev: &WithdrawalEvent, lists: &Lists) -> Assessment {
        let features = self.features(ev);
        let named: Vec<(&'static str, f64)> =
            FEATURES.iter().copied().zip(features.iter().copied()).collect();
        let mut reasons = Vec::new();
        let mut shadow = Vec::new();
        let mut hard: Option<Hard> = None;
        if let Some(hit) = lists.check(&ev.destination) {
            let label =
                if hit.label.is_empty() { String::new() } else { format!(" ({})", hit.label) };
            reasons.push(Reason {
                source: format!("list:{}", hit.kind.as_str()),
                detail: format!("{} is on {}{label}", ev.destination, hit.source),
                points: self.rules.block_at,
            });
            hard = Some(Hard::Block);
        }
        for r in self.rules.matching(&features) {
            let conditions: Vec<String> = r
                .all
                .iter()
                .map(|c| {
                    let v = named.iter().find(|(n, _)| *n == c.feature).map_or(0.0, |(_, v)| *v);
                    format!("{} = {v:.2}", c.feature)
                })
                .collect();
            let reason = Reason {
                source: format!("rule:{}", r.name),
                detail: conditions.join(", "),
                points: r.score,
            };
            if r.shadow {
                shadow.push(reason);
                continue;
            }
            hard = match (hard, r.action) {
                (Some(Hard::Block), _) | (_, Some(Hard::Block)) => Some(Hard::Block),
                (Some(Hard::Review), _) | (_, Some(Hard::Review)) => Some(Hard::Review),
                _ => None,
            };
            reasons.push(reason);
        }
        let scaled = self.scaler.transform(&features);
        let anomaly = if self.models { self.hst.score(&scaled) } else { 0.0 };
        if anomaly >= 0.8 {
            reasons.push(Reason {
                source: "model:half-space-trees".into(),
                detail: format!("unusual for all customers' withdrawals (anomaly {anomaly:.2})"),
                points: (anomaly * 30.0).round() as u32,
            });
        }
        let p =
            if self.models && self.labels >= MIN_LABELS { self.ftrl.predict(&scaled) } else { 0.0 };
        // Only what is more likely bad than not counts: p = 0.5 adds nothing, p = 1 adds 50.
        let points = ((p - 0.5).max(0.0) * 100.0).round() as u32;
        if points > 0 {
            let why: Vec<String> = self
                .ftrl
                .explain(&scaled, 3)
                .into_iter()
                .map(|(n, c)| format!("{n} {c:+.2}"))
                .collect();
            reasons.push(Reason {
                source: "model:ftrl".into(),
                detail: format!(
                    "like withdrawals analysts rejected: p = {p:.2} ({})",
                    why.join(", ")
                ),
                points,
            });
        }
        let score: u32 =
            reasons.iter().map(|r| r.points).sum::<u32>().min(self.rules.block_at.max(100));
        let decision = match hard {
            Some(Hard::Block) => Decision::Block,
            _ if score >= self.rules.block_at => Decision::Block,
            Some(Hard::Review) => Decision::Review,
            _ if score >= self.rules.review_at => Decision::Review,
            _ => Decision::Allow,
        };
        Assessment {
            decision,
            score,
            reasons,
            shadow,
            features: named,
            rules_version: self.rules.version,
        }
    }

    /// Learn `ev` as having happened (after it was assessed).
    pub fn record(&mut self, ev: &WithdrawalEvent) {
        let features = self.features(ev);
        self.scaler.learn(&features);
        if self.models {
            let scaled = self.scaler.transform(&features);
            self.hst.learn(&scaled);
        }
        let bounds = self.bounds;
        let geo = self.geo.as_ref();
        self.profiles.entry(ev.customer.clone()).or_default().record_withdrawal(ev, &bounds, geo);
    }

    pub fn record_activity(&mut self, customer: &str, a: &Activity, at_ms: i64) {
        let bounds = self.bounds;
        let geo = self.geo.as_ref();
        self.profiles
            .entry(customer.to_owned())
            .or_default()
            .record_activity(a, at_ms, &bounds, geo);
    }

    /// An analyst's decision on an assessed withdrawal (`features` as assessed).
    pub fn feedback(&mut self, features: &[f64], rejected: bool) {
        let scaled = self.scaler.transform(features);
        self.ftrl.learn(&scaled, rejected);
        self.labels += 1;
    }

    /// Memory one customer's profile can take at most (identifiers up to 64 bytes).
    pub fn max_bytes_per_customer(&self) -> usize {
        Profile::max_bytes(&self.bounds, 64)
    }
}
