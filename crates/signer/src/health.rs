//! A node's health and metrics for its operators, on a port of their own (`metrics_listen`):
//! plain HTTP on loopback (or a management address the operator names with
//! `metrics_remote = true`), never on the signing port. `GET /health` answers the node's
//! status as JSON (503 while it drains); `GET /metrics` the same figures in Prometheus' text
//! format. Nothing here can change the node; no key material or governance content leaves.
//!
//! A minimal responder rather than an HTTP framework: the signing host keeps the smallest
//! dependency tree we can give it, and two read-only routes need no more.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::node::Node;
use crate::wire::NodeStatus;

/// Longest request head read.
const MAX_HEAD: usize = 8 * 1024;

/// Refuse an address reachable from elsewhere unless the operator said so.
pub fn check_listen(addr: SocketAddr, remote: bool) -> anyhow::Result<()> {
    anyhow::ensure!(
        addr.ip().is_loopback() || remote,
        "metrics_listen {addr} is not a loopback address: set metrics_remote = true to serve \
         health and metrics on a management network"
    );
    Ok(())
}

/// The Prometheus text for a status.
pub fn metrics_text(s: &NodeStatus, draining: bool) -> String {
    let mut t = String::new();
    let mut gauge = |name: &str, help: &str, lines: Vec<(String, u64)>| {
        let _ = writeln!(t, "# HELP {name} {help}\n# TYPE {name} gauge");
        for (labels, v) in lines {
            let _ = writeln!(t, "{name}{labels} {v}");
        }
    };
    let node = format!("{{node=\"{}\"}}", s.node);
    gauge("strongroom_signer_up", "1 while the node serves.", vec![(node.clone(), 1)]);
    gauge(
        "strongroom_signer_draining",
        "1 while the node finishes its sessions before stopping.",
        vec![(node.clone(), u64::from(draining))],
    );
    gauge(
        "strongroom_signer_aux_ready",
        "1 once the node holds auxiliary info (ECDSA).",
        vec![(node.clone(), u64::from(s.aux_ready))],
    );
    gauge(
        "strongroom_signer_primes_ready",
        "Paillier prime sets ready for auxiliary info.",
        vec![(node.clone(), s.primes_ready as u64)],
    );
    gauge("strongroom_signer_keys", "Key shares held.", vec![(node.clone(), s.keys.len() as u64)]);
    gauge(
        "strongroom_signer_presignatures",
        "Presignatures ready, per key and signing set.",
        s.presignatures
            .iter()
            .map(|p| {
                let set = p.signers.iter().map(u16::to_string).collect::<Vec<_>>().join("+");
                let key: String =
                    p.key_id.chars().filter(|c| c.is_ascii_alphanumeric() || *c == '-').collect();
                (
                    format!("{{node=\"{}\",key=\"{key}\",signers=\"{set}\"}}", s.node),
                    p.ids.len() as u64,
                )
            })
            .collect(),
    );
    gauge(
        "strongroom_signer_governance_entries",
        "Governance entries the node has verified (its head).",
        s.governance.iter().map(|h| (node.clone(), h.seq)).collect(),
    );
    t
}

/// Serve health and metrics on `listener` for as long as the process runs.
pub(crate) fn spawn(node: Arc<Node>, listener: TcpListener) {
    tokio::spawn(async move {
        loop {
            let Ok((mut tcp, _)) = listener.accept().await else {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            };
            let node = node.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                let read = tokio::time::timeout(Duration::from_secs(5), async {
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < MAX_HEAD {
                        match tcp.read(&mut buf).await {
                            Ok(0) | Err(_) => return false,
                            Ok(n) => head.extend_from_slice(buf.get(..n).unwrap_or_default()),
                        }
                    }
                    true
                })
                .await;
                if !matches!(read, Ok(true)) {
                    return;
                }
                let line = String::from_utf8_lossy(&head);
                let mut parts = line.split_whitespace();
                let (method, path) = (parts.next(), parts.next());
                let status = node.status();
                let draining = node.is_draining();
                let (code, kind, body) = match (method, path) {
                    (Some("GET"), Some("/health")) => (
                        if draining { "503 Service Unavailable" } else { "200 OK" },
                        "application/json",
                        serde_json::json!({ "status": if draining { "draining" } else { "ok" }, "node": status })
                            .to_string(),
                    ),
                    (Some("GET"), Some("/metrics")) => (
                        "200 OK",
                        "text/plain; version=0.0.4",
                        metrics_text(&status, draining),
                    ),
                    (Some("GET"), _) => ("404 Not Found", "text/plain", "not found\n".into()),
                    _ => ("405 Method Not Allowed", "text/plain", "GET only\n".into()),
                };
                let reply = format!(
                    "HTTP/1.1 {code}\r\ncontent-type: {kind}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = tcp.write_all(reply.as_bytes()).await;
                let _ = tcp.shutdown().await;
            });
        }
    });
}
