//! Governance over the API: install the genesis, propose a change, add members' signatures
//! (the change is appended to the log the moment they are enough), withdraw a proposal, and
//! read the state in force. The server holds no governance key: every signature is made on
//! a member's own device (`strongroom governance sign`), and every signer node replays the
//! whole log from its own pinned genesis before it trusts any of it.

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use strongroom_core::withdrawal::{Withdrawal, WithdrawalState};
use strongroom_core::Timestamp;
use strongroom_governance::log::{replay, Change, Entry, Genesis, Signoff, State as GovState};
use strongroom_governance::policy::Outcome;
use strongroom_store::{GovernanceRecord, GovernanceWrite, Role};
use utoipa::ToSchema;

use crate::auth::Principal;
use crate::auth::READERS;
use crate::error::{ApiError, ErrorBody};
use crate::extract::{Write, WriteBody};
use crate::AppState;

const GOVERNORS: &[Role] = &[Role::Operator, Role::Admin];

/// The state in force, replayed from the genesis by this server (signer nodes do the same
/// on their own).
#[derive(Debug, Serialize, ToSchema)]
pub struct GovernanceView {
    /// Whether a genesis is installed; without one, nothing below is set.
    pub installed: bool,
    /// Hex hash of the genesis, which every signer node pins.
    pub pin: Option<String>,
    /// Number of the last entry in force.
    pub seq: u64,
    pub quorum: u8,
    pub whitelist_delay_ms: i64,
    pub members: Vec<MemberView>,
    /// The policy in force (see `governance::policy::Policy`).
    #[schema(value_type = Option<Object>)]
    pub policy: Option<serde_json::Value>,
    pub whitelist: Vec<WhitelistView>,
    #[schema(value_type = Vec<Object>)]
    pub freezes: Vec<serde_json::Value>,
    /// Time-boxed freezes still in force, each with its end (they cannot be lifted early).
    #[schema(value_type = Vec<Object>)]
    pub frozen_until: Vec<serde_json::Value>,
    pub proposal: Option<ProposalView>,
    /// The genesis and every entry, for anyone to verify (`strongroom governance verify`).
    #[schema(value_type = Option<Object>)]
    pub genesis: Option<serde_json::Value>,
    #[schema(value_type = Vec<Object>)]
    pub entries: Vec<serde_json::Value>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct MemberView {
    pub id: String,
    pub public_key: String,
    pub roles: Vec<String>,
    /// The passkey registered for the member in the log, if any: they approve withdrawals
    /// with it and may sign entries with it (not those that change who governs).
    pub passkey: Option<PasskeyView>,
}

/// A member's registered passkey: what a browser needs to ask for an assertion.
#[derive(Debug, Serialize, ToSchema)]
pub struct PasskeyView {
    pub rp_id: String,
    pub origin: String,
    /// Base64url.
    pub credential_id: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct WhitelistView {
    #[schema(value_type = Object)]
    pub scope: serde_json::Value,
    pub address: String,
    pub label: String,
    /// The entry that added it (cancel it with a `cancel_pending` change while it waits).
    pub seq: u64,
    pub usable_from_ms: i64,
    pub usable: bool,
}

/// The change waiting for signatures.
#[derive(Debug, Serialize, ToSchema)]
pub struct ProposalView {
    /// The entry as it will be appended; members sign `hash`, which they recompute from it.
    #[schema(value_type = Object)]
    pub entry: serde_json::Value,
    pub seq: u64,
    pub hash: String,
    /// Base64url of the exact bytes `hash` covers (the JSON of `seq`, `prev`, `at`,
    /// `change`): a page reads what it shows from these and hashes them itself.
    pub signed: String,
    pub signed_by: Vec<String>,
    /// What it still lacks, as the log's rules say (e.g. "needs 2 distinct admins, has 1").
    pub missing: Option<String>,
}

/// The first members and the admin quorum (made with `strongroom governance init`).
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InstallGenesis {
    #[schema(value_type = Object)]
    pub genesis: serde_json::Value,
    /// The hash the signer nodes pin; must be the genesis's.
    pub pin: String,
}

impl WriteBody for InstallGenesis {
    const ROLES: &'static [Role] = GOVERNORS;
}

/// A change to propose (see `governance::log::Change`), e.g.
/// `{"change": "freeze", "scope": {"kind": "global"}}`.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Propose {
    #[schema(value_type = Object)]
    pub change: serde_json::Value,
}

impl WriteBody for Propose {
    const ROLES: &'static [Role] = GOVERNORS;
}

/// A member's signature over the proposal's entry hash: Ed25519 by the key they hold
/// (`signature`), or an assertion by their registered passkey whose challenge is the hash
/// (`passkey`). Exactly one.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddSignoff {
    pub member: String,
    /// Hex, 64 bytes.
    #[serde(default)]
    pub signature: Option<String>,
    /// `{authenticator_data, client_data_json, signature}`, base64url, as
    /// `navigator.credentials.get` returned them.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub passkey: Option<strongroom_governance::webauthn::Assertion>,
}

impl WriteBody for AddSignoff {
    const ROLES: &'static [Role] = GOVERNORS;
}

#[derive(Debug, Deserialize, Serialize, ToSchema, Default)]
pub struct NoBody {}

impl WriteBody for NoBody {
    const ROLES: &'static [Role] = GOVERNORS;
}

/// What the last signature did.
#[derive(Debug, Serialize, ToSchema)]
pub struct SignoffResult {
    /// The change is now in the log.
    pub committed: bool,
    pub governance: GovernanceView,
}

fn invalid(e: impl std::fmt::Display) -> ApiError {
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "governance_invalid",
        format!("the stored governance log does not verify: {e}"),
    )
}

/// The state in force from the stored record, or None when no genesis is installed.
pub(crate) fn state_of(
    rec: &GovernanceRecord,
    now: Timestamp,
) -> Result<Option<GovState>, ApiError> {
    let Some((pin, genesis)) = &rec.genesis else { return Ok(None) };
    replay(genesis, pin, &rec.entries, now).map(Some).map_err(invalid)
}

fn to_json<T: Serialize>(v: &T) -> serde_json::Value {
    serde_json::to_value(v).unwrap_or_default()
}

/// What `entry` lacks to be appended to `entries` (None: it can be).
fn missing(rec: &GovernanceRecord, entry: &Entry, now: Timestamp) -> Option<String> {
    let (pin, genesis) = rec.genesis.as_ref()?;
    let mut all = rec.entries.clone();
    all.push(entry.clone());
    replay(genesis, pin, &all, now).err().map(|e| e.to_string())
}

fn view(rec: &GovernanceRecord, now: Timestamp) -> Result<GovernanceView, ApiError> {
    let Some(state) = state_of(rec, now)? else {
        return Ok(GovernanceView {
            installed: false,
            pin: None,
            seq: 0,
            quorum: 0,
            whitelist_delay_ms: 0,
            members: vec![],
            policy: None,
            whitelist: vec![],
            freezes: vec![],
            frozen_until: vec![],
            proposal: None,
            genesis: None,
            entries: vec![],
        });
    };
    let proposal = match &rec.proposal {
        Some(p) => Some(ProposalView {
            entry: to_json(p),
            seq: p.seq,
            hash: hex::encode(p.hash().map_err(invalid)?),
            signed: base64::Engine::encode(
                &base64::engine::general_purpose::URL_SAFE_NO_PAD,
                p.signed_bytes().map_err(invalid)?,
            ),
            signed_by: p.signoffs.iter().map(|s| s.member.clone()).collect(),
            missing: missing(rec, p, now),
        }),
        None => None,
    };
    Ok(GovernanceView {
        installed: true,
        pin: rec.genesis.as_ref().map(|g| g.0.clone()),
        seq: state.seq,
        quorum: state.quorum,
        whitelist_delay_ms: state.whitelist_delay_ms,
        members: state
            .members
            .values()
            .map(|m| MemberView {
                id: m.id.clone(),
                public_key: hex::encode(m.key.to_bytes()),
                roles: m
                    .roles
                    .iter()
                    .map(|r| to_json(r).as_str().unwrap_or_default().to_owned())
                    .collect(),
                passkey: m.passkey.as_ref().map(|k| PasskeyView {
                    rp_id: k.rp_id.clone(),
                    origin: k.origin.clone(),
                    credential_id: k.credential_id.clone(),
                }),
            })
            .collect(),
        policy: state.policy.as_ref().map(to_json),
        whitelist: state
            .whitelist
            .iter()
            .map(|w| WhitelistView {
                scope: to_json(&w.scope),
                address: w.address.clone(),
                label: w.label.clone(),
                seq: w.seq,
                usable_from_ms: w.usable_from.unix_ms(),
                usable: w.usable_from <= now,
            })
            .collect(),
        freezes: state.freezes.iter().map(to_json).collect(),
        frozen_until: state
            .frozen_until
            .iter()
            .filter(|(_, until)| **until > now)
            .map(|(scope, until)| serde_json::json!({"scope": scope, "until_ms": until.unix_ms()}))
            .collect(),
        proposal,
        genesis: rec.genesis.as_ref().map(|g| to_json(&g.1)),
        entries: rec.entries.iter().map(to_json).collect(),
    })
}

/// The governance state in force, the open proposal and the whole log.
#[utoipa::path(get, path = "/v1/governance", tag = "governance", security(("token" = [])),
    responses((status = 200, body = GovernanceView), (status = 401, body = ErrorBody), (status = 500, body = ErrorBody)))]
pub(crate) async fn get_governance(
    State(state): State<AppState>,
    p: Principal,
) -> Result<Json<GovernanceView>, ApiError> {
    p.require(READERS)?;
    let rec = state.store().governance().await?;
    Ok(Json(view(&rec, state.env().now())?))
}

/// Install the genesis (once). The signer nodes must pin the same hash in their
/// configuration; this copy only lets the server show and hand on the log.
#[utoipa::path(post, path = "/v1/governance/genesis", tag = "governance", security(("token" = [])),
    params(("Idempotency-Key" = String, Header)), request_body = InstallGenesis,
    responses((status = 200, body = GovernanceView), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub(crate) async fn install_genesis(
    State(state): State<AppState>,
    req: Write<InstallGenesis>,
) -> Result<Json<GovernanceView>, ApiError> {
    let genesis: Genesis = serde_json::from_value(req.body.genesis)
        .map_err(|e| ApiError::bad_request("invalid_genesis", e.to_string()))?;
    let pin = req.body.pin.to_lowercase();
    // Refuses a hash that is not the genesis's and a genesis whose members or quorum are bad.
    replay(&genesis, &pin, &[], req.ctx.now)
        .map_err(|e| ApiError::bad_request("invalid_genesis", e.to_string()))?;
    let rec =
        state.store().write_governance(&req.ctx, GovernanceWrite::Genesis { pin, genesis }).await?;
    Ok(Json(view(&rec, req.ctx.now)?))
}

/// Propose a change. Only one is open at a time; it is appended to the log when the
/// members it needs have signed it (`POST /v1/governance/proposals/{seq}/signoffs`).
#[utoipa::path(post, path = "/v1/governance/proposals", tag = "governance", security(("token" = [])),
    params(("Idempotency-Key" = String, Header)), request_body = Propose,
    responses((status = 200, body = ProposalView), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub(crate) async fn propose(
    State(state): State<AppState>,
    req: Write<Propose>,
) -> Result<Json<ProposalView>, ApiError> {
    let change: Change = serde_json::from_value(req.body.change)
        .map_err(|e| ApiError::bad_request("invalid_change", e.to_string()))?;
    check_change(&change)?;
    let rec = state.store().governance().await?;
    let gov = state_of(&rec, req.ctx.now)?.ok_or_else(not_installed)?;
    if let Some(p) = &rec.proposal {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "proposal_open",
            format!("governance change {} is still open: sign it or withdraw it first", p.seq),
        ));
    }
    let entry = gov.propose(change, req.ctx.now);
    let rec = state.store().write_governance(&req.ctx, GovernanceWrite::Propose(entry)).await?;
    let v = view(&rec, req.ctx.now)?;
    v.proposal.ok_or_else(|| ApiError::internal("the proposal was not kept")).map(Json)
}

/// What can be refused before anyone signs.
fn check_change(change: &Change) -> Result<(), ApiError> {
    let bad = |m: String| ApiError::bad_request("invalid_change", m);
    match change {
        Change::SetPolicy { policy } => policy.validate().map_err(|e| bad(e.to_string())),
        Change::WhitelistAdd { scope, address, .. }
        | Change::WhitelistRemove { scope, address } => {
            use strongroom_governance::log::WhitelistScope;
            let chain = match scope {
                WhitelistScope::Internal { chain } | WhitelistScope::Customer { chain, .. } => {
                    chain
                }
            };
            let chain = strongroom_units::ChainId::parse(chain).map_err(|e| bad(e.to_string()))?;
            strongroom_units::Address::parse(&chain, address).map_err(|e| bad(e.to_string()))?;
            Ok(())
        }
        Change::SetPasskey { passkey, .. } => {
            strongroom_governance::webauthn::Passkey::parse(passkey).map(|_| ()).map_err(bad)
        }
        _ => Ok(()),
    }
}

fn not_installed() -> ApiError {
    ApiError::new(
        StatusCode::CONFLICT,
        "governance_not_installed",
        "no governance genesis is installed (POST /v1/governance/genesis)",
    )
}

fn open_proposal(rec: &GovernanceRecord, seq: u64) -> Result<Entry, ApiError> {
    rec.proposal.clone().filter(|p| p.seq == seq).ok_or_else(|| {
        ApiError::not_found("proposal_not_found", format!("no open governance proposal {seq}"))
    })
}

/// Add a member's signature. The server checks it against the member's key (so a wrong
/// one is refused at once) and appends the change to the log when the signatures are
/// enough; the signer nodes check all of it again.
#[utoipa::path(post, path = "/v1/governance/proposals/{seq}/signoffs", tag = "governance", security(("token" = [])),
    params(("seq" = u64, Path), ("Idempotency-Key" = String, Header)), request_body = AddSignoff,
    responses((status = 200, body = SignoffResult), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub(crate) async fn add_signoff(
    State(state): State<AppState>,
    seq: Result<Path<u64>, PathRejection>,
    req: Write<AddSignoff>,
) -> Result<Json<SignoffResult>, ApiError> {
    let seq =
        seq.map(|Path(s)| s).map_err(|e| ApiError::bad_request("invalid_id", e.body_text()))?;
    let now = req.ctx.now;
    let rec = state.store().governance().await?;
    let gov = state_of(&rec, now)?.ok_or_else(not_installed)?;
    let expected = open_proposal(&rec, seq)?;
    let b = req.body;
    let member = gov.members.get(&b.member).ok_or_else(|| {
        ApiError::bad_request("unknown_member", format!("{} is not a member", b.member))
    })?;
    // A staff account signs only as its own member, after signing in with a second factor.
    crate::accounts::staff_member(&state, &req.principal, Some(&member.id)).await?;
    let signoff = match (b.signature, b.passkey) {
        (Some(hex_sig), None) => {
            let sig: [u8; 64] =
                hex::decode(&hex_sig).ok().and_then(|b| b.try_into().ok()).ok_or_else(|| {
                    ApiError::bad_request("invalid_signature", "signature must be 64 bytes of hex")
                })?;
            Signoff::key(&member.id, &sig)
        }
        (None, Some(assertion)) => Signoff::passkey(&member.id, assertion),
        _ => {
            return Err(ApiError::bad_request(
                "invalid_signature",
                "give either a signature (the member's key) or a passkey assertion",
            ))
        }
    };
    let hash = expected.hash().map_err(invalid)?;
    strongroom_governance::log::check_signoff(&gov.members, &expected, &hash, &signoff).map_err(
        |why| {
            ApiError::bad_request(
                "invalid_signature",
                format!("not a signature by {} on proposal {seq}: {why}", member.id),
            )
        },
    )?;
    let mut entry = expected.clone();
    entry.signoffs.retain(|s| s.member != member.id);
    entry.signoffs.push(signoff);
    let (op, committed) = match missing(&rec, &entry, now) {
        None => (GovernanceWrite::Commit { expected, entry }, true),
        Some(_) => (GovernanceWrite::Update { expected, entry }, false),
    };
    let rec = state.store().write_governance(&req.ctx, op).await?;
    Ok(Json(SignoffResult { committed, governance: view(&rec, now)? }))
}

/// Withdraw the open proposal (its signatures are dropped with it).
#[utoipa::path(post, path = "/v1/governance/proposals/{seq}/withdraw", tag = "governance", security(("token" = [])),
    params(("seq" = u64, Path), ("Idempotency-Key" = String, Header)),
    request_body(content = NoBody, description = "Optional: no body, or `{}`"),
    responses((status = 200, body = GovernanceView), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
pub(crate) async fn withdraw_proposal(
    State(state): State<AppState>,
    seq: Result<Path<u64>, PathRejection>,
    req: Write<NoBody>,
) -> Result<Json<GovernanceView>, ApiError> {
    let seq =
        seq.map(|Path(s)| s).map_err(|e| ApiError::bad_request("invalid_id", e.body_text()))?;
    let rec = state.store().write_governance(&req.ctx, GovernanceWrite::Withdraw { seq }).await?;
    Ok(Json(view(&rec, req.ctx.now)?))
}

/// Why a withdrawal waits: the policy decision the signer nodes would reach now.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct PolicyStatus {
    /// `allow`, `wait` (for approvals) or `block`.
    pub outcome: String,
    pub rule: String,
    pub version: u64,
    pub approvals: usize,
    pub approvals_needed: usize,
    /// In words, with why an approval did not count.
    pub explanation: String,
}

/// The decision for a withdrawal still waiting to be signed (None: no governance, or past
/// signing). Velocity is estimated from stored withdrawals; the signer nodes count their own
/// and may still refuse.
/// Whether a credit without chain evidence may be made, and under which reference. Under
/// governance it must match a committed `ledger_credit` entry, whose number becomes its
/// reference (`governance:SEQ`), so it is credited once. By hand, under the caller's
/// reference, only where the runner allowed it ([`crate::HandCredits`]: tests, the dev stack).
pub(crate) async fn authorize_credit(
    state: &AppState,
    customer_id: uuid::Uuid,
    asset: &str,
    amount: strongroom_units::Amount,
    reference: &str,
    adjustment: Option<u64>,
) -> Result<String, ApiError> {
    let not_governed = |m: String| ApiError::new(StatusCode::FORBIDDEN, "credit_not_governed", m);
    let rec = state.store().governance().await?;
    let governed = state_of(&rec, state.env().now())?.is_some();
    let Some(seq) = adjustment else {
        let by_hand = match state.hand_credits() {
            crate::HandCredits::Never => false,
            crate::HandCredits::WithoutGovernance => !governed,
            crate::HandCredits::Always => true,
        };
        if by_hand {
            tracing::warn!(%customer_id, asset, %amount, reference,
                "INSECURE: crediting without chain evidence or a governance quorum (development)");
            return Ok(reference.to_owned());
        }
        return Err(not_governed(
            "a credit without chain evidence needs a ledger credit signed by the admin quorum \
             (`strongroom governance propose ledger-credit`); send its entry as `adjustment`"
                .into(),
        ));
    };
    let entry = rec.entries.iter().find(|e| e.seq == seq);
    let Some(Change::LedgerCredit { customer_id: c, asset: a, amount: m, reference: r }) =
        entry.map(|e| &e.change)
    else {
        return Err(not_governed(format!("governance entry {seq} is no committed ledger credit")));
    };
    if *c != customer_id.to_string() || a != asset || *m != amount || r != reference {
        return Err(ApiError::bad_request(
            "adjustment_mismatch",
            format!(
                "governance entry {seq} credits {m} {a} to {c} as {r:?}, not {amount} {asset} to {customer_id} as {reference:?}"
            ),
        ));
    }
    Ok(format!("governance:{seq}"))
}

/// Check the initiator's signed request against the intent the server planned for it and
/// the governance in force: the member, the signature, every field, and the customer. The
/// signer nodes check the same again; this refuses a bad one before anything is reserved.
/// The withdrawal rules as governance has them now: an asset's chain pays out from the key
/// its configured hot wallet was migrated to, if the quorum migrated it (ADR 0017). A log
/// that does not verify changes nothing here (the engine and the nodes refuse anyway).
pub(crate) async fn rules_now(
    state: &AppState,
    asset: &str,
) -> Result<strongroom_core::withdrawal::WithdrawalRules, ApiError> {
    let mut rules = state.rules().clone();
    let Ok(a) = state.registry().get(asset) else { return Ok(rules) };
    let Ok(configured) = rules.hot_wallet(a) else { return Ok(rules) };
    let rec = state.store().governance().await?;
    let Ok(Some(gov)) = state_of(&rec, state.env().now()) else { return Ok(rules) };
    let (current, _) =
        strongroom_governance::log::follow_migrations(&gov.migrations, configured.as_str())
            .map_err(invalid)?;
    rules
        .hot_wallets
        .insert(a.chain.clone(), strongroom_core::WalletId::parse(&current).map_err(invalid)?);
    Ok(rules)
}

pub(crate) async fn check_initiation(
    state: &AppState,
    initiation: &strongroom_governance::initiation::Initiation,
    intent: &strongroom_core::Intent,
    customer_id: uuid::Uuid,
) -> Result<(), ApiError> {
    let rec = state.store().governance().await?;
    let Some(gov) = state_of(&rec, state.env().now())? else {
        return Err(ApiError::bad_request(
            "initiation_not_governed",
            "an initiation is checked against the governance log, and none is installed",
        ));
    };
    let refused =
        |m: String| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "initiation_refused", m);
    initiation.verify(&gov, intent).map_err(|e| refused(e.to_string()))?;
    let customer = customer_id.to_string();
    if initiation.requested.customer_id.as_deref() != Some(customer.as_str()) {
        return Err(refused(format!(
            "{} signed a request for customer {}, not {customer}",
            initiation.initiator,
            initiation.requested.customer_id.as_deref().unwrap_or("none")
        )));
    }
    Ok(())
}

/// A withdrawal's destination as the governance whitelist names it.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct WhitelistMatch {
    pub label: String,
    /// `internal` (our own wallets) or `customer` (the customer's own whitelist).
    pub scope: String,
    /// When the entry's time-lock ended (or ends).
    pub usable_from_ms: i64,
}

/// The governance whitelist's entry for a withdrawal's destination, if it has one (internal,
/// or the withdrawal's customer's own).
pub(crate) async fn destination_whitelist(
    state: &AppState,
    w: &Withdrawal,
) -> Result<Option<WhitelistMatch>, ApiError> {
    use strongroom_governance::log::WhitelistScope;
    let rec = state.store().governance().await?;
    let Some(gov) = state_of(&rec, state.env().now())? else { return Ok(None) };
    let chain = w.intent.chain.as_str();
    let customer = w.customer_id.to_string();
    Ok(gov
        .whitelist
        .iter()
        .filter(|e| e.address.eq_ignore_ascii_case(w.intent.destination.as_str()))
        .find_map(|e| {
            let scope = match &e.scope {
                WhitelistScope::Internal { chain: c } if c == chain => "internal",
                WhitelistScope::Customer { customer_id, chain: c }
                    if c == chain && *customer_id == customer =>
                {
                    "customer"
                }
                _ => return None,
            };
            Some(WhitelistMatch {
                label: e.label.clone(),
                scope: scope.into(),
                usable_from_ms: e.usable_from.unix_ms(),
            })
        }))
}

pub(crate) async fn policy_status(
    state: &AppState,
    w: &Withdrawal,
) -> Result<Option<PolicyStatus>, ApiError> {
    if w.state != WithdrawalState::Reserved {
        return Ok(None);
    }
    use strongroom_store::gate::{gate, Gate, Movement};
    let m = Movement {
        id: w.id,
        intent: &w.intent,
        customer_id: Some(w.customer_id),
        own_destination: false,
    };
    let d = match gate(state.store().as_ref(), &m, state.env().now()).await? {
        Gate::Ungoverned => return Ok(None),
        Gate::Invalid(why) => return Err(invalid(why)),
        Gate::Decided { decision, .. } => decision,
    };
    let (outcome, have, need) = match &d.outcome {
        Outcome::Allow => ("allow", 0, 0),
        Outcome::Wait { have, need, .. } => ("wait", *have, *need),
        Outcome::Block(_) => ("block", 0, 0),
    };
    Ok(Some(PolicyStatus {
        outcome: outcome.into(),
        rule: d.rule.clone(),
        version: d.version,
        approvals: have,
        approvals_needed: need,
        explanation: d.explain(),
    }))
}
