//! Regtest intents and outside deposits for the Bitcoin tests (chain-bitcoin's, and the cold
//! crate's and the signer's through `#[path]`).
#![allow(dead_code)]

use std::str::FromStr;

use strongroom_chain_bitcoin::bitcoin::absolute::LockTime;
use strongroom_chain_bitcoin::bitcoin::transaction::Version;
use strongroom_chain_bitcoin::bitcoin::{
    self, Amount, OutPoint, ScriptBuf, Sequence, Transaction, TxIn, TxOut, Txid, Witness,
};
use strongroom_core::{Intent, IntentAsset, Timestamp, WalletId};
use strongroom_units::chain::BITCOIN_REGTEST;
use strongroom_units::{Address, AssetSymbol, ChainId};

/// Test key `b`: the secret `[b; 32]`.
pub fn secret(b: u8) -> bitcoin::secp256k1::SecretKey {
    bitcoin::secp256k1::SecretKey::from_slice(&[b; 32]).unwrap()
}

/// Test key `b`'s public key, compressed.
pub fn public(b: u8) -> Vec<u8> {
    secret(b).public_key(&bitcoin::secp256k1::Secp256k1::new()).serialize().to_vec()
}

/// Test key `b`'s compact (low-s) ECDSA signature over `digest`.
pub fn sign(b: u8, digest: &[u8; 32]) -> Vec<u8> {
    bitcoin::secp256k1::Secp256k1::new()
        .sign_ecdsa(&bitcoin::secp256k1::Message::from_digest(*digest), &secret(b))
        .serialize_compact()
        .to_vec()
}

/// A regtest address of nobody in these tests (BIP-173's P2WPKH example key on regtest).
pub const DEST: &str = "bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080";

/// Pay `sat` from cold wallet `cold-btc-1` to `to`, with a fee cap, a request id and an expiry.
pub fn regtest_intent(
    to: &str,
    sat: u128,
    fee_cap: u128,
    request: u128,
    expires_at: Timestamp,
) -> Intent {
    let chain = ChainId::parse(BITCOIN_REGTEST).unwrap();
    Intent {
        destination: Address::parse(&chain, to).unwrap(),
        asset: IntentAsset {
            symbol: AssetSymbol::parse("BTC").unwrap(),
            decimals: 8,
            contract: None,
        },
        chain,
        source_wallet: WalletId::parse("cold-btc-1").unwrap(),
        amount: strongroom_units::Amount::from_base_units(sat).unwrap(),
        fee_cap: strongroom_units::Amount::from_base_units(fee_cap).unwrap(),
        expires_at,
        request_id: uuid::Uuid::from_u128(request),
    }
}

/// A transaction from outside paying `sat` to `to` (its own input, `n` repeated, is never
/// checked).
pub fn funding(to: &bitcoin::Address, sat: u64, n: u8) -> Transaction {
    funding_to(&to.script_pubkey(), &[sat], n)
}

/// A transaction from outside with one output to `script` per amount in `sats` (its own
/// input, `n` repeated, is never checked: a spender needs only its id).
pub fn funding_to(script: &ScriptBuf, sats: &[u64], n: u8) -> Transaction {
    Transaction {
        version: Version::TWO,
        lock_time: LockTime::ZERO,
        input: vec![TxIn {
            previous_output: OutPoint {
                txid: Txid::from_str(&format!("{n:02x}").repeat(32)).unwrap(),
                vout: 0,
            },
            script_sig: ScriptBuf::new(),
            sequence: Sequence::MAX,
            witness: Witness::new(),
        }],
        output: sats
            .iter()
            .map(|v| TxOut { value: Amount::from_sat(*v), script_pubkey: script.clone() })
            .collect(),
    }
}
