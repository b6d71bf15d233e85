//! Test hosts in network namespaces: "other machines" on this one.
//!
//! A [`Bridge`] is a Linux bridge on this machine with the address `10.231.<n>.1/24` (`n` from
//! the test process's pid, skipping a /24 something else already has); a [`Host`] is a network
//! namespace `crtr-t<pid>-<i>` whose end of a veth pair has `10.231.<n>.<10+i>/24` and a default
//! route through the bridge's address, the other end being a port of the bridge. A process
//! started with [`Host::spawn`] sees only that interface (and its own loopback): it reaches this
//! machine at [`Bridge::ip`] and nothing else, unless [`Bridge::allow_internet`] adds NAT for
//! the bridge's subnet. Unix sockets are not namespaced, so Docker (/var/run/docker.sock) works
//! from inside as from outside. [`Host::cut`] takes the namespace's link down (a partition),
//! [`Host::restore`] brings it back.
//!
//! Everything is made with `ip` and `iptables`, so the tests need root. Everything is removed in
//! `Drop`, whatever part of the set-up was done; namespaces, links and rules left by a test
//! process that was killed (its pid is in their names) are removed by the next `Bridge::new`.
//! One bridge per test process at a time: a second `Bridge::new` waits for the first to be
//! dropped, so tests that use namespaces run one after another even on parallel test threads
//! (they also share the machine's CPUs and Docker, and some of them measure time).
//!
//! Drop order matters in a test: declare the bridge first, then its hosts, then the processes
//! in them, so the processes go first (locals drop in reverse order).
#![allow(dead_code)]

use super::{Running, spawn_with_env};
use std::path::Path;
use std::process::{Command, Output};
use std::sync::{Mutex, MutexGuard};

/// Interfaces this module makes are `crtn<pid>…` (not `crtr<pid>`: that is the agent's guarded
/// bridge, see agent/src/netguard.rs).
const LINK_PREFIX: &str = "crtn";
/// Namespaces are `crtr-t<pid>-<i>`, iptables rules are commented `crtr-t<pid>`.
const PREFIX: &str = "crtr-t";

/// One bridge per test process at a time.
static ONE_BRIDGE: Mutex<()> = Mutex::new(());

/// Runs `program ARGS` to the end; its output whether it succeeded or not.
fn run(program: &str, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running {program}: {e}"))
}

/// Runs `program ARGS`, failing the test (with its stderr) unless it succeeds.
fn must(program: &str, args: &[&str]) -> String {
    let out = run(program, args);
    assert!(
        out.status.success(),
        "{program} {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs `program ARGS`, ignoring failure (clean-up of what may not exist).
fn try_run(program: &str, args: &[&str]) -> bool {
    Command::new(program)
        .args(args)
        .output()
        .is_ok_and(|o| o.status.success())
}

fn pid_alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// The pid in a name this module made (`crtn<pid>…` or `crtr-t<pid>…`), if it is one.
fn owner_pid(name: &str) -> Option<u32> {
    let rest = (name.strip_prefix(PREFIX)).or_else(|| name.strip_prefix(LINK_PREFIX))?;
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// A rule this module added: the table, the chain and the rule's match and target, so that the
/// same words after `-D` remove it.
struct Rule {
    table: &'static str,
    chain: &'static str,
    spec: Vec<String>,
}

/// A Linux bridge on this machine with an address: the network the test hosts share, and the
/// address a coordinator listens on for them.
pub struct Bridge {
    name: String,
    /// The third byte of the subnet: 10.231.<n>.0/24.
    n: u8,
    pid: u32,
    made: bool,
    rules: Vec<Rule>,
    /// `net.ipv4.ip_forward` as it was, if [`Bridge::allow_internet`] had to turn it on.
    forwarding_was_off: bool,
    _one_at_a_time: MutexGuard<'static, ()>,
}

impl Bridge {
    /// Makes the bridge with its address, after removing what killed test processes left.
    pub fn new() -> Bridge {
        let guard = ONE_BRIDGE.lock().unwrap_or_else(|e| e.into_inner());
        remove_leftovers();
        let pid = std::process::id();
        let n = free_subnet(pid);
        let mut bridge = Bridge {
            name: format!("{LINK_PREFIX}{pid}b"),
            n,
            pid,
            made: false,
            rules: Vec::new(),
            forwarding_was_off: false,
            _one_at_a_time: guard,
        };
        must(
            "ip",
            &["link", "add", "name", &bridge.name, "type", "bridge"],
        );
        bridge.made = true;
        let cidr = format!("{}/24", bridge.ip());
        must("ip", &["addr", "add", &cidr, "dev", &bridge.name]);
        must("ip", &["link", "set", &bridge.name, "up"]);
        bridge
    }

    /// This machine's address on the bridge: where the hosts reach it.
    pub fn ip(&self) -> String {
        format!("10.231.{}.1", self.n)
    }

    /// The bridge's subnet, `10.231.<n>.0/24`.
    pub fn subnet(&self) -> String {
        format!("10.231.{}.0/24", self.n)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    fn comment(&self) -> String {
        format!("{PREFIX}{}", self.pid)
    }

    /// Lets the hosts reach the internet through this machine: NAT (MASQUERADE) for the
    /// bridge's subnet and FORWARD rules ahead of Docker's (whose policy is DROP). Removed in
    /// `Drop`.
    pub fn allow_internet(&mut self) {
        let forwarding = std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward")
            .unwrap_or_default()
            .trim()
            .to_owned();
        if forwarding != "1" {
            std::fs::write("/proc/sys/net/ipv4/ip_forward", "1").unwrap();
            self.forwarding_was_off = true;
        }
        let comment = self.comment();
        let with_comment = |words: &[&str]| -> Vec<String> {
            let mut spec: Vec<String> = words.iter().map(|w| w.to_string()).collect();
            spec.extend(["-m", "comment", "--comment", &comment].map(str::to_owned));
            spec
        };
        let subnet = self.subnet();
        let rules = [
            Rule {
                table: "nat",
                chain: "POSTROUTING",
                spec: with_comment(&["-s", &subnet, "!", "-o", &self.name, "-j", "MASQUERADE"]),
            },
            Rule {
                table: "filter",
                chain: "FORWARD",
                spec: with_comment(&["-i", &self.name, "!", "-o", &self.name, "-j", "ACCEPT"]),
            },
            Rule {
                table: "filter",
                chain: "FORWARD",
                spec: with_comment(&[
                    "-o",
                    &self.name,
                    "-m",
                    "conntrack",
                    "--ctstate",
                    "RELATED,ESTABLISHED",
                    "-j",
                    "ACCEPT",
                ]),
            },
        ];
        for rule in rules {
            let mut args: Vec<&str> = vec!["-w", "-t", rule.table, "-I", rule.chain, "1"];
            args.extend(rule.spec.iter().map(String::as_str));
            must("iptables", &args);
            self.rules.push(rule);
        }
    }
}

impl Drop for Bridge {
    fn drop(&mut self) {
        for rule in self.rules.drain(..).rev() {
            let mut args: Vec<&str> = vec!["-w", "-t", rule.table, "-D", rule.chain];
            args.extend(rule.spec.iter().map(String::as_str));
            if !try_run("iptables", &args) {
                eprintln!("could not remove iptables rule {args:?}");
            }
        }
        if self.forwarding_was_off {
            let _ = std::fs::write("/proc/sys/net/ipv4/ip_forward", "0");
        }
        if self.made && !try_run("ip", &["link", "del", &self.name]) {
            eprintln!("could not remove bridge {}", self.name);
        }
    }
}

/// A /24 under 10.231.0.0/16 that no interface of this machine has: the one the pid points to,
/// else the next free one.
fn free_subnet(pid: u32) -> u8 {
    let addresses = must("ip", &["-4", "-o", "addr", "show"]);
    let start = (pid % 254) as u8;
    (0..254u8)
        .map(|k| 1 + start.wrapping_add(k) % 254)
        .find(|n| !addresses.contains(&format!(" 10.231.{n}.")))
        .expect("every 10.231.x.0/24 is taken on this machine")
}

/// Removes the namespaces, links and iptables rules of test processes that are gone.
fn remove_leftovers() {
    let dead = |name: &str| owner_pid(name).is_some_and(|pid| !pid_alive(pid));
    for line in must("ip", &["netns", "list"]).lines() {
        let name = line.split_whitespace().next().unwrap_or("");
        if name.starts_with(PREFIX) && dead(name) {
            try_run("ip", &["netns", "del", name]);
        }
    }
    for line in must("ip", &["-o", "link", "show"]).lines() {
        // "12: crtn4242b: <BROADCAST,...>" or "13: crtn4242h1@if2: <...>"
        let Some(name) = line.split(':').nth(1).map(str::trim) else {
            continue;
        };
        let name = name.split('@').next().unwrap_or(name);
        if name.starts_with(LINK_PREFIX) && dead(name) {
            try_run("ip", &["link", "del", name]);
        }
    }
    for (table, chain) in [("nat", "POSTROUTING"), ("filter", "FORWARD")] {
        let listed = run("iptables", &["-w", "-t", table, "-S", chain]);
        for line in String::from_utf8_lossy(&listed.stdout).lines() {
            // "-A FORWARD -i crtn4242b ... -m comment --comment crtr-t4242 -j ACCEPT"
            let Some(owner) = line
                .split_whitespace()
                .skip_while(|w| *w != "--comment")
                .nth(1)
            else {
                continue;
            };
            if !owner.starts_with(PREFIX) || !dead(owner) {
                continue;
            }
            let Some(spec) = line.strip_prefix(&format!("-A {chain} ")) else {
                continue;
            };
            let mut args = vec!["-w", "-t", table, "-D", chain];
            args.extend(spec.split_whitespace());
            try_run("iptables", &args);
        }
    }
}

/// A network namespace on a [`Bridge`]: another machine, as far as the network goes.
pub struct Host {
    namespace: String,
    /// The veth end in the bridge (this machine's side) and the one in the namespace.
    outer: String,
    inner: String,
    ip: String,
    gateway: String,
    made_namespace: bool,
    made_link: bool,
}

impl Host {
    /// Namespace `crtr-t<pid>-<index>` with `10.231.<n>.<10+index>/24` on `bridge`.
    pub fn new(bridge: &Bridge, index: u8) -> Host {
        assert!(
            index <= 244,
            "host index {index}: the address would not fit"
        );
        let pid = bridge.pid;
        let mut host = Host {
            namespace: format!("{PREFIX}{pid}-{index}"),
            outer: format!("{LINK_PREFIX}{pid}h{index}"),
            inner: format!("{LINK_PREFIX}{pid}n{index}"),
            ip: format!("10.231.{}.{}", bridge.n, 10 + u16::from(index)),
            gateway: bridge.ip(),
            made_namespace: false,
            made_link: false,
        };
        must("ip", &["netns", "add", &host.namespace]);
        host.made_namespace = true;
        must(
            "ip",
            &[
                "link",
                "add",
                &host.outer,
                "type",
                "veth",
                "peer",
                "name",
                &host.inner,
                "netns",
                &host.namespace,
            ],
        );
        host.made_link = true;
        must(
            "ip",
            &["link", "set", &host.outer, "master", bridge.name(), "up"],
        );
        let cidr = format!("{}/24", host.ip);
        host.ip_in(&["addr", "add", &cidr, "dev", &host.inner]);
        host.ip_in(&["link", "set", "lo", "up"]);
        host.ip_in(&["link", "set", &host.inner, "up"]);
        host.ip_in(&["route", "add", "default", "via", &host.gateway]);
        host
    }

    /// `ip ARGS` inside the namespace; fails the test if it fails.
    fn ip_in(&self, args: &[&str]) -> String {
        let mut all = vec!["-n", self.namespace.as_str()];
        all.extend(args);
        must("ip", &all)
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// This host's address on the bridge.
    pub fn ip(&self) -> &str {
        &self.ip
    }

    /// A partition: the namespace's link goes down (its routes with it). Connections stay open
    /// on both sides, but nothing passes until [`Host::restore`].
    pub fn cut(&self) {
        self.ip_in(&["link", "set", &self.inner, "down"]);
    }

    /// Ends a partition: the link comes back up with its default route.
    pub fn restore(&self) {
        self.ip_in(&["link", "set", &self.inner, "up"]);
        // The link's own subnet route comes back with it; the default route was flushed.
        self.ip_in(&[
            "route",
            "replace",
            "default",
            "via",
            &self.gateway,
            "dev",
            &self.inner,
            "onlink",
        ]);
    }

    /// A dropped connection (a NAT or load balancer forgetting it, a reset): every TCP
    /// connection of the namespace is aborted (`ss -K`), each peer gets a reset; the link stays.
    pub fn reset_connections(&self) {
        let out = self.run("ss", &["-K", "-t", "state", "established"]);
        assert!(
            out.status.success(),
            "ss -K in {}: {}",
            self.namespace,
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The argument list of `ip netns exec NAMESPACE PROGRAM ARGS`.
    fn exec_args<'a>(&'a self, program: &'a str, args: &[&'a str]) -> Vec<&'a str> {
        let mut all = vec!["netns", "exec", self.namespace.as_str(), program];
        all.extend(args);
        all
    }

    /// Starts `program ARGS` inside the namespace, its output captured (see [`super::wait`]).
    /// `ip netns exec` execs the program in place, so [`Running::id`] is the program's pid.
    pub fn spawn(&self, program: &Path, args: &[&str]) -> Running {
        self.spawn_with_env(program, args, &[])
    }

    /// [`Host::spawn`] with extra environment variables.
    pub fn spawn_with_env(
        &self,
        program: &Path,
        args: &[&str],
        env: &[(String, String)],
    ) -> Running {
        let program = program.to_str().expect("a UTF-8 path");
        spawn_with_env(Path::new("ip"), &self.exec_args(program, args), env)
    }

    /// Runs `program ARGS` inside the namespace to the end.
    pub fn run(&self, program: &str, args: &[&str]) -> Output {
        run("ip", &self.exec_args(program, args))
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        // Deleting the namespace destroys its veth end, and so the pair, unless a process still
        // holds the namespace: the outer end is deleted too, which takes the pair either way.
        if self.made_namespace && !try_run("ip", &["netns", "del", &self.namespace]) {
            eprintln!("could not remove network namespace {}", self.namespace);
        }
        if self.made_link {
            try_run("ip", &["link", "del", &self.outer]);
        }
    }
}
