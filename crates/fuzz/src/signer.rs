//! The signer protocol: one frame's body as `read_frame` hands it to `Frame::decode` (peers
//! and orchestrators, after mutual TLS), and the signing request a node checks before it
//! joins a session (`check::decode`, then `TxMatchesIntent`).

use strongroom_chain_ethereum::safe::keccak;
use strongroom_signer::check::{decode, CheckContext, Decoded, PreSignCheck, TxMatchesIntent};
use strongroom_signer::wire::{Control, Frame, KeyInfo, Reason, Request, SignRequest, TxFormat};

use crate::fixtures::fixtures;
use crate::{broken, ensure, json_round_trip, Verdict};

/// One frame body.
///
/// Properties: a decoded frame encodes (with its length prefix) to a body that decodes to
/// the same frame; a signing request inside a control frame goes through [`sign_request`]'s
/// checks.
pub fn signer_frame(data: &[u8]) -> Verdict {
    let Ok(frame) = Frame::decode(data) else {
        return Verdict::Malformed;
    };
    match frame.encode() {
        Ok(bytes) => {
            let (len, body) = bytes.split_at(4.min(bytes.len()));
            let len = <[u8; 4]>::try_from(len).map(u32::from_be_bytes).ok();
            ensure(len.and_then(|l| usize::try_from(l).ok()) == Some(body.len()), || {
                "the length prefix is not the body's length".into()
            });
            match Frame::decode(body) {
                Ok(again) => ensure(again == frame, || {
                    format!("a frame changes through encode: {frame:?} became {again:?}")
                }),
                Err(e) => broken(format_args!("a frame's own encoding does not decode: {e}")),
            }
        }
        Err(e) => broken(format_args!("a decoded frame does not encode: {e}")),
    }
    match &frame {
        Frame::Control(Control::Request { body: Request::Sign { request, .. }, .. }) => {
            check_request(request)
        }
        Frame::Control(Control::Response { body: Err(refusal), .. }) => {
            json_round_trip("a refusal", refusal);
            Verdict::Accepted
        }
        _ => Verdict::Accepted,
    }
}

/// A signing request's JSON (the `request` of a `sign` control message).
pub fn sign_request(data: &[u8]) -> Verdict {
    match serde_json::from_slice::<SignRequest>(data) {
        Ok(r) => check_request(&r),
        Err(_) => Verdict::Malformed,
    }
}

/// What a node does with a request for the fixtures' hot key before it signs: decode it,
/// derive the bytes to sign, and check the transaction against the intent.
///
/// Properties: the digest of a transaction is the Keccak-256 of its bytes, and the decoded
/// transaction is what the codec reads; a proof of control signs a statement naming the
/// challenge; every refusal is a typed reason that survives JSON (it travels to the engine).
fn check_request(request: &SignRequest) -> Verdict {
    let fx = fixtures();
    let to_sign = match decode(&fx.key_info, request) {
        Ok(t) => t,
        Err(reason) => return refused(&reason),
    };
    match &to_sign.decoded {
        Decoded::Tx { movement, intent, identity, consumes } => {
            ensure(consumes.len() == 32, || "what a transaction consumes is a 32-byte hash".into());
            let Ok(bytes) = hex::decode(&request.tx) else {
                broken(format_args!("check::decode accepted transaction bytes that are not hex"))
            };
            match request.format {
                TxFormat::Eip1559 => {
                    ensure(to_sign.bytes == keccak(&bytes), || {
                        "the digest is not the transaction's".into()
                    });
                    ensure(identity == &to_sign.bytes, || {
                        "an Ethereum transaction is journalled by its digest".into()
                    });
                    match strongroom_chain_ethereum::EthCodec::new(intent.chain.clone())
                        .and_then(|c| c.parse(&bytes))
                    {
                        Ok(again) => ensure(&again.movement == movement, || {
                            "check::decode and the codec disagree".into()
                        }),
                        Err(e) => {
                            broken(format_args!("the codec refuses what check::decode read: {e}"))
                        }
                    }
                }
                TxFormat::BitcoinPsbt => {
                    let again = hot_key(&fx.key_info, &request.path).and_then(|pk| {
                        strongroom_chain_bitcoin::hot::HotCodec::p2wpkh(intent.chain.clone(), &pk)
                            .and_then(|c| c.parse(&bytes))
                            .map_err(|e| e.to_string())
                    });
                    match again {
                        Ok(tx) => {
                            use strongroom_chain_bitcoin::bitcoin::hashes::Hash;
                            ensure(&tx.movement == movement, || {
                                "check::decode and the codec disagree".into()
                            });
                            let input = usize::try_from(request.input).unwrap_or(usize::MAX);
                            ensure(
                                tx.digests.get(input).map(|d| d.to_vec())
                                    == Some(to_sign.bytes.clone()),
                                || "the digest is not the input's BIP-143 digest".into(),
                            );
                            ensure(identity == &tx.txid.to_byte_array().to_vec(), || {
                                "a Bitcoin transaction is journalled by its id".into()
                            });
                        }
                        Err(e) => {
                            broken(format_args!("the codec refuses what check::decode read: {e}"))
                        }
                    }
                }
                other => broken(format_args!("{other:?} decoded as a transaction")),
            }
            let ctx = CheckContext {
                node: 1,
                key: &fx.key_info,
                intent,
                request,
                movement,
                identity,
                consumes,
                now: fx.now,
                repeat: false,
                new_home: None,
            };
            match TxMatchesIntent.check(&ctx) {
                Ok(()) => Verdict::Accepted,
                Err(reason) => refused(&reason),
            }
        }
        Decoded::Message { text, .. } => {
            ensure(text.contains(&request.tx.to_ascii_lowercase()), || {
                format!("the statement does not name the challenge {}", request.tx)
            });
            ensure(to_sign.bytes.len() == 32, || "a message digest is not 32 bytes".into());
            Verdict::Accepted
        }
    }
}

fn refused(reason: &Reason) -> Verdict {
    json_round_trip("a refusal reason", reason);
    let _ = reason.to_string();
    match reason {
        Reason::Undecodable { .. } => Verdict::Malformed,
        _ => Verdict::Refused,
    }
}

/// The public key a request's path names below the fixtures' key.
fn hot_key(key: &KeyInfo, path: &[u32]) -> Result<Vec<u8>, String> {
    if path.is_empty() {
        return hex::decode(&key.public_key).map_err(|e| e.to_string());
    }
    let master = strongroom_signer::check::master_public(key)?;
    master.derive(path).map(|k| k.to_vec()).map_err(|e| e.to_string())
}
