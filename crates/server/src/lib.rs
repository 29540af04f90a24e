//! The HTTPS API server.
//!
//! HTTPS only, TLS 1.3 only ([`tls`]); API tokens ([`auth`]); one error type with stable
//! codes ([`error`]); request ids, structured logs and Prometheus metrics (the `observe`
//! middleware); and an OpenAPI document generated from the route table ([`api`]).
//!
//! This crate turns HTTP into calls on `strongroom_store::Store` and pure `core`
//! functions. It holds no business rule of its own beyond input validation and roles, and
//! it reads time and randomness only through `Env`.
#![forbid(unsafe_code)]

pub mod accounts;
pub mod api;
pub mod audit;
pub mod auth;
pub mod body;
pub mod clients;
pub mod console;
pub mod contact;
pub mod error;
pub mod events;
pub mod extract;
pub mod governance;
pub mod metrics;
pub mod ops;
pub mod page;
pub mod pki;
pub mod refills;
pub mod risk;
pub mod rotate;
pub mod tls;
pub mod treasury;

use std::sync::Arc;

use axum::extract::{FromRequestParts, MatchedPath, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use strongroom_core::withdrawal::WithdrawalRules;
use strongroom_core::{new_id, Env};
use strongroom_store::Store;
use strongroom_units::AssetRegistry;
use tracing::Instrument;

use crate::error::{ApiError, ErrorBody, ErrorDetail, ErrorInfo};
use crate::metrics::{CodeLabels, HttpLabels, Metrics, RouteLabels};

/// What every handler can reach.
#[derive(Clone, Debug)]
pub struct AppState(Arc<Inner>);

#[derive(Debug)]
struct Inner {
    store: Arc<dyn Store>,
    env: Arc<dyn Env>,
    registry: AssetRegistry,
    rules: WithdrawalRules,
    metrics: Metrics,
    deposit_addresses: Option<Arc<dyn DepositAddresses>>,
    screen: Option<Arc<dyn DestinationScreen>>,
    personal_data: Option<Arc<dyn strongroom_crypto::seal::KeyEncryptionKey>>,
    scorer: Option<Arc<dyn RiskScorer>>,
    accounts: Arc<accounts::Accounts>,
    notifier: Option<Arc<dyn accounts::Notifier>>,
    /// Credits without chain evidence or a governance quorum (development only).
    hand_credits: HandCredits,
    /// Load balancers whose forwarding headers name the client (addresses or CIDR ranges).
    trusted_proxies: Vec<String>,
    /// What readiness and the metrics ask beside the database (chains, signer nodes).
    probes: Vec<Arc<dyn ops::Probe>>,
}

/// Everything the API needs, given before it serves anything: whoever runs the server
/// (the runtime) builds it whole, so no part is missing while requests arrive.
#[derive(Debug)]
#[must_use]
pub struct AppStateBuilder {
    inner: Inner,
}

impl AppStateBuilder {
    /// Customers' deposit addresses (without it, `POST /v1/deposit-addresses` says no chain
    /// is connected).
    pub fn deposit_addresses(mut self, provider: Arc<dyn DepositAddresses>) -> Self {
        self.inner.deposit_addresses = Some(provider);
        self
    }
    /// Destination screening against sanctions and scam lists.
    pub fn destination_screen(mut self, screen: Arc<dyn DestinationScreen>) -> Self {
        self.inner.screen = Some(screen);
        self
    }
    /// The key that seals personal data (customers' contact details and secrets).
    pub fn personal_data_key(
        mut self,
        kek: Arc<dyn strongroom_crypto::seal::KeyEncryptionKey>,
    ) -> Self {
        self.inner.personal_data = Some(kek);
        self
    }
    /// The risk engine for `POST /v1/risk/score`.
    pub fn risk_scorer(mut self, scorer: Arc<dyn RiskScorer>) -> Self {
        self.inner.scorer = Some(scorer);
        self
    }
    /// Account settings (the defaults otherwise).
    pub fn accounts(mut self, accounts: accounts::Accounts) -> Self {
        self.inner.accounts = Arc::new(accounts);
        self
    }
    /// Customer e-mail.
    pub fn notifier(mut self, n: Arc<dyn accounts::Notifier>) -> Self {
        self.inner.notifier = Some(n);
        self
    }
    /// INSECURE unless [`HandCredits::Never`] (the default): let operators credit customers
    /// by hand, for development and tests.
    pub fn hand_credits(mut self, h: HandCredits) -> Self {
        self.inner.hand_credits = h;
        self
    }
    /// The load balancers in front of the API (addresses or CIDR ranges): only from them are
    /// `Forwarded` and `X-Forwarded-For` believed. Invalid rules are refused.
    pub fn trusted_proxies(mut self, rules: Vec<String>) -> Result<Self, String> {
        if let Some(bad) = rules.iter().find(|r| !clients::valid_ip_rule(r)) {
            return Err(format!("trusted proxy {bad:?} is not an IP address or CIDR range"));
        }
        self.inner.trusted_proxies = rules;
        Ok(self)
    }
    /// A part of the deployment that readiness and the metrics check (chains, signers).
    pub fn probe(mut self, p: Arc<dyn ops::Probe>) -> Self {
        self.inner.probes.push(p);
        self
    }
    pub fn build(self) -> AppState {
        AppState(Arc::new(self.inner))
    }
}

/// When operators may credit customers with neither chain evidence nor a quorum-signed
/// ledger credit (`POST /v1/deposits` without `adjustment`). INSECURE unless `Never`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HandCredits {
    /// Production: never.
    #[default]
    Never,
    /// While no governance genesis is installed (tests that fund customers by hand).
    WithoutGovernance,
    /// Always: whoever runs the server holds every governance key anyway (the dev stack's
    /// own genesis), so a quorum's signature would prove nothing.
    Always,
}

/// A would-be withdrawal for the risk engine to score, without storing anything.
#[derive(Debug, Clone)]
pub struct ScoreInput {
    pub customer_id: uuid::Uuid,
    pub asset: String,
    /// Base units.
    pub amount: u128,
    pub destination: String,
    pub device_id: Option<String>,
    pub ip: Option<String>,
}

/// The risk engine as the API sees it (whoever runs it provides it).
#[async_trait::async_trait]
pub trait RiskScorer: Send + Sync + std::fmt::Debug {
    /// Decision (`allow`, `review`, `block`), score, and reasons as (source, detail, points);
    /// an error when the customer's profile cannot be read.
    async fn score(
        &self,
        input: &ScoreInput,
        now_ms: i64,
    ) -> Result<(String, u32, Vec<(String, String, u32)>), String>;
}

/// Screens withdrawal destinations against sanctions and scam lists before anything is
/// reserved (whoever runs the server provides it; the risk engine screens again later).
pub trait DestinationScreen: Send + Sync + std::fmt::Debug {
    /// Why `address` on `chain` must not be paid, if it must not; alerting is the screen's.
    fn screen(&self, customer_id: uuid::Uuid, chain: &str, address: &str) -> Option<String>;
}

/// Why a deposit address was not given.
#[derive(Debug, thiserror::Error)]
pub enum DepositAddressError {
    /// The asset's chain is not one this server watches: asking again will not help.
    #[error("{asset} is on {chain}, which this server does not watch")]
    ChainNotWatched { asset: String, chain: String },
    /// The signer nodes or the database did not answer: retry later.
    #[error("{0}")]
    Unavailable(String),
}

/// Makes customers' deposit addresses. The API server holds no key and talks to no chain:
/// whoever runs it (the runtime) provides this, deriving addresses from the hot wallet's public
/// key as the signer nodes report it.
#[async_trait::async_trait]
pub trait DepositAddresses: Send + Sync + std::fmt::Debug {
    /// The customer's address for `asset`'s chain, made on first request.
    async fn deposit_address(
        &self,
        customer_id: uuid::Uuid,
        asset: &strongroom_units::Asset,
    ) -> Result<strongroom_store::DepositAddress, DepositAddressError>;
    /// Whether `address` is one of our hot wallets (withdrawals to it are refused).
    fn is_hot_wallet(&self, address: &strongroom_units::Address) -> bool;
}

impl AppState {
    /// A state with nothing connected but the store (tests, benchmarks); see [`Self::builder`].
    pub fn new(
        store: Arc<dyn Store>,
        env: Arc<dyn Env>,
        registry: AssetRegistry,
        rules: WithdrawalRules,
    ) -> Self {
        Self::builder(store, env, registry, rules).build()
    }

    /// Start building a state; every part is given before [`AppStateBuilder::build`].
    pub fn builder(
        store: Arc<dyn Store>,
        env: Arc<dyn Env>,
        registry: AssetRegistry,
        rules: WithdrawalRules,
    ) -> AppStateBuilder {
        AppStateBuilder {
            inner: Inner {
                store,
                env,
                registry,
                rules,
                metrics: Metrics::default(),
                deposit_addresses: None,
                screen: None,
                personal_data: None,
                scorer: None,
                accounts: Arc::new(
                    accounts::Accounts::new(accounts::AccountRules::default()).unwrap_or_else(
                        |e| unreachable!("the default relying party is valid: {e}"),
                    ),
                ),
                notifier: None,
                hand_credits: HandCredits::Never,
                trusted_proxies: Vec::new(),
                probes: Vec::new(),
            },
        }
    }

    pub(crate) fn probes(&self) -> &[Arc<dyn ops::Probe>] {
        &self.0.probes
    }
    pub(crate) fn trusted_proxies(&self) -> &[String] {
        &self.0.trusted_proxies
    }
    pub(crate) fn hand_credits(&self) -> HandCredits {
        self.0.hand_credits
    }
    pub fn deposit_addresses(&self) -> Option<&Arc<dyn DepositAddresses>> {
        self.0.deposit_addresses.as_ref()
    }
    pub fn destination_screen(&self) -> Option<&Arc<dyn DestinationScreen>> {
        self.0.screen.as_ref()
    }
    pub fn personal_data_key(&self) -> Option<&Arc<dyn strongroom_crypto::seal::KeyEncryptionKey>> {
        self.0.personal_data.as_ref()
    }
    pub fn risk_scorer(&self) -> Option<&Arc<dyn RiskScorer>> {
        self.0.scorer.as_ref()
    }
    pub fn accounts(&self) -> &accounts::Accounts {
        &self.0.accounts
    }
    pub fn notifier(&self) -> Option<&Arc<dyn accounts::Notifier>> {
        self.0.notifier.as_ref()
    }
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.0.store
    }
    pub fn env(&self) -> &dyn Env {
        self.0.env.as_ref()
    }
    pub fn registry(&self) -> &AssetRegistry {
        &self.0.registry
    }
    pub fn rules(&self) -> &WithdrawalRules {
        &self.0.rules
    }
    pub fn metrics(&self) -> &Metrics {
        &self.0.metrics
    }
}

/// The request's id: the caller's `X-Request-Id` when it is sane, otherwise a fresh one.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

impl<S: Send + Sync> FromRequestParts<S> for RequestId {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<RequestId>()
            .cloned()
            .ok_or_else(|| ApiError::internal("request id missing"))
    }
}

const REQUEST_ID: &str = "x-request-id";

fn sane_request_id(v: &HeaderValue) -> Option<String> {
    let s = v.to_str().ok()?;
    let ok = (1..=64).contains(&s.len())
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
    ok.then(|| s.to_owned())
}

/// Request ids, one structured log line per request, metrics, security headers, and the
/// request id inside error bodies. Errors are logged here, once.
async fn observe(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let start = state.0.env.monotonic();
    let rid = req
        .headers()
        .get(REQUEST_ID)
        .and_then(sane_request_id)
        .unwrap_or_else(|| new_id(state.env()).to_string());
    req.extensions_mut().insert(RequestId(rid.clone()));
    let method = req.method().as_str().to_owned();
    let route =
        req.extensions().get::<MatchedPath>().map_or("unmatched", |m| m.as_str()).to_owned();
    let span = tracing::info_span!("request", request_id = %rid, method = %method, route = %route, principal = tracing::field::Empty);
    let mut resp = match clients::digest_if_signed(req).await {
        Ok(req) => next.run(req).instrument(span.clone()).await,
        Err(e) => e.into_response(),
    };
    let elapsed = state.0.env.monotonic().saturating_sub(start);
    let status = resp.status();

    if let Some(info) = resp.extensions_mut().remove::<ErrorInfo>() {
        let _enter = span.enter();
        match &info.internal {
            Some(detail) if status.is_server_error() => {
                tracing::error!(code = info.code, detail = %detail, "request failed")
            }
            Some(detail) => tracing::warn!(code = info.code, detail = %detail, "request refused"),
            None => tracing::info!(code = info.code, message = %info.message, "request refused"),
        }
        state.metrics().errors.get_or_create(&CodeLabels { code: info.code.into() }).inc();
        let body = ErrorBody {
            error: ErrorDetail {
                code: info.code.into(),
                message: info.message,
                request_id: Some(rid.clone()),
            },
        };
        let headers = std::mem::take(resp.headers_mut());
        resp = (status, Json(body)).into_response();
        for (k, v) in headers.iter() {
            if k != axum::http::header::CONTENT_LENGTH {
                resp.headers_mut().insert(k.clone(), v.clone());
            }
        }
    }
    {
        let _enter = span.enter();
        tracing::info!(
            status = status.as_u16(),
            latency_ms = elapsed.as_secs_f64() * 1000.0,
            "request"
        );
    }
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&rid) {
        h.insert(REQUEST_ID, v);
    }
    h.insert("strict-transport-security", HeaderValue::from_static("max-age=31536000"));
    h.insert("x-content-type-options", HeaderValue::from_static("nosniff"));
    h.insert("cache-control", HeaderValue::from_static("no-store"));
    if !h.contains_key(axum::http::header::CONTENT_SECURITY_POLICY) {
        h.insert(
            axum::http::header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(console::API_CSP),
        );
    }
    h.insert("x-frame-options", HeaderValue::from_static("DENY"));
    h.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    h.insert("cross-origin-opener-policy", HeaderValue::from_static("same-origin"));
    state
        .metrics()
        .http_requests
        .get_or_create(&HttpLabels {
            method: method.clone(),
            route: route.clone(),
            status: status.as_u16(),
        })
        .inc();
    state
        .metrics()
        .http_duration
        .get_or_create(&RouteLabels { method, route })
        .observe(elapsed.as_secs_f64());
    resp
}

async fn not_found() -> ApiError {
    ApiError::not_found("route_not_found", "no such route")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "method not allowed on this route",
    )
}

/// The whole application: API routes, `/v1/openapi.json`, the console, fallbacks and middleware.
/// Read every request's body before any handler answers (within the size limit; one over it
/// is answered 413 here): a refusal that comes before the body is needed (401, 403) then
/// still reaches a client that is sending one, instead of a connection closed under it.
async fn read_body_first(req: Request, next: Next) -> Response {
    let (parts, b) = req.into_parts();
    match body::body_bytes(b).await {
        Ok(bytes) => next.run(Request::from_parts(parts, axum::body::Body::from(bytes))).await,
        Err(e) => e.into_response(),
    }
}

/// The OpenAPI document the server serves at `/v1/openapi.json` (committed as
/// `docs/openapi.json`; a test keeps the two the same).
pub fn openapi() -> utoipa::openapi::OpenApi {
    let (_, mut openapi) = api::routes().split_for_parts();
    openapi.info.version = env!("CARGO_PKG_VERSION").into();
    api::document_shared_rules(&mut openapi);
    openapi
}

pub fn app(state: AppState) -> (Router, utoipa::openapi::OpenApi) {
    let (router, _) = api::routes().split_for_parts();
    let openapi = openapi();
    let doc = Arc::new(openapi.clone());
    let router = router
        .route(
            "/v1/openapi.json",
            axum::routing::get(move || {
                let doc = doc.clone();
                async move { Json(doc.as_ref().clone()) }
            }),
        )
        .merge(console::routes())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::extract::DefaultBodyLimit::max(body::MAX_BODY_BYTES))
        .layer(axum::middleware::from_fn(read_body_first))
        .layer(axum::middleware::from_fn_with_state(state.clone(), observe))
        .with_state(state);
    (router, openapi)
}
