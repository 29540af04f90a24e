#![allow(dead_code)]
//! Shared by the cold tests: the governance they run under (admins, approvers, a policy
//! that lets cold movements through with two approvals), approvals, and running the real
//! `strongroom-cold` binary, in a network namespace with no interfaces when asked.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use ed25519_dalek::SigningKey;
use strongroom_cold::bundle::Bundle;
use strongroom_core::{Intent, Timestamp};
use strongroom_governance::approval::Approval;
use strongroom_governance::log::{replay, Change, Entry, Genesis, MemberSpec};
use strongroom_governance::policy::Policy;
use strongroom_governance::Role;

pub const BIN: &str = env!("CARGO_BIN_EXE_strongroom-cold");
const POLICY: &str = r#"
version = 1
[[rules]]
name = "cold-needs-two"
when = { tier = "cold" }
action = { kind = "approvals", count = 2, roles = ["approver"] }
[[rules]]
name = "nothing-else"
action = { kind = "block", reason = "this test signs cold movements only" }
"#;

pub fn netns_available() -> bool {
    let ok = Command::new("unshare").args(["--net", "true"]).status().is_ok_and(|s| s.success());
    if !ok && std::env::var("STRONGROOM_REQUIRE_NETNS").is_ok_and(|v| v == "1") {
        panic!("STRONGROOM_REQUIRE_NETNS=1 but `unshare --net` fails (it needs root)");
    }
    ok
}

/// The Python of tools/interop (`scripts/install-interop-tools`: embit, an independent
/// Bitcoin implementation) from `STRONGROOM_INTEROP_PYTHON` or `tools/interop/.venv`. Without
/// it the test is skipped, unless `STRONGROOM_REQUIRE_INTEROP` is set (CI): then it fails.
#[allow(clippy::print_stderr)] // why a test was skipped
pub fn interop_python() -> Option<std::path::PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let python = std::env::var("STRONGROOM_INTEROP_PYTHON")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| root.join("tools/interop/.venv/bin/python"));
    let ok = Command::new(&python)
        .args(["-c", "import embit"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        assert!(
            std::env::var_os("STRONGROOM_REQUIRE_INTEROP").is_none(),
            "embit is missing: run scripts/install-interop-tools"
        );
        eprintln!("skipping: no embit (scripts/install-interop-tools)");
        return None;
    }
    Some(python)
}

pub fn key(n: u8) -> SigningKey {
    SigningKey::from_bytes(&[n; 32])
}

pub const MEMBERS: [(&str, u8, Role); 5] = [
    ("ada", 1, Role::Admin),
    ("bob", 2, Role::Admin),
    ("ann", 3, Role::Approver),
    ("ops", 4, Role::Approver),
    ("eve", 5, Role::Operator),
];

pub struct Gov {
    pub genesis: Genesis,
    pub pin: String,
    pub log: Vec<Entry>,
}

pub fn governance(now: Timestamp) -> Gov {
    let genesis = Genesis {
        members: MEMBERS
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
        created_at: Timestamp::from_unix_ms(now.unix_ms() - 60_000),
        assets: vec![
            strongroom_governance::log::AssetSpec {
                chain: "bip122:0f9188f13cb7b2c71f2a335e3a4fc328".into(),
                symbol: "BTC".into(),
                decimals: 8,
                contract: None,
            },
            strongroom_governance::log::AssetSpec {
                chain: "eip155:31337".into(),
                symbol: "ETH".into(),
                decimals: 18,
                contract: None,
            },
        ],
    };
    let pin = hex::encode(genesis.hash().unwrap());
    let state = replay(&genesis, &pin, &[], now).unwrap();
    let policy = Policy::from_toml(POLICY).unwrap();
    let mut e = state
        .propose(Change::SetPolicy { policy }, Timestamp::from_unix_ms(now.unix_ms() - 30_000));
    e.sign("ada", &key(1)).unwrap();
    e.sign("bob", &key(2)).unwrap();
    Gov { genesis, pin, log: vec![e] }
}

pub fn approve(who: &str, n: u8, intent: &Intent, now: Timestamp) -> Approval {
    Approval::sign(
        who,
        &key(n),
        &intent.hash().unwrap(),
        1,
        Timestamp::from_unix_ms(now.unix_ms() + 3_600_000),
    )
}

pub struct Out {
    pub ok: bool,
    /// The exit code: 0 done, 1 refused (a finding), 2 could not run, 64 a wrong command line.
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

/// Run `strongroom-cold args`, inside a fresh network namespace when `netns`, with `stdin`.
/// In a namespace it first lists the network interfaces it can see, on one line.
pub fn cold(netns: bool, args: &[&str], stdin: &str) -> Out {
    let mut cmd = if netns {
        let mut c = Command::new("unshare");
        c.args(["--net", "--", "sh", "-c", "echo \"interfaces: $(awk -F: 'NR>2 {gsub(/ /, \"\", $1); printf \"%s \", $1}' /proc/self/net/dev)\"; exec \"$0\" \"$@\"", BIN]);
        c
    } else {
        Command::new(BIN)
    };
    let mut child = cmd
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    Out {
        ok: out.status.success(),
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

pub fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

pub fn write_bundle(path: &Path, b: &Bundle) {
    std::fs::write(path, b.to_json().unwrap()).unwrap();
}

/// `strongroom-cold sign` in a network namespace, with `--yes` when `yes` (stdin is a pipe:
/// without `--yes` it must stop and ask for it).
pub fn sign_offline(home: &Path, input: &Path, out: &Path, pass: &Path, yes: bool) -> Out {
    let mut args =
        vec!["sign", "--home", p(home), "--in", p(input), "--out", p(out), "--passphrase-file"];
    args.push(p(pass));
    if yes {
        args.push("--yes");
    }
    cold(true, &args, "")
}

/// `strongroom-cold init` in a network namespace.
pub fn init_offline(home: &Path, chain: &str, genesis: &Path, pin: &str, pass: &Path) -> Out {
    cold(
        true,
        &[
            "init",
            "--home",
            p(home),
            "--chain",
            chain,
            "--genesis",
            p(genesis),
            "--pin",
            pin,
            "--passphrase-file",
            p(pass),
        ],
        "",
    )
}

/// `bundle` offered to the signer at `home` (in a namespace, with `--yes` when `yes`) is
/// refused with a message containing `why`, and no signed bundle is written. Returns the
/// exit code: 1 for a refusal of the bundle, 2 when it could not run.
pub fn refused_offline(
    dir: &Path,
    home: &Path,
    pass: &Path,
    bundle: &Bundle,
    yes: bool,
    why: &str,
) -> Option<i32> {
    let f = dir.join("offered.json");
    let out = dir.join("never.json");
    write_bundle(&f, bundle);
    let o = sign_offline(home, &f, &out, pass, yes);
    assert!(!o.ok, "signed: {}", o.stdout);
    assert!(o.stderr.contains(why), "expected {why:?}, got: {}", o.stderr);
    assert!(!out.exists());
    o.code
}

/// `strongroom-cold sign --yes` of `bundle` at `home` in a network namespace: it
/// must run with only a loopback interface, show each of `words`, and write a bundle signed
/// by one more key, which is returned.
pub fn sign_showing(home: &Path, bundle: &Path, out: &Path, pass: &Path, words: &[&str]) -> Bundle {
    let o = sign_offline(home, bundle, out, pass, true);
    assert!(o.ok, "{}\n{}", o.stdout, o.stderr);
    assert!(o.stdout.starts_with("interfaces: lo \n"), "{}", o.stdout);
    for w in words {
        assert!(o.stdout.contains(w), "{w:?} not shown in:\n{}", o.stdout);
    }
    let signed = Bundle::from_json(&std::fs::read(out).unwrap()).unwrap();
    let before = Bundle::from_json(&std::fs::read(bundle).unwrap()).unwrap();
    assert_eq!(signed.signed_by.len(), before.signed_by.len() + 1);
    signed
}

/// Three key holders, each with a passphrase file and an offline home made by
/// `strongroom-cold init` in a network namespace (checked: loopback only, the seed on disk
/// only sealed), under the genesis in `dir/genesis.json`.
pub struct Holders {
    pub genesis_file: std::path::PathBuf,
    pub homes: Vec<std::path::PathBuf>,
    pub passes: Vec<std::path::PathBuf>,
    /// What each `init` printed: the account key (Bitcoin) or the owner address (Ethereum).
    pub keys: Vec<String>,
}

pub fn key_holders(dir: &Path, chain: &str, gov: &Gov) -> Holders {
    let genesis_file = dir.join("genesis.json");
    std::fs::write(&genesis_file, serde_json::to_vec(&gov.genesis).unwrap()).unwrap();
    let homes: Vec<_> = (1..=3).map(|i| dir.join(format!("holder-{i}"))).collect();
    let passes: Vec<_> = (1..=3).map(|i| dir.join(format!("pass-{i}"))).collect();
    let mut keys = Vec::new();
    for (i, (home, pass)) in homes.iter().zip(&passes).enumerate() {
        std::fs::write(pass, format!("holder {i} passphrase, long enough\n")).unwrap();
        let o = init_offline(home, chain, &genesis_file, &gov.pin, pass);
        assert!(o.ok, "{}", o.stderr);
        assert!(
            o.stdout.starts_with("interfaces: lo \n"),
            "a namespace with loopback only: {}",
            o.stdout
        );
        let sealed = std::fs::read_to_string(home.join("key.sealed")).unwrap();
        assert!(sealed.starts_with("strongroom-sealed-v1:cold-key:m=65536,t=3,p=4:"));
        keys.push(o.stdout.lines().nth(1).unwrap().to_owned());
    }
    Holders { genesis_file, homes, passes, keys }
}
