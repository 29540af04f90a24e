//! The online side of a cold wallet: a watch-only bdk_wallet over the multisig's two
//! keychains, which knows the wallet's coins and builds unsigned PSBTs (coin selection, fee
//! rate, change to the wallet's own change keychain). It holds no key.

use bdk_wallet::{KeychainKind, Wallet};
use bitcoin::{Amount, FeeRate, Psbt, Transaction};
use strongroom_core::env::EnvRng;
use strongroom_core::{Env, Intent};

use crate::psbt::{decode, Decoded};
use crate::{BtcError, Keychain, Multisig};

#[derive(Debug)]
pub struct ColdWallet {
    multisig: Multisig,
    wallet: Wallet,
}

impl ColdWallet {
    pub fn new(multisig: &Multisig) -> Result<Self, BtcError> {
        let wallet = Wallet::create(
            multisig.keychain_descriptor(Keychain::Receive),
            multisig.keychain_descriptor(Keychain::Change),
        )
        .network(multisig.network())
        .create_wallet_no_persist()
        .map_err(|e| BtcError::Descriptor(e.to_string()))?;
        Ok(ColdWallet { multisig: multisig.clone(), wallet })
    }

    pub fn multisig(&self) -> &Multisig {
        &self.multisig
    }

    /// The next unused receive address (deposits to cold storage go here).
    pub fn next_address(&mut self) -> bitcoin::Address {
        self.wallet.reveal_next_address(KeychainKind::External).address
    }

    /// Track the wallet's addresses of `keychain` up to `index` (found in use by a sync).
    pub fn reveal_to(&mut self, keychain: Keychain, index: u32) {
        let k = match keychain {
            Keychain::Receive => KeychainKind::External,
            Keychain::Change => KeychainKind::Internal,
        };
        let _ = self.wallet.reveal_addresses_to(k, index).count();
    }

    /// A transaction seen on the network (unconfirmed, first seen at `seen_at` seconds); the
    /// wallet keeps what pays or spends its scripts. A coinbase transaction is refused: it
    /// cannot be unconfirmed (and bdk_chain would panic on one).
    pub fn add_transaction(&mut self, tx: Transaction, seen_at: u64) -> Result<(), BtcError> {
        if tx.is_coinbase() {
            return Err(BtcError::Refused(format!(
                "transaction {} is a coinbase: a cold wallet takes no mining rewards",
                tx.compute_txid()
            )));
        }
        self.wallet.apply_unconfirmed_txs([(tx, seen_at)]);
        Ok(())
    }

    /// The wallet's balance in satoshi.
    pub fn balance_sat(&self) -> u64 {
        self.wallet.balance().total().to_sat()
    }

    /// An unsigned PSBT paying `intent` at `sat_per_vb`, with change to the wallet's change
    /// keychain, carrying what any BIP-174 signer needs (previous transactions and witness
    /// UTXOs, witness scripts, BIP-32 derivations, global xpubs), checked by [`decode`] as a signer will check it (so a fee above the cap is
    /// refused here already).
    pub fn prepare(
        &mut self,
        intent: &Intent,
        sat_per_vb: u64,
        env: &dyn Env,
    ) -> Result<(Psbt, Decoded), BtcError> {
        let network = crate::network(&intent.chain)?;
        let dest = crate::address(intent.destination.as_str(), network)?;
        let amount = u64::try_from(intent.amount.base_units())
            .map_err(|_| BtcError::Build("the amount is larger than any Bitcoin amount".into()))?;
        let rate = FeeRate::from_sat_per_vb(sat_per_vb).ok_or_else(|| {
            BtcError::Build(format!("fee rate {sat_per_vb} sat/vB is out of range"))
        })?;
        let mut builder = self.wallet.build_tx();
        // The global xpubs (PSBT_GLOBAL_XPUB, each account key with its origin) let a hardware
        // wallet that co-signs check that the change goes back to this multisig (Coldcard and
        // BitBox require them); the inputs and the change already carry their witness scripts
        // and the BIP-32 derivation of every key.
        builder
            .add_recipient(dest.script_pubkey(), Amount::from_sat(amount))
            .fee_rate(rate)
            .add_global_xpubs();
        let psbt = builder
            .finish_with_aux_rand(&mut EnvRng(env))
            .map_err(|e| BtcError::Build(e.to_string()))?;
        let decoded = decode(&psbt, intent, &self.multisig)?;
        Ok((psbt, decoded))
    }

    /// Forget the coins a prepared PSBT reserved, when it will not be signed.
    pub fn cancel(&mut self, psbt: &Psbt) {
        for i in &psbt.unsigned_tx.input {
            self.wallet.unlock_outpoint(i.previous_output);
        }
    }
}
