//! Treasury: per asset, the hot wallet holds only what withdrawals need. Its balance is kept
//! between a low and a high watermark; above the high mark the excess (down to a target) is
//! swept to a whitelisted cold address automatically, below the low mark a refill from cold
//! is requested (that one needs a quorum and the offline signers, so people do it). Every
//! pass reports the share of holdings that is cold, in basis points, against the minimum
//! the configuration asks for (95% by default).
//!
//! A sweep to cold is a movement between our own addresses like the other sweeps: custody
//! does not change, the engine drives it, and the signer nodes sign it only because the cold
//! address is on the internal whitelist (past its time-lock) and the policy allows internal
//! transfers.

use std::sync::Arc;

use serde::Serialize;
use strongroom_core::withdrawal::WithdrawalState;
use strongroom_core::Env;
use strongroom_store::{Store, SweepKind, WriteCtx};
use strongroom_units::{Address, Amount, AssetSymbol};

use crate::sweeps::{new_sweep, SweepConfig};
use crate::{ChainAdapter, EngineError};

/// One asset's watermarks, in base units.
#[derive(Debug, Clone)]
pub struct Watermarks {
    pub asset: AssetSymbol,
    pub decimals: u8,
    /// `None` for the native coin.
    pub contract: Option<Address>,
    /// Below this, a refill from cold is requested.
    pub low: Amount,
    /// Above this, the excess is swept to cold.
    pub high: Amount,
    /// What the hot wallet keeps after a sweep or a refill (between low and high).
    pub target: Amount,
    /// The least share of holdings that should be cold, in basis points (9500 = 95%).
    pub min_cold_bps: u32,
}

impl Watermarks {
    /// Low ≤ target ≤ high, and a share of at most 100%.
    pub fn validate(&self) -> Result<(), String> {
        if !(self.low <= self.target && self.target <= self.high) {
            return Err(format!(
                "{}: the watermarks need low ≤ target ≤ high",
                self.asset.as_str()
            ));
        }
        if self.min_cold_bps > 10_000 {
            return Err(format!("{}: a cold share above 100%", self.asset.as_str()));
        }
        Ok(())
    }
}

#[derive(Debug, Clone)]
pub struct TreasuryConfig {
    /// The hot wallet's sweep settings (chain, wallet, its own address, fee limits).
    pub sweep: SweepConfig,
    /// Where sweeps go: a cold wallet's address, on the internal whitelist.
    pub cold: Address,
    /// The cold wallet's other addresses, whose balances count as cold too (a Bitcoin
    /// multisig's change addresses, where a refill's change goes).
    pub cold_also: Vec<Address>,
    pub marks: Vec<Watermarks>,
}

/// What a pass decided for one asset.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Action {
    /// Between the marks: nothing to do.
    Hold,
    /// Above the high mark: this much goes cold.
    Sweep { amount: Amount },
    /// A sweep to cold is already under way.
    SweepUnderWay,
    /// The last sweep to cold failed: no new one before `retry_at_ms` (an alert went out;
    /// each failure still costs gas).
    SweepFailed { retry_at_ms: i64 },
    /// Below the low mark: this much should come back from cold (a quorum and the offline
    /// signers must do it).
    Refill { amount: Amount },
}

/// How long after a failed sweep to cold the treasury tries again.
pub const RETRY_AFTER_FAILURE_MS: i64 = 3_600_000;

/// Decide for one asset from the hot balance, whether a sweep is under way, and when the
/// last sweep to cold failed (if it did).
pub fn decide(
    hot: Amount,
    marks: &Watermarks,
    sweeping: bool,
    failed_at_ms: Option<i64>,
    now_ms: i64,
) -> Action {
    let retry_at = failed_at_ms.map(|t| t.saturating_add(RETRY_AFTER_FAILURE_MS));
    if sweeping {
        Action::SweepUnderWay
    } else if hot > marks.high && retry_at.is_some_and(|r| now_ms < r) {
        Action::SweepFailed { retry_at_ms: retry_at.unwrap_or(now_ms) }
    } else if hot > marks.high {
        Action::Sweep { amount: hot.checked_sub(marks.target).unwrap_or(Amount::ZERO) }
    } else if hot < marks.low {
        Action::Refill { amount: marks.target.checked_sub(hot).unwrap_or(Amount::ZERO) }
    } else {
        Action::Hold
    }
}

/// The cold share of `hot + cold`, in basis points, rounded down (all cold when nothing is
/// held).
pub fn cold_bps(hot: Amount, cold: Amount) -> u32 {
    let (h, c) = (hot.base_units(), cold.base_units());
    let total = h.saturating_add(c);
    if total == 0 {
        return 10_000;
    }
    // c ≤ total, so the quotient is at most 10 000; split to avoid overflow near 2^128.
    let bps =
        if c <= u128::MAX / 10_000 { c * 10_000 / total } else { c / (total / 10_000).max(1) };
    u32::try_from(bps.min(10_000)).unwrap_or(10_000)
}

/// One asset's state after a pass.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ColdRatio {
    pub asset: AssetSymbol,
    pub hot: Amount,
    pub cold: Amount,
    /// The cold share of the two balances as the chain shows them (while a sweep is in a
    /// block not yet seen, the moving amount counts as hot).
    pub cold_bps: u32,
    pub min_cold_bps: u32,
    pub action: Action,
    pub at_ms: i64,
}

/// The treasury of one chain, every asset on it (the native coin and each token), through
/// the chain's adapter.
pub struct Treasury {
    store: Arc<dyn Store>,
    adapter: Arc<dyn ChainAdapter>,
    env: Arc<dyn Env>,
    /// The hot key's public half (a sweep to cold is planned from it).
    key: Vec<u8>,
    cfg: TreasuryConfig,
    /// Per asset, what the cold wallet's other addresses held when last read, and when: they
    /// are read at most every [`COLD_ALSO_EVERY_MS`] (a multisig's many addresses would
    /// otherwise cost a request each on every pass). Only a pace for a report: every instance
    /// reads the chain for itself, and reconciliation reads them all each time.
    cold_also_seen: std::sync::Mutex<std::collections::HashMap<AssetSymbol, (i64, Amount)>>,
}

/// How often the cold wallet's other addresses are read again (see `Treasury`).
pub const COLD_ALSO_EVERY_MS: i64 = 30_000;

impl std::fmt::Debug for Treasury {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Treasury").field("chain", &self.cfg.sweep.chain).finish_non_exhaustive()
    }
}

impl Treasury {
    /// `key`: the hot wallet key's public half (SEC1, compressed).
    pub fn new(
        store: Arc<dyn Store>,
        adapter: Arc<dyn ChainAdapter>,
        env: Arc<dyn Env>,
        key: Vec<u8>,
        cfg: TreasuryConfig,
    ) -> Result<Self, EngineError> {
        for m in &cfg.marks {
            m.validate().map_err(|e| EngineError::Chain(strongroom_chain::ChainError::Build(e)))?;
        }
        Ok(Treasury { store, adapter, env, key, cfg, cold_also_seen: Default::default() })
    }

    pub fn config(&self) -> &TreasuryConfig {
        &self.cfg
    }

    /// What the cold wallet's other addresses hold of `m`'s asset: read again when the last
    /// reading is older than [`COLD_ALSO_EVERY_MS`].
    async fn cold_also(&self, m: &Watermarks, now_ms: i64) -> Result<Amount, EngineError> {
        if self.cfg.cold_also.is_empty() {
            return Ok(Amount::ZERO);
        }
        let seen = |s: &Self| {
            s.cold_also_seen
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .get(&m.asset)
                .copied()
        };
        if let Some((at, amount)) = seen(self) {
            if now_ms.saturating_sub(at) < COLD_ALSO_EVERY_MS {
                return Ok(amount);
            }
        }
        let client = self.adapter.client();
        let mut total = Amount::ZERO;
        for a in &self.cfg.cold_also {
            let more = client.balance(a, m.contract.as_ref()).await?;
            total = total.checked_add(more).unwrap_or(Amount::MAX);
        }
        self.cold_also_seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(m.asset.clone(), (now_ms, total));
        Ok(total)
    }

    /// Read balances, plan a sweep to cold where the hot wallet is above its high mark,
    /// and report every asset's cold share.
    pub async fn run_once(&self) -> Result<Vec<ColdRatio>, EngineError> {
        let chain = &self.cfg.sweep.chain;
        let hot_addr = &self.cfg.sweep.hot;
        let to_cold: Vec<_> = self
            .store
            .list_sweeps(chain, false)
            .await?
            .into_iter()
            .filter(|s| s.kind == SweepKind::ToCold)
            .collect();
        let now_ms = self.env.now().unix_ms();
        let mut out = Vec::new();
        for m in &self.cfg.marks {
            let client = self.adapter.client();
            let hot = client.balance(hot_addr, m.contract.as_ref()).await?;
            let cold = client.balance(&self.cfg.cold, m.contract.as_ref()).await?;
            let also = self.cold_also(m, now_ms).await?;
            // Amounts are bounded far below overflow; saturate rather than fail a pass.
            let cold = cold.checked_add(also).unwrap_or(Amount::MAX);
            let mine: Vec<_> =
                to_cold.iter().filter(|s| s.intent.asset.symbol == m.asset).collect();
            let sweeping = mine.iter().any(|s| !s.state.is_final());
            // Back off only while the latest finished sweep is a failure.
            let failed_at = mine
                .iter()
                .filter(|s| s.state.is_final())
                .max_by_key(|s| s.updated_at.unix_ms())
                .filter(|s| s.state == WithdrawalState::Failed)
                .map(|s| s.updated_at.unix_ms());
            let action = decide(hot, m, sweeping, failed_at, now_ms);
            if let Action::Sweep { amount } = &action {
                // What the transfer will cost, as the engine will plan it when it builds.
                let fee_cap = self
                    .adapter
                    .fee_cap(&self.key, hot_addr, &self.cfg.cold, m.contract.as_ref(), *amount)
                    .await?;
                let from = (self.cfg.sweep.wallet.clone(), Vec::new(), hot_addr);
                let sweep = new_sweep(
                    self.env.as_ref(),
                    &self.cfg.sweep,
                    SweepKind::ToCold,
                    from,
                    &self.cfg.cold,
                    (m.asset.clone(), m.decimals, m.contract.clone()),
                    *amount,
                    fee_cap,
                );
                let ctx =
                    WriteCtx { actor: "treasury".into(), now: self.env.now(), request_id: None };
                let s = self.store.create_sweep(&ctx, sweep).await?;
                tracing::info!(asset = m.asset.as_str(), amount = %amount.base_units(), sweep = %s.id, "hot wallet above its high watermark: sweeping to cold");
            }
            if let Action::SweepFailed { retry_at_ms } = &action {
                tracing::error!(
                    alert = true,
                    asset = m.asset.as_str(),
                    retry_at_ms,
                    "the last sweep to cold failed: the hot wallet stays above its high watermark"
                );
            }
            if let Action::Refill { amount } = &action {
                tracing::warn!(
                    alert = true,
                    asset = m.asset.as_str(),
                    amount = %amount.base_units(),
                    "hot wallet below its low watermark: a refill from cold needs a quorum and the offline signers"
                );
            }
            out.push(ColdRatio {
                asset: m.asset.clone(),
                hot,
                cold,
                cold_bps: cold_bps(hot, cold),
                min_cold_bps: m.min_cold_bps,
                action,
                at_ms: self.env.now().unix_ms(),
            });
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn a(n: u128) -> Amount {
        Amount::from_base_units(n).unwrap()
    }

    fn marks() -> Watermarks {
        Watermarks {
            asset: AssetSymbol::parse("ETH").unwrap(),
            decimals: 18,
            contract: None,
            low: a(2),
            high: a(5),
            target: a(3),
            min_cold_bps: 9_500,
        }
    }

    #[test]
    fn sweeps_above_the_high_mark_and_asks_for_a_refill_below_the_low_one() {
        let m = marks();
        let d = |hot: u128, sweeping: bool| decide(a(hot), &m, sweeping, None, 0);
        assert_eq!(d(100, false), Action::Sweep { amount: a(97) });
        assert_eq!(d(6, false), Action::Sweep { amount: a(3) });
        assert_eq!(d(5, false), Action::Hold, "at the mark is not above it");
        assert_eq!(d(2, false), Action::Hold);
        assert_eq!(d(1, false), Action::Refill { amount: a(2) });
        assert_eq!(d(100, true), Action::SweepUnderWay, "one sweep at a time");
        // After a failed sweep, none for an hour (each failure burns gas), then again.
        let failed = Some(1_000);
        assert_eq!(
            decide(a(100), &m, false, failed, 2_000),
            Action::SweepFailed { retry_at_ms: 1_000 + RETRY_AFTER_FAILURE_MS }
        );
        assert_eq!(
            decide(a(100), &m, false, failed, 1_000 + RETRY_AFTER_FAILURE_MS),
            Action::Sweep { amount: a(97) }
        );
        assert_eq!(decide(a(4), &m, false, failed, 2_000), Action::Hold);
        let mut bad = marks();
        bad.target = a(6);
        assert!(bad.validate().is_err());
        bad.target = a(3);
        bad.min_cold_bps = 10_001;
        assert!(bad.validate().is_err());
        assert!(marks().validate().is_ok());
    }

    #[test]
    fn the_cold_share_is_in_basis_points_rounded_down() {
        assert_eq!(cold_bps(a(3), a(97)), 9_700);
        assert_eq!(cold_bps(a(1), a(2)), 6_666);
        assert_eq!(cold_bps(a(0), a(0)), 10_000);
        assert_eq!(cold_bps(a(5), a(0)), 0);
        let big = Amount::MAX;
        assert_eq!(cold_bps(a(0), big), 10_000);
        assert_eq!(cold_bps(big, big), 5_000);
    }
}
