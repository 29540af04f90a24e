//! Two `strongroom serve` instances on one PostgreSQL, one set of signer nodes and one anvil
//! (issue 19): withdrawals go in through both, and in every round one instance is killed at a
//! random point — SIGKILL after a random delay (before the build, mid-signing, anywhere), or
//! dying right after it stored a signed transaction, or right after it broadcast one — and
//! is started again. The other instance takes the work over once the dead one's leases run
//! out. At the end every withdrawal settled exactly once (the destination received exactly
//! their sum), no nonce was used twice (the database's and the chain's count agree, nonces
//! are contiguous), the ledger equals the chain (`reconcile`), and `audit verify` passes.
//!
//! `STRONGROOM_HA_ROUNDS` sets the rounds (50 by default, as in CI; the longer run's figures
//! are in docs/benchmarks.md).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::print_stdout,
    clippy::print_stderr
)] // Test code.
#![allow(clippy::disallowed_methods)] // A test of real processes waits on the real clock.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

mod common;
use common::*;

const DEST: &str = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed";

/// A small deterministic generator (the seed is printed, so a failing run can be replayed
/// with STRONGROOM_HA_SEED).
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// How a round kills its victim.
#[derive(Debug, Clone, Copy)]
enum Kill {
    /// SIGKILL this many milliseconds after the withdrawals went in.
    After(u64),
    /// The victim dies right after storing a signed transaction (`STRONGROOM_TEST_STOP_AFTER`).
    AfterSigned,
    /// The victim dies right after broadcasting one.
    AfterSent,
}

/// `POST /v1/withdrawals` through `api`, or None when it is down.
fn post_withdrawal(api: &Api, body: &serde_json::Value) -> Option<String> {
    let (ok, out) = curl(&[
        "--cacert",
        &api.ca,
        "-X",
        "POST",
        "-H",
        &format!("Authorization: Bearer {}", api.token),
        "-H",
        &format!("Idempotency-Key: ha-{}", uuid_like()),
        "-H",
        "Content-Type: application/json",
        "-d",
        &body.to_string(),
        &format!("{}/v1/withdrawals", api.url),
    ])?;
    if !ok {
        return None;
    }
    let w: serde_json::Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    Some(w["id"].as_str().unwrap_or_else(|| panic!("{w}")).to_owned())
}

#[test]
fn two_instances_killed_at_random_points_settle_every_withdrawal_exactly_once() {
    let Some(db) = postgres("ha") else { return };
    let Some(chain) = start_anvil(&["--block-time", "1"]) else { return };
    let rounds: usize =
        std::env::var("STRONGROOM_HA_ROUNDS").ok().and_then(|r| r.parse().ok()).unwrap_or(50);
    let seed =
        std::env::var("STRONGROOM_HA_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(
            || SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos() as u64,
        ) | 1;
    println!("rounds {rounds}, seed {seed}");
    let mut rng = Rng(seed);
    let dir = tempfile::tempdir().unwrap();
    if std::env::var_os("STRONGROOM_HA_VERBOSE").is_some() {
        println!("logs in {}", dir.path().display());
    }
    let mut hosts = Loopback::new();
    // Short leases, so a dead instance's work is taken over within seconds.
    let dep = deploy(
        &mut hosts,
        dir.path(),
        &db.url(),
        &chain.url,
        "\n[leases]\njob_ms = 3000\nleader_ms = 3000\n",
    );
    let ports = [dep.port, free_port()];
    let names = ["serve-a", "serve-b"];
    let mut instances: Vec<Serve> = (0..2).map(|i| dep.serve(names[i], &[], ports[i])).collect();
    let urls: Vec<String> = ports.iter().map(|p| format!("https://localhost:{p}")).collect();
    let token = dep.operator_token();
    let apis: Vec<Api> =
        urls.iter().map(|u| Api { url: u.clone(), ca: dep.ca(), token: token.clone() }).collect();
    dep.govern(&urls[0]);

    // Gas for the hot wallet; a customer's deposit, credited by whichever instance watches.
    let accounts = rpc(&chain.url, "eth_accounts", serde_json::json!([]));
    let funder = accounts[0].as_str().unwrap().to_owned();
    send_eth(&chain.url, &funder, &dep.hot_wallet(), 20 * ETH);
    let c = apis[0].call("POST", "/v1/customers", Some(serde_json::json!({"external_id": "ha"})));
    let cid = c["id"].as_str().unwrap().to_owned();
    let a = apis[1].call(
        "POST",
        &format!("/v1/customers/{cid}/deposit-address"),
        Some(serde_json::json!({"asset": "ETH"})),
    );
    send_eth(&chain.url, accounts[1].as_str().unwrap(), a["address"].as_str().unwrap(), 50 * ETH);
    let deadline = Instant::now() + Duration::from_secs(90);
    while !apis[1]
        .call("GET", &format!("/v1/customers/{cid}/balances"), None)
        .to_string()
        .contains(&(50 * ETH).to_string())
    {
        assert!(Instant::now() < deadline, "deposit never credited");
        std::thread::sleep(Duration::from_millis(500));
    }

    let before = balance(&chain.url, DEST);
    let mut sent: Vec<(String, u128)> = Vec::new();
    let mut kills = [0usize; 3];
    let started = Instant::now();
    for round in 0..rounds {
        let victim = usize::try_from(rng.below(2)).unwrap();
        let kill = match rng.below(4) {
            0 => Kill::AfterSigned,
            1 => Kill::AfterSent,
            _ => Kill::After(rng.below(4_000)),
        };
        if std::env::var_os("STRONGROOM_HA_VERBOSE").is_some() {
            println!("round {round}: victim {victim}, {kill:?}");
        }
        // To die at a step, both instances restart with that stop point (killed first: one
        // more kill at an arbitrary point); whichever takes a withdrawal dies there.
        let stop = match kill {
            Kill::AfterSigned => Some("signed"),
            Kill::AfterSent => Some("sent"),
            Kill::After(_) => None,
        };
        let restart = |instances: &mut Vec<Serve>, i: usize, stop: Option<&str>| {
            let _ = instances[i].0.kill();
            let _ = instances[i].0.wait();
            let env: Vec<(&str, String)> =
                stop.map(|p| ("STRONGROOM_TEST_STOP_AFTER", p.to_owned())).into_iter().collect();
            instances[i] = dep.serve(names[i], &env, ports[i]);
        };
        if stop.is_some() {
            for i in 0..2 {
                restart(&mut instances, i, stop);
            }
        }
        // Two withdrawals, one through each instance (through the other one if it already
        // died); amounts differ so a payment made twice shows in the sum.
        let mut ids = Vec::new();
        for (k, first) in [victim, 1 - victim].into_iter().enumerate() {
            let wei = ETH / 1000 + u128::try_from(round * 2 + k).unwrap() * 1_000_000_000;
            let amount = format!("{}.{:018}", wei / ETH, wei % ETH);
            let body = serde_json::json!({"customer_id": cid, "asset": "ETH", "destination": DEST, "amount": amount});
            let id = [first, 1 - first]
                .into_iter()
                .find_map(|i| post_withdrawal(&apis[i], &body))
                .unwrap_or_else(|| panic!("round {round}: no instance took the withdrawal"));
            ids.push(id.clone());
            sent.push((id, wei));
        }
        match kill {
            Kill::After(ms) => {
                std::thread::sleep(Duration::from_millis(ms));
                let _ = instances[victim].0.kill();
                kills[0] += 1;
                restart(&mut instances, victim, None);
            }
            Kill::AfterSigned | Kill::AfterSent => {
                let deadline = Instant::now() + Duration::from_secs(20);
                while !instances.iter_mut().any(Serve::exited) && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(100));
                }
                let died = instances.iter_mut().map(Serve::exited).filter(|d| *d).count();
                kills[if stop == Some("signed") { 1 } else { 2 }] += died;
                for i in 0..2 {
                    restart(&mut instances, i, None);
                }
            }
        }
        // The work is taken over (by the survivor, or by the restarted instances).
        for id in &ids {
            let w = apis[0].wait_state(id, "settled", 120);
            assert_eq!(w["state"], "settled", "round {round}: {w}");
        }
        if round % 10 == 9 {
            println!(
                "round {}: {:?} kills so far (random, after signed, after sent)",
                round + 1,
                kills
            );
        }
    }
    let elapsed = started.elapsed();

    // Exactly once: the destination got exactly the sum, each withdrawal is settled.
    let total: u128 = sent.iter().map(|(_, w)| w).sum();
    assert_eq!(balance(&chain.url, DEST) - before, total, "every withdrawal paid exactly once");
    for (id, _) in &sent {
        assert_eq!(apis[0].call("GET", &format!("/v1/withdrawals/{id}"), None)["state"], "settled");
    }
    // No nonce twice: one transaction per withdrawal, nonces 0..n, as the chain counts them.
    let n = sent.len();
    let stored = db.query(
        "SELECT COUNT(*) || ' ' || COUNT(DISTINCT nonce) || ' ' || MIN(nonce) || ' ' || MAX(nonce) FROM chain_txs WHERE wallet = 'hot-eth-1'",
    );
    assert_eq!(stored, format!("{n} {n} 0 {}", n - 1), "stored transactions and nonces");
    let on_chain =
        rpc(&chain.url, "eth_getTransactionCount", serde_json::json!([dep.hot_wallet(), "latest"]));
    assert_eq!(
        u64::from_str_radix(on_chain.as_str().unwrap().trim_start_matches("0x"), 16).unwrap(),
        u64::try_from(n).unwrap(),
        "the chain counts one transaction per withdrawal"
    );
    // The ledger equals the chain; the audit log verifies.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let (matched, out) = cli_with(&["reconcile", "--config", &dep.cfg], &[]);
        if matched {
            break;
        }
        assert!(Instant::now() < deadline, "reconcile never matched: {out}");
        std::thread::sleep(Duration::from_secs(2));
    }
    ok("audit verify", cli_with(&["audit", "verify", "--config", &dep.cfg], &[]));
    // Both instances report the same shared state, and are ready.
    for api in &apis {
        let (okay, ready) = curl(&["--cacert", &api.ca, &format!("{}/v1/ready", api.url)]).unwrap();
        assert!(okay && ready.contains("\"ready\":true"), "{ready}");
        let (_, metrics) = curl(&[
            "--cacert",
            &api.ca,
            "-H",
            &format!("Authorization: Bearer {}", api.token),
            &format!("{}/metrics", api.url),
        ])
        .unwrap();
        assert!(
            metrics.contains("strongroom_withdrawals_unfinished{state=\"reserved\"} 0"),
            "{metrics}"
        );
        assert!(metrics.contains("strongroom_leader_lease{"), "{metrics}");
    }
    println!(
        "{rounds} rounds, {n} withdrawals, kills (random, after signed, after sent) {kills:?}, {:.1} s",
        elapsed.as_secs_f64()
    );
    drop(instances);
    drop(hosts);
}
