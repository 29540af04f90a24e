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

/// How much of a body over the limit is read and thrown away so that the client, still
/// sending, gets the 413 answer instead of a reset connection; beyond this (or
/// [`DRAIN_TIMEOUT`]) the connection is dropped.
pub const DRAIN_MAX_BYTES: usize = 16 * 1024 * 1024;
/// How long draining may take.
pub const DRAIN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

fn too_large() -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
        format!("bodies are limited to {MAX_BODY_BYTES} bytes"),
    )
}

/// A request's body, within [`MAX_BODY_BYTES`]. One over it is read to its end (up to
/// [`DRAIN_MAX_BYTES`], within [`DRAIN_TIMEOUT`]) and refused with 413 `payload_too_large`.
pub(crate) async fn body_bytes(body: axum::body::Body) -> Result<bytes::Bytes, ApiError> {
    use http_body_util::BodyExt;
    let mut body = body;
    let mut kept = bytes::BytesMut::new();
    let mut seen = 0usize;
    let read = async {
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| {
                ApiError::bad_request("malformed_body", format!("the body could not be read: {e}"))
            })?;
            let Ok(data) = frame.into_data() else { continue };
            seen = seen.saturating_add(data.len());
            if seen <= MAX_BODY_BYTES {
                kept.extend_from_slice(&data);
            } else if seen > DRAIN_MAX_BYTES {
                // Too much to read through: give up on the connection.
                return Err(too_large());
            }
        }
        if seen > MAX_BODY_BYTES {
            return Err(too_large());
        }
        Ok(())
    };
    match tokio::time::timeout(DRAIN_TIMEOUT, read).await {
        Ok(Ok(())) => Ok(kept.freeze()),
        Ok(Err(e)) => Err(e),
        Err(_) if seen > MAX_BODY_BYTES => Err(too_large()),
        Err(_) => Err(ApiError::bad_request("malformed_body", "the body did not arrive in time")),
    }
}
