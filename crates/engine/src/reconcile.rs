//! Reconciliation: what the ledger says custody holds, per asset, against what the chain
//! says our addresses hold. Any difference is reported, to the base unit.

use serde::Serialize;
use strongroom_chain::ChainClient;
use strongroom_core::withdrawal::WithdrawalState;
use strongroom_store::{Store, WithdrawalFilter};
use strongroom_units::{Address, Amount, AssetSymbol, ChainId};

use crate::EngineError;

/// One asset's comparison.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Holding {
    pub asset: AssetSymbol,
    /// Custody in the ledger (what customers and the treasury are owed).
    pub ledger: Amount,
    /// The sum over our addresses on chain.
    pub chain: Amount,
    /// Withdrawals and sweeps under way: while any exist, the two may differ by them.
    pub in_flight: usize,
    /// Deposits on chain not yet credited (too few confirmations): likewise.
    pub uncredited_deposits: usize,
}

impl Holding {
    pub fn matches(&self) -> bool {
        self.ledger == self.chain
    }
    /// Nothing is in motion, so any difference is real.
    pub fn settled(&self) -> bool {
        self.in_flight == 0 && self.uncredited_deposits == 0
    }
}

/// Compare ledger custody with on-chain balances for `assets` (symbol and token contract,
/// `None` for the native coin) held at `addresses` on `chain`.
pub async fn reconcile(
    store: &dyn Store,
    client: &dyn ChainClient,
    chain: &ChainId,
    assets: &[(AssetSymbol, Option<Address>)],
    addresses: &[Address],
) -> Result<Vec<Holding>, EngineError> {
    let uncredited: Vec<AssetSymbol> =
        store.uncredited_deposits(chain).await?.into_iter().map(|d| d.transfer.asset).collect();
    let totals = store.custody_totals().await?;
    let mut in_flight_by_asset: Vec<AssetSymbol> = Vec::new();
    for state in [WithdrawalState::Built, WithdrawalState::Signed, WithdrawalState::Broadcast] {
        let f =
            WithdrawalFilter { customer_id: None, state: Some(state), after: None, limit: 1000 };
        in_flight_by_asset
            .extend(store.list_withdrawals(&f).await?.into_iter().map(|w| w.intent.asset.symbol));
    }
    // Sweeps under way: a fee may have left the chain before the ledger concludes them.
    for sw in store.list_sweeps(chain, true).await? {
        if sw.state != WithdrawalState::Reserved {
            in_flight_by_asset.push(sw.intent.asset.symbol);
        }
    }
    let mut out = Vec::new();
    for (asset, contract) in assets {
        let ledger = totals.iter().find(|t| &t.asset == asset).map_or(Amount::ZERO, |t| t.custody);
        let mut on_chain = Amount::ZERO;
        for a in addresses {
            let b = client.balance(a, contract.as_ref()).await?;
            on_chain = on_chain.checked_add(b).map_err(|e| {
                EngineError::Chain(strongroom_chain::ChainError::Decode(e.to_string()))
            })?;
        }
        // A token withdrawal also burns the native coin for gas.
        let in_flight =
            in_flight_by_asset.iter().filter(|s| *s == asset || contract.is_none()).count();
        let uncredited_deposits = uncredited.iter().filter(|s| *s == asset).count();
        out.push(Holding {
            asset: asset.clone(),
            ledger,
            chain: on_chain,
            in_flight,
            uncredited_deposits,
        });
    }
    Ok(out)
}
