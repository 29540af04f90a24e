//! Sessions: opening one (a bearer token or the session cookie), and finding who holds a token.

use super::*;

pub(super) fn session_cookie(token: &str, max_age_s: i64) -> Result<HeaderValue, ApiError> {
    HeaderValue::from_str(&format!(
        "{SESSION_COOKIE}={token}; Path=/; Max-Age={max_age_s}; Secure; HttpOnly; SameSite=Strict"
    ))
    .map_err(|_| ApiError::internal("cookie"))
}

/// The session's CSRF token, in a cookie the console's script can read (it sends it back in
/// `X-CSRF-Token`); empty when the session ends.
pub(super) fn csrf_cookie(token: &str, max_age_s: i64) -> Result<HeaderValue, ApiError> {
    let value = if token.is_empty() { String::new() } else { crate::console::csrf_token(token) };
    HeaderValue::from_str(&format!(
        "{}={value}; Path=/; Max-Age={max_age_s}; Secure; SameSite=Strict",
        crate::console::CSRF_COOKIE
    ))
    .map_err(|_| ApiError::internal("cookie"))
}

/// Make a session (and the device, if it is new) after a successful login.
pub(super) async fn open_session(
    state: &AppState,
    account: &AuthRecord,
    mut a: Account,
    client: &Client,
    device: (Option<Uuid>, Option<String>),
    via: &str,
) -> Result<Response, ApiError> {
    let registering = via == "registration";
    let now = state.env().now().unix_ms();
    let owner = account.id.clone();
    let known = match device.0 {
        Some(d) => {
            state.store().auth_record("device", &d.to_string()).await?.filter(|r| r.owner == owner)
        }
        None => None,
    };
    let device_id = known
        .as_ref()
        .and_then(|r| Uuid::parse_str(&r.id).ok())
        .unwrap_or_else(|| new_id(state.env()));
    let ip = client.ip.map(|i| i.to_string()).unwrap_or_else(|| "unknown".into());
    let name =
        device.1.unwrap_or_else(|| client.user_agent.clone()).chars().take(100).collect::<String>();
    let dev_aad = format!("device/{device_id}");
    let mut writes = Vec::new();
    match &known {
        Some(r) => {
            let mut d: Device = parse(r)?;
            d.last_seen_ms = now;
            d.ip = seal_hex(state, ip.as_bytes(), &dev_aad)?;
            writes.push(AuthWrite::update(r, body(&d)?));
        }
        None => {
            let d = Device {
                name: seal_hex(state, name.as_bytes(), &format!("{dev_aad}/name"))?,
                ip: seal_hex(state, ip.as_bytes(), &dev_aad)?,
                first_seen_ms: now,
                last_seen_ms: now,
            };
            writes.push(AuthWrite::create("device", &device_id.to_string(), &owner, body(&d)?));
        }
    }
    a.failures = 0;
    writes.push(AuthWrite::update(account, body(&a)?));
    let t = generate_token(state.env());
    let ttl = accounts(state).rules.session_ttl_ms;
    let s = Session {
        token_hash: t.hash.clone(),
        customer_id: a.customer_id,
        device_id,
        created_at_ms: now,
        expires_at_ms: now.saturating_add(ttl),
        via: via.into(),
        role: a.role.clone(),
    };
    writes.push(AuthWrite::create("session", &t.id, &owner, body(&s)?));
    commit(state, format!("account:{owner}"), client, "account.login", &owner, writes).await?;
    if known.is_none() && !registering {
        notify(
            state,
            a.customer_id,
            "New sign-in to your Strongroom account",
            &format!(
                "Your account was signed in to from a new device at {}.\nDevice: {name}\nIP address: {ip}\nIf this was you, there is nothing to do. If not, change your password and revoke the device.",
                at(now)
            ),
        );
    }
    let view = SessionView {
        token: t.token.expose_secret().to_owned(),
        expires_at: at(s.expires_at_ms),
        customer_id: a.customer_id,
        device_id,
        new_device: known.is_none(),
    };
    let mut resp = Json(view).into_response();
    let h = resp.headers_mut();
    h.append(axum::http::header::SET_COOKIE, session_cookie(t.token.expose_secret(), ttl / 1000)?);
    h.append(axum::http::header::SET_COOKIE, csrf_cookie(t.token.expose_secret(), ttl / 1000)?);
    Ok(resp)
}
