//! The signing bundle: the one file that crosses the air gap, out and back.

use serde::{Deserialize, Serialize};
use strongroom_chain_ethereum::safe::{Bytes, EthAddress, SafeTx, U256};
use strongroom_core::Intent;
use strongroom_governance::approval::Approval;
use strongroom_governance::log::Entry;
use strongroom_governance::Role;

use crate::ColdError;

pub const FORMAT: &str = "strongroom-cold-bundle/v1";

/// The unsigned (or partly signed) transaction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
#[allow(clippy::large_enum_variant)] // one per bundle file; boxing buys nothing
pub enum Payload {
    /// A BIP-174 PSBT, base64.
    BitcoinPsbt { psbt: String },
    /// A Safe transaction (every field the Safe hashes) and the owners' signatures so far.
    /// No hash travels: each signer computes it from these fields.
    SafeTransaction(SafePayload),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SafePayload {
    /// The Safe's address.
    pub safe: String,
    pub to: String,
    /// Wei, decimal.
    pub value: String,
    /// Call data, `0x` hex.
    pub data: String,
    /// 0 = call, 1 = delegatecall.
    pub operation: u8,
    pub safe_tx_gas: String,
    pub base_gas: String,
    pub gas_price: String,
    pub gas_token: String,
    pub refund_receiver: String,
    pub nonce: u64,
    #[serde(default)]
    pub signatures: Vec<OwnerSignature>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OwnerSignature {
    pub owner: String,
    /// `r || s || v`, `0x` hex.
    pub signature: String,
}

impl SafePayload {
    pub fn new(safe: EthAddress, tx: &SafeTx) -> SafePayload {
        SafePayload {
            safe: safe.to_checksum(None),
            to: tx.to.to_checksum(None),
            value: tx.value.to_string(),
            data: format!("0x{}", hex::encode(&tx.data)),
            operation: tx.operation,
            safe_tx_gas: tx.safeTxGas.to_string(),
            base_gas: tx.baseGas.to_string(),
            gas_price: tx.gasPrice.to_string(),
            gas_token: tx.gasToken.to_checksum(None),
            refund_receiver: tx.refundReceiver.to_checksum(None),
            nonce: tx.nonce.try_into().unwrap_or(u64::MAX),
            signatures: Vec::new(),
        }
    }

    /// The Safe's address and the transaction, parsed.
    pub fn parse(&self) -> Result<(EthAddress, SafeTx), ColdError> {
        let addr = |what: &str, v: &str| {
            v.parse::<EthAddress>()
                .map_err(|_| ColdError::Malformed(format!("{what} {v:?} is not an address")))
        };
        let num = |what: &str, v: &str| {
            U256::from_str_radix(v, 10)
                .map_err(|_| ColdError::Malformed(format!("{what} {v:?} is not a decimal number")))
        };
        let data = self
            .data
            .strip_prefix("0x")
            .and_then(|h| hex::decode(h).ok())
            .ok_or_else(|| ColdError::Malformed("data is not 0x hex".into()))?;
        Ok((
            addr("safe", &self.safe)?,
            SafeTx {
                to: addr("to", &self.to)?,
                value: num("value", &self.value)?,
                data: Bytes::from(data),
                operation: self.operation,
                safeTxGas: num("safe_tx_gas", &self.safe_tx_gas)?,
                baseGas: num("base_gas", &self.base_gas)?,
                gasPrice: num("gas_price", &self.gas_price)?,
                gasToken: addr("gas_token", &self.gas_token)?,
                refundReceiver: addr("refund_receiver", &self.refund_receiver)?,
                nonce: U256::from(self.nonce),
            },
        ))
    }

    /// The owners' signatures, parsed.
    pub fn signatures(&self) -> Result<Vec<(EthAddress, [u8; 65])>, ColdError> {
        self.signatures
            .iter()
            .map(|s| {
                let owner = s
                    .owner
                    .parse::<EthAddress>()
                    .map_err(|_| ColdError::Malformed(format!("owner {:?}", s.owner)))?;
                let sig: [u8; 65] = s
                    .signature
                    .strip_prefix("0x")
                    .and_then(|h| hex::decode(h).ok())
                    .and_then(|b| b.try_into().ok())
                    .ok_or_else(|| ColdError::Malformed(format!("signature of {}", s.owner)))?;
                Ok((owner, sig))
            })
            .collect()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bundle {
    pub format: String,
    pub intent: Intent,
    /// The member who asked for the movement, and as which role (informational: the offline
    /// signer takes the member's roles from its own copy of the log).
    pub initiator: String,
    pub initiator_role: Role,
    pub approvals: Vec<Approval>,
    /// The whole governance log from genesis; each signer checks it against the genesis it
    /// pins and its own copy (it never goes back to a shorter log).
    pub governance: Vec<Entry>,
    pub transaction: Payload,
    /// Fingerprints of the keys that signed this copy.
    #[serde(default)]
    pub signed_by: Vec<String>,
}

impl Bundle {
    pub fn from_json(bytes: &[u8]) -> Result<Bundle, ColdError> {
        let b: Bundle =
            serde_json::from_slice(bytes).map_err(|e| ColdError::Malformed(e.to_string()))?;
        if b.format != FORMAT {
            return Err(ColdError::Malformed(format!(
                "format {:?}; this signer reads {FORMAT}",
                b.format
            )));
        }
        Ok(b)
    }

    pub fn to_json(&self) -> Result<Vec<u8>, ColdError> {
        let mut v =
            serde_json::to_vec_pretty(self).map_err(|e| ColdError::Malformed(e.to_string()))?;
        v.push(b'\n');
        Ok(v)
    }
}
