//! The risk model registry's operations (issue 21, ADR 0015): train a candidate on the
//! analysts' decisions kept in the store, score it in shadow beside the live model, promote
//! it only after comparing the two on the labels that came in while it was in shadow, and
//! roll back. Every move is an audited write (`RiskStore::set_risk_model_status`); the risk
//! worker of every instance installs what the registry says (see `risk`).

use strongroom_risk::engine::train;
use strongroom_store::{ModelStatus, NewRiskModel, RiskModel, RiskState, Store, WriteCtx};

use crate::RuntimeError;

/// Labelled decisions a shadow needs (with both outcomes) before it may be promoted.
pub const MIN_COMPARED: usize = 20;

/// Why a move in the registry was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ModelRefusal {
    #[error("version {0} is not the shadow model: promote only what was compared in shadow (or --force with a reason)")]
    NotShadow(i64),
    #[error("version {version} has {have} labelled decisions with both outcomes from its time in shadow; {need} are needed (or --force with a reason)")]
    TooFewLabels { version: i64, have: usize, need: usize },
    #[error("version {version} ranks worse than the live model on {labels} labelled decisions: ROC AUC {shadow:.4} against {live:.4} (or --force with a reason)")]
    Worse { version: i64, labels: usize, live: f64, shadow: f64 },
    #[error("no analyst has released or rejected a withdrawal yet: nothing to train on")]
    NoHistory,
    #[error("no earlier live version to roll back to")]
    NothingToRollBackTo,
}

/// An analyst's decision on an assessed withdrawal, with what the models said then.
#[derive(Debug, Clone, PartialEq)]
pub struct Labelled {
    pub features: Vec<f64>,
    pub rejected: bool,
    pub at_ms: i64,
    /// (version, calibrated probability) of the live and the shadow model.
    pub live: Option<(i64, f64)>,
    pub shadow: Option<(i64, f64)>,
}

fn score_at(v: &serde_json::Value, key: &str) -> Option<(i64, f64)> {
    let m = v.get(key)?;
    Some((m.get("version")?.as_i64()?, m.get("probability")?.as_f64()?))
}

/// Every released or rejected withdrawal's assessment, in the order they were decided.
pub async fn labelled_history(store: &dyn Store) -> Result<Vec<Labelled>, RuntimeError> {
    let mut out = Vec::new();
    let mut after = i64::MIN;
    let mut seen = std::collections::HashSet::new();
    loop {
        let batch = store.risk_reviews_since(after, 1000).await?;
        let full = batch.len() == 1000;
        for r in batch {
            after = after.max(r.updated_at.unix_ms());
            if !matches!(r.state, RiskState::Released | RiskState::Rejected)
                || !seen.insert(r.withdrawal_id)
            {
                continue;
            }
            out.push(Labelled {
                features: crate::risk::features_of(&r),
                rejected: r.state == RiskState::Rejected,
                at_ms: r.updated_at.unix_ms(),
                live: score_at(&r.assessment, "model"),
                shadow: score_at(&r.assessment, "shadow_model"),
            });
        }
        if !full {
            return Ok(out);
        }
    }
}

/// Train a model on every labelled decision and register it as a candidate, with what it
/// was trained on and its progressive-validation figures there.
pub async fn train_candidate(
    store: &dyn Store,
    ctx: &WriteCtx,
    note: &str,
) -> Result<RiskModel, RuntimeError> {
    let history = labelled_history(store).await?;
    if history.is_empty() {
        return Err(ModelRefusal::NoHistory.into());
    }
    let rows: Vec<(Vec<f64>, bool)> =
        history.iter().map(|l| (l.features.clone(), l.rejected)).collect();
    let t = train(&rows);
    let first = history.first().map(|l| l.at_ms);
    let last = history.last().map(|l| l.at_ms);
    let model = NewRiskModel {
        params: serde_json::json!({
            "model": "prepared features; half-space trees; online forest + FTRL averaged, calibrated by online Platt scaling",
            "features": strongroom_risk::profile::FEATURES,
            "forest": format!("{:?}", strongroom_risk::forest::ForestConfig::default()),
        }),
        trained_on: serde_json::json!({
            "labels": t.labels, "rejected": t.positives,
            "first_decided_ms": first, "last_decided_ms": last,
            "progressive_roc_auc": t.roc_auc, "progressive_pr_auc": t.pr_auc,
        }),
        state: t.model,
        note: note.to_owned(),
    };
    Ok(store.register_risk_model(ctx, model).await?)
}

/// The shadow model against the live one, on the labelled decisions whose assessment both
/// scored.
#[derive(Debug, Clone, PartialEq)]
pub struct Comparison {
    pub version: i64,
    pub labels: usize,
    pub rejected: usize,
    pub live_roc_auc: Option<f64>,
    pub shadow_roc_auc: Option<f64>,
}

/// Compare the current shadow (none: no shadow).
pub async fn compare_shadow(store: &dyn Store) -> Result<Option<Comparison>, RuntimeError> {
    let Some(shadow) =
        store.risk_models().await?.into_iter().find(|m| m.status == ModelStatus::Shadow)
    else {
        return Ok(None);
    };
    let mut live = Vec::new();
    let mut mine = Vec::new();
    let mut labels = Vec::new();
    for l in labelled_history(store).await? {
        if let (Some((_, p_live)), Some((v, p_shadow))) = (l.live, l.shadow) {
            if v == shadow.version {
                live.push(p_live);
                mine.push(p_shadow);
                labels.push(l.rejected);
            }
        }
    }
    Ok(Some(Comparison {
        version: shadow.version,
        labels: labels.len(),
        rejected: labels.iter().filter(|b| **b).count(),
        live_roc_auc: strongroom_risk::metrics::roc_auc(&live, &labels),
        shadow_roc_auc: strongroom_risk::metrics::roc_auc(&mine, &labels),
    }))
}

/// Score `version` in shadow (it replaces any other shadow).
pub async fn shadow(
    store: &dyn Store,
    ctx: &WriteCtx,
    version: i64,
    note: &str,
) -> Result<RiskModel, RuntimeError> {
    Ok(store.set_risk_model_status(ctx, version, ModelStatus::Shadow, note.to_owned()).await?)
}

/// Make the shadow `version` live, if it ranked at least as well as the live model on at
/// least [`MIN_COMPARED`] labelled decisions (both outcomes) while in shadow; `force` (a
/// reason, kept in the note and the audit log) skips the comparison.
pub async fn promote(
    store: &dyn Store,
    ctx: &WriteCtx,
    version: i64,
    force: Option<&str>,
) -> Result<RiskModel, RuntimeError> {
    let note = match force {
        Some(reason) => format!("forced: {reason}"),
        None => {
            let c = compare_shadow(store)
                .await?
                .filter(|c| c.version == version)
                .ok_or(ModelRefusal::NotShadow(version))?;
            let both = c.rejected > 0 && c.rejected < c.labels;
            let few = ModelRefusal::TooFewLabels { version, have: c.labels, need: MIN_COMPARED };
            let (Some(live), Some(mine), true, true) =
                (c.live_roc_auc, c.shadow_roc_auc, both, c.labels >= MIN_COMPARED)
            else {
                return Err(few.into());
            };
            if mine < live {
                return Err(
                    ModelRefusal::Worse { version, labels: c.labels, live, shadow: mine }.into()
                );
            }
            format!(
                "compared in shadow on {} labelled decisions ({} rejected): ROC AUC {mine:.4} against the live model's {live:.4}",
                c.labels, c.rejected
            )
        }
    };
    Ok(store.set_risk_model_status(ctx, version, ModelStatus::Live, note).await?)
}

/// Make the version that was live before the current one live again.
pub async fn rollback(
    store: &dyn Store,
    ctx: &WriteCtx,
    note: &str,
) -> Result<RiskModel, RuntimeError> {
    let previous = store
        .risk_models()
        .await?
        .into_iter()
        .filter(|m| m.status == ModelStatus::Retired && m.live_since.is_some())
        .max_by_key(|m| m.live_since.map(|t| t.unix_ms()))
        .ok_or(ModelRefusal::NothingToRollBackTo)?;
    Ok(store
        .set_risk_model_status(
            ctx,
            previous.version,
            ModelStatus::Live,
            format!("rollback: {note}"),
        )
        .await?)
}
