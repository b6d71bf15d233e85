//! The UB-hunting tools live: ASan and Miri on fixtures with real undefined behaviour, where this
//! machine's toolchain can run them.

mod common;

use common::*;
use std::time::Duration;

const MINUTES: Duration = Duration::from_secs(60);

/// Whether the local agent can run `tool`; when not, says why on stderr (the test then does not
/// run, and says so).
fn available(tool: &str) -> bool {
    ensure_image();
    let out = std::process::Command::new(coordinator_bin())
        .args(["image", "probe"])
        .output()
        .unwrap();
    let probe = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "image probe failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    match probe.lines().find(|l| l.split(' ').next() == Some(tool)) {
        Some(line) if line == format!("{tool} ok") => true,
        other => {
            eprintln!("NOT RUN: `{tool}` is not available on this machine: {other:?}");
            false
        }
    }
}

const HEAP_OVERFLOW: &str = r#"
#[test]
fn reads_past_the_end() {
    let v = vec![1u8; 8];
    let past = unsafe { std::ptr::read_volatile(v.as_ptr().add(8)) };
    println!("{past}");
}
"#;

#[test]
fn asan_finds_a_heap_overflow_in_the_crate_itself() {
    if !available("asan") {
        return;
    }
    let crates = tempfile::tempdir().unwrap();
    let krate = make_crate(crates.path(), "fixture-asan", HEAP_OVERFLOW, None);
    let out = tempfile::tempdir().unwrap();
    let args = [
        "run",
        "--tool",
        "asan",
        "--slots",
        "1",
        "--memory-gb",
        "4",
        "--out",
        to_str(out.path()),
        "--local-crate",
        to_str(&krate),
    ];
    let run = run(&args, 10 * MINUTES);
    assert!(run.status.success(), "{}", run.stderr);
    let r = result(out.path(), "asan", "fixture-asan", "0.1.0");
    assert_eq!(r["status"], "ub", "{r}");
    let causes = r["causes"].as_array().unwrap();
    assert!(
        causes.iter().any(|c| c["kind"] == "heap-buffer-overflow"
            && c["detector"] == "asan"
            && c["source_crate"] == "fixture-asan"),
        "{causes:?}"
    );
    let html = std::fs::read_to_string(out.path().join("asan/logs/fixture-asan/0.1.0")).unwrap();
    assert!(
        html.contains("id=\"first-report\""),
        "the page links to the report"
    );
}

#[test]
fn miri_finds_ub_where_miri_is_installed() {
    if !available("miri") {
        return;
    }
    let crates = tempfile::tempdir().unwrap();
    let krate = make_crate(crates.path(), "fixture-miri-ub", HEAP_OVERFLOW, None);
    let out = tempfile::tempdir().unwrap();
    let args = [
        "run",
        "--tool",
        "miri",
        "--slots",
        "1",
        "--out",
        to_str(out.path()),
        "--local-crate",
        to_str(&krate),
    ];
    let run = run(&args, 20 * MINUTES);
    assert!(run.status.success(), "{}", run.stderr);
    let r = result(out.path(), "miri", "fixture-miri-ub", "0.1.0");
    assert_eq!(r["status"], "ub", "{r}");
    let causes = r["causes"].as_array().unwrap();
    assert!(causes.iter().any(|c| c["detector"] == "miri"), "{causes:?}");
}
