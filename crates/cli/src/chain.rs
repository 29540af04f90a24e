//! The dev stack's Ethereum side: anvil (started from the project's pinned install, or a
//! node named with `--eth-rpc`), the hot wallet funded for gas from a dev faucet that the
//! ledger records as treasury money, the withdrawal engine driving withdrawals through the
//! signer nodes, and `strongroom reconcile`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::json;
use strongroom_chain::ChainClient;
use strongroom_chain_ethereum::anvil::{self, Anvil};
use strongroom_chain_ethereum::rpc::{EthRpc, Retry};
use strongroom_core::ledger::TREASURY_CUSTOMER;
use strongroom_core::{new_id, Env, Intent, SystemEnv, WalletId};
use strongroom_engine::deposits::{DepositWatcher, WatchConfig};
use strongroom_engine::sweeps::{SweepConfig, Sweeper};
use strongroom_engine::treasury::{Action, ColdRatio, Treasury, TreasuryConfig, Watermarks};
use strongroom_engine::{
    EngineError, EthConfig, EthWithdrawals, SignAuth, SignError, StopPoint, TxSigner,
};
use strongroom_mpc::ecdsa::MasterPublic;
use strongroom_signer::wire::{KeyInfo, SignRequest, TxFormat};
use strongroom_signer::Orchestrator;
use strongroom_store::{NewDeposit, SqlStore, Store, WriteCtx};
use strongroom_units::{Address, Amount, AssetSymbol, ChainId};

/// The dev chain's id (anvil's default).
pub const DEV_CHAIN: &str = "eip155:31337";
/// What the dev faucet gives the treasury on first start, in wei (100 ETH).
const DEV_FAUCET_WEI: u128 = 100 * 1_000_000_000_000_000_000;

/// The signer nodes as the engine's `TxSigner`: two live nodes that hold the wallet's key
/// each decode the transaction and check it against the intent, then sign from a
/// presignature.
pub struct OrchestratorSigner {
    orch: Orchestrator,
    env: SystemEnv,
}

impl std::fmt::Debug for OrchestratorSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OrchestratorSigner").finish_non_exhaustive()
    }
}

impl OrchestratorSigner {
    pub fn new(orch: Orchestrator) -> Self {
        OrchestratorSigner { orch, env: SystemEnv::new() }
    }

    async fn key(&self, wallet: &WalletId) -> Result<(KeyInfo, Vec<u16>), SignError> {
        let mut reports = Vec::new();
        for n in self.orch.live_nodes().await {
            if let Ok(s) = self.orch.status(n).await {
                if let Some(k) = s.keys.into_iter().find(|k| k.key_id == wallet.as_str()) {
                    reports.push((n, k));
                }
            }
        }
        agreed_key(wallet, reports)
    }
}

/// The key the live nodes hold for `wallet`, and a threshold of them to sign. Every node
/// must report the same public key and chain code: one node lying about them would
/// otherwise redirect deposit addresses.
fn agreed_key(
    wallet: &WalletId,
    reports: Vec<(u16, KeyInfo)>,
) -> Result<(KeyInfo, Vec<u16>), SignError> {
    let (first_node, info) = reports.first().cloned().ok_or_else(|| SignError::Other {
        message: format!("no live signer node holds a key for wallet {}", wallet.as_str()),
        retryable: true,
    })?;
    if let Some((n, _)) = reports
        .iter()
        .find(|(_, k)| (&k.public_key, &k.chain_code) != (&info.public_key, &info.chain_code))
    {
        return Err(SignError::Other {
            message: format!(
                "signer node {n} reports another key for {} than node {first_node}: refusing to use either",
                wallet.as_str()
            ),
            retryable: false,
        });
    }
    let mut holders: Vec<u16> = reports.iter().map(|(n, _)| *n).collect();
    if holders.len() < usize::from(info.threshold) {
        return Err(SignError::Other {
            message: format!(
                "only {} of the {} signer nodes needed for {} are up",
                holders.len(),
                info.threshold,
                wallet.as_str()
            ),
            retryable: true,
        });
    }
    holders.truncate(usize::from(info.threshold));
    Ok((info, holders))
}

#[async_trait]
impl TxSigner for OrchestratorSigner {
    async fn public_key(&self, wallet: &WalletId) -> Result<Vec<u8>, SignError> {
        let (info, _) = self.key(wallet).await?;
        hex::decode(&info.public_key)
            .map_err(|_| SignError::other("malformed key from signers", false))
    }

    async fn master(&self, wallet: &WalletId) -> Result<MasterPublic, SignError> {
        let (info, _) = self.key(wallet).await?;
        let bad =
            |what: &str| SignError::other(format!("signers report a malformed {what}"), false);
        let public_key = hex::decode(&info.public_key)
            .ok()
            .and_then(|b| <[u8; 33]>::try_from(b).ok())
            .ok_or_else(|| bad("public key"))?;
        let chain_code = info
            .chain_code
            .as_deref()
            .and_then(|c| hex::decode(c).ok())
            .and_then(|b| <[u8; 32]>::try_from(b).ok())
            .ok_or_else(|| bad("chain code"))?;
        Ok(MasterPublic { public_key, chain_code })
    }

    async fn sign(
        &self,
        wallet: &WalletId,
        path: &[u32],
        intent: &Intent,
        unsigned: &[u8],
        auth: &SignAuth,
    ) -> Result<Vec<u8>, SignError> {
        let (info, signers) = self.key(wallet).await?;
        let request = SignRequest {
            intent: hex::encode(
                intent.encode().map_err(|e| SignError::other(e.to_string(), false))?,
            ),
            format: TxFormat::Eip1559,
            tx: hex::encode(unsigned),
            path: path.to_vec(),
            approvals: auth.approvals.clone(),
            customer_id: auth.customer_id.clone(),
            initiation: auth.initiation.clone().map(Box::new),
            governance: auth.governance.clone(),
            customer_keys: auth.customer_keys.clone(),
            customer_approval: auth.customer_approval.clone().map(Box::new),
        };
        let signed = self
            .orch
            .sign_pooled(&self.env, &info, &signers, &request)
            .await
            .map_err(|r| SignError::Refused(Box::new(r)))?;
        Ok(signed.signature)
    }
}

/// Where the dev chain is, for `strongroom reconcile` and scripts (`DATA/chain.json`).
#[derive(Debug, Serialize, Deserialize)]
pub struct ChainFile {
    pub rpc_url: String,
    pub chain: String,
    pub wallets: Vec<(String, String)>,
}

impl ChainFile {
    pub fn path(data_dir: &Path) -> PathBuf {
        data_dir.join("chain.json")
    }
    pub fn load(data_dir: &Path) -> anyhow::Result<Self> {
        let p = Self::path(data_dir);
        let text = std::fs::read_to_string(&p)
            .with_context(|| format!("{}: run `strongroom dev` with a chain first", p.display()))?;
        Ok(serde_json::from_str(&text)?)
    }
}

/// The running dev chain and engine.
#[derive(Debug)]
pub struct DevChain {
    _anvil: Option<Anvil>,
    engine: tokio::task::JoinHandle<()>,
    watcher: tokio::task::JoinHandle<()>,
    reconciler: tokio::task::JoinHandle<()>,
    pub rpc_url: String,
    pub hot_wallet: Address,
    /// The dev cold wallet (a Safe), when the treasury runs.
    pub cold_wallet: Option<String>,
}

impl DevChain {
    pub fn stop(self) {
        self.engine.abort();
        self.watcher.abort();
        self.reconciler.abort();
    }
}

/// Start (or connect to) the dev chain, fund the hot wallet once, and run the engine.
#[allow(clippy::too_many_arguments)]
pub async fn start_dev_chain(
    data_dir: &Path,
    store: Arc<SqlStore>,
    orch: Orchestrator,
    rpc_url: Option<String>,
    confirmations: u64,
    api: &strongroom_server::AppState,
    require_risk: bool,
    treasury: Option<DevTreasury>,
) -> anyhow::Result<Option<DevChain>> {
    let chain = ChainId::parse(DEV_CHAIN)?;
    let (node, url) = match rpc_url {
        Some(url) => (None, url),
        None => {
            let root = std::env::current_dir()?;
            let exe_dir =
                std::env::current_exe()?.parent().map(Path::to_path_buf).unwrap_or_default();
            let Some(bin) = anvil::find(&root).or_else(|| anvil::find(&exe_dir)) else {
                eprintln!("  No Ethereum node: run scripts/install-eth-tools (anvil) or pass --eth-rpc URL.");
                return Ok(None);
            };
            let state_dir = data_dir.join("anvil");
            std::fs::create_dir_all(&state_dir)?;
            let state = state_dir.join("state.json");
            let state = state.to_str().context("data folder path is not UTF-8")?;
            // One block a second so confirmations come; state saved every second.
            let args = ["--block-time", "1", "--state", state, "--state-interval", "1"];
            let a = Anvil::start(&bin, 31337, &args).await.context("starting anvil")?;
            let url = a.url.clone();
            (Some(a), url)
        }
    };
    let rpc =
        EthRpc::new(&url, chain.clone(), Retry::default()).map_err(|e| anyhow::anyhow!("{e}"))?;
    rpc.check_chain().await.map_err(|e| anyhow::anyhow!("{e}"))?;

    let signer = Arc::new(OrchestratorSigner::new(orch));
    let env: Arc<dyn Env> = Arc::new(SystemEnv::new());
    let stop_at = match std::env::var("STRONGROOM_TEST_STOP_AFTER") {
        Ok(v) => Some(StopPoint::parse(&v).context("STRONGROOM_TEST_STOP_AFTER: signed or sent")?),
        Err(_) => None,
    };
    let cfg = EthConfig {
        chain: chain.clone(),
        fee_asset: AssetSymbol::parse("ETH")?,
        confirmations,
        stop_at,
        require_risk,
    };
    let engine = EthWithdrawals::new(store.clone(), rpc.clone(), signer.clone(), env.clone(), cfg);
    let wallet = WalletId::parse("hot-eth-1")?;
    let (_, hot) =
        engine.wallet(&wallet).await.map_err(|e| anyhow::anyhow!("hot wallet key: {e}"))?;
    fund_treasury(store.as_ref(), &rpc, env.as_ref(), &hot).await?;
    deploy_dev_token(&rpc).await;

    // Deposit addresses through the API; the watcher credits what arrives in them.
    let registry = strongroom_units::AssetRegistry::dev();
    api.set_deposit_addresses(Arc::new(DevAddresses {
        hot: hot.clone(),
        store: store.clone(),
        signer: signer.clone(),
        env: env.clone(),
        chain: chain.clone(),
        wallet: wallet.clone(),
    }));
    let tokens: Vec<(AssetSymbol, Address)> = registry
        .iter()
        .filter(|a| a.chain == chain)
        .filter_map(|a| a.contract.clone().map(|c| (a.symbol.clone(), c)))
        .collect();
    let watch = WatchConfig {
        chain: chain.clone(),
        confirmations,
        native: AssetSymbol::parse("ETH")?,
        tokens,
        hot_wallets: vec![hot.clone()],
        start_block: 0,
        max_blocks: 200,
        reorg_window: 64,
    };
    let sweep_cfg = SweepConfig {
        chain: chain.clone(),
        wallet: wallet.clone(),
        hot: hot.clone(),
        native: (AssetSymbol::parse("ETH")?, 18),
        tokens: registry
            .iter()
            .filter(|a| a.chain == chain)
            .filter_map(|a| a.contract.clone().map(|c| (a.symbol.clone(), a.decimals, c)))
            .collect(),
        min_native: 1_000_000_000_000_000,
        token_gas: 100_000,
        ttl_ms: 3_600_000,
    };
    let treasury = match treasury {
        Some(t) => {
            match dev_treasury(data_dir, store.clone(), &rpc, env.clone(), &sweep_cfg, &t).await {
                Ok(t) => Some(t),
                Err(e) => {
                    eprintln!("  No dev cold wallet, so no treasury: {e:#}");
                    None
                }
            }
        }
        None => None,
    };
    let cold_wallet = treasury.as_ref().map(|(_, cold)| cold.clone());
    let sweeper = Sweeper::new(store.clone(), rpc.clone(), env.clone(), sweep_cfg);
    let state = api.clone();
    let watcher = DepositWatcher::new(store.clone(), Arc::new(rpc.clone()), env.clone(), watch);
    let watcher = tokio::spawn(async move {
        loop {
            if let Err(e) = sweeper.plan().await {
                tracing::warn!(error = %e, "sweep planning failed");
            }
            if let Some((t, cold)) = &treasury {
                match t.run_once().await {
                    Ok(report) => state.record_treasury(cold, readings(report)),
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
    let mut wallets = vec![(wallet.as_str().to_owned(), hot.as_str().to_owned())];
    if let Some(cold) = &cold_wallet {
        wallets.push(("cold-eth-1".into(), cold.clone()));
    }
    let file = ChainFile { rpc_url: url.clone(), chain: chain.as_str().into(), wallets };
    std::fs::write(ChainFile::path(data_dir), serde_json::to_vec_pretty(&file)?)?;
    let reconciler = spawn_reconcile(store.clone(), rpc.clone(), chain.clone(), file);

    let engine = tokio::spawn(async move {
        loop {
            match engine.run_once().await {
                Ok(_) => {}
                Err(EngineError::Stopped(p)) => {
                    // A test asked for a crash here: die like a killed process would.
                    eprintln!("engine: stopping at {p:?} as STRONGROOM_TEST_STOP_AFTER asks");
                    std::process::abort();
                }
                Err(e) => tracing::warn!(error = %e, "engine pass failed"),
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    });
    Ok(Some(DevChain {
        _anvil: node,
        engine,
        watcher,
        reconciler,
        rpc_url: url,
        hot_wallet: hot,
        cold_wallet,
    }))
}

/// The dev treasury's settings: the hot wallet's ETH watermarks (decimal ETH) and the cold
/// share asked for.
#[derive(Debug, Clone)]
pub struct DevTreasury {
    pub low: String,
    pub target: String,
    pub high: String,
    pub min_cold_bps: u32,
}

/// The dev cold wallet, as `DATA/cold/safe.json` records it.
#[derive(Debug, Serialize, Deserialize)]
struct DevSafe {
    address: String,
    owners: Vec<String>,
    threshold: u8,
}

/// The dev cold wallet, made at first start: three owner keys, each sealed as a
/// `strongroom-cold` backup under its own random passphrase (`DATA/cold/owner-N.backup` and
/// `.passphrase`; `strongroom-cold init --restore` turns one into an offline signer's
/// home), and a 2-of-3 Safe 1.4.1 with their addresses. Dev only: real cold keys are made
/// on offline machines (`strongroom-cold init`) and only their addresses come online.
async fn dev_cold_safe(data_dir: &Path, rpc: &EthRpc, env: &dyn Env) -> anyhow::Result<DevSafe> {
    use strongroom_chain_bitcoin::keys::ColdSecret;
    use strongroom_cold::home::{owner_address, write_atomic, ColdHome};
    let dir = data_dir.join("cold");
    let file = dir.join("safe.json");
    if file.exists() {
        return Ok(serde_json::from_slice(&std::fs::read(&file)?)?);
    }
    std::fs::create_dir_all(&dir)?;
    let mut owners = Vec::new();
    for n in 1..=3 {
        let secret = ColdSecret::generate(env);
        let mut pass = [0u8; 20];
        env.fill_random(&mut pass);
        let pass = strongroom_crypto::SecretString::new(hex::encode(pass));
        let backup = ColdHome::seal_backup(&secret, &pass, env)?;
        write_atomic(&dir.join(format!("owner-{n}.backup")), format!("{backup}\n").as_bytes())?;
        let pass_file = dir.join(format!("owner-{n}.passphrase"));
        write_atomic(&pass_file, format!("{}\n", pass.expose_secret()).as_bytes())?;
        restrict(&pass_file)?;
        owners.push(owner_address(&secret)?);
    }
    let accounts = rpc.call("eth_accounts", json!([])).await.map_err(|e| anyhow::anyhow!("{e}"))?;
    let from = accounts
        .get(0)
        .and_then(|a| a.as_str())
        .context("the node unlocks no account to deploy the Safe from")?
        .to_owned();
    let root = std::env::current_dir()?;
    let root = if root.ancestors().any(|d| d.join(anvil::SAFE_ARTIFACTS).is_dir()) {
        root
    } else {
        std::env::current_exe()?.parent().map(Path::to_path_buf).unwrap_or_default()
    };
    let safe = anvil::deploy_safe(rpc, &root, &from, &owners, 2)
        .await
        .map_err(|e| anyhow::anyhow!("deploying the Safe: {e}"))?;
    let record = DevSafe {
        address: safe.to_checksum(None),
        owners: owners.iter().map(|o| o.to_checksum(None)).collect(),
        threshold: 2,
    };
    write_atomic(&file, &serde_json::to_vec_pretty(&record)?)?;
    Ok(record)
}

#[cfg(unix)]
fn restrict(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
}
#[cfg(not(unix))]
fn restrict(_: &Path) -> std::io::Result<()> {
    Ok(())
}

async fn dev_treasury(
    data_dir: &Path,
    store: Arc<SqlStore>,
    rpc: &EthRpc,
    env: Arc<dyn Env>,
    sweep: &SweepConfig,
    t: &DevTreasury,
) -> anyhow::Result<(Treasury, String)> {
    let safe = dev_cold_safe(data_dir, rpc, env.as_ref()).await?;
    let cold = Address::parse(&sweep.chain, &safe.address)?;
    let eth = |s: &str| {
        Amount::parse_decimal(s, 18).with_context(|| format!("{s:?} is not an ETH amount"))
    };
    let marks = Watermarks {
        asset: AssetSymbol::parse("ETH")?,
        decimals: 18,
        contract: None,
        low: eth(&t.low)?,
        target: eth(&t.target)?,
        high: eth(&t.high)?,
        min_cold_bps: t.min_cold_bps,
    };
    let cfg = TreasuryConfig { sweep: sweep.clone(), cold, marks: vec![marks] };
    let treasury =
        Treasury::new(store, rpc.clone(), env, cfg).map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok((treasury, safe.address))
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

/// Customers' deposit addresses on the dev chain, for the API.
#[derive(Debug)]
struct DevAddresses {
    hot: Address,
    store: Arc<SqlStore>,
    signer: Arc<OrchestratorSigner>,
    env: Arc<dyn Env>,
    chain: ChainId,
    wallet: WalletId,
}

#[async_trait]
impl strongroom_server::DepositAddresses for DevAddresses {
    fn is_hot_wallet(&self, address: &Address) -> bool {
        address == &self.hot
    }

    async fn deposit_address(
        &self,
        customer_id: uuid::Uuid,
        asset: &strongroom_units::Asset,
    ) -> Result<strongroom_store::DepositAddress, String> {
        if asset.chain != self.chain {
            return Err(format!(
                "{} is on {}, which this server does not watch",
                asset.symbol, asset.chain
            ));
        }
        strongroom_engine::deposits::deposit_address(
            self.store.as_ref(),
            self.signer.as_ref(),
            self.env.as_ref(),
            &self.chain,
            &self.wallet,
            customer_id,
        )
        .await
        .map_err(|e| e.to_string())
    }
}

/// Deploy the dev test ERC-20 (USDT, 6 decimals) where the dev asset list expects it: the
/// first contract of anvil's first account. Minting to anvil's accounts lets developers
/// "deposit" it. Skipped, with a note, when that account has been used already.
async fn deploy_dev_token(rpc: &EthRpc) {
    let result: anyhow::Result<()> = async {
        let expected = strongroom_units::chain::DEV_TOKEN_CONTRACT;
        let code = rpc
            .call("eth_getCode", json!([expected, "latest"]))
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        if code.as_str().is_some_and(|c| c.len() > 2) {
            return Ok(());
        }
        let accounts =
            rpc.call("eth_accounts", json!([])).await.map_err(|e| anyhow::anyhow!("{e}"))?;
        let from = accounts
            .get(0)
            .and_then(|a| a.as_str())
            .context("the node has no unlocked account")?
            .to_owned();
        let token = anvil::deploy_test_token(rpc, &from, "Tether USD (Strongroom test)", "USDT", 6)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        anyhow::ensure!(
            token.as_str() == expected,
            "the test token landed at {} instead of {expected}",
            token.as_str()
        );
        let chain = ChainId::parse(DEV_CHAIN)?;
        for a in accounts.as_array().into_iter().flatten().filter_map(|a| a.as_str()) {
            let checksummed = strongroom_units::address::eip55_checksum(a.trim_start_matches("0x"));
            let to = Address::parse(&chain, &checksummed)?;
            anvil::mint_test_token(rpc, &from, &token, &to, 1_000_000 * 1_000_000)
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
        }
        Ok(())
    }
    .await;
    if let Err(e) = result {
        eprintln!("  No dev USDT token: {e:#}");
    }
}

/// On first start, a dev faucet puts 100 ETH of gas money in the hot wallet, and the
/// ledger records it as the treasury's, so custody and chain agree from the start.
async fn fund_treasury(
    store: &dyn Store,
    rpc: &EthRpc,
    env: &dyn Env,
    hot: &Address,
) -> anyhow::Result<()> {
    let ctx = WriteCtx { actor: "cli:dev".into(), now: env.now(), request_id: None };
    store.ensure_treasury(&ctx).await?;
    let eth = AssetSymbol::parse("ETH")?;
    let funded = store.balances(TREASURY_CUSTOMER).await?.iter().any(|b| b.asset == eth);
    if funded {
        return Ok(());
    }
    let have = rpc.balance(hot, None).await.map_err(|e| anyhow::anyhow!("{e}"))?.base_units();
    let want = have.checked_add(DEV_FAUCET_WEI).context("balance overflow")?;
    rpc.call("anvil_setBalance", json!([hot.as_str(), format!("{want:#x}")]))
        .await
        .map_err(|e| anyhow::anyhow!("dev faucet (anvil_setBalance): {e}"))?;
    let deposit = NewDeposit {
        id: new_id(env),
        entry_id: new_id(env),
        customer_id: TREASURY_CUSTOMER,
        asset: eth,
        amount: Amount::from_base_units(DEV_FAUCET_WEI)?,
        reference: format!("dev-faucet:{}", hot.as_str()),
    };
    store.credit_deposit(&ctx, None, deposit).await?;
    Ok(())
}

/// `strongroom reconcile`: ledger custody against the chain, per asset, over the hot wallet
/// and every deposit address; exit 1 on any difference.
pub async fn reconcile_command(
    data_dir: &Path,
    store: &dyn Store,
) -> anyhow::Result<std::process::ExitCode> {
    let file = ChainFile::load(data_dir)?;
    let chain = ChainId::parse(&file.chain)?;
    let rpc = EthRpc::new(&file.rpc_url, chain.clone(), Retry::default())
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let report = reconcile_chain(store, &rpc, &chain, &file).await?;
    let mut ok = true;
    for h in &report {
        let verdict = if h.matches() { "match" } else { "DIFFERENT" };
        ok &= h.matches();
        let moving = if h.settled() {
            String::new()
        } else {
            format!(
                " ({} withdrawals in flight, {} deposits awaiting confirmations)",
                h.in_flight, h.uncredited_deposits
            )
        };
        println!(
            "{:<6} ledger {:>30}  chain {:>30}  {verdict}{moving}",
            h.asset.as_str(),
            h.ledger.base_units(),
            h.chain.base_units(),
        );
    }
    Ok(if ok { std::process::ExitCode::SUCCESS } else { std::process::ExitCode::from(1) })
}

/// Reconcile the dev chain's assets over its hot wallets and deposit addresses.
async fn reconcile_chain(
    store: &dyn Store,
    rpc: &EthRpc,
    chain: &ChainId,
    file: &ChainFile,
) -> anyhow::Result<Vec<strongroom_engine::reconcile::Holding>> {
    let mut addresses = file
        .wallets
        .iter()
        .map(|(_, a)| Address::parse(chain, a))
        .collect::<Result<Vec<_>, _>>()?;
    for d in store.deposit_addresses(chain).await? {
        addresses.push(Address::parse(chain, &d.address)?);
    }
    let assets: Vec<(AssetSymbol, Option<Address>)> = strongroom_units::AssetRegistry::dev()
        .iter()
        .filter(|a| &a.chain == chain)
        .map(|a| (a.symbol.clone(), a.contract.clone()))
        .collect();
    strongroom_engine::reconcile::reconcile(store, rpc, chain, &assets, &addresses)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))
}

/// Every 30 s, reconcile; a difference while nothing is in motion is logged as an alert.
fn spawn_reconcile(
    store: Arc<SqlStore>,
    rpc: EthRpc,
    chain: ChainId,
    file: ChainFile,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(30)).await;
            match reconcile_chain(store.as_ref(), &rpc, &chain, &file).await {
                Ok(report) => {
                    for h in report.iter().filter(|h| h.settled() && !h.matches()) {
                        tracing::error!(asset = %h.asset, ledger = %h.ledger, chain = %h.chain, "ALERT: ledger and chain differ");
                    }
                }
                Err(e) => tracing::warn!(error = %e, "reconciliation failed"),
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use strongroom_signer::wire::Scheme;

    fn info(pk: &str, cc: &str) -> KeyInfo {
        KeyInfo {
            key_id: "hot-eth-1".into(),
            scheme: Scheme::Ecdsa,
            threshold: 2,
            parties: vec![1, 2, 3],
            public_key: pk.into(),
            chain_code: Some(cc.into()),
        }
    }

    #[test]
    fn nodes_must_agree_on_the_key_and_chain_code() {
        let w = WalletId::parse("hot-eth-1").unwrap();
        let (k, signers) =
            agreed_key(&w, vec![(1, info("02aa", "cc")), (3, info("02aa", "cc"))]).unwrap();
        assert_eq!((k.public_key.as_str(), signers), ("02aa", vec![1, 3]));
        // One node reporting another chain code (which would move every deposit address).
        let e = agreed_key(&w, vec![(1, info("02aa", "cc")), (2, info("02aa", "dd"))]).unwrap_err();
        assert!(!e.retryable() && e.to_string().contains("node 2 reports another key"), "{e}");
        // Too few nodes up: retry later.
        let e = agreed_key(&w, vec![(1, info("02aa", "cc"))]).unwrap_err();
        assert!(e.retryable() && e.to_string().contains("only 1 of the 2"), "{e}");
        assert!(agreed_key(&w, vec![]).unwrap_err().retryable());
    }
}
