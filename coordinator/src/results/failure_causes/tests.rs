//! Failure causes against excerpts of logs as cargo, rustc, ld, pkg-config, cc, CMake, libtest
//! and nextest print them, and the publish step that files them.

use super::*;
use crate::results::outbox::Outbox;
use crate::results::publish::{Job, publish};
use crate::results::record::sample_record;
use crate::results::spool::SpooledLog;
use crater_proto::pb;
use crater_proto::tool::Tool;

fn causes(log: &str, crate_name: &str) -> Vec<Cause> {
    failure_causes(log.as_bytes(), crate_name).unwrap()
}

/// (kind, detector, source crate, message) of each cause.
fn summary(causes: &[Cause]) -> Vec<(&str, &str, Option<&str>, &str)> {
    let each = causes.iter();
    each.map(|c| {
        (
            &*c.kind,
            &*c.detector,
            c.source_crate.as_deref(),
            &*c.message,
        )
    })
    .collect()
}

/// A pty's log: colours as cargo and rustc print them with `--color=always`, CRLF endings.
const COLOURED_BUILD: &str = concat!(
    "\x1b[1m\x1b[32m   Compiling\x1b[0m libc v0.2.155\r\n",
    "\x1b[1m\x1b[32m   Compiling\x1b[0m tiny-cli v0.3.1 (/build/tiny-cli-0.3.1)\r\n",
    "\x1b[0m\x1b[1m\x1b[38;5;9merror[E0425]\x1b[0m\x1b[0m\x1b[1m: cannot find value `verbose` in this scope\x1b[0m\r\n",
    "\x1b[0m  \x1b[0m\x1b[0m\x1b[1m\x1b[38;5;12m--> \x1b[0m\x1b[0msrc/main.rs:14:8\x1b[0m\r\n",
    "\x1b[0m   \x1b[0m\x1b[0m\x1b[1m\x1b[38;5;12m|\x1b[0m\r\n",
    "\x1b[0m\x1b[1m\x1b[38;5;12m14\x1b[0m\x1b[0m \x1b[0m\x1b[0m\x1b[1m\x1b[38;5;12m|\x1b[0m\x1b[0m \x1b[0m\x1b[0m    if verbose {\x1b[0m\r\n",
    "\x1b[0m   \x1b[0m\x1b[0m\x1b[1m\x1b[38;5;12m|\x1b[0m\x1b[0m        \x1b[0m\x1b[0m\x1b[1m\x1b[38;5;9m^^^^^^^\x1b[0m\x1b[0m \x1b[0m\x1b[0m\x1b[1m\x1b[38;5;9mnot found in this scope\x1b[0m\r\n",
    "\r\n",
    "\x1b[0m\x1b[1m\x1b[38;5;9merror[E0308]\x1b[0m\x1b[0m\x1b[1m: mismatched types\x1b[0m\r\n",
    "\x1b[0m  \x1b[0m\x1b[0m\x1b[1m\x1b[38;5;12m--> \x1b[0m\x1b[0msrc/args.rs:22:12\x1b[0m\r\n",
    "\x1b[0m   \x1b[0m\x1b[0m\x1b[1m\x1b[38;5;12m|\x1b[0m\r\n",
    "\x1b[0m\x1b[1m\x1b[38;5;12m21\x1b[0m\x1b[0m \x1b[0m\x1b[0m\x1b[1m\x1b[38;5;12m|\x1b[0m\x1b[0m \x1b[0m\x1b[0mfn parse_count(s: &str) -> u32 {\x1b[0m\r\n",
    "\x1b[0m\x1b[1m\x1b[38;5;12m22\x1b[0m\x1b[0m \x1b[0m\x1b[0m\x1b[1m\x1b[38;5;12m|\x1b[0m\x1b[0m \x1b[0m\x1b[0m    return s.len();\x1b[0m\r\n",
    "\x1b[0m   \x1b[0m\x1b[0m\x1b[1m\x1b[38;5;12m|\x1b[0m\x1b[0m            \x1b[0m\x1b[0m\x1b[1m\x1b[38;5;9m^^^^^^^\x1b[0m\x1b[0m \x1b[0m\x1b[0m\x1b[1m\x1b[38;5;9mexpected `u32`, found `usize`\x1b[0m\r\n",
    "\r\n",
    "\x1b[0m\x1b[1mSome errors have detailed explanations: E0308, E0425.\x1b[0m\r\n",
    "\x1b[0m\x1b[1mFor more information about an error, try `rustc --explain E0308`.\x1b[0m\r\n",
    "\x1b[1m\x1b[91merror\x1b[0m\x1b[1m:\x1b[0m could not compile `tiny-cli` (bin \"tiny-cli\") due to 2 previous errors\r\n",
);

#[test]
fn error_codes_take_the_crate_cargo_could_not_compile() {
    let found = causes(COLOURED_BUILD, "tiny-cli");
    assert_eq!(
        summary(&found),
        [
            (
                "E0425",
                "rustc",
                Some("tiny-cli"),
                "error[E0425]: cannot find value `verbose` in this scope"
            ),
            (
                "E0308",
                "rustc",
                Some("tiny-cli"),
                "error[E0308]: mismatched types"
            ),
        ],
        "no cause for `could not compile` or the explanations"
    );
}

#[test]
fn a_dependencys_errors_are_the_dependencys() {
    let log = r#"   Compiling buggy-dep v0.1.4
   Compiling uses-buggy v1.0.0 (/build/uses-buggy-1.0.0)
error[E0599]: no method named `as_mut_ptr` found for reference `&[u8]` in the current scope
   --> /usr/local/cargo/registry/src/index.crates.io-6f17d22bba15001f/buggy-dep-0.1.4/src/lib.rs:41:19
    |
41  |     let p = bytes.as_mut_ptr();
    |                   ^^^^^^^^^^ method not found in `&[u8]`

error: cannot find macro `format_args_nl` in this scope
  --> /usr/local/cargo/registry/src/index.crates.io-6f17d22bba15001f/buggy-dep-0.1.4/src/fmt.rs:3:5
   |
3  |     format_args_nl!("{}", x);
   |     ^^^^^^^^^^^^^^

error: aborting due to 2 previous errors

Some errors have detailed explanations: E0599.
error: could not compile `buggy-dep` (lib) due to 2 previous errors
warning: build failed, waiting for other jobs to finish...
"#;
    assert_eq!(
        summary(&causes(log, "uses-buggy")),
        [
            (
                "E0599",
                "rustc",
                Some("buggy-dep"),
                "error[E0599]: no method named `as_mut_ptr` found for reference `&[u8]` in the current scope"
            ),
            (
                "rustc-error",
                "rustc",
                Some("buggy-dep"),
                "error: cannot find macro `format_args_nl` in this scope"
            ),
        ]
    );
}

#[test]
fn an_error_without_cargos_word_keeps_its_spans_crate() {
    let log = "error: unused variable: `x`\n --> src/lib.rs:2:9\n  |\n2 |     let x = 1;\n  |         ^ help: if this is intentional, prefix it with an underscore: `_x`\n";
    let found = causes(log, "lint-strict");
    assert_eq!(
        summary(&found),
        [(
            "rustc-error",
            "rustc",
            Some("lint-strict"),
            "error: unused variable: `x`"
        )]
    );
}

#[test]
fn an_internal_compiler_error_is_one_cause() {
    let log = r#"   Compiling weird-generics v0.2.0 (/build/weird-generics-0.2.0)
thread 'rustc' panicked at compiler/rustc_middle/src/util/bug.rs:35:44:
Box<dyn Any>
stack backtrace:
   0:     0x7f0a1b2c3d4e - std::backtrace_rs::backtrace::libunwind::trace::h1a2b3c4d5e6f7a8b
error: internal compiler error: compiler/rustc_trait_selection/src/traits/select/mod.rs:2621:17: impossible case reached

note: the compiler unexpectedly panicked. this is a bug.

note: we would appreciate a bug report: https://github.com/rust-lang/rust/issues/new?labels=C-bug%2C+I-ICE%2C+T-compiler&template=ice.md

note: rustc 1.77.2 (25ef9e3d8 2024-04-09) running on x86_64-unknown-linux-gnu

query stack during panic:
#0 [evaluate_obligation] evaluating trait selection obligation `for<'a> &'a T: Iterator`
end of query stack
error: could not compile `weird-generics` (lib)
"#;
    assert_eq!(
        summary(&causes(log, "weird-generics")),
        [(
            "ice",
            "rustc",
            Some("weird-generics"),
            "error: internal compiler error: compiler/rustc_trait_selection/src/traits/select/mod.rs:2621:17: impossible case reached"
        )]
    );
}

#[test]
fn a_library_the_linker_cannot_find_is_missing_not_only_a_linker_error() {
    let log = r#"   Compiling ssl-ping v0.1.0 (/build/ssl-ping-0.1.0)
error: linking with `cc` failed: exit status: 1
  |
  = note: LC_ALL="C" PATH="/usr/local/rustup/toolchains/nightly-x86_64-unknown-linux-gnu/lib/rustlib/x86_64-unknown-linux-gnu/bin:/usr/local/cargo/bin:/usr/bin:/bin" VSLANG="1033" "cc" "-m64" "/tmp/rustcAbC123/symbols.o" "/build/ssl-ping-0.1.0/target/debug/deps/ssl_ping-5f1c0d3e2a9b8c7d.ssl_ping.1a2b3c-cgu.0.rcgu.o" "-Wl,--as-needed" "-lssl" "-lcrypto" "-lgcc_s" "-lc" "-o" "/build/ssl-ping-0.1.0/target/debug/deps/ssl_ping-5f1c0d3e2a9b8c7d" "-nodefaultlibs"
  = note: /usr/bin/ld: cannot find -lssl: No such file or directory
          /usr/bin/ld: cannot find -lcrypto: No such file or directory
          collect2: error: ld returned 1 exit status


error: could not compile `ssl-ping` (bin "ssl-ping") due to 1 previous error
"#;
    assert_eq!(
        summary(&causes(log, "ssl-ping")),
        [
            (
                "missing-system-library",
                "linker",
                Some("ssl-ping"),
                "-lssl"
            ),
            (
                "missing-system-library",
                "linker",
                Some("ssl-ping"),
                "-lcrypto"
            ),
            (
                "linker",
                "linker",
                Some("ssl-ping"),
                "error: linking with `cc` failed: exit status: 1"
            ),
        ]
    );
}

#[test]
fn undefined_references_and_a_missing_linker() {
    let log = r#"error: linking with `cc` failed: exit status: 1
  |
  = note: /usr/bin/ld: /build/zmq-lite-0.2.0/target/debug/deps/zmq_lite-9a8b7c6d5e4f3a2b.zmq_lite.4f5e6d-cgu.0.rcgu.o: in function `zmq_lite::Context::new':
          /build/zmq-lite-0.2.0/src/lib.rs:12: undefined reference to `zmq_ctx_new'
          /usr/bin/ld: /build/zmq-lite-0.2.0/src/lib.rs:19: undefined reference to `zmq_ctx_term'
          /usr/bin/ld: /build/zmq-lite-0.2.0/src/lib.rs:12: undefined reference to `zmq_ctx_new'
          collect2: error: ld returned 1 exit status

error: could not compile `zmq-lite` (lib test) due to 1 previous error
"#;
    let found = causes(log, "zmq-lite");
    let messages: Vec<_> = found.iter().map(|c| (&*c.kind, &*c.message)).collect();
    assert_eq!(
        messages,
        [
            ("linker", "error: linking with `cc` failed: exit status: 1"),
            ("linker", "undefined reference to `zmq_ctx_new'"),
            ("linker", "undefined reference to `zmq_ctx_term'"),
        ]
    );
    let no_cc = "error: linker `cc` not found\n  |\n  = note: No such file or directory (os error 2)\n\nerror: could not compile `hello` (bin \"hello\") due to 1 previous error\n";
    assert_eq!(
        summary(&causes(no_cc, "hello")),
        [(
            "linker",
            "linker",
            Some("hello"),
            "error: linker `cc` not found"
        )]
    );
}

#[test]
fn pkg_config_names_the_library_and_the_build_script_the_crate() {
    let log = r#"   Compiling openssl-sys v0.9.102
error: failed to run custom build command for `openssl-sys v0.9.102`

Caused by:
  process didn't exit successfully: `/build/http-probe-0.4.0/target/debug/build/openssl-sys-8c3f2a1b0d9e7f6a/build-script-main` (exit status: 101)
  --- stdout
  cargo:rerun-if-env-changed=X86_64_UNKNOWN_LINUX_GNU_OPENSSL_LIB_DIR
  X86_64_UNKNOWN_LINUX_GNU_OPENSSL_LIB_DIR unset
  cargo:rerun-if-env-changed=PKG_CONFIG_SYSROOT_DIR
  run pkg_config fail: `PKG_CONFIG_ALLOW_SYSTEM_CFLAGS="1" "pkg-config" "--libs" "--cflags" "openssl"` did not exit successfully: exit status: 1
  error: could not find system library 'openssl' required by the 'openssl-sys' crate

  --- stderr
  Package openssl was not found in the pkg-config search path.
  Perhaps you should add the directory containing `openssl.pc'
  to the PKG_CONFIG_PATH environment variable
  No package 'openssl' found


  --- stderr
  thread 'main' panicked at /usr/local/cargo/registry/src/index.crates.io-6f17d22bba15001f/openssl-sys-0.9.102/build/find_normal.rs:190:5:


  Could not find directory of OpenSSL installation, and this `-sys` crate cannot
  proceed without this knowledge.
  note: run with `RUST_BACKTRACE=1` environment variable to display a backtrace
warning: build failed, waiting for other jobs to finish...
"#;
    assert_eq!(
        summary(&causes(log, "http-probe")),
        [
            (
                "missing-system-library",
                "build-script",
                Some("openssl-sys"),
                "openssl (pkg-config)"
            ),
            (
                "build-script",
                "cargo",
                Some("openssl-sys"),
                "failed to run custom build command for `openssl-sys v0.9.102`"
            ),
        ]
    );
    let pkgconf = "  The system library `alsa` required by crate `alsa-sys` was not found.\n  The file `alsa.pc` needs to be installed and the PKG_CONFIG_PATH environment variable must contain its parent directory.\n  Package 'alsa', required by 'virtual:world', not found\n";
    assert_eq!(
        summary(&causes(pkgconf, "synth")),
        [
            (
                "missing-system-library",
                "build-script",
                Some("alsa-sys"),
                "alsa (pkg-config)"
            ),
            (
                "missing-system-library",
                "build-script",
                None,
                "alsa (pkg-config)"
            ),
        ]
    );
}

#[test]
fn headers_and_cmake_packages_are_missing_libraries() {
    let cc = r#"   Compiling lzo-sys v0.3.1
warning: lzo-sys@0.3.1: src/wrapper.c:1:10: fatal error: lzo/lzo1x.h: No such file or directory
warning: lzo-sys@0.3.1:     1 | #include <lzo/lzo1x.h>
warning: lzo-sys@0.3.1:       |          ^~~~~~~~~~~~~
warning: lzo-sys@0.3.1: compilation terminated.
error: failed to run custom build command for `lzo-sys v0.3.1`

Caused by:
  process didn't exit successfully: `/build/squash-0.1.0/target/debug/build/lzo-sys-0a1b2c3d4e5f6a7b/build-script-build` (exit status: 1)
  --- stdout
  running: "cc" "-O0" "-ffunction-sections" "-fdata-sections" "-fPIC" "-g" "-m64" "-Wall" "-Wextra" "-o" "/build/squash-0.1.0/target/debug/build/lzo-sys-5e6f7a8b9c0d1e2f/out/src/wrapper.o" "-c" "src/wrapper.c"
  cargo:warning=src/wrapper.c:1:10: fatal error: lzo/lzo1x.h: No such file or directory
  cargo:warning=compilation terminated.
  exit status: 1
"#;
    let found = causes(cc, "squash");
    assert_eq!(
        summary(&found)[0],
        (
            "missing-system-library",
            "build-script",
            Some("lzo-sys"),
            "lzo/lzo1x.h (header)"
        ),
    );
    assert_eq!(
        found.len(),
        2,
        "the header once, and the build script: {found:#?}"
    );
    let clang = "  cargo:warning=wrapper.h:1:10: fatal error: 'alsa/asoundlib.h' file not found\n";
    assert_eq!(causes(clang, "x")[0].message, "alsa/asoundlib.h (header)");
    let cmake = r#"  CMake Error at /usr/share/cmake-3.25/Modules/FindPackageHandleStandardArgs.cmake:230 (message):
    Could NOT find ZLIB (missing: ZLIB_LIBRARY ZLIB_INCLUDE_DIR)
  Call Stack (most recent call first):
"#;
    assert_eq!(causes(cmake, "x")[0].message, "ZLIB (cmake)");
    let not_a_header = "src/main.c:1:1: fatal error: src/gen.c: No such file or directory\n";
    assert!(causes(not_a_header, "x").is_empty());
}

#[test]
fn a_network_failure_is_one_cause_headed_by_cargos_error() {
    let log = r#"    Updating crates.io index
warning: spurious network error (3 tries remaining): [6] Couldn't resolve host name (Could not resolve host: index.crates.io)
warning: spurious network error (2 tries remaining): [6] Couldn't resolve host name (Could not resolve host: index.crates.io)
error: failed to get `serde` as a dependency of package `cfg-loader v0.2.0 (/build/cfg-loader-0.2.0)`

Caused by:
  download of config.json failed

Caused by:
  failed to download from `https://index.crates.io/config.json`

Caused by:
  [6] Couldn't resolve host name (Could not resolve host: index.crates.io)
"#;
    assert_eq!(
        summary(&causes(log, "cfg-loader")),
        [(
            "network",
            "cargo",
            None,
            "error: failed to get `serde` as a dependency of package `cfg-loader v0.2.0 (/build/cfg-loader-0.2.0)`"
        )]
    );
}

#[test]
fn resolution_manifest_and_rust_version() {
    let select = r#"    Updating crates.io index
error: failed to select a version for the requirement `tokio = "^0.1.99"`
candidate versions found which didn't match: 1.38.0, 1.37.0, 1.36.0, ...
location searched: crates.io index
required by package `old-async v0.1.0 (/build/old-async-0.1.0)`
"#;
    let found = causes(select, "old-async");
    assert_eq!(
        summary(&found),
        [(
            "dependency-resolution",
            "cargo",
            None,
            "error: failed to select a version for the requirement `tokio = \"^0.1.99\"`"
        )]
    );
    let typo = "error: no matching package named `serde_derve` found\nlocation searched: registry `crates-io`\nrequired by package `typo v0.1.0 (/build/typo-0.1.0)`\n";
    assert_eq!(causes(typo, "typo")[0].kind, "dependency-resolution");
    let edition = r#"error: failed to parse manifest at `/build/edition-next-0.1.0/Cargo.toml`

Caused by:
  feature `edition2024` is required

  The package requires the Cargo feature called `edition2024`, but that feature is not stabilized in this version of Cargo (1.80.1).
  Consider trying a newer version of Cargo (this may require the nightly release).
"#;
    let kinds: Vec<_> = causes(edition, "edition-next")
        .into_iter()
        .map(|c| c.kind)
        .collect();
    assert_eq!(kinds, ["rust-version", "manifest"]);
    let msrv = r#"error: package `clap_lex v0.7.2` cannot be built because it requires rustc 1.74 or newer, while the currently active rustc version is 1.70.0
Either upgrade to rustc 1.74 or newer, or use
cargo update clap_lex@0.7.2 --precise ver
where `ver` is the latest version of `clap_lex` supporting rustc 1.70.0
"#;
    let found = causes(msrv, "cli-tool");
    assert_eq!(found.len(), 1, "{found:#?}");
    assert_eq!(
        (&*found[0].kind, found[0].source_crate.as_deref()),
        ("rust-version", Some("clap_lex"))
    );
    let newer = "error: rustc 1.70.0 is not supported by the following packages:\n  clap@4.5.4 requires rustc 1.74\n  clap_builder@4.5.2 requires rustc 1.74\n";
    let sources: Vec<_> = causes(newer, "cli-tool")
        .into_iter()
        .map(|c| c.source_crate)
        .collect();
    assert_eq!(
        sources,
        [None, Some("clap".into()), Some("clap_builder".into())]
    );
}

const LIBTEST_FAILURES: &str = r#"     Running unittests src/lib.rs (target/debug/deps/ringbuf_lite-3b1f6a0c2d4e5f67)

running 4 tests
test tests::push_pop ... ok
test tests::wraps_around ... FAILED
test tests::capacity ... ok
test tests::drains_in_order ... FAILED

failures:

---- tests::wraps_around stdout ----
thread 'tests::wraps_around' panicked at src/lib.rs:88:9:
assertion `left == right` failed
  left: 3
 right: 4
note: run with `RUST_BACKTRACE=1` environment variable to display a backtrace

---- tests::drains_in_order stdout ----
thread 'tests::drains_in_order' panicked at src/lib.rs:102:9:
called `Option::unwrap()` on a `None` value


failures:
    tests::drains_in_order
    tests::wraps_around

test result: FAILED. 2 passed; 2 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.01s

error: test failed, to rerun pass `--lib`
"#;

#[test]
fn failing_tests_are_named_with_the_first_panic() {
    assert_eq!(
        summary(&causes(LIBTEST_FAILURES, "ringbuf-lite")),
        [(
            "test-failure",
            "libtest",
            Some("ringbuf-lite"),
            "2 tests failed: tests::wraps_around, tests::drains_in_order; first panic: \
             assertion `left == right` failed at src/lib.rs:88:9"
        )]
    );
    let old_panic = "failures:\n\n---- it_parses stdout ----\nthread 'it_parses' panicked at 'bad input', tests/parse.rs:7:5\n\nfailures:\n    it_parses\n\ntest result: FAILED. 0 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out\n";
    assert_eq!(
        causes(old_panic, "p")[0].message,
        "1 test failed: it_parses; first panic: bad input at tests/parse.rs:7:5"
    );
}

#[test]
fn a_doctests_compile_errors_are_its_failure_not_the_builds() {
    let log = r#"   Doc-tests ringbuf_lite

running 2 tests
test src/lib.rs - RingBuf (line 5) ... ok
test src/lib.rs - RingBuf::push (line 31) ... FAILED

failures:

---- src/lib.rs - RingBuf::push (line 31) stdout ----
error[E0425]: cannot find value `rb` in this scope
 --> src/lib.rs:33:1
  |
3 | rb.push(1);
  | ^^ not found in this scope

error: aborting due to 1 previous error

For more information about this error, try `rustc --explain E0425`.
Couldn't compile the test.

failures:
    src/lib.rs - RingBuf::push (line 31)

test result: FAILED. 1 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.12s

error: doctest failed, to rerun pass `--doc`
"#;
    assert_eq!(
        summary(&causes(log, "ringbuf-lite")),
        [(
            "test-failure",
            "libtest",
            Some("ringbuf-lite"),
            "1 test failed: src/lib.rs - RingBuf::push (line 31)"
        )]
    );
}

#[test]
fn nextest_failures_are_counted_once() {
    let log = r#"    Starting 3 tests across 1 binary
        PASS [   1.204s] ringbuf-lite tests::push_pop
        FAIL [   2.310s] ringbuf-lite tests::wraps_around
──── STDOUT:             ringbuf-lite tests::wraps_around

running 1 test
test tests::wraps_around ... FAILED

failures:

failures:
    tests::wraps_around

test result: FAILED. 0 passed; 1 failed; 0 ignored; 0 measured; 2 filtered out; finished in 2.21s

──── STDERR:             ringbuf-lite tests::wraps_around
thread 'tests::wraps_around' panicked at src/lib.rs:88:9:
assertion `left == right` failed
  left: 3
 right: 4
note: run with `RUST_BACKTRACE=1` environment variable to display a backtrace

        PASS [   0.980s] ringbuf-lite tests::capacity
────────────
     Summary [   4.496s] 3 tests run: 2 passed, 1 failed, 0 skipped
        FAIL [   2.310s] ringbuf-lite tests::wraps_around
error: test run failed
"#;
    assert_eq!(
        causes(log, "ringbuf-lite")[0].message,
        "1 test failed: tests::wraps_around; first panic: assertion `left == right` failed at \
         src/lib.rs:88:9"
    );
}

#[test]
fn many_failing_tests_are_counted_and_a_few_named() {
    let mut log = String::from("running 40 tests\n");
    for i in 0..40 {
        log.push_str(&format!("test tests::case_{i:02} ... FAILED\n"));
    }
    log.push_str("\ntest result: FAILED. 0 passed; 40 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.30s\n");
    assert_eq!(
        causes(&log, "many")[0].message,
        "40 tests failed: tests::case_00, tests::case_01, tests::case_02, tests::case_03, \
         tests::case_04, and 35 more"
    );
}

#[test]
fn miris_unsupported_operations_in_a_tests_output() {
    let log = r#"        FAIL [   3.902s] tls-lite tests::handshake
──── STDERR:             tls-lite tests::handshake
error: unsupported operation: can't call foreign function `OPENSSL_init_ssl` on OS `linux`
   --> /usr/local/cargo/registry/src/index.crates.io-6f17d22bba15001f/openssl-sys-0.9.102/src/lib.rs:125:9
    |
125 |         OPENSSL_init_ssl(opts, ptr::null_mut());
    |         ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^ can't call foreign function `OPENSSL_init_ssl` on OS `linux`
    |
    = help: if this is a basic API commonly used on this target, please report an issue with Miri
    = note: BACKTRACE on thread `tests::handshake`:
    = note: inside `openssl_sys::init` at /usr/local/cargo/registry/src/index.crates.io-6f17d22bba15001f/openssl-sys-0.9.102/src/lib.rs:125:9: 125:48
note: inside `tests::handshake`
  --> src/lib.rs:40:9
   |
40 |         tls_lite::connect("localhost").unwrap();
   |         ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^ 

note: some details are omitted, run with `MIRIFLAGS=-Zmiri-backtrace=full` for a verbose backtrace

error: aborting due to 1 previous error

"#;
    assert_eq!(
        summary(&causes(log, "tls-lite")),
        [
            (
                "unsupported-operation",
                "miri",
                Some("openssl-sys"),
                "error: unsupported operation: can't call foreign function `OPENSSL_init_ssl` on \
                 OS `linux`"
            ),
            (
                "test-failure",
                "libtest",
                Some("tls-lite"),
                "1 test failed: tests::handshake"
            ),
        ]
    );
}

#[test]
fn a_killed_process_is_a_crash() {
    let log = "error: test failed, to rerun pass `--lib`\n\nCaused by:\n  process didn't exit successfully: `/build/mmap-fun-0.1.0/target/debug/deps/mmap_fun-0f1e2d3c4b5a6978` (signal: 11, SIGSEGV: invalid memory reference)\n";
    assert_eq!(
        summary(&causes(log, "mmap-fun")),
        [(
            "crash",
            "cargo",
            None,
            "killed by signal 11, SIGSEGV: invalid memory reference"
        )]
    );
}

#[test]
fn causes_are_deduplicated_and_capped() {
    let twice = format!("{COLOURED_BUILD}{COLOURED_BUILD}");
    assert_eq!(causes(&twice, "tiny-cli").len(), 2, "the same errors again");
    let other_crate = COLOURED_BUILD.replace("`tiny-cli`", "`tiny-cli-macros`");
    let both = format!("{COLOURED_BUILD}{other_crate}");
    assert_eq!(
        causes(&both, "tiny-cli").len(),
        4,
        "the same errors of another crate"
    );

    let mut log = String::new();
    for i in 0..5000 {
        log.push_str(&format!(
            "error[E0425]: cannot find value `v{i}` in this scope\n --> src/lib.rs:{i}:5\n\n"
        ));
    }
    log.push_str("error: could not compile `huge` (lib) due to 5000 previous errors\n");
    for i in 0..50 {
        log.push_str(&format!(
            "  cargo:warning=src/c{i}.c:1:10: fatal error: gen{i}.h: No such file or directory\n"
        ));
    }
    log.push_str("test tests::one ... FAILED\n");
    let found = causes(&log, "huge");
    assert_eq!(found.len(), MAX_CAUSES);
    let count = |kind: &str| found.iter().filter(|c| c.kind == kind).count();
    assert_eq!(
        count("E0425"),
        MAX_COMPILER_ERRORS,
        "room is left for rarer causes"
    );
    assert_eq!(
        count("missing-system-library"),
        MAX_CAUSES - 1 - MAX_COMPILER_ERRORS
    );
    assert_eq!(
        count("test-failure"),
        1,
        "the failed tests always have their place"
    );
    assert_eq!(
        found[0].kind, "missing-system-library",
        "the most fundamental first"
    );
}

#[test]
fn long_lines_are_cut() {
    let long = format!(
        "error[E0308]: mismatched types {}\n --> src/lib.rs:1:1\n",
        "x".repeat(200_000)
    );
    let found = causes(&long, "wide");
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].message.chars().count(), MAX_MESSAGE);
}

#[test]
fn reading_once_finds_what_each_reader_finds() {
    let log = format!("{COLOURED_BUILD}{LIBTEST_FAILURES}");
    let (diagnosis, why) = diagnose_and_explain(log.as_bytes(), "tiny-cli").unwrap();
    assert_eq!(
        diagnosis,
        diagnose::diagnose(log.as_bytes(), "tiny-cli").unwrap()
    );
    assert_eq!(why, causes(&log, "tiny-cli"));
    assert_eq!(why.len(), 3);
}

#[test]
fn facts_explain_timeouts_ooms_and_harness_errors() {
    let record = |status: Verdict| ResultRecord {
        status,
        ..sample_record("slowpoke", "1.0.0")
    };
    let timeout = ResultRecord {
        timed_out: true,
        timeout_kind: Some("wall".into()),
        ..record(Verdict::Timeout)
    };
    assert_eq!(
        summary(&fact_causes(&timeout)),
        [("timeout", "limit", None, "ran into the wall-clock limit")]
    );
    let idle = ResultRecord {
        timeout_kind: Some("idle".into()),
        ..timeout.clone()
    };
    assert!(fact_causes(&idle)[0].message.contains("idle limit"));
    let oom = ResultRecord {
        oom: true,
        peak_memory_bytes: 3 << 30,
        ..record(Verdict::Oom)
    };
    assert_eq!(
        summary(&fact_causes(&oom)),
        [(
            "oom",
            "limit",
            None,
            "the kernel OOM-killed one of the job's processes (peak memory 3072 MiB)"
        )]
    );
    let error = ResultRecord {
        harness_error: Some("container lost: docker daemon restarted".into()),
        ..record(Verdict::Error)
    };
    assert_eq!(
        summary(&fact_causes(&error)),
        [(
            "harness-error",
            "harness",
            None,
            "container lost: docker daemon restarted"
        )]
    );
    let already = ResultRecord {
        causes: fact_causes(&timeout),
        ..timeout.clone()
    };
    assert!(
        fact_causes(&already).is_empty(),
        "a newer record has them already"
    );
}

#[test]
fn a_failure_with_no_cause_is_unknown_others_get_no_facts() {
    let build = sample_record("mystery", "0.1.0");
    assert_eq!(
        summary(&fact_causes(&build)),
        [(
            "unknown",
            "harness",
            None,
            "build failed; no known cause in the log"
        )]
    );
    let found = ResultRecord {
        causes: causes(COLOURED_BUILD, "mystery"),
        ..build.clone()
    };
    assert!(fact_causes(&found).is_empty());
    for status in [Verdict::Pass, Verdict::Ub, Verdict::Flaky, Verdict::Skipped] {
        let record = ResultRecord {
            status,
            failed_step: None,
            ..build.clone()
        };
        assert!(fact_causes(&record).is_empty(), "{status}");
    }
    let prepare = ResultRecord {
        status: Verdict::PrepareFail,
        failed_step: Some("prepare".into()),
        ..build
    };
    assert_eq!(
        fact_causes(&prepare)[0].message,
        "prepare failed; no known cause in the log"
    );
}

/// The record `publish` commits for a job of `ringbuf-lite` that ended as `done` says, with `log`.
fn published(tool: Tool, done: pb::JobDone, log: &str) -> ResultRecord {
    let dir = tempfile::tempdir().unwrap();
    let outbox = Outbox::open(&dir.path().join(".spool"), u64::MAX).unwrap();
    let path = outbox.spool_dir().join("job.log");
    std::fs::write(&path, log).unwrap();
    let len = log.len() as u64;
    let done = pb::JobDone {
        log_bytes: len,
        log_sha256: "not checked here".into(),
        ..done
    };
    let spooled = SpooledLog {
        path,
        len,
        sha256: "not checked here".into(),
        broken: None,
    };
    let job = Job {
        name: "ringbuf-lite",
        version: "0.2.0",
        tool,
        target: "x86_64-unknown-linux-gnu",
        source: "crates.io",
        agent: "host",
        toolchain: "rustc 1.93.0-nightly (0123456789 2026-11-01)",
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    rt.block_on(publish(&outbox, job, done, spooled)).unwrap();
    outbox.entries().pop().unwrap().record
}

fn failed(step: &str) -> pb::JobDone {
    pb::JobDone {
        failed_step: step.into(),
        exit_code: 101,
        ..Default::default()
    }
}

#[test]
fn publish_files_a_failures_causes_after_the_limits() {
    let full = pb::JobDone {
        no_space: true,
        ..failed("build")
    };
    let record = published(Tool::Check, full, COLOURED_BUILD);
    assert_eq!(record.status, Verdict::BuildFail);
    let kinds: Vec<_> = record.causes.iter().map(|c| &*c.kind).collect();
    assert_eq!(kinds, ["no-space", "E0425", "E0308"]);

    let record = published(Tool::Test, failed("test"), "error: test failed\n");
    assert_eq!(record.status, Verdict::TestFail);
    assert_eq!(
        summary(&record.causes),
        [(
            "unknown",
            "harness",
            None,
            "test failed; no known cause in the log"
        )]
    );

    let timed_out = pb::JobDone {
        timed_out: true,
        timeout_kind: "idle".into(),
        ..failed("test")
    };
    let record = published(Tool::Test, timed_out, LIBTEST_FAILURES);
    let kinds: Vec<_> = record.causes.iter().map(|c| &*c.kind).collect();
    assert_eq!(kinds, ["timeout"], "what failed after the limit is not why");
}

#[test]
fn publish_gives_ub_and_passes_no_failure_causes() {
    let ub = format!(
        "{LIBTEST_FAILURES}{}",
        r#"error: Undefined Behavior: out-of-bounds pointer use: expected a pointer to 4 bytes of memory, but got alloc1234 which is at or beyond the end of the allocation of size 16 bytes
  --> src/lib.rs:57:18
   |
57 |         unsafe { *self.buf.as_ptr().add(self.head) }
   |                  ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^ Undefined Behavior occurred here
"#
    );
    let record = published(Tool::Miri, failed("test"), &ub);
    assert_eq!(record.status, Verdict::Ub);
    assert!(
        record.causes.iter().all(|c| c.detector == "miri"),
        "{:#?}",
        record.causes
    );
    let passed = pb::JobDone::default();
    let record = published(Tool::Test, passed, LIBTEST_FAILURES);
    assert_eq!(record.status, Verdict::Pass);
    assert!(record.causes.is_empty());
}
