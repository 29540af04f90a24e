//! What a signer does with a PSBT: decode it back against the intent and its own installed
//! descriptor (nothing in the PSBT is taken on trust), combine signatures, finalize, and
//! check the result with Bitcoin Core's consensus code.
//!
//! PSBTs also leave and enter as plain BIP-174 files ([`to_bip174`], [`from_file`]: binary or
//! base64), so that a cosigner outside Strongroom (Sparrow, a hardware wallet, Bitcoin Core)
//! can sign one; [`import`] takes back only the signatures of such a file, each verified,
//! and only if the unsigned transaction is exactly ours.

use std::collections::BTreeMap;

use bdk_wallet::miniscript::psbt::PsbtExt;
use bitcoin::bip32::{ChildNumber, DerivationPath};
use bitcoin::secp256k1::Secp256k1;
use bitcoin::{OutPoint, Psbt, ScriptBuf, Transaction, TxOut};
use strongroom_core::Intent;

use crate::{BtcError, Keychain, Multisig};

/// A PSBT as the signer understood it, in base units (satoshi).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decoded {
    pub destination: String,
    pub amount_sat: u64,
    pub fee_sat: u64,
    /// Change back to the wallet's own change keychain: (address, index, satoshi).
    pub change: Vec<(String, u32, u64)>,
    /// The coins spent: (outpoint, satoshi).
    pub inputs: Vec<(OutPoint, u64)>,
}

impl Decoded {
    /// The transaction in plain words, for the person at the offline signer.
    pub fn describe(&self, asset: &str) -> String {
        let btc = |sat: u64| {
            let s = format!("{sat:09}");
            let (whole, frac) = s.split_at(s.len().saturating_sub(8));
            format!("{whole}.{frac} {asset} ({sat} sat)")
        };
        let mut out = format!(
            "Send {}\n  to {}\n  fee {}\n",
            btc(self.amount_sat),
            self.destination,
            btc(self.fee_sat)
        );
        for (addr, index, sat) in &self.change {
            out.push_str(&format!(
                "  change {} back to this wallet, {addr} (change #{index})\n",
                btc(*sat)
            ));
        }
        let spent: u64 = self.inputs.iter().map(|(_, s)| *s).sum();
        out.push_str(&format!("  spending {} coin(s) worth {}\n", self.inputs.len(), btc(spent)));
        out
    }
}

/// Where a PSBT field says a script comes from: the keychain and index of our descriptor, if
/// one of its BIP-32 derivations ends in `/0/i` or `/1/i`. Only a candidate: the caller
/// derives the script itself and compares.
fn candidates(
    derivations: &BTreeMap<
        bitcoin::secp256k1::PublicKey,
        (bitcoin::bip32::Fingerprint, DerivationPath),
    >,
) -> Vec<(Keychain, u32)> {
    let mut out = Vec::new();
    for (_, path) in derivations.values() {
        let tail: Vec<&ChildNumber> = path.into_iter().rev().take(2).collect();
        if let [ChildNumber::Normal { index }, ChildNumber::Normal { index: chain }] =
            tail.as_slice()
        {
            let keychain = match chain {
                0 => Keychain::Receive,
                1 => Keychain::Change,
                _ => continue,
            };
            if !out.contains(&(keychain, *index)) {
                out.push((keychain, *index));
            }
        }
    }
    out
}

/// The (keychain, index) of `wallet` whose output script is `spk`, among the candidates.
fn ours(
    wallet: &Multisig,
    spk: &ScriptBuf,
    cands: &[(Keychain, u32)],
) -> Result<Option<(Keychain, u32, ScriptBuf)>, BtcError> {
    for (k, i) in cands {
        let (script, witness) = wallet.scripts(*k, *i)?;
        if &script == spk {
            return Ok(Some((*k, *i, witness)));
        }
    }
    Ok(None)
}

/// Decode `psbt` against `intent` and the signer's own `wallet`. Refused: an input that is
/// not the wallet's (by its own derivation, not the PSBT's word), an input without its full
/// previous transaction (segwit v0 signatures do not commit to other inputs' amounts), a
/// sighash other than ALL, any output the intent does not name that is not change to the
/// wallet's own change keychain, a missing or second payment, a fee above the intent's cap.
pub fn decode(psbt: &Psbt, intent: &Intent, wallet: &Multisig) -> Result<Decoded, BtcError> {
    let refuse = |why: String| Err(BtcError::Refused(why));
    let network = crate::network(&intent.chain)?;
    if network != wallet.network() {
        return refuse(format!(
            "the intent is for {network}, the wallet is on {}",
            wallet.network()
        ));
    }
    if intent.asset.contract.is_some() {
        return refuse("Bitcoin has no token contracts".into());
    }
    let destination = crate::address(intent.destination.as_str(), network)?;
    let amount = u64::try_from(intent.amount.base_units())
        .map_err(|_| BtcError::Refused("the amount is larger than any Bitcoin amount".into()))?;
    let fee_cap = u64::try_from(intent.fee_cap.base_units()).unwrap_or(u64::MAX);
    let tx = &psbt.unsigned_tx;
    if tx.input.len() != psbt.inputs.len() || tx.output.len() != psbt.outputs.len() {
        return Err(BtcError::Psbt("input or output maps do not match the transaction".into()));
    }

    let mut inputs = Vec::new();
    let mut total_in: u64 = 0;
    for (n, (txin, input)) in tx.input.iter().zip(&psbt.inputs).enumerate() {
        let prev = txin.previous_output;
        let Some(utxo) = &input.witness_utxo else {
            return refuse(format!("input {n} ({prev}) has no witness UTXO"));
        };
        let Some(full) = &input.non_witness_utxo else {
            return refuse(format!(
                "input {n} ({prev}) lacks its previous transaction, so its amount cannot be checked"
            ));
        };
        if full.compute_txid() != prev.txid {
            return refuse(format!(
                "input {n}: the previous transaction given is not {}",
                prev.txid
            ));
        }
        let vout = usize::try_from(prev.vout).unwrap_or(usize::MAX);
        if full.output.get(vout) != Some(utxo) {
            return refuse(format!(
                "input {n}: the witness UTXO differs from the previous transaction's output"
            ));
        }
        if let Some(sighash) = input.sighash_type {
            if sighash.ecdsa_hash_ty().ok() != Some(bitcoin::sighash::EcdsaSighashType::All) {
                return refuse(format!("input {n} asks for sighash {sighash}; only ALL is signed"));
            }
        }
        let Some((_, _, witness)) =
            ours(wallet, &utxo.script_pubkey, &candidates(&input.bip32_derivation))?
        else {
            return refuse(format!("input {n} ({prev}) is not a coin of this wallet"));
        };
        if input.witness_script.as_ref() != Some(&witness) {
            return refuse(format!("input {n}: the witness script is not the wallet's"));
        }
        total_in = total_in
            .checked_add(utxo.value.to_sat())
            .ok_or_else(|| BtcError::Psbt("input amounts overflow".into()))?;
        inputs.push((prev, utxo.value.to_sat()));
    }

    let dest_spk = destination.script_pubkey();
    let mut paid = false;
    let mut change = Vec::new();
    let mut total_out: u64 = 0;
    for (n, (txout, output)) in tx.output.iter().zip(&psbt.outputs).enumerate() {
        let sat = txout.value.to_sat();
        total_out = total_out
            .checked_add(sat)
            .ok_or_else(|| BtcError::Psbt("output amounts overflow".into()))?;
        if !paid && txout.script_pubkey == dest_spk && sat == amount {
            paid = true;
            continue;
        }
        match ours(wallet, &txout.script_pubkey, &candidates(&output.bip32_derivation))? {
            Some((Keychain::Change, index, _)) => {
                let addr = wallet.address(Keychain::Change, index)?.to_string();
                change.push((addr, index, sat));
            }
            _ => {
                let to = bitcoin::Address::from_script(&txout.script_pubkey, network)
                    .map_or_else(|_| format!("script {}", txout.script_pubkey), |a| a.to_string());
                return refuse(format!(
                    "output {n} pays {sat} sat to {to}, which the intent does not name"
                ));
            }
        }
    }
    if !paid {
        return refuse(format!("no output pays {amount} sat to {destination}"));
    }
    let fee = total_in
        .checked_sub(total_out)
        .ok_or_else(|| BtcError::Refused("the outputs spend more than the inputs".into()))?;
    if fee > fee_cap {
        return refuse(format!("the fee is {fee} sat, above the intent's cap of {fee_cap} sat"));
    }
    Ok(Decoded {
        destination: destination.to_string(),
        amount_sat: amount,
        fee_sat: fee,
        change,
        inputs,
    })
}

/// Merge the signatures of `others` into `base` (BIP-174 combiner): they must all be the
/// same unsigned transaction.
pub fn combine(mut base: Psbt, others: Vec<Psbt>) -> Result<Psbt, BtcError> {
    for o in others {
        base.combine(o).map_err(|e| BtcError::Psbt(e.to_string()))?;
    }
    Ok(base)
}

/// Finalize every input (miniscript builds the witnesses from the partial signatures),
/// extract the transaction, and check every input with Bitcoin Core's consensus code
/// against the amounts and scripts it spends.
pub fn finalize(mut psbt: Psbt) -> Result<Transaction, BtcError> {
    // Found by fuzzing (fuzz/corpus/psbt): miniscript 12.3's finalizer takes an input's
    // previous output from the full previous transaction, when there is no witness UTXO, by
    // indexing its outputs with the input's `vout` unchecked, so a PSBT from outside (a
    // bundle coming back) could panic the online side. Every input this wallet spends is
    // P2WSH and carries its witness UTXO; one that does not, or whose previous transaction
    // lacks the output it names, is refused here instead.
    for (n, (txin, input)) in psbt.unsigned_tx.input.iter().zip(&psbt.inputs).enumerate() {
        let vout = usize::try_from(txin.previous_output.vout).unwrap_or(usize::MAX);
        if input.witness_utxo.is_none() {
            return Err(BtcError::Finalize(format!("input {n} has no witness UTXO")));
        }
        if input.non_witness_utxo.as_ref().is_some_and(|prev| prev.output.get(vout).is_none()) {
            return Err(BtcError::Finalize(format!(
                "input {n}: the previous transaction has no output {vout}"
            )));
        }
    }
    let secp = Secp256k1::verification_only();
    psbt.finalize_mut(&secp).map_err(|errors| {
        let why: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
        BtcError::Finalize(why.join("; "))
    })?;
    let spent: BTreeMap<OutPoint, TxOut> = psbt
        .unsigned_tx
        .input
        .iter()
        .zip(&psbt.inputs)
        .filter_map(|(i, p)| p.witness_utxo.clone().map(|u| (i.previous_output, u)))
        .collect();
    let tx = psbt.extract_tx_fee_rate_limit().map_err(|e| BtcError::Finalize(e.to_string()))?;
    verify(&tx, &spent)?;
    Ok(tx)
}

/// Bitcoin Core's script interpreter (libbitcoinconsensus) over every input of `tx`.
pub fn verify(tx: &Transaction, spent: &BTreeMap<OutPoint, TxOut>) -> Result<(), BtcError> {
    tx.verify(|op| spent.get(op).cloned()).map_err(|e| BtcError::Consensus(e.to_string()))
}

/// PSBT from base64 (the form bundles carry).
pub fn from_base64(text: &str) -> Result<Psbt, BtcError> {
    use std::str::FromStr;
    Psbt::from_str(text.trim()).map_err(|e| BtcError::Psbt(e.to_string()))
}

pub fn to_base64(psbt: &Psbt) -> String {
    psbt.to_string()
}

/// BIP-174's magic bytes: every binary PSBT file starts with them.
pub const MAGIC: &[u8; 5] = b"psbt\xff";

/// The largest PSBT file read (a cold withdrawal's PSBT, with the full previous
/// transactions, is a few kilobytes; 4 MB is the most a block can hold).
pub const FILE_MAX_BYTES: usize = 4_000_000;

/// The PSBT as a BIP-174 file, the binary form Sparrow, Bitcoin Core (`walletprocesspsbt`
/// takes the base64 of it) and hardware wallets read and write as `.psbt`.
pub fn to_bip174(psbt: &Psbt) -> Vec<u8> {
    psbt.serialize()
}

/// A PSBT from a file in either form wallets save: binary BIP-174 (it starts with
/// [`MAGIC`]) or its base64 text.
pub fn from_file(bytes: &[u8]) -> Result<Psbt, BtcError> {
    if bytes.len() > FILE_MAX_BYTES {
        return Err(BtcError::Psbt(format!(
            "the file has {} bytes; a PSBT here is at most {FILE_MAX_BYTES}",
            bytes.len()
        )));
    }
    if bytes.starts_with(MAGIC) {
        return Psbt::deserialize(bytes).map_err(|e| BtcError::Psbt(e.to_string()));
    }
    let text = std::str::from_utf8(bytes)
        .map_err(|_| BtcError::Psbt("neither a binary PSBT (psbt\\xff…) nor base64 text".into()))?;
    from_base64(text)
}

/// What an import of an outside cosigner's PSBT added.
#[derive(Debug, Clone)]
pub struct Imported {
    /// Ours with their signatures merged in.
    pub psbt: Psbt,
    /// The merged PSBT decoded against the intent, as every signer decodes it.
    pub decoded: Decoded,
    /// How many signatures were new.
    pub added: usize,
    /// The master fingerprints of the keys that made them (from our own PSBT's BIP-32
    /// derivations), without repeats.
    pub signers: Vec<String>,
}

/// The public keys a P2WSH multisig witness script names, in its order.
fn script_keys(script: &ScriptBuf) -> Vec<bitcoin::PublicKey> {
    script
        .instructions()
        .filter_map(|i| match i {
            Ok(bitcoin::script::Instruction::PushBytes(b)) => {
                bitcoin::PublicKey::from_slice(b.as_bytes()).ok()
            }
            _ => None,
        })
        .collect()
}

/// Merge an outside cosigner's partial signatures (`theirs`, e.g. a PSBT that Sparrow or a
/// hardware wallet signed) into `ours`, the BIP-174 Combiner with our own checks around it:
///
/// - `theirs` must be exactly our unsigned transaction, else
///   [`BtcError::UnsignedTxChanged`] (BIP-174 combiners must refuse a different one; a
///   cosigner that changed an output or an amount is refused here, before anything else);
/// - `ours` is first decoded against `intent` and `wallet` ([`decode`], which also checks each
///   input's witness script against the wallet's own derivation);
/// - only signatures are taken from `theirs`, each checked before it is merged: by a key of
///   that input's witness script, SIGHASH_ALL, valid over this input's BIP-143 sighash (else
///   [`BtcError::BadSignature`]). An input the cosigner already finalized gives up the
///   signatures in its witness the same way. Everything else in `theirs` (UTXOs, scripts,
///   derivations, global xpubs, proprietary fields) is ignored: ours are the ones we checked.
///
/// The merged PSBT is decoded again before it is returned.
pub fn import(
    ours: &Psbt,
    theirs: &Psbt,
    intent: &Intent,
    wallet: &Multisig,
) -> Result<Imported, BtcError> {
    if theirs.unsigned_tx != ours.unsigned_tx {
        return Err(BtcError::UnsignedTxChanged {
            ours: ours.unsigned_tx.compute_txid(),
            theirs: theirs.unsigned_tx.compute_txid(),
        });
    }
    if theirs.inputs.len() != ours.inputs.len() {
        return Err(BtcError::Psbt("the imported PSBT's input maps do not match".into()));
    }
    decode(ours, intent, wallet)?;

    let secp = Secp256k1::verification_only();
    let mut cache = bitcoin::sighash::SighashCache::new(&ours.unsigned_tx);
    // A PSBT of the same unsigned transaction that carries only the checked signatures: the
    // combiner merges nothing else.
    let mut clean = Psbt::from_unsigned_tx(ours.unsigned_tx.clone())
        .map_err(|e| BtcError::Psbt(e.to_string()))?;
    let mut added = 0;
    let mut signers: Vec<String> = Vec::new();
    for (n, ((mine, their), slot)) in
        ours.inputs.iter().zip(&theirs.inputs).zip(clean.inputs.iter_mut()).enumerate()
    {
        // Present: `decode` refused any input without them.
        let (Some(script), Some(utxo)) = (&mine.witness_script, &mine.witness_utxo) else {
            return Err(BtcError::Psbt(format!("input {n} has no witness script or UTXO")));
        };
        let keys = script_keys(script);
        let sighash = cache
            .p2wsh_signature_hash(n, script, utxo.value, bitcoin::sighash::EcdsaSighashType::All)
            .map_err(|e| BtcError::Psbt(e.to_string()))?;
        let msg = bitcoin::secp256k1::Message::from(sighash);
        let bad =
            |key: String, why: &str| BtcError::BadSignature { input: n, key, why: why.to_owned() };
        let check = |key: &bitcoin::PublicKey, sig: &bitcoin::ecdsa::Signature| {
            if !keys.contains(key) {
                return Err(bad(key.to_string(), "the key is not in this input's script"));
            }
            if sig.sighash_type != bitcoin::sighash::EcdsaSighashType::All {
                return Err(bad(
                    key.to_string(),
                    &format!("it signs with {}; only SIGHASH_ALL is taken", sig.sighash_type),
                ));
            }
            secp.verify_ecdsa(&msg, &sig.signature, &key.inner)
                .map_err(|_| bad(key.to_string(), "it does not verify over this transaction"))
        };

        let mut found: Vec<(bitcoin::PublicKey, bitcoin::ecdsa::Signature)> = Vec::new();
        for (key, sig) in &their.partial_sigs {
            check(key, sig)?;
            found.push((*key, *sig));
        }
        if their.final_script_sig.as_ref().is_some_and(|s| !s.is_empty()) {
            return Err(BtcError::Psbt(format!(
                "input {n} is finalized with a script signature; a P2WSH input has none"
            )));
        }
        if let Some(witness) = &their.final_script_witness {
            // A finalized P2WSH multisig input: an empty element (CHECKMULTISIG's extra
            // pop), the signatures, the witness script. Each signature is matched to the
            // key it verifies under.
            let elements: Vec<&[u8]> = witness.iter().collect();
            let Some((last, rest)) = elements.split_last() else {
                return Err(BtcError::Psbt(format!("input {n} has an empty final witness")));
            };
            if *last != script.as_bytes() {
                return Err(BtcError::Psbt(format!(
                    "input {n}: the final witness is not for the wallet's witness script"
                )));
            }
            for element in rest.iter().filter(|e| !e.is_empty()) {
                let sig = bitcoin::ecdsa::Signature::from_slice(element).map_err(|e| {
                    bad("?".into(), &format!("a final witness element is not a signature: {e}"))
                })?;
                let key = keys
                    .iter()
                    .find(|k| check(k, &sig).is_ok())
                    .ok_or_else(|| bad("?".into(), "it verifies under no key of the script"))?;
                found.push((*key, sig));
            }
        }
        for (key, sig) in found {
            if mine.partial_sigs.contains_key(&key) || slot.partial_sigs.contains_key(&key) {
                continue;
            }
            slot.partial_sigs.insert(key, sig);
            added += 1;
            if let Some((fp, _)) = mine.bip32_derivation.get(&key.inner) {
                let fp = fp.to_string();
                if !signers.contains(&fp) {
                    signers.push(fp);
                }
            }
        }
    }
    let mut psbt = ours.clone();
    psbt.combine(clean).map_err(|e| BtcError::Psbt(e.to_string()))?;
    let decoded = decode(&psbt, intent, wallet)?;
    Ok(Imported { psbt, decoded, added, signers })
}
