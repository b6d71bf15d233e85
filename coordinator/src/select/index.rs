//! crates.io's sparse index: which versions a crate has, their checksums, which are yanked.
//!
//! One HTTP GET per crate (`https://index.crates.io/{prefix}/{name}`, JSON lines). The checksum it
//! lists is what the agent checks the downloaded .crate against, so the index is the root of
//! trust for what gets built.

use backon::{ExponentialBuilder, Retryable};
use crater_proto::crate_ref::CrateRef;
use serde::Deserialize;
use std::time::Duration;

pub const DEFAULT_INDEX_URL: &str = "https://index.crates.io";

#[derive(Debug, Clone, Deserialize)]
pub struct IndexVersion {
    /// The crate's canonical name (the index is case-insensitive, the store is not).
    pub name: String,
    pub vers: String,
    pub cksum: String,
    #[serde(default)]
    pub yanked: bool,
}

/// The version of a crate to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    pub name: String,
    pub version: String,
    pub checksum: String,
    pub yanked: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error("`{0}`: no such crate on crates.io")]
    NotFound(String),
    #[error("`{entry}`: crates.io has no version {version} of {name}")]
    NoSuchVersion {
        entry: String,
        name: String,
        version: String,
    },
    #[error("`{0}`: every version is yanked")]
    AllYanked(String),
    #[error("`{entry}`: reading the index: {message}")]
    Unavailable { entry: String, message: String },
}

#[derive(Clone)]
pub struct Index {
    client: reqwest::Client,
    base_url: String,
}

/// Why one fetch failed, before it is tied to an entry.
enum FetchFailure {
    NotFound,
    Transient(String),
    Final(String),
}

impl Index {
    pub fn new(base_url: impl Into<String>) -> anyhow::Result<Index> {
        Ok(Index {
            client: http_client()?,
            base_url: base_url.into(),
        })
    }

    /// Picks the version `krate` names, or the newest non-yanked one.
    pub async fn resolve(&self, krate: &CrateRef) -> Result<Resolved, IndexError> {
        let entry = krate.to_string();
        let versions = self.versions(&krate.name).await.map_err(|f| match f {
            FetchFailure::NotFound => IndexError::NotFound(entry.clone()),
            FetchFailure::Transient(message) | FetchFailure::Final(message) => {
                IndexError::Unavailable {
                    entry: entry.clone(),
                    message,
                }
            }
        })?;
        pick(&entry, &versions, krate.version.as_ref())
    }

    async fn versions(&self, name: &str) -> Result<Vec<IndexVersion>, FetchFailure> {
        let url = format!("{}/{}", self.base_url, index_path(name));
        (|| self.fetch(&url))
            .retry(
                ExponentialBuilder::default()
                    .with_jitter()
                    .with_min_delay(Duration::from_millis(500))
                    .with_max_times(4),
            )
            .when(|f| matches!(f, FetchFailure::Transient(_)))
            .await
    }

    async fn fetch(&self, url: &str) -> Result<Vec<IndexVersion>, FetchFailure> {
        let response = self
            .client
            .get(url)
            .send()
            .await
            .map_err(|e| FetchFailure::Transient(format!("{url}: {e}")))?;
        let status = response.status();
        // The sparse index answers 404 (or 403 from the CDN) for a crate that does not exist.
        if status == reqwest::StatusCode::NOT_FOUND || status == reqwest::StatusCode::FORBIDDEN {
            return Err(FetchFailure::NotFound);
        }
        if status.is_server_error() || status == reqwest::StatusCode::TOO_MANY_REQUESTS {
            return Err(FetchFailure::Transient(format!("{url}: {status}")));
        }
        if !status.is_success() {
            return Err(FetchFailure::Final(format!("{url}: {status}")));
        }
        let body = response
            .text()
            .await
            .map_err(|e| FetchFailure::Transient(format!("{url}: {e}")))?;
        parse_index_file(&body).map_err(|e| FetchFailure::Final(format!("{url}: {e}")))
    }
}

/// The client for index requests. It names itself, as crates.io asks of automated clients, and
/// gives up on a request after a minute (an index file is small), leaving the rest to retries.
fn http_client() -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder()
        .user_agent(concat!("crater-at-home/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(Duration::from_secs(30))
        .timeout(Duration::from_secs(60))
        .build()
}

/// The index file's path: `1/a`, `2/ab`, `3/a/abc`, `ab/cd/abcd…`, lowercased.
pub fn index_path(name: &str) -> String {
    let name = name.to_ascii_lowercase();
    match name.len() {
        1 => format!("1/{name}"),
        2 => format!("2/{name}"),
        3 => format!("3/{}/{name}", &name[..1]),
        _ => format!("{}/{}/{name}", &name[..2], &name[2..4]),
    }
}

pub fn parse_index_file(body: &str) -> Result<Vec<IndexVersion>, serde_json::Error> {
    body.lines()
        .filter(|l| !l.trim().is_empty())
        .map(serde_json::from_str)
        .collect()
}

/// The requested version, or the newest non-yanked one: the highest stable version, or the
/// highest pre-release when there is no stable one.
pub fn pick(
    entry: &str,
    versions: &[IndexVersion],
    requested: Option<&semver::Version>,
) -> Result<Resolved, IndexError> {
    let parsed = versions
        .iter()
        .filter_map(|v| semver::Version::parse(&v.vers).ok().map(|s| (s, v)));
    let chosen = match requested {
        Some(want) => parsed
            .filter(|(s, _)| s == want)
            .map(|(_, v)| v)
            .next()
            .ok_or_else(|| IndexError::NoSuchVersion {
                entry: entry.to_owned(),
                name: versions
                    .first()
                    .map_or_else(|| entry.to_owned(), |v| v.name.clone()),
                version: want.to_string(),
            })?,
        None => parsed
            .filter(|(_, v)| !v.yanked)
            .max_by(|(a, _), (b, _)| (a.pre.is_empty(), a).cmp(&(b.pre.is_empty(), b)))
            .map(|(_, v)| v)
            .ok_or_else(|| IndexError::AllYanked(entry.to_owned()))?,
    };
    Ok(Resolved {
        name: chosen.name.clone(),
        version: chosen.vers.clone(),
        checksum: chosen.cksum.clone(),
        yanked: chosen.yanked,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(vers: &str, yanked: bool) -> IndexVersion {
        IndexVersion {
            name: "Foo".into(),
            vers: vers.into(),
            cksum: format!("sum-{vers}"),
            yanked,
        }
    }

    #[test]
    fn index_paths_follow_the_registry_layout() {
        assert_eq!(index_path("a"), "1/a");
        assert_eq!(index_path("ab"), "2/ab");
        assert_eq!(index_path("abc"), "3/a/abc");
        assert_eq!(index_path("Serde_JSON"), "se/rd/serde_json");
    }

    #[test]
    fn picks_the_newest_stable_non_yanked_version() {
        let versions = [
            v("1.0.0", false),
            v("1.10.0", false),
            v("1.9.0", false),
            v("2.0.0", true),
            v("3.0.0-alpha.1", false),
        ];
        let r = pick("foo", &versions, None).unwrap();
        assert_eq!((r.name.as_str(), r.version.as_str()), ("Foo", "1.10.0"));
        assert_eq!(r.checksum, "sum-1.10.0");
        assert!(!r.yanked);
    }

    #[test]
    fn falls_back_to_a_prerelease_when_nothing_is_stable() {
        let versions = [v("0.1.0-alpha.1", false), v("0.1.0-beta.2", false)];
        assert_eq!(
            pick("foo", &versions, None).unwrap().version,
            "0.1.0-beta.2"
        );
        let yanked = [v("1.0.0", true)];
        assert!(matches!(
            pick("foo", &yanked, None),
            Err(IndexError::AllYanked(_))
        ));
    }

    #[test]
    fn a_requested_version_must_exist() {
        let versions = [v("1.0.0", false), v("1.1.0", true)];
        let want = semver::Version::new(1, 1, 0);
        let r = pick("foo@1.1.0", &versions, Some(&want)).unwrap();
        assert!(r.yanked, "a yanked version is reported as such");
        let missing = semver::Version::new(9, 0, 0);
        let err = pick("foo@9.0.0", &versions, Some(&missing)).unwrap_err();
        assert!(err.to_string().contains("no version 9.0.0"), "{err}");
    }

    #[test]
    fn parses_real_index_lines() {
        let body = r#"{"name":"itoa","vers":"1.0.0","deps":[],"cksum":"abc","features":{},"yanked":false}
{"name":"itoa","vers":"1.0.1","deps":[],"cksum":"def","features":{},"yanked":true,"rust_version":"1.36","v":2,"features2":{}}
"#;
        let versions = parse_index_file(body).unwrap();
        assert_eq!(versions.len(), 2);
        assert!(versions[1].yanked);
        assert_eq!(versions[1].cksum, "def");
    }
}
