//! The customer's own withdrawal whitelist and the withdrawal lock after a security change.

use super::*;

pub(super) fn entry_view(r: &AuthRecord, now: i64) -> Result<WhitelistView, ApiError> {
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
    responses((status = 200, body = Page<WhitelistView>), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub(crate) async fn whitelist(
    State(state): State<AppState>,
    Customer(p): Customer,
) -> Result<Json<Page<WhitelistView>>, ApiError> {
    let owner = customer_of(&p)?.to_string();
    let now = state.env().now().unix_ms();
    let list = state.store().auth_records("whitelist", &owner).await?;
    Ok(Json(Page::all(list.iter().map(|r| entry_view(r, now)).collect::<Result<_, _>>()?)))
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
    let id = crate::extract::path_id(id)?;
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
