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
use std::process::{Child, Command, Stdio};
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
    processes: Vec<(u16, Child)>,
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
        let hosts = Hosts { tag: tag.clone(), subnet: subnet.clone(), processes: Vec::new() };
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

    /// Run `strongroom ARGS` on signer host `n`, in the background.
    fn spawn(&mut self, n: u16, args: &[&str], log: &Path) {
        let child = Command::new("ip")
            .args(["netns", "exec", &self.ns(n), BIN])
            .args(args)
            .env("STRONGROOM_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log).unwrap())
            .spawn()
            .unwrap();
        self.processes.push((n, child));
    }

    /// Kill host `n`'s process (the host dies).
    fn kill(&mut self, n: u16) {
        for (_, c) in self.processes.iter_mut().filter(|(h, _)| *h == n) {
            let _ = c.kill();
            let _ = c.wait();
        }
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
        for (_, c) in &mut self.processes {
            let _ = c.kill();
            let _ = c.wait();
        }
        for n in 1..=3 {
            ip(&["netns", "del", &self.ns(n)]);
        }
        ip(&["link", "del", &format!("{}b", self.tag)]);
    }
}

/// A running `strongroom serve`, stopped when dropped.
struct Serve(Child);

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A database of our own on the test PostgreSQL, dropped at the end.
struct Database {
    base: String,
    name: String,
}

impl Database {
    fn create() -> Option<Database> {
        let base = std::env::var("STRONGROOM_TEST_POSTGRES_URL").ok()?;
        let name = format!("sr_deploy_{}", std::process::id());
        let ok = Command::new("psql")
            .args([base.as_str(), "-qAtc", &format!("CREATE DATABASE {name}")])
            .status()
            .is_ok_and(|s| s.success());
        ok.then_some(Database { base, name })
    }
    fn url(&self) -> String {
        strongroom_store::with_database(&self.base, &self.name)
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        let _ = Command::new("psql")
            .args([
                self.base.as_str(),
                "-qAtc",
                &format!("DROP DATABASE {} WITH (FORCE)", self.name),
            ])
            .status();
    }
}

fn ok(what: &str, (ok, out): (bool, String)) -> String {
    assert!(ok, "{what}: {out}");
    out
}

/// The API over HTTPS with the server's certificate as the trust anchor.
struct Api {
    url: String,
    ca: String,
    token: String,
}

impl Api {
    fn call(&self, method: &str, path: &str, body: Option<serde_json::Value>) -> serde_json::Value {
        api_call(&self.url, &self.ca, &self.token, method, path, body)
    }

    fn wait_state(&self, id: &str, state: &str, secs: u64) -> serde_json::Value {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let w = self.call("GET", &format!("/v1/withdrawals/{id}"), None);
            if w["state"] == state {
                return w;
            }
            assert!(Instant::now() < deadline, "withdrawal never {state}: {w}");
            std::thread::sleep(Duration::from_millis(500));
        }
    }
}

fn balance(url: &str, address: &str) -> u128 {
    let v = rpc(url, "eth_getBalance", serde_json::json!([address, "latest"]));
    u128::from_str_radix(v.as_str().unwrap().trim_start_matches("0x"), 16).unwrap()
}

fn send_eth(url: &str, from: &str, to: &str, wei: u128) {
    rpc(
        url,
        "eth_sendTransaction",
        serde_json::json!([{"from": from, "to": to, "value": format!("{wei:#x}")}]),
    );
}

/// The end of a log, for a failure's message.
fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

const ETH: u128 = 1_000_000_000_000_000_000;

#[test]
fn deploy_md_three_signer_hosts_and_serve_on_postgres_move_money() {
    if Database::create().map(drop).is_none() {
        assert!(
            std::env::var("STRONGROOM_REQUIRE_POSTGRES").map_or(true, |v| v != "1"),
            "PostgreSQL required"
        );
        println!("SKIPPED: no PostgreSQL (STRONGROOM_TEST_POSTGRES_URL)");
        return;
    }
    let Some(mut hosts) = Hosts::create() else {
        assert!(!netns_required(), "STRONGROOM_REQUIRE_NETNS=1 but `ip netns` with veth failed");
        println!("SKIPPED: network namespaces need root and iproute2");
        return;
    };
    let Some(chain) = start_anvil(&["--block-time", "1"]) else { return };
    let db = Database::create().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let d = |p: &str| dir.path().join(p);
    let s = |p: &Path| p.to_str().unwrap().to_owned();
    let cli = |args: &[&str]| cli_with(args, &[]);

    // 1. Governance members make their keys; one writes the genesis.
    let key = |id: &str| s(&d(&format!("{id}.key")));
    let gov_pin = governance_genesis(dir.path(), &d("governance"), "2");

    // 2. Each signer host makes its identity (on the host: its own address).
    let node_dir = |n: u16| s(&d(&format!("signer-{n}")));
    let addrs: Vec<String> = (1..=3u16).map(|n| hosts.addr(n)).collect();
    let listen = |n: u16| format!("{}:7101", addrs[usize::from(n - 1)]);
    let mut pins = Vec::new();
    for n in 1..=3u16 {
        let args = ["signer", "init", "--dir", &node_dir(n), "--id", &n.to_string()];
        let (okay, out) = hosts.run(n, BIN, &[&args[..], &["--listen", &listen(n)]].concat());
        assert!(okay && out.contains("needs peers"), "{out}");
        pins.push(out.lines().next().unwrap().trim().to_owned());
    }
    let key_mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(d("signer-1/kek")).unwrap().permissions(),
    );
    assert_eq!(key_mode & 0o777, 0o600, "the key-encryption key is the node's alone");

    // 3. The API host makes its identities; a member makes a pusher certificate.
    let certs = s(&d("api"));
    let orch_pin = ok(
        "orchestrator certificate",
        cli(&["certificate", "--dir", &certs, "--name", "orchestrator"]),
    );
    ok(
        "api certificate",
        cli(&["certificate", "--dir", &certs, "--name", "api", "--host", "localhost"]),
    );
    let pusher_pin =
        ok("pusher certificate", cli(&["certificate", "--dir", &certs, "--name", "pusher-ada"]));

    // 4. Each signer host writes its configuration and starts.
    let peer = |m: u16| format!("{m}@{}#{}", listen(m), pins[usize::from(m - 1)]);
    for n in 1..=3u16 {
        let mut args = vec![
            "signer".to_owned(),
            "init".into(),
            "--dir".into(),
            node_dir(n),
            "--id".into(),
            n.to_string(),
            "--listen".into(),
            listen(n),
            "--orchestrator".into(),
            orch_pin.trim().into(),
            "--pusher".into(),
            pusher_pin.trim().into(),
            "--governance".into(),
            s(&d("governance")),
            "--metrics-listen".into(),
            "127.0.0.1:9101".into(),
            "--test-primes".into(),
            primes_fixture(),
        ];
        for m in (1..=3u16).filter(|m| *m != n) {
            args.extend(["--peer".into(), peer(m)]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (okay, out) = hosts.run(n, BIN, &args);
        assert!(okay && out.starts_with(&pins[usize::from(n - 1)]), "the pin is kept: {out}");
        let config = format!("{}/signer.toml", node_dir(n));
        hosts.spawn(n, &["signer", "--config", &config], &d(&format!("signer-{n}.log")));
    }

    // 5. The API host: configuration, database, keys, key ceremony.
    let port = free_port();
    let nodes: Vec<String> = (1..=3u16)
        .map(|n| {
            format!(
                "{{ id = {n}, addr = \"{}\", pin = \"{}\" }}",
                listen(n),
                pins[usize::from(n - 1)]
            )
        })
        .collect();
    let config = d("strongroom.toml");
    std::fs::write(
        &config,
        format!(
            r#"listen = "127.0.0.1:{port}"
database_url = "{db}"
data_dir = "{data}"

[tls]
cert = "{certs}/api.pem"
key = "{certs}/api-key.pem"

[[assets]]
symbol = "ETH"
chain = "eip155:31337"
decimals = 18
min_withdrawal = "0.001"
fee_cap = "10000000000000000"

[signers]
cert = "{certs}/orchestrator.pem"
key = "{certs}/orchestrator-key.pem"
nodes = [{nodes}]

[[chains]]
kind = "ethereum"
chain = "eip155:31337"
rpc_url = "{rpc}"
confirmations = 1
hot_wallet = "hot-eth-1"
fee_asset = "ETH"
"#,
            db = db.url(),
            data = s(&d("data")),
            nodes = nodes.join(", "),
            rpc = chain.url,
        ),
    )
    .unwrap();
    std::fs::create_dir_all(d("data")).unwrap();
    let cfg = s(&config);
    ok("migrate", cli(&["migrate", "--config", &cfg]));
    ok("keys init", cli(&["keys", "init", "--config", &cfg]));
    // Every node must be up for the ceremony; give them a moment to listen.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let out = ok("mpc status", cli(&["mpc", "status", "--config", &cfg]));
        if !out.contains("error") {
            break;
        }
        assert!(Instant::now() < deadline, "signer hosts unreachable: {out}");
        std::thread::sleep(Duration::from_millis(500));
    }
    ok("mpc aux-info", cli(&["mpc", "aux-info", "--config", &cfg]));
    let keygen = [
        "mpc",
        "keygen",
        "--config",
        &cfg,
        "--key",
        "hot-eth-1",
        "--scheme",
        "ecdsa",
        "--threshold",
        "2",
    ];
    let made = ok("mpc keygen", cli(&keygen));
    assert!(made.contains("\"threshold\":2"), "{made}");
    let again = cli(&keygen);
    assert!(!again.0, "a key id is made once: {}", again.1);

    // 6. Start the API and the engine.
    let serve = Serve(
        Command::new(BIN)
            .args(["serve", "--config", &cfg])
            .env("STRONGROOM_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(d("serve.log")).unwrap())
            .spawn()
            .unwrap(),
    );
    let ca = format!("{certs}/api.pem");
    let url = format!("https://localhost:{port}");
    let deadline = Instant::now() + Duration::from_secs(120);
    while !curl(&["--cacert", &ca, &format!("{url}/v1/health")]).is_some_and(|(ok, _)| ok) {
        assert!(
            Instant::now() < deadline,
            "serve never answered: {}",
            std::fs::read_to_string(d("serve.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    let made = Command::new(BIN)
        .args(["token", "create", "--config", &cfg, "--name", "backend", "--role", "operator"])
        .output()
        .unwrap();
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    let token = String::from_utf8_lossy(&made.stdout).into_owned();
    let token_file = d("operator.token");
    std::fs::write(&token_file, token.trim()).unwrap();
    let api = Api { url: url.clone(), ca: ca.clone(), token: token.trim().to_owned() };

    // 7. Governance in force: installed, a policy signed by two admins, pushed to the nodes.
    let envs = vec![
        ("STRONGROOM_ADDR", url.clone()),
        ("STRONGROOM_CACERT", ca.clone()),
        ("STRONGROOM_TOKEN_FILE", s(&token_file)),
    ];
    let run = |args: &[&str]| cli_with(args, &envs);
    ok("governance install", run(&["governance", "install", "--dir", &s(&d("governance"))]));
    let policy = d("policy.toml");
    let fees = "[[fees]]\nchain = \"eip155:31337\"\nfee_asset = \"ETH\"\nmax_fee = \"10000000000000000\"\n";
    std::fs::write(&policy, eth_tiers_policy(fees)).unwrap();
    ok("propose", run(&["governance", "propose", "policy", "--file", &s(&policy)]));
    let sign = |who: &str| {
        run(&[
            "governance",
            "sign",
            "--member",
            who,
            "--key",
            &key(who),
            "--pin",
            &gov_pin,
            "--yes",
        ])
    };
    ok("ada signs", sign("ada"));
    let out = ok("bob signs", sign("bob"));
    assert!(out.contains("committed"), "{out}");
    let mut push = vec!["governance", "push", "--pin", &gov_pin];
    let node_args: Vec<String> = (1..=3u16).map(peer).collect();
    for n in &node_args {
        push.extend(["--node", n.as_str()]);
    }
    let (pc, pk) = (format!("{certs}/pusher-ada.pem"), format!("{certs}/pusher-ada-key.pem"));
    push.extend(["--cert", &pc, "--key", &pk]);
    let out = ok("governance push", run(&push));
    assert!((1..=3).all(|n| out.contains(&format!("node {n}: 1 entries"))), "{out}");

    // The hot wallet's gas: sent to its address, credited to the treasury by the watcher.
    let chain_file: serde_json::Value =
        serde_json::from_slice(&std::fs::read(d("data/chain.json")).unwrap()).unwrap();
    let hot = chain_file["wallets"][0][1].as_str().unwrap().to_owned();
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
