//! Key rotation by sweep (ADR 0017): governance migrates a chain's hot key to a new one
//! (`migrate_key`, signed by the quorum), and from then on the new key pays out and gives
//! customers their new deposit addresses, while everything the old key holds — its own
//! address and every deposit address derived from it, including deposits that arrive there
//! later — is swept into the new key's address. The signer nodes enforce the other half:
//! a migrating key pays only its successor.

use std::collections::BTreeMap;
use strongroom_core::{Timestamp, WalletId};

use strongroom_governance::log::{follow_migrations, replay, KeyMigration};
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

/// `strongroom_governance::log::follow_migrations` as wallet ids.
pub fn follow(
    migrations: &BTreeMap<String, KeyMigration>,
    configured: &WalletId,
) -> Result<HotWallets, EngineError> {
    let bad = |why: String| EngineError::Governance(why);
    let (current, former) = follow_migrations(migrations, configured.as_str()).map_err(bad)?;
    let parse = |w: &str| WalletId::parse(w).map_err(|e| bad(format!("migrated key {w:?}: {e}")));
    Ok(HotWallets {
        current: parse(&current)?,
        former: former.iter().map(|w| parse(w)).collect::<Result<_, _>>()?,
    })
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
