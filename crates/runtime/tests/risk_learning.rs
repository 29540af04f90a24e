#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)] // Test code.
#![allow(clippy::disallowed_methods, clippy::print_stderr)] // Test code: real time and random ids.
//! What the risk worker learns lives outside its process (issue 21): two instances on one
//! database (SQLite, and PostgreSQL when `STRONGROOM_TEST_POSTGRES_URL` is set). The leader
//! assesses withdrawals and commits the customers' profiles and the models; the follower's
//! API scoring reads them; when the leader dies the follower takes over from the kept state
//! and cursor, learning nothing twice.

use std::sync::Arc;
use std::time::{Duration, Instant};

use strongroom_core::withdrawal::{plan_withdrawal, WithdrawalRequest, WithdrawalRules};
use strongroom_core::{Env, SystemEnv};
use strongroom_risk::profile::{Bounds, Profile, WithdrawalEvent};
use strongroom_runtime::lease::Instance;
use strongroom_runtime::risk::{Risk, RiskOptions};
use strongroom_server::{RiskScorer, ScoreInput};
use strongroom_store::*;
use strongroom_units::{Amount, AssetRegistry, AssetSymbol};
use uuid::Uuid;

const USUAL: &str = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed";

async fn sqlite(dir: &std::path::Path) -> Arc<SqlStore> {
    let url = format!("sqlite://{}?mode=rwc", dir.join("strongroom.db").display());
    let store = SqlStore::connect(&url, Default::default()).await.unwrap();
    store.migrate().await.unwrap();
    Arc::new(store)
}

async fn postgres() -> Option<Arc<SqlStore>> {
    let Ok(base) = std::env::var("STRONGROOM_TEST_POSTGRES_URL") else {
        assert!(
            std::env::var("STRONGROOM_REQUIRE_POSTGRES").as_deref() != Ok("1"),
            "STRONGROOM_REQUIRE_POSTGRES=1 but STRONGROOM_TEST_POSTGRES_URL is not set"
        );
        eprintln!("SKIPPED the PostgreSQL half: STRONGROOM_TEST_POSTGRES_URL is not set");
        return None;
    };
    sqlx::any::install_default_drivers();
    let name = format!("sr_risk_{}", Uuid::new_v4().simple());
    let mut admin = <sqlx::AnyConnection as sqlx::Connection>::connect(&base).await.unwrap();
    sqlx::Executor::execute(&mut admin, format!("CREATE DATABASE {name}").as_str()).await.unwrap();
    let (root, _) = base.rsplit_once('/').unwrap();
    let store = SqlStore::connect(&format!("{root}/{name}"), Default::default()).await.unwrap();
    store.migrate().await.unwrap();
    Some(Arc::new(store))
}

fn ctx(env: &dyn Env) -> WriteCtx {
    WriteCtx { actor: "test".into(), now: env.now(), request_id: None }
}

/// A reserved withdrawal of `amount` ETH to `to`, requested from `device`.
async fn withdraw(
    store: &SqlStore,
    env: &dyn Env,
    c: Uuid,
    amount: &str,
    to: &str,
    device: &str,
) -> Uuid {
    let req = WithdrawalRequest {
        customer_id: c,
        asset: "ETH".into(),
        destination: to.into(),
        amount: amount.into(),
    };
    let p = plan_withdrawal(
        &AssetRegistry::dev(),
        &WithdrawalRules::default(),
        &req,
        Uuid::new_v4(),
        Uuid::new_v4(),
        env.now(),
    )
    .unwrap();
    let id = p.withdrawal.id;
    let context = RiskEvent {
        id: RiskEvent::context_id(id),
        customer_id: c,
        kind: "withdrawal_context".into(),
        at: env.now(),
        data: serde_json::json!({ "withdrawal_id": id.to_string(), "device_id": device }),
    };
    let records = WithdrawalRecords { signed: Initiations::default(), context: Some(context) };
    store.request_withdrawal_with(&ctx(env), None, p, records).await.unwrap();
    id
}

async fn until<F, Fut>(what: &str, secs: u64, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn cleared(store: &SqlStore, id: Uuid) -> bool {
    store.risk_review(id).await.unwrap().is_some_and(|r| r.state == RiskState::Cleared)
}

/// The customer's kept profile, as a fresh process would read it.
async fn kept_profile(store: &SqlStore, c: Uuid) -> Option<Profile> {
    let rows = store.risk_profiles(&[c.to_string()]).await.unwrap();
    rows.first().map(|(_, b)| Profile::decode(b, &Bounds::default()).unwrap())
}

/// A customer with `wei` of ETH deposited.
async fn funded_customer(store: &SqlStore, env: &dyn Env, wei: u128, reference: &str) -> Uuid {
    let c = Uuid::new_v4();
    let new = NewCustomer { id: c, external_id: format!("rita-{reference}") };
    store.create_customer(&ctx(env), None, new).await.unwrap();
    let deposit = NewDeposit {
        id: Uuid::new_v4(),
        entry_id: Uuid::new_v4(),
        customer_id: c,
        asset: AssetSymbol::parse("ETH").unwrap(),
        amount: Amount::from_base_units(wei).unwrap(),
        reference: reference.into(),
    };
    store.credit_deposit(&ctx(env), None, deposit).await.unwrap();
    c
}

fn instance(name: &str) -> Instance {
    Instance { name: name.into(), job_ms: 3_000, leader_ms: 1_500 }
}

async fn two_instances_share_what_the_risk_worker_learned(store: Arc<SqlStore>) {
    let env: Arc<dyn Env> = Arc::new(SystemEnv::new());
    let dyn_store: Arc<dyn Store> = store.clone();
    let c = funded_customer(&store, env.as_ref(), 10u128.pow(19), "0xfeed:1").await;

    // Instance A leads: three usual withdrawals are cleared and learned, and kept.
    let a = Risk::new(dyn_store.clone(), RiskOptions::default(), env.clone()).unwrap();
    let a_tasks = a.start(&instance("a")).await.unwrap();
    let mut usual = Vec::new();
    for _ in 0..3 {
        usual.push(withdraw(&store, env.as_ref(), c, "0.1", USUAL, "phone-1").await);
    }
    for id in &usual {
        until("a usual withdrawal cleared", 30, || cleared(&store, *id)).await;
    }
    until("the profile kept", 30, || async {
        kept_profile(&store, c)
            .await
            .is_some_and(|p| p.has_applied(&format!("withdrawal/{}", usual[2])))
    })
    .await;
    let kept = store.risk_learning().await.unwrap();
    assert!(kept.version >= 1 && kept.state.contains_key("models"), "{:?}", kept.version);

    // Instance B follows. Its API scores 20 times the usual, to a new address, from a new
    // device, against the profile A kept: review. Without the profile it would pass.
    let b = Risk::new(dyn_store.clone(), RiskOptions::default(), env.clone()).unwrap();
    let b_scorer = b.scorer();
    let b_tasks = b.start(&instance("b")).await.unwrap();
    let odd = ScoreInput {
        customer_id: c,
        asset: "ETH".into(),
        amount: 2 * 10u128.pow(18),
        destination: "0xdbF03B407c01E7cD3CBea99509d93f8DDDC8C6FB".into(),
        device_id: Some("laptop-9".into()),
        ip: None,
    };
    let now = env.now().unix_ms();
    let (decision, _, reasons) = b_scorer.score(&odd, now).await.unwrap();
    assert_eq!(decision, "review", "{reasons:?}");
    let fresh = strongroom_runtime::risk::EngineScorer {
        engine: strongroom_runtime::risk::SharedEngine::new(
            strongroom_risk::engine::RiskEngine::new(
                strongroom_risk::rules::RuleSet::from_toml(strongroom_risk::rules::DEFAULT_RULES)
                    .unwrap(),
            ),
        ),
        lists: Default::default(),
        store: None,
    };
    assert_eq!(fresh.score(&odd, now).await.unwrap().0, "allow", "no history, no ratio");

    // A dies. B takes over from what A kept, and goes on learning from where A stopped.
    for t in a_tasks {
        t.abort();
    }
    let fourth = withdraw(&store, env.as_ref(), c, "0.1", USUAL, "phone-1").await;
    until("the fourth cleared by B", 30, || cleared(&store, fourth)).await;
    until("B's commit", 30, || async {
        kept_profile(&store, c)
            .await
            .is_some_and(|p| p.has_applied(&format!("withdrawal/{fourth}")))
    })
    .await;
    let p = kept_profile(&store, c).await.unwrap();
    let probe = WithdrawalEvent {
        customer: c.to_string(),
        at_ms: env.now().unix_ms(),
        asset: "ETH".into(),
        amount: 10u128.pow(17),
        destination: USUAL.into(),
        device: Some("phone-1".into()),
        ip: None,
    };
    let f = p.features(&probe, None);
    // count_1h, count_24h: four withdrawals, each learned once (not replayed by B).
    assert_eq!((f[2], f[3]), (4.0, 4.0), "{f:?}");
    assert_eq!(f[4], 0.0, "the usual destination is known");
    let lease = store.leases("leader/risk").await.unwrap();
    assert_eq!(lease[0].holder, "b", "{lease:?}");
    for t in b_tasks {
        t.abort();
    }
}

/// A shift in what the engine sees raises a `risk_drift` alert through the outbox, once per
/// quantity and window.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shift_in_withdrawals_raises_a_drift_alert() {
    let dir = tempfile::tempdir().unwrap();
    let store = sqlite(dir.path()).await;
    let env: Arc<dyn Env> = Arc::new(SystemEnv::new());
    let c = funded_customer(&store, env.as_ref(), 10u128.pow(22), "0xfeed:2").await;
    let secret = dir.path().join("hook.secret");
    std::fs::write(&secret, "s3cret").unwrap();
    let opts = RiskOptions {
        // Nothing listens there: the alert waits in the outbox.
        webhook: Some(strongroom_runtime::risk::Webhook {
            url: "https://127.0.0.1:9/hook".into(),
            secret_file: secret,
            ca_file: None,
        }),
        drift_window: Some(100),
        ..Default::default()
    };
    // The customer's usual, kept before the worker starts (as a previous leader would have):
    // five withdrawals of 0.1 ETH to the usual address from their phone.
    let mut warm = strongroom_risk::engine::RiskEngine::new(
        strongroom_risk::rules::RuleSet::from_toml(strongroom_risk::rules::DEFAULT_RULES).unwrap(),
    );
    let now = env.now().unix_ms();
    for k in 0..5 {
        warm.record(&WithdrawalEvent {
            customer: c.to_string(),
            at_ms: now - (k + 1) * 86_400_000,
            asset: "ETH".into(),
            amount: 10u128.pow(17),
            destination: USUAL.into(),
            device: Some("phone-1".into()),
            ip: None,
        });
    }
    store.commit_risk_learning(0, now, warm.take_dirty_profiles(), vec![]).await.unwrap();
    let risk = Risk::new(store.clone(), opts, env.clone()).unwrap();
    let tasks = risk.start(&instance("a")).await.unwrap();
    let drift_alerts = || async {
        sqlx::query_as::<_, (String, String)>(
            "SELECT id, body FROM outbox WHERE kind = 'risk_drift' ORDER BY id",
        )
        .fetch_all(store.pool())
        .await
        .unwrap()
    };
    let mut ids = Vec::new();
    for _ in 0..100 {
        ids.push(withdraw(&store, env.as_ref(), c, "0.1", USUAL, "phone-1").await);
    }
    for _ in 0..100 {
        ids.push(withdraw(&store, env.as_ref(), c, "0.1", USUAL, "phone-1").await);
    }
    until("200 assessed", 60, || async { store.risk_review(ids[199]).await.unwrap().is_some() })
        .await;
    // Velocity features may move as the history grows; where the money goes did not.
    let quiet = drift_alerts().await;
    assert!(
        !quiet.iter().any(|(id, _)| id.starts_with("risk_drift/new_destination/")),
        "{quiet:?}"
    );
    for k in 0..100 {
        let to = format!("0x{:040x}", k + 1);
        ids.push(withdraw(&store, env.as_ref(), c, "2", &to, "laptop-9").await);
    }
    until("a drift alert on where the money goes", 60, || async {
        drift_alerts().await.iter().any(|(id, _)| id.starts_with("risk_drift/new_destination/"))
    })
    .await;
    let got = drift_alerts().await;
    let body = got.iter().map(|(_, b)| b.as_str()).collect::<Vec<_>>().join("\n");
    assert!(got.iter().any(|(id, _)| id == "risk_drift/new_destination/2/webhook"), "{got:?}");
    assert!(body.contains("\"psi\""), "{body}");
    for t in tasks {
        t.abort();
    }
}

/// Every withdrawal waits for an analyst (so each one gets a label).
const REVIEW_ALL: &str = "version = 1\nreview_at = 50\nblock_at = 100\n[[rules]]\nname = \"everything\"\nall = [{ feature = \"count_24h\", at_least = 0.0 }]\naction = \"review\"\nscore = 0\n";

/// `n` withdrawals, alternately usual (released by the analyst) and 50 times the usual to a
/// new address (rejected), each assessed then decided; returns their assessments.
async fn labelled(
    store: &SqlStore,
    env: &dyn Env,
    c: Uuid,
    n: usize,
    from: usize,
) -> Vec<serde_json::Value> {
    let mut out = Vec::new();
    for k in from..from + n {
        let bad = k % 2 == 1;
        let to = if bad { format!("0x{:040x}", k + 1) } else { USUAL.to_owned() };
        let id = withdraw(store, env, c, if bad { "5" } else { "0.1" }, &to, "phone-1").await;
        until("assessed", 30, || async { store.risk_review(id).await.unwrap().is_some() }).await;
        let action = if bad { ReviewAction::Reject(None) } else { ReviewAction::Release(None) };
        let r = store.review_withdrawal(&ctx(env), id, action).await.unwrap();
        out.push(r.assessment);
    }
    out
}

async fn the_model_registry_trains_shadows_promotes_and_rolls_back(store: Arc<SqlStore>) {
    use strongroom_runtime::risk_models::{self, ModelRefusal};
    use strongroom_runtime::RuntimeError;
    let dir = tempfile::tempdir().unwrap();
    let env: Arc<dyn Env> = Arc::new(SystemEnv::new());
    let c = funded_customer(&store, env.as_ref(), 10u128.pow(22), "0xfeed:3").await;
    let ctx = ctx(env.as_ref());
    let rules = dir.path().join("rules.toml");
    std::fs::write(&rules, REVIEW_ALL).unwrap();
    let opts = RiskOptions { rules: Some(rules), ..Default::default() };
    let risk = Risk::new(store.clone(), opts, env.clone()).unwrap();
    let tasks = risk.start(&instance("a")).await.unwrap();
    let refused = |r: Result<strongroom_store::RiskModel, RuntimeError>| match r {
        Err(RuntimeError::Model(m)) => m,
        other => panic!("{other:?}"),
    };
    // Nothing labelled: nothing to train on.
    assert_eq!(
        refused(risk_models::train_candidate(store.as_ref(), &ctx, "x").await),
        ModelRefusal::NoHistory
    );
    let first = labelled(&store, env.as_ref(), c, 30, 0).await;
    assert_eq!(first[0]["model"]["version"], 0, "the built-in model: {}", first[0]);
    assert!(first[0]["shadow_model"].is_null());

    // v1: trained on the 30 decisions; promoting it before it ran in shadow is refused.
    let v1 = risk_models::train_candidate(store.as_ref(), &ctx, "first training").await.unwrap();
    assert_eq!((v1.version, v1.trained_on["labels"].as_u64()), (1, Some(30)));
    // Progressive: the first decisions are scored before anything was learned.
    assert!(v1.trained_on["progressive_roc_auc"].as_f64().unwrap() > 0.7, "{}", v1.trained_on);
    assert_eq!(
        refused(risk_models::promote(store.as_ref(), &ctx, 1, None).await),
        ModelRefusal::NotShadow(1)
    );
    risk_models::shadow(store.as_ref(), &ctx, 1, "compare").await.unwrap();
    let r = refused(risk_models::promote(store.as_ref(), &ctx, 1, None).await);
    assert!(matches!(r, ModelRefusal::TooFewLabels { have: 0, need: 20, .. }), "{r:?}");
    // In shadow: every assessment carries its score beside the live one's.
    let second = labelled(&store, env.as_ref(), c, 24, 30).await;
    let scored = second.iter().filter(|a| a["shadow_model"]["version"] == 1).count();
    assert!(scored >= 20, "{scored}: {}", second[23]);
    let cmp = risk_models::compare_shadow(store.as_ref()).await.unwrap().unwrap();
    assert!(cmp.labels >= 20 && cmp.rejected >= 10, "{cmp:?}");
    let promoted = risk_models::promote(store.as_ref(), &ctx, 1, None).await.unwrap();
    assert!(promoted.note.starts_with("compared in shadow on"), "{}", promoted.note);
    let third = labelled(&store, env.as_ref(), c, 2, 54).await;
    assert_eq!(third[1]["model"]["version"], 1, "the worker installed it: {}", third[1]);

    // v2, trained on the decisions turned around: in shadow it ranks worse, and is refused.
    let history = risk_models::labelled_history(store.as_ref()).await.unwrap();
    let flipped: Vec<(Vec<f64>, bool)> =
        history.iter().map(|l| (l.features.clone(), !l.rejected)).collect();
    let bad = strongroom_risk::engine::train(&flipped);
    let v2 = store
        .register_risk_model(
            &ctx,
            NewRiskModel {
                params: serde_json::json!({}),
                trained_on: serde_json::json!({"labels": "flipped"}),
                state: bad.model,
                note: "a bad one".into(),
            },
        )
        .await
        .unwrap();
    risk_models::shadow(store.as_ref(), &ctx, v2.version, "compare").await.unwrap();
    labelled(&store, env.as_ref(), c, 24, 56).await;
    let r = refused(risk_models::promote(store.as_ref(), &ctx, v2.version, None).await);
    assert!(matches!(r, ModelRefusal::Worse { .. }), "{r:?}");
    // Forced anyway (the reason is kept), then rolled back to v1.
    let forced = risk_models::promote(store.as_ref(), &ctx, v2.version, Some("incident 7 drill"))
        .await
        .unwrap();
    assert_eq!(forced.note, "forced: incident 7 drill");
    let back = risk_models::rollback(store.as_ref(), &ctx, "false positives").await.unwrap();
    assert_eq!((back.version, back.note.as_str()), (1, "rollback: false positives"));
    let after = labelled(&store, env.as_ref(), c, 2, 80).await;
    assert_eq!(after[1]["model"]["version"], 1, "{}", after[1]);
    let audit: Vec<String> = store
        .audit_page(0, 100_000)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.record.action)
        .filter(|a| a.starts_with("risk.model_"))
        .collect();
    assert_eq!(
        audit,
        [
            "risk.model_registered",
            "risk.model_shadow",
            "risk.model_live",
            "risk.model_registered",
            "risk.model_shadow",
            "risk.model_live",
            "risk.model_live"
        ]
    );
    for t in tasks {
        t.abort();
    }
}

/// With `retrain_labels` and `auto_promote`, the worker retrains, shadows and promotes on its
/// own, each move audited as `risk:retrain`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_worker_retrains_on_new_labels_and_promotes_after_the_comparison() {
    let dir = tempfile::tempdir().unwrap();
    let store = sqlite(dir.path()).await;
    let env: Arc<dyn Env> = Arc::new(SystemEnv::new());
    let c = funded_customer(&store, env.as_ref(), 10u128.pow(22), "0xfeed:4").await;
    let rules = dir.path().join("rules.toml");
    std::fs::write(&rules, REVIEW_ALL).unwrap();
    let opts = RiskOptions {
        rules: Some(rules),
        retrain_labels: Some(10),
        auto_promote: true,
        ..Default::default()
    };
    let risk = Risk::new(store.clone(), opts, env.clone()).unwrap();
    let tasks = risk.start(&instance("a")).await.unwrap();
    let status = || async {
        store.risk_models().await.unwrap().iter().map(|m| (m.version, m.status)).collect::<Vec<_>>()
    };
    labelled(&store, env.as_ref(), c, 8, 0).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(status().await.is_empty(), "8 labels: not yet");
    labelled(&store, env.as_ref(), c, 2, 8).await;
    until("a retrained shadow", 30, || async { status().await == [(1, ModelStatus::Shadow)] })
        .await;
    let v1 = store.risk_models().await.unwrap().remove(0);
    assert_eq!(v1.trained_on["labels"], 10, "{}", v1.trained_on);
    // Twenty-two more decisions, scored by the shadow too: promoted on the comparison.
    labelled(&store, env.as_ref(), c, 22, 10).await;
    until("the shadow promoted", 30, || async {
        status().await.first() == Some(&(1, ModelStatus::Live))
    })
    .await;
    let live = store.risk_models().await.unwrap().remove(0);
    assert!(live.note.starts_with("compared in shadow on 2"), "{}", live.note);
    let moves: Vec<(String, String)> = store
        .audit_page(0, 100_000)
        .await
        .unwrap()
        .into_iter()
        .filter(|r| r.record.action.starts_with("risk.model_"))
        .map(|r| (r.record.actor, r.record.action))
        .take(3)
        .collect();
    let retrain = |a: &str| ("risk:retrain".to_owned(), a.to_owned());
    assert_eq!(
        moves,
        [
            retrain("risk.model_registered"),
            retrain("risk.model_shadow"),
            retrain("risk.model_live")
        ]
    );
    for t in tasks {
        t.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_model_registry_trains_shadows_promotes_and_rolls_back_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    the_model_registry_trains_shadows_promotes_and_rolls_back(sqlite(dir.path()).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_model_registry_trains_shadows_promotes_and_rolls_back_on_postgres() {
    if let Some(store) = postgres().await {
        the_model_registry_trains_shadows_promotes_and_rolls_back(store).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_share_what_the_risk_worker_learned_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    two_instances_share_what_the_risk_worker_learned(sqlite(dir.path()).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_share_what_the_risk_worker_learned_on_postgres() {
    if let Some(store) = postgres().await {
        two_instances_share_what_the_risk_worker_learned(store).await;
    }
}
