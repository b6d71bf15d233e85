//! Finds the reports of undefined behaviour in a raw terminal log, and the crate each comes from.
//!
//! Three detectors are recognised:
//! - Miri: `error: Undefined Behavior: ...`, then the error's span (`--> path`), help sections
//!   with spans of their own, and a backtrace (`= note: inside ... at path`, or
//!   `note: inside ...` followed by a `-->` line).
//! - AddressSanitizer: `==pid==ERROR: AddressSanitizer: kind ...`, then the access's stack
//!   (`#0 0x... in symbol path:line:col`); the stacks after it (where the memory was allocated
//!   or freed) are not the failing code and are ignored.
//! - rustc's and std's runtime checks ("rust"): misaligned dereferences, violated unsafe
//!   preconditions, invalid `mem::uninitialized`/`mem::zeroed`, each a panic whose location and
//!   backtrace (`at path`) give the frames; and test binaries killed by SIGILL.
//!
//! The source crate is the first frame that is not the toolchain's (std, core, the sanitizer
//! runtime): a crate of the cargo registry (`/registry/src/<index>/<name>-<version>/`), or the
//! crate under test (absolute paths under `/build/`, as the symbolizer prints them, or relative
//! ones such as `src/lib.rs`, as rustc and Miri print the paths cargo gave them).
//!
//! Logs can be gigabytes: they are read line by line, each cut at 64 KiB, and a report is
//! followed for at most 80 lines, so memory stays bounded.

use std::collections::HashSet;
use std::io::{self, BufRead, BufReader, Read};

use serde::{Deserialize, Serialize};
use vte::{Params, Parser, Perform};

/// One UB report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cause {
    /// Short stable kind, kebab-case, e.g. "data-race", "uninitialized-memory", "out-of-bounds",
    /// "dangling-reference", "stacked-borrows", "tree-borrows", "heap-buffer-overflow",
    /// "heap-use-after-free", "sigill", "misaligned-pointer-dereference",
    /// "unsafe-precondition-violated", "invalid-uninit-type", ...
    pub kind: String,
    /// Which detector reported it: "miri", "asan" or "rust" (rustc/std runtime checks, SIGILL).
    pub detector: String,
    /// The crate the failing frame is in: `Some(name)` — the crate under test's own name when the
    /// frame is under /build, a dependency's name when under the cargo registry; None if unknown.
    pub source_crate: Option<String>,
    /// The report's headline, ANSI-stripped, trimmed, at most 300 chars (e.g. the
    /// "Undefined Behavior: ..." line).
    pub message: String,
}

/// Every UB report of a log.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Diagnosis {
    /// One per report, in log order, deduplicated by (kind, source_crate, message).
    pub causes: Vec<Cause>,
    /// ASan said "ASan is ignoring requested __asan_handle_no_return": its reports may be false positives.
    pub probable_false_positive: bool,
}

/// Plain-text markers whose first occurrence in a log starts the first UB report (for the HTML
/// page's "jump to the first report" anchor).
pub const REPORT_MARKERS: &[&str] = &[
    MIRI,
    ASAN,
    "SIGILL: illegal instruction",
    "misaligned pointer dereference",
    "unsafe precondition(s) violated",
    "attempted to leave type",
    "attempted to zero-initialize type",
];

const MIRI: &str = "Undefined Behavior: ";
const ASAN: &str = "ERROR: AddressSanitizer: ";
const ASAN_NO_RETURN: &str = "ASan is ignoring requested __asan_handle_no_return";
/// The runtime checks of rustc and std: (marker, kind). The markers are in [`REPORT_MARKERS`].
const RUST_CHECKS: [(&str, &str); 5] = [
    ("SIGILL: illegal instruction", "sigill"),
    (
        "misaligned pointer dereference",
        "misaligned-pointer-dereference",
    ),
    (
        "unsafe precondition(s) violated",
        "unsafe-precondition-violated",
    ),
    ("attempted to leave type", "invalid-uninit-type"),
    ("attempted to zero-initialize type", "invalid-zeroed-type"),
];

/// Bytes kept of a line; the rest of a longer line is skipped.
const MAX_LINE: usize = 64 * 1024;
/// Lines after a headline searched for its frames (the next headline ends the search earlier).
const WINDOW: usize = 80;
const MAX_MESSAGE: usize = 300;
/// Distinct causes kept: a log with millions of distinct reports must not grow memory unboundedly.
const MAX_CAUSES: usize = 1000;

/// Reads a raw terminal log (with ANSI colour codes, CRLF line endings from a pty, possibly
/// gigabytes: stream it line by line with a bounded line length, e.g. 64 KiB, never load it whole)
/// and finds every UB report. `crate_name` is the crate under test (its frames are under
/// /build/{name}-{version}/).
pub fn diagnose(log: impl Read, crate_name: &str) -> io::Result<Diagnosis> {
    let mut input = BufReader::with_capacity(MAX_LINE, log);
    let mut raw = Vec::new();
    let (mut line, mut prev) = (String::new(), String::new());
    let mut scanner = Scanner {
        crate_name,
        diagnosis: Diagnosis::default(),
        seen: HashSet::new(),
        report: None,
    };
    while read_line(&mut input, &mut raw)? {
        plain_text(&raw, &mut line);
        scanner.line(&line, &prev);
        std::mem::swap(&mut line, &mut prev);
    }
    scanner.close();
    Ok(scanner.diagnosis)
}

/// Reads the next line (without its `\n`) into `line`, keeping at most [`MAX_LINE`] bytes of it.
/// False at the end of the input.
fn read_line(input: &mut impl BufRead, line: &mut Vec<u8>) -> io::Result<bool> {
    line.clear();
    let mut any = false;
    loop {
        let buf = match input.fill_buf() {
            Ok(buf) => buf,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if buf.is_empty() {
            return Ok(any);
        }
        any = true;
        let newline = buf.iter().position(|&b| b == b'\n');
        let chunk = &buf[..newline.unwrap_or(buf.len())];
        let room = MAX_LINE.saturating_sub(line.len());
        line.extend_from_slice(&chunk[..chunk.len().min(room)]);
        let used = newline.map_or(buf.len(), |i| i + 1);
        input.consume(used);
        if newline.is_some() {
            return Ok(true);
        }
    }
}

/// The text a terminal would show for one line: escape sequences dropped, and a carriage return
/// (a progress bar being redrawn) starting the line afresh. A trailing `\r` (CRLF) is dropped.
fn plain_text(raw: &[u8], out: &mut String) {
    out.clear();
    let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
    if !raw.iter().any(|&b| b == 0x1b || b == b'\r') {
        out.push_str(&String::from_utf8_lossy(raw));
        return;
    }
    let mut plain = Plain {
        out,
        restart: false,
    };
    Parser::new().advance(&mut plain, raw);
}

struct Plain<'a> {
    out: &'a mut String,
    /// A `\r` went by: the next text overwrites the line from its start.
    restart: bool,
}

impl Perform for Plain<'_> {
    fn print(&mut self, c: char) {
        if std::mem::take(&mut self.restart) {
            self.out.clear();
        }
        self.out.push(c);
    }

    fn execute(&mut self, byte: u8) {
        match byte {
            b'\r' => self.restart = true,
            b'\t' => self.print('\t'),
            _ => {}
        }
    }

    fn csi_dispatch(&mut self, _: &Params, _: &[u8], _: bool, action: char) {
        // `\r` then erase-in-line: the line is blank until something is printed.
        if action == 'K' && self.restart {
            self.out.clear();
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Detector {
    Miri,
    Asan,
    Rust,
}

impl Detector {
    fn name(self) -> &'static str {
        match self {
            Detector::Miri => "miri",
            Detector::Asan => "asan",
            Detector::Rust => "rust",
        }
    }
}

/// The report being read: its headline, and what the lines after it told so far.
struct Report {
    detector: Detector,
    /// Known from the headline, except Miri's (decided from `what` and the flags when it ends).
    kind: String,
    message: String,
    /// Miri: the headline's text after "Undefined Behavior: ".
    what: String,
    source: Option<String>,
    lines_left: usize,
    /// No more frames to look at: the first ASan stack ended, another panic began, ...
    frames_done: bool,
    /// The report is over (Miri's "aborting due to", the next test's output, ...).
    ended: bool,
    /// A `-->` span on the next line is a frame: the error's own span right after Miri's
    /// headline, or the location of a `note: inside ...` frame. Other spans (help sections:
    /// where memory was allocated, where a tag was created) are not frames.
    arrow_next: bool,
    in_asan_stack: bool,
    stacked_borrows: bool,
    tree_borrows: bool,
    invalidated: bool,
}

impl Report {
    fn new(detector: Detector, kind: &str, message: &str) -> Report {
        Report {
            detector,
            kind: kind.to_owned(),
            message: truncate(message.trim(), MAX_MESSAGE),
            what: String::new(),
            source: None,
            lines_left: WINDOW,
            frames_done: false,
            ended: false,
            arrow_next: detector == Detector::Miri,
            in_asan_stack: false,
            stacked_borrows: false,
            tree_borrows: false,
            invalidated: false,
        }
    }

    /// Takes in one line after the headline.
    fn follow(&mut self, line: &str, crate_name: &str) {
        self.lines_left -= 1;
        let arrow_ok = std::mem::take(&mut self.arrow_next);
        let t = line.trim();
        if self.ended {
            return;
        }
        // The next test binary (cargo), the next test's output (nextest), the end of Miri's report.
        if t.starts_with("Running ")
            || t.starts_with("Doc-tests ")
            || t.contains("STDOUT:")
            || t.contains("STDERR:")
            || (self.detector == Detector::Miri && t.contains("aborting due to"))
        {
            self.ended = true;
            return;
        }
        if self.detector == Detector::Miri {
            self.stacked_borrows |= t.contains("Stacked Borrows");
            self.tree_borrows |= t.contains("Tree Borrows");
            self.invalidated |= t.contains("later invalidated");
        }
        if self.source.is_some() || self.frames_done {
            return;
        }
        if let Some(frame) = asan_frame(t) {
            self.in_asan_stack = true;
            if let Some(path) = asan_frame_path(frame) {
                self.frame(path, crate_name);
            }
        } else if self.in_asan_stack {
            self.frames_done = true;
        } else if let Some(path) = t.strip_prefix("--> ") {
            if arrow_ok {
                self.frame(path, crate_name);
            }
        } else if let Some(inside) = t
            .strip_prefix("= ")
            .unwrap_or(t)
            .strip_prefix("note: inside ")
        {
            match inside.rfind(" at ") {
                Some(i) => self.frame(&inside[i + " at ".len()..], crate_name),
                None => self.arrow_next = true,
            }
        } else if let Some(path) = t.strip_prefix("at ") {
            self.frame(path, crate_name);
        } else if self.detector == Detector::Rust && t.contains("panicked at ") {
            self.frames_done = true;
        }
    }

    fn frame(&mut self, location: &str, crate_name: &str) {
        let path = location.split_whitespace().next().unwrap_or("");
        if self.source.is_none() {
            self.source = source_crate(path, crate_name);
        }
    }

    fn into_cause(self) -> Cause {
        let kind = match self.detector {
            Detector::Miri => miri_kind(&self.what, &self),
            _ => self.kind,
        };
        Cause {
            kind,
            detector: self.detector.name().to_owned(),
            source_crate: self.source,
            message: self.message,
        }
    }
}

struct Scanner<'a> {
    crate_name: &'a str,
    diagnosis: Diagnosis,
    seen: HashSet<(String, Option<String>, String)>,
    report: Option<Report>,
}

impl Scanner<'_> {
    /// Takes in one line (plain text); `prev` is the line before it.
    fn line(&mut self, line: &str, prev: &str) {
        if line.contains(ASAN_NO_RETURN) {
            self.diagnosis.probable_false_positive = true;
        }
        if let Some(report) = self.headline(line, prev) {
            self.close();
            self.report = Some(report);
        } else if let Some(report) = &mut self.report {
            report.follow(line, self.crate_name);
            if report.lines_left == 0 {
                self.close();
            }
        }
    }

    /// The report `line` starts, if it is a headline.
    fn headline(&self, line: &str, prev: &str) -> Option<Report> {
        if let Some(i) = line.find(MIRI) {
            let start = line[..i].strip_suffix("error: ").map_or(i, str::len);
            let mut report = Report::new(Detector::Miri, "", &line[start..]);
            report.what = line[i + MIRI.len()..].to_owned();
            return Some(report);
        }
        if let Some(i) = line.find(ASAN) {
            let kind = asan_kind(&line[i + ASAN.len()..]);
            return Some(Report::new(Detector::Asan, &kind, &line[i..]));
        }
        let &(_, kind) = RUST_CHECKS
            .iter()
            .find(|(marker, _)| line.contains(marker))?;
        let mut report = Report::new(Detector::Rust, kind, line);
        if kind == "sigill" {
            // Only the process's exit status: no frames, and what follows is another test's.
            report.frames_done = true;
        } else {
            // The panic's location: on the same line before Rust 1.73 (`panicked at 'msg',
            // path`), on the line before since.
            for location in [line, prev].into_iter().filter_map(panic_location) {
                report.frame(location, self.crate_name);
            }
        }
        Some(report)
    }

    fn close(&mut self) {
        let Some(report) = self.report.take() else {
            return;
        };
        let cause = report.into_cause();
        let key = (
            cause.kind.clone(),
            cause.source_crate.clone(),
            cause.message.clone(),
        );
        if self.diagnosis.causes.len() < MAX_CAUSES && self.seen.insert(key) {
            self.diagnosis.causes.push(cause);
        }
    }
}

/// The kind of a Miri report from its headline (`what`) and the help lines after it.
fn miri_kind(what: &str, report: &Report) -> String {
    let has = |s: &str| what.contains(s);
    let kind = if has("Data race detected") {
        "data-race"
    } else if has("uninitialized") {
        "uninitialized-memory"
    } else if has("dangling reference") || has("dangling box") {
        "dangling-reference"
    } else if has("has been freed") || has("use-after-free") {
        "use-after-free"
    } else if has("out-of-bounds")
        || has("in-bounds pointer arithmetic")
        || has("pointer offset")
        || has("outside of its allocation")
    {
        "out-of-bounds"
    } else if has("null pointer") {
        "null-pointer-dereference"
    } else if has("provenance") || has("int-to-ptr") || has("<untagged>") || has("wildcard") {
        "provenance"
    } else if has("dangling pointer") {
        "dangling-reference"
    } else if has("incorrect layout on deallocation") {
        "incorrect-layout-on-deallocation"
    } else if has("unaligned reference") || has("misaligned") || has("alignment") {
        "misaligned"
    } else if has("constructing invalid value") || has("type validation failed") {
        "invalid-value"
    } else if has("strongly protected") || has("protector") {
        "protector-invalidation"
    } else if report.tree_borrows || has("is forbidden") || has("conflicting tag") {
        "tree-borrows"
    } else if report.stacked_borrows
        || [
            "borrow stack",
            "retag",
            "SharedReadOnly",
            "SharedReadWrite",
            "Unique",
            "reborrow",
        ]
        .iter()
        .any(|s| has(s))
    {
        if has("for Unique permission") && has("only grants SharedReadOnly") {
            "stacked-borrows-shared-to-mut"
        } else if has("write access") && has("only grants SharedReadOnly") {
            "stacked-borrows-write-via-shared"
        } else if report.invalidated {
            "stacked-borrows-invalidated"
        } else if has("does not exist in the borrow stack") {
            "stacked-borrows-outside-provenance"
        } else {
            "stacked-borrows"
        }
    } else {
        "other"
    };
    kind.to_owned()
}

/// ASan's kind from the headline's text after "AddressSanitizer: ": its first word, lowercased
/// (heap-buffer-overflow, SEGV, ...), except for the reports that start with a sentence.
fn asan_kind(rest: &str) -> String {
    if rest.contains("requested allocation size") || rest.contains("exceeds maximum supported size")
    {
        return "allocation-size-too-big".to_owned();
    }
    if let Some(what) = rest.strip_prefix("attempting ") {
        // "attempting double-free on 0x...", "attempting free on address which was not malloc()-ed"
        let kind = if what.starts_with("double-free") {
            "double-free"
        } else {
            "bad-free"
        };
        return kind.to_owned();
    }
    let word = rest
        .split_whitespace()
        .next()
        .unwrap_or("")
        .trim_end_matches(':');
    if !word.is_empty() && word.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
        word.to_ascii_lowercase()
    } else {
        "other".to_owned()
    }
}

/// An ASan stack frame (`#3 0x55d5c0d4e9a4 in sym path:5:9`): what follows its address.
fn asan_frame(t: &str) -> Option<&str> {
    let rest = t.strip_prefix('#')?;
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 {
        return None;
    }
    let rest = rest[digits..]
        .strip_prefix(' ')?
        .trim_start()
        .strip_prefix("0x")?;
    Some(rest.trim_start_matches(|c: char| c.is_ascii_hexdigit()))
}

/// The source path of an ASan frame, unless it is the sanitizer runtime's or has none (only the
/// binary and an offset, in parentheses).
fn asan_frame_path(frame: &str) -> Option<&str> {
    let frame = frame.trim();
    let frame = frame
        .rfind(" (BuildId: ")
        .map_or(frame, |i| frame[..i].trim_end());
    let runtime = ["__asan", "__interceptor", "__sanitizer", "__lsan"];
    if runtime.iter().any(|r| frame.contains(r)) {
        return None;
    }
    let path = frame.rsplit(' ').next()?;
    (!path.starts_with('(')).then_some(path)
}

/// The location of a panic: `thread 'x' panicked at src/lib.rs:5:9:` (Rust 1.73 and later) or
/// `thread 'x' panicked at 'message', src/lib.rs:5:9` (before).
fn panic_location(line: &str) -> Option<&str> {
    let rest = &line[line.find("panicked at ")? + "panicked at ".len()..];
    match rest.strip_prefix('\'') {
        Some(quoted) => Some(&quoted[quoted.rfind("', ")? + "', ".len()..]),
        None => Some(rest),
    }
}

/// The crate a source path belongs to, or None for the toolchain's (std, core, alloc, the
/// sanitizer runtime, `/rustc/...`, a rustup toolchain) and unknown ones (libc, ...).
fn source_crate(path: &str, crate_name: &str) -> Option<String> {
    const REGISTRY: &str = "/registry/src/";
    if let Some(i) = path.find(REGISTRY) {
        let dir = path[i + REGISTRY.len()..].split('/').nth(1)?;
        return Some(registry_crate(dir).to_owned());
    }
    if path.starts_with("/build/") {
        return Some(crate_name.to_owned());
    }
    if path.starts_with('/') {
        return None;
    }
    // Relative: the crate's own files as cargo hands them to rustc (`src/lib.rs`, `./src/...`,
    // `tests/...`), unless the standard library's (`library/core/...`, `core/src/...`) or not
    // Rust at all (libc's `csu/libc-start.c`).
    let rel = path.trim_start_matches("./");
    let std = ["library/", "core/src/", "std/src/", "alloc/src/", "RUSTLIB"];
    (rel.contains(".rs") && !std.iter().any(|s| rel.starts_with(s))).then(|| crate_name.to_owned())
}

/// The crate name of a registry directory `<name>-<version>`. Names contain `-` and may have
/// digit-led parts (`md-5`), versions may have `-pre` parts: the name ends at the last `-` that
/// is followed by a whole semver version.
fn registry_crate(dir: &str) -> &str {
    let mut dashes = dir.match_indices('-').map(|(i, _)| i).rev();
    let starts_version = |&i: &usize| dir[i + 1..].starts_with(|c: char| c.is_ascii_digit());
    let name_end = dashes
        .clone()
        .filter(starts_version)
        .find(|&i| semver::Version::parse(&dir[i + 1..]).is_ok())
        .or_else(|| dashes.find(starts_version));
    name_end.map_or(dir, |i| &dir[..i])
}

fn truncate(s: &str, max_chars: usize) -> String {
    match s.char_indices().nth(max_chars) {
        Some((i, _)) => s[..i].trim_end().to_owned(),
        None => s.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    macro_rules! fixture {
        ($name:literal) => {
            concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/ub/", $name)
        };
    }

    fn diagnose_file(path: &str, crate_name: &str) -> Diagnosis {
        diagnose(std::fs::File::open(path).unwrap(), crate_name).unwrap()
    }

    fn diagnose_str(log: &str, crate_name: &str) -> Diagnosis {
        diagnose(log.as_bytes(), crate_name).unwrap()
    }

    /// (kind, detector, source crate) of each cause.
    fn summary(d: &Diagnosis) -> Vec<(&str, &str, Option<&str>)> {
        let causes = d.causes.iter();
        causes
            .map(|c| (&*c.kind, &*c.detector, c.source_crate.as_deref()))
            .collect()
    }

    /// One fixture a scenario, each with one report: (file, crate under test, kind, detector,
    /// source crate).
    #[test]
    fn one_report_fixtures() {
        let cases: [(&str, &str, &str, &str, Option<&str>); 18] = [
            (
                fixture!("miri-data-race.log"),
                "racy-cell",
                "data-race",
                "miri",
                Some("racy-cell"),
            ),
            (
                fixture!("miri-stacked-borrows-dep.log"),
                "tinyset-x",
                "stacked-borrows-invalidated",
                "miri",
                Some("smallvec"),
            ),
            (
                fixture!("miri-tree-borrows.log"),
                "slabby",
                "tree-borrows",
                "miri",
                Some("byte-slab-utils"),
            ),
            (
                fixture!("miri-uninit.log"),
                "uninit-buf",
                "uninitialized-memory",
                "miri",
                Some("uninit-buf"),
            ),
            (
                fixture!("miri-use-after-free.log"),
                "freelist",
                "use-after-free",
                "miri",
                Some("freelist"),
            ),
            (
                fixture!("miri-invalid-value.log"),
                "flagset-lite",
                "invalid-value",
                "miri",
                Some("flagset-lite"),
            ),
            (
                fixture!("miri-dangling-reference.log"),
                "addr-ref",
                "dangling-reference",
                "miri",
                Some("addr-ref"),
            ),
            (
                fixture!("miri-misaligned.log"),
                "le-read",
                "misaligned",
                "miri",
                Some("le-read"),
            ),
            (
                fixture!("miri-incorrect-layout.log"),
                "raw-arena",
                "incorrect-layout-on-deallocation",
                "miri",
                Some("raw-arena"),
            ),
            (
                fixture!("miri-protector.log"),
                "boxcar-ext",
                "protector-invalidation",
                "miri",
                Some("leak-box"),
            ),
            (
                fixture!("miri-null-pointer.log"),
                "nullable-ptr",
                "null-pointer-dereference",
                "miri",
                Some("nullable-ptr"),
            ),
            (
                fixture!("miri-provenance.log"),
                "tagged-addr",
                "provenance",
                "miri",
                Some("tagged-addr"),
            ),
            (
                fixture!("asan-heap-buffer-overflow.log"),
                "byteview",
                "heap-buffer-overflow",
                "asan",
                Some("byteview"),
            ),
            (
                fixture!("asan-false-positive.log"),
                "coro-stack",
                "stack-buffer-overflow",
                "asan",
                Some("coro-stack"),
            ),
            (
                fixture!("rust-unsafe-precondition.log"),
                "ringbuf-view",
                "unsafe-precondition-violated",
                "rust",
                Some("ringbuf-view"),
            ),
            (
                fixture!("rust-misaligned-pointer-dep.log"),
                "packet-view",
                "misaligned-pointer-dereference",
                "rust",
                Some("le-bytes"),
            ),
            (
                fixture!("rust-sigill.log"),
                "simd-scan",
                "sigill",
                "rust",
                None,
            ),
            (
                fixture!("rust-invalid-uninit-type.log"),
                "old-ffi",
                "invalid-uninit-type",
                "rust",
                Some("old-ffi"),
            ),
        ];
        for (path, krate, kind, detector, source) in cases {
            let d = diagnose_file(path, krate);
            assert_eq!(summary(&d), [(kind, detector, source)], "{path}");
            let message = &d.causes[0].message;
            assert!(
                !message.contains('\x1b') && !message.contains('\r'),
                "{path}: {message:?}"
            );
            assert!(
                message.chars().count() <= 300 && message.trim() == message,
                "{path}"
            );
            assert_eq!(
                d.probable_false_positive,
                path.ends_with("asan-false-positive.log")
            );
        }
    }

    #[test]
    fn headlines_become_messages() {
        let d = diagnose_file(fixture!("miri-data-race.log"), "racy-cell");
        assert!(d.causes[0].message.starts_with(
            "error: Undefined Behavior: Data race detected between (1) non-atomic read on thread \
             `unnamed-1` and (2) non-atomic write on thread `unnamed-2` at alloc1723."
        ));
        let d = diagnose_file(fixture!("asan-heap-buffer-overflow.log"), "byteview");
        assert_eq!(
            d.causes[0].message,
            "ERROR: AddressSanitizer: heap-buffer-overflow on address 0x502000000094 at pc \
             0x55e0f1c3b6f1 bp 0x7f6c387fd8b0 sp 0x7f6c387fd8a8"
        );
        let d = diagnose_file(fixture!("rust-sigill.log"), "simd-scan");
        assert!(
            d.causes[0]
                .message
                .starts_with("process didn't exit successfully: `/build/")
        );
        assert!(
            d.causes[0]
                .message
                .ends_with("(signal: 4, SIGILL: illegal instruction)")
        );
        let long = format!("error: Undefined Behavior: {}\n", "é".repeat(400));
        let message = &diagnose_str(&long, "c").causes[0].message;
        assert_eq!(message.chars().count(), 300);
    }

    #[test]
    fn two_reports_and_duplicates() {
        // The same stacked-borrows report from two tests, then an out-of-bounds read in a
        // dependency.
        let d = diagnose_file(fixture!("miri-two-reports.log"), "cellar");
        assert_eq!(
            summary(&d),
            [
                ("stacked-borrows-write-via-shared", "miri", Some("cellar")),
                ("out-of-bounds", "miri", Some("u16-pack")),
            ]
        );
        // Different binaries, different detectors' kinds, a dependency then the crate itself.
        let d = diagnose_file(fixture!("asan-heap-use-after-free-dep.log"), "graph-walk");
        assert_eq!(
            summary(&d),
            [
                ("heap-use-after-free", "asan", Some("arc-swap-ng")),
                ("segv", "asan", Some("graph-walk")),
            ]
        );
        // The same kind and message from two crates are two causes.
        let report = |path: &str| {
            format!("error: Undefined Behavior: entering unreachable code\n  --> {path}:1:1\n")
        };
        let reg = "/cargo/registry/src/index.crates.io-1949cf8c6b5b557f/dep-1.0.0/src/lib.rs";
        let log = [report(reg), report("src/lib.rs"), report(reg)].concat();
        assert_eq!(
            summary(&diagnose_str(&log, "me")),
            [
                ("other", "miri", Some("dep")),
                ("other", "miri", Some("me"))
            ]
        );
    }

    #[test]
    fn false_positive_flag_and_clean_log() {
        let d = diagnose_file(fixture!("asan-false-positive.log"), "coro-stack");
        assert!(d.probable_false_positive);
        let d = diagnose_file(fixture!("clean-test-run.log"), "tidy-json");
        assert_eq!(d, Diagnosis::default());
        assert_eq!(diagnose_str("", "x"), Diagnosis::default());
    }

    #[test]
    fn miri_kinds_from_real_headlines() {
        // Headlines (and the help line telling the aliasing model) of rust-lang/miri's tests/fail.
        let sb = "= help: ... but the Stacked Borrows rules it violated are still experimental";
        let cases = [
            (
                "reading memory at ALLOC[0x0..0x10], but memory is uninitialized at [0x4..0x10], and this operation requires initialized memory",
                "",
                "uninitialized-memory",
            ),
            (
                "constructing invalid value at .value[0]: encountered uninitialized memory, but expected an integer",
                "",
                "uninitialized-memory",
            ),
            (
                "out-of-bounds pointer arithmetic: ALLOC has been freed, so this pointer is dangling",
                "",
                "use-after-free",
            ),
            (
                "in-bounds pointer arithmetic failed: attempting to offset pointer by 8 bytes, but got ALLOC which is only 4 bytes from the end of the allocation",
                "",
                "out-of-bounds",
            ),
            (
                "constructing invalid value: encountered an unaligned reference (required 4 byte alignment but found 1)",
                "",
                "misaligned",
            ),
            (
                "constructing invalid value: encountered a dangling box (use-after-free)",
                "",
                "dangling-reference",
            ),
            (
                "type validation failed: encountered 0x02, but expected a boolean",
                "",
                "invalid-value",
            ),
            (
                "not granting access to tag <TAG> because that would remove [Unique for <TAG>] which is strongly protected because it is an argument of call ID",
                sb,
                "protector-invalidation",
            ),
            (
                "trying to retag from <TAG> for Unique permission at ALLOC[0x0], but that tag only grants SharedReadOnly permission for this location",
                sb,
                "stacked-borrows-shared-to-mut",
            ),
            (
                "attempting deallocation using <TAG> at ALLOC, but that tag does not exist in the borrow stack for this location",
                sb,
                "stacked-borrows-outside-provenance",
            ),
            (
                "reborrow through <TAG> at ALLOC[0x0] is forbidden",
                "= help: ... the Tree Borrows rules ...",
                "tree-borrows",
            ),
            (
                "calling a function with fewer arguments than it requires",
                "",
                "other",
            ),
        ];
        for (what, help, kind) in cases {
            let log =
                format!("error: Undefined Behavior: {what}\n  --> src/lib.rs:1:1\n   {help}\n");
            let d = diagnose_str(&log, "c");
            assert_eq!(summary(&d), [(kind, "miri", Some("c"))], "{what}");
        }
    }

    #[test]
    fn asan_kinds() {
        let frame = "    #0 0x55 in c::f::h1 /build/c-0.1.0/src/lib.rs:3:5\n";
        let cases = [
            (
                "attempting double-free on 0x602000000010 in thread T0:",
                "double-free",
            ),
            (
                "attempting free on address which was not malloc()-ed: 0x7ffd in thread T0",
                "bad-free",
            ),
            (
                "requested allocation size 0xffffffffffffff00 (0xffffffffffffff00 after adjustments for alignment, red zones etc.) exceeds maximum supported size of 0x10000000000 (thread T0)",
                "allocation-size-too-big",
            ),
            (
                "SEGV on unknown address 0x000000000000 (pc 0x55 bp 0x7f sp 0x7f T0)",
                "segv",
            ),
            (
                "stack-use-after-return on address 0x7f5e in thread T0",
                "stack-use-after-return",
            ),
            ("something-new on address 0x1", "something-new"),
            ("<unexpected> text", "other"),
        ];
        for (rest, kind) in cases {
            let log = format!("==1==ERROR: AddressSanitizer: {rest}\n{frame}");
            assert_eq!(
                summary(&diagnose_str(&log, "c")),
                [(kind, "asan", Some("c"))],
                "{rest}"
            );
        }
    }

    #[test]
    fn source_crate_attribution() {
        // The frames of the allocation stack do not count: the access's stack is all std here.
        let log = "==9==ERROR: AddressSanitizer: heap-use-after-free on address 0x1\n\
                   READ of size 8 at 0x1 thread T0\n    \
                   #0 0x1 in __asan_memcpy /rustc/llvm/src/llvm-project/compiler-rt/lib/asan/asan_interceptors_memintrinsics.cpp:63:3\n    \
                   #1 0x2 in core::ptr::read::h1 /rustc/abc/library/core/src/ptr/mod.rs:1:1\n    \
                   #2 0x3 in main (/build/c-0.1.0/target/debug/deps/c-1+0x1234) (BuildId: 8a9b)\n    \
                   #3 0x4 in __libc_start_main csu/../csu/libc-start.c:332:16\n\n\
                   freed by thread T0 here:\n    \
                   #0 0x5 in c::f::h2 /build/c-0.1.0/src/lib.rs:3:5\n";
        assert_eq!(
            summary(&diagnose_str(log, "c")),
            [("heap-use-after-free", "asan", None)]
        );
        // Old panic format (message and location on one line), relative `./src` backtrace paths.
        let log = "thread 'main' panicked at 'misaligned pointer dereference: address must be a multiple of 0x8 but is 0x7f5f40010b05', src/bbloom.rs:122:22\n";
        let expected = [("misaligned-pointer-dereference", "rust", Some("stretto"))];
        assert_eq!(summary(&diagnose_str(log, "stretto")), expected);
        let log = "thread 'main' panicked at library/core/src/panicking.rs:226:5:\n\
                   attempted to zero-initialize type `&u8`, which is invalid\n\
                   stack backtrace:\n   0: core::mem::zeroed\n             at library/core/src/mem/mod.rs:9:9\n   \
                   1: c::make\n             at ./src/lib.rs:4:14\n";
        assert_eq!(
            summary(&diagnose_str(log, "c")),
            [("invalid-zeroed-type", "rust", Some("c"))]
        );
        // Another panic ends the search; so do a help span and the next test's output.
        let log = "thread 't' panicked at /rustc/a/library/core/src/panicking.rs:1:1:\n\
                   unsafe precondition(s) violated: hint::assert_unchecked must never be called when the condition is false\n\
                   thread 'u' panicked at src/lib.rs:1:1:\nassertion failed\n";
        assert_eq!(summary(&diagnose_str(log, "c"))[0].2, None);
        let log = "error: Undefined Behavior: unsupported\n   = note: (no span available)\n\
                   help: ALLOC was allocated here:\n  --> src/lib.rs:3:3\n";
        assert_eq!(summary(&diagnose_str(log, "c"))[0].2, None);
        let log = format!(
            "error: Undefined Behavior: x\n{}  --> src/lib.rs:3:3\n",
            "\n".repeat(WINDOW)
        );
        assert_eq!(summary(&diagnose_str(&log, "c"))[0].2, None);
    }

    #[test]
    fn registry_directory_names() {
        let cases = [
            ("smallvec-1.6.0", "smallvec"),
            ("byte-slab-utils-0.3.0-beta.2", "byte-slab-utils"),
            ("md-5-0.10.6", "md-5"),
            (
                "winapi-x86_64-pc-windows-gnu-0.4.0",
                "winapi-x86_64-pc-windows-gnu",
            ),
            ("foo-1.0.0-1", "foo"),
            ("bar-2.0.0+build.5", "bar"),
            ("weird-1.x", "weird"),
            ("noversion", "noversion"),
        ];
        for (dir, name) in cases {
            assert_eq!(registry_crate(dir), name, "{dir}");
        }
        assert_eq!(
            source_crate(
                "/root/.cargo/registry/src/github.com-1ecc6299db9ec823/libc-0.2.1/src/unix.rs:5:1",
                "c"
            )
            .as_deref(),
            Some("libc")
        );
        for toolchain in [
            "/rustc/b3f75cc872cfd306860c3ad76a239e719015f855/library/core/src/ptr/mod.rs:1:1",
            "/opt/rustup/toolchains/nightly-x86_64-unknown-linux-gnu/lib/rustlib/src/rust/library/std/src/rt.rs:1:1",
            "/root/.rustup/toolchains/nightly/lib/rustlib/src/rust/library/alloc/src/vec/mod.rs",
            "/opt/rust/lib/rustlib/src/rust/library/core/src/ops/function.rs:250:5",
            "core/src/panicking.rs:221:5:",
            "RUSTLIB/core/src/ptr/mod.rs:LL:CC",
        ] {
            assert_eq!(source_crate(toolchain, "c"), None, "{toolchain}");
        }
    }

    /// A 10 MiB line without a newline, then a report: memory stays bounded and the report is
    /// still found.
    #[test]
    fn long_lines_are_bounded() {
        struct Generated {
            left: usize,
            tail: &'static [u8],
        }
        impl Read for Generated {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                if self.left > 0 {
                    let n = buf.len().min(self.left);
                    buf[..n].fill(b'x');
                    self.left -= n;
                    return Ok(n);
                }
                let n = buf.len().min(self.tail.len());
                buf[..n].copy_from_slice(&self.tail[..n]);
                self.tail = &self.tail[n..];
                Ok(n)
            }
        }
        let tail = b"\nerror: Undefined Behavior: using uninitialized data\n  --> src/lib.rs:1:1\n";
        let input = Generated {
            left: 10 << 20,
            tail,
        };
        let d = diagnose(input, "c").unwrap();
        assert_eq!(summary(&d), [("uninitialized-memory", "miri", Some("c"))]);

        let mut line = Vec::new();
        let mut input = BufReader::new(Generated {
            left: 10 << 20,
            tail: b"\nnext\n",
        });
        assert!(read_line(&mut input, &mut line).unwrap());
        assert_eq!(line.len(), MAX_LINE);
        assert!(read_line(&mut input, &mut line).unwrap());
        assert_eq!(line, b"next");
        assert!(!read_line(&mut input, &mut line).unwrap());
    }

    #[test]
    fn plain_text_strips_escapes_and_redraws() {
        let mut out = String::new();
        let cases: [(&[u8], &str); 5] = [
            (
                b"\x1b[0m\x1b[1m\x1b[38;5;9merror\x1b[0m\x1b[0m\x1b[1m: Undefined\x1b[0m\r",
                "error: Undefined",
            ),
            (
                b"   Building [=> ] 1/3\r\x1b[K   Compiling x\r",
                "   Compiling x",
            ),
            (b"progress\r\x1b[K", ""),
            (b"a\tb \xff", "a\tb \u{fffd}"),
            (b"\x1b]0;title\x07ok", "ok"),
        ];
        for (raw, text) in cases {
            plain_text(raw, &mut out);
            assert_eq!(out, text);
        }
    }

    #[test]
    fn markers_cover_every_headline() {
        assert!(REPORT_MARKERS.contains(&MIRI) && REPORT_MARKERS.contains(&ASAN));
        for (marker, _) in RUST_CHECKS {
            assert!(REPORT_MARKERS.contains(&marker), "{marker}");
        }
    }
}
