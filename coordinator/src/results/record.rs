//! The JSON verdict of one finished run of a crate: what the outbox commits, the stores keep at
//! `{tool}/results/{name}/{version}.json`, and the rerun policy reads back.
//!
//! Its own module because every part of keeping results speaks it: the outbox writes it beside
//! the raw log, each store publishes it, the publish step fills it in; none of them owns it.

use crate::results::diagnose::Cause;
use crater_proto::tool::Tool;
use crater_proto::verdict::Verdict;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

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
    /// Why it ended as it did: the UB reports found in the log (Miri, ASan, runtime checks), for
    /// `ub`; for the other failures, the limit the job ran into (`no-space`, `timeout`, `oom`,
    /// detector `limit`) and what the log says (compiler error codes, a missing system library,
    /// failing tests, ...: see `results::failure_causes`).
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
    /// The toolchain it ran with, as `rustc -V` says it (empty in results of older versions).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub toolchain: String,
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
            toolchain: String::new(),
            slot: 0,
            log_bytes,
            log_sha256: String::new(),
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
        toolchain: "rustc 1.93.0-nightly (0123456789 2026-11-01)".into(),
        slot: 0,
        log_bytes: 11,
        log_sha256: String::new(),
    }
}
