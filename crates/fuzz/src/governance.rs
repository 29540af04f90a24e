//! Governance as it arrives from outside: log entries (members' pushes, peers, signing
//! requests and bundles), a genesis (`POST /v1/governance/genesis`, `strongroom-cold init`),
//! a passkey assertion (approvals and signoffs made in a browser) and a policy file.
//!
//! The first byte picks what the rest is:
//! - `0`: a JSON array of entries, replayed as given over the fixtures' genesis;
//! - `1`: `{"genesis": …?, "entries": […]}`, where the harness first re-links the entries
//!   (sequence numbers, `prev`) and re-signs every signoff by a member whose key it holds,
//!   so the fuzzer reaches the rules behind the signature checks; without a genesis, the
//!   fixtures' one;
//! - `2`: a genesis's JSON, installed with its own hash as the pin;
//! - `3`: a passkey assertion's JSON, checked against the fixtures' passkey and challenge;
//! - `4`: a policy's TOML.

use ed25519_dalek::Signer;
use serde::Deserialize;
use strongroom_core::Timestamp;
use strongroom_governance::log::{
    extend, replay, replay_seen, Entry, Genesis, GovError, State, MIN_QUORUM,
};
use strongroom_governance::policy::Policy;
use strongroom_governance::webauthn::{verify, Assertion};
use strongroom_governance::Role;

use crate::fixtures::{assert_passkey, fixtures, member_key, PASSKEY_CHALLENGE};
use crate::{ensure, json_round_trip, Verdict};

/// See the module documentation for the input's layout.
pub fn governance(data: &[u8]) -> Verdict {
    let Some((&mode, body)) = data.split_first() else {
        return Verdict::Malformed;
    };
    match mode % 5 {
        0 => as_given(body),
        1 => resigned(body),
        2 => genesis(body),
        3 => assertion(body),
        _ => policy(body),
    }
}

fn as_given(body: &[u8]) -> Verdict {
    let Ok(entries) = serde_json::from_slice::<Vec<Entry>>(body) else {
        return Verdict::Malformed;
    };
    let fx = fixtures();
    log(&fx.genesis, &fx.pin, &entries)
}

#[derive(Debug, Deserialize)]
struct Scenario {
    #[serde(default)]
    genesis: Option<Genesis>,
    entries: Vec<Entry>,
}

fn resigned(body: &[u8]) -> Verdict {
    let Ok(s) = serde_json::from_slice::<Scenario>(body) else {
        return Verdict::Malformed;
    };
    let genesis = s.genesis.unwrap_or_else(|| fixtures().genesis.clone());
    let Ok(hash) = genesis.hash() else {
        return Verdict::Refused;
    };
    let pin = hex::encode(hash);
    let mut entries = s.entries;
    let mut head = pin.clone();
    for (seq, e) in (1u64..).zip(entries.iter_mut()) {
        e.seq = seq;
        e.prev = head;
        let Ok(hash) = e.hash() else {
            return Verdict::Refused;
        };
        for s in &mut e.signoffs {
            if s.passkey.is_some() {
                s.passkey = assert_passkey(&hash).ok();
            } else if let Some(key) = member_key(&s.member) {
                s.signature = hex::encode(key.sign(&hash).to_bytes());
            }
        }
        head = hex::encode(hash);
    }
    log(&genesis, &pin, &entries)
}

/// Replay `entries` over `genesis` at the fixtures' clock.
///
/// Properties: entries survive JSON; a log that replays ends at its last entry with a quorum
/// the admins can meet; every prefix of it replays too, and a signer holding a prefix extends
/// it to exactly the rest; counting time-locks from first sight (later) refuses nothing the
/// plain replay accepts and never makes an entry usable sooner.
fn log(genesis: &Genesis, pin: &str, entries: &[Entry]) -> Verdict {
    json_round_trip("governance entries", &entries.to_vec());
    let now = fixtures().now;
    let state = match replay(genesis, pin, entries, now) {
        Ok(s) => s,
        Err(e) => {
            let _ = e.to_string();
            return Verdict::Refused;
        }
    };
    check_state(&state);
    let n = entries.len();
    ensure(usize::try_from(state.seq).ok() == Some(n), || {
        "the state is not at the last entry".into()
    });
    if let Some(last) = entries.last() {
        let head = last.hash().map(hex::encode).ok();
        ensure(head.as_deref() == Some(state.head.as_str()), || {
            "the head is not the last entry's".into()
        });
    }
    if let Some(shorter) = entries.get(..n.saturating_sub(1)) {
        ensure(replay(genesis, pin, shorter, now).is_ok(), || {
            "a prefix of a valid log is refused".into()
        });
    }
    let half = n / 2;
    if let Some(have) = entries.get(..half) {
        match extend(genesis, pin, have, entries, now, &|_| None) {
            Ok(Some((new, _))) => ensure(entries.get(half..) == Some(new.as_slice()), || {
                "extend returned other entries than the rest of the log".into()
            }),
            Ok(None) => ensure(half == n, || "extend found nothing new in a longer log".into()),
            Err(e) => crate::broken(format_args!("extending a prefix of a valid log failed: {e}")),
        }
    }
    match extend(genesis, pin, entries, entries, now, &|_| None) {
        Ok(None) => {}
        other => {
            crate::broken(format_args!("the same log offered again changed something: {other:?}"))
        }
    }
    match replay_seen(genesis, pin, entries, now, &|_| Some(now)) {
        Ok(seen) => {
            for w in &seen.whitelist {
                let plain = state.whitelist.iter().find(|p| p.seq == w.seq);
                ensure(plain.is_some_and(|p| p.usable_from <= w.usable_from), || {
                    format!("whitelist entry {} is usable sooner when first seen later", w.seq)
                });
            }
        }
        Err(e) => crate::broken(format_args!("a log refused only because it was seen later: {e}")),
    }
    Verdict::Accepted
}

/// What any replayed state must hold.
fn check_state(state: &State) {
    let admins = state.members.values().filter(|m| m.has(Role::Admin)).count();
    ensure(state.quorum >= MIN_QUORUM && usize::from(state.quorum) <= admins, || {
        format!("a quorum of {} with {admins} admins", state.quorum)
    });
    let _ = state.frozen("ETH", "hot-eth-1", Timestamp::from_unix_ms(i64::MAX));
}

fn genesis(body: &[u8]) -> Verdict {
    let Ok(g) = serde_json::from_slice::<Genesis>(body) else {
        return Verdict::Malformed;
    };
    json_round_trip("a genesis", &g);
    let Ok(hash) = g.hash() else {
        return Verdict::Refused;
    };
    let pin = hex::encode(hash);
    let now = fixtures().now;
    ensure(
        matches!(replay(&g, &hex::encode([0u8; 32]), &[], now), Err(GovError::WrongGenesis)),
        || "a genesis replays under another pin".into(),
    );
    match replay(&g, &pin, &[], now) {
        Ok(state) => {
            check_state(&state);
            Verdict::Accepted
        }
        Err(_) => Verdict::Refused,
    }
}

fn assertion(body: &[u8]) -> Verdict {
    let Ok(a) = serde_json::from_slice::<Assertion>(body) else {
        return Verdict::Malformed;
    };
    match verify(&fixtures().passkey, &PASSKEY_CHALLENGE, &a) {
        Ok(()) => Verdict::Accepted,
        Err(_) => Verdict::Refused,
    }
}

fn policy(body: &[u8]) -> Verdict {
    let Ok(text) = std::str::from_utf8(body) else {
        return Verdict::Malformed;
    };
    match Policy::from_toml(text) {
        Ok(p) => {
            // The log carries a policy as JSON: it must come back the same, still valid.
            json_round_trip("a policy", &p);
            ensure(p.validate().is_ok(), || "a policy from TOML does not validate".into());
            Verdict::Accepted
        }
        Err(_) => Verdict::Refused,
    }
}
