#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)] // Test code.
#![allow(clippy::print_stdout)] // Test code: says when it skips, and the timings.
#![allow(clippy::disallowed_methods)] // Test code: deadlines on the wall clock.
//! Alert e-mail (`strongroom_runtime::mail`, lettre underneath) against a real SMTP server:
//! aiosmtpd (Debian's python3-aiosmtpd, `scripts/install-smtp-for-tests`) run by
//! `tests/smtp_server.py` in each mode, with a PKI made here by rcgen. Each test is skipped
//! when aiosmtpd is missing, and fails then under STRONGROOM_REQUIRE_SMTP=1 (as in CI).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use strongroom_runtime::mail::{Login, MailError, Smtp, SmtpOptions, Tls};
use strongroom_runtime::settings::SmtpSettings;
use zeroize::Zeroizing;

const PYTHON: &str = "/usr/bin/python3";
const USER: &str = "alerts";
const PASSWORD: &str = "correct-horse-battery-staple";

/// A CA, a server certificate it issued (for `localhost` and 127.0.0.1), another it issued
/// for some other name, and a second CA that issued nothing the server has.
struct Pki {
    _dir: tempfile::TempDir,
    ca: PathBuf,
    other_ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
    elsewhere_cert: PathBuf,
    elsewhere_key: PathBuf,
}

fn pki() -> Pki {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, SanType};
    let dir = tempfile::tempdir().unwrap();
    let ca = |name: &str| {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        let cert = params.self_signed(&key).unwrap();
        (cert, key)
    };
    let (ca_cert, ca_key) = ca("Strongroom mail test CA");
    let (other_cert, _) = ca("Someone else's CA");
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
    params.subject_alt_names.push(SanType::IpAddress(std::net::Ipv4Addr::LOCALHOST.into()));
    let cert = params.signed_by(&key, &ca_cert, &ca_key).unwrap();
    let elsewhere_key = KeyPair::generate().unwrap();
    let params = CertificateParams::new(vec!["smtp.example.com".to_owned()]).unwrap();
    let elsewhere = params.signed_by(&elsewhere_key, &ca_cert, &ca_key).unwrap();
    let write = |name: &str, text: String| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    };
    Pki {
        ca: write("ca.pem", ca_cert.pem()),
        other_ca: write("other-ca.pem", other_cert.pem()),
        cert: write("server.pem", cert.pem()),
        key: write("server-key.pem", key.serialize_pem()),
        elsewhere_cert: write("elsewhere.pem", elsewhere.pem()),
        elsewhere_key: write("elsewhere-key.pem", elsewhere_key.serialize_pem()),
        _dir: dir,
    }
}

/// aiosmtpd in one mode, spooling what it receives; killed when dropped.
struct Server {
    child: Child,
    port: u16,
    spool: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

impl Server {
    /// `tls`: "none", "starttls" (required before anything else) or "implicit"; `login`:
    /// AUTH required, as USER with PASSWORD.
    fn start(tls: &str, pki: Option<&Pki>, login: bool) -> Option<Server> {
        Server::start_with(tls, pki.map(|p| (p.cert.as_path(), p.key.as_path())), login)
    }

    /// As [`Server::start`], with this certificate and key.
    fn start_with(tls: &str, cert: Option<(&Path, &Path)>, login: bool) -> Option<Server> {
        let ok = Command::new(PYTHON)
            .args(["-c", "import aiosmtpd"])
            .output()
            .is_ok_and(|o| o.status.success());
        if !ok {
            assert!(
                std::env::var_os("STRONGROOM_REQUIRE_SMTP").is_none(),
                "STRONGROOM_REQUIRE_SMTP is set but aiosmtpd is not installed"
            );
            println!("SKIPPED e-mail: no aiosmtpd (scripts/install-smtp-for-tests)");
            return None;
        }
        let spool = tempfile::tempdir().unwrap();
        let port = free_port();
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/smtp_server.py");
        let mut cmd = Command::new(PYTHON);
        cmd.arg(script)
            .args(["--listen", &format!("127.0.0.1:{port}"), "--tls", tls])
            .arg("--spool")
            .arg(spool.path());
        if let Some((cert, key)) = cert {
            cmd.arg("--cert").arg(cert).arg("--key").arg(key);
        }
        if login {
            cmd.args(["--user", USER, "--password", PASSWORD]);
        }
        let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::inherit()).spawn().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let server = Server { child, port, spool };
        let line = rx.recv_timeout(Duration::from_secs(20)).expect("aiosmtpd did not start");
        assert_eq!(line.trim(), "ready", "aiosmtpd did not start");
        Some(server)
    }

    /// The messages received, as spooled (X-Test-* lines first).
    fn messages(&self) -> Vec<String> {
        let mut names: Vec<PathBuf> = std::fs::read_dir(self.spool.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "eml"))
            .collect();
        names.sort();
        names.iter().map(|p| std::fs::read_to_string(p).unwrap()).collect()
    }
}

fn options(relay: String, tls: Tls, ca: Option<&Path>, password: Option<&str>) -> SmtpOptions {
    let mut o = SmtpOptions::local(relay, "Strongroom Alerts <alerts@example.com>");
    o.tls = tls;
    o.ca_file = ca.map(Path::to_path_buf);
    o.login = password.map(|p| Login::new(USER, Zeroizing::new(p.to_owned())));
    o.timeout = Duration::from_secs(10);
    o
}

fn team() -> Vec<String> {
    vec!["team@example.com".to_owned(), "oncall@example.net".to_owned()]
}

const TEXT: &str = "Strongroom security alert: sanctions_hit\n\n.a line that starts with a dot\n{\n  \"amount\": \"1.5 ETH\"\n}\n";

/// One message, as the server spooled it: envelope, headers and body.
fn check_message(m: &str, tls: bool, login: bool) {
    let (head, body) = m.split_once("\r\n\r\n").unwrap_or_else(|| panic!("no body: {m}"));
    let has = |line: &str| head.lines().any(|l| l == line);
    assert!(has("X-Test-Mail-From: alerts@example.com"), "{head}");
    assert!(has("X-Test-Rcpt-To: team@example.com, oncall@example.net"), "{head}");
    assert!(has(&format!("X-Test-Tls: {}", if tls { "yes" } else { "no" })), "{head}");
    assert!(has(&format!("X-Test-Login: {}", if login { USER } else { "" })), "{head}");
    assert!(has("From: \"Strongroom Alerts\" <alerts@example.com>"), "{head}");
    assert!(has("To: team@example.com, oncall@example.net"), "{head}");
    assert!(has("Subject: [Strongroom] sanctions hit"), "{head}");
    assert!(has("Content-Type: text/plain; charset=utf-8"), "{head}");
    let date = head.lines().find_map(|l| l.strip_prefix("Date: ")).expect("a Date header");
    assert!(date.ends_with("+0000") && date.len() > 25, "RFC 5322 date: {date}");
    let id = head.lines().find_map(|l| l.strip_prefix("Message-ID: ")).expect("a Message-ID");
    assert!(id.starts_with('<') && id.ends_with('>') && id.contains('@'), "{id}");
    assert_eq!(body, TEXT.replace('\n', "\r\n"), "the body, dot-stuffing undone by the server");
}

#[tokio::test]
async fn plain_to_a_local_relay() {
    let Some(server) = Server::start("none", None, false) else { return };
    let t = Instant::now();
    let smtp = Smtp::new(options(format!("127.0.0.1:{}", server.port), Tls::None, None, None));
    smtp.unwrap().send(&team(), "[Strongroom] sanctions hit", TEXT).await.unwrap();
    println!("plain: sent in {:?}", t.elapsed());
    let messages = server.messages();
    assert_eq!(messages.len(), 1);
    check_message(&messages[0], false, false);

    // The caller's clock, when it gives one, dates the message; two messages, two ids.
    let smtp =
        Smtp::new(options(format!("127.0.0.1:{}", server.port), Tls::None, None, None)).unwrap();
    let date = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    smtp.send_at(&team(), "[Strongroom] sanctions hit", TEXT, date).await.unwrap();
    let messages = server.messages();
    assert_eq!(messages.len(), 2);
    assert!(
        messages[1].contains("\r\nDate: Tue, 14 Nov 2023 22:13:20 +0000\r\n"),
        "{}",
        messages[1]
    );
    let id = |m: &str| m.lines().find(|l| l.starts_with("Message-ID: ")).unwrap().to_owned();
    assert_ne!(id(&messages[0]), id(&messages[1]));
}

#[tokio::test]
async fn starttls_with_login_under_the_given_ca() {
    let pki = pki();
    let Some(server) = Server::start("starttls", Some(&pki), true) else { return };
    let relay = format!("localhost:{}", server.port);
    let t = Instant::now();
    let smtp = Smtp::new(options(relay.clone(), Tls::StartTls, Some(&pki.ca), Some(PASSWORD)));
    smtp.unwrap().send(&team(), "[Strongroom] sanctions hit", TEXT).await.unwrap();
    println!("STARTTLS + AUTH: sent in {:?}", t.elapsed());
    let messages = server.messages();
    assert_eq!(messages.len(), 1);
    check_message(&messages[0], true, true);

    // A wrong password: an error that names authentication, and not the password.
    let smtp = Smtp::new(options(relay.clone(), Tls::StartTls, Some(&pki.ca), Some("wrong-guess")));
    let e = smtp.unwrap().send(&team(), "s", "t").await.unwrap_err();
    assert!(matches!(e, MailError::Authentication { .. }), "{e:?}");
    let text = e.to_string();
    println!("wrong password: {text}");
    assert!(text.contains("authentication as alerts refused"), "{text}");
    assert!(!text.contains("wrong-guess") && !format!("{e:?}").contains("wrong-guess"), "{text}");

    // No login where the relay requires one: refused by the relay, nothing sent.
    let smtp = Smtp::new(options(relay, Tls::StartTls, Some(&pki.ca), None)).unwrap();
    let e = smtp.send(&team(), "s", "t").await.unwrap_err();
    assert!(matches!(e, MailError::Refused { permanent: true, .. }), "{e:?}");
    assert_eq!(server.messages().len(), 1);
}

#[tokio::test]
async fn a_certificate_not_under_the_ca_is_refused() {
    let pki = pki();
    let Some(server) = Server::start("starttls", Some(&pki), true) else { return };
    let relay = format!("localhost:{}", server.port);
    let smtp = Smtp::new(options(relay, Tls::StartTls, Some(&pki.other_ca), Some(PASSWORD)));
    let e = smtp.unwrap().send(&team(), "s", "t").await.unwrap_err();
    assert!(matches!(e, MailError::Tls { .. }), "{e:?}");
    println!("another CA: {e}");
    assert!(e.to_string().contains("invalid peer certificate: UnknownIssuer"), "{e}");

    assert!(server.messages().is_empty());

    // Nor is a certificate the CA issued for another name.
    let cert = (pki.elsewhere_cert.as_path(), pki.elsewhere_key.as_path());
    let Some(elsewhere) = Server::start_with("starttls", Some(cert), true) else { return };
    let relay = format!("localhost:{}", elsewhere.port);
    let smtp = Smtp::new(options(relay, Tls::StartTls, Some(&pki.ca), Some(PASSWORD)));
    let e = smtp.unwrap().send(&team(), "s", "t").await.unwrap_err();
    assert!(matches!(e, MailError::Tls { .. }), "{e:?}");
    assert!(e.to_string().contains("not valid for name \"localhost\""), "{e}");
    assert!(elsewhere.messages().is_empty());
}

#[tokio::test]
async fn starttls_is_never_given_up() {
    // The relay does not offer STARTTLS: refused, not sent in the clear.
    let pki = pki();
    let Some(server) = Server::start("none", None, false) else { return };
    let relay = format!("127.0.0.1:{}", server.port);
    let smtp = Smtp::new(options(relay, Tls::StartTls, Some(&pki.ca), None)).unwrap();
    let e = smtp.send(&team(), "s", "t").await.unwrap_err();
    assert!(matches!(e, MailError::Tls { .. }), "{e:?}");
    println!("no STARTTLS: {e}");
    assert!(e.to_string().contains("does not offer STARTTLS"), "{e}");
    assert!(server.messages().is_empty());
}

#[tokio::test]
async fn implicit_tls_with_login() {
    let pki = pki();
    let Some(server) = Server::start("implicit", Some(&pki), true) else { return };
    let relay = format!("127.0.0.1:{}", server.port);
    let t = Instant::now();
    let smtp = Smtp::new(options(relay.clone(), Tls::Implicit, Some(&pki.ca), Some(PASSWORD)));
    smtp.unwrap().send(&team(), "[Strongroom] sanctions hit", TEXT).await.unwrap();
    println!("implicit TLS + AUTH: sent in {:?}", t.elapsed());
    let messages = server.messages();
    assert_eq!(messages.len(), 1);
    check_message(&messages[0], true, true);

    let smtp = Smtp::new(options(relay, Tls::Implicit, Some(&pki.other_ca), Some(PASSWORD)));
    let e = smtp.unwrap().send(&team(), "s", "t").await.unwrap_err();
    assert!(matches!(e, MailError::Tls { .. }), "{e:?}");
    assert_eq!(server.messages().len(), 1);
}

#[tokio::test]
async fn a_silent_relay_times_out() {
    // Accepts the connection, never greets.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let relay = listener.local_addr().unwrap().to_string();
    let held = tokio::spawn(async move {
        let (socket, _) = listener.accept().await.unwrap();
        tokio::time::sleep(Duration::from_secs(30)).await;
        drop(socket);
    });
    let mut o = options(relay, Tls::None, None, None);
    o.timeout = Duration::from_millis(300);
    let t = Instant::now();
    let e = Smtp::new(o).unwrap().send(&team(), "s", "t").await.unwrap_err();
    assert!(matches!(e, MailError::Timeout { timeout_ms: 300, .. }), "{e:?}");
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    held.abort();
}

#[test]
fn settings_read_the_new_keys_and_the_old_name() {
    use figment::providers::{Format, Toml};
    let parse = |toml: &str| {
        figment::Figment::from(Toml::string(toml))
            .extract::<SmtpSettings>()
            .map_err(|e| e.to_string())
    };
    let s = parse(
        r#"relay = "smtp.example.com:465"
from = "alerts@example.com"
tls = "implicit"
ca_file = "/etc/strongroom/ca.pem"
username = "alerts"
password_file = "/etc/strongroom/smtp.password"
timeout_secs = 20"#,
    )
    .unwrap();
    assert_eq!(s.tls, Some(Tls::Implicit));
    assert_eq!(s.ca_file.as_deref(), Some(Path::new("/etc/strongroom/ca.pem")));
    assert_eq!((s.username.as_deref(), s.timeout_secs), (Some("alerts"), Some(20)));

    // Written before `tls` and `ca_file`: still read, the same as before.
    let s =
        parse("relay = \"smtp.internal:25\"\nfrom = \"a@example.com\"\nstarttls_ca = \"/ca.pem\"")
            .unwrap();
    assert_eq!((s.tls, s.ca_file.as_deref()), (None, Some(Path::new("/ca.pem"))));

    let e =
        parse("relay = \"r:25\"\nfrom = \"a@example.com\"\nstarttls_ca = \"/a\"\nca_file = \"/b\"")
            .unwrap_err();
    assert!(e.contains("duplicate field"), "{e}");
    let e = parse("relay = \"r:25\"\nfrom = \"a@example.com\"\ntls = \"ssl\"").unwrap_err();
    assert!(e.contains("starttls") && e.contains("implicit"), "{e}");
    // The example configuration's relay.
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/strongroom.example.toml");
    let settings = strongroom_runtime::Settings::load(Path::new(example), []).unwrap();
    let s = settings.alerts.smtp.expect("the example sets a relay");
    assert_eq!((s.tls, s.username.as_deref()), (Some(Tls::StartTls), Some("strongroom")));

    // A password is never written in the settings themselves.
    let e = parse("relay = \"r:25\"\nfrom = \"a@example.com\"\npassword = \"x\"").unwrap_err();
    assert!(e.contains("unknown field"), "{e}");
}
