//! Key lifecycle through real `strongroom-signer` processes (issue "Incident response"): a
//! node is quarantined by a governance entry pushed to one node only; the others refuse every
//! session that includes it and every frame from its certificate, and drop presignatures made
//! with it; the orchestrator is played by the test, speaking the wire protocol itself. The
//! FROST key is refreshed without the quarantined node, a new node is enrolled, and a stolen
//! copy of a share from before the refresh no longer signs.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)] // Test code.
#![allow(clippy::disallowed_methods)] // Waits on the real clock for the mesh.

use std::path::Path;
use std::time::Duration;

use ed25519_dalek::SigningKey;
use strongroom_core::{Env, SystemEnv, Timestamp};
use strongroom_governance::log::{replay, Change, Entry, Genesis, MemberSpec};
use strongroom_governance::policy::Policy;
use strongroom_governance::Role;
use strongroom_signer::wire::{self, Frame, Reason, Request, Scheme};
use strongroom_signer::Orchestrator;

mod common;
use common::*;

fn key(n: u8) -> SigningKey {
    SigningKey::from_bytes(&[n; 32])
}

/// Admins ada and bob (quorum 2), security officer sam.
fn genesis(now: i64) -> Genesis {
    let m = |id: &str, n: u8, r: Role| MemberSpec {
        id: id.into(),
        public_key: hex::encode(key(n).verifying_key().to_bytes()),
        roles: vec![r],
        passkey: None,
    };
    Genesis {
        members: vec![
            m("ada", 1, Role::Admin),
            m("bob", 2, Role::Admin),
            m("sam", 5, Role::SecurityOfficer),
        ],
        quorum: 2,
        whitelist_delay_ms: 86_400_000,
        created_at: Timestamp::from_unix_ms(now - 60_000),
        assets: vec![],
    }
}

/// `log` grown by `change`, signed by the members named.
fn grow(g: &Genesis, log: &mut Vec<Entry>, change: Change, by: &[(&str, u8)]) {
    let pin = hex::encode(g.hash().unwrap());
    let state = replay(g, &pin, log, Timestamp::from_unix_ms(i64::MAX)).unwrap();
    let mut e = state.propose(change, SystemEnv::new().now());
    for (who, n) in by {
        e.sign(who, &key(*n)).unwrap();
    }
    log.push(e);
}

fn proof(log: &[Entry]) -> wire::SignRequest {
    let mut r = proof_request(b"lifecycle challenge 0123456789");
    r.governance = log.to_vec();
    r
}

fn audit_of(dir: &Path, node: u16) -> String {
    let path = dir.join(format!("signers/signer-{node}/data/audit.jsonl"));
    strongroom_signer::nodelog::verify(&path).unwrap();
    std::fs::read_to_string(path).unwrap()
}

/// `n` signer processes pinning `g` under `dir` (logs in `dir/signer-N.log`), all up.
async fn governed(
    dir: &Path,
    g: &Genesis,
    n: u16,
) -> (strongroom_signer::cluster::Cluster, Vec<Proc>, Orchestrator) {
    let genesis_file = dir.join("genesis.json");
    std::fs::write(&genesis_file, serde_json::to_vec(g).unwrap()).unwrap();
    let pin = hex::encode(g.hash().unwrap());
    let (cl, _, _) = prepare_n(dir, Some((genesis_file, pin)), n);
    let procs = cl.configs.iter().zip(1u16..).map(|(c, i)| start(c, &log_file(dir, i))).collect();
    let orch = Orchestrator::new(cl.nodes.clone(), cl.orchestrator_credentials().unwrap());
    wait_live(&orch, usize::from(n)).await;
    (cl, procs, orch)
}

fn log_file(dir: &Path, node: u16) -> std::path::PathBuf {
    dir.join(format!("signer-{node}.log"))
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        let target = to.join(e.file_name());
        if e.path().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), &target).unwrap();
        }
    }
}

async fn until(what: &str, mut ok: impl AsyncFnMut() -> bool) {
    for _ in 0..200 {
        if ok().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quarantined_node_is_refused_then_refreshed_out_and_a_new_node_enrolled() {
    let tmp = tempfile::tempdir().unwrap();
    let now = SystemEnv::new().now().unix_ms();
    let g = genesis(now);
    // Four nodes configured; the keys are made by 1, 2 and 3. Node 4 is the spare.
    let (cl, mut procs, orch) = governed(tmp.path(), &g, 4).await;
    let log_file = |i: u16| log_file(tmp.path(), i);

    let mut log = Vec::new();
    let policy = Policy::from_toml(
        r#"
version = 1
messages = ["proof_of_control"]
[[rules]]
name = "none"
action = { kind = "block", reason = "proofs of control only" }
"#,
    )
    .unwrap();
    grow(&g, &mut log, Change::SetPolicy { policy }, &[("ada", 1), ("bob", 2)]);

    orch.aux_info(eid("aux"), &[1, 2, 3]).await.unwrap();
    let ecdsa = orch.keygen(eid("kg"), "hot-eth-1", Scheme::Ecdsa, &[1, 2, 3], 2).await.unwrap();
    let frost =
        orch.keygen(eid("kg"), "hot-btc-1", Scheme::FrostTaproot, &[1, 2, 3], 2).await.unwrap();
    // Before the incident node 3 signs, and a presignature with it waits in the pools.
    let s = orch.sign(eid("sign"), &frost, &[1, 3], None, &proof(&log)).await.unwrap();
    verify_bip340(&s.public_key, &s.signed_bytes, &s.signature);
    orch.presign(eid("ps"), "hot-eth-1", &[1, 3]).await.unwrap();
    let pooled = |st: &wire::NodeStatus, set: &[u16]| {
        st.presignatures.iter().filter(|e| e.signers == set).map(|e| e.ids.len()).sum::<usize>()
    };
    assert_eq!(pooled(&orch.status(1).await.unwrap(), &[1, 3]), 1);

    // The alarm: the security officer alone quarantines node 3, pushing the entry to node 1
    // only, past the orchestrator (which will go on offering the log without it).
    let before_quarantine = log.clone();
    grow(
        &g,
        &mut log,
        Change::QuarantineNode { node: 3, reason: Some("host compromised".into()) },
        &[("sam", 5)],
    );
    let node1 = cl.nodes.iter().filter(|n| n.id == 1).cloned().collect();
    let pusher = Orchestrator::new(node1, cl.pusher_credentials().unwrap());
    let pushed = pusher.push_governance(&log, Duration::from_secs(10)).await;
    assert!(pushed.iter().all(|(_, r)| r.is_ok()), "{pushed:?}");
    // Node 2 learns it over the mesh; node 1 dropped the presignature with node 3.
    until("node 2 to learn of the quarantine", async || {
        orch.status(2).await.is_ok_and(|s| s.quarantined == [3])
    })
    .await;
    let st1 = orch.status(1).await.unwrap();
    assert_eq!((st1.quarantined.as_slice(), pooled(&st1, &[1, 3])), ([3].as_slice(), 0));
    assert!(audit_of(tmp.path(), 1).contains("presig.discarded"));

    // Everything that includes node 3 is refused by the honest node in it, typed, even with
    // the log that lacks the entry.
    let quarantined = |r: &wire::Refusal, node: u16| {
        assert_eq!(r.node, node, "{r:?}");
        assert!(
            matches!(&r.reason, Reason::Quarantined { nodes, seq: 2 } if nodes == &[3]),
            "{r:?}"
        );
    };
    let r = orch
        .sign(eid("sign"), &frost, &[1, 3], None, &proof(&before_quarantine))
        .await
        .unwrap_err();
    quarantined(&r, 1);
    let r = orch.sign(eid("sign"), &frost, &[2, 3], None, &proof(&log)).await.unwrap_err();
    quarantined(&r, 2);
    let r = orch.presign(eid("ps"), "hot-eth-1", &[1, 3]).await.unwrap_err();
    assert!(matches!(r.reason, Reason::Quarantined { .. }), "{r:?}");
    let r = orch.refresh(eid("refresh"), &frost, &[1, 2, 3]).await.unwrap_err();
    assert!(matches!(r.reason, Reason::Quarantined { .. }), "{r:?}");
    let r = orch.enrol(eid("enrol"), &frost, 3).await.unwrap_err();
    assert!(matches!(r.reason, Reason::Quarantined { .. } | Reason::BadRequest { .. }), "{r:?}");
    // Node 3's own certificate is no longer heard: node 1 closes on its first frame.
    let mut as3 = impersonate(&cl, 3, 1).await;
    let head = orch.status(1).await.unwrap().governance.unwrap();
    let ask =
        Frame::Control(wire::Control::Request { id: 1, body: Request::Mesh { head, since: 0 } });
    wire::write_frame(&mut as3, &ask).await.unwrap();
    let mut rd = tokio::io::BufReader::new(as3);
    let answer = tokio::time::timeout(Duration::from_secs(5), wire::read_frame(&mut rd)).await;
    assert!(matches!(answer, Ok(Ok(None)) | Ok(Err(_))), "node 1 answered node 3: {answer:?}");
    until("node 1 to audit node 3's frame", async || {
        audit_of(tmp.path(), 1).contains("peer.refused")
    })
    .await;
    // The orchestrator cannot shrink the group by leaving out a node not quarantined.
    let r = orch.refresh(eid("refresh"), &frost, &[1, 3]).await.unwrap_err();
    assert!(matches!(r.reason, Reason::BadRequest { .. } | Reason::Quarantined { .. }), "{r:?}");

    // Nodes 1 and 2 still sign, ECDSA and FROST.
    let p = orch.presign(eid("ps"), "hot-eth-1", &[1, 2]).await.unwrap();
    let s = orch.sign(eid("sign"), &ecdsa, &[1, 2], Some(&p), &proof(&log)).await.unwrap();
    verify_ecdsa(&s.public_key, &s.signed_bytes, &s.signature);
    let s = orch.sign(eid("sign"), &frost, &[1, 2], None, &proof(&log)).await.unwrap();
    verify_bip340(&s.public_key, &s.signed_bytes, &s.signature);

    // Someone copied node 1's data (its sealed share and its key-encryption key) before the
    // refresh.
    let stolen = tmp.path().join("stolen-signer-1");
    copy_dir(&tmp.path().join("signers/signer-1/data"), &stolen);

    // Refresh without node 3: same group key, parties 1 and 2.
    let refreshed = orch.refresh(eid("refresh"), &frost, &[1, 2]).await.unwrap();
    assert_eq!(
        (refreshed.parties.as_slice(), &refreshed.public_key),
        ([1, 2].as_slice(), &frost.public_key)
    );
    assert!(audit_of(tmp.path(), 2).contains("key.refreshed"));

    // Node 4 joins: its share is built by 1 and 2, checked against the verifying share each
    // computes for it; it then signs with either.
    let grown = orch.enrol(eid("enrol"), &refreshed, 4).await.unwrap();
    assert_eq!(
        (grown.parties.as_slice(), &grown.public_key),
        ([1, 2, 4].as_slice(), &frost.public_key)
    );
    for n in [1, 2, 4] {
        let k = orch.status(n).await.unwrap().keys.into_iter().find(|k| k.key_id == "hot-btc-1");
        assert_eq!(k.unwrap().parties, vec![1, 2, 4], "node {n}");
    }
    for pair in [[1, 4], [2, 4]] {
        let s = orch.sign(eid("sign"), &grown, &pair, None, &proof(&log)).await.unwrap();
        assert_eq!(hex::encode(&s.public_key), frost.public_key);
        verify_bip340(&s.public_key, &s.signed_bytes, &s.signature);
    }

    // ECDSA shares cannot be refreshed: the funds move to a new key made among 1, 2 and 4,
    // with auxiliary info made for that set (node 4 had none; nodes 1 and 2 keep theirs for
    // 1..3 beside it). Auxiliary info that includes node 3 is refused.
    let r = orch.aux_info(eid("aux"), &[1, 3, 4]).await.unwrap_err();
    assert!(matches!(r.reason, Reason::Quarantined { .. }), "{r:?}");
    orch.aux_info(eid("aux"), &[1, 2, 4]).await.unwrap();
    assert!(audit_of(tmp.path(), 4).contains("aux.ready"));
    let fresh = orch.keygen(eid("kg"), "hot-eth-2", Scheme::Ecdsa, &[1, 2, 4], 2).await.unwrap();
    assert_eq!(fresh.parties, vec![1, 2, 4]);
    for pair in [[1, 4], [2, 4], [1, 2]] {
        let p = orch.presign(eid("ps"), "hot-eth-2", &pair).await.unwrap();
        let s = orch.sign(eid("sign"), &fresh, &pair, Some(&p), &proof(&log)).await.unwrap();
        assert_eq!(hex::encode(&s.public_key), fresh.public_key, "{pair:?}");
        verify_ecdsa(&s.public_key, &s.signed_bytes, &s.signature);
    }
    // The old key still signs among 1 and 2 until its funds have moved.
    let p = orch.presign(eid("ps"), "hot-eth-1", &[1, 2]).await.unwrap();
    let s = orch.sign(eid("sign"), &ecdsa, &[1, 2], Some(&p), &proof(&log)).await.unwrap();
    verify_ecdsa(&s.public_key, &s.signed_bytes, &s.signature);

    // The stolen copy, run as node 1, no longer signs with node 2: its share is from before
    // the refresh.
    drop(procs.remove(0));
    let data = tmp.path().join("signers/signer-1/data");
    std::fs::rename(&data, tmp.path().join("signer-1-current")).unwrap();
    copy_dir(&stolen, &data);
    procs.insert(0, start(&cl.configs[0], &log_file(1)));
    until("the stolen node 1 to answer", async || orch.status(1).await.is_ok()).await;
    let r = orch.sign(eid("sign"), &frost, &[1, 2], None, &proof(&log)).await.unwrap_err();
    assert!(matches!(r.reason, Reason::Culprit { .. }), "the old share signed: {r:?}");
    drop(procs);
}

/// Issue "Incident response": a node whose key-encryption key lives in a token (SoftHSM2,
/// through PKCS#11) seals its shares under it and signs; without the token, or with a wrong
/// PIN, it refuses to start; with it back, it signs again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_seals_under_a_key_in_its_token_and_will_not_start_without_it() {
    use strongroom_hsm::{softhsm, Pkcs11Config};
    let Some(module) = softhsm::module() else {
        assert!(
            std::env::var("STRONGROOM_REQUIRE_SOFTHSM").is_err(),
            "SoftHSM2 is required (scripts/install-softhsm-for-tests)"
        );
        eprintln!("SoftHSM2 is not installed: skipping");
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let conf = softhsm::init_token(&tmp.path().join("hsm"), "node-1", "4321").unwrap();
    let cfg = Pkcs11Config {
        module: module.clone(),
        token: "node-1".into(),
        key: "kek".into(),
        pin_env: "NODE_1_PIN".into(),
    };
    // The operator creates the key in the token (what `strongroom keys hsm-init` does), from
    // a process of its own so this one never loads the module.
    let status = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "create_key_in_token", "--ignored", "--nocapture"])
        .env("SOFTHSM2_CONF", &conf)
        .env("HSM_TEST_MODULE", &module)
        .status()
        .unwrap();
    assert!(status.success());

    let (cl, _, _) = prepare(tmp.path(), None);
    let config = std::fs::read_to_string(&cl.configs[0]).unwrap();
    let kek_line = config.lines().find(|l| l.starts_with("kek_file")).unwrap().to_owned();
    let with_token = |token: &str| {
        config.replace(
            &kek_line,
            &format!(
                "kek_pkcs11 = {{ module = {:?}, token = {token:?}, key = \"kek\", pin_env = \"NODE_1_PIN\" }}",
                cfg.module
            ),
        )
    };
    let run1 = |pin: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_strongroom-signer"))
            .arg("--config")
            .arg(&cl.configs[0])
            .env("SOFTHSM2_CONF", &conf)
            .env("NODE_1_PIN", pin)
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(tmp.path().join("signer-1.log")).unwrap())
            .spawn()
            .unwrap()
    };
    std::fs::write(&cl.configs[0], with_token("node-1")).unwrap();
    let mut procs = vec![Proc { child: run1("4321") }];
    for i in [1usize, 2] {
        procs.push(start(&cl.configs[i], &tmp.path().join(format!("signer-{}.log", i + 1))));
    }
    let orch = Orchestrator::new(cl.nodes.clone(), cl.orchestrator_credentials().unwrap());
    wait_live(&orch, 3).await;
    let key =
        orch.keygen(eid("kg"), "hot-btc-1", Scheme::FrostTaproot, &[1, 2, 3], 2).await.unwrap();
    let s = orch.sign(eid("sign"), &key, &[1, 2], None, &proof(&[])).await.unwrap();
    verify_bip340(&s.public_key, &s.signed_bytes, &s.signature);
    // The share on node 1's disk names the token's key, not a file's.
    let sealed =
        std::fs::read(tmp.path().join("signers/signer-1/data/keys/hot-btc-1.sealed")).unwrap();
    assert!(String::from_utf8_lossy(&sealed).contains("p11-"), "sealed under the token's key");

    // Stop node 1. The token unplugged (another label), or a wrong PIN: it does not start.
    drop(procs.remove(0));
    for (token, pin, why) in
        [("node-1-gone", "4321", "no token labelled"), ("node-1", "0000", "refused the login")]
    {
        std::fs::write(&cl.configs[0], with_token(token)).unwrap();
        let mut child = run1(pin);
        let code = tokio::time::timeout(Duration::from_secs(20), async {
            loop {
                if let Some(s) = child.try_wait().unwrap() {
                    return s;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await
        .expect("the node kept running without its key-encryption key");
        assert!(!code.success());
        let log = std::fs::read_to_string(tmp.path().join("signer-1.log")).unwrap();
        assert!(log.contains(why), "{log}");
    }
    // The token back: node 1 opens its share again and signs.
    std::fs::write(&cl.configs[0], with_token("node-1")).unwrap();
    procs.insert(0, Proc { child: run1("4321") });
    wait_live(&orch, 3).await;
    let s = orch.sign(eid("sign"), &key, &[1, 3], None, &proof(&[])).await.unwrap();
    verify_bip340(&s.public_key, &s.signed_bytes, &s.signature);
}

/// Run by the test above in a process of its own (SoftHSM2 reads its configuration once per
/// process): create the key-encryption key in the token.
#[test]
#[ignore = "a helper the PKCS#11 test runs in its own process"]
fn create_key_in_token() {
    use strongroom_hsm::{Pkcs11Config, Pkcs11Kek};
    let cfg = Pkcs11Config {
        module: std::env::var_os("HSM_TEST_MODULE").unwrap().into(),
        token: "node-1".into(),
        key: "kek".into(),
        pin_env: "UNUSED".into(),
    };
    Pkcs11Kek::create(&cfg, &strongroom_crypto::SecretString::new("4321".into())).unwrap();
}

/// Issue "Incident response": an ECDSA key cannot be refreshed, so governance moves its funds
/// to a new key. Once the quorum's `migrate_key` entry is in the log the nodes let the old
/// key, and its deposit addresses, pay only the new key's address (as an internal movement:
/// no approvals, no velocity beyond its fee), and nothing else; once one admin retires it,
/// its own address signs nothing again while its deposit addresses still sweep into the new
/// key; the new key signs as the old one did.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ecdsa_key_moves_to_a_new_key_then_is_retired() {
    use strongroom_chain::TxCodec;
    use strongroom_chain_ethereum::{EthCodec, EthParams};
    use strongroom_core::{Intent, IntentAsset, WalletId};
    use strongroom_governance::policy::Block;
    use strongroom_units::{Address, Amount, AssetSymbol, ChainId};

    const ETH: u128 = 1_000_000_000_000_000_000;
    const ALICE: &str = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8";
    let tmp = tempfile::tempdir().unwrap();
    let now = SystemEnv::new().now().unix_ms();
    let mut g = genesis(now);
    g.assets.push(strongroom_governance::log::AssetSpec {
        chain: "eip155:31337".into(),
        symbol: "ETH".into(),
        decimals: 18,
        contract: None,
    });
    let (_cl, _procs, orch) = governed(tmp.path(), &g, 3).await;
    let mut log = Vec::new();
    let policy = Policy::from_toml(
        r#"
version = 1
[[rules]]
name = "internal"
when = { destinations = ["internal"] }
action = { kind = "allow" }
[[rules]]
name = "small"
when = { max_amount = "1000000000000000000" }
action = { kind = "allow" }
[[rules]]
name = "large"
action = { kind = "approvals", count = 2, roles = ["approver"] }
[[fees]]
chain = "eip155:31337"
fee_asset = "ETH"
max_fee = "2000000000000000"
[[velocity]]
name = "daily"
asset = "ETH"
period_secs = 86400
max_amount = "2000000000000000000"
"#,
    )
    .unwrap();
    grow(&g, &mut log, Change::SetPolicy { policy }, &[("ada", 1), ("bob", 2)]);
    orch.aux_info(eid("aux"), &[1, 2, 3]).await.unwrap();
    let old = orch.keygen(eid("kg"), "hot-eth-1", Scheme::Ecdsa, &[1, 2, 3], 2).await.unwrap();
    let new = orch.keygen(eid("kg"), "hot-eth-2", Scheme::Ecdsa, &[1, 2, 3], 2).await.unwrap();
    let chain = ChainId::parse("eip155:31337").unwrap();
    let codec = EthCodec::new(chain.clone()).unwrap();
    let address =
        |k: &wire::KeyInfo| codec.address_of(&hex::decode(&k.public_key).unwrap()).unwrap();
    let (old_home, new_home) = (address(&old), address(&new));

    let far = now + 3_600_000;
    let mut nonce = 0;
    let mut request =
        |key: &wire::KeyInfo, to: &Address, amount: u128, path: Vec<u32>, log: &[Entry]| {
            let mut id = [0u8; 16];
            SystemEnv::new().fill_random(&mut id);
            let intent = Intent {
                chain: chain.clone(),
                asset: IntentAsset {
                    symbol: AssetSymbol::parse("ETH").unwrap(),
                    decimals: 18,
                    contract: None,
                },
                source_wallet: WalletId::parse(&key.key_id).unwrap(),
                destination: to.clone(),
                amount: Amount::from_base_units(amount).unwrap(),
                fee_cap: Amount::from_base_units(21_000 * 50_000_000_000).unwrap(),
                expires_at: Timestamp::from_unix_ms(far),
                request_id: uuid::Uuid::from_bytes(id),
            };
            nonce += 1;
            let params = EthParams {
                nonce,
                gas_limit: 21_000,
                max_fee_per_gas: 50_000_000_000,
                max_priority_fee_per_gas: 1_000_000_000,
            };
            wire::SignRequest {
                intent: hex::encode(intent.encode().unwrap()),
                format: wire::TxFormat::Eip1559,
                tx: hex::encode(codec.build(&intent, &params).unwrap()),
                path,
                governance: log.to_vec(),
                ..Default::default()
            }
        };
    let sign = async |key: &wire::KeyInfo, req: wire::SignRequest| {
        let p = orch.presign(eid("ps"), &key.key_id, &[1, 2]).await?;
        orch.sign(eid("sign"), key, &[1, 2], Some(&p), &req).await
    };
    let alice = Address::parse(&chain, ALICE).unwrap();

    // Before: the old key pays a customer as usual.
    let s = sign(&old, request(&old, &alice, ETH / 2, vec![], &log)).await.unwrap();
    verify_ecdsa(&s.public_key, &s.signed_bytes, &s.signature);

    // One admin cannot start a migration; the quorum can.
    grow(
        &g,
        &mut log,
        Change::MigrateKey {
            from: "hot-eth-1".into(),
            to: "hot-eth-2".into(),
            to_public_key: new.public_key.clone(),
        },
        &[("ada", 1), ("bob", 2)],
    );
    // The old key now pays no customer…
    let r = sign(&old, request(&old, &alice, ETH / 2, vec![], &log)).await.unwrap_err();
    assert!(
        matches!(&r.reason, Reason::Blocked { rule, block: Block::KeyMigrating { to, address, .. }, .. }
            if rule == "migration" && to == "hot-eth-2" && address == new_home.as_str()),
        "{r:?}"
    );
    // …and not even its own address (its deposit addresses neither).
    let r = sign(&old, request(&old, &old_home, ETH, vec![], &log)).await.unwrap_err();
    assert!(
        matches!(&r.reason, Reason::Blocked { block: Block::KeyMigrating { .. }, .. }),
        "{r:?}"
    );
    let r = sign(&old, request(&old, &old_home, ETH, vec![0, 7], &log)).await.unwrap_err();
    assert!(
        matches!(&r.reason, Reason::Blocked { block: Block::KeyMigrating { .. }, .. }),
        "{r:?}"
    );
    // The whole balance to the new key: internal, so no approvals and no velocity limit
    // (50 ETH against a 2 ETH daily limit), from the wallet and from a deposit address.
    let s = sign(&old, request(&old, &new_home, 50 * ETH, vec![], &log)).await.unwrap();
    verify_ecdsa(&s.public_key, &s.signed_bytes, &s.signature);
    let s = sign(&old, request(&old, &new_home, 3 * ETH, vec![0, 7], &log)).await.unwrap();
    verify_ecdsa(&s.public_key, &s.signed_bytes, &s.signature);
    // The new key signs as the old one did (a customer payment within the limit).
    let s = sign(&new, request(&new, &alice, ETH / 2, vec![], &log)).await.unwrap();
    verify_ecdsa(&s.public_key, &s.signed_bytes, &s.signature);

    // Retired by one admin: the old key's own address signs nothing, not even the sweep it
    // signed before; its deposit addresses, which customers may still pay, keep sweeping
    // into the new key and nowhere else; the new key goes on.
    grow(&g, &mut log, Change::RetireKey { key: "hot-eth-1".into() }, &[("ada", 1)]);
    let r = sign(&old, request(&old, &new_home, ETH, vec![], &log)).await.unwrap_err();
    assert!(matches!(&r.reason, Reason::KeyRetired { key, seq: 3 } if key == "hot-eth-1"), "{r:?}");
    let s = sign(&old, request(&old, &new_home, 2 * ETH, vec![0, 7], &log)).await.unwrap();
    verify_ecdsa(&s.public_key, &s.signed_bytes, &s.signature);
    let r = sign(&old, request(&old, &alice, ETH / 4, vec![0, 7], &log)).await.unwrap_err();
    assert!(
        matches!(&r.reason, Reason::ChildKeyPaysOut { destination, .. } if destination == ALICE),
        "{r:?}"
    );
    let s = sign(&new, request(&new, &alice, ETH / 4, vec![], &log)).await.unwrap();
    verify_ecdsa(&s.public_key, &s.signed_bytes, &s.signature);
    // A key retired without a migration is used for nothing, not even a presignature.
    let spare = orch.keygen(eid("kg"), "hot-eth-3", Scheme::Ecdsa, &[1, 2, 3], 2).await.unwrap();
    grow(&g, &mut log, Change::RetireKey { key: "hot-eth-3".into() }, &[("bob", 2)]);
    let r = sign(&spare, request(&spare, &alice, ETH / 4, vec![], &log)).await.unwrap_err();
    assert!(matches!(&r.reason, Reason::KeyRetired { key, seq: 4 } if key == "hot-eth-3"), "{r:?}");
    let r = orch.presign(eid("ps"), "hot-eth-3", &[1, 3]).await.unwrap_err();
    assert!(matches!(&r.reason, Reason::KeyRetired { .. }), "{r:?}");
}

/// Issue "Incident response": node 2's host is lost. Its sealed backup (taken with the node
/// stopped) is restored onto a fresh host with a new key-encryption key: the shares are
/// re-sealed under it, the same certificate is back so the other nodes' pins accept the
/// node, and it signs again, FROST and ECDSA. A wrong passphrase, a tampered file, another
/// node's configuration or a folder that holds keys are refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_node_is_restored_from_its_sealed_backup_onto_a_fresh_host() {
    use strongroom_crypto::SecretString;
    use strongroom_signer::backup::{self, BackupError};

    let tmp = tempfile::tempdir().unwrap();
    let now = SystemEnv::new().now().unix_ms();
    let g = genesis(now);
    let (cl, mut procs, orch) = governed(tmp.path(), &g, 3).await;
    let log_file = |i: u16| log_file(tmp.path(), i);
    let mut log = Vec::new();
    let policy = Policy::from_toml(
        "version = 1\nmessages = [\"proof_of_control\"]\n[[rules]]\nname = \"none\"\naction = { kind = \"block\", reason = \"proofs only\" }\n",
    )
    .unwrap();
    grow(&g, &mut log, Change::SetPolicy { policy }, &[("ada", 1), ("bob", 2)]);
    orch.aux_info(eid("aux"), &[1, 2, 3]).await.unwrap();
    let ecdsa = orch.keygen(eid("kg"), "hot-eth-1", Scheme::Ecdsa, &[1, 2, 3], 2).await.unwrap();
    let frost =
        orch.keygen(eid("kg"), "hot-btc-1", Scheme::FrostTaproot, &[1, 2, 3], 2).await.unwrap();
    orch.sign(eid("sign"), &frost, &[1, 2], None, &proof(&log)).await.unwrap();

    // The backup, with node 2 stopped.
    drop(procs.remove(1));
    let read = |p: &Path| -> strongroom_signer::Config {
        toml::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
    };
    let cfg2 = read(&cl.configs[1]);
    let env = SystemEnv::new();
    let pass = SecretString::new("correct horse battery staple".into());
    let kek = strongroom_signer::node::load_kek(&cfg2).unwrap();
    let old_kek = kek.id().to_owned();
    let (sealed, summary) =
        backup::export(&cfg2, kek, backup::Sealing::Passphrase(&pass), &env).unwrap();
    assert_eq!((summary.node, summary.keys.len(), summary.aux), (2, 2, true));
    assert!(!sealed.contains("signing_share") && !sealed.contains("PRIVATE KEY"));

    // The host is gone: its data, its key-encryption key and its certificate with it.
    let home = tmp.path().join("signers/signer-2");
    std::fs::remove_dir_all(home.join("data")).unwrap();
    std::fs::remove_file(&cfg2.cert).unwrap();
    std::fs::remove_file(&cfg2.key).unwrap();
    let mut fresh = [0u8; 32];
    env.fill_random(&mut fresh);
    std::fs::write(cfg2.kek_file.as_ref().unwrap(), hex::encode(fresh)).unwrap();
    let new_kek = || strongroom_signer::node::load_kek(&cfg2).unwrap();
    assert_ne!(new_kek().id(), old_kek, "a fresh host has its own key-encryption key");

    // Refused: a wrong passphrase, a tampered backup, another node's configuration.
    let wrong = SecretString::new("not the passphrase at all".into());
    assert!(matches!(
        backup::restore(&cfg2, new_kek(), &sealed, backup::Unlock::Passphrase(&wrong), &env),
        Err(BackupError::Sealed(_))
    ));
    let mut tampered = sealed.clone();
    let last = tampered.pop().unwrap();
    tampered.push(if last == '0' { '1' } else { '0' });
    assert!(matches!(
        backup::restore(&cfg2, new_kek(), &tampered, backup::Unlock::Passphrase(&pass), &env),
        Err(BackupError::Sealed(_))
    ));
    let mut cfg3 = read(&cl.configs[2]);
    cfg3.data_dir = tmp.path().join("fresh-host-3");
    let k3 = strongroom_signer::node::load_kek(&cfg3).unwrap();
    assert!(matches!(
        backup::restore(&cfg3, k3, &sealed, backup::Unlock::Passphrase(&pass), &env),
        Err(BackupError::WrongNode { backup: 2, config: 3 })
    ));
    // Restored; a second restore onto the same folder is refused.
    let restored =
        backup::restore(&cfg2, new_kek(), &sealed, backup::Unlock::Passphrase(&pass), &env)
            .unwrap();
    assert_eq!(restored.keys, summary.keys);
    assert!(matches!(
        backup::restore(&cfg2, new_kek(), &sealed, backup::Unlock::Passphrase(&pass), &env),
        Err(BackupError::NotFresh(_))
    ));
    let share = std::fs::read(home.join("data/keys/hot-btc-1.sealed")).unwrap();
    let new_id = new_kek().id().to_owned();
    assert!(String::from_utf8_lossy(&share).contains(&new_id), "re-sealed under the new key");

    // Back in the group with the same pin: it signs, FROST and ECDSA.
    procs.insert(1, start(&cl.configs[1], &log_file(2)));
    wait_live(&orch, 3).await;
    let s = orch.sign(eid("sign"), &frost, &[2, 3], None, &proof(&log)).await.unwrap();
    verify_bip340(&s.public_key, &s.signed_bytes, &s.signature);
    let p = orch.presign(eid("ps"), "hot-eth-1", &[1, 2]).await.unwrap();
    let s = orch.sign(eid("sign"), &ecdsa, &[1, 2], Some(&p), &proof(&log)).await.unwrap();
    verify_ecdsa(&s.public_key, &s.signed_bytes, &s.signature);
    let audit = audit_of(tmp.path(), 2);
    assert!(audit.contains("node.restored"), "{audit}");
}
