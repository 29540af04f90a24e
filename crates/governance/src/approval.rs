//! Signed approvals of one intent under one policy version, until an expiry.

use serde::{Deserialize, Serialize};
use strongroom_core::{IntentHash, Timestamp};

use crate::tagged_hash;

pub const APPROVAL_TAG: &str = "strongroom/approval/v1";

/// What an approver signs: the intent hash, the policy version in force, and an expiry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Approval {
    /// The approver's member id in the governance log.
    pub approver: String,
    /// Hex of the 32-byte intent hash.
    pub intent_hash: String,
    pub policy_version: u64,
    pub expires_at: Timestamp,
    /// Hex of the 64-byte Ed25519 signature over [`Approval::message`] (empty when the
    /// approval was made with a passkey).
    pub signature: String,
    /// A passkey assertion whose challenge is [`Approval::message`], instead of the Ed25519
    /// signature (see [`crate::webauthn`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webauthn: Option<crate::webauthn::Assertion>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ApprovalError {
    #[error("approval by {0} is not for this intent")]
    OtherIntent(String),
    #[error("approval by {who} is for policy version {theirs}, not {ours}")]
    OtherPolicy { who: String, theirs: u64, ours: u64 },
    #[error("approval by {0} has expired")]
    Expired(String),
    #[error("approval by {0}: signature does not verify")]
    BadSignature(String),
    #[error("approval by {0}: passkey assertion refused: {1}")]
    BadPasskey(String, String),
    #[error("approval by {0}: not a known member")]
    UnknownApprover(String),
}

impl Approval {
    /// The signed message: `tagged_hash(APPROVAL_TAG, intent_hash || version || expiry)`.
    pub fn message(intent: &IntentHash, policy_version: u64, expires_at: Timestamp) -> [u8; 32] {
        let mut data = Vec::with_capacity(48);
        data.extend_from_slice(&intent.0);
        data.extend_from_slice(&policy_version.to_be_bytes());
        data.extend_from_slice(&expires_at.unix_ms().to_be_bytes());
        tagged_hash(APPROVAL_TAG, &data)
    }

    /// Sign an approval (the approver's own device does this).
    pub fn sign(
        approver: &str,
        key: &ed25519_dalek::SigningKey,
        intent: &IntentHash,
        policy_version: u64,
        expires_at: Timestamp,
    ) -> Approval {
        use ed25519_dalek::Signer;
        let sig = key.sign(&Self::message(intent, policy_version, expires_at));
        Approval {
            approver: approver.to_owned(),
            intent_hash: intent.to_hex(),
            policy_version,
            expires_at,
            signature: hex::encode(sig.to_bytes()),
            webauthn: None,
        }
    }

    /// An approval made with a passkey: `assertion` answers the challenge
    /// [`Approval::message`] for these fields.
    pub fn with_passkey(
        approver: &str,
        intent: &IntentHash,
        policy_version: u64,
        expires_at: Timestamp,
        assertion: crate::webauthn::Assertion,
    ) -> Approval {
        Approval {
            approver: approver.to_owned(),
            intent_hash: intent.to_hex(),
            policy_version,
            expires_at,
            signature: String::new(),
            webauthn: Some(assertion),
        }
    }

    /// Valid for this intent, this policy version, now, by this member (their Ed25519 key,
    /// or their registered passkey for a passkey approval).
    pub fn verify(
        &self,
        member: &crate::member::Member,
        intent: &IntentHash,
        policy_version: u64,
        now: Timestamp,
    ) -> Result<(), ApprovalError> {
        let who = || self.approver.clone();
        if self.intent_hash != intent.to_hex() {
            return Err(ApprovalError::OtherIntent(who()));
        }
        if self.policy_version != policy_version {
            return Err(ApprovalError::OtherPolicy {
                who: who(),
                theirs: self.policy_version,
                ours: policy_version,
            });
        }
        if self.expires_at <= now {
            return Err(ApprovalError::Expired(who()));
        }
        let message = Self::message(intent, policy_version, self.expires_at);
        if let Some(assertion) = &self.webauthn {
            let passkey = member.passkey.as_ref().ok_or_else(|| {
                ApprovalError::BadPasskey(self.approver.clone(), "no passkey is registered".into())
            })?;
            return crate::webauthn::verify(passkey, &message, assertion)
                .map_err(|e| ApprovalError::BadPasskey(self.approver.clone(), e));
        }
        let bytes = hex::decode(&self.signature).map_err(|_| ApprovalError::BadSignature(who()))?;
        if !crate::signature::ed25519_verify(&member.key, &message, &bytes) {
            return Err(ApprovalError::BadSignature(who()));
        }
        Ok(())
    }
}
