//! FTRL-Proximal logistic regression (McMahan et al., "Ad click prediction: a view from the
//! trenches", KDD 2013, algorithm 1), over the features, their pairwise products and a bias.
//! It learns one labelled event at a time; `explain` gives each term's contribution to the
//! log-odds, which reviewers see beside the score.

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct FtrlConfig {
    pub alpha: f64,
    pub beta: f64,
    pub l1: f64,
    pub l2: f64,
    /// Add every pairwise product of features (lets a linear model draw curved borders).
    pub pairs: bool,
}

impl Default for FtrlConfig {
    fn default() -> Self {
        FtrlConfig { alpha: 0.1, beta: 1.0, l1: 0.0, l2: 1.0, pairs: true }
    }
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Ftrl {
    cfg: FtrlConfig,
    names: Vec<String>,
    /// Per-term accumulated gradients (z) and squared gradients (n).
    z: Vec<f64>,
    n: Vec<f64>,
    features: usize,
}

impl Ftrl {
    /// A model over features named `names` (values scaled to about `[0, 1]`).
    pub fn new(names: &[String], cfg: FtrlConfig) -> Self {
        let mut terms: Vec<String> = names.to_vec();
        if cfg.pairs {
            for (i, a) in names.iter().enumerate() {
                for b in names.iter().skip(i) {
                    terms.push(format!("{a}*{b}"));
                }
            }
        }
        terms.push("bias".into());
        let len = terms.len();
        Ftrl { cfg, names: terms, z: vec![0.0; len], n: vec![0.0; len], features: names.len() }
    }

    fn expand(&self, x: &[f64]) -> Vec<f64> {
        let x: Vec<f64> = (0..self.features).map(|i| x.get(i).copied().unwrap_or(0.0)).collect();
        let mut out = x.clone();
        if self.cfg.pairs {
            for (i, a) in x.iter().enumerate() {
                for b in x.iter().skip(i) {
                    out.push(a * b);
                }
            }
        }
        out.push(1.0);
        out
    }

    fn weight(&self, z: f64, n: f64) -> f64 {
        let c = &self.cfg;
        if z.abs() <= c.l1 {
            return 0.0;
        }
        -(z - c.l1.copysign(z)) / ((c.beta + n.sqrt()) / c.alpha + c.l2)
    }

    fn weights(&self) -> Vec<f64> {
        self.z.iter().zip(&self.n).map(|(z, n)| self.weight(*z, *n)).collect()
    }

    fn log_odds(w: &[f64], f: &[f64]) -> f64 {
        w.iter().zip(f).map(|(w, f)| w * f).sum::<f64>().clamp(-35.0, 35.0)
    }

    /// Probability that the event is bad.
    pub fn predict(&self, x: &[f64]) -> f64 {
        let f = self.expand(x);
        1.0 / (1.0 + (-Self::log_odds(&self.weights(), &f)).exp())
    }

    /// The `top` terms that moved the log-odds most, with their contributions.
    pub fn explain(&self, x: &[f64], top: usize) -> Vec<(String, f64)> {
        let f = self.expand(x);
        let mut c: Vec<(String, f64)> = self
            .names
            .iter()
            .zip(self.weights().iter().zip(&f))
            .map(|(name, (w, v))| (name.clone(), w * v))
            .filter(|(_, c)| *c != 0.0)
            .collect();
        c.sort_by(|a, b| b.1.abs().total_cmp(&a.1.abs()));
        c.truncate(top);
        c
    }

    /// Learn one labelled event (`bad`: the analyst's decision).
    pub fn learn(&mut self, x: &[f64], bad: bool) {
        let f = self.expand(x);
        let w = self.weights();
        let p = 1.0 / (1.0 + (-Self::log_odds(&w, &f)).exp());
        let y = if bad { 1.0 } else { 0.0 };
        for (((z, n), wi), fi) in self.z.iter_mut().zip(self.n.iter_mut()).zip(&w).zip(&f) {
            let g = (p - y) * fi;
            let sigma = ((*n + g * g).sqrt() - n.sqrt()) / self.cfg.alpha;
            *z += g - sigma * wi;
            *n += g * g;
        }
    }

    /// Bytes held, whatever the stream's length.
    pub fn memory_bytes(&self) -> usize {
        self.z.len() * 2 * std::mem::size_of::<f64>()
    }
}
