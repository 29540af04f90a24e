//! Why a signer did not sign, as a type. A node's refusal travels unchanged from the node
//! that made it, through the orchestrator and the engine, to the API and the audit logs:
//! no layer turns it into free text, and tests match on variants. `Display` is for people;
//! [`Reason::code`] is the stable code a user can search for (the table in
//! `docs/errors.md` is checked against [`Reason::CODES`]).

use serde::{Deserialize, Serialize};
use strongroom_units::Amount;

use crate::policy::Block;

/// A refusal by one node, naming the parties at fault when a peer misbehaved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("node {node}: {reason}")]
pub struct Refusal {
    pub node: u16,
    pub reason: Reason,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub culprits: Vec<u16>,
}

impl Refusal {
    pub fn new(node: u16, reason: Reason) -> Refusal {
        Refusal { node, reason, culprits: Vec::new() }
    }
}

/// Why. The first group is a node's own decision (it looked and said no); the second is
/// the session or transport failing (who is at fault, and whether trying again may help).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(tag = "code", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Reason {
    /// The intent or the transaction cannot be read.
    #[error("undecodable {what}: {detail}")]
    Undecodable { what: String, detail: String },
    /// The decoded transaction does something the intent does not say.
    #[error("the transaction's {field} is {tx} but the intent says {intent}")]
    TxMismatch { field: String, tx: String, intent: String },
    /// The decoder refused the transaction's shape: an input or output the intent cannot
    /// account for (`refusal.problem` says which, ADR 0010).
    #[error("transaction refused: {refusal}")]
    TxRefused { refusal: strongroom_core::TxRefusal },
    /// The decoded transaction may pay more in fees than the intent's own cap.
    #[error("the transaction may pay {max_fee} in fees, above the intent's cap of {cap}")]
    FeeAboveIntentCap { max_fee: Amount, cap: Amount },
    #[error("the intent expired at {expires_at_ms} ms (node clock {now_ms} ms)")]
    Expired { expires_at_ms: i64, now_ms: i64 },
    #[error("the intent pays from wallet {wallet} but the request signs with key {key}")]
    WrongKey { wallet: String, key: String },
    /// A deposit address's child key pays someone other than its own wallet.
    #[error("a child key (deposit address) may pay only the wallet's own address {own}, not {destination}")]
    ChildKeyPaysOut { own: String, destination: String },
    /// Raw bytes or a caller's digest: the node signs only what it decoded or built itself.
    #[error("{format} requests are not signed: a node signs only transactions it decodes and messages it builds itself")]
    RawSigning { format: String },
    /// The governance log offered does not extend the node's own.
    #[error("governance log refused: {detail}")]
    GovernanceLog { detail: String },
    /// The request's signed initiation does not stand (bad signature, not an initiator, or
    /// the intent says something other than what the initiator asked).
    #[error("initiation refused: {error}")]
    Initiation { error: crate::initiation::InitiationError },
    /// The governance state in force stops it outright.
    #[error("policy v{version} rule {rule}: {block}")]
    Blocked { rule: String, version: u64, block: Block },
    /// The policy needs approvals the request does not carry.
    #[error("policy v{version} rule {rule}: {have} of {need} approvals{}", not_counted_note(.not_counted))]
    Approvals { rule: String, version: u64, have: usize, need: usize, not_counted: Vec<String> },
    /// This node already signed a different transaction for the same intent.
    #[error("intent {request_id} was already signed as transaction {signed} (its digest or id); signing another ({offered}) would pay it twice")]
    AlreadySigned { request_id: String, signed: String, offered: String },
    /// This node signed as many transactions for the intent as it ever will: the first and
    /// the replacements (fee bumps) that consume what it did.
    #[error("intent {request_id} was signed as {signed} transactions (a first and its fee bumps), the most this node signs ({max})")]
    Replacements { request_id: String, signed: usize, max: usize },
    /// The session includes a signer node that governance took out of the group (entry
    /// `seq`), or the message came from one.
    #[error("signer node(s) {nodes:?} are quarantined by governance entry {seq}: they take no part in any session")]
    Quarantined { nodes: Vec<u16>, seq: u64 },
    /// Governance retired the key (entry `seq`): its own address signs nothing again (a
    /// migrated key's deposit addresses only sweep into its successor).
    #[error("key {key} is retired by governance entry {seq}: its own address signs nothing")]
    KeyRetired { key: String, seq: u64 },
    /// The node could not hear from enough of its peers over the node mesh to know what the
    /// group signed and which governance is newest (it needs `need` peers; it reached
    /// `reached`). Every set of signers shares a node with the nodes it heard from only when
    /// it hears from at least as many peers as there are nodes outside a signing set.
    #[error("heard from peers {reached:?} over the node mesh but needs {need} to know what the group signed")]
    MeshIncomplete { reached: Vec<u16>, need: usize },
    /// A peer broke the protocol (see the refusal's culprits).
    #[error("a peer misbehaved: {detail}")]
    Culprit { detail: String },
    /// The node left the session because another party ended it (`by` 0: the
    /// orchestrator).
    #[error("session ended by {}: {detail}", if *by == 0 { "the orchestrator".to_string() } else { format!("node {by}") })]
    Aborted { by: u16, detail: String },
    #[error("no reply within {after_ms} ms")]
    Timeout { after_ms: u64 },
    #[error("unreachable: {detail}")]
    Unreachable { detail: String },
    /// The request itself is wrong (parameters, session set-up).
    #[error("bad request: {detail}")]
    BadRequest { detail: String },
    #[error("not found: {what}")]
    NotFound { what: String },
    #[error("internal error: {detail}")]
    Internal { detail: String },
}

fn not_counted_note(n: &[String]) -> String {
    if n.is_empty() {
        String::new()
    } else {
        format!(" (not counted: {})", n.join("; "))
    }
}

impl Reason {
    /// Every code, in declaration order (kept in step with `docs/errors.md` by a test).
    pub const CODES: &'static [&'static str] = &[
        "undecodable",
        "tx_mismatch",
        "tx_refused",
        "fee_above_intent_cap",
        "expired",
        "wrong_key",
        "child_key_pays_out",
        "raw_signing",
        "governance_log",
        "initiation",
        "blocked",
        "approvals",
        "already_signed",
        "replacements",
        "quarantined",
        "key_retired",
        "mesh_incomplete",
        "culprit",
        "aborted",
        "timeout",
        "unreachable",
        "bad_request",
        "not_found",
        "internal",
    ];

    /// The stable code (the `code` field of the JSON form).
    pub fn code(&self) -> &'static str {
        match self {
            Reason::Undecodable { .. } => "undecodable",
            Reason::TxMismatch { .. } => "tx_mismatch",
            Reason::TxRefused { .. } => "tx_refused",
            Reason::FeeAboveIntentCap { .. } => "fee_above_intent_cap",
            Reason::Expired { .. } => "expired",
            Reason::WrongKey { .. } => "wrong_key",
            Reason::ChildKeyPaysOut { .. } => "child_key_pays_out",
            Reason::RawSigning { .. } => "raw_signing",
            Reason::GovernanceLog { .. } => "governance_log",
            Reason::Initiation { .. } => "initiation",
            Reason::Blocked { .. } => "blocked",
            Reason::Approvals { .. } => "approvals",
            Reason::AlreadySigned { .. } => "already_signed",
            Reason::Replacements { .. } => "replacements",
            Reason::Quarantined { .. } => "quarantined",
            Reason::KeyRetired { .. } => "key_retired",
            Reason::MeshIncomplete { .. } => "mesh_incomplete",
            Reason::Culprit { .. } => "culprit",
            Reason::Aborted { .. } => "aborted",
            Reason::Timeout { .. } => "timeout",
            Reason::Unreachable { .. } => "unreachable",
            Reason::BadRequest { .. } => "bad_request",
            Reason::NotFound { .. } => "not_found",
            Reason::Internal { .. } => "internal",
        }
    }

    /// The node looked at the request and decided against it (as opposed to a session or
    /// transport failure).
    pub fn is_decision(&self) -> bool {
        !matches!(
            self,
            Reason::Culprit { .. }
                | Reason::MeshIncomplete { .. }
                | Reason::Aborted { .. }
                | Reason::Timeout { .. }
                | Reason::Unreachable { .. }
                | Reason::BadRequest { .. }
                | Reason::NotFound { .. }
                | Reason::Internal { .. }
        )
    }

    /// Trying again later may succeed without anything changing (nodes down or slow, or
    /// approvals still being collected).
    pub fn retryable(&self) -> bool {
        matches!(
            self,
            Reason::Timeout { .. } | Reason::Unreachable { .. } | Reason::MeshIncomplete { .. }
        )
    }

    /// The policy's decision as a refusal reason; `None` when it allows.
    pub fn from_decision(d: &crate::policy::Decision) -> Option<Reason> {
        use crate::policy::Outcome;
        let (rule, version) = (d.rule.clone(), d.version);
        match &d.outcome {
            Outcome::Allow => None,
            Outcome::Wait { have, need, not_counted } => Some(Reason::Approvals {
                rule,
                version,
                have: *have,
                need: *need,
                not_counted: not_counted.clone(),
            }),
            Outcome::Block(block) => Some(Reason::Blocked { rule, version, block: block.clone() }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_has_its_listed_code_and_round_trips() {
        let all = [
            Reason::Undecodable { what: "intent".into(), detail: "x".into() },
            Reason::TxMismatch { field: "amount".into(), tx: "1".into(), intent: "2".into() },
            Reason::TxRefused { refusal: strongroom_core::TxRefusal::MissingPrevious { input: 1 } },
            Reason::FeeAboveIntentCap { max_fee: Amount::ZERO, cap: Amount::ZERO },
            Reason::Expired { expires_at_ms: 1, now_ms: 2 },
            Reason::WrongKey { wallet: "a".into(), key: "b".into() },
            Reason::ChildKeyPaysOut { own: "a".into(), destination: "b".into() },
            Reason::RawSigning { format: "raw-message".into() },
            Reason::GovernanceLog { detail: "x".into() },
            Reason::Initiation {
                error: crate::initiation::InitiationError::UnknownMember { initiator: "x".into() },
            },
            Reason::Blocked { rule: "r".into(), version: 1, block: Block::NoPolicy },
            Reason::Approvals {
                rule: "r".into(),
                version: 1,
                have: 0,
                need: 2,
                not_counted: vec![],
            },
            Reason::AlreadySigned {
                request_id: "r".into(),
                signed: "a".into(),
                offered: "b".into(),
            },
            Reason::Replacements { request_id: "r".into(), signed: 5, max: 5 },
            Reason::Quarantined { nodes: vec![3], seq: 7 },
            Reason::KeyRetired { key: "hot-eth-1".into(), seq: 9 },
            Reason::MeshIncomplete { reached: vec![2], need: 2 },
            Reason::Culprit { detail: "x".into() },
            Reason::Aborted { by: 0, detail: "x".into() },
            Reason::Timeout { after_ms: 1 },
            Reason::Unreachable { detail: "x".into() },
            Reason::BadRequest { detail: "x".into() },
            Reason::NotFound { what: "x".into() },
            Reason::Internal { detail: "x".into() },
        ];
        let codes: Vec<&str> = all.iter().map(Reason::code).collect();
        assert_eq!(codes, Reason::CODES);
        for r in all {
            let json = serde_json::to_value(&r).unwrap();
            assert_eq!(json["code"], r.code(), "the JSON tag is the code");
            assert_eq!(serde_json::from_value::<Reason>(json).unwrap(), r);
        }
        assert!(Reason::Timeout { after_ms: 1 }.retryable());
        assert!(!Reason::Expired { expires_at_ms: 1, now_ms: 2 }.retryable());
        assert!(Reason::Expired { expires_at_ms: 1, now_ms: 2 }.is_decision());
    }
}
