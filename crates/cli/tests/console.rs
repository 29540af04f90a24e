//! The console as an approver uses it, in a real browser (Debian's chromium, driven by
//! `tools/browser/console.test.mjs` through playwright-core) against `strongroom dev` on a real
//! Ethereum node with governance: the approver signs in, finds the withdrawal in their inbox,
//! sees it decoded and hashed in the browser, makes a passkey whose key the admins put in the
//! governance log, and approves with it; a second approver approves from the CLI and the
//! withdrawal settles on chain. A lying server (fields that disagree with the intent, a
//! challenge that is not the approval's message, governance bytes that do not hash to the
//! hash it claims) is caught by the page. A security officer freezes ETH from the page,
//! signing with the passkey the log registers for them, and a waiting withdrawal stops.
//! axe-core finds no serious accessibility violation on any page it visits.
//! `STRONGROOM_SCREENSHOTS=docs/screenshots` saves a screenshot of each main page.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::print_stdout,
    clippy::print_stderr
)] // Test code.
#![allow(clippy::disallowed_methods)] // A test of a real process waits on the real clock.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

mod common;
use common::*;

/// The browser and the pinned tools (`scripts/install-browser-for-tests`), or None to skip
/// (a failure where `STRONGROOM_REQUIRE_BROWSER` is set, as in `scripts/test`).
fn browser_tools() -> Option<(PathBuf, String)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let tools = root.join("tools/browser");
    let chromium =
        std::env::var("STRONGROOM_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    let ready = Path::new(&chromium).exists()
        && tools.join("node_modules/playwright-core/package.json").exists()
        && tools.join("node_modules/axe-core/axe.min.js").exists();
    if !ready {
        assert!(
            std::env::var_os("STRONGROOM_REQUIRE_BROWSER").is_none(),
            "the browser tests are required: run scripts/install-browser-for-tests"
        );
        eprintln!("skipped: no chromium or browser tools (scripts/install-browser-for-tests)");
        return None;
    }
    Some((tools, chromium))
}

/// One phase of the browser script; its JSON answer.
fn browser(
    tools: &Path,
    chromium: &str,
    phase: &str,
    envs: &[(&str, String)],
) -> serde_json::Value {
    let mut cmd = Command::new("node");
    // STRONGROOM_SCREENSHOTS=<folder>: a screenshot of each main page (docs/screenshots).
    if let Some(dir) = std::env::var_os("STRONGROOM_SCREENSHOTS") {
        let dir = std::path::absolute(Path::new(&dir)).unwrap();
        std::fs::create_dir_all(&dir).unwrap();
        cmd.env("SCREENSHOTS", dir);
    }
    let out = cmd
        .arg(tools.join("console.test.mjs"))
        .arg(phase)
        .env("CHROMIUM", chromium)
        .env(
            "VECTORS",
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../core/tests/vectors/intent-v1.json"),
        )
        .envs(envs.iter().map(|(k, v)| (*k, v.as_str())))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "browser phase {phase} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.lines().last().unwrap_or(""))
        .unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

/// A staff account made with `strongroom staff add` (its password in a file under `dir`).
fn add_staff(
    dir: &Path,
    data: &Path,
    email: &str,
    role: &str,
    member: Option<&str>,
    password: &str,
) {
    let pw_file = dir.join(format!("{email}.pw"));
    std::fs::write(&pw_file, password).unwrap();
    let mut args = vec!["staff", "add", "--email", email, "--role", role];
    if let Some(m) = member {
        args.extend(["--member", m]);
    }
    args.extend([
        "--password-file",
        pw_file.to_str().unwrap(),
        "--data-dir",
        data.to_str().unwrap(),
    ]);
    let (ok, out) = cli_with(&args, &[]);
    assert!(ok, "{out}");
}

/// What every browser phase needs: the console's origin (`localhost`: the passkeys' relying
/// party), a folder for screenshots, who signs in, and the dev CA for the script's own requests.
fn console_env(dev: &Dev, dir: &Path, email: &str, password: &str) -> Vec<(&'static str, String)> {
    let port = dev.url.rsplit(':').next().unwrap().to_owned();
    let work = dir.join("browser");
    std::fs::create_dir_all(&work).unwrap();
    vec![
        ("CONSOLE_URL", format!("https://localhost:{port}")),
        ("WORK", work.to_str().unwrap().to_owned()),
        ("EMAIL", email.to_owned()),
        ("PASSWORD", password.to_owned()),
        ("NODE_EXTRA_CA_CERTS", dev.ca.clone()),
    ]
}

#[test]
fn an_approver_checks_and_approves_a_withdrawal_in_the_console_with_a_passkey() {
    let Some((tools, chromium)) = browser_tools() else { return };
    let Some(chain) = start_anvil(&["--block-time", "1"]) else { return };
    let dir = tempfile::tempdir().unwrap();
    let gov = dir.path().join("gov");
    let data = dir.path().join("dev");
    let key = |id: &str| dir.path().join(format!("{id}.key")).to_str().unwrap().to_owned();
    let pin = governance_genesis(dir.path(), &gov, "6");
    let g = gov.to_str().unwrap();
    let rpc_args = ["--eth-rpc", chain.url.as_str(), "--confirmations", "1", "--governance", g];
    let dev = start_dev_with(&data, &rpc_args, &[]);
    let envs = vec![
        ("STRONGROOM_ADDR", dev.url.clone()),
        ("STRONGROOM_CACERT", dev.ca.clone()),
        ("STRONGROOM_TOKEN_FILE", data.join("operator.token").to_str().unwrap().to_owned()),
    ];
    let run = |args: &[&str]| cli_with(args, &envs);
    let sign = |who: &str| {
        run(&["governance", "sign", "--member", who, "--key", &key(who), "--pin", &pin, "--yes"])
    };
    let d = data.to_str().unwrap();
    let push = || {
        let (ok, out) = run(&["governance", "push", "--pin", &pin, "--data-dir", d]);
        assert!(ok, "{out}");
    };

    // Governance: the tiered policy (more than 0.1 ETH needs two approvers) with a fee
    // ceiling, 2 ETH credited.
    let policy = dir.path().join("policy.toml");
    let fees = "[[fees]]\nchain = \"eip155:31337\"\nfee_asset = \"ETH\"\nmax_fee = \"10000000000000000\"\n";
    std::fs::write(&policy, eth_tiers_policy(fees)).unwrap();
    assert!(run(&["governance", "propose", "policy", "--file", policy.to_str().unwrap()]).0);
    assert!(sign("ada").0);
    assert!(sign("bob").1.contains("committed"));
    let c = api(&dev, "POST", "/v1/customers", Some(serde_json::json!({"external_id": "gus"})));
    let cid = c["id"].as_str().unwrap().to_owned();
    propose_ledger_credit(&envs, &cid, "2000000000000000000", "dev faucet");
    assert!(sign("ada").0);
    assert!(sign("bob").1.contains("committed"));
    let credit = serde_json::json!({"customer_id": cid, "asset": "ETH", "amount": "2",
        "reference": "dev faucet", "adjustment": 2});
    assert_eq!(api(&dev, "POST", "/v1/deposits", Some(credit))["reference"], "governance:2");
    push();

    // Ann, a staff approver, added from the command line.
    let email = "ann@exchange.example";
    let password = "ann's staff passphrase";
    add_staff(dir.path(), &data, email, "approver", Some("ann"), password);

    // A withdrawal of 0.5 ETH: two approvers must approve it.
    let dest = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed";
    let before = balance(&chain.url, dest);
    let w = api(
        &dev,
        "POST",
        "/v1/withdrawals",
        Some(
            serde_json::json!({"customer_id": cid, "asset": "ETH", "destination": dest, "amount": "0.5"}),
        ),
    );
    let id = w["id"].as_str().unwrap_or_else(|| panic!("{w}")).to_owned();
    let mut page_env = console_env(&dev, dir.path(), email, password);
    page_env.extend([("WITHDRAWAL", id.clone()), ("DESTINATION", dest.to_owned())]);

    // In the browser: the decoder against the vectors, sign-in, the inbox, the decoded
    // detail, a lying server caught, and a passkey made.
    let first = browser(&tools, &chromium, "check-and-enrol", &page_env);
    println!("console phase 1: {first}");
    let ungoverned = first["before_governance"].as_str().unwrap();
    assert!(ungoverned.contains("no_passkey_in_governance"), "{ungoverned}");
    for page in ["axe_signin", "axe_inbox", "axe_detail", "axe_security"] {
        assert!(first[page].is_array(), "{page} was checked: {first}");
    }

    // The admins put ann's passkey in the governance log, and ann signs that it is hers with
    // her governance key; the nodes learn it.
    let key_file = dir.path().join("ann-passkey.json");
    std::fs::write(&key_file, first["governance_key"].to_string()).unwrap();
    let (ok, out) = run(&[
        "governance",
        "propose",
        "set-passkey",
        "--member",
        "ann",
        "--file",
        key_file.to_str().unwrap(),
    ]);
    assert!(ok, "{out}");
    assert!(sign("ada").0);
    let (ok, out) = sign("bob");
    assert!(ok && out.contains("ann's own signature"), "the admins alone cannot: {out}");
    let (ok, out) = sign("ann");
    assert!(ok && out.contains("committed"), "{out}");
    push();

    // In the browser again, with the same passkey: a password-only session may not approve;
    // signed in with the passkey, a forged challenge is refused and the honest approval made.
    // A second withdrawal, which ann will deny.
    let w2 = api(
        &dev,
        "POST",
        "/v1/withdrawals",
        Some(
            serde_json::json!({"customer_id": cid, "asset": "ETH", "destination": dest, "amount": "0.3"}),
        ),
    );
    let id2 = w2["id"].as_str().unwrap_or_else(|| panic!("{w2}")).to_owned();
    let mut env2 = page_env.clone();
    env2.push(("CREDENTIAL", first["credential"].to_string()));
    env2.push(("WITHDRAWAL2", id2.clone()));
    let second = browser(&tools, &chromium, "approve", &env2);
    println!("console phase 2: {second}");
    let no_2fa = second["without_2fa"].as_str().unwrap();
    assert!(no_2fa.contains("two_factor_required"), "{no_2fa}");
    let denied = api(&dev, "GET", &format!("/v1/withdrawals/{id2}"), None);
    assert_eq!(denied["state"], "cancelled", "{denied}");
    assert_eq!(denied["denial"]["reason"], "the customer says this is not theirs", "{denied}");

    // The engine counts ann's approval (verified against her passkey in governance); al
    // approves from his own machine; the nodes sign and the withdrawal settles.
    let view = api(&dev, "GET", &format!("/v1/withdrawals/{id}"), None);
    assert_eq!(view["approvals"][0]["approver"], "ann", "{view}");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let v = api(&dev, "GET", &format!("/v1/withdrawals/{id}"), None);
        if v["policy"]["approvals"] == 1 {
            break;
        }
        assert!(Instant::now() < deadline, "ann's approval never counted: {v}");
        std::thread::sleep(Duration::from_millis(500));
    }
    let (ok, out) =
        run(&["withdrawal", "approve", &id, "--member", "al", "--key", &key("al"), "--yes"]);
    assert!(ok, "{out}");
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let v = api(&dev, "GET", &format!("/v1/withdrawals/{id}"), None);
        if v["state"] == "settled" {
            break;
        }
        assert!(Instant::now() < deadline, "never settled: {v}");
        std::thread::sleep(Duration::from_secs(1));
    }
    let paid = balance(&chain.url, dest) - before;
    assert_eq!(paid, ETH / 2, "0.5 ETH reached the destination");

    // An admin's governance page: a policy change waits, shown as a diff against the live
    // policy; the quorum signs it.
    add_staff(dir.path(), &data, "adam@exchange.example", "admin", None, "adam's admin passphrase");
    let looser = eth_tiers_policy(fees).replace("version = 1", "version = 2").replacen(
        "100000000000000000",
        "200000000000000000",
        1,
    );
    std::fs::write(&policy, looser).unwrap();
    let (ok, out) = run(&["governance", "propose", "policy", "--file", policy.to_str().unwrap()]);
    assert!(ok, "{out}");
    let admin_env =
        console_env(&dev, dir.path(), "adam@exchange.example", "adam's admin passphrase");
    let review = browser(&tools, &chromium, "governance-review", &admin_env);
    println!("console governance: {review}");
    assert_eq!(review["members"], 6, "{review}");
    assert!(sign("ada").0);
    assert!(sign("bob").1.contains("committed"));

    // A withdrawal waits for its two approvals.
    let w3 = api(
        &dev,
        "POST",
        "/v1/withdrawals",
        Some(
            serde_json::json!({"customer_id": cid, "asset": "ETH", "destination": dest, "amount": "0.4"}),
        ),
    );
    let id3 = w3["id"].as_str().unwrap_or_else(|| panic!("{w3}")).to_owned();

    // Sam, the security officer, makes a passkey on the console; the admins and sam (with
    // the key sam holds) put it in the log.
    let officer = "sam@exchange.example";
    add_staff(dir.path(), &data, officer, "admin", Some("sec"), "sam's officer passphrase");
    let officer_env = console_env(&dev, dir.path(), officer, "sam's officer passphrase");
    let enrolled = browser(&tools, &chromium, "officer-enrol", &officer_env);
    let key_file = dir.path().join("sec-passkey.json");
    std::fs::write(&key_file, enrolled["governance_key"].to_string()).unwrap();
    let (ok, out) = run(&[
        "governance",
        "propose",
        "set-passkey",
        "--member",
        "sec",
        "--file",
        key_file.to_str().unwrap(),
    ]);
    assert!(ok, "{out}");
    assert!(sign("ada").0);
    assert!(sign("bob").0);
    assert!(sign("sec").1.contains("committed"));
    push();

    // Signed in with that passkey, sam freezes ETH from the page: proposes it and signs it
    // with the passkey; the officer's signature alone commits it.
    let mut freeze_env = officer_env.clone();
    freeze_env.push(("CREDENTIAL", enrolled["credential"].to_string()));
    let freeze = browser(&tools, &chromium, "officer-freeze", &freeze_env);
    println!("console freeze: {freeze}");
    let (ok, out) = run(&["governance", "show", "--pin", &pin]);
    assert!(ok && out.contains("policy: version 2"), "{out}");
    assert!(out.contains("asset ETH"), "the freeze is in force: {out}");
    let (_, g) = call(&dev, "GET", "/v1/governance", Some(&dev.token), None);
    let last = g["entries"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(
        last["change"]["reason"], "withdrawals to an address we do not know, drill",
        "{last}"
    );
    assert_eq!(last["signoffs"][0]["member"], "sec", "{last}");
    assert!(last["signoffs"][0]["passkey"]["client_data_json"].is_string(), "{last}");

    // The waiting withdrawal gets its two approvals, and stops: the freeze blocks it (the
    // nodes would refuse it too), and nothing is paid while block after block is mined.
    let before = balance(&chain.url, dest);
    for who in ["ann", "al"] {
        let (ok, out) =
            run(&["withdrawal", "approve", &id3, "--member", who, "--key", &key(who), "--yes"]);
        assert!(ok, "{out}");
    }
    std::thread::sleep(Duration::from_secs(5));
    let stopped = api(&dev, "GET", &format!("/v1/withdrawals/{id3}"), None);
    assert_eq!(stopped["approvals"].as_array().map(Vec::len), Some(2), "{stopped}");
    assert_eq!(stopped["policy"]["outcome"], "block", "{stopped}");
    let why = stopped["policy"]["explanation"].as_str().unwrap();
    assert!(why.contains("frozen by governance (asset ETH)"), "{stopped}");
    assert_eq!(stopped["state"], "reserved", "{stopped}");
    assert!(stopped["transaction"].is_null(), "{stopped}");
    assert_eq!(balance(&chain.url, dest), before, "nothing paid under the freeze");

    // A whitelist address for our own wallets, proposed in the page; the quorum commits it,
    // and it waits out its time-lock.
    let cold = "0xdbF03B407c01E7cD3CBea99509d93f8DDDC8C6FB";
    let mut wl_env = admin_env.clone();
    wl_env.push(("COLD", cold.to_owned()));
    let wl = browser(&tools, &chromium, "governance-whitelist", &wl_env);
    println!("console whitelist: {wl}");
    assert!(sign("ada").0);
    assert!(sign("bob").1.contains("committed"));
    let (ok, out) = run(&["governance", "show", "--pin", &pin]);
    assert!(ok && out.contains("cold-2): usable from"), "in its time-lock: {out}");

    // A token for the asset registry, proposed in the page (after a policy that is not JSON
    // is refused there); the quorum commits it.
    let token = "0x5FbDB2315678afecb367f032d93F642f64180aa3";
    let mut asset_env = admin_env.clone();
    asset_env.push(("TOKEN", token.to_owned()));
    let asset = browser(&tools, &chromium, "governance-asset", &asset_env);
    println!("console asset: {asset}");
    assert!(sign("ada").0);
    assert!(sign("bob").1.contains("committed"));
    let (_, g) = call(&dev, "GET", "/v1/governance", Some(&dev.token), None);
    let last = g["entries"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["change"]["asset"]["symbol"], "USDC", "{last}");
    assert_eq!(last["change"]["asset"]["contract"], token, "{last}");
    drop(dev);
}

/// An analyst works the risk review queue on the console: a rule pauses every first payment
/// to an address; an operator's dashboard shows both waiting; of the two, one is assigned,
/// noted and released (it settles on chain), the other rejected with a note (cancelled, its
/// funds back).
#[test]
fn an_analyst_releases_and_rejects_paused_withdrawals_in_the_console() {
    let Some((tools, chromium)) = browser_tools() else { return };
    let Some(chain) = start_anvil(&["--block-time", "1"]) else { return };
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("dev");
    let rules = dir.path().join("rules.toml");
    std::fs::write(
        &rules,
        "version = 2\nreview_at = 50\nblock_at = 100\n[[rules]]\nname = \"new-destination\"\nall = [{ feature = \"new_destination\", at_least = 1.0 }]\naction = \"review\"\nscore = 50\n",
    )
    .unwrap();
    let args = [
        "--eth-rpc",
        chain.url.as_str(),
        "--confirmations",
        "1",
        "--risk-rules",
        rules.to_str().unwrap(),
    ];
    let dev = start_dev_with(&data, &args, &[]);
    let email = "sam@exchange.example";
    let password = "sam's analyst passphrase";
    add_staff(dir.path(), &data, email, "analyst", None, password);
    let c = api(&dev, "POST", "/v1/customers", Some(serde_json::json!({"external_id": "rita"})));
    let cid = c["id"].as_str().unwrap().to_owned();
    let credit = serde_json::json!({"customer_id": cid, "asset": "ETH", "amount": "2", "reference": "faucet"});
    api(&dev, "POST", "/v1/deposits", Some(credit));
    let to_release = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed";
    let to_reject = "0xfB6916095ca1df60bB79Ce92cE3Ea74c37c5d359";
    let before = balance(&chain.url, to_release);
    let mut ids = Vec::new();
    for (dest, amount) in [(to_release, "0.2"), (to_reject, "0.3")] {
        let w = api(
            &dev,
            "POST",
            "/v1/withdrawals",
            Some(
                serde_json::json!({"customer_id": cid, "asset": "ETH", "destination": dest, "amount": amount}),
            ),
        );
        ids.push(w["id"].as_str().unwrap_or_else(|| panic!("{w}")).to_owned());
    }
    // Both wait in the queue (the risk worker assesses them).
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let q = api(&dev, "GET", "/v1/risk/reviews?state=open", None);
        if q["data"].as_array().map_or(0, Vec::len) == 2 {
            break;
        }
        assert!(Instant::now() < deadline, "never paused: {q}");
        std::thread::sleep(Duration::from_millis(500));
    }
    let mut page_env = console_env(&dev, dir.path(), email, password);
    page_env.extend([
        ("EMAIL_SHOWN", "s***@exchange.example".to_owned()),
        ("REVIEW1", ids[0].clone()),
        ("REVIEW2", ids[1].clone()),
    ]);
    // First an operator looks at the dashboard: both wait, in the review queue.
    add_staff(
        dir.path(),
        &data,
        "olga@exchange.example",
        "operator",
        None,
        "olga's operator passphrase",
    );
    let mut ops_env =
        console_env(&dev, dir.path(), "olga@exchange.example", "olga's operator passphrase");
    ops_env.push(("CUSTOMER", "rita".into()));
    let board = browser(&tools, &chromium, "dashboard", &ops_env);
    println!("console dashboard: {board}");
    let seen = browser(&tools, &chromium, "analyst", &page_env);
    println!("console analyst: {seen}");

    let rejected = api(&dev, "GET", &format!("/v1/risk/reviews/{}", ids[1]), None);
    assert_eq!(rejected["state"], "rejected", "{rejected}");
    assert!(rejected["notes"].to_string().contains("did not ask for this"), "{rejected}");
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let a = api(&dev, "GET", &format!("/v1/withdrawals/{}", ids[0]), None);
        let b = api(&dev, "GET", &format!("/v1/withdrawals/{}", ids[1]), None);
        if a["state"] == "settled" && b["state"] == "cancelled" {
            break;
        }
        assert!(Instant::now() < deadline, "{a}\n{b}");
        std::thread::sleep(Duration::from_secs(1));
    }
    assert_eq!(balance(&chain.url, to_release) - before, ETH / 5, "the released one was paid");

    // Someone edits the customer's row behind Strongroom's back: the operator's audit page
    // says the log does not verify, and which row.
    let db = data.join("strongroom.db");
    let edit = format!(
        "import sqlite3; c=sqlite3.connect({:?}); c.execute(\"update customers set external_id='mallory' where id='{cid}'\"); c.commit()",
        db.to_str().unwrap()
    );
    let edited = Command::new("python3").args(["-c", &edit]).status().unwrap();
    assert!(edited.success());
    ops_env.push(("EDITED", format!("customer/{cid}")));
    let broken = browser(&tools, &chromium, "audit-broken", &ops_env);
    println!("console audit: {broken}");
    drop(dev);
}

/// A customer on their own pages: a withdrawal the exchange made for them, paid on chain,
/// with its transaction; the anti-phishing code set and then shown on every page; two-factor
/// codes turned on (ten recovery codes, shown once) and then required to sign in; a device
/// revoked; an address whitelisted (usable after the delay) and whitelist-only mode on; the
/// withdrawal lock after those changes, with why.
#[test]
fn a_customer_secures_their_account_in_the_console() {
    let Some((tools, chromium)) = browser_tools() else { return };
    let Some(chain) = start_anvil(&["--block-time", "1"]) else { return };
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("dev");
    let dev =
        start_dev_with(&data, &["--eth-rpc", chain.url.as_str(), "--confirmations", "1"], &[]);
    let email = "dora@customer.example";
    let password = "dora's long passphrase";
    let (st, reg) = call(
        &dev,
        "POST",
        "/v1/auth/register",
        None,
        Some(serde_json::json!({"email": email, "password": password, "device_name": "old phone"})),
    );
    assert_eq!(st, 201, "{reg}");
    let cid = reg["customer_id"].as_str().unwrap().to_owned();
    let credit = serde_json::json!({"customer_id": cid, "asset": "ETH", "amount": "1", "reference": "faucet"});
    api(&dev, "POST", "/v1/deposits", Some(credit));
    let dest = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed";
    let w = api(
        &dev,
        "POST",
        "/v1/withdrawals",
        Some(
            serde_json::json!({"customer_id": cid, "asset": "ETH", "destination": dest, "amount": "0.05"}),
        ),
    );
    let id = w["id"].as_str().unwrap_or_else(|| panic!("{w}")).to_owned();
    let deadline = Instant::now() + Duration::from_secs(120);
    let txid = loop {
        let v = api(&dev, "GET", &format!("/v1/withdrawals/{id}"), None);
        if v["state"] == "settled" {
            break v["transaction"]["txid"].as_str().unwrap().to_owned();
        }
        assert!(Instant::now() < deadline, "never settled: {v}");
        std::thread::sleep(Duration::from_secs(1));
    };
    let mut page_env = console_env(&dev, dir.path(), email, password);
    page_env.extend([
        ("DESTINATION", "0xfB6916095ca1df60bB79Ce92cE3Ea74c37c5d359".to_owned()),
        ("TXID", txid),
    ]);
    let seen = browser(&tools, &chromium, "customer", &page_env);
    println!("console customer: {seen}");
    let needs = seen["needs_code"].as_str().unwrap();
    assert!(needs.contains("second_factor_required"), "{needs}");
    // What the page did is what the account holds: the registration's device (and its
    // session) is gone, two-factor codes are on, the whitelist holds the address.
    let (st, _) = call(&dev, "GET", "/v1/me", reg["token"].as_str(), None);
    assert_eq!(st, 401, "the revoked device's session ended");
    let (st, back) = call(
        &dev,
        "POST",
        "/v1/auth/login",
        None,
        Some(serde_json::json!({"email": email, "password": password})),
    );
    assert_eq!(st, 401, "{back}");
    assert_eq!(back["error"]["code"], "second_factor_required", "{back}");
    drop(dev);
}
