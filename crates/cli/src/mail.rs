//! A small SMTP client for alert e-mail (RFC 5321): EHLO, optional STARTTLS (rustls, trusting
//! only the CA file given), MAIL, RCPT, DATA with dot-stuffing, QUIT. Enough for a relay the
//! operator runs; no authentication yet.

use std::path::PathBuf;

use anyhow::Context;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};

#[derive(Debug, Clone)]
pub struct Smtp {
    /// `host:port` of the relay.
    pub relay: String,
    pub from: String,
    /// Upgrade with STARTTLS, trusting this CA certificate (PEM).
    pub starttls_ca: Option<PathBuf>,
}

async fn reply<R: AsyncRead + Unpin>(r: &mut BufReader<R>, want: u16) -> anyhow::Result<String> {
    let mut all = String::new();
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).await? == 0 {
            anyhow::bail!("the SMTP server closed the connection");
        }
        all.push_str(&line);
        // "250-..." continues, "250 ..." ends.
        if line.as_bytes().get(3) != Some(&b'-') {
            let code: u16 = line.get(..3).and_then(|c| c.parse().ok()).unwrap_or(0);
            anyhow::ensure!(code == want, "SMTP: expected {want}, got {}", all.trim_end());
            return Ok(all);
        }
    }
}

async fn command<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut BufReader<S>,
    line: &str,
    want: u16,
) -> anyhow::Result<String> {
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
) -> anyhow::Result<()> {
    command(s, &format!("MAIL FROM:<{}>", clean(&smtp.from)), 250).await?;
    for rcpt in to {
        let r = command(s, &format!("RCPT TO:<{}>", clean(rcpt)), 250).await;
        r.with_context(|| format!("recipient {rcpt}"))?;
    }
    command(s, "DATA", 354).await?;
    s.get_mut().write_all(message(&smtp.from, to, subject, body).as_bytes()).await?;
    reply(s, 250).await?;
    let _ = command(s, "QUIT", 221).await;
    Ok(())
}

impl Smtp {
    pub async fn send(&self, to: &[String], subject: &str, body: &str) -> anyhow::Result<()> {
        let tcp = tokio::net::TcpStream::connect(&self.relay)
            .await
            .with_context(|| format!("connecting to the SMTP relay {}", self.relay))?;
        let mut s = BufReader::new(tcp);
        reply(&mut s, 220).await?;
        command(&mut s, "EHLO strongroom", 250).await?;
        let Some(ca) = &self.starttls_ca else {
            return deliver(&mut s, self, to, subject, body).await;
        };
        command(&mut s, "STARTTLS", 220).await?;
        let mut roots = rustls::RootCertStore::empty();
        let pem = std::fs::read(ca).with_context(|| format!("reading {}", ca.display()))?;
        for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
            roots.add(cert?)?;
        }
        let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
        let host = self.relay.rsplit_once(':').map_or(self.relay.as_str(), |(h, _)| h).to_owned();
        let name = rustls::pki_types::ServerName::try_from(host)?;
        let tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
            .connect(name, s.into_inner())
            .await
            .context("STARTTLS handshake")?;
        let mut s = BufReader::new(tls);
        command(&mut s, "EHLO strongroom", 250).await?;
        deliver(&mut s, self, to, subject, body).await
    }
}
