//! The orchestrator's side: one pinned mTLS 1.3 connection per node, requests matched to
//! replies by id. The orchestrator coordinates (who signs, which presignature, which
//! execution id) but never sees a share: ECDSA partial signatures and FROST signatures are
//! all it receives, and it checks every result against the group key before returning it.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use strongroom_mpc::{ecdsa, ExecutionId};
use tokio::io::BufReader;
use tokio::sync::{mpsc, oneshot, Mutex};

use crate::tls::{self, Credentials};
use crate::wire::{
    self, eid_hex, Control, Frame, Head, KeyInfo, NodeStatus, Reason, Refusal, Reply, Request,
    Scheme, SignRequest,
};

/// Where a node is and which certificate it must present.
#[derive(Debug, Clone)]
pub struct NodeAddr {
    pub id: u16,
    pub addr: SocketAddr,
    pub cert_sha256: String,
}

type Waiters = Arc<std::sync::Mutex<BTreeMap<u64, oneshot::Sender<Result<Reply, Refusal>>>>>;

struct Conn {
    tx: mpsc::UnboundedSender<Frame>,
    waiters: Waiters,
}

pub struct Orchestrator {
    nodes: BTreeMap<u16, NodeAddr>,
    creds: Credentials,
    conns: Mutex<BTreeMap<u16, Conn>>,
    next: AtomicU64,
}

impl std::fmt::Debug for Orchestrator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Orchestrator").field("nodes", &self.nodes.keys()).finish_non_exhaustive()
    }
}

fn unreachable(node: u16, m: impl std::fmt::Display) -> Refusal {
    Refusal { node, reason: Reason::Unreachable { detail: m.to_string() }, culprits: vec![node] }
}

fn culprit(node: u16, detail: impl Into<String>) -> Refusal {
    Refusal { node, reason: Reason::Culprit { detail: detail.into() }, culprits: vec![node] }
}

/// A finished signature, checked against the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signed {
    pub signature: Vec<u8>,
    pub public_key: Vec<u8>,
    /// The digest (ECDSA) or message (FROST) that was signed, as the nodes derived it.
    pub signed_bytes: Vec<u8>,
    pub signers: Vec<u16>,
}

impl Orchestrator {
    pub fn new(nodes: Vec<NodeAddr>, creds: Credentials) -> Self {
        Orchestrator {
            nodes: nodes.into_iter().map(|n| (n.id, n)).collect(),
            creds,
            conns: Mutex::new(BTreeMap::new()),
            next: AtomicU64::new(1),
        }
    }

    pub fn node_ids(&self) -> Vec<u16> {
        self.nodes.keys().copied().collect()
    }

    async fn connect(&self, node: &NodeAddr) -> anyhow::Result<Conn> {
        let stream = tls::connect(&self.creds, &node.cert_sha256, node.addr).await?;
        let (rd, mut wr) = tokio::io::split(stream);
        let (tx, mut rx) = mpsc::unbounded_channel::<Frame>();
        let waiters: Waiters = Arc::default();
        tokio::spawn(async move {
            while let Some(f) = rx.recv().await {
                if wire::write_frame(&mut wr, &f).await.is_err() {
                    break;
                }
            }
        });
        let w = waiters.clone();
        let id = node.id;
        tokio::spawn(async move {
            let mut rd = BufReader::new(rd);
            while let Ok(Some(frame)) = wire::read_frame(&mut rd).await {
                let (request, reply) = match Frame::decode(&frame) {
                    Ok(Frame::Control(Control::Response { id: request, body })) => (request, body),
                    Ok(_) => continue,
                    // A reply that does not decode fails its request now, naming the node,
                    // rather than leaving it to wait out its timeout.
                    Err(e) => match Control::unreadable_response(&frame) {
                        Some(request) => (
                            request,
                            Err(culprit(id, format!("sent a reply that cannot be read: {e}"))),
                        ),
                        None => continue,
                    },
                };
                if let Some(waiter) = w.lock().ok().and_then(|mut m| m.remove(&request)) {
                    let _ = waiter.send(reply);
                }
            }
            // Connection gone: fail whatever still waits.
            if let Ok(mut m) = w.lock() {
                for (_, waiter) in std::mem::take(&mut *m) {
                    let _ = waiter.send(Err(unreachable(id, "connection closed")));
                }
            }
        });
        Ok(Conn { tx, waiters })
    }

    /// Send one request to one node and wait for its reply.
    pub async fn request(
        &self,
        node: u16,
        body: Request,
        timeout: Duration,
    ) -> Result<Reply, Refusal> {
        let addr = self.nodes.get(&node).ok_or_else(|| unreachable(node, "unknown node"))?.clone();
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        {
            let mut conns = self.conns.lock().await;
            let healthy = conns.get(&node).is_some_and(|c| !c.tx.is_closed());
            if !healthy {
                let c = self.connect(&addr).await.map_err(|e| unreachable(node, e))?;
                conns.insert(node, c);
            }
            let conn = conns.get(&node).ok_or_else(|| unreachable(node, "no connection"))?;
            conn.waiters.lock().map_err(|_| unreachable(node, "lock"))?.insert(id, tx);
            if conn.tx.send(Frame::Control(Control::Request { id, body })).is_err() {
                conns.remove(&node);
                return Err(unreachable(node, "connection closed"));
            }
        }
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(unreachable(node, "connection closed")),
            Err(_) => Err(Refusal {
                node,
                reason: Reason::Timeout {
                    after_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
                },
                culprits: vec![node],
            }),
        }
    }

    /// Send the same kind of request to several nodes at once; all replies, in node order.
    async fn fan_out(
        &self,
        nodes: &[u16],
        make: impl Fn(u16) -> Request,
        timeout: Duration,
    ) -> Vec<(u16, Result<Reply, Refusal>)> {
        let futs = nodes.iter().map(|n| {
            let req = make(*n);
            async move { (*n, self.request(*n, req, timeout).await) }
        });
        futures_join_all(futs).await
    }

    /// [`fan_out`](Self::fan_out) for one protocol session: as soon as one node fails, the
    /// others are told to leave the session, so nobody waits out a timeout for a node that
    /// is down or has refused.
    async fn fan_out_session(
        &self,
        eid: &ExecutionId,
        nodes: &[u16],
        make: impl Fn(u16) -> Request,
        timeout: Duration,
    ) -> Vec<(u16, Result<Reply, Refusal>)> {
        let (tx, mut rx) = mpsc::unbounded_channel::<(u16, Refusal)>();
        let futs: Vec<_> = nodes
            .iter()
            .map(|n| {
                let req = make(*n);
                let tx = tx.clone();
                async move {
                    let r = self.request(*n, req, timeout).await;
                    if let Err(e) = &r {
                        let _ = tx.send((*n, e.clone()));
                    }
                    (*n, r)
                }
            })
            .collect();
        drop(tx);
        let aborter = async {
            if let Some((failed, why)) = rx.recv().await {
                let others = nodes.iter().copied().filter(|o| *o != failed);
                let aborts = others.map(|o| {
                    let req = Request::Abort { eid: eid_hex(eid), reason: why.to_string() };
                    async move { self.request(o, req, Duration::from_secs(2)).await }
                });
                futures_join_all(aborts).await;
            }
        };
        let (replies, ()) = tokio::join!(futures_join_all(futs.into_iter()), aborter);
        replies
    }

    /// The first failure, after telling the other nodes to leave the session.
    async fn first_failure(
        &self,
        eid: &ExecutionId,
        replies: &[(u16, Result<Reply, Refusal>)],
    ) -> Option<Refusal> {
        let failure = replies.iter().find_map(|(_, r)| r.as_ref().err().cloned())?;
        // Prefer the cause over its knock-on effects: a node's own refusal, then a failure
        // that names culprits, then any failure other than an abort.
        let errors: Vec<&Refusal> = replies.iter().filter_map(|(_, r)| r.as_ref().err()).collect();
        let aborted = |r: &&&Refusal| matches!(r.reason, Reason::Aborted { .. });
        let failure = errors
            .iter()
            .find(|r| r.reason.is_decision())
            .or_else(|| errors.iter().find(|r| !r.culprits.is_empty() && !aborted(r)))
            .or_else(|| errors.iter().find(|r| !aborted(r)))
            .map(|r| (*r).clone())
            .unwrap_or(failure);
        for (n, r) in replies {
            if r.is_ok() {
                continue;
            }
            let _ = self
                .request(
                    *n,
                    Request::Abort { eid: eid_hex(eid), reason: failure.to_string() },
                    Duration::from_secs(2),
                )
                .await;
        }
        Some(failure)
    }

    /// Push governance entries to every node directly: what a member's client does
    /// (`strongroom governance push`), so that no orchestrator can keep a freeze or a
    /// stricter policy from the nodes. Each node's head after it, or its refusal.
    pub async fn push_governance(
        &self,
        entries: &[strongroom_governance::log::Entry],
        timeout: Duration,
    ) -> Vec<(u16, Result<Head, Refusal>)> {
        let nodes = self.node_ids();
        let make = |_| Request::Push { entries: entries.to_vec() };
        self.fan_out(&nodes, make, timeout)
            .await
            .into_iter()
            .map(|(n, r)| {
                let head = r.and_then(|reply| match reply {
                    Reply::Head(h) => Ok(h),
                    other => Err(unexpected(n, &other)),
                });
                (n, head)
            })
            .collect()
    }

    pub async fn status(&self, node: u16) -> Result<NodeStatus, Refusal> {
        match self.request(node, Request::Status, Duration::from_secs(5)).await? {
            Reply::Status(s) => Ok(s),
            other => Err(unexpected(node, &other)),
        }
    }

    /// Nodes that answer a status request now.
    pub async fn live_nodes(&self) -> Vec<u16> {
        let ids = self.node_ids();
        let replies = self.fan_out(&ids, |_| Request::Status, Duration::from_secs(2)).await;
        replies.into_iter().filter(|(_, r)| r.is_ok()).map(|(n, _)| n).collect()
    }

    pub async fn aux_info(&self, eid: ExecutionId, parties: &[u16]) -> Result<(), Refusal> {
        let p = parties.to_vec();
        let replies = self
            .fan_out_session(
                &eid,
                parties,
                |_| Request::AuxInfo { eid: eid_hex(&eid), parties: p.clone() },
                Duration::from_secs(900),
            )
            .await;
        match self.first_failure(&eid, &replies).await {
            Some(f) => Err(f),
            None => Ok(()),
        }
    }

    pub async fn keygen(
        &self,
        eid: ExecutionId,
        key_id: &str,
        scheme: Scheme,
        parties: &[u16],
        threshold: u16,
    ) -> Result<KeyInfo, Refusal> {
        let p = parties.to_vec();
        let replies = self
            .fan_out_session(
                &eid,
                parties,
                |_| Request::Keygen {
                    eid: eid_hex(&eid),
                    key_id: key_id.to_string(),
                    scheme,
                    parties: p.clone(),
                    threshold,
                },
                Duration::from_secs(60),
            )
            .await;
        if let Some(f) = self.first_failure(&eid, &replies).await {
            return Err(f);
        }
        let mut infos = replies.into_iter().filter_map(|(n, r)| match r {
            Ok(Reply::Key(k)) => Some((n, k)),
            _ => None,
        });
        let (n0, first) = infos.next().ok_or_else(|| unreachable(0, "no key info"))?;
        for (n, k) in infos {
            if k != first {
                return Err(culprit(
                    n,
                    format!("node {n} reports another public key than node {n0}"),
                ));
            }
        }
        Ok(first)
    }

    /// Refresh a FROST key's shares among `parties` (its parties, less any node governance
    /// quarantined), then commit everywhere; if any node fails, every node discards its new
    /// share and keeps the old one. Returns the key as it now stands.
    pub async fn refresh(
        &self,
        eid: ExecutionId,
        key: &KeyInfo,
        parties: &[u16],
    ) -> Result<KeyInfo, Refusal> {
        let replies = self
            .fan_out_session(
                &eid,
                parties,
                |_| Request::Refresh {
                    eid: eid_hex(&eid),
                    key_id: key.key_id.clone(),
                    parties: parties.to_vec(),
                },
                Duration::from_secs(60),
            )
            .await;
        let failure = self.first_failure(&eid, &replies).await;
        let next = replies.iter().find_map(|(_, r)| match r {
            Ok(Reply::KeyUpdated(k)) => Some(k.clone()),
            _ => None,
        });
        self.finish(&key.key_id, parties, failure, next).await
    }

    /// Commit a new share on `nodes` (or discard it everywhere after `failure`).
    async fn finish(
        &self,
        key_id: &str,
        nodes: &[u16],
        failure: Option<Refusal>,
        next: Option<KeyInfo>,
    ) -> Result<KeyInfo, Refusal> {
        let key_id = key_id.to_owned();
        let finish = if failure.is_some() {
            Request::DiscardRefresh { key_id }
        } else {
            Request::CommitRefresh { key_id }
        };
        let done = self.fan_out(nodes, |_| finish.clone(), Duration::from_secs(10)).await;
        if let Some(f) = failure {
            return Err(f);
        }
        if let Some(f) = done.into_iter().find_map(|(_, r)| r.err()) {
            return Err(f);
        }
        next.ok_or_else(|| {
            Refusal::new(0, Reason::Internal { detail: "no node reported the key".into() })
        })
    }

    /// Enrol node `new` into a FROST key: every party of the key helps build its share
    /// (none of them learns it), checks it against the verifying share they compute alike,
    /// then every party keeps the grown group. Returns the key as it now stands.
    pub async fn enrol(
        &self,
        eid: ExecutionId,
        key: &KeyInfo,
        new: u16,
    ) -> Result<KeyInfo, Refusal> {
        let helpers = key.parties.clone();
        let mut nodes = helpers.clone();
        nodes.push(new);
        let replies = self
            .fan_out_session(
                &eid,
                &nodes,
                |_| Request::Repair {
                    eid: eid_hex(&eid),
                    key_id: key.key_id.clone(),
                    scheme: key.scheme,
                    helpers: helpers.clone(),
                    lost: new,
                },
                Duration::from_secs(60),
            )
            .await;
        let mut failure = self.first_failure(&eid, &replies).await;
        let joined = replies.iter().find_map(|(n, r)| match r {
            Ok(Reply::KeyUpdated(k)) if *n == new => Some(k.clone()),
            _ => None,
        });
        if failure.is_none() && joined.as_ref().is_none_or(|k| k.public_key != key.public_key) {
            failure = Some(Refusal::new(
                new,
                Reason::Culprit { detail: "the enrolled share is not for this key".into() },
            ));
        }
        self.finish(&key.key_id, &helpers, failure, joined).await
    }

    /// Rebuild node `lost`'s share of a FROST key from `helpers` (at least the threshold).
    pub async fn repair(
        &self,
        eid: ExecutionId,
        key: &KeyInfo,
        helpers: &[u16],
        lost: u16,
    ) -> Result<KeyInfo, Refusal> {
        let mut nodes = helpers.to_vec();
        nodes.push(lost);
        let replies = self
            .fan_out_session(
                &eid,
                &nodes,
                |_| Request::Repair {
                    eid: eid_hex(&eid),
                    key_id: key.key_id.clone(),
                    scheme: key.scheme,
                    helpers: helpers.to_vec(),
                    lost,
                },
                Duration::from_secs(60),
            )
            .await;
        if let Some(f) = self.first_failure(&eid, &replies).await {
            return Err(f);
        }
        let restored = replies.into_iter().find_map(|(n, r)| match r {
            Ok(Reply::KeyUpdated(k)) if n == lost => Some(k),
            _ => None,
        });
        match restored {
            Some(k) if k.public_key == key.public_key => Ok(k),
            _ => Err(Refusal::new(
                lost,
                Reason::Culprit { detail: "the repaired share is not for this key".into() },
            )),
        }
    }

    /// Presignature ids that every one of `signers` holds for `key_id`.
    pub async fn pool(&self, key_id: &str, signers: &[u16]) -> Result<Vec<String>, Refusal> {
        let mut set = signers.to_vec();
        set.sort_unstable();
        let mut common: Option<std::collections::BTreeSet<String>> = None;
        for n in &set {
            let status = self.status(*n).await?;
            let ids: std::collections::BTreeSet<String> = status
                .presignatures
                .into_iter()
                .filter(|e| e.key_id == key_id && e.signers == set)
                .flat_map(|e| e.ids)
                .collect();
            common = Some(match common {
                None => ids,
                Some(c) => c.intersection(&ids).cloned().collect(),
            });
        }
        Ok(common.unwrap_or_default().into_iter().collect())
    }

    /// Top the pool of presignatures for `key_id` and `signers` up to `target`, running up
    /// to `parallel` presignature sessions at once. Returns how many it made.
    pub async fn fill_pool(
        &self,
        env: &dyn strongroom_core::Env,
        key_id: &str,
        signers: &[u16],
        target: usize,
        parallel: usize,
    ) -> Result<usize, Refusal> {
        let have = self.pool(key_id, signers).await?.len();
        let mut made = 0;
        while have + made < target {
            let batch = (target - have - made).min(parallel.max(1));
            let runs = (0..batch).map(|_| {
                let mut r = [0u8; 16];
                env.fill_random(&mut r);
                let eid = ExecutionId::derive("presign", &r, key_id.as_bytes());
                async move { self.presign(eid, key_id, signers).await }
            });
            for r in futures_join_all(runs).await {
                r?;
                made += 1;
            }
        }
        Ok(made)
    }

    /// Sign, taking an ECDSA presignature from the pool (or making one if the pool is
    /// empty).
    pub async fn sign_pooled(
        &self,
        env: &dyn strongroom_core::Env,
        key: &KeyInfo,
        signers: &[u16],
        request: &SignRequest,
    ) -> Result<Signed, Refusal> {
        let mut r = [0u8; 16];
        env.fill_random(&mut r);
        let eid = ExecutionId::derive("sign", &r, request.tx.as_bytes());
        if key.scheme != Scheme::Ecdsa {
            return self.sign(eid, key, signers, None, request).await;
        }
        let id = match self.pool(&key.key_id, signers).await?.into_iter().next() {
            Some(id) => id,
            None => {
                env.fill_random(&mut r);
                let peid = ExecutionId::derive("presign", &r, key.key_id.as_bytes());
                self.presign(peid, &key.key_id, signers).await?
            }
        };
        self.sign(eid, key, signers, Some(&id), request).await
    }

    /// Make one presignature for `signers`; returns its id.
    pub async fn presign(
        &self,
        eid: ExecutionId,
        key_id: &str,
        signers: &[u16],
    ) -> Result<String, Refusal> {
        let s = signers.to_vec();
        let replies = self
            .fan_out_session(
                &eid,
                signers,
                |_| Request::Presign {
                    eid: eid_hex(&eid),
                    key_id: key_id.to_string(),
                    signers: s.clone(),
                },
                Duration::from_secs(120),
            )
            .await;
        if let Some(f) = self.first_failure(&eid, &replies).await {
            return Err(f);
        }
        Ok(eid_hex(&eid))
    }

    /// Sign with `signers`. ECDSA uses (and burns) the presignature `presignature`, which
    /// all signers must hold; FROST runs its two rounds among the signers.
    pub async fn sign(
        &self,
        eid: ExecutionId,
        key: &KeyInfo,
        signers: &[u16],
        presignature: Option<&str>,
        request: &SignRequest,
    ) -> Result<Signed, Refusal> {
        let s = signers.to_vec();
        let replies = self
            .fan_out_session(
                &eid,
                signers,
                |_| Request::Sign {
                    eid: eid_hex(&eid),
                    key_id: key.key_id.clone(),
                    signers: s.clone(),
                    presignature: presignature.map(String::from),
                    request: request.clone(),
                },
                Duration::from_secs(30),
            )
            .await;
        if let Some(f) = self.first_failure(&eid, &replies).await {
            return Err(f);
        }
        let bad = |n: u16, m: &str| culprit(n, m);
        match key.scheme {
            Scheme::Ecdsa => {
                let mut partials = Vec::new();
                let mut agreed: Option<(String, String)> = None;
                for (n, r) in replies {
                    let Ok(Reply::Partial { partial, public_key, digest }) = r else {
                        return Err(bad(n, "expected a partial signature"));
                    };
                    if agreed.get_or_insert((public_key.clone(), digest.clone()))
                        != &(public_key, digest)
                    {
                        return Err(bad(n, "signers disagree on the key or the digest"));
                    }
                    let bytes = hex::decode(partial).map_err(|_| bad(n, "partial is not hex"))?;
                    partials
                        .push(ecdsa::decode_partial(&bytes).map_err(|e| bad(n, &e.to_string()))?);
                }
                let (pk, digest) = agreed.ok_or_else(|| unreachable(0, "no replies"))?;
                let pk_bytes = hex::decode(&pk).ok().and_then(|b| <[u8; 33]>::try_from(b).ok());
                let digest_bytes =
                    hex::decode(&digest).ok().and_then(|b| <[u8; 32]>::try_from(b).ok());
                let (Some(pk_bytes), Some(digest_bytes)) = (pk_bytes, digest_bytes) else {
                    return Err(bad(0, "malformed key or digest"));
                };
                if request.path.is_empty() && pk != key.public_key {
                    return Err(bad(0, "signers used another key"));
                }
                let sig = ecdsa::combine(&partials, &pk_bytes, &digest_bytes)
                    .map_err(|e| Refusal::new(0, Reason::Culprit { detail: e.to_string() }))?;
                Ok(Signed {
                    signature: sig.to_vec(),
                    public_key: pk_bytes.to_vec(),
                    signed_bytes: digest_bytes.to_vec(),
                    signers: signers.to_vec(),
                })
            }
            Scheme::FrostTaproot | Scheme::FrostEd25519 => {
                let mut agreed: Option<(String, String, String)> = None;
                for (n, r) in replies {
                    let Ok(Reply::Signature { signature, public_key, message }) = r else {
                        return Err(bad(n, "expected a signature"));
                    };
                    let mine = (signature, public_key, message);
                    if agreed.get_or_insert(mine.clone()) != &mine {
                        return Err(bad(n, "signers produced different signatures"));
                    }
                }
                let (sig, pk, msg) = agreed.ok_or_else(|| unreachable(0, "no replies"))?;
                if pk != key.public_key {
                    return Err(bad(0, "signers used another key"));
                }
                let h = |s: &str| hex::decode(s).map_err(|_| bad(0, "not hex"));
                Ok(Signed {
                    signature: h(&sig)?,
                    public_key: h(&pk)?,
                    signed_bytes: h(&msg)?,
                    signers: signers.to_vec(),
                })
            }
        }
    }
}

fn unexpected(node: u16, r: &Reply) -> Refusal {
    Refusal::new(node, Reason::Internal { detail: format!("unexpected reply {r:?}") })
}

/// Await all futures concurrently, outputs in input order.
pub(crate) async fn futures_join_all<F: std::future::Future>(
    futs: impl Iterator<Item = F>,
) -> Vec<F::Output> {
    join_vec(futs.map(Box::pin).collect()).await
}

async fn join_vec<F: std::future::Future + Unpin>(mut futs: Vec<F>) -> Vec<F::Output> {
    use std::pin::Pin;
    use std::task::Poll;
    let mut outs: Vec<Option<F::Output>> = futs.iter().map(|_| None).collect();
    std::future::poll_fn(move |cx| {
        let mut pending = false;
        for (f, o) in futs.iter_mut().zip(outs.iter_mut()) {
            if o.is_none() {
                match Pin::new(f).poll(cx) {
                    Poll::Ready(v) => *o = Some(v),
                    Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            Poll::Pending
        } else {
            Poll::Ready(outs.iter_mut().filter_map(Option::take).collect())
        }
    })
    .await
}
