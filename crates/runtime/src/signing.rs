//! The signer nodes as the engine sees them: the orchestrator's client (coordinating, never
//! holding a share), the engine's `TxSigner` over it, the check that every live node reports
//! the same key, and the presignature pools kept full.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use strongroom_core::{Env, Intent, WalletId};
use strongroom_engine::{SignAuth, SignError, TxSigner};
use strongroom_mpc::ecdsa::MasterPublic;
use strongroom_signer::tls::Credentials;
use strongroom_signer::wire::{KeyInfo, NodeStatus, Scheme, SignRequest, TxFormat};
use strongroom_signer::{NodeAddr, Orchestrator};

use crate::settings::SignersSettings;
use crate::RuntimeError;

/// The orchestrator for `[signers]`.
pub fn orchestrator(s: &SignersSettings) -> Result<Orchestrator, RuntimeError> {
    if s.nodes.is_empty() {
        return Err(RuntimeError::Config("[signers] names no nodes".into()));
    }
    let mut nodes = Vec::new();
    for n in &s.nodes {
        let pin = n.pin.to_ascii_lowercase();
        if pin.len() != 64 || !pin.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(RuntimeError::Config(format!(
                "[signers] node {}: the pin is the certificate's SHA-256 in hex (64 characters)",
                n.id
            )));
        }
        nodes.push(NodeAddr { id: n.id, addr: n.addr, cert_sha256: pin });
    }
    let creds = Credentials::load(&s.cert, &s.key)
        .map_err(|e| RuntimeError::Config(format!("[signers] cert {}: {e:#}", s.cert.display())))?;
    Ok(Orchestrator::new(nodes, creds))
}

/// The signer nodes as the engine's `TxSigner`: a threshold of live nodes that hold the
/// wallet's key each decode the transaction and check it against the intent, then sign from
/// a presignature.
pub struct OrchestratorSigner {
    orch: Orchestrator,
    env: Arc<dyn Env>,
}

impl std::fmt::Debug for OrchestratorSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OrchestratorSigner").finish_non_exhaustive()
    }
}

impl OrchestratorSigner {
    pub fn new(orch: Orchestrator, env: Arc<dyn Env>) -> Self {
        OrchestratorSigner { orch, env }
    }

    pub fn orchestrator(&self) -> &Orchestrator {
        &self.orch
    }

    async fn key(&self, wallet: &WalletId) -> Result<(KeyInfo, Vec<u16>), SignError> {
        let mut statuses = Vec::new();
        for n in self.orch.live_nodes().await {
            if let Ok(s) = self.orch.status(n).await {
                statuses.push(s);
            }
        }
        // A node any node knows to be quarantined is asked nothing (the others would
        // refuse a session with it anyway).
        let quarantined = quarantined(&statuses);
        let reports = statuses
            .into_iter()
            .filter(|s| !quarantined.contains(&s.node))
            .filter_map(|s| {
                let node = s.node;
                s.keys.into_iter().find(|k| k.key_id == wallet.as_str()).map(|k| (node, k))
            })
            .collect();
        agreed_key(wallet, reports)
    }
}

/// The nodes any of `statuses` reports quarantined by governance.
pub fn quarantined(statuses: &[NodeStatus]) -> std::collections::BTreeSet<u16> {
    statuses.iter().flat_map(|s| s.quarantined.iter().copied()).collect()
}

/// The key the live nodes hold for `wallet`, and a threshold of them to sign. Every node
/// must report the same public key and chain code: one node lying about them would
/// otherwise redirect deposit addresses.
pub fn agreed_key(
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
        input: u32,
        auth: &SignAuth,
    ) -> Result<Vec<u8>, SignError> {
        let (info, signers) = self.key(wallet).await?;
        // The nodes decode by the format the request names, and refuse a chain it is not for.
        let format = match intent.chain.family() {
            strongroom_units::ChainFamily::Bitcoin => TxFormat::BitcoinPsbt,
            strongroom_units::ChainFamily::Ethereum => TxFormat::Eip1559,
        };
        let request = SignRequest {
            intent: hex::encode(
                intent.encode().map_err(|e| SignError::other(e.to_string(), false))?,
            ),
            format,
            tx: hex::encode(unsigned),
            path: path.to_vec(),
            input,
            approvals: auth.approvals.clone(),
            customer_id: auth.customer_id.clone(),
            initiation: auth.initiation.clone().map(Box::new),
            governance: auth.governance.clone(),
            customer_keys: auth.customer_keys.clone(),
            customer_approval: auth.customer_approval.clone().map(Box::new),
        };
        let signed = self
            .orch
            .sign_pooled(self.env.as_ref(), &info, &signers, &request)
            .await
            .map_err(|r| SignError::Refused(Box::new(r)))?;
        Ok(signed.signature)
    }
}

/// Keep `target` presignatures of every ECDSA key ready for every pair of live nodes, through
/// the engine's own orchestrator.
/// Where the last scheduled refresh is kept (so every instance, and a restart, keeps the
/// schedule).
const REFRESHED: &str = "frost-refresh";

/// On the instance that leads `frost-refresh`: every `every` (kept in the database), refresh
/// each FROST key's shares among its parties not quarantined, once every one of them is up
/// (a refresh without a live party would leave it out of the key for good). Returns the keys
/// refreshed on one pass; the staff are told, to take new node backups.
pub(crate) async fn refresh_once(
    signer: &OrchestratorSigner,
    store: &dyn strongroom_store::Store,
    alerts: &crate::risk::Alerts,
    every: Duration,
) -> Result<Vec<String>, RuntimeError> {
    let (orch, env) = (signer.orchestrator(), signer.env.clone());
    let now = env.now().unix_ms();
    let last = store
        .report(REFRESHED)
        .await?
        .and_then(|v| v.get("at_ms").and_then(serde_json::Value::as_i64))
        .unwrap_or(0);
    let due = i64::try_from(every.as_millis()).unwrap_or(i64::MAX);
    if now.saturating_sub(last) < due {
        return Ok(Vec::new());
    }
    let mut statuses = Vec::new();
    for n in orch.live_nodes().await {
        if let Ok(s) = orch.status(n).await {
            statuses.push(s);
        }
    }
    let out = quarantined(&statuses);
    let live: Vec<u16> = statuses.iter().map(|s| s.node).collect();
    let keys =
        statuses.into_iter().find(|s| !out.contains(&s.node)).map(|s| s.keys).unwrap_or_default();
    let mut refreshed = Vec::new();
    for key in keys.iter().filter(|k| k.scheme != Scheme::Ecdsa) {
        let parties: Vec<u16> = key.parties.iter().copied().filter(|p| !out.contains(p)).collect();
        if let Some(down) = parties.iter().find(|p| !live.contains(p)) {
            tracing::warn!(
                key = key.key_id,
                node = down,
                "scheduled refresh postponed: a party is down"
            );
            continue;
        }
        let mut r = [0u8; 16];
        env.fill_random(&mut r);
        let eid = strongroom_mpc::ExecutionId::derive("refresh", &r, key.key_id.as_bytes());
        match orch.refresh(eid, key, &parties).await {
            Ok(_) => refreshed.push(key.key_id.clone()),
            Err(e) => {
                tracing::error!(alert = true, key = key.key_id, error = %e, "scheduled refresh failed")
            }
        }
    }
    if !refreshed.is_empty() {
        tracing::info!(keys = ?refreshed, "FROST shares refreshed on schedule");
        let body = serde_json::json!({ "keys": refreshed, "at_ms": now, "step": "shares refreshed on schedule: take new node backups" });
        alerts.raise(&format!("refresh/{now}"), "shares_refreshed", body).await?;
    }
    store.put_report(REFRESHED, &serde_json::json!({ "at_ms": now }), now).await?;
    Ok(refreshed)
}

pub(crate) async fn refresh_forever(
    mut leader: crate::lease::Leader,
    signer: Arc<OrchestratorSigner>,
    store: Arc<dyn strongroom_store::Store>,
    alerts: crate::risk::Alerts,
    every: Duration,
) {
    loop {
        tokio::time::sleep(every.min(Duration::from_secs(10))).await;
        if !leader.lead().await {
            continue;
        }
        if let Err(e) = refresh_once(&signer, store.as_ref(), &alerts, every).await {
            tracing::warn!(error = %e, "scheduled refresh pass failed");
        }
    }
}

pub(crate) async fn refill_forever(
    mut leader: crate::lease::Leader,
    signer: Arc<OrchestratorSigner>,
    target: usize,
) {
    let (orch, env) = (signer.orchestrator(), signer.env.clone());
    loop {
        // One instance refills (two would race the nodes for the same pool slots).
        if !leader.lead().await {
            tokio::time::sleep(Duration::from_secs(2)).await;
            continue;
        }
        let mut statuses = Vec::new();
        for n in orch.live_nodes().await {
            if let Ok(s) = orch.status(n).await {
                statuses.push(s);
            }
        }
        let out = quarantined(&statuses);
        let live: Vec<u16> = statuses.iter().map(|s| s.node).filter(|n| !out.contains(n)).collect();
        let keys = statuses
            .into_iter()
            .find(|s| !out.contains(&s.node))
            .map(|s| s.keys)
            .unwrap_or_default();
        for key in keys.iter().filter(|k| k.scheme == Scheme::Ecdsa) {
            let holders: Vec<u16> =
                live.iter().copied().filter(|n| key.parties.contains(n)).collect();
            for (i, a) in holders.iter().enumerate() {
                for b in holders.iter().skip(i + 1) {
                    match orch.fill_pool(env.as_ref(), &key.key_id, &[*a, *b], target, 1).await {
                        Ok(0) => {}
                        Ok(n) => {
                            tracing::info!(key = key.key_id, signers = ?[a, b], made = n, "presignature pool refilled")
                        }
                        Err(e) => {
                            tracing::warn!(key = key.key_id, error = %e, "presignature refill failed")
                        }
                    }
                }
            }
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
