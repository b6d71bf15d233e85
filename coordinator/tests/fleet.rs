//! Fleet mode with agents on "other machines": each agent runs in a network namespace of its own
//! (see `common::netns`), the coordinator listens on this machine's address on the namespaces'
//! bridge — not loopback — with TLS and tokens, as `README.md`'s "Run a fleet" says:
//! `tls init --host <bridge ip>`, `serve --tls-cert … --agent-token-file … --status-token-file …`,
//! `crater-agent --coordinator https://<bridge ip>:<port> --ca-cert … --token-file …`.
//!
//! Local fixture crates travel inside Assign, so the namespaces need no internet; the one test
//! with a real crates.io crate (which the agent downloads itself) adds NAT for its bridge.
//!
//! Needs root (`ip netns`, iptables), Docker and the worker image, and `crater-agent` built
//! beside `crater-at-home` (`cargo test --workspace`, or `cargo build -p crater-agent` first).
//! The tests run one after another whatever the test threads (one bridge per process at a time).

mod common;

use common::netns::{Bridge, Host};
use common::*;
use crater_proto::pb::{
    self, agent_message::Msg as AgentMsg, coordinator_message::Msg as CoordMsg,
};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const MINUTE: Duration = Duration::from_secs(60);
/// `serve --lease-timeout` in the reassignment tests.
const LEASE: Duration = Duration::from_secs(10);
/// What the Issue allows on top of the lease timeout between losing an agent and the new Assign.
const REASSIGN_SLACK: Duration = Duration::from_secs(5);

/// A coordinator's fleet files (`tls init` for the bridge's address), its results directory
/// and the bridge its agents' namespaces hang on.
struct Fleet {
    dir: tempfile::TempDir,
    port: u16,
    bridge: Bridge,
}

impl Fleet {
    /// `internet`: NAT for the namespaces (for crates.io downloads by the agents).
    fn new(internet: bool) -> Fleet {
        ensure_image();
        let _ = agent_bin(); // fail early, with the hint, when it was not built
        let mut bridge = Bridge::new();
        if internet {
            bridge.allow_internet();
        }
        let dir = tempfile::tempdir().unwrap();
        let fleet = Fleet {
            dir,
            port: free_port(),
            bridge,
        };
        for (out, host) in [
            ("fleet", fleet.bridge.ip()),
            ("other-fleet", fleet.bridge.ip()),
        ] {
            let init = crater(&[
                "tls",
                "init",
                "--out",
                to_str(&fleet.dir.path().join(out)),
                "--host",
                &host,
            ]);
            assert!(init.status.success(), "tls init: {}", init.stderr);
        }
        fleet
    }

    fn address(&self) -> String {
        format!("{}:{}", self.bridge.ip(), self.port)
    }

    fn url(&self) -> String {
        format!("https://{}", self.address())
    }

    /// A file `tls init` wrote.
    fn file(&self, name: &str) -> String {
        to_str(&self.dir.path().join("fleet").join(name)).to_owned()
    }

    /// The same file of another fleet (another CA, other tokens).
    fn other_fleet_file(&self, name: &str) -> String {
        to_str(&self.dir.path().join("other-fleet").join(name)).to_owned()
    }

    /// The token in a token file `tls init` wrote.
    fn token(&self, file: &str) -> String {
        token_in(Path::new(&self.file(file)))
    }

    fn out(&self) -> PathBuf {
        self.dir.path().join("out")
    }

    /// Starts `serve` on the bridge's address with TLS and both token files, and waits until
    /// it listens (failing with its output if it exits instead).
    fn serve(&self, extra: &[&str]) -> Running {
        let (address, out) = (self.address(), self.out());
        let (cert, key) = (self.file("server.pem"), self.file("server-key.pem"));
        let (agent_tokens, status_tokens) = (self.file("agent-token"), self.file("status-token"));
        let mut args = vec![
            "serve",
            "--listen",
            &address,
            "--tls-cert",
            &cert,
            "--tls-key",
            &key,
            "--agent-token-file",
            &agent_tokens,
            "--status-token-file",
            &status_tokens,
            "--out",
            to_str(&out),
        ];
        args.extend(extra);
        let mut serve = spawn(&coordinator_bin(), &args);
        let start = Instant::now();
        while std::net::TcpStream::connect(&address).is_err() {
            if serve.exited() {
                let gone = wait(serve, MINUTE);
                panic!("serve {args:?} exited ({}):\n{}", gone.status, gone.stderr);
            }
            assert!(
                start.elapsed() < MINUTE,
                "serve did not listen on {address}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        serve
    }

    /// `crater-agent` named `name` in `host`'s namespace: one slot, 2 GiB, no disk bound,
    /// pinned to CPU `cpu`, with the fleet's CA and agent token unless `extra` says otherwise.
    fn agent(&self, host: &Host, name: &str, cpu: usize, extra: &[&str]) -> Agent {
        let (url, ca, token) = (self.url(), self.file("ca.pem"), self.file("agent-token"));
        let cpu = (cpu % cpus()).to_string();
        let mut args = vec![
            "--coordinator",
            &url,
            "--slots",
            "1",
            "--cpus",
            &cpu,
            "--memory-gb",
            "2",
            "--disk-gb",
            "0",
            "--name",
            name,
        ];
        // Flags given twice are refused by clap: `extra` replaces the CA or the token.
        if !extra.contains(&"--ca-cert") {
            args.extend(["--ca-cert", &ca]);
        }
        if !extra.contains(&"--token-file") {
            args.extend(["--token-file", &token]);
        }
        args.extend(extra);
        let running = host.spawn(&agent_bin(), &args);
        let pid = running.id();
        Agent {
            running: Some(running),
            pid,
        }
    }

    fn status_args(&self) -> Vec<String> {
        [
            "status",
            "--coordinator",
            &self.url(),
            "--ca-cert",
            &self.file("ca.pem"),
            "--token-file",
            &self.file("status-token"),
        ]
        .map(str::to_owned)
        .to_vec()
    }

    /// `status --json`, or `None` while the coordinator does not answer.
    fn status(&self) -> Option<Value> {
        let mut args = self.status_args();
        args.push("--json".into());
        let out = Command::new(coordinator_bin())
            .args(&args)
            .output()
            .unwrap();
        if !out.status.success() {
            return None;
        }
        Some(serde_json::from_slice(&out.stdout).expect("status --json prints JSON"))
    }

    /// `status` (the table for people), its raw bytes.
    fn status_table(&self) -> Vec<u8> {
        let out = Command::new(coordinator_bin())
            .args(self.status_args())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "status: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }
}

/// The token in a token file (its first line that is not a comment, as clients take it).
fn token_in(path: &Path) -> String {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('#'))
        .expect("a token")
        .to_owned()
}

/// `crater-at-home ARGS` to the end (short commands).
fn crater(args: &[&str]) -> Finished {
    wait(spawn(&coordinator_bin(), args), MINUTE)
}

fn cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// An agent in a namespace. Dropping it kills it (SIGKILL, when it is still running) and
/// removes whatever Docker objects it left: a killed agent leaves its slot container.
struct Agent {
    running: Option<Running>,
    pid: u32,
}

impl Agent {
    /// Waits for the agent to exit on its own.
    fn wait(&mut self, deadline: Duration) -> Finished {
        wait(self.running.take().expect("waited for once"), deadline)
    }

    fn exited(&mut self) -> bool {
        self.running.as_mut().is_none_or(Running::exited)
    }

    fn kill_9(&self) {
        let killed = Command::new("kill")
            .args(["-KILL", &self.pid.to_string()])
            .status()
            .unwrap();
        assert!(killed.success());
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        drop(self.running.take());
        let label = format!("label=org.crater-at-home.owner-pid={}", self.pid);
        for (list, remove) in [
            (
                vec!["ps", "-aq", "--filter", &label],
                vec!["rm", "-f", "-v"],
            ),
            (
                vec!["network", "ls", "-q", "--filter", &label],
                vec!["network", "rm"],
            ),
        ] {
            let Ok(out) = Command::new("docker").args(&list).output() else {
                continue;
            };
            for id in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                let mut args = remove.clone();
                args.push(id);
                let _ = Command::new("docker").args(&args).output();
            }
        }
    }
}

/// The crates `agent` runs in `status` (JSON), as (crate, job id).
fn running_on(status: &Value, agent: &str) -> Vec<(String, u64)> {
    status["agents"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|a| a["name"] == agent)
        .flat_map(|a| a["running"].as_array().cloned().unwrap_or_default())
        .map(|j| {
            (
                j["crate"].as_str().unwrap_or_default().to_owned(),
                j["job_id"].as_u64().unwrap_or_default(),
            )
        })
        .collect()
}

fn agent_names(status: &Value) -> Vec<String> {
    status["agents"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|a| a["name"].as_str().map(str::to_owned))
        .collect()
}

/// Whether the slot container of the agent with `pid` is running a build script now.
fn build_script_running(pid: u32) -> bool {
    containers_of(pid).iter().any(|id| {
        Command::new("docker")
            .args(["exec", id, "ps", "-eo", "args="])
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("build-script-build"))
    })
}

/// The crate `name` has exactly one result, a pass of `attempt` on `agent`, and serve reported
/// it finished once.
fn one_pass(fleet: &Fleet, served: &Finished, name: &str, attempt: u64, agent: &str) {
    let out = fleet.out();
    assert_eq!(
        all_results(&out, "check"),
        [(name.to_owned(), "0.1.0".to_owned(), "pass".to_owned())]
    );
    let r = result(&out, "check", name, "0.1.0");
    assert_eq!(r["attempt"], attempt, "{r}");
    assert_eq!(r["agent"], agent, "{r}");
    assert_eq!(
        finished_lines(&served.stderr, name, "0.1.0"),
        1,
        "{}",
        served.stderr
    );
}

/// How many progress lines `serve` printed for a finished `name` `version` ("[1/1] pass  name 0.1.0
/// (3.2s)"): a result published twice would show twice.
fn finished_lines(serve_stderr: &str, name: &str, version: &str) -> usize {
    let needle = format!(" {name} {version} (");
    serve_stderr
        .lines()
        .filter(|l| l.starts_with('[') && l.contains(&needle))
        .count()
}

/// Polls `status` until `crate_name` runs on `agent`; how long that took.
fn time_until_running_on(
    fleet: &Fleet,
    crate_name: &str,
    agent: &str,
    deadline: Duration,
) -> Duration {
    let start = Instant::now();
    loop {
        if let Some(status) = fleet.status()
            && running_on(&status, agent)
                .iter()
                .any(|(c, _)| c == crate_name)
        {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < deadline,
            "{crate_name} did not start on {agent} within {deadline:?}; status: {:?}",
            fleet.status()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

const PASSING_TEST: &str = "#[test]\nfn ok() {}\n";
const FAILING_TEST: &str = "#[test]\nfn no() { panic!(\"no\") }\n";
const BUILD_ERROR: &str = "pub fn f() -> u8 { \"x\" }\n";

#[test]
fn an_agent_in_another_namespace_runs_crates_over_tls() {
    let fleet = Fleet::new(true);
    let crates = tempfile::tempdir().unwrap();
    // Busy a few seconds each, so both agents get work and `status` sees them at it.
    let busy = sleeping_build_rs(4);
    let fixtures = [
        ("fixture-fleet-pass", PASSING_TEST, "pass"),
        ("fixture-fleet-build-fail", BUILD_ERROR, "build-fail"),
        ("fixture-fleet-test-fail", FAILING_TEST, "test-fail"),
    ];
    let dirs: Vec<PathBuf> = fixtures
        .iter()
        .map(|(name, lib, _)| make_crate(crates.path(), name, lib, Some(&busy)))
        .collect();
    let host1 = Host::new(&fleet.bridge, 1);
    let host2 = Host::new(&fleet.bridge, 2);
    let mut args = vec![
        "--tool",
        "test",
        "--exit-when-done",
        "--crate",
        "itoa@1.0.15",
    ];
    for dir in &dirs {
        args.extend(["--local-crate", to_str(dir)]);
    }
    let mut serve = fleet.serve(&args);
    let mut agent1 = fleet.agent(&host1, "agent-1", 0, &[]);
    let mut agent2 = fleet.agent(&host2, "agent-2", 1, &[]);

    // While they work, `status` names both agents at work.
    let mut seen_working = std::collections::BTreeSet::new();
    let start = Instant::now();
    while !serve.exited() {
        assert!(start.elapsed() < 5 * MINUTE, "serve did not finish");
        if let Some(status) = fleet.status() {
            assert_eq!(status["total"], 4, "{status}");
            for name in ["agent-1", "agent-2"] {
                if !running_on(&status, name).is_empty() {
                    seen_working.insert(name);
                }
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let served = wait(serve, MINUTE);
    assert!(served.status.success(), "serve: {}", served.stderr);
    for agent in [&mut agent1, &mut agent2] {
        let done = agent.wait(MINUTE);
        assert!(
            done.status.success(),
            "a drained agent exits 0: {}",
            done.stderr
        );
    }
    assert_eq!(
        seen_working.into_iter().collect::<Vec<_>>(),
        ["agent-1", "agent-2"],
        "status showed both agents running crates"
    );

    let out = fleet.out();
    let mut expected: Vec<(String, String, String)> = fixtures
        .iter()
        .map(|(name, _, verdict)| (name.to_string(), "0.1.0".into(), verdict.to_string()))
        .collect();
    expected.push(("itoa".into(), "1.0.15".into(), "pass".into()));
    expected.sort();
    assert_eq!(all_results(&out, "test"), expected);
    for (name, version, _) in &expected {
        let r = result(&out, "test", name, version);
        assert_eq!(r["attempt"], 1, "{r}");
        assert!(r["agent"] == "agent-1" || r["agent"] == "agent-2", "{r}");
        assert!(out.join(format!("test/raw/{name}/{version}")).exists());
        assert_eq!(
            finished_lines(&served.stderr, name, version),
            1,
            "{}",
            served.stderr
        );
    }
    // The real crate was downloaded by the agent (through the NAT) and its own tests ran.
    let itoa_log = std::fs::read_to_string(out.join("test/raw/itoa/1.0.15")).unwrap();
    assert!(itoa_log.contains("test test_u64_max ..."), "{itoa_log}");
}

#[test]
fn kill_9_of_an_agent_mid_job_moves_its_job_to_another_agent() {
    let name = "fixture-fleet-killed";
    let mut job = SlowJob::start(name, &sleeping_build_rs(20));
    let status = job.fleet.status().unwrap();
    assert_eq!(running_on(&status, "agent-1").len(), 1, "{status}");

    job.agent1.kill_9();
    let latency = time_until_running_on(&job.fleet, name, "agent-2", 2 * MINUTE);
    eprintln!("kill -9 of agent-1 -> job running on agent-2: {latency:.1?}");
    assert!(
        latency <= LEASE + REASSIGN_SLACK,
        "the job moved after {latency:?}, more than the lease timeout {LEASE:?} + {REASSIGN_SLACK:?}"
    );

    let served = wait(job.serve, 3 * MINUTE);
    assert!(served.status.success(), "serve: {}", served.stderr);
    let done = job.agent2.wait(MINUTE);
    assert!(done.status.success(), "agent-2: {}", done.stderr);
    one_pass(&job.fleet, &served, name, 2, "agent-2");
    // Dropping agent-1 removes the container the killed agent left running.
}

#[test]
fn a_partition_longer_than_the_lease_moves_the_job_and_the_late_result_is_discarded() {
    partition_longer_than_the_lease(false);
}

/// The same partition, and what the Issue's "agents that come back" adds: agent-1 reconnects by
/// itself when the link is back, never runs the job again beside agent-2, and is drained at the
/// end like any agent (exit 0).
#[test]
fn after_a_long_partition_the_old_agent_comes_back_without_running_the_job_twice() {
    partition_longer_than_the_lease(true);
}

/// agent-1 runs a crate sleeping 30 s; its link goes down right after agent-2 is up; with
/// `--lease-timeout 10s` the job moves to agent-2 (attempt 2); the link comes back while
/// agent-1's job still runs, so agent-1's result would arrive before agent-2's. One result:
/// agent-2's. `old_agent_comes_back`: also what reconnecting agents must do.
fn partition_longer_than_the_lease(old_agent_comes_back: bool) {
    let name = "fixture-fleet-partitioned";
    let mut job = SlowJob::start(name, &sleeping_build_rs(30));
    let status = job.fleet.status().unwrap();
    assert_eq!(running_on(&status, "agent-1").len(), 1, "{status}");

    job.host1.cut();
    let cut_at = job.started.elapsed();
    let latency = time_until_running_on(&job.fleet, name, "agent-2", 2 * MINUTE);
    eprintln!(
        "partition of agent-1 ({cut_at:.1?} into its job) -> job running on agent-2: {latency:.1?}"
    );
    assert!(
        latency <= LEASE + REASSIGN_SLACK,
        "the job moved after {latency:?}, more than the lease timeout {LEASE:?} + {REASSIGN_SLACK:?}"
    );
    assert!(
        build_script_running(job.agent1.pid),
        "agent-1's job is still running when the link comes back (so its result is late)"
    );
    job.host1.restore();
    let restored = Instant::now();

    // agent-1's job ends ~30 s after it began, before agent-2's: its result is the late one.
    let mut discarded = 0;
    let mut agent1_back_after = None;
    let start = Instant::now();
    while !job.serve.exited() {
        assert!(start.elapsed() < 3 * MINUTE, "serve did not finish");
        if let Some(status) = job.fleet.status() {
            discarded = discarded.max(status["results_discarded"].as_u64().unwrap_or(0));
            if agent_names(&status).contains(&"agent-1".to_owned()) {
                agent1_back_after.get_or_insert(restored.elapsed());
            }
            let on_1 = running_on(&status, "agent-1")
                .iter()
                .any(|(c, _)| c == name);
            assert!(
                !on_1,
                "the job runs on agent-1 again, beside agent-2: {status}"
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let served = wait(job.serve, MINUTE);
    assert!(served.status.success(), "serve: {}", served.stderr);
    let agent1_exited = job.agent1.exited();
    eprintln!(
        "late results discarded (status): {discarded}; agent-1 back in status after the link \
         came back: {agent1_back_after:.1?}; agent-1 exited by the end: {agent1_exited}"
    );
    let done = job.agent2.wait(MINUTE);
    assert!(done.status.success(), "agent-2: {}", done.stderr);
    if old_agent_comes_back {
        assert!(agent1_back_after.is_some(), "agent-1 did not reconnect");
        let a1 = job.agent1.wait(MINUTE);
        assert!(
            a1.status.success(),
            "a drained agent-1 exits 0: {}",
            a1.stderr
        );
    } else if agent1_exited {
        let a1 = job.agent1.wait(MINUTE);
        let said = a1
            .stderr
            .trim()
            .lines()
            .last()
            .unwrap_or_default()
            .to_owned();
        eprintln!("agent-1 exited ({}) saying: {said}", a1.status);
    }

    one_pass(&job.fleet, &served, name, 2, "agent-2");
    // One attempt's log, whole: one banner, and the build finished.
    let log = raw_log(&job.fleet.out(), "check", name);
    let banner = format!("[crater-at-home] {name}-0.1.0 with tool check");
    assert_eq!(log.matches(&banner).count(), 1, "{log}");
    assert!(log.contains("Finished"), "{log}");
}

#[test]
fn a_partition_shorter_than_the_lease_costs_nothing() {
    blip_shorter_than_the_lease(|host| {
        host.cut();
        std::thread::sleep(LEASE / 2);
        host.restore();
    });
}

/// The connection itself is lost (reset), not just quiet: the agent must connect again and
/// reclaim its running job within the lease, which must then finish where it was.
#[test]
fn a_dropped_connection_costs_nothing_when_the_agent_is_back_within_the_lease() {
    blip_shorter_than_the_lease(Host::reset_connections);
}

/// agent-1 runs a crate (15 s of build script) when `blip` hits its host; an idle agent-2 must
/// not get the job; it ends on agent-1, attempt 1, with its whole log.
fn blip_shorter_than_the_lease(blip: impl Fn(&Host)) {
    let name = "fixture-fleet-blip";
    // An idle agent-2 would get the job if the blip cost agent-1 its lease.
    let mut job = SlowJob::start(name, &ticking_build_rs(15));
    blip(&job.host1);
    let start = Instant::now();
    while !job.serve.exited() {
        assert!(start.elapsed() < 3 * MINUTE, "serve did not finish");
        if let Some(status) = job.fleet.status() {
            assert!(running_on(&status, "agent-2").is_empty(), "{status}");
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let served = wait(job.serve, MINUTE);
    assert!(served.status.success(), "serve: {}", served.stderr);
    for agent in [&mut job.agent1, &mut job.agent2] {
        let done = agent.wait(MINUTE);
        assert!(
            done.status.success(),
            "a drained agent exits 0: {}",
            done.stderr
        );
    }
    one_whole_pass(&job.fleet.out(), name, "agent-1", 15);
}

/// One slow crate running on agent-1 (host 1, CPU 0), with an idle agent-2 (host 2, CPU 1)
/// connected beside it, under `serve --lease-timeout LEASE --exit-when-done`. Fields drop in
/// this order: the agents, `serve`, then the hosts and the fleet they hang on.
struct SlowJob {
    agent2: Agent,
    agent1: Agent,
    serve: Running,
    _host2: Host,
    host1: Host,
    _crates: tempfile::TempDir,
    fleet: Fleet,
    /// When agent-1 was seen running the build script.
    started: Instant,
}

impl SlowJob {
    /// The local crate `name` with `build_rs` as its build script, running on agent-1.
    fn start(name: &str, build_rs: &str) -> SlowJob {
        let fleet = Fleet::new(false);
        let crates = tempfile::tempdir().unwrap();
        let slow = make_crate(crates.path(), name, "", Some(build_rs));
        let host1 = Host::new(&fleet.bridge, 1);
        let host2 = Host::new(&fleet.bridge, 2);
        let lease = format!("{}s", LEASE.as_secs());
        let serve = fleet.serve(&[
            "--tool",
            "check",
            "--exit-when-done",
            "--lease-timeout",
            &lease,
            "--local-crate",
            to_str(&slow),
        ]);
        let agent1 = fleet.agent(&host1, "agent-1", 0, &[]);
        // `ip netns exec` execs the agent in place (no fork): the pid becomes the agent's, the
        // one a test may kill.
        wait_until("`ip netns exec` to become crater-agent", MINUTE, || {
            std::fs::read_to_string(format!("/proc/{}/comm", agent1.pid))
                .is_ok_and(|comm| comm.trim() == "crater-agent")
        });
        wait_until("agent-1 to run the slow build script", 3 * MINUTE, || {
            build_script_running(agent1.pid)
        });
        let started = Instant::now();
        let agent2 = fleet.agent(&host2, "agent-2", 1, &[]);
        wait_until("agent-2 to connect", 2 * MINUTE, || {
            fleet
                .status()
                .is_some_and(|s| agent_names(&s).contains(&"agent-2".to_owned()))
        });
        SlowJob {
            agent2,
            agent1,
            serve,
            _host2: host2,
            host1,
            _crates: crates,
            fleet,
            started,
        }
    }
}

/// A build script that prints a line a second for `secs` seconds (cargo shows them when the
/// build script ends).
fn ticking_build_rs(secs: u32) -> String {
    format!(
        "fn main() {{\n    for i in 0..{secs} {{\n        println!(\"cargo::warning=tick {{i}}\");\n        \
         std::thread::sleep(std::time::Duration::from_secs(1));\n    }}\n}}\n"
    )
}

/// `name` passed as attempt 1 on `agent`, with its whole log: what the agent produced (its
/// length and SHA-256 matched, or the verdict would be `error`), one run of the job in it (one
/// banner), and each of its `ticks` once.
fn one_whole_pass(out: &Path, name: &str, agent: &str, ticks: u32) {
    let r = result(out, "check", name, "0.1.0");
    assert_eq!(r["status"], "pass", "{r}");
    assert_eq!(r["attempt"], 1, "{r}");
    assert_eq!(r["agent"], agent, "{r}");
    assert!(r.get("harness_error").is_none(), "{r}");
    let raw = std::fs::read(out.join(format!("check/raw/{name}/0.1.0"))).unwrap();
    let sha = sha2::Digest::finalize(<sha2::Sha256 as sha2::Digest>::new_with_prefix(&raw));
    assert_eq!(r["log_sha256"], hex::encode(sha), "{r}");
    assert_eq!(r["log_bytes"], raw.len(), "{r}");
    let log = String::from_utf8_lossy(&raw);
    let banner = format!("[crater-at-home] {name}-0.1.0 with tool check");
    assert_eq!(log.matches(&banner).count(), 1, "{log}");
    for i in 0..ticks {
        let tick = format!("tick {i}");
        let seen = log
            .lines()
            .filter(|l| l.trim_end().ends_with(&tick))
            .count();
        assert_eq!(seen, 1, "{tick}:\n{log}");
    }
}

/// `kill -9` of `serve` mid-run, then the same `serve` again: the agents reconnect on their
/// own, the crate finished before the kill is not run again, the one that was running is
/// reclaimed (it finishes on the same agent as attempt 1, with its whole log, and was never
/// stopped), and every crate ends with one result.
#[test]
fn a_coordinator_killed_mid_run_and_started_again_loses_nothing() {
    let fleet = Fleet::new(false);
    let crates = tempfile::tempdir().unwrap();
    let quick_name = "fixture-fleet-before-the-kill";
    let slow_name = "fixture-fleet-across-the-kill";
    let quick = make_crate(crates.path(), quick_name, PASSING_TEST, None);
    let slow = make_crate(crates.path(), slow_name, "", Some(&ticking_build_rs(25)));
    let host1 = Host::new(&fleet.bridge, 1);
    let host2 = Host::new(&fleet.bridge, 2);
    // Long enough for an agent's backoff to find the new coordinator within it.
    let lease = format!("{}s", 2 * LEASE.as_secs());
    let args = [
        "--tool",
        "check",
        "--exit-when-done",
        "--lease-timeout",
        &lease,
        "--local-crate",
        to_str(&quick),
        "--local-crate",
        to_str(&slow),
    ];
    let first = fleet.serve(&args);
    let mut agent1 = fleet.agent(&host1, "agent-1", 0, &[]);
    let mut agent2 = fleet.agent(&host2, "agent-2", 1, &[]);
    let out = fleet.out();
    let quick_stored = out.join(format!("check/results/{quick_name}/0.1.0.json"));
    wait_until("the quick crate to be stored", 3 * MINUTE, || {
        quick_stored.exists()
    });
    let status = fleet.status().expect("the first serve answers");
    let runner = ["agent-1", "agent-2"]
        .into_iter()
        .find(|a| running_on(&status, a).iter().any(|(c, _)| c == slow_name))
        .unwrap_or_else(|| panic!("the slow crate runs on no agent: {status}"));
    let runner_pid = if runner == "agent-1" {
        agent1.pid
    } else {
        agent2.pid
    };
    wait_until("the slow build script to run", 2 * MINUTE, || {
        build_script_running(runner_pid)
    });

    let killed = Command::new("kill")
        .args(["-KILL", &first.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let first = wait(first, MINUTE);
    assert!(!first.status.success(), "killed");
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        build_script_running(runner_pid),
        "the job runs on while the coordinator is gone"
    );
    let second = fleet.serve(&args);
    let served = wait(second, 3 * MINUTE);
    assert!(served.status.success(), "serve again: {}", served.stderr);
    eprintln!("the second serve said:\n{}", served.stderr);
    assert!(
        served.stderr.contains("1 already finished"),
        "{}",
        served.stderr
    );
    assert_eq!(
        finished_lines(&served.stderr, quick_name, "0.1.0"),
        0,
        "the quick crate is not run again"
    );
    assert_eq!(finished_lines(&served.stderr, slow_name, "0.1.0"), 1);
    for agent in [&mut agent1, &mut agent2] {
        let done = agent.wait(MINUTE);
        assert!(
            done.status.success(),
            "the agents reconnected by themselves and were drained at the end: {}",
            done.stderr
        );
    }
    let mut expected = vec![
        (quick_name.to_owned(), "0.1.0".to_owned(), "pass".to_owned()),
        (slow_name.to_owned(), "0.1.0".to_owned(), "pass".to_owned()),
    ];
    expected.sort();
    assert_eq!(all_results(&out, "check"), expected);
    assert_eq!(result(&out, "check", quick_name, "0.1.0")["attempt"], 1);
    one_whole_pass(&out, slow_name, runner, 25);
}

/// An outside gRPC client over TLS (the fleet's CA) with `token` as bearer metadata: what a
/// hostile or broken agent can send, without `crater-agent`'s manners.
struct RawAgent {
    rt: tokio::runtime::Runtime,
    tx: Option<tokio::sync::mpsc::Sender<pb::AgentMessage>>,
    /// Every Assign received, and how the stream ended (None: still open).
    assigns: Arc<Mutex<Vec<pb::Assign>>>,
    ended: Arc<Mutex<Option<String>>>,
    /// Cleared by [`RawAgent::go_silent`]: no more heartbeats.
    beating: Arc<std::sync::atomic::AtomicBool>,
}

fn hello(name: &str, slots: u32) -> pb::AgentMessage {
    msg(AgentMsg::Hello(pb::Hello {
        agent_name: name.to_owned(),
        protocol_version: crater_proto::PROTOCOL_VERSION,
        agent_version: "0.0.0-test".to_owned(),
        slots,
        memory_per_slot_bytes: 2 << 30,
        tools: vec!["check".into(), "test".into()],
        targets: vec!["x86_64-unknown-linux-gnu".into()],
        ..Default::default()
    }))
}

fn msg(m: AgentMsg) -> pb::AgentMessage {
    pb::AgentMessage { msg: Some(m) }
}

/// A tonic client for `url`: TLS with `ca` unless `url` is http://, `token` as bearer.
async fn raw_client(
    url: &str,
    ca: Option<&str>,
    token: Option<&str>,
) -> Result<
    pb::coordinator_client::CoordinatorClient<
        tonic::service::interceptor::InterceptedService<
            tonic::transport::Channel,
            impl tonic::service::Interceptor,
        >,
    >,
    String,
> {
    use tonic::transport::{Certificate, ClientTlsConfig, Endpoint};
    let mut endpoint = Endpoint::from_shared(url.to_owned())
        .map_err(|e| e.to_string())?
        .connect_timeout(Duration::from_secs(10));
    if let Some(ca) = ca {
        let pem = std::fs::read(ca).unwrap();
        endpoint = endpoint
            .tls_config(ClientTlsConfig::new().ca_certificate(Certificate::from_pem(pem)))
            .map_err(|e| e.to_string())?;
    }
    let channel = endpoint.connect().await.map_err(|e| format!("{e:?}"))?;
    let bearer: Option<tonic::metadata::AsciiMetadataValue> =
        token.map(|t| format!("Bearer {t}").parse().unwrap());
    Ok(pb::coordinator_client::CoordinatorClient::with_interceptor(
        channel,
        move |mut request: tonic::Request<()>| {
            if let Some(value) = &bearer {
                request
                    .metadata_mut()
                    .insert("authorization", value.clone());
            }
            Ok(request)
        },
    ))
}

impl RawAgent {
    /// Opens a Work stream with `first` as its first message; the refusal's message when the
    /// coordinator refuses it.
    fn connect(
        url: &str,
        ca: Option<&str>,
        token: Option<&str>,
        first: pb::AgentMessage,
    ) -> Result<RawAgent, String> {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let assigns = Arc::new(Mutex::new(Vec::new()));
        let ended = Arc::new(Mutex::new(None));
        let (tx, rx) = tokio::sync::mpsc::channel(1024);
        let connected = rt.block_on(async {
            let mut client = raw_client(url, ca, token).await?;
            tx.send(first).await.unwrap();
            let work = client.work(tokio_stream::wrappers::ReceiverStream::new(rx));
            let mut inbound = tokio::time::timeout(Duration::from_secs(30), work)
                .await
                .map_err(|_| "no answer to the Work call within 30 s".to_owned())?
                .map_err(|s| format!("{:?}: {}", s.code(), s.message()))?
                .into_inner();
            match tokio::time::timeout(Duration::from_secs(30), inbound.message()).await {
                Ok(Ok(Some(pb::CoordinatorMessage {
                    msg: Some(CoordMsg::Welcome(_)),
                }))) => Ok(inbound),
                Ok(Err(s)) => Err(format!("{:?}: {}", s.code(), s.message())),
                other => Err(format!("no Welcome: {other:?}")),
            }
        });
        let mut inbound = connected?;
        // Heartbeats keep its leases while the test takes its time; they stop with `close` or
        // `go_silent`.
        let beats = tx.downgrade();
        let beating = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let still_beating = beating.clone();
        rt.spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(3)).await;
                if !still_beating.load(std::sync::atomic::Ordering::SeqCst) {
                    return;
                }
                let Some(tx) = beats.upgrade() else { return };
                let beat = msg(AgentMsg::Heartbeat(pb::Heartbeat::default()));
                if tx.send(beat).await.is_err() {
                    return;
                }
            }
        });
        let (assigns_in, ended_in) = (assigns.clone(), ended.clone());
        rt.spawn(async move {
            let why = loop {
                match inbound.message().await {
                    Ok(Some(pb::CoordinatorMessage {
                        msg: Some(CoordMsg::Assign(a)),
                    })) => assigns_in.lock().unwrap().push(a),
                    Ok(Some(_)) => {}
                    Ok(None) => break "closed by the coordinator".to_owned(),
                    Err(s) => break format!("{:?}: {}", s.code(), s.message()),
                }
            };
            *ended_in.lock().unwrap() = Some(why);
        });
        Ok(RawAgent {
            rt,
            tx: Some(tx),
            assigns,
            ended,
            beating,
        })
    }

    /// No more heartbeats: an agent that hangs with its connection open.
    fn go_silent(&self) {
        (self.beating).store(false, std::sync::atomic::Ordering::SeqCst);
    }

    /// Sends `m`; false once the stream is gone.
    fn send(&self, m: pb::AgentMessage) -> bool {
        let tx = self.tx.as_ref().expect("not closed");
        self.rt.block_on(tx.send(m)).is_ok()
    }

    fn assigns(&self) -> Vec<pb::Assign> {
        self.assigns.lock().unwrap().clone()
    }

    fn ended(&self) -> Option<String> {
        self.ended.lock().unwrap().clone()
    }

    /// Ends the stream from this side (as a vanished agent would) and lets the runtime go.
    fn close(mut self) {
        self.tx = None;
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// The other half of a long partition, which `crater-agent` cannot show today (it gives up its
/// job when its stream ends): an agent whose lease expired sends its result anyway. An outside
/// client plays that agent: it takes the job, logs a little, falls silent with its connection
/// open; the job moves to agent-2 within the lease; then the silent one sends the rest of its
/// log and a well-formed JobDone. Only agent-2's result is stored.
#[test]
fn a_late_result_from_an_expired_lease_is_discarded() {
    let fleet = Fleet::new(false);
    let crates = tempfile::tempdir().unwrap();
    let name = "fixture-fleet-late";
    let fixture = make_crate(crates.path(), name, "", Some(&sleeping_build_rs(3)));
    let host2 = Host::new(&fleet.bridge, 2);
    let lease = format!("{}s", LEASE.as_secs());
    let mut serve = fleet.serve(&[
        "--tool",
        "check",
        "--exit-when-done",
        "--lease-timeout",
        &lease,
        "--local-crate",
        to_str(&fixture),
    ]);
    let silent = RawAgent::connect(
        &fleet.url(),
        Some(&fleet.file("ca.pem")),
        Some(&fleet.token("agent-token")),
        hello("agent-1", 1),
    )
    .expect("an agent token admits the outside client");
    assert!(silent.send(msg(AgentMsg::WantWork(pb::WantWork { slot: 0 }))));
    wait_until("the outside client to get the job", MINUTE, || {
        !silent.assigns().is_empty()
    });
    let held = silent.assigns()[0].clone();
    let late_log = b"LATE-LOG from an expired lease\r\n".repeat(100);
    let chunk = |offset: usize, data: &[u8]| {
        msg(AgentMsg::LogChunk(pb::LogChunk {
            job_id: held.job_id,
            attempt: held.attempt,
            offset: offset as u64,
            data: data.to_vec(),
        }))
    };
    let half = late_log.len() / 2;
    assert!(silent.send(chunk(0, &late_log[..half])));
    let mut agent2 = fleet.agent(&host2, "agent-2", 1, &[]);
    wait_until("agent-2 to connect", 2 * MINUTE, || {
        fleet
            .status()
            .is_some_and(|s| agent_names(&s).contains(&"agent-2".to_owned()))
    });

    silent.go_silent();
    let latency = time_until_running_on(&fleet, name, "agent-2", 2 * MINUTE);
    eprintln!("silent agent (connection open) -> job running on agent-2: {latency:.1?}");
    assert!(
        latency <= LEASE + REASSIGN_SLACK,
        "the job moved after {latency:?}, more than the lease timeout {LEASE:?} + {REASSIGN_SLACK:?}"
    );

    // The late result: the rest of the log and a JobDone that adds up.
    silent.send(chunk(half, &late_log[half..]));
    let sha = sha2::Digest::finalize(<sha2::Sha256 as sha2::Digest>::new_with_prefix(&late_log));
    silent.send(msg(AgentMsg::JobDone(pb::JobDone {
        job_id: held.job_id,
        attempt: held.attempt,
        exit_code: 0,
        duration_ms: 1000,
        log_bytes: late_log.len() as u64,
        log_sha256: hex::encode(sha),
        tries: 1,
        slot: 0,
        ..Default::default()
    })));
    let start = Instant::now();
    let mut discarded = 0;
    while !serve.exited() {
        assert!(start.elapsed() < 2 * MINUTE, "serve did not finish");
        if let Some(status) = fleet.status() {
            discarded = discarded.max(status["results_discarded"].as_u64().unwrap_or(0));
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    eprintln!(
        "late results discarded (status): {discarded}; the silent client's stream: {}",
        silent.ended().unwrap_or("still open".into())
    );
    let served = wait(serve, MINUTE);
    assert!(served.status.success(), "serve: {}", served.stderr);
    let done = agent2.wait(MINUTE);
    assert!(done.status.success(), "agent-2: {}", done.stderr);
    one_pass(&fleet, &served, name, 2, "agent-2");
    let log = raw_log(&fleet.out(), "check", name);
    assert!(!log.contains("LATE-LOG"), "{log}");
    silent.close();
}

#[test]
fn refusals_on_the_fleet_port() {
    // tls.rs covers `status` (agent token, wrong and missing tokens, plain http, another CA);
    // agent-cli tests cover an agent refusing plain http or a missing token off loopback before
    // it connects. Here: what the fleet port refuses to agents, and that nothing is assigned.
    let fleet = Fleet::new(false);
    let crates = tempfile::tempdir().unwrap();
    let fixture = make_crate(crates.path(), "fixture-fleet-refused", PASSING_TEST, None);
    let host1 = Host::new(&fleet.bridge, 1);
    let host2 = Host::new(&fleet.bridge, 2);
    let host3 = Host::new(&fleet.bridge, 3);
    let serve = fleet.serve(&["--tool", "check", "--local-crate", to_str(&fixture)]);
    let status_token = fleet.file("status-token");
    let other_agent_token = fleet.other_fleet_file("agent-token");
    let other_ca = fleet.other_fleet_file("ca.pem");

    // Real agents, in parallel (each starts its container before it says hello).
    let started = Instant::now();
    let mut with_status_token = fleet.agent(&host1, "agent-1", 0, &["--token-file", &status_token]);
    let mut with_wrong_token =
        fleet.agent(&host2, "agent-2", 1, &["--token-file", &other_agent_token]);
    let mut trusting_another_ca = fleet.agent(&host3, "agent-3", 0, &["--ca-cert", &other_ca]);
    let refused = [
        (
            "an agent with the status token",
            with_status_token.wait(3 * MINUTE),
            &[
                "this call needs an agent token",
                "not one of this coordinator's agent tokens",
            ][..],
        ),
        (
            "an agent with another fleet's agent token",
            with_wrong_token.wait(3 * MINUTE),
            &["this call needs an agent token", "not one of"][..],
        ),
        (
            "an agent trusting another fleet's CA",
            trusting_another_ca.wait(3 * MINUTE),
            &["certificate"][..],
        ),
    ];
    eprintln!(
        "three refused agents exited within {:.1?}",
        started.elapsed()
    );
    let tokens = [
        fleet.token("agent-token"),
        fleet.token("status-token"),
        token_in(Path::new(&other_agent_token)),
    ];
    for (what, finished, words) in &refused {
        eprintln!(
            "{what}: {}, saying: {}",
            finished.status,
            finished.stderr.trim().lines().last().unwrap_or_default()
        );
        assert!(
            !finished.status.success(),
            "{what} exited 0:\n{}",
            finished.stderr
        );
        for word in *words {
            assert!(
                finished.stderr.contains(word),
                "{what}: its message should say `{word}`:\n{}",
                finished.stderr
            );
        }
        for token in &tokens {
            assert!(!finished.stderr.contains(token), "{what} printed a token");
        }
    }

    // Outside clients: no token, a protocol from the future, plain text to the TLS port.
    let (url, ca) = (fleet.url(), fleet.file("ca.pem"));
    let agent_token = fleet.token("agent-token");
    let no_token = RawAgent::connect(&url, Some(&ca), None, hello("no-token", 1))
        .err()
        .expect("a Work stream without a token is refused");
    assert!(
        no_token.contains("Unauthenticated") && no_token.contains("needs an agent token"),
        "{no_token}"
    );
    let future = crater_proto::PROTOCOL_VERSION + 1;
    let mut from_the_future = hello("from-the-future", 1);
    if let Some(AgentMsg::Hello(h)) = &mut from_the_future.msg {
        h.protocol_version = future;
    }
    let refusal = RawAgent::connect(&url, Some(&ca), Some(&agent_token), from_the_future)
        .err()
        .expect("a Hello with a protocol from the future is refused");
    assert!(
        refusal.contains(&format!("protocol {future}"))
            && refusal.contains(&format!("protocol {}", crater_proto::PROTOCOL_VERSION)),
        "the refusal names both versions: {refusal}"
    );
    let plain = format!("http://{}", fleet.address());
    let plain_text = RawAgent::connect(&plain, None, Some(&agent_token), hello("plain", 1))
        .err()
        .expect("plain text to the TLS port is refused");
    eprintln!("plain text to the TLS port: {plain_text}");

    // Nothing was assigned and nobody stayed connected.
    let status = fleet.status().expect("serve is up");
    assert_eq!(status["total"], 1, "{status}");
    assert_eq!(status["queued"], 1, "{status}");
    assert_eq!(status["running"], 0, "{status}");
    assert_eq!(status["finished"], 0, "{status}");
    assert_eq!(status["agents"], serde_json::json!([]), "{status}");
    assert!(all_results(&fleet.out(), "check").is_empty());

    let pid = serve.id().to_string();
    assert!(Command::new("kill").arg(&pid).status().unwrap().success());
    let stopped = wait(serve, MINUTE);
    for token in &tokens {
        assert!(!stopped.stderr.contains(token), "serve logged a token");
    }
}

/// Every file under `dir`, with its length (apparent size: a sparse file counts in full).
fn files_with_sizes(dir: &Path) -> Vec<(PathBuf, u64)> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return found;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        match entry.metadata() {
            Ok(m) if m.is_dir() => found.extend(files_with_sizes(&path)),
            Ok(m) => found.push((path, m.len())),
            Err(_) => {}
        }
    }
    found
}

/// `--max-log-bytes 1MiB` and the tail a log keeps: what one job's spooled log may reach.
const SPOOL_BOUND: u64 = 2 << 20;

fn assert_spool_bounded(out: &Path, when: &str) {
    for (path, len) in files_with_sizes(&out.join(".spool")) {
        assert!(
            len <= SPOOL_BOUND + (64 << 10),
            "{when}: {} is {len} bytes, past the log cap",
            path.display()
        );
    }
}

#[test]
fn a_misbehaving_agent_cannot_hurt_the_coordinator() {
    let fleet = Fleet::new(false);
    let crates = tempfile::tempdir().unwrap();
    // Busy long enough that a forged JobDone arrives while the real job runs.
    let busy = sleeping_build_rs(6);
    let fixtures = [
        ("fixture-fleet-bad-a", PASSING_TEST, "pass"),
        ("fixture-fleet-bad-b", BUILD_ERROR, "build-fail"),
        ("fixture-fleet-bad-c", FAILING_TEST, "test-fail"),
        ("fixture-fleet-bad-d", PASSING_TEST, "pass"),
    ];
    let mut args = vec![
        "--tool",
        "test",
        "--exit-when-done",
        "--max-log-bytes",
        "1MiB",
    ];
    let dirs: Vec<PathBuf> = fixtures
        .iter()
        .map(|(name, lib, _)| make_crate(crates.path(), name, lib, Some(&busy)))
        .collect();
    for dir in &dirs {
        args.extend(["--local-crate", to_str(dir)]);
    }
    let host1 = Host::new(&fleet.bridge, 1);
    let mut serve = fleet.serve(&args);
    let out = fleet.out();
    let bad_name = "bad\u{1b}]0;title\u{7}agent";
    let bad = RawAgent::connect(
        &fleet.url(),
        Some(&fleet.file("ca.pem")),
        Some(&fleet.token("agent-token")),
        hello(bad_name, 1),
    )
    .expect("an agent token admits the outside client");

    // WantWork for a slot it did not declare: nothing.
    assert!(bad.send(msg(AgentMsg::WantWork(pb::WantWork { slot: 7 }))));
    std::thread::sleep(Duration::from_secs(1));
    assert!(bad.assigns().is_empty(), "slot 7 got {:?}", bad.assigns());
    // Slot 0, over and over: one job.
    for _ in 0..100 {
        if !bad.send(msg(AgentMsg::WantWork(pb::WantWork { slot: 0 }))) {
            break;
        }
    }
    wait_until("an Assign for slot 0", 30 * Duration::from_secs(1), || {
        !bad.assigns().is_empty()
    });
    std::thread::sleep(Duration::from_secs(2));
    let assigns = bad.assigns();
    assert_eq!(
        assigns.len(),
        1,
        "a 1-slot agent holds one job: {assigns:?}"
    );
    let held = assigns[0].clone();
    assert_eq!(held.slot, 0);
    let status = fleet.status().expect("serve is up");
    assert_eq!(status["running"], 1, "{status}");
    assert_eq!(status["queued"], 3, "{status}");
    let bad_in_status: Vec<&Value> = (status["agents"].as_array().unwrap().iter())
        .filter(|a| a["name"].as_str().is_some_and(|n| n.contains("titleagent")))
        .collect();
    assert_eq!(bad_in_status.len(), 1, "{status}");
    assert_eq!(
        bad_in_status[0]["running"].as_array().unwrap().len(),
        1,
        "{status}"
    );

    // Its log: more bytes than the cap, in order from offset 0.
    let chunk = |job: &pb::Assign, offset: u64, len: usize| {
        msg(AgentMsg::LogChunk(pb::LogChunk {
            job_id: job.job_id,
            attempt: job.attempt,
            offset,
            data: vec![b'x'; len],
        }))
    };
    let piece = 512 << 10;
    for i in 0..12u64 {
        if !bad.send(chunk(&held, i * piece as u64, piece)) {
            break;
        }
    }
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        out.join(".spool").is_dir(),
        "the spool is where this test looks"
    );
    assert_spool_bounded(&out, "after 6 MiB of log for a 1 MiB cap");
    eprintln!(
        "spool after 6 MiB for a 1 MiB cap: {:?}",
        files_with_sizes(&out.join(".spool"))
    );

    // Another outside client (a spool refuses a log after its first bad chunk, so the cap and
    // the offset each get a job of their own): a chunk a terabyte in, then one at 0.
    let sparse = RawAgent::connect(
        &fleet.url(),
        Some(&fleet.file("ca.pem")),
        Some(&fleet.token("agent-token")),
        hello("sparse", 1),
    )
    .expect("an agent token admits the outside client");
    assert!(sparse.send(msg(AgentMsg::WantWork(pb::WantWork { slot: 0 }))));
    wait_until(
        "an Assign for the second client",
        30 * Duration::from_secs(1),
        || !sparse.assigns().is_empty(),
    );
    let sparse_held = sparse.assigns()[0].clone();
    sparse.send(chunk(&sparse_held, 1 << 40, 64 << 10));
    sparse.send(chunk(&sparse_held, 0, 64 << 10));
    std::thread::sleep(Duration::from_secs(1));
    assert_spool_bounded(&out, "after a chunk at offset 1 TiB");
    eprintln!(
        "spool after a chunk 1 TiB in: {:?}",
        files_with_sizes(&out.join(".spool"))
    );
    assert!(fleet.status().is_some(), "serve is up");

    // A real agent runs the rest meanwhile.
    let mut agent = fleet.agent(&host1, "agent-1", 0, &[]);
    let mut victim = None;
    wait_until("agent-1 to run a crate", 3 * MINUTE, || {
        victim = fleet
            .status()
            .and_then(|s| running_on(&s, "agent-1").into_iter().next());
        victim.is_some()
    });
    let (victim_crate, victim_job) = victim.unwrap();
    // JobDone for the job agent-1 holds (both attempts), for a job that does not exist and for
    // its own job with an attempt it was not given.
    for (job_id, attempt) in [
        (victim_job, 1),
        (victim_job, 2),
        (1 << 50, 1),
        (held.job_id, held.attempt + 1),
    ] {
        bad.send(msg(AgentMsg::JobDone(pb::JobDone {
            job_id,
            attempt,
            exit_code: 0,
            duration_ms: 1,
            log_bytes: 0,
            slot: 0,
            tries: 1,
            ..Default::default()
        })));
    }
    // And a Release of it: neither may end agent-1's lease or touch its spooled log (its
    // verdict below would be an `error` for a log with a hole).
    bad.send(msg(AgentMsg::Release(pb::Release {
        job_id: victim_job,
        attempt: 1,
    })));
    std::thread::sleep(Duration::from_secs(1));
    let status = fleet.status().expect("serve is up");
    assert!(
        running_on(&status, "agent-1")
            .iter()
            .any(|(_, j)| *j == victim_job),
        "agent-1 still holds its job after the forged JobDone: {status}"
    );
    let held_crate = held.krate.as_ref().unwrap().name.clone();
    for name in [&victim_crate, &held_crate] {
        assert!(
            !out.join(format!("test/results/{name}/0.1.0.json")).exists(),
            "a forged JobDone stored a result for {name}"
        );
    }

    // Its name, escape sequences and all, reaches the status table only as printable text.
    let table = fleet.status_table();
    let text = String::from_utf8_lossy(&table);
    assert!(!table.contains(&0x1b), "ESC in the status table:\n{text:?}");
    assert!(!table.contains(&0x07), "BEL in the status table:\n{text:?}");
    assert!(
        text.contains("titleagent"),
        "the bad agent is listed:\n{text}"
    );
    assert!(bad.assigns().len() <= 1, "{:?}", bad.assigns());
    eprintln!(
        "the outside client's stream: {:?}",
        bad.ended().unwrap_or("still open".into())
    );

    // They go away; their jobs go to agent-1 and everything finishes.
    bad.close();
    sparse.close();
    let start = Instant::now();
    while !serve.exited() {
        assert!(start.elapsed() < 4 * MINUTE, "serve did not finish");
        assert_spool_bounded(&out, "while agent-1 works");
        std::thread::sleep(Duration::from_millis(500));
    }
    let served = wait(serve, MINUTE);
    assert!(served.status.success(), "serve: {}", served.stderr);
    let done = agent.wait(MINUTE);
    assert!(done.status.success(), "agent-1: {}", done.stderr);
    let mut expected: Vec<(String, String, String)> = fixtures
        .iter()
        .map(|(name, _, verdict)| (name.to_string(), "0.1.0".into(), verdict.to_string()))
        .collect();
    expected.sort();
    assert_eq!(all_results(&out, "test"), expected);
    for (name, _, _) in &expected {
        let r = result(&out, "test", name, "0.1.0");
        assert_eq!(r["agent"], "agent-1", "{r}");
        let sparse_crate = &sparse_held.krate.as_ref().unwrap().name;
        let attempt = if *name == held_crate || name == sparse_crate {
            2
        } else {
            1
        };
        assert_eq!(r["attempt"], attempt, "{r}");
        assert_eq!(
            finished_lines(&served.stderr, name, "0.1.0"),
            1,
            "{}",
            served.stderr
        );
    }
    assert!(!served.stderr.contains("panicked"), "{}", served.stderr);
}
