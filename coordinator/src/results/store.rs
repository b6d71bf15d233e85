//! The result store: raw log, rendered HTML and JSON verdict per (tool, crate, version), in a
//! local directory or an S3 bucket, under the same keys.
//!
//! Keys are the seed's (see ARCHITECTURE.md): `{tool}/raw/{name}/{version}`,
//! `{tool}/logs/{name}/{version}`, `{tool}/results/{name}/{version}.json`. Both stores write the
//! JSON last, so a crate with a verdict always has its log, and a crash mid-publish leaves no
//! verdict. Results reach a store only through the [`outbox`](super::outbox), which keeps each one
//! on disk until the store has all of it (the [`uploads`](super::uploads) move them over); that
//! is what makes an unreachable bucket or a killed coordinator lose nothing.

pub mod local;
pub mod s3;

use crate::results::outbox::Entry;
use crate::results::record::ResultRecord;
use anyhow::Result;
use crater_proto::tool::Tool;
use crater_proto::verdict::Verdict;
use std::collections::HashMap;
use time::OffsetDateTime;

pub use local::LocalStore;
pub use s3::{S3Options, S3Store};

pub const RAW_CONTENT_TYPE: &str = "text/plain; charset=utf-8";
pub const HTML_CONTENT_TYPE: &str = "text/html; charset=utf-8";
pub const JSON_CONTENT_TYPE: &str = "application/json";

pub fn raw_key(tool: Tool, name: &str, version: &str) -> String {
    format!("{tool}/raw/{name}/{version}")
}

pub fn html_key(tool: Tool, name: &str, version: &str) -> String {
    format!("{tool}/logs/{name}/{version}")
}

pub fn result_key(tool: Tool, name: &str, version: &str) -> String {
    format!("{tool}/results/{name}/{version}.json")
}

/// `(name, version)` from a `{tool}/results/{name}/{version}.json` key (relative to the
/// `{tool}/results/` prefix).
pub fn parse_result_key(relative: &str) -> Option<(String, String)> {
    let (name, file) = relative.split_once('/')?;
    let version = file.strip_suffix(".json")?;
    (!name.is_empty() && !version.is_empty() && !version.contains('/'))
        .then(|| (name.to_owned(), version.to_owned()))
}

/// What the store knows of a crate's last result without necessarily reading it: a bucket
/// listing gives the time, not the verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Existing {
    pub finished_at: Option<OffsetDateTime>,
    pub status: Option<Verdict>,
}

impl From<&ResultRecord> for Existing {
    fn from(record: &ResultRecord) -> Existing {
        Existing {
            finished_at: OffsetDateTime::parse(
                &record.finished_at,
                &time::format_description::well_known::Rfc3339,
            )
            .ok(),
            status: Some(record.status),
        }
    }
}

/// The finished results of one tool, keyed by `(name, version)`.
pub type FinishedIndex = HashMap<(String, String), Existing>;

/// Why publishing failed, and whether trying again can help.
#[derive(Debug)]
pub enum PublishError {
    /// Throttling, 5xx, timeouts, lost connections: retry with backoff.
    Transient(anyhow::Error),
    /// Access denied, a missing bucket, a full disk: retrying soon will not help.
    Permanent(anyhow::Error),
}

impl PublishError {
    pub fn is_transient(&self) -> bool {
        matches!(self, PublishError::Transient(_))
    }
}

impl std::fmt::Display for PublishError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PublishError::Transient(e) | PublishError::Permanent(e) => write!(f, "{e:#}"),
        }
    }
}

impl std::error::Error for PublishError {}

/// Where results go.
#[derive(Clone)]
pub enum Store {
    Local(LocalStore),
    S3(S3Store),
}

impl Store {
    /// Opens the result store: the bucket (checked: it exists and, with `write`, can be
    /// written) or the local directory `out`.
    pub async fn open(s3: Option<S3Options>, out: &std::path::Path, write: bool) -> Result<Store> {
        match s3 {
            Some(options) => Ok(Store::S3(S3Store::connect(&options, write).await?)),
            None => Ok(Store::Local(LocalStore::open(out)?)),
        }
    }

    /// `s3://bucket/` or the directory, for messages.
    pub fn describe(&self) -> String {
        match self {
            Store::Local(store) => store.root().display().to_string(),
            Store::S3(store) => format!("s3://{}", store.bucket()),
        }
    }

    /// Where a tool's results can be found, for the summary.
    pub fn results_location(&self, tool: Tool) -> String {
        match self {
            Store::Local(store) => store.root().join(tool.name()).display().to_string(),
            Store::S3(store) => format!("s3://{}/{tool}/", store.bucket()),
        }
    }

    /// Stores one result from the outbox: raw log, HTML, then the JSON. Safe to repeat.
    pub async fn publish(&self, entry: &Entry) -> Result<(), PublishError> {
        match self {
            Store::Local(store) => {
                let (store, entry) = (store.clone(), entry.clone());
                tokio::task::spawn_blocking(move || store.publish(&entry))
                    .await
                    .map_err(|e| PublishError::Permanent(e.into()))?
                    .map_err(PublishError::Permanent)
            }
            Store::S3(store) => store.publish(entry).await,
        }
    }

    /// The finished results of `tool` among `wanted`. `need_status`: the verdict of each is
    /// needed too (`--retry-failed`), which a bucket listing does not give.
    pub async fn finished(
        &self,
        tool: Tool,
        wanted: &[(String, String)],
        need_status: bool,
    ) -> Result<FinishedIndex> {
        match self {
            Store::Local(store) => {
                let mut found = FinishedIndex::new();
                for (name, version) in wanted {
                    if let Some(record) = store.result(tool, name, version)? {
                        found.insert((name.clone(), version.clone()), Existing::from(&record));
                    }
                }
                Ok(found)
            }
            Store::S3(store) => store.finished(tool, wanted, need_status).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn result_keys_parse_back() {
        let key = result_key(Tool::Check, "serde_json", "1.0.0+meta");
        let relative = key.strip_prefix("check/results/").unwrap();
        assert_eq!(
            parse_result_key(relative),
            Some(("serde_json".into(), "1.0.0+meta".into()))
        );
        assert_eq!(parse_result_key("serde/1.0.0"), None, "not a .json");
        assert_eq!(parse_result_key("a/b/1.0.0.json"), None, "too deep");
        assert_eq!(parse_result_key("/1.0.0.json"), None);
    }
}
