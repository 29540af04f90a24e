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

/// Money-like features: amounts over ten orders of magnitude, and a cell that is sometimes
/// missing. The bad rows sit in a band of amounts (no single threshold draws it) or miss the
/// cell. Min-max scaling squeezes the band into a sliver a linear model cannot see; prepared
/// features (signed logs, standardised, missing flags) and the online forest find it.
#[test]
fn prepared_features_and_the_forest_find_a_band_in_heavy_tailed_amounts() {
    let mut rng = Rng::new(11);
    let mut rows = Vec::new();
    let mut labels = Vec::new();
    for _ in 0..6000 {
        let magnitude = rng.unit() * 10.0;
        let amount = 10f64.powf(magnitude);
        let missing = rng.unit() < 0.05;
        let count = (rng.unit() * 50.0).floor();
        let bad = (4.0..5.5).contains(&magnitude) || missing;
        rows.push(vec![amount, if missing { f64::NAN } else { count }, rng.unit()]);
        labels.push(bad);
    }
    let t = strongroom_risk::eval::Table {
        features: vec!["amount".into(), "count".into(), "noise".into()],
        rows,
        labels,
    };
    let r = evaluate(&t, &Models::default()).unwrap();
    let auc = |name: &str| r.models.iter().find(|m| m.name == name).unwrap().roc_auc;
    for m in &r.models {
        println!("{:<40} ROC AUC {:.4}  PR AUC {:.4}", m.name, m.roc_auc, m.pr_auc);
    }
    assert!(auc("ftrl logistic regression (labels)") < 0.8, "min-max scaling hides the band");
    assert!(auc("prepared: online forest") > 0.97, "{r:?}");
    assert!(r.best().unwrap().name.starts_with("prepared"), "{r:?}");
}

#[test]
fn missing_cells_stop_the_reader_unless_asked_and_a_folder_names_its_data_sets() {
    use strongroom_risk::eval::{read_suite, read_table_with};
    let text = csv("a,b,y\n1,,0\n2,NA,1\n3,4,0\n");
    let err = read_table_with(text.as_slice(), "y", &[], None, false).unwrap_err();
    assert!(err.to_string().contains("--missing-as-missing"), "{err}");
    let t = read_table_with(text.as_slice(), "y", &[], None, true).unwrap();
    assert!(t.rows[0][1].is_nan() && t.rows[1][1].is_nan() && t.rows[2][1] == 4.0);
    // A word is still not a number, even with missing cells allowed.
    let err =
        read_table_with(csv("a,y\n1,0\nmaybe,1\n").as_slice(), "y", &[], None, true).unwrap_err();
    assert!(matches!(err, EvalError::NotNumeric { row: 3, .. }), "{err}");
    let suite = read_suite(
        "[[dataset]]\nname = \"a\"\nfile = \"a.csv\"\nlabel = \"y\"\nlimit = 5\n\n[[dataset]]\nname = \"b\"\nfile = \"b.csv.gz\"\nlabel = \"bad\"\nskip = [\"id\"]\nmissing_as_missing = true\n",
    )
    .unwrap();
    assert_eq!(
        (suite.len(), suite[0].limit, suite[1].skip.clone()),
        (2, Some(5), vec!["id".to_owned()])
    );
    assert!(suite[1].missing_as_missing);
    assert!(read_suite("").is_err() && read_suite("[[dataset]]\nname = \"x\"\n").is_err());
}

/// The data sets `scripts/risk-datasets` writes (`STRONGROOM_RISK_DATASETS`; required where
/// `STRONGROOM_REQUIRE_RISK_DATASETS` is set, as in `scripts/test`): on each, the best model
/// reaches the ROC AUC river's best streaming model reached on the same rows in the same order
/// (`scripts/risk-compare`, recorded in docs/benchmarks.md).
#[test]
fn on_five_public_data_sets_the_best_model_matches_rivers_best() {
    use strongroom_risk::eval::{read_suite, read_table_with};
    let Some(dir) = std::env::var_os("STRONGROOM_RISK_DATASETS").map(std::path::PathBuf::from)
    else {
        assert!(
            std::env::var_os("STRONGROOM_REQUIRE_RISK_DATASETS").is_none(),
            "the data sets are required: run scripts/risk-datasets DIR and set STRONGROOM_RISK_DATASETS"
        );
        println!("SKIPPED: no data sets (scripts/risk-datasets DIR; STRONGROOM_RISK_DATASETS=DIR)");
        return;
    };
    let rivers_best = [
        ("shuttle", 0.9835),
        ("phishing", 0.9601),
        ("banana", 0.9526),
        ("segment", 0.9923),
        ("breast-cancer", 0.9869),
    ];
    let suite = read_suite(&std::fs::read_to_string(dir.join("datasets.toml")).unwrap()).unwrap();
    assert_eq!(suite.len(), rivers_best.len());
    for (spec, (name, river)) in suite.iter().zip(rivers_best) {
        assert_eq!(spec.name, name);
        let file = std::fs::File::open(dir.join(&spec.file)).unwrap();
        let t = read_table_with(file, &spec.label, &spec.skip, spec.limit, spec.missing_as_missing)
            .unwrap();
        let r = evaluate(&t, &Models::default()).unwrap();
        for m in &r.models {
            println!("  {name}: {:<40} ROC AUC {:.4} PR AUC {:.4}", m.name, m.roc_auc, m.pr_auc);
        }
        let best = r.best().unwrap();
        println!("{name}: {} ROC AUC {:.4} (river's best {river})", best.name, best.roc_auc);
        assert!(best.roc_auc >= river, "{name}: {best:?} below river's {river}");
    }
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

mod engine {
    use strongroom_risk::drift::ALERT_PSI;
    use strongroom_risk::engine::{Decision, RiskEngine, SnapshotError};
    use strongroom_risk::geo::GeoTable;
    use strongroom_risk::lists::{ListKind, Lists};
    use strongroom_risk::profile::{
        amount_of, log_amount, Activity, Bounds, Profile, ProfileError, WithdrawalEvent,
        MAX_ENCODED,
    };
    use strongroom_risk::rules::{RuleError, RuleSet, DEFAULT_RULES};

    const ETH: u128 = 1_000_000_000_000_000_000;
    const USUAL: &str = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed";
    const OFAC: &str = "0x8589427373D6D84E98730D7795D8f6f8731FDA16"; // on the OFAC SDN list

    fn ev(at_min: i64, amount: u128, destination: &str, device: &str) -> WithdrawalEvent {
        WithdrawalEvent {
            customer: "c1".into(),
            at_ms: 1_800_000_000_000 + at_min * 60_000,
            asset: "ETH".into(),
            amount,
            destination: destination.into(),
            device: Some(device.into()),
            ip: Some("203.0.113.7".into()),
        }
    }

    fn engine_with_history() -> RiskEngine {
        let mut e = RiskEngine::new(RuleSet::from_toml(DEFAULT_RULES).unwrap());
        for i in 0..20 {
            let w = ev(i * 600, ETH / 10 + (i as u128) * ETH / 1000, USUAL, "phone-1");
            e.record(&w);
        }
        e
    }

    #[test]
    fn a_listed_destination_is_blocked_however_it_is_written() {
        let mut lists = Lists::default();
        lists.add_lines(
            ListKind::Sanctions,
            "sanctioned_addresses_ETH.txt",
            &format!("# OFAC\n{OFAC}\n"),
        );
        let e = engine_with_history();
        let a = e.assess(&ev(20_000, ETH / 10, &OFAC.to_lowercase(), "phone-1"), &lists);
        assert_eq!(a.decision, Decision::Block, "{a:?}");
        assert_eq!(a.reasons[0].source, "list:sanctions");
        assert!(a.reasons[0].detail.contains("sanctioned_addresses_ETH.txt"), "{a:?}");
    }

    #[test]
    fn ten_times_the_usual_to_a_new_address_from_a_new_device_is_paused_with_reasons() {
        let e = engine_with_history();
        let lists = Lists::default();
        let usual = e.assess(&ev(20_000, ETH / 10, USUAL, "phone-1"), &lists);
        assert_eq!(usual.decision, Decision::Allow, "{usual:?}");
        let odd = e.assess(
            &ev(20_000, 2 * ETH, "0xdbF03B407c01E7cD3CBea99509d93f8DDDC8C6FB", "laptop-9"),
            &lists,
        );
        assert_eq!(odd.decision, Decision::Review, "{odd:?}");
        let sources: Vec<&str> = odd.reasons.iter().map(|r| r.source.as_str()).collect();
        assert!(
            sources.contains(&"rule:unusual-amount-to-a-new-address-from-a-new-device"),
            "{sources:?}"
        );
        assert!(odd.reasons.iter().any(|r| r.detail.contains("amount_vs_median = ")), "{odd:?}");
        let feature = |name: &str| odd.features.iter().find(|(n, _)| *n == name).unwrap().1;
        assert_eq!(feature("amount_percentile"), 1.0, "above every earlier amount");
        assert!(feature("sum_24h_vs_median") >= feature("amount_vs_median"), "{odd:?}");
        // Large alone scores but does not pause; just after a security change it does.
        let large = e.assess(&ev(20_000, 2 * ETH, USUAL, "phone-1"), &lists);
        assert_eq!((large.decision, large.score), (Decision::Allow, 30), "{large:?}");
        let mut e = e;
        e.record_activity("c1", &Activity::SecurityChange, 1_800_000_000_000 + 19_990 * 60_000);
        let after = e.assess(&ev(20_000, 2 * ETH, USUAL, "phone-1"), &lists);
        assert_eq!((after.decision, after.score), (Decision::Review, 60), "{after:?}");
    }

    #[test]
    fn shadow_rules_record_without_acting_and_bad_rules_are_refused() {
        let e = engine_with_history();
        let lists = Lists::default();
        let mut burst = e.assess(&ev(20_000, ETH / 10, USUAL, "phone-1"), &lists);
        let mut e = e;
        for k in 0..6 {
            e.record(&ev(20_000 + k, ETH / 10, USUAL, "phone-1"));
            burst = e.assess(&ev(20_007, ETH / 10, USUAL, "phone-1"), &lists);
        }
        assert_eq!(burst.decision, Decision::Allow, "{burst:?}");
        assert!(burst.shadow.iter().any(|r| r.source == "rule:burst"), "{burst:?}");
        let bad = "version = 1\nreview_at = 50\nblock_at = 100\n[[rules]]\nname = \"x\"\nall = [{ feature = \"shoe_size\", at_least = 1.0 }]\nscore = 5\n";
        assert!(matches!(RuleSet::from_toml(bad), Err(RuleError::UnknownFeature { .. })));
        let inert = "version = 1\nreview_at = 50\nblock_at = 100\n[[rules]]\nname = \"x\"\nall = [{ feature = \"count_1h\", at_least = 1.0 }]\n";
        assert!(matches!(RuleSet::from_toml(inert), Err(RuleError::NoEffect(_))));
    }

    #[test]
    fn profiles_stay_bounded() {
        let mut e = RiskEngine::new(RuleSet::from_toml(DEFAULT_RULES).unwrap());
        for i in 0..300 {
            e.record(&ev(i, ETH / 10, &format!("0x{:040x}", i + 1), "phone-1"));
        }
        // The first destination was forgotten (128 kept), the last is remembered.
        let lists = Lists::default();
        let first = e.assess(&ev(400, ETH / 10, &format!("0x{:040x}", 1), "phone-1"), &lists);
        let kept =
            e.assess(&ev(400, ETH / 10, &format!("0x{:040x}", 300 - 127), "phone-1"), &lists);
        let last = e.assess(&ev(400, ETH / 10, &format!("0x{:040x}", 300), "phone-1"), &lists);
        let new_dest = |a: &strongroom_risk::engine::Assessment| {
            a.features.iter().find(|(n, _)| *n == "new_destination").unwrap().1
        };
        assert_eq!((new_dest(&first), new_dest(&kept), new_dest(&last)), (1.0, 0.0, 0.0));
        assert!(e.max_bytes_per_customer() <= 8 * 1024, "{}", e.max_bytes_per_customer());
        let p = e.profile("c1").unwrap();
        assert!(p.heap_bytes() <= e.max_bytes_per_customer(), "{}", p.heap_bytes());
    }

    /// A profile with every list at its bound: many assets, destinations, devices, IP
    /// addresses, countries and events.
    fn full_profile() -> Profile {
        let b = Bounds::default();
        let g = GeoTable::from_csv(
            &(0..40)
                .map(|i| format!("10.{i}.0.0,10.{i}.255.255,{}.5,{}.25,C{i}\n", i % 80, i * 4))
                .collect::<String>(),
        )
        .unwrap();
        let mut p = Profile::default();
        for i in 0..1_000u32 {
            let w = WithdrawalEvent {
                customer: "c".into(),
                at_ms: 1_800_000_000_000 + i64::from(i) * 1_000,
                asset: format!("TOKEN{}", i % 20),
                amount: u128::MAX / u128::from(i + 1),
                destination: format!("bc1q{i:060}"),
                device: Some(format!("device-{i}")),
                ip: Some(format!("10.{}.{}.{}", i % 40, i % 250, i % 200)),
            };
            p.record_withdrawal(&w, &b, Some(&g));
            p.record_activity(&Activity::SecurityChange, w.at_ms, &b, Some(&g));
            assert!(p.mark_applied(&format!("event-{i}"), &b));
        }
        p
    }

    #[test]
    fn a_full_profile_encodes_in_at_most_4_kib_and_decodes_to_itself() {
        let b = Bounds::default();
        let p = full_profile();
        let bytes = p.encode();
        assert!(bytes.len() <= MAX_ENCODED && MAX_ENCODED <= 4096, "{} bytes", bytes.len());
        assert!(bytes.len() > 2_000, "every list is full: {} bytes", bytes.len());
        println!("a full profile: {} bytes encoded, {} in memory", bytes.len(), p.heap_bytes());
        assert_eq!(Profile::decode(&bytes, &b).unwrap(), p);
        // The last events are known, older ones forgotten (bounded).
        assert!(p.has_applied("event-999") && !p.has_applied("event-0"));
        // Refused: another version, truncated bytes, lists beyond the bounds.
        let mut other = bytes.clone();
        other[0] = 9;
        assert_eq!(Profile::decode(&other, &b), Err(ProfileError::Version(9)));
        assert!(matches!(
            Profile::decode(&bytes[..bytes.len() / 2], &b),
            Err(ProfileError::Malformed(_))
        ));
        assert_eq!(Profile::decode(&[], &b), Err(ProfileError::Empty));
        let tight = Bounds { destinations: 10, ..b };
        assert_eq!(
            Profile::decode(&bytes, &tight),
            Err(ProfileError::Unbounded { what: "destination" })
        );
    }

    #[test]
    fn amounts_are_kept_to_within_a_fraction_of_a_percent() {
        for a in [1u128, 7, 1_000, 123_456_789, ETH, 37 * ETH / 10, u128::MAX / 3] {
            let back = amount_of(log_amount(a));
            let err = (back - a as f64).abs() / a as f64;
            assert!(err < 0.0014, "{a}: {back} ({err})");
        }
        assert_eq!((log_amount(0), amount_of(0)), (0, 0.0));
        assert!(log_amount(ETH) < log_amount(ETH + ETH / 100), "1% more is a larger code");
    }

    #[test]
    fn a_stored_profile_and_models_give_the_same_decision_after_a_restart() {
        let lists = Lists::default();
        let mut e = engine_with_history();
        for k in 0..12 {
            let mut f = vec![0.0; strongroom_risk::profile::FEATURES.len()];
            f[0] = if k % 2 == 0 { 30.0 } else { 1.0 };
            e.feedback(&f, k % 2 == 0);
        }
        let odd = ev(20_000, 2 * ETH, "0x000000000000000000000000000000000000dEaD", "laptop");
        let before = e.assess(&odd, &lists);
        let profiles = e.take_dirty_profiles();
        assert_eq!(profiles.len(), 1);
        assert!(e.take_dirty_profiles().is_empty(), "taken once");
        let models = e.take_models().expect("the models learned");
        assert!(e.take_models().is_none());
        // A new process: nothing in memory, then what was kept.
        let mut fresh = RiskEngine::new(RuleSet::from_toml(DEFAULT_RULES).unwrap());
        let cold = fresh.assess(&odd, &lists);
        assert_ne!(cold.features, before.features, "without the profile, no history");
        fresh.restore_models(&models).unwrap();
        for (c, bytes) in &profiles {
            fresh.load_encoded_profile(c, bytes).unwrap();
        }
        let after = fresh.assess(&odd, &lists);
        assert_eq!((after.decision, after.score), (before.decision, before.score), "{after:?}");
        assert_eq!(after.features, before.features);
        assert_eq!(after.reasons, before.reasons);
        assert_eq!(fresh.labels(), 12);
        assert!(matches!(fresh.restore_models(&[7, 1, 2]), Err(SnapshotError::Version(7))));
    }

    #[test]
    fn an_event_read_twice_is_learned_once() {
        let lists = Lists::default();
        let mut e = engine_with_history();
        let w = ev(20_000, ETH / 10, USUAL, "phone-1");
        let count = |e: &RiskEngine| {
            let a = e.assess(&ev(20_001, ETH / 10, USUAL, "phone-1"), &lists);
            a.features.iter().find(|(n, _)| *n == "count_1h").unwrap().1
        };
        assert_eq!(count(&e), 0.0);
        assert!(e.record_once("withdrawal-1", &w));
        assert!(!e.record_once("withdrawal-1", &w), "the same id again");
        assert_eq!(count(&e), 1.0);
        let login = Activity::Login { device: Some("tablet".into()), ip: None };
        assert!(e.record_activity_once("login-1", "c1", &login, w.at_ms));
        assert!(!e.record_activity_once("login-1", "c1", &login, w.at_ms));
        let f = vec![0.0; strongroom_risk::profile::FEATURES.len()];
        assert!(e.feedback_once("label-1", "c1", &f, true));
        assert!(!e.feedback_once("label-1", "c1", &f, true));
        assert_eq!(e.labels(), 1);
        // Through a stored copy too.
        let kept = e.take_dirty_profiles();
        let mut fresh = RiskEngine::new(RuleSet::from_toml(DEFAULT_RULES).unwrap());
        fresh.load_encoded_profile("c1", &kept[0].1).unwrap();
        assert!(!fresh.record_once("withdrawal-1", &w));
    }

    /// The features of an assessment, in order.
    fn f(a: &strongroom_risk::engine::Assessment) -> Vec<f64> {
        a.features.iter().map(|(_, v)| *v).collect()
    }

    /// A usual withdrawal's assessment, and twenty times the usual (its assessment, itself).
    fn usual_and_big(
        e: &RiskEngine,
    ) -> (strongroom_risk::engine::Assessment, strongroom_risk::engine::Assessment, WithdrawalEvent)
    {
        let lists = Lists::default();
        let usual = e.assess(&ev(20_000, ETH / 10, USUAL, "phone-1"), &lists);
        let odd = ev(20_000, 2 * ETH, USUAL, "phone-1");
        (usual, e.assess(&odd, &lists), odd)
    }

    #[test]
    fn analysts_decisions_teach_a_calibrated_model_whose_reason_names_the_features() {
        let lists = Lists::default();
        let mut e = engine_with_history();
        // Analysts rejected withdrawals of twenty times the usual and released usual ones.
        let (usual, big, odd) = usual_and_big(&e);
        assert!(!big.reasons.iter().any(|r| r.source.starts_with("model:")), "no labels yet");
        for _ in 0..40 {
            e.feedback(&f(&big), true);
            e.feedback(&f(&usual), false);
        }
        let again = e.assess(&odd, &lists);
        let reason = again
            .reasons
            .iter()
            .find(|r| r.source == "model:forest+ftrl")
            .unwrap_or_else(|| panic!("{again:?}"));
        assert!(reason.detail.contains("amount_vs_median"), "{reason:?}");
        assert!(reason.points > 20, "a calibrated p well above one half: {reason:?}");
        let fine = e.assess(&ev(20_001, ETH / 10, USUAL, "phone-1"), &lists);
        assert!(!fine.reasons.iter().any(|r| r.source.starts_with("model:")), "{fine:?}");
    }

    #[test]
    fn a_model_trained_on_history_is_scored_in_shadow_then_promoted_with_what_it_learned() {
        let lists = Lists::default();
        let mut e = engine_with_history();
        let (usual, big, odd) = usual_and_big(&e);
        // Trained on the analysts' decisions so far (progressive validation on them).
        let history: Vec<(Vec<f64>, bool)> = (0..60)
            .map(|k| if k % 3 == 0 { (f(&big), true) } else { (f(&usual), false) })
            .collect();
        let t = strongroom_risk::engine::train(&history);
        assert_eq!((t.labels, t.positives), (60, 20));
        assert!(t.roc_auc.unwrap() > 0.9, "{:?}", t.roc_auc);
        // In shadow: scored on every assessment, deciding nothing.
        e.install_shadow(Some((7, &t.model))).unwrap();
        let a = e.assess(&odd, &lists);
        let (live, shadow) = (a.model.unwrap(), a.shadow_model.unwrap());
        assert_eq!((live.version, shadow.version), (0, 7));
        assert!(shadow.probability > 0.8 && live.probability < shadow.probability, "{a:?}");
        assert!(
            !a.reasons.iter().any(|r| r.source.starts_with("model:forest")),
            "the shadow decides nothing: {a:?}"
        );
        // Both learn the next labels; the snapshot keeps both.
        for _ in 0..5 {
            e.feedback(&f(&big), true);
        }
        let snap = e.models_snapshot();
        let mut back = RiskEngine::new(RuleSet::from_toml(DEFAULT_RULES).unwrap());
        back.restore_models(&snap).unwrap();
        assert_eq!((back.live_version(), back.shadow_version()), (0, Some(7)));
        // Promoted: the shadow (with what it learned in shadow) becomes live.
        let in_shadow = e.assess(&odd, &lists).shadow_model.unwrap().probability;
        e.install_live(7, &t.model).unwrap();
        let a = e.assess(&odd, &lists);
        assert_eq!((a.model.unwrap().version, a.shadow_model), (7, None));
        assert_eq!(a.model.unwrap().probability, in_shadow);
        assert!(a.reasons.iter().any(|r| r.source == "model:forest+ftrl"), "{a:?}");
        // Rolled back to the built-in model's registered copy: garbage refused, nothing changed.
        assert!(e.install_live(0, &[1, 2, 3]).is_err());
        assert_eq!(e.live_version(), 7);
    }

    #[test]
    fn a_shift_in_what_the_engine_sees_is_alerted_once_per_window_and_survives_a_restart() {
        let lists = Lists::default();
        let mut e = engine_with_history();
        e.set_drift_window(100);
        // The reference window: usual withdrawals. Then a window like it: no alert.
        let mut alerts = Vec::new();
        for k in 0..200 {
            let a = e.assess(&ev(20_000 + k, ETH / 10, USUAL, "phone-1"), &lists);
            alerts.extend(e.observe(&a));
        }
        assert!(alerts.is_empty(), "{alerts:?}");
        let models = e.take_models().unwrap();
        // Restarted from the kept models: the next window (twenty times the usual, to new
        // addresses from a new device) is compared with the same reference.
        let mut e2 = RiskEngine::new(RuleSet::from_toml(DEFAULT_RULES).unwrap());
        e2.restore_models(&models).unwrap();
        for (c, b) in e.take_dirty_profiles() {
            e2.load_encoded_profile(&c, &b).unwrap();
        }
        for k in 0..100 {
            let odd = ev(30_000 + k, 2 * ETH, &format!("0x{:040x}", k + 7), "laptop");
            let a = e2.assess(&odd, &lists);
            alerts.extend(e2.observe(&a));
        }
        let what: Vec<&str> = alerts.iter().map(|a| a.what).collect();
        assert!(what.contains(&"score") && what.contains(&"amount_vs_median"), "{alerts:?}");
        assert!(what.contains(&"new_destination") && what.contains(&"new_device"), "{alerts:?}");
        assert!(!what.contains(&"hours_since_security_change"), "unchanged: {alerts:?}");
        assert!(alerts.iter().all(|a| a.window == 2 && a.psi >= ALERT_PSI), "{alerts:?}");
    }

    #[test]
    fn the_cache_keeps_active_customers_and_never_drops_what_is_not_kept_yet() {
        let mut e = RiskEngine::new(RuleSet::from_toml(DEFAULT_RULES).unwrap());
        e.set_profile_capacity(100);
        let mut w = ev(0, ETH, USUAL, "phone-1");
        for c in 0..250 {
            w.customer = format!("c{c}");
            e.record(&w);
        }
        // All changed and not yet kept: none may go.
        assert_eq!(e.cached_profiles(), 250);
        assert_eq!(e.take_dirty_profiles().len(), 250);
        for c in 250..300 {
            w.customer = format!("c{c}");
            e.record(&w);
        }
        assert!(
            e.cached_profiles() <= 300 && e.cached_profiles() >= 100,
            "{}",
            e.cached_profiles()
        );
        for c in 250..300 {
            assert!(e.has_profile(&format!("c{c}")), "the newest stay");
        }
        assert!(!e.has_profile("c0"), "the oldest kept ones went");
        e.forget_profiles();
        assert_eq!(e.cached_profiles(), 0);
    }

    #[test]
    fn the_real_ofac_and_scam_lists_load() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data");
        let Ok(ofac) = std::fs::read_to_string(
            dir.join("ofac-sanctioned-addresses/sanctioned_addresses_ETH.txt"),
        ) else {
            println!("SKIPPED: no ../shared/data");
            return;
        };
        let mut lists = Lists::default();
        let n = lists.add_lines(ListKind::Sanctions, "sanctioned_addresses_ETH.txt", &ofac);
        assert!(n >= 100, "{n}");
        let scams =
            std::fs::read_to_string(dir.join("forta-labels/labels/1/phishing_scams.csv")).unwrap();
        assert!(lists.add_csv(ListKind::Scam, "phishing_scams.csv", &scams).unwrap() > 1000);
        let first = ofac.lines().next().unwrap();
        assert_eq!(lists.check(&first.to_lowercase()).unwrap().kind, ListKind::Sanctions);
        assert_eq!(
            lists.check("0x000000000532b45f47779fce440748893b257865").unwrap().label,
            "Fake_Phishing3901"
        );
        assert!(lists.check(USUAL).is_none());
    }
}

mod travel {
    use strongroom_risk::engine::{Decision, RiskEngine};
    use strongroom_risk::geo::{distance_km, GeoTable};
    use strongroom_risk::lists::Lists;
    use strongroom_risk::profile::{Activity, Distinct, WithdrawalEvent};
    use strongroom_risk::rules::{RuleSet, DEFAULT_RULES};

    const TABLE: &str = "start_ip,end_ip,lat,lon,country
# documentation ranges (RFC 5737), placed for the test
192.0.2.0,192.0.2.255,48.8566,2.3522,FR
198.51.100.0,198.51.100.255,-33.8688,151.2093,AU
203.0.113.0,203.0.113.255,51.5074,-0.1278,GB
";

    #[test]
    fn the_table_places_addresses_and_refuses_bad_lines() {
        let g = GeoTable::from_csv(TABLE).unwrap();
        assert_eq!(g.len(), 3);
        let paris = g.locate("192.0.2.7").unwrap().clone();
        let sydney = g.locate("198.51.100.200").unwrap().clone();
        assert_eq!((paris.country.as_str(), sydney.country.as_str()), ("FR", "AU"));
        assert!(g.locate("10.0.0.1").is_none() && g.locate("not-an-ip").is_none());
        // Paris to Sydney is about 16,960 km; Paris to London about 344 km.
        assert!((distance_km(&paris, &sydney) - 16_960.0).abs() < 50.0);
        let london = g.locate("203.0.113.1").unwrap();
        assert!((distance_km(&paris, london) - 344.0).abs() < 5.0);
        assert!(GeoTable::from_csv("1.2.3.4,1.2.3.0,0,0,XX").is_err(), "a range that ends first");
        assert!(GeoTable::from_csv("1.2.3.0,1.2.3.9,95,0,XX").is_err(), "latitude out of range");
        assert!(
            GeoTable::from_csv("1.2.3.0,1.2.3.9,0,0,XX\n1.2.3.5,1.2.3.20,0,0,YY").is_err(),
            "overlap"
        );
    }

    #[test]
    fn a_withdrawal_from_the_other_side_of_the_world_minutes_after_a_login_is_paused() {
        let mut e = RiskEngine::new(RuleSet::from_toml(DEFAULT_RULES).unwrap());
        e.set_geo(GeoTable::from_csv(TABLE).unwrap());
        let t0 = 1_800_000_000_000;
        let ev = |minutes: i64, ip: &str, amount: u128| WithdrawalEvent {
            customer: "c9".into(),
            at_ms: t0 + minutes * 60_000,
            asset: "ETH".into(),
            amount,
            destination: "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed".into(),
            device: Some("phone".into()),
            ip: Some(ip.into()),
        };
        for k in 0..5 {
            e.record(&ev(k * 60, "192.0.2.10", 10u128.pow(17)));
        }
        let lists = Lists::default();
        e.record_activity(
            "c9",
            &Activity::Login { device: Some("phone".into()), ip: Some("192.0.2.10".into()) },
            t0 + 400 * 60_000,
        );
        // London an hour later: 344 km/h, fine. Sydney ten minutes later: impossible.
        let london = e.assess(&ev(460, "203.0.113.9", 10u128.pow(17)), &lists);
        assert_eq!(london.decision, Decision::Allow, "{london:?}");
        let sydney = e.assess(&ev(410, "198.51.100.9", 11 * 10u128.pow(17)), &lists);
        let sources: Vec<&str> = sydney.reasons.iter().map(|r| r.source.as_str()).collect();
        assert!(sources.contains(&"rule:impossible-travel"), "{sydney:?}");
        assert!(sydney.shadow.iter().any(|r| r.source == "rule:new-country"), "{sydney:?}");
        assert_eq!(sydney.decision, Decision::Review, "30 (10x usual) + 40 (travel): {sydney:?}");
    }

    #[test]
    fn distinct_devices_are_estimated_in_64_bytes() {
        let mut d = Distinct::default();
        assert_eq!(d.estimate(), 0.0);
        for i in 0..3 {
            d.add(&format!("device-{i}"));
            d.add(&format!("device-{i}")); // repeats do not count
        }
        assert!((d.estimate() - 3.0).abs() < 0.5, "{}", d.estimate());
        for i in 0..1000 {
            d.add(&format!("device-{i}"));
        }
        assert!((d.estimate() - 1000.0).abs() < 300.0, "{}", d.estimate());
        assert_eq!(std::mem::size_of::<Distinct>(), 64);
    }
}
