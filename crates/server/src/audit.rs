//! The audit log for auditors and operators: its records, and `verify` (the same check as
//! `strongroom audit verify`), saying where the chain breaks and which rows differ from
//! their last audited state.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use strongroom_store::verify::MismatchKind;

use crate::auth::{Principal, READERS};
use crate::error::ApiError;
use crate::page::Page;
use crate::AppState;

/// One audit record.
#[derive(Debug, Serialize, ToSchema)]
pub struct AuditRecordView {
    pub seq: u64,
    pub at_ms: i64,
    pub actor: String,
    pub action: String,
    pub subject: String,
    /// Extra facts (JSON text).
    pub detail: String,
    pub leaf_hash: String,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    /// Records after this sequence number (0: from the first); the `next_cursor` of the page
    /// before is the last one it listed.
    #[param(maximum = 9_223_372_036_854_775_807_u64)]
    pub after: Option<u64>,
    /// 1 to 1000; default 100.
    pub limit: Option<u32>,
}

/// Audit records in order, after `after`, a page at a time.
#[utoipa::path(get, path = "/v1/audit", tag = "audit", security(("token" = [])), params(AuditQuery),
    responses((status = 200, body = Page<AuditRecordView>), (status = 400, body = crate::error::ErrorBody), (status = 401, body = crate::error::ErrorBody), (status = 403, body = crate::error::ErrorBody)))]
pub(crate) async fn records(
    State(state): State<AppState>,
    p: Principal,
    q: Result<Query<AuditQuery>, QueryRejection>,
) -> Result<Json<Page<AuditRecordView>>, ApiError> {
    p.require(READERS)?;
    let Query(q) = q.map_err(|e| ApiError::bad_request("invalid_query", e.body_text()))?;
    let limit = crate::extract::limit(q.limit)?;
    let after = q.after.unwrap_or(0);
    if i64::try_from(after).is_err() {
        return Err(ApiError::bad_request("invalid_query", "after must be at most 2^63 - 1"));
    }
    let mut page = state.store().audit_page(after, limit.saturating_add(1)).await?;
    let more = page.len() > limit as usize;
    page.truncate(limit as usize);
    let next = page.last().filter(|_| more).map(|r| r.record.seq.to_string());
    Ok(Json(Page::new(
        page.into_iter()
            .map(|r| AuditRecordView {
                seq: r.record.seq,
                at_ms: r.record.at_ms,
                actor: r.record.actor,
                action: r.record.action,
                subject: r.record.subject,
                detail: r.record.detail,
                leaf_hash: r.leaf_hash.to_hex(),
            })
            .collect(),
        next,
    )))
}

/// A row that differs from its last audited state.
#[derive(Debug, Serialize, ToSchema)]
pub struct MismatchView {
    pub entity: String,
    /// `edited`, `not_audited`, `missing` or `rewritten before record N`.
    pub kind: String,
}

/// What `verify` found.
#[derive(Debug, Serialize, ToSchema)]
pub struct VerifyView {
    pub intact: bool,
    /// Records that verified before the first break (all of them when there is none).
    pub records: u64,
    pub head: String,
    /// Where the hash chain breaks, and how.
    pub chain_break: Option<String>,
    pub chain_break_at: Option<u64>,
    pub mismatch_count: usize,
    pub mismatches: Vec<MismatchView>,
}

/// Verify the audit log: the hash chain, and every row against its last audited state.
#[utoipa::path(get, path = "/v1/audit/verify", tag = "audit", security(("token" = [])),
    responses((status = 200, body = VerifyView), (status = 401, body = crate::error::ErrorBody), (status = 403, body = crate::error::ErrorBody)))]
pub(crate) async fn verify(
    State(state): State<AppState>,
    p: Principal,
) -> Result<Json<VerifyView>, ApiError> {
    p.require(READERS)?;
    let r = strongroom_store::verify_audit(state.store().as_ref()).await?;
    Ok(Json(VerifyView {
        intact: r.is_intact(),
        records: r.records,
        head: r.head.to_hex(),
        chain_break_at: r.chain_break.as_ref().map(|b| b.seq()),
        chain_break: r.chain_break.as_ref().map(ToString::to_string),
        mismatch_count: r.mismatch_count,
        mismatches: r
            .mismatches
            .iter()
            .map(|m| MismatchView {
                entity: m.entity.clone(),
                kind: match m.kind {
                    MismatchKind::Edited => "edited".into(),
                    MismatchKind::NotAudited => "not_audited".into(),
                    MismatchKind::Missing => "missing".into(),
                    MismatchKind::Rewritten { seq } => format!("rewritten before record {seq}"),
                },
            })
            .collect(),
    }))
}
