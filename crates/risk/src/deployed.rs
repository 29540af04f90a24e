//! The model the engine deploys (issue 21, ADR 0015): the features prepared for money
//! ([`Prep`]: signed logs, online standardisation, winsorising), then
//!
//! - an anomaly score from Half-Space Trees over the prepared features squashed to `[0, 1]`
//!   (a whale no longer sets the scale for everyone, as it did under min-max scaling);
//! - the probability that analysts would reject it, from an online forest and FTRL averaged
//!   (the best pair on the public data sets), **calibrated** by online Platt scaling: a
//!   logistic regression on the blend's log-odds that learns from each label before the
//!   models do, so it is fitted on scores the models had not seen the answer to;
//! - per-decision explanations: each feature's contribution to the blend, measured by putting
//!   that feature back at its usual value (the running mean) and seeing how far the
//!   probability falls.
//!
//! Plain data: the whole model is kept with the engine's snapshot.

use serde::{Deserialize, Serialize};

use crate::forest::{ForestConfig, OnlineForest};
use crate::ftrl::{Ftrl, FtrlConfig};
use crate::hst::{HalfSpaceTrees, HstConfig};
use crate::prep::Prep;

/// The winsorised range of a prepared feature (±5 standard deviations).
const CLIP: f64 = 5.0;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Deployed {
    names: Vec<String>,
    prep: Prep,
    hst: HalfSpaceTrees,
    forest: OnlineForest,
    ftrl: Ftrl,
    /// Calibration: one input (the blend's log-odds) and a bias.
    platt: Ftrl,
    labels: usize,
}

fn logit(p: f64) -> f64 {
    let p = p.clamp(1e-6, 1.0 - 1e-6);
    (p / (1.0 - p)).ln()
}

impl Deployed {
    /// A model over features named `names`.
    pub fn new(names: &[String], hst: &HstConfig) -> Self {
        let d = names.len();
        let prepared: Vec<String> = names.iter().map(|n| format!("log({n})")).collect();
        Deployed {
            names: names.to_vec(),
            prep: Prep::new(d),
            hst: HalfSpaceTrees::new(d, hst),
            forest: OnlineForest::new(d, ForestConfig::default()),
            ftrl: Ftrl::new(&prepared, FtrlConfig { pairs: false, ..FtrlConfig::default() }),
            platt: Ftrl::new(
                &["blend_log_odds".to_owned()],
                FtrlConfig { pairs: false, alpha: 0.5, l2: 0.0, ..FtrlConfig::default() },
            ),
            labels: 0,
        }
    }

    /// How many features it takes.
    pub fn features(&self) -> usize {
        self.names.len()
    }

    /// The prepared features (standardised signed logs; the engine's features are never
    /// missing, so the missing flags are left out).
    fn prepared(&self, x: &[f64]) -> Vec<f64> {
        let mut p = self.prep.transform(x);
        p.truncate(self.names.len());
        p
    }

    fn squashed(p: &[f64]) -> Vec<f64> {
        p.iter().map(|v| ((v + CLIP) / (2.0 * CLIP)).clamp(0.0, 1.0)).collect()
    }

    /// Take in an event that happened (no label): the preparation and the anomaly trees learn.
    pub fn observe(&mut self, x: &[f64]) {
        self.prep.learn(x);
        let p = self.prepared(x);
        self.hst.learn(&Self::squashed(&p));
    }

    /// How unusual `x` is among all events (0: usual, 1: where nothing was).
    pub fn anomaly(&self, x: &[f64]) -> f64 {
        self.hst.score(&Self::squashed(&self.prepared(x)))
    }

    fn blend_prepared(&self, p: &[f64]) -> f64 {
        0.5 * (self.forest.predict(p) + self.ftrl.predict(p))
    }

    /// The models' uncalibrated probability that `x` is bad.
    pub fn raw(&self, x: &[f64]) -> f64 {
        self.blend_prepared(&self.prepared(x))
    }

    /// The anomaly score and the calibrated probability, preparing `x` once.
    pub fn scores(&self, x: &[f64]) -> (f64, f64) {
        let p = self.prepared(x);
        let anomaly = self.hst.score(&Self::squashed(&p));
        let probability = self.platt.predict(&[logit(self.blend_prepared(&p))]);
        (anomaly, probability)
    }

    /// The calibrated probability that `x` is bad.
    pub fn probability(&self, x: &[f64]) -> f64 {
        self.platt.predict(&[logit(self.raw(x))])
    }

    /// Learn a labelled event: calibration first, on the score the models give before they
    /// learn it.
    pub fn learn(&mut self, x: &[f64], bad: bool) {
        let before = self.raw(x);
        self.platt.learn(&[logit(before)], bad);
        let p = self.prepared(x);
        self.forest.learn(&p, bad);
        self.ftrl.learn(&p, bad);
        self.labels += 1;
    }

    /// Labels learned.
    pub fn labels(&self) -> usize {
        self.labels
    }

    /// The `k` features that raise the blend's probability most for `x`, with how much each
    /// adds (the probability with the feature minus with it at its usual value).
    pub fn explain(&self, x: &[f64], k: usize) -> Vec<(String, f64)> {
        let p = self.prepared(x);
        let full = self.blend_prepared(&p);
        let mut out: Vec<(String, f64)> = self
            .names
            .iter()
            .enumerate()
            .map(|(i, name)| {
                let mut usual = p.clone();
                if let Some(v) = usual.get_mut(i) {
                    *v = 0.0; // the running mean, standardised
                }
                (name.clone(), full - self.blend_prepared(&usual))
            })
            .filter(|(_, c)| *c > 0.0)
            .collect();
        out.sort_by(|a, b| b.1.total_cmp(&a.1));
        out.truncate(k);
        out
    }

    /// Bytes the models hold.
    pub fn memory_bytes(&self) -> usize {
        self.prep.memory_bytes()
            + self.hst.memory_bytes()
            + self.forest.memory_bytes()
            + self.ftrl.memory_bytes()
            + self.platt.memory_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Rng;

    /// A heavy-tailed stream: amounts spanning ten orders of magnitude; bad events are the
    /// ones in a band of large amounts (above the usual) with a new destination.
    fn stream(n: usize, seed: u64) -> Vec<(Vec<f64>, bool)> {
        let mut rng = Rng::new(seed);
        (0..n)
            .map(|_| {
                let amount = 10f64.powf(rng.unit() * 10.0);
                let new_dest = f64::from(u8::from(rng.unit() < 0.3));
                let noise = rng.unit();
                let bad = (1e6..1e8).contains(&amount) && new_dest > 0.0;
                (vec![amount, new_dest, noise], bad)
            })
            .collect()
    }

    fn names() -> Vec<String> {
        ["amount", "new_destination", "noise"].iter().map(|s| (*s).to_owned()).collect()
    }

    /// Gaussian noise (Box–Muller).
    fn normal(rng: &mut Rng) -> f64 {
        let (u, v) = (rng.unit().max(1e-12), rng.unit());
        (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
    }

    #[test]
    fn the_anomaly_score_is_not_fooled_by_heavy_tails() {
        use crate::metrics::roc_auc;
        use crate::scale::MinMax;
        // Amounts and counts are log-normal: most withdrawals are around 10^3, one in a few
        // hundred is a whale far out in the tail. The anomalies (1%) are amounts where
        // almost nothing is (10^7.5, 4.5 σ in log terms) with usual counts.
        let mut rng = Rng::new(21);
        let rows: Vec<(Vec<f64>, bool)> = (0..20_000)
            .map(|_| {
                let anomaly = rng.unit() < 0.01;
                let amount = if anomaly {
                    10f64.powf(7.5 + 0.2 * normal(&mut rng))
                } else if rng.unit() < 0.003 {
                    10f64.powf(11.0 + normal(&mut rng)) // a whale
                } else {
                    10f64.powf(3.0 + normal(&mut rng))
                };
                let count = (2.0 + normal(&mut rng)).exp().round();
                (vec![amount, count, rng.unit()], anomaly)
            })
            .collect();
        let mut prepared = Deployed::new(&names(), &HstConfig::default());
        let mut scaler = MinMax::new(3);
        let mut minmax = HalfSpaceTrees::new(3, &HstConfig::default());
        let (mut a, mut b, mut labels) = (Vec::new(), Vec::new(), Vec::new());
        for (x, anomaly) in &rows {
            a.push(prepared.anomaly(x));
            let s = scaler.transform(x);
            b.push(minmax.score(
                &s.iter().map(|v| if v.is_finite() { *v } else { 0.0 }).collect::<Vec<_>>(),
            ));
            labels.push(*anomaly);
            prepared.observe(x);
            scaler.learn(x);
            minmax.learn(&scaler.transform(x));
        }
        let (prep_auc, minmax_auc) = (roc_auc(&a, &labels).unwrap(), roc_auc(&b, &labels).unwrap());
        assert!(prep_auc > 0.9, "prepared {prep_auc}, min-max {minmax_auc}");
        assert!(prep_auc > minmax_auc + 0.2, "prepared {prep_auc}, min-max {minmax_auc}");
    }

    #[test]
    fn calibrated_probabilities_match_how_often_it_was_bad_and_explanations_name_the_cause() {
        let mut m = Deployed::new(&names(), &HstConfig::default());
        let mut scored = Vec::new();
        for (x, bad) in stream(6_000, 9) {
            m.observe(&x);
            if m.labels() > 1_000 {
                scored.push((m.raw(&x), m.probability(&x), bad));
            }
            m.learn(&x, bad);
        }
        // Brier score: calibrated no worse than raw; reliability per decile close.
        let brier = |f: &dyn Fn(&(f64, f64, bool)) -> f64| {
            scored.iter().map(|s| (f(s) - f64::from(u8::from(s.2))).powi(2)).sum::<f64>()
                / scored.len() as f64
        };
        let (raw, cal) = (brier(&|s| s.0), brier(&|s| s.1));

        assert!(cal <= raw * 1.02, "calibrated {cal} raw {raw}");
        // Expected calibration error over ten bins: how far what it says is from how often
        // it was bad, weighted by how often it says it.
        let ece = |f: &dyn Fn(&(f64, f64, bool)) -> f64| {
            (0..10)
                .map(|bin| {
                    let lo = f64::from(bin) / 10.0;
                    let b: Vec<_> = scored
                        .iter()
                        .filter(|s| f(s) >= lo && (f(s) < lo + 0.1 || bin == 9))
                        .collect();
                    let rate = b.iter().filter(|s| s.2).count() as f64 / b.len().max(1) as f64;
                    let said = b.iter().map(|s| f(s)).sum::<f64>() / b.len().max(1) as f64;
                    b.len() as f64 * (said - rate).abs()
                })
                .sum::<f64>()
                / scored.len() as f64
        };
        let (ece_raw, ece_cal) = (ece(&|s| s.0), ece(&|s| s.1));
        assert!(ece_cal < 0.02 && ece_cal * 3.0 < ece_raw, "calibrated {ece_cal} raw {ece_raw}");
        // A bad one: the amount and the new destination explain it, the noise does not.
        let why = m.explain(&[1e7, 1.0, 0.5], 3);
        let top: Vec<&str> = why.iter().take(2).map(|(n, _)| n.as_str()).collect();
        assert!(top.contains(&"amount") && top.contains(&"new_destination"), "{why:?}");
        assert!(m.probability(&[1e7, 1.0, 0.5]) > 0.8);
        assert!(m.probability(&[1e7, 0.0, 0.5]) < 0.2);
        assert!(m.probability(&[1e9, 1.0, 0.5]) < 0.2);
        // The model survives its encoding.
        let bytes = postcard::to_allocvec(&m).unwrap();
        let back: Deployed = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(back.probability(&[1e7, 1.0, 0.5]), m.probability(&[1e7, 1.0, 0.5]));
    }
}
