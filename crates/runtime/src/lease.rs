//! Who runs which job when several instances share one database (issue 19, ADR 0013).
//!
//! Singleton jobs (each chain's watcher, sweeper and treasury; each chain's reconciliation;
//! the presignature refill; the risk engine's writes) run their passes only while this
//! instance holds the job's leader lease, renewed on every pass. An instance that dies stops
//! renewing, and another takes the job over once the lease runs out. Withdrawals and sweeps
//! are leased one by one by the engine itself (`strongroom_engine::job_lease`), so every
//! instance works on them at once.

use std::sync::Arc;

use strongroom_core::Env;
use strongroom_store::Store;

/// How long a leader lease lasts unless renewed (by default; `[leases] leader_ms`). Passes run every half second to thirty
/// seconds; a leader that stops renewing is replaced this long after its last renewal.
pub const LEADER_LEASE_MS: i64 = 15_000;

/// This process's name in leases: host, process id and a random part (a restarted process
/// is a new holder, so it never mistakes its predecessor's lease for its own).
pub fn instance_name(env: &dyn Env) -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "host".into());
    let random = strongroom_core::new_id(env).simple().to_string();
    format!("{host}/{}/{}", std::process::id(), random.get(..8).unwrap_or(&random))
}

/// This instance: its name in leases and how long its leases last.
#[derive(Debug, Clone)]
pub struct Instance {
    pub name: String,
    /// One withdrawal or sweep's lease.
    pub job_ms: i64,
    /// A singleton job's lease.
    pub leader_ms: i64,
}

impl Instance {
    pub fn new(env: &dyn Env, leases: &crate::settings::LeaseSettings) -> Instance {
        Instance { name: instance_name(env), job_ms: leases.job_ms, leader_ms: leases.leader_ms }
    }

    /// This instance's claim on the singleton job `job`.
    pub fn leader(&self, store: Arc<dyn Store>, env: Arc<dyn Env>, job: &str) -> Leader {
        Leader {
            store,
            env,
            name: leader_lease(job),
            holder: self.name.clone(),
            ttl_ms: self.leader_ms,
            token: None,
        }
    }
}

/// The name of a singleton job's leader lease.
pub fn leader_lease(job: &str) -> String {
    format!("leader/{job}")
}

/// One singleton job's leadership, as this instance sees it.
#[derive(Clone)]
pub struct Leader {
    store: Arc<dyn Store>,
    env: Arc<dyn Env>,
    name: String,
    holder: String,
    ttl_ms: i64,
    token: Option<i64>,
}

impl std::fmt::Debug for Leader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Leader")
            .field("name", &self.name)
            .field("holder", &self.holder)
            .field("token", &self.token)
            .finish_non_exhaustive()
    }
}

impl Leader {
    /// Take or renew the lease: `true` while this instance leads the job. A database that
    /// cannot be reached means not leading (another instance that can reach it will).
    pub async fn lead(&mut self) -> bool {
        let now = self.env.now().unix_ms();
        let got = self.store.acquire_lease(&self.name, &self.holder, now, self.ttl_ms).await;
        let token = match got {
            Ok(lease) => lease.map(|l| l.token),
            Err(e) => {
                tracing::warn!(lease = self.name, error = %e, "leader lease not renewed");
                None
            }
        };
        if token != self.token {
            match token {
                Some(t) => tracing::info!(lease = self.name, token = t, "leading"),
                None => tracing::info!(lease = self.name, "not leading: another instance does"),
            }
        }
        self.token = token;
        token.is_some()
    }
}
