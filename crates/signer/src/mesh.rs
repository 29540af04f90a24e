//! The node mesh: what signer nodes tell each other directly, over the same pinned mutual
//! TLS 1.3 they run sessions on, with no orchestrator in between (ADR 0011).
//!
//! One exchange is one request and one answer on a fresh connection: the asking node sends
//! its governance head and, for the answering node's own velocity records, the sequence
//! number it has them up to; the answer is the answering node's head, the governance entries
//! the asker lacks (when its log is longer), and those records. The asker verifies the
//! entries against its own pinned genesis before it keeps them (a peer cannot make it accept
//! anything a quorum of members did not sign) and keeps the records (which only ever count
//! against limits). Nodes run an exchange with every peer on a timer and, before every
//! signature, with every peer they can reach: a node signs only after hearing from enough
//! peers that every possible set of signers includes a node it heard from.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use strongroom_core::Env;
use tokio::io::{AsyncWriteExt, BufReader};

use crate::governance::NodeGovernance;
use crate::node::PeerConfig;
use crate::tls::{self, Credentials};
use crate::wire::{self, Control, Frame, Head, MeshState, Reason, Reply, Request};

/// How one exchange with one peer went.
#[derive(Debug)]
pub enum Exchange {
    /// The peer answered and whatever it sent that was new was kept.
    Heard { peer: u16, peer_head: Head, grew: bool, records: usize },
    /// The peer answered with governance entries that do not extend this node's log.
    Refused { peer: u16, reason: Reason },
    /// No answer (down, partitioned, slow or not speaking the protocol).
    Unreachable { peer: u16, detail: String },
}

impl Exchange {
    pub fn heard(&self) -> Option<u16> {
        match self {
            Exchange::Heard { peer, .. } => Some(*peer),
            _ => None,
        }
    }
}

pub struct Mesh {
    me: u16,
    peers: Vec<PeerConfig>,
    creds: Credentials,
    gov: Arc<NodeGovernance>,
    env: Arc<dyn Env + Send + Sync>,
    timeout: Duration,
}

impl std::fmt::Debug for Mesh {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mesh").field("me", &self.me).finish_non_exhaustive()
    }
}

impl Mesh {
    pub fn new(
        me: u16,
        peers: Vec<PeerConfig>,
        creds: Credentials,
        gov: Arc<NodeGovernance>,
        env: Arc<dyn Env + Send + Sync>,
        timeout: Duration,
    ) -> Mesh {
        Mesh { me, peers, creds, gov, env, timeout }
    }

    pub fn governance(&self) -> &Arc<NodeGovernance> {
        &self.gov
    }

    /// Answer a peer's exchange: this node's head, the entries after the peer's head when
    /// this node's log is longer and shares the peer's prefix, and this node's own records
    /// from `since` on.
    pub fn answer(&self, head: &Head, since: u64) -> Result<MeshState, Reason> {
        let mine = self.gov.head()?;
        let entries = if mine.seq > head.seq { self.gov.entries_after(head.seq)? } else { vec![] };
        Ok(MeshState {
            head: mine,
            entries,
            records: self.gov.own_records(since)?,
            customer_keys: self.gov.customer_keys()?,
        })
    }

    /// One exchange with `peer`, keeping what it sends.
    pub async fn exchange(&self, peer: &PeerConfig) -> Exchange {
        let unreachable = |detail: String| Exchange::Unreachable { peer: peer.id, detail };
        let asked = match (self.gov.head(), self.gov.cursor(peer.id)) {
            (Ok(head), Ok(since)) => Request::Mesh { head, since },
            (Err(reason), _) | (_, Err(reason)) => {
                return Exchange::Refused { peer: peer.id, reason }
            }
        };
        let state = match tokio::time::timeout(self.timeout, self.ask(peer, asked)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return unreachable(format!("{e:#}")),
            Err(_) => return unreachable(format!("no answer within {:?}", self.timeout)),
        };
        let now = self.env.now();
        if let Err(reason) = self.gov.learn_customer_keys(&state.customer_keys, now) {
            return Exchange::Refused { peer: peer.id, reason };
        }
        let records = match self.gov.merge(peer.id, state.records) {
            Ok(n) => n,
            Err(reason) => return Exchange::Refused { peer: peer.id, reason },
        };
        let mine = match self.gov.head() {
            Ok(h) => h,
            Err(reason) => return Exchange::Refused { peer: peer.id, reason },
        };
        let mut grew = false;
        if state.head.seq > mine.seq {
            let Some(first) = state.entries.first() else {
                let detail = format!(
                    "peer {} reports {} governance entries but sent none of the {} this node lacks",
                    peer.id,
                    state.head.seq,
                    state.head.seq - mine.seq
                );
                return Exchange::Refused {
                    peer: peer.id,
                    reason: Reason::GovernanceLog { detail },
                };
            };
            let after = first.seq.saturating_sub(1);
            match self.gov.extend_after(after, &state.entries, now) {
                Ok(g) => grew = g,
                Err(reason) => return Exchange::Refused { peer: peer.id, reason },
            }
        }
        Exchange::Heard { peer: peer.id, peer_head: state.head, grew, records }
    }

    async fn ask(&self, peer: &PeerConfig, body: Request) -> anyhow::Result<MeshState> {
        let tls = tls::connect(&self.creds, &peer.cert_sha256, peer.addr).await?;
        let (rd, mut wr) = tokio::io::split(tls);
        wire::write_frame(&mut wr, &Frame::Control(Control::Request { id: 1, body })).await?;
        let mut rd = BufReader::new(rd);
        let body = wire::read_frame(&mut rd)
            .await?
            .ok_or_else(|| anyhow::anyhow!("peer {} closed the connection", peer.id))?;
        let _ = wr.shutdown().await;
        match Frame::decode(&body)? {
            Frame::Control(Control::Response { id: 1, body: Ok(Reply::Mesh(state)) }) => Ok(state),
            Frame::Control(Control::Response { body: Err(r), .. }) => {
                anyhow::bail!("peer {} refused: {r}", peer.id)
            }
            other => anyhow::bail!("peer {} answered {other:?}", peer.id),
        }
    }

    /// An exchange with each of `among` (every peer when `None`), all at once.
    pub async fn exchange_all(&self, among: Option<&[u16]>) -> Vec<Exchange> {
        // A quarantined node is neither asked nor believed.
        let quarantined = self.gov.quarantined().unwrap_or_default();
        let peers: Vec<&PeerConfig> = self
            .peers
            .iter()
            .filter(|p| p.id != self.me && among.is_none_or(|a| a.contains(&p.id)))
            .filter(|p| !quarantined.contains(&p.id))
            .collect();
        // Together: one slow peer costs one timeout, not one per peer.
        crate::client::futures_join_all(peers.into_iter().map(|p| self.exchange(p))).await
    }

    /// How many peers a node must hear from before it signs with a key of `parties` and
    /// `threshold`: as many as there are parties outside a signing set. Then the node and
    /// the peers it heard from meet every set of `threshold` signers, so between them they
    /// know every signature the group made.
    pub fn needed(parties: &[u16], threshold: u16) -> usize {
        parties.len().saturating_sub(usize::from(threshold))
    }

    /// The peers heard from, for [`Reason::MeshIncomplete`].
    pub fn reached(exchanges: &[Exchange]) -> BTreeSet<u16> {
        exchanges.iter().filter_map(Exchange::heard).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_hears_from_enough_peers_to_meet_every_signing_set() {
        // 2-of-3: one peer (the partner in the session is enough); 3-of-5: two; n-of-n: none.
        assert_eq!(Mesh::needed(&[1, 2, 3], 2), 1);
        assert_eq!(Mesh::needed(&[1, 2, 3, 4, 5], 3), 2);
        assert_eq!(Mesh::needed(&[1, 2], 2), 0);
        // Every 3-subset of 5 meets every set of 1 + 2 (three nodes).
        let all: Vec<u16> = (1..=5).collect();
        for known in [[1u16, 2, 3], [1, 4, 5], [2, 3, 5]] {
            for a in &all {
                for b in &all {
                    for c in &all {
                        let set: BTreeSet<u16> = [*a, *b, *c].into();
                        if set.len() == 3 {
                            assert!(set.iter().any(|s| known.contains(s)), "{set:?} {known:?}");
                        }
                    }
                }
            }
        }
    }
}
