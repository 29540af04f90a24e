#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)] // Test code.
//! Issue 24, refill bundles made by the server, under a policy that needs two approvers for
//! cold movements: the treasury's refill waits for the approvals (saying how many it has),
//! is asked for once however many passes run, gets its bundle from the cold multisig's coins
//! (on the local regtest backend) only with both, ends once the hot wallet is above its low
//! mark, and expires on the clock, after which the treasury asks again.

use std::sync::Arc;

use strongroom_chain_bitcoin::bitcoin::Network;
use strongroom_chain_bitcoin::esplora::Esplora;
use strongroom_chain_bitcoin::keys::ColdSecret;
use strongroom_chain_bitcoin::regtest::Regtest;
use strongroom_chain_bitcoin::{Keychain, Multisig};
use strongroom_cold::bundle::{Bundle, Payload};
use strongroom_core::{Env, FixedEnv, SystemEnv, WalletId};
use strongroom_engine::treasury::{Action, ColdRatio};
use strongroom_governance::approval::Approval;
use strongroom_governance::log::{replay, AssetSpec, Change, Genesis};
use strongroom_governance::policy::Policy;
use strongroom_governance::Role;
use strongroom_runtime::refills::{ColdRefills, RefillConfig, REFILL_TTL_MS};
use strongroom_store::*;
use strongroom_units::chain::BITCOIN_REGTEST;
use strongroom_units::{Address, Amount, AssetSymbol, ChainId};

mod support;
use support::{ctx, genesis_of, key};

fn genesis(now: i64) -> Genesis {
    let members = [
        ("ada", 1, Role::Admin),
        ("bob", 2, Role::Admin),
        ("ann", 3, Role::Approver),
        ("al", 4, Role::Approver),
    ];
    let btc = AssetSpec {
        chain: BITCOIN_REGTEST.into(),
        symbol: "BTC".into(),
        decimals: 8,
        contract: None,
    };
    genesis_of(now, &members, vec![btc])
}

const POLICY: &str = r#"
version = 1
[[rules]]
name = "cold-needs-two"
when = { tier = "cold" }
action = { kind = "approvals", count = 2, roles = ["approver"] }
[[rules]]
name = "rest"
action = { kind = "allow" }
[[fees]]
chain = "bip122:0f9188f13cb7b2c71f2a335e3a4fc328"
fee_asset = "BTC"
max_fee = "50000"
"#;

fn reading(action: Action) -> Vec<ColdRatio> {
    vec![ColdRatio {
        asset: AssetSymbol::parse("BTC").unwrap(),
        hot: Amount::from_base_units(100_000_000).unwrap(),
        cold: Amount::ZERO,
        cold_bps: 0,
        min_cold_bps: 0,
        action,
        at_ms: 0,
    }]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refill_waits_for_its_approvals_then_the_server_makes_its_bundle_once() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("strongroom.db").display());
    let store = Arc::new(SqlStore::connect(&url, Default::default()).await.unwrap());
    store.migrate().await.unwrap();
    let sys = SystemEnv::new();
    // A clock of its own (a second ahead of the entries written below), moved by hand.
    let fixed = Arc::new(FixedEnv::new(sys.now().plus_ms(1_000), 7));
    let env: Arc<dyn Env> = fixed.clone();

    // Governance: the genesis and a policy that needs two approvers for cold movements.
    let g = genesis(sys.now().unix_ms());
    let pin = hex::encode(g.hash().unwrap());
    let w = |op| {
        let store = store.clone();
        let c = ctx(&sys);
        async move { store.write_governance(&c, op).await.unwrap() }
    };
    w(GovernanceWrite::Genesis { pin: pin.clone(), genesis: g.clone() }).await;
    let state = replay(&g, &pin, &[], sys.now()).unwrap();
    let mut e =
        state.propose(Change::SetPolicy { policy: Policy::from_toml(POLICY).unwrap() }, sys.now());
    e.sign("ada", &key(1)).unwrap();
    e.sign("bob", &key(2)).unwrap();
    w(GovernanceWrite::Propose(e.clone())).await;
    w(GovernanceWrite::Commit { expected: e.clone(), entry: e }).await;

    // The cold wallet: a 2-of-3 P2WSH multisig holding 3 BTC on the local backend.
    let keys: Vec<String> =
        (0..3).map(|_| ColdSecret::generate(&sys).account_key(Network::Regtest).unwrap()).collect();
    let multisig = Multisig::new(2, &keys, Network::Regtest).unwrap();
    let node = Regtest::new().unwrap();
    node.fund(&multisig.address(Keychain::Receive, 0).unwrap(), 300_000_000).unwrap();
    node.mine(1, None).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let esplora = Esplora::new(&format!("http://{}", listener.local_addr().unwrap())).unwrap();
    tokio::spawn(node.clone().serve(listener));

    let chain = ChainId::parse(BITCOIN_REGTEST).unwrap();
    let hot = Address::parse(&chain, "bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080").unwrap();
    let cfg = RefillConfig {
        chain: chain.clone(),
        wallet: WalletId::parse("cold-btc-1").unwrap(),
        descriptor: multisig.descriptor(),
        hot: hot.clone(),
        native: (AssetSymbol::parse("BTC").unwrap(), 8),
    };
    let refills = ColdRefills::new(store.clone(), env.clone(), esplora, cfg).unwrap();
    let two = Amount::from_base_units(200_000_000).unwrap();
    let open = || async { store.list_refills(true, None, 10).await.unwrap() };

    // Asked for, once, however many passes; it says what it waits for.
    for _ in 0..3 {
        refills.pass(&reading(Action::Refill { amount: two })).await.unwrap();
    }
    let list = open().await;
    assert_eq!(list.len(), 1, "{list:?}");
    let r = list[0].clone();
    assert_eq!(
        (r.state, r.intent.amount, r.intent.destination.clone(), r.intent.source_wallet.as_str()),
        (RefillState::AwaitingApprovals, two, hot.clone(), "cold-btc-1")
    );
    assert_eq!(r.intent.fee_cap, Amount::from_base_units(50_000).unwrap(), "the governed ceiling");
    assert!(r.waiting_for.as_deref().unwrap().contains("0 of 2 approvals"), "{r:?}");

    // One approval is not enough; a forged one (al's key under ann's name) does not count.
    let hash = r.intent.hash().unwrap();
    let expires = fixed.now().plus_ms(3_600_000);
    let approve = |who: &str, n: u8| Approval::sign(who, &key(n), &hash, 1, expires);
    let add = |a: Approval| {
        let store = store.clone();
        let c = ctx(&sys);
        async move { store.update_refill(&c, r.id, RefillChange::Approval(a)).await.unwrap() }
    };
    add(approve("ann", 4)).await;
    refills.pass(&reading(Action::Refill { amount: two })).await.unwrap();
    let r1 = store.get_refill(r.id).await.unwrap();
    assert_eq!(r1.state, RefillState::AwaitingApprovals, "{r1:?}");
    assert!(r1.waiting_for.as_deref().unwrap().contains("0 of 2 approvals"), "{r1:?}");
    add(approve("ann", 3)).await;
    refills.pass(&reading(Action::Refill { amount: two })).await.unwrap();
    let r1 = store.get_refill(r.id).await.unwrap();
    assert!(r1.waiting_for.as_deref().unwrap().contains("1 of 2 approvals"), "{r1:?}");
    assert!(r1.bundle.is_none());

    // With both, the bundle: the intent, both approvals, the log, a PSBT of the cold coin.
    add(approve("al", 4)).await;
    refills.pass(&reading(Action::Refill { amount: two })).await.unwrap();
    let ready = store.get_refill(r.id).await.unwrap();
    assert_eq!((ready.state, ready.waiting_for.clone()), (RefillState::Ready, None), "{ready:?}");
    let bundle = Bundle::from_json(ready.bundle.as_ref().unwrap().as_bytes()).unwrap();
    assert_eq!(bundle.intent, r.intent);
    assert_eq!(bundle.approvals.len(), 2);
    assert_eq!(bundle.governance.len(), 1);
    let Payload::BitcoinPsbt { psbt } = &bundle.transaction else { panic!("{bundle:?}") };
    let psbt = strongroom_chain_bitcoin::psbt::from_base64(psbt).unwrap();
    assert_eq!(psbt.unsigned_tx.input.len(), 1);
    assert!(psbt.unsigned_tx.output.iter().any(|o| o.value.to_sat() == 200_000_000
        && o.script_pubkey
            == strongroom_chain_bitcoin::address(hot.as_str(), Network::Regtest)
                .unwrap()
                .script_pubkey()));
    // Made once: another pass leaves it as it is.
    refills.pass(&reading(Action::Refill { amount: two })).await.unwrap();
    assert_eq!(store.get_refill(r.id).await.unwrap(), ready);

    // The approvals expire before the key holders sign: the bundle is withdrawn (they would
    // refuse it), and fresh approvals make it again.
    fixed.advance_ms(3_600_001);
    refills.pass(&reading(Action::Refill { amount: two })).await.unwrap();
    let reopened = store.get_refill(r.id).await.unwrap();
    assert_eq!((reopened.state, reopened.bundle.clone()), (RefillState::AwaitingApprovals, None));
    assert!(reopened.waiting_for.as_deref().unwrap().contains("0 of 2 approvals"), "{reopened:?}");
    let expires = fixed.now().plus_ms(3_600_000);
    for (who, n) in [("ann", 3), ("al", 4)] {
        add(Approval::sign(who, &key(n), &hash, 1, expires)).await;
    }
    refills.pass(&reading(Action::Refill { amount: two })).await.unwrap();
    assert_eq!(store.get_refill(r.id).await.unwrap().state, RefillState::Ready);

    // The hot wallet is above its low mark again: done.
    refills.pass(&reading(Action::Hold)).await.unwrap();
    assert_eq!(store.get_refill(r.id).await.unwrap().state, RefillState::Done);
    assert!(open().await.is_empty());

    // The next one expires on the clock before it arrives, and the treasury asks again.
    refills.pass(&reading(Action::Refill { amount: two })).await.unwrap();
    let next = open().await[0].clone();
    assert_ne!(next.id, r.id);
    fixed.advance_ms(REFILL_TTL_MS + 1);
    refills.pass(&reading(Action::Refill { amount: two })).await.unwrap();
    assert_eq!(store.get_refill(next.id).await.unwrap().state, RefillState::Expired);
    refills.pass(&reading(Action::Refill { amount: two })).await.unwrap();
    let again = open().await;
    assert_eq!(again.len(), 1);
    assert!(again[0].id != next.id && again[0].id != r.id);
    let report = verify_audit(store.as_ref()).await.unwrap();
    assert!(report.chain_break.is_none() && report.mismatches.is_empty(), "{report:?}");
}
