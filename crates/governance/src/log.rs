//! The governance log: a pinned genesis (the first members and the quorum), then entries,
//! each linked to the one before by hash and signed by the members the change needs.
//! [`replay`] checks all of it and returns the state in force; nothing else is trusted.
//!
//! Who must sign:
//! - a freeze: one security officer or admin (it takes effect at once); a time-boxed one
//!   cannot be lifted before its end, even by the quorum;
//! - quarantining a signer node: one security officer or admin (at once, for good);
//! - removing a whitelist entry or an asset, cancelling a pending whitelist entry, or
//!   retiring a key: one admin (at once);
//! - everything else (policy, members, quorum, unfreeze, adding a whitelist entry or an
//!   asset, a ledger credit without chain evidence, moving a key's funds to another key): a
//!   quorum of distinct admins. A new
//!   whitelist entry or asset becomes usable only after the genesis's delay (the time-lock);
//!   until then a whitelist entry can be cancelled.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use strongroom_core::Timestamp;

pub use crate::member::{Member, MemberSpec};
pub use crate::policy::FreezeScope;
use crate::policy::{Policy, PolicyError};
use crate::{tagged_hash, Role};

pub const GENESIS_TAG: &str = "strongroom/governance/genesis/v1";
pub const ENTRY_TAG: &str = "strongroom/governance/entry/v1";

/// One asset the signers may move: which contract on which chain carries which symbol and
/// decimals. Signers resolve what a transaction moves from its decoded contract through this
/// registry, never from the name a request gives it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AssetSpec {
    /// CAIP-2 chain id, e.g. `eip155:1`.
    pub chain: String,
    pub symbol: String,
    pub decimals: u8,
    /// The token contract; absent for the chain's native coin.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contract: Option<String>,
}

impl AssetSpec {
    /// Whether this entry is the asset at `contract` (`None`: the native coin) on `chain`.
    pub fn is(&self, chain: &str, contract: Option<&str>) -> bool {
        self.chain == chain
            && match (&self.contract, contract) {
                (None, None) => true,
                (Some(a), Some(b)) => a.eq_ignore_ascii_case(b),
                _ => false,
            }
    }
}

/// Made once at setup; its hash is pinned in every signer's configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Genesis {
    pub members: Vec<MemberSpec>,
    /// Distinct admins needed for a change.
    pub quorum: u8,
    /// How long a new whitelist entry (or asset) waits before it is usable.
    pub whitelist_delay_ms: i64,
    pub created_at: Timestamp,
    /// The first assets (usable at once; absent from the encoding when there are none, so
    /// older genesis files keep their hashes).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub assets: Vec<AssetSpec>,
}

impl Genesis {
    pub fn hash(&self) -> Result<[u8; 32], GovError> {
        Ok(tagged_hash(GENESIS_TAG, &canonical(self)?))
    }
}

/// Whose whitelist an entry is on.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum WhitelistScope {
    /// Our own wallets (hot ↔ cold).
    Internal { chain: String },
    /// A customer's withdrawal whitelist.
    Customer { customer_id: String, chain: String },
}

impl std::fmt::Display for WhitelistScope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WhitelistScope::Internal { chain } => write!(f, "internal on {chain}"),
            WhitelistScope::Customer { customer_id, chain } => {
                write!(f, "customer {customer_id} on {chain}")
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "change", rename_all = "snake_case", deny_unknown_fields)]
pub enum Change {
    SetPolicy {
        policy: Policy,
    },
    AddMember {
        member: MemberSpec,
    },
    RemoveMember {
        id: String,
    },
    /// Register (or replace) the passkey a member approves withdrawals with (and signs
    /// entries with, except those that change who governs).
    SetPasskey {
        id: String,
        passkey: crate::webauthn::PasskeySpec,
    },
    SetQuorum {
        quorum: u8,
    },
    WhitelistAdd {
        scope: WhitelistScope,
        address: String,
        label: String,
    },
    WhitelistRemove {
        scope: WhitelistScope,
        address: String,
    },
    /// Cancel a whitelist addition still in its time-lock.
    CancelPending {
        seq: u64,
    },
    /// Register an asset (usable after the time-lock).
    AssetAdd {
        asset: AssetSpec,
    },
    /// Take an asset off the registry (at once: the signers stop moving it).
    AssetRemove {
        chain: String,
        symbol: String,
    },
    /// Credit a customer without chain evidence (a correction the watcher cannot make):
    /// the API credits it once, against this entry.
    LedgerCredit {
        customer_id: String,
        asset: String,
        amount: strongroom_units::Amount,
        reference: String,
    },
    Freeze {
        scope: FreezeScope,
        /// Why, in the words of whoever froze it (kept in the log; absent in older entries,
        /// whose hashes it therefore leaves unchanged).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    /// Freeze until a set time: nobody, not even the admin quorum, can lift it before then
    /// (it ends by itself). One security officer or admin suffices, as for a freeze.
    FreezeUntil {
        scope: FreezeScope,
        until: Timestamp,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    Unfreeze {
        scope: FreezeScope,
    },
    /// Take signer node `node` out of the group at once (an incident: its host or share is
    /// suspected). Every other node then refuses any session that includes it and any
    /// message from its certificate, and discards the presignatures made with it. One
    /// security officer or admin suffices, as for a freeze; it is never lifted: a
    /// replacement joins under a new party number.
    QuarantineNode {
        node: u16,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    /// Move everything key `from` holds to key `to` (whose public key, hex, the quorum names):
    /// from now on the signers let `from` and its deposit addresses pay only `to`'s own
    /// address, as an internal movement. The way out for a threshold ECDSA key whose shares
    /// cannot be refreshed (a quarantined node held one).
    MigrateKey {
        from: String,
        to: String,
        to_public_key: String,
    },
    /// Retire a key: the signers never use it again. One admin, at once.
    RetireKey {
        key: String,
    },
}

/// One member's signature on an entry: with the Ed25519 key they hold (`signature`, hex), or
/// with the passkey registered for them in the log (`passkey`: a WebAuthn assertion whose
/// challenge is the entry's hash). Exactly one of the two.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Signoff {
    pub member: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub signature: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub passkey: Option<crate::webauthn::Assertion>,
}

/// What a signoff's signature was made with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proof<'a> {
    /// An Ed25519 signature (hex) by the member's governance key.
    Key(&'a str),
    /// An assertion by the member's registered passkey.
    Passkey(&'a crate::webauthn::Assertion),
}

impl Signoff {
    /// A signature by `member`'s governance key (64 bytes).
    pub fn key(member: &str, signature: &[u8; 64]) -> Signoff {
        Signoff { member: member.to_owned(), signature: hex::encode(signature), passkey: None }
    }

    /// A signature by `member`'s registered passkey.
    pub fn passkey(member: &str, assertion: crate::webauthn::Assertion) -> Signoff {
        Signoff { member: member.to_owned(), signature: String::new(), passkey: Some(assertion) }
    }

    /// Which kind of signature this is; `Err` if it carries both or neither.
    pub fn proof(&self) -> Result<Proof<'_>, &'static str> {
        match (self.signature.is_empty(), &self.passkey) {
            (false, None) => Ok(Proof::Key(&self.signature)),
            (true, Some(a)) => Ok(Proof::Passkey(a)),
            (false, Some(_)) => Err("carries both a key signature and a passkey assertion"),
            (true, None) => Err("carries no signature"),
        }
    }
}

impl Change {
    /// Whether the change decides who governs or how (members, their keys, the quorum).
    /// Those need signatures by the keys members hold: a passkey signs in a page the server
    /// delivers, so a server that changes the page could ask for a signature on something
    /// other than what it shows, and must never be able to take over governance that way.
    pub fn changes_who_governs(&self) -> bool {
        matches!(
            self,
            Change::AddMember { .. }
                | Change::RemoveMember { .. }
                | Change::SetPasskey { .. }
                | Change::SetQuorum { .. }
        )
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    pub seq: u64,
    /// Hex hash of the entry before (the genesis for seq 1).
    pub prev: String,
    pub at: Timestamp,
    pub change: Change,
    pub signoffs: Vec<Signoff>,
}

/// The part of an entry that is signed and linked.
#[derive(Serialize)]
struct Signed<'a> {
    seq: u64,
    prev: &'a str,
    at: Timestamp,
    change: &'a Change,
}

impl Entry {
    /// The hash members sign, and the next entry's `prev`: the [`ENTRY_TAG`] tagged hash of
    /// [`Entry::signed_bytes`].
    pub fn hash(&self) -> Result<[u8; 32], GovError> {
        Ok(tagged_hash(ENTRY_TAG, &self.signed_bytes()?))
    }

    /// The bytes the hash covers: the JSON of the sequence number, the link, the time and
    /// the change (a page that shows a proposal reads it from these and hashes them itself).
    pub fn signed_bytes(&self) -> Result<Vec<u8>, GovError> {
        canonical(&Signed { seq: self.seq, prev: &self.prev, at: self.at, change: &self.change })
    }

    /// Add `member`'s signature.
    pub fn sign(&mut self, member: &str, key: &ed25519_dalek::SigningKey) -> Result<(), GovError> {
        use ed25519_dalek::Signer;
        let sig = key.sign(&self.hash()?);
        self.signoffs.push(Signoff::key(member, &sig.to_bytes()));
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum GovError {
    #[error("the genesis does not match the pinned hash")]
    WrongGenesis,
    #[error("member {0} has a malformed public key")]
    BadKey(String),
    #[error("entry {seq}: {reason}")]
    Entry { seq: u64, reason: String },
    #[error("cannot encode: {0}")]
    Encoding(String),
}

/// A whitelist entry in force or waiting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WhitelistEntry {
    pub scope: WhitelistScope,
    pub address: String,
    pub label: String,
    pub seq: u64,
    pub usable_from: Timestamp,
}

/// A registered asset and when it becomes usable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegisteredAsset {
    pub spec: AssetSpec,
    pub usable_from: Timestamp,
}

/// What the registry says of the asset at a contract.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AssetLookup<'a> {
    Usable(&'a AssetSpec),
    /// Registered, but its time-lock ends at this time.
    Pending(&'a AssetSpec, Timestamp),
    Unknown,
}

/// A freeze in force: its scope, and its end if it is time-boxed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frozen {
    pub scope: FreezeScope,
    pub until: Option<Timestamp>,
}

/// The longest a time-boxed freeze may be set for (it cannot be lifted early).
pub const MAX_FREEZE_MS: i64 = 90 * 86_400_000;
/// The longest reason a freeze may give.
pub const MAX_FREEZE_REASON: usize = 500;

/// Whether an address may be paid as whitelisted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Listed {
    Usable,
    /// On the list, but its time-lock ends at this time.
    Pending(Timestamp),
    No,
}

/// A key on its way out: what it may still pay, and since which entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyMigration {
    pub to: String,
    /// The new key's public key (hex), as the quorum named it.
    pub to_public_key: String,
    pub seq: u64,
}

/// Follow `migrations` (by the key they leave) through `configured`, a wallet key named in
/// a configuration before or after its migration: forwards to the key in use, and back to
/// every key migrated into it (oldest first). Returns (in use, former).
pub fn follow_migrations(
    migrations: &BTreeMap<String, KeyMigration>,
    configured: &str,
) -> Result<(String, Vec<String>), String> {
    let mut current = configured.to_owned();
    let mut former: Vec<String> = Vec::new();
    // Forwards: each key moves once (replay refuses a second migration from it).
    while let Some(m) = migrations.get(&current) {
        if former.contains(&current) || former.len() > migrations.len() {
            return Err(format!("the key migrations through {configured} form a loop"));
        }
        former.push(std::mem::replace(&mut current, m.to.clone()));
    }
    // Backwards: keys migrated into one already on the list.
    loop {
        let before = former.len();
        for (from, m) in migrations {
            let into_ours = m.to == current || former.contains(&m.to);
            if into_ours && !former.contains(from) {
                former.push(from.clone());
            }
        }
        if former.len() == before {
            break;
        }
    }
    former.sort_by_key(|w| migrations.get(w).map_or(u64::MAX, |m| m.seq));
    Ok((current, former))
}

/// The governance state in force after the last entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct State {
    pub members: BTreeMap<String, Member>,
    pub quorum: u8,
    pub whitelist_delay_ms: i64,
    pub policy: Option<Policy>,
    pub whitelist: Vec<WhitelistEntry>,
    pub freezes: BTreeSet<FreezeScope>,
    /// Time-boxed freezes and when each ends.
    pub frozen_until: BTreeMap<FreezeScope, Timestamp>,
    /// The asset registry.
    pub assets: Vec<RegisteredAsset>,
    /// Signer nodes taken out of the group, and the entry that did it.
    pub quarantined: BTreeMap<u16, u64>,
    /// Keys moving to another key, by the key they leave.
    pub migrations: BTreeMap<String, KeyMigration>,
    /// Keys the signers never use again, and the entry that retired each.
    pub retired: BTreeMap<String, u64>,
    /// Hex hash of the last entry (or the genesis): the next entry's `prev`.
    pub head: String,
    pub seq: u64,
    pub at: Timestamp,
}

impl State {
    /// Whether `address` (compared case-insensitively) is whitelisted in `scope` at `now`.
    pub fn listed(&self, scope: &WhitelistScope, address: &str, now: Timestamp) -> Listed {
        match self
            .whitelist
            .iter()
            .find(|w| &w.scope == scope && w.address.eq_ignore_ascii_case(address))
        {
            Some(w) if w.usable_from <= now => Listed::Usable,
            Some(w) => Listed::Pending(w.usable_from),
            None => Listed::No,
        }
    }

    /// The registered asset at `contract` (`None`: the native coin) on `chain`, at `now`.
    pub fn asset(&self, chain: &str, contract: Option<&str>, now: Timestamp) -> AssetLookup<'_> {
        match self.assets.iter().find(|a| a.spec.is(chain, contract)) {
            Some(a) if a.usable_from <= now => AssetLookup::Usable(&a.spec),
            Some(a) => AssetLookup::Pending(&a.spec, a.usable_from),
            None => AssetLookup::Unknown,
        }
    }

    /// The freeze that stops a movement of `asset` from `wallet`, if any.
    pub fn frozen(&self, asset: &str, wallet: &str, now: Timestamp) -> Option<Frozen> {
        let covers = |f: &FreezeScope| match f {
            FreezeScope::Global => true,
            FreezeScope::Asset { asset: a } => a == asset,
            FreezeScope::Wallet { wallet: w } => w == wallet,
        };
        if let Some(f) = self.freezes.iter().find(|f| covers(f)) {
            return Some(Frozen { scope: f.clone(), until: None });
        }
        self.frozen_until
            .iter()
            .find(|(f, until)| covers(f) && **until > now)
            .map(|(f, until)| Frozen { scope: f.clone(), until: Some(*until) })
    }

    /// The quarantined nodes among `parties`, with the first entry that quarantined one of
    /// them; `None` when none is.
    pub fn quarantined_among(&self, parties: &[u16]) -> Option<(Vec<u16>, u64)> {
        let hit: Vec<(u16, u64)> =
            parties.iter().filter_map(|p| self.quarantined.get(p).map(|seq| (*p, *seq))).collect();
        let seq = hit.iter().map(|(_, s)| *s).min()?;
        Some((hit.into_iter().map(|(p, _)| p).collect(), seq))
    }

    /// A fresh unsigned entry for `change` on top of this state.
    pub fn propose(&self, change: Change, at: Timestamp) -> Entry {
        Entry { seq: self.seq + 1, prev: self.head.clone(), at, change, signoffs: Vec::new() }
    }
}

/// The smallest admin quorum a log may have: one admin alone never changes governance.
pub const MIN_QUORUM: u8 = 2;

/// When a signer first saw each entry (by sequence number), if it keeps track.
pub type FirstSeen<'a> = &'a dyn Fn(u64) -> Option<Timestamp>;

/// One line of a signer's record of when it first saw an entry (the MPC nodes and the
/// offline signer keep one beside their copy of the log).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeenRecord {
    pub seq: u64,
    pub at_ms: i64,
}

impl SeenRecord {
    /// Records saying `entries` were first seen `now`.
    pub fn now(entries: &[Entry], now: Timestamp) -> Vec<SeenRecord> {
        entries.iter().map(|e| SeenRecord { seq: e.seq, at_ms: now.unix_ms() }).collect()
    }
}

/// A signer's first-seen map from its stored `records`. An entry with no record (a log kept
/// before such records) counts as seen `now`: its time-lock may run longer, never shorter.
/// Returns the map and the records to append for those entries.
pub fn first_seen(
    entries: &[Entry],
    records: Vec<SeenRecord>,
    now: Timestamp,
) -> (BTreeMap<u64, Timestamp>, Vec<SeenRecord>) {
    let mut seen: BTreeMap<u64, Timestamp> =
        records.into_iter().map(|s| (s.seq, Timestamp::from_unix_ms(s.at_ms))).collect();
    let unrecorded: Vec<Entry> =
        entries.iter().filter(|e| !seen.contains_key(&e.seq)).cloned().collect();
    let missing = SeenRecord::now(&unrecorded, now);
    seen.extend(missing.iter().map(|s| (s.seq, now)));
    (seen, missing)
}

/// Verify the genesis against the pinned hash and every entry in order; the state at the end.
/// Time-locks run from each entry's own time.
pub fn replay(
    genesis: &Genesis,
    pinned: &str,
    entries: &[Entry],
    now: Timestamp,
) -> Result<State, GovError> {
    replay_seen(genesis, pinned, entries, now, &|_| None)
}

/// [`replay`] for a signer that records when it first saw each entry: a time-lock runs from
/// the later of the entry's own time and that moment, so an entry back-dated by whoever
/// proposed it cannot shorten its time-lock on this signer's clock.
pub fn replay_seen(
    genesis: &Genesis,
    pinned: &str,
    entries: &[Entry],
    now: Timestamp,
    seen: FirstSeen<'_>,
) -> Result<State, GovError> {
    let head = hex::encode(genesis.hash()?);
    if !head.eq_ignore_ascii_case(pinned) {
        return Err(GovError::WrongGenesis);
    }
    let mut state = State {
        members: BTreeMap::new(),
        quorum: genesis.quorum,
        whitelist_delay_ms: genesis.whitelist_delay_ms,
        policy: None,
        whitelist: Vec::new(),
        freezes: BTreeSet::new(),
        frozen_until: BTreeMap::new(),
        assets: Vec::new(),
        quarantined: BTreeMap::new(),
        migrations: BTreeMap::new(),
        retired: BTreeMap::new(),
        head,
        seq: 0,
        at: genesis.created_at,
    };
    for m in &genesis.members {
        state.members.insert(m.id.clone(), Member::parse(m).map_err(|b| GovError::BadKey(b.0))?);
    }
    for a in &genesis.assets {
        register(&mut state, a, genesis.created_at)
            .map_err(|reason| GovError::Entry { seq: 0, reason })?;
    }
    check_quorum(&state, 0)?;
    for e in entries {
        apply(&mut state, e, now, seen(e.seq))?;
    }
    Ok(state)
}

/// A signer's copy of the log, offered `offered` (the whole log, as a request or a signing
/// bundle carries it): the entries it has must be identical, the rest must extend it so
/// that everything replays. Returns the new entries (to store) and the state in force, or
/// `None` when nothing is new (the signer's own state stands, with no replay). A
/// shorter log changes nothing: what a signer once accepted (a freeze, a stricter policy)
/// cannot be rolled back by showing it less.
pub fn extend(
    genesis: &Genesis,
    pinned: &str,
    have: &[Entry],
    offered: &[Entry],
    now: Timestamp,
    seen: FirstSeen<'_>,
) -> Result<Option<(Vec<Entry>, State)>, String> {
    for (i, e) in offered.iter().enumerate().take(have.len()) {
        if have.get(i) != Some(e) {
            return Err(format!("governance entry {} differs from this signer's copy", e.seq));
        }
    }
    let new: Vec<Entry> = offered.iter().skip(have.len()).cloned().collect();
    if new.is_empty() {
        return Ok(None);
    }
    let all: Vec<Entry> = have.iter().chain(new.iter()).cloned().collect();
    let known = have.len() as u64;
    // The entries new here are first seen now.
    let seen = |seq: u64| if seq > known { Some(now) } else { seen(seq) };
    let state = replay_seen(genesis, pinned, &all, now, &seen)
        .map_err(|e| format!("governance log refused: {e}"))?;
    Ok(Some((new, state)))
}

/// Check one signoff on entry `e` (whose hash is `hash`) against the members in force; the
/// member who signed, or why the signoff does not stand.
pub fn check_signoff<'m>(
    members: &'m BTreeMap<String, Member>,
    e: &Entry,
    hash: &[u8; 32],
    s: &Signoff,
) -> Result<&'m Member, String> {
    let m = members.get(&s.member).ok_or_else(|| format!("{} is not a member", s.member))?;
    match s.proof().map_err(|why| format!("{}'s signoff {why}", s.member))? {
        Proof::Key(signature) => {
            let sig = hex::decode(signature)
                .ok()
                .filter(|b| b.len() == 64)
                .ok_or_else(|| format!("{}'s signature is malformed", s.member))?;
            if !crate::signature::ed25519_verify(&m.key, hash, &sig) {
                return Err(format!("{}'s signature does not verify", s.member));
            }
        }
        Proof::Passkey(assertion) => {
            if e.change.changes_who_governs() {
                return Err(format!(
                    "{}'s passkey cannot sign a change to members, passkeys or the quorum: that \
                     takes the key they hold",
                    s.member
                ));
            }
            let passkey = m
                .passkey
                .as_ref()
                .ok_or_else(|| format!("{} has no passkey in governance to sign with", s.member))?;
            crate::webauthn::verify(passkey, hash, assertion)
                .map_err(|why| format!("{}'s passkey signature refused: {why}", s.member))?;
        }
    }
    Ok(m)
}

fn check_quorum(state: &State, seq: u64) -> Result<(), GovError> {
    let admins = state.members.values().filter(|m| m.has(Role::Admin)).count();
    if state.quorum < MIN_QUORUM || usize::from(state.quorum) > admins {
        return Err(GovError::Entry {
            seq,
            reason: format!(
                "a quorum of {} with {admins} admins (the quorum must be at least {MIN_QUORUM} and at most the admins)",
                state.quorum
            ),
        });
    }
    Ok(())
}

fn apply(
    state: &mut State,
    e: &Entry,
    now: Timestamp,
    first_seen: Option<Timestamp>,
) -> Result<(), GovError> {
    let fail = |reason: String| GovError::Entry { seq: e.seq, reason };
    if e.seq != state.seq + 1 {
        return Err(fail(format!("expected entry {}", state.seq + 1)));
    }
    if e.prev != state.head {
        return Err(fail(
            "does not link to the entry before (edited, inserted or reordered)".into(),
        ));
    }
    if e.at < state.at || e.at > now {
        return Err(fail("its time is before the entry before, or in the future".into()));
    }
    // Who signed, validly and once each.
    let hash = e.hash()?;
    let mut signers: BTreeSet<&str> = BTreeSet::new();
    for s in &e.signoffs {
        let m = check_signoff(&state.members, e, &hash, s).map_err(fail)?;
        signers.insert(m.id.as_str());
    }
    let count = |role: Role| {
        signers.iter().filter(|id| state.members.get(**id).is_some_and(|m| m.has(role))).count()
    };
    let (admins, officers) = (count(Role::Admin), count(Role::SecurityOfficer));
    let quorum = usize::from(state.quorum);
    let needs_quorum = || {
        if admins >= quorum {
            Ok(())
        } else {
            Err(fail(format!("needs {quorum} distinct admins, has {admins}")))
        }
    };
    let needs_one_admin = || if admins >= 1 { Ok(()) } else { Err(fail("needs an admin".into())) };
    let reason_ok = |reason: &Option<String>| match reason {
        Some(r) if r.chars().count() > MAX_FREEZE_REASON || r.chars().any(char::is_control) => {
            Err(fail(format!("a reason is at most {MAX_FREEZE_REASON} printable characters")))
        }
        _ => Ok(()),
    };
    match &e.change {
        Change::Freeze { scope, reason } => {
            if admins + officers == 0 {
                return Err(fail("needs a security officer or an admin".into()));
            }
            reason_ok(reason)?;
            state.freezes.insert(scope.clone());
        }
        Change::FreezeUntil { scope, until, reason } => {
            if admins + officers == 0 {
                return Err(fail("needs a security officer or an admin".into()));
            }
            reason_ok(reason)?;
            // Saturating: found by fuzzing, a genesis dated near the start of the i64 range
            // made this subtraction overflow (a panic with overflow checks, and without them
            // a wrapped, negative length that let a freeze run for ages).
            if *until <= e.at || until.unix_ms().saturating_sub(e.at.unix_ms()) > MAX_FREEZE_MS {
                return Err(fail(format!(
                    "a time-boxed freeze ends after its entry and within {} days",
                    MAX_FREEZE_MS / 86_400_000
                )));
            }
            // A freeze only tightens: a later end wins.
            let end = state.frozen_until.entry(scope.clone()).or_insert(*until);
            *end = (*end).max(*until);
        }
        Change::QuarantineNode { node, reason } => {
            if admins + officers == 0 {
                return Err(fail("needs a security officer or an admin".into()));
            }
            reason_ok(reason)?;
            if *node == 0 {
                return Err(fail("signer nodes are numbered from 1".into()));
            }
            if state.quarantined.insert(*node, e.seq).is_some() {
                return Err(fail(format!("signer node {node} is already quarantined")));
            }
        }
        Change::MigrateKey { from, to, to_public_key } => {
            needs_quorum()?;
            if from.is_empty() || to.is_empty() || from == to {
                return Err(fail("a migration names two different keys".into()));
            }
            let public = hex::decode(to_public_key).unwrap_or_default();
            if !(32..=65).contains(&public.len()) {
                return Err(fail("the new key's public key must be hex (32 to 65 bytes)".into()));
            }
            for key in [from, to] {
                if state.retired.contains_key(key) {
                    return Err(fail(format!("key {key} is retired")));
                }
            }
            if state.migrations.contains_key(from) || state.migrations.contains_key(to) {
                return Err(fail(format!("key {from} or {to} is already moving to another key")));
            }
            state.migrations.insert(
                from.clone(),
                KeyMigration { to: to.clone(), to_public_key: to_public_key.clone(), seq: e.seq },
            );
        }
        Change::RetireKey { key } => {
            needs_one_admin()?;
            if state.retired.insert(key.clone(), e.seq).is_some() {
                return Err(fail(format!("key {key} is already retired")));
            }
            if state.migrations.values().any(|m| &m.to == key) {
                return Err(fail(format!("key {key} is where another key's funds are moving")));
            }
        }
        Change::Unfreeze { scope } => {
            needs_quorum()?;
            if let Some(until) = state.frozen_until.get(scope).filter(|u| **u > e.at) {
                return Err(fail(format!(
                    "{scope} is frozen until {} ms: a time-boxed freeze cannot be lifted before its end, even by the quorum",
                    until.unix_ms()
                )));
            }
            state.frozen_until.remove(scope);
            state.freezes.remove(scope);
        }
        Change::SetPolicy { policy } => {
            needs_quorum()?;
            policy.validate().map_err(|e: PolicyError| fail(e.to_string()))?;
            if state.policy.as_ref().is_some_and(|p| policy.version <= p.version) {
                return Err(fail("a policy's version must increase".into()));
            }
            state.policy = Some(policy.clone());
        }
        Change::AddMember { member } => {
            needs_quorum()?;
            if state.members.contains_key(&member.id) {
                return Err(fail(format!("{} is already a member", member.id)));
            }
            state.members.insert(
                member.id.clone(),
                Member::parse(member).map_err(|b| GovError::BadKey(b.0))?,
            );
        }
        Change::RemoveMember { id } => {
            needs_quorum()?;
            state.members.remove(id).ok_or_else(|| fail(format!("{id} is not a member")))?;
            check_quorum(state, e.seq)?;
        }
        Change::SetPasskey { id, passkey } => {
            needs_quorum()?;
            // The passkey's public key reaches the admins from the server; only the member,
            // who holds the authenticator, can say it is theirs. Their own governance key
            // signs the entry that names it, or it is not registered.
            if !signers.contains(id.as_str()) {
                return Err(fail(format!(
                    "a passkey is registered for {id} only with {id}'s own signature on the entry"
                )));
            }
            let parsed = crate::webauthn::Passkey::parse(passkey).map_err(fail)?;
            let m =
                state.members.get_mut(id).ok_or_else(|| fail(format!("{id} is not a member")))?;
            m.passkey = Some(parsed);
        }
        Change::SetQuorum { quorum } => {
            needs_quorum()?;
            state.quorum = *quorum;
            check_quorum(state, e.seq)?;
        }
        Change::WhitelistAdd { scope, address, label } => {
            needs_quorum()?;
            if state
                .whitelist
                .iter()
                .any(|w| &w.scope == scope && w.address.eq_ignore_ascii_case(address))
            {
                return Err(fail(format!("{address} is already on that whitelist")));
            }
            state.whitelist.push(WhitelistEntry {
                scope: scope.clone(),
                address: address.clone(),
                label: label.clone(),
                seq: e.seq,
                usable_from: first_seen
                    .map_or(e.at, |seen| seen.max(e.at))
                    .plus_ms(state.whitelist_delay_ms),
            });
        }
        Change::WhitelistRemove { scope, address } => {
            needs_one_admin()?;
            let before = state.whitelist.len();
            state
                .whitelist
                .retain(|w| !(&w.scope == scope && w.address.eq_ignore_ascii_case(address)));
            if state.whitelist.len() == before {
                return Err(fail(format!("{address} is not on that whitelist")));
            }
        }
        Change::CancelPending { seq } => {
            needs_one_admin()?;
            let pending =
                state.whitelist.iter().position(|w| w.seq == *seq && w.usable_from > e.at);
            let at = pending.ok_or_else(|| {
                fail(format!("entry {seq} is no whitelist addition still in its time-lock"))
            })?;
            state.whitelist.remove(at);
        }
        Change::AssetAdd { asset } => {
            needs_quorum()?;
            let from = first_seen.map_or(e.at, |seen| seen.max(e.at));
            register(state, asset, from.plus_ms(state.whitelist_delay_ms)).map_err(fail)?;
        }
        Change::LedgerCredit { customer_id, asset, amount, reference } => {
            needs_quorum()?;
            if customer_id.is_empty() || asset.is_empty() || amount.is_zero() {
                return Err(fail("a credit names a customer, an asset and an amount".into()));
            }
            if reference.trim().is_empty() || reference.len() > 200 {
                return Err(fail("a credit's reference must be 1-200 characters".into()));
            }
        }
        Change::AssetRemove { chain, symbol } => {
            needs_one_admin()?;
            let before = state.assets.len();
            state.assets.retain(|a| !(&a.spec.chain == chain && &a.spec.symbol == symbol));
            if state.assets.len() == before {
                return Err(fail(format!("{symbol} on {chain} is not registered")));
            }
        }
    }
    state.seq = e.seq;
    state.head = hex::encode(hash);
    state.at = e.at;
    Ok(())
}

/// Add `a` to the registry, usable from `from`: one entry per symbol and per contract on a
/// chain, so a contract can never answer to two names.
fn register(state: &mut State, a: &AssetSpec, from: Timestamp) -> Result<(), String> {
    if a.symbol.is_empty() || a.chain.is_empty() || a.decimals > 38 {
        return Err(format!("asset {:?} on {:?} is malformed", a.symbol, a.chain));
    }
    let taken = state.assets.iter().any(|r| {
        r.spec.chain == a.chain
            && (r.spec.symbol == a.symbol || r.spec.is(&a.chain, a.contract.as_deref()))
    });
    if taken {
        return Err(format!("{} on {} (or its contract) is already registered", a.symbol, a.chain));
    }
    state.assets.push(RegisteredAsset { spec: a.clone(), usable_from: from });
    Ok(())
}

/// Serde JSON of a value whose fields are in declaration order: one encoding per value.
fn canonical<T: Serialize>(v: &T) -> Result<Vec<u8>, GovError> {
    serde_json::to_vec(v).map_err(|e| GovError::Encoding(e.to_string()))
}
