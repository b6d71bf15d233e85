//! Writes synthetic result stores, for the report's tests and benchmarks: a run of 200,000
//! crates cannot be made on the project's machines, and a test needs every verdict at once.
//!
//! Each crate gets what a real run stores — raw log, HTML page (rendered by the store's own
//! renderer), JSON verdict — under the seed's keys, plus `downloads.json` at the root. Verdicts
//! cycle through every kind with causes like real ones (compiler error codes, a missing system
//! library, failing tests, Miri and ASan reports), and the text that came from a "crate" holds
//! HTML to be escaped. One crate can be given a log of any size, with its UB report in the
//! middle, to check that pages stay streamable.

use crate::results::diagnose::Cause;
use crate::results::record::ResultRecord;
use crate::results::store::LocalStore;
use crate::results::store::local::render_page;
use anyhow::{Context, Result};
use crater_proto::tool::Tool;
use crater_proto::verdict::Verdict;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

/// The crate that gets the big log, when one is asked for.
pub const BIG_LOG_CRATE: &str = "synth-big-ub";
/// Text in the synthetic messages that tries to break out of a page (it must come out escaped).
pub const HOSTILE_MESSAGE: &str = "<script>alert(\"x\")</script> & </td>";

/// Writes `crates` results of `tool` into `root` (plus [`BIG_LOG_CRATE`] with a log of
/// `big_log_bytes`, when not zero), and returns their verdicts.
pub fn write_store(
    root: &Path,
    tool: Tool,
    crates: usize,
    big_log_bytes: u64,
) -> Result<Vec<ResultRecord>> {
    let store = LocalStore::open(root)?;
    let mut records = Vec::with_capacity(crates + 1);
    let mut downloads = BTreeMap::new();
    for i in 0..crates {
        let record = synthetic(tool, i);
        let log = small_log(&record);
        write_one(&store, tool, &record, &mut log.as_bytes())?;
        downloads.insert(record.name.clone(), (crates - i) as u64 * 10);
        records.push(record);
    }
    if big_log_bytes > 0 {
        let mut record = synthetic(tool, 6);
        record.name = BIG_LOG_CRATE.to_owned();
        let path = root.join(".synth-big.log");
        write_big_log(&path, big_log_bytes)?;
        record.log_bytes = big_log_bytes;
        let log = std::fs::File::open(&path)?;
        write_one(&store, tool, &record, &mut std::io::BufReader::new(log))?;
        std::fs::remove_file(&path)?;
        downloads.insert(record.name.clone(), 1_000_000_000);
        records.push(record);
    }
    std::fs::write(root.join("downloads.json"), serde_json::to_vec(&downloads)?)?;
    Ok(records)
}

fn write_one(
    store: &LocalStore,
    tool: Tool,
    record: &ResultRecord,
    log: &mut dyn std::io::BufRead,
) -> Result<()> {
    let (name, version) = (record.name.as_str(), record.version.as_str());
    let raw = store.raw_path(tool, name, version);
    let html = store.html_path(tool, name, version);
    let json = store.result_path(tool, name, version);
    for path in [&raw, &html, &json] {
        std::fs::create_dir_all(path.parent().expect("store paths have parents"))?;
    }
    // The raw log is copied while the page is rendered from it.
    let mut raw_out = std::io::BufWriter::new(std::fs::File::create(&raw)?);
    let mut tee = Tee {
        input: log,
        copy: &mut raw_out,
    };
    let mut page = std::io::BufWriter::new(std::fs::File::create(&html)?);
    render_page(tool, record, std::io::BufReader::new(&mut tee), &mut page)?;
    page.flush()?;
    raw_out.flush()?;
    crate::results::store::local::link_html_name(&html)?;
    let mut bytes = serde_json::to_vec_pretty(record)?;
    bytes.push(b'\n');
    std::fs::write(&json, bytes).with_context(|| format!("writing {}", json.display()))?;
    // Stored when it finished, days before any report, as a real run's verdicts are.
    if let Ok(finished) = time::OffsetDateTime::parse(
        &record.finished_at,
        &time::format_description::well_known::Rfc3339,
    ) {
        std::fs::File::options()
            .write(true)
            .open(&json)?
            .set_modified(finished.into())?;
    }
    Ok(())
}

/// Reads `input`, copying what it reads to `copy`.
struct Tee<'a> {
    input: &'a mut dyn std::io::BufRead,
    copy: &'a mut dyn Write,
}

impl std::io::Read for Tee<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.input.read(buf)?;
        self.copy.write_all(&buf[..n])?;
        Ok(n)
    }
}

/// The verdict of synthetic crate `i`: verdicts and causes cycle with it.
pub fn synthetic(tool: Tool, i: usize) -> ResultRecord {
    let cause = |kind: &str, detector: &str, source: Option<&str>, message: &str| Cause {
        kind: kind.to_owned(),
        detector: detector.to_owned(),
        source_crate: source.map(str::to_owned),
        message: message.to_owned(),
    };
    let name = format!("synth-{i}");
    let (status, causes, step, harness_error) = match i % 20 {
        0 => (
            Verdict::BuildFail,
            vec![cause(
                "E0425",
                "rustc",
                Some(&name),
                "error[E0425]: cannot find value `x` in this scope",
            )],
            Some("build"),
            None,
        ),
        1 => (
            Verdict::BuildFail,
            vec![cause(
                "missing-system-library",
                "build-script",
                Some("openssl-sys"),
                "openssl (pkg-config)",
            )],
            Some("build"),
            None,
        ),
        2 => (
            Verdict::TestFail,
            vec![cause(
                "test-failure",
                "libtest",
                Some(&name),
                "1 test failed: tests::it_works",
            )],
            Some("test"),
            None,
        ),
        3 => (Verdict::Timeout, vec![], Some("test"), None),
        4 => (Verdict::Oom, vec![], Some("build"), None),
        5 => (
            Verdict::Error,
            vec![],
            None,
            Some(format!("the container was lost {HOSTILE_MESSAGE}")),
        ),
        6 => (
            Verdict::Ub,
            vec![cause(
                "data-race",
                "miri",
                Some("dep-with-race"),
                &format!("Undefined Behavior: Data race detected {HOSTILE_MESSAGE}"),
            )],
            Some("test"),
            None,
        ),
        7 => (
            Verdict::Ub,
            vec![cause(
                "heap-buffer-overflow",
                "asan",
                Some(&name),
                "ERROR: AddressSanitizer: heap-buffer-overflow on address 0x602000000011",
            )],
            Some("test"),
            None,
        ),
        8 => (Verdict::PrepareFail, vec![], Some("prepare"), None),
        9 => (
            Verdict::BuildFail,
            vec![cause(
                "E0599",
                "rustc",
                Some(&name),
                "error[E0599]: no method named `foo`",
            )],
            Some("build"),
            None,
        ),
        10 => (Verdict::Skipped, vec![], None, None),
        11 => (Verdict::Flaky, vec![], None, None),
        _ => (Verdict::Pass, vec![], None, None),
    };
    let timed_out = status == Verdict::Timeout;
    ResultRecord {
        name,
        version: if i.is_multiple_of(7) {
            "1.0.0+build.7".to_owned()
        } else {
            format!("0.{}.{}", i % 13, i % 5)
        },
        tool: tool.to_string(),
        target: "x86_64-unknown-linux-gnu".to_owned(),
        status,
        source: "crates.io".to_owned(),
        failed_step: step.map(str::to_owned),
        exit_code: if step.is_some() { 101 } else { 0 },
        timed_out,
        timeout_kind: timed_out.then(|| "wall".to_owned()),
        oom: status == Verdict::Oom,
        log_truncated_bytes: 0,
        causes,
        probable_false_positive: false,
        skip_reason: (status == Verdict::Skipped).then(|| "yanked".to_owned()),
        harness_error,
        duration_ms: 1000 + (i as u64 % 100) * 37,
        peak_memory_bytes: 100 << 20,
        started_at: format!("2026-11-20T10:{:02}:{:02}Z", (i / 60) % 60, i % 60),
        finished_at: format!("2026-11-20T11:{:02}:{:02}Z", (i / 60) % 60, i % 60),
        attempt: 1,
        tries: 1,
        agent: format!("agent-{}", i % 4),
        toolchain: "rustc 1.93.0-nightly (0123456789 2026-11-01)".to_owned(),
        slot: (i % 8) as u32,
        log_bytes: 0,
        log_sha256: String::new(),
    }
}

/// A short log like cargo prints, with colours, ending in the error its verdict is about.
fn small_log(record: &ResultRecord) -> String {
    let mut log = format!(
        "\x1b[1m\x1b[32m    Checking\x1b[0m {} v{}\n",
        record.name, record.version
    );
    for cause in &record.causes {
        log.push_str(&format!("\x1b[1m\x1b[31merror\x1b[0m: {}\n", cause.message));
    }
    if record.status == Verdict::TestFail {
        log.push_str("test tests::it_works ... FAILED\n");
    }
    log.push_str("\x1b[1m\x1b[32m    Finished\x1b[0m `dev` profile\n");
    log
}

/// `bytes` of build output with a Miri report in the middle.
fn write_big_log(path: &Path, bytes: u64) -> Result<()> {
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    let line = b"\x1b[1m\x1b[32m   Compiling\x1b[0m some-dependency v1.0.0 (registry+https://github.com/rust-lang/crates.io-index)\n";
    let report = format!(
        "error: Undefined Behavior: Data race detected {HOSTILE_MESSAGE}\n  --> src/lib.rs:10:5\n"
    );
    let mut written = 0u64;
    let mut reported = false;
    while written < bytes {
        if !reported && written >= bytes / 2 {
            out.write_all(report.as_bytes())?;
            written += report.len() as u64;
            reported = true;
            continue;
        }
        let take = (bytes - written).min(line.len() as u64) as usize;
        out.write_all(&line[..take])?;
        written += take as u64;
    }
    out.flush()?;
    Ok(())
}

/// Rewrites every `100 / percent`-th of the first `crates` synthetic verdicts in `root` with
/// another verdict (its JSON only), as new results of a later run; returns how many.
pub fn touch(root: &Path, tool: Tool, crates: usize, percent: f64) -> Result<usize> {
    let store = LocalStore::open(root)?;
    let step = ((100.0 / percent.max(0.001)).round() as usize).max(1);
    let mut touched = 0;
    for i in (0..crates).step_by(step) {
        let mut record = synthetic(tool, i);
        record.status = if record.status == Verdict::Pass {
            Verdict::BuildFail
        } else {
            Verdict::Pass
        };
        record.causes.clear();
        let path = store.result_path(tool, &record.name, &record.version);
        let mut bytes = serde_json::to_vec_pretty(&record)?;
        bytes.push(b'\n');
        std::fs::write(&path, bytes).with_context(|| format!("writing {}", path.display()))?;
        touched += 1;
    }
    Ok(touched)
}
