//! The extractors every route module shares: JSON bodies within the size limit, path ids and
//! queries with typed errors, the caller's address and user agent, and `Write`, what every
//! state-changing POST carries (an authorised caller, an idempotency key, a parsed body).
//! Route modules depend on this one and on `auth`, not on each other.

use std::net::IpAddr;

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request};
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};
use strongroom_store::{Idempotency, Role, WriteCtx, MAX_IDEMPOTENCY_KEY_LEN};
use uuid::Uuid;

use crate::auth::Principal;
pub(crate) use crate::body::{body_bytes, require_json};
use crate::error::ApiError;
use crate::{AppState, RequestId};

/// A body of the wrong shape, naming the field (`customer_id: UUID parsing failed: …`).
fn invalid_body(e: serde_path_to_error::Error<serde_json::Error>) -> ApiError {
    let path = e.path().to_string();
    let inner = e.into_inner();
    let message = if path == "." { inner.to_string() } else { format!("{path}: {inner}") };
    ApiError::bad_request("invalid_body", message)
}

pub(crate) fn path_id(p: Result<Path<Uuid>, PathRejection>) -> Result<Uuid, ApiError> {
    p.map(|Path(id)| id)
        .map_err(|e| ApiError::bad_request("invalid_id", format!("path id: {}", e.body_text())))
}

/// A page size: 1 to 1000, 100 when not given.
pub(crate) fn limit(limit: Option<u32>) -> Result<u32, ApiError> {
    let limit = limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::bad_request("invalid_query", "limit must be 1 to 1000"));
    }
    Ok(limit)
}

pub(crate) fn query<T>(q: Result<Query<T>, QueryRejection>) -> Result<T, ApiError> {
    q.map(|Query(t)| t).map_err(|e| ApiError::bad_request("invalid_query", e.body_text()))
}

/// A request body that changes state, and the roles that may send it. Checked before the
/// body is parsed, so a caller without the role learns nothing about the body's shape.
pub trait WriteBody: DeserializeOwned + Send {
    const ROLES: &'static [Role];
    /// Whether a signed-in customer may send it (for themselves).
    const CUSTOMERS: bool = false;
}

/// What every POST carries: an authorised caller, an idempotency key scoped to that caller,
/// and a JSON body (an empty body counts as `{}`).
#[derive(Debug)]
pub struct Write<T> {
    pub(crate) body: T,
    pub(crate) idem: Idempotency,
    pub(crate) ctx: WriteCtx,
    pub principal: Principal,
    /// The TCP peer.
    pub client_ip: Option<std::net::IpAddr>,
}

impl<T: WriteBody> FromRequest<AppState> for Write<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, ApiError> {
        let (mut parts, body) = req.into_parts();
        let principal = crate::auth::authenticate(&mut parts, state).await?;
        if !(T::CUSTOMERS && principal.customer.is_some()) {
            principal.require(T::ROLES)?;
        }
        let RequestId(rid) = RequestId::from_request_parts(&mut parts, state).await?;
        let headers = &parts.headers;
        require_json(headers)?;
        let key = headers
            .get("idempotency-key")
            .ok_or_else(|| ApiError::bad_request("idempotency_key_required", "every POST needs an Idempotency-Key header"))?
            .to_str()
            .ok()
            .filter(|k| !k.is_empty() && k.len() <= MAX_IDEMPOTENCY_KEY_LEN && k.bytes().all(|b| b.is_ascii_graphic()))
            .ok_or_else(|| ApiError::bad_request("idempotency_key_invalid", format!("Idempotency-Key must be 1-{MAX_IDEMPOTENCY_KEY_LEN} printable ASCII characters")))?
            .to_owned();
        let bytes = body_bytes(body).await?;
        let bytes: &[u8] = if bytes.is_empty() { b"{}" } else { &bytes };
        let value: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| {
            ApiError::bad_request("malformed_json", format!("body is not valid JSON: {e}"))
        })?;
        // The request hash covers the parsed body (object keys sorted), so whitespace and key
        // order do not make a retry look different.
        let mut h = Sha256::new();
        h.update(parts.method.as_str());
        h.update([0]);
        h.update(parts.uri.path());
        h.update([0]);
        h.update(value.to_string());
        let request_hash = hex::encode(h.finalize());
        let body: T = serde_path_to_error::deserialize(value).map_err(invalid_body)?;
        Ok(Write {
            body,
            client_ip: crate::clients::client_ip(&parts, state),
            principal: principal.clone(),
            idem: Idempotency { principal: principal.actor(), key, request_hash },
            ctx: WriteCtx {
                actor: principal.actor(),
                now: state.env().now(),
                request_id: Some(rid),
            },
        })
    }
}

/// A JSON body for the account routes (no idempotency key: each write is compare-and-swap).
#[derive(Debug)]
pub struct Body<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequest<S> for Body<T> {
    type Rejection = ApiError;
    async fn from_request(req: Request, _: &S) -> Result<Self, ApiError> {
        require_json(req.headers())?;
        let bytes = body_bytes(req.into_body()).await?;
        let bytes: &[u8] = if bytes.is_empty() { b"{}" } else { &bytes };
        let mut de = serde_json::Deserializer::from_slice(bytes);
        let body = serde_path_to_error::deserialize(&mut de).map_err(invalid_body)?;
        // Nothing may follow the JSON value but whitespace.
        de.end().map_err(|e| ApiError::bad_request("malformed_json", e.to_string()))?;
        Ok(Body(body))
    }
}

/// Where a request came from and what it calls itself.
#[derive(Debug, Clone)]
pub struct Client {
    pub ip: Option<IpAddr>,
    pub user_agent: String,
    pub request_id: RequestId,
}

impl FromRequestParts<AppState> for Client {
    type Rejection = ApiError;
    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &AppState,
    ) -> Result<Self, ApiError> {
        let request_id = RequestId::from_request_parts(parts, state).await?;
        let ip = crate::clients::client_ip(parts, state);
        let user_agent = parts
            .headers
            .get(axum::http::header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("unknown client")
            .chars()
            .take(200)
            .collect();
        Ok(Client { ip, user_agent, request_id })
    }
}
