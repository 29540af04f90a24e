//! The dev stack's Ethereum preset: anvil (started from the project's pinned install, or a
//! node named with `--eth-rpc`), the hot wallet funded for gas from a dev faucet that the
//! ledger records as treasury money, the dev test token, the dev cold wallet (a Safe), and
//! `strongroom reconcile`. The engine itself is the runtime's (`strongroom_runtime`), the
//! same as `serve` runs.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use serde::{Deserialize, Serialize};
use serde_json::json;
use strongroom_chain::{ChainClient, TxCodec};
use strongroom_chain_ethereum::anvil::{self, Anvil};
use strongroom_chain_ethereum::relayer::RelayerKey;
use strongroom_chain_ethereum::rpc::{EthRpc, Retry};
use strongroom_core::ledger::TREASURY_CUSTOMER;
use strongroom_core::{new_id, Env, WalletId};
use strongroom_engine::TxSigner;
use strongroom_runtime::settings::{ChainKind, ChainSettings, WatermarkSettings};
use strongroom_runtime::signing::OrchestratorSigner;
use strongroom_store::{NewDeposit, Store, WriteCtx};
use strongroom_units::{Address, Amount, AssetSymbol, ChainId};

/// The dev chain's id (anvil's default).
pub const DEV_CHAIN: &str = "eip155:31337";
/// What the dev faucet gives the treasury on first start, in wei (100 ETH).
const DEV_FAUCET_WEI: u128 = 100 * 1_000_000_000_000_000_000;

/// The dev chain, ready for the runtime.
#[derive(Debug)]
pub struct DevChain {
    /// The anvil this start runs (stopped when dropped), if it started one.
    pub _anvil: Option<Anvil>,
    pub settings: ChainSettings,
    pub marks: Vec<WatermarkSettings>,
    pub hot: Address,
}

/// Start (or connect to) the dev chain; on first start fund the hot wallet, deploy the test
/// token and, with a treasury, the dev cold wallet.
pub async fn prepare_dev_chain(
    data_dir: &Path,
    store: &dyn Store,
    signer: Arc<OrchestratorSigner>,
    rpc_url: Option<String>,
    confirmations: u64,
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
    let env = strongroom_core::SystemEnv::new();
    let wallet = WalletId::parse("hot-eth-1")?;
    let pk =
        signer.public_key(&wallet).await.map_err(|e| anyhow::anyhow!("hot wallet key: {e}"))?;
    let hot = rpc.codec().address_of(&pk).map_err(|e| anyhow::anyhow!("{e}"))?;
    fund_treasury(store, &rpc, &env, &hot).await?;
    deploy_dev_token(&rpc).await;
    let (cold, marks) = match treasury {
        Some(t) => match dev_cold_safe(data_dir, &rpc, &env).await {
            Ok(safe) => {
                // ETH as asked, and the dev USDT (which deposit addresses sweep into the hot
                // wallet) at most 50,000, keeping 10,000 (no refill: the hot wallet starts
                // with none).
                let marks = vec![
                    WatermarkSettings {
                        asset: "ETH".into(),
                        low: t.low,
                        target: t.target,
                        high: t.high,
                        min_cold_bps: t.min_cold_bps,
                    },
                    WatermarkSettings {
                        asset: "USDT".into(),
                        low: "0".into(),
                        target: "10000".into(),
                        high: "50000".into(),
                        min_cold_bps: t.min_cold_bps,
                    },
                ];
                (Some(safe.address), marks)
            }
            Err(e) => {
                eprintln!("  No dev cold wallet, so no treasury: {e:#}");
                (None, Vec::new())
            }
        },
        None => (None, Vec::new()),
    };
    let settings = ChainSettings {
        kind: ChainKind::Ethereum,
        chain: DEV_CHAIN.into(),
        rpc_url: url,
        ca_file: None,
        confirmations,
        hot_wallet: wallet.as_str().into(),
        fee_asset: "ETH".into(),
        start_block: 0,
        cold_address: cold,
        cold_wallet: Some("cold-eth-1".into()),
        cold_descriptor: None,
        fee_bump_after_secs: None,
        min_sweep_native: 1_000_000_000_000_000,
    };
    Ok(Some(DevChain { _anvil: node, settings, marks, hot }))
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

/// The dev cold wallet, as `DATA/cold/safe.json` records it. Files written before the
/// Safe was created through the factory lack the later fields.
#[derive(Debug, Serialize, Deserialize)]
struct DevSafe {
    address: String,
    owners: Vec<String>,
    threshold: u8,
    /// The contracts it was created with (`SafeProxyFactory.createProxyWithNonce`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    singleton: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    factory: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    fallback_handler: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    salt_nonce: Option<String>,
    /// The relayer that pays the gas of `cold send` (its key: `relayer_key_file`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    relayer: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    relayer_key_file: Option<String>,
}

/// What the dev faucet gives the relayer for gas, in wei (10 ETH). The relayer is not a
/// custody wallet: the ledger does not count it.
const DEV_RELAYER_WEI: u128 = 10 * 1_000_000_000_000_000_000;

/// The dev relayer: `DATA/cold/relayer.key` (mode 0600), made on first use, and funded for
/// gas by the dev faucet when it holds less than a tenth of [`DEV_RELAYER_WEI`].
async fn dev_relayer(
    dir: &Path,
    rpc: &EthRpc,
    env: &dyn Env,
) -> anyhow::Result<(RelayerKey, std::path::PathBuf)> {
    let path = dir.join("relayer.key");
    let key = if path.exists() {
        RelayerKey::from_file(&path)?
    } else {
        let key = RelayerKey::generate(env)?;
        key.write_new(&path)?;
        key
    };
    let address = key.address().to_string();
    let balance = rpc.call("eth_getBalance", json!([address, "latest"])).await?;
    let balance =
        u128::from_str_radix(balance.as_str().unwrap_or("0x0").trim_start_matches("0x"), 16)
            .unwrap_or(0);
    if balance < DEV_RELAYER_WEI / 10 {
        rpc.call("anvil_setBalance", json!([address, format!("{DEV_RELAYER_WEI:#x}")]))
            .await
            .map_err(|e| anyhow::anyhow!("dev faucet for the relayer (anvil_setBalance): {e}"))?;
    }
    Ok((key, path))
}

/// The dev cold wallet, made at first start: three owner keys, each sealed as a
/// `strongroom-cold` backup under its own random passphrase (`DATA/cold/owner-N.backup` and
/// `.passphrase`; `strongroom-cold init --restore` turns one into an offline signer's
/// home), and a 2-of-3 Safe 1.4.1 with their addresses, created as Safe{Wallet} creates one:
/// through `SafeProxyFactory` with `setup` in the creation call, at the address `CREATE2`
/// predicts. The Safe contracts (singleton, factory, fallback handler) are deployed on the
/// dev node from the pinned npm artifacts, and every transaction is signed and paid for by
/// the dev relayer (`DATA/cold/relayer.key`), which `cold send --relayer-key` then uses.
/// Dev only: real cold keys are made on offline machines (`strongroom-cold init`) and only
/// their addresses come online.
async fn dev_cold_safe(data_dir: &Path, rpc: &EthRpc, env: &dyn Env) -> anyhow::Result<DevSafe> {
    use strongroom_chain_ethereum::safe::{SafeDeployment, U256};
    use strongroom_chain_ethereum::safe_node;
    use strongroom_cold::home::{owner_address, write_atomic};
    let dir = data_dir.join("cold");
    let file = dir.join("safe.json");
    if file.exists() {
        let safe: DevSafe = serde_json::from_slice(&std::fs::read(&file)?)?;
        if safe.relayer_key_file.is_some() {
            // Top the relayer up again if a developer spent its gas money.
            if let Err(e) = dev_relayer(&dir, rpc, env).await {
                eprintln!("  The dev relayer was not topped up: {e:#}");
            }
        }
        return Ok(safe);
    }
    let mut owners = Vec::new();
    for secret in dev_owners(data_dir, env)? {
        owners.push(owner_address(&secret)?);
    }
    let (relayer, relayer_file) = dev_relayer(&dir, rpc, env).await?;
    let root = std::env::current_dir()?;
    let root = if root.ancestors().any(|d| d.join(anvil::SAFE_ARTIFACTS).is_dir()) {
        root
    } else {
        std::env::current_exe()?.parent().map(Path::to_path_buf).unwrap_or_default()
    };
    let contracts = anvil::deploy_safe_contracts(rpc, &relayer, &root)
        .await
        .context("deploying the Safe contracts")?;
    owners.sort();
    let deployment = SafeDeployment::new(contracts, owners, 2, U256::ZERO)?;
    let predicted = safe_node::predict_safe(rpc, &deployment).await?;
    let safe = safe_node::deploy_safe(rpc, &relayer, &deployment)
        .await
        .context("deploying the Safe through the factory")?;
    anyhow::ensure!(
        safe.address == predicted,
        "the Safe is at {}, not at {predicted}",
        safe.address
    );
    let record = DevSafe {
        address: safe.address.to_checksum(None),
        owners: deployment.owners().iter().map(|o| o.to_checksum(None)).collect(),
        threshold: 2,
        singleton: Some(contracts.singleton.to_checksum(None)),
        factory: Some(contracts.factory.to_checksum(None)),
        fallback_handler: Some(contracts.fallback_handler.to_checksum(None)),
        salt_nonce: Some("0".into()),
        relayer: Some(relayer.address().to_checksum(None)),
        relayer_key_file: Some(relayer_file.display().to_string()),
    };
    write_atomic(&file, &serde_json::to_vec_pretty(&record)?)?;
    Ok(record)
}

/// The three dev owner keys (of the Ethereum Safe and the Bitcoin multisig alike): made at
/// first use, each sealed as a `strongroom-cold` backup under its own random passphrase
/// (`DATA/cold/owner-N.backup` and `.passphrase`, mode 0600); opened from them afterwards.
pub fn dev_owners(
    data_dir: &Path,
    env: &dyn Env,
) -> anyhow::Result<Vec<strongroom_chain_bitcoin::keys::ColdSecret>> {
    use strongroom_chain_bitcoin::keys::ColdSecret;
    use strongroom_cold::home::{write_atomic, ColdHome};
    let dir = data_dir.join("cold");
    std::fs::create_dir_all(&dir)?;
    let mut owners = Vec::new();
    for n in 1..=3 {
        let backup_file = dir.join(format!("owner-{n}.backup"));
        let pass_file = dir.join(format!("owner-{n}.passphrase"));
        if backup_file.exists() {
            let pass = strongroom_crypto::SecretString::new(
                std::fs::read_to_string(&pass_file)?.trim().to_owned(),
            );
            let backup = std::fs::read_to_string(&backup_file)?;
            owners.push(
                ColdHome::open_backup(backup.trim(), &pass)
                    .with_context(|| format!("opening {}", backup_file.display()))?,
            );
            continue;
        }
        let secret = ColdSecret::generate(env);
        let mut pass = [0u8; 20];
        env.fill_random(&mut pass);
        let pass = strongroom_crypto::SecretString::new(hex::encode(pass));
        let backup = ColdHome::seal_backup(&secret, &pass, env)?;
        write_atomic(&backup_file, format!("{backup}\n").as_bytes())?;
        write_atomic(&pass_file, format!("{}\n", pass.expose_secret()).as_bytes())?;
        restrict(&pass_file)?;
        owners.push(secret);
    }
    Ok(owners)
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

/// `strongroom reconcile`: ledger custody against each chain, per asset, over the hot and
/// cold wallets and every deposit address (as `DATA/chains.json`, or `DATA/chain.json` before
/// it, names them); exit 1 on any difference.
pub async fn reconcile_command(
    data_dir: &Path,
    store: &dyn Store,
    registry: &strongroom_units::AssetRegistry,
    output: crate::exit::Output,
) -> anyhow::Result<crate::exit::Exit> {
    let mut report = Vec::new();
    for file in strongroom_runtime::chains::ChainFile::load_all(data_dir)? {
        for h in strongroom_runtime::chains::reconcile(store, registry, &file).await? {
            report.push((file.chain.clone(), h));
        }
    }
    let mut ok = true;
    let mut assets = Vec::new();
    for (chain, h) in &report {
        let verdict = if h.matches() { "match" } else { "DIFFERENT" };
        ok &= h.matches();
        assets.push(json!({
            "chain_id": chain,
            "asset": h.asset.as_str(),
            "ledger": h.ledger.base_units().to_string(),
            "chain": h.chain.base_units().to_string(),
            "matches": h.matches(),
            "settled": h.settled(),
            "withdrawals_in_flight": h.in_flight,
            "deposits_awaiting_confirmations": h.uncredited_deposits,
        }));
        if output.is_json() {
            continue;
        }
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
    if output.is_json() {
        // Amounts in base units, as strings: they can exceed what a JSON number holds exactly.
        crate::exit::Output::print_json(&json!({ "matches": ok, "assets": assets }))?;
    }
    Ok(if ok { crate::exit::Exit::Ok } else { crate::exit::Exit::Problem })
}
