//! `/v1/treasury/refills`: refills of a hot wallet from cold storage that the server prepares
//! for the offline signers. The treasury asks for one when a Bitcoin hot wallet falls below
//! its low watermark (a cold-tier intent from the cold multisig to the hot wallet); approvers
//! send their signed approvals here; once governance allows the movement the runtime makes
//! the signing bundle, which key holders fetch here and sign offline (`strongroom-cold sign`).

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use strongroom_store::{Keyset, Refill, RefillChange, RefillState};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::api::{checked_approval, ApprovalView, SubmitApproval};
use crate::auth::{Principal, READERS};
use crate::error::{ApiError, ErrorBody};
use crate::extract::{path_id, query, Write};
use crate::page::{self, Page};
use crate::AppState;

/// A refill's state, as the API names it (the document's copy of the store's
/// `RefillState`; a test keeps the two the same).
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RefillStateName {
    AwaitingApprovals,
    Ready,
    Done,
    Expired,
}

/// A refill of a hot wallet from cold storage.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct RefillView {
    pub id: Uuid,
    pub chain: String,
    pub asset: String,
    /// The cold wallet it comes from (as the key holders installed it).
    pub from_wallet: String,
    /// The hot wallet's address it goes to.
    pub to: String,
    /// Base units.
    pub amount: String,
    pub amount_decimal: String,
    /// Base units: the most the network fee may be.
    pub fee_cap: String,
    pub expires_at_ms: i64,
    /// Hex of the canonical intent (`Intent::encode`), what `strongroom cold refill approve`
    /// shows and approvers sign the hash of.
    pub intent: String,
    pub intent_hash: String,
    #[schema(value_type = RefillStateName)]
    pub state: String,
    pub approvals: Vec<ApprovalView>,
    /// Why there is no bundle yet (the governance gate's explanation, or the cold wallet's
    /// coins falling short).
    pub waiting_for: Option<String>,
    /// Whether `GET /v1/treasury/refills/{id}/bundle` has the signing bundle.
    pub bundle_ready: bool,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
}

impl From<&Refill> for RefillView {
    fn from(r: &Refill) -> Self {
        let i = &r.intent;
        RefillView {
            id: r.id,
            chain: i.chain.as_str().to_owned(),
            asset: i.asset.symbol.to_string(),
            from_wallet: i.source_wallet.as_str().to_owned(),
            to: i.destination.as_str().to_owned(),
            amount: i.amount.to_string(),
            amount_decimal: i.amount.format_decimal(i.asset.decimals).unwrap_or_default(),
            fee_cap: i.fee_cap.to_string(),
            expires_at_ms: i.expires_at.unix_ms(),
            intent: i.encode().map(hex::encode).unwrap_or_default(),
            intent_hash: r.intent_hash.clone(),
            state: r.state.as_str().to_owned(),
            approvals: r.approvals.iter().cloned().map(ApprovalView::from).collect(),
            waiting_for: r.waiting_for.clone(),
            bundle_ready: r.bundle.is_some(),
            created_at_ms: r.created_at.unix_ms(),
            updated_at_ms: r.updated_at.unix_ms(),
        }
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListRefillsQuery {
    /// Only refills still asking (awaiting approvals, or ready to sign).
    #[serde(default)]
    pub open: bool,
    /// The `next_cursor` of the page before; from the newest when absent.
    pub after: Option<String>,
    /// 1 to 1000; default 100.
    pub limit: Option<u32>,
}

fn refill_key(r: &Refill) -> Keyset {
    Keyset { at_ms: r.created_at.unix_ms(), id: r.id.to_string(), n: 0 }
}

/// Refills of hot wallets from cold storage, newest first.
#[utoipa::path(get, path = "/v1/treasury/refills", tag = "treasury", security(("token" = [])),
    params(ListRefillsQuery),
    responses((status = 200, body = Page<RefillView>), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody)))]
pub(crate) async fn list_refills(
    State(state): State<AppState>,
    p: Principal,
    q: Result<Query<ListRefillsQuery>, QueryRejection>,
) -> Result<Json<Page<RefillView>>, ApiError> {
    p.require(READERS)?;
    let q = query(q)?;
    let limit = crate::extract::limit(q.limit)?;
    let after = page::after(q.after.as_deref())?;
    let rows = state.store().list_refills(q.open, after.as_ref(), page::read_size(limit)).await?;
    let (list, next) = page::split(rows, limit, refill_key);
    Ok(Json(Page::new(list.iter().map(RefillView::from).collect(), next)))
}

/// Get a refill.
#[utoipa::path(get, path = "/v1/treasury/refills/{id}", tag = "treasury", security(("token" = [])),
    params(("id" = Uuid, Path)),
    responses((status = 200, body = RefillView), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn get_refill(
    State(state): State<AppState>,
    p: Principal,
    id: Result<Path<Uuid>, PathRejection>,
) -> Result<Json<RefillView>, ApiError> {
    p.require(READERS)?;
    let id = path_id(id)?;
    Ok(Json((&state.store().get_refill(id).await?).into()))
}

/// Submit an approval of a refill's intent (as `strongroom cold refill approve` does). The
/// server checks its form and that it names this refill's intent; whether it counts is
/// decided by the governance gate before a bundle is made, and again by every key holder's
/// offline signer.
#[utoipa::path(post, path = "/v1/treasury/refills/{id}/approvals", tag = "treasury", security(("token" = [])),
    params(("id" = Uuid, Path), ("Idempotency-Key" = String, Header)),
    request_body = SubmitApproval,
    responses((status = 200, body = RefillView), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(crate) async fn approve_refill(
    State(state): State<AppState>,
    id: Result<Path<Uuid>, PathRejection>,
    req: Write<SubmitApproval>,
) -> Result<Json<RefillView>, ApiError> {
    let id = path_id(id)?;
    let refill = state.store().get_refill(id).await?;
    let approval = checked_approval(&state, &req.principal, req.body, &refill.intent_hash).await?;
    let r = state.store().update_refill(&req.ctx, id, RefillChange::Approval(approval)).await?;
    Ok(Json((&r).into()))
}

/// A refill's signing bundle (the `strongroom-cold` JSON: intent, unsigned PSBT, approvals,
/// governance log), for the key holders to sign offline. `refill_not_ready` until governance
/// allows the movement and the bundle is made.
#[utoipa::path(get, path = "/v1/treasury/refills/{id}/bundle", tag = "treasury", security(("token" = [])),
    params(("id" = Uuid, Path)),
    responses((status = 200, description = "The signing bundle", body = Object), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody)))]
pub(crate) async fn refill_bundle(
    State(state): State<AppState>,
    p: Principal,
    id: Result<Path<Uuid>, PathRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    p.require(READERS)?;
    let id = path_id(id)?;
    let r = state.store().get_refill(id).await?;
    match (&r.bundle, r.state) {
        (Some(bundle), RefillState::Ready) => serde_json::from_str(bundle)
            .map(Json)
            .map_err(|e| ApiError::internal(format!("stored bundle: {e}"))),
        _ => Err(ApiError::new(
            StatusCode::CONFLICT,
            "refill_not_ready",
            match &r.waiting_for {
                Some(why) if r.state == RefillState::AwaitingApprovals => {
                    format!("no bundle yet: {why}")
                }
                _ => format!("the refill is {}: no bundle to sign", r.state.as_str()),
            },
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The document's state names are the store's.
    #[test]
    fn state_names_match_the_store() {
        let names: Vec<String> = [
            RefillStateName::AwaitingApprovals,
            RefillStateName::Ready,
            RefillStateName::Done,
            RefillStateName::Expired,
        ]
        .iter()
        .map(|n| serde_json::to_value(n).unwrap().as_str().unwrap().to_owned())
        .collect();
        let store: Vec<&str> = RefillState::ALL.iter().map(|s| s.as_str()).collect();
        assert_eq!(names, store);
    }
}
