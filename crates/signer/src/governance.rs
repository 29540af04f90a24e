//! The node's own view of governance. It pins the genesis hash in its configuration, keeps
//! its own copy of the log (entries arrive with requests and are appended only after the
//! whole log replays), records when it first saw each entry (time-locks run on its own
//! clock from then), never goes back to a shorter log, counts what it has itself signed
//! (amounts leaving custody, and every fee) for velocity limits, and before every signature
//! evaluates the policy in force against the request's signed approvals and the fee the
//! decoded transaction can pay. The orchestrator's word counts for nothing here.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use strongroom_core::Timestamp;
use strongroom_governance::gate::{decide, Subject};
use strongroom_governance::log::{first_seen, replay_seen, Entry, Genesis, SeenRecord, State};
use strongroom_governance::policy::{Block, MessageKind, Tier, VelocityLimit};
use strongroom_governance::Role;
use strongroom_units::Amount;

use crate::check::{own_address, CheckContext, PreSignCheck};
use crate::wire::Reason;

/// One amount this node signed away, for velocity limits (a movement's amount, or a fee).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Signed {
    at_ms: i64,
    wallet: String,
    asset: String,
    amount: Amount,
}

#[derive(Debug)]
struct Inner {
    entries: Vec<Entry>,
    seen: BTreeMap<u64, Timestamp>,
    state: State,
    signed: Vec<Signed>,
}

#[derive(Debug)]
pub struct NodeGovernance {
    genesis: Genesis,
    pin: String,
    log_path: PathBuf,
    seen_path: PathBuf,
    velocity_path: PathBuf,
    inner: Mutex<Inner>,
}

fn read_lines<T: serde::de::DeserializeOwned>(path: &Path) -> anyhow::Result<Vec<T>> {
    if !path.exists() {
        return Ok(Vec::new());
    }
    std::fs::read_to_string(path)?
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| Ok(serde_json::from_str(l)?))
        .collect()
}

fn append_lines<T: Serialize>(path: &Path, items: &[T]) -> anyhow::Result<()> {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new().create(true).append(true).open(path)?;
    for i in items {
        writeln!(f, "{}", serde_json::to_string(i)?)?;
    }
    f.sync_all()?;
    Ok(())
}

impl NodeGovernance {
    /// Open with the genesis file and the pinned hash from the node's configuration; the
    /// stored log must replay, or the node does not start. An entry with no record of when
    /// it was first seen (a log from before such records) counts as seen now.
    pub fn open(
        genesis_file: &Path,
        pin: &str,
        data_dir: &Path,
        now: Timestamp,
    ) -> anyhow::Result<Self> {
        let genesis: Genesis = serde_json::from_slice(&std::fs::read(genesis_file)?)?;
        let log_path = data_dir.join("governance.jsonl");
        let seen_path = data_dir.join("governance-seen.jsonl");
        let velocity_path = data_dir.join("velocity.jsonl");
        let entries: Vec<Entry> = read_lines(&log_path)?;
        let (seen, missing) = first_seen(&entries, read_lines(&seen_path)?, now);
        append_lines(&seen_path, &missing)?;
        let state = replay_seen(&genesis, pin, &entries, now, &|q| seen.get(&q).copied())?;
        let signed = read_lines(&velocity_path)?;
        Ok(NodeGovernance {
            genesis,
            pin: pin.to_owned(),
            log_path,
            seen_path,
            velocity_path,
            inner: Mutex::new(Inner { entries, seen, state, signed }),
        })
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, Inner>, Reason> {
        self.inner
            .lock()
            .map_err(|_| Reason::Internal { detail: "governance state is poisoned".into() })
    }

    /// Take entries the request carries. Those the node has must be identical; the rest
    /// must extend its log so that the whole replays. A shorter log changes nothing: what
    /// the node once accepted (a freeze, a stricter policy) cannot be rolled back. New
    /// entries are recorded as first seen now.
    pub fn extend(&self, offered: &[Entry], now: Timestamp) -> Result<(), Reason> {
        let mut inner = self.lock()?;
        let seen = inner.seen.clone();
        let Some((new, state)) = strongroom_governance::log::extend(
            &self.genesis,
            &self.pin,
            &inner.entries,
            offered,
            now,
            &|q| seen.get(&q).copied(),
        )
        .map_err(|detail| Reason::GovernanceLog { detail })?
        else {
            return Ok(());
        };
        let stored = |e: anyhow::Error| Reason::Internal {
            detail: format!("cannot store the governance log: {e}"),
        };
        let first = SeenRecord::now(&new, now);
        append_lines(&self.seen_path, &first).map_err(stored)?;
        append_lines(&self.log_path, &new).map_err(stored)?;
        inner.seen.extend(first.iter().map(|s| (s.seq, now)));
        inner.entries.extend(new);
        inner.state = state;
        Ok(())
    }

    pub fn state(&self) -> Result<State, Reason> {
        Ok(self.lock()?.state.clone())
    }

    /// Whether the policy in force lets the nodes sign messages of `kind`.
    pub fn allows_message(&self, kind: MessageKind) -> Result<(), Reason> {
        let inner = self.lock()?;
        let (rule, version) =
            ("messages".to_owned(), inner.state.policy.as_ref().map_or(0, |p| p.version));
        match &inner.state.policy {
            Some(p) if p.messages.contains(&kind) => Ok(()),
            Some(_) => Err(Reason::Blocked {
                rule,
                version,
                block: Block::MessageNotAllowed { message: kind },
            }),
            None => Err(Reason::Blocked { rule: "policy".into(), version, block: Block::NoPolicy }),
        }
    }

    /// How much of `limit`'s asset this node signed away within its period before `now`.
    fn moved(signed: &[Signed], limit: &VelocityLimit, now: Timestamp) -> Amount {
        limit.moved(
            now,
            signed.iter().map(|s| (s.at_ms, s.wallet.as_str(), s.asset.as_str(), s.amount)),
        )
    }
}

/// The policy, whitelist, fee and freeze check, for nodes configured with a governance
/// genesis.
#[derive(Debug)]
pub struct GovernanceCheck {
    pub gov: Arc<NodeGovernance>,
}

impl PreSignCheck for GovernanceCheck {
    fn name(&self) -> &'static str {
        "governance"
    }

    fn check(&self, ctx: &CheckContext<'_>) -> Result<(), Reason> {
        let mut inner = self.gov.lock()?;
        let intent = ctx.intent;
        let (asset, wallet) = (intent.asset.symbol.as_str(), intent.source_wallet.as_str());
        let req = &ctx.request;
        let own = own_address(ctx.key, intent)?;
        let fee = ctx.tx.movement.max_fee;
        let subject = Subject {
            intent,
            tier: Tier::Hot,
            own_destination: ctx.tx.movement.destination == own,
            customer_id: req.customer_id.as_deref(),
            initiator: req.initiator.as_deref().unwrap_or(""),
            initiator_role: req.initiator_role.unwrap_or(Role::Operator),
            fee: Some(fee),
        };
        let signed = &inner.signed;
        let moved = |l: &VelocityLimit| NodeGovernance::moved(signed, l, ctx.now);
        let d = decide(&inner.state, &subject, &req.approvals, &moved, ctx.now);
        if let Some(refused) = Reason::from_decision(&d) {
            return Err(refused);
        }
        // Counted before the signature leaves: a refused session afterwards only makes the
        // node stricter, never looser. What stays in custody (sweeps home, whitelisted
        // internal transfers) counts only its fee.
        let internal = strongroom_governance::gate::destination(&inner.state, &subject, ctx.now)
            == Ok(strongroom_governance::policy::Destination::Internal);
        if ctx.repeat {
            return Ok(());
        }
        let at_ms = ctx.now.unix_ms();
        let mut spent = Vec::new();
        if !internal {
            spent.push(Signed {
                at_ms,
                wallet: wallet.to_owned(),
                asset: asset.to_owned(),
                amount: intent.amount,
            });
        }
        // The decision allowed a fee, so the policy names its ceiling and fee asset.
        if let Some(c) =
            inner.state.policy.as_ref().and_then(|p| p.fee_ceiling(intent.chain.as_str(), asset))
        {
            spent.push(Signed {
                at_ms,
                wallet: wallet.to_owned(),
                asset: c.fee_asset.clone(),
                amount: fee,
            });
        }
        append_lines(&self.gov.velocity_path, &spent).map_err(|e| Reason::Internal {
            detail: format!("cannot record for velocity limits: {e}"),
        })?;
        inner.signed.extend(spent);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use ed25519_dalek::SigningKey;
    use strongroom_chain::TxCodec;
    use strongroom_chain_ethereum::{EthCodec, EthParams};
    use strongroom_core::{Intent, IntentAsset, WalletId};
    use strongroom_governance::approval::Approval;
    use strongroom_governance::log::{replay, Change, FreezeScope, MemberSpec, WhitelistScope};
    use strongroom_governance::policy::Policy;
    use strongroom_units::{Address, AssetSymbol, ChainId};

    use super::*;
    use crate::check::{self, TxMatchesIntent};
    use crate::wire::{KeyInfo, Scheme, SignRequest, TxFormat};

    const ETH: u128 = 1_000_000_000_000_000_000;
    const T0: i64 = 1_800_000_000_000;
    const DEST: &str = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed";
    const COLD: &str = "0xdbF03B407c01E7cD3CBea99509d93f8DDDC8C6FB";
    const POLICY: &str = r#"
version = 1
[[rules]]
name = "small"
when = { max_amount = "1000000000000000000" }
action = { kind = "allow" }
[[rules]]
name = "large"
action = { kind = "approvals", count = 2, roles = ["approver"] }
[[fees]]
chain = "eip155:1"
fee_asset = "ETH"
max_fee = "100000000000000000"
[[velocity]]
name = "daily"
asset = "ETH"
period_secs = 86400
max_amount = "10000000000000000000"
"#;

    fn key(n: u8) -> SigningKey {
        SigningKey::from_bytes(&[n; 32])
    }

    fn ids() -> [(&'static str, u8, Role); 6] {
        [
            ("amy", 6, Role::Approver),
            ("ada", 1, Role::Admin),
            ("bob", 2, Role::Admin),
            ("sec", 3, Role::SecurityOfficer),
            ("ann", 4, Role::Approver),
            ("ops", 5, Role::Approver),
        ]
    }

    fn genesis() -> Genesis {
        Genesis {
            members: ids()
                .iter()
                .map(|(id, n, r)| MemberSpec {
                    id: (*id).into(),
                    public_key: hex::encode(key(*n).verifying_key().to_bytes()),
                    roles: vec![*r],
                    passkey: None,
                })
                .collect(),
            quorum: 2,
            whitelist_delay_ms: 86_400_000,
            created_at: Timestamp::from_unix_ms(T0),
            assets: vec![strongroom_governance::log::AssetSpec {
                chain: "eip155:1".into(),
                symbol: "ETH".into(),
                decimals: 18,
                contract: None,
            }],
        }
    }

    fn signer_of(id: &str) -> SigningKey {
        key(ids().iter().find(|(i, _, _)| *i == id).map(|(_, n, _)| *n).unwrap())
    }

    /// `changes` appended to `log`, each signed by the named members.
    fn grow(log: &mut Vec<Entry>, changes: Vec<(Change, &[&str])>) {
        let g = genesis();
        let pin = hex::encode(g.hash().unwrap());
        for (c, who) in changes {
            let state = replay(&g, &pin, log, Timestamp::from_unix_ms(i64::MAX)).unwrap();
            let mut e =
                state.propose(c, Timestamp::from_unix_ms(T0 + 1_000 * (log.len() as i64 + 1)));
            for w in who {
                e.sign(w, &signer_of(w)).unwrap();
            }
            log.push(e);
        }
    }

    struct Node {
        gov: Arc<NodeGovernance>,
        dir: tempfile::TempDir,
        key: KeyInfo,
    }

    fn node() -> Node {
        let dir = tempfile::tempdir().unwrap();
        let g = genesis();
        let path = dir.path().join("genesis.json");
        std::fs::write(&path, serde_json::to_vec(&g).unwrap()).unwrap();
        let pin = hex::encode(g.hash().unwrap());
        let gov =
            NodeGovernance::open(&path, &pin, dir.path(), Timestamp::from_unix_ms(T0)).unwrap();
        let pk = k256::ecdsa::SigningKey::from_slice(&[9; 32]).unwrap();
        let key = KeyInfo {
            key_id: "hot-eth-1".into(),
            scheme: Scheme::Ecdsa,
            threshold: 2,
            parties: vec![1, 2, 3],
            public_key: hex::encode(pk.verifying_key().to_encoded_point(true).as_bytes()),
            chain_code: None,
        };
        Node { gov: Arc::new(gov), dir, key }
    }

    fn intent(to: &str, amount: u128, n: u128) -> Intent {
        let chain = ChainId::parse("eip155:1").unwrap();
        Intent {
            destination: Address::parse(&chain, to).unwrap(),
            asset: IntentAsset {
                symbol: AssetSymbol::parse("ETH").unwrap(),
                decimals: 18,
                contract: None,
            },
            chain,
            source_wallet: WalletId::parse("hot-eth-1").unwrap(),
            amount: strongroom_units::Amount::from_base_units(amount).unwrap(),
            fee_cap: strongroom_units::Amount::from_base_units(10u128.pow(16)).unwrap(),
            expires_at: Timestamp::from_unix_ms(T0 + 10 * 86_400_000),
            request_id: uuid::Uuid::from_u128(n),
        }
    }

    /// The node's decision on `intent` with `approvals`, offered `log`, at `now`.
    fn decide(
        n: &Node,
        log: &[Entry],
        i: &Intent,
        approvals: Vec<Approval>,
        now: i64,
    ) -> Result<(), Reason> {
        let p = EthParams {
            nonce: 0,
            gas_limit: 21_000,
            max_fee_per_gas: 10u128.pow(9),
            max_priority_fee_per_gas: 1,
        };
        let tx = EthCodec::new(i.chain.clone()).unwrap().build(i, &p).unwrap();
        let request = SignRequest {
            intent: hex::encode(i.encode().unwrap()),
            format: TxFormat::Eip1559,
            tx: hex::encode(tx),
            approvals,
            initiator: Some("ops".into()),
            initiator_role: Some(Role::Operator),
            governance: log.to_vec(),
            ..Default::default()
        };
        let now = Timestamp::from_unix_ms(now);
        n.gov.extend(&request.governance, now)?;
        let decoded = check::decode(&n.key, &request)?;
        let check::Decoded::Eip1559 { tx, .. } = &decoded.decoded else { panic!("{decoded:?}") };
        let ctx = CheckContext {
            node: 1,
            key: &n.key,
            intent: i,
            request: &request,
            tx,
            now,
            repeat: false,
        };
        TxMatchesIntent.check(&ctx)?;
        GovernanceCheck { gov: n.gov.clone() }.check(&ctx)
    }

    fn approve(who: &str, i: &Intent) -> Approval {
        Approval::sign(
            who,
            &signer_of(who),
            &i.hash().unwrap(),
            1,
            Timestamp::from_unix_ms(T0 + 86_400_000),
        )
    }

    fn with_policy() -> Vec<Entry> {
        let mut log = Vec::new();
        grow(
            &mut log,
            vec![(
                Change::SetPolicy { policy: Policy::from_toml(POLICY).unwrap() },
                &["ada", "bob"],
            )],
        );
        log
    }

    #[test]
    fn nothing_is_signed_without_a_policy_and_large_amounts_need_two_other_approvers() {
        let n = node();
        let now = T0 + 60_000;
        let small = intent(DEST, ETH / 2, 1);
        assert!(matches!(
            decide(&n, &[], &small, vec![], now),
            Err(Reason::Blocked { block: Block::NoPolicy, .. })
        ));
        let log = with_policy();
        decide(&n, &log, &small, vec![], now).unwrap();

        let big = intent(DEST, 5 * ETH, 2);
        let e = decide(&n, &log, &big, vec![], now).unwrap_err();
        assert!(
            matches!(&e, Reason::Approvals { rule, have: 0, need: 2, .. } if rule == "large"),
            "{e}"
        );
        // The initiator's own approval and a second one by the same person do not count.
        let e = decide(
            &n,
            &log,
            &big,
            vec![approve("ops", &big), approve("ann", &big), approve("ann", &big)],
            now,
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("1 of 2") && e.contains("initiator") && e.contains("already counted"),
            "{e}"
        );
        // An approval made for another request does not count either.
        let other = intent(DEST, 5 * ETH, 3);
        let e = decide(&n, &log, &big, vec![approve("ann", &big), approve("amy", &other)], now)
            .unwrap_err()
            .to_string();
        assert!(e.contains("not for this intent"), "{e}");
        // Two other approvers: signed.
        decide(&n, &log, &big, vec![approve("ann", &big), approve("amy", &big)], now).unwrap();
    }

    #[test]
    fn a_freeze_holds_and_cannot_be_rolled_back_by_a_shorter_log() {
        let n = node();
        let mut log = with_policy();
        grow(&mut log, vec![(Change::Freeze { scope: FreezeScope::Global }, &["sec"])]);
        let i = intent(DEST, ETH / 2, 1);
        let frozen = |r: Result<(), Reason>| {
            matches!(r, Err(Reason::Blocked { block: Block::Frozen { .. }, .. }))
        };
        assert!(frozen(decide(&n, &log, &i, vec![], T0 + 60_000)));
        // A compromised orchestrator sends the log without the freeze: the node keeps its own.
        assert!(frozen(decide(&n, &log[..1], &i, vec![], T0 + 60_000)));
        // After a restart too (the log is on the node's disk).
        let reopened = NodeGovernance::open(
            &n.dir.path().join("genesis.json"),
            &hex::encode(genesis().hash().unwrap()),
            n.dir.path(),
            Timestamp::from_unix_ms(T0 + 60_000),
        )
        .unwrap();
        let now = Timestamp::from_unix_ms(T0 + 60_000);
        assert!(reopened.state().unwrap().frozen("ETH", "hot-eth-1", now).is_some());
    }

    #[test]
    fn a_tampered_log_is_refused_and_stored_nowhere() {
        let n = node();
        let mut log = with_policy();
        if let Change::SetPolicy { policy } = &mut log[0].change {
            policy.rules[0].when.max_amount =
                Some(strongroom_units::Amount::from_base_units(1_000 * ETH).unwrap());
        }
        let e = decide(&n, &log, &intent(DEST, 5 * ETH, 1), vec![], T0 + 60_000).unwrap_err();
        assert!(matches!(e, Reason::GovernanceLog { .. }), "{e}");
        assert!(n.gov.state().unwrap().policy.is_none());
        assert!(!n.dir.path().join("governance.jsonl").exists());
    }

    #[test]
    fn a_whitelisted_address_waits_out_its_time_lock() {
        let n = node();
        let mut log = with_policy();
        let scope = WhitelistScope::Internal { chain: "eip155:1".into() };
        grow(
            &mut log,
            vec![(
                Change::WhitelistAdd { scope, address: COLD.into(), label: "cold".into() },
                &["ada", "bob"],
            )],
        );
        let i = intent(COLD, ETH / 2, 1);
        let e = decide(&n, &log, &i, vec![], T0 + 60_000).unwrap_err();
        assert!(matches!(e, Reason::Blocked { block: Block::TimeLocked { .. }, .. }), "{e}");
        decide(&n, &log, &i, vec![], T0 + 2 * 86_400_000).unwrap();
    }

    #[test]
    fn the_node_counts_what_it_signed_against_velocity_limits() {
        let n = node();
        let log = with_policy();
        // Nine ETH and nine fees: under the 10 ETH daily limit. One more ETH with its fee
        // is over it.
        for k in 0..9 {
            decide(&n, &log, &intent(DEST, ETH, k), vec![], T0 + 60_000 + k as i64).unwrap();
        }
        let e = decide(&n, &log, &intent(DEST, ETH, 99), vec![], T0 + 120_000).unwrap_err();
        assert!(
            matches!(&e, Reason::Blocked { block: Block::Velocity { limit, .. }, .. } if limit == "daily"),
            "{e}"
        );
        // A day later the window has moved on.
        decide(&n, &log, &intent(DEST, ETH, 100), vec![], T0 + 60_000 + 86_400_001 + 10).unwrap();
    }
}
