//! What the CLI's test binaries share: the binary, free ports, the test primes, running the
//! CLI and curl, and a local anvil.
#![allow(dead_code)] // Each test binary uses its own part.

pub mod deployment;
pub use deployment::*;
pub mod dev;
#[allow(unused_imports)] // Not every test binary starts a dev stack.
pub use dev::*;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

pub const BIN: &str = env!("CARGO_BIN_EXE_strongroom");

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

pub fn primes_fixture() -> String {
    format!("{}/../mpc/tests/fixtures/test-primes.json", env!("CARGO_MANIFEST_DIR"))
}

/// The CLI with `envs` set: whether it succeeded, and what it printed (stdout, then stderr).
pub fn cli_with(args: &[&str], envs: &[(&str, String)]) -> (bool, String) {
    let out = Command::new(BIN)
        .args(args)
        .envs(envs.iter().map(|(k, v)| (*k, v.as_str())))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

pub fn curl(args: &[&str]) -> Option<(bool, String)> {
    let out = Command::new("curl").args(["-sS", "--max-time", "10"]).args(args).output().ok()?;
    Some((
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    ))
}

/// A real Ethereum node for a test, or None when anvil is not installed (an error under
/// STRONGROOM_REQUIRE_ANVIL=1, as in CI).
pub struct TestChain {
    pub child: Child,
    pub url: String,
}

impl Drop for TestChain {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn start_anvil(extra: &[&str]) -> Option<TestChain> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let Some(bin) = strongroom_chain_ethereum::anvil::find(root) else {
        assert!(
            std::env::var_os("STRONGROOM_REQUIRE_ANVIL").is_none(),
            "STRONGROOM_REQUIRE_ANVIL is set but anvil is not installed"
        );
        println!("SKIPPED: no anvil (scripts/install-eth-tools)");
        return None;
    };
    let mut child = Command::new(bin)
        .args(["--host", "127.0.0.1", "--port", "0"])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let url = loop {
        let line = lines.next().expect("anvil printed where it listens").unwrap();
        if let Some(addr) = line.trim().strip_prefix("Listening on ") {
            break format!("http://{addr}");
        }
    };
    std::thread::spawn(move || for _ in lines {});
    Some(TestChain { child, url })
}

pub fn rpc(url: &str, method: &str, params: serde_json::Value) -> serde_json::Value {
    let body = serde_json::json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params});
    let (ok, out) =
        curl(&["-X", "POST", "-H", "Content-Type: application/json", "-d", &body.to_string(), url])
            .unwrap();
    assert!(ok, "{out}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(v.get("error").is_none(), "{method}: {v}");
    v["result"].clone()
}

/// The members of a test genesis: three admins (quorum 2), two approvers, a security officer.
pub const MEMBERS: [(&str, &str); 6] = [
    ("ada", "admin"),
    ("bob", "admin"),
    ("cy", "admin"),
    ("ann", "approver"),
    ("al", "approver"),
    ("sec", "security_officer"),
];

/// Each member makes a key (`DIR/<id>.key`) and one writes the genesis in `gov`, with ETH on
/// the dev chain and this time-lock; returns the genesis pin.
pub fn governance_genesis(
    dir: &std::path::Path,
    gov: &std::path::Path,
    delay_secs: &str,
) -> String {
    let g = gov.to_str().unwrap();
    let mut init = vec![
        "governance".to_owned(),
        "init".into(),
        "--dir".into(),
        g.into(),
        "--quorum".into(),
        "2".into(),
        "--whitelist-delay-secs".into(),
        delay_secs.into(),
        "--asset".into(),
        "eip155:31337:ETH:18".into(),
    ];
    for (id, role) in MEMBERS {
        let key = dir.join(format!("{id}.key"));
        let (ok, out) = cli_with(&["governance", "keygen", "--out", key.to_str().unwrap()], &[]);
        assert!(ok, "{out}");
        init.extend(["--member".into(), format!("{id}:{}:{role}", out.trim())]);
    }
    let (ok, out) = cli_with(&init.iter().map(String::as_str).collect::<Vec<_>>(), &[]);
    assert!(ok, "{out}");
    std::fs::read_to_string(gov.join("genesis.pin")).unwrap().trim().to_owned()
}

/// A tiered ETH policy: internal movements allowed, up to 0.1 ETH allowed, more needs two
/// approvers, anything else blocked; `extra` appends velocity limits or fee ceilings.
pub fn eth_tiers_policy(extra: &str) -> String {
    format!(
        r#"version = 1
[[rules]]
name = "internal"
when = {{ destinations = ["internal"] }}
action = {{ kind = "allow" }}
[[rules]]
name = "small-eth"
when = {{ assets = ["ETH"], max_amount = "100000000000000000" }}
action = {{ kind = "allow" }}
[[rules]]
name = "large-eth"
when = {{ assets = ["ETH"] }}
action = {{ kind = "approvals", count = 2, roles = ["approver"] }}
[[rules]]
name = "other"
action = {{ kind = "block", reason = "no rule for this asset" }}
{extra}"#
    )
}

/// Propose a `ledger_credit` of `wei` base units of ETH for customer `cid` (members then
/// sign it); what the CLI printed must say it succeeded.
pub fn propose_ledger_credit(envs: &[(&str, String)], cid: &str, wei: &str, reference: &str) {
    let (ok, out) = cli_with(
        &[
            "governance",
            "propose",
            "ledger-credit",
            "--customer",
            cid,
            "--asset",
            "ETH",
            "--amount",
            wei,
            "--reference",
            reference,
        ],
        envs,
    );
    assert!(ok, "{out}");
}

/// A fresh idempotency key per call.
pub fn uuid_like() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    format!("{}-{}", std::process::id(), N.fetch_add(1, Ordering::SeqCst))
}

/// One API call over HTTPS with curl, trusting `ca`: the JSON answer (a failure to reach
/// the server fails the test).
pub fn api_call(
    base: &str,
    ca: &str,
    token: &str,
    method: &str,
    path: &str,
    body: Option<serde_json::Value>,
) -> serde_json::Value {
    let auth = format!("Authorization: Bearer {token}");
    let url = format!("{base}{path}");
    let key = format!("Idempotency-Key: k-{}", uuid_like());
    let mut args = vec!["--cacert", ca, "-X", method, "-H", &auth, "-H", &key];
    let text;
    if let Some(b) = &body {
        text = b.to_string();
        args.extend(["-H", "Content-Type: application/json", "-d", &text]);
    }
    args.push(&url);
    let (ok, out) = curl(&args).unwrap();
    assert!(ok, "{method} {path}: {out}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

/// The interop tools' python (`scripts/install-interop-tools`) with `module` importable, or
/// None to skip (a failure where `STRONGROOM_REQUIRE_INTEROP` is set, as in `scripts/test`).
#[allow(dead_code)] // Not every test binary uses it.
pub fn interop_python(module: &str) -> Option<std::path::PathBuf> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let python = std::env::var("STRONGROOM_INTEROP_PYTHON")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| root.join("tools/interop/.venv/bin/python"));
    let ok = Command::new(&python)
        .args(["-c", &format!("import {module}")])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        assert!(
            std::env::var_os("STRONGROOM_REQUIRE_INTEROP").is_none(),
            "{module} is missing: run scripts/install-interop-tools"
        );
        eprintln!("skipping: no {module} (scripts/install-interop-tools)");
        return None;
    }
    Some(python)
}
