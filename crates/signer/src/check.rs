//! What a node checks before it joins a signing session. The node decodes the transaction
//! itself, derives the bytes to sign from it (never taking a digest on trust), and runs
//! every [`PreSignCheck`] on the decoded transaction and the approved intent. One "no"
//! and the node refuses, saying why; the session ends for everyone.
//!
//! Implemented now: the transaction must do exactly what the intent says (chain, asset,
//! destination, amount, fee cap, expiry), read by the chain adapter's own decoder
//! (`strongroom-chain-ethereum`, the same code the engine builds with), and be signed by the
//! intent's source wallet. Approvals, whitelists, velocity limits and freezes plug in as
//! further checks.

use sha3::{Digest, Keccak256};
use strongroom_chain::{check_movement, TxCodec};
use strongroom_chain_ethereum::{EthCodec, ParsedTx};
use strongroom_core::{Intent, Timestamp};

use crate::wire::{KeyInfo, Scheme, SignRequest, TxFormat};

/// The transaction as the node understood it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decoded {
    Eip1559(ParsedTx),
    Raw(Vec<u8>),
}

/// What the node will sign: a 32-byte digest (ECDSA) or a message (FROST).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToSign {
    pub decoded: Decoded,
    pub bytes: Vec<u8>,
}

/// Everything a check may look at.
#[derive(Debug)]
pub struct CheckContext<'a> {
    pub node: u16,
    pub key: &'a KeyInfo,
    pub intent: &'a Intent,
    pub request: &'a SignRequest,
    pub tx: &'a Decoded,
    pub now: Timestamp,
}

/// One of a node's own reasons to refuse.
pub trait PreSignCheck: Send + Sync + std::fmt::Debug {
    fn name(&self) -> &'static str;
    fn check(&self, ctx: &CheckContext<'_>) -> Result<(), String>;
}

/// Decode the request's transaction and work out the bytes this scheme signs.
pub fn decode(scheme: Scheme, req: &SignRequest, allow_raw: bool) -> Result<ToSign, String> {
    let tx = hex::decode(&req.tx).map_err(|e| format!("transaction is not hex: {e}"))?;
    match req.format {
        TxFormat::Eip1559 => {
            if scheme != Scheme::Ecdsa {
                return Err("an Ethereum transaction needs an ECDSA key".into());
            }
            let intent = intent_of(req)?;
            let codec = EthCodec::new(intent.chain).map_err(|e| e.to_string())?;
            let parsed = codec.parse(&tx).map_err(|e| e.to_string())?;
            let digest = Keccak256::digest(&tx).to_vec();
            Ok(ToSign { decoded: Decoded::Eip1559(parsed), bytes: digest })
        }
        TxFormat::RawMessage => {
            if !allow_raw {
                return Err(
                    "raw messages are not accepted by this node (allow_raw_messages is off)".into(),
                );
            }
            let bytes = match scheme {
                Scheme::Ecdsa => sha2::Sha256::digest(&tx).to_vec(),
                Scheme::FrostTaproot | Scheme::FrostEd25519 => tx.clone(),
            };
            Ok(ToSign { decoded: Decoded::Raw(tx), bytes })
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

    fn check(&self, ctx: &CheckContext<'_>) -> Result<(), String> {
        let intent = ctx.intent;
        if intent.expires_at <= ctx.now {
            return Err(format!(
                "intent expired at {} ms (now {} ms)",
                intent.expires_at.unix_ms(),
                ctx.now.unix_ms()
            ));
        }
        match ctx.tx {
            Decoded::Raw(_) => Ok(()),
            Decoded::Eip1559(tx) => {
                if intent.source_wallet.as_str() != ctx.key.key_id {
                    return Err(format!(
                        "intent pays from wallet {} but the request signs with key {}",
                        intent.source_wallet.as_str(),
                        ctx.key.key_id
                    ));
                }
                if !ctx.request.path.is_empty() {
                    // A child key holds a customer's deposits: it may pay only its own
                    // wallet (a sweep), never anyone else.
                    let master = hex::decode(&ctx.key.public_key)
                        .map_err(|_| "this node's key has a malformed public key".to_string())?;
                    let codec = EthCodec::new(intent.chain.clone()).map_err(|e| e.to_string())?;
                    let own = codec.address_of(&master).map_err(|e| e.to_string())?;
                    if tx.movement.destination != own {
                        return Err(format!(
                            "a child key (deposit address) may pay only the wallet's own address {}, not {}",
                            own.as_str(),
                            tx.movement.destination.as_str()
                        ));
                    }
                }
                check_movement(&tx.movement, intent).map_err(|e| e.to_string())
            }
        }
    }
}

/// The intent a request carries.
fn intent_of(req: &SignRequest) -> Result<Intent, String> {
    let bytes = hex::decode(&req.intent).map_err(|e| format!("intent is not hex: {e}"))?;
    Intent::decode(&bytes).map_err(|e| format!("intent: {e}"))
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
    fn run(key_id: &str, approved: &Intent, tx: Vec<u8>, now: i64) -> Result<(), String> {
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
    ) -> Result<(), String> {
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
        let decoded = decode(Scheme::Ecdsa, &request, false)?;
        assert_eq!(decoded.bytes, Keccak256::digest(hex::decode(&request.tx).unwrap()).to_vec());
        TxMatchesIntent.check(&CheckContext {
            node: 1,
            key: &key,
            intent: approved,
            request: &request,
            tx: &decoded.decoded,
            now: Timestamp::from_unix_ms(now),
        })
    }

    fn build(i: &Intent, p: &EthParams) -> Vec<u8> {
        EthCodec::new(i.chain.clone()).unwrap().build(i, p).unwrap()
    }

    #[test]
    fn the_transaction_must_do_exactly_what_the_intent_says() {
        let usdc = "0xA0b86991c6218b36c1d19D4a2e9Eb0cE3606eB48";
        for approved in [intent(None, 10u128.pow(18)), intent(Some(usdc), 10u128.pow(18))] {
            assert_eq!(run("hot-eth-1", &approved, build(&approved, &PARAMS), 0), Ok(()));
            assert!(run("hot-eth-1", &approved, build(&approved, &PARAMS), 1_000)
                .unwrap_err()
                .contains("expired"));
            // Signed by another wallet's key.
            assert!(run("hot-eth-2", &approved, build(&approved, &PARAMS), 0)
                .unwrap_err()
                .contains("wallet hot-eth-1"));
            // A transaction for a slightly different intent than the one approved.
            let mut other = approved.clone();
            other.amount = strongroom_units::Amount::from_base_units(1).unwrap();
            assert!(run("hot-eth-1", &approved, build(&other, &PARAMS), 0)
                .unwrap_err()
                .contains("amount"));
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
            assert!(run("hot-eth-1", &approved, redirected, 0)
                .unwrap_err()
                .contains("destination"));
            other = approved.clone();
            other.asset.contract = match &approved.asset.contract {
                Some(_) => None,
                None => Some(strongroom_units::Address::parse(&approved.chain, usdc).unwrap()),
            };
            assert!(run("hot-eth-1", &approved, build(&other, &PARAMS), 0)
                .unwrap_err()
                .contains("asset"));
            other = approved.clone();
            other.fee_cap = strongroom_units::Amount::from_base_units(10u128.pow(17)).unwrap();
            let greedy = EthParams { gas_limit: 1_000_000, ..PARAMS };
            assert!(run("hot-eth-1", &approved, build(&other, &greedy), 0)
                .unwrap_err()
                .contains("fee cap"));
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
            assert!(run("hot-eth-1", &approved, build(&other, &PARAMS), 0)
                .unwrap_err()
                .contains("chain id"));
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
        assert!(err.unwrap_err().contains("may pay only the wallet's own address"));
        // The wallet key itself pays anyone the intent names.
        assert_eq!(run("hot-eth-1", &elsewhere, build(&elsewhere, &PARAMS), 0), Ok(()));
    }

    #[test]
    fn raw_messages_only_where_allowed() {
        let raw = SignRequest {
            format: TxFormat::RawMessage,
            tx: "00".into(),
            intent: String::new(),
            path: vec![],
            ..Default::default()
        };
        assert!(decode(Scheme::Ecdsa, &raw, false).unwrap_err().contains("allow_raw_messages"));
        assert_eq!(decode(Scheme::FrostTaproot, &raw, true).unwrap().bytes, vec![0]);
    }
}
