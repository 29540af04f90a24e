//! The storage conformance suite. Every test runs against every backend: SQLite (a file in a
//! temporary folder) and PostgreSQL (a fresh database per test on the server named by
//! `STRONGROOM_TEST_POSTGRES_URL`). Without that variable the PostgreSQL half is skipped and
//! says so, unless `STRONGROOM_REQUIRE_POSTGRES=1` (set by CI), which makes it fail instead.
#![allow(clippy::disallowed_methods)]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::print_stdout,
    clippy::print_stderr
)] // Test code.

use std::sync::Arc;

use serde_json::json;
use sqlx::Executor;
use strongroom_core::ledger::JournalEntry;
use strongroom_core::withdrawal::{
    plan_withdrawal, Withdrawal, WithdrawalRequest, WithdrawalRules, WithdrawalState,
};
use strongroom_core::{Env, FixedEnv, Timestamp};
use strongroom_store::faults::POINTS;
use strongroom_store::verify::MismatchKind;
use strongroom_store::*;
use strongroom_units::{Amount, AssetRegistry, AssetSymbol};
use uuid::Uuid;

const DEST: &str = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed";

struct Harness {
    store: Arc<SqlStore>,
    _dir: Option<tempfile::TempDir>,
    pg_drop: Option<(String, String)>,
}

impl Harness {
    async fn sqlite() -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("strongroom.db").display());
        let store = SqlStore::connect(&url, Default::default()).await.unwrap();
        store.migrate().await.unwrap();
        Harness { store: Arc::new(store), _dir: Some(dir), pg_drop: None }
    }

    async fn postgres(test: &str) -> Option<Harness> {
        let Ok(base) = std::env::var("STRONGROOM_TEST_POSTGRES_URL") else {
            if std::env::var("STRONGROOM_REQUIRE_POSTGRES").is_ok_and(|v| v == "1") {
                panic!("STRONGROOM_REQUIRE_POSTGRES=1 but STRONGROOM_TEST_POSTGRES_URL is not set");
            }
            eprintln!(
                "SKIPPED postgres conformance test {test}: STRONGROOM_TEST_POSTGRES_URL is not set"
            );
            return None;
        };
        sqlx::any::install_default_drivers();
        let name = format!("sr_test_{}", Uuid::new_v4().simple());
        let mut admin = <sqlx::AnyConnection as sqlx::Connection>::connect(&base)
            .await
            .expect("connect to PostgreSQL");
        admin.execute(format!("CREATE DATABASE {name}").as_str()).await.unwrap();
        let url = with_database(&base, &name);
        let store = SqlStore::connect(&url, Default::default()).await.unwrap();
        store.migrate().await.unwrap();
        eprintln!("postgres conformance test {test} on database {name}");
        Some(Harness { store: Arc::new(store), _dir: None, pg_drop: Some((base, name)) })
    }

    async fn finish(self) {
        self.store.close().await;
        if let Some((base, name)) = self.pg_drop {
            let mut admin =
                <sqlx::AnyConnection as sqlx::Connection>::connect(&base).await.unwrap();
            admin
                .execute(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)").as_str())
                .await
                .unwrap();
        }
    }
}

macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let h = super::Harness::sqlite().await;
                super::$name(h.store.clone()).await;
                h.finish().await;
            })*
        }
        mod postgres {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                if let Some(h) = super::Harness::postgres(stringify!($name)).await {
                    super::$name(h.store.clone()).await;
                    h.finish().await;
                }
            })*
        }
    };
}

conformance!(
    customers_are_created_once,
    holders_of_an_asset_come_a_page_at_a_time,
    deposits_credit_available_once,
    withdrawal_reserves_atomically,
    overdraft_is_refused_and_writes_nothing,
    idempotency_keys_replay_or_conflict,
    cancel_releases_and_settle_leaves_custody,
    a_denial_cancels_once_and_says_who_and_why,
    injected_faults_leave_no_partial_write,
    audit_chain_verifies_and_catches_tampering,
    concurrent_withdrawals_never_overdraw,
    concurrent_mixed_writes_stay_consistent,
    a_failure_inside_a_group_commit_fails_only_its_command,
    audit_log_is_append_only,
    tokens_are_created_and_revoked,
    auth_records_are_compare_and_swap_and_all_or_nothing,
    audit_verify_while_writing_reports_no_false_tampering,
    chain_withdrawals_take_each_nonce_once_and_keep_one_signed_tx,
    builds_never_share_a_coin,
    fee_bumps_wait_for_their_signatures_one_at_a_time_and_the_mined_one_is_adopted,
    concurrent_builds_take_distinct_contiguous_nonces,
    watched_deposits_are_credited_once_and_reorganised_ones_reversed_or_held,
    sweeps_share_the_chain_path_and_move_nothing_but_the_fee,
    refills_open_once_per_asset_and_only_move_forward,
    the_governance_log_keeps_order_one_proposal_and_one_genesis,
    risk_reviews_are_assessed_once_and_decided_once,
    lists_come_a_page_at_a_time_from_a_cursor,
    initiated_withdrawals_keep_the_signed_request_beside_them,
    request_nonces_are_used_once_until_they_expire,
    leases_have_one_holder_until_they_expire,
    shared_counters_count_every_hit_once_per_window,
    outbox_messages_are_claimed_once_and_retried_until_delivered,
    dead_letters_wait_until_sent_again,
    the_events_feed_reads_the_audit_log_by_family_after_a_cursor,
    risk_learning_commits_all_or_nothing_on_top_of_the_last_only,
    the_risk_model_registry_keeps_one_live_and_one_shadow_and_audits_each_move,
);

async fn the_risk_model_registry_keeps_one_live_and_one_shadow_and_audits_each_move(
    store: Arc<SqlStore>,
) {
    let c = ctx(env().now());
    let new = |n: u8| NewRiskModel {
        params: json!({ "trees": n }),
        trained_on: json!({ "labels": 100 * u32::from(n) }),
        state: vec![n; 50_000],
        note: format!("trained {n}"),
    };
    let v1 = store.register_risk_model(&c, new(1)).await.unwrap();
    let v2 = store.register_risk_model(&c, new(2)).await.unwrap();
    assert_eq!((v1.version, v2.version), (1, 2));
    assert_eq!(v2.status, ModelStatus::Candidate);
    assert_eq!(store.risk_model_state(2).await.unwrap(), Some(vec![2; 50_000]));
    assert_eq!(store.risk_model_state(3).await.unwrap(), None);
    let status = |all: &[RiskModel]| all.iter().map(|m| m.status).collect::<Vec<_>>();
    let live = store.set_risk_model_status(&c, 1, ModelStatus::Live, "first".into()).await.unwrap();
    assert!(live.live_since.is_some());
    store.set_risk_model_status(&c, 2, ModelStatus::Shadow, "compare".into()).await.unwrap();
    assert_eq!(
        status(&store.risk_models().await.unwrap()),
        [ModelStatus::Live, ModelStatus::Shadow]
    );
    // Promoted: the shadow decides, the old live one is kept to roll back to.
    store
        .set_risk_model_status(&c, 2, ModelStatus::Live, "better on 40 labels".into())
        .await
        .unwrap();
    let all = store.risk_models().await.unwrap();
    assert_eq!(status(&all), [ModelStatus::Retired, ModelStatus::Live]);
    assert_eq!(all[0].note, "replaced by version 2");
    assert_eq!(all[1].params, json!({ "trees": 2 }));
    // Refused: the live one retired without a successor, back to candidate, unknown versions.
    for (v, to) in [(2, ModelStatus::Retired), (1, ModelStatus::Candidate), (2, ModelStatus::Live)]
    {
        let r = store.set_risk_model_status(&c, v, to, "no".into()).await;
        assert!(matches!(r, Err(StoreError::InvalidTransition { .. })), "{v} {to:?}: {r:?}");
    }
    let r = store.set_risk_model_status(&c, 9, ModelStatus::Live, "no".into()).await;
    assert!(matches!(r, Err(StoreError::NotFound { .. })), "{r:?}");
    // Rolled back: version 1 decides again.
    store
        .set_risk_model_status(&c, 1, ModelStatus::Live, "rollback: false positives".into())
        .await
        .unwrap();
    assert_eq!(
        status(&store.risk_models().await.unwrap()),
        [ModelStatus::Live, ModelStatus::Retired]
    );
    // Each move is in the audit log, and the log verifies.
    let actions: Vec<String> = store
        .audit_page(0, 1_000)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.record.action)
        .filter(|a| a.starts_with("risk.model_"))
        .collect();
    assert_eq!(
        actions,
        [
            "risk.model_registered",
            "risk.model_registered",
            "risk.model_live",
            "risk.model_shadow",
            "risk.model_live",
            "risk.model_live"
        ]
    );
    assert_intact(&store).await;
}

async fn risk_learning_commits_all_or_nothing_on_top_of_the_last_only(store: Arc<SqlStore>) {
    assert_eq!(store.risk_learning().await.unwrap(), RiskLearning::default());
    let big: Vec<u8> = (0..4096u32).map(|i| (i % 251) as u8).collect(); // every byte value
    let v1 = store
        .commit_risk_learning(
            0,
            1_000,
            vec![("c1".into(), big.clone()), ("c2".into(), vec![0, 1, 2])],
            vec![("models".into(), vec![9; 70_000]), ("cursor".into(), b"{}".to_vec())],
        )
        .await
        .unwrap();
    assert_eq!(v1, 1);
    let mut got = store.risk_profiles(&["c1".into(), "c2".into(), "c3".into()]).await.unwrap();
    got.sort();
    assert_eq!(got, vec![("c1".into(), big.clone()), ("c2".into(), vec![0, 1, 2])]);
    // A second instance that read version 0 cannot write over version 1; nothing of it lands.
    let stale = store
        .commit_risk_learning(
            0,
            2_000,
            vec![("c1".into(), vec![7])],
            vec![("cursor".into(), vec![7])],
        )
        .await;
    assert!(matches!(stale, Err(StoreError::Stale { .. })), "{stale:?}");
    assert_eq!(store.risk_profiles(&["c1".into()]).await.unwrap()[0].1, big);
    let kept = store.risk_learning().await.unwrap();
    assert_eq!((kept.version, kept.state["cursor"].as_slice()), (1, b"{}".as_slice()));
    assert_eq!(kept.state["models"].len(), 70_000);
    // On top of the last: only what changed is written, and says which commit wrote it.
    let v2 = store
        .commit_risk_learning(
            1,
            3_000,
            vec![("c2".into(), vec![3])],
            vec![("cursor".into(), vec![1])],
        )
        .await
        .unwrap();
    assert_eq!((v2, store.risk_learning_version().await.unwrap()), (2, 2));
    assert_eq!(store.risk_profiles_changed(1, 100).await.unwrap(), vec!["c2".to_owned()]);
    let mut all = store.risk_profiles_changed(0, 100).await.unwrap();
    all.sort();
    assert_eq!(all, vec!["c1".to_owned(), "c2".to_owned()]);
    // Many at once, in chunks.
    let many: Vec<(String, Vec<u8>)> = (0..1_200).map(|i| (format!("m{i}"), vec![1; 10])).collect();
    store.commit_risk_learning(2, 4_000, many, vec![]).await.unwrap();
    let names: Vec<String> = (0..1_200).map(|i| format!("m{i}")).collect();
    assert_eq!(store.risk_profiles(&names).await.unwrap().len(), 1_200);
    // Two committers racing from the same base: exactly one wins.
    let (a, b) = tokio::join!(
        store.commit_risk_learning(3, 5_000, vec![("c1".into(), vec![1])], vec![]),
        store.commit_risk_learning(3, 5_000, vec![("c1".into(), vec![2])], vec![]),
    );
    assert_eq!(u8::from(a.is_ok()) + u8::from(b.is_ok()), 1, "{a:?} {b:?}");
    let winner = if a.is_ok() { 1 } else { 2 };
    assert_eq!(store.risk_profiles(&["c1".into()]).await.unwrap()[0].1, vec![winner]);
    // The context event of a withdrawal is found by the id derived from the withdrawal's.
    let c = customer(&store, "risk-ctx").await;
    let p = plan(c, "0.1");
    let mut ev = context_event(&p);
    ev.id = RiskEvent::context_id(p.withdrawal.id);
    store.add_risk_event(&ctx(env().now()), ev.clone()).await.unwrap();
    assert_eq!(store.risk_event(ev.id).await.unwrap(), Some(ev));
    assert_eq!(store.risk_event(Uuid::new_v4()).await.unwrap(), None);
    assert_ne!(RiskEvent::context_id(p.withdrawal.id), RiskEvent::context_id(Uuid::new_v4()));
}

fn env() -> FixedEnv {
    FixedEnv::new(Timestamp::from_unix_ms(1_767_225_600_000), 42)
}

fn ctx(now: Timestamp) -> WriteCtx {
    WriteCtx { actor: "test".into(), now, request_id: Some("req-1".into()) }
}

fn eth() -> AssetSymbol {
    AssetSymbol::parse("ETH").unwrap()
}

fn wei(n: u128) -> Amount {
    Amount::from_base_units(n).unwrap()
}

async fn customer(store: &SqlStore, ext: &str) -> Uuid {
    let id = Uuid::new_v4();
    store
        .create_customer(&ctx(env().now()), None, NewCustomer { id, external_id: ext.into() })
        .await
        .unwrap();
    id
}

async fn deposit(store: &SqlStore, customer_id: Uuid, amount: u128) -> Deposit {
    let new = NewDeposit {
        id: Uuid::new_v4(),
        entry_id: Uuid::new_v4(),
        customer_id,
        asset: eth(),
        amount: wei(amount),
        reference: format!("0x{}", Uuid::new_v4().simple()),
    };
    store.credit_deposit(&ctx(env().now()), None, new).await.unwrap()
}

fn plan(customer_id: Uuid, amount: &str) -> strongroom_core::withdrawal::PlannedWithdrawal {
    let req = WithdrawalRequest {
        customer_id,
        asset: "ETH".into(),
        destination: DEST.into(),
        amount: amount.into(),
    };
    plan_withdrawal(
        &AssetRegistry::dev(),
        &WithdrawalRules::default(),
        &req,
        Uuid::new_v4(),
        Uuid::new_v4(),
        env().now(),
    )
    .unwrap()
}

fn idem(key: &str, hash: &str) -> Idempotency {
    Idempotency { principal: "token:t1".into(), key: key.into(), request_hash: hash.into() }
}

async fn balance(store: &SqlStore, c: Uuid) -> (u128, u128) {
    let b = store.balances(c).await.unwrap();
    let eth = b.iter().find(|b| b.asset == eth());
    eth.map_or((0, 0), |b| (b.available.base_units(), b.pending.base_units()))
}

async fn audit_len(store: &SqlStore) -> usize {
    store.audit_page(0, 10_000).await.unwrap().len()
}

async fn assert_intact(store: &SqlStore) {
    let report = verify_audit(store).await.unwrap();
    assert!(report.is_intact(), "{report:?}");
    for t in store.custody_totals().await.unwrap() {
        assert_eq!(t.custody, t.customers, "double entry broken for {}", t.asset);
    }
}

async fn customers_are_created_once(store: Arc<SqlStore>) {
    let c = customer(&store, "user-1").await;
    assert_eq!(store.get_customer(c).await.unwrap().external_id, "user-1");
    let again = store
        .create_customer(
            &ctx(env().now()),
            None,
            NewCustomer { id: Uuid::new_v4(), external_id: "user-1".into() },
        )
        .await;
    assert!(matches!(again, Err(StoreError::CustomerExists(_))), "{again:?}");
    assert!(matches!(store.get_customer(Uuid::new_v4()).await, Err(StoreError::NotFound { .. })));
    assert_eq!(store.customer_by_external_id("user-1").await.unwrap().map(|x| x.id), Some(c));
    assert_eq!(store.customer_by_external_id("user-2").await.unwrap(), None);
    assert_eq!(audit_len(&store).await, 1);
    assert_intact(&store).await;
}

/// Incident notices go to the customers holding the asset a freeze stops, a page at a time;
/// an empty account, another asset's holder and the treasury are not among them.
async fn holders_of_an_asset_come_a_page_at_a_time(store: Arc<SqlStore>) {
    let mut eth_holders = Vec::new();
    for i in 0..5 {
        let c = customer(&store, &format!("h{i}")).await;
        deposit(&store, c, 10 + i).await;
        eth_holders.push(c);
    }
    let usdt = AssetSymbol::parse("USDT").unwrap();
    let other = customer(&store, "usdt-only").await;
    let new = NewDeposit {
        id: Uuid::new_v4(),
        entry_id: Uuid::new_v4(),
        customer_id: other,
        asset: usdt.clone(),
        amount: wei(7),
        reference: "0xusdt:1".into(),
    };
    store.credit_deposit(&ctx(env().now()), None, new).await.unwrap();
    let _empty = customer(&store, "empty").await;
    store.ensure_treasury(&ctx(env().now())).await.unwrap();
    eth_holders.sort();
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let page = store.holders(Some(&eth()), after, 2).await.unwrap();
        if page.is_empty() {
            break;
        }
        assert!(page.len() <= 2);
        after = page.last().copied();
        seen.extend(page);
    }
    assert_eq!(seen, eth_holders);
    assert_eq!(store.holders(Some(&usdt), None, 10).await.unwrap(), vec![other]);
    let mut everyone = eth_holders.clone();
    everyone.push(other);
    everyone.sort();
    assert_eq!(store.holders(None, None, 100).await.unwrap(), everyone);
}

async fn deposits_credit_available_once(store: Arc<SqlStore>) {
    let c = customer(&store, "u").await;
    let d = deposit(&store, c, 1_000).await;
    assert_eq!(balance(&store, c).await, (1_000, 0));
    let dup = NewDeposit {
        id: Uuid::new_v4(),
        entry_id: Uuid::new_v4(),
        customer_id: c,
        asset: eth(),
        amount: wei(1_000),
        reference: d.reference.clone(),
    };
    let r = store.credit_deposit(&ctx(env().now()), None, dup).await;
    assert!(matches!(r, Err(StoreError::DepositAlreadyCredited { .. })), "{r:?}");
    let ghost = NewDeposit {
        id: Uuid::new_v4(),
        entry_id: Uuid::new_v4(),
        customer_id: Uuid::new_v4(),
        asset: eth(),
        amount: wei(1),
        reference: "x".into(),
    };
    assert!(matches!(
        store.credit_deposit(&ctx(env().now()), None, ghost).await,
        Err(StoreError::NotFound { .. })
    ));
    assert_eq!(balance(&store, c).await, (1_000, 0));
    let lines = store.ledger_lines(c, None, 10).await.unwrap();
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0].kind, "deposit");
    assert_eq!(lines[0].balance_after, wei(1_000));
    assert_intact(&store).await;
}

async fn withdrawal_reserves_atomically(store: Arc<SqlStore>) {
    let c = customer(&store, "u").await;
    deposit(&store, c, 10u128.pow(18)).await;
    let p = plan(c, "0.25");
    let w = store.request_withdrawal(&ctx(env().now()), None, p.clone()).await.unwrap();
    assert_eq!(w.state, WithdrawalState::Reserved);
    assert_eq!(balance(&store, c).await, (75 * 10u128.pow(16), 25 * 10u128.pow(16)));
    let got = store.get_withdrawal(w.id).await.unwrap();
    assert_eq!(got, w);
    assert_eq!(got.intent.hash().unwrap().to_hex(), got.intent_hash);
    let listed = store
        .list_withdrawals(&WithdrawalFilter {
            customer_id: Some(c),
            state: Some(WithdrawalState::Reserved),
            after: None,
            limit: 10,
        })
        .await
        .unwrap();
    assert_eq!(listed, vec![w.clone()]);
    let none = store
        .list_withdrawals(&WithdrawalFilter {
            customer_id: Some(c),
            state: Some(WithdrawalState::Settled),
            after: None,
            limit: 10,
        })
        .await
        .unwrap();
    assert!(none.is_empty());
    assert_eq!(
        store
            .list_withdrawals(&WithdrawalFilter { limit: 10, ..Default::default() })
            .await
            .unwrap()
            .len(),
        1
    );
    assert_intact(&store).await;
}

async fn overdraft_is_refused_and_writes_nothing(store: Arc<SqlStore>) {
    let c = customer(&store, "u").await;
    deposit(&store, c, 10u128.pow(17)).await;
    let before = audit_len(&store).await;
    let r =
        store.request_withdrawal(&ctx(env().now()), Some(&idem("k", "h")), plan(c, "0.2")).await;
    assert!(
        matches!(
            r,
            Err(StoreError::Ledger(
                strongroom_core::ledger::LedgerError::InsufficientBalance { .. }
            ))
        ),
        "{r:?}"
    );
    assert_eq!(balance(&store, c).await, (10u128.pow(17), 0));
    assert_eq!(audit_len(&store).await, before);
    assert!(store
        .list_withdrawals(&WithdrawalFilter { limit: 10, ..Default::default() })
        .await
        .unwrap()
        .is_empty());
    // The failed request did not consume its idempotency key.
    deposit(&store, c, 10u128.pow(17)).await;
    store
        .request_withdrawal(&ctx(env().now()), Some(&idem("k", "h")), plan(c, "0.2"))
        .await
        .unwrap();
    assert_intact(&store).await;
}

async fn idempotency_keys_replay_or_conflict(store: Arc<SqlStore>) {
    let c = customer(&store, "u").await;
    deposit(&store, c, 10u128.pow(18)).await;
    let first = store
        .request_withdrawal(&ctx(env().now()), Some(&idem("k1", "hash-a")), plan(c, "0.1"))
        .await
        .unwrap();
    // A retry with the same key and body gets the first withdrawal, and nothing moves again.
    let retry = store
        .request_withdrawal(&ctx(env().now()), Some(&idem("k1", "hash-a")), plan(c, "0.1"))
        .await
        .unwrap();
    assert_eq!(retry, first);
    assert_eq!(balance(&store, c).await, (9 * 10u128.pow(17), 10u128.pow(17)));
    // The same key with a different body is a conflict.
    let other = store
        .request_withdrawal(&ctx(env().now()), Some(&idem("k1", "hash-b")), plan(c, "0.3"))
        .await;
    assert!(matches!(other, Err(StoreError::IdempotencyConflict)), "{other:?}");
    // Keys are scoped per principal.
    let mut foreign = idem("k1", "hash-b");
    foreign.principal = "token:t2".into();
    store.request_withdrawal(&ctx(env().now()), Some(&foreign), plan(c, "0.3")).await.unwrap();
    assert_eq!(balance(&store, c).await, (6 * 10u128.pow(17), 4 * 10u128.pow(17)));
    assert_intact(&store).await;
}

/// A denial cancels a reserved withdrawal and keeps who denied it and why, together; it is
/// refused once the withdrawal moved on (and writes nothing), and a retry under the same key
/// replays it.
async fn a_denial_cancels_once_and_says_who_and_why(store: Arc<SqlStore>) {
    let c = customer(&store, "u").await;
    deposit(&store, c, 10u128.pow(18)).await;
    fund_treasury(&store).await;
    let a = store.request_withdrawal(&ctx(env().now()), None, plan(c, "0.1")).await.unwrap();
    let key = idem("deny-a", "h");
    let denied = store
        .deny_withdrawal(
            &ctx(env().now()),
            Some(&key),
            a.id,
            denial("unknown payee"),
            Uuid::new_v4(),
        )
        .await
        .unwrap();
    assert_eq!(denied.state, WithdrawalState::Cancelled);
    assert_eq!(balance(&store, c).await, (10u128.pow(18), 0), "the funds are available again");
    assert_eq!(store.withdrawal_denial(a.id).await.unwrap(), Some(denial("unknown payee")));
    let replay = store
        .deny_withdrawal(
            &ctx(env().now()),
            Some(&key),
            a.id,
            denial("unknown payee"),
            Uuid::new_v4(),
        )
        .await
        .unwrap();
    assert_eq!(replay.state, WithdrawalState::Cancelled, "the same request replays");
    // A second denial (another approver) finds it ended.
    let again = store
        .deny_withdrawal(&ctx(env().now()), None, a.id, denial("me too"), Uuid::new_v4())
        .await;
    assert!(matches!(again, Err(StoreError::InvalidTransition { .. })), "{again:?}");
    assert_eq!(store.withdrawal_denial(a.id).await.unwrap().unwrap().reason, "unknown payee");
    // Once built, a withdrawal only goes forward: a denial is refused and writes nothing.
    let b = store.request_withdrawal(&ctx(env().now()), None, plan(c, "0.2")).await.unwrap();
    store.build_tx(&ctx(env().now()), build(b.id, 0)).await.unwrap();
    let before = snapshot(&store).await;
    let late = store
        .deny_withdrawal(&ctx(env().now()), None, b.id, denial("too late"), Uuid::new_v4())
        .await;
    assert!(matches!(late, Err(StoreError::InvalidTransition { from: "built", .. })), "{late:?}");
    assert_eq!(snapshot(&store).await, before);
    assert_eq!(store.withdrawal_denial(b.id).await.unwrap(), None);
    assert_intact(&store).await;
}

async fn cancel_releases_and_settle_leaves_custody(store: Arc<SqlStore>) {
    let c = customer(&store, "u").await;
    deposit(&store, c, 10u128.pow(18)).await;
    let a = store.request_withdrawal(&ctx(env().now()), None, plan(c, "0.1")).await.unwrap();
    let b = store.request_withdrawal(&ctx(env().now()), None, plan(c, "0.2")).await.unwrap();
    let cancelled = store
        .transition_withdrawal(
            &ctx(env().now()),
            None,
            a.id,
            WithdrawalState::Cancelled,
            Uuid::new_v4(),
        )
        .await
        .unwrap();
    assert_eq!(cancelled.state, WithdrawalState::Cancelled);
    store
        .transition_withdrawal(
            &ctx(env().now()),
            None,
            b.id,
            WithdrawalState::Settled,
            Uuid::new_v4(),
        )
        .await
        .unwrap();
    assert_eq!(balance(&store, c).await, (8 * 10u128.pow(17), 0));
    let totals = store.custody_totals().await.unwrap();
    assert_eq!(totals[0].custody, wei(8 * 10u128.pow(17)));
    let again = store
        .transition_withdrawal(
            &ctx(env().now()),
            None,
            a.id,
            WithdrawalState::Settled,
            Uuid::new_v4(),
        )
        .await;
    assert!(
        matches!(again, Err(StoreError::InvalidTransition { from: "cancelled", to: "settled" })),
        "{again:?}"
    );
    assert_eq!(balance(&store, c).await, (8 * 10u128.pow(17), 0));
    assert_intact(&store).await;
}

/// Snapshot of everything a write could touch.
async fn snapshot(
    store: &SqlStore,
) -> (Vec<StoredAuditRecord>, Vec<(String, strongroom_audit::Digest32)>) {
    let mut states = store.entity_states().await.unwrap();
    states.sort();
    (store.audit_page(0, 10_000).await.unwrap(), states)
}

/// Run one command that passes the fault points listed beside it.
async fn run_command(
    store: &SqlStore,
    which: usize,
    c: Uuid,
    w: Uuid,
    tag: &str,
) -> Result<(), StoreError> {
    let now = ctx(env().now());
    match which {
        0 => store
            .create_customer(
                &now,
                Some(&idem(&format!("c-{tag}"), "h")),
                NewCustomer { id: Uuid::new_v4(), external_id: format!("x-{tag}") },
            )
            .await
            .map(|_| ()),
        1 => store
            .credit_deposit(
                &now,
                None,
                NewDeposit {
                    id: Uuid::new_v4(),
                    entry_id: Uuid::new_v4(),
                    customer_id: c,
                    asset: eth(),
                    amount: wei(5),
                    reference: format!("r-{tag}"),
                },
            )
            .await
            .map(|_| ()),
        2 => store
            .request_withdrawal(&now, Some(&idem(&format!("w-{tag}"), "h")), plan(c, "0.01"))
            .await
            .map(|_| ()),
        3 => store
            .transition_withdrawal(&now, None, w, WithdrawalState::Cancelled, Uuid::new_v4())
            .await
            .map(|_| ()),
        4 => store.build_tx(&now, build(w, 0)).await.map(|_| ()),
        5 => store.record_signed(&now, w, signed_tx(w, 1)).await.map(|_| ()),
        6 => store.conclude_tx(&now, w, conclusion(true, 21_000)).await.map(|_| ()),
        8 => store
            .deny_withdrawal(&now, None, w, denial("not this one"), Uuid::new_v4())
            .await
            .map(|_| ()),
        _ => {
            let p = plan(c, "0.01");
            let records = WithdrawalRecords {
                signed: Initiations { member: Some(initiation(&p)), customer: None },
                context: Some(context_event(&p)),
            };
            store
                .request_withdrawal_with(&now, Some(&idem(&format!("i-{tag}"), "h")), p, records)
                .await
                .map(|_| ())
        }
    }
}

const COMMAND_POINTS: [&[&str]; 9] = [
    &["customer.after_insert", "audit.after_append"],
    &["deposit.after_postings", "audit.after_append"],
    &["withdrawal.after_reserve", "withdrawal.after_insert", "audit.after_append"],
    &["withdrawal.after_transition", "audit.after_append"],
    &["withdrawal.after_fee_reserve", "withdrawal.after_build", "audit.after_append"],
    &["withdrawal.after_signed", "audit.after_append"],
    &["withdrawal.after_conclude_entries", "audit.after_append"],
    &[
        "withdrawal.after_reserve",
        "withdrawal.after_insert",
        "withdrawal.after_context",
        "withdrawal.after_initiation",
        "audit.after_append",
    ],
    &["withdrawal.after_transition", "withdrawal.after_denial", "audit.after_append"],
];

fn denial(reason: &str) -> Denial {
    Denial { by: "account:ann".into(), reason: reason.into(), at: env().now() }
}

/// The device and address a withdrawal was requested from, as the API records them.
fn context_event(p: &strongroom_core::withdrawal::PlannedWithdrawal) -> RiskEvent {
    RiskEvent {
        id: Uuid::new_v4(),
        customer_id: p.withdrawal.customer_id,
        kind: "withdrawal_context".into(),
        at: p.withdrawal.created_at,
        data: serde_json::json!({ "withdrawal_id": p.withdrawal.id.to_string(), "device_id": "d-1" }),
    }
}

/// An initiation of `p` (the store keeps it; it does not check signatures).
fn initiation(
    p: &strongroom_core::withdrawal::PlannedWithdrawal,
) -> strongroom_governance::initiation::Initiation {
    use strongroom_governance::initiation::{Initiation, Requested};
    let customer = Some(p.withdrawal.customer_id.to_string());
    Initiation {
        initiator: "exchange".into(),
        requested: Requested::of(&p.withdrawal.intent, customer),
        signature: "ab".repeat(64),
        webauthn: None,
    }
}

async fn initiated_withdrawals_keep_the_signed_request_beside_them(store: Arc<SqlStore>) {
    let c = customer(&store, "u").await;
    deposit(&store, c, 10u128.pow(18)).await;
    let p = plan(c, "0.1");
    let mut customers = initiation(&p);
    customers.initiator = c.to_string();
    let both = Initiations { member: Some(initiation(&p)), customer: Some(customers) };
    let event = context_event(&p);
    let records = WithdrawalRecords { signed: both.clone(), context: Some(event.clone()) };
    let w = store.request_withdrawal_with(&ctx(env().now()), None, p, records).await.unwrap();
    assert_eq!(w.state, WithdrawalState::Reserved);
    assert_eq!(store.initiations(w.id).await.unwrap(), both);
    // The risk context went in with it.
    let events = store.risk_events(0, 100).await.unwrap();
    assert!(events.contains(&event), "{events:?}");
    let plain = store.request_withdrawal(&ctx(env().now()), None, plan(c, "0.1")).await.unwrap();
    assert_eq!(store.initiations(plain.id).await.unwrap(), Initiations::default());
    assert_intact(&store).await;
    // The request edited by hand (say, to match an edited withdrawal): `audit verify` sees it.
    store
        .pool()
        .execute(
            format!(
                "UPDATE withdrawal_initiations SET initiation = replace(initiation, 'exchange', 'mallory') WHERE withdrawal_id = '{}' AND kind = 'member'",
                w.id
            )
            .as_str(),
        )
        .await
        .unwrap();
    let report = verify_audit(store.as_ref()).await.unwrap();
    assert_eq!(
        report.mismatches,
        vec![verify::StateMismatch {
            entity: format!("initiation/{}/member", w.id),
            kind: MismatchKind::Edited
        }]
    );
}

/// The state command `which` starts from: reserved, or further along the chain path.
async fn prepare(store: &SqlStore, which: usize, w: Uuid) {
    let now = ctx(env().now());
    if which == 5 || which == 6 {
        store.build_tx(&now, build(w, 0)).await.unwrap();
    }
    if which == 6 {
        store.record_signed(&now, w, signed_tx(w, 1)).await.unwrap();
        store.record_broadcast(&now, w).await.unwrap();
    }
}

/// Enough ETH in the treasury to reserve fees for many withdrawals.
async fn fund_treasury(store: &SqlStore) {
    store.ensure_treasury(&ctx(env().now())).await.unwrap();
    deposit(store, strongroom_core::ledger::TREASURY_CUSTOMER, 10u128.pow(18)).await;
}

const FEE_CAP: u128 = 21_000 * 1_000_000_000_000;

/// A build of withdrawal `w` (paid from hot-eth-1 on the dev chain). The "transaction" is a
/// stand-in that records its nonce: the store keeps bytes, it does not read them.
fn build(w: Uuid, floor: u64) -> BuildTx {
    BuildTx {
        owner_id: w,
        chain: strongroom_units::ChainId::parse("eip155:31337").unwrap(),
        wallet: "hot-eth-1".into(),
        nonce_floor: floor,
        fee_asset: eth(),
        fee_reserve: wei(FEE_CAP),
        fee_entry_id: Uuid::new_v4(),
        coins: Vec::new(),
        build: Arc::new(|nonce| Ok(format!("tx-with-nonce-{nonce}").into_bytes())),
    }
}

/// Fee bumps: only for a broadcast transaction; one waiting for signatures at a time (asking
/// again returns it); a signed one written once; at most `MAX_BUMPS`; the one mined adopted as
/// the transaction of record (idempotently), then concluded with its fee; the audit verifies.
async fn fee_bumps_wait_for_their_signatures_one_at_a_time_and_the_mined_one_is_adopted(
    store: Arc<SqlStore>,
) {
    let now = ctx(env().now());
    let c = customer(&store, "u").await;
    deposit(&store, c, 10u128.pow(18)).await;
    fund_treasury(&store).await;
    let id = store.request_withdrawal(&now, None, plan(c, "0.1")).await.unwrap().id;
    store.build_tx(&now, build(id, 0)).await.unwrap();
    let refused = |r: Result<Bump>| matches!(r, Err(StoreError::Refused(_)));
    assert!(refused(store.bump_tx(&now, id, b"bump-1".to_vec()).await), "not broadcast yet");
    store.record_signed(&now, id, signed_tx(id, 0)).await.unwrap();
    store.record_broadcast(&now, id).await.unwrap();

    let b1 = store.bump_tx(&now, id, b"bump-1".to_vec()).await.unwrap();
    assert_eq!((b1.version, b1.signed.clone()), (1, None));
    let again = store.bump_tx(&now, id, b"other".to_vec()).await.unwrap();
    assert_eq!(again, b1, "one waiting for signatures at a time");
    let s1 = store.record_bump_signed(&now, id, 1, signed_tx(id, 1)).await.unwrap();
    assert_eq!(s1.signed, Some(signed_tx(id, 1)));
    let kept = store.record_bump_signed(&now, id, 1, signed_tx(id, 9)).await.unwrap();
    assert_eq!(kept.signed, Some(signed_tx(id, 1)), "written once");
    assert!(store.record_bump_signed(&now, id, 7, signed_tx(id, 7)).await.is_err());
    for v in 2..=MAX_BUMPS {
        let b = store.bump_tx(&now, id, format!("bump-{v}").into_bytes()).await.unwrap();
        assert_eq!(b.version, v);
        let version = u8::try_from(v).unwrap();
        store.record_bump_signed(&now, id, v, signed_tx(id, version)).await.unwrap();
    }
    assert!(refused(store.bump_tx(&now, id, b"one too many".to_vec()).await));
    assert_eq!(store.bumps(id).await.unwrap().len(), usize::try_from(MAX_BUMPS).unwrap());

    // Bump 2 is mined: it becomes the transaction of record, once.
    let adopted = store.adopt_bump(&now, id, 2).await.unwrap();
    assert_eq!(adopted.signed, Some(signed_tx(id, 2)));
    assert_eq!(hex::decode(&adopted.unsigned_tx).unwrap(), b"bump-2");
    let records = audit_len(&store).await;
    assert_eq!(store.adopt_bump(&now, id, 2).await.unwrap(), adopted);
    assert_eq!(audit_len(&store).await, records, "adopting again writes nothing");
    store.conclude_tx(&now, id, conclusion(true, 21_000)).await.unwrap();
    assert!(refused(store.bump_tx(&now, id, b"late".to_vec()).await), "settled");
    assert!(store.adopt_bump(&now, id, 3).await.is_err(), "settled");
    assert_intact(&store).await;
}

/// On a chain of coins: a coin reserved by one withdrawal's build fails another's (nothing
/// written, the nonce not spent), its owner may build on it again, and the reservations read
/// back with their owners and verify in the audit.
async fn builds_never_share_a_coin(store: Arc<SqlStore>) {
    let now = ctx(env().now());
    let c = customer(&store, "u").await;
    deposit(&store, c, 10u128.pow(18)).await;
    fund_treasury(&store).await;
    let new = || {
        let store = store.clone();
        async move {
            store.request_withdrawal(&ctx(env().now()), None, plan(c, "0.1")).await.unwrap().id
        }
    };
    let (w1, w2) = (new().await, new().await);
    let coins = |list: &[&str]| list.iter().map(|c| format!("{}:0", c.repeat(64))).collect();
    let chain = strongroom_units::ChainId::parse("eip155:31337").unwrap();
    let mut b1 = build(w1, 0);
    b1.coins = coins(&["a", "b", "a"]);
    let t1 = store.build_tx(&now, b1).await.unwrap();
    let before = snapshot(&store).await;
    let mut b2 = build(w2, 0);
    b2.coins = coins(&["c", "b"]);
    let e = store.build_tx(&now, b2).await.unwrap_err();
    assert!(
        matches!(&e, StoreError::CoinTaken { coin, owner } if coin.starts_with("bbbb") && *owner == w1.to_string()),
        "{e:?}"
    );
    assert_eq!(snapshot(&store).await, before, "a refused build writes nothing");
    assert_eq!(store.get_withdrawal(w2).await.unwrap().state, WithdrawalState::Reserved);
    let mut b2 = build(w2, 0);
    b2.coins = coins(&["c"]);
    let t2 = store.build_tx(&now, b2).await.unwrap();
    assert_eq!((t1.nonce, t2.nonce), (0, 1), "the refused build spent no nonce");
    let held = store.reserved_coins(&chain, &coins(&["a", "b", "c", "d"])).await.unwrap();
    let owners: Vec<Uuid> = held.values().copied().collect();
    assert_eq!(owners, vec![w1, w1, w2]);
    assert!(store.reserved_coins(&chain, &[]).await.unwrap().is_empty());
    let other = strongroom_units::ChainId::parse("eip155:1").unwrap();
    assert!(store.reserved_coins(&other, &coins(&["a"])).await.unwrap().is_empty());
    assert_intact(&store).await;
}

fn signed_tx(w: Uuid, version: u8) -> strongroom_chain::SignedTx {
    strongroom_chain::SignedTx { raw: vec![version; 8], txid: format!("0x{}{version}", w.simple()) }
}

fn conclusion(success: bool, fee: u128) -> Conclusion {
    Conclusion {
        success,
        block: strongroom_chain::BlockRef { number: 7, hash: "0xb7".into() },
        fee_paid: wei(fee),
        entry_ids: [Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4()],
    }
}

async fn injected_faults_leave_no_partial_write(store: Arc<SqlStore>) {
    let c = customer(&store, "u").await;
    deposit(&store, c, 10u128.pow(18)).await;
    fund_treasury(&store).await;
    let mut covered = std::collections::HashSet::new();
    for (which, points) in COMMAND_POINTS.iter().enumerate() {
        for point in points.iter() {
            covered.insert(*point);
            // A fresh reserved withdrawal for the cancel command to act on.
            let w = store
                .request_withdrawal(&ctx(env().now()), None, plan(c, "0.01"))
                .await
                .unwrap()
                .id;
            prepare(&store, which, w).await;
            let tag = format!("{which}-{point}");
            let before = snapshot(&store).await;
            store.faults().arm(point).unwrap();
            let r = run_command(&store, which, c, w, &tag).await;
            assert!(
                matches!(r, Err(StoreError::InjectedFault(p)) if p == *point),
                "command {which} at {point}: {r:?}"
            );
            assert_eq!(
                snapshot(&store).await,
                before,
                "partial write by command {which} at {point}"
            );
            assert_intact(&store).await;
            // The fault fired once; the same command now succeeds, and its idempotency key
            // was never consumed by the failed attempt.
            run_command(&store, which, c, w, &tag).await.unwrap();
            assert_intact(&store).await;
        }
    }
    assert_eq!(covered.len(), POINTS.len(), "every fault point is exercised");
}

async fn chain_withdrawals_take_each_nonce_once_and_keep_one_signed_tx(store: Arc<SqlStore>) {
    let now = ctx(env().now());
    let c = customer(&store, "u").await;
    deposit(&store, c, 10u128.pow(18)).await;
    let new = |amount: &'static str| {
        let store = store.clone();
        async move {
            store.request_withdrawal(&ctx(env().now()), None, plan(c, amount)).await.unwrap().id
        }
    };
    let (w1, w2, w3) = (new("0.1").await, new("0.2").await, new("0.05").await);

    // No treasury money for the fee: refused, and nothing is spent (not even the nonce).
    let before = snapshot(&store).await;
    assert!(store.build_tx(&now, build(w1, 5)).await.is_err());
    assert_eq!(snapshot(&store).await, before);
    fund_treasury(&store).await;

    // Nonces: the chain's floor, then the next; a repeated build returns the stored one.
    let t1 = store.build_tx(&now, build(w1, 5)).await.unwrap();
    let t2 = store.build_tx(&now, build(w2, 0)).await.unwrap();
    assert_eq!((t1.nonce, t2.nonce), (5, 6));
    assert_eq!(hex::decode(&t1.unsigned_tx).unwrap(), b"tx-with-nonce-5");
    let records = audit_len(&store).await;
    assert_eq!(store.build_tx(&now, build(w1, 9)).await.unwrap(), t1);
    assert_eq!(audit_len(&store).await, records, "a repeated build writes nothing");
    // The chain is ahead of us (someone else used the wallet): we follow it, never reuse.
    assert_eq!(store.build_tx(&now, build(w3, 10)).await.unwrap().nonce, 10);
    assert_eq!(store.get_withdrawal(w1).await.unwrap().state, WithdrawalState::Built);
    let treasury = balance(&store, strongroom_core::ledger::TREASURY_CUSTOMER).await;
    assert_eq!(treasury, (10u128.pow(18) - 3 * FEE_CAP, 3 * FEE_CAP));

    // A builder that fails, another wallet, a built withdrawal cancelled: refused.
    let w4 = new("0.01").await;
    let mut bad = build(w4, 0);
    bad.build = Arc::new(|_| Err("fee above the cap".into()));
    assert!(
        matches!(store.build_tx(&now, bad).await, Err(StoreError::Refused(m)) if m.contains("fee above"))
    );
    let mut other = build(w4, 0);
    other.wallet = "hot-eth-2".into();
    assert!(matches!(store.build_tx(&now, other).await, Err(StoreError::Refused(_))));
    assert!(matches!(
        store
            .transition_withdrawal(&now, None, w1, WithdrawalState::Cancelled, Uuid::new_v4())
            .await,
        Err(StoreError::InvalidTransition { .. })
    ));
    assert!(matches!(
        store.transition_withdrawal(&now, None, w1, WithdrawalState::Settled, Uuid::new_v4()).await,
        Err(StoreError::InvalidTransition { .. })
    ));

    // One signed transaction per withdrawal: a second one is ignored and the first returned.
    let s1 = store.record_signed(&now, w1, signed_tx(w1, 1)).await.unwrap();
    assert_eq!(s1.signed, Some(signed_tx(w1, 1)));
    let again = store.record_signed(&now, w1, signed_tx(w1, 2)).await.unwrap();
    assert_eq!(again.signed, Some(signed_tx(w1, 1)), "the first signed transaction stays");
    // Not before it is built.
    assert!(store.record_signed(&now, w4, signed_tx(w4, 1)).await.is_err());
    assert!(store.record_broadcast(&now, w2).await.is_err(), "not signed yet");

    store.record_broadcast(&now, w1).await.unwrap();
    store.record_broadcast(&now, w1).await.unwrap();
    assert_eq!(store.get_withdrawal(w1).await.unwrap().state, WithdrawalState::Broadcast);

    // Settled: the customer's pending leaves custody; the treasury pays the fee burned and
    // gets the rest of its reservation back.
    assert!(matches!(
        store.conclude_tx(&now, w1, conclusion(true, FEE_CAP + 1)).await,
        Err(StoreError::Refused(_))
    ));
    let fee = 21_000 * 1_234_567;
    let done = store.conclude_tx(&now, w1, conclusion(true, fee)).await.unwrap();
    assert_eq!((done.fee_paid, done.block.as_ref().map(|b| b.number)), (Some(wei(fee)), Some(7)));
    assert_eq!(store.get_withdrawal(w1).await.unwrap().state, WithdrawalState::Settled);
    assert_eq!(store.conclude_tx(&now, w1, conclusion(true, 5)).await.unwrap(), done, "once");
    assert_eq!(balance(&store, c).await, (64 * 10u128.pow(16), 26 * 10u128.pow(16)));
    let treasury = balance(&store, strongroom_core::ledger::TREASURY_CUSTOMER).await;
    assert_eq!(treasury, (10u128.pow(18) - 2 * FEE_CAP - fee, 2 * FEE_CAP));

    // Reverted: the customer's funds return; the fee is still paid.
    store.record_signed(&now, w2, signed_tx(w2, 1)).await.unwrap();
    store.record_broadcast(&now, w2).await.unwrap();
    store.conclude_tx(&now, w2, conclusion(false, fee)).await.unwrap();
    assert_eq!(store.get_withdrawal(w2).await.unwrap().state, WithdrawalState::Failed);
    assert_eq!(balance(&store, c).await, (84 * 10u128.pow(16), 6 * 10u128.pow(16)));
    assert_intact(&store).await;

    // A signed transaction swapped in the database is caught by the audit check.
    store
        .pool()
        .execute(format!("UPDATE chain_txs SET signed_tx = 'ff' WHERE owner_id = '{w1}'").as_str())
        .await
        .unwrap();
    let report = verify_audit(&*store).await.unwrap();
    assert!(report.mismatches.iter().any(|m| m.entity == format!("chain_tx/{w1}")), "{report:?}");
}

async fn concurrent_builds_take_distinct_contiguous_nonces(store: Arc<SqlStore>) {
    let c = customer(&store, "u").await;
    deposit(&store, c, 10u128.pow(18)).await;
    fund_treasury(&store).await;
    let mut ids = Vec::new();
    for _ in 0..12 {
        ids.push(
            store.request_withdrawal(&ctx(env().now()), None, plan(c, "0.01")).await.unwrap().id,
        );
    }
    // Every withdrawal built twice at once, by racing workers.
    let mut tasks = Vec::new();
    for (i, w) in ids.iter().chain(ids.iter()).enumerate() {
        let (store, w) = (store.clone(), *w);
        tasks.push(tokio::spawn(async move {
            store.build_tx(&ctx(env().now()), build(w, (i % 2) as u64)).await.unwrap()
        }));
    }
    let mut by_withdrawal = std::collections::BTreeMap::new();
    for t in tasks {
        let tx = t.await.unwrap();
        if let Some(prev) = by_withdrawal.insert(tx.owner_id, tx.nonce) {
            assert_eq!(prev, tx.nonce, "one withdrawal, one nonce");
        }
    }
    // The first build may see a chain floor of 0 or 1; from there, one each, no gaps.
    let mut nonces: Vec<u64> = by_withdrawal.values().copied().collect();
    nonces.sort();
    let first = nonces[0];
    assert!(first <= 1);
    assert_eq!(nonces, (first..first + 12).collect::<Vec<u64>>(), "distinct, none skipped");
    assert_intact(&store).await;
}

/// 0.001 ETH in wei.
const MILLI: u128 = 1_000_000_000_000_000;

fn dev_chain() -> strongroom_units::ChainId {
    strongroom_units::ChainId::parse("eip155:31337").unwrap()
}

fn seen(txid: &str, customer_id: Uuid, amount: u128, block: u64) -> SeenTransfer {
    SeenTransfer {
        txid: txid.into(),
        log_index: 0,
        to_address: format!("addr-of-{customer_id}"),
        customer_id,
        asset: eth(),
        amount: wei(amount),
        block: strongroom_chain::BlockRef { number: block, hash: format!("0xb{block}") },
    }
}

fn blocks(from: u64, to: u64, fork: &str) -> Vec<strongroom_chain::BlockRef> {
    (from..=to)
        .map(|n| strongroom_chain::BlockRef { number: n, hash: format!("0xb{n}{fork}") })
        .collect()
}

async fn watched_deposits_are_credited_once_and_reorganised_ones_reversed_or_held(
    store: Arc<SqlStore>,
) {
    let now = ctx(env().now());
    let chain = dev_chain();
    let (alice, bob) = (customer(&store, "alice").await, customer(&store, "bob").await);

    // Deposit addresses: one per customer, at successive indices, stable.
    let derive: AddressDeriver = Arc::new(|i| Ok(format!("0xaddress{i}")));
    let new_address = |c: Uuid| NewDepositAddress {
        chain: chain.clone(),
        wallet: "hot-eth-1".into(),
        customer_id: c,
        derive: derive.clone(),
    };
    let a = store.deposit_address(&now, new_address(alice)).await.unwrap();
    let b = store.deposit_address(&now, new_address(bob)).await.unwrap();
    assert_eq!((a.path_index, b.path_index), (0, 1));
    assert_eq!(store.deposit_address(&now, new_address(alice)).await.unwrap(), a);
    assert_eq!(store.deposit_addresses(&chain).await.unwrap().len(), 2);
    // After a key migration the new wallet's key gives alice a second address, from its
    // own index 0; the first stays hers, and the watcher pages each wallet by itself.
    let derive_new: AddressDeriver = Arc::new(|i| Ok(format!("0xnewaddress{i}")));
    let moved = NewDepositAddress {
        chain: chain.clone(),
        wallet: "hot-eth-2".into(),
        customer_id: alice,
        derive: derive_new,
    };
    let a2 = store.deposit_address(&now, moved.clone()).await.unwrap();
    assert_eq!(
        (a2.wallet.as_str(), a2.path_index, a2.address.as_str()),
        ("hot-eth-2", 0, "0xnewaddress0")
    );
    assert_eq!(store.deposit_address(&now, moved).await.unwrap(), a2);
    assert_eq!(store.deposit_address(&now, new_address(alice)).await.unwrap(), a);
    assert_eq!(store.deposit_addresses(&chain).await.unwrap().len(), 3);
    let paged = |w: &'static str| {
        let store = store.clone();
        let chain = chain.clone();
        async move { store.deposit_addresses_from(&chain, w, 0, 10).await.unwrap() }
    };
    assert_eq!(paged("hot-eth-1").await, vec![a.clone(), b.clone()]);
    assert_eq!(paged("hot-eth-2").await, vec![a2.clone()]);
    assert_eq!(
        store.find_deposit_address(&chain, "0xNEWADDRESS0").await.unwrap().map(|d| d.customer_id),
        Some(alice)
    );
    let audit = strongroom_store::verify_audit(store.as_ref()).await.unwrap();
    assert!(audit.mismatches.is_empty() && audit.chain_break.is_none(), "{audit:?}");

    // A scan of blocks 1..=3 finds three transfers.
    assert_eq!(store.chain_cursor(&chain).await.unwrap(), None);
    let batch = ScanBatch {
        chain: chain.clone(),
        blocks: blocks(1, 3, ""),
        transfers: vec![
            seen("0xt1", alice, 1000 * MILLI, 1),
            seen("0xt2", bob, 500 * MILLI, 2),
            seen("0xt3", alice, 7 * MILLI, 3),
        ],
        next_block: 4,
    };
    store.record_scan(&now, batch.clone()).await.unwrap();
    assert_eq!(store.chain_cursor(&chain).await.unwrap(), Some(4));
    assert_eq!(
        store.recent_blocks(&chain, 2).await.unwrap(),
        blocks(2, 3, "").into_iter().rev().collect::<Vec<_>>()
    );
    // Reading the same blocks again changes nothing; a different hash at a height is refused.
    store.record_scan(&now, batch).await.unwrap();
    assert_eq!(store.chain_deposits(&chain, None).await.unwrap().len(), 3);
    let clash = ScanBatch {
        chain: chain.clone(),
        blocks: blocks(3, 3, "x"),
        transfers: vec![],
        next_block: 4,
    };
    assert!(matches!(store.record_scan(&now, clash).await, Err(StoreError::Refused(_))));

    // Credited once each.
    for t in ["0xt1", "0xt2", "0xt3"] {
        let d = store
            .credit_chain_deposit(&now, &chain, t, 0, [Uuid::new_v4(), Uuid::new_v4()])
            .await
            .unwrap();
        assert!(d.deposit_id.is_some());
        let again = store
            .credit_chain_deposit(&now, &chain, t, 0, [Uuid::new_v4(), Uuid::new_v4()])
            .await
            .unwrap();
        assert_eq!(again.deposit_id, d.deposit_id, "credited once");
    }
    assert_eq!(balance(&store, alice).await, (1007 * MILLI, 0));
    assert_eq!(balance(&store, bob).await, (500 * MILLI, 0));
    // Blocks 2 and 3 are reorganised away; t3 comes back in block 5, t2 never does.
    store.rewind_chain(&now, &chain, 2).await.unwrap();
    assert_eq!(store.chain_cursor(&chain).await.unwrap(), Some(2));
    let orphans = store.chain_deposits(&chain, Some(ChainDepositState::Orphaned)).await.unwrap();
    assert_eq!(orphans.len(), 2);
    let rescan = ScanBatch {
        chain: chain.clone(),
        blocks: blocks(2, 5, "r"),
        transfers: vec![seen("0xt3", alice, 7 * MILLI, 5)],
        next_block: 6,
    };
    store.record_scan(&now, rescan).await.unwrap();
    let t3 = store
        .chain_deposits(&chain, Some(ChainDepositState::Seen))
        .await
        .unwrap()
        .into_iter()
        .find(|d| d.transfer.txid == "0xt3")
        .unwrap();
    assert_eq!(t3.transfer.block.number, 5, "re-included: new block, credit kept");
    assert!(t3.deposit_id.is_some());

    // t2 is gone for good. Bob still has it: the credit is reversed.
    let r = store.resolve_orphan(&now, &chain, "0xt2", 0, Uuid::new_v4()).await.unwrap();
    assert_eq!(r.state, ChainDepositState::Reversed);
    assert_eq!(balance(&store, bob).await, (0, 0));
    assert!(store.resolve_orphan(&now, &chain, "0xt2", 0, Uuid::new_v4()).await.is_err(), "once");

    // t1 is reorganised away after Alice spent it: held, an alert, no negative balance.
    store.rewind_chain(&now, &chain, 1).await.unwrap();
    store.request_withdrawal(&now, None, plan(alice, "0.5")).await.unwrap();
    let r = store.resolve_orphan(&now, &chain, "0xt1", 0, Uuid::new_v4()).await.unwrap();
    assert_eq!(r.state, ChainDepositState::Held);
    assert_eq!(balance(&store, alice).await, (507 * MILLI, 500 * MILLI), "nothing taken");
    let alerts = store.audit_page(0, 10_000).await.unwrap();
    assert!(alerts.iter().any(|a| a.record.action == "alert.deposit_reorganised_after_use"));
    // A transfer seen but never credited and then gone is just dropped.
    let late = ScanBatch {
        chain: chain.clone(),
        blocks: blocks(1, 6, "z"),
        transfers: vec![seen("0xt4", alice, 9 * MILLI, 6)],
        next_block: 7,
    };
    store.record_scan(&now, late).await.unwrap();
    store.rewind_chain(&now, &chain, 6).await.unwrap();
    assert_eq!(
        store.resolve_orphan(&now, &chain, "0xt4", 0, Uuid::new_v4()).await.unwrap().state,
        ChainDepositState::Dropped
    );
    assert_intact(&store).await;
}

/// A refill from cold: one open per chain and asset (asking again, even concurrently, returns
/// the open one and writes nothing), approvals one per approver and only for its intent, the
/// bundle once, an end that stays; the list pages newest first; the audit verifies and
/// catches an edited bundle.
async fn refills_open_once_per_asset_and_only_move_forward(store: Arc<SqlStore>) {
    let now = ctx(env().now());
    let c = customer(&store, "u").await;
    let new = || {
        let mut intent = plan(c, "2").withdrawal.intent;
        intent.source_wallet = strongroom_core::WalletId::parse("cold-eth-1").unwrap();
        intent.request_id = Uuid::new_v4();
        Refill {
            id: Uuid::new_v4(),
            intent_hash: intent.hash().unwrap().to_hex(),
            intent,
            state: RefillState::AwaitingApprovals,
            approvals: Vec::new(),
            bundle: None,
            waiting_for: None,
            created_at: env().now(),
            updated_at: env().now(),
        }
    };
    // Two at once: one is opened, both callers get it.
    let (a, b) = tokio::join!(store.open_refill(&now, new()), store.open_refill(&now, new()));
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(a, b);
    assert_eq!(store.open_refill(&now, new()).await.unwrap().id, a.id);
    assert_eq!(store.list_refills(true, None, 10).await.unwrap(), vec![a.clone()]);
    // A refill whose hash is not its intent's is refused.
    let mut forged = new();
    forged.intent_hash = "00".repeat(32);
    let other =
        store.update_refill(&now, a.id, RefillChange::End(RefillState::Done)).await.unwrap();
    assert_eq!(other.state, RefillState::Done);
    assert!(store.open_refill(&now, forged).await.is_err());
    let r = store.open_refill(&now, new()).await.unwrap();
    assert_ne!(r.id, a.id, "once one ended, the next is a new one");

    let approval = |who: &str, hash: &str| strongroom_governance::approval::Approval {
        approver: who.into(),
        intent_hash: hash.into(),
        policy_version: 1,
        expires_at: env().now().plus_ms(60_000),
        signature: "ab".repeat(64),
        webauthn: None,
    };
    let up = |change| store.update_refill(&now, r.id, change);
    assert!(matches!(
        up(RefillChange::Approval(approval("ann", &a.intent_hash))).await,
        Err(StoreError::Refused(_))
    ));
    up(RefillChange::Approval(approval("ann", &r.intent_hash))).await.unwrap();
    let two = up(RefillChange::Approval(approval("ann", &r.intent_hash))).await.unwrap();
    assert_eq!(two.approvals.len(), 1, "one per approver");
    let two = up(RefillChange::Approval(approval("al", &r.intent_hash))).await.unwrap();
    assert_eq!(two.approvals.len(), 2);
    let waiting = up(RefillChange::Waiting("the cold wallet cannot pay".into())).await.unwrap();
    assert_eq!(waiting.waiting_for.as_deref(), Some("the cold wallet cannot pay"));
    let ready = up(RefillChange::Bundle("{\"bundle\":1}".into())).await.unwrap();
    assert_eq!((ready.state, ready.waiting_for.clone()), (RefillState::Ready, None));
    assert!(matches!(
        up(RefillChange::Bundle("{}".into())).await,
        Err(StoreError::InvalidTransition { .. })
    ));
    // Governance no longer allows the bundle: withdrawn, awaiting approvals again, remade.
    let back = up(RefillChange::Reopen("approvals expired".into())).await.unwrap();
    assert_eq!((back.state, back.bundle.clone()), (RefillState::AwaitingApprovals, None));
    assert!(matches!(
        up(RefillChange::Reopen("again".into())).await,
        Err(StoreError::InvalidTransition { .. })
    ));
    assert_eq!(up(RefillChange::Bundle("{}".into())).await.unwrap().state, RefillState::Ready);
    up(RefillChange::End(RefillState::Expired)).await.unwrap();
    for late in [
        RefillChange::Approval(approval("bo", &r.intent_hash)),
        RefillChange::End(RefillState::Done),
        RefillChange::Waiting("x".into()),
        RefillChange::Reopen("x".into()),
    ] {
        assert!(matches!(up(late).await, Err(StoreError::InvalidTransition { .. })));
    }
    let got = store.get_refill(r.id).await.unwrap();
    assert_eq!((got.state, got.approvals.len()), (RefillState::Expired, 2));
    assert!(store.list_refills(true, None, 10).await.unwrap().is_empty());
    // Newest first, a page at a time.
    let first = store.list_refills(false, None, 1).await.unwrap();
    assert_eq!(first.len(), 1);
    let key = Keyset { at_ms: first[0].created_at.unix_ms(), id: first[0].id.to_string(), n: 0 };
    let rest = store.list_refills(false, Some(&key), 10).await.unwrap();
    let mut ids: Vec<Uuid> = first.iter().chain(rest.iter()).map(|r| r.id).collect();
    ids.sort();
    let mut want = vec![a.id, r.id];
    want.sort();
    assert_eq!(ids, want);
    assert_intact(&store).await;
    store
        .pool()
        .execute(
            format!("UPDATE cold_refills SET bundle = 'edited' WHERE id = '{}'", r.id).as_str(),
        )
        .await
        .unwrap();
    let report = verify_audit(&*store).await.unwrap();
    assert!(report.mismatches.iter().any(|m| m.entity == format!("refill/{}", r.id)), "{report:?}");
}

async fn sweeps_share_the_chain_path_and_move_nothing_but_the_fee(store: Arc<SqlStore>) {
    let now = ctx(env().now());
    let c = customer(&store, "u").await;
    deposit(&store, c, 10u128.pow(18)).await;
    fund_treasury(&store).await;
    let totals = store.custody_totals().await.unwrap();
    let mut intent = plan(c, "0.5").withdrawal.intent;
    let id = Uuid::new_v4();
    intent.request_id = id;
    let sweep = Sweep {
        id,
        kind: SweepKind::Sweep,
        path: vec![0, 3],
        from_address: "0xfrom".into(),
        intent,
        state: WithdrawalState::Reserved,
        created_at: env().now(),
        updated_at: env().now(),
    };
    assert_eq!(sweep.account(), "hot-eth-1/0/3");
    store.create_sweep(&now, sweep.clone()).await.unwrap();
    assert_eq!(store.list_sweeps(&dev_chain(), true).await.unwrap(), vec![sweep.clone()]);
    // Its nonces are the child account's, not the wallet's.
    let mut b = build(id, 4);
    assert!(matches!(store.build_tx(&now, b.clone()).await, Err(StoreError::Refused(_))));
    b.wallet = sweep.account();
    assert_eq!(store.build_tx(&now, b).await.unwrap().nonce, 4);
    store.record_signed(&now, id, signed_tx(id, 1)).await.unwrap();
    store.record_broadcast(&now, id).await.unwrap();
    store.conclude_tx(&now, id, conclusion(true, 21_000)).await.unwrap();
    assert_eq!(store.get_sweep(id).await.unwrap().state, WithdrawalState::Settled);
    assert!(store.list_sweeps(&dev_chain(), true).await.unwrap().is_empty());
    // The customer's balance did not move; custody dropped by the fee only.
    assert_eq!(balance(&store, c).await, (10u128.pow(18), 0));
    let after = store.custody_totals().await.unwrap();
    let eth_before = totals.iter().find(|t| t.asset == eth()).unwrap().custody.base_units();
    let eth_after = after.iter().find(|t| t.asset == eth()).unwrap().custody.base_units();
    assert_eq!(eth_before - eth_after, 21_000);
    assert_intact(&store).await;
}

async fn audit_chain_verifies_and_catches_tampering(store: Arc<SqlStore>) {
    let c = customer(&store, "u").await;
    deposit(&store, c, 10u128.pow(18)).await;
    let w = store.request_withdrawal(&ctx(env().now()), None, plan(c, "0.1")).await.unwrap();
    store.ping().await.unwrap();
    let report = verify_audit(store.as_ref()).await.unwrap();
    assert!(report.is_intact(), "{report:?}");
    assert_eq!(report.records, 3);

    // 1. A balance edited by hand.
    let key = format!("customer/{c}/ETH/available");
    store
        .pool()
        .execute(
            format!("UPDATE accounts SET balance = '999000000000000000000' WHERE key = '{key}'")
                .as_str(),
        )
        .await
        .unwrap();
    let report = verify_audit(store.as_ref()).await.unwrap();
    assert_eq!(
        report.mismatches,
        vec![verify::StateMismatch {
            entity: format!("account/{key}"),
            kind: MismatchKind::Edited
        }]
    );

    // 2. A withdrawal row inserted by hand.
    store.pool().execute(format!(
        "INSERT INTO withdrawals (id, customer_id, asset, destination, amount, intent, intent_hash, state, created_at_ms, updated_at_ms) \
         SELECT 'forged', customer_id, asset, destination, amount, intent, intent_hash, state, created_at_ms, updated_at_ms FROM withdrawals WHERE id = '{}'", w.id).as_str()).await.unwrap();
    let report = verify_audit(store.as_ref()).await.unwrap();
    assert!(
        report.mismatches.contains(&verify::StateMismatch {
            entity: "withdrawal/forged".into(),
            kind: MismatchKind::NotAudited
        }),
        "{report:?}"
    );

    // 3. An audit record edited by someone who first disabled the append-only trigger.
    match store.backend() {
        Backend::Sqlite => store.pool().execute("DROP TRIGGER audit_log_no_update").await.unwrap(),
        Backend::Postgres => store
            .pool()
            .execute("ALTER TABLE audit_log DISABLE TRIGGER audit_log_append_only")
            .await
            .unwrap(),
    };
    store.pool().execute("UPDATE audit_log SET actor = 'mallory' WHERE seq = 2").await.unwrap();
    let report = verify_audit(store.as_ref()).await.unwrap();
    assert_eq!(report.chain_break, Some(strongroom_audit::ChainBreak::LeafMismatch { seq: 2 }));
    assert_eq!(report.records, 1);
}

async fn concurrent_withdrawals_never_overdraw(store: Arc<SqlStore>) {
    let c = customer(&store, "u").await;
    deposit(&store, c, 10 * 10u128.pow(15)).await;
    let mut tasks = Vec::new();
    for i in 0..24 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            store
                .request_withdrawal(
                    &ctx(env().now()),
                    Some(&idem(&format!("k{}", i % 12), "h")),
                    plan(c, "0.001"),
                )
                .await
        }));
    }
    let mut ok = 0;
    let mut ids = std::collections::HashSet::new();
    for t in tasks {
        match t.await.unwrap() {
            Ok(w) => {
                ok += 1;
                ids.insert(w.id);
            }
            Err(StoreError::Ledger(_)) => {}
            Err(e) => panic!("unexpected error {e}"),
        }
    }
    // 12 distinct keys, each used twice: at most 10 distinct withdrawals fit the balance,
    // and each key's retry returns its first withdrawal.
    assert_eq!(ids.len(), 10, "distinct withdrawals");
    assert!(ok >= 10);
    assert_eq!(balance(&store, c).await, (0, 10 * 10u128.pow(15)));
    assert_intact(&store).await;
}

/// Writers that touch the same rows in different orders (reserve: available then pending;
/// cancel: pending then available; deposit: custody and available) neither deadlock nor
/// double-apply.
async fn concurrent_mixed_writes_stay_consistent(store: Arc<SqlStore>) {
    let c = customer(&store, "u").await;
    deposit(&store, c, 10u128.pow(18)).await;
    let mut reserved = Vec::new();
    for _ in 0..6 {
        reserved.push(
            store.request_withdrawal(&ctx(env().now()), None, plan(c, "0.01")).await.unwrap().id,
        );
    }
    let mut tasks = Vec::new();
    for (i, w) in reserved.iter().enumerate() {
        for _ in 0..2 {
            // Each withdrawal cancelled twice at once: exactly one may succeed.
            let (store, w) = (store.clone(), *w);
            tasks.push(tokio::spawn(async move {
                store
                    .transition_withdrawal(
                        &ctx(env().now()),
                        None,
                        w,
                        WithdrawalState::Cancelled,
                        Uuid::new_v4(),
                    )
                    .await
                    .map(|_| "cancel")
            }));
        }
        let store2 = store.clone();
        tasks.push(tokio::spawn(async move {
            store2
                .request_withdrawal(&ctx(env().now()), None, plan(c, "0.01"))
                .await
                .map(|_| "reserve")
        }));
        let store3 = store.clone();
        let reference = format!("same-{}", i % 2);
        tasks.push(tokio::spawn(async move {
            let new = NewDeposit {
                id: Uuid::new_v4(),
                entry_id: Uuid::new_v4(),
                customer_id: c,
                asset: eth(),
                amount: wei(1),
                reference,
            };
            store3.credit_deposit(&ctx(env().now()), None, new).await.map(|_| "deposit")
        }));
    }
    let mut counts = std::collections::HashMap::new();
    for t in tasks {
        match tokio::time::timeout(std::time::Duration::from_secs(30), t)
            .await
            .expect("no deadlock")
            .unwrap()
        {
            Ok(kind) => *counts.entry(kind).or_insert(0) += 1,
            Err(StoreError::InvalidTransition { .. }) => {
                *counts.entry("cancel refused").or_insert(0) += 1
            }
            Err(StoreError::DepositAlreadyCredited { .. }) => {
                *counts.entry("deposit refused").or_insert(0) += 1
            }
            Err(e) => panic!("unexpected {e}"),
        }
    }
    assert_eq!(counts.get("cancel"), Some(&6), "{counts:?}");
    assert_eq!(counts.get("cancel refused"), Some(&6), "{counts:?}");
    assert_eq!(counts.get("reserve"), Some(&6), "{counts:?}");
    assert_eq!(counts.get("deposit"), Some(&2), "one credit per reference: {counts:?}");
    assert_eq!(counts.get("deposit refused"), Some(&4), "{counts:?}");
    // 1 ETH + 2 wei deposited; six 0.01 reservations remain pending.
    assert_eq!(
        balance(&store, c).await,
        (10u128.pow(18) + 2 - 6 * 10u128.pow(16), 6 * 10u128.pow(16))
    );
    assert_intact(&store).await;
}

/// Concurrent commands are committed in groups; when one of them fails (here, an injected
/// fault between its statements), it alone fails and the others commit as if run one by one.
async fn a_failure_inside_a_group_commit_fails_only_its_command(store: Arc<SqlStore>) {
    let c = customer(&store, "u").await;
    deposit(&store, c, 10u128.pow(18)).await;
    store.faults().arm("withdrawal.after_insert").unwrap();
    let tasks: Vec<_> = (0..16)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .request_withdrawal(
                        &ctx(env().now()),
                        Some(&idem(&format!("g{i}"), "h")),
                        plan(c, "0.01"),
                    )
                    .await
            })
        })
        .collect();
    let mut faults = 0;
    let mut ok = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => ok += 1,
            Err(StoreError::InjectedFault("withdrawal.after_insert")) => faults += 1,
            Err(e) => panic!("unexpected {e}"),
        }
    }
    assert_eq!((ok, faults), (15, 1));
    assert_eq!(
        balance(&store, c).await,
        (10u128.pow(18) - 15 * 10u128.pow(16), 15 * 10u128.pow(16))
    );
    assert_eq!(
        store
            .list_withdrawals(&WithdrawalFilter { limit: 100, ..Default::default() })
            .await
            .unwrap()
            .len(),
        15
    );
    assert_intact(&store).await;
}

async fn the_governance_log_keeps_order_one_proposal_and_one_genesis(store: Arc<SqlStore>) {
    use strongroom_governance::log::{Change, FreezeScope, Genesis, MemberSpec};
    let genesis = |quorum| Genesis {
        members: vec![MemberSpec {
            id: "ada".into(),
            public_key: "11".repeat(32),
            roles: vec![strongroom_governance::Role::Admin],
            passkey: None,
        }],
        quorum,
        whitelist_delay_ms: 1000,
        created_at: Timestamp::from_unix_ms(1),
        assets: vec![],
    };
    let c = ctx(env().now());
    assert_eq!(store.governance().await.unwrap(), GovernanceRecord::default());
    let g = GovernanceWrite::Genesis { pin: "aa".into(), genesis: genesis(1) };
    store.write_governance(&c, g.clone()).await.unwrap();
    // The same genesis again is a no-op; another is refused.
    store.write_governance(&c, g).await.unwrap();
    let other = GovernanceWrite::Genesis { pin: "bb".into(), genesis: genesis(2) };
    assert!(matches!(store.write_governance(&c, other).await, Err(StoreError::Refused(_))));

    let entry = |seq: u64, signed: usize| strongroom_governance::log::Entry {
        seq,
        prev: "00".into(),
        at: Timestamp::from_unix_ms(2),
        change: Change::Freeze { scope: FreezeScope::Global, reason: None },
        signoffs: (0..signed)
            .map(|i| strongroom_governance::log::Signoff {
                member: format!("m{i}"),
                signature: "ff".into(),
                passkey: None,
            })
            .collect(),
    };
    // Only the next number, only one open proposal.
    let refused = store.write_governance(&c, GovernanceWrite::Propose(entry(2, 0))).await;
    assert!(matches!(refused, Err(StoreError::Refused(_))), "{refused:?}");
    store.write_governance(&c, GovernanceWrite::Propose(entry(1, 0))).await.unwrap();
    let second = store.write_governance(&c, GovernanceWrite::Propose(entry(1, 0))).await;
    assert!(matches!(second, Err(StoreError::Refused(_))));
    // An update must name the proposal as it is now (no lost signatures).
    let update = GovernanceWrite::Update { expected: entry(1, 0), entry: entry(1, 1) };
    store.write_governance(&c, update.clone()).await.unwrap();
    assert!(matches!(store.write_governance(&c, update).await, Err(StoreError::Refused(_))));
    let r = store
        .write_governance(&c, GovernanceWrite::Commit { expected: entry(1, 1), entry: entry(1, 2) })
        .await
        .unwrap();
    assert_eq!(r.entries, vec![entry(1, 2)]);
    assert_eq!(r.proposal, None);
    // A withdrawn proposal is gone; withdrawing nothing is "not found".
    store.write_governance(&c, GovernanceWrite::Propose(entry(2, 0))).await.unwrap();
    store.write_governance(&c, GovernanceWrite::Withdraw { seq: 2 }).await.unwrap();
    assert!(matches!(
        store.write_governance(&c, GovernanceWrite::Withdraw { seq: 2 }).await,
        Err(StoreError::NotFound { .. })
    ));
    let r = store.governance().await.unwrap();
    assert_eq!((r.genesis.map(|g| g.0), r.entries.len(), r.proposal), (Some("aa".into()), 1, None));
    assert_intact(&store).await;
    // A committed freeze deleted straight from the database, and its number reused by the
    // next entry: every row matches its last audit record, but the log shows entry 1
    // created over a state it never left.
    store.pool().execute("DELETE FROM governance_entries WHERE seq = 1").await.unwrap();
    let mut unfreeze = entry(1, 2);
    unfreeze.change = Change::Unfreeze { scope: FreezeScope::Global };
    let mut open = unfreeze.clone();
    open.signoffs.clear();
    store.write_governance(&c, GovernanceWrite::Propose(open.clone())).await.unwrap();
    store
        .write_governance(&c, GovernanceWrite::Commit { expected: open, entry: unfreeze })
        .await
        .unwrap();
    let report = verify_audit(&*store).await.unwrap();
    assert!(
        matches!(report.mismatches.as_slice(), [verify::StateMismatch { entity, kind: MismatchKind::Rewritten { .. } }]
            if entity == "governance/entry/1"),
        "{report:?}"
    );
    // An entry edited straight in the database is caught by the audit check.
    store
        .pool()
        .execute("UPDATE governance_entries SET entry = REPLACE(entry, 'global', 'wallet')")
        .await
        .unwrap();
    let report = verify_audit(&*store).await.unwrap();
    assert!(!report.is_intact(), "{report:?}");
}

/// Read a list `size` rows at a time, each page from the key of the last row of the one before.
async fn walk<T, F, Fut>(size: u32, key: impl Fn(&T) -> Keyset, read: F) -> Vec<T>
where
    F: Fn(Option<Keyset>, u32) -> Fut,
    Fut: std::future::Future<Output = Vec<T>>,
{
    let mut out: Vec<T> = Vec::new();
    loop {
        let page = read(out.last().map(&key), size).await;
        assert!(page.len() <= size as usize);
        let done = page.len() < size as usize;
        out.extend(page);
        if done {
            return out;
        }
    }
}

async fn lists_come_a_page_at_a_time_from_a_cursor(store: Arc<SqlStore>) {
    let (c, other) = (customer(&store, "u").await, customer(&store, "v").await);
    deposit(&store, c, 10u128.pow(18)).await;
    deposit(&store, other, 10u128.pow(18)).await;
    // Seven withdrawals over four milliseconds (ties are broken by id), and another
    // customer's in between.
    let base = env().now().unix_ms();
    let mut made = Vec::new();
    for i in 0..7 {
        let at = Timestamp::from_unix_ms(base + i / 2);
        made.push(store.request_withdrawal(&ctx(at), None, plan(c, "0.01")).await.unwrap());
        let r = review_of(&made[made.len() - 1], c);
        store.assess_withdrawal(&ctx(at), r).await.unwrap();
        let e = RiskEvent {
            id: Uuid::new_v4(),
            customer_id: if i == 3 { other } else { c },
            kind: "login".into(),
            at,
            data: json!({"n": i}),
        };
        store.add_risk_event(&ctx(at), e).await.unwrap();
    }
    let theirs = store
        .request_withdrawal(&ctx(Timestamp::from_unix_ms(base + 1)), None, plan(other, "0.01"))
        .await
        .unwrap();
    let wkey =
        |w: &Withdrawal| Keyset { at_ms: w.created_at.unix_ms(), id: w.id.to_string(), n: 0 };
    let filter = |after: Option<Keyset>, limit: u32| WithdrawalFilter {
        customer_id: Some(c),
        state: None,
        after,
        limit,
    };
    let all = store.list_withdrawals(&filter(None, 1000)).await.unwrap();
    let mut want = made.clone();
    want.sort_by(|a, b| {
        let newer = b.created_at.unix_ms().cmp(&a.created_at.unix_ms());
        newer.then(a.id.to_string().cmp(&b.id.to_string()))
    });
    assert_eq!(all, want, "newest first, then by id");
    for size in [1, 2, 3, 7] {
        let paged = walk(size, wkey, |after, limit| {
            let store = store.clone();
            let f = filter(after, limit);
            async move { store.list_withdrawals(&f).await.unwrap() }
        })
        .await;
        assert_eq!(paged, all, "pages of {size}");
    }
    // Without a customer: theirs among them, in its place.
    let everyone = walk(2, wkey, |after, limit| {
        let store = store.clone();
        let f = WithdrawalFilter { after, limit, ..Default::default() };
        async move { store.list_withdrawals(&f).await.unwrap() }
    })
    .await;
    assert_eq!(everyone.len(), 8);
    assert!(everyone.contains(&theirs));
    // The ledger: the deposit and two postings per reservation, by time, entry and number.
    let lkey = |l: &LedgerLine| Keyset {
        at_ms: l.created_at.unix_ms(),
        id: l.entry_id.to_string(),
        n: l.n,
    };
    let lines = store.ledger_lines(c, None, 1000).await.unwrap();
    assert_eq!(lines.len(), 1 + 2 * 7, "{lines:?}");
    for size in [1, 2, 4] {
        let paged = walk(size, lkey, |after, limit| {
            let store = store.clone();
            async move { store.ledger_lines(c, after.as_ref(), limit).await.unwrap() }
        })
        .await;
        assert_eq!(paged, lines, "ledger pages of {size}");
    }
    // Reviews, oldest first; open ones only when asked.
    let rkey = |r: &RiskReview| Keyset {
        at_ms: r.created_at.unix_ms(),
        id: r.withdrawal_id.to_string(),
        n: 0,
    };
    let reviews = store.list_risk_reviews(Some(RiskState::Open), None, 1000).await.unwrap();
    assert_eq!(reviews.len(), 7);
    assert!(reviews.windows(2).all(|w| rkey(&w[0]).at_ms <= rkey(&w[1]).at_ms));
    let paged = walk(3, rkey, |after, limit| {
        let store = store.clone();
        async move {
            store.list_risk_reviews(Some(RiskState::Open), after.as_ref(), limit).await.unwrap()
        }
    })
    .await;
    assert_eq!(paged, reviews);
    assert!(store.list_risk_reviews(Some(RiskState::Cleared), None, 10).await.unwrap().is_empty());
    // One customer's risk events, newest first; the other customer's stay out.
    let ekey = |e: &RiskEvent| Keyset { at_ms: e.at.unix_ms(), id: e.id.to_string(), n: 0 };
    let events = store.customer_risk_events(c, None, 1000).await.unwrap();
    assert_eq!(events.len(), 6);
    assert!(events.windows(2).all(|w| w[0].at.unix_ms() >= w[1].at.unix_ms()));
    assert!(events.iter().all(|e| e.customer_id == c));
    let paged = walk(4, ekey, |after, limit| {
        let store = store.clone();
        async move { store.customer_risk_events(c, after.as_ref(), limit).await.unwrap() }
    })
    .await;
    assert_eq!(paged, events);
    assert_eq!(store.customer_risk_events(other, None, 10).await.unwrap().len(), 1);
    assert_intact(&store).await;
}

fn review_of(w: &Withdrawal, customer_id: Uuid) -> RiskReview {
    RiskReview {
        withdrawal_id: w.id,
        customer_id,
        decision: "review".into(),
        state: RiskState::Open,
        score: 60,
        assessment: json!({"reasons": []}),
        assignee: None,
        notes: vec![],
        decided_by: None,
        created_at: Timestamp::from_unix_ms(0),
        updated_at: Timestamp::from_unix_ms(0),
    }
}

async fn risk_reviews_are_assessed_once_and_decided_once(store: Arc<SqlStore>) {
    let c = customer(&store, "u").await;
    deposit(&store, c, 10u128.pow(18)).await;
    let w = store.request_withdrawal(&ctx(env().now()), None, plan(c, "0.5")).await.unwrap();
    let review = |state: RiskState, score: u32| RiskReview {
        withdrawal_id: w.id,
        customer_id: c,
        decision: "review".into(),
        state,
        score,
        // A float whose printed form need not survive a parse and print.
        assessment: serde_json::json!({"reasons": [{"source": "rule:x", "detail": "d", "points": 60}],
            "features": [{"name": "hours", "value": 0.00021194444444444445_f64}, {"name": "x", "value": 0.1 + 0.2}]}),
        assignee: None,
        notes: vec![],
        decided_by: None,
        created_at: Timestamp::from_unix_ms(0),
        updated_at: Timestamp::from_unix_ms(0),
    };
    assert_eq!(store.risk_review(w.id).await.unwrap(), None);
    let first =
        store.assess_withdrawal(&ctx(env().now()), review(RiskState::Open, 60)).await.unwrap();
    // A second assessment changes nothing.
    let again =
        store.assess_withdrawal(&ctx(env().now()), review(RiskState::Cleared, 1)).await.unwrap();
    assert_eq!((again.state, again.score), (RiskState::Open, 60));
    assert_eq!(
        store.list_risk_reviews(Some(RiskState::Open), None, 10).await.unwrap(),
        vec![first]
    );
    let r = store
        .review_withdrawal(&ctx(env().now()), w.id, ReviewAction::Assign("ana".into()))
        .await
        .unwrap();
    assert_eq!(r.assignee.as_deref(), Some("ana"));
    let r = store
        .review_withdrawal(&ctx(env().now()), w.id, ReviewAction::Release(Some("ok".into())))
        .await
        .unwrap();
    assert_eq!(
        (r.state, r.decided_by.as_deref(), r.notes.len()),
        (RiskState::Released, Some("test"), 1)
    );
    let twice = store.review_withdrawal(&ctx(env().now()), w.id, ReviewAction::Reject(None)).await;
    assert!(matches!(twice, Err(StoreError::InvalidTransition { .. })), "{twice:?}");
    // Followed by when it changed: the review, as released; nothing changed after that.
    let since = store.risk_reviews_since(0, 10).await.unwrap();
    assert_eq!(
        since.iter().map(|x| (x.withdrawal_id, x.state)).collect::<Vec<_>>(),
        vec![(w.id, RiskState::Released)]
    );
    assert!(store.risk_reviews_since(env().now().unix_ms(), 10).await.unwrap().is_empty());
    let missing = store
        .review_withdrawal(&ctx(env().now()), Uuid::new_v4(), ReviewAction::Note("x".into()))
        .await;
    assert!(matches!(missing, Err(StoreError::NotFound { .. })));
    let e = RiskEvent {
        id: Uuid::new_v4(),
        customer_id: c,
        kind: "login".into(),
        at: Timestamp::from_unix_ms(5),
        data: serde_json::json!({"device_id": "d1"}),
    };
    store.add_risk_event(&ctx(env().now()), e.clone()).await.unwrap();
    assert_eq!(store.risk_events(0, 10).await.unwrap(), vec![e]);
    assert!(store.risk_events(5, 10).await.unwrap().is_empty());
    assert_intact(&store).await;
    // A review released by hand in the database is caught by the audit check.
    store.pool().execute("UPDATE risk_reviews SET state = 'cleared'").await.unwrap();
    assert!(!verify_audit(&*store).await.unwrap().is_intact());
}

async fn audit_log_is_append_only(store: Arc<SqlStore>) {
    customer(&store, "u").await;
    assert!(store.pool().execute("UPDATE audit_log SET actor = 'x'").await.is_err());
    assert!(store.pool().execute("DELETE FROM audit_log").await.is_err());
    assert_eq!(audit_len(&store).await, 1);
}

async fn tokens_are_created_and_revoked(store: Arc<SqlStore>) {
    let t = store
        .create_token(
            &ctx(env().now()),
            NewApiToken {
                id: "00aa".into(),
                name: "backend".into(),
                role: Role::Service,
                token_hash: "ab".repeat(32),
                restrictions: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(store.get_token("00aa").await.unwrap(), t);
    let r = store.revoke_token(&ctx(Timestamp::from_unix_ms(5)), "00aa").await.unwrap();
    assert_eq!(r.revoked_at, Some(Timestamp::from_unix_ms(5)));
    assert!(matches!(store.get_token("nope").await, Err(StoreError::NotFound { .. })));
    assert_intact(&store).await;
}

async fn auth_records_are_compare_and_swap_and_all_or_nothing(store: Arc<SqlStore>) {
    let c = ctx(env().now());
    let acct = AuthWrite::create("account", "a1", "a1", json!({"n": 1})).with_lookup("idx-ann");
    let made =
        store.write_auth(&c, "account.registered", "account/a1", vec![acct.clone()]).await.unwrap();
    assert_eq!(made.len(), 1);
    assert_eq!(made[0].version, 1);
    assert_eq!(store.auth_record_by_lookup("account", "idx-ann").await.unwrap().unwrap(), made[0]);
    // Creating it again, or another record with the same lookup key, is refused.
    assert!(matches!(
        store.write_auth(&c, "x", "x", vec![acct]).await,
        Err(StoreError::Stale { .. })
    ));
    let twin = AuthWrite::create("account", "a2", "a2", json!({})).with_lookup("idx-ann");
    assert!(matches!(
        store.write_auth(&c, "x", "x", vec![twin]).await,
        Err(StoreError::Constraint { unique: true, .. })
    ));
    // An update from a stale read fails, and takes the whole batch with it.
    let a = store.auth_record("account", "a1").await.unwrap().unwrap();
    let s1 = AuthWrite::create("session", "s1", "a1", json!({"t": 1}));
    store
        .write_auth(&c, "x", "x", vec![AuthWrite::update(&a, json!({"n": 2})), s1.clone()])
        .await
        .unwrap();
    let before = audit_len(&store).await;
    let s2 = AuthWrite::create("session", "s2", "a1", json!({"t": 2}));
    assert!(matches!(
        store.write_auth(&c, "x", "x", vec![s2, AuthWrite::update(&a, json!({"n": 3}))]).await,
        Err(StoreError::Stale { .. })
    ));
    assert!(store.auth_record("session", "s2").await.unwrap().is_none(), "all or nothing");
    assert_eq!(audit_len(&store).await, before);
    let a = store.auth_record("account", "a1").await.unwrap().unwrap();
    assert_eq!((a.version, a.body.clone()), (2, json!({"n": 2})));
    assert_eq!(store.auth_records("session", "a1").await.unwrap().len(), 1);
    let s = store.auth_record("session", "s1").await.unwrap().unwrap();
    store
        .write_auth(&c, "session.revoked", "account/a1", vec![AuthWrite::delete(&s)])
        .await
        .unwrap();
    assert!(store.auth_records("session", "a1").await.unwrap().is_empty());
    assert_intact(&store).await;
}

/// `audit verify` on a database a server is writing to: rows committed between reading the
/// log and reading the rows must not look edited.
async fn audit_verify_while_writing_reports_no_false_tampering(store: Arc<SqlStore>) {
    let writer = {
        let store = store.clone();
        tokio::spawn(async move {
            for i in 0..150 {
                customer(&store, &format!("busy-{i}")).await;
            }
        })
    };
    while !writer.is_finished() {
        let r = verify_audit(store.as_ref()).await.unwrap();
        assert!(r.chain_break.is_none() && r.mismatch_count == 0, "{r:?}");
    }
    writer.await.unwrap();
    assert_intact(&store).await;
}

#[test]
fn the_postgres_url_gets_a_fresh_database_name() {
    assert_eq!(
        with_database("postgres://u@h:5432/postgres?sslmode=disable", "x"),
        "postgres://u@h:5432/x?sslmode=disable"
    );
    assert_eq!(with_database("postgres://u@h:5432", "x"), "postgres://u@h:5432/x");
}

#[test]
fn journal_entries_from_core_balance() {
    assert!(JournalEntry::deposit(Uuid::nil(), Uuid::nil(), &eth(), wei(1)).is_ok());
}

/// A signed request's nonce is accepted once for its token, across every instance that shares
/// the database, until it expires; another token's identical nonce is its own.
async fn request_nonces_are_used_once_until_they_expire(store: Arc<SqlStore>) {
    let (now, keep) = (1_767_225_600_000i64, 600_000i64);
    assert!(store.use_nonce("tok-a", "n-0001", now, now + keep).await.unwrap());
    assert!(!store.use_nonce("tok-a", "n-0001", now + 1, now + 1 + keep).await.unwrap());
    assert!(store.use_nonce("tok-b", "n-0001", now + 2, now + 2 + keep).await.unwrap());
    assert!(store.use_nonce("tok-a", "n-0002", now + 3, now + 3 + keep).await.unwrap());
    // Concurrent uses of one nonce: exactly one wins.
    let mut wins = 0;
    let tries: Vec<_> = (0..8)
        .map(|_| {
            let s = store.clone();
            tokio::spawn(async move { s.use_nonce("tok-c", "n-race", now, now + keep).await })
        })
        .collect();
    for t in tries {
        wins += usize::from(t.await.unwrap().unwrap());
    }
    assert_eq!(wins, 1);
    // Past its expiry the row is gone and the nonce is new again.
    assert!(store.use_nonce("tok-a", "n-0001", now + keep + 10, now + 2 * keep).await.unwrap());
}

/// A lease has one holder at a time: others are refused while it is live, take it once it
/// expires (its token rises), and the holder renews it; concurrent takers get one winner.
async fn leases_have_one_holder_until_they_expire(store: Arc<SqlStore>) {
    let (now, ttl) = (1_767_225_600_000i64, 10_000i64);
    let a = store.acquire_lease("leader/watcher/eth", "a", now, ttl).await.unwrap().unwrap();
    assert_eq!((a.holder.as_str(), a.token, a.expires_at_ms), ("a", 1, now + ttl));
    assert_eq!(store.acquire_lease("leader/watcher/eth", "b", now + 1, ttl).await.unwrap(), None);
    // The holder renews (same token, later expiry).
    let renewed =
        store.acquire_lease("leader/watcher/eth", "a", now + 5, ttl).await.unwrap().unwrap();
    assert_eq!((renewed.token, renewed.expires_at_ms), (1, now + 5 + ttl));
    assert_eq!(store.acquire_lease("leader/watcher/eth", "b", now + ttl, ttl).await.unwrap(), None);
    // Expired: b takes it over with a higher token, and a's renewal is refused.
    let b =
        store.acquire_lease("leader/watcher/eth", "b", now + 5 + ttl, ttl).await.unwrap().unwrap();
    assert_eq!((b.holder.as_str(), b.token), ("b", 2));
    assert_eq!(
        store.acquire_lease("leader/watcher/eth", "a", now + 6 + ttl, ttl).await.unwrap(),
        None
    );
    // Another lease is independent; releasing by a non-holder does nothing.
    assert!(store.acquire_lease("withdrawal/1", "a", now, ttl).await.unwrap().is_some());
    store.release_lease("withdrawal/1", "b").await.unwrap();
    assert_eq!(store.acquire_lease("withdrawal/1", "b", now + 1, ttl).await.unwrap(), None);
    store.release_lease("withdrawal/1", "a").await.unwrap();
    assert!(store.acquire_lease("withdrawal/1", "b", now + 2, ttl).await.unwrap().is_some());
    let listed = store.leases("leader/").await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].holder, "b");
    // Eight instances race for one lease: exactly one holds it.
    let tries: Vec<_> = (0..8)
        .map(|i| {
            let s = store.clone();
            tokio::spawn(
                async move { s.acquire_lease("leader/race", &format!("i{i}"), now, ttl).await },
            )
        })
        .collect();
    let mut holders = Vec::new();
    for t in tries {
        if let Some(l) = t.await.unwrap().unwrap() {
            holders.push(l.holder);
        }
    }
    assert_eq!(holders.len(), 1, "{holders:?}");
}

/// A shared counter counts each hit once however many callers race, restarts with a new
/// window, and refuses windows it would not keep.
async fn shared_counters_count_every_hit_once_per_window(store: Arc<SqlStore>) {
    let (now, window) = (1_767_225_600_000i64, 60_000i64);
    assert_eq!(store.hits("signin_ip/192.0.2.1", now, window).await.unwrap(), 0);
    assert_eq!(store.count_hit("signin_ip/192.0.2.1", now, window).await.unwrap(), 1);
    assert_eq!(store.count_hit("signin_ip/192.0.2.1", now + 10, window).await.unwrap(), 2);
    assert_eq!(store.hits("signin_ip/192.0.2.1", now + 20, window).await.unwrap(), 2);
    assert_eq!(store.hits("signin_ip/192.0.2.2", now + 20, window).await.unwrap(), 0);
    let tries: Vec<_> = (0..16)
        .map(|_| {
            let s = store.clone();
            tokio::spawn(async move { s.count_hit("signin_ip/192.0.2.1", now + 30, window).await })
        })
        .collect();
    let mut seen = Vec::new();
    for t in tries {
        seen.push(t.await.unwrap().unwrap());
    }
    seen.sort_unstable();
    assert_eq!(seen, (3..=18).collect::<Vec<u64>>(), "every racing hit counted once");
    // The window is over: reading says 0, the next hit starts a new window.
    assert_eq!(store.hits("signin_ip/192.0.2.1", now + window, window).await.unwrap(), 0);
    assert_eq!(store.count_hit("signin_ip/192.0.2.1", now + window, window).await.unwrap(), 1);
    assert!(matches!(
        store.count_hit("x", now, MAX_RATE_WINDOW_MS + 1).await,
        Err(StoreError::Refused(_))
    ));
}

/// An outbox message is added once per id, claimed by one instance at a time, claimable
/// again when its claimer dies, retried after a failure, and never claimed once delivered.
async fn outbox_messages_are_claimed_once_and_retried_until_delivered(store: Arc<SqlStore>) {
    let now = 1_767_225_600_000i64;
    let msg = |id: &str| NewOutboxMessage {
        id: id.into(),
        channel: "webhook".into(),
        kind: "withdrawal_paused".into(),
        body: serde_json::json!({ "withdrawal_id": id }),
        created_at_ms: now,
    };
    assert!(store.enqueue(msg("m1")).await.unwrap());
    assert!(!store.enqueue(msg("m1")).await.unwrap(), "the same id is not added twice");
    assert!(store.enqueue(msg("m2")).await.unwrap());
    assert_eq!(store.outbox_backlog(now + 5).await.unwrap(), (2, 5));
    // Two instances claim at once: each message goes to one of them.
    let (a, b) = tokio::join!(
        store.claim_outbox("a", now, 30_000, 10),
        store.claim_outbox("b", now, 30_000, 10)
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(a.len() + b.len(), 2, "{a:?} {b:?}");
    let claimed: Vec<(&str, OutboxMessage)> =
        a.into_iter().map(|m| ("a", m)).chain(b.into_iter().map(|m| ("b", m))).collect();
    assert!(claimed.iter().all(|(_, m)| m.body == serde_json::json!({ "withdrawal_id": m.id })));
    assert!(store.claim_outbox("c", now + 1, 30_000, 10).await.unwrap().is_empty());
    // m1 is delivered; m2 fails and is due again later.
    for (holder, m) in &claimed {
        if m.id == "m1" {
            store.outbox_delivered("m1", holder, now + 2).await.unwrap();
        } else {
            store.outbox_failed(&m.id, holder, "connection refused", now + 1_000).await.unwrap();
        }
    }
    let m2 = store.outbox_message("m2").await.unwrap().unwrap();
    assert_eq!((m2.attempts, m2.next_attempt_ms), (1, now + 1_000));
    assert_eq!(m2.last_error.as_deref(), Some("connection refused"));
    assert!(store.claim_outbox("c", now + 999, 30_000, 10).await.unwrap().is_empty());
    let again = store.claim_outbox("c", now + 1_000, 30_000, 10).await.unwrap();
    assert_eq!(again.iter().map(|m| m.id.as_str()).collect::<Vec<_>>(), ["m2"]);
    // c dies holding it: after its claim ends, d gets it, and c's late report is ignored.
    let taken = store.claim_outbox("d", now + 31_000, 30_000, 10).await.unwrap();
    assert_eq!(taken.len(), 1);
    store.outbox_delivered("m2", "c", now + 31_001).await.unwrap();
    assert_eq!(store.outbox_message("m2").await.unwrap().unwrap().delivered_at_ms, None);
    store.outbox_delivered("m2", "d", now + 31_002).await.unwrap();
    let m1 = store.outbox_message("m1").await.unwrap().unwrap();
    assert_eq!(m1.delivered_at_ms, Some(now + 2));
    assert_eq!(store.outbox_backlog(now + 40_000).await.unwrap().0, 0);
    assert!(store.claim_outbox("e", now + 100_000, 30_000, 10).await.unwrap().is_empty());
}

/// A message whose last allowed attempt failed is a dead letter: never claimed, listed a page
/// at a time by channel, out of the backlog; sent again, it is due at once with its attempts
/// counted afresh; a delivered or live message cannot be "sent again".
async fn dead_letters_wait_until_sent_again(store: Arc<SqlStore>) {
    let now = 1_767_225_600_000i64;
    let msg = |id: &str, channel: &str| NewOutboxMessage {
        id: id.into(),
        channel: channel.into(),
        kind: "withdrawal.confirmed".into(),
        body: serde_json::json!({ "id": id }),
        created_at_ms: now,
    };
    for id in ["evt_1", "evt_2", "evt_3"] {
        store.enqueue(msg(id, "events")).await.unwrap();
    }
    store.enqueue(msg("alert", "webhook")).await.unwrap();
    let claimed = store.claim_outbox("a", now, 30_000, 10).await.unwrap();
    assert_eq!(claimed.len(), 4);
    store.outbox_dead("evt_1", "a", "HTTP 500", now + 1).await.unwrap();
    store.outbox_dead("evt_3", "a", "HTTP 410", now + 2).await.unwrap();
    // Only the claimer may declare it dead.
    store.outbox_dead("evt_2", "someone-else", "HTTP 500", now + 2).await.unwrap();
    store.outbox_failed("evt_2", "a", "HTTP 503", now + 10).await.unwrap();
    store.outbox_delivered("alert", "a", now + 3).await.unwrap();
    let dead = store.outbox_message("evt_1").await.unwrap().unwrap();
    assert_eq!((dead.dead_at_ms, dead.attempts), (Some(now + 1), 1));
    assert_eq!(dead.last_error.as_deref(), Some("HTTP 500"));
    assert_eq!(store.outbox_message("evt_2").await.unwrap().unwrap().dead_at_ms, None);
    // Dead letters are never claimed; the live one is, when due.
    let later = store.claim_outbox("b", now + 1_000_000, 30_000, 10).await.unwrap();
    assert_eq!(later.iter().map(|m| m.id.as_str()).collect::<Vec<_>>(), ["evt_2"]);
    assert_eq!(store.outbox_backlog(now + 1_000_000).await.unwrap().0, 1);
    assert_eq!(store.dead_letter_count().await.unwrap(), 2);
    // Listed by channel, a page at a time.
    let page = store.dead_letters("events", None, 1).await.unwrap();
    assert_eq!(page.iter().map(|m| m.id.as_str()).collect::<Vec<_>>(), ["evt_1"]);
    let next = store.dead_letters("events", Some("evt_1"), 1).await.unwrap();
    assert_eq!(next.iter().map(|m| m.id.as_str()).collect::<Vec<_>>(), ["evt_3"]);
    assert!(store.dead_letters("events", Some("evt_3"), 10).await.unwrap().is_empty());
    assert!(store.dead_letters("webhook", None, 10).await.unwrap().is_empty());
    // Sent again: due now, attempts from zero; twice or for a live message: nothing.
    assert!(store.redeliver("evt_1", now + 2_000_000).await.unwrap());
    assert!(!store.redeliver("evt_1", now + 2_000_000).await.unwrap());
    assert!(!store.redeliver("evt_2", now + 2_000_000).await.unwrap());
    assert!(!store.redeliver("alert", now + 2_000_000).await.unwrap());
    let back = store.claim_outbox("c", now + 2_000_000, 30_000, 10).await.unwrap();
    assert!(back.iter().any(|m| m.id == "evt_1" && m.attempts == 0 && m.dead_at_ms.is_none()));
    assert_eq!(store.dead_letter_count().await.unwrap(), 1);
}

/// The events feed reads audit records by action family after a cursor: only matching
/// actions, in order; a page that fills ends at its last record, one that does not moves the
/// cursor past every record it looked at (so a long run of other actions is crossed a window
/// at a time, never re-read).
async fn the_events_feed_reads_the_audit_log_by_family_after_a_cursor(store: Arc<SqlStore>) {
    let a = customer(&store, "events-a").await;
    deposit(&store, a, 1_000).await;
    customer(&store, "events-b").await;
    deposit(&store, a, 2_000).await;
    let all = store.audit_page(0, 10_000).await.unwrap();
    let head = all.last().unwrap().record.seq;
    let want: Vec<u64> = all
        .iter()
        .filter(|r| r.record.action.starts_with("deposit."))
        .map(|r| r.record.seq)
        .collect();
    assert_eq!(want.len(), 2, "{all:?}");
    let (page, cursor) = store.audit_matching(0, &["deposit."], 10, 10_000).await.unwrap();
    assert_eq!(page.iter().map(|r| r.record.seq).collect::<Vec<_>>(), want);
    assert_eq!(cursor, head, "the whole log was looked at");
    // A full page ends at its last record.
    let (first, cursor) = store.audit_matching(0, &["deposit."], 1, 10_000).await.unwrap();
    assert_eq!((first.len(), cursor), (1, want[0]));
    let (second, cursor) = store.audit_matching(cursor, &["deposit."], 1, 10_000).await.unwrap();
    assert_eq!(second.first().map(|r| r.record.seq), Some(want[1]));
    let (rest, end) = store.audit_matching(cursor, &["deposit."], 1, 10_000).await.unwrap();
    assert!(rest.is_empty());
    assert_eq!(end, head);
    // A window of one record with nothing matching still moves the cursor by one.
    let customer_created = all.iter().find(|r| r.record.action == "customer.created").unwrap();
    let before = customer_created.record.seq - 1;
    let (none, moved) = store.audit_matching(before, &["deposit."], 10, 1).await.unwrap();
    assert!(none.is_empty());
    assert_eq!(moved, before + 1);
    // Prefixes are compared as text: `_` matches only itself.
    let (odd, _) = store.audit_matching(0, &["deposit_"], 10, 10_000).await.unwrap();
    assert!(odd.is_empty(), "{odd:?}");
    // Past the head: nothing, cursor unchanged.
    assert_eq!(store.audit_matching(head, &["deposit."], 10, 10).await.unwrap(), (vec![], head));
}
