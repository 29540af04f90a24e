//! Signing in: passwords with per-account lockout and per-IP limits, second factors (TOTP, recovery codes, passkeys), WebAuthn ceremonies.

use super::*;

/// Count a failure against the account (and lock it after too many), and the IP. The
/// account's count is a compare-and-swap on its record: a failure that races another
/// (guesses sent in parallel, to one instance or several) reads the record again and counts
/// again, so no guess goes uncounted.
pub(super) async fn failed(
    state: &AppState,
    record: &AuthRecord,
    a: Account,
    client: &Client,
) -> Result<(), ApiError> {
    let rules = &accounts(state).rules;
    let now = state.env().now().unix_ms();
    ip_failed(state, client.ip, now).await?;
    let (mut record, mut a) = (record.clone(), a);
    for _ in 0..16 {
        a.failures = a.failures.saturating_add(1);
        let locks = a.failures >= rules.max_failures;
        if locks {
            a.failures = 0;
            a.locked_until_ms = now.saturating_add(rules.lockout_ms);
        }
        let c = ctx(state, format!("account:{}", record.id), &client.request_id);
        let writes = vec![AuthWrite::update(&record, body(&a)?)];
        let subject = format!("account/{}", record.id);
        let written = state.store().write_auth(&c, "account.login_failed", &subject, writes).await;
        match written {
            Ok(_) => {
                if locks {
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
                return Ok(());
            }
            Err(StoreError::Stale { .. }) => {
                let Some(fresh) = state.store().auth_record(&record.kind, &record.id).await? else {
                    return Ok(());
                };
                a = account_of(&fresh)?;
                record = fresh;
            }
            Err(e) => return Err(e.into()),
        }
    }
    Err(ApiError::internal("the account changed too often to count a failed sign-in"))
}

pub(super) const BAD_LOGIN: &str = "wrong e-mail address or password";

pub(super) fn locked(a: &Account, now: i64) -> Result<(), ApiError> {
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
pub(super) fn second_factor(
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
pub(super) async fn require_code(
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
pub(super) async fn commit(
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
pub(super) async fn save(
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
pub(super) async fn owned(
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
    check_ip(&state, client.ip, now).await?;
    let email = normalize_email(&b.email).map_err(|_| ApiError::unauthorized(BAD_LOGIN))?;
    let index = email_index(&state, &email)?;
    let Some(record) = state.store().auth_record_by_lookup("account", &index).await? else {
        burn_time(&b.password);
        ip_failed(&state, client.ip, now).await?;
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
    check_ip(&state, client.ip, now).await?;
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

pub(super) async fn ceremony(
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
pub(super) async fn take_ceremony(
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
    check_ip(&state, client.ip, now).await?;
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
    let h = resp.headers_mut();
    h.append(axum::http::header::SET_COOKIE, session_cookie("", 0)?);
    h.append(axum::http::header::SET_COOKIE, csrf_cookie("", 0)?);
    Ok(resp)
}
