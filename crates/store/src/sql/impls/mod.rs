//! `SqlStore`'s implementation of each storage trait, one file per domain; the SQL they
//! run lives beside them in `sql/` and in `sql.rs`.

use super::*;

mod accounts;
mod audit;
mod chain_txs;
mod coordination;
mod deposits_watch;
mod governance_store;
mod ledger;
mod risk_store;
mod sweeps_store;
mod tokens;
mod withdrawals;
