//! FROST (RFC 9591) as sans-IO state machines, generic over the ciphersuite.
//!
//! - [`Dkg`]: distributed key generation, t-of-n (`frost_core::keys::dkg` part 1, 2, 3).
//!   Round 1 is a broadcast; round 2 sends one package to each other party, which the
//!   transport must keep confidential. No party ever holds the group's secret key.
//! - [`Signer`]: two-round signing among a chosen set of signers. Round 1 broadcasts nonce
//!   commitments; round 2 broadcasts signature shares; every signer aggregates and checks the
//!   shares, naming any party whose share is invalid.
//!
//! For secp256k1-Taproot the DKG output is already BIP-341 tweaked (frost-secp256k1-tr): the
//! group verifying key is the P2TR output key as is.

use std::collections::{BTreeMap, BTreeSet};

use frost_core::keys::dkg::{self, round1, round2};
use frost_core::keys::{KeyPackage, PublicKeyPackage};
use frost_core::round1::{SigningCommitments, SigningNonces};
use frost_core::round2::SignatureShare;
use frost_core::{Ciphersuite, Identifier, Signature, SigningPackage};

use crate::{Envelope, ExecutionId, MpcError};

pub use frost_ed25519::Ed25519Sha512 as Ed25519;
pub use frost_secp256k1_tr::Secp256K1Sha256TR as Secp256k1Taproot;

fn ident<C: Ciphersuite>(i: u16) -> Result<Identifier<C>, MpcError> {
    Identifier::try_from(i).map_err(|e| MpcError::Parameters(format!("party {i}: {e}")))
}

/// Map a FROST error to ours, naming culprits by party number.
fn misbehaved<C: Ciphersuite>(e: frost_core::Error<C>, parties: &BTreeSet<u16>) -> MpcError {
    let culprits: Vec<u16> = e
        .culprits()
        .iter()
        .filter_map(|c| parties.iter().copied().find(|p| ident::<C>(*p).ok().as_ref() == Some(c)))
        .collect();
    MpcError::Misbehaved { culprits, reason: e.to_string() }
}

/// Check an envelope's routing against this party's session.
fn check<P>(
    env: &Envelope<P>,
    eid: ExecutionId,
    me: u16,
    parties: &BTreeSet<u16>,
    round: u8,
) -> Result<(), MpcError> {
    if env.eid != eid {
        return Err(MpcError::WrongExecution { from: env.from });
    }
    if env.from == me || !parties.contains(&env.from) {
        return Err(MpcError::UnknownSender { from: env.from });
    }
    if let Some(to) = env.to {
        if to != me {
            return Err(MpcError::NotForMe { to });
        }
    }
    if env.round != round {
        return Err(MpcError::WrongRound { from: env.from, expected: round, got: env.round });
    }
    Ok(())
}

/// Messages a step asks the caller to deliver.
pub type Outbox<P> = Vec<Envelope<P>>;

/// What a party keeps after the DKG. The signing share inside is secret: it is sealed by
/// the signer before it touches a disk, and never printed (`Debug` shows the public key).
pub struct KeyShare<C: Ciphersuite> {
    pub me: u16,
    pub key_package: KeyPackage<C>,
    pub public: PublicKeyPackage<C>,
}

impl<C: Ciphersuite> std::fmt::Debug for KeyShare<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyShare")
            .field("me", &self.me)
            .field("share", &"<redacted>")
            .finish_non_exhaustive()
    }
}

impl<C: Ciphersuite> KeyShare<C> {
    /// Serialize for sealing (the result holds the secret share).
    pub fn to_bytes(&self) -> Result<zeroize::Zeroizing<Vec<u8>>, MpcError> {
        #[derive(serde::Serialize)]
        #[serde(bound = "")]
        struct RawRef<'a, C: Ciphersuite> {
            me: u16,
            key_package: &'a KeyPackage<C>,
            public: &'a PublicKeyPackage<C>,
        }
        let raw = RawRef { me: self.me, key_package: &self.key_package, public: &self.public };
        serde_json::to_vec(&raw)
            .map(zeroize::Zeroizing::new)
            .map_err(|e| MpcError::Parameters(e.to_string()))
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Self, MpcError> {
        #[derive(serde::Deserialize)]
        #[serde(bound = "")]
        struct Raw<C: Ciphersuite> {
            me: u16,
            key_package: KeyPackage<C>,
            public: PublicKeyPackage<C>,
        }
        let raw: Raw<C> =
            serde_json::from_slice(bytes).map_err(|e| MpcError::Parameters(e.to_string()))?;
        Ok(KeyShare { me: raw.me, key_package: raw.key_package, public: raw.public })
    }

    /// The group's public key, serialized as the ciphersuite defines (x-only 32 bytes for
    /// Taproot, 32 bytes for Ed25519).
    pub fn group_key(&self) -> Result<Vec<u8>, MpcError> {
        self.public.verifying_key().serialize().map_err(|e| MpcError::Parameters(e.to_string()))
    }
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(bound = "")]
pub enum DkgPayload<C: Ciphersuite> {
    Round1(round1::Package<C>),
    Round2(round2::Package<C>),
}

/// What the caller does next.
#[derive(Debug)]
pub enum Step<P, T> {
    /// Nothing to send yet.
    Wait,
    /// Deliver these.
    Send(Vec<Envelope<P>>),
    /// The protocol finished with this output.
    Finished(T),
}

enum DkgStage<C: Ciphersuite> {
    Round1 {
        secret: round1::SecretPackage<C>,
        got: BTreeMap<Identifier<C>, round1::Package<C>>,
    },
    Round2 {
        secret: round2::SecretPackage<C>,
        round1: BTreeMap<Identifier<C>, round1::Package<C>>,
        got: BTreeMap<Identifier<C>, round2::Package<C>>,
    },
    Over,
}

/// Fresh key generation, or a refresh of an existing key's shares.
enum Mode<C: Ciphersuite> {
    Fresh,
    /// Every party adds a sharing of zero: same group key, new shares; old shares (and any
    /// copy an attacker took) stop combining with the new ones.
    Refresh {
        key: Box<KeyPackage<C>>,
        public: Box<PublicKeyPackage<C>>,
    },
}

/// One party's distributed key generation (or share refresh).
pub struct Dkg<C: Ciphersuite> {
    eid: ExecutionId,
    me: u16,
    parties: BTreeSet<u16>,
    stage: DkgStage<C>,
    mode: Mode<C>,
}

impl<C: Ciphersuite> std::fmt::Debug for Dkg<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dkg").field("eid", &self.eid).field("me", &self.me).finish_non_exhaustive()
    }
}

impl<C: Ciphersuite> Dkg<C> {
    /// Start as party `me` (1..=n) of a `t`-of-`n` key. Returns the round-1 broadcast.
    pub fn start(
        eid: ExecutionId,
        me: u16,
        n: u16,
        t: u16,
        rng: impl rand_core::RngCore + rand_core::CryptoRng,
    ) -> Result<(Self, Outbox<DkgPayload<C>>), MpcError> {
        if !(2..=t.max(2)).contains(&t) || t > n || !(1..=n).contains(&me) {
            return Err(MpcError::Parameters(format!("party {me} of a {t}-of-{n} key")));
        }
        let parties: BTreeSet<u16> = (1..=n).collect();
        let (secret, package) =
            dkg::part1::<C, _>(ident(me)?, n, t, rng).map_err(|e| misbehaved(e, &parties))?;
        let out =
            Envelope { eid, round: 1, from: me, to: None, payload: DkgPayload::Round1(package) };
        Ok((
            Dkg {
                eid,
                me,
                parties,
                stage: DkgStage::Round1 { secret, got: BTreeMap::new() },
                mode: Mode::Fresh,
            },
            vec![out],
        ))
    }

    /// Start refreshing `old` among `parties` (same threshold, same group key, fresh
    /// shares). Every party named must take part; a party of the key left out (a
    /// quarantined node) keeps an old share that no longer combines with the new ones.
    pub fn start_refresh(
        eid: ExecutionId,
        old: &KeyShare<C>,
        parties: BTreeSet<u16>,
        rng: impl rand_core::RngCore + rand_core::CryptoRng,
    ) -> Result<(Self, Outbox<DkgPayload<C>>), MpcError> {
        let me = old.me;
        let t = *old.key_package.min_signers();
        let n = u16::try_from(parties.len()).map_err(|_| MpcError::Parameters("n".into()))?;
        if t < 2 || t > n || !parties.contains(&me) {
            return Err(MpcError::Parameters(format!(
                "party {me} refreshing a {t}-of-n key among {parties:?}"
            )));
        }
        for p in &parties {
            if !old.public.verifying_shares().contains_key(&ident(*p)?) {
                return Err(MpcError::Parameters(format!("party {p} holds no share of this key")));
            }
        }
        let (secret, package) =
            frost_core::keys::refresh::refresh_dkg_part1::<C, _>(ident(me)?, n, t, rng)
                .map_err(|e| misbehaved(e, &parties))?;
        let out =
            Envelope { eid, round: 1, from: me, to: None, payload: DkgPayload::Round1(package) };
        let mode = Mode::Refresh {
            key: Box::new(old.key_package.clone()),
            public: Box::new(old.public.clone()),
        };
        Ok((
            Dkg {
                eid,
                me,
                parties,
                stage: DkgStage::Round1 { secret, got: BTreeMap::new() },
                mode,
            },
            vec![out],
        ))
    }

    pub fn handle(
        &mut self,
        env: Envelope<DkgPayload<C>>,
    ) -> Result<Step<DkgPayload<C>, KeyShare<C>>, MpcError> {
        let expected = match (&self.stage, &env.payload) {
            (DkgStage::Over, _) => return Err(MpcError::Finished),
            (DkgStage::Round1 { .. }, DkgPayload::Round1(_)) => 1,
            (DkgStage::Round2 { .. }, DkgPayload::Round2(_)) => 2,
            (DkgStage::Round1 { .. }, _) => {
                return Err(MpcError::WrongRound { from: env.from, expected: 1, got: env.round })
            }
            (DkgStage::Round2 { .. }, _) => {
                return Err(MpcError::WrongRound { from: env.from, expected: 2, got: env.round })
            }
        };
        check(&env, self.eid, self.me, &self.parties, expected)?;
        if expected == 2 && env.to.is_none() {
            // Round-2 packages carry secret shares: one addressed message per party.
            return Err(MpcError::Misbehaved {
                culprits: vec![env.from],
                reason: "round-2 share sent as a broadcast".into(),
            });
        }
        let from = ident(env.from)?;
        let others = self.parties.len().saturating_sub(1);
        match (&mut self.stage, env.payload) {
            (DkgStage::Round1 { got, .. }, DkgPayload::Round1(package)) => {
                if got.insert(from, package).is_some() {
                    return Err(MpcError::Duplicate { from: env.from, round: 1 });
                }
                if got.len() < others {
                    return Ok(Step::Wait);
                }
            }
            (DkgStage::Round2 { got, .. }, DkgPayload::Round2(package)) => {
                if got.insert(from, package).is_some() {
                    return Err(MpcError::Duplicate { from: env.from, round: 2 });
                }
                if got.len() < others {
                    return Ok(Step::Wait);
                }
            }
            _ => return Err(MpcError::Finished),
        }
        // Every package of this round is in: move to the next part. A failure ends the DKG.
        match std::mem::replace(&mut self.stage, DkgStage::Over) {
            DkgStage::Round1 { secret, got } => {
                let (secret, packages) = match self.mode {
                    Mode::Fresh => dkg::part2(secret, &got),
                    Mode::Refresh { .. } => {
                        frost_core::keys::refresh::refresh_dkg_part2(secret, &got)
                    }
                }
                .map_err(|e| misbehaved(e, &self.parties))?;
                let mut out = Vec::with_capacity(packages.len());
                for (id, package) in packages {
                    let to = self.parties.iter().copied().find(|p| ident::<C>(*p).ok() == Some(id));
                    out.push(Envelope {
                        eid: self.eid,
                        round: 2,
                        from: self.me,
                        to,
                        payload: DkgPayload::Round2(package),
                    });
                }
                self.stage = DkgStage::Round2 { secret, round1: got, got: BTreeMap::new() };
                Ok(Step::Send(out))
            }
            DkgStage::Round2 { secret, round1, got } => {
                let (key_package, public) = match &self.mode {
                    Mode::Fresh => dkg::part3(&secret, &round1, &got),
                    Mode::Refresh { key, public } => frost_core::keys::refresh::refresh_dkg_shares(
                        &secret,
                        &round1,
                        &got,
                        (**public).clone(),
                        (**key).clone(),
                    ),
                }
                .map_err(|e| misbehaved(e, &self.parties))?;
                if let Mode::Refresh { public: old, .. } = &self.mode {
                    if old.verifying_key() != public.verifying_key() {
                        return Err(MpcError::Misbehaved {
                            culprits: vec![],
                            reason: "refresh changed the group key".into(),
                        });
                    }
                }
                Ok(Step::Finished(KeyShare { me: self.me, key_package, public }))
            }
            DkgStage::Over => Err(MpcError::Finished),
        }
    }
}

/// A field element from a party number (double and add: no serialization assumed).
fn scalar_of<C: Ciphersuite>(n: u16) -> frost_core::Scalar<C> {
    use frost_core::Field;
    let one = <<C::Group as frost_core::Group>::Field>::one();
    let mut acc = <<C::Group as frost_core::Group>::Field>::zero();
    for bit in (0..16).rev() {
        acc = acc + acc;
        if n >> bit & 1 == 1 {
            acc = acc + one;
        }
    }
    acc
}

/// `public` with a verifying share for party `new`: the helpers' verifying shares
/// interpolated at `new` (Lagrange in the exponent), the public image of the share a repair
/// computes for it.
fn with_new_party<C: Ciphersuite>(
    public: &PublicKeyPackage<C>,
    helpers: &BTreeSet<u16>,
    new: u16,
) -> Result<PublicKeyPackage<C>, MpcError> {
    use frost_core::{Field, Group};
    type F<C> = <<C as Ciphersuite>::Group as Group>::Field;
    let bad = |m: String| MpcError::Parameters(m);
    let x = scalar_of::<C>(new);
    let mut y = <C::Group as Group>::identity();
    for h in helpers {
        let share = public
            .verifying_shares()
            .get(&ident(*h)?)
            .ok_or_else(|| bad(format!("helper {h} holds no share of this key")))?;
        let xh = scalar_of::<C>(*h);
        let (mut num, mut den) = (F::<C>::one(), F::<C>::one());
        for j in helpers.iter().filter(|j| *j != h) {
            let xj = scalar_of::<C>(*j);
            num = num * (x - xj);
            den = den * (xh - xj);
        }
        let lambda = num * F::<C>::invert(&den).map_err(|e| bad(format!("{e:?}")))?;
        let bytes = share.serialize().map_err(|e| bad(e.to_string()))?;
        let ser = <C::Group as Group>::Serialization::try_from(bytes.as_slice())
            .map_err(|_| bad("a verifying share of the wrong length".into()))?;
        let element = <C::Group as Group>::deserialize(&ser).map_err(|e| bad(format!("{e:?}")))?;
        y = y + element * lambda;
    }
    let ser = <C::Group as Group>::serialize(&y).map_err(|e| bad(format!("{e:?}")))?;
    let share = frost_core::keys::VerifyingShare::<C>::deserialize(ser.as_ref())
        .map_err(|e| bad(e.to_string()))?;
    let mut shares = public.verifying_shares().clone();
    shares.insert(ident(new)?, share);
    Ok(PublicKeyPackage::new(shares, *public.verifying_key(), public.min_signers()))
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(bound = "")]
pub enum SignPayload<C: Ciphersuite> {
    Commitments(SigningCommitments<C>),
    Share(SignatureShare<C>),
}

/// One signer's part in signing one message.
pub struct Signer<'k, C: Ciphersuite> {
    eid: ExecutionId,
    me: u16,
    signers: BTreeSet<u16>,
    key: &'k KeyShare<C>,
    message: Vec<u8>,
    /// Used exactly once, then dropped (frost zeroizes nonces on drop).
    nonces: Option<SigningNonces<C>>,
    commitments: BTreeMap<Identifier<C>, SigningCommitments<C>>,
    package: Option<SigningPackage<C>>,
    shares: BTreeMap<Identifier<C>, SignatureShare<C>>,
}

impl<C: Ciphersuite> std::fmt::Debug for Signer<'_, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer")
            .field("eid", &self.eid)
            .field("me", &self.me)
            .finish_non_exhaustive()
    }
}

impl<'k, C: Ciphersuite> Signer<'k, C> {
    /// Start signing `message` with the given signer set (which must include this party and
    /// meet the threshold). Returns the round-1 broadcast of this party's commitments.
    pub fn start(
        eid: ExecutionId,
        key: &'k KeyShare<C>,
        signers: BTreeSet<u16>,
        message: &[u8],
        mut rng: impl rand_core::RngCore + rand_core::CryptoRng,
    ) -> Result<(Self, Outbox<SignPayload<C>>), MpcError> {
        let min = usize::from(*key.key_package.min_signers());
        if !signers.contains(&key.me) || signers.len() < min {
            return Err(MpcError::Parameters(format!(
                "signers {signers:?} must include {} and number at least {min}",
                key.me
            )));
        }
        let (nonces, commitments) =
            frost_core::round1::commit(key.key_package.signing_share(), &mut rng);
        let mut all = BTreeMap::new();
        all.insert(ident(key.me)?, commitments);
        let out = Envelope {
            eid,
            round: 1,
            from: key.me,
            to: None,
            payload: SignPayload::Commitments(commitments),
        };
        let signer = Signer {
            eid,
            me: key.me,
            signers,
            key,
            message: message.to_vec(),
            nonces: Some(nonces),
            commitments: all,
            package: None,
            shares: BTreeMap::new(),
        };
        Ok((signer, vec![out]))
    }

    pub fn handle(
        &mut self,
        env: Envelope<SignPayload<C>>,
    ) -> Result<Step<SignPayload<C>, Signature<C>>, MpcError> {
        match env.payload {
            SignPayload::Commitments(c) => {
                check(&env, self.eid, self.me, &self.signers, 1)?;
                if self.package.is_some() || self.commitments.insert(ident(env.from)?, c).is_some()
                {
                    return Err(MpcError::Duplicate { from: env.from, round: 1 });
                }
                if self.commitments.len() < self.signers.len() {
                    return Ok(Step::Wait);
                }
                let package = SigningPackage::new(self.commitments.clone(), &self.message);
                let nonces = self.nonces.take().ok_or(MpcError::Finished)?;
                let share = frost_core::round2::sign(&package, &nonces, &self.key.key_package)
                    .map_err(|e| misbehaved(e, &self.signers))?;
                drop(nonces);
                self.shares.insert(ident(self.me)?, share);
                self.package = Some(package);
                let out = Envelope {
                    eid: self.eid,
                    round: 2,
                    from: self.me,
                    to: None,
                    payload: SignPayload::Share(share),
                };
                Ok(Step::Send(vec![out]))
            }
            SignPayload::Share(s) => {
                check(&env, self.eid, self.me, &self.signers, 2)?;
                // A share that arrives before this party has all commitments is not taken
                // (the caller may offer it again once round 1 is done).
                if self.package.is_none() {
                    return Err(MpcError::WrongRound { from: env.from, expected: 1, got: 2 });
                }
                if self.shares.insert(ident(env.from)?, s).is_some() {
                    return Err(MpcError::Duplicate { from: env.from, round: 2 });
                }
                let Some(package) = &self.package else {
                    return Err(MpcError::WrongRound { from: env.from, expected: 1, got: 2 });
                };
                if self.shares.len() < self.signers.len() {
                    return Ok(Step::Wait);
                }
                // Aggregation verifies every share and names the parties whose share is bad.
                frost_core::aggregate(package, &self.shares, &self.key.public)
                    .map(Step::Finished)
                    .map_err(|e| misbehaved(e, &self.signers))
            }
        }
    }
}

#[derive(Clone, serde::Serialize, serde::Deserialize)]
#[serde(bound = "")]
pub enum RepairPayload<C: Ciphersuite> {
    /// Helper to helper: one share of the helper's Lagrange-weighted contribution.
    Delta(frost_core::keys::repairable::Delta<C>),
    /// Helper to the party being repaired: the sum of the deltas it received, with the
    /// group's public key package (public).
    Sigma { sigma: frost_core::keys::repairable::Sigma<C>, public: PublicKeyPackage<C> },
}

impl<C: Ciphersuite> std::fmt::Debug for RepairPayload<C> {
    /// Deltas and sigmas are secret-derived: only the kind is shown.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RepairPayload::Delta(_) => f.write_str("Delta(<redacted>)"),
            RepairPayload::Sigma { .. } => f.write_str("Sigma(<redacted>)"),
        }
    }
}

/// How a repair ended for this party.
#[derive(Debug)]
pub enum Repaired<C: Ciphersuite> {
    /// A helper: sent its part; holds nothing new.
    Helped,
    /// The party that lost its share: here it is again, checked against the group's public
    /// verifying share for this party.
    Restored(KeyShare<C>),
}

/// Repairable threshold scheme (RTS): `t` helpers rebuild a lost share for another party
/// without any of them learning it. Round 1: helpers exchange deltas; round 2: each helper
/// sends the sum of what it received to the party being repaired.
pub struct Repair<'k, C: Ciphersuite> {
    eid: ExecutionId,
    me: u16,
    helpers: BTreeSet<u16>,
    lost: u16,
    key: Option<&'k KeyShare<C>>,
    deltas: BTreeMap<u16, frost_core::keys::repairable::Delta<C>>,
    sigmas: BTreeMap<u16, frost_core::keys::repairable::Sigma<C>>,
    public: Option<PublicKeyPackage<C>>,
    /// A helper enrolling a new party: the group's public keys with its verifying share.
    enrolled: bool,
    done: bool,
}

impl<C: Ciphersuite> std::fmt::Debug for Repair<'_, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Repair")
            .field("eid", &self.eid)
            .field("me", &self.me)
            .field("lost", &self.lost)
            .finish_non_exhaustive()
    }
}

impl<'k, C: Ciphersuite> Repair<'k, C> {
    /// Start as a helper holding `key`. Returns one delta for every other helper. When
    /// `lost` holds no share of the key, this enrols it as a new party: the same
    /// polynomial's value at `lost`, with its verifying share interpolated from the
    /// helpers' (every helper computes the same one), so that every party can check it.
    pub fn start_helper(
        eid: ExecutionId,
        key: &'k KeyShare<C>,
        helpers: BTreeSet<u16>,
        lost: u16,
        mut rng: impl rand_core::RngCore + rand_core::CryptoRng,
    ) -> Result<(Self, Outbox<RepairPayload<C>>), MpcError> {
        if helpers.contains(&lost) || !helpers.contains(&key.me) {
            return Err(MpcError::Parameters(format!(
                "helpers {helpers:?} must include {} and not {lost}",
                key.me
            )));
        }
        let ids: Vec<Identifier<C>> =
            helpers.iter().map(|h| ident(*h)).collect::<Result<_, _>>()?;
        let deltas = frost_core::keys::repairable::repair_share_part1(
            &ids,
            &key.key_package,
            &mut rng,
            ident(lost)?,
        )
        .map_err(|e| misbehaved(e, &helpers))?;
        let enrolled = !key.public.verifying_shares().contains_key(&ident(lost)?);
        let public = if enrolled {
            with_new_party(&key.public, &helpers, lost)?
        } else {
            key.public.clone()
        };
        let mut me = Repair {
            eid,
            me: key.me,
            helpers: helpers.clone(),
            lost,
            key: Some(key),
            deltas: BTreeMap::new(),
            sigmas: BTreeMap::new(),
            public: Some(public),
            enrolled,
            done: false,
        };
        let mut out = Vec::new();
        for h in &helpers {
            let d = *deltas
                .get(&ident(*h)?)
                .ok_or_else(|| MpcError::Parameters("missing delta".into()))?;
            if *h == key.me {
                me.deltas.insert(*h, d);
            } else {
                out.push(Envelope {
                    eid,
                    round: 1,
                    from: key.me,
                    to: Some(*h),
                    payload: RepairPayload::Delta(d),
                });
            }
        }
        Ok((me, out))
    }

    /// Start as the party whose share is being rebuilt.
    pub fn start_lost(eid: ExecutionId, me: u16, helpers: BTreeSet<u16>) -> Result<Self, MpcError> {
        if helpers.contains(&me) || helpers.len() < 2 {
            return Err(MpcError::Parameters(format!("helpers {helpers:?} for party {me}")));
        }
        Ok(Repair {
            eid,
            me,
            helpers,
            lost: me,
            key: None,
            deltas: BTreeMap::new(),
            sigmas: BTreeMap::new(),
            public: None,
            enrolled: false,
            done: false,
        })
    }

    /// A helper that enrolled a new party: its own share with the group's public keys
    /// that now include the new party (to keep once every party has it). `None` for a
    /// repair, or before the helper has sent its part.
    pub fn enrolled(&self) -> Option<KeyShare<C>> {
        let key = self.key?;
        let public = self.public.clone()?;
        (self.enrolled && self.done).then(|| KeyShare {
            me: key.me,
            key_package: key.key_package.clone(),
            public,
        })
    }

    /// True once a helper has sent its sigma (it has nothing more to do).
    pub fn is_done(&self) -> bool {
        self.done
    }

    pub fn handle(
        &mut self,
        env: Envelope<RepairPayload<C>>,
    ) -> Result<Step<RepairPayload<C>, Repaired<C>>, MpcError> {
        if self.done {
            return Err(MpcError::Finished);
        }
        let Envelope { eid, round, from, to, payload } = env;
        let head = Envelope { eid, round, from, to, payload: () };
        let env = &head;
        match payload {
            RepairPayload::Delta(d) => {
                if self.key.is_none() {
                    return Err(MpcError::WrongRound { from: env.from, expected: 2, got: 1 });
                }
                check(env, self.eid, self.me, &self.helpers, 1)?;
                if env.to.is_none() {
                    return Err(MpcError::Misbehaved {
                        culprits: vec![env.from],
                        reason: "delta sent as a broadcast".into(),
                    });
                }
                if self.deltas.insert(env.from, d).is_some() {
                    return Err(MpcError::Duplicate { from: env.from, round: 1 });
                }
                if self.deltas.len() < self.helpers.len() {
                    return Ok(Step::Wait);
                }
                let deltas: Vec<_> = self.deltas.values().copied().collect();
                let sigma = frost_core::keys::repairable::repair_share_part2(&deltas);
                let public =
                    self.public.clone().ok_or_else(|| MpcError::Parameters("no public".into()))?;
                self.done = true;
                Ok(Step::Send(vec![Envelope {
                    eid: self.eid,
                    round: 2,
                    from: self.me,
                    to: Some(self.lost),
                    payload: RepairPayload::Sigma { sigma, public },
                }]))
            }
            RepairPayload::Sigma { sigma, public } => {
                if self.key.is_some() {
                    return Err(MpcError::NotForMe { to: self.lost });
                }
                check(env, self.eid, self.me, &self.helpers, 2)?;
                match &self.public {
                    None => self.public = Some(public),
                    Some(p) if *p == public => {}
                    Some(_) => {
                        return Err(MpcError::Misbehaved {
                            culprits: vec![env.from],
                            reason: "helpers disagree on the group's public keys".into(),
                        })
                    }
                }
                if self.sigmas.insert(env.from, sigma).is_some() {
                    return Err(MpcError::Duplicate { from: env.from, round: 2 });
                }
                if self.sigmas.len() < self.helpers.len() {
                    return Ok(Step::Wait);
                }
                let public =
                    self.public.clone().ok_or_else(|| MpcError::Parameters("no public".into()))?;
                let sigmas: Vec<_> = self.sigmas.values().copied().collect();
                let key_package = frost_core::keys::repairable::repair_share_part3(
                    &sigmas,
                    ident(self.me)?,
                    &public,
                )
                .map_err(|e| misbehaved(e, &self.helpers))?;
                // The rebuilt share must match the group's record of this party's share.
                let expected = public.verifying_shares().get(&ident(self.me)?);
                if expected != Some(key_package.verifying_share()) {
                    return Err(MpcError::Misbehaved {
                        culprits: vec![],
                        reason: "rebuilt share does not match this party's verifying share".into(),
                    });
                }
                self.done = true;
                Ok(Step::Finished(Repaired::Restored(KeyShare {
                    me: self.me,
                    key_package,
                    public,
                })))
            }
        }
    }
}
