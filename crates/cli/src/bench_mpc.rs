//! `strongroom bench mpc`: threshold signing costs, measured in one run so they can be
//! reported as ratios.
//!
//! 1. Presignature generation, 2-of-3, CPU per signer:
//!    - in process: both parties' state machines in this process (`ecdsa::run_local`), CPU
//!      of this process divided by two;
//!    - networked: three `strongroom signer` processes on loopback over pinned mTLS 1.3,
//!      CPU of the two signing processes (from /proc) divided by two;
//!    - floor: one single-key libsecp256k1 ECDSA signature.
//! 2. Online ECDSA signing from a presignature over mTLS (orchestrator round trip), p50/p99.
//! 3. FROST-Taproot 2-of-3 signing over mTLS, p50/p99.
//!
//! Uses the TEST-ONLY committed primes for auxiliary info so the run takes minutes, not tens
//! of minutes; primes do not change the cost of presignatures.

// A benchmark reads the real clock.
#![allow(clippy::disallowed_methods)]

use std::path::{Path, PathBuf};
use std::time::Instant;

use strongroom_core::{Env, SystemEnv};
use strongroom_mpc::{ecdsa, ExecutionId};
use strongroom_signer::wire::{Scheme, SignRequest, TxFormat};

fn cpu_ticks(pid: &str) -> anyhow::Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let f: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0);
    let stime: u64 = f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0);
    Ok(utime + stime)
}

/// Clock ticks per second for /proc times (100 on Linux).
const TICKS: f64 = 100.0;

fn eid(env: &dyn Env, k: &str) -> ExecutionId {
    let mut r = [0u8; 16];
    env.fill_random(&mut r);
    ExecutionId::derive(k, &r, b"")
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v.get(i).copied().unwrap_or(f64::NAN)
}

pub async fn run(
    presigs: usize,
    signs: usize,
    primes: PathBuf,
    base_port: u16,
) -> anyhow::Result<()> {
    let env = SystemEnv::new();
    let tmp = tempfile::tempdir()?;
    let ca = tmp.path().join("ca.pem");
    let ca_key = tmp.path().join("ca-key.pem");
    strongroom_signer::cluster::ensure_ca(&ca, &ca_key, env.now())?;
    let signers = crate::signers::start_cluster(
        tmp.path(),
        &ca,
        &ca_key,
        base_port,
        Some(primes.clone()),
        None,
        &[("hot-eth-1", Scheme::Ecdsa), ("hot-btc-1", Scheme::FrostTaproot)],
    )
    .await?;
    let orch = crate::signers::ClusterFile::load(tmp.path())?.orchestrator()?;
    let pids: Vec<String> = signers.pids();
    let status = orch.status(1).await.map_err(|e| anyhow::anyhow!("{e}"))?;
    let key = status
        .keys
        .iter()
        .find(|k| k.key_id == "hot-eth-1")
        .cloned()
        .ok_or_else(|| anyhow::anyhow!("no key"))?;
    let frost = status
        .keys
        .iter()
        .find(|k| k.key_id == "hot-btc-1")
        .cloned()
        .ok_or_else(|| anyhow::anyhow!("no key"))?;

    // --- in process: the same protocol with both parties here -----------------------------
    let inproc = in_process_presign_cpu(presigs, &primes, ecdsa::AuxOptions::default(), true)?;
    let inproc_driver =
        in_process_presign_cpu(presigs, &primes, ecdsa::AuxOptions::default(), false)?;
    let plain = ecdsa::AuxOptions { multiexp_tables: false, crt: false };
    let inproc_plain = in_process_presign_cpu(presigs, &primes, plain, true)?;

    // --- networked ----------------------------------------------------------------------------
    let before: Vec<u64> = pids.iter().take(2).map(|p| cpu_ticks(p)).collect::<Result<_, _>>()?;
    let mut ids = Vec::new();
    let wall = Instant::now();
    for _ in 0..presigs {
        ids.push(
            orch.presign(eid(&env, "ps"), "hot-eth-1", &[1, 2])
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?,
        );
    }
    let wall = wall.elapsed().as_secs_f64() / presigs as f64;
    let after: Vec<u64> = pids.iter().take(2).map(|p| cpu_ticks(p)).collect::<Result<_, _>>()?;
    let ticks: u64 = after.iter().zip(&before).map(|(a, b)| a - b).sum();
    let networked = ticks as f64 / TICKS / 2.0 / presigs as f64;

    // --- floor: single-key libsecp256k1 -----------------------------------------------------------
    let floor = {
        let sk = secp256k1::SecretKey::from_slice(&[0x42; 32])?;
        let n = 2000u32;
        let t = Instant::now();
        for i in 0..n {
            let mut d = [0u8; 32];
            d[..4].copy_from_slice(&i.to_be_bytes());
            let _ = secp256k1::SECP256K1.sign_ecdsa(&secp256k1::Message::from_digest(d), &sk);
        }
        t.elapsed().as_secs_f64() / f64::from(n)
    };

    // --- online signing latency ----------------------------------------------------------
    for _ in ids.len()..signs {
        ids.push(
            orch.presign(eid(&env, "ps"), "hot-eth-1", &[1, 2])
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?,
        );
    }
    // Proofs of control: the one message kind nodes sign besides transactions (an
    // ungoverned bench cluster signs them without a policy).
    let req = |challenge: &[u8]| -> anyhow::Result<SignRequest> {
        Ok(SignRequest {
            format: TxFormat::ProofOfControl,
            tx: hex::encode(challenge),
            ..Default::default()
        })
    };
    let mut online = Vec::new();
    for (i, id) in ids.iter().take(signs).enumerate() {
        let r = req(&(i as u128).to_be_bytes())?;
        let t = Instant::now();
        orch.sign(eid(&env, "s"), &key, &[1, 2], Some(id), &r)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        online.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    let mut frost_ms = Vec::new();
    for i in 0..signs {
        let r = req(&[i as u8; 32])?;
        let t = Instant::now();
        orch.sign(eid(&env, "f"), &frost, &[1, 2], None, &r)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        frost_ms.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    signers.stop().await;

    println!("MPC benchmark (2-of-3, secp256k1), {presigs} presignatures, {signs} signatures");
    println!(
        "  presignature CPU per signer, in process (round_based sim), no precomputation: {:.3} s",
        inproc_plain
    );
    println!("  presignature CPU per signer, in process (round_based sim): {:.3} s   (precomputed tables + CRT: {:.2}x less)", inproc, inproc_plain / inproc);
    println!(
        "  presignature CPU per signer, in process (our Session driver): {:.3} s",
        inproc_driver
    );
    println!(
        "  presignature CPU per signer, networked:    {:.3} s   ratio networked/in-process = {:.2}",
        networked,
        networked / inproc
    );
    println!("  presignature wall time, networked:         {:.3} s", wall);
    println!(
        "  single-key libsecp256k1 ECDSA sign:        {:.1} µs   ratio presignature/floor = {:.0}",
        floor * 1e6,
        inproc / floor
    );
    println!(
        "  online ECDSA signing over mTLS:            p50 {:.2} ms  p99 {:.2} ms",
        pct(&mut online, 0.5),
        pct(&mut online, 0.99)
    );
    println!(
        "  FROST-Taproot signing over mTLS:           p50 {:.2} ms  p99 {:.2} ms",
        pct(&mut frost_ms, 0.5),
        pct(&mut frost_ms, 0.99)
    );
    Ok(())
}

/// CPU seconds per party for one 2-of-3 presignature with both parties in this process,
/// under round_based's simulator (`simulator`) or our own `Session` driver.
fn in_process_presign_cpu(
    n: usize,
    primes: &Path,
    options: ecdsa::AuxOptions,
    simulator: bool,
) -> anyhow::Result<f64> {
    use rand_core::OsRng;
    let all: Vec<ecdsa::Primes> = serde_json::from_slice(&std::fs::read(primes)?)?;
    let parties = ecdsa::Parties::new([1, 2, 3])?;
    let eid_aux = ExecutionId::derive("bench-aux", b"", b"");
    let mut rngs = [OsRng, OsRng, OsRng];
    let sessions = rngs
        .iter_mut()
        .zip(all)
        .zip(1u16..)
        .map(|((rng, p), me)| ecdsa::aux_info(&eid_aux, me, &parties, p, options, rng))
        .collect::<Result<Vec<_>, _>>()?;
    let aux = ecdsa::run_local(sessions).map_err(|(p, e)| anyhow::anyhow!("party {p}: {e}"))?;
    let eid_kg = ExecutionId::derive("bench-kg", b"", b"");
    let mut rngs = [OsRng, OsRng, OsRng];
    let sessions = rngs
        .iter_mut()
        .zip(1u16..)
        .map(|(rng, me)| ecdsa::keygen(&eid_kg, me, &parties, 2, rng))
        .collect::<Result<Vec<_>, _>>()?;
    let inc = ecdsa::run_local(sessions).map_err(|(p, e)| anyhow::anyhow!("party {p}: {e}"))?;
    let keys: Vec<ecdsa::KeyShare> =
        inc.into_iter().zip(aux).map(|(i, a)| ecdsa::complete(i, a)).collect::<Result<_, _>>()?;
    let set = ecdsa::Parties::new([1, 2])?;
    if simulator {
        let pair: Vec<&ecdsa::KeyShare> = keys.iter().take(2).collect();
        let start = cpu_ticks("self")?;
        for i in 0..n {
            let e = ExecutionId::derive("bench-sim", &i.to_be_bytes(), b"");
            let mut rngs = [OsRng, OsRng];
            ecdsa::presign_simulated(&e, &set, &pair, &mut rngs)?;
        }
        let ticks = cpu_ticks("self")? - start;
        return Ok(ticks as f64 / TICKS / 2.0 / n as f64);
    }
    let start = cpu_ticks("self")?;
    for i in 0..n {
        let e = ExecutionId::derive("bench-ps", &i.to_be_bytes(), b"");
        let mut rngs = [OsRng, OsRng];
        let sessions = rngs
            .iter_mut()
            .zip(keys.iter())
            .zip(1u16..)
            .map(|((rng, k), me)| ecdsa::presign(&e, me, &set, k, rng))
            .collect::<Result<Vec<_>, _>>()?;
        ecdsa::run_local(sessions).map_err(|(p, e)| anyhow::anyhow!("party {p}: {e}"))?;
    }
    let ticks = cpu_ticks("self")? - start;
    Ok(ticks as f64 / TICKS / 2.0 / n as f64)
}
