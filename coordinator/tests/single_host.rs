//! `crater-at-home run` end to end: real Docker, real gRPC, real crates.io.

mod common;

use common::*;
use std::time::Duration;

const MINUTES: Duration = Duration::from_secs(60);

#[test]
fn a_real_crate_passes_check_with_its_log_and_html() {
    let out = tempfile::tempdir().unwrap();
    let run = run(
        &[
            "run",
            "--tool",
            "check",
            "--crate",
            "itoa@1.0.15",
            "--out",
            to_str(out.path()),
            "--slots",
            "1",
        ],
        5 * MINUTES,
    );
    assert!(run.status.success(), "{}", run.stderr);
    let result = result(out.path(), "check", "itoa", "1.0.15");
    assert_eq!(result["status"], "pass", "{result}");
    assert_eq!(result["source"], "crates.io");
    assert_eq!(result["target"], "x86_64-unknown-linux-gnu");
    let raw = std::fs::read_to_string(out.path().join("check/raw/itoa/1.0.15")).unwrap();
    assert!(
        raw.contains("Checking\u{1b}[0m itoa v1.0.15"),
        "cargo's coloured output: {raw}"
    );
    assert!(raw.contains("Finished"), "{raw}");
    assert_eq!(result["log_bytes"], raw.len() as u64);
    let html = std::fs::read_to_string(out.path().join("check/logs/itoa/1.0.15")).unwrap();
    assert!(html.contains("itoa v1.0.15"), "{html}");
    assert!(
        !html.contains('\u{1b}'),
        "escape codes are rendered, not copied"
    );
    assert!(run.stderr.contains("pass"), "{}", run.stderr);
}

#[test]
fn local_fixtures_get_their_verdicts() {
    let crates = tempfile::tempdir().unwrap();
    let root = crates.path();
    let pass = make_crate(
        root,
        "fixture-pass",
        "#[test]\nfn ok() { assert_eq!(1 + 1, 2); }\n",
        None,
    );
    let build_fail = make_crate(
        root,
        "fixture-build-fail",
        "pub fn bytes() -> Vec<u8> { \"not bytes\" }\n",
        None,
    );
    let test_fail = make_crate(
        root,
        "fixture-test-fail",
        "#[test]\nfn fails() { assert_eq!(1 + 1, 3, \"arithmetic is broken\"); }\n",
        None,
    );
    let sleeper = make_crate(
        root,
        "fixture-sleeper",
        "#[test]\nfn sleeps() { std::thread::sleep(std::time::Duration::from_secs(600)); }\n",
        None,
    );
    let out = tempfile::tempdir().unwrap();
    let mut args = vec!["run", "--tool", "test", "--timeout", "20s", "--slots", "2"];
    args.extend(SMALL);
    args.extend(["--out", to_str(out.path())]);
    for dir in [&pass, &build_fail, &test_fail, &sleeper] {
        args.extend(["--local-crate", to_str(dir)]);
    }
    let run = run(&args, 10 * MINUTES);
    assert!(run.status.success(), "{}", run.stderr);

    let verdict = |name: &str| result(out.path(), "test", name, "0.1.0");
    assert_eq!(verdict("fixture-pass")["status"], "pass");
    let build = verdict("fixture-build-fail");
    assert_eq!(build["status"], "build-fail", "{build}");
    assert_eq!(build["failed_step"], "build");
    let test = verdict("fixture-test-fail");
    assert_eq!(test["status"], "test-fail", "{test}");
    assert_eq!(test["failed_step"], "test");
    let sleep = verdict("fixture-sleeper");
    assert_eq!(sleep["status"], "timeout", "{sleep}");
    assert_eq!(sleep["timed_out"], true);

    let raw_test =
        std::fs::read_to_string(out.path().join("test/raw/fixture-test-fail/0.1.0")).unwrap();
    assert!(raw_test.contains("arithmetic is broken"), "{raw_test}");
    // rustc's message names `Vec<u8>`: the raw log keeps it, the HTML escapes it.
    let raw_build =
        std::fs::read_to_string(out.path().join("test/raw/fixture-build-fail/0.1.0")).unwrap();
    assert!(raw_build.contains("Vec<u8>"), "{raw_build}");
    let html =
        std::fs::read_to_string(out.path().join("test/logs/fixture-build-fail/0.1.0")).unwrap();
    assert!(html.contains("Vec&lt;u8&gt;"), "{html}");
    assert!(!html.contains("Vec<u8>"), "{html}");
}

#[test]
fn two_slots_run_two_crates_at_once_on_different_cpus() {
    let crates = tempfile::tempdir().unwrap();
    let a = make_crate(
        crates.path(),
        "fixture-slow-a",
        "",
        Some(&sleeping_build_rs(12)),
    );
    let b = make_crate(
        crates.path(),
        "fixture-slow-b",
        "",
        Some(&sleeping_build_rs(12)),
    );
    let out = tempfile::tempdir().unwrap();
    ensure_image();
    let mut args = vec![
        "run",
        "--tool",
        "check",
        "--slots",
        "2",
        "--out",
        to_str(out.path()),
    ];
    args.extend(SMALL);
    args.extend(["--local-crate", to_str(&a), "--local-crate", to_str(&b)]);
    let child = spawn(&coordinator_bin(), &args);
    let pid = child.id();
    wait_until("two slot containers", 3 * MINUTES, || {
        containers_of(pid).len() == 2
    });
    let mut cpusets: Vec<String> = containers_of(pid)
        .iter()
        .map(|id| {
            docker(&["inspect", "-f", "{{.HostConfig.CpusetCpus}}", id])
                .trim()
                .to_owned()
        })
        .collect();
    cpusets.sort();
    assert_eq!(cpusets, ["0", "1"], "each container pinned to its own CPU");
    let run = wait(child, 5 * MINUTES);
    assert!(run.status.success(), "{}", run.stderr);

    let span = |name: &str| {
        let r = result(out.path(), "check", name, "0.1.0");
        assert_eq!(r["status"], "pass", "{r}");
        let parse = |key: &str| {
            time::OffsetDateTime::parse(
                r[key].as_str().unwrap(),
                &time::format_description::well_known::Rfc3339,
            )
            .unwrap()
        };
        (
            parse("started_at"),
            parse("finished_at"),
            r["slot"].as_u64().unwrap(),
        )
    };
    let (a_start, a_end, a_slot) = span("fixture-slow-a");
    let (b_start, b_end, b_slot) = span("fixture-slow-b");
    assert_ne!(a_slot, b_slot);
    assert!(
        a_start < b_end && b_start < a_end,
        "the two jobs overlapped in time"
    );
}

#[test]
fn a_container_killed_mid_job_is_replaced_and_the_crate_finishes_once() {
    let crates = tempfile::tempdir().unwrap();
    let slow = make_crate(
        crates.path(),
        "fixture-killed",
        "",
        Some(&sleeping_build_rs(15)),
    );
    let out = tempfile::tempdir().unwrap();
    ensure_image();
    let mut args = vec![
        "run",
        "--tool",
        "check",
        "--slots",
        "1",
        "--out",
        to_str(out.path()),
    ];
    args.extend(SMALL);
    args.extend(["--local-crate", to_str(&slow)]);
    let child = spawn(&coordinator_bin(), &args);
    let pid = child.id();
    // Kill it while the build script sleeps: its process shows up in the container.
    wait_until("the build script to run", 3 * MINUTES, || {
        containers_of(pid).first().is_some_and(|id| {
            std::process::Command::new("docker")
                .args(["top", id])
                .output()
                .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("build-script-build"))
        })
    });
    let first = containers_of(pid);
    docker(&["kill", &first[0]]);
    let run = wait(child, 5 * MINUTES);
    assert!(run.status.success(), "{}", run.stderr);

    let r = result(out.path(), "check", "fixture-killed", "0.1.0");
    assert_eq!(r["status"], "pass", "{r}");
    assert_eq!(r["tries"], 2, "{r}");
    assert_eq!(
        all_results(out.path(), "check").len(),
        1,
        "exactly one result"
    );
    let raw = std::fs::read_to_string(out.path().join("check/raw/fixture-killed/0.1.0")).unwrap();
    assert!(raw.contains("the container was lost"), "{raw}");
    assert!(raw.contains("try 2 of 3"), "{raw}");
    assert!(containers_of(pid).is_empty(), "no container left behind");
}

#[test]
fn a_second_run_does_no_work_and_rerun_does_it_again() {
    let crates = tempfile::tempdir().unwrap();
    let krate = make_crate(crates.path(), "fixture-once", "pub fn f() {}\n", None);
    let out = tempfile::tempdir().unwrap();
    let mut args = vec!["run", "--slots", "1", "--out", to_str(out.path())];
    args.extend(SMALL);
    args.extend(["--local-crate", to_str(&krate)]);

    let first = run(&args, 5 * MINUTES);
    assert!(first.status.success(), "{}", first.stderr);
    let before = result(out.path(), "check", "fixture-once", "0.1.0");

    let second = run(&args, MINUTES);
    assert!(second.status.success(), "{}", second.stderr);
    assert!(
        second.stderr.contains("0 crates to run"),
        "{}",
        second.stderr
    );
    assert!(
        second.stderr.contains("1 already finished"),
        "{}",
        second.stderr
    );
    assert!(second.stderr.contains("nothing to do"), "{}", second.stderr);
    assert_eq!(result(out.path(), "check", "fixture-once", "0.1.0"), before);

    args.push("--rerun");
    let third = run(&args, 5 * MINUTES);
    assert!(third.status.success(), "{}", third.stderr);
    assert!(third.stderr.contains("1 crates to run"), "{}", third.stderr);
    let after = result(out.path(), "check", "fixture-once", "0.1.0");
    assert_ne!(after["finished_at"], before["finished_at"], "it ran again");
}

#[test]
fn bad_input_is_named_and_the_rest_still_runs() {
    let dir = tempfile::tempdir().unwrap();
    let list = dir.path().join("crates.txt");
    std::fs::write(
        &list,
        "# a list\n../etc\nitoa@1.0.15\nfoo@not-a-version\n\n",
    )
    .unwrap();
    let missing = dir.path().join("missing.txt");
    let out = dir.path().join("out");
    let mut args = vec![
        "run",
        "--slots",
        "1",
        "--out",
        to_str(&out),
        "--crate-list",
        to_str(&list),
        "--crate-list",
        to_str(&missing),
        "--crate",
        "no-such-crate-crater-at-home-test",
        "--crate",
        "../etc",
    ];
    args.extend(SMALL);
    let run = run(&args, 5 * MINUTES);
    assert_eq!(
        run.status.code(),
        Some(2),
        "refused input: exit 2\n{}",
        run.stderr
    );
    let list_name = list.display().to_string();
    for expected in [
        format!("{list_name}:2: `../etc`"),
        format!("{list_name}:4: `foo@not-a-version`"),
        format!("--crate-list {}: cannot read it", missing.display()),
        "`no-such-crate-crater-at-home-test`: no such crate on crates.io".to_owned(),
        "--crate `../etc`".to_owned(),
    ] {
        assert!(
            run.stderr.contains(&expected),
            "missing {expected:?} in:\n{}",
            run.stderr
        );
    }
    assert_eq!(
        all_results(&out, "check"),
        [("itoa".to_owned(), "1.0.15".to_owned(), "pass".to_owned())]
    );
}
