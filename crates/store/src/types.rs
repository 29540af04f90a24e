//! What goes in and out of the store.

use serde::{Deserialize, Serialize};
use strongroom_audit::{Change, Digest32};
use strongroom_core::Timestamp;
use strongroom_units::{Amount, AssetSymbol};
use uuid::Uuid;

/// Who is acting and when, for the audit record.
#[derive(Debug, Clone)]
pub struct WriteCtx {
    /// `token:<id>`, `cli`, `system`.
    pub actor: String,
    pub now: Timestamp,
    /// The API request id, recorded in the audit detail.
    pub request_id: Option<String>,
}

/// An idempotency key, scoped to the principal that used it, and a hash of the request.
#[derive(Debug, Clone)]
pub struct Idempotency {
    pub principal: String,
    pub key: String,
    pub request_hash: String,
}

/// Longest accepted idempotency key.
pub const MAX_IDEMPOTENCY_KEY_LEN: usize = 128;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewCustomer {
    pub id: Uuid,
    pub external_id: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Customer {
    pub id: Uuid,
    pub external_id: String,
    pub created_at: Timestamp,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewDeposit {
    pub id: Uuid,
    pub entry_id: Uuid,
    pub customer_id: Uuid,
    pub asset: AssetSymbol,
    pub amount: Amount,
    /// The chain reference (transaction id and output), unique per asset.
    pub reference: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deposit {
    pub id: Uuid,
    pub customer_id: Uuid,
    pub asset: AssetSymbol,
    pub amount: Amount,
    pub reference: String,
    pub entry_id: Uuid,
    pub created_at: Timestamp,
}

/// A customer's balance of one asset.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Balance {
    pub asset: AssetSymbol,
    pub available: Amount,
    pub pending: Amount,
}

/// One posting on one of a customer's accounts, with the entry it belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerLine {
    pub entry_id: Uuid,
    pub kind: String,
    pub reference: String,
    pub account: String,
    pub asset: AssetSymbol,
    pub side: String,
    pub amount: Amount,
    pub balance_after: Amount,
    pub created_at: Timestamp,
    /// The posting's number within its entry.
    pub n: i64,
}

/// Custody vs. the sum of what customers own, per asset. Equal in a sound ledger.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CustodyTotal {
    pub asset: AssetSymbol,
    pub custody: Amount,
    pub customers: Amount,
}

#[derive(Debug, Clone, Default)]
pub struct WithdrawalFilter {
    pub customer_id: Option<Uuid>,
    pub state: Option<strongroom_core::withdrawal::WithdrawalState>,
    /// Only those listed after this one (newest first: older, or as old with a greater id).
    pub after: Option<Keyset>,
    pub limit: u32,
}

/// Where a page of a list starts: just past the row with this sort key — its time, its id and,
/// for a ledger posting, its number within the entry (0 elsewhere). The API hands it out as an
/// opaque cursor; rows added later never shift a page already read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Keyset {
    pub at_ms: i64,
    pub id: String,
    pub n: i64,
}

/// What an API token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Everything, including crediting deposits and managing tokens.
    Operator,
    /// The exchange's backend: customers, balances, withdrawals.
    Service,
    /// Read-only access.
    Auditor,
    /// Staff who approve withdrawals (as their governance member, with 2FA).
    Approver,
    /// Staff who work the risk review queue.
    Analyst,
    /// Staff who propose and submit governance changes.
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Operator => "operator",
            Role::Service => "service",
            Role::Auditor => "auditor",
            Role::Approver => "approver",
            Role::Analyst => "analyst",
            Role::Admin => "admin",
        }
    }
    pub fn parse(s: &str) -> Option<Role> {
        [Role::Operator, Role::Service, Role::Auditor, Role::Approver, Role::Analyst, Role::Admin]
            .into_iter()
            .find(|r| r.as_str() == s)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewApiToken {
    pub id: String,
    pub name: String,
    pub role: Role,
    /// The token's hash; the store never sees the token.
    pub token_hash: String,
    pub restrictions: Option<TokenRestrictions>,
}

/// Limits on an API client's token beyond its role (the server enforces them).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRestrictions {
    /// Resources it may use: `withdrawals` (read and write) or `withdrawals:read`; `*` for
    /// all. `None`: every resource its role allows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scopes: Option<Vec<String>>,
    /// IP addresses or CIDR ranges it may call from. `None`: anywhere.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_ips: Option<Vec<String>>,
    /// The request-signing key, sealed (hex): when set, every request must be signed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signing_key: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiTokenRecord {
    pub id: String,
    pub name: String,
    pub role: Role,
    pub token_hash: String,
    pub created_at: Timestamp,
    pub revoked_at: Option<Timestamp>,
    pub restrictions: Option<TokenRestrictions>,
}

/// An audit record as stored, with the leaf hash written beside it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredAuditRecord {
    pub record: strongroom_audit::AuditRecord,
    pub leaf_hash: Digest32,
}

pub(crate) fn change(entity: String, before: Option<Digest32>, after: Option<Digest32>) -> Change {
    Change { entity, before, after }
}

/// A withdrawal's or a sweep's transaction on its chain, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainTx {
    pub owner_id: Uuid,
    pub chain: strongroom_units::ChainId,
    pub wallet: String,
    pub nonce: u64,
    /// The unsigned transaction, hex.
    pub unsigned_tx: String,
    /// The chain's fee asset, and how much of it the treasury set aside for this transaction.
    pub fee_asset: AssetSymbol,
    pub fee_reserved: Amount,
    /// Written once, before the first broadcast.
    pub signed: Option<strongroom_chain::SignedTx>,
    /// The block that included it, once the withdrawal is settled or failed.
    pub block: Option<strongroom_chain::BlockRef>,
    pub fee_paid: Option<Amount>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

/// How many fee bumps one transaction may get (with the first, the five versions the signer
/// nodes sign for one intent at most).
pub const MAX_BUMPS: u32 = 4;

/// A fee bump of a broadcast transaction: a replacement spending exactly its coins, at a
/// higher fee (version 1, 2, …; the transaction in [`ChainTx`] is version 0).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bump {
    pub owner_id: Uuid,
    pub version: u32,
    /// The unsigned replacement, hex.
    pub unsigned_tx: String,
    /// Once the signer nodes signed it.
    pub signed: Option<strongroom_chain::SignedTx>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

/// Builds the unsigned transaction for the nonce the store allocates. Pure, and may run
/// more than once (a batch that fails is replayed).
pub type TxBuilder = std::sync::Arc<dyn Fn(u64) -> Result<Vec<u8>, String> + Send + Sync>;

/// Reserved → built: what the store needs to allocate a nonce and store the transaction of
/// a withdrawal or a sweep (`owner_id`).
#[derive(Clone)]
pub struct BuildTx {
    pub owner_id: Uuid,
    pub chain: strongroom_units::ChainId,
    /// The sending account, whose nonces these are: the wallet id for its own key
    /// (`hot-eth-1`), or wallet id and path for a child key (`hot-eth-1/0/3`).
    pub wallet: String,
    /// The lowest nonce the chain would accept now (the node's pending count): the store
    /// never allocates below it, nor below what it allocated before.
    pub nonce_floor: u64,
    pub fee_asset: AssetSymbol,
    /// The most the transaction may burn in fees, reserved from the treasury.
    pub fee_reserve: Amount,
    pub fee_entry_id: Uuid,
    /// The coins the transaction spends (`txid:vout`), on chains of unspent outputs: each is
    /// reserved for this owner in the same commit, and a coin another owner holds fails the
    /// build ([`StoreError::CoinTaken`](crate::StoreError::CoinTaken)). Empty on account
    /// chains, where the nonce orders the account's transactions (on Bitcoin the nonce only
    /// numbers the wallet's builds).
    pub coins: Vec<String>,
    pub build: TxBuilder,
}

impl std::fmt::Debug for BuildTx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BuildTx")
            .field("owner_id", &self.owner_id)
            .field("wallet", &self.wallet)
            .field("nonce_floor", &self.nonce_floor)
            .field("coins", &self.coins)
            .finish_non_exhaustive()
    }
}

/// Broadcast → settled or failed: how the transaction ended on chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Conclusion {
    /// The transaction succeeded (settled) or reverted (failed: the customer's funds return).
    pub success: bool,
    pub block: strongroom_chain::BlockRef,
    pub fee_paid: Amount,
    /// Ids for the entries: the customer's settle or release, the fee paid, the unburned
    /// fee released.
    pub entry_ids: [Uuid; 3],
}

/// Derives the address at a path index (pure; may run more than once).
pub type AddressDeriver = std::sync::Arc<dyn Fn(u32) -> Result<String, String> + Send + Sync>;

/// A request for a customer's deposit address on a chain.
#[derive(Clone)]
pub struct NewDepositAddress {
    pub chain: strongroom_units::ChainId,
    pub wallet: String,
    pub customer_id: Uuid,
    pub derive: AddressDeriver,
}

impl std::fmt::Debug for NewDepositAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewDepositAddress")
            .field("chain", &self.chain)
            .field("customer_id", &self.customer_id)
            .finish_non_exhaustive()
    }
}

/// A customer's deposit address: the hot wallet key's child at `[0, path_index]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DepositAddress {
    pub chain: strongroom_units::ChainId,
    pub customer_id: Uuid,
    pub wallet: String,
    pub path_index: u32,
    pub address: String,
    pub created_at: Timestamp,
}

/// A transfer into one of our addresses, as the watcher saw it in a block.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeenTransfer {
    pub txid: String,
    pub log_index: u64,
    pub to_address: String,
    /// Whose it is: the address's customer, or the treasury for a hot wallet.
    pub customer_id: Uuid,
    pub asset: AssetSymbol,
    pub amount: Amount,
    pub block: strongroom_chain::BlockRef,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChainDepositState {
    /// In a block on the canonical chain.
    Seen,
    /// Its block was reorganised away; it may come back in another.
    Orphaned,
    /// Gone from the chain before it was credited.
    Dropped,
    /// Gone from the chain after it was credited; the credit was taken back.
    Reversed,
    /// Gone from the chain after it was credited, and the credit could not be taken back
    /// (the customer no longer has it): an alert for the security team.
    Held,
}

impl ChainDepositState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Seen => "seen",
            Self::Orphaned => "orphaned",
            Self::Dropped => "dropped",
            Self::Reversed => "reversed",
            Self::Held => "held",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        [Self::Seen, Self::Orphaned, Self::Dropped, Self::Reversed, Self::Held]
            .into_iter()
            .find(|k| k.as_str() == s)
    }
}

/// A watched transfer as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainDeposit {
    pub chain: strongroom_units::ChainId,
    pub transfer: SeenTransfer,
    pub state: ChainDepositState,
    /// Set once credited to the ledger.
    pub deposit_id: Option<Uuid>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

/// What one pass of the watcher read: the blocks (with their hashes) and the transfers in
/// them; the cursor moves to `next_block`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScanBatch {
    pub chain: strongroom_units::ChainId,
    pub blocks: Vec<strongroom_chain::BlockRef>,
    pub transfers: Vec<SeenTransfer>,
    pub next_block: u64,
}

/// What a sweep does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SweepKind {
    /// Everything at a deposit address to the hot wallet.
    Sweep,
    /// Gas money from the hot wallet to a deposit address that holds tokens.
    TopUp,
    /// A hot wallet's balance above its high watermark to a whitelisted cold address.
    ToCold,
}

impl SweepKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SweepKind::Sweep => "sweep",
            SweepKind::TopUp => "top_up",
            SweepKind::ToCold => "to_cold",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        [SweepKind::Sweep, SweepKind::TopUp, SweepKind::ToCold]
            .into_iter()
            .find(|k| k.as_str() == s)
    }
}

/// A movement between our own addresses. Its intent says what moves (the source wallet is
/// the key's wallet; `path` selects the child key that sends, empty for the key itself).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sweep {
    pub id: Uuid,
    pub kind: SweepKind,
    pub path: Vec<u32>,
    pub from_address: String,
    pub intent: strongroom_core::Intent,
    /// The same lifecycle as a withdrawal's, from reserved (planned) to settled or failed.
    pub state: strongroom_core::withdrawal::WithdrawalState,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

impl Sweep {
    /// The sending account, as nonces are kept (see [`BuildTx::wallet`]).
    pub fn account(&self) -> String {
        account_name(self.intent.source_wallet.as_str(), &self.path)
    }
}

/// Where a refill of a hot wallet from cold storage stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RefillState {
    /// Asked for; governance does not allow it yet with the approvals at hand.
    AwaitingApprovals,
    /// The signing bundle is ready for the key holders.
    Ready,
    /// The hot wallet is back above its low watermark (the refill arrived, or was not needed).
    Done,
    /// The intent expired before the refill arrived; the treasury asks again.
    Expired,
}

impl RefillState {
    pub const ALL: [RefillState; 4] = [
        RefillState::AwaitingApprovals,
        RefillState::Ready,
        RefillState::Done,
        RefillState::Expired,
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            RefillState::AwaitingApprovals => "awaiting_approvals",
            RefillState::Ready => "ready",
            RefillState::Done => "done",
            RefillState::Expired => "expired",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }
    /// Still asking: at most one open refill per chain and asset.
    pub fn is_open(self) -> bool {
        matches!(self, RefillState::AwaitingApprovals | RefillState::Ready)
    }
    /// Whether a refill may go from `self` to `to`: forward, or from ready back to awaiting
    /// approvals when governance no longer allows its bundle (its approvals expired, a
    /// freeze); a refill that ended stays ended.
    pub fn may_become(self, to: RefillState) -> bool {
        use RefillState::*;
        matches!(
            (self, to),
            (AwaitingApprovals, Ready | Done | Expired)
                | (Ready, AwaitingApprovals | Done | Expired)
        )
    }
}

/// A refill of a hot wallet from cold storage, as the server prepares it for the offline
/// signers: the cold-tier intent (from the cold wallet to the hot wallet's address), the
/// approvals people sent for it, and the signing bundle once governance allows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refill {
    pub id: Uuid,
    pub intent: strongroom_core::Intent,
    /// The intent's hash (hex), what approvers sign.
    pub intent_hash: String,
    pub state: RefillState,
    pub approvals: Vec<strongroom_governance::approval::Approval>,
    /// The signing bundle (`strongroom-cold` JSON) once `state` is `ready`.
    pub bundle: Option<String>,
    /// Why there is no bundle yet (the governance gate's explanation, or the cold wallet's
    /// coins falling short).
    pub waiting_for: Option<String>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

/// A change to an open refill, written with [`crate::Sweeps::update_refill`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefillChange {
    /// Keep this approval (one per approver: a newer one replaces the approver's older one).
    Approval(strongroom_governance::approval::Approval),
    /// Note why no bundle can be made yet.
    Waiting(String),
    /// The bundle is made: the refill becomes `ready`.
    Bundle(String),
    /// Governance no longer allows the bundle (why): it is dropped and the refill awaits
    /// approvals again.
    Reopen(String),
    /// The refill ends (`done` or `expired`).
    End(RefillState),
}

/// `wallet` for the key itself, `wallet/i/j` for its child at path `[i, j]`.
pub fn account_name(wallet: &str, path: &[u32]) -> String {
    let mut s = wallet.to_owned();
    for p in path {
        s.push('/');
        s.push_str(&p.to_string());
    }
    s
}

/// The governance log as the online side keeps it. The store checks order only (one
/// genesis, entries numbered from 1 with no gap, one open proposal); the server replays it
/// to show it, and every signer node verifies all of it against its own pinned genesis.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GovernanceRecord {
    /// The genesis and its hash (hex), once installed.
    pub genesis: Option<(String, strongroom_governance::log::Genesis)>,
    pub entries: Vec<strongroom_governance::log::Entry>,
    /// The one change waiting for signatures.
    pub proposal: Option<strongroom_governance::log::Entry>,
}

/// One write to the governance record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GovernanceWrite {
    /// Install the genesis. Installing the same one again changes nothing; another one is
    /// refused.
    Genesis { pin: String, genesis: strongroom_governance::log::Genesis },
    /// Open a proposal: refused while another is open or if it is not the next entry.
    Propose(strongroom_governance::log::Entry),
    /// Replace the open proposal (with more signatures), if it is still `expected`.
    Update { expected: strongroom_governance::log::Entry, entry: strongroom_governance::log::Entry },
    /// Append the open proposal, as now signed, to the log, if it is still `expected`.
    Commit { expected: strongroom_governance::log::Entry, entry: strongroom_governance::log::Entry },
    /// Drop the open proposal numbered `seq`.
    Withdraw { seq: u64 },
}

/// Where a withdrawal stands with the risk engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RiskState {
    /// Allowed by the assessment.
    Cleared,
    /// Paused, in the review queue.
    Open,
    /// An analyst let it proceed.
    Released,
    /// An analyst refused it (it is cancelled).
    Rejected,
    /// Blocked by the assessment (a listed address, a block rule; it is cancelled).
    Blocked,
}

impl RiskState {
    pub fn as_str(self) -> &'static str {
        match self {
            RiskState::Cleared => "cleared",
            RiskState::Open => "open",
            RiskState::Released => "released",
            RiskState::Rejected => "rejected",
            RiskState::Blocked => "blocked",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        [Self::Cleared, Self::Open, Self::Released, Self::Rejected, Self::Blocked]
            .into_iter()
            .find(|x| x.as_str() == s)
    }
    /// Signing may go ahead.
    pub fn may_proceed(self) -> bool {
        matches!(self, RiskState::Cleared | RiskState::Released)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReviewNote {
    pub by: String,
    pub at_ms: i64,
    pub text: String,
}

/// An approver's denial of a withdrawal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Denial {
    /// Who denied it (the actor: a token or a staff account).
    pub by: String,
    /// In the approver's words (1 to 500 characters).
    pub reason: String,
    pub at: Timestamp,
}

/// The risk engine's decision on a withdrawal and the review that follows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RiskReview {
    pub withdrawal_id: Uuid,
    pub customer_id: Uuid,
    /// `allow`, `review` or `block`, as assessed.
    pub decision: String,
    pub state: RiskState,
    pub score: u32,
    /// Reasons, shadow reasons, features and rules version (the engine's JSON).
    pub assessment: serde_json::Value,
    pub assignee: Option<String>,
    pub notes: Vec<ReviewNote>,
    pub decided_by: Option<String>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

/// An analyst's action on a review.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReviewAction {
    Assign(String),
    Note(String),
    /// Only from `open`.
    Release(Option<String>),
    /// Only from `open`.
    Reject(Option<String>),
}

/// An event the risk engine learns from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RiskEvent {
    pub id: Uuid,
    pub customer_id: Uuid,
    /// `login`, `security_change`, `withdrawal_context`, `trade`, `deposit`.
    pub kind: String,
    pub at: Timestamp,
    pub data: serde_json::Value,
}

impl RiskEvent {
    /// The id of a withdrawal's `withdrawal_context` event, derived from the withdrawal's
    /// (the risk worker finds the context of any withdrawal by it, however old).
    pub fn context_id(withdrawal_id: Uuid) -> Uuid {
        use sha2::Digest;
        let h = sha2::Sha256::digest(format!("strongroom/withdrawal_context/{withdrawal_id}"));
        let mut b = [0u8; 16];
        b.copy_from_slice(h.get(..16).unwrap_or(&[0; 16]));
        uuid::Builder::from_random_bytes(b).into_uuid()
    }
}

/// Where a version of the risk model stands (see the registry, migration 0020).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ModelStatus {
    /// Registered, not scored.
    Candidate,
    /// Scored beside the live model on every assessment, without deciding.
    Shadow,
    /// Decides.
    Live,
    /// Kept to roll back to.
    Retired,
}

impl ModelStatus {
    pub const ALL: [ModelStatus; 4] =
        [ModelStatus::Candidate, ModelStatus::Shadow, ModelStatus::Live, ModelStatus::Retired];

    pub fn as_str(self) -> &'static str {
        match self {
            ModelStatus::Candidate => "candidate",
            ModelStatus::Shadow => "shadow",
            ModelStatus::Live => "live",
            ModelStatus::Retired => "retired",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|x| x.as_str() == s)
    }
}

/// A version of the risk model in the registry (its state is read apart:
/// [`crate::RiskStore::risk_model_state`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RiskModel {
    pub version: i64,
    pub status: ModelStatus,
    /// The parameters it was built with.
    pub params: serde_json::Value,
    /// What it was trained on (labels, their time span, its figures on them).
    pub trained_on: serde_json::Value,
    /// Why it was last changed, by whom it says in the audit log.
    pub note: String,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    /// When it last became live.
    pub live_since: Option<Timestamp>,
}

/// A model to register.
#[derive(Debug, Clone, PartialEq)]
pub struct NewRiskModel {
    pub params: serde_json::Value,
    pub trained_on: serde_json::Value,
    pub state: Vec<u8>,
    pub note: String,
}

/// What the risk worker last kept (see [`crate::RiskStore::commit_risk_learning`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RiskLearning {
    /// The last commit (0: none yet).
    pub version: i64,
    /// Named states (`models`, `cursor`), encoded by their owner.
    pub state: std::collections::BTreeMap<String, Vec<u8>>,
}

/// One account-security record (see migration 0010): `kind` names what it is (`account`,
/// `session`, `device`, …), `owner` the account it belongs to, and `lookup` an optional
/// unique key within its kind (a blind index, never plaintext). The store does not read
/// bodies: the server owns their meaning and seals what is secret.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuthRecord {
    pub kind: String,
    pub id: String,
    pub owner: String,
    pub lookup: Option<String>,
    pub body: serde_json::Value,
    /// 1 when made; +1 on every write.
    pub version: i64,
    pub updated_at_ms: i64,
}

/// What a write expects to find, so concurrent changes cannot overwrite each other.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// The record must not exist yet.
    Absent,
    /// The record must be at this version.
    Version(i64),
}

/// One change in an [`Store::write_auth`] batch: `body: None` deletes.
#[derive(Debug, Clone, PartialEq)]
pub struct AuthWrite {
    pub kind: String,
    pub id: String,
    pub owner: String,
    pub lookup: Option<String>,
    pub body: Option<serde_json::Value>,
    pub expect: Expect,
}

impl AuthWrite {
    /// Make a new record.
    pub fn create(kind: &str, id: &str, owner: &str, body: serde_json::Value) -> Self {
        AuthWrite {
            kind: kind.into(),
            id: id.into(),
            owner: owner.into(),
            lookup: None,
            body: Some(body),
            expect: Expect::Absent,
        }
    }
    /// Replace `record`'s body, if nobody changed it since it was read.
    pub fn update(record: &AuthRecord, body: serde_json::Value) -> Self {
        AuthWrite {
            kind: record.kind.clone(),
            id: record.id.clone(),
            owner: record.owner.clone(),
            lookup: record.lookup.clone(),
            body: Some(body),
            expect: Expect::Version(record.version),
        }
    }
    /// Delete `record`, if nobody changed it since it was read.
    pub fn delete(record: &AuthRecord) -> Self {
        AuthWrite { body: None, ..Self::update(record, serde_json::Value::Null) }
    }
    pub fn with_lookup(mut self, lookup: impl Into<String>) -> Self {
        self.lookup = Some(lookup.into());
        self
    }
}

/// The signed requests for one withdrawal: the initiating member's (the exchange's backend, a
/// staff operator) and the customer's own.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Initiations {
    pub member: Option<strongroom_governance::initiation::Initiation>,
    pub customer: Option<strongroom_governance::initiation::Initiation>,
}

/// What is written beside a withdrawal, in its transaction.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WithdrawalRecords {
    pub signed: Initiations,
    /// The `withdrawal_context` risk event (device and address the request came from).
    pub context: Option<RiskEvent>,
}

/// The auth-record kind under which a customer's passkeys are kept as the signer nodes see
/// them (`governance::webauthn::PasskeySpec`, owner: the customer id), written with the
/// passkey itself.
pub const CUSTOMER_KEY_RECORD: &str = "customer_key";

/// A lease on a piece of work (see [`crate::Coordination`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Lease {
    pub name: String,
    pub holder: String,
    /// Raised each time the lease changes holder.
    pub token: i64,
    pub expires_at_ms: i64,
}

/// A message to put in the outbox.
#[derive(Debug, Clone, PartialEq)]
pub struct NewOutboxMessage {
    /// Chosen by the caller so that a retried step does not add the message twice
    /// (`withdrawal_paused/<withdrawal id>`).
    pub id: String,
    /// Which sender delivers it (`webhook`, `mail`).
    pub channel: String,
    pub kind: String,
    pub body: serde_json::Value,
    pub created_at_ms: i64,
}

/// A message in the outbox.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxMessage {
    pub id: String,
    pub channel: String,
    pub kind: String,
    pub body: serde_json::Value,
    pub created_at_ms: i64,
    /// Failed attempts so far.
    pub attempts: u32,
    pub next_attempt_ms: i64,
    pub delivered_at_ms: Option<i64>,
    pub last_error: Option<String>,
    /// When it became a dead letter (its channel's attempts ran out).
    pub dead_at_ms: Option<i64>,
}

/// Unfinished withdrawals in one state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateBacklog {
    pub state: strongroom_core::withdrawal::WithdrawalState,
    pub count: u64,
    /// Age of the oldest, in ms.
    pub oldest_ms: i64,
}
