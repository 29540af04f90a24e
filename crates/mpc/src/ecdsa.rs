//! Threshold ECDSA on secp256k1 (CGGMP21, `cggmp21` 0.6) as sans-IO sessions.
//!
//! A [`Session`] wraps one of cggmp21's protocols (auxiliary info, key generation,
//! presignature generation) run through its synchronous state machine. The caller feeds it
//! [`Envelope`]s and delivers what it returns; nothing here touches a socket or a disk.
//!
//! Party numbers are the node numbers 1..=n used everywhere in Strongroom; cggmp21's own
//! indices are 0-based (`number - 1` at keygen, the position in the signer set at signing).
//! An envelope's `round` is the sender's message counter within the session: with the
//! execution id it makes every message of every session distinct, so a replay is refused.
//!
//! Signing is split the CGGMP21 way: presignatures are made ahead of time (the expensive,
//! interactive part), and a signature needs one non-interactive step per signer
//! ([`partial_sign`], which consumes the presignature by value) and a [`combine`] that
//! checks the result against the public key with [`verify`], the low-`s` ECDSA check that
//! Wycheproof's vectors run against (`tests/wycheproof.rs`).

use std::collections::{BTreeSet, VecDeque};

use cggmp21::generic_ec::{Point, Scalar};
use cggmp21::hd_wallet::{NonHardenedIndex, Slip10};
use cggmp21::key_share::AnyKeyShare;
use cggmp21::round_based::state_machine::{ProceedResult, StateMachine};
use cggmp21::round_based::{Incoming, MessageDestination, MessageType};
use rand_core::{CryptoRng, RngCore};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::{Envelope, ExecutionId, MpcError};

pub use cggmp21::supported_curves::Secp256k1;

/// A completed key share: the party's secret share, everyone's public shares and the
/// Paillier keys from the auxiliary info. Secret: sealed at rest, never printed.
pub type KeyShare = cggmp21::KeyShare<Secp256k1>;
/// The output of key generation before the auxiliary info is attached. Secret.
pub type IncompleteKeyShare = cggmp21::IncompleteKeyShare<Secp256k1>;
/// This party's Paillier secret key and everyone's public parameters. Secret.
pub type AuxInfo = cggmp21::key_share::AuxInfo;
/// A presignature: use once, then it is gone. Secret.
pub type Presignature = cggmp21::Presignature<Secp256k1>;
/// A signer's contribution to one signature. Not secret.
pub type PartialSignature = cggmp21::PartialSignature<Secp256k1>;
/// Two safe primes for this party's Paillier key (slow to find; made ahead of time).
pub type Primes = cggmp21::PregeneratedPrimes;

/// Generate this party's Paillier primes. Takes tens of seconds of CPU.
pub fn generate_primes(rng: &mut (impl RngCore + CryptoRng)) -> Primes {
    Primes::generate(rng)
}

/// The protocols' wire payload: the cggmp21 message as JSON.
pub type Payload = Vec<u8>;

/// Who takes part in a session, in cggmp21's index order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parties {
    /// Party numbers (1-based), position = cggmp21 index in this session.
    numbers: Vec<u16>,
    /// For signing: each signer's index at keygen (`number - 1`).
    at_keygen: Vec<u16>,
}

impl Parties {
    /// A set of distinct party numbers, each ≥ 1. Sorted, so every node derives the same
    /// order.
    pub fn new(numbers: impl IntoIterator<Item = u16>) -> Result<Self, MpcError> {
        let set: BTreeSet<u16> = numbers.into_iter().collect();
        if set.contains(&0) || set.len() < 2 || set.len() > 10 {
            return Err(MpcError::Parameters(format!(
                "parties {set:?}: need 2 to 10 distinct numbers, each at least 1"
            )));
        }
        let numbers: Vec<u16> = set.into_iter().collect();
        let at_keygen = numbers.iter().map(|n| n - 1).collect();
        Ok(Parties { numbers, at_keygen })
    }

    /// Signers of a key generated among `key_parties`: each signer's index at keygen is
    /// its place among them (a key made among 1, 2 and 4 has node 4 at index 2).
    pub fn of_key(
        signers: impl IntoIterator<Item = u16>,
        key_parties: &[u16],
    ) -> Result<Self, MpcError> {
        let mut p = Parties::new(signers)?;
        let keyset: BTreeSet<u16> = key_parties.iter().copied().collect();
        p.at_keygen = p
            .numbers
            .iter()
            .map(|n| {
                keyset.iter().position(|k| k == n).and_then(|i| u16::try_from(i).ok()).ok_or_else(
                    || {
                        MpcError::Parameters(format!(
                            "signer {n} is not a party of the key {keyset:?}"
                        ))
                    },
                )
            })
            .collect::<Result<_, _>>()?;
        Ok(p)
    }

    pub fn numbers(&self) -> &[u16] {
        &self.numbers
    }

    fn index_of(&self, number: u16) -> Option<u16> {
        self.numbers.iter().position(|n| *n == number).and_then(|i| u16::try_from(i).ok())
    }

    fn number_at(&self, index: u16) -> Option<u16> {
        self.numbers.get(usize::from(index)).copied()
    }

    fn len(&self) -> u16 {
        u16::try_from(self.numbers.len()).unwrap_or(u16::MAX)
    }
}

/// What one call to [`Session::step`] produced.
pub struct Progress<O> {
    /// Deliver these (in order).
    pub outgoing: Vec<Envelope<Payload>>,
    /// Set when the protocol finished.
    pub output: Option<O>,
}

impl<O> std::fmt::Debug for Progress<O> {
    /// Outputs are secret (shares, presignatures): only their presence is shown.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Progress")
            .field("outgoing", &self.outgoing.len())
            .field("finished", &self.output.is_some())
            .finish()
    }
}

enum Advance<O> {
    Send { to: Option<u16>, bytes: Vec<u8> },
    NeedMessage,
    Done(Result<O, String>),
}

/// A cggmp21 state machine with its message type erased to JSON bytes.
trait Machine<O> {
    fn advance(&mut self) -> Result<Advance<O>, MpcError>;
    fn give(&mut self, sender: u16, broadcast: bool, id: u64, bytes: &[u8])
        -> Result<(), MpcError>;
}

struct Typed<SM>(SM);

impl<SM, O, E> Machine<O> for Typed<SM>
where
    SM: StateMachine<Output = Result<O, E>>,
    SM::Msg: Serialize + DeserializeOwned,
    E: std::error::Error,
{
    fn advance(&mut self) -> Result<Advance<O>, MpcError> {
        loop {
            match self.0.proceed() {
                ProceedResult::Yielded => continue,
                ProceedResult::NeedsOneMoreMessage => return Ok(Advance::NeedMessage),
                ProceedResult::SendMsg(out) => {
                    let to = match out.recipient {
                        MessageDestination::AllParties => None,
                        MessageDestination::OneParty(i) => Some(i),
                    };
                    let bytes = serde_json::to_vec(&out.msg)
                        .map_err(|e| MpcError::Parameters(format!("encode message: {e}")))?;
                    return Ok(Advance::Send { to, bytes });
                }
                ProceedResult::Output(Ok(o)) => return Ok(Advance::Done(Ok(o))),
                ProceedResult::Output(Err(e)) => return Ok(Advance::Done(Err(error_chain(&e)))),
                ProceedResult::Error(e) => return Err(MpcError::Parameters(e.to_string())),
            }
        }
    }

    fn give(
        &mut self,
        sender: u16,
        broadcast: bool,
        id: u64,
        bytes: &[u8],
    ) -> Result<(), MpcError> {
        let msg: SM::Msg = serde_json::from_slice(bytes).map_err(|e| MpcError::Misbehaved {
            culprits: vec![],
            reason: format!("undecodable message: {e}"),
        })?;
        let msg_type = if broadcast { MessageType::Broadcast } else { MessageType::P2P };
        self.0
            .received_msg(Incoming { id, sender, msg_type, msg })
            .map_err(|_| MpcError::Parameters("state machine refused a message".into()))
    }
}

/// Display of an error and its sources, plus its `Debug` form (where cggmp21 lists the
/// parties whose proofs failed).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        src = inner.source();
    }
    s.push_str(" | ");
    s.push_str(&format!("{e:?}"));
    s
}

/// cggmp21 names misbehaving parties only inside its private error types; their `Debug`
/// form lists `(party_index, msg_id, …)` tuples after `Aborted(`. Read those indices.
fn culprit_indices(chain: &str) -> Vec<u16> {
    let Some(at) = chain.find("Aborted(") else { return vec![] };
    let rest = chain.get(at..).unwrap_or_default();
    let mut out = BTreeSet::new();
    for (i, _) in rest.match_indices('(') {
        let before = rest.get(..i).unwrap_or_default();
        if before.ends_with('[') || before.ends_with(", ") {
            let digits: String = rest
                .get(i + 1..)
                .unwrap_or_default()
                .chars()
                .take_while(char::is_ascii_digit)
                .collect();
            if let Ok(n) = digits.parse::<u16>() {
                out.insert(n);
            }
        }
    }
    out.into_iter().collect()
}

/// One party's run of one cggmp21 protocol.
pub struct Session<'a, O> {
    eid: ExecutionId,
    me: u16,
    parties: &'a Parties,
    machine: Box<dyn Machine<O> + 'a>,
    /// Envelopes received before the machine asked for one.
    inbox: VecDeque<(u16, bool, Vec<u8>)>,
    /// (sender, counter) pairs already received: a second copy is a replay.
    seen: BTreeSet<(u16, u8)>,
    next_round: u8,
    next_msg_id: u64,
    waiting: bool,
    done: bool,
}

impl<O> std::fmt::Debug for Session<'_, O> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ecdsa::Session")
            .field("eid", &self.eid)
            .field("me", &self.me)
            .finish_non_exhaustive()
    }
}

impl<'a, O> Session<'a, O> {
    fn new(
        eid: ExecutionId,
        me: u16,
        parties: &'a Parties,
        machine: Box<dyn Machine<O> + 'a>,
    ) -> Self {
        Session {
            eid,
            me,
            parties,
            machine,
            inbox: VecDeque::new(),
            seen: BTreeSet::new(),
            next_round: 0,
            next_msg_id: 0,
            waiting: false,
            done: false,
        }
    }

    /// Feed one received envelope (or `None` to start), and run the protocol as far as it
    /// goes. Routing is checked first: another execution, an unknown sender, a message for
    /// someone else or a second copy of a message are refused without touching the state.
    pub fn step(&mut self, incoming: Option<Envelope<Payload>>) -> Result<Progress<O>, MpcError> {
        if self.done {
            return Err(MpcError::Finished);
        }
        if let Some(env) = incoming {
            if env.eid != self.eid {
                return Err(MpcError::WrongExecution { from: env.from });
            }
            let Some(sender) = self.parties.index_of(env.from).filter(|_| env.from != self.me)
            else {
                return Err(MpcError::UnknownSender { from: env.from });
            };
            if let Some(to) = env.to {
                if to != self.me {
                    return Err(MpcError::NotForMe { to });
                }
            }
            if !self.seen.insert((env.from, env.round)) {
                return Err(MpcError::Duplicate { from: env.from, round: env.round });
            }
            self.inbox.push_back((sender, env.to.is_none(), env.payload));
        }
        let mut outgoing = Vec::new();
        loop {
            if self.waiting {
                let Some((sender, broadcast, bytes)) = self.inbox.pop_front() else {
                    return Ok(Progress { outgoing, output: None });
                };
                let id = self.next_msg_id;
                self.next_msg_id += 1;
                if let Err(e) = self.machine.give(sender, broadcast, id, &bytes) {
                    self.done = true;
                    return Err(self.name_culprit(e, sender));
                }
                self.waiting = false;
            }
            match self.machine.advance()? {
                Advance::NeedMessage => self.waiting = true,
                Advance::Send { to, bytes } => {
                    let to = match to {
                        None => None,
                        Some(i) => Some(self.parties.number_at(i).ok_or_else(|| {
                            MpcError::Parameters(format!("protocol addressed index {i}"))
                        })?),
                    };
                    let round = self.next_round;
                    self.next_round = round.checked_add(1).ok_or_else(|| {
                        MpcError::Parameters("more than 255 messages in one session".into())
                    })?;
                    outgoing.push(Envelope {
                        eid: self.eid,
                        round,
                        from: self.me,
                        to,
                        payload: bytes,
                    });
                }
                Advance::Done(result) => {
                    self.done = true;
                    return match result {
                        Ok(o) => Ok(Progress { outgoing, output: Some(o) }),
                        Err(chain) => {
                            let culprits = culprit_indices(&chain)
                                .into_iter()
                                .filter_map(|i| self.parties.number_at(i))
                                .collect();
                            Err(MpcError::Misbehaved { culprits, reason: chain })
                        }
                    };
                }
            }
        }
    }

    fn name_culprit(&self, e: MpcError, sender: u16) -> MpcError {
        match e {
            MpcError::Misbehaved { culprits, reason } if culprits.is_empty() => {
                let who = self.parties.number_at(sender).into_iter().collect();
                MpcError::Misbehaved { culprits: who, reason }
            }
            other => other,
        }
    }
}

fn check_member(me: u16, parties: &Parties) -> Result<u16, MpcError> {
    parties
        .index_of(me)
        .ok_or_else(|| MpcError::Parameters(format!("party {me} is not in {:?}", parties.numbers)))
}

/// Precomputations stored with the auxiliary info that make every later presignature
/// cheaper (cggmp21's multi-exponentiation tables and CRT parameters). Both default to on;
/// the CRT parameters are as secret as the Paillier key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuxOptions {
    pub multiexp_tables: bool,
    pub crt: bool,
}

impl Default for AuxOptions {
    fn default() -> Self {
        AuxOptions { multiexp_tables: true, crt: true }
    }
}

/// Auxiliary info generation (Paillier keys and ring-Pedersen parameters, with proofs) among
/// all parties of a key group. Run once per group; reusable across keys.
pub fn aux_info<'a, R: RngCore + CryptoRng>(
    eid: &'a ExecutionId,
    me: u16,
    parties: &'a Parties,
    primes: Primes,
    options: AuxOptions,
    rng: &'a mut R,
) -> Result<Session<'a, AuxInfo>, MpcError> {
    let i = check_member(me, parties)?;
    let sm = cggmp21::aux_info_gen(cggmp21::ExecutionId::new(&eid.0), i, parties.len(), primes)
        .precompute_multiexp_tables(options.multiexp_tables)
        .precompute_crt(options.crt)
        .into_state_machine(rng);
    Ok(Session::new(*eid, me, parties, Box::new(Typed(sm))))
}

/// Threshold key generation (t-of-n), with an HD chain code so child keys can be derived.
pub fn keygen<'a, R: RngCore + CryptoRng>(
    eid: &'a ExecutionId,
    me: u16,
    parties: &'a Parties,
    t: u16,
    rng: &'a mut R,
) -> Result<Session<'a, IncompleteKeyShare>, MpcError> {
    let i = check_member(me, parties)?;
    if t < 2 || t > parties.len() {
        return Err(MpcError::Parameters(format!("threshold {t} of {} parties", parties.len())));
    }
    let sm = cggmp21::keygen::<Secp256k1>(cggmp21::ExecutionId::new(&eid.0), i, parties.len())
        .set_threshold(t)
        .hd_wallet(true)
        .into_state_machine(rng);
    Ok(Session::new(*eid, me, parties, Box::new(Typed(sm))))
}

/// How many parties auxiliary info was made for.
pub fn aux_parties(aux: &AuxInfo) -> usize {
    aux.parties.len()
}

/// Attach auxiliary info to a key generation output.
pub fn complete(incomplete: IncompleteKeyShare, aux: AuxInfo) -> Result<KeyShare, MpcError> {
    KeyShare::from_parts((incomplete, aux)).map_err(|e| MpcError::Parameters(e.to_string()))
}

/// Presignature generation among exactly `t` signers (the key's threshold). The output is
/// tied to this key and this signer set, and must be used at most once.
pub fn presign<'a, R: RngCore + CryptoRng>(
    eid: &'a ExecutionId,
    me: u16,
    signers: &'a Parties,
    key: &'a KeyShare,
    rng: &'a mut R,
) -> Result<Session<'a, Presignature>, MpcError> {
    let i = check_member(me, signers)?;
    if signers.len() != key.min_signers() {
        return Err(MpcError::Parameters(format!(
            "presignatures need exactly {} signers, got {:?}",
            key.min_signers(),
            signers.numbers
        )));
    }
    if signers.at_keygen.iter().any(|i| *i >= key.n()) {
        return Err(MpcError::Parameters(format!("signers {:?} beyond n", signers.numbers)));
    }
    let sm = cggmp21::signing(cggmp21::ExecutionId::new(&eid.0), i, &signers.at_keygen, key)
        .generate_presignature_sync(rng);
    Ok(Session::new(*eid, me, signers, Box::new(Typed(sm))))
}

/// A non-hardened BIP-32 path (every index < 2^31).
pub fn path(indices: &[u32]) -> Result<Vec<NonHardenedIndex>, MpcError> {
    indices
        .iter()
        .map(|i| {
            NonHardenedIndex::try_from(*i)
                .map_err(|_| MpcError::Parameters(format!("index {i} is hardened")))
        })
        .collect()
}

/// The public key (33-byte compressed SEC1) of the child at `path` (empty: the master key).
pub fn public_key(key: &KeyShare, path: &[u32]) -> Result<[u8; 33], MpcError> {
    let point: Point<Secp256k1> = if path.is_empty() {
        *key.shared_public_key
    } else {
        key.derive_child_public_key::<Slip10, _>(self::path(path)?)
            .map_err(|e| MpcError::Parameters(e.to_string()))?
            .public_key
    };
    let bytes = point.to_bytes(true);
    <[u8; 33]>::try_from(bytes.as_bytes())
        .map_err(|_| MpcError::Parameters("public key is not 33 bytes".into()))
}

fn digest_scalar(digest: &[u8; 32]) -> cggmp21::DataToSign<Secp256k1> {
    cggmp21::DataToSign::from_scalar(Scalar::from_be_bytes_mod_order(digest))
}

/// A threshold key's public half: the group public key and its BIP-32 chain code. Enough to
/// derive every child public key (deposit addresses) and to issue partial signatures from
/// presignatures: no share is needed for either.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MasterPublic {
    pub public_key: [u8; 33],
    pub chain_code: [u8; 32],
}

impl MasterPublic {
    pub fn of(key: &KeyShare) -> Result<Self, MpcError> {
        let epub = key
            .extended_public_key()
            .ok_or_else(|| MpcError::Parameters("key has no HD chain code".into()))?;
        Ok(MasterPublic { public_key: public_key(key, &[])?, chain_code: epub.chain_code })
    }

    fn epub(&self) -> Result<cggmp21::hd_wallet::ExtendedPublicKey<Secp256k1>, MpcError> {
        let point = Point::<Secp256k1>::from_bytes(self.public_key)
            .map_err(|_| MpcError::Parameters("bad public key".into()))?;
        Ok(cggmp21::hd_wallet::ExtendedPublicKey { public_key: point, chain_code: self.chain_code })
    }

    /// The child public key at a non-hardened `path` (empty: the master key).
    pub fn derive(&self, path: &[u32]) -> Result<[u8; 33], MpcError> {
        if path.is_empty() {
            return Ok(self.public_key);
        }
        let child = cggmp21::hd_wallet::slip10::derive_child_public_key_with_path(
            &self.epub()?,
            self::path(path)?,
        );
        let bytes = child.public_key.to_bytes(true);
        <[u8; 33]>::try_from(bytes.as_bytes())
            .map_err(|_| MpcError::Parameters("public key is not 33 bytes".into()))
    }

    /// The 65-byte uncompressed form of the child key at `path` (for Ethereum addresses).
    pub fn derive_uncompressed(&self, path: &[u32]) -> Result<[u8; 65], MpcError> {
        let compressed = self.derive(path)?;
        let point = Point::<Secp256k1>::from_bytes(compressed)
            .map_err(|_| MpcError::Parameters("bad public key".into()))?;
        let bytes = point.to_bytes(false);
        <[u8; 65]>::try_from(bytes.as_bytes())
            .map_err(|_| MpcError::Parameters("public key is not 65 bytes".into()))
    }
}

/// Consume a presignature to sign a 32-byte digest with the child key at `path` of `master`
/// (the key the presignature was made for).
pub fn partial_sign(
    presignature: Presignature,
    master: &MasterPublic,
    path: &[u32],
    digest: &[u8; 32],
) -> Result<PartialSignature, MpcError> {
    let presignature = if path.is_empty() {
        presignature
    } else {
        presignature
            .set_derivation_path(master.epub()?, self::path(path)?)
            .map_err(|e| MpcError::Parameters(e.to_string()))?
    };
    Ok(presignature.issue_partial_signature(digest_scalar(digest)))
}

/// Combine `t` partial signatures and check the result against the (child) public key with
/// [`verify`]. Returns the 64-byte compact signature `r ‖ s` with low `s`.
pub fn combine(
    partials: &[PartialSignature],
    public_key: &[u8; 33],
    digest: &[u8; 32],
) -> Result<[u8; 64], MpcError> {
    let sig = PartialSignature::combine(partials)
        .ok_or_else(|| MpcError::Parameters("no partial signatures".into()))?
        .normalize_s();
    let mut out = [0u8; 64];
    sig.write_to_slice(&mut out);
    verify(public_key, digest, &out).map_err(|e| match e {
        BadSignature::PublicKey => MpcError::Parameters("bad public key".into()),
        BadSignature::OutOfRange | BadSignature::HighS | BadSignature::Mismatch => {
            MpcError::Misbehaved {
                culprits: vec![],
                reason: format!(
                    "combined signature refused ({e}): a signer sent a bad partial signature"
                ),
            }
        }
    })?;
    Ok(out)
}

/// Why [`verify`] refused an ECDSA signature.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BadSignature {
    #[error("the public key is not the encoding of a secp256k1 point")]
    PublicKey,
    #[error("r or s is zero or not below the group order")]
    OutOfRange,
    #[error("s is in the upper half of the group order (the malleable second form)")]
    HighS,
    #[error("the signature does not verify under the public key")]
    Mismatch,
}

/// Check a compact ECDSA signature `r ‖ s` (32 bytes each, big-endian) over a 32-byte digest
/// under a compressed secp256k1 public key (SEC 1 §4.1.4), with the rules of the signatures
/// [`combine`] hands out and the chains take: `r` and `s` in [1, n−1], and `s` at most n/2
/// (Bitcoin's BIP-146 low `s`, Ethereum's EIP-2), so that no signature is accepted in two
/// forms. The digest becomes a scalar as SEC 1 §4.1.4 step 5 says for a 256-bit hash (taken
/// modulo n). `combine` checks every signature it returns with this function.
pub fn verify(
    public_key: &[u8; 33],
    digest: &[u8; 32],
    signature: &[u8; 64],
) -> Result<(), BadSignature> {
    let pk = Point::<Secp256k1>::from_bytes(public_key).map_err(|_| BadSignature::PublicKey)?;
    let sig = cggmp21::Signature::<Secp256k1>::read_from_slice(signature)
        .ok_or(BadSignature::OutOfRange)?;
    if sig.normalize_s() != sig {
        return Err(BadSignature::HighS);
    }
    sig.verify(&pk, &digest_scalar(digest)).map_err(|_| BadSignature::Mismatch)
}

/// A checked partial signature from the wire (JSON).
pub fn decode_partial(bytes: &[u8]) -> Result<PartialSignature, MpcError> {
    serde_json::from_slice(bytes)
        .map_err(|e| MpcError::Parameters(format!("undecodable partial signature: {e}")))
}

/// Run sessions of all parties to completion in this process, delivering every envelope
/// in order. For tests and the in-process benchmark baseline; a real deployment runs one
/// session per signer node. Returns each party's output, or the first error with the
/// number of the party that reported it.
pub fn run_local<O>(mut sessions: Vec<Session<'_, O>>) -> Result<Vec<O>, (u16, MpcError)> {
    let mut queue: VecDeque<Envelope<Payload>> = VecDeque::new();
    let mut outputs: Vec<Option<O>> = sessions.iter().map(|_| None).collect();
    for (s, out) in sessions.iter_mut().zip(outputs.iter_mut()) {
        let p = s.step(None).map_err(|e| (s.me, e))?;
        queue.extend(p.outgoing);
        *out = p.output;
    }
    while let Some(env) = queue.pop_front() {
        for (s, out) in sessions.iter_mut().zip(outputs.iter_mut()) {
            if s.me == env.from || env.to.is_some_and(|to| to != s.me) {
                continue;
            }
            let p = s.step(Some(env.clone())).map_err(|e| (s.me, e))?;
            queue.extend(p.outgoing);
            if p.output.is_some() {
                *out = p.output;
            }
        }
    }
    outputs
        .into_iter()
        .zip(sessions.iter())
        .map(|(o, s)| o.ok_or((s.me, MpcError::Parameters("protocol did not finish".into()))))
        .collect()
}

/// Presignature generation for every signer in one process under `round_based`'s own
/// simulator (the upstream reference harness): the benchmark's in-process baseline.
#[cfg(feature = "sim")]
pub fn presign_simulated(
    eid: &ExecutionId,
    signers: &Parties,
    keys: &[&KeyShare],
    rngs: &mut [rand_core::OsRng],
) -> Result<Vec<Presignature>, MpcError> {
    let mut sim = round_based::sim::Simulation::empty();
    for ((i, key), rng) in (0u16..).zip(keys).zip(rngs.iter_mut()) {
        let sm = cggmp21::signing(cggmp21::ExecutionId::new(&eid.0), i, &signers.at_keygen, key)
            .generate_presignature_sync(rng);
        sim.add_party(sm);
    }
    let out = sim.run().map_err(|e| MpcError::Parameters(e.to_string()))?;
    out.into_vec()
        .into_iter()
        .map(|r| r.map_err(|e| MpcError::Parameters(error_chain(&e))))
        .collect()
}
