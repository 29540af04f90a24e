//! Drift: has what the models see (a score, a feature) moved away from what they were tuned
//! on? The population stability index (PSI) of the current window against a reference
//! window, over bins cut at the reference's deciles:
//! `PSI = Σ (cᵢ − rᵢ) · ln(cᵢ / rᵢ)` with `rᵢ`, `cᵢ` the shares of each window in bin `i`
//! (smoothed, so an empty bin is not infinite). Below 0.1 nothing moved; 0.1–0.25 a moderate
//! shift; above [`ALERT_PSI`] a shift worth an alert. Memory is fixed: the bin edges and two
//! count vectors.

/// A PSI above this raises an alert.
pub const ALERT_PSI: f64 = 0.25;

const BINS: usize = 10;

/// One monitored quantity.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Drift {
    window: usize,
    /// The reference window's values until it is full, then empty.
    filling: Vec<f64>,
    /// Upper edges of the first `BINS - 1` bins (the last bin is open).
    edges: Vec<f64>,
    reference: [u32; BINS],
    current: [u32; BINS],
    /// The current window's values in arrival order are not kept: it restarts when full.
    seen: usize,
    last_psi: Option<f64>,
    /// Current windows completed so far.
    windows: u64,
}

impl Drift {
    /// Compare windows of `window` values (at least 100, so each decile holds ten).
    pub fn new(window: usize) -> Self {
        let window = window.max(100);
        Drift {
            window,
            filling: Vec::with_capacity(window),
            edges: Vec::new(),
            reference: [0; BINS],
            current: [0; BINS],
            seen: 0,
            last_psi: None,
            windows: 0,
        }
    }

    fn bin(&self, v: f64) -> usize {
        self.edges.iter().take_while(|e| v > **e).count()
    }

    /// Add a value. Returns the PSI each time a current window completes (then a new one
    /// starts); `None` otherwise. Values that are not finite are ignored.
    pub fn observe(&mut self, v: f64) -> Option<f64> {
        if !v.is_finite() {
            return None;
        }
        if self.edges.is_empty() {
            self.filling.push(v);
            if self.filling.len() >= self.window {
                let mut sorted = std::mem::take(&mut self.filling);
                sorted.sort_by(f64::total_cmp);
                let n = sorted.len();
                self.edges = (1..BINS).filter_map(|i| sorted.get(i * n / BINS).copied()).collect();
                self.edges.dedup();
                for x in &sorted {
                    let b = self.bin(*x);
                    if let Some(c) = self.reference.get_mut(b) {
                        *c += 1;
                    }
                }
            }
            return None;
        }
        let b = self.bin(v);
        if let Some(c) = self.current.get_mut(b) {
            *c += 1;
        }
        self.seen += 1;
        if self.seen < self.window {
            return None;
        }
        let psi = psi(&self.reference, &self.current);
        self.current = [0; BINS];
        self.seen = 0;
        self.last_psi = Some(psi);
        self.windows += 1;
        Some(psi)
    }

    /// How many current windows have completed (the number of the last one).
    pub fn windows(&self) -> u64 {
        self.windows
    }

    /// The PSI of the last complete window.
    pub fn last_psi(&self) -> Option<f64> {
        self.last_psi
    }
}

/// PSI between two histograms over the same bins (shares smoothed by half a count).
pub fn psi(reference: &[u32], current: &[u32]) -> f64 {
    let total = |h: &[u32]| h.iter().map(|c| f64::from(*c) + 0.5).sum::<f64>();
    let (tr, tc) = (total(reference), total(current));
    reference
        .iter()
        .zip(current)
        .map(|(r, c)| {
            let (r, c) = ((f64::from(*r) + 0.5) / tr, (f64::from(*c) + 0.5) / tc);
            (c - r) * (c / r).ln()
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Rng;

    #[test]
    fn a_shift_in_the_scores_is_flagged_and_the_same_distribution_is_not() {
        let mut rng = Rng::new(5);
        let mut d = Drift::new(1000);
        // The reference: uniform scores. Then a window from the same distribution.
        for _ in 0..1000 {
            assert_eq!(d.observe(rng.unit()), None);
        }
        let mut same = None;
        for _ in 0..1000 {
            same = d.observe(rng.unit()).or(same);
        }
        let same = same.unwrap();
        assert!(same < 0.05, "no drift: {same}");
        // Scores pushed up (fraud patterns the model no longer recognises, or new traffic).
        let mut moved = None;
        for _ in 0..1000 {
            moved = d.observe(0.5 + 0.5 * rng.unit()).or(moved);
        }
        let moved = moved.unwrap();
        assert!(moved > ALERT_PSI, "drift: {moved}");
        assert_eq!(d.last_psi(), Some(moved));
        assert!(d.observe(f64::NAN).is_none());
        // Identical histograms have no drift.
        assert_eq!(psi(&[10, 20, 30], &[10, 20, 30]), 0.0);
    }
}
