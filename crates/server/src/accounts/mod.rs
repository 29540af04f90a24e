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

use std::net::IpAddr;
use std::sync::Arc;

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode};
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

use crate::auth::{Customer, Principal, SignedIn, StoredSession as Session, SESSION_COOKIE};
use crate::error::{ApiError, ErrorBody};
use crate::extract::{Body, Client};
use crate::page::Page;
use crate::{AppState, RequestId};

mod contact;
mod login;
mod me;
mod reseal;
mod sessions;
mod staff;
mod whitelist;

pub use contact::*;
pub use login::*;
pub use me::*;
pub(crate) use reseal::*;
use sessions::*;
pub use staff::*;
pub use whitelist::*;

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

/// Account settings and the WebAuthn relying party (all state is in the store, shared by
/// every API instance).
pub struct Accounts {
    rules: AccountRules,
    webauthn: Webauthn,
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
        Ok(Accounts { rules, webauthn })
    }
    pub fn rules(&self) -> &AccountRules {
        &self.rules
    }
}

/// The shared counter of failed sign-ins from `ip` (one for every API instance), named by a
/// keyed hash: the database holds no client address in the clear.
fn ip_counter(state: &AppState, ip: IpAddr) -> Result<String, ApiError> {
    let index = kek(state)?
        .blind_index("signin_ip", ip.to_string().as_bytes())
        .map_err(|e| ApiError::internal(format!("key-encryption key: {e}")))?;
    Ok(format!("signin_ip/{index}"))
}

/// Refuse an IP address that failed too often in the current window (counted in the
/// database, so the limit is one limit across every API instance).
async fn check_ip(state: &AppState, ip: Option<IpAddr>, now_ms: i64) -> Result<(), ApiError> {
    let Some(ip) = ip else { return Ok(()) };
    let rules = &accounts(state).rules;
    let hits = state.store().hits(&ip_counter(state, ip)?, now_ms, rules.ip_window_ms).await?;
    if hits >= u64::from(rules.ip_failures) {
        return Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_attempts",
            "too many failed sign-ins from this address; wait and try again",
        ));
    }
    Ok(())
}

async fn ip_failed(state: &AppState, ip: Option<IpAddr>, now_ms: i64) -> Result<(), ApiError> {
    let Some(ip) = ip else { return Ok(()) };
    let window = accounts(state).rules.ip_window_ms;
    state.store().count_hit(&ip_counter(state, ip)?, now_ms, window).await?;
    Ok(())
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
    kek(state)?
        .blind_index("email", email.as_bytes())
        .map_err(|e| ApiError::internal(format!("key-encryption key: {e}")))
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
    /// The customer's anti-phishing code (`GET /v1/me` only): the console shows it on every
    /// page after sign-in, as our e-mails do, so a look-alike site cannot.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub anti_phishing_code: Option<String>,
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
