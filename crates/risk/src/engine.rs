//! The decision on one withdrawal: lists first (a hit blocks), then the rules and the models
//! over the customer's features. Every decision carries its reasons.
//!
//! The engine holds the customers' profiles in a bounded cache: whoever runs it loads a
//! customer's profile before it is used ([`RiskEngine::load_profile`]) and keeps what was
//! learned ([`RiskEngine::take_dirty_profiles`], [`RiskEngine::take_models`]) outside the
//! process, so a restart or another instance carries on from the same state.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::deployed::Deployed;
use crate::drift::{Drift, ALERT_PSI};
use crate::geo::GeoTable;
use crate::hst::HstConfig;
use crate::lists::Lists;
use crate::profile::{Activity, Bounds, Profile, ProfileError, WithdrawalEvent, FEATURES};
use crate::rules::{Hard, RuleSet};

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
    /// `list:sanctions`, `rule:NAME`, `model:half-space-trees`, `model:forest+ftrl`.
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
    /// The live model's figures (with the models on).
    pub model: Option<ModelScore>,
    /// The shadow model's, scored beside it without deciding.
    pub shadow_model: Option<ModelScore>,
}

/// What one version of the model said about a withdrawal.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ModelScore {
    /// Its version in the registry (0: the built-in starting model).
    pub version: i64,
    /// Calibrated probability that analysts would reject it.
    pub probability: f64,
    pub anomaly: f64,
}

/// A model trained on labelled history, ready to register.
#[derive(Debug, Clone)]
pub struct Trained {
    /// The model's encoding (what [`RiskEngine::install_live`] takes).
    pub model: Vec<u8>,
    pub labels: usize,
    pub positives: usize,
    /// Progressive validation over the history (each label scored before it was learned).
    pub roc_auc: Option<f64>,
    pub pr_auc: Option<f64>,
}

/// The deployed model's encoding version (the first byte).
const MODEL_ENCODING: u8 = 1;

/// Encode a model for the registry.
pub fn encode_model(d: &Deployed) -> Vec<u8> {
    let mut out = vec![MODEL_ENCODING];
    out.extend(postcard::to_allocvec(d).unwrap_or_default());
    out
}

/// A model from [`encode_model`]'s bytes, over the engine's features.
pub fn decode_model(bytes: &[u8]) -> Result<Deployed, SnapshotError> {
    let (v, rest) = bytes.split_first().ok_or(SnapshotError::Malformed("empty".into()))?;
    if *v != MODEL_ENCODING {
        return Err(SnapshotError::Version(*v));
    }
    let d: Deployed =
        postcard::from_bytes(rest).map_err(|e| SnapshotError::Malformed(e.to_string()))?;
    if d.features() != FEATURES.len() {
        return Err(SnapshotError::Features { found: d.features(), expected: FEATURES.len() });
    }
    Ok(d)
}

/// A fresh deployed model over the engine's features.
pub fn new_model() -> Deployed {
    let names: Vec<String> = FEATURES.iter().map(|f| (*f).to_owned()).collect();
    Deployed::new(&names, &HstConfig { window: 64, ..HstConfig::default() })
}

/// Train a fresh model on labelled history (features as assessed, whether analysts rejected
/// it), oldest first, with progressive validation.
pub fn train(history: &[(Vec<f64>, bool)]) -> Trained {
    let mut m = new_model();
    let mut scores = Vec::with_capacity(history.len());
    let labels: Vec<bool> = history.iter().map(|(_, b)| *b).collect();
    for (x, bad) in history {
        scores.push(m.probability(x));
        m.observe(x);
        m.learn(x, *bad);
    }
    Trained {
        model: encode_model(&m),
        labels: history.len(),
        positives: labels.iter().filter(|b| **b).count(),
        roc_auc: crate::metrics::roc_auc(&scores, &labels),
        pr_auc: crate::metrics::pr_auc(&scores, &labels),
    }
}

/// Analysts' labels needed before the supervised model's score counts.
const MIN_LABELS: usize = 10;

/// Profiles kept in memory by default (the rest are loaded when needed).
pub const DEFAULT_CACHED_PROFILES: usize = 100_000;

/// Assessments in each drift window (the first window is the reference).
pub const DEFAULT_DRIFT_WINDOW: usize = 1_000;

/// What the models learned from every customer's events: shared, fixed in size.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Models {
    /// Prepared features, anomaly trees, forest and FTRL, calibration.
    deployed: Deployed,
    /// The score's drift, then each feature's, in [`FEATURES`] order.
    drift: Vec<Drift>,
    /// The live model's version in the registry (0: the built-in starting model).
    live_version: i64,
    /// The shadow model and its version.
    shadow: Option<(i64, Deployed)>,
    /// Analysts' labels taken in, whichever model was live.
    labels_seen: u64,
}

/// A shift in what the engine sees, worth an alert: the score's or a feature's population
/// stability index over a completed window against the reference window.
#[derive(Debug, Clone, PartialEq)]
pub struct DriftAlert {
    /// `score` or a feature's name.
    pub what: &'static str,
    pub psi: f64,
    /// The window's number (1 for the first after the reference): with `what`, the alert's
    /// identity.
    pub window: u64,
}

/// The models' snapshot encoding version (the first byte).
const MODELS_ENCODING: u8 = 1;

/// Why a models snapshot was not taken back.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SnapshotError {
    #[error("a models snapshot of version {0} (this build reads version {MODELS_ENCODING})")]
    Version(u8),
    #[error("a malformed models snapshot: {0}")]
    Malformed(String),
    #[error("the snapshot's models take {found} features; this engine computes {expected}")]
    Features { found: usize, expected: usize },
}

fn drifts(window: usize) -> Vec<Drift> {
    (0..=FEATURES.len()).map(|_| Drift::new(window)).collect()
}

#[derive(Debug)]
struct Slot {
    profile: Profile,
    /// Changed since it was last taken by [`RiskEngine::take_dirty_profiles`].
    dirty: bool,
    /// When it was last loaded or learned from (a counter), for eviction.
    used: u64,
}

/// The active customers' profiles, at most `capacity` of them unless more are waiting to
/// be kept; the least recently loaded or learned unchanged ones go first.
#[derive(Debug)]
struct ProfileCache {
    slots: HashMap<String, Slot>,
    capacity: usize,
    clock: u64,
}

impl ProfileCache {
    fn touch(&mut self, customer: &str) -> &mut Slot {
        self.clock += 1;
        let clock = self.clock;
        if !self.slots.contains_key(customer) {
            self.evict();
        }
        let slot = self.slots.entry(customer.to_owned()).or_insert_with(|| Slot {
            profile: Profile::default(),
            dirty: false,
            used: clock,
        });
        slot.used = clock;
        slot
    }

    /// Make room for one more: drop the oldest tenth of the unchanged profiles at once (so
    /// eviction costs O(1) a profile, amortised).
    fn evict(&mut self) {
        if self.slots.len() < self.capacity.max(1) {
            return;
        }
        let mut clean: Vec<(u64, &String)> =
            self.slots.iter().filter(|(_, s)| !s.dirty).map(|(k, s)| (s.used, k)).collect();
        if clean.is_empty() {
            return;
        }
        let n = (self.capacity / 10).clamp(1, clean.len());
        clean.select_nth_unstable(n - 1);
        let gone: Vec<String> = clean.iter().take(n).map(|(_, k)| (*k).clone()).collect();
        for k in gone {
            self.slots.remove(&k);
        }
    }
}

#[derive(Debug)]
pub struct RiskEngine {
    rules: RuleSet,
    bounds: Bounds,
    profiles: ProfileCache,
    models: Models,
    /// The models learned since [`RiskEngine::take_models`].
    models_changed: bool,
    use_models: bool,
    geo: Option<GeoTable>,
}

impl RiskEngine {
    pub fn new(rules: RuleSet) -> Self {
        RiskEngine {
            rules,
            bounds: Bounds::default(),
            profiles: ProfileCache {
                slots: HashMap::new(),
                capacity: DEFAULT_CACHED_PROFILES,
                clock: 0,
            },
            models: Models {
                deployed: new_model(),
                drift: drifts(DEFAULT_DRIFT_WINDOW),
                live_version: 0,
                shadow: None,
                labels_seen: 0,
            },
            models_changed: false,
            use_models: true,
            geo: None,
        }
    }

    /// Compare windows of `n` assessments (at least 100) for drift, from a new reference.
    pub fn set_drift_window(&mut self, n: usize) {
        self.models.drift = drifts(n);
    }

    /// Take in an assessment as made (once per withdrawal): the score's and features' drift.
    /// Returns the shifts past [`ALERT_PSI`] that this assessment completed a window on.
    pub fn observe(&mut self, a: &Assessment) -> Vec<DriftAlert> {
        let values =
            std::iter::once(("score", f64::from(a.score))).chain(a.features.iter().copied());
        let mut out = Vec::new();
        for (d, (what, v)) in self.models.drift.iter_mut().zip(values) {
            if let Some(psi) = d.observe(v) {
                if psi >= ALERT_PSI {
                    out.push(DriftAlert { what, psi, window: d.windows() });
                }
            }
        }
        self.models_changed = true;
        out
    }

    /// Keep at most `n` unchanged profiles in memory.
    pub fn set_profile_capacity(&mut self, n: usize) {
        self.profiles.capacity = n.max(1);
    }

    /// Profiles in memory now.
    pub fn cached_profiles(&self) -> usize {
        self.profiles.slots.len()
    }

    /// Whether `customer`'s profile is in memory (else load it before assessing or learning).
    pub fn has_profile(&self, customer: &str) -> bool {
        self.profiles.slots.contains_key(customer)
    }

    /// `customer`'s profile as kept (loaded, learned or new), if in memory.
    pub fn profile(&self, customer: &str) -> Option<&Profile> {
        self.profiles.slots.get(customer).map(|s| &s.profile)
    }

    /// Put `customer`'s stored profile in memory (replacing what was there).
    pub fn load_profile(&mut self, customer: &str, profile: Profile) {
        let slot = self.profiles.touch(customer);
        slot.profile = profile;
        slot.dirty = false;
    }

    /// Decode and load a stored profile.
    pub fn load_encoded_profile(
        &mut self,
        customer: &str,
        bytes: &[u8],
    ) -> Result<(), ProfileError> {
        let p = Profile::decode(bytes, &self.bounds)?;
        self.load_profile(customer, p);
        Ok(())
    }

    /// Drop `customer`'s profile from memory (another instance changed it).
    pub fn forget_profile(&mut self, customer: &str) {
        self.profiles.slots.remove(customer);
    }

    /// Drop every profile from memory.
    pub fn forget_profiles(&mut self) {
        self.profiles.slots.clear();
    }

    /// The profiles changed since the last call, encoded, to keep outside the process; they
    /// count as kept from now on.
    pub fn take_dirty_profiles(&mut self) -> Vec<(String, Vec<u8>)> {
        let mut out = Vec::new();
        for (k, s) in self.profiles.slots.iter_mut().filter(|(_, s)| s.dirty) {
            s.dirty = false;
            out.push((k.clone(), s.profile.encode()));
        }
        out.sort();
        out
    }

    /// The models, encoded, if they learned since the last call.
    pub fn take_models(&mut self) -> Option<Vec<u8>> {
        if !self.models_changed {
            return None;
        }
        self.models_changed = false;
        Some(self.models_snapshot())
    }

    /// The models, encoded (a version byte, then postcard).
    pub fn models_snapshot(&self) -> Vec<u8> {
        let mut out = vec![MODELS_ENCODING];
        out.extend(postcard::to_allocvec(&self.models).unwrap_or_default());
        out
    }

    /// Take back models from [`RiskEngine::models_snapshot`].
    pub fn restore_models(&mut self, bytes: &[u8]) -> Result<(), SnapshotError> {
        let (v, rest) = bytes.split_first().ok_or(SnapshotError::Malformed("empty".into()))?;
        if *v != MODELS_ENCODING {
            return Err(SnapshotError::Version(*v));
        }
        let m: Models =
            postcard::from_bytes(rest).map_err(|e| SnapshotError::Malformed(e.to_string()))?;
        if m.deployed.features() != FEATURES.len() {
            return Err(SnapshotError::Features {
                found: m.deployed.features(),
                expected: FEATURES.len(),
            });
        }
        self.models = m;
        self.models_changed = false;
        Ok(())
    }

    /// Make registry version `version` (bytes from [`encode_model`]) the live model; it goes
    /// on learning from here. The shadow, if it was that version, is the one taken (with what
    /// it learned while in shadow).
    pub fn install_live(&mut self, version: i64, bytes: &[u8]) -> Result<(), SnapshotError> {
        let model = match self.models.shadow.take() {
            Some((v, m)) if v == version => m,
            other => {
                self.models.shadow = other;
                decode_model(bytes)?
            }
        };
        self.models.deployed = model;
        self.models.live_version = version;
        self.models_changed = true;
        Ok(())
    }

    /// Score registry version `version` beside the live model (none: no shadow).
    pub fn install_shadow(&mut self, shadow: Option<(i64, &[u8])>) -> Result<(), SnapshotError> {
        self.models.shadow = match shadow {
            Some((v, bytes)) => Some((v, decode_model(bytes)?)),
            None => None,
        };
        self.models_changed = true;
        Ok(())
    }

    /// Analysts' labels the engine has taken in, whichever model was live.
    pub fn labels_seen(&self) -> u64 {
        self.models.labels_seen
    }

    /// The live model's registry version (0: the built-in one).
    pub fn live_version(&self) -> i64 {
        self.models.live_version
    }

    /// The shadow model's registry version.
    pub fn shadow_version(&self) -> Option<i64> {
        self.models.shadow.as_ref().map(|(v, _)| *v)
    }

    /// Analysts' labels the supervised model has learned from.
    pub fn labels(&self) -> usize {
        self.models.deployed.labels()
    }

    /// Place IP addresses with this table (impossible travel, new countries).
    pub fn set_geo(&mut self, geo: GeoTable) {
        self.geo = Some(geo);
    }

    /// Turn the models off (lists and rules only): the baseline of `strongroom bench risk`.
    pub fn set_models(&mut self, on: bool) {
        self.use_models = on;
    }

    pub fn rules(&self) -> &RuleSet {
        &self.rules
    }

    /// Replace the rule set (a new version).
    pub fn set_rules(&mut self, rules: RuleSet) {
        self.rules = rules;
    }

    fn features(&self, ev: &WithdrawalEvent) -> Vec<f64> {
        match self.profiles.slots.get(&ev.customer) {
            Some(s) => s.profile.features(ev, self.geo.as_ref()),
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
        let model = &self.models.deployed;
        let score_of = |version: i64, m: &Deployed| {
            let (anomaly, probability) = m.scores(&features);
            ModelScore { version, probability, anomaly }
        };
        let (live, shadow_model) = if self.use_models {
            (
                Some(score_of(self.models.live_version, model)),
                self.models.shadow.as_ref().map(|(v, m)| score_of(*v, m)),
            )
        } else {
            (None, None)
        };
        let anomaly = live.map_or(0.0, |l| l.anomaly);
        if anomaly >= 0.8 {
            reasons.push(Reason {
                source: "model:half-space-trees".into(),
                detail: format!("unusual for all customers' withdrawals (anomaly {anomaly:.2})"),
                points: (anomaly * 30.0).round() as u32,
            });
        }
        let p = match live {
            Some(l) if model.labels() >= MIN_LABELS => l.probability,
            _ => 0.0,
        };
        // Only what is more likely bad than not counts: p = 0.5 adds nothing, p = 1 adds 50.
        let points = ((p - 0.5).max(0.0) * 100.0).round() as u32;
        if points > 0 {
            let why: Vec<String> = model
                .explain(&features, 3)
                .into_iter()
                .map(|(n, c)| format!("{n} {c:+.2}"))
                .collect();
            reasons.push(Reason {
                source: "model:forest+ftrl".into(),
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
            model: live,
            shadow_model,
        }
    }

    /// Learn `ev` as having happened (after it was assessed).
    pub fn record(&mut self, ev: &WithdrawalEvent) {
        let features = self.features(ev);
        if self.use_models {
            self.models.deployed.observe(&features);
            if let Some((_, s)) = &mut self.models.shadow {
                s.observe(&features);
            }
        }
        self.models_changed = true;
        let (bounds, geo) = (self.bounds, self.geo.as_ref());
        let slot = self.profiles.touch(&ev.customer);
        slot.profile.record_withdrawal(ev, &bounds, geo);
        slot.dirty = true;
    }

    /// [`RiskEngine::record`] once per `id`: `false` (nothing learned) if the customer's
    /// profile took `id` in already, as when a pass is read again after a restart.
    pub fn record_once(&mut self, id: &str, ev: &WithdrawalEvent) -> bool {
        if !self.mark(&ev.customer, id) {
            return false;
        }
        self.record(ev);
        true
    }

    fn mark(&mut self, customer: &str, id: &str) -> bool {
        let bounds = self.bounds;
        let slot = self.profiles.touch(customer);
        if !slot.profile.mark_applied(id, &bounds) {
            return false;
        }
        slot.dirty = true;
        true
    }

    pub fn record_activity(&mut self, customer: &str, a: &Activity, at_ms: i64) {
        let (bounds, geo) = (self.bounds, self.geo.as_ref());
        let slot = self.profiles.touch(customer);
        slot.profile.record_activity(a, at_ms, &bounds, geo);
        slot.dirty = true;
    }

    /// [`RiskEngine::record_activity`] once per event `id`.
    pub fn record_activity_once(
        &mut self,
        id: &str,
        customer: &str,
        a: &Activity,
        at_ms: i64,
    ) -> bool {
        if !self.mark(customer, id) {
            return false;
        }
        self.record_activity(customer, a, at_ms);
        true
    }

    /// An analyst's decision on an assessed withdrawal (`features` as assessed).
    pub fn feedback(&mut self, features: &[f64], rejected: bool) {
        self.models.deployed.learn(features, rejected);
        self.models.labels_seen += 1;
        if let Some((_, s)) = &mut self.models.shadow {
            s.learn(features, rejected);
        }
        self.models_changed = true;
    }

    /// [`RiskEngine::feedback`] once per `id` (noted in `customer`'s profile).
    pub fn feedback_once(
        &mut self,
        id: &str,
        customer: &str,
        features: &[f64],
        rejected: bool,
    ) -> bool {
        if !self.mark(customer, id) {
            return false;
        }
        self.feedback(features, rejected);
        true
    }

    /// Memory one customer's profile can take at most.
    pub fn max_bytes_per_customer(&self) -> usize {
        Profile::max_bytes(&self.bounds)
    }
}
