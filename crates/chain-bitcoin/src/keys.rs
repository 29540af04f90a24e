//! A cold key holder's key: a 32-byte BIP-32 seed, made on the offline machine and never
//! shown. What leaves the machine is the BIP-48 account key (`m/48'/coin'/0'/2'`, the
//! P2WSH multisig path) with its origin, as a descriptor key expression.

use std::str::FromStr;

use bitcoin::bip32::{DerivationPath, Xpriv, Xpub};
use bitcoin::secp256k1::Secp256k1;
use bitcoin::{Network, NetworkKind};
use strongroom_core::Env;
use zeroize::Zeroizing;

use crate::BtcError;

/// The seed behind one cold key. Zeroized on drop; `Debug` shows only the fingerprint.
pub struct ColdSecret {
    seed: Zeroizing<[u8; 32]>,
}

impl std::fmt::Debug for ColdSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ColdSecret(<redacted>)")
    }
}

fn kind(network: Network) -> NetworkKind {
    if network == Network::Bitcoin {
        NetworkKind::Main
    } else {
        NetworkKind::Test
    }
}

/// BIP-48's path for P2WSH multisig accounts: `m/48'/coin'/0'/2'` (coin 0 on mainnet, 1
/// on the test networks).
pub fn account_path(network: Network) -> DerivationPath {
    let coin = if network == Network::Bitcoin { 0 } else { 1 };
    DerivationPath::from_str(&format!("m/48'/{coin}'/0'/2'")).unwrap_or_default()
}

impl ColdSecret {
    /// A new random seed from `env`.
    pub fn generate(env: &dyn Env) -> Self {
        let mut seed = Zeroizing::new([0u8; 32]);
        env.fill_random(seed.as_mut());
        ColdSecret { seed }
    }

    /// Rebuild from stored bytes (after unsealing); anything but 32 bytes is refused.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, BtcError> {
        let arr: [u8; 32] =
            bytes.try_into().map_err(|_| BtcError::Key("a cold seed is 32 bytes".into()))?;
        Ok(ColdSecret { seed: Zeroizing::new(arr) })
    }

    /// The seed, for sealing it under a passphrase.
    pub fn expose_bytes(&self) -> &[u8; 32] {
        &self.seed
    }

    fn master(&self, network: Network) -> Result<Xpriv, BtcError> {
        Xpriv::new_master(kind(network), self.seed.as_ref())
            .map_err(|e| BtcError::Key(e.to_string()))
    }

    /// The master key fingerprint (how PSBTs name this key).
    pub fn fingerprint(&self, network: Network) -> Result<String, BtcError> {
        let secp = Secp256k1::new();
        Ok(self.master(network)?.fingerprint(&secp).to_string())
    }

    /// The account key with its origin: `[fingerprint/48h/1h/0h/2h]tpub…`.
    pub fn account_key(&self, network: Network) -> Result<String, BtcError> {
        let secp = Secp256k1::new();
        let master = self.master(network)?;
        let path = account_path(network);
        let account = master.derive_priv(&secp, &path).map_err(|e| BtcError::Key(e.to_string()))?;
        let xpub = Xpub::from_priv(&secp, &account);
        let origin = path.to_string();
        let origin = origin.strip_prefix("m/").unwrap_or(&origin).replace('\'', "h");
        Ok(format!("[{}/{origin}]{xpub}", master.fingerprint(&secp)))
    }

    /// The Ethereum key at BIP-44's first account, `m/44'/60'/0'/0/0` (a Safe owner key
    /// made from the same seed).
    pub fn ethereum_key(&self) -> Result<Zeroizing<[u8; 32]>, BtcError> {
        let secp = Secp256k1::new();
        let path = DerivationPath::from_str("m/44'/60'/0'/0/0")
            .map_err(|e| BtcError::Key(e.to_string()))?;
        let key = self
            .master(Network::Bitcoin)?
            .derive_priv(&secp, &path)
            .map_err(|e| BtcError::Key(e.to_string()))?;
        Ok(Zeroizing::new(key.private_key.secret_bytes()))
    }

    /// Sign every input of `psbt` whose BIP-32 derivations name this key (ECDSA, SIGHASH_ALL);
    /// returns how many inputs got a signature. A key that signs nothing is an error: it is
    /// not one of the wallet's keys.
    pub fn sign(&self, psbt: &mut bitcoin::Psbt, network: Network) -> Result<usize, BtcError> {
        let secp = Secp256k1::new();
        let master = self.master(network)?;
        let signed = match psbt.sign(&master, &secp) {
            Ok(map) => map,
            Err((_, errors)) => {
                let why: Vec<String> =
                    errors.iter().map(|(i, e)| format!("input {i}: {e}")).collect();
                return Err(BtcError::Sign(why.join("; ")));
            }
        };
        let n = signed
            .values()
            .filter(|keys| match keys {
                bitcoin::psbt::SigningKeys::Ecdsa(k) => !k.is_empty(),
                bitcoin::psbt::SigningKeys::Schnorr(k) => !k.is_empty(),
            })
            .count();
        if n == 0 {
            return Err(BtcError::Sign(format!(
                "key {} signs no input of this transaction: it is not one of the wallet's keys",
                master.fingerprint(&secp)
            )));
        }
        Ok(n)
    }
}
