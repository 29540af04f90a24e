//! The node's own view of governance. It pins the genesis hash in its configuration, keeps
//! its own copy of the log (entries arrive with requests and are appended only after the
//! whole log replays), never goes back to a shorter log, counts what it has itself signed
//! for velocity limits, and before every signature evaluates the policy in force against
//! the request's signed approvals. The orchestrator's word counts for nothing here.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use strongroom_core::Timestamp;
use strongroom_governance::gate::{decide, Subject};
use strongroom_governance::log::{replay, Entry, Genesis, State};
use strongroom_governance::policy::{Tier, VelocityLimit};
use strongroom_governance::Role;
use strongroom_units::Amount;

use crate::check::{CheckContext, Decoded, PreSignCheck};

/// One amount this node signed, for velocity limits.
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
    state: State,
    signed: Vec<Signed>,
}

#[derive(Debug)]
pub struct NodeGovernance {
    genesis: Genesis,
    pin: String,
    log_path: PathBuf,
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
    /// stored log must replay, or the node does not start.
    pub fn open(
        genesis_file: &Path,
        pin: &str,
        data_dir: &Path,
        now: Timestamp,
    ) -> anyhow::Result<Self> {
        let genesis: Genesis = serde_json::from_slice(&std::fs::read(genesis_file)?)?;
        let log_path = data_dir.join("governance.jsonl");
        let velocity_path = data_dir.join("velocity.jsonl");
        let entries: Vec<Entry> = read_lines(&log_path)?;
        let state = replay(&genesis, pin, &entries, now)?;
        let signed = read_lines(&velocity_path)?;
        Ok(NodeGovernance {
            genesis,
            pin: pin.to_owned(),
            log_path,
            velocity_path,
            inner: Mutex::new(Inner { entries, state, signed }),
        })
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, Inner>, String> {
        self.inner.lock().map_err(|_| "governance state is poisoned".to_string())
    }

    /// Take entries the request carries. Those the node has must be identical; the rest
    /// must extend its log so that the whole replays. A shorter log changes nothing: what
    /// the node once accepted (a freeze, a stricter policy) cannot be rolled back.
    pub fn extend(&self, offered: &[Entry], now: Timestamp) -> Result<(), String> {
        let mut inner = self.lock()?;
        let Some((new, state)) = strongroom_governance::log::extend(
            &self.genesis,
            &self.pin,
            &inner.entries,
            offered,
            now,
        )?
        else {
            return Ok(());
        };
        append_lines(&self.log_path, &new)
            .map_err(|e| format!("cannot store the governance log: {e}"))?;
        inner.entries.extend(new);
        inner.state = state;
        Ok(())
    }

    pub fn state(&self) -> Result<State, String> {
        Ok(self.lock()?.state.clone())
    }

    /// How much of `limit`'s asset this node signed away within its period before `now`.
    fn moved(signed: &[Signed], limit: &VelocityLimit, now: Timestamp) -> Amount {
        limit.moved(
            now,
            signed.iter().map(|s| (s.at_ms, s.wallet.as_str(), s.asset.as_str(), s.amount)),
        )
    }
}

/// The policy, whitelist and freeze check, for nodes configured with a governance genesis.
#[derive(Debug)]
pub struct GovernanceCheck {
    pub gov: Arc<NodeGovernance>,
}

impl PreSignCheck for GovernanceCheck {
    fn name(&self) -> &'static str {
        "governance"
    }

    fn check(&self, ctx: &CheckContext<'_>) -> Result<(), String> {
        let Decoded::Eip1559(tx) = ctx.tx else {
            return Err("only decoded transactions are signed under governance".into());
        };
        let mut inner = self.gov.lock()?;
        let intent = ctx.intent;
        let (asset, wallet) = (intent.asset.symbol.as_str(), intent.source_wallet.as_str());
        let req = &ctx.request;
        let master = hex::decode(&ctx.key.public_key).map_err(|_| "malformed key".to_string())?;
        let own = strongroom_chain_ethereum::EthCodec::new(intent.chain.clone())
            .and_then(|c| strongroom_chain::TxCodec::address_of(&c, &master))
            .map_err(|e| e.to_string())?;
        let subject = Subject {
            intent,
            tier: Tier::Hot,
            own_destination: tx.movement.destination == own,
            customer_id: req.customer_id.as_deref(),
            initiator: req.initiator.as_deref().unwrap_or(""),
            initiator_role: req.initiator_role.unwrap_or(Role::Operator),
        };
        let signed = &inner.signed;
        let moved = |l: &VelocityLimit| NodeGovernance::moved(signed, l, ctx.now);
        let d = decide(&inner.state, &subject, &req.approvals, &moved, ctx.now);
        if !d.allowed() {
            return Err(d.explain());
        }
        // What stays in custody (sweeps home, whitelisted internal transfers) does not count.
        let internal = strongroom_governance::gate::destination(&inner.state, &subject, ctx.now)
            == Ok(strongroom_governance::policy::Destination::Internal);
        if internal {
            return Ok(());
        }
        // Counted before the signature leaves: a refused session afterwards only makes the
        // node stricter, never looser.
        let s = Signed {
            at_ms: ctx.now.unix_ms(),
            wallet: wallet.to_owned(),
            asset: asset.to_owned(),
            amount: intent.amount,
        };
        append_lines(&self.gov.velocity_path, std::slice::from_ref(&s))
            .map_err(|e| format!("cannot record for velocity limits: {e}"))?;
        inner.signed.push(s);
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
    use strongroom_governance::log::{Change, FreezeScope, MemberSpec, WhitelistScope};
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
    ) -> Result<(), String> {
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
        let decoded = check::decode(Scheme::Ecdsa, &request, false)?;
        let ctx = CheckContext {
            node: 1,
            key: &n.key,
            intent: i,
            request: &request,
            tx: &decoded.decoded,
            now,
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
        assert!(decide(&n, &[], &small, vec![], now).unwrap_err().contains("no policy"));
        let log = with_policy();
        decide(&n, &log, &small, vec![], now).unwrap();

        let big = intent(DEST, 5 * ETH, 2);
        let e = decide(&n, &log, &big, vec![], now).unwrap_err();
        assert!(e.contains("rule large: 0 of 2 approvals"), "{e}");
        // The initiator's own approval and a second one by the same person do not count.
        let e = decide(
            &n,
            &log,
            &big,
            vec![approve("ops", &big), approve("ann", &big), approve("ann", &big)],
            now,
        )
        .unwrap_err();
        assert!(
            e.contains("1 of 2") && e.contains("initiator") && e.contains("already counted"),
            "{e}"
        );
        // An approval made for another request does not count either.
        let other = intent(DEST, 5 * ETH, 3);
        let e = decide(&n, &log, &big, vec![approve("ann", &big), approve("amy", &other)], now)
            .unwrap_err();
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
        assert!(decide(&n, &log, &i, vec![], T0 + 60_000).unwrap_err().contains("frozen"));
        // A compromised orchestrator sends the log without the freeze: the node keeps its own.
        assert!(decide(&n, &log[..1], &i, vec![], T0 + 60_000).unwrap_err().contains("frozen"));
        // After a restart too (the log is on the node's disk).
        let reopened = NodeGovernance::open(
            &n.dir.path().join("genesis.json"),
            &hex::encode(genesis().hash().unwrap()),
            n.dir.path(),
            Timestamp::from_unix_ms(T0 + 60_000),
        )
        .unwrap();
        assert!(reopened.state().unwrap().frozen("ETH", "hot-eth-1").is_some());
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
        assert!(e.contains("governance log refused"), "{e}");
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
        assert!(e.contains("time-lock"), "{e}");
        decide(&n, &log, &i, vec![], T0 + 2 * 86_400_000).unwrap();
    }

    #[test]
    fn the_node_counts_what_it_signed_against_velocity_limits() {
        let n = node();
        let log = with_policy();
        for k in 0..10 {
            decide(&n, &log, &intent(DEST, ETH, k), vec![], T0 + 60_000 + k as i64).unwrap();
        }
        let e = decide(&n, &log, &intent(DEST, 1, 99), vec![], T0 + 120_000).unwrap_err();
        assert!(e.contains("velocity limit daily"), "{e}");
        // A day later the window has moved on.
        decide(&n, &log, &intent(DEST, ETH, 100), vec![], T0 + 60_000 + 86_400_001 + 10).unwrap();
    }
}
