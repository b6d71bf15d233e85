//! The report site, read as people read it: `report` renders a store with every verdict (a UB
//! crate with a 50 MiB log among them), and a headless Chromium opens the pages from the local
//! folder (file://) and from a bucket (over HTTP), types into the search, follows links, and
//! sees no script errors; every page passes the Nu HTML checker. A real run into a bucket keeps
//! the pages current while it works.

mod common;

use common::browser::Browser;
use common::html_check::validate_html;
use common::s3::S3Server;
use common::*;
use crater_coordinator::report::synth;
use crater_proto::tool::Tool;
use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;
use std::time::Duration;

const BUCKET: &str = "results";

fn report(args: &[&str], env: &[(String, String)]) -> Finished {
    let mut all = vec!["report"];
    all.extend_from_slice(args);
    wait(
        spawn_with_env(&coordinator_bin(), &all, env),
        Duration::from_secs(300),
    )
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// `(path inside, size)` of every entry of a `.tar.zst`.
fn archive_entries(path: &Path) -> BTreeMap<String, u64> {
    let file = std::fs::File::open(path).unwrap();
    let mut archive = tar::Archive::new(zstd::Decoder::new(file).unwrap());
    let mut entries = BTreeMap::new();
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let name = entry.path().unwrap().to_string_lossy().into_owned();
        let mut bytes = 0u64;
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let n = entry.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            bytes += n as u64;
        }
        entries.insert(name, bytes);
    }
    entries
}

fn assert_no_console_errors(browser: &Browser, page: &str) {
    let errors = browser.console_errors();
    assert!(errors.is_empty(), "{page}: {errors:#?}");
}

#[test]
fn every_verdict_renders_and_reads_in_a_browser_from_a_local_folder() {
    let out = tempfile::tempdir().unwrap();
    let records = synth::write_store(out.path(), Tool::Check, 60, 50 << 20).unwrap();
    let done = report(&["--out", to_str(out.path())], &[]);
    assert_eq!(done.status.code(), Some(0), "{}", done.stderr);
    assert!(done.stderr.contains("61 results"), "{}", done.stderr);
    let tool = out.path().join("check");

    // Scripts' data: one verdict a line for every result, counts that match them.
    let jsonl = read(&tool.join("results.jsonl"));
    assert_eq!(jsonl.lines().count(), records.len());
    let summary: serde_json::Value =
        serde_json::from_str(&read(&tool.join("summary.json"))).unwrap();
    let mut expected: BTreeMap<String, u64> = BTreeMap::new();
    for record in &records {
        *expected.entry(record.status.to_string()).or_default() += 1;
    }
    for (verdict, count) in &expected {
        assert_eq!(summary["verdicts"][verdict], *count, "{verdict}: {summary}");
    }
    let failure_kinds: Vec<&str> = summary["failure_causes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["kind"].as_str().unwrap())
        .collect();
    for kind in [
        "E0425",
        "E0599",
        "missing-system-library",
        "test-failure",
        "timeout",
        "oom",
    ] {
        assert!(failure_kinds.contains(&kind), "{kind}: {failure_kinds:?}");
    }

    // The archives hold every log, the 50 MiB one whole.
    let raw = archive_entries(&tool.join("raw.tar.zst"));
    assert_eq!(raw.len(), records.len());
    let big = format!("{}/0.6.1", synth::BIG_LOG_CRATE);
    assert!(raw[&big] >= 50 << 20, "{raw:?}");
    let html = archive_entries(&tool.join("html.tar.zst"));
    assert!(html.contains_key(&format!("{big}.html")), "{html:?}");

    // Everything a crate wrote is escaped; the UB page puts the most downloaded first.
    let ub = read(&tool.join("ub.html"));
    assert!(!ub.contains("<script>alert"), "unescaped crate text");
    assert!(ub.contains("&lt;script&gt;alert"));
    let first = ub.find("data-crate=").unwrap();
    assert!(ub[first..].starts_with(&format!("data-crate=\"{}@", synth::BIG_LOG_CRATE)));
    assert_eq!(
        read(&tool.join("ub")),
        ub,
        "the seed's key holds the same page"
    );

    // Valid HTML, the log pages too (of each verdict; the 50 MiB one is left to the browser).
    let mut pages: Vec<std::path::PathBuf> = ["index.html", "ub.html", "failures.html"]
        .iter()
        .map(|p| tool.join(p))
        .collect();
    for record in records.iter().take(20) {
        pages.push(tool.join("logs").join(&record.name).join(&record.version));
    }
    let pages: Vec<&Path> = pages.iter().map(|p| p.as_path()).collect();
    validate_html(&pages).unwrap();

    let browser = Browser::start();
    let url = |page: &str| format!("file://{}/{page}", tool.display());

    // Search as you type: the exact name first, then prefixes; the verdict filters apply.
    browser.open(&url("index.html"));
    browser.wait_for("#results li", Duration::from_secs(10));
    browser.type_into("#q", "synth-1");
    let hits = browser.texts("#results a.name");
    assert!(hits[0].starts_with("synth-1 "), "{hits:?}");
    assert!(hits.iter().all(|h| h.starts_with("synth-1")), "{hits:?}");
    assert_eq!(hits.len(), 11, "synth-1 and synth-10..19: {hits:?}");
    browser.type_into("#q", "big");
    let hits = browser.texts("#results a.name");
    assert_eq!(hits.len(), 1, "a substring matches too: {hits:?}");
    assert!(
        browser.current_url().ends_with("#q=big"),
        "the search is in the URL"
    );
    browser.type_into("#q", "synth");
    browser.click("#filters input[value=pass]");
    let verdicts = browser.texts("#results .v");
    assert!(
        !verdicts.is_empty() && !verdicts.iter().any(|v| v == "pass"),
        "{verdicts:?}"
    );
    browser.press_key("#q", fantoccini::key::Key::Down);
    assert_eq!(
        browser.eval("return document.activeElement.className"),
        "name",
        "the arrow key goes from the box to the first hit"
    );
    assert_no_console_errors(&browser, "index.html");

    // A hit leads to the crate's log page, an HTML page (not text) with its links and the
    // first error marked.
    browser.type_into("#q", "synth-0");
    browser.click("#results a.name");
    assert_eq!(browser.eval("return document.contentType"), "text/html");
    let links = browser.attr_all("nav a", "href");
    assert!(
        links
            .iter()
            .flatten()
            .any(|l| l.ends_with("/results/synth-0/1.0.0%2Bbuild.7.json")),
        "{links:?}"
    );
    assert_eq!(
        browser.count("#first-report"),
        1,
        "a build failure's first error"
    );
    assert_eq!(browser.texts("a.jump"), ["Jump to the first error"]);
    assert_no_console_errors(&browser, "a log page");

    // The UB page: the crate in the URL is selected and its log is beside the list.
    browser.open(&url("ub.html#crate=synth-7%401.0.0%2Bbuild.7"));
    browser.wait_for("li.selected", Duration::from_secs(10));
    assert_eq!(
        browser.attr_all("li.selected", "data-crate"),
        [Some("synth-7@1.0.0+build.7".to_owned())]
    );
    assert_eq!(
        browser.attr_all("#log", "src"),
        [Some("logs/synth-7/1.0.0%2Bbuild.7.html".to_owned())]
    );
    browser.click("li[data-crate^=synth-6] a.name");
    assert!(
        browser.current_url().ends_with("#crate=synth-6%400.6.1"),
        "{}",
        browser.current_url()
    );
    assert_no_console_errors(&browser, "ub.html");

    // Failures by cause: a cause lists exactly its crates.
    browser.open(&url("failures.html#cause=E0425"));
    browser.wait_for("#crates li", Duration::from_secs(10));
    let with_e0425 = records
        .iter()
        .filter(|r| r.causes.iter().any(|c| c.kind == "E0425"))
        .count();
    assert_eq!(browser.count("#crates li"), with_e0425);
    assert!(browser.texts("#chosen-title")[0].starts_with(&format!("{with_e0425} crates")));
    assert_no_console_errors(&browser, "failures.html");

    // A second report trusts the snapshot for every verdict unchanged since.
    let again = report(&["--out", to_str(out.path()), "--no-archives"], &[]);
    assert!(
        again.stderr.contains(&format!(
            "{0} results ({0} from check/results.jsonl, 0 read",
            records.len()
        )),
        "{}",
        again.stderr
    );
}

#[test]
fn diff_tells_regressions_from_fixes() {
    let before = tempfile::tempdir().unwrap();
    let after = tempfile::tempdir().unwrap();
    synth::write_store(before.path(), Tool::Check, 40, 0).unwrap();
    synth::write_store(after.path(), Tool::Check, 40, 0).unwrap();
    // Every 4th crate changes: passes fail, failures pass.
    assert_eq!(
        synth::touch(after.path(), Tool::Check, 40, 25.0).unwrap(),
        10
    );
    let page = before.path().join("diff.html");
    let args = [
        "diff",
        "--out",
        to_str(before.path()),
        "--out",
        to_str(after.path()),
        "--json",
        "--html",
        to_str(&page),
    ];
    let done = run(&args, Duration::from_secs(60));
    assert_eq!(done.status.code(), Some(3), "a regression: {}", done.stderr);
    let json: serde_json::Value = serde_json::from_str(&done.stdout).unwrap();
    let moved: Vec<String> = json["moved"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            format!(
                "{} {}",
                m["change"].as_str().unwrap(),
                m["crate"].as_str().unwrap()
            )
        })
        .collect();
    // The synthetic verdicts of 0, 4, ... 36: passes at 12, 16, 32, 36; build failures at 0
    // and 20, oom at 4 and 24, prepare failures at 8 and 28.
    assert_eq!(
        moved,
        [
            "regressed synth-12",
            "regressed synth-16",
            "regressed synth-32",
            "regressed synth-36",
            "fixed synth-0",
            "fixed synth-20",
            "fixed synth-24",
            "fixed synth-28",
            "fixed synth-4",
            "fixed synth-8",
        ]
    );
    assert_eq!(json["same"], 30);
    validate_html(&[&page]).unwrap();
    let same = run(
        &[
            "diff",
            "--out",
            to_str(before.path()),
            "--out",
            to_str(before.path()),
        ],
        Duration::from_secs(60),
    );
    assert_eq!(same.status.code(), Some(0), "{}", same.stderr);
    assert!(
        same.stdout.contains("0 regressed, 0 fixed"),
        "{}",
        same.stdout
    );
    let one = run(
        &["diff", "--out", to_str(before.path())],
        Duration::from_secs(60),
    );
    assert_eq!(one.status.code(), Some(1));
    assert!(one.stderr.contains("give --out twice"), "{}", one.stderr);
}

/// A real run into a bucket (a real crate from crates.io, a local one that does not compile,
/// one that takes a while): its pages appear while it runs, `report --bucket` rebuilds them
/// with archives, and they read in a browser straight from the S3 server.
#[test]
fn a_run_into_a_bucket_keeps_its_pages_current_and_they_read_in_a_browser() {
    let server = S3Server::start();
    server.create_bucket(BUCKET);
    let crates = tempfile::tempdir().unwrap();
    let broken = make_crate(
        crates.path(),
        "fixture-broken",
        "pub fn f() -> u32 { undefined_value }\n",
        None,
    );
    let slow = make_crate(
        crates.path(),
        "fixture-slow-report",
        "pub fn f() {}\n",
        Some(&sleeping_build_rs(20)),
    );
    let out = tempfile::tempdir().unwrap();
    let bucket = [
        "--bucket",
        BUCKET,
        "--s3-endpoint",
        &server.endpoint(),
        "--s3-path-style",
    ];
    let mut args = vec![
        "run",
        "--slots",
        "2",
        "--memory-gb",
        "2",
        "--report-every",
        "1s",
        "--out",
        to_str(out.path()),
        "--crate",
        "itoa@1.0.11",
        "--local-crate",
        to_str(&broken),
        "--local-crate",
        to_str(&slow),
    ];
    args.extend(bucket);
    ensure_image();
    let mut running = spawn_with_env(&coordinator_bin(), &args, &server.env());
    let has = |server: &S3Server, key: &str| server.objects(BUCKET).iter().any(|o| o.key == key);
    wait_until(
        "the landing page, mid-run",
        Duration::from_secs(300),
        || has(&server, "check/index.html") && has(&server, "check/results/itoa/1.0.11.json"),
    );
    let mid_run: serde_json::Value =
        serde_json::from_slice(&server.get(BUCKET, "check/summary.json")).unwrap();
    assert!(!running.exited(), "the pages appeared before the run ended");
    let done = wait(running, Duration::from_secs(300));
    assert_eq!(done.status.code(), Some(0), "{}", done.stderr);
    let summary: serde_json::Value =
        serde_json::from_slice(&server.get(BUCKET, "check/summary.json")).unwrap();
    assert_eq!(
        summary["crates"], 3,
        "the last update has every crate: {summary}"
    );
    assert!(
        mid_run["crates"].as_u64().unwrap() < 3,
        "the one mid-run did not: {mid_run}"
    );
    assert_eq!(summary["verdicts"]["build-fail"], 1, "{summary}");
    // The agent's toolchain, from its Hello into every result, is on the pages.
    let toolchains = summary["toolchains"].as_array().unwrap();
    assert_eq!(toolchains.len(), 1, "{summary}");
    assert!(
        toolchains[0].as_str().unwrap().starts_with("rustc 1."),
        "{summary}"
    );
    let e0425 = summary["failure_causes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["kind"] == "E0425")
        .unwrap_or_else(|| panic!("rustc's error code is the cause: {summary}"));
    assert_eq!(e0425["crates"], 1);

    let mut report_args = vec!["--out", to_str(out.path())];
    report_args.extend(bucket);
    let rebuilt = report(&report_args, &server.env());
    assert_eq!(rebuilt.status.code(), Some(0), "{}", rebuilt.stderr);
    // Written seconds ago, the verdicts are read again rather than trusted to the snapshot
    // (its margin for the clocks of writer and store).
    assert!(
        rebuilt.stderr.contains("check: 3 results"),
        "{}",
        rebuilt.stderr
    );
    for key in [
        "check/raw.tar.zst",
        "check/html.tar.zst",
        "check/ub.html",
        "check/failures.html",
    ] {
        assert!(has(&server, key), "{key}");
    }

    // Straight from the S3 server, as a bucket's website would serve it.
    server.allow_public_reads(BUCKET);
    let browser = Browser::start();
    let base = format!("{}/{BUCKET}/check", server.endpoint());
    browser.open(&format!("{base}/index.html"));
    browser.wait_for("#results li", Duration::from_secs(10));
    browser.type_into("#q", "itoa");
    assert_eq!(browser.texts("#results a.name"), ["itoa 1.0.11"]);
    assert_eq!(browser.texts("#results .v"), ["pass"]);
    assert_no_console_errors(&browser, "index.html from S3");
    browser.click("#results a.name");
    assert_eq!(browser.eval("return document.contentType"), "text/html");
    assert!(browser.current_url().ends_with("/check/logs/itoa/1.0.11"));
    browser.open(&format!("{base}/failures.html#cause=E0425"));
    browser.wait_for("#crates li", Duration::from_secs(10));
    assert_eq!(browser.texts("#crates a.name"), ["fixture-broken 0.1.0"]);
    browser.click("#crates a.name");
    assert_eq!(browser.count("#first-report"), 1);
    let first_error = browser.texts("#first-report").join("");
    assert!(first_error.contains("E0425"), "{first_error}");
    assert_no_console_errors(&browser, "failures.html from S3");
}
