//! Key rotation by sweep (ADR 0017): governance migrates a chain's hot key to a new one
//! (`migrate_key`, signed by the quorum), and from then on the new key pays out and gives
//! customers their new deposit addresses, while everything the old key holds — its own
//! address and every deposit address derived from it, including deposits that arrive there
//! later — is swept into the new key's address. The signer nodes enforce the other half:
//! a migrating key pays only its successor.

use std::collections::BTreeMap;
use strongroom_core::{Timestamp, WalletId};

use strongroom_governance::log::{replay, KeyMigration};
use strongroom_store::Store;

use crate::EngineError;

/// A chain's hot wallets as governance has them: the one in use, and the ones migrated
/// into it (oldest first), still watched and swept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HotWallets {
    pub current: WalletId,
    pub former: Vec<WalletId>,
}

impl HotWallets {
    /// Every wallet: the current one first.
    pub fn all(&self) -> Vec<WalletId> {
        let mut all = vec![self.current.clone()];
        all.extend(self.former.iter().cloned());
        all
    }
}

/// Follow `migrations` (governance's, by the key they leave) through `configured` (a
/// chain's configured hot wallet, before or after its migration): forwards to the key in
/// use, and back to every key that was migrated into it.
pub fn follow(
    migrations: &BTreeMap<String, KeyMigration>,
    configured: &WalletId,
) -> Result<HotWallets, EngineError> {
    let bad = |why: String| EngineError::Governance(why);
    let mut current = configured.clone();
    let mut former = Vec::new();
    // Forwards: each migration names its successor once (governance refuses a second one).
    while let Some(m) = migrations.get(current.as_str()) {
        if former.contains(&current) || former.len() > migrations.len() {
            return Err(bad(format!(
                "the key migrations through {} form a loop",
                configured.as_str()
            )));
        }
        former.push(current.clone());
        current =
            WalletId::parse(&m.to).map_err(|e| bad(format!("migration target {:?}: {e}", m.to)))?;
    }
    // Backwards: keys migrated into one already on the list.
    loop {
        let before = former.len();
        for (from, m) in migrations {
            let into_ours = m.to == current.as_str() || former.iter().any(|w| w.as_str() == m.to);
            if into_ours && !former.iter().any(|w| w.as_str() == from) {
                former.push(
                    WalletId::parse(from)
                        .map_err(|e| bad(format!("migrated key {from:?}: {e}")))?,
                );
            }
        }
        if former.len() == before {
            break;
        }
    }
    former.sort_by_key(|w| migrations.get(w.as_str()).map_or(u64::MAX, |m| m.seq));
    Ok(HotWallets { current, former })
}

/// `configured`'s wallets by the stored governance log (only `configured` when no genesis
/// is installed). A log that does not verify is an error: which key holds the money must
/// not be guessed.
pub async fn hot_wallets(
    store: &dyn Store,
    configured: &WalletId,
    now: Timestamp,
) -> Result<HotWallets, EngineError> {
    let rec = store.governance().await?;
    let Some((pin, genesis)) = &rec.genesis else {
        return Ok(HotWallets { current: configured.clone(), former: Vec::new() });
    };
    let state = replay(genesis, pin, &rec.entries, now).map_err(|e| {
        EngineError::Governance(format!("the stored governance log does not verify: {e}"))
    })?;
    follow(&state.migrations, configured)
}

/// The keys governance retired (none without a genesis, or while the log does not verify:
/// the nodes refuse then anyway).
pub async fn retired(
    store: &dyn Store,
    now: Timestamp,
) -> Result<std::collections::BTreeSet<String>, EngineError> {
    let rec = store.governance().await?;
    let Some((pin, genesis)) = &rec.genesis else { return Ok(Default::default()) };
    Ok(replay(genesis, pin, &rec.entries, now)
        .map(|s| s.retired.into_keys().collect())
        .unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(migrations: &[(&str, &str, u64)]) -> BTreeMap<String, KeyMigration> {
        let mut s = BTreeMap::new();
        for (from, to, seq) in migrations {
            s.insert(
                (*from).to_owned(),
                KeyMigration { to: (*to).to_owned(), to_public_key: "02".into(), seq: *seq },
            );
        }
        s
    }

    fn w(s: &str) -> WalletId {
        WalletId::parse(s).unwrap()
    }

    #[test]
    fn the_configured_key_leads_to_the_key_in_use_and_back_to_every_former_one() {
        let none = state(&[]);
        assert_eq!(
            follow(&none, &w("hot-eth-1")).unwrap(),
            HotWallets { current: w("hot-eth-1"), former: vec![] }
        );
        let two = state(&[("hot-eth-1", "hot-eth-2", 4), ("hot-eth-2", "hot-eth-3", 9)]);
        let expected =
            HotWallets { current: w("hot-eth-3"), former: vec![w("hot-eth-1"), w("hot-eth-2")] };
        // Whichever of them the configuration still names.
        for configured in ["hot-eth-1", "hot-eth-2", "hot-eth-3"] {
            assert_eq!(follow(&two, &w(configured)).unwrap(), expected, "{configured}");
        }
        // Another chain's migration is not ours.
        let other = state(&[("hot-eth-1", "hot-eth-2", 4), ("hot-btc-1", "hot-btc-2", 5)]);
        assert_eq!(
            follow(&other, &w("hot-eth-2")).unwrap(),
            HotWallets { current: w("hot-eth-2"), former: vec![w("hot-eth-1")] }
        );
    }
}
