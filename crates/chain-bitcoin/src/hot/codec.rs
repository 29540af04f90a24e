//! The hot wallet's transactions: P2WPKH spends by a threshold ECDSA key (the wallet's own
//! key or a customer's deposit child key), built, decoded, signed and checked through the
//! one chain boundary ([`strongroom_chain::TxCodec`]).
//!
//! The unsigned transaction travels as a BIP-174 PSBT whose every input carries the whole
//! transaction it spends. A codec is bound to one key: it derives the key's own script
//! itself, so nothing in the PSBT says which coins or which change are "ours". Decoding
//! refuses, typed ([`TxRefusal`]): an input that is not the key's own coin, an input without
//! its previous transaction or whose stated amount or script is not that transaction's (a
//! lying amount that would hide a fee), a signature hash type other than the default, an
//! output the intent cannot name (a second outside payment, change to a foreign script),
//! and any field a plain transfer does not set. What is left is one [`Movement`]: the one
//! outside payment (or, with none, the key paying itself), and the fee actually paid.

use bitcoin::consensus::encode::serialize;
use bitcoin::hashes::Hash;
use bitcoin::key::CompressedPublicKey;
use bitcoin::psbt::Psbt;
use bitcoin::secp256k1::{ecdsa, Message, PublicKey, Secp256k1};
use bitcoin::sighash::{EcdsaSighashType, SighashCache};
use bitcoin::{
    absolute, transaction, Network, OutPoint, ScriptBuf, Sequence, Transaction, TxIn, TxOut, Txid,
    Witness,
};
use strongroom_chain::{ChainError, Movement, SignedTx, TxCodec};
use strongroom_core::{Intent, TxRefusal};
use strongroom_units::{Address, Amount, ChainId};

/// A coin the wallet may spend: the transaction that made it and which of its outputs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HotCoin {
    pub tx: Transaction,
    pub vout: u32,
}

impl HotCoin {
    pub fn outpoint(&self) -> OutPoint {
        OutPoint { txid: self.tx.compute_txid(), vout: self.vout }
    }

    fn output(&self) -> Option<&TxOut> {
        self.tx.output.get(usize::try_from(self.vout).ok()?)
    }
}

/// What [`HotCodec::build`] needs besides the intent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HotParams {
    /// The coins it may choose from (others' coins in the list are refused).
    pub coins: Vec<HotCoin>,
    /// The fee rate, in satoshis per virtual byte.
    pub fee_rate: u64,
}

/// A decoded hot-wallet transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HotTx {
    pub movement: Movement,
    /// The transaction's id: the same before and after signing (segwit), so it names the
    /// one transaction a signer signed for an intent, whichever input it signs.
    pub txid: Txid,
    /// The BIP-143 digest (SIGHASH_ALL) of each input, in order.
    pub digests: Vec<[u8; 32]>,
    /// The amount of each input, in order.
    pub spent: Vec<u64>,
    /// The coin each input spends, in order.
    pub coins: Vec<OutPoint>,
}

/// Sequence numbers a plain transfer uses: final, or opted in to replacement (BIP-125),
/// never a relative time lock (BIP-68).
const PLAIN_SEQUENCES: [Sequence; 3] =
    [Sequence::ENABLE_RBF_NO_LOCKTIME, Sequence::ENABLE_LOCKTIME_NO_RBF, Sequence::MAX];

/// The weight of a P2WPKH input with its witness at its largest (a 72-byte DER signature
/// with its sighash byte, a 33-byte key), and of the rest of a segwit transaction.
const INPUT_WEIGHT: u64 = 41 * 4 + (1 + 1 + 73 + 1 + 33);
const OVERHEAD_WEIGHT: u64 = (4 + 1 + 1 + 4) * 4 + 2;

/// The codec for one hot key's P2WPKH wallet on one Bitcoin network.
#[derive(Debug, Clone)]
pub struct HotCodec {
    chain: ChainId,
    network: Network,
    key: CompressedPublicKey,
    script: ScriptBuf,
}

fn refused(r: TxRefusal) -> ChainError {
    ChainError::Refused(r)
}

fn decode_err(what: impl std::fmt::Display) -> ChainError {
    ChainError::Decode(what.to_string())
}

/// Satoshis as an [`Amount`] (always in range: a `u64` fits).
fn sat(v: u64) -> Result<Amount, ChainError> {
    Amount::from_base_units(u128::from(v)).map_err(decode_err)
}

fn unexpected(field: String) -> ChainError {
    refused(TxRefusal::UnexpectedField { field })
}

fn index(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

impl HotCodec {
    /// The codec for the P2WPKH wallet of `public_key` (33-byte compressed secp256k1) on
    /// `chain` (a `bip122:` chain).
    pub fn p2wpkh(chain: ChainId, public_key: &[u8]) -> Result<Self, ChainError> {
        let network = crate::network(&chain).map_err(|e| ChainError::Build(e.to_string()))?;
        let key = CompressedPublicKey::from_slice(public_key)
            .map_err(|e| ChainError::Build(format!("not a compressed secp256k1 key: {e}")))?;
        let script = ScriptBuf::new_p2wpkh(&key.wpubkey_hash());
        Ok(HotCodec { chain, network, key, script })
    }

    /// The wallet's own address.
    pub fn own_address(&self) -> Result<Address, ChainError> {
        self.to_units(&bitcoin::Address::p2wpkh(&self.key, self.network))
    }

    /// The script every coin of this wallet, and its change, pays to.
    pub fn script(&self) -> &ScriptBuf {
        &self.script
    }

    fn to_units(&self, a: &bitcoin::Address) -> Result<Address, ChainError> {
        Address::parse(&self.chain, &a.to_string()).map_err(decode_err)
    }

    /// Read `unsigned` as [`HotCodec::decode`] does, with the digests to sign and the id.
    pub fn parse(&self, unsigned: &[u8]) -> Result<HotTx, ChainError> {
        let psbt = Psbt::deserialize(unsigned).map_err(|e| decode_err(format!("PSBT: {e}")))?;
        if psbt.serialize() != unsigned {
            return Err(decode_err("the PSBT is not in canonical form (extra or reordered bytes)"));
        }
        self.check_fields(&psbt)?;
        let tx = &psbt.unsigned_tx;
        if tx.input.is_empty() || tx.output.is_empty() {
            return Err(decode_err("a transaction needs inputs and outputs"));
        }

        let mut spent = Vec::with_capacity(tx.input.len());
        for (n, (txin, input)) in tx.input.iter().zip(&psbt.inputs).enumerate() {
            let input_no = index(n);
            let prev = txin.previous_output;
            let Some(full) = &input.non_witness_utxo else {
                return Err(refused(TxRefusal::MissingPrevious { input: input_no }));
            };
            let mismatch =
                |detail: String| refused(TxRefusal::PreviousMismatch { input: input_no, detail });
            if full.compute_txid() != prev.txid {
                return Err(mismatch(format!(
                    "the previous transaction given is {}, not {}",
                    full.compute_txid(),
                    prev.txid
                )));
            }
            let Some(out) = usize::try_from(prev.vout).ok().and_then(|v| full.output.get(v)) else {
                return Err(mismatch(format!("{} has no output {}", prev.txid, prev.vout)));
            };
            if let Some(stated) = &input.witness_utxo {
                if stated != out {
                    return Err(mismatch(format!(
                        "it states {} sat to {}, but {prev} is {} sat to {}",
                        stated.value.to_sat(),
                        stated.script_pubkey,
                        out.value.to_sat(),
                        out.script_pubkey
                    )));
                }
            }
            if out.script_pubkey != self.script {
                return Err(refused(TxRefusal::ForeignInput {
                    input: input_no,
                    spent: prev.to_string(),
                }));
            }
            if let Some(t) = input.sighash_type {
                if t.ecdsa_hash_ty().ok() != Some(EcdsaSighashType::All) {
                    return Err(refused(TxRefusal::Sighash {
                        input: input_no,
                        sighash: t.to_u32(),
                    }));
                }
            }
            if !PLAIN_SEQUENCES.contains(&txin.sequence) {
                return Err(unexpected(format!("input {n}'s sequence {}", txin.sequence)));
            }
            spent.push(out.value.to_sat());
        }

        // One outside payment at most; everything else comes back to this key.
        let mut payment: Option<(usize, &TxOut)> = None;
        let mut own = Vec::new();
        for (n, out) in tx.output.iter().enumerate() {
            if out.script_pubkey == self.script {
                own.push((n, out));
                continue;
            }
            let addressed = bitcoin::Address::from_script(&out.script_pubkey, self.network).ok();
            if payment.is_some() || addressed.is_none() {
                return Err(refused(TxRefusal::UnnamedOutput {
                    output: index(n),
                    to: addressed.map_or_else(
                        || format!("script {}", out.script_pubkey.to_hex_string()),
                        |a| a.to_string(),
                    ),
                    amount: sat(out.value.to_sat())?,
                }));
            }
            payment = Some((n, out));
        }
        let (destination, amount) = match (payment, own.first().copied()) {
            (Some((_, out)), _) | (None, Some((_, out))) => {
                let a = bitcoin::Address::from_script(&out.script_pubkey, self.network)
                    .map_err(decode_err)?;
                (self.to_units(&a)?, out.value.to_sat())
            }
            (None, None) => return Err(decode_err("no outputs")),
        };

        let total_in = spent.iter().try_fold(0u64, |a, v| a.checked_add(*v));
        let total_out = tx.output.iter().try_fold(0u64, |a, o| a.checked_add(o.value.to_sat()));
        let (Some(total_in), Some(total_out)) = (total_in, total_out) else {
            return Err(decode_err("amounts overflow"));
        };
        let Some(fee) = total_in.checked_sub(total_out) else {
            return Err(refused(TxRefusal::OutputsExceedInputs {
                inputs: sat(total_in)?,
                outputs: sat(total_out)?,
            }));
        };

        let mut cache = SighashCache::new(tx);
        let mut digests = Vec::with_capacity(spent.len());
        for (n, value) in spent.iter().enumerate() {
            let h = cache
                .p2wpkh_signature_hash(
                    n,
                    &self.script,
                    bitcoin::Amount::from_sat(*value),
                    EcdsaSighashType::All,
                )
                .map_err(decode_err)?;
            digests.push(h.to_byte_array());
        }
        Ok(HotTx {
            movement: Movement {
                chain: self.chain.clone(),
                contract: None,
                destination,
                amount: sat(amount)?,
                max_fee: sat(fee)?,
            },
            txid: tx.compute_txid(),
            digests,
            spent,
            coins: tx.input.iter().map(|i| i.previous_output).collect(),
        })
    }

    /// Refuse every field a plain P2WPKH transfer built by [`HotCodec::build`] does not set.
    fn check_fields(&self, psbt: &Psbt) -> Result<(), ChainError> {
        if psbt.version != 0
            || !psbt.xpub.is_empty()
            || !psbt.proprietary.is_empty()
            || !psbt.unknown.is_empty()
        {
            return Err(unexpected(
                "a global PSBT field (version, xpub, proprietary, unknown)".into(),
            ));
        }
        let tx = &psbt.unsigned_tx;
        if tx.version != transaction::Version::TWO && tx.version != transaction::Version::ONE {
            return Err(unexpected(format!("version {}", tx.version)));
        }
        if tx.lock_time != absolute::LockTime::ZERO {
            return Err(unexpected(format!("the lock time {}", tx.lock_time)));
        }
        for (n, i) in psbt.inputs.iter().enumerate() {
            let set = [
                ("partial signatures", !i.partial_sigs.is_empty()),
                ("a redeem script", i.redeem_script.is_some()),
                ("a witness script", i.witness_script.is_some()),
                ("key origins", !i.bip32_derivation.is_empty()),
                ("a final scriptSig", i.final_script_sig.is_some()),
                ("a final witness", i.final_script_witness.is_some()),
                (
                    "hash preimages",
                    !(i.ripemd160_preimages.is_empty()
                        && i.sha256_preimages.is_empty()
                        && i.hash160_preimages.is_empty()
                        && i.hash256_preimages.is_empty()),
                ),
                (
                    "Taproot fields",
                    i.tap_key_sig.is_some()
                        || !i.tap_script_sigs.is_empty()
                        || !i.tap_scripts.is_empty()
                        || !i.tap_key_origins.is_empty()
                        || i.tap_internal_key.is_some()
                        || i.tap_merkle_root.is_some(),
                ),
                (
                    "proprietary or unknown fields",
                    !(i.proprietary.is_empty() && i.unknown.is_empty()),
                ),
            ];
            if let Some((what, _)) = set.iter().find(|(_, on)| *on) {
                return Err(unexpected(format!("input {n}: {what}")));
            }
        }
        for (n, o) in psbt.outputs.iter().enumerate() {
            if o.redeem_script.is_some()
                || o.witness_script.is_some()
                || !o.bip32_derivation.is_empty()
                || o.tap_internal_key.is_some()
                || o.tap_tree.is_some()
                || !o.tap_key_origins.is_empty()
                || !o.proprietary.is_empty()
                || !o.unknown.is_empty()
            {
                return Err(unexpected(format!("output {n}: scripts, keys or unknown fields")));
            }
        }
        Ok(())
    }

    /// The fee a spend of `inputs` of this wallet's coins paying `to`, with change back to the
    /// wallet, pays at `fee_rate` sat/vB (its signatures at their largest).
    pub fn fee_for(&self, inputs: usize, to: &Address, fee_rate: u64) -> Result<u64, ChainError> {
        let to = crate::address(to.as_str(), self.network)
            .map_err(|e| ChainError::Build(e.to_string()))?
            .script_pubkey();
        Ok(Self::vsize(inputs, &[&to, &self.script]).saturating_mul(fee_rate))
    }

    /// The virtual size of a transaction of `inputs` of this wallet's coins and `outputs`,
    /// its signatures at their largest.
    fn vsize(inputs: usize, outputs: &[&ScriptBuf]) -> u64 {
        let n = u64::try_from(inputs).unwrap_or(u64::MAX);
        let out: u64 =
            outputs.iter().map(|s| (8 + 1 + u64::try_from(s.len()).unwrap_or(u64::MAX)) * 4).sum();
        (OVERHEAD_WEIGHT + n.saturating_mul(INPUT_WEIGHT) + out).div_ceil(4)
    }
}

impl TxCodec for HotCodec {
    type Params = HotParams;

    fn chain(&self) -> &ChainId {
        &self.chain
    }

    /// Coins largest first until they pay the amount and the fee at `fee_rate`; change above
    /// the dust limit back to the wallet's own script, below it to the fee.
    fn build(&self, intent: &Intent, params: &HotParams) -> Result<Vec<u8>, ChainError> {
        let build = |m: String| ChainError::Build(m);
        if intent.chain != self.chain {
            return Err(build(format!(
                "the intent is for {}, this wallet is on {}",
                intent.chain.as_str(),
                self.chain.as_str()
            )));
        }
        if intent.asset.contract.is_some() {
            return Err(build("Bitcoin has no token contracts".into()));
        }
        let amount = u64::try_from(intent.amount.base_units())
            .ok()
            .filter(|a| *a > 0 && *a <= bitcoin::Amount::MAX_MONEY.to_sat())
            .ok_or_else(|| {
                build(format!("{} sat is not a payable amount", intent.amount.base_units()))
            })?;
        let to = crate::address(intent.destination.as_str(), self.network)
            .map_err(|e| build(e.to_string()))?
            .script_pubkey();
        let cap = u64::try_from(intent.fee_cap.base_units()).unwrap_or(u64::MAX);

        let mut coins: Vec<&HotCoin> = Vec::new();
        for c in &params.coins {
            match c.output() {
                Some(o) if o.script_pubkey == self.script => coins.push(c),
                _ => return Err(build(format!("{} is not a coin of this wallet", c.outpoint()))),
            }
        }
        coins.sort_by_key(|c| {
            (std::cmp::Reverse(c.output().map_or(0, |o| o.value.to_sat())), c.outpoint())
        });

        let mut chosen: Vec<&HotCoin> = Vec::new();
        let mut total: u64 = 0;
        let fee_for = |inputs: usize, outs: &[&ScriptBuf]| {
            Self::vsize(inputs, outs).saturating_mul(params.fee_rate)
        };
        let (fee, change) = loop {
            if !chosen.is_empty() {
                // More coins only raise the fee: past the cap with these, past it for good.
                let least = fee_for(chosen.len(), &[&to]);
                if least > cap {
                    return Err(ChainError::FeeAboveCap {
                        max_fee: u128::from(least),
                        cap: u128::from(cap),
                    });
                }
                let with_change = fee_for(chosen.len(), &[&to, &self.script]);
                let dust = self.script.minimal_non_dust().to_sat();
                if let Some(change) =
                    total.checked_sub(amount).and_then(|r| r.checked_sub(with_change))
                {
                    if change >= dust {
                        break (with_change, Some(change));
                    }
                }
                let without = fee_for(chosen.len(), &[&to]);
                if let Some(rest) = total.checked_sub(amount).filter(|r| *r >= without) {
                    // The remainder is too small to be worth an output: all of it is fee.
                    break (rest, None);
                }
            }
            let Some(next) = coins.get(chosen.len()) else {
                return Err(build(format!(
                    "the wallet's {} coins hold {total} sat, not enough for {amount} sat and the fee",
                    coins.len()
                )));
            };
            total = total.saturating_add(next.output().map_or(0, |o| o.value.to_sat()));
            chosen.push(next);
        };
        if fee > cap {
            return Err(ChainError::FeeAboveCap { max_fee: u128::from(fee), cap: u128::from(cap) });
        }

        let mut output =
            vec![TxOut { value: bitcoin::Amount::from_sat(amount), script_pubkey: to }];
        if let Some(change) = change {
            output.push(TxOut {
                value: bitcoin::Amount::from_sat(change),
                script_pubkey: self.script.clone(),
            });
        }
        let tx = Transaction {
            version: transaction::Version::TWO,
            lock_time: absolute::LockTime::ZERO,
            input: chosen
                .iter()
                .map(|c| TxIn {
                    previous_output: c.outpoint(),
                    script_sig: ScriptBuf::new(),
                    sequence: Sequence::ENABLE_RBF_NO_LOCKTIME,
                    witness: Witness::new(),
                })
                .collect(),
            output,
        };
        let mut psbt = Psbt::from_unsigned_tx(tx).map_err(|e| build(e.to_string()))?;
        for (input, coin) in psbt.inputs.iter_mut().zip(&chosen) {
            input.witness_utxo = coin.output().cloned();
            input.non_witness_utxo = Some(coin.tx.clone());
        }
        Ok(psbt.serialize())
    }

    fn decode(&self, unsigned: &[u8]) -> Result<Movement, ChainError> {
        self.parse(unsigned).map(|t| t.movement)
    }

    fn digests(&self, unsigned: &[u8]) -> Result<Vec<[u8; 32]>, ChainError> {
        self.parse(unsigned).map(|t| t.digests)
    }

    /// `signatures`: one 64-byte compact ECDSA signature (low s) per input, by this
    /// wallet's key over that input's digest.
    fn attach(
        &self,
        unsigned: &[u8],
        public_key: &[u8],
        signatures: &[Vec<u8>],
    ) -> Result<SignedTx, ChainError> {
        let bad = |m: String| ChainError::Signature(m);
        if public_key != self.key.to_bytes() {
            return Err(bad("not this wallet's key".into()));
        }
        let parsed = self.parse(unsigned)?;
        if signatures.len() != parsed.digests.len() {
            return Err(bad(format!(
                "{} signatures for {} inputs",
                signatures.len(),
                parsed.digests.len()
            )));
        }
        let psbt = Psbt::deserialize(unsigned).map_err(decode_err)?;
        let mut tx = psbt.unsigned_tx;
        let pk = PublicKey::from_slice(public_key).map_err(|e| bad(e.to_string()))?;
        let secp = Secp256k1::verification_only();
        for (n, ((input, digest), sig)) in
            tx.input.iter_mut().zip(&parsed.digests).zip(signatures).enumerate()
        {
            let sig =
                ecdsa::Signature::from_compact(sig).map_err(|e| bad(format!("input {n}: {e}")))?;
            // libsecp256k1 accepts only low-s signatures, as Bitcoin's relay policy does.
            secp.verify_ecdsa(&Message::from_digest(*digest), &sig, &pk).map_err(|_| {
                bad(format!("input {n}: not this key's signature over the input's digest"))
            })?;
            let sig =
                bitcoin::ecdsa::Signature { signature: sig, sighash_type: EcdsaSighashType::All };
            input.witness = Witness::p2wpkh(&sig, &pk);
        }
        Ok(SignedTx { raw: serialize(&tx), txid: tx.compute_txid().to_string() })
    }

    fn address_of(&self, public_key: &[u8]) -> Result<Address, ChainError> {
        let key = CompressedPublicKey::from_slice(public_key)
            .map_err(|e| ChainError::Build(format!("not a compressed secp256k1 key: {e}")))?;
        self.to_units(&bitcoin::Address::p2wpkh(&key, self.network))
    }
}

/// Check a signed hot-wallet transaction with Bitcoin Core's consensus code against the
/// coins it spends.
pub fn verify_signed(raw: &[u8], coins: &[HotCoin]) -> Result<(), crate::BtcError> {
    let tx: Transaction = bitcoin::consensus::deserialize(raw)
        .map_err(|e| crate::BtcError::Consensus(e.to_string()))?;
    let spent: std::collections::BTreeMap<OutPoint, TxOut> =
        coins.iter().filter_map(|c| Some((c.outpoint(), c.output()?.clone()))).collect();
    crate::psbt::verify(&tx, &spent)
}
