//! The local-directory store: the seed's layout under `--out`.
//!
//! Every file appears by an atomic rename (the raw log is moved out of the outbox, the HTML and
//! JSON are written beside their final name and renamed), so a reader never sees half a file,
//! and publishing the same outbox entry again after a crash finishes the job.

use super::{html_key, raw_key, result_key};
use crate::results::diagnose::REPORT_MARKERS;
use crate::results::outbox::Entry;
use crate::results::record::ResultRecord;
use crate::results::{render, verdict};
use anyhow::{Context, Result};
use crater_proto::tool::Tool;
use std::path::{Path, PathBuf};

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

    pub fn raw_path(&self, tool: Tool, name: &str, version: &str) -> PathBuf {
        self.root.join(raw_key(tool, name, version))
    }

    pub fn html_path(&self, tool: Tool, name: &str, version: &str) -> PathBuf {
        self.root.join(html_key(tool, name, version))
    }

    pub fn result_path(&self, tool: Tool, name: &str, version: &str) -> PathBuf {
        self.root.join(result_key(tool, name, version))
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

    /// Publishes an outbox entry: the HTML rendered from its log, the log moved into place,
    /// then the JSON. After a crash between the move and the JSON, the log is already in place
    /// (and the HTML before it), so only the JSON is left to write.
    pub fn publish(&self, entry: &Entry) -> Result<()> {
        let record = &entry.record;
        let (tool, name, version) = (entry.tool, record.name.as_str(), record.version.as_str());
        let raw = self.raw_path(tool, name, version);
        let spooled = entry.raw_path();
        if spooled.exists() || !raw.exists() {
            let html = self.html_path(tool, name, version);
            write_atomically(&html, |out| {
                let input = std::fs::File::open(&spooled)
                    .with_context(|| format!("reading {}", spooled.display()))?;
                render_page(tool, record, std::io::BufReader::new(input), out)
            })?;
            create_parent(&raw)?;
            std::fs::rename(&spooled, &raw)
                .with_context(|| format!("moving the log to {}", raw.display()))?;
        }
        let json = self.result_path(tool, name, version);
        write_atomically(&json, |out| {
            serde_json::to_writer_pretty(&mut *out, record)?;
            out.write_all(b"\n")?;
            Ok(())
        })
    }
}

/// The HTML page of a log, linked to its first UB report when there is one.
pub fn render_page(
    tool: Tool,
    record: &ResultRecord,
    log: impl std::io::BufRead,
    out: &mut impl std::io::Write,
) -> Result<()> {
    let title = format!(
        "{} {} — {tool}: {}",
        record.name, record.version, record.status
    );
    let has_reports = (record.causes.iter()).any(|c| c.detector != verdict::LIMIT_DETECTOR);
    let markers: &[&str] = if !has_reports { &[] } else { REPORT_MARKERS };
    render::render_html_marked(&title, log, out, markers)?;
    Ok(())
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
    use crate::results::outbox::Outbox;
    use crate::results::record::sample_record;

    #[test]
    fn publish_writes_the_seed_layout_with_the_verdict_last_and_can_be_repeated() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::open(dir.path()).unwrap();
        let outbox = Outbox::open(&dir.path().join(".spool"), u64::MAX).unwrap();
        let spooled = outbox.spool_dir().join("1-1.log");
        std::fs::write(&spooled, "error: <oops>\n").unwrap();
        assert_eq!(store.result(Tool::Check, "foo", "1.2.3").unwrap(), None);
        let record = sample_record("foo", "1.2.3");
        outbox.commit(Tool::Check, &record, &spooled).unwrap();
        assert!(!spooled.exists(), "the spool file was moved, not copied");
        let entry = outbox.entries().remove(0);

        store.publish(&entry).unwrap();

        let root = dir.path();
        assert_eq!(
            std::fs::read_to_string(root.join("check/raw/foo/1.2.3")).unwrap(),
            "error: <oops>\n"
        );
        let html = std::fs::read_to_string(root.join("check/logs/foo/1.2.3")).unwrap();
        assert!(html.contains("error: &lt;oops&gt;"), "{html}");
        let json_path = root.join("check/results/foo/1.2.3.json");
        let json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&json_path).unwrap()).unwrap();
        assert_eq!(json["crate"], "foo");
        assert_eq!(json["status"], "build-fail");
        assert_eq!(
            store.result(Tool::Check, "foo", "1.2.3").unwrap(),
            Some(record)
        );

        // A crash after the log was moved but before the JSON: publishing again finishes it.
        std::fs::remove_file(&json_path).unwrap();
        store.publish(&entry).unwrap();
        assert!(json_path.exists());
        assert_eq!(
            std::fs::read_to_string(root.join("check/raw/foo/1.2.3")).unwrap(),
            "error: <oops>\n"
        );
    }
}
