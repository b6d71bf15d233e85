//! Helpers for the end-to-end tests: the real binaries, the real Docker engine, real crates.
#![allow(dead_code)] // each test binary uses its own subset
pub mod browser;
pub mod garage;
pub mod html_check;
pub mod install;
pub mod netns;
pub mod s3;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub fn coordinator_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_crater-at-home"))
}

/// `crater-agent` is built beside `crater-at-home` by `cargo test --workspace`.
pub fn agent_bin() -> PathBuf {
    let path = coordinator_bin().with_file_name("crater-agent");
    assert!(
        path.exists(),
        "{} is missing: run the tests with `cargo test --workspace`",
        path.display()
    );
    path
}

/// Builds the worker image once for all tests (the build script also locks across processes).
pub fn ensure_image() {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        let out = Command::new(coordinator_bin())
            .args(["image", "build"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "building the worker image failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    });
}

pub struct Finished {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

/// A started process, killed if the test fails before [`wait`] takes it, so a failing test
/// leaves no coordinator or agent behind.
pub struct Running(Option<Child>);

impl Running {
    pub fn id(&self) -> u32 {
        self.0.as_ref().expect("not waited for yet").id()
    }

    /// Whether the process has ended (its output is still there for [`wait`]).
    pub fn exited(&mut self) -> bool {
        let child = self.0.as_mut().expect("not waited for yet");
        child.try_wait().unwrap().is_some()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Starts `program ARGS` with its output captured (read it with [`wait`]).
pub fn spawn(program: &Path, args: &[&str]) -> Running {
    spawn_with_env(program, args, &[])
}

/// [`spawn`] with extra environment variables.
pub fn spawn_with_env(program: &Path, args: &[&str], env: &[(String, String)]) -> Running {
    let child = Command::new(program)
        .args(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    Running(Some(child))
}

/// Runs `crater-at-home ARGS` to the end (at most `deadline`).
pub fn run(args: &[&str], deadline: Duration) -> Finished {
    ensure_image();
    wait(spawn(&coordinator_bin(), args), deadline)
}

/// Waits for `running`, killing it and failing the test past `deadline`.
pub fn wait(mut running: Running, deadline: Duration) -> Finished {
    let mut child = running.0.take().expect("waited for once");
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            let stderr = err_reader.join().unwrap();
            panic!("still running after {deadline:?}; stderr:\n{stderr}");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    Finished {
        status,
        stdout: out_reader.join().unwrap(),
        stderr: err_reader.join().unwrap(),
    }
}

/// Writes a crate `name` 0.1.0 under `root` with the given `src/lib.rs` and optional `build.rs`.
pub fn make_crate(root: &Path, name: &str, lib_rs: &str, build_rs: Option<&str>) -> PathBuf {
    let dir = root.join(name);
    std::fs::create_dir_all(dir.join("src")).unwrap();
    std::fs::write(
        dir.join("Cargo.toml"),
        format!("[package]\nname = \"{name}\"\nversion = \"0.1.0\"\nedition = \"2021\"\n"),
    )
    .unwrap();
    std::fs::write(dir.join("src/lib.rs"), lib_rs).unwrap();
    if let Some(build_rs) = build_rs {
        std::fs::write(dir.join("build.rs"), build_rs).unwrap();
    }
    dir
}

/// A build script that takes `secs` seconds: a crate that is busy for a known time.
pub fn sleeping_build_rs(secs: u64) -> String {
    format!("fn main() {{ std::thread::sleep(std::time::Duration::from_secs({secs})); }}\n")
}

pub fn result(out: &Path, tool: &str, name: &str, version: &str) -> serde_json::Value {
    let path = out.join(format!("{tool}/results/{name}/{version}.json"));
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("no result at {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

/// Every JSON verdict in the store for `tool`, as (crate, version, status).
pub fn all_results(out: &Path, tool: &str) -> Vec<(String, String, String)> {
    let mut found = Vec::new();
    let dir = out.join(tool).join("results");
    let Ok(crates) = std::fs::read_dir(&dir) else {
        return found;
    };
    for krate in crates {
        let krate = krate.unwrap();
        for file in std::fs::read_dir(krate.path()).unwrap() {
            let path = file.unwrap().path();
            let json: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
            found.push((
                json["crate"].as_str().unwrap().to_owned(),
                json["version"].as_str().unwrap().to_owned(),
                json["status"].as_str().unwrap().to_owned(),
            ));
        }
    }
    found.sort();
    found
}

/// Containers (all states) owned by process `pid`.
pub fn containers_of(pid: u32) -> Vec<String> {
    docker(&[
        "ps",
        "-aq",
        "--filter",
        &format!("label=org.crater-at-home.owner-pid={pid}"),
    ])
    .lines()
    .map(str::to_owned)
    .collect()
}

pub fn docker(args: &[&str]) -> String {
    let out = Command::new("docker").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "docker {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Polls `condition` every 200 ms until it holds, failing the test after `deadline`.
pub fn wait_until(what: &str, deadline: Duration, mut condition: impl FnMut() -> bool) {
    let start = Instant::now();
    while !condition() {
        assert!(start.elapsed() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A free loopback port.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub const SMALL: &[&str] = &["--memory-gb", "2"];

pub fn to_str(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// `run` over `crates` (directories, in this order) with extra flags, to the end; the results
/// directory.
pub fn run_fixtures(flags: &[&str], crates: &[PathBuf]) -> (tempfile::TempDir, Finished) {
    let out = tempfile::tempdir().unwrap();
    let mut args = vec!["run", "--out", to_str(out.path())];
    args.extend(flags);
    for dir in crates {
        args.extend(["--local-crate", to_str(dir)]);
    }
    let finished = run(&args, Duration::from_secs(600));
    assert!(finished.status.success(), "{}", finished.stderr);
    (out, finished)
}

/// The raw log of local fixture `name` 0.1.0.
pub fn raw_log(out: &Path, tool: &str, name: &str) -> String {
    String::from_utf8_lossy(&std::fs::read(out.join(format!("{tool}/raw/{name}/0.1.0"))).unwrap())
        .into_owned()
}
