//! What the runtime's tests share: members' keys and a genesis of them, a write context.
#![allow(dead_code)] // Each test binary uses what it needs.

use ed25519_dalek::SigningKey;
use strongroom_core::{Env, Timestamp};
use strongroom_governance::log::{AssetSpec, Genesis, MemberSpec};
use strongroom_governance::Role;
use strongroom_store::WriteCtx;

/// Member key number `n` (a fixed test key).
pub fn key(n: u8) -> SigningKey {
    SigningKey::from_bytes(&[n; 32])
}

/// A genesis of `members` (id, key number, role) with quorum 2 and a day's whitelist delay,
/// made a minute before `now`.
pub fn genesis_of(now: i64, members: &[(&str, u8, Role)], assets: Vec<AssetSpec>) -> Genesis {
    Genesis {
        members: members
            .iter()
            .map(|(id, n, r)| MemberSpec {
                id: (*id).into(),
                public_key: hex::encode(key(*n).verifying_key().to_bytes()),
                roles: vec![*r],
                passkey: None,
            })
            .collect(),
        quorum: 2,
        whitelist_delay_ms: 86_400_000,
        created_at: Timestamp::from_unix_ms(now - 60_000),
        assets,
    }
}

pub fn ctx(env: &dyn Env) -> WriteCtx {
    WriteCtx { actor: "test".into(), now: env.now(), request_id: None }
}
