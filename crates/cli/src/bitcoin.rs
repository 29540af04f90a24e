//! The dev stack's Bitcoin preset: the local regtest backend (`chain-bitcoin`'s `regtest`, an
//! Esplora server over a chain kept in `DATA/bitcoin/chain.json`, a block every second while
//! transactions wait and every ten seconds otherwise), or an Esplora server named with
//! `--btc-esplora`; the hot wallet `hot-btc-wpkh-1` (P2WPKH of the signer nodes' ECDSA key)
//! paid 1 BTC by the faucet on first start, which the deposit watcher credits to the
//! treasury; with a
//! treasury, the dev cold wallet: a 2-of-3 P2WSH multisig of the three dev owner keys (the same
//! sealed backups as the Ethereum Safe's owners). The engine is the runtime's, as on Ethereum.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use serde::{Deserialize, Serialize};
use strongroom_chain::ChainClient;
use strongroom_chain_bitcoin::client::BtcClient;
use strongroom_chain_bitcoin::esplora::Esplora;
use strongroom_chain_bitcoin::regtest::Regtest;
use strongroom_chain_bitcoin::{bitcoin, Keychain, Multisig};
use strongroom_core::{Env, WalletId};
use strongroom_engine::TxSigner;
use strongroom_runtime::settings::{ChainKind, ChainSettings, WatermarkSettings};
use strongroom_runtime::signing::OrchestratorSigner;
use strongroom_units::chain::BITCOIN_REGTEST;
use strongroom_units::{Address, ChainId};

/// The dev Bitcoin hot wallet: the signer nodes' ECDSA key whose P2WPKH address it is.
pub const DEV_HOT_WALLET: &str = "hot-btc-wpkh-1";
/// What the dev faucet gives the hot wallet on first start (1 BTC), the treasury's.
const DEV_FAUCET_SAT: u64 = 100_000_000;

/// What `strongroom dev` was asked for Bitcoin.
#[derive(Debug, Clone)]
pub struct DevBitcoinOptions {
    /// An Esplora server for Bitcoin regtest instead of the local backend.
    pub esplora: Option<String>,
    pub confirmations: u64,
    /// The hot wallet's BTC watermarks (decimal BTC), when the treasury runs.
    pub treasury: Option<crate::chain::DevTreasury>,
}

/// The dev Bitcoin chain, ready for the runtime.
#[derive(Debug)]
pub struct DevBitcoin {
    pub settings: ChainSettings,
    pub marks: Vec<WatermarkSettings>,
    pub hot: Address,
    /// The local backend this start serves, and its miner (stopped when dropped).
    pub local: Option<LocalNode>,
}

/// The local regtest backend and its miner.
#[derive(Debug)]
pub struct LocalNode {
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for LocalNode {
    fn drop(&mut self) {
        self.tasks.iter().for_each(tokio::task::JoinHandle::abort);
    }
}

/// The dev cold wallet for Bitcoin, as `DATA/cold/bitcoin.json` records it.
#[derive(Debug, Serialize, Deserialize)]
struct DevColdBitcoin {
    descriptor: String,
    address: String,
    threshold: usize,
}

/// Start (or connect to) the Bitcoin backend; on first start fund the hot wallet and, with a
/// treasury, make the dev cold wallet.
pub async fn prepare(
    data_dir: &Path,
    signer: Arc<OrchestratorSigner>,
    opts: DevBitcoinOptions,
) -> anyhow::Result<DevBitcoin> {
    let chain = ChainId::parse(BITCOIN_REGTEST)?;
    let (url, local) = match &opts.esplora {
        Some(url) => (url.clone(), None),
        None => {
            let dir = data_dir.join("bitcoin");
            std::fs::create_dir_all(&dir)?;
            let node = Regtest::open(&dir.join("chain.json"))
                .with_context(|| format!("the regtest chain in {}", dir.display()))?;
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
            let url = format!("http://{}", listener.local_addr()?);
            let serving = node.clone();
            let server = tokio::spawn(async move {
                if let Err(e) = serving.serve(listener).await {
                    tracing::error!(error = %e, "the local Bitcoin backend stopped");
                }
            });
            let miner = tokio::spawn(mine_forever(node));
            (url, Some(LocalNode { tasks: vec![server, miner] }))
        }
    };
    let client = BtcClient::new(Esplora::new(&url)?, chain.clone())?;
    let env = strongroom_core::SystemEnv::new();
    let wallet = WalletId::parse(DEV_HOT_WALLET)?;
    let pk =
        signer.public_key(&wallet).await.map_err(|e| anyhow::anyhow!("hot wallet key: {e}"))?;
    let codec = strongroom_chain_bitcoin::hot::HotCodec::p2wpkh(chain.clone(), &pk)?;
    let hot = codec.own_address()?;
    fund_treasury(&url, &client, &hot).await?;
    let (cold, marks) = match opts.treasury {
        Some(t) => {
            let cold = dev_cold(data_dir, &env)?;
            let marks = vec![WatermarkSettings {
                asset: "BTC".into(),
                low: t.low,
                target: t.target,
                high: t.high,
                min_cold_bps: t.min_cold_bps,
            }];
            (Some(cold), marks)
        }
        None => (None, Vec::new()),
    };
    let settings = ChainSettings {
        kind: ChainKind::Bitcoin,
        chain: BITCOIN_REGTEST.into(),
        rpc_url: url,
        ca_file: None,
        confirmations: opts.confirmations,
        hot_wallet: wallet.as_str().into(),
        fee_asset: "BTC".into(),
        start_block: 0,
        cold_address: cold.as_ref().map(|c| c.address.clone()),
        cold_wallet: Some("cold-btc-1".into()),
        // The server prepares refills from the dev cold wallet for its owners to sign.
        cold_descriptor: cold.map(|c| c.descriptor),
        // The local backend mines while transactions wait; an Esplora server's chain may not.
        fee_bump_after_secs: Some(600),
        min_sweep_native: 10_000,
    };
    Ok(DevBitcoin { settings, marks, hot, local })
}

/// A block every second while transactions wait in the mempool, every ten seconds
/// otherwise (so confirmations come without filling the chain with empty blocks).
async fn mine_forever(node: Regtest) {
    let mut idle = 0u32;
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        idle += 1;
        if node.mempool().is_empty() && idle < 10 {
            continue;
        }
        idle = 0;
        if let Err(e) = node.mine(1, None) {
            tracing::warn!(error = %e, "the local Bitcoin backend did not mine");
        }
    }
}

/// On first start (the hot wallet never used), the faucet pays 1 BTC to the hot wallet
/// through the regtest control API, mined at once. It is a payment from outside into the hot
/// wallet, so the deposit watcher credits it to the treasury after its confirmations, and
/// custody and chain agree.
async fn fund_treasury(url: &str, client: &BtcClient, hot: &Address) -> anyhow::Result<()> {
    let address = strongroom_chain_bitcoin::address(hot.as_str(), bitcoin::Network::Regtest)?;
    if client.esplora().used(&address).await? {
        return Ok(());
    }
    let http = reqwest::Client::new();
    let txid = http
        .post(format!("{url}/regtest/fund"))
        .json(&serde_json::json!({ "address": hot.as_str(), "sats": DEV_FAUCET_SAT }))
        .send()
        .await?
        .error_for_status()
        .context("the dev Bitcoin faucet (an Esplora server without /regtest/fund?)")?
        .text()
        .await?;
    http.post(format!("{url}/regtest/mine"))
        .json(&serde_json::json!({ "blocks": 1 }))
        .send()
        .await?
        .error_for_status()?;
    let txid = txid.trim().to_owned();
    anyhow::ensure!(
        matches!(client.status(&txid).await?, strongroom_chain::TxStatus::Included { .. }),
        "the faucet's payment {txid} was not mined"
    );
    Ok(())
}

/// The dev cold wallet: a 2-of-3 P2WSH multisig of the three dev owner keys' BIP-48 account
/// keys, its first receive address where the treasury sweeps (made once, kept in
/// `DATA/cold/bitcoin.json`; `strongroom-cold init --restore` with an owner's backup signs
/// for it offline).
fn dev_cold(data_dir: &Path, env: &dyn Env) -> anyhow::Result<DevColdBitcoin> {
    let file = data_dir.join("cold").join("bitcoin.json");
    if file.exists() {
        return Ok(serde_json::from_slice(&std::fs::read(&file)?)?);
    }
    let owners = crate::chain::dev_owners(data_dir, env)?;
    let network = bitcoin::Network::Regtest;
    let keys = owners.iter().map(|s| s.account_key(network)).collect::<Result<Vec<_>, _>>()?;
    let multisig = Multisig::new(2, &keys, network)?;
    let record = DevColdBitcoin {
        descriptor: multisig.descriptor(),
        address: multisig.address(Keychain::Receive, 0)?.to_string(),
        threshold: 2,
    };
    strongroom_cold::home::write_atomic(&file, &serde_json::to_vec_pretty(&record)?)?;
    Ok(record)
}
