//! What every listener shares: optional TLS, and the timeouts that keep idle and
//! slow clients from holding connections forever.
//!
//! - `read_header_timeout_ms` (HTTP/1): a request's headers, and on a kept-alive
//!   connection the next request's, must arrive within it (hyper's header read
//!   timeout); a slow-loris client trickling headers is cut off. It also bounds the
//!   TLS handshake.
//! - `idle_timeout_ms` (every protocol): a connection on which nothing is read or
//!   written for this long is closed ([`IdleTimeout`]); an HTTP/2 or gRPC client that
//!   connects and goes silent is cut off too.
//!
//! TLS is rustls (ring provider) over a certificate chain and key in PEM files, with
//! ALPN: `h2` for gRPC, `h2` and `http/1.1` for HTTP.

use std::future::Future;
use std::io;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{Instant, Sleep};
use tokio_rustls::rustls;
use tokio_rustls::TlsAcceptor;

use crate::{ConfigError, Error};

/// `[receivers.otlp.tls]` or `[api.tls]`: serve TLS with this certificate and key.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain, leaf first.
    pub cert_file: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
}

impl TlsConfig {
    /// Loads the certificate and key; errors name the config `key` (e.g.
    /// `api.tls.cert_file`) and the file.
    pub fn acceptor(&self, section: &str, alpn: &[&[u8]]) -> Result<TlsAcceptor, Error> {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&self.cert_file)
            .and_then(|certs| certs.collect::<Result<_, _>>())
            .map_err(|e| {
                let reason = format!("cannot read certificates: {e}");
                ConfigError::file(format!("{section}.cert_file"), &self.cert_file, reason)
            })?;
        if certs.is_empty() {
            let key = format!("{section}.cert_file");
            return Err(ConfigError::file(key, &self.cert_file, "holds no certificate").into());
        }
        let key = PrivateKeyDer::from_pem_file(&self.key_file).map_err(|e| {
            let reason = format!("cannot read a private key: {e}");
            ConfigError::file(format!("{section}.key_file"), &self.key_file, reason)
        })?;
        let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .and_then(|b| b.with_no_client_auth().with_single_cert(certs, key))
        .map_err(|e| {
            ConfigError::rule(
                section,
                format!("has a certificate and key that make no TLS configuration: {e}"),
            )
        })?;
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Ok(TlsAcceptor::from(Arc::new(config)))
    }
}

/// How a listener treats its connections.
#[derive(Clone)]
pub struct Listening {
    pub tls: Option<TlsAcceptor>,
    pub read_header_timeout: Duration,
    pub idle_timeout: Duration,
}

/// An accepted connection, TLS or not.
pub enum Stream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

impl Stream {
    fn tcp(&self) -> &TcpStream {
        match self {
            Stream::Plain(s) => s,
            Stream::Tls(s) => s.get_ref().0,
        }
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// A connection that fails with `TimedOut` once nothing has been read or written on
/// it for `timeout`.
pub struct IdleTimeout<S> {
    inner: S,
    timeout: Duration,
    deadline: Pin<Box<Sleep>>,
}

impl<S> IdleTimeout<S> {
    pub fn new(inner: S, timeout: Duration) -> Self {
        IdleTimeout {
            inner,
            timeout,
            deadline: Box::pin(tokio::time::sleep(timeout)),
        }
    }

    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    fn progress(&mut self) {
        self.deadline.as_mut().reset(Instant::now() + self.timeout);
    }

    /// Called when the inner stream is pending: an error once the deadline passed.
    fn check(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        match self.deadline.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(io::Error::new(
                io::ErrorKind::TimedOut,
                "connection idle for longer than idle_timeout_ms",
            )),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for IdleTimeout<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(r) => {
                this.progress();
                Poll::Ready(r)
            }
            Poll::Pending => this.check(cx).map(Err),
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for IdleTimeout<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_write(cx, buf) {
            Poll::Ready(r) => {
                this.progress();
                Poll::Ready(r)
            }
            Poll::Pending => this.check(cx).map(Err),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

impl tonic::transport::server::Connected for IdleTimeout<Stream> {
    type ConnectInfo = tonic::transport::server::TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.tcp().connect_info()
    }
}

impl Listening {
    /// Completes the TLS handshake (within `read_header_timeout`), if any, and wraps
    /// the connection in the idle timeout.
    async fn establish(&self, tcp: TcpStream) -> io::Result<IdleTimeout<Stream>> {
        let _ = tcp.set_nodelay(true);
        let stream = match &self.tls {
            None => Stream::Plain(tcp),
            Some(acceptor) => {
                let handshake =
                    tokio::time::timeout(self.read_header_timeout, acceptor.accept(tcp)).await;
                match handshake {
                    Ok(Ok(tls)) => Stream::Tls(Box::new(tls)),
                    Ok(Err(e)) => return Err(e),
                    Err(_) => {
                        return Err(io::Error::new(
                            io::ErrorKind::TimedOut,
                            "TLS handshake not done within read_header_timeout_ms",
                        ))
                    }
                }
            }
        };
        Ok(IdleTimeout::new(stream, self.idle_timeout))
    }

    /// The established connections of `listener`, for tonic. Handshakes run
    /// concurrently, so a slow one does not hold up the others.
    pub fn incoming(
        self,
        listener: TcpListener,
    ) -> impl futures::Stream<Item = io::Result<IdleTimeout<Stream>>> + Send + 'static {
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        tokio::spawn(async move {
            loop {
                // Stop accepting once the server is gone.
                let (tcp, peer) = tokio::select! {
                    accepted = accept(&listener) => accepted,
                    _ = tx.closed() => return,
                };
                let this = self.clone();
                let tx = tx.clone();
                tokio::spawn(async move {
                    match this.establish(tcp).await {
                        Ok(conn) => {
                            let _ = tx.send(Ok(conn)).await;
                        }
                        Err(e) => tracing::debug!(%peer, error = %e, "connection not established"),
                    }
                });
            }
        });
        futures::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|item| (item, rx))
        })
    }

    /// Serves `app` (HTTP/1.1 and HTTP/2) on `listener` until `shutdown` resolves,
    /// then lets the connections in flight finish.
    pub async fn serve_http(
        self,
        listener: TcpListener,
        app: axum::Router,
        shutdown: impl std::future::Future<Output = ()>,
    ) -> io::Result<()> {
        use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
        use hyper_util::server::conn::auto::Builder;
        let mut builder = Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(self.read_header_timeout);
        builder.http2().timer(TokioTimer::new());
        let graceful = hyper_util::server::graceful::GracefulShutdown::new();
        tokio::pin!(shutdown);
        loop {
            let (tcp, peer) = tokio::select! {
                accepted = accept(&listener) => accepted,
                _ = &mut shutdown => break,
            };
            let this = self.clone();
            let builder = builder.clone();
            let service = hyper_util::service::TowerToHyperService::new(app.clone());
            let watcher = graceful.watcher();
            tokio::spawn(async move {
                let conn = match this.establish(tcp).await {
                    Ok(conn) => conn,
                    Err(e) => {
                        tracing::debug!(%peer, error = %e, "connection not established");
                        return;
                    }
                };
                let serving = watcher.watch(
                    builder
                        .serve_connection_with_upgrades(TokioIo::new(conn), service)
                        .into_owned(),
                );
                if let Err(e) = serving.await {
                    tracing::debug!(%peer, error = %e, "connection ended with an error");
                }
            });
        }
        drop(listener);
        graceful.shutdown().await;
        Ok(())
    }
}

/// The next connection. Accept errors (out of file descriptors, mostly) are
/// transient: log, pause, go on.
async fn accept(listener: &TcpListener) -> (TcpStream, std::net::SocketAddr) {
    loop {
        match listener.accept().await {
            Ok(accepted) => return accepted,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test(start_paused = true)]
    async fn a_silent_peer_times_out_and_traffic_keeps_a_connection_alive() {
        let (a, mut b) = tokio::io::duplex(64);
        let mut conn = IdleTimeout::new(a, Duration::from_secs(10));
        let mut buf = [0u8; 4];
        // Traffic every 6 s keeps it open past 10 s.
        for _ in 0..3 {
            tokio::time::advance(Duration::from_secs(6)).await;
            b.write_all(b"ping").await.unwrap();
            conn.read_exact(&mut buf).await.unwrap();
        }
        // Then silence: the read fails once 10 s have passed.
        let err = conn.read(&mut buf).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
    }

    #[test]
    fn tls_config_errors_name_the_key_and_file() {
        let config = TlsConfig {
            cert_file: "/nonexistent/cert.pem".into(),
            key_file: "/nonexistent/key.pem".into(),
        };
        let err = config
            .acceptor("api.tls", &[b"h2"])
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("api.tls.cert_file"), "{err}");
        assert!(err.contains("/nonexistent/cert.pem"), "{err}");
    }
}
