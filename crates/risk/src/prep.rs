//! Feature preparation for money: learned in the same single pass as the models.
//!
//! Amounts, counts and times between events are heavy-tailed: a value may span ten orders of
//! magnitude, and min-max scaling then squeezes almost every row into a sliver near zero
//! while one whale sets the scale. Each feature is therefore
//! 1. sent through the signed log `sign(v)·ln(1 + |v|)` (monotone, so a tree splits on it
//!    as on the raw value, but its spread becomes about normal for amounts and counts);
//! 2. standardised online (Welford's running mean and variance of the logged values);
//! 3. winsorised at ±[`CLIP`] standard deviations, so one extreme row cannot dominate a
//!    linear model's gradient.
//!
//! A missing cell (`NaN`) is its own signal: it becomes 0 (the running mean) and sets the
//! feature's missing flag, which the models see as one more feature.

/// Standardised values are clipped to this many standard deviations.
pub const CLIP: f64 = 5.0;

/// `sign(v)·ln(1 + |v|)`.
pub fn signed_log(v: f64) -> f64 {
    v.signum() * v.abs().ln_1p()
}

#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
struct Running {
    n: f64,
    mean: f64,
    m2: f64,
}

impl Running {
    fn learn(&mut self, v: f64) {
        self.n += 1.0;
        let d = v - self.mean;
        self.mean += d / self.n;
        self.m2 += d * (v - self.mean);
    }

    fn standardise(&self, v: f64) -> f64 {
        let sd = if self.n > 1.0 { (self.m2 / (self.n - 1.0)).sqrt() } else { 0.0 };
        if sd > 1e-12 {
            ((v - self.mean) / sd).clamp(-CLIP, CLIP)
        } else {
            0.0
        }
    }
}

/// The online preparation of `d` raw features into `2d` model inputs: `d` standardised
/// signed logs, then `d` missing flags (0 or 1).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Prep {
    stats: Vec<Running>,
}

impl Prep {
    pub fn new(features: usize) -> Self {
        Prep { stats: vec![Running::default(); features] }
    }

    /// How many inputs [`Prep::transform`] makes.
    pub fn outputs(&self) -> usize {
        self.stats.len() * 2
    }

    /// The names of the inputs, from the raw features' names.
    pub fn names(features: &[String]) -> Vec<String> {
        features
            .iter()
            .map(|f| format!("log({f})"))
            .chain(features.iter().map(|f| format!("missing({f})")))
            .collect()
    }

    /// Learn the raw row `x` (missing cells are skipped).
    pub fn learn(&mut self, x: &[f64]) {
        for (s, v) in self.stats.iter_mut().zip(x) {
            if v.is_finite() {
                s.learn(signed_log(*v));
            }
        }
    }

    /// The model inputs for the raw row `x`, by what was learned so far.
    pub fn transform(&self, x: &[f64]) -> Vec<f64> {
        let d = self.stats.len();
        let mut out = vec![0.0; 2 * d];
        for (i, s) in self.stats.iter().enumerate() {
            match x.get(i).copied().filter(|v| v.is_finite()) {
                Some(v) => {
                    if let Some(o) = out.get_mut(i) {
                        *o = s.standardise(signed_log(v));
                    }
                }
                None => {
                    if let Some(o) = out.get_mut(d + i) {
                        *o = 1.0;
                    }
                }
            }
        }
        out
    }

    pub fn memory_bytes(&self) -> usize {
        self.stats.len() * std::mem::size_of::<Running>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heavy_tails_are_tamed_and_missing_cells_flagged() {
        let mut p = Prep::new(2);
        // Amounts over ten orders of magnitude; the second column sometimes missing.
        for i in 0..1000u32 {
            let amount = 10f64.powi((i % 11) as i32);
            let other = if i % 10 == 0 { f64::NAN } else { f64::from(i % 7) };
            p.learn(&[amount, other]);
        }
        let whale = p.transform(&[1e10, f64::NAN]);
        let small = p.transform(&[1.0, 3.0]);
        assert!(whale[0] > 1.0 && whale[0] <= CLIP, "{whale:?}");
        assert!(small[0] < -1.0, "{small:?}");
        assert_eq!((whale[1], whale[3]), (0.0, 1.0), "missing: mean value, flag set");
        assert_eq!(small[3], 0.0);
        // A value far beyond anything seen is clipped, not extrapolated.
        assert_eq!(p.transform(&[1e300, 0.0])[0], CLIP);
        assert_eq!(signed_log(-(std::f64::consts::E - 1.0)), -1.0);
    }
}
