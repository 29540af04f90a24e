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

/// One party's distributed key generation.
pub struct Dkg<C: Ciphersuite> {
    eid: ExecutionId,
    me: u16,
    parties: BTreeSet<u16>,
    stage: DkgStage<C>,
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
            Dkg { eid, me, parties, stage: DkgStage::Round1 { secret, got: BTreeMap::new() } },
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
                let (secret, packages) =
                    dkg::part2(secret, &got).map_err(|e| misbehaved(e, &self.parties))?;
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
                let (key_package, public) =
                    dkg::part3(&secret, &round1, &got).map_err(|e| misbehaved(e, &self.parties))?;
                Ok(Step::Finished(KeyShare { me: self.me, key_package, public }))
            }
            DkgStage::Over => Err(MpcError::Finished),
        }
    }
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
