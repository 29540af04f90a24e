//! Who asked for a movement, proven. The initiator (a staff member, or the exchange's backend
//! through its API client key, each a member the governance log names) signs what they ask
//! for: the request id, chain, asset, destination, amount and, for a customer's withdrawal,
//! whose it is. The online side builds the intent around it (fee cap, expiry, source wallet);
//! a signer checks that the intent says what the initiator asked, and takes the initiator's
//! roles from the log, never from the request.
//!
//! The signed message is `tagged_hash("strongroom/initiation/v1", JSON)` where JSON is the
//! [`Requested`] fields in declaration order with no whitespace (`serde_json`), amounts as
//! base-unit strings: what an exchange's backend reproduces in any language.

use serde::{Deserialize, Serialize};
use strongroom_core::Intent;
use strongroom_units::Amount;

use crate::log::State;
use crate::member::Member;
use crate::tagged_hash;

pub const INITIATION_TAG: &str = "strongroom/initiation/v1";

/// What the initiator asks for, in their own words.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Requested {
    /// Becomes the intent's request id: one signed request is one intent, and a signer signs
    /// one transaction per intent.
    pub request_id: uuid::Uuid,
    /// CAIP-2, e.g. `eip155:1`.
    pub chain: String,
    pub asset: String,
    /// The token contract; none for the chain's native coin.
    #[serde(default)]
    pub contract: Option<String>,
    pub destination: String,
    /// Base units.
    pub amount: Amount,
    /// The customer whose withdrawal it is (their whitelist applies); none for the
    /// exchange's own movements.
    #[serde(default)]
    pub customer_id: Option<String>,
}

/// A signed request: by `initiator` (a member id), with their Ed25519 governance key or their
/// registered passkey.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Initiation {
    pub initiator: String,
    pub requested: Requested,
    /// Hex of the 64-byte Ed25519 signature over [`Initiation::message`] (empty with a
    /// passkey).
    #[serde(default)]
    pub signature: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webauthn: Option<crate::webauthn::Assertion>,
}

/// Why an initiation does not stand.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(tag = "problem", rename_all = "snake_case")]
#[non_exhaustive]
pub enum InitiationError {
    #[error("{initiator} is not a member")]
    UnknownMember { initiator: String },
    #[error("{initiator} may not initiate movements (an operator's role is needed)")]
    NotAnInitiator { initiator: String },
    #[error("{initiator}'s signature does not verify")]
    BadSignature { initiator: String },
    #[error("{initiator}'s passkey assertion is refused: {detail}")]
    BadPasskey { initiator: String, detail: String },
    #[error("the intent's {field} is {intent} but {initiator} asked for {requested}")]
    Mismatch { initiator: String, field: String, requested: String, intent: String },
    #[error("the request cannot be encoded: {detail}")]
    Encoding { detail: String },
}

impl Requested {
    /// The message an initiator signs.
    pub fn message(&self) -> Result<[u8; 32], InitiationError> {
        let json = serde_json::to_vec(self)
            .map_err(|e| InitiationError::Encoding { detail: e.to_string() })?;
        Ok(tagged_hash(INITIATION_TAG, &json))
    }

    /// What `intent` asks for, as a request (the customer as given).
    pub fn of(intent: &Intent, customer_id: Option<String>) -> Requested {
        Requested {
            request_id: intent.request_id,
            chain: intent.chain.as_str().to_owned(),
            asset: intent.asset.symbol.as_str().to_owned(),
            contract: intent.asset.contract.as_ref().map(|c| c.as_str().to_owned()),
            destination: intent.destination.as_str().to_owned(),
            amount: intent.amount,
            customer_id,
        }
    }
}

impl Initiation {
    /// Sign `requested` with a member's governance key (the initiator's own machine, or the
    /// exchange's backend, does this).
    pub fn sign(
        initiator: &str,
        key: &ed25519_dalek::SigningKey,
        requested: Requested,
    ) -> Result<Initiation, InitiationError> {
        use ed25519_dalek::Signer;
        let sig = key.sign(&requested.message()?);
        Ok(Initiation {
            initiator: initiator.to_owned(),
            requested,
            signature: hex::encode(sig.to_bytes()),
            webauthn: None,
        })
    }

    /// Check the signature against the initiator's key (or passkey) in `state`, that they may
    /// initiate (the operator's role), and that `intent` says what they asked. Returns the
    /// member, whose roles are the log's.
    pub fn verify<'s>(
        &self,
        state: &'s State,
        intent: &Intent,
    ) -> Result<&'s Member, InitiationError> {
        let who = || self.initiator.clone();
        let member = state
            .members
            .get(&self.initiator)
            .ok_or_else(|| InitiationError::UnknownMember { initiator: who() })?;
        if !member.has(crate::Role::Operator) {
            return Err(InitiationError::NotAnInitiator { initiator: who() });
        }
        let message = self.requested.message()?;
        if let Some(assertion) = &self.webauthn {
            let passkey = member.passkey.as_ref().ok_or_else(|| InitiationError::BadPasskey {
                initiator: who(),
                detail: "no passkey is registered".into(),
            })?;
            crate::webauthn::verify(passkey, &message, assertion)
                .map_err(|detail| InitiationError::BadPasskey { initiator: who(), detail })?;
        } else {
            let bytes = hex::decode(&self.signature)
                .map_err(|_| InitiationError::BadSignature { initiator: who() })?;
            if !crate::signature::ed25519_verify(&member.key, &message, &bytes) {
                return Err(InitiationError::BadSignature { initiator: who() });
            }
        }
        self.matches(intent)?;
        Ok(member)
    }

    /// A customer's own signed request: made with one of `keys` (the customer's passkeys a
    /// signer holds as usable), naming the customer it is signed as, and asking for exactly
    /// `intent`. Returns the key that signed.
    pub fn verify_customer<'k>(
        &self,
        customer_id: &str,
        keys: &'k [crate::webauthn::PasskeySpec],
        intent: &Intent,
    ) -> Result<&'k crate::webauthn::PasskeySpec, InitiationError> {
        let who = || self.initiator.clone();
        if self.initiator != customer_id
            || self.requested.customer_id.as_deref() != Some(customer_id)
        {
            return Err(InitiationError::Mismatch {
                initiator: who(),
                field: "customer_id".into(),
                requested: self.requested.customer_id.clone().unwrap_or_else(|| "none".into()),
                intent: customer_id.to_owned(),
            });
        }
        let assertion = self.webauthn.as_ref().ok_or_else(|| InitiationError::BadPasskey {
            initiator: who(),
            detail: "a customer signs with a passkey".into(),
        })?;
        let message = self.requested.message()?;
        let mut last = "none of the customer's keys is usable yet".to_owned();
        let mut signed_with = None;
        for spec in keys {
            let key = match crate::webauthn::Passkey::parse(spec) {
                Ok(k) => k,
                Err(e) => {
                    last = e;
                    continue;
                }
            };
            match crate::webauthn::verify(&key, &message, assertion) {
                Ok(()) => {
                    signed_with = Some(spec);
                    break;
                }
                Err(e) => last = e,
            }
        }
        let spec = signed_with
            .ok_or_else(|| InitiationError::BadPasskey { initiator: who(), detail: last })?;
        self.matches(intent)?;
        Ok(spec)
    }

    /// That `intent` says, field by field, what was asked.
    fn matches(&self, intent: &Intent) -> Result<(), InitiationError> {
        let who = || self.initiator.clone();
        let asked = &self.requested;
        let actual = Requested::of(intent, asked.customer_id.clone());
        let differs = |field: &str, requested: String, intent: String| {
            Err(InitiationError::Mismatch {
                initiator: who(),
                field: field.to_owned(),
                requested,
                intent,
            })
        };
        if asked.request_id != actual.request_id {
            return differs(
                "request_id",
                asked.request_id.to_string(),
                actual.request_id.to_string(),
            );
        }
        if asked.chain != actual.chain {
            return differs("chain", asked.chain.clone(), actual.chain);
        }
        if asked.asset != actual.asset {
            return differs("asset", asked.asset.clone(), actual.asset);
        }
        let same_contract = match (&asked.contract, &actual.contract) {
            (None, None) => true,
            (Some(a), Some(b)) => a.eq_ignore_ascii_case(b),
            _ => false,
        };
        if !same_contract {
            let show = |c: &Option<String>| c.clone().unwrap_or_else(|| "none".into());
            return differs("contract", show(&asked.contract), show(&actual.contract));
        }
        if !asked.destination.eq_ignore_ascii_case(&actual.destination) {
            return differs("destination", asked.destination.clone(), actual.destination);
        }
        if asked.amount != actual.amount {
            return differs(
                "amount",
                asked.amount.base_units().to_string(),
                actual.amount.base_units().to_string(),
            );
        }
        Ok(())
    }
}

/// A customer's passkey, as the online side registers it with the signers for signing the
/// customer's own withdrawal requests. A signer uses it only once it has known it for the
/// governance time-lock (`whitelist_delay_ms`, 24 h by default) on its own clock; from then
/// on it requires the customer's signature on every withdrawal of theirs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CustomerKey {
    pub customer_id: String,
    pub passkey: crate::webauthn::PasskeySpec,
}

#[cfg(test)]
mod tests {
    use ed25519_dalek::SigningKey;
    use strongroom_core::{IntentAsset, Timestamp, WalletId};
    use strongroom_units::{Address, AssetSymbol, ChainId};

    use super::*;
    use crate::log::{replay, Genesis, MemberSpec};
    use crate::Role;

    fn key(n: u8) -> SigningKey {
        SigningKey::from_bytes(&[n; 32])
    }

    fn state() -> State {
        let m = |id: &str, n: u8, roles: Vec<Role>| MemberSpec {
            id: id.into(),
            public_key: hex::encode(key(n).verifying_key().to_bytes()),
            roles,
            passkey: None,
        };
        let g = Genesis {
            members: vec![
                m("ada", 1, vec![Role::Admin]),
                m("bob", 2, vec![Role::Admin]),
                m("exchange", 3, vec![Role::Operator]),
                m("ann", 4, vec![Role::Approver]),
            ],
            quorum: 2,
            whitelist_delay_ms: 0,
            created_at: Timestamp::from_unix_ms(0),
            assets: vec![],
        };
        replay(&g, &hex::encode(g.hash().unwrap()), &[], Timestamp::from_unix_ms(1)).unwrap()
    }

    fn intent() -> Intent {
        let chain = ChainId::parse("eip155:1").unwrap();
        Intent {
            destination: Address::parse(&chain, "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed")
                .unwrap(),
            asset: IntentAsset {
                symbol: AssetSymbol::parse("ETH").unwrap(),
                decimals: 18,
                contract: None,
            },
            chain,
            source_wallet: WalletId::parse("hot-eth-1").unwrap(),
            amount: Amount::from_base_units(5).unwrap(),
            fee_cap: Amount::from_base_units(1).unwrap(),
            expires_at: Timestamp::from_unix_ms(10),
            request_id: uuid::Uuid::from_u128(7),
        }
    }

    #[test]
    fn a_signed_request_binds_the_intent_and_the_initiator() {
        let (s, i) = (state(), intent());
        let asked = Requested::of(&i, Some("c-1".into()));
        let ok = Initiation::sign("exchange", &key(3), asked.clone()).unwrap();
        assert_eq!(ok.verify(&s, &i).unwrap().id, "exchange");
        // The intent edited after the request was signed: named field by field.
        let mut edited = i.clone();
        edited.amount = Amount::from_base_units(6).unwrap();
        let e = ok.verify(&s, &edited).unwrap_err();
        assert!(matches!(&e, InitiationError::Mismatch { field, .. } if field == "amount"), "{e}");
        let mut other = i.clone();
        other.request_id = uuid::Uuid::from_u128(8);
        let e = ok.verify(&s, &other).unwrap_err();
        assert!(matches!(&e, InitiationError::Mismatch { field, .. } if field == "request_id"));
        // The signed fields themselves edited: the signature no longer verifies.
        let mut forged = ok.clone();
        forged.requested.customer_id = Some("c-2".into());
        let e = forged.verify(&s, &i).unwrap_err();
        assert!(matches!(e, InitiationError::BadSignature { .. }), "{e}");
        // Signed with another key, by a stranger, by someone who may not initiate.
        let e = Initiation::sign("exchange", &key(9), asked.clone()).unwrap().verify(&s, &i);
        assert!(matches!(e, Err(InitiationError::BadSignature { .. })));
        let e = Initiation::sign("eve", &key(9), asked.clone()).unwrap().verify(&s, &i);
        assert!(matches!(e, Err(InitiationError::UnknownMember { .. })));
        let e = Initiation::sign("ann", &key(4), asked).unwrap().verify(&s, &i);
        assert!(matches!(e, Err(InitiationError::NotAnInitiator { .. })));
    }

    #[test]
    fn the_message_is_the_documented_json_under_its_tag() {
        let asked = Requested::of(&intent(), None);
        let json = r#"{"request_id":"00000000-0000-0000-0000-000000000007","chain":"eip155:1","asset":"ETH","contract":null,"destination":"0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed","amount":"5","customer_id":null}"#;
        assert_eq!(serde_json::to_string(&asked).unwrap(), json);
        assert_eq!(asked.message().unwrap(), tagged_hash(INITIATION_TAG, json.as_bytes()));
    }
}
