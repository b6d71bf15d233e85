//! Separate processes: `serve` + `crater-agent` + `status`, and stopping a run with SIGINT.

mod common;

use common::*;
use std::process::Command;
use std::time::Duration;

const MINUTES: Duration = Duration::from_secs(60);

fn fixtures(root: &std::path::Path) -> Vec<std::path::PathBuf> {
    vec![
        make_crate(root, "fixture-proc-pass", "#[test]\nfn ok() {}\n", None),
        make_crate(
            root,
            "fixture-proc-build-fail",
            "pub fn f() -> u8 { \"x\" }\n",
            None,
        ),
        make_crate(
            root,
            "fixture-proc-test-fail",
            "#[test]\nfn no() { panic!(\"no\") }\n",
            None,
        ),
        // Busy long enough for `status` to see it running.
        make_crate(root, "fixture-proc-slow", "", Some(&sleeping_build_rs(8))),
    ]
}

fn selection_args<'a>(dirs: &'a [std::path::PathBuf], out: &'a std::path::Path) -> Vec<&'a str> {
    let mut args = vec![
        "--tool",
        "test",
        "--out",
        to_str(out),
        "--crate",
        "itoa@1.0.15",
    ];
    for dir in dirs {
        args.extend(["--local-crate", to_str(dir)]);
    }
    args
}

#[test]
fn serve_and_a_separate_agent_give_the_same_verdicts_as_run() {
    let crates = tempfile::tempdir().unwrap();
    let dirs = fixtures(crates.path());
    ensure_image();

    let run_out = tempfile::tempdir().unwrap();
    let mut args = vec!["run", "--slots", "2"];
    args.extend(SMALL);
    args.extend(selection_args(&dirs, run_out.path()));
    let single = run(&args, 10 * MINUTES);
    assert!(single.status.success(), "{}", single.stderr);

    let serve_out = tempfile::tempdir().unwrap();
    let port = free_port();
    let address = format!("127.0.0.1:{port}");
    let url = format!("http://{address}");
    let mut serve_args = vec!["serve", "--listen", &address, "--exit-when-done"];
    serve_args.extend(selection_args(&dirs, serve_out.path()));
    let serve = spawn(&coordinator_bin(), &serve_args);
    let agent = spawn(
        &agent_bin(),
        &[
            "--coordinator",
            &url,
            "--slots",
            "2",
            "--memory-gb",
            "2",
            "--name",
            "agent-under-test",
        ],
    );
    let agent_pid = agent.id();

    // While it works, `status --json` describes it.
    let mut seen_running = false;
    wait_until(
        "status to show the agent running a crate",
        5 * MINUTES,
        || {
            let out = Command::new(coordinator_bin())
                .args(["status", "--json", "--coordinator", &url])
                .output()
                .unwrap();
            if !out.status.success() {
                return false;
            }
            let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            assert_eq!(status["total"], 5, "{status}");
            let agents = status["agents"].as_array().unwrap();
            seen_running = agents.iter().any(|a| {
                a["name"] == "agent-under-test"
                    && a["slots"] == 2
                    && !a["running"].as_array().unwrap().is_empty()
            });
            seen_running
        },
    );
    let table = Command::new(coordinator_bin())
        .args(["status", "--coordinator", &url])
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&table.stdout);
    assert!(
        table.contains("agent agent-under-test · 2 slots"),
        "{table}"
    );

    let served = wait(serve, 10 * MINUTES);
    assert!(served.status.success(), "{}", served.stderr);
    let agent = wait(agent, MINUTES);
    assert!(
        agent.status.success(),
        "a drained agent exits cleanly: {}",
        agent.stderr
    );
    assert!(
        containers_of(agent_pid).is_empty(),
        "the agent removed its containers"
    );

    let single_results = all_results(run_out.path(), "test");
    assert_eq!(single_results.len(), 5, "{single_results:?}");
    assert_eq!(all_results(serve_out.path(), "test"), single_results);
    let verdicts: Vec<&str> = single_results.iter().map(|(_, _, v)| v.as_str()).collect();
    assert!(
        verdicts.contains(&"build-fail") && verdicts.contains(&"test-fail"),
        "{verdicts:?}"
    );
}

#[test]
fn sigint_stops_cleanly_and_the_next_run_finishes_the_rest() {
    let crates = tempfile::tempdir().unwrap();
    let dirs: Vec<_> = ["fixture-int-a", "fixture-int-b", "fixture-int-c"]
        .iter()
        .map(|name| make_crate(crates.path(), name, "", Some(&sleeping_build_rs(6))))
        .collect();
    let out = tempfile::tempdir().unwrap();
    ensure_image();
    let mut args = vec!["run", "--slots", "1", "--out", to_str(out.path())];
    args.extend(SMALL);
    for dir in &dirs {
        args.extend(["--local-crate", to_str(dir)]);
    }
    let child = spawn(&coordinator_bin(), &args);
    let pid = child.id();
    wait_until("the first result", 5 * MINUTES, || {
        all_results(out.path(), "check").len() == 1
    });
    let kill = Command::new("kill")
        .args(["-INT", &pid.to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let stopped = wait(child, 2 * MINUTES);
    assert_eq!(stopped.status.code(), Some(130), "{}", stopped.stderr);
    assert!(
        stopped.stderr.contains("run the same command again"),
        "{}",
        stopped.stderr
    );
    assert!(
        containers_of(pid).is_empty(),
        "no container left with the project's label"
    );
    let finished_first = all_results(out.path(), "check");
    assert_eq!(
        finished_first.len(),
        1,
        "the job stopped mid-way left no result"
    );
    let first_name = finished_first[0].0.clone();
    let first_finished_at =
        result(out.path(), "check", &first_name, "0.1.0")["finished_at"].clone();

    let resumed = run(&args, 5 * MINUTES);
    assert!(resumed.status.success(), "{}", resumed.stderr);
    assert!(
        resumed.stderr.contains("2 crates to run"),
        "{}",
        resumed.stderr
    );
    assert!(
        resumed.stderr.contains("1 already finished"),
        "{}",
        resumed.stderr
    );
    let all = all_results(out.path(), "check");
    assert_eq!(all.len(), 3, "{all:?}");
    assert!(all.iter().all(|(_, _, v)| v == "pass"), "{all:?}");
    // The crate finished before the interruption was not run again.
    assert_eq!(
        result(out.path(), "check", &first_name, "0.1.0")["finished_at"],
        first_finished_at
    );
}

#[test]
fn a_killed_agents_container_stops_by_itself_after_its_job() {
    let crates = tempfile::tempdir().unwrap();
    let slow = make_crate(
        crates.path(),
        "fixture-orphan",
        "",
        Some(&sleeping_build_rs(10)),
    );
    ensure_image();
    let out = tempfile::tempdir().unwrap();
    let (serve, url) = serve_on_loopback(out.path(), &[&slow], &[]);
    let agent = agent_on(&url, "0", "agent-killed", &[]);
    let agent_pid = agent.id();
    let mut container = String::new();
    wait_until("the job to start", 5 * MINUTES, || {
        let Some(id) = containers_of(agent_pid).into_iter().next() else {
            return false;
        };
        container = id;
        let ps = Command::new("docker")
            .args(["exec", &container, "ps", "-eo", "args="])
            .output()
            .unwrap();
        String::from_utf8_lossy(&ps.stdout).contains("build-script-build")
    });
    Command::new("kill")
        .args(["-KILL", &agent_pid.to_string()])
        .status()
        .unwrap();
    drop(agent);
    // Its job ends within the build script's 10 s; then the loop reads the end of its input.
    wait_until("the orphaned container to stop", 2 * MINUTES, || {
        docker(&["inspect", "-f", "{{.State.Running}}", &container]).trim() == "false"
    });
    docker(&["rm", "-f", &container]);
    drop(serve);
}

/// `serve` on a loopback port with `extra` flags over `crates`; (the server, its URL).
fn serve_on_loopback(
    out: &std::path::Path,
    crates: &[&std::path::Path],
    extra: &[&str],
) -> (Running, String) {
    let address = format!("127.0.0.1:{}", free_port());
    let mut args = vec![
        "serve",
        "--listen",
        &address,
        "--tool",
        "check",
        "--out",
        to_str(out),
    ];
    args.extend(extra);
    for dir in crates {
        args.extend(["--local-crate", to_str(dir)]);
    }
    let serve = spawn(&coordinator_bin(), &args);
    (serve, format!("http://{address}"))
}

/// A `crater-agent` with one slot on `cpu`, named `name`, with `extra` flags.
fn agent_on(url: &str, cpu: &str, name: &str, extra: &[&str]) -> Running {
    let mut args = vec![
        "--coordinator",
        url,
        "--slots",
        "1",
        "--cpus",
        cpu,
        "--memory-gb",
        "2",
        "--disk-gb",
        "0",
        "--name",
        name,
    ];
    args.extend(extra);
    spawn(&agent_bin(), &args)
}

fn running_on(url: &str, agent: &str) -> bool {
    let out = Command::new(coordinator_bin())
        .args(["status", "--json", "--coordinator", url])
        .output()
        .unwrap();
    let Ok(status) = serde_json::from_slice::<serde_json::Value>(&out.stdout) else {
        return false;
    };
    status["agents"].as_array().is_some_and(|agents| {
        agents
            .iter()
            .any(|a| a["name"] == agent && !a["running"].as_array().unwrap().is_empty())
    })
}

fn sigterm(running: &Running) {
    let sent = Command::new("kill")
        .args(["-TERM", &running.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
}

#[test]
fn sigterm_on_an_agent_lets_its_job_finish_then_it_exits_0() {
    let crates = tempfile::tempdir().unwrap();
    let slow = make_crate(
        crates.path(),
        "fixture-drained",
        "",
        Some(&sleeping_build_rs(10)),
    );
    ensure_image();
    let out = tempfile::tempdir().unwrap();
    let (serve, url) = serve_on_loopback(out.path(), &[&slow], &["--exit-when-done"]);
    let agent = agent_on(&url, "0", "agent-drained", &[]);
    wait_until("the job to run", 5 * MINUTES, || {
        running_on(&url, "agent-drained")
    });
    sigterm(&agent);
    let agent_pid = agent.id();
    let agent = wait(agent, 2 * MINUTES);
    assert!(agent.status.success(), "{}", agent.stderr);
    assert!(agent.stderr.contains("draining"), "{}", agent.stderr);
    assert!(
        containers_of(agent_pid).is_empty(),
        "its containers are gone"
    );
    let served = wait(serve, MINUTES);
    assert!(served.status.success(), "{}", served.stderr);
    let r = result(out.path(), "check", "fixture-drained", "0.1.0");
    assert_eq!(
        (r["status"].as_str(), r["attempt"].as_u64()),
        (Some("pass"), Some(1)),
        "{r}"
    );
}

#[test]
fn past_its_drain_timeout_an_agent_gives_its_job_back_and_another_finishes_it_at_once() {
    let crates = tempfile::tempdir().unwrap();
    let slow = make_crate(
        crates.path(),
        "fixture-released",
        "",
        Some(&sleeping_build_rs(20)),
    );
    ensure_image();
    let out = tempfile::tempdir().unwrap();
    // A lease timeout far longer than the test: only the release can move the job in time.
    let (serve, url) = serve_on_loopback(
        out.path(),
        &[&slow],
        &["--exit-when-done", "--lease-timeout", "10m"],
    );
    let leaving = agent_on(&url, "0", "agent-leaving", &["--drain-timeout", "1s"]);
    wait_until("the job to run", 5 * MINUTES, || {
        running_on(&url, "agent-leaving")
    });
    let staying = agent_on(&url, "1", "agent-staying", &[]);
    wait_until("the second agent to connect", 3 * MINUTES, || {
        let out = Command::new(coordinator_bin())
            .args(["status", "--json", "--coordinator", &url])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).contains("agent-staying")
    });
    let signalled = std::time::Instant::now();
    sigterm(&leaving);
    let left = wait(leaving, MINUTES);
    assert!(left.status.success(), "{}", left.stderr);
    assert!(left.stderr.contains("giving"), "{}", left.stderr);
    wait_until("the job to run on the other agent", MINUTES, || {
        running_on(&url, "agent-staying")
    });
    let moved_after = signalled.elapsed();
    assert!(
        moved_after < Duration::from_secs(30),
        "moved after {moved_after:?}"
    );
    let served = wait(serve, 3 * MINUTES);
    assert!(served.status.success(), "{}", served.stderr);
    drop(staying);
    let r = result(out.path(), "check", "fixture-released", "0.1.0");
    assert_eq!(r["status"], "pass", "{r}");
    assert_eq!(r["attempt"], 2, "{r}");
    assert_eq!(r["agent"], "agent-staying", "{r}");
    assert_eq!(all_results(out.path(), "check").len(), 1, "one result");
    eprintln!("the job moved {moved_after:?} after SIGTERM (drain timeout 1 s)");
}
