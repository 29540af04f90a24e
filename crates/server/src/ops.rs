//! What operators watch: readiness (`GET /v1/ready`, distinct from liveness at
//! `/v1/health`) and the gauges read at every scrape of `/metrics` from the database and
//! from the runtime's probes (chains, signer nodes). Nothing here is kept between requests:
//! every instance reports the same shared state.

use async_trait::async_trait;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

use crate::metrics::{LeaseLabels, Metrics, StateLabels};
use crate::AppState;

/// One readiness check.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Check {
    /// `database`, `chain:<id>`, `signers`.
    pub component: String,
    pub ok: bool,
    /// Fit to serve, but a part is down (a signer node gone while a quorum still answers):
    /// `/v1/health` says `degraded`.
    #[serde(default)]
    pub degraded: bool,
    pub detail: String,
}

/// A part of the deployment the API cannot see for itself (a chain's node, the signer
/// nodes): it sets its gauges on `metrics` and says whether it is fit to serve.
#[async_trait]
pub trait Probe: Send + Sync + std::fmt::Debug {
    async fn probe(&self, metrics: &Metrics) -> Vec<Check>;
}

/// `GET /v1/ready`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReadyView {
    pub ready: bool,
    pub checks: Vec<Check>,
}

/// Read the shared gauges from the database; returns the database check.
async fn database(state: &AppState) -> Check {
    let store = state.store();
    let m = state.metrics();
    let now = state.env().now().unix_ms();
    let read = async {
        store.ping().await?;
        for b in store.withdrawal_backlog(now).await? {
            let labels = StateLabels { state: b.state.as_str().into() };
            m.withdrawals_unfinished.get_or_create(&labels).set(gauge(b.count));
            m.withdrawals_oldest_seconds.get_or_create(&labels).set(b.oldest_ms / 1000);
        }
        m.review_queue.set(gauge(store.review_queue().await?));
        let (backlog, oldest) = store.outbox_backlog(now).await?;
        m.outbox_backlog.set(gauge(backlog));
        m.outbox_oldest_seconds.set(oldest / 1000);
        m.outbox_dead_letters.set(gauge(store.dead_letter_count().await?));
        let live: Vec<_> = store.leases("leader/").await?;
        // Leases that ended are shown as 0, so a job nobody leads stands out.
        m.leader_leases.clear();
        for l in live {
            let held = i64::from(l.expires_at_ms > now);
            m.leader_leases
                .get_or_create(&LeaseLabels { lease: l.name, holder: l.holder })
                .set(held);
        }
        crate::treasury::set_gauges(state).await?;
        Ok::<_, strongroom_store::StoreError>(())
    };
    database_check(state, read.await)
}

fn database_check(state: &AppState, read: Result<(), strongroom_store::StoreError>) -> Check {
    let (ok, detail) = match read {
        Ok(()) => (true, state.store().backend().name().to_owned()),
        Err(e) => (false, e.to_string()),
    };
    Check { component: "database".into(), ok, degraded: false, detail }
}

fn gauge(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Run every check and set every gauge (a `/metrics` scrape).
pub async fn observe(state: &AppState) -> Vec<Check> {
    let mut checks = vec![database(state).await];
    for p in state.probes() {
        checks.extend(p.probe(state.metrics()).await);
    }
    checks
}

/// The checks alone (a load balancer asks every few seconds): the database answers, and
/// each probe.
pub(crate) async fn checks(state: &AppState) -> Vec<Check> {
    let mut checks = vec![database_check(state, state.store().ping().await)];
    for p in state.probes() {
        checks.extend(p.probe(state.metrics()).await);
    }
    checks
}

/// Readiness: this instance can do its work now (database, chains, signer quorum). A load
/// balancer sends traffic only to ready instances; liveness is `/v1/health`.
#[utoipa::path(get, path = "/v1/ready", tag = "system",
    responses((status = 200, body = ReadyView), (status = 503, body = ReadyView)))]
pub(crate) async fn ready(State(state): State<AppState>) -> Response {
    let checks = checks(&state).await;
    let ready = checks.iter().all(|c| c.ok);
    let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, Json(ReadyView { ready, checks })).into_response()
}

/// Unfinished withdrawals in one state.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct BacklogView {
    pub state: String,
    pub count: u64,
    pub oldest_seconds: i64,
}

/// A singleton job and who leads it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct LeaderView {
    pub lease: String,
    pub holder: String,
    /// Whether the lease is live now (a job nobody leads shows `false`).
    pub held: bool,
}

/// What the operators' dashboard shows beside the treasury: every check, the withdrawals not
/// yet final by state and age, the queues, and who leads each singleton job.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SummaryView {
    pub checks: Vec<Check>,
    pub withdrawals: Vec<BacklogView>,
    pub review_queue: u64,
    pub outbox_backlog: u64,
    pub outbox_oldest_seconds: i64,
    pub leaders: Vec<LeaderView>,
}

/// The operators' summary (the same figures `/metrics` exports, as JSON for the console).
#[utoipa::path(get, path = "/v1/ops/summary", tag = "system", security(("token" = [])),
    responses((status = 200, body = SummaryView), (status = 401, body = crate::error::ErrorBody), (status = 403, body = crate::error::ErrorBody)))]
pub(crate) async fn summary(
    State(state): State<AppState>,
    p: crate::auth::Principal,
) -> Result<Json<SummaryView>, crate::error::ApiError> {
    p.require(crate::auth::READERS)?;
    let checks = checks(&state).await;
    let store = state.store();
    let now = state.env().now().unix_ms();
    let withdrawals = store
        .withdrawal_backlog(now)
        .await?
        .into_iter()
        .map(|b| BacklogView {
            state: b.state.as_str().into(),
            count: b.count,
            oldest_seconds: b.oldest_ms / 1000,
        })
        .collect();
    let (outbox_backlog, oldest) = store.outbox_backlog(now).await?;
    let leaders = store
        .leases("leader/")
        .await?
        .into_iter()
        .map(|l| LeaderView { held: l.expires_at_ms > now, lease: l.name, holder: l.holder })
        .collect();
    Ok(Json(SummaryView {
        checks,
        withdrawals,
        review_queue: store.review_queue().await?,
        outbox_backlog,
        outbox_oldest_seconds: oldest / 1000,
        leaders,
    }))
}
