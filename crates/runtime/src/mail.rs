//! A small SMTP client for alert e-mail (RFC 5321): EHLO, optional STARTTLS (rustls, trusting
//! only the CA file given), MAIL, RCPT, DATA with dot-stuffing, QUIT. Enough for a relay the
//! operator runs; no authentication yet.

use std::path::PathBuf;

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};

/// Why an e-mail was not sent.
#[derive(Debug, thiserror::Error)]
#[error("SMTP: {0}")]
pub struct MailError(pub String);

impl From<std::io::Error> for MailError {
    fn from(e: std::io::Error) -> Self {
        MailError(e.to_string())
    }
}

fn fail(e: impl std::fmt::Display) -> MailError {
    MailError(e.to_string())
}

#[derive(Debug, Clone)]
pub struct Smtp {
    /// `host:port` of the relay.
    pub relay: String,
    pub from: String,
    /// Upgrade with STARTTLS, trusting this CA certificate (PEM).
    pub starttls_ca: Option<PathBuf>,
}

async fn reply<R: AsyncRead + Unpin>(r: &mut BufReader<R>, want: u16) -> Result<String, MailError> {
    let mut all = String::new();
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).await? == 0 {
            return Err(fail("the server closed the connection"));
        }
        all.push_str(&line);
        // "250-..." continues, "250 ..." ends.
        if line.as_bytes().get(3) != Some(&b'-') {
            let code: u16 = line.get(..3).and_then(|c| c.parse().ok()).unwrap_or(0);
            if code != want {
                return Err(MailError(format!("expected {want}, got {}", all.trim_end())));
            }
            return Ok(all);
        }
    }
}

async fn command<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut BufReader<S>,
    line: &str,
    want: u16,
) -> Result<String, MailError> {
    s.get_mut().write_all(format!("{line}\r\n").as_bytes()).await?;
    s.get_mut().flush().await?;
    reply(s, want).await
}

/// A header value without line breaks (no header injection).
fn clean(v: &str) -> String {
    v.chars().filter(|c| *c != '\r' && *c != '\n').collect()
}

fn message(from: &str, to: &[String], subject: &str, body: &str) -> String {
    let mut m = format!(
        "From: {}\r\nTo: {}\r\nSubject: {}\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n",
        clean(from),
        clean(&to.join(", ")),
        clean(subject)
    );
    for line in body.lines() {
        // Dot-stuffing: a line that starts with "." gets another.
        if line.starts_with('.') {
            m.push('.');
        }
        m.push_str(line);
        m.push_str("\r\n");
    }
    m.push_str(".\r\n");
    m
}

async fn deliver<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut BufReader<S>,
    smtp: &Smtp,
    to: &[String],
    subject: &str,
    body: &str,
) -> Result<(), MailError> {
    command(s, &format!("MAIL FROM:<{}>", clean(&smtp.from)), 250).await?;
    for rcpt in to {
        let r = command(s, &format!("RCPT TO:<{}>", clean(rcpt)), 250).await;
        r.map_err(|e| MailError(format!("recipient {rcpt}: {}", e.0)))?;
    }
    command(s, "DATA", 354).await?;
    s.get_mut().write_all(message(&smtp.from, to, subject, body).as_bytes()).await?;
    reply(s, 250).await?;
    let _ = command(s, "QUIT", 221).await;
    Ok(())
}

impl Smtp {
    pub async fn send(&self, to: &[String], subject: &str, body: &str) -> Result<(), MailError> {
        let tcp = tokio::net::TcpStream::connect(&self.relay)
            .await
            .map_err(|e| MailError(format!("connecting to the relay {}: {e}", self.relay)))?;
        let mut s = BufReader::new(tcp);
        reply(&mut s, 220).await?;
        command(&mut s, "EHLO strongroom", 250).await?;
        let Some(ca) = &self.starttls_ca else {
            return deliver(&mut s, self, to, subject, body).await;
        };
        command(&mut s, "STARTTLS", 220).await?;
        let mut roots = rustls::RootCertStore::empty();
        let pem = std::fs::read(ca).map_err(|e| MailError(format!("{}: {e}", ca.display())))?;
        for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
            roots.add(cert?).map_err(fail)?;
        }
        let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(fail)?
        .with_root_certificates(roots)
        .with_no_client_auth();
        let host = self.relay.rsplit_once(':').map_or(self.relay.as_str(), |(h, _)| h).to_owned();
        let name = rustls::pki_types::ServerName::try_from(host).map_err(fail)?;
        let tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
            .connect(name, s.into_inner())
            .await
            .map_err(|e| MailError(format!("STARTTLS handshake: {e}")))?;
        let mut s = BufReader::new(tls);
        command(&mut s, "EHLO strongroom", 250).await?;
        deliver(&mut s, self, to, subject, body).await
    }
}
