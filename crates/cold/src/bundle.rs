//! The signing bundle: the one file that crosses the air gap, out and back.

use serde::{Deserialize, Serialize};
use strongroom_core::Intent;
use strongroom_governance::approval::Approval;
use strongroom_governance::log::Entry;
use strongroom_governance::Role;

use crate::ColdError;

pub const FORMAT: &str = "strongroom-cold-bundle/v1";

/// The unsigned (or partly signed) transaction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Payload {
    /// A BIP-174 PSBT, base64.
    BitcoinPsbt { psbt: String },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bundle {
    pub format: String,
    pub intent: Intent,
    /// The member who asked for the movement, and as which role.
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
