//! Consolidation: money at customers' deposit addresses moves to the hot wallet, so the
//! hot wallet can pay withdrawals (and, later, the treasury can move it cold).
//!
//! Per deposit address, one movement at a time. On Ethereum ([`Sweeper`]): first each token
//! (after a gas top-up from the hot wallet when the address has too little ETH), then the ETH
//! itself, less the most its own transfer can cost. On Bitcoin ([`BtcSweeper`]): every
//! confirmed coin of the address in one transaction, less the most it can cost. Sweeps are
//! internal: custody does not change, only the fee leaves it, paid from the treasury. The
//! engine drives them like withdrawals; signer nodes let a deposit address's key pay only the
//! wallet's own address.

use std::sync::Arc;

use strongroom_chain::ChainClient;
use strongroom_chain_ethereum::rpc::EthRpc;
use strongroom_chain_ethereum::NATIVE_TRANSFER_GAS;
use strongroom_core::withdrawal::WithdrawalState;
use strongroom_core::{new_id, Env, Intent, IntentAsset, WalletId};
use strongroom_store::{Store, Sweep, SweepKind, WriteCtx};
use strongroom_units::{Address, Amount, AssetSymbol, ChainId};

use crate::deposits::deposit_path;
use crate::EngineError;

#[derive(Debug, Clone)]
pub struct SweepConfig {
    pub chain: ChainId,
    pub wallet: WalletId,
    /// The wallet key's own address, where sweeps go.
    pub hot: Address,
    /// Wallets governance migrated into `wallet` (ADR 0017), with their own addresses:
    /// what they and their deposit addresses hold, and whatever arrives there later, is
    /// swept into `hot` too.
    pub former: Vec<(WalletId, Address)>,
    /// The native coin (symbol, decimals).
    pub native: (AssetSymbol, u8),
    /// Tokens to sweep: symbol, decimals, contract.
    pub tokens: Vec<(AssetSymbol, u8, Address)>,
    /// ETH below this (in wei, after the fee) is left where it is.
    pub min_native: u128,
    /// Gas a token transfer is given (and topped up for).
    pub token_gas: u64,
    /// How long a planned sweep's intent stays valid.
    pub ttl_ms: i64,
}

#[derive(Debug)]
pub struct Sweeper {
    store: Arc<dyn Store>,
    rpc: EthRpc,
    env: Arc<dyn Env>,
    cfg: SweepConfig,
}

impl Sweeper {
    pub fn new(store: Arc<dyn Store>, rpc: EthRpc, env: Arc<dyn Env>, cfg: SweepConfig) -> Self {
        Sweeper { store, rpc, env, cfg }
    }

    /// Plan the next movement for every deposit address that has none open. Returns the
    /// sweeps and top-ups planned (the engine carries them out).
    pub async fn plan(&self) -> Result<Vec<Sweep>, EngineError> {
        let chain = &self.cfg.chain;
        let open = self.store.list_sweeps(chain, true).await?;
        let busy = |a: &str| {
            open.iter().any(|s| {
                s.from_address.eq_ignore_ascii_case(a)
                    || s.intent.destination.as_str().eq_ignore_ascii_case(a)
            })
        };
        let quote = self.rpc.fee_quote().await?;
        let fee_per_gas =
            quote.base_fee_per_gas.saturating_mul(2).saturating_add(quote.max_priority_fee_per_gas);
        // What is swept: every deposit address of this wallet and of the wallets migrated
        // into it, then the migrated wallets' own addresses.
        let ours = |w: &str| {
            w == self.cfg.wallet.as_str() || self.cfg.former.iter().any(|(f, _)| f.as_str() == w)
        };
        let mut sources = Vec::new();
        for d in self.store.deposit_addresses(chain).await? {
            if !ours(&d.wallet) {
                continue;
            }
            let wallet = WalletId::parse(&d.wallet).map_err(|e| corrupt(e.to_string()))?;
            let address = Address::parse(chain, &d.address).map_err(|e| corrupt(e.to_string()))?;
            sources.push((wallet, deposit_path(d.path_index).to_vec(), address));
        }
        // A retired key's own address signs nothing more (its deposit addresses still sweep):
        // what arrives there stays, counted in custody, for people to decide.
        let retired = if self.cfg.former.is_empty() {
            Default::default()
        } else {
            crate::rotation::retired(self.store.as_ref(), self.env.now()).await?
        };
        for (wallet, address) in &self.cfg.former {
            if !retired.contains(wallet.as_str()) {
                sources.push((wallet.clone(), Vec::new(), address.clone()));
            }
        }
        let mut planned = Vec::new();
        for (wallet, path, address) in sources {
            if busy(address.as_str()) {
                continue;
            }
            let eth = self.rpc.balance(&address, None).await?.base_units();
            let token_fee = u128::from(self.cfg.token_gas).saturating_mul(fee_per_gas);
            let mut next = None;
            for (symbol, decimals, contract) in &self.cfg.tokens {
                let held = self.rpc.balance(&address, Some(contract)).await?;
                if held.is_zero() {
                    continue;
                }
                next = Some(if eth < token_fee {
                    // Gas first: from the hot wallet, exactly what the token transfer may cost.
                    let top_up = Amount::from_base_units(token_fee - eth).map_err(amount_error)?;
                    let fee_cap = fee(NATIVE_TRANSFER_GAS, fee_per_gas)?;
                    let native = (self.cfg.native.0.clone(), self.cfg.native.1, None);
                    let from = (self.cfg.wallet.clone(), Vec::new(), &self.cfg.hot);
                    self.sweep(SweepKind::TopUp, from, &address, native, top_up, fee_cap)?
                } else {
                    let asset = (symbol.clone(), *decimals, Some(contract.clone()));
                    let fee_cap = fee(self.cfg.token_gas, fee_per_gas)?;
                    let from = (wallet.clone(), path.clone(), &address);
                    self.sweep(SweepKind::Sweep, from, &self.cfg.hot, asset, held, fee_cap)?
                });
                break;
            }
            if next.is_none() {
                let cap = u128::from(NATIVE_TRANSFER_GAS).saturating_mul(fee_per_gas);
                let amount = eth.saturating_sub(cap);
                if amount >= self.cfg.min_native.max(1) {
                    let native = (self.cfg.native.0.clone(), self.cfg.native.1, None);
                    let amount = Amount::from_base_units(amount).map_err(amount_error)?;
                    let fee_cap = fee(NATIVE_TRANSFER_GAS, fee_per_gas)?;
                    let from = (wallet.clone(), path, &address);
                    next = Some(self.sweep(
                        SweepKind::Sweep,
                        from,
                        &self.cfg.hot,
                        native,
                        amount,
                        fee_cap,
                    )?);
                }
            }
            if let Some(s) = next {
                let ctx =
                    WriteCtx { actor: "sweeper".into(), now: self.env.now(), request_id: None };
                planned.push(self.store.create_sweep(&ctx, s).await?);
            }
        }
        Ok(planned)
    }

    /// A new sweep of `kind` (not yet stored).
    fn sweep(
        &self,
        kind: SweepKind,
        from: (WalletId, Vec<u32>, &Address),
        to: &Address,
        asset: (AssetSymbol, u8, Option<Address>),
        amount: Amount,
        fee_cap: Amount,
    ) -> Result<Sweep, EngineError> {
        Ok(new_sweep(self.env.as_ref(), &self.cfg, kind, from, to, asset, amount, fee_cap))
    }
}

/// A new movement of `kind` between our own addresses on `cfg`'s chain (not yet stored).
#[allow(clippy::too_many_arguments)]
pub(crate) fn new_sweep(
    env: &dyn Env,
    cfg: &SweepConfig,
    kind: SweepKind,
    (wallet, path, from): (WalletId, Vec<u32>, &Address),
    to: &Address,
    (symbol, decimals, contract): (AssetSymbol, u8, Option<Address>),
    amount: Amount,
    fee_cap: Amount,
) -> Sweep {
    let id = new_id(env);
    let now = env.now();
    {
        Sweep {
            id,
            kind,
            path,
            from_address: from.as_str().to_owned(),
            intent: Intent {
                chain: cfg.chain.clone(),
                asset: IntentAsset { symbol, decimals, contract },
                source_wallet: wallet,
                destination: to.clone(),
                amount,
                fee_cap,
                expires_at: now.plus_ms(cfg.ttl_ms),
                request_id: id,
            },
            state: WithdrawalState::Reserved,
            created_at: now,
            updated_at: now,
        }
    }
}

/// Consolidates Bitcoin deposit addresses into the hot wallet: per address with no movement
/// open, all its confirmed coins at once, paying the hot wallet their value less the fee
/// the transaction can cost at twice today's estimate (so a rise before it is built does not
/// strand it; what the fee leaves over above dust comes back to the address as change and is
/// swept with the next).
#[derive(Debug)]
pub struct BtcSweeper {
    store: Arc<dyn Store>,
    adapter: Arc<crate::BtcAdapter>,
    env: Arc<dyn Env>,
    cfg: SweepConfig,
    /// The wallet key and its chain code, from which each deposit address's key derives.
    master: strongroom_mpc::ecdsa::MasterPublic,
    /// How deep a coin must be before it is swept: the deposit watcher's confirmations, so
    /// no sweep spends a deposit a reorganisation could still take away.
    confirmations: u64,
}

impl BtcSweeper {
    pub fn new(
        store: Arc<dyn Store>,
        adapter: Arc<crate::BtcAdapter>,
        env: Arc<dyn Env>,
        cfg: SweepConfig,
        master: strongroom_mpc::ecdsa::MasterPublic,
        confirmations: u64,
    ) -> Self {
        BtcSweeper { store, adapter, env, cfg, master, confirmations }
    }

    /// Plan a sweep for every deposit address of the wallet that holds at least the
    /// configured least amount (after the fee) and has no movement open.
    pub async fn plan(&self) -> Result<Vec<Sweep>, EngineError> {
        let chain = &self.cfg.chain;
        let open = self.store.list_sweeps(chain, true).await?;
        let btc = self.adapter.btc();
        let tip = ChainClient::head(btc).await?.number;
        let deep = |height: Option<u32>| {
            height.is_some_and(|h| {
                tip.saturating_sub(u64::from(h)).saturating_add(1) >= self.confirmations
            })
        };
        let mut rate = None;
        let mut planned = Vec::new();
        for d in self.store.deposit_addresses(chain).await? {
            if d.wallet != self.cfg.wallet.as_str()
                || open.iter().any(|s| s.from_address == d.address)
            {
                continue;
            }
            let address = Address::parse(chain, &d.address).map_err(|e| corrupt(e.to_string()))?;
            let coins = btc.coins(&address, false).await?;
            // Every coin deep enough, or none yet (a sweep spends them all).
            if coins.is_empty() || !coins.iter().all(|(u, _)| deep(u.height)) {
                continue;
            }
            let total: u128 = coins.iter().map(|(u, _)| u128::from(u.value)).sum();
            let rate = match rate {
                Some(r) => r,
                None => {
                    let r = btc.fee_rate(3).await?.saturating_mul(2);
                    rate = Some(r);
                    r
                }
            };
            let path = deposit_path(d.path_index).to_vec();
            let key = self.master.derive(&path).map_err(crate::SignError::from)?;
            let codec = strongroom_chain_bitcoin::hot::HotCodec::p2wpkh(chain.clone(), &key)?;
            let fee = u128::from(codec.fee_for(coins.len(), &self.cfg.hot, rate)?);
            let amount = total.saturating_sub(fee);
            if amount < self.cfg.min_native.max(1) {
                continue;
            }
            let native = (self.cfg.native.0.clone(), self.cfg.native.1, None);
            let sweep = new_sweep(
                self.env.as_ref(),
                &self.cfg,
                SweepKind::Sweep,
                (self.cfg.wallet.clone(), path, &address),
                &self.cfg.hot,
                native,
                Amount::from_base_units(amount).map_err(amount_error)?,
                Amount::from_base_units(fee).map_err(amount_error)?,
            );
            let ctx = WriteCtx { actor: "sweeper".into(), now: self.env.now(), request_id: None };
            planned.push(self.store.create_sweep(&ctx, sweep).await?);
        }
        Ok(planned)
    }
}

fn fee(gas: u64, per_gas: u128) -> Result<Amount, EngineError> {
    Amount::from_base_units(u128::from(gas).saturating_mul(per_gas)).map_err(amount_error)
}

fn corrupt(why: String) -> EngineError {
    EngineError::Store(strongroom_store::StoreError::Corrupt(why))
}

fn amount_error(e: strongroom_units::AmountError) -> EngineError {
    EngineError::Chain(strongroom_chain::ChainError::Build(e.to_string()))
}
