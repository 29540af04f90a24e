//! The API over real HTTPS against a real database: TLS versions, authentication and
//! roles for every documented route, the withdrawal flow, and every kind of bad input.
//! One test binary, per the house style.
#![allow(clippy::disallowed_methods)]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::print_stdout,
    clippy::print_stderr
)] // Test code.

use std::sync::{Arc, Mutex, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use base64::Engine as _;
use reqwest::StatusCode;
use serde_json::{json, Value};
use strongroom_core::withdrawal::WithdrawalRules;
use strongroom_core::{Env, Timestamp};
use strongroom_crypto::generate_token;
use strongroom_server::accounts::{AccountRules, Accounts, Notifier};
use strongroom_server::{pki::DevPki, tls, AppState};
use strongroom_store::prelude::*;
use strongroom_store::{NewApiToken, Role, SqlStore, WriteCtx};
use strongroom_units::AssetRegistry;

const DEST: &str = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed";

/// The real clock and OS randomness (tests may read them; library crates may not).
#[derive(Debug)]
struct TestEnv(std::time::Instant);
impl Env for TestEnv {
    fn now(&self) -> Timestamp {
        Timestamp::from_unix_ms(
            SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as i64
        )
    }
    fn monotonic(&self) -> std::time::Duration {
        self.0.elapsed()
    }
    fn fill_random(&self, buf: &mut [u8]) {
        getrandom(buf)
    }
}

fn getrandom(buf: &mut [u8]) {
    let mut f = std::fs::File::open("/dev/urandom").unwrap();
    std::io::Read::read_exact(&mut f, buf).unwrap();
}

/// Every log line of this test binary, to check that no secret is ever logged.
fn logs() -> &'static Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let writer = buf.clone();
        let _ = tracing_subscriber::fmt()
            .json()
            .with_env_filter("debug")
            .with_writer(move || LogWriter(writer.clone()))
            .try_init();
        buf
    })
}

struct LogWriter(Arc<Mutex<Vec<u8>>>);
impl std::io::Write for LogWriter {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Customer e-mail, kept for the test to read.
#[derive(Debug)]
struct Mailbox(Arc<Mutex<Vec<(uuid::Uuid, String, String)>>>);
impl Notifier for Mailbox {
    fn notify_customer(&self, customer_id: uuid::Uuid, subject: &str, text: &str) {
        self.0.lock().unwrap().push((customer_id, subject.into(), text.into()));
    }
}

const LOCK_MS: i64 = 2_000;

struct Server {
    base: String,
    client: reqwest::Client,
    ca_pem: Vec<u8>,
    addr: std::net::SocketAddr,
    tokens: Vec<(Role, String)>,
    store: Arc<SqlStore>,
    /// E-mails to customers: (customer, subject, text).
    mails: Arc<Mutex<Vec<(uuid::Uuid, String, String)>>>,
    db: std::path::PathBuf,
    kek: Arc<strongroom_crypto::seal::SoftwareKek>,
    running: Option<tls::Running>,
    _dir: tempfile::TempDir,
}

impl Server {
    async fn start(database_url: Option<String>) -> Server {
        // Most tests fund customers by hand; governance still needs quorum-signed credits.
        Server::start_with(database_url, strongroom_server::HandCredits::WithoutGovernance, vec![])
            .await
    }

    async fn start_with(
        database_url: Option<String>,
        hand: strongroom_server::HandCredits,
        trusted_proxies: Vec<String>,
    ) -> Server {
        Server::start_sharing(database_url, hand, trusted_proxies, None).await
    }

    /// A second API instance on this one's database and personal-data key (as two servers
    /// behind one load balancer run).
    async fn twin(&self) -> Server {
        let url = format!("sqlite://{}?mode=rwc", self.db.display());
        let hand = strongroom_server::HandCredits::WithoutGovernance;
        Server::start_sharing(Some(url), hand, vec![], Some(self.kek.clone())).await
    }

    async fn start_sharing(
        database_url: Option<String>,
        hand: strongroom_server::HandCredits,
        trusted_proxies: Vec<String>,
        kek: Option<Arc<strongroom_crypto::seal::SoftwareKek>>,
    ) -> Server {
        logs();
        let env = Arc::new(TestEnv(std::time::Instant::now()));
        let dir = tempfile::tempdir().unwrap();
        let url = database_url
            .unwrap_or_else(|| format!("sqlite://{}?mode=rwc", dir.path().join("s.db").display()));
        let store = Arc::new(SqlStore::connect(&url, Default::default()).await.unwrap());
        store.migrate().await.unwrap();
        let ctx = WriteCtx { actor: "test".into(), now: env.now(), request_id: None };
        let mut tokens = Vec::new();
        for role in [
            Role::Operator,
            Role::Service,
            Role::Auditor,
            Role::Approver,
            Role::Analyst,
            Role::Admin,
        ] {
            let t = generate_token(env.as_ref());
            store
                .create_token(
                    &ctx,
                    NewApiToken {
                        id: t.id.clone(),
                        name: role.as_str().into(),
                        role,
                        token_hash: t.hash.clone(),
                        restrictions: None,
                    },
                )
                .await
                .unwrap();
            tokens.push((role, t.token.expose_secret().to_owned()));
        }
        let pki = DevPki::in_dir(&dir.path().join("tls"));
        assert!(pki.ensure(&["localhost".into()], env.now()).unwrap());
        assert!(
            !pki.ensure(&["localhost".into()], env.now()).unwrap(),
            "second start reuses the PKI"
        );
        let config = tls::server_config(&pki.server_cert, &pki.server_key).unwrap();
        let kek = kek.unwrap_or_else(|| {
            Arc::new(strongroom_crypto::seal::SoftwareKek::generate(env.as_ref()))
        });
        let mails = Arc::new(Mutex::new(Vec::new()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let state =
            AppState::builder(store.clone(), env, AssetRegistry::dev(), WithdrawalRules::default())
                .hand_credits(hand)
                .trusted_proxies(trusted_proxies)
                .unwrap()
                .personal_data_key(kek.clone())
                .notifier(Arc::new(Mailbox(mails.clone())))
                // Short locks so a test can wait them out.
                .accounts(
                    Accounts::new(AccountRules {
                        withdrawal_lock_ms: LOCK_MS,
                        whitelist_delay_ms: LOCK_MS,
                        rp_id: "localhost".into(),
                        rp_origin: format!("https://localhost:{port}"),
                        ..Default::default()
                    })
                    .unwrap(),
                )
                .build();
        let (app, _) = strongroom_server::app(state);
        let running = tls::serve(listener, config, app).unwrap();
        let ca_pem = std::fs::read(&pki.ca_cert).unwrap();
        let client = reqwest::Client::builder()
            .use_rustls_tls()
            .tls_built_in_root_certs(false)
            .add_root_certificate(reqwest::Certificate::from_pem(&ca_pem).unwrap())
            .resolve("localhost", running.addr)
            .build()
            .unwrap();
        Server {
            base: format!("https://localhost:{}", running.addr.port()),
            client,
            ca_pem,
            addr: running.addr,
            tokens,
            store,
            mails,
            kek,
            db: dir.path().join("s.db"),
            running: Some(running),
            _dir: dir,
        }
    }

    fn token(&self, role: Role) -> &str {
        &self.tokens.iter().find(|(r, _)| *r == role).unwrap().1
    }

    async fn call(
        &self,
        method: &str,
        path: &str,
        role: Option<Role>,
        key: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value, reqwest::header::HeaderMap) {
        let mut req = self.client.request(method.parse().unwrap(), format!("{}{path}", self.base));
        if let Some(role) = role {
            req = req.bearer_auth(self.token(role));
        }
        if let Some(key) = key {
            req = req.header("idempotency-key", key);
        }
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let text = resp.text().await.unwrap();
        let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, value, headers)
    }

    /// A call with a customer's session token.
    async fn session(
        &self,
        method: &str,
        path: &str,
        token: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value, reqwest::header::HeaderMap) {
        let mut req = self
            .client
            .request(method.parse().unwrap(), format!("{}{path}", self.base))
            .bearer_auth(token)
            .header("idempotency-key", format!("k-{}", uuid::Uuid::new_v4()));
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let text = resp.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)), headers)
    }

    async fn post(&self, path: &str, key: &str, body: Value) -> (StatusCode, Value) {
        let (s, v, _) = self.call("POST", path, Some(Role::Operator), Some(key), Some(body)).await;
        (s, v)
    }

    async fn stop(mut self) {
        if let Some(r) = self.running.take() {
            r.shutdown().await;
        }
        self.store.close().await;
    }
}

fn code(v: &Value) -> &str {
    v["error"]["code"].as_str().unwrap_or("<no code>")
}

async fn tls_handshake(
    addr: std::net::SocketAddr,
    ca_pem: &[u8],
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> Result<(), String> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut &ca_pem[..]) {
        roots.add(cert.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(versions)
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    connector.connect(name, tcp).await.map(|_| ()).map_err(|e| e.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_tls13_clients_are_served() {
    let s = Server::start(None).await;
    tls_handshake(s.addr, &s.ca_pem, &[&rustls::version::TLS13]).await.unwrap();
    let refused = tls_handshake(s.addr, &s.ca_pem, &[&rustls::version::TLS12]).await;
    let err = refused.expect_err("a TLS 1.2 client must be refused");
    assert!(
        err.to_lowercase().contains("protocolversion")
            || err.to_lowercase().contains("protocol version"),
        "{err}"
    );
    // Plain HTTP on the TLS port gets nothing.
    let plain = reqwest::Client::new().get(format!("http://{}/v1/health", s.addr)).send().await;
    assert!(plain.is_err() || !plain.unwrap().status().is_success());
    let (st, body, _) = s.call("GET", "/v1/health", None, None, None).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(body["database"], "sqlite");
    s.stop().await;
}

/// Every operation in the served OpenAPI document refuses anonymous callers and wrong
/// roles. New routes join this test automatically.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_documented_route_enforces_authentication_and_roles() {
    let s = Server::start(None).await;
    let (st, doc, _) = s.call("GET", "/v1/openapi.json", None, None, None).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(doc["openapi"].as_str().unwrap().chars().next(), Some('3'));
    let public = [
        "/v1/health",
        "/v1/ready",
        "/v1/auth/register",
        "/v1/auth/login",
        "/v1/auth/passkey/options",
        "/v1/auth/passkey/login",
    ];
    // A signed-in customer: refused everywhere but their own routes.
    let (st, reg, _) = s
        .call(
            "POST",
            "/v1/auth/register",
            None,
            None,
            Some(json!({"email": "matrix@example.com", "password": "a long enough password"})),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{reg}");
    let customer = reg["token"].as_str().unwrap().to_owned();
    let mut checked = 0;
    for (path, ops) in doc["paths"].as_object().unwrap() {
        let concrete = path.replace("{id}", "00000000-0000-4000-8000-000000000000");
        for (method, op) in ops.as_object().unwrap() {
            let m = method.to_uppercase();
            let body = (m == "POST").then(|| json!({}));
            let (st, v, headers) = s.call(&m, &concrete, None, Some("k"), body.clone()).await;
            if public.contains(&path.as_str()) {
                assert!(op.get("security").is_none(), "{path} is public and documented as such");
                continue;
            }
            assert!(op.get("security").is_some(), "{m} {path} must document its security");
            assert_eq!(st, StatusCode::UNAUTHORIZED, "anonymous {m} {path}");
            assert_eq!(code(&v), "unauthorized");
            assert_eq!(headers.get("www-authenticate").unwrap(), "Bearer");
            // A syntactically valid but unknown token, and a garbage one.
            for bad in ["srt_0000000000000000_0000000000000000000000000000000000000000000000000000000000000000", "nonsense"] {
                let r = s.client.request(m.parse().unwrap(), format!("{}{concrete}", s.base)).bearer_auth(bad).send().await.unwrap();
                assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{m} {path} with token {bad}");
            }
            let own = path.starts_with("/v1/me") || path == "/v1/auth/logout";
            if !own {
                let (st, v, _) = s.session(&m, &concrete, &customer, body.clone()).await;
                assert_eq!(st, StatusCode::FORBIDDEN, "customer {m} {path}: {v}");
                assert_eq!(code(&v), "forbidden");
            } else if !path.contains('{') && m == "GET" {
                let (st, v, _) = s.session(&m, &concrete, &customer, None).await;
                assert_eq!(st, StatusCode::OK, "customer {m} {path}: {v}");
                // Operators' tokens are not customers.
                let (st, _, _) = s.call(&m, &concrete, Some(Role::Operator), None, None).await;
                assert_eq!(st, StatusCode::FORBIDDEN, "operator {m} {path}");
            }
            if m == "POST" && !own {
                let (st, v, _) =
                    s.call(&m, &concrete, Some(Role::Auditor), Some("k"), body.clone()).await;
                assert_eq!(st, StatusCode::FORBIDDEN, "auditor {m} {path}");
                assert_eq!(code(&v), "forbidden");
            }
            if m == "POST" && !own {
                // Staff roles reach only their own kind of change.
                let allowed: &[Role] = if path.starts_with("/v1/governance") {
                    &[Role::Admin]
                } else if path.starts_with("/v1/risk/reviews/") {
                    &[Role::Analyst]
                } else if path.ends_with("/approvals") || path.ends_with("/deny") {
                    &[Role::Approver]
                } else {
                    &[]
                };
                for role in [Role::Approver, Role::Analyst, Role::Admin] {
                    let (st, v, _) =
                        s.call(&m, &concrete, Some(role), Some("k"), body.clone()).await;
                    if allowed.contains(&role) {
                        assert_ne!(st, StatusCode::FORBIDDEN, "{} {m} {path}: {v}", role.as_str());
                    } else {
                        assert_eq!(st, StatusCode::FORBIDDEN, "{} {m} {path}: {v}", role.as_str());
                    }
                }
            }
            if path.starts_with("/v1/governance") && m == "POST" {
                let (st, _, _) =
                    s.call(&m, &concrete, Some(Role::Service), Some("k"), body.clone()).await;
                assert_eq!(st, StatusCode::FORBIDDEN, "service may not change governance");
            }
            if path == "/v1/deposits" {
                let (st, _, _) = s.call(&m, &concrete, Some(Role::Service), Some("k"), body).await;
                assert_eq!(st, StatusCode::FORBIDDEN, "service may not credit deposits");
            }
            checked += 1;
        }
    }
    assert!(checked >= 11, "only {checked} operations checked");
    // Revoked tokens stop working at once.
    let ctx = WriteCtx { actor: "test".into(), now: Timestamp::from_unix_ms(1), request_id: None };
    let id = strongroom_crypto::token_id(s.token(Role::Auditor)).unwrap().to_owned();
    let (st, _, _) = s.call("GET", "/v1/assets", Some(Role::Auditor), None, None).await;
    assert_eq!(st, StatusCode::OK);
    s.store.revoke_token(&ctx, &id).await.unwrap();
    let (st, _, _) = s.call("GET", "/v1/assets", Some(Role::Auditor), None, None).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    s.stop().await;
}

async fn withdrawal_flow(s: &Server) {
    let (st, c) = s.post("/v1/customers", "c1", json!({"external_id": "alice"})).await;
    assert_eq!(st, StatusCode::CREATED, "{c}");
    let cid = c["id"].as_str().unwrap().to_owned();
    let (st, d) = s
        .post(
            "/v1/deposits",
            "d1",
            json!({"customer_id": cid, "asset": "ETH", "amount": "1.5", "reference": "0xfeed:0"}),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{d}");
    assert_eq!(d["amount"], "1500000000000000000");

    let req = json!({"customer_id": cid, "asset": "ETH", "destination": DEST, "amount": "0.1"});
    let (st, w) = s.post("/v1/withdrawals", "w1", req.clone()).await;
    assert_eq!(st, StatusCode::CREATED, "{w}");
    assert_eq!(w["amount"], "100000000000000000");
    assert_eq!(w["state"], "reserved");
    assert_eq!(w["intent_hash"].as_str().unwrap().len(), 64);
    // Retried with the same key: the same withdrawal, nothing reserved twice.
    let (st, again) = s.post("/v1/withdrawals", "w1", req).await;
    assert_eq!(st, StatusCode::CREATED);
    assert_eq!(again["id"], w["id"]);

    let (_, b, _) = s
        .call("GET", &format!("/v1/customers/{cid}/balances"), Some(Role::Auditor), None, None)
        .await;
    assert_eq!(
        b,
        json!({"data": [{"asset": "ETH", "available": "1400000000000000000", "pending": "100000000000000000", "available_decimal": "1.4", "pending_decimal": "0.1"}], "next_cursor": null, "has_more": false})
    );
    let (_, lines, _) = s
        .call(
            "GET",
            &format!("/v1/customers/{cid}/ledger?limit=10"),
            Some(Role::Service),
            None,
            None,
        )
        .await;
    assert_eq!(
        lines["data"].as_array().unwrap().len(),
        3,
        "deposit credit + reservation debit and credit: {lines}"
    );
    let wid = w["id"].as_str().unwrap();
    let (st, got, _) =
        s.call("GET", &format!("/v1/withdrawals/{wid}"), Some(Role::Auditor), None, None).await;
    assert_eq!(st, StatusCode::OK);
    // A single read adds what the withdrawal gathered since: none yet.
    let mut got = got;
    assert_eq!(got.as_object_mut().unwrap().remove("approvals"), Some(json!([])));
    assert_eq!(got, w);
    let (_, list, _) = s
        .call(
            "GET",
            &format!("/v1/withdrawals?customer_id={cid}&state=reserved"),
            Some(Role::Auditor),
            None,
            None,
        )
        .await;
    assert_eq!(list["data"].as_array().unwrap().len(), 1);
    assert_eq!((&list["has_more"], &list["next_cursor"]), (&json!(false), &json!(null)));

    // Approvals are kept as submitted (one per approver) when they name this intent; the
    // engine and the signer nodes verify them.
    let intent_hash = w["intent_hash"].as_str().unwrap().to_owned();
    let hash = strongroom_core::IntentHash(hex::decode(&intent_hash).unwrap().try_into().unwrap());
    let key = ed25519_dalek::SigningKey::from_bytes(&[5; 32]);
    let soon = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as i64 + 3_600_000;
    let submit = |expires: i64, intent_hash: String, tag: &'static str| {
        let a = strongroom_governance::approval::Approval::sign(
            "ann",
            &key,
            &hash,
            1,
            Timestamp::from_unix_ms(expires),
        );
        let body = json!({
            "approver": "ann", "intent_hash": intent_hash, "policy_version": 1,
            "expires_at_ms": expires, "signature": a.signature,
        });
        let path = format!("/v1/withdrawals/{wid}/approvals");
        async move { s.call("POST", &path, Some(Role::Service), Some(tag), Some(body)).await }
    };
    let (st, list, _) = submit(soon, intent_hash.clone(), "a1").await;
    assert_eq!(st, StatusCode::OK, "{list}");
    assert_eq!(list.as_array().unwrap().len(), 1);
    let (st, list, _) = submit(soon + 1, intent_hash.clone(), "a2").await;
    assert_eq!((st, list.as_array().unwrap().len()), (StatusCode::OK, 1), "replaced: {list}");
    assert_eq!(list[0]["expires_at_ms"], soon + 1);
    let (st, v, _) = submit(soon, "00".repeat(32), "a3").await;
    assert_eq!((st, code(&v)), (StatusCode::BAD_REQUEST, "approval_mismatch"));
    let (st, v, _) = submit(1_000, intent_hash.clone(), "a4").await;
    assert_eq!((st, code(&v)), (StatusCode::BAD_REQUEST, "approval_expired"));

    let (st, cancelled, _) = s
        .call(
            "POST",
            &format!("/v1/withdrawals/{wid}/cancel"),
            Some(Role::Service),
            Some("x1"),
            None,
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{cancelled}");
    assert_eq!(cancelled["state"], "cancelled");
    let (st, v, _) = s
        .call(
            "POST",
            &format!("/v1/withdrawals/{wid}/cancel"),
            Some(Role::Service),
            Some("x2"),
            None,
        )
        .await;
    assert_eq!((st, code(&v)), (StatusCode::CONFLICT, "invalid_transition"));
    let (_, b, _) = s
        .call("GET", &format!("/v1/customers/{cid}/balances"), Some(Role::Auditor), None, None)
        .await;
    assert_eq!(b["data"][0]["available"], "1500000000000000000");
    assert_eq!(b["data"][0]["pending"], "0");
    let report = strongroom_store::verify_audit(s.store.as_ref()).await.unwrap();
    assert!(report.is_intact(), "{report:?}");
    assert_eq!(
        report.records,
        6 + 6,
        "6 tokens, customer, deposit, withdrawal, 2 approvals, cancel"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn withdrawal_flow_on_sqlite() {
    let s = Server::start(None).await;
    withdrawal_flow(&s).await;
    lists_come_a_page_at_a_time(&s).await;
    s.stop().await;
}

/// Every row of a list, `limit` at a time, following `next_cursor`; with the pages' sizes.
async fn walk(s: &Server, path: &str, limit: u32) -> (Vec<Value>, Vec<usize>) {
    let (mut rows, mut sizes, mut after) = (Vec::new(), Vec::new(), String::new());
    let sep = if path.contains('?') { '&' } else { '?' };
    loop {
        let mut url = format!("{path}{sep}limit={limit}");
        if !after.is_empty() {
            url = format!("{url}&after={after}");
        }
        let (st, page, _) = s.call("GET", &url, Some(Role::Auditor), None, None).await;
        assert_eq!(st, StatusCode::OK, "{url}: {page}");
        let data = page["data"].as_array().unwrap();
        sizes.push(data.len());
        rows.extend(data.iter().cloned());
        match (page["has_more"].as_bool().unwrap(), page["next_cursor"].as_str()) {
            (true, Some(next)) => after = next.to_owned(),
            (false, None) => return (rows, sizes),
            other => panic!("has_more and next_cursor disagree: {other:?} {page}"),
        }
    }
}

/// Lists come a page at a time from a cursor: every row once, in order, whatever the page
/// size, and rows added between pages shift nothing.
async fn lists_come_a_page_at_a_time(s: &Server) {
    let (_, c) = s.post("/v1/customers", "pager", json!({"external_id": "pager"})).await;
    let cid = c["id"].as_str().unwrap().to_owned();
    let credit =
        json!({"customer_id": cid, "asset": "ETH", "amount": "1", "reference": "0xfeed:9"});
    let (st, _) = s.post("/v1/deposits", "pager-d", credit).await;
    assert_eq!(st, StatusCode::CREATED);
    let withdraw = |n: u32| {
        let body =
            json!({"customer_id": cid, "asset": "ETH", "destination": DEST, "amount": "0.01"});
        async move {
            let (st, w) = s.post("/v1/withdrawals", &format!("pager-w{n}"), body).await;
            assert_eq!(st, StatusCode::CREATED, "{w}");
            w["id"].as_str().unwrap().to_owned()
        }
    };
    let mut made = Vec::new();
    for n in 0..7 {
        made.push(withdraw(n).await);
    }
    let list = format!("/v1/withdrawals?customer_id={cid}");
    let (whole, sizes) = walk(s, &list, 1000).await;
    assert_eq!(sizes, vec![7]);
    let ids: Vec<&str> = whole.iter().map(|w| w["id"].as_str().unwrap()).collect();
    let mut want: Vec<&str> = made.iter().map(String::as_str).collect();
    want.sort_unstable();
    let mut sorted = ids.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, want, "each withdrawal once");
    let at: Vec<i64> = whole.iter().map(|w| w["created_at_ms"].as_i64().unwrap()).collect();
    assert!(at.windows(2).all(|p| p[0] >= p[1]), "newest first: {at:?}");
    for limit in [1, 2, 3] {
        let (rows, sizes) = walk(s, &list, limit).await;
        assert_eq!(rows, whole, "pages of {limit}");
        assert!(sizes.iter().all(|n| *n <= limit as usize), "{sizes:?}");
    }
    // A withdrawal made after the first page was read is newer: it does not push an older one
    // into the next page again.
    let url = format!("{list}&limit=3");
    let (_, first, _) = s.call("GET", &url, Some(Role::Auditor), None, None).await;
    let newer = withdraw(7).await;
    let next = first["next_cursor"].as_str().unwrap();
    let (_, second, _) =
        s.call("GET", &format!("{url}&after={next}"), Some(Role::Auditor), None, None).await;
    let seen: Vec<&Value> = first["data"].as_array().unwrap().iter().collect();
    for w in second["data"].as_array().unwrap() {
        assert!(!seen.contains(&w) && w["id"] != newer.as_str(), "{w}");
    }
    assert_eq!(second["data"].as_array().unwrap()[0], whole[3]);
    // The ledger (the deposit, two postings per reservation) and the audit log walk the same way.
    let ledger = format!("/v1/customers/{cid}/ledger");
    let (lines, _) = walk(s, &ledger, 1000).await;
    assert_eq!(lines.len(), 1 + 2 * 8, "{lines:?}");
    assert_eq!(walk(s, &ledger, 4).await.0, lines);
    let (records, _) = walk(s, "/v1/audit", 1000).await;
    let (paged, sizes) = walk(s, "/v1/audit", 7).await;
    assert_eq!(paged, records);
    assert!(sizes.len() > 2, "{sizes:?}");
    // A cursor not from this API is refused with its own code.
    for bad in ["evt_3", "bm9wZQ", "MTo6"] {
        let (st, v, _) =
            s.call("GET", &format!("{list}&after={bad}"), Some(Role::Auditor), None, None).await;
        assert_eq!((st, code(&v)), (StatusCode::BAD_REQUEST, "invalid_cursor"), "{bad}: {v}");
    }
}

/// A production server (no hand credits) credits nothing without chain evidence, even with
/// no governance installed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_production_server_credits_nothing_by_hand() {
    let s = Server::start_with(None, strongroom_server::HandCredits::Never, vec![]).await;
    let (_, c) = s.post("/v1/customers", "c", json!({"external_id": "eve"})).await;
    let credit =
        json!({"customer_id": c["id"], "asset": "ETH", "amount": "5", "reference": "0xfake:0"});
    let (st, v) = s.post("/v1/deposits", "d", credit).await;
    assert_eq!((st, code(&v)), (StatusCode::FORBIDDEN, "credit_not_governed"), "{v}");
    let (_, b, _) = s
        .call(
            "GET",
            &format!("/v1/customers/{}/balances", c["id"].as_str().unwrap()),
            Some(Role::Auditor),
            None,
            None,
        )
        .await;
    assert!(b["data"].as_array().unwrap().iter().all(|x| x["available"] == "0"), "{b}");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn withdrawal_flow_on_postgres() {
    let Ok(base) = std::env::var("STRONGROOM_TEST_POSTGRES_URL") else {
        assert!(
            std::env::var("STRONGROOM_REQUIRE_POSTGRES").map_or(true, |v| v != "1"),
            "PostgreSQL required but not configured"
        );
        eprintln!("SKIPPED withdrawal_flow_on_postgres: STRONGROOM_TEST_POSTGRES_URL is not set");
        return;
    };
    use sqlx::Executor;
    sqlx::any::install_default_drivers();
    let name = format!("sr_api_{}", uuid::Uuid::new_v4().simple());
    let mut admin = <sqlx::AnyConnection as sqlx::Connection>::connect(&base).await.unwrap();
    admin.execute(format!("CREATE DATABASE {name}").as_str()).await.unwrap();
    let url = strongroom_store::with_database(&base, &name);
    let s = Server::start(Some(url)).await;
    let (_, h, _) = s.call("GET", "/v1/health", None, None, None).await;
    assert_eq!(h["database"], "postgres");
    eprintln!("withdrawal_flow_on_postgres on database {name}");
    withdrawal_flow(&s).await;
    lists_come_a_page_at_a_time(&s).await;
    s.stop().await;
    admin.execute(format!("DROP DATABASE {name} WITH (FORCE)").as_str()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_a_stable_code_and_writes_nothing() {
    let s = Server::start(None).await;
    let (_, c) = s.post("/v1/customers", "c1", json!({"external_id": "bob"})).await;
    let cid = c["id"].as_str().unwrap().to_owned();
    s.post(
        "/v1/deposits",
        "d1",
        json!({"customer_id": cid, "asset": "ETH", "amount": "1", "reference": "r1"}),
    )
    .await;
    let audit_before = s.store.audit_page(0, 1000).await.unwrap().len();

    let w = |amount: &str, dest: &str, asset: &str| json!({"customer_id": cid, "asset": asset, "destination": dest, "amount": amount});
    let cases: Vec<(&str, Value, StatusCode, &str)> = vec![
        ("unknown asset", w("1", DEST, "DOGE"), StatusCode::BAD_REQUEST, "unknown_asset"),
        ("negative", w("-1", DEST, "ETH"), StatusCode::BAD_REQUEST, "negative_amount"),
        (
            "overflow",
            w("1000000000000000000000000000000000000000", DEST, "ETH"),
            StatusCode::BAD_REQUEST,
            "amount_out_of_range",
        ),
        (
            "too many decimals",
            w("0.0000000000000000001", DEST, "ETH"),
            StatusCode::BAD_REQUEST,
            "amount_too_precise",
        ),
        (
            "sub-satoshi",
            w("0.0000000001", "bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080", "BTC"),
            StatusCode::BAD_REQUEST,
            "amount_too_precise",
        ),
        ("not a number", w("1e3", DEST, "ETH"), StatusCode::BAD_REQUEST, "invalid_amount"),
        ("zero", w("0", DEST, "ETH"), StatusCode::BAD_REQUEST, "zero_amount"),
        ("dust", w("0.00000001", DEST, "ETH"), StatusCode::BAD_REQUEST, "below_minimum"),
        (
            "bad checksum",
            w("0.1", "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAeD", "ETH"),
            StatusCode::BAD_REQUEST,
            "invalid_destination",
        ),
        (
            "btc address for eth",
            w("0.1", "bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080", "ETH"),
            StatusCode::BAD_REQUEST,
            "invalid_destination",
        ),
        (
            "above available",
            w("2", DEST, "ETH"),
            StatusCode::UNPROCESSABLE_ENTITY,
            "insufficient_funds",
        ),
        (
            "unknown field",
            json!({"customer_id": cid, "asset": "ETH", "destination": DEST, "amount": "1", "memo": "x"}),
            StatusCode::BAD_REQUEST,
            "invalid_body",
        ),
        (
            "amount as number",
            json!({"customer_id": cid, "asset": "ETH", "destination": DEST, "amount": 1}),
            StatusCode::BAD_REQUEST,
            "invalid_body",
        ),
        (
            "unknown customer",
            json!({"customer_id": "00000000-0000-4000-8000-000000000000", "asset": "ETH", "destination": DEST, "amount": "0.1"}),
            StatusCode::NOT_FOUND,
            "customer_not_found",
        ),
    ];
    for (i, (what, body, status, expected)) in cases.into_iter().enumerate() {
        let (st, v) = s.post("/v1/withdrawals", &format!("bad-{i}"), body).await;
        assert_eq!((st, code(&v)), (status, expected), "{what}: {v}");
        assert!(v["error"]["request_id"].as_str().is_some_and(|r| !r.is_empty()), "{what}");
        // A field of the wrong type is named.
        if what == "amount as number" {
            assert!(v["error"]["message"].as_str().unwrap().starts_with("amount: "), "{v}");
        }
    }
    let (st, v) = s
        .post(
            "/v1/withdrawals",
            "bad-id",
            json!({"customer_id": "nope", "asset": "ETH", "destination": DEST, "amount": "0.1"}),
        )
        .await;
    assert_eq!((st, code(&v)), (StatusCode::BAD_REQUEST, "invalid_body"), "{v}");
    assert!(v["error"]["message"].as_str().unwrap().starts_with("customer_id: "), "{v}");

    // Malformed JSON, wrong media type, no key, a huge body.
    let raw = |body: &'static str, ct: &'static str, key: Option<&'static str>| {
        let mut r = s
            .client
            .post(format!("{}/v1/withdrawals", s.base))
            .bearer_auth(s.token(Role::Operator))
            .header("content-type", ct)
            .body(body);
        if let Some(k) = key {
            r = r.header("idempotency-key", k);
        }
        r
    };
    let r = raw("{\"customer_id\":", "application/json", Some("m1")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(code(&r.json().await.unwrap()), "malformed_json");
    let r = raw("{}", "text/plain", Some("m2")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let r = raw("{}", "application/json", None).send().await.unwrap();
    assert_eq!(code(&r.json().await.unwrap()), "idempotency_key_required");
    let huge: &'static str =
        Box::leak(format!("{{\"x\":\"{}\"}}", "a".repeat(100_000)).into_boxed_str());
    let r = raw(huge, "application/json", Some("m3")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(code(&r.json().await.unwrap()), "payload_too_large");
    // Far over the limit, still arriving when the server has decided: the client gets the
    // 413 answer on HTTP/1.1 and HTTP/2 (the rest is read and thrown away), not a reset.
    let vast = format!("{{\"x\":\"{}\"}}", "a".repeat(8 * 1024 * 1024));
    for http1 in [true, false] {
        let mut b = reqwest::Client::builder()
            .use_rustls_tls()
            .tls_built_in_root_certs(false)
            .add_root_certificate(reqwest::Certificate::from_pem(&s.ca_pem).unwrap())
            .resolve("localhost", s.addr);
        b = if http1 { b.http1_only() } else { b.http2_prior_knowledge() };
        let r = b
            .build()
            .unwrap()
            .post(format!("{}/v1/withdrawals", s.base))
            .bearer_auth(s.token(Role::Operator))
            .header("content-type", "application/json")
            .header("idempotency-key", if http1 { "m4" } else { "m5" })
            .body(vast.clone())
            .send()
            .await
            .unwrap_or_else(|e| panic!("http1 {http1}: {e:?}"));
        assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE, "http1 {http1}");
        assert_eq!(r.version() == reqwest::Version::HTTP_11, http1);
        assert_eq!(code(&r.json().await.unwrap()), "payload_too_large");
    }
    // Nothing may follow the JSON value (on the account routes' extractor too).
    for path in ["/v1/auth/login", "/v1/withdrawals"] {
        let r = s
            .client
            .post(format!("{}{path}", s.base))
            .bearer_auth(s.token(Role::Operator))
            .header("content-type", "application/json")
            .header("idempotency-key", "trailing")
            .body(r#"{"email":"a@b.example","password":"x"} trailing"#)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{path}");
        assert_eq!(code(&r.json().await.unwrap()), "malformed_json", "{path}");
    }

    // The same key with a different body.
    let ok = w("0.1", DEST, "ETH");
    assert_eq!(s.post("/v1/withdrawals", "k", ok.clone()).await.0, StatusCode::CREATED);
    let (st, v) = s.post("/v1/withdrawals", "k", w("0.2", DEST, "ETH")).await;
    assert_eq!((st, code(&v)), (StatusCode::CONFLICT, "idempotency_conflict"));
    // Key order and whitespace do not make a retry "different".
    let r = raw(Box::leak(format!("{{ \"amount\": \"0.1\", \"destination\": \"{DEST}\", \"asset\": \"ETH\", \"customer_id\": \"{cid}\" }}").into_boxed_str()), "application/json", Some("k")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);

    // Nothing but the one good withdrawal was written.
    assert_eq!(s.store.audit_page(0, 1000).await.unwrap().len(), audit_before + 1);
    let (_, b, _) = s
        .call("GET", &format!("/v1/customers/{cid}/balances"), Some(Role::Auditor), None, None)
        .await;
    assert_eq!(b["data"][0]["available"], "900000000000000000");

    // Routing errors are JSON too.
    let (st, v, _) =
        s.call("GET", "/v1/withdrawals/not-a-uuid", Some(Role::Auditor), None, None).await;
    assert_eq!((st, code(&v)), (StatusCode::BAD_REQUEST, "invalid_id"));
    let (st, v, _) = s.call("GET", "/v1/nope", Some(Role::Auditor), None, None).await;
    assert_eq!((st, code(&v)), (StatusCode::NOT_FOUND, "route_not_found"));
    let (st, v, _) = s.call("DELETE", "/v1/withdrawals", Some(Role::Auditor), None, None).await;
    assert_eq!((st, code(&v)), (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"));
    let (st, v, _) =
        s.call("GET", "/v1/withdrawals?limit=abc", Some(Role::Auditor), None, None).await;
    assert_eq!((st, code(&v)), (StatusCode::BAD_REQUEST, "invalid_query"));
    let (st, v) = s
        .post(
            "/v1/deposits",
            "dup",
            json!({"customer_id": cid, "asset": "ETH", "amount": "1", "reference": "r1"}),
        )
        .await;
    assert_eq!((st, code(&v)), (StatusCode::CONFLICT, "deposit_already_credited"));
    let (st, v) = s.post("/v1/customers", "c2", json!({"external_id": "bob"})).await;
    assert_eq!((st, code(&v)), (StatusCode::CONFLICT, "customer_exists"));
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_ids_metrics_and_logs() {
    let s = Server::start(None).await;
    let r = s
        .client
        .get(format!("{}/v1/withdrawals/x", s.base))
        .bearer_auth(s.token(Role::Auditor))
        .header("x-request-id", "trace-abc.123")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers().get("x-request-id").unwrap(), "trace-abc.123");
    assert_eq!(r.headers().get("strict-transport-security").unwrap(), "max-age=31536000");
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["request_id"], "trace-abc.123");
    // An unsafe request id is replaced, not echoed.
    let r = s
        .client
        .get(format!("{}/v1/health", s.base))
        .header("x-request-id", "a b\"<script>")
        .send()
        .await
        .unwrap();
    assert_ne!(r.headers().get("x-request-id").unwrap(), "a b\"<script>");

    let (st, text, headers) = s.call("GET", "/metrics", Some(Role::Auditor), None, None).await;
    assert_eq!(st, StatusCode::OK);
    assert!(headers
        .get("content-type")
        .unwrap()
        .to_str()
        .unwrap()
        .starts_with("application/openmetrics-text"));
    let text = text.as_str().unwrap();
    assert!(text.contains("strongroom_http_requests_total{method=\"GET\",route=\"/v1/withdrawals/{id}\",status=\"400\"} 1"), "{text}");
    assert!(text.contains("strongroom_api_errors_total{code=\"invalid_id\"} 1"), "{text}");
    assert!(text.contains("strongroom_http_request_duration_seconds_bucket"));

    // No token ever reaches the log, although every request above was logged.
    let logged = String::from_utf8(logs().lock().unwrap().clone()).unwrap();
    assert!(
        logged.contains("\"request_id\":\"trace-abc.123\""),
        "requests are logged as JSON with their id"
    );
    for (_, token) in &s.tokens {
        let secret = token.rsplit('_').next().unwrap();
        assert!(!logged.contains(secret), "a token secret was logged");
    }
    s.stop().await;
}

/// A genesis of `members` (id, key seed, role), quorum 2, and its pin.
fn gov_genesis(
    members: &[(&str, u8, strongroom_governance::Role)],
) -> (strongroom_governance::log::Genesis, String) {
    let genesis = strongroom_governance::log::Genesis {
        members: members
            .iter()
            .map(|(id, n, role)| strongroom_governance::log::MemberSpec {
                id: (*id).into(),
                public_key: hex::encode(gov_key(*n).verifying_key().to_bytes()),
                roles: vec![*role],
                passkey: None,
            })
            .collect(),
        quorum: 2,
        whitelist_delay_ms: 3_600_000,
        created_at: Timestamp::from_unix_ms(1_000),
        assets: vec![strongroom_governance::log::AssetSpec {
            chain: "eip155:31337".into(),
            symbol: "ETH".into(),
            decimals: 18,
            contract: None,
        }],
    };
    let pin = hex::encode(genesis.hash().unwrap());
    (genesis, pin)
}

fn gov_key(n: u8) -> ed25519_dalek::SigningKey {
    ed25519_dalek::SigningKey::from_bytes(&[n; 32])
}

/// Sign the open proposal as `member`, recomputing its hash from the entry as a member's
/// own tool does.
async fn sign_proposal(
    s: &Server,
    gov: &Value,
    member: &str,
    n: u8,
    key: &str,
) -> (StatusCode, Value) {
    use ed25519_dalek::Signer;
    let p = &gov["proposal"];
    let entry: strongroom_governance::log::Entry =
        serde_json::from_value(p["entry"].clone()).unwrap();
    let hash = entry.hash().unwrap();
    assert_eq!(hex::encode(hash), p["hash"].as_str().unwrap());
    let sig = hex::encode(gov_key(n).sign(&hash).to_bytes());
    let path = format!("/v1/governance/proposals/{}/signoffs", entry.seq);
    s.post(&path, key, json!({"member": member, "signature": sig})).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn governance_changes_need_their_quorum_and_withdrawals_show_why_they_wait() {
    use strongroom_governance::Role as G;
    let s = Server::start(None).await;
    let (st, v, _) = s.call("GET", "/v1/governance", Some(Role::Auditor), None, None).await;
    assert_eq!((st, v["installed"].as_bool()), (StatusCode::OK, Some(false)));
    let (st, v) = s
        .post(
            "/v1/governance/proposals",
            "p0",
            json!({"change": {"change": "freeze", "scope": {"kind": "global"}}}),
        )
        .await;
    assert_eq!((st, code(&v)), (StatusCode::CONFLICT, "governance_not_installed"));

    let (genesis, pin) = gov_genesis(&[
        ("ada", 1, G::Admin),
        ("bob", 2, G::Admin),
        ("cy", 3, G::Admin),
        ("ann", 4, G::Approver),
        ("sec", 5, G::SecurityOfficer),
    ]);
    let (st, v) = s
        .post("/v1/governance/genesis", "g0", json!({"genesis": genesis, "pin": "00".repeat(32)}))
        .await;
    assert_eq!(
        (st, code(&v)),
        (StatusCode::BAD_REQUEST, "invalid_genesis"),
        "a hash that is not the genesis's"
    );
    let (st, v) =
        s.post("/v1/governance/genesis", "g1", json!({"genesis": genesis, "pin": pin})).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!((v["quorum"].as_u64(), v["members"].as_array().unwrap().len()), (Some(2), 5));

    let policy = json!({"version": 1, "rules": [
        {"name": "small", "when": {"max_amount": "100000000000000000"}, "action": {"kind": "allow"}},
        {"name": "large", "action": {"kind": "approvals", "count": 1, "roles": ["approver"]}},
    ]});
    let (st, v) = s
        .post(
            "/v1/governance/proposals",
            "p1",
            json!({"change": {"change": "set_policy", "policy": {"version": 1, "rules": []}}}),
        )
        .await;
    assert_eq!((st, code(&v)), (StatusCode::BAD_REQUEST, "invalid_change"), "{v}");
    let (st, v) = s
        .post(
            "/v1/governance/proposals",
            "p2",
            json!({"change": {"change": "set_policy", "policy": policy}}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["seq"], 1);
    let (st, v) = s
        .post(
            "/v1/governance/proposals",
            "p3",
            json!({"change": {"change": "freeze", "scope": {"kind": "global"}}}),
        )
        .await;
    assert_eq!((st, code(&v)), (StatusCode::CONFLICT, "proposal_open"));
    let (_, gov, _) = s.call("GET", "/v1/governance", Some(Role::Auditor), None, None).await;
    // A signature by the wrong key, or by a stranger, is refused at once.
    let (st, v) = sign_proposal(&s, &gov, "ada", 2, "s0").await;
    assert_eq!((st, code(&v)), (StatusCode::BAD_REQUEST, "invalid_signature"));
    let (st, v) = sign_proposal(&s, &gov, "eve", 9, "s1").await;
    assert_eq!((st, code(&v)), (StatusCode::BAD_REQUEST, "unknown_member"));
    let (st, v) = sign_proposal(&s, &gov, "ada", 1, "s2").await;
    assert_eq!((st, v["committed"].as_bool()), (StatusCode::OK, Some(false)), "{v}");
    assert_eq!(v["governance"]["proposal"]["missing"], "entry 1: needs 2 distinct admins, has 1");
    // The same admin twice is still one.
    let (_, gov, _) = s.call("GET", "/v1/governance", Some(Role::Auditor), None, None).await;
    let (_, v) = sign_proposal(&s, &gov, "ada", 1, "s3").await;
    assert_eq!(v["committed"].as_bool(), Some(false));
    let (_, v) = sign_proposal(&s, &gov, "bob", 2, "s4").await;
    assert_eq!(v["committed"].as_bool(), Some(true), "{v}");
    assert_eq!(v["governance"]["policy"]["version"], 1);
    assert!(v["governance"]["proposal"].is_null());

    // A whitelist entry waits out its time-lock; a proposal can be withdrawn.
    let (st, v) = s.post("/v1/governance/proposals", "p4", json!({"change": {"change": "whitelist_add",
        "scope": {"kind": "internal", "chain": "eip155:31337"}, "address": "not-an-address", "label": "cold"}})).await;
    assert_eq!((st, code(&v)), (StatusCode::BAD_REQUEST, "invalid_change"));
    let (st, _) = s
        .post(
            "/v1/governance/proposals",
            "p5",
            json!({"change": {"change": "whitelist_add",
        "scope": {"kind": "internal", "chain": "eip155:31337"}, "address": DEST, "label": "cold"}}),
        )
        .await;
    assert_eq!(st, StatusCode::OK);
    let (_, gov, _) = s.call("GET", "/v1/governance", Some(Role::Auditor), None, None).await;
    sign_proposal(&s, &gov, "cy", 3, "s5").await;
    let (_, v) = sign_proposal(&s, &gov, "bob", 2, "s6").await;
    let wl = &v["governance"]["whitelist"][0];
    assert_eq!((wl["address"].as_str(), wl["usable"].as_bool()), (Some(DEST), Some(false)), "{v}");
    let (st, _) = s
        .post(
            "/v1/governance/proposals",
            "p6",
            json!({"change": {"change": "set_quorum", "quorum": 3}}),
        )
        .await;
    assert_eq!(st, StatusCode::OK);
    let (st, v) = s.post("/v1/governance/proposals/3/withdraw", "w1", json!({})).await;
    assert_eq!(
        (st, v["proposal"].is_null(), v["quorum"].as_u64()),
        (StatusCode::OK, true, Some(2))
    );

    // Under governance an operator cannot credit a customer with no chain evidence: only a
    // ledger credit the admin quorum signed, once, exactly as signed.
    let (_, c) = s.post("/v1/customers", "c1", json!({"external_id": "alice"})).await;
    let cid = c["id"].as_str().unwrap().to_owned();
    let credit =
        json!({"customer_id": cid, "asset": "ETH", "amount": "2", "reference": "missed 0xfeed:0"});
    let (st, v) = s.post("/v1/deposits", "d0", credit.clone()).await;
    assert_eq!((st, code(&v)), (StatusCode::FORBIDDEN, "credit_not_governed"), "{v}");
    let (st, v) = s
        .post(
            "/v1/governance/proposals",
            "p7",
            json!({"change": {"change": "ledger_credit", "customer_id": cid, "asset": "ETH",
                "amount": "2000000000000000000", "reference": "missed 0xfeed:0"}}),
        )
        .await;
    assert_eq!((st, v["seq"].as_u64()), (StatusCode::OK, Some(3)), "{v}");
    let (_, gov, _) = s.call("GET", "/v1/governance", Some(Role::Auditor), None, None).await;
    let (st, v) = sign_proposal(&s, &gov, "ada", 1, "s7").await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let mut with = credit.clone();
    with["adjustment"] = json!(3);
    let (st, v) = s.post("/v1/deposits", "d1", with.clone()).await;
    assert_eq!((st, code(&v)), (StatusCode::FORBIDDEN, "credit_not_governed"), "one admin: {v}");
    sign_proposal(&s, &gov, "bob", 2, "s8").await;
    let mut more = with.clone();
    more["amount"] = json!("20");
    let (st, v) = s.post("/v1/deposits", "d2", more).await;
    assert_eq!((st, code(&v)), (StatusCode::BAD_REQUEST, "adjustment_mismatch"), "{v}");
    let (st, v) = s.post("/v1/deposits", "d3", with.clone()).await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    assert_eq!(v["reference"], "governance:3", "{v}");
    let (st, v) = s.post("/v1/deposits", "d4", with).await;
    assert_eq!((st, code(&v)), (StatusCode::CONFLICT, "deposit_already_credited"), "{v}");

    // A withdrawal above the small tier says what it waits for.
    let (st, w) = s.post("/v1/withdrawals", "wd1", json!({"customer_id": cid, "asset": "ETH", "destination": "0xdbF03B407c01E7cD3CBea99509d93f8DDDC8C6FB", "amount": "1"})).await;
    assert_eq!(st, StatusCode::CREATED, "{w}");
    let wid = w["id"].as_str().unwrap();
    let (_, w, _) =
        s.call("GET", &format!("/v1/withdrawals/{wid}"), Some(Role::Auditor), None, None).await;
    assert_eq!(w["policy"]["outcome"], "wait", "{w}");
    assert_eq!(
        (w["policy"]["rule"].as_str(), w["policy"]["approvals_needed"].as_u64()),
        (Some("large"), Some(1))
    );
    assert_eq!(w["policy"]["explanation"], "policy v1 rule large: 0 of 1 approvals");
    let intent_hash = strongroom_core::IntentHash(
        hex::decode(w["intent_hash"].as_str().unwrap()).unwrap().try_into().unwrap(),
    );
    let expires = TestEnv(std::time::Instant::now()).now().plus_ms(600_000);
    let a = strongroom_governance::approval::Approval::sign(
        "ann",
        &gov_key(4),
        &intent_hash,
        1,
        expires,
    );
    let (st, v) = s.post(&format!("/v1/withdrawals/{wid}/approvals"), "a1", json!({"approver": "ann",
        "intent_hash": a.intent_hash, "policy_version": 1, "expires_at_ms": expires.unix_ms(), "signature": a.signature})).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let (_, w, _) =
        s.call("GET", &format!("/v1/withdrawals/{wid}"), Some(Role::Auditor), None, None).await;
    assert_eq!(w["policy"]["outcome"], "allow", "{w}");

    // A whitelist entry inserted straight into the database (no admin signed it) makes the
    // log fail to verify: nothing trusts it, and the server says so.
    use sqlx::Executor;
    let (_, now_gov, _) = s.call("GET", "/v1/governance", Some(Role::Auditor), None, None).await;
    let last: strongroom_governance::log::Entry =
        serde_json::from_value(now_gov["entries"][2].clone()).unwrap();
    let forged = strongroom_governance::log::Entry {
        seq: 4,
        prev: hex::encode(last.hash().unwrap()),
        at: TestEnv(std::time::Instant::now()).now(),
        change: strongroom_governance::log::Change::WhitelistAdd {
            scope: strongroom_governance::log::WhitelistScope::Internal {
                chain: "eip155:31337".into(),
            },
            address: "0x0000000000000000000000000000000000000bad".into(),
            label: "attacker".into(),
        },
        signoffs: vec![],
    };
    let row = serde_json::to_string(&forged).unwrap().replace('\'', "''");
    s.store
        .pool()
        .execute(
            format!(
                "INSERT INTO governance_entries (seq, entry, created_at_ms) VALUES (4, '{row}', 0)"
            )
            .as_str(),
        )
        .await
        .unwrap();
    let (st, v, _) = s.call("GET", "/v1/governance", Some(Role::Auditor), None, None).await;
    assert_eq!((st, code(&v)), (StatusCode::INTERNAL_SERVER_ERROR, "governance_invalid"), "{v}");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("entry 4: needs 2 distinct admins, has 0"),
        "{v}"
    );
    s.store.pool().execute("DELETE FROM governance_entries WHERE seq = 4").await.unwrap();
    let (st, _, _) = s.call("GET", "/v1/governance", Some(Role::Auditor), None, None).await;
    assert_eq!(st, StatusCode::OK);

    // An entry edited in the database no longer verifies, and the server says so.
    s.store.pool().execute("UPDATE governance_entries SET entry = REPLACE(entry, '\"count\":1', '\"count\":0') WHERE seq = 1").await.unwrap();
    let (st, v, _) = s.call("GET", "/v1/governance", Some(Role::Auditor), None, None).await;
    assert_eq!((st, code(&v)), (StatusCode::INTERNAL_SERVER_ERROR, "governance_invalid"), "{v}");
    s.stop().await;
}

#[path = "support/authenticator.rs"]
mod authenticator;

fn totp_now(secret_b32: &str, offset_s: i64) -> String {
    let key = base32_decode(secret_b32);
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64 + offset_s;
    strongroom_crypto::totp::Totp::default().code(&key, now as u64)
}

fn base32_decode(s: &str) -> Vec<u8> {
    strongroom_crypto::totp::base32_decode(s).unwrap()
}

impl Server {
    async fn register(&self, email: &str, password: &str) -> Value {
        let body = json!({"email": email, "password": password});
        let (st, v, _) = self.call("POST", "/v1/auth/register", None, None, Some(body)).await;
        assert_eq!(st, StatusCode::CREATED, "{v}");
        v
    }
    async fn login(&self, body: Value) -> (StatusCode, Value, reqwest::header::HeaderMap) {
        self.call("POST", "/v1/auth/login", None, None, Some(body)).await
    }
    fn mails_to(&self, customer: &str) -> Vec<(String, String)> {
        let id: uuid::Uuid = customer.parse().unwrap();
        let m = self.mails.lock().unwrap();
        m.iter().filter(|(c, _, _)| *c == id).map(|(_, s, t)| (s.clone(), t.clone())).collect()
    }
}

/// The issue's "Done when", over HTTPS: register; TOTP with recovery codes; a passkey
/// (registered and used by a software authenticator with real P-256 signatures); devices
/// and sessions listed and revoked; a new-device login alert; the anti-phishing code; a
/// whitelist address usable only after its delay; a withdrawal right after a password change
/// refused with its reason; and the database holding none of it in the clear.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_customer_secures_their_account_and_withdrawals_wait_out_the_locks() {
    let s = Server::start(None).await;
    let email = "Ann.Custody@Example.com";
    let password = "correct horse battery staple";
    // Bad input first.
    for (body, want) in [
        (json!({"email": "not-an-email", "password": password}), "invalid_email"),
        (json!({"email": email, "password": "short"}), "weak_password"),
        (json!({"email": email}), "invalid_body"),
    ] {
        let (st, v, _) = s.call("POST", "/v1/auth/register", None, None, Some(body)).await;
        assert_eq!((st, code(&v)), (StatusCode::BAD_REQUEST, want), "{v}");
    }
    let (st, reg, headers) = s
        .call(
            "POST",
            "/v1/auth/register",
            None,
            None,
            Some(json!({"email": email, "password": password, "device_name": "ann's laptop"})),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{reg}");
    let cookie = headers.get("set-cookie").unwrap().to_str().unwrap().to_owned();
    for flag in ["sr_session=", "Secure", "HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(cookie.contains(flag), "{cookie}");
    }
    let customer = reg["customer_id"].as_str().unwrap().to_owned();
    let laptop = reg["device_id"].as_str().unwrap().to_owned();
    let token = reg["token"].as_str().unwrap().to_owned();
    let (st, v, _) = s
        .call(
            "POST",
            "/v1/auth/register",
            None,
            None,
            Some(json!({"email": email.to_lowercase(), "password": password})),
        )
        .await;
    assert_eq!((st, code(&v)), (StatusCode::CONFLICT, "account_exists"));
    // The console's cookie works like the bearer token.
    let r = s
        .client
        .get(format!("{}/v1/me", s.base))
        .header("cookie", cookie.split(';').next().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let me: Value = r.json().await.unwrap();
    assert_eq!(me["email"], "a***@example.com");
    assert_eq!(me["totp_enabled"], false);

    // TOTP: a wrong first code is refused; the right one turns it on and returns ten
    // recovery codes; a code already used is refused; a recovery code works once.
    let (st, setup, _) = s.session("POST", "/v1/me/totp", &token, None).await;
    assert_eq!(st, StatusCode::OK, "{setup}");
    let secret = setup["secret"].as_str().unwrap().to_owned();
    assert!(setup["otpauth_uri"].as_str().unwrap().starts_with("otpauth://totp/Strongroom:"));
    let (st, _, _) =
        s.session("POST", "/v1/me/totp/confirm", &token, Some(json!({"code": "000000"}))).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    let first = totp_now(&secret, 0);
    let (st, rc, _) =
        s.session("POST", "/v1/me/totp/confirm", &token, Some(json!({"code": first}))).await;
    assert_eq!(st, StatusCode::OK, "{rc}");
    let recovery: Vec<String> = serde_json::from_value(rc["recovery_codes"].clone()).unwrap();
    assert_eq!(recovery.len(), 10);
    let (st, v, _) = s.login(json!({"email": email, "password": password})).await;
    assert_eq!((st, code(&v)), (StatusCode::UNAUTHORIZED, "second_factor_required"));
    let (st, v, _) =
        s.login(json!({"email": email, "password": password, "totp_code": first})).await;
    assert_eq!((st, code(&v)), (StatusCode::UNAUTHORIZED, "invalid_second_factor"), "a used step");
    let next = totp_now(&secret, 30);
    let (st, v, _) = s
        .login(
            json!({"email": email, "password": password, "totp_code": next, "device_id": laptop}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["new_device"], false, "the laptop is known");
    let (st, v, _) = s
        .login(json!({"email": email, "password": password, "recovery_code": recovery[3], "device_id": laptop}))
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let (st, _, _) =
        s.login(json!({"email": email, "password": password, "recovery_code": recovery[3]})).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED, "a recovery code works once");

    // A passkey: registered through the WebAuthn ceremony, then used to sign in.
    let mut key = authenticator::SoftAuthenticator::new(&s.base);
    let (st, opts, _) = s.session("POST", "/v1/me/passkeys/options", &token, None).await;
    assert_eq!(st, StatusCode::OK, "{opts}");
    let cred = key.create(&opts["options"]);
    let (st, pk, _) = s
        .session(
            "POST",
            "/v1/me/passkeys",
            &token,
            Some(
                json!({"ceremony_id": opts["ceremony_id"], "credential": cred, "name": "yubikey"}),
            ),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{pk}");
    let (st, v, _) = s
        .session(
            "POST",
            "/v1/me/passkeys",
            &token,
            Some(json!({"ceremony_id": opts["ceremony_id"], "credential": cred})),
        )
        .await;
    assert_eq!((st, code(&v)), (StatusCode::BAD_REQUEST, "ceremony_invalid"), "single use");
    let passkey_login = |ceremony: Value, credential: Value| json!({"ceremony_id": ceremony, "credential": credential, "device_name": "ann's phone"});
    let (_, opts, _) =
        s.call("POST", "/v1/auth/passkey/options", None, None, Some(json!({"email": email}))).await;
    // An authenticator with another key is refused, and the ceremony is used up.
    let mut stranger = authenticator::SoftAuthenticator::new(&s.base);
    let forged = stranger.get(&opts["options"]);
    let forged = json!({"id": cred["id"], "rawId": cred["rawId"], "type": "public-key", "response": forged["response"], "extensions": {}});
    let (st, v, _) = s
        .call(
            "POST",
            "/v1/auth/passkey/login",
            None,
            None,
            Some(passkey_login(opts["ceremony_id"].clone(), forged)),
        )
        .await;
    assert_eq!(st, StatusCode::UNAUTHORIZED, "{v}");
    let (_, opts, _) =
        s.call("POST", "/v1/auth/passkey/options", None, None, Some(json!({"email": email}))).await;
    let assertion = key.get(&opts["options"]);
    let (st, phone, _) = s
        .call(
            "POST",
            "/v1/auth/passkey/login",
            None,
            None,
            Some(passkey_login(opts["ceremony_id"].clone(), assertion.clone())),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{phone}");
    assert_eq!(phone["new_device"], true);
    let (st, _, _) = s
        .call(
            "POST",
            "/v1/auth/passkey/login",
            None,
            None,
            Some(passkey_login(opts["ceremony_id"].clone(), assertion)),
        )
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "an assertion is not replayed");
    // The new device got a login alert; the known laptop did not.
    let mails = s.mails_to(&customer);
    let alerts: Vec<_> = mails.iter().filter(|(subj, _)| subj.contains("New sign-in")).collect();
    assert_eq!(alerts.len(), 1, "{mails:?}");
    assert!(alerts[0].1.contains("ann's phone"));

    // Devices and sessions: listed, and the phone revoked (its session ends with it).
    let (_, devices, _) = s.session("GET", "/v1/me/devices", &token, None).await;
    let devices = devices["data"].as_array().unwrap().clone();
    assert_eq!(devices.len(), 2, "{devices:?}");
    let phone_dev = devices.iter().find(|d| d["name"] == "ann's phone").unwrap();
    assert_eq!(phone_dev["last_ip"], "127.0.0.1");
    let (_, sessions, _) = s.session("GET", "/v1/me/sessions", &token, None).await;
    assert!(sessions["data"].as_array().unwrap().iter().any(|x| x["via"] == "passkey"));
    let phone_token = phone["token"].as_str().unwrap();
    let (st, _, _) = s.session("GET", "/v1/me", phone_token, None).await;
    assert_eq!(st, StatusCode::OK);
    let (st, _, _) = s
        .session(
            "DELETE",
            &format!("/v1/me/devices/{}", phone_dev["id"].as_str().unwrap()),
            &token,
            None,
        )
        .await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    let (st, _, _) = s.session("GET", "/v1/me", phone_token, None).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED, "the revoked device's session ended");

    // Another customer cannot reach Ann's devices, sessions or whitelist entries.
    let bob = s.register("bob@example.com", password).await;
    let bob = bob["token"].as_str().unwrap().to_owned();
    let laptop_path = format!("/v1/me/devices/{laptop}");
    let (st, _, _) = s.session("DELETE", &laptop_path, &bob, None).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    let ann_session = strongroom_crypto::token_id(&token).unwrap().to_owned();
    let (st, _, _) =
        s.session("DELETE", &format!("/v1/me/sessions/{ann_session}"), &bob, None).await;
    assert_eq!(st, StatusCode::NOT_FOUND);

    // The anti-phishing code.
    let (st, v, _) = s
        .session(
            "POST",
            "/v1/me/anti-phishing-code",
            &token,
            Some(json!({"anti_phishing_code": "ab"})),
        )
        .await;
    assert_eq!((st, code(&v)), (StatusCode::BAD_REQUEST, "invalid_anti_phishing_code"));
    let (st, _, _) = s
        .session(
            "POST",
            "/v1/me/anti-phishing-code",
            &token,
            Some(json!({"anti_phishing_code": "blue-otter-42"})),
        )
        .await;
    assert_eq!(st, StatusCode::NO_CONTENT);

    // Funds, whitelist-only mode, and a new address that is not usable yet.
    let (st, _) = s
        .post(
            "/v1/deposits",
            "ann-d1",
            json!({"customer_id": customer, "asset": "ETH", "amount": "1", "reference": "0xann:0"}),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED);
    let (st, _, _) =
        s.session("POST", "/v1/me/whitelist/mode", &token, Some(json!({"enabled": true}))).await;
    assert_eq!(st, StatusCode::OK);
    let (st, entry, _) = s
        .session(
            "POST",
            "/v1/me/whitelist",
            &token,
            Some(json!({"asset": "ETH", "address": DEST.to_lowercase(), "label": "cold"})),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{entry}");
    assert_eq!(entry["usable"], false);
    let (st, v, _) = s
        .session(
            "DELETE",
            &format!("/v1/me/whitelist/{}", entry["id"].as_str().unwrap()),
            &bob,
            None,
        )
        .await;
    assert_eq!(st, StatusCode::NOT_FOUND, "{v}");
    // A password change: other sessions end, and withdrawals lock with the reason.
    let (st, v, _) = s
        .session("POST", "/v1/me/password", &token, Some(json!({"current_password": password, "new_password": "an even longer new passphrase", "recovery_code": recovery[5]})))
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["last_security_change"], "password");
    assert!(v["withdrawals_locked_until"].is_string());
    let withdraw = json!({"asset": "ETH", "destination": DEST, "amount": "0.1"});
    let (st, v, _) = s.session("POST", "/v1/me/withdrawals", &token, Some(withdraw.clone())).await;
    assert_eq!((st, code(&v)), (StatusCode::FORBIDDEN, "withdrawal_locked"), "{v}");
    assert!(v["error"]["message"].as_str().unwrap().contains("password"), "{v}");
    // The exchange's backend cannot go around it either.
    let (st, v) = s
        .post(
            "/v1/withdrawals",
            "ann-w1",
            json!({"customer_id": customer, "asset": "ETH", "destination": DEST, "amount": "0.1"}),
        )
        .await;
    assert_eq!((st, code(&v)), (StatusCode::FORBIDDEN, "withdrawal_locked"));
    assert!(s
        .mails_to(&customer)
        .iter()
        .any(|(subj, t)| subj.contains("Security change") && t.contains("password")));
    // After the lock and the whitelist delay: only the whitelisted address is paid.
    tokio::time::sleep(std::time::Duration::from_millis(LOCK_MS as u64 + 300)).await;
    let (_, list, _) = s.session("GET", "/v1/me/whitelist", &token, None).await;
    assert_eq!(list["data"][0]["usable"], true);
    let other = json!({"asset": "ETH", "destination": "0x00000000000000000000000000000000000000aa", "amount": "0.1"});
    let (st, v, _) = s.session("POST", "/v1/me/withdrawals", &token, Some(other)).await;
    assert_eq!((st, code(&v)), (StatusCode::FORBIDDEN, "destination_not_whitelisted"), "{v}");
    let (st, w, _) = s.session("POST", "/v1/me/withdrawals", &token, Some(withdraw)).await;
    assert_eq!(st, StatusCode::CREATED, "{w}");
    assert_eq!(w["customer_id"], customer.as_str());
    // Turning whitelist-only off needs a code and waits again.
    let (st, _, _) =
        s.session("POST", "/v1/me/whitelist/mode", &token, Some(json!({"enabled": false}))).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    let (st, v, _) = s
        .session(
            "POST",
            "/v1/me/whitelist/mode",
            &token,
            Some(json!({"enabled": false, "recovery_code": recovery[6]})),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["whitelist_only"], true);
    assert!(v["whitelist_off_at"].is_string());

    // The database holds none of it in the clear: not the e-mail address, device name, IP
    // address, TOTP seed, recovery codes, passwords or session tokens.
    use sqlx::Executor;
    s.store.pool().execute("PRAGMA wal_checkpoint(FULL)").await.unwrap();
    let mut dump = std::fs::read(&s.db).unwrap();
    dump.extend(std::fs::read(s.db.with_extension("db-wal")).unwrap_or_default());
    let dump = String::from_utf8_lossy(&dump).to_lowercase();
    let seed_hex = hex::encode(base32_decode(&secret));
    for secret_text in [
        email.to_lowercase().as_str(),
        "ann.custody",
        "bob@example.com",
        "ann's phone",
        "ann's laptop",
        &secret.to_lowercase(),
        &seed_hex,
        &recovery[0],
        &recovery[3],
        password,
        "even longer new",
        &token[4..],
        &phone_token[4..],
        "blue-otter-42",
        "127.0.0.1",
    ] {
        assert!(!dump.contains(secret_text), "the database holds {secret_text:?} in the clear");
    }
    let audit = strongroom_store::verify_audit(s.store.as_ref()).await.unwrap();
    assert!(audit.chain_break.is_none() && audit.mismatches.is_empty(), "{audit:?}");
    s.stop().await;
}

/// Guessing passwords or codes locks the account (even for the right password, until the
/// lock ends), and one IP address guessing across accounts is slowed down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn brute_force_hits_the_account_and_ip_limits() {
    let s = Server::start(None).await;
    let password = "correct horse battery staple";
    s.register("cy@example.com", password).await;
    for i in 0..5 {
        let (st, v, _) = s
            .login(json!({"email": "cy@example.com", "password": format!("guess number {i}")}))
            .await;
        assert_eq!(st, StatusCode::UNAUTHORIZED, "{v}");
        assert_eq!(v["error"]["message"], "wrong e-mail address or password");
    }
    let (st, v, _) = s.login(json!({"email": "cy@example.com", "password": password})).await;
    assert_eq!((st, code(&v)), (StatusCode::LOCKED, "account_locked"), "{v}");
    assert!(s.mails.lock().unwrap().iter().any(|(_, subj, _)| subj.contains("locked")));
    // Unknown accounts answer like wrong passwords; the IP's failures add up to a wait.
    let mut limited = false;
    for i in 0..30 {
        let (st, v, _) =
            s.login(json!({"email": format!("nobody{i}@example.com"), "password": password})).await;
        if st == StatusCode::TOO_MANY_REQUESTS {
            assert_eq!(code(&v), "too_many_attempts");
            limited = true;
            break;
        }
        assert_eq!(st, StatusCode::UNAUTHORIZED);
        assert_eq!(v["error"]["message"], "wrong e-mail address or password");
    }
    assert!(limited, "20 failures from one address are limited");
    s.stop().await;
}

/// The console's session cookie cannot be used by another site: a request that changes
/// something and is signed in only by the cookie needs the session's CSRF token (from the
/// readable `sr_csrf` cookie, which another origin cannot read); reads and bearer tokens need
/// none. The console's files come with a strict Content-Security-Policy, and every response
/// refuses to be framed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cookie_sessions_need_the_csrf_token_and_the_console_is_locked_down() {
    let s = Server::start(None).await;
    let reg = s.register("csrf@example.com", "a long enough passphrase").await;
    let token = reg["token"].as_str().unwrap().to_owned();
    let (st, _, headers) =
        s.login(json!({"email": "csrf@example.com", "password": "a long enough passphrase"})).await;
    assert_eq!(st, StatusCode::OK);
    let cookies: Vec<String> = headers
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().split(';').next().unwrap().to_owned())
        .collect();
    let get = |name: &str| {
        cookies.iter().find_map(|c| c.strip_prefix(&format!("{name}="))).unwrap().to_owned()
    };
    let (session, csrf) = (get("sr_session"), get("sr_csrf"));
    assert_eq!(csrf.len(), 64, "{cookies:?}");
    let csrf_flags = headers
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap())
        .find(|c| c.starts_with("sr_csrf="))
        .unwrap()
        .to_owned();
    assert!(csrf_flags.contains("Secure") && csrf_flags.contains("SameSite=Strict"));
    assert!(!csrf_flags.contains("HttpOnly"), "the console's script reads it");
    let cookie = format!("sr_session={session}; sr_csrf={csrf}");
    let with_cookie = |method: &str, path: &str, csrf: Option<&str>| {
        let mut req = s
            .client
            .request(method.parse().unwrap(), format!("{}{path}", s.base))
            .header("cookie", cookie.clone());
        if let Some(t) = csrf {
            req = req.header("x-csrf-token", t);
        }
        async move {
            let resp = req.send().await.unwrap();
            let st = resp.status();
            (st, serde_json::from_str::<Value>(&resp.text().await.unwrap()).unwrap_or(Value::Null))
        }
    };
    // Reads need no token. The cookie's session ends the registration's session (A) only
    // with the token.
    let (st, me) = with_cookie("GET", "/v1/me", None).await;
    assert_eq!(st, StatusCode::OK, "{me}");
    let (_, listed, _) = s.session("GET", "/v1/me/sessions", &token, None).await;
    let a = listed["data"].as_array().unwrap().iter().find(|x| x["current"] == true).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let end_a = format!("/v1/me/sessions/{a}");
    let (st, v) = with_cookie("DELETE", &end_a, None).await;
    assert_eq!((st, code(&v)), (StatusCode::FORBIDDEN, "csrf_token_required"), "{v}");
    let other = strongroom_server::console::csrf_token(&token);
    let (st, v) = with_cookie("DELETE", &end_a, Some(&other)).await;
    assert_eq!((st, code(&v)), (StatusCode::FORBIDDEN, "csrf_token_invalid"), "{v}");
    let (st, v, _) = s.session("GET", "/v1/me", &token, None).await;
    assert_eq!(st, StatusCode::OK, "session A lives on: {v}");
    let (st, v) = with_cookie("DELETE", &end_a, Some(&csrf)).await;
    assert!(st.is_success(), "{v}");
    let (st, _, _) = s.session("GET", "/v1/me", &token, None).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED, "session A ended");
    // A bearer token needs no CSRF token (a browser never sends one on its own).
    let (st, v, _) =
        s.login(json!({"email": "csrf@example.com", "password": "a long enough passphrase"})).await;
    assert_eq!(st, StatusCode::OK);
    let bearer = v["token"].as_str().unwrap();
    let (st, v, _) = s
        .session(
            "POST",
            "/v1/me/anti-phishing-code",
            bearer,
            Some(json!({"anti_phishing_code": "red-fox-4"})),
        )
        .await;
    assert!(st.is_success(), "{v}");

    // The console: / leads there; its files carry the strict policy; JSON refuses framing.
    let resp = s.client.get(format!("{}/", s.base)).send().await.unwrap();
    assert_eq!(resp.url().path(), "/console/");
    let csp = resp.headers()["content-security-policy"].to_str().unwrap().to_owned();
    assert_eq!(csp, strongroom_server::console::CONSOLE_CSP);
    assert_eq!(resp.headers()["x-frame-options"], "DENY");
    let page = resp.text().await.unwrap();
    assert!(page.contains(r#"<script type="module" src="/console/app.js">"#));
    assert!(!page.contains("<script>"), "no inline script");
    for (file, mime) in [
        ("app.js", "text/javascript"),
        ("intent.js", "text/javascript"),
        ("console.css", "text/css"),
    ] {
        let r = s.client.get(format!("{}/console/{file}", s.base)).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{file}");
        assert!(r.headers()["content-type"].to_str().unwrap().starts_with(mime), "{file}");
        assert_eq!(r.headers()["content-security-policy"], strongroom_server::console::CONSOLE_CSP);
    }
    let r = s.client.get(format!("{}/console/..%2Fsecret", s.base)).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let r = s.client.get(format!("{}/v1/health", s.base)).send().await.unwrap();
    assert_eq!(r.headers()["content-security-policy"], strongroom_server::console::API_CSP);
    assert_eq!(r.headers()["x-frame-options"], "DENY");
    s.stop().await;
}

/// Two API instances behind one load balancer share every limit: password guesses sent in
/// parallel to both are each counted (the account locks after exactly five, on both), and
/// one address's failures add up across both to one limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guesses_across_instances_hit_one_shared_limit() {
    let s = Server::start(None).await;
    let twin = s.twin().await;
    let password = "correct horse battery staple";
    s.register("dee@example.com", password).await;
    let guess = |i: usize| {
        let to = if i.is_multiple_of(2) { &s } else { &twin };
        to.login(json!({"email": "dee@example.com", "password": format!("parallel guess {i}")}))
    };
    let (a, b, c, d, e) = tokio::join!(guess(0), guess(1), guess(2), guess(3), guess(4));
    for (st, v, _) in [a, b, c, d, e] {
        assert_eq!(st, StatusCode::UNAUTHORIZED, "every guess is answered and counted: {v}");
    }
    for server in [&s, &twin] {
        let (st, v, _) =
            server.login(json!({"email": "dee@example.com", "password": password})).await;
        assert_eq!((st, code(&v)), (StatusCode::LOCKED, "account_locked"), "{v}");
    }
    // The address has 5 failures; 15 more across both instances reach the limit of 20.
    for i in 0..16 {
        let to = if i % 2 == 0 { &s } else { &twin };
        let (st, v, _) = to
            .login(json!({"email": format!("nobody{i}@example.com"), "password": password}))
            .await;
        if i < 15 {
            assert_eq!(st, StatusCode::UNAUTHORIZED, "failure {i}: {v}");
        } else {
            assert_eq!((st, code(&v)), (StatusCode::TOO_MANY_REQUESTS, "too_many_attempts"), "{v}");
        }
    }
    let (st, v, _) = s.login(json!({"email": "nobody@example.com", "password": password})).await;
    assert_eq!((st, code(&v)), (StatusCode::TOO_MANY_REQUESTS, "too_many_attempts"), "{v}");
    // Readiness (no chains or signers here: the database decides) and the shared gauges.
    let r = twin.client.get(format!("{}/v1/ready", twin.base)).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let ready: Value = r.json().await.unwrap();
    assert_eq!(ready["ready"], true, "{ready}");
    assert_eq!(ready["checks"][0]["component"], "database", "{ready}");
    twin.stop().await;
    s.stop().await;
}

/// API clients: a token limited to scopes, to an IP allow-list, and one that must sign its
/// requests (HMAC over method, path, timestamp, nonce and body), with replays refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_client_tokens_keep_to_their_scopes_addresses_and_signatures() {
    let s = Server::start(None).await;
    let env = TestEnv(std::time::Instant::now());
    let ctx = WriteCtx { actor: "test".into(), now: env.now(), request_id: None };
    let make = |restrictions: strongroom_store::TokenRestrictions| {
        let t = generate_token(&env);
        (t, Some(restrictions))
    };
    let mut tokens = Vec::new();
    let mut signing_key = [0u8; 32];
    getrandom(&mut signing_key);
    for r in [
        strongroom_store::TokenRestrictions {
            scopes: Some(vec!["customers:read".into(), "withdrawals".into()]),
            ..Default::default()
        },
        strongroom_store::TokenRestrictions {
            allowed_ips: Some(vec!["10.0.0.0/8".into()]),
            ..Default::default()
        },
        strongroom_store::TokenRestrictions {
            allowed_ips: Some(vec!["192.0.2.1".into(), "127.0.0.0/8".into()]),
            ..Default::default()
        },
        strongroom_store::TokenRestrictions::default(),
    ] {
        let (t, mut restrictions) = make(r);
        if restrictions.as_ref().is_some_and(|r| r == &Default::default()) {
            restrictions = Some(strongroom_store::TokenRestrictions {
                signing_key: Some(
                    strongroom_server::clients::seal_signing_key(
                        s.kek.as_ref(),
                        &t.id,
                        &signing_key,
                        &env,
                    )
                    .unwrap(),
                ),
                ..Default::default()
            });
        }
        s.store
            .create_token(
                &ctx,
                NewApiToken {
                    id: t.id.clone(),
                    name: "backend".into(),
                    role: Role::Service,
                    token_hash: t.hash.clone(),
                    restrictions,
                },
            )
            .await
            .unwrap();
        tokens.push(t.token.expose_secret().to_owned());
    }
    let send = |token: &str, method: &str, path: &str, body: Option<Value>| {
        let mut req = s
            .client
            .request(method.parse().unwrap(), format!("{}{path}", s.base))
            .bearer_auth(token)
            .header("idempotency-key", format!("k-{}", uuid::Uuid::new_v4()));
        if let Some(b) = body {
            req = req.json(&b);
        }
        async move {
            let r = req.send().await.unwrap();
            let st = r.status();
            (st, r.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    // Scopes: customers read-only, withdrawals read and write, nothing else.
    let scoped = &tokens[0];
    let (st, v) = send(scoped, "POST", "/v1/customers", Some(json!({"external_id": "x"}))).await;
    assert_eq!((st, code(&v)), (StatusCode::FORBIDDEN, "scope_denied"), "{v}");
    let (st, v) = send(scoped, "GET", "/v1/assets", None).await;
    assert_eq!((st, code(&v)), (StatusCode::FORBIDDEN, "scope_denied"));
    let (st, v) =
        send(scoped, "GET", "/v1/customers/00000000-0000-4000-8000-000000000000", None).await;
    assert_eq!((st, code(&v)), (StatusCode::NOT_FOUND, "customer_not_found"), "{v}");
    let (st, v) = send(scoped, "GET", "/v1/withdrawals", None).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let (st, v) = send(scoped, "POST", "/v1/withdrawals", Some(json!({}))).await;
    assert_eq!((st, code(&v)), (StatusCode::BAD_REQUEST, "invalid_body"), "{v}");
    // The IP allow-list.
    let (st, v) = send(&tokens[1], "GET", "/v1/assets", None).await;
    assert_eq!((st, code(&v)), (StatusCode::FORBIDDEN, "ip_not_allowed"));
    let (st, _) = send(&tokens[2], "GET", "/v1/assets", None).await;
    assert_eq!(st, StatusCode::OK);
    // Signed requests.
    let signer = &tokens[3];
    let (st, v) = send(signer, "GET", "/v1/assets", None).await;
    assert_eq!((st, code(&v)), (StatusCode::UNAUTHORIZED, "signature_required"));
    let signed = |method: &str, path: &str, body: &str, ts: i64, nonce: &str, sign_path: &str| {
        let sig = strongroom_server::clients::sign(
            &signing_key,
            method,
            sign_path,
            &ts.to_string(),
            nonce,
            body.as_bytes(),
        );
        let req = s
            .client
            .request(method.parse().unwrap(), format!("{}{path}", s.base))
            .bearer_auth(signer)
            .header("idempotency-key", format!("k-{nonce}"))
            .header("x-strongroom-timestamp", ts.to_string())
            .header("x-strongroom-nonce", nonce)
            .header("x-strongroom-signature", sig)
            .header("content-type", "application/json")
            .body(body.to_owned());
        async move {
            let r = req.send().await.unwrap();
            let st = r.status();
            (st, r.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let now = env.now().unix_ms();
    let body = r#"{"external_id":"signed-1"}"#;
    let (st, v) =
        signed("POST", "/v1/customers", body, now, "nonce-0000000001", "/v1/customers").await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    let (st, v) =
        signed("POST", "/v1/customers", body, now, "nonce-0000000001", "/v1/customers").await;
    assert_eq!((st, code(&v)), (StatusCode::UNAUTHORIZED, "replayed"), "{v}");
    // The same request replayed to a second instance behind the same load balancer: the
    // nonce is in the shared database, so it is refused there too; a fresh one is accepted.
    let twin = s.twin().await;
    let to_twin = |nonce: &str, body: &'static str| {
        let sig = strongroom_server::clients::sign(
            &signing_key,
            "POST",
            "/v1/customers",
            &now.to_string(),
            nonce,
            body.as_bytes(),
        );
        twin.client
            .post(format!("{}/v1/customers", twin.base))
            .bearer_auth(signer)
            .header("idempotency-key", format!("k-{nonce}"))
            .header("x-strongroom-timestamp", now.to_string())
            .header("x-strongroom-nonce", nonce)
            .header("x-strongroom-signature", sig)
            .header("content-type", "application/json")
            .body(body.to_owned())
            .send()
    };
    let r = to_twin("nonce-0000000001", body).await.unwrap();
    let (st, v) = (r.status(), r.json::<Value>().await.unwrap());
    assert_eq!((st, code(&v)), (StatusCode::UNAUTHORIZED, "replayed"), "{v}");
    let r = to_twin("nonce-0000000003", r#"{"external_id":"signed-3"}"#).await.unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    // A body, path or time other than the signed one is refused.
    let sig = strongroom_server::clients::sign(
        &signing_key,
        "POST",
        "/v1/customers",
        &now.to_string(),
        "nonce-0000000002",
        body.as_bytes(),
    );
    let r = s
        .client
        .post(format!("{}/v1/customers", s.base))
        .bearer_auth(signer)
        .header("idempotency-key", "k-tampered")
        .header("x-strongroom-timestamp", now.to_string())
        .header("x-strongroom-nonce", "nonce-0000000002")
        .header("x-strongroom-signature", sig)
        .header("content-type", "application/json")
        .body(r#"{"external_id":"signed-2"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(code(&r.json::<Value>().await.unwrap()), "bad_signature");
    let (st, v) = signed("GET", "/v1/assets", "", now, "nonce-0000000003", "/v1/withdrawals").await;
    assert_eq!((st, code(&v)), (StatusCode::UNAUTHORIZED, "bad_signature"));
    let (st, v) =
        signed("GET", "/v1/assets", "", now - 600_000, "nonce-0000000004", "/v1/assets").await;
    assert_eq!((st, code(&v)), (StatusCode::UNAUTHORIZED, "signature_expired"));
    let (st, v) = signed("GET", "/v1/assets", "", now, "nonce-0000000005", "/v1/assets").await;
    assert_eq!(st, StatusCode::OK, "{v}");
    // Key rotation re-seals the signing key once; a second run finds nothing to do.
    let new = strongroom_crypto::seal::SoftwareKek::generate(&env);
    let r = strongroom_server::rotate::rotate(s.store.as_ref(), s.kek.as_ref(), &new, &env)
        .await
        .unwrap();
    assert_eq!(r.tokens, 1, "{r:?}");
    let again = strongroom_server::rotate::rotate(s.store.as_ref(), s.kek.as_ref(), &new, &env)
        .await
        .unwrap();
    assert_eq!((again.tokens, again.unchanged), (0, 1), "{again:?}");
    s.stop().await;
}

/// Staff accounts and passkey approvals: an approver signs in, registers a passkey, the
/// admins put it in the governance log, and the approver approves a withdrawal with it — the
/// assertion's challenge is the approval message, so the gate (and every signer node) checks
/// it against the log. Approving needs a 2FA sign-in and only counts as oneself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_staff_approver_approves_with_a_passkey_the_governance_log_holds() {
    use strongroom_governance::Role as G;
    let s = Server::start(None).await;
    let env = TestEnv(std::time::Instant::now());
    let password = "staff passphrase long enough";
    let pw = strongroom_crypto::SecretString::new(password.into());
    strongroom_server::accounts::create_staff(
        s.store.as_ref(),
        s.kek.as_ref(),
        &env,
        "ann@ops.example",
        &pw,
        Role::Approver,
        Some("ann".into()),
    )
    .await
    .unwrap();
    let err = strongroom_server::accounts::create_staff(
        s.store.as_ref(),
        s.kek.as_ref(),
        &env,
        "al@ops.example",
        &pw,
        Role::Approver,
        None,
    )
    .await
    .unwrap_err();
    assert!(err.contains("--member"), "{err}");
    // Governance: two admins, the approver ann; large withdrawals need one approver.
    let (genesis, pin) =
        gov_genesis(&[("ada", 1, G::Admin), ("bob", 2, G::Admin), ("ann", 4, G::Approver)]);
    let (st, v) =
        s.post("/v1/governance/genesis", "sg", json!({"genesis": genesis, "pin": pin})).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let policy = json!({"version": 1, "rules": [
        {"name": "small", "when": {"max_amount": "100000000000000000"}, "action": {"kind": "allow"}},
        {"name": "large", "action": {"kind": "approvals", "count": 1, "roles": ["approver"]}},
    ]});
    let govern = |change: Value, key: &'static str, by: &'static [(&'static str, u8)]| {
        let s = &s;
        async move {
            let (st, v) = s.post("/v1/governance/proposals", key, json!({"change": change})).await;
            assert_eq!(st, StatusCode::OK, "{v}");
            for (who, n) in by {
                let (_, gov, _) =
                    s.call("GET", "/v1/governance", Some(Role::Auditor), None, None).await;
                let (st, v) = sign_proposal(s, &gov, who, *n, &format!("{key}-{who}")).await;
                assert_eq!(st, StatusCode::OK, "{v}");
            }
            let (_, gov, _) =
                s.call("GET", "/v1/governance", Some(Role::Auditor), None, None).await;
            gov
        }
    };
    const ADMINS: &[(&str, u8)] = &[("ada", 1), ("bob", 2)];
    govern(json!({"change": "set_policy", "policy": policy}), "sp", ADMINS).await;

    // The approver signs in (password only) and registers a passkey.
    let (st, ann, _) = s.login(json!({"email": "ann@ops.example", "password": password})).await;
    assert_eq!(st, StatusCode::OK, "{ann}");
    let ann_pw = ann["token"].as_str().unwrap().to_owned();
    let (_, me, _) = s.session("GET", "/v1/me", &ann_pw, None).await;
    assert_eq!((me["role"].as_str(), me["member"].as_str()), (Some("approver"), Some("ann")));
    let mut key = authenticator::SoftAuthenticator::new(&s.base);
    let spec = staff_passkey(&s, &ann_pw, &mut key).await;
    assert_eq!(spec["public_key"], hex::encode(key.public_key_sec1()));
    // Staff are not customers, and have only their role's reach.
    let (st, _, _) = s.session("GET", "/v1/me/whitelist", &ann_pw, None).await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    let (st, _, _) =
        s.session("POST", "/v1/customers", &ann_pw, Some(json!({"external_id": "x"}))).await;
    assert_eq!(st, StatusCode::FORBIDDEN);

    // A large withdrawal waits for an approver.
    let (_, c) = s.post("/v1/customers", "sc", json!({"external_id": "staff-test"})).await;
    let cid = c["id"].as_str().unwrap().to_owned();
    // Under governance a credit with no chain evidence is the admin quorum's (entry 2).
    govern(
        json!({"change": "ledger_credit", "customer_id": cid, "asset": "ETH",
            "amount": "1000000000000000000", "reference": "0xst:0"}),
        "lc",
        ADMINS,
    )
    .await;
    let (st, d) = s
        .post(
            "/v1/deposits",
            "sd",
            json!({"customer_id": cid, "asset": "ETH", "amount": "1", "reference": "0xst:0",
                "adjustment": 2}),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{d}");
    let (st, w) = s
        .post(
            "/v1/withdrawals",
            "sw",
            json!({"customer_id": cid, "asset": "ETH", "destination": DEST, "amount": "0.5"}),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{w}");
    let wid = w["id"].as_str().unwrap().to_owned();
    let (st, v, _) =
        s.session("GET", &format!("/v1/withdrawals/{wid}/approval-challenge"), &ann_pw, None).await;
    assert_eq!((st, code(&v)), (StatusCode::CONFLICT, "no_passkey_in_governance"), "{v}");
    // The admins put ann's passkey in the log, and ann's own governance key says it is hers:
    // the admins' signatures alone leave it pending.
    let set = json!({"change": "set_passkey", "id": "ann", "passkey": spec});
    let gov = govern(set, "pk", ADMINS).await;
    let waiting = gov["proposal"]["missing"].as_str().unwrap_or_default();
    assert!(waiting.contains("ann's own signature"), "{gov}");
    let (st, v) = sign_proposal(&s, &gov, "ann", 4, "pk-ann").await;
    assert_eq!(st, StatusCode::OK, "{v}");

    let (st, ch, _) =
        s.session("GET", &format!("/v1/withdrawals/{wid}/approval-challenge"), &ann_pw, None).await;
    assert_eq!(st, StatusCode::OK, "{ch}");
    assert_eq!(ch["intent_hash"], w["intent_hash"]);
    let assertion = key.get(&ch["options"]);
    let r = &assertion["response"];
    let body = |approver: &str| {
        json!({"approver": approver, "intent_hash": ch["intent_hash"], "policy_version": ch["policy_version"],
            "expires_at_ms": ch["expires_at_ms"], "webauthn": {
                "authenticator_data": r["authenticatorData"], "client_data_json": r["clientDataJSON"],
                "signature": r["signature"]}})
    };
    // Signed in with a password only: approving is refused.
    let path = format!("/v1/withdrawals/{wid}/approvals");
    let (st, v, _) = s.session("POST", &path, &ann_pw, Some(body("ann"))).await;
    assert_eq!((st, code(&v)), (StatusCode::FORBIDDEN, "two_factor_required"), "{v}");
    // Signed in with the passkey: only as herself, and then it counts.
    let ann_2fa = passkey_login(&s, "ann@ops.example", &mut key).await;
    let (st, v, _) = s.session("POST", &path, &ann_2fa, Some(body("bob"))).await;
    assert_eq!(st, StatusCode::FORBIDDEN, "{v}");
    let (st, v, _) = s.session("POST", &path, &ann_2fa, Some(body("ann"))).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let (_, w, _) =
        s.call("GET", &format!("/v1/withdrawals/{wid}"), Some(Role::Auditor), None, None).await;
    assert_eq!(w["policy"]["outcome"], "allow", "{w}");

    // Ann changes her mind before it is built: a denial needs a second factor and a reason,
    // cancels the withdrawal for everyone, and says who and why.
    let deny = format!("/v1/withdrawals/{wid}/deny");
    let (st, v, _) =
        s.session("POST", &deny, &ann_pw, Some(json!({"reason": "wrong payee"}))).await;
    assert_eq!((st, code(&v)), (StatusCode::FORBIDDEN, "two_factor_required"), "{v}");
    let (st, v, _) = s.session("POST", &deny, &ann_2fa, Some(json!({"reason": "  "}))).await;
    assert_eq!((st, code(&v)), (StatusCode::BAD_REQUEST, "invalid_reason"), "{v}");
    let (st, v, _) =
        s.session("POST", &deny, &ann_2fa, Some(json!({"reason": "wrong payee"}))).await;
    assert_eq!((st, v["state"].as_str()), (StatusCode::OK, Some("cancelled")), "{v}");
    let (_, w, _) =
        s.call("GET", &format!("/v1/withdrawals/{wid}"), Some(Role::Auditor), None, None).await;
    assert_eq!(w["denial"]["reason"], "wrong payee", "{w}");
    assert!(w["denial"]["by"].as_str().unwrap().starts_with("ann ("), "{w}");
    let (st, v, _) = s
        .call("POST", &deny, Some(Role::Approver), Some("d2"), Some(json!({"reason": "me too"})))
        .await;
    assert_eq!((st, code(&v)), (StatusCode::CONFLICT, "invalid_transition"), "{v}");
    s.stop().await;
}

/// A passkey registered by the signed-in staff member `token`, made by `key`: its governance
/// key (what `set_passkey` puts in the log).
async fn staff_passkey(
    s: &Server,
    token: &str,
    key: &mut authenticator::SoftAuthenticator,
) -> Value {
    let (_, opts, _) = s.session("POST", "/v1/me/passkeys/options", token, None).await;
    let cred = key.create(&opts["options"]);
    let body = json!({"ceremony_id": opts["ceremony_id"], "credential": cred});
    let (st, pk, _) = s.session("POST", "/v1/me/passkeys", token, Some(body)).await;
    assert_eq!(st, StatusCode::CREATED, "{pk}");
    let path = format!("/v1/me/passkeys/{}/governance-key", pk["id"].as_str().unwrap());
    let (st, spec, _) = s.session("GET", &path, token, None).await;
    assert_eq!(st, StatusCode::OK, "{spec}");
    spec
}

/// Sign in as `email` with the passkey `key` (a second factor): the session's token.
async fn passkey_login(
    s: &Server,
    email: &str,
    key: &mut authenticator::SoftAuthenticator,
) -> String {
    let body = json!({"email": email});
    let (_, opts, _) = s.call("POST", "/v1/auth/passkey/options", None, None, Some(body)).await;
    let login = key.get(&opts["options"]);
    let body = json!({"ceremony_id": opts["ceremony_id"], "credential": login});
    let (st, v, _) = s.call("POST", "/v1/auth/passkey/login", None, None, Some(body)).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    v["token"].as_str().unwrap().to_owned()
}

/// A security officer with a staff account signs a governance entry with the passkey the
/// log registers for them: only as their own member, only after signing in with a second
/// factor, only over the entry's hash, and never for a change to who governs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_staff_officer_signs_governance_with_a_passkey_only_as_themselves() {
    use strongroom_governance::Role as G;
    let s = Server::start(None).await;
    let env = TestEnv(std::time::Instant::now());
    let password = "officer passphrase long enough";
    let pw = strongroom_crypto::SecretString::new(password.into());
    strongroom_server::accounts::create_staff(
        s.store.as_ref(),
        s.kek.as_ref(),
        &env,
        "sam@ops.example",
        &pw,
        Role::Admin,
        Some("sec".into()),
    )
    .await
    .unwrap();
    let (genesis, pin) =
        gov_genesis(&[("ada", 1, G::Admin), ("bob", 2, G::Admin), ("sec", 3, G::SecurityOfficer)]);
    let (st, v) =
        s.post("/v1/governance/genesis", "sg", json!({"genesis": genesis, "pin": pin})).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let propose = |change: Value, key: &'static str| {
        let s = &s;
        async move {
            let (st, v) = s.post("/v1/governance/proposals", key, json!({"change": change})).await;
            assert_eq!(st, StatusCode::OK, "{v}");
            let (_, gov, _) =
                s.call("GET", "/v1/governance", Some(Role::Auditor), None, None).await;
            gov
        }
    };

    // Sam registers a passkey; the admins and sam's own key put it in the log.
    let (_, sam, _) = s.login(json!({"email": "sam@ops.example", "password": password})).await;
    let sam_pw = sam["token"].as_str().unwrap().to_owned();
    let mut key = authenticator::SoftAuthenticator::new(&s.base);
    let spec = staff_passkey(&s, &sam_pw, &mut key).await;
    let gov = propose(json!({"change": "set_passkey", "id": "sec", "passkey": spec}), "pk").await;
    for (who, n) in [("ada", 1), ("bob", 2), ("sec", 3)] {
        let (st, v) = sign_proposal(&s, &gov, who, n, &format!("pk-{who}")).await;
        assert_eq!(st, StatusCode::OK, "{v}");
    }
    let (_, gov, _) = s.call("GET", "/v1/governance", Some(Role::Auditor), None, None).await;
    let sec = gov["members"].as_array().unwrap().iter().find(|m| m["id"] == "sec").unwrap();
    assert_eq!(sec["passkey"]["credential_id"], spec["credential_id"], "{gov}");

    // Sam signs in with the passkey (a second factor).
    let sam_2fa = passkey_login(&s, "sam@ops.example", &mut key).await;
    // A freeze waits; the page reads it from the signed bytes, which hash to the hash.
    let gov = propose(json!({"change": "freeze", "scope": {"kind": "global"}}), "fz").await;
    let p = &gov["proposal"];
    let signed = B64URL.decode(p["signed"].as_str().unwrap()).unwrap();
    let hash = strongroom_governance::tagged_hash(strongroom_governance::log::ENTRY_TAG, &signed);
    assert_eq!(hex::encode(hash), p["hash"].as_str().unwrap());
    let read: Value = serde_json::from_slice(&signed).unwrap();
    assert_eq!(read["change"], json!({"change": "freeze", "scope": {"kind": "global"}}));
    let path = format!("/v1/governance/proposals/{}/signoffs", p["entry"]["seq"]);
    let mut assertion = |challenge: &[u8]| {
        let a =
            key.sign_assertion(spec["rp_id"].as_str().unwrap(), &json!(B64URL.encode(challenge)));
        let r = &a["response"];
        json!({"authenticator_data": r["authenticatorData"], "client_data_json": r["clientDataJSON"],
            "signature": r["signature"]})
    };
    let honest = assertion(&hash);
    let body = |member: &str, passkey: &Value| json!({"member": member, "passkey": passkey});
    // Signed in with a password only: refused.
    let (st, v, _) = s.session("POST", &path, &sam_pw, Some(body("sec", &honest))).await;
    assert_eq!((st, code(&v)), (StatusCode::FORBIDDEN, "two_factor_required"), "{v}");
    // As another member: refused.
    let (st, v, _) = s.session("POST", &path, &sam_2fa, Some(body("ada", &honest))).await;
    assert_eq!(st, StatusCode::FORBIDDEN, "{v}");
    // An assertion over something else than this entry's hash, and one with both kinds.
    let other = assertion(&[7u8; 32]);
    let (st, v, _) = s.session("POST", &path, &sam_2fa, Some(body("sec", &other))).await;
    assert_eq!((st, code(&v)), (StatusCode::BAD_REQUEST, "invalid_signature"), "{v}");
    assert!(v.to_string().contains("another challenge"), "{v}");
    let both = json!({"member": "sec", "passkey": honest, "signature": "00".repeat(64)});
    let (st, v, _) = s.session("POST", &path, &sam_2fa, Some(both)).await;
    assert_eq!((st, code(&v)), (StatusCode::BAD_REQUEST, "invalid_signature"), "{v}");
    // The honest signature commits the freeze: one officer suffices.
    let (st, v, _) = s.session("POST", &path, &sam_2fa, Some(body("sec", &honest))).await;
    assert_eq!((st, v["committed"].as_bool()), (StatusCode::OK, Some(true)), "{v}");
    assert_eq!(v["governance"]["freezes"], json!([{"kind": "global"}]), "{v}");

    // A new member: a passkey may not sign it.
    let eve = json!({"id": "eve", "public_key": hex::encode(gov_key(9).verifying_key().to_bytes()),
        "roles": ["admin"]});
    let gov = propose(json!({"change": "add_member", "member": eve}), "am").await;
    let p = &gov["proposal"];
    let signed = B64URL.decode(p["signed"].as_str().unwrap()).unwrap();
    let hash = strongroom_governance::tagged_hash(strongroom_governance::log::ENTRY_TAG, &signed);
    let path = format!("/v1/governance/proposals/{}/signoffs", p["entry"]["seq"]);
    let (st, v, _) = s.session("POST", &path, &sam_2fa, Some(body("sec", &assertion(&hash)))).await;
    assert_eq!((st, code(&v)), (StatusCode::BAD_REQUEST, "invalid_signature"), "{v}");
    assert!(v.to_string().contains("takes the key they hold"), "{v}");
    s.stop().await;
}

/// Guessing TOTP codes (with the right password) locks the account like guessing passwords;
/// the backend changing a customer's e-mail address locks their withdrawals and tells the
/// customer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn totp_guessing_locks_and_an_email_change_locks_withdrawals() {
    let s = Server::start(None).await;
    let password = "correct horse battery staple";
    let reg = s.register("eve@example.com", password).await;
    let token = reg["token"].as_str().unwrap().to_owned();
    let customer = reg["customer_id"].as_str().unwrap().to_owned();
    let (_, setup, _) = s.session("POST", "/v1/me/totp", &token, None).await;
    let secret = setup["secret"].as_str().unwrap().to_owned();
    let (st, _, _) = s
        .session("POST", "/v1/me/totp/confirm", &token, Some(json!({"code": totp_now(&secret, 0)})))
        .await;
    assert_eq!(st, StatusCode::OK);
    let right = totp_now(&secret, 30);
    let wrong: Vec<String> = (0..5u32)
        .map(|i| format!("{:06}", (right.parse::<u32>().unwrap() + 1 + i * 7919) % 1_000_000))
        .collect();
    for code in &wrong {
        let (st, v, _) = s
            .login(json!({"email": "eve@example.com", "password": password, "totp_code": code}))
            .await;
        assert_eq!((st, code_of(&v)), (StatusCode::UNAUTHORIZED, "invalid_second_factor".into()));
    }
    let (st, v, _) = s
        .login(json!({"email": "eve@example.com", "password": password, "totp_code": right}))
        .await;
    assert_eq!((st, code_of(&v)), (StatusCode::LOCKED, "account_locked".into()), "{v}");

    // The backend changes the alert address: withdrawals lock, and the customer is told.
    let (st, _) = s
        .post(
            &format!("/v1/customers/{customer}/contact"),
            "eve-c1",
            json!({"email": "eve.new@example.com"}),
        )
        .await;
    assert_eq!(st, StatusCode::OK);
    let (st, _) = s
        .post(
            "/v1/deposits",
            "eve-d1",
            json!({"customer_id": customer, "asset": "ETH", "amount": "1", "reference": "0xeve:0"}),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED);
    let (st, v) = s
        .post(
            "/v1/withdrawals",
            "eve-w1",
            json!({"customer_id": customer, "asset": "ETH", "destination": DEST, "amount": "0.1"}),
        )
        .await;
    assert_eq!((st, code(&v)), (StatusCode::FORBIDDEN, "withdrawal_locked"), "{v}");
    assert!(v["error"]["message"].as_str().unwrap().contains("e-mail address"), "{v}");
    assert!(s
        .mails_to(&customer)
        .iter()
        .any(|(subj, t)| subj.contains("Security change") && t.contains("e-mail address")));
    s.stop().await;
}

fn code_of(v: &Value) -> String {
    code(v).to_owned()
}

/// Behind a load balancer the API sees the balancer's address; it believes `X-Forwarded-For`
/// and `Forwarded` from the proxies it was told to trust, and from no one else, so an IP
/// allow-list holds for the real client and a client cannot pick its own address.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_addresses_count_only_from_trusted_proxies() {
    let env = TestEnv(std::time::Instant::now());
    let ctx = WriteCtx { actor: "test".into(), now: env.now(), request_id: None };
    let mut results = Vec::new();
    for trusted in [vec!["127.0.0.0/8".to_owned()], vec![]] {
        let s = Server::start_with(None, strongroom_server::HandCredits::Never, trusted).await;
        let t = generate_token(&env);
        let restrictions = strongroom_store::TokenRestrictions {
            allowed_ips: Some(vec!["203.0.113.7".into()]),
            ..Default::default()
        };
        let token = NewApiToken {
            id: t.id.clone(),
            name: "backend".into(),
            role: Role::Service,
            token_hash: t.hash.clone(),
            restrictions: Some(restrictions),
        };
        s.store.create_token(&ctx, token).await.unwrap();
        let mut row = Vec::new();
        for header in [None, Some("203.0.113.7"), Some("203.0.113.7, 198.51.100.1")] {
            let mut req =
                s.client.get(format!("{}/v1/assets", s.base)).bearer_auth(t.token.expose_secret());
            if let Some(h) = header {
                req = req.header("x-forwarded-for", h);
            }
            let r = req.send().await.unwrap();
            row.push(r.status());
        }
        let fwd = s
            .client
            .get(format!("{}/v1/assets", s.base))
            .bearer_auth(t.token.expose_secret())
            .header("forwarded", "for=203.0.113.7;proto=https")
            .send()
            .await
            .unwrap();
        row.push(fwd.status());
        results.push(row);
    }
    let (ok, no) = (StatusCode::OK, StatusCode::FORBIDDEN);
    // Trusting the balancer (the test connects from 127.0.0.1): the balancer's own address is
    // not allowed, the client it names is; a client-written prefix is never read.
    assert_eq!(results[0], vec![no, ok, no, ok]);
    // Trusting no one: every header is ignored.
    assert_eq!(results[1], vec![no, no, no, no]);
}
