//! The console: a web page for staff and customers, served from the API's own origin.
//!
//! Its files are compiled into the binary (`crates/server/console/`): no CDN, no build step,
//! no package the page loads at run time. Every console response carries a strict
//! Content-Security-Policy (scripts, styles and connections from this origin only, no inline
//! script, no framing), so a value the page shows can never run as code. The page talks to
//! the same `/v1` API as everything else, with the session cookie and, on every request that
//! changes something, the session's CSRF token ([`csrf_token`]).
//!
//! What the page shows an approver is decoded in the browser from the intent bytes, and the
//! intent hash and the approval message are recomputed there (`console/intent.js`), so a
//! compromised server cannot make an approver's passkey sign something else than what the
//! page shows.

use axum::extract::Path;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::Router;
use sha2::{Digest, Sha256};

use crate::error::ApiError;
use crate::AppState;

/// The console's Content-Security-Policy: everything from this origin only, nothing inline,
/// never in a frame.
pub const CONSOLE_CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self'; connect-src 'self'; form-action 'self'; base-uri 'none'; \
     frame-ancestors 'none'";

/// What every other response (JSON, metrics) says: nothing to load, never in a frame.
pub const API_CSP: &str = "default-src 'none'; frame-ancestors 'none'";

/// The CSRF cookie (readable by the page, unlike the session cookie) and the header the page
/// sends its value back in.
pub const CSRF_COOKIE: &str = "sr_csrf";
pub const CSRF_HEADER: &str = "x-csrf-token";
const CSRF_TAG: &[u8] = b"strongroom/csrf/v1";

/// The CSRF token of a session: a hash of its secret token, so it needs no storage, is the
/// same on every instance, and cannot be made by a page that cannot read the session cookie.
pub fn csrf_token(session_token: &str) -> String {
    let mut h = Sha256::new();
    h.update(CSRF_TAG);
    h.update([0]);
    h.update(session_token.as_bytes());
    hex::encode(h.finalize())
}

/// The console's files, by name.
const FILES: &[(&str, &str, &[u8])] = &[
    ("index.html", "text/html; charset=utf-8", include_bytes!("../console/index.html")),
    ("app.js", "text/javascript; charset=utf-8", include_bytes!("../console/app.js")),
    ("intent.js", "text/javascript; charset=utf-8", include_bytes!("../console/intent.js")),
    ("console.css", "text/css; charset=utf-8", include_bytes!("../console/console.css")),
];

/// `/` (to the console), `/console/` and its files.
pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(|| async { Redirect::to("/console/") }))
        .route("/console", get(|| async { Redirect::to("/console/") }))
        .route("/console/", get(|| async { file("index.html") }))
        .route("/console/{name}", get(|Path(name): Path<String>| async move { file(&name) }))
}

fn file(name: &str) -> Response {
    let Some((_, mime, body)) = FILES.iter().find(|(n, _, _)| *n == name) else {
        return ApiError::not_found("route_not_found", "no such console file").into_response();
    };
    let mut resp = (StatusCode::OK, *body).into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(mime));
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CONSOLE_CSP));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csrf_tokens_differ_per_session_and_are_stable() {
        let a = csrf_token("srs_a_secret");
        assert_eq!(a, csrf_token("srs_a_secret"));
        assert_ne!(a, csrf_token("srs_b_secret"));
        assert_eq!(a.len(), 64);
    }

    #[test]
    fn the_console_policy_allows_nothing_inline_and_no_frames() {
        assert!(!CONSOLE_CSP.contains("unsafe"));
        assert!(CONSOLE_CSP.contains("frame-ancestors 'none'"));
        assert!(CONSOLE_CSP.contains("script-src 'self'"));
    }
}
