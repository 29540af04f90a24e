//! The `strongroom` binary as a user runs it: `dev` comes up, curl talks TLS 1.3 to it and
//! is refused at TLS 1.2, and `audit verify` notices a row edited in the database.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::print_stdout,
    clippy::print_stderr
)] // Test code.
#![allow(clippy::disallowed_methods)] // A test of a real process waits on the real clock.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::*;

#[test]
fn dev_serves_tls13_only_and_audit_verify_catches_a_hand_edit() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("dev");
    let dev = start_dev(&data);
    assert!(std::fs::read_to_string(data.join("operator.token")).unwrap().trim() == dev.token);

    let health = format!("{}/v1/health", dev.url);
    match curl(&["--tlsv1.3", "--cacert", &dev.ca, &health]) {
        Some((ok, out)) => {
            assert!(ok, "{out}");
            assert!(out.contains("\"status\":\"ok\""), "{out}");
            let (ok, out) = curl(&["--tls-max", "1.2", "--cacert", &dev.ca, &health]).unwrap();
            assert!(!ok, "a TLS 1.2 client must be refused: {out}");
            println!("curl TLS 1.3: ok; curl --tls-max 1.2: refused ({})", out.trim());
        }
        None => println!("SKIPPED the curl part: curl is not installed"),
    }

    // A customer made through the API with the printed token, then a service token made by
    // the CLI.
    let (ok, out) = curl(&[
        "--cacert",
        &dev.ca,
        "-H",
        &format!("Authorization: Bearer {}", dev.token),
        "-H",
        "Idempotency-Key: c1",
        "-H",
        "Content-Type: application/json",
        "-d",
        "{\"external_id\":\"carol\"}",
        &format!("{}/v1/customers", dev.url),
    ])
    .unwrap_or((true, "skipped".into()));
    assert!(ok && (out.contains("carol") || out == "skipped"), "{out}");
    let made = Command::new(BIN)
        .args([
            "token",
            "create",
            "--name",
            "backend",
            "--role",
            "service",
            "--data-dir",
            data.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    assert!(String::from_utf8_lossy(&made.stdout).trim().starts_with("srt_"));
    // The same as one JSON document, its secret in it once.
    let made = Command::new(BIN)
        .args(["token", "create", "--name", "b2", "--role", "auditor", "--output", "json"])
        .args(["--data-dir", data.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(made.status.code(), Some(0), "{}", String::from_utf8_lossy(&made.stderr));
    let made: serde_json::Value = serde_json::from_slice(&made.stdout).unwrap();
    let secret = made["token"].as_str().unwrap();
    assert!(secret.starts_with(&format!("srt_{}_", made["id"].as_str().unwrap())), "{made}");
    assert_eq!(made["role"], "auditor");

    // Exit 0 when intact, 1 when tampering is found; `--output json` says the same.
    let verify = |json: bool| {
        let mut c = Command::new(BIN);
        c.args(["audit", "verify", "--data-dir", data.to_str().unwrap()]);
        if json {
            c.args(["--output", "json"]);
        }
        c.output().unwrap()
    };
    let out = verify(false);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stdout));
    assert!(String::from_utf8_lossy(&out.stdout).contains("audit log intact"));
    let out = verify(true);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (report["intact"].as_bool(), report["mismatch_count"].as_u64()),
        (Some(true), Some(0))
    );
    assert!(report["records"].as_u64().unwrap() > 0, "{report}");

    // Someone edits the customer row behind Strongroom's back.
    drop(dev);
    // Its log went to a file: plain text, no terminal colour codes (nor in the nodes' logs).
    let mut logs = vec![data.with_extension("stderr.log")];
    for entry in std::fs::read_dir(data.join("signers")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "log") {
            logs.push(path);
        }
    }
    assert!(logs.len() >= 2, "{logs:?}");
    for log in &logs {
        let text = std::fs::read_to_string(log).unwrap();
        assert!(!text.trim().is_empty(), "{} is empty", log.display());
        assert!(!text.contains('\x1b'), "ANSI escape codes in {}:\n{text}", log.display());
    }
    let db = data.join("strongroom.db");
    // One row (the dev stack keeps more than one customer, and external ids are unique).
    let edited = Command::new("python3")
        .args(["-c", &format!("import sqlite3; c=sqlite3.connect({:?}); c.execute(\"update customers set external_id='mallory' where rowid = (select min(rowid) from customers)\"); c.commit()", db.to_str().unwrap())])
        .status();
    match edited {
        Ok(s) => {
            assert!(s.success(), "the hand edit itself failed");
            let out = verify(false);
            assert_eq!(out.status.code(), Some(1));
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(text.contains("changed outside Strongroom"), "{text}");
            let out = verify(true);
            assert_eq!(out.status.code(), Some(1));
            let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            assert_eq!(report["intact"], false, "{report}");
            let edited = report["mismatches"].as_array().unwrap();
            assert!(edited.iter().any(|m| m["kind"] == "edited"), "{report}");
        }
        Err(_) => println!("SKIPPED the hand-edit part: python3 is not installed"),
    }
}

#[test]
fn bad_arguments_get_clear_errors() {
    let out = Command::new(BIN)
        .args(["token", "create", "--name", "x", "--role", "root"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr)
        .contains("role must be operator, service, auditor, approver, analyst or admin"));
    let out = Command::new(BIN)
        .args(["token", "create", "--name", "x", "--role", "service", "--allow-ip", "nowhere"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not an IP address or CIDR range"));
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .args(["audit", "verify", "--data-dir", dir.path().to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("run `strongroom dev` first"));
}

/// `strongroom certificate`: a self-signed mTLS identity whose printed pin is the SHA-256 of
/// the certificate, kept on a second run, with its key readable by its owner only.
#[test]
fn certificates_are_self_signed_and_named_by_their_pin() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let make = |name: &str| {
        let out =
            Command::new(BIN).args(["certificate", "--dir", d, "--name", name]).output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).trim().to_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, pin, err) = make("pusher-ada");
    assert!(ok, "{err}");
    let creds = strongroom_signer::tls::Credentials::load(
        &dir.path().join("pusher-ada.pem"),
        &dir.path().join("pusher-ada-key.pem"),
    )
    .unwrap();
    assert_eq!(pin, creds.fingerprint());
    assert_eq!(pin.len(), 64);
    assert_eq!(make("pusher-ada").1, pin, "the same identity on a second run");
    assert_ne!(make("signer-1").1, pin);
    use std::os::unix::fs::PermissionsExt;
    let mode =
        std::fs::metadata(dir.path().join("pusher-ada-key.pem")).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let (ok, _, err) = make("../escape");
    assert!(!ok && err.contains("a name is letters"), "{err}");
}

/// The production path: `migrate`, `token create` and `serve --config` against PostgreSQL.
#[test]
fn serve_with_a_config_file_on_postgres() {
    let Ok(base) = std::env::var("STRONGROOM_TEST_POSTGRES_URL") else {
        assert!(
            std::env::var("STRONGROOM_REQUIRE_POSTGRES").map_or(true, |v| v != "1"),
            "PostgreSQL required but STRONGROOM_TEST_POSTGRES_URL is not set"
        );
        println!(
            "SKIPPED serve_with_a_config_file_on_postgres: STRONGROOM_TEST_POSTGRES_URL is not set"
        );
        return;
    };
    let db = format!("sr_cli_{}", std::process::id());
    let psql = |sql: &str| {
        Command::new("psql").args([base.as_str(), "-qAtc", sql]).status().map(|s| s.success())
    };
    if psql(&format!("CREATE DATABASE {db}")).ok() != Some(true) {
        println!("SKIPPED serve_with_a_config_file_on_postgres: psql is not available");
        assert!(
            std::env::var("STRONGROOM_REQUIRE_POSTGRES").map_or(true, |v| v != "1"),
            "psql needed"
        );
        return;
    }
    let url = strongroom_store::with_database(&base, &db);
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = dir.path().join("strongroom.toml");
    let base_config = format!(
        "listen = \"127.0.0.1:{port}\"\ndatabase_url = \"{url}\"\ndata_dir = \"{}\"\n\
         [[assets]]\nsymbol = \"ETH\"\nchain = \"eip155:1\"\ndecimals = 18\n\
         min_withdrawal = \"0.001\"\nfee_cap = \"5000000000000000\"\n",
        dir.path().display()
    );
    std::fs::write(&config, &base_config).unwrap();
    let cfg = config.to_str().unwrap();
    // serve guesses nothing: no certificate, no development CA; no key, no key made.
    let refused = Command::new(BIN).args(["serve", "--config", cfg]).output().unwrap();
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success() && err.contains("[tls] cert and key are required"), "{err}");
    let tls = dir.path().join("tls");
    let made = Command::new(BIN)
        .args(["certificate", "--dir", tls.to_str().unwrap(), "--name", "api"])
        .args(["--host", "localhost", "--host", "127.0.0.1"])
        .output()
        .unwrap();
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    std::fs::write(
        &config,
        format!(
            "{base_config}[tls]\ncert = \"{0}/api.pem\"\nkey = \"{0}/api-key.pem\"\n",
            tls.display()
        ),
    )
    .unwrap();
    let refused = Command::new(BIN).args(["serve", "--config", cfg]).output().unwrap();
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success() && err.contains("strongroom keys init"), "{err}");
    let init = Command::new(BIN).args(["keys", "init", "--config", cfg]).output().unwrap();
    assert!(init.status.success(), "{}", String::from_utf8_lossy(&init.stderr));
    let again = Command::new(BIN).args(["keys", "init", "--config", cfg]).output().unwrap();
    assert!(!again.status.success(), "a second key would orphan the first one's data");

    let migrated = Command::new(BIN).args(["migrate", "--config", cfg]).output().unwrap();
    assert!(migrated.status.success(), "{}", String::from_utf8_lossy(&migrated.stderr));
    let made = Command::new(BIN)
        .args(["token", "create", "--name", "ops", "--role", "operator", "--config", cfg])
        .output()
        .unwrap();
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    let token = String::from_utf8_lossy(&made.stdout).trim().to_owned();

    let mut server = Command::new(BIN)
        .args(["serve", "--config", cfg])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let ca = tls.join("api.pem");
    let health = format!("https://127.0.0.1:{port}/v1/health");
    let deadline = Instant::now() + Duration::from_secs(240);
    let mut answer = None;
    while Instant::now() < deadline {
        if let Some((true, out)) = curl(&["--tlsv1.3", "--cacert", ca.to_str().unwrap(), &health]) {
            answer = Some(out);
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let customers = curl(&[
        "--cacert",
        ca.to_str().unwrap(),
        "-H",
        &format!("Authorization: Bearer {token}"),
        "-H",
        "Idempotency-Key: k1",
        "-H",
        "Content-Type: application/json",
        "-d",
        "{\"external_id\":\"dora\"}",
        &format!("https://127.0.0.1:{port}/v1/customers"),
    ]);
    let _ = server.kill();
    let mut log = String::new();
    if let Some(mut stderr) = server.stderr.take() {
        let _ = std::io::Read::read_to_string(&mut stderr, &mut log);
    }
    let _ = server.wait();
    let verified = Command::new(BIN).args(["audit", "verify", "--config", cfg]).output().unwrap();
    psql(&format!("DROP DATABASE {db} WITH (FORCE)")).unwrap();

    let answer = answer.unwrap_or_else(|| panic!("serve never answered; log:\n{log}"));
    assert!(answer.contains("\"database\":\"postgres\""), "{answer}");
    let (ok, body) = customers.unwrap();
    assert!(ok && body.contains("\"external_id\":\"dora\""), "{body}");
    // Logs are JSON lines, and the token never appears in them.
    let first =
        log.lines().find(|l| l.contains("serving HTTPS")).unwrap_or_else(|| panic!("{log}"));
    assert!(serde_json::from_str::<serde_json::Value>(first).is_ok(), "{first}");
    assert!(!log.contains(token.rsplit('_').next().unwrap()), "token secret in the log");
    assert!(verified.status.success(), "{}", String::from_utf8_lossy(&verified.stdout));
    // The token, the treasury's ledger account (made by the runtime at first start), the
    // customer.
    let said = String::from_utf8_lossy(&verified.stdout);
    assert!(said.contains("audit log intact: 3 records"), "{said}");
}

/// `strongroom dev` brings up three signer processes with a 2-of-3 ECDSA and a 2-of-3
/// FROST-Taproot key; `strongroom mpc prove` gets proofs of control from them (a statement
/// the nodes build, naming the key and the challenge) that independent verifiers accept,
/// also after one node is killed.
#[test]
fn dev_signers_produce_threshold_signatures_from_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("dev");
    let dev = start_dev(&data);
    let challenge = [7u8; 32];
    let sign = |key: &str, signers: &str| {
        let out = Command::new(BIN)
            .args(["mpc", "prove", "--data-dir", data.to_str().unwrap(), "--key", key])
            .args(["--challenge", &hex::encode(challenge), "--signers", signers])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let statement = v["statement"].as_str().unwrap().to_owned();
        assert!(statement.contains(&format!("key: {key}")), "{statement}");
        assert!(statement.contains(&hex::encode(challenge)), "{statement}");
        // What was signed is the statement's tagged hash, recomputed here.
        let h = |f: &str| hex::decode(v[f].as_str().unwrap()).unwrap();
        let tagged = strongroom_governance::tagged_hash(
            strongroom_signer::check::PROOF_OF_CONTROL_TAG,
            statement.as_bytes(),
        );
        assert_eq!(h("signed"), tagged.to_vec());
        (h("public_key"), tagged, h("signature"))
    };
    for signers in ["1,2", "2,3"] {
        let (pk, msg, sig) = sign("hot-btc-1", signers);
        let vk = k256::schnorr::VerifyingKey::from_bytes(&pk).unwrap();
        vk.verify_raw(&msg, &k256::schnorr::Signature::try_from(sig.as_slice()).unwrap()).unwrap();

        let (pk, digest, sig) = sign("hot-eth-1", signers);
        use k256::ecdsa::signature::hazmat::PrehashVerifier;
        let vk = k256::ecdsa::VerifyingKey::from_sec1_bytes(&pk).unwrap();
        let sig = k256::ecdsa::Signature::from_slice(&sig).unwrap();
        vk.verify_prehash(&digest, &sig).unwrap();
    }

    // Kill node 3 (held down by a `maintenance` file, or dev would start it again): nodes 1
    // and 2 still sign, and health says the stack is degraded, naming the signers.
    let pid = std::fs::read_dir(data.join("signers")).unwrap().count();
    assert!(pid > 0);
    let maintenance = data.join("signers/signer-3/maintenance");
    std::fs::write(&maintenance, "test: node 3 down\n").unwrap();
    let health = || api(&dev, "GET", "/v1/health", None);
    assert_eq!(health()["status"], "ok", "{}", health());
    let killed = Command::new("pkill")
        .args(["-f", &format!("{}/signers/signer-3/signer.toml", data.display())])
        .status()
        .unwrap();
    assert!(killed.success());
    std::thread::sleep(Duration::from_millis(300));
    let (pk, msg, sig) = sign("hot-btc-1", "1,2");
    let vk = k256::schnorr::VerifyingKey::from_bytes(&pk).unwrap();
    vk.verify_raw(&msg, &k256::schnorr::Signature::try_from(sig.as_slice()).unwrap()).unwrap();
    let h = health();
    assert_eq!(
        (h["status"].as_str(), h["problems"][0].as_str()),
        (Some("degraded"), Some("signers")),
        "{h}"
    );
    let ready = api(&dev, "GET", "/v1/ready", None);
    assert_eq!(ready["ready"], true, "a quorum still answers: {ready}");
    assert!(ready.to_string().contains("node 3 unreachable"), "{ready}");
    // Maintenance over: dev starts the node again and health is ok once it answers.
    std::fs::remove_file(&maintenance).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while health()["status"] != "ok" {
        assert!(Instant::now() < deadline, "node 3 never came back: {}", health());
        std::thread::sleep(Duration::from_millis(250));
    }

    // The dev stack governs itself (the README's walkthrough): the nodes pin the dev
    // genesis, whose starter policy is in force, and a change signed with the dev admins'
    // keys is committed through the API.
    let pin = std::fs::read_to_string(data.join("governance/genesis.pin")).unwrap();
    let pin = pin.trim();
    let config = std::fs::read_to_string(data.join("signers/signer-1/signer.toml")).unwrap();
    assert!(config.contains(&format!("governance_pin = \"{pin}\"")), "{config}");
    assert!(!config.contains("insecure_no_governance"), "{config}");
    let envs = [
        ("STRONGROOM_ADDR", dev.url.clone()),
        ("STRONGROOM_CACERT", dev.ca.clone()),
        ("STRONGROOM_TOKEN_FILE", data.join("operator.token").to_str().unwrap().to_owned()),
    ];
    let gov = |args: &[&str]| {
        let out = Command::new(BIN).args(args).envs(envs.iter().cloned()).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        (out.status.success(), text)
    };
    let (ok, out) = gov(&["governance", "show", "--pin", pin]);
    assert!(ok && out.contains("policy: version 1, 3 rules") && out.contains("quorum: 2"), "{out}");
    assert!(out.contains("asset USDT on eip155:31337"), "{out}");
    let policy = dir.path().join("policy.toml");
    std::fs::write(
        &policy,
        "version = 2\n[[rules]]\nname = \"all\"\naction = { kind = \"approvals\", count = 2, roles = [\"approver\"] }\n\
         [[fees]]\nchain = \"eip155:31337\"\nfee_asset = \"ETH\"\nmax_fee = \"10000000000000000\"\n",
    )
    .unwrap();
    assert!(gov(&["governance", "propose", "policy", "--file", policy.to_str().unwrap()]).0);
    let key =
        |who: &str| data.join(format!("governance/keys/{who}.key")).to_str().unwrap().to_owned();
    for (who, then) in [("ada", "waiting"), ("bob", "committed")] {
        let (ok, out) = gov(&[
            "governance",
            "sign",
            "--member",
            who,
            "--key",
            &key(who),
            "--pin",
            pin,
            "--yes",
        ]);
        assert!(ok && out.contains(then), "{who}: {out}");
    }

    // No share in the database: the only key material the API server's database holds is
    // none; the dev folder's plain files are certificates, configs, logs and public facts.
    let db = std::fs::read(data.join("strongroom.db")).unwrap();
    let db = String::from_utf8_lossy(&db);
    assert!(!db.contains("key_package") && !db.contains("signing_share"));
    drop(dev);
}

/// Issue "Incident response": `strongroom drill node-compromise` on the dev stack
/// quarantines node 3 through governance, times the moment no session with it signs,
/// refreshes the FROST key without it, and checks that nodes 1 and 2 still sign; the
/// server's audit log holds the entry, node 1's its refusals, and a second run is refused.
#[test]
fn a_node_compromise_drill_on_the_dev_stack() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("dev");
    let dev = start_dev(&data);
    let envs = [
        ("STRONGROOM_ADDR", dev.url.clone()),
        ("STRONGROOM_CACERT", dev.ca.clone()),
        ("STRONGROOM_TOKEN_FILE", data.join("operator.token").to_str().unwrap().to_owned()),
    ];
    // A lost host first: node 2 killed, its data and key-encryption key gone; restored from
    // the sealed backup the drill took, under a new key-encryption key, and `dev` starts it
    // again once the drill lifts its maintenance file. Nodes 1 and 3 sign meanwhile.
    let out = Command::new(BIN)
        .args(["drill", "lost-node", "--node", "2", "--data-dir", data.to_str().unwrap()])
        .args(["--yes", "--json"])
        .envs(envs.iter().cloned())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let recover = report["time_to_recover_ms"].as_u64().unwrap();
    let order = [
        "sealed backup",
        "alarm",
        "gone",
        "still sign",
        "restored",
        "back, with its pin",
        "resumed",
    ];
    let steps = drill_steps(&report, &order);
    println!("lost-node drill: time to recover {recover} ms; {steps:#?}");
    let still = steps.iter().find(|s| s.contains("still sign")).unwrap();
    assert!(still.contains("hot-btc-1") && still.contains("hot-eth-1"), "{still}");
    let resumed = steps.iter().find(|s| s.contains("resumed")).unwrap();
    assert!(resumed.contains("hot-btc-1") && resumed.contains("hot-eth-1"), "{resumed}");
    let node_audit =
        std::fs::read_to_string(data.join("signers/signer-2/data/audit.jsonl")).unwrap();
    assert!(node_audit.contains("node.restored"), "the restore is in node 2's own audit log");
    let drills: Vec<_> = std::fs::read_dir(data.join("drills")).unwrap().flatten().collect();
    assert!(drills.iter().any(|d| d.path().join("lost/data").is_dir()), "what was lost is kept");
    // `dev` told its operator about the death and the restart.
    let said = std::fs::read_to_string(data.with_extension("stderr.log")).unwrap();
    assert!(said.contains("signer node 2 exited"), "{said}");
    assert!(said.contains("signer node 2 started again"), "{said}");

    let drill = |extra: &[&str]| {
        Command::new(BIN)
            .args(["drill", "node-compromise", "--data-dir", data.to_str().unwrap()])
            .args(extra)
            .envs(envs.iter().cloned())
            .output()
            .unwrap()
    };
    // Without --yes and no terminal: nothing happens.
    let out = drill(&[]);
    assert!(!out.status.success());
    let out = drill(&["--yes", "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let contain = report["time_to_contain_ms"].as_u64().unwrap();
    let order =
        ["alarm", "committed", "pushed", "contained", "no presignature", "refreshed", "resumed"];
    let steps = drill_steps(&report, &order);
    println!("drill: time to contain {contain} ms; {steps:#?}");
    assert!(contain < 30_000, "{contain} ms");
    // The nodes agree: node 3 is out, and the FROST key's parties are 1 and 2.
    let status = Command::new(BIN)
        .args(["mpc", "status", "--data-dir", data.to_str().unwrap()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&status.stdout);
    let node1: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    assert_eq!(node1["quarantined"], serde_json::json!([3]), "{text}");
    let btc =
        node1["keys"].as_array().unwrap().iter().find(|k| k["key_id"] == "hot-btc-1").unwrap();
    assert_eq!(btc["parties"], serde_json::json!([1, 2]));
    // The audit trail: the entry in the server's log (verified), refusals in node 1's.
    let node_audit =
        std::fs::read_to_string(data.join("signers/signer-1/data/audit.jsonl")).unwrap();
    assert!(node_audit.contains("quarantined") && node_audit.contains("key.refreshed"));
    assert_audit_intact(&data);
    let g = api(&dev, "GET", "/v1/governance", None);
    assert!(g.to_string().contains("quarantine_node"), "{g}");
    // Node 3 is quarantined already: a second drill on it is refused.
    let again = drill(&["--yes"]);
    assert!(!again.status.success());
    // `signer backup` seals node 2 under a passphrase (the whole cycle, with a restore onto
    // a fresh host, is in crates/signer/tests/lifecycle.rs); a restore onto a folder that
    // holds keys is refused, and no passphrase, no backup.
    let config = data.join("signers/signer-2/signer.toml");
    let out_file = dir.path().join("node-2.backup");
    let signer = |args: &[&str], pass: Option<&str>| {
        let mut c = Command::new(BIN);
        c.arg("signer").args(args).arg("--config").arg(&config);
        match pass {
            Some(p) => c.env("STRONGROOM_BACKUP_PASSPHRASE", p),
            None => c.env_remove("STRONGROOM_BACKUP_PASSPHRASE"),
        };
        let out = c.output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        (out.status.success(), text)
    };
    let out_path = out_file.to_str().unwrap();
    let (ok, text) = signer(&["backup", "--out", out_path], None);
    assert!(!ok && text.contains("STRONGROOM_BACKUP_PASSPHRASE"), "{text}");
    let (ok, text) = signer(&["backup", "--out", out_path], Some("a long drill passphrase"));
    assert!(ok && text.contains("2 keys (hot-btc-1, hot-eth-1)"), "{text}");
    let (ok, text) = signer(&["restore", "--backup", out_path], Some("a long drill passphrase"));
    assert!(!ok && text.contains("holds keys already"), "{text}");
    // Or sealed to two of three recovery keys, each made by its holder; a restore needs
    // their secret files.
    let mut publics = Vec::new();
    for h in 1..=3 {
        let key = dir.path().join(format!("holder-{h}.key"));
        let out = Command::new(BIN)
            .args(["signer", "recovery-key", "--out", key.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        publics.push(String::from_utf8_lossy(&out.stdout).trim().to_owned());
    }
    let q_file = dir.path().join("node-2.quorum.backup");
    let q_path = q_file.to_str().unwrap();
    let mut args = vec!["backup", "--out", q_path, "--quorum", "2"];
    for p in &publics {
        args.extend(["--recovery-key", p.as_str()]);
    }
    let (ok, text) = signer(&args, None);
    assert!(ok && text.contains("to 2 of 3 recovery keys"), "{text}");
    let (ok, text) = signer(&["restore", "--backup", q_path], None);
    assert!(!ok && text.contains("--recovery-secret"), "{text}");
    let holder = |h: u8| dir.path().join(format!("holder-{h}.key")).to_str().unwrap().to_owned();
    let (h1, h3) = (holder(1), holder(3));
    let args = ["restore", "--backup", q_path, "--recovery-secret", &h1, "--recovery-secret", &h3];
    let (ok, text) = signer(&args, None);
    assert!(!ok && text.contains("holds keys already"), "{text}");

    // A drain under way: one officer freezes everything; the payout the attacker asks for,
    // with a log that lacks the freeze, is refused by the nodes; two admins lift it.
    let out = Command::new(BIN)
        .args(["drill", "drain", "--data-dir", data.to_str().unwrap(), "--yes", "--json"])
        .args(["--resume", "ada,bob"])
        .envs(envs.iter().cloned())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let contain = report["time_to_contain_ms"].as_u64().unwrap();
    let steps = report["steps"].to_string();
    println!("drain drill: time to contain {contain} ms; {steps}");
    assert!(steps.contains("refuses the payout (frozen)") && steps.contains("freeze lifted"));
    assert!(contain < 30_000, "{contain} ms");
    let g = api(&dev, "GET", "/v1/governance", None).to_string();
    assert!(g.contains("\"freeze\"") && g.contains("\"unfreeze\""), "{g}");

    // A freeze committed through the API alone (as the console's passkey signature does),
    // with nobody pushing it: the runtime pushes the grown log to the nodes within seconds.
    let gov = |args: &[&str]| {
        let out = Command::new(BIN).args(args).envs(envs.iter().cloned()).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    };
    gov(&["governance", "propose", "freeze", "--scope", "asset:USDT"]);
    let sec = data.join("governance/keys/sec.key");
    let pin = std::fs::read_to_string(data.join("governance/genesis.pin")).unwrap();
    gov(&["governance", "sign", "--member", "sec", "--key", sec.to_str().unwrap()]
        .into_iter()
        .chain(["--pin", pin.trim(), "--yes"])
        .collect::<Vec<_>>());
    let head = || {
        let out = Command::new(BIN)
            .args(["mpc", "status", "--data-dir", data.to_str().unwrap()])
            .output()
            .unwrap();
        let first = String::from_utf8_lossy(&out.stdout).lines().next().unwrap_or("{}").to_owned();
        let v: serde_json::Value = serde_json::from_str(&first).unwrap_or_default();
        v["governance"]["seq"].as_u64().unwrap_or(0)
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while head() < 5 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(250));
    }
    assert_eq!(head(), 5, "node 1 never received the freeze from the runtime");
    assert_audit_intact(&data);
    drop(dev);
}

/// `strongroom reconcile` on the dev stack: whether it passed, and what it printed. It ran
/// either way: exit 0 when every balance matches, 1 when one differs, never 2. Its JSON
/// report (run after it) names the same assets and agrees with its own exit code.
fn reconcile(data: &std::path::Path) -> (bool, String) {
    let run = |extra: &[&str]| {
        Command::new(BIN)
            .args(["reconcile", "--data-dir", data.to_str().unwrap()])
            .args(extra)
            .output()
            .unwrap()
    };
    let out = run(&[]);
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(matches!(out.status.code(), Some(0 | 1)), "{text}");
    let json = run(&["--output", "json"]);
    let report: serde_json::Value = serde_json::from_slice(&json.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&json.stdout)));
    assert_eq!(report["matches"].as_bool(), Some(json.status.code() == Some(0)), "{report}");
    for asset in report["assets"].as_array().unwrap() {
        assert!(text.contains(asset["asset"].as_str().unwrap()), "{report}\n{text}");
    }
    (out.status.success(), text)
}

/// A drill's JSON report's steps, which must name `order`'s words in that order.
fn drill_steps(report: &serde_json::Value, order: &[&str]) -> Vec<String> {
    let steps: Vec<String> = report["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["what"].as_str().unwrap().to_owned())
        .collect();
    let mut at = 0;
    for word in order {
        let i = steps
            .iter()
            .position(|s| s.contains(word))
            .unwrap_or_else(|| panic!("{word}: {steps:?}"));
        assert!(i >= at, "{word} out of order: {steps:?}");
        at = i;
    }
    steps
}

/// `strongroom audit verify` passes on the dev stack's database.
fn assert_audit_intact(data: &std::path::Path) {
    let out = Command::new(BIN)
        .args(["audit", "verify", "--data-dir", data.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
}

/// The issue's end-to-end run: `strongroom dev` on a real Ethereum node; a customer's ETH
/// and ERC-20 deposits into their derived address are credited after confirmations; a
/// withdrawal is signed 2-of-3 by the signer processes, stored, and then the orchestrator
/// dies (abort, as a kill would) before it broadcasts. After a restart exactly one
/// transaction is on chain, the withdrawal settles, and the ledger reconciles with the chain
/// to the wei for ETH and the token.
#[test]
fn dev_withdraws_eth_signed_by_the_signer_processes_and_survives_a_crash_before_broadcast() {
    let Some(chain) = start_anvil(&["--block-time", "1"]) else { return };
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("dev");
    let rpc_args = ["--eth-rpc", chain.url.as_str(), "--confirmations", "2"];
    let mut dev = start_dev_with(&data, &rpc_args, &[("STRONGROOM_TEST_STOP_AFTER", "signed")]);
    let chain_file: serde_json::Value =
        serde_json::from_slice(&std::fs::read(data.join("chain.json")).unwrap()).unwrap();
    let hot = chain_file["wallets"][0][1].as_str().unwrap().to_owned();

    // A customer asks for a deposit address and sends 1 ETH and 250 USDT (the dev test
    // token) to it from their own wallet (an anvil account). The watcher credits both after
    // the confirmations.
    let customer =
        api(&dev, "POST", "/v1/customers", Some(serde_json::json!({"external_id": "erin"})));
    let customer_id = customer["id"].as_str().unwrap().to_owned();
    let path = format!("/v1/customers/{customer_id}/deposit-address");
    let address = api(&dev, "POST", &path, Some(serde_json::json!({"asset": "ETH"})));
    let deposit_to = address["address"].as_str().unwrap().to_owned();
    assert_ne!(deposit_to.to_lowercase(), hot.to_lowercase());
    assert_eq!(
        api(&dev, "POST", &path, Some(serde_json::json!({"asset": "USDT"})))["address"],
        deposit_to.as_str()
    );
    let from =
        rpc(&chain.url, "eth_accounts", serde_json::json!([]))[1].as_str().unwrap().to_owned();
    rpc(
        &chain.url,
        "eth_sendTransaction",
        serde_json::json!([{"from": from, "to": deposit_to, "value": "0xde0b6b3a7640000"}]),
    );
    // transfer(deposit_to, 250_000_000) on the dev token.
    let calldata = format!(
        "0xa9059cbb{:0>64}{:064x}",
        deposit_to.trim_start_matches("0x").to_lowercase(),
        250_000_000u64
    );
    let token = "0x5FbDB2315678afecb367f032d93F642f64180aa3";
    rpc(
        &chain.url,
        "eth_sendTransaction",
        serde_json::json!([{"from": from, "to": token, "data": calldata}]),
    );
    let balances = format!("/v1/customers/{customer_id}/balances");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let b = api(&dev, "GET", &balances, None).to_string();
        if b.contains("\"available\":\"1000000000000000000\"")
            && b.contains("\"available\":\"250000000\"")
        {
            break;
        }
        assert!(Instant::now() < deadline, "deposits not credited: {b}");
        std::thread::sleep(Duration::from_millis(250));
    }

    // Withdrawals to our own addresses are refused, and nothing is reserved.
    for own in [deposit_to.as_str(), hot.as_str()] {
        let refused = api(
            &dev,
            "POST",
            "/v1/withdrawals",
            Some(serde_json::json!({
                "customer_id": customer_id, "asset": "ETH", "destination": own, "amount": "0.1",
            })),
        );
        assert_eq!(refused["error"]["code"], "own_address", "{refused}");
    }
    let b = api(&dev, "GET", &balances, None).to_string();
    assert!(b.contains("\"pending\":\"0\""), "{b}");

    // The withdrawal: signed by two signer processes, stored, then the process dies.
    let dest = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed";
    let w = api(
        &dev,
        "POST",
        "/v1/withdrawals",
        Some(serde_json::json!({
            "customer_id": customer_id, "asset": "ETH", "destination": dest, "amount": "0.25",
        })),
    );
    let id = w["id"].as_str().unwrap().to_owned();
    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(s) = dev.child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "the engine never reached the stop point");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(!status.success(), "dev died at the stop point: {status:?}");
    let nonce =
        |tag: &str| rpc(&chain.url, "eth_getTransactionCount", serde_json::json!([hot, tag]));
    assert_eq!(nonce("pending"), "0x0", "nothing was broadcast before the crash");
    std::thread::sleep(Duration::from_millis(500)); // the signer children see stdin close

    // Restart: the stored transaction is sent, confirmed, settled.
    let dev = start_dev_with(&data, &rpc_args, &[]);
    let deadline = Instant::now() + Duration::from_secs(120);
    let done = loop {
        let w = api(&dev, "GET", &format!("/v1/withdrawals/{id}"), None);
        if w["state"] == "settled" {
            break w;
        }
        assert!(Instant::now() < deadline, "not settled: {w}");
        std::thread::sleep(Duration::from_millis(250));
    };
    assert_eq!(nonce("latest"), "0x1", "exactly one transaction left the hot wallet");
    let txid = done["transaction"]["txid"].as_str().unwrap();
    let tx = rpc(&chain.url, "eth_getTransactionByHash", serde_json::json!([txid]));
    assert_eq!(tx["from"].as_str().unwrap().to_lowercase(), hot.to_lowercase());
    assert_eq!(tx["to"].as_str().unwrap().to_lowercase(), dest.to_lowercase());
    assert_eq!(tx["value"], "0x3782dace9d90000");
    let got = rpc(&chain.url, "eth_getBalance", serde_json::json!([dest, "latest"]));
    assert_eq!(got, "0x3782dace9d90000", "0.25 ETH arrived");
    let after = api(&dev, "GET", &balances, None);
    assert!(after.to_string().contains("750000000000000000"), "{after}");

    // The deposit address is swept into the hot wallet (the dev stack consolidates). Once
    // nothing is moving, ledger and chain agree to the base unit for ETH and USDT.
    let balance_of = serde_json::json!({"to": token, "data": format!("0x70a08231{:0>64}", deposit_to.trim_start_matches("0x").to_lowercase())});
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let (ok, text) = reconcile(&data);
        let left = rpc(&chain.url, "eth_call", serde_json::json!([balance_of, "latest"]));
        let swept = left == format!("0x{:064x}", 0);
        if swept && ok && text.matches("match").count() == 2 && !text.contains("in flight") {
            break;
        }
        assert!(Instant::now() < deadline, "swept: {swept}\n{text}");
        std::thread::sleep(Duration::from_millis(500));
    }
    assert_audit_intact(&data);
    drop(dev);
}

/// Issue "Incident response", ECDSA rotate-by-sweep on a real Ethereum node: a new
/// threshold key is made on the signer processes and the quorum declares the migration;
/// the running engine moves to the new key within seconds: it pays out from it, gives
/// customers new deposit addresses from it, and sweeps every ETH and token balance of the
/// old hot wallet into it (and a restarted one starts there);
/// deposits into a customer's old address still arrive and are swept there, before and
/// after the old key is retired; once retired, the nodes refuse the old key; ledger and
/// chain reconcile.
#[test]
fn the_ecdsa_hot_key_rotates_by_sweep_and_old_deposit_addresses_stay_swept() {
    let Some(chain) = start_anvil(&["--block-time", "1"]) else { return };
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("dev");
    let d = data.to_str().unwrap();
    // The FROST key's shares are refreshed on a schedule meanwhile (every 20 s).
    let rpc_args =
        ["--eth-rpc", chain.url.as_str(), "--confirmations", "2", "--refresh-every-secs", "20"];
    let dev = start_dev_with(&data, &rpc_args, &[]);
    let wallets = || -> Vec<(String, String)> {
        let file: serde_json::Value =
            serde_json::from_slice(&std::fs::read(data.join("chain.json")).unwrap()).unwrap();
        serde_json::from_value(file["wallets"].clone()).unwrap()
    };
    let old_hot = wallets()[0].1.clone();
    let status = cli_with(&["mpc", "status", "--data-dir", d], &[]);
    let node1: serde_json::Value = serde_json::from_str(status.1.lines().next().unwrap()).unwrap();
    let btc_key =
        node1["keys"].as_array().unwrap().iter().find(|k| k["key_id"] == "hot-btc-1").unwrap()
            ["public_key"]
            .as_str()
            .unwrap()
            .to_owned();
    let token = "0x5FbDB2315678afecb367f032d93F642f64180aa3";
    let eth_of = |a: &str| {
        let v = rpc(&chain.url, "eth_getBalance", serde_json::json!([a, "latest"]));
        u128::from_str_radix(v.as_str().unwrap().trim_start_matches("0x"), 16).unwrap()
    };
    let usdt_of = |a: &str| {
        let call = serde_json::json!({"to": token, "data": format!("0x70a08231{:0>64}", a.trim_start_matches("0x").to_lowercase())});
        let v = rpc(&chain.url, "eth_call", serde_json::json!([call, "latest"]));
        u128::from_str_radix(v.as_str().unwrap().trim_start_matches("0x"), 16).unwrap()
    };
    let from =
        rpc(&chain.url, "eth_accounts", serde_json::json!([]))[1].as_str().unwrap().to_owned();
    let send_eth = |to: &str, wei: u128| {
        let tx = serde_json::json!([{"from": from, "to": to, "value": format!("{wei:#x}")}]);
        rpc(&chain.url, "eth_sendTransaction", tx);
    };
    let send_usdt = |to: &str, units: u64| {
        let data =
            format!("0xa9059cbb{:0>64}{units:064x}", to.trim_start_matches("0x").to_lowercase());
        let tx = serde_json::json!([{"from": from, "to": token, "data": data}]);
        rpc(&chain.url, "eth_sendTransaction", tx);
    };
    let wait = |what: &str, secs: u64, done: &dyn Fn() -> bool| {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while !done() {
            assert!(Instant::now() < deadline, "{what}");
            std::thread::sleep(Duration::from_millis(500));
        }
    };
    const ETH: u128 = 1_000_000_000_000_000_000;
    // Below what the dev stack sweeps (0.001 ETH): the fee ceiling's unspent part.
    let dust = ETH / 1000;

    // Before: erin's deposit address (a child of hot-eth-1) receives 1 ETH and 250 USDT,
    // swept into the hot wallet; the treasury also holds 100 USDT there.
    let customer =
        api(&dev, "POST", "/v1/customers", Some(serde_json::json!({"external_id": "erin"})));
    let customer_id = customer["id"].as_str().unwrap().to_owned();
    let path = format!("/v1/customers/{customer_id}/deposit-address");
    let old_deposit = api(&dev, "POST", &path, Some(serde_json::json!({"asset": "ETH"})))
        ["address"]
        .as_str()
        .unwrap()
        .to_owned();
    send_eth(&old_deposit, ETH);
    send_usdt(&old_deposit, 250_000_000);
    send_usdt(&old_hot, 100_000_000);
    wait("the old deposit address swept into hot-eth-1", 120, &|| {
        usdt_of(&old_deposit) == 0
            && eth_of(&old_deposit) < dust
            && usdt_of(&old_hot) == 350_000_000
    });

    // The new key, made by the three signer processes; the quorum migrates the old one.
    let (ok, out) = cli_with(
        &[
            "mpc",
            "keygen",
            "--data-dir",
            d,
            "--key",
            "hot-eth-2",
            "--scheme",
            "ecdsa",
            "--threshold",
            "2",
        ],
        &[],
    );
    assert!(ok, "{out}");
    let made: serde_json::Value =
        serde_json::from_str(out.lines().find(|l| l.contains("public_key")).unwrap()).unwrap();
    let new_key = made["public_key"].as_str().unwrap().to_owned();
    let pin = std::fs::read_to_string(data.join("governance/genesis.pin")).unwrap();
    let commit = |dev: &Dev, change: &[&str], members: &[&str]| {
        let envs = [
            ("STRONGROOM_ADDR", dev.url.clone()),
            ("STRONGROOM_CACERT", dev.ca.clone()),
            ("STRONGROOM_TOKEN_FILE", data.join("operator.token").to_str().unwrap().to_owned()),
        ];
        let mut args = vec!["governance", "propose"];
        args.extend(change);
        let proposed = cli_with(&args, &envs);
        assert!(proposed.0, "{}", proposed.1);
        let mut out = String::new();
        for m in members {
            let key = data.join(format!("governance/keys/{m}.key"));
            let signed = cli_with(
                &[
                    "governance",
                    "sign",
                    "--member",
                    m,
                    "--key",
                    key.to_str().unwrap(),
                    "--pin",
                    pin.trim(),
                    "--yes",
                ],
                &envs,
            );
            assert!(signed.0, "{}", signed.1);
            out = signed.1;
        }
        assert!(out.contains("committed"), "{out}");
    };
    let migrate = ["migrate-key", "--from", "hot-eth-1", "--to", "hot-eth-2", "--public-key"];
    commit(&dev, &[&migrate[..], &[new_key.as_str()]].concat(), &["ada", "bob"]);

    // The running stack follows governance within seconds, no restart: hot-eth-2 pays out
    // and gives deposit addresses, hot-eth-1 is swept into it.
    wait("the chain's workers on hot-eth-2", 60, &|| wallets()[0].0 == "hot-eth-2");
    let now = wallets();
    assert_eq!(now[1], ("hot-eth-1".to_owned(), old_hot.clone()), "{now:?}");
    let new_hot = now[0].1.clone();
    assert_ne!(new_hot, old_hot);
    let new_deposit = api(&dev, "POST", &path, Some(serde_json::json!({"asset": "USDT"})))
        ["address"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_ne!(new_deposit, old_deposit, "new addresses come from the new key");
    wait("every ETH and token balance of hot-eth-1 in hot-eth-2", 180, &|| {
        usdt_of(&old_hot) == 0 && eth_of(&old_hot) < dust && usdt_of(&new_hot) == 350_000_000
    });
    assert!(eth_of(&new_hot) > 9 * ETH, "the treasury's ETH moved: {}", eth_of(&new_hot));

    // A deposit into erin's old address still arrives, and is swept into the new key.
    send_eth(&old_deposit, ETH / 2);
    send_usdt(&old_deposit, 40_000_000);
    wait("the old address's deposit swept into hot-eth-2", 120, &|| {
        usdt_of(&old_deposit) == 0
            && eth_of(&old_deposit) < dust
            && usdt_of(&new_hot) == 390_000_000
    });

    // Payouts come from the new key.
    let w = api(
        &dev,
        "POST",
        "/v1/withdrawals",
        Some(serde_json::json!({
            "customer_id": customer_id, "asset": "ETH",
            "destination": "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed", "amount": "0.05",
        })),
    );
    let id = w["id"].as_str().unwrap().to_owned();
    assert_eq!(w["source_wallet"], "hot-eth-2", "{w}");
    wait("the withdrawal from hot-eth-2 settled", 120, &|| {
        api(&dev, "GET", &format!("/v1/withdrawals/{id}"), None)["state"] == "settled"
    });
    let settled = api(&dev, "GET", &format!("/v1/withdrawals/{id}"), None);
    let txid = settled["transaction"]["txid"].as_str().unwrap();
    let tx = rpc(&chain.url, "eth_getTransactionByHash", serde_json::json!([txid]));
    assert_eq!(tx["from"].as_str().unwrap().to_lowercase(), new_hot.to_lowercase());

    // One admin retires the old key: the nodes refuse it from now on (a proof of control,
    // signed by the old key a moment before, is refused with the typed reason; the new
    // key proves), yet the old deposit address is still watched and swept.
    let challenge = "00112233445566778899aabbccddeeff";
    let prove = |key: &str| {
        cli_with(&["mpc", "prove", "--data-dir", d, "--key", key, "--challenge", challenge], &[])
    };
    let (ok, out) = prove("hot-eth-1");
    assert!(ok, "{out}");
    commit(&dev, &["retire-key", "--key", "hot-eth-1"], &["ada"]);
    let (ok, out) = prove("hot-eth-1");
    assert!(!ok && out.contains("hot-eth-1 is retired by governance entry"), "{out}");
    let (ok, out) = prove("hot-eth-2");
    assert!(ok, "{out}");
    // A restarted stack starts on hot-eth-2 (its configuration still names hot-eth-1).
    drop(dev);
    std::thread::sleep(Duration::from_millis(500));
    let dev = start_dev_with(&data, &rpc_args, &[]);
    assert_eq!(wallets(), now, "the same wallets after a restart");
    send_eth(&old_deposit, ETH / 4);
    wait("a deposit after retirement credited and swept into hot-eth-2", 120, &|| {
        let b = api(&dev, "GET", &format!("/v1/customers/{customer_id}/balances"), None);
        b.to_string().contains("\"available\":\"1700000000000000000\"")
            && eth_of(&old_deposit) < dust
    });

    // The scheduled refreshes ran on every node, and the FROST key still proves, under the
    // same group key.
    for n in 1..=3 {
        let audit =
            std::fs::read_to_string(data.join(format!("signers/signer-{n}/data/audit.jsonl")))
                .unwrap();
        assert!(audit.contains("key.refreshed"), "node {n} refreshed no share");
    }
    let (ok, out) = prove("hot-btc-1");
    assert!(ok, "{out}");
    let proved: serde_json::Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    assert_eq!(proved["public_key"].as_str().unwrap(), btc_key, "the same group key");

    // Ledger and chain agree over both keys' addresses, for ETH and USDT.
    wait("ledger and chain reconciled", 90, &|| {
        let (ok, text) = reconcile(&data);
        ok && text.matches("match").count() == 2 && !text.contains("in flight")
    });
    assert_audit_intact(&data);
    drop(dev);
}

/// An admin quorum set up and used with `strongroom governance`: keys, a 2-of-3 genesis, a
/// policy with amount tiers that needs two admins, a time-locked whitelist entry, a freeze
/// by one security officer; a hand-edited log no longer verifies.
#[test]
fn governance_quorum_policy_whitelist_and_freeze_from_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let gov = dir.path().join("gov");
    let run = |args: &[&str]| {
        let out = Command::new(BIN).arg("governance").args(args).output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr),
        )
    };
    let g = gov.to_str().unwrap();
    let mut members = Vec::new();
    for (id, roles) in
        [("ada", "admin"), ("bob", "admin"), ("cy", "admin"), ("sec", "security_officer")]
    {
        let key = dir.path().join(format!("{id}.key"));
        let (ok, out) = run(&["keygen", "--out", key.to_str().unwrap()]);
        assert!(ok, "{out}");
        members.push(format!("{id}:{}:{roles}", out.trim()));
    }
    let key = |id: &str| dir.path().join(format!("{id}.key")).to_str().unwrap().to_owned();
    let mut init = vec!["init", "--dir", g, "--quorum", "2", "--asset", "eip155:1:ETH:18"];
    for m in &members {
        init.extend(["--member", m.as_str()]);
    }
    let (ok, out) = run(&init);
    assert!(ok && out.contains("signer nodes pin"), "{out}");

    // A policy with tiers: one admin's signature is not enough; two are.
    let policy = dir.path().join("policy.toml");
    std::fs::write(
        &policy,
        r#"
version = 1
[[rules]]
name = "small"
when = { max_amount = "1000000000000000000" }
action = { kind = "allow" }
[[rules]]
name = "large"
action = { kind = "approvals", count = 2, roles = ["approver"] }
"#,
    )
    .unwrap();
    assert!(run(&["propose", "--dir", g, "policy", "--file", policy.to_str().unwrap()]).0);
    assert!(run(&["sign", "--dir", g, "--member", "ada", "--key", &key("ada")]).0);
    let (ok, out) = run(&["sign", "--dir", g, "--member", "bob", "--key", &key("ada")]);
    assert!(!ok && out.contains("not bob's"), "{out}");
    let (ok, out) = run(&["commit", "--dir", g]);
    assert!(!ok && out.contains("needs 2 distinct admins"), "{out}");
    assert!(run(&["sign", "--dir", g, "--member", "bob", "--key", &key("bob")]).0);
    assert!(run(&["commit", "--dir", g]).0);

    // A whitelist entry waits out its time-lock; a security officer freezes alone.
    let add = [
        "propose",
        "--dir",
        g,
        "whitelist-add",
        "--scope",
        "internal",
        "--chain",
        "eip155:1",
        "--address",
        "0xdbF03B407c01E7cD3CBea99509d93f8DDDC8C6FB",
        "--label",
        "cold-1",
    ];
    assert!(run(&add).0);
    assert!(run(&["sign", "--dir", g, "--member", "cy", "--key", &key("cy")]).0);
    assert!(run(&["sign", "--dir", g, "--member", "ada", "--key", &key("ada")]).0);
    assert!(run(&["commit", "--dir", g]).0);
    assert!(run(&["propose", "--dir", g, "freeze", "--scope", "asset:ETH"]).0);
    assert!(run(&["sign", "--dir", g, "--member", "sec", "--key", &key("sec")]).0);
    assert!(run(&["commit", "--dir", g]).0);
    // A token joins the asset registry by quorum, and waits out the time-lock too.
    let usdt = "eip155:1:USDT:6:0xdac17f958d2ee523a2206206994597c13d831ec7";
    assert!(run(&["propose", "--dir", g, "asset-add", usdt]).0);
    assert!(run(&["sign", "--dir", g, "--member", "ada", "--key", &key("ada")]).0);
    assert!(run(&["sign", "--dir", g, "--member", "cy", "--key", &key("cy")]).0);
    assert!(run(&["commit", "--dir", g]).0);
    let (ok, out) = run(&["show", "--dir", g]);
    assert!(ok, "{out}");
    assert!(out.contains("entries: 4") && out.contains("policy: version 1, 2 rules"), "{out}");
    assert!(out.contains("asset ETH on eip155:1 (native, 18 decimals): usable"), "{out}");
    assert!(
        out.contains("asset USDT on eip155:1 (0xdAC17F958D2ee523a2206206994597C13D831ec7, 6 decimals): usable from"),
        "{out}"
    );
    assert!(out.contains("cold-1): usable from"), "the time-lock has not ended: {out}");
    // For people: scopes and roles by name, times in RFC 3339 with how far off they are.
    assert!(out.contains("frozen: asset ETH"), "{out}");
    assert!(
        out.contains("member ada: admin") && out.contains("whitelist (internal on eip155:1)"),
        "{out}"
    );
    let from = out.lines().find(|l| l.contains("cold-1): usable from")).unwrap();
    assert!(from.contains("T") && from.contains("Z (in "), "{from}");
    assert!(!out.contains('{') && !out.contains("Some("), "no debug structures: {out}");

    // Someone edits the log file: lowers the quorum in the stored policy entry.
    let log = gov.join("log.jsonl");
    let text = std::fs::read_to_string(&log).unwrap();
    std::fs::write(&log, text.replacen("\"count\":2", "\"count\":1", 1)).unwrap();
    let (ok, out) = run(&["show", "--dir", g]);
    assert!(!ok && out.contains("does not verify"), "{out}");
}

/// Issue 5's end to end run, as a new user does it: admins make their keys and a 2-of-3
/// genesis, `strongroom dev --governance` pins it in the signer nodes, a policy with amount
/// tiers and a whitelist entry are proposed and signed through the API with the CLI. A small
/// withdrawal signs at once; a large one waits (the API says why) and no transaction is
/// built until two approvers sign it with `strongroom withdrawal approve`; then the signer
/// processes sign it and it settles. A security officer freezes alone, and a withdrawal
/// then waits for the freeze.
#[test]
fn dev_governed_withdrawals_wait_for_two_approvals_and_a_freeze() {
    let Some(chain) = start_anvil(&["--block-time", "1"]) else { return };
    let dir = tempfile::tempdir().unwrap();
    let gov = dir.path().join("gov");
    let data = dir.path().join("dev");
    let key = |id: &str| dir.path().join(format!("{id}.key")).to_str().unwrap().to_owned();
    let cli = cli_with;
    let pin = governance_genesis(dir.path(), &gov, "6");
    let g = gov.to_str().unwrap();

    let rpc_args = ["--eth-rpc", chain.url.as_str(), "--confirmations", "1", "--governance", g];
    let dev = start_dev_with(&data, &rpc_args, &[]);
    let envs = vec![
        ("STRONGROOM_ADDR", dev.url.clone()),
        ("STRONGROOM_CACERT", dev.ca.clone()),
        ("STRONGROOM_TOKEN_FILE", data.join("operator.token").to_str().unwrap().to_owned()),
    ];
    let run = |args: &[&str]| cli(args, &envs);
    let (ok, out) = run(&["governance", "install", "--dir", g]);
    assert!(ok, "installing the same genesis again is harmless: {out}");

    let policy = dir.path().join("policy.toml");
    std::fs::write(
        &policy,
        eth_tiers_policy(
            r#"[[velocity]]
name = "eth-daily"
asset = "ETH"
period_secs = 86400
max_amount = "600000000000000000"
[[fees]]
chain = "eip155:31337"
fee_asset = "ETH"
max_fee = "10000000000000000"
"#,
        ),
    )
    .unwrap();
    let sign = |who: &str| {
        run(&["governance", "sign", "--member", who, "--key", &key(who), "--pin", &pin, "--yes"])
    };
    let (ok, out) = run(&["governance", "propose", "policy", "--file", policy.to_str().unwrap()]);
    assert!(ok, "{out}");
    let (ok, out) = sign("ada");
    assert!(ok && out.contains("waiting (entry 1: needs 2 distinct admins, has 1)"), "{out}");
    let (ok, out) = sign("ann");
    assert!(ok && out.contains("has 1"), "an approver's signature is no admin's: {out}");
    let (ok, out) = sign("bob");
    assert!(ok && out.contains("committed"), "{out}");
    let cold = "0xdbF03B407c01E7cD3CBea99509d93f8DDDC8C6FB";
    let (ok, out) = run(&[
        "governance",
        "propose",
        "whitelist-add",
        "--scope",
        "internal",
        "--chain",
        "eip155:31337",
        "--address",
        cold,
        "--label",
        "cold-1",
    ]);
    assert!(ok, "{out}");
    assert!(sign("cy").0);
    assert!(sign("ada").1.contains("committed"));
    let (ok, out) = run(&["governance", "show", "--pin", &pin]);
    assert!(ok && out.contains("policy: version 1, 4 rules"), "{out}");
    assert!(out.contains("cold-1): usable from"), "in its time-lock: {out}");

    // A customer with 2 ETH on the ledger (the dev faucet's ETH is in the hot wallet). Under
    // governance a credit with no chain evidence needs the admin quorum's signatures.
    let c = api(&dev, "POST", "/v1/customers", Some(serde_json::json!({"external_id": "gus"})));
    let cid = c["id"].as_str().unwrap().to_owned();
    let credit = serde_json::json!({
        "customer_id": cid, "asset": "ETH", "amount": "2", "reference": "dev faucet"});
    let refused = api(&dev, "POST", "/v1/deposits", Some(credit.clone()));
    assert_eq!(refused["error"]["code"], "credit_not_governed", "{refused}");
    propose_ledger_credit(&envs, &cid, "2000000000000000000", "dev faucet");
    assert!(sign("ada").0);
    assert!(sign("bob").1.contains("committed"));
    let mut governed = credit;
    governed["adjustment"] = serde_json::json!(3);
    let d = api(&dev, "POST", "/v1/deposits", Some(governed));
    assert_eq!(d["reference"], "governance:3", "{d}");
    // A member pushes the log straight to the signer nodes (past the orchestrator, which
    // would otherwise be the only one to hand it to them); each verifies all of it.
    let d = data.to_str().unwrap();
    let (ok, out) = run(&["governance", "push", "--pin", &pin, "--data-dir", d]);
    assert!(ok && (1..=3).all(|n| out.contains(&format!("node {n}: 3 entries"))), "{out}");
    let (ok, out) = run(&["governance", "push", "--data-dir", d, "--node", "1@127.0.0.1:1"]);
    assert!(!ok && out.contains("ID@HOST:PORT#CERT_SHA256"), "{out}");
    let dest = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed";
    let withdraw = |amount: &str| {
        let w = api(
            &dev,
            "POST",
            "/v1/withdrawals",
            Some(serde_json::json!({
            "customer_id": cid, "asset": "ETH", "destination": dest, "amount": amount})),
        );
        w["id"].as_str().unwrap_or_else(|| panic!("{w}")).to_owned()
    };
    let wait_state = |id: &str, state: &str, secs: u64| {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let w = api(&dev, "GET", &format!("/v1/withdrawals/{id}"), None);
            if w["state"] == state {
                return w;
            }
            assert!(Instant::now() < deadline, "not {state}: {w}");
            std::thread::sleep(Duration::from_millis(250));
        }
    };

    // Small: the policy allows it, the signer nodes sign it.
    let small = withdraw("0.05");
    wait_state(&small, "settled", 120);

    // The nodes decide with the fee the built transaction can pay, which the online side
    // cannot know before it builds. Under a policy whose fee ceiling is 1 wei the engine
    // builds a withdrawal, every node refuses it, and the API shows the refusing node's
    // typed reason; a policy with a sane ceiling lets the same transaction through.
    let text = std::fs::read_to_string(&policy).unwrap();
    let set_policy = |version: u64, max_fee: &str| {
        let t = text
            .replace("version = 1", &format!("version = {version}"))
            .replace("max_fee = \"10000000000000000\"", &format!("max_fee = \"{max_fee}\""));
        std::fs::write(&policy, t).unwrap();
        let (ok, out) =
            run(&["governance", "propose", "policy", "--file", policy.to_str().unwrap()]);
        assert!(ok, "{out}");
        assert!(sign("ada").0);
        assert!(sign("bob").1.contains("committed"));
    };
    set_policy(2, "1");
    let capped = withdraw("0.01");
    let deadline = Instant::now() + Duration::from_secs(60);
    let w = loop {
        let w = api(&dev, "GET", &format!("/v1/withdrawals/{capped}"), None);
        if !w["signer_refusal"].is_null() {
            break w;
        }
        assert!(Instant::now() < deadline, "no signer refusal: {w}");
        std::thread::sleep(Duration::from_millis(250));
    };
    assert_eq!(w["state"], "built", "{w}");
    let why = &w["signer_refusal"]["reason"];
    assert_eq!(
        (why["code"].as_str(), why["block"]["kind"].as_str()),
        (Some("blocked"), Some("fee_above_ceiling")),
        "{w}"
    );
    set_policy(3, "10000000000000000");
    let done = wait_state(&capped, "settled", 120);
    assert!(done.get("signer_refusal").is_none(), "{done}");

    // Large: it waits, says why, and nothing is built (no nonce spent).
    let large = withdraw("0.5");
    std::thread::sleep(Duration::from_secs(3));
    let w = wait_state(&large, "reserved", 1);
    assert_eq!(w["policy"]["explanation"], "policy v3 rule large-eth: 0 of 2 approvals", "{w}");
    assert!(w.get("transaction").is_none(), "{w}");
    let approve = |who: &str| {
        run(&["withdrawal", "approve", &large, "--member", who, "--key", &key(who), "--yes"])
    };
    let (ok, out) = approve("ann");
    assert!(ok && out.contains("1 of 2 approvals"), "{out}");
    let (ok, out) = approve("ann");
    assert!(ok && out.contains("1 of 2 approvals"), "one approval per person: {out}");
    let (ok, out) = approve("al");
    assert!(ok, "{out}");
    let done = wait_state(&large, "settled", 120);
    let txid = done["transaction"]["txid"].as_str().unwrap();
    let tx = rpc(&chain.url, "eth_getTransactionByHash", serde_json::json!([txid]));
    assert_eq!(tx["value"], "0x6f05b59d3b20000", "0.5 ETH");

    // 0.56 ETH left today; the daily limit is 0.6: a 0.08 ETH withdrawal, small enough for
    // no approvals, waits for the velocity limit (and takes no nonce).
    let over = withdraw("0.08");
    std::thread::sleep(Duration::from_secs(3));
    let w = wait_state(&over, "reserved", 1);
    let why = w["policy"]["explanation"].as_str().unwrap_or_default();
    assert!(why.contains("velocity limit eth-daily"), "{w}");
    assert!(w.get("transaction").is_none(), "{w}");
    let cancelled = api(&dev, "POST", &format!("/v1/withdrawals/{over}/cancel"), None);
    assert_eq!(cancelled["state"], "cancelled", "{cancelled}");

    // The signer nodes pin the genesis and keep their own verified copy of the log, which
    // reached them with the signing requests.
    for n in 1..=3 {
        let config =
            std::fs::read_to_string(data.join(format!("signers/signer-{n}/signer.toml"))).unwrap();
        assert!(config.contains(&format!("governance_pin = \"{pin}\"")), "{config}");
    }
    let copies = (1..=3)
        .filter_map(|n| {
            std::fs::read_to_string(data.join(format!("signers/signer-{n}/data/governance.jsonl")))
                .ok()
        })
        .filter(|log| log.lines().count() == 5)
        .count();
    assert!(copies >= 2, "the signing nodes hold the log (policies 1 to 3, whitelist, credit)");

    // One security officer freezes ETH at once; the next withdrawal waits for the freeze.
    let (ok, out) = run(&["governance", "propose", "freeze", "--scope", "asset:ETH"]);
    assert!(ok, "{out}");
    assert!(sign("sec").1.contains("committed"));
    let frozen = withdraw("0.01");
    std::thread::sleep(Duration::from_secs(3));
    let w = wait_state(&frozen, "reserved", 1);
    assert!(
        w["policy"]["explanation"].as_str().unwrap().contains("frozen by governance (asset ETH)"),
        "{w}"
    );

    // A compromised orchestrator asking the nodes straight for a signature on anything but a
    // transaction (here a proof of control, which the policy does not list) is refused by
    // the nodes, and each says why in its own audit log.
    let (ok, out) = cli(
        &[
            "mpc",
            "prove",
            "--data-dir",
            data.to_str().unwrap(),
            "--key",
            "hot-eth-1",
            "--challenge",
            &"11".repeat(32),
        ],
        &[],
    );
    assert!(!ok && out.contains("does not let the signers sign proof_of_control"), "{out}");
    let refusals = (1..=3)
        .filter_map(|n| {
            std::fs::read_to_string(data.join(format!("signers/signer-{n}/data/audit.jsonl"))).ok()
        })
        .filter(|log| log.contains("sign.refused") && log.contains("message_not_allowed"))
        .count();
    assert!(refusals >= 1, "the refusal is in a node's audit log");

    // The time-lock has run out by now.
    let (ok, out) = run(&["governance", "show", "--pin", &pin]);
    assert!(ok && out.contains("cold-1): usable") && !out.contains("usable from"), "{out}");
    assert_audit_intact(&data);
    drop(dev);
}

/// Issue "Signers decide (2)", point 4, end to end: the exchange's backend signs each
/// withdrawal request with its API client key (the dev genesis's `exchange`, an operator), the
/// server keeps the signature beside the withdrawal and the engine hands it to the signer
/// processes. Under a policy that requires it, a request signed once is one withdrawal, a
/// withdrawal edited in the database after the exchange signed it is refused by the nodes
/// (and `audit verify` sees the edit), and a withdrawal nobody signed is refused.
#[test]
fn dev_withdrawals_signed_by_the_exchange_reach_the_nodes_and_edits_are_refused() {
    let Some(chain) = start_anvil(&["--block-time", "1"]) else { return };
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("dev");
    let dev =
        start_dev_with(&data, &["--eth-rpc", chain.url.as_str(), "--confirmations", "1"], &[]);
    let keys = data.join("governance/keys");
    let key = |id: &str| keys.join(format!("{id}.key")).to_str().unwrap().to_owned();
    let pin =
        std::fs::read_to_string(data.join("governance/genesis.pin")).unwrap().trim().to_owned();
    let envs = [
        ("STRONGROOM_ADDR", dev.url.clone()),
        ("STRONGROOM_CACERT", dev.ca.clone()),
        ("STRONGROOM_TOKEN_FILE", data.join("operator.token").to_str().unwrap().to_owned()),
    ];
    let run = |args: &[&str]| cli_with(args, &envs);
    let sign = |who: &str| {
        run(&["governance", "sign", "--member", who, "--key", &key(who), "--pin", &pin, "--yes"])
    };
    let commit = |args: &[&str], by: &[&str]| {
        let (ok, out) = run(args);
        assert!(ok, "{out}");
        let mut last = String::new();
        for who in by {
            let (ok, out) = sign(who);
            assert!(ok, "{out}");
            last = out;
        }
        assert!(last.contains("committed"), "{last}");
    };
    // Policy 2: anything goes, but only with the initiator's signature.
    let policy = dir.path().join("policy.toml");
    std::fs::write(
        &policy,
        r#"
version = 2
require_initiation = true
[[rules]]
name = "all"
action = { kind = "allow" }
[[fees]]
chain = "eip155:31337"
fee_asset = "ETH"
max_fee = "100000000000000000"
"#,
    )
    .unwrap();
    commit(
        &["governance", "propose", "policy", "--file", policy.to_str().unwrap()],
        &["ada", "bob"],
    );

    let c = api(&dev, "POST", "/v1/customers", Some(serde_json::json!({"external_id": "ivy"})));
    let cid = c["id"].as_str().unwrap().to_owned();
    let credit = serde_json::json!({
        "customer_id": cid, "asset": "ETH", "amount": "1", "reference": "dev faucet"});
    api(&dev, "POST", "/v1/deposits", Some(credit));
    let dest = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed";
    let get = |id: &str| api(&dev, "GET", &format!("/v1/withdrawals/{id}"), None);
    let wait = |id: &str, done: &dyn Fn(&serde_json::Value) -> bool, secs: u64| {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let w = get(id);
            if done(&w) {
                return w;
            }
            assert!(Instant::now() < deadline, "{w}");
            std::thread::sleep(Duration::from_millis(250));
        }
    };
    let exchange_key = key("exchange");
    let initiate = |amount: &str, extra: &[&str]| {
        let mut args = vec![
            "withdrawal",
            "initiate",
            "--customer",
            &cid,
            "--asset",
            "ETH",
            "--destination",
            dest,
            "--amount",
            amount,
            "--member",
            "exchange",
            "--key",
            &exchange_key,
        ];
        args.extend(["--pin", &pin]);
        args.extend(extra);
        run(&args)
    };

    // The exchange's backend asks; the nodes check its signature against the intent.
    let (ok, out) = initiate("0.05", &[]);
    assert!(ok, "{out}");
    let w: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    let id = w["id"].as_str().unwrap().to_owned();
    wait(&id, &|w| w["state"] == "settled", 120);

    // A security officer freezes ETH; the next signed request waits for the freeze.
    commit(&["governance", "propose", "freeze", "--scope", "asset:ETH"], &["sec"]);
    let (ok, printed) = initiate("0.02", &["--print"]);
    assert!(ok, "{printed}");
    let initiation: serde_json::Value = serde_json::from_str(&printed).unwrap();
    let body = serde_json::json!({
        "customer_id": cid, "asset": "ETH", "destination": dest, "amount": "0.02",
        "initiation": initiation});
    let held = api(&dev, "POST", "/v1/withdrawals", Some(body.clone()));
    let held_id = held["id"].as_str().unwrap().to_owned();
    assert_eq!(held_id, initiation["requested"]["request_id"], "the request id names it");
    // The same signed request again (another idempotency key): one request, one withdrawal.
    let again = api(&dev, "POST", "/v1/withdrawals", Some(body.clone()));
    assert_eq!(again["error"]["code"], "initiation_reused", "{again}");
    // The request signed for 0.02 sent with another amount: refused before anything moves.
    let mut more = body;
    more["amount"] = "0.03".into();
    let refused = api(&dev, "POST", "/v1/withdrawals", Some(more));
    assert_eq!(refused["error"]["code"], "initiation_refused", "{refused}");

    // Someone with the database edits the held withdrawal to pay them instead, keeping the
    // row consistent (intent, its hash, the copied columns).
    let w = get(&held_id);
    let mut intent =
        strongroom_core::Intent::decode(&hex::decode(w["intent"].as_str().unwrap()).unwrap())
            .unwrap();
    let thief = "0x90F79bf6EB2c4f870365E785982E1f101E93b906";
    intent.destination = strongroom_units::Address::parse(&intent.chain, thief).unwrap();
    let hash = intent.hash().unwrap().to_hex();
    let json = serde_json::to_string(&intent).unwrap();
    let edit = Command::new("python3")
        .args([
            "-c",
            "import sqlite3,sys; c=sqlite3.connect(sys.argv[1], timeout=30); \
             c.execute('update withdrawals set intent=?, intent_hash=?, destination=? where id=?', \
             (sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5])); c.commit()",
            data.join("strongroom.db").to_str().unwrap(),
            &json,
            &hash,
            intent.destination.as_str(),
            &held_id,
        ])
        .status()
        .unwrap();
    assert!(edit.success());
    // The freeze is lifted; the engine builds the edited withdrawal, and every node refuses:
    // the intent is not what the exchange signed.
    commit(&["governance", "propose", "unfreeze", "--scope", "asset:ETH"], &["ada", "bob"]);
    let w = wait(&held_id, &|w| !w["signer_refusal"].is_null(), 120);
    let why = &w["signer_refusal"]["reason"];
    assert_eq!(why["code"], "initiation", "{w}");
    assert_eq!(
        (why["error"]["problem"].as_str(), why["error"]["field"].as_str()),
        (Some("mismatch"), Some("destination")),
        "{w}"
    );
    assert_ne!(w["state"], "settled");

    // A withdrawal nobody signed (the API's own word only): the policy requires the
    // initiator's signature, and the nodes say so.
    let unsigned = api(
        &dev,
        "POST",
        "/v1/withdrawals",
        Some(
            serde_json::json!({"customer_id": cid, "asset": "ETH", "destination": dest, "amount": "0.01"}),
        ),
    );
    let unsigned = unsigned["id"].as_str().unwrap().to_owned();
    let w = wait(&unsigned, &|w| !w["signer_refusal"].is_null(), 120);
    assert_eq!(
        (
            w["signer_refusal"]["reason"]["code"].as_str(),
            w["signer_refusal"]["reason"]["block"]["kind"].as_str()
        ),
        (Some("blocked"), Some("unattested")),
        "{w}"
    );

    // The edit itself shows in `audit verify`.
    let out = Command::new(BIN)
        .args(["audit", "verify", "--data-dir", data.to_str().unwrap()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success() && text.contains(&held_id), "{text}");
    drop(dev);
}

/// `strongroom risk eval` on a labelled CSV: the AUCs, and a clear message for a column that
/// is not numeric.
#[test]
fn risk_eval_reports_auc_and_names_a_bad_column() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("events.csv");
    let mut text = String::from("id,amount_ratio,new_device,label\n");
    for i in 0..400u32 {
        let bad = i % 10 == 0;
        let ratio = if bad { 8.0 + f64::from(i % 7) } else { 1.0 + f64::from(i % 5) / 10.0 };
        text.push_str(&format!("u{i},{ratio},{},{}\n", u8::from(bad), u8::from(bad)));
    }
    std::fs::write(&file, &text).unwrap();
    let run = |extra: &[&str]| {
        let out = Command::new(BIN)
            .args(["risk", "eval", file.to_str().unwrap(), "--label-column", "label"])
            .args(extra)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr),
        )
    };
    let (ok, out) = run(&[]);
    assert!(!ok && out.contains("row 2, column \"id\": \"u0\" is not a number"), "{out}");
    let (ok, out) = run(&["--skip-column", "id", "--limit", "300"]);
    assert!(ok, "{out}");
    assert!(out.contains("300 rows (30 positive), 2 features: amount_ratio, new_device"), "{out}");
    let auc: f64 = out.lines().find_map(|l| l.strip_prefix("ROC AUC ")).unwrap().parse().unwrap();
    assert!(auc > 0.9, "an easy stream: {out}");

    // A folder of data sets: one table for all, each model's rows per second, the best per
    // data set. The second has missing cells (bad rows miss the amount), taken as missing.
    let mut gaps = String::from("amount,hour,bad\n");
    for i in 0..300u32 {
        let bad = i % 6 == 0;
        let amount = if bad { String::new() } else { format!("{}", 10u64.pow(i % 9)) };
        gaps.push_str(&format!("{amount},{},{}\n", i % 24, u8::from(bad)));
    }
    std::fs::write(dir.path().join("gaps.csv"), gaps).unwrap();
    std::fs::write(
        dir.path().join("datasets.toml"),
        "[[dataset]]\nname = \"events\"\nfile = \"events.csv\"\nlabel = \"label\"\nskip = [\"id\"]\n\n[[dataset]]\nname = \"gaps\"\nfile = \"gaps.csv\"\nlabel = \"bad\"\nmissing_as_missing = true\n",
    )
    .unwrap();
    let out =
        Command::new(BIN).args(["risk", "eval", dir.path().to_str().unwrap()]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("gaps: 300 rows (50 positive), 2 features: amount, hour"), "{text}");
    let row = |set: &str, model: &str| -> Vec<f64> {
        let line = text
            .lines()
            .find(|l| l.starts_with(set) && l.contains(model))
            .unwrap_or_else(|| panic!("no {set} {model} in {text}"));
        let words: Vec<&str> = line.split_whitespace().collect();
        words[words.len() - 4..].iter().map(|w| w.parse().unwrap()).collect()
    };
    let forest = row("gaps", "prepared: online forest");
    assert!(forest.iter().all(|v| *v > 0.0) && forest[0] > 0.9, "AUCs, rows/s, bytes: {text}");
    assert!(text.contains("best on events:") && text.contains("best on gaps: prepared"), "{text}");
}

/// A real SMTP server (Python's aiosmtpd, Debian's python3-aiosmtpd) writing what it
/// receives to a maildir; None when it is not installed (an error under
/// STRONGROOM_REQUIRE_SMTP=1, as in CI).
struct SmtpServer {
    child: Child,
    addr: String,
    maildir: std::path::PathBuf,
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl SmtpServer {
    fn start(maildir: &std::path::Path) -> Option<SmtpServer> {
        let python = "/usr/bin/python3";
        let ok = Command::new(python)
            .args(["-c", "import aiosmtpd"])
            .output()
            .is_ok_and(|o| o.status.success());
        if !ok {
            assert!(
                std::env::var_os("STRONGROOM_REQUIRE_SMTP").is_none(),
                "STRONGROOM_REQUIRE_SMTP is set but aiosmtpd is not installed"
            );
            println!("SKIPPED e-mail: no aiosmtpd (apt-get install python3-aiosmtpd)");
            return None;
        }
        let port = free_port();
        let addr = format!("127.0.0.1:{port}");
        let mailbox = maildir.to_str().unwrap();
        let child = Command::new(python)
            .args(["-m", "aiosmtpd", "-n", "-l", &addr, "-c", "aiosmtpd.handlers.Mailbox", mailbox])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(&addr).is_err() {
            assert!(Instant::now() < deadline, "aiosmtpd did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        Some(SmtpServer { child, addr, maildir: maildir.to_path_buf() })
    }

    /// The messages received, quoted-printable bodies decoded (lettre encodes a body so when
    /// a line of it is 76 characters or longer).
    fn messages(&self) -> Vec<String> {
        std::fs::read_dir(self.maildir.join("new"))
            .map(|d| {
                d.filter_map(|e| std::fs::read_to_string(e.ok()?.path()).ok())
                    .map(|m| unquote_body(&m))
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// A message with its quoted-printable body (RFC 2045 §6.7) decoded; others as they are.
fn unquote_body(message: &str) -> String {
    let Some((head, body)) = message.split_once("\n\n") else { return message.to_owned() };
    if !head.lines().any(|l| l.eq_ignore_ascii_case("Content-Transfer-Encoding: quoted-printable"))
    {
        return message.to_owned();
    }
    let (b, mut out, mut i) = (body.as_bytes(), Vec::new(), 0);
    while i < b.len() {
        let rest = &b[i..];
        if rest.starts_with(b"=\r\n") {
            i += 3;
        } else if rest.starts_with(b"=\n") {
            i += 2;
        } else if let Some(byte) = rest
            .get(1..3)
            .filter(|_| rest[0] == b'=')
            .and_then(|h| u8::from_str_radix(std::str::from_utf8(h).ok()?, 16).ok())
        {
            out.push(byte);
            i += 3;
        } else {
            out.push(rest[0]);
            i += 1;
        }
    }
    format!("{head}\n\n{}", String::from_utf8_lossy(&out))
}

/// A NATS server with JetStream for a test (Debian's nats-server), or None when it is not
/// installed (an error under STRONGROOM_REQUIRE_NATS=1, as in CI).
struct Nats {
    child: Child,
    url: String,
}

impl Drop for Nats {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_nats(store_dir: &std::path::Path) -> Option<Nats> {
    let bin = ["/usr/sbin/nats-server", "/usr/bin/nats-server"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists());
    let Some(bin) = bin else {
        assert!(
            std::env::var_os("STRONGROOM_REQUIRE_NATS").is_none(),
            "STRONGROOM_REQUIRE_NATS is set but nats-server is not installed"
        );
        println!("SKIPPED NATS: no nats-server (apt-get install nats-server)");
        return None;
    };
    let port = free_port();
    let child = Command::new(bin)
        .args([
            "-a",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-js",
            "-sd",
            store_dir.to_str().unwrap(),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "nats-server did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    Some(Nats { child, url: format!("nats://127.0.0.1:{port}") })
}

/// Publish JSON on a JetStream subject and wait for the stream's acknowledgement.
fn nats_publish(url: &str, subject: &str, body: serde_json::Value) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let client = async_nats::connect(url).await.unwrap();
        let js = async_nats::jetstream::new(client);
        let deadline = Instant::now() + Duration::from_secs(30);
        // The stream exists once the dev stack's ingestion has started.
        loop {
            if let Ok(ack) = js.publish(subject.to_owned(), body.to_string().into()).await {
                if ack.await.is_ok() {
                    return;
                }
            }
            assert!(Instant::now() < deadline, "JetStream never acknowledged {subject}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
}

/// A webhook receiver for tests: every request's signature header and body.
struct Hook {
    url: String,
    got: std::sync::Arc<std::sync::Mutex<Vec<(String, String)>>>,
}

fn webhook() -> Hook {
    use std::io::{Read, Write as _};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/alerts", listener.local_addr().unwrap());
    let got = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = got.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { continue };
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            // Headers, then Content-Length bytes of body.
            let (head, body) = loop {
                let n = s.read(&mut chunk).unwrap_or(0);
                if n == 0 {
                    break (String::new(), String::new());
                }
                buf.extend_from_slice(&chunk[..n]);
                let text = String::from_utf8_lossy(&buf).into_owned();
                if let Some(end) = text.find("\r\n\r\n") {
                    let head = text[..end].to_lowercase();
                    let len: usize = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .map_or(0, |v| v.trim().parse().unwrap());
                    if buf.len() >= end + 4 + len {
                        break (
                            head,
                            String::from_utf8_lossy(&buf[end + 4..end + 4 + len]).into_owned(),
                        );
                    }
                }
            };
            let sig = head
                .lines()
                .find_map(|l| l.strip_prefix("x-strongroom-signature:"))
                .unwrap_or_default()
                .trim()
                .to_owned();
            sink.lock().unwrap().push((sig, body));
            let _ =
                s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
        }
    });
    Hook { url, got }
}

/// Issue 6's run: the dev stack with a sanctions list and the security team's webhook. A
/// withdrawal to an OFAC-listed address is refused and alerted; after a few usual
/// withdrawals, one of 20 times the usual amount to a new address from a new device is
/// paused, sits in the review queue with its reasons, and is signed and sent only after an
/// analyst releases it; a rejected one is cancelled and its funds return.
#[test]
fn dev_risk_blocks_listed_addresses_and_pauses_unusual_withdrawals_for_review() {
    use hmac::{Hmac, Mac};
    let Some(chain) = start_anvil(&["--block-time", "1"]) else { return };
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("dev");
    let lists = dir.path().join("lists");
    std::fs::create_dir_all(&lists).unwrap();
    let listed = "0x8589427373D6D84E98730D7795D8f6f8731FDA16";
    std::fs::write(lists.join("sanctioned_addresses_ETH.txt"), format!("{listed}\n")).unwrap();
    let secret = dir.path().join("webhook.secret");
    std::fs::write(&secret, "s3cret-for-tests").unwrap();
    let hook = webhook();
    let smtp = SmtpServer::start(&dir.path().join("maildir"));
    let mut args = vec![
        "--eth-rpc",
        chain.url.as_str(),
        "--confirmations",
        "1",
        "--risk-lists",
        lists.to_str().unwrap(),
        "--risk-webhook",
        hook.url.as_str(),
        "--risk-webhook-secret",
        secret.to_str().unwrap(),
    ];
    if let Some(s) = &smtp {
        args.extend([
            "--alert-smtp",
            s.addr.as_str(),
            "--alert-email-to",
            "security@exchange.example",
        ]);
    }
    let nats = start_nats(&dir.path().join("nats"));
    if let Some(n) = &nats {
        args.extend(["--nats", n.url.as_str()]);
    }
    let dev = start_dev_with(&data, &args, &[]);
    let c = api(&dev, "POST", "/v1/customers", Some(serde_json::json!({"external_id": "rita"})));
    let cid = c["id"].as_str().unwrap().to_owned();
    // The customer's alert e-mail and anti-phishing code (sealed at rest).
    let contact = api(
        &dev,
        "POST",
        &format!("/v1/customers/{cid}/contact"),
        Some(
            serde_json::json!({"email": "rita@customer.example", "anti_phishing_code": "blue-heron-42"}),
        ),
    );
    assert_eq!(contact["email"], "r***@customer.example", "{contact}");
    api(
        &dev,
        "POST",
        "/v1/deposits",
        Some(serde_json::json!({
        "customer_id": cid, "asset": "ETH", "amount": "10", "reference": "0xfeed:2"})),
    );
    let withdraw = |amount: &str, to: &str, device: &str| {
        api(
            &dev,
            "POST",
            "/v1/withdrawals",
            Some(serde_json::json!({
            "customer_id": cid, "asset": "ETH", "destination": to, "amount": amount,
            "device_id": device, "ip": "203.0.113.7"})),
        )
    };
    let wait = |id: &str, what: &dyn Fn(&serde_json::Value) -> bool, secs: u64| {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let w = api(&dev, "GET", &format!("/v1/withdrawals/{id}"), None);
            if what(&w) {
                return w;
            }
            assert!(Instant::now() < deadline, "{w}");
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    let alerts = |kind: &str| {
        hook.got
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, b)| b.contains(&format!("\"kind\":\"{kind}\"")))
            .cloned()
            .collect::<Vec<_>>()
    };

    // A listed address (written in lower case): refused, nothing reserved, alerted.
    let refused = withdraw("0.1", &listed.to_lowercase(), "phone-1");
    assert_eq!(refused["error"]["code"], "destination_listed", "{refused}");
    assert!(refused["error"]["message"]
        .as_str()
        .unwrap()
        .contains("sanctions list sanctioned_addresses_ETH.txt"));
    let b = api(&dev, "GET", &format!("/v1/customers/{cid}/balances"), None).to_string();
    assert!(b.contains("\"pending\":\"0\""), "{b}");

    // Scoring without storing: the listed address would be blocked, with its reason.
    let scored = api(
        &dev,
        "POST",
        "/v1/risk/score",
        Some(
            serde_json::json!({"customer_id": cid, "asset": "ETH", "amount": "0.1", "destination": listed}),
        ),
    );
    assert_eq!(scored["decision"], "block", "{scored}");
    assert_eq!(scored["reasons"][0]["source"], "list:sanctions", "{scored}");

    // Usual withdrawals: cleared and sent.
    let usual = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed";
    for _ in 0..3 {
        let w = withdraw("0.1", usual, "phone-1");
        let id = w["id"].as_str().unwrap().to_owned();
        let w = wait(&id, &|w| w["risk"]["state"].is_string(), 30);
        assert_eq!(w["risk"]["state"], "cleared", "{w}");
    }

    // A security change reported through NATS JetStream (as the exchange's backend would)
    // reaches the engine: the next withdrawal counts it.
    if let Some(n) = &nats {
        let body = serde_json::json!({"customer_id": cid, "kind": "security_change"});
        nats_publish(&n.url, "strongroom.risk.events.security_change", body);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let events = api(&dev, "GET", &format!("/v1/risk/events?customer_id={cid}"), None);
            if events.to_string().contains("security_change") {
                break;
            }
            assert!(Instant::now() < deadline, "{events}");
            std::thread::sleep(Duration::from_millis(200));
        }
        std::thread::sleep(Duration::from_millis(700)); // one worker pass
    }

    // 20 times the usual, to a new address, from a new device: paused with its reasons.
    let odd = withdraw("2", "0xdbF03B407c01E7cD3CBea99509d93f8DDDC8C6FB", "laptop-9");
    let id = odd["id"].as_str().unwrap().to_owned();
    let w = wait(&id, &|w| w["risk"]["state"].is_string(), 30);
    assert_eq!(
        (w["risk"]["state"].as_str(), w["risk"]["decision"].as_str()),
        (Some("open"), Some("review")),
        "{w}"
    );
    let reasons = w["risk"]["assessment"]["reasons"].to_string();
    assert!(
        reasons.contains("rule:unusual-amount-to-a-new-address-from-a-new-device"),
        "{reasons}"
    );
    assert!(reasons.contains("amount_vs_median = 20.00"), "{reasons}");
    if nats.is_some() {
        assert!(reasons.contains("rule:soon-after-a-security-change"), "{reasons}");
    }
    let queue = api(&dev, "GET", "/v1/risk/reviews?state=open", None);
    assert!(
        queue["data"].as_array().unwrap().iter().any(|r| r["withdrawal_id"] == id.as_str()),
        "{queue}"
    );
    std::thread::sleep(Duration::from_secs(2));
    let w = wait(&id, &|_| true, 1);
    assert_eq!(w["state"], "reserved", "paused: nothing built while in review: {w}");
    assert!(w.get("transaction").is_none(), "{w}");

    // An analyst takes it, notes, releases: it is signed, sent and settled.
    let path = format!("/v1/risk/reviews/{id}");
    api(
        &dev,
        "POST",
        &format!("{path}/assign"),
        Some(serde_json::json!({"assignee": "analyst-1"})),
    );
    api(
        &dev,
        "POST",
        &format!("{path}/notes"),
        Some(serde_json::json!({"text": "called the customer"})),
    );
    let r = api(
        &dev,
        "POST",
        &format!("{path}/release"),
        Some(serde_json::json!({"text": "confirmed by phone"})),
    );
    assert_eq!(
        (r["state"].as_str(), r["assignee"].as_str()),
        (Some("released"), Some("analyst-1")),
        "{r}"
    );
    assert_eq!(r["notes"].as_array().unwrap().len(), 2);
    let done = wait(&id, &|w| w["state"] == "settled", 120);
    let txid = done["transaction"]["txid"].as_str().unwrap();
    let tx = rpc(&chain.url, "eth_getTransactionByHash", serde_json::json!([txid]));
    assert_eq!(tx["value"], "0x1bc16d674ec80000", "2 ETH");
    let again = api(&dev, "POST", &format!("{path}/release"), Some(serde_json::json!({})));
    assert_eq!(again["error"]["code"], "invalid_transition", "{again}");

    // Another odd one, rejected: cancelled, its 3 ETH back to available.
    let before = api(&dev, "GET", &format!("/v1/customers/{cid}/balances"), None);
    let odd = withdraw("3", "0x1111111111111111111111111111111111111111", "laptop-10");
    let id2 = odd["id"].as_str().unwrap().to_owned();
    wait(&id2, &|w| w["risk"]["state"] == "open", 30);
    let r = api(
        &dev,
        "POST",
        &format!("/v1/risk/reviews/{id2}/reject"),
        Some(serde_json::json!({"text": "account takeover"})),
    );
    assert_eq!(r["state"], "rejected", "{r}");
    wait(&id2, &|w| w["state"] == "cancelled", 30);
    let after = api(&dev, "GET", &format!("/v1/customers/{cid}/balances"), None);
    assert_eq!(before["data"][0]["available"], after["data"][0]["available"], "{before} {after}");

    // The security team got signed alerts for the block and both pauses.
    let deadline = Instant::now() + Duration::from_secs(10);
    while alerts("withdrawal_paused").len() < 2 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(alerts("withdrawal_blocked").len(), 1);
    assert_eq!(alerts("withdrawal_paused").len(), 2);
    for (sig, body) in hook.got.lock().unwrap().iter() {
        let (t, v1) = sig.split_once(",v1=").unwrap();
        let t = t.strip_prefix("t=").unwrap();
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(b"s3cret-for-tests").unwrap();
        mac.update(format!("{t}.{body}").as_bytes());
        assert_eq!(hex::encode(mac.finalize().into_bytes()), v1, "{body}");
    }
    // And the same alerts by e-mail, through a real SMTP server.
    if let Some(s) = &smtp {
        let deadline = Instant::now() + Duration::from_secs(15);
        while s.messages().len() < 6 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        let all = s.messages();
        assert_eq!(all.len(), 6, "three to the security team, three to the customer: {all:?}");
        // The customer's: the refusal and both holds, each with their anti-phishing code.
        let (mine, mail): (Vec<String>, Vec<String>) =
            all.into_iter().partition(|m| m.contains("To: rita@customer.example"));
        assert_eq!(mine.len(), 3, "{mine:?}");
        assert!(
            mine.iter().all(|m| m.contains("Your anti-phishing code: blue-heron-42")),
            "{mine:?}"
        );
        assert_eq!(mine.iter().filter(|m| m.contains("on hold for a security review")).count(), 2);
        assert_eq!(
            mine.iter().filter(|m| m.contains("Subject: Your withdrawal was refused")).count(),
            1
        );
        assert!(mail.iter().all(|m| m.contains("To: security@exchange.example")), "{mail:?}");
        let paused = mail.iter().filter(|m| m.contains("Subject: [Strongroom] withdrawal paused"));
        assert_eq!(paused.count(), 2, "{mail:?}");
        let blocked: Vec<&String> = mail
            .iter()
            .filter(|m| m.contains("Subject: [Strongroom] withdrawal blocked"))
            .collect();
        assert_eq!(blocked.len(), 1);
        assert!(blocked[0].contains("sanctioned_addresses_ETH.txt"), "{}", blocked[0]);
    }
    // The database holds the contact sealed: neither the address nor the code is in it.
    for file in ["strongroom.db", "strongroom.db-wal"] {
        if let Ok(bytes) = std::fs::read(data.join(file)) {
            let text = String::from_utf8_lossy(&bytes);
            assert!(
                !text.contains("rita@customer.example") && !text.contains("blue-heron-42"),
                "{file}"
            );
        }
    }
    // A stricter candidate rule set, backtested on what is stored before publishing it:
    // every first payment to an address waits, so it would also have paused the first of the
    // three usual withdrawals.
    let stricter = dir.path().join("stricter.toml");
    std::fs::write(
        &stricter,
        "version = 2\nreview_at = 50\nblock_at = 100\n[[rules]]\nname = \"new-destination\"\nall = [{ feature = \"new_destination\", at_least = 1.0 }]\naction = \"review\"\nscore = 50\n[[rules]]\nname = \"any-new-ip\"\nall = [{ feature = \"new_ip\", at_least = 1.0 }]\nscore = 1\nshadow = true\n",
    )
    .unwrap();
    let out = Command::new(BIN)
        .args([
            "risk",
            "backtest",
            "--data-dir",
            data.to_str().unwrap(),
            "--rules",
            stricter.to_str().unwrap(),
        ])
        .args(["--lists", lists.to_str().unwrap()])
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("backtest over 5 stored withdrawals (2 with an analyst's decision)"),
        "{text}"
    );
    assert!(text.contains("analysts rejected 1: current flags 1, candidate flags 1"), "{text}");
    assert!(text.contains("shadow rule:any-new-ip: would have fired 1 times"), "{text}");
    let line = |name: &str| {
        text.lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_default()
            .split_whitespace()
            .skip(2)
            .collect::<Vec<_>>()
            .join(" ")
    };
    assert_eq!(line("current v1"), "3 2 0", "{text}");
    assert_eq!(line("candidate v2"), "2 3 0", "{text}");
    assert!(text.contains("changed decisions: 1"), "{text}");
    // The model registry from the command line: the analysts' two decisions train a
    // candidate; promoting it before it ran in shadow is refused, and says why.
    let models = |args: &[&str]| {
        let out = Command::new(BIN)
            .args(["risk", "models"])
            .args(args)
            .args(["--data-dir", data.to_str().unwrap()])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        (out.status.success(), text)
    };
    let (ok, text) = models(&["list"]);
    assert!(ok && text.contains("the built-in model (version 0) is live"), "{text}");
    let (ok, text) = models(&["train", "--by", "ann"]);
    assert!(ok && text.contains("version   1  candidate"), "{text}");
    assert!(text.contains("\"labels\":2"), "{text}");
    let (ok, text) = models(&["promote", "1", "--by", "ann"]);
    assert!(!ok && text.contains("version 1 is not the shadow model"), "{text}");
    let (ok, text) = models(&["shadow", "1", "--by", "ann"]);
    assert!(ok && text.contains("version   1  shadow"), "{text}");
    let (ok, text) = models(&["compare"]);
    assert!(ok && text.contains("shadow version 1: 0 labelled decisions"), "{text}");
    assert_audit_intact(&data);
}

#[path = "../../server/tests/support/authenticator.rs"]
mod authenticator;

/// A passkey from a software authenticator with a real P-256 key, registered for the signed-in
/// account.
fn add_passkey(dev: &Dev, token: &str, origin: &str) -> authenticator::SoftAuthenticator {
    let mut key = authenticator::SoftAuthenticator::new(origin);
    let (_, opts) = call(dev, "POST", "/v1/me/passkeys/options", Some(token), None);
    let cred = key.create(&opts["options"]);
    let (st, pk) = call(
        dev,
        "POST",
        "/v1/me/passkeys",
        Some(token),
        Some(serde_json::json!({"ceremony_id": opts["ceremony_id"], "credential": cred})),
    );
    assert_eq!(st, 201, "{pk}");
    key
}

/// Issue "Signers decide (2)", point 6, end to end: a customer registers a passkey; the
/// engine hands it to the signer processes with the customer's withdrawals; once the nodes
/// have held it for the time-lock, the customer signs each withdrawal request with it
/// (`POST /v1/me/withdrawals/challenge`, then the assertion as `signature`), and a withdrawal
/// of theirs without that signature is refused by the nodes, not just the API.
#[test]
fn dev_a_customer_with_a_passkey_signs_their_withdrawals_for_the_nodes() {
    let Some(chain) = start_anvil(&["--block-time", "1"]) else { return };
    const LOCK_SECS: u64 = 4;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("dev");
    let dev = start_dev_with(
        &data,
        &[
            "--eth-rpc",
            chain.url.as_str(),
            "--confirmations",
            "1",
            "--withdrawal-lock-secs",
            "1",
            "--governance-delay-secs",
            &LOCK_SECS.to_string(),
        ],
        &[],
    );
    // Its first start prepared the threshold keys; with stderr not a terminal, the progress
    // is one line per step, with no carriage returns for a log to fill up with.
    let log = std::fs::read_to_string(data.with_extension("stderr.log")).unwrap();
    assert!(!log.contains('\r'), "{log:?}");
    assert_eq!(log.matches("Auxiliary info (ZK proofs): 1/1").count(), 1, "{log}");
    let port = dev.url.rsplit(':').next().unwrap().trim_end_matches('/').to_owned();
    let origin = format!("https://localhost:{port}");
    let (st, reg) = call(
        &dev,
        "POST",
        "/v1/auth/register",
        None,
        Some(
            serde_json::json!({"email": "ivy@customer.example", "password": "a passphrase of some length"}),
        ),
    );
    assert_eq!(st, 201, "{reg}");
    let token = reg["token"].as_str().unwrap().to_owned();
    let cid = reg["customer_id"].as_str().unwrap().to_owned();
    let mut key = add_passkey(&dev, &token, &origin);
    let credit = serde_json::json!({
        "customer_id": cid, "asset": "ETH", "amount": "1", "reference": "dev faucet"});
    api(&dev, "POST", "/v1/deposits", Some(credit));
    std::thread::sleep(Duration::from_millis(1_500));
    let dest = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed";
    let get = |id: &str| api(&dev, "GET", &format!("/v1/withdrawals/{id}"), None);
    let wait = |id: &str, done: &dyn Fn(&serde_json::Value) -> bool| {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let w = get(id);
            if done(&w) {
                return w;
            }
            assert!(Instant::now() < deadline, "{w}");
            std::thread::sleep(Duration::from_millis(250));
        }
    };
    let withdraw = |amount: &str, signature: Option<serde_json::Value>| {
        let mut body = serde_json::json!({"asset": "ETH", "destination": dest, "amount": amount});
        if let Some(s) = signature {
            body["signature"] = s;
        }
        let (st, w) = call(&dev, "POST", "/v1/me/withdrawals", Some(&token), Some(body));
        assert_eq!(st, 201, "{w}");
        w["id"].as_str().unwrap().to_owned()
    };
    let signed = |amount: &str, key: &mut authenticator::SoftAuthenticator| {
        let ask = serde_json::json!({"asset": "ETH", "destination": dest, "amount": amount});
        let (st, ch) = call(&dev, "POST", "/v1/me/withdrawals/challenge", Some(&token), Some(ask));
        assert_eq!(st, 200, "{ch}");
        let a = key.get(&ch["options"]);
        let r = &a["response"];
        serde_json::json!({"initiator": cid, "requested": ch["requested"], "webauthn": {
            "authenticator_data": r["authenticatorData"], "client_data_json": r["clientDataJSON"],
            "signature": r["signature"]}})
    };

    // While the nodes have known the key for less than the time-lock, a withdrawal without
    // the customer's signature still signs (and teaches the nodes the key).
    let first = withdraw("0.01", None);
    wait(&first, &|w| w["state"] == "settled");
    std::thread::sleep(Duration::from_secs(LOCK_SECS + 1));

    // Signed by the customer's passkey: settled. A signature over another amount is refused
    // by the API before anything is reserved.
    let mine = signed("0.02", &mut key);
    let (st, v) = call(
        &dev,
        "POST",
        "/v1/me/withdrawals",
        Some(&token),
        Some(
            serde_json::json!({"asset": "ETH", "destination": dest, "amount": "0.03", "signature": mine.clone()}),
        ),
    );
    assert_eq!((st, v["error"]["code"].as_str()), (422, Some("initiation_refused")), "{v}");
    let second = withdraw("0.02", Some(mine));
    assert_eq!(get(&second)["id"], second);
    wait(&second, &|w| w["state"] == "settled");

    // Without it: the API takes the request (the customer is signed in), and every node
    // refuses it, naming the customer.
    let unsigned = withdraw("0.01", None);
    let w = wait(&unsigned, &|w| !w["signer_refusal"].is_null());
    let why = &w["signer_refusal"]["reason"];
    assert_eq!(
        (why["code"].as_str(), why["block"]["kind"].as_str(), why["block"]["customer_id"].as_str()),
        (Some("blocked"), Some("customer_not_signed"), Some(cid.as_str())),
        "{w}"
    );
    assert_audit_intact(&data);
    drop(dev);
}

/// Issue 7's "Done when" through the real binary and a real SMTP server: a new customer
/// registers, turns on TOTP and a passkey, sets an anti-phishing code, gets a login alert
/// e-mail (headed by the code) for a new device, lists and revokes devices, adds a whitelist
/// address that becomes usable only after its delay, and a withdrawal right after a password
/// change is refused with the reason.
#[test]
fn dev_customer_account_security_from_registration_to_a_locked_withdrawal() {
    let dir = tempfile::tempdir().unwrap();
    let Some(smtp) = SmtpServer::start(&dir.path().join("maildir")) else { return };
    let data = dir.path().join("dev");
    let dev = start_dev_with(
        &data,
        &[
            "--no-signers",
            "--alert-smtp",
            smtp.addr.as_str(),
            "--alert-email-to",
            "security@exchange.example",
            "--withdrawal-lock-secs",
            "3",
            "--whitelist-delay-secs",
            "3",
        ],
        &[],
    );
    let port = dev.url.rsplit(':').next().unwrap().trim_end_matches('/').to_owned();
    let origin = format!("https://localhost:{port}");
    let email = "dora@customer.example";
    let password = "a passphrase of some length";
    let (st, reg) = call(
        &dev,
        "POST",
        "/v1/auth/register",
        None,
        Some(
            serde_json::json!({"email": email, "password": password, "device_name": "dora's laptop"}),
        ),
    );
    assert_eq!(st, 201, "{reg}");
    let token = reg["token"].as_str().unwrap().to_owned();
    let cid = reg["customer_id"].as_str().unwrap().to_owned();
    let laptop = reg["device_id"].as_str().unwrap().to_owned();

    // TOTP on, with the secret an authenticator app would scan.
    let (_, setup) = call(&dev, "POST", "/v1/me/totp", Some(&token), None);
    let seed = strongroom_crypto::totp::base32_decode(setup["secret"].as_str().unwrap()).unwrap();
    let code_at = |offset: u64| {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap();
        strongroom_crypto::totp::Totp::default().code(&seed, now.as_secs() + offset)
    };
    let (st, rc) = call(
        &dev,
        "POST",
        "/v1/me/totp/confirm",
        Some(&token),
        Some(serde_json::json!({"code": code_at(0)})),
    );
    assert_eq!(st, 200, "{rc}");
    let recovery = rc["recovery_codes"][0].as_str().unwrap().to_owned();

    // A passkey, from a software authenticator with a real P-256 key.
    let mut key = add_passkey(&dev, &token, &origin);

    // The anti-phishing code, then a sign-in from a new device with the passkey.
    let (st, _) = call(
        &dev,
        "POST",
        "/v1/me/anti-phishing-code",
        Some(&token),
        Some(serde_json::json!({"anti_phishing_code": "green-lynx-7"})),
    );
    assert_eq!(st, 204);
    let (_, opts) = call(
        &dev,
        "POST",
        "/v1/auth/passkey/options",
        None,
        Some(serde_json::json!({"email": email})),
    );
    let assertion = key.get(&opts["options"]);
    let (st, tablet) = call(
        &dev,
        "POST",
        "/v1/auth/passkey/login",
        None,
        Some(
            serde_json::json!({"ceremony_id": opts["ceremony_id"], "credential": assertion, "device_name": "dora's tablet"}),
        ),
    );
    assert_eq!(st, 200, "{tablet}");
    assert_eq!(tablet["new_device"], true);
    // The known laptop signs in with password and TOTP: no alert for it.
    let (st, again) = call(
        &dev,
        "POST",
        "/v1/auth/login",
        None,
        Some(
            serde_json::json!({"email": email, "password": password, "totp_code": code_at(30), "device_id": laptop}),
        ),
    );
    assert_eq!(st, 200, "{again}");
    assert_eq!(again["new_device"], false);
    let deadline = Instant::now() + Duration::from_secs(20);
    let alert = loop {
        let found = smtp.messages().into_iter().find(|m| m.contains("New sign-in"));
        if let Some(m) = found {
            break m;
        }
        assert!(Instant::now() < deadline, "no login alert e-mail: {:?}", smtp.messages());
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(alert.contains(email), "{alert}");
    assert!(alert.contains("Your anti-phishing code: green-lynx-7"), "{alert}");
    assert!(alert.contains("dora's tablet"), "{alert}");
    assert_eq!(smtp.messages().iter().filter(|m| m.contains("New sign-in")).count(), 1);

    // Devices: both listed; the tablet revoked, and its session with it.
    let (_, devices) = call(&dev, "GET", "/v1/me/devices", Some(&token), None);
    assert_eq!(devices["data"].as_array().unwrap().len(), 2, "{devices}");
    let tablet_id = tablet["device_id"].as_str().unwrap();
    let (st, _) = call(&dev, "DELETE", &format!("/v1/me/devices/{tablet_id}"), Some(&token), None);
    assert_eq!(st, 204);
    let (st, _) = call(&dev, "GET", "/v1/me", tablet["token"].as_str(), None);
    assert_eq!(st, 401);

    // Funds, whitelist-only mode, and an address usable only after the delay.
    api(
        &dev,
        "POST",
        "/v1/deposits",
        Some(
            serde_json::json!({"customer_id": cid, "asset": "ETH", "amount": "1", "reference": "0xd0:1"}),
        ),
    );
    let (st, _) = call(
        &dev,
        "POST",
        "/v1/me/whitelist/mode",
        Some(&token),
        Some(serde_json::json!({"enabled": true})),
    );
    assert_eq!(st, 200);
    let dest = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed";
    let (st, entry) = call(
        &dev,
        "POST",
        "/v1/me/whitelist",
        Some(&token),
        Some(serde_json::json!({"asset": "ETH", "address": dest})),
    );
    assert_eq!(st, 201, "{entry}");
    assert_eq!(entry["usable"], false);
    // A password change (with a recovery code as the second factor) locks withdrawals.
    let (st, me) = call(
        &dev,
        "POST",
        "/v1/me/password",
        Some(&token),
        Some(
            serde_json::json!({"current_password": password, "new_password": "another long passphrase", "recovery_code": recovery}),
        ),
    );
    assert_eq!(st, 200, "{me}");
    let withdraw = serde_json::json!({"asset": "ETH", "destination": dest, "amount": "0.1"});
    let (st, refused) =
        call(&dev, "POST", "/v1/me/withdrawals", Some(&token), Some(withdraw.clone()));
    assert_eq!(st, 403, "{refused}");
    assert_eq!(refused["error"]["code"], "withdrawal_locked");
    let message = refused["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("withdrawals are locked until") && message.contains("password"),
        "{message}"
    );
    std::thread::sleep(Duration::from_millis(3300));
    let (st, w) = call(&dev, "POST", "/v1/me/withdrawals", Some(&token), Some(withdraw));
    assert_eq!(st, 201, "{w}");
    assert_eq!(w["state"], "reserved");
    assert!(smtp
        .messages()
        .iter()
        .any(|m| m.contains("Security change") && m.contains("green-lynx-7")));
    let recovery2 = rc["recovery_codes"][1].as_str().unwrap().to_owned();
    drop(dev);

    // Key rotation with the server stopped: everything re-sealed, the old key gone, and the
    // account still works after a restart (the e-mail index, devices, the contact).
    let old_key = std::fs::read_to_string(data.join("personal-data.key")).unwrap();
    let out = Command::new(BIN)
        .args(["keys", "rotate", "--data-dir", data.to_str().unwrap()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("1 contacts, 1 accounts, 1 devices"), "{text}");
    let new_key = std::fs::read_to_string(data.join("personal-data.key")).unwrap();
    assert_ne!(old_key.trim(), new_key.trim());
    assert!(!data.join("personal-data.key.next").exists());
    // A staff approver, added from the command line.
    let pw_file = dir.path().join("staff.pw");
    std::fs::write(&pw_file, "a staff passphrase here\n").unwrap();
    let staff = |extra: &[&str]| {
        Command::new(BIN)
            .args(["staff", "add", "--email", "ops@exchange.example", "--role", "approver"])
            .args([
                "--password-file",
                pw_file.to_str().unwrap(),
                "--data-dir",
                data.to_str().unwrap(),
            ])
            .args(extra)
            .output()
            .unwrap()
    };
    let no_member = staff(&[]);
    assert!(!no_member.status.success());
    assert!(String::from_utf8_lossy(&no_member.stderr).contains("--member"));
    assert!(staff(&["--member", "ann"]).status.success());
    let dev = start_dev_with(
        &data,
        &[
            "--no-signers",
            "--alert-smtp",
            smtp.addr.as_str(),
            "--alert-email-to",
            "security@exchange.example",
        ],
        &[],
    );
    let (st, back) = call(
        &dev,
        "POST",
        "/v1/auth/login",
        None,
        Some(serde_json::json!({"email": email, "password": "another long passphrase",
            "recovery_code": recovery2, "device_name": "dora's new phone"})),
    );
    assert_eq!(st, 200, "{back}");
    let token = back["token"].as_str().unwrap();
    let (_, me) = call(&dev, "GET", "/v1/me", Some(token), None);
    assert_eq!(me["email"], "d***@customer.example", "{me}");
    let (st, ops) = call(
        &dev,
        "POST",
        "/v1/auth/login",
        None,
        Some(
            serde_json::json!({"email": "ops@exchange.example", "password": "a staff passphrase here"}),
        ),
    );
    assert_eq!(st, 200, "{ops}");
    let (_, ops_me) = call(&dev, "GET", "/v1/me", ops["token"].as_str(), None);
    assert_eq!(
        (ops_me["role"].as_str(), ops_me["member"].as_str()),
        (Some("approver"), Some("ann"))
    );
    let (_, devices) = call(&dev, "GET", "/v1/me/devices", Some(token), None);
    let names: Vec<&str> =
        devices["data"].as_array().unwrap().iter().map(|d| d["name"].as_str().unwrap()).collect();
    assert!(names.contains(&"dora's laptop") && names.contains(&"dora's new phone"), "{names:?}");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !smtp
        .messages()
        .iter()
        .any(|m| m.contains("dora's new phone") && m.contains("green-lynx-7"))
    {
        assert!(Instant::now() < deadline, "no login alert after the rotation");
        std::thread::sleep(Duration::from_millis(200));
    }
    drop(dev);
    assert_audit_intact(&data);
}

/// The treasury through the real binary: `strongroom dev --treasury` deploys its cold wallet
/// (a 2-of-3 Safe on the node), finds the hot wallet's 100 ETH above its 5 ETH high mark,
/// sweeps down to the 3 ETH target through the signer processes, reports the cold share
/// (API and Prometheus) at or above 95%, and the ledger still reconciles with hot + cold.
#[test]
fn dev_treasury_sweeps_the_hot_wallet_above_its_high_mark_to_cold() {
    let Some(chain) = start_anvil(&["--block-time", "1"]) else { return };
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("dev");
    let args = [
        "--eth-rpc",
        chain.url.as_str(),
        "--confirmations",
        "1",
        "--treasury",
        "--hot-eth-low",
        "1",
        "--hot-eth-target",
        "3",
        "--hot-eth-high",
        "5",
    ];
    let dev = start_dev_with(&data, &args, &[]);
    let chain_file: serde_json::Value =
        serde_json::from_slice(&std::fs::read(data.join("chain.json")).unwrap()).unwrap();
    let hot = chain_file["wallets"][0][1].as_str().unwrap().to_owned();
    assert_eq!(chain_file["wallets"][1][0], "cold-eth-1", "{chain_file}");
    let cold = chain_file["wallets"][1][1].as_str().unwrap().to_owned();
    // The cold wallet is a 2-of-3 Safe of the three dev owner keys, which sit sealed on disk.
    let safe: serde_json::Value =
        serde_json::from_slice(&std::fs::read(data.join("cold/safe.json")).unwrap()).unwrap();
    assert_eq!(safe["address"], cold.as_str());
    let threshold = rpc(
        &chain.url,
        "eth_call",
        serde_json::json!([{"to": cold, "data": "0xe75235b8"}, "latest"]),
    );
    assert_eq!(threshold, format!("0x{:064x}", 2), "getThreshold()");
    for n in 1..=3 {
        let backup = std::fs::read_to_string(data.join(format!("cold/owner-{n}.backup"))).unwrap();
        assert!(
            backup.starts_with("strongroom-sealed-v1:cold-key-backup:m=65536,t=3,p=4:"),
            "{backup}"
        );
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(data.join(format!("cold/owner-{n}.passphrase")))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "passphrase files are the owner's only");
    }

    let wei = |v: &serde_json::Value| {
        u128::from_str_radix(v.as_str().unwrap().trim_start_matches("0x"), 16).unwrap()
    };
    let eth = 1_000_000_000_000_000_000u128;
    let deadline = Instant::now() + Duration::from_secs(120);
    let view = loop {
        let v = api(&dev, "GET", "/v1/treasury", None);
        let cold_balance =
            wei(&rpc(&chain.url, "eth_getBalance", serde_json::json!([cold, "latest"])));
        let a = v["assets"].as_array().unwrap().iter().find(|a| a["asset"] == "ETH");
        let a = a.cloned().unwrap_or_default();
        if cold_balance == 97 * eth && a["cold"] == (97 * eth).to_string() && a["action"] == "hold"
        {
            break v;
        }
        assert!(
            Instant::now() < deadline,
            "not swept: cold holds {cold_balance} wei; treasury: {v}"
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    let a = view["assets"].as_array().unwrap().iter().find(|a| a["asset"] == "ETH").unwrap();
    assert_eq!(a["cold_address"], cold.as_str());
    assert_eq!(a["asset"], "ETH");
    assert_eq!(a["cold_decimal"], "97");
    let hot_left = wei(&rpc(&chain.url, "eth_getBalance", serde_json::json!([hot, "latest"])));
    assert!(
        hot_left < 3 * eth && hot_left > 3 * eth - eth / 100,
        "3 ETH less the sweep's fee stays hot: {hot_left}"
    );
    let bps = a["cold_bps"].as_u64().unwrap();
    assert!((9_500..=10_000).contains(&bps), "{view}");
    assert_eq!(a["min_cold_bps"], 9_500);
    assert_eq!(a["meets_minimum"], true);
    // Over time: the share before the sweep (0%) and after.
    let history: Vec<u64> = view["history"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["asset"] == "ETH")
        .map(|p| p["cold_bps"].as_u64().unwrap())
        .collect();
    assert_eq!(history.first(), Some(&0), "{history:?}");
    assert_eq!(history.last(), Some(&bps), "{history:?}");
    // Prometheus shows the same share.
    let (ok, metrics) = curl(&[
        "--cacert",
        &dev.ca,
        "-H",
        &format!("Authorization: Bearer {}", dev.token),
        &format!("{}/metrics", dev.url),
    ])
    .unwrap();
    assert!(ok, "{metrics}");
    assert!(
        metrics.contains(&format!("strongroom_cold_ratio_bps{{asset=\"ETH\"}} {bps}")),
        "{metrics}"
    );
    assert!(metrics.contains("strongroom_cold_ratio_min_bps{asset=\"ETH\"} 9500"), "{metrics}");
    // Custody did not change: the ledger matches hot + cold + deposit addresses.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (ok, text) = reconcile(&data);
        if ok && text.contains("ETH") && !text.contains("in flight") {
            break;
        }
        assert!(Instant::now() < deadline, "{text}");
        std::thread::sleep(Duration::from_millis(500));
    }
    assert_audit_intact(&data);
}

/// Run `strongroom` with `args`: whether it succeeded, and stdout then stderr.
fn cli_run(args: &[&str]) -> (bool, String) {
    let out = Command::new(BIN).args(args).output().unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

/// A governance folder in `dir` (`strongroom governance … --dir`): admins ada and bob
/// (quorum 2), approvers ann and al, operator eve, and a policy that lets cold movements
/// through with two approvals and blocks everything else. Key files are `dir/<id>.key`.
fn cold_governance(dir: &std::path::Path) -> String {
    let gs = dir.join("gov").to_str().unwrap().to_owned();
    let key = |id: &str| dir.join(format!("{id}.key")).to_str().unwrap().to_owned();
    let mut members = Vec::new();
    for (id, role) in [
        ("ada", "admin"),
        ("bob", "admin"),
        ("ann", "approver"),
        ("al", "approver"),
        ("eve", "operator"),
    ] {
        let (ok, out) = cli_run(&["governance", "keygen", "--out", &key(id)]);
        assert!(ok, "{out}");
        members.push(format!("{id}:{}:{role}", out.trim()));
    }
    let mut init = vec!["governance", "init", "--dir", gs.as_str(), "--quorum", "2"];
    init.extend(["--asset", "bip122:0f9188f13cb7b2c71f2a335e3a4fc328:BTC:8"]);
    init.extend(["--asset", "eip155:31337:ETH:18"]);
    for m in &members {
        init.extend(["--member", m.as_str()]);
    }
    assert!(cli_run(&init).0);
    let policy = dir.join("policy.toml");
    std::fs::write(&policy, "version = 1\n[[rules]]\nname = \"cold\"\nwhen = { tier = \"cold\" }\naction = { kind = \"approvals\", count = 2, roles = [\"approver\"] }\n[[rules]]\nname = \"rest\"\naction = { kind = \"block\", reason = \"cold only\" }\n").unwrap();
    assert!(
        cli_run(&[
            "governance",
            "propose",
            "--dir",
            &gs,
            "policy",
            "--file",
            policy.to_str().unwrap()
        ])
        .0
    );
    for who in ["ada", "bob"] {
        assert!(
            cli_run(&["governance", "sign", "--dir", &gs, "--member", who, "--key", &key(who)]).0
        );
    }
    let (ok, out) = cli_run(&["governance", "commit", "--dir", &gs]);
    assert!(ok, "{out}");
    gs
}

/// Approvers ann and al each approve `dir/intent.json` with `strongroom cold approve`
/// (their key files are in `dir`), writing `dir/<who>.approval`.
fn cold_approvals(dir: &std::path::Path, governance: &str) {
    let f = |name: &str| dir.join(name).to_str().unwrap().to_owned();
    for who in ["ann", "al"] {
        let (ok, out) = cli_run(&[
            "cold",
            "approve",
            "--intent",
            &f("intent.json"),
            "--governance",
            governance,
            "--member",
            who,
            "--key",
            &f(&format!("{who}.key")),
            "--yes",
            "--out",
            &f(&format!("{who}.approval")),
        ]);
        assert!(ok && out.contains("approved under policy v1"), "{out}");
    }
}

#[path = "../../chain-bitcoin/tests/support/esplora_server.rs"]
mod esplora_server;

/// A Bitcoin cold withdrawal as the operators do it, on files: governance with a policy
/// that needs two approvers for cold movements, `strongroom cold intent`, two `cold approve`
/// on the approvers' machines, `cold prepare` reading the wallet's coins from an Esplora
/// server (refused with one approval), offline signatures (the offline signer's library;
/// the binary itself is tested in `crates/cold/tests`), one of them through `cold
/// export-psbt` / `cold import-psbt` as an outside cosigner's, and `cold send`, which the
/// server accepts only if Bitcoin Core's consensus code verifies it.
#[test]
fn cold_bitcoin_withdrawal_from_intent_to_broadcast_through_the_cli() {
    use strongroom_chain_bitcoin::bitcoin::{self, Network};
    use strongroom_chain_bitcoin::keys::ColdSecret;
    use strongroom_chain_bitcoin::{Keychain, Multisig};
    use strongroom_cold::bundle::Bundle;
    use strongroom_cold::home::ColdHome;
    use strongroom_core::Env;

    let dir = tempfile::tempdir().unwrap();
    let gs = cold_governance(dir.path());
    let g = std::path::PathBuf::from(&gs);
    let cli = cli_run;
    let key = |id: &str| dir.path().join(format!("{id}.key")).to_str().unwrap().to_owned();
    // The wallet: three holders' keys (offline homes, made with the cold library here).
    let env = strongroom_core::SystemEnv::new();
    let genesis: strongroom_governance::log::Genesis =
        serde_json::from_slice(&std::fs::read(g.join("genesis.json")).unwrap()).unwrap();
    let pin = std::fs::read_to_string(g.join("genesis.pin")).unwrap().trim().to_owned();
    let chain = strongroom_units::ChainId::parse(strongroom_units::chain::BITCOIN_REGTEST).unwrap();
    let pass = strongroom_crypto::SecretString::new("a holder's long passphrase".into());
    let mut homes = Vec::new();
    for n in 0..3 {
        let secret = ColdSecret::generate(&env);
        let h = ColdHome::create(
            &dir.path().join(format!("holder-{n}")),
            &secret,
            &pass,
            chain.clone(),
            genesis.clone(),
            &pin,
            &env,
        )
        .unwrap();
        homes.push(h);
    }
    let keys: Vec<String> = homes.iter().map(|h| h.config().account_key.clone()).collect();
    let descriptor = Multisig::new(2, &keys, Network::Regtest).unwrap().descriptor();
    for h in &mut homes {
        h.install_wallet(strongroom_core::WalletId::parse("cold-btc-1").unwrap(), &descriptor)
            .unwrap();
    }
    let multisig = Multisig::from_descriptor(&descriptor, Network::Regtest).unwrap();

    // An Esplora server that knows one 2 BTC deposit to the wallet.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let state: esplora_server::Shared = std::sync::Arc::default();
    let deposit = bitcoin::Transaction {
        version: bitcoin::transaction::Version::TWO,
        lock_time: bitcoin::absolute::LockTime::ZERO,
        input: vec![bitcoin::TxIn {
            previous_output: bitcoin::OutPoint { txid: "11".repeat(32).parse().unwrap(), vout: 0 },
            ..Default::default()
        }],
        output: vec![bitcoin::TxOut {
            value: bitcoin::Amount::from_sat(200_000_000),
            script_pubkey: multisig.address(Keychain::Receive, 0).unwrap().script_pubkey(),
        }],
    };
    state.lock().unwrap().txs.insert(deposit.compute_txid(), (deposit, Some(100)));
    let url = rt.block_on(esplora_server::serve(state.clone()));

    let dest = "bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080";
    let f = |name: &str| dir.path().join(name).to_str().unwrap().to_owned();
    let (ok, out) = cli(&[
        "cold",
        "intent",
        "--chain",
        chain.as_str(),
        "--wallet",
        "cold-btc-1",
        "--to",
        dest,
        "--amount",
        "1.25",
        "--fee-cap",
        "20000",
        "--out",
        &f("intent.json"),
    ]);
    assert!(ok && out.contains("1.25 BTC (125000000 base units)"), "{out}");
    cold_approvals(dir.path(), &gs);
    // Someone else's key under ann's name is refused.
    let (ok, out) = cli(&[
        "cold",
        "approve",
        "--intent",
        &f("intent.json"),
        "--governance",
        &gs,
        "--member",
        "ann",
        "--key",
        &key("al"),
        "--yes",
        "--out",
        &f("x.approval"),
    ]);
    assert!(!ok && out.contains("not ann's"), "{out}");

    let prepare = |approvals: &[&str]| {
        let (intent, out) = (f("intent.json"), f("bundle.json"));
        let mut args = vec![
            "cold",
            "prepare",
            "--intent",
            &intent,
            "--governance",
            &gs,
            "--initiator",
            "eve",
            "--esplora",
            &url,
            "--descriptor",
            &descriptor,
            "--out",
            &out,
        ];
        let files: Vec<String> = approvals.iter().map(|a| f(&format!("{a}.approval"))).collect();
        for a in &files {
            args.extend(["--approval", a.as_str()]);
        }
        cli(&args)
    };
    let (ok, out) = prepare(&["ann"]);
    assert!(!ok && out.contains("1 of 2 approvals"), "no bundle before the quorum: {out}");
    assert!(!std::path::Path::new(&f("bundle.json")).exists());
    let (ok, out) = prepare(&["ann", "al"]);
    assert!(
        ok && out.contains("1 coin(s) found; 5 sat/vB") && out.contains("Send 1.25000000 BTC"),
        "{out}"
    );

    // Two holders sign offline.
    let bundle = Bundle::from_json(&std::fs::read(f("bundle.json")).unwrap()).unwrap();
    let mut signed = Vec::new();
    for (n, h) in homes.iter_mut().enumerate().take(2) {
        let review = h.review(&bundle, env.now()).unwrap();
        assert!(review.words.contains("approvals from ann, al"), "{}", review.words);
        let s = h.sign(&bundle, &review, &h.unlock(&pass).unwrap(), env.now()).unwrap();
        let path = f(&format!("signed-{n}.json"));
        std::fs::write(&path, s.to_json().unwrap()).unwrap();
        signed.push(path);
    }
    let (ok, out) = cli(&["cold", "send", "--esplora", &url, "--bundle", &signed[0]]);
    assert!(!ok && out.contains("finalize"), "one signature is not enough: {out}");

    // Holder 2 takes part as a cosigner outside Strongroom would (Sparrow with a hardware
    // wallet): `cold export-psbt` writes the bundle's PSBT as a plain BIP-174 file, holder 2
    // signs that file alone, and `cold import-psbt` merges the signature back into a bundle
    // that `send` takes. A file whose unsigned transaction was changed is refused.
    let (ok, out) = cli(&[
        "cold",
        "export-psbt",
        "--bundle",
        &f("bundle.json"),
        "--descriptor",
        &descriptor,
        "--out",
        &f("withdrawal.psbt"),
    ]);
    assert!(ok && out.contains("Send 1.25000000 BTC") && out.contains("PSBT written"), "{out}");
    let file = std::fs::read(f("withdrawal.psbt")).unwrap();
    assert!(file.starts_with(b"psbt\xff"), "binary BIP-174");
    let mut outside = strongroom_chain_bitcoin::psbt::from_file(&file).unwrap();
    homes[2].unlock(&pass).unwrap().sign(&mut outside, Network::Regtest).unwrap();
    std::fs::write(f("outside.txt"), strongroom_chain_bitcoin::psbt::to_base64(&outside)).unwrap();
    let import = |psbt: &str, out: &str| {
        cli(&[
            "cold",
            "import-psbt",
            "--bundle",
            &f("bundle.json"),
            "--descriptor",
            &descriptor,
            "--psbt",
            psbt,
            "--out",
            out,
        ])
    };
    let (ok, out) = import(&f("outside.txt"), &f("outside.json"));
    let fp = &homes[2].config().fingerprint;
    assert!(ok && out.contains(&format!("imported 1 signature(s) from key(s) {fp}")), "{out}");
    let mut changed = outside.clone();
    changed.unsigned_tx.lock_time = bitcoin::absolute::LockTime::from_consensus(1);
    std::fs::write(f("changed.psbt"), strongroom_chain_bitcoin::psbt::to_bip174(&changed)).unwrap();
    let (ok, out) = import(&f("changed.psbt"), &f("never.json"));
    assert!(!ok && out.contains("the imported PSBT changes the transaction"), "{out}");
    assert!(!std::path::Path::new(&f("never.json")).exists());

    // Holder 0's bundle and the outside cosigner's make the transaction the server takes.
    let outside = f("outside.json");
    let (ok, out) =
        cli(&["cold", "send", "--esplora", &url, "--bundle", &signed[0], "--bundle", &outside]);
    assert!(ok, "{out}");
    let txid: bitcoin::Txid = out.trim().parse().unwrap();
    let sent =
        state.lock().unwrap().txs.get(&txid).cloned().expect("the server has the transaction");
    let to = strongroom_chain_bitcoin::address(dest, Network::Regtest).unwrap();
    assert!(sent
        .0
        .output
        .iter()
        .any(|o| o.script_pubkey == to.script_pubkey() && o.value.to_sat() == 125_000_000));
    assert_eq!(sent.1, None, "in the mempool");
    // Sending again is harmless, also with the other pair of signatures (the same
    // transaction, another witness).
    let (ok, again) =
        cli(&["cold", "send", "--esplora", &url, "--bundle", &signed[0], "--bundle", &signed[1]]);
    assert!(ok && again.trim() == txid.to_string(), "{again}");
}

/// The same on Ethereum: a 2-of-3 Safe on a real node (anvil) with three offline owners,
/// created as Safe{Wallet} creates one (`SafeProxyFactory.createProxyWithNonce` with `setup`
/// in the call) at the address `deploy-safe --predict` gave beforehand; `cold intent`, two
/// approvals, `cold prepare --eth-rpc --safe` (the nonce from the Safe), two offline
/// signatures, and `cold send`, which checks them against the Safe's own owners and
/// threshold and has the relayer (the online side's own key file, none of the node's
/// accounts) sign and pay for the transaction that has the Safe move the ETH.
#[test]
fn cold_safe_withdrawal_from_intent_to_execution_through_the_cli() {
    use strongroom_chain_bitcoin::keys::ColdSecret;
    use strongroom_cold::bundle::Bundle;
    use strongroom_cold::home::ColdHome;
    use strongroom_core::Env;

    let Some(chain) = start_anvil(&[]) else { return };
    let dir = tempfile::tempdir().unwrap();
    let gs = cold_governance(dir.path());
    let f = |name: &str| dir.path().join(name).to_str().unwrap().to_owned();
    let env = strongroom_core::SystemEnv::new();
    let genesis: strongroom_governance::log::Genesis =
        serde_json::from_slice(&std::fs::read(dir.path().join("gov/genesis.json")).unwrap())
            .unwrap();
    let pin =
        std::fs::read_to_string(dir.path().join("gov/genesis.pin")).unwrap().trim().to_owned();
    let eth = strongroom_units::ChainId::parse("eip155:31337").unwrap();
    let pass = strongroom_crypto::SecretString::new("an owner's long passphrase".into());
    let mut homes = Vec::new();
    for n in 0..3 {
        let h = ColdHome::create(
            &dir.path().join(format!("owner-{n}")),
            &ColdSecret::generate(&env),
            &pass,
            eth.clone(),
            genesis.clone(),
            &pin,
            &env,
        )
        .unwrap();
        homes.push(h);
    }
    let owners: Vec<String> = homes.iter().map(|h| h.config().account_key.clone()).collect();
    let first_line = |out: &str| out.lines().next().unwrap_or_default().trim().to_owned();

    // The relayer: a key of the online side's own in a file only its user may read. It is
    // none of the accounts the node unlocks, and the key itself is never printed.
    let relayer_key = f("relayer.key");
    let (ok, out) = cli_run(&["cold", "relayer-key", "--out", &relayer_key]);
    assert!(ok && out.contains("fund this address with ETH for gas only"), "{out}");
    let relayer = first_line(&out);
    assert!(relayer.starts_with("0x") && relayer.len() == 42, "{out}");
    let secret = std::fs::read_to_string(&relayer_key).unwrap();
    assert!(!out.contains(secret.trim()), "the key is never printed");
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&relayer_key).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let (ok, out) = cli_run(&["cold", "relayer-key", "--out", &relayer_key]);
    assert!(!ok && out.contains("exists"), "an existing key is never overwritten: {out}");
    assert_eq!(std::fs::read_to_string(&relayer_key).unwrap(), secret);
    let unlocked = eth_accounts(&chain.url);
    assert!(!unlocked.contains(&relayer.to_lowercase()), "{unlocked:?}");
    let set_balance = |a: &str, wei: &str| {
        rpc(&chain.url, "anvil_setBalance", serde_json::json!([a, wei]));
    };

    // The Safe contracts on the dev node, signed and paid for by the relayer: refused with
    // a clear error while it has no ETH for gas.
    let contracts =
        ["cold", "deploy-safe-contracts", "--eth-rpc", &chain.url, "--relayer-key", &relayer_key];
    let (ok, out) = cli_run(&contracts);
    assert!(!ok && out.contains("send the relayer ETH for gas"), "{out}");
    assert!(out.contains(&format!("the relayer {relayer} holds 0 wei")), "{out}");
    set_balance(&relayer, "0x8ac7230489e80000");
    let (ok, out) = cli_run(&contracts);
    assert!(ok, "{out}");
    let named = |name: &str| {
        out.lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .unwrap_or_else(|| panic!("no {name} in {out}"))
            .trim()
            .to_owned()
    };
    let (singleton, factory, handler) =
        (named("singleton"), named("factory"), named("fallback-handler"));

    // The Safe, from the owners' addresses only: its address is known before it exists.
    let deploy = |extra: &[&str]| {
        let mut args = vec![
            "cold",
            "deploy-safe",
            "--eth-rpc",
            chain.url.as_str(),
            "--singleton",
            singleton.as_str(),
            "--factory",
            factory.as_str(),
            "--fallback-handler",
            handler.as_str(),
            "--threshold",
            "2",
        ];
        for o in &owners {
            args.extend(["--owner", o.as_str()]);
        }
        args.extend(extra);
        cli_run(&args)
    };
    let (ok, out) = deploy(&["--predict"]);
    assert!(ok && out.contains("nothing was sent"), "{out}");
    let predicted = first_line(&out);
    let code = rpc(&chain.url, "eth_getCode", serde_json::json!([predicted, "latest"]));
    assert_eq!(code, "0x", "nothing there yet");
    let (ok, out) = deploy(&["--relayer-key", &relayer_key]);
    assert!(ok && out.contains("at the address CREATE2 predicted"), "{out}");
    let safe = first_line(&out);
    assert_eq!(safe, predicted);
    assert!(out.contains("Safe 1.4.1: 2-of-3") && out.contains(&handler), "{out}");
    // The creation was the relayer's own EIP-1559 transaction to the factory.
    let txid = out
        .split_whitespace()
        .skip_while(|w| *w != "transaction")
        .nth(1)
        .unwrap_or_else(|| panic!("no transaction in {out}"));
    let tx = rpc(&chain.url, "eth_getTransactionByHash", serde_json::json!([txid]));
    assert_eq!(tx["from"].as_str().unwrap(), relayer.to_lowercase());
    assert_eq!(tx["to"].as_str().unwrap(), factory.to_lowercase());
    assert_eq!(tx["type"], "0x2");
    let threshold = rpc(
        &chain.url,
        "eth_call",
        serde_json::json!([{"to": safe, "data": "0xe75235b8"}, "latest"]),
    );
    assert_eq!(threshold, format!("0x{:064x}", 2), "getThreshold()");
    // Again: the same Safe is found, not made twice.
    let (ok, out) = deploy(&["--relayer-key", &relayer_key]);
    assert!(ok && first_line(&out) == safe && out.contains("already deployed"), "{out}");
    let (ok, out) = cli_run(&[
        "cold",
        "deploy-safe",
        "--eth-rpc",
        &chain.url,
        "--relayer-key",
        &relayer_key,
        "--factory",
        &factory,
        "--threshold",
        "3",
        "--owner",
        &owners[0],
        "--owner",
        &owners[0],
        "--owner",
        &owners[1],
    ]);
    assert!(!ok && out.contains("distinct owners"), "{out}");
    set_balance(&safe, "0x1bc16d674ec80000");
    for h in &mut homes {
        h.install_safe(strongroom_core::WalletId::parse("cold-eth-1").unwrap(), &safe, &owners, 2)
            .unwrap();
    }

    let dest = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed";
    let (ok, out) = cli_run(&[
        "cold",
        "intent",
        "--chain",
        "eip155:31337",
        "--asset",
        "ETH",
        "--decimals",
        "18",
        "--wallet",
        "cold-eth-1",
        "--to",
        dest,
        "--amount",
        "0.75",
        "--fee-cap",
        "10000000000000000",
        "--out",
        &f("intent.json"),
    ]);
    assert!(ok, "{out}");
    cold_approvals(dir.path(), &gs);
    let (ok, out) = cli_run(&[
        "cold",
        "prepare",
        "--intent",
        &f("intent.json"),
        "--governance",
        &gs,
        "--initiator",
        "eve",
        "--approval",
        &f("ann.approval"),
        "--approval",
        &f("al.approval"),
        "--eth-rpc",
        &chain.url,
        "--safe",
        &safe,
        "--out",
        &f("bundle.json"),
    ]);
    assert!(ok && out.contains("at nonce 0"), "{out}");
    let (ok, out) = cli_run(&[
        "cold",
        "prepare",
        "--intent",
        &f("intent.json"),
        "--governance",
        &gs,
        "--initiator",
        "eve",
        "--eth-rpc",
        &chain.url,
        "--out",
        &f("x.json"),
    ]);
    assert!(!ok && out.contains("--safe"), "{out}");

    let bundle = Bundle::from_json(&std::fs::read(f("bundle.json")).unwrap()).unwrap();
    let mut signed = Vec::new();
    for (n, h) in homes.iter_mut().enumerate().skip(1) {
        let review = h.review(&bundle, env.now()).unwrap();
        assert!(
            review.words.contains("a plain call (no delegatecall), Safe nonce 0"),
            "{}",
            review.words
        );
        let s = h.sign(&bundle, &review, &h.unlock(&pass).unwrap(), env.now()).unwrap();
        let path = f(&format!("signed-{n}.json"));
        std::fs::write(&path, s.to_json().unwrap()).unwrap();
        signed.push(path);
    }
    let send = |bundles: &[&str]| {
        let mut args =
            vec!["cold", "send", "--eth-rpc", chain.url.as_str(), "--relayer-key", &relayer_key];
        for b in bundles {
            args.extend(["--bundle", b]);
        }
        cli_run(&args)
    };
    let (ok, out) = send(&[&signed[0]]);
    assert!(!ok && out.contains("1 of 2 owners"), "{out}");
    let balance = |a: &str| {
        u128::from_str_radix(
            rpc(&chain.url, "eth_getBalance", serde_json::json!([a, "latest"]))
                .as_str()
                .unwrap()
                .trim_start_matches("0x"),
            16,
        )
        .unwrap()
    };
    // A relayer out of gas money: a clear error, and nothing moves.
    let gas_money = balance(&relayer);
    set_balance(&relayer, "0x3e8");
    let (ok, out) = send(&[&signed[0], &signed[1]]);
    assert!(
        !ok && out.contains(&format!("the relayer {relayer} holds 1000 wei"))
            && out.contains("send the relayer ETH for gas"),
        "{out}"
    );
    assert_eq!(balance(&safe), 2_000_000_000_000_000_000);
    set_balance(&relayer, &format!("{gas_money:#x}"));
    let before = balance(dest);
    let (ok, out) = send(&[&signed[0], &signed[1]]);
    assert!(ok && out.contains(&format!("the relayer {relayer} paid")), "{out}");
    let txid = first_line(&out);
    assert!(txid.starts_with("0x") && txid.len() == 66, "{out}");
    assert_eq!(balance(dest) - before, 750_000_000_000_000_000);
    assert_eq!(balance(&safe), 2_000_000_000_000_000_000 - 750_000_000_000_000_000);
    // Sent by the relayer, signed by its own key (EIP-1559), to the Safe, with no value:
    // the owners' signatures inside the call moved the ETH, the relayer paid only gas.
    let tx = rpc(&chain.url, "eth_getTransactionByHash", serde_json::json!([txid]));
    assert_eq!(tx["from"].as_str().unwrap(), relayer.to_lowercase());
    assert_eq!(tx["to"].as_str().unwrap(), safe.to_lowercase());
    assert_eq!((tx["type"].as_str(), tx["value"].as_str()), (Some("0x2"), Some("0x0")));
    assert!(!eth_accounts(&chain.url).contains(&relayer.to_lowercase()));
    let receipt = rpc(&chain.url, "eth_getTransactionReceipt", serde_json::json!([txid]));
    let fee =
        u128::from_str_radix(receipt["gasUsed"].as_str().unwrap().trim_start_matches("0x"), 16)
            .unwrap()
            * u128::from_str_radix(
                receipt["effectiveGasPrice"].as_str().unwrap().trim_start_matches("0x"),
                16,
            )
            .unwrap();
    assert_eq!(gas_money - balance(&relayer), fee);
    // The same signatures again: the Safe's nonce moved on, so nothing is sent.
    let (ok, out) = send(&[&signed[0], &signed[1]]);
    assert!(!ok && out.contains("would fail, so it was not sent"), "{out}");
    assert_eq!(gas_money - balance(&relayer), fee);
}

/// The accounts the node unlocks, lowercase.
fn eth_accounts(url: &str) -> Vec<String> {
    let accounts = rpc(url, "eth_accounts", serde_json::json!([]));
    accounts.as_array().unwrap().iter().map(|a| a.as_str().unwrap().to_lowercase()).collect()
}

/// `keys hsm-init` makes the personal-data key inside a PKCS#11 token (SoftHSM2); `serve`
/// configured with it refuses to start when the token is missing or the PIN is not given,
/// before it touches the database.
#[test]
fn the_personal_data_key_lives_in_a_token_and_serve_needs_it() {
    let Some(module) = strongroom_hsm::softhsm::module() else {
        assert!(
            std::env::var("STRONGROOM_REQUIRE_SOFTHSM").is_err(),
            "SoftHSM2 is required (scripts/install-softhsm-for-tests)"
        );
        println!("SKIPPED: SoftHSM2 is not installed");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let conf =
        strongroom_hsm::softhsm::init_token(&dir.path().join("hsm"), "server", "9876").unwrap();
    let init = |pin: &str| {
        Command::new(BIN)
            .args(["keys", "hsm-init", "--module", module.to_str().unwrap()])
            .args(["--token", "server", "--key", "personal-data"])
            .env("SOFTHSM2_CONF", &conf)
            .env("STRONGROOM_HSM_PIN", pin)
            .output()
            .unwrap()
    };
    let wrong = init("1111");
    assert!(!wrong.status.success());
    assert!(String::from_utf8_lossy(&wrong.stderr).contains("refused the login"));
    let made = init("9876");
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    assert!(String::from_utf8_lossy(&made.stdout).trim().starts_with("p11-"));
    let again = init("9876");
    assert!(!again.status.success(), "a second key under one label is refused");
    assert!(String::from_utf8_lossy(&again.stderr).contains("already holds a key"));

    // serve with the key in a token that is not plugged in, or with no PIN: refused before
    // the database (which does not exist) is opened.
    let tls = dir.path().join("tls");
    let cert = Command::new(BIN)
        .args(["certificate", "--dir", tls.to_str().unwrap(), "--name", "api"])
        .args(["--host", "localhost"])
        .output()
        .unwrap();
    assert!(cert.status.success(), "{}", String::from_utf8_lossy(&cert.stderr));
    let config = dir.path().join("strongroom.toml");
    let write = |token: &str| {
        std::fs::write(
            &config,
            format!(
                "listen = \"127.0.0.1:{}\"\ndatabase_url = \"postgres://nobody@127.0.0.1:1/none\"\n\
                 data_dir = \"{}\"\n[[assets]]\nsymbol = \"ETH\"\nchain = \"eip155:1\"\ndecimals = 18\n\
                 min_withdrawal = \"0.001\"\nfee_cap = \"5000000000000000\"\n[tls]\ncert = \"{2}/api.pem\"\nkey = \"{2}/api-key.pem\"\n\
                 [personal_data.pkcs11]\nmodule = {3:?}\ntoken = \"{token}\"\nkey = \"personal-data\"\n\
                 pin_env = \"STRONGROOM_HSM_PIN\"\n",
                free_port(),
                dir.path().display(),
                tls.display(),
                module,
            ),
        )
        .unwrap();
    };
    let serve = |pin: Option<&str>| {
        let mut c = Command::new(BIN);
        c.args(["serve", "--config", config.to_str().unwrap()]).env("SOFTHSM2_CONF", &conf);
        match pin {
            Some(p) => c.env("STRONGROOM_HSM_PIN", p),
            None => c.env_remove("STRONGROOM_HSM_PIN"),
        };
        c.output().unwrap()
    };
    write("server-gone");
    let out = serve(Some("9876"));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("no token labelled \"server-gone\""), "{err}");
    write("server");
    let out = serve(None);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("STRONGROOM_HSM_PIN"), "{err}");
    // With the token and its PIN the key opens, and serve goes on to the database.
    let out = serve(Some("9876"));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("connecting to"), "{err}");
}

/// Until `done` holds, or fail after `secs` saying what did not happen.
fn wait_until(what: &str, secs: u64, done: &mut dyn FnMut() -> Option<String>) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        match done() {
            None => return,
            Some(why) => assert!(Instant::now() < deadline, "{what}: {why}"),
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// GET `url` (the local Bitcoin backend's Esplora API), as JSON or text.
fn esplora_get(url: &str) -> String {
    let out = Command::new("curl").args(["-s", "-f", url]).output().unwrap();
    assert!(out.status.success(), "GET {url}");
    String::from_utf8(out.stdout).unwrap()
}

/// POST JSON to the local Bitcoin backend's controls.
fn esplora_post(url: &str, body: serde_json::Value) -> String {
    let out = Command::new("curl")
        .args(["-s", "-f", "-H", "Content-Type: application/json", "-d", &body.to_string(), url])
        .output()
        .unwrap();
    assert!(out.status.success(), "POST {url} {body}");
    String::from_utf8(out.stdout).unwrap()
}

/// Issue 24, through the real binary and the signer processes, on Bitcoin only (no anvil):
/// `strongroom dev` runs the local regtest backend (Bitcoin Core's consensus code on every
/// input). The faucet's payment into the hot wallet is credited to the treasury; the treasury
/// sweeps what is above the high mark to the 2-of-3 P2WSH cold wallet; a customer's deposit to
/// their own address (a child of the hot key) is credited after its confirmations, and one a
/// reorganisation drops before them never is; a withdrawal is built on the hot wallet's coins,
/// signed by two signer processes, mined and settled; the deposit address is swept into the
/// hot wallet; ledger and chain reconcile to the satoshi.
#[test]
fn dev_moves_bitcoin_through_the_signer_processes_to_the_satoshi() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("dev");
    let args = [
        "--no-ethereum",
        "--confirmations",
        "2",
        "--treasury",
        "--hot-btc-low",
        "0.1",
        "--hot-btc-target",
        "0.3",
        "--hot-btc-high",
        "0.5",
    ];
    let dev = start_dev_with(&data, &args, &[]);
    let chains: serde_json::Value =
        serde_json::from_slice(&std::fs::read(data.join("chains.json")).unwrap()).unwrap();
    let btc = &chains[0];
    assert_eq!((btc["kind"].as_str(), chains.as_array().unwrap().len()), (Some("bitcoin"), 1));
    let esplora = btc["rpc_url"].as_str().unwrap().to_owned();
    let hot = btc["wallets"][0][1].as_str().unwrap().to_owned();
    let cold = btc["wallets"][1][1].as_str().unwrap().to_owned();
    assert!(hot.starts_with("bcrt1q") && cold.starts_with("bcrt1q") && cold.len() == 64, "{btc}");
    let confirmed_sats = |address: &str| -> u64 {
        let utxos: serde_json::Value =
            serde_json::from_str(&esplora_get(&format!("{esplora}/address/{address}/utxo")))
                .unwrap();
        utxos
            .as_array()
            .unwrap()
            .iter()
            .filter(|u| u["status"]["confirmed"] == true)
            .map(|u| u["value"].as_u64().unwrap())
            .sum()
    };

    // The faucet's 1 BTC is above the 0.5 BTC mark: 0.7 BTC goes cold, through the nodes.
    wait_until("swept to cold", 300, &mut || {
        let v = api(&dev, "GET", "/v1/treasury", None);
        let a = v["assets"].as_array()?.iter().find(|a| a["asset"] == "BTC").cloned();
        let a = a.unwrap_or_default();
        let done = a["cold"] == "70000000" && a["action"] == "hold" && a["cold_address"] == cold;
        (!done).then(|| v.to_string())
    });
    assert_eq!(confirmed_sats(&cold), 70_000_000);
    let hot_after_sweep = confirmed_sats(&hot);
    assert!(
        (29_990_000..30_000_000).contains(&hot_after_sweep),
        "0.3 BTC less the sweep's fee stays hot: {hot_after_sweep}"
    );

    // A customer's deposit address: a child of the hot key, P2WPKH.
    let customer =
        api(&dev, "POST", "/v1/customers", Some(serde_json::json!({"external_id": "satoshi"})));
    let customer_id = customer["id"].as_str().unwrap().to_owned();
    let path = format!("/v1/customers/{customer_id}/deposit-address");
    let address = api(&dev, "POST", &path, Some(serde_json::json!({"asset": "BTC"})));
    let deposit_to = address["address"].as_str().unwrap().to_owned();
    assert!(deposit_to.starts_with("bcrt1q") && deposit_to != hot, "{address}");
    let balances = format!("/v1/customers/{customer_id}/balances");
    let btc_of = |b: &serde_json::Value, field: &str| -> String {
        b.as_array()
            .and_then(|l| l.iter().find(|x| x["asset"] == "BTC"))
            .map(|x| x[field].as_str().unwrap_or_default().to_owned())
            .unwrap_or_default()
    };
    let pay = |sats: u64| {
        esplora_post(
            &format!("{esplora}/regtest/fund"),
            serde_json::json!({"address": deposit_to, "sats": sats}),
        )
        .trim()
        .to_owned()
    };
    // Two payments: two coins at the address, so its sweep home spends two inputs, each
    // signed by the nodes in turn under the same governance.
    pay(15_000_000);
    pay(10_000_000);
    wait_until("deposits credited", 180, &mut || {
        let b = api(&dev, "GET", &balances, None);
        (btc_of(&b["data"], "available") != "25000000").then(|| b.to_string())
    });

    // A second deposit is mined, then a reorganisation replaces its block before its second
    // confirmation: it left the chain, and is never credited.
    let dropped = pay(5_000_000);
    wait_until("mined", 30, &mut || {
        let s = esplora_get(&format!("{esplora}/tx/{dropped}/status"));
        (!s.contains("\"confirmed\":true")).then_some(s)
    });
    // Replace every block from the one holding it (another may have been mined on top).
    let status_code = || {
        let out = Command::new("curl")
            .args(["-s", "-o", "/dev/null", "-w", "%{http_code}"])
            .arg(format!("{esplora}/tx/{dropped}/status"))
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    for _ in 0..5 {
        let status: serde_json::Value =
            serde_json::from_str(&esplora_get(&format!("{esplora}/tx/{dropped}/status"))).unwrap();
        let height = status["block_height"].as_u64().unwrap();
        let tip: u64 = esplora_get(&format!("{esplora}/blocks/tip/height")).trim().parse().unwrap();
        esplora_post(
            &format!("{esplora}/regtest/reorg"),
            serde_json::json!({"depth": tip - height + 1, "keep_transactions": false}),
        );
        if status_code() == "404" {
            break;
        }
    }
    assert_eq!(status_code(), "404", "the reorganisation dropped it");

    // The withdrawal: from the hot wallet's coins, signed by two signer processes.
    let dest = "bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080";
    let w = api(
        &dev,
        "POST",
        "/v1/withdrawals",
        Some(serde_json::json!({
            "customer_id": customer_id, "asset": "BTC", "destination": dest, "amount": "0.1",
        })),
    );
    let id = w["id"].as_str().unwrap_or_else(|| panic!("{w}")).to_owned();
    let mut done = serde_json::Value::Null;
    wait_until("withdrawal settled", 240, &mut || {
        done = api(&dev, "GET", &format!("/v1/withdrawals/{id}"), None);
        (done["state"] != "settled").then(|| done.to_string())
    });
    let txid = done["transaction"]["txid"].as_str().unwrap().to_owned();
    let tx: serde_json::Value =
        serde_json::from_str(&esplora_get(&format!("{esplora}/tx/{txid}"))).unwrap();
    assert_eq!(tx["status"]["confirmed"], true, "{tx}");
    let outputs: Vec<(String, u64)> = tx["vout"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| {
            (o["scriptpubkey_address"].as_str().unwrap().to_owned(), o["value"].as_u64().unwrap())
        })
        .collect();
    assert!(outputs.contains(&(dest.to_owned(), 10_000_000)), "{outputs:?}");
    assert!(outputs.iter().all(|(a, _)| a == dest || *a == hot), "change goes home: {outputs:?}");
    let fee = tx["fee"].as_u64().unwrap();
    assert!(fee > 0 && fee < 10_000, "{fee} sat");
    // The sweep to cold and the withdrawal (at least), each signed by two of the three nodes
    // with their shares of the hot key.
    let shares: Vec<usize> = (1..=3)
        .map(|n| {
            std::fs::read_to_string(data.join(format!("signers/signer-{n}/data/audit.jsonl")))
                .unwrap()
                .lines()
                .filter(|l| l.contains("signature.partial") && l.contains("key/hot-btc-wpkh-1"))
                .count()
        })
        .collect();
    assert!(
        shares.iter().sum::<usize>() >= 4 && shares.iter().filter(|n| **n > 0).count() >= 2,
        "{shares:?}"
    );

    // The customer has the first deposit less the withdrawal; the dropped one never came.
    let b = api(&dev, "GET", &balances, None);
    assert_eq!(btc_of(&b["data"], "available"), "15000000", "{b}");
    assert_eq!(btc_of(&b["data"], "pending"), "0", "{b}");

    // The deposit address is swept into the hot wallet by its own child key (once its coin
    // is as deep as a deposit's confirmations); the sweep's output is no deposit.
    wait_until("deposit address swept", 180, &mut || {
        let left = confirmed_sats(&deposit_to);
        let ours = confirmed_sats(&hot) + confirmed_sats(&cold);
        // Swept and mined: the coins left the address and arrived in the hot wallet (which,
        // above its high mark again, may have sent the excess on to cold): hot and cold hold
        // the faucet's coin and the deposits, less the withdrawal and a few fees.
        (left >= 10_000 || ours < 125_000_000 - 10_000_000 - 10_000)
            .then(|| format!("{left} sat left at {deposit_to}, {ours} in hot and cold"))
    });

    // Ledger and chain agree to the satoshi: hot + cold + the deposit address, every fee paid
    // from the treasury.
    wait_until("reconciled", 120, &mut || {
        let (ok, text) = reconcile(&data);
        (!(ok && text.contains("BTC") && text.contains("match") && !text.contains("in flight")))
            .then_some(text)
    });
    let b = api(&dev, "GET", &balances, None);
    assert_eq!(btc_of(&b["data"], "available"), "15000000", "swept, not credited again: {b}");
    assert_audit_intact(&data);
    drop(dev);
}

/// Issue 24, refill bundles made by the server: the dev hot wallet (1 BTC from the faucet) is
/// below its 2 BTC low mark, so the treasury asks for 2 BTC from the 2-of-3 P2WSH cold wallet
/// (`GET /v1/treasury/refills`), which cannot pay yet and says so; an approver approves
/// through `strongroom cold refill-approve` (the intent fetched, hashed and signed on the
/// approver's side); once the cold wallet holds coins the server makes the signing bundle,
/// `cold refill-bundle` fetches it, two of the dev owners sign it offline (their own homes,
/// pinned to the dev genesis, the wallet installed from its descriptor), and `cold send`
/// broadcasts what Bitcoin Core's consensus code accepts. The refill ends once the hot wallet
/// is above its low mark again; it is no deposit (custody does not change: the only
/// difference reconciliation sees is the outside payment into cold, which nobody credited),
/// and the change back to cold counts as cold.
#[test]
fn dev_refills_the_bitcoin_hot_wallet_from_cold_with_a_bundle_made_by_the_server() {
    use strongroom_cold::bundle::Bundle;
    use strongroom_cold::home::ColdHome;
    use strongroom_core::Env;

    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("dev");
    let args = [
        "--no-ethereum",
        "--confirmations",
        "1",
        "--treasury",
        "--hot-btc-low",
        "2",
        "--hot-btc-target",
        "3",
        "--hot-btc-high",
        "5",
    ];
    let dev = start_dev_with(&data, &args, &[]);
    let chains: serde_json::Value =
        serde_json::from_slice(&std::fs::read(data.join("chains.json")).unwrap()).unwrap();
    let esplora = chains[0]["rpc_url"].as_str().unwrap().to_owned();
    let hot = chains[0]["wallets"][0][1].as_str().unwrap().to_owned();
    let cold = chains[0]["wallets"][1][1].as_str().unwrap().to_owned();
    let envs = vec![
        ("STRONGROOM_ADDR", dev.url.clone()),
        ("STRONGROOM_CACERT", dev.ca.clone()),
        ("STRONGROOM_TOKEN_FILE", data.join("operator.token").to_str().unwrap().to_owned()),
    ];
    let run = |args: &[&str]| cli_with(args, &envs);
    let f = |name: &str| dir.path().join(name).to_str().unwrap().to_owned();

    // Asked for once, for what brings the hot wallet to its target; the cold wallet is empty.
    let mut refill = serde_json::Value::Null;
    wait_until("refill asked for", 240, &mut || {
        let page = api(&dev, "GET", "/v1/treasury/refills?open=true", None);
        refill = page["data"][0].clone();
        (refill["waiting_for"].is_null()).then(|| page.to_string())
    });
    let id = refill["id"].as_str().unwrap().to_owned();
    assert_eq!(
        (
            refill["state"].as_str(),
            refill["amount"].as_str(),
            refill["from_wallet"].as_str(),
            refill["to"].as_str()
        ),
        (Some("awaiting_approvals"), Some("200000000"), Some("cold-btc-1"), Some(hot.as_str())),
        "{refill}"
    );
    let why = refill["waiting_for"].as_str().unwrap().to_lowercase();
    assert!(why.contains("insufficient"), "the cold wallet cannot pay yet: {refill}");
    let (status, body) =
        call(&dev, "GET", &format!("/v1/treasury/refills/{id}/bundle"), Some(&dev.token), None);
    assert_eq!((status, body["error"]["code"].as_str()), (409, Some("refill_not_ready")), "{body}");
    std::thread::sleep(Duration::from_secs(2));
    let page = api(&dev, "GET", "/v1/treasury/refills", None);
    assert_eq!(page["data"].as_array().unwrap().len(), 1, "asked once: {page}");

    // An approver approves where they are: the server's intent, hashed on their side.
    let ann = data.join("governance").join("keys").join("ann.key");
    let (ok, out) = run(&[
        "cold",
        "refill-approve",
        &id,
        "--member",
        "ann",
        "--key",
        ann.to_str().unwrap(),
        "--yes",
    ]);
    assert!(ok && out.contains("ann approved under policy v1"), "{out}");
    assert!(out.contains("2 BTC (200000000 base units)"), "{out}");

    // Coins arrive in cold from outside; the server makes the bundle.
    esplora_post(
        &format!("{esplora}/regtest/fund"),
        serde_json::json!({"address": cold, "sats": 300_000_000u64}),
    );
    wait_until("bundle made", 120, &mut || {
        let r = api(&dev, "GET", &format!("/v1/treasury/refills/{id}"), None);
        (r["state"] != "ready" || r["bundle_ready"] != true).then(|| r.to_string())
    });
    let (ok, out) = run(&["cold", "refill-bundle", &id, "--out", &f("bundle.json")]);
    assert!(ok && out.contains("bundle written"), "{out}");
    let bundle = Bundle::from_json(&std::fs::read(f("bundle.json")).unwrap()).unwrap();
    assert_eq!(bundle.intent.destination.as_str(), hot);
    assert_eq!(
        bundle.approvals.iter().map(|a| a.approver.as_str()).collect::<Vec<_>>(),
        vec!["ann"]
    );

    // Two dev owners sign offline, each in a home of their own pinned to the dev genesis.
    let env = strongroom_core::SystemEnv::new();
    let gov = data.join("governance");
    let genesis: strongroom_governance::log::Genesis =
        serde_json::from_slice(&std::fs::read(gov.join("genesis.json")).unwrap()).unwrap();
    let pin = std::fs::read_to_string(gov.join("genesis.pin")).unwrap().trim().to_owned();
    let record: serde_json::Value =
        serde_json::from_slice(&std::fs::read(data.join("cold").join("bitcoin.json")).unwrap())
            .unwrap();
    let descriptor = record["descriptor"].as_str().unwrap();
    let chain = strongroom_units::ChainId::parse(strongroom_units::chain::BITCOIN_REGTEST).unwrap();
    let mut signed = Vec::new();
    for n in 1..=2 {
        let read = |ext: &str| {
            std::fs::read_to_string(data.join("cold").join(format!("owner-{n}.{ext}")))
                .unwrap()
                .trim()
                .to_owned()
        };
        let pass = strongroom_crypto::SecretString::new(read("passphrase"));
        let secret = ColdHome::open_backup(&read("backup"), &pass).unwrap();
        let mut home = ColdHome::create(
            &dir.path().join(format!("owner-{n}")),
            &secret,
            &pass,
            chain.clone(),
            genesis.clone(),
            &pin,
            &env,
        )
        .unwrap();
        home.install_wallet(strongroom_core::WalletId::parse("cold-btc-1").unwrap(), descriptor)
            .unwrap();
        let review = home.review(&bundle, env.now()).unwrap();
        assert!(review.words.contains("Send 2.00000000 BTC"), "{}", review.words);
        assert!(review.words.contains(&hot), "{}", review.words);
        let s = home.sign(&bundle, &review, &home.unlock(&pass).unwrap(), env.now()).unwrap();
        let path = f(&format!("signed-{n}.json"));
        std::fs::write(&path, s.to_json().unwrap()).unwrap();
        signed.push(path);
    }
    let (ok, out) = run(&[
        "cold",
        "send",
        "--esplora",
        &esplora,
        "--bundle",
        &signed[0],
        "--bundle",
        &signed[1],
    ]);
    assert!(ok, "{out}");
    let txid = out.trim().lines().last().unwrap().to_owned();
    let tx: serde_json::Value =
        serde_json::from_str(&esplora_get(&format!("{esplora}/tx/{txid}"))).unwrap();
    let fee = tx["fee"].as_u64().unwrap();
    assert!(tx["vout"]
        .as_array()
        .unwrap()
        .iter()
        .any(|o| o["scriptpubkey_address"] == hot.as_str() && o["value"] == 200_000_000u64));

    // It arrives: the refill is done, the hot wallet at its target, and the change is cold.
    wait_until("refill done", 180, &mut || {
        let r = api(&dev, "GET", &format!("/v1/treasury/refills/{id}"), None);
        (r["state"] != "done").then(|| r.to_string())
    });
    // (The change address is read at most every 30 s.)
    wait_until("treasury after the refill", 120, &mut || {
        let v = api(&dev, "GET", "/v1/treasury", None);
        let a = v["assets"].as_array()?.iter().find(|a| a["asset"] == "BTC").cloned()?;
        let want_cold = (100_000_000 - fee).to_string();
        (a["hot"] != "300000000" || a["cold"] != want_cold.as_str()).then(|| v.to_string())
    });
    // No deposit: the ledger moved nothing; the chain holds the 3 BTC paid into cold from
    // outside (credited to nobody) less the refill's fee, which the treasury did not pay.
    let json = Command::new(BIN)
        .args(["reconcile", "--data-dir", data.to_str().unwrap(), "--output", "json"])
        .output()
        .unwrap();
    let report: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    let btc =
        report["assets"].as_array().unwrap().iter().find(|a| a["asset"] == "BTC").cloned().unwrap();
    let (ledger, on_chain): (u64, u64) = (
        btc["ledger"].as_str().unwrap().parse().unwrap(),
        btc["chain"].as_str().unwrap().parse().unwrap(),
    );
    assert_eq!(btc["chain_id"], strongroom_units::chain::BITCOIN_REGTEST, "{report}");
    assert_eq!(on_chain - ledger, 300_000_000 - fee, "{report}");
    assert_audit_intact(&data);
    drop(dev);
}
