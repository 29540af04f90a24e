//! Incident notices: every governance entry that is an incident step (a freeze, a node
//! quarantined, a key moved or retired, a freeze lifted) raises a staff alert, and a freeze
//! that stops customers' withdrawals tells each customer holding the asset, by e-mail (with
//! their anti-phishing code) and as a webhook event. Through the durable outbox, under ids
//! derived from the entry (`incident/<seq>/…`), so a pass repeated after a crash, or by
//! another instance, adds nothing; the last entry handled is kept in the database.

use std::sync::Arc;

use strongroom_governance::log::{Change, Entry};
use strongroom_governance::policy::FreezeScope;
use strongroom_store::Store;
use strongroom_units::{AssetRegistry, AssetSymbol};

use crate::risk::Alerts;
use crate::RuntimeError;

/// The report under which the last handled entry is kept.
const CURSOR: &str = "incident-notices";
/// Customers told per page.
const PAGE: u32 = 500;

/// What a pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NoticeReport {
    pub entries: usize,
    pub staff_alerts: usize,
    pub customers_told: usize,
}

/// Whose withdrawals a freeze stops, as assets: every asset for a global freeze, the asset
/// for an asset freeze, the assets on the chains whose hot wallet it is for a wallet freeze
/// (a cold wallet's freeze stops no customer).
fn frozen_assets(
    scope: &FreezeScope,
    registry: &AssetRegistry,
    hot_wallets: &[(String, String)],
) -> Option<Vec<AssetSymbol>> {
    match scope {
        FreezeScope::Global => None,
        FreezeScope::Asset { asset } => Some(AssetSymbol::parse(asset).into_iter().collect()),
        FreezeScope::Wallet { wallet } => Some(
            hot_wallets
                .iter()
                .filter(|(w, _)| w == wallet)
                .flat_map(|(_, chain)| {
                    registry
                        .iter()
                        .filter(move |a| a.chain.as_str() == chain)
                        .map(|a| a.symbol.clone())
                })
                .collect(),
        ),
    }
}

/// What a customer is told about an incident step that touches their assets.
#[derive(Debug, Clone, Copy)]
enum Notice {
    Freeze,
    NewDepositAddress,
}

/// One pass: handle every entry after the kept cursor.
pub async fn notice_once(
    store: &Arc<dyn Store>,
    alerts: &Alerts,
    registry: &AssetRegistry,
    hot_wallets: &[(String, String)],
    now_ms: i64,
) -> Result<NoticeReport, RuntimeError> {
    let done = store
        .report(CURSOR)
        .await?
        .and_then(|v| v.get("seq").and_then(serde_json::Value::as_u64))
        .unwrap_or(0);
    let log = store.governance().await?;
    // Every key each chain's hot wallet has been or become through migrations: a freeze may
    // name any of them.
    let mut wallets = hot_wallets.to_vec();
    if let Some((pin, genesis)) = &log.genesis {
        // Replayed as of its last entry at least (this instance's clock may lag the one
        // that committed it).
        let last = log.entries.last().map_or(now_ms, |e| e.at.unix_ms());
        let at = strongroom_core::Timestamp::from_unix_ms(now_ms.max(last));
        if let Ok(state) = strongroom_governance::log::replay(genesis, pin, &log.entries, at) {
            for (w, chain) in hot_wallets {
                if let Ok((current, former)) =
                    strongroom_governance::log::follow_migrations(&state.migrations, w)
                {
                    for k in std::iter::once(current).chain(former) {
                        if !wallets.iter().any(|(x, c)| *x == k && c == chain) {
                            wallets.push((k, chain.clone()));
                        }
                    }
                }
            }
        }
    }
    let hot_wallets = wallets.as_slice();
    let mut report = NoticeReport::default();
    for e in log.entries.iter().filter(|e| e.seq > done) {
        handle(store, alerts, registry, hot_wallets, e, &mut report).await?;
        report.entries += 1;
        store.put_report(CURSOR, &serde_json::json!({ "seq": e.seq }), now_ms).await?;
    }
    Ok(report)
}

async fn handle(
    store: &Arc<dyn Store>,
    alerts: &Alerts,
    registry: &AssetRegistry,
    hot_wallets: &[(String, String)],
    e: &Entry,
    report: &mut NoticeReport,
) -> Result<(), RuntimeError> {
    let signers: Vec<&str> = e.signoffs.iter().map(|s| s.member.as_str()).collect();
    let step = |what: &str| serde_json::json!({ "entry": e.seq, "step": what, "change": e.change, "signed_by": signers });
    // What the customers whose assets it touches are told: a freeze stops their
    // withdrawals; a key migration changes their deposit address.
    let (what, touched) = match &e.change {
        Change::Freeze { scope, .. } => ("freeze", Some((scope.clone(), Notice::Freeze))),
        Change::FreezeUntil { scope, .. } => {
            ("freeze_until", Some((scope.clone(), Notice::Freeze)))
        }
        Change::Unfreeze { .. } => ("unfreeze", None),
        Change::QuarantineNode { .. } => ("quarantine_node", None),
        Change::MigrateKey { from, .. } => (
            "migrate_key",
            Some((FreezeScope::Wallet { wallet: from.clone() }, Notice::NewDepositAddress)),
        ),
        Change::RetireKey { .. } => ("retire_key", None),
        _ => return Ok(()),
    };
    alerts.raise(&format!("incident/{}/staff", e.seq), "incident_step", step(what)).await?;
    report.staff_alerts += 1;
    let Some((scope, notice)) = touched else { return Ok(()) };
    let assets = frozen_assets(&scope, registry, hot_wallets);
    let names = match &assets {
        None => "all assets".to_owned(),
        Some(a) if a.is_empty() => return Ok(()),
        Some(a) => a.iter().map(AssetSymbol::as_str).collect::<Vec<_>>().join(", "),
    };
    // The entry's own reason stays with the staff: it may name what is being investigated.
    let (subject, text) = match notice {
        Notice::Freeze => (
            format!("Withdrawals of {names} are paused"),
            format!(
                "Our security team has paused withdrawals of {names} while it checks \
                 something. Your balance is unchanged and deposits are still credited. We will \
                 tell you when withdrawals resume."
            ),
        ),
        Notice::NewDepositAddress => (
            format!("Your deposit address for {names} is changing"),
            format!(
                "As a security measure we are moving the keys that hold {names} to new ones. \
                 Your balance is unchanged. Please ask for your deposit address again before \
                 your next deposit: a new one is issued. Deposits to your previous address \
                 still arrive and are credited."
            ),
        ),
    };
    let per_asset: Vec<Option<AssetSymbol>> = match assets {
        None => vec![None],
        Some(a) => a.into_iter().map(Some).collect(),
    };
    let mut told = std::collections::BTreeSet::new();
    for asset in per_asset {
        let mut after = None;
        loop {
            let page = store.holders(asset.as_ref(), after, PAGE).await?;
            let Some(last) = page.last().copied() else { break };
            for customer in page {
                if !told.insert(customer) {
                    continue;
                }
                let id = format!("incident/{}/customer/{customer}", e.seq);
                alerts.tell_customer_everywhere(&id, customer, &subject, &text).await?;
                report.customers_told += 1;
            }
            after = Some(last);
        }
    }
    Ok(())
}

/// Push the stored log to every signer node (each keeps what extends its own copy).
async fn push(store: &dyn Store, signers: &crate::signing::OrchestratorSigner) {
    let entries = match store.governance().await {
        Ok(g) => g.entries,
        Err(e) => return tracing::warn!(error = %e, "governance not read for the nodes"),
    };
    let pushed =
        signers.orchestrator().push_governance(&entries, std::time::Duration::from_secs(10)).await;
    for (node, r) in pushed {
        match r {
            Ok(head) => tracing::info!(node, seq = head.seq, "governance pushed to a signer node"),
            Err(e) => tracing::warn!(node, error = %e, "governance not pushed to a signer node"),
        }
    }
}

/// On the instance that leads `incidents`, a pass every two seconds. Whenever the log grew,
/// it is also pushed to every signer node: a freeze signed in the console (with a passkey)
/// reaches the nodes within seconds, not with the next signing request.
pub(crate) async fn notices_forever(
    mut leader: crate::lease::Leader,
    store: Arc<dyn Store>,
    alerts: Alerts,
    registry: AssetRegistry,
    hot_wallets: Vec<(String, String)>,
    signers: Option<Arc<crate::signing::OrchestratorSigner>>,
    env: Arc<dyn strongroom_core::Env>,
) {
    loop {
        tokio::time::sleep(std::time::Duration::from_secs(2)).await;
        if !leader.lead().await {
            continue;
        }
        match notice_once(&store, &alerts, &registry, &hot_wallets, env.now().unix_ms()).await {
            Ok(r) if r.entries > 0 => {
                tracing::info!(
                    entries = r.entries,
                    staff_alerts = r.staff_alerts,
                    customers_told = r.customers_told,
                    "incident notices"
                );
                if let Some(s) = &signers {
                    push(store.as_ref(), s).await;
                }
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "incident notices failed; will retry"),
        }
    }
}
