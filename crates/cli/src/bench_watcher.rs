//! `strongroom bench watcher`: what the deposit watcher costs per block as the set of
//! watched addresses grows. The real watcher (`engine::deposits::DepositWatcher`) reads real
//! blocks from anvil (each block `transfers` ETH transfers, a tenth of them to watched
//! addresses) over JSON-RPC, against a PostgreSQL database holding `addresses` deposit
//! addresses; the same run with 1,000 addresses is the baseline. Reported: the first pass
//! (loading every address), then per block the median and 99th percentile, and the memory
//! the address set takes.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use sqlx::Executor;
use strongroom_chain_ethereum::anvil::{self, Anvil};
use strongroom_chain_ethereum::rpc::{EthRpc, Retry};
use strongroom_core::{Env, SystemEnv};
use strongroom_engine::deposits::{DepositWatcher, WatchConfig};
use strongroom_store::SqlStore;
use strongroom_units::{Address, AssetSymbol, ChainId};

/// One run's figures.
#[derive(Debug)]
struct WatchRun {
    addresses: usize,
    load_ms: f64,
    block_p50_ms: f64,
    block_p99_ms: f64,
    rss_growth_mb: f64,
    seen: usize,
}

/// The process's resident memory, in MiB (Linux).
pub(crate) fn rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

/// A random canonical address on `chain`.
fn random_address(env: &dyn Env, chain: &ChainId) -> anyhow::Result<Address> {
    let mut b = [0u8; 20];
    env.fill_random(&mut b);
    Ok(Address::parse(chain, &format!("0x{}", hex::encode(b)))?)
}

/// `n` customers with a deposit address each, written straight into the tables (the
/// benchmark measures reading them, not making them).
async fn populate(
    store: &SqlStore,
    env: &dyn Env,
    chain: &ChainId,
    n: usize,
) -> anyhow::Result<Vec<Address>> {
    let mut addresses = Vec::with_capacity(n);
    let mut index = 0usize;
    while index < n {
        let batch = (n - index).min(1_000);
        let mut customers =
            String::from("INSERT INTO customers (id, external_id, created_at_ms) VALUES ");
        let mut rows = String::from("INSERT INTO deposit_addresses (chain, customer_id, wallet, path_index, address, created_at_ms) VALUES ");
        for k in 0..batch {
            let id = strongroom_core::new_id(env);
            let a = random_address(env, chain)?;
            let sep = if k == 0 { "" } else { "," };
            customers.push_str(&format!("{sep}('{id}', 'bench-{}', 0)", index + k));
            rows.push_str(&format!(
                "{sep}('{}', '{id}', 'hot-eth-1', {}, '{}', 0)",
                chain.as_str(),
                index + k,
                a.as_str()
            ));
            addresses.push(a);
        }
        store.pool().execute(customers.as_str()).await?;
        store.pool().execute(rows.as_str()).await?;
        index += batch;
    }
    Ok(addresses)
}

async fn send(
    url: &str,
    method: &str,
    params: serde_json::Value,
) -> anyhow::Result<serde_json::Value> {
    let body = serde_json::json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params});
    let v: serde_json::Value =
        reqwest::Client::new().post(url).json(&body).send().await?.json().await?;
    if let Some(e) = v.get("error") {
        anyhow::bail!("{method}: {e}");
    }
    Ok(v.get("result").cloned().unwrap_or_default())
}

async fn run_once(
    postgres_url: &str,
    anvil_bin: &std::path::Path,
    addresses: usize,
    blocks: usize,
    transfers: usize,
) -> anyhow::Result<WatchRun> {
    let env = SystemEnv::new();
    let chain = ChainId::parse("eip155:31337")?;
    let (db_name, db_url) =
        crate::bench::fresh_db(postgres_url, &format!("watch{addresses}")).await?;
    let store = Arc::new(SqlStore::connect(&db_url, strongroom_store::sql_options(4)).await?);
    store.migrate().await?;
    let ours = populate(&store, &env, &chain, addresses).await?;

    // Blocks mined on demand: each holds `transfers` transfers, a tenth to watched addresses.
    let node = Anvil::start(anvil_bin, 31337, &["--no-mining"]).await.context("starting anvil")?;
    let accounts = send(&node.url, "eth_accounts", serde_json::json!([])).await?;
    let from = accounts.get(0).and_then(|a| a.as_str()).context("no anvil account")?.to_owned();
    let start = u64::from_str_radix(
        send(&node.url, "eth_blockNumber", serde_json::json!([]))
            .await?
            .as_str()
            .unwrap_or("0x0")
            .trim_start_matches("0x"),
        16,
    )? + 1;
    let mut pick = [0u8; 8];
    for _ in 0..blocks {
        for t in 0..transfers {
            let to = if t % 10 == 0 {
                env.fill_random(&mut pick);
                let i = usize::try_from(u64::from_le_bytes(pick) % ours.len() as u64)?;
                ours.get(i).context("address index")?.clone()
            } else {
                random_address(&env, &chain)?
            };
            send(
                &node.url,
                "eth_sendTransaction",
                serde_json::json!([{"from": from, "to": to.as_str(), "value": "0x1"}]),
            )
            .await?;
        }
        send(&node.url, "evm_mine", serde_json::json!([])).await?;
    }

    let rpc = EthRpc::new(&node.url, chain.clone(), Retry::default())
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let cfg = WatchConfig {
        internal: Vec::new(),
        chain: chain.clone(),
        // Nothing is deep enough to credit: the scan is what is measured.
        confirmations: 1_000_000,
        native: AssetSymbol::parse("ETH")?,
        tokens: Vec::new(),
        hot_wallets: Vec::new(),
        wallets: vec![strongroom_core::WalletId::parse("hot-eth-1")?],
        start_block: start,
        max_blocks: 1,
        reorg_window: 64,
    };
    let before = rss_mb();
    let watcher =
        DepositWatcher::new(store.clone(), Arc::new(rpc), Arc::new(SystemEnv::new()), cfg);
    let clock = SystemEnv::new();
    let t0 = clock.monotonic();
    let first = watcher.run_once().await?;
    let load_ms = clock.monotonic().saturating_sub(t0).as_secs_f64() * 1000.0;
    let rss_growth_mb = rss_mb() - before;
    let mut seen = first.blocks;
    let mut per_block = Vec::new();
    for _ in 1..blocks {
        let t = clock.monotonic();
        let r = watcher.run_once().await?;
        per_block.push(clock.monotonic().saturating_sub(t));
        seen += r.blocks;
    }
    let chain_deposits: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM chain_deposits").fetch_one(store.pool()).await?;
    node.stop().await;
    store.close().await;
    crate::bench::drop_db(postgres_url, &db_name).await?;
    per_block.sort();
    let pct = |p: f64| {
        let i = ((per_block.len().max(1) - 1) as f64 * p).round() as usize;
        per_block.get(i).map_or(0.0, |d: &Duration| d.as_secs_f64() * 1000.0)
    };
    anyhow::ensure!(seen == blocks, "the watcher read {seen} of {blocks} blocks");
    Ok(WatchRun {
        addresses,
        load_ms,
        block_p50_ms: pct(0.5),
        block_p99_ms: pct(0.99),
        rss_growth_mb,
        seen: usize::try_from(chain_deposits).unwrap_or(0),
    })
}

/// `bench watcher`: the baseline (1,000 addresses), then `addresses`.
pub async fn run(
    postgres_url: &str,
    addresses: usize,
    blocks: usize,
    transfers: usize,
) -> anyhow::Result<()> {
    let root = std::env::current_dir()?;
    let bin = anvil::find(&root).context("no anvil: run scripts/install-eth-tools")?;
    let blocks = blocks.max(2);
    let mut runs = Vec::new();
    for n in [1_000, addresses.max(1_000)] {
        let r = run_once(postgres_url, &bin, n, blocks, transfers).await?;
        println!(
            "{:>9} watched addresses: first pass (loads them all) {:.0} ms, then per block ({transfers} transfers) p50 {:.2} ms, p99 {:.2} ms; address set {:.0} MiB; {} deposits seen",
            r.addresses, r.load_ms, r.block_p50_ms, r.block_p99_ms, r.rss_growth_mb, r.seen
        );
        runs.push(r);
    }
    if let [base, big] = runs.as_slice() {
        println!(
            "ratio {}x addresses: per block p50 {:.2}x, first pass {:.1}x",
            big.addresses / base.addresses,
            big.block_p50_ms / base.block_p50_ms.max(0.001),
            big.load_ms / base.load_ms.max(0.001)
        );
    }
    Ok(())
}
