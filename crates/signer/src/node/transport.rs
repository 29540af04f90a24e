//! The node's network side: the TLS listener, one connection per peer or caller, frames
//! routed to sessions by execution id, one outbound link per peer.

use super::*;

impl Node {
    /// Bind and serve until the process ends. Returns the bound address once listening.
    pub async fn start(self: &Arc<Self>) -> anyhow::Result<SocketAddr> {
        let pins = self.pins();
        let acceptor = TlsAcceptor::from(Arc::new(tls::server_config(&self.creds, pins.clone())?));
        let listener = TcpListener::bind(self.cfg.listen).await?;
        let addr = listener.local_addr()?;
        if let Some(m) = self.cfg.metrics_listen {
            crate::health::check_listen(m, self.cfg.metrics_remote)?;
            let metrics = TcpListener::bind(m).await?;
            tracing::info!(node = self.cfg.id, addr = %metrics.local_addr()?, "health and metrics");
            crate::health::spawn(self.clone(), metrics);
        }
        self.spawn_prime_generator();
        self.spawn_mesh();
        let node = self.clone();
        tokio::spawn(async move {
            loop {
                let Ok((tcp, peer_addr)) = listener.accept().await else { continue };
                let _ = tcp.set_nodelay(true);
                let node = node.clone();
                let acceptor = acceptor.clone();
                let pins = pins.clone();
                tokio::spawn(async move {
                    let tls =
                        match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp))
                            .await
                        {
                            Ok(Ok(t)) => t,
                            Ok(Err(e)) => {
                                tracing::warn!(%peer_addr, error = %e, "TLS handshake refused");
                                return;
                            }
                            Err(_) => return,
                        };
                    let who = tls
                        .get_ref()
                        .1
                        .peer_certificates()
                        .and_then(|c| c.first())
                        .and_then(|c| pins.get(&tls::fingerprint(c)).copied());
                    let Some(who) = who else { return };
                    node.serve_connection(tls, who).await;
                });
            }
        });
        tracing::info!(node = self.cfg.id, %addr, "signer node listening (mTLS 1.3, pinned)");
        Ok(addr)
    }

    pub(super) async fn serve_connection(
        self: Arc<Self>,
        tls: tokio_rustls::server::TlsStream<TcpStream>,
        who: Identity,
    ) {
        let (rd, mut wr) = tokio::io::split(tls);
        let mut rd = BufReader::new(rd);
        let (reply_tx, mut reply_rx) = mpsc::unbounded_channel::<Frame>();
        let writer = tokio::spawn(async move {
            while let Some(f) = reply_rx.recv().await {
                if wire::write_frame(&mut wr, &f).await.is_err() {
                    break;
                }
            }
            let _ = wr.shutdown().await;
        });
        loop {
            let body = match wire::read_frame(&mut rd).await {
                Ok(Some(b)) => b,
                Ok(None) => break,
                Err(e) => {
                    tracing::warn!(node = self.cfg.id, peer = ?who, error = %e, "bad frame; closing");
                    break;
                }
            };
            let frame = match Frame::decode(&body) {
                Ok(f) => f,
                Err(e) => {
                    tracing::warn!(node = self.cfg.id, peer = ?who, error = %e, "undecodable frame; closing");
                    break;
                }
            };
            // A quarantined node's certificate is no longer heard, whatever it sends.
            if let (Identity::Node(peer), Some(gov)) = (who, &self.governance) {
                if let Err(reason) = gov.refuse_quarantined(&[peer]) {
                    let r = Refusal::new(self.cfg.id, reason);
                    tracing::warn!(node = self.cfg.id, peer, reason = %r.reason, "frame from a quarantined node refused; closing");
                    let _ = self.audit(
                        "peer.refused",
                        &format!("node/{peer}"),
                        serde_json::json!({"from": peer, "refusal": r}),
                    );
                    break;
                }
            }
            match (who, frame) {
                (Identity::Orchestrator, Frame::Control(Control::Request { id, body })) => {
                    let node = self.clone();
                    let tx = reply_tx.clone();
                    tokio::spawn(async move {
                        let body = node.handle(body).await;
                        let _ = tx.send(Frame::Control(Control::Response { id, body }));
                    });
                }
                // Peers and pushers get a typed answer to anything they send, and may ask
                // for nothing beyond their part.
                (
                    Identity::Node(_) | Identity::Pusher,
                    Frame::Control(Control::Request { id, body }),
                ) => {
                    let node = self.clone();
                    let tx = reply_tx.clone();
                    tokio::spawn(async move {
                        let body = node.handle_limited(who, body).await;
                        let _ = tx.send(Frame::Control(Control::Response { id, body }));
                    });
                }
                (Identity::Node(peer), Frame::Mpc { envelope, .. }) => {
                    if envelope.from != peer {
                        tracing::warn!(
                            node = self.cfg.id,
                            peer,
                            claimed = envelope.from,
                            "frame claims another sender; closing"
                        );
                        break;
                    }
                    self.route(envelope.eid, Inbound::Msg(envelope));
                }
                (Identity::Node(peer), Frame::Abort { eid, from, reason }) => {
                    if from != peer {
                        break;
                    }
                    self.route(eid, Inbound::Abort { from, reason });
                }
                (who, _) => {
                    tracing::warn!(node = self.cfg.id, peer = ?who, "frame not allowed from this party; closing");
                    break;
                }
            }
        }
        drop(reply_tx);
        let _ = writer.await;
    }

    pub(super) fn route(&self, eid: ExecutionId, msg: Inbound) {
        let Ok(mut r) = self.routing.lock() else { return };
        if let Some(tx) = r.sessions.get(&eid) {
            let _ = tx.send(msg);
            return;
        }
        if r.finished.contains(&eid) {
            let from = match &msg {
                Inbound::Msg(e) => e.from,
                Inbound::Abort { from, .. } => *from,
            };
            tracing::warn!(node = self.cfg.id, from, eid = %eid_hex(&eid),
                "message for an ended session refused (replay or straggler)");
            let _ = self.audit("message.refused", &format!("node/{from}"),
                serde_json::json!({"eid": eid_hex(&eid), "from": from, "reason": "session already ended"}));
            return;
        }
        if !r.pending.contains_key(&eid) && r.pending.len() >= MAX_PENDING_SESSIONS {
            tracing::warn!(node = self.cfg.id, "too many pending sessions; message dropped");
            return;
        }
        let q = r.pending.entry(eid).or_default();
        if q.len() < MAX_PENDING_MESSAGES {
            q.push(msg);
        }
    }

    /// Register a session and get its inbox (with anything that arrived early).
    pub(super) fn open_session(
        &self,
        eid: ExecutionId,
    ) -> Result<stdmpsc::Receiver<Inbound>, Refusal> {
        let mut r = self.routing.lock().map_err(|_| internal(self.cfg.id, "lock"))?;
        if let Some(reason) = r.aborted.get(&eid) {
            let detail = reason.clone();
            return Err(Refusal::new(self.cfg.id, Reason::Aborted { by: 0, detail }));
        }
        if r.finished.contains(&eid) || r.sessions.contains_key(&eid) {
            return Err(bad_request(self.cfg.id, "execution id already used"));
        }
        let (tx, rx) = stdmpsc::channel();
        for m in r.pending.remove(&eid).unwrap_or_default() {
            let _ = tx.send(m);
        }
        r.sessions.insert(eid, tx);
        Ok(rx)
    }

    pub(super) fn close_session(&self, eid: ExecutionId) {
        if let Ok(mut r) = self.routing.lock() {
            r.sessions.remove(&eid);
            r.pending.remove(&eid);
            if r.finished.insert(eid) {
                r.finished_order.push_back(eid);
            }
            while r.finished_order.len() > MAX_FINISHED {
                if let Some(old) = r.finished_order.pop_front() {
                    r.finished.remove(&old);
                    r.aborted.remove(&old);
                }
            }
        }
    }

    pub(super) fn peer(&self, id: u16) -> Option<&PeerConfig> {
        self.cfg.peers.iter().find(|p| p.id == id)
    }

    /// Queue a frame for a peer, opening the link if needed.
    pub(super) fn send(self: &Arc<Self>, to: u16, frame: Frame) {
        let Ok(mut links) = self.links.lock() else { return };
        if let Some(tx) = links.get(&to) {
            if tx.send(frame.clone()).is_ok() {
                return;
            }
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let _ = tx.send(frame);
        links.insert(to, tx);
        let node = self.clone();
        tokio::spawn(async move { node.link(to, rx).await });
    }

    /// The outbound link to one peer: connect, write frames; reconnect on failure.
    pub(super) async fn link(self: Arc<Self>, to: u16, mut rx: mpsc::UnboundedReceiver<Frame>) {
        let Some(peer) = self.peer(to).cloned() else {
            tracing::warn!(node = self.cfg.id, to, "no such peer");
            return;
        };
        type Link = (
            tokio::io::WriteHalf<tokio_rustls::client::TlsStream<TcpStream>>,
            Arc<std::sync::atomic::AtomicBool>,
        );
        let mut conn: Option<Link> = None;
        while let Some(frame) = rx.recv().await {
            for attempt in 0..2 {
                // A connection the peer closed (it restarted, say) is not written to: a write
                // into a dead socket can "succeed" and the frame would be lost.
                if conn
                    .as_ref()
                    .is_some_and(|(_, open)| !open.load(std::sync::atomic::Ordering::Acquire))
                {
                    conn = None;
                }
                if conn.is_none() {
                    match self.connect(&peer).await {
                        Ok(c) => conn = Some(c),
                        Err(e) => {
                            tracing::warn!(node = self.cfg.id, to, error = %e, "peer unreachable");
                            break;
                        }
                    }
                }
                let Some((w, _)) = conn.as_mut() else { break };
                match wire::write_frame(w, &frame).await {
                    Ok(()) => break,
                    Err(e) => {
                        conn = None;
                        if attempt == 1 {
                            tracing::warn!(node = self.cfg.id, to, error = %e, "send failed");
                        }
                    }
                }
            }
        }
    }

    pub(super) async fn connect(
        &self,
        peer: &PeerConfig,
    ) -> anyhow::Result<(
        tokio::io::WriteHalf<tokio_rustls::client::TlsStream<TcpStream>>,
        Arc<std::sync::atomic::AtomicBool>,
    )> {
        let tls = tls::connect(&self.creds, &peer.cert_sha256, peer.addr).await?;
        let (rd, wr) = tokio::io::split(tls);
        let open = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let flag = open.clone();
        // Peers never answer on this connection; reading it tells when the peer closes it.
        tokio::spawn(async move {
            let mut rd = BufReader::new(rd);
            while let Ok(Some(_)) = wire::read_frame(&mut rd).await {}
            flag.store(false, std::sync::atomic::Ordering::Release);
        });
        Ok((wr, open))
    }

    // --- requests --------------------------------------------------------------------

    /// What a peer node (the mesh exchange) or a pusher (a push, the status) may ask.
    pub(super) async fn handle_limited(
        self: &Arc<Self>,
        who: Identity,
        req: Request,
    ) -> Result<Reply, Refusal> {
        let me = self.cfg.id;
        match (who, req) {
            (Identity::Node(peer), Request::Mesh { head, since }) => {
                let mesh = self
                    .mesh
                    .clone()
                    .ok_or_else(|| bad_request(me, "this node has no governance to exchange"))?;
                let state = mesh.answer(&head, since).map_err(|r| Refusal::new(me, r))?;
                // The asker knows more: learn it now rather than at the next round.
                if head.seq > state.head.seq {
                    if let Some(p) = self.peer(peer).cloned() {
                        let node = self.clone();
                        tokio::spawn(async move {
                            let x = mesh.exchange(&p).await;
                            node.note_exchanges(&[x]);
                        });
                    }
                }
                Ok(Reply::Mesh(state))
            }
            (Identity::Pusher, req @ (Request::Push { .. } | Request::Status)) => {
                self.handle(req).await
            }
            (who, req) => {
                let op = serde_json::to_value(&req)
                    .ok()
                    .and_then(|v| v.get("op").and_then(|o| o.as_str()).map(str::to_owned))
                    .unwrap_or_default();
                let r = bad_request(me, format!("{who:?} may not send a {op} request"));
                tracing::warn!(node = me, peer = ?who, op, "request not allowed from this party");
                let _ = self.audit(
                    "request.refused",
                    &format!("{who:?}").to_lowercase(),
                    serde_json::json!({"op": op, "refusal": r}),
                );
                Err(r)
            }
        }
    }
}
