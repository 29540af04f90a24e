//! The API's one error type. Every failure becomes `{"error": {"code", "message",
//! "request_id"}}` with a stable `code` (listed in `docs/adr/0004-error-codes.md`); internal
//! details are logged once by the observing middleware and never sent to the client.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use strongroom_core::withdrawal::RequestError;
use strongroom_store::StoreError;
use strongroom_units::AmountError;
use utoipa::ToSchema;

#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// Logged, never returned.
    pub internal: Option<String>,
}

/// Carried on error responses so the middleware can add the request id and log.
#[derive(Debug, Clone)]
pub(crate) struct ErrorInfo {
    pub code: &'static str,
    pub message: String,
    pub internal: Option<String>,
}

/// The JSON body of every error response.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable, documented, safe to match on.
    #[schema(example = "insufficient_funds")]
    pub code: String,
    /// For people; may change between versions.
    pub message: String,
    pub request_id: Option<String>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError { status, code, message: message.into(), internal: None }
    }
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }
    pub fn not_found(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, code, message)
    }
    pub fn internal(detail: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            code: "internal",
            message: "internal error; the request id identifies it in the server log".into(),
            internal: Some(detail.into()),
        }
    }
    pub fn unavailable(detail: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            code: "unavailable",
            message: "a dependency is unavailable; retry later".into(),
            internal: Some(detail.into()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code.into(),
                message: self.message.clone(),
                request_id: None,
            },
        };
        let mut resp = (self.status, Json(body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer"),
            );
        }
        resp.extensions_mut().insert(ErrorInfo {
            code: self.code,
            message: self.message,
            internal: self.internal,
        });
        resp
    }
}

pub fn amount_error(e: &AmountError) -> ApiError {
    let code = match e {
        AmountError::Negative => "negative_amount",
        AmountError::TooPrecise { .. } => "amount_too_precise",
        AmountError::Overflow => "amount_out_of_range",
        _ => "invalid_amount",
    };
    ApiError::bad_request(code, e.to_string())
}

impl From<RequestError> for ApiError {
    fn from(e: RequestError) -> Self {
        match &e {
            RequestError::UnknownAsset(_) => ApiError::bad_request("unknown_asset", e.to_string()),
            RequestError::Amount(a) => amount_error(a),
            RequestError::ZeroAmount => ApiError::bad_request("zero_amount", e.to_string()),
            RequestError::BelowMinimum { .. } => {
                ApiError::bad_request("below_minimum", e.to_string())
            }
            RequestError::Destination(_) => {
                ApiError::bad_request("invalid_destination", e.to_string())
            }
            _ => ApiError::internal(e.to_string()),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        use strongroom_core::ledger::LedgerError;
        match &e {
            StoreError::NotFound { entity, .. } => {
                let code = match *entity {
                    "customer" => "customer_not_found",
                    "withdrawal" => "withdrawal_not_found",
                    _ => "not_found",
                };
                ApiError::not_found(code, e.to_string())
            }
            StoreError::IdempotencyConflict => {
                ApiError::new(StatusCode::CONFLICT, "idempotency_conflict", e.to_string())
            }
            StoreError::CustomerExists(_) => {
                ApiError::new(StatusCode::CONFLICT, "customer_exists", e.to_string())
            }
            StoreError::DepositAlreadyCredited { .. } => {
                ApiError::new(StatusCode::CONFLICT, "deposit_already_credited", e.to_string())
            }
            StoreError::InvalidTransition { .. } => {
                ApiError::new(StatusCode::CONFLICT, "invalid_transition", e.to_string())
            }
            StoreError::Ledger(LedgerError::InsufficientBalance { .. }) => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "insufficient_funds",
                "the available balance is lower than the amount",
            ),
            StoreError::Stale { .. } => ApiError::new(
                StatusCode::CONFLICT,
                "conflict",
                "another request changed this at the same time; try again",
            ),
            StoreError::Refused(_) => {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "refused", e.to_string())
            }
            StoreError::Database(sqlx_err) if is_connectivity(sqlx_err) => {
                ApiError::unavailable(e.to_string())
            }
            _ => ApiError::internal(e.to_string()),
        }
    }
}

fn is_connectivity(e: &sqlx::Error) -> bool {
    matches!(
        e,
        sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
    )
}
