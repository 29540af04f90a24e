#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]
#![allow(clippy::disallowed_methods)]
//! An Ethereum cold wallet end to end: three key holders make their keys offline, a 2-of-3
//! Safe 1.4.1 (the npm artifacts) is created with their addresses on a real node (anvil)
//! through `SafeProxyFactory`, as Safe{Wallet} creates one, a quorum approves moving ETH, two
//! `strongroom-cold` processes in network namespaces sign the Safe transaction, and
//! `execTransaction` moves the ETH, sent by the online side's relayer in an EIP-1559
//! transaction it signs itself. A Bybit-style bundle — an innocent intent with a delegatecall
//! behind it — and an owner change are refused by the offline signer even with valid
//! approvals.

mod support;

use std::path::Path;

use alloy_sol_types::SolCall;
use serde_json::json;
use strongroom_chain::ChainClient;
use strongroom_chain_ethereum::anvil;
use strongroom_chain_ethereum::relayer::{RelayError, RelayerKey};
use strongroom_chain_ethereum::rpc::{EthRpc, Retry};
use strongroom_chain_ethereum::safe::{
    get_transaction_hash_calldata, nonce_calldata, safe_tx_hash, transfer_tx, EthAddress, ISafe,
    SafeDeployment, DELEGATECALL, U256,
};
use strongroom_chain_ethereum::safe_node;
use strongroom_cold::bundle::{Bundle, Payload, SafePayload};
use strongroom_cold::online::{finalize_safe, prepare_safe, Request};
use strongroom_core::{Env, Intent, IntentAsset, SystemEnv, Timestamp, WalletId};
use strongroom_governance::approval::Approval;
use strongroom_governance::log::replay;
use strongroom_governance::policy::VelocityLimit;
use strongroom_governance::Role;
use strongroom_units::{Address, Amount, AssetSymbol, ChainId};
use support::{
    approve, cold, governance, key_holders, netns_available, p, refused_offline, sign_showing,
    write_bundle, Holders,
};

const CHAIN: &str = "eip155:31337";
const DEST: &str = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed";
const ETH: u128 = 1_000_000_000_000_000_000;

fn intent(wei: u128, request: u128, now: Timestamp) -> Intent {
    let chain = ChainId::parse(CHAIN).unwrap();
    Intent {
        destination: Address::parse(&chain, DEST).unwrap(),
        asset: IntentAsset {
            symbol: AssetSymbol::parse("ETH").unwrap(),
            decimals: 18,
            contract: None,
        },
        chain,
        source_wallet: WalletId::parse("cold-eth-1").unwrap(),
        amount: Amount::from_base_units(wei).unwrap(),
        fee_cap: Amount::from_base_units(10u128.pow(16)).unwrap(),
        expires_at: Timestamp::from_unix_ms(now.unix_ms() + 86_400_000),
        request_id: uuid::Uuid::from_u128(request),
    }
}

fn relayer_addr(chain: &ChainId, relayer: &RelayerKey) -> Address {
    Address::parse(chain, &relayer.address().to_checksum(None)).unwrap()
}

async fn eth_call(rpc: &EthRpc, to: EthAddress, data: Vec<u8>) -> Vec<u8> {
    let r = rpc
        .call(
            "eth_call",
            json!([{"to": to.to_string(), "data": format!("0x{}", hex::encode(data))}, "latest"]),
        )
        .await
        .unwrap();
    hex::decode(r.as_str().unwrap().trim_start_matches("0x")).unwrap()
}

#[tokio::test]
async fn a_two_of_three_safe_moves_eth_after_two_offline_signatures_and_refuses_a_delegatecall() {
    if !netns_available() {
        eprintln!(
            "skipped: `unshare --net` is not available (STRONGROOM_REQUIRE_NETNS=1 fails instead)"
        );
        return;
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let Some(node) = anvil::for_tests(root, 31337, &[]).await.unwrap() else { return };
    let chain = ChainId::parse(CHAIN).unwrap();
    let rpc = EthRpc::new(&node.url, chain.clone(), Retry::default()).unwrap();
    let env = SystemEnv::new();
    let now = env.now();
    let dir = tempfile::tempdir().unwrap();
    let gov = governance(now);
    // Key ceremony, offline: each holder's key gives an owner address.
    let Holders { homes, passes, keys: owners, .. } = key_holders(dir.path(), CHAIN, &gov);
    for owner in &owners {
        assert!(owner.starts_with("0x") && owner.len() == 42, "{owner}");
    }
    let owner_addrs: Vec<EthAddress> = owners.iter().map(|o| o.parse().unwrap()).collect();

    // Online: the relayer (a key of the online side's own, none of the node's accounts) gets
    // gas money; the Safe contracts go on the dev node; the Safe is created through the
    // factory from the public addresses, where CREATE2 said, and funded with 5 ETH.
    let relayer_file = dir.path().join("relayer.key");
    RelayerKey::generate(&env).unwrap().write_new(&relayer_file).unwrap();
    let relayer = RelayerKey::from_file(&relayer_file).unwrap();
    let unlocked = rpc.call("eth_accounts", json!([])).await.unwrap();
    let unlocked: Vec<EthAddress> =
        unlocked.as_array().unwrap().iter().map(|a| a.as_str().unwrap().parse().unwrap()).collect();
    assert!(!unlocked.contains(&relayer.address()));
    let fund = |wei: &'static str| {
        let (rpc, a) = (rpc.clone(), relayer.address());
        async move { rpc.call("anvil_setBalance", json!([a.to_string(), wei])).await.unwrap() }
    };
    fund("0x8ac7230489e80000").await;
    let contracts = anvil::deploy_safe_contracts(&rpc, &relayer, root).await.unwrap();
    let deployment = SafeDeployment::new(contracts, owner_addrs.clone(), 2, U256::ZERO).unwrap();
    let predicted = safe_node::predict_safe(&rpc, &deployment).await.unwrap();
    let deployed = safe_node::deploy_safe(&rpc, &relayer, &deployment).await.unwrap();
    let safe = deployed.address;
    assert_eq!(safe, predicted);
    assert_eq!((deployed.state.version.as_str(), deployed.state.threshold), ("1.4.1", 2));
    assert_eq!(deployed.state.fallback_handler, contracts.fallback_handler);
    rpc.call("anvil_setBalance", json!([safe.to_string(), "0x4563918244f40000"])).await.unwrap();
    let owners_on_chain = eth_call(&rpc, safe, ISafe::getOwnersCall {}.abi_encode()).await;
    let owners_on_chain = ISafe::getOwnersCall::abi_decode_returns(&owners_on_chain).unwrap();
    let mut sorted_chain = owners_on_chain.clone();
    sorted_chain.sort();
    let mut sorted_ours = owner_addrs.clone();
    sorted_ours.sort();
    assert_eq!(sorted_chain, sorted_ours);
    let safe_text = safe.to_checksum(None);
    for home in &homes {
        let mut args = vec![
            "install-safe",
            "--home",
            p(home),
            "--wallet",
            "cold-eth-1",
            "--safe",
            &safe_text,
            "--threshold",
            "2",
        ];
        for o in &owners {
            args.extend(["--owner", o.as_str()]);
        }
        let o = cold(false, &args, "");
        assert!(o.ok && o.stdout.contains("2-of-3"), "{} {}", o.stdout, o.stderr);
    }

    // The hash the signers compute is the one the deployed Safe computes.
    let i = intent(3 * ETH / 2, 1, now);
    let tx = transfer_tx(&i, 0).unwrap();
    let theirs = eth_call(&rpc, safe, get_transaction_hash_calldata(&tx)).await;
    assert_eq!(theirs, safe_tx_hash(31337, safe, &tx).to_vec());

    let state = replay(&gov.genesis, &gov.pin, &gov.log, now).unwrap();
    let moved = |_: &VelocityLimit| Amount::ZERO;
    let request = |intent: &'static Intent, approvals: &'static [Approval]| Request {
        intent,
        initiator: "eve",
        initiator_role: Role::Operator,
        approvals,
        log: &gov.log,
        state: &state,
        moved: &moved,
    };
    let leak = |a: Vec<Approval>| -> &'static [Approval] { Box::leak(a.into_boxed_slice()) };
    let i: &'static Intent = Box::leak(Box::new(i));
    let one = leak(vec![approve("ann", 3, i, now)]);
    let two = leak(vec![approve("ann", 3, i, now), approve("ops", 4, i, now)]);
    let err = prepare_safe(safe, 0, &request(i, one), &env).unwrap_err();
    assert!(err.to_string().contains("1 of 2 approvals"), "{err}");
    let bundle = prepare_safe(safe, 0, &request(i, two), &env).unwrap();
    let bundle_file = dir.path().join("bundle.json");
    write_bundle(&bundle_file, &bundle);

    let mut signed = Vec::new();
    for n in [1usize, 2] {
        let out = dir.path().join(format!("signed-{n}.json"));
        let words = [
            "Cold withdrawal from wallet cold-eth-1 (Safe",
            "2-of-3, eip155:31337",
            "Send 1.5 ETH (1500000000000000000 base units)",
            DEST,
            "a plain call (no delegatecall), Safe nonce 0",
            "policy v1 rule cold-needs-two: allowed",
        ];
        signed.push(sign_showing(&homes[n], &bundle_file, &out, &passes[n], &words));
    }
    // One owner's signature is not enough; two are, and the Safe moves the ETH.
    let err = finalize_safe(&signed[..1], &owner_addrs, 2).unwrap_err();
    assert!(err.to_string().contains("1 of 2 owners"), "{err}");
    let (to, data) = finalize_safe(&signed, &owner_addrs, 2).unwrap();
    assert_eq!(to, safe);
    let dest = Address::parse(&chain, DEST).unwrap();
    let before = rpc.balance(&dest, None).await.unwrap().base_units();
    // A relayer without gas money is refused with the amounts, before anything is sent.
    let fee_cap = i.fee_cap.base_units();
    fund("0x0").await;
    let e = safe_node::execute(&rpc, &relayer, safe, data.clone(), fee_cap).await.unwrap_err();
    assert!(matches!(e, RelayError::Underfunded { balance_wei: 0, .. }), "{e}");
    assert!(e.to_string().contains("send the relayer ETH for gas"), "{e}");
    assert_eq!(U256::from_be_slice(&eth_call(&rpc, safe, nonce_calldata()).await), U256::ZERO);
    // Funded, it sends `execTransaction` in its own signed EIP-1559 transaction.
    fund("0x8ac7230489e80000").await;
    let relayer_before = rpc.balance(&relayer_addr(&chain, &relayer), None).await.unwrap();
    let tx = safe_node::execute(&rpc, &relayer, safe, data.clone(), fee_cap).await.unwrap();
    let sent = rpc.call("eth_getTransactionByHash", json!([tx.txid])).await.unwrap();
    assert_eq!(sent["from"].as_str().unwrap().parse::<EthAddress>().unwrap(), relayer.address());
    assert_eq!(sent["to"].as_str().unwrap().parse::<EthAddress>().unwrap(), safe);
    assert_eq!((sent["type"].as_str(), sent["value"].as_str()), (Some("0x2"), Some("0x0")));
    assert!(!unlocked.contains(&tx.from));
    // The relayer paid the gas and only the gas, within the intent's fee cap.
    let relayer_after = rpc.balance(&relayer_addr(&chain, &relayer), None).await.unwrap();
    assert_eq!(relayer_before.base_units() - relayer_after.base_units(), tx.fee_paid_wei);
    assert!(tx.fee_paid_wei <= fee_cap);
    let after = rpc.balance(&dest, None).await.unwrap().base_units();
    assert_eq!(after - before, 3 * ETH / 2);
    let safe_addr = Address::parse(&chain, &safe_text).unwrap();
    assert_eq!(rpc.balance(&safe_addr, None).await.unwrap().base_units(), 5 * ETH - 3 * ETH / 2);
    assert_eq!(U256::from_be_slice(&eth_call(&rpc, safe, nonce_calldata()).await), U256::from(1));
    // The same signatures cannot be replayed: the nonce moved on, the node's simulation
    // fails and the relayer sends nothing.
    let e = safe_node::execute(&rpc, &relayer, safe, data.clone(), fee_cap).await.unwrap_err();
    assert!(matches!(e, RelayError::WouldFail(_)), "{e}");

    // Bybit: the approvers approved "send 0.001 ETH to DEST"; the bundle's Safe transaction
    // is a delegatecall to another contract. The offline signer refuses it.
    let small: &'static Intent = Box::leak(Box::new(intent(ETH / 1000, 2, now)));
    let approvals = leak(vec![approve("ann", 3, small, now), approve("ops", 4, small, now)]);
    let honest = prepare_safe(safe, 1, &request(small, approvals), &env).unwrap();
    let Payload::SafeTransaction(honest_payload) = &honest.transaction else {
        panic!("a Safe bundle")
    };
    let refused = |b: &Bundle, why: &str| {
        let code = refused_offline(dir.path(), &homes[0], &passes[0], b, true, why);
        assert_eq!(code, Some(1), "a refused bundle is a finding (exit 1)");
    };
    let attacker = EthAddress::repeat_byte(0x96);
    let mut bybit = honest_payload.clone();
    bybit.to = attacker.to_checksum(None);
    bybit.value = "0".into();
    bybit.operation = DELEGATECALL;
    // `transfer(attacker, 0)` — the call data a wallet UI would show as a harmless transfer.
    bybit.data = format!(
        "0xa9059cbb{}{}",
        hex::encode([0u8; 12]) + &hex::encode(attacker),
        hex::encode([0u8; 32])
    );
    let mut evil = honest.clone();
    evil.transaction = Payload::SafeTransaction(bybit);
    refused(&evil, "DELEGATECALL");
    // An owner swap dressed as the same approval.
    let mut swap = honest_payload.clone();
    swap.to = safe_text.clone();
    swap.value = "0".into();
    swap.data = format!(
        "0x{}",
        hex::encode(
            ISafe::addOwnerWithThresholdCall { owner: attacker, _threshold: U256::from(1) }
                .abi_encode()
        )
    );
    let mut evil = honest.clone();
    evil.transaction = Payload::SafeTransaction(swap);
    refused(&evil, "calls the Safe itself: addOwnerWithThreshold");
    // A gas refund to the executor, paid by the Safe.
    let mut refund = honest_payload.clone();
    refund.gas_price = "1000000000000".into();
    refund.refund_receiver = attacker.to_checksum(None);
    let mut evil = honest.clone();
    evil.transaction = Payload::SafeTransaction(refund);
    refused(&evil, "gas refund");
    // More than approved.
    let mut more = honest_payload.clone();
    more.value = (ETH).to_string();
    let mut evil = honest.clone();
    evil.transaction = Payload::SafeTransaction(more);
    refused(&evil, "value");
    // Another Safe than the one installed.
    let mut other = honest_payload.clone();
    other.safe = attacker.to_checksum(None);
    let mut evil = honest.clone();
    evil.transaction = Payload::SafeTransaction(other);
    refused(&evil, "is Safe");
    // A forged signature in a returned bundle is caught online too.
    let mut forged: SafePayload = match &signed[0].transaction {
        Payload::SafeTransaction(p) => p.clone(),
        _ => unreachable!(),
    };
    forged.signatures[0].owner = owners[0].clone();
    let mut fb = signed[0].clone();
    fb.transaction = Payload::SafeTransaction(forged);
    let err = finalize_safe(&[fb, signed[1].clone()], &owner_addrs, 2).unwrap_err();
    assert!(err.to_string().contains("is by"), "{err}");
    node.stop().await;
}

/// A whitelist entry back-dated by its proposers looks usable to the online side, which
/// makes the bundle; the offline signer runs the time-lock from when it first saw the entry
/// and refuses until it has run out on its own clock.
#[test]
fn the_offline_signer_runs_time_locks_from_when_it_first_saw_the_entry() {
    use strongroom_governance::log::{Change, Genesis, MemberSpec, WhitelistScope};
    use strongroom_governance::policy::Policy;
    const DAY: i64 = 86_400_000;
    let now = SystemEnv::new().now();
    let at = |ms: i64| Timestamp::from_unix_ms(now.unix_ms() + ms);
    let env = strongroom_core::FixedEnv::new(now, 7);
    let member = |id: &str, n: u8, role: Role| MemberSpec {
        id: id.into(),
        public_key: hex::encode(support::key(n).verifying_key().to_bytes()),
        roles: vec![role],
        passkey: None,
    };
    let genesis = Genesis {
        members: vec![member("ada", 1, Role::Admin), member("bob", 2, Role::Admin)],
        quorum: 2,
        whitelist_delay_ms: DAY,
        created_at: at(-3 * DAY),
        assets: vec![strongroom_governance::log::AssetSpec {
            chain: CHAIN.into(),
            symbol: "ETH".into(),
            decimals: 18,
            contract: None,
        }],
    };
    let pin = hex::encode(genesis.hash().unwrap());
    let policy = Policy::from_toml(
        "version = 1\n[[rules]]\nname = \"to-our-own\"\nwhen = { tier = \"cold\", destinations = [\"internal\"] }\naction = { kind = \"allow\" }\n[[rules]]\nname = \"rest\"\naction = { kind = \"block\", reason = \"cold moves only to our own wallets\" }\n",
    )
    .unwrap();
    let scope = WhitelistScope::Internal { chain: CHAIN.into() };
    let mut log = Vec::new();
    for (change, when) in [
        (Change::SetPolicy { policy }, -3 * DAY + 60_000),
        (Change::WhitelistAdd { scope, address: DEST.into(), label: "hot".into() }, -2 * DAY),
    ] {
        let state = replay(&genesis, &pin, &log, now).unwrap();
        let mut e = state.propose(change, at(when));
        e.sign("ada", &support::key(1)).unwrap();
        e.sign("bob", &support::key(2)).unwrap();
        log.push(e);
    }
    // Online, by the entries' own times, the address is usable: the bundle is made.
    let state = replay(&genesis, &pin, &log, now).unwrap();
    let mut i = intent(ETH, 9, now);
    i.expires_at = at(3 * DAY);
    let moved = |_: &VelocityLimit| Amount::ZERO;
    let req = Request {
        intent: &i,
        initiator: "eve",
        initiator_role: Role::Operator,
        approvals: &[],
        log: &log,
        state: &state,
        moved: &moved,
    };
    let safe: EthAddress = "0xdbF03B407c01E7cD3CBea99509d93f8DDDC8C6FB".parse().unwrap();
    let bundle = prepare_safe(safe, 0, &req, &env).unwrap();

    // Offline, the signer sees the entry for the first time now.
    let dir = tempfile::tempdir().unwrap();
    let secret = strongroom_chain_bitcoin::keys::ColdSecret::generate(&env);
    let pass = strongroom_crypto::SecretString::new("a passphrase for the test".into());
    let home = dir.path().join("home");
    let chain = ChainId::parse(CHAIN).unwrap();
    let mut h =
        strongroom_cold::home::ColdHome::create(&home, &secret, &pass, chain, genesis, &pin, &env)
            .unwrap();
    let mine = strongroom_cold::home::owner_address(&secret).unwrap().to_checksum(None);
    let owners = [mine, DEST.into(), "0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC".into()];
    h.install_safe(WalletId::parse("cold-eth-1").unwrap(), &safe.to_checksum(None), &owners, 2)
        .unwrap();
    let err = h.review(&bundle, now).unwrap_err().to_string();
    assert!(err.contains("time-lock runs until"), "{err}");
    // Reopened, it remembers when it first saw the entry: still refused an hour later.
    let mut h = strongroom_cold::home::ColdHome::open(&home, at(3_600_000)).unwrap();
    let err = h.review(&bundle, at(3_600_000)).unwrap_err().to_string();
    assert!(err.contains("time-lock runs until"), "{err}");
    // A day later on its own clock, the same bundle passes the governance check.
    let mut h = strongroom_cold::home::ColdHome::open(&home, at(DAY + 60_000)).unwrap();
    let review = h.review(&bundle, at(DAY + 60_000)).unwrap();
    assert!(review.decision.contains("to-our-own"), "{}", review.decision);
}
