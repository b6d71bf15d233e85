//! Choosing crates: the dump's top N and all, re-run rules against a prepared store, ignore
//! lists, and versions that get `skipped` without any container.

mod common;

use common::*;
use crater_coordinator::select::dump::synth::{SynthCrate, SynthVersion, write_dump};
use std::path::Path;
use std::time::Duration;

const MINUTES: Duration = Duration::from_secs(60);

fn list(args: &[&str]) -> Finished {
    let mut all = vec!["list"];
    all.extend(args);
    wait(spawn(&coordinator_bin(), &all), 5 * MINUTES)
}

fn listed(finished: &Finished) -> Vec<String> {
    assert!(finished.status.success(), "{}", finished.stderr);
    finished.stdout.lines().map(str::to_owned).collect()
}

fn synth(name: &str, versions: &[(&str, bool, u64)]) -> SynthCrate {
    SynthCrate {
        name: name.to_owned(),
        versions: versions
            .iter()
            .map(|&(num, yanked, downloads)| SynthVersion {
                num: num.to_owned(),
                yanked,
                downloads: vec![("2026-11-01".to_owned(), downloads)],
                checksum: [7; 32],
            })
            .collect(),
    }
}

#[test]
fn top_and_all_come_from_the_dump_most_downloaded_first_and_are_cached() {
    let dir = tempfile::tempdir().unwrap();
    let dump = dir.path().join("db-dump.tar.gz");
    write_dump(
        &dump,
        &[
            synth("small", &[("0.1.0", false, 5)]),
            synth("big", &[("1.0.0", false, 100), ("2.0.0", true, 1)]),
            synth("middle", &[("0.3.0", false, 50), ("0.4.0-rc.1", false, 1)]),
            synth("gone", &[("1.0.0", true, 1000)]),
            synth("stdweb", &[("0.4.20", false, 70)]), // on the built-in ignore list
        ],
    )
    .unwrap();
    let out = dir.path().join("out");
    let top = list(&[
        "--top",
        "2",
        "--db-dump",
        to_str(&dump),
        "--out",
        to_str(&out),
    ]);
    assert_eq!(listed(&top), ["big 1.0.0", "middle 0.3.0"]);
    assert!(out.join("crates.json").exists() && out.join("downloads.json").exists());

    // The cache answers now, even with the dump gone.
    std::fs::remove_file(&dump).unwrap();
    let all = list(&["--all", "--db-dump", to_str(&dump), "--out", to_str(&out)]);
    assert_eq!(listed(&all), ["big 1.0.0", "middle 0.3.0", "small 0.1.0"]);
    assert!(all.stderr.contains("from the cached"), "{}", all.stderr);
    assert!(all.stderr.contains("1 ignored"), "{}", all.stderr);
    let reversed = list(&[
        "--all",
        "--reverse",
        "--db-dump",
        to_str(&dump),
        "--out",
        to_str(&out),
    ]);
    assert_eq!(
        listed(&reversed),
        ["small 0.1.0", "middle 0.3.0", "big 1.0.0"]
    );
    let shuffle = |seed: &str| {
        listed(&list(&[
            "--all",
            "--shuffle",
            seed,
            "--db-dump",
            to_str(&dump),
            "--out",
            to_str(&out),
        ]))
    };
    assert_eq!(shuffle("7"), shuffle("7"), "the same seed, the same order");
    let mut sorted = shuffle("7");
    sorted.sort();
    assert_eq!(sorted, ["big 1.0.0", "middle 0.3.0", "small 0.1.0"]);

    // --refresh-crates reads the dump again: it is gone, so that is a clear error.
    let refresh = list(&[
        "--all",
        "--refresh-crates",
        "--db-dump",
        to_str(&dump),
        "--out",
        to_str(&out),
    ]);
    assert!(!refresh.status.success());
    assert!(
        refresh.stderr.contains("db-dump.tar.gz"),
        "{}",
        refresh.stderr
    );
}

/// Writes a stored result for `name` 0.1.0 under `out`, finished `days_ago` days ago.
fn store_result(out: &Path, name: &str, status: &str, days_ago: i64) {
    let at = time::OffsetDateTime::now_utc() - time::Duration::days(days_ago);
    let at = at
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let json = serde_json::json!({
        "crate": name, "version": "0.1.0", "tool": "check", "target": "x", "status": status,
        "source": "local", "exit_code": 0, "timed_out": false, "duration_ms": 1,
        "peak_memory_bytes": 0, "started_at": at, "finished_at": at, "attempt": 1, "tries": 1,
        "agent": "a", "slot": 0, "log_bytes": 0, "log_sha256": ""
    });
    let path = out.join(format!("check/results/{name}/0.1.0.json"));
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, json.to_string()).unwrap();
}

#[test]
fn rerun_rules_pick_exactly_the_right_crates_from_a_prepared_store() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let mut args = vec!["--out".to_owned(), out.display().to_string()];
    for (name, stored) in [
        ("never-ran", None),
        ("passed-recently", Some(("pass", 2))),
        ("passed-long-ago", Some(("pass", 40))),
        ("failed-recently", Some(("build-fail", 1))),
        ("timed-out-long-ago", Some(("timeout", 45))),
        ("ignored-crate", None),
    ] {
        let dir = make_crate(dir.path(), name, "", None);
        args.extend(["--local-crate".to_owned(), dir.display().to_string()]);
        if let Some((status, days)) = stored {
            store_result(&out, name, status, days);
        }
    }
    let ignore = dir.path().join("ignore.txt");
    std::fs::write(&ignore, "# never\nignored-crate\n").unwrap();
    args.extend(["--ignore-file".to_owned(), ignore.display().to_string()]);
    let with = |extra: &[&str]| {
        let mut all: Vec<&str> = args.iter().map(String::as_str).collect();
        all.extend(extra);
        let mut names: Vec<String> = listed(&list(&all))
            .into_iter()
            .map(|l| l.split(' ').next().unwrap().to_owned())
            .collect();
        names.sort();
        names
    };
    assert_eq!(
        with(&[]),
        ["never-ran", "passed-long-ago", "timed-out-long-ago"]
    );
    assert_eq!(
        with(&["--max-age", "60"]),
        ["never-ran"],
        "everything stored is younger than 60 days"
    );
    assert_eq!(
        with(&["--rerun"]),
        [
            "failed-recently",
            "never-ran",
            "passed-long-ago",
            "passed-recently",
            "timed-out-long-ago"
        ]
    );
    assert_eq!(
        with(&["--retry-failed"]),
        ["failed-recently", "timed-out-long-ago"]
    );
}

#[test]
fn a_yanked_or_missing_version_is_skipped_without_a_container() {
    let out = tempfile::tempdir().unwrap();
    // log 0.4.9 is yanked on crates.io; itoa has no version 99.0.0.
    let run = run(
        &[
            "run",
            "--out",
            to_str(out.path()),
            "--crate",
            "log@0.4.9",
            "--crate",
            "itoa@99.0.0",
        ],
        5 * MINUTES,
    );
    assert!(run.status.success(), "{}", run.stderr);
    assert!(
        run.stderr
            .contains("2 skipped (yanked or missing versions)"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("nothing to do"), "{}", run.stderr);
    let yanked = result(out.path(), "check", "log", "0.4.9");
    assert_eq!(yanked["status"], "skipped");
    assert_eq!(yanked["skip_reason"], "version 0.4.9 is yanked");
    assert_eq!(yanked["agent"], "", "no agent, no container ran it");
    let missing = result(out.path(), "check", "itoa", "99.0.0");
    assert_eq!(missing["status"], "skipped");
    assert_eq!(
        missing["skip_reason"],
        "crates.io has no version 99.0.0 of itoa"
    );
    let log = std::fs::read_to_string(out.path().join("check/raw/log/0.4.9")).unwrap();
    assert!(log.contains("skipped: version 0.4.9 is yanked"), "{log}");
}
