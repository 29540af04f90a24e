//! Risk over the API: events the risk engine learns from, and the review queue of paused
//! withdrawals (assign, note, release, reject). The engine itself runs beside the server
//! (the CLI's risk worker); a withdrawal is signed only once its review is cleared or
//! released.

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::Json;
use serde::{Deserialize, Serialize};
use strongroom_core::new_id;
use strongroom_store::{Keyset, ReviewAction, RiskEvent, RiskReview, RiskState, Role};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::auth::Principal;
use crate::auth::{ANALYSTS, READERS, WRITERS};
use crate::error::{ApiError, ErrorBody};
use crate::extract::{path_id, query, Write, WriteBody};
use crate::page::{self, Page};
use crate::AppState;

/// A withdrawal's risk decision and review.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ReviewView {
    pub withdrawal_id: Uuid,
    pub customer_id: Uuid,
    /// `allow`, `review` or `block`, as assessed.
    pub decision: String,
    /// `cleared`, `open`, `released`, `rejected` or `blocked`.
    pub state: String,
    pub score: u32,
    /// Reasons (source, detail, points), shadow reasons, the features and the rules version.
    #[schema(value_type = Object)]
    pub assessment: serde_json::Value,
    pub assignee: Option<String>,
    #[schema(value_type = Vec<Object>)]
    pub notes: Vec<serde_json::Value>,
    pub decided_by: Option<String>,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
}

impl From<RiskReview> for ReviewView {
    fn from(r: RiskReview) -> Self {
        ReviewView {
            withdrawal_id: r.withdrawal_id,
            customer_id: r.customer_id,
            decision: r.decision,
            state: r.state.as_str().into(),
            score: r.score,
            assessment: r.assessment,
            assignee: r.assignee,
            notes: r.notes.iter().map(|n| serde_json::to_value(n).unwrap_or_default()).collect(),
            decided_by: r.decided_by,
            created_at_ms: r.created_at.unix_ms(),
            updated_at_ms: r.updated_at.unix_ms(),
        }
    }
}

const KINDS: &[&str] = &["login", "security_change", "trade", "deposit"];

/// Something the customer did that the risk engine should know.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewRiskEvent {
    pub customer_id: Uuid,
    /// `login`, `security_change`, `trade` or `deposit`.
    pub kind: String,
    pub device_id: Option<String>,
    pub ip: Option<String>,
}

impl WriteBody for NewRiskEvent {
    const ROLES: &'static [Role] = WRITERS;
}

fn bounded(what: &'static str, v: &Option<String>) -> Result<(), ApiError> {
    if v.as_ref().is_some_and(|s| s.is_empty() || s.len() > 128) {
        return Err(ApiError::bad_request(
            "invalid_event",
            format!("{what} must be 1-128 characters"),
        ));
    }
    Ok(())
}

fn ip_aad(customer: Uuid) -> String {
    format!("risk_event/{customer}/ip")
}

/// A risk event's data: the device id, and the IP address sealed under the personal-data key
/// (bound to the customer) as `ip_sealed` when a key is configured (`ip` otherwise); callers
/// add their own fields.
pub fn event_data(
    kek: Option<&dyn strongroom_crypto::seal::KeyEncryptionKey>,
    env: &dyn strongroom_core::Env,
    customer: Uuid,
    device_id: Option<&str>,
    ip: Option<&str>,
) -> serde_json::Map<String, serde_json::Value> {
    let mut data = serde_json::Map::new();
    data.insert("device_id".into(), device_id.into());
    match (ip, kek) {
        (Some(ip), Some(kek)) => {
            match strongroom_crypto::seal::seal(
                kek,
                ip.as_bytes(),
                ip_aad(customer).as_bytes(),
                env,
            ) {
                Ok(sealed) => {
                    data.insert("ip_sealed".into(), hex::encode(sealed).into());
                }
                Err(e) => {
                    tracing::error!(error = %e, "an event's IP address could not be sealed; dropped")
                }
            }
        }
        (ip, None) => {
            data.insert("ip".into(), ip.into());
        }
        (None, Some(_)) => {}
    }
    data
}

/// The IP address of a risk event's data, opened if sealed.
pub fn event_ip(
    kek: Option<&dyn strongroom_crypto::seal::KeyEncryptionKey>,
    customer: Uuid,
    data: &serde_json::Value,
) -> Option<String> {
    if let Some(plain) = data.get("ip").and_then(|v| v.as_str()) {
        return Some(plain.to_owned());
    }
    let sealed = hex::decode(data.get("ip_sealed")?.as_str()?).ok()?;
    let plain = strongroom_crypto::seal::open(kek?, &sealed, ip_aad(customer).as_bytes()).ok()?;
    String::from_utf8(plain.to_vec()).ok()
}

/// Record an event (a login, a security change…) for the risk engine.
#[utoipa::path(post, path = "/v1/risk/events", tag = "risk", security(("token" = [])),
    params(("Idempotency-Key" = String, Header)), request_body = NewRiskEvent,
    responses((status = 201, body = Object), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn add_event(
    State(state): State<AppState>,
    req: Write<NewRiskEvent>,
) -> Result<(axum::http::StatusCode, Json<serde_json::Value>), ApiError> {
    let b = req.body;
    if !KINDS.contains(&b.kind.as_str()) {
        return Err(ApiError::bad_request(
            "invalid_event",
            format!("kind must be one of {}", KINDS.join(", ")),
        ));
    }
    bounded("device_id", &b.device_id)?;
    bounded("ip", &b.ip)?;
    state.store().get_customer(b.customer_id).await?;
    let ev = RiskEvent {
        id: new_id(state.env()),
        customer_id: b.customer_id,
        kind: b.kind,
        at: req.ctx.now,
        data: event_data(
            state.personal_data_key().map(|k| k.as_ref()),
            state.env(),
            b.customer_id,
            b.device_id.as_deref(),
            b.ip.as_deref(),
        )
        .into(),
    };
    let ev = state.store().add_risk_event(&req.ctx, ev).await?;
    Ok((
        axum::http::StatusCode::CREATED,
        Json(serde_json::json!({ "id": ev.id, "at_ms": ev.at.unix_ms() })),
    ))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct EventQuery {
    pub customer_id: Uuid,
    /// The `next_cursor` of the page before; from the newest when absent.
    pub after: Option<String>,
    /// 1 to 1000; default 100.
    pub limit: Option<u32>,
}

/// A risk event as the API shows it (a sealed address opened for staff).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct RiskEventView {
    pub id: Uuid,
    /// `login`, `security_change`, `withdrawal_context`, `trade`, `deposit`.
    pub kind: String,
    pub at_ms: i64,
    /// What the event carries; `ip` in the clear for staff.
    #[schema(value_type = Object)]
    pub data: serde_json::Value,
}

/// A customer's risk events (from the API or NATS), newest first, a page at a time.
#[utoipa::path(get, path = "/v1/risk/events", tag = "risk", security(("token" = [])), params(EventQuery),
    responses((status = 200, body = Page<RiskEventView>), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
pub(crate) async fn list_events(
    State(state): State<AppState>,
    p: Principal,
    q: Result<Query<EventQuery>, QueryRejection>,
) -> Result<Json<Page<RiskEventView>>, ApiError> {
    p.require(READERS)?;
    let q = query(q)?;
    let limit = crate::extract::limit(q.limit)?;
    let after = page::after(q.after.as_deref())?;
    let events = state
        .store()
        .customer_risk_events(q.customer_id, after.as_ref(), page::read_size(limit))
        .await?;
    let (events, next) = page::split(events, limit, |e| Keyset {
        at_ms: e.at.unix_ms(),
        id: e.id.to_string(),
        n: 0,
    });
    let key = state.personal_data_key().map(|k| k.as_ref());
    Ok(Json(Page::new(events, next).map(|mut e| {
        let ip = event_ip(key, e.customer_id, &e.data);
        if let Some(obj) = e.data.as_object_mut() {
            obj.remove("ip_sealed");
            obj.insert("ip".into(), ip.into());
        }
        RiskEventView { id: e.id, kind: e.kind, at_ms: e.at.unix_ms(), data: e.data }
    })))
}

/// A review's state, as queries name it (the document's copy of `store::RiskState`; a test
/// keeps the two the same).
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ReviewStateName {
    Cleared,
    Open,
    Released,
    Rejected,
    Blocked,
}

#[cfg(test)]
#[test]
fn documented_review_states_are_the_stores() {
    use ReviewStateName as N;
    let names = [N::Cleared, N::Open, N::Released, N::Rejected, N::Blocked];
    for n in names {
        let t = serde_json::to_value(n).ok().and_then(|v| v.as_str().map(str::to_owned));
        let t = t.unwrap_or_default();
        assert_eq!(RiskState::parse(&t).map(RiskState::as_str), Some(t.as_str()));
    }
    assert_eq!(names.len(), 5, "RiskState has five states");
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ReviewQuery {
    /// `open` is the queue.
    #[param(inline, value_type = Option<ReviewStateName>)]
    pub state: Option<String>,
    /// The `next_cursor` of the page before; from the oldest when absent.
    pub after: Option<String>,
    /// 1 to 1000; default 100.
    pub limit: Option<u32>,
}

/// The review queue (`?state=open`), oldest first, a page at a time.
#[utoipa::path(get, path = "/v1/risk/reviews", tag = "risk", security(("token" = [])), params(ReviewQuery),
    responses((status = 200, body = Page<ReviewView>), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
pub(crate) async fn list_reviews(
    State(state): State<AppState>,
    p: Principal,
    q: Result<Query<ReviewQuery>, QueryRejection>,
) -> Result<Json<Page<ReviewView>>, ApiError> {
    p.require(READERS)?;
    let q = query(q)?;
    let st = match q.state.as_deref() {
        None => None,
        Some(s) => Some(RiskState::parse(s).ok_or_else(|| {
            ApiError::bad_request("invalid_query", format!("unknown state {s:?}"))
        })?),
    };
    let limit = crate::extract::limit(q.limit)?;
    let after = page::after(q.after.as_deref())?;
    let list = state.store().list_risk_reviews(st, after.as_ref(), page::read_size(limit)).await?;
    let (list, next) = page::split(list, limit, |r| Keyset {
        at_ms: r.created_at.unix_ms(),
        id: r.withdrawal_id.to_string(),
        n: 0,
    });
    Ok(Json(Page::new(list, next).map(ReviewView::from)))
}

fn not_assessed(id: Uuid) -> ApiError {
    ApiError::not_found("review_not_found", format!("withdrawal {id} has no risk assessment"))
}

/// One withdrawal's review, with its reasons.
#[utoipa::path(get, path = "/v1/risk/reviews/{id}", tag = "risk", security(("token" = [])),
    params(("id" = Uuid, Path)),
    responses((status = 200, body = ReviewView), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn get_review(
    State(state): State<AppState>,
    p: Principal,
    id: Result<Path<Uuid>, PathRejection>,
) -> Result<Json<ReviewView>, ApiError> {
    p.require(READERS)?;
    let id = path_id(id)?;
    let r = state.store().risk_review(id).await?.ok_or_else(|| not_assessed(id))?;
    Ok(Json(r.into()))
}

#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Assign {
    pub assignee: String,
}
impl WriteBody for Assign {
    const ROLES: &'static [Role] = ANALYSTS;
}

#[derive(Debug, Deserialize, Serialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct Note {
    #[serde(default)]
    pub text: Option<String>,
}
impl WriteBody for Note {
    const ROLES: &'static [Role] = ANALYSTS;
}

async fn act(
    state: &AppState,
    id: Uuid,
    req: &Write<impl WriteBody>,
    action: ReviewAction,
) -> Result<Json<ReviewView>, ApiError> {
    if let ReviewAction::Assign(t) | ReviewAction::Note(t) = &action {
        if t.is_empty() || t.len() > 2000 {
            return Err(ApiError::bad_request("invalid_body", "1 to 2000 characters"));
        }
    }
    state.store().risk_review(id).await?.ok_or_else(|| not_assessed(id))?;
    let r = state.store().review_withdrawal(&req.ctx, id, action).await?;
    Ok(Json(r.into()))
}

/// Assign a review to an analyst.
#[utoipa::path(post, path = "/v1/risk/reviews/{id}/assign", tag = "risk", security(("token" = [])),
    params(("id" = Uuid, Path), ("Idempotency-Key" = String, Header)), request_body = Assign,
    responses((status = 200, body = ReviewView), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn assign(
    State(state): State<AppState>,
    id: Result<Path<Uuid>, PathRejection>,
    req: Write<Assign>,
) -> Result<Json<ReviewView>, ApiError> {
    let id = path_id(id)?;
    let who = req.body.assignee.clone();
    act(&state, id, &req, ReviewAction::Assign(who)).await
}

/// Add a note to a review.
#[utoipa::path(post, path = "/v1/risk/reviews/{id}/notes", tag = "risk", security(("token" = [])),
    params(("id" = Uuid, Path), ("Idempotency-Key" = String, Header)), request_body = Note,
    responses((status = 200, body = ReviewView), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn note(
    State(state): State<AppState>,
    id: Result<Path<Uuid>, PathRejection>,
    req: Write<Note>,
) -> Result<Json<ReviewView>, ApiError> {
    let id = path_id(id)?;
    let text = req.body.text.clone().unwrap_or_default();
    act(&state, id, &req, ReviewAction::Note(text)).await
}

/// Release a paused withdrawal: it goes on to signing. The decision teaches the model.
#[utoipa::path(post, path = "/v1/risk/reviews/{id}/release", tag = "risk", security(("token" = [])),
    params(("id" = Uuid, Path), ("Idempotency-Key" = String, Header)), request_body = Note,
    responses((status = 200, body = ReviewView), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(crate) async fn release(
    State(state): State<AppState>,
    id: Result<Path<Uuid>, PathRejection>,
    req: Write<Note>,
) -> Result<Json<ReviewView>, ApiError> {
    let id = path_id(id)?;
    let text = req.body.text.clone();
    act(&state, id, &req, ReviewAction::Release(text)).await
}

/// Reject a paused withdrawal: it is cancelled and its funds return to the customer. The
/// decision teaches the model.
#[utoipa::path(post, path = "/v1/risk/reviews/{id}/reject", tag = "risk", security(("token" = [])),
    params(("id" = Uuid, Path), ("Idempotency-Key" = String, Header)), request_body = Note,
    responses((status = 200, body = ReviewView), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(crate) async fn reject(
    State(state): State<AppState>,
    id: Result<Path<Uuid>, PathRejection>,
    req: Write<Note>,
) -> Result<Json<ReviewView>, ApiError> {
    let id = path_id(id)?;
    let text = req.body.text.clone();
    let r = act(&state, id, &req, ReviewAction::Reject(text)).await?;
    // Cancel at once; the risk worker also cancels any rejected withdrawal still reserved.
    let env = state.env();
    match state
        .store()
        .transition_withdrawal(
            &req.ctx,
            None,
            id,
            strongroom_core::withdrawal::WithdrawalState::Cancelled,
            new_id(env),
        )
        .await
    {
        Ok(_) | Err(strongroom_store::StoreError::InvalidTransition { .. }) => Ok(r),
        Err(e) => Err(e.into()),
    }
}

/// A would-be withdrawal to score.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ScoreRequest {
    pub customer_id: Uuid,
    #[schema(example = "ETH")]
    pub asset: String,
    /// Decimal amount in the asset's units.
    pub amount: String,
    pub destination: String,
    pub device_id: Option<String>,
    pub ip: Option<String>,
}

impl WriteBody for ScoreRequest {
    const ROLES: &'static [Role] = WRITERS;
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ScoreView {
    /// `allow`, `review` or `block`.
    pub decision: String,
    pub score: u32,
    #[schema(value_type = Vec<Object>)]
    pub reasons: Vec<serde_json::Value>,
}

/// Score a would-be withdrawal now, with its reasons, storing nothing (for the exchange's
/// own flows, e.g. before it shows a confirmation screen). Withdrawals themselves are
/// assessed when they are made.
#[utoipa::path(post, path = "/v1/risk/score", tag = "risk", security(("token" = [])),
    params(("Idempotency-Key" = String, Header)), request_body = ScoreRequest,
    responses((status = 200, body = ScoreView), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub(crate) async fn score(
    State(state): State<AppState>,
    req: Write<ScoreRequest>,
) -> Result<Json<ScoreView>, ApiError> {
    let scorer =
        state.risk_scorer().ok_or_else(|| ApiError::unavailable("no risk engine is running"))?;
    let b = req.body;
    bounded("device_id", &b.device_id)?;
    bounded("ip", &b.ip)?;
    let asset = state
        .registry()
        .get(&b.asset)
        .map_err(|e| ApiError::bad_request("unknown_asset", e.to_string()))?;
    let amount = strongroom_units::Amount::parse_decimal(&b.amount, asset.decimals)
        .map_err(|e| crate::error::amount_error(&e))?;
    let input = crate::ScoreInput {
        customer_id: b.customer_id,
        asset: asset.symbol.to_string(),
        amount: amount.base_units(),
        destination: b.destination,
        device_id: b.device_id,
        ip: b.ip,
    };
    let (decision, score, reasons) =
        scorer.score(&input, req.ctx.now.unix_ms()).await.map_err(|e| {
            tracing::warn!(error = %e, "risk score unavailable");
            ApiError::unavailable("the customer's risk profile cannot be read now")
        })?;
    Ok(Json(ScoreView {
        decision,
        score,
        reasons: reasons
            .into_iter()
            .map(|(source, detail, points)| serde_json::json!({ "source": source, "detail": detail, "points": points }))
            .collect(),
    }))
}
