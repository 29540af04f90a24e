//! Request bodies: JSON only, within the size limit. The lowest layer of the extractors, so
//! request signing (`clients`) and the extractors (`extract`) share it without a circle.

use axum::http::StatusCode;

use crate::error::ApiError;

/// Largest request body accepted, in bytes.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// Refuse a body that says it is not JSON (one without a content type is read as JSON).
pub(crate) fn require_json(headers: &axum::http::HeaderMap) -> Result<(), ApiError> {
    match headers.get(axum::http::header::CONTENT_TYPE) {
        Some(ct) if !ct.to_str().unwrap_or_default().starts_with("application/json") => {
            Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "send Content-Type: application/json",
            ))
        }
        _ => Ok(()),
    }
}

/// A request's body, within [`MAX_BODY_BYTES`].
pub(crate) async fn body_bytes(body: axum::body::Body) -> Result<bytes::Bytes, ApiError> {
    axum::body::to_bytes(body, MAX_BODY_BYTES).await.map_err(|_| {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("bodies are limited to {MAX_BODY_BYTES} bytes"),
        )
    })
}
