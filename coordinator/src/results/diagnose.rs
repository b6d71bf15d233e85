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

/// One reason a run failed: a UB report here, or another failure's cause
/// ([`super::failure_causes`]), or a limit ([`super::verdict::limit_causes`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Cause {
    /// Short stable kind, kebab-case, e.g. "data-race", "uninitialized-memory", "out-of-bounds",
    /// "dangling-reference", "stacked-borrows", "tree-borrows", "heap-buffer-overflow",
    /// "heap-use-after-free", "sigill", "misaligned-pointer-dereference",
    /// "unsafe-precondition-violated", "invalid-uninit-type", ... for UB; a rustc error code
    /// ("E0425"), "linker", "network", "test-failure", ... for other failures.
    pub kind: String,
    /// Which detector reported it: "miri", "asan" or "rust" (rustc/std runtime checks, SIGILL)
    /// for UB; "rustc", "cargo", "libtest", "limit", "harness", ... for other failures.
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
pub(crate) const MAX_MESSAGE: usize = 300;
/// Distinct causes kept: a log with millions of distinct reports must not grow memory unboundedly.
const MAX_CAUSES: usize = 1000;

/// Reads a raw terminal log (with ANSI colour codes, CRLF line endings from a pty, possibly
/// gigabytes: stream it line by line with a bounded line length, e.g. 64 KiB, never load it whole)
/// and finds every UB report. `crate_name` is the crate under test (its frames are under
/// /build/{name}-{version}/).
pub fn diagnose(log: impl Read, crate_name: &str) -> io::Result<Diagnosis> {
    let mut scanner = Scanner::new(crate_name);
    for_each_line(log, |line, prev| scanner.line(line, prev))?;
    Ok(scanner.finish())
}

/// Calls `each(line, previous line)` for every line of a raw terminal log, as plain text (see
/// [`plain_text`]), each line cut at [`MAX_LINE`] bytes: the one bounded pass over a log that
/// every reader of logs shares, so a log can be read once for all of them.
pub(crate) fn for_each_line(log: impl Read, mut each: impl FnMut(&str, &str)) -> io::Result<()> {
    let mut input = BufReader::with_capacity(MAX_LINE, log);
    let mut raw = Vec::new();
    let (mut line, mut prev) = (String::new(), String::new());
    while read_line(&mut input, &mut raw)? {
        plain_text(&raw, &mut line);
        each(&line, &prev);
        std::mem::swap(&mut line, &mut prev);
    }
    Ok(())
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

/// The UB reports of a log, fed one line at a time (by [`for_each_line`]).
pub(crate) struct Scanner<'a> {
    crate_name: &'a str,
    diagnosis: Diagnosis,
    seen: HashSet<(String, Option<String>, String)>,
    report: Option<Report>,
}

impl<'a> Scanner<'a> {
    /// `crate_name` is the crate under test.
    pub(crate) fn new(crate_name: &'a str) -> Self {
        Scanner {
            crate_name,
            diagnosis: Diagnosis::default(),
            seen: HashSet::new(),
            report: None,
        }
    }

    /// The reports, once every line is in.
    pub(crate) fn finish(mut self) -> Diagnosis {
        self.close();
        self.diagnosis
    }

    /// Takes in one line (plain text); `prev` is the line before it.
    pub(crate) fn line(&mut self, line: &str, prev: &str) {
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
pub(crate) fn source_crate(path: &str, crate_name: &str) -> Option<String> {
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

pub(crate) fn truncate(s: &str, max_chars: usize) -> String {
    match s.char_indices().nth(max_chars) {
        Some((i, _)) => s[..i].trim_end().to_owned(),
        None => s.to_owned(),
    }
}

#[cfg(test)]
mod tests;
