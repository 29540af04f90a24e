//! `strongroom governance`: the governance log on files, for admins to set up and change it
//! with their own keys: make a key, write the genesis (members, quorum, whitelist time-lock),
//! propose a change, sign it, commit it once enough members signed, and show the state a
//! signer node would derive. Every command that reads the log replays and verifies all of it.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Subcommand;
use ed25519_dalek::SigningKey;
use strongroom_core::{Env, SystemEnv};
use strongroom_governance::log::{
    replay, Change, Entry, FreezeScope, Genesis, MemberSpec, State, WhitelistScope,
};
use strongroom_governance::policy::Policy;
use strongroom_governance::Role;

#[derive(Debug, Subcommand)]
pub enum GovernanceCommand {
    /// Make an Ed25519 key (a secret file, mode 0600) and print its public key.
    Keygen {
        #[arg(long)]
        out: PathBuf,
    },
    /// Write the genesis: the first members and the admin quorum. Prints the hash every
    /// signer node pins.
    Init {
        #[arg(long)]
        dir: PathBuf,
        /// `ID:PUBLIC_KEY_HEX:ROLE[+ROLE]`, roles: admin, security_officer, approver, operator.
        #[arg(long = "member", required = true)]
        members: Vec<String>,
        #[arg(long)]
        quorum: u8,
        /// How long a new whitelist entry waits before it can be used.
        #[arg(long, default_value_t = 24)]
        whitelist_delay_hours: i64,
    },
    /// Propose a change (one pending at a time), to be signed and committed.
    Propose {
        #[arg(long)]
        dir: PathBuf,
        #[command(subcommand)]
        change: ProposeCommand,
    },
    /// Sign the pending change with a member's key.
    Sign {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        member: String,
        #[arg(long)]
        key: PathBuf,
    },
    /// Append the pending change to the log, if its signatures are enough.
    Commit {
        #[arg(long)]
        dir: PathBuf,
    },
    /// Verify the whole log and print the state in force.
    Show {
        #[arg(long)]
        dir: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub enum ProposeCommand {
    /// Put a policy (TOML) in force.
    Policy {
        #[arg(long)]
        file: PathBuf,
    },
    /// Add an address to a whitelist (usable after the time-lock).
    WhitelistAdd {
        /// `internal` or `customer:ID`.
        #[arg(long)]
        scope: String,
        #[arg(long)]
        chain: String,
        #[arg(long)]
        address: String,
        #[arg(long)]
        label: String,
    },
    /// Remove an address from a whitelist (at once).
    WhitelistRemove {
        #[arg(long)]
        scope: String,
        #[arg(long)]
        chain: String,
        #[arg(long)]
        address: String,
    },
    /// Freeze (`global`, `asset:SYMBOL` or `wallet:ID`): one security officer suffices.
    Freeze {
        #[arg(long)]
        scope: String,
    },
    /// Lift a freeze: needs the quorum.
    Unfreeze {
        #[arg(long)]
        scope: String,
    },
    SetQuorum {
        quorum: u8,
    },
    AddMember {
        /// `ID:PUBLIC_KEY_HEX:ROLE[+ROLE]`.
        member: String,
    },
    RemoveMember {
        id: String,
    },
}

struct Files {
    genesis: PathBuf,
    pin: PathBuf,
    log: PathBuf,
    pending: PathBuf,
}

fn files(dir: &Path) -> Files {
    Files {
        genesis: dir.join("genesis.json"),
        pin: dir.join("genesis.pin"),
        log: dir.join("log.jsonl"),
        pending: dir.join("pending.json"),
    }
}

fn load(dir: &Path, env: &dyn Env) -> anyhow::Result<(State, Vec<Entry>)> {
    let f = files(dir);
    let genesis: Genesis = serde_json::from_slice(
        &std::fs::read(&f.genesis)
            .with_context(|| format!("{}: run `governance init`", f.genesis.display()))?,
    )?;
    let pin = std::fs::read_to_string(&f.pin)?.trim().to_owned();
    let mut entries = Vec::new();
    if f.log.exists() {
        for (n, line) in std::fs::read_to_string(&f.log)?.lines().enumerate() {
            entries.push(
                serde_json::from_str::<Entry>(line)
                    .with_context(|| format!("log line {}", n + 1))?,
            );
        }
    }
    let state = replay(&genesis, &pin, &entries, env.now())
        .context("the governance log does not verify")?;
    Ok((state, entries))
}

fn member(text: &str) -> anyhow::Result<MemberSpec> {
    let mut parts = text.splitn(3, ':');
    let (Some(id), Some(key), Some(roles)) = (parts.next(), parts.next(), parts.next()) else {
        anyhow::bail!("member {text:?}: expected ID:PUBLIC_KEY_HEX:ROLE[+ROLE]");
    };
    let roles = roles
        .split('+')
        .map(|r| {
            serde_json::from_value::<Role>(serde_json::Value::String(r.to_owned()))
                .with_context(|| format!("unknown role {r:?}"))
        })
        .collect::<anyhow::Result<Vec<Role>>>()?;
    Ok(MemberSpec { id: id.to_owned(), public_key: key.to_lowercase(), roles })
}

fn whitelist_scope(scope: &str, chain: &str) -> anyhow::Result<WhitelistScope> {
    strongroom_units::ChainId::parse(chain)?;
    Ok(match scope.split_once(':') {
        None if scope == "internal" => WhitelistScope::Internal { chain: chain.to_owned() },
        Some(("customer", id)) => WhitelistScope::Customer {
            customer_id: uuid::Uuid::parse_str(id)?.to_string(),
            chain: chain.to_owned(),
        },
        _ => anyhow::bail!("scope {scope:?}: expected internal or customer:ID"),
    })
}

fn freeze_scope(scope: &str) -> anyhow::Result<FreezeScope> {
    Ok(match scope.split_once(':') {
        None if scope == "global" => FreezeScope::Global,
        Some(("asset", a)) => FreezeScope::Asset { asset: a.to_owned() },
        Some(("wallet", w)) => FreezeScope::Wallet { wallet: w.to_owned() },
        _ => anyhow::bail!("scope {scope:?}: expected global, asset:SYMBOL or wallet:ID"),
    })
}

fn read_key(path: &Path) -> anyhow::Result<SigningKey> {
    let text = zeroize::Zeroizing::new(
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?,
    );
    let bytes = zeroize::Zeroizing::new(hex::decode(text.trim()).context("key file is not hex")?);
    let secret: [u8; 32] = bytes.as_slice().try_into().context("a key file holds 32 bytes")?;
    Ok(SigningKey::from_bytes(&secret))
}

pub fn run(cmd: GovernanceCommand) -> anyhow::Result<std::process::ExitCode> {
    let env = SystemEnv::new();
    match cmd {
        GovernanceCommand::Keygen { out } => {
            let mut secret = zeroize::Zeroizing::new([0u8; 32]);
            env.fill_random(secret.as_mut());
            let key = SigningKey::from_bytes(&secret);
            crate::write_secret(&out, &hex::encode(secret.as_ref()))?;
            println!("{}", hex::encode(key.verifying_key().to_bytes()));
        }
        GovernanceCommand::Init { dir, members, quorum, whitelist_delay_hours } => {
            let f = files(&dir);
            anyhow::ensure!(
                !f.genesis.exists(),
                "{} exists: a genesis is made once",
                f.genesis.display()
            );
            let genesis = Genesis {
                members: members.iter().map(|m| member(m)).collect::<anyhow::Result<_>>()?,
                quorum,
                whitelist_delay_ms: whitelist_delay_hours
                    .checked_mul(3_600_000)
                    .context("delay too long")?,
                created_at: env.now(),
            };
            let pin = hex::encode(genesis.hash()?);
            // Refuse a genesis that would not replay (a quorum above the admins, a bad key).
            replay(&genesis, &pin, &[], env.now())?;
            std::fs::create_dir_all(&dir)?;
            std::fs::write(&f.genesis, serde_json::to_vec_pretty(&genesis)?)?;
            std::fs::write(&f.pin, format!("{pin}\n"))?;
            println!("genesis written; signer nodes pin {pin}");
        }
        GovernanceCommand::Propose { dir, change } => {
            let (state, _) = load(&dir, &env)?;
            let f = files(&dir);
            anyhow::ensure!(
                !f.pending.exists(),
                "a change is already pending ({})",
                f.pending.display()
            );
            let change = match change {
                ProposeCommand::Policy { file } => Change::SetPolicy {
                    policy: Policy::from_toml(&std::fs::read_to_string(file)?)?,
                },
                ProposeCommand::WhitelistAdd { scope, chain, address, label } => {
                    let scope = whitelist_scope(&scope, &chain)?;
                    let address = strongroom_units::Address::parse(
                        &strongroom_units::ChainId::parse(&chain)?,
                        &address,
                    )?;
                    Change::WhitelistAdd { scope, address: address.as_str().to_owned(), label }
                }
                ProposeCommand::WhitelistRemove { scope, chain, address } => {
                    Change::WhitelistRemove { scope: whitelist_scope(&scope, &chain)?, address }
                }
                ProposeCommand::Freeze { scope } => Change::Freeze { scope: freeze_scope(&scope)? },
                ProposeCommand::Unfreeze { scope } => {
                    Change::Unfreeze { scope: freeze_scope(&scope)? }
                }
                ProposeCommand::SetQuorum { quorum } => Change::SetQuorum { quorum },
                ProposeCommand::AddMember { member: m } => {
                    Change::AddMember { member: member(&m)? }
                }
                ProposeCommand::RemoveMember { id } => Change::RemoveMember { id },
            };
            let entry = state.propose(change, env.now());
            std::fs::write(&f.pending, serde_json::to_vec_pretty(&entry)?)?;
            println!("proposed entry {}; hash {}", entry.seq, hex::encode(entry.hash()?));
        }
        GovernanceCommand::Sign { dir, member, key } => {
            let (state, _) = load(&dir, &env)?;
            let f = files(&dir);
            let mut entry: Entry =
                serde_json::from_slice(&std::fs::read(&f.pending).context("nothing is pending")?)?;
            let key = read_key(&key)?;
            let m =
                state.members.get(&member).with_context(|| format!("{member} is not a member"))?;
            anyhow::ensure!(m.key == key.verifying_key(), "that key is not {member}'s");
            anyhow::ensure!(
                !entry.signoffs.iter().any(|s| s.member == member),
                "{member} has signed already"
            );
            entry.sign(&member, &key)?;
            std::fs::write(&f.pending, serde_json::to_vec_pretty(&entry)?)?;
            println!("{member} signed entry {} ({} signatures)", entry.seq, entry.signoffs.len());
        }
        GovernanceCommand::Commit { dir } => {
            let (_, mut entries) = load(&dir, &env)?;
            let f = files(&dir);
            let entry: Entry =
                serde_json::from_slice(&std::fs::read(&f.pending).context("nothing is pending")?)?;
            entries.push(entry);
            let genesis: Genesis = serde_json::from_slice(&std::fs::read(&f.genesis)?)?;
            let pin = std::fs::read_to_string(&f.pin)?.trim().to_owned();
            replay(&genesis, &pin, &entries, env.now()).context("not committed")?;
            let mut log = std::fs::OpenOptions::new().create(true).append(true).open(&f.log)?;
            use std::io::Write;
            if let Some(e) = entries.last() {
                writeln!(log, "{}", serde_json::to_string(e)?)?;
            }
            log.sync_all()?;
            std::fs::remove_file(&f.pending)?;
            println!("committed entry {}", entries.len());
        }
        GovernanceCommand::Show { dir } => {
            let (state, _) = load(&dir, &env)?;
            println!("entries: {} (head {})", state.seq, state.head);
            println!("quorum: {} admins", state.quorum);
            for m in state.members.values() {
                println!("member {}: {:?}", m.id, m.roles);
            }
            match &state.policy {
                Some(p) => println!(
                    "policy: version {}, {} rules, {} velocity limits",
                    p.version,
                    p.rules.len(),
                    p.velocity.len()
                ),
                None => println!("policy: none"),
            }
            for w in &state.whitelist {
                let when = if w.usable_from <= env.now() {
                    "usable".to_owned()
                } else {
                    format!("usable from {} ms", w.usable_from.unix_ms())
                };
                println!("whitelist {:?} {} ({}): {when}", w.scope, w.address, w.label);
            }
            for fz in &state.freezes {
                println!("frozen: {fz:?}");
            }
        }
    }
    Ok(std::process::ExitCode::SUCCESS)
}
