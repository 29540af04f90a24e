//! HTTPS serving: rustls with TLS 1.3 only, HTTP/1.1 and HTTP/2 by ALPN.
//!
//! TLS 1.2 and older are refused during the handshake: the server's rustls config lists
//! only TLS 1.3, so an older client gets a `protocol_version` alert and no HTTP at all.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder;
use hyper_util::service::TowerToHyperService;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use crate::pki::{read, PkiError};

/// How long a client has to finish the TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Most connections served at once; further ones wait in the kernel's accept queue.
pub const MAX_CONNECTIONS: usize = 4096;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    #[error(transparent)]
    Pki(#[from] PkiError),
    #[error("{path}: {reason}")]
    Pem { path: String, reason: String },
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

/// A rustls server config that speaks TLS 1.3 and nothing else.
pub fn server_config(cert_path: &Path, key_path: &Path) -> Result<rustls::ServerConfig, TlsError> {
    let pem_err =
        |path: &Path, reason: String| TlsError::Pem { path: path.display().to_string(), reason };
    let certs: Vec<CertificateDer<'static>> =
        rustls_pemfile::certs(&mut read(cert_path)?.as_slice())
            .collect::<Result<_, _>>()
            .map_err(|e| pem_err(cert_path, e.to_string()))?;
    if certs.is_empty() {
        return Err(pem_err(cert_path, "no certificate found".into()));
    }
    let key: PrivateKeyDer<'static> = rustls_pemfile::private_key(&mut read(key_path)?.as_slice())
        .map_err(|e| pem_err(key_path, e.to_string()))?
        .ok_or_else(|| pem_err(key_path, "no private key found".into()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// The TCP peer of a request (an extension on every request).
#[derive(Debug, Clone, Copy)]
pub struct PeerAddr(pub SocketAddr);

/// A running HTTPS server.
#[derive(Debug)]
pub struct Running {
    pub addr: SocketAddr,
    shutdown: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Running {
    /// Stop accepting, let open requests finish, and wait.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        let _ = self.task.await;
    }

    /// Wait until the server stops (it stops only when told to).
    pub async fn wait(self) {
        let _ = self.task.await;
    }

    /// A handle that stops the server when sent `true`.
    pub fn shutdown_handle(&self) -> watch::Sender<bool> {
        self.shutdown.clone()
    }
}

/// Serve `app` over TLS on `listener` until shut down.
pub fn serve(
    listener: TcpListener,
    config: rustls::ServerConfig,
    app: Router,
) -> std::io::Result<Running> {
    let addr = listener.local_addr()?;
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let (tx, mut rx) = watch::channel(false);
    let limit = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    let task = tokio::spawn(async move {
        let mut conns = tokio::task::JoinSet::new();
        loop {
            let permit = tokio::select! {
                _ = rx.changed() => break,
                p = limit.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
            };
            let (stream, peer) = tokio::select! {
                _ = rx.changed() => break,
                accepted = listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let _ = stream.set_nodelay(true);
            let acceptor = acceptor.clone();
            let app = app.clone();
            let mut stop = rx.clone();
            conns.spawn(async move {
                let _permit = permit;
                let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                    Ok(Ok(tls)) => tls,
                    Ok(Err(e)) => {
                        tracing::info!(%peer, error = %e, "TLS handshake refused");
                        return;
                    }
                    Err(_) => {
                        tracing::info!(%peer, "TLS handshake timed out");
                        return;
                    }
                };
                let app = tower::ServiceExt::map_request(app, move |mut r: http::Request<hyper::body::Incoming>| {
                    r.extensions_mut().insert(PeerAddr(peer));
                    r
                });
                let service = TowerToHyperService::new(app);
                let builder = Builder::new(TokioExecutor::new());
                let conn = builder.serve_connection_with_upgrades(TokioIo::new(tls), service);
                tokio::pin!(conn);
                tokio::select! {
                    r = conn.as_mut() => if let Err(e) = r { tracing::debug!(%peer, error = %e, "connection ended with an error") },
                    _ = stop.changed() => {
                        conn.as_mut().graceful_shutdown();
                        let _ = conn.await;
                    }
                }
            });
            // Reap finished connections so the set stays small.
            while conns.try_join_next().is_some() {}
        }
        while conns.join_next().await.is_some() {}
    });
    Ok(Running { addr, shutdown: tx, task })
}
