//! What `/v1/ready` and `/metrics` ask of the chains and the signer nodes.

use std::sync::Arc;

use async_trait::async_trait;
use strongroom_server::metrics::{ChainLabels, Metrics, NodeLabels};
use strongroom_server::ops::{Check, Probe};
use strongroom_store::Store;
use strongroom_units::ChainId;

use crate::signing::OrchestratorSigner;

/// How far the deposit watcher may trail the node's head before the instance is not ready.
pub const MAX_HEAD_LAG_BLOCKS: u64 = 1_000;

/// A chain's node: reachable, and how far the deposit watcher trails its head.
#[derive(Debug)]
pub struct ChainProbe {
    pub chain: ChainId,
    pub adapter: Arc<dyn strongroom_engine::ChainAdapter>,
    pub store: Arc<dyn Store>,
}

#[async_trait]
impl Probe for ChainProbe {
    async fn probe(&self, metrics: &Metrics) -> Vec<Check> {
        let component = format!("chain:{}", self.chain);
        let head = match self.adapter.client().head().await {
            Ok(h) => h.number,
            Err(e) => {
                return vec![Check {
                    component,
                    ok: false,
                    degraded: false,
                    detail: format!("node unreachable: {e}"),
                }]
            }
        };
        let cursor = match self.store.chain_cursor(&self.chain).await {
            Ok(c) => c,
            Err(e) => {
                return vec![Check { component, ok: false, degraded: false, detail: e.to_string() }]
            }
        };
        // Before the first scan the watcher starts at the head.
        let lag = cursor.map_or(0, |next| head.saturating_add(1).saturating_sub(next));
        metrics
            .chain_head_lag_blocks
            .get_or_create(&ChainLabels { chain: self.chain.as_str().into() })
            .set(i64::try_from(lag).unwrap_or(i64::MAX));
        let ok = lag <= MAX_HEAD_LAG_BLOCKS;
        let detail = format!("head {head}, watcher {lag} blocks behind");
        vec![Check { component, ok, degraded: false, detail }]
    }
}

/// The signer nodes: how many answer (a quorum must, to sign: the largest threshold of the
/// keys they hold), and their presignature pools.
#[derive(Debug)]
pub struct SignerProbe {
    pub signer: Arc<OrchestratorSigner>,
}

#[async_trait]
impl Probe for SignerProbe {
    async fn probe(&self, metrics: &Metrics) -> Vec<Check> {
        let orch = self.signer.orchestrator();
        let mut up = 0;
        let mut quorum = 1usize;
        // What each node holds of the governance log, as it reports it.
        let mut heads = Vec::new();
        for node in orch.node_ids() {
            let labels = NodeLabels { node: node.to_string() };
            match orch.status(node).await {
                Ok(s) => {
                    up += 1;
                    heads.push(match &s.governance {
                        Some(h) => format!(
                            "node {node} at entry {} ({}…)",
                            h.seq,
                            h.hash.get(..12).unwrap_or(&h.hash)
                        ),
                        None => format!("node {node} without governance"),
                    });
                    for k in &s.keys {
                        quorum = quorum.max(usize::from(k.threshold));
                    }
                    metrics.signer_node_up.get_or_create(&labels).set(1);
                    let ready: usize = s.presignatures.iter().map(|p| p.ids.len()).sum();
                    metrics
                        .presignatures
                        .get_or_create(&labels)
                        .set(i64::try_from(ready).unwrap_or(i64::MAX));
                }
                Err(_) => {
                    heads.push(format!("node {node} unreachable"));
                    metrics.signer_node_up.get_or_create(&labels).set(0);
                }
            }
        }
        vec![Check {
            component: "signers".into(),
            ok: up >= quorum,
            degraded: up < orch.node_ids().len(),
            detail: format!(
                "{up} of {} nodes answer; {quorum} needed; {}",
                orch.node_ids().len(),
                heads.join(", ")
            ),
        }]
    }
}
