//! Routes, request and response bodies, and the OpenAPI document built from the same route
//! table, so the document cannot drift from what is served.

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use strongroom_core::new_id;
use strongroom_core::withdrawal::{
    plan_withdrawal, Withdrawal, WithdrawalRequest, WithdrawalState,
};
use strongroom_store::{
    Balance, Customer, Deposit, Keyset, LedgerLine, NewCustomer, NewDeposit, Role, StoreError,
    WithdrawalFilter,
};
use strongroom_units::Amount;
use utoipa::{IntoParams, OpenApi, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::auth::{Principal, APPROVERS, OPERATORS, READERS, WRITERS};
use crate::error::{amount_error, ApiError, ErrorBody};
use crate::extract::{path_id, query, Write, WriteBody};
use crate::page::{self, Page, PageQuery};
use crate::AppState;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Strongroom API",
        description = "Custody ledger, deposits and withdrawals. All amounts are strings of integer base units (wei, satoshi) unless a field says `_decimal`. Every POST needs an `Idempotency-Key` header.",
        license(name = "Apache-2.0")
    ),
    modifiers(&BearerAuth),
    tags(
        (name = "system", description = "Health, metrics, this document"),
        (name = "customers", description = "Customer accounts, balances and ledger"),
        (name = "deposits", description = "Crediting deposits (operators only)"),
        (name = "withdrawals", description = "Withdrawal requests and their lifecycle"),
        (name = "risk", description = "Risk events and the review queue of paused withdrawals"),
        (name = "governance", description = "The governance log: members, quorum, policy, whitelists, freezes"),
        (name = "events", description = "Withdrawal, deposit, review and governance events, a page at a time; the same events go to the exchange's webhook (Standard Webhooks), and failed deliveries wait in the dead-letter view"),
        (name = "treasury", description = "Hot and cold balances, the cold share against its minimum, sweeps and refills"),
    )
)]
#[derive(Debug)]
pub struct ApiDoc;

struct BearerAuth;

/// How a token with a signing key signs its requests (`crate::clients`), for the document.
const REQUEST_SIGNING: &str = "Required, with the bearer token, when the token carries a \
request-signing key (token restrictions). Three headers: `X-Strongroom-Timestamp`: the \
client's clock in Unix milliseconds (refused more than five minutes from the server's); \
`X-Strongroom-Nonce`: 16 to 64 characters of A-Z a-z 0-9 - _, never reused by the token \
(every instance shares the record); `X-Strongroom-Signature`: `v1=` and the hex \
HMAC-SHA256, under the token's signing key, of the text `v1` LF METHOD LF PATH?QUERY LF \
TIMESTAMP LF NONCE LF and the hex SHA-256 of the body (of nothing for a request without \
one). A missing, stale, replayed or wrong signature is refused with 401 `unauthorized`.";

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{
            ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme,
        };
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "token",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("srt_<id>_<secret>")
                    .description(Some(
                        "An API token, or a customer's or staff member's session. A token with a \
                         request-signing key must also sign every request (the `signed` scheme).",
                    ))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "signed",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                crate::clients::SIGNATURE,
                REQUEST_SIGNING,
            ))),
        );
    }
}

/// Every route, with its OpenAPI operation.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(health))
        .routes(routes!(crate::ops::ready))
        .routes(routes!(crate::ops::summary))
        .routes(routes!(metrics))
        .routes(routes!(list_assets))
        .routes(routes!(create_customer, find_customers))
        .routes(routes!(crate::audit::records))
        .routes(routes!(crate::audit::verify))
        .routes(routes!(crate::events::list))
        .routes(routes!(crate::events::dead_letters))
        .routes(routes!(crate::events::redeliver))
        .routes(routes!(get_customer))
        .routes(routes!(get_balances))
        .routes(routes!(create_deposit_address))
        .routes(routes!(crate::accounts::set_contact))
        .routes(routes!(get_ledger))
        .routes(routes!(credit_deposit))
        .routes(routes!(list_withdrawals, create_withdrawal))
        .routes(routes!(get_withdrawal))
        .routes(routes!(cancel_withdrawal))
        .routes(routes!(deny_withdrawal))
        .routes(routes!(submit_approval))
        .routes(routes!(crate::risk::add_event, crate::risk::list_events))
        .routes(routes!(crate::risk::list_reviews))
        .routes(routes!(crate::risk::score))
        .routes(routes!(crate::risk::get_review))
        .routes(routes!(crate::risk::assign))
        .routes(routes!(crate::risk::note))
        .routes(routes!(crate::risk::release))
        .routes(routes!(crate::risk::reject))
        .routes(routes!(crate::governance::get_governance))
        .routes(routes!(crate::treasury::get_treasury))
        .routes(routes!(crate::refills::list_refills))
        .routes(routes!(crate::refills::get_refill))
        .routes(routes!(crate::refills::approve_refill))
        .routes(routes!(crate::refills::refill_bundle))
        .routes(routes!(crate::governance::install_genesis))
        .routes(routes!(crate::governance::propose))
        .routes(routes!(crate::governance::add_signoff))
        .routes(routes!(crate::governance::withdraw_proposal))
        .routes(routes!(crate::accounts::register))
        .routes(routes!(crate::accounts::login))
        .routes(routes!(crate::accounts::passkey_options))
        .routes(routes!(crate::accounts::passkey_login))
        .routes(routes!(crate::accounts::logout))
        .routes(routes!(crate::accounts::me))
        .routes(routes!(crate::accounts::change_password))
        .routes(routes!(crate::accounts::totp_start))
        .routes(routes!(crate::accounts::totp_confirm))
        .routes(routes!(crate::accounts::totp_disable))
        .routes(routes!(crate::accounts::passkey_register_options))
        .routes(routes!(crate::accounts::passkey_register, crate::accounts::passkeys))
        .routes(routes!(crate::accounts::devices))
        .routes(routes!(crate::accounts::revoke_device))
        .routes(routes!(crate::accounts::sessions))
        .routes(routes!(crate::accounts::revoke_session))
        .routes(routes!(crate::accounts::set_anti_phishing))
        .routes(routes!(crate::accounts::whitelist, crate::accounts::add_whitelist))
        .routes(routes!(crate::accounts::remove_whitelist))
        .routes(routes!(crate::accounts::whitelist_mode))
        .routes(routes!(me_withdrawal, my_withdrawals))
        .routes(routes!(crate::accounts::withdrawal_challenge))
        .routes(routes!(crate::accounts::passkey_governance_key))
        .routes(routes!(crate::accounts::approval_challenge))
}

// ---------- bodies ----------

/// How the deployment is, as `/v1/health` sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum HealthStatus {
    /// Every part answers.
    Ok,
    /// Serving, with a part down (a signer node gone while a quorum still answers).
    Degraded,
    /// A part this instance needs is down (`/v1/ready` answers 503).
    Failing,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct HealthView {
    pub status: HealthStatus,
    /// The components down or failing (`signers`, `chain:<id>`, `database`); the details
    /// are in `/v1/ready`.
    pub problems: Vec<String>,
    #[schema(example = "sqlite")]
    pub database: &'static str,
    pub version: &'static str,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AssetView {
    pub symbol: String,
    /// CAIP-2 chain id.
    pub chain: String,
    pub decimals: u8,
    pub contract: Option<String>,
    pub min_withdrawal: String,
    pub min_withdrawal_decimal: String,
}

#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateCustomer {
    /// The exchange's own id for this customer; unique.
    #[schema(example = "user-42")]
    pub external_id: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CustomerView {
    pub id: Uuid,
    pub external_id: String,
    pub created_at_ms: i64,
}

impl From<Customer> for CustomerView {
    fn from(c: Customer) -> Self {
        CustomerView { id: c.id, external_id: c.external_id, created_at_ms: c.created_at.unix_ms() }
    }
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct BalanceView {
    pub asset: String,
    /// Base units.
    pub available: String,
    /// Base units reserved by withdrawals in flight.
    pub pending: String,
    pub available_decimal: String,
    pub pending_decimal: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct LedgerLineView {
    pub entry_id: Uuid,
    pub kind: String,
    pub reference: String,
    pub account: String,
    pub asset: String,
    pub side: String,
    pub amount: String,
    pub balance_after: String,
    pub created_at_ms: i64,
}

#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreditDeposit {
    pub customer_id: Uuid,
    #[schema(example = "ETH")]
    pub asset: String,
    /// Decimal amount in the asset's units.
    #[schema(example = "1.5")]
    pub amount: String,
    /// Chain reference (transaction id and output); each is credited once per asset.
    #[schema(example = "0x5e1f…:0")]
    pub reference: String,
    /// The governance entry (its number) in which an admin quorum signed this very credit.
    /// Under governance a credit without chain evidence needs one; it is credited once.
    #[serde(default)]
    pub adjustment: Option<u64>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct DepositView {
    pub id: Uuid,
    pub customer_id: Uuid,
    pub asset: String,
    pub amount: String,
    pub reference: String,
    pub created_at_ms: i64,
}

impl From<Deposit> for DepositView {
    fn from(d: Deposit) -> Self {
        DepositView {
            id: d.id,
            customer_id: d.customer_id,
            asset: d.asset.to_string(),
            amount: d.amount.to_string(),
            reference: d.reference,
            created_at_ms: d.created_at.unix_ms(),
        }
    }
}

#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateWithdrawal {
    pub customer_id: Uuid,
    #[schema(example = "ETH")]
    pub asset: String,
    #[schema(example = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed")]
    pub destination: String,
    /// Decimal amount in the asset's units: "0.1" ETH is 10^17 wei.
    #[schema(example = "0.1")]
    pub amount: String,
    /// The customer's device the request came from (for the risk engine).
    #[serde(default)]
    pub device_id: Option<String>,
    /// The customer's IP address the request came from (for the risk engine).
    #[serde(default)]
    pub ip: Option<String>,
    /// The exchange backend's (or a staff operator's) signature over this request
    /// (`governance::initiation`: request id, chain, asset, contract, destination, amount in
    /// base units, customer id), by a member of the governance log with the operator's role.
    /// The withdrawal takes the request id as its id; the signer nodes check the intent
    /// against it and refuse anything edited after it was signed.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub initiation: Option<strongroom_governance::initiation::Initiation>,
    /// The customer's own signature over the same request (a passkey assertion whose
    /// challenge is its message; `POST /v1/me/withdrawals/challenge` gives one). The signer
    /// nodes require it once they have known the customer's passkey for the time-lock.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub customer_signature: Option<strongroom_governance::initiation::Initiation>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct WithdrawalView {
    pub id: Uuid,
    pub customer_id: Uuid,
    #[schema(example = "reserved")]
    pub state: String,
    pub asset: String,
    pub chain: String,
    pub source_wallet: String,
    pub destination: String,
    /// Base units.
    pub amount: String,
    pub amount_decimal: String,
    /// Most the network fee may be, in base units of the chain's fee asset.
    pub fee_cap: String,
    pub expires_at_ms: i64,
    /// Hex SHA-256 tagged hash of the canonical intent: what approvers sign.
    pub intent_hash: String,
    /// The canonical intent encoding (hex), so an approver's own tool can decode what it
    /// approves and hash it itself instead of trusting `intent_hash` and the fields above.
    pub intent: String,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
    /// The transaction on chain, once built (single-withdrawal reads only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub transaction: Option<TransactionView>,
    /// While it waits to be signed under governance: what the policy decides now, and why.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy: Option<crate::governance::PolicyStatus>,
    /// The risk engine's decision and its review, once assessed (single-withdrawal reads).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub risk: Option<crate::risk::ReviewView>,
    /// Until it is signed: the signer nodes' latest refusal, as the refusing node gave it
    /// (`node`, `reason` with its stable `code` from docs/adr/0010, `culprits`;
    /// single-withdrawal reads).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub signer_refusal: Option<strongroom_governance::refusal::Refusal>,
    /// The approvals submitted so far (single-withdrawal reads; not yet verified: the policy
    /// line says which count).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub approvals: Option<Vec<ApprovalView>>,
    /// Who denied it and why, if an approver did (single-withdrawal reads).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub denial: Option<DenialView>,
    /// The governance whitelist's entry for the destination, if it has one (single reads).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub destination_whitelist: Option<crate::governance::WhitelistMatch>,
}

/// An approver's denial.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct DenialView {
    pub by: String,
    pub reason: String,
    pub at_ms: i64,
}

/// A withdrawal's transaction.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct TransactionView {
    pub nonce: u64,
    /// Set once signed (before it is ever broadcast).
    pub txid: Option<String>,
    pub block_number: Option<u64>,
    pub block_hash: Option<String>,
    /// Base units of the chain's fee asset, once final.
    pub fee_paid: Option<String>,
}

impl From<&strongroom_store::ChainTx> for TransactionView {
    fn from(t: &strongroom_store::ChainTx) -> Self {
        TransactionView {
            nonce: t.nonce,
            txid: t.signed.as_ref().map(|s| s.txid.clone()),
            block_number: t.block.as_ref().map(|b| b.number),
            block_hash: t.block.as_ref().map(|b| b.hash.clone()),
            fee_paid: t.fee_paid.map(|f| f.to_string()),
        }
    }
}

impl From<&Withdrawal> for WithdrawalView {
    fn from(w: &Withdrawal) -> Self {
        let i = &w.intent;
        WithdrawalView {
            id: w.id,
            customer_id: w.customer_id,
            state: w.state.as_str().into(),
            asset: i.asset.symbol.to_string(),
            chain: i.chain.to_string(),
            source_wallet: i.source_wallet.as_str().into(),
            destination: i.destination.to_string(),
            amount: i.amount.to_string(),
            amount_decimal: i.amount.format_decimal(i.asset.decimals).unwrap_or_default(),
            fee_cap: i.fee_cap.to_string(),
            expires_at_ms: i.expires_at.unix_ms(),
            intent_hash: w.intent_hash.clone(),
            intent: i.encode().map(hex::encode).unwrap_or_default(),
            created_at_ms: w.created_at.unix_ms(),
            updated_at_ms: w.updated_at.unix_ms(),
            transaction: None,
            policy: None,
            risk: None,
            signer_refusal: None,
            approvals: None,
            denial: None,
            destination_whitelist: None,
        }
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListWithdrawalsQuery {
    pub customer_id: Option<Uuid>,
    /// Only withdrawals in this state.
    #[param(inline, value_type = Option<WithdrawalStateName>)]
    pub state: Option<String>,
    /// The `next_cursor` of the page before; from the newest when absent.
    pub after: Option<String>,
    /// 1 to 1000; default 100.
    pub limit: Option<u32>,
}

/// A withdrawal's state, as queries name it (the document's copy of
/// `core::withdrawal::WithdrawalState`; a test keeps the two the same).
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum WithdrawalStateName {
    Reserved,
    Built,
    Signed,
    Broadcast,
    Settled,
    Failed,
    Cancelled,
}

/// No fields.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EmptyBody {}

// ---------- helpers ----------

impl WriteBody for CreateCustomer {
    const ROLES: &'static [Role] = WRITERS;
}
impl WriteBody for RequestDepositAddress {
    const ROLES: &'static [Role] = WRITERS;
}
impl WriteBody for SubmitApproval {
    const ROLES: &'static [Role] = APPROVERS;
}
impl WriteBody for CreditDeposit {
    const ROLES: &'static [Role] = OPERATORS;
}
impl WriteBody for CreateWithdrawal {
    const ROLES: &'static [Role] = WRITERS;
}
impl WriteBody for DenyWithdrawal {
    const ROLES: &'static [Role] = APPROVERS;
}
impl WriteBody for EmptyBody {
    const ROLES: &'static [Role] = WRITERS;
}

fn balance_view(state: &AppState, b: Balance) -> BalanceView {
    let decimals = state.registry().get(b.asset.as_str()).map(|a| a.decimals).unwrap_or(0);
    let fmt = |a: Amount| a.format_decimal(decimals).unwrap_or_default();
    BalanceView {
        asset: b.asset.to_string(),
        available: b.available.to_string(),
        pending: b.pending.to_string(),
        available_decimal: fmt(b.available),
        pending_decimal: fmt(b.pending),
    }
}

// ---------- handlers ----------

/// Liveness and database reachability (readiness, with the chains and signer nodes, is
/// `/v1/ready`).
#[utoipa::path(get, path = "/v1/health", tag = "system",
    responses((status = 200, body = HealthView), (status = 503, body = ErrorBody)))]
async fn health(State(state): State<AppState>) -> Result<Json<HealthView>, ApiError> {
    state.store().ping().await.map_err(|e| ApiError::unavailable(e.to_string()))?;
    // Liveness stays 200 while the database answers; the status says what else is down
    // (components only: the details are in `/v1/ready` and `/metrics`).
    let checks = crate::ops::checks(&state).await;
    let failing: Vec<String> =
        checks.iter().filter(|c| !c.ok || c.degraded).map(|c| c.component.clone()).collect();
    let status = if checks.iter().any(|c| !c.ok) {
        HealthStatus::Failing
    } else if failing.is_empty() {
        HealthStatus::Ok
    } else {
        HealthStatus::Degraded
    };
    Ok(Json(HealthView {
        status,
        problems: failing,
        database: state.store().backend().name(),
        version: env!("CARGO_PKG_VERSION"),
    }))
}

/// Prometheus metrics (text format). Needs a token of any role.
#[utoipa::path(get, path = "/metrics", tag = "system", security(("token" = [])),
    responses((status = 200, content_type = "application/openmetrics-text", body = String), (status = 401, body = ErrorBody)))]
async fn metrics(
    State(state): State<AppState>,
    _p: Principal,
) -> ([(axum::http::HeaderName, &'static str); 1], String) {
    // The shared gauges (backlogs, queues, leases, chains, signers) are read now.
    let _ = crate::ops::observe(&state).await;
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics().render(),
    )
}

/// The assets this deployment handles.
#[utoipa::path(get, path = "/v1/assets", tag = "system", security(("token" = [])),
    responses((status = 200, body = Page<AssetView>), (status = 401, body = ErrorBody)))]
async fn list_assets(
    State(state): State<AppState>,
    p: Principal,
) -> Result<Json<Page<AssetView>>, ApiError> {
    p.require(READERS)?;
    let assets = state
        .registry()
        .iter()
        .map(|a| AssetView {
            symbol: a.symbol.to_string(),
            chain: a.chain.to_string(),
            decimals: a.decimals,
            contract: a.contract.as_ref().map(|c| c.to_string()),
            min_withdrawal: a.min_withdrawal.to_string(),
            min_withdrawal_decimal: a.min_withdrawal.format_decimal(a.decimals).unwrap_or_default(),
        })
        .collect();
    Ok(Json(Page::all(assets)))
}

/// Create a customer account.
#[utoipa::path(post, path = "/v1/customers", tag = "customers", security(("token" = [])),
    params(("Idempotency-Key" = String, Header, description = "Unique per request; a retry with the same key returns the first result")),
    request_body = CreateCustomer,
    responses((status = 201, body = CustomerView), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn create_customer(
    State(state): State<AppState>,
    req: Write<CreateCustomer>,
) -> Result<(StatusCode, Json<CustomerView>), ApiError> {
    let ext = req.body.external_id.trim();
    if ext.is_empty() || ext.len() > 128 || ext != req.body.external_id {
        return Err(ApiError::bad_request(
            "invalid_external_id",
            "external_id must be 1-128 characters without surrounding spaces",
        ));
    }
    let new = NewCustomer { id: new_id(state.env()), external_id: req.body.external_id };
    let c = state.store().create_customer(&req.ctx, Some(&req.idem), new).await?;
    Ok((StatusCode::CREATED, Json(c.into())))
}

/// Which asset a deposit address is for.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
pub struct RequestDepositAddress {
    #[schema(example = "ETH")]
    pub asset: String,
}

/// A customer's deposit address on a chain (one per chain: ETH and tokens share it).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct DepositAddressView {
    pub customer_id: Uuid,
    pub chain: String,
    pub address: String,
    /// The hot wallet whose key it derives from, and the BIP-32 path below that key.
    pub wallet: String,
    pub path: String,
    pub created_at_ms: i64,
}

/// The customer's deposit address for an asset's chain, made on first request. Transfers
/// into it are credited after the chain's confirmations.
#[utoipa::path(post, path = "/v1/customers/{id}/deposit-address", tag = "customers", security(("token" = [])),
    params(("id" = Uuid, Path), ("Idempotency-Key" = String, Header)),
    request_body = RequestDepositAddress,
    responses((status = 200, body = DepositAddressView), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 503, body = ErrorBody)))]
async fn create_deposit_address(
    State(state): State<AppState>,
    id: Result<Path<Uuid>, PathRejection>,
    req: Write<RequestDepositAddress>,
) -> Result<Json<DepositAddressView>, ApiError> {
    let id = path_id(id)?;
    let asset = state
        .registry()
        .get(&req.body.asset)
        .map_err(|e| ApiError::bad_request("unknown_asset", e.to_string()))?;
    state.store().get_customer(id).await?;
    let not_watched = |m: String| ApiError::new(StatusCode::CONFLICT, "chain_not_watched", m);
    let provider = state.deposit_addresses().ok_or_else(|| {
        not_watched(format!(
            "{} is on {}, and this server watches no chain",
            asset.symbol, asset.chain
        ))
    })?;
    let a = provider.deposit_address(id, asset).await.map_err(|e| match e {
        crate::DepositAddressError::ChainNotWatched { .. } => not_watched(e.to_string()),
        crate::DepositAddressError::Unavailable(detail) => ApiError::unavailable(detail),
    })?;
    Ok(Json(DepositAddressView {
        customer_id: a.customer_id,
        chain: a.chain.to_string(),
        address: a.address,
        wallet: a.wallet,
        path: format!("m/0/{}", a.path_index),
        created_at_ms: a.created_at.unix_ms(),
    }))
}

/// Get a customer.
#[utoipa::path(get, path = "/v1/customers/{id}", tag = "customers", security(("token" = [])),
    params(("id" = Uuid, Path)),
    responses((status = 200, body = CustomerView), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn get_customer(
    State(state): State<AppState>,
    p: Principal,
    id: Result<Path<Uuid>, PathRejection>,
) -> Result<Json<CustomerView>, ApiError> {
    p.require(READERS)?;
    Ok(Json(state.store().get_customer(path_id(id)?).await?.into()))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct CustomerQuery {
    /// The exchange's own id for the customer.
    pub external_id: String,
}

/// Find a customer by the exchange's own id: a page of none or one.
#[utoipa::path(get, path = "/v1/customers", tag = "customers", security(("token" = [])),
    params(CustomerQuery),
    responses((status = 200, body = Page<CustomerView>), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
async fn find_customers(
    State(state): State<AppState>,
    p: Principal,
    q: Result<Query<CustomerQuery>, QueryRejection>,
) -> Result<Json<Page<CustomerView>>, ApiError> {
    p.require(READERS)?;
    let Query(q) = q.map_err(|e| ApiError::bad_request("invalid_query", e.body_text()))?;
    let found = state.store().customer_by_external_id(&q.external_id).await?;
    Ok(Json(Page::all(found.into_iter().map(CustomerView::from).collect())))
}

/// A customer's balances per asset.
#[utoipa::path(get, path = "/v1/customers/{id}/balances", tag = "customers", security(("token" = [])),
    params(("id" = Uuid, Path)),
    responses((status = 200, body = Page<BalanceView>), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn get_balances(
    State(state): State<AppState>,
    p: Principal,
    id: Result<Path<Uuid>, PathRejection>,
) -> Result<Json<Page<BalanceView>>, ApiError> {
    p.require(READERS)?;
    let balances = state.store().balances(path_id(id)?).await?;
    Ok(Json(Page::all(balances.into_iter().map(|b| balance_view(&state, b)).collect())))
}

/// A customer's ledger postings, newest first, a page at a time.
#[utoipa::path(get, path = "/v1/customers/{id}/ledger", tag = "customers", security(("token" = [])),
    params(("id" = Uuid, Path), PageQuery),
    responses((status = 200, body = Page<LedgerLineView>), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn get_ledger(
    State(state): State<AppState>,
    p: Principal,
    id: Result<Path<Uuid>, PathRejection>,
    q: Result<Query<PageQuery>, QueryRejection>,
) -> Result<Json<Page<LedgerLineView>>, ApiError> {
    p.require(READERS)?;
    let id = path_id(id)?;
    let q = query(q)?;
    let limit = crate::extract::limit(q.limit)?;
    let after = page::after(q.after.as_deref())?;
    let lines: Vec<LedgerLine> =
        state.store().ledger_lines(id, after.as_ref(), page::read_size(limit)).await?;
    let (lines, next) = page::split(lines, limit, |l| Keyset {
        at_ms: l.created_at.unix_ms(),
        id: l.entry_id.to_string(),
        n: l.n,
    });
    Ok(Json(Page::new(
        lines
            .into_iter()
            .map(|l| LedgerLineView {
                entry_id: l.entry_id,
                kind: l.kind,
                reference: l.reference,
                account: l.account,
                asset: l.asset.to_string(),
                side: l.side,
                amount: l.amount.to_string(),
                balance_after: l.balance_after.to_string(),
                created_at_ms: l.created_at.unix_ms(),
            })
            .collect(),
        next,
    )))
}

/// Credit a customer without chain evidence (the deposit watcher credits what it sees on
/// chain). Under governance only a credit an admin quorum signed (`adjustment`: its entry);
/// without governance only where the server was started to allow it (development).
#[utoipa::path(post, path = "/v1/deposits", tag = "deposits", security(("token" = [])),
    params(("Idempotency-Key" = String, Header)),
    request_body = CreditDeposit,
    responses((status = 201, body = DepositView), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn credit_deposit(
    State(state): State<AppState>,
    req: Write<CreditDeposit>,
) -> Result<(StatusCode, Json<DepositView>), ApiError> {
    let asset = state
        .registry()
        .get(&req.body.asset)
        .map_err(|e| ApiError::bad_request("unknown_asset", e.to_string()))?;
    let amount = asset.parse_amount(&req.body.amount).map_err(|e| amount_error(&e))?;
    if amount.is_zero() {
        return Err(ApiError::bad_request("zero_amount", "amount must be above zero"));
    }
    let reference = req.body.reference.trim();
    if reference.is_empty() || reference.len() > 200 {
        return Err(ApiError::bad_request(
            "invalid_reference",
            "reference must be 1-200 characters",
        ));
    }
    let reference = crate::governance::authorize_credit(
        &state,
        req.body.customer_id,
        asset.symbol.as_str(),
        amount,
        reference,
        req.body.adjustment,
    )
    .await?;
    let env = state.env();
    let new = NewDeposit {
        id: new_id(env),
        entry_id: new_id(env),
        customer_id: req.body.customer_id,
        asset: asset.symbol.clone(),
        amount,
        reference,
    };
    let d = state.store().credit_deposit(&req.ctx, Some(&req.idem), new).await?;
    state
        .metrics()
        .deposits_credited
        .get_or_create(&crate::metrics::AssetLabels { asset: d.asset.to_string() })
        .inc();
    Ok((StatusCode::CREATED, Json(d.into())))
}

/// Request a withdrawal. Validates the amount and destination, builds the intent, and
/// reserves the funds (available -> pending) in the same transaction as the record.
#[utoipa::path(post, path = "/v1/withdrawals", tag = "withdrawals", security(("token" = [])),
    params(("Idempotency-Key" = String, Header)),
    request_body = CreateWithdrawal,
    responses((status = 201, body = WithdrawalView), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn create_withdrawal(
    State(state): State<AppState>,
    req: Write<CreateWithdrawal>,
) -> Result<(StatusCode, Json<WithdrawalView>), ApiError> {
    let w = place_withdrawal(&state, req).await?;
    Ok((StatusCode::CREATED, Json((&w).into())))
}

/// A signed-in customer's withdrawal request.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MyWithdrawal {
    #[schema(example = "ETH")]
    pub asset: String,
    pub destination: String,
    /// Decimal amount in the asset's units.
    #[schema(example = "0.1")]
    pub amount: String,
    /// The id the login returned for this device.
    #[serde(default)]
    pub device_id: Option<String>,
    /// The request signed with the customer's passkey (`POST /v1/me/withdrawals/challenge`
    /// gives the request and the challenge): the signer nodes check it themselves.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub signature: Option<strongroom_governance::initiation::Initiation>,
}

impl WriteBody for MyWithdrawal {
    const ROLES: &'static [Role] = &[];
    const CUSTOMERS: bool = true;
}

/// One of the signed-in customer's withdrawals, as they see it.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct MyWithdrawalView {
    pub id: Uuid,
    /// `reserved`, `built`, `signed`, `broadcast`, `settled`, `failed` or `cancelled`.
    pub state: String,
    /// In words, with why it waits or ended (a security review, a denial).
    pub status: String,
    pub asset: String,
    pub amount_decimal: String,
    pub destination: String,
    pub created_at_ms: i64,
    pub txid: Option<String>,
}

/// The signed-in customer's own withdrawals, newest first, a page at a time, each with where
/// it stands and why.
#[utoipa::path(get, path = "/v1/me/withdrawals", tag = "accounts", security(("token" = [])),
    params(PageQuery),
    responses((status = 200, body = Page<MyWithdrawalView>), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
async fn my_withdrawals(
    State(state): State<AppState>,
    crate::auth::Customer(p): crate::auth::Customer,
    q: Result<Query<PageQuery>, QueryRejection>,
) -> Result<Json<Page<MyWithdrawalView>>, ApiError> {
    let customer_id =
        p.customer.ok_or_else(|| ApiError::forbidden("only a signed-in customer may do this"))?;
    let q = query(q)?;
    let limit = crate::extract::limit(q.limit)?;
    let filter = WithdrawalFilter {
        customer_id: Some(customer_id),
        state: None,
        after: page::after(q.after.as_deref())?,
        limit: page::read_size(limit),
    };
    let (list, next) =
        page::split(state.store().list_withdrawals(&filter).await?, limit, withdrawal_key);
    let mut out = Vec::new();
    for w in list {
        let review = state.store().risk_review(w.id).await?.map(|r| r.state);
        let status = match w.state {
            WithdrawalState::Reserved if review == Some(strongroom_store::RiskState::Open) => {
                "held for a security review".to_owned()
            }
            WithdrawalState::Reserved => "waiting to be approved and signed".to_owned(),
            WithdrawalState::Built | WithdrawalState::Signed => "being signed and sent".to_owned(),
            WithdrawalState::Broadcast => "sent; waiting for confirmations".to_owned(),
            WithdrawalState::Settled => "paid".to_owned(),
            WithdrawalState::Failed => {
                "failed on chain; the amount is back in your balance".to_owned()
            }
            WithdrawalState::Cancelled => {
                if state.store().withdrawal_denial(w.id).await?.is_some() {
                    "cancelled: our approvers denied it".to_owned()
                } else if matches!(
                    review,
                    Some(
                        strongroom_store::RiskState::Rejected
                            | strongroom_store::RiskState::Blocked
                    )
                ) {
                    "cancelled after a security review".to_owned()
                } else {
                    "cancelled".to_owned()
                }
            }
        };
        let txid = state.store().chain_tx(w.id).await?.and_then(|t| t.signed.map(|s| s.txid));
        let i = &w.intent;
        out.push(MyWithdrawalView {
            id: w.id,
            state: w.state.as_str().into(),
            status,
            asset: i.asset.symbol.to_string(),
            amount_decimal: i.amount.format_decimal(i.asset.decimals).unwrap_or_default(),
            destination: i.destination.to_string(),
            created_at_ms: w.created_at.unix_ms(),
            txid,
        });
    }
    Ok(Json(Page::new(out, next)))
}

/// Request a withdrawal from the signed-in customer's own balance: the same checks as
/// `POST /v1/withdrawals`, with the customer's withdrawal lock and whitelist.
#[utoipa::path(post, path = "/v1/me/withdrawals", tag = "accounts", security(("token" = [])),
    params(("Idempotency-Key" = String, Header)),
    request_body = MyWithdrawal,
    responses((status = 201, body = WithdrawalView), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn me_withdrawal(
    State(state): State<AppState>,
    req: Write<MyWithdrawal>,
) -> Result<(StatusCode, Json<WithdrawalView>), ApiError> {
    let customer_id = req
        .principal
        .customer
        .ok_or_else(|| ApiError::forbidden("only a signed-in customer may do this"))?;
    let body = CreateWithdrawal {
        customer_id,
        asset: req.body.asset,
        destination: req.body.destination,
        amount: req.body.amount,
        device_id: req.body.device_id,
        ip: req.client_ip.map(|i| i.to_string()),
        initiation: None,
        customer_signature: req.body.signature,
    };
    let req = Write {
        body,
        idem: req.idem,
        ctx: req.ctx,
        principal: req.principal,
        client_ip: req.client_ip,
    };
    let w = place_withdrawal(&state, req).await?;
    Ok((StatusCode::CREATED, Json((&w).into())))
}

async fn place_withdrawal(
    state: &AppState,
    req: Write<CreateWithdrawal>,
) -> Result<strongroom_core::withdrawal::Withdrawal, ApiError> {
    let env = state.env();
    let request = WithdrawalRequest {
        customer_id: req.body.customer_id,
        asset: req.body.asset,
        destination: req.body.destination,
        amount: req.body.amount,
    };
    let signed = strongroom_store::Initiations {
        member: req.body.initiation.clone(),
        customer: req.body.customer_signature.clone(),
    };
    // A signed request names the withdrawal's id: one signed request, one withdrawal.
    let ids: Vec<Uuid> = signed
        .member
        .iter()
        .chain(signed.customer.iter())
        .map(|i| i.requested.request_id)
        .collect();
    if ids.windows(2).any(|w| w.first() != w.last()) {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "initiation_refused",
            "the member's and the customer's signed requests name different request ids",
        ));
    }
    let id = ids.first().copied().unwrap_or_else(|| new_id(env));
    let rules = crate::governance::rules_now(state, &request.asset).await?;
    let planned = plan_withdrawal(state.registry(), &rules, &request, id, new_id(env), env.now())?;
    let intent = &planned.withdrawal.intent;
    if let Some(i) = &signed.member {
        crate::governance::check_initiation(state, i, intent, request.customer_id).await?;
    }
    if let Some(c) = &signed.customer {
        crate::accounts::check_customer_signature(state, c, intent, request.customer_id).await?;
    }
    // Paying one of our own addresses would move nothing for the customer but a fee.
    let dest = &planned.withdrawal.intent.destination;
    let own_deposit =
        state.store().find_deposit_address(&planned.withdrawal.intent.chain, dest.as_str()).await?;
    let own_hot = state.deposit_addresses().is_some_and(|p| p.is_hot_wallet(dest));
    if own_deposit.is_some() || own_hot {
        return Err(ApiError::bad_request(
            "own_address",
            "the destination is one of this platform's own addresses (a deposit address or a hot wallet)",
        ));
    }
    if let Some(screen) = state.destination_screen() {
        let intent = &planned.withdrawal.intent;
        if let Some(why) =
            screen.screen(planned.withdrawal.customer_id, intent.chain.as_str(), dest.as_str())
        {
            return Err(ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "destination_listed", why));
        }
    }
    crate::accounts::check_withdrawal(
        state,
        planned.withdrawal.customer_id,
        planned.withdrawal.intent.chain.as_str(),
        dest.as_str(),
    )
    .await?;
    // The device and address it came from, for the risk engine (one that arrives without
    // them is treated as coming from an unknown device), written with the withdrawal.
    let (device_id, ip) = (req.body.device_id.as_deref(), req.body.ip.as_deref());
    let context = (device_id.is_some() || ip.is_some()).then(|| {
        let customer_id = planned.withdrawal.customer_id;
        let mut data = crate::risk::event_data(
            state.personal_data_key().map(|k| k.as_ref()),
            env,
            customer_id,
            device_id,
            ip,
        );
        data.insert("withdrawal_id".into(), planned.withdrawal.id.to_string().into());
        strongroom_store::RiskEvent {
            id: strongroom_store::RiskEvent::context_id(planned.withdrawal.id),
            customer_id,
            kind: "withdrawal_context".into(),
            at: env.now(),
            data: data.into(),
        }
    });
    let initiated = signed.member.is_some() || signed.customer.is_some();
    let records = strongroom_store::WithdrawalRecords { signed, context };
    // A second withdrawal from one signed request is refused (a retry with the same
    // idempotency key gets the first one back).
    let w = state
        .store()
        .request_withdrawal_with(&req.ctx, Some(&req.idem), planned, records)
        .await
        .map_err(|e| match e {
            StoreError::Constraint { ref table, unique: true }
                if initiated && table == "withdrawals" =>
            {
                ApiError::new(
                    StatusCode::CONFLICT,
                    "initiation_reused",
                    format!("request {id} was already made into a withdrawal"),
                )
            }
            other => other.into(),
        })?;
    state
        .metrics()
        .withdrawals_requested
        .get_or_create(&crate::metrics::AssetLabels { asset: w.intent.asset.symbol.to_string() })
        .inc();
    Ok(w)
}

/// List withdrawals, newest first, a page at a time.
#[utoipa::path(get, path = "/v1/withdrawals", tag = "withdrawals", security(("token" = [])),
    params(ListWithdrawalsQuery),
    responses((status = 200, body = Page<WithdrawalView>), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
async fn list_withdrawals(
    State(state): State<AppState>,
    p: Principal,
    q: Result<Query<ListWithdrawalsQuery>, QueryRejection>,
) -> Result<Json<Page<WithdrawalView>>, ApiError> {
    p.require(READERS)?;
    let q = query(q)?;
    let state_filter = match q.state.as_deref() {
        None => None,
        Some(s) => Some(WithdrawalState::parse(s).ok_or_else(|| {
            ApiError::bad_request("invalid_query", format!("unknown state {s:?}"))
        })?),
    };
    let limit = crate::extract::limit(q.limit)?;
    let filter = WithdrawalFilter {
        customer_id: q.customer_id,
        state: state_filter,
        after: page::after(q.after.as_deref())?,
        limit: page::read_size(limit),
    };
    let (list, next) =
        page::split(state.store().list_withdrawals(&filter).await?, limit, withdrawal_key);
    Ok(Json(Page::new(list.iter().map(WithdrawalView::from).collect(), next)))
}

/// Where a list of withdrawals (newest first) goes on after `w`.
fn withdrawal_key(w: &Withdrawal) -> Keyset {
    Keyset { at_ms: w.created_at.unix_ms(), id: w.id.to_string(), n: 0 }
}

/// Get a withdrawal.
#[utoipa::path(get, path = "/v1/withdrawals/{id}", tag = "withdrawals", security(("token" = [])),
    params(("id" = Uuid, Path)),
    responses((status = 200, body = WithdrawalView), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn get_withdrawal(
    State(state): State<AppState>,
    p: Principal,
    id: Result<Path<Uuid>, PathRejection>,
) -> Result<Json<WithdrawalView>, ApiError> {
    p.require(READERS)?;
    let id = path_id(id)?;
    let w = state.store().get_withdrawal(id).await?;
    let mut view: WithdrawalView = (&w).into();
    view.transaction = state.store().chain_tx(id).await?.as_ref().map(TransactionView::from);
    view.policy = crate::governance::policy_status(&state, &w).await?;
    view.risk = state.store().risk_review(id).await?.map(crate::risk::ReviewView::from);
    if matches!(w.state, WithdrawalState::Reserved | WithdrawalState::Built) {
        view.signer_refusal = state.store().signer_refusal(id).await?;
    }
    view.approvals =
        Some(state.store().approvals(id).await?.into_iter().map(ApprovalView::from).collect());
    view.destination_whitelist = crate::governance::destination_whitelist(&state, &w).await?;
    view.denial = state.store().withdrawal_denial(id).await?.map(|d| DenialView {
        by: d.by,
        reason: d.reason,
        at_ms: d.at.unix_ms(),
    });
    Ok(Json(view))
}

/// An approver's signed approval of a withdrawal, made on the approver's own device.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
pub struct SubmitApproval {
    /// The approver's member id in the governance log.
    pub approver: String,
    /// The withdrawal's `intent_hash`, as signed.
    pub intent_hash: String,
    pub policy_version: u64,
    pub expires_at_ms: i64,
    /// Hex Ed25519 signature over the approval message (see `governance::approval`); empty
    /// or absent for a passkey approval.
    #[serde(default)]
    pub signature: String,
    /// A passkey assertion whose challenge is the approval message, instead of `signature`
    /// (`GET /v1/withdrawals/{id}/approval-challenge` gives the options).
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub webauthn: Option<strongroom_governance::webauthn::Assertion>,
}

/// An approval as kept (not yet verified: the engine and the signer nodes verify).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ApprovalView {
    pub approver: String,
    pub policy_version: u64,
    pub expires_at_ms: i64,
}

impl From<strongroom_governance::approval::Approval> for ApprovalView {
    fn from(a: strongroom_governance::approval::Approval) -> Self {
        ApprovalView {
            approver: a.approver,
            policy_version: a.policy_version,
            expires_at_ms: a.expires_at.unix_ms(),
        }
    }
}

/// Submit an approval. The server checks its form and that it names this withdrawal's
/// intent; whether it counts (a member, the right role, not the initiator, a valid
/// signature) is decided by the engine and, again, by every signer node.
#[utoipa::path(post, path = "/v1/withdrawals/{id}/approvals", tag = "withdrawals", security(("token" = [])),
    params(("id" = Uuid, Path), ("Idempotency-Key" = String, Header)),
    request_body = SubmitApproval,
    responses((status = 200, body = Vec<ApprovalView>), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn submit_approval(
    State(state): State<AppState>,
    id: Result<Path<Uuid>, PathRejection>,
    req: Write<SubmitApproval>,
) -> Result<Json<Vec<ApprovalView>>, ApiError> {
    let id = path_id(id)?;
    let w = state.store().get_withdrawal(id).await?;
    let approval = checked_approval(&state, &req.principal, req.body, &w.intent_hash).await?;
    let all = state.store().add_approval(&req.ctx, id, approval).await?;
    Ok(Json(all.into_iter().map(ApprovalView::from).collect()))
}

/// A submitted approval of the intent `intent_hash` (a withdrawal's or a refill's), checked
/// for form: a member id, one kind of signature, not expired, submitted by the approver
/// themselves when staff. Whether it counts is decided by whoever acts on it (the engine,
/// every signer node, the offline signers), against the governance log.
pub(crate) async fn checked_approval(
    state: &AppState,
    principal: &Principal,
    b: SubmitApproval,
    intent_hash: &str,
) -> Result<strongroom_governance::approval::Approval, ApiError> {
    let valid_id = !b.approver.is_empty()
        && b.approver.len() <= 64
        && b.approver.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_');
    if !valid_id {
        return Err(ApiError::bad_request(
            "invalid_approver",
            "approver must be 1-64 letters, digits, - or _",
        ));
    }
    let ed25519_ok = b.signature.len() == 128 && hex::decode(&b.signature).is_ok();
    match (&b.webauthn, ed25519_ok) {
        (None, false) => {
            return Err(ApiError::bad_request(
                "invalid_signature",
                "signature must be 64 bytes of hex (or send a passkey assertion as webauthn)",
            ))
        }
        (Some(_), _) if !b.signature.is_empty() => {
            return Err(ApiError::bad_request(
                "invalid_signature",
                "send either an Ed25519 signature or a passkey assertion, not both",
            ))
        }
        _ => {}
    }
    // A staff member approves only as themselves, and only after signing in with 2FA.
    crate::accounts::staff_member(state, principal, Some(&b.approver)).await?;
    if b.expires_at_ms <= state.env().now().unix_ms() {
        return Err(ApiError::bad_request("approval_expired", "the approval has expired"));
    }
    if b.intent_hash != intent_hash {
        return Err(ApiError::bad_request(
            "approval_mismatch",
            "the approval is for another intent than this one's",
        ));
    }
    Ok(strongroom_governance::approval::Approval {
        approver: b.approver,
        intent_hash: b.intent_hash,
        policy_version: b.policy_version,
        expires_at: strongroom_core::Timestamp::from_unix_ms(b.expires_at_ms),
        signature: b.signature.to_lowercase(),
        webauthn: b.webauthn,
    })
}

/// Why an approver denies a withdrawal.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DenyWithdrawal {
    /// 1 to 500 characters, kept with the withdrawal and in the audit log.
    pub reason: String,
}

/// Deny a withdrawal waiting for approvals: it is cancelled and its funds released, with who
/// denied it and why, in one transaction. One denial ends the request for everyone; once
/// built, a withdrawal only goes forward (`invalid_transition`). A staff approver denies as
/// their governance member, signed in with a second factor.
#[utoipa::path(post, path = "/v1/withdrawals/{id}/deny", tag = "withdrawals", security(("token" = [])),
    params(("id" = Uuid, Path), ("Idempotency-Key" = String, Header)),
    request_body = DenyWithdrawal,
    responses((status = 200, body = WithdrawalView), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn deny_withdrawal(
    State(state): State<AppState>,
    id: Result<Path<Uuid>, PathRejection>,
    req: Write<DenyWithdrawal>,
) -> Result<Json<WithdrawalView>, ApiError> {
    let id = path_id(id)?;
    let reason = req.body.reason.trim().to_owned();
    if reason.is_empty() || reason.chars().count() > 500 || reason.chars().any(char::is_control) {
        return Err(ApiError::bad_request(
            "invalid_reason",
            "the reason is 1 to 500 printable characters",
        ));
    }
    let by = match crate::accounts::staff_member(&state, &req.principal, None).await? {
        Some(member) => format!("{member} ({})", req.ctx.actor),
        None => req.ctx.actor.clone(),
    };
    let denial = strongroom_store::Denial { by, reason, at: state.env().now() };
    let w = state
        .store()
        .deny_withdrawal(&req.ctx, Some(&req.idem), id, denial, new_id(state.env()))
        .await?;
    Ok(Json((&w).into()))
}

/// Cancel a reserved withdrawal: its funds return to available.
#[utoipa::path(post, path = "/v1/withdrawals/{id}/cancel", tag = "withdrawals", security(("token" = [])),
    params(("id" = Uuid, Path), ("Idempotency-Key" = String, Header)),
    request_body(content = EmptyBody, description = "Optional: no body, or `{}`"),
    responses((status = 200, body = WithdrawalView), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn cancel_withdrawal(
    State(state): State<AppState>,
    id: Result<Path<Uuid>, PathRejection>,
    req: Write<EmptyBody>,
) -> Result<Json<WithdrawalView>, ApiError> {
    let id = path_id(id)?;
    let w = state
        .store()
        .transition_withdrawal(
            &req.ctx,
            Some(&req.idem),
            id,
            WithdrawalState::Cancelled,
            new_id(state.env()),
        )
        .await?;
    Ok(Json((&w).into()))
}

/// What every operation can answer besides its own responses, and the exact rules of the
/// inputs every route shares, written into the generated document after the routes are
/// collected (so a new route gets them too): 400 for any refused input (a malformed path id,
/// query or body, a bad idempotency key), 401/403 where a token is needed, 404 where the path
/// names something, 413/415 where a body is read; the `Idempotency-Key` header's characters
/// and length; every `limit` from 1 to 1000.
pub(crate) fn document_shared_rules(doc: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::path::ParameterIn;
    use utoipa::openapi::schema::{ObjectBuilder, Type};
    use utoipa::openapi::{ContentBuilder, Ref, RefOr, ResponseBuilder};
    let error = |description: &str| {
        RefOr::T(
            ResponseBuilder::new()
                .description(description)
                .content(
                    "application/json",
                    ContentBuilder::new().schema(Some(Ref::from_schema_name("ErrorBody"))).build(),
                )
                .build(),
        )
    };
    for (path, item) in doc.paths.paths.iter_mut() {
        let ops = [
            item.get.as_mut(),
            item.post.as_mut(),
            item.put.as_mut(),
            item.delete.as_mut(),
            item.patch.as_mut(),
        ];
        for op in ops.into_iter().flatten() {
            let mut add = |code: &str, description: &str| {
                op.responses.responses.entry(code.into()).or_insert_with(|| error(description));
            };
            add("400", "Refused input (the code says which rule)");
            if op.security.is_some() {
                add("401", "No valid token or session");
                add("403", "The token's role or restrictions do not allow this");
            }
            if path.contains('{') {
                add("404", "Nothing with that id");
            }
            if op.request_body.is_some() {
                add("413", "Body above 64 KiB");
                add("415", "Content-Type is not application/json");
            }
            for p in op.parameters.iter_mut().flatten() {
                if p.name == "Idempotency-Key" && p.parameter_in == ParameterIn::Header {
                    p.schema = Some(RefOr::T(
                        ObjectBuilder::new()
                            .schema_type(Type::String)
                            .min_length(Some(1))
                            .max_length(Some(strongroom_store::MAX_IDEMPOTENCY_KEY_LEN))
                            .pattern(Some("^[!-~]+$"))
                            .build()
                            .into(),
                    ));
                }
                if p.name == "limit" && p.parameter_in == ParameterIn::Query {
                    p.schema = Some(RefOr::T(
                        ObjectBuilder::new()
                            .schema_type(Type::Integer)
                            .format(Some(utoipa::openapi::SchemaFormat::KnownFormat(
                                utoipa::openapi::KnownFormat::Int32,
                            )))
                            .minimum(Some(1))
                            .maximum(Some(1000))
                            .build()
                            .into(),
                    ));
                }
            }
        }
    }
}

#[cfg(test)]
mod document_tests {
    use super::*;

    /// The document's state names are the ones the query parser takes, all of them.
    #[test]
    fn documented_state_names_are_the_domains() {
        use WithdrawalStateName as N;
        let names =
            [N::Reserved, N::Built, N::Signed, N::Broadcast, N::Settled, N::Failed, N::Cancelled];
        let texts: Vec<String> = names
            .iter()
            .map(|n| serde_json::to_value(n).ok().and_then(|v| v.as_str().map(str::to_owned)))
            .map(Option::unwrap_or_default)
            .collect();
        for t in &texts {
            assert!(WithdrawalState::parse(t).is_some(), "{t}");
        }
        let all = [
            WithdrawalState::Reserved,
            WithdrawalState::Built,
            WithdrawalState::Signed,
            WithdrawalState::Broadcast,
            WithdrawalState::Settled,
            WithdrawalState::Failed,
            WithdrawalState::Cancelled,
        ];
        for s in all {
            assert!(texts.iter().any(|t| t == s.as_str()), "{} not documented", s.as_str());
        }
    }
}
