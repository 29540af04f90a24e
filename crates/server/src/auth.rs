//! API-token authentication. A request carries `Authorization: Bearer srt_<id>_<secret>`;
//! the server looks the token up by id and compares hashes in constant time. Tokens are
//! stored hashed; a revoked or unknown token is refused the same way as a wrong one.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use strongroom_crypto::{token_id, token_matches, SecretString};
use strongroom_store::{Role, StoreError};

use crate::error::ApiError;
use crate::AppState;

/// Who is calling.
#[derive(Debug, Clone)]
pub struct Principal {
    pub token_id: String,
    pub role: Role,
}

impl Principal {
    /// `token:<id>`: the actor in audit records and the idempotency scope.
    pub fn actor(&self) -> String {
        format!("token:{}", self.token_id)
    }

    pub fn require(&self, allowed: &[Role]) -> Result<(), ApiError> {
        if allowed.contains(&self.role) {
            Ok(())
        } else {
            Err(ApiError::forbidden(format!("role {} may not do this", self.role.as_str())))
        }
    }
}

const BAD_TOKEN: &str = "missing, malformed, unknown or revoked API token";

impl FromRequestParts<AppState> for Principal {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let header = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| ApiError::unauthorized(BAD_TOKEN))?;
        let token = header
            .strip_prefix("Bearer ")
            .map(|t| SecretString::new(t.trim().to_owned()))
            .ok_or_else(|| ApiError::unauthorized(BAD_TOKEN))?;
        let id = token_id(token.expose_secret())
            .map_err(|_| ApiError::unauthorized(BAD_TOKEN))?
            .to_owned();
        let record = match state.store().get_token(&id).await {
            Ok(r) => r,
            Err(StoreError::NotFound { .. }) => return Err(ApiError::unauthorized(BAD_TOKEN)),
            Err(e) => return Err(e.into()),
        };
        if record.revoked_at.is_some() || !token_matches(&token, &record.token_hash) {
            return Err(ApiError::unauthorized(BAD_TOKEN));
        }
        tracing::Span::current().record("principal", record.id.as_str());
        Ok(Principal { token_id: record.id, role: record.role })
    }
}
