//! `docs/deploy.md`, step for step: three signer nodes, each on its own host (a network
//! namespace with its own address on a veth link), set up with `strongroom signer init`; the
//! API host runs `strongroom serve --config` on PostgreSQL against anvil; keys are made with
//! `strongroom mpc` against the remote nodes; governance is installed and pushed by its
//! members; a customer's deposit is credited, a governed withdrawal approved, signed by two
//! nodes, broadcast and settled; reconcile matches and `audit verify` passes; one signer
//! host's process dies and a withdrawal still settles. Also: the systemd units pass
//! `systemd-analyze verify`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::print_stdout,
    clippy::print_stderr
)] // Test code.
#![allow(clippy::disallowed_methods)] // A test of real processes waits on the real clock.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::*;

/// Whether a test that needs root and `ip netns` must run (CI) or may skip.
fn netns_required() -> bool {
    std::env::var("STRONGROOM_REQUIRE_NETNS").is_ok_and(|v| v == "1")
}

fn ip(args: &[&str]) -> bool {
    Command::new("ip").args(args).stderr(Stdio::null()).status().is_ok_and(|s| s.success())
}

/// Three hosts on one link: a bridge in this (the API host's) namespace, and per signer host a
/// namespace with a veth pair. Removed when dropped, with every process started in them.
struct Hosts {
    tag: String,
    subnet: String,
    processes: Processes,
}

impl Hosts {
    fn create() -> Option<Hosts> {
        let pid = std::process::id();
        let tag = format!("srd{}", pid % 100_000);
        let subnet = format!("10.214.{}", pid % 250 + 1);
        let bridge = format!("{tag}b");
        let mut ok = ip(&["link", "add", &bridge, "type", "bridge"])
            && ip(&["addr", "add", &format!("{subnet}.1/24"), "dev", &bridge])
            && ip(&["link", "set", &bridge, "up"]);
        let hosts =
            Hosts { tag: tag.clone(), subnet: subnet.clone(), processes: Processes::default() };
        for n in 1..=3 {
            let ns = format!("{tag}n{n}");
            let (outside, inside) = (format!("{tag}h{n}"), format!("{tag}v{n}"));
            let exec = |args: &[&str]| {
                let mut all = vec!["netns", "exec", ns.as_str(), "ip"];
                all.extend(args);
                ip(&all)
            };
            ok = ok
                && ip(&["netns", "add", &ns])
                && ip(&["link", "add", &outside, "type", "veth", "peer", "name", &inside])
                && ip(&["link", "set", &inside, "netns", &ns])
                && ip(&["link", "set", &outside, "master", &bridge])
                && ip(&["link", "set", &outside, "up"])
                && exec(&["addr", "add", &format!("{subnet}.1{n}/24"), "dev", &inside])
                && exec(&["link", "set", &inside, "up"])
                && exec(&["link", "set", "lo", "up"]);
        }
        if ok {
            Some(hosts)
        } else {
            None
        }
    }

    fn addr(&self, n: u16) -> String {
        format!("{}.1{n}", self.subnet)
    }

    fn ns(&self, n: u16) -> String {
        format!("{}n{n}", self.tag)
    }
}

impl SignerHosts for Hosts {
    fn listen(&self, n: u16) -> String {
        format!("{}:7101", self.addr(n))
    }

    fn metrics(&self, _n: u16) -> String {
        "127.0.0.1:9101".into()
    }

    /// Run `strongroom ARGS` on signer host `n`, in the background.
    fn spawn(&mut self, n: u16, args: &[&str], log: &Path) {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.ns(n), BIN]).args(args);
        self.processes.spawn(n, cmd, log);
    }

    /// Kill host `n`'s process (the host dies).
    fn kill(&mut self, n: u16) {
        self.processes.kill(n);
    }

    /// Run a command inside host `n`.
    fn run(&self, n: u16, program: &str, args: &[&str]) -> (bool, String) {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.ns(n), program])
            .args(args)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        (out.status.success(), text)
    }
}

impl Drop for Hosts {
    fn drop(&mut self) {
        // The processes go before their namespaces.
        self.processes = Processes::default();
        for n in 1..=3 {
            ip(&["netns", "del", &self.ns(n)]);
        }
        ip(&["link", "del", &format!("{}b", self.tag)]);
    }
}

#[test]
fn deploy_md_three_signer_hosts_and_serve_on_postgres_move_money() {
    let Some(db) = postgres("deploy") else { return };
    let Some(mut hosts) = Hosts::create() else {
        assert!(!netns_required(), "STRONGROOM_REQUIRE_NETNS=1 but `ip netns` with veth failed");
        println!("SKIPPED: network namespaces need root and iproute2");
        return;
    };
    let Some(chain) = start_anvil(&["--block-time", "1"]) else { return };
    let dir = tempfile::tempdir().unwrap();
    let cli = |args: &[&str]| cli_with(args, &[]);

    // 1.–5. Governance genesis, signer hosts, the API host, the key ceremony.
    let dep = deploy(&mut hosts, dir.path(), &db.url(), &chain.url, "");
    let d = |p: &str| dep.path(p);
    let cfg = dep.cfg.clone();
    let key = |id: &str| d(&format!("{id}.key")).to_str().unwrap().to_owned();

    // 6. Start the API and the engine.
    let serve = dep.serve("serve", &[], dep.port);
    let url = format!("https://localhost:{}", dep.port);
    let token = dep.operator_token();
    let api = Api { url: url.clone(), ca: dep.ca(), token };

    // 7. Governance in force: installed, a policy signed by two admins, pushed to the nodes.
    dep.govern(&url);
    let envs = dep.api_env(&url);
    let run = |args: &[&str]| cli_with(args, &envs);

    // The hot wallet's gas: sent to its address, credited to the treasury by the watcher.
    let hot = dep.hot_wallet();
    let accounts = rpc(&chain.url, "eth_accounts", serde_json::json!([]));
    let funder = accounts[0].as_str().unwrap().to_owned();
    let customer_wallet = accounts[1].as_str().unwrap().to_owned();
    send_eth(&chain.url, &funder, &hot, 2 * ETH);

    // A customer deposits 1 ETH to their own address; the watcher credits it.
    let c = api.call("POST", "/v1/customers", Some(serde_json::json!({"external_id": "erin"})));
    let cid = c["id"].as_str().unwrap().to_owned();
    let a = api.call(
        "POST",
        &format!("/v1/customers/{cid}/deposit-address"),
        Some(serde_json::json!({"asset": "ETH"})),
    );
    let deposit_address = a["address"].as_str().unwrap().to_owned();
    send_eth(&chain.url, &customer_wallet, &deposit_address, ETH);
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let b = api.call("GET", &format!("/v1/customers/{cid}/balances"), None);
        if b.to_string().contains("1000000000000000000") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "deposit never credited: {b}\n{}",
            tail(&d("serve.log"))
        );
        std::thread::sleep(Duration::from_millis(500));
    }

    // A governed withdrawal: 0.5 ETH needs two approvers; then two nodes sign it.
    let dest = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed";
    let before = balance(&chain.url, dest);
    let withdraw = |amount: &str| {
        let w = api.call(
            "POST",
            "/v1/withdrawals",
            Some(serde_json::json!({"customer_id": cid, "asset": "ETH", "destination": dest, "amount": amount})),
        );
        w["id"].as_str().unwrap_or_else(|| panic!("{w}")).to_owned()
    };
    let large = withdraw("0.5");
    std::thread::sleep(Duration::from_secs(2));
    let w = api.wait_state(&large, "reserved", 5);
    assert!(w["policy"]["explanation"].as_str().unwrap_or_default().contains("0 of 2"), "{w}");
    for who in ["ann", "al"] {
        ok(
            who,
            run(&["withdrawal", "approve", &large, "--member", who, "--key", &key(who), "--yes"]),
        );
    }
    api.wait_state(&large, "settled", 180);
    assert_eq!(balance(&chain.url, dest) - before, ETH / 2);

    // 8. Check: node health and metrics on the node's own loopback, reconcile, audit.
    let (okay, metrics) = hosts.run(1, "curl", &["-sS", "http://127.0.0.1:9101/metrics"]);
    assert!(okay && metrics.contains("strongroom_signer_keys{node=\"1\"} 1"), "{metrics}");
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let (matched, out) = cli(&["reconcile", "--config", &cfg]);
        if matched {
            break;
        }
        assert!(Instant::now() < deadline, "reconcile never matched: {out}");
        std::thread::sleep(Duration::from_secs(2));
    }
    ok("audit verify", cli(&["audit", "verify", "--config", &cfg]));

    // One signer host dies: the other two still sign, and a withdrawal settles.
    hosts.kill(3);
    let before = balance(&chain.url, dest);
    let small = withdraw("0.05");
    api.wait_state(&small, "settled", 180);
    assert_eq!(balance(&chain.url, dest) - before, ETH / 20);
    drop(serve);
    drop(hosts);
}

/// The units in `deploy/systemd` are valid systemd units and keep their hardening.
#[test]
fn systemd_units_verify_and_are_hardened() {
    if Command::new("systemd-analyze").arg("--version").output().is_err() {
        assert!(std::env::var("CI").is_err(), "systemd-analyze is needed in CI");
        println!("SKIPPED: no systemd-analyze");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let units = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../deploy/systemd");
    for name in ["strongroom.service", "strongroom-signer.service"] {
        let text = std::fs::read_to_string(units.join(name)).unwrap();
        for needed in [
            "NoNewPrivileges=yes",
            "ProtectSystem=strict",
            "PrivateTmp=yes",
            "MemoryDenyWriteExecute=yes",
            "StateDirectory=",
            "User=",
            "KillSignal=SIGTERM",
        ] {
            assert!(text.contains(needed), "{name} lacks {needed}");
        }
        // The unit as installed names /usr/local/bin/strongroom; verify it with this build.
        let here = dir.path().join(name);
        std::fs::write(&here, text.replace("/usr/local/bin/strongroom", BIN)).unwrap();
        let out = Command::new("systemd-analyze")
            .args(["verify", "--man=no", here.to_str().unwrap()])
            .output()
            .unwrap();
        let said = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success() && said.trim().is_empty(), "{name}: {said}");
        let out = Command::new("systemd-analyze")
            .args(["security", "--offline=true", here.to_str().unwrap()])
            .output()
            .unwrap();
        let said = String::from_utf8_lossy(&out.stdout);
        let level: f64 = said
            .lines()
            .find_map(|l| l.split("exposure level for ").nth(1))
            .and_then(|l| l.split(':').nth(1))
            .and_then(|l| l.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{name}: no exposure level in {said}"));
        assert!(
            level <= 2.0,
            "{name}: exposure {level} (more than 2.0 means a hardening line went)"
        );
    }
}
