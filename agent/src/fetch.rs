//! Downloading a crate from crates.io, checked against the index before it reaches a container.
//!
//! The coordinator sends the SHA-256 the registry index lists for the version; a download that
//! does not match it is refused, never built. Transient failures (connection errors, timeouts,
//! 5xx, 429) are retried with backoff; a 404 or a checksum mismatch is final.

use backon::{ExponentialBuilder, Retryable};
use bytes::Bytes;
use sha2::{Digest, Sha256};
use std::time::Duration;

/// crates.io's download host (the `dl` of its index config).
pub const DEFAULT_DOWNLOAD_URL: &str = "https://static.crates.io/crates";

/// The largest .crate we accept (crates.io's own limit is 10 MiB for most crates).
const MAX_CRATE_BYTES: u64 = 128 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("downloading {url}: {source}")]
    Http {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("downloading {url}: the server answered {status}")]
    Status {
        url: String,
        status: reqwest::StatusCode,
    },
    #[error("downloading {url}: larger than {MAX_CRATE_BYTES} bytes")]
    TooLarge { url: String },
    #[error("{url}: checksum mismatch: the index says {expected}, the download is {actual}")]
    Checksum {
        url: String,
        expected: String,
        actual: String,
    },
}

impl FetchError {
    fn is_transient(&self) -> bool {
        match self {
            FetchError::Http { .. } => true,
            FetchError::Status { status, .. } => {
                status.is_server_error() || *status == reqwest::StatusCode::TOO_MANY_REQUESTS
            }
            FetchError::TooLarge { .. } | FetchError::Checksum { .. } => false,
        }
    }
}

#[derive(Clone)]
pub struct Downloader {
    client: reqwest::Client,
    base_url: String,
}

/// The HTTP client for crates.io (index and downloads): our user agent, bounded waits, and
/// TLS that trusts the system's CA bundle (a TLS-inspecting proxy included).
pub fn http_client(timeout: Duration) -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder()
        .user_agent(concat!("crater-at-home/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(Duration::from_secs(30))
        .timeout(timeout)
        .build()
}

impl Downloader {
    pub fn new(base_url: impl Into<String>) -> anyhow::Result<Downloader> {
        Ok(Downloader {
            client: http_client(Duration::from_secs(300))?,
            base_url: base_url.into(),
        })
    }

    /// Downloads `name` `version` and checks it against `sha256_hex`.
    pub async fn download(
        &self,
        name: &str,
        version: &str,
        sha256_hex: &str,
    ) -> Result<Bytes, FetchError> {
        let url = format!("{}/{name}/{name}-{version}.crate", self.base_url);
        let bytes = (|| self.get(&url))
            .retry(
                ExponentialBuilder::default()
                    .with_jitter()
                    .with_min_delay(Duration::from_millis(500))
                    .with_max_times(4),
            )
            .when(FetchError::is_transient)
            .notify(|e, after| tracing::warn!("{e}; retrying in {after:?}"))
            .await?;
        verify(&url, &bytes, sha256_hex)?;
        Ok(bytes)
    }

    async fn get(&self, url: &str) -> Result<Bytes, FetchError> {
        let http = |source| FetchError::Http {
            url: url.to_owned(),
            source,
        };
        let response = self.client.get(url).send().await.map_err(http)?;
        if !response.status().is_success() {
            return Err(FetchError::Status {
                url: url.to_owned(),
                status: response.status(),
            });
        }
        if response.content_length().unwrap_or(0) > MAX_CRATE_BYTES {
            return Err(FetchError::TooLarge {
                url: url.to_owned(),
            });
        }
        let bytes = response.bytes().await.map_err(http)?;
        if bytes.len() as u64 > MAX_CRATE_BYTES {
            return Err(FetchError::TooLarge {
                url: url.to_owned(),
            });
        }
        Ok(bytes)
    }
}

fn verify(url: &str, bytes: &[u8], sha256_hex: &str) -> Result<(), FetchError> {
    let actual = hex::encode(Sha256::digest(bytes));
    if !actual.eq_ignore_ascii_case(sha256_hex) {
        return Err(FetchError::Checksum {
            url: url.to_owned(),
            expected: sha256_hex.to_owned(),
            actual,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verify_accepts_only_the_listed_digest() {
        // SHA-256 of "abc".
        let digest = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        assert!(verify("u", b"abc", digest).is_ok());
        assert!(verify("u", b"abc", &digest.to_uppercase()).is_ok());
        let err = verify("u", b"abd", digest).unwrap_err();
        assert!(!err.is_transient());
        assert!(err.to_string().contains("checksum mismatch"), "{err}");
    }
}
