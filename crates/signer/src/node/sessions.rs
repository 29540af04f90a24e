//! Protocol sessions: each on an OS thread of its own (auxiliary info, key generation,
//! presignatures, refresh and repair, signing), and the checks before a signature.

use super::*;

impl Node {
    pub(super) async fn blocking<F>(self: &Arc<Self>, f: F) -> Result<Reply, Refusal>
    where
        F: FnOnce(&Arc<Node>) -> Result<Reply, Refusal> + Send + 'static,
    {
        let node = self.clone();
        let handle = tokio::runtime::Handle::current();
        let me = self.cfg.id;
        tokio::task::spawn_blocking(move || {
            let _guard = handle.enter();
            f(&node)
        })
        .await
        .map_err(|e| internal(me, e.to_string()))?
    }

    /// Drive one session on this thread until it finishes, fails, or times out. On failure
    /// every other party is told to stop.
    pub(super) fn drive<O>(
        self: &Arc<Self>,
        eid: ExecutionId,
        proto: Proto,
        others: &[u16],
        timeout_ms: u64,
        rx: &stdmpsc::Receiver<Inbound>,
        mut step: impl FnMut(Option<Wire>) -> Stepped<O>,
    ) -> Result<O, Refusal> {
        let me = self.cfg.id;
        let deadline = self.env.monotonic() + Duration::from_millis(timeout_ms);
        let mut heard: BTreeMap<u16, usize> = others.iter().map(|p| (*p, 0)).collect();
        let result = (|| {
            let mut input: Option<Envelope<Vec<u8>>> = None;
            // Messages for a later round than the party is in (peers run ahead): kept and
            // fed again after every step until they fit.
            let mut deferred: Vec<Envelope<Vec<u8>>> = Vec::new();
            loop {
                let kept = input.clone();
                let (mut out, mut output) = match step(input.take()) {
                    Ok(x) => x,
                    // A duplicate or a message from elsewhere is refused; the session goes on.
                    Err(
                        e @ (MpcError::Duplicate { .. }
                        | MpcError::WrongExecution { .. }
                        | MpcError::NotForMe { .. }),
                    ) => {
                        tracing::warn!(node = me, eid = %eid_hex(&eid), error = %e, "message refused");
                        (vec![], None)
                    }
                    Err(MpcError::WrongRound { expected, got, .. }) if got > expected => {
                        deferred.extend(kept);
                        (vec![], None)
                    }
                    Err(e) => return Err(from_mpc(me, e)),
                };
                let mut progressed = !out.is_empty();
                while progressed && output.is_none() && !deferred.is_empty() {
                    progressed = false;
                    for env in std::mem::take(&mut deferred) {
                        if output.is_some() {
                            deferred.push(env);
                            continue;
                        }
                        match step(Some(env.clone())) {
                            Ok((more, o)) => {
                                progressed = true;
                                out.extend(more);
                                output = o;
                            }
                            Err(MpcError::WrongRound { expected, got, .. }) if got > expected => {
                                deferred.push(env)
                            }
                            Err(e) => return Err(from_mpc(me, e)),
                        }
                    }
                }
                for env in out {
                    let targets: Vec<u16> = match env.to {
                        Some(t) => vec![t],
                        None => others.to_vec(),
                    };
                    for t in targets {
                        self.send(t, Frame::Mpc { proto, envelope: env.clone() });
                    }
                }
                if let Some(o) = output {
                    return Ok(o);
                }
                let now = self.env.monotonic();
                let left = deadline.checked_sub(now).unwrap_or_default();
                match rx.recv_timeout(left) {
                    Ok(Inbound::Msg(env)) => {
                        if let Some(n) = heard.get_mut(&env.from) {
                            *n += 1;
                        }
                        input = Some(env);
                    }
                    Ok(Inbound::Abort { from, reason }) => {
                        return Err(Refusal::new(me, Reason::Aborted { by: from, detail: reason }));
                    }
                    Err(_) => {
                        let most = heard.values().copied().max().unwrap_or(0);
                        let slow: Vec<u16> = heard
                            .iter()
                            .filter(|(_, n)| **n < most.max(1))
                            .map(|(p, _)| *p)
                            .collect();
                        return Err(Refusal {
                            node: me,
                            reason: Reason::Timeout { after_ms: timeout_ms },
                            culprits: slow,
                        });
                    }
                }
            }
        })();
        if let Err(r) = &result {
            let _ = self.audit(
                "session.failed",
                &format!("session/{}", eid_hex(&eid)),
                serde_json::json!({"proto": proto, "refusal": r}),
            );
            tracing::warn!(node = me, eid = %eid_hex(&eid), code = r.reason.code(),
                culprits = ?r.culprits, reason = %r.reason, "session failed");
            for p in others {
                self.send(*p, Frame::Abort { eid, from: me, reason: r.reason.to_string() });
            }
        }
        self.close_session(eid);
        result
    }

    pub(super) fn others(&self, parties: &[u16]) -> Result<Vec<u16>, Refusal> {
        let me = self.cfg.id;
        if !parties.contains(&me) {
            return Err(bad_request(me, format!("node {me} is not in {parties:?}")));
        }
        self.refuse_quarantined(parties)?;
        let others: Vec<u16> = parties.iter().copied().filter(|p| *p != me).collect();
        for p in &others {
            if self.peer(*p).is_none() {
                return Err(bad_request(me, format!("node {p} is not a configured peer")));
            }
        }
        Ok(others)
    }

    /// This node's auxiliary info for `set`: its own file, or the first auxiliary info
    /// when that was made for exactly this set (nodes 1..=n).
    fn aux_for(&self, set: &[u16]) -> Result<Option<zeroize::Zeroizing<Vec<u8>>>, Refusal> {
        let me = self.cfg.id;
        match self.vault.aux_for(set) {
            Ok(a) => return Ok(Some(a)),
            Err(VaultError::NotFound(_)) => {}
            Err(e) => return Err(from_vault(me, e)),
        }
        if !self.vault.has_aux() || !contiguous(set) {
            return Ok(None);
        }
        let first = self.vault.aux().map_err(|e| from_vault(me, e))?;
        let aux: ecdsa::AuxInfo =
            serde_json::from_slice(&first).map_err(|e| internal(me, e.to_string()))?;
        Ok((ecdsa::aux_parties(&aux) == set.len()).then_some(first))
    }

    pub(super) fn run_aux(
        self: &Arc<Self>,
        eid: ExecutionId,
        parties: Vec<u16>,
    ) -> Result<Reply, Refusal> {
        let me = self.cfg.id;
        let set = ecdsa::Parties::new(parties.iter().copied()).map_err(|e| from_mpc(me, e))?;
        if self.aux_for(set.numbers())?.is_some() {
            return Ok(Reply::AuxReady);
        }
        let others = self.others(set.numbers())?;
        let rx = self.open_session(eid)?;
        let primes = {
            let _g = self.primes_lock.lock().map_err(|_| internal(me, "lock"))?;
            match self.vault.take_primes() {
                Ok(json) => serde_json::from_slice::<ecdsa::Primes>(&json)
                    .map_err(|e| internal(me, e.to_string()))?,
                Err(VaultError::NotFound(_)) => {
                    tracing::info!(node = me, "no primes ready: generating now");
                    ecdsa::generate_primes(&mut EnvRng(self.env.as_ref()))
                }
                Err(e) => return Err(from_vault(me, e)),
            }
        };
        let mut rng = EnvRng(self.env.as_ref());
        let mut session = ecdsa::aux_info(&eid, me, &set, primes, Default::default(), &mut rng)
            .map_err(|e| from_mpc(me, e))?;
        let aux = self.drive(eid, Proto::Ecdsa, &others, self.cfg.timeouts.aux_ms, &rx, |m| {
            session.step(m).map(|p| (p.outgoing, p.output))
        })?;
        let json = zeroize::Zeroizing::new(
            serde_json::to_vec(&aux).map_err(|e| internal(me, e.to_string()))?,
        );
        // The first auxiliary info, for nodes 1..=n, keeps its old place; any other set
        // (after a quarantine or an enrolment) has a file of its own.
        let first = !self.vault.has_aux() && contiguous(set.numbers());
        if first {
            self.vault.put_aux(&json, self.env.as_ref())
        } else {
            self.vault.put_aux_for(set.numbers(), &json, self.env.as_ref())
        }
        .map_err(|e| from_vault(me, e))?;
        self.audit(
            "aux.ready",
            "aux",
            serde_json::json!({"eid": eid_hex(&eid), "parties": parties}),
        )?;
        tracing::info!(node = me, "auxiliary info ready");
        Ok(Reply::AuxReady)
    }

    pub(super) fn run_keygen(
        self: &Arc<Self>,
        eid: ExecutionId,
        key_id: String,
        scheme: Scheme,
        parties: Vec<u16>,
        threshold: u16,
    ) -> Result<Reply, Refusal> {
        let me = self.cfg.id;
        if let Ok(info) = self.vault.key_info(&key_id) {
            return Err(bad_request(me, format!("key {} already exists", info.key_id)));
        }
        let set = ecdsa::Parties::new(parties.iter().copied()).map_err(|e| from_mpc(me, e))?;
        let others = self.others(set.numbers())?;
        let n = u16::try_from(set.numbers().len()).map_err(|_| bad_request(me, "n"))?;
        if scheme != Scheme::Ecdsa && !contiguous(set.numbers()) {
            // FROST keys are made among nodes 1..=n; after a quarantine they are refreshed
            // without the node and new nodes enrolled.
            return Err(bad_request(me, "FROST key parties must be nodes 1..=n"));
        }
        // An ECDSA key needs the auxiliary info made for exactly its parties.
        let aux_json = match scheme {
            Scheme::Ecdsa => Some(self.aux_for(set.numbers())?.ok_or_else(|| {
                not_found(
                    me,
                    format!(
                        "no auxiliary info for nodes {:?}: run aux info for them first",
                        set.numbers()
                    ),
                )
            })?),
            _ => None,
        };
        let rx = self.open_session(eid)?;
        let timeout = self.cfg.timeouts.keygen_ms;
        let (info, share) = match scheme {
            Scheme::Ecdsa => {
                let aux_json = aux_json.ok_or_else(|| internal(me, "no auxiliary info"))?;
                let aux: ecdsa::AuxInfo =
                    serde_json::from_slice(&aux_json).map_err(|e| internal(me, e.to_string()))?;
                let mut rng = EnvRng(self.env.as_ref());
                let mut session = ecdsa::keygen(&eid, me, &set, threshold, &mut rng)
                    .map_err(|e| from_mpc(me, e))?;
                let incomplete = self.drive(eid, Proto::Ecdsa, &others, timeout, &rx, |m| {
                    session.step(m).map(|p| (p.outgoing, p.output))
                })?;
                let key = ecdsa::complete(incomplete, aux).map_err(|e| from_mpc(me, e))?;
                let public = ecdsa::public_key(&key, &[]).map_err(|e| from_mpc(me, e))?;
                let chain = key.extended_public_key().map(|x| hex::encode(x.chain_code));
                let share = zeroize::Zeroizing::new(
                    serde_json::to_vec(&key).map_err(|e| internal(me, e.to_string()))?,
                );
                let info = KeyInfo {
                    key_id: key_id.clone(),
                    scheme,
                    threshold,
                    parties: set.numbers().to_vec(),
                    public_key: hex::encode(public),
                    chain_code: chain,
                };
                (info, share)
            }
            Scheme::FrostTaproot => self.frost_keygen::<Secp256k1Taproot>(
                eid, &key_id, scheme, n, threshold, &others, &rx,
            )?,
            Scheme::FrostEd25519 => {
                self.frost_keygen::<Ed25519>(eid, &key_id, scheme, n, threshold, &others, &rx)?
            }
        };
        self.vault.put_key(&info, &share, self.env.as_ref()).map_err(|e| from_vault(me, e))?;
        self.audit(
            "key.generated",
            &format!("key/{key_id}"),
            serde_json::json!({
            "eid": eid_hex(&eid), "scheme": scheme, "threshold": threshold,
            "parties": info.parties, "public_key": info.public_key}),
        )?;
        tracing::info!(node = me, key = %key_id, scheme = ?scheme, public_key = %info.public_key, "key share stored (sealed)");
        Ok(Reply::Key(info))
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn frost_keygen<C: frost_core::Ciphersuite>(
        self: &Arc<Self>,
        eid: ExecutionId,
        key_id: &str,
        scheme: Scheme,
        n: u16,
        threshold: u16,
        others: &[u16],
        rx: &stdmpsc::Receiver<Inbound>,
    ) -> Result<(KeyInfo, zeroize::Zeroizing<Vec<u8>>), Refusal> {
        let me = self.cfg.id;
        let (mut dkg, first) =
            frost::Dkg::<C>::start(eid, me, n, threshold, EnvRng(self.env.as_ref()))
                .map_err(|e| from_mpc(me, e))?;
        let stepper = frost_stepper(first, |e| dkg.handle(e));
        let share =
            self.drive(eid, Proto::FrostDkg, others, self.cfg.timeouts.keygen_ms, rx, stepper)?;
        let public = public_key_bytes(scheme, share.group_key().map_err(|e| from_mpc(me, e))?);
        let bytes = share.to_bytes().map_err(|e| from_mpc(me, e))?;
        let mut parties: Vec<u16> = others.to_vec();
        parties.push(me);
        parties.sort_unstable();
        let info = KeyInfo {
            key_id: key_id.to_string(),
            scheme,
            threshold,
            parties,
            public_key: hex::encode(public),
            chain_code: None,
        };
        Ok((info, bytes))
    }

    pub(super) fn run_presign(
        self: &Arc<Self>,
        eid: ExecutionId,
        key_id: String,
        signers: Vec<u16>,
    ) -> Result<Reply, Refusal> {
        let me = self.cfg.id;
        let (info, share) = self.vault.key_share(&key_id).map_err(|e| from_vault(me, e))?;
        if info.scheme != Scheme::Ecdsa {
            return Err(bad_request(me, "presignatures are for ECDSA keys"));
        }
        let key: ecdsa::KeyShare =
            serde_json::from_slice(&share).map_err(|e| internal(me, e.to_string()))?;
        drop(share);
        if let Some(gov) = &self.governance {
            gov.refuse_retired(&key_id, None).map_err(|r| Refusal::new(me, r))?;
        }
        let set = ecdsa::Parties::of_key(signers.iter().copied(), &info.parties)
            .map_err(|e| from_mpc(me, e))?;
        let others = self.others(set.numbers())?;
        let rx = self.open_session(eid)?;
        let mut rng = EnvRng(self.env.as_ref());
        let mut session = match ecdsa::presign(&eid, me, &set, &key, &mut rng) {
            Ok(s) => s,
            Err(e) => {
                self.close_session(eid);
                return Err(from_mpc(me, e));
            }
        };
        let presig =
            self.drive(eid, Proto::Ecdsa, &others, self.cfg.timeouts.presign_ms, &rx, |m| {
                session.step(m).map(|p| (p.outgoing, p.output))
            })?;
        let json = zeroize::Zeroizing::new(
            serde_json::to_vec(&presig).map_err(|e| internal(me, e.to_string()))?,
        );
        let id = eid_hex(&eid);
        self.vault
            .put_presig(&key_id, set.numbers(), &id, &json, self.env.as_ref())
            .map_err(|e| from_vault(me, e))?;
        self.audit(
            "presignature.made",
            &format!("key/{key_id}"),
            serde_json::json!({"id": id, "signers": set.numbers()}),
        )?;
        Ok(Reply::Presigned { id })
    }

    pub(super) fn run_refresh(
        self: &Arc<Self>,
        eid: ExecutionId,
        key_id: String,
        parties: Vec<u16>,
    ) -> Result<Reply, Refusal> {
        let me = self.cfg.id;
        let (info, bytes) = self.vault.key_share(&key_id).map_err(|e| from_vault(me, e))?;
        let parties = if parties.is_empty() { info.parties.clone() } else { parties };
        // Only a node governance quarantined may be left out: otherwise whoever drives the
        // orchestrator could shrink the group, one refresh at a time.
        let quarantined = match &self.governance {
            Some(g) => g.quarantined().map_err(|r| Refusal::new(me, r))?,
            None => Vec::new(),
        };
        if let Some(p) = parties.iter().find(|p| !info.parties.contains(p)) {
            return Err(bad_request(me, format!("node {p} holds no share of {key_id}")));
        }
        if let Some(p) =
            info.parties.iter().find(|p| !parties.contains(p) && !quarantined.contains(p))
        {
            return Err(bad_request(
                me,
                format!("a refresh leaves out only quarantined nodes, and node {p} is not"),
            ));
        }
        let others = self.others(&parties)?;
        match info.scheme {
            Scheme::FrostTaproot => {
                self.frost_refresh::<Secp256k1Taproot>(eid, &info, &bytes, &parties, &others)
            }
            Scheme::FrostEd25519 => {
                self.frost_refresh::<Ed25519>(eid, &info, &bytes, &parties, &others)
            }
            Scheme::Ecdsa => Err(bad_request(me, "cggmp21 0.6 cannot refresh t-of-n ECDSA keys: generate a new key and move the funds",
            )),
        }
    }

    pub(super) fn frost_refresh<C: frost_core::Ciphersuite>(
        self: &Arc<Self>,
        eid: ExecutionId,
        info: &KeyInfo,
        bytes: &[u8],
        parties: &[u16],
        others: &[u16],
    ) -> Result<Reply, Refusal> {
        let me = self.cfg.id;
        let old = frost::KeyShare::<C>::from_bytes(bytes).map_err(|e| from_mpc(me, e))?;
        let rx = self.open_session(eid)?;
        let set: BTreeSet<u16> = parties.iter().copied().collect();
        let (mut dkg, first) =
            match frost::Dkg::<C>::start_refresh(eid, &old, set, EnvRng(self.env.as_ref())) {
                Ok(x) => x,
                Err(e) => {
                    self.close_session(eid);
                    return Err(from_mpc(me, e));
                }
            };
        let stepper = frost_stepper(first, |e| dkg.handle(e));
        let new =
            self.drive(eid, Proto::FrostDkg, others, self.cfg.timeouts.keygen_ms, &rx, stepper)?;
        let public = public_key_bytes(info.scheme, new.group_key().map_err(|e| from_mpc(me, e))?);
        if hex::encode(&public) != info.public_key {
            return Err(culprit(me, "refresh produced another group key"));
        }
        let share = new.to_bytes().map_err(|e| from_mpc(me, e))?;
        let mut next = info.clone();
        next.parties = parties.to_vec();
        next.parties.sort_unstable();
        self.vault.put_next(&next, &share, self.env.as_ref()).map_err(|e| from_vault(me, e))?;
        self.audit(
            "key.refresh.prepared",
            &format!("key/{}", info.key_id),
            serde_json::json!({"eid": eid_hex(&eid), "parties": next.parties}),
        )?;
        tracing::info!(node = me, key = %info.key_id, parties = ?next.parties, "refreshed share sealed; waiting for commit");
        Ok(Reply::KeyUpdated(next))
    }

    pub(super) fn run_repair<C: frost_core::Ciphersuite>(
        self: &Arc<Self>,
        eid: ExecutionId,
        key_id: String,
        scheme: Scheme,
        helpers: Vec<u16>,
        lost: u16,
    ) -> Result<Reply, Refusal> {
        let me = self.cfg.id;
        let helper_set: BTreeSet<u16> = helpers.iter().copied().collect();
        let mut everyone: Vec<u16> = helper_set.iter().copied().collect();
        everyone.push(lost);
        let others = self.others(&everyone)?;
        if me == lost {
            if self.vault.key_info(&key_id).is_ok() {
                return Err(bad_request(
                    me,
                    format!("key {key_id} is present here; remove it before a repair"),
                ));
            }
            let rx = self.open_session(eid)?;
            let mut repair =
                frost::Repair::<C>::start_lost(eid, me, helper_set).map_err(|e| from_mpc(me, e))?;
            let restored =
                self.drive(eid, Proto::FrostDkg, &others, self.cfg.timeouts.keygen_ms, &rx, |m| {
                    let Some(env) = m else { return Ok((vec![], None)) };
                    match repair.handle(decode_env::<frost::RepairPayload<C>>(env)?)? {
                        frost::Step::Finished(frost::Repaired::Restored(k)) => {
                            Ok((vec![], Some(k)))
                        }
                        _ => Ok((vec![], None)),
                    }
                })?;
            let public =
                public_key_bytes(scheme, restored.group_key().map_err(|e| from_mpc(me, e))?);
            let mut parties: Vec<u16> = Vec::new();
            for id in restored.public.verifying_shares().keys() {
                if let Some(p) = (1..=10u16)
                    .find(|p| frost_core::Identifier::<C>::try_from(*p).ok().as_ref() == Some(id))
                {
                    parties.push(p);
                }
            }
            let info = KeyInfo {
                key_id: key_id.clone(),
                scheme,
                threshold: *restored.key_package.min_signers(),
                parties,
                public_key: hex::encode(public),
                chain_code: None,
            };
            let share = restored.to_bytes().map_err(|e| from_mpc(me, e))?;
            self.vault.put_key(&info, &share, self.env.as_ref()).map_err(|e| from_vault(me, e))?;
            self.audit(
                "key.repaired",
                &format!("key/{key_id}"),
                serde_json::json!({
                "eid": eid_hex(&eid), "helpers": helpers, "public_key": info.public_key}),
            )?;
            tracing::info!(node = me, key = %key_id, "share repaired and sealed");
            Ok(Reply::KeyUpdated(info))
        } else {
            let (info, bytes) = self.vault.key_share(&key_id).map_err(|e| from_vault(me, e))?;
            let share = frost::KeyShare::<C>::from_bytes(&bytes).map_err(|e| from_mpc(me, e))?;
            drop(bytes);
            let enrolling = !info.parties.contains(&lost);
            if enrolling {
                // A new party joins: every party must help (each keeps the group's public
                // keys, which gain the newcomer's), and none may be quarantined (refresh
                // without it first, or its old share would still count).
                if let Some(p) = info.parties.iter().find(|p| !helper_set.contains(p)) {
                    return Err(bad_request(
                        me,
                        format!("enrolling node {lost} takes every party of {key_id} as a helper; {p} is missing"),
                    ));
                }
                self.refuse_quarantined(&info.parties)?;
            }
            let rx = self.open_session(eid)?;
            let started = frost::Repair::start_helper(
                eid,
                &share,
                helper_set,
                lost,
                EnvRng(self.env.as_ref()),
            );
            let (mut repair, first) = match started {
                Ok(x) => x,
                Err(e) => {
                    self.close_session(eid);
                    return Err(from_mpc(me, e));
                }
            };
            let mut first = Some(first);
            self.drive(eid, Proto::FrostDkg, &others, self.cfg.timeouts.keygen_ms, &rx, |m| {
                if let Some(out) = first.take() {
                    return Ok((encode_all(out)?, None));
                }
                let Some(env) = m else { return Ok((vec![], None)) };
                let out = match repair.handle(decode_env::<frost::RepairPayload<C>>(env)?)? {
                    frost::Step::Send(out) => encode_all(out)?,
                    _ => vec![],
                };
                Ok((out, repair.is_done().then_some(())))
            })?;
            if let Some(grown) = repair.enrolled() {
                let mut next = info.clone();
                next.parties.push(lost);
                next.parties.sort_unstable();
                let bytes = grown.to_bytes().map_err(|e| from_mpc(me, e))?;
                self.vault
                    .put_next(&next, &bytes, self.env.as_ref())
                    .map_err(|e| from_vault(me, e))?;
                self.audit(
                    "key.enrol.prepared",
                    &format!("key/{key_id}"),
                    serde_json::json!({"eid": eid_hex(&eid), "helpers": helpers, "new": lost}),
                )?;
                tracing::info!(node = me, key = %key_id, new = lost, "helped enrol a new node; waiting for commit");
                return Ok(Reply::KeyUpdated(next));
            }
            self.audit(
                "key.repair.helped",
                &format!("key/{key_id}"),
                serde_json::json!({
                "eid": eid_hex(&eid), "helpers": helpers, "lost": lost}),
            )?;
            tracing::info!(node = me, key = %key_id, lost, "helped repair a lost share");
            Ok(Reply::KeyUpdated(info))
        }
    }

    /// Decode the request, run every check, record the signing in the journal, and return
    /// what to sign.
    pub(super) fn precheck(
        &self,
        info: &KeyInfo,
        req: &SignRequest,
        signers: &[u16],
    ) -> Result<check::ToSign, Refusal> {
        let me = self.cfg.id;
        let refuse = |r: Reason| Refusal::new(me, r);
        if !req.path.is_empty() && info.scheme != Scheme::Ecdsa {
            return Err(bad_request(me, "derivation paths are for ECDSA keys"));
        }
        let to_sign = check::decode(info, req).map_err(refuse)?;
        if let Some(mesh) = &self.mesh {
            // Hear from the peers first: the newest governance any of them verified, and
            // what the group signed. Too few answers and the node cannot know either.
            let exchanges =
                tokio::runtime::Handle::current().block_on(mesh.exchange_all(Some(&info.parties)));
            self.note_exchanges(&exchanges);
            let reached = Mesh::reached(&exchanges);
            // A quarantined party is in no signing set any honest node joins.
            let quarantined = self
                .governance
                .as_ref()
                .map(|g| g.quarantined())
                .transpose()
                .map_err(refuse)?
                .unwrap_or_default();
            let live: Vec<u16> =
                info.parties.iter().copied().filter(|p| !quarantined.contains(p)).collect();
            let need = Mesh::needed(&live, info.threshold);
            if reached.len() < need {
                return Err(refuse(Reason::MeshIncomplete {
                    reached: reached.into_iter().collect(),
                    need,
                }));
            }
        }
        let now = self.env.now();
        if let Some(gov) = &self.governance {
            let before = gov.head().map_err(refuse)?;
            gov.extend(&req.governance, now).map_err(refuse)?;
            if gov.head().map_err(refuse)? != before {
                self.enforce_quarantine();
            }
            gov.refuse_quarantined(signers).map_err(refuse)?;
            gov.refuse_retired(&info.key_id, Some(!req.path.is_empty())).map_err(refuse)?;
        }
        match &to_sign.decoded {
            check::Decoded::Message { kind, .. } => {
                if let Some(gov) = &self.governance {
                    gov.allows_message(*kind).map_err(refuse)?;
                }
            }
            check::Decoded::Tx { movement, intent, identity, consumes } => {
                let request_id = intent.request_id.to_string();
                let repeat =
                    self.journal.signed(&request_id, identity, consumes).map_err(refuse)?;
                let mut new_home = None;
                if let Some(gov) = &self.governance {
                    gov.signed_elsewhere(&request_id, identity, consumes).map_err(refuse)?;
                    if let Some(m) = gov.migration(&info.key_id).map_err(refuse)? {
                        new_home =
                            Some(check::address_of(&m.to_public_key, intent).map_err(refuse)?);
                    }
                }
                let ctx = CheckContext {
                    node: me,
                    key: info,
                    intent,
                    request: req,
                    movement,
                    identity,
                    consumes,
                    now,
                    repeat,
                    new_home,
                };
                for c in &self.checks {
                    c.check(&ctx).map_err(refuse)?;
                }
                let hash = intent.hash().map_err(|e| internal(me, e.to_string()))?.to_hex();
                self.journal
                    .claim(&request_id, &hash, identity, consumes, now.unix_ms())
                    .map_err(refuse)?;
                if self.governance.is_none() {
                    tracing::warn!(node = me, intent = %hash,
                        "INSECURE: signing with no governance (insecure_no_governance)");
                }
            }
        }
        Ok(to_sign)
    }

    pub(super) fn run_sign(
        self: &Arc<Self>,
        eid: ExecutionId,
        key_id: String,
        signers: Vec<u16>,
        presignature: Option<String>,
        req: SignRequest,
    ) -> Result<Reply, Refusal> {
        let me = self.cfg.id;
        let info = self.vault.key_info(&key_id).map_err(|e| from_vault(me, e))?;
        let checked = self.precheck(&info, &req, &signers);
        let to_sign = match checked {
            Ok(t) => t,
            Err(r) => {
                tracing::warn!(node = me, key = %key_id, code = r.reason.code(),
                    reason = %r.reason, "signing refused");
                let _ = self.audit(
                    "sign.refused",
                    &format!("key/{key_id}"),
                    serde_json::json!({
                    "eid": eid_hex(&eid), "signers": signers, "refusal": r,
                    "intent": intent_hash(&req.intent)}),
                );
                // Tell the other signers at once: the session cannot complete without us.
                for p in signers.iter().filter(|p| **p != me && self.peer(**p).is_some()) {
                    let reason = format!("refused: {}", r.reason);
                    self.send(*p, Frame::Abort { eid, from: me, reason });
                }
                self.close_session(eid);
                return Err(r);
            }
        };
        match info.scheme {
            Scheme::Ecdsa => {
                let id = presignature
                    .ok_or_else(|| bad_request(me, "ECDSA signing needs a presignature id"))?;
                let digest = <[u8; 32]>::try_from(to_sign.bytes.as_slice())
                    .map_err(|_| internal(me, "digest is not 32 bytes"))?;
                let set =
                    ecdsa::Parties::new(signers.iter().copied()).map_err(|e| from_mpc(me, e))?;
                self.others(set.numbers())?;
                // Issuing a partial signature needs the presignature and the key's public
                // half only: the share itself stays sealed.
                let master = check::master_public(&info).map_err(|m| internal(me, m))?;
                let claimed = self
                    .vault
                    .claim_presig(&key_id, set.numbers(), &id)
                    .map_err(|e| from_vault(me, e))?;
                let presig: ecdsa::Presignature = serde_json::from_slice(&claimed.plain)
                    .map_err(|e| internal(me, e.to_string()))?;
                let partial = ecdsa::partial_sign(presig, &master, &req.path, &digest)
                    .map_err(|e| from_mpc(me, e))?;
                // The presignature is gone, and the signing recorded, before the partial
                // signature leaves the node.
                claimed.consume().map_err(|e| from_vault(me, e))?;
                self.audit(
                    "signature.partial",
                    &format!("key/{key_id}"),
                    serde_json::json!({
                    "eid": eid_hex(&eid), "presignature": id, "signers": signers,
                    "path": req.path, "digest": hex::encode(digest),
                    "intent": intent_hash(&req.intent)}),
                )?;
                let public = master.derive(&req.path).map_err(|e| from_mpc(me, e))?;
                let partial =
                    serde_json::to_vec(&partial).map_err(|e| internal(me, e.to_string()))?;
                tracing::info!(node = me, key = %key_id, presignature = %id, "partial signature issued");
                Ok(Reply::Partial {
                    partial: hex::encode(partial),
                    public_key: hex::encode(public),
                    digest: hex::encode(digest),
                })
            }
            Scheme::FrostTaproot => self.frost_sign::<Secp256k1Taproot>(
                eid,
                &key_id,
                info.scheme,
                signers,
                &to_sign.bytes,
            ),
            Scheme::FrostEd25519 => {
                self.frost_sign::<Ed25519>(eid, &key_id, info.scheme, signers, &to_sign.bytes)
            }
        }
    }

    pub(super) fn frost_sign<C: frost_core::Ciphersuite>(
        self: &Arc<Self>,
        eid: ExecutionId,
        key_id: &str,
        scheme: Scheme,
        signers: Vec<u16>,
        message: &[u8],
    ) -> Result<Reply, Refusal> {
        let me = self.cfg.id;
        let (_, bytes) = self.vault.key_share(key_id).map_err(|e| from_vault(me, e))?;
        let share = frost::KeyShare::<C>::from_bytes(&bytes).map_err(|e| from_mpc(me, e))?;
        drop(bytes);
        let set: BTreeSet<u16> = signers.iter().copied().collect();
        let others = self.others(&set.iter().copied().collect::<Vec<_>>())?;
        let rx = self.open_session(eid)?;
        let started = frost::Signer::start(eid, &share, set, message, EnvRng(self.env.as_ref()));
        let (mut signer, first) = match started {
            Ok(s) => s,
            Err(e) => {
                self.close_session(eid);
                return Err(from_mpc(me, e));
            }
        };
        let stepper = frost_stepper(first, |e| signer.handle(e));
        let sig =
            self.drive(eid, Proto::FrostSign, &others, self.cfg.timeouts.sign_ms, &rx, stepper)?;
        let sig = sig.serialize().map_err(|e| internal(me, e.to_string()))?;
        self.audit(
            "signature.made",
            &format!("key/{key_id}"),
            serde_json::json!({
            "eid": eid_hex(&eid), "scheme": scheme, "message": hex::encode(message)}),
        )?;
        let public = public_key_bytes(scheme, share.group_key().map_err(|e| from_mpc(me, e))?);
        Ok(Reply::Signature {
            signature: hex::encode(sig),
            public_key: hex::encode(public),
            message: hex::encode(message),
        })
    }
}

/// The intent's hash (hex), or a note that it did not decode.
pub(super) fn intent_hash(intent_hex: &str) -> String {
    hex::decode(intent_hex)
        .ok()
        .and_then(|b| Intent::decode(&b).ok())
        .and_then(|i| i.hash().ok())
        .map(|h| h.to_hex())
        .unwrap_or_else(|| "undecodable".into())
}

/// The form users see: x-only (BIP-340, the P2TR output key) for Taproot; as serialized
/// otherwise.
pub(super) fn public_key_bytes(scheme: Scheme, key: Vec<u8>) -> Vec<u8> {
    match scheme {
        Scheme::FrostTaproot if key.len() == 33 => key.get(1..).map(<[u8]>::to_vec).unwrap_or(key),
        _ => key,
    }
}

/// An MPC message as it travels: the payload already encoded.
type Wire = Envelope<Vec<u8>>;
/// What one step of a session gives [`Node::drive`]: messages to send, and the output once
/// the protocol finished.
type Stepped<T> = Result<(Vec<Wire>, Option<T>), MpcError>;

/// Adapt a typed FROST state machine (its first outbox and its `handle`) to the byte
/// interface [`Node::drive`] runs.
pub(super) fn frost_stepper<P, T>(
    first: Vec<Envelope<P>>,
    mut handle: impl FnMut(Envelope<P>) -> Result<frost::Step<P, T>, MpcError>,
) -> impl FnMut(Option<Wire>) -> Stepped<T>
where
    P: serde::Serialize + serde::de::DeserializeOwned,
{
    let mut first = Some(first);
    move |m| {
        if let Some(out) = first.take() {
            return Ok((encode_all(out)?, None));
        }
        let Some(env) = m else { return Ok((vec![], None)) };
        match handle(decode_env::<P>(env)?)? {
            frost::Step::Wait => Ok((vec![], None)),
            frost::Step::Send(out) => Ok((encode_all(out)?, None)),
            frost::Step::Finished(t) => Ok((vec![], Some(t))),
        }
    }
}

pub(super) fn encode_all<P: serde::Serialize>(
    out: Vec<Envelope<P>>,
) -> Result<Vec<Envelope<Vec<u8>>>, MpcError> {
    out.into_iter()
        .map(|e| {
            let payload =
                serde_json::to_vec(&e.payload).map_err(|x| MpcError::Parameters(x.to_string()))?;
            Ok(Envelope { eid: e.eid, round: e.round, from: e.from, to: e.to, payload })
        })
        .collect()
}

pub(super) fn decode_env<P: serde::de::DeserializeOwned>(
    e: Envelope<Vec<u8>>,
) -> Result<Envelope<P>, MpcError> {
    let payload = serde_json::from_slice(&e.payload).map_err(|x| MpcError::Misbehaved {
        culprits: vec![e.from],
        reason: format!("undecodable message: {x}"),
    })?;
    Ok(Envelope { eid: e.eid, round: e.round, from: e.from, to: e.to, payload })
}

/// Nodes 1..=n, the set the first auxiliary info is made for.
fn contiguous(set: &[u16]) -> bool {
    set.iter().zip(1u16..).all(|(a, b)| *a == b)
}
