//! Hostile crates against the real sandbox: each gets the right verdict and leaves its slot
//! healthy for the next crate.

mod common;

use common::*;
use std::time::Duration;

const MINUTES: Duration = Duration::from_secs(60);

const PASSING_TEST: &str = "#[test]\nfn ok() { assert_eq!(2 + 2, 4); }\n";

#[test]
fn an_oom_is_the_jobs_own_and_the_next_job_is_not_marked() {
    let crates = tempfile::tempdir().unwrap();
    let hog = make_crate(
        crates.path(),
        "fixture-oom",
        "#[test]\nfn hog() {\n    let mut kept = Vec::new();\n    \
         for _ in 0..256 { kept.push(vec![1u8; 64 << 20]); } // 16 GiB, every page written\n    \
         println!(\"{}\", kept.len());\n}\n",
        None,
    );
    let after = make_crate(crates.path(), "fixture-after-oom", PASSING_TEST, None);
    let (out, _) = run_fixtures(
        &["--tool", "test", "--slots", "1", "--memory-gb", "1"],
        &[hog, after],
    );
    let hog = result(out.path(), "test", "fixture-oom", "0.1.0");
    assert_eq!(hog["status"], "oom", "{hog}");
    assert_eq!(hog["oom"], true);
    let peak = hog["peak_memory_bytes"].as_u64().unwrap();
    assert!(peak > 512 << 20, "the peak shows the hog: {peak}");
    assert!(peak <= 1 << 30, "and respects the limit: {peak}");
    let after = result(out.path(), "test", "fixture-after-oom", "0.1.0");
    assert_eq!(after["status"], "pass", "{after}");
    assert_eq!(
        after["oom"], false,
        "the container's old OOM does not stick to the next job"
    );
    assert_eq!(after["slot"], hog["slot"]);
}

#[test]
fn a_fork_bomb_is_contained_and_its_neighbour_passes() {
    let crates = tempfile::tempdir().unwrap();
    let bomb = make_crate(
        crates.path(),
        "fixture-fork-bomb",
        "#[test]\nfn bomb() {\n    \
         let _ = std::process::Command::new(\"sh\").arg(\"-c\").arg(\"b(){ b|b& }; b\").spawn();\n    \
         std::thread::sleep(std::time::Duration::from_secs(8));\n    \
         let spawned = std::process::Command::new(\"true\").status();\n    \
         panic!(\"after the bomb, spawning gives {spawned:?}\");\n}\n",
        None,
    );
    // Busy in its build script while the bomb goes off in the other slot.
    let neighbour = make_crate(
        crates.path(),
        "fixture-neighbour",
        PASSING_TEST,
        Some(&sleeping_build_rs(20)),
    );
    let after = make_crate(crates.path(), "fixture-after-bomb", PASSING_TEST, None);
    let (out, _) = run_fixtures(
        &[
            "--tool",
            "test",
            "--slots",
            "2",
            "--memory-gb",
            "2",
            "--pids-limit",
            "256",
        ],
        &[bomb, neighbour, after],
    );
    let bomb = result(out.path(), "test", "fixture-fork-bomb", "0.1.0");
    assert_eq!(bomb["status"], "test-fail", "{bomb}");
    let log = raw_log(out.path(), "test", "fixture-fork-bomb");
    // dash says "Cannot fork", Rust's spawn "Resource temporarily unavailable": either way the
    // bomb hit the pids limit.
    assert!(
        log.contains("Cannot fork") || log.contains("Resource temporarily unavailable"),
        "the pids limit held: {log}"
    );
    let neighbour = result(out.path(), "test", "fixture-neighbour", "0.1.0");
    assert_eq!(neighbour["status"], "pass", "{neighbour}");
    assert_ne!(neighbour["slot"], bomb["slot"]);
    assert!(
        neighbour["started_at"].as_str() < bomb["finished_at"].as_str()
            && bomb["started_at"].as_str() < neighbour["finished_at"].as_str(),
        "the neighbour ran while the bomb went off"
    );
    let after = result(out.path(), "test", "fixture-after-bomb", "0.1.0");
    assert_eq!(
        after["status"], "pass",
        "the bomb's slot is healthy again: {after}"
    );
}

#[test]
fn an_output_bomb_is_truncated_and_memory_stays_bounded() {
    let crates = tempfile::tempdir().unwrap();
    let bomb = make_crate(
        crates.path(),
        "fixture-output-bomb",
        "#[test]\nfn floods() {\n    use std::io::Write;\n    \
         let line = [b'y'; 1 << 20];\n    let mut out = std::io::stdout().lock();\n    \
         for _ in 0..2048 { out.write_all(&line).unwrap(); }\n    \
         out.write_all(b\"\\nTHE LAST LINE\\n\").unwrap();\n}\n",
        None,
    );
    let out = tempfile::tempdir().unwrap();
    let args = [
        "run",
        "--tool",
        "test",
        "--slots",
        "1",
        "--memory-gb",
        "2",
        "--max-log-bytes",
        "1MiB",
        "--out",
        to_str(out.path()),
        "--local-crate",
        to_str(&bomb),
    ];
    ensure_image();
    let child = spawn(&coordinator_bin(), &args);
    let pid = child.id();
    // The coordinator and the agent are this one process in `run`: sample its resident memory.
    let sampler = std::thread::spawn(move || {
        let mut peak_kib = 0u64;
        while let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) {
            if let Some(kib) = status
                .lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches(" kB").parse::<u64>().ok())
            {
                peak_kib = peak_kib.max(kib);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        peak_kib
    });
    let finished = wait(child, 15 * MINUTES);
    assert!(finished.status.success(), "{}", finished.stderr);
    let peak_mib = sampler.join().unwrap() / 1024;

    let r = result(out.path(), "test", "fixture-output-bomb", "0.1.0");
    assert_eq!(r["status"], "pass", "{r}");
    let truncated = r["log_truncated_bytes"].as_u64().unwrap();
    assert!(
        truncated > (2 << 30) - (2 << 20),
        "2 GiB went by: {truncated}"
    );
    let log = raw_log(out.path(), "test", "fixture-output-bomb");
    assert!(
        log.len() < (1 << 20) + (128 << 10),
        "head and tail only: {}",
        log.len()
    );
    assert!(log.contains("log truncated"), "a clear marker");
    assert!(log.contains("THE LAST LINE"), "the end survives");
    assert!(
        log.contains("1 passed; 0 failed"),
        "so does libtest's summary after it"
    );
    assert!(
        peak_mib < 256,
        "run's memory stayed bounded while 2 GiB passed: {peak_mib} MiB"
    );
    eprintln!("peak RSS of `run` while 2 GiB of log passed: {peak_mib} MiB");
}

#[test]
fn a_silent_endless_loop_hits_the_idle_timeout_and_the_slot_recovers() {
    let crates = tempfile::tempdir().unwrap();
    let spin = make_crate(
        crates.path(),
        "fixture-silent",
        "#[test]\nfn spins() { loop { std::hint::spin_loop(); } }\n",
        None,
    );
    let after = make_crate(crates.path(), "fixture-after-silent", PASSING_TEST, None);
    let (out, _) = run_fixtures(
        &[
            "--tool",
            "test",
            "--slots",
            "1",
            "--memory-gb",
            "2",
            "--idle-timeout",
            "15s",
        ],
        &[spin, after],
    );
    let spin = result(out.path(), "test", "fixture-silent", "0.1.0");
    assert_eq!(spin["status"], "timeout", "{spin}");
    assert_eq!(spin["timeout_kind"], "idle");
    assert!(raw_log(out.path(), "test", "fixture-silent").contains("printed nothing for"));
    let after = result(out.path(), "test", "fixture-after-silent", "0.1.0");
    assert_eq!(after["status"], "pass", "{after}");
}

#[test]
fn writes_outside_the_crate_fail_and_beside_it_work() {
    let crates = tempfile::tempdir().unwrap();
    let build_rs = r#"
fn main() {
    let etc = std::fs::write("/etc/crater-was-here", "x");
    assert!(etc.is_err(), "writing /etc must fail");
    let usr = std::fs::write("/usr/local/bin/crater-was-here", "x");
    assert!(usr.is_err(), "writing /usr must fail");
    let dir = std::env::current_dir().unwrap();
    std::fs::write(dir.join("generated.rs"), "pub const X: u8 = 1;").unwrap();
    std::fs::write(dir.parent().unwrap().join("beside-the-crate"), "x").unwrap();
    std::fs::write(std::env::temp_dir().join("scratch"), "x").unwrap();
    println!("cargo::warning=sandbox writes as expected");
}
"#;
    let writer = make_crate(crates.path(), "fixture-writes", "", Some(build_rs));
    let (out, _) = run_fixtures(
        &["--tool", "check", "--slots", "1", "--memory-gb", "2"],
        &[writer],
    );
    let r = result(out.path(), "check", "fixture-writes", "0.1.0");
    assert_eq!(
        r["status"],
        "pass",
        "{r}\n{}",
        raw_log(out.path(), "check", "fixture-writes")
    );
    assert!(raw_log(out.path(), "check", "fixture-writes").contains("sandbox writes as expected"));
}

#[test]
fn a_missing_tool_fails_at_once_saying_what_is_missing() {
    let crates = tempfile::tempdir().unwrap();
    let krate = make_crate(crates.path(), "fixture-miri", PASSING_TEST, None);
    let out = tempfile::tempdir().unwrap();
    ensure_image();
    let args = [
        "run",
        "--tool",
        "miri",
        "--out",
        to_str(out.path()),
        "--local-crate",
        to_str(&krate),
    ];
    let run = run(&args, 5 * MINUTES);
    let probe = String::from_utf8(
        std::process::Command::new(coordinator_bin())
            .args(["image", "probe"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    if probe.lines().any(|l| l == "miri ok") {
        eprintln!("Miri is installed here: this test checks the message for a missing tool only");
        return;
    }
    assert_eq!(run.status.code(), Some(1), "{}", run.stderr);
    assert!(
        run.stderr
            .contains("the tool `miri` cannot run on this machine"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("cargo-miri"),
        "names what is missing: {}",
        run.stderr
    );
    assert!(
        run.stderr.contains("docker/Dockerfile"),
        "and how to get it: {}",
        run.stderr
    );
    assert!(
        all_results(out.path(), "miri").is_empty(),
        "no crate was run"
    );
}

/// Adds `[dependencies]` lines to a fixture's manifest.
fn with_dependencies(dir: &std::path::Path, deps: &str) {
    let manifest = dir.join("Cargo.toml");
    let mut text = std::fs::read_to_string(&manifest).unwrap();
    text.push_str(&format!("\n[dependencies]\n{deps}\n"));
    std::fs::write(manifest, text).unwrap();
}

#[test]
fn offline_builds_fetch_first_then_build_without_any_network() {
    let crates = tempfile::tempdir().unwrap();
    let uses_itoa = make_crate(
        crates.path(),
        "fixture-offline-itoa",
        "#[test]\nfn formats() { assert_eq!(itoa::Buffer::new().format(42u8), \"42\"); }\n",
        None,
    );
    with_dependencies(&uses_itoa, "itoa = \"1\"");
    let missing_dep = make_crate(crates.path(), "fixture-offline-missing", PASSING_TEST, None);
    with_dependencies(&missing_dep, "crater-at-home-no-such-dependency = \"1\"");
    let dials_out = make_crate(
        crates.path(),
        "fixture-offline-dials-out",
        "",
        Some(
            "fn main() {\n    match std::net::TcpStream::connect(\"static.crates.io:443\") {\n        \
             Ok(_) => println!(\"cargo::warning=THE NETWORK IS REACHABLE\"),\n        \
             Err(e) => panic!(\"no network in the build: {e}\"),\n    }\n}\n",
        ),
    );
    let (out, _) = run_fixtures(
        &[
            "--tool",
            "test",
            "--slots",
            "1",
            "--memory-gb",
            "2",
            "--network",
            "off",
        ],
        &[uses_itoa, missing_dep, dials_out],
    );
    let itoa = result(out.path(), "test", "fixture-offline-itoa", "0.1.0");
    assert_eq!(
        itoa["status"],
        "pass",
        "{itoa}\n{}",
        raw_log(out.path(), "test", "fixture-offline-itoa")
    );
    let missing = result(out.path(), "test", "fixture-offline-missing", "0.1.0");
    assert_eq!(missing["status"], "prepare-fail", "{missing}");
    assert!(
        raw_log(out.path(), "test", "fixture-offline-missing")
            .contains("crater-at-home-no-such-dependency"),
        "cargo's message names the missing dependency"
    );
    let dials = result(out.path(), "test", "fixture-offline-dials-out", "0.1.0");
    assert_eq!(dials["status"], "build-fail", "{dials}");
    let log = raw_log(out.path(), "test", "fixture-offline-dials-out");
    assert!(log.contains("no network in the build"), "{log}");
    assert!(!log.contains("THE NETWORK IS REACHABLE"), "{log}");
}

#[test]
fn features_come_from_the_crates_docs_rs_and_playground_metadata() {
    let crates = tempfile::tempdir().unwrap();
    let krate = make_crate(
        crates.path(),
        "fixture-features",
        "#[cfg(all(feature = \"docs-feature\", feature = \"playground-feature\"))]\n\
         pub fn both() -> u8 { 2 }\n\
         #[test]\nfn has_both_features() { assert_eq!(both(), 2); }\n",
        None,
    );
    let manifest = krate.join("Cargo.toml");
    let mut text = std::fs::read_to_string(&manifest).unwrap();
    text.push_str(
        "\n[features]\ndocs-feature = []\nplayground-feature = []\n\
         \n[package.metadata.docs.rs]\nfeatures = [\"docs-feature\"]\n\
         \n[package.metadata.playground]\nfeatures = [\"playground-feature\"]\n",
    );
    std::fs::write(&manifest, text).unwrap();
    let (out, _) = run_fixtures(
        &["--tool", "test", "--slots", "1", "--memory-gb", "2"],
        &[krate],
    );
    let r = result(out.path(), "test", "fixture-features", "0.1.0");
    let log = raw_log(out.path(), "test", "fixture-features");
    assert_eq!(r["status"], "pass", "{r}\n{log}");
    assert!(
        log.contains("--features=docs-feature,playground-feature"),
        "{log}"
    );
}
