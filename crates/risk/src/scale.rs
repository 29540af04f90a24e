//! Online min-max scaling.

/// Scales each feature to `[0, 1]` by the smallest and largest values seen so far.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct MinMax {
    min: Vec<f64>,
    max: Vec<f64>,
}

impl MinMax {
    pub fn new(features: usize) -> Self {
        MinMax { min: vec![f64::INFINITY; features], max: vec![f64::NEG_INFINITY; features] }
    }

    /// How many features it scales.
    pub fn features(&self) -> usize {
        self.min.len()
    }

    pub fn learn(&mut self, x: &[f64]) {
        for ((lo, hi), v) in self.min.iter_mut().zip(self.max.iter_mut()).zip(x) {
            *lo = lo.min(*v);
            *hi = hi.max(*v);
        }
    }

    /// `x` scaled by what was learned (clamped: an unseen extreme is 0 or 1; a feature with
    /// one value so far is 0).
    pub fn transform(&self, x: &[f64]) -> Vec<f64> {
        x.iter()
            .zip(self.min.iter().zip(&self.max))
            .map(|(v, (lo, hi))| if hi > lo { ((v - lo) / (hi - lo)).clamp(0.0, 1.0) } else { 0.0 })
            .collect()
    }
}
