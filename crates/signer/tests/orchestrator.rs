//! The orchestrator against a node whose reply it cannot read (another protocol version, or
//! a node that misbehaves): the request fails at once, naming the node, instead of waiting
//! out its timeout. The node is played here over the pinned mutual TLS a real one uses.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)] // Test code.

use std::sync::Arc;

use strongroom_signer::tls::{self, Credentials, Identity, Pins};
use strongroom_signer::wire::{self, Control, Frame, Reason};
use strongroom_signer::Orchestrator;
use tokio::io::AsyncWriteExt;

mod common;
use common::*;

/// Play node 1: take one request and answer it with `reply` (the JSON of a control frame).
async fn fake_node(
    cl: &strongroom_signer::cluster::Cluster,
    orchestrator: &Credentials,
    reply: impl Fn(u64) -> serde_json::Value + Send + 'static,
) {
    let certs = cl.dir.join("certs");
    let creds =
        Credentials::load(&certs.join("signer-1.pem"), &certs.join("signer-1-key.pem")).unwrap();
    let mut pins = Pins::new();
    pins.insert(orchestrator.fingerprint(), Identity::Orchestrator);
    let config = Arc::new(tls::server_config(&creds, pins).unwrap());
    let listener = tokio::net::TcpListener::bind(cl.nodes[0].addr).await.unwrap();
    tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let mut stream = tokio_rustls::TlsAcceptor::from(config).accept(tcp).await.unwrap();
        while let Ok(Some(body)) = wire::read_frame(&mut stream).await {
            let Ok(Frame::Control(Control::Request { id, .. })) = Frame::decode(&body) else {
                continue;
            };
            let mut out = vec![1u8];
            out.extend(serde_json::to_vec(&reply(id)).unwrap());
            let len = u32::try_from(out.len()).unwrap().to_be_bytes();
            stream.write_all(&len).await.unwrap();
            stream.write_all(&out).await.unwrap();
            stream.flush().await.unwrap();
        }
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_the_orchestrator_cannot_read_fails_its_request_at_once() {
    let tmp = tempfile::tempdir().unwrap();
    let (cl, _, _) = prepare(tmp.path(), None);
    let creds = cl.orchestrator_credentials().unwrap();
    // A refusal with a reason this build does not know, then (to the second request) the
    // same with one it does: the connection stays usable.
    let seen = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let count = seen.clone();
    fake_node(&cl, &creds, move |id| {
        let code = if count.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0 {
            "a_reason_from_a_newer_node"
        } else {
            "internal"
        };
        serde_json::json!({"type": "response", "id": id, "body": {"Err": {
            "node": 1, "reason": {"code": code, "detail": "x"}, "culprits": []}}})
    })
    .await;
    let orch = Orchestrator::new(cl.nodes.clone(), creds);
    // A culprit now, not a timeout after 5 s.
    let r = orch.status(1).await.unwrap_err();
    assert!(
        matches!(&r.reason, Reason::Culprit { detail } if detail.contains("cannot be read")),
        "{r:?}"
    );
    assert_eq!((r.node, r.culprits.clone()), (1, vec![1]));
    let r = orch.status(1).await.unwrap_err();
    assert!(matches!(r.reason, Reason::Internal { .. }), "{r:?}");
}
