//! Crates that attack the harness, against the real sandbox: each gets the verdict its own
//! behaviour deserves, and a clean crate after it in the same container passes and finds nothing
//! it left. docker/worker.sh's header says what the sandbox promises; these hold it to that.

mod common;

use common::*;
use std::path::Path;
use std::time::Duration;

const MINUTES: Duration = Duration::from_secs(60);

/// A library that does not compile: whatever its build script did, the verdict is build-fail.
const BROKEN_LIB: &str = "pub fn broken() -> u8 { \"not a number\" }\n";

/// A build script that attacks the harness and reports each attempt as a cargo warning.
const ATTACKER_BUILD_RS: &str = r#"
use std::fs::{self, Permissions};
use std::os::unix::fs::PermissionsExt;

fn report(what: &str, result: std::io::Result<()>) {
    let said = match result {
        Ok(()) => "SUCCEEDED".to_owned(),
        Err(e) => format!("failed ({e})"),
    };
    println!("cargo::warning=attack {what}: {said}");
}

fn read(path: &str) -> std::io::Result<()> {
    fs::read(path).map(|_| ())
}

fn main() {
    // Forge the loop's bookkeeping, where it used to live and where it lives now.
    report("forge /tmp/.crater-result", fs::write("/tmp/.crater-result", "- 0 0 0\n"));
    report("forge /tmp/.crater-peak", fs::write("/tmp/.crater-peak", "x y z\n"));
    report("forge /run/crater", fs::write("/run/crater/result", "- 0 0 0\n"));
    report("list /run/crater", fs::read_dir("/run/crater").map(|_| ()));
    // Read the loop's memory, environment and open files, to find the end line's nonce.
    report("read /proc/1/environ", read("/proc/1/environ"));
    report("read /proc/1/mem", read("/proc/1/mem"));
    report("list /proc/1/fd", fs::read_dir("/proc/1/fd").map(|_| ()));
    report("read /proc/1/stack", read("/proc/1/stack"));
    // Miri's sysroot, kept between crates.
    report("write the Miri sysroot", fs::write("/opt/miri-sysroot/planted", "x"));
    // The folders crates write to, themselves.
    for dir in ["/build", "/cargo", "/tmp"] {
        report(&format!("chmod {dir}"), fs::set_permissions(dir, Permissions::from_mode(0o555)));
    }
    // Cargo configs for the next crate, behind read-only folders.
    let wrapper = "[build]\nrustc-wrapper = \"/bin/false\"\n";
    fs::create_dir_all("/build/.cargo").unwrap();
    fs::write("/build/.cargo/config.toml", wrapper).unwrap();
    fs::set_permissions("/build/.cargo", Permissions::from_mode(0o555)).unwrap();
    report("plant /cargo/config.toml", fs::write("/cargo/config.toml", wrapper));
    fs::create_dir_all("/cargo/planted-ro/deeper").unwrap();
    fs::write("/cargo/planted-ro/deeper/config.toml", wrapper).unwrap();
    fs::set_permissions("/cargo/planted-ro/deeper", Permissions::from_mode(0o000)).unwrap();
    fs::set_permissions("/cargo/planted-ro", Permissions::from_mode(0o500)).unwrap();
    // Odd things in /tmp and shared memory: a FIFO, a socket, a sticky read-only folder, a hard
    // link, a file with no permissions.
    let mkfifo = std::process::Command::new("mkfifo").arg("/tmp/planted-fifo").status();
    report("mkfifo", mkfifo.map(|_| ()));
    let socket = std::os::unix::net::UnixListener::bind("/tmp/planted-socket");
    report("bind a socket", socket.map(std::mem::forget));
    fs::create_dir_all("/tmp/planted-sticky/inner").unwrap();
    fs::write("/tmp/planted-sticky/inner/file", "x").unwrap();
    fs::set_permissions("/tmp/planted-sticky", Permissions::from_mode(0o1555)).unwrap();
    fs::write("/tmp/planted-file", "x").unwrap();
    report("hard link", fs::hard_link("/tmp/planted-file", "/tmp/planted-link"));
    fs::set_permissions("/tmp/planted-file", Permissions::from_mode(0o000)).unwrap();
    report("write /dev/shm", fs::write("/dev/shm/planted-shm", "x"));
    // A process that hides and waits for the next crate (detached from cargo's pipes, or cargo
    // would wait for it).
    let daemon = std::process::Command::new("sh")
        .args(["-c", "trap '' HUP TERM; sleep 3600"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn();
    report("start a daemon", daemon.map(std::mem::forget));
}
"#;

/// A build script that fails if it finds anything an earlier crate left, and lists what it saw.
const INSPECTOR_BUILD_RS: &str = r#"
use std::path::Path;

fn walk(dir: &Path, found: &mut Vec<String>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let path = entry.path();
        let text = path.display().to_string();
        if text.contains("planted") || text.starts_with("/build/.cargo")
            || text == "/cargo/config.toml" || text.starts_with("/tmp/.crater")
        {
            found.push(text);
        }
        if entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            walk(&path, found);
        }
    }
}

fn main() {
    let mut found = Vec::new();
    for root in ["/build", "/cargo", "/tmp", "/dev/shm"] {
        walk(Path::new(root), &mut found);
    }
    let ps = std::process::Command::new("ps").args(["-eo", "args"]).output().unwrap();
    let ps = String::from_utf8_lossy(&ps.stdout);
    if ps.contains("sleep 3600") {
        found.push("the earlier crate's daemon".to_owned());
    }
    assert!(found.is_empty(), "an earlier crate left: {found:?}");
    println!("cargo::warning=nothing of the earlier crate is left");
}
"#;

const PASSING_TEST: &str = "#[test]\nfn ok() { assert_eq!(2 + 2, 4); }\n";

#[test]
fn a_crate_can_neither_forge_its_verdict_nor_leave_anything_for_the_next() {
    let crates = tempfile::tempdir().unwrap();
    let attacker = make_crate(
        crates.path(),
        "fixture-attacker",
        BROKEN_LIB,
        Some(ATTACKER_BUILD_RS),
    );
    let inspector = make_crate(
        crates.path(),
        "fixture-inspector",
        PASSING_TEST,
        Some(INSPECTOR_BUILD_RS),
    );
    let (out, _) = run_fixtures(
        &["--tool", "test", "--slots", "1", "--memory-gb", "2"],
        &[attacker, inspector],
    );

    let attacker = result(out.path(), "test", "fixture-attacker", "0.1.0");
    let log = raw_log(out.path(), "test", "fixture-attacker");
    assert_eq!(attacker["status"], "build-fail", "{attacker}\n{log}");
    assert!(attacker.get("harness_error").is_none(), "{attacker}");
    for refused in [
        "forge /run/crater",
        "list /run/crater",
        "read /proc/1/environ",
        "read /proc/1/mem",
        "list /proc/1/fd",
        "write the Miri sysroot",
        "chmod /build",
        "chmod /cargo",
        "chmod /tmp",
    ] {
        assert!(
            log.contains(&format!("attack {refused}: failed")),
            "{refused} must be refused:\n{log}"
        );
    }
    // The planting itself worked: what follows proves it did not survive.
    for planted in ["mkfifo", "bind a socket", "hard link", "start a daemon"] {
        assert!(
            log.contains(&format!("attack {planted}: SUCCEEDED")),
            "{planted}:\n{log}"
        );
    }

    let inspector = result(out.path(), "test", "fixture-inspector", "0.1.0");
    let log = raw_log(out.path(), "test", "fixture-inspector");
    assert_eq!(inspector["status"], "pass", "{inspector}\n{log}");
    assert_eq!(inspector["slot"], attacker["slot"]);
    assert_eq!(inspector["tries"], 1, "the same container, not a new one");
    assert!(
        log.contains("nothing of the earlier crate is left"),
        "{log}"
    );
}

#[test]
fn a_disk_bomb_is_stopped_with_a_no_space_cause_and_the_host_keeps_its_space() {
    let crates = tempfile::tempdir().unwrap();
    let bomb = make_crate(
        crates.path(),
        "fixture-disk-bomb",
        "",
        Some(
            "use std::io::Write;\nfn main() {\n    let chunk = vec![7u8; 1 << 20];\n    \
             for n in 0.. {\n        \
             if let Ok(mut f) = std::fs::File::create(format!(\"/build/fill-{n}\")) {\n            \
             while f.write_all(&chunk).is_ok() {}\n        }\n        \
             std::thread::sleep(std::time::Duration::from_millis(10));\n    }\n}\n",
        ),
    );
    let after = make_crate(crates.path(), "fixture-after-disk-bomb", PASSING_TEST, None);
    // The slot disks live under --disk-dir: watch its filesystem's free space while the bomb
    // writes. Without the bound it would fill the whole disk.
    let disk_dir = tempfile::tempdir().unwrap();
    let free_before = free_bytes(disk_dir.path());
    let watching = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let watcher = {
        let (dir, watching) = (disk_dir.path().to_owned(), watching.clone());
        std::thread::spawn(move || {
            let mut lowest = u64::MAX;
            while watching.load(std::sync::atomic::Ordering::Relaxed) {
                lowest = lowest.min(free_bytes(&dir));
                std::thread::sleep(Duration::from_millis(100));
            }
            lowest
        })
    };
    let (out, _) = run_fixtures(
        &[
            "--tool",
            "test",
            "--slots",
            "1",
            "--memory-gb",
            "2",
            "--disk-gb",
            "1",
            "--disk-dir",
            to_str(disk_dir.path()),
        ],
        &[bomb, after],
    );
    watching.store(false, std::sync::atomic::Ordering::Relaxed);
    let lowest = watcher.join().unwrap();

    let bomb = result(out.path(), "test", "fixture-disk-bomb", "0.1.0");
    let log = raw_log(out.path(), "test", "fixture-disk-bomb");
    assert_eq!(bomb["status"], "build-fail", "{bomb}\n{log}");
    assert_eq!(bomb["causes"][0]["kind"], "no-space", "{bomb}");
    assert!(log.contains("the job filled its disk"), "{log}");
    let used = free_before.saturating_sub(lowest);
    assert!(
        used < (1 << 30) + (256 << 20),
        "the host gave the bomb at most its 1 GiB (and some metadata): {} MiB",
        used >> 20
    );
    let after = result(out.path(), "test", "fixture-after-disk-bomb", "0.1.0");
    assert_eq!(after["status"], "pass", "{after}");
    assert_eq!(after["slot"], bomb["slot"]);
    assert!(
        std::fs::read_dir(disk_dir.path()).unwrap().next().is_none(),
        "the slot disks are gone after the run"
    );
}

fn free_bytes(path: &Path) -> u64 {
    let out = std::process::Command::new("df")
        .args(["--output=avail", "-B1"])
        .arg(path)
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    text.lines().nth(1).unwrap().trim().parse().unwrap()
}

/// The capabilities docker/worker.sh's header says the loop keeps.
fn capabilities_in_worker_header() -> Vec<String> {
    let worker = include_str!("../../docker/worker.sh");
    let block = worker
        .split("# Capabilities:")
        .nth(1)
        .expect("worker.sh has a Capabilities section");
    let mut caps = Vec::new();
    for line in block.lines().skip(1) {
        let Some(line) = line.strip_prefix("#   ") else {
            break;
        };
        if line.starts_with(' ') {
            continue; // the explanation goes on
        }
        let names = line.split("  ").next().unwrap();
        caps.extend(names.split(", ").map(|c| c.trim().to_owned()));
    }
    caps.sort();
    caps
}

#[test]
fn slot_containers_are_what_the_worker_header_says() {
    let header_caps = capabilities_in_worker_header();
    assert_eq!(header_caps, ["KILL", "SETGID", "SETUID"]);
    let crates = tempfile::tempdir().unwrap();
    let slow = make_crate(
        crates.path(),
        "fixture-inspected",
        PASSING_TEST,
        Some(&sleeping_build_rs(25)),
    );
    let out = tempfile::tempdir().unwrap();
    ensure_image();
    let args = [
        "run",
        "--tool",
        "check",
        "--slots",
        "1",
        "--memory-gb",
        "2",
        "--pids-limit",
        "300",
        "--out",
        to_str(out.path()),
        "--local-crate",
        to_str(&slow),
    ];
    let child = spawn(&coordinator_bin(), &args);
    let pid = child.id();
    let mut container = String::new();
    wait_until(
        "the slot container to run the build script",
        4 * MINUTES,
        || {
            let Some(id) = containers_of(pid).into_iter().next() else {
                return false;
            };
            container = id;
            let ps = std::process::Command::new("docker")
                .args(["exec", &container, "ps", "-eo", "uid=,args="])
                .output()
                .unwrap();
            String::from_utf8_lossy(&ps.stdout).contains("build-script-build")
        },
    );
    let inspect: serde_json::Value =
        serde_json::from_str(&docker(&["inspect", &container])).unwrap();
    let config = &inspect[0]["Config"];
    let host = &inspect[0]["HostConfig"];
    assert_eq!(config["User"], "0:0", "the loop is root in the container");
    let mut added: Vec<String> = serde_json::from_value(host["CapAdd"].clone()).unwrap();
    added.sort();
    assert_eq!(added, header_caps);
    assert_eq!(host["CapDrop"], serde_json::json!(["ALL"]));
    assert_eq!(host["ReadonlyRootfs"], true);
    assert_eq!(host["PidsLimit"], 300);
    assert_eq!(host["NetworkMode"], "none", "--network off is the default");
    assert_eq!(
        host["SecurityOpt"],
        serde_json::json!(["no-new-privileges"])
    );
    assert_eq!(host["Memory"], 2i64 << 30);
    assert_eq!(host["MemorySwap"], 2i64 << 30);

    // Who runs what: PID 1 is root, the crate's processes are uid 1000 with no capabilities.
    let ps = docker(&["exec", &container, "ps", "-eo", "pid=,uid=,args="]);
    let mut saw_crate = false;
    for line in ps.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (pid, uid, args) = (fields[0], fields[1], fields[2..].join(" "));
        if pid == "1" {
            assert_eq!(uid, "0", "{line}");
        }
        let program = fields[2].rsplit('/').next().unwrap();
        if args.contains("build-script-build") || program == "cargo" {
            assert_eq!(uid, "1000", "crate code runs as the crate user: {line}");
            let status = docker(&["exec", &container, "cat", &format!("/proc/{pid}/status")]);
            let caps: Vec<&str> = status
                .lines()
                .filter(|l| l.starts_with("CapEff:") || l.starts_with("CapPrm:"))
                .map(|l| l.split_whitespace().nth(1).unwrap())
                .collect();
            assert_eq!(caps, ["0000000000000000"; 2], "{line}: {status}");
            saw_crate = true;
        }
    }
    assert!(saw_crate, "{ps}");
    let finished = wait(child, 5 * MINUTES);
    assert!(finished.status.success(), "{}", finished.stderr);
    assert_eq!(
        result(out.path(), "check", "fixture-inspected", "0.1.0")["status"],
        "pass"
    );
}

/// A stand-in for a cloud's metadata service: 169.254.169.254:80 in a network namespace of its
/// own behind a veth pair, so the host routes to it as it routes to the real one (forwarded, not
/// delivered locally). It answers every connection with a secret.
struct FakeMetadata {
    namespace: String,
    veth: String,
    server: std::process::Child,
}

impl FakeMetadata {
    const SECRET: &str = "metadata-secret-AKIA";

    fn start() -> FakeMetadata {
        let id = std::process::id() % 100_000;
        let (namespace, veth, inner) = (
            format!("crater-md-{id}"),
            format!("crmd{id}"),
            format!("crmi{id}"),
        );
        let ip = |args: &[&str]| {
            let out = std::process::Command::new("ip")
                .args(args)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "ip {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        ip(&["netns", "add", &namespace]);
        ip(&["link", "add", &veth, "type", "veth", "peer", "name", &inner]);
        ip(&["link", "set", &inner, "netns", &namespace]);
        ip(&["addr", "add", "169.254.169.253/30", "dev", &veth]);
        ip(&["link", "set", &veth, "up"]);
        let in_ns = |args: &[&str]| {
            let mut all = vec!["netns", "exec", &namespace, "ip"];
            all.extend(args);
            ip(&all);
        };
        in_ns(&["addr", "add", "169.254.169.254/30", "dev", &inner]);
        in_ns(&["link", "set", &inner, "up"]);
        in_ns(&["link", "set", "lo", "up"]);
        in_ns(&["route", "add", "default", "via", "169.254.169.253"]);
        let server = std::process::Command::new("ip")
            .args(["netns", "exec", &namespace, "python3", "-c"])
            .arg(format!(
                "import socket\ns = socket.socket()\ns.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n\
                 s.bind(('169.254.169.254', 80))\ns.listen()\nprint('ready', flush=True)\n\
                 while True:\n    c, _ = s.accept()\n    c.sendall(b'{}\\n')\n    c.close()\n",
                Self::SECRET
            ))
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut fake = FakeMetadata {
            namespace,
            veth,
            server,
        };
        let mut ready = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(fake.server.stdout.as_mut().unwrap()),
            &mut ready,
        )
        .unwrap();
        assert_eq!(ready.trim(), "ready");
        fake
    }
}

impl Drop for FakeMetadata {
    fn drop(&mut self) {
        let _ = self.server.kill();
        let _ = self.server.wait();
        for args in [
            vec!["link", "del", self.veth.as_str()],
            vec!["netns", "del", self.namespace.as_str()],
        ] {
            let _ = std::process::Command::new("ip").args(&args).status();
        }
    }
}

/// A build script that tries `host:port` for each target and reports what it got.
fn prober_build_rs(host_port: u16) -> String {
    format!(
        r#"
use std::io::Read;
use std::net::{{TcpStream, ToSocketAddrs}};
use std::time::Duration;

fn gateway() -> String {{
    // The container's default route: the host, on the slot's bridge.
    let routes = std::fs::read_to_string("/proc/net/route").unwrap();
    let line = routes.lines().skip(1).find(|l| l.split_whitespace().nth(1) == Some("00000000")).unwrap();
    let hex = u32::from_str_radix(line.split_whitespace().nth(2).unwrap(), 16).unwrap();
    std::net::Ipv4Addr::from(hex.to_le_bytes()).to_string()
}}

fn probe(what: &str, address: &str) {{
    let said = match address.to_socket_addrs().map(|mut a| a.next().unwrap()) {{
        Err(e) => format!("no address ({{e}})"),
        Ok(addr) => match TcpStream::connect_timeout(&addr, Duration::from_secs(5)) {{
            Err(e) => format!("refused ({{e}})"),
            Ok(mut stream) => {{
                stream.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
                let mut got = String::new();
                let _ = stream.read_to_string(&mut got);
                format!("CONNECTED, read {{got:?}}")
            }}
        }},
    }};
    println!("cargo::warning=probe {{what}}: {{said}}");
}}

fn main() {{
    probe("metadata", "169.254.169.254:80");
    probe("host", &format!("{{}}:{host_port}", gateway()));
    probe("crates.io", "static.crates.io:443");
}}
"#
    )
}

#[test]
fn with_the_network_on_crate_code_reaches_the_internet_but_not_metadata_or_the_host() {
    let _fake = FakeMetadata::start();
    ensure_image();
    let image = coordinator_image_tag();
    // The control: a plain container on Docker's bridge does reach the fake metadata service,
    // so a refusal below is the agent's doing.
    let control = docker(&[
        "run",
        "--rm",
        "--entrypoint",
        "/bin/bash",
        &image,
        "-c",
        "exec 3<>/dev/tcp/169.254.169.254/80 && cat <&3",
    ]);
    assert!(control.contains(FakeMetadata::SECRET), "{control}");
    // A service on the host, on every address.
    let host = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
    let host_port = host.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for mut stream in host.incoming().flatten() {
            let _ = std::io::Write::write_all(&mut stream, b"host-secret\n");
        }
    });

    let crates = tempfile::tempdir().unwrap();
    let prober = make_crate(
        crates.path(),
        "fixture-prober",
        "",
        Some(&prober_build_rs(host_port)),
    );
    let after = make_crate(crates.path(), "fixture-after-prober", PASSING_TEST, None);
    let (out, _) = run_fixtures(
        &[
            "--tool",
            "check",
            "--slots",
            "1",
            "--memory-gb",
            "2",
            "--network",
            "on",
        ],
        &[prober, after],
    );
    let r = result(out.path(), "check", "fixture-prober", "0.1.0");
    let log = raw_log(out.path(), "check", "fixture-prober");
    assert_eq!(r["status"], "pass", "{r}\n{log}");
    assert!(log.contains("probe metadata: refused"), "{log}");
    assert!(log.contains("probe host: refused"), "{log}");
    assert!(log.contains("probe crates.io: CONNECTED"), "{log}");
    assert!(
        !log.contains(FakeMetadata::SECRET) && !log.contains("host-secret"),
        "{log}"
    );
    assert_eq!(
        result(out.path(), "check", "fixture-after-prober", "0.1.0")["status"],
        "pass"
    );
}

/// The worker image's tag, as `image build` prints it.
fn coordinator_image_tag() -> String {
    let out = std::process::Command::new(coordinator_bin())
        .args(["image", "build"])
        .output()
        .unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .last()
        .unwrap()
        .trim()
        .to_owned()
}
