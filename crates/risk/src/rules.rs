//! Declarative, versioned risk rules (TOML). Each rule is a conjunction of feature bounds and
//! an action: a score, or a hard `review` or `block`. A rule in shadow mode only records what
//! it would have done.

use serde::Deserialize;

use crate::profile::FEATURES;

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Condition {
    pub feature: String,
    pub at_least: Option<f64>,
    pub below: Option<f64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Hard {
    Review,
    Block,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    pub name: String,
    pub all: Vec<Condition>,
    #[serde(default)]
    pub score: u32,
    pub action: Option<Hard>,
    #[serde(default)]
    pub shadow: bool,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSet {
    pub version: u64,
    /// A total score at or above this pauses the withdrawal for review.
    pub review_at: u32,
    /// At or above this, blocks it.
    pub block_at: u32,
    #[serde(default)]
    pub rules: Vec<Rule>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RuleError {
    #[error("rules are not valid TOML for a rule set: {0}")]
    Parse(String),
    #[error("rule {rule}: unknown feature {feature:?} (known: {known})")]
    UnknownFeature { rule: String, feature: String, known: String },
    #[error("rule {0}: a condition needs at_least or below")]
    EmptyCondition(String),
    #[error("rule {0}: no score and no action: it would do nothing")]
    NoEffect(String),
    #[error("review_at must be above 0 and at most block_at")]
    Thresholds,
}

impl RuleSet {
    pub fn from_toml(text: &str) -> Result<RuleSet, RuleError> {
        let set: RuleSet = toml::from_str(text).map_err(|e| RuleError::Parse(e.to_string()))?;
        set.validate()?;
        Ok(set)
    }

    pub fn validate(&self) -> Result<(), RuleError> {
        if self.review_at == 0 || self.review_at > self.block_at {
            return Err(RuleError::Thresholds);
        }
        for r in &self.rules {
            if r.score == 0 && r.action.is_none() {
                return Err(RuleError::NoEffect(r.name.clone()));
            }
            for c in &r.all {
                if !FEATURES.contains(&c.feature.as_str()) {
                    return Err(RuleError::UnknownFeature {
                        rule: r.name.clone(),
                        feature: c.feature.clone(),
                        known: FEATURES.join(", "),
                    });
                }
                if c.at_least.is_none() && c.below.is_none() {
                    return Err(RuleError::EmptyCondition(r.name.clone()));
                }
            }
        }
        Ok(())
    }

    /// Rules whose conditions all hold for `features` (in `FEATURES` order).
    pub fn matching<'a>(&'a self, features: &'a [f64]) -> impl Iterator<Item = &'a Rule> + 'a {
        self.rules.iter().filter(move |r| {
            r.all.iter().all(|c| {
                let at = FEATURES.iter().position(|f| *f == c.feature);
                let v = at.and_then(|i| features.get(i)).copied().unwrap_or(0.0);
                c.at_least.is_none_or(|m| v >= m) && c.below.is_none_or(|m| v < m)
            })
        })
    }
}

/// The rules a new deployment starts with.
pub const DEFAULT_RULES: &str = r#"
version = 1
review_at = 50
# Scores add up; only a pile of them blocks on its own (lists and block rules block at once).
block_at = 150

[[rules]]
name = "unusual-amount-to-a-new-address-from-a-new-device"
all = [
  { feature = "amount_vs_median", at_least = 10.0 },
  { feature = "new_destination", at_least = 1.0 },
  { feature = "new_device", at_least = 1.0 },
]
action = "review"
score = 60

[[rules]]
name = "unusual-amount"
all = [{ feature = "amount_vs_median", at_least = 10.0 }]
score = 30

[[rules]]
name = "soon-after-a-security-change"
all = [{ feature = "hours_since_security_change", below = 24.0 }]
score = 30

[[rules]]
name = "day-total-far-above-usual"
all = [{ feature = "sum_24h_vs_median", at_least = 30.0 }]
score = 20

[[rules]]
name = "impossible-travel"
all = [{ feature = "travel_kmh", at_least = 1000.0 }]
score = 40

[[rules]]
name = "new-country"
all = [{ feature = "new_country", at_least = 1.0 }]
score = 20
shadow = true

[[rules]]
name = "burst"
all = [{ feature = "count_1h", at_least = 5.0 }]
score = 30
shadow = true
"#;
