//! `strongroom drill`: incident rehearsals on a dev or staging stack, timed, with every step
//! recorded where an auditor looks (the governance log, the server's audit log, each node's
//! own audit log). Nothing here moves money: the drill speaks to the API as the operators
//! would and to the nodes as the orchestrator and a member's pusher would.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Subcommand;
use strongroom_core::{Env, SystemEnv};
use strongroom_governance::log::Change;
use strongroom_signer::wire::{KeyInfo, Reason, Scheme, SignRequest, TxFormat};

use crate::client::{at, ApiArgs};
use crate::exit::{Confirm, Exit, Output, Problem};

#[derive(Debug, Subcommand)]
pub enum DrillCommand {
    /// A signer node is compromised: quarantine it through governance (one security
    /// officer), push the entry to the nodes, wait until no session with it signs, refresh
    /// every FROST key without it, and check that the others still sign. Prints the timeline
    /// and the time from the alarm to no further signing. The node stays quarantined: run it
    /// on a dev or staging stack only.
    NodeCompromise {
        /// The node taken to be compromised.
        #[arg(long, default_value_t = 3)]
        node: u16,
        #[command(flatten)]
        stack: Stack,
    },
    /// A signer node's host is lost (disk and key-encryption key gone): take its sealed
    /// backup, kill it and move its data aside, check that the others still sign, restore
    /// the backup onto the "fresh host" under a new key-encryption key, and time until it
    /// signs again, FROST and ECDSA. On a dev stack, whose `strongroom dev` restarts the
    /// node once the drill lifts its `maintenance` file; what was lost is kept in
    /// `DATA/drills/` for a look afterwards.
    LostNode {
        /// The node whose host is lost.
        #[arg(long, default_value_t = 2)]
        node: u16,
        #[command(flatten)]
        stack: Stack,
    },
    /// A hot-wallet drain under way: freeze everything through governance (one security
    /// officer), push it to the nodes, and time until they refuse to sign a payout from the
    /// hot wallet (asked with a log that lacks the freeze, as a compromised orchestrator
    /// would). Nothing is signed before the freeze is on every node. `--resume` lifts the
    /// freeze afterwards with two admins' keys (a dev stack holds them).
    Drain {
        /// The hot wallet's key.
        #[arg(long, default_value = "hot-eth-1")]
        key: String,
        /// Lift the freeze at the end, signed by these two admins (their keys in `--keys`).
        #[arg(long, value_delimiter = ',')]
        resume: Vec<String>,
        #[command(flatten)]
        stack: Stack,
    },
}

/// The stack a drill runs on, and how it runs.
#[derive(Debug, clap::Args)]
pub struct Stack {
    /// The stack's data folder (its signer nodes, its pusher certificate).
    #[arg(long, default_value = crate::DEV_DATA_DIR)]
    data_dir: PathBuf,
    /// The folder with the members' governance keys, `ID.key` (default: the dev stack's
    /// own).
    #[arg(long)]
    keys: Option<PathBuf>,
    /// The security officer who signs the containing entry.
    #[arg(long, default_value = "sec")]
    member: String,
    #[command(flatten)]
    api: ApiArgs,
    /// Print the timeline as JSON: the same as the global `--output json`.
    #[arg(long)]
    json: bool,
    /// Do not ask (the drill quarantines or freezes for real on this stack). Without it, a
    /// question is asked on the terminal; with no terminal (a script, a pipe) the drill
    /// stops at once.
    #[arg(long)]
    yes: bool,
}

/// One step of the timeline.
#[derive(Debug, serde::Serialize)]
struct Step {
    at_ms: u128,
    what: String,
}

struct Timeline {
    start: Instant,
    steps: Vec<Step>,
    json: bool,
}

impl Timeline {
    #[allow(clippy::disallowed_methods)] // A drill times itself with the real clock.
    fn new(json: bool) -> Self {
        Timeline { start: Instant::now(), steps: Vec::new(), json }
    }

    fn ms(&self) -> u128 {
        self.start.elapsed().as_millis()
    }

    /// The end of a drill: its figure (`key` in the JSON, `sentence` in words) and (with
    /// `--json`) `head` with the figure and every step.
    fn report(
        self,
        head: serde_json::Map<String, serde_json::Value>,
        key: &str,
        figure_ms: u128,
        sentence: &str,
    ) -> anyhow::Result<Exit> {
        if self.json {
            let mut out = head;
            out.insert(key.into(), serde_json::json!(figure_ms));
            out.insert("steps".into(), serde_json::to_value(&self.steps)?);
            println!("{}", serde_json::Value::Object(out));
        } else {
            println!("{sentence}: {figure_ms} ms");
        }
        Ok(Exit::Ok)
    }

    fn note(&mut self, what: impl Into<String>) {
        let step = Step { at_ms: self.ms(), what: what.into() };
        if !self.json {
            println!("T+{:>6} ms  {}", step.at_ms, step.what);
        }
        self.steps.push(step);
    }
}

/// A drill exits 0 when every check passed, 1 when one failed (the node still signed, the
/// payout was not refused, the restored node does not sign), 2 when it could not run.
pub async fn run(cmd: DrillCommand, output: Output) -> anyhow::Result<Exit> {
    match cmd {
        DrillCommand::NodeCompromise { node, stack: s } => {
            let confirm = Confirm::new(s.yes, "drill node-compromise")?;
            let json = s.json || output.is_json();
            let data_dir = crate::absolute(&s.data_dir)?;
            let keys = s.keys.unwrap_or_else(|| crate::governance::dev_keys(&data_dir));
            node_compromise(node, &data_dir, &keys, &s.member, &s.api, json, confirm).await
        }
        DrillCommand::LostNode { node, stack: s } => {
            let confirm = Confirm::new(s.yes, "drill lost-node")?;
            let json = s.json || output.is_json();
            lost_node(node, &crate::absolute(&s.data_dir)?, &s.api, json, confirm).await
        }
        DrillCommand::Drain { key, resume, stack: s } => {
            let confirm = Confirm::new(s.yes, "drill drain")?;
            let json = s.json || output.is_json();
            let data_dir = crate::absolute(&s.data_dir)?;
            let keys = s.keys.unwrap_or_else(|| crate::governance::dev_keys(&data_dir));
            drain(&key, &data_dir, &keys, &s.member, &resume, &s.api, json, confirm).await
        }
    }
}

/// The answer was no: nothing was done (exit 1).
fn nothing_done(json: bool) -> anyhow::Result<Exit> {
    if json {
        Output::print_json(&serde_json::json!({ "done": false }))?;
    } else {
        println!("nothing done");
    }
    Ok(Exit::Problem)
}

/// Commit `change` through the API with the signatures of `members` (keys in `keys`); the
/// entry's number. What is signed is checked against the log verified here.
async fn commit(
    api: &crate::client::Api,
    env: &dyn Env,
    keys: &std::path::Path,
    change: &Change,
    members: &[&str],
) -> anyhow::Result<u64> {
    let proposed =
        api.post("/v1/governance/proposals", &serde_json::json!({ "change": change })).await?;
    let seq = at(&proposed, "/seq").as_u64().context("the server did not propose")?;
    let (state, v) = crate::governance::load_api(api, None, env).await?;
    let entry: strongroom_governance::log::Entry =
        serde_json::from_value(at(&v, "/proposal/entry").clone())
            .context("the proposal is not pending")?;
    anyhow::ensure!(
        entry.seq == seq && entry.seq == state.seq + 1 && entry.prev == state.head,
        "the proposal does not follow the verified log"
    );
    anyhow::ensure!(&entry.change == change, "the server proposed something else");
    let hash = entry.hash()?;
    let mut committed = false;
    for member in members {
        use ed25519_dalek::Signer;
        let key = crate::governance::read_key(&keys.join(format!("{member}.key")))?;
        let signed = api
            .post(
                &format!("/v1/governance/proposals/{seq}/signoffs"),
                &serde_json::json!({ "member": member, "signature": hex::encode(key.sign(&hash).to_bytes()) }),
            )
            .await?;
        committed = at(&signed, "/committed").as_bool() == Some(true);
    }
    anyhow::ensure!(committed, "entry {seq} was not committed");
    Ok(seq)
}

/// The server's verified log.
async fn server_log(
    api: &crate::client::Api,
    env: &dyn Env,
) -> anyhow::Result<Vec<strongroom_governance::log::Entry>> {
    let (_, v) = crate::governance::load_api(api, None, env).await?;
    Ok(serde_json::from_value(at(&v, "/entries").clone())?)
}

#[allow(clippy::too_many_arguments)]
async fn drain(
    key_id: &str,
    data_dir: &std::path::Path,
    keys: &std::path::Path,
    member: &str,
    resume: &[String],
    api: &ApiArgs,
    json: bool,
    confirm: Confirm,
) -> anyhow::Result<Exit> {
    use strongroom_chain::TxCodec;
    let (env, api, orch) = open_stack(data_dir, api)?;
    anyhow::ensure!(resume.is_empty() || resume.len() >= 2, "--resume names two admins");
    if !confirm.ask("freeze every movement on this stack (a drill)?")? {
        return nothing_done(json);
    }
    let first = *orch.live_nodes().await.first().context("no live node")?;
    let status = orch.status(first).await.map_err(|e| anyhow::anyhow!("{e}"))?;
    let key = status
        .keys
        .iter()
        .find(|k| k.key_id == key_id && k.scheme == Scheme::Ecdsa)
        .cloned()
        .with_context(|| format!("no ECDSA key {key_id} on the nodes"))?;
    let pair: Vec<u16> = key
        .parties
        .iter()
        .copied()
        .filter(|p| !status.quarantined.contains(p))
        .take(usize::from(key.threshold))
        .collect();
    // The payout an attacker would push: 1 ETH from the hot wallet to an address of theirs.
    let chain = strongroom_units::ChainId::parse(crate::chain::DEV_CHAIN)?;
    let mut id = [0u8; 16];
    env.fill_random(&mut id);
    let intent = strongroom_core::Intent {
        destination: strongroom_units::Address::parse(
            &chain,
            "0xa0Ee7A142d267C1f36714E4a8F75612F20a79720",
        )?,
        chain: chain.clone(),
        asset: strongroom_core::IntentAsset {
            symbol: strongroom_units::AssetSymbol::parse("ETH")?,
            decimals: 18,
            contract: None,
        },
        source_wallet: strongroom_core::WalletId::parse(key_id)?,
        amount: strongroom_units::Amount::from_base_units(10u128.pow(18))?,
        fee_cap: strongroom_units::Amount::from_base_units(21_000 * 2_000_000_000)?,
        expires_at: env.now().plus_ms(600_000),
        request_id: uuid::Uuid::from_bytes(id),
    };
    let params = strongroom_chain_ethereum::EthParams {
        nonce: u64::from(u32::MAX),
        gas_limit: 21_000,
        max_fee_per_gas: 2_000_000_000,
        max_priority_fee_per_gas: 1_000_000_000,
    };
    let tx = strongroom_chain_ethereum::EthCodec::new(chain)?.build(&intent, &params)?;
    let before = server_log(&api, &env).await?;

    let mut t = Timeline::new(json);
    t.note(format!("alarm: a drain of {key_id} is under way"));
    let freeze = Change::Freeze {
        scope: strongroom_governance::policy::FreezeScope::Global,
        reason: Some("drill: hot-wallet drain rehearsal".into()),
    };
    let seq = commit(&api, &env, keys, &freeze, &[member]).await?;
    t.note(format!("global freeze committed as governance entry {seq} ({member})"));
    let log = server_log(&api, &env).await?;
    let pusher = crate::signers::pusher(data_dir, &[], None, None)?;
    let pushed = pusher.push_governance(&log, Duration::from_secs(10)).await;
    let reached = pushed.iter().filter(|(_, r)| r.as_ref().is_ok_and(|h| h.seq >= seq)).count();
    t.note(format!("freeze on {reached} of {} nodes", pushed.len()));
    anyhow::ensure!(
        pushed.iter().filter(|(n, _)| pair.contains(n)).all(|(_, r)| r.is_ok()),
        Problem(format!("the freeze did not reach the signing nodes {pair:?}: {pushed:?}"))
    );
    // Only now is the payout asked for, with the log from before the freeze.
    let request = SignRequest {
        intent: hex::encode(intent.encode()?),
        format: TxFormat::Eip1559,
        tx: hex::encode(tx),
        governance: before,
        ..Default::default()
    };
    let refused = orch.sign_pooled(&env, &key, &pair, &request).await;
    let contained_ms = t.ms();
    match refused {
        Err(r)
            if matches!(
                r.reason,
                Reason::Blocked { block: strongroom_governance::policy::Block::Frozen { .. }, .. }
            ) =>
        {
            t.note(format!("contained: node {} refuses the payout (frozen)", r.node))
        }
        other => {
            return Err(Problem(format!("the payout was not refused as frozen: {other:?}")).into())
        }
    }
    if let [a, b, ..] = resume {
        let lift = Change::Unfreeze { scope: strongroom_governance::policy::FreezeScope::Global };
        let seq = commit(&api, &env, keys, &lift, &[a.as_str(), b.as_str()]).await?;
        let log = server_log(&api, &env).await?;
        pusher.push_governance(&log, Duration::from_secs(10)).await;
        t.note(format!("freeze lifted as governance entry {seq} ({a}, {b})"));
    }
    t.report(
        head(&[("drill", "drain".into()), ("key", key_id.into()), ("entry", seq.into())]),
        "time_to_contain_ms",
        contained_ms,
        &format!("time from the alarm to no further signing from {key_id}"),
    )
}

/// What every drill works through: the clock and randomness, the stack's API as an
/// operator, and its signer nodes as the orchestrator.
fn open_stack(
    data_dir: &std::path::Path,
    api: &ApiArgs,
) -> anyhow::Result<(SystemEnv, crate::client::Api, strongroom_signer::client::Orchestrator)> {
    let orch = crate::signers::ClusterFile::load(data_dir)?.orchestrator()?;
    Ok((SystemEnv::new(), api.connect()?, orch))
}

/// The fields a drill's JSON report starts with.
fn head(fields: &[(&str, serde_json::Value)]) -> serde_json::Map<String, serde_json::Value> {
    fields.iter().map(|(k, v)| ((*k).to_owned(), v.clone())).collect()
}

/// A proof of control with a fresh challenge, under the log the server holds.
fn proof(env: &dyn Env, governance: &[strongroom_governance::log::Entry]) -> SignRequest {
    let mut challenge = [0u8; 32];
    env.fill_random(&mut challenge);
    SignRequest {
        format: TxFormat::ProofOfControl,
        tx: hex::encode(challenge),
        governance: governance.to_vec(),
        ..Default::default()
    }
}

async fn node_compromise(
    node: u16,
    data_dir: &std::path::Path,
    keys: &std::path::Path,
    member: &str,
    api: &ApiArgs,
    json: bool,
    confirm: Confirm,
) -> anyhow::Result<Exit> {
    let (env, api, orch) = open_stack(data_dir, api)?;
    if !confirm.ask(&format!("quarantine signer node {node} for good on this stack (a drill)?"))? {
        return nothing_done(json);
    }
    // The keys the nodes hold, and a partner for the suspect node in each.
    let first = *orch.live_nodes().await.iter().find(|n| **n != node).context("no live node")?;
    let status = orch.status(first).await.map_err(|e| anyhow::anyhow!("{e}"))?;
    let held: Vec<KeyInfo> =
        status.keys.into_iter().filter(|k| k.parties.contains(&node)).collect();
    anyhow::ensure!(!held.is_empty(), "node {node} holds no key here: nothing to drill");
    let log = server_log(&api, &env).await?;
    // Before the alarm: the suspect node signs with a partner.
    let partner = |k: &KeyInfo| k.parties.iter().copied().find(|p| *p != node && *p == first);
    for k in &held {
        let pair = [partner(k).context("no partner")?, node];
        orch.sign_pooled(&env, k, &pair, &proof(&env, &log))
            .await
            .map_err(|e| anyhow::anyhow!("before the drill, {} with {pair:?}: {e}", k.key_id))?;
    }

    let mut t = Timeline::new(json);
    t.note(format!("alarm: signer node {node} reported compromised"));
    // Contain: one security officer's entry, through the server (so its log stays the one
    // every later request carries), then pushed to every node past the orchestrator.
    let change = Change::QuarantineNode {
        node,
        reason: Some(format!("drill: node {node} compromise rehearsal")),
    };
    let seq = commit(&api, &env, keys, &change, &[member]).await?;
    t.note(format!("quarantine of node {node} committed as governance entry {seq} ({member})"));
    let log = server_log(&api, &env).await?;
    let pusher = crate::signers::pusher(data_dir, &[], None, None)?;
    let pushed = pusher.push_governance(&log, Duration::from_secs(10)).await;
    let reached = pushed.iter().filter(|(_, r)| r.is_ok()).count();
    t.note(format!("entry pushed to {reached} of {} nodes", pushed.len()));

    // Contained once a session with the suspect node is refused for it, for every key.
    let mut contained_ms = None;
    for _ in 0..300 {
        let mut all = true;
        for k in &held {
            let pair = [partner(k).context("no partner")?, node];
            // The request carries the log without the entry, as a compromised orchestrator
            // would send it: the nodes refuse on what they know.
            let stale: Vec<_> = log.iter().filter(|e| e.seq < seq).cloned().collect();
            match orch.sign_pooled(&env, k, &pair, &proof(&env, &stale)).await {
                Err(r) if matches!(r.reason, Reason::Quarantined { .. }) => {}
                _ => all = false,
            }
        }
        if all {
            contained_ms = Some(t.ms());
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let contained_ms = contained_ms
        .ok_or_else(|| Problem("sessions with the quarantined node still sign".into()))?;
    t.note(format!("contained: every session with node {node} refused (quarantined)"));
    for n in orch.live_nodes().await.into_iter().filter(|n| *n != node) {
        let s = orch.status(n).await.map_err(|e| anyhow::anyhow!("{e}"))?;
        anyhow::ensure!(
            !s.presignatures.iter().any(|p| p.signers.contains(&node) && !p.ids.is_empty()),
            Problem(format!("node {n} still holds presignatures with node {node}"))
        );
    }
    t.note(format!("no presignature with node {node} left on the other nodes"));

    // Recover: FROST keys refreshed without the node; ECDSA keys keep signing without it
    // and are moved to a new key by the operators (`governance propose migrate-key`).
    for k in &held {
        match k.scheme {
            Scheme::FrostTaproot | Scheme::FrostEd25519 => {
                let parties: Vec<u16> = k.parties.iter().copied().filter(|p| *p != node).collect();
                let mut r = [0u8; 16];
                env.fill_random(&mut r);
                let eid = strongroom_mpc::ExecutionId::derive("refresh", &r, b"drill");
                let now = orch
                    .refresh(eid, k, &parties)
                    .await
                    .map_err(|e| anyhow::anyhow!("refreshing {}: {e}", k.key_id))?;
                t.note(format!(
                    "{}: shares refreshed among {:?}; node {node}'s share no longer counts",
                    k.key_id, now.parties
                ));
            }
            Scheme::Ecdsa => t.note(format!(
                "{}: signs without node {node}; move its funds to a new key (migrate-key)",
                k.key_id
            )),
        }
    }
    // Resume: the others sign.
    let log = server_log(&api, &env).await?;
    let others: Vec<u16> = held
        .first()
        .map(|k| k.parties.iter().copied().filter(|p| *p != node).collect())
        .unwrap_or_default();
    let status = orch.status(first).await.map_err(|e| anyhow::anyhow!("{e}"))?;
    for k in status.keys.iter().filter(|k| held.iter().any(|h| h.key_id == k.key_id)) {
        let pair: Vec<u16> =
            others.iter().copied().filter(|p| k.parties.contains(p)).take(2).collect();
        orch.sign_pooled(&env, k, &pair, &proof(&env, &log))
            .await
            .map_err(|e| Problem(format!("after the drill, {} with {pair:?}: {e}", k.key_id)))?;
    }
    t.note(format!("resumed: nodes {others:?} sign with every key"));
    t.report(
        head(&[("drill", "node-compromise".into()), ("node", node.into()), ("entry", seq.into())]),
        "time_to_contain_ms",
        contained_ms,
        &format!("time from the alarm to no further signing with node {node}"),
    )
}

/// Wait until `node` answers (`up`) or stops answering, for at most `secs`.
async fn wait_node(
    orch: &strongroom_signer::client::Orchestrator,
    node: u16,
    up: bool,
    secs: u64,
) -> anyhow::Result<()> {
    for _ in 0..secs * 10 {
        if orch.live_nodes().await.contains(&node) == up {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    anyhow::bail!(
        "node {node} {} within {secs} s",
        if up { "did not come back" } else { "is still up" }
    )
}

/// Sign a proof of control with each of `keys` by `signers`; the keys that signed.
async fn prove_all(
    orch: &strongroom_signer::client::Orchestrator,
    env: &dyn Env,
    keys: &[KeyInfo],
    signers: &[u16],
    log: &[strongroom_governance::log::Entry],
) -> anyhow::Result<Vec<String>> {
    let mut signed = Vec::new();
    for k in keys {
        orch.sign_pooled(env, k, signers, &proof(env, log))
            .await
            .map_err(|r| Problem(format!("{} by {signers:?}: {r}", k.key_id)))?;
        signed.push(k.key_id.clone());
    }
    Ok(signed)
}

async fn lost_node(
    node: u16,
    data_dir: &std::path::Path,
    api: &ApiArgs,
    json: bool,
    confirm: Confirm,
) -> anyhow::Result<Exit> {
    use strongroom_crypto::recovery::RecoverySecret;
    let (env, api, orch) = open_stack(data_dir, api)?;
    let config = data_dir.join(format!("signers/signer-{node}/signer.toml"));
    anyhow::ensure!(
        config.exists(),
        "{} is missing: this drill runs on a dev stack's node (`strongroom dev`)",
        config.display()
    );
    let cfg: strongroom_signer::Config = toml::from_str(&std::fs::read_to_string(&config)?)?;
    let kek_file = cfg
        .kek_file
        .clone()
        .context("the drill replaces a key-encryption key file; this node has none")?;
    let pid: u32 = std::fs::read_to_string(crate::signers::pid_file(&config))
        .context("no node.pid: is `strongroom dev` running this node?")?
        .trim()
        .parse()?;
    if !confirm.ask(&format!("kill signer node {node} and restore it from a backup (a drill)?"))? {
        return nothing_done(json);
    }
    let status = orch.status(node).await.map_err(|e| anyhow::anyhow!("node {node}: {e}"))?;
    let quarantined = status.quarantined.clone();
    let keys: Vec<KeyInfo> =
        status.keys.into_iter().filter(|k| k.parties.contains(&node)).collect();
    anyhow::ensure!(!keys.is_empty(), "node {node} holds no key");
    let log = server_log(&api, &env).await?;
    let stamp = env.now().unix_ms();
    let folder = data_dir.join(format!("drills/lost-node-{node}-{stamp}"));
    std::fs::create_dir_all(&folder)?;

    let mut t = Timeline::new(json);
    // Taken before the loss, as the runbook says (a backup made during the incident would
    // come from the host being lost), sealed to two of three recovery keys; the keys live
    // only for the drill.
    let holders: Vec<RecoverySecret> = (0..3).map(|_| RecoverySecret::generate(&env)).collect();
    let publics: Vec<_> = holders.iter().map(RecoverySecret::public).collect();
    let kek = strongroom_signer::node::load_kek(&cfg)?;
    let sealing = strongroom_signer::backup::Sealing::Quorum { holders: &publics, k: 2 };
    let (sealed, summary) = strongroom_signer::backup::export(&cfg, kek, sealing, &env)?;
    crate::write_secret(&folder.join(format!("node-{node}.backup")), &sealed)?;
    t.note(format!(
        "sealed backup of node {node}: {} keys, to 2 of 3 recovery keys",
        summary.keys.len()
    ));

    // The loss: the node dies and its disk with it.
    std::fs::write(crate::signers::maintenance_file(&config), "drill: lost node\n")?;
    t.note(format!("alarm: node {node}'s host is lost"));
    let killed = std::process::Command::new("kill").args(["-KILL", &pid.to_string()]).status()?;
    anyhow::ensure!(killed.success(), "could not kill node {node} (pid {pid})");
    wait_node(&orch, node, false, 10).await?;
    let lost = folder.join("lost");
    std::fs::create_dir_all(&lost)?;
    std::fs::rename(&cfg.data_dir, lost.join("data"))?;
    std::fs::rename(&kek_file, lost.join("kek"))?;
    t.note(format!(
        "node {node} down: its data and key-encryption key gone (kept in {})",
        lost.display()
    ));

    // The others go on where a threshold of them is left.
    let others: Vec<u16> = orch
        .live_nodes()
        .await
        .into_iter()
        .filter(|n| *n != node && !quarantined.contains(n))
        .collect();
    let mut still = Vec::new();
    for k in &keys {
        let pick: Vec<u16> = others
            .iter()
            .copied()
            .filter(|n| k.parties.contains(n))
            .take(usize::from(k.threshold))
            .collect();
        if pick.len() == usize::from(k.threshold) {
            still.extend(prove_all(&orch, &env, std::slice::from_ref(k), &pick, &log).await?);
        }
    }
    t.note(if still.is_empty() {
        format!("without node {node}: too few nodes left to sign")
    } else {
        format!("without node {node}: {} still sign", still.join(", "))
    });

    // The fresh host: a new key-encryption key, the backup restored under it.
    let mut k = zeroize::Zeroizing::new([0u8; 32]);
    env.fill_random(k.as_mut());
    let text = zeroize::Zeroizing::new(hex::encode(&k[..]));
    crate::write_secret(&kek_file, &text)?;
    std::fs::create_dir_all(&cfg.data_dir)?;
    // Two holders (the first and the third) bring their recovery keys.
    let quorum: Vec<RecoverySecret> = holders
        .iter()
        .step_by(2)
        .map(|h| RecoverySecret::from_hex(&h.to_hex()))
        .collect::<Result<_, _>>()?;
    let restored = strongroom_signer::backup::restore(
        &cfg,
        strongroom_signer::node::load_kek(&cfg)?,
        &sealed,
        strongroom_signer::backup::Unlock::Recovery(&quorum),
        &env,
    )?;
    t.note(format!(
        "restored onto the fresh host with 2 recovery keys, under a new key-encryption key: {} keys",
        restored.keys.len()
    ));
    std::fs::remove_file(crate::signers::maintenance_file(&config))?;
    wait_node(&orch, node, true, 30).await?;
    t.note(format!("node {node} back, with its pin"));
    let with = others.first().copied().context("no other live node")?;
    let signed = prove_all(&orch, &env, &keys, &[node, with], &log).await?;
    let recovered_ms = t.ms();
    t.note(format!("resumed: node {node} signs again with node {with} ({})", signed.join(", ")));
    t.report(
        head(&[("drill", "lost-node".into()), ("node", node.into())]),
        "time_to_recover_ms",
        recovered_ms,
        &format!("time from the alarm to node {node} signing again"),
    )
}
