//! Governance: who may change what, and what a withdrawal needs before any signer signs it.
//!
//! - [`approval`]: an approver's Ed25519 signature over an intent hash, the policy version
//!   and an expiry. Nothing trusts the API's word that an approval is valid: each check
//!   verifies the signature against the approver's key from the governance log.
//! - [`initiation`]: the initiator's signature over what they asked for (the exchange's
//!   backend or a staff member, a member the log names); signers take the initiator's roles
//!   from the log, never from the request.
//! - [`policy`]: ordered typed rules (wallet tier, asset, amount range, destination
//!   category, initiator role, time window) with an action (allow, require approvals, block)
//!   and velocity limits; [`policy::evaluate`] is pure and names the rule and version that
//!   decided.
//! - [`log`]: the hash-linked, signed log of changes (members, quorum, policy, whitelist,
//!   freezes) from a pinned genesis. [`log::replay`] verifies every link and every quorum and
//!   yields the state in force; a row written straight into a database changes nothing.
//! - [`refusal`]: why a signer did not sign, typed from the node to the API.
//! - [`signature`]: the Ed25519 and passkey (ES256) signature checks everything above makes.
//! - [`gate`]: the one pre-signing decision (freezes, whitelists and time-locks, policy),
//!   made by every signer node and, to hold back and explain, by the engine and the API.
//!
//! Pure: no clock (time is passed in), no I/O, no randomness.

pub mod approval;
pub mod gate;
pub mod initiation;
pub mod log;
pub mod member;
pub mod policy;
pub mod refusal;
pub mod signature;
pub mod webauthn;

/// `SHA-256(SHA-256(tag) || SHA-256(tag) || data)`: the BIP-340 tagged hash, so a hash of one
/// kind of message can never be taken for another kind.
pub fn tagged_hash(tag: &str, data: &[u8]) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    let t = Sha256::digest(tag.as_bytes());
    let mut h = Sha256::new();
    h.update(t);
    h.update(t);
    h.update(data);
    h.finalize().into()
}

/// A governance member's role.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Approves governance changes (with a quorum of admins).
    Admin,
    /// May freeze at once, alone; unfreezing needs the admins.
    SecurityOfficer,
    /// Approves withdrawals.
    Approver,
    /// Requests withdrawals (operators, the exchange's backend).
    Operator,
}

impl Role {
    /// The name the log and the CLI use (`admin`, `security_officer`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::SecurityOfficer => "security_officer",
            Role::Approver => "approver",
            Role::Operator => "operator",
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
