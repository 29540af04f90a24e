//! Hot wallet outputs from the signer nodes' threshold keys: P2TR key-path outputs whose
//! output key is a FROST-Taproot group key (frost-secp256k1-tr's keys are already BIP-341
//! tweaked, so the group key is the output key as it is), and P2WPKH outputs from a CGGMP21
//! ECDSA key. No node and no orchestrator holds the whole key; the signature over the
//! BIP-341 sighash comes from the nodes.

mod codec;

pub use codec::{verify_signed, HotCodec, HotCoin, HotParams, HotTx};

use bitcoin::key::{CompressedPublicKey, TweakedPublicKey};
use bitcoin::secp256k1::XOnlyPublicKey;
use bitcoin::sighash::{Prevouts, SighashCache, TapSighashType};
use bitcoin::{Network, Transaction, TxOut, Witness};

use crate::BtcError;

/// The P2TR address whose output key is `group_key` (x-only, 32 bytes; a 33-byte
/// compressed key is accepted and its x coordinate used).
pub fn p2tr_address(group_key: &[u8], network: Network) -> Result<bitcoin::Address, BtcError> {
    let x = match group_key.len() {
        32 => group_key,
        33 => group_key.get(1..).unwrap_or_default(),
        n => return Err(BtcError::Key(format!("a Taproot key is 32 or 33 bytes, not {n}"))),
    };
    let key = XOnlyPublicKey::from_slice(x).map_err(|e| BtcError::Key(e.to_string()))?;
    Ok(bitcoin::Address::p2tr_tweaked(TweakedPublicKey::dangerous_assume_tweaked(key), network))
}

/// The P2WPKH address of a compressed secp256k1 public key (an ECDSA threshold key).
pub fn p2wpkh_address(public_key: &[u8], network: Network) -> Result<bitcoin::Address, BtcError> {
    let key =
        CompressedPublicKey::from_slice(public_key).map_err(|e| BtcError::Key(e.to_string()))?;
    Ok(bitcoin::Address::p2wpkh(&key, network))
}

/// The BIP-341 key-path sighash (SIGHASH_DEFAULT) of input `index`, which commits to every
/// output spent (`prevouts`, in input order).
pub fn key_spend_sighash(
    tx: &Transaction,
    index: usize,
    prevouts: &[TxOut],
) -> Result<[u8; 32], BtcError> {
    let mut cache = SighashCache::new(tx);
    let h = cache
        .taproot_key_spend_signature_hash(index, &Prevouts::All(prevouts), TapSighashType::Default)
        .map_err(|e| BtcError::Sign(e.to_string()))?;
    Ok(bitcoin::hashes::Hash::to_byte_array(h))
}

/// Put a 64-byte BIP-340 signature (SIGHASH_DEFAULT) in input `index`'s witness.
pub fn attach_key_spend(
    tx: &mut Transaction,
    index: usize,
    signature: &[u8],
) -> Result<(), BtcError> {
    if signature.len() != 64 {
        return Err(BtcError::Sign(format!(
            "a key-path signature is 64 bytes, not {}",
            signature.len()
        )));
    }
    let input =
        tx.input.get_mut(index).ok_or_else(|| BtcError::Sign(format!("no input {index}")))?;
    input.witness = Witness::from_slice(&[signature]);
    Ok(())
}

/// Check a key-path spend of input `index` as BIP-341 says, with libsecp256k1's BIP-340
/// verifier: the prevout must be a P2TR output, the witness one 64-byte signature (SIGHASH_DEFAULT)
/// over the key-spend sighash, valid for the output key. (libbitcoinconsensus as bundled,
/// Bitcoin Core 25.1, does not verify Taproot spends: it cannot take the other inputs' spent
/// outputs that the sighash commits to, so it treats witness v1 as unencumbered.)
pub fn verify_key_spend(
    tx: &Transaction,
    index: usize,
    prevouts: &[TxOut],
) -> Result<(), BtcError> {
    let bad = |why: &str| BtcError::Consensus(format!("input {index}: {why}"));
    let spent = prevouts.get(index).ok_or_else(|| bad("no spent output"))?;
    if !spent.script_pubkey.is_p2tr() {
        return Err(bad("not a P2TR output"));
    }
    let key = spent
        .script_pubkey
        .as_bytes()
        .get(2..34)
        .and_then(|k| XOnlyPublicKey::from_slice(k).ok())
        .ok_or_else(|| bad("malformed output key"))?;
    let input = tx.input.get(index).ok_or_else(|| bad("no such input"))?;
    let sig = match (input.witness.len(), input.witness.nth(0)) {
        (1, Some(sig)) if sig.len() == 64 => sig,
        _ => return Err(bad("the witness is not one 64-byte key-path signature")),
    };
    let sig = bitcoin::secp256k1::schnorr::Signature::from_slice(sig)
        .map_err(|_| bad("malformed signature"))?;
    let sighash = key_spend_sighash(tx, index, prevouts)?;
    let msg = bitcoin::secp256k1::Message::from_digest(sighash);
    bitcoin::secp256k1::Secp256k1::verification_only()
        .verify_schnorr(&sig, &msg, &key)
        .map_err(|_| bad("the signature does not verify for the output key"))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn addresses_follow_bip173_and_bip350() {
        // BIP-173's P2WPKH example: the generator point's public key.
        let g = hex::decode("0279BE667EF9DCBBAC55A06295CE870B07029BFCDB2DCE28D959F2815B16F81798")
            .unwrap();
        assert_eq!(
            p2wpkh_address(&g, Network::Bitcoin).unwrap().to_string(),
            "bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4"
        );
        assert_eq!(
            p2wpkh_address(&g, Network::Regtest).unwrap().to_string(),
            "bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080"
        );
        // BIP-350's P2TR example (witness v1, program = the x coordinate of G).
        let x = g.get(1..).unwrap();
        assert_eq!(
            p2tr_address(x, Network::Bitcoin).unwrap().to_string(),
            "bc1p0xlxvlhemja6c4dqv22uapctqupfhlxm9h8z3k2e72q4k9hcz7vqzk5jj0"
        );
        assert_eq!(
            p2tr_address(&g, Network::Bitcoin).unwrap(),
            p2tr_address(x, Network::Bitcoin).unwrap()
        );
        assert!(p2tr_address(&[1u8; 31], Network::Bitcoin).is_err());
        assert!(
            p2wpkh_address(x, Network::Bitcoin).is_err(),
            "an x-only key is not a compressed key"
        );
    }
}
