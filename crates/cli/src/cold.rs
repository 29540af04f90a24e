//! `strongroom cold`: the online half of a cold withdrawal, on files. `intent` writes the
//! movement; each approver checks and signs it on their own machine with `approve`;
//! `prepare` builds the signing bundle (from the cold wallet's coins, read through Esplora)
//! only once the governance log in force allows it with those approvals; the key holders sign
//! it offline with `strongroom-cold sign`; `send` combines their bundles, finalizes, checks
//! with Bitcoin Core's consensus code and broadcasts. A cosigner outside Strongroom (Sparrow,
//! a hardware wallet) takes part through `export-psbt` (the bundle's PSBT as a BIP-174 file)
//! and `import-psbt` (its signatures back into a bundle for `send`). For a Safe, `prepare` reads the Safe's
//! nonce from a node and `send` checks the owners' signatures against the Safe's current
//! owners and threshold, then executes it through the relayer: an Ethereum key of the online
//! side's own (`relayer-key`, a file) that signs the outer EIP-1559 transaction and pays its
//! gas; it is not an owner and moves nothing by itself. `deploy-safe` creates the Safe the
//! way Safe{Wallet} and the Safe SDK do, through the standard `SafeProxyFactory` with
//! `setup` in the creation call, at the address `CREATE2` predicts.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Subcommand;
use serde_json::json;
use strongroom_chain_bitcoin::esplora::Esplora;
use strongroom_chain_bitcoin::wallet::ColdWallet;
use strongroom_chain_bitcoin::Multisig;
use strongroom_chain_ethereum::relayer::RelayerKey;
use strongroom_chain_ethereum::rpc::{EthRpc, Retry};
use strongroom_chain_ethereum::safe::{EthAddress, SafeContracts, SafeDeployment, U256};
use strongroom_chain_ethereum::safe_node;
use strongroom_cold::bundle::{Bundle, Payload};
use strongroom_cold::interop::{export_psbt, import_psbt, PsbtFormat};
use strongroom_cold::online::{
    finalize_bitcoin, finalize_safe, prepare_bitcoin, prepare_safe, Request,
};
use strongroom_core::{new_id, Env, Intent, IntentAsset, SystemEnv, WalletId};
use strongroom_governance::approval::Approval;
use strongroom_governance::Role;
use strongroom_units::{Address, Amount, AssetSymbol, ChainId};

use crate::client::at;
use crate::exit::Output;

#[derive(Debug, Subcommand)]
pub enum ColdCommand {
    /// Write a cold movement's intent (and print its hash).
    Intent {
        /// CAIP-2 chain, e.g. bip122:0f9188f13cb7b2c71f2a335e3a4fc328 (regtest).
        #[arg(long)]
        chain: String,
        /// The asset's symbol, as the governance registry names it.
        #[arg(long, default_value = "BTC")]
        asset: String,
        /// The asset's decimals (8 for BTC, 18 for ETH).
        #[arg(long, default_value_t = 8)]
        decimals: u8,
        /// The cold wallet it leaves (as installed in the offline signers).
        #[arg(long)]
        wallet: String,
        /// The destination address.
        #[arg(long)]
        to: String,
        /// Decimal, in the asset's units.
        #[arg(long)]
        amount: String,
        /// The most the network fee may be, in base units (satoshi).
        #[arg(long)]
        fee_cap: u128,
        /// How long the intent stays signable, in hours.
        #[arg(long, default_value_t = 24)]
        ttl_hours: i64,
        /// Where to write the intent (JSON), for the approvers and `prepare`.
        #[arg(long)]
        out: PathBuf,
    },
    /// As an approver, on your own machine: check an intent and sign your approval.
    Approve {
        /// The intent file `intent` wrote.
        #[arg(long)]
        intent: PathBuf,
        /// The governance folder (`strongroom governance … --dir`), for the policy version.
        #[arg(long)]
        governance: PathBuf,
        /// The approving member, e.g. ann.
        #[arg(long)]
        member: String,
        /// The approver's secret key file (`strongroom governance keygen`).
        #[arg(long)]
        key: PathBuf,
        /// How long the approval stays valid, in minutes (default: a day).
        #[arg(long, default_value_t = 24 * 60)]
        expires_in_minutes: i64,
        /// Approve without asking. Without it, the movement is shown and a question asked on
        /// the terminal; with no terminal (a script, a pipe) the command stops at once.
        #[arg(long)]
        yes: bool,
        /// Where to write the signed approval (JSON), for `prepare --approval`.
        #[arg(long)]
        out: PathBuf,
    },
    /// Build the signing bundle from the cold wallet's coins, once governance allows it.
    Prepare {
        /// The intent file `intent` wrote.
        #[arg(long)]
        intent: PathBuf,
        /// The governance folder whose log in force decides.
        #[arg(long)]
        governance: PathBuf,
        /// The member asking for the movement.
        #[arg(long)]
        initiator: String,
        /// An approval file from `approve`; repeat for each approver.
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
        /// Where to write the signing bundle (JSON), for the key holders.
        #[arg(long)]
        out: PathBuf,
    },
    /// List the refills of hot wallets from cold storage that the server asked for (the
    /// treasury asks when a Bitcoin hot wallet falls below its low watermark and the chain
    /// names its cold_descriptor).
    Refills {
        /// Only those still asking (awaiting approvals, or ready to sign).
        #[arg(long)]
        open: bool,
        #[command(flatten)]
        api: crate::client::ApiArgs,
    },
    /// As an approver, on your own machine: fetch a refill's intent from the server, check
    /// that its hash is the hash of what is shown, sign your approval and send it.
    RefillApprove {
        /// The refill's id (from `cold refills`).
        id: uuid::Uuid,
        #[command(flatten)]
        approver: crate::governance::ApproverArgs,
    },
    /// Fetch a refill's signing bundle, once governance allows it, for the key holders
    /// (`strongroom-cold sign --in FILE`).
    RefillBundle {
        /// The refill's id.
        id: uuid::Uuid,
        /// Where to write the bundle (JSON).
        #[arg(long)]
        out: PathBuf,
        #[command(flatten)]
        api: crate::client::ApiArgs,
    },
    /// Make the relayer's key: a new secp256k1 key in a new file (mode 0600, 64 hex
    /// digits), and print its address. The relayer signs the outer Ethereum transaction of
    /// `send` and `deploy-safe` and pays their gas; it is not a Safe owner and can move
    /// nothing of a Safe's. Fund its address with ETH for gas only.
    RelayerKey {
        /// Where to write the key (refused if the file exists). Keep it on the online host
        /// that sends, readable by its user only.
        #[arg(long)]
        out: PathBuf,
    },
    /// Dev nodes only: deploy Safe 1.4.1's singleton, proxy factory and fallback handler
    /// from the pinned npm artifacts (`scripts/install-eth-tools`), signed and paid for by
    /// the relayer, and print their addresses for `deploy-safe`. Public networks have them
    /// already (Safe's canonical deployment, `deploy-safe`'s defaults).
    DeploySafeContracts {
        /// The dev node's JSON-RPC URL.
        #[arg(long)]
        eth_rpc: String,
        /// CAIP-2 chain the node must be on.
        #[arg(long, default_value = "eip155:31337")]
        chain: String,
        /// The relayer's key file (`cold relayer-key`), which pays the gas.
        #[arg(long)]
        relayer_key: PathBuf,
    },
    /// Key ceremony, online half: create the cold wallet's Safe 1.4.1 as Safe{Wallet} and the
    /// Safe SDK do, through `SafeProxyFactory.createProxyWithNonce` with `setup(owners,
    /// threshold, fallback handler)` in the same call. The owners are the key holders'
    /// addresses (`strongroom-cold init --chain eip155:<id>` prints each). Prints the Safe's
    /// address (first line), predicted with `CREATE2` before anything is sent and checked
    /// against the factory's event and the new Safe's owners, threshold and version after.
    /// Deploying the same owners, threshold and salt nonce again finds the Safe already there.
    DeploySafe {
        /// The node's JSON-RPC URL.
        #[arg(long)]
        eth_rpc: String,
        /// CAIP-2 chain the node must be on.
        #[arg(long, default_value = "eip155:31337")]
        chain: String,
        /// The relayer's key file (`cold relayer-key`): it signs the creation transaction
        /// and pays its gas. Not needed with --predict.
        #[arg(long, required_unless_present = "predict")]
        relayer_key: Option<PathBuf>,
        /// An owner's address; repeat for each. They are sorted by address, so the same set
        /// always gives the same Safe.
        #[arg(long = "owner", required = true)]
        owners: Vec<String>,
        /// How many owners must sign a transaction.
        #[arg(long)]
        threshold: u64,
        /// The factory's salt nonce (decimal or 0x-hex): another nonce, another address for
        /// the same owners.
        #[arg(long, default_value = "0")]
        salt_nonce: String,
        /// The Safe singleton (default: Safe 1.4.1's canonical `Safe`, or `SafeL2` with --l2).
        #[arg(long)]
        singleton: Option<String>,
        /// Use the canonical L2 singleton (`SafeL2`), as Safe{Wallet} does on L2 chains.
        #[arg(long, conflicts_with = "singleton")]
        l2: bool,
        /// The `SafeProxyFactory` (default: Safe 1.4.1's canonical factory).
        #[arg(long)]
        factory: Option<String>,
        /// The fallback handler `setup` installs (default: Safe 1.4.1's canonical
        /// `CompatibilityFallbackHandler`).
        #[arg(long)]
        fallback_handler: Option<String>,
        /// Print the address the Safe will have and send nothing.
        #[arg(long)]
        predict: bool,
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
        /// The bundle the PSBT was exported from.
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
    /// Combine the key holders' signed bundles, finalize, check and broadcast. For a Safe,
    /// prints the transaction id (first line), then who paid what.
    Send {
        /// A bundle signed by a key holder (or imported from an outside cosigner); repeat.
        #[arg(long = "bundle", required = true)]
        bundles: Vec<PathBuf>,
        /// Bitcoin: where to broadcast.
        #[arg(long, conflicts_with_all = ["eth_rpc", "relayer_key"])]
        esplora: Option<String>,
        /// Ethereum: the node that executes the Safe transaction.
        #[arg(long, requires = "relayer_key")]
        eth_rpc: Option<String>,
        /// Ethereum: the relayer's key file (`cold relayer-key`; 64 hex digits, mode 0600).
        /// The relayer signs the outer EIP-1559 transaction that calls `execTransaction`,
        /// sends it with `eth_sendRawTransaction` and pays its gas, within the intent's fee
        /// cap. It is not an owner: the owners' signatures are what move the Safe's funds.
        #[arg(long, requires = "eth_rpc")]
        relayer_key: Option<PathBuf>,
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

fn parse_address(text: &str, what: &str) -> anyhow::Result<EthAddress> {
    text.parse::<EthAddress>().with_context(|| format!("{what} {text:?} is not an address"))
}

/// A node for `chain` at `url`, checked to serve that chain.
async fn eth_node(url: &str, chain: ChainId) -> anyhow::Result<EthRpc> {
    let rpc = EthRpc::new(url, chain, Retry::default())?;
    rpc.check_chain().await?;
    Ok(rpc)
}

/// Run a `cold` command. Lines for people go through `output.say` (stderr under `--output
/// json`); with `--output json` the command's result is one JSON document on stdout.
pub async fn run(cmd: ColdCommand, output: Output) -> anyhow::Result<crate::exit::Exit> {
    let env = SystemEnv::new();
    let say = |line: &str| output.say(line.trim_end_matches('\n'));
    let json = match cmd {
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
            let hash = intent.hash()?.to_hex();
            say(&crate::governance::describe_intent(&intent));
            say(&format!("intent hash {hash}"));
            json!({"intent_hash": hash, "intent": crate::governance::describe_intent(&intent),
                "out": out})
        }
        ColdCommand::Approve { intent, governance, member, key, expires_in_minutes, yes, out } => {
            let confirm = crate::exit::Confirm::new(yes, "cold approve")?;
            let intent: Intent = read_json(&intent)?;
            let (state, _) = crate::governance::load(&governance, &env)?;
            let policy = state.policy.as_ref().context("no policy is in force")?;
            let m =
                state.members.get(&member).with_context(|| format!("{member} is not a member"))?;
            let key = crate::governance::read_key(&key)?;
            anyhow::ensure!(m.key == key.verifying_key(), "that key is not {member}'s");
            let hash = intent.hash()?;
            say(&format!("cold movement {}", crate::governance::describe_intent(&intent)));
            say(&format!("intent hash {}", hash.to_hex()));
            if !confirm.ask("approve this movement?")? {
                say("not approved");
                if output.is_json() {
                    Output::print_json(&json!({"approved": false, "intent_hash": hash.to_hex()}))?;
                }
                return Ok(crate::exit::Exit::Problem);
            }
            let expires = env.now().plus_ms(expires_in_minutes.saturating_mul(60_000));
            let a = Approval::sign(&member, &key, &hash, policy.version, expires);
            write_json(&out, &a)?;
            say(&format!("{member} approved under policy v{}", policy.version));
            json!({"approved": true, "member": member, "policy_version": policy.version,
                "intent_hash": hash.to_hex(), "expires_at_ms": expires.unix_ms(), "out": out})
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
            let (bundle, source) = match (esplora, descriptor, eth_rpc, safe) {
                (Some(esplora), Some(descriptor), None, None) => {
                    let network = strongroom_chain_bitcoin::network(&intent.chain)?;
                    let multisig = Multisig::from_descriptor(&descriptor, network)?;
                    let mut wallet = ColdWallet::new(&multisig)?;
                    let esplora = Esplora::new(&esplora)?;
                    let seen = u64::try_from(env.now().unix_ms() / 1000).unwrap_or_default();
                    let coins = esplora.sync(&mut wallet, 20, seen).await?;
                    let rate = esplora.fee_rate(fee_blocks).await?;
                    let (bundle, decoded) = prepare_bitcoin(&mut wallet, &req, rate, &env)?;
                    say(&format!("{coins} coin(s) found; {rate} sat/vB"));
                    say(&decoded.describe(intent.asset.symbol.as_str()));
                    (bundle, json!({"coins": coins, "fee_rate_sat_vb": rate}))
                }
                (None, None, Some(url), Some(safe)) => {
                    let rpc = eth_node(&url, intent.chain.clone()).await?;
                    let safe = parse_address(&safe, "--safe")?;
                    let nonce = safe_node::read_safe(&rpc, safe).await?.nonce;
                    let bundle = prepare_safe(safe, nonce, &req, &env)?;
                    say(&format!(
                        "cold movement {} from Safe {safe} at nonce {nonce}",
                        crate::governance::describe_intent(&intent)
                    ));
                    (bundle, json!({"safe": safe.to_checksum(None), "nonce": nonce.to_string()}))
                }
                _ => anyhow::bail!(
                    "give --esplora and --descriptor (Bitcoin) or --eth-rpc and --safe (a Safe)"
                ),
            };
            write_json(&out, &bundle)?;
            say(&format!("bundle written to {}: take it to the key holders", out.display()));
            json!({"out": out, "intent_hash": intent.hash()?.to_hex(), "source": source})
        }
        ColdCommand::Refills { open, api } => {
            let api = api.connect()?;
            let page = api.get(&format!("/v1/treasury/refills?open={open}")).await?;
            let list = at(&page, "/data").as_array().cloned().unwrap_or_default();
            if list.is_empty() {
                say("no refills");
            }
            for r in &list {
                let s = |p: &str| at(r, p).as_str().unwrap_or_default().to_owned();
                say(&format!(
                    "{} {} {} {} from {} to {} ({}){}",
                    s("/id"),
                    s("/state"),
                    s("/amount_decimal"),
                    s("/asset"),
                    s("/from_wallet"),
                    s("/to"),
                    s("/chain"),
                    at(r, "/waiting_for").as_str().map(|w| format!(": {w}")).unwrap_or_default()
                ));
            }
            json!({ "refills": list })
        }
        ColdCommand::RefillApprove {
            id,
            approver: crate::governance::ApproverArgs { member, key, expires_in_minutes, yes, api },
        } => {
            let confirm = crate::exit::Confirm::new(yes, "cold refill-approve")?;
            let api = api.connect()?;
            let r = api.get(&format!("/v1/treasury/refills/{id}")).await?;
            let (state, _) = crate::governance::load_api(&api, None, &env).await?;
            let policy = state.policy.as_ref().context("no policy is in force")?;
            let (intent, hash) = crate::governance::served_intent(&r, &state, &env)?;
            say(&format!("refill {id}"));
            say(&format!("  cold movement {}", crate::governance::describe_intent(&intent)));
            say(&format!("  intent hash {}", hash.to_hex()));
            if !confirm.ask("approve this refill from cold?")? {
                say("not approved");
                if output.is_json() {
                    Output::print_json(&json!({"approved": false, "refill": id}))?;
                }
                return Ok(crate::exit::Exit::Problem);
            }
            let path = format!("/v1/treasury/refills/{id}/approvals");
            let (v, minutes) = (policy.version, expires_in_minutes);
            let r = crate::governance::send_approval(
                &api, &path, &member, &key, &hash, v, minutes, &env,
            )
            .await?;
            say(&format!("{member} approved under policy v{}", policy.version));
            json!({"approved": true, "refill": id, "member": member,
                "policy_version": policy.version, "intent_hash": hash.to_hex(),
                "state": at(&r, "/state")})
        }
        ColdCommand::RefillBundle { id, out, api } => {
            let api = api.connect()?;
            let bundle = api.get(&format!("/v1/treasury/refills/{id}/bundle")).await?;
            let text = serde_json::to_vec_pretty(&bundle)?;
            let parsed = Bundle::from_json(&text)?;
            let hash = parsed.intent.hash()?.to_hex();
            let r = api.get(&format!("/v1/treasury/refills/{id}")).await?;
            anyhow::ensure!(
                at(&r, "/intent_hash").as_str() == Some(hash.as_str()),
                "the bundle is for another intent than the refill's: refusing"
            );
            strongroom_cold::home::write_atomic(&out, &text)?;
            say(&format!("cold movement {}", crate::governance::describe_intent(&parsed.intent)));
            say(&format!("bundle written to {}: take it to the key holders", out.display()));
            json!({"refill": id, "out": out, "intent_hash": hash})
        }
        ColdCommand::RelayerKey { out } => {
            let key = RelayerKey::generate(&env)?;
            key.write_new(&out)?;
            let address = key.address().to_checksum(None);
            say(&address);
            say(&format!(
                "relayer key written to {} (mode 0600): fund this address with ETH for gas only",
                out.display()
            ));
            json!({"address": address, "out": out})
        }
        ColdCommand::DeploySafeContracts { eth_rpc, chain, relayer_key } => {
            let rpc = eth_node(&eth_rpc, ChainId::parse(&chain)?).await?;
            let relayer = RelayerKey::from_file(&relayer_key)?;
            let root = std::env::current_dir()?;
            let c = strongroom_chain_ethereum::anvil::deploy_safe_contracts(&rpc, &relayer, &root)
                .await?;
            let (singleton, factory, fallback_handler) = (
                c.singleton.to_checksum(None),
                c.factory.to_checksum(None),
                c.fallback_handler.to_checksum(None),
            );
            say(&format!("singleton {singleton}"));
            say(&format!("factory {factory}"));
            say(&format!("fallback-handler {fallback_handler}"));
            json!({"singleton": singleton, "factory": factory, "fallback_handler": fallback_handler})
        }
        ColdCommand::DeploySafe {
            eth_rpc,
            chain,
            relayer_key,
            owners,
            threshold,
            salt_nonce,
            singleton,
            l2,
            factory,
            fallback_handler,
            predict,
        } => {
            let rpc = eth_node(&eth_rpc, ChainId::parse(&chain)?).await?;
            let mut list = owners
                .iter()
                .map(|o| parse_address(o, "--owner"))
                .collect::<anyhow::Result<Vec<_>>>()?;
            list.sort();
            let canonical = if l2 { SafeContracts::CANONICAL_L2 } else { SafeContracts::CANONICAL };
            let contracts = SafeContracts {
                singleton: match singleton {
                    Some(a) => parse_address(&a, "--singleton")?,
                    None => canonical.singleton,
                },
                factory: match factory {
                    Some(a) => parse_address(&a, "--factory")?,
                    None => canonical.factory,
                },
                fallback_handler: match fallback_handler {
                    Some(a) => parse_address(&a, "--fallback-handler")?,
                    None => canonical.fallback_handler,
                },
            };
            let salt_nonce = parse_u256(&salt_nonce).context("--salt-nonce")?;
            let deployment = SafeDeployment::new(contracts, list, threshold, salt_nonce)?;
            if predict {
                let address = safe_node::predict_safe(&rpc, &deployment).await?;
                say(&address.to_checksum(None));
                say(&format!(
                    "predicted (CREATE2 from factory {}, salt nonce {salt_nonce}); nothing was sent",
                    contracts.factory
                ));
                if output.is_json() {
                    Output::print_json(&json!({"address": address.to_checksum(None),
                        "predicted": true, "factory": contracts.factory.to_checksum(None),
                        "salt_nonce": salt_nonce.to_string()}))?;
                }
                return Ok(crate::exit::Exit::Ok);
            }
            let relayer_key = relayer_key.context("give --relayer-key (or --predict)")?;
            let relayer = RelayerKey::from_file(&relayer_key)?;
            let safe = safe_node::deploy_safe(&rpc, &relayer, &deployment).await?;
            say(&safe.address.to_checksum(None));
            match &safe.created_by {
                Some(tx) => say(&format!(
                    "created by the factory {} in transaction {} from the relayer {} ({} wei of gas), at the address CREATE2 predicted",
                    contracts.factory, tx.txid, tx.from, tx.fee_paid_wei
                )),
                None => say("already deployed (same owners, threshold and salt nonce)"),
            }
            let owners: Vec<String> =
                safe.state.owners.iter().map(|o| o.to_checksum(None)).collect();
            say(&format!(
                "Safe {}: {}-of-{}, owners {}, fallback handler {}",
                safe.state.version,
                safe.state.threshold,
                owners.len(),
                owners.join(", "),
                safe.state.fallback_handler
            ));
            json!({
                "address": safe.address.to_checksum(None),
                "created_by": safe.created_by.as_ref().map(|tx| json!({
                    "txid": tx.txid.to_string(), "from": tx.from.to_string(),
                    "fee_paid_wei": tx.fee_paid_wei.to_string()})),
                "version": safe.state.version.to_string(),
                "threshold": safe.state.threshold.to_string(),
                "owners": owners,
                "fallback_handler": safe.state.fallback_handler.to_string(),
            })
        }
        ColdCommand::ExportPsbt { bundle, descriptor, out, base64 } => {
            let bundle = Bundle::from_json(&std::fs::read(&bundle)?)?;
            let network = strongroom_chain_bitcoin::network(&bundle.intent.chain)?;
            let multisig = Multisig::from_descriptor(&descriptor, network)?;
            let format = if base64 { PsbtFormat::Base64 } else { PsbtFormat::Binary };
            let (bytes, decoded) = export_psbt(&bundle, &multisig, format)?;
            say(&decoded.describe(bundle.intent.asset.symbol.as_str()));
            strongroom_cold::home::write_atomic(&out, &bytes)?;
            say(&format!("PSBT written to {} ({} bytes)", out.display(), bytes.len()));
            json!({"out": out, "bytes": bytes.len(), "base64": base64})
        }
        ColdCommand::ImportPsbt { bundle, descriptor, psbt, out } => {
            let bundle = Bundle::from_json(&std::fs::read(&bundle)?)?;
            let network = strongroom_chain_bitcoin::network(&bundle.intent.chain)?;
            let multisig = Multisig::from_descriptor(&descriptor, network)?;
            let file =
                std::fs::read(&psbt).with_context(|| format!("reading {}", psbt.display()))?;
            let (merged, imported) = import_psbt(&bundle, &file, &multisig)?;
            say(&imported.decoded.describe(bundle.intent.asset.symbol.as_str()));
            write_json(&out, &merged)?;
            say(&format!(
                "imported {} signature(s) from key(s) {}; bundle written to {}",
                imported.added,
                imported.signers.join(", "),
                out.display()
            ));
            json!({"added": imported.added, "signers": imported.signers, "out": out})
        }
        ColdCommand::Send { bundles, esplora, eth_rpc, relayer_key } => {
            let bundles: Vec<Bundle> = bundles
                .iter()
                .map(|p| Bundle::from_json(&std::fs::read(p)?).map_err(anyhow::Error::from))
                .collect::<anyhow::Result<_>>()?;
            match (esplora, eth_rpc, relayer_key) {
                (Some(esplora), None, None) => {
                    let tx = finalize_bitcoin(&bundles)?;
                    let txid = Esplora::new(&esplora)?.broadcast(&tx).await?;
                    say(&txid.to_string());
                    json!({"txid": txid.to_string()})
                }
                (None, Some(url), Some(relayer_key)) => {
                    let first = bundles.first().context("no bundles")?;
                    let Payload::SafeTransaction(p) = &first.transaction else {
                        anyhow::bail!("not a Safe bundle");
                    };
                    let (safe, _) = p.parse()?;
                    let relayer = RelayerKey::from_file(&relayer_key)?;
                    let rpc = eth_node(&url, first.intent.chain.clone()).await?;
                    // Owners and threshold as the Safe itself says now.
                    let state = safe_node::read_safe(&rpc, safe).await?;
                    let threshold = usize::try_from(state.threshold).context("Safe threshold")?;
                    let (safe, data) = finalize_safe(&bundles, &state.owners, threshold)?;
                    let fee_cap = first.intent.fee_cap.base_units();
                    let tx = safe_node::execute(&rpc, &relayer, safe, data, fee_cap).await?;
                    say(&tx.txid.to_string());
                    say(&format!(
                        "executed by Safe {safe} in block {}; the relayer {} paid {} wei of gas",
                        tx.block, tx.from, tx.fee_paid_wei
                    ));
                    json!({"txid": tx.txid.to_string(), "safe": safe.to_checksum(None),
                        "block": tx.block, "from": tx.from.to_string(),
                        "fee_paid_wei": tx.fee_paid_wei.to_string()})
                }
                _ => anyhow::bail!(
                    "give --esplora (Bitcoin) or --eth-rpc and --relayer-key (a Safe)"
                ),
            }
        }
    };
    if output.is_json() {
        Output::print_json(&json)?;
    }
    Ok(crate::exit::Exit::Ok)
}

/// A decimal or `0x`-hex unsigned 256-bit number.
fn parse_u256(text: &str) -> anyhow::Result<U256> {
    let text = text.trim();
    let parsed = match text.strip_prefix("0x") {
        Some(hex) => U256::from_str_radix(hex, 16),
        None => U256::from_str_radix(text, 10),
    };
    parsed.with_context(|| format!("{text:?} is not a number"))
}
