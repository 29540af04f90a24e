//! Refills of a Bitcoin hot wallet from its cold multisig, prepared by the server for the
//! offline signers.
//!
//! When a treasury pass finds the hot wallet below its low watermark, this asks for a refill:
//! a cold-tier intent from the cold wallet to the hot wallet's address for what brings it
//! back to its target, stored (`cold_refills`, at most one open per chain and asset) and
//! shown by the API (`GET /v1/treasury/refills`). Approvers sign the intent where they are
//! and send their approvals (`strongroom cold refill-approve`, `POST
//! /v1/treasury/refills/{id}/approvals`). Each pass checks the approvals at hand against the
//! governance log the way the offline signers will; once governance allows the movement, it
//! finds the cold wallet's coins through Esplora and makes the signing bundle (the unsigned
//! PSBT with the intent, approvals and governance log), which the key holders fetch (`GET
//! /v1/treasury/refills/{id}/bundle`), sign offline (`strongroom-cold sign`), and send
//! (`strongroom cold send`). A bundle governance stops allowing (approvals expired, a freeze)
//! is withdrawn. The refill ends `done` once the hot wallet is above its low mark again, or
//! `expired` when its intent expires first (the next pass asks again).
//!
//! Nothing here can move cold funds: the server holds no cold key, and each key holder's
//! offline signer checks the bundle against its own pinned governance and the wallet it
//! installed.

use std::sync::Arc;

use strongroom_chain_bitcoin::esplora::Esplora;
use strongroom_chain_bitcoin::wallet::ColdWallet;
use strongroom_chain_bitcoin::{BtcError, Multisig};
use strongroom_cold::online::{prepare_bitcoin, Request};
use strongroom_cold::ColdError;
use strongroom_core::intent::IntentAsset;
use strongroom_core::{new_id, Env, Intent, WalletId};
use strongroom_engine::treasury::{Action, ColdRatio};
use strongroom_governance::policy::VelocityLimit;
use strongroom_governance::Role;
use strongroom_store::{Refill, RefillChange, RefillState, Store, WriteCtx};
use strongroom_units::{Address, Amount, AssetSymbol, ChainId};

use crate::RuntimeError;

/// Who the server names as a refill's initiator (not a member: the treasury asks, people
/// approve).
pub const REFILL_INITIATOR: &str = "treasury";
/// How long a refill's intent lasts before the treasury asks again.
pub const REFILL_TTL_MS: i64 = 24 * 3_600_000;
/// The fee cap of a refill when the policy names no fee ceiling for the chain (sat).
pub const DEFAULT_REFILL_FEE_CAP: u64 = 100_000;
/// The fee estimate a refill is built at: confirmation within this many blocks.
const FEE_BLOCKS: u16 = 6;
/// How far past the last used address the cold wallet's coins are looked for.
const GAP: u32 = 20;
/// How often the cold wallet's coins are looked for again while they fall short (a search
/// walks both keychains through the Esplora server).
const SEARCH_EVERY_MS: i64 = 10_000;

/// How many addresses of each keychain of a cold multisig the runtime counts as cold (its
/// balance, reconciliation) and as internal (a payment from one is no deposit).
pub const COLD_ADDRESSES: u32 = 20;

/// The cold multisig's addresses beyond its first receive address (where sweeps go): the
/// next receive addresses and the change addresses, where refills' change goes.
pub fn cold_addresses(chain: &ChainId, descriptor: &str) -> Result<Vec<Address>, RuntimeError> {
    let network = strongroom_chain_bitcoin::network(chain)
        .map_err(|e| RuntimeError::Config(format!("{chain}: {e}")))?;
    let multisig = Multisig::from_descriptor(descriptor, network)
        .map_err(|e| RuntimeError::Config(format!("{chain} cold_descriptor: {e}")))?;
    let mut out = Vec::new();
    for keychain in
        [strongroom_chain_bitcoin::Keychain::Receive, strongroom_chain_bitcoin::Keychain::Change]
    {
        for i in 0..COLD_ADDRESSES {
            if keychain == strongroom_chain_bitcoin::Keychain::Receive && i == 0 {
                continue;
            }
            let a = multisig
                .address(keychain, i)
                .map_err(|e| RuntimeError::Config(format!("{chain} cold_descriptor: {e}")))?;
            out.push(
                Address::parse(chain, &a.to_string())
                    .map_err(|e| RuntimeError::Config(format!("{chain} cold address: {e}")))?,
            );
        }
    }
    Ok(out)
}

/// One chain's refills: its cold multisig and the hot wallet it refills.
#[derive(Debug)]
pub struct ColdRefills {
    store: Arc<dyn Store>,
    env: Arc<dyn Env>,
    esplora: Esplora,
    chain: ChainId,
    /// The cold wallet as the key holders installed it.
    wallet: WalletId,
    multisig: Multisig,
    hot: Address,
    native: (AssetSymbol, u8),
    /// When this instance last looked for the cold wallet's coins, for which refill: only a
    /// pace (each instance keeps its own; the refill's state is in the store).
    searched: std::sync::Mutex<Option<(uuid::Uuid, i64)>>,
}

/// What a chain's refills are about.
#[derive(Debug, Clone)]
pub struct RefillConfig {
    pub chain: ChainId,
    /// The cold wallet's id, as the key holders installed it.
    pub wallet: WalletId,
    /// The cold wallet's descriptor (public keys only).
    pub descriptor: String,
    /// The hot wallet's address, where refills go.
    pub hot: Address,
    /// The chain's native asset and its decimals.
    pub native: (AssetSymbol, u8),
}

impl ColdRefills {
    pub fn new(
        store: Arc<dyn Store>,
        env: Arc<dyn Env>,
        esplora: Esplora,
        cfg: RefillConfig,
    ) -> Result<Self, RuntimeError> {
        let RefillConfig { chain, wallet, descriptor, hot, native } = cfg;
        let network = strongroom_chain_bitcoin::network(&chain)
            .map_err(|e| RuntimeError::Config(format!("{chain}: {e}")))?;
        let multisig = Multisig::from_descriptor(&descriptor, network)
            .map_err(|e| RuntimeError::Config(format!("{chain} cold_descriptor: {e}")))?;
        Ok(ColdRefills {
            store,
            env,
            esplora,
            chain,
            wallet,
            multisig,
            hot,
            native,
            searched: std::sync::Mutex::new(None),
        })
    }

    /// The cold wallet's first receive address (where the treasury sweeps).
    pub fn cold_address(&self) -> Result<String, RuntimeError> {
        self.multisig
            .address(strongroom_chain_bitcoin::Keychain::Receive, 0)
            .map(|a| a.to_string())
            .map_err(|e| RuntimeError::Config(format!("{}: {e}", self.chain)))
    }

    fn ctx(&self) -> WriteCtx {
        WriteCtx { actor: "treasury".into(), now: self.env.now(), request_id: None }
    }

    /// After a treasury pass: ask for a refill where the pass says so, end those no longer
    /// needed or expired, and make the bundle of each that governance now allows.
    pub async fn pass(&self, report: &[ColdRatio]) -> Result<(), RuntimeError> {
        let Some(reading) = report.iter().find(|r| r.asset == self.native.0) else {
            return Ok(());
        };
        let open = self
            .store
            .list_refills(true, None, 1_000)
            .await?
            .into_iter()
            .find(|r| r.intent.chain == self.chain && r.intent.asset.symbol == self.native.0);
        let now = self.env.now();
        match (open, &reading.action) {
            (Some(r), _) if r.intent.expires_at <= now => {
                self.store
                    .update_refill(&self.ctx(), r.id, RefillChange::End(RefillState::Expired))
                    .await?;
                tracing::warn!(refill = %r.id, "a refill of the hot wallet expired before it arrived");
            }
            (Some(r), Action::Refill { .. }) => self.advance(r).await?,
            (Some(r), _) => {
                self.store
                    .update_refill(&self.ctx(), r.id, RefillChange::End(RefillState::Done))
                    .await?;
                tracing::info!(refill = %r.id, "the hot wallet is above its low watermark again: refill done");
            }
            (None, Action::Refill { amount }) if !amount.is_zero() => {
                let r = self.open(*amount).await?;
                tracing::warn!(
                    refill = %r.id,
                    amount = %amount,
                    intent_hash = r.intent_hash,
                    "hot wallet below its low watermark: a refill from cold is asked for (approve it, then sign its bundle offline)"
                );
                self.advance(r).await?;
            }
            (None, _) => {}
        }
        Ok(())
    }

    /// Ask for `amount` from cold to the hot wallet.
    async fn open(&self, amount: Amount) -> Result<Refill, RuntimeError> {
        let state = self.governance().await?;
        let fee_cap = state
            .as_ref()
            .and_then(|(s, _)| s.policy.as_ref())
            .and_then(|p| {
                p.fees.iter().find(|f| {
                    f.chain == self.chain.as_str() && f.fee_asset == self.native.0.as_str()
                })
            })
            .map(|f| f.max_fee)
            .unwrap_or(
                Amount::from_base_units(u128::from(DEFAULT_REFILL_FEE_CAP))
                    .map_err(|e| RuntimeError::Config(e.to_string()))?,
            );
        let now = self.env.now();
        let intent = Intent {
            request_id: new_id(self.env.as_ref()),
            chain: self.chain.clone(),
            asset: IntentAsset {
                symbol: self.native.0.clone(),
                decimals: self.native.1,
                contract: None,
            },
            source_wallet: self.wallet.clone(),
            destination: self.hot.clone(),
            amount,
            fee_cap,
            expires_at: now.plus_ms(REFILL_TTL_MS),
        };
        let hash = intent.hash().map_err(|e| RuntimeError::Config(e.to_string()))?.to_hex();
        let refill = Refill {
            id: new_id(self.env.as_ref()),
            intent,
            intent_hash: hash,
            state: RefillState::AwaitingApprovals,
            approvals: Vec::new(),
            bundle: None,
            waiting_for: None,
            created_at: now,
            updated_at: now,
        };
        Ok(self.store.open_refill(&self.ctx(), refill).await?)
    }

    /// The governance state and log as stored, replayed from the genesis; `None` when no
    /// genesis is installed.
    async fn governance(
        &self,
    ) -> Result<
        Option<(strongroom_governance::log::State, Vec<strongroom_governance::log::Entry>)>,
        RuntimeError,
    > {
        let record = self.store.governance().await?;
        let Some((pin, genesis)) = record.genesis else { return Ok(None) };
        let state =
            strongroom_governance::log::replay(&genesis, &pin, &record.entries, self.env.now())
                .map_err(|e| RuntimeError::Config(format!("the stored governance log: {e}")))?;
        Ok(Some((state, record.entries)))
    }

    /// Make the bundle of a refill awaiting approvals, if governance allows it now; note why
    /// not otherwise.
    async fn advance(&self, refill: Refill) -> Result<(), RuntimeError> {
        let Some((state, log)) = self.governance().await? else {
            return self.wait(&refill, "no governance genesis is installed".into()).await;
        };
        let moved = |_: &VelocityLimit| Amount::ZERO;
        let request = || Request {
            intent: &refill.intent,
            initiator: REFILL_INITIATOR,
            initiator_role: Role::Operator,
            approvals: &refill.approvals,
            log: &log,
            state: &state,
            moved: &moved,
        };
        // The gate first: no need to look for coins until governance allows the movement.
        let gate = strongroom_cold::online::allowed(&request(), self.env.as_ref());
        match (refill.state, gate) {
            // Not allowed: noted, and a ready bundle governance no longer allows (its
            // approvals expired, a freeze) withdrawn (the key holders would refuse it).
            (_, Err(e)) => return self.wait(&refill, e.to_string()).await,
            (RefillState::Ready, Ok(())) => return Ok(()),
            (_, Ok(())) => {}
        }
        let now_ms = self.env.now().unix_ms();
        {
            let mut last = self.searched.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if matches!(*last, Some((id, at)) if id == refill.id && now_ms - at < SEARCH_EVERY_MS) {
                return Ok(());
            }
            *last = Some((refill.id, now_ms));
        }
        let mut wallet = ColdWallet::new(&self.multisig)
            .map_err(|e| RuntimeError::Config(format!("{}: {e}", self.chain)))?;
        let seen = u64::try_from(self.env.now().unix_ms() / 1000).unwrap_or_default();
        let chain_err = |e: BtcError| RuntimeError::Chain {
            chain: self.chain.to_string(),
            detail: e.to_string(),
        };
        self.esplora.sync(&mut wallet, GAP, seen).await.map_err(chain_err)?;
        let rate = self.esplora.fee_rate(FEE_BLOCKS).await.map_err(chain_err)?;
        let prepared = prepare_bitcoin(&mut wallet, &request(), rate, self.env.as_ref())
            .and_then(|(bundle, decoded)| Ok((bundle.to_json()?, decoded)));
        match prepared {
            Ok((json, decoded)) => {
                let json = String::from_utf8(json)
                    .map_err(|e| RuntimeError::Config(format!("bundle: {e}")))?;
                self.store
                    .update_refill(&self.ctx(), refill.id, RefillChange::Bundle(json))
                    .await?;
                tracing::info!(
                    refill = %refill.id,
                    summary = decoded.describe(self.native.0.as_str()),
                    "a refill's signing bundle is ready for the key holders"
                );
                Ok(())
            }
            // Not enough in cold, or a fee above the cap: a finding, kept on the refill.
            Err(e @ (ColdError::Refused(_) | ColdError::Bitcoin(BtcError::Build(_)))) => {
                self.wait(&refill, e.to_string()).await
            }
            Err(e) => {
                Err(RuntimeError::Chain { chain: self.chain.to_string(), detail: e.to_string() })
            }
        }
    }

    /// Note why a refill has no bundle (once per reason); a ready one's bundle is withdrawn.
    async fn wait(&self, refill: &Refill, why: String) -> Result<(), RuntimeError> {
        let change = match refill.state {
            RefillState::Ready => {
                tracing::warn!(refill = %refill.id, why, "a refill's bundle is withdrawn");
                RefillChange::Reopen(why)
            }
            _ if refill.waiting_for.as_deref() == Some(why.as_str()) => return Ok(()),
            _ => RefillChange::Waiting(why),
        };
        self.store.update_refill(&self.ctx(), refill.id, change).await?;
        Ok(())
    }
}
