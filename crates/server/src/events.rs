//! Events for the exchange's systems: withdrawal, deposit, risk-review and governance state
//! changes, read from the audit log (so an event exists exactly when its change committed,
//! and an event's id is its audit record's place: `evt_<seq>`, the same on every instance,
//! on every read and in every webhook delivery). Read them a page at a time with
//! `GET /v1/events`; the runtime delivers the same events as Standard Webhooks from the
//! outbox, and a delivery that keeps failing waits in the dead-letter view
//! (`GET /v1/events/dead-letters`) until an operator sends it again.

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::Json;
use serde::{Deserialize, Serialize};
use strongroom_store::{Role, StoredAuditRecord};
use utoipa::{IntoParams, ToSchema};

use crate::auth::{Principal, OPERATORS, READERS};
use crate::error::{ApiError, ErrorBody};
use crate::extract::{query, Write, WriteBody};
use crate::AppState;

/// The outbox channel that carries events to the exchange's webhook.
pub const CHANNEL: &str = "events";

/// How many audit records one read looks at, at most (a page may hold fewer events: its
/// cursor still moves past every record looked at).
pub const SCAN: u32 = 5_000;

/// The kinds of thing events are about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Family {
    /// A withdrawal's state, its transaction, approvals, denials and signer refusals.
    Withdrawal,
    /// A deposit credited, reversed, dropped, or held after a reorganisation.
    Deposit,
    /// A risk review opened, assigned, noted, released or rejected.
    Review,
    /// The governance log: an entry committed, a proposal or signature, a push to the nodes.
    Governance,
}

impl Family {
    pub const ALL: [Family; 4] =
        [Family::Withdrawal, Family::Deposit, Family::Review, Family::Governance];

    pub fn as_str(self) -> &'static str {
        match self {
            Family::Withdrawal => "withdrawal",
            Family::Deposit => "deposit",
            Family::Review => "review",
            Family::Governance => "governance",
        }
    }

    pub fn parse(s: &str) -> Option<Family> {
        Family::ALL.into_iter().find(|f| f.as_str() == s)
    }

    /// The audit actions this family's events come from (by prefix).
    fn audit_prefixes(self) -> &'static [&'static str] {
        match self {
            Family::Withdrawal => &["withdrawal."],
            Family::Deposit => &["deposit.", "alert.deposit_reorganised_after_use"],
            Family::Review => &["risk.review"],
            Family::Governance => &["governance."],
        }
    }
}

/// The audit prefixes of `families`.
pub fn audit_prefixes(families: &[Family]) -> Vec<&'static str> {
    families.iter().flat_map(|f| f.audit_prefixes().iter().copied()).collect()
}

/// One event, as `GET /v1/events` lists it and as a webhook's body carries it (the Standard
/// Webhooks payload shape: `type`, `timestamp`, `data`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Event {
    /// `evt_<audit seq>`: unique, the same in every delivery (receivers de-duplicate on it,
    /// and on the `webhook-id` header, which carries it too).
    #[schema(example = "evt_1207")]
    pub id: String,
    /// `<family>.<what happened>`, e.g. `withdrawal.confirmed`, `deposit.credited`,
    /// `review.released`, `governance.committed`.
    #[serde(rename = "type")]
    #[schema(example = "withdrawal.confirmed")]
    pub kind: String,
    pub family: Family,
    /// When the change committed (RFC 3339, UTC).
    pub timestamp: String,
    pub data: EventData,
}

/// What an event is about.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct EventData {
    /// `withdrawal`, `deposit`, `governance`…
    pub object: String,
    /// The object's id (a withdrawal's or deposit's UUID, a governance entry's number).
    pub object_id: String,
    /// Who made the change: `token:<id>`, `account:<id>`, `system`, an engine instance.
    pub actor: String,
    /// The facts recorded with the change (amounts, states, reasons), as the audit log
    /// keeps them.
    #[schema(value_type = Object)]
    pub detail: serde_json::Value,
}

/// The event an audit record is, if it is one.
pub fn event_of(r: &StoredAuditRecord) -> Option<Event> {
    let a = &r.record;
    let action = a.action.as_str();
    let (family, kind) = if action.starts_with("withdrawal.") {
        (Family::Withdrawal, action.to_owned())
    } else if action == "alert.deposit_reorganised_after_use" {
        (Family::Deposit, "deposit.held_after_reorganisation".to_owned())
    } else if action.starts_with("deposit.") {
        (Family::Deposit, action.to_owned())
    } else if action == "risk.review" {
        (Family::Review, "review.opened".to_owned())
    } else if let Some(verb) = action.strip_prefix("risk.review_") {
        (Family::Review, format!("review.{verb}"))
    } else if action.starts_with("governance.") {
        (Family::Governance, action.to_owned())
    } else {
        return None;
    };
    let (object, object_id) = match a.subject.split_once('/') {
        Some((o, id)) => (o.to_owned(), id.to_owned()),
        None => (a.subject.clone(), String::new()),
    };
    Some(Event {
        id: event_id(a.seq),
        kind,
        family,
        timestamp: rfc3339(a.at_ms),
        data: EventData {
            object,
            object_id,
            actor: a.actor.clone(),
            detail: serde_json::from_str(&a.detail).unwrap_or(serde_json::Value::Null),
        },
    })
}

/// `evt_<seq>`.
pub fn event_id(seq: u64) -> String {
    format!("evt_{seq}")
}

/// The audit seq of `evt_<seq>`.
pub fn parse_event_id(id: &str) -> Option<u64> {
    let digits = id.strip_prefix("evt_")?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// RFC 3339 in UTC with milliseconds.
pub fn rfc3339(ms: i64) -> String {
    let nanos = i128::from(ms).saturating_mul(1_000_000);
    time::OffsetDateTime::from_unix_timestamp_nanos(nanos)
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_default()
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct EventsQuery {
    /// The cursor: the `next_cursor` of the page before (an event id, `evt_<n>`); from the
    /// first event when absent.
    pub after: Option<String>,
    /// 1 to 1000; default 100.
    pub limit: Option<u32>,
    /// Only these families, comma-separated: `withdrawal,deposit,review,governance`.
    #[serde(rename = "type")]
    #[param(rename = "type")]
    pub family: Option<String>,
}

/// A page of events.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct EventPage {
    pub data: Vec<Event>,
    /// Pass as `after` for the next page. It moves past every record this read looked at,
    /// so it may be ahead of the last event listed.
    pub next_cursor: String,
    /// More may follow (a next page can still come back empty).
    pub has_more: bool,
}

fn families(text: Option<&str>) -> Result<Vec<Family>, ApiError> {
    let Some(text) = text.filter(|t| !t.is_empty()) else { return Ok(Family::ALL.to_vec()) };
    text.split(',')
        .map(|f| {
            Family::parse(f.trim()).ok_or_else(|| {
                ApiError::bad_request(
                    "invalid_query",
                    format!("type: unknown family {f:?} (withdrawal, deposit, review, governance)"),
                )
            })
        })
        .collect()
}

fn cursor(after: Option<&str>) -> Result<u64, ApiError> {
    match after {
        None | Some("") => Ok(0),
        Some(a) => parse_event_id(a).ok_or_else(|| {
            ApiError::bad_request("invalid_cursor", "after: not a cursor from this API (evt_<n>)")
        }),
    }
}

/// Events in the order their changes committed, after a cursor.
#[utoipa::path(get, path = "/v1/events", tag = "events", security(("token" = [])), params(EventsQuery),
    responses((status = 200, body = EventPage), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub(crate) async fn list(
    State(state): State<AppState>,
    p: Principal,
    q: Result<Query<EventsQuery>, QueryRejection>,
) -> Result<Json<EventPage>, ApiError> {
    p.require(READERS)?;
    let q = query(q)?;
    let families = families(q.family.as_deref())?;
    let after = cursor(q.after.as_deref())?;
    let limit = crate::extract::limit(q.limit)?;
    let prefixes = audit_prefixes(&families);
    let (records, next) = state.store().audit_matching(after, &prefixes, limit, SCAN).await?;
    let full = records.len() >= limit as usize;
    let data: Vec<Event> =
        records.iter().filter_map(event_of).filter(|e| families.contains(&e.family)).collect();
    Ok(Json(EventPage {
        data,
        next_cursor: event_id(next),
        has_more: full || next >= after.saturating_add(u64::from(SCAN)),
    }))
}

/// A delivery that kept failing.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct DeadLetter {
    /// The event's id (send it again with `POST /v1/events/dead-letters/{id}/redeliver`).
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub attempts: u32,
    pub last_error: Option<String>,
    /// When it stopped being retried (RFC 3339).
    pub dead_at: String,
    pub event: Event,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct DeadLetterQuery {
    /// The cursor: the `next_cursor` of the page before.
    pub after: Option<String>,
    /// 1 to 1000; default 100.
    pub limit: Option<u32>,
}

/// A page of dead letters.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct DeadLetterPage {
    pub data: Vec<DeadLetter>,
    /// Pass as `after` for the next page; absent on the last.
    pub next_cursor: Option<String>,
}

/// The outbox id of an event's webhook delivery.
pub fn outbox_id(event_id: &str) -> String {
    format!("{event_id}/{CHANNEL}")
}

/// Webhook deliveries of events that failed every attempt, by event id.
#[utoipa::path(get, path = "/v1/events/dead-letters", tag = "events", security(("token" = [])), params(DeadLetterQuery),
    responses((status = 200, body = DeadLetterPage), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub(crate) async fn dead_letters(
    State(state): State<AppState>,
    p: Principal,
    q: Result<Query<DeadLetterQuery>, QueryRejection>,
) -> Result<Json<DeadLetterPage>, ApiError> {
    p.require(READERS)?;
    let q = query(q)?;
    let limit = crate::extract::limit(q.limit)?;
    let after = match q.after.as_deref() {
        None | Some("") => None,
        Some(a) => Some(outbox_id(&event_id(cursor(Some(a))?))),
    };
    let rows = state.store().dead_letters(CHANNEL, after.as_deref(), limit).await?;
    let full = rows.len() >= limit as usize;
    let mut data = Vec::with_capacity(rows.len());
    for m in rows {
        let event: Event = serde_json::from_value(m.body.clone())
            .map_err(|e| ApiError::internal(format!("outbox {}: {e}", m.id)))?;
        data.push(DeadLetter {
            id: event.id.clone(),
            kind: m.kind,
            attempts: m.attempts,
            last_error: m.last_error,
            dead_at: rfc3339(m.dead_at_ms.unwrap_or_default()),
            event,
        });
    }
    let next_cursor = if full { data.last().map(|d| d.id.clone()) } else { None };
    Ok(Json(DeadLetterPage { data, next_cursor }))
}

/// No fields; operators only.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RedeliverBody {}

impl WriteBody for RedeliverBody {
    const ROLES: &'static [Role] = OPERATORS;
}

/// What `redeliver` did.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Redelivered {
    pub id: String,
    /// Due again now, its attempts counted from zero.
    pub redelivered: bool,
}

/// Send a dead letter again (after the receiver is mended).
#[utoipa::path(post, path = "/v1/events/dead-letters/{id}/redeliver", tag = "events", security(("token" = [])),
    params(("id" = String, Path, description = "The event id, `evt_<n>`"), ("Idempotency-Key" = String, Header)),
    request_body(content = RedeliverBody, description = "Optional: no body, or `{}`"),
    responses((status = 200, body = Redelivered), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
pub(crate) async fn redeliver(
    State(state): State<AppState>,
    id: Result<Path<String>, PathRejection>,
    req: Write<RedeliverBody>,
) -> Result<Json<Redelivered>, ApiError> {
    let Path(id) = id.map_err(|e| ApiError::bad_request("invalid_id", e.body_text()))?;
    let seq = parse_event_id(&id)
        .ok_or_else(|| ApiError::bad_request("invalid_id", "id: not an event id (evt_<n>)"))?;
    let id = event_id(seq);
    let done = state.store().redeliver(&outbox_id(&id), req.ctx.now.unix_ms()).await?;
    if !done {
        return Err(ApiError::not_found("not_a_dead_letter", format!("{id} is not a dead letter")));
    }
    tracing::info!(event = id, actor = req.ctx.actor, "dead letter sent again");
    Ok(Json(Redelivered { id, redelivered: true }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_ids_round_trip_and_strangers_are_refused() {
        assert_eq!(parse_event_id(&event_id(1207)), Some(1207));
        for bad in [
            "",
            "evt_",
            "evt_-1",
            "evt_1x",
            "1207",
            "EVT_1",
            "evt_ 1",
            "evt_99999999999999999999999",
        ] {
            assert_eq!(parse_event_id(bad), None, "{bad}");
        }
    }

    #[test]
    fn families_parse_and_name_an_unknown_one() {
        assert_eq!(families(None).unwrap_or_default(), Family::ALL.to_vec());
        assert_eq!(
            families(Some("deposit, review")).unwrap_or_default(),
            vec![Family::Deposit, Family::Review]
        );
        let e = families(Some("deposit,sweep")).err().map(|e| e.message).unwrap_or_default();
        assert!(e.contains("\"sweep\""), "{e}");
    }
}
