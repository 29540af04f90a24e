//! Double-entry bookkeeping, as pure data and functions.
//!
//! Every change of a balance is a [`JournalEntry`]: postings that debit and credit accounts
//! and sum to zero per asset. Balances never go negative: [`apply_posting`] refuses it.
//! The store persists entries and balances; this module decides whether they are valid.
//!
//! Accounts (all amounts in the asset's base units):
//! - `customer/<id>/<ASSET>/available`: what the customer can withdraw (credit-normal).
//! - `customer/<id>/<ASSET>/pending`: reserved by withdrawals in flight (credit-normal).
//! - `system/custody/<ASSET>`: what we hold for customers on chain (debit-normal).
//!
//! Flows: a deposit debits custody and credits available; a withdrawal request moves
//! available to pending; settlement debits pending and credits custody (the coins left);
//! a cancelled withdrawal moves pending back to available.

use serde::{Deserialize, Serialize};
use strongroom_units::{Amount, AmountError, AssetSymbol};
use uuid::Uuid;

/// Most postings one journal entry may hold.
pub const MAX_POSTINGS: usize = 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Side {
    Debit,
    Credit,
}

impl Side {
    pub fn as_str(self) -> &'static str {
        match self {
            Side::Debit => "debit",
            Side::Credit => "credit",
        }
    }
    pub fn parse(s: &str) -> Option<Side> {
        match s {
            "debit" => Some(Side::Debit),
            "credit" => Some(Side::Credit),
            _ => None,
        }
    }
}

/// Which balance of a customer's asset an account holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Bucket {
    Available,
    Pending,
}

/// A ledger account.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum AccountRef {
    Customer { customer_id: Uuid, asset: AssetSymbol, bucket: Bucket },
    Custody { asset: AssetSymbol },
}

impl AccountRef {
    pub fn available(customer_id: Uuid, asset: &AssetSymbol) -> Self {
        AccountRef::Customer { customer_id, asset: asset.clone(), bucket: Bucket::Available }
    }
    pub fn pending(customer_id: Uuid, asset: &AssetSymbol) -> Self {
        AccountRef::Customer { customer_id, asset: asset.clone(), bucket: Bucket::Pending }
    }
    pub fn custody(asset: &AssetSymbol) -> Self {
        AccountRef::Custody { asset: asset.clone() }
    }

    /// The account's stable key, used as its primary key in storage.
    pub fn key(&self) -> String {
        match self {
            AccountRef::Customer { customer_id, asset, bucket } => {
                let b = match bucket {
                    Bucket::Available => "available",
                    Bucket::Pending => "pending",
                };
                format!("customer/{customer_id}/{asset}/{b}")
            }
            AccountRef::Custody { asset } => format!("system/custody/{asset}"),
        }
    }

    pub fn asset(&self) -> &AssetSymbol {
        match self {
            AccountRef::Customer { asset, .. } | AccountRef::Custody { asset } => asset,
        }
    }

    /// The side that increases this account's balance.
    pub fn normal_side(&self) -> Side {
        match self {
            AccountRef::Customer { .. } => Side::Credit,
            AccountRef::Custody { .. } => Side::Debit,
        }
    }
}

/// One line of a journal entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Posting {
    pub account: AccountRef,
    pub side: Side,
    pub amount: Amount,
}

/// What caused a journal entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntryKind {
    Deposit,
    WithdrawalReserve,
    WithdrawalRelease,
    WithdrawalSettle,
    /// The most a withdrawal's transaction may burn in fees, set aside from the treasury.
    FeeReserve,
    /// What was set aside and not burned, back to the treasury.
    FeeRelease,
    /// The fee the network took: out of custody.
    FeePaid,
    /// A credited deposit whose transaction was reorganised off the chain: taken back.
    DepositReversal,
}

impl EntryKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EntryKind::Deposit => "deposit",
            EntryKind::WithdrawalReserve => "withdrawal_reserve",
            EntryKind::WithdrawalRelease => "withdrawal_release",
            EntryKind::WithdrawalSettle => "withdrawal_settle",
            EntryKind::FeeReserve => "fee_reserve",
            EntryKind::FeeRelease => "fee_release",
            EntryKind::FeePaid => "fee_paid",
            EntryKind::DepositReversal => "deposit_reversal",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        [
            Self::Deposit,
            Self::WithdrawalReserve,
            Self::WithdrawalRelease,
            Self::WithdrawalSettle,
            Self::FeeReserve,
            Self::FeeRelease,
            Self::FeePaid,
            Self::DepositReversal,
        ]
        .into_iter()
        .find(|k| k.as_str() == s)
    }
}

/// A balanced set of postings. Only [`JournalEntry::new`] builds one, and it checks the
/// balance, so a value of this type always sums to zero per asset.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct JournalEntry {
    id: Uuid,
    kind: EntryKind,
    postings: Vec<Posting>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LedgerError {
    #[error("a journal entry needs at least two postings")]
    TooFewPostings,
    #[error("a journal entry may hold at most {MAX_POSTINGS} postings")]
    TooManyPostings,
    #[error("a posting amount must be above zero")]
    ZeroPosting,
    #[error("postings for {0} do not balance (debits != credits)")]
    Unbalanced(AssetSymbol),
    #[error("insufficient balance in {account}: has {balance}, needs {needed} base units")]
    InsufficientBalance { account: String, balance: Amount, needed: Amount },
    #[error(transparent)]
    Amount(#[from] AmountError),
}

impl JournalEntry {
    pub fn new(id: Uuid, kind: EntryKind, postings: Vec<Posting>) -> Result<Self, LedgerError> {
        if postings.len() < 2 {
            return Err(LedgerError::TooFewPostings);
        }
        if postings.len() > MAX_POSTINGS {
            return Err(LedgerError::TooManyPostings);
        }
        let mut assets: Vec<&AssetSymbol> = postings.iter().map(|p| p.account.asset()).collect();
        assets.sort();
        assets.dedup();
        for asset in assets {
            let (mut debits, mut credits) = (Amount::ZERO, Amount::ZERO);
            for p in postings.iter().filter(|p| p.account.asset() == asset) {
                if p.amount.is_zero() {
                    return Err(LedgerError::ZeroPosting);
                }
                match p.side {
                    Side::Debit => debits = debits.checked_add(p.amount)?,
                    Side::Credit => credits = credits.checked_add(p.amount)?,
                }
            }
            if debits != credits {
                return Err(LedgerError::Unbalanced(asset.clone()));
            }
        }
        Ok(JournalEntry { id, kind, postings })
    }

    /// Move `amount` from one account to another of the same normal side (e.g. available to
    /// pending): debit `from`, credit `to`. For a credit-normal account a debit decreases it.
    pub fn transfer(
        id: Uuid,
        kind: EntryKind,
        from: AccountRef,
        to: AccountRef,
        amount: Amount,
    ) -> Result<Self, LedgerError> {
        let (from_side, to_side) = match from.normal_side() {
            Side::Credit => (Side::Debit, Side::Credit),
            Side::Debit => (Side::Credit, Side::Debit),
        };
        JournalEntry::new(
            id,
            kind,
            vec![
                Posting { account: from, side: from_side, amount },
                Posting { account: to, side: to_side, amount },
            ],
        )
    }

    pub fn id(&self) -> Uuid {
        self.id
    }
    pub fn kind(&self) -> EntryKind {
        self.kind
    }
    pub fn postings(&self) -> &[Posting] {
        &self.postings
    }

    /// Journal entries for the ledger flows.
    pub fn deposit(
        id: Uuid,
        customer: Uuid,
        asset: &AssetSymbol,
        amount: Amount,
    ) -> Result<Self, LedgerError> {
        JournalEntry::new(
            id,
            EntryKind::Deposit,
            vec![
                Posting { account: AccountRef::custody(asset), side: Side::Debit, amount },
                Posting {
                    account: AccountRef::available(customer, asset),
                    side: Side::Credit,
                    amount,
                },
            ],
        )
    }
    pub fn reserve(
        id: Uuid,
        customer: Uuid,
        asset: &AssetSymbol,
        amount: Amount,
    ) -> Result<Self, LedgerError> {
        Self::transfer(
            id,
            EntryKind::WithdrawalReserve,
            AccountRef::available(customer, asset),
            AccountRef::pending(customer, asset),
            amount,
        )
    }
    pub fn release(
        id: Uuid,
        customer: Uuid,
        asset: &AssetSymbol,
        amount: Amount,
    ) -> Result<Self, LedgerError> {
        Self::transfer(
            id,
            EntryKind::WithdrawalRelease,
            AccountRef::pending(customer, asset),
            AccountRef::available(customer, asset),
            amount,
        )
    }
    pub fn settle(
        id: Uuid,
        customer: Uuid,
        asset: &AssetSymbol,
        amount: Amount,
    ) -> Result<Self, LedgerError> {
        JournalEntry::new(
            id,
            EntryKind::WithdrawalSettle,
            vec![
                Posting {
                    account: AccountRef::pending(customer, asset),
                    side: Side::Debit,
                    amount,
                },
                Posting { account: AccountRef::custody(asset), side: Side::Credit, amount },
            ],
        )
    }
}

/// The treasury: the platform's own funds in custody (gas money, transfers into a hot
/// wallet that belong to no customer), kept as a system customer. Network fees are reserved
/// from and paid out of it, so custody always equals the sum of all customer balances,
/// the treasury's included.
pub const TREASURY_CUSTOMER: Uuid = Uuid::from_u128(0x7472_6561_7375_7279_0000_0000_0000_0001);
/// The treasury customer's external id.
pub const TREASURY_EXTERNAL_ID: &str = "system:treasury";

impl JournalEntry {
    /// Set aside `amount` of the fee asset from the treasury for one transaction.
    pub fn fee_reserve(id: Uuid, asset: &AssetSymbol, amount: Amount) -> Result<Self, LedgerError> {
        Self::transfer(
            id,
            EntryKind::FeeReserve,
            AccountRef::available(TREASURY_CUSTOMER, asset),
            AccountRef::pending(TREASURY_CUSTOMER, asset),
            amount,
        )
    }
    /// Take back a credited deposit that is no longer on the chain: the customer's available
    /// balance and custody both shrink (refused, like any posting, if it would go negative).
    pub fn deposit_reversal(
        id: Uuid,
        customer: Uuid,
        asset: &AssetSymbol,
        amount: Amount,
    ) -> Result<Self, LedgerError> {
        let mut e = Self::deposit(id, customer, asset, amount)?;
        e.kind = EntryKind::DepositReversal;
        for p in &mut e.postings {
            p.side = match p.side {
                Side::Debit => Side::Credit,
                Side::Credit => Side::Debit,
            };
        }
        Ok(e)
    }
    /// Return the unburned part of a fee reservation.
    pub fn fee_release(id: Uuid, asset: &AssetSymbol, amount: Amount) -> Result<Self, LedgerError> {
        Self::transfer(
            id,
            EntryKind::FeeRelease,
            AccountRef::pending(TREASURY_CUSTOMER, asset),
            AccountRef::available(TREASURY_CUSTOMER, asset),
            amount,
        )
    }
    /// The fee the network burned, out of the reservation and out of custody.
    pub fn fee_paid(id: Uuid, asset: &AssetSymbol, amount: Amount) -> Result<Self, LedgerError> {
        let mut e = Self::settle(id, TREASURY_CUSTOMER, asset, amount)?;
        e.kind = EntryKind::FeePaid;
        Ok(e)
    }
}

/// The balance of `account` after `posting`; refuses to go below zero.
pub fn apply_posting(balance: Amount, posting: &Posting) -> Result<Amount, LedgerError> {
    if posting.side == posting.account.normal_side() {
        Ok(balance.checked_add(posting.amount)?)
    } else {
        balance.checked_sub(posting.amount).map_err(|_| LedgerError::InsufficientBalance {
            account: posting.account.key(),
            balance,
            needed: posting.amount,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    fn eth() -> AssetSymbol {
        AssetSymbol::parse("ETH").unwrap()
    }
    fn amt(n: u128) -> Amount {
        Amount::from_base_units(n).unwrap()
    }

    #[test]
    fn unbalanced_entries_cannot_be_built() {
        let c = Uuid::from_u128(1);
        let e = JournalEntry::new(
            Uuid::nil(),
            EntryKind::Deposit,
            vec![
                Posting { account: AccountRef::custody(&eth()), side: Side::Debit, amount: amt(5) },
                Posting {
                    account: AccountRef::available(c, &eth()),
                    side: Side::Credit,
                    amount: amt(4),
                },
            ],
        );
        assert_eq!(e, Err(LedgerError::Unbalanced(eth())));
        assert_eq!(
            JournalEntry::deposit(Uuid::nil(), c, &eth(), Amount::ZERO),
            Err(LedgerError::ZeroPosting)
        );
    }

    #[test]
    fn reserving_more_than_available_is_refused() {
        let c = Uuid::from_u128(1);
        let e = JournalEntry::reserve(Uuid::nil(), c, &eth(), amt(10)).unwrap();
        let debit = e.postings().first().unwrap();
        assert!(matches!(
            apply_posting(amt(9), debit),
            Err(LedgerError::InsufficientBalance { .. })
        ));
        assert_eq!(apply_posting(amt(10), debit).unwrap(), Amount::ZERO);
    }

    proptest! {
        /// Whatever sequence of flows is attempted, applying only the entries whose every
        /// posting succeeds keeps all balances non-negative and custody equal to the sum of
        /// customer balances.
        #[test]
        fn ledger_invariants_hold(ops in proptest::collection::vec((0u8..4, 0u128..3, 1u128..1000), 0..60)) {
            let mut balances: HashMap<String, Amount> = HashMap::new();
            for (i, (op, cust, n)) in ops.into_iter().enumerate() {
                let c = Uuid::from_u128(cust);
                let id = Uuid::from_u128(i as u128 + 100);
                let entry = match op {
                    0 => JournalEntry::deposit(id, c, &eth(), amt(n)),
                    1 => JournalEntry::reserve(id, c, &eth(), amt(n)),
                    2 => JournalEntry::release(id, c, &eth(), amt(n)),
                    _ => JournalEntry::settle(id, c, &eth(), amt(n)),
                }.unwrap();
                let mut next = balances.clone();
                let mut ok = true;
                for p in entry.postings() {
                    let cur = next.get(&p.account.key()).copied().unwrap_or(Amount::ZERO);
                    match apply_posting(cur, p) {
                        Ok(b) => { next.insert(p.account.key(), b); }
                        Err(_) => { ok = false; break; }
                    }
                }
                if ok { balances = next; }
            }
            let custody = balances.get(&AccountRef::custody(&eth()).key()).copied().unwrap_or(Amount::ZERO);
            let customers = balances.iter()
                .filter(|(k, _)| k.starts_with("customer/"))
                .fold(Amount::ZERO, |acc, (_, v)| acc.checked_add(*v).unwrap());
            prop_assert_eq!(custody, customers);
        }
    }
}
