//! How a client (an agent, `crater-at-home status`) reaches a coordinator: which addresses it
//! may use and how, TLS trusting the system's roots plus the fleet's CA, and its token.
//!
//! Plain `http://` and calls without a token are for a coordinator on this machine (loopback)
//! only: anywhere else the token would cross the network in clear, or anyone could take work,
//! so the client refuses to start and says what is missing. [`endpoint`] makes that decision
//! before anything connects, so a binary can call it first and fail fast.

use crate::auth::{BearerToken, TOKEN_ENV, Token};
use crate::pb::coordinator_client::CoordinatorClient;
use std::error::Error as _;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Uri};

/// A coordinator client that sends its token (if any) with every call.
pub type Client = CoordinatorClient<InterceptedService<Channel, BearerToken>>;

/// Why a client will not connect. Never quotes a token.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("--coordinator {address}: not an address ({reason})")]
    NotAnAddress { address: String, reason: String },
    #[error(
        "--coordinator {address}: give an https:// address (or http:// to this machine), like \
         https://coord.example.internal:7878"
    )]
    Scheme { address: String },
    #[error(
        "--coordinator {address}: plain http:// is only for a coordinator on this machine \
         (loopback); use https:// with --ca-cert (`crater-at-home tls init` makes the \
         certificates)"
    )]
    PlainHttp { address: String },
    #[error("--ca-cert is for https:// addresses; --coordinator {address} is plain http")]
    CaCertWithoutTls { address: String },
    #[error(
        "--coordinator {address} is not on this machine: give a token with --token-file or \
         {TOKEN_ENV} (`crater-at-home tls init` makes them)"
    )]
    MissingToken { address: String },
    #[error("--ca-cert {}: {source}", path.display())]
    ReadCaCert {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("--ca-cert {}: no PEM certificate in it (expected the ca.pem `crater-at-home tls init` wrote)", path.display())]
    CaCertNotPem { path: PathBuf },
    #[error("setting up TLS for {address}: {}", chain(source))]
    Tls {
        address: String,
        source: tonic::transport::Error,
    },
}

/// Whether `host` (as in a URL; IPv6 in brackets) is this machine's loopback.
pub fn is_loopback_host(host: &str) -> bool {
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    bare.eq_ignore_ascii_case("localhost")
        || bare.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// The endpoint for the coordinator at `address`, with TLS for `https://` (the system's roots
/// plus `ca_cert`), after checking the loopback rule for plain http and a missing token.
/// Connects nothing yet; the caller adds its timeouts and connects.
pub fn endpoint(
    address: &str,
    ca_cert: Option<&Path>,
    token: Option<&Token>,
) -> Result<Endpoint, ClientError> {
    let uri: Uri = address
        .parse()
        .map_err(
            |e: tonic::codegen::http::uri::InvalidUri| ClientError::NotAnAddress {
                address: address.to_owned(),
                reason: e.to_string(),
            },
        )?;
    let Some(host) = uri.host() else {
        return Err(ClientError::Scheme {
            address: address.to_owned(),
        });
    };
    let loopback = is_loopback_host(host);
    let tls = match uri.scheme_str() {
        Some("https") => true,
        Some("http") if loopback => false,
        Some("http") => {
            return Err(ClientError::PlainHttp {
                address: address.to_owned(),
            });
        }
        _ => {
            return Err(ClientError::Scheme {
                address: address.to_owned(),
            });
        }
    };
    if !tls && ca_cert.is_some() {
        return Err(ClientError::CaCertWithoutTls {
            address: address.to_owned(),
        });
    }
    if token.is_none() && !loopback {
        return Err(ClientError::MissingToken {
            address: address.to_owned(),
        });
    }
    let endpoint = Endpoint::from(uri);
    if !tls {
        return Ok(endpoint);
    }
    let mut config = ClientTlsConfig::new();
    if let Some(path) = ca_cert {
        let pem = std::fs::read(path).map_err(|source| ClientError::ReadCaCert {
            path: path.to_owned(),
            source,
        })?;
        // tonic skips what is not a certificate without a word; say so instead.
        if !pem
            .windows(b"-----BEGIN CERTIFICATE-----".len())
            .any(|w| w == b"-----BEGIN CERTIFICATE-----")
        {
            return Err(ClientError::CaCertNotPem {
                path: path.to_owned(),
            });
        }
        config = config.ca_certificate(Certificate::from_pem(pem));
    }
    let tls_error = |source| ClientError::Tls {
        address: address.to_owned(),
        source,
    };
    match endpoint
        .clone()
        .tls_config(config.clone().with_native_roots())
    {
        Ok(endpoint) => Ok(endpoint),
        // A machine without a system CA bundle (a slim container) still trusts the fleet's CA.
        Err(_) if ca_cert.is_some() => endpoint.tls_config(config).map_err(tls_error),
        Err(e) => Err(tls_error(e)),
    }
}

/// A client on `channel` that sends `token` with every call, with the protocol's message limits.
pub fn client(channel: Channel, token: Option<&Token>) -> Client {
    CoordinatorClient::with_interceptor(channel, BearerToken::new(token))
        .max_decoding_message_size(crate::MAX_MESSAGE_BYTES)
        .max_encoding_message_size(crate::MAX_MESSAGE_BYTES)
}

/// Whether a failed connect was the coordinator's TLS refusing us (or us refusing its
/// certificate): trying again cannot help, unlike a coordinator that is not up yet.
pub fn is_tls_failure(error: &tonic::transport::Error) -> bool {
    let mut source = error.source();
    while let Some(e) = source {
        // tokio-rustls reports handshake failures (bad certificate, unknown CA, wrong name, no
        // common protocol) as InvalidData; an unreachable host is ConnectionRefused, TimedOut...
        if let Some(io) = e.downcast_ref::<std::io::Error>()
            && io.kind() == std::io::ErrorKind::InvalidData
        {
            return true;
        }
        source = e.source();
    }
    false
}

/// `error` and its sources, `: `-separated, for people: tonic's transport error says only
/// "transport error" and a status's `Display` is a debugging dump.
pub fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    // A status's own `Display` is a debugging dump (code, quoted message, its source's `Debug`).
    let text_of = |e: &(dyn std::error::Error + 'static)| match e.downcast_ref::<tonic::Status>() {
        Some(status) => status.message().to_owned(),
        None => e.to_string(),
    };
    let mut text = text_of(error);
    let mut source = error.source();
    while let Some(e) = source {
        let next = text_of(e);
        // Some layers repeat their source's text; say it once.
        if !next.is_empty() && !text.ends_with(&next) {
            if !text.is_empty() {
                text.push_str(": ");
            }
            text.push_str(&next);
        }
        source = e.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token() -> Token {
        Token::parse("0123456789abcdef0123456789abcdef").unwrap()
    }

    #[test]
    fn loopback_hosts() {
        for host in ["localhost", "LOCALHOST", "127.0.0.1", "127.1.2.3", "[::1]"] {
            assert!(is_loopback_host(host), "{host}");
        }
        for host in [
            "10.0.0.5",
            "0.0.0.0",
            "coord.example.internal",
            "[2001:db8::1]",
        ] {
            assert!(!is_loopback_host(host), "{host}");
        }
    }

    #[test]
    fn plain_http_and_no_token_only_on_loopback() {
        endpoint("http://127.0.0.1:7878", None, None).unwrap();
        endpoint("http://localhost:7878", None, Some(&token())).unwrap();
        endpoint("https://127.0.0.1:7878", None, None).unwrap();
        let e = endpoint("http://10.0.0.5:7878", None, Some(&token())).unwrap_err();
        assert!(matches!(e, ClientError::PlainHttp { .. }), "{e}");
        let e = endpoint("https://10.0.0.5:7878", None, None).unwrap_err();
        assert!(matches!(e, ClientError::MissingToken { .. }), "{e}");
        assert!(e.to_string().contains("--token-file"), "{e}");
        endpoint("https://10.0.0.5:7878", None, Some(&token())).unwrap();
        let e = endpoint("ftp://10.0.0.5", None, None).unwrap_err();
        assert!(matches!(e, ClientError::Scheme { .. }), "{e}");
        let e = endpoint(
            "http://127.0.0.1:7878",
            Some(Path::new("/nonexistent")),
            None,
        )
        .unwrap_err();
        assert!(matches!(e, ClientError::CaCertWithoutTls { .. }), "{e}");
        let e = endpoint(
            "https://127.0.0.1:7878",
            Some(Path::new("/nonexistent/ca.pem")),
            None,
        )
        .unwrap_err();
        assert!(matches!(e, ClientError::ReadCaCert { .. }), "{e}");
    }
}
