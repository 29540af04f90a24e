//! Members of governance as the log names them: an id, an Ed25519 key, roles, and a passkey
//! for approvals. Below `log`, `policy` and `approval`, which all name members.

use ed25519_dalek::VerifyingKey;
use serde::{Deserialize, Serialize};

use crate::Role;

/// A member whose key does not parse (the member's id).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadKey(pub String);

/// A member as written in the log: id, Ed25519 public key (hex), roles.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemberSpec {
    pub id: String,
    pub public_key: String,
    pub roles: Vec<Role>,
    /// A passkey the member approves withdrawals with (absent from the log's encoding when
    /// there is none, so older logs keep their hashes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub passkey: Option<crate::webauthn::PasskeySpec>,
}

/// A member with a parsed key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub id: String,
    pub key: VerifyingKey,
    pub roles: Vec<Role>,
    pub passkey: Option<crate::webauthn::Passkey>,
}

impl Member {
    /// Parse a member's keys; `Err` names the member whose key is malformed.
    pub(crate) fn parse(spec: &MemberSpec) -> Result<Member, BadKey> {
        let key = hex::decode(&spec.public_key)
            .ok()
            .and_then(|b| crate::signature::ed25519_key(&b))
            .ok_or_else(|| BadKey(spec.id.clone()))?;
        let passkey = spec
            .passkey
            .as_ref()
            .map(crate::webauthn::Passkey::parse)
            .transpose()
            .map_err(|_| BadKey(spec.id.clone()))?;
        Ok(Member { id: spec.id.clone(), key, roles: spec.roles.clone(), passkey })
    }
    pub fn has(&self, role: Role) -> bool {
        self.roles.contains(&role)
    }
}
