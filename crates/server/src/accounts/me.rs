//! The signed-in customer: their account, password, TOTP, passkeys, devices, sessions and anti-phishing code.

use super::*;

pub(super) fn view(state: &AppState, id: &str, a: &Account) -> Result<AccountView, ApiError> {
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
        anti_phishing_code: None,
    })
}

pub(super) fn lock_until(state: &AppState, a: &Account) -> i64 {
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
    let a = account_of(&r)?;
    let mut v = view(&state, &r.id, &a)?;
    if a.role.is_none() {
        if let Some(sealed) = state.store().customer_contact(a.customer_id).await? {
            let c = crate::contact::open_contact(kek(&state)?.as_ref(), a.customer_id, &sealed)
                .map_err(|e| ApiError::internal(format!("contact: {e}")))?;
            v.anti_phishing_code = c.anti_phishing_code.clone();
        }
    }
    Ok(Json(v))
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
    responses((status = 200, body = Page<PasskeyView>), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub(crate) async fn passkeys(
    State(state): State<AppState>,
    SignedIn(p): SignedIn,
) -> Result<Json<Page<PasskeyView>>, ApiError> {
    let a = account_of(&account_record(&state, account_id(&p)?).await?)?;
    Ok(Json(Page::all(
        a.passkeys
            .iter()
            .map(|k| PasskeyView { id: k.id, name: k.name.clone(), added_at: at(k.added_at_ms) })
            .collect(),
    )))
}

/// The customer's devices.
#[utoipa::path(get, path = "/v1/me/devices", tag = "accounts", security(("token" = [])),
    responses((status = 200, body = Page<DeviceView>), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub(crate) async fn devices(
    State(state): State<AppState>,
    SignedIn(p): SignedIn,
) -> Result<Json<Page<DeviceView>>, ApiError> {
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
    Ok(Json(Page::all(out)))
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
    let id = crate::extract::path_id(id)?;
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
    responses((status = 200, body = Page<SessionInfo>), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub(crate) async fn sessions(
    State(state): State<AppState>,
    SignedIn(p): SignedIn,
) -> Result<Json<Page<SessionInfo>>, ApiError> {
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
    Ok(Json(Page::all(out)))
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
