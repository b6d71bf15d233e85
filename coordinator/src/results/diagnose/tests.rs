//! UB diagnosis against the reports in `tests/fixtures/ub` and inline samples.

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
        let log = format!("error: Undefined Behavior: {what}\n  --> src/lib.rs:1:1\n   {help}\n");
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

#[test]
fn a_report_recorded_from_our_own_asan_container() {
    let d = diagnose_file(fixture!("asan-recorded-heap-overflow.log"), "fixture-asan");
    assert_eq!(
        summary(&d),
        [("heap-buffer-overflow", "asan", Some("fixture-asan"))],
        "the first frame is in core::ptr, the next in the crate itself"
    );
    assert!(!d.probable_false_positive);
}
