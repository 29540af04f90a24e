//! Progressive validation over a labelled CSV (plain or gzip): each row is scored by every
//! model first, then the models learn from it, the supervised ones with its label. No row is
//! ever scored by a model that has seen its label.

use std::io::Read;

use crate::deployed::Deployed;
use crate::forest::{ForestConfig, OnlineForest};
use crate::ftrl::{Ftrl, FtrlConfig};
use crate::hst::{HalfSpaceTrees, HstConfig};
use crate::metrics::{pr_auc, roc_auc};
use crate::prep::Prep;
use crate::scale::MinMax;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EvalError {
    #[error("cannot read the CSV: {0}")]
    Read(String),
    #[error("no column named {0:?} (columns: {1})")]
    NoLabel(String, String),
    #[error("row {row}, column {column:?}: {value:?} is not a number (leave the column out with --skip-column {column}, or take empty cells as missing with --missing-as-missing)")]
    NotNumeric { row: usize, column: String, value: String },
    #[error("row {row}: label {value:?} is not 0/1 or true/false")]
    BadLabel { row: usize, value: String },
    #[error("no feature columns are left")]
    NoFeatures,
    #[error("the rows need both labels to rank (found {positives} positive of {rows})")]
    OneClass { rows: usize, positives: usize },
}

/// One model's result.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelResult {
    pub name: &'static str,
    pub roc_auc: f64,
    pub pr_auc: f64,
    /// Rows scored and learned per second (when timed).
    pub rows_per_sec: Option<f64>,
    /// Bytes the model holds at the end (fixed, whatever the stream's length).
    pub bytes: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    pub rows: usize,
    pub positives: usize,
    pub features: Vec<String>,
    pub models: Vec<ModelResult>,
    /// Bytes the models hold (fixed, whatever the stream's length).
    pub model_bytes: usize,
}

impl Report {
    /// The model with the best ROC AUC.
    pub fn best(&self) -> Option<&ModelResult> {
        self.models.iter().max_by(|a, b| a.roc_auc.total_cmp(&b.roc_auc))
    }
}

/// One labelled data set of an evaluation folder (`datasets.toml`, `[[dataset]]` tables).
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatasetSpec {
    pub name: String,
    /// The CSV (plain or gzip), relative to the folder.
    pub file: String,
    /// The label column (0/1 or true/false).
    pub label: String,
    #[serde(default)]
    pub skip: Vec<String>,
    #[serde(default)]
    pub limit: Option<usize>,
    /// Take empty and `NA`-like cells as missing values.
    #[serde(default)]
    pub missing_as_missing: bool,
}

#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Suite {
    dataset: Vec<DatasetSpec>,
}

/// The data sets a folder's `datasets.toml` names, in order.
pub fn read_suite(toml_text: &str) -> Result<Vec<DatasetSpec>, EvalError> {
    let suite: Suite =
        toml::from_str(toml_text).map_err(|e| EvalError::Read(format!("datasets.toml: {e}")))?;
    if suite.dataset.is_empty() {
        return Err(EvalError::Read("datasets.toml names no [[dataset]]".into()));
    }
    Ok(suite.dataset)
}

/// One table for the reports of several data sets: each model's ROC AUC, PR AUC, rows per
/// second and bytes; then the best model (for one data set: its ROC and PR AUC on lines of
/// their own, for scripts).
pub fn table(reports: &[(String, Report)]) -> String {
    use std::fmt::Write;
    let mut out = format!(
        "{:<16} {:<36} {:>8} {:>8} {:>10} {:>10}\n",
        "data set", "model", "ROC AUC", "PR AUC", "rows/s", "bytes"
    );
    for (name, report) in reports {
        for m in &report.models {
            let _ = writeln!(
                out,
                "{:<16} {:<36} {:>8.4} {:>8.4} {:>10.0} {:>10}",
                name,
                m.name,
                m.roc_auc,
                m.pr_auc,
                m.rows_per_sec.unwrap_or(0.0),
                m.bytes
            );
        }
    }
    match reports {
        [(_, report)] => {
            if let Some(best) = report.best() {
                let _ = writeln!(
                    out,
                    "ROC AUC {:.4}\nPR AUC {:.4}\nbest: {}",
                    best.roc_auc, best.pr_auc, best.name
                );
            }
        }
        _ => {
            for (name, report) in reports {
                if let Some(best) = report.best() {
                    let _ = writeln!(
                        out,
                        "best on {name}: {} (ROC AUC {:.4})",
                        best.name, best.roc_auc
                    );
                }
            }
        }
    }
    out
}

/// Labelled rows read from a CSV.
#[derive(Debug, Clone)]
pub struct Table {
    pub features: Vec<String>,
    pub rows: Vec<Vec<f64>>,
    pub labels: Vec<bool>,
}

/// Read `input` (gzip is detected by its magic bytes), take `label` as the label column and
/// every other column not in `skip` as a numeric feature, at most `limit` rows.
pub fn read_table(
    input: impl Read,
    label: &str,
    skip: &[String],
    limit: Option<usize>,
) -> Result<Table, EvalError> {
    read_table_with(input, label, skip, limit, false)
}

/// The cells taken as missing with `missing_as_missing`.
pub const MISSING: [&str; 6] = ["", "NA", "NaN", "nan", "?", "null"];

/// [`read_table`]; with `missing_as_missing`, a cell in [`MISSING`] is a missing value
/// (`NaN`, which the prepared models see as its own signal) instead of an error.
pub fn read_table_with(
    mut input: impl Read,
    label: &str,
    skip: &[String],
    limit: Option<usize>,
    missing_as_missing: bool,
) -> Result<Table, EvalError> {
    let mut bytes = Vec::new();
    input.read_to_end(&mut bytes).map_err(|e| EvalError::Read(e.to_string()))?;
    if bytes.starts_with(&[0x1f, 0x8b]) {
        let mut plain = Vec::new();
        flate2::read::MultiGzDecoder::new(bytes.as_slice())
            .read_to_end(&mut plain)
            .map_err(|e| EvalError::Read(format!("gzip: {e}")))?;
        bytes = plain;
    }
    let mut reader = csv::ReaderBuilder::new().trim(csv::Trim::All).from_reader(bytes.as_slice());
    let headers: Vec<String> = reader
        .headers()
        .map_err(|e| EvalError::Read(e.to_string()))?
        .iter()
        .map(str::to_owned)
        .collect();
    let label_at = headers
        .iter()
        .position(|h| h == label)
        .ok_or_else(|| EvalError::NoLabel(label.to_owned(), headers.join(", ")))?;
    let used: Vec<usize> = (0..headers.len())
        .filter(|i| *i != label_at)
        .filter(|i| headers.get(*i).is_some_and(|h| !skip.contains(h)))
        .collect();
    if used.is_empty() {
        return Err(EvalError::NoFeatures);
    }
    let features: Vec<String> = used.iter().filter_map(|i| headers.get(*i).cloned()).collect();
    let (mut rows, mut labels) = (Vec::new(), Vec::new());
    for (n, record) in reader.records().enumerate() {
        if limit.is_some_and(|l| n >= l) {
            break;
        }
        let row_no = n + 2; // 1-based, after the header line
        let record = record.map_err(|e| EvalError::Read(e.to_string()))?;
        let cell = |i: usize| record.get(i).unwrap_or("");
        let value = cell(label_at);
        labels.push(match value {
            "1" | "true" | "True" | "1.0" => true,
            "0" | "false" | "False" | "0.0" => false,
            _ => return Err(EvalError::BadLabel { row: row_no, value: value.to_owned() }),
        });
        let mut row = Vec::with_capacity(used.len());
        for (i, name) in used.iter().zip(&features) {
            let text = cell(*i);
            if missing_as_missing && MISSING.contains(&text) {
                row.push(f64::NAN);
                continue;
            }
            let v: f64 = text.parse().ok().filter(|v: &f64| v.is_finite()).ok_or_else(|| {
                EvalError::NotNumeric { row: row_no, column: name.clone(), value: text.to_owned() }
            })?;
            row.push(v);
        }
        rows.push(row);
    }
    Ok(Table { features, rows, labels })
}

/// Models evaluated side by side.
#[derive(Debug, Clone, Default)]
pub struct Models {
    pub hst: HstConfig,
    pub ftrl: FtrlConfig,
    pub forest: ForestConfig,
}

/// A model under progressive validation: score a row, then learn it.
trait Learner {
    fn score(&mut self, x: &[f64]) -> f64;
    fn learn(&mut self, x: &[f64], bad: bool);
    fn memory_bytes(&self) -> usize;
}

/// Min-max scaled, missing cells at 0 (the old models' input).
fn scaled(s: &MinMax, x: &[f64]) -> Vec<f64> {
    s.transform(x).into_iter().map(|v| if v.is_finite() { v } else { 0.0 }).collect()
}

struct HstModel(MinMax, HalfSpaceTrees);

impl Learner for HstModel {
    fn score(&mut self, x: &[f64]) -> f64 {
        self.1.score(&scaled(&self.0, x))
    }
    fn learn(&mut self, x: &[f64], _: bool) {
        self.0.learn(x);
        self.1.learn(&scaled(&self.0, x));
    }
    fn memory_bytes(&self) -> usize {
        self.1.memory_bytes()
    }
}

struct FtrlModel(MinMax, Ftrl);

impl Learner for FtrlModel {
    fn score(&mut self, x: &[f64]) -> f64 {
        self.1.predict(&scaled(&self.0, x))
    }
    fn learn(&mut self, x: &[f64], bad: bool) {
        self.0.learn(x);
        self.1.learn(&scaled(&self.0, x), bad);
    }
    fn memory_bytes(&self) -> usize {
        self.1.memory_bytes()
    }
}

/// FTRL with the unsupervised score as one more feature.
struct FtrlHstModel {
    scaler: MinMax,
    hst: HalfSpaceTrees,
    ftrl: Ftrl,
    anomaly: f64,
}

impl Learner for FtrlHstModel {
    fn score(&mut self, x: &[f64]) -> f64 {
        let mut with = scaled(&self.scaler, x);
        self.anomaly = self.hst.score(&with);
        with.push(self.anomaly);
        self.ftrl.predict(&with)
    }
    fn learn(&mut self, x: &[f64], bad: bool) {
        self.scaler.learn(x);
        let mut with = scaled(&self.scaler, x);
        self.hst.learn(&with);
        with.push(self.anomaly);
        self.ftrl.learn(&with, bad);
    }
    fn memory_bytes(&self) -> usize {
        self.hst.memory_bytes() + self.ftrl.memory_bytes()
    }
}

/// A model that learns from labels, fed prepared features.
trait Supervised {
    fn predict(&self, x: &[f64]) -> f64;
    fn learn(&mut self, x: &[f64], bad: bool);
    fn memory_bytes(&self) -> usize;
}

impl Supervised for Ftrl {
    fn predict(&self, x: &[f64]) -> f64 {
        Ftrl::predict(self, x)
    }
    fn learn(&mut self, x: &[f64], bad: bool) {
        Ftrl::learn(self, x, bad);
    }
    fn memory_bytes(&self) -> usize {
        Ftrl::memory_bytes(self)
    }
}

impl Supervised for OnlineForest {
    fn predict(&self, x: &[f64]) -> f64 {
        OnlineForest::predict(self, x)
    }
    fn learn(&mut self, x: &[f64], bad: bool) {
        OnlineForest::learn(self, x, bad);
    }
    fn memory_bytes(&self) -> usize {
        OnlineForest::memory_bytes(self)
    }
}

/// Two models over the same inputs, their probabilities averaged.
impl<A: Supervised, B: Supervised> Supervised for (A, B) {
    fn predict(&self, x: &[f64]) -> f64 {
        0.5 * (self.0.predict(x) + self.1.predict(x))
    }
    fn learn(&mut self, x: &[f64], bad: bool) {
        self.0.learn(x, bad);
        self.1.learn(x, bad);
    }
    fn memory_bytes(&self) -> usize {
        self.0.memory_bytes() + self.1.memory_bytes()
    }
}

/// The model the engine deploys ([`Deployed`]): its calibrated probability, or with `.1`
/// its anomaly score alone (unsupervised).
struct DeployedModel(Deployed, bool);

impl Learner for DeployedModel {
    fn score(&mut self, x: &[f64]) -> f64 {
        if self.1 {
            self.0.anomaly(x)
        } else {
            self.0.probability(x)
        }
    }
    fn learn(&mut self, x: &[f64], bad: bool) {
        self.0.observe(x);
        if !self.1 {
            self.0.learn(x, bad);
        }
    }
    fn memory_bytes(&self) -> usize {
        self.0.memory_bytes()
    }
}

/// A supervised model over prepared features (signed logs standardised, missing flags).
struct Prepared<M>(Prep, M);

impl<M: Supervised> Learner for Prepared<M> {
    fn score(&mut self, x: &[f64]) -> f64 {
        self.1.predict(&self.0.transform(x))
    }
    fn learn(&mut self, x: &[f64], bad: bool) {
        self.0.learn(x);
        let p = self.0.transform(x);
        self.1.learn(&p, bad);
    }
    fn memory_bytes(&self) -> usize {
        self.0.memory_bytes() + self.1.memory_bytes()
    }
}

/// Progressive validation of every model over `table`.
pub fn evaluate(table: &Table, models: &Models) -> Result<Report, EvalError> {
    evaluate_timed(table, models, None)
}

/// [`evaluate`], timing each model with `clock` (a monotonic clock) for its rows per second.
pub fn evaluate_timed(
    table: &Table,
    models: &Models,
    clock: Option<&dyn Fn() -> std::time::Duration>,
) -> Result<Report, EvalError> {
    let positives = table.labels.iter().filter(|l| **l).count();
    if positives == 0 || positives == table.labels.len() {
        return Err(EvalError::OneClass { rows: table.labels.len(), positives });
    }
    let d = table.features.len();
    let mut with_hst = table.features.clone();
    with_hst.push("hst_score".into());
    let prepared = Prep::names(&table.features);
    let learners: Vec<(&'static str, Box<dyn Learner>)> = vec![
        (
            "half-space trees (unsupervised)",
            Box::new(HstModel(MinMax::new(d), HalfSpaceTrees::new(d, &models.hst))),
        ),
        (
            "ftrl logistic regression (labels)",
            Box::new(FtrlModel(MinMax::new(d), Ftrl::new(&table.features, models.ftrl.clone()))),
        ),
        (
            "ftrl + half-space trees score",
            Box::new(FtrlHstModel {
                scaler: MinMax::new(d),
                hst: HalfSpaceTrees::new(d, &models.hst),
                ftrl: Ftrl::new(&with_hst, models.ftrl.clone()),
                anomaly: 0.0,
            }),
        ),
        (
            "prepared: ftrl with pairs",
            Box::new(Prepared(Prep::new(d), Ftrl::new(&prepared, models.ftrl.clone()))),
        ),
        (
            "prepared: online forest",
            Box::new(Prepared(
                Prep::new(d),
                OnlineForest::new(prepared.len(), models.forest.clone()),
            )),
        ),
        (
            "prepared: ftrl (no pairs)",
            Box::new(Prepared(
                Prep::new(d),
                Ftrl::new(&prepared, FtrlConfig { pairs: false, ..models.ftrl.clone() }),
            )),
        ),
        (
            "prepared: forest + ftrl blend",
            Box::new(Prepared(
                Prep::new(d),
                (
                    OnlineForest::new(prepared.len(), models.forest.clone()),
                    Ftrl::new(&prepared, FtrlConfig { pairs: false, ..models.ftrl.clone() }),
                ),
            )),
        ),
        (
            "deployed: calibrated forest + ftrl",
            Box::new(DeployedModel(Deployed::new(&table.features, &models.hst), false)),
        ),
        (
            "deployed: half-space trees (prepared)",
            Box::new(DeployedModel(Deployed::new(&table.features, &models.hst), true)),
        ),
    ];
    let n = table.rows.len();
    let mut results = Vec::new();
    let mut model_bytes = 0;
    for (name, mut m) in learners {
        let started = clock.map(|c| c());
        let mut scores = Vec::with_capacity(n);
        for (x, bad) in table.rows.iter().zip(&table.labels) {
            // Score first, then learn (the label only now).
            scores.push(m.score(x));
            m.learn(x, *bad);
        }
        let rows_per_sec = match (clock, started) {
            (Some(c), Some(s)) => Some(n as f64 / c().saturating_sub(s).as_secs_f64().max(1e-9)),
            _ => None,
        };
        model_bytes += m.memory_bytes();
        results.push(ModelResult {
            name,
            roc_auc: roc_auc(&scores, &table.labels).unwrap_or(0.5),
            pr_auc: pr_auc(&scores, &table.labels).unwrap_or(0.0),
            rows_per_sec,
            bytes: m.memory_bytes(),
        });
    }
    Ok(Report {
        rows: n,
        positives,
        features: table.features.clone(),
        models: results,
        model_bytes,
    })
}
