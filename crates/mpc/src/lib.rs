//! Sans-IO threshold protocols. This crate does no I/O: a protocol is a state machine that
//! the caller feeds with received messages and that returns messages to send. Transport,
//! storage of shares and the signer's policy checks live in the signer crate.
//!
//! Implemented so far: FROST (RFC 9591) distributed key generation and two-round signing,
//! generic over the ciphersuite, used with secp256k1-Taproot (BIP-340) and Ed25519.
//! Threshold ECDSA on secp256k1 with CGGMP21 ([`ecdsa`]): auxiliary info, key generation,
//! presignatures, and non-interactive signing from a presignature with BIP-32 child keys.
//!
//! Every message travels in an [`Envelope`] that names its execution, round, sender and
//! recipient. A state machine refuses an envelope from another execution, a wrong round, an
//! unknown or duplicate sender: a message captured from one session cannot be replayed into
//! another.
#![forbid(unsafe_code)]

pub mod ecdsa;
pub mod frost;

use sha2::{Digest, Sha256};

/// The id of one protocol run, derived from what it is for.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ExecutionId(pub [u8; 32]);

impl ExecutionId {
    /// `SHA-256("strongroom/mpc/eid/v1" 0 kind 0 request_id SHA-256(message))`: signing
    /// the same message for another request, or another message for the same request,
    /// gives another id.
    pub fn derive(kind: &str, request_id: &[u8], message: &[u8]) -> Self {
        let mut h = Sha256::new();
        h.update(b"strongroom/mpc/eid/v1\0");
        h.update(kind.as_bytes());
        h.update([0]);
        h.update((request_id.len() as u64).to_be_bytes());
        h.update(request_id);
        h.update(Sha256::digest(message));
        ExecutionId(h.finalize().into())
    }
}

impl std::fmt::Debug for ExecutionId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let hex: String = self.0.iter().take(8).map(|b| format!("{b:02x}")).collect();
        write!(f, "ExecutionId({hex}…)")
    }
}

/// A protocol message with its routing facts. `to: None` is a broadcast.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope<P> {
    pub eid: ExecutionId,
    pub round: u8,
    pub from: u16,
    pub to: Option<u16>,
    pub payload: P,
}

/// Why a protocol step failed. Peer misbehaviour names the culprits.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MpcError {
    #[error("message from party {from} belongs to another execution")]
    WrongExecution { from: u16 },
    #[error("message from party {from} is for round {got}, expected round {expected}")]
    WrongRound { from: u16, expected: u8, got: u8 },
    #[error("message from party {from}, who is not in this session")]
    UnknownSender { from: u16 },
    #[error("second message from party {from} in round {round}")]
    Duplicate { from: u16, round: u8 },
    #[error("message addressed to party {to}, not to this party")]
    NotForMe { to: u16 },
    #[error("parties {culprits:?} misbehaved: {reason}")]
    Misbehaved { culprits: Vec<u16>, reason: String },
    #[error("invalid parameters: {0}")]
    Parameters(String),
    #[error("the session is finished or failed")]
    Finished,
}

/// `rand_core` 0.6 randomness drawn from an [`Env`] (defined in `core`).
pub use strongroom_core::env::EnvRng;
