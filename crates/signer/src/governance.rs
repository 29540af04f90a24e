//! The node's own view of governance. It pins the genesis hash in its configuration, keeps
//! its own copy of the log (entries arrive with requests, from members' pushes and from
//! peers over the node mesh, and are appended only after the whole log replays), records
//! when it first saw each entry (time-locks run on its own clock from then), never goes
//! back to a shorter log, counts what the group signed (amounts leaving custody, and every
//! fee: its own records and those its peers sent it) for velocity limits, and before every
//! signature evaluates the policy in force against the request's signed approvals and the
//! fee the decoded transaction can pay. The orchestrator's word counts for nothing here.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use strongroom_core::Timestamp;
use strongroom_governance::gate::{decide, Subject};
use strongroom_governance::initiation::{CustomerKey, InitiationError};
use strongroom_governance::log::{first_seen, replay_seen, Entry, Genesis, SeenRecord, State};
use strongroom_governance::policy::{Block, Initiator, MessageKind, Tier, VelocityLimit};
use strongroom_units::Amount;

use crate::check::{own_address, CheckContext, PreSignCheck};
use crate::wire::{Head, Reason};

/// What a velocity record counts: the amount a movement takes out of custody, or its fee.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SpentKind {
    #[default]
    Amount,
    Fee,
}

/// One amount a node signed away, for velocity limits. Each node numbers its own records
/// (`origin`, `seq`) and sends them to its peers over the mesh; the same intent signed by
/// two nodes is two records with one `request_id`, counted once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Spent {
    /// The node that signed (0 in records written before nodes exchanged them: this node).
    #[serde(default)]
    pub origin: u16,
    #[serde(default)]
    pub seq: u64,
    #[serde(default)]
    pub request_id: Option<String>,
    #[serde(default)]
    pub kind: SpentKind,
    /// The digest of the transaction signed for the intent (hex), so that no node signs
    /// another one for it once any node signed one.
    #[serde(default)]
    pub digest: Option<String>,
    /// What that transaction consumes (hex; see `check::Decoded::Tx`): another transaction
    /// for the intent is a replacement only if it consumes the same. Absent in records
    /// written before fee bumps (then none is).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consumes: Option<String>,
    pub at_ms: i64,
    pub wallet: String,
    pub asset: String,
    pub amount: Amount,
}

/// Most records one peer may send in one exchange (the rest come in the next).
pub const MAX_RECORDS_PER_EXCHANGE: usize = 10_000;

/// A customer key and when this node first saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct KnownKey {
    key: CustomerKey,
    first_seen_ms: i64,
}

#[derive(Debug)]
struct Inner {
    entries: Vec<Entry>,
    seen: BTreeMap<u64, Timestamp>,
    state: State,
    /// Every record this node knows of: its own and its peers'.
    signed: Vec<Spent>,
    /// Per origin, the next sequence number expected (this node's own: the next to write).
    next: BTreeMap<u16, u64>,
    /// Customers' keys, by customer: once known, never forgotten.
    customer_keys: BTreeMap<String, Vec<KnownKey>>,
}

#[derive(Debug)]
pub struct NodeGovernance {
    node: u16,
    genesis: Genesis,
    pin: String,
    log_path: PathBuf,
    seen_path: PathBuf,
    velocity_path: PathBuf,
    customer_keys_path: PathBuf,
    inner: Mutex<Inner>,
}

fn read_lines<T: serde::de::DeserializeOwned>(path: &Path) -> anyhow::Result<Vec<T>> {
    if !path.exists() {
        return Ok(Vec::new());
    }
    std::fs::read_to_string(path)?
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| Ok(serde_json::from_str(l)?))
        .collect()
}

fn append_lines<T: Serialize>(path: &Path, items: &[T]) -> anyhow::Result<()> {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new().create(true).append(true).open(path)?;
    for i in items {
        writeln!(f, "{}", serde_json::to_string(i)?)?;
    }
    f.sync_all()?;
    Ok(())
}

impl NodeGovernance {
    /// Open with the genesis file and the pinned hash from the node's configuration; the
    /// stored log must replay, or the node does not start. An entry with no record of when
    /// it was first seen (a log from before such records) counts as seen now.
    pub fn open(
        node: u16,
        genesis_file: &Path,
        pin: &str,
        data_dir: &Path,
        now: Timestamp,
    ) -> anyhow::Result<Self> {
        let genesis: Genesis = serde_json::from_slice(&std::fs::read(genesis_file)?)?;
        let log_path = data_dir.join("governance.jsonl");
        let seen_path = data_dir.join("governance-seen.jsonl");
        let velocity_path = data_dir.join("velocity.jsonl");
        let customer_keys_path = data_dir.join("customer-keys.jsonl");
        let mut customer_keys: BTreeMap<String, Vec<KnownKey>> = BTreeMap::new();
        for k in read_lines::<KnownKey>(&customer_keys_path)? {
            customer_keys.entry(k.key.customer_id.clone()).or_default().push(k);
        }
        let entries: Vec<Entry> = read_lines(&log_path)?;
        let (seen, missing) = first_seen(&entries, read_lines(&seen_path)?, now);
        append_lines(&seen_path, &missing)?;
        let state = replay_seen(&genesis, pin, &entries, now, &|q| seen.get(&q).copied())?;
        let mut signed: Vec<Spent> = read_lines(&velocity_path)?;
        let mut next = BTreeMap::new();
        for r in &mut signed {
            if r.origin == 0 {
                r.origin = node;
            }
            let n = next.entry(r.origin).or_insert(0u64);
            *n = (*n).max(r.seq.saturating_add(1));
        }
        Ok(NodeGovernance {
            node,
            genesis,
            pin: pin.to_owned(),
            log_path,
            seen_path,
            velocity_path,
            customer_keys_path,
            inner: Mutex::new(Inner { entries, seen, state, signed, next, customer_keys }),
        })
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, Inner>, Reason> {
        self.inner
            .lock()
            .map_err(|_| Reason::Internal { detail: "governance state is poisoned".into() })
    }

    /// Take entries the request carries. Those the node has must be identical; the rest
    /// must extend its log so that the whole replays. A shorter log changes nothing: what
    /// the node once accepted (a freeze, a stricter policy) cannot be rolled back. New
    /// entries are recorded as first seen now.
    pub fn extend(&self, offered: &[Entry], now: Timestamp) -> Result<(), Reason> {
        let mut inner = self.lock()?;
        let seen = inner.seen.clone();
        let Some((new, state)) = strongroom_governance::log::extend(
            &self.genesis,
            &self.pin,
            &inner.entries,
            offered,
            now,
            &|q| seen.get(&q).copied(),
        )
        .map_err(|detail| Reason::GovernanceLog { detail })?
        else {
            return Ok(());
        };
        let stored = |e: anyhow::Error| Reason::Internal {
            detail: format!("cannot store the governance log: {e}"),
        };
        let first = SeenRecord::now(&new, now);
        append_lines(&self.seen_path, &first).map_err(stored)?;
        append_lines(&self.log_path, &new).map_err(stored)?;
        inner.seen.extend(first.iter().map(|s| (s.seq, now)));
        inner.entries.extend(new);
        inner.state = state;
        Ok(())
    }

    /// Take entries a peer sent: those after `after` entries of the peer's log (which must
    /// be this node's own first `after`). Returns whether the log grew.
    pub fn extend_after(
        &self,
        after: u64,
        entries: &[Entry],
        now: Timestamp,
    ) -> Result<bool, Reason> {
        let before = self.head()?.seq;
        let have = {
            let inner = self.lock()?;
            let after = usize::try_from(after).unwrap_or(usize::MAX);
            match inner.entries.get(..after) {
                Some(prefix) => prefix.to_vec(),
                None => {
                    return Err(Reason::GovernanceLog {
                        detail: format!(
                            "offered entries after {after}, but this node has {}",
                            inner.entries.len()
                        ),
                    })
                }
            }
        };
        let offered: Vec<Entry> = have.into_iter().chain(entries.iter().cloned()).collect();
        self.extend(&offered, now)?;
        Ok(self.head()?.seq > before)
    }

    /// The newest entry this node verified: how many it holds and the hash of the last (the
    /// genesis hash when none).
    pub fn head(&self) -> Result<Head, Reason> {
        let inner = self.lock()?;
        Ok(Head { seq: inner.state.seq, hash: inner.state.head.clone() })
    }

    /// The entries after the first `seq` (what a peer with `seq` entries lacks).
    pub fn entries_after(&self, seq: u64) -> Result<Vec<Entry>, Reason> {
        let inner = self.lock()?;
        let from = usize::try_from(seq).unwrap_or(usize::MAX);
        Ok(inner.entries.get(from..).map(<[Entry]>::to_vec).unwrap_or_default())
    }

    /// This node's own velocity records from sequence number `since` on (at most
    /// [`MAX_RECORDS_PER_EXCHANGE`]).
    pub fn own_records(&self, since: u64) -> Result<Vec<Spent>, Reason> {
        let inner = self.lock()?;
        Ok(inner
            .signed
            .iter()
            .filter(|r| r.origin == self.node && r.seq >= since)
            .take(MAX_RECORDS_PER_EXCHANGE)
            .cloned()
            .collect())
    }

    /// Whether another node (as its records say) signed a transaction for intent
    /// `request_id` that `identity` may not join: one consuming something else than
    /// `consumes` (then both could confirm and pay the intent twice), or so many that this one
    /// would pass the replacement bound. A node's own journal stops that among the sets it
    /// belongs to; this stops it among sets that share no node (groups where the threshold is
    /// at most half the parties).
    pub fn signed_elsewhere(
        &self,
        request_id: &str,
        identity: &[u8],
        consumes: &[u8],
    ) -> Result<(), Reason> {
        let inner = self.lock()?;
        let (offered, consumed) = (hex::encode(identity), hex::encode(consumes));
        let mut versions: Vec<&str> = Vec::new();
        for r in inner.signed.iter().filter(|r| r.request_id.as_deref() == Some(request_id)) {
            let Some(d) = r.digest.as_deref() else { continue };
            if d == offered {
                continue;
            }
            if r.consumes.as_deref() != Some(consumed.as_str()) {
                return Err(Reason::AlreadySigned {
                    request_id: request_id.to_owned(),
                    signed: d.to_owned(),
                    offered,
                });
            }
            if !versions.contains(&d) {
                versions.push(d);
            }
        }
        if versions.len() >= crate::journal::MAX_VERSIONS {
            return Err(Reason::Replacements {
                request_id: request_id.to_owned(),
                signed: versions.len(),
                max: crate::journal::MAX_VERSIONS,
            });
        }
        Ok(())
    }

    /// Record customer keys this node has not seen before (first seen `now`).
    pub fn learn_customer_keys(&self, keys: &[CustomerKey], now: Timestamp) -> Result<(), Reason> {
        let mut inner = self.lock()?;
        learn(&mut inner, &self.customer_keys_path, keys, now)
    }

    /// Every customer key this node knows (for its peers).
    pub fn customer_keys(&self) -> Result<Vec<CustomerKey>, Reason> {
        let inner = self.lock()?;
        Ok(inner.customer_keys.values().flatten().map(|k| k.key.clone()).collect())
    }

    /// The next sequence number of `peer`'s records this node lacks.
    pub fn cursor(&self, peer: u16) -> Result<u64, Reason> {
        Ok(self.lock()?.next.get(&peer).copied().unwrap_or(0))
    }

    /// Keep the records `peer` sent about its own signatures (those it numbered in order
    /// from where this node's copy ends; anything else is dropped). A peer can only make
    /// this node stricter: records count against limits, never for them. Returns how many
    /// were new.
    pub fn merge(&self, peer: u16, records: Vec<Spent>) -> Result<usize, Reason> {
        let mut inner = self.lock()?;
        let mut next = inner.next.get(&peer).copied().unwrap_or(0);
        let mut fresh = Vec::new();
        for r in records {
            if r.origin != peer || r.seq != next {
                continue;
            }
            next = next.saturating_add(1);
            fresh.push(r);
        }
        if fresh.is_empty() {
            return Ok(0);
        }
        append_lines(&self.velocity_path, &fresh).map_err(|e| Reason::Internal {
            detail: format!("cannot record a peer's velocity records: {e}"),
        })?;
        inner.next.insert(peer, next);
        let n = fresh.len();
        inner.signed.extend(fresh);
        Ok(n)
    }

    /// Refuse a session with any of `parties` quarantined by governance.
    pub fn refuse_quarantined(&self, parties: &[u16]) -> Result<(), Reason> {
        match self.lock()?.state.quarantined_among(parties) {
            Some((nodes, seq)) => Err(Reason::Quarantined { nodes, seq }),
            None => Ok(()),
        }
    }

    /// Refuse a key governance retired. Its own address signs nothing more; a retired key
    /// that was migrated keeps one use: its deposit addresses (`child`), which customers
    /// may still pay, sweep into the successor — the migration check lets them pay nothing
    /// else. Presignatures (`child` unknown yet) are made only for such a key.
    pub fn refuse_retired(&self, key_id: &str, child: Option<bool>) -> Result<(), Reason> {
        let inner = self.lock()?;
        let Some(seq) = inner.state.retired.get(key_id) else { return Ok(()) };
        let migrated = inner.state.migrations.contains_key(key_id);
        match child {
            Some(true) | None if migrated => Ok(()),
            _ => Err(Reason::KeyRetired { key: key_id.to_owned(), seq: *seq }),
        }
    }

    /// Where governance moves this key's funds, if it does.
    pub fn migration(
        &self,
        key_id: &str,
    ) -> Result<Option<strongroom_governance::log::KeyMigration>, Reason> {
        Ok(self.lock()?.state.migrations.get(key_id).cloned())
    }

    /// The signer nodes governance took out of the group.
    pub fn quarantined(&self) -> Result<Vec<u16>, Reason> {
        Ok(self.lock()?.state.quarantined.keys().copied().collect())
    }

    pub fn state(&self) -> Result<State, Reason> {
        Ok(self.lock()?.state.clone())
    }

    /// Whether the policy in force lets the nodes sign messages of `kind`.
    pub fn allows_message(&self, kind: MessageKind) -> Result<(), Reason> {
        let inner = self.lock()?;
        let (rule, version) =
            ("messages".to_owned(), inner.state.policy.as_ref().map_or(0, |p| p.version));
        match &inner.state.policy {
            Some(p) if p.messages.contains(&kind) => Ok(()),
            Some(_) => Err(Reason::Blocked {
                rule,
                version,
                block: Block::MessageNotAllowed { message: kind },
            }),
            None => Err(Reason::Blocked { rule: "policy".into(), version, block: Block::NoPolicy }),
        }
    }

    /// How much of `limit`'s asset the group signed away within its period before `now`, as
    /// far as this node knows, leaving out the transaction being decided (`current` intent,
    /// transaction `identity`: the policy adds its amount and fee itself). Records of one
    /// intent from several nodes count once: its amount once, and the fee of each of its
    /// transactions (a fee bump's fee counts besides the one it replaces: either may be the
    /// one that confirms).
    fn moved(
        signed: &[Spent],
        limit: &VelocityLimit,
        now: Timestamp,
        current: &str,
        identity: &str,
    ) -> Amount {
        let mut by_intent: BTreeMap<(&str, SpentKind, &str), &Spent> = BTreeMap::new();
        let mut loose = Vec::new();
        for s in signed {
            let version = match s.kind {
                SpentKind::Fee => s.digest.as_deref().unwrap_or(""),
                SpentKind::Amount => "",
            };
            match s.request_id.as_deref() {
                Some(id)
                    if id == current && (s.kind == SpentKind::Amount || version == identity) => {}
                Some(id) => {
                    let e = by_intent.entry((id, s.kind, version)).or_insert(s);
                    if s.amount > e.amount {
                        *e = s;
                    }
                }
                None => loose.push(s),
            }
        }
        limit.moved(
            now,
            by_intent
                .into_values()
                .chain(loose)
                .map(|s| (s.at_ms, s.wallet.as_str(), s.asset.as_str(), s.amount)),
        )
    }
}

fn learn(
    inner: &mut Inner,
    path: &Path,
    keys: &[CustomerKey],
    now: Timestamp,
) -> Result<(), Reason> {
    let mut fresh = Vec::new();
    for k in keys {
        let known = inner.customer_keys.get(&k.customer_id);
        let seen = known.is_some_and(|v| v.iter().any(|x| x.key == *k))
            || fresh.iter().any(|x: &KnownKey| x.key == *k);
        if !seen {
            fresh.push(KnownKey { key: k.clone(), first_seen_ms: now.unix_ms() });
        }
    }
    if fresh.is_empty() {
        return Ok(());
    }
    append_lines(path, &fresh)
        .map_err(|e| Reason::Internal { detail: format!("cannot record customer keys: {e}") })?;
    for k in fresh {
        inner.customer_keys.entry(k.key.customer_id.clone()).or_default().push(k);
    }
    Ok(())
}

/// The policy, whitelist, fee and freeze check, for nodes configured with a governance
/// genesis.
#[derive(Debug)]
pub struct GovernanceCheck {
    pub gov: Arc<NodeGovernance>,
}

impl PreSignCheck for GovernanceCheck {
    fn name(&self) -> &'static str {
        "governance"
    }

    fn check(&self, ctx: &CheckContext<'_>) -> Result<(), Reason> {
        let mut inner = self.gov.lock()?;
        let intent = ctx.intent;
        let (asset, wallet) = (intent.asset.symbol.as_str(), intent.source_wallet.as_str());
        let req = &ctx.request;
        let own = own_address(ctx.key, intent)?;
        let fee = ctx.movement.max_fee;
        // A key governance moves to another key pays only that key's own address, and that
        // movement stays in custody.
        let home = match inner.state.migrations.get(&ctx.key.key_id) {
            Some(m) => {
                let home = crate::check::address_of(&m.to_public_key, intent)?;
                if ctx.movement.destination != home {
                    return Err(Reason::Blocked {
                        rule: "migration".into(),
                        version: inner.state.policy.as_ref().map_or(0, |p| p.version),
                        block: Block::KeyMigrating {
                            key: ctx.key.key_id.clone(),
                            to: m.to.clone(),
                            address: home.as_str().to_owned(),
                            seq: m.seq,
                        },
                    });
                }
                home
            }
            None => own,
        };
        learn(&mut inner, &self.gov.customer_keys_path, &req.customer_keys, ctx.now)?;
        // Who asked, from the initiator's own signature and the log; never the request's word.
        let (initiator, customer_id) = match &req.initiation {
            Some(init) => {
                let member = init
                    .verify(&inner.state, intent)
                    .map_err(|error| Reason::Initiation { error })?;
                let signed = init.requested.customer_id.as_deref();
                if req.customer_id.is_some() && req.customer_id.as_deref() != signed {
                    return Err(Reason::Initiation {
                        error: InitiationError::Mismatch {
                            initiator: init.initiator.clone(),
                            field: "customer_id".into(),
                            requested: signed.unwrap_or("none").to_owned(),
                            intent: req.customer_id.clone().unwrap_or_default(),
                        },
                    });
                }
                (Initiator::Attested { member: &member.id, roles: &member.roles }, signed)
            }
            None => (
                Initiator::Unknown,
                req.customer_approval
                    .as_ref()
                    .and_then(|a| a.requested.customer_id.as_deref())
                    .or(req.customer_id.as_deref()),
            ),
        };
        // A customer with a key this node has held past the time-lock signs their own
        // withdrawals: whoever else asked, the customer's signature must be there too. A
        // valid one is also who asked, when no member did.
        let delay = inner.state.whitelist_delay_ms;
        let usable: Vec<strongroom_governance::webauthn::PasskeySpec> = customer_id
            .and_then(|c| inner.customer_keys.get(c))
            .map(|keys| {
                keys.iter()
                    .filter(|k| k.first_seen_ms.saturating_add(delay) <= ctx.now.unix_ms())
                    .map(|k| k.key.passkey.clone())
                    .collect()
            })
            .unwrap_or_default();
        // Before any of the customer's keys is usable here, their signature proves nothing
        // this node can check, and is not needed.
        let initiator = match (customer_id, &req.customer_approval) {
            (Some(_), Some(_)) if usable.is_empty() => initiator,
            (Some(c), Some(approval)) => {
                approval
                    .verify_customer(c, &usable, intent)
                    .map_err(|error| Reason::Initiation { error })?;
                match initiator {
                    Initiator::Unknown => Initiator::Attested { member: c, roles: &[] },
                    member => member,
                }
            }
            (Some(c), None) if !usable.is_empty() => {
                return Err(Reason::Blocked {
                    rule: "customer".into(),
                    version: inner.state.policy.as_ref().map_or(0, |p| p.version),
                    block: Block::CustomerNotSigned { customer_id: c.to_owned() },
                });
            }
            (None, Some(approval)) => {
                return Err(Reason::Initiation {
                    error: InitiationError::Mismatch {
                        initiator: approval.initiator.clone(),
                        field: "customer_id".into(),
                        requested: approval.requested.customer_id.clone().unwrap_or_default(),
                        intent: "none".into(),
                    },
                });
            }
            _ => initiator,
        };
        let subject = Subject {
            intent,
            tier: Tier::Hot,
            own_destination: ctx.movement.destination == home,
            customer_id,
            initiator,
            fee: Some(fee),
        };
        let current = intent.request_id.to_string();
        let signed = &inner.signed;
        let identity = hex::encode(ctx.identity);
        let moved =
            |l: &VelocityLimit| NodeGovernance::moved(signed, l, ctx.now, &current, &identity);
        let d = decide(&inner.state, &subject, &req.approvals, &moved, ctx.now);
        if let Some(refused) = Reason::from_decision(&d) {
            return Err(refused);
        }
        // Counted before the signature leaves: a refused session afterwards only makes the
        // node stricter, never looser. What stays in custody (sweeps home, whitelisted
        // internal transfers) counts only its fee.
        let internal = strongroom_governance::gate::destination(&inner.state, &subject, ctx.now)
            == Ok(strongroom_governance::policy::Destination::Internal);
        if ctx.repeat {
            return Ok(());
        }
        let me = self.gov.node;
        let mut seq = inner.next.get(&me).copied().unwrap_or(0);
        let mut record = |kind: SpentKind, asset: &str, amount: Amount| {
            let r = Spent {
                origin: me,
                seq,
                request_id: Some(current.clone()),
                kind,
                digest: Some(hex::encode(ctx.identity)),
                consumes: Some(hex::encode(ctx.consumes)),
                at_ms: ctx.now.unix_ms(),
                wallet: wallet.to_owned(),
                asset: asset.to_owned(),
                amount,
            };
            seq += 1;
            r
        };
        let mut spent = Vec::new();
        if !internal {
            spent.push(record(SpentKind::Amount, asset, intent.amount));
        }
        // The decision allowed a fee, so the policy names its ceiling and fee asset.
        if let Some(c) =
            inner.state.policy.as_ref().and_then(|p| p.fee_ceiling(intent.chain.as_str(), asset))
        {
            spent.push(record(SpentKind::Fee, &c.fee_asset, fee));
        }
        append_lines(&self.gov.velocity_path, &spent).map_err(|e| Reason::Internal {
            detail: format!("cannot record for velocity limits: {e}"),
        })?;
        inner.next.insert(me, seq);
        inner.signed.extend(spent);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use ed25519_dalek::SigningKey;
    use strongroom_chain::TxCodec;
    use strongroom_chain_ethereum::{EthCodec, EthParams};
    use strongroom_core::{Intent, IntentAsset, WalletId};
    use strongroom_governance::approval::Approval;
    use strongroom_governance::initiation::{Initiation, Requested};
    use strongroom_governance::log::{replay, Change, FreezeScope, MemberSpec, WhitelistScope};
    use strongroom_governance::policy::Policy;
    use strongroom_units::{Address, AssetSymbol, ChainId};

    use strongroom_governance::Role;

    use super::*;
    use crate::check::{self, TxMatchesIntent};
    use crate::wire::{KeyInfo, Scheme, SignRequest, TxFormat};

    const ETH: u128 = 1_000_000_000_000_000_000;
    const T0: i64 = 1_800_000_000_000;
    const DEST: &str = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed";
    const COLD: &str = "0xdbF03B407c01E7cD3CBea99509d93f8DDDC8C6FB";
    const POLICY: &str = r#"
version = 1
[[rules]]
name = "small"
when = { max_amount = "1000000000000000000" }
action = { kind = "allow" }
[[rules]]
name = "large"
action = { kind = "approvals", count = 2, roles = ["approver"] }
[[fees]]
chain = "eip155:1"
fee_asset = "ETH"
max_fee = "100000000000000000"
[[velocity]]
name = "daily"
asset = "ETH"
period_secs = 86400
max_amount = "10000000000000000000"
"#;

    fn key(n: u8) -> SigningKey {
        SigningKey::from_bytes(&[n; 32])
    }

    fn ids() -> [(&'static str, u8, &'static [Role]); 6] {
        [
            ("amy", 6, &[Role::Approver]),
            ("ada", 1, &[Role::Admin]),
            ("bob", 2, &[Role::Admin]),
            ("sec", 3, &[Role::SecurityOfficer]),
            ("ann", 4, &[Role::Approver]),
            // An operator who is also an approver.
            ("ops", 5, &[Role::Approver, Role::Operator]),
        ]
    }

    fn genesis() -> Genesis {
        Genesis {
            members: ids()
                .iter()
                .map(|(id, n, r)| MemberSpec {
                    id: (*id).into(),
                    public_key: hex::encode(key(*n).verifying_key().to_bytes()),
                    roles: r.to_vec(),
                    passkey: None,
                })
                .collect(),
            quorum: 2,
            whitelist_delay_ms: 86_400_000,
            created_at: Timestamp::from_unix_ms(T0),
            assets: vec![strongroom_governance::log::AssetSpec {
                chain: "eip155:1".into(),
                symbol: "ETH".into(),
                decimals: 18,
                contract: None,
            }],
        }
    }

    fn signer_of(id: &str) -> SigningKey {
        key(ids().iter().find(|(i, _, _)| *i == id).map(|(_, n, _)| *n).unwrap())
    }

    /// `changes` appended to `log`, each signed by the named members.
    fn grow(log: &mut Vec<Entry>, changes: Vec<(Change, &[&str])>) {
        let g = genesis();
        let pin = hex::encode(g.hash().unwrap());
        for (c, who) in changes {
            let state = replay(&g, &pin, log, Timestamp::from_unix_ms(i64::MAX)).unwrap();
            let mut e =
                state.propose(c, Timestamp::from_unix_ms(T0 + 1_000 * (log.len() as i64 + 1)));
            for w in who {
                e.sign(w, &signer_of(w)).unwrap();
            }
            log.push(e);
        }
    }

    struct Node {
        gov: Arc<NodeGovernance>,
        dir: tempfile::TempDir,
        key: KeyInfo,
    }

    fn node() -> Node {
        let dir = tempfile::tempdir().unwrap();
        let g = genesis();
        let path = dir.path().join("genesis.json");
        std::fs::write(&path, serde_json::to_vec(&g).unwrap()).unwrap();
        let pin = hex::encode(g.hash().unwrap());
        let gov =
            NodeGovernance::open(1, &path, &pin, dir.path(), Timestamp::from_unix_ms(T0)).unwrap();
        let pk = k256::ecdsa::SigningKey::from_slice(&[9; 32]).unwrap();
        let key = KeyInfo {
            key_id: "hot-eth-1".into(),
            scheme: Scheme::Ecdsa,
            threshold: 2,
            parties: vec![1, 2, 3],
            public_key: hex::encode(pk.verifying_key().to_encoded_point(true).as_bytes()),
            chain_code: None,
        };
        Node { gov: Arc::new(gov), dir, key }
    }

    fn intent(to: &str, amount: u128, n: u128) -> Intent {
        let chain = ChainId::parse("eip155:1").unwrap();
        Intent {
            destination: Address::parse(&chain, to).unwrap(),
            asset: IntentAsset {
                symbol: AssetSymbol::parse("ETH").unwrap(),
                decimals: 18,
                contract: None,
            },
            chain,
            source_wallet: WalletId::parse("hot-eth-1").unwrap(),
            amount: strongroom_units::Amount::from_base_units(amount).unwrap(),
            fee_cap: strongroom_units::Amount::from_base_units(10u128.pow(16)).unwrap(),
            expires_at: Timestamp::from_unix_ms(T0 + 10 * 86_400_000),
            request_id: uuid::Uuid::from_u128(n),
        }
    }

    /// The node's decision on `intent` with `approvals`, offered `log`, at `now`.
    fn decide(
        n: &Node,
        log: &[Entry],
        i: &Intent,
        approvals: Vec<Approval>,
        now: i64,
    ) -> Result<(), Reason> {
        let p = EthParams {
            nonce: 0,
            gas_limit: 21_000,
            max_fee_per_gas: 10u128.pow(9),
            max_priority_fee_per_gas: 1,
        };
        let tx = EthCodec::new(i.chain.clone()).unwrap().build(i, &p).unwrap();
        let request = SignRequest {
            intent: hex::encode(i.encode().unwrap()),
            format: TxFormat::Eip1559,
            tx: hex::encode(tx),
            approvals,
            initiation: Some(Box::new(
                Initiation::sign("ops", &signer_of("ops"), Requested::of(i, None)).unwrap(),
            )),
            governance: log.to_vec(),
            ..Default::default()
        };
        let now = Timestamp::from_unix_ms(now);
        n.gov.extend(&request.governance, now)?;
        let decoded = check::decode(&n.key, &request)?;
        let check::Decoded::Tx { movement, identity, consumes, .. } = &decoded.decoded else {
            panic!("{decoded:?}")
        };
        let ctx = CheckContext {
            node: 1,
            key: &n.key,
            intent: i,
            request: &request,
            movement,
            identity,
            consumes,
            now,
            repeat: false,
            new_home: None,
        };
        TxMatchesIntent.check(&ctx)?;
        GovernanceCheck { gov: n.gov.clone() }.check(&ctx)
    }

    fn approve(who: &str, i: &Intent) -> Approval {
        Approval::sign(
            who,
            &signer_of(who),
            &i.hash().unwrap(),
            1,
            Timestamp::from_unix_ms(T0 + 86_400_000),
        )
    }

    fn with_policy() -> Vec<Entry> {
        let mut log = Vec::new();
        grow(
            &mut log,
            vec![(
                Change::SetPolicy { policy: Policy::from_toml(POLICY).unwrap() },
                &["ada", "bob"],
            )],
        );
        log
    }

    #[test]
    fn nothing_is_signed_without_a_policy_and_large_amounts_need_two_other_approvers() {
        let n = node();
        let now = T0 + 60_000;
        let small = intent(DEST, ETH / 2, 1);
        assert!(matches!(
            decide(&n, &[], &small, vec![], now),
            Err(Reason::Blocked { block: Block::NoPolicy, .. })
        ));
        let log = with_policy();
        decide(&n, &log, &small, vec![], now).unwrap();

        let big = intent(DEST, 5 * ETH, 2);
        let e = decide(&n, &log, &big, vec![], now).unwrap_err();
        assert!(
            matches!(&e, Reason::Approvals { rule, have: 0, need: 2, .. } if rule == "large"),
            "{e}"
        );
        // The initiator's own approval and a second one by the same person do not count.
        let e = decide(
            &n,
            &log,
            &big,
            vec![approve("ops", &big), approve("ann", &big), approve("ann", &big)],
            now,
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("1 of 2") && e.contains("initiator") && e.contains("already counted"),
            "{e}"
        );
        // An approval made for another request does not count either.
        let other = intent(DEST, 5 * ETH, 3);
        let e = decide(&n, &log, &big, vec![approve("ann", &big), approve("amy", &other)], now)
            .unwrap_err()
            .to_string();
        assert!(e.contains("not for this intent"), "{e}");
        // Two other approvers: signed.
        decide(&n, &log, &big, vec![approve("ann", &big), approve("amy", &big)], now).unwrap();
    }

    #[test]
    fn a_freeze_holds_and_cannot_be_rolled_back_by_a_shorter_log() {
        let n = node();
        let mut log = with_policy();
        grow(
            &mut log,
            vec![(Change::Freeze { scope: FreezeScope::Global, reason: None }, &["sec"])],
        );
        let i = intent(DEST, ETH / 2, 1);
        let frozen = |r: Result<(), Reason>| {
            matches!(r, Err(Reason::Blocked { block: Block::Frozen { .. }, .. }))
        };
        assert!(frozen(decide(&n, &log, &i, vec![], T0 + 60_000)));
        // A compromised orchestrator sends the log without the freeze: the node keeps its own.
        assert!(frozen(decide(&n, &log[..1], &i, vec![], T0 + 60_000)));
        // After a restart too (the log is on the node's disk).
        let reopened = NodeGovernance::open(
            1,
            &n.dir.path().join("genesis.json"),
            &hex::encode(genesis().hash().unwrap()),
            n.dir.path(),
            Timestamp::from_unix_ms(T0 + 60_000),
        )
        .unwrap();
        let now = Timestamp::from_unix_ms(T0 + 60_000);
        assert!(reopened.state().unwrap().frozen("ETH", "hot-eth-1", now).is_some());
    }

    #[test]
    fn a_tampered_log_is_refused_and_stored_nowhere() {
        let n = node();
        let mut log = with_policy();
        if let Change::SetPolicy { policy } = &mut log[0].change {
            policy.rules[0].when.max_amount =
                Some(strongroom_units::Amount::from_base_units(1_000 * ETH).unwrap());
        }
        let e = decide(&n, &log, &intent(DEST, 5 * ETH, 1), vec![], T0 + 60_000).unwrap_err();
        assert!(matches!(e, Reason::GovernanceLog { .. }), "{e}");
        assert!(n.gov.state().unwrap().policy.is_none());
        assert!(!n.dir.path().join("governance.jsonl").exists());
    }

    #[test]
    fn a_whitelisted_address_waits_out_its_time_lock() {
        let n = node();
        let mut log = with_policy();
        let scope = WhitelistScope::Internal { chain: "eip155:1".into() };
        grow(
            &mut log,
            vec![(
                Change::WhitelistAdd { scope, address: COLD.into(), label: "cold".into() },
                &["ada", "bob"],
            )],
        );
        let i = intent(COLD, ETH / 2, 1);
        let e = decide(&n, &log, &i, vec![], T0 + 60_000).unwrap_err();
        assert!(matches!(e, Reason::Blocked { block: Block::TimeLocked { .. }, .. }), "{e}");
        decide(&n, &log, &i, vec![], T0 + 2 * 86_400_000).unwrap();
    }

    #[test]
    fn the_node_counts_what_it_signed_against_velocity_limits() {
        let n = node();
        let log = with_policy();
        // Nine ETH and nine fees: under the 10 ETH daily limit. One more ETH with its fee
        // is over it.
        for k in 0..9 {
            decide(&n, &log, &intent(DEST, ETH, k), vec![], T0 + 60_000 + k as i64).unwrap();
        }
        let e = decide(&n, &log, &intent(DEST, ETH, 99), vec![], T0 + 120_000).unwrap_err();
        assert!(
            matches!(&e, Reason::Blocked { block: Block::Velocity { limit, .. }, .. } if limit == "daily"),
            "{e}"
        );
        // A day later the window has moved on.
        decide(&n, &log, &intent(DEST, ETH, 100), vec![], T0 + 60_000 + 86_400_001 + 10).unwrap();
    }

    /// A peer's records as the mesh delivers them: `(request id, amount)` from seq 0 on.
    fn from_peer(peer: u16, items: &[(u128, u128)]) -> Vec<Spent> {
        items
            .iter()
            .zip(0u64..)
            .map(|((id, amount), seq)| Spent {
                origin: peer,
                seq,
                request_id: Some(uuid::Uuid::from_u128(*id).to_string()),
                kind: SpentKind::Amount,
                digest: Some(hex::encode([*id as u8; 32])),
                consumes: Some(hex::encode([*id as u8; 8])),
                at_ms: T0 + 60_000,
                wallet: "hot-eth-1".into(),
                asset: "ETH".into(),
                amount: Amount::from_base_units(*amount).unwrap(),
            })
            .collect()
    }

    #[test]
    fn what_peers_signed_counts_once_per_intent_and_only_as_they_numbered_it() {
        let n = node();
        let log = with_policy();
        for k in 0..4 {
            decide(&n, &log, &intent(DEST, ETH, k), vec![], T0 + 60_000 + k as i64).unwrap();
        }
        assert_eq!(n.gov.own_records(0).unwrap().len(), 8, "an amount and a fee each");
        assert_eq!(n.gov.own_records(6).unwrap().len(), 2);
        // Peer 2 co-signed intents 0 and 1 with this node and signed five others.
        let peer = from_peer(
            2,
            &[(0, ETH), (1, ETH), (10, ETH), (11, ETH), (12, ETH), (13, ETH), (14, ETH)],
        );
        // Out of order, or claiming another node's records: dropped.
        assert_eq!(n.gov.merge(2, peer[1..].to_vec()).unwrap(), 0);
        assert_eq!(n.gov.merge(3, peer.clone()).unwrap(), 0);
        assert_eq!(n.gov.cursor(2).unwrap(), 0);
        assert_eq!(n.gov.merge(2, peer.clone()).unwrap(), 7);
        assert_eq!(n.gov.merge(2, peer).unwrap(), 0, "nothing new the second time");
        assert_eq!(n.gov.cursor(2).unwrap(), 7);
        // 9 distinct ETH and the fees: 0.9 more fits under 10 ETH (it would not if the two
        // shared intents counted twice); 0.2 after it does not.
        decide(&n, &log, &intent(DEST, 9 * ETH / 10, 20), vec![], T0 + 70_000).unwrap();
        let e = decide(&n, &log, &intent(DEST, ETH / 5, 21), vec![], T0 + 70_001).unwrap_err();
        assert!(matches!(e, Reason::Blocked { block: Block::Velocity { .. }, .. }), "{e}");
        // The records survive a restart, peers' included.
        let reopened = NodeGovernance::open(
            1,
            &n.dir.path().join("genesis.json"),
            &hex::encode(genesis().hash().unwrap()),
            n.dir.path(),
            Timestamp::from_unix_ms(T0 + 80_000),
        )
        .unwrap();
        assert_eq!(reopened.cursor(2).unwrap(), 7);
        assert_eq!(reopened.cursor(1).unwrap(), 10);
        // Another node signed intent 10 as one transaction: no node signs another for it
        // that consumes something else; a fee bump on the same coins (or nonce) it may.
        let id = uuid::Uuid::from_u128(10).to_string();
        reopened.signed_elsewhere(&id, &[10; 32], &[10; 8]).unwrap();
        let e = reopened.signed_elsewhere(&id, &[11; 32], &[11; 8]).unwrap_err();
        assert!(matches!(e, Reason::AlreadySigned { .. }), "{e}");
        reopened.signed_elsewhere(&id, &[11; 32], &[10; 8]).unwrap();
    }

    /// A fee bump's fee counts besides the fee of the transaction it replaces (either may
    /// confirm); the intent's amount counts once; past the bound, the mesh's records refuse.
    #[test]
    fn replacements_count_every_fee_once_and_the_amount_once() {
        let n = node();
        let id = uuid::Uuid::from_u128(30).to_string();
        let spent = |seq: u64, kind: SpentKind, digest: u8, amount: u128| Spent {
            origin: 2,
            seq,
            request_id: Some(id.clone()),
            kind,
            digest: Some(hex::encode([digest; 32])),
            consumes: Some(hex::encode([30u8; 8])),
            at_ms: T0 + 60_000,
            wallet: "hot-eth-1".into(),
            asset: "ETH".into(),
            amount: Amount::from_base_units(amount).unwrap(),
        };
        // Peer 2 signed intent 30 (9 ETH) three times, fees 0.1 ETH each.
        let records = vec![
            spent(0, SpentKind::Amount, 1, 9 * ETH),
            spent(1, SpentKind::Fee, 1, ETH / 10),
            spent(2, SpentKind::Amount, 2, 9 * ETH),
            spent(3, SpentKind::Fee, 2, ETH / 10),
            spent(4, SpentKind::Amount, 3, 9 * ETH),
            spent(5, SpentKind::Fee, 3, ETH / 10),
        ];
        assert_eq!(n.gov.merge(2, records.clone()).unwrap(), 6);
        let inner = n.gov.lock().unwrap();
        let limit = strongroom_governance::policy::VelocityLimit {
            name: "daily".into(),
            asset: "ETH".into(),
            wallet: None,
            period_secs: 86_400,
            max_amount: Amount::from_base_units(100 * ETH).unwrap(),
        };
        let now = Timestamp::from_unix_ms(T0 + 70_000);
        let moved = |current: &str, identity: &str| {
            NodeGovernance::moved(&inner.signed, &limit, now, current, identity).base_units()
        };
        assert_eq!(moved("other", ""), 9 * ETH + 3 * ETH / 10, "the amount once, every fee");
        // Deciding a fourth version of intent 30: its own amount and fee are the policy's
        // to add; the three fees before it still count.
        assert_eq!(moved(&id, &hex::encode([4u8; 32])), 3 * ETH / 10);
        // Deciding version 2 again: the other two fees count.
        assert_eq!(moved(&id, &hex::encode([2u8; 32])), 2 * ETH / 10);
        drop(inner);
        // Three versions known; two more may come, the sixth is refused.
        n.gov.signed_elsewhere(&id, &[4; 32], &[30; 8]).unwrap();
        let more =
            vec![spent(6, SpentKind::Fee, 4, ETH / 10), spent(7, SpentKind::Fee, 5, ETH / 10)];
        assert_eq!(n.gov.merge(2, more).unwrap(), 2);
        n.gov.signed_elsewhere(&id, &[5; 32], &[30; 8]).unwrap();
        let e = n.gov.signed_elsewhere(&id, &[6; 32], &[30; 8]).unwrap_err();
        assert!(matches!(e, Reason::Replacements { signed: 5, max: 5, .. }), "{e}");
    }
}
