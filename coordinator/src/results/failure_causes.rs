//! Why a run failed when it was not undefined behaviour: rustc's errors, an internal compiler
//! error, the linker's errors, a system library a build script could not find, the network,
//! dependency resolution, the tests that failed; and for a timeout, an OOM kill or the harness
//! failing, the record's facts.
//!
//! A report page groups thousands of failures by their causes' `kind`, so every failure that is
//! not `ub` gets at least one: what its log says for a step that failed (prepare, build, test),
//! the facts for the rest, and `unknown` when nothing was found. UB is [`diagnose`]'s.
//!
//! Logs can be gigabytes: this takes the lines [`diagnose::for_each_line`] hands it (plain text,
//! each cut at 64 KiB), keeps at most [`MAX_CAUSES`] causes and a bounded set of test names, so
//! memory stays bounded; [`diagnose_and_explain`] reads a log once for both.

use std::collections::HashSet;
use std::io::{self, Read};

use crater_proto::verdict::Verdict;

use crate::results::diagnose::{self, Cause, Diagnosis, MAX_MESSAGE, source_crate, truncate};
use crate::results::record::ResultRecord;
use crate::results::verdict::LIMIT_DETECTOR;

/// Causes kept of one log: a log with 5,000 errors says no more than its first few. One place
/// is kept for the failed tests, counted at the end.
pub const MAX_CAUSES: usize = 20;
/// Of those, rustc's errors: one broken crate's errors must leave room for rarer causes.
const MAX_COMPILER_ERRORS: usize = 10;
/// Failing tests named in the `test-failure` message; the rest are counted.
const NAMES_SHOWN: usize = 5;
/// Distinct failing test names remembered (to count them), each cut to [`MAX_TEST_NAME`].
const MAX_TEST_NAMES: usize = 10_000;
const MAX_TEST_NAME: usize = 200;
/// The `detector` of causes that are the harness's own word: its error, or that it found none.
pub const HARNESS_DETECTOR: &str = "harness";

/// Kinds found in logs, most fundamental first: causes are sorted so, and the first is the one
/// to group by (a missing library explains the linker error after it). rustc's error codes
/// rank as `rustc-error`.
const RANK: &str = "ice missing-system-library network rust-version manifest \
    dependency-resolution build-script linker rustc-error unsupported-operation crash test-failure";

/// Miri's error for what it cannot run (a foreign function, a syscall): not UB, a limit of Miri's.
const MIRI_UNSUPPORTED: &str = "error: unsupported operation:";
/// Cargo's own failures, by a marker their line holds: (marker, kind).
const CARGO: &[(&str, &str)] = &[
    ("failed to download", "network"),
    ("Couldn't resolve host", "network"),
    ("Could not resolve host", "network"),
    ("as a dependency of package", "network"),
    ("spurious network error", "network"),
    ("network failure seems to have happened", "network"),
    ("failed to query replaced source registry", "network"),
    ("failed to select a version for", "dependency-resolution"),
    ("no matching package", "dependency-resolution"),
    ("failed to parse manifest", "manifest"),
    ("failed to load manifest", "manifest"),
    ("requires rustc 1.", "rust-version"),
    ("is not supported by the following package", "rust-version"),
    ("requires the Cargo feature called", "rust-version"),
];

/// Reads a raw terminal log once for both its UB reports ([`diagnose::diagnose`]) and its
/// failure causes ([`failure_causes`]).
pub fn diagnose_and_explain(
    log: impl Read,
    crate_name: &str,
) -> io::Result<(Diagnosis, Vec<Cause>)> {
    let mut ub = diagnose::Scanner::new(crate_name);
    let mut why = Scanner::new(crate_name);
    diagnose::for_each_line(log, |line, prev| {
        ub.line(line, prev);
        why.line(line);
    })?;
    Ok((ub.finish(), why.finish()))
}

/// The causes of a failure a raw terminal log shows (see the module's doc); `crate_name` is the
/// crate under test. Deduplicated by (kind, source_crate, message), at most [`MAX_CAUSES`],
/// most fundamental first; empty when the log shows none.
pub fn failure_causes(log: impl Read, crate_name: &str) -> io::Result<Vec<Cause>> {
    let mut why = Scanner::new(crate_name);
    diagnose::for_each_line(log, |line, _| why.line(line))?;
    Ok(why.finish())
}

/// Whether a verdict's causes are in its log: the crate's own failure at a step. A timeout's,
/// an OOM kill's or the harness's log shows what broke after, not why: their causes are the
/// facts ([`fact_causes`]); `ub`'s are [`diagnose`]'s.
pub fn explained_by_log(verdict: Verdict) -> bool {
    matches!(
        verdict,
        Verdict::PrepareFail | Verdict::BuildFail | Verdict::TestFail
    )
}

/// The causes a record's fields give a failure that is not `ub` (no log needed), beside those
/// it has: `timeout` (which limit), `oom`, `harness-error`, and `unknown` for a failure with no
/// cause at all. Kinds the record has already are left out, so a report over older results
/// (without failure causes) and newer ones alike can show `record.causes` and these.
pub fn fact_causes(record: &ResultRecord) -> Vec<Cause> {
    let failed = record.status.is_failure() || record.status == Verdict::PrepareFail;
    if !failed || record.status == Verdict::Ub {
        return Vec::new();
    }
    let (kind, detector, message) = match record.status {
        Verdict::Timeout => {
            let limit = match record.timeout_kind.as_deref() {
                Some("wall") => "the wall-clock limit",
                Some("idle") => "the idle limit (no output for too long)",
                Some("backstop") => "the agent's backstop limit",
                _ => "a time limit",
            };
            ("timeout", LIMIT_DETECTOR, format!("ran into {limit}"))
        }
        Verdict::Oom => {
            let mut message = "the kernel OOM-killed one of the job's processes".to_owned();
            if record.peak_memory_bytes >= 1 << 20 {
                message += &format!(" (peak memory {} MiB)", record.peak_memory_bytes >> 20);
            }
            ("oom", LIMIT_DETECTOR, message)
        }
        Verdict::Error => {
            let error = record.harness_error.as_deref();
            let error = error.unwrap_or("the harness failed").to_owned();
            ("harness-error", HARNESS_DETECTOR, error)
        }
        _ => {
            let step = record.failed_step.as_deref();
            let step = step.unwrap_or(record.status.name());
            let message = format!("{step} failed; no known cause in the log");
            ("unknown", HARNESS_DETECTOR, message)
        }
    };
    // A kind the record has is not repeated; `unknown` only for a record with no cause at all.
    let fresh = (record.causes.iter()).all(|had| kind != "unknown" && had.kind != kind);
    let fact = fresh.then(|| cause(kind, detector, None, &message));
    fact.into_iter().collect()
}

/// A failure's causes, fed one line at a time (plain text, by [`diagnose::for_each_line`]).
#[derive(Default)]
pub(crate) struct Scanner<'a> {
    crate_name: &'a str,
    causes: Vec<Cause>,
    /// Every cause committed, for deduplication (a detector follows from kind and message).
    seen: HashSet<Cause>,
    compiler_errors: usize,
    /// An `error` headline waiting for the next line: a ` --> ` span names its source crate,
    /// and makes a plain `error: ...` (kind `rustc-error`) rustc's.
    headline: Option<Cause>,
    /// rustc's causes (errors, ICE, linker) waiting for cargo's ``could not compile `foo` `` to
    /// name the crate they are of.
    compiling: Vec<Cause>,
    /// The `network` cause's index: one network failure prints a chain of lines, one cause.
    network: Option<usize>,
    /// The crate whose build script failed (`failed to run custom build command for `x v1``):
    /// what its output says next is of it.
    build_script: Option<String>,
    /// In a test's captured output (`---- name stdout ----`, nextest's `STDERR:`): what it
    /// prints is the test's, not the build's (a doctest's compile errors, a test's own strings).
    in_test_output: bool,
    /// In libtest's closing list of failures (`failures:`, then a `    name` a line).
    in_failure_list: bool,
    tests: FailedTests,
}

#[derive(Default)]
struct FailedTests {
    shown: Vec<String>,
    seen: HashSet<String>,
    /// The sum of libtest's summaries' "N failed", for output whose names are lost.
    libtest_failed: u64,
    /// nextest's summary's "N failed": apart, as its tests' output repeats libtest's summaries.
    nextest_failed: u64,
    /// The first panic in a failing test's output: "message at location".
    panic: Option<String>,
    /// The location of a panic whose message is on the next line (Rust 1.73 and later).
    panic_at: Option<String>,
}

impl<'a> Scanner<'a> {
    pub(crate) fn new(crate_name: &'a str) -> Self {
        Scanner {
            crate_name,
            ..Scanner::default()
        }
    }

    /// Takes in one line (plain text).
    pub(crate) fn line(&mut self, line: &str) {
        let t = line.trim();
        if let Some(headline) = self.headline.take() {
            self.after_headline(headline, t);
        }
        if t.is_empty() {
            self.in_failure_list = false;
            return;
        }
        self.follow_tests(line, t);
        // Miri's errors are a test's output (nextest's STDERR), and the test's failure.
        if (!self.in_test_output || line.starts_with(MIRI_UNSUPPORTED)) && may_matter(t) {
            self.classify(line, t);
        }
    }

    /// The causes, once every line is in: most fundamental first.
    pub(crate) fn finish(mut self) -> Vec<Cause> {
        if let Some(headline) = self.headline.take() {
            self.after_headline(headline, "");
        }
        self.compiled(None);
        if let Some(cause) = self.tests.cause(self.crate_name) {
            self.causes.push(cause);
        }
        let rank = |c: &Cause| {
            let kind = Some("rustc-error").filter(|_| is_error_code(&c.kind));
            let kind = kind.unwrap_or(&c.kind);
            RANK.split_whitespace().position(|k| k == kind)
        };
        // Kinds not in RANK go last.
        self.causes.sort_by_key(|c| rank(c).unwrap_or(usize::MAX));
        self.causes
    }

    fn classify(&mut self, line: &str, t: &str) {
        if let Some(rest) = t.strip_prefix("error: could not compile `") {
            let name = rest.split('`').next().unwrap_or(rest).to_owned();
            return self.compiled(Some(name));
        }
        if t.contains("internal compiler error")
            || t.starts_with("thread 'rustc' panicked")
            || t.contains("the compiler unexpectedly panicked")
        {
            // One ICE prints all three: one cause, its best headline.
            let better = t.contains("internal compiler error:");
            match self.compiling.iter_mut().find(|c| c.kind == "ice") {
                Some(c) if better && !c.message.contains("internal compiler error:") => {
                    c.message = truncate(t, MAX_MESSAGE);
                }
                Some(_) => {}
                None => self.pend(cause("ice", "rustc", None, t)),
            }
            return;
        }
        if let Some(lib) = linked_library(t) {
            return self.pend(cause("missing-system-library", "linker", None, &lib));
        }
        if let Some(lib) = t
            .split_once("could not find native static library `")
            .and_then(|(_, rest)| rest.split('`').next())
        {
            let lib = format!("{lib} (native static library)");
            return self.pend(cause("missing-system-library", "rustc", None, &lib));
        }
        if t.contains("error: linking with `") || t.contains("error: linker `") {
            return self.pend(cause("linker", "linker", None, t));
        }
        for marker in ["undefined reference to ", "undefined symbol: "] {
            if let Some(i) = t.find(marker) {
                return self.pend(cause("linker", "linker", None, &t[i..]));
            }
        }
        if let Some((lib, required_by)) = system_library(t) {
            let source = required_by
                .or_else(|| cargo_warning_crate(t))
                .or_else(|| self.build_script.clone());
            let lib = cause("missing-system-library", "build-script", source, &lib);
            return self.commit(lib);
        }
        if let Some(rest) = t.strip_prefix("error: failed to run custom build command for `") {
            let name = rest.split([' ', '`']).next().unwrap_or(rest).to_owned();
            self.build_script = Some(name.clone());
            let message = &t["error: ".len()..];
            return self.commit(cause("build-script", "cargo", Some(name), message));
        }
        if let Some(&(_, kind)) = CARGO.iter().find(|(marker, _)| t.contains(marker)) {
            return self.cargo(kind, t);
        }
        if t.contains("process didn't exit successfully")
            && let Some((_, signal)) = t.rsplit_once("(signal: ")
        {
            let message = format!("killed by signal {}", signal.trim_end_matches(')'));
            return self.commit(cause("crash", "cargo", None, &message));
        }
        // rustc's errors start the line; an indented one is someone's output quoting one.
        if let Some(code) = error_code(line) {
            self.headline = Some(cause(code, "rustc", None, t));
        } else if line.starts_with(MIRI_UNSUPPORTED) {
            self.headline = Some(cause("unsupported-operation", "miri", None, t));
        } else if line.starts_with("error: ") {
            self.headline = Some(cause("rustc-error", "rustc", None, t));
        }
    }

    /// A failure of cargo's own (`kind` from [`CARGO`]) on line `t`.
    fn cargo(&mut self, kind: &str, t: &str) {
        let source = (kind == "rust-version").then(|| package_name(t)).flatten();
        let cause = cause(kind, "cargo", source, t);
        if kind != "network" {
            return self.commit(cause);
        }
        // One network failure prints a chain of lines: one cause, headed by cargo's error
        // rather than the warnings (retries) before it.
        match self.network {
            None => {
                let at = self.causes.len();
                self.commit(cause);
                self.network = (self.causes.len() > at).then_some(at);
            }
            Some(i) if t.starts_with("error: ") => {
                if let Some(had) = self.causes.get_mut(i)
                    && !had.message.starts_with("error: ")
                {
                    had.message = cause.message;
                }
            }
            Some(_) => {}
        }
    }

    /// `t` is the line after an `error` headline: its span, if it has one. A plain `error:` is
    /// rustc's only with a span (cargo's have none); rustc's wait for cargo to name the crate.
    fn after_headline(&mut self, mut headline: Cause, t: &str) {
        let span = t.strip_prefix("--> ");
        if span.is_none() && headline.kind == "rustc-error" {
            return;
        }
        let path = span.and_then(|s| s.split_whitespace().next()).unwrap_or("");
        headline.source_crate = source_crate(path, self.crate_name);
        if headline.detector == "rustc" {
            self.pend(headline);
        } else {
            self.commit(headline);
        }
    }

    /// Keeps a cause of rustc's until cargo says which crate failed to compile.
    fn pend(&mut self, cause: Cause) {
        if self.compiling.len() < MAX_CAUSES {
            self.compiling.push(cause);
        }
    }

    /// Cargo said which crate failed to compile (`Some`), or nothing more will: the causes
    /// pending are of that crate, unless their span is a dependency's (in the registry).
    fn compiled(&mut self, name: Option<String>) {
        for mut cause in std::mem::take(&mut self.compiling) {
            let dependency = cause.source_crate.as_deref();
            if name.is_some() && dependency.is_none_or(|source| source == self.crate_name) {
                cause.source_crate = name.clone();
            }
            self.commit(cause);
        }
    }

    fn commit(&mut self, cause: Cause) {
        let compiler = is_error_code(&cause.kind) || cause.kind == "rustc-error";
        if self.causes.len() + 1 >= MAX_CAUSES
            || (compiler && self.compiler_errors >= MAX_COMPILER_ERRORS)
        {
            return;
        }
        if self.seen.insert(cause.clone()) {
            self.compiler_errors += usize::from(compiler);
            self.causes.push(cause);
        }
    }

    /// Follows libtest's and nextest's output: failing tests, their first panic, and where a
    /// test's own output begins and ends.
    fn follow_tests(&mut self, line: &str, t: &str) {
        if let Some(location) = self.tests.panic_at.take() {
            self.tests.panic = Some(format!("{t} at {location}"));
        }
        if self.in_failure_list && line.starts_with("    ") {
            return self.tests.failed(t);
        }
        self.in_failure_list = false;
        // nextest's status lines start with a capital (`FAIL [`); a cheap test before the search.
        let nextest = t
            .starts_with(|c: char| c.is_ascii_uppercase())
            .then(|| nextest_status(t))
            .flatten();
        if t == "failures:" || t.starts_with("test result: ") || nextest.is_some() {
            // The test output before each is over: libtest's list of failures (the second
            // `failures:`) or its summary, or nextest's next test.
            self.in_test_output = false;
            self.in_failure_list = t == "failures:";
        }
        if let Some((status, name)) = nextest {
            let failed = ["FAIL", "SIGSEGV", "SIGABRT", "SIGBUS", "TIMEOUT", "ABORT"];
            if failed.contains(&status) {
                self.tests.failed(name);
            }
        } else if t.starts_with("Running ") || t.starts_with("Doc-tests ") {
            self.in_test_output = false;
            self.compiled(None);
        } else if (t.starts_with("---- ")
            && (t.ends_with(" stdout ----") || t.ends_with(" stderr ----")))
            || (t.starts_with(['-', '─']) && (t.contains("STDOUT:") || t.contains("STDERR:")))
        {
            self.in_test_output = true;
        } else if let Some((name, _)) = t
            .strip_prefix("test ")
            .and_then(|rest| rest.split_once(" ... FAILED"))
        {
            self.tests.failed(name);
        } else if t.starts_with("test result: FAILED") {
            self.tests.libtest_failed += failed_count(t);
        } else if t.starts_with("Summary [") {
            self.tests.nextest_failed += failed_count(t);
        } else if self.in_test_output
            && self.tests.panic.is_none()
            && let Some((_, at)) = t.split_once("panicked at ")
        {
            match at.strip_prefix('\'').and_then(|a| a.rsplit_once("', ")) {
                // Before Rust 1.73: `panicked at 'message', src/lib.rs:10:5`.
                Some((message, at)) => self.tests.panic = Some(format!("{message} at {at}")),
                None => self.tests.panic_at = Some(at.trim_end_matches(':').to_owned()),
            }
        }
    }
}

impl FailedTests {
    fn failed(&mut self, name: &str) {
        let name = name.trim();
        if self.seen.contains(name) {
            return;
        }
        let name = truncate(name, MAX_TEST_NAME);
        if self.seen.len() < MAX_TEST_NAMES
            && self.seen.insert(name.clone())
            && self.shown.len() < NAMES_SHOWN
        {
            self.shown.push(name);
        }
    }

    /// "3 tests failed: a, b, c; first panic: ...", if any did.
    fn cause(&self, crate_name: &str) -> Option<Cause> {
        let count = (self.seen.len() as u64)
            .max(self.libtest_failed)
            .max(self.nextest_failed);
        if count == 0 {
            return None;
        }
        let mut message = format!("{count} test{} failed", if count == 1 { "" } else { "s" });
        if !self.shown.is_empty() {
            message = format!("{message}: {}", self.shown.join(", "));
            let more = count.saturating_sub(self.shown.len() as u64);
            if more > 0 {
                message.push_str(&format!(", and {more} more"));
            }
        }
        if let Some(panic) = &self.panic {
            message = format!("{message}; first panic: {panic}");
        }
        let source = Some(crate_name.to_owned());
        Some(cause("test-failure", "libtest", source, &message))
    }
}

/// A cause; its message trimmed and cut to [`MAX_MESSAGE`] chars.
fn cause(kind: &str, detector: &str, source_crate: Option<String>, message: &str) -> Cause {
    Cause {
        kind: kind.to_owned(),
        detector: detector.to_owned(),
        source_crate,
        message: truncate(message.trim(), MAX_MESSAGE),
    }
}

/// Whether a line holds a word every pattern of [`Scanner::classify`] has: a test that most
/// lines fail, one pass over the bytes, where the dozens of substring searches after it would
/// cost a gigabyte log many seconds.
fn may_matter(t: &str) -> bool {
    let b = t.as_bytes();
    (0..b.len()).any(|i| {
        let at = |word: &[u8]| b[i..].starts_with(word);
        match b[i] {
            b'e' => at(b"error") || at(b"exit"),
            b'f' => at(b"fail") || at(b"find") || at(b"found"),
            b'p' => at(b"panicked"),
            b'u' => at(b"undefined"),
            b'i' => at(b"installed"),
            b'r' => at(b"resolve") || at(b"requires"),
            b'd' => at(b"dependency"),
            b'm' => at(b"matching"),
            b's' => at(b"supported"),
            _ => false,
        }
    })
}

/// rustc's error code: `E0425` of `error[E0425]: ...`.
fn error_code(line: &str) -> Option<&str> {
    let code = line.strip_prefix("error[")?.split(']').next()?;
    is_error_code(code).then_some(code)
}

fn is_error_code(kind: &str) -> bool {
    kind.len() == 5 && kind.starts_with('E') && kind[1..].bytes().all(|b| b.is_ascii_digit())
}

/// The library of a linker's "cannot find -lssl" (ld) or "unable to find library -lssl" (lld).
fn linked_library(t: &str) -> Option<String> {
    let (_, rest) = t
        .split_once("cannot find -l")
        .or_else(|| t.split_once("unable to find library -l"))?;
    let name = rest.split([':', ' ']).next().filter(|n| !n.is_empty())?;
    Some(format!("-l{name}"))
}

/// A system library a build script could not find, named as its finder said it (pkg-config,
/// a C compiler's missing header, CMake, a missing program), and the crate that needed it when
/// the line says.
fn system_library(t: &str) -> Option<(String, Option<String>)> {
    let between = |start: &str, end: &str| {
        let (_, rest) = t.split_once(start)?;
        let (name, _) = rest.split_once(end)?;
        (!name.is_empty() && name.len() < 100).then(|| name.to_owned())
    };
    let pkg_config = between("Package ", " was not found in the pkg-config search path")
        .or_else(|| between("No package '", "' found"))
        .or_else(|| between("Package '", "', required by"))
        .or_else(|| between("could not find system library '", "'"))
        .or_else(|| between("The system library `", "` required by crate `"));
    if let Some(name) = pkg_config {
        let required_by =
            between("required by the '", "' crate").or_else(|| between("required by crate `", "`"));
        return Some((format!("{name} (pkg-config)"), required_by));
    }
    let header = between("fatal error: ", ": No such file or directory")
        .or_else(|| between("fatal error: '", "' file not found"))
        .filter(|h| [".h", ".hh", ".hpp", ".hxx"].iter().any(|e| h.ends_with(e)));
    let cmake = between("Could NOT find ", " ")
        .map(|name| name.trim_end_matches(',').to_owned())
        .or_else(|| {
            between(
                "Could not find a package configuration file provided by \"",
                "\"",
            )
        });
    let command = between("is `", "` not installed").or_else(|| {
        let pkg_config = t.contains("pkg-config command could not be found");
        pkg_config.then(|| "pkg-config".to_owned())
    });
    let (name, finder) = (header.map(|name| (name, "header")))
        .or(cmake.map(|name| (name, "cmake")))
        .or(command.map(|name| (name, "command")))?;
    Some((format!("{name} ({finder})"), None))
}

/// The crate of a cargo warning a build script printed: `openssl-sys` of
/// `warning: openssl-sys@0.9.102: ...`.
fn cargo_warning_crate(t: &str) -> Option<String> {
    let (id, _) = t.strip_prefix("warning: ")?.split_once(": ")?;
    let (name, _) = id.split_once('@')?;
    (!name.contains(' ')).then(|| name.to_owned())
}

/// The package a rust-version error names: `package `foo v1.2.3` cannot be built ...` or
/// `foo@1.2.3 requires rustc 1.80`.
fn package_name(t: &str) -> Option<String> {
    if let Some((_, rest)) = t.split_once("package `") {
        return rest.split([' ', '`']).next().map(str::to_owned);
    }
    let (name, _) = t.split_once('@').filter(|(n, _)| !n.contains(' '))?;
    Some(name.to_owned())
}

/// A nextest status line, `FAIL [   0.004s] foo tests::bar`: its status and test.
fn nextest_status(t: &str) -> Option<(&str, &str)> {
    let (status, rest) = t.split_once(" [")?;
    let (_, test) = rest.split_once("s] ")?;
    let upper = !status.is_empty() && status.bytes().all(|b| b.is_ascii_uppercase());
    upper.then(|| (status, test.rsplit(' ').next().unwrap_or(test)))
}

/// The number before " failed" in a summary: `test result: FAILED. 1 passed; 2 failed; ...`,
/// nextest's `Summary [ 0.1s] 3 tests run: 1 passed, 2 failed, 0 skipped`.
fn failed_count(t: &str) -> u64 {
    let Some((before, _)) = t.split_once(" failed") else {
        return 0;
    };
    let digits = before.rsplit([' ', ',', ';']).next().unwrap_or("");
    digits.parse().unwrap_or(0)
}

#[cfg(test)]
mod tests;
