//! An online random forest for a binary label: Hoeffding trees (Domingos & Hulten, "Mining
//! high-speed data streams", KDD 2000) grown from a stream, combined as in Adaptive Random
//! Forests (Gomes et al., Machine Learning 2017) without its drift detectors: each tree sees
//! each labelled event `Poisson(6)` times (online bagging), and each leaf considers a random
//! subset of about √d features.
//!
//! A leaf keeps, per class, the weight seen and a Gaussian (weighted Welford mean and
//! variance, with the extremes) of each of its features. Every `grace` weight it scores
//! `candidates` thresholds per feature by the information gain the Gaussians predict, and
//! splits when the best beats the runner-up by more than the Hoeffding bound
//! `√(ln(1/δ) / 2n)` (or the bound is below `tau`: a tie). A leaf predicts with naive Bayes
//! over its Gaussians or with its class frequencies, whichever has been right more often
//! there ("naive Bayes adaptive"). Trees stop at `max_depth` and `max_nodes`, so the forest's
//! memory is bounded whatever the stream's length. Feed it prepared inputs
//! ([`crate::prep::Prep`]): the Gaussians fit logged amounts far better than raw ones.

use crate::Rng;

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct ForestConfig {
    pub trees: usize,
    /// The mean of the Poisson weight each tree gives an event.
    pub lambda: f64,
    /// Weight a leaf sees between split attempts.
    pub grace: f64,
    /// The Hoeffding bound's confidence.
    pub delta: f64,
    /// Split anyway when the bound is below this (the best candidates tie).
    pub tau: f64,
    pub max_depth: u32,
    /// Nodes per tree at most.
    pub max_nodes: usize,
    /// Thresholds tried per feature at a split attempt.
    pub candidates: usize,
    pub seed: u64,
}

impl Default for ForestConfig {
    fn default() -> Self {
        ForestConfig {
            trees: 20,
            lambda: 6.0,
            grace: 25.0,
            delta: 0.01,
            tau: 0.05,
            max_depth: 12,
            max_nodes: 511,
            candidates: 10,
            seed: 7,
        }
    }
}

/// A weighted running Gaussian of one feature within one class.
#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize)]
struct Gauss {
    n: f64,
    mean: f64,
    m2: f64,
    min: f64,
    max: f64,
    /// The floored spread and its logarithm, kept from the last `learn` (scoring is far more
    /// frequent than learning, which needs a label).
    floored_sd: f64,
    ln_sd: f64,
}

/// The spread below which a class's values count as one value.
const MIN_SD: f64 = 1e-2;

impl Default for Gauss {
    fn default() -> Self {
        Gauss {
            n: 0.0,
            mean: 0.0,
            m2: 0.0,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
            floored_sd: MIN_SD,
            ln_sd: MIN_SD.ln(),
        }
    }
}

impl Gauss {
    fn learn(&mut self, v: f64, w: f64) {
        self.n += w;
        let d = v - self.mean;
        self.mean += d * w / self.n;
        self.m2 += w * d * (v - self.mean);
        self.min = self.min.min(v);
        self.max = self.max.max(v);
        self.floored_sd = self.sd().max(MIN_SD);
        self.ln_sd = self.floored_sd.ln();
    }

    fn sd(&self) -> f64 {
        if self.n > 1.0 {
            (self.m2 / (self.n - 1.0)).max(0.0).sqrt()
        } else {
            0.0
        }
    }

    /// The share of this class's weight at or below `t`.
    fn below(&self, t: f64) -> f64 {
        let sd = self.sd();
        if sd < 1e-9 {
            return if self.mean <= t { 1.0 } else { 0.0 };
        }
        phi((t - self.mean) / sd)
    }

    /// ln of the density at `v` (the spread floored, so one repeated value is not certain).
    fn log_density(&self, v: f64) -> f64 {
        let z = (v - self.mean) / self.floored_sd;
        -0.5 * z * z - self.ln_sd - 0.918_938_533_204_672_7
    }
}

/// The standard normal CDF (Abramowitz & Stegun 7.1.26 for erf; error below 1.5e-7).
fn phi(z: f64) -> f64 {
    let x = z.abs() / std::f64::consts::SQRT_2;
    let t = 1.0 / (1.0 + 0.327_591_1 * x);
    let poly = t
        * (0.254_829_592
            + t * (-0.284_496_736
                + t * (1.421_413_741 + t * (-1.453_152_027 + t * 1.061_405_429))));
    let erf = 1.0 - poly * (-x * x).exp();
    if z >= 0.0 {
        0.5 * (1.0 + erf)
    } else {
        0.5 * (1.0 - erf)
    }
}

fn entropy(a: f64, b: f64) -> f64 {
    let n = a + b;
    if n <= 0.0 {
        return 0.0;
    }
    [a, b].iter().filter(|c| **c > 0.0).map(|c| -(c / n) * (c / n).log2()).sum()
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct Leaf {
    /// Weight seen per class (0: good, 1: bad).
    counts: [f64; 2],
    /// The features this leaf may split on, and their Gaussians per class.
    features: Vec<usize>,
    stats: Vec<[Gauss; 2]>,
    since: f64,
    depth: u32,
    /// Weight the class frequencies and naive Bayes each predicted right here.
    right_mc: f64,
    right_nb: f64,
}

impl Leaf {
    fn new(counts: [f64; 2], features: Vec<usize>, depth: u32) -> Leaf {
        let stats = vec![[Gauss::default(); 2]; features.len()];
        Leaf { counts, features, stats, since: 0.0, depth, right_mc: 0.0, right_nb: 0.0 }
    }

    fn p_mc(&self) -> f64 {
        let [g, b] = self.counts;
        (b + 0.5) / (g + b + 1.0)
    }

    fn p_nb(&self, x: &[f64]) -> f64 {
        let [g, b] = self.counts;
        if g <= 0.0 || b <= 0.0 {
            return self.p_mc();
        }
        let mut ll = [g.ln(), b.ln()];
        for (f, st) in self.features.iter().zip(&self.stats) {
            let v = x.get(*f).copied().unwrap_or(0.0);
            for (l, s) in ll.iter_mut().zip(st) {
                *l += s.log_density(v);
            }
        }
        let [lg, lb] = ll;
        1.0 / (1.0 + (lg - lb).clamp(-35.0, 35.0).exp())
    }

    fn predict(&self, x: &[f64]) -> f64 {
        if self.right_nb >= self.right_mc {
            self.p_nb(x)
        } else {
            self.p_mc()
        }
    }
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
enum Node {
    Leaf(Leaf),
    Split { feature: usize, threshold: f64, left: usize, right: usize },
}

/// What a leaf's split attempt decided.
struct SplitPlan {
    feature: usize,
    threshold: f64,
    left: [f64; 2],
    right: [f64; 2],
    depth: u32,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct Tree {
    nodes: Vec<Node>,
    rng: Rng,
}

impl Tree {
    fn subset(rng: &mut Rng, d: usize) -> Vec<usize> {
        let k = ((d as f64).sqrt() as usize + 1).min(d);
        let mut all: Vec<usize> = (0..d).collect();
        // A partial Fisher–Yates shuffle: the first k are a uniform subset.
        for i in 0..k {
            let j = i + rng.below(d - i);
            all.swap(i, j);
        }
        all.truncate(k);
        all
    }

    fn leaf_of(&self, x: &[f64]) -> usize {
        let mut at = 0;
        while let Some(Node::Split { feature, threshold, left, right }) = self.nodes.get(at) {
            let v = x.get(*feature).copied().unwrap_or(0.0);
            at = if v <= *threshold { *left } else { *right };
        }
        at
    }

    fn predict(&self, x: &[f64]) -> f64 {
        match self.nodes.get(self.leaf_of(x)) {
            Some(Node::Leaf(l)) => l.predict(x),
            _ => 0.5,
        }
    }

    fn learn(&mut self, x: &[f64], bad: bool, w: f64, d: usize, cfg: &ForestConfig) {
        let at = self.leaf_of(x);
        let room = self.nodes.len() + 2 <= cfg.max_nodes;
        let plan = match self.nodes.get_mut(at) {
            Some(Node::Leaf(leaf)) => {
                let truth = usize::from(bad);
                // Which way of predicting was right here, before learning the event.
                if (leaf.p_mc() >= 0.5) == bad {
                    leaf.right_mc += w;
                }
                if (leaf.p_nb(x) >= 0.5) == bad {
                    leaf.right_nb += w;
                }
                if let Some(c) = leaf.counts.get_mut(truth) {
                    *c += w;
                }
                for (f, st) in leaf.features.iter().zip(leaf.stats.iter_mut()) {
                    if let Some(g) = st.get_mut(truth) {
                        g.learn(x.get(*f).copied().unwrap_or(0.0), w);
                    }
                }
                leaf.since += w;
                if leaf.since >= cfg.grace && room && leaf.depth < cfg.max_depth {
                    leaf.since = 0.0;
                    plan_split(leaf, cfg)
                } else {
                    None
                }
            }
            _ => None,
        };
        if let Some(p) = plan {
            let left = self.nodes.len();
            let l = Leaf::new(p.left, Self::subset(&mut self.rng, d), p.depth + 1);
            let r = Leaf::new(p.right, Self::subset(&mut self.rng, d), p.depth + 1);
            self.nodes.push(Node::Leaf(l));
            self.nodes.push(Node::Leaf(r));
            if let Some(node) = self.nodes.get_mut(at) {
                *node = Node::Split {
                    feature: p.feature,
                    threshold: p.threshold,
                    left,
                    right: left + 1,
                };
            }
        }
    }

    fn memory_bytes(&self) -> usize {
        self.nodes
            .iter()
            .map(|n| {
                std::mem::size_of::<Node>()
                    + match n {
                        Node::Leaf(l) => {
                            l.features.len() * std::mem::size_of::<usize>()
                                + l.stats.len() * std::mem::size_of::<[Gauss; 2]>()
                        }
                        Node::Split { .. } => 0,
                    }
            })
            .sum()
    }
}

/// The best split a leaf's Gaussians predict, if the Hoeffding bound lets it split.
fn plan_split(leaf: &Leaf, cfg: &ForestConfig) -> Option<SplitPlan> {
    let [g, b] = leaf.counts;
    let n = g + b;
    if g <= 0.0 || b <= 0.0 {
        return None;
    }
    let parent = entropy(g, b);
    // The best threshold of each feature: (gain, feature, threshold, left counts).
    let mut per_feature: Vec<(f64, usize, f64, [f64; 2])> = Vec::new();
    for (f, [sg, sb]) in leaf.features.iter().zip(&leaf.stats) {
        let (lo, hi) = (sg.min.min(sb.min), sg.max.max(sb.max));
        // No spread yet (or no values: the extremes are still infinite).
        if hi.partial_cmp(&lo) != Some(std::cmp::Ordering::Greater) {
            continue;
        }
        let mut best: Option<(f64, usize, f64, [f64; 2])> = None;
        for j in 1..=cfg.candidates {
            let t = lo + (hi - lo) * j as f64 / (cfg.candidates + 1) as f64;
            let left = [sg.n * sg.below(t), sb.n * sb.below(t)];
            let [lg, lb] = left;
            let (rg, rb) = ((sg.n - lg).max(0.0), (sb.n - lb).max(0.0));
            let (nl, nr) = (lg + lb, rg + rb);
            if nl <= 0.0 || nr <= 0.0 {
                continue;
            }
            let gain = parent - (nl / n) * entropy(lg, lb) - (nr / n) * entropy(rg, rb);
            if best.is_none_or(|(bg, ..)| gain > bg) {
                // Class counts in the children, scaled to the leaf's own counts.
                let scale =
                    |c: f64, of: f64, total: f64| if of > 0.0 { c / of * total } else { 0.0 };
                best = Some((gain, *f, t, [scale(lg, sg.n, g), scale(lb, sb.n, b)]));
            }
        }
        per_feature.extend(best);
    }
    per_feature.sort_by(|a, b| b.0.total_cmp(&a.0));
    let (best_gain, feature, threshold, left) = *per_feature.first()?;
    let second = per_feature.get(1).map_or(0.0, |s| s.0);
    let eps = ((1.0 / cfg.delta).ln() / (2.0 * n)).sqrt();
    if best_gain <= 0.0 || !(best_gain - second > eps || eps < cfg.tau) {
        return None;
    }
    let right = [(g - left[0]).max(0.0), (b - left[1]).max(0.0)];
    Some(SplitPlan { feature, threshold, left, right, depth: leaf.depth })
}

/// The forest.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct OnlineForest {
    cfg: ForestConfig,
    trees: Vec<Tree>,
    features: usize,
    rng: Rng,
}

impl OnlineForest {
    pub fn new(features: usize, cfg: ForestConfig) -> Self {
        let rng = Rng::new(cfg.seed);
        let trees = (0..cfg.trees.max(1))
            .map(|i| {
                let mut t = Rng::new(cfg.seed ^ (0x9E37_79B9 * (i as u64 + 1)));
                let root = Leaf::new([0.0; 2], Tree::subset(&mut t, features.max(1)), 0);
                Tree { nodes: vec![Node::Leaf(root)], rng: t }
            })
            .collect();
        OnlineForest { cfg, trees, features: features.max(1), rng }
    }

    /// Probability that the event is bad: the trees' mean.
    pub fn predict(&self, x: &[f64]) -> f64 {
        let sum: f64 = self.trees.iter().map(|t| t.predict(x)).sum();
        sum / self.trees.len().max(1) as f64
    }

    /// Learn one labelled event.
    pub fn learn(&mut self, x: &[f64], bad: bool) {
        let OnlineForest { cfg, trees, features, rng } = self;
        for t in trees.iter_mut() {
            let k = poisson(rng, cfg.lambda);
            if k > 0 {
                t.learn(x, bad, f64::from(k), *features, cfg);
            }
        }
    }

    /// Bytes the trees hold (bounded by `max_nodes` per tree).
    pub fn memory_bytes(&self) -> usize {
        self.trees.iter().map(Tree::memory_bytes).sum()
    }

    /// Nodes in all trees (splits and leaves).
    pub fn nodes(&self) -> usize {
        self.trees.iter().map(|t| t.nodes.len()).sum()
    }
}

/// A Poisson sample with mean `lambda` (Knuth's method; `lambda` is small).
fn poisson(rng: &mut Rng, lambda: f64) -> u32 {
    let limit = (-lambda).exp();
    let mut p = 1.0;
    let mut k = 0u32;
    loop {
        p *= rng.unit();
        if p <= limit || k > 100 {
            return k;
        }
        k += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_normal_cdf_matches_known_values() {
        for (z, want) in
            [(0.0, 0.5), (1.0, 0.841_344_746), (-1.96, 0.024_997_895), (3.0, 0.998_650_102)]
        {
            assert!((phi(z) - want).abs() < 1e-6, "phi({z}) = {}", phi(z));
        }
    }

    #[test]
    fn it_learns_a_boundary_no_single_feature_draws_and_stays_bounded() {
        // Bad when the two features are on the same side of zero (an XOR a linear model
        // cannot draw), with noise features beside them.
        let mut rng = Rng::new(3);
        let mut f = OnlineForest::new(4, ForestConfig::default());
        let row = |rng: &mut Rng| {
            let x: Vec<f64> = (0..4).map(|_| rng.unit() * 2.0 - 1.0).collect();
            let bad = (x[0] > 0.0) == (x[1] > 0.0);
            (x, bad)
        };
        for _ in 0..20_000 {
            let (x, bad) = row(&mut rng);
            f.learn(&x, bad);
        }
        let mut right = 0;
        for _ in 0..1000 {
            let (x, bad) = row(&mut rng);
            if (f.predict(&x) >= 0.5) == bad {
                right += 1;
            }
        }
        assert!(right > 850, "{right} of 1000 right");
        assert!(f.nodes() <= 10 * ForestConfig::default().max_nodes);
    }
}
