//! Alert e-mail through an SMTP relay, with lettre (RFC 5321 and 5322): the message is built
//! by lettre's builder (Date, Message-ID, MIME headers, header encoding, line endings), and
//! delivered over lettre's SMTP connection, in the steps of RFC 5321 §3: connect, EHLO, TLS
//! (implicit, RFC 8314 §3.3, or STARTTLS, RFC 3207), AUTH PLAIN or LOGIN (RFC 4954) when a
//! username is set, MAIL, RCPT, DATA, QUIT. Each step's failure is reported as what failed
//! ([`MailError`]).
//!
//! TLS is rustls on ring, trusting the platform's roots (`rustls-native-certs`, which honours
//! `SSL_CERT_FILE` and `SSL_CERT_DIR`) plus an optional CA file for a private PKI.
//!
//! What this module does not do: queue or retry (the risk worker's outbox does), keep
//! connections open between messages, or send anything but plain UTF-8 text.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use lettre::message::header::ContentType;
use lettre::message::Mailbox;
use lettre::transport::smtp::authentication::{Credentials, DEFAULT_MECHANISMS};
use lettre::transport::smtp::client::{
    AsyncSmtpConnection, Certificate, CertificateStore, TlsParameters,
};
use lettre::transport::smtp::extension::{ClientId, Extension};
use lettre::Message;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use serde::Deserialize;
use zeroize::Zeroizing;

/// How long a whole send may take (connect, TLS, AUTH, the message, QUIT) unless the settings
/// say otherwise.
pub const DEFAULT_TIMEOUT_SECS: u64 = 30;

/// The longest password file read (a password, not a key file).
const PASSWORD_FILE_MAX_BYTES: u64 = 4096;

/// How the connection to the relay is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Tls {
    /// Plain TCP. Only for a relay on the same host: anything on the network between can read
    /// and change the mail. No password is ever sent this way.
    None,
    /// Plain TCP upgraded with STARTTLS before anything else is sent (RFC 3207); a relay that
    /// does not offer it is refused, never fallen back from. Usually port 587 (or 25).
    #[serde(rename = "starttls")]
    StartTls,
    /// TLS from the first byte ("submissions", RFC 8314 §3.3). Usually port 465.
    Implicit,
}

/// A username and its password, for AUTH. The password is zeroized when dropped and never
/// printed: `Debug` shows `<redacted>`.
#[derive(Clone)]
pub struct Login {
    pub username: String,
    password: Zeroizing<String>,
}

impl Login {
    pub fn new(username: impl Into<String>, password: Zeroizing<String>) -> Login {
        Login { username: username.into(), password }
    }

    /// The password is the file's text without its trailing line break; an empty file is
    /// refused. The file's content never appears in an error.
    pub fn from_file(username: impl Into<String>, path: &Path) -> Result<Login, MailError> {
        let config =
            |what: String| MailError::Config(format!("password_file {}: {what}", path.display()));
        let len = std::fs::metadata(path).map_err(|e| config(e.to_string()))?.len();
        if len > PASSWORD_FILE_MAX_BYTES {
            return Err(config(format!("longer than {PASSWORD_FILE_MAX_BYTES} bytes")));
        }
        let bytes = Zeroizing::new(std::fs::read(path).map_err(|e| config(e.to_string()))?);
        let text = std::str::from_utf8(&bytes).map_err(|_| config("not UTF-8".into()))?;
        let password = Zeroizing::new(text.trim_end_matches(['\r', '\n']).to_owned());
        if password.is_empty() {
            return Err(config("empty".into()));
        }
        Ok(Login::new(username, password))
    }
}

impl fmt::Debug for Login {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Login")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// Everything needed to reach a relay, as plain data; [`Smtp::new`] checks it and loads the
/// roots.
#[derive(Debug, Clone)]
pub struct SmtpOptions {
    /// `host:port` of the relay.
    pub relay: String,
    /// The sender (`alerts@example.com` or `Strongroom <alerts@example.com>`).
    pub from: String,
    pub tls: Tls,
    /// A CA certificate file (PEM) trusted besides the platform's roots.
    pub ca_file: Option<PathBuf>,
    pub login: Option<Login>,
    /// For the whole send.
    pub timeout: Duration,
}

impl SmtpOptions {
    /// A relay on this host: plain TCP, no login, the default timeout.
    pub fn local(relay: impl Into<String>, from: impl Into<String>) -> SmtpOptions {
        SmtpOptions {
            relay: relay.into(),
            from: from.into(),
            tls: Tls::None,
            ca_file: None,
            login: None,
            timeout: Duration::from_secs(DEFAULT_TIMEOUT_SECS),
        }
    }
}

/// Why an e-mail was not sent, by who is at fault: the settings, the caller's recipient, the
/// network, the relay's TLS, the relay's refusal of the credentials or of the message.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MailError {
    /// The settings are wrong (an address, the CA file, the password file, a combination);
    /// found when the client is built, before any mail.
    #[error("SMTP settings: {0}")]
    Config(String),
    /// A recipient is not an e-mail address. The address itself is not repeated: it may be a
    /// customer's personal data, and errors end up in logs.
    #[error("SMTP: recipient {index} (counting from 0) is not a valid address: {reason}")]
    Recipient { index: usize, reason: String },
    /// lettre could not make the message from what it was given.
    #[error("SMTP: the message could not be built: {0}")]
    Message(String),
    /// The relay could not be reached (name resolution, TCP).
    #[error("SMTP: connecting to the relay {relay}: {detail}")]
    Connect { relay: String, detail: String },
    /// TLS could not be set up: STARTTLS not offered, or the relay's certificate not trusted
    /// or not for its name.
    #[error("SMTP: TLS with the relay {relay}: {detail}")]
    Tls { relay: String, detail: String },
    /// The relay refused the username and password (or offers no mechanism we speak).
    #[error("SMTP: authentication as {username} refused by the relay {relay}: {detail}")]
    Authentication { relay: String, username: String, detail: String },
    /// The relay refused the sender, a recipient or the message; `permanent` (a 5xx reply)
    /// when sending the same again will not help.
    #[error("SMTP: the relay {relay} refused the message: {detail}")]
    Refused { relay: String, permanent: bool, detail: String },
    /// The connection broke or the relay answered something unparsable.
    #[error("SMTP: talking to the relay {relay}: {detail}")]
    Protocol { relay: String, detail: String },
    /// The whole send took longer than allowed.
    #[error("SMTP: the relay {relay} did not finish within {timeout_ms} ms")]
    Timeout { relay: String, timeout_ms: u128 },
}

/// An SMTP relay to send alert e-mail through, checked and with its TLS roots loaded.
/// Cloning is cheap; each [`Smtp::send`] opens its own connection.
#[derive(Clone)]
pub struct Smtp {
    relay: String,
    host: String,
    port: u16,
    from: Mailbox,
    tls: Tls,
    /// Set unless `tls` is [`Tls::None`].
    tls_parameters: Option<TlsParameters>,
    login: Option<Arc<Login>>,
    timeout: Duration,
    /// The EHLO name: this host's name (lettre's default).
    hello: ClientId,
}

impl fmt::Debug for Smtp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Smtp")
            .field("relay", &self.relay)
            .field("from", &self.from.to_string())
            .field("tls", &self.tls)
            .field("login", &self.login)
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// `host:port` → (host, port); `[v6]:port` too.
fn host_port(relay: &str) -> Result<(String, u16), MailError> {
    let bad = || MailError::Config(format!("relay {relay:?}: expected host:port"));
    let (host, port) = relay.rsplit_once(':').ok_or_else(bad)?;
    let port: u16 = port.parse().map_err(|_| bad())?;
    let host = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
    if host.is_empty() || port == 0 {
        return Err(bad());
    }
    Ok((host.to_owned(), port))
}

fn is_loopback(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// The platform's roots plus the CA file's certificates, for the relay's name.
fn tls_parameters(host: &str, ca_file: Option<&Path>) -> Result<TlsParameters, MailError> {
    let mut builder =
        TlsParameters::builder(host.to_owned()).certificate_store(CertificateStore::Default);
    if let Some(path) = ca_file {
        let config =
            |what: String| MailError::Config(format!("ca_file {}: {what}", path.display()));
        let pem = std::fs::read(path).map_err(|e| config(e.to_string()))?;
        let mut n = 0usize;
        for der in CertificateDer::pem_slice_iter(&pem) {
            let der = der.map_err(|e| config(e.to_string()))?;
            let cert = Certificate::from_der(der.to_vec()).map_err(|e| config(e.to_string()))?;
            builder = builder.add_root_certificate(cert);
            n = n.saturating_add(1);
        }
        if n == 0 {
            return Err(config("no certificate in it".into()));
        }
    }
    builder.build_rustls().map_err(|e| MailError::Config(format!("TLS for {host}: {e}")))
}

/// The rustls error (the handshake or the certificate check) behind an error, if any.
fn tls_failure<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    let mut next = Some(e);
    while let Some(e) = next {
        if let Some(tls) = e.downcast_ref::<rustls::Error>() {
            return Some(tls);
        }
        // io::Error's `source` skips the error it wraps: look at that one too.
        if let Some(inner) = e.downcast_ref::<std::io::Error>().and_then(|io| io.get_ref()) {
            if let Some(tls) = inner.downcast_ref::<rustls::Error>() {
                return Some(tls);
            }
        }
        next = e.source();
    }
    None
}

/// What went wrong in a TLS step: rustls's own words when it is behind the error.
fn tls_detail(e: &lettre::transport::smtp::Error) -> String {
    tls_failure(e).map_or_else(|| e.to_string(), ToString::to_string)
}

/// A header value on one line: a subject never adds a header.
fn one_line(v: &str) -> String {
    v.chars().map(|c| if c == '\r' || c == '\n' { ' ' } else { c }).collect()
}

impl Smtp {
    /// Checks the options (addresses, TLS mode against the rest, the CA file) and loads the
    /// platform's roots once. Refused: a login without TLS (the password would cross the
    /// network in the clear) and a CA file with `Tls::None` (it would never be used). Plain
    /// TCP to a relay that is not on this host is allowed, as before, but logged as a warning.
    pub fn new(options: SmtpOptions) -> Result<Smtp, MailError> {
        let SmtpOptions { relay, from, tls, ca_file, login, timeout } = options;
        let (host, port) = host_port(&relay)?;
        let from: Mailbox =
            from.parse().map_err(|e| MailError::Config(format!("from {from:?}: {e}")))?;
        if timeout.is_zero() {
            return Err(MailError::Config("the timeout must be above zero".into()));
        }
        let tls_parameters = match tls {
            Tls::None => {
                if ca_file.is_some() {
                    return Err(MailError::Config(
                        "ca_file is set but tls = \"none\": set tls = \"starttls\" or \"implicit\""
                            .into(),
                    ));
                }
                if login.is_some() {
                    return Err(MailError::Config(
                        "a password is only sent over TLS: set tls = \"starttls\" or \"implicit\""
                            .into(),
                    ));
                }
                if !is_loopback(&host) {
                    tracing::warn!(
                        relay,
                        "alert e-mail goes to the relay without TLS: only right for a relay on this host"
                    );
                }
                None
            }
            Tls::StartTls | Tls::Implicit => Some(tls_parameters(&host, ca_file.as_deref())?),
        };
        Ok(Smtp {
            relay,
            host,
            port,
            from,
            tls,
            tls_parameters,
            login: login.map(Arc::new),
            timeout,
            hello: ClientId::default(),
        })
    }

    /// The relay, `host:port`.
    pub fn relay(&self) -> &str {
        &self.relay
    }

    /// Send `text` (plain UTF-8) to every address in `to`, in one message (all in `To:`), dated
    /// now by the system clock. The whole exchange is bounded by the timeout.
    pub async fn send(&self, to: &[String], subject: &str, text: &str) -> Result<(), MailError> {
        self.send_message(to, subject, text, None).await
    }

    /// As [`Smtp::send`], with the `Date:` header given (from the caller's clock).
    pub async fn send_at(
        &self,
        to: &[String],
        subject: &str,
        text: &str,
        date: SystemTime,
    ) -> Result<(), MailError> {
        self.send_message(to, subject, text, Some(date)).await
    }

    async fn send_message(
        &self,
        to: &[String],
        subject: &str,
        text: &str,
        date: Option<SystemTime>,
    ) -> Result<(), MailError> {
        let message = self.message(to, subject, text, date)?;
        let timeout_ms = self.timeout.as_millis();
        match tokio::time::timeout(self.timeout, self.deliver(&message)).await {
            Ok(r) => r,
            Err(_) => Err(MailError::Timeout { relay: self.relay.clone(), timeout_ms }),
        }
    }

    /// The message (RFC 5322): From, To, Subject, Date (now when not given), Message-ID (random,
    /// at this host's name), text/plain in UTF-8.
    fn message(
        &self,
        to: &[String],
        subject: &str,
        text: &str,
        date: Option<SystemTime>,
    ) -> Result<Message, MailError> {
        if to.is_empty() {
            return Err(MailError::Recipient { index: 0, reason: "no recipient".into() });
        }
        let mut builder = Message::builder()
            .from(self.from.clone())
            .subject(one_line(subject))
            .message_id(None)
            .header(ContentType::TEXT_PLAIN);
        if let Some(date) = date {
            builder = builder.date(date);
        }
        for (index, address) in to.iter().enumerate() {
            let mailbox: Mailbox =
                address.parse().map_err(|e: lettre::address::AddressError| {
                    MailError::Recipient { index, reason: e.to_string() }
                })?;
            builder = builder.to(mailbox);
        }
        // lettre ends the DATA with CRLF "." CRLF after the body whatever its last characters:
        // a final line break of the text's own would arrive as an empty line.
        builder
            .body(text.trim_end_matches(['\r', '\n']).to_owned())
            .map_err(|e| MailError::Message(e.to_string()))
    }

    /// The SMTP exchange, one step at a time so that each failure says which step failed.
    async fn deliver(&self, message: &Message) -> Result<(), MailError> {
        let relay = || self.relay.clone();
        let implicit = match self.tls {
            Tls::Implicit => self.tls_parameters.clone(),
            Tls::None | Tls::StartTls => None,
        };
        // RFC 5321 §3.1: connect, read the greeting, EHLO (with implicit TLS, the handshake
        // comes first).
        let mut conn = AsyncSmtpConnection::connect_tokio1(
            (self.host.as_str(), self.port),
            Some(self.timeout),
            &self.hello,
            implicit,
            None,
        )
        .await
        .map_err(|e| {
            if tls_failure(&e).is_some() {
                MailError::Tls { relay: relay(), detail: tls_detail(&e) }
            } else {
                MailError::Connect { relay: relay(), detail: e.to_string() }
            }
        })?;
        // RFC 3207: STARTTLS, then EHLO again; a relay that does not offer it is refused.
        if let (Tls::StartTls, Some(params)) = (self.tls, &self.tls_parameters) {
            if !conn.server_info().supports_feature(Extension::StartTls) {
                return Err(MailError::Tls {
                    relay: relay(),
                    detail: "the relay does not offer STARTTLS (and mail never goes without it)"
                        .into(),
                });
            }
            conn.starttls(params.clone(), &self.hello)
                .await
                .map_err(|e| MailError::Tls { relay: relay(), detail: tls_detail(&e) })?;
        }
        // RFC 4954: AUTH PLAIN or LOGIN, only ever over TLS (checked in `new`).
        if let Some(login) = &self.login {
            // lettre keeps its own (not zeroized) copy for the length of this exchange.
            let credentials =
                Credentials::new(login.username.clone(), login.password.as_str().to_owned());
            conn.auth(DEFAULT_MECHANISMS, &credentials).await.map_err(|e| {
                MailError::Authentication {
                    relay: relay(),
                    username: login.username.clone(),
                    detail: e.to_string(),
                }
            })?;
        }
        // RFC 5321 §3.3: MAIL, RCPT for each recipient, DATA (lettre dot-stuffs).
        conn.send(message.envelope(), &message.formatted()).await.map_err(|e| {
            if e.is_permanent() || e.is_transient() {
                MailError::Refused {
                    relay: relay(),
                    permanent: e.is_permanent(),
                    detail: e.to_string(),
                }
            } else {
                MailError::Protocol { relay: relay(), detail: e.to_string() }
            }
        })?;
        // The message is accepted: a failed QUIT changes nothing.
        let _ = conn.quit().await;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relays_parse() {
        assert_eq!(host_port("smtp.example.com:587").unwrap(), ("smtp.example.com".into(), 587));
        assert_eq!(host_port("[::1]:25").unwrap(), ("::1".into(), 25));
        for bad in ["smtp.example.com", ":25", "host:0", "host:x", "host:70000"] {
            assert!(matches!(host_port(bad), Err(MailError::Config(_))), "{bad}");
        }
        assert!(is_loopback("localhost") && is_loopback("127.0.0.1") && is_loopback("::1"));
        assert!(!is_loopback("smtp.example.com") && !is_loopback("10.0.0.1"));
    }

    #[test]
    fn options_are_checked() {
        let with = |f: fn(&mut SmtpOptions)| {
            let mut o = SmtpOptions::local("127.0.0.1:25", "alerts@example.com");
            f(&mut o);
            Smtp::new(o).map(|_| ())
        };
        assert!(with(|_| {}).is_ok());
        let err = |f| with(f).unwrap_err().to_string();
        assert!(err(|o| o.from = "not an address".into()).contains("from"));
        assert!(err(|o| o.timeout = Duration::ZERO).contains("timeout"));
        assert!(err(|o| o.ca_file = Some("/x.pem".into())).contains("ca_file"));
        let e = err(|o| o.login = Some(Login::new("u", Zeroizing::new("pw".into()))));
        assert!(e.contains("only sent over TLS"), "{e}");
        let e = err(|o| {
            o.tls = Tls::StartTls;
            o.ca_file = Some("/nonexistent/ca.pem".into());
        });
        assert!(e.contains("ca_file /nonexistent/ca.pem"), "{e}");
    }

    #[test]
    fn secrets_stay_out_of_debug() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("password");
        std::fs::write(&file, "hunter2-secret\n").unwrap();
        let login = Login::from_file("alerts", &file).unwrap();
        assert_eq!(login.password.as_str(), "hunter2-secret", "the line break is not part of it");
        let mut o = SmtpOptions::local("smtp.example.com:465", "alerts@example.com");
        o.tls = Tls::Implicit;
        o.login = Some(login);
        let smtp = Smtp::new(o.clone()).unwrap();
        for text in [format!("{o:?}"), format!("{smtp:?}")] {
            assert!(!text.contains("hunter2"), "{text}");
            assert!(text.contains("<redacted>") && text.contains("alerts"), "{text}");
        }
        std::fs::write(&file, "\n").unwrap();
        let e = Login::from_file("alerts", &file).unwrap_err().to_string();
        assert!(e.contains("empty"), "{e}");
    }

    #[test]
    fn the_message_has_its_headers() {
        let smtp = Smtp::new(SmtpOptions::local("127.0.0.1:25", "Strongroom <alerts@example.com>"))
            .unwrap();
        let to = ["a@example.com".to_owned(), "b@example.com".to_owned()];
        let date = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let m = smtp.message(&to, "Alert\r\nBcc: evil@example.com", "x\n.y\n", Some(date)).unwrap();
        let text = String::from_utf8(m.formatted()).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.contains("From: Strongroom <alerts@example.com>"), "{head}");
        assert!(head.contains("To: a@example.com, b@example.com"), "{head}");
        assert!(head.contains("Date: Tue, 14 Nov 2023 22:13:20 +0000"), "{head}");
        assert!(head.contains("Message-ID: <"), "{head}");
        assert!(!head.contains("\r\nBcc:"), "no header injection: {head}");
        assert_eq!(body, "x\r\n.y", "the line break before the final dot is lettre's");
        assert_eq!(m.envelope().to().len(), 2);
        let e = smtp.message(&["a@example.com".into(), "nope".into()], "s", "t", None).unwrap_err();
        assert!(matches!(e, MailError::Recipient { index: 1, .. }), "{e}");
        assert!(!e.to_string().contains("nope"), "the address stays out of the error: {e}");
    }
}
