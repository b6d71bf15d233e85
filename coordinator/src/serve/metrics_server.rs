//! `serve --metrics-listen`: the HTTP listener Prometheus scrapes `GET /metrics` from.
//!
//! A listener of its own, because the gRPC port speaks HTTP/2 to tonic and Prometheus scrapes
//! over HTTP/1.1. It is reached like `status`, whose read-only numbers it shows: on a loopback
//! address without `--status-token-file` anyone on the machine may scrape; otherwise a scrape
//! needs `authorization: Bearer <status token>` (checked in constant time by
//! [`crater_proto::auth::Gate`], the check `Status` uses). Off loopback it also needs TLS, the
//! same certificate and key as the gRPC port (`--tls-cert`, `--tls-key`); given them, it serves
//! TLS on loopback too. Without them off loopback, or without status tokens, `serve` refuses to
//! start and says what is missing.
//!
//! The routes are an axum router; connections are served through hyper directly, so plain and
//! TLS connections take the same path, and a slow client cannot hold up the others: each
//! connection has a task, a TLS handshake and a request's headers have a time limit, and there
//! are at most [`MAX_CONNECTIONS`] at once.

use crate::serve::auth::FleetArgs;
use anyhow::{Context, Result, anyhow, bail};
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use crater_proto::auth::{AUTHORIZATION, Gate, TokenKind, read_token_file};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use prometheus_client::encoding::prometheus_text;
use prometheus_client::registry::Registry;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls;
use tokio_util::sync::CancellationToken;

/// Connections served at once; more are closed at once. Prometheus needs one per scraper.
pub const MAX_CONNECTIONS: usize = 32;

/// A client that has not finished its TLS handshake, or a request's headers, by then is cut off.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(10);

/// Who may scrape, and over what.
pub struct MetricsAccess {
    gate: Gate,
    tls: Option<TlsAcceptor>,
}

impl MetricsAccess {
    /// The access rule for `--metrics-listen listen` from `serve`'s fleet flags: off loopback,
    /// TLS and status tokens or an error naming what is missing.
    pub fn for_serve(listen: SocketAddr, args: &FleetArgs) -> Result<MetricsAccess> {
        let loopback = listen.ip().is_loopback();
        if !loopback {
            let mut missing = Vec::new();
            if args.tls_cert.is_none() {
                missing.push("TLS (--tls-cert and --tls-key, the ones --listen uses)");
            }
            if args.status_token_file.is_none() {
                missing.push(
                    "status tokens (--status-token-file; scrapers send one as a bearer token)",
                );
            }
            if !missing.is_empty() {
                bail!(
                    "--metrics-listen {listen} is not a loopback address, and serving metrics \
                     to other machines needs {}",
                    missing.join(" and ")
                );
            }
        }
        let gate = match &args.status_token_file {
            Some(path) => Gate::Tokens {
                kind: TokenKind::Status,
                tokens: read_token_file(path)?,
            },
            None => Gate::Open,
        };
        let tls = match (&args.tls_cert, &args.tls_key) {
            (Some(cert), Some(key)) => Some(TlsAcceptor::from(Arc::new(tls_config(cert, key)?))),
            _ => None,
        };
        Ok(MetricsAccess { gate, tls })
    }

    /// `https` or `http`, for the address `serve` prints.
    pub fn scheme(&self) -> &'static str {
        if self.tls.is_some() { "https" } else { "http" }
    }
}

/// The TLS server configuration for the metrics listener: the gRPC port's certificate (chain)
/// and key, on the aws-lc-rs provider tonic uses, speaking HTTP/1.1.
fn tls_config(cert: &Path, key: &Path) -> Result<rustls::ServerConfig> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| anyhow!("--tls-cert {}: {e}", cert.display()))?;
    let key_der = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| anyhow!("--tls-key {}: {e}", key.display()))?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("the TLS provider's protocol versions")?
        .with_no_client_auth()
        .with_single_cert(chain, key_der)
        .with_context(|| {
            format!(
                "--tls-cert {} and --tls-key {} for --metrics-listen",
                cert.display(),
                key.display()
            )
        })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// What a scrape needs: the metrics and who may read them.
#[derive(Clone)]
struct Scrape {
    registry: Arc<Registry>,
    gate: Arc<Gate>,
}

/// The metrics listener, running until [`MetricsServer::stop`].
pub struct MetricsServer {
    task: tokio::task::JoinHandle<()>,
    stop: CancellationToken,
}

impl MetricsServer {
    /// Serves `registry` at `/metrics` on `listener` with `access`, in a task of its own.
    pub fn start(
        listener: TcpListener,
        access: MetricsAccess,
        registry: Registry,
    ) -> MetricsServer {
        let scrape = Scrape {
            registry: Arc::new(registry),
            gate: Arc::new(access.gate),
        };
        let router = Router::new()
            .route("/metrics", axum::routing::get(metrics))
            .with_state(scrape);
        let stop = CancellationToken::new();
        let task = tokio::spawn(accept(listener, router, access.tls, stop.clone()));
        MetricsServer { task, stop }
    }

    /// Stops listening and closes open connections (a scrape cut short is retried by the
    /// scraper at its next interval).
    pub async fn stop(self) {
        self.stop.cancel();
        let _ = self.task.await;
    }
}

/// Accepts connections until `stop`, each served in a task of its own.
async fn accept(
    listener: TcpListener,
    router: Router,
    tls: Option<TlsAcceptor>,
    stop: CancellationToken,
) {
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    // Dropped at the end, which aborts the connections still open.
    let mut connections = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            () = stop.cancelled() => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors, say: wait a little rather than spin.
                tracing::warn!("metrics listener: accepting a connection failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            tracing::warn!(%peer, "metrics listener: {MAX_CONNECTIONS} connections open already: closing");
            continue;
        };
        let (router, tls) = (router.clone(), tls.clone());
        connections.spawn(async move {
            let _permit = permit;
            match tls {
                None => serve_connection(stream, router).await,
                Some(acceptor) => {
                    match tokio::time::timeout(CLIENT_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(stream)) => serve_connection(stream, router).await,
                        Ok(Err(e)) => tracing::debug!(%peer, "metrics: TLS handshake failed: {e}"),
                        Err(_) => tracing::debug!(%peer, "metrics: TLS handshake timed out"),
                    }
                }
            }
        });
    }
}

/// Serves HTTP/1.1 requests on one connection until the client closes it.
async fn serve_connection<I>(io: I, router: Router)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let served = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(CLIENT_TIMEOUT)
        .serve_connection(TokioIo::new(io), TowerToHyperService::new(router))
        .await;
    if let Err(e) = served {
        tracing::debug!("metrics connection: {e}");
    }
}

/// `GET /metrics`: the exposition, for a caller the gate admits.
async fn metrics(State(scrape): State<Scrape>, headers: HeaderMap) -> Response {
    let authorization = headers.get(AUTHORIZATION).map(|v| v.as_bytes());
    if let Err(refusal) = scrape.gate.check(authorization) {
        // The message names the kind of token needed, never the one sent.
        tracing::warn!("refused a metrics scrape: {}", refusal.message());
        return (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            format!("{}\n", refusal.message()),
        )
            .into_response();
    }
    let mut body = String::new();
    match prometheus_text::encode(&mut body, &scrape.registry) {
        Ok(()) => (
            [(header::CONTENT_TYPE, prometheus_text::CONTENT_TYPE)],
            body,
        )
            .into_response(),
        Err(e) => {
            tracing::error!("encoding the metrics: {e}");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn off_loopback_needs_tls_and_status_tokens() {
        let listen: SocketAddr = "10.0.0.5:9100".parse().unwrap();
        let message = MetricsAccess::for_serve(listen, &FleetArgs::default())
            .err()
            .unwrap()
            .to_string();
        assert!(message.contains("--tls-cert"), "{message}");
        assert!(message.contains("--status-token-file"), "{message}");
        let loopback: SocketAddr = "127.0.0.1:9100".parse().unwrap();
        let access = MetricsAccess::for_serve(loopback, &FleetArgs::default()).unwrap();
        assert_eq!(access.scheme(), "http");
        assert!(matches!(access.gate, Gate::Open));
    }
}
