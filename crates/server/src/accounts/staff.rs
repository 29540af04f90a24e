//! Staff accounts, their passkeys as governance keys, and the challenges approvers and customers sign.

use super::*;

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
        .with_lookup(kek.blind_index("email", email.as_bytes()).map_err(|e| e.to_string())?);
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

/// A staff session may approve, deny or sign governance only as its own governance member, and
/// only when it signed in with a second factor (TOTP, a recovery code or a passkey). `approver`: the member
/// the request names, if it names one. Returns the account's member.
async fn check_staff_approval(
    state: &AppState,
    account: &str,
    session: &str,
    approver: Option<&str>,
) -> Result<String, ApiError> {
    let r = state
        .store()
        .auth_record("account", account)
        .await?
        .ok_or_else(|| ApiError::forbidden("no such account"))?;
    let member = account_of(&r)?.member.ok_or_else(|| {
        ApiError::forbidden("only a staff account linked to a governance member may do this")
    })?;
    if approver.is_some_and(|a| a != member) {
        return Err(ApiError::forbidden(format!(
            "this account acts only as governance member {member}"
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
            "staff who approve or sign must sign in with two-factor authentication (TOTP or a passkey)",
        ));
    }
    Ok(member)
}

/// [`check_staff_approval`] for whoever calls: `Some(member)` for a staff session that may act
/// (as `acting_as`, when the request names a member), `None` for an API token (its role
/// already decided).
pub(crate) async fn staff_member(
    state: &AppState,
    principal: &crate::auth::Principal,
    acting_as: Option<&str>,
) -> Result<Option<String>, ApiError> {
    match &principal.account {
        Some(account) => {
            check_staff_approval(state, account, &principal.token_id, acting_as).await.map(Some)
        }
        None => Ok(None),
    }
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
    let id = crate::extract::path_id(id)?;
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
pub(super) fn passkey_spec(
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
    let id = crate::extract::path_id(id)?;
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
