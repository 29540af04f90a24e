//! The risk models on streams whose answer is known, the CSV reader's errors, and the
//! evaluation on the Shuttle benchmark (river's anchors: Half-Space Trees about 0.90 ROC
//! AUC, LODA about 0.96, over the first 10,000 rows).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::print_stdout
)] // Test code.

use std::io::Write;

use strongroom_risk::eval::{evaluate, read_table, EvalError, Models};
use strongroom_risk::ftrl::{Ftrl, FtrlConfig};
use strongroom_risk::hst::{HalfSpaceTrees, HstConfig};
use strongroom_risk::Rng;

#[test]
fn half_space_trees_score_a_point_far_from_the_mass_above_the_mass() {
    let mut rng = Rng::new(7);
    let mut hst = HalfSpaceTrees::new(2, &HstConfig::default());
    assert_eq!(hst.score(&[0.5, 0.5]), 0.0, "no reference before the first window");
    for _ in 0..1000 {
        let p = [0.2 + 0.1 * rng.unit(), 0.2 + 0.1 * rng.unit()];
        hst.learn(&p);
    }
    let inlier = hst.score(&[0.25, 0.25]);
    let outlier = hst.score(&[0.9, 0.85]);
    assert!(outlier > inlier + 0.3, "outlier {outlier} vs inlier {inlier}");
    assert!((0.0..=1.0).contains(&outlier));
}

#[test]
fn ftrl_learns_which_side_is_bad_and_says_why() {
    let names = vec!["amount_vs_usual".to_owned(), "noise".to_owned()];
    let mut m = Ftrl::new(&names, FtrlConfig::default());
    let mut rng = Rng::new(3);
    for _ in 0..3000 {
        let (a, noise) = (rng.unit(), rng.unit());
        m.learn(&[a, noise], a > 0.7);
    }
    let bad = m.predict(&[0.95, 0.5]);
    let good = m.predict(&[0.1, 0.5]);
    assert!(bad > 0.6 && good < 0.2, "bad {bad}, good {good}");
    let why = m.explain(&[0.95, 0.5], 3);
    assert!(why.iter().any(|(name, c)| name.contains("amount_vs_usual") && *c > 0.0), "{why:?}");
    assert!(!why.first().unwrap().0.starts_with("noise"), "{why:?}");
}

fn csv(text: &str) -> Vec<u8> {
    text.as_bytes().to_vec()
}

#[test]
fn the_csv_reader_names_what_it_cannot_use() {
    let err = read_table(csv("a,b,y\n1,2,0\n3,x,1\n").as_slice(), "y", &[], None).unwrap_err();
    assert!(matches!(&err, EvalError::NotNumeric { row: 3, column, .. } if column == "b"), "{err}");
    assert!(err.to_string().contains("--skip-column b"), "{err}");
    let err = read_table(csv("a,b,y\n1,,0\n").as_slice(), "y", &[], None).unwrap_err();
    assert!(matches!(err, EvalError::NotNumeric { row: 2, .. }), "a missing cell: {err}");
    let err = read_table(csv("a,b\n1,2\n").as_slice(), "y", &[], None).unwrap_err();
    assert!(err.to_string().contains("no column named \"y\" (columns: a, b)"), "{err}");
    let err = read_table(csv("a,y\n1,maybe\n").as_slice(), "y", &[], None).unwrap_err();
    assert!(matches!(err, EvalError::BadLabel { row: 2, .. }), "{err}");
    // Skipping the bad column works; a limit stops early; gzip is read too.
    let t = read_table(csv("a,b,y\n1,2,0\n3,x,1\n5,6,1\n").as_slice(), "y", &["b".into()], Some(2))
        .unwrap();
    assert_eq!(
        (t.features, t.rows, t.labels),
        (vec!["a".to_owned()], vec![vec![1.0], vec![3.0]], vec![false, true])
    );
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(b"a,y\n1,0\n2,1\n").unwrap();
    let t = read_table(gz.finish().unwrap().as_slice(), "y", &[], None).unwrap();
    assert_eq!(t.rows.len(), 2);
    // One class cannot be ranked.
    let t = read_table(csv("a,y\n1,0\n2,0\n").as_slice(), "y", &[], None).unwrap();
    assert!(matches!(evaluate(&t, &Models::default()), Err(EvalError::OneClass { .. })));
}

/// `../shared/data/river/shuttle.csv.gz` beside the repository (the project does not copy
/// it), or `STRONGROOM_SHUTTLE`.
fn shuttle() -> Option<std::path::PathBuf> {
    let path = std::env::var_os("STRONGROOM_SHUTTLE").map(Into::into).unwrap_or_else(|| {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../../shared/data/river/shuttle.csv.gz")
    });
    path.exists().then_some(path)
}

#[test]
fn progressive_validation_on_shuttle_beats_loda() {
    let Some(path) = shuttle() else {
        println!("SKIPPED: no Shuttle data (set STRONGROOM_SHUTTLE)");
        return;
    };
    let t = read_table(std::fs::File::open(path).unwrap(), "anomaly", &[], Some(10_000)).unwrap();
    assert_eq!((t.rows.len(), t.labels.iter().filter(|l| **l).count()), (10_000, 712));
    let r = evaluate(&t, &Models::default()).unwrap();
    for m in &r.models {
        println!("{:<40} ROC AUC {:.4}  PR AUC {:.4}", m.name, m.roc_auc, m.pr_auc);
    }
    let hst = &r.models[0];
    assert!(hst.roc_auc > 0.75, "half-space trees alone: {hst:?}");
    let best = r.best().unwrap();
    assert!(best.roc_auc > 0.96, "river's LODA reaches about 0.96: {best:?}");
}
