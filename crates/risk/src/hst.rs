//! Half-Space Trees (Tan, Ting & Liu, "Fast anomaly detection for streaming data", IJCAI
//! 2011). Each tree splits the unit cube in half on a random feature at each level. Each
//! node counts the points of the current window (`latest`) and keeps the counts of the last
//! full window (`reference`). A point's score is the reference mass along its path, weighted
//! by depth: points that fall where little mass was score low mass, i.e. high anomaly.

use crate::Rng;

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct Node {
    feature: usize,
    split: f64,
    reference: u32,
    latest: u32,
}

/// A full binary tree of `height` levels in an array (children of `i` at `2i+1`, `2i+2`).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct Tree {
    nodes: Vec<Node>,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct HalfSpaceTrees {
    trees: Vec<Tree>,
    height: u32,
    window: u32,
    seen: u32,
    /// No reference exists until the first window is full.
    warm: bool,
    /// Nodes with less reference mass than this end a path (too few points to trust).
    size_limit: u32,
}

#[derive(Debug, Clone)]
pub struct HstConfig {
    pub trees: usize,
    pub height: u32,
    pub window: u32,
    pub seed: u64,
}

impl Default for HstConfig {
    /// River's defaults: 10 trees, height 8, a window of 250.
    fn default() -> Self {
        HstConfig { trees: 10, height: 8, window: 250, seed: 42 }
    }
}

impl HalfSpaceTrees {
    /// Trees over `features` features scaled to `[0, 1]`.
    pub fn new(features: usize, cfg: &HstConfig) -> Self {
        let mut rng = Rng::new(cfg.seed);
        let height = cfg.height.clamp(1, 20);
        let size = (1usize << height) - 1;
        let trees = (0..cfg.trees)
            .map(|_| {
                // Each node halves the work range its ancestors left on its feature; the work
                // range starts as a random perturbation of [0, 1] (as in the paper).
                let mut ranges: Vec<Vec<(f64, f64)>> = vec![Vec::new(); size];
                let root: Vec<(f64, f64)> = (0..features)
                    .map(|_| {
                        let s = rng.unit();
                        let r = 2.0 * s.max(1.0 - s);
                        (s - r, s + r)
                    })
                    .collect();
                if let Some(r) = ranges.first_mut() {
                    *r = root;
                }
                let mut nodes = Vec::with_capacity(size);
                for i in 0..size {
                    let range = ranges.get(i).cloned().unwrap_or_default();
                    let feature = rng.below(features.max(1));
                    let (lo, hi) = range.get(feature).copied().unwrap_or((0.0, 1.0));
                    let split = (lo + hi) / 2.0;
                    for (child, half) in [(2 * i + 1, (lo, split)), (2 * i + 2, (split, hi))] {
                        if let Some(slot) = ranges.get_mut(child) {
                            let mut r = range.clone();
                            if let Some(f) = r.get_mut(feature) {
                                *f = half;
                            }
                            *slot = r;
                        }
                    }
                    nodes.push(Node { feature, split, reference: 0, latest: 0 });
                }
                Tree { nodes }
            })
            .collect();
        HalfSpaceTrees {
            trees,
            height,
            window: cfg.window.max(1),
            seen: 0,
            warm: false,
            size_limit: (cfg.window / 10).max(1),
        }
    }

    /// Anomaly score in `[0, 1]` for a scaled point: 1 minus its reference mass profile
    /// (normalised by the most a full window can give). Zero before the first window is full.
    pub fn score(&self, x: &[f64]) -> f64 {
        if !self.warm {
            return 0.0;
        }
        let mut total = 0.0;
        for t in &self.trees {
            let mut i = 0;
            let mut depth = 0;
            while let Some(n) = t.nodes.get(i) {
                let leaf = 2 * i + 1 >= t.nodes.len();
                if n.reference < self.size_limit || leaf {
                    total += f64::from(n.reference) * f64::from(1u32 << depth.min(30));
                    break;
                }
                let v = x.get(n.feature).copied().unwrap_or(0.0);
                i = if v < n.split { 2 * i + 1 } else { 2 * i + 2 };
                depth += 1;
            }
        }
        let most = self.trees.len() as f64
            * f64::from(self.window)
            * f64::from(1u32 << (self.height - 1).min(30));
        1.0 - (total / most).min(1.0)
    }

    /// Count the point in the current window; at the window's end it becomes the reference.
    pub fn learn(&mut self, x: &[f64]) {
        for t in &mut self.trees {
            let len = t.nodes.len();
            let mut i = 0;
            while let Some(n) = t.nodes.get_mut(i) {
                n.latest += 1;
                if 2 * i + 1 >= len {
                    break;
                }
                let v = x.get(n.feature).copied().unwrap_or(0.0);
                i = if v < n.split { 2 * i + 1 } else { 2 * i + 2 };
            }
        }
        self.seen += 1;
        if self.seen == self.window {
            for n in self.trees.iter_mut().flat_map(|t| t.nodes.iter_mut()) {
                n.reference = n.latest;
                n.latest = 0;
            }
            self.seen = 0;
            self.warm = true;
        }
    }

    /// Bytes held, whatever the stream's length.
    pub fn memory_bytes(&self) -> usize {
        self.trees.len() * ((1usize << self.height) - 1) * std::mem::size_of::<Node>()
    }
}
