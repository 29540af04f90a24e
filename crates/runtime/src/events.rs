//! The exchange's event webhook, in the Standard Webhooks format
//! (<https://www.standardwebhooks.com>): each withdrawal, deposit, review and governance
//! event (`strongroom_server::events`) is put in the durable outbox under its event id, then
//! POSTed with `webhook-id`, `webhook-timestamp` and `webhook-signature` (`v1,` and the
//! base64 HMAC-SHA256 of `<id>.<timestamp>.<body>` under the `whsec_` secret), at least once,
//! retried with backoff across restarts and instances, until it is accepted or its attempts
//! run out (then it waits in the dead-letter view).
//!
//! The projector reads the audit log after a cursor kept in the database (one instance at a
//! time, under a lease) and enqueues each event under `evt_<seq>/events`: enqueueing is
//! idempotent, so a crash between enqueueing and moving the cursor adds nothing twice.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use strongroom_core::Env;
use strongroom_server::events::{self, Family};
use strongroom_store::Store;

use crate::lease::Leader;
use crate::RuntimeError;

/// The job report that keeps the projector's cursor (the last audit seq looked at).
pub const CURSOR_REPORT: &str = "events-webhook-cursor";

/// Attempts before a delivery becomes a dead letter, by default (with the outbox's backoff,
/// 1 s doubling to an hour, about 14 hours of trying).
pub const DEFAULT_MAX_ATTEMPTS: u32 = 24;

/// `[events]`: where the exchange's event webhook is and how it is signed.
#[derive(Debug, Clone)]
pub struct HookSettings {
    pub url: String,
    /// A file holding the Standard Webhooks secret: `whsec_` and base64 of 24 to 64 bytes.
    pub secret_file: PathBuf,
    /// A CA certificate (PEM) trusted for the receiver besides the platform's roots.
    pub ca_file: Option<PathBuf>,
    /// Only these families (all when empty).
    pub families: Vec<Family>,
    /// Attempts before a delivery becomes a dead letter.
    pub max_attempts: u32,
    /// On the first start, deliver every event already in the audit log (otherwise only
    /// those after it).
    pub from_start: bool,
}

/// The webhook, ready to deliver.
#[derive(Clone)]
pub struct Hook {
    url: String,
    key: Arc<zeroize::Zeroizing<Vec<u8>>>,
    client: reqwest::Client,
    pub(crate) max_attempts: u32,
}

impl std::fmt::Debug for Hook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hook").field("url", &self.url).finish_non_exhaustive()
    }
}

/// Why a delivery failed.
#[derive(Debug, thiserror::Error)]
pub enum HookError {
    /// The receiver answered with an error status.
    #[error("the receiver refused the event: HTTP {0}")]
    Refused(u16),
    /// The receiver said the endpoint is gone (410): no further attempts.
    #[error("the receiver says the endpoint is gone (HTTP 410)")]
    Gone,
    #[error("the receiver is unreachable: {0}")]
    Unreachable(String),
}

/// A Standard Webhooks secret: `whsec_` then base64 (standard alphabet) of the key.
pub fn parse_secret(text: &str) -> Result<zeroize::Zeroizing<Vec<u8>>, String> {
    let b64 = text
        .trim()
        .strip_prefix("whsec_")
        .ok_or("the secret must start with whsec_ (the Standard Webhooks format)")?;
    let key = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .map_err(|e| format!("the secret after whsec_ is not base64: {e}"))?;
    if !(24..=64).contains(&key.len()) {
        return Err(format!("the secret's key is {} bytes; 24 to 64 are allowed", key.len()));
    }
    Ok(zeroize::Zeroizing::new(key))
}

/// A new secret, `whsec_` and base64 of 32 random bytes.
pub fn new_secret(env: &dyn Env) -> zeroize::Zeroizing<String> {
    let mut key = zeroize::Zeroizing::new([0u8; 32]);
    env.fill_random(key.as_mut_slice());
    zeroize::Zeroizing::new(format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode(key.as_slice())
    ))
}

/// The `webhook-signature` value for one delivery.
pub fn sign(key: &[u8], id: &str, timestamp: i64, body: &str) -> String {
    use hmac::{Hmac, Mac};
    // HMAC takes a key of any length.
    let mut mac = match Hmac::<sha2::Sha256>::new_from_slice(key) {
        Ok(m) => m,
        Err(_) => return String::new(),
    };
    mac.update(format!("{id}.{timestamp}.{body}").as_bytes());
    format!("v1,{}", base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes()))
}

impl Hook {
    pub fn new(s: &HookSettings) -> Result<Hook, RuntimeError> {
        let text = std::fs::read_to_string(&s.secret_file)
            .map_err(|e| RuntimeError::io(format!("reading {}", s.secret_file.display()), e))?;
        let key = parse_secret(&text).map_err(|e| {
            RuntimeError::Config(format!(
                "[events] webhook_secret_file {}: {e}",
                s.secret_file.display()
            ))
        })?;
        let mut builder =
            reqwest::Client::builder().use_rustls_tls().timeout(Duration::from_secs(10));
        if let Some(ca) = &s.ca_file {
            for c in crate::http::ca_certificates(ca)? {
                builder = builder.add_root_certificate(c);
            }
        }
        let client = builder
            .build()
            .map_err(|e| RuntimeError::Config(format!("events webhook HTTP client: {e}")))?;
        Ok(Hook {
            url: s.url.clone(),
            key: Arc::new(key),
            client,
            max_attempts: s.max_attempts.max(1),
        })
    }

    /// POST one event, signed, stamped with `now_secs`.
    pub async fn post(&self, id: &str, body: &str, now_secs: i64) -> Result<(), HookError> {
        let signature = sign(&self.key, id, now_secs, body);
        let sent = self
            .client
            .post(&self.url)
            .header("content-type", "application/json")
            .header("webhook-id", id)
            .header("webhook-timestamp", now_secs.to_string())
            .header("webhook-signature", signature)
            .body(body.to_owned())
            .send()
            .await;
        match sent {
            Ok(r) if r.status().is_success() => Ok(()),
            Ok(r) if r.status().as_u16() == 410 => Err(HookError::Gone),
            Ok(r) => Err(HookError::Refused(r.status().as_u16())),
            Err(e) => Err(HookError::Unreachable(strongroom_chain_ethereum::rpc::with_causes(&e))),
        }
    }
}

/// Move events from the audit log into the outbox once, as the projector's leader: returns
/// how many were enqueued (some may have been there already).
pub async fn project_once(
    store: &dyn Store,
    env: &dyn Env,
    families: &[Family],
    from_start: bool,
) -> Result<usize, RuntimeError> {
    let now = env.now().unix_ms();
    let cursor = match store.report(CURSOR_REPORT).await? {
        Some(r) => r.get("seq").and_then(serde_json::Value::as_u64).unwrap_or(0),
        None if from_start => 0,
        None => {
            // First start: from the audit log's head on.
            let head = store.audit_head().await?;
            store.put_report(CURSOR_REPORT, &serde_json::json!({ "seq": head }), now).await?;
            head
        }
    };
    let families = if families.is_empty() { Family::ALL.to_vec() } else { families.to_vec() };
    let prefixes = events::audit_prefixes(&families);
    let (records, next) = store.audit_matching(cursor, &prefixes, 500, events::SCAN).await?;
    let mut n = 0;
    for r in &records {
        let Some(event) = events::event_of(r).filter(|e| families.contains(&e.family)) else {
            continue;
        };
        let body = serde_json::to_value(&event).map_err(|e| RuntimeError::Config(e.to_string()))?;
        store
            .enqueue(strongroom_store::NewOutboxMessage {
                id: events::outbox_id(&event.id),
                channel: events::CHANNEL.into(),
                kind: event.kind.clone(),
                body,
                created_at_ms: now,
            })
            .await?;
        n += 1;
    }
    if next != cursor {
        store.put_report(CURSOR_REPORT, &serde_json::json!({ "seq": next }), now).await?;
    }
    Ok(n)
}

/// The projector, forever: one instance at a time moves events into the outbox (every
/// instance's outbox worker delivers them).
pub async fn project_forever(
    mut leader: Leader,
    store: Arc<dyn Store>,
    env: Arc<dyn Env>,
    families: Vec<Family>,
    from_start: bool,
) {
    loop {
        if leader.lead().await {
            match project_once(store.as_ref(), env.as_ref(), &families, from_start).await {
                Ok(n) if n > 0 => {
                    tracing::debug!(events = n, "events queued for the webhook");
                    continue;
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "events pass failed"),
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The Standard Webhooks specification's example: secret, id, timestamp, payload and the
    /// signature its reference libraries compute.
    #[test]
    fn signatures_match_the_specifications_example() {
        let key = parse_secret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap_or_default();
        let sig =
            sign(&key, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1_614_265_330, r#"{"test": 2432232314}"#);
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn secrets_need_the_prefix_base64_and_a_sane_length() {
        assert!(parse_secret("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").is_err());
        assert!(parse_secret("whsec_not base64!").is_err());
        assert!(parse_secret("whsec_c2hvcnQ=").is_err(), "5 bytes is too short");
        assert!(parse_secret(" whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\n").is_ok());
    }
}
