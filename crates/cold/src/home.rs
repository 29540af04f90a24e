//! The offline signer's home directory:
//!
//! - `home.json`: the chain, this key's fingerprint and account key, the governance genesis
//!   and its pinned hash, and the wallets installed at the key ceremony (their descriptors);
//! - `key.sealed`: the key's seed under the holder's passphrase (`crypto::passphrase`);
//! - `governance.jsonl`: its own copy of the governance log, and `governance-seen.jsonl`:
//!   when it first saw each entry (time-locks run from then, so a back-dated entry cannot
//!   shorten one);
//! - `signed.jsonl`: what it signed, for velocity limits and so that one intent is never
//!   signed as two different transactions.
//!
//! Nothing in a bundle is believed unless it checks out against these.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use strongroom_chain_bitcoin::keys::ColdSecret;
use strongroom_chain_bitcoin::psbt::{decode, from_base64, to_base64};
use strongroom_chain_bitcoin::Multisig;
use strongroom_chain_ethereum::safe::{
    address_of_key, check_safe_tx, safe_tx_hash, sign_hash, EthAddress,
};
use strongroom_core::{Env, Intent, Timestamp, WalletId};
use strongroom_crypto::{passphrase, SecretString};
use strongroom_governance::gate::{decide, Subject};
use strongroom_governance::log::{
    extend, first_seen, replay, replay_seen, Entry, Genesis, SeenRecord, State,
};
use strongroom_governance::policy::{Initiator, Tier, VelocityLimit};
use strongroom_units::{Amount, ChainFamily, ChainId};

use crate::bundle::{Bundle, OwnerSignature, Payload};
use crate::ColdError;

const KEY_LABEL: &str = "cold-key";
const BACKUP_LABEL: &str = "cold-key-backup";

/// A wallet this key co-signs for, as the key ceremony built it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstalledWallet {
    pub id: WalletId,
    pub chain: ChainId,
    #[serde(flatten)]
    pub kind: WalletKind,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum WalletKind {
    /// A k-of-n P2WSH multisig, as its multipath descriptor.
    BitcoinMultisig { descriptor: String },
    /// A Safe with its owners and threshold as deployed.
    Safe { address: String, owners: Vec<String>, threshold: u8 },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HomeConfig {
    pub chain: ChainId,
    pub fingerprint: String,
    pub account_key: String,
    pub genesis: Genesis,
    pub pin: String,
    #[serde(default)]
    pub wallets: Vec<InstalledWallet>,
}

/// One signature given, as the journal keeps it.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Signed {
    request_id: String,
    intent_hash: String,
    txid: String,
    at_ms: i64,
    wallet: String,
    asset: String,
    amount: Amount,
}

/// What the signer understood of a bundle, before it signs.
#[derive(Debug, Clone)]
pub struct Review {
    /// The governance decision, explained.
    pub decision: String,
    /// All of it in plain words, for the person at the machine.
    pub words: String,
    txid: String,
}

impl Review {
    /// The id of the transaction this review is about: the Bitcoin txid, or the Safe
    /// transaction's hash.
    pub fn txid(&self) -> &str {
        &self.txid
    }
}

#[derive(Debug)]
pub struct ColdHome {
    dir: PathBuf,
    config: HomeConfig,
    entries: Vec<Entry>,
    /// When this signer first saw each entry.
    seen: std::collections::BTreeMap<u64, Timestamp>,
    state: State,
    signed: Vec<Signed>,
}

fn read_lines<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Vec<T>, ColdError> {
    if !path.exists() {
        return Ok(Vec::new());
    }
    std::fs::read_to_string(path)?
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            serde_json::from_str(l).map_err(|e| ColdError::Io(format!("{}: {e}", path.display())))
        })
        .collect()
}

/// When this signer first saw each governance entry.
const SEEN: &str = "governance-seen.jsonl";

fn append_lines<T: Serialize>(path: &Path, items: &[T]) -> Result<(), ColdError> {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new().create(true).append(true).open(path)?;
    for i in items {
        let line = serde_json::to_string(i).map_err(|e| ColdError::Io(e.to_string()))?;
        writeln!(f, "{line}")?;
    }
    f.sync_all()?;
    Ok(())
}

/// Write `bytes` to `path` through a temporary file and a rename, so a crash leaves the old
/// file or the new one, never half of one.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), ColdError> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

/// The Safe owner address of `secret` (BIP-44 `m/44'/60'/0'/0/0`).
pub fn owner_address(secret: &ColdSecret) -> Result<EthAddress, ColdError> {
    let key = secret.ethereum_key()?;
    let key = k256::ecdsa::SigningKey::from_slice(key.as_ref())
        .map_err(|e| ColdError::Refused(e.to_string()))?;
    Ok(address_of_key(&key))
}

fn network(chain: &ChainId) -> Result<strongroom_chain_bitcoin::bitcoin::Network, ColdError> {
    Ok(strongroom_chain_bitcoin::network(chain)?)
}

impl ColdHome {
    /// A new home in `dir` (which must not hold one) for `secret`, sealed under `pass`.
    pub fn create(
        dir: &Path,
        secret: &ColdSecret,
        pass: &SecretString,
        chain: ChainId,
        genesis: Genesis,
        pin: &str,
        env: &dyn Env,
    ) -> Result<ColdHome, ColdError> {
        if dir.join("home.json").exists() || dir.join("key.sealed").exists() {
            return Err(ColdError::Refused(format!("{} already holds a cold key", dir.display())));
        }
        let state = replay(&genesis, pin, &[], env.now()).map_err(|e| {
            ColdError::Refused(format!("the governance genesis does not match the pin: {e}"))
        })?;
        let (fingerprint, account_key) = match chain.family() {
            ChainFamily::Bitcoin => {
                let net = network(&chain)?;
                (secret.fingerprint(net)?, secret.account_key(net)?)
            }
            ChainFamily::Ethereum => {
                let owner = owner_address(secret)?;
                (owner.to_string().to_ascii_lowercase(), owner.to_checksum(None))
            }
        };
        let config = HomeConfig {
            chain,
            fingerprint,
            account_key,
            genesis,
            pin: pin.to_ascii_lowercase(),
            wallets: Vec::new(),
        };
        std::fs::create_dir_all(dir)?;
        let sealed = passphrase::seal(secret.expose_bytes(), pass, KEY_LABEL, env)?;
        write_atomic(&dir.join("key.sealed"), sealed.as_bytes())?;
        let home = ColdHome {
            dir: dir.to_owned(),
            config,
            entries: Vec::new(),
            seen: std::collections::BTreeMap::new(),
            state,
            signed: Vec::new(),
        };
        home.save()?;
        Ok(home)
    }

    /// Open the home in `dir`; its governance log must replay.
    pub fn open(dir: &Path, now: Timestamp) -> Result<ColdHome, ColdError> {
        let text = std::fs::read(dir.join("home.json")).map_err(|e| {
            ColdError::Io(format!("{}: no cold key here ({e}); run init first", dir.display()))
        })?;
        let config: HomeConfig =
            serde_json::from_slice(&text).map_err(|e| ColdError::Io(format!("home.json: {e}")))?;
        let entries: Vec<Entry> = read_lines(&dir.join("governance.jsonl"))?;
        let (seen, missing) = first_seen(&entries, read_lines(&dir.join(SEEN))?, now);
        append_lines(&dir.join(SEEN), &missing)?;
        let state =
            replay_seen(&config.genesis, &config.pin, &entries, now, &|q| seen.get(&q).copied())
                .map_err(|e| {
                    ColdError::Refused(format!("this signer's governance log does not replay: {e}"))
                })?;
        let signed = read_lines(&dir.join("signed.jsonl"))?;
        Ok(ColdHome { dir: dir.to_owned(), config, entries, seen, state, signed })
    }

    fn save(&self) -> Result<(), ColdError> {
        let mut text =
            serde_json::to_vec_pretty(&self.config).map_err(|e| ColdError::Io(e.to_string()))?;
        text.push(b'\n');
        write_atomic(&self.dir.join("home.json"), &text)
    }

    pub fn config(&self) -> &HomeConfig {
        &self.config
    }

    /// Install a wallet from the key ceremony: its descriptor must be valid for this
    /// home's chain and must include this key.
    pub fn install_wallet(
        &mut self,
        id: WalletId,
        descriptor: &str,
    ) -> Result<Multisig, ColdError> {
        if self.config.chain.family() != ChainFamily::Bitcoin {
            return Err(ColdError::Refused(
                "a Bitcoin wallet needs a key made for a Bitcoin chain".into(),
            ));
        }
        let multisig = Multisig::from_descriptor(descriptor, network(&self.config.chain)?)?;
        if !multisig.keys().iter().any(|k| k == &self.config.account_key) {
            return Err(ColdError::Refused(format!(
                "the descriptor does not include this signer's key {}",
                self.config.account_key
            )));
        }
        self.install(InstalledWallet {
            id,
            chain: self.config.chain.clone(),
            kind: WalletKind::BitcoinMultisig { descriptor: multisig.descriptor() },
        })?;
        Ok(multisig)
    }

    /// Install a Safe this key owns: `threshold` of `owners`, this key among them.
    pub fn install_safe(
        &mut self,
        id: WalletId,
        safe: &str,
        owners: &[String],
        threshold: u8,
    ) -> Result<(), ColdError> {
        if self.config.chain.family() != ChainFamily::Ethereum {
            return Err(ColdError::Refused("a Safe needs a key made for an Ethereum chain".into()));
        }
        let parse = |a: &str| {
            a.parse::<EthAddress>()
                .map_err(|_| ColdError::Malformed(format!("{a:?} is not an address")))
        };
        let safe = parse(safe)?;
        let mut list = owners.iter().map(|o| parse(o)).collect::<Result<Vec<_>, _>>()?;
        list.sort();
        list.dedup();
        if list.len() != owners.len() || threshold == 0 || usize::from(threshold) > list.len() {
            return Err(ColdError::Refused(format!(
                "a {threshold}-of-{} Safe with distinct owners is not possible",
                owners.len()
            )));
        }
        let me = parse(&self.config.account_key)?;
        if !list.contains(&me) {
            return Err(ColdError::Refused(format!(
                "this signer's key {} is not an owner of the Safe",
                self.config.account_key
            )));
        }
        self.install(InstalledWallet {
            id,
            chain: self.config.chain.clone(),
            kind: WalletKind::Safe {
                address: safe.to_checksum(None),
                owners: list.iter().map(|o| o.to_checksum(None)).collect(),
                threshold,
            },
        })
    }

    fn install(&mut self, wallet: InstalledWallet) -> Result<(), ColdError> {
        match self.config.wallets.iter().find(|w| w.id == wallet.id) {
            Some(w) if *w == wallet => return Ok(()),
            Some(_) => {
                return Err(ColdError::Refused(format!(
                    "wallet {} is installed with other keys; a wallet's keys never change here",
                    wallet.id.as_str()
                )))
            }
            None => self.config.wallets.push(wallet),
        }
        self.save()
    }

    /// The key, unsealed with `pass`.
    pub fn unlock(&self, pass: &SecretString) -> Result<ColdSecret, ColdError> {
        let sealed = std::fs::read_to_string(self.dir.join("key.sealed"))?;
        let seed = passphrase::open(&sealed, pass, KEY_LABEL)?;
        let secret = ColdSecret::from_bytes(&seed)?;
        let fingerprint = match self.config.chain.family() {
            ChainFamily::Bitcoin => secret.fingerprint(network(&self.config.chain)?)?,
            ChainFamily::Ethereum => owner_address(&secret)?.to_string().to_ascii_lowercase(),
        };
        if fingerprint != self.config.fingerprint {
            return Err(ColdError::Refused(
                "key.sealed holds another key than home.json names".into(),
            ));
        }
        Ok(secret)
    }

    /// An encrypted backup of the key under its own passphrase, as strong as the primary.
    pub fn backup(
        &self,
        pass: &SecretString,
        backup_pass: &SecretString,
        env: &dyn Env,
    ) -> Result<String, ColdError> {
        ColdHome::seal_backup(&self.unlock(pass)?, backup_pass, env)
    }

    /// A backup of `secret` under `backup_pass`, as [`ColdHome::backup`] writes it (for keys
    /// made elsewhere, e.g. the dev stack's cold keys, to be restored into a home).
    pub fn seal_backup(
        secret: &ColdSecret,
        backup_pass: &SecretString,
        env: &dyn Env,
    ) -> Result<String, ColdError> {
        Ok(passphrase::seal(secret.expose_bytes(), backup_pass, BACKUP_LABEL, env)?)
    }

    /// The key in a backup made by [`ColdHome::backup`].
    pub fn open_backup(text: &str, backup_pass: &SecretString) -> Result<ColdSecret, ColdError> {
        let seed = passphrase::open(text, backup_pass, BACKUP_LABEL)?;
        Ok(ColdSecret::from_bytes(&seed)?)
    }

    /// The Bitcoin multisig installed as wallet `id` (its descriptor as the key ceremony
    /// built it, the one this signer checks every PSBT against).
    pub fn multisig(&self, id: &WalletId) -> Result<Multisig, ColdError> {
        let wallet = self.wallet(id)?;
        let WalletKind::BitcoinMultisig { descriptor } = &wallet.kind else {
            return Err(ColdError::Refused(format!(
                "wallet {} is not a Bitcoin multisig",
                id.as_str()
            )));
        };
        Ok(Multisig::from_descriptor(descriptor, network(&wallet.chain)?)?)
    }

    /// Merge the signatures of an outside cosigner's PSBT `file` (binary BIP-174 or base64)
    /// into `bundle`, which this signer first reviews in full ([`ColdHome::review`]): a bundle
    /// it would refuse to sign takes no signatures either. The merged bundle is reviewed
    /// again and returned with that review.
    pub fn import_psbt(
        &mut self,
        bundle: &Bundle,
        file: &[u8],
        now: Timestamp,
    ) -> Result<(Bundle, Review, crate::interop::Imported), ColdError> {
        self.review(bundle, now)?;
        let multisig = self.multisig(&bundle.intent.source_wallet)?;
        let (merged, imported) = crate::interop::import_psbt(bundle, file, &multisig)?;
        let review = self.review(&merged, now)?;
        Ok((merged, review, imported))
    }

    fn wallet(&self, id: &WalletId) -> Result<InstalledWallet, ColdError> {
        self.config.wallets.iter().find(|w| &w.id == id).cloned().ok_or_else(|| {
            ColdError::Refused(format!("this signer holds no key for wallet {}", id.as_str()))
        })
    }

    /// How much of `limit`'s asset this signer signed away within its period before `now`.
    fn moved(&self, limit: &VelocityLimit, now: Timestamp) -> Amount {
        let signed = self.signed.iter();
        limit.moved(now, signed.map(|s| (s.at_ms, s.wallet.as_str(), s.asset.as_str(), s.amount)))
    }

    /// Check `bundle` against this signer's own state: the governance log (extended only if
    /// it replays from the pinned genesis), the policy's decision on the intent with the
    /// bundle's approvals as a cold movement, the installed wallet, and the transaction
    /// decoded back to exactly the intent.
    pub fn review(&mut self, bundle: &Bundle, now: Timestamp) -> Result<Review, ColdError> {
        let intent: &Intent = &bundle.intent;
        if now >= intent.expires_at {
            return Err(ColdError::Refused(format!(
                "the intent expired at {} ms",
                intent.expires_at.unix_ms()
            )));
        }
        if intent.chain != self.config.chain {
            return Err(ColdError::Refused(format!(
                "the intent is for {}, this signer signs on {}",
                intent.chain.as_str(),
                self.config.chain.as_str()
            )));
        }
        let wallet = self.wallet(&intent.source_wallet)?;

        if let Some((new, state)) = extend(
            &self.config.genesis,
            &self.config.pin,
            &self.entries,
            &bundle.governance,
            now,
            &|q| self.seen.get(&q).copied(),
        )
        .map_err(ColdError::Refused)?
        {
            let first = SeenRecord::now(&new, now);
            append_lines(&self.dir.join(SEEN), &first)?;
            append_lines(&self.dir.join("governance.jsonl"), &new)?;
            self.seen.extend(first.iter().map(|s| (s.seq, now)));
            self.entries.extend(new);
            self.state = state;
        }
        let subject = Subject {
            intent,
            tier: Tier::Cold,
            own_destination: false,
            customer_id: None,
            // Roles are the log's: the bundle's `initiator_role` is the online side's word.
            initiator: Initiator::claimed(&bundle.initiator, &self.state.members),
            fee: None,
        };
        let moved = |l: &VelocityLimit| self.moved(l, now);
        let d = decide(&self.state, &subject, &bundle.approvals, &moved, now);
        if !d.allowed() {
            return Err(ColdError::Refused(format!("governance: {}", d.explain())));
        }

        let (what, txid) = match (&wallet.kind, &bundle.transaction) {
            (WalletKind::BitcoinMultisig { descriptor }, Payload::BitcoinPsbt { psbt }) => {
                let multisig = Multisig::from_descriptor(descriptor, network(&wallet.chain)?)?;
                let psbt = from_base64(psbt)?;
                let decoded = decode(&psbt, intent, &multisig)?;
                let head = format!(
                    "Cold withdrawal from wallet {} ({}-of-{}, {})",
                    intent.source_wallet.as_str(),
                    multisig.threshold(),
                    multisig.keys().len(),
                    intent.chain.as_str()
                );
                (
                    format!("{head}\n{}", decoded.describe(intent.asset.symbol.as_str())),
                    psbt.unsigned_tx.compute_txid().to_string(),
                )
            }
            (WalletKind::Safe { address, owners, threshold }, Payload::SafeTransaction(p)) => {
                let (safe, tx) = p.parse()?;
                if safe.to_checksum(None) != *address {
                    return Err(ColdError::Refused(format!(
                        "the bundle is for Safe {safe}, wallet {} is Safe {address}",
                        intent.source_wallet.as_str()
                    )));
                }
                check_safe_tx(&tx, safe, intent).map_err(|e| ColdError::Refused(e.to_string()))?;
                let chain_id = intent
                    .chain
                    .eip155_id()
                    .ok_or_else(|| ColdError::Refused("not an EIP-155 chain".into()))?;
                let hash = safe_tx_hash(chain_id, safe, &tx);
                let amount = intent
                    .amount
                    .format_decimal(intent.asset.decimals)
                    .map_err(|e| ColdError::Malformed(e.to_string()))?;
                let words = format!(
                    "Cold withdrawal from wallet {} (Safe {address}, {threshold}-of-{}, {})\nSend {amount} {} ({} base units)\n  to {}\n  a plain call (no delegatecall), Safe nonce {}, gas paid by the executor\n  Safe transaction hash 0x{}\n",
                    intent.source_wallet.as_str(),
                    owners.len(),
                    intent.chain.as_str(),
                    intent.asset.symbol.as_str(),
                    intent.amount.base_units(),
                    intent.destination.as_str(),
                    p.nonce,
                    hex::encode(hash),
                );
                (words, format!("0x{}", hex::encode(hash)))
            }
            _ => {
                return Err(ColdError::Refused(format!(
                    "the bundle's transaction is not of wallet {}'s kind",
                    intent.source_wallet.as_str()
                )))
            }
        };
        let request = intent.request_id.to_string();
        if let Some(s) = self.signed.iter().find(|s| s.request_id == request && s.txid != txid) {
            return Err(ColdError::Refused(format!(
                "request {request} was already signed as transaction {}; signing another would pay it twice",
                s.txid
            )));
        }

        let hash = intent.hash().map_err(|e| ColdError::Malformed(e.to_string()))?;
        let approvers: Vec<&str> = bundle.approvals.iter().map(|a| a.approver.as_str()).collect();
        let words = format!(
            "{what}Intent {} (request {}), expires at {} ms\nGovernance: {}; approvals from {}\n",
            hash.to_hex(),
            request,
            intent.expires_at.unix_ms(),
            d.explain(),
            if approvers.is_empty() { "nobody".to_string() } else { approvers.join(", ") },
        );
        Ok(Review { decision: d.explain(), words, txid })
    }

    /// Sign the bundle [`ColdHome::review`] accepted, record it, and return the bundle with
    /// this key's signatures added.
    pub fn sign(
        &mut self,
        bundle: &Bundle,
        review: &Review,
        secret: &ColdSecret,
        now: Timestamp,
    ) -> Result<Bundle, ColdError> {
        let changed = || ColdError::Refused("the bundle changed since it was reviewed".into());
        let transaction = match &bundle.transaction {
            Payload::BitcoinPsbt { psbt } => {
                let mut psbt = from_base64(psbt)?;
                if psbt.unsigned_tx.compute_txid().to_string() != review.txid {
                    return Err(changed());
                }
                secret.sign(&mut psbt, network(&self.config.chain)?)?;
                Payload::BitcoinPsbt { psbt: to_base64(&psbt) }
            }
            Payload::SafeTransaction(p) => {
                let hash: [u8; 32] = review
                    .txid
                    .strip_prefix("0x")
                    .and_then(|h| hex::decode(h).ok())
                    .and_then(|b| b.try_into().ok())
                    .ok_or_else(changed)?;
                let (safe, tx) = p.parse()?;
                let chain_id = bundle.intent.chain.eip155_id().ok_or_else(changed)?;
                if safe_tx_hash(chain_id, safe, &tx) != hash {
                    return Err(changed());
                }
                let key = secret.ethereum_key()?;
                let key = k256::ecdsa::SigningKey::from_slice(key.as_ref())
                    .map_err(|e| ColdError::Refused(e.to_string()))?;
                let sig = sign_hash(&hash, &key).map_err(|e| ColdError::Refused(e.to_string()))?;
                let mut p = p.clone();
                let owner = address_of_key(&key).to_checksum(None);
                p.signatures.retain(|s| !s.owner.eq_ignore_ascii_case(&owner));
                p.signatures
                    .push(OwnerSignature { owner, signature: format!("0x{}", hex::encode(sig)) });
                Payload::SafeTransaction(p)
            }
        };
        let intent = &bundle.intent;
        let record = Signed {
            request_id: intent.request_id.to_string(),
            intent_hash: intent.hash().map_err(|e| ColdError::Malformed(e.to_string()))?.to_hex(),
            txid: review.txid.clone(),
            at_ms: now.unix_ms(),
            wallet: intent.source_wallet.as_str().to_owned(),
            asset: intent.asset.symbol.as_str().to_owned(),
            amount: intent.amount,
        };
        // Recorded before the signature leaves this function: a crash afterwards only makes
        // the signer stricter.
        if !self.signed.iter().any(|s| s.txid == record.txid && s.request_id == record.request_id) {
            append_lines(&self.dir.join("signed.jsonl"), std::slice::from_ref(&record))?;
            self.signed.push(record);
        }
        let mut out = bundle.clone();
        out.transaction = transaction;
        if !out.signed_by.contains(&self.config.fingerprint) {
            out.signed_by.push(self.config.fingerprint.clone());
        }
        Ok(out)
    }
}
