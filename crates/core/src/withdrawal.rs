//! Withdrawal requests: validation into an intent and a ledger reservation, and the
//! lifecycle a withdrawal moves through.

use serde::{Deserialize, Serialize};
use strongroom_units::{
    Address, AddressError, Amount, AmountError, Asset, AssetRegistry, RegistryError,
};
use uuid::Uuid;

use crate::env::Timestamp;
use crate::intent::{Intent, IntentAsset, IntentError, IntentHash, WalletId};
use crate::ledger::{JournalEntry, LedgerError};

/// Where a withdrawal is in its life. Only the transitions in [`WithdrawalState::can_become`]
/// exist; the store refuses any other.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WithdrawalState {
    /// Funds reserved (available -> pending); waiting for approvals and signing.
    Reserved,
    /// The unsigned transaction is built and stored with its nonce; the network fee is
    /// reserved from the treasury. From here on the withdrawal can only go forward.
    Built,
    /// The signed transaction is stored (before it is ever broadcast).
    Signed,
    /// The stored transaction was handed to the network.
    Broadcast,
    /// Released back to available before anything was signed.
    Cancelled,
    /// Funds left custody; the ledger is final.
    Settled,
    /// The transaction was mined but reverted: the customer's funds are released, the fee
    /// it burned is paid from the treasury.
    Failed,
}

impl WithdrawalState {
    const ALL: [WithdrawalState; 7] = [
        Self::Reserved,
        Self::Built,
        Self::Signed,
        Self::Broadcast,
        Self::Cancelled,
        Self::Settled,
        Self::Failed,
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            WithdrawalState::Reserved => "reserved",
            WithdrawalState::Built => "built",
            WithdrawalState::Signed => "signed",
            WithdrawalState::Broadcast => "broadcast",
            WithdrawalState::Cancelled => "cancelled",
            WithdrawalState::Settled => "settled",
            WithdrawalState::Failed => "failed",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }
    /// The lifecycle: reserved → built → signed → broadcast → settled | failed, or
    /// reserved → cancelled. Reserved → settled is an off-chain settlement (operator).
    pub fn can_become(self, next: WithdrawalState) -> bool {
        use WithdrawalState::*;
        matches!(
            (self, next),
            (Reserved, Cancelled | Built | Settled)
                | (Built, Signed)
                | (Signed, Broadcast)
                | (Broadcast, Settled | Failed)
        )
    }
    /// Nothing more will happen to it.
    pub fn is_final(self) -> bool {
        matches!(self, Self::Cancelled | Self::Settled | Self::Failed)
    }
}

/// A withdrawal as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Withdrawal {
    pub id: Uuid,
    pub customer_id: Uuid,
    pub intent: Intent,
    pub intent_hash: String,
    pub state: WithdrawalState,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

/// What a client asks for. Amounts are decimal strings in the asset's units.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WithdrawalRequest {
    pub customer_id: Uuid,
    pub asset: String,
    pub destination: String,
    pub amount: String,
}

/// Settings that shape every withdrawal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WithdrawalRules {
    /// How long an intent stays valid for approval and signing.
    pub intent_ttl_ms: i64,
    /// The hot wallet that pays out on each chain, where it is not `hot-<family>-1` (after
    /// a key migration, the new key).
    pub hot_wallets: std::collections::BTreeMap<strongroom_units::ChainId, WalletId>,
}

impl Default for WithdrawalRules {
    fn default() -> Self {
        WithdrawalRules {
            intent_ttl_ms: 24 * 3600 * 1000,
            hot_wallets: std::collections::BTreeMap::new(),
        }
    }
}

impl WithdrawalRules {
    /// The hot wallet that pays out `asset`.
    pub fn hot_wallet(&self, asset: &Asset) -> Result<WalletId, IntentError> {
        match self.hot_wallets.get(&asset.chain) {
            Some(w) => Ok(w.clone()),
            None => hot_wallet_for(asset),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RequestError {
    #[error(transparent)]
    UnknownAsset(#[from] RegistryError),
    #[error("invalid amount: {0}")]
    Amount(#[from] AmountError),
    #[error("amount must be above zero")]
    ZeroAmount,
    #[error("amount is below the minimum withdrawal of {min} {asset}")]
    BelowMinimum { min: String, asset: String },
    #[error("invalid destination: {0}")]
    Destination(#[from] AddressError),
    #[error(transparent)]
    Intent(#[from] IntentError),
    #[error(transparent)]
    Ledger(#[from] LedgerError),
}

/// A validated withdrawal, ready to be stored with its reservation in one transaction.
#[derive(Debug, Clone)]
pub struct PlannedWithdrawal {
    pub withdrawal: Withdrawal,
    pub reservation: JournalEntry,
}

/// The chain's first hot wallet, `hot-<family>-1`: the one that pays out unless the rules
/// name another.
pub fn hot_wallet_for(asset: &Asset) -> Result<WalletId, IntentError> {
    let family = match asset.family() {
        strongroom_units::ChainFamily::Ethereum => "eth",
        strongroom_units::ChainFamily::Bitcoin => "btc",
    };
    WalletId::parse(&format!("hot-{family}-1"))
}

/// Parse and check a positive amount of `asset` at or above its minimum withdrawal.
pub fn parse_withdrawal_amount(asset: &Asset, text: &str) -> Result<Amount, RequestError> {
    let amount = asset.parse_amount(text)?;
    if amount.is_zero() {
        return Err(RequestError::ZeroAmount);
    }
    if amount < asset.min_withdrawal {
        return Err(RequestError::BelowMinimum {
            min: asset.min_withdrawal.format_decimal(asset.decimals)?,
            asset: asset.symbol.to_string(),
        });
    }
    Ok(amount)
}

/// Validate a request and turn it into a withdrawal and its reservation. Pure: the caller
/// supplies the ids and the time, and checks the balance when it applies the reservation.
pub fn plan_withdrawal(
    registry: &AssetRegistry,
    rules: &WithdrawalRules,
    request: &WithdrawalRequest,
    withdrawal_id: Uuid,
    entry_id: Uuid,
    now: Timestamp,
) -> Result<PlannedWithdrawal, RequestError> {
    let asset = registry.get(&request.asset)?;
    let amount = parse_withdrawal_amount(asset, &request.amount)?;
    let destination: Address = asset.parse_address(&request.destination)?;
    let intent = Intent {
        chain: asset.chain.clone(),
        asset: IntentAsset {
            symbol: asset.symbol.clone(),
            decimals: asset.decimals,
            contract: asset.contract.clone(),
        },
        source_wallet: rules.hot_wallet(asset)?,
        destination,
        amount,
        fee_cap: asset.fee_cap,
        expires_at: now.plus_ms(rules.intent_ttl_ms),
        request_id: withdrawal_id,
    };
    let hash: IntentHash = intent.hash()?;
    let reservation = JournalEntry::reserve(entry_id, request.customer_id, &asset.symbol, amount)?;
    Ok(PlannedWithdrawal {
        withdrawal: Withdrawal {
            id: withdrawal_id,
            customer_id: request.customer_id,
            intent,
            intent_hash: hash.to_hex(),
            state: WithdrawalState::Reserved,
            created_at: now,
            updated_at: now,
        },
        reservation,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(amount: &str, dest: &str) -> WithdrawalRequest {
        WithdrawalRequest {
            customer_id: Uuid::from_u128(7),
            asset: "ETH".into(),
            destination: dest.into(),
            amount: amount.into(),
        }
    }
    const DEST: &str = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed";

    fn plan(r: &WithdrawalRequest) -> Result<PlannedWithdrawal, RequestError> {
        plan_withdrawal(
            &AssetRegistry::dev(),
            &WithdrawalRules::default(),
            r,
            Uuid::from_u128(1),
            Uuid::from_u128(2),
            Timestamp::from_unix_ms(1_000),
        )
    }

    #[test]
    fn a_valid_request_becomes_an_intent_and_a_reservation() {
        let p = plan(&req("0.5", DEST)).unwrap();
        assert_eq!(p.withdrawal.intent.amount.base_units(), 500_000_000_000_000_000);
        assert_eq!(p.withdrawal.intent.expires_at.unix_ms(), 1_000 + 24 * 3600 * 1000);
        assert_eq!(p.withdrawal.intent.source_wallet.as_str(), "hot-eth-1");
        assert_eq!(p.withdrawal.intent_hash, p.withdrawal.intent.hash().unwrap().to_hex());
        assert_eq!(p.reservation.postings().len(), 2);
    }

    #[test]
    fn bad_requests_get_specific_errors() {
        assert!(matches!(plan(&req("0", DEST)), Err(RequestError::ZeroAmount)));
        assert!(matches!(plan(&req("0.00000001", DEST)), Err(RequestError::BelowMinimum { .. })));
        assert!(matches!(plan(&req("-1", DEST)), Err(RequestError::Amount(AmountError::Negative))));
        assert!(matches!(
            plan(&req("1", "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAeD")),
            Err(RequestError::Destination(_))
        ));
        let mut r = req("1", DEST);
        r.asset = "XRP".into();
        assert!(matches!(plan(&r), Err(RequestError::UnknownAsset(_))));
    }

    #[test]
    fn only_forward_transitions_exist() {
        use WithdrawalState::*;
        assert!(Reserved.can_become(Cancelled));
        assert!(Reserved.can_become(Settled));
        assert!(!Cancelled.can_become(Reserved));
        assert!(!Settled.can_become(Cancelled));
        assert!(!Reserved.can_become(Reserved));
        // Once built (a nonce is spent), a withdrawal can only go forward.
        assert!(Reserved.can_become(Built) && Built.can_become(Signed));
        assert!(Signed.can_become(Broadcast) && Broadcast.can_become(Settled));
        assert!(Broadcast.can_become(Failed));
        for s in [Built, Signed, Broadcast] {
            assert!(!s.can_become(Cancelled), "{s:?}");
            assert!(!s.is_final());
        }
        assert!(!Signed.can_become(Built), "a signed withdrawal is never rebuilt");
        for s in WithdrawalState::ALL {
            assert_eq!(WithdrawalState::parse(s.as_str()), Some(s));
            if s.is_final() {
                assert!(WithdrawalState::ALL.iter().all(|n| !s.can_become(*n)));
            }
        }
    }
}
