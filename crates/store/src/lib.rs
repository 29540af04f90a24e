//! Storage: the traits the rest of Strongroom uses, and the SQL backends behind them.
//!
//! Two backends, chosen by URL: **SQLite** (`sqlite://…`, the embedded default, one file in
//! the data folder) and **PostgreSQL** (`postgres://…`, production). Both run the same
//! commands through sqlx and pass the same conformance suite (`tests/conformance.rs`).
//!
//! Invariants this crate keeps:
//! - Every state change commits in one database transaction together with exactly one
//!   audit record; a failure anywhere rolls all of it back (see [`faults`]).
//! - Writers are serialised on the audit chain's head, so the chain never forks.
//! - Ledger balances never go negative; journal entries always balance (checked in `core`).
//! - A reused idempotency key returns the first result, or `IdempotencyConflict` if the
//!   request differs.
//!
//! This crate knows SQL and the domain types; it knows nothing of HTTP or keys.
#![forbid(unsafe_code)]

pub mod faults;
pub mod gate;
mod sql;
pub mod types;
pub mod verify;

pub use faults::Faults;
pub use sql::{with_database, Backend, ConnectOptions, SqlStore};

/// Connection options with a pool of `max_connections`.
pub fn sql_options(max_connections: u32) -> ConnectOptions {
    ConnectOptions { max_connections }
}
pub use types::*;
pub use verify::{verify_audit, AuditReport};

use async_trait::async_trait;
use strongroom_core::withdrawal::{PlannedWithdrawal, Withdrawal, WithdrawalState};
use uuid::Uuid;

/// Why a storage operation failed. Stable codes for each variant live in the server's
/// error mapping (`docs/adr/0004-error-codes.md`).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    #[error("{entity} {id} not found")]
    NotFound { entity: &'static str, id: String },
    #[error("idempotency key was already used with a different request")]
    IdempotencyConflict,
    /// Another request with the same idempotency key committed first; the store resolves
    /// this itself by returning that request's result, so callers never see it.
    #[error("a concurrent request with the same idempotency key won")]
    IdempotencyRace,
    #[error("a customer with external_id {0:?} already exists")]
    CustomerExists(String),
    #[error("deposit {reference} of {asset} was already credited")]
    DepositAlreadyCredited { asset: String, reference: String },
    #[error(transparent)]
    Ledger(#[from] strongroom_core::ledger::LedgerError),
    #[error("withdrawal is {from}; it cannot become {to}")]
    InvalidTransition { from: &'static str, to: &'static str },
    /// A database constraint refused a write; commands translate the ones they expect
    /// (a duplicate customer, deposit or idempotency key) into their own variants.
    #[error("{} constraint on table {table:?} refused the write", if *unique { "a unique" } else { "a foreign-key" })]
    Constraint { table: String, unique: bool },
    /// A compare-and-swap write found the record changed (or present, or gone) since it
    /// was read; nothing was written. Read again and retry.
    #[error("{entity} changed concurrently; nothing was written")]
    Stale { entity: String },
    #[error("injected fault at {0}")]
    InjectedFault(&'static str),
    /// A command's own precondition failed (a transaction that cannot be built, a fee above
    /// its reservation); nothing was written.
    #[error("{0}")]
    Refused(String),
    /// A build would spend a coin another withdrawal's transaction already spends; nothing
    /// was written. Choose the coins again.
    #[error("coin {coin} is already spent by the transaction of {owner}")]
    CoinTaken { coin: String, owner: String },
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migration failed: {0}")]
    Migration(#[from] sqlx::migrate::MigrateError),
    #[error("unsupported database URL {0:?}: use sqlite://PATH or postgres://…")]
    UnsupportedUrl(String),
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

impl StoreError {
    /// Replace a unique violation on `table` with the error `meaning` gives.
    pub(crate) fn on_unique(self, table: &str, meaning: impl FnOnce() -> StoreError) -> StoreError {
        match self {
            StoreError::Constraint { table: t, unique: true } if t == table => meaning(),
            other => other,
        }
    }
}

/// Everything the API and the runtime need from storage: every domain's trait. `dyn Store`
/// reaches all of them; a caller names the domains it uses (`use
/// strongroom_store::prelude::*`).
pub trait Store:
    Ledger
    + Withdrawals
    + ChainTxs
    + Deposits
    + Sweeps
    + RiskStore
    + AccountStore
    + Tokens
    + Coordination
    + GovernanceStore
    + AuditStore
    + Send
    + Sync
    + std::fmt::Debug
{
}

impl<T> Store for T where
    T: Ledger
        + Withdrawals
        + ChainTxs
        + Deposits
        + Sweeps
        + RiskStore
        + AccountStore
        + Tokens
        + Coordination
        + GovernanceStore
        + AuditStore
        + Send
        + Sync
        + std::fmt::Debug
{
}

/// Customers, the double-entry ledger and its balances, deposits credited by hand or
/// governance, the treasury account.
#[async_trait]
pub trait Ledger: Send + Sync {
    async fn create_customer(
        &self,
        ctx: &WriteCtx,
        idem: Option<&Idempotency>,
        new: NewCustomer,
    ) -> Result<Customer>;
    async fn get_customer(&self, id: Uuid) -> Result<Customer>;
    /// The customer with the exchange's own id (None: no such customer).
    async fn customer_by_external_id(&self, external_id: &str) -> Result<Option<Customer>>;
    /// Credit a confirmed deposit to a customer (operator action until chain watchers exist).
    /// The same `(asset, reference)` is credited at most once.
    async fn credit_deposit(
        &self,
        ctx: &WriteCtx,
        idem: Option<&Idempotency>,
        new: NewDeposit,
    ) -> Result<Deposit>;
    /// The treasury's customer row (see `core::ledger::TREASURY_CUSTOMER`); made on first use.
    async fn ensure_treasury(&self, ctx: &WriteCtx) -> Result<Customer>;
    async fn balances(&self, customer_id: Uuid) -> Result<Vec<Balance>>;
    /// A customer's postings, newest first (then by entry id and posting number), after
    /// `after` when given, at most `limit` (up to 1,001: a page and a look past it).
    async fn ledger_lines(
        &self,
        customer_id: Uuid,
        after: Option<&Keyset>,
        limit: u32,
    ) -> Result<Vec<LedgerLine>>;
    /// Totals per asset across all accounts, for the double-entry check.
    async fn custody_totals(&self) -> Result<Vec<CustodyTotal>>;
    /// Up to `limit` customers (never the treasury) with a balance, available or pending, in
    /// `asset` (any asset when `None`), in id order after `after`: whom an incident notice
    /// goes to, a page at a time.
    async fn holders(
        &self,
        asset: Option<&strongroom_units::AssetSymbol>,
        after: Option<Uuid>,
        limit: u32,
    ) -> Result<Vec<Uuid>>;
}

/// Withdrawals from request to settlement, who asked (initiations), approvals, and the signer
/// nodes' latest refusal.
#[async_trait]
pub trait Withdrawals: Send + Sync {
    /// Store a planned withdrawal and reserve its funds (available -> pending) atomically.
    async fn request_withdrawal(
        &self,
        ctx: &WriteCtx,
        idem: Option<&Idempotency>,
        planned: PlannedWithdrawal,
    ) -> Result<Withdrawal>;
    /// [`Store::request_withdrawal`] with what is kept beside it in the same transaction: the
    /// signed requests for it (the initiating member's, the customer's own; its id is the
    /// requests' id) and the risk event with the device and address it came from. A crash
    /// leaves all of them or none, and a retry with the same idempotency key gets the first
    /// withdrawal back without a second event.
    async fn request_withdrawal_with(
        &self,
        ctx: &WriteCtx,
        idem: Option<&Idempotency>,
        planned: PlannedWithdrawal,
        records: WithdrawalRecords,
    ) -> Result<Withdrawal>;
    /// The signed requests a withdrawal came with.
    async fn initiations(&self, withdrawal_id: Uuid) -> Result<Initiations>;
    /// How many withdrawals are in each unfinished state, and how old the oldest is.
    async fn withdrawal_backlog(&self, now_ms: i64) -> Result<Vec<StateBacklog>>;
    /// Move a withdrawal to `to`, with the ledger entry that transition needs (release for
    /// `Cancelled`, settle for `Settled`).
    async fn transition_withdrawal(
        &self,
        ctx: &WriteCtx,
        idem: Option<&Idempotency>,
        id: Uuid,
        to: WithdrawalState,
        entry_id: Uuid,
    ) -> Result<Withdrawal>;
    /// An approver denies a reserved withdrawal: it is cancelled (its funds released) and the
    /// denial kept with it, in one transaction. One denial ends the request for everyone.
    async fn deny_withdrawal(
        &self,
        ctx: &WriteCtx,
        idem: Option<&Idempotency>,
        id: Uuid,
        denial: Denial,
        entry_id: Uuid,
    ) -> Result<Withdrawal>;
    /// Who denied a withdrawal, and why (None: not denied).
    async fn withdrawal_denial(&self, id: Uuid) -> Result<Option<Denial>>;
    async fn get_withdrawal(&self, id: Uuid) -> Result<Withdrawal>;
    async fn list_withdrawals(&self, filter: &WithdrawalFilter) -> Result<Vec<Withdrawal>>;
    /// Keep an approver's signed approval of a withdrawal (replacing that approver's earlier
    /// one) and return all of them. The store does not vouch for approvals: whoever uses
    /// them verifies them against the governance log.
    async fn add_approval(
        &self,
        ctx: &WriteCtx,
        withdrawal_id: Uuid,
        approval: strongroom_governance::approval::Approval,
    ) -> Result<Vec<strongroom_governance::approval::Approval>>;
    async fn approvals(
        &self,
        withdrawal_id: Uuid,
    ) -> Result<Vec<strongroom_governance::approval::Approval>>;
    /// Keep the signer nodes' latest refusal of a withdrawal (replacing an earlier one), as the
    /// node sent it, for the API to show. Nothing decides on it.
    async fn note_signer_refusal(
        &self,
        ctx: &WriteCtx,
        withdrawal_id: Uuid,
        refusal: &strongroom_governance::refusal::Refusal,
    ) -> Result<()>;
    async fn signer_refusal(
        &self,
        withdrawal_id: Uuid,
    ) -> Result<Option<strongroom_governance::refusal::Refusal>>;
}

/// Transactions on chain for withdrawals and sweeps: built (nonce reserved), signed, broadcast,
/// concluded.
#[async_trait]
pub trait ChainTxs: Send + Sync {
    /// Reserved → built, atomically, for a withdrawal or a sweep: allocate the sending
    /// account's next nonce, build the unsigned transaction for it, store both, and reserve
    /// the fee from the treasury. Called again once built, it returns the stored
    /// transaction unchanged.
    async fn build_tx(&self, ctx: &WriteCtx, build: BuildTx) -> Result<ChainTx>;
    /// Built → signed: store the signed transaction. If one is stored already it stays and
    /// is returned: a withdrawal never has two signed transactions.
    async fn record_signed(
        &self,
        ctx: &WriteCtx,
        id: Uuid,
        signed: strongroom_chain::SignedTx,
    ) -> Result<ChainTx>;
    /// Signed → broadcast. Idempotent.
    async fn record_broadcast(&self, ctx: &WriteCtx, id: Uuid) -> Result<ChainTx>;
    /// Broadcast, still waiting: store an unsigned fee bump (the next version), unless the
    /// latest one is not signed yet (then that one is returned and nothing is written). At
    /// most [`MAX_BUMPS`]. The store cannot read a transaction: that a bump spends exactly
    /// the first one's coins is the engine's to build and every signer node's to check.
    async fn bump_tx(&self, ctx: &WriteCtx, id: Uuid, unsigned: Vec<u8>) -> Result<Bump>;
    /// Store a bump's signed transaction (written once; the same again is harmless).
    async fn record_bump_signed(
        &self,
        ctx: &WriteCtx,
        id: Uuid,
        version: u32,
        signed: strongroom_chain::SignedTx,
    ) -> Result<Bump>;
    /// The bumps of `id`'s transaction, oldest first.
    async fn bumps(&self, id: Uuid) -> Result<Vec<Bump>>;
    /// The signed bump `version` is the one the chain included: it becomes the transaction
    /// of record (before the withdrawal is concluded). Idempotent.
    async fn adopt_bump(&self, ctx: &WriteCtx, id: Uuid, version: u32) -> Result<ChainTx>;
    /// Broadcast → settled or failed, with the ledger: for a withdrawal, the customer's
    /// pending funds leave custody (or return, if the transaction reverted); for any, the fee
    /// burned leaves custody from the treasury's reservation and the rest of it returns.
    async fn conclude_tx(
        &self,
        ctx: &WriteCtx,
        id: Uuid,
        conclusion: Conclusion,
    ) -> Result<ChainTx>;
    async fn chain_tx(&self, owner_id: Uuid) -> Result<Option<ChainTx>>;
    /// Of `coins` (`txid:vout`) on `chain`, those a built transaction has reserved, with
    /// their owner.
    async fn reserved_coins(
        &self,
        chain: &strongroom_units::ChainId,
        coins: &[String],
    ) -> Result<std::collections::BTreeMap<String, Uuid>>;
}

/// Deposit addresses and the deposit watcher: its cursor, the blocks it saw, transfers found,
/// credited, reversed or orphaned.
#[async_trait]
pub trait Deposits: Send + Sync {
    /// The customer's deposit address on `chain` from `new.wallet`'s key, made (index
    /// allocated, address derived) on first request; the same one after that. A customer
    /// has one per wallet: after a key migration, the new key's, and the old one still.
    async fn deposit_address(
        &self,
        ctx: &WriteCtx,
        new: NewDepositAddress,
    ) -> Result<DepositAddress>;
    async fn deposit_addresses(
        &self,
        chain: &strongroom_units::ChainId,
    ) -> Result<Vec<DepositAddress>>;
    /// Up to `limit` of `wallet`'s deposit addresses on `chain` whose path index is at
    /// least `from_index`, in index order (the watcher loads new addresses this way, not all
    /// of them each pass).
    async fn deposit_addresses_from(
        &self,
        chain: &strongroom_units::ChainId,
        wallet: &str,
        from_index: u64,
        limit: u32,
    ) -> Result<Vec<DepositAddress>>;
    /// The deposit address `address` on `chain` (compared case-insensitively), if it is one.
    async fn find_deposit_address(
        &self,
        chain: &strongroom_units::ChainId,
        address: &str,
    ) -> Result<Option<DepositAddress>>;
    /// The next block the watcher reads on `chain`, if it has started.
    async fn chain_cursor(&self, chain: &strongroom_units::ChainId) -> Result<Option<u64>>;
    /// The blocks the watcher read most recently, highest first.
    async fn recent_blocks(
        &self,
        chain: &strongroom_units::ChainId,
        limit: u32,
    ) -> Result<Vec<strongroom_chain::BlockRef>>;
    /// Store what a watcher pass read and move the cursor, in one commit. A transfer seen
    /// again (re-included after a reorganisation) gets its new block.
    async fn record_scan(&self, ctx: &WriteCtx, batch: ScanBatch) -> Result<()>;
    /// A reorganisation from block `fork` on: forget those blocks, move the cursor back, and
    /// mark the transfers in them orphaned until they are seen again or resolved.
    async fn rewind_chain(
        &self,
        ctx: &WriteCtx,
        chain: &strongroom_units::ChainId,
        fork: u64,
    ) -> Result<()>;
    async fn chain_deposits(
        &self,
        chain: &strongroom_units::ChainId,
        state: Option<ChainDepositState>,
    ) -> Result<Vec<ChainDeposit>>;
    /// Transfers seen in canonical blocks and not credited yet.
    async fn uncredited_deposits(
        &self,
        chain: &strongroom_units::ChainId,
    ) -> Result<Vec<ChainDeposit>>;
    /// Credit a seen transfer to its customer's ledger (once).
    async fn credit_chain_deposit(
        &self,
        ctx: &WriteCtx,
        chain: &strongroom_units::ChainId,
        txid: &str,
        log_index: u64,
        ids: [Uuid; 2],
    ) -> Result<ChainDeposit>;
    /// An orphaned transfer that the chain no longer has: dropped if never credited; else
    /// its credit is reversed, or held (and alerted) if the customer no longer has it.
    async fn resolve_orphan(
        &self,
        ctx: &WriteCtx,
        chain: &strongroom_units::ChainId,
        txid: &str,
        log_index: u64,
        entry_id: Uuid,
    ) -> Result<ChainDeposit>;
}

/// Sweeps from deposit addresses to the hot wallet and from hot to cold.
#[async_trait]
pub trait Sweeps: Send + Sync {
    /// Store a planned sweep or top-up (state reserved).
    async fn create_sweep(&self, ctx: &WriteCtx, sweep: Sweep) -> Result<Sweep>;
    async fn get_sweep(&self, id: Uuid) -> Result<Sweep>;
    /// Sweeps on `chain`; with `open`, only those not yet final.
    async fn list_sweeps(
        &self,
        chain: &strongroom_units::ChainId,
        open: bool,
    ) -> Result<Vec<Sweep>>;
    /// Ask for a refill of a hot wallet from cold (state `awaiting_approvals`), unless one is
    /// already open for the same chain and asset: then that one is returned and nothing is
    /// written (two treasury passes, or two instances, never ask twice).
    async fn open_refill(&self, ctx: &WriteCtx, refill: Refill) -> Result<Refill>;
    async fn get_refill(&self, id: Uuid) -> Result<Refill>;
    /// Refills, newest first, a page at a time; with `open`, only those still asking.
    async fn list_refills(
        &self,
        open: bool,
        after: Option<&Keyset>,
        limit: u32,
    ) -> Result<Vec<Refill>>;
    /// Change an open refill. An approval must name the refill's intent; a bundle or an end
    /// must be a forward step ([`RefillState::may_become`]); a refill that ended takes no
    /// change (`InvalidTransition`).
    async fn update_refill(&self, ctx: &WriteCtx, id: Uuid, change: RefillChange)
        -> Result<Refill>;
}

/// Risk assessments, the review queue and risk events.
#[async_trait]
pub trait RiskStore: Send + Sync {
    /// Store the risk engine's assessment of a withdrawal (once; a repeat returns the first).
    async fn assess_withdrawal(&self, ctx: &WriteCtx, review: RiskReview) -> Result<RiskReview>;
    /// An analyst's action on a withdrawal's review (release and reject only while open).
    async fn review_withdrawal(
        &self,
        ctx: &WriteCtx,
        id: Uuid,
        action: ReviewAction,
    ) -> Result<RiskReview>;
    async fn risk_review(&self, id: Uuid) -> Result<Option<RiskReview>>;
    /// Reviews, oldest first (then by withdrawal id), after `after` when given; with `state`,
    /// only those.
    async fn list_risk_reviews(
        &self,
        state: Option<RiskState>,
        after: Option<&Keyset>,
        limit: u32,
    ) -> Result<Vec<RiskReview>>;
    /// Up to `limit` reviews changed after `updated_after_ms`, oldest change first.
    async fn risk_reviews_since(
        &self,
        updated_after_ms: i64,
        limit: u32,
    ) -> Result<Vec<RiskReview>>;
    async fn add_risk_event(&self, ctx: &WriteCtx, event: RiskEvent) -> Result<RiskEvent>;
    /// Reviews waiting for an analyst (open).
    async fn review_queue(&self) -> Result<u64>;
    /// Risk events after `after_ms`, in time order, at most `limit`.
    async fn risk_events(&self, after_ms: i64, limit: u32) -> Result<Vec<RiskEvent>>;
    async fn risk_event(&self, id: Uuid) -> Result<Option<RiskEvent>>;
    /// One customer's risk events, newest first (then by id), after `after` when given.
    async fn customer_risk_events(
        &self,
        customer_id: Uuid,
        after: Option<&Keyset>,
        limit: u32,
    ) -> Result<Vec<RiskEvent>>;
    /// The kept profiles of those of `customers` that have one (encoded by the risk crate).
    async fn risk_profiles(&self, customers: &[String]) -> Result<Vec<(String, Vec<u8>)>>;
    /// Customers whose profile a commit after `after_version` changed (at most `limit`).
    async fn risk_profiles_changed(&self, after_version: i64, limit: u32) -> Result<Vec<String>>;
    /// The version of the risk worker's last commit (0: none yet).
    async fn risk_learning_version(&self) -> Result<i64>;
    /// The risk worker's last commit: its version and named states.
    async fn risk_learning(&self) -> Result<RiskLearning>;
    /// Keep a pass of the risk worker, all or nothing: `profiles` (customer, bytes) and
    /// named `state`, as commit `base + 1`. Refused with [`StoreError::Stale`] unless the
    /// last commit is `base` (another instance committed meanwhile). Returns the new version.
    async fn commit_risk_learning(
        &self,
        base: i64,
        now_ms: i64,
        profiles: Vec<(String, Vec<u8>)>,
        state: Vec<(String, Vec<u8>)>,
    ) -> Result<i64>;
    /// Register a version of the risk model (a candidate, numbered after the last).
    async fn register_risk_model(&self, ctx: &WriteCtx, model: NewRiskModel) -> Result<RiskModel>;
    /// Move a version: to `Shadow` (from candidate or retired; a previous shadow is retired),
    /// to `Live` (from any other; the previous live one is retired, and so is a shadow that is
    /// promoted), to `Retired` (a candidate or shadow; the live one only goes when another
    /// takes its place). Audited with `note`.
    async fn set_risk_model_status(
        &self,
        ctx: &WriteCtx,
        version: i64,
        to: ModelStatus,
        note: String,
    ) -> Result<RiskModel>;
    /// Every version, oldest first (without their states).
    async fn risk_models(&self) -> Result<Vec<RiskModel>>;
    /// A version's state.
    async fn risk_model_state(&self, version: i64) -> Result<Option<Vec<u8>>>;
}

/// Customers' sealed contact details and account-security records (auth records).
#[async_trait]
pub trait AccountStore: Send + Sync {
    /// Keep a customer's contact details, sealed by the caller (the store never sees them).
    async fn set_customer_contact(
        &self,
        ctx: &WriteCtx,
        customer_id: Uuid,
        sealed: Vec<u8>,
    ) -> Result<()>;
    async fn customer_contact(&self, customer_id: Uuid) -> Result<Option<Vec<u8>>>;
    /// An account-security record (see [`AuthRecord`]).
    async fn auth_record(&self, kind: &str, id: &str) -> Result<Option<AuthRecord>>;
    /// The record of `kind` whose unique lookup key is `lookup`.
    async fn auth_record_by_lookup(&self, kind: &str, lookup: &str) -> Result<Option<AuthRecord>>;
    /// The records of `kind` that `owner` has, by id.
    async fn auth_records(&self, kind: &str, owner: &str) -> Result<Vec<AuthRecord>>;
    /// Every record of `kind` (for key rotation).
    async fn all_auth_records(&self, kind: &str) -> Result<Vec<AuthRecord>>;
    /// Every customer's sealed contact (for key rotation).
    async fn customer_contacts(&self) -> Result<Vec<(Uuid, Vec<u8>)>>;
    /// Apply `writes` in one audited commit (action `action` on `subject`), all or none. A
    /// record that changed since it was read fails the batch with [`StoreError::Stale`]; a
    /// taken lookup key with [`StoreError::Constraint`] on `auth_records`.
    async fn write_auth(
        &self,
        ctx: &WriteCtx,
        action: &str,
        subject: &str,
        writes: Vec<AuthWrite>,
    ) -> Result<Vec<AuthRecord>>;
}

/// API tokens and their restrictions.
#[async_trait]
pub trait Tokens: Send + Sync {
    async fn create_token(&self, ctx: &WriteCtx, token: NewApiToken) -> Result<ApiTokenRecord>;
    async fn get_token(&self, id: &str) -> Result<ApiTokenRecord>;
    async fn revoke_token(&self, ctx: &WriteCtx, id: &str) -> Result<ApiTokenRecord>;
    async fn list_tokens(&self) -> Result<Vec<ApiTokenRecord>>;
    /// Replace a token's restrictions (key rotation re-seals its signing key).
    async fn set_token_restrictions(
        &self,
        ctx: &WriteCtx,
        id: &str,
        restrictions: Option<TokenRestrictions>,
    ) -> Result<ApiTokenRecord>;
    /// Record a signed request's `nonce` for `token_id` until `expires_at_ms`; `false` when it
    /// was recorded before and has not expired (a replay, on this instance or another).
    /// Expired nonces are deleted on the way. Not audited: a replay cache, not business state.
    async fn use_nonce(
        &self,
        token_id: &str,
        nonce: &str,
        now_ms: i64,
        expires_at_ms: i64,
    ) -> Result<bool>;
}

/// What several instances on one database coordinate through (migration 0016): leases on
/// work, shared counters for limits, and the outbox of messages to deliver. Not audited:
/// coordination state, not business state (a lost lease or counter costs a retry, never
/// money: every money-moving write is still a compare-and-swap on its own row).
#[async_trait]
pub trait Coordination: Send + Sync {
    /// Take or renew the lease `name` for `holder` until `now_ms + ttl_ms`. `None` while
    /// another holder's lease is live. A change of holder raises the lease's token.
    async fn acquire_lease(
        &self,
        name: &str,
        holder: &str,
        now_ms: i64,
        ttl_ms: i64,
    ) -> Result<Option<Lease>>;
    /// Give the lease up, if `holder` has it (the next holder need not wait for it to expire).
    async fn release_lease(&self, name: &str, holder: &str) -> Result<()>;
    /// Every lease whose name starts with `prefix`, live or not.
    async fn leases(&self, prefix: &str) -> Result<Vec<Lease>>;
    /// Count one hit on `name` in its current fixed window of `window_ms` (a new window starts
    /// when the last one is over) and return the hits in the window, this one included.
    /// Windows longer than [`MAX_RATE_WINDOW_MS`] are refused.
    async fn count_hit(&self, name: &str, now_ms: i64, window_ms: i64) -> Result<u64>;
    /// The hits on `name` in its current window (0 when it is over), without counting one.
    async fn hits(&self, name: &str, now_ms: i64, window_ms: i64) -> Result<u64>;
    /// Put a message in the outbox; a message whose id is already there is left as it is
    /// (so a step that is retried after a crash does not send twice). `true` if added.
    async fn enqueue(&self, message: NewOutboxMessage) -> Result<bool>;
    /// Claim up to `limit` due, undelivered messages for `holder` until `now_ms + claim_ms`;
    /// a message claimed by an instance that died is claimable again once its claim ends.
    async fn claim_outbox(
        &self,
        holder: &str,
        now_ms: i64,
        claim_ms: i64,
        limit: u32,
    ) -> Result<Vec<OutboxMessage>>;
    /// Mark a claimed message delivered.
    async fn outbox_delivered(&self, id: &str, holder: &str, now_ms: i64) -> Result<()>;
    /// Record a failed attempt; the message is due again at `next_attempt_ms`.
    async fn outbox_failed(
        &self,
        id: &str,
        holder: &str,
        error: &str,
        next_attempt_ms: i64,
    ) -> Result<()>;
    /// Record a failed attempt that was the last one the channel allows: the message is a
    /// dead letter, claimed no more until [`Coordination::redeliver`].
    async fn outbox_dead(&self, id: &str, holder: &str, error: &str, now_ms: i64) -> Result<()>;
    /// `channel`'s dead letters, by id, after `after` (a cursor: the last id of the page
    /// before), at most `limit`.
    async fn dead_letters(
        &self,
        channel: &str,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<OutboxMessage>>;
    /// Make a dead letter due again now, its attempts counted from zero; `false` when `id`
    /// is not a dead letter.
    async fn redeliver(&self, id: &str, now_ms: i64) -> Result<bool>;
    /// One message, delivered or not.
    async fn outbox_message(&self, id: &str) -> Result<Option<OutboxMessage>>;
    /// Undelivered messages still being retried, and the age in ms of the oldest (for
    /// metrics); dead letters are counted by [`Coordination::dead_letter_count`].
    async fn outbox_backlog(&self, now_ms: i64) -> Result<(u64, i64)>;
    /// Dead letters, every channel.
    async fn dead_letter_count(&self) -> Result<u64>;
    /// Replace what the job `name` last reported.
    async fn put_report(&self, name: &str, body: &serde_json::Value, now_ms: i64) -> Result<()>;
    /// What the job `name` last reported, if it ever did.
    async fn report(&self, name: &str) -> Result<Option<serde_json::Value>>;
}

/// The longest window [`Coordination::count_hit`] keeps (counters older than this are
/// deleted as others are counted).
pub const MAX_RATE_WINDOW_MS: i64 = 24 * 3_600_000;

/// The stored governance log (a copy: the signer nodes keep their own).
#[async_trait]
pub trait GovernanceStore: Send + Sync {
    /// The governance log as kept here (see [`GovernanceRecord`]).
    async fn governance(&self) -> Result<GovernanceRecord>;
    /// Change the governance record (one audited write) and return it as it now is.
    async fn write_governance(
        &self,
        ctx: &WriteCtx,
        op: GovernanceWrite,
    ) -> Result<GovernanceRecord>;
}

/// The backend, health, and the audit log as `verify_audit` reads it.
#[async_trait]
pub trait AuditStore: Send + Sync {
    fn backend(&self) -> Backend;
    /// A cheap round trip to the database, for health checks.
    async fn ping(&self) -> Result<()>;
    /// Audit records with `seq > after`, in order, at most `limit`.
    async fn audit_page(&self, after: u64, limit: u32) -> Result<Vec<StoredAuditRecord>>;
    /// The current state hash of every entity the audit log tracks, for `verify_audit`.
    async fn entity_states(&self) -> Result<Vec<(String, strongroom_audit::Digest32)>>;
    /// The last audit record's `seq` (0 before the first).
    async fn audit_head(&self) -> Result<u64>;
    /// Audit records with `seq > after` whose action starts with one of `prefixes` (the
    /// events feed), in order, at most `limit`, looking at no more than `scan` records: the
    /// second value is the last `seq` looked at (the next cursor even when nothing matched).
    async fn audit_matching(
        &self,
        after: u64,
        prefixes: &[&str],
        limit: u32,
        scan: u32,
    ) -> Result<(Vec<StoredAuditRecord>, u64)>;
}

/// Every storage trait, for callers: `use strongroom_store::prelude::*;`.
pub mod prelude {
    pub use crate::{
        AccountStore, AuditStore, ChainTxs, Coordination, Deposits, GovernanceStore, Ledger,
        RiskStore, Store, Sweeps, Tokens, Withdrawals,
    };
}
