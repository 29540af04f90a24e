//! The signer protocol's frames. Every frame is a 4-byte big-endian length and a body whose
//! first byte is its kind:
//!
//! - `1` control: JSON [`Control`] (orchestrator requests and node replies);
//! - `2` MPC message: `proto u8 | eid [32] | round u8 | from u16 | to u16 (0 = all) | payload`;
//! - `3` abort: `eid [32] | from u16 | reason (UTF-8)`, sent by a node that leaves a session
//!   so its peers stop at once instead of timing out.
//!
//! The sender of an MPC or abort frame must be the node the TLS connection authenticated;
//! a frame claiming another sender is refused and blamed on the connection's node.

use serde::{Deserialize, Serialize};
use strongroom_mpc::{Envelope, ExecutionId};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Largest frame accepted (cggmp21 aux-info messages are a few hundred kilobytes).
pub const MAX_FRAME: usize = 16 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("connection: {0}")]
    Io(#[from] std::io::Error),
    #[error("frame of {0} bytes exceeds the {MAX_FRAME}-byte limit")]
    TooLarge(usize),
    #[error("malformed frame: {0}")]
    Malformed(String),
}

/// Which protocol an MPC frame belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Proto {
    Ecdsa = 1,
    FrostDkg = 2,
    FrostSign = 3,
}

impl Proto {
    fn from_u8(b: u8) -> Option<Proto> {
        match b {
            1 => Some(Proto::Ecdsa),
            2 => Some(Proto::FrostDkg),
            3 => Some(Proto::FrostSign),
            _ => None,
        }
    }
}

/// The signature schemes a node holds keys for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scheme {
    /// Threshold ECDSA on secp256k1 (CGGMP21), with BIP-32 child keys.
    Ecdsa,
    /// FROST BIP-340 Schnorr on secp256k1; the group key is the Taproot output key.
    FrostTaproot,
    /// FROST Ed25519.
    FrostEd25519,
}

/// What the transaction bytes in a signing request are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TxFormat {
    /// An unsigned EIP-1559 Ethereum transaction (`0x02 || rlp([...])`).
    #[default]
    Eip1559,
    /// An unsigned Bitcoin transaction from a hot wallet's P2WPKH key (the key itself or a
    /// deposit child by `path`), as a BIP-174 PSBT whose every input carries the whole
    /// transaction it spends; the node signs input `input`'s BIP-143 digest after decoding
    /// all of it (`chain_bitcoin::hot::HotCodec`).
    BitcoinPsbt,
    /// Caller-supplied bytes or digest. Kept on the wire only so that a node can name it
    /// when it refuses: no node signs bytes it did not decode or build itself.
    RawMessage,
    /// A proof of control: `tx` is a verifier's challenge (hex, 16 to 64 bytes); the node
    /// builds the statement itself ([`crate::check::proof_of_control`]) and signs its
    /// tagged hash, which no transaction's digest can equal. Under governance, only when
    /// the policy lists `proof_of_control` among its `messages`.
    ProofOfControl,
}

/// Everything a node needs to decide, on its own, whether to sign.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct SignRequest {
    /// The canonical intent encoding (hex), as approved.
    pub intent: String,
    pub format: TxFormat,
    /// The unsigned transaction (hex).
    pub tx: String,
    /// Non-hardened BIP-32 path of the signing key below the master key (ECDSA only).
    #[serde(default)]
    pub path: Vec<u32>,
    /// Which input's digest to sign, for transactions with one signature per input
    /// (`bitcoin-psbt`); 0 otherwise. Every input of one transaction counts as the one
    /// transaction signed for the intent.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub input: u32,
    /// Signed approvals of the intent (nodes with governance verify them themselves).
    #[serde(default)]
    pub approvals: Vec<strongroom_governance::approval::Approval>,
    /// Who asked for the movement, proven: the initiator's signature over what they asked
    /// (the node checks it against the intent, and takes their roles from the log).
    #[serde(default)]
    pub initiation: Option<Box<strongroom_governance::initiation::Initiation>>,
    /// The customer whose withdrawal this is (for the customer's whitelist); when the
    /// initiation names one, it must be this one.
    #[serde(default)]
    pub customer_id: Option<String>,
    /// Governance log entries; a node appends those it lacks after verifying all of them.
    #[serde(default)]
    pub governance: Vec<strongroom_governance::log::Entry>,
    /// The customer's passkeys, as registered online: a node records when it first saw each
    /// and, once it has held one for the governance time-lock, requires the customer's own
    /// signature on their withdrawals.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub customer_keys: Vec<strongroom_governance::initiation::CustomerKey>,
    /// The customer's own signed request (`initiator` is the customer id; a passkey
    /// assertion whose challenge is the request's message).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub customer_approval: Option<Box<strongroom_governance::initiation::Initiation>>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// (A signing request is the largest; a request is decoded once from its frame and moved, so
/// boxing it would buy nothing, as with [`Frame`].)
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case")]
#[allow(clippy::large_enum_variant)]
pub enum Request {
    Status,
    /// CGGMP21 auxiliary info for this node group (once per group).
    AuxInfo {
        eid: String,
        parties: Vec<u16>,
    },
    Keygen {
        eid: String,
        key_id: String,
        scheme: Scheme,
        parties: Vec<u16>,
        threshold: u16,
    },
    /// Make one ECDSA presignature for `key_id` with exactly these signers.
    Presign {
        eid: String,
        key_id: String,
        signers: Vec<u16>,
    },
    /// Sign. ECDSA consumes the named presignature and returns a partial signature; FROST
    /// runs its two rounds with the other signers and returns the signature.
    Sign {
        eid: String,
        key_id: String,
        signers: Vec<u16>,
        #[serde(default)]
        presignature: Option<String>,
        request: SignRequest,
    },
    /// Leave a session (another signer refused or failed).
    Abort {
        eid: String,
        reason: String,
    },
    /// Refresh a FROST key's shares among `parties` (empty: all its parties; only nodes
    /// governance quarantined may be left out), same group key. The new share is kept beside
    /// the old one until [`Request::CommitRefresh`].
    Refresh {
        eid: String,
        key_id: String,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        parties: Vec<u16>,
    },
    /// Make the refreshed share the current one and destroy the old one. Idempotent.
    CommitRefresh {
        key_id: String,
    },
    /// Drop a refreshed share that did not commit everywhere.
    DiscardRefresh {
        key_id: String,
    },
    /// A member pushes signed governance entries (the whole log, or any prefix of it longer
    /// than the node's) straight to the node, past the orchestrator. Allowed from the
    /// orchestrator and from the pinned pushers; the node verifies every entry against its
    /// pinned genesis and tells its peers. Answered with the node's head.
    Push {
        entries: Vec<strongroom_governance::log::Entry>,
    },
    /// Node to node, over the mesh only: the asker's governance head, and the sequence
    /// number of the answerer's own velocity records the asker has up to. Answered with
    /// [`Reply::Mesh`].
    Mesh {
        head: Head,
        since: u64,
    },
    /// Rebuild node `lost`'s share of a FROST key with the help of `helpers` (at least the
    /// threshold). Sent to the helpers and to the node being repaired. When `lost` holds no
    /// share of the key this enrols it as a new party: every party helps, and keeps the
    /// group's grown public keys beside its own until [`Request::CommitRefresh`].
    Repair {
        eid: String,
        key_id: String,
        scheme: Scheme,
        helpers: Vec<u16>,
        lost: u16,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyInfo {
    pub key_id: String,
    pub scheme: Scheme,
    pub threshold: u16,
    pub parties: Vec<u16>,
    /// Group public key (hex): 33-byte compressed for ECDSA, 32-byte x-only for Taproot,
    /// 32 bytes for Ed25519.
    pub public_key: String,
    /// BIP-32 chain code (hex), ECDSA only.
    #[serde(default)]
    pub chain_code: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolEntry {
    pub key_id: String,
    pub signers: Vec<u16>,
    pub ids: Vec<String>,
}

/// The newest governance entry a node has verified: how many entries its log holds, and the
/// hash of the last one (the genesis hash when it holds none).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Head {
    pub seq: u64,
    pub hash: String,
}

/// A node's answer over the mesh: its head, the entries the asker lacks (when its log is
/// longer), and its own velocity records from the asker's cursor on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MeshState {
    pub head: Head,
    #[serde(default)]
    pub entries: Vec<strongroom_governance::log::Entry>,
    #[serde(default)]
    pub records: Vec<crate::governance::Spent>,
    /// Every customer key the node knows (each node runs its own time-lock from when it
    /// first saw a key).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub customer_keys: Vec<strongroom_governance::initiation::CustomerKey>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeStatus {
    pub node: u16,
    pub aux_ready: bool,
    pub primes_ready: usize,
    pub keys: Vec<KeyInfo>,
    pub presignatures: Vec<PoolEntry>,
    /// The node's governance head (none on a node without governance).
    #[serde(default)]
    pub governance: Option<Head>,
    /// Signer nodes governance quarantined, as this node knows it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub quarantined: Vec<u16>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Reply {
    Status(NodeStatus),
    AuxReady,
    Key(KeyInfo),
    Presigned {
        id: String,
    },
    /// ECDSA partial signature (JSON, hex) and the child public key it is for.
    Partial {
        partial: String,
        public_key: String,
        digest: String,
    },
    /// FROST signature (hex) with the message it signs.
    Signature {
        signature: String,
        public_key: String,
        message: String,
    },
    Aborted,
    /// A refresh or repair step finished; `key` is this node's view of the key after it.
    KeyUpdated(KeyInfo),
    Done,
    /// The node's governance head after a push.
    Head(Head),
    Mesh(MeshState),
}

/// Why a node did not do what it was asked: a typed [`Reason`], the node, and the parties
/// at fault. The same type reaches the engine and the API.
pub use strongroom_governance::refusal::{Reason, Refusal};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum Control {
    Request { id: u64, body: Request },
    Response { id: u64, body: Result<Reply, Refusal> },
}

impl Control {
    /// The request id of a response frame whose body does not decode (a node on another
    /// protocol version sending a reason this side does not know, or one that misbehaves),
    /// so the request waiting for it can fail at once instead of at its timeout.
    pub fn unreadable_response(frame_body: &[u8]) -> Option<u64> {
        let (&kind, rest) = frame_body.split_first()?;
        if kind != 1 {
            return None;
        }
        let v: serde_json::Value = serde_json::from_slice(rest).ok()?;
        if v.get("type")?.as_str()? != "response" {
            return None;
        }
        v.get("id")?.as_u64()
    }
}

/// One decoded frame. (A control frame is the largest; frames are built once and moved
/// into a channel, so boxing it would buy nothing.)
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(clippy::large_enum_variant)]
pub enum Frame {
    Control(Control),
    Mpc { proto: Proto, envelope: Envelope<Vec<u8>> },
    Abort { eid: ExecutionId, from: u16, reason: String },
}

impl Frame {
    pub fn encode(&self) -> Result<Vec<u8>, WireError> {
        let mut body = Vec::new();
        match self {
            Frame::Control(c) => {
                body.push(1);
                serde_json::to_writer(&mut body, c)
                    .map_err(|e| WireError::Malformed(e.to_string()))?;
            }
            Frame::Mpc { proto, envelope } => {
                body.push(2);
                body.push(*proto as u8);
                body.extend_from_slice(&envelope.eid.0);
                body.push(envelope.round);
                body.extend_from_slice(&envelope.from.to_be_bytes());
                body.extend_from_slice(&envelope.to.unwrap_or(0).to_be_bytes());
                body.extend_from_slice(&envelope.payload);
            }
            Frame::Abort { eid, from, reason } => {
                body.push(3);
                body.extend_from_slice(&eid.0);
                body.extend_from_slice(&from.to_be_bytes());
                body.extend_from_slice(reason.as_bytes());
            }
        }
        if body.len() > MAX_FRAME {
            return Err(WireError::TooLarge(body.len()));
        }
        let len = u32::try_from(body.len()).map_err(|_| WireError::TooLarge(body.len()))?;
        let mut out = Vec::with_capacity(body.len() + 4);
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(&body);
        Ok(out)
    }

    pub fn decode(body: &[u8]) -> Result<Frame, WireError> {
        let bad = |m: &str| WireError::Malformed(m.to_string());
        let (&kind, rest) = body.split_first().ok_or_else(|| bad("empty frame"))?;
        match kind {
            1 => serde_json::from_slice(rest)
                .map(Frame::Control)
                .map_err(|e| WireError::Malformed(format!("control: {e}"))),
            2 => {
                let (&proto, rest) = rest.split_first().ok_or_else(|| bad("short MPC frame"))?;
                let proto = Proto::from_u8(proto).ok_or_else(|| bad("unknown protocol"))?;
                let (eid, rest) = split::<32>(rest).ok_or_else(|| bad("short MPC frame"))?;
                let (round, rest) = split::<1>(rest).ok_or_else(|| bad("short MPC frame"))?;
                let (from, rest) = split::<2>(rest).ok_or_else(|| bad("short MPC frame"))?;
                let (to, payload) = split::<2>(rest).ok_or_else(|| bad("short MPC frame"))?;
                let to = u16::from_be_bytes(to);
                Ok(Frame::Mpc {
                    proto,
                    envelope: Envelope {
                        eid: ExecutionId(eid),
                        round: u8::from_be_bytes(round),
                        from: u16::from_be_bytes(from),
                        to: (to != 0).then_some(to),
                        payload: payload.to_vec(),
                    },
                })
            }
            3 => {
                let (eid, rest) = split::<32>(rest).ok_or_else(|| bad("short abort frame"))?;
                let (from, reason) = split::<2>(rest).ok_or_else(|| bad("short abort frame"))?;
                Ok(Frame::Abort {
                    eid: ExecutionId(eid),
                    from: u16::from_be_bytes(from),
                    reason: String::from_utf8_lossy(reason).into_owned(),
                })
            }
            k => Err(WireError::Malformed(format!("unknown frame kind {k}"))),
        }
    }
}

fn split<const N: usize>(b: &[u8]) -> Option<([u8; N], &[u8])> {
    let head = b.get(..N)?;
    let tail = b.get(N..)?;
    Some((<[u8; N]>::try_from(head).ok()?, tail))
}

/// Read one frame's body. `Ok(None)` at a clean end of stream.
pub async fn read_frame<R: AsyncRead + Unpin>(r: &mut R) -> Result<Option<Vec<u8>>, WireError> {
    let mut len = [0u8; 4];
    match r.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_FRAME {
        return Err(WireError::TooLarge(len));
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body).await?;
    Ok(Some(body))
}

pub async fn write_frame<W: AsyncWrite + Unpin>(w: &mut W, f: &Frame) -> Result<(), WireError> {
    w.write_all(&f.encode()?).await?;
    w.flush().await?;
    Ok(())
}

pub fn eid_hex(eid: &ExecutionId) -> String {
    hex::encode(eid.0)
}

pub fn parse_eid(s: &str) -> Result<ExecutionId, String> {
    let b = hex::decode(s).map_err(|e| format!("execution id: {e}"))?;
    <[u8; 32]>::try_from(b.as_slice())
        .map(ExecutionId)
        .map_err(|_| "execution id must be 32 bytes".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_bad_ones_are_named() {
        let env = Envelope {
            eid: ExecutionId([9; 32]),
            round: 3,
            from: 2,
            to: Some(1),
            payload: b"payload".to_vec(),
        };
        for f in [
            Frame::Mpc { proto: Proto::FrostSign, envelope: env.clone() },
            Frame::Mpc { proto: Proto::Ecdsa, envelope: Envelope { to: None, ..env.clone() } },
            Frame::Abort { eid: env.eid, from: 3, reason: "refused: no".into() },
            Frame::Control(Control::Request { id: 7, body: Request::Status }),
        ] {
            let bytes = f.encode().unwrap();
            assert_eq!(
                u32::from_be_bytes(bytes[..4].try_into().unwrap()) as usize,
                bytes.len() - 4
            );
            assert_eq!(Frame::decode(&bytes[4..]).unwrap(), f);
        }
        assert!(Frame::decode(&[]).is_err());
        assert!(Frame::decode(&[9]).unwrap_err().to_string().contains("unknown frame kind"));
        assert!(Frame::decode(&[2, 1, 0, 0]).unwrap_err().to_string().contains("short"));
        assert!(Frame::decode(&[2, 99]).unwrap_err().to_string().contains("unknown protocol"));
        assert!(Frame::decode(b"\x01{not json").is_err());
    }

    #[tokio::test]
    async fn oversized_frames_are_refused_before_reading_them() {
        let mut data = ((MAX_FRAME + 1) as u32).to_be_bytes().to_vec();
        data.extend([0u8; 16]);
        let mut r = data.as_slice();
        assert!(matches!(read_frame(&mut r).await, Err(WireError::TooLarge(_))));
        let mut empty: &[u8] = &[];
        assert!(read_frame(&mut empty).await.unwrap().is_none(), "clean end of stream");
    }
}
