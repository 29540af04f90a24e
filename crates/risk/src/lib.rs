//! Risk models that learn as events stream by, and their evaluation.
//!
//! - [`scale::MinMax`]: online min-max scaling to `[0, 1]`.
//! - [`hst::HalfSpaceTrees`]: unsupervised streaming anomaly scores (Tan, Ting & Liu 2011):
//!   random half-space trees whose mass profile in the last window is the reference; a point
//!   that falls where little mass was is anomalous.
//! - [`ftrl::Ftrl`]: FTRL-Proximal logistic regression (McMahan et al. 2013) over the scaled
//!   features and their pairwise products, learning from analysts' decisions one at a time;
//!   every score comes with each feature's contribution.
//! - [`prep::Prep`]: feature preparation for money, learned in the same pass: signed logs,
//!   online standardisation, winsorising, missing cells as their own signal.
//! - [`forest::OnlineForest`]: an online random forest of Hoeffding trees (online bagging,
//!   random feature subsets, naive-Bayes-adaptive leaves), bounded in memory.
//! - [`deployed::Deployed`]: what the engine runs: prepared features, Half-Space Trees over
//!   them, the forest and FTRL averaged and calibrated (online Platt scaling), with
//!   per-feature explanations.
//! - [`drift::Drift`]: the population stability index of a score or feature's current window
//!   against a reference window (deciles), with the level that raises an alert.
//! - [`metrics`]: ROC AUC (ties averaged) and PR AUC (average precision).
//! - [`eval`]: progressive validation over a labelled CSV: score each row with every model,
//!   then let them learn from it (the supervised model sees the label only after scoring).
//!
//! - [`lists`]: sanctions and scam address lists, normalised per chain.
//! - [`geo`]: IPv4 ranges → places, for impossible travel.
//! - [`profile`]: each customer's bounded history and the features of a withdrawal.
//! - [`rules`]: declarative versioned rules with scores, hard actions and shadow mode.
//! - [`engine`]: the decision (allow, review, block) with its reasons.
//!
//! Scores are `f64`: they are probabilities and ranks, never money. Pure apart from reading
//! the CSV given to [`eval`]; randomness comes from a seed.

pub mod deployed;
pub mod drift;
pub mod engine;
pub mod eval;
pub mod forest;
pub mod ftrl;
pub mod geo;
pub mod hst;
pub mod lists;
pub mod metrics;
pub mod prep;
pub mod profile;
pub mod rules;
pub mod scale;

/// SplitMix64: a small seeded generator, so models are reproducible.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % (n.max(1) as u64)) as usize
    }
}
