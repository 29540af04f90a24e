#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)] // Test code.
//! Outbound HTTPS against a local endpoint: a JSON-RPC node and a webhook behind a
//! certificate from a private CA are refused under the platform's roots alone, and reached
//! once the CA is trusted (per endpoint, or as the platform's roots through
//! `SSL_CERT_FILE`); alerts to a webhook go through the durable outbox, and one that
//! failed is kept and delivered later. One test in this binary, because it sets the
//! environment.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::routing::post;
use axum::Router;
use strongroom_chain_ethereum::rpc::{EthRpc, Retry};
use strongroom_core::{Env, SystemEnv};
use strongroom_runtime::risk::{Alerts, Webhook};
use strongroom_server::pki::DevPki;
use strongroom_server::tls;
use strongroom_units::ChainId;

type Seen = Arc<Mutex<Vec<(String, String)>>>;

async fn endpoint(dir: &std::path::Path) -> (DevPki, u16, Seen) {
    let env = SystemEnv::new();
    let pki = DevPki::in_dir(dir);
    pki.ensure(&["localhost".into()], env.now()).unwrap();
    let seen: Seen = Arc::default();
    let s = seen.clone();
    let app = Router::new()
        .route(
            "/rpc",
            post(|body: String| async move {
                let v: serde_json::Value = serde_json::from_str(&body).unwrap();
                axum::Json(serde_json::json!({"jsonrpc": "2.0", "id": v["id"], "result": "0x1"}))
            }),
        )
        .route(
            "/hook",
            post(move |headers: axum::http::HeaderMap, body: String| async move {
                let sig = headers
                    .get("x-strongroom-signature")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_owned();
                s.lock().unwrap().push((sig, body));
                "ok"
            }),
        );
    let config = tls::server_config(&pki.server_cert, &pki.server_key).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let running = tls::serve(listener, config, app).unwrap();
    std::mem::forget(running);
    (pki, port, seen)
}

#[tokio::test]
async fn https_endpoints_need_a_trusted_ca_and_work_with_one() {
    let dir = tempfile::tempdir().unwrap();
    let (pki, port, seen) = endpoint(dir.path()).await;
    let url = format!("https://localhost:{port}/rpc");
    let chain = ChainId::parse("eip155:1").unwrap();
    let retry = Retry { attempts: 1, ..Retry::default() };
    let ca = std::fs::read(&pki.ca_cert).unwrap();

    // The platform's roots do not hold our private CA: refused, and the error says why.
    std::env::remove_var("SSL_CERT_FILE");
    let plain = EthRpc::new(&url, chain.clone(), retry).unwrap();
    let e = plain.check_chain().await.unwrap_err();
    assert!(format!("{e:?}").to_lowercase().contains("certificate"), "{e:?}");

    // The endpoint's own CA file: reached.
    let trusted = EthRpc::with_ca(&url, chain.clone(), retry, Some(&ca)).unwrap();
    trusted.check_chain().await.unwrap();
    // A CA file that holds no certificate is a configuration error, not an empty trust.
    assert!(EthRpc::with_ca(&url, chain.clone(), retry, Some(b"junk")).is_err());

    // The platform's roots are what the platform says: SSL_CERT_FILE names them.
    std::env::set_var("SSL_CERT_FILE", &pki.ca_cert);
    let platform = EthRpc::new(&url, chain.clone(), retry).unwrap();
    platform.check_chain().await.unwrap();
    std::env::remove_var("SSL_CERT_FILE");

    // The security team's webhook over HTTPS with its CA file: delivered, signed.
    let secret = dir.path().join("hook.secret");
    std::fs::write(&secret, "s3cret\n").unwrap();
    let env: Arc<dyn Env> = Arc::new(SystemEnv::new());
    let hook = |ca_file| Webhook {
        url: format!("https://localhost:{port}/hook"),
        secret_file: secret.clone(),
        ca_file,
    };
    // Alerts go through the durable outbox: written first, delivered by whoever claims them.
    let store = strongroom_store::SqlStore::connect(
        &format!("sqlite://{}?mode=rwc", dir.path().join("outbox.db").display()),
        Default::default(),
    )
    .await
    .unwrap();
    store.migrate().await.unwrap();
    let store: Arc<dyn strongroom_store::Store> = Arc::new(store);
    let refused = Alerts::new(store.clone(), Some(hook(None)), None, env.clone()).unwrap();
    refused.raise("drill/1", "drill_untrusted", serde_json::json!({"n": 1})).await.unwrap();
    // Raised again (a step retried after a crash): nothing is added.
    refused.raise("drill/1", "drill_untrusted", serde_json::json!({"n": 1})).await.unwrap();
    assert_eq!(refused.deliver_due("instance-a").await.unwrap(), 0);
    let failed = store.outbox_message("drill/1/webhook").await.unwrap().unwrap();
    assert_eq!((failed.attempts, failed.delivered_at_ms), (1, None));
    assert!(
        failed.last_error.as_deref().unwrap_or_default().to_lowercase().contains("certificate"),
        "{failed:?}"
    );
    let alerts =
        Alerts::new(store.clone(), Some(hook(Some(pki.ca_cert.clone()))), None, env).unwrap();
    alerts.raise("drill/2", "drill", serde_json::json!({"n": 2})).await.unwrap();
    // The failed one waits out its backoff; the new one goes now.
    assert_eq!(alerts.deliver_due("instance-b").await.unwrap(), 1);
    let got = seen.lock().unwrap().clone();
    assert_eq!(got.len(), 1, "only the trusting client delivers: {got:?}");
    let (sig, body) = &got[0];
    assert!(body.contains("\"kind\":\"drill\""), "{body}");
    assert!(sig.starts_with("t=") && sig.contains(",v1="), "{sig}");
    // After the backoff, an instance that trusts the CA delivers the one that failed: the
    // outbox kept it (as it would across a restart).
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    assert_eq!(alerts.deliver_due("instance-c").await.unwrap(), 1);
    assert_eq!(seen.lock().unwrap().len(), 2);
    assert!(seen.lock().unwrap()[1].1.contains("drill_untrusted"));
    let done = store.outbox_message("drill/1/webhook").await.unwrap().unwrap();
    assert!(done.delivered_at_ms.is_some(), "{done:?}");
    assert_eq!(store.outbox_backlog(0).await.unwrap().0, 0);
    assert_eq!(alerts.deliver_due("instance-c").await.unwrap(), 0, "delivered once");
}
