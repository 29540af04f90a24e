//! `strongroom cold`: the online half of a cold withdrawal, on files. `intent` writes the
//! movement; each approver checks and signs it on their own machine with `approve`;
//! `prepare` builds the signing bundle (from the cold wallet's coins, read through Esplora)
//! only once the governance log in force allows it with those approvals; the key holders sign
//! it offline with `strongroom-cold sign`; `send` combines their bundles, finalizes, checks
//! with Bitcoin Core's consensus code and broadcasts.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Subcommand;
use strongroom_chain_bitcoin::esplora::Esplora;
use strongroom_chain_bitcoin::wallet::ColdWallet;
use strongroom_chain_bitcoin::Multisig;
use strongroom_cold::bundle::Bundle;
use strongroom_cold::online::{finalize_bitcoin, prepare_bitcoin, Request};
use strongroom_core::{new_id, Env, Intent, IntentAsset, SystemEnv, WalletId};
use strongroom_governance::approval::Approval;
use strongroom_governance::Role;
use strongroom_units::{Address, Amount, AssetSymbol, ChainId};

#[derive(Debug, Subcommand)]
pub enum ColdCommand {
    /// Write a cold movement's intent (and print its hash).
    Intent {
        /// CAIP-2 chain, e.g. bip122:0f9188f13cb7b2c71f2a335e3a4fc328 (regtest).
        #[arg(long)]
        chain: String,
        #[arg(long, default_value = "BTC")]
        asset: String,
        #[arg(long, default_value_t = 8)]
        decimals: u8,
        /// The cold wallet it leaves (as installed in the offline signers).
        #[arg(long)]
        wallet: String,
        #[arg(long)]
        to: String,
        /// Decimal, in the asset's units.
        #[arg(long)]
        amount: String,
        /// The most the network fee may be, in base units (satoshi).
        #[arg(long)]
        fee_cap: u128,
        #[arg(long, default_value_t = 24)]
        ttl_hours: i64,
        #[arg(long)]
        out: PathBuf,
    },
    /// As an approver, on your own machine: check an intent and sign your approval.
    Approve {
        #[arg(long)]
        intent: PathBuf,
        /// The governance folder (`strongroom governance … --dir`), for the policy version.
        #[arg(long)]
        governance: PathBuf,
        #[arg(long)]
        member: String,
        #[arg(long)]
        key: PathBuf,
        #[arg(long, default_value_t = 24 * 60)]
        expires_in_minutes: i64,
        #[arg(long)]
        yes: bool,
        #[arg(long)]
        out: PathBuf,
    },
    /// Build the signing bundle from the cold wallet's coins, once governance allows it.
    Prepare {
        #[arg(long)]
        intent: PathBuf,
        #[arg(long)]
        governance: PathBuf,
        /// The member asking for the movement.
        #[arg(long)]
        initiator: String,
        #[arg(long = "approval")]
        approvals: Vec<PathBuf>,
        /// An Esplora server's base URL.
        #[arg(long)]
        esplora: String,
        /// The cold wallet's multipath descriptor (`strongroom-cold descriptor`).
        #[arg(long)]
        descriptor: String,
        /// Aim for confirmation within this many blocks (the server's fee estimate).
        #[arg(long, default_value_t = 6)]
        fee_blocks: u16,
        #[arg(long)]
        out: PathBuf,
    },
    /// Combine the key holders' signed bundles, finalize, check and broadcast.
    Send {
        #[arg(long = "bundle", required = true)]
        bundles: Vec<PathBuf>,
        #[arg(long)]
        esplora: String,
    },
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> anyhow::Result<T> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_slice(&bytes)
        .with_context(|| format!("{} is not what was expected", path.display()))
}

fn write_json<T: serde::Serialize>(path: &Path, value: &T) -> anyhow::Result<()> {
    let mut bytes = serde_json::to_vec_pretty(value)?;
    bytes.push(b'\n');
    strongroom_cold::home::write_atomic(path, &bytes)?;
    Ok(())
}

fn describe(intent: &Intent) -> String {
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

pub async fn run(cmd: ColdCommand) -> anyhow::Result<std::process::ExitCode> {
    let env = SystemEnv::new();
    match cmd {
        ColdCommand::Intent {
            chain,
            asset,
            decimals,
            wallet,
            to,
            amount,
            fee_cap,
            ttl_hours,
            out,
        } => {
            let chain = ChainId::parse(&chain)?;
            let intent = Intent {
                destination: Address::parse(&chain, &to)?,
                asset: IntentAsset {
                    symbol: AssetSymbol::parse(&asset)?,
                    decimals,
                    contract: None,
                },
                chain,
                source_wallet: WalletId::parse(&wallet)?,
                amount: Amount::parse_decimal(&amount, decimals)?,
                fee_cap: Amount::from_base_units(fee_cap)?,
                expires_at: env.now().plus_ms(ttl_hours.saturating_mul(3_600_000)),
                request_id: new_id(&env),
            };
            write_json(&out, &intent)?;
            println!("{}", describe(&intent));
            println!("intent hash {}", intent.hash()?.to_hex());
        }
        ColdCommand::Approve { intent, governance, member, key, expires_in_minutes, yes, out } => {
            let intent: Intent = read_json(&intent)?;
            let (state, _) = crate::governance::load(&governance, &env)?;
            let policy = state.policy.as_ref().context("no policy is in force")?;
            let m =
                state.members.get(&member).with_context(|| format!("{member} is not a member"))?;
            let key = crate::governance::read_key(&key)?;
            anyhow::ensure!(m.key == key.verifying_key(), "that key is not {member}'s");
            let hash = intent.hash()?;
            println!("cold movement {}", describe(&intent));
            println!("intent hash {}", hash.to_hex());
            if !crate::governance::confirm(yes, "approve this movement?")? {
                println!("not approved");
                return Ok(std::process::ExitCode::FAILURE);
            }
            let expires = env.now().plus_ms(expires_in_minutes.saturating_mul(60_000));
            let a = Approval::sign(&member, &key, &hash, policy.version, expires);
            write_json(&out, &a)?;
            println!("{member} approved under policy v{}", policy.version);
        }
        ColdCommand::Prepare {
            intent,
            governance,
            initiator,
            approvals,
            esplora,
            descriptor,
            fee_blocks,
            out,
        } => {
            let intent: Intent = read_json(&intent)?;
            let approvals: Vec<Approval> =
                approvals.iter().map(|p| read_json(p)).collect::<anyhow::Result<_>>()?;
            let (state, log) = crate::governance::load(&governance, &env)?;
            let role = state
                .members
                .get(&initiator)
                .and_then(|m| m.roles.first().copied())
                .unwrap_or(Role::Operator);
            let network = strongroom_chain_bitcoin::network(&intent.chain)?;
            let multisig = Multisig::from_descriptor(&descriptor, network)?;
            let mut wallet = ColdWallet::new(&multisig)?;
            let esplora = Esplora::new(&esplora)?;
            let seen = u64::try_from(env.now().unix_ms() / 1000).unwrap_or_default();
            let coins = esplora.sync(&mut wallet, 20, seen).await?;
            let rate = esplora.fee_rate(fee_blocks).await?;
            let moved = |_: &strongroom_governance::policy::VelocityLimit| Amount::ZERO;
            let req = Request {
                intent: &intent,
                initiator: &initiator,
                initiator_role: role,
                approvals: &approvals,
                log: &log,
                state: &state,
                moved: &moved,
            };
            let (bundle, decoded) = prepare_bitcoin(&mut wallet, &req, rate, &env)?;
            write_json(&out, &bundle)?;
            println!("{} coin(s) found; {rate} sat/vB", coins);
            print!("{}", decoded.describe(intent.asset.symbol.as_str()));
            println!("bundle written to {}: take it to the key holders", out.display());
        }
        ColdCommand::Send { bundles, esplora } => {
            let bundles: Vec<Bundle> = bundles
                .iter()
                .map(|p| Bundle::from_json(&std::fs::read(p)?).map_err(anyhow::Error::from))
                .collect::<anyhow::Result<_>>()?;
            let tx = finalize_bitcoin(&bundles)?;
            let txid = Esplora::new(&esplora)?.broadcast(&tx).await?;
            println!("{txid}");
        }
    }
    Ok(std::process::ExitCode::SUCCESS)
}
