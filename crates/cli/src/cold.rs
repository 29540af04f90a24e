//! `strongroom cold`: the online half of a cold withdrawal, on files. `intent` writes the
//! movement; each approver checks and signs it on their own machine with `approve`;
//! `prepare` builds the signing bundle (from the cold wallet's coins, read through Esplora)
//! only once the governance log in force allows it with those approvals; the key holders sign
//! it offline with `strongroom-cold sign`; `send` combines their bundles, finalizes, checks
//! with Bitcoin Core's consensus code and broadcasts. A cosigner outside Strongroom (Sparrow,
//! a hardware wallet) takes part through `export-psbt` (the bundle's PSBT as a BIP-174 file)
//! and `import-psbt` (its signatures back into a bundle for `send`). For a Safe, `prepare` reads the Safe's
//! nonce from a node and `send` checks the owners' signatures against the Safe's current
//! owners and threshold, then has an account the node unlocks execute it.

use std::path::{Path, PathBuf};

use alloy_sol_types::SolCall;
use anyhow::Context;
use clap::Subcommand;
use strongroom_chain_bitcoin::esplora::Esplora;
use strongroom_chain_bitcoin::wallet::ColdWallet;
use strongroom_chain_bitcoin::Multisig;
use strongroom_chain_ethereum::anvil::send_and_wait;
use strongroom_chain_ethereum::rpc::{EthRpc, Retry};
use strongroom_chain_ethereum::safe::{
    get_owners_calldata, nonce_calldata, EthAddress, ISafe, U256,
};
use strongroom_cold::bundle::{Bundle, Payload};
use strongroom_cold::interop::{export_psbt, import_psbt, PsbtFormat};
use strongroom_cold::online::{
    finalize_bitcoin, finalize_safe, prepare_bitcoin, prepare_safe, Request,
};
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
        /// Bitcoin: an Esplora server's base URL.
        #[arg(long, requires = "descriptor", conflicts_with_all = ["eth_rpc", "safe"])]
        esplora: Option<String>,
        /// Bitcoin: the cold wallet's multipath descriptor (`strongroom-cold descriptor`).
        #[arg(long, requires = "esplora")]
        descriptor: Option<String>,
        /// Ethereum: a node's JSON-RPC URL (the Safe's nonce is read from it).
        #[arg(long, requires = "safe")]
        eth_rpc: Option<String>,
        /// Ethereum: the cold wallet's Safe address.
        #[arg(long, requires = "eth_rpc")]
        safe: Option<String>,
        /// Aim for confirmation within this many blocks (the server's fee estimate).
        #[arg(long, default_value_t = 6)]
        fee_blocks: u16,
        #[arg(long)]
        out: PathBuf,
    },
    /// Key ceremony, online half: deploy a Safe 1.4.1 (the pinned npm artifacts, from
    /// `scripts/install-eth-tools`) whose owners are the key holders' addresses
    /// (`strongroom-cold init --chain eip155:<id>` prints each), and print its address.
    DeploySafe {
        #[arg(long)]
        eth_rpc: String,
        /// CAIP-2 chain the node must be on.
        #[arg(long, default_value = "eip155:31337")]
        chain: String,
        /// The account that deploys (one the node unlocks; it pays the gas).
        #[arg(long)]
        from: String,
        #[arg(long = "owner", required = true)]
        owners: Vec<String>,
        #[arg(long)]
        threshold: u64,
    },
    /// Bitcoin: write a bundle's PSBT (unsigned, or with the signatures it has) as a plain
    /// BIP-174 file for a cosigner in Sparrow or on a hardware wallet, after decoding it
    /// against the bundle's intent and the wallet's descriptor.
    ExportPsbt {
        /// The bundle from `prepare` (or one already signed by key holders).
        #[arg(long)]
        bundle: PathBuf,
        /// The cold wallet's multipath descriptor (as given to `prepare`).
        #[arg(long)]
        descriptor: String,
        /// Where to write the PSBT (binary `.psbt` unless --base64).
        #[arg(long)]
        out: PathBuf,
        /// Write base64 text instead of binary.
        #[arg(long)]
        base64: bool,
    },
    /// Bitcoin: merge the signatures of a PSBT an outside cosigner signed (binary or base64)
    /// into the bundle it was exported from, as a bundle `send` takes. Refused: a PSBT whose
    /// unsigned transaction is not the bundle's, a signature that does not verify.
    ImportPsbt {
        #[arg(long)]
        bundle: PathBuf,
        /// The cold wallet's multipath descriptor (as given to `prepare`).
        #[arg(long)]
        descriptor: String,
        /// The PSBT file the cosigner signed.
        #[arg(long)]
        psbt: PathBuf,
        /// Where to write the bundle with the merged signatures.
        #[arg(long)]
        out: PathBuf,
    },
    /// Combine the key holders' signed bundles, finalize, check and broadcast.
    Send {
        #[arg(long = "bundle", required = true)]
        bundles: Vec<PathBuf>,
        /// Bitcoin: where to broadcast.
        #[arg(long, conflicts_with = "eth_rpc")]
        esplora: Option<String>,
        /// Ethereum: the node that executes the Safe transaction.
        #[arg(long, requires = "from")]
        eth_rpc: Option<String>,
        /// Ethereum: the account that sends `execTransaction` and pays its gas (one the node
        /// unlocks; it moves nothing of the Safe's but what the owners signed).
        #[arg(long)]
        from: Option<String>,
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

/// `eth_call` of `data` on the Safe at `safe`: the returned bytes.
async fn safe_call(rpc: &EthRpc, safe: EthAddress, data: Vec<u8>) -> anyhow::Result<Vec<u8>> {
    let call = serde_json::json!([{"to": safe.to_string(), "data": format!("0x{}", hex::encode(data))}, "latest"]);
    let r = rpc.call("eth_call", call).await?;
    let text = r.as_str().context("eth_call returned no data")?;
    Ok(hex::decode(text.trim_start_matches("0x"))?)
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
            println!("{}", crate::governance::describe_intent(&intent));
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
            println!("cold movement {}", crate::governance::describe_intent(&intent));
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
            eth_rpc,
            safe,
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
            let bundle = match (esplora, descriptor, eth_rpc, safe) {
                (Some(esplora), Some(descriptor), None, None) => {
                    let network = strongroom_chain_bitcoin::network(&intent.chain)?;
                    let multisig = Multisig::from_descriptor(&descriptor, network)?;
                    let mut wallet = ColdWallet::new(&multisig)?;
                    let esplora = Esplora::new(&esplora)?;
                    let seen = u64::try_from(env.now().unix_ms() / 1000).unwrap_or_default();
                    let coins = esplora.sync(&mut wallet, 20, seen).await?;
                    let rate = esplora.fee_rate(fee_blocks).await?;
                    let (bundle, decoded) = prepare_bitcoin(&mut wallet, &req, rate, &env)?;
                    println!("{coins} coin(s) found; {rate} sat/vB");
                    print!("{}", decoded.describe(intent.asset.symbol.as_str()));
                    bundle
                }
                (None, None, Some(url), Some(safe)) => {
                    let rpc = EthRpc::new(&url, intent.chain.clone(), Retry::default())?;
                    let safe: EthAddress = safe.parse().context("--safe is not an address")?;
                    let nonce = safe_call(&rpc, safe, nonce_calldata()).await?;
                    let nonce = u64::try_from(U256::from_be_slice(&nonce)).context("Safe nonce")?;
                    let bundle = prepare_safe(safe, nonce, &req, &env)?;
                    println!(
                        "cold movement {} from Safe {safe} at nonce {nonce}",
                        crate::governance::describe_intent(&intent)
                    );
                    bundle
                }
                _ => anyhow::bail!(
                    "give --esplora and --descriptor (Bitcoin) or --eth-rpc and --safe (a Safe)"
                ),
            };
            write_json(&out, &bundle)?;
            println!("bundle written to {}: take it to the key holders", out.display());
        }
        ColdCommand::DeploySafe { eth_rpc, chain, from, owners, threshold } => {
            let chain = ChainId::parse(&chain)?;
            let rpc = EthRpc::new(&eth_rpc, chain, Retry::default())?;
            rpc.check_chain().await?;
            let mut list = owners
                .iter()
                .map(|o| {
                    o.parse::<EthAddress>().with_context(|| format!("{o:?} is not an address"))
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            list.sort();
            list.dedup();
            anyhow::ensure!(
                list.len() == owners.len()
                    && threshold >= 1
                    && usize::try_from(threshold).is_ok_and(|t| t <= list.len()),
                "a {threshold}-of-{} Safe with distinct owners is not possible",
                owners.len()
            );
            let root = std::env::current_dir()?;
            let safe =
                strongroom_chain_ethereum::anvil::deploy_safe(&rpc, &root, &from, &list, threshold)
                    .await?;
            // What the chain now says, not what was asked.
            let on_chain = ISafe::getOwnersCall::abi_decode_returns(
                &safe_call(&rpc, safe, get_owners_calldata()).await?,
            )?;
            let mut sorted = on_chain.clone();
            sorted.sort();
            anyhow::ensure!(sorted == list, "the deployed Safe reports other owners: {on_chain:?}");
            println!("{}", safe.to_checksum(None));
        }
        ColdCommand::ExportPsbt { bundle, descriptor, out, base64 } => {
            let bundle = Bundle::from_json(&std::fs::read(&bundle)?)?;
            let network = strongroom_chain_bitcoin::network(&bundle.intent.chain)?;
            let multisig = Multisig::from_descriptor(&descriptor, network)?;
            let format = if base64 { PsbtFormat::Base64 } else { PsbtFormat::Binary };
            let (bytes, decoded) = export_psbt(&bundle, &multisig, format)?;
            print!("{}", decoded.describe(bundle.intent.asset.symbol.as_str()));
            strongroom_cold::home::write_atomic(&out, &bytes)?;
            println!("PSBT written to {} ({} bytes)", out.display(), bytes.len());
        }
        ColdCommand::ImportPsbt { bundle, descriptor, psbt, out } => {
            let bundle = Bundle::from_json(&std::fs::read(&bundle)?)?;
            let network = strongroom_chain_bitcoin::network(&bundle.intent.chain)?;
            let multisig = Multisig::from_descriptor(&descriptor, network)?;
            let file =
                std::fs::read(&psbt).with_context(|| format!("reading {}", psbt.display()))?;
            let (merged, imported) = import_psbt(&bundle, &file, &multisig)?;
            print!("{}", imported.decoded.describe(bundle.intent.asset.symbol.as_str()));
            write_json(&out, &merged)?;
            println!(
                "imported {} signature(s) from key(s) {}; bundle written to {}",
                imported.added,
                imported.signers.join(", "),
                out.display()
            );
        }
        ColdCommand::Send { bundles, esplora, eth_rpc, from } => {
            let bundles: Vec<Bundle> = bundles
                .iter()
                .map(|p| Bundle::from_json(&std::fs::read(p)?).map_err(anyhow::Error::from))
                .collect::<anyhow::Result<_>>()?;
            match (esplora, eth_rpc, from) {
                (Some(esplora), None, _) => {
                    let tx = finalize_bitcoin(&bundles)?;
                    let txid = Esplora::new(&esplora)?.broadcast(&tx).await?;
                    println!("{txid}");
                }
                (None, Some(url), Some(from)) => {
                    let first = bundles.first().context("no bundles")?;
                    let rpc = EthRpc::new(&url, first.intent.chain.clone(), Retry::default())?;
                    let Payload::SafeTransaction(p) = &first.transaction else {
                        anyhow::bail!("not a Safe bundle");
                    };
                    let (safe, _) = p.parse()?;
                    // Owners and threshold as the Safe itself says now.
                    let owners = ISafe::getOwnersCall::abi_decode_returns(
                        &safe_call(&rpc, safe, get_owners_calldata()).await?,
                    )?;
                    let threshold = U256::from_be_slice(
                        &safe_call(&rpc, safe, ISafe::getThresholdCall {}.abi_encode()).await?,
                    );
                    let threshold = usize::try_from(threshold).context("Safe threshold")?;
                    let (safe, data) = finalize_safe(&bundles, &owners, threshold)?;
                    let call = serde_json::json!({
                        "from": from, "to": safe.to_string(),
                        "data": format!("0x{}", hex::encode(data)), "gas": "0x100000",
                    });
                    let receipt = send_and_wait(&rpc, call).await?;
                    let hash =
                        receipt.get("transactionHash").and_then(|h| h.as_str()).unwrap_or_default();
                    println!("{hash}");
                }
                _ => anyhow::bail!("give --esplora (Bitcoin) or --eth-rpc and --from (a Safe)"),
            }
        }
    }
    Ok(std::process::ExitCode::SUCCESS)
}
