//! Progressive validation over a labelled CSV (plain or gzip): each row is scored by every
//! model first, then the models learn from it, the supervised ones with its label. No row is
//! ever scored by a model that has seen its label.

use std::io::Read;

use crate::ftrl::{Ftrl, FtrlConfig};
use crate::hst::{HalfSpaceTrees, HstConfig};
use crate::metrics::{pr_auc, roc_auc};
use crate::scale::MinMax;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EvalError {
    #[error("cannot read the CSV: {0}")]
    Read(String),
    #[error("no column named {0:?} (columns: {1})")]
    NoLabel(String, String),
    #[error("row {row}, column {column:?}: {value:?} is not a number (leave the column out with --skip-column {column})")]
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
    mut input: impl Read,
    label: &str,
    skip: &[String],
    limit: Option<usize>,
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
}

/// Progressive validation of every model over `table`.
pub fn evaluate(table: &Table, models: &Models) -> Result<Report, EvalError> {
    let positives = table.labels.iter().filter(|l| **l).count();
    if positives == 0 || positives == table.labels.len() {
        return Err(EvalError::OneClass { rows: table.labels.len(), positives });
    }
    let d = table.features.len();
    let mut scaler = MinMax::new(d);
    let mut hst = HalfSpaceTrees::new(d, &models.hst);
    let mut ftrl = Ftrl::new(&table.features, models.ftrl.clone());
    // The supervised model with the unsupervised score as one more feature.
    let mut names = table.features.clone();
    names.push("hst_score".into());
    let mut both = Ftrl::new(&names, models.ftrl.clone());
    let n = table.rows.len();
    let (mut s_hst, mut s_ftrl, mut s_both) =
        (Vec::with_capacity(n), Vec::with_capacity(n), Vec::with_capacity(n));
    for (x, bad) in table.rows.iter().zip(&table.labels) {
        // Score first...
        let scaled = scaler.transform(x);
        let anomaly = hst.score(&scaled);
        let mut with = scaled.clone();
        with.push(anomaly);
        s_hst.push(anomaly);
        s_ftrl.push(ftrl.predict(&scaled));
        s_both.push(both.predict(&with));
        // ...then learn (the label only now).
        scaler.learn(x);
        let scaled = scaler.transform(x);
        hst.learn(&scaled);
        ftrl.learn(&scaled, *bad);
        let mut with = scaled;
        with.push(anomaly);
        both.learn(&with, *bad);
    }
    let result = |name, s: &[f64]| ModelResult {
        name,
        roc_auc: roc_auc(s, &table.labels).unwrap_or(0.5),
        pr_auc: pr_auc(s, &table.labels).unwrap_or(0.0),
    };
    Ok(Report {
        rows: n,
        positives,
        features: table.features.clone(),
        models: vec![
            result("half-space trees (unsupervised)", &s_hst),
            result("ftrl logistic regression (labels)", &s_ftrl),
            result("ftrl + half-space trees score", &s_both),
        ],
        model_bytes: hst.memory_bytes() + ftrl.memory_bytes() + both.memory_bytes(),
    })
}
