//! Governance attacks that must fail, and the single-actor property. Each test builds a
//! real log with real Ed25519 keys and replays it as a signer node would.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)] // Test code.

use ed25519_dalek::SigningKey;
use proptest::prelude::*;
use strongroom_core::{Intent, IntentAsset, Timestamp, WalletId};
use strongroom_governance::approval::Approval;
use strongroom_governance::log::{
    replay, replay_seen, Change, Entry, FreezeScope, Genesis, GovError, Listed, MemberSpec, State,
    WhitelistScope,
};
use strongroom_governance::policy::{
    evaluate, Block, Decision, Destination, Initiator, Outcome, Policy, PolicyError, Request, Tier,
    VelocityLimit,
};
use strongroom_governance::Role;
use strongroom_units::{Address, Amount, AssetSymbol, ChainId};

const ETH: u128 = 1_000_000_000_000_000_000;
const DAY_MS: i64 = 86_400_000;
const T0: i64 = 1_800_000_000_000;

fn key(n: u8) -> SigningKey {
    SigningKey::from_bytes(&[n; 32])
}

fn spec(id: &str, n: u8, roles: &[Role]) -> MemberSpec {
    MemberSpec {
        id: id.into(),
        public_key: hex::encode(key(n).verifying_key().to_bytes()),
        roles: roles.to_vec(),
        passkey: None,
    }
}

/// Three admins (quorum 2), a security officer, two approvers, an operator.
fn genesis() -> Genesis {
    Genesis {
        members: vec![
            spec("ada", 1, &[Role::Admin]),
            spec("bob", 2, &[Role::Admin]),
            spec("cy", 3, &[Role::Admin]),
            spec("sec", 4, &[Role::SecurityOfficer]),
            spec("ann", 5, &[Role::Approver]),
            spec("ben", 6, &[Role::Approver]),
            spec("ops", 7, &[Role::Operator, Role::Approver]),
        ],
        quorum: 2,
        whitelist_delay_ms: DAY_MS,
        created_at: Timestamp::from_unix_ms(T0),
        assets: vec![strongroom_governance::log::AssetSpec {
            chain: "eip155:1".into(),
            symbol: "ETH".into(),
            decimals: 18,
            contract: None,
        }],
    }
}

fn member_key(id: &str) -> SigningKey {
    let n = match id {
        "ada" => 1,
        "bob" => 2,
        "cy" => 3,
        "sec" => 4,
        "ann" => 5,
        "ben" => 6,
        _ => 7,
    };
    key(n)
}

/// A log of `changes`, each signed by the members named beside it, one minute apart.
fn log_of(changes: Vec<(Change, Vec<&str>)>) -> Vec<Entry> {
    let g = genesis();
    let pinned = hex::encode(g.hash().unwrap());
    let mut entries: Vec<Entry> = Vec::new();
    for (i, (change, signers)) in changes.into_iter().enumerate() {
        let state = replay(&g, &pinned, &entries, Timestamp::from_unix_ms(i64::MAX)).unwrap();
        let mut e = state.propose(change, Timestamp::from_unix_ms(T0 + 60_000 * (i as i64 + 1)));
        for s in signers {
            e.sign(s, &member_key(s)).unwrap();
        }
        entries.push(e);
    }
    entries
}

fn state_at(entries: &[Entry], now: i64) -> Result<State, GovError> {
    let g = genesis();
    replay(&g, &hex::encode(g.hash().unwrap()), entries, Timestamp::from_unix_ms(now))
}

const POLICY: &str = r#"
version = 1

[[rules]]
name = "small-hot"
when = { tier = "hot", max_amount = "1000000000000000000" }
action = { kind = "allow" }

[[rules]]
name = "medium-two-approvers"
when = { max_amount = "100000000000000000000" }
action = { kind = "approvals", count = 2, roles = ["approver"] }

[[rules]]
name = "everything-else"
action = { kind = "block", reason = "above 100 ETH: move it from cold storage" }

[[velocity]]
name = "hot-eth-daily"
wallet = "hot-eth-1"
asset = "ETH"
period_secs = 86400
max_amount = "10000000000000000000"
"#;

fn chain() -> ChainId {
    ChainId::parse("eip155:1").unwrap()
}

fn intent(amount: u128, request: u128) -> Intent {
    Intent {
        chain: chain(),
        asset: IntentAsset {
            symbol: AssetSymbol::parse("ETH").unwrap(),
            decimals: 18,
            contract: None,
        },
        source_wallet: WalletId::parse("hot-eth-1").unwrap(),
        destination: Address::parse(&chain(), "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed")
            .unwrap(),
        amount: Amount::from_base_units(amount).unwrap(),
        fee_cap: Amount::from_base_units(10u128.pow(16)).unwrap(),
        expires_at: Timestamp::from_unix_ms(T0 + DAY_MS),
        request_id: uuid::Uuid::from_u128(request),
    }
}

fn approve(who: &str, i: &Intent, version: u64, expires: i64) -> Approval {
    Approval::sign(
        who,
        &member_key(who),
        &i.hash().unwrap(),
        version,
        Timestamp::from_unix_ms(expires),
    )
}

fn decide(
    state: &State,
    i: &Intent,
    initiator: &str,
    approvals: &[Approval],
    moved: u128,
) -> Decision {
    decide_fee(state, i, Destination::External, None, initiator, approvals, moved)
}

fn decide_fee(
    state: &State,
    i: &Intent,
    destination: Destination,
    fee: Option<u128>,
    initiator: &str,
    approvals: &[Approval],
    moved: u128,
) -> Decision {
    let policy = state.policy.as_ref().unwrap();
    let req = Request {
        intent: i,
        intent_hash: i.hash().unwrap(),
        tier: Tier::Hot,
        destination,
        initiator: Initiator::Claimed { member: initiator, roles: &[Role::Operator] },
        fee: fee.map(|f| Amount::from_base_units(f).unwrap()),
    };
    let moved = move |_: &VelocityLimit| Amount::from_base_units(moved).unwrap();
    evaluate(
        policy,
        &state.members,
        &req,
        approvals,
        &moved,
        Timestamp::from_unix_ms(T0 + 3_600_000),
    )
}

fn with_policy() -> State {
    let p = Policy::from_toml(POLICY).unwrap();
    state_at(&log_of(vec![(Change::SetPolicy { policy: p }, vec!["ada", "bob"])]), T0 + DAY_MS)
        .unwrap()
}

#[test]
fn a_large_withdrawal_waits_for_two_distinct_valid_approvals() {
    let s = with_policy();
    let small = intent(ETH / 2, 1);
    assert_eq!(
        decide(&s, &small, "ops", &[], 0),
        Decision { outcome: Outcome::Allow, rule: "small-hot".into(), version: 1 }
    );

    let big = intent(5 * ETH, 2);
    let later = T0 + 2 * 3_600_000;
    let wait = decide(&s, &big, "ops", &[approve("ann", &big, 1, later)], 0);
    assert!(matches!(wait.outcome, Outcome::Wait { have: 1, need: 2, .. }), "{wait:?}");
    assert_eq!(wait.rule, "medium-two-approvers");
    let ok = decide(
        &s,
        &big,
        "ops",
        &[approve("ann", &big, 1, later), approve("ben", &big, 1, later)],
        0,
    );
    assert!(ok.allowed(), "{ok:?}");

    // Above the top tier (from a wallet without a velocity limit, so the tier decides).
    let mut huge = intent(500 * ETH, 3);
    huge.source_wallet = WalletId::parse("hot-eth-2").unwrap();
    let all = ["ann", "ben", "ada"].map(|a| approve(a, &huge, 1, later));
    assert!(
        matches!(decide(&s, &huge, "ops", &all, 0).outcome, Outcome::Block(Block::Rule { reason }) if reason.contains("cold storage"))
    );
}

#[test]
fn approvals_that_must_not_count_do_not() {
    let s = with_policy();
    let big = intent(5 * ETH, 2);
    let later = T0 + 2 * 3_600_000;
    let ann = approve("ann", &big, 1, later);
    let not_counted = |approvals: Vec<Approval>, initiator: &str| match decide(
        &s, &big, initiator, &approvals, 0,
    )
    .outcome
    {
        Outcome::Wait { have, not_counted, .. } => (have, not_counted.join("; ")),
        other => panic!("should wait: {other:?}"),
    };
    // Replayed from another request.
    let other = intent(5 * ETH, 99);
    let (have, why) = not_counted(vec![ann.clone(), approve("ben", &other, 1, later)], "ops");
    assert_eq!(have, 1);
    assert!(why.contains("not for this intent"), "{why}");
    // Expired.
    let (have, why) = not_counted(vec![ann.clone(), approve("ben", &big, 1, T0 + 60_000)], "ops");
    assert_eq!((have, why.contains("expired")), (1, true), "{why}");
    // The initiator approving their own request.
    let (have, why) = not_counted(vec![ann.clone(), approve("ben", &big, 1, later)], "ben");
    assert_eq!((have, why.contains("initiator")), (1, true), "{why}");
    // Two approvals from the same person.
    let (have, why) = not_counted(vec![ann.clone(), approve("ann", &big, 1, later + 1)], "ops");
    assert_eq!((have, why.contains("already counted")), (1, true), "{why}");
    // Under another policy version.
    let (have, why) = not_counted(vec![ann.clone(), approve("ben", &big, 2, later)], "ops");
    assert_eq!((have, why.contains("policy version")), (1, true), "{why}");
    // Signed by someone else's key under ben's name, or by a non-approver.
    let mut forged = approve("ann", &big, 1, later);
    forged.approver = "ben".into();
    let (have, why) = not_counted(vec![ann.clone(), forged], "ops");
    assert_eq!((have, why.contains("does not verify")), (1, true), "{why}");
    let (have, why) = not_counted(vec![ann, approve("ada", &big, 1, later)], "ops");
    assert_eq!((have, why.contains("lacks the role")), (1, true), "{why}");
}

#[test]
fn velocity_limits_block_whatever_the_approvals() {
    let s = with_policy();
    let i = intent(ETH / 2, 1);
    let d = decide(&s, &i, "ops", &[], 10 * ETH - ETH / 4);
    assert_eq!(d.rule, "hot-eth-daily");
    assert!(
        matches!(&d.outcome, Outcome::Block(Block::Velocity { limit, .. }) if limit == "hot-eth-daily"),
        "{d:?}"
    );
}

#[test]
fn movements_into_our_own_wallets_neither_count_nor_hit_velocity_limits() {
    let s = with_policy();
    let i = intent(ETH / 2, 77);
    let req = |destination| Request {
        intent: &i,
        intent_hash: i.hash().unwrap(),
        tier: Tier::Hot,
        destination,
        initiator: Initiator::Claimed { member: "ops", roles: &[Role::Operator] },
        fee: None,
    };
    let spent = |_: &VelocityLimit| Amount::from_base_units(10 * ETH).unwrap();
    let now = Timestamp::from_unix_ms(T0 + 3_600_000);
    let p = s.policy.as_ref().unwrap();
    let out = evaluate(p, &s.members, &req(Destination::External), &[], &spent, now);
    assert_eq!(out.rule, "hot-eth-daily", "{out:?}");
    let home = evaluate(p, &s.members, &req(Destination::Internal), &[], &spent, now);
    assert!(home.allowed(), "{home:?}");
}

#[test]
fn policies_that_could_leave_a_request_undecided_are_refused() {
    let no_default = POLICY.replace(
        "name = \"everything-else\"\naction",
        "name = \"everything-else\"\nwhen = { tier = \"cold\" }\naction",
    );
    assert!(Policy::from_toml(&no_default)
        .unwrap_err()
        .to_string()
        .contains("must match everything"));
    let zero = POLICY.replace("count = 2", "count = 0");
    assert_ne!(zero, POLICY);
    assert!(Policy::from_toml(&zero).is_err());
    assert!(Policy::from_toml("version = 1\nrules = []").is_err());
    let typo = POLICY.replace("max_amount = \"1000000000000000000\"", "maxamount = \"1\"");
    assert!(Policy::from_toml(&typo).is_err(), "unknown fields are refused");
}

#[test]
fn the_log_refuses_edits_insertions_missing_quorums_and_strangers() {
    let p = Policy::from_toml(POLICY).unwrap();
    let good = log_of(vec![(Change::SetPolicy { policy: p.clone() }, vec!["ada", "bob"])]);
    state_at(&good, T0 + DAY_MS).unwrap();

    // A policy row edited after signing (the database is not the truth).
    let mut edited = good.clone();
    if let Change::SetPolicy { policy } = &mut edited[0].change {
        policy.rules[0].when.max_amount = Some(Amount::from_base_units(1_000 * ETH).unwrap());
    }
    assert!(
        matches!(state_at(&edited, T0 + DAY_MS), Err(GovError::Entry { seq: 1, ref reason }) if reason.contains("does not verify"))
    );

    // One admin, or one admin twice, is not a quorum; approvers are not admins.
    for signers in [vec!["ada"], vec!["ada", "ada"], vec!["ada", "ann"]] {
        let one = log_of(vec![(Change::SetPolicy { policy: p.clone() }, signers.clone())]);
        let err = state_at(&one, T0 + DAY_MS).unwrap_err();
        assert!(err.to_string().contains("needs 2 distinct admins"), "{signers:?}: {err}");
    }

    // An entry slipped in with a made-up link, or out of order.
    let mut inserted = good.clone();
    let mut rogue = state_at(&good, T0 + DAY_MS)
        .unwrap()
        .propose(Change::SetQuorum { quorum: 1 }, Timestamp::from_unix_ms(T0 + 120_000));
    rogue.prev = "00".repeat(32);
    rogue.sign("ada", &member_key("ada")).unwrap();
    rogue.sign("bob", &member_key("bob")).unwrap();
    inserted.push(rogue);
    assert!(state_at(&inserted, T0 + DAY_MS).unwrap_err().to_string().contains("does not link"));

    // Another genesis than the pinned one.
    let mut g = genesis();
    g.quorum = 1;
    assert_eq!(
        replay(&g, &hex::encode(genesis().hash().unwrap()), &good, Timestamp::from_unix_ms(T0)),
        Err(GovError::WrongGenesis)
    );

    // A signer who is not a member.
    let mut stranger = state_at(&[], T0).unwrap().propose(
        Change::Freeze { scope: FreezeScope::Global, reason: None },
        Timestamp::from_unix_ms(T0 + 1),
    );
    stranger.sign("mallory", &key(66)).unwrap();
    assert!(state_at(&[stranger], T0 + 1).unwrap_err().to_string().contains("not a member"));
}

#[test]
fn a_whitelist_entry_is_usable_only_after_its_time_lock_and_can_be_cancelled() {
    let scope = WhitelistScope::Internal { chain: "eip155:1".into() };
    let cold = "0xdbF03B407c01E7cD3CBea99509d93f8DDDC8C6FB";
    let add =
        Change::WhitelistAdd { scope: scope.clone(), address: cold.into(), label: "cold-1".into() };
    let log = log_of(vec![(add.clone(), vec!["ada", "cy"])]);
    let added_at = T0 + 60_000;
    let s = state_at(&log, T0 + DAY_MS * 2).unwrap();
    assert_eq!(
        s.listed(&scope, cold, Timestamp::from_unix_ms(added_at + 1)),
        Listed::Pending(Timestamp::from_unix_ms(added_at + DAY_MS))
    );
    assert_eq!(
        s.listed(&scope, &cold.to_lowercase(), Timestamp::from_unix_ms(added_at + DAY_MS)),
        Listed::Usable
    );
    assert_eq!(
        s.listed(
            &WhitelistScope::Internal { chain: "eip155:5".into() },
            cold,
            Timestamp::from_unix_ms(added_at + DAY_MS)
        ),
        Listed::No
    );
    // Cancelled inside its time-lock by one admin: gone.
    let cancelled = log_of(vec![
        (add.clone(), vec!["ada", "cy"]),
        (Change::CancelPending { seq: 1 }, vec!["bob"]),
    ]);
    let s = state_at(&cancelled, T0 + DAY_MS * 2).unwrap();
    assert_eq!(s.listed(&scope, cold, Timestamp::from_unix_ms(added_at + DAY_MS)), Listed::No);
    // One admin cannot add alone.
    let alone = log_of(vec![(add, vec!["ada"])]);
    assert!(state_at(&alone, T0 + DAY_MS).is_err());
}

#[test]
fn one_officer_freezes_at_once_and_only_a_quorum_unfreezes() {
    let scope = FreezeScope::Asset { asset: "ETH".into() };
    let frozen = log_of(vec![(Change::Freeze { scope: scope.clone(), reason: None }, vec!["sec"])]);
    let s = state_at(&frozen, T0 + DAY_MS).unwrap();
    let now = Timestamp::from_unix_ms(T0 + DAY_MS);
    assert_eq!(s.frozen("ETH", "hot-eth-1", now).map(|f| f.scope), Some(scope.clone()));
    assert_eq!(s.frozen("BTC", "hot-btc-1", now), None);
    let one = log_of(vec![
        (Change::Freeze { scope: scope.clone(), reason: None }, vec!["sec"]),
        (Change::Unfreeze { scope: scope.clone() }, vec!["ada"]),
    ]);
    assert!(state_at(&one, T0 + DAY_MS)
        .unwrap_err()
        .to_string()
        .contains("needs 2 distinct admins"));
    let two = log_of(vec![
        (Change::Freeze { scope: scope.clone(), reason: None }, vec!["sec"]),
        (Change::Unfreeze { scope }, vec!["ada", "bob"]),
    ]);
    assert_eq!(
        state_at(&two, T0 + DAY_MS).unwrap().frozen(
            "ETH",
            "hot-eth-1",
            Timestamp::from_unix_ms(T0 + DAY_MS)
        ),
        None
    );
    // An approver cannot freeze (nor an operator): only officers and admins.
    let by_approver =
        log_of(vec![(Change::Freeze { scope: FreezeScope::Global, reason: None }, vec!["ann"])]);
    assert!(state_at(&by_approver, T0 + DAY_MS).is_err()); // A reason is kept with the freeze; an entry without one hashes as before the field
                                                           // existed; a reason past the limit (or with control characters) is refused.
    let why =
        Change::Freeze { scope: FreezeScope::Global, reason: Some("hot wallet drain".into()) };
    assert!(state_at(&log_of(vec![(why.clone(), vec!["sec"])]), T0 + DAY_MS).is_ok());
    assert!(serde_json::to_string(&why).unwrap().contains("hot wallet drain"));
    let plain = Change::Freeze { scope: FreezeScope::Global, reason: None };
    assert_eq!(
        serde_json::to_string(&plain).unwrap(),
        r#"{"change":"freeze","scope":{"kind":"global"}}"#
    );
    let long = "x".repeat(strongroom_governance::log::MAX_FREEZE_REASON + 1);
    for bad in [long, "line\nbreak".to_owned()] {
        let c = Change::Freeze { scope: FreezeScope::Global, reason: Some(bad) };
        assert!(state_at(&log_of(vec![(c, vec!["sec"])]), T0 + DAY_MS).is_err());
    }
}

proptest! {
    /// No sequence of requests by one actor (who is also an approver and signs whatever
    /// approvals it likes, replays included) moves more than the single-actor limit: each
    /// allowed request is within the no-approval tier, and together they stay within the
    /// velocity limit.
    #[test]
    fn one_actor_never_moves_more_than_the_single_actor_limit(
        steps in proptest::collection::vec((1u128..=20 * ETH, 0usize..4, any::<bool>()), 1..40)
    ) {
        let s = with_policy();
        let later = T0 + 2 * 3_600_000;
        let mut moved = 0u128;
        let mut seen: Vec<Approval> = Vec::new();
        for (n, (amount, how, replay)) in steps.into_iter().enumerate() {
            let i = intent(amount, n as u128);
            let fresh: Vec<Approval> =
                (0..how).map(|k| approve("ops", &i, 1, later + k as i64)).collect();
            let mut approvals = fresh.clone();
            if replay {
                // Every approval this actor ever made, for other requests too.
                approvals.extend(seen.iter().cloned());
            }
            seen.extend(fresh);

            let d = decide(&s, &i, "ops", &approvals, moved);
            if d.allowed() {
                prop_assert!(amount <= ETH, "allowed {amount} beyond the single-actor tier by {}", d.rule);
                moved += amount;
            }
            prop_assert!(moved <= 10 * ETH);
        }
    }
}

proptest! {
    /// One admin alone (or any one member) cannot change governance in a way that loosens
    /// it: a laxer policy, a new member, a lower quorum, an unfreeze or a whitelist entry
    /// signed by one person does not replay; only a freeze, which tightens, takes one.
    #[test]
    fn one_member_alone_cannot_loosen_governance(who in 0usize..7, kind in 0usize..6) {
        let id = ["ada", "bob", "cy", "sec", "ann", "ben", "ops"][who];
        let lax = Policy::from_toml(
            "version = 2\n[[rules]]\nname = \"all\"\naction = { kind = \"allow\" }\n",
        )
        .unwrap();
        let change = match kind {
            0 => Change::SetPolicy { policy: lax },
            1 => Change::AddMember { member: spec("eve", 9, &[Role::Admin, Role::Approver]) },
            2 => Change::SetQuorum { quorum: 1 },
            3 => Change::Unfreeze { scope: FreezeScope::Global },
            4 => Change::WhitelistAdd {
                scope: WhitelistScope::Internal { chain: "eip155:1".into() },
                address: "0xdbF03B407c01E7cD3CBea99509d93f8DDDC8C6FB".into(),
                label: "mine".into(),
            },
            _ => Change::RemoveMember { id: "ada".into() },
        };
        let mut changes = vec![(
            Change::SetPolicy { policy: Policy::from_toml(POLICY).unwrap() },
            vec!["ada", "bob"],
        )];
        if kind == 3 {
            changes.push((Change::Freeze { scope: FreezeScope::Global, reason: None }, vec!["sec"]));
        }
        changes.push((change, vec![id]));
        let log = log_of(changes);
        prop_assert!(state_at(&log, T0 + 2 * DAY_MS).is_err(), "{id} alone changed governance");
        // The same change signed twice by the same person is still one person.
        let mut twice = log.clone();
        let last = twice.last_mut().unwrap();
        last.sign(id, &member_key(id)).unwrap();
        prop_assert!(state_at(&twice, T0 + 2 * DAY_MS).is_err());
    }
}

#[path = "../../server/tests/support/authenticator.rs"]
mod authenticator;

/// A member's passkey in the log, and approvals made with it: they count for the exact
/// approval they answer, from the member's origin and relying party, with the user verified
/// by the authenticator, under the registered key, and for nothing else.
#[test]
fn a_passkey_approval_counts_only_for_its_challenge_origin_party_and_verified_user() {
    use strongroom_governance::webauthn::{challenge_b64, Assertion, PasskeySpec};
    let origin = "https://console.example";
    let mut ann_key = authenticator::SoftAuthenticator::new(origin);
    let spec = PasskeySpec {
        rp_id: "console.example".into(),
        origin: origin.into(),
        credential_id: ann_key.credential_id_b64(),
        public_key: hex::encode(ann_key.public_key_sec1()),
    };
    let p = Policy::from_toml(POLICY).unwrap();
    // One admin cannot register a passkey for a member; the quorum can.
    let one = log_of(vec![
        (Change::SetPolicy { policy: p.clone() }, vec!["ada", "bob"]),
        (Change::SetPasskey { id: "ann".into(), passkey: spec.clone() }, vec!["ada"]),
    ]);
    assert!(state_at(&one, T0 + DAY_MS).is_err());
    // Nor can the quorum alone (the key reached the admins from the server): the member's
    // own signature says the passkey is theirs.
    let quorum_only = log_of(vec![
        (Change::SetPolicy { policy: p.clone() }, vec!["ada", "bob"]),
        (Change::SetPasskey { id: "ann".into(), passkey: spec.clone() }, vec!["ada", "bob"]),
    ]);
    let e = state_at(&quorum_only, T0 + DAY_MS).unwrap_err().to_string();
    assert!(e.contains("ann's own signature"), "{e}");
    let s = state_at(
        &log_of(vec![
            (Change::SetPolicy { policy: p }, vec!["ada", "bob"]),
            (Change::SetPasskey { id: "ann".into(), passkey: spec }, vec!["ada", "bob", "ann"]),
        ]),
        T0 + DAY_MS,
    )
    .unwrap();
    let big = intent(5 * ETH, 2);
    let later = T0 + 2 * 3_600_000;
    let with_key = |k: &mut authenticator::SoftAuthenticator,
                    who: &str,
                    signed_for: &Intent,
                    claimed: &Intent,
                    rp: &str| {
        let msg = Approval::message(&signed_for.hash().unwrap(), 1, Timestamp::from_unix_ms(later));
        let a = k.sign_assertion(rp, &serde_json::json!(challenge_b64(&msg)));
        let r = &a["response"];
        let text = |f: &str| r[f].as_str().unwrap().to_owned();
        Approval::with_passkey(
            who,
            &claimed.hash().unwrap(),
            1,
            Timestamp::from_unix_ms(later),
            Assertion {
                authenticator_data: text("authenticatorData"),
                client_data_json: text("clientDataJSON"),
                signature: text("signature"),
            },
        )
    };
    let ben = approve("ben", &big, 1, later);
    let good = with_key(&mut ann_key, "ann", &big, &big, "console.example");
    let ok = decide(&s, &big, "ops", &[good.clone(), ben.clone()], 0);
    assert!(ok.allowed(), "{ok:?}");
    // The approval survives the trip through JSON (the API and the signer requests).
    let back: Approval = serde_json::from_str(&serde_json::to_string(&good).unwrap()).unwrap();
    assert!(decide(&s, &big, "ops", &[back, ben.clone()], 0).allowed());

    let refused =
        |a: Approval, want: &str| match decide(&s, &big, "ops", &[a, ben.clone()], 0).outcome {
            Outcome::Wait { have: 1, not_counted, .. } => {
                let why = not_counted.join("; ");
                assert!(why.contains(want), "{why} should say {want}");
            }
            other => panic!("should wait: {other:?}"),
        };
    // Signed for another intent, and presented for this one.
    let other = intent(5 * ETH, 77);
    refused(with_key(&mut ann_key, "ann", &other, &big, "console.example"), "another challenge");
    // From a phishing origin, or for another relying party.
    ann_key.origin = "https://console.example.evil".into();
    refused(with_key(&mut ann_key, "ann", &big, &big, "console.example"), "origin");
    ann_key.origin = origin.into();
    refused(with_key(&mut ann_key, "ann", &big, &big, "evil.example"), "relying party");
    // Without user verification (no PIN or biometrics).
    ann_key.user_verified = false;
    refused(with_key(&mut ann_key, "ann", &big, &big, "console.example"), "UV");
    ann_key.user_verified = true;
    // Another authenticator's key, and a member with no passkey.
    let mut stranger = authenticator::SoftAuthenticator::new(origin);
    refused(with_key(&mut stranger, "ann", &big, &big, "console.example"), "does not verify");
    let ben_pk = with_key(&mut stranger, "ben", &big, &big, "console.example");
    match decide(&s, &big, "ops", &[good, ben_pk], 0).outcome {
        Outcome::Wait { have: 1, not_counted, .. } => {
            assert!(not_counted.join("; ").contains("no passkey is registered"))
        }
        other => panic!("should wait: {other:?}"),
    }
}

/// A member signs a governance entry with their registered passkey (the challenge is the
/// entry's hash): it counts like their key for that entry only, with the user verified, and
/// never for a change to who governs (members, passkeys, the quorum), which takes the keys
/// members hold.
#[test]
fn a_passkey_signs_a_governance_entry_but_never_one_that_changes_who_governs() {
    use strongroom_governance::log::Signoff;
    use strongroom_governance::webauthn::{challenge_b64, Assertion, PasskeySpec};
    let origin = "https://console.example";
    let mut keys = std::collections::BTreeMap::new();
    let mut passkeys = Vec::new();
    for who in ["sec", "ada", "bob"] {
        let k = authenticator::SoftAuthenticator::new(origin);
        let spec = PasskeySpec {
            rp_id: "console.example".into(),
            origin: origin.into(),
            credential_id: k.credential_id_b64(),
            public_key: hex::encode(k.public_key_sec1()),
        };
        passkeys
            .push((Change::SetPasskey { id: who.into(), passkey: spec }, vec!["ada", "bob", who]));
        keys.insert(who, k);
    }
    let mut entries = log_of(passkeys);
    let g = genesis();
    let pinned = hex::encode(g.hash().unwrap());
    let at = |i: i64| Timestamp::from_unix_ms(T0 + DAY_MS + i);
    let state = replay(&g, &pinned, &entries, at(0)).unwrap();
    let assertion = |k: &mut authenticator::SoftAuthenticator, challenge: &[u8; 32]| {
        let a = k.sign_assertion("console.example", &serde_json::json!(challenge_b64(challenge)));
        let text = |f: &str| a["response"][f].as_str().unwrap().to_owned();
        Assertion {
            authenticator_data: text("authenticatorData"),
            client_data_json: text("clientDataJSON"),
            signature: text("signature"),
        }
    };
    let asset = FreezeScope::Asset { asset: "ETH".into() };
    let freeze = state.propose(Change::Freeze { scope: asset.clone(), reason: None }, at(1));
    let with = |e: &Entry, signoffs: Vec<Signoff>| {
        let mut e = e.clone();
        e.signoffs = signoffs;
        let mut all = entries.clone();
        all.push(e);
        replay(&g, &pinned, &all, at(2))
    };
    let sec = |k: &mut authenticator::SoftAuthenticator, challenge: &[u8; 32]| {
        Signoff::passkey("sec", assertion(k, challenge))
    };

    // An assertion for another entry's hash (what a lying page would ask for), one without
    // user verification, one by another authenticator, one claimed for a member whose
    // passkey it is not: refused, each saying why.
    let other = state.propose(Change::Freeze { scope: FreezeScope::Global, reason: None }, at(1));
    let refused = |r: Result<State, GovError>, want: &str| {
        let e = r.unwrap_err().to_string();
        assert!(e.contains(want), "{e} should say {want}");
    };
    let sk = keys.get_mut("sec").unwrap();
    refused(with(&freeze, vec![sec(sk, &other.hash().unwrap())]), "another challenge");
    sk.user_verified = false;
    refused(with(&freeze, vec![sec(sk, &freeze.hash().unwrap())]), "UV");
    sk.user_verified = true;
    let mut stranger = authenticator::SoftAuthenticator::new(origin);
    refused(with(&freeze, vec![sec(&mut stranger, &freeze.hash().unwrap())]), "does not verify");
    let ann = Signoff::passkey("ann", assertion(sk, &freeze.hash().unwrap()));
    refused(with(&freeze, vec![ann]), "ann has no passkey");
    // A signoff that carries both kinds, or neither.
    let mut both = sec(sk, &freeze.hash().unwrap());
    both.signature = "00".repeat(64);
    refused(with(&freeze, vec![both]), "both");
    refused(
        with(
            &freeze,
            vec![Signoff { member: "sec".into(), signature: String::new(), passkey: None }],
        ),
        "no signature",
    );

    // The honest signoff: the officer's passkey alone freezes ETH.
    let good = sec(sk, &freeze.hash().unwrap());
    let frozen = with(&freeze, vec![good.clone()]).unwrap();
    assert!(frozen.frozen("ETH", "hot-eth-1", at(2)).is_some());
    // It survives the trip through JSON (the API, the nodes' wire, the stored log).
    let mut signed = freeze.clone();
    signed.signoffs = vec![good];
    let back: Entry = serde_json::from_str(&serde_json::to_string(&signed).unwrap()).unwrap();
    assert_eq!(back, signed);
    entries.push(back);
    let state = replay(&g, &pinned, &entries, at(3)).unwrap();

    // Two admins' passkeys make a quorum for an unfreeze, but not for adding a member, nor
    // for changing the quorum or a passkey: those need the keys the admins hold.
    let unfreeze = state.propose(Change::Unfreeze { scope: asset }, at(4));
    let h = unfreeze.hash().unwrap();
    let both_admins =
        |keys: &mut std::collections::BTreeMap<&str, authenticator::SoftAuthenticator>,
         h: &[u8; 32]| {
            vec![
                Signoff::passkey("ada", assertion(keys.get_mut("ada").unwrap(), h)),
                Signoff::passkey("bob", assertion(keys.get_mut("bob").unwrap(), h)),
            ]
        };
    let mut e = unfreeze.clone();
    e.signoffs = both_admins(&mut keys, &h);
    let mut all = entries.clone();
    all.push(e);
    let lifted = replay(&g, &pinned, &all, at(5)).unwrap();
    assert!(lifted.frozen("ETH", "hot-eth-1", at(5)).is_none());
    for change in [
        Change::AddMember { member: spec("eve", 9, &[Role::Admin]) },
        Change::SetQuorum { quorum: 3 },
        Change::RemoveMember { id: "cy".into() },
    ] {
        let e = state.propose(change, at(4));
        let signoffs = both_admins(&mut keys, &e.hash().unwrap());
        let mut all = entries.clone();
        let mut e2 = e.clone();
        e2.signoffs = signoffs;
        all.push(e2);
        let why = replay(&g, &pinned, &all, at(5)).unwrap_err().to_string();
        assert!(why.contains("takes the key they hold"), "{why}");
        // The same change with the admins' keys stands.
        let mut e3 = e;
        e3.sign("ada", &member_key("ada")).unwrap();
        e3.sign("bob", &member_key("bob")).unwrap();
        let mut all = entries.clone();
        all.push(e3);
        replay(&g, &pinned, &all, at(5)).unwrap();
    }
}

const FEES: &str = r#"
[[fees]]
chain = "eip155:1"
fee_asset = "ETH"
max_fee = "10000000000000000"
"#;

/// A 1-wei payment (or a sweep home) carrying a huge fee is a drain: the policy bounds every
/// fee per chain, refuses fees it does not bound, and counts fees against velocity even for
/// movements that stay in custody.
#[test]
fn fees_have_a_governed_ceiling_and_count_against_velocity() {
    let without = with_policy();
    let drain = intent(1, 5);
    let fifty_eth = 50 * ETH;
    // The online estimate has no transaction yet, so no fee: the rules decide.
    assert!(decide_fee(&without, &drain, Destination::Internal, None, "ops", &[], 0).allowed());
    // A signer knows the fee: no ceiling in the policy, nothing signed.
    let d = decide_fee(&without, &drain, Destination::Internal, Some(fifty_eth), "ops", &[], 0);
    assert!(
        matches!(&d.outcome, Outcome::Block(Block::NoFeeCeiling { chain, asset })
        if chain == "eip155:1" && asset == "ETH"),
        "{d:?}"
    );

    let p = Policy::from_toml(&format!("{POLICY}{FEES}").replace("version = 1", "version = 2"))
        .unwrap();
    let log = log_of(vec![(Change::SetPolicy { policy: p }, vec!["ada", "bob"])]);
    let s = state_at(&log, T0 + DAY_MS).unwrap();
    for dest in [Destination::External, Destination::Internal] {
        let d = decide_fee(&s, &drain, dest, Some(fifty_eth), "ops", &[], 0);
        assert!(
            matches!(&d.outcome, Outcome::Block(Block::FeeAboveCeiling { fee, ceiling, .. })
            if fee.base_units() == fifty_eth && ceiling.base_units() == 10u128.pow(16)),
            "{d:?}"
        );
        assert!(decide_fee(&s, &drain, dest, Some(10u128.pow(16)), "ops", &[], 0).allowed());
    }
    // Velocity: 9.995 ETH already moved today; a sweep home moves nothing out but its
    // 0.01 ETH fee still counts, and tips the daily limit.
    let moved = 10 * ETH - 5 * 10u128.pow(15);
    let d = decide_fee(&s, &drain, Destination::Internal, Some(10u128.pow(16)), "ops", &[], moved);
    assert!(matches!(&d.outcome, Outcome::Block(Block::Velocity { .. })), "{d:?}");
    assert!(decide_fee(&s, &drain, Destination::Internal, Some(10u128.pow(15)), "ops", &[], moved)
        .allowed());
}

#[test]
fn approvals_may_not_outlive_the_policys_maximum() {
    let s = with_policy();
    let big = intent(5 * ETH, 2);
    let now = T0 + 3_600_000;
    let far = now + 3 * DAY_MS;
    let d = decide(
        &s,
        &big,
        "ops",
        &[approve("ann", &big, 1, now + 60_000), approve("ben", &big, 1, far)],
        0,
    );
    match d.outcome {
        Outcome::Wait { have: 1, not_counted, .. } => {
            assert!(
                not_counted.join(";").contains("beyond the policy's 86400 s maximum"),
                "{not_counted:?}"
            )
        }
        other => panic!("a three-day approval counted: {other:?}"),
    }
    // The maximum is governed, within a hard bound.
    let week = Policy::from_toml(&format!("max_approval_lifetime_secs = 691200\n{POLICY}"));
    assert_eq!(week, Err(PolicyError::ApprovalLifetime(691_200)));
    let longer = Policy::from_toml(
        &format!("max_approval_lifetime_secs = 345600\n{POLICY}")
            .replace("version = 1", "version = 2"),
    )
    .unwrap();
    let log = log_of(vec![(Change::SetPolicy { policy: longer }, vec!["ada", "bob"])]);
    let s = state_at(&log, T0 + DAY_MS).unwrap();
    let ok =
        decide(&s, &big, "ops", &[approve("ann", &big, 2, far), approve("ben", &big, 2, far)], 0);
    assert!(ok.allowed(), "{ok:?}");
}

#[test]
fn the_admin_quorum_never_drops_below_two() {
    // Every admin signs the change to a quorum of one: refused all the same.
    let log = log_of(vec![(Change::SetQuorum { quorum: 1 }, vec!["ada", "bob", "cy"])]);
    let err = state_at(&log, T0 + DAY_MS).unwrap_err().to_string();
    assert!(err.contains("at least 2"), "{err}");
    // Nor can a genesis start with one.
    let mut g = genesis();
    g.quorum = 1;
    let err = replay(&g, &hex::encode(g.hash().unwrap()), &[], Timestamp::from_unix_ms(T0));
    assert!(err.unwrap_err().to_string().contains("at least 2"));
    // Two stays possible.
    let log = log_of(vec![
        (Change::SetQuorum { quorum: 3 }, vec!["ada", "bob"]),
        (Change::SetQuorum { quorum: 2 }, vec!["ada", "bob", "cy"]),
    ]);
    assert_eq!(state_at(&log, T0 + DAY_MS).unwrap().quorum, 2);
}

/// An entry back-dated by its proposers does not shorten its time-lock on a signer that
/// records when it first saw it.
#[test]
fn a_back_dated_whitelist_entry_waits_from_when_the_signer_first_saw_it() {
    let scope = WhitelistScope::Internal { chain: "eip155:1".into() };
    let cold = "0xdbF03B407c01E7cD3CBea99509d93f8DDDC8C6FB";
    let log = log_of(vec![(
        Change::WhitelistAdd { scope: scope.clone(), address: cold.into(), label: "cold".into() },
        vec!["ada", "bob"],
    )]);
    let g = genesis();
    let pin = hex::encode(g.hash().unwrap());
    // Dated T0 + 1 min, but first seen a day later.
    let seen_at = T0 + DAY_MS;
    let now = Timestamp::from_unix_ms(T0 + DAY_MS + 120_000);
    let naive = replay(&g, &pin, &log, now).unwrap();
    assert_eq!(naive.listed(&scope, cold, now), Listed::Usable);
    let seen = |seq: u64| (seq == 1).then(|| Timestamp::from_unix_ms(seen_at));
    let node = replay_seen(&g, &pin, &log, now, &seen).unwrap();
    assert_eq!(
        node.listed(&scope, cold, now),
        Listed::Pending(Timestamp::from_unix_ms(seen_at + DAY_MS))
    );
}

/// What moves is named by the signed registry from the contract, not by the request: a
/// token relabelled as ETH, an unregistered contract and an asset still in its time-lock are
/// all stopped; a contract cannot be registered under two names; one admin can take an
/// asset off the registry at once.
#[test]
fn the_asset_registry_names_what_moves() {
    use strongroom_governance::gate;
    use strongroom_governance::log::AssetSpec;
    let usdt = "0xdAC17F958D2ee523a2206206994597C13D831ec7";
    let spec = |symbol: &str, decimals: u8, contract: Option<&str>| AssetSpec {
        chain: "eip155:1".into(),
        symbol: symbol.into(),
        decimals,
        contract: contract.map(str::to_owned),
    };
    let log =
        log_of(vec![(Change::AssetAdd { asset: spec("USDT", 6, Some(usdt)) }, vec!["ada", "bob"])]);
    let token = |symbol: &str, decimals: u8| {
        let mut i = intent(1_000_000, 1);
        i.asset = IntentAsset {
            symbol: AssetSymbol::parse(symbol).unwrap(),
            decimals,
            contract: Some(Address::parse(&chain(), usdt).unwrap()),
        };
        i
    };
    // ETH comes from the genesis and is usable at once.
    let s = state_at(&log, T0 + 120_000).unwrap();
    let now = |ms: i64| Timestamp::from_unix_ms(ms);
    assert_eq!(gate::asset(&s, &intent(ETH, 1), now(T0 + 120_000)), Ok(()));
    // USDT waits out the time-lock.
    assert!(matches!(
        gate::asset(&s, &token("USDT", 6), now(T0 + 120_000)),
        Err(Block::AssetTimeLocked { symbol, .. }) if symbol == "USDT"
    ));
    let s = state_at(&log, T0 + 2 * DAY_MS).unwrap();
    let later = now(T0 + 2 * DAY_MS);
    assert_eq!(gate::asset(&s, &token("USDT", 6), later), Ok(()));
    // The USDT contract under the name ETH (so ETH's rules, limits and freeze would apply).
    assert!(matches!(
        gate::asset(&s, &token("ETH", 18), later),
        Err(Block::AssetMislabelled { registered, claimed, .. }) if registered == "USDT" && claimed == "ETH"
    ));
    assert!(matches!(
        gate::asset(&s, &token("USDT", 18), later),
        Err(Block::AssetMislabelled { .. })
    ));
    // A contract nobody registered.
    let mut other = token("USDT", 6);
    other.asset.contract =
        Some(Address::parse(&chain(), "0xA0b86991c6218b36c1d19D4a2e9Eb0cE3606eB48").unwrap());
    assert!(matches!(gate::asset(&s, &other, later), Err(Block::UnknownAsset { .. })));
    // One contract, two names: refused. Removal by one admin: at once.
    let twice = log_of(vec![
        (Change::AssetAdd { asset: spec("USDT", 6, Some(usdt)) }, vec!["ada", "bob"]),
        (
            Change::AssetAdd { asset: spec("USD", 6, Some(&usdt.to_lowercase())) },
            vec!["ada", "bob"],
        ),
    ]);
    assert!(state_at(&twice, T0 + DAY_MS).unwrap_err().to_string().contains("already registered"));
    let removed = log_of(vec![
        (Change::AssetAdd { asset: spec("USDT", 6, Some(usdt)) }, vec!["ada", "bob"]),
        (Change::AssetRemove { chain: "eip155:1".into(), symbol: "USDT".into() }, vec!["cy"]),
    ]);
    let s = state_at(&removed, T0 + 2 * DAY_MS).unwrap();
    assert!(matches!(gate::asset(&s, &token("USDT", 6), later), Err(Block::UnknownAsset { .. })));
    // Adding one needs the quorum.
    let alone =
        log_of(vec![(Change::AssetAdd { asset: spec("USDT", 6, Some(usdt)) }, vec!["ada"])]);
    assert!(state_at(&alone, T0 + DAY_MS).is_err());
}

/// Quarantining a signer node: one security officer, at once, never twice, never node 0.
#[test]
fn one_security_officer_quarantines_a_signer_node() {
    let q = |node: u16| Change::QuarantineNode { node, reason: Some("host compromised".into()) };
    let s = state_at(&log_of(vec![(q(3), vec!["sec"])]), T0 + 120_000).unwrap();
    assert_eq!(s.quarantined.get(&3), Some(&1));
    assert_eq!(s.quarantined_among(&[1, 2]), None);
    assert_eq!(s.quarantined_among(&[1, 3]), Some((vec![3], 1)));
    // An approver cannot; the same node twice, or node 0, is refused.
    assert!(state_at(&log_of(vec![(q(3), vec!["ann"])]), T0 + 120_000).is_err());
    let twice = log_of(vec![(q(3), vec!["sec"]), (q(3), vec!["ada"])]);
    let err = state_at(&twice, T0 + 120_000).unwrap_err().to_string();
    assert!(err.contains("already quarantined"), "{err}");
    assert!(state_at(&log_of(vec![(q(0), vec!["sec"])]), T0 + 120_000).is_err());
    // A reason with control characters is refused, like a freeze's.
    let bad = Change::QuarantineNode { node: 2, reason: Some("a\u{7}b".into()) };
    assert!(state_at(&log_of(vec![(bad, vec!["sec"])]), T0 + 120_000).is_err());
}

/// Moving a key's funds to a new key takes the quorum; retiring one takes one admin; neither
/// can be undone or chained into a loop.
#[test]
fn a_key_moves_to_another_with_the_quorum_and_is_retired_by_one_admin() {
    let pk = "02".to_owned() + &"ab".repeat(32);
    let migrate = |from: &str, to: &str| Change::MigrateKey {
        from: from.into(),
        to: to.into(),
        to_public_key: pk.clone(),
    };
    let retire = |key: &str| Change::RetireKey { key: key.into() };
    const LATER: i64 = T0 + DAY_MS;
    let s = state_at(&log_of(vec![(migrate("hot-eth-1", "hot-eth-2"), vec!["ada", "bob"])]), LATER)
        .unwrap();
    let m = s.migrations.get("hot-eth-1").unwrap();
    assert_eq!((m.to.as_str(), m.to_public_key.as_str(), m.seq), ("hot-eth-2", pk.as_str(), 1));
    // One admin cannot start one; a key cannot move to itself, twice, or with a bad key.
    assert!(
        state_at(&log_of(vec![(migrate("hot-eth-1", "hot-eth-2"), vec!["ada"])]), LATER).is_err()
    );
    assert!(state_at(
        &log_of(vec![(migrate("hot-eth-1", "hot-eth-1"), vec!["ada", "bob"])]),
        LATER
    )
    .is_err());
    let bad = Change::MigrateKey {
        from: "hot-eth-1".into(),
        to: "hot-eth-2".into(),
        to_public_key: "zz".into(),
    };
    assert!(state_at(&log_of(vec![(bad, vec!["ada", "bob"])]), LATER).is_err());
    let twice = log_of(vec![
        (migrate("hot-eth-1", "hot-eth-2"), vec!["ada", "bob"]),
        (migrate("hot-eth-1", "hot-eth-3"), vec!["ada", "bob"]),
    ]);
    assert!(state_at(&twice, LATER).unwrap_err().to_string().contains("already moving"));
    // Retired by one admin, at once; never twice; never the key funds are moving to; a
    // retired key is no migration's end.
    let done = log_of(vec![
        (migrate("hot-eth-1", "hot-eth-2"), vec!["ada", "bob"]),
        (retire("hot-eth-1"), vec!["cy"]),
    ]);
    assert_eq!(state_at(&done, LATER).unwrap().retired.get("hot-eth-1"), Some(&2));
    assert!(state_at(&log_of(vec![(retire("hot-eth-1"), vec!["sec"])]), LATER).is_err());
    let target = log_of(vec![
        (migrate("hot-eth-1", "hot-eth-2"), vec!["ada", "bob"]),
        (retire("hot-eth-2"), vec!["cy"]),
    ]);
    assert!(state_at(&target, LATER).is_err());
    let onto_retired = log_of(vec![
        (retire("hot-eth-9"), vec!["cy"]),
        (migrate("hot-eth-1", "hot-eth-9"), vec!["ada", "bob"]),
    ]);
    assert!(state_at(&onto_retired, LATER).unwrap_err().to_string().contains("retired"));
}

/// A time-boxed freeze holds until its end whoever signs an unfreeze, and then ends by itself.
#[test]
fn a_time_boxed_freeze_cannot_be_lifted_before_its_end() {
    let until = Timestamp::from_unix_ms(T0 + DAY_MS);
    let boxed = Change::FreezeUntil { scope: FreezeScope::Global, until, reason: None };
    let log = log_of(vec![(boxed.clone(), vec!["sec"])]);
    let s = state_at(&log, T0 + 120_000).unwrap();
    let at = |ms: i64| Timestamp::from_unix_ms(ms);
    let f = s.frozen("ETH", "hot-eth-1", at(T0 + 120_000)).unwrap();
    assert_eq!((f.scope, f.until), (FreezeScope::Global, Some(until)));
    // Every admin signs an unfreeze an hour in: refused.
    let early = log_of(vec![
        (boxed.clone(), vec!["sec"]),
        (Change::Unfreeze { scope: FreezeScope::Global }, vec!["ada", "bob", "cy"]),
    ]);
    let err = state_at(&early, T0 + 2 * DAY_MS).unwrap_err().to_string();
    assert!(err.contains("cannot be lifted before its end"), "{err}");
    // At its end it is over, with nothing to sign.
    assert_eq!(s.frozen("ETH", "hot-eth-1", until), None);
    // A freeze for ever, or for longer than 90 days, is not a time-boxed one.
    let forever = Change::FreezeUntil {
        scope: FreezeScope::Global,
        until: at(T0 + 200 * DAY_MS),
        reason: None,
    };
    assert!(state_at(&log_of(vec![(forever, vec!["sec"])]), T0 + DAY_MS).is_err());
    // One approver cannot set one either.
    assert!(state_at(&log_of(vec![(boxed, vec!["ann"])]), T0 + DAY_MS).is_err());
}

/// Found by fuzzing (`fuzz/corpus/governance`): under a genesis dated near the start of the
/// i64 range, a time-boxed freeze's length (`until - at`) overflowed: a panic with overflow
/// checks, and without them a wrapped length that passed as under 90 days. It is refused.
#[test]
fn a_time_boxed_freeze_from_the_far_past_is_refused_not_wrapped() {
    let far = -9_000_000_000_000_000_000;
    let g = Genesis { created_at: Timestamp::from_unix_ms(far), ..genesis() };
    let pinned = hex::encode(g.hash().unwrap());
    let state = replay(&g, &pinned, &[], Timestamp::from_unix_ms(T0)).unwrap();
    let mut e = state.propose(
        Change::FreezeUntil {
            scope: FreezeScope::Global,
            until: Timestamp::from_unix_ms(-far),
            reason: None,
        },
        Timestamp::from_unix_ms(far),
    );
    e.sign("sec", &member_key("sec")).unwrap();
    let err = replay(&g, &pinned, &[e], Timestamp::from_unix_ms(T0)).unwrap_err().to_string();
    assert!(err.contains("within 90 days"), "{err}");
}

/// Issue "Signers decide (2)", point 2: under `require_initiation` only a proven initiator
/// passes; whatever the caller says, roles are the log's, and a policy written before the
/// field hashes as it did.
#[test]
fn an_initiator_must_be_proven_when_the_policy_says_so_and_roles_come_from_the_log() {
    let text = POLICY.replace(
        "when = { tier = \"hot\", max_amount = \"1000000000000000000\" }",
        "when = { tier = \"hot\", max_amount = \"1000000000000000000\", initiator_roles = [\"operator\"] }",
    );
    let strict = Policy::from_toml(&format!("require_initiation = true\n{text}")).unwrap();
    let lax = Policy::from_toml(&text).unwrap();
    let old = Policy::from_toml(POLICY).unwrap();
    assert!(!serde_json::to_string(&old).unwrap().contains("require_initiation"));
    let s = with_policy();
    let i = intent(ETH / 2, 501);
    let now = Timestamp::from_unix_ms(T0 + 3_600_000);
    let spent = |_: &VelocityLimit| Amount::ZERO;
    let roles = s.members.get("ops").unwrap().roles.clone();
    let run_to = |p: &Policy, initiator: Initiator<'_>, destination| {
        let req = Request {
            intent: &i,
            intent_hash: i.hash().unwrap(),
            tier: Tier::Hot,
            destination,
            initiator,
            fee: None,
        };
        evaluate(p, &s.members, &req, &[], &spent, now).outcome
    };
    let run = |p: &Policy, initiator| run_to(p, initiator, Destination::External);
    // What stays in custody (a sweep to cold) needs no initiator.
    assert_eq!(
        run_to(&strict, Initiator::Unknown, Destination::Internal),
        Outcome::Wait { have: 0, need: 2, not_counted: vec![] }
    );
    let attested = Initiator::Attested { member: "ops", roles: &roles };
    assert_eq!(run(&strict, attested), Outcome::Allow);
    // The online estimate leaves the proof to the signers (and knows no roles).
    assert!(matches!(run(&strict, Initiator::NotChecked), Outcome::Wait { .. }));
    for unproven in [Initiator::claimed("ops", &s.members), Initiator::Unknown] {
        assert!(
            matches!(run(&strict, unproven), Outcome::Block(Block::Unattested { .. })),
            "{unproven:?}"
        );
    }
    // Without the requirement a named operator matches; a name that is no member, or an
    // approver, does not: the roles are the log's.
    assert_eq!(run(&lax, Initiator::claimed("ops", &s.members)), Outcome::Allow);
    for name in ["eve", "ann"] {
        assert!(
            matches!(run(&lax, Initiator::claimed(name, &s.members)), Outcome::Wait { .. }),
            "{name}"
        );
    }
}
