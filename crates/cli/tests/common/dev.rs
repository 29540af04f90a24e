//! `strongroom dev` as a test runs it: started on free ports, its banner read, killed on drop.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::*;

/// A running `strongroom dev` (killed when dropped): its URL, CA and operator token.
pub struct Dev {
    pub child: Child,
    pub url: String,
    pub ca: String,
    pub token: String,
}

impl Drop for Dev {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A base port with the two after it free too (for the three signer nodes).
pub fn free_port_run() -> u16 {
    loop {
        let base = free_port();
        if base < 65000
            && (1..3).all(|i| std::net::TcpListener::bind(("127.0.0.1", base + i)).is_ok())
        {
            return base;
        }
    }
}

pub fn start_dev(data_dir: &std::path::Path) -> Dev {
    start_dev_with(data_dir, &[], &[])
}

/// `strongroom dev` with `extra` arguments. A stack for Ethereum runs without Bitcoin (its key
/// and presignature pools would only load the machine the other tests share); a test of
/// Bitcoin passes `--no-ethereum` or a `--btc…`/`--hot-btc…` flag.
pub fn start_dev_with(data_dir: &std::path::Path, extra: &[&str], envs: &[(&str, &str)]) -> Dev {
    let port = free_port();
    let bitcoin = extra.iter().any(|a| {
        a.starts_with("--no-ethereum") || a.starts_with("--btc") || a.starts_with("--hot-btc")
    });
    let mut child = Command::new(BIN)
        .envs(envs.iter().copied())
        .args([
            "dev",
            "--data-dir",
            data_dir.to_str().unwrap(),
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--signer-base-port",
            &free_port_run().to_string(),
            "--test-primes",
            &primes_fixture(),
        ])
        .args(extra)
        .args(if bitcoin { &[][..] } else { &["--no-bitcoin"][..] })
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(data_dir.with_extension("stderr.log")).unwrap())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let (mut url, mut ca, mut token) = (None, None, None);
    let deadline = Instant::now() + Duration::from_secs(240);
    while url.is_none() || ca.is_none() || token.is_none() {
        let line = rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .unwrap_or_else(|e| {
                // Say why: the end of what the process wrote on stderr.
                let log = std::fs::read_to_string(data_dir.with_extension("stderr.log"))
                    .unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(20).collect();
                let tail: Vec<&str> = tail.into_iter().rev().collect();
                panic!(
                    "strongroom dev printed no banner ({e}); its stderr ends:\n{}",
                    tail.join("\n")
                )
            });
        let value = |prefix: &str| line.trim().strip_prefix(prefix).map(|v| v.trim().to_owned());
        url = url.or(value("URL:"));
        ca = ca.or(value("CA certificate:"));
        token = token.or(value("Operator token:"));
    }
    Dev { child, url: url.unwrap(), ca: ca.unwrap(), token: token.unwrap() }
}

/// An operator's API call to the dev stack (its operator token).
pub fn api(
    dev: &Dev,
    method: &str,
    path: &str,
    body: Option<serde_json::Value>,
) -> serde_json::Value {
    api_call(&dev.url, &dev.ca, &dev.token, method, path, body)
}

/// A call as a customer (or anyone): status and JSON body.
pub fn call(
    dev: &Dev,
    method: &str,
    path: &str,
    bearer: Option<&str>,
    body: Option<serde_json::Value>,
) -> (u16, serde_json::Value) {
    let url = format!("{}{path}", dev.url);
    let key = format!("Idempotency-Key: k-{}", uuid_like());
    let mut args = vec!["--cacert", &dev.ca, "-X", method, "-H", &key, "-w", "\n%{http_code}"];
    let auth;
    if let Some(t) = bearer {
        auth = format!("Authorization: Bearer {t}");
        args.extend(["-H", &auth]);
    }
    let text;
    if let Some(b) = &body {
        text = b.to_string();
        args.extend(["-H", "Content-Type: application/json", "-d", &text]);
    }
    args.push(&url);
    let (ok, out) = curl(&args).unwrap();
    assert!(ok, "{out}");
    let (json, status) = out.trim_end().rsplit_once('\n').unwrap_or(("", out.trim()));
    (status.parse().unwrap(), serde_json::from_str(json).unwrap_or(serde_json::Value::Null))
}
