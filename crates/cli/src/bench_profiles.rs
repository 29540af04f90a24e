//! `strongroom bench risk --profiles N`: what customers' risk profiles cost at exchange
//! scale. `N` customers get a history (`withdrawals` each, several assets, destinations and
//! devices) in the real engine; their profiles are encoded as the runtime keeps them and
//! committed to a real database (SQLite in a temporary folder, and PostgreSQL with
//! `--postgres-url`) through the store's `commit_risk_learning`, then read back one at a
//! time in random order, as an instance does for a customer not in its cache. Reported:
//! encoded bytes per customer (mean, largest), memory per cached profile, commit rate, the
//! read's median and 99th percentile, and what 10 million customers take.

use std::sync::Arc;

use strongroom_core::{Env, SystemEnv};
use strongroom_risk::engine::{RiskEngine, DEFAULT_CACHED_PROFILES};
use strongroom_risk::profile::{Activity, WithdrawalEvent, MAX_ENCODED};
use strongroom_risk::rules::{RuleSet, DEFAULT_RULES};
use strongroom_risk::Rng;
use strongroom_store::prelude::*;
use strongroom_store::SqlStore;

/// Customers an exchange of the size we plan for has.
const AT_SCALE: f64 = 10_000_000.0;

fn history(customers: usize, withdrawals: usize) -> anyhow::Result<RiskEngine> {
    let mut engine = RiskEngine::new(RuleSet::from_toml(DEFAULT_RULES)?);
    engine.set_profile_capacity(customers.max(1));
    let mut rng = Rng::new(7);
    let t0 = 1_800_000_000_000i64;
    for k in 0..withdrawals {
        for c in 0..customers {
            let ev = WithdrawalEvent {
                customer: format!("{:032x}", c),
                at_ms: t0 + (k * customers + c) as i64 * 1_000,
                asset: ["ETH", "BTC", "USDT", "USDC"]
                    .get(rng.below(4))
                    .copied()
                    .unwrap_or("ETH")
                    .into(),
                amount: 10u128.pow(15) * (1 + rng.below(10_000) as u128),
                destination: format!("0x{:040x}", rng.next_u64() % 64),
                device: Some(format!("device-{}", rng.below(6))),
                ip: Some(format!("198.51.100.{}", rng.below(250))),
            };
            engine.record(&ev);
            if rng.unit() < 0.2 {
                engine.record_activity(
                    &ev.customer,
                    &Activity::Login { device: ev.device.clone(), ip: ev.ip.clone() },
                    ev.at_ms,
                );
            }
        }
    }
    Ok(engine)
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    sorted
        .get(((sorted.len() as f64 * p) as usize).min(sorted.len().saturating_sub(1)))
        .copied()
        .unwrap_or(0.0)
}

async fn against(
    name: &str,
    store: &SqlStore,
    profiles: &[(String, Vec<u8>)],
    reads: usize,
) -> anyhow::Result<()> {
    let env = SystemEnv::new();
    let start = env.monotonic();
    let mut version = store.risk_learning_version().await?;
    for chunk in profiles.chunks(5_000) {
        version = store.commit_risk_learning(version, 0, chunk.to_vec(), vec![]).await?;
    }
    let secs = env.monotonic().saturating_sub(start).as_secs_f64().max(1e-9);
    let mut rng = Rng::new(3);
    let mut lat = Vec::with_capacity(reads);
    for _ in 0..reads {
        let (c, _) = profiles
            .get(rng.below(profiles.len()))
            .ok_or_else(|| anyhow::anyhow!("no profiles"))?;
        let t = env.monotonic();
        let got = store.risk_profiles(std::slice::from_ref(c)).await?;
        lat.push(env.monotonic().saturating_sub(t).as_secs_f64() * 1e6);
        anyhow::ensure!(got.len() == 1, "profile {c} not read back");
    }
    lat.sort_by(f64::total_cmp);
    println!(
        "  {name}: committed {} profiles at {:.0}/s; one profile read (a cache miss): p50 {:.0} µs, p99 {:.0} µs",
        profiles.len(),
        profiles.len() as f64 / secs,
        pct(&lat, 0.5),
        pct(&lat, 0.99)
    );
    Ok(())
}

pub async fn run(
    customers: usize,
    withdrawals: usize,
    postgres_url: Option<&str>,
) -> anyhow::Result<()> {
    let mut engine = history(customers, withdrawals)?;
    let heap: Vec<usize> = (0..customers)
        .filter_map(|c| engine.profile(&format!("{c:032x}")).map(|p| p.heap_bytes()))
        .collect();
    let profiles = engine.take_dirty_profiles();
    let sizes: Vec<usize> = profiles.iter().map(|(_, b)| b.len()).collect();
    let mean = sizes.iter().sum::<usize>() as f64 / sizes.len().max(1) as f64;
    let heap_mean = heap.iter().sum::<usize>() as f64 / heap.len().max(1) as f64;
    println!(
        "risk profiles: {customers} customers, {withdrawals} withdrawals each over 4 assets (64 destinations, 6 devices)"
    );
    println!(
        "  encoded: mean {mean:.0} bytes, largest {} (bound {MAX_ENCODED}); in memory: mean {heap_mean:.0} bytes, bound {}",
        sizes.iter().max().copied().unwrap_or(0),
        engine.max_bytes_per_customer()
    );
    println!(
        "  10 million customers: {:.1} GiB kept in the database (profiles only, before indexes), {:.0} MiB for the {} active ones each instance caches",
        mean * AT_SCALE / 1_073_741_824.0,
        heap_mean * DEFAULT_CACHED_PROFILES as f64 / 1_048_576.0,
        DEFAULT_CACHED_PROFILES
    );
    let dir = tempfile::tempdir()?;
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("bench.db").display());
    let sqlite = Arc::new(SqlStore::connect(&url, Default::default()).await?);
    sqlite.migrate().await?;
    let reads = 10_000.min(customers * 10).max(1);
    against("SQLite", &sqlite, &profiles, reads).await?;
    if let Some(pg) = postgres_url {
        let (db_name, db_url) = crate::bench::fresh_db(pg, "riskprofiles").await?;
        let store = SqlStore::connect(&db_url, strongroom_store::sql_options(4)).await?;
        store.migrate().await?;
        against("PostgreSQL", &store, &profiles, reads).await?;
        store.close().await;
        crate::bench::drop_db(pg, &db_name).await?;
    }
    Ok(())
}
