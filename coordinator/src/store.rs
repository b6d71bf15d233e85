//! The result store: raw log, rendered HTML and JSON verdict per (tool, crate, version), in a
//! local directory or an S3 bucket, under the same keys.
//!
//! Keys are the seed's (see ARCHITECTURE.md): `{tool}/raw/{name}/{version}`,
//! `{tool}/logs/{name}/{version}`, `{tool}/results/{name}/{version}.json`. Both stores write the
//! JSON last, so a crate with a verdict always has its log, and a crash mid-publish leaves no
//! verdict. Results reach a store only through the [`crate::outbox`], which keeps each one on
//! disk until the store has all of it; that is what makes an unreachable bucket or a killed
//! coordinator lose nothing.

pub mod local;
pub mod s3;

use crate::diagnose::Cause;
use crate::outbox::Entry;
use anyhow::Result;
use crater_proto::tool::Tool;
use crater_proto::verdict::Verdict;
use serde::{Deserialize, Serialize};
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

/// Everything known about one finished run of a crate: the JSON verdict.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResultRecord {
    #[serde(rename = "crate")]
    pub name: String,
    pub version: String,
    pub tool: String,
    pub target: String,
    pub status: Verdict,
    /// `crates.io` or the local directory the crate came from.
    pub source: String,
    /// The step that failed (`prepare`, `build`, `test`), if one did.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub failed_step: Option<String>,
    pub exit_code: i32,
    pub timed_out: bool,
    /// Which limit ended a timed-out job: `wall`, `idle` or `backstop`.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub timeout_kind: Option<String>,
    /// The kernel OOM-killed one of the job's processes.
    #[serde(default)]
    pub oom: bool,
    /// Bytes dropped from the middle of the log (`--max-log-bytes`).
    #[serde(default)]
    pub log_truncated_bytes: u64,
    /// The UB reports found in the log (Miri, ASan, runtime checks), for `ub`; and the limit a
    /// failed job ran into (`no-space`, detector `limit`).
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub causes: Vec<Cause>,
    /// ASan warned that its reports may be false positives.
    #[serde(skip_serializing_if = "std::ops::Not::not", default)]
    pub probable_false_positive: bool,
    /// Why the crate was not run, for `skipped`.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub skip_reason: Option<String>,
    /// Why the harness (not the crate) failed, for `error`.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub harness_error: Option<String>,
    pub duration_ms: u64,
    pub peak_memory_bytes: u64,
    /// RFC 3339.
    pub started_at: String,
    pub finished_at: String,
    /// The coordinator's attempt (a job is re-leased when its agent is lost).
    pub attempt: u32,
    /// Containers the agent started for this attempt (a lost container is replaced).
    pub tries: u32,
    pub agent: String,
    pub slot: u32,
    pub log_bytes: u64,
    pub log_sha256: String,
}

impl ResultRecord {
    /// The verdict for a version that was not run (yanked or missing); its log is the reason.
    pub fn skipped(tool: Tool, name: &str, version: &str, reason: &str, log_bytes: u64) -> Self {
        let now = OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default();
        ResultRecord {
            name: name.to_owned(),
            version: version.to_owned(),
            tool: tool.to_string(),
            target: String::new(),
            status: Verdict::Skipped,
            source: "crates.io".to_owned(),
            failed_step: None,
            exit_code: 0,
            timed_out: false,
            timeout_kind: None,
            oom: false,
            log_truncated_bytes: 0,
            causes: Vec::new(),
            probable_false_positive: false,
            skip_reason: Some(reason.to_owned()),
            harness_error: None,
            duration_ms: 0,
            peak_memory_bytes: 0,
            started_at: now.clone(),
            finished_at: now,
            attempt: 0,
            tries: 0,
            agent: String::new(),
            slot: 0,
            log_bytes,
            log_sha256: String::new(),
        }
    }
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

/// A plausible record, for tests.
#[cfg(test)]
pub(crate) fn sample_record(name: &str, version: &str) -> ResultRecord {
    ResultRecord {
        name: name.into(),
        version: version.into(),
        tool: "check".into(),
        target: "x86_64-unknown-linux-gnu".into(),
        status: Verdict::BuildFail,
        source: "crates.io".into(),
        failed_step: Some("build".into()),
        exit_code: 101,
        timed_out: false,
        timeout_kind: None,
        oom: false,
        log_truncated_bytes: 0,
        causes: Vec::new(),
        probable_false_positive: false,
        skip_reason: None,
        harness_error: None,
        duration_ms: 1234,
        peak_memory_bytes: 0,
        started_at: "2026-11-23T10:00:00Z".into(),
        finished_at: "2026-11-23T10:00:01Z".into(),
        attempt: 1,
        tries: 1,
        agent: "host".into(),
        slot: 0,
        log_bytes: 11,
        log_sha256: String::new(),
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
