//! Three `strongroom-signer` processes on loopback, driven by the orchestrator client over
//! pinned mutual TLS 1.3: auxiliary info, 2-of-3 ECDSA / FROST-Taproot / FROST-Ed25519 key
//! generation, signing checked by libsecp256k1, k256's BIP-340 and ed25519-dalek; a node's
//! own refusal; presignatures used once; a killed node; a node sending garbage; a replayed
//! message; and no share in plain text on disk or in the logs.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)] // Test code.
#![allow(clippy::disallowed_methods)] // Tests time fault handling with the real clock.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use sha3::Digest;
use strongroom_chain::TxCodec;
use strongroom_chain_ethereum::{EthCodec, EthParams};
use strongroom_core::{Env, Intent, IntentAsset, SystemEnv, Timestamp, WalletId};
use strongroom_signer::cluster::Cluster;
use strongroom_signer::tls::{self, Credentials};
use strongroom_signer::wire::{
    self, Frame, KeyInfo, Reason, Refusal, Request, Scheme, SignRequest, TxFormat,
};
use strongroom_signer::Orchestrator;
use strongroom_units::{Address, Amount, AssetSymbol, ChainId};

mod common;
use common::*;

fn intent(to: &str, amount: u128, expires_ms: i64) -> Intent {
    let chain = ChainId::parse("eip155:31337").unwrap();
    Intent {
        destination: Address::parse(&chain, to).unwrap(),
        chain,
        asset: IntentAsset {
            symbol: AssetSymbol::parse("ETH").unwrap(),
            decimals: 18,
            contract: None,
        },
        source_wallet: WalletId::parse("hot-eth-1").unwrap(),
        amount: Amount::from_base_units(amount).unwrap(),
        fee_cap: Amount::from_base_units(21_000 * 50_000_000_000).unwrap(),
        expires_at: Timestamp::from_unix_ms(expires_ms),
        request_id: fresh_id(),
    }
}

const ALICE: &str = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8";

fn eth_tx(value: u128) -> Vec<u8> {
    eth_tx_to(ALICE, value)
}

fn eth_tx_to(to: &str, value: u128) -> Vec<u8> {
    let i = intent(to, value, 0);
    let params = EthParams {
        nonce: 0,
        gas_limit: 21_000,
        max_fee_per_gas: 50_000_000_000,
        max_priority_fee_per_gas: 1_000_000_000,
    };
    EthCodec::new(i.chain.clone()).unwrap().build(&i, &params).unwrap()
}

fn eth_request(value: u128, path: Vec<u32>) -> SignRequest {
    eth_request_to(ALICE, value, path)
}

fn eth_request_to(to: &str, value: u128, path: Vec<u32>) -> SignRequest {
    let far = SystemEnv::new().now().unix_ms() + 3_600_000;
    SignRequest {
        intent: hex::encode(intent(to, 1_000_000_000_000_000, far).encode().unwrap()),
        format: TxFormat::Eip1559,
        tx: hex::encode(eth_tx_to(to, value)),
        path,
        ..Default::default()
    }
}

/// The 32 bytes a proof of control for `key` and `challenge` signs, computed here.
fn proof_digest(key: &KeyInfo, challenge: &[u8]) -> [u8; 32] {
    strongroom_governance::tagged_hash(
        strongroom_signer::check::PROOF_OF_CONTROL_TAG,
        strongroom_signer::check::proof_of_control(key, challenge).as_bytes(),
    )
}

fn read_logs(dir: &Path) -> String {
    (1..=3)
        .map(|i| std::fs::read_to_string(dir.join(format!("signer-{i}.log"))).unwrap_or_default())
        .collect()
}

/// Every file below `dir` that is not public (certificates, configs, public key facts)
/// must be sealed: the seal format starts with its version byte and is not readable text.
fn assert_all_sealed(dir: &Path) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let p = entry.path();
        if p.is_dir() {
            assert_all_sealed(&p);
            continue;
        }
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        if name.ends_with(".sealed") {
            let b = std::fs::read(&p).unwrap();
            assert_eq!(b[0], strongroom_crypto::seal::SEAL_VERSION, "{name}");
            let text = String::from_utf8_lossy(&b);
            // Long markers only: random ciphertext contains any short byte string somewhere.
            for marker in ["signing_share", "key_package", "\"chi\":{", "\"radix\":"] {
                assert!(!text.contains(marker), "{name} holds plain {marker}");
            }
        } else if name.ends_with(".json") {
            let text = std::fs::read_to_string(&p).unwrap();
            for marker in ["signing_share", "key_package", "secret", "\"x\""] {
                assert!(!text.contains(marker), "{name} holds {marker}");
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_signer_processes_sign_over_mtls_and_survive_faults() {
    let tmp = tempfile::tempdir().unwrap();
    let env = SystemEnv::new();
    let (cl, ca, ca_key) = prepare(tmp.path(), None);
    let log = |i: u16| tmp.path().join(format!("signer-{i}.log"));
    let mut procs: Vec<Option<Proc>> =
        cl.configs.iter().zip(1u16..).map(|(c, i)| Some(start(c, &log(i)))).collect();
    let orch = Orchestrator::new(cl.nodes.clone(), cl.orchestrator_credentials().unwrap());
    wait_live(&orch, 3).await;

    // A client without a pinned certificate is refused at the handshake.
    {
        let stranger_dir = tmp.path().join("stranger");
        let pin = tls::issue(&ca, &ca_key, &stranger_dir, "stranger", env.now()).unwrap();
        assert!(!pin.is_empty());
        let creds = Credentials::load(
            &stranger_dir.join("stranger.pem"),
            &stranger_dir.join("stranger-key.pem"),
        )
        .unwrap();
        let stranger = Orchestrator::new(cl.nodes.clone(), creds);
        let err = stranger.status(1).await.unwrap_err();
        assert!(
            matches!(err.reason, Reason::Unreachable { .. } | Reason::Timeout { .. }),
            "{err:?}"
        );
    }

    // Key generation.
    orch.aux_info(eid("aux"), &[1, 2, 3]).await.unwrap();
    let ecdsa_key =
        orch.keygen(eid("kg"), "hot-eth-1", Scheme::Ecdsa, &[1, 2, 3], 2).await.unwrap();
    let tr_key =
        orch.keygen(eid("kg"), "hot-btc-1", Scheme::FrostTaproot, &[1, 2, 3], 2).await.unwrap();
    let ed_key =
        orch.keygen(eid("kg"), "hot-sol-1", Scheme::FrostEd25519, &[1, 2, 3], 2).await.unwrap();
    assert_eq!(hex::decode(&ecdsa_key.public_key).unwrap().len(), 33);
    assert_eq!(hex::decode(&tr_key.public_key).unwrap().len(), 32);

    // ECDSA: presign, sign an Ethereum transaction that matches its intent.
    let p = orch.presign(eid("ps"), "hot-eth-1", &[1, 2]).await.unwrap();
    let req = eth_request(1_000_000_000_000_000, vec![]);
    let signed = orch.sign(eid("sign"), &ecdsa_key, &[1, 2], Some(&p), &req).await.unwrap();
    let digest = sha3::Keccak256::digest(eth_tx(1_000_000_000_000_000));
    assert_eq!(signed.signed_bytes, digest.to_vec(), "nodes sign keccak256 of the transaction");
    verify_ecdsa(&signed.public_key, &signed.signed_bytes, &signed.signature);

    // The presignature is gone on both nodes: a second use is refused.
    let again = orch.sign(eid("sign"), &ecdsa_key, &[1, 2], Some(&p), &req).await.unwrap_err();
    assert!(matches!(again.reason, Reason::NotFound { .. }), "{again:?}");

    // A child key (BIP-32 path: a deposit address) signs too, with the child public key,
    // but only a sweep into the wallet's own address; paying anyone else is refused.
    let p = orch.presign(eid("ps"), "hot-eth-1", &[2, 3]).await.unwrap();
    let refused = orch
        .sign(
            eid("sign"),
            &ecdsa_key,
            &[2, 3],
            Some(&p),
            &eth_request(1_000_000_000_000_000, vec![0, 5]),
        )
        .await
        .unwrap_err();
    assert!(matches!(refused.reason, Reason::ChildKeyPaysOut { .. }), "{refused:?}");
    let codec = EthCodec::new(ChainId::parse("eip155:31337").unwrap()).unwrap();
    let own = codec.address_of(&hex::decode(&ecdsa_key.public_key).unwrap()).unwrap();
    let p = orch.presign(eid("ps"), "hot-eth-1", &[2, 3]).await.unwrap();
    let child = eth_request_to(own.as_str(), 1_000_000_000_000_000, vec![0, 5]);
    let signed = orch.sign(eid("sign"), &ecdsa_key, &[2, 3], Some(&p), &child).await.unwrap();
    assert_ne!(hex::encode(&signed.public_key), ecdsa_key.public_key);
    verify_ecdsa(&signed.public_key, &signed.signed_bytes, &signed.signature);

    // A pool of presignatures made ahead of time (two sessions at once); signing takes one
    // and it is gone from every node.
    let made = orch.fill_pool(&env, "hot-eth-1", &[1, 3], 3, 2).await.unwrap();
    assert_eq!(made, 3);
    assert_eq!(orch.pool("hot-eth-1", &[1, 3]).await.unwrap().len(), 3);
    assert_eq!(orch.fill_pool(&env, "hot-eth-1", &[1, 3], 3, 2).await.unwrap(), 0, "already full");
    let signed = orch.sign_pooled(&env, &ecdsa_key, &[1, 3], &req).await.unwrap();
    verify_ecdsa(&signed.public_key, &signed.signed_bytes, &signed.signature);
    assert_eq!(orch.pool("hot-eth-1", &[1, 3]).await.unwrap().len(), 2);

    // A transaction paying another amount than the intent: every node refuses on its own.
    let p = orch.presign(eid("ps"), "hot-eth-1", &[1, 3]).await.unwrap();
    let bad = eth_request(2_000_000_000_000_000, vec![]);
    let refused = orch.sign(eid("sign"), &ecdsa_key, &[1, 3], Some(&p), &bad).await.unwrap_err();
    assert!(
        matches!(&refused.reason, Reason::TxMismatch { field, .. } if field == "amount"),
        "{refused:?}"
    );
    // An expired intent too.
    let mut expired = req.clone();
    expired.intent = hex::encode(intent(ALICE, 1_000_000_000_000_000, 1).encode().unwrap());
    let refused =
        orch.sign(eid("sign"), &ecdsa_key, &[1, 3], Some(&p), &expired).await.unwrap_err();
    assert!(matches!(refused.reason, Reason::Expired { .. }), "{refused:?}");

    // FROST Taproot and Ed25519 over the network, on proofs of control (the nodes build
    // the statement; the signed bytes are its tagged hash, recomputed here).
    let challenge = [0x5au8; 32];
    let s =
        orch.sign(eid("frost"), &tr_key, &[1, 3], None, &proof_request(&challenge)).await.unwrap();
    assert_eq!(s.signed_bytes, proof_digest(&tr_key, &challenge));
    verify_bip340(&s.public_key, &s.signed_bytes, &s.signature);
    let s =
        orch.sign(eid("frost"), &ed_key, &[2, 3], None, &proof_request(&challenge)).await.unwrap();
    assert_eq!(s.signed_bytes, proof_digest(&ed_key, &challenge));
    verify_ed25519(&s.public_key, &s.signed_bytes, &s.signature);
    // Bytes of the caller's choosing are never signed, whatever the key.
    for key in [&tr_key, &ecdsa_key] {
        let mut raw = proof_request(&challenge);
        raw.format = TxFormat::RawMessage;
        let refused = orch.sign(eid("raw"), key, &[1, 3], None, &raw).await.unwrap_err();
        assert!(matches!(refused.reason, Reason::RawSigning { .. }), "{refused:?}");
    }

    // Refresh the Taproot key's shares: same key, new shares, still signs.
    let before = std::fs::read(cl.dir.join("signer-1/data/keys/hot-btc-1.sealed")).unwrap();
    orch.refresh(eid("refresh"), &tr_key, &[1, 2, 3]).await.unwrap();
    let after = std::fs::read(cl.dir.join("signer-1/data/keys/hot-btc-1.sealed")).unwrap();
    assert_ne!(before, after, "share replaced");
    assert!(!cl.dir.join("signer-1/data/keys/hot-btc-1.next.sealed").exists());
    let s =
        orch.sign(eid("frost"), &tr_key, &[2, 3], None, &proof_request(&challenge)).await.unwrap();
    verify_bip340(&s.public_key, &s.signed_bytes, &s.signature);
    // ECDSA keys cannot be refreshed with cggmp21 0.6: a clear refusal, nothing changes.
    let no = orch.refresh(eid("refresh"), &ecdsa_key, &[1, 2, 3]).await.unwrap_err();
    assert!(matches!(no.reason, Reason::BadRequest { .. }), "{no:?}");

    // Kill node 3 in the middle of a presignature session with node 1: the session ends
    // for node 1 at once (not at its timeout), naming node 3; nodes 1 and 2 still sign.
    let p12 = orch.presign(eid("ps"), "hot-eth-1", &[1, 2]).await.unwrap();
    let t0 = std::time::Instant::now();
    let node3 = procs[2].take();
    let (mid, ()) = tokio::join!(orch.presign(eid("ps"), "hot-eth-1", &[1, 3]), async move {
        tokio::time::sleep(Duration::from_millis(150)).await;
        drop(node3);
    });
    let mid = mid.unwrap_err();
    assert!(mid.culprits.contains(&3), "{mid:?}");
    assert!(t0.elapsed() < Duration::from_secs(10), "ended by the abort, not a timeout");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(orch.live_nodes().await, vec![1, 2]);
    let signed = orch.sign(eid("sign"), &ecdsa_key, &[1, 2], Some(&p12), &req).await.unwrap();
    verify_ecdsa(&signed.public_key, &signed.signed_bytes, &signed.signature);
    let s =
        orch.sign(eid("frost"), &tr_key, &[1, 2], None, &proof_request(&challenge)).await.unwrap();
    verify_bip340(&s.public_key, &s.signed_bytes, &s.signature);
    let t1 = std::time::Instant::now();
    let down = orch
        .sign(eid("frost"), &tr_key, &[1, 3], None, &proof_request(&challenge))
        .await
        .unwrap_err();
    assert!(down.culprits.contains(&3), "{down:?}");
    assert!(t1.elapsed() < Duration::from_secs(5), "node 1 was told at once, not left to time out");

    // Node 3 "compromised": its certificate, our frames. Garbage in a live session ends it
    // and names node 3.
    let e = eid("garbage");
    let o = &orch;
    let sign1 = async move {
        o.request(
            1,
            Request::Sign {
                eid: wire::eid_hex(&e),
                key_id: "hot-btc-1".into(),
                signers: vec![1, 3],
                presignature: None,
                request: proof_request(&[0x78; 16]),
            },
            Duration::from_secs(20),
        )
        .await
    };
    let rogue = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let mut s = impersonate(&cl, 3, 1).await;
        let env = strongroom_mpc::Envelope {
            eid: e,
            round: 1,
            from: 3,
            to: None,
            payload: b"\x00garbage".to_vec(),
        };
        wire::write_frame(
            &mut s,
            &Frame::Mpc { proto: wire::Proto::FrostSign, envelope: env.clone() },
        )
        .await
        .unwrap();
        // Replays of the same frame after the session ended are refused.
        tokio::time::sleep(Duration::from_millis(300)).await;
        wire::write_frame(&mut s, &Frame::Mpc { proto: wire::Proto::FrostSign, envelope: env })
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        s
    };
    let (r, _s) = tokio::join!(sign1, rogue);
    let r: Refusal = r.unwrap_err();
    assert!(matches!(r.reason, Reason::Culprit { .. }), "{r:?}");
    assert_eq!(r.culprits, vec![3], "{r:?}");

    // A frame that claims to come from node 2 over node 3's connection is dropped.
    {
        let mut s = impersonate(&cl, 3, 1).await;
        let env = strongroom_mpc::Envelope {
            eid: eid("x"),
            round: 1,
            from: 2,
            to: None,
            payload: vec![],
        };
        wire::write_frame(&mut s, &Frame::Mpc { proto: wire::Proto::FrostSign, envelope: env })
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Node 3's disk loses the Ed25519 share; nodes 1 and 2 rebuild it for node 3.
    for f in ["hot-sol-1.sealed", "hot-sol-1.json"] {
        std::fs::remove_file(cl.dir.join("signer-3/data/keys").join(f)).unwrap();
    }
    procs[2] = Some(start(&cl.configs[2], &log(33)));
    wait_live(&orch, 3).await;
    let repaired = orch.repair(eid("repair"), &ed_key, &[1, 2], 3).await.unwrap();
    assert_eq!(repaired.public_key, ed_key.public_key);
    let s =
        orch.sign(eid("frost"), &ed_key, &[1, 3], None, &proof_request(&challenge)).await.unwrap();
    verify_ed25519(&s.public_key, &s.signed_bytes, &s.signature);

    // Stop the rest, then look at what is on disk and in the logs.
    drop(procs);
    let logs = read_logs(tmp.path());
    assert!(logs.contains("message for an ended session refused"), "replay not logged");
    assert!(logs.contains("frame claims another sender"), "spoofed sender not logged");
    for marker in ["signing_share", "key_package", "\"chi\"", "BEGIN PRIVATE KEY"] {
        assert!(!logs.contains(marker), "logs contain {marker}");
    }
    assert_all_sealed(&cl.dir);

    // Each node's own audit log verifies and records what happened, culprits included.
    let node1 = cl.dir.join("signer-1/data/audit.jsonl");
    let (count, _) = strongroom_signer::nodelog::verify(&node1).unwrap();
    assert!(count > 10, "{count} records");
    let text = std::fs::read_to_string(&node1).unwrap();
    for action in [
        "key.generated",
        "presignature.made",
        "signature.partial",
        "sign.refused",
        "signature.made",
        "session.failed",
        "message.refused",
        "key.refreshed",
        "key.repair.helped",
    ] {
        assert!(text.contains(&format!("\"action\":\"{action}\"")), "no {action} in node 1's log");
    }
    assert!(text.contains("\\\"culprits\\\":[3]"), "culprit 3 not recorded");
    // Editing a record breaks the chain.
    let edited = text.replacen("sign.refused", "sign.allowed", 1);
    std::fs::write(&node1, edited).unwrap();
    assert!(strongroom_signer::nodelog::verify(&node1).is_err());
    let sealed_keys = std::fs::read_dir(cl.dir.join("signer-1/data/keys")).unwrap().count();
    assert_eq!(sealed_keys, 6, "three keys: a sealed share and public facts each");
}

/// SIGTERM (systemd stopping the unit): the node starts nothing new, lets running sessions
/// end, says so in its log and audit log, and exits cleanly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_stops_cleanly_on_sigterm() {
    let tmp = tempfile::tempdir().unwrap();
    let (cl, _, _) = prepare(tmp.path(), None);
    let log = tmp.path().join("signer-1.log");
    let mut p = start(&cl.configs[0], &log);
    let orch = Orchestrator::new(cl.nodes.clone(), cl.orchestrator_credentials().unwrap());
    for _ in 0..200 {
        if orch.status(1).await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    orch.status(1).await.unwrap();
    let killed = Command::new("kill").args(["-TERM", &p.child.id().to_string()]).status().unwrap();
    assert!(killed.success());
    let mut status = None;
    for _ in 0..200 {
        if let Some(s) = p.child.try_wait().unwrap() {
            status = Some(s);
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let status = status.expect("the node did not stop within 10 s of SIGTERM");
    assert!(status.success(), "{status:?}");
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("drained"), "{text}");
    let audit = std::fs::read_to_string(cl.dir.join("signer-1/data/audit.jsonl")).unwrap();
    assert!(audit.contains("node.stopped"), "{audit}");
}

mod governance_attack {
    use ed25519_dalek::SigningKey;
    use strongroom_governance::approval::Approval;
    use strongroom_governance::log::{replay, Change, Entry, Genesis, MemberSpec};
    use strongroom_governance::policy::Policy;
    use strongroom_governance::Role;

    use super::*;

    const ETH: u128 = 1_000_000_000_000_000_000;

    pub(super) fn key(n: u8) -> SigningKey {
        SigningKey::from_bytes(&[n; 32])
    }

    /// Admins ada and bob (quorum 2), approvers ann and amy; ETH on the test chain.
    pub(super) fn genesis(now: i64) -> Genesis {
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
                m("ann", 3, Role::Approver),
                m("amy", 4, Role::Approver),
            ],
            quorum: 2,
            whitelist_delay_ms: 86_400_000,
            created_at: Timestamp::from_unix_ms(now - 60_000),
            assets: vec![strongroom_governance::log::AssetSpec {
                chain: "eip155:31337".into(),
                symbol: "ETH".into(),
                decimals: 18,
                contract: None,
            }],
        }
    }

    /// Entry 1: up to 1 ETH free, above that two approvers; signed by both admins.
    fn policy_log(g: &Genesis, now: i64) -> Vec<Entry> {
        let policy = Policy::from_toml(
            r#"
version = 1
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
"#,
        )
        .unwrap();
        let state =
            replay(g, &hex::encode(g.hash().unwrap()), &[], Timestamp::from_unix_ms(now)).unwrap();
        let mut e =
            state.propose(Change::SetPolicy { policy }, Timestamp::from_unix_ms(now - 30_000));
        e.sign("ada", &key(1)).unwrap();
        e.sign("bob", &key(2)).unwrap();
        vec![e]
    }

    fn request(value: u128, approvals: Vec<Approval>, log: &[Entry]) -> SignRequest {
        let far = SystemEnv::new().now().unix_ms() + 3_600_000;
        let i = intent(ALICE, value, far);
        SignRequest {
            intent: hex::encode(i.encode().unwrap()),
            format: TxFormat::Eip1559,
            tx: hex::encode(eth_tx_to_with(&i)),
            approvals,
            governance: log.to_vec(),
            ..Default::default()
        }
    }

    fn eth_tx_to_with(i: &Intent) -> Vec<u8> {
        let params = EthParams {
            nonce: 0,
            gas_limit: 21_000,
            max_fee_per_gas: 50_000_000_000,
            max_priority_fee_per_gas: 1_000_000_000,
        };
        EthCodec::new(i.chain.clone()).unwrap().build(i, &params).unwrap()
    }

    /// A compromised orchestrator and one compromised signer node (here: a node with no
    /// governance at all, which signs whatever it is asked) try to sign a 5 ETH withdrawal
    /// nobody approved. The honest node refuses, so no signature exists; its audit log says
    /// why. With two approvers' signatures the same pair signs.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn one_compromised_node_and_the_orchestrator_cannot_sign_an_unapproved_withdrawal() {
        let tmp = tempfile::tempdir().unwrap();
        let now = SystemEnv::new().now().unix_ms();
        let (cl, _, _) = prepare(tmp.path(), None);
        // Nodes 1 and 3 pin the governance genesis; node 2 (the compromised one) does not.
        // (Node 1 hears from node 3 over the mesh before it signs.)
        let g = genesis(now);
        let genesis_file = tmp.path().join("genesis.json");
        std::fs::write(&genesis_file, serde_json::to_vec(&g).unwrap()).unwrap();
        for c in [&cl.configs[0], &cl.configs[2]] {
            let config =
                std::fs::read_to_string(c).unwrap().replace("insecure_no_governance = true\n", "");
            let at = config.find("\n[").map_or(config.len(), |i| i + 1);
            let lines = format!(
                "governance_genesis = {:?}\ngovernance_pin = \"{}\"\n",
                genesis_file,
                hex::encode(g.hash().unwrap())
            );
            std::fs::write(c, format!("{}{lines}{}", &config[..at], &config[at..])).unwrap();
        }

        let log = |i: u16| tmp.path().join(format!("signer-{i}.log"));
        let _procs: Vec<Proc> =
            cl.configs.iter().zip(1u16..).map(|(c, i)| start(c, &log(i))).collect();
        let orch = Orchestrator::new(cl.nodes.clone(), cl.orchestrator_credentials().unwrap());
        wait_live(&orch, 3).await;
        orch.aux_info(eid("aux"), &[1, 2, 3]).await.unwrap();
        let key_info =
            orch.keygen(eid("kg"), "hot-eth-1", Scheme::Ecdsa, &[1, 2, 3], 2).await.unwrap();
        let entries = policy_log(&g, now);

        // No approvals: node 1 refuses, and with it the session; no signature anywhere.
        let p = orch.presign(eid("ps"), "hot-eth-1", &[1, 2]).await.unwrap();
        let unapproved = request(5 * ETH, vec![], &entries);
        let err =
            orch.sign(eid("sign"), &key_info, &[1, 2], Some(&p), &unapproved).await.unwrap_err();
        assert_eq!(err.node, 1, "{err:?}");
        assert!(
            matches!(&err.reason, Reason::Approvals { rule, have: 0, need: 2, .. } if rule == "large"),
            "{err:?}"
        );
        let audit =
            std::fs::read_to_string(cl.configs[0].parent().unwrap().join("data/audit.jsonl"))
                .unwrap();
        assert!(
            audit.contains("sign.refused") && audit.contains(r#"\"code\":\"approvals\""#),
            "{audit}"
        );

        // The orchestrator forges approvals (its own key, an approver's name) or replays
        // them from another request: still refused.
        let i = intent(ALICE, 5 * ETH, SystemEnv::new().now().unix_ms() + 3_600_000);
        let hash_of = |r: &SignRequest| {
            Intent::decode(&hex::decode(&r.intent).unwrap()).unwrap().hash().unwrap()
        };
        let expires = Timestamp::from_unix_ms(now + 3_600_000);
        let mut forged = Approval::sign("ann", &key(66), &i.hash().unwrap(), 1, expires);
        forged.intent_hash = hash_of(&unapproved).to_hex();
        let other = intent(ALICE, 4 * ETH, 1);
        let replayed = Approval::sign("amy", &key(4), &other.hash().unwrap(), 1, expires);
        let p = orch.presign(eid("ps"), "hot-eth-1", &[1, 2]).await.unwrap();
        let bad = request(5 * ETH, vec![forged, replayed], &entries);
        let err = orch.sign(eid("sign"), &key_info, &[1, 2], Some(&p), &bad).await.unwrap_err();
        assert!(matches!(err.reason, Reason::Approvals { have: 0, need: 2, .. }), "{err:?}");

        // Two real approvals of this very intent: the same pair signs.
        let p = orch.presign(eid("ps"), "hot-eth-1", &[1, 2]).await.unwrap();
        let mut ok = request(5 * ETH, vec![], &entries);
        let h = hash_of(&ok);
        ok.approvals = vec![
            Approval::sign("ann", &key(3), &h, 1, expires),
            Approval::sign("amy", &key(4), &h, 1, expires),
        ];
        let signed = orch.sign(eid("sign"), &key_info, &[1, 2], Some(&p), &ok).await.unwrap();
        verify_ecdsa(&signed.public_key, &signed.signed_bytes, &signed.signature);
    }
}

/// Issue "Signers decide (1)": what every node checks by itself, played by an attacker who
/// holds the orchestrator's certificate and speaks the wire protocol to real node
/// processes: fee drains, one intent signed twice, raw digests, weak governance. Each is
/// refused with a typed reason in the node's own audit log, and the honest path still signs.
mod signers_decide {
    use strongroom_governance::approval::Approval;
    use strongroom_governance::log::{replay, Change, Entry, Genesis, WhitelistScope};
    use strongroom_governance::policy::{Block, Policy};

    use super::governance_attack::key;
    use super::*;

    const ETH: u128 = 1_000_000_000_000_000_000;
    const DAY: i64 = 86_400_000;
    const BOB: &str = "0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC";
    const CAROL: &str = "0x90F79bf6EB2c4f870365E785982E1f101E93b906";
    /// The registered token (as the dev chain's first contract would be).
    const USDT: &str = "0x5FbDB2315678afecb367f032d93F642f64180aa3";

    fn genesis(now: i64) -> Genesis {
        let mut g = governance_attack::genesis(now);
        g.created_at = Timestamp::from_unix_ms(now - 3 * DAY);
        g.assets.push(strongroom_governance::log::AssetSpec {
            chain: "eip155:31337".into(),
            symbol: "USDT".into(),
            decimals: 6,
            contract: Some(USDT.into()),
        });
        g
    }

    fn policy(version: u64, messages: bool) -> Policy {
        policy_limited(version, messages, 10 * ETH)
    }

    /// [`policy`] with a daily ETH limit of `daily` wei.
    fn policy_limited(version: u64, messages: bool, daily: u128) -> Policy {
        Policy::from_toml(&format!(
            r#"
version = {version}
{}
[[rules]]
name = "small"
when = {{ max_amount = "1000000000000000000" }}
action = {{ kind = "allow" }}
[[rules]]
name = "large"
action = {{ kind = "approvals", count = 2, roles = ["approver"] }}
[[fees]]
chain = "eip155:31337"
fee_asset = "ETH"
max_fee = "2000000000000000"
[[velocity]]
name = "daily"
asset = "ETH"
period_secs = 86400
max_amount = "{daily}"
"#,
            if messages { "messages = [\"proof_of_control\"]" } else { "" }
        ))
        .unwrap()
    }

    /// `log` grown by `change`, dated `at`, signed by the admins named.
    fn grow(g: &Genesis, log: &mut Vec<Entry>, change: Change, at: i64, by: &[(&str, u8)]) {
        let state =
            replay(g, &hex::encode(g.hash().unwrap()), log, Timestamp::from_unix_ms(i64::MAX))
                .unwrap();
        let mut e = state.propose(change, Timestamp::from_unix_ms(at));
        for (who, n) in by {
            e.sign(who, &key(*n)).unwrap();
        }
        log.push(e);
    }

    const ADMINS: &[(&str, u8)] = &[("ada", 1), ("bob", 2)];

    fn tx(i: &Intent, nonce: u64, max_fee_per_gas: u128) -> Vec<u8> {
        let params = EthParams {
            nonce,
            gas_limit: 21_000,
            max_fee_per_gas,
            max_priority_fee_per_gas: max_fee_per_gas,
        };
        EthCodec::new(i.chain.clone()).unwrap().build(i, &params).unwrap()
    }

    fn request(i: &Intent, tx: Vec<u8>, log: &[Entry], approvals: Vec<Approval>) -> SignRequest {
        SignRequest {
            intent: hex::encode(i.encode().unwrap()),
            format: TxFormat::Eip1559,
            tx: hex::encode(tx),
            approvals,
            governance: log.to_vec(),
            ..Default::default()
        }
    }

    /// Three signer processes pinning `g` (in a folder of their own), with a fresh 2-of-3
    /// ECDSA key `hot-eth-1`.
    struct Governed {
        _tmp: tempfile::TempDir,
        cl: Cluster,
        procs: Vec<Proc>,
        orch: Orchestrator,
        key: KeyInfo,
    }

    impl Governed {
        async fn start(g: &Genesis) -> Governed {
            let tmp = tempfile::tempdir().unwrap();
            let genesis_file = tmp.path().join("genesis.json");
            std::fs::write(&genesis_file, serde_json::to_vec(g).unwrap()).unwrap();
            let pin = hex::encode(g.hash().unwrap());
            let (cl, _, _) = prepare(tmp.path(), Some((genesis_file, pin)));
            let log = |i: u16| tmp.path().join(format!("signer-{i}.log"));
            let procs = cl.configs.iter().zip(1u16..).map(|(c, i)| start(c, &log(i))).collect();
            let orch = Orchestrator::new(cl.nodes.clone(), cl.orchestrator_credentials().unwrap());
            wait_live(&orch, 3).await;
            orch.aux_info(eid("aux"), &[1, 2, 3]).await.unwrap();
            let key =
                orch.keygen(eid("kg"), "hot-eth-1", Scheme::Ecdsa, &[1, 2, 3], 2).await.unwrap();
            Governed { _tmp: tmp, cl, procs, orch, key }
        }

        /// A fresh presignature for `pair`, then the signature.
        async fn sign(
            &self,
            pair: [u16; 2],
            req: SignRequest,
        ) -> Result<strongroom_signer::Signed, Refusal> {
            let p = self.orch.presign(eid("ps"), "hot-eth-1", &pair).await.unwrap();
            self.orch.sign(eid("sign"), &self.key, &pair, Some(&p), &req).await
        }

        /// Stop the processes (their audit logs are then complete).
        fn stop(&mut self) {
            self.procs.clear();
        }
    }

    fn audit_of(cl: &Cluster, node: u16) -> String {
        let path = cl.dir.join(format!("signer-{node}/data/audit.jsonl"));
        strongroom_signer::nodelog::verify(&path).unwrap();
        std::fs::read_to_string(path).unwrap()
    }

    /// A node with no pinned genesis does not start, unless told loudly that it is
    /// insecure.
    #[test]
    fn a_node_without_governance_refuses_to_start() {
        let tmp = tempfile::tempdir().unwrap();
        let (cl, _, _) = prepare(tmp.path(), None);
        let config = std::fs::read_to_string(&cl.configs[0]).unwrap();
        assert!(config.contains("insecure_no_governance = true"), "{config}");
        std::fs::write(&cl.configs[0], config.replace("insecure_no_governance = true\n", ""))
            .unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_strongroom-signer"))
            .arg("--config")
            .arg(&cl.configs[0])
            .output()
            .unwrap();
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("no governance genesis is pinned"), "{err}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn nodes_refuse_fee_drains_double_signing_raw_digests_and_weak_governance() {
        let tmp = tempfile::tempdir().unwrap();
        let now = SystemEnv::new().now().unix_ms();
        let g = genesis(now);
        let genesis_file = tmp.path().join("genesis.json");
        std::fs::write(&genesis_file, serde_json::to_vec(&g).unwrap()).unwrap();
        let pin = hex::encode(g.hash().unwrap());
        let (cl, _, _) = prepare(tmp.path(), Some((genesis_file, pin)));
        let log = |i: u16| tmp.path().join(format!("signer-{i}.log"));
        let mut procs: Vec<Proc> =
            cl.configs.iter().zip(1u16..).map(|(c, i)| start(c, &log(i))).collect();
        let orch = Orchestrator::new(cl.nodes.clone(), cl.orchestrator_credentials().unwrap());
        wait_live(&orch, 3).await;
        orch.aux_info(eid("aux"), &[1, 2, 3]).await.unwrap();
        let k = orch.keygen(eid("kg"), "hot-eth-1", Scheme::Ecdsa, &[1, 2, 3], 2).await.unwrap();
        let own = EthCodec::new(ChainId::parse("eip155:31337").unwrap())
            .unwrap()
            .address_of(&hex::decode(&k.public_key).unwrap())
            .unwrap();
        let mut gov = Vec::new();
        grow(&g, &mut gov, Change::SetPolicy { policy: policy(1, false) }, now - 2 * DAY, ADMINS);
        let far = now + 3_600_000;
        let (o, kk) = (&orch, &k);
        let sign = move |pair: [u16; 2], req: SignRequest| async move {
            let p = o.presign(eid("ps"), "hot-eth-1", &pair).await.unwrap();
            o.sign(eid("sign"), kk, &pair, Some(&p), &req).await
        };

        // 2. A fee drain: 1 wei to the hot wallet itself, with 50 ETH of fees, the
        // intent's own cap raised to match. Every node refuses: the policy's ceiling.
        let mut drain = intent(own.as_str(), 1, far);
        drain.fee_cap = Amount::from_base_units(50 * ETH).unwrap();
        let greedy = 50 * ETH / 21_000;
        let r =
            sign([1, 2], request(&drain, tx(&drain, 0, greedy), &gov, vec![])).await.unwrap_err();
        assert!(
            matches!(&r.reason, Reason::Blocked { block: Block::FeeAboveCeiling { ceiling, .. }, .. }
                if ceiling.base_units() == 2_000_000_000_000_000),
            "{r:?}"
        );
        // The same payment with a fee under the ceiling signs.
        let honest = intent(BOB, ETH / 2, far);
        let first = tx(&honest, 0, 40_000_000_000);
        let signed = sign([1, 2], request(&honest, first.clone(), &gov, vec![])).await.unwrap();
        verify_ecdsa(&signed.public_key, &signed.signed_bytes, &signed.signature);

        // 1. Asset relabelling: the registered USDT contract under the name ETH, and a
        // contract nobody registered. The registry in the genesis names what moves.
        let token = |symbol: &str, decimals: u8, contract: &str| {
            let mut i = intent(BOB, 1_000_000, far);
            let chain = i.chain.clone();
            i.asset = IntentAsset {
                symbol: AssetSymbol::parse(symbol).unwrap(),
                decimals,
                contract: Some(Address::parse(&chain, contract).unwrap()),
            };
            i
        };
        let relabelled = token("ETH", 18, USDT);
        let r = sign([2, 3], request(&relabelled, tx(&relabelled, 0, 1), &gov, vec![]))
            .await
            .unwrap_err();
        assert!(
            matches!(&r.reason, Reason::Blocked { block: Block::AssetMislabelled { registered, .. }, .. }
                if registered == "USDT"),
            "{r:?}"
        );
        let stranger = token("USDT", 6, CAROL);
        let r =
            sign([2, 3], request(&stranger, tx(&stranger, 0, 1), &gov, vec![])).await.unwrap_err();
        assert!(
            matches!(r.reason, Reason::Blocked { block: Block::UnknownAsset { .. }, .. }),
            "{r:?}"
        );
        let usdt = token("USDT", 6, USDT);
        let s = sign([2, 3], request(&usdt, tx(&usdt, 0, 1), &gov, vec![])).await.unwrap();
        verify_ecdsa(&s.public_key, &s.signed_bytes, &s.signature);

        // 3. The same approved intent again at nonce 1, then 2, through every pair: each
        // pair shares a node that already signed it.
        for (nonce, pair) in [(1, [1, 2]), (2, [2, 3]), (3, [1, 3])] {
            let again = request(&honest, tx(&honest, nonce, 50_000_000_000), &gov, vec![]);
            let r = sign(pair, again).await.unwrap_err();
            assert!(
                matches!(&r.reason, Reason::AlreadySigned { request_id, .. }
                    if *request_id == honest.request_id.to_string()),
                "{pair:?}: {r:?}"
            );
        }
        // A fee bump at the same nonce consumes what the first did (at most one of the two
        // can ever be mined): signed, as a transaction of its own.
        let bumped = tx(&honest, 0, 50_000_000_000);
        let b = sign([1, 2], request(&honest, bumped, &gov, vec![])).await.unwrap();
        assert_ne!(b.signed_bytes, signed.signed_bytes);
        verify_ecdsa(&b.public_key, &b.signed_bytes, &b.signature);
        // After a restart of every node the journal still holds; the very same transaction
        // (the engine asking again after a crash) still signs, and is the same transaction.
        drop(procs);
        procs = cl.configs.iter().zip(1u16..).map(|(c, i)| start(c, &log(10 + i))).collect();
        wait_live(&orch, 3).await;
        let r = sign([1, 3], request(&honest, tx(&honest, 5, 50_000_000_000), &gov, vec![]))
            .await
            .unwrap_err();
        assert!(matches!(r.reason, Reason::AlreadySigned { .. }), "{r:?}");
        let repeat = sign([1, 2], request(&honest, first.clone(), &gov, vec![])).await.unwrap();
        assert_eq!(repeat.signed_bytes, signed.signed_bytes);
        // Node 3 never signed anything for this intent: the records its peers sent over the
        // mesh named the transaction the group signed, so it refused the nonce-2 one before
        // taking it into its journal. It co-signs that very transaction, and no other.
        let again = sign([1, 3], request(&honest, first, &gov, vec![])).await.unwrap();
        assert_eq!(again.signed_bytes, signed.signed_bytes);

        // 7. A caller's digest is never signed; a proof of control only once the policy
        // lists it.
        let mut raw = proof_request(&[1; 32]);
        raw.format = TxFormat::RawMessage;
        raw.governance = gov.clone();
        let r = sign([1, 2], raw).await.unwrap_err();
        assert!(matches!(r.reason, Reason::RawSigning { .. }), "{r:?}");
        let mut proof = proof_request(&[2; 32]);
        proof.governance = gov.clone();
        let r = sign([1, 2], proof.clone()).await.unwrap_err();
        assert!(
            matches!(r.reason, Reason::Blocked { block: Block::MessageNotAllowed { .. }, .. }),
            "{r:?}"
        );

        // 5. Weak governance. A quorum of one, signed by both admins: the log is refused.
        let mut weak = gov.clone();
        grow(&g, &mut weak, Change::SetQuorum { quorum: 1 }, now - DAY, ADMINS);
        let r = sign([2, 3], request(&intent(BOB, 1, far), tx(&honest, 9, 1), &weak, vec![]))
            .await
            .unwrap_err();
        assert!(matches!(r.reason, Reason::GovernanceLog { .. }), "{r:?}");
        // Policy 2 lists proofs of control, and a whitelist entry is back-dated by more
        // than its one-day time-lock: on the nodes' clocks it starts now.
        grow(
            &g,
            &mut gov,
            Change::SetPolicy { policy: policy(2, true) },
            now - DAY - 60_000,
            ADMINS,
        );
        let scope = WhitelistScope::Internal { chain: "eip155:31337".into() };
        let add = Change::WhitelistAdd { scope, address: CAROL.into(), label: "cold".into() };
        grow(&g, &mut gov, add, now - DAY - 30_000, ADMINS);
        proof.governance = gov.clone();
        let s = sign([1, 2], proof).await.unwrap();
        assert_eq!(s.signed_bytes, proof_digest(&k, &[2; 32]));
        verify_ecdsa(&s.public_key, &s.signed_bytes, &s.signature);
        // 5 ETH to the "cold wallet" without approvals, as if its time-lock had run out.
        let to_carol = intent(CAROL, 5 * ETH, far);
        let r =
            sign([2, 3], request(&to_carol, tx(&to_carol, 0, 1), &gov, vec![])).await.unwrap_err();
        assert!(
            matches!(&r.reason, Reason::Blocked { block: Block::TimeLocked { until_ms, .. }, .. }
                if *until_ms >= now + DAY),
            "{r:?}"
        );
        // Approvals that last three days do not count; approvals of a day do.
        let big = intent(BOB, 2 * ETH, far);
        let h = big.hash().unwrap();
        let lasting = |ms: i64| {
            let at = Timestamp::from_unix_ms(SystemEnv::new().now().unix_ms() + ms);
            vec![
                Approval::sign("ann", &key(3), &h, 2, at),
                Approval::sign("amy", &key(4), &h, 2, at),
            ]
        };
        let r =
            sign([1, 3], request(&big, tx(&big, 0, 1), &gov, lasting(3 * DAY))).await.unwrap_err();
        assert!(
            matches!(&r.reason, Reason::Approvals { have: 0, not_counted, .. }
                if not_counted.iter().all(|n| n.contains("beyond the policy's"))),
            "{r:?}"
        );
        let s = sign([1, 3], request(&big, tx(&big, 0, 1), &gov, lasting(DAY / 2))).await.unwrap();
        verify_ecdsa(&s.public_key, &s.signed_bytes, &s.signature);

        // A time-boxed freeze (issue "Signers decide (2)"): one admin freezes ETH for a few
        // seconds. The nodes refuse; an unfreeze signed by the whole quorum is a log they
        // refuse; when the time is up they sign again, with nothing lifted.
        let real_now = SystemEnv::new().now().unix_ms();
        let until = Timestamp::from_unix_ms(real_now + 6_000);
        let scope = strongroom_governance::log::FreezeScope::Asset { asset: "ETH".into() };
        let boxed = Change::FreezeUntil { scope: scope.clone(), until, reason: None };
        grow(&g, &mut gov, boxed, real_now, &[("ada", 1)]);
        let small = intent(BOB, ETH / 10, far);
        let r = sign([1, 2], request(&small, tx(&small, 0, 1), &gov, vec![])).await.unwrap_err();
        assert!(
            matches!(&r.reason, Reason::Blocked { block: Block::Frozen { until_ms: Some(u), .. }, .. }
                if *u == until.unix_ms()),
            "{r:?}"
        );
        let mut lifted = gov.clone();
        grow(&g, &mut lifted, Change::Unfreeze { scope }, real_now + 1, ADMINS);
        let r = sign([2, 3], request(&small, tx(&small, 0, 1), &lifted, vec![])).await.unwrap_err();
        assert!(matches!(r.reason, Reason::GovernanceLog { .. }), "{r:?}");
        let wait = until.unix_ms() - SystemEnv::new().now().unix_ms() + 500;
        tokio::time::sleep(Duration::from_millis(u64::try_from(wait.max(0)).unwrap())).await;
        let s = sign([1, 2], request(&small, tx(&small, 0, 1), &gov, vec![])).await.unwrap();
        verify_ecdsa(&s.public_key, &s.signed_bytes, &s.signature);

        // Every refusal is in the refusing node's own audit log, with its code.
        drop(procs);
        let audit = audit_of(&cl, 1) + &audit_of(&cl, 2) + &audit_of(&cl, 3);
        for code in ["blocked", "already_signed", "raw_signing", "governance_log", "approvals"] {
            assert!(
                audit.contains(&format!(r#"\"code\":\"{code}\""#)),
                "no {code} in the audit logs"
            );
        }
        for kind in [
            "fee_above_ceiling",
            "message_not_allowed",
            "time_locked",
            "asset_mislabelled",
            "unknown_asset",
        ] {
            assert!(
                audit.contains(&format!(r#"\"kind\":\"{kind}\""#)),
                "no {kind} in the audit logs"
            );
        }
    }

    /// Issue "Signers decide (2)", points 1 and 5: the node mesh. An orchestrator that
    /// rotates signing pairs cannot get past a velocity limit, and one that never forwards
    /// a freeze cannot keep it from the nodes: a member pushes it to one node, and every
    /// node refuses at once. Pushers and peers can do nothing else.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn nodes_share_velocity_and_governance_over_their_mesh() {
        let now = SystemEnv::new().now().unix_ms();
        let g = genesis(now);
        let mut gc = Governed::start(&g).await;
        let mut gov = Vec::new();
        let limited = policy_limited(1, false, 3 * ETH);
        grow(&g, &mut gov, Change::SetPolicy { policy: limited }, now - 2 * DAY, ADMINS);
        let far = now + 3_600_000;
        let sign = |pair: [u16; 2], req: SignRequest| gc.sign(pair, req);

        // Point 5. A daily limit of 3 ETH, 0.9 ETH at a time, each pair in turn. Counting
        // only what it signed itself, each node would allow a fourth (1.8 + 0.9 ETH on
        // its own count; 3.6 ETH in all, 1.2 times the limit, and 1.5 times with more
        // rounds). Counting what the group signed, the fourth is refused, by either pair.
        let point_nine = 9 * ETH / 10;
        for pair in [[1, 2], [2, 3], [1, 3]] {
            let i = intent(BOB, point_nine, far);
            let s = sign(pair, request(&i, tx(&i, 0, 1), &gov, vec![])).await.unwrap();
            verify_ecdsa(&s.public_key, &s.signed_bytes, &s.signature);
        }
        for pair in [[1, 2], [2, 3], [3, 1]] {
            let i = intent(BOB, point_nine, far);
            let r = sign(pair, request(&i, tx(&i, 0, 1), &gov, vec![])).await.unwrap_err();
            assert!(
                matches!(&r.reason, Reason::Blocked { block: Block::Velocity { limit, .. }, .. }
                    if limit == "daily"),
                "{pair:?}: {r:?}"
            );
        }
        // What stays within the limit still signs (0.2 ETH is left, less the fees).
        let i = intent(BOB, ETH / 10, far);
        let s = sign([2, 3], request(&i, tx(&i, 0, 1), &gov, vec![])).await.unwrap();
        verify_ecdsa(&s.public_key, &s.signed_bytes, &s.signature);

        // Point 1. A USDT payment signs; then a security officer's freeze is pushed to node
        // 3 alone, and the orchestrator keeps sending the log without it, to the pair that
        // never saw it. Both nodes ask their peers before they sign, learn the freeze from
        // node 3, and refuse.
        let usdt = |to: &str| {
            let mut i = intent(to, 1_000_000, far);
            let chain = i.chain.clone();
            i.asset = IntentAsset {
                symbol: AssetSymbol::parse("USDT").unwrap(),
                decimals: 6,
                contract: Some(Address::parse(&chain, USDT).unwrap()),
            };
            i
        };
        let paid = usdt(BOB);
        let s = sign([1, 2], request(&paid, tx(&paid, 0, 1), &gov, vec![])).await.unwrap();
        verify_ecdsa(&s.public_key, &s.signed_bytes, &s.signature);
        let mut frozen = gov.clone();
        let scope = strongroom_governance::log::FreezeScope::Global;
        grow(&g, &mut frozen, Change::Freeze { scope, reason: None }, now, &[("ada", 1)]);
        let node3: Vec<_> = gc.cl.nodes.iter().filter(|n| n.id == 3).cloned().collect();
        let member = Orchestrator::new(node3, gc.cl.pusher_credentials().unwrap());
        let pushed = member.push_governance(&frozen, Duration::from_secs(5)).await;
        let head = match &pushed[..] {
            [(3, Ok(h))] => h.clone(),
            other => panic!("{other:?}"),
        };
        assert_eq!(head.seq, 2);
        let withheld = usdt(CAROL);
        let r =
            sign([1, 2], request(&withheld, tx(&withheld, 0, 1), &gov, vec![])).await.unwrap_err();
        assert!(
            matches!(&r.reason, Reason::Blocked { block: Block::Frozen { .. }, .. })
                && [1, 2].contains(&r.node),
            "{r:?}"
        );
        // The background exchange carries it everywhere within seconds, with no signing.
        for _ in 0..100 {
            let mut heads = Vec::new();
            for n in 1..=3 {
                heads.push(gc.orch.status(n).await.unwrap().governance.unwrap());
            }
            if heads.iter().all(|h| *h == head) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        for n in 1..=3 {
            assert_eq!(gc.orch.status(n).await.unwrap().governance.unwrap(), head, "node {n}");
        }

        // A tampered push is refused, and changes nothing.
        let mut forged = frozen.clone();
        forged[1].change =
            Change::Unfreeze { scope: strongroom_governance::log::FreezeScope::Global };
        let r = member.push_governance(&forged, Duration::from_secs(5)).await;
        assert!(
            matches!(&r[..], [(3, Err(Refusal { reason: Reason::GovernanceLog { .. }, .. }))]),
            "{r:?}"
        );
        // A pusher may not ask for a signature, nor a peer push or sign: typed refusals.
        let sign_req = Request::Sign {
            eid: wire::eid_hex(&eid("x")),
            key_id: "hot-eth-1".into(),
            signers: vec![1, 3],
            presignature: None,
            request: request(&withheld, tx(&withheld, 0, 1), &gov, vec![]),
        };
        let r = member.request(3, sign_req.clone(), Duration::from_secs(5)).await.unwrap_err();
        assert!(
            matches!(&r.reason, Reason::BadRequest { detail } if detail.contains("Pusher")),
            "{r:?}"
        );
        let mut as_node2 = impersonate(&gc.cl, 2, 1).await;
        let frame = |id, body| Frame::Control(wire::Control::Request { id, body });
        wire::write_frame(&mut as_node2, &frame(7, sign_req)).await.unwrap();
        let push = Request::Push { entries: frozen.clone() };
        wire::write_frame(&mut as_node2, &frame(8, push)).await.unwrap();
        for _ in 0..2 {
            let body = wire::read_frame(&mut as_node2).await.unwrap().unwrap();
            let Frame::Control(wire::Control::Response { body: Err(r), .. }) =
                Frame::decode(&body).unwrap()
            else {
                panic!("{body:?}")
            };
            assert!(matches!(r.reason, Reason::BadRequest { .. }), "{r:?}");
        }

        gc.stop();
        let (a1, a2, a3) = (audit_of(&gc.cl, 1), audit_of(&gc.cl, 2), audit_of(&gc.cl, 3));
        assert!(a3.contains("governance.pushed") && a3.contains("governance.push_refused"));
        assert!(a1.contains("governance.learnt") && a2.contains("governance.learnt"));
        assert!(a1.contains("request.refused"), "the peer's sign request is audited");
        for a in [&a1, &a2, &a3] {
            assert!(a.contains(r#"\"kind\":\"velocity\""#));
        }
    }

    /// Issue "Signers decide (2)", points 2 and 4: who asked, proven. The exchange's backend
    /// signs each withdrawal request with its API client key (a member of the log with the
    /// operator's role); a staff operator signs their own. Nodes check the signature against
    /// the intent and take the initiator's roles from the log: an intent edited after the
    /// exchange signed it, a request replayed for another intent, or a request with no
    /// signature is refused, and an operator who is also an approver never counts as an
    /// approver of their own request.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn nodes_take_who_asked_from_a_signed_request_and_roles_from_the_log() {
        use strongroom_governance::initiation::{Initiation, InitiationError, Requested};
        use strongroom_governance::log::MemberSpec;
        use strongroom_governance::Role;

        let now = SystemEnv::new().now().unix_ms();
        let mut g = genesis(now);
        let member = |id: &str, n: u8, roles: Vec<Role>| MemberSpec {
            id: id.into(),
            public_key: hex::encode(key(n).verifying_key().to_bytes()),
            roles,
            passkey: None,
        };
        g.members.push(member("exchange", 5, vec![Role::Operator]));
        g.members.push(member("ops", 6, vec![Role::Operator, Role::Approver]));
        let mut gc = Governed::start(&g).await;
        // The starter policy, with small amounts only for operators, and who asked proven.
        let mut policy = policy(1, false);
        policy.require_initiation = true;
        policy.rules[0].when.initiator_roles = Some(vec![Role::Operator]);
        let mut gov = Vec::new();
        grow(&g, &mut gov, Change::SetPolicy { policy }, now - 2 * DAY, ADMINS);
        let far = now + 3_600_000;
        let sign = |pair: [u16; 2], req: SignRequest| gc.sign(pair, req);
        let signed_by = |who: &str, n: u8, i: &Intent, customer: Option<&str>| {
            Initiation::sign(who, &key(n), Requested::of(i, customer.map(str::to_owned))).unwrap()
        };
        let with = |i: &Intent, init: Option<Initiation>, approvals: Vec<Approval>| {
            let mut r = request(i, tx(i, 0, 1), &gov, approvals);
            r.initiation = init.map(Box::new);
            r.customer_id = Some("c-1".into());
            r
        };
        let mismatch = |r: &Refusal, want: &str| {
            matches!(&r.reason, Reason::Initiation { error: InitiationError::Mismatch { field, .. } }
                if field == want)
        };

        // Point 4. The exchange's backend asks for 0.5 ETH to Bob for customer c-1 and signs
        // the request.
        let asked = intent(BOB, ETH / 2, far);
        let exchange = signed_by("exchange", 5, &asked, Some("c-1"));
        // The withdrawal edited in the database after the exchange signed it, before it is
        // built: another destination, another amount, another customer. Refused, naming the
        // field.
        let mut to_carol = asked.clone();
        to_carol.destination = Address::parse(&asked.chain, CAROL).unwrap();
        let r = sign([2, 3], with(&to_carol, Some(exchange.clone()), vec![])).await.unwrap_err();
        assert!(mismatch(&r, "destination"), "{r:?}");
        let mut more = asked.clone();
        more.amount = Amount::from_base_units(9 * ETH / 10).unwrap();
        let r = sign([1, 3], with(&more, Some(exchange.clone()), vec![])).await.unwrap_err();
        assert!(mismatch(&r, "amount"), "{r:?}");
        let mut other_customer = with(&asked, Some(exchange.clone()), vec![]);
        other_customer.customer_id = Some("c-2".into());
        let r = sign([1, 3], other_customer).await.unwrap_err();
        assert!(mismatch(&r, "customer_id"), "{r:?}");
        // As the exchange asked: signed.
        let s = sign([1, 2], with(&asked, Some(exchange.clone()), vec![])).await.unwrap();
        verify_ecdsa(&s.public_key, &s.signed_bytes, &s.signature);
        // The signed request replayed for a second withdrawal (a new intent).
        let mut again = asked.clone();
        again.request_id = fresh_id();
        let r = sign([2, 3], with(&again, Some(exchange.clone()), vec![])).await.unwrap_err();
        assert!(mismatch(&r, "request_id"), "{r:?}");
        // No signature at all, or one the orchestrator made up in the exchange's name.
        let fresh = intent(BOB, ETH / 2, far);
        let r = sign([1, 2], with(&fresh, None, vec![])).await.unwrap_err();
        assert!(
            matches!(&r.reason, Reason::Blocked { block: Block::Unattested { claimed: None }, .. }),
            "{r:?}"
        );
        let forged = signed_by("exchange", 66, &fresh, Some("c-1"));
        let r = sign([1, 2], with(&fresh, Some(forged), vec![])).await.unwrap_err();
        assert!(
            matches!(&r.reason, Reason::Initiation { error: InitiationError::BadSignature { .. } }),
            "{r:?}"
        );
        // An approver's key cannot initiate: the log says ann is no operator.
        let by_ann = signed_by("ann", 3, &fresh, Some("c-1"));
        let r = sign([2, 3], with(&fresh, Some(by_ann), vec![])).await.unwrap_err();
        assert!(
            matches!(
                &r.reason,
                Reason::Initiation { error: InitiationError::NotAnInitiator { .. } }
            ),
            "{r:?}"
        );

        // Point 2. ops is an operator and an approver. They ask for 5 ETH and approve it
        // themselves with ann: one approval counts, not two.
        let big = intent(BOB, 5 * ETH, far);
        let h = big.hash().unwrap();
        let until = Timestamp::from_unix_ms(SystemEnv::new().now().unix_ms() + DAY / 2);
        let approve = |who: &str, n: u8| Approval::sign(who, &key(n), &h, 1, until);
        let by_ops = signed_by("ops", 6, &big, Some("c-1"));
        let self_approved =
            with(&big, Some(by_ops.clone()), vec![approve("ops", 6), approve("ann", 3)]);
        let r = sign([1, 2], self_approved).await.unwrap_err();
        assert!(
            matches!(&r.reason, Reason::Approvals { have: 1, need: 2, not_counted, .. }
                if not_counted.iter().any(|n| n.contains("initiator"))),
            "{r:?}"
        );
        // The orchestrator drops ops' signature so that ops would not be the initiator:
        // the policy requires one.
        let stripped = with(&big, None, vec![approve("ops", 6), approve("ann", 3)]);
        let r = sign([2, 3], stripped).await.unwrap_err();
        assert!(
            matches!(&r.reason, Reason::Blocked { block: Block::Unattested { .. }, .. }),
            "{r:?}"
        );
        // Two approvers other than ops: signed.
        let honest = with(&big, Some(by_ops), vec![approve("ann", 3), approve("amy", 4)]);
        let s = sign([1, 3], honest).await.unwrap();
        verify_ecdsa(&s.public_key, &s.signed_bytes, &s.signature);

        gc.stop();
        let audit = audit_of(&gc.cl, 1) + &audit_of(&gc.cl, 2) + &audit_of(&gc.cl, 3);
        for needle in [
            r#"\"code\":\"initiation\""#,
            r#"\"problem\":\"mismatch\""#,
            r#"\"problem\":\"bad_signature\""#,
            r#"\"kind\":\"unattested\""#,
        ] {
            assert!(audit.contains(needle), "no {needle} in the audit logs");
        }
    }

    /// Issue "Signers decide (2)", point 3: a passkey is the member's only with the member's
    /// own signature. The server hands the admins the passkey key to register; a compromised
    /// server hands them its own, and the admin quorum signs it. The nodes refuse that log,
    /// so the server's passkey approvals "as ann" count for nothing; registered with ann's
    /// own signature, her real passkey's approvals count.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_passkey_counts_only_when_its_member_signed_its_registration() {
        use strongroom_governance::webauthn::{challenge_b64, Assertion, PasskeySpec};

        let now = SystemEnv::new().now().unix_ms();
        let g = genesis(now);
        let mut gc = Governed::start(&g).await;
        let sign = |pair: [u16; 2], req: SignRequest| gc.sign(pair, req);

        let origin = "https://console.example";
        let spec_of = |a: &authenticator::SoftAuthenticator| PasskeySpec {
            rp_id: "console.example".into(),
            origin: origin.into(),
            credential_id: a.credential_id_b64(),
            public_key: hex::encode(a.public_key_sec1()),
        };
        let mut ann_key = authenticator::SoftAuthenticator::new(origin);
        let mut servers_key = authenticator::SoftAuthenticator::new(origin);
        let big = intent(BOB, 2 * ETH, now + 3_600_000);
        let h = big.hash().unwrap();
        let until = Timestamp::from_unix_ms(SystemEnv::new().now().unix_ms() + DAY / 2);
        let by_passkey = |a: &mut authenticator::SoftAuthenticator| {
            let msg = Approval::message(&h, 1, until);
            let signed =
                a.sign_assertion("console.example", &serde_json::json!(challenge_b64(&msg)));
            let r = &signed["response"];
            let text = |f: &str| r[f].as_str().unwrap().to_owned();
            let assertion = Assertion {
                authenticator_data: text("authenticatorData"),
                client_data_json: text("clientDataJSON"),
                signature: text("signature"),
            };
            Approval::with_passkey("ann", &h, 1, until, assertion)
        };
        let amy = Approval::sign("amy", &key(4), &h, 1, until);
        let mut base = Vec::new();
        grow(&g, &mut base, Change::SetPolicy { policy: policy(1, false) }, now - 2 * DAY, ADMINS);

        // The server's key, registered by the admin quorum alone: the log is refused, and
        // the approvals it makes count for nothing.
        let mut forged = base.clone();
        let set = Change::SetPasskey { id: "ann".into(), passkey: spec_of(&servers_key) };
        grow(&g, &mut forged, set, now - DAY, ADMINS);
        let approvals = vec![by_passkey(&mut servers_key), amy.clone()];
        let r = sign([1, 2], request(&big, tx(&big, 0, 1), &forged, approvals)).await.unwrap_err();
        assert!(
            matches!(&r.reason, Reason::GovernanceLog { detail } if detail.contains("ann's own signature")),
            "{r:?}"
        );
        // Without the entry the server's passkey is nobody's.
        let approvals = vec![by_passkey(&mut servers_key), amy.clone()];
        let r = sign([2, 3], request(&big, tx(&big, 0, 1), &base, approvals)).await.unwrap_err();
        assert!(matches!(r.reason, Reason::Approvals { have: 1, need: 2, .. }), "{r:?}");

        // Ann's own passkey, registered with her signature beside the admins': it counts.
        let mut honest = base.clone();
        let set = Change::SetPasskey { id: "ann".into(), passkey: spec_of(&ann_key) };
        grow(&g, &mut honest, set, now - DAY, &[("ada", 1), ("bob", 2), ("ann", 3)]);
        let approvals = vec![by_passkey(&mut servers_key), amy.clone()];
        let r = sign([1, 3], request(&big, tx(&big, 0, 1), &honest, approvals)).await.unwrap_err();
        assert!(matches!(r.reason, Reason::Approvals { have: 1, .. }), "{r:?}");
        let approvals = vec![by_passkey(&mut ann_key), amy];
        let s = sign([1, 2], request(&big, tx(&big, 0, 1), &honest, approvals)).await.unwrap();
        verify_ecdsa(&s.public_key, &s.signed_bytes, &s.signature);
        gc.stop();
        let audit = audit_of(&gc.cl, 1) + &audit_of(&gc.cl, 2);
        assert!(audit.contains(r#"\"code\":\"governance_log\""#));
    }

    /// An admin signs a freeze in the console with their registered passkey (the challenge
    /// is the entry's hash). The nodes take the freeze from that signature alone and refuse
    /// to pay; they refuse a log whose passkey signoff answers another entry's hash (what a
    /// lying page would ask for), and one where a passkey signs a change to who governs.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_passkey_signs_a_freeze_but_never_a_change_to_who_governs() {
        use strongroom_governance::log::{FreezeScope, MemberSpec, Signoff};
        use strongroom_governance::webauthn::{challenge_b64, Assertion, PasskeySpec};
        use strongroom_governance::Role;

        let now = SystemEnv::new().now().unix_ms();
        let g = genesis(now);
        let gc = Governed::start(&g).await;
        let origin = "https://console.example";
        let mut ada_key = authenticator::SoftAuthenticator::new(origin);
        let spec = PasskeySpec {
            rp_id: "console.example".into(),
            origin: origin.into(),
            credential_id: ada_key.credential_id_b64(),
            public_key: hex::encode(ada_key.public_key_sec1()),
        };
        let mut base = Vec::new();
        grow(&g, &mut base, Change::SetPolicy { policy: policy(1, false) }, now - 2 * DAY, ADMINS);
        grow(
            &g,
            &mut base,
            Change::SetPasskey { id: "ada".into(), passkey: spec },
            now - DAY,
            ADMINS,
        );
        let state =
            replay(&g, &hex::encode(g.hash().unwrap()), &base, Timestamp::from_unix_ms(now))
                .unwrap();
        let mut by_passkey = |change: Change, challenge_of: Option<&Entry>| {
            let mut e = state.propose(change, Timestamp::from_unix_ms(now - 1_000));
            let h = challenge_of.unwrap_or(&e).hash().unwrap();
            let signed =
                ada_key.sign_assertion("console.example", &serde_json::json!(challenge_b64(&h)));
            let text = |f: &str| signed["response"][f].as_str().unwrap().to_owned();
            let assertion = Assertion {
                authenticator_data: text("authenticatorData"),
                client_data_json: text("clientDataJSON"),
                signature: text("signature"),
            };
            e.signoffs.push(Signoff::passkey("ada", assertion));
            let mut log = base.clone();
            log.push(e);
            log
        };
        let freeze = || Change::Freeze {
            scope: FreezeScope::Asset { asset: "ETH".into() },
            reason: Some("drill".into()),
        };
        let small = intent(BOB, ETH / 2, now + 3_600_000);

        // The page asked the passkey to sign another entry (a global freeze's hash) and the
        // server put the assertion on this one.
        let other = state.propose(
            Change::Freeze { scope: FreezeScope::Global, reason: None },
            Timestamp::from_unix_ms(now),
        );
        let forged = by_passkey(freeze(), Some(&other));
        let r =
            gc.sign([1, 2], request(&small, tx(&small, 0, 1), &forged, vec![])).await.unwrap_err();
        assert!(
            matches!(&r.reason, Reason::GovernanceLog { detail } if detail.contains("another challenge")),
            "{r:?}"
        );
        // A passkey's signature on a new member, with the other admin's key beside it.
        let mut added = by_passkey(
            Change::AddMember {
                member: MemberSpec {
                    id: "eve".into(),
                    public_key: hex::encode(key(9).verifying_key().to_bytes()),
                    roles: vec![Role::Admin],
                    passkey: None,
                },
            },
            None,
        );
        added.last_mut().unwrap().sign("bob", &key(2)).unwrap();
        let r =
            gc.sign([2, 3], request(&small, tx(&small, 0, 1), &added, vec![])).await.unwrap_err();
        assert!(
            matches!(&r.reason, Reason::GovernanceLog { detail } if detail.contains("takes the key they hold")),
            "{r:?}"
        );
        // Before the freeze the same withdrawal signs; with the honest passkey-signed freeze
        // in the log, the nodes refuse it.
        let s = gc.sign([1, 3], request(&small, tx(&small, 0, 1), &base, vec![])).await.unwrap();
        verify_ecdsa(&s.public_key, &s.signed_bytes, &s.signature);
        let frozen = by_passkey(freeze(), None);
        let again = intent(BOB, ETH / 2, now + 3_600_000);
        let r =
            gc.sign([1, 2], request(&again, tx(&again, 1, 1), &frozen, vec![])).await.unwrap_err();
        assert!(matches!(&r.reason, Reason::Blocked { block: Block::Frozen { .. }, .. }), "{r:?}");
    }

    /// Issue "Signers decide (2)", point 6: a customer with a passkey signs their own
    /// withdrawals, and the nodes hold them to it. Once a node has known the customer's key
    /// for the governance time-lock, no withdrawal of theirs signs without their signature
    /// over exactly that request, whoever else asked (the exchange's backend included) and
    /// whatever the orchestrator leaves out; a key the attacker registers waits out the same
    /// time-lock. A key one node saw reaches the others over the mesh.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_customer_with_a_passkey_signs_their_own_withdrawals() {
        use strongroom_governance::initiation::{
            CustomerKey, Initiation, InitiationError, Requested,
        };
        use strongroom_governance::log::MemberSpec;
        use strongroom_governance::webauthn::{challenge_b64, Assertion, PasskeySpec};
        use strongroom_governance::Role;

        const LOCK_MS: i64 = 4_000;
        let now = SystemEnv::new().now().unix_ms();
        let mut g = genesis(now);
        g.whitelist_delay_ms = LOCK_MS;
        g.members.push(MemberSpec {
            id: "exchange".into(),
            public_key: hex::encode(key(5).verifying_key().to_bytes()),
            roles: vec![Role::Operator],
            passkey: None,
        });
        let mut gc = Governed::start(&g).await;
        let mut strict = policy(1, false);
        strict.require_initiation = true;
        let mut gov = Vec::new();
        grow(&g, &mut gov, Change::SetPolicy { policy: strict }, now - 2 * DAY, ADMINS);
        let sign = |pair: [u16; 2], req: SignRequest| gc.sign(pair, req);

        let origin = "https://app.example";
        let spec_of = |a: &authenticator::SoftAuthenticator| PasskeySpec {
            rp_id: "app.example".into(),
            origin: origin.into(),
            credential_id: a.credential_id_b64(),
            public_key: hex::encode(a.public_key_sec1()),
        };
        let mut ivy = authenticator::SoftAuthenticator::new(origin);
        let mut thief = authenticator::SoftAuthenticator::new(origin);
        let ivy_key = CustomerKey { customer_id: "ivy".into(), passkey: spec_of(&ivy) };
        let far = now + 3_600_000;
        let asked = |i: &Intent| Requested::of(i, Some("ivy".into()));
        let by_exchange = |i: &Intent| Initiation::sign("exchange", &key(5), asked(i)).unwrap();
        let by_customer = |a: &mut authenticator::SoftAuthenticator, r: Requested| {
            let msg = r.message().unwrap();
            let signed = a.sign_assertion("app.example", &serde_json::json!(challenge_b64(&msg)));
            let resp = &signed["response"];
            let text = |f: &str| resp[f].as_str().unwrap().to_owned();
            Initiation {
                initiator: "ivy".into(),
                requested: r,
                signature: String::new(),
                webauthn: Some(Assertion {
                    authenticator_data: text("authenticatorData"),
                    client_data_json: text("clientDataJSON"),
                    signature: text("signature"),
                }),
            }
        };
        let req = |i: &Intent,
                   exchange: Option<Initiation>,
                   customer: Option<Initiation>,
                   keys: Vec<CustomerKey>| {
            let mut r = request(i, tx(i, 0, 1), &gov, vec![]);
            r.initiation = exchange.map(Box::new);
            r.customer_approval = customer.map(Box::new);
            r.customer_keys = keys;
            r.customer_id = Some("ivy".into());
            r
        };

        // Ivy registers her passkey; nodes 1 and 2 see it with the first withdrawal, which
        // signs without her signature while the key is in its time-lock.
        let first = intent(BOB, ETH / 10, far);
        let s = sign([1, 2], req(&first, Some(by_exchange(&first)), None, vec![ivy_key.clone()]))
            .await
            .unwrap();
        verify_ecdsa(&s.public_key, &s.signed_bytes, &s.signature);
        tokio::time::sleep(Duration::from_millis(LOCK_MS as u64 + 2_500)).await;

        // From now on: the exchange's signature alone, with the key left out of the request,
        // is refused, by node 3 too (it learnt the key from its peers).
        let second = intent(BOB, ETH / 10, far);
        let r =
            sign([2, 3], req(&second, Some(by_exchange(&second)), None, vec![])).await.unwrap_err();
        assert!(
            matches!(&r.reason, Reason::Blocked { block: Block::CustomerNotSigned { customer_id }, .. }
                if customer_id == "ivy"),
            "{r:?}"
        );
        // Ivy's signature over another amount than the intent's: refused.
        let mut less = asked(&second);
        less.amount = Amount::from_base_units(ETH / 100).unwrap();
        let r = sign(
            [1, 3],
            req(&second, Some(by_exchange(&second)), Some(by_customer(&mut ivy, less)), vec![]),
        )
        .await
        .unwrap_err();
        assert!(
            matches!(&r.reason, Reason::Initiation { error: InitiationError::Mismatch { field, .. } }
                if field == "amount"),
            "{r:?}"
        );
        // The attacker registers its own key for ivy and signs with it: the key waits out
        // the time-lock, so its signature is nobody's.
        let planted = CustomerKey { customer_id: "ivy".into(), passkey: spec_of(&thief) };
        let forged = by_customer(&mut thief, asked(&second));
        let r = sign([2, 3], req(&second, Some(by_exchange(&second)), Some(forged), vec![planted]))
            .await
            .unwrap_err();
        assert!(
            matches!(&r.reason, Reason::Initiation { error: InitiationError::BadPasskey { .. } }),
            "{r:?}"
        );
        // Ivy's own signature over exactly this request: signed.
        let mine = by_customer(&mut ivy, asked(&second));
        let s = sign([1, 3], req(&second, Some(by_exchange(&second)), Some(mine), vec![]))
            .await
            .unwrap();
        verify_ecdsa(&s.public_key, &s.signed_bytes, &s.signature);
        // Her own request, with no member's: she is who asked, and the policy's demand for a
        // proven initiator is met.
        let third = intent(BOB, ETH / 10, far);
        let mine = by_customer(&mut ivy, asked(&third));
        let s = sign([2, 3], req(&third, None, Some(mine), vec![])).await.unwrap();
        verify_ecdsa(&s.public_key, &s.signed_bytes, &s.signature);

        gc.stop();
        let node3 = audit_of(&gc.cl, 3);
        assert!(node3.contains(r#"\"kind\":\"customer_not_signed\""#), "node 3 refused on its own");
    }
}

#[path = "../../server/tests/support/authenticator.rs"]
mod authenticator;
