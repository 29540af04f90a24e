//! `strongroom governance`: the governance log, for admins to set up and change it with
//! their own keys: make a key, write the genesis (members, quorum, whitelist time-lock),
//! install it in the server, propose a change, sign it, and show the state a signer node
//! would derive. With `--dir` the log lives in files (offline); with `--api` on the server,
//! which appends a change once enough members signed it. Every command that reads the log
//! replays and verifies all of it, and `sign` shows what it signs and hashes it itself.
//! `strongroom withdrawal approve` signs an approval of a withdrawal the same way.

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

use crate::client::{at, ApiArgs};
use crate::exit::{Confirm, Exit, Output};

#[derive(Debug, Subcommand)]
pub enum GovernanceCommand {
    /// Make an Ed25519 key (a secret file, mode 0600) and print its public key.
    Keygen {
        /// Where to write the secret key (hex; mode 0600), e.g. ada.key. Keep it off the
        /// server.
        #[arg(long)]
        out: PathBuf,
    },
    /// Write the genesis: the first members and the admin quorum. Prints the hash every
    /// signer node pins.
    Init {
        /// The governance folder to make (genesis.json, genesis.pin; later log.jsonl).
        #[arg(long)]
        dir: PathBuf,
        /// A member: `ID:PUBLIC_KEY_HEX:ROLE[+ROLE]` (the key from `keygen`), roles: admin,
        /// security_officer, approver, operator; repeat for each member.
        #[arg(long = "member", required = true)]
        members: Vec<String>,
        /// How many admins must sign a change (at most the number of admins).
        #[arg(long)]
        quorum: u8,
        /// How long a new whitelist entry waits before it can be used, in hours.
        #[arg(long, default_value_t = 24)]
        whitelist_delay_hours: i64,
        /// The time-lock in seconds instead (for trials and tests).
        #[arg(long, conflicts_with = "whitelist_delay_hours")]
        whitelist_delay_secs: Option<i64>,
        /// An asset the signers may move, usable at once: `CHAIN:SYMBOL:DECIMALS[:CONTRACT]`,
        /// e.g. `eip155:1:ETH:18` or `eip155:1:USDT:6:0xdAC1…`. Signers refuse any asset the
        /// registry does not name.
        #[arg(long = "asset")]
        assets: Vec<String>,
    },
    /// Install the genesis written by `init` in the server (`--api`). The signer nodes pin
    /// the same hash in their own configuration (`strongroom dev --governance DIR`).
    Install {
        /// The governance folder `init` wrote.
        #[arg(long)]
        dir: PathBuf,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Propose a change (one pending at a time), to be signed.
    Propose {
        /// Keep the log in this folder instead of the server.
        #[arg(long)]
        dir: Option<PathBuf>,
        #[command(flatten)]
        api: ApiArgs,
        #[command(subcommand)]
        change: ProposeCommand,
    },
    /// Sign the pending change with a member's key (on the server, the change is appended
    /// to the log once the signatures are enough).
    Sign {
        /// Sign the change pending in this folder instead of the server's (no question is
        /// asked for a file).
        #[arg(long)]
        dir: Option<PathBuf>,
        #[command(flatten)]
        api: ApiArgs,
        /// The member who signs, e.g. ada.
        #[arg(long)]
        member: String,
        /// The member's secret key file (from `keygen`).
        #[arg(long)]
        key: PathBuf,
        /// The genesis hash to verify the server's log against (default: trust on sight).
        #[arg(long)]
        pin: Option<String>,
        /// Sign the server's pending change without asking. Without it, the change is shown
        /// and a question asked on the terminal; with no terminal (a script, a pipe) the
        /// command stops at once.
        #[arg(long)]
        yes: bool,
    },
    /// Append the pending change to the log, if its signatures are enough (files only).
    Commit {
        /// The governance folder holding the pending change.
        #[arg(long)]
        dir: PathBuf,
    },
    /// Drop the pending change (server only).
    Withdraw {
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Push the log straight to the signer nodes, past the orchestrator: a freeze or a
    /// stricter policy reaches the nodes even when the online side withholds it. Each node
    /// verifies every entry against its pinned genesis, tells its peers, and prints its head.
    Push {
        /// The log in this folder (default: the server's, from `--api`).
        #[arg(long)]
        dir: Option<PathBuf>,
        #[command(flatten)]
        api: ApiArgs,
        /// The genesis hash to verify the log against before pushing it.
        #[arg(long)]
        pin: Option<String>,
        /// A node: `ID@HOST:PORT#CERT_SHA256` (repeat for each). Default: the nodes of the
        /// development cluster under `--data-dir`, with its pusher certificate.
        #[arg(long = "node")]
        nodes: Vec<String>,
        /// The client certificate and key the nodes pin as a pusher (`pushers` in their
        /// configuration).
        #[arg(long, requires = "key")]
        cert: Option<PathBuf>,
        /// The key of `--cert` (PEM).
        #[arg(long, requires = "cert")]
        key: Option<PathBuf>,
        /// A dev stack's data folder: its nodes and pusher certificate, when no `--node` is
        /// given.
        #[arg(long, default_value = crate::DEV_DATA_DIR)]
        data_dir: PathBuf,
    },
    /// Verify the whole log and print the state in force.
    Show {
        /// Read the log in this folder instead of the server's.
        #[arg(long)]
        dir: Option<PathBuf>,
        #[command(flatten)]
        api: ApiArgs,
        /// The genesis hash to verify the server's log against.
        #[arg(long)]
        pin: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum WithdrawalCommand {
    /// Ask for a withdrawal as the exchange's backend (or a staff operator) does: sign the
    /// request with a governance member's key (the operator's role) and send it with the
    /// signature. The signer nodes check the withdrawal's intent against it, so a withdrawal
    /// edited after it was signed is refused (`docs/adr/0010-signers-decide.md`).
    Initiate {
        /// The customer's id (a UUID) the withdrawal is for.
        #[arg(long)]
        customer: uuid::Uuid,
        /// The asset's symbol, as the governance registry names it (e.g. ETH).
        #[arg(long)]
        asset: String,
        /// The address paid, e.g. 0x70997970C51812dc3A010C7d01b50e0d17dc79C8.
        #[arg(long)]
        destination: String,
        /// Decimal amount in the asset's units (e.g. 0.1).
        #[arg(long)]
        amount: String,
        /// The initiating member (e.g. the exchange's API client).
        #[arg(long)]
        member: String,
        /// The initiating member's secret key file.
        #[arg(long)]
        key: PathBuf,
        /// The request id, which becomes the withdrawal's id (default: a new one).
        #[arg(long)]
        request_id: Option<uuid::Uuid>,
        /// The genesis hash to verify the server's log against.
        #[arg(long)]
        pin: Option<String>,
        /// Print the signed request (JSON) instead of sending it.
        #[arg(long)]
        print: bool,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Approve a withdrawal: decode its intent, show it, hash it here, sign the approval
    /// with the approver's key and submit it.
    Approve {
        /// The withdrawal's id.
        id: uuid::Uuid,
        #[command(flatten)]
        approver: ApproverArgs,
    },
}

/// Who approves, with which key, for how long, through which API (`withdrawal approve`,
/// `cold refill-approve`).
#[derive(Debug, clap::Args)]
pub struct ApproverArgs {
    /// The approving member, e.g. ann.
    #[arg(long)]
    pub member: String,
    /// The approver's secret key file.
    #[arg(long)]
    pub key: PathBuf,
    /// How long the approval stays valid, in minutes.
    #[arg(long, default_value_t = 60)]
    pub expires_in_minutes: i64,
    /// Approve without asking. Without it, what is approved is shown and a question asked on
    /// the terminal; with no terminal (a script, a pipe) the command stops at once.
    #[arg(long)]
    pub yes: bool,
    #[command(flatten)]
    pub api: ApiArgs,
}

#[derive(Debug, Subcommand)]
pub enum ProposeCommand {
    /// Put a policy (TOML) in force.
    Policy {
        /// The policy file (TOML: version, rules, velocity limits, fee ceilings).
        #[arg(long)]
        file: PathBuf,
    },
    /// Add an address to a whitelist (usable after the time-lock).
    WhitelistAdd {
        /// `internal` or `customer:ID`.
        #[arg(long)]
        scope: String,
        /// The CAIP-2 chain, e.g. eip155:1.
        #[arg(long)]
        chain: String,
        /// The address (checked for the chain, kept in its canonical form).
        #[arg(long)]
        address: String,
        /// A name for people, e.g. "exchange treasury".
        #[arg(long)]
        label: String,
    },
    /// Remove an address from a whitelist (at once).
    WhitelistRemove {
        /// `internal` or `customer:ID`.
        #[arg(long)]
        scope: String,
        /// The CAIP-2 chain, e.g. eip155:1.
        #[arg(long)]
        chain: String,
        /// The address, as it was added.
        #[arg(long)]
        address: String,
    },
    /// Freeze (`global`, `asset:SYMBOL` or `wallet:ID`): one security officer suffices.
    Freeze {
        /// What is frozen: `global`, `asset:SYMBOL` (e.g. asset:ETH) or `wallet:ID`.
        #[arg(long)]
        scope: String,
        /// Time-boxed: the freeze ends by itself after this many minutes, and nobody, not
        /// even the admin quorum, can lift it before (at most 90 days).
        #[arg(long)]
        for_minutes: Option<i64>,
        /// Why: kept in the log with the freeze, for everyone who reads it.
        #[arg(long)]
        reason: Option<String>,
    },
    /// Take a signer node out of the group at once (an incident): every other node refuses
    /// sessions with it and messages from its certificate, and discards presignatures made
    /// with it. One security officer suffices. It is never lifted: a replacement joins under
    /// a new number (`mpc refresh`, then `mpc repair --node NEW`).
    Quarantine {
        /// The node's party number.
        #[arg(long)]
        node: u16,
        /// Why: kept in the log, for everyone who reads it.
        #[arg(long)]
        reason: Option<String>,
    },
    /// Move everything a key holds to a new key (the way out for a threshold ECDSA key, which
    /// cannot be refreshed): the signers then let the old key and its deposit addresses pay
    /// only the new key's address. Needs the quorum. The new key's public key is the one
    /// `strongroom mpc status` reports.
    MigrateKey {
        /// The key being left, e.g. hot-eth-1.
        #[arg(long)]
        from: String,
        /// The new key, e.g. hot-eth-2.
        #[arg(long)]
        to: String,
        /// The new key's public key (hex).
        #[arg(long)]
        public_key: String,
    },
    /// Retire a key: the signers never use it again. One admin, at once.
    RetireKey {
        /// The key, e.g. hot-eth-1.
        #[arg(long)]
        key: String,
    },
    /// Lift a freeze: needs the quorum.
    Unfreeze {
        /// The frozen scope, as it was frozen: `global`, `asset:SYMBOL` or `wallet:ID`.
        #[arg(long)]
        scope: String,
    },
    /// Change how many admins must sign a change (needs the current quorum).
    SetQuorum {
        /// The new quorum, at most the number of admins.
        quorum: u8,
    },
    /// Add a member (needs the quorum).
    AddMember {
        /// `ID:PUBLIC_KEY_HEX:ROLE[+ROLE]`, as for `init --member`.
        member: String,
    },
    /// Remove a member (needs the quorum; the quorum must stay reachable).
    RemoveMember {
        /// The member's id, e.g. cy.
        id: String,
    },
    /// Register the passkey a member approves withdrawals with: the JSON from
    /// `GET /v1/me/passkeys/{id}/governance-key` (the member's console gives it). The admin
    /// quorum and the member themselves sign it: only the member can say the key is theirs.
    SetPasskey {
        /// The member whose passkey it is.
        #[arg(long)]
        member: String,
        /// The JSON file from the console.
        #[arg(long)]
        file: PathBuf,
    },
    /// Cancel a whitelist addition still in its time-lock (the entry number that added it).
    CancelPending {
        /// The number of the log entry that added it (`governance show` lists the entries).
        seq: u64,
    },
    /// Register an asset the signers may move (usable after the time-lock).
    AssetAdd {
        /// `CHAIN:SYMBOL:DECIMALS[:CONTRACT]`, as for `init --asset`.
        asset: String,
    },
    /// Take an asset off the registry (at once; one admin suffices).
    AssetRemove {
        /// The CAIP-2 chain, e.g. eip155:1.
        #[arg(long)]
        chain: String,
        /// The asset's symbol, e.g. USDT.
        #[arg(long)]
        symbol: String,
    },
    /// Credit a customer without chain evidence (a correction): once committed, an
    /// operator credits it with `POST /v1/deposits` and `"adjustment": ENTRY`.
    LedgerCredit {
        /// The customer's id (a UUID).
        #[arg(long)]
        customer: uuid::Uuid,
        /// The asset's symbol, e.g. ETH.
        #[arg(long)]
        asset: String,
        /// In base units (wei, satoshi).
        #[arg(long)]
        amount: String,
        /// Why, for the auditors: a ticket or incident number.
        #[arg(long)]
        reference: String,
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

/// An intent in one line, for the person about to approve it.
pub(crate) fn describe_intent(intent: &strongroom_core::Intent) -> String {
    format!(
        "{} {} ({} base units) on {} from {} to {}; network fee at most {} base units",
        intent.amount.format_decimal(intent.asset.decimals).unwrap_or_default(),
        intent.asset.symbol,
        intent.amount,
        intent.chain,
        intent.source_wallet.as_str(),
        intent.destination,
        intent.fee_cap,
    )
}

pub(crate) fn load(dir: &Path, env: &dyn Env) -> anyhow::Result<(State, Vec<Entry>)> {
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
    Ok(MemberSpec { id: id.to_owned(), public_key: key.to_lowercase(), roles, passkey: None })
}

/// `CHAIN:SYMBOL:DECIMALS[:CONTRACT]`, the chain a CAIP-2 id (`namespace:reference`); the
/// contract is checked (and written canonically) for the chain.
fn asset(text: &str) -> anyhow::Result<strongroom_governance::log::AssetSpec> {
    let parts: Vec<&str> = text.split(':').collect();
    let [ns, reference, symbol, decimals, contract @ ..] = parts.as_slice() else {
        anyhow::bail!("asset {text:?}: expected CHAIN:SYMBOL:DECIMALS[:CONTRACT]");
    };
    anyhow::ensure!(contract.len() <= 1, "asset {text:?}: too many parts");
    let chain = strongroom_units::ChainId::parse(&format!("{ns}:{reference}"))?;
    let symbol = strongroom_units::AssetSymbol::parse(symbol)?;
    let decimals: u8 = decimals.parse().with_context(|| format!("asset {text:?}: decimals"))?;
    let contract = contract
        .first()
        .map(|c| strongroom_units::Address::parse(&chain, c).map(|a| a.as_str().to_owned()))
        .transpose()?;
    Ok(strongroom_governance::log::AssetSpec {
        chain: chain.as_str().to_owned(),
        symbol: symbol.as_str().to_owned(),
        decimals,
        contract,
    })
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

pub(crate) fn read_key(path: &Path) -> anyhow::Result<SigningKey> {
    let text = zeroize::Zeroizing::new(
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?,
    );
    let bytes = zeroize::Zeroizing::new(hex::decode(text.trim()).context("key file is not hex")?);
    let secret: [u8; 32] = bytes.as_slice().try_into().context("a key file holds 32 bytes")?;
    Ok(SigningKey::from_bytes(&secret))
}

fn change_of(change: ProposeCommand, now: strongroom_core::Timestamp) -> anyhow::Result<Change> {
    Ok(match change {
        ProposeCommand::Policy { file } => Change::SetPolicy {
            policy: Policy::from_toml(
                &std::fs::read_to_string(&file)
                    .with_context(|| format!("reading {}", file.display()))?,
            )?,
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
        ProposeCommand::Freeze { scope, for_minutes: None, reason } => {
            Change::Freeze { scope: freeze_scope(&scope)?, reason }
        }
        ProposeCommand::Freeze { scope, for_minutes: Some(m), reason } => Change::FreezeUntil {
            scope: freeze_scope(&scope)?,
            reason,
            until: now.plus_ms(m.checked_mul(60_000).context("--for-minutes is too long")?),
        },
        ProposeCommand::Unfreeze { scope } => Change::Unfreeze { scope: freeze_scope(&scope)? },
        ProposeCommand::Quarantine { node, reason } => Change::QuarantineNode { node, reason },
        ProposeCommand::MigrateKey { from, to, public_key } => {
            Change::MigrateKey { from, to, to_public_key: public_key.to_lowercase() }
        }
        ProposeCommand::RetireKey { key } => Change::RetireKey { key },
        ProposeCommand::SetQuorum { quorum } => Change::SetQuorum { quorum },
        ProposeCommand::AddMember { member: m } => Change::AddMember { member: member(&m)? },
        ProposeCommand::RemoveMember { id } => Change::RemoveMember { id },
        ProposeCommand::SetPasskey { member, file } => {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("reading {}", file.display()))?;
            let passkey: strongroom_governance::webauthn::PasskeySpec =
                serde_json::from_str(&text).with_context(|| format!("{}", file.display()))?;
            strongroom_governance::webauthn::Passkey::parse(&passkey)
                .map_err(anyhow::Error::msg)?;
            Change::SetPasskey { id: member, passkey }
        }
        ProposeCommand::CancelPending { seq } => Change::CancelPending { seq },
        ProposeCommand::AssetAdd { asset: a } => Change::AssetAdd { asset: asset(&a)? },
        ProposeCommand::LedgerCredit { customer, asset, amount, reference } => {
            Change::LedgerCredit {
                customer_id: customer.to_string(),
                asset: strongroom_units::AssetSymbol::parse(&asset)?.as_str().to_owned(),
                amount: strongroom_units::Amount::from_base_units(
                    amount.parse().with_context(|| format!("amount {amount:?}: base units"))?,
                )?,
                reference,
            }
        }
        ProposeCommand::AssetRemove { chain, symbol } => {
            strongroom_units::ChainId::parse(&chain)?;
            Change::AssetRemove { chain, symbol }
        }
    })
}

/// The server's log, verified here: the genesis against `pin` (when given) and every entry.
pub(crate) async fn load_api(
    api: &crate::client::Api,
    pin: Option<&str>,
    env: &dyn Env,
) -> anyhow::Result<(State, serde_json::Value)> {
    let v = api.get("/v1/governance").await?;
    anyhow::ensure!(
        at(&v, "/installed").as_bool() == Some(true),
        "no governance genesis is installed on the server (`governance install`)"
    );
    let genesis: Genesis = serde_json::from_value(at(&v, "/genesis").clone())?;
    let entries: Vec<Entry> = serde_json::from_value(at(&v, "/entries").clone())?;
    let server_pin = at(&v, "/pin").as_str().unwrap_or_default().to_owned();
    if let Some(p) = pin {
        anyhow::ensure!(
            p.eq_ignore_ascii_case(&server_pin),
            "the server's governance genesis is {server_pin}, not the pinned {p}"
        );
    }
    let state = replay(&genesis, &server_pin, &entries, env.now())
        .context("the server's governance log does not verify")?;
    Ok((state, v))
}

/// How far from now a proposal's time may be when a member signs it. The time-lock of a
/// whitelist entry runs from that time, so an old one would shorten it.
const MAX_PROPOSAL_AGE_MS: i64 = 3_600_000;

/// A time as RFC 3339 in UTC.
fn rfc3339(t: strongroom_core::Timestamp) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(
        i128::from(t.unix_ms()).saturating_mul(1_000_000),
    )
    .ok()
    .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
    .unwrap_or_else(|| format!("{} ms after the Unix epoch", t.unix_ms()))
}

/// A time for people: RFC 3339 in UTC, and how far from `now`.
fn when(t: strongroom_core::Timestamp, now: strongroom_core::Timestamp) -> String {
    let at = rfc3339(t);
    let secs = (t.unix_ms() - now.unix_ms()) / 1000;
    let span = |s: i64| match s {
        s if s >= 86_400 => format!("{}d {}h", s / 86_400, s % 86_400 / 3_600),
        s if s >= 3_600 => format!("{}h {}m", s / 3_600, s % 3_600 / 60),
        s if s >= 60 => format!("{}m {}s", s / 60, s % 60),
        s => format!("{s}s"),
    };
    if secs >= 0 {
        format!("{at} (in {})", span(secs))
    } else {
        format!("{at} ({} ago)", span(-secs))
    }
}

fn print_state(state: &State, now: strongroom_core::Timestamp) {
    println!("entries: {} (head {})", state.seq, state.head);
    println!("quorum: {} admins", state.quorum);
    for m in state.members.values() {
        let roles: Vec<&str> = m.roles.iter().map(|r| r.as_str()).collect();
        println!("member {}: {}", m.id, roles.join(", "));
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
        let usable = if w.usable_from <= now {
            "usable".to_owned()
        } else {
            format!("usable from {}", when(w.usable_from, now))
        };
        println!("whitelist ({}) {} ({}): {usable}", w.scope, w.address, w.label);
    }
    for a in &state.assets {
        let usable = if a.usable_from <= now {
            "usable".to_owned()
        } else {
            format!("usable from {}", when(a.usable_from, now))
        };
        let contract = a.spec.contract.as_deref().unwrap_or("native");
        println!(
            "asset {} on {} ({contract}, {} decimals): {usable}",
            a.spec.symbol, a.spec.chain, a.spec.decimals
        );
    }
    for fz in &state.freezes {
        println!("frozen: {fz}");
    }
    for (fz, until) in state.frozen_until.iter().filter(|(_, u)| **u > now) {
        println!("frozen: {fz} until {} (cannot be lifted before)", when(*until, now));
    }
}

/// The state in force as JSON (`governance show --output json`): times as Unix
/// milliseconds and RFC 3339, scopes as `governance show` words them.
fn state_json(state: &State, now: strongroom_core::Timestamp) -> anyhow::Result<serde_json::Value> {
    use serde_json::json;
    let time = |t: strongroom_core::Timestamp| json!({ "unix_ms": t.unix_ms(), "utc": rfc3339(t) });
    let members: Vec<_> = state
        .members
        .values()
        .map(|m| {
            json!({
                "id": m.id,
                "roles": m.roles.iter().map(|r| r.as_str()).collect::<Vec<_>>(),
                "public_key": hex::encode(m.key.to_bytes()),
                "passkey": m.passkey.is_some(),
            })
        })
        .collect();
    let whitelist: Vec<_> = state
        .whitelist
        .iter()
        .map(|w| {
            json!({
                "scope": w.scope.to_string(), "address": w.address, "label": w.label,
                "entry": w.seq, "usable_from": time(w.usable_from), "usable": w.usable_from <= now,
            })
        })
        .collect();
    let assets: Vec<_> = state
        .assets
        .iter()
        .map(|a| {
            json!({
                "chain": a.spec.chain, "symbol": a.spec.symbol, "decimals": a.spec.decimals,
                "contract": a.spec.contract, "usable_from": time(a.usable_from),
                "usable": a.usable_from <= now,
            })
        })
        .collect();
    let frozen_until: Vec<_> = state
        .frozen_until
        .iter()
        .filter(|(_, u)| **u > now)
        .map(|(fz, until)| json!({ "scope": fz.to_string(), "until": time(*until) }))
        .collect();
    let quarantined: Vec<_> =
        state.quarantined.iter().map(|(node, seq)| json!({ "node": node, "entry": seq })).collect();
    let migrations: Vec<_> = state
        .migrations
        .iter()
        .map(|(from, m)| {
            json!({ "from": from, "to": m.to, "to_public_key": m.to_public_key, "entry": m.seq })
        })
        .collect();
    let retired: Vec<_> =
        state.retired.iter().map(|(key, seq)| json!({ "key": key, "entry": seq })).collect();
    Ok(json!({
        "entries": state.seq,
        "head": state.head,
        "at": time(state.at),
        "quorum": state.quorum,
        "whitelist_delay_ms": state.whitelist_delay_ms,
        "members": members,
        "policy": state.policy.as_ref().map(serde_json::to_value).transpose()?,
        "whitelist": whitelist,
        "assets": assets,
        "freezes": state.freezes.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "frozen_until": frozen_until,
        "quarantined": quarantined,
        "migrations": migrations,
        "retired": retired,
    }))
}

/// The pending change, beside the state in force.
fn add_pending(doc: &mut serde_json::Value, pending: serde_json::Value) {
    if let Some(fields) = doc.as_object_mut() {
        fields.insert("pending".into(), pending);
    }
}

pub async fn run(cmd: GovernanceCommand, output: Output) -> anyhow::Result<Exit> {
    let env = SystemEnv::new();
    let json = output.is_json();
    match cmd {
        GovernanceCommand::Keygen { out } => {
            let mut secret = zeroize::Zeroizing::new([0u8; 32]);
            env.fill_random(secret.as_mut());
            let key = SigningKey::from_bytes(&secret);
            crate::write_secret(&out, &hex::encode(secret.as_slice()))?;
            let public = hex::encode(key.verifying_key().to_bytes());
            output.print(&public, serde_json::json!({ "public_key": public, "key_file": out }))?;
        }
        GovernanceCommand::Init {
            dir,
            members,
            quorum,
            whitelist_delay_hours,
            whitelist_delay_secs,
            assets,
        } => {
            let f = files(&dir);
            anyhow::ensure!(
                !f.genesis.exists(),
                "{} exists: a genesis is made once",
                f.genesis.display()
            );
            let delay_ms = match whitelist_delay_secs {
                Some(secs) => secs.checked_mul(1000),
                None => whitelist_delay_hours.checked_mul(3_600_000),
            };
            let genesis = Genesis {
                members: members.iter().map(|m| member(m)).collect::<anyhow::Result<_>>()?,
                quorum,
                whitelist_delay_ms: delay_ms.context("delay too long")?,
                created_at: env.now(),
                assets: assets.iter().map(|a| asset(a)).collect::<anyhow::Result<_>>()?,
            };
            let pin = hex::encode(genesis.hash()?);
            // Refuse a genesis that would not replay (a quorum above the admins, a bad key).
            replay(&genesis, &pin, &[], env.now())?;
            std::fs::create_dir_all(&dir)?;
            std::fs::write(&f.genesis, serde_json::to_vec_pretty(&genesis)?)?;
            std::fs::write(&f.pin, format!("{pin}\n"))?;
            output.print(
                &format!("genesis written; signer nodes pin {pin}"),
                serde_json::json!({ "pin": pin, "dir": dir }),
            )?;
        }
        GovernanceCommand::Install { dir, api } => {
            let f = files(&dir);
            let genesis: Genesis = serde_json::from_slice(&std::fs::read(&f.genesis)?)?;
            let pin = std::fs::read_to_string(&f.pin)?.trim().to_owned();
            replay(&genesis, &pin, &[], env.now()).context("the genesis does not match its pin")?;
            let v = api
                .connect()?
                .post(
                    "/v1/governance/genesis",
                    &serde_json::json!({ "genesis": genesis, "pin": pin }),
                )
                .await?;
            let members = at(&v, "/members").as_array().map_or(0, Vec::len);
            output.print(
                &format!(
                    "genesis {pin} installed: {members} members, quorum {}",
                    at(&v, "/quorum")
                ),
                serde_json::json!({ "pin": pin, "members": members, "quorum": at(&v, "/quorum") }),
            )?;
        }
        GovernanceCommand::Propose { dir: Some(dir), change, .. } => {
            let (state, _) = load(&dir, &env)?;
            let f = files(&dir);
            anyhow::ensure!(
                !f.pending.exists(),
                "a change is already pending ({})",
                f.pending.display()
            );
            let entry = state.propose(change_of(change, env.now())?, env.now());
            std::fs::write(&f.pending, serde_json::to_vec_pretty(&entry)?)?;
            let hash = hex::encode(entry.hash()?);
            output.print(
                &format!("proposed entry {}; hash {hash}", entry.seq),
                serde_json::json!({ "entry": entry.seq, "hash": hash }),
            )?;
        }
        GovernanceCommand::Propose { dir: None, api, change } => {
            let change = change_of(change, env.now())?;
            let v = api
                .connect()?
                .post("/v1/governance/proposals", &serde_json::json!({ "change": change }))
                .await?;
            let hash = at(&v, "/hash").as_str().unwrap_or_default();
            output.print(
                &format!("proposed entry {}; hash {hash}", at(&v, "/seq")),
                serde_json::json!({ "entry": at(&v, "/seq"), "hash": hash }),
            )?;
        }
        GovernanceCommand::Sign { dir: Some(dir), member, key, .. } => {
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
            output.print(
                &format!(
                    "{member} signed entry {} ({} signatures)",
                    entry.seq,
                    entry.signoffs.len()
                ),
                serde_json::json!({
                    "member": member, "entry": entry.seq, "signed": true,
                    "signatures": entry.signoffs.len(),
                }),
            )?;
        }
        GovernanceCommand::Sign { dir: None, api, member, key, pin, yes } => {
            let confirm = Confirm::new(yes, "governance sign")?;
            let api = api.connect()?;
            let (state, v) = load_api(&api, pin.as_deref(), &env).await?;
            let entry: Entry = serde_json::from_value(at(&v, "/proposal/entry").clone())
                .context("nothing is pending on the server")?;
            // What is signed is what this tool computes, never what the server says.
            anyhow::ensure!(
                entry.seq == state.seq + 1 && entry.prev == state.head,
                "the proposal does not follow the verified log"
            );
            let now = env.now().unix_ms();
            let age = now.saturating_sub(entry.at.unix_ms());
            anyhow::ensure!(
                (-300_000..=MAX_PROPOSAL_AGE_MS).contains(&age),
                "the proposal is dated {} ms from now; re-propose it (an old date would shorten a whitelist time-lock)",
                -age
            );
            let key = read_key(&key)?;
            let m =
                state.members.get(&member).with_context(|| format!("{member} is not a member"))?;
            anyhow::ensure!(m.key == key.verifying_key(), "that key is not {member}'s");
            let hash = entry.hash()?;
            output.say(&format!("entry {} (after {}):", entry.seq, entry.prev));
            output.say(&serde_json::to_string_pretty(&entry.change)?);
            output.say(&format!("hash {}", hex::encode(hash)));
            if !confirm.ask("sign this change?")? {
                output.print(
                    "not signed",
                    serde_json::json!({ "member": member, "entry": entry.seq, "signed": false }),
                )?;
                return Ok(Exit::Problem);
            }
            use ed25519_dalek::Signer;
            let sig = key.sign(&hash);
            let r = api
                .post(
                    &format!("/v1/governance/proposals/{}/signoffs", entry.seq),
                    &serde_json::json!({ "member": member, "signature": hex::encode(sig.to_bytes()) }),
                )
                .await?;
            let committed = at(&r, "/committed").as_bool() == Some(true);
            let missing = at(&r, "/governance/proposal/missing").as_str().unwrap_or_default();
            output.print(
                &if committed {
                    format!("{member} signed entry {}: committed", entry.seq)
                } else {
                    format!("{member} signed entry {}: waiting ({missing})", entry.seq)
                },
                serde_json::json!({
                    "member": member, "entry": entry.seq, "signed": true,
                    "committed": committed, "missing": (!committed).then_some(missing),
                }),
            )?;
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
            output.print(
                &format!("committed entry {}", entries.len()),
                serde_json::json!({ "entry": entries.len() }),
            )?;
        }
        GovernanceCommand::Withdraw { api } => {
            let api = api.connect()?;
            let v = api.get("/v1/governance").await?;
            let seq = at(&v, "/proposal/seq").as_u64().context("nothing is pending")?;
            api.post(&format!("/v1/governance/proposals/{seq}/withdraw"), &serde_json::json!({}))
                .await?;
            output.print(
                &format!("withdrew entry {seq}"),
                serde_json::json!({ "entry": seq, "withdrawn": true }),
            )?;
        }
        GovernanceCommand::Push { dir, api, pin, nodes, cert, key, data_dir } => {
            let entries = match dir {
                Some(dir) => load(&dir, &env)?.1,
                None => {
                    let (_, v) = load_api(&api.connect()?, pin.as_deref(), &env).await?;
                    serde_json::from_value(at(&v, "/entries").clone())?
                }
            };
            let client = crate::signers::pusher(&crate::absolute(&data_dir)?, &nodes, cert, key)?;
            let mut failed = false;
            let pushed = client.push_governance(&entries, std::time::Duration::from_secs(10)).await;
            let mut nodes = Vec::new();
            for (node, r) in pushed {
                match r {
                    Ok(head) => {
                        if !json {
                            println!("node {node}: {} entries, head {}", head.seq, head.hash);
                        }
                        nodes.push(serde_json::json!({
                            "node": node, "entries": head.seq, "head": head.hash,
                        }));
                    }
                    Err(e) => {
                        failed = true;
                        if !json {
                            println!("node {node}: refused: {e}");
                        }
                        nodes.push(serde_json::json!({ "node": node, "refused": e.to_string() }));
                    }
                }
            }
            if json {
                Output::print_json(&serde_json::json!({ "accepted": !failed, "nodes": nodes }))?;
            }
            if failed {
                return Ok(Exit::Problem);
            }
        }
        GovernanceCommand::Show { dir: Some(dir), .. } => {
            let (state, _) = load(&dir, &env)?;
            let pending = files(&dir).pending;
            if json {
                let mut doc = state_json(&state, env.now())?;
                if let Ok(bytes) = std::fs::read(&pending) {
                    let entry: Entry = serde_json::from_slice(&bytes)
                        .with_context(|| format!("{}", pending.display()))?;
                    let signed_by: Vec<&str> =
                        entry.signoffs.iter().map(|s| s.member.as_str()).collect();
                    add_pending(
                        &mut doc,
                        serde_json::json!({
                            "entry": entry.seq, "change": entry.change,
                            "signed_by": signed_by,
                        }),
                    );
                }
                Output::print_json(&doc)?;
            } else {
                print_state(&state, env.now());
            }
        }
        GovernanceCommand::Show { dir: None, api, pin } => {
            let (state, v) = load_api(&api.connect()?, pin.as_deref(), &env).await?;
            let pending = at(&v, "/proposal/seq").as_u64();
            let missing = at(&v, "/proposal/missing").as_str().unwrap_or_default();
            if json {
                let mut doc = state_json(&state, env.now())?;
                if let Some(seq) = pending {
                    add_pending(
                        &mut doc,
                        serde_json::json!({
                            "entry": seq, "change": at(&v, "/proposal/entry/change"),
                            "missing": missing,
                        }),
                    );
                }
                Output::print_json(&doc)?;
            } else {
                print_state(&state, env.now());
                if let Some(seq) = pending {
                    println!("pending: entry {seq} ({missing})");
                }
            }
        }
    }
    Ok(Exit::Ok)
}

/// `strongroom withdrawal …`.
pub async fn withdrawal(cmd: WithdrawalCommand, output: Output) -> anyhow::Result<Exit> {
    let env = SystemEnv::new();
    match cmd {
        WithdrawalCommand::Initiate {
            customer,
            asset,
            destination,
            amount,
            member,
            key,
            request_id,
            pin,
            print,
            api,
        } => {
            use strongroom_governance::initiation::{Initiation, Requested};
            let api = api.connect()?;
            let (state, _) = load_api(&api, pin.as_deref(), &env).await?;
            let mut named = state.assets.iter().filter(|a| a.spec.symbol == asset);
            let spec = match (named.next(), named.next()) {
                (Some(a), None) => a.spec.clone(),
                (None, _) => anyhow::bail!("the governance registry names no asset {asset}"),
                (Some(_), Some(_)) => {
                    anyhow::bail!("the registry names {asset} on several chains: not supported yet")
                }
            };
            let base = strongroom_units::Amount::parse_decimal(&amount, spec.decimals)
                .map_err(|e| anyhow::anyhow!("amount {amount:?}: {e}"))?;
            let request_id = match request_id {
                Some(id) => id,
                None => {
                    let mut b = [0u8; 16];
                    env.fill_random(&mut b);
                    uuid::Builder::from_random_bytes(b).into_uuid()
                }
            };
            let requested = Requested {
                request_id,
                chain: spec.chain.clone(),
                asset: spec.symbol.clone(),
                contract: spec.contract.clone(),
                destination: destination.clone(),
                amount: base,
                customer_id: Some(customer.to_string()),
            };
            let initiation = Initiation::sign(&member, &read_key(&key)?, requested)?;
            if print {
                // JSON already, in either output.
                println!("{}", serde_json::to_string_pretty(&initiation)?);
                return Ok(Exit::Ok);
            }
            let body = serde_json::json!({
                "customer_id": customer, "asset": asset, "destination": destination,
                "amount": amount, "initiation": initiation,
            });
            let w = api.post("/v1/withdrawals", &body).await?;
            // The server's withdrawal: JSON in either output (one line in text).
            output.print(&serde_json::to_string(&w)?, w)?;
        }
        WithdrawalCommand::Approve {
            id,
            approver: ApproverArgs { member, key, expires_in_minutes, yes, api },
        } => {
            let confirm = Confirm::new(yes, "withdrawal approve")?;
            let api = api.connect()?;
            let w = api.get(&format!("/v1/withdrawals/{id}")).await?;
            let (state, _) = load_api(&api, None, &env).await?;
            let policy = state.policy.as_ref().context("no policy is in force")?;
            let (intent, hash) = served_intent(&w, &state, &env)?;
            output.say(&format!("withdrawal {id}"));
            output.say(&format!("  {}", describe_intent(&intent)));
            output.say(&format!(
                "  asset {} as the governance registry names it on {}",
                intent.asset.symbol.as_str(),
                intent.chain.as_str()
            ));
            output.say(&format!("  intent hash {}", hash.to_hex()));
            if !confirm.ask("approve this withdrawal?")? {
                output.print(
                    "not approved",
                    serde_json::json!({ "withdrawal": id, "member": member, "approved": false }),
                )?;
                return Ok(Exit::Problem);
            }
            let path = format!("/v1/withdrawals/{id}/approvals");
            let minutes = expires_in_minutes;
            send_approval(&api, &path, &member, &key, &hash, policy.version, minutes, &env).await?;
            let w = api.get(&format!("/v1/withdrawals/{id}")).await?;
            let now =
                at(&w, "/policy/explanation").as_str().unwrap_or("no longer waiting for approval");
            output.print(
                &format!("{member} approved under policy v{}; now: {now}", policy.version),
                serde_json::json!({
                    "withdrawal": id, "member": member, "approved": true,
                    "intent_hash": hash.to_hex(), "policy_version": policy.version,
                    "status": at(&w, "/status"), "now": now,
                }),
            )?;
        }
    }
    Ok(Exit::Ok)
}

/// The intent an API record carries (`/intent`: hex of its canonical encoding), refused
/// unless it hashes to the record's own `/intent_hash` here, and unless what moves is what the
/// governance registry names at the intent's contract (a contract it does not name, or names
/// otherwise, is not approved).
pub(crate) fn served_intent(
    record: &serde_json::Value,
    state: &State,
    env: &dyn Env,
) -> anyhow::Result<(strongroom_core::Intent, strongroom_core::IntentHash)> {
    let encoded = hex::decode(at(record, "/intent").as_str().unwrap_or_default())
        .context("the server sent no intent")?;
    let intent = strongroom_core::Intent::decode(&encoded)?;
    let hash = intent.hash()?;
    anyhow::ensure!(
        at(record, "/intent_hash").as_str() == Some(hash.to_hex().as_str()),
        "the server's intent hash is not the hash of its intent: refusing"
    );
    strongroom_governance::gate::asset(state, &intent, env.now())
        .map_err(|why| anyhow::anyhow!("refusing to approve: {why}"))?;
    Ok((intent, hash))
}

/// Sign an approval of `hash` as `member` with the key in the file `key`, under
/// `policy_version`, valid for `minutes`, and POST it to `path`; the server's answer.
#[allow(clippy::too_many_arguments)] // The approval's fields, each named where it is called.
pub(crate) async fn send_approval(
    api: &crate::client::Api,
    path: &str,
    member: &str,
    key: &Path,
    hash: &strongroom_core::IntentHash,
    policy_version: u64,
    minutes: i64,
    env: &dyn Env,
) -> anyhow::Result<serde_json::Value> {
    let key = read_key(key)?;
    let expires = env.now().plus_ms(minutes.saturating_mul(60_000));
    let a = strongroom_governance::approval::Approval::sign(
        member,
        &key,
        hash,
        policy_version,
        expires,
    );
    api.post(
        path,
        &serde_json::json!({
            "approver": member, "intent_hash": a.intent_hash, "policy_version": a.policy_version,
            "expires_at_ms": expires.unix_ms(), "signature": a.signature,
        }),
    )
    .await
}

/// The genesis the dev stack's signer nodes pin: `DATA/governance/genesis.{json,pin}`, copied
/// there from `from` (a folder made by `governance init`) on first use. A dev stack never
/// changes its pin: another genesis later is refused.
pub fn dev_pin(
    data_dir: &Path,
    from: Option<&Path>,
) -> anyhow::Result<Option<(PathBuf, String, Genesis)>> {
    let here = files(&data_dir.join("governance"));
    let read = |f: &Files| -> anyhow::Result<(Genesis, String)> {
        let genesis: Genesis = serde_json::from_slice(
            &std::fs::read(&f.genesis)
                .with_context(|| format!("reading {}", f.genesis.display()))?,
        )?;
        let pin = std::fs::read_to_string(&f.pin)
            .with_context(|| format!("reading {}", f.pin.display()))?
            .trim()
            .to_lowercase();
        anyhow::ensure!(
            hex::encode(genesis.hash()?) == pin,
            "{} does not hash to {}",
            f.genesis.display(),
            f.pin.display()
        );
        Ok((genesis, pin))
    };
    let pinned = if here.pin.exists() { Some(read(&here)?) } else { None };
    match (from, pinned) {
        (None, None) => Ok(None),
        (None, Some((g, pin))) => Ok(Some((here.genesis, pin, g))),
        (Some(dir), pinned) => {
            let (g, pin) = read(&files(dir))?;
            if let Some((_, old)) = pinned {
                anyhow::ensure!(
                    old == pin,
                    "this dev stack's signer nodes pin governance genesis {old}; it cannot change to {pin}"
                );
            } else {
                std::fs::create_dir_all(data_dir.join("governance"))?;
                std::fs::write(&here.genesis, serde_json::to_vec_pretty(&g)?)?;
                std::fs::write(&here.pin, format!("{pin}\n"))?;
            }
            Ok(Some((here.genesis, pin, g)))
        }
    }
}

/// The members of the dev genesis and their roles.
const DEV_MEMBERS: [(&str, Role); 7] = [
    ("ada", Role::Admin),
    ("bob", Role::Admin),
    ("cy", Role::Admin),
    ("ann", Role::Approver),
    ("al", Role::Approver),
    ("sec", Role::SecurityOfficer),
    // The exchange's backend: its API client key signs withdrawal requests.
    ("exchange", Role::Operator),
];

/// The dev genesis's starter policy: moves within custody and up to 100 units (in base
/// units: 100 ETH) sign at once, larger ones need two approvers; fees up to 0.1 ETH and 0.01
/// BTC; proofs of control allowed.
pub const DEV_POLICY: &str = r#"
version = 1
messages = ["proof_of_control"]
[[rules]]
name = "internal"
when = { destinations = ["internal"] }
action = { kind = "allow" }
[[rules]]
name = "up-to-100"
when = { max_amount = "100000000000000000000" }
action = { kind = "allow" }
[[rules]]
name = "larger"
action = { kind = "approvals", count = 2, roles = ["approver"] }
[[fees]]
chain = "eip155:31337"
fee_asset = "ETH"
max_fee = "100000000000000000"
[[fees]]
chain = "bip122:0f9188f13cb7b2c71f2a335e3a4fc328"
fee_asset = "BTC"
max_fee = "1000000"
"#;

/// Where the dev genesis keeps its members' keys (dev only: whoever reads the folder holds
/// every governance key, so the dev stack governs itself).
pub fn dev_keys(data_dir: &Path) -> PathBuf {
    data_dir.join("governance").join("keys")
}

/// On a dev stack with no governance yet: make the dev genesis (members ada, bob and cy
/// admins with a quorum of two, ann and al approvers, sec a security officer, exchange the
/// exchange backend's API client, an operator; ETH, the dev USDT and regtest BTC
/// registered) with its keys in [`dev_keys`], and the starter policy signed by two
/// admins. Returns the entries to install; nothing when a genesis is pinned already.
pub fn make_dev_genesis(
    data_dir: &Path,
    env: &dyn Env,
    delay_secs: u64,
) -> anyhow::Result<Vec<Entry>> {
    let here = files(&data_dir.join("governance"));
    if here.pin.exists() {
        return Ok(Vec::new());
    }
    let keys = dev_keys(data_dir);
    std::fs::create_dir_all(&keys)?;
    let mut members = Vec::new();
    let mut signers = Vec::new();
    for (id, role) in DEV_MEMBERS {
        let mut secret = zeroize::Zeroizing::new([0u8; 32]);
        env.fill_random(secret.as_mut());
        let key = SigningKey::from_bytes(&secret);
        crate::write_secret(&keys.join(format!("{id}.key")), &hex::encode(secret.as_slice()))?;
        let public = hex::encode(key.verifying_key().to_bytes());
        std::fs::write(keys.join(format!("{id}.pub")), format!("{public}\n"))?;
        members.push(MemberSpec {
            id: id.into(),
            public_key: public,
            roles: vec![role],
            passkey: None,
        });
        signers.push((id, key));
    }
    let chain = crate::chain::DEV_CHAIN.to_owned();
    let asset =
        |symbol: &str, decimals, contract: Option<&str>| strongroom_governance::log::AssetSpec {
            chain: chain.clone(),
            symbol: symbol.into(),
            decimals,
            contract: contract.map(str::to_owned),
        };
    let now = env.now();
    let genesis = Genesis {
        members,
        quorum: 2,
        whitelist_delay_ms: i64::try_from(delay_secs.saturating_mul(1000)).unwrap_or(i64::MAX),
        created_at: now,
        assets: vec![
            asset("ETH", 18, None),
            asset("USDT", 6, Some(strongroom_units::chain::DEV_TOKEN_CONTRACT)),
            strongroom_governance::log::AssetSpec {
                chain: strongroom_units::chain::BITCOIN_REGTEST.into(),
                symbol: "BTC".into(),
                decimals: 8,
                contract: None,
            },
        ],
    };
    let pin = hex::encode(genesis.hash()?);
    let state = replay(&genesis, &pin, &[], now)?;
    let mut entry =
        state.propose(Change::SetPolicy { policy: Policy::from_toml(DEV_POLICY)? }, now);
    for (id, key) in signers.iter().filter(|(id, _)| ["ada", "bob"].contains(id)) {
        entry.sign(id, key)?;
    }
    replay(&genesis, &pin, std::slice::from_ref(&entry), now)?;
    std::fs::write(&here.genesis, serde_json::to_vec_pretty(&genesis)?)?;
    std::fs::write(&here.pin, format!("{pin}\n"))?;
    Ok(vec![entry])
}
