//! The engine against real nodes: Ethereum (anvil) and Bitcoin (the local regtest backend,
//! which checks every script with Bitcoin Core's consensus code), signed here by one local
//! key so the engine's own behaviour is under test (the threshold signer processes are
//! exercised end to end in the CLI's tests).
//!
//! One driver for every chain: the same `ChainEngine` settles an ETH and a BTC withdrawal in
//! one test; Bitcoin's coins are reserved per withdrawal so two never spend one coin.
//!
//! Withdrawals: build, sign, store, send, confirm, settle; a stop after signing or after
//! sending resumes without a second transaction; a withdrawal whose block is rolled back is
//! sent again and settles once; fees above the cap wait.
//!
//! Deposits: ETH and an ERC-20 into a customer's derived address are credited after N
//! confirmations, once; money into the hot wallet is the treasury's; a credited deposit that
//! a reorganisation (`anvil_reorg`) removes is reversed; ledger and chain reconcile.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::print_stderr
)] // Test code.
#![allow(clippy::disallowed_methods)]

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use k256::ecdsa::SigningKey;
use serde_json::json;
use strongroom_chain::{check_movement, ChainClient, TxCodec};
use strongroom_chain_bitcoin::hot::HotCodec;
use strongroom_chain_ethereum::anvil::{self, Anvil};
use strongroom_chain_ethereum::rpc::{EthRpc, Retry};
use strongroom_chain_ethereum::EthCodec;
use strongroom_core::ledger::TREASURY_CUSTOMER;
use strongroom_core::withdrawal::{
    plan_withdrawal, WithdrawalRequest, WithdrawalRules, WithdrawalState,
};
use strongroom_core::{new_id, Env, Intent, SystemEnv, WalletId};
use strongroom_engine::deposits::{deposit_address, DepositWatcher, WatchConfig};
use strongroom_engine::reconcile::reconcile;
use strongroom_engine::sweeps::{SweepConfig, Sweeper};
use strongroom_engine::{
    ChainConfig, ChainEngine, EngineError, Job, SignError, Step, StopPoint, TxSigner,
};
use strongroom_store::prelude::*;
use strongroom_store::{NewCustomer, NewDeposit, SqlStore, SweepKind, WriteCtx};
use strongroom_units::{Address, Amount, AssetRegistry, AssetSymbol, ChainId};
use uuid::Uuid;

const DEST: &str = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed";
const ETH: u128 = 1_000_000_000_000_000_000;

/// One key, checking like a signer node would: the transaction must match the intent
/// (decoded with the chain's codec: EIP-1559 or the hot wallet's P2WPKH PSBT).
struct KeySigner {
    key: SigningKey,
    codec: EthCodec,
    calls: AtomicUsize,
}

#[async_trait]
impl TxSigner for KeySigner {
    async fn public_key(&self, _: &WalletId) -> Result<Vec<u8>, SignError> {
        Ok(self.key.verifying_key().to_encoded_point(true).as_bytes().to_vec())
    }
    async fn master(&self, _: &WalletId) -> Result<strongroom_mpc::ecdsa::MasterPublic, SignError> {
        let pk = self.key.verifying_key().to_encoded_point(true);
        Ok(strongroom_mpc::ecdsa::MasterPublic {
            public_key: pk.as_bytes().try_into().unwrap(),
            chain_code: [7; 32],
        })
    }
    async fn sign(
        &self,
        _: &WalletId,
        path: &[u32],
        intent: &Intent,
        unsigned: &[u8],
        input: u32,
        _: &strongroom_engine::SignAuth,
    ) -> Result<Vec<u8>, SignError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let refuse = |m: String| SignError::other(m, false);
        let key = child_key(&self.key, path);
        let (m, digests) = match intent.chain.family() {
            strongroom_units::ChainFamily::Ethereum => (
                self.codec.decode(unsigned).map_err(|e| refuse(e.to_string()))?,
                self.codec.digests(unsigned).map_err(|e| refuse(e.to_string()))?,
            ),
            strongroom_units::ChainFamily::Bitcoin => {
                let pk = key.verifying_key().to_encoded_point(true);
                let codec = HotCodec::p2wpkh(intent.chain.clone(), pk.as_bytes()).unwrap();
                let tx = codec.parse(unsigned).map_err(|e| refuse(e.to_string()))?;
                (tx.movement, tx.digests)
            }
        };
        check_movement(&m, intent).map_err(|e| refuse(e.to_string()))?;
        let digest = digests.get(input as usize).ok_or_else(|| refuse("no such input".into()))?;
        let (sig, _) = key.sign_prehash_recoverable(digest).unwrap();
        Ok(sig.normalize_s().unwrap_or(sig).to_bytes().to_vec())
    }
}

/// BIP-32 private child derivation (non-hardened) from the test key and chain code [7; 32]:
/// the private side of what the engine derives from the public key.
fn child_key(master: &SigningKey, path: &[u32]) -> SigningKey {
    use hmac::{Hmac, Mac};
    use k256::elliptic_curve::PrimeField;
    let mut key = *master.as_nonzero_scalar().as_ref();
    let mut chain_code = [7u8; 32];
    for index in path {
        let public = k256::ProjectivePoint::GENERATOR * key;
        let compressed =
            k256::elliptic_curve::sec1::ToEncodedPoint::to_encoded_point(&public.to_affine(), true);
        let mut mac = Hmac::<sha2::Sha512>::new_from_slice(&chain_code).unwrap();
        mac.update(compressed.as_bytes());
        mac.update(&index.to_be_bytes());
        let i = mac.finalize().into_bytes();
        let tweak = k256::Scalar::from_repr(*k256::FieldBytes::from_slice(&i[..32])).unwrap();
        key += tweak;
        chain_code.copy_from_slice(&i[32..]);
    }
    SigningKey::from_bytes(&key.to_bytes()).unwrap()
}

struct World {
    node: Anvil,
    store: Arc<SqlStore>,
    signer: Arc<KeySigner>,
    env: Arc<SystemEnv>,
    hot: Address,
    customer: Uuid,
    _dir: tempfile::TempDir,
}

fn chain() -> ChainId {
    ChainId::parse("eip155:31337").unwrap()
}

fn ctx(env: &dyn Env) -> WriteCtx {
    WriteCtx { actor: "test".into(), now: env.now(), request_id: None }
}

impl World {
    async fn new() -> Option<World> {
        let node =
            anvil::for_tests(Path::new(env!("CARGO_MANIFEST_DIR")), 31337, &[]).await.unwrap();
        let Some(node) = node else {
            eprintln!("skipped: no anvil (scripts/install-eth-tools)");
            return None;
        };
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("s.db").display());
        let store = SqlStore::connect(&url, Default::default()).await.unwrap();
        store.migrate().await.unwrap();
        let store = Arc::new(store);
        let env = Arc::new(SystemEnv::new());
        let codec = EthCodec::new(chain()).unwrap();
        let key = SigningKey::from_slice(&[0x42; 32]).unwrap();
        let hot = codec.address_of(key.verifying_key().to_encoded_point(true).as_bytes()).unwrap();
        let signer = Arc::new(KeySigner { key, codec, calls: AtomicUsize::new(0) });

        // The hot wallet holds a customer's 2 ETH and the treasury's 0.5 ETH for gas; the
        // ledger says the same.
        let c = ctx(env.as_ref());
        let customer = new_id(env.as_ref());
        store
            .create_customer(&c, None, NewCustomer { id: customer, external_id: "alice".into() })
            .await
            .unwrap();
        store.ensure_treasury(&c).await.unwrap();
        for (who, amount, reference) in
            [(customer, 2 * ETH, "seed-1"), (TREASURY_CUSTOMER, ETH / 2, "seed-2")]
        {
            let d = NewDeposit {
                id: new_id(env.as_ref()),
                entry_id: new_id(env.as_ref()),
                customer_id: who,
                asset: AssetSymbol::parse("ETH").unwrap(),
                amount: Amount::from_base_units(amount).unwrap(),
                reference: reference.into(),
            };
            store.credit_deposit(&c, None, d).await.unwrap();
        }
        let w = World { node, store, signer, env, hot, customer, _dir: dir };
        w.rpc()
            .call("anvil_setBalance", json!([w.hot.as_str(), format!("{:#x}", 5 * ETH / 2)]))
            .await
            .unwrap();
        Some(w)
    }

    fn rpc(&self) -> EthRpc {
        EthRpc::new(&self.node.url, chain(), Retry::default()).unwrap()
    }

    fn engine(&self, stop_at: Option<StopPoint>) -> ChainEngine {
        self.engine_at_home(stop_at, None)
    }

    /// An engine whose chain pays out from `home`, a key others were migrated into.
    fn engine_at_home(&self, stop_at: Option<StopPoint>, home: Option<WalletId>) -> ChainEngine {
        let cfg = ChainConfig {
            bump_after_ms: None,
            chain: chain(),
            fee_asset: AssetSymbol::parse("ETH").unwrap(),
            confirmations: 3,
            stop_at,
            require_risk: false,
            worker: "engine-test".into(),
            lease_ms: strongroom_engine::JOB_LEASE_MS,
            home,
        };
        ChainEngine::ethereum(
            self.store.clone(),
            self.rpc(),
            self.signer.clone(),
            self.env.clone(),
            cfg,
        )
    }

    async fn withdraw(&self, amount: &str) -> Uuid {
        self.withdraw_to("ETH", DEST, amount).await
    }

    /// The customer's withdrawal of `amount` of `asset` to `destination`, reserved.
    async fn withdraw_to(&self, asset: &str, destination: &str, amount: &str) -> Uuid {
        let req = WithdrawalRequest {
            customer_id: self.customer,
            asset: asset.into(),
            destination: destination.into(),
            amount: amount.into(),
        };
        let env = self.env.as_ref();
        let planned = plan_withdrawal(
            &AssetRegistry::dev(),
            &WithdrawalRules::default(),
            &req,
            new_id(env),
            new_id(env),
            env.now(),
        )
        .unwrap();
        self.store.request_withdrawal(&ctx(env), None, planned).await.unwrap().id
    }

    async fn state(&self, id: Uuid) -> WithdrawalState {
        self.store.get_withdrawal(id).await.unwrap().state
    }

    async fn mine(&self, n: u64) {
        self.rpc().call("anvil_mine", json!([format!("{n:#x}")])).await.unwrap();
    }

    /// Drive until the engine waits for confirmations (anvil mines each transaction a
    /// moment after accepting it).
    async fn drive_until_broadcast_seen(&self, engine: &ChainEngine, id: Uuid) {
        for _ in 0..100 {
            engine.drive(id).await.unwrap();
            let tx = self.store.chain_tx(id).await.unwrap().unwrap();
            if let Some(s) = &tx.signed {
                if matches!(
                    self.rpc().status(&s.txid).await.unwrap(),
                    strongroom_chain::TxStatus::Included { .. }
                ) {
                    return;
                }
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        panic!("never included");
    }

    async fn ledger_matches_chain(&self) {
        let eth = AssetSymbol::parse("ETH").unwrap();
        let report = reconcile(
            self.store.as_ref(),
            &self.rpc(),
            &chain(),
            &[(eth, None)],
            std::slice::from_ref(&self.hot),
        )
        .await
        .unwrap();
        assert_eq!(report.len(), 1);
        assert!(report[0].matches(), "ledger and chain differ: {report:?}");
        assert_eq!(report[0].in_flight, 0);
    }
}

#[tokio::test]
async fn a_withdrawal_is_built_signed_sent_confirmed_and_settled_to_the_wei() {
    let Some(w) = World::new().await else { return };
    w.ledger_matches_chain().await;
    let engine = w.engine(None);
    let id = w.withdraw("0.25").await;
    w.drive_until_broadcast_seen(&engine, id).await;
    assert_eq!(w.state(id).await, WithdrawalState::Broadcast, "waits for confirmations");
    assert!(
        matches!(engine.step(&Job::from(&w.store.get_withdrawal(id).await.unwrap())).await.unwrap(), Step::Waiting(m) if m.contains("of 3 confirmations"))
    );
    w.mine(2).await;
    engine.drive(id).await.unwrap();
    assert_eq!(w.state(id).await, WithdrawalState::Settled);

    let rpc = w.rpc();
    let dest = Address::parse(&chain(), DEST).unwrap();
    assert_eq!(rpc.balance(&dest, None).await.unwrap().base_units(), ETH / 4);
    let tx = w.store.chain_tx(id).await.unwrap().unwrap();
    let fee = tx.fee_paid.unwrap().base_units();
    assert!(fee > 0 && fee <= tx.fee_reserved.base_units());
    // The customer paid the amount; the treasury paid the gas; custody matches the chain.
    let bal = |c: Uuid| {
        let store = w.store.clone();
        async move {
            store
                .balances(c)
                .await
                .unwrap()
                .into_iter()
                .find(|b| b.asset.as_str() == "ETH")
                .map(|b| (b.available.base_units(), b.pending.base_units()))
        }
    };
    assert_eq!(bal(w.customer).await, Some((2 * ETH - ETH / 4, 0)));
    assert_eq!(bal(TREASURY_CUSTOMER).await, Some((ETH / 2 - fee, 0)));
    w.ledger_matches_chain().await;
    assert_eq!(w.signer.calls.load(Ordering::SeqCst), 1);
    assert!(strongroom_store::verify::verify_audit(w.store.as_ref()).await.unwrap().is_intact());
}

/// Issue "Incident response": once governance migrated hot-eth-1 to hot-eth-2, a payout
/// still planned from hot-eth-1 can never be signed (the nodes let it pay only hot-eth-2,
/// and approvers signed an intent naming it): the engine cancels it before a nonce is spent
/// on the old key, and the customer's funds are available again.
#[tokio::test]
async fn a_payout_planned_from_a_migrated_key_is_cancelled_before_any_nonce() {
    let Some(w) = World::new().await else { return };
    let id = w.withdraw("0.5").await;
    let eth = AssetSymbol::parse("ETH").unwrap();
    let available = |b: Vec<strongroom_store::Balance>| {
        b.into_iter()
            .find(|b| b.asset == eth)
            .map(|b| (b.available.base_units(), b.pending.base_units()))
    };
    assert_eq!(
        available(w.store.balances(w.customer).await.unwrap()),
        Some((3 * ETH / 2, ETH / 2))
    );
    let engine = w.engine_at_home(None, Some(WalletId::parse("hot-eth-2").unwrap()));
    engine.drive(id).await.unwrap();
    assert_eq!(w.state(id).await, WithdrawalState::Cancelled);
    assert!(w.store.chain_tx(id).await.unwrap().is_none(), "no nonce spent on the old key");
    assert_eq!(w.signer.calls.load(Ordering::SeqCst), 0);
    assert_eq!(available(w.store.balances(w.customer).await.unwrap()), Some((2 * ETH, 0)));
    // Without a migration the same payout goes ahead.
    let id = w.withdraw("0.5").await;
    w.drive_until_broadcast_seen(&w.engine(None), id).await;
}

#[tokio::test]
async fn a_stop_after_signing_or_after_sending_resumes_without_a_second_transaction() {
    let Some(w) = World::new().await else { return };
    let rpc = w.rpc();
    for stop in [StopPoint::AfterSigned, StopPoint::AfterSend] {
        let id = w.withdraw("0.1").await;
        let nonce_before = rpc.nonce(&w.hot, false).await.unwrap();
        let err = w.engine(Some(stop)).drive(id).await.unwrap_err();
        assert!(matches!(err, EngineError::Stopped(p) if p == stop), "{err}");
        assert_eq!(
            w.state(id).await,
            WithdrawalState::Signed,
            "the store knows it is signed, not that it was sent"
        );
        let stored = w.store.chain_tx(id).await.unwrap().unwrap().signed.unwrap();

        // A new engine (the restarted process) picks it up from the store.
        let engine = w.engine(None);
        w.drive_until_broadcast_seen(&engine, id).await;
        w.mine(3).await;
        engine.run_once().await.unwrap();
        assert_eq!(w.state(id).await, WithdrawalState::Settled);
        // Exactly one transaction left the hot wallet, and it is the stored one.
        assert_eq!(rpc.nonce(&w.hot, false).await.unwrap(), nonce_before + 1);
        assert!(matches!(
            rpc.status(&stored.txid).await.unwrap(),
            strongroom_chain::TxStatus::Included { success: true, .. }
        ));
    }
    assert_eq!(
        w.signer.calls.load(Ordering::SeqCst),
        2,
        "the signers were asked once per withdrawal"
    );
    w.ledger_matches_chain().await;
}

#[tokio::test]
async fn a_rolled_back_withdrawal_is_sent_again_and_settles_once() {
    let Some(w) = World::new().await else { return };
    let rpc = w.rpc();
    let engine = w.engine(None);
    let id = w.withdraw("0.3").await;
    w.drive_until_broadcast_seen(&engine, id).await;
    let txid = w.store.chain_tx(id).await.unwrap().unwrap().signed.unwrap().txid;
    // The block with the withdrawal is rolled back; anvil forgets the transaction.
    rpc.call("anvil_rollback", json!([1])).await.unwrap();
    rpc.call("anvil_dropAllTransactions", json!([])).await.unwrap();
    assert_eq!(rpc.status(&txid).await.unwrap(), strongroom_chain::TxStatus::Unknown);
    // The engine notices and sends the stored transaction again; it settles once.
    w.drive_until_broadcast_seen(&engine, id).await;
    w.mine(3).await;
    engine.drive(id).await.unwrap();
    assert_eq!(w.state(id).await, WithdrawalState::Settled);
    assert_eq!(rpc.nonce(&w.hot, false).await.unwrap(), 1);
    assert_eq!(w.signer.calls.load(Ordering::SeqCst), 1, "resending needs no new signature");
    w.ledger_matches_chain().await;
}

#[tokio::test]
async fn fees_above_the_cap_wait_and_a_dead_node_changes_nothing() {
    let Some(w) = World::new().await else { return };
    let rpc = w.rpc();
    // Base fee 2,000 gwei: 21,000 gas costs more than the dev cap (21,000 × 1,000 gwei).
    rpc.call("anvil_setNextBlockBaseFeePerGas", json!(["0x1d1a94a2000"])).await.unwrap();
    w.mine(1).await;
    let id = w.withdraw("0.1").await;
    let engine = w.engine(None);
    let step = engine.step(&Job::from(&w.store.get_withdrawal(id).await.unwrap())).await.unwrap();
    assert!(matches!(&step, Step::Waiting(m) if m.contains("above the intent's cap")), "{step:?}");
    assert_eq!(w.state(id).await, WithdrawalState::Reserved);
    assert!(w.store.chain_tx(id).await.unwrap().is_none(), "no nonce spent, no fee reserved");

    // The node goes away: the step fails with a clear error and the withdrawal is as it was.
    let cfg = ChainConfig {
        bump_after_ms: None,
        chain: chain(),
        fee_asset: AssetSymbol::parse("ETH").unwrap(),
        confirmations: 3,
        stop_at: None,
        require_risk: false,
        worker: "engine-test".into(),
        lease_ms: strongroom_engine::JOB_LEASE_MS,
        home: None,
    };
    let quick = Retry {
        attempts: 2,
        first_delay: std::time::Duration::from_millis(10),
        timeout: std::time::Duration::from_secs(1),
    };
    let dead = ChainEngine::ethereum(
        w.store.clone(),
        EthRpc::new("http://127.0.0.1:9", chain(), quick).unwrap(),
        w.signer.clone(),
        w.env.clone(),
        cfg,
    );
    let err = dead.drive(id).await.unwrap_err();
    assert!(matches!(&err, EngineError::Node(e) if e.retryable), "{err}");
    assert_eq!(w.state(id).await, WithdrawalState::Reserved);
}

const USDT_DECIMALS: u8 = 6;

async fn watcher(w: &World, tokens: Vec<(AssetSymbol, Address)>) -> DepositWatcher {
    let cfg = WatchConfig {
        internal: Vec::new(),
        chain: chain(),
        confirmations: 3,
        native: AssetSymbol::parse("ETH").unwrap(),
        tokens,
        hot_wallets: vec![w.hot.clone()],
        wallets: vec![WalletId::parse("hot-eth-1").unwrap()],
        start_block: 0,
        max_blocks: 50,
        reorg_window: 64,
    };
    DepositWatcher::new(w.store.clone(), Arc::new(w.rpc()), w.env.clone(), cfg)
}

async fn funded_account(w: &World) -> String {
    w.rpc().call("eth_accounts", json!([])).await.unwrap()[0].as_str().unwrap().to_owned()
}

async fn send_eth(w: &World, from: &str, to: &Address, wei: u128) -> String {
    let tx = json!({"from": from, "to": to.as_str(), "value": format!("{wei:#x}")});
    let r = anvil::send_and_wait(&w.rpc(), tx).await.unwrap();
    r["transactionHash"].as_str().unwrap().to_owned()
}

async fn eth_balance(w: &World, c: Uuid, asset: &str) -> u128 {
    w.store
        .balances(c)
        .await
        .unwrap()
        .into_iter()
        .find(|b| b.asset.as_str() == asset)
        .map_or(0, |b| b.available.base_units())
}

/// The test USDT, deployed by `from`, with 1,000 USDT minted to `from`.
async fn test_usdt(w: &World, from: &str) -> Address {
    let rpc = w.rpc();
    let token = anvil::deploy_test_token(&rpc, from, "Tether USD (test)", "USDT", USDT_DECIMALS)
        .await
        .unwrap();
    let funder = Address::parse(&chain(), &checksum(from)).unwrap();
    anvil::mint_test_token(&rpc, from, &token, &funder, 1_000_000_000).await.unwrap();
    token
}

#[tokio::test]
async fn deposits_of_eth_and_an_erc20_are_credited_after_confirmations_and_a_reorg_reverses_one() {
    let Some(w) = World::new().await else { return };
    let rpc = w.rpc();
    let from = funded_account(&w).await;
    let usdt = AssetSymbol::parse("USDT").unwrap();
    let token = test_usdt(&w, &from).await;

    // Alice's address: a child of the hot wallet key, the same on every request.
    let c = w.store.as_ref();
    let (wallet, dev_chain) = (WalletId::parse("hot-eth-1").unwrap(), chain());
    let ask =
        || deposit_address(c, w.signer.as_ref(), w.env.as_ref(), &dev_chain, &wallet, w.customer);
    let address = ask().await.unwrap();
    assert_eq!(ask().await.unwrap(), address);
    let alice_addr = Address::parse(&chain(), &address.address).unwrap();
    assert_ne!(alice_addr, w.hot);
    // It really is the key's child at [0, index]: derived independently here with k256.
    let child = strongroom_mpc::ecdsa::MasterPublic {
        public_key: w
            .signer
            .key
            .verifying_key()
            .to_encoded_point(true)
            .as_bytes()
            .try_into()
            .unwrap(),
        chain_code: [7; 32],
    }
    .derive(&strongroom_engine::deposits::deposit_path(address.path_index))
    .unwrap();
    assert_eq!(EthCodec::new(chain()).unwrap().address_of(&child).unwrap(), alice_addr);

    let watch = watcher(&w, vec![(usdt.clone(), token.clone())]).await;
    let before = eth_balance(&w, w.customer, "ETH").await;
    let eth_tx = send_eth(&w, &from, &alice_addr, ETH / 10).await;
    let transfer = strongroom_chain_ethereum::transfer_calldata(
        &alice_addr,
        Amount::from_base_units(250_000_000).unwrap(),
    )
    .unwrap();
    anvil::send_and_wait(
        &rpc,
        json!({"from": from, "to": token.as_str(), "data": format!("0x{}", hex::encode(transfer))}),
    )
    .await
    .unwrap();
    send_eth(&w, &from, &w.hot, ETH / 20).await;

    // Seen, not yet deep enough.
    let r = watch.run_once().await.unwrap();
    assert_eq!((r.seen, r.credited), (3, 1), "{r:?}"); // only the oldest is 3 blocks deep
    w.mine(2).await;
    let r = watch.run_once().await.unwrap();
    assert_eq!(r.credited, 2, "{r:?}");
    assert_eq!(watch.run_once().await.unwrap().credited, 0, "credited once");
    assert_eq!(eth_balance(&w, w.customer, "ETH").await, before + ETH / 10);
    assert_eq!(eth_balance(&w, w.customer, "USDT").await, 250_000_000);
    assert_eq!(eth_balance(&w, TREASURY_CUSTOMER, "ETH").await, ETH / 2 + ETH / 20);
    let deposits = w.store.chain_deposits(&chain(), None).await.unwrap();
    assert!(deposits.iter().any(|d| d.transfer.txid == eth_tx && d.deposit_id.is_some()));

    // Ledger and chain agree per asset over the hot wallet and the deposit address.
    let assets = [(AssetSymbol::parse("ETH").unwrap(), None), (usdt.clone(), Some(token.clone()))];
    let report =
        reconcile(c, &rpc, &chain(), &assets, &[w.hot.clone(), alice_addr.clone()]).await.unwrap();
    assert!(report.iter().all(|h| h.matches()), "{report:?}");

    // A 0.2 ETH deposit is credited, then a reorganisation replaces the last 4 blocks with
    // empty ones: the deposit is gone from the chain, so its credit is reversed.
    send_eth(&w, &from, &alice_addr, ETH / 5).await;
    w.mine(2).await;
    assert_eq!(watch.run_once().await.unwrap().credited, 1);
    assert_eq!(eth_balance(&w, w.customer, "ETH").await, before + ETH / 10 + ETH / 5);
    rpc.call("anvil_reorg", json!([4, []])).await.unwrap();
    let r = watch.run_once().await.unwrap();
    assert!(r.reorganised_from.is_some(), "{r:?}");
    assert_eq!(r.reversed, 1, "{r:?}");
    assert_eq!(eth_balance(&w, w.customer, "ETH").await, before + ETH / 10);
    let report = reconcile(c, &rpc, &chain(), &assets, &[w.hot.clone(), alice_addr]).await.unwrap();
    assert!(report.iter().all(|h| h.matches()), "{report:?}");
    assert!(strongroom_store::verify::verify_audit(c).await.unwrap().is_intact());
}

fn checksum(lower: &str) -> String {
    strongroom_units::address::eip55_checksum(
        lower.trim_start_matches("0x").to_lowercase().as_str(),
    )
}

/// Consolidation: Alice's address holds ETH and USDT, Bob's only USDT. The sweeper moves
/// the tokens (Bob's after a gas top-up from the hot wallet) and then the ETH into the hot
/// wallet, each signed by the deposit address's own child key. Customers' balances do not
/// move, the watcher credits none of these internal transfers, only fees leave custody, and
/// ledger and chain still agree to the base unit.
#[tokio::test]
async fn deposit_addresses_are_swept_into_the_hot_wallet_with_gas_top_ups() {
    let Some(w) = World::new().await else { return };
    let rpc = w.rpc();
    let from = funded_account(&w).await;
    let usdt = AssetSymbol::parse("USDT").unwrap();
    let token = test_usdt(&w, &from).await;
    let wallet = WalletId::parse("hot-eth-1").unwrap();
    let c = w.store.as_ref();
    let bob = new_id(w.env.as_ref());
    c.create_customer(
        &ctx(w.env.as_ref()),
        None,
        NewCustomer { id: bob, external_id: "bob".into() },
    )
    .await
    .unwrap();
    let mut addrs = Vec::new();
    for who in [w.customer, bob] {
        let a = deposit_address(c, w.signer.as_ref(), w.env.as_ref(), &chain(), &wallet, who)
            .await
            .unwrap();
        addrs.push(Address::parse(&chain(), &a.address).unwrap());
    }
    let (alice_addr, bob_addr) = (addrs[0].clone(), addrs[1].clone());
    let send_token = |to: &Address, amount: u128| {
        let data = strongroom_chain_ethereum::transfer_calldata(
            to,
            Amount::from_base_units(amount).unwrap(),
        )
        .unwrap();
        json!({"from": from, "to": token.as_str(), "data": format!("0x{}", hex::encode(data))})
    };
    send_eth(&w, &from, &alice_addr, ETH / 10).await;
    anvil::send_and_wait(&rpc, send_token(&alice_addr, 250_000_000)).await.unwrap();
    anvil::send_and_wait(&rpc, send_token(&bob_addr, 100_000_000)).await.unwrap();
    let watch = watcher(&w, vec![(usdt.clone(), token.clone())]).await;
    w.mine(3).await;
    assert_eq!(watch.run_once().await.unwrap().credited, 3);
    let balances = |who: Uuid| {
        let w = &w;
        async move { (eth_balance(w, who, "ETH").await, eth_balance(w, who, "USDT").await) }
    };
    let alice_before = balances(w.customer).await;
    let treasury_before = eth_balance(&w, TREASURY_CUSTOMER, "ETH").await;

    let cfg = SweepConfig {
        chain: chain(),
        wallet: wallet.clone(),
        hot: w.hot.clone(),
        former: Vec::new(),
        native: (AssetSymbol::parse("ETH").unwrap(), 18),
        tokens: vec![(usdt.clone(), USDT_DECIMALS, token.clone())],
        min_native: ETH / 1000,
        token_gas: 100_000,
        ttl_ms: 3_600_000,
    };
    let sweeper = Sweeper::new(w.store.clone(), rpc.clone(), w.env.clone(), cfg);
    let engine = w.engine(None);
    let mut kinds = Vec::new();
    for _ in 0..30 {
        for s in sweeper.plan().await.unwrap() {
            kinds.push((s.kind, s.intent.asset.symbol.to_string(), s.from_address.clone()));
        }
        engine.run_once().await.unwrap();
        w.mine(1).await;
        engine.run_once().await.unwrap();
        watch.run_once().await.unwrap();
        let open = w.store.list_sweeps(&chain(), true).await.unwrap();
        let usdt_left = rpc.balance(&alice_addr, Some(&token)).await.unwrap().base_units()
            + rpc.balance(&bob_addr, Some(&token)).await.unwrap().base_units();
        let eth_left = rpc.balance(&alice_addr, None).await.unwrap().base_units();
        if open.is_empty() && usdt_left == 0 && eth_left < ETH / 1000 {
            break;
        }
    }
    // Alice: USDT, then ETH; Bob: a top-up from the hot wallet, then USDT.
    let alice = alice_addr.as_str().to_owned();
    let bob_s = bob_addr.as_str().to_owned();
    let hot = w.hot.as_str().to_owned();
    assert!(kinds.contains(&(SweepKind::Sweep, "USDT".into(), alice.clone())), "{kinds:?}");
    assert!(kinds.contains(&(SweepKind::Sweep, "ETH".into(), alice)), "{kinds:?}");
    assert!(kinds.contains(&(SweepKind::TopUp, "ETH".into(), hot)), "{kinds:?}");
    assert!(kinds.contains(&(SweepKind::Sweep, "USDT".into(), bob_s)), "{kinds:?}");
    assert_eq!(rpc.balance(&w.hot, Some(&token)).await.unwrap().base_units(), 350_000_000);
    assert!(rpc.balance(&alice_addr, None).await.unwrap().base_units() < ETH / 1000, "ETH swept");

    // Nothing internal was credited; customers' balances did not move; only fees left.
    assert_eq!(balances(w.customer).await, alice_before);
    assert_eq!(balances(bob).await, (0, 100_000_000));
    let sweeps = w.store.list_sweeps(&chain(), false).await.unwrap();
    assert!(sweeps.len() >= 4 && sweeps.iter().all(|s| s.state == WithdrawalState::Settled));
    assert!(eth_balance(&w, TREASURY_CUSTOMER, "ETH").await < treasury_before);
    let assets = [(AssetSymbol::parse("ETH").unwrap(), None), (usdt, Some(token))];
    let report = reconcile(c, &rpc, &chain(), &assets, &[w.hot.clone(), alice_addr, bob_addr])
        .await
        .unwrap();
    assert!(report.iter().all(|h| h.matches() && h.settled()), "{report:?}");
    assert!(strongroom_store::verify::verify_audit(c).await.unwrap().is_intact());
}

// ---------------------------------------------------------------------------------------
// Bitcoin through the same driver.

const SAT: u128 = 1;
const BTC: u128 = 100_000_000 * SAT;

fn regtest_chain() -> ChainId {
    ChainId::parse(strongroom_units::chain::BITCOIN_REGTEST).unwrap()
}

/// The regtest backend over HTTP, and the same store, customer and key as `w`: the hot key's
/// P2WPKH address holds the customer's 0.5 BTC and the treasury's 0.01 BTC in two coins.
struct Btc {
    node: strongroom_chain_bitcoin::regtest::Regtest,
    adapter: Arc<strongroom_engine::BtcAdapter>,
    hot: Address,
}

impl Btc {
    async fn new(w: &World) -> Btc {
        use strongroom_chain_bitcoin::{client::BtcClient, esplora::Esplora, regtest::Regtest};
        let node = Regtest::new().unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(node.clone().serve(listener));
        let client = BtcClient::new(Esplora::new(&url).unwrap(), regtest_chain()).unwrap();
        let adapter = Arc::new(strongroom_engine::BtcAdapter::new(client, 3));
        let pk = w.signer.public_key(&WalletId::parse("hot-btc-1").unwrap()).await.unwrap();
        let hot = strongroom_engine::ChainAdapter::address_of(adapter.as_ref(), &pk).unwrap();
        let b = Btc { node, adapter, hot };
        for sats in [30_000_000u64, 21_000_000] {
            b.node.fund(&b.btc_address(&b.hot), sats).unwrap();
        }
        b.node.mine(1, None).unwrap();
        let c = ctx(w.env.as_ref());
        for (who, amount, reference) in
            [(w.customer, BTC / 2, "seed-btc-1"), (TREASURY_CUSTOMER, BTC / 100, "seed-btc-2")]
        {
            let d = NewDeposit {
                id: new_id(w.env.as_ref()),
                entry_id: new_id(w.env.as_ref()),
                customer_id: who,
                asset: AssetSymbol::parse("BTC").unwrap(),
                amount: Amount::from_base_units(amount).unwrap(),
                reference: reference.into(),
            };
            w.store.credit_deposit(&c, None, d).await.unwrap();
        }
        b
    }

    fn btc_address(&self, a: &Address) -> strongroom_chain_bitcoin::bitcoin::Address {
        strongroom_chain_bitcoin::address(
            a.as_str(),
            strongroom_chain_bitcoin::bitcoin::Network::Regtest,
        )
        .unwrap()
    }

    fn engine(&self, w: &World, stop_at: Option<StopPoint>) -> ChainEngine {
        self.engine_bumping(w, stop_at, None)
    }

    /// An engine that bumps fees after `bump_after_ms` in the mempool.
    fn engine_bumping(
        &self,
        w: &World,
        stop_at: Option<StopPoint>,
        bump_after_ms: Option<i64>,
    ) -> ChainEngine {
        let cfg = ChainConfig {
            bump_after_ms,
            chain: regtest_chain(),
            fee_asset: AssetSymbol::parse("BTC").unwrap(),
            confirmations: 2,
            stop_at,
            require_risk: false,
            worker: "engine-test".into(),
            lease_ms: strongroom_engine::JOB_LEASE_MS,
            home: None,
        };
        ChainEngine::new(
            w.store.clone(),
            self.adapter.clone(),
            w.signer.clone(),
            w.env.clone(),
            cfg,
        )
    }

    async fn withdraw(&self, w: &World, amount: &str) -> Uuid {
        w.withdraw_to("BTC", "bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080", amount).await
    }

    async fn ledger_matches_chain(&self, w: &World) {
        let report = reconcile(
            w.store.as_ref(),
            strongroom_engine::ChainAdapter::client(self.adapter.as_ref()).as_ref(),
            &regtest_chain(),
            &[(AssetSymbol::parse("BTC").unwrap(), None)],
            std::slice::from_ref(&self.hot),
        )
        .await
        .unwrap();
        assert_eq!(report.len(), 1);
        assert!(report[0].matches(), "ledger and chain differ: {report:?}");
        assert_eq!(report[0].in_flight, 0);
    }

    /// The inputs of `id`'s stored transaction.
    async fn inputs(&self, w: &World, id: Uuid) -> Vec<String> {
        let tx = w.store.chain_tx(id).await.unwrap().unwrap();
        let psbt = strongroom_chain_bitcoin::bitcoin::psbt::Psbt::deserialize(
            &hex::decode(tx.unsigned_tx).unwrap(),
        )
        .unwrap();
        psbt.unsigned_tx.input.iter().map(|i| i.previous_output.to_string()).collect()
    }
}

async fn btc_balance(w: &World, c: Uuid) -> (u128, u128) {
    let b = w.store.balances(c).await.unwrap();
    let btc = b.iter().find(|b| b.asset.as_str() == "BTC").unwrap();
    (btc.available.base_units(), btc.pending.base_units())
}

#[tokio::test]
async fn one_driver_settles_an_eth_and_a_btc_withdrawal_to_the_wei_and_the_satoshi() {
    let Some(w) = World::new().await else { return };
    let btc = Btc::new(&w).await;
    btc.ledger_matches_chain(&w).await;
    w.ledger_matches_chain().await;
    let (eth_engine, btc_engine) = (w.engine(None), btc.engine(&w, None));

    let eth_id = w.withdraw("0.25").await;
    // 0.4 BTC takes both coins: the nodes are asked once per input.
    let btc_id = btc.withdraw(&w, "0.4").await;
    let calls = w.signer.calls.load(Ordering::SeqCst);
    w.drive_until_broadcast_seen(&eth_engine, eth_id).await;
    assert_eq!(btc_engine.drive(btc_id).await.unwrap(), 3, "built, signed, broadcast");
    assert_eq!(w.signer.calls.load(Ordering::SeqCst), calls + 1 + 2);
    assert_eq!(btc.inputs(&w, btc_id).await.len(), 2);
    // Each engine leaves the other chain's withdrawal alone.
    let other = Job::from(&w.store.get_withdrawal(btc_id).await.unwrap());
    assert_eq!(eth_engine.step(&other).await.unwrap(), Step::Idle);
    assert_eq!((btc_balance(&w, w.customer).await), (BTC / 10, 4 * BTC / 10));

    let step = btc_engine.step(&other).await.unwrap();
    assert!(matches!(&step, Step::Waiting(m) if m.contains("mempool")), "{step:?}");
    btc.node.mine(1, None).unwrap();
    let step = btc_engine.step(&other).await.unwrap();
    assert!(matches!(&step, Step::Waiting(m) if m.contains("1 of 2 confirmations")), "{step:?}");
    btc.node.mine(1, None).unwrap();
    w.mine(3).await;
    btc_engine.drive(btc_id).await.unwrap();
    eth_engine.drive(eth_id).await.unwrap();
    assert_eq!(w.state(eth_id).await, WithdrawalState::Settled);
    assert_eq!(w.state(btc_id).await, WithdrawalState::Settled);

    // To the satoshi: the customer's 0.4 BTC left, the fee left the treasury, and the hot
    // wallet's change is what the ledger still holds.
    let signed = w.store.chain_tx(btc_id).await.unwrap().unwrap();
    let fee = signed.fee_paid.unwrap().base_units();
    assert!(fee > 0 && fee < 10_000, "{fee} sat");
    assert_eq!(btc_balance(&w, w.customer).await, (BTC / 10, 0));
    assert_eq!(btc_balance(&w, TREASURY_CUSTOMER).await, (BTC / 100 - fee, 0));
    let client = strongroom_engine::ChainAdapter::client(btc.adapter.as_ref());
    let paid = client
        .balance(
            &Address::parse(&regtest_chain(), "bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080")
                .unwrap(),
            None,
        )
        .await
        .unwrap();
    assert_eq!(paid.base_units(), 4 * BTC / 10);
    btc.ledger_matches_chain(&w).await;
    w.ledger_matches_chain().await;
}

#[tokio::test]
async fn bitcoin_withdrawals_never_share_a_coin_and_wait_for_fees_and_coins() {
    let Some(w) = World::new().await else { return };
    let btc = Btc::new(&w).await;
    let engine = btc.engine(&w, None);
    // Two withdrawals, each payable from one coin: built on different coins.
    let (a, b) = (btc.withdraw(&w, "0.2").await, btc.withdraw(&w, "0.15").await);
    let store = w.store.clone();
    let job = |id| {
        let store = store.clone();
        async move { Job::from(&store.get_withdrawal(id).await.unwrap()) }
    };
    assert_eq!(engine.step(&job(a).await).await.unwrap(), Step::Moved(WithdrawalState::Built));
    assert_eq!(engine.step(&job(b).await).await.unwrap(), Step::Moved(WithdrawalState::Built));
    let (ia, ib) = (btc.inputs(&w, a).await, btc.inputs(&w, b).await);
    assert_eq!((ia.len(), ib.len()), (1, 1));
    assert_ne!(ia, ib, "two withdrawals never spend one coin");
    let chain = regtest_chain();
    let held = w.store.reserved_coins(&chain, &[ia[0].clone(), ib[0].clone()]).await.unwrap();
    assert_eq!(held.get(&ia[0]), Some(&a));
    assert_eq!(held.get(&ib[0]), Some(&b));

    // A third finds no free coin (the change of the others is not confirmed): it waits, and
    // nothing is reserved for it.
    let c = btc.withdraw(&w, "0.1").await;
    let step = engine.step(&job(c).await).await.unwrap();
    assert!(matches!(&step, Step::Waiting(m) if m.contains("free confirmed coins")), "{step:?}");
    assert!(w.store.chain_tx(c).await.unwrap().is_none());

    // Settle the first two; their change confirms and pays the third, unless fees are above
    // its cap: then it waits, no coin reserved, until they fall.
    for id in [a, b] {
        engine.drive(id).await.unwrap();
    }
    btc.node.mine(2, None).unwrap();
    for id in [a, b] {
        engine.drive(id).await.unwrap();
        assert_eq!(w.state(id).await, WithdrawalState::Settled);
    }
    btc.node.set_fee_estimates([(1u16, 5_000.0), (6, 4_000.0)].into_iter().collect());
    let step = engine.step(&job(c).await).await.unwrap();
    assert!(matches!(&step, Step::Waiting(m) if m.contains("above the intent's cap")), "{step:?}");
    assert!(w.store.chain_tx(c).await.unwrap().is_none());
    btc.node.set_fee_estimates([(1u16, 3.0), (6, 2.0)].into_iter().collect());
    engine.drive(c).await.unwrap();
    btc.node.mine(2, None).unwrap();
    engine.drive(c).await.unwrap();
    assert_eq!(w.state(c).await, WithdrawalState::Settled);
    btc.ledger_matches_chain(&w).await;
}

/// A withdrawal the network leaves waiting while fees rise gets fee bumps: the same coins at
/// the new estimate, signed by the nodes and sent, each replacing the one before in the
/// mempool; none while the estimate stands, none past the intent's cap. Only the one mined
/// settles it: its fee is what the treasury pays, the rest of the reservation returns, and
/// ledger and chain agree to the satoshi.
#[tokio::test]
async fn a_waiting_bitcoin_withdrawal_gets_fee_bumps_on_the_same_coins_and_settles_once() {
    let Some(w) = World::new().await else { return };
    let btc = Btc::new(&w).await;
    let rates = |r: f64| [(1u16, r), (3, r), (6, r)].into_iter().collect();
    btc.node.set_fee_estimates(rates(2.0));
    let engine = btc.engine_bumping(&w, None, Some(0));
    let id = btc.withdraw(&w, "0.05").await;
    assert_eq!(engine.drive(id).await.unwrap(), 3, "built, signed, broadcast");
    let first = w.store.chain_tx(id).await.unwrap().unwrap();
    assert_eq!(first.fee_reserved.base_units(), 100_000, "the intent's cap is set aside");
    let coins = btc.inputs(&w, id).await;
    let job = Job::from(&w.store.get_withdrawal(id).await.unwrap());
    // The estimate stands: it waits as it is.
    let step = engine.step(&job).await.unwrap();
    assert_eq!(step, Step::Waiting("in the mempool".into()));
    assert!(w.store.bumps(id).await.unwrap().is_empty());
    // Fees rise: a bump on the same coins replaces it; again, and again.
    let mut sent = Vec::new();
    for (n, rate) in [(1u32, 20.0), (2, 60.0)] {
        btc.node.set_fee_estimates(rates(rate));
        let step = engine.step(&job).await.unwrap();
        assert_eq!(step, Step::Waiting(format!("in the mempool; fee bump {n} sent")));
        let bumps = w.store.bumps(id).await.unwrap();
        let b = bumps.last().unwrap().clone();
        assert_eq!(b.version, n);
        let psbt = strongroom_chain_bitcoin::bitcoin::psbt::Psbt::deserialize(
            &hex::decode(&b.unsigned_tx).unwrap(),
        )
        .unwrap();
        let spends: Vec<String> =
            psbt.unsigned_tx.input.iter().map(|i| i.previous_output.to_string()).collect();
        assert_eq!(spends, coins, "a bump spends exactly the first one's coins");
        let txid = b.signed.unwrap().txid;
        assert_eq!(
            btc.node.mempool().iter().map(ToString::to_string).collect::<Vec<_>>(),
            vec![txid.clone()],
            "it replaced the one before"
        );
        sent.push(txid);
    }
    // Past the cap: no bump.
    btc.node.set_fee_estimates(rates(5_000.0));
    assert_eq!(engine.step(&job).await.unwrap(), Step::Waiting("in the mempool".into()));
    assert_eq!(w.store.bumps(id).await.unwrap().len(), 2);
    // Mined: the second bump is the transaction of record, its fee the one paid.
    btc.node.mine(2, None).unwrap();
    engine.drive(id).await.unwrap();
    assert_eq!(w.state(id).await, WithdrawalState::Settled);
    let done = w.store.chain_tx(id).await.unwrap().unwrap();
    assert_eq!(done.signed.as_ref().unwrap().txid, sent[1]);
    let fee = done.fee_paid.unwrap().base_units();
    assert!(fee > 60 * 100, "{fee} sat, at 60 sat/vB");
    assert_eq!(btc_balance(&w, TREASURY_CUSTOMER).await, (BTC / 100 - fee, 0));
    assert_eq!(btc_balance(&w, w.customer).await, (BTC / 2 - BTC / 20, 0));
    btc.ledger_matches_chain(&w).await;
}

#[tokio::test]
async fn a_bitcoin_withdrawal_stopped_after_sending_or_dropped_by_a_reorg_settles_once() {
    let Some(w) = World::new().await else { return };
    let btc = Btc::new(&w).await;
    let id = btc.withdraw(&w, "0.05").await;
    // The engine dies right after sending: the transaction is out, the store says signed.
    let e = btc.engine(&w, Some(StopPoint::AfterSend)).drive(id).await.unwrap_err();
    assert!(matches!(e, EngineError::Stopped(StopPoint::AfterSend)), "{e}");
    assert_eq!(w.state(id).await, WithdrawalState::Signed);
    let txid = w.store.chain_tx(id).await.unwrap().unwrap().signed.unwrap().txid;
    assert_eq!(btc.node.mempool().len(), 1);
    // A new engine sends the same stored transaction again: no second one.
    let engine = btc.engine(&w, None);
    engine.drive(id).await.unwrap();
    assert_eq!(
        btc.node.mempool().iter().map(ToString::to_string).collect::<Vec<_>>(),
        vec![txid.clone()]
    );
    btc.node.mine(1, None).unwrap();
    engine.drive(id).await.unwrap();
    assert_eq!(w.state(id).await, WithdrawalState::Broadcast);
    // A reorganisation drops its block and the transaction with it: the engine sends the
    // stored one again and it settles once, after its confirmations on the new branch.
    btc.node.reorg(1, false).unwrap();
    assert!(btc.node.mempool().is_empty());
    engine.drive(id).await.unwrap();
    assert_eq!(btc.node.mempool().iter().map(ToString::to_string).collect::<Vec<_>>(), vec![txid]);
    btc.node.mine(2, None).unwrap();
    engine.drive(id).await.unwrap();
    assert_eq!(w.state(id).await, WithdrawalState::Settled);
    btc.ledger_matches_chain(&w).await;
}

#[tokio::test]
async fn bitcoin_deposits_are_credited_once_our_change_never_and_a_reorg_reverses_one() {
    let Some(w) = World::new().await else { return };
    let btc = Btc::new(&w).await;
    let chain = regtest_chain();
    let wallet = WalletId::parse("hot-btc-1").unwrap();
    let ask = || {
        deposit_address(
            w.store.as_ref(),
            w.signer.as_ref(),
            w.env.as_ref(),
            &chain,
            &wallet,
            w.customer,
        )
    };
    let address = ask().await.unwrap();
    assert_eq!(ask().await.unwrap(), address, "one address per customer");
    let alice = Address::parse(&chain, &address.address).unwrap();
    assert_ne!(alice, btc.hot);
    // The key's child at [0, index], derived independently with k256, as P2WPKH.
    let child =
        child_key(&w.signer.key, &strongroom_engine::deposits::deposit_path(address.path_index));
    let pk = child.verifying_key().to_encoded_point(true);
    let expected = strongroom_chain_bitcoin::hot::p2wpkh_address(
        pk.as_bytes(),
        strongroom_chain_bitcoin::bitcoin::Network::Regtest,
    )
    .unwrap();
    assert_eq!(alice.as_str(), expected.to_string());

    let cfg = WatchConfig {
        internal: Vec::new(),
        chain: chain.clone(),
        confirmations: 2,
        native: AssetSymbol::parse("BTC").unwrap(),
        tokens: Vec::new(),
        hot_wallets: vec![btc.hot.clone()],
        wallets: vec![wallet.clone()],
        // The hot wallet's seed coins (block 102) were credited by hand above.
        start_block: 103,
        max_blocks: 50,
        reorg_window: 64,
    };
    let client = strongroom_engine::ChainAdapter::client(btc.adapter.as_ref());
    let watch = DepositWatcher::new(w.store.clone(), client, w.env.clone(), cfg);
    let before = btc_balance(&w, w.customer).await.0;
    let treasury_before = btc_balance(&w, TREASURY_CUSTOMER).await.0;

    // Alice pays her address; someone pays the hot wallet; the hot wallet pays out (its change
    // comes home: our own transaction, no deposit).
    btc.node.fund(&btc.btc_address(&alice), 3_000_000).unwrap();
    btc.node.fund(&btc.btc_address(&btc.hot), 1_000_000).unwrap();
    btc.node.mine(1, None).unwrap();
    let engine = btc.engine(&w, None);
    let out = btc.withdraw(&w, "0.01").await;
    engine.drive(out).await.unwrap();
    btc.node.mine(1, None).unwrap();
    let r = watch.run_once().await.unwrap();
    assert_eq!((r.seen, r.credited), (2, 2), "{r:?}"); // the first block is 2 deep; the change is not seen
    btc.node.mine(1, None).unwrap();
    let r = watch.run_once().await.unwrap();
    assert_eq!((r.seen, r.credited), (0, 0), "credited once: {r:?}");
    assert_eq!(btc_balance(&w, w.customer).await.0, before + 3_000_000 - BTC / 100);
    engine.drive(out).await.unwrap();
    assert_eq!(w.state(out).await, WithdrawalState::Settled);
    let fee = w.store.chain_tx(out).await.unwrap().unwrap().fee_paid.unwrap().base_units();
    assert_eq!(btc_balance(&w, TREASURY_CUSTOMER).await.0, treasury_before + 1_000_000 - fee);

    // A second deposit is credited, then a reorganisation drops it: the credit is reversed.
    let dropped = btc.node.fund(&btc.btc_address(&alice), 700_000).unwrap();
    btc.node.mine(2, None).unwrap();
    let r = watch.run_once().await.unwrap();
    assert_eq!(r.credited, 1, "{r:?}");
    btc.node.reorg(3, false).unwrap();
    let r = watch.run_once().await.unwrap();
    assert!(r.reorganised_from.is_some() && r.reversed == 1, "{r:?}");
    let deposits = w.store.chain_deposits(&chain, None).await.unwrap();
    let gone = deposits.iter().find(|d| d.transfer.txid == dropped.to_string()).unwrap();
    assert_eq!(gone.state, strongroom_store::ChainDepositState::Reversed);
    assert_eq!(btc_balance(&w, w.customer).await.0, before + 3_000_000 - BTC / 100);
    // The deposits before the fork stay credited, once, as the new branch grows.
    watch.run_once().await.unwrap();
    btc.node.mine(2, None).unwrap();
    watch.run_once().await.unwrap();
    assert_eq!(btc_balance(&w, w.customer).await.0, before + 3_000_000 - BTC / 100);
    let report = reconcile(
        w.store.as_ref(),
        strongroom_engine::ChainAdapter::client(btc.adapter.as_ref()).as_ref(),
        &chain,
        &[(AssetSymbol::parse("BTC").unwrap(), None)],
        &[btc.hot.clone(), alice],
    )
    .await
    .unwrap();
    assert!(report[0].matches(), "{report:?}");
}

#[tokio::test]
async fn bitcoin_deposit_addresses_are_swept_into_the_hot_wallet_by_their_own_keys() {
    let Some(w) = World::new().await else { return };
    let btc = Btc::new(&w).await;
    let chain = regtest_chain();
    let wallet = WalletId::parse("hot-btc-1").unwrap();
    let address = deposit_address(
        w.store.as_ref(),
        w.signer.as_ref(),
        w.env.as_ref(),
        &chain,
        &wallet,
        w.customer,
    )
    .await
    .unwrap();
    let alice = Address::parse(&chain, &address.address).unwrap();
    let cfg = SweepConfig {
        chain: chain.clone(),
        wallet: wallet.clone(),
        hot: btc.hot.clone(),
        former: Vec::new(),
        native: (AssetSymbol::parse("BTC").unwrap(), 8),
        tokens: Vec::new(),
        min_native: 10_000,
        token_gas: 0,
        ttl_ms: 3_600_000,
    };
    let master = w.signer.master(&wallet).await.unwrap();
    let sweeper = strongroom_engine::sweeps::BtcSweeper::new(
        w.store.clone(),
        btc.adapter.clone(),
        w.env.clone(),
        cfg,
        master,
        2,
    );
    // Two payments to Alice's address (credited as deposits elsewhere; here only the coins
    // matter). One block deep: not yet swept.
    for sats in [600_000u64, 400_000] {
        btc.node.fund(&btc.btc_address(&alice), sats).unwrap();
    }
    btc.node.mine(1, None).unwrap();
    assert!(sweeper.plan().await.unwrap().is_empty(), "a coin one block deep waits");
    btc.node.mine(1, None).unwrap();
    let planned = sweeper.plan().await.unwrap();
    assert_eq!(planned.len(), 1);
    let s = &planned[0];
    assert_eq!((s.kind, s.path.clone()), (SweepKind::Sweep, vec![0, address.path_index]));
    assert_eq!(s.intent.destination, btc.hot);
    assert_eq!(s.intent.amount.base_units() + s.intent.fee_cap.base_units(), 1_000_000);
    assert!(sweeper.plan().await.unwrap().is_empty(), "one movement per address at a time");

    // The engine carries it out like a withdrawal, signed by the address's own child key.
    let hot_before = btc.adapter.btc().coins(&btc.hot, false).await.unwrap().len();
    let treasury_before = btc_balance(&w, TREASURY_CUSTOMER).await.0;
    let engine = btc.engine(&w, None);
    engine.drive(s.id).await.unwrap();
    assert_eq!(btc.inputs(&w, s.id).await.len(), 2, "every coin of the address");
    btc.node.mine(2, None).unwrap();
    engine.drive(s.id).await.unwrap();
    assert_eq!(w.store.get_sweep(s.id).await.unwrap().state, WithdrawalState::Settled);
    let client = strongroom_engine::ChainAdapter::client(btc.adapter.as_ref());
    let left = client.balance(&alice, None).await.unwrap().base_units();
    let fee = w.store.chain_tx(s.id).await.unwrap().unwrap().fee_paid.unwrap().base_units();
    assert!(left < 10_000, "at most change below the sweep minimum stays: {left}");
    assert_eq!(btc.adapter.btc().coins(&btc.hot, false).await.unwrap().len(), hot_before + 1);
    // Only the fee left custody, from the treasury; nothing to sweep now.
    assert_eq!(btc_balance(&w, TREASURY_CUSTOMER).await.0, treasury_before - fee);
    assert_eq!(s.intent.amount.base_units() + left + fee, 1_000_000, "to the satoshi");
    assert!(sweeper.plan().await.unwrap().is_empty());
}

#[tokio::test]
async fn one_treasury_code_sweeps_eth_an_erc20_and_btc_above_their_high_marks_to_cold() {
    use strongroom_engine::treasury::{Action, Treasury, TreasuryConfig, Watermarks};
    let Some(w) = World::new().await else { return };
    let btc = Btc::new(&w).await;
    let c = ctx(w.env.as_ref());
    let amount = |n: u128| Amount::from_base_units(n).unwrap();
    let marks =
        |asset: &str, decimals: u8, contract: Option<Address>, low, target, high| Watermarks {
            asset: AssetSymbol::parse(asset).unwrap(),
            decimals,
            contract,
            low: amount(low),
            target: amount(target),
            high: amount(high),
            min_cold_bps: 9_000,
        };
    // The hot wallet holds 2.5 ETH and 1,000 USDT (the treasury's, in the ledger too).
    let from = funded_account(&w).await;
    let token = test_usdt(&w, &from).await;
    anvil::mint_test_token(&w.rpc(), &from, &token, &w.hot, 1_000_000_000).await.unwrap();
    let usdt = AssetSymbol::parse("USDT").unwrap();
    let d = NewDeposit {
        id: new_id(w.env.as_ref()),
        entry_id: new_id(w.env.as_ref()),
        customer_id: TREASURY_CUSTOMER,
        asset: usdt.clone(),
        amount: amount(1_000_000_000),
        reference: "seed-usdt".into(),
    };
    w.store.credit_deposit(&c, None, d).await.unwrap();

    let sweep_cfg = |chain: ChainId, wallet: &str, hot: &Address, native: (&str, u8)| SweepConfig {
        chain,
        wallet: WalletId::parse(wallet).unwrap(),
        hot: hot.clone(),
        former: Vec::new(),
        native: (AssetSymbol::parse(native.0).unwrap(), native.1),
        tokens: Vec::new(),
        min_native: 0,
        token_gas: 100_000,
        ttl_ms: 3_600_000,
    };
    let key = w.signer.public_key(&WalletId::parse("hot-eth-1").unwrap()).await.unwrap();
    let eth_cold = Address::parse(&chain(), DEST).unwrap();
    let eth_treasury = Treasury::new(
        w.store.clone(),
        Arc::new(strongroom_engine::EthAdapter::new(w.rpc())),
        w.env.clone(),
        key.clone(),
        TreasuryConfig {
            cold_also: Vec::new(),
            sweep: sweep_cfg(chain(), "hot-eth-1", &w.hot, ("ETH", 18)),
            cold: eth_cold.clone(),
            marks: vec![
                marks("ETH", 18, None, ETH / 10, ETH / 2, ETH),
                marks("USDT", 6, Some(token.clone()), 10_000_000, 100_000_000, 500_000_000),
            ],
        },
    )
    .unwrap();
    // Bitcoin's cold wallet: a P2WSH address.
    let script = strongroom_chain_bitcoin::bitcoin::ScriptBuf::from(vec![0x51]);
    let p2wsh = strongroom_chain_bitcoin::bitcoin::Address::p2wsh(
        &script,
        strongroom_chain_bitcoin::bitcoin::Network::Regtest,
    );
    let btc_cold = Address::parse(&regtest_chain(), &p2wsh.to_string()).unwrap();
    let btc_treasury = Treasury::new(
        w.store.clone(),
        btc.adapter.clone(),
        w.env.clone(),
        key,
        TreasuryConfig {
            cold_also: Vec::new(),
            sweep: sweep_cfg(regtest_chain(), "hot-btc-1", &btc.hot, ("BTC", 8)),
            cold: btc_cold.clone(),
            marks: vec![marks("BTC", 8, None, BTC / 10, BTC / 5, 3 * BTC / 10)],
        },
    )
    .unwrap();

    // Every asset above its high mark: a sweep to cold down to the target, one at a time.
    let sweeping = |r: &[strongroom_engine::treasury::ColdRatio]| -> Vec<(String, Action)> {
        r.iter().map(|c| (c.asset.to_string(), c.action.clone())).collect()
    };
    let eth = eth_treasury.run_once().await.unwrap();
    assert_eq!(
        sweeping(&eth),
        vec![
            ("ETH".into(), Action::Sweep { amount: amount(2 * ETH) }),
            ("USDT".into(), Action::Sweep { amount: amount(900_000_000) }),
        ]
    );
    let b = btc_treasury.run_once().await.unwrap();
    assert_eq!(sweeping(&b), vec![("BTC".into(), Action::Sweep { amount: amount(31_000_000) })]);
    assert!(eth_treasury
        .run_once()
        .await
        .unwrap()
        .iter()
        .all(|c| c.action == Action::SweepUnderWay));
    assert_eq!(btc_treasury.run_once().await.unwrap()[0].action, Action::SweepUnderWay);

    // The same engine code carries them out; the cold wallets receive them.
    let (eth_engine, btc_engine) = (w.engine(None), btc.engine(&w, None));
    for _ in 0..20 {
        eth_engine.run_once().await.unwrap();
        btc_engine.run_once().await.unwrap();
        w.mine(1).await;
        btc.node.mine(1, None).unwrap();
        let open = [chain(), regtest_chain()];
        let mut busy = 0;
        for ch in &open {
            busy += w.store.list_sweeps(ch, true).await.unwrap().len();
        }
        if busy == 0 {
            break;
        }
    }
    let eth_client = w.rpc();
    assert_eq!(eth_client.balance(&eth_cold, None).await.unwrap().base_units(), 2 * ETH);
    assert_eq!(
        eth_client.balance(&eth_cold, Some(&token)).await.unwrap().base_units(),
        900_000_000,
        "the token went cold too"
    );
    let btc_client = strongroom_engine::ChainAdapter::client(btc.adapter.as_ref());
    assert_eq!(btc_client.balance(&btc_cold, None).await.unwrap().base_units(), 31_000_000);
    // Between the marks now: hold, with the cold share reported.
    let eth = eth_treasury.run_once().await.unwrap();
    assert!(eth.iter().all(|c| c.action == Action::Hold), "{eth:?}");
    assert_eq!(eth[1].cold_bps, 9_000, "900 of 1,000 USDT cold");
    let b = btc_treasury.run_once().await.unwrap();
    assert_eq!(b[0].action, Action::Hold, "{b:?}");
    assert!(b[0].cold_bps >= 6_000, "{b:?}");

    // Custody did not change: only the fees left, from the treasury.
    let report = reconcile(
        w.store.as_ref(),
        &w.rpc(),
        &chain(),
        &[(AssetSymbol::parse("ETH").unwrap(), None), (usdt, Some(token))],
        &[w.hot.clone(), eth_cold],
    )
    .await
    .unwrap();
    assert!(report.iter().all(|h| h.matches()), "{report:?}");
    let report = reconcile(
        w.store.as_ref(),
        btc_client.as_ref(),
        &regtest_chain(),
        &[(AssetSymbol::parse("BTC").unwrap(), None)],
        &[btc.hot.clone(), btc_cold],
    )
    .await
    .unwrap();
    assert!(report[0].matches(), "{report:?}");
}
