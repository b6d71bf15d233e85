//! The S3 store end to end: `run --bucket` against real S3-compatible servers on loopback (moto,
//! and Garage, which checks signatures, payload hashes and checksums as strictly as AWS), with
//! real containers and a real crate from crates.io, read back with a separate client (boto3).
//! Outages are real too: the server process is stopped (SIGSTOP), so requests hang until the
//! store's timeouts give up on them, and continued later.

mod common;

use common::s3::S3Server;
use common::*;
use crater_coordinator::select::dump::synth::{SynthCrate, SynthVersion, write_dump};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

const BUCKET: &str = "results";

/// `run` arguments for the bucket of `server`, with a short S3 timeout so outages show quickly.
fn bucket_args(server: &S3Server) -> Vec<String> {
    [
        "--bucket",
        BUCKET,
        "--s3-endpoint",
        &server.endpoint(),
        "--s3-path-style",
        "--s3-timeout",
        "3s",
    ]
    .map(str::to_owned)
    .to_vec()
}

/// A moto server with a versioned bucket, so every upload of a key is counted.
fn versioned_server() -> S3Server {
    let server = S3Server::start();
    server.create_bucket(BUCKET);
    server.enable_versioning(BUCKET);
    server
}

/// A Garage server with the bucket (Garage has no versioning: uploads are not counted there).
fn garage_server() -> S3Server {
    let server = S3Server::start_garage();
    server.create_bucket(BUCKET);
    server
}

/// `run --slots 2` of the crates in `dirs` into `server`'s bucket, spooling under `out`.
fn run_args(server: &S3Server, out: &Path, dirs: &[String], extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = ["run", "--slots", "2", "--memory-gb", "2", "--out"]
        .map(str::to_owned)
        .to_vec();
    args.push(to_str(out).to_owned());
    args.extend(extra.iter().map(|s| s.to_string()));
    for dir in dirs {
        args.extend(["--local-crate".to_owned(), dir.clone()]);
    }
    args.extend(bucket_args(server));
    args
}

fn start_run(server: &S3Server, args: &[String]) -> Running {
    ensure_image();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    spawn_with_env(&coordinator_bin(), &args, &server.env())
}

fn json(server: &S3Server, key: &str) -> serde_json::Value {
    serde_json::from_slice(&server.get(BUCKET, key)).unwrap()
}

/// How many results keys the bucket has for `tool`.
fn results_in_bucket(server: &S3Server, tool: &str) -> usize {
    let prefix = format!("{tool}/results/");
    server
        .objects(BUCKET)
        .iter()
        .filter(|o| o.key.starts_with(&prefix))
        .count()
}

/// Logs of running jobs in `out`'s spool.
fn running_logs(out: &Path) -> usize {
    std::fs::read_dir(out.join(".spool")).map_or(0, |dir| {
        dir.flatten()
            .filter(|e| e.file_name().to_string_lossy().ends_with(".log"))
            .count()
    })
}

/// Committed results waiting in `out`'s spool.
fn unstored(out: &Path) -> Vec<serde_json::Value> {
    let Ok(dir) = std::fs::read_dir(out.join(".spool/outbox")) else {
        return Vec::new();
    };
    dir.filter_map(|e| std::fs::read(e.ok()?.path().join("result.json")).ok())
        .map(|bytes| serde_json::from_slice(&bytes).unwrap())
        .collect()
}

/// Every crate has raw, HTML and JSON, and exactly one result: every version of each key (the
/// bucket is versioned) holds the same bytes. A retried upload whose first try did reach the
/// server (a timeout, not a refusal) may leave a second identical version; that is S3's
/// at-least-once, never a second run or a different result.
fn assert_stored_once(server: &S3Server, tool: &str, crates: &[(&str, &str)]) {
    if server.name() == "garage" {
        // No versions to count: every object is there, and one verdict a crate.
        let keys: Vec<String> = server.objects(BUCKET).into_iter().map(|o| o.key).collect();
        for (name, version) in crates {
            for key in [
                format!("{tool}/raw/{name}/{version}"),
                format!("{tool}/logs/{name}/{version}"),
                format!("{tool}/results/{name}/{version}.json"),
            ] {
                assert!(keys.contains(&key), "{key} is missing; stored: {keys:#?}");
            }
        }
        assert_eq!(results_in_bucket(server, tool), crates.len());
        return;
    }
    let versions = server.version_digests(BUCKET);
    for (name, version) in crates {
        for key in [
            format!("{tool}/raw/{name}/{version}"),
            format!("{tool}/logs/{name}/{version}"),
            format!("{tool}/results/{name}/{version}.json"),
        ] {
            let digests = versions
                .get(&key)
                .unwrap_or_else(|| panic!("{key} is missing; stored: {versions:#?}"));
            assert!(
                digests.iter().all(|d| d == &digests[0]),
                "{key} was stored with different contents: {digests:#?}"
            );
        }
    }
    assert_eq!(results_in_bucket(server, tool), crates.len());
}

/// Local crates that are busy for `secs` seconds each: a run that lasts.
fn sleepy_crates(root: &Path, prefix: &str, n: usize, secs: u64) -> Vec<String> {
    (0..n)
        .map(|i| {
            let dir = make_crate(
                root,
                &format!("{prefix}-{i}"),
                "pub fn f() {}\n",
                Some(&sleeping_build_rs(secs)),
            );
            dir.to_str().unwrap().to_owned()
        })
        .collect()
}

#[test]
fn results_round_trip_through_a_real_bucket_with_large_logs_in_parts() {
    round_trip(&versioned_server());
}

#[test]
fn results_round_trip_through_garage_with_large_logs_in_parts() {
    let server = S3Server::start_garage();
    server.create_bucket(BUCKET);
    round_trip(&server);
}

/// A crate with a 50 MiB log and a real crate go up and read back byte for byte; a second run
/// finds both finished. On moto (a versioned bucket) every object was uploaded exactly once.
fn round_trip(server: &S3Server) {
    let versioned = server.name() == "moto";
    let crates = tempfile::tempdir().unwrap();
    // 50 MiB of output, each line numbered so a reordered or lost part would show.
    let talker = make_crate(
        crates.path(),
        "fixture-talker",
        "#[test]\nfn talks() {\n    use std::io::Write;\n    \
         let mut out = std::io::stdout().lock();\n    \
         for i in 0..(50u64 << 20) / 64 { writeln!(out, \"{i:>20} {:>42}\", \"crater\").unwrap(); }\n}\n",
        None,
    );
    let out = tempfile::tempdir().unwrap();
    let mut args: Vec<String> = [
        "run",
        "--tool",
        "test",
        "--slots",
        "2",
        "--memory-gb",
        "2",
        "--out",
        to_str(out.path()),
        "--crate",
        "itoa@1.0.11",
        "--local-crate",
        to_str(&talker),
    ]
    .map(str::to_owned)
    .to_vec();
    args.extend(bucket_args(server));
    let done = wait(start_run(server, &args), Duration::from_secs(600));
    assert_eq!(done.status.code(), Some(0), "{}", done.stderr);
    assert!(
        done.stderr.contains("s3://results/test/"),
        "{}",
        done.stderr
    );

    let crates_run = [("itoa", "1.0.11"), ("fixture-talker", "0.1.0")];
    // With the server healthy every result's object is uploaded exactly once (the start-up
    // check's objects are its own, and deleted; the report pages are rewritten as they change).
    let uploads_of = |server: &S3Server| -> BTreeMap<String, usize> {
        let mut counts = server.version_counts(BUCKET);
        counts.retain(|key, _| {
            ["raw", "logs", "results"].contains(&key.split('/').nth(1).unwrap_or(""))
        });
        counts
    };
    let uploads = if versioned {
        assert_stored_once(server, "test", &crates_run);
        let uploads = uploads_of(server);
        assert_eq!(uploads.len(), 6, "{uploads:#?}");
        assert!(uploads.values().all(|&n| n == 1), "{uploads:#?}");
        uploads
    } else {
        assert_eq!(results_in_bucket(server, "test"), crates_run.len());
        BTreeMap::new()
    };
    let objects: BTreeMap<String, (u64, String)> = server
        .objects(BUCKET)
        .into_iter()
        .map(|o| (o.key, (o.size, o.content_type)))
        .collect();
    assert!(
        objects.keys().all(|k| !k.starts_with(".crater-at-home/")),
        "the start-up check leaves nothing behind: {objects:#?}"
    );
    for (name, version) in crates_run {
        let raw_key = format!("test/raw/{name}/{version}");
        let record = json(server, &format!("test/results/{name}/{version}.json"));
        assert_eq!(record["status"], "pass", "{name}: {record}");
        assert_eq!(
            objects[&raw_key].1, "text/plain; charset=utf-8",
            "{raw_key}"
        );
        assert_eq!(
            objects[&format!("test/logs/{name}/{version}")].1,
            "text/html; charset=utf-8"
        );
        assert_eq!(
            objects[&format!("test/results/{name}/{version}.json")].1,
            "application/json"
        );
        // Byte for byte what the agent sent: its length and SHA-256 are in the verdict.
        let raw = server.get(BUCKET, &raw_key);
        assert_eq!(raw.len() as u64, record["log_bytes"].as_u64().unwrap());
        assert_eq!(
            hex::encode(Sha256::digest(&raw)),
            record["log_sha256"].as_str().unwrap(),
            "{raw_key} reads back byte-identical"
        );
        let html =
            String::from_utf8(server.get(BUCKET, &format!("test/logs/{name}/{version}"))).unwrap();
        assert!(html.contains(name), "the page names its crate");
    }
    let talker_raw = "test/raw/fixture-talker/0.1.0";
    assert!(
        objects[talker_raw].0 >= 50 << 20,
        "the whole 50 MiB: {}",
        objects[talker_raw].0
    );
    let parts = server.multipart_parts(BUCKET, talker_raw);
    assert!(
        parts.is_some_and(|n| n >= 2),
        "a 50 MiB log goes up in parts: {parts:?}"
    );
    assert_eq!(
        server.multipart_parts(BUCKET, "test/raw/itoa/1.0.11"),
        None,
        "a small log goes up in one request"
    );
    assert!(
        !out.path().join("test").exists(),
        "nothing is stored locally with --bucket"
    );
    assert!(unstored(out.path()).is_empty());

    // Resume from the bucket: both are finished, nothing runs, nothing is uploaded again.
    let again = wait(start_run(server, &args), Duration::from_secs(120));
    assert_eq!(again.status.code(), Some(0), "{}", again.stderr);
    assert!(
        again
            .stderr
            .contains("2 already finished in s3://results within 30 days"),
        "{}",
        again.stderr
    );
    if versioned {
        assert_eq!(uploads_of(server), uploads, "nothing was uploaded again");
    }
}

/// A store that starts refusing uploads mid-run (the key loses its write permission) is given
/// up on after `--store-patience` once every crate has run: the run exits non-zero with its
/// results in the spool, and the same command, once the store takes them, stores them without
/// running those crates again.
#[test]
fn a_store_refusing_mid_run_is_given_up_on_after_the_patience_and_nothing_is_lost() {
    let server = S3Server::start_garage();
    server.create_bucket(BUCKET);
    let crates = tempfile::tempdir().unwrap();
    let dirs = sleepy_crates(crates.path(), "fixture-patience", 2, 8);
    let out = tempfile::tempdir().unwrap();
    let args = run_args(
        &server,
        out.path(),
        &dirs,
        &["--tool", "check", "--store-patience", "5s"],
    );
    let run = start_run(&server, &args);
    // The spool is taken once the start-up check passed.
    let lock = out.path().join(".spool/lock");
    wait_until(
        "the run to pass its start-up check",
        Duration::from_secs(120),
        || lock.exists(),
    );
    server.set_write(BUCKET, false);
    let gave_up = wait(run, Duration::from_secs(300));
    eprintln!("{}", gave_up.stderr);
    assert_eq!(gave_up.status.code(), Some(1), "{}", gave_up.stderr);
    for said in [
        "--store-patience",
        "2 finished results",
        "run the same command again",
    ] {
        assert!(gave_up.stderr.contains(said), "{said}: {}", gave_up.stderr);
    }
    assert_eq!(
        unstored(out.path()).len(),
        2,
        "both results wait in the spool"
    );
    assert_eq!(results_in_bucket(&server, "check"), 0);

    server.set_write(BUCKET, true);
    let again = wait(start_run(&server, &args), Duration::from_secs(180));
    assert_eq!(again.status.code(), Some(0), "{}", again.stderr);
    assert!(
        again.stderr.contains("2 results of an earlier run wait"),
        "{}",
        again.stderr
    );
    assert!(again.stderr.contains("nothing to do"), "{}", again.stderr);
    assert_eq!(results_in_bucket(&server, "check"), 2);
    assert!(unstored(out.path()).is_empty());
}

/// A server that takes the credentials but refuses uploads (a Garage key that may only read the
/// bucket) stops `run` before any crate runs, with the server's answer and what to try.
#[test]
fn a_server_that_refuses_uploads_stops_the_run_at_start() {
    let server = S3Server::start_garage();
    server.create_bucket(BUCKET);
    let crates = tempfile::tempdir().unwrap();
    let dirs = sleepy_crates(crates.path(), "fixture-refused", 1, 0);
    let out = tempfile::tempdir().unwrap();
    let args = run_args(&server, out.path(), &dirs, &["--tool", "check"]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    ensure_image();
    let start = Instant::now();
    let refused = wait(
        spawn_with_env(&coordinator_bin(), &args, &server.read_only_env(BUCKET)),
        Duration::from_secs(120),
    );
    eprintln!("refused after {:?}:\n{}", start.elapsed(), refused.stderr);
    assert!(!refused.status.success(), "{}", refused.stderr);
    for said in ["refuses a PutObject", "AccessDenied", "s3:PutObject"] {
        assert!(refused.stderr.contains(said), "{said}: {}", refused.stderr);
    }
    assert!(
        !refused.stderr.contains("crates to run"),
        "nothing was planned, let alone run: {}",
        refused.stderr
    );
    assert!(server.objects(BUCKET).is_empty(), "nothing stored");
    assert!(!out.path().join(".spool/outbox").exists() || unstored(out.path()).is_empty());
}

#[test]
fn an_outage_of_a_minute_loses_nothing_and_pauses_new_work() {
    outage_of_a_minute(versioned_server());
}

#[test]
fn an_outage_of_garage_loses_nothing_and_pauses_new_work() {
    outage_of_a_minute(garage_server());
}

fn outage_of_a_minute(server: S3Server) {
    let crates = tempfile::tempdir().unwrap();
    let dirs = sleepy_crates(crates.path(), "fixture-outage", 8, 3);
    let out = tempfile::tempdir().unwrap();
    // Any stored-but-unuploaded result is over this bound: the outage pauses new work at once.
    let args = run_args(&server, out.path(), &dirs, &["--spool-max-gb", "0.0000001"]);
    let running = start_run(&server, &args);
    wait_until(
        "the first result in the bucket",
        Duration::from_secs(300),
        || results_in_bucket(&server, "check") >= 1,
    );

    server.pause();
    let outage = Instant::now();
    let mut most_waiting = 0;
    while outage.elapsed() < Duration::from_secs(60) {
        most_waiting = most_waiting.max(unstored(out.path()).len());
        std::thread::sleep(Duration::from_secs(1));
    }
    let waiting = unstored(out.path()).len();
    server.resume();

    // Unpaused, the 8 crates of 3 s on 2 slots would all have finished within the minute.
    assert!(
        (1..=3).contains(&waiting),
        "results wait on disk during the outage, at most one per slot and the one in flight \
         (backpressure): {waiting} waiting (at most {most_waiting})"
    );
    let done = wait(running, Duration::from_secs(300));
    assert_eq!(done.status.code(), Some(0), "{}", done.stderr);
    assert!(
        done.stderr.contains("no new work until they are stored"),
        "{}",
        done.stderr
    );
    let crates_run: Vec<(String, &str)> = (0..8)
        .map(|i| (format!("fixture-outage-{i}"), "0.1.0"))
        .collect();
    let crates_run: Vec<(&str, &str)> = crates_run.iter().map(|(n, v)| (n.as_str(), *v)).collect();
    assert_stored_once(&server, "check", &crates_run);
    for (name, version) in &crates_run {
        let record = json(&server, &format!("check/results/{name}/{version}.json"));
        assert_eq!(record["status"], "pass", "{record}");
        assert_eq!(
            record["attempt"], 1,
            "each crate was handed out once: {record}"
        );
    }
    assert!(unstored(out.path()).is_empty());
}

#[test]
fn a_coordinator_killed_during_an_outage_stores_its_results_at_restart() {
    killed_during_an_outage(versioned_server());
}

#[test]
fn a_coordinator_killed_during_an_outage_of_garage_stores_its_results_at_restart() {
    killed_during_an_outage(garage_server());
}

fn killed_during_an_outage(server: S3Server) {
    let crates = tempfile::tempdir().unwrap();
    let dirs = sleepy_crates(crates.path(), "fixture-restart", 5, 2);
    let out = tempfile::tempdir().unwrap();
    let args = run_args(&server, out.path(), &dirs, &[]);
    let running = start_run(&server, &args);
    // The outage begins as soon as a crate runs (the start-up check has passed by then), so
    // however slow a loaded machine is, results finish while the store is away. (Waiting for
    // a first result in the bucket raced: all but one could be stored before the pause.)
    wait_until("a crate running", Duration::from_secs(300), || {
        running_logs(out.path()) > 0
    });
    server.pause();
    wait_until(
        "two results waiting in the spool",
        Duration::from_secs(300),
        || unstored(out.path()).len() >= 2,
    );
    // What was finished but not stored when the coordinator died: it must be stored, not rerun.
    let waiting: BTreeMap<String, String> = unstored(out.path())
        .iter()
        .map(|r| {
            (
                r["crate"].as_str().unwrap().to_owned(),
                r["started_at"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let pid = running.id();
    let _ = std::process::Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status();
    drop(running);
    server.resume();

    let done = wait(start_run(&server, &args), Duration::from_secs(300));
    assert_eq!(done.status.code(), Some(0), "{}", done.stderr);
    assert!(
        done.stderr.contains("results of an earlier run wait in"),
        "{}",
        done.stderr
    );
    let crates_run: Vec<String> = (0..5).map(|i| format!("fixture-restart-{i}")).collect();
    let crates_run: Vec<(&str, &str)> = crates_run.iter().map(|n| (n.as_str(), "0.1.0")).collect();
    assert_stored_once(&server, "check", &crates_run);
    for (name, started_at) in &waiting {
        let record = json(&server, &format!("check/results/{name}/0.1.0.json"));
        assert_eq!(
            record["started_at"].as_str(),
            Some(started_at.as_str()),
            "{name} was stored from the spool, not run again"
        );
    }
    assert!(unstored(out.path()).is_empty());
    // The killed run's containers were cleaned up by the second run.
    assert!(containers_of(pid).is_empty());
}

#[test]
fn a_missing_bucket_wrong_credentials_or_no_server_refuse_to_start() {
    let server = S3Server::start_with_auth();
    server.create_bucket(BUCKET);
    let out = tempfile::tempdir().unwrap();
    let run_with = |bucket: &str, endpoint: &str, env: &[(String, String)]| {
        let args = [
            "run",
            "--crate",
            "itoa@1.0.11",
            "--out",
            to_str(out.path()),
            "--bucket",
            bucket,
            "--s3-endpoint",
            endpoint,
            "--s3-path-style",
            "--s3-timeout",
            "3s",
        ];
        wait(
            spawn_with_env(&coordinator_bin(), &args, env),
            Duration::from_secs(60),
        )
    };
    let missing = run_with("no-such-bucket", &server.endpoint(), &server.env());
    assert_eq!(missing.status.code(), Some(1), "{}", missing.stderr);
    assert!(
        missing
            .stderr
            .contains("the bucket `no-such-bucket` does not exist"),
        "{}",
        missing.stderr
    );
    let denied = run_with(BUCKET, &server.endpoint(), &server.wrong_credentials_env());
    assert_eq!(denied.status.code(), Some(1), "{}", denied.stderr);
    assert!(
        denied.stderr.contains("was denied") && denied.stderr.contains("credentials"),
        "{}",
        denied.stderr
    );
    let endpoint = format!("http://127.0.0.1:{}", free_port());
    let unreachable = run_with(BUCKET, &endpoint, &server.env());
    assert_eq!(unreachable.status.code(), Some(1), "{}", unreachable.stderr);
    assert!(
        unreachable.stderr.contains("cannot reach the bucket"),
        "{}",
        unreachable.stderr
    );
    for refused in [&missing, &denied, &unreachable] {
        assert!(
            !refused.stderr.contains("crates to run"),
            "refused before any work was chosen: {}",
            refused.stderr
        );
    }
    // With the right credentials the same bucket is fine (so the refusals above were real).
    let fine = run_with(BUCKET, &server.endpoint(), &server.env());
    assert_eq!(fine.status.code(), Some(0), "{}", fine.stderr);
}

#[test]
fn resuming_from_a_large_bucket_reads_every_page_of_the_listing() {
    let server = S3Server::start();
    server.create_bucket(BUCKET);
    resume_from_a_large_bucket(&server);
}

#[test]
fn resuming_from_a_large_garage_bucket_reads_every_page_of_the_listing() {
    resume_from_a_large_bucket(&garage_server());
}

fn resume_from_a_large_bucket(server: &S3Server) {
    // 1100 crates in a generated dump (more than one listing page of 1000 keys); 1050 of them
    // have a result in the bucket, every 25th a failure.
    let dir = tempfile::tempdir().unwrap();
    let dump = dir.path().join("db-dump.tar.gz");
    let name = |i: usize| format!("resume-{i:04}");
    let crates: Vec<SynthCrate> = (0..1100)
        .map(|i| SynthCrate {
            name: name(i),
            versions: vec![SynthVersion {
                num: "1.0.0".to_owned(),
                yanked: false,
                downloads: vec![("2026-11-01".to_owned(), 5000 - i as u64)],
                checksum: [7; 32],
            }],
        })
        .collect();
    write_dump(&dump, &crates).unwrap();
    let now = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let results: BTreeMap<String, String> = (0..1050)
        .map(|i| {
            let status = if i % 25 == 0 { "build-fail" } else { "pass" };
            let record = serde_json::json!({
                "crate": name(i), "version": "1.0.0", "tool": "check", "target": "t",
                "status": status, "source": "crates.io", "exit_code": 0, "timed_out": false,
                "duration_ms": 1, "peak_memory_bytes": 0, "started_at": now,
                "finished_at": now, "attempt": 1, "tries": 1, "agent": "a", "slot": 0,
                "log_bytes": 0, "log_sha256": ""
            });
            (
                format!("check/results/{}/1.0.0.json", name(i)),
                record.to_string(),
            )
        })
        .collect();
    server.put_many(BUCKET, &results);
    let out = tempfile::tempdir().unwrap();
    let list = |extra: &[&str]| {
        let mut args = vec![
            "list".to_owned(),
            "--all".to_owned(),
            "--db-dump".to_owned(),
            to_str(&dump).to_owned(),
            "--out".to_owned(),
            to_str(out.path()).to_owned(),
        ];
        args.extend(bucket_args(server));
        args.extend(extra.iter().map(|s| s.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let done = wait(
            spawn_with_env(&coordinator_bin(), &args, &server.env()),
            Duration::from_secs(120),
        );
        assert_eq!(done.status.code(), Some(0), "{}", done.stderr);
        let names: Vec<String> = done
            .stdout
            .lines()
            .map(|l| l.split(' ').next().unwrap().to_owned())
            .collect();
        (names, done.stderr)
    };

    let (names, stderr) = list(&[]);
    assert_eq!(
        names,
        (1050..1100).map(name).collect::<Vec<_>>(),
        "{stderr}"
    );
    assert!(
        stderr.contains("1050 already finished in s3://results"),
        "{stderr}"
    );
    let (names, stderr) = list(&["--retry-failed"]);
    let failed: Vec<String> = (0..1050).filter(|i| i % 25 == 0).map(name).collect();
    assert_eq!(names, failed, "{stderr}");
    let (names, _) = list(&["--max-age", "0"]);
    assert_eq!(
        names.len(),
        1100,
        "a zero --max-age makes every result stale"
    );

    // A run keeps the crate list in the bucket, so a coordinator on another host (another
    // --out) selects without the dump.
    let mut run = vec![
        "run",
        "--tool",
        "check",
        "--top",
        "3",
        "--db-dump",
        to_str(&dump),
    ];
    run.extend(["--out", to_str(out.path())]);
    let bucket = bucket_args(server);
    run.extend(bucket.iter().map(String::as_str));
    let ran = wait(
        spawn_with_env(&coordinator_bin(), &run, &server.env()),
        Duration::from_secs(120),
    );
    assert_eq!(ran.status.code(), Some(0), "{}", ran.stderr);
    assert!(ran.stderr.contains("nothing to do"), "{}", ran.stderr);
    let cached: Vec<serde_json::Value> =
        serde_json::from_slice(&server.get(BUCKET, "crates.json")).unwrap();
    assert_eq!(cached.len(), 1100);
    assert!(server.get(BUCKET, "downloads.json").len() > 1000);
    let elsewhere = tempfile::tempdir().unwrap();
    let mut other = vec![
        "list",
        "--top",
        "1100",
        "--db-dump",
        "/nonexistent/db-dump.tar.gz",
    ];
    other.extend(["--out", to_str(elsewhere.path())]);
    other.extend(bucket.iter().map(String::as_str));
    let listed = wait(
        spawn_with_env(&coordinator_bin(), &other, &server.env()),
        Duration::from_secs(120),
    );
    assert_eq!(listed.status.code(), Some(0), "{}", listed.stderr);
    assert_eq!(listed.stdout.lines().count(), 50, "{}", listed.stderr);
    assert!(
        listed.stderr.contains("1100 crates from the cached"),
        "{}",
        listed.stderr
    );
}
