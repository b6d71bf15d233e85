//! Who may call the coordinator, and over what: TLS, and which token each gRPC method needs.
//!
//! `Work` needs an agent token, `Status` a status token ([`crater_proto::auth`] has the tokens
//! and the constant-time check). The check is a tower layer around all of the server's routes
//! rather than a tonic interceptor, because an interceptor is not told which method is called,
//! and rather than a line at the top of each method, because then a method added later would be
//! open until someone remembered it: here a method missing from [`Access::gate`] is refused.
//!
//! [`Security::for_serve`] holds the rule for `serve`: plain http and missing tokens only on a
//! loopback address, anywhere else it refuses to start and names what is missing. `run`'s
//! embedded server listens on loopback for its own agent and is [`Security::loopback`].

use anyhow::{Context, Result, bail};
use crater_proto::auth::{AUTHORIZATION, Gate, TokenKind, read_token_file};
use crater_proto::client::chain;
use crater_proto::pb::coordinator_server::SERVICE_NAME;
use futures::future::{Either, Ready, ready};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};
use tonic::codegen::http;
use tonic::transport::{Identity, Server, ServerTlsConfig};
use tower::layer::util::{Identity as NoLayer, Stack};

/// How `serve` is reached from other machines (`crater-at-home tls init` makes the files).
#[derive(clap::Args, Debug, Clone, Default)]
pub struct FleetArgs {
    /// Serve TLS with this certificate (PEM, the chain after it if any): `server.pem`.
    #[arg(long, value_name = "PATH", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The TLS certificate's private key (PEM): `server-key.pem`.
    #[arg(long, value_name = "PATH", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Agents must send one of the tokens in this file (one a line, `#` comments; several for
    /// rotation) to take work.
    #[arg(long, value_name = "PATH")]
    pub agent_token_file: Option<PathBuf>,
    /// `status` must send one of the tokens in this file. Off loopback, without it `status` is
    /// refused to everyone; agent tokens never admit it.
    #[arg(long, value_name = "PATH")]
    pub status_token_file: Option<PathBuf>,
}

/// Which calls need which token. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Access {
    work: Gate,
    status: Gate,
}

impl Access {
    /// Everything open: a loopback server without token files.
    pub fn open() -> Access {
        Access {
            work: Gate::Open,
            status: Gate::Open,
        }
    }

    /// The gate for the gRPC method at `path` (`/crater.v1.Coordinator/Work`); `None` for a
    /// method this table does not know.
    fn gate(&self, path: &str) -> Option<&Gate> {
        let method = path
            .strip_prefix('/')?
            .strip_prefix(SERVICE_NAME)?
            .strip_prefix('/')?;
        match method {
            "Work" => Some(&self.work),
            "Status" => Some(&self.status),
            _ => None,
        }
    }

    /// Admits a call to `path` with this `authorization` header, or says why not.
    fn check(&self, path: &str, authorization: Option<&[u8]>) -> Result<(), tonic::Status> {
        match self.gate(path) {
            Some(gate) => gate.check(authorization),
            // Unknown methods are left to the router (which answers UNIMPLEMENTED) only when
            // nothing needs a token anyway.
            None if matches!((&self.work, &self.status), (Gate::Open, Gate::Open)) => Ok(()),
            None => Err(tonic::Status::unauthenticated(format!(
                "{path} is not a method this coordinator admits anyone to"
            ))),
        }
    }
}

/// The layer that puts [`Access`] in front of the server's routes.
#[derive(Clone, Debug)]
pub struct AuthLayer(Arc<Access>);

impl<S> tower::Layer<S> for AuthLayer {
    type Service = Authenticated<S>;

    fn layer(&self, inner: S) -> Authenticated<S> {
        Authenticated {
            inner,
            access: self.0.clone(),
        }
    }
}

/// The routes behind [`Access`]: a refused call is answered `UNAUTHENTICATED` here and never
/// reaches the coordinator.
#[derive(Clone, Debug)]
pub struct Authenticated<S> {
    inner: S,
    access: Arc<Access>,
}

type Reply = http::Response<tonic::body::Body>;

impl<S, B> tower::Service<http::Request<B>> for Authenticated<S>
where
    S: tower::Service<http::Request<B>, Response = Reply>,
{
    type Response = Reply;
    type Error = S::Error;
    type Future = Either<Ready<Result<Reply, S::Error>>, S::Future>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let authorization = request
            .headers()
            .get(AUTHORIZATION)
            .map(http::HeaderValue::as_bytes);
        match self.access.check(request.uri().path(), authorization) {
            Ok(()) => Either::Right(self.inner.call(request)),
            Err(refusal) => {
                // The message names the kind of token needed, never the one sent.
                tracing::warn!(
                    method = request.uri().path(),
                    "refused a call: {}",
                    refusal.message()
                );
                Either::Left(ready(Ok(refusal.into_http())))
            }
        }
    }
}

/// How a coordinator's gRPC server is reached: TLS or not, and who may call what.
#[derive(Clone, Debug)]
pub struct Security {
    tls: Option<ServerTlsConfig>,
    access: Access,
}

impl Security {
    /// Plain http, no tokens: `run`'s server, which only its own agent reaches on loopback.
    pub fn loopback() -> Security {
        Security {
            tls: None,
            access: Access::open(),
        }
    }

    /// `serve`'s security from its flags. On a non-loopback `listen` address TLS and agent tokens
    /// are required (the error names what is missing); without status tokens there, `status` is
    /// refused to everyone.
    pub fn for_serve(listen: SocketAddr, args: &FleetArgs) -> Result<Security> {
        let loopback = listen.ip().is_loopback();
        if !loopback {
            let mut missing = Vec::new();
            if args.tls_cert.is_none() {
                missing.push("TLS (--tls-cert and --tls-key)");
            }
            if args.agent_token_file.is_none() {
                missing.push("agent tokens (--agent-token-file)");
            }
            if !missing.is_empty() {
                bail!(
                    "--listen {listen} is not a loopback address, and serving other machines \
                     needs {}. `crater-at-home tls init --out fleet/ --host NAME` makes the \
                     certificates and tokens",
                    missing.join(" and ")
                );
            }
        }
        let tls = match (&args.tls_cert, &args.tls_key) {
            (Some(cert), Some(key)) => Some(tls_config(cert, key)?),
            (None, None) => None,
            // clap makes each require the other.
            _ => bail!("--tls-cert and --tls-key go together"),
        };
        let gate = |kind: TokenKind, file: &Option<std::path::PathBuf>| -> Result<Gate> {
            Ok(match file {
                Some(path) => {
                    warn_if_readable_by_others(path, kind.file_flag());
                    Gate::Tokens {
                        kind,
                        tokens: read_token_file(path)?,
                    }
                }
                None if loopback => Gate::Open,
                None => Gate::Tokens {
                    kind,
                    tokens: Vec::new(),
                },
            })
        };
        let access = Access {
            work: gate(TokenKind::Agent, &args.agent_token_file)?,
            status: gate(TokenKind::Status, &args.status_token_file)?,
        };
        if !loopback && args.status_token_file.is_none() {
            eprintln!(
                "note: no --status-token-file, so `crater-at-home status` is refused to everyone"
            );
        }
        Ok(Security { tls, access })
    }

    /// `https` or `http`, for the address the coordinator prints.
    pub fn scheme(&self) -> &'static str {
        if self.tls.is_some() { "https" } else { "http" }
    }

    /// A tonic server builder with this TLS and this access check; add the service to it.
    pub fn server(&self) -> Server<Stack<AuthLayer, NoLayer>> {
        // HTTP/2 keepalive: a connection whose peer vanished (a cut cable, a dead host) fails
        // in seconds instead of when the kernel gives up on TCP.
        let builder = Server::builder()
            .http2_keepalive_interval(Some(std::time::Duration::from_secs(10)))
            .http2_keepalive_timeout(Some(std::time::Duration::from_secs(20)));
        let builder = match &self.tls {
            Some(tls) => builder
                .tls_config(tls.clone())
                .expect("tls_config checked this configuration already"),
            None => builder,
        };
        builder.layer(AuthLayer(Arc::new(self.access.clone())))
    }
}

/// The server's TLS from its certificate (chain) and key in PEM, checked now so that a bad pair
/// stops `serve` before it listens.
fn tls_config(cert: &Path, key: &Path) -> Result<ServerTlsConfig> {
    let cert_pem =
        std::fs::read(cert).with_context(|| format!("reading --tls-cert {}", cert.display()))?;
    let key_pem =
        std::fs::read(key).with_context(|| format!("reading --tls-key {}", key.display()))?;
    if !contains(&cert_pem, b"-----BEGIN CERTIFICATE-----") {
        bail!("--tls-cert {}: no PEM certificate in it", cert.display());
    }
    if !contains(&key_pem, b"PRIVATE KEY-----") {
        bail!("--tls-key {}: no PEM private key in it", key.display());
    }
    warn_if_readable_by_others(key, "--tls-key");
    let config = ServerTlsConfig::new().identity(Identity::from_pem(cert_pem, key_pem));
    if let Err(e) = Server::builder().tls_config(config.clone()) {
        bail!(
            "--tls-cert {} and --tls-key {}: {}",
            cert.display(),
            key.display(),
            chain(&e)
        );
    }
    Ok(config)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// A secret file others can read is worth a warning (not a refusal: they may be trusted).
fn warn_if_readable_by_others(path: &Path, flag: &str) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = std::fs::metadata(path)
        && meta.permissions().mode() & 0o077 != 0
    {
        tracing::warn!(
            "{flag} {}: other users can read it (chmod 600 it)",
            path.display()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crater_proto::auth::Token;

    const AGENT: &str = "0123456789abcdef0123456789abcdef";
    const STATUS: &str = "fedcba9876543210fedcba9876543210";

    fn fleet_access() -> Access {
        Access {
            work: Gate::Tokens {
                kind: TokenKind::Agent,
                tokens: vec![Token::parse(AGENT).unwrap()],
            },
            status: Gate::Tokens {
                kind: TokenKind::Status,
                tokens: vec![Token::parse(STATUS).unwrap()],
            },
        }
    }

    fn bearer(token: &str) -> Vec<u8> {
        format!("Bearer {token}").into_bytes()
    }

    #[test]
    fn each_method_needs_its_own_kind_of_token() {
        let access = fleet_access();
        let work = "/crater.v1.Coordinator/Work";
        let status = "/crater.v1.Coordinator/Status";
        access.check(work, Some(&bearer(AGENT))).unwrap();
        access.check(status, Some(&bearer(STATUS))).unwrap();
        let refused = access.check(status, Some(&bearer(AGENT))).unwrap_err();
        assert!(refused.message().contains("a status token"), "{refused:?}");
        let refused = access.check(work, Some(&bearer(STATUS))).unwrap_err();
        assert!(refused.message().contains("an agent token"), "{refused:?}");
        assert!(access.check(work, None).is_err());
    }

    #[test]
    fn unknown_methods_are_refused_unless_everything_is_open() {
        let unknown = "/crater.v1.Coordinator/Metrics";
        let refused = fleet_access()
            .check(unknown, Some(&bearer(AGENT)))
            .unwrap_err();
        assert_eq!(refused.code(), tonic::Code::Unauthenticated);
        assert!(
            fleet_access()
                .check("/other.Service/Work", Some(&bearer(AGENT)))
                .is_err()
        );
        Access::open().check(unknown, None).unwrap();
    }

    #[test]
    fn serve_off_loopback_needs_tls_and_agent_tokens() {
        let listen: SocketAddr = "10.0.0.5:7878".parse().unwrap();
        let none = FleetArgs::default();
        let message = Security::for_serve(listen, &none).unwrap_err().to_string();
        assert!(message.contains("--tls-cert"), "{message}");
        assert!(message.contains("--agent-token-file"), "{message}");
        let loopback: SocketAddr = "127.0.0.1:7878".parse().unwrap();
        let security = Security::for_serve(loopback, &none).unwrap();
        assert_eq!(security.scheme(), "http");
        assert!(matches!(security.access.work, Gate::Open));
    }
}
