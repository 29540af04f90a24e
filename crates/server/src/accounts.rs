//! Customer accounts and their security: registration, login with Argon2id passwords and
//! per-account and per-IP limits, sessions (bearer token or a Secure, HttpOnly,
//! SameSite=Strict cookie), TOTP with recovery codes, WebAuthn passkeys, devices with
//! new-device login alerts, the anti-phishing code, the withdrawal lock after a security
//! change, and the customer's own withdrawal whitelist.
//!
//! Everything is kept as store auth records (see `strongroom_store::AuthRecord`):
//! - `account/<customer id>`, found by a blind index of the e-mail address; the address and
//!   the TOTP seed are sealed (AES-256-GCM under the personal-data key, bound to the record);
//! - `session/<token id>`: the token's hash only; revoking a session deletes it;
//! - `device/<id>`: name and last IP sealed; revoking a device ends its sessions;
//! - `whitelist/<id>`: an address and the time it becomes usable;
//! - `ceremony/<id>`: a pending WebAuthn registration or login, used once.
//!
//! Every write is compare-and-swap on the record's version, so two concurrent logins cannot
//! both use one TOTP step, recovery code or WebAuthn challenge.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use axum::extract::rejection::PathRejection;
use axum::extract::{FromRequest, FromRequestParts, Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use strongroom_core::{new_id, Timestamp};
use strongroom_crypto::password::{
    burn_time, check_new, hash_password, hash_recovery_code, match_recovery_code, recovery_codes,
    verify_password,
};
use strongroom_crypto::seal::{open, seal, KeyEncryptionKey};
use strongroom_crypto::totp::{base32, Totp};
use strongroom_crypto::{generate_token, SecretString};
use strongroom_store::{AuthRecord, AuthWrite, NewCustomer, StoreError, WriteCtx};
use utoipa::ToSchema;
use uuid::Uuid;
use webauthn_rs::prelude::{
    Passkey, PasskeyAuthentication, PasskeyRegistration, PublicKeyCredential,
    RegisterPublicKeyCredential, Url,
};
use webauthn_rs::{Webauthn, WebauthnBuilder};

use crate::auth::{Customer, Principal, SignedIn};
use crate::error::{ApiError, ErrorBody};
use crate::tls::PeerAddr;
use crate::{AppState, RequestId};

/// The session cookie's name.
pub const SESSION_COOKIE: &str = "sr_session";
const HOUR_MS: i64 = 3_600_000;

/// How accounts behave; every duration is configurable (the CLI's `dev` flags).
#[derive(Debug, Clone)]
pub struct AccountRules {
    /// Withdrawals wait this long after a password, 2FA, e-mail or whitelist change.
    pub withdrawal_lock_ms: i64,
    /// A new whitelist address, or turning whitelist-only mode off, takes effect after this.
    pub whitelist_delay_ms: i64,
    pub session_ttl_ms: i64,
    /// Wrong passwords or codes in a row before the account locks.
    pub max_failures: u32,
    pub lockout_ms: i64,
    /// Failed logins from one IP address per window before it must wait.
    pub ip_failures: u32,
    pub ip_window_ms: i64,
    /// WebAuthn relying party: its id (a domain) and the console's origin.
    pub rp_id: String,
    pub rp_origin: String,
}

impl Default for AccountRules {
    fn default() -> Self {
        AccountRules {
            withdrawal_lock_ms: 24 * HOUR_MS,
            whitelist_delay_ms: 24 * HOUR_MS,
            session_ttl_ms: 12 * HOUR_MS,
            max_failures: 5,
            lockout_ms: HOUR_MS / 4,
            ip_failures: 20,
            ip_window_ms: HOUR_MS / 4,
            rp_id: "localhost".into(),
            rp_origin: "https://localhost:8443".into(),
        }
    }
}

/// Sends customers e-mail (whoever runs the server provides it): login alerts and notices
/// of security changes, each starting with the customer's anti-phishing code.
pub trait Notifier: Send + Sync + std::fmt::Debug {
    fn notify_customer(&self, customer_id: Uuid, subject: &str, text: &str);
}

/// Account settings and the state that is not stored: the WebAuthn relying party and the
/// per-IP failure counts.
pub struct Accounts {
    rules: AccountRules,
    webauthn: Webauthn,
    ip_failures: Mutex<HashMap<IpAddr, (i64, u32)>>,
}

impl std::fmt::Debug for Accounts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Accounts").field("rules", &self.rules).finish_non_exhaustive()
    }
}

impl Accounts {
    pub fn new(rules: AccountRules) -> Result<Self, String> {
        let origin = Url::parse(&rules.rp_origin).map_err(|e| format!("rp origin: {e}"))?;
        let webauthn = WebauthnBuilder::new(&rules.rp_id, &origin)
            .and_then(|b| b.rp_name("Strongroom").build())
            .map_err(|e| format!("WebAuthn relying party {}: {e}", rules.rp_id))?;
        Ok(Accounts { rules, webauthn, ip_failures: Mutex::new(HashMap::new()) })
    }
    pub fn rules(&self) -> &AccountRules {
        &self.rules
    }

    /// Refuse an IP address that failed too often in the current window.
    fn check_ip(&self, ip: Option<IpAddr>, now_ms: i64) -> Result<(), ApiError> {
        let Some(ip) = ip else { return Ok(()) };
        let map = self.ip_failures.lock().map_err(|_| ApiError::internal("limiter poisoned"))?;
        match map.get(&ip) {
            Some((start, n))
                if now_ms.saturating_sub(*start) < self.rules.ip_window_ms
                    && *n >= self.rules.ip_failures =>
            {
                Err(ApiError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "too_many_attempts",
                    "too many failed sign-ins from this address; wait and try again",
                ))
            }
            _ => Ok(()),
        }
    }

    fn ip_failed(&self, ip: Option<IpAddr>, now_ms: i64) {
        let Some(ip) = ip else { return };
        let Ok(mut map) = self.ip_failures.lock() else { return };
        if map.len() > 100_000 {
            let window = self.rules.ip_window_ms;
            map.retain(|_, (start, _)| now_ms.saturating_sub(*start) < window);
        }
        let e = map.entry(ip).or_insert((now_ms, 0));
        if now_ms.saturating_sub(e.0) >= self.rules.ip_window_ms {
            *e = (now_ms, 0);
        }
        e.1 = e.1.saturating_add(1);
    }
}

// ---------- stored bodies ----------

/// `account/<customer id>`.
#[derive(Clone, Serialize, Deserialize)]
struct Account {
    customer_id: Uuid,
    /// Sealed e-mail address (hex).
    email: String,
    /// Argon2id PHC string.
    password: String,
    #[serde(default)]
    totp: Option<TotpState>,
    /// Hashes of unused recovery codes.
    #[serde(default)]
    recovery: Vec<String>,
    #[serde(default)]
    failures: u32,
    #[serde(default)]
    locked_until_ms: i64,
    #[serde(default)]
    security_changed_at_ms: i64,
    #[serde(default)]
    security_change: Option<String>,
    #[serde(default)]
    whitelist_only: bool,
    /// When whitelist-only mode, being turned off, stops applying.
    #[serde(default)]
    whitelist_off_at_ms: Option<i64>,
    #[serde(default)]
    passkeys: Vec<StoredPasskey>,
    created_at_ms: i64,
    /// Staff: their role (`approver`, `analyst`, `admin`, `operator`, `auditor`); none for a
    /// customer, whose `customer_id` is then a customer.
    #[serde(default)]
    role: Option<String>,
    /// Staff: the governance member they approve as.
    #[serde(default)]
    member: Option<String>,
}

#[derive(Clone, Serialize, Deserialize)]
struct TotpState {
    /// Sealed seed (hex).
    seed: String,
    enabled: bool,
    last_step: Option<u64>,
}

#[derive(Clone, Serialize, Deserialize)]
struct StoredPasskey {
    id: Uuid,
    name: String,
    added_at_ms: i64,
    passkey: Passkey,
}

impl Account {
    /// A new account: no second factor, no lock, no whitelist.
    fn new(
        id: Uuid,
        email_sealed: String,
        password_phc: String,
        now_ms: i64,
        role: Option<String>,
        member: Option<String>,
    ) -> Account {
        Account {
            customer_id: id,
            email: email_sealed,
            password: password_phc,
            totp: None,
            recovery: Vec::new(),
            failures: 0,
            locked_until_ms: 0,
            security_changed_at_ms: 0,
            security_change: None,
            whitelist_only: false,
            whitelist_off_at_ms: None,
            passkeys: Vec::new(),
            created_at_ms: now_ms,
            role,
            member,
        }
    }
}

/// `session/<token id>`.
#[derive(Clone, Serialize, Deserialize)]
struct Session {
    token_hash: String,
    customer_id: Uuid,
    device_id: Uuid,
    created_at_ms: i64,
    expires_at_ms: i64,
    /// How the customer proved who they are (`password`, `password+totp`, `passkey`, …).
    via: String,
    /// Staff sessions: the account's role.
    #[serde(default)]
    role: Option<String>,
}

/// `device/<id>`.
#[derive(Clone, Serialize, Deserialize)]
struct Device {
    /// Sealed name (hex).
    name: String,
    /// Sealed last IP address (hex).
    ip: String,
    first_seen_ms: i64,
    last_seen_ms: i64,
}

/// `whitelist/<id>`.
#[derive(Clone, Serialize, Deserialize)]
struct Entry {
    chain: String,
    address: String,
    label: String,
    added_at_ms: i64,
    usable_at_ms: i64,
}

/// `ceremony/<id>`.
#[derive(Clone, Serialize, Deserialize)]
struct Ceremony {
    expires_at_ms: i64,
    #[serde(default)]
    registration: Option<PasskeyRegistration>,
    #[serde(default)]
    authentication: Option<PasskeyAuthentication>,
}

fn body<T: Serialize>(v: &T) -> Result<serde_json::Value, ApiError> {
    serde_json::to_value(v).map_err(|e| ApiError::internal(e.to_string()))
}

fn parse<T: DeserializeOwned>(r: &AuthRecord) -> Result<T, ApiError> {
    serde_json::from_value(r.body.clone())
        .map_err(|e| ApiError::internal(format!("auth record {}/{}: {e}", r.kind, r.id)))
}

// ---------- helpers ----------

fn kek(state: &AppState) -> Result<&Arc<dyn KeyEncryptionKey>, ApiError> {
    state.personal_data_key().ok_or_else(|| {
        ApiError::unavailable("no personal-data key is configured: accounts cannot be kept")
    })
}

fn seal_hex(state: &AppState, plain: &[u8], aad: &str) -> Result<String, ApiError> {
    seal(kek(state)?.as_ref(), plain, aad.as_bytes(), state.env())
        .map(hex::encode)
        .map_err(|e| ApiError::internal(e.to_string()))
}

fn open_hex(
    state: &AppState,
    sealed: &str,
    aad: &str,
) -> Result<zeroize::Zeroizing<Vec<u8>>, ApiError> {
    let bytes = hex::decode(sealed).map_err(|_| ApiError::internal("sealed field is not hex"))?;
    open(kek(state)?.as_ref(), &bytes, aad.as_bytes())
        .map_err(|e| ApiError::internal(e.to_string()))
}

fn normalize_email(email: &str) -> Result<String, ApiError> {
    let e = email.trim().to_lowercase();
    let ok = e.len() <= 254
        && e.split_once('@')
            .is_some_and(|(u, d)| !u.is_empty() && d.contains('.') && !d.starts_with('.'))
        && !e.chars().any(|c| c.is_whitespace() || c.is_control());
    if ok {
        Ok(e)
    } else {
        Err(ApiError::bad_request("invalid_email", "not an e-mail address"))
    }
}

fn email_index(state: &AppState, email: &str) -> Result<String, ApiError> {
    Ok(kek(state)?.blind_index("email", email.as_bytes()))
}

fn accounts(state: &AppState) -> &Accounts {
    state.accounts()
}

fn ctx(state: &AppState, actor: String, rid: &RequestId) -> WriteCtx {
    WriteCtx { actor, now: state.env().now(), request_id: Some(rid.0.clone()) }
}

/// RFC 3339 in UTC, for people (e-mails, messages, the console).
fn at(ms: i64) -> String {
    let nanos = i128::from(ms).saturating_mul(1_000_000);
    time::OffsetDateTime::from_unix_timestamp_nanos(nanos)
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_else(|| format!("{ms} ms after the Unix epoch"))
}

fn account_of(r: &AuthRecord) -> Result<Account, ApiError> {
    parse(r)
}

async fn account_record(state: &AppState, customer_id: Uuid) -> Result<AuthRecord, ApiError> {
    state
        .store()
        .auth_record("account", &customer_id.to_string())
        .await?
        .ok_or_else(|| ApiError::not_found("account_not_found", "no account for this customer"))
}

fn notify(state: &AppState, customer_id: Uuid, subject: &str, text: &str) {
    if let Some(n) = state.notifier() {
        n.notify_customer(customer_id, subject, text);
    }
}

/// Record a security change: it starts the withdrawal lock and tells the customer.
fn security_change(state: &AppState, a: &mut Account, what: &str) {
    let now = state.env().now().unix_ms();
    a.security_changed_at_ms = now;
    a.security_change = Some(what.into());
    let until = now.saturating_add(accounts(state).rules.withdrawal_lock_ms);
    notify(
        state,
        a.customer_id,
        "Security change on your Strongroom account",
        &format!(
            "Your account's {what} changed at {}. Withdrawals are locked until {}.",
            at(now),
            at(until)
        ),
    );
}

/// The customer session's account, or a refusal for anything else.
fn customer_of(p: &Principal) -> Result<Uuid, ApiError> {
    p.customer.ok_or_else(|| ApiError::forbidden("only a signed-in customer may do this"))
}

/// The signed-in account (a customer's or staff's).
fn account_id(p: &Principal) -> Result<Uuid, ApiError> {
    p.account
        .as_deref()
        .and_then(|a| Uuid::parse_str(a).ok())
        .ok_or_else(|| ApiError::forbidden("only a signed-in account may do this"))
}

/// A JSON body for the account routes (no idempotency key: each write is compare-and-swap).
#[derive(Debug)]
pub struct Body<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequest<S> for Body<T> {
    type Rejection = ApiError;
    async fn from_request(req: Request, _: &S) -> Result<Self, ApiError> {
        crate::api::require_json(req.headers())?;
        let bytes = crate::api::body_bytes(req.into_body()).await?;
        let bytes: &[u8] = if bytes.is_empty() { b"{}" } else { &bytes };
        serde_json::from_slice(bytes)
            .map(Body)
            .map_err(|e| ApiError::bad_request("invalid_body", e.to_string()))
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
        let ip = parts.extensions.get::<PeerAddr>().map(|p| p.0.ip());
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

// ---------- views ----------

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct SessionView {
    /// Bearer token for the API (also set as the `sr_session` cookie). Shown once.
    pub token: String,
    pub expires_at: String,
    pub customer_id: Uuid,
    /// Send it with later logins from this device.
    pub device_id: Uuid,
    pub new_device: bool,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct AccountView {
    pub customer_id: Uuid,
    /// Masked.
    pub email: String,
    pub totp_enabled: bool,
    pub passkeys: usize,
    pub recovery_codes_left: usize,
    pub whitelist_only: bool,
    /// When turning whitelist-only mode off takes effect, if it is pending.
    pub whitelist_off_at: Option<String>,
    /// Withdrawals are refused until then, after a security change.
    pub withdrawals_locked_until: Option<String>,
    pub last_security_change: Option<String>,
    /// Staff: their role and the governance member they approve as.
    pub role: Option<String>,
    pub member: Option<String>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct DeviceView {
    pub id: Uuid,
    pub name: String,
    pub last_ip: String,
    pub first_seen: String,
    pub last_seen: String,
    pub current: bool,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct SessionInfo {
    pub id: String,
    pub device_id: Uuid,
    pub created_at: String,
    pub expires_at: String,
    pub via: String,
    pub current: bool,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct WhitelistView {
    pub id: Uuid,
    pub chain: String,
    pub address: String,
    pub label: String,
    pub added_at: String,
    pub usable_at: String,
    pub usable: bool,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct TotpSetup {
    /// Base32 seed for an authenticator app. Shown once.
    pub secret: String,
    pub otpauth_uri: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct RecoveryCodes {
    /// Ten single-use codes. Shown once.
    pub recovery_codes: Vec<String>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CeremonyView {
    pub ceremony_id: Uuid,
    /// `PublicKeyCredentialCreationOptions` or `…RequestOptions`, for `navigator.credentials`.
    #[schema(value_type = Object)]
    pub options: serde_json::Value,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct PasskeyView {
    pub id: Uuid,
    pub name: String,
    pub added_at: String,
}

// ---------- requests ----------

/// A password in a request body: read straight into a zeroized secret.
pub struct Password(SecretString);

impl<'de> Deserialize<'de> for Password {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(|s| Password(SecretString::new(s)))
    }
}

impl std::ops::Deref for Password {
    type Target = SecretString;
    fn deref(&self) -> &SecretString {
        &self.0
    }
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Register {
    pub email: String,
    #[schema(value_type = String)]
    pub password: Password,
    pub device_name: Option<String>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Login {
    pub email: String,
    #[schema(value_type = String)]
    pub password: Password,
    pub totp_code: Option<String>,
    pub recovery_code: Option<String>,
    /// The id a previous login returned for this device.
    pub device_id: Option<Uuid>,
    pub device_name: Option<String>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PasskeyStart {
    pub email: String,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PasskeyLogin {
    pub ceremony_id: Uuid,
    /// The `PublicKeyCredential` from `navigator.credentials.get`.
    #[schema(value_type = Object)]
    pub credential: serde_json::Value,
    pub device_id: Option<Uuid>,
    pub device_name: Option<String>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PasskeyAdd {
    pub ceremony_id: Uuid,
    /// The `PublicKeyCredential` from `navigator.credentials.create`.
    #[schema(value_type = Object)]
    pub credential: serde_json::Value,
    pub name: Option<String>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChangePassword {
    #[schema(value_type = String)]
    pub current_password: Password,
    #[schema(value_type = String)]
    pub new_password: Password,
    /// Required when TOTP is on (or a recovery code).
    pub totp_code: Option<String>,
    pub recovery_code: Option<String>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Code {
    pub code: String,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AntiPhishing {
    /// 4 to 32 printable characters, shown at the top of every e-mail we send.
    pub anti_phishing_code: String,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddWhitelist {
    #[schema(example = "ETH")]
    pub asset: String,
    pub address: String,
    pub label: Option<String>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WhitelistMode {
    pub enabled: bool,
    /// Required to turn the mode off (TOTP must be on), or a recovery code.
    pub totp_code: Option<String>,
    pub recovery_code: Option<String>,
}

/// Request bodies carry passwords, codes and addresses: `Debug` shows none of them.
macro_rules! redacted_debug {
    ($($t:ident),*) => {$(
        impl std::fmt::Debug for $t {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.debug_struct(stringify!($t)).finish_non_exhaustive()
            }
        }
    )*};
}
redacted_debug!(
    Password,
    Register,
    Login,
    PasskeyStart,
    PasskeyLogin,
    PasskeyAdd,
    ChangePassword,
    Code,
    AntiPhishing,
    AddWhitelist,
    WhitelistMode
);

// ---------- sessions ----------

fn session_cookie(token: &str, max_age_s: i64) -> Result<HeaderValue, ApiError> {
    HeaderValue::from_str(&format!(
        "{SESSION_COOKIE}={token}; Path=/; Max-Age={max_age_s}; Secure; HttpOnly; SameSite=Strict"
    ))
    .map_err(|_| ApiError::internal("cookie"))
}

/// Make a session (and the device, if it is new) after a successful login.
async fn open_session(
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
    resp.headers_mut().insert(
        axum::http::header::SET_COOKIE,
        session_cookie(t.token.expose_secret(), ttl / 1000)?,
    );
    Ok(resp)
}

/// Look a session token up (for `Principal`): `None` when it is not a session.
pub(crate) async fn session_principal(
    state: &AppState,
    id: &str,
    token: &SecretString,
) -> Result<Option<Principal>, ApiError> {
    let Some(r) = state.store().auth_record("session", id).await? else { return Ok(None) };
    let s: Session = parse(&r)?;
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

/// The session token a request carries in its cookie.
pub(crate) fn cookie_token(headers: &HeaderMap) -> Option<SecretString> {
    headers.get_all(axum::http::header::COOKIE).iter().find_map(|v| {
        v.to_str().ok()?.split(';').find_map(|kv| {
            let (k, v) = kv.trim().split_once('=')?;
            (k == SESSION_COOKIE).then(|| SecretString::new(v.to_owned()))
        })
    })
}

// ---------- login ----------

/// Count a failure against the account (and lock it after too many), and the IP.
async fn failed(
    state: &AppState,
    record: &AuthRecord,
    mut a: Account,
    client: &Client,
) -> Result<(), ApiError> {
    let rules = &accounts(state).rules;
    let now = state.env().now().unix_ms();
    accounts(state).ip_failed(client.ip, now);
    a.failures = a.failures.saturating_add(1);
    if a.failures >= rules.max_failures {
        a.failures = 0;
        a.locked_until_ms = now.saturating_add(rules.lockout_ms);
        notify(
            state,
            a.customer_id,
            "Your Strongroom account is locked",
            &format!(
                "Too many wrong passwords or codes: sign-in is locked until {}.",
                at(a.locked_until_ms)
            ),
        );
    }
    commit(
        state,
        format!("account:{}", record.id),
        client,
        "account.login_failed",
        &record.id,
        vec![AuthWrite::update(record, body(&a)?)],
    )
    .await?;
    Ok(())
}

const BAD_LOGIN: &str = "wrong e-mail address or password";

fn locked(a: &Account, now: i64) -> Result<(), ApiError> {
    if a.locked_until_ms > now {
        return Err(ApiError::new(
            StatusCode::LOCKED,
            "account_locked",
            format!("too many failed attempts: sign-in is locked until {}", at(a.locked_until_ms)),
        ));
    }
    Ok(())
}

/// Check a TOTP code (or, with `recovery`, a recovery code) and consume it.
fn second_factor(
    state: &AppState,
    id: &str,
    a: &mut Account,
    totp_code: Option<&str>,
    recovery_code: Option<&str>,
) -> Result<Option<&'static str>, ApiError> {
    let Some(t) = a.totp.clone().filter(|t| t.enabled) else { return Ok(Some("")) };
    if let Some(code) = recovery_code {
        if let Some(i) = match_recovery_code(code, &a.recovery) {
            a.recovery.remove(i);
            return Ok(Some("+recovery"));
        }
        return Ok(None);
    }
    let Some(code) = totp_code else {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "second_factor_required",
            "this account has two-factor authentication: send totp_code (or recovery_code), or sign in with a passkey",
        ));
    };
    let seed = open_hex(state, &t.seed, &format!("account/{id}/totp"))?;
    let now_s = u64::try_from(state.env().now().unix_ms() / 1000).unwrap_or(0);
    match Totp::default().verify(&seed, code.trim(), now_s, 1, t.last_step) {
        Some(step) => {
            a.totp = Some(TotpState { last_step: Some(step), ..t });
            Ok(Some("+totp"))
        }
        None => Ok(None),
    }
}

/// A second factor (TOTP or recovery code) the account must give now; a wrong one counts as
/// a failure.
async fn require_code(
    state: &AppState,
    r: &AuthRecord,
    a: &mut Account,
    client: &Client,
    totp_code: Option<&str>,
    recovery_code: Option<&str>,
) -> Result<(), ApiError> {
    if second_factor(state, &r.id, a, totp_code, recovery_code)?.is_none() {
        failed(state, r, account_of(r)?, client).await?;
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "invalid_second_factor",
            "wrong, expired or already used code",
        ));
    }
    Ok(())
}

/// `writes` as one audited write on `account` (`actor` is who asked).
async fn commit(
    state: &AppState,
    actor: String,
    client: &Client,
    action: &str,
    account: &str,
    writes: Vec<AuthWrite>,
) -> Result<Vec<AuthRecord>, ApiError> {
    let c = ctx(state, actor, &client.request_id);
    Ok(state.store().write_auth(&c, action, &format!("account/{account}"), writes).await?)
}

/// The account's update as one audited write.
async fn save(
    state: &AppState,
    p: &Principal,
    client: &Client,
    action: &str,
    r: &AuthRecord,
    a: &Account,
) -> Result<(), ApiError> {
    commit(state, p.actor(), client, action, &r.id, vec![AuthWrite::update(r, body(a)?)]).await?;
    Ok(())
}

/// The record `kind/id` if `owner` has it (another owner's is "not found" too).
async fn owned(
    state: &AppState,
    kind: &str,
    id: &str,
    owner: &str,
    missing: (&'static str, &'static str),
) -> Result<AuthRecord, ApiError> {
    state
        .store()
        .auth_record(kind, id)
        .await?
        .filter(|r| r.owner == owner)
        .ok_or_else(|| ApiError::not_found(missing.0, missing.1))
}

/// Register a customer account (and sign in).
#[utoipa::path(post, path = "/v1/auth/register", tag = "accounts", request_body = Register,
    responses((status = 201, body = SessionView), (status = 400, body = ErrorBody), (status = 409, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub(crate) async fn register(
    State(state): State<AppState>,
    client: Client,
    Body(b): Body<Register>,
) -> Result<Response, ApiError> {
    let email = normalize_email(&b.email)?;
    check_new(&b.password).map_err(|e| ApiError::bad_request("weak_password", e.to_string()))?;
    let index = email_index(&state, &email)?;
    if state.store().auth_record_by_lookup("account", &index).await?.is_some() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "account_exists",
            "an account with this e-mail address exists; sign in instead",
        ));
    }
    let env = state.env();
    let id = new_id(env);
    let password =
        hash_password(&b.password, env).map_err(|e| ApiError::internal(e.to_string()))?;
    let c = ctx(&state, format!("account:{id}"), &client.request_id);
    state
        .store()
        .create_customer(&c, None, NewCustomer { id, external_id: format!("self-registered:{id}") })
        .await?;
    let a = Account::new(
        id,
        seal_hex(&state, email.as_bytes(), &format!("account/{id}/email"))?,
        password,
        env.now().unix_ms(),
        None,
        None,
    );
    let write = AuthWrite::create("account", &id.to_string(), &id.to_string(), body(&a)?)
        .with_lookup(index);
    let made = state
        .store()
        .write_auth(&c, "account.registered", &format!("account/{id}"), vec![write])
        .await
        .map_err(|e| match e {
            StoreError::Constraint { unique: true, .. } => ApiError::new(
                StatusCode::CONFLICT,
                "account_exists",
                "an account with this e-mail address exists; sign in instead",
            ),
            e => e.into(),
        })?;
    // Alerts go to the account's address until the customer sets another contact.
    let contact = crate::contact::Contact { email: email.clone(), anti_phishing_code: None };
    let sealed = crate::contact::seal_contact(kek(&state)?.as_ref(), id, &contact, env)
        .map_err(ApiError::internal)?;
    state.store().set_customer_contact(&c, id, sealed).await?;
    let record = made.into_iter().next().ok_or_else(|| ApiError::internal("no record"))?;
    let mut resp =
        open_session(&state, &record, a, &client, (None, b.device_name), "registration").await?;
    *resp.status_mut() = StatusCode::CREATED;
    Ok(resp)
}

/// Sign in with e-mail address and password (and a TOTP or recovery code when 2FA is on).
#[utoipa::path(post, path = "/v1/auth/login", tag = "accounts", request_body = Login,
    responses((status = 200, body = SessionView), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 423, body = ErrorBody), (status = 429, body = ErrorBody)))]
pub(crate) async fn login(
    State(state): State<AppState>,
    client: Client,
    Body(b): Body<Login>,
) -> Result<Response, ApiError> {
    let now = state.env().now().unix_ms();
    accounts(&state).check_ip(client.ip, now)?;
    let email = normalize_email(&b.email).map_err(|_| ApiError::unauthorized(BAD_LOGIN))?;
    let index = email_index(&state, &email)?;
    let Some(record) = state.store().auth_record_by_lookup("account", &index).await? else {
        burn_time(&b.password);
        accounts(&state).ip_failed(client.ip, now);
        return Err(ApiError::unauthorized(BAD_LOGIN));
    };
    let mut a = account_of(&record)?;
    locked(&a, now)?;
    if !verify_password(&b.password, &a.password) {
        failed(&state, &record, a, &client).await?;
        return Err(ApiError::unauthorized(BAD_LOGIN));
    }
    let via = match second_factor(
        &state,
        &record.id,
        &mut a,
        b.totp_code.as_deref(),
        b.recovery_code.as_deref(),
    )? {
        Some(v) => format!("password{v}"),
        None => {
            failed(&state, &record, account_of(&record)?, &client).await?;
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "invalid_second_factor",
                "wrong, expired or already used code",
            ));
        }
    };
    open_session(&state, &record, a, &client, (b.device_id, b.device_name), &via).await
}

/// Start a passkey sign-in: the options for `navigator.credentials.get`.
#[utoipa::path(post, path = "/v1/auth/passkey/options", tag = "accounts", request_body = PasskeyStart,
    responses((status = 200, body = CeremonyView), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 429, body = ErrorBody)))]
pub(crate) async fn passkey_options(
    State(state): State<AppState>,
    client: Client,
    Body(b): Body<PasskeyStart>,
) -> Result<Json<CeremonyView>, ApiError> {
    let now = state.env().now().unix_ms();
    accounts(&state).check_ip(client.ip, now)?;
    let no = || ApiError::unauthorized("no passkey sign-in for this e-mail address");
    let email = normalize_email(&b.email).map_err(|_| no())?;
    let record = state
        .store()
        .auth_record_by_lookup("account", &email_index(&state, &email)?)
        .await?
        .ok_or_else(no)?;
    let a = account_of(&record)?;
    locked(&a, now)?;
    let keys: Vec<Passkey> = a.passkeys.iter().map(|p| p.passkey.clone()).collect();
    if keys.is_empty() {
        return Err(no());
    }
    let (options, st) = accounts(&state)
        .webauthn
        .start_passkey_authentication(&keys)
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let cer = Ceremony {
        expires_at_ms: now.saturating_add(300_000),
        registration: None,
        authentication: Some(st),
    };
    ceremony(&state, &client, &record.id, cer, body(&options)?).await
}

async fn ceremony(
    state: &AppState,
    client: &Client,
    owner: &str,
    cer: Ceremony,
    options: serde_json::Value,
) -> Result<Json<CeremonyView>, ApiError> {
    let id = new_id(state.env());
    let c = ctx(state, format!("account:{owner}"), &client.request_id);
    let w = AuthWrite::create("ceremony", &id.to_string(), owner, body(&cer)?);
    state
        .store()
        .write_auth(&c, "account.webauthn_started", &format!("account/{owner}"), vec![w])
        .await?;
    Ok(Json(CeremonyView { ceremony_id: id, options }))
}

/// Take a pending ceremony (single use: it is deleted in the same write as its result).
async fn take_ceremony(
    state: &AppState,
    id: Uuid,
    owner: Option<&str>,
) -> Result<(AuthRecord, Ceremony), ApiError> {
    let gone = || {
        ApiError::bad_request(
            "ceremony_invalid",
            "unknown, used or expired passkey ceremony; start again",
        )
    };
    let r = state.store().auth_record("ceremony", &id.to_string()).await?.ok_or_else(gone)?;
    if owner.is_some_and(|o| o != r.owner) {
        return Err(gone());
    }
    let c: Ceremony = parse(&r)?;
    if c.expires_at_ms <= state.env().now().unix_ms() {
        return Err(gone());
    }
    Ok((r, c))
}

/// Finish a passkey sign-in.
#[utoipa::path(post, path = "/v1/auth/passkey/login", tag = "accounts", request_body = PasskeyLogin,
    responses((status = 200, body = SessionView), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 423, body = ErrorBody), (status = 429, body = ErrorBody)))]
pub(crate) async fn passkey_login(
    State(state): State<AppState>,
    client: Client,
    Body(b): Body<PasskeyLogin>,
) -> Result<Response, ApiError> {
    let now = state.env().now().unix_ms();
    accounts(&state).check_ip(client.ip, now)?;
    let (cer_rec, cer) = take_ceremony(&state, b.ceremony_id, None).await?;
    let st = cer
        .authentication
        .ok_or_else(|| ApiError::bad_request("ceremony_invalid", "not a sign-in ceremony"))?;
    let record = account_record(
        &state,
        Uuid::parse_str(&cer_rec.owner).map_err(|_| ApiError::internal("owner"))?,
    )
    .await?;
    let mut a = account_of(&record)?;
    locked(&a, now)?;
    let cred: PublicKeyCredential = serde_json::from_value(b.credential)
        .map_err(|e| ApiError::bad_request("invalid_credential", e.to_string()))?;
    // The ceremony is used up whatever the outcome.
    commit(
        &state,
        format!("account:{}", record.id),
        &client,
        "account.webauthn_used",
        &record.id,
        vec![AuthWrite::delete(&cer_rec)],
    )
    .await?;
    let result = match accounts(&state).webauthn.finish_passkey_authentication(&cred, &st) {
        Ok(r) => r,
        Err(e) => {
            tracing::info!(error = %e, "passkey assertion refused");
            failed(&state, &record, a, &client).await?;
            return Err(ApiError::unauthorized("the passkey's signature did not verify"));
        }
    };
    for p in &mut a.passkeys {
        let _ = p.passkey.update_credential(&result);
    }
    open_session(&state, &record, a, &client, (b.device_id, b.device_name), "passkey").await
}

/// Sign out: end this session.
#[utoipa::path(post, path = "/v1/auth/logout", tag = "accounts", security(("token" = [])),
    responses((status = 204), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub(crate) async fn logout(
    State(state): State<AppState>,
    SignedIn(p): SignedIn,
    client: Client,
) -> Result<Response, ApiError> {
    account_id(&p)?;
    if let Some(r) = state.store().auth_record("session", &p.token_id).await? {
        commit(&state, p.actor(), &client, "account.logout", &r.owner, vec![AuthWrite::delete(&r)])
            .await?;
    }
    let mut resp = StatusCode::NO_CONTENT.into_response();
    resp.headers_mut().insert(axum::http::header::SET_COOKIE, session_cookie("", 0)?);
    Ok(resp)
}

// ---------- the signed-in customer ----------

fn view(state: &AppState, id: &str, a: &Account) -> Result<AccountView, ApiError> {
    let email = open_hex(state, &a.email, &format!("account/{id}/email"))?;
    let email = String::from_utf8_lossy(&email).into_owned();
    let now = state.env().now().unix_ms();
    let until = lock_until(state, a);
    Ok(AccountView {
        customer_id: a.customer_id,
        email: crate::contact::mask_email(&email),
        totp_enabled: a.totp.as_ref().is_some_and(|t| t.enabled),
        passkeys: a.passkeys.len(),
        recovery_codes_left: a.recovery.len(),
        whitelist_only: a.whitelist_only,
        whitelist_off_at: a.whitelist_off_at_ms.map(at),
        withdrawals_locked_until: (until > now).then(|| at(until)),
        last_security_change: a.security_change.clone(),
        role: a.role.clone(),
        member: a.member.clone(),
    })
}

fn lock_until(state: &AppState, a: &Account) -> i64 {
    if a.security_changed_at_ms == 0 {
        0
    } else {
        a.security_changed_at_ms.saturating_add(accounts(state).rules.withdrawal_lock_ms)
    }
}

/// The signed-in customer's account.
#[utoipa::path(get, path = "/v1/me", tag = "accounts", security(("token" = [])),
    responses((status = 200, body = AccountView), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub(crate) async fn me(
    State(state): State<AppState>,
    SignedIn(p): SignedIn,
) -> Result<Json<AccountView>, ApiError> {
    let r = account_record(&state, account_id(&p)?).await?;
    Ok(Json(view(&state, &r.id, &account_of(&r)?)?))
}

/// Change the password: other sessions end, and withdrawals lock.
#[utoipa::path(post, path = "/v1/me/password", tag = "accounts", security(("token" = [])), request_body = ChangePassword,
    responses((status = 200, body = AccountView), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 423, body = ErrorBody)))]
pub(crate) async fn change_password(
    State(state): State<AppState>,
    SignedIn(p): SignedIn,
    client: Client,
    Body(b): Body<ChangePassword>,
) -> Result<Json<AccountView>, ApiError> {
    let r = account_record(&state, account_id(&p)?).await?;
    let mut a = account_of(&r)?;
    locked(&a, state.env().now().unix_ms())?;
    if !verify_password(&b.current_password, &a.password) {
        failed(&state, &r, a, &client).await?;
        return Err(ApiError::unauthorized("the current password is wrong"));
    }
    require_code(&state, &r, &mut a, &client, b.totp_code.as_deref(), b.recovery_code.as_deref())
        .await?;
    check_new(&b.new_password)
        .map_err(|e| ApiError::bad_request("weak_password", e.to_string()))?;
    a.password = hash_password(&b.new_password, state.env())
        .map_err(|e| ApiError::internal(e.to_string()))?;
    security_change(&state, &mut a, "password");
    let mut writes = vec![AuthWrite::update(&r, body(&a)?)];
    for s in state.store().auth_records("session", &r.id).await? {
        if s.id != p.token_id {
            writes.push(AuthWrite::delete(&s));
        }
    }
    commit(&state, p.actor(), &client, "account.password_changed", &r.id, writes).await?;
    Ok(Json(view(&state, &r.id, &a)?))
}

/// Start TOTP: a new seed (not active until confirmed with a code).
#[utoipa::path(post, path = "/v1/me/totp", tag = "accounts", security(("token" = [])),
    responses((status = 200, body = TotpSetup), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(crate) async fn totp_start(
    State(state): State<AppState>,
    SignedIn(p): SignedIn,
    client: Client,
) -> Result<Json<TotpSetup>, ApiError> {
    let r = account_record(&state, account_id(&p)?).await?;
    let mut a = account_of(&r)?;
    if a.totp.as_ref().is_some_and(|t| t.enabled) {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "totp_enabled",
            "TOTP is already on; turn it off first",
        ));
    }
    let mut seed = zeroize::Zeroizing::new([0u8; 20]);
    state.env().fill_random(seed.as_mut());
    a.totp = Some(TotpState {
        seed: seal_hex(&state, seed.as_ref(), &format!("account/{}/totp", r.id))?,
        enabled: false,
        last_step: None,
    });
    save(&state, &p, &client, "account.totp_started", &r, &a).await?;
    let email = open_hex(&state, &a.email, &format!("account/{}/email", r.id))?;
    Ok(Json(TotpSetup {
        secret: base32(seed.as_ref()),
        otpauth_uri: Totp::default().uri(
            "Strongroom",
            &String::from_utf8_lossy(&email),
            seed.as_ref(),
        ),
    }))
}

/// Turn TOTP on with a first code; returns the recovery codes (once).
#[utoipa::path(post, path = "/v1/me/totp/confirm", tag = "accounts", security(("token" = [])), request_body = Code,
    responses((status = 200, body = RecoveryCodes), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub(crate) async fn totp_confirm(
    State(state): State<AppState>,
    SignedIn(p): SignedIn,
    client: Client,
    Body(b): Body<Code>,
) -> Result<Json<RecoveryCodes>, ApiError> {
    let r = account_record(&state, account_id(&p)?).await?;
    let mut a = account_of(&r)?;
    let Some(t) = a.totp.clone().filter(|t| !t.enabled) else {
        return Err(ApiError::bad_request(
            "totp_not_started",
            "start TOTP first (POST /v1/me/totp)",
        ));
    };
    let seed = open_hex(&state, &t.seed, &format!("account/{}/totp", r.id))?;
    let now_s = u64::try_from(state.env().now().unix_ms() / 1000).unwrap_or(0);
    let Some(step) = Totp::default().verify(&seed, b.code.trim(), now_s, 1, None) else {
        failed(&state, &r, a, &client).await?;
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "invalid_second_factor",
            "wrong or expired code",
        ));
    };
    a.totp = Some(TotpState { enabled: true, last_step: Some(step), ..t });
    let codes = recovery_codes(state.env());
    a.recovery = codes.iter().map(|c| hash_recovery_code(c.expose_secret())).collect();
    security_change(&state, &mut a, "two-factor authentication (TOTP on)");
    save(&state, &p, &client, "account.totp_enabled", &r, &a).await?;
    Ok(Json(RecoveryCodes {
        recovery_codes: codes.iter().map(|c| c.expose_secret().to_owned()).collect(),
    }))
}

/// Turn TOTP off (needs a current code); withdrawals lock.
#[utoipa::path(post, path = "/v1/me/totp/disable", tag = "accounts", security(("token" = [])), request_body = Code,
    responses((status = 200, body = AccountView), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub(crate) async fn totp_disable(
    State(state): State<AppState>,
    SignedIn(p): SignedIn,
    client: Client,
    Body(b): Body<Code>,
) -> Result<Json<AccountView>, ApiError> {
    let r = account_record(&state, account_id(&p)?).await?;
    let mut a = account_of(&r)?;
    if !a.totp.as_ref().is_some_and(|t| t.enabled) {
        return Err(ApiError::bad_request("totp_not_enabled", "TOTP is off"));
    }
    require_code(&state, &r, &mut a, &client, Some(&b.code), None).await?;
    a.totp = None;
    a.recovery.clear();
    security_change(&state, &mut a, "two-factor authentication (TOTP off)");
    save(&state, &p, &client, "account.totp_disabled", &r, &a).await?;
    Ok(Json(view(&state, &r.id, &a)?))
}

/// Start adding a passkey: the options for `navigator.credentials.create`.
#[utoipa::path(post, path = "/v1/me/passkeys/options", tag = "accounts", security(("token" = [])),
    responses((status = 200, body = CeremonyView), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub(crate) async fn passkey_register_options(
    State(state): State<AppState>,
    SignedIn(p): SignedIn,
    client: Client,
) -> Result<Json<CeremonyView>, ApiError> {
    let r = account_record(&state, account_id(&p)?).await?;
    let a = account_of(&r)?;
    let email = open_hex(&state, &a.email, &format!("account/{}/email", r.id))?;
    let email = String::from_utf8_lossy(&email).into_owned();
    let exclude: Vec<_> = a.passkeys.iter().map(|k| k.passkey.cred_id().clone()).collect();
    let (options, st) = accounts(&state)
        .webauthn
        .start_passkey_registration(a.customer_id, &email, &email, Some(exclude))
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let now = state.env().now().unix_ms();
    let cer = Ceremony {
        expires_at_ms: now.saturating_add(300_000),
        registration: Some(st),
        authentication: None,
    };
    ceremony(&state, &client, &r.id, cer, body(&options)?).await
}

/// Finish adding a passkey; withdrawals lock.
#[utoipa::path(post, path = "/v1/me/passkeys", tag = "accounts", security(("token" = [])), request_body = PasskeyAdd,
    responses((status = 201, body = PasskeyView), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub(crate) async fn passkey_register(
    State(state): State<AppState>,
    SignedIn(p): SignedIn,
    client: Client,
    Body(b): Body<PasskeyAdd>,
) -> Result<(StatusCode, Json<PasskeyView>), ApiError> {
    let customer = account_id(&p)?;
    let (cer_rec, cer) = take_ceremony(&state, b.ceremony_id, Some(&customer.to_string())).await?;
    let st = cer
        .registration
        .ok_or_else(|| ApiError::bad_request("ceremony_invalid", "not a registration ceremony"))?;
    let cred: RegisterPublicKeyCredential = serde_json::from_value(b.credential)
        .map_err(|e| ApiError::bad_request("invalid_credential", e.to_string()))?;
    let r = account_record(&state, customer).await?;
    let mut a = account_of(&r)?;
    let c = ctx(&state, p.actor(), &client.request_id);
    let passkey = match accounts(&state).webauthn.finish_passkey_registration(&cred, &st) {
        Ok(k) => k,
        Err(e) => {
            state
                .store()
                .write_auth(
                    &c,
                    "account.webauthn_used",
                    &format!("account/{}", r.id),
                    vec![AuthWrite::delete(&cer_rec)],
                )
                .await?;
            return Err(ApiError::bad_request(
                "invalid_credential",
                format!("the passkey was not accepted: {e}"),
            ));
        }
    };
    let now = state.env().now().unix_ms();
    let k = StoredPasskey {
        id: new_id(state.env()),
        name: b.name.unwrap_or_else(|| "passkey".into()).chars().take(64).collect(),
        added_at_ms: now,
        passkey,
    };
    let out = PasskeyView { id: k.id, name: k.name.clone(), added_at: at(now) };
    let mut writes = vec![AuthWrite::delete(&cer_rec)];
    // A customer's P-256 passkey can also sign their withdrawal requests for the signer
    // nodes: kept, with the passkey, as the nodes see it.
    if a.role.is_none() {
        if let Ok(spec) = passkey_spec(&state, &k.passkey) {
            let spec = serde_json::to_value(spec).map_err(|e| ApiError::internal(e.to_string()))?;
            writes.push(AuthWrite::create(
                strongroom_store::CUSTOMER_KEY_RECORD,
                &k.id.to_string(),
                &customer.to_string(),
                spec,
            ));
        }
    }
    a.passkeys.push(k);
    security_change(&state, &mut a, "two-factor authentication (passkey added)");
    writes.push(AuthWrite::update(&r, body(&a)?));
    state
        .store()
        .write_auth(&c, "account.passkey_added", &format!("account/{}", r.id), writes)
        .await?;
    Ok((StatusCode::CREATED, Json(out)))
}

/// The customer's passkeys.
#[utoipa::path(get, path = "/v1/me/passkeys", tag = "accounts", security(("token" = [])),
    responses((status = 200, body = Vec<PasskeyView>), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub(crate) async fn passkeys(
    State(state): State<AppState>,
    SignedIn(p): SignedIn,
) -> Result<Json<Vec<PasskeyView>>, ApiError> {
    let a = account_of(&account_record(&state, account_id(&p)?).await?)?;
    Ok(Json(
        a.passkeys
            .iter()
            .map(|k| PasskeyView { id: k.id, name: k.name.clone(), added_at: at(k.added_at_ms) })
            .collect(),
    ))
}

/// The customer's devices.
#[utoipa::path(get, path = "/v1/me/devices", tag = "accounts", security(("token" = [])),
    responses((status = 200, body = Vec<DeviceView>), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub(crate) async fn devices(
    State(state): State<AppState>,
    SignedIn(p): SignedIn,
) -> Result<Json<Vec<DeviceView>>, ApiError> {
    let owner = account_id(&p)?.to_string();
    let current = match state.store().auth_record("session", &p.token_id).await? {
        Some(s) => Some(parse::<Session>(&s)?.device_id),
        None => None,
    };
    let mut out = Vec::new();
    for r in state.store().auth_records("device", &owner).await? {
        let d: Device = parse(&r)?;
        let id = Uuid::parse_str(&r.id).map_err(|_| ApiError::internal("device id"))?;
        let name = open_hex(&state, &d.name, &format!("device/{id}/name"))?;
        let ip = open_hex(&state, &d.ip, &format!("device/{id}"))?;
        out.push(DeviceView {
            id,
            name: String::from_utf8_lossy(&name).into_owned(),
            last_ip: String::from_utf8_lossy(&ip).into_owned(),
            first_seen: at(d.first_seen_ms),
            last_seen: at(d.last_seen_ms),
            current: current == Some(id),
        });
    }
    Ok(Json(out))
}

/// Revoke a device: its sessions end, and its next sign-in alerts as a new device.
#[utoipa::path(delete, path = "/v1/me/devices/{id}", tag = "accounts", security(("token" = [])), params(("id" = Uuid, Path)),
    responses((status = 204), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn revoke_device(
    State(state): State<AppState>,
    SignedIn(p): SignedIn,
    client: Client,
    id: Result<Path<Uuid>, PathRejection>,
) -> Result<StatusCode, ApiError> {
    let id = crate::api::path_id(id)?;
    let owner = account_id(&p)?.to_string();
    let d =
        owned(&state, "device", &id.to_string(), &owner, ("device_not_found", "no such device"))
            .await?;
    let mut writes = vec![AuthWrite::delete(&d)];
    for s in state.store().auth_records("session", &owner).await? {
        if parse::<Session>(&s)?.device_id == id {
            writes.push(AuthWrite::delete(&s));
        }
    }
    commit(&state, p.actor(), &client, "account.device_revoked", &owner, writes).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The customer's sessions.
#[utoipa::path(get, path = "/v1/me/sessions", tag = "accounts", security(("token" = [])),
    responses((status = 200, body = Vec<SessionInfo>), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub(crate) async fn sessions(
    State(state): State<AppState>,
    SignedIn(p): SignedIn,
) -> Result<Json<Vec<SessionInfo>>, ApiError> {
    let owner = account_id(&p)?.to_string();
    let now = state.env().now().unix_ms();
    let mut out = Vec::new();
    for r in state.store().auth_records("session", &owner).await? {
        let s: Session = parse(&r)?;
        if s.expires_at_ms > now {
            out.push(SessionInfo {
                current: r.id == p.token_id,
                id: r.id,
                device_id: s.device_id,
                created_at: at(s.created_at_ms),
                expires_at: at(s.expires_at_ms),
                via: s.via,
            });
        }
    }
    Ok(Json(out))
}

/// End a session.
#[utoipa::path(delete, path = "/v1/me/sessions/{id}", tag = "accounts", security(("token" = [])), params(("id" = String, Path)),
    responses((status = 204), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn revoke_session(
    State(state): State<AppState>,
    SignedIn(p): SignedIn,
    client: Client,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let owner = account_id(&p)?.to_string();
    let s = owned(&state, "session", &id, &owner, ("session_not_found", "no such session")).await?;
    commit(
        &state,
        p.actor(),
        &client,
        "account.session_revoked",
        &owner,
        vec![AuthWrite::delete(&s)],
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Set the anti-phishing code shown at the top of every e-mail we send.
#[utoipa::path(post, path = "/v1/me/anti-phishing-code", tag = "accounts", security(("token" = [])), request_body = AntiPhishing,
    responses((status = 204), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub(crate) async fn set_anti_phishing(
    State(state): State<AppState>,
    Customer(p): Customer,
    client: Client,
    Body(b): Body<AntiPhishing>,
) -> Result<StatusCode, ApiError> {
    let customer = customer_of(&p)?;
    let code = b.anti_phishing_code.trim().to_owned();
    let n = code.chars().count();
    if !(4..=32).contains(&n) || code.chars().any(char::is_control) {
        return Err(ApiError::bad_request(
            "invalid_anti_phishing_code",
            "the anti-phishing code is 4 to 32 printable characters",
        ));
    }
    let r = account_record(&state, customer).await?;
    let a = account_of(&r)?;
    let email = open_hex(&state, &a.email, &format!("account/{}/email", r.id))?;
    let contact = crate::contact::Contact {
        email: String::from_utf8_lossy(&email).into_owned(),
        anti_phishing_code: Some(code),
    };
    let kek = kek(&state)?;
    let sealed = crate::contact::seal_contact(kek.as_ref(), customer, &contact, state.env())
        .map_err(ApiError::internal)?;
    let c = ctx(&state, p.actor(), &client.request_id);
    state.store().set_customer_contact(&c, customer, sealed).await?;
    Ok(StatusCode::NO_CONTENT)
}

// ---------- the customer's whitelist and the withdrawal lock ----------

fn entry_view(r: &AuthRecord, now: i64) -> Result<WhitelistView, ApiError> {
    let e: Entry = parse(r)?;
    Ok(WhitelistView {
        id: Uuid::parse_str(&r.id).map_err(|_| ApiError::internal("entry id"))?,
        chain: e.chain,
        address: e.address,
        label: e.label,
        added_at: at(e.added_at_ms),
        usable_at: at(e.usable_at_ms),
        usable: e.usable_at_ms <= now,
    })
}

/// The customer's withdrawal addresses.
#[utoipa::path(get, path = "/v1/me/whitelist", tag = "accounts", security(("token" = [])),
    responses((status = 200, body = Vec<WhitelistView>), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub(crate) async fn whitelist(
    State(state): State<AppState>,
    Customer(p): Customer,
) -> Result<Json<Vec<WhitelistView>>, ApiError> {
    let owner = customer_of(&p)?.to_string();
    let now = state.env().now().unix_ms();
    let list = state.store().auth_records("whitelist", &owner).await?;
    Ok(Json(list.iter().map(|r| entry_view(r, now)).collect::<Result<_, _>>()?))
}

/// Add a withdrawal address: usable after the whitelist delay (24 h by default).
#[utoipa::path(post, path = "/v1/me/whitelist", tag = "accounts", security(("token" = [])), request_body = AddWhitelist,
    responses((status = 201, body = WhitelistView), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub(crate) async fn add_whitelist(
    State(state): State<AppState>,
    Customer(p): Customer,
    client: Client,
    Body(b): Body<AddWhitelist>,
) -> Result<(StatusCode, Json<WhitelistView>), ApiError> {
    let customer = customer_of(&p)?;
    let asset = state
        .registry()
        .get(&b.asset)
        .map_err(|e| ApiError::bad_request("unknown_asset", e.to_string()))?;
    let address = asset
        .parse_address(&b.address)
        .map_err(|e| ApiError::bad_request("invalid_destination", e.to_string()))?;
    let r = account_record(&state, customer).await?;
    let mut a = account_of(&r)?;
    let now = state.env().now().unix_ms();
    let id = new_id(state.env());
    let e = Entry {
        chain: asset.chain.as_str().to_owned(),
        address: address.as_str().to_owned(),
        label: b.label.unwrap_or_default().chars().take(64).collect(),
        added_at_ms: now,
        usable_at_ms: now.saturating_add(accounts(&state).rules.whitelist_delay_ms),
    };
    security_change(&state, &mut a, "withdrawal whitelist");
    let made = commit(
        &state,
        p.actor(),
        &client,
        "account.whitelist_added",
        &r.id,
        vec![
            AuthWrite::create("whitelist", &id.to_string(), &r.id, body(&e)?),
            AuthWrite::update(&r, body(&a)?),
        ],
    )
    .await?;
    let rec = made.first().ok_or_else(|| ApiError::internal("no record"))?;
    Ok((StatusCode::CREATED, Json(entry_view(rec, now)?)))
}

/// Remove a withdrawal address (at once: removing loosens nothing).
#[utoipa::path(delete, path = "/v1/me/whitelist/{id}", tag = "accounts", security(("token" = [])), params(("id" = Uuid, Path)),
    responses((status = 204), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn remove_whitelist(
    State(state): State<AppState>,
    Customer(p): Customer,
    client: Client,
    id: Result<Path<Uuid>, PathRejection>,
) -> Result<StatusCode, ApiError> {
    let id = crate::api::path_id(id)?;
    let owner = customer_of(&p)?.to_string();
    let e = owned(
        &state,
        "whitelist",
        &id.to_string(),
        &owner,
        ("whitelist_entry_not_found", "no such whitelist entry"),
    )
    .await?;
    commit(
        &state,
        p.actor(),
        &client,
        "account.whitelist_removed",
        &owner,
        vec![AuthWrite::delete(&e)],
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Turn whitelist-only mode on (at once) or off (needs a TOTP code, and waits the delay).
#[utoipa::path(post, path = "/v1/me/whitelist/mode", tag = "accounts", security(("token" = [])), request_body = WhitelistMode,
    responses((status = 200, body = AccountView), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub(crate) async fn whitelist_mode(
    State(state): State<AppState>,
    Customer(p): Customer,
    client: Client,
    Body(b): Body<WhitelistMode>,
) -> Result<Json<AccountView>, ApiError> {
    let r = account_record(&state, customer_of(&p)?).await?;
    let mut a = account_of(&r)?;
    let now = state.env().now().unix_ms();
    if b.enabled {
        a.whitelist_only = true;
        a.whitelist_off_at_ms = None;
    } else if a.whitelist_only && a.whitelist_off_at_ms.is_none() {
        if !a.totp.as_ref().is_some_and(|t| t.enabled) {
            return Err(ApiError::forbidden("turning whitelist-only mode off needs two-factor authentication: turn TOTP on first"));
        }
        require_code(
            &state,
            &r,
            &mut a,
            &client,
            b.totp_code.as_deref(),
            b.recovery_code.as_deref(),
        )
        .await?;
        a.whitelist_off_at_ms = Some(now.saturating_add(accounts(&state).rules.whitelist_delay_ms));
        security_change(&state, &mut a, "withdrawal whitelist mode");
    }
    save(&state, &p, &client, "account.whitelist_mode", &r, &a).await?;
    Ok(Json(view(&state, &r.id, &a)?))
}

/// A security change made outside the customer's own session (the exchange's backend
/// changing their alert e-mail address): it starts the withdrawal lock too. Called before the
/// change is written, so a failure leaves the lock on rather than the change unlocked.
pub(crate) async fn external_security_change(
    state: &AppState,
    customer_id: Uuid,
    what: &str,
    ctx: &WriteCtx,
) -> Result<(), ApiError> {
    let Some(r) = state.store().auth_record("account", &customer_id.to_string()).await? else {
        return Ok(());
    };
    let mut a = account_of(&r)?;
    security_change(state, &mut a, what);
    state
        .store()
        .write_auth(
            ctx,
            "account.security_change",
            &format!("account/{}", r.id),
            vec![AuthWrite::update(&r, body(&a)?)],
        )
        .await?;
    Ok(())
}

/// Refuse a withdrawal the customer's own settings forbid: during the lock after a security
/// change, or to an address not (yet) on their whitelist in whitelist-only mode. Customers
/// without an account (made by the exchange's backend) have neither.
pub async fn check_withdrawal(
    state: &AppState,
    customer_id: Uuid,
    chain: &str,
    destination: &str,
) -> Result<(), ApiError> {
    let Some(r) = state.store().auth_record("account", &customer_id.to_string()).await? else {
        return Ok(());
    };
    let a = account_of(&r)?;
    let now = state.env().now().unix_ms();
    let until = lock_until(state, &a);
    if until > now {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "withdrawal_locked",
            format!(
                "withdrawals are locked until {} after a security change ({})",
                at(until),
                a.security_change.as_deref().unwrap_or("account")
            ),
        ));
    }
    let whitelist_applies = a.whitelist_only && a.whitelist_off_at_ms.is_none_or(|off| off > now);
    if whitelist_applies {
        let entries = state.store().auth_records("whitelist", &r.id).await?;
        let mut pending = None;
        for e in &entries {
            let e: Entry = parse(e)?;
            if e.chain == chain && e.address.eq_ignore_ascii_case(destination) {
                if e.usable_at_ms <= now {
                    return Ok(());
                }
                pending = Some(e.usable_at_ms);
            }
        }
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "destination_not_whitelisted",
            match pending {
                Some(t) => {
                    format!("this address is on the whitelist but usable only from {}", at(t))
                }
                None => "whitelist-only mode is on and this address is not on the whitelist".into(),
            },
        ));
    }
    Ok(())
}

// ---------- key rotation ----------

/// A field re-sealed (hex) and its plaintext.
type Resealed = (String, zeroize::Zeroizing<Vec<u8>>);

/// `sealed_hex` re-sealed under `new` (`None` when it already is).
fn reseal_hex(
    old: &dyn KeyEncryptionKey,
    new: &dyn KeyEncryptionKey,
    sealed_hex: &str,
    aad: &str,
    env: &dyn strongroom_core::Env,
) -> Result<Option<Resealed>, String> {
    let bytes = hex::decode(sealed_hex).map_err(|_| format!("{aad}: not hex"))?;
    if strongroom_crypto::seal::sealed_by(&bytes).map_err(|e| format!("{aad}: {e}"))? == new.id() {
        return Ok(None);
    }
    let plain = open(old, &bytes, aad.as_bytes()).map_err(|e| format!("{aad}: {e}"))?;
    let resealed = seal(new, &plain, aad.as_bytes(), env).map_err(|e| format!("{aad}: {e}"))?;
    Ok(Some((hex::encode(resealed), plain)))
}

/// The write that re-seals an account-security record's sealed fields under `new` (and
/// recomputes its blind index), or `None` when there is nothing to do.
pub(crate) fn reseal_record(
    r: &AuthRecord,
    old: &dyn KeyEncryptionKey,
    new: &dyn KeyEncryptionKey,
    env: &dyn strongroom_core::Env,
) -> Result<Option<AuthWrite>, String> {
    let bad = |e: serde_json::Error| format!("{}/{}: {e}", r.kind, r.id);
    match r.kind.as_str() {
        "account" => {
            let mut a: Account = serde_json::from_value(r.body.clone()).map_err(bad)?;
            let mut changed = false;
            let mut lookup = r.lookup.clone();
            if let Some((sealed, email)) =
                reseal_hex(old, new, &a.email, &format!("account/{}/email", r.id), env)?
            {
                a.email = sealed;
                lookup = Some(new.blind_index("email", &email));
                changed = true;
            }
            if let Some(mut t) = a.totp.clone() {
                if let Some((sealed, _)) =
                    reseal_hex(old, new, &t.seed, &format!("account/{}/totp", r.id), env)?
                {
                    t.seed = sealed;
                    a.totp = Some(t);
                    changed = true;
                }
            }
            if !changed {
                return Ok(None);
            }
            let mut w = AuthWrite::update(r, serde_json::to_value(&a).map_err(bad)?);
            w.lookup = lookup;
            Ok(Some(w))
        }
        "device" => {
            let mut d: Device = serde_json::from_value(r.body.clone()).map_err(bad)?;
            let name = reseal_hex(old, new, &d.name, &format!("device/{}/name", r.id), env)?;
            let ip = reseal_hex(old, new, &d.ip, &format!("device/{}", r.id), env)?;
            if name.is_none() && ip.is_none() {
                return Ok(None);
            }
            if let Some((s, _)) = name {
                d.name = s;
            }
            if let Some((s, _)) = ip {
                d.ip = s;
            }
            Ok(Some(AuthWrite::update(r, serde_json::to_value(&d).map_err(bad)?)))
        }
        _ => Ok(None),
    }
}

// ---------- staff ----------

/// Make a staff account (`strongroom staff add`): it signs in like a customer, with its
/// role; an approver names the governance member they approve as.
pub async fn create_staff(
    store: &dyn strongroom_store::Store,
    kek: &dyn KeyEncryptionKey,
    env: &dyn strongroom_core::Env,
    email: &str,
    password: &SecretString,
    role: strongroom_store::Role,
    member: Option<String>,
) -> Result<Uuid, String> {
    let email =
        normalize_email(email).map_err(|_| format!("{email:?} is not an e-mail address"))?;
    check_new(password).map_err(|e| e.to_string())?;
    if role == strongroom_store::Role::Approver && member.is_none() {
        return Err("an approver needs --member: the governance member they approve as".into());
    }
    let id = new_id(env);
    let a = Account::new(
        id,
        hex::encode(
            seal(kek, email.as_bytes(), format!("account/{id}/email").as_bytes(), env)
                .map_err(|e| e.to_string())?,
        ),
        hash_password(password, env).map_err(|e| e.to_string())?,
        env.now().unix_ms(),
        Some(role.as_str().into()),
        member,
    );
    let ctx = WriteCtx { actor: "cli:staff".into(), now: env.now(), request_id: None };
    let body = serde_json::to_value(&a).map_err(|e| e.to_string())?;
    let write = AuthWrite::create("account", &id.to_string(), &id.to_string(), body)
        .with_lookup(kek.blind_index("email", email.as_bytes()));
    store.write_auth(&ctx, "staff.created", &format!("account/{id}"), vec![write]).await.map_err(
        |e| match e {
            StoreError::Constraint { unique: true, .. } => {
                "an account with this e-mail address exists".to_string()
            }
            e => e.to_string(),
        },
    )?;
    Ok(id)
}

/// A staff session may submit an approval only as its own governance member, and only when
/// it signed in with a second factor (TOTP, a recovery code or a passkey).
pub(crate) async fn check_staff_approval(
    state: &AppState,
    account: &str,
    session: &str,
    approver: &str,
) -> Result<(), ApiError> {
    let r = state
        .store()
        .auth_record("account", account)
        .await?
        .ok_or_else(|| ApiError::forbidden("no such account"))?;
    let a = account_of(&r)?;
    if a.member.as_deref() != Some(approver) {
        return Err(ApiError::forbidden(format!(
            "this account approves only as governance member {}",
            a.member.as_deref().unwrap_or("(none)")
        )));
    }
    let s: Session = match state.store().auth_record("session", session).await? {
        Some(r) => parse(&r)?,
        None => return Err(ApiError::unauthorized("session ended")),
    };
    if !(s.via.contains("totp") || s.via.contains("recovery") || s.via == "passkey") {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "two_factor_required",
            "staff who approve must sign in with two-factor authentication (TOTP or a passkey)",
        ));
    }
    Ok(())
}

/// What admins put in the governance log for a staff member's passkey
/// (`SetPasskey`), so signer nodes can verify the approvals it makes.
#[utoipa::path(get, path = "/v1/me/passkeys/{id}/governance-key", tag = "accounts", security(("token" = [])), params(("id" = Uuid, Path)),
    responses((status = 200, body = Object), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn passkey_governance_key(
    State(state): State<AppState>,
    SignedIn(p): SignedIn,
    id: Result<Path<Uuid>, PathRejection>,
) -> Result<Json<strongroom_governance::webauthn::PasskeySpec>, ApiError> {
    let id = crate::api::path_id(id)?;
    let a = account_of(&account_record(&state, account_id(&p)?).await?)?;
    let k = a
        .passkeys
        .iter()
        .find(|k| k.id == id)
        .ok_or_else(|| ApiError::not_found("passkey_not_found", "no such passkey"))?;
    Ok(Json(passkey_spec(&state, &k.passkey)?))
}

/// A passkey as the signer nodes verify it: relying party, origin, credential id and the SEC1
/// P-256 public key (only ES256 passkeys can sign for the nodes).
fn passkey_spec(
    state: &AppState,
    passkey: &Passkey,
) -> Result<strongroom_governance::webauthn::PasskeySpec, ApiError> {
    use webauthn_rs::prelude::{COSEKeyType, ECDSACurve};
    let unsupported =
        || ApiError::bad_request("unsupported_passkey", "only P-256 (ES256) passkeys can sign");
    let key = passkey.get_public_key();
    let COSEKeyType::EC_EC2(ec) = &key.key else { return Err(unsupported()) };
    if ec.curve != ECDSACurve::SECP256R1 {
        return Err(unsupported());
    }
    let mut sec1 = vec![0x04u8];
    sec1.extend_from_slice(ec.x.as_ref());
    sec1.extend_from_slice(ec.y.as_ref());
    let rules = &accounts(state).rules;
    use base64::Engine;
    Ok(strongroom_governance::webauthn::PasskeySpec {
        rp_id: rules.rp_id.clone(),
        origin: rules.rp_origin.clone(),
        credential_id: base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(passkey.cred_id().as_ref()),
        public_key: hex::encode(sec1),
    })
}

/// The customer's passkeys as the signer nodes see them.
pub(crate) async fn customer_keys(
    state: &AppState,
    customer_id: Uuid,
) -> Result<Vec<strongroom_governance::webauthn::PasskeySpec>, ApiError> {
    let records = state
        .store()
        .auth_records(strongroom_store::CUSTOMER_KEY_RECORD, &customer_id.to_string())
        .await?;
    records
        .into_iter()
        .map(|r| {
            serde_json::from_value(r.body)
                .map_err(|e| ApiError::internal(format!("customer key record: {e}")))
        })
        .collect()
}

/// Check a customer's signed request against the intent planned for it and the customer's
/// passkeys (the signer nodes check it again, with their own time-lock on the keys).
pub(crate) async fn check_customer_signature(
    state: &AppState,
    signed: &strongroom_governance::initiation::Initiation,
    intent: &strongroom_core::Intent,
    customer_id: Uuid,
) -> Result<(), ApiError> {
    let keys = customer_keys(state, customer_id).await?;
    signed.verify_customer(&customer_id.to_string(), &keys, intent).map(|_| ()).map_err(|e| {
        ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "initiation_refused", e.to_string())
    })
}

/// What a customer asks to withdraw, for the request they sign.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WithdrawalToSign {
    #[schema(example = "ETH")]
    pub asset: String,
    pub destination: String,
    /// Decimal amount in the asset's units.
    #[schema(example = "0.1")]
    pub amount: String,
}

/// The request a customer signs with their passkey, and the WebAuthn options whose challenge
/// is its message.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct WithdrawalChallenge {
    #[schema(value_type = Object)]
    pub requested: strongroom_governance::initiation::Requested,
    /// For `navigator.credentials.get`.
    #[schema(value_type = Object)]
    pub options: serde_json::Value,
}

/// The request for a withdrawal in the customer's own words (a new request id, the asset's
/// chain and contract, the amount in base units, the customer), to sign with a passkey and
/// send to `POST /v1/me/withdrawals` as `signature`.
#[utoipa::path(post, path = "/v1/me/withdrawals/challenge", tag = "accounts", security(("token" = [])),
    request_body = WithdrawalToSign,
    responses((status = 200, body = WithdrawalChallenge), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(crate) async fn withdrawal_challenge(
    State(state): State<AppState>,
    SignedIn(p): SignedIn,
    Body(b): Body<WithdrawalToSign>,
) -> Result<Json<WithdrawalChallenge>, ApiError> {
    let customer = account_id(&p)?;
    let asset = state
        .registry()
        .get(&b.asset)
        .map_err(|e| ApiError::bad_request("unknown_asset", e.to_string()))?;
    let amount = asset
        .parse_amount(&b.amount)
        .map_err(|e| ApiError::bad_request("invalid_amount", e.to_string()))?;
    let destination = asset
        .parse_address(&b.destination)
        .map_err(|e| ApiError::bad_request("invalid_destination", e.to_string()))?;
    let keys = customer_keys(&state, customer).await?;
    if keys.is_empty() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "no_passkey",
            "register a passkey first (POST /v1/me/passkeys)",
        ));
    }
    let requested = strongroom_governance::initiation::Requested {
        request_id: new_id(state.env()),
        chain: asset.chain.as_str().to_owned(),
        asset: asset.symbol.as_str().to_owned(),
        contract: asset.contract.as_ref().map(|c| c.as_str().to_owned()),
        destination: destination.as_str().to_owned(),
        amount,
        customer_id: Some(customer.to_string()),
    };
    let message = requested.message().map_err(|e| ApiError::internal(e.to_string()))?;
    let allow: Vec<serde_json::Value> = keys
        .iter()
        .map(|k| serde_json::json!({"type": "public-key", "id": k.credential_id}))
        .collect();
    let options = serde_json::json!({ "publicKey": {
        "challenge": strongroom_governance::webauthn::challenge_b64(&message),
        "rpId": accounts(&state).rules.rp_id,
        "allowCredentials": allow,
        "userVerification": "required",
        "timeout": 300000,
    }});
    Ok(Json(WithdrawalChallenge { requested, options }))
}

/// The options for approving a withdrawal with a passkey: the challenge is the approval's
/// message (intent hash, policy version in force, expiry), so signer nodes verify the
/// assertion themselves.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ApprovalChallenge {
    pub approver: String,
    pub intent_hash: String,
    pub policy_version: u64,
    pub expires_at_ms: i64,
    /// For `navigator.credentials.get`.
    #[schema(value_type = Object)]
    pub options: serde_json::Value,
}

#[utoipa::path(get, path = "/v1/withdrawals/{id}/approval-challenge", tag = "withdrawals", security(("token" = [])), params(("id" = Uuid, Path)),
    responses((status = 200, body = ApprovalChallenge), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(crate) async fn approval_challenge(
    State(state): State<AppState>,
    SignedIn(p): SignedIn,
    id: Result<Path<Uuid>, PathRejection>,
) -> Result<Json<ApprovalChallenge>, ApiError> {
    let id = crate::api::path_id(id)?;
    let a = account_of(&account_record(&state, account_id(&p)?).await?)?;
    let member = a
        .member
        .clone()
        .filter(|_| a.role.as_deref() == Some("approver"))
        .ok_or_else(|| ApiError::forbidden("only a staff approver may approve"))?;
    let w = state.store().get_withdrawal(id).await?;
    let now = state.env().now();
    let rec = state.store().governance().await?;
    let gov = crate::governance::state_of(&rec, now)?.ok_or_else(|| {
        ApiError::new(
            StatusCode::CONFLICT,
            "governance_not_installed",
            "no governance is installed",
        )
    })?;
    let policy_version = gov.policy.as_ref().map_or(0, |p| p.version);
    let m = gov
        .members
        .get(&member)
        .ok_or_else(|| ApiError::forbidden(format!("{member} is not a governance member")))?;
    let passkey = m.passkey.as_ref().ok_or_else(|| {
        ApiError::new(
            StatusCode::CONFLICT,
            "no_passkey_in_governance",
            format!(
                "{member} has no passkey in the governance log (admins add it with set_passkey)"
            ),
        )
    })?;
    let hash_bytes: [u8; 32] = hex::decode(&w.intent_hash)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| ApiError::internal("intent hash"))?;
    let intent = strongroom_core::IntentHash(hash_bytes);
    let expires_at_ms = now.unix_ms().saturating_add(HOUR_MS);
    let message = strongroom_governance::approval::Approval::message(
        &intent,
        policy_version,
        Timestamp::from_unix_ms(expires_at_ms),
    );
    let options = serde_json::json!({ "publicKey": {
        "challenge": strongroom_governance::webauthn::challenge_b64(&message),
        "rpId": passkey.rp_id,
        "allowCredentials": [{ "type": "public-key", "id": passkey.credential_id }],
        "userVerification": "required",
        "timeout": 300000,
    }});
    Ok(Json(ApprovalChallenge {
        approver: member,
        intent_hash: w.intent_hash,
        policy_version,
        expires_at_ms,
        options,
    }))
}
