#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)] // Test code.
#![allow(clippy::disallowed_methods)] // Test code: random ids.
//! Issue "Incident response": incident steps in the governance log reach the staff and the
//! customers they touch, through the durable outbox, once per entry and customer, across a
//! repeated pass.

use std::sync::Arc;

use strongroom_core::{Env, SystemEnv};
use strongroom_governance::log::{replay, Change, Entry, Genesis};
use strongroom_governance::policy::FreezeScope;
use strongroom_governance::Role;
use strongroom_runtime::incidents::notice_once;
use strongroom_runtime::risk::{Alerts, Webhook};
use strongroom_store::*;
use strongroom_units::{Amount, AssetRegistry, AssetSymbol};
use uuid::Uuid;

mod support;
use support::{ctx, genesis_of, key};

fn genesis(now: i64) -> Genesis {
    genesis_of(
        now,
        &[("ada", 1, Role::Admin), ("bob", 2, Role::Admin), ("sec", 5, Role::SecurityOfficer)],
        vec![],
    )
}

/// Commit `change`, signed by `by`, to the stored log.
async fn commit(store: &SqlStore, g: &Genesis, change: Change, by: &[(&str, u8)]) -> Entry {
    let env = SystemEnv::new();
    let pin = hex::encode(g.hash().unwrap());
    let entries = store.governance().await.unwrap().entries;
    let state = replay(g, &pin, &entries, env.now()).unwrap();
    let mut e = state.propose(change, env.now());
    for (who, n) in by {
        e.sign(who, &key(*n)).unwrap();
    }
    store.write_governance(&ctx(&env), GovernanceWrite::Propose(e.clone())).await.unwrap();
    let op = GovernanceWrite::Commit { expected: e.clone(), entry: e.clone() };
    store.write_governance(&ctx(&env), op).await.unwrap();
    e
}

async fn holder(store: &SqlStore, asset: &str, amount: u128) -> Uuid {
    let env = SystemEnv::new();
    let c = Uuid::new_v4();
    let new = NewCustomer { id: c, external_id: format!("c-{c}") };
    store.create_customer(&ctx(&env), None, new).await.unwrap();
    if amount > 0 {
        let deposit = NewDeposit {
            id: Uuid::new_v4(),
            entry_id: Uuid::new_v4(),
            customer_id: c,
            asset: AssetSymbol::parse(asset).unwrap(),
            amount: Amount::from_base_units(amount).unwrap(),
            reference: format!("0x{}", Uuid::new_v4().simple()),
        };
        store.credit_deposit(&ctx(&env), None, deposit).await.unwrap();
    }
    c
}

async fn has(store: &SqlStore, id: &str) -> bool {
    store.outbox_message(id).await.unwrap().is_some()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn freezes_and_key_migrations_tell_the_customers_and_every_incident_step_the_staff() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("strongroom.db").display());
    let store = Arc::new(SqlStore::connect(&url, Default::default()).await.unwrap());
    store.migrate().await.unwrap();
    let env: Arc<dyn Env> = Arc::new(SystemEnv::new());
    let now = env.now().unix_ms();
    let g = genesis(now);
    let pin = hex::encode(g.hash().unwrap());
    store
        .write_governance(&ctx(env.as_ref()), GovernanceWrite::Genesis { pin, genesis: g.clone() })
        .await
        .unwrap();

    let eth_a = holder(&store, "ETH", 5).await;
    let eth_b = holder(&store, "ETH", 7).await;
    let usdt = holder(&store, "USDT", 9).await;
    let nothing = holder(&store, "ETH", 0).await;
    let secret = dir.path().join("webhook.secret");
    std::fs::write(&secret, "s3cret").unwrap();
    let webhook =
        Webhook { url: "https://127.0.0.1:1/hook".into(), secret_file: secret, ca_file: None };
    let smtp = strongroom_runtime::mail::Smtp::new(strongroom_runtime::mail::SmtpOptions::local(
        "127.0.0.1:1",
        "security@example.com",
    ))
    .unwrap();
    let dyn_store: Arc<dyn Store> = store.clone();
    let kek = Arc::new(strongroom_crypto::seal::SoftwareKek::generate(env.as_ref()));
    let alerts = Alerts::new(
        dyn_store.clone(),
        Some(webhook),
        Some((smtp, vec!["team@example.com".into()])),
        env.clone(),
    )
    .unwrap()
    .with_customers(kek);
    let registry = AssetRegistry::dev();
    let hot = vec![("hot-eth-1".to_owned(), "eip155:31337".to_owned())];
    let pass = || notice_once(&dyn_store, &alerts, &registry, &hot, now);

    // An asset freeze: the staff, and each ETH holder by mail and webhook; nobody else.
    let reason = Some("drain suspected at 0xabc".to_owned());
    let scope = FreezeScope::Asset { asset: "ETH".into() };
    let f = commit(&store, &g, Change::Freeze { scope, reason }, &[("sec", 5)]).await;
    let r = pass().await.unwrap();
    assert_eq!((r.entries, r.staff_alerts, r.customers_told), (1, 1, 2), "{r:?}");
    let seq = f.seq;
    for channel in ["webhook", "team_mail"] {
        let staff = store.outbox_message(&format!("incident/{seq}/staff/{channel}")).await.unwrap();
        let staff = staff.unwrap_or_else(|| panic!("no staff alert on {channel}"));
        assert_eq!(staff.kind, "incident_step");
        assert!(staff.body.to_string().contains("drain suspected"), "the staff see the reason");
    }
    for c in [eth_a, eth_b] {
        let mail = store
            .outbox_message(&format!("incident/{seq}/customer/{c}/customer_mail"))
            .await
            .unwrap()
            .expect("a mail to an ETH holder");
        let text = mail.body.to_string();
        assert!(text.contains("Withdrawals of ETH are paused"), "{text}");
        assert!(!text.contains("drain suspected"), "customers never see the internal reason");
        assert!(has(&store, &format!("incident/{seq}/customer/{c}/webhook")).await);
    }
    for c in [usdt, nothing] {
        assert!(!has(&store, &format!("incident/{seq}/customer/{c}/customer_mail")).await);
    }
    // A second pass (another instance, or after a crash) adds nothing.
    let (backlog, _) = store.outbox_backlog(now).await.unwrap();
    assert_eq!(pass().await.unwrap(), Default::default());
    assert_eq!(store.outbox_backlog(now).await.unwrap().0, backlog);

    // A node quarantined: the staff only. A global freeze: every holder, USDT's too.
    let q =
        commit(&store, &g, Change::QuarantineNode { node: 3, reason: None }, &[("sec", 5)]).await;
    let all = commit(
        &store,
        &g,
        Change::Freeze { scope: FreezeScope::Global, reason: None },
        &[("sec", 5)],
    )
    .await;
    let r = pass().await.unwrap();
    assert_eq!((r.entries, r.staff_alerts, r.customers_told), (2, 2, 3), "{r:?}");
    assert!(has(&store, &format!("incident/{}/staff/webhook", q.seq)).await);
    assert!(!has(&store, &format!("incident/{}/customer/{eth_a}/customer_mail", q.seq)).await);
    let mail = store
        .outbox_message(&format!("incident/{}/customer/{usdt}/customer_mail", all.seq))
        .await
        .unwrap()
        .unwrap();
    assert!(mail.body.to_string().contains("all assets"));
    // A freeze of a wallet no chain uses as its hot wallet (cold storage) stops no customer.
    let cold = FreezeScope::Wallet { wallet: "cold-1".into() };
    commit(&store, &g, Change::Freeze { scope: cold, reason: None }, &[("sec", 5)]).await;
    let r = pass().await.unwrap();
    assert_eq!((r.staff_alerts, r.customers_told), (1, 0));

    // The quorum migrates the chain's hot key: every holder of an asset on that chain is
    // told their deposit address changes (and that the old one still credits).
    let change = Change::MigrateKey {
        from: "hot-eth-1".into(),
        to: "hot-eth-2".into(),
        to_public_key: hex::encode([2u8; 33]),
    };
    let m = commit(&store, &g, change, &[("ada", 1), ("bob", 2)]).await;
    let r = pass().await.unwrap();
    assert_eq!((r.staff_alerts, r.customers_told), (1, 3), "{r:?}");
    for c in [eth_a, eth_b, usdt] {
        let mail = store
            .outbox_message(&format!("incident/{}/customer/{c}/customer_mail", m.seq))
            .await
            .unwrap()
            .expect("a mail to a holder on the migrated key's chain");
        let text = mail.body.to_string();
        assert!(text.contains("Your deposit address for ETH, USDT is changing"), "{text}");
        assert!(text.contains("previous address still arrive"), "{text}");
    }
    assert!(!has(&store, &format!("incident/{}/customer/{nothing}/customer_mail", m.seq)).await);
    // The new key is the chain's hot wallet now: freezing it stops that chain's customers.
    let scope = FreezeScope::Wallet { wallet: "hot-eth-2".into() };
    commit(&store, &g, Change::Freeze { scope, reason: None }, &[("sec", 5)]).await;
    let r = pass().await.unwrap();
    assert_eq!((r.staff_alerts, r.customers_told), (1, 3), "{r:?}");
}
