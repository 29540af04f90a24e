//! `docs/deploy.md` as test steps, for the deployment test (signer hosts in network
//! namespaces) and the high-availability test (signer nodes on loopback, two API instances):
//! governance genesis, signer hosts, the API host's certificates and configuration on
//! PostgreSQL, the key ceremony, `serve`, an operator token, governance in force.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::*;

/// Where the signer nodes run: separate hosts, or processes on this one.
pub trait SignerHosts {
    /// The address node `n` listens on (`host:port`).
    fn listen(&self, n: u16) -> String;
    /// Where node `n` serves its metrics, on its own loopback.
    fn metrics(&self, n: u16) -> String;
    /// Run a command on host `n`.
    fn run(&self, n: u16, program: &str, args: &[&str]) -> (bool, String);
    /// Run `strongroom ARGS` on host `n`, in the background.
    fn spawn(&mut self, n: u16, args: &[&str], log: &Path);
    /// Kill host `n`'s processes (the host dies).
    fn kill(&mut self, n: u16);
}

/// The processes started on the signer hosts, killed when dropped.
#[derive(Default)]
pub struct Processes(Vec<(u16, Child)>);

impl Processes {
    /// Start `cmd` for host `n`, logging to `log`.
    pub fn spawn(&mut self, n: u16, mut cmd: Command, log: &Path) {
        let child = cmd
            .env("STRONGROOM_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log).unwrap())
            .spawn()
            .unwrap();
        self.0.push((n, child));
    }

    /// Kill host `n`'s processes.
    pub fn kill(&mut self, n: u16) {
        for (_, c) in self.0.iter_mut().filter(|(h, _)| *h == n) {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Processes {
    fn drop(&mut self) {
        for (_, c) in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Three signer nodes as processes on this host, on loopback ports.
pub struct Loopback {
    ports: Vec<(u16, u16)>,
    processes: Processes,
}

impl Loopback {
    pub fn new() -> Loopback {
        Loopback {
            ports: (0..3).map(|_| (free_port(), free_port())).collect(),
            processes: Processes::default(),
        }
    }
    fn ports(&self, n: u16) -> (u16, u16) {
        self.ports[usize::from(n - 1)]
    }
}

impl SignerHosts for Loopback {
    fn listen(&self, n: u16) -> String {
        format!("127.0.0.1:{}", self.ports(n).0)
    }
    fn metrics(&self, n: u16) -> String {
        format!("127.0.0.1:{}", self.ports(n).1)
    }
    fn run(&self, _n: u16, program: &str, args: &[&str]) -> (bool, String) {
        let out = Command::new(program).args(args).stdin(Stdio::null()).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        (out.status.success(), text)
    }
    fn spawn(&mut self, n: u16, args: &[&str], log: &Path) {
        let mut cmd = Command::new(BIN);
        cmd.args(args);
        self.processes.spawn(n, cmd, log);
    }
    fn kill(&mut self, n: u16) {
        self.processes.kill(n);
    }
}

/// A database of our own on the test PostgreSQL, dropped at the end.
pub struct Database {
    base: String,
    name: String,
}

impl Database {
    pub fn create(tag: &str) -> Option<Database> {
        let base = std::env::var("STRONGROOM_TEST_POSTGRES_URL").ok()?;
        let name = format!("sr_{tag}_{}", std::process::id());
        let ok = Command::new("psql")
            .args([base.as_str(), "-qAtc", &format!("CREATE DATABASE {name}")])
            .status()
            .is_ok_and(|s| s.success());
        ok.then_some(Database { base, name })
    }
    pub fn url(&self) -> String {
        strongroom_store::with_database(&self.base, &self.name)
    }
    /// One value from a query (`psql -At`).
    pub fn query(&self, sql: &str) -> String {
        let out = Command::new("psql").args([self.url().as_str(), "-qAtc", sql]).output().unwrap();
        assert!(out.status.success(), "{sql}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
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

/// PostgreSQL for a test, or None when there is none (an error under
/// STRONGROOM_REQUIRE_POSTGRES=1, as in CI).
pub fn postgres(tag: &str) -> Option<Database> {
    let db = Database::create(tag);
    if db.is_none() {
        assert!(
            std::env::var("STRONGROOM_REQUIRE_POSTGRES").map_or(true, |v| v != "1"),
            "PostgreSQL required"
        );
        println!("SKIPPED: no PostgreSQL (STRONGROOM_TEST_POSTGRES_URL)");
    }
    db
}

pub fn ok(what: &str, (ok, out): (bool, String)) -> String {
    assert!(ok, "{what}: {out}");
    out
}

/// The end of a log, for a failure's message.
pub fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

/// A running `strongroom serve`, stopped (killed) when dropped.
pub struct Serve(pub Child);

impl Serve {
    /// Whether it has exited (crashed or was stopped).
    pub fn exited(&mut self) -> bool {
        self.0.try_wait().ok().flatten().is_some()
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The deployment after steps 1–5 of `docs/deploy.md`.
pub struct Deployment {
    pub dir: PathBuf,
    /// The API host's configuration file.
    pub cfg: String,
    /// The API host's certificates.
    pub certs: String,
    /// The governance genesis pin.
    pub gov_pin: String,
    /// `ID@HOST:PORT#PIN` for each node.
    pub peers: Vec<String>,
    /// The port `serve` listens on, as configured.
    pub port: u16,
}

/// Steps 1–5: governance genesis, signer hosts, the API host's identities, the signer
/// nodes started, the API host's configuration (with `extra` appended), database, keys and
/// the key ceremony (`hot-eth-1`, ECDSA, 2 of 3).
pub fn deploy(
    hosts: &mut dyn SignerHosts,
    dir: &Path,
    db_url: &str,
    rpc_url: &str,
    extra: &str,
) -> Deployment {
    let d = |p: &str| dir.join(p);
    let s = |p: &Path| p.to_str().unwrap().to_owned();
    let cli = |args: &[&str]| cli_with(args, &[]);

    // 1. Governance members make their keys; one writes the genesis.
    let gov_pin = governance_genesis(dir, &d("governance"), "2");

    // 2. Each signer host makes its identity (on the host: its own address).
    let node_dir = |n: u16| s(&d(&format!("signer-{n}")));
    let mut pins = Vec::new();
    for n in 1..=3u16 {
        let args = ["signer", "init", "--dir", &node_dir(n), "--id", &n.to_string()];
        let (okay, out) = hosts.run(n, BIN, &[&args[..], &["--listen", &hosts.listen(n)]].concat());
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
    let peers: Vec<String> = (1..=3u16)
        .map(|m| format!("{m}@{}#{}", hosts.listen(m), pins[usize::from(m - 1)]))
        .collect();
    for n in 1..=3u16 {
        let mut args = vec![
            "signer".to_owned(),
            "init".into(),
            "--dir".into(),
            node_dir(n),
            "--id".into(),
            n.to_string(),
            "--listen".into(),
            hosts.listen(n),
            "--orchestrator".into(),
            orch_pin.trim().into(),
            "--pusher".into(),
            pusher_pin.trim().into(),
            "--governance".into(),
            s(&d("governance")),
            "--metrics-listen".into(),
            hosts.metrics(n),
            "--test-primes".into(),
            primes_fixture(),
        ];
        for m in (1..=3u16).filter(|m| *m != n) {
            args.extend(["--peer".into(), peers[usize::from(m - 1)].clone()]);
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
                hosts.listen(n),
                pins[usize::from(n - 1)]
            )
        })
        .collect();
    let config = d("strongroom.toml");
    std::fs::write(
        &config,
        format!(
            r#"listen = "127.0.0.1:{port}"
database_url = "{db_url}"
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
rpc_url = "{rpc_url}"
confirmations = 1
hot_wallet = "hot-eth-1"
fee_asset = "ETH"
{extra}"#,
            data = s(&d("data")),
            nodes = nodes.join(", "),
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
    Deployment { dir: dir.to_path_buf(), cfg, certs, gov_pin, peers, port }
}

impl Deployment {
    pub fn path(&self, p: &str) -> PathBuf {
        self.dir.join(p)
    }

    /// The API's CA (its own certificate).
    pub fn ca(&self) -> String {
        format!("{}/api.pem", self.certs)
    }

    /// Step 6: start `strongroom serve` (logging to `DIR/<name>.log`, with `envs`), and wait
    /// until `url` answers.
    pub fn serve(&self, name: &str, envs: &[(&str, String)], port: u16) -> Serve {
        let log = self.path(&format!("{name}.log"));
        let serve = Serve(
            Command::new(BIN)
                .args(["serve", "--config", &self.cfg])
                .env("STRONGROOM_LOG", "info")
                .env("STRONGROOM_LISTEN", format!("127.0.0.1:{port}"))
                .envs(envs.iter().map(|(k, v)| (*k, v.as_str())))
                .stdout(Stdio::null())
                .stderr(std::fs::OpenOptions::new().create(true).append(true).open(&log).unwrap())
                .spawn()
                .unwrap(),
        );
        let url = format!("https://localhost:{port}");
        let deadline = Instant::now() + Duration::from_secs(120);
        while !curl(&["--cacert", &self.ca(), &format!("{url}/v1/health")])
            .is_some_and(|(ok, _)| ok)
        {
            assert!(Instant::now() < deadline, "serve never answered: {}", tail(&log));
            std::thread::sleep(Duration::from_millis(200));
        }
        serve
    }

    /// An operator token, written to `DIR/operator.token`.
    pub fn operator_token(&self) -> String {
        let made = Command::new(BIN)
            .args([
                "token", "create", "--config", &self.cfg, "--name", "backend", "--role", "operator",
            ])
            .output()
            .unwrap();
        assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
        let token = String::from_utf8_lossy(&made.stdout).trim().to_owned();
        std::fs::write(self.path("operator.token"), &token).unwrap();
        token
    }

    /// The CLI's environment for the API at `url` with the operator token.
    pub fn api_env(&self, url: &str) -> Vec<(&'static str, String)> {
        vec![
            ("STRONGROOM_ADDR", url.to_owned()),
            ("STRONGROOM_CACERT", self.ca()),
            ("STRONGROOM_TOKEN_FILE", self.path("operator.token").to_str().unwrap().to_owned()),
        ]
    }

    /// Step 7: governance in force: installed, a policy signed by two admins, pushed to the
    /// nodes.
    pub fn govern(&self, url: &str) {
        let envs = self.api_env(url);
        let run = |args: &[&str]| cli_with(args, &envs);
        let dir = self.path("governance");
        ok("governance install", run(&["governance", "install", "--dir", dir.to_str().unwrap()]));
        let policy = self.path("policy.toml");
        let fees = "[[fees]]\nchain = \"eip155:31337\"\nfee_asset = \"ETH\"\nmax_fee = \"10000000000000000\"\n";
        std::fs::write(&policy, eth_tiers_policy(fees)).unwrap();
        ok(
            "propose",
            run(&["governance", "propose", "policy", "--file", policy.to_str().unwrap()]),
        );
        let sign = |who: &str| {
            let key = self.path(&format!("{who}.key"));
            run(&[
                "governance",
                "sign",
                "--member",
                who,
                "--key",
                key.to_str().unwrap(),
                "--pin",
                &self.gov_pin,
                "--yes",
            ])
        };
        ok("ada signs", sign("ada"));
        let out = ok("bob signs", sign("bob"));
        assert!(out.contains("committed"), "{out}");
        let mut push = vec!["governance", "push", "--pin", &self.gov_pin];
        for n in &self.peers {
            push.extend(["--node", n.as_str()]);
        }
        let (pc, pk) = (
            format!("{}/pusher-ada.pem", self.certs),
            format!("{}/pusher-ada-key.pem", self.certs),
        );
        push.extend(["--cert", &pc, "--key", &pk]);
        let out = ok("governance push", run(&push));
        assert!((1..=3).all(|n| out.contains(&format!("node {n}: 1 entries"))), "{out}");
    }

    /// The hot wallet's address, from `DATA/chain.json`.
    pub fn hot_wallet(&self) -> String {
        let chain_file: serde_json::Value =
            serde_json::from_slice(&std::fs::read(self.path("data/chain.json")).unwrap()).unwrap();
        chain_file["wallets"][0][1].as_str().unwrap().to_owned()
    }
}

/// The API over HTTPS with the server's certificate as the trust anchor.
pub struct Api {
    pub url: String,
    pub ca: String,
    pub token: String,
}

impl Api {
    pub fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> serde_json::Value {
        api_call(&self.url, &self.ca, &self.token, method, path, body)
    }

    pub fn wait_state(&self, id: &str, state: &str, secs: u64) -> serde_json::Value {
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

pub fn balance(url: &str, address: &str) -> u128 {
    let v = rpc(url, "eth_getBalance", serde_json::json!([address, "latest"]));
    u128::from_str_radix(v.as_str().unwrap().trim_start_matches("0x"), 16).unwrap()
}

pub fn send_eth(url: &str, from: &str, to: &str, wei: u128) {
    rpc(
        url,
        "eth_sendTransaction",
        serde_json::json!([{"from": from, "to": to, "value": format!("{wei:#x}")}]),
    );
}

pub const ETH: u128 = 1_000_000_000_000_000_000;
