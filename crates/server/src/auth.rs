//! Authentication: API tokens, and customers' sessions ([`crate::accounts`]). A request carries `Authorization: Bearer srt_<id>_<secret>`;
//! the server looks the token up by id and compares hashes in constant time. Tokens are
//! stored hashed; a revoked or unknown token is refused the same way as a wrong one.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use strongroom_crypto::{token_id, token_matches, SecretString};
use strongroom_store::{Role, StoreError};

use crate::error::ApiError;
use crate::AppState;

/// Who may send what: the role sets routes require.
pub(crate) const WRITERS: &[Role] = &[Role::Operator, Role::Service];
pub(crate) const READERS: &[Role] =
    &[Role::Operator, Role::Service, Role::Auditor, Role::Approver, Role::Analyst, Role::Admin];
/// Who may submit approvals (staff approvers only as themselves, with 2FA).
pub(crate) const APPROVERS: &[Role] = &[Role::Operator, Role::Service, Role::Approver];
/// Who works the risk review queue.
pub(crate) const ANALYSTS: &[Role] = &[Role::Operator, Role::Analyst];
pub(crate) const OPERATORS: &[Role] = &[Role::Operator];

/// Who is calling: an API token with a role, or a signed-in customer (a session).
#[derive(Debug, Clone)]
pub struct Principal {
    /// The API token's or the session's id.
    pub token_id: String,
    /// The API token's role; `None` for a customer's session.
    pub role: Option<Role>,
    /// The signed-in customer, for a session.
    pub customer: Option<uuid::Uuid>,
    /// The account a session belongs to.
    pub account: Option<String>,
}

impl Principal {
    /// `token:<id>` or `account:<id>`: the actor in audit records and the idempotency scope.
    pub fn actor(&self) -> String {
        match &self.account {
            Some(a) => format!("account:{a}"),
            None => format!("token:{}", self.token_id),
        }
    }

    /// Refuse unless this is an API token with one of `allowed`.
    pub fn require(&self, allowed: &[Role]) -> Result<(), ApiError> {
        match self.role {
            Some(r) if allowed.contains(&r) => Ok(()),
            Some(r) => Err(ApiError::forbidden(format!("role {} may not do this", r.as_str()))),
            None => Err(ApiError::forbidden("a customer session may not do this")),
        }
    }
}

const BAD_TOKEN: &str = "missing, malformed, unknown or revoked API token";

/// Whoever the request's credentials name: an API token or a customer's session.
pub(crate) async fn authenticate(
    parts: &mut Parts,
    state: &AppState,
) -> Result<Principal, ApiError> {
    {
        // The Authorization header, else the console's session cookie.
        let token = match parts.headers.get(axum::http::header::AUTHORIZATION) {
            Some(v) => v
                .to_str()
                .ok()
                .and_then(|h| h.strip_prefix("Bearer "))
                .map(|t| SecretString::new(t.trim().to_owned()))
                .ok_or_else(|| ApiError::unauthorized(BAD_TOKEN))?,
            None => {
                let token = cookie_token(&parts.headers)
                    .ok_or_else(|| ApiError::unauthorized(BAD_TOKEN))?;
                check_csrf(parts, &token)?;
                token
            }
        };
        let id = token_id(token.expose_secret())
            .map_err(|_| ApiError::unauthorized(BAD_TOKEN))?
            .to_owned();
        let record = match state.store().get_token(&id).await {
            Ok(r) => r,
            Err(StoreError::NotFound { .. }) => {
                // Not an API token: a customer's session, or nothing.
                let p = session_principal(state, &id, &token)
                    .await?
                    .ok_or_else(|| ApiError::unauthorized(BAD_TOKEN))?;
                tracing::Span::current().record("principal", p.actor().as_str());
                return Ok(p);
            }
            Err(e) => return Err(e.into()),
        };
        if record.revoked_at.is_some() || !token_matches(&token, &record.token_hash) {
            return Err(ApiError::unauthorized(BAD_TOKEN));
        }
        if let Some(r) = &record.restrictions {
            crate::clients::check(state, parts, &record.id, r).await?;
        }
        tracing::Span::current().record("principal", record.id.as_str());
        Ok(Principal {
            token_id: record.id,
            role: Some(record.role),
            customer: None,
            account: None,
        })
    }
}

/// An API token (operators, services, auditors). A customer's session is refused here, so a
/// handler that takes a `Principal` can never be reached by a customer, even one that forgot
/// to check a role.
impl FromRequestParts<AppState> for Principal {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let p = authenticate(parts, state).await?;
        if p.role.is_none() {
            return Err(ApiError::forbidden("a customer session may not do this"));
        }
        Ok(p)
    }
}

/// A signed-in customer (a session); API tokens are refused.
#[derive(Debug, Clone)]
pub struct Customer(pub Principal);

impl FromRequestParts<AppState> for Customer {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let p = authenticate(parts, state).await?;
        if p.customer.is_none() {
            return Err(ApiError::forbidden("only a signed-in customer may do this"));
        }
        Ok(Customer(p))
    }
}

/// Anyone signed in with an account (a customer or staff); API tokens are refused.
#[derive(Debug, Clone)]
pub struct SignedIn(pub Principal);

impl FromRequestParts<AppState> for SignedIn {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let p = authenticate(parts, state).await?;
        if p.account.is_none() {
            return Err(ApiError::forbidden("only a signed-in account may do this"));
        }
        Ok(SignedIn(p))
    }
}

/// The session cookie's name.
pub const SESSION_COOKIE: &str = "sr_session";
/// `session/<token id>`: a customer's or staff member's session (the token's hash only).
#[derive(Clone, serde::Serialize, serde::Deserialize)]
pub(crate) struct StoredSession {
    pub(crate) token_hash: String,
    pub(crate) customer_id: uuid::Uuid,
    pub(crate) device_id: uuid::Uuid,
    pub(crate) created_at_ms: i64,
    pub(crate) expires_at_ms: i64,
    /// How the customer proved who they are (`password`, `password+totp`, `passkey`, …).
    pub(crate) via: String,
    /// Staff sessions: the account's role.
    #[serde(default)]
    pub(crate) role: Option<String>,
}

/// The principal a session token names, if it is live.
pub(crate) async fn session_principal(
    state: &AppState,
    id: &str,
    token: &SecretString,
) -> Result<Option<Principal>, ApiError> {
    let Some(r) = state.store().auth_record("session", id).await? else { return Ok(None) };
    let s: StoredSession = serde_json::from_value(r.body.clone())
        .map_err(|e| ApiError::internal(format!("stored session: {e}")))?;
    if s.expires_at_ms <= state.env().now().unix_ms()
        || !strongroom_crypto::token_matches(token, &s.token_hash)
    {
        return Ok(None);
    }
    let role = match &s.role {
        Some(name) => Some(
            strongroom_store::Role::parse(name)
                .ok_or_else(|| ApiError::internal(format!("session with unknown role {name:?}")))?,
        ),
        None => None,
    };
    Ok(Some(Principal {
        token_id: r.id,
        role,
        customer: role.is_none().then_some(s.customer_id),
        account: Some(r.owner),
    }))
}

/// A request signed in by its cookie that may change something must carry the session's
/// CSRF token (the console sends it from the `sr_csrf` cookie): another site's page can make
/// the browser send the cookie, but cannot read it to send the token. Bearer tokens are never
/// sent by a browser on its own, so they need none.
fn check_csrf(parts: &Parts, session: &SecretString) -> Result<(), ApiError> {
    use axum::http::Method;
    if matches!(parts.method, Method::GET | Method::HEAD | Method::OPTIONS) {
        return Ok(());
    }
    let want = crate::console::csrf_token(session.expose_secret());
    let sent = parts.headers.get(crate::console::CSRF_HEADER).and_then(|v| v.to_str().ok());
    match sent {
        Some(t) if bool::from(subtle::ConstantTimeEq::ct_eq(t.as_bytes(), want.as_bytes())) => {
            Ok(())
        }
        Some(_) => Err(ApiError::new(
            axum::http::StatusCode::FORBIDDEN,
            "csrf_token_invalid",
            "the X-CSRF-Token header does not match this session",
        )),
        None => Err(ApiError::new(
            axum::http::StatusCode::FORBIDDEN,
            "csrf_token_required",
            "a request signed in by the session cookie that changes something needs the X-CSRF-Token header (the sr_csrf cookie's value)",
        )),
    }
}

/// The session token a request carries in its cookie.
pub(crate) fn cookie_token(headers: &axum::http::HeaderMap) -> Option<SecretString> {
    headers.get_all(axum::http::header::COOKIE).iter().find_map(|v| {
        v.to_str().ok()?.split(';').find_map(|kv| {
            let (k, v) = kv.trim().split_once('=')?;
            (k == SESSION_COOKIE).then(|| SecretString::new(v.to_owned()))
        })
    })
}
