//! API clients (the exchange's backend): what a token may do beyond its role. A token can
//! carry scopes (the resources it may use), an IP allow-list, and a request-signing key; with
//! a key, every request must be signed:
//!
//! ```text
//! X-Strongroom-Timestamp: <unix ms>
//! X-Strongroom-Nonce:     <16 to 64 of A-Z a-z 0-9 - _>
//! X-Strongroom-Signature: v1=<hex HMAC-SHA256(key, "v1\n" METHOD "\n" PATH?QUERY "\n"
//!                            TIMESTAMP "\n" NONCE "\n" hex(SHA-256(body)))>
//! ```
//!
//! A request more than five minutes from the server's clock, or reusing a nonce, is refused:
//! a captured request cannot be replayed, nor its body or path changed.

use std::net::IpAddr;

use axum::extract::{MatchedPath, Request};
use axum::http::request::Parts;
use axum::http::StatusCode;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use strongroom_store::TokenRestrictions;
use subtle::ConstantTimeEq;

use crate::error::ApiError;
use crate::tls::PeerAddr;
use crate::AppState;

pub const TIMESTAMP: &str = "x-strongroom-timestamp";
pub const NONCE: &str = "x-strongroom-nonce";
pub const SIGNATURE: &str = "x-strongroom-signature";
/// How far a signed request's timestamp may be from the server's clock.
pub const SKEW_MS: i64 = 300_000;

/// SHA-256 of a signed request's body (set by [`digest_body`]).
#[derive(Debug, Clone, Copy)]
pub struct BodyDigest(pub [u8; 32]);

/// The `X-Strongroom-Signature` value for a request whose body hashes to `body_sha256`:
/// `v1=` and the hex HMAC-SHA256 of
/// `"v1\nMETHOD\nPATH?QUERY\nTIMESTAMP\nNONCE\nhex(body_sha256)"`.
fn signature(
    key: &[u8],
    method: &str,
    path_and_query: &str,
    timestamp: &str,
    nonce: &str,
    body_sha256: &[u8; 32],
) -> String {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
    mac.update(
        format!(
            "v1\n{method}\n{path_and_query}\n{timestamp}\n{nonce}\n{}",
            hex::encode(body_sha256)
        )
        .as_bytes(),
    );
    format!("v1={}", hex::encode(mac.finalize().into_bytes()))
}

/// The `X-Strongroom-Signature` value for a request (for clients and tests).
pub fn sign(
    key: &[u8],
    method: &str,
    path_and_query: &str,
    timestamp: &str,
    nonce: &str,
    body: &[u8],
) -> String {
    signature(key, method, path_and_query, timestamp, nonce, &Sha256::digest(body).into())
}

/// For a request that carries a signature, read its body (within the body limit) and keep
/// its SHA-256 for the signature check (called by the `observe` middleware).
pub(crate) async fn digest_if_signed(req: Request) -> Result<Request, ApiError> {
    if !req.headers().contains_key(SIGNATURE) {
        return Ok(req);
    }
    let (mut parts, body) = req.into_parts();
    let bytes = crate::body::body_bytes(body).await?;
    parts.extensions.insert(BodyDigest(Sha256::digest(&bytes).into()));
    Ok(Request::from_parts(parts, axum::body::Body::from(bytes)))
}

/// Whether `rule` is an IP address or a CIDR range (`10.0.0.0/8`, `2001:db8::/32`).
pub fn valid_ip_rule(rule: &str) -> bool {
    let (addr, bits) = match rule.split_once('/') {
        Some((a, b)) => (a, Some(b)),
        None => (rule, None),
    };
    match (addr.trim().parse::<IpAddr>(), bits.map(str::parse::<u32>)) {
        (Ok(_), None) => true,
        (Ok(IpAddr::V4(_)), Some(Ok(b))) => b <= 32,
        (Ok(IpAddr::V6(_)), Some(Ok(b))) => b <= 128,
        _ => false,
    }
}

/// One hop of `X-Forwarded-For` or a `for=` of `Forwarded` (RFC 7239): an address, maybe
/// quoted, bracketed or with a port.
fn hop(text: &str) -> Option<IpAddr> {
    let t = text.trim().trim_matches('"');
    if let Ok(ip) = t.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Ok(sa) = t.parse::<std::net::SocketAddr>() {
        return Some(sa.ip());
    }
    t.strip_prefix('[')
        .and_then(|r| r.split_once(']'))
        .and_then(|(v6, _)| v6.parse::<std::net::Ipv6Addr>().ok())
        .map(IpAddr::V6)
}

/// The hops a request's proxies recorded, nearest last: `Forwarded`'s `for=` values when
/// present, else `X-Forwarded-For`; `None` when a hop is not an address.
fn forwarded_hops(headers: &axum::http::HeaderMap) -> Option<Vec<IpAddr>> {
    let forwarded: Vec<&str> = headers
        .get_all(axum::http::header::FORWARDED)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    if !forwarded.is_empty() {
        return forwarded
            .iter()
            .flat_map(|v| v.split(','))
            .filter_map(|element| {
                element.split(';').find_map(|pair| {
                    let (k, v) = pair.split_once('=')?;
                    k.trim().eq_ignore_ascii_case("for").then_some(v)
                })
            })
            .map(hop)
            .collect();
    }
    headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(hop)
        .collect()
}

/// Where a request came from: the TCP peer, unless the peer is one of `trusted` (the load
/// balancers the operator named); then the nearest hop the trusted proxies recorded that is
/// not itself trusted, read from the right, so a client cannot choose its address by
/// sending the header itself. A malformed header from a trusted proxy leaves the peer.
pub fn client_ip_from(
    peer: Option<IpAddr>,
    headers: &axum::http::HeaderMap,
    trusted: &[String],
) -> Option<IpAddr> {
    let peer = peer?;
    let is_trusted = |ip: IpAddr| trusted.iter().any(|rule| ip_matches(ip, rule));
    if !is_trusted(peer) {
        return Some(peer);
    }
    let Some(hops) = forwarded_hops(headers) else { return Some(peer) };
    let mut nearest = peer;
    for ip in hops.into_iter().rev() {
        nearest = ip;
        if !is_trusted(ip) {
            break;
        }
    }
    Some(nearest)
}

/// The request's client address under the server's trusted proxies.
pub(crate) fn client_ip(parts: &Parts, state: &AppState) -> Option<IpAddr> {
    let peer = parts.extensions.get::<PeerAddr>().map(|p| p.0.ip());
    client_ip_from(peer, &parts.headers, state.trusted_proxies())
}

/// Whether `ip` is `rule` (an address) or inside it (a CIDR range).
fn ip_matches(ip: IpAddr, rule: &str) -> bool {
    let (addr, bits) = match rule.split_once('/') {
        Some((a, b)) => (a, b.parse::<u32>().ok()),
        None => (rule, None),
    };
    let Ok(net) = addr.trim().parse::<IpAddr>() else { return false };
    let ip = match (ip, net) {
        (IpAddr::V6(v6), IpAddr::V4(_)) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        _ => ip,
    };
    match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) => {
            let bits = bits.unwrap_or(32).min(32);
            let mask = if bits == 0 { 0 } else { u32::MAX << (32 - bits) };
            u32::from(a) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(n)) => {
            let bits = bits.unwrap_or(128).min(128);
            let mask = if bits == 0 { 0 } else { u128::MAX << (128 - bits) };
            u128::from(a) & mask == u128::from(n) & mask
        }
        _ => false,
    }
}

/// Check a valid token's restrictions against the request; `open` unseals the signing key.
pub(crate) async fn check(
    state: &AppState,
    parts: &Parts,
    token_id: &str,
    r: &TokenRestrictions,
) -> Result<(), ApiError> {
    if let Some(allowed) = &r.allowed_ips {
        let ip = client_ip(parts, state);
        if !ip.is_some_and(|ip| allowed.iter().any(|rule| ip_matches(ip, rule))) {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "ip_not_allowed",
                "this token may not be used from this IP address",
            ));
        }
    }
    if let Some(scopes) = &r.scopes {
        let route = parts.extensions.get::<MatchedPath>().map(|m| m.as_str()).unwrap_or("");
        let resource =
            route.trim_start_matches('/').trim_start_matches("v1/").split('/').next().unwrap_or("");
        let read =
            parts.method == axum::http::Method::GET || parts.method == axum::http::Method::HEAD;
        let ok = scopes.iter().any(|s| {
            s == "*" || s == resource || (read && s.strip_suffix(":read") == Some(resource))
        });
        if !ok {
            let action = if read { "read" } else { "write" };
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "scope_denied",
                format!("this token's scopes do not allow {action} access to {resource}"),
            ));
        }
    }
    if let Some(sealed) = &r.signing_key {
        verify_signature(state, parts, token_id, sealed).await?;
    }
    Ok(())
}

async fn verify_signature(
    state: &AppState,
    parts: &Parts,
    token_id: &str,
    sealed: &str,
) -> Result<(), ApiError> {
    let unsigned = || {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "signature_required",
            format!("this token must sign its requests ({TIMESTAMP}, {NONCE}, {SIGNATURE})"),
        )
    };
    let header = |name: &str| parts.headers.get(name).and_then(|v| v.to_str().ok());
    let (Some(ts), Some(nonce), Some(sig), Some(BodyDigest(digest))) =
        (header(TIMESTAMP), header(NONCE), header(SIGNATURE), parts.extensions.get::<BodyDigest>())
    else {
        return Err(unsigned());
    };
    let now = state.env().now().unix_ms();
    let when: i64 = ts.parse().map_err(|_| unsigned())?;
    if now.saturating_sub(when).abs() > SKEW_MS {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "signature_expired",
            "the request's timestamp is more than five minutes from the server's clock",
        ));
    }
    if !(16..=64).contains(&nonce.len())
        || !nonce.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(unsigned());
    }
    let kek = state.personal_data_key().ok_or_else(|| {
        ApiError::unavailable("no secrets key is configured: signed requests cannot be checked")
    })?;
    let bytes =
        hex::decode(sealed).map_err(|_| ApiError::internal("sealed signing key is not hex"))?;
    let key = strongroom_crypto::seal::open(
        kek.as_ref(),
        &bytes,
        format!("token/{token_id}/signing-key").as_bytes(),
    )
    .map_err(|e| ApiError::internal(e.to_string()))?;
    let path = parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let expected = signature(&key, parts.method.as_str(), path, ts, nonce, digest);
    if !bool::from(expected.as_bytes().ct_eq(sig.as_bytes())) {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "bad_signature",
            "the request's signature does not match",
        ));
    }
    // Shared by every instance through the database: a request replayed to another API
    // server is refused too. Kept past the timestamp window on both sides.
    let fresh = state.store().use_nonce(token_id, nonce, now, now + 2 * SKEW_MS).await?;
    if !fresh {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "replayed",
            "this nonce was used already: a request is accepted once",
        ));
    }
    Ok(())
}

/// Seal a new signing key for `token_id` (what `TokenRestrictions::signing_key` holds).
pub fn seal_signing_key(
    kek: &dyn strongroom_crypto::seal::KeyEncryptionKey,
    token_id: &str,
    key: &[u8],
    env: &dyn strongroom_core::Env,
) -> Result<String, String> {
    strongroom_crypto::seal::seal(kek, key, format!("token/{token_id}/signing-key").as_bytes(), env)
        .map(hex::encode)
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_client_address_comes_from_trusted_proxies_only() {
        let h = |pairs: &[(&str, &str)]| {
            let mut m = axum::http::HeaderMap::new();
            for (k, v) in pairs {
                m.append(
                    axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                    v.parse().unwrap(),
                );
            }
            m
        };
        let ip = |s: &str| Some(s.parse::<IpAddr>().unwrap());
        let lb = vec!["10.0.0.0/8".to_owned()];
        let xff = h(&[("x-forwarded-for", "203.0.113.7")]);
        // A client talking to us directly cannot name another address.
        assert_eq!(client_ip_from(ip("198.51.100.9"), &xff, &lb), ip("198.51.100.9"));
        // No proxies configured: the header means nothing.
        assert_eq!(client_ip_from(ip("10.0.0.2"), &xff, &[]), ip("10.0.0.2"));
        // Behind the balancer: the address it recorded.
        assert_eq!(client_ip_from(ip("10.0.0.2"), &xff, &lb), ip("203.0.113.7"));
        // A client's own header comes first; the balancer appends what it saw: read from the
        // right, the forged left part is never reached.
        let forged = h(&[("x-forwarded-for", "192.0.2.1, 203.0.113.7")]);
        assert_eq!(client_ip_from(ip("10.0.0.2"), &forged, &lb), ip("203.0.113.7"));
        // Two trusted hops (balancer, then ingress) are skipped.
        let chain = h(&[("x-forwarded-for", "203.0.113.7, 10.1.2.3")]);
        assert_eq!(client_ip_from(ip("10.0.0.2"), &chain, &lb), ip("203.0.113.7"));
        // RFC 7239 wins over X-Forwarded-For; quoted IPv6 with a port.
        let fwd = h(&[
            ("forwarded", "for=192.0.2.1;proto=https, for=\"[2001:db8::7]:4711\""),
            ("x-forwarded-for", "198.51.100.1"),
        ]);
        assert_eq!(client_ip_from(ip("10.0.0.2"), &fwd, &lb), ip("2001:db8::7"));
        // A malformed header from the balancer leaves the balancer's address.
        let bad = h(&[("x-forwarded-for", "unknown")]);
        assert_eq!(client_ip_from(ip("10.0.0.2"), &bad, &lb), ip("10.0.0.2"));
        assert!(
            valid_ip_rule("10.0.0.0/8") && valid_ip_rule("::1") && !valid_ip_rule("10.0.0.0/33")
        );
        assert!(!valid_ip_rule("lb.internal"));
    }

    #[test]
    fn ip_rules_match_addresses_and_ranges() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(ip_matches(ip("10.1.2.3"), "10.1.2.3"));
        assert!(ip_matches(ip("10.1.2.3"), "10.1.0.0/16"));
        assert!(!ip_matches(ip("10.2.2.3"), "10.1.0.0/16"));
        assert!(ip_matches(ip("::ffff:10.1.2.3"), "10.1.0.0/16"));
        assert!(ip_matches(ip("2001:db8::1"), "2001:db8::/32"));
        assert!(!ip_matches(ip("2001:db9::1"), "2001:db8::/32"));
        assert!(ip_matches(ip("8.8.8.8"), "0.0.0.0/0"));
        assert!(!ip_matches(ip("8.8.8.8"), "not an address"));
    }
}
