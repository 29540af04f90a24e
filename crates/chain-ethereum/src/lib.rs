//! The Ethereum adapter: EIP-1559 transactions for native ETH and ERC-20 `transfer`, built
//! from an intent with alloy's consensus types and decoded back by the same rules every
//! signer applies.
//!
//! The decoder accepts exactly two shapes and refuses everything else:
//! - native: `to` = destination, `value` = amount, no call data;
//! - token: `to` = the token contract, `value` = 0, call data = `transfer(destination,
//!   amount)` in its one canonical ABI encoding.
//!
//! Contract creation, access lists, another chain id, a priority fee above the max fee and
//! any non-canonical encoding are refused. With feature `rpc`, [`rpc::EthRpc`] talks to a node,
//! [`relayer`] signs and sends transactions with the online side's own gas-paying key, and
//! [`safe_node`] deploys Safes through the standard factory and executes owner-signed Safe
//! transactions through that relayer.

use alloy_consensus::{SignableTransaction, TxEip1559};
use alloy_eips::eip2718::Encodable2718;
use alloy_primitives::{Address as EthAddress, Bytes, Signature, TxKind, B256, U256};
use alloy_sol_types::{sol, SolCall};
use strongroom_chain::{ChainError, Movement, SignedTx, TxCodec};
use strongroom_core::Intent;
use strongroom_units::{Address, Amount, ChainId};

#[cfg(feature = "rpc")]
pub mod anvil;
#[cfg(feature = "rpc")]
pub mod relayer;
#[cfg(feature = "rpc")]
pub mod rpc;
pub mod safe;
#[cfg(feature = "rpc")]
pub mod safe_node;

sol! {
    /// The ERC-20 calls and event the adapter uses.
    interface IERC20 {
        function transfer(address to, uint256 amount) external returns (bool);
        function balanceOf(address owner) external view returns (uint256);
        event Transfer(address indexed from, address indexed to, uint256 value);
    }
}

/// Gas for a plain ETH transfer.
pub const NATIVE_TRANSFER_GAS: u64 = 21_000;
/// The EIP-2718 type byte of an EIP-1559 transaction.
const EIP1559_TYPE: u8 = 0x02;
/// secp256k1's group order divided by two: EIP-2 refuses signatures with a larger `s`.
const HALF_ORDER: U256 = U256::from_limbs([
    0xdfe9_2f46_681b_20a0,
    0x5d57_6e73_57a4_501d,
    0xffff_ffff_ffff_ffff,
    0x7fff_ffff_ffff_ffff,
]);

/// Nonce and fees: what `build` needs besides the intent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EthParams {
    pub nonce: u64,
    pub gas_limit: u64,
    pub max_fee_per_gas: u128,
    pub max_priority_fee_per_gas: u128,
}

impl EthParams {
    /// The most this transaction can cost in fees, in wei.
    pub fn max_fee(&self) -> Option<u128> {
        u128::from(self.gas_limit).checked_mul(self.max_fee_per_gas)
    }
}

/// An unsigned EIP-1559 transaction read by [`EthCodec::parse`]: the fields the engine needs
/// (nonce, fees) beside the movement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedTx {
    pub movement: Movement,
    pub params: EthParams,
    /// The transaction's `to`: the destination, or the token contract.
    pub to: Address,
}

/// The adapter for one EVM chain.
#[derive(Debug, Clone)]
pub struct EthCodec {
    chain: ChainId,
    chain_id: u64,
}

impl EthCodec {
    pub fn new(chain: ChainId) -> Result<Self, ChainError> {
        let chain_id = chain
            .eip155_id()
            .ok_or_else(|| ChainError::Build(format!("{} is not an EVM chain", chain.as_str())))?;
        Ok(EthCodec { chain, chain_id })
    }

    pub fn chain_id(&self) -> u64 {
        self.chain_id
    }

    /// Decode an unsigned transaction, keeping its nonce and fees.
    pub fn parse(&self, unsigned: &[u8]) -> Result<ParsedTx, ChainError> {
        let tx = decode_unsigned(unsigned)?;
        if tx.chain_id != self.chain_id {
            return Err(ChainError::Mismatch {
                field: "chain id",
                tx: tx.chain_id.to_string(),
                intent: self.chain_id.to_string(),
            });
        }
        let to = match tx.to {
            TxKind::Call(to) => to,
            TxKind::Create => return Err(refuse("contract creation")),
        };
        if !tx.access_list.is_empty() {
            return Err(refuse("access lists"));
        }
        if tx.max_priority_fee_per_gas > tx.max_fee_per_gas {
            return Err(refuse("a priority fee above the max fee"));
        }
        let params = EthParams {
            nonce: tx.nonce,
            gas_limit: tx.gas_limit,
            max_fee_per_gas: tx.max_fee_per_gas,
            max_priority_fee_per_gas: tx.max_priority_fee_per_gas,
        };
        let max_fee = params.max_fee().ok_or_else(|| refuse("a fee that overflows"))?;
        let (contract, destination, amount) = if tx.input.is_empty() {
            (None, to, small(tx.value, "value")?)
        } else {
            if !tx.value.is_zero() {
                return Err(refuse("call data together with a value"));
            }
            let call = IERC20::transferCall::abi_decode(&tx.input)
                .map_err(|_| refuse("call data other than an ERC-20 transfer"))?;
            if call.abi_encode() != tx.input.as_ref() {
                return Err(refuse("a non-canonical ERC-20 transfer encoding"));
            }
            (Some(to), call.to, small(call.amount, "token amount")?)
        };
        let amount = Amount::from_base_units(amount).map_err(|e| refuse_owned(e.to_string()))?;
        if amount.is_zero() {
            return Err(refuse("a transfer of zero"));
        }
        let movement = Movement {
            chain: self.chain.clone(),
            contract: contract.map(|c| self.address(c)).transpose()?,
            destination: self.address(destination)?,
            amount,
            max_fee: Amount::from_base_units(max_fee).map_err(|e| refuse_owned(e.to_string()))?,
        };
        Ok(ParsedTx { movement, params, to: self.address(to)? })
    }

    /// Decode a signed transaction: what it does, who signed it, and its id.
    pub fn parse_signed(&self, raw: &[u8]) -> Result<(ParsedTx, Address, String), ChainError> {
        use alloy_consensus::transaction::SignerRecoverable;
        use alloy_eips::eip2718::Decodable2718;
        let mut buf = raw;
        let envelope = alloy_consensus::TxEnvelope::decode_2718(&mut buf)
            .map_err(|e| refuse_owned(format!("signed transaction: {e}")))?;
        if !buf.is_empty() {
            return Err(refuse("bytes after the signed transaction"));
        }
        let alloy_consensus::TxEnvelope::Eip1559(signed) = &envelope else {
            return Err(refuse("a signed transaction that is not EIP-1559"));
        };
        let sender = envelope
            .recover_signer()
            .map_err(|e| ChainError::Signature(format!("cannot recover the signer: {e}")))?;
        let mut unsigned = Vec::new();
        signed.tx().encode_for_signing(&mut unsigned);
        let parsed = self.parse(&unsigned)?;
        Ok((parsed, self.address(sender)?, format!("{:#x}", signed.hash())))
    }

    fn address(&self, a: EthAddress) -> Result<Address, ChainError> {
        Address::parse(&self.chain, &a.to_checksum(None))
            .map_err(|e| ChainError::Decode(format!("address: {e}")))
    }
}

impl TxCodec for EthCodec {
    type Params = EthParams;

    fn chain(&self) -> &ChainId {
        &self.chain
    }

    fn build(&self, intent: &Intent, p: &EthParams) -> Result<Vec<u8>, ChainError> {
        if intent.chain != self.chain {
            return Err(ChainError::Build(format!(
                "intent is for {}, this adapter for {}",
                intent.chain.as_str(),
                self.chain.as_str()
            )));
        }
        if intent.amount.is_zero() {
            return Err(ChainError::Build("amount must be above zero".into()));
        }
        if p.max_priority_fee_per_gas > p.max_fee_per_gas {
            return Err(ChainError::Build("priority fee above the max fee".into()));
        }
        let max_fee = p.max_fee().ok_or_else(|| ChainError::Build("fee overflows".into()))?;
        if max_fee > intent.fee_cap.base_units() {
            return Err(ChainError::FeeAboveCap { max_fee, cap: intent.fee_cap.base_units() });
        }
        let destination = eth_address(&intent.destination)?;
        let amount = U256::from(intent.amount.base_units());
        let (to, value, input) = match &intent.asset.contract {
            None => (destination, amount, Bytes::new()),
            Some(contract) => {
                let call = IERC20::transferCall { to: destination, amount };
                (eth_address(contract)?, U256::ZERO, Bytes::from(call.abi_encode()))
            }
        };
        let tx = TxEip1559 {
            chain_id: self.chain_id,
            nonce: p.nonce,
            gas_limit: p.gas_limit,
            max_fee_per_gas: p.max_fee_per_gas,
            max_priority_fee_per_gas: p.max_priority_fee_per_gas,
            to: TxKind::Call(to),
            value,
            access_list: Default::default(),
            input,
        };
        let mut out = Vec::with_capacity(128);
        tx.encode_for_signing(&mut out);
        Ok(out)
    }

    fn decode(&self, unsigned: &[u8]) -> Result<Movement, ChainError> {
        Ok(self.parse(unsigned)?.movement)
    }

    fn digests(&self, unsigned: &[u8]) -> Result<Vec<[u8; 32]>, ChainError> {
        self.parse(unsigned)?;
        Ok(vec![decode_unsigned(unsigned)?.signature_hash().0])
    }

    fn attach(
        &self,
        unsigned: &[u8],
        public_key: &[u8],
        signatures: &[Vec<u8>],
    ) -> Result<SignedTx, ChainError> {
        self.parse(unsigned)?;
        let tx = decode_unsigned(unsigned)?;
        let [sig] = signatures else {
            return Err(ChainError::Signature(format!(
                "an EIP-1559 transaction takes one signature, got {}",
                signatures.len()
            )));
        };
        let sig: &[u8; 64] = sig
            .as_slice()
            .try_into()
            .map_err(|_| ChainError::Signature("a signature is 64 bytes (r || s)".into()))?;
        let (r, s) = sig.split_at(32);
        let (r, s) = (U256::from_be_slice(r), U256::from_be_slice(s));
        if s > HALF_ORDER {
            return Err(ChainError::Signature("s is not normalized (EIP-2)".into()));
        }
        let signer = eth_address(&self.address_of(public_key)?)?;
        let hash: B256 = tx.signature_hash();
        let signature = [false, true]
            .into_iter()
            .map(|parity| Signature::new(r, s, parity))
            .find(|sig| sig.recover_address_from_prehash(&hash).ok() == Some(signer))
            .ok_or_else(|| {
                ChainError::Signature("the signature is not the sending key's".into())
            })?;
        let signed = tx.into_signed(signature);
        let txid = format!("{:#x}", signed.hash());
        let envelope = alloy_consensus::TxEnvelope::Eip1559(signed);
        Ok(SignedTx { raw: envelope.encoded_2718(), txid })
    }

    fn address_of(&self, public_key: &[u8]) -> Result<Address, ChainError> {
        let key = k256::PublicKey::from_sec1_bytes(public_key)
            .map_err(|_| ChainError::Signature("not a secp256k1 public key".into()))?;
        let a = EthAddress::from_public_key(&k256::ecdsa::VerifyingKey::from(key));
        self.address(a)
    }
}

/// The call data of `transfer(destination, amount)`, e.g. to estimate its gas.
pub fn transfer_calldata(destination: &Address, amount: Amount) -> Result<Vec<u8>, ChainError> {
    let call = IERC20::transferCall {
        to: eth_address(destination)?,
        amount: U256::from(amount.base_units()),
    };
    Ok(call.abi_encode())
}

/// Parse one of our (EIP-55) addresses into alloy's type.
pub fn eth_address(a: &Address) -> Result<EthAddress, ChainError> {
    a.as_str()
        .parse()
        .map_err(|_| ChainError::Build(format!("{} is not an Ethereum address", a.as_str())))
}

/// `0x02 || rlp(fields)`, canonical, nothing after it.
fn decode_unsigned(unsigned: &[u8]) -> Result<TxEip1559, ChainError> {
    let (&kind, mut body) = unsigned.split_first().ok_or_else(|| refuse("an empty transaction"))?;
    if kind != EIP1559_TYPE {
        return Err(refuse_owned(format!("transaction type {kind:#04x} (only EIP-1559, 0x02)")));
    }
    let tx = <TxEip1559 as alloy_rlp::Decodable>::decode(&mut body)
        .map_err(|e| refuse_owned(format!("malformed EIP-1559 transaction: {e}")))?;
    if !body.is_empty() {
        return Err(refuse("bytes after the transaction"));
    }
    let mut again = Vec::with_capacity(unsigned.len());
    tx.encode_for_signing(&mut again);
    if again != unsigned {
        return Err(refuse("a non-canonical encoding"));
    }
    Ok(tx)
}

fn small(v: U256, what: &str) -> Result<u128, ChainError> {
    u128::try_from(v).map_err(|_| refuse_owned(format!("a {what} above 2^128")))
}

fn refuse(what: &str) -> ChainError {
    ChainError::Decode(format!("{what} is not accepted"))
}

fn refuse_owned(what: String) -> ChainError {
    ChainError::Decode(what)
}
