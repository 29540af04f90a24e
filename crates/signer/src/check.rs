//! What a node checks before it joins a signing session. The node decodes the transaction
//! itself, derives the bytes to sign from it (never taking a digest on trust), and runs
//! every [`PreSignCheck`] on the decoded transaction and the approved intent. One "no"
//! and the node refuses with a typed [`Reason`]; the session ends for everyone.
//!
//! Every chain goes through the same boundary ([`codecs`]): the request's format picks the
//! chain adapter's own decoder (`strongroom-chain-ethereum` for EIP-1559,
//! `strongroom-chain-bitcoin`'s hot codec for a P2WPKH PSBT — the same code the engine
//! builds with), which reads the bytes into one [`Movement`]; the checks after it
//! (the movement against the intent, the source wallet, a deposit key paying only its
//! wallet, governance ([`crate::governance`]) and the signing journal ([`crate::journal`]))
//! are the same for every chain. Besides transactions a node signs only messages it builds
//! itself ([`proof_of_control`]); caller-supplied bytes are refused.

use sha3::{Digest, Keccak256};
use strongroom_chain::{check_movement, ChainError, Movement, TxCodec};
use strongroom_chain_bitcoin::hot::HotCodec;
use strongroom_chain_ethereum::EthCodec;
use strongroom_core::{Intent, Timestamp};
use strongroom_governance::policy::MessageKind;
use strongroom_mpc::ecdsa;
use strongroom_units::{Address, ChainFamily, ChainId};

use crate::wire::{KeyInfo, Reason, Scheme, SignRequest, TxFormat};

/// The tag of a proof-of-control statement's hash (BIP-340 tagged hash): no transaction
/// digest and no other message kind can collide with it.
pub const PROOF_OF_CONTROL_TAG: &str = "strongroom/proof-of-control/v1";

/// What the request asks the node to sign, as the node understood it. (One per request,
/// never stored in bulk: boxing the transaction would buy nothing.)
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(clippy::large_enum_variant)]
pub enum Decoded {
    /// A transaction, decoded by its chain's codec, for the intent it carries.
    Tx {
        movement: Movement,
        intent: Intent,
        /// The one transaction this is, as the journal records it against the intent:
        /// its signing digest (Ethereum), or its id whichever input is signed (Bitcoin).
        identity: Vec<u8>,
        /// What the transaction uses up, so that of two transactions consuming the same at
        /// most one can ever confirm (a fee bump replaces, never adds): the set of coins it
        /// spends (Bitcoin), or the sending key's nonce (Ethereum), with the key's path.
        consumes: Vec<u8>,
    },
    /// A message the node built itself.
    Message { kind: MessageKind, text: String },
}

/// What the node will sign: a 32-byte digest (ECDSA) or a message (FROST).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToSign {
    pub decoded: Decoded,
    pub bytes: Vec<u8>,
}

/// Everything a transaction check may look at.
#[derive(Debug)]
pub struct CheckContext<'a> {
    pub node: u16,
    pub key: &'a KeyInfo,
    pub intent: &'a Intent,
    pub request: &'a SignRequest,
    /// What the transaction does, as its chain's codec read it.
    pub movement: &'a Movement,
    /// The transaction's identity, the same for every signature it needs (its signing digest
    /// on Ethereum, its id on Bitcoin): what the velocity records and the mesh name as the
    /// one transaction signed for the intent, as the journal does.
    pub identity: &'a [u8],
    /// What the transaction uses up ([`Decoded::Tx`]): a new identity for an intent already
    /// signed is a replacement only if it consumes exactly this.
    pub consumes: &'a [u8],
    pub now: Timestamp,
    /// This node already signed this very transaction (the engine asking again after a
    /// crash, or another input of it): every check runs again, but nothing is counted
    /// twice.
    pub repeat: bool,
    /// The address of the key governance moves this key's funds to, if it does: the one
    /// place its deposit addresses may pay besides their own wallet.
    pub new_home: Option<Address>,
}

/// One of a node's own reasons to refuse a transaction.
pub trait PreSignCheck: Send + Sync + std::fmt::Debug {
    fn name(&self) -> &'static str;
    fn check(&self, ctx: &CheckContext<'_>) -> Result<(), Reason>;
}

fn undecodable(what: &str, detail: impl ToString) -> Reason {
    Reason::Undecodable { what: what.to_owned(), detail: detail.to_string() }
}

/// A chain adapter's verdict as a refusal reason.
pub fn from_chain(e: ChainError) -> Reason {
    match e {
        ChainError::Mismatch { field, tx, intent } => {
            Reason::TxMismatch { field: field.to_owned(), tx, intent }
        }
        ChainError::Refused(refusal) => Reason::TxRefused { refusal },
        ChainError::FeeAboveCap { max_fee, cap } => Reason::FeeAboveIntentCap {
            max_fee: strongroom_units::Amount::from_base_units(max_fee)
                .unwrap_or(strongroom_units::Amount::MAX),
            cap: strongroom_units::Amount::from_base_units(cap)
                .unwrap_or(strongroom_units::Amount::MAX),
        },
        other => undecodable("transaction", other),
    }
}

/// The codec registry: which adapter reads which chain, in one place.
pub mod codecs {
    use super::*;

    /// A transaction as its codec read it, for the node's checks and journal.
    #[derive(Debug)]
    pub struct DecodedTx {
        pub movement: Movement,
        /// The digest this signature signs (the request's input's, on Bitcoin).
        pub digest: Vec<u8>,
        /// The transaction's identity (its digest on Ethereum, its id on Bitcoin).
        pub identity: Vec<u8>,
        /// What it consumes, before it is named with the signing key (see
        /// [`super::Decoded::Tx`]).
        pub consumes: Vec<u8>,
    }

    /// The address `public_key` (SEC1, compressed) controls on `chain`, as that chain's
    /// codec derives it: the Ethereum address, or the P2WPKH address of a hot wallet.
    pub fn address_on(chain: &ChainId, public_key: &[u8]) -> Result<Address, ChainError> {
        match chain.family() {
            ChainFamily::Ethereum => EthCodec::new(chain.clone())?.address_of(public_key),
            ChainFamily::Bitcoin => HotCodec::p2wpkh(chain.clone(), public_key)?.own_address(),
        }
    }

    /// Decode `bytes` in `format` for `intent`, signed by `public_key` (the key itself or
    /// the child the request's path names): the movement, the digest of input `input`, and
    /// the transaction's identity for the journal, and what it consumes (the coins it
    /// spends, sorted, or its nonce).
    pub fn decode_tx(
        format: TxFormat,
        intent: &Intent,
        public_key: &[u8],
        bytes: &[u8],
        input: u32,
    ) -> Result<DecodedTx, Reason> {
        let no_input = || Reason::BadRequest {
            detail: format!("the transaction has no input {input} to sign"),
        };
        match format {
            TxFormat::Eip1559 => {
                if input != 0 {
                    return Err(no_input());
                }
                let codec = EthCodec::new(intent.chain.clone()).map_err(from_chain)?;
                let tx = codec.parse(bytes).map_err(from_chain)?;
                let digest = Keccak256::digest(bytes).to_vec();
                let consumes = [b"nonce:".as_slice(), &tx.params.nonce.to_be_bytes()].concat();
                Ok(DecodedTx {
                    movement: tx.movement,
                    digest: digest.clone(),
                    identity: digest,
                    consumes,
                })
            }
            TxFormat::BitcoinPsbt => {
                let codec =
                    HotCodec::p2wpkh(intent.chain.clone(), public_key).map_err(from_chain)?;
                let tx = codec.parse(bytes).map_err(from_chain)?;
                let n = usize::try_from(input).map_err(|_| no_input())?;
                let digest = tx.digests.get(n).ok_or_else(no_input)?.to_vec();
                let identity = bitcoin_txid(&tx);
                let mut coins: Vec<Vec<u8>> = tx
                    .coins
                    .iter()
                    .map(|c| {
                        use strongroom_chain_bitcoin::bitcoin::hashes::Hash;
                        [c.txid.to_byte_array().as_slice(), &c.vout.to_be_bytes()].concat()
                    })
                    .collect();
                coins.sort();
                let consumes = [b"coins:".as_slice(), &coins.concat()].concat();
                Ok(DecodedTx { movement: tx.movement, digest, identity, consumes })
            }
            TxFormat::RawMessage | TxFormat::ProofOfControl => {
                Err(Reason::BadRequest { detail: "not a transaction format".into() })
            }
        }
    }

    fn bitcoin_txid(tx: &strongroom_chain_bitcoin::hot::HotTx) -> Vec<u8> {
        use strongroom_chain_bitcoin::bitcoin::hashes::Hash;
        tx.txid.to_byte_array().to_vec()
    }
}

/// The statement a proof of control signs: built here, from the key the node holds and the
/// verifier's challenge, never taken from the caller.
pub fn proof_of_control(key: &KeyInfo, challenge: &[u8]) -> String {
    format!(
        "Strongroom proof of control\nkey: {}\npublic key: {}\nchallenge: {}\n",
        key.key_id,
        key.public_key,
        hex::encode(challenge)
    )
}

/// The ECDSA key's public half and chain code, to derive the keys below it.
pub fn master_public(info: &KeyInfo) -> Result<ecdsa::MasterPublic, String> {
    let pk = hex::decode(&info.public_key).map_err(|e| e.to_string())?;
    let cc = hex::decode(info.chain_code.as_deref().ok_or("no chain code")?)
        .map_err(|e| e.to_string())?;
    Ok(ecdsa::MasterPublic {
        public_key: <[u8; 33]>::try_from(pk.as_slice()).map_err(|_| "public key length")?,
        chain_code: <[u8; 32]>::try_from(cc.as_slice()).map_err(|_| "chain code length")?,
    })
}

/// The public key that signs for `path` below `key` (the key itself for an empty path).
fn signing_key(key: &KeyInfo, path: &[u32]) -> Result<Vec<u8>, Reason> {
    let internal = |d: String| Reason::Internal { detail: d };
    if path.is_empty() {
        return hex::decode(&key.public_key)
            .map_err(|_| internal("this node's key has a malformed public key".into()));
    }
    let master = master_public(key).map_err(internal)?;
    master
        .derive(path)
        .map(|k| k.to_vec())
        .map_err(|e| Reason::BadRequest { detail: format!("cannot derive {path:?}: {e}") })
}

/// Decode the request and work out the bytes this scheme signs.
pub fn decode(key: &KeyInfo, req: &SignRequest) -> Result<ToSign, Reason> {
    let bytes = hex::decode(&req.tx).map_err(|e| undecodable("transaction", e))?;
    match req.format {
        TxFormat::Eip1559 | TxFormat::BitcoinPsbt => {
            if key.scheme != Scheme::Ecdsa {
                return Err(Reason::BadRequest {
                    detail: format!("a {:?} transaction needs an ECDSA key", req.format),
                });
            }
            let intent = intent_of(req)?;
            // The key a Bitcoin input must be locked to (Ethereum's decoder needs none: the
            // sender is whoever signs).
            let public = match req.format {
                TxFormat::BitcoinPsbt => signing_key(key, &req.path)?,
                _ => Vec::new(),
            };
            let codecs::DecodedTx { movement, digest, identity, consumes: consumed } =
                codecs::decode_tx(req.format, &intent, &public, &bytes, req.input)?;
            // Named with the key that signs (its path): one key's nonce is not another's.
            let mut h = sha2::Sha256::new();
            h.update(b"strongroom/consumes/v1");
            h.update(key.key_id.as_bytes());
            h.update([0]);
            for p in &req.path {
                h.update(p.to_be_bytes());
            }
            h.update([0]);
            h.update(&consumed);
            let consumes = h.finalize().to_vec();
            Ok(ToSign {
                decoded: Decoded::Tx { movement, intent, identity, consumes },
                bytes: digest,
            })
        }
        TxFormat::RawMessage => Err(Reason::RawSigning { format: "raw-message".into() }),
        TxFormat::ProofOfControl => {
            if !(16..=64).contains(&bytes.len()) || !req.path.is_empty() || req.input != 0 {
                return Err(Reason::BadRequest {
                    detail: "a proof of control takes a 16- to 64-byte challenge and no path"
                        .into(),
                });
            }
            let text = proof_of_control(key, &bytes);
            let digest =
                strongroom_governance::tagged_hash(PROOF_OF_CONTROL_TAG, text.as_bytes()).to_vec();
            Ok(ToSign {
                decoded: Decoded::Message { kind: MessageKind::ProofOfControl, text },
                bytes: digest,
            })
        }
    }
}

/// The transaction must do what the intent says, and nothing else.
#[derive(Debug, Default)]
pub struct TxMatchesIntent;

impl PreSignCheck for TxMatchesIntent {
    fn name(&self) -> &'static str {
        "tx-matches-intent"
    }

    fn check(&self, ctx: &CheckContext<'_>) -> Result<(), Reason> {
        let intent = ctx.intent;
        if intent.expires_at <= ctx.now {
            return Err(Reason::Expired {
                expires_at_ms: intent.expires_at.unix_ms(),
                now_ms: ctx.now.unix_ms(),
            });
        }
        if intent.source_wallet.as_str() != ctx.key.key_id {
            return Err(Reason::WrongKey {
                wallet: intent.source_wallet.as_str().to_owned(),
                key: ctx.key.key_id.clone(),
            });
        }
        if !ctx.request.path.is_empty() {
            // A child key holds a customer's deposits: it may pay only its own wallet (a
            // sweep), never anyone else.
            let own = own_address(ctx.key, intent)?;
            let dest = &ctx.movement.destination;
            if dest != &own && ctx.new_home.as_ref() != Some(dest) {
                return Err(Reason::ChildKeyPaysOut {
                    own: own.as_str().to_owned(),
                    destination: dest.as_str().to_owned(),
                });
            }
        }
        check_movement(ctx.movement, intent).map_err(from_chain)
    }
}

/// The wallet's own address on the intent's chain (the key itself, not a child).
pub fn own_address(key: &KeyInfo, intent: &Intent) -> Result<Address, Reason> {
    address_of(&key.public_key, intent)
}

/// The address of a public key (hex) on the intent's chain, by that chain's codec.
pub fn address_of(public_key: &str, intent: &Intent) -> Result<Address, Reason> {
    let internal = |d: String| Reason::Internal { detail: d };
    let key = hex::decode(public_key).map_err(|_| internal("a malformed public key".into()))?;
    codecs::address_on(&intent.chain, &key).map_err(|e| internal(e.to_string()))
}

/// The intent a request carries.
fn intent_of(req: &SignRequest) -> Result<Intent, Reason> {
    let bytes = hex::decode(&req.intent).map_err(|e| undecodable("intent", e))?;
    Intent::decode(&bytes).map_err(|e| undecodable("intent", e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use strongroom_chain::TxCodec;
    use strongroom_chain_ethereum::EthParams;

    const PARAMS: EthParams = EthParams {
        nonce: 9,
        gas_limit: 21_000,
        max_fee_per_gas: 100_000_000_000,
        max_priority_fee_per_gas: 2_000_000_000,
    };

    fn intent(contract: Option<&str>, amount: u128) -> Intent {
        use strongroom_units::{Address, Amount, AssetSymbol, ChainId};
        let chain = ChainId::parse("eip155:1").unwrap();
        Intent {
            destination: Address::parse(&chain, "0x3535353535353535353535353535353535353535")
                .unwrap(),
            asset: strongroom_core::IntentAsset {
                symbol: AssetSymbol::parse(if contract.is_some() { "USDC" } else { "ETH" })
                    .unwrap(),
                decimals: 18,
                contract: contract.map(|c| Address::parse(&chain, c).unwrap()),
            },
            chain,
            source_wallet: strongroom_core::WalletId::parse("hot-eth-1").unwrap(),
            amount: Amount::from_base_units(amount).unwrap(),
            fee_cap: Amount::from_base_units(21_000 * 100_000_000_000 * 3).unwrap(),
            expires_at: Timestamp::from_unix_ms(1_000),
            request_id: uuid::Uuid::from_u128(1),
        }
    }

    /// Run the check as node 1 holding `key_id`: `approved` is the intent in the request,
    /// `tx` the transaction that came with it.
    fn run(key_id: &str, approved: &Intent, tx: Vec<u8>, now: i64) -> Result<(), Reason> {
        run_at(key_id, &[], approved, tx, now)
    }

    /// The node's key: a fixed secp256k1 key.
    fn master_key() -> Vec<u8> {
        let sk = k256::ecdsa::SigningKey::from_slice(&[3; 32]).unwrap();
        sk.verifying_key().to_encoded_point(true).as_bytes().to_vec()
    }

    fn run_at(
        key_id: &str,
        path: &[u32],
        approved: &Intent,
        tx: Vec<u8>,
        now: i64,
    ) -> Result<(), Reason> {
        let key = KeyInfo {
            key_id: key_id.into(),
            scheme: Scheme::Ecdsa,
            threshold: 2,
            parties: vec![1, 2, 3],
            public_key: hex::encode(master_key()),
            chain_code: None,
        };
        let request = SignRequest {
            intent: hex::encode(approved.encode().unwrap()),
            format: TxFormat::Eip1559,
            tx: hex::encode(tx),
            path: path.to_vec(),
            ..Default::default()
        };
        let decoded = decode(&key, &request)?;
        assert_eq!(decoded.bytes, Keccak256::digest(hex::decode(&request.tx).unwrap()).to_vec());
        let Decoded::Tx { movement, intent, .. } = &decoded.decoded else {
            panic!("not a transaction")
        };
        assert_eq!(intent, approved);
        TxMatchesIntent.check(&CheckContext {
            node: 1,
            key: &key,
            intent: approved,
            request: &request,
            movement,
            identity: &decoded.bytes,
            consumes: b"",
            now: Timestamp::from_unix_ms(now),
            repeat: false,
            new_home: None,
        })
    }

    fn mismatch(r: Result<(), Reason>, want: &str) -> bool {
        matches!(r, Err(Reason::TxMismatch { field, .. }) if field == want)
    }

    fn build(i: &Intent, p: &EthParams) -> Vec<u8> {
        EthCodec::new(i.chain.clone()).unwrap().build(i, p).unwrap()
    }

    #[test]
    fn the_transaction_must_do_exactly_what_the_intent_says() {
        let usdc = "0xA0b86991c6218b36c1d19D4a2e9Eb0cE3606eB48";
        for approved in [intent(None, 10u128.pow(18)), intent(Some(usdc), 10u128.pow(18))] {
            assert_eq!(run("hot-eth-1", &approved, build(&approved, &PARAMS), 0), Ok(()));
            assert_eq!(
                run("hot-eth-1", &approved, build(&approved, &PARAMS), 1_000),
                Err(Reason::Expired { expires_at_ms: 1_000, now_ms: 1_000 })
            );
            // Signed by another wallet's key.
            assert!(matches!(run("hot-eth-2", &approved, build(&approved, &PARAMS), 0),
                Err(Reason::WrongKey { wallet, .. }) if wallet == "hot-eth-1"));
            // A transaction for a slightly different intent than the one approved.
            let mut other = approved.clone();
            other.amount = strongroom_units::Amount::from_base_units(1).unwrap();
            assert!(mismatch(run("hot-eth-1", &approved, build(&other, &PARAMS), 0), "amount"));
            // Paid to another address than the approved one: for a token, the calldata's
            // recipient differs while the transaction's `to` (the token) is the same.
            other = approved.clone();
            other.destination = strongroom_units::Address::parse(
                &approved.chain,
                "0xdbF03B407c01E7cD3CBea99509d93f8DDDC8C6FB",
            )
            .unwrap();
            let redirected = build(&other, &PARAMS);
            assert_ne!(redirected, build(&approved, &PARAMS));
            assert!(mismatch(run("hot-eth-1", &approved, redirected, 0), "destination"));
            other = approved.clone();
            other.asset.contract = match &approved.asset.contract {
                Some(_) => None,
                None => Some(strongroom_units::Address::parse(&approved.chain, usdc).unwrap()),
            };
            assert!(mismatch(run("hot-eth-1", &approved, build(&other, &PARAMS), 0), "asset"));
            other = approved.clone();
            other.fee_cap = strongroom_units::Amount::from_base_units(10u128.pow(17)).unwrap();
            let greedy = EthParams { gas_limit: 1_000_000, ..PARAMS };
            assert!(matches!(
                run("hot-eth-1", &approved, build(&other, &greedy), 0),
                Err(Reason::FeeAboveIntentCap { .. })
            ));
            // A transaction for another chain than the intent's.
            other = approved.clone();
            other.chain = strongroom_units::ChainId::parse("eip155:5").unwrap();
            if let Some(c) = &approved.asset.contract {
                other.asset.contract =
                    Some(strongroom_units::Address::parse(&other.chain, c.as_str()).unwrap());
            }
            other.destination =
                strongroom_units::Address::parse(&other.chain, approved.destination.as_str())
                    .unwrap();
            assert!(mismatch(run("hot-eth-1", &approved, build(&other, &PARAMS), 0), "chain id"));
        }
        // Garbage is refused by the decoder before any check runs.
        assert!(run("hot-eth-1", &intent(None, 1), vec![0x02, 0xc0], 0).is_err());
    }

    #[test]
    fn a_deposit_address_key_pays_only_its_own_wallet() {
        let mut sweep = intent(None, 10u128.pow(17));
        let codec = EthCodec::new(sweep.chain.clone()).unwrap();
        sweep.destination = codec.address_of(&master_key()).unwrap();
        assert_eq!(run_at("hot-eth-1", &[0, 4], &sweep, build(&sweep, &PARAMS), 0), Ok(()));
        // The same transfer anywhere else, from a child key: refused, whatever the intent.
        let elsewhere = intent(None, 10u128.pow(17));
        let err = run_at("hot-eth-1", &[0, 4], &elsewhere, build(&elsewhere, &PARAMS), 0);
        assert!(matches!(err, Err(Reason::ChildKeyPaysOut { .. })), "{err:?}");
        // The wallet key itself pays anyone the intent names.
        assert_eq!(run("hot-eth-1", &elsewhere, build(&elsewhere, &PARAMS), 0), Ok(()));
    }

    #[test]
    fn caller_bytes_are_never_signed_and_proofs_of_control_are_built_here() {
        let key = KeyInfo {
            key_id: "hot-btc-1".into(),
            scheme: Scheme::FrostTaproot,
            threshold: 2,
            parties: vec![1, 2, 3],
            public_key: "aa".repeat(32),
            chain_code: None,
        };
        let raw =
            SignRequest { format: TxFormat::RawMessage, tx: "00".repeat(32), ..Default::default() };
        assert_eq!(decode(&key, &raw), Err(Reason::RawSigning { format: "raw-message".into() }));
        let challenge = [7u8; 32];
        let proof = SignRequest {
            format: TxFormat::ProofOfControl,
            tx: hex::encode(challenge),
            ..Default::default()
        };
        let made = decode(&key, &proof).unwrap();
        let Decoded::Message { text, .. } = &made.decoded else { panic!("{made:?}") };
        assert!(
            text.contains("key: hot-btc-1") && text.contains(&hex::encode(challenge)),
            "{text}"
        );
        assert_eq!(
            made.bytes,
            strongroom_governance::tagged_hash(PROOF_OF_CONTROL_TAG, text.as_bytes()).to_vec()
        );
        // A challenge must be a challenge, not a 32-byte digest in disguise or a novel.
        for bad in [vec![1u8; 8], vec![1u8; 65]] {
            let r = SignRequest { tx: hex::encode(bad), ..proof.clone() };
            assert!(matches!(decode(&key, &r), Err(Reason::BadRequest { .. })));
        }
    }
}
