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
use std::path::Path;
use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::Parser;
use strongroom_chain_bitcoin::keys::ColdSecret;
use strongroom_chain_bitcoin::Multisig;
use strongroom_cold::bundle::Bundle;
use strongroom_cold::cli::{Cli, Cmd, Output};
use strongroom_cold::home::{write_atomic, ColdHome};
use strongroom_cold::interop::{export_psbt, PsbtFormat};
use strongroom_core::{Env, SystemEnv, WalletId};
use strongroom_crypto::SecretString;
use strongroom_governance::log::Genesis;
use strongroom_units::ChainId;

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

/// How `strongroom-cold` ends: the same numbers as `strongroom` (whose `exit` module has the
/// table): 0 done; 1 a check refused what was offered or the answer was no; 2 it could not
/// run; 64 a wrong command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Exit {
    Ok,
    Problem,
    Failed,
    Usage,
}

impl Exit {
    /// A refusal of the bundle or PSBT (or a "no" at the prompt) is a finding, 1; anything
    /// else stopped the command from running, 2.
    fn of(e: &anyhow::Error) -> Exit {
        let finding = e.chain().any(|cause| {
            cause.is::<Declined>()
                || cause
                    .downcast_ref::<strongroom_cold::ColdError>()
                    .is_some_and(strongroom_cold::ColdError::is_refusal)
                || cause
                    .downcast_ref::<strongroom_chain_bitcoin::BtcError>()
                    .is_some_and(strongroom_cold::is_bitcoin_refusal)
        });
        if finding {
            Exit::Problem
        } else {
            Exit::Failed
        }
    }
}

impl From<Exit> for ExitCode {
    fn from(e: Exit) -> Self {
        ExitCode::from(match e {
            Exit::Ok => 0,
            Exit::Problem => 1,
            Exit::Failed => 2,
            Exit::Usage => 64,
        })
    }
}

/// The holder did not type "yes": nothing was signed (exit 1).
#[derive(Debug)]
struct Declined;

impl std::fmt::Display for Declined {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("not signed: the answer was not yes")
    }
}

impl std::error::Error for Declined {}

/// What a command prints: `text` for people, or `json` as the one document on stdout.
fn emit(output: Output, text: &str, json: serde_json::Value) -> anyhow::Result<()> {
    match output {
        Output::Text => println!("{text}"),
        Output::Json => println!("{}", serde_json::to_string_pretty(&json)?),
    }
    Ok(())
}

/// A review as JSON: what is signed (the intent and its hash, the transaction id), the
/// governance decision, and the words shown to the holder.
fn review_json(
    bundle: &Bundle,
    review: &strongroom_cold::home::Review,
) -> anyhow::Result<serde_json::Value> {
    Ok(serde_json::json!({
        "intent": bundle.intent,
        "intent_hash": bundle.intent.hash()?.to_hex(),
        "txid": review.txid(),
        "decision": review.decision,
        "words": review.words,
    }))
}

fn run(cmd: Cmd, output: Output, env: &dyn Env) -> anyhow::Result<Exit> {
    let json = output == Output::Json;
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
            let genesis: Genesis = serde_json::from_slice(
                &std::fs::read(&genesis)
                    .with_context(|| format!("reading {}", genesis.display()))?,
            )
            .context("reading the governance genesis")?;
            let secret = match restore {
                Some(b) => ColdHome::open_backup(
                    &std::fs::read_to_string(&b)
                        .with_context(|| format!("reading {}", b.display()))?,
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
            let c = h.config();
            emit(
                output,
                &c.account_key,
                serde_json::json!({
                    "home": home, "chain": c.chain.as_str(), "fingerprint": c.fingerprint,
                    "account_key": c.account_key,
                }),
            )?;
        }
        Cmd::AccountKey { home } => {
            let h = ColdHome::open(&home, env.now())?;
            let c = h.config();
            emit(
                output,
                &c.account_key,
                serde_json::json!({
                    "chain": c.chain.as_str(), "fingerprint": c.fingerprint,
                    "account_key": c.account_key,
                }),
            )?;
        }
        Cmd::Descriptor { chain: c, threshold, keys } => {
            let net = strongroom_chain_bitcoin::network(&ChainId::parse(&c)?)?;
            let descriptor = Multisig::new(threshold, &keys, net)?.descriptor();
            emit(output, &descriptor, serde_json::json!({ "descriptor": descriptor }))?;
        }
        Cmd::InstallWallet { home, wallet, descriptor } => {
            let mut h = ColdHome::open(&home, env.now())?;
            let m = h.install_wallet(WalletId::parse(&wallet)?, &descriptor)?;
            let first = m.address(strongroom_chain_bitcoin::Keychain::Receive, 0)?;
            emit(
                output,
                &format!(
                    "installed {wallet}: {}-of-{}, first receive address {first}",
                    m.threshold(),
                    m.keys().len(),
                ),
                serde_json::json!({
                    "wallet": wallet, "threshold": m.threshold(), "keys": m.keys().len(),
                    "first_receive_address": first.to_string(),
                }),
            )?;
        }
        Cmd::InstallSafe { home, wallet, safe, owners, threshold } => {
            let mut h = ColdHome::open(&home, env.now())?;
            h.install_safe(WalletId::parse(&wallet)?, &safe, &owners, threshold)?;
            emit(
                output,
                &format!("installed {wallet}: Safe {safe}, {threshold}-of-{}", owners.len()),
                serde_json::json!({
                    "wallet": wallet, "safe": safe, "threshold": threshold, "owners": owners,
                }),
            )?;
        }
        Cmd::Backup { home, out, passphrase_file, backup_passphrase_file } => {
            let h = ColdHome::open(&home, env.now())?;
            let pass = passphrase(passphrase_file.as_deref(), "passphrase")?;
            let backup_pass = passphrase(backup_passphrase_file.as_deref(), "backup passphrase")?;
            let text = h.backup(&pass, &backup_pass, env)?;
            write_atomic(&out, format!("{text}\n").as_bytes())?;
            let fingerprint = &h.config().fingerprint;
            emit(
                output,
                &format!("backup of key {fingerprint} written to {}", out.display()),
                serde_json::json!({ "fingerprint": fingerprint, "out": out }),
            )?;
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
                // Already JSON: what `importdescriptors` takes, in either output.
                let all = serde_json::json!([
                    import(strongroom_chain_bitcoin::Keychain::Receive, false),
                    import(strongroom_chain_bitcoin::Keychain::Change, true),
                ]);
                println!("{}", serde_json::to_string_pretty(&all)?);
            } else {
                let descriptor = m.descriptor();
                emit(
                    output,
                    &descriptor,
                    serde_json::json!({ "wallet": wallet, "descriptor": descriptor }),
                )?;
            }
        }
        Cmd::ExportPsbt { home, input, out, base64 } => {
            let mut h = ColdHome::open(&home, env.now())?;
            let bundle = read_bundle(&input)?;
            let review = h.review(&bundle, env.now())?;
            if !json {
                println!("{}", review.words);
            }
            let multisig = h.multisig(&bundle.intent.source_wallet)?;
            let format = if base64 { PsbtFormat::Base64 } else { PsbtFormat::Binary };
            let (bytes, _) = export_psbt(&bundle, &multisig, format)?;
            write_atomic(&out, &bytes)?;
            emit(
                output,
                &format!("PSBT written to {} ({} bytes)", out.display(), bytes.len()),
                serde_json::json!({
                    "review": review_json(&bundle, &review)?, "out": out, "bytes": bytes.len(),
                    "format": if base64 { "base64" } else { "binary" },
                }),
            )?;
        }
        Cmd::ImportPsbt { home, input, psbt, out } => {
            let mut h = ColdHome::open(&home, env.now())?;
            let bundle = read_bundle(&input)?;
            let file =
                std::fs::read(&psbt).with_context(|| format!("reading {}", psbt.display()))?;
            let (merged, review, imported) = h.import_psbt(&bundle, &file, env.now())?;
            if !json {
                println!("{}", review.words);
            }
            write_atomic(&out, &merged.to_json()?)?;
            emit(
                output,
                &format!(
                    "imported {} signature(s) from key(s) {}; bundle written to {}",
                    imported.added,
                    if imported.signers.is_empty() {
                        "(unnamed)".to_owned()
                    } else {
                        imported.signers.join(", ")
                    },
                    out.display()
                ),
                serde_json::json!({
                    "review": review_json(&merged, &review)?, "added": imported.added,
                    "signers": imported.signers, "out": out,
                }),
            )?;
        }
        Cmd::Sign { home, input, out, passphrase_file, yes } => {
            use std::io::IsTerminal;
            // With no one to ask, stop before anything is read: never take the end of a
            // pipe for an answer.
            if !yes && !std::io::stdin().is_terminal() {
                bail!(
                    "`strongroom-cold sign` needs confirmation: pass --yes (stdin is not a \
                     terminal)"
                );
            }
            let mut h = ColdHome::open(&home, env.now())?;
            let bundle = read_bundle(&input)?;
            let review = h.review(&bundle, env.now())?;
            // The holder reads what they sign before the question; in JSON the words go to
            // stderr, beside the question, and the document says it all at the end.
            match (json, yes) {
                (false, _) => println!("{}", review.words),
                (true, false) => eprintln!("{}", review.words),
                (true, true) => {}
            }
            if !yes {
                let answer = read_line("Sign this with key? Type yes to sign: ")?;
                if answer.trim() != "yes" {
                    return Err(Declined.into());
                }
            }
            let pass = passphrase(passphrase_file.as_deref(), "passphrase")?;
            let secret = h.unlock(&pass)?;
            let signed = h.sign(&bundle, &review, &secret, env.now())?;
            write_atomic(&out, &signed.to_json()?)?;
            let fingerprint = &h.config().fingerprint;
            emit(
                output,
                &format!("signed with key {fingerprint}; bundle written to {}", out.display()),
                serde_json::json!({
                    "review": review_json(&bundle, &review)?, "signed_by": fingerprint,
                    "signatures": signed.signed_by.len(), "out": out,
                }),
            )?;
        }
        Cmd::Completions { shell } => {
            // Into a buffer first: clap_complete panics on a write error (a closed pipe).
            let mut script = Vec::new();
            let mut cmd = strongroom_cold::cli::command();
            clap_complete::generate(shell, &mut cmd, "strongroom-cold", &mut script);
            std::io::stdout().write_all(&script)?;
        }
    }
    Ok(Exit::Ok)
}

fn read_bundle(path: &Path) -> anyhow::Result<Bundle> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(Bundle::from_json(&bytes)?)
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        // Help and version are not errors; a wrong command line is a usage error (64).
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { Exit::Usage } else { Exit::Ok }.into();
        }
    };
    let env = SystemEnv::new();
    match run(cli.cmd, cli.output, &env) {
        Ok(exit) => exit.into(),
        Err(e) => {
            eprintln!("strongroom-cold: {e:#}");
            Exit::of(&e).into()
        }
    }
}
