//! `strongroom-cold`: the offline signer. It has no network code (its dependency tree holds
//! no networking crate) and runs on a machine that never touches a network; bundles come and
//! go as files.
//!
//! Key ceremony: `init` makes a key and seals it under a passphrase, `account-key` prints
//! the only thing that leaves the machine, `descriptor` builds the k-of-n wallet from the
//! holders' account keys, `install-wallet` records it (`install-safe` for a Safe, whose owners
//! are the keys' Ethereum addresses), `backup` writes an encrypted backup.
//! Signing: `sign` reads a bundle, checks it, shows it in plain words, asks for "yes", asks
//! for the passphrase, signs and writes the bundle back.
//! Outside cosigners (Sparrow, a hardware wallet): `wallet-descriptor` prints an installed
//! wallet's descriptor for their watch-only import, `export-psbt` writes a checked bundle's
//! PSBT as a BIP-174 file, `import-psbt` merges the signatures of the file they signed back
//! into the bundle.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use strongroom_chain_bitcoin::keys::ColdSecret;
use strongroom_chain_bitcoin::Multisig;
use strongroom_cold::bundle::Bundle;
use strongroom_cold::home::{write_atomic, ColdHome};
use strongroom_cold::interop::{export_psbt, PsbtFormat};
use strongroom_core::{Env, SystemEnv, WalletId};
use strongroom_crypto::SecretString;
use strongroom_governance::log::Genesis;
use strongroom_units::ChainId;

#[derive(Parser, Debug)]
#[command(name = "strongroom-cold", version, about = "Strongroom offline signer (no network code)")]
struct Args {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Make this machine's cold key (or restore it from a backup) and seal it under a passphrase.
    Init {
        #[arg(long)]
        home: PathBuf,
        /// CAIP-2 chain, e.g. bip122:0f9188f13cb7b2c71f2a335e3a4fc328 (regtest).
        #[arg(long)]
        chain: String,
        /// The governance genesis file, and its hash as pinned in every signer.
        #[arg(long)]
        genesis: PathBuf,
        #[arg(long)]
        pin: String,
        #[arg(long)]
        passphrase_file: Option<PathBuf>,
        /// Restore the key from this backup instead of making a new one.
        #[arg(long)]
        restore: Option<PathBuf>,
        #[arg(long)]
        backup_passphrase_file: Option<PathBuf>,
    },
    /// Print this key's account key with its origin (the only thing to copy off the machine).
    AccountKey {
        #[arg(long)]
        home: PathBuf,
    },
    /// Build the k-of-n wallet descriptor from the key holders' account keys.
    Descriptor {
        #[arg(long)]
        chain: String,
        #[arg(long)]
        threshold: usize,
        #[arg(long = "key", required = true)]
        keys: Vec<String>,
    },
    /// Install a wallet this key co-signs for.
    InstallWallet {
        #[arg(long)]
        home: PathBuf,
        #[arg(long)]
        wallet: String,
        #[arg(long)]
        descriptor: String,
    },
    /// Install a Safe this key owns (its address, all its owners, its threshold).
    InstallSafe {
        #[arg(long)]
        home: PathBuf,
        #[arg(long)]
        wallet: String,
        #[arg(long)]
        safe: String,
        #[arg(long = "owner", required = true)]
        owners: Vec<String>,
        #[arg(long)]
        threshold: u8,
    },
    /// Write an encrypted backup of the key, under its own passphrase.
    Backup {
        #[arg(long)]
        home: PathBuf,
        #[arg(long)]
        out: PathBuf,
        #[arg(long)]
        passphrase_file: Option<PathBuf>,
        #[arg(long)]
        backup_passphrase_file: Option<PathBuf>,
    },
    /// Print an installed wallet's output descriptor (BIP-380, with its checksum), for a
    /// watch-only import into Sparrow (File > New Wallet > Import) or Bitcoin Core.
    WalletDescriptor {
        #[arg(long)]
        home: PathBuf,
        /// The wallet id given to install-wallet.
        #[arg(long)]
        wallet: String,
        /// Print the JSON that Bitcoin Core's `importdescriptors` takes instead (the receive
        /// and change descriptors, each with its checksum).
        #[arg(long)]
        bitcoin_core: bool,
    },
    /// Check a Bitcoin bundle as `sign` does and write its PSBT as a plain BIP-174 file, for
    /// a cosigner in Sparrow or on a hardware wallet.
    ExportPsbt {
        #[arg(long)]
        home: PathBuf,
        /// The bundle from the online side (or one already signed by other holders).
        #[arg(long = "in")]
        input: PathBuf,
        /// Where to write the PSBT (binary `.psbt` unless --base64).
        #[arg(long)]
        out: PathBuf,
        /// Write base64 text instead of binary.
        #[arg(long)]
        base64: bool,
    },
    /// Merge the signatures of a PSBT that an outside cosigner signed (binary or base64)
    /// into the bundle, after checking the bundle as `sign` does; refused if the PSBT's
    /// transaction is not the bundle's or a signature does not verify.
    ImportPsbt {
        #[arg(long)]
        home: PathBuf,
        /// The bundle the PSBT was exported from.
        #[arg(long = "in")]
        input: PathBuf,
        /// The PSBT file the cosigner signed.
        #[arg(long)]
        psbt: PathBuf,
        /// Where to write the bundle with the merged signatures.
        #[arg(long)]
        out: PathBuf,
    },
    /// Check a signing bundle, show it, and sign it after confirmation.
    Sign {
        #[arg(long)]
        home: PathBuf,
        #[arg(long = "in")]
        input: PathBuf,
        #[arg(long)]
        out: PathBuf,
        #[arg(long)]
        passphrase_file: Option<PathBuf>,
    },
}

fn read_line(prompt: &str) -> anyhow::Result<String> {
    eprint!("{prompt}");
    std::io::stderr().flush()?;
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    Ok(line.trim_end_matches(['\r', '\n']).to_owned())
}

/// A passphrase from a file (its first line), or typed at the prompt without echo when
/// stdin is a terminal (a line of stdin otherwise).
fn passphrase(file: Option<&Path>, what: &str) -> anyhow::Result<SecretString> {
    use std::io::IsTerminal;
    let text = zeroize::Zeroizing::new(match file {
        Some(f) => {
            std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?
        }
        None if std::io::stdin().is_terminal() => {
            eprint!("{what}: ");
            std::io::stderr().flush()?;
            rpassword::read_password()?
        }
        None => read_line(&format!("{what}: "))?,
    });
    Ok(SecretString::new(text.lines().next().unwrap_or_default().to_owned()))
}

fn run(cmd: Cmd, env: &dyn Env) -> anyhow::Result<()> {
    match cmd {
        Cmd::Init {
            home,
            chain: c,
            genesis,
            pin,
            passphrase_file,
            restore,
            backup_passphrase_file,
        } => {
            let id = ChainId::parse(&c)?;
            let genesis: Genesis = serde_json::from_slice(&std::fs::read(&genesis)?)
                .context("reading the governance genesis")?;
            let secret = match restore {
                Some(b) => ColdHome::open_backup(
                    &std::fs::read_to_string(&b)?,
                    &passphrase(backup_passphrase_file.as_deref(), "backup passphrase")?,
                )?,
                None => ColdSecret::generate(env),
            };
            let pass = passphrase(passphrase_file.as_deref(), "new passphrase for this key")?;
            if passphrase_file.is_none() {
                let again = passphrase(None, "the same passphrase again")?;
                if again.expose_secret() != pass.expose_secret() {
                    bail!("the two passphrases differ; nothing was written");
                }
            }
            let h = ColdHome::create(&home, &secret, &pass, id, genesis, &pin, env)?;
            println!("{}", h.config().account_key);
        }
        Cmd::AccountKey { home } => {
            println!("{}", ColdHome::open(&home, env.now())?.config().account_key);
        }
        Cmd::Descriptor { chain: c, threshold, keys } => {
            let net = strongroom_chain_bitcoin::network(&ChainId::parse(&c)?)?;
            println!("{}", Multisig::new(threshold, &keys, net)?.descriptor());
        }
        Cmd::InstallWallet { home, wallet, descriptor } => {
            let mut h = ColdHome::open(&home, env.now())?;
            let m = h.install_wallet(WalletId::parse(&wallet)?, &descriptor)?;
            println!(
                "installed {wallet}: {}-of-{}, first receive address {}",
                m.threshold(),
                m.keys().len(),
                m.address(strongroom_chain_bitcoin::Keychain::Receive, 0)?
            );
        }
        Cmd::InstallSafe { home, wallet, safe, owners, threshold } => {
            let mut h = ColdHome::open(&home, env.now())?;
            h.install_safe(WalletId::parse(&wallet)?, &safe, &owners, threshold)?;
            println!("installed {wallet}: Safe {safe}, {threshold}-of-{}", owners.len());
        }
        Cmd::Backup { home, out, passphrase_file, backup_passphrase_file } => {
            let h = ColdHome::open(&home, env.now())?;
            let pass = passphrase(passphrase_file.as_deref(), "passphrase")?;
            let backup_pass = passphrase(backup_passphrase_file.as_deref(), "backup passphrase")?;
            let text = h.backup(&pass, &backup_pass, env)?;
            write_atomic(&out, format!("{text}\n").as_bytes())?;
            println!("backup of key {} written to {}", h.config().fingerprint, out.display());
        }
        Cmd::WalletDescriptor { home, wallet, bitcoin_core } => {
            let h = ColdHome::open(&home, env.now())?;
            let m = h.multisig(&WalletId::parse(&wallet)?)?;
            if bitcoin_core {
                let import = |keychain, internal: bool| {
                    serde_json::json!({
                        "desc": m.keychain_descriptor(keychain),
                        "active": true,
                        "internal": internal,
                        "timestamp": "now",
                    })
                };
                let all = serde_json::json!([
                    import(strongroom_chain_bitcoin::Keychain::Receive, false),
                    import(strongroom_chain_bitcoin::Keychain::Change, true),
                ]);
                println!("{}", serde_json::to_string_pretty(&all)?);
            } else {
                println!("{}", m.descriptor());
            }
        }
        Cmd::ExportPsbt { home, input, out, base64 } => {
            let mut h = ColdHome::open(&home, env.now())?;
            let bundle = Bundle::from_json(&std::fs::read(&input)?)?;
            let review = h.review(&bundle, env.now())?;
            println!("{}", review.words);
            let multisig = h.multisig(&bundle.intent.source_wallet)?;
            let format = if base64 { PsbtFormat::Base64 } else { PsbtFormat::Binary };
            let (bytes, _) = export_psbt(&bundle, &multisig, format)?;
            write_atomic(&out, &bytes)?;
            println!("PSBT written to {} ({} bytes)", out.display(), bytes.len());
        }
        Cmd::ImportPsbt { home, input, psbt, out } => {
            let mut h = ColdHome::open(&home, env.now())?;
            let bundle = Bundle::from_json(&std::fs::read(&input)?)?;
            let file =
                std::fs::read(&psbt).with_context(|| format!("reading {}", psbt.display()))?;
            let (merged, review, imported) = h.import_psbt(&bundle, &file, env.now())?;
            println!("{}", review.words);
            write_atomic(&out, &merged.to_json()?)?;
            println!(
                "imported {} signature(s) from key(s) {}; bundle written to {}",
                imported.added,
                if imported.signers.is_empty() {
                    "(unnamed)".to_owned()
                } else {
                    imported.signers.join(", ")
                },
                out.display()
            );
        }
        Cmd::Sign { home, input, out, passphrase_file } => {
            let mut h = ColdHome::open(&home, env.now())?;
            let bundle = Bundle::from_json(&std::fs::read(&input)?)?;
            let review = h.review(&bundle, env.now())?;
            println!("{}", review.words);
            let answer = read_line("Sign this with key? Type yes to sign: ")?;
            if answer.trim() != "yes" {
                bail!("not signed: the answer was not yes");
            }
            let pass = passphrase(passphrase_file.as_deref(), "passphrase")?;
            let secret = h.unlock(&pass)?;
            let signed = h.sign(&bundle, &review, &secret, env.now())?;
            write_atomic(&out, &signed.to_json()?)?;
            println!(
                "signed with key {}; bundle written to {}",
                h.config().fingerprint,
                out.display()
            );
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    let args = Args::parse();
    let env = SystemEnv::new();
    match run(args.cmd, &env) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("strongroom-cold: {e:#}");
            ExitCode::FAILURE
        }
    }
}
