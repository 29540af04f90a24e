//! `GET /v1/treasury`: per asset, what the hot wallet and the cold wallet hold, the cold
//! share in basis points against the configured minimum, what the last treasury pass did,
//! and the share over time. Whoever runs the treasury (the runtime's chain loop, on the
//! instance that leads it) reports each pass with [`AppState::record_treasury`], into the
//! database, so every instance shows the same; the same figures are Prometheus gauges
//! (`strongroom_cold_ratio_bps`, `strongroom_cold_ratio_min_bps`).

use axum::extract::State;
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::auth::Principal;
use crate::auth::READERS;
use crate::error::{ApiError, ErrorBody};
use crate::metrics::AssetLabels;
use crate::AppState;

/// How many points of history are kept (one per asset per change, or per minute).
const HISTORY: usize = 2_000;

/// One asset after one treasury pass, in base units.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TreasuryReading {
    pub asset: String,
    pub hot: u128,
    pub cold: u128,
    pub cold_bps: u32,
    pub min_cold_bps: u32,
    /// `hold`, `sweep`, `sweep_under_way` or `refill`.
    pub action: String,
    /// What a sweep moves, or a refill asks for.
    pub action_amount: Option<u128>,
    pub at_ms: i64,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TreasuryAsset {
    pub asset: String,
    /// Where this asset's sweeps go (its chain's cold wallet).
    pub cold_address: Option<String>,
    /// Base units, as decimal strings (like every amount in this API).
    pub hot: String,
    pub cold: String,
    pub hot_decimal: String,
    pub cold_decimal: String,
    /// The cold share of hot + cold, in basis points (9500 = 95%).
    pub cold_bps: u32,
    pub min_cold_bps: u32,
    pub meets_minimum: bool,
    pub action: String,
    pub action_amount: Option<String>,
    pub at_ms: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TreasuryPoint {
    pub asset: String,
    pub cold_bps: u32,
    pub at_ms: i64,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TreasuryView {
    /// Where the latest pass's sweeps go; absent when no treasury runs (each asset names its
    /// own: a treasury runs per chain).
    pub cold_address: Option<String>,
    pub assets: Vec<TreasuryAsset>,
    /// The cold share over time, oldest first.
    pub history: Vec<TreasuryPoint>,
}

/// The job report the treasury keeps (`job_reports`).
const REPORT: &str = "treasury";

/// One reading as kept (amounts as decimal strings: they pass through JSON).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct StoredReading {
    asset: String,
    #[serde(default)]
    cold_address: Option<String>,
    hot: String,
    cold: String,
    cold_bps: u32,
    min_cold_bps: u32,
    action: String,
    action_amount: Option<String>,
    at_ms: i64,
}

impl StoredReading {
    fn new(r: &TreasuryReading, cold_address: &str) -> Self {
        StoredReading {
            asset: r.asset.clone(),
            cold_address: Some(cold_address.to_owned()),
            hot: r.hot.to_string(),
            cold: r.cold.to_string(),
            cold_bps: r.cold_bps,
            min_cold_bps: r.min_cold_bps,
            action: r.action.clone(),
            action_amount: r.action_amount.map(|a| a.to_string()),
            at_ms: r.at_ms,
        }
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct TreasuryLog {
    cold_address: Option<String>,
    last: Vec<StoredReading>,
    history: Vec<TreasuryPoint>,
}

async fn load(state: &AppState) -> Result<TreasuryLog, strongroom_store::StoreError> {
    match state.store().report(REPORT).await? {
        Some(v) => serde_json::from_value(v)
            .map_err(|e| strongroom_store::StoreError::Corrupt(format!("treasury report: {e}"))),
        None => Ok(TreasuryLog::default()),
    }
}

/// The cold-ratio gauges from the last pass (every instance, at each scrape).
pub(crate) async fn set_gauges(state: &AppState) -> Result<(), strongroom_store::StoreError> {
    let m = state.metrics();
    for r in &load(state).await?.last {
        let labels = AssetLabels { asset: r.asset.clone() };
        m.cold_ratio_bps.get_or_create(&labels).set(i64::from(r.cold_bps));
        m.cold_ratio_min_bps.get_or_create(&labels).set(i64::from(r.min_cold_bps));
    }
    Ok(())
}

impl AppState {
    /// Record one treasury pass, for every instance to show.
    pub async fn record_treasury(
        &self,
        cold_address: &str,
        readings: Vec<TreasuryReading>,
    ) -> Result<(), strongroom_store::StoreError> {
        let mut log = load(self).await?;
        for r in &readings {
            let last = log.history.iter().rev().find(|p| p.asset == r.asset);
            let due = last.is_none_or(|p| p.cold_bps != r.cold_bps || r.at_ms - p.at_ms >= 60_000);
            if due {
                log.history.push(TreasuryPoint {
                    asset: r.asset.clone(),
                    cold_bps: r.cold_bps,
                    at_ms: r.at_ms,
                });
            }
        }
        let excess = log.history.len().saturating_sub(HISTORY);
        log.history.drain(..excess);
        log.cold_address = Some(cold_address.to_owned());
        // One chain's pass: its assets' readings replace theirs, the other chains' stay.
        for r in &readings {
            let new = StoredReading::new(r, cold_address);
            match log.last.iter_mut().find(|l| l.asset == r.asset) {
                Some(old) => *old = new,
                None => log.last.push(new),
            }
        }
        let body = serde_json::to_value(&log)
            .map_err(|e| strongroom_store::StoreError::Corrupt(e.to_string()))?;
        self.store().put_report(REPORT, &body, self.env().now().unix_ms()).await?;
        set_gauges(self).await
    }
}

/// The treasury's last pass and the cold share over time.
#[utoipa::path(get, path = "/v1/treasury", tag = "treasury", security(("token" = [])),
    responses((status = 200, body = TreasuryView), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub(crate) async fn get_treasury(
    State(state): State<AppState>,
    p: Principal,
) -> Result<Json<TreasuryView>, ApiError> {
    p.require(READERS)?;
    let log = load(&state).await?;
    let decimal = |asset: &str, v: u128| {
        let decimals = state.registry().get(asset).map_or(0, |a| a.decimals);
        strongroom_units::Amount::from_base_units(v)
            .ok()
            .and_then(|a| a.format_decimal(decimals).ok())
            .unwrap_or_else(|| v.to_string())
    };
    let assets = log
        .last
        .iter()
        .map(|r| {
            let amount = |v: &str| v.parse::<u128>().unwrap_or_default();
            TreasuryAsset {
                asset: r.asset.clone(),
                cold_address: r.cold_address.clone(),
                hot: r.hot.clone(),
                cold: r.cold.clone(),
                hot_decimal: decimal(&r.asset, amount(&r.hot)),
                cold_decimal: decimal(&r.asset, amount(&r.cold)),
                cold_bps: r.cold_bps,
                min_cold_bps: r.min_cold_bps,
                meets_minimum: r.cold_bps >= r.min_cold_bps,
                action: r.action.clone(),
                action_amount: r.action_amount.clone(),
                at_ms: r.at_ms,
            }
        })
        .collect();
    Ok(Json(TreasuryView { cold_address: log.cold_address, assets, history: log.history }))
}
