//! Bitcoin for Strongroom's cold wallets.
//!
//! A cold wallet is a k-of-n P2WSH `sortedmulti` descriptor over BIP-48 account keys, one per
//! key holder, each made on an offline machine ([`keys::ColdSecret`]). The online side builds
//! a PSBT for an intent with bdk_wallet ([`wallet::ColdWallet`]): coin selection, fee rate,
//! change back to the wallet's own change descriptor. Every signer decodes the PSBT back
//! against the intent and the descriptor it installed itself ([`psbt::decode`]) and refuses
//! any output the intent does not name; signatures are combined, the inputs finalized by
//! miniscript, and the transaction checked by Bitcoin Core's consensus code
//! ([`psbt::finalize`]) before anything can broadcast it.
//!
//! Wallets people use can take part: the descriptor (with its BIP-380 checksum) imports into
//! Sparrow or Bitcoin Core as a watch-only wallet, and a withdrawal's PSBT leaves as a plain
//! BIP-174 file for a Sparrow or hardware-wallet cosigner, whose signatures
//! [`psbt::import`] merges back after checking each one.

use std::str::FromStr;

use bdk_wallet::miniscript::descriptor::{DescriptorPublicKey, WshInner};
use bdk_wallet::miniscript::Descriptor;
use bitcoin::{Network, ScriptBuf};
use strongroom_units::chain::{BITCOIN_MAINNET, BITCOIN_REGTEST, BITCOIN_TESTNET};
use strongroom_units::ChainId;

#[cfg(feature = "esplora")]
pub mod client;
#[cfg(feature = "esplora")]
pub mod esplora;
pub mod hot;
pub mod keys;
pub mod psbt;
#[cfg(feature = "regtest")]
pub mod regtest;
pub mod wallet;

pub use bitcoin;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BtcError {
    #[error("chain {0} is not a Bitcoin network this build knows")]
    Network(String),
    #[error("invalid key: {0}")]
    Key(String),
    #[error("invalid wallet descriptor: {0}")]
    Descriptor(String),
    #[error("invalid address {0}: {1}")]
    Address(String, String),
    #[error("invalid PSBT: {0}")]
    Psbt(String),
    #[error("refused: {0}")]
    Refused(String),
    #[error("cannot build the transaction: {0}")]
    Build(String),
    #[error("signing failed: {0}")]
    Sign(String),
    #[error("cannot finalize: {0}")]
    Finalize(String),
    #[error("Bitcoin Core's consensus check refused the transaction: {0}")]
    Consensus(String),
    #[error("Bitcoin backend: {0}")]
    Backend(String),
    /// An imported PSBT is for another transaction than the one it should add signatures to
    /// (someone changed an output, an amount, an input or a field of the unsigned
    /// transaction): nothing of it is taken.
    #[error(
        "the imported PSBT changes the transaction: it is {theirs}, the withdrawal is {ours}; \
         nothing was imported"
    )]
    UnsignedTxChanged { ours: bitcoin::Txid, theirs: bitcoin::Txid },
    /// An imported PSBT carries a signature that does not check out: not by a key of the
    /// input's script, not SIGHASH_ALL, or not valid over this transaction.
    #[error("input {input}: the imported signature by key {key} is refused: {why}")]
    BadSignature { input: usize, key: String, why: String },
}

/// The Bitcoin network of a CAIP-2 chain id.
pub fn network(chain: &ChainId) -> Result<Network, BtcError> {
    match chain.as_str() {
        BITCOIN_MAINNET => Ok(Network::Bitcoin),
        BITCOIN_TESTNET => Ok(Network::Testnet),
        BITCOIN_REGTEST => Ok(Network::Regtest),
        other => Err(BtcError::Network(other.to_owned())),
    }
}

/// A parsed address for `network`.
pub fn address(text: &str, network: Network) -> Result<bitcoin::Address, BtcError> {
    let bad = |e: String| BtcError::Address(text.to_owned(), e);
    bitcoin::Address::from_str(text)
        .map_err(|e| bad(e.to_string()))?
        .require_network(network)
        .map_err(|e| bad(e.to_string()))
}

/// Which of the wallet's two chains: receive (`/0/*`) or change (`/1/*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keychain {
    Receive,
    Change,
}

/// A k-of-n P2WSH `sortedmulti` wallet over account keys with their origins, written as one
/// BIP-389 multipath descriptor: `wsh(sortedmulti(k,[fp/48h/1h/0h/2h]tpub…/<0;1>/*,…))`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Multisig {
    threshold: usize,
    keys: Vec<String>,
    network: Network,
    receive: Descriptor<DescriptorPublicKey>,
    change: Descriptor<DescriptorPublicKey>,
}

impl Multisig {
    /// `threshold` of `keys`, each an account key with its origin as the ceremony exported it
    /// (`[fingerprint/48h/1h/0h/2h]tpub…`).
    pub fn new(threshold: usize, keys: &[String], network: Network) -> Result<Self, BtcError> {
        if threshold == 0 || threshold > keys.len() || keys.len() > 20 {
            return Err(BtcError::Descriptor(format!(
                "a {threshold}-of-{} multisig is not possible (1 ≤ k ≤ n ≤ 20)",
                keys.len()
            )));
        }
        let mut seen = std::collections::BTreeSet::new();
        for k in keys {
            let key =
                DescriptorPublicKey::from_str(k).map_err(|e| BtcError::Key(format!("{k}: {e}")))?;
            let DescriptorPublicKey::XPub(x) = &key else {
                return Err(BtcError::Key(format!("{k}: not an extended public key")));
            };
            if x.origin.is_none() {
                return Err(BtcError::Key(format!(
                    "{k}: the key's origin ([fingerprint/path]) is missing, so signers could not find their key"
                )));
            }
            if !x.derivation_path.is_empty()
                || x.wildcard != bdk_wallet::miniscript::descriptor::Wildcard::None
            {
                return Err(BtcError::Key(format!(
                    "{k}: give the account key without /0/* or /1/*"
                )));
            }
            let want = if network == Network::Bitcoin {
                bitcoin::NetworkKind::Main
            } else {
                bitcoin::NetworkKind::Test
            };
            if x.xkey.network != want {
                return Err(BtcError::Key(format!("{k}: this key is for another network")));
            }
            if !seen.insert(x.xkey.public_key) {
                return Err(BtcError::Key(format!("{k}: the same key is given twice")));
            }
        }
        let text = |chain: u8| {
            let keys: Vec<String> = keys.iter().map(|k| format!("{k}/{chain}/*")).collect();
            format!("wsh(sortedmulti({threshold},{}))", keys.join(","))
        };
        let parse = |s: String| {
            let d = Descriptor::<DescriptorPublicKey>::from_str(&s)
                .map_err(|e| BtcError::Descriptor(e.to_string()))?;
            d.sanity_check().map_err(|e| BtcError::Descriptor(e.to_string()))?;
            Ok::<_, BtcError>(d)
        };
        Ok(Multisig {
            threshold,
            keys: keys.to_vec(),
            network,
            receive: parse(text(0))?,
            change: parse(text(1))?,
        })
    }

    /// Parse the multipath descriptor [`Multisig::descriptor`] writes (its checksum, if
    /// present, must match).
    pub fn from_descriptor(text: &str, network: Network) -> Result<Self, BtcError> {
        let d = Descriptor::<DescriptorPublicKey>::from_str(text.trim())
            .map_err(|e| BtcError::Descriptor(e.to_string()))?;
        let Descriptor::Wsh(wsh) = &d else {
            return Err(BtcError::Descriptor("a cold wallet is wsh(sortedmulti(…))".into()));
        };
        let WshInner::SortedMulti(multi) = wsh.as_inner() else {
            return Err(BtcError::Descriptor("a cold wallet is wsh(sortedmulti(…))".into()));
        };
        let mut keys = Vec::new();
        for k in multi.pks() {
            let DescriptorPublicKey::MultiXPub(x) = k else {
                return Err(BtcError::Descriptor(format!("{k}: keys end in /<0;1>/*")));
            };
            let paths: Vec<String> =
                x.derivation_paths.paths().iter().map(|p| p.to_string()).collect();
            if paths != ["0", "1"] && paths != ["m/0", "m/1"] {
                return Err(BtcError::Descriptor(format!("{k}: keys end in /<0;1>/*")));
            }
            let origin = x
                .origin
                .as_ref()
                .ok_or_else(|| BtcError::Key(format!("{k}: the key's origin is missing")))?;
            let path = origin.1.to_string();
            let path = path.strip_prefix("m/").unwrap_or(&path).replace('\'', "h");
            keys.push(format!("[{}/{path}]{}", origin.0, x.xkey));
        }
        Multisig::new(multi.k(), &keys, network)
    }

    /// The wallet as one multipath descriptor, with its checksum.
    pub fn descriptor(&self) -> String {
        let keys: Vec<String> = self.keys.iter().map(|k| format!("{k}/<0;1>/*")).collect();
        let text = format!("wsh(sortedmulti({},{}))", self.threshold, keys.join(","));
        Descriptor::<DescriptorPublicKey>::from_str(&text).map_or(text, |d| d.to_string())
    }

    /// The single-path descriptor of one keychain (what bdk_wallet takes).
    pub fn keychain_descriptor(&self, keychain: Keychain) -> String {
        match keychain {
            Keychain::Receive => self.receive.to_string(),
            Keychain::Change => self.change.to_string(),
        }
    }

    pub fn threshold(&self) -> usize {
        self.threshold
    }
    pub fn keys(&self) -> &[String] {
        &self.keys
    }
    pub fn network(&self) -> Network {
        self.network
    }

    /// The output script and the witness script at `index` of `keychain`.
    pub fn scripts(
        &self,
        keychain: Keychain,
        index: u32,
    ) -> Result<(ScriptBuf, ScriptBuf), BtcError> {
        let d = match keychain {
            Keychain::Receive => &self.receive,
            Keychain::Change => &self.change,
        };
        let at = d
            .at_derivation_index(index)
            .map_err(|e| BtcError::Descriptor(format!("index {index}: {e}")))?;
        let witness = at.explicit_script().map_err(|e| BtcError::Descriptor(e.to_string()))?;
        Ok((at.script_pubkey(), witness))
    }

    /// The address at `index` of `keychain`.
    pub fn address(&self, keychain: Keychain, index: u32) -> Result<bitcoin::Address, BtcError> {
        let (spk, _) = self.scripts(keychain, index)?;
        bitcoin::Address::from_script(&spk, self.network)
            .map_err(|e| BtcError::Descriptor(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn networks_follow_caip2() {
        for (chain, net) in [
            (BITCOIN_MAINNET, Network::Bitcoin),
            (BITCOIN_TESTNET, Network::Testnet),
            (BITCOIN_REGTEST, Network::Regtest),
        ] {
            let id = ChainId::parse(chain).map_err(|e| e.to_string());
            assert_eq!(id.map(|c| network(&c).ok()), Ok(Some(net)));
        }
        let eth = ChainId::parse("eip155:1").map_err(|e| e.to_string());
        assert!(eth.map(|c| network(&c).is_err()) == Ok(true));
    }
}
