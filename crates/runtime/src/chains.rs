//! One chain's workers, whichever the chain: the withdrawal engine, the deposit watcher, the
//! treasury and reconciliation over the chain's adapter (an Ethereum JSON-RPC node, or a
//! Bitcoin Esplora server) and the signer nodes' hot key; on Ethereum also the sweeper that
//! consolidates deposit addresses (with gas top-ups).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use strongroom_chain::ChainClient;
use strongroom_chain_bitcoin::client::BtcClient;
use strongroom_chain_bitcoin::esplora::Esplora;
use strongroom_chain_ethereum::rpc::{EthRpc, Retry};
use strongroom_core::{Env, WalletId};
use strongroom_engine::deposits::{DepositWatcher, WatchConfig};
use strongroom_engine::sweeps::{BtcSweeper, SweepConfig, Sweeper};
use strongroom_engine::treasury::{Action, ColdRatio, Treasury, TreasuryConfig, Watermarks};
use strongroom_engine::{
    BtcAdapter, ChainAdapter, ChainConfig, ChainEngine, EngineError, EthAdapter, StopPoint,
    TxSigner,
};
use strongroom_store::Store;
use strongroom_units::{Address, Amount, AssetRegistry, AssetSymbol, ChainId};

use crate::lease::{Instance, Leader};
use crate::settings::{ChainKind, ChainSettings, WatermarkSettings};
use crate::signing::OrchestratorSigner;
use crate::RuntimeError;

/// Where a chain's wallets are, for `strongroom reconcile` and scripts (`DATA/chains.json`
/// lists every connected chain; `DATA/chain.json` is the first, as before).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChainFile {
    /// Ethereum unless it says otherwise (files written before Bitcoin do not say).
    #[serde(default = "ethereum")]
    pub kind: ChainKind,
    /// The node's URL: JSON-RPC on Ethereum, the Esplora API on Bitcoin.
    pub rpc_url: String,
    pub chain: String,
    /// (name, address): the hot wallet, and the cold wallet when there is one.
    pub wallets: Vec<(String, String)>,
    /// The cold wallet's other addresses (a Bitcoin multisig's change addresses): their
    /// balances are custody too.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cold_also: Vec<String>,
    /// The CA file trusted for the node, when it is not under the platform's roots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
}

fn ethereum() -> ChainKind {
    ChainKind::Ethereum
}

impl ChainFile {
    pub fn path(data_dir: &Path) -> PathBuf {
        data_dir.join("chain.json")
    }

    /// Where every connected chain's file is listed.
    pub fn list_path(data_dir: &Path) -> PathBuf {
        data_dir.join("chains.json")
    }

    /// Every connected chain (`chains.json`), or the one `chain.json` names.
    pub fn load_all(data_dir: &Path) -> Result<Vec<Self>, RuntimeError> {
        let p = Self::list_path(data_dir);
        match std::fs::read_to_string(&p) {
            Ok(text) => serde_json::from_str(&text)
                .map_err(|e| RuntimeError::Config(format!("{}: {e}", p.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(vec![Self::load(data_dir)?]),
            Err(e) => Err(RuntimeError::io(format!("reading {}", p.display()), e)),
        }
    }

    /// A client for the chain's node, whichever the chain.
    pub fn client(&self) -> Result<(Arc<dyn ChainClient>, ChainId), RuntimeError> {
        match self.kind {
            ChainKind::Ethereum => {
                let (rpc, chain) = self.rpc()?;
                Ok((Arc::new(rpc), chain))
            }
            ChainKind::Bitcoin => {
                let chain = ChainId::parse(&self.chain)
                    .map_err(|e| RuntimeError::Config(format!("chain {}: {e}", self.chain)))?;
                let ca = crate::http::read_ca(self.ca_file.as_deref())?;
                let esplora = Esplora::with_ca(&self.rpc_url, ca.as_deref())
                    .map_err(|e| RuntimeError::chain(&chain, e))?;
                let client = BtcClient::new(esplora, chain.clone())
                    .map_err(|e| RuntimeError::chain(&chain, e))?;
                Ok((Arc::new(client), chain))
            }
        }
    }

    pub fn load(data_dir: &Path) -> Result<Self, RuntimeError> {
        let p = Self::path(data_dir);
        let text = std::fs::read_to_string(&p).map_err(|e| {
            RuntimeError::io(format!("{}: start `strongroom dev` or `serve` first", p.display()), e)
        })?;
        serde_json::from_str(&text)
            .map_err(|e| RuntimeError::Config(format!("{}: {e}", p.display())))
    }

    /// A client for the chain's node.
    pub fn rpc(&self) -> Result<(EthRpc, ChainId), RuntimeError> {
        let chain = ChainId::parse(&self.chain)
            .map_err(|e| RuntimeError::Config(format!("chain {}: {e}", self.chain)))?;
        let ca = crate::http::read_ca(self.ca_file.as_deref())?;
        let rpc = EthRpc::with_ca(&self.rpc_url, chain.clone(), Retry::default(), ca.as_deref())
            .map_err(|e| RuntimeError::chain(&chain, e))?;
        Ok((rpc, chain))
    }
}

/// A connected chain: its node answers for the configured chain and the signer nodes agree
/// on its hot key.
pub struct HotChain {
    pub chain: ChainId,
    /// The chain's adapter (Ethereum or Bitcoin) and its node.
    pub adapter: Arc<dyn ChainAdapter>,
    /// The chain's own node, for what only it does (consolidation).
    pub node: ChainNode,
    pub settings: ChainSettings,
    /// The hot wallet in use: the configured one, or the key governance migrated it to.
    pub wallet: WalletId,
    pub hot: Address,
    /// Keys migrated into `wallet`, with their addresses: watched and swept into `hot`.
    pub former: Vec<(WalletId, Address)>,
    pub cold: Option<Address>,
    /// The cold wallet's other addresses (a Bitcoin multisig's next receive and its change
    /// addresses, from `cold_descriptor`): counted as cold, and no deposit payer.
    pub cold_also: Vec<Address>,
    /// The hot wallet key's public half.
    key: Vec<u8>,
    /// With its chain code, on Bitcoin (deposit addresses' keys derive from it).
    master: Option<strongroom_mpc::ecdsa::MasterPublic>,
    engine: ChainEngine,
    signer: Arc<OrchestratorSigner>,
}

impl std::fmt::Debug for HotChain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HotChain")
            .field("chain", &self.chain)
            .field("wallet", &self.wallet)
            .field("hot", &self.hot)
            .finish_non_exhaustive()
    }
}

/// A chain's node as its kind knows it.
#[derive(Debug, Clone)]
pub enum ChainNode {
    /// A JSON-RPC node: its sweeper tops deposit addresses up with gas.
    Ethereum(EthRpc),
    /// An Esplora server: its sweeper spends deposit addresses' coins.
    Bitcoin(Arc<BtcAdapter>),
}

/// Reach a chain's node and check it serves `chain`: the chain id on Ethereum, the genesis
/// block on Bitcoin (a CAIP-2 `bip122:` id is the start of its hash).
async fn adapter_for(
    settings: &ChainSettings,
    chain: &ChainId,
) -> Result<(Arc<dyn ChainAdapter>, ChainNode), RuntimeError> {
    let ca = crate::http::read_ca(settings.ca_file.as_deref())?;
    match settings.kind {
        ChainKind::Ethereum => {
            let rpc =
                EthRpc::with_ca(&settings.rpc_url, chain.clone(), Retry::default(), ca.as_deref())
                    .map_err(|e| RuntimeError::chain(chain, e))?;
            rpc.check_chain().await.map_err(|e| RuntimeError::chain(chain, e))?;
            Ok((Arc::new(EthAdapter::new(rpc.clone())), ChainNode::Ethereum(rpc)))
        }
        ChainKind::Bitcoin => {
            let esplora = Esplora::with_ca(&settings.rpc_url, ca.as_deref())
                .map_err(|e| RuntimeError::chain(chain, e))?;
            let genesis =
                esplora
                    .block_hash(0)
                    .await
                    .map_err(|e| RuntimeError::chain(chain, e))?
                    .ok_or_else(|| RuntimeError::chain(chain, "the server has no genesis block"))?;
            let reference = chain.as_str().trim_start_matches("bip122:");
            if !genesis.to_string().starts_with(reference) {
                return Err(RuntimeError::chain(
                    chain,
                    format!("the Esplora server's genesis block is {genesis}: another network"),
                ));
            }
            let client = BtcClient::new(esplora, chain.clone())
                .map_err(|e| RuntimeError::chain(chain, e))?;
            let adapter = Arc::new(BtcAdapter::new(client, 3));
            Ok((adapter.clone(), ChainNode::Bitcoin(adapter)))
        }
    }
}

/// How the engine runs (tests and development).
#[derive(Debug, Clone, Default)]
pub struct EngineOptions {
    /// Die like a killed process at this step (crash tests).
    pub stop_at: Option<StopPoint>,
}

impl HotChain {
    /// Reach the node, check it serves the chain, and learn the hot wallet's address from the
    /// signer nodes (waiting while too few of them are up).
    pub async fn connect(
        settings: &ChainSettings,
        store: Arc<dyn Store>,
        signer: Arc<OrchestratorSigner>,
        env: Arc<dyn Env>,
        require_risk: bool,
        opts: &EngineOptions,
        instance: &Instance,
    ) -> Result<HotChain, RuntimeError> {
        let chain = ChainId::parse(&settings.chain)
            .map_err(|e| RuntimeError::Config(format!("[[chains]] {}: {e}", settings.chain)))?;
        let expected = match chain.family() {
            strongroom_units::ChainFamily::Ethereum => ChainKind::Ethereum,
            strongroom_units::ChainFamily::Bitcoin => ChainKind::Bitcoin,
        };
        if settings.kind != expected {
            return Err(RuntimeError::Config(format!(
                "[[chains]] {}: kind is {:?}, the chain id is {expected:?}",
                settings.chain, settings.kind
            )));
        }
        let (adapter, node) = adapter_for(settings, &chain).await?;
        let configured = WalletId::parse(&settings.hot_wallet).map_err(|e| {
            RuntimeError::Config(format!("hot_wallet {}: {e}", settings.hot_wallet))
        })?;
        // Governance may have migrated the configured key to a new one (ADR 0017).
        let wallets =
            strongroom_engine::rotation::hot_wallets(store.as_ref(), &configured, env.now())
                .await
                .map_err(|e| RuntimeError::chain(&chain, e))?;
        let wallet = wallets.current.clone();
        if !wallets.former.is_empty() {
            let former: Vec<&str> = wallets.former.iter().map(WalletId::as_str).collect();
            tracing::info!(
                chain = %chain,
                wallet = wallet.as_str(),
                former = ?former,
                "hot key migrated by governance: paying out from the new key, sweeping the old ones into it"
            );
        }
        let fee_asset = AssetSymbol::parse(&settings.fee_asset)
            .map_err(|e| RuntimeError::Config(format!("fee_asset {}: {e}", settings.fee_asset)))?;
        let cold = match &settings.cold_address {
            Some(a) => Some(
                Address::parse(&chain, a)
                    .map_err(|e| RuntimeError::Config(format!("cold_address {a}: {e}")))?,
            ),
            None => None,
        };
        // Bitcoin transactions get fee bumps after `fee_bump_after_secs` in the mempool.
        let bump_after_ms = match settings.kind {
            ChainKind::Bitcoin => settings
                .fee_bump_after_secs
                .map(|s| i64::try_from(s.saturating_mul(1000)).unwrap_or(i64::MAX)),
            ChainKind::Ethereum => None,
        };
        let cfg = ChainConfig {
            bump_after_ms,
            chain: chain.clone(),
            fee_asset,
            confirmations: settings.confirmations,
            stop_at: opts.stop_at,
            require_risk,
            worker: instance.name.clone(),
            lease_ms: instance.job_ms,
            home: (!wallets.former.is_empty()).then(|| wallet.clone()),
        };
        let engine = ChainEngine::new(store, adapter.clone(), signer.clone(), env, cfg);
        let mut waited = 0u32;
        let (key, hot) = loop {
            match engine.wallet(&wallet).await {
                Ok(k) => break k,
                Err(EngineError::Sign(e)) if e.retryable() => {
                    if waited.is_multiple_of(10) {
                        tracing::warn!(wallet = wallet.as_str(), error = %e, "waiting for the signer nodes");
                    }
                    waited = waited.saturating_add(1);
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Err(e) => {
                    return Err(RuntimeError::Signers(format!(
                        "hot wallet {}: {e}",
                        wallet.as_str()
                    )))
                }
            }
        };
        let mut former = Vec::new();
        for w in wallets.former {
            let (_, address) = engine.wallet(&w).await.map_err(|e| {
                RuntimeError::Signers(format!("migrated hot wallet {}: {e}", w.as_str()))
            })?;
            former.push((w, address));
        }
        let master = match &node {
            ChainNode::Bitcoin(_) => Some(signer.master(&wallet).await.map_err(|e| {
                RuntimeError::Signers(format!("hot wallet {}: {e}", wallet.as_str()))
            })?),
            ChainNode::Ethereum(_) => None,
        };
        let cold_also = match (&settings.cold_descriptor, &node) {
            (Some(d), ChainNode::Bitcoin(_)) => crate::refills::cold_addresses(&chain, d)?,
            (Some(_), ChainNode::Ethereum(_)) => {
                return Err(RuntimeError::Config(format!(
                    "{chain}: cold_descriptor is for Bitcoin chains"
                )))
            }
            (None, _) => Vec::new(),
        };
        Ok(HotChain {
            chain,
            adapter,
            node,
            master,
            settings: settings.clone(),
            wallet,
            hot,
            former,
            cold,
            cold_also,
            key,
            engine,
            signer,
        })
    }

    /// Customers' deposit addresses on this chain, for the API.
    pub fn deposit_addresses(&self, store: Arc<dyn Store>, env: Arc<dyn Env>) -> ChainAddresses {
        ChainAddresses {
            ours: Arc::new(std::sync::RwLock::new(self.addresses())),
            store,
            signer: self.signer.clone(),
            env,
            chain: self.chain.clone(),
            wallet: self.wallet.clone(),
        }
    }

    /// The signer client this chain signs through.
    pub fn signer(&self) -> Arc<OrchestratorSigner> {
        self.signer.clone()
    }

    /// The hot wallet's address and those of the keys migrated into it.
    fn addresses(&self) -> Vec<Address> {
        std::iter::once(self.hot.clone())
            .chain(self.former.iter().map(|(_, a)| a.clone()))
            .collect()
    }

    /// The hot wallets as they were when this chain connected.
    pub fn wallets(&self) -> strongroom_engine::rotation::HotWallets {
        strongroom_engine::rotation::HotWallets {
            current: self.wallet.clone(),
            former: self.former.iter().map(|(w, _)| w.clone()).collect(),
        }
    }

    /// What `DATA/chain.json` records of this chain.
    pub fn file(&self) -> ChainFile {
        let mut wallets = vec![(self.wallet.as_str().to_owned(), self.hot.as_str().to_owned())];
        for (w, a) in &self.former {
            wallets.push((w.as_str().to_owned(), a.as_str().to_owned()));
        }
        if let Some(cold) = &self.cold {
            let name = self.settings.cold_wallet.clone().unwrap_or_else(|| "cold".into());
            wallets.push((name, cold.as_str().to_owned()));
        }
        ChainFile {
            kind: self.settings.kind,
            rpc_url: self.settings.rpc_url.clone(),
            chain: self.chain.as_str().to_owned(),
            wallets,
            cold_also: self.cold_also.iter().map(|a| a.as_str().to_owned()).collect(),
            ca_file: self.settings.ca_file.clone(),
        }
    }

    /// What readiness and the metrics ask of this chain.
    pub fn probe(&self, store: Arc<dyn Store>) -> crate::probes::ChainProbe {
        crate::probes::ChainProbe {
            chain: self.chain.clone(),
            adapter: self.adapter.clone(),
            store,
        }
    }

    /// Start the workers; the treasury's passes are recorded on `api`.
    pub fn spawn(
        self,
        store: Arc<dyn Store>,
        env: Arc<dyn Env>,
        registry: &AssetRegistry,
        marks: &[WatermarkSettings],
        api: strongroom_server::AppState,
        instance: &Instance,
    ) -> Result<Vec<tokio::task::JoinHandle<()>>, RuntimeError> {
        let HotChain {
            chain,
            adapter,
            node,
            master,
            settings,
            wallet,
            hot,
            former,
            cold,
            cold_also,
            key,
            engine,
            ..
        } = self;
        let client = adapter.client();
        let native =
            registry.iter().find(|a| a.chain == chain && a.contract.is_none()).ok_or_else(
                || RuntimeError::Config(format!("[[assets]] names no native asset on {chain}")),
            )?;
        let on_chain: Vec<_> = registry.iter().filter(|a| a.chain == chain).collect();
        let tokens: Vec<(AssetSymbol, Address)> = on_chain
            .iter()
            .filter_map(|a| a.contract.clone().map(|c| (a.symbol.clone(), c)))
            .collect();
        let watch = WatchConfig {
            internal: cold.iter().cloned().chain(cold_also.iter().cloned()).collect(),
            chain: chain.clone(),
            confirmations: settings.confirmations,
            native: native.symbol.clone(),
            tokens,
            hot_wallets: std::iter::once(hot.clone())
                .chain(former.iter().map(|(_, a)| a.clone()))
                .collect(),
            wallets: std::iter::once(wallet.clone())
                .chain(former.iter().map(|(w, _)| w.clone()))
                .collect(),
            start_block: settings.start_block,
            max_blocks: 200,
            reorg_window: 64,
        };
        let sweep_cfg = SweepConfig {
            chain: chain.clone(),
            wallet: wallet.clone(),
            hot: hot.clone(),
            former: former.clone(),
            native: (native.symbol.clone(), native.decimals),
            tokens: on_chain
                .iter()
                .filter_map(|a| a.contract.clone().map(|c| (a.symbol.clone(), a.decimals, c)))
                .collect(),
            min_native: u128::from(settings.min_sweep_native),
            token_gas: 100_000,
            ttl_ms: 3_600_000,
        };
        let mut watermarks = Vec::new();
        for m in marks {
            let Some(asset) = on_chain.iter().find(|a| a.symbol.as_str() == m.asset) else {
                continue;
            };
            let amount = |s: &str| {
                Amount::parse_decimal(s, asset.decimals).map_err(|e| {
                    RuntimeError::Config(format!("[treasury] {}: {s:?}: {e}", m.asset))
                })
            };
            watermarks.push(Watermarks {
                asset: asset.symbol.clone(),
                decimals: asset.decimals,
                contract: asset.contract.clone(),
                low: amount(&m.low)?,
                target: amount(&m.target)?,
                high: amount(&m.high)?,
                min_cold_bps: m.min_cold_bps,
            });
        }
        let treasury = match (&cold, watermarks.is_empty()) {
            (Some(cold), false) => {
                let cfg = TreasuryConfig {
                    sweep: sweep_cfg.clone(),
                    cold: cold.clone(),
                    cold_also: cold_also.clone(),
                    marks: watermarks,
                };
                let t = Treasury::new(store.clone(), adapter.clone(), env.clone(), key, cfg)
                    .map_err(|e| RuntimeError::Config(format!("[treasury]: {e}")))?;
                Some((t, cold.as_str().to_owned()))
            }
            (None, false) => {
                return Err(RuntimeError::Config(format!(
                    "[treasury] has watermarks for {chain}, whose [[chains]] entry names no cold_address"
                )))
            }
            _ => None,
        };
        // Bitcoin with the cold wallet's descriptor: the server prepares refills from cold.
        let refills = match (&node, &settings.cold_descriptor, &treasury) {
            (ChainNode::Bitcoin(btc), Some(descriptor), Some(_)) => {
                let cold_wallet = settings.cold_wallet.as_deref().unwrap_or("cold");
                let cfg = crate::refills::RefillConfig {
                    chain: chain.clone(),
                    wallet: WalletId::parse(cold_wallet).map_err(|e| {
                        RuntimeError::Config(format!("{chain} cold_wallet {cold_wallet}: {e}"))
                    })?,
                    descriptor: descriptor.clone(),
                    hot: hot.clone(),
                    native: (native.symbol.clone(), native.decimals),
                };
                let esplora = btc.btc().esplora().clone();
                let r = crate::refills::ColdRefills::new(store.clone(), env.clone(), esplora, cfg)?;
                if cold.as_ref().map(Address::as_str) != Some(r.cold_address()?.as_str()) {
                    return Err(RuntimeError::Config(format!(
                        "{chain}: cold_address is not the cold_descriptor's first receive address"
                    )));
                }
                Some(r)
            }
            _ => None,
        };
        let sweeper = match (node, master) {
            (ChainNode::Ethereum(rpc), _) => {
                Consolidate::Ethereum(Sweeper::new(store.clone(), rpc, env.clone(), sweep_cfg))
            }
            (ChainNode::Bitcoin(btc), Some(master)) => Consolidate::Bitcoin(BtcSweeper::new(
                store.clone(),
                btc,
                env.clone(),
                sweep_cfg,
                master,
                settings.confirmations,
            )),
            (ChainNode::Bitcoin(_), None) => {
                return Err(RuntimeError::Signers(format!(
                    "{chain}: no chain code for the hot key"
                )))
            }
        };
        let watcher = DepositWatcher::new(store.clone(), client.clone(), env.clone(), watch);
        // One instance at a time watches the chain, plans sweeps and runs the treasury.
        let mut leader = instance.leader(store.clone(), env.clone(), &format!("chain/{chain}"));
        let watching = tokio::spawn(async move {
            loop {
                if !leader.lead().await {
                    tokio::time::sleep(Duration::from_millis(1_000)).await;
                    continue;
                }
                let planned = match &sweeper {
                    Consolidate::Ethereum(s) => s.plan().await,
                    Consolidate::Bitcoin(s) => s.plan().await,
                };
                if let Err(e) = planned {
                    tracing::warn!(error = %e, "sweep planning failed");
                }
                if let Some((t, cold)) = &treasury {
                    match t.run_once().await {
                        Ok(report) => {
                            if let Some(r) = &refills {
                                if let Err(e) = r.pass(&report).await {
                                    tracing::warn!(error = %e, "refill pass failed");
                                }
                            }
                            if let Err(e) = api.record_treasury(cold, readings(report)).await {
                                tracing::warn!(error = %e, "treasury pass not recorded");
                            }
                        }
                        Err(e) => tracing::warn!(error = %e, "treasury pass failed"),
                    }
                }
                match watcher.run_once().await {
                    Ok(r) if r.credited + r.reversed + r.held + r.dropped > 0 => tracing::info!(
                        credited = r.credited,
                        reversed = r.reversed,
                        held = r.held,
                        dropped = r.dropped,
                        "deposit watcher"
                    ),
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "deposit watcher pass failed"),
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        });
        let mut addresses = vec![hot];
        addresses.extend(former.into_iter().map(|(_, a)| a));
        addresses.extend(cold);
        addresses.extend(cold_also);
        let assets: Vec<(AssetSymbol, Option<Address>)> =
            on_chain.iter().map(|a| (a.symbol.clone(), a.contract.clone())).collect();
        let reconciling = tokio::spawn(reconcile_forever(
            instance.leader(store.clone(), env.clone(), &format!("reconcile/{chain}")),
            store.clone(),
            client.clone(),
            chain.clone(),
            assets,
            addresses,
        ));
        let withdrawing = tokio::spawn(async move {
            loop {
                match engine.run_once().await {
                    Ok(_) => {}
                    Err(EngineError::Stopped(p)) => {
                        // A test asked for a crash here: die like a killed process would.
                        tracing::error!(point = ?p, "engine: stopping as STRONGROOM_TEST_STOP_AFTER asks");
                        std::process::abort();
                    }
                    Err(e) => tracing::warn!(error = %e, "engine pass failed"),
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        });
        Ok(vec![withdrawing, watching, reconciling])
    }
}

/// A chain's consolidation of deposit addresses into the hot wallet.
enum Consolidate {
    Ethereum(Sweeper),
    Bitcoin(BtcSweeper),
}

/// A treasury pass as the API shows it.
fn readings(report: Vec<ColdRatio>) -> Vec<strongroom_server::treasury::TreasuryReading> {
    report
        .into_iter()
        .map(|r| {
            let (action, amount) = match r.action {
                Action::Hold => ("hold", None),
                Action::Sweep { amount } => ("sweep", Some(amount.base_units())),
                Action::SweepUnderWay => ("sweep_under_way", None),
                Action::SweepFailed { .. } => ("sweep_failed", None),
                Action::Refill { amount } => ("refill", Some(amount.base_units())),
            };
            strongroom_server::treasury::TreasuryReading {
                asset: r.asset.as_str().to_owned(),
                hot: r.hot.base_units(),
                cold: r.cold.base_units(),
                cold_bps: r.cold_bps,
                min_cold_bps: r.min_cold_bps,
                action: action.to_owned(),
                action_amount: amount,
                at_ms: r.at_ms,
            }
        })
        .collect()
}

/// Customers' deposit addresses on one chain, for the API.
#[derive(Debug)]
pub struct ChainAddresses {
    /// The hot wallet's address and those of keys migrated into it (kept current by
    /// [`follow_migrations`]).
    ours: Arc<std::sync::RwLock<Vec<Address>>>,
    store: Arc<dyn Store>,
    signer: Arc<OrchestratorSigner>,
    env: Arc<dyn Env>,
    chain: ChainId,
    wallet: WalletId,
}

impl ChainAddresses {
    /// The shared list of our addresses on this chain, for [`follow_migrations`] to update.
    pub fn ours(&self) -> Arc<std::sync::RwLock<Vec<Address>>> {
        self.ours.clone()
    }
}

/// What it takes to start a chain's workers again on another key.
pub struct Follow {
    pub settings: ChainSettings,
    pub store: Arc<dyn Store>,
    pub signer: Arc<OrchestratorSigner>,
    pub env: Arc<dyn Env>,
    pub require_risk: bool,
    pub opts: EngineOptions,
    pub instance: Instance,
    pub registry: AssetRegistry,
    pub marks: Vec<WatermarkSettings>,
    pub api: strongroom_server::AppState,
    /// Our addresses as the API sees them.
    pub ours: Arc<std::sync::RwLock<Vec<Address>>>,
    /// Where `chain.json` is written, for the first chain.
    pub chain_file: Option<PathBuf>,
}

impl std::fmt::Debug for Follow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Follow").field("chain", &self.settings.chain).finish_non_exhaustive()
    }
}

/// Aborts the workers it holds when dropped (a runtime stopping, or new workers).
struct Workers(Vec<tokio::task::JoinHandle<()>>);

impl Drop for Workers {
    fn drop(&mut self) {
        self.0.iter().for_each(tokio::task::JoinHandle::abort);
    }
}

/// Every 5 s, ask the stored governance log which keys are this chain's hot wallets; when a
/// quorum has migrated the key in use (ADR 0017), connect on the new key and replace the
/// workers: payouts, deposit addresses and sweeps follow without a restart, on every
/// instance (each reads the same log).
pub async fn follow_migrations(
    f: Follow,
    running: Vec<tokio::task::JoinHandle<()>>,
    mut wallets: strongroom_engine::rotation::HotWallets,
) {
    let mut workers = Workers(running);
    loop {
        tokio::time::sleep(Duration::from_secs(5)).await;
        let now = match strongroom_engine::rotation::hot_wallets(
            f.store.as_ref(),
            &wallets.current,
            f.env.now(),
        )
        .await
        {
            Ok(w) => w,
            Err(e) => {
                tracing::warn!(error = %e, "hot wallets not read from governance");
                continue;
            }
        };
        if now == wallets {
            continue;
        }
        tracing::warn!(
            alert = true,
            chain = f.settings.chain.as_str(),
            from = wallets.current.as_str(),
            to = now.current.as_str(),
            "hot key migrated by governance: this chain's workers move to the new key"
        );
        let chain = match HotChain::connect(
            &f.settings,
            f.store.clone(),
            f.signer.clone(),
            f.env.clone(),
            f.require_risk,
            &f.opts,
            &f.instance,
        )
        .await
        {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(alert = true, error = %e, "the chain's workers cannot move to the new key; retrying");
                continue;
            }
        };
        if let Ok(mut ours) = f.ours.write() {
            *ours = chain.addresses();
        }
        if let Some(path) = &f.chain_file {
            match serde_json::to_vec_pretty(&chain.file()) {
                Ok(text) => {
                    if let Err(e) = std::fs::write(path, text) {
                        tracing::warn!(error = %e, "chain.json not rewritten");
                    }
                }
                Err(e) => tracing::warn!(error = %e, "chain.json not rewritten"),
            }
        }
        let next = chain.wallets();
        // The old workers stop before the new ones start.
        drop(std::mem::replace(&mut workers, Workers(Vec::new())));
        match chain.spawn(
            f.store.clone(),
            f.env.clone(),
            &f.registry,
            &f.marks,
            f.api.clone(),
            &f.instance,
        ) {
            Ok(tasks) => {
                workers = Workers(tasks);
                wallets = next;
            }
            Err(e) => {
                tracing::error!(alert = true, error = %e, "the chain's workers did not start")
            }
        }
    }
}

/// Every chain's deposit addresses behind the API's one provider.
#[derive(Debug)]
pub struct DepositAddresses(pub Vec<ChainAddresses>);

#[async_trait]
impl strongroom_server::DepositAddresses for DepositAddresses {
    fn is_hot_wallet(&self, address: &Address) -> bool {
        self.0.iter().any(|c| c.ours.read().is_ok_and(|ours| ours.contains(address)))
    }

    async fn deposit_address(
        &self,
        customer_id: uuid::Uuid,
        asset: &strongroom_units::Asset,
    ) -> Result<strongroom_store::DepositAddress, strongroom_server::DepositAddressError> {
        use strongroom_server::DepositAddressError as E;
        let Some(c) = self.0.iter().find(|c| c.chain == asset.chain) else {
            return Err(E::ChainNotWatched {
                asset: asset.symbol.to_string(),
                chain: asset.chain.to_string(),
            });
        };
        // From the key in use now: one the quorum migrated gives way to its successor.
        let wallets =
            strongroom_engine::rotation::hot_wallets(c.store.as_ref(), &c.wallet, c.env.now())
                .await
                .map_err(|e| E::Unavailable(e.to_string()))?;
        strongroom_engine::deposits::deposit_address(
            c.store.as_ref(),
            c.signer.as_ref(),
            c.env.as_ref(),
            &c.chain,
            &wallets.current,
            customer_id,
        )
        .await
        .map_err(|e| E::Unavailable(e.to_string()))
    }
}

/// Ledger custody against the chain for `file`'s chain: over its wallets and every deposit
/// address, per asset the registry names on it.
pub async fn reconcile(
    store: &dyn Store,
    registry: &AssetRegistry,
    file: &ChainFile,
) -> Result<Vec<strongroom_engine::reconcile::Holding>, RuntimeError> {
    let (client, chain) = file.client()?;
    let mut addresses = Vec::new();
    for a in file.wallets.iter().map(|(_, a)| a).chain(&file.cold_also) {
        addresses.push(
            Address::parse(&chain, a).map_err(|e| RuntimeError::Config(format!("{a}: {e}")))?,
        );
    }
    let assets: Vec<(AssetSymbol, Option<Address>)> = registry
        .iter()
        .filter(|a| a.chain == chain)
        .map(|a| (a.symbol.clone(), a.contract.clone()))
        .collect();
    reconcile_once(store, client.as_ref(), &chain, &assets, &addresses).await
}

async fn reconcile_once(
    store: &dyn Store,
    client: &dyn ChainClient,
    chain: &ChainId,
    assets: &[(AssetSymbol, Option<Address>)],
    wallets: &[Address],
) -> Result<Vec<strongroom_engine::reconcile::Holding>, RuntimeError> {
    let mut addresses = wallets.to_vec();
    for d in store.deposit_addresses(chain).await? {
        addresses.push(
            Address::parse(chain, &d.address)
                .map_err(|e| RuntimeError::chain(chain, format!("stored address: {e}")))?,
        );
    }
    strongroom_engine::reconcile::reconcile(store, client, chain, assets, &addresses)
        .await
        .map_err(|e| RuntimeError::chain(chain, e))
}

/// Every 30 s, on the instance that leads it, reconcile; a difference while nothing is in motion is logged as an alert.
async fn reconcile_forever(
    mut leader: Leader,
    store: Arc<dyn Store>,
    client: Arc<dyn ChainClient>,
    chain: ChainId,
    assets: Vec<(AssetSymbol, Option<Address>)>,
    wallets: Vec<Address>,
) {
    loop {
        tokio::time::sleep(Duration::from_secs(30)).await;
        if !leader.lead().await {
            continue;
        }
        match reconcile_once(store.as_ref(), client.as_ref(), &chain, &assets, &wallets).await {
            Ok(report) => {
                for h in report.iter().filter(|h| h.settled() && !h.matches()) {
                    tracing::error!(alert = true, asset = %h.asset, ledger = %h.ledger, chain = %h.chain, "ledger and chain differ");
                }
            }
            Err(e) => tracing::warn!(error = %e, "reconciliation failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    fn bitcoin(chain: &str, url: &str) -> ChainSettings {
        ChainSettings {
            kind: ChainKind::Bitcoin,
            chain: chain.into(),
            rpc_url: url.into(),
            ca_file: None,
            confirmations: 3,
            hot_wallet: "hot-btc-wpkh-1".into(),
            fee_asset: "BTC".into(),
            start_block: 0,
            cold_address: None,
            cold_wallet: None,
            cold_descriptor: None,
            fee_bump_after_secs: None,
            min_sweep_native: 0,
        }
    }

    /// A Bitcoin chain's Esplora server must serve that network: its genesis block is checked
    /// against the `bip122:` id before anything else is asked of it.
    #[tokio::test]
    async fn an_esplora_server_of_another_network_is_refused() {
        let node = strongroom_chain_bitcoin::regtest::Regtest::new().unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(node.serve(listener));
        let regtest = ChainId::parse(strongroom_units::chain::BITCOIN_REGTEST).unwrap();
        let (adapter, node) =
            adapter_for(&bitcoin(regtest.as_str(), &url), &regtest).await.unwrap();
        assert_eq!(adapter.chain(), &regtest);
        assert!(matches!(node, ChainNode::Bitcoin(_)));
        let testnet = ChainId::parse(strongroom_units::chain::BITCOIN_TESTNET).unwrap();
        let e = adapter_for(&bitcoin(testnet.as_str(), &url), &testnet).await.unwrap_err();
        assert!(e.to_string().contains("another network"), "{e}");
        // Nobody listening: a clear error naming the chain, not a hang.
        let gone = bitcoin(regtest.as_str(), "http://127.0.0.1:9");
        let e = adapter_for(&gone, &regtest).await.unwrap_err();
        assert!(e.to_string().contains(regtest.as_str()), "{e}");
    }
}
