#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]
//! The `strongroom` command line as people and scripts use it, with the real binary: help
//! text on every subcommand and flag, shell completions, `--output json`, the exit codes and
//! the prompts that need a terminal. Fast: no dev stack (the tests that start one check the
//! rest, e.g. `dev_serves_tls13_only_and_audit_verify_catches_a_hand_edit` in cli.rs).

use std::process::{Command, Output, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_strongroom");

fn run(args: &[&str]) -> Output {
    Command::new(BIN).args(args).stdin(Stdio::null()).output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// One entry of a help section: what it names (a subcommand, `--flag <V>`, `<ARG>`) and the
/// help text given for it.
#[derive(Debug)]
struct Entry {
    section: String,
    spec: String,
    help: String,
}

/// The entries of `Commands:`, `Arguments:`, `Options:` (and any other heading) in clap's
/// help output, whether their help is on the same line or on the lines below.
fn entries(help: &str) -> Vec<Entry> {
    let mut out: Vec<Entry> = Vec::new();
    let mut section = String::new();
    for line in help.lines() {
        if line.trim().is_empty() {
            continue;
        }
        let indent = line.len() - line.trim_start().len();
        if indent == 0 {
            section = line.trim_end_matches(':').to_owned();
            if section.starts_with("Usage") {
                section.clear();
            }
            continue;
        }
        if section.is_empty() {
            continue;
        }
        let rest = line.trim();
        // An entry starts two spaces in (six for a flag with no short form); its help
        // follows two or more spaces later, or on the lines below, indented further.
        if indent == 2 || (indent == 6 && rest.starts_with("--")) {
            let (spec, help) = match rest.find("  ") {
                Some(i) => (rest[..i].to_owned(), rest[i..].trim().to_owned()),
                None => (rest.to_owned(), String::new()),
            };
            out.push(Entry { section: section.clone(), spec, help });
        } else if let Some(last) = out.last_mut() {
            last.help.push(' ');
            last.help.push_str(rest);
        }
    }
    out
}

/// Help text without what clap adds by itself: `[default: …]`, `[env: …]`, `[possible
/// values: …]`, `[aliases: …]`, and a "Possible values:" list.
fn own_words(help: &str) -> String {
    let mut h = help.split("Possible values:").next().unwrap_or("").trim().to_owned();
    while let Some(start) = h.rfind('[') {
        let tag = &h[start..];
        let known = ["[default:", "[env:", "[possible values:", "[aliases:", "[short aliases:"];
        if h.ends_with(']') && known.iter().any(|k| tag.starts_with(k)) {
            h.truncate(start);
            h = h.trim_end().to_owned();
        } else {
            break;
        }
    }
    h
}

/// Walk `strongroom PATH -h` for every subcommand: every subcommand, argument and flag must
/// say what it is.
fn walk(path: &mut Vec<String>, seen: &mut Vec<String>, bare: &mut Vec<String>) {
    let mut args: Vec<&str> = path.iter().map(String::as_str).collect();
    args.push("-h");
    let out = run(&args);
    assert!(out.status.success(), "strongroom {}: {}", args.join(" "), text(&out.stderr));
    let help = text(&out.stdout);
    let about = help.split("\nUsage:").next().unwrap_or("").trim();
    if about.is_empty() {
        bare.push(format!("strongroom {} (no description)", path.join(" ")));
    }
    for e in entries(&help) {
        let name = format!("strongroom {} {}", path.join(" "), e.spec);
        seen.push(name.clone());
        if own_words(&e.help).is_empty() {
            bare.push(name);
        }
        if e.section == "Commands" {
            let sub = e.spec.split([' ', ',']).next().unwrap_or("").to_owned();
            if sub != "help" {
                path.push(sub);
                walk(path, seen, bare);
                path.pop();
            }
        }
    }
}

#[test]
fn every_subcommand_and_flag_has_help() {
    let (mut seen, mut bare) = (Vec::new(), Vec::new());
    walk(&mut Vec::new(), &mut seen, &mut bare);
    assert!(bare.is_empty(), "without help text:\n{}", bare.join("\n"));
    // The walk went everywhere: a few of the leaves, flags and positional arguments.
    for expected in [
        "strongroom governance propose whitelist-add --label <LABEL>",
        "strongroom withdrawal approve --yes",
        "strongroom audit verify --database-url <DATABASE_URL>",
        "strongroom audit verify-node <FILE>",
        "strongroom mpc keygen --scheme <SCHEME>",
        "strongroom completions <SHELL>",
    ] {
        assert!(seen.iter().any(|s| s == expected), "{expected} not seen in:\n{}", seen.join("\n"));
    }
    assert!(seen.len() > 300, "only {} entries seen", seen.len());
}

#[test]
fn the_help_parser_notices_a_flag_without_help() {
    let help = "About\n\nUsage: x [OPTIONS]\n\nCommands:\n  a     Does a\n  b\n\nOptions:\n      \
                --data-dir <D>  [default: .x]\n      --yes\n          Do not ask\n      \
                --scheme <S>\n          Possible values:\n          - ecdsa: Threshold ECDSA\n";
    let bare: Vec<String> = entries(help)
        .into_iter()
        .filter(|e| own_words(&e.help).is_empty())
        .map(|e| e.spec)
        .collect();
    assert_eq!(bare, ["b", "--data-dir <D>", "--scheme <S>"]);
}

#[test]
fn completions_name_the_subcommands() {
    let out = run(&["completions", "bash"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let script = text(&out.stdout);
    assert!(
        script.contains("_strongroom()"),
        "a bash function: {}",
        &script[..200.min(script.len())]
    );
    for word in ["governance", "withdrawal", "reconcile", "verify-node", "--output", "--yes"] {
        assert!(script.contains(word), "{word} not in the bash script");
    }
    for shell in ["zsh", "fish"] {
        let out = run(&["completions", shell]);
        assert!(out.status.success() && text(&out.stdout).contains("governance"), "{shell}");
    }
}

/// 64 for a wrong command line (clap's errors and those found later), 0 for help.
#[test]
fn a_wrong_command_line_exits_64() {
    assert_eq!(run(&["--help"]).status.code(), Some(0));
    assert_eq!(run(&["--version"]).status.code(), Some(0));
    for args in [
        &["governnace", "show"][..],
        &["token", "create", "--name", "x", "--role", "root"],
        &["audit", "verify", "--no-such-flag"],
        &["completions", "tcsh"],
        &["signer"],
        // A command that prints nothing as JSON says so rather than print text.
        &["--output", "json", "risk", "eval", "x.csv"],
        &["--output", "yaml", "governance", "show"],
    ] {
        let out = run(args);
        assert_eq!(out.status.code(), Some(64), "{args:?}: {}", text(&out.stderr));
        assert!(out.stdout.is_empty(), "{args:?}: {}", text(&out.stdout));
    }
}

/// 2 when the command could not run: no database, an API nobody answers.
#[test]
fn a_command_that_cannot_run_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let out = run(&["audit", "verify", "--data-dir", d]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("run `strongroom dev` first"));

    // An API on a port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    // Any certificate will do as the CA: nothing answers to check it against.
    assert!(run(&["certificate", "--dir", d, "--name", "ca"]).status.success());
    let ca = dir.path().join("ca.pem");
    let token = dir.path().join("token");
    std::fs::write(&token, "srt_0000000000000000_00\n").unwrap();
    let api = format!("https://127.0.0.1:{port}");
    for json in [false, true] {
        let mut args = vec!["governance", "show", "--api", &api, "--cacert"];
        args.extend([ca.to_str().unwrap(), "--token-file", token.to_str().unwrap()]);
        if json {
            args.extend(["--output", "json"]);
        }
        let out = run(&args);
        assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
        assert!(text(&out.stderr).contains("calling the API"), "{}", text(&out.stderr));
        assert!(out.stdout.is_empty(), "nothing on stdout: {}", text(&out.stdout));
    }
}

/// Commands that ask fail at once when there is no terminal to ask on and no `--yes`,
/// before they read a key or call the server (exit 2); their help names `--yes`.
#[test]
fn prompts_without_a_terminal_need_yes() {
    let id = "00000000-0000-4000-8000-000000000001";
    let cases: [(&[&str], &str); 5] = [
        (
            &["withdrawal", "approve", id, "--member", "ann", "--key", "/nonexistent"],
            "withdrawal approve",
        ),
        (&["governance", "sign", "--member", "ada", "--key", "/nonexistent"], "governance sign"),
        (
            &[
                "cold",
                "approve",
                "--intent",
                "/nonexistent",
                "--governance",
                "/nonexistent",
                "--member",
                "ann",
                "--key",
                "/nonexistent",
                "--out",
                "/nonexistent",
            ],
            "cold approve",
        ),
        (&["drill", "drain", "--data-dir", "/nonexistent"], "drill drain"),
        (&["drill", "lost-node", "--data-dir", "/nonexistent"], "drill lost-node"),
    ];
    for (args, name) in cases {
        let out = run(args);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        let expected =
            format!("`strongroom {name}` needs confirmation: pass --yes (stdin is not a terminal)");
        assert!(err.contains(&expected), "{args:?}: {err}");
        assert!(out.stdout.is_empty(), "{args:?}: {}", text(&out.stdout));
        let mut help = args[..2].to_vec();
        help.push("--help");
        assert!(text(&run(&help).stdout).contains("--yes"), "{name} --help names --yes");
    }
    // A file-based sign asks nothing: it goes on to read the key (and fails on that).
    let out = run(&["governance", "sign", "--dir", "/nonexistent", "--member", "a", "--key", "/x"]);
    assert!(!text(&out.stderr).contains("needs confirmation"), "{}", text(&out.stderr));
}

/// `--output json`: one JSON document on stdout and nothing else there, for a command that
/// works on files alone (a governance folder).
#[test]
fn output_json_is_one_document_on_stdout() {
    let dir = tempfile::tempdir().unwrap();
    let json = |args: &[&str]| -> serde_json::Value {
        let out = run(&[&["--output", "json"], args].concat());
        assert_eq!(out.status.code(), Some(0), "{args:?}: {}", text(&out.stderr));
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!("{args:?}: not one JSON document ({e}):\n{}", text(&out.stdout))
        })
    };
    let key = |id: &str| dir.path().join(format!("{id}.key")).to_str().unwrap().to_owned();
    let mut members = Vec::new();
    for (id, role) in [("ada", "admin"), ("bob", "admin"), ("sec", "security_officer")] {
        let made = json(&["governance", "keygen", "--out", &key(id)]);
        let public = made["public_key"].as_str().unwrap();
        assert_eq!(public.len(), 64, "{made}");
        members.push(format!("{id}:{public}:{role}"));
    }
    let gov = dir.path().join("gov");
    let g = gov.to_str().unwrap();
    let mut init = vec!["governance", "init", "--dir", g, "--quorum", "2"];
    for m in &members {
        init.extend(["--member", m.as_str()]);
    }
    init.extend(["--asset", "eip155:1:ETH:18"]);
    let made = json(&init);
    let pin = std::fs::read_to_string(gov.join("genesis.pin")).unwrap();
    assert_eq!(made["pin"], pin.trim());

    // A freeze proposed and signed by the security officer alone (files ask nothing).
    let proposed = json(&["governance", "propose", "--dir", g, "freeze", "--scope", "global"]);
    assert_eq!(proposed["entry"], 1);
    let signed = json(&["governance", "sign", "--dir", g, "--member", "sec", "--key", &key("sec")]);
    assert_eq!(signed["signatures"], 1, "{signed}");
    let pending = json(&["governance", "show", "--dir", g]);
    assert_eq!(pending["pending"]["signed_by"], serde_json::json!(["sec"]), "{pending}");
    let committed = json(&["governance", "commit", "--dir", g]);
    assert_eq!(committed["entry"], 1);

    let shown = json(&["governance", "show", "--dir", g]);
    assert_eq!(shown["entries"], 1, "{shown}");
    assert_eq!(shown["quorum"], 2);
    assert_eq!(shown["freezes"], serde_json::json!(["global"]));
    assert_eq!(shown["members"].as_array().unwrap().len(), 3);
    assert_eq!(shown["members"][0]["id"], "ada");
    assert_eq!(shown["assets"][0]["symbol"], "ETH");
    assert!(shown["at"]["utc"].as_str().unwrap().ends_with('Z'), "{shown}");
    assert!(shown.get("pending").is_none(), "{shown}");

    // The text output is unchanged.
    let out = run(&["governance", "show", "--dir", g]);
    let t = text(&out.stdout);
    assert!(t.starts_with("entries: 1 (head ") && t.contains("frozen: global"), "{t}");

    // A certificate's pin, as text and as JSON.
    let d = dir.path().to_str().unwrap();
    let pin = text(&run(&["certificate", "--dir", d, "--name", "pusher-ada"]).stdout);
    let cert = json(&["certificate", "--dir", d, "--name", "pusher-ada"]);
    assert_eq!(cert["pin"], pin.trim());

    // The key holders' file commands: the intent's hash and the relayer's address as JSON,
    // the lines for people on stderr.
    let intent = dir.path().join("intent.json");
    let args = [
        "cold",
        "intent",
        "--chain",
        "eip155:1",
        "--asset",
        "ETH",
        "--decimals",
        "18",
        "--wallet",
        "cold-eth-1",
        "--to",
        "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed",
        "--amount",
        "1.5",
        "--fee-cap",
        "1000000000000000",
        "--out",
        intent.to_str().unwrap(),
    ];
    let made = json(&args);
    let written: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&intent).unwrap()).unwrap();
    assert_eq!(made["out"], intent.to_str().unwrap());
    assert_eq!(made["intent_hash"].as_str().unwrap().len(), 64, "{made}");
    assert_eq!(written["amount"], "1500000000000000000", "{written}");
    let out = run(&[&["--output", "json"], &args[..]].concat());
    assert_eq!(out.status.code(), Some(0));
    assert!(text(&out.stderr).contains("intent hash"), "{}", text(&out.stderr));
    let relayer = dir.path().join("relayer.key");
    let made = json(&["cold", "relayer-key", "--out", relayer.to_str().unwrap()]);
    assert!(made["address"].as_str().unwrap().starts_with("0x"), "{made}");
    assert!(relayer.exists());
}
