//! What the CLI's test binaries share: the binary, free ports, the test primes, running the
//! CLI and curl, and a local anvil.
#![allow(dead_code)] // Each test binary uses its own part.

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
