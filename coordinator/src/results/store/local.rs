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
use crater_proto::verdict::Verdict;
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
            link_html_name(&html)?;
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

/// Gives a log page (`{tool}/logs/{name}/{version}`, the seed's key) a second name ending in
/// `.html`, a hard link beside it: a browser opening a local folder decides by the extension
/// whether a file is a page, and shows an extensionless one as text. (A bucket says so in the
/// object's content type, so it needs no second name.) Not a symbolic link: Chromium resolves
/// those and goes by the target's name. A page rendered again is a new file, so the link is
/// made again each time the page is written (through a temporary name, so the `.html` name
/// always shows a whole page). Takes no space.
pub fn link_html_name(page: &Path) -> Result<()> {
    let mut link_name = page.file_name().expect("pages have a file name").to_owned();
    link_name.push(HTML_SUFFIX);
    let link = page.with_file_name(link_name);
    let same = |a: &Path, b: &Path| {
        use std::os::unix::fs::MetadataExt;
        match (std::fs::metadata(a), std::fs::symlink_metadata(b)) {
            (Ok(a), Ok(b)) => a.ino() == b.ino() && a.dev() == b.dev(),
            _ => false,
        }
    };
    if same(page, &link) {
        return Ok(());
    }
    let tmp = link.with_extension(format!("link{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    std::fs::hard_link(page, &tmp)
        .and_then(|()| std::fs::rename(&tmp, &link))
        .with_context(|| format!("linking {}", link.display()))
}

/// What the report's links add to a log page's key in a local store (see [`link_html_name`]).
pub const HTML_SUFFIX: &str = ".html";

/// The HTML page of a log (at `{tool}/logs/{name}/{version}`): links to the tool's landing
/// page, the verdict's JSON and the raw log above it, and a link to its first UB report, or for
/// a failure to its first error.
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
    let (name, version) = (
        render::path_segment(&record.name),
        render::path_segment(&record.version),
    );
    let links = format!(
        "<nav><a href=\"../../index.html\">All {tool} results</a> · \
         <a href=\"../../results/{name}/{version}.json\">JSON verdict</a> · \
         <a href=\"../../raw/{name}/{version}\">Raw log</a></nav>\n"
    );
    let has_reports = (record.causes.iter()).any(|c| c.detector != verdict::LIMIT_DETECTOR);
    let jump = if record.status == Verdict::Ub && has_reports {
        render::Jump {
            markers: REPORT_MARKERS,
            label: "Jump to the first report",
        }
    } else if record.status.is_failure() || record.status == Verdict::PrepareFail {
        render::Jump {
            markers: ERROR_MARKERS,
            label: "Jump to the first error",
        }
    } else {
        render::Jump::NONE
    };
    render::render_log_page(&title, &links, log, out, jump)?;
    Ok(())
}

/// Where a failure's log shows it first: a compiler or cargo error, a panic, a failed test.
const ERROR_MARKERS: &[&str] = &["error[E", "error: ", "panicked at", "... FAILED"];

fn create_parent(path: &Path) -> Result<()> {
    let parent = path.parent().expect("store paths have parents");
    std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))
}

/// Writes `path` through a temporary file beside it, so readers see all of it or none.
pub fn write_atomically(
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
