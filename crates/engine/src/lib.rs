//! Durable workflows. Each step reads the stored state, does one thing, and stores the
//! result before the next step starts, so a crash anywhere resumes from the last stored
//! state and repeats nothing that matters:
//!
//! ```text
//! reserved ──build──▶ built ──sign──▶ signed ──send──▶ broadcast ──confirm──▶ settled | failed
//!   (nonce + unsigned tx     (signed tx stored      (resent from the        (ledger final,
//!    + fee reserve, one       before it is ever      store whenever the      fee paid from
//!    commit)                  sent)                  node lost it)           the treasury)
//! ```
//!
//! A withdrawal has exactly one stored unsigned transaction (one nonce), and exactly one
//! stored signed transaction: if the signers are asked twice (a crash between signing and
//! storing), the store keeps the first and the engine sends only what is stored.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use strongroom_chain::{ChainError, ClientError, TxStatus};
use strongroom_chain_ethereum::rpc::EthRpc;
use strongroom_core::withdrawal::{Withdrawal, WithdrawalState};
use strongroom_core::{new_id, Env, Intent, WalletId};
use strongroom_store::{
    account_name, BuildTx, Bump, Conclusion, Store, StoreError, Sweep, SweepKind, WithdrawalFilter,
    WriteCtx,
};
use strongroom_units::{Address, AssetSymbol, ChainId};
use tokio::sync::Mutex;
use uuid::Uuid;

pub use adapter::{BtcAdapter, ChainAdapter, EthAdapter, Plan, Planned};

pub mod adapter;
pub mod deposits;
pub mod reconcile;
pub mod rotation;
pub mod sweeps;
pub mod treasury;

/// Why a threshold signature was not made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SignError {
    /// A signer node refused, or the signing session failed: the node's typed refusal,
    /// unchanged.
    #[error("{0}")]
    Refused(Box<strongroom_governance::refusal::Refusal>),
    /// Something on this side of the nodes (finding the key, reading a reply).
    #[error("{message}")]
    Other { message: String, retryable: bool },
}

impl SignError {
    pub fn other(message: impl Into<String>, retryable: bool) -> SignError {
        SignError::Other { message: message.into(), retryable }
    }

    /// Signers were unreachable or busy (try again), rather than refusing.
    pub fn retryable(&self) -> bool {
        match self {
            SignError::Refused(r) => r.reason.retryable(),
            SignError::Other { retryable, .. } => *retryable,
        }
    }
}

impl From<strongroom_mpc::MpcError> for SignError {
    fn from(e: strongroom_mpc::MpcError) -> Self {
        SignError::other(e.to_string(), false)
    }
}

/// The signer nodes, as the engine sees them. The engine never holds a key: it hands the
/// intent and the unsigned transaction over and gets a signature back, which it checks by
/// attaching it (the chain codec refuses a signature that is not the wallet's).
#[async_trait]
pub trait TxSigner: Send + Sync {
    /// The wallet key's public half (SEC1, compressed).
    async fn public_key(&self, wallet: &WalletId) -> Result<Vec<u8>, SignError>;
    /// The wallet key's public half and BIP-32 chain code, from which deposit addresses
    /// (non-hardened children) are derived without the signers.
    async fn master(
        &self,
        wallet: &WalletId,
    ) -> Result<strongroom_mpc::ecdsa::MasterPublic, SignError>;
    /// A 64-byte `r || s` ECDSA signature (low s) over digest `input` of the transaction
    /// (Ethereum has one; a Bitcoin transaction one per input) by the wallet key's child at
    /// `path` (empty: the key itself), made by signer nodes that each decoded `unsigned` and
    /// checked it against `intent`.
    async fn sign(
        &self,
        wallet: &WalletId,
        path: &[u32],
        intent: &Intent,
        unsigned: &[u8],
        input: u32,
        auth: &SignAuth,
    ) -> Result<Vec<u8>, SignError>;
}

/// What the signer nodes need, beyond the transaction, to decide under governance: the
/// approvals submitted for the intent, the governance log (nodes append what they lack
/// after verifying all of it), whose withdrawal it is and who asked for it. Nodes trust none
/// of it blindly.
#[derive(Debug, Clone, Default)]
pub struct SignAuth {
    pub approvals: Vec<strongroom_governance::approval::Approval>,
    pub governance: Vec<strongroom_governance::log::Entry>,
    pub customer_id: Option<String>,
    /// The initiator's signed request, when the withdrawal came with one: the nodes check
    /// the intent against it and take who asked from it.
    pub initiation: Option<strongroom_governance::initiation::Initiation>,
    /// The customer's own signed request, and their passkeys (the nodes require the
    /// customer's signature once they have known one of the keys for the time-lock).
    pub customer_approval: Option<strongroom_governance::initiation::Initiation>,
    pub customer_keys: Vec<strongroom_governance::initiation::CustomerKey>,
}

/// Where a test may stop the engine on a withdrawal, as if the process died there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopPoint {
    /// The signed transaction is stored; nothing was sent.
    AfterSigned,
    /// The transaction was sent; the store does not know yet.
    AfterSend,
}

impl StopPoint {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "signed" => Some(StopPoint::AfterSigned),
            "sent" => Some(StopPoint::AfterSend),
            _ => None,
        }
    }
}

/// How one chain's withdrawals and sweeps are driven.
#[derive(Debug, Clone)]
pub struct ChainConfig {
    pub chain: ChainId,
    /// The chain's native coin, in which fees are paid (and reserved from the treasury).
    pub fee_asset: AssetSymbol,
    /// Blocks on top of (and including) the one with the transaction before it is final.
    pub confirmations: u64,
    pub stop_at: Option<StopPoint>,
    /// Customer withdrawals wait for the risk engine: built only once their review is
    /// cleared or released.
    pub require_risk: bool,
    /// This process's name in work leases (unique per running instance): several engines on
    /// one database each take a withdrawal only while they hold its lease.
    pub worker: String,
    /// How long the lease on one job lasts unless renewed ([`JOB_LEASE_MS`] by default).
    pub lease_ms: i64,
    /// The chain's hot wallet in use, when others were migrated into it: their movements
    /// to its address stay in custody (the signer nodes allow a migrating key nothing else).
    pub home: Option<WalletId>,
    /// After how long in the mempool a transaction gets a fee bump (when today's estimate
    /// pays enough more; see [`ChainAdapter::bump`]); `None`: never.
    pub bump_after_ms: Option<i64>,
}

/// How long a claim on one withdrawal or sweep lasts unless renewed (it is renewed before
/// every step; a signing round takes seconds).
pub const JOB_LEASE_MS: i64 = 20_000;

/// The lease name for one withdrawal or sweep.
pub fn job_lease(id: Uuid) -> String {
    format!("job/{id}")
}

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Chain(#[from] ChainError),
    #[error("node: {0}")]
    Node(#[from] ClientError),
    #[error("signers: {0}")]
    Sign(#[from] SignError),
    #[error("stopped at {0:?} (test stop point)")]
    Stopped(StopPoint),
    /// The stored governance cannot say what it must (which key holds a chain's money).
    #[error("governance: {0}")]
    Governance(String),
}

/// What one step did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// The withdrawal moved to this state.
    Moved(WithdrawalState),
    /// Nothing to do until the chain moves (or the fee drops): why.
    Waiting(String),
    /// Final, or not this engine's chain.
    Idle,
}

/// What a job moves: the one thing the engine branches on, instead of flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Moves {
    /// A customer's withdrawal: it waits for its risk review, carries the customer's signed
    /// requests and passkeys to the nodes, keeps the nodes' refusals for the API, and is
    /// cancelled when planned from a key governance has since migrated.
    Withdrawal { customer_id: Uuid },
    /// A movement between our own addresses (a deposit address into the hot wallet, gas to
    /// a deposit address) or from the hot wallet to cold.
    Internal(SweepKind),
}

/// A withdrawal or a sweep, as the engine drives it: both take the same path on chain.
#[derive(Debug, Clone)]
pub struct Job {
    pub id: Uuid,
    pub intent: Intent,
    /// The child key that sends (empty: the wallet's own key).
    pub path: Vec<u32>,
    pub state: WithdrawalState,
    pub moves: Moves,
}

impl From<&Withdrawal> for Job {
    fn from(w: &Withdrawal) -> Self {
        Job {
            id: w.id,
            intent: w.intent.clone(),
            path: Vec::new(),
            state: w.state,
            moves: Moves::Withdrawal { customer_id: w.customer_id },
        }
    }
}

impl From<&Sweep> for Job {
    fn from(s: &Sweep) -> Self {
        Job {
            id: s.id,
            intent: s.intent.clone(),
            path: s.path.clone(),
            state: s.state,
            moves: Moves::Internal(s.kind),
        }
    }
}

impl Job {
    /// The customer whose withdrawal this is (none for internal movements).
    pub fn customer(&self) -> Option<Uuid> {
        match self.moves {
            Moves::Withdrawal { customer_id } => Some(customer_id),
            Moves::Internal(_) => None,
        }
    }

    /// A customer's withdrawal, not a movement of our own.
    pub fn is_withdrawal(&self) -> bool {
        matches!(self.moves, Moves::Withdrawal { .. })
    }

    /// The sending account, as the store keeps its nonces.
    pub fn account(&self) -> String {
        account_name(self.intent.source_wallet.as_str(), &self.path)
    }
}

/// A wallet key or one of its children: wallet and path.
type KeyName = (WalletId, Vec<u32>);

/// Drives one chain's withdrawals and sweeps, whichever the chain: what differs is behind
/// its [`ChainAdapter`].
pub struct ChainEngine {
    store: Arc<dyn Store>,
    adapter: Arc<dyn ChainAdapter>,
    signer: Arc<dyn TxSigner>,
    env: Arc<dyn Env>,
    cfg: ChainConfig,
    keys: Mutex<HashMap<KeyName, (Vec<u8>, Address)>>,
}

impl std::fmt::Debug for ChainEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChainEngine").field("chain", &self.cfg.chain).finish_non_exhaustive()
    }
}

impl ChainEngine {
    pub fn new(
        store: Arc<dyn Store>,
        adapter: Arc<dyn ChainAdapter>,
        signer: Arc<dyn TxSigner>,
        env: Arc<dyn Env>,
        cfg: ChainConfig,
    ) -> Self {
        ChainEngine { store, adapter, signer, env, cfg, keys: Mutex::new(HashMap::new()) }
    }

    /// Ethereum's driver over a JSON-RPC node.
    pub fn ethereum(
        store: Arc<dyn Store>,
        rpc: EthRpc,
        signer: Arc<dyn TxSigner>,
        env: Arc<dyn Env>,
        cfg: ChainConfig,
    ) -> Self {
        Self::new(store, Arc::new(EthAdapter::new(rpc)), signer, env, cfg)
    }

    pub fn adapter(&self) -> &dyn ChainAdapter {
        self.adapter.as_ref()
    }

    fn ctx(&self) -> WriteCtx {
        WriteCtx { actor: "engine".into(), now: self.env.now(), request_id: None }
    }

    /// A wallet's key and address (asked of the signers once).
    pub async fn wallet(&self, wallet: &WalletId) -> Result<(Vec<u8>, Address), EngineError> {
        self.key_at(wallet, &[]).await
    }

    /// The public key and address of the wallet key's child at `path` (empty: the key).
    pub async fn key_at(
        &self,
        wallet: &WalletId,
        path: &[u32],
    ) -> Result<(Vec<u8>, Address), EngineError> {
        let mut keys = self.keys.lock().await;
        let name = (wallet.clone(), path.to_vec());
        if let Some(k) = keys.get(&name) {
            return Ok(k.clone());
        }
        let pk = if path.is_empty() {
            self.signer.public_key(wallet).await?
        } else {
            let master = self.signer.master(wallet).await?;
            master.derive(path).map_err(SignError::from)?.to_vec()
        };
        let address = self.adapter.address_of(&pk)?;
        keys.insert(name, (pk.clone(), address.clone()));
        Ok((pk, address))
    }

    /// The withdrawal or sweep with this id.
    pub async fn load(&self, id: Uuid) -> Result<Job, EngineError> {
        match self.store.get_withdrawal(id).await {
            Ok(w) => Ok(Job::from(&w)),
            Err(StoreError::NotFound { .. }) => Ok(Job::from(&self.store.get_sweep(id).await?)),
            Err(e) => Err(e.into()),
        }
    }

    /// Take every unfinished withdrawal and sweep on this chain as far as it can go now.
    /// Returns how many steps moved; errors are logged per job and retried on the next pass.
    pub async fn run_once(&self) -> Result<usize, EngineError> {
        let mut moved = 0;
        for sweep in self.store.list_sweeps(&self.cfg.chain, true).await? {
            match self.drive(sweep.id).await {
                Ok(n) => moved += n,
                Err(e @ EngineError::Stopped(_)) => return Err(e),
                Err(e) => {
                    tracing::warn!(sweep = %sweep.id, error = %e, "sweep step failed; will retry")
                }
            }
        }
        for state in [
            WithdrawalState::Broadcast,
            WithdrawalState::Signed,
            WithdrawalState::Built,
            WithdrawalState::Reserved,
        ] {
            let list = self
                .store
                .list_withdrawals(&WithdrawalFilter {
                    customer_id: None,
                    state: Some(state),
                    after: None,
                    limit: 1000,
                })
                .await?;
            for w in list.into_iter().filter(|w| w.intent.chain == self.cfg.chain) {
                match self.drive(w.id).await {
                    Ok(n) => moved += n,
                    Err(e @ EngineError::Stopped(_)) => return Err(e),
                    Err(e) => {
                        tracing::warn!(withdrawal = %w.id, error = %e, "withdrawal step failed; will retry")
                    }
                }
            }
        }
        Ok(moved)
    }

    /// Step one withdrawal or sweep until it waits or is final; returns how many steps it
    /// moved. Only while this engine holds the job's lease (renewed before each step): a
    /// job another live engine works is left to it, and one whose engine died is taken over
    /// once its lease runs out. The state each step starts from is read again after the
    /// lease, and every step is a compare-and-swap on that state, so even a holder that
    /// stalled past its lease cannot move a job twice.
    pub async fn drive(&self, id: Uuid) -> Result<usize, EngineError> {
        let name = job_lease(id);
        let worker = self.cfg.worker.as_str();
        let now = self.env.now().unix_ms();
        let Some(lease) = self.store.acquire_lease(&name, worker, now, self.cfg.lease_ms).await?
        else {
            tracing::debug!(withdrawal = %id, "another engine holds this job");
            return Ok(0);
        };
        let (moved, done) = self.drive_leased(id, &name, lease.token).await?;
        // A job that waits keeps its lease (this engine renews it on its next pass; if this
        // engine dies, it runs out); a finished one gives it up.
        if done {
            if let Err(e) = self.store.release_lease(&name, worker).await {
                tracing::warn!(withdrawal = %id, error = %e, "job lease not released; it will expire");
            }
        }
        Ok(moved)
    }

    /// Step a leased job; returns the steps moved and whether the job is finished (for this
    /// engine). The lease is renewed after every step that moved.
    async fn drive_leased(
        &self,
        id: Uuid,
        name: &str,
        token: i64,
    ) -> Result<(usize, bool), EngineError> {
        let mut moved = 0;
        loop {
            let job = self.load(id).await?;
            match self.step(&job).await? {
                Step::Moved(to) => {
                    tracing::info!(withdrawal = %id, state = to.as_str(), "withdrawal moved");
                    moved += 1;
                }
                Step::Waiting(why) => {
                    tracing::debug!(withdrawal = %id, why, "withdrawal waits");
                    return Ok((moved, false));
                }
                Step::Idle => return Ok((moved, true)),
            }
            let now = self.env.now().unix_ms();
            let renewed =
                self.store.acquire_lease(name, &self.cfg.worker, now, self.cfg.lease_ms).await?;
            if renewed.map(|l| l.token) != Some(token) {
                tracing::warn!(withdrawal = %id, "job lease lost to another engine; leaving it");
                return Ok((moved, false));
            }
        }
    }

    /// One step from the stored state.
    pub async fn step(&self, w: &Job) -> Result<Step, EngineError> {
        if w.intent.chain != self.cfg.chain || w.state.is_final() {
            return Ok(Step::Idle);
        }
        match w.state {
            WithdrawalState::Reserved => self.build(w).await,
            WithdrawalState::Built => self.sign(w).await,
            WithdrawalState::Signed => self.send(w).await,
            WithdrawalState::Broadcast => self.confirm(w).await,
            WithdrawalState::Cancelled | WithdrawalState::Settled | WithdrawalState::Failed => {
                Ok(Step::Idle)
            }
        }
    }

    /// What the signers will be given with `w`, or why they would refuse it now. With a
    /// governance genesis installed, the same gate the signer nodes run decides (without
    /// their velocity counts, which only they keep): a withdrawal the policy holds back
    /// waits here, before a nonce is spent on it.
    pub async fn authorize(&self, w: &Job) -> Result<Result<SignAuth, String>, EngineError> {
        use strongroom_store::gate::{gate, Gate, Movement};
        let customer_id = w.customer().map(|c| c.to_string());
        let own = if w.path.is_empty() {
            false
        } else {
            let (_, home) = self.wallet(&w.intent.source_wallet).await?;
            home == w.intent.destination
        };
        let migrating = match &self.cfg.home {
            Some(home) if home != &w.intent.source_wallet => {
                self.wallet(home).await?.1 == w.intent.destination
            }
            _ => false,
        };
        let own = own || migrating;
        let m = Movement {
            id: w.id,
            intent: &w.intent,
            customer_id: w.customer(),
            own_destination: own,
        };
        let signed = if w.is_withdrawal() {
            self.store.initiations(w.id).await?
        } else {
            strongroom_store::Initiations::default()
        };
        let customer_keys = match w.moves {
            Moves::Withdrawal { customer_id } => self.customer_keys(customer_id).await?,
            Moves::Internal(_) => Vec::new(),
        };
        let auth = |approvals, governance| SignAuth {
            approvals,
            governance,
            customer_id: customer_id.clone(),
            initiation: signed.member.clone(),
            customer_approval: signed.customer.clone(),
            customer_keys: customer_keys.clone(),
        };
        match gate(self.store.as_ref(), &m, self.env.now()).await? {
            Gate::Ungoverned => Ok(Ok(auth(Vec::new(), Vec::new()))),
            Gate::Invalid(why) => {
                tracing::error!(
                    alert = true,
                    why,
                    "nothing is signed while the governance log does not verify"
                );
                Ok(Err(why))
            }
            Gate::Decided { decision, .. } if !decision.allowed() => Ok(Err(decision.explain())),
            Gate::Decided { approvals, entries, .. } => Ok(Ok(auth(approvals, entries))),
        }
    }

    /// The customer's passkeys as the signer nodes see them (kept with each passkey).
    async fn customer_keys(
        &self,
        customer_id: Uuid,
    ) -> Result<Vec<strongroom_governance::initiation::CustomerKey>, EngineError> {
        let records = self
            .store
            .auth_records(strongroom_store::CUSTOMER_KEY_RECORD, &customer_id.to_string())
            .await?;
        let mut keys = Vec::with_capacity(records.len());
        for r in records {
            // A record that does not parse is left out: the nodes then know one key fewer,
            // which never loosens what they require of keys they already hold.
            match serde_json::from_value(r.body) {
                Ok(passkey) => keys.push(strongroom_governance::initiation::CustomerKey {
                    customer_id: customer_id.to_string(),
                    passkey,
                }),
                Err(e) => {
                    tracing::error!(%customer_id, error = %e, "unreadable customer key record")
                }
            }
        }
        Ok(keys)
    }

    async fn build(&self, w: &Job) -> Result<Step, EngineError> {
        // A payout planned from a key governance has since migrated can never be signed
        // (the nodes let that key pay only its successor, and the intent, which approvers
        // signed, names the old key): it is cancelled before a nonce is spent, its funds
        // released, for the customer to ask again.
        if w.is_withdrawal() && self.cfg.home.as_ref().is_some_and(|h| h != &w.intent.source_wallet)
        {
            let entry = new_id(self.env.as_ref());
            self.store
                .transition_withdrawal(&self.ctx(), None, w.id, WithdrawalState::Cancelled, entry)
                .await?;
            tracing::warn!(
                alert = true,
                withdrawal = %w.id,
                wallet = w.intent.source_wallet.as_str(),
                "withdrawal from a migrated key cancelled (funds released): ask again"
            );
            return Ok(Step::Moved(WithdrawalState::Cancelled));
        }
        if w.is_withdrawal() && self.cfg.require_risk {
            match self.store.risk_review(w.id).await? {
                None => return Ok(Step::Waiting("awaiting the risk assessment".into())),
                Some(r) if !r.state.may_proceed() => {
                    return Ok(Step::Waiting(format!("risk review is {}", r.state.as_str())))
                }
                Some(_) => {}
            }
        }
        if let Err(why) = self.authorize(w).await? {
            return Ok(Step::Waiting(why));
        }
        let intent = &w.intent;
        let (key, from) = self.key_at(&intent.source_wallet, &w.path).await?;
        let planned = match self.adapter.plan(w, &key, &from, self.store.as_ref()).await? {
            Plan::Ready(p) => p,
            Plan::Waiting(why) => return Ok(Step::Waiting(why)),
        };
        let build = BuildTx {
            owner_id: w.id,
            chain: intent.chain.clone(),
            wallet: w.account(),
            nonce_floor: planned.nonce_floor,
            fee_asset: self.cfg.fee_asset.clone(),
            fee_reserve: planned.fee_reserve,
            fee_entry_id: new_id(self.env.as_ref()),
            coins: planned.coins,
            build: planned.build,
        };
        let tx = self.store.build_tx(&self.ctx(), build).await?;
        tracing::info!(withdrawal = %w.id, nonce = tx.nonce, "transaction built");
        Ok(Step::Moved(WithdrawalState::Built))
    }

    async fn sign(&self, w: &Job) -> Result<Step, EngineError> {
        let stored = self.store.chain_tx(w.id).await?.ok_or_else(|| {
            StoreError::Corrupt(format!("withdrawal {} is built but has no transaction", w.id))
        })?;
        let unsigned = hex::decode(&stored.unsigned_tx)
            .map_err(|_| StoreError::Corrupt("unsigned tx is not hex".into()))?;
        let (pk, _) = self.key_at(&w.intent.source_wallet, &w.path).await?;
        // Approvals may have expired or a freeze come in since the build: ask the nodes
        // anyway only when the gate lets it through (they decide again themselves).
        let auth = match self.authorize(w).await? {
            Ok(a) => a,
            Err(why) => return Ok(Step::Waiting(why)),
        };
        let signed = self.signed_by_nodes(w, &pk, &unsigned, &auth).await?;
        let kept = self.store.record_signed(&self.ctx(), w.id, signed).await?;
        tracing::info!(withdrawal = %w.id, txid = ?kept.signed.as_ref().map(|s| &s.txid), "signed transaction stored");
        if w.is_withdrawal() && self.cfg.stop_at == Some(StopPoint::AfterSigned) {
            return Err(EngineError::Stopped(StopPoint::AfterSigned));
        }
        Ok(Step::Moved(WithdrawalState::Signed))
    }

    /// `unsigned` signed by the nodes, one signature per digest (a Bitcoin transaction's
    /// inputs are signed one by one; the nodes bind the intent to the transaction id, so each
    /// input may be signed), each checked to be the wallet's over this transaction.
    async fn signed_by_nodes(
        &self,
        w: &Job,
        pk: &[u8],
        unsigned: &[u8],
        auth: &SignAuth,
    ) -> Result<strongroom_chain::SignedTx, EngineError> {
        let mut signatures = Vec::new();
        for input in 0..self.adapter.signatures(pk, unsigned)? {
            let input = u32::try_from(input)
                .map_err(|_| ChainError::Build("too many inputs to sign".into()))?;
            match self
                .signer
                .sign(&w.intent.source_wallet, &w.path, &w.intent, unsigned, input, auth)
                .await
            {
                Ok(s) => signatures.push(s),
                Err(SignError::Refused(r)) if w.is_withdrawal() && r.reason.is_decision() => {
                    self.note_refusal(w.id, &r).await?;
                    return Err(SignError::Refused(r).into());
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(self.adapter.attach(pk, unsigned, &signatures)?)
    }

    /// Keep a node's refusal on the withdrawal for the API, unless it is the finding already
    /// kept (the engine asks again on every pass; the audit log gets each finding once).
    async fn note_refusal(
        &self,
        id: Uuid,
        r: &strongroom_governance::refusal::Refusal,
    ) -> Result<(), EngineError> {
        use strongroom_governance::refusal::Reason;
        let same = |k: &strongroom_governance::refusal::Refusal| {
            k.node == r.node
                && match (&k.reason, &r.reason) {
                    // The node's clock moves on; the finding does not.
                    (Reason::Expired { .. }, Reason::Expired { .. }) => true,
                    (a, b) => a == b,
                }
        };
        if !self.store.signer_refusal(id).await?.as_ref().is_some_and(same) {
            self.store.note_signer_refusal(&self.ctx(), id, r).await?;
        }
        Ok(())
    }

    async fn send(&self, w: &Job) -> Result<Step, EngineError> {
        let signed = self.stored_signed(w).await?;
        self.adapter.client().broadcast(&signed).await?;
        if w.is_withdrawal() && self.cfg.stop_at == Some(StopPoint::AfterSend) {
            return Err(EngineError::Stopped(StopPoint::AfterSend));
        }
        self.store.record_broadcast(&self.ctx(), w.id).await?;
        Ok(Step::Moved(WithdrawalState::Broadcast))
    }

    async fn confirm(&self, w: &Job) -> Result<Step, EngineError> {
        let signed = self.stored_signed(w).await?;
        let bumps = self.store.bumps(w.id).await?;
        // Every signed version, newest first: at most one of them can be mined (they spend
        // the same coins), and whichever is settles the job.
        let mut versions: Vec<(u32, &strongroom_chain::SignedTx)> =
            bumps.iter().filter_map(|b| b.signed.as_ref().map(|s| (b.version, s))).collect();
        versions.reverse();
        versions.push((0, &signed));
        let client = self.adapter.client();
        let mut newest = None;
        for (version, tx) in &versions {
            let status = client.status(&tx.txid).await?;
            if let TxStatus::Included { .. } = status {
                if *version > 0 && signed.txid != tx.txid {
                    self.store.adopt_bump(&self.ctx(), w.id, *version).await?;
                    tracing::info!(withdrawal = %w.id, version, txid = tx.txid, "a fee bump was mined");
                }
                return self.included(w, status).await;
            }
            newest.get_or_insert((*version, *tx, status));
        }
        let Some((version, tx, status)) = newest else {
            return Err(
                StoreError::Corrupt(format!("withdrawal {} has no transaction", w.id)).into()
            );
        };
        match status {
            // The node lost it (restart, reorg, eviction): send the newest version again.
            TxStatus::Unknown => {
                client.broadcast(tx).await?;
                Ok(Step::Waiting("resent: the node did not know the transaction".into()))
            }
            _ => self.bump(w, version, &bumps).await,
        }
    }

    /// The transaction is in a block: wait for its confirmations, then conclude.
    async fn included(&self, w: &Job, status: TxStatus) -> Result<Step, EngineError> {
        match status {
            TxStatus::Included { confirmations, .. } if confirmations < self.cfg.confirmations => {
                Ok(Step::Waiting(format!(
                    "{confirmations} of {} confirmations",
                    self.cfg.confirmations
                )))
            }
            TxStatus::Included { block, success, fee_paid, .. } => {
                let env = self.env.as_ref();
                let conclusion = Conclusion {
                    success,
                    block,
                    fee_paid,
                    entry_ids: [new_id(env), new_id(env), new_id(env)],
                };
                self.store.conclude_tx(&self.ctx(), w.id, conclusion).await?;
                Ok(Step::Moved(if success {
                    WithdrawalState::Settled
                } else {
                    WithdrawalState::Failed
                }))
            }
            _ => Ok(Step::Waiting("in the mempool".into())),
        }
    }

    /// A transaction in the mempool: sign and send a fee bump stored before, or store one
    /// when it has waited long enough and today's estimate pays enough more.
    async fn bump(&self, w: &Job, newest: u32, bumps: &[Bump]) -> Result<Step, EngineError> {
        let waiting = || Ok(Step::Waiting("in the mempool".into()));
        let Some(after) = self.cfg.bump_after_ms else { return waiting() };
        let (pk, _) = self.key_at(&w.intent.source_wallet, &w.path).await?;
        let pending = match bumps.last() {
            Some(b) if b.signed.is_none() => Some(b.clone()),
            _ => {
                let stored = self.store.chain_tx(w.id).await?.ok_or_else(|| {
                    StoreError::Corrupt(format!("withdrawal {} has no transaction", w.id))
                })?;
                // Waited since the newest version was signed (or the first was sent).
                let since = bumps.last().map_or(stored.updated_at, |b| b.updated_at);
                if self.env.now().unix_ms().saturating_sub(since.unix_ms()) < after
                    || bumps.len() >= usize::try_from(strongroom_store::MAX_BUMPS).unwrap_or(0)
                {
                    return waiting();
                }
                let current = match bumps.iter().rev().find(|b| b.version == newest) {
                    Some(b) => b.unsigned_tx.clone(),
                    None => stored.unsigned_tx.clone(),
                };
                let current = hex::decode(current)
                    .map_err(|_| StoreError::Corrupt("unsigned tx is not hex".into()))?;
                match self.adapter.bump(&pk, &w.intent, &current).await? {
                    Some(unsigned) => Some(self.store.bump_tx(&self.ctx(), w.id, unsigned).await?),
                    None => None,
                }
            }
        };
        let Some(bump) = pending else { return waiting() };
        let auth = match self.authorize(w).await? {
            Ok(a) => a,
            Err(why) => return Ok(Step::Waiting(format!("in the mempool; no fee bump: {why}"))),
        };
        let unsigned = hex::decode(&bump.unsigned_tx)
            .map_err(|_| StoreError::Corrupt("bump is not hex".into()))?;
        let signed = self.signed_by_nodes(w, &pk, &unsigned, &auth).await?;
        let kept = self.store.record_bump_signed(&self.ctx(), w.id, bump.version, signed).await?;
        if let Some(s) = &kept.signed {
            self.adapter.client().broadcast(s).await?;
            tracing::info!(withdrawal = %w.id, version = bump.version, txid = s.txid, "fee bump sent");
        }
        Ok(Step::Waiting(format!("in the mempool; fee bump {} sent", bump.version)))
    }

    async fn stored_signed(&self, w: &Job) -> Result<strongroom_chain::SignedTx, EngineError> {
        self.store.chain_tx(w.id).await?.and_then(|t| t.signed).ok_or_else(|| {
            StoreError::Corrupt(format!("withdrawal {} has no signed transaction", w.id)).into()
        })
    }
}
