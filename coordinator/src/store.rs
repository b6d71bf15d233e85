//! The result store: raw log, rendered HTML and JSON verdict per (tool, crate, version).
//!
//! Keys are the seed's (see ARCHITECTURE.md): `{tool}/raw/{name}/{version}`,
//! `{tool}/logs/{name}/{version}`, `{tool}/results/{name}/{version}.json`. The JSON is written
//! last and every file appears by an atomic rename, so a crate with a verdict always has its log,
//! and a crash mid-publish leaves no verdict: the next run runs that crate again. This is the
//! local-directory store; an S3 store with the same keys slots in beside it.

use crate::diagnose::{Cause, REPORT_MARKERS};
use crate::render;
use anyhow::{Context, Result};
use crater_proto::tool::Tool;
use crater_proto::verdict::Verdict;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

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
    /// The UB reports found in the log (Miri, ASan, runtime checks), for `ub`.
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

#[derive(Debug, Clone)]
pub struct LocalStore {
    root: PathBuf,
}

impl LocalStore {
    pub fn open(root: impl Into<PathBuf>) -> Result<LocalStore> {
        let root = root.into();
        std::fs::create_dir_all(&root)
            .with_context(|| format!("creating the output directory {}", root.display()))?;
        Ok(LocalStore { root })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where logs are spooled while their job runs (same filesystem, so publishing renames).
    pub fn spool_dir(&self) -> PathBuf {
        self.root.join(".spool")
    }

    pub fn raw_path(&self, tool: Tool, name: &str, version: &str) -> PathBuf {
        self.root.join(format!("{tool}/raw/{name}/{version}"))
    }

    pub fn html_path(&self, tool: Tool, name: &str, version: &str) -> PathBuf {
        self.root.join(format!("{tool}/logs/{name}/{version}"))
    }

    pub fn result_path(&self, tool: Tool, name: &str, version: &str) -> PathBuf {
        self.root
            .join(format!("{tool}/results/{name}/{version}.json"))
    }

    /// The stored verdict, if this crate has finished before.
    pub fn result(&self, tool: Tool, name: &str, version: &str) -> Result<Option<ResultRecord>> {
        let path = self.result_path(tool, name, version);
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .with_context(|| format!("reading {}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }

    /// Publishes a finished job: the raw log (moved from `spooled_log`), its HTML, then the JSON.
    pub fn publish(&self, tool: Tool, record: &ResultRecord, spooled_log: &Path) -> Result<()> {
        let (name, version) = (record.name.as_str(), record.version.as_str());
        let raw = self.raw_path(tool, name, version);
        create_parent(&raw)?;
        std::fs::rename(spooled_log, &raw)
            .with_context(|| format!("moving the log to {}", raw.display()))?;

        let html = self.html_path(tool, name, version);
        let title = format!("{name} {version} — {tool}: {}", record.status);
        // Link the page to the first UB report when there is one.
        let markers: &[&str] = if record.causes.is_empty() {
            &[]
        } else {
            REPORT_MARKERS
        };
        write_atomically(&html, |out| {
            let input = std::fs::File::open(&raw)?;
            render::render_html_marked(&title, std::io::BufReader::new(input), out, markers)?;
            Ok(())
        })?;

        let json = self.result_path(tool, name, version);
        write_atomically(&json, |out| {
            serde_json::to_writer_pretty(&mut *out, record)?;
            out.write_all(b"\n")?;
            Ok(())
        })
    }
}

impl LocalStore {
    /// Records a `skipped` verdict (a yanked or missing version): its log is the reason.
    pub fn publish_skipped(
        &self,
        tool: Tool,
        name: &str,
        version: &str,
        reason: &str,
    ) -> Result<()> {
        let spool = self.spool_dir();
        std::fs::create_dir_all(&spool)?;
        let log = spool.join(format!("{}-skipped-{name}-{version}", std::process::id()));
        std::fs::write(&log, format!("[crater-at-home] skipped: {reason}\n"))?;
        let now = time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default();
        let record = ResultRecord {
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
            log_bytes: std::fs::metadata(&log)?.len(),
            log_sha256: String::new(),
        };
        self.publish(tool, &record, &log)
    }
}

fn create_parent(path: &Path) -> Result<()> {
    let parent = path.parent().expect("store paths have parents");
    std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))
}

/// Writes `path` through a temporary file beside it, so readers see all of it or none.
fn write_atomically(
    path: &Path,
    write: impl FnOnce(&mut std::io::BufWriter<std::fs::File>) -> Result<()>,
) -> Result<()> {
    use std::io::Write;
    create_parent(path)?;
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let result = (|| -> Result<()> {
        let mut out = std::io::BufWriter::new(std::fs::File::create(&tmp)?);
        write(&mut out)?;
        out.flush()?;
        out.get_ref().sync_all()?;
        std::fs::rename(&tmp, path)?;
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.with_context(|| format!("writing {}", path.display()))
}

use std::io::Write as _;

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> ResultRecord {
        ResultRecord {
            name: "foo".into(),
            version: "1.2.3".into(),
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

    #[test]
    fn publish_writes_the_seed_layout_with_the_verdict_last() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::open(dir.path()).unwrap();
        std::fs::create_dir_all(store.spool_dir()).unwrap();
        let spooled = store.spool_dir().join("1-1.log");
        std::fs::write(&spooled, "error: <oops>\n").unwrap();
        assert_eq!(store.result(Tool::Check, "foo", "1.2.3").unwrap(), None);

        store.publish(Tool::Check, &record(), &spooled).unwrap();

        let root = dir.path();
        assert_eq!(
            std::fs::read_to_string(root.join("check/raw/foo/1.2.3")).unwrap(),
            "error: <oops>\n"
        );
        let html = std::fs::read_to_string(root.join("check/logs/foo/1.2.3")).unwrap();
        assert!(html.contains("error: &lt;oops&gt;"), "{html}");
        let json: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(root.join("check/results/foo/1.2.3.json")).unwrap(),
        )
        .unwrap();
        assert_eq!(json["crate"], "foo");
        assert_eq!(json["status"], "build-fail");
        assert_eq!(
            store.result(Tool::Check, "foo", "1.2.3").unwrap(),
            Some(record())
        );
        assert!(!spooled.exists(), "the spool file was moved, not copied");
    }
}
