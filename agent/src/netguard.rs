//! The guarded network: containers with a network are attached to it, so crate code reaches
//! crates.io and the internet but neither this host nor cloud metadata.
//!
//! On Docker's default bridge, crate code (build scripts, tests) can ask the cloud's instance
//! metadata service for the machine's credentials (169.254.169.254 on EC2, GCP, Azure, OCI;
//! 169.254.170.2 for ECS task roles), and talk to any service on the agent host (sshd, an exposed
//! Docker API, a coordinator listening on 0.0.0.0). So each agent process makes its own bridge
//! network, `crater-slots-<pid>` with the Linux bridge `crtr<pid>`, and guards it with host
//! firewall rules (each tagged `-m comment --comment "crater-at-home <pid>"`):
//!
//! - in `DOCKER-USER`, Docker's hook at the top of the FORWARD path:
//!   `-I DOCKER-USER -i crtr<pid> -d <range> -j REJECT` for each of [`METADATA_DESTINATIONS`];
//! - in `INPUT`: `-I INPUT -i crtr<pid> -j REJECT`: nothing from the slots reaches the host
//!   itself, on any of its addresses. A port another container publishes is refused too: Docker
//!   skips its port DNAT for traffic arriving on one of its own bridges, so that traffic goes to
//!   docker-proxy on the host.
//!
//! REJECT rather than DROP: a refused connection fails at once instead of hanging a build.
//!
//! DNS keeps working: Docker's embedded resolver (127.0.0.11) answers inside the container's own
//! network namespace and asks the host's upstream servers from there, through the FORWARD path
//! like any other traffic. (A resolver on one of this host's own non-loopback addresses would be
//! refused like every other host service.)
//!
//! IPv6 needs no rules: the network has none (Docker's default), and Docker turns IPv6 off inside
//! containers on such a network (`net.ipv6.conf.all.disable_ipv6=1`, which crate code cannot
//! undo: /proc/sys is read-only and it has no `NET_ADMIN`). The tests check this.
//!
//! The rules are added before the network exists and removed only once it is gone, so no
//! container is ever on the bridge unguarded. What a crashed agent left behind is found again by
//! the comment and by the network's owner labels ([`crate::docker`]): [`remove_leftovers`]
//! removes it once the owning process is gone.
//!
//! This needs root (iptables), `iptables` with Docker's DOCKER-USER chain in it (Docker's
//! iptables integration on, in the same backend, legacy or nft), and the Docker engine on this
//! machine (its bridge must be visible here). Without them, `--network off` still runs crate code
//! safely: with no network at all.

use crate::docker::{self, LABEL, LABEL_OWNER_HOST, LABEL_OWNER_PID};
use anyhow::{Context, Result, anyhow, bail};
use bollard::Docker;
use bollard::models::NetworkCreateRequest;
use bollard::query_parameters::ListNetworksOptionsBuilder;
use std::collections::{BTreeSet, HashMap};
use std::process::Stdio;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Instant;

/// Where crate code may not go through the host. Cloud metadata services live here: link-local
/// 169.254.0.0/16 (EC2, GCP, Azure, OCI and OpenStack metadata at 169.254.169.254, ECS task
/// credentials at 169.254.170.2), Azure's WireServer, Alibaba Cloud's metadata service.
pub const METADATA_DESTINATIONS: &[&str] =
    &["169.254.0.0/16", "168.63.129.16/32", "100.100.100.200/32"];

/// Docker network names: this, then the guard's id (`<pid>` or `<pid>-<n>`).
const NETWORK_PREFIX: &str = "crater-slots-";
/// Linux bridge names: this, then the guard's id. Linux allows 15 bytes.
const BRIDGE_PREFIX: &str = "crtr";
const MAX_BRIDGE_NAME: usize = 15;
/// The comment on every rule: this, then the owning process id.
const COMMENT_PREFIX: &str = "crater-at-home ";

const BRIDGE_NAME_OPTION: &str = "com.docker.network.bridge.name";
const MTU_OPTION: &str = "com.docker.network.driver.mtu";

const NETWORK_OFF: &str =
    "--network off needs none of this (crate code then has no network at all)";

/// How many guards this process has made: the second and later get `-<n>` on their names (one
/// process may embed more than one agent, as tests do).
static MADE: AtomicU32 = AtomicU32::new(0);
/// The ids of this process's guards that are in use, so [`remove_leftovers`] can tell them from
/// leftovers of an earlier process that had the same pid (after a reboot, say).
static LIVE: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());

/// One host firewall rule: its chain and the arguments after it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Rule {
    chain: &'static str,
    spec: Vec<String>,
}

/// This process's guarded network and the rules that guard it.
#[derive(Debug)]
pub struct NetGuard {
    id: String,
    network: String,
    bridge: String,
    /// The rules in place, in the order they were added.
    rules: Vec<Rule>,
}

impl NetGuard {
    /// Adds the rules, then creates the network.
    ///
    /// Fails, having undone what it did, with one message naming what is missing (`iptables`,
    /// root, Docker's DOCKER-USER chain, a Docker engine on this machine) and pointing to
    /// `--network off`, which needs none of it.
    pub async fn install(docker: &Docker) -> Result<NetGuard> {
        let started = Instant::now();
        // One message, with the way out last: this error ends up in front of a user.
        let guard = Self::try_install(docker)
            .await
            .map_err(|e| anyhow!("cannot set up the guarded network: {e:#}; {NETWORK_OFF}"))?;
        tracing::debug!(network = %guard.network, bridge = %guard.bridge,
            "guarded network ready in {:?}", started.elapsed());
        Ok(guard)
    }

    async fn try_install(docker: &Docker) -> Result<NetGuard> {
        preflight().await?;
        let n = MADE.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        let id = if n == 0 {
            pid.to_string()
        } else {
            format!("{pid}-{n}")
        };
        let (network, bridge) = names(&id);
        if bridge.len() > MAX_BRIDGE_NAME {
            bail!("this process made too many guarded networks: {bridge} is too long a name");
        }
        live().insert(id.clone());
        let mut guard = NetGuard {
            id,
            network,
            bridge,
            rules: Vec::new(),
        };
        match guard.set_up(docker, pid).await {
            Ok(()) => Ok(guard),
            Err(e) => {
                let network = guard.network.clone();
                guard.remove(docker).await;
                Err(e.context(format!("making {network}")))
            }
        }
    }

    async fn set_up(&mut self, docker: &Docker, pid: u32) -> Result<()> {
        remove_stale_namesake(docker, &self.network).await?;
        for rule in rules_for(&self.bridge, pid) {
            insert_rule(&rule).await?;
            self.rules.push(rule);
        }
        create_network(docker, &self.network, &self.bridge, docker::owner_labels()).await?;
        // A remote or rootless engine makes its bridge where our firewall does not reach.
        if !std::path::Path::new("/sys/class/net")
            .join(&self.bridge)
            .exists()
        {
            bail!(
                "Docker made the network, but its bridge {} is not on this machine: the engine \
                 is remote (DOCKER_HOST) or rootless, and this host's firewall cannot guard it",
                self.bridge
            );
        }
        Ok(())
    }

    /// The Docker network to attach containers to (their `network_mode`).
    pub fn network_name(&self) -> &str {
        &self.network
    }

    /// The Linux bridge of the network, which the rules name.
    pub fn bridge_name(&self) -> &str {
        &self.bridge
    }

    /// Removes the network, then its rules. Its containers must be gone already: while the
    /// network is still there (Docker refuses to remove a network with containers on it) the
    /// rules stay, and the next agent on this host removes both. Errors are logged, not returned;
    /// what is already gone is the goal.
    pub async fn remove(mut self, docker: &Docker) {
        let started = Instant::now();
        if remove_network(docker, &self.network).await {
            for rule in self.rules.drain(..).rev() {
                delete_rule(&rule).await;
            }
        } else {
            tracing::warn!(network = %self.network,
                "the guarded network is still there, so its firewall rules stay; the next agent \
                 on this host removes both");
        }
        live().remove(&self.id);
        tracing::debug!(network = %self.network, "guarded network removed in {:?}",
            started.elapsed());
    }
}

/// Removes networks and rules that agents on this host left behind: those whose process is gone,
/// and those carrying this process's id that are none of its guards (an earlier process had the
/// same pid). Rules of a network that cannot be removed (a container is still on it) stay.
/// Returns how many networks and rules it removed.
///
/// Without `iptables`, or not as root, only networks are looked at: no rule can have been added.
pub async fn remove_leftovers(docker: &Docker) -> Result<usize> {
    let filters = HashMap::from([(
        "label".to_owned(),
        vec![
            LABEL.to_owned(),
            format!("{LABEL_OWNER_HOST}={}", docker::hostname()),
        ],
    )]);
    let options = ListNetworksOptionsBuilder::default()
        .filters(&filters)
        .build();
    let mut removed = 0;
    // Bridges whose network is still there: their rules must stay.
    let mut kept = BTreeSet::new();
    for network in docker.list_networks(Some(options)).await? {
        let Some(name) = network.name else { continue };
        let pid = network
            .labels
            .as_ref()
            .and_then(|l| l.get(LABEL_OWNER_PID))
            .and_then(|pid| pid.parse::<u32>().ok());
        let Some(pid) = pid else { continue };
        let bridge = network
            .options
            .as_ref()
            .and_then(|o| o.get(BRIDGE_NAME_OPTION))
            .cloned();
        let id = name.strip_prefix(NETWORK_PREFIX);
        if !is_leftover(pid, id) {
            continue;
        }
        tracing::info!(network = %name, "removing a guarded network left by an earlier agent");
        if remove_network(docker, &name).await {
            removed += 1;
        } else {
            kept.extend(bridge);
        }
    }
    if !iptables_usable().await {
        return Ok(removed);
    }
    for chain in ["DOCKER-USER", "INPUT"] {
        let listed = match iptables(&["-w", "-S", chain]).await {
            Ok(listed) if listed.ok => listed.stdout,
            // DOCKER-USER is missing when Docker's iptables integration is off: nothing of ours.
            _ => continue,
        };
        for line in listed.lines() {
            let Some((rule, pid)) = our_rule(line) else {
                continue;
            };
            let bridge = rule_arg(&rule, "-i").unwrap_or_default();
            let id = bridge.strip_prefix(BRIDGE_PREFIX);
            if !is_leftover(pid, id) || kept.contains(bridge) {
                continue;
            }
            tracing::info!(
                chain,
                bridge,
                "removing a firewall rule left by an earlier agent"
            );
            if delete_rule(&rule).await {
                removed += 1;
            }
        }
    }
    Ok(removed)
}

/// Whether a network or rule of process `pid` (guard `id`, when its name gives one) is a
/// leftover: its process is gone, or it is ours by pid but none of our live guards.
fn is_leftover(pid: u32, id: Option<&str>) -> bool {
    if pid == std::process::id() {
        !id.is_some_and(|id| live().contains(id))
    } else {
        !process_alive(pid)
    }
}

fn process_alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

fn live() -> std::sync::MutexGuard<'static, BTreeSet<String>> {
    LIVE.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The Docker network and Linux bridge names of guard `id`.
fn names(id: &str) -> (String, String) {
    (
        format!("{NETWORK_PREFIX}{id}"),
        format!("{BRIDGE_PREFIX}{id}"),
    )
}

/// The rules that guard `bridge`, tagged as process `pid`'s, in the order they are added (each at
/// the top of its chain).
fn rules_for(bridge: &str, pid: u32) -> Vec<Rule> {
    let comment = format!("{COMMENT_PREFIX}{pid}");
    let rule = |chain, destination: Option<&str>| {
        let mut spec = vec!["-i".to_owned(), bridge.to_owned()];
        if let Some(destination) = destination {
            spec.extend(["-d".to_owned(), destination.to_owned()]);
        }
        spec.extend(["-m", "comment", "--comment", &comment, "-j", "REJECT"].map(String::from));
        Rule { chain, spec }
    };
    let mut rules: Vec<Rule> = (METADATA_DESTINATIONS.iter())
        .map(|d| rule("DOCKER-USER", Some(d)))
        .collect();
    rules.push(rule("INPUT", None));
    rules
}

/// Checks that `iptables` runs here, as root, and has Docker's DOCKER-USER chain, so a failure
/// says which of them is missing.
async fn preflight() -> Result<()> {
    let args = ["-w", "-S", "INPUT"];
    let ran = match iptables(&args).await {
        Ok(ran) => ran,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            bail!("`iptables` is not installed (or not on PATH)")
        }
        Err(e) => bail!("cannot run `iptables`: {e}"),
    };
    if !ran.ok {
        if effective_uid() != Some(0) {
            bail!("its firewall rules need root ({})", ran.describe(&args));
        }
        bail!("{}", ran.describe(&args));
    }
    let args = ["-w", "-S", "DOCKER-USER"];
    let ran = iptables(&args).await?;
    if !ran.ok {
        bail!(
            "Docker's DOCKER-USER chain is not in `iptables` here ({}): Docker runs with \
             \"iptables\": false, or puts its rules in the other iptables backend (legacy or \
             nft)",
            ran.describe(&args)
        );
    }
    Ok(())
}

/// Whether `iptables` can be asked at all (installed, and we are root).
async fn iptables_usable() -> bool {
    effective_uid() == Some(0) && iptables(&["-w", "-S", "INPUT"]).await.is_ok_and(|r| r.ok)
}

async fn insert_rule(rule: &Rule) -> Result<()> {
    let mut args = vec!["-w", "-I", rule.chain, "1"];
    args.extend(rule.spec.iter().map(String::as_str));
    let ran = iptables(&args).await.context("running iptables")?;
    if !ran.ok {
        bail!("{}", ran.describe(&args));
    }
    Ok(())
}

/// Deletes a rule; true when it is gone (or was already). Errors are logged.
async fn delete_rule(rule: &Rule) -> bool {
    let mut args = vec!["-w", "-D", rule.chain];
    args.extend(rule.spec.iter().map(String::as_str));
    match iptables(&args).await {
        Ok(ran) if ran.ok => true,
        Ok(ran) if ran.stderr.contains("does a matching rule exist") => true,
        Ok(ran) => {
            tracing::warn!("could not remove a firewall rule: {}", ran.describe(&args));
            false
        }
        Err(e) => {
            tracing::warn!("could not run iptables to remove a firewall rule: {e}");
            false
        }
    }
}

/// What an iptables run said.
struct Ran {
    ok: bool,
    status: std::process::ExitStatus,
    stdout: String,
    stderr: String,
}

impl Ran {
    /// The command and what it printed to stderr, for an error message.
    fn describe(&self, args: &[&str]) -> String {
        let command = std::iter::once("iptables")
            .chain(args.iter().copied())
            .map(|a| {
                if a.contains(' ') {
                    format!("\"{a}\"")
                } else {
                    a.to_owned()
                }
            })
            .collect::<Vec<_>>()
            .join(" ");
        format!(
            "`{command}` failed ({}): {}",
            self.status,
            self.stderr.trim()
        )
    }
}

async fn iptables(args: &[&str]) -> std::io::Result<Ran> {
    let output = tokio::process::Command::new("iptables")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .await?;
    // iptables-nft warns on every listing when legacy tables exist too: not what went wrong.
    let stderr = String::from_utf8_lossy(&output.stderr)
        .lines()
        .filter(|l| !l.starts_with("# Warning: iptables-legacy tables present"))
        .collect::<Vec<_>>()
        .join("\n");
    Ok(Ran {
        ok: output.status.success(),
        status: output.status,
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr,
    })
}

/// A rule of ours in `iptables -S` output (`-A CHAIN args...`), and the pid in its comment.
fn our_rule(line: &str) -> Option<(Rule, u32)> {
    let words = split_rule(line);
    let [append, chain, spec @ ..] = words.as_slice() else {
        return None;
    };
    if append != "-A" {
        return None;
    }
    let chain = match chain.as_str() {
        "DOCKER-USER" => "DOCKER-USER",
        "INPUT" => "INPUT",
        _ => return None,
    };
    let rule = Rule {
        chain,
        spec: spec.to_vec(),
    };
    let pid = rule_arg(&rule, "--comment")?
        .strip_prefix(COMMENT_PREFIX)?
        .parse()
        .ok()?;
    Some((rule, pid))
}

/// The value after `flag` in a rule.
fn rule_arg<'a>(rule: &'a Rule, flag: &str) -> Option<&'a str> {
    let at = rule.spec.iter().position(|w| w == flag)?;
    rule.spec.get(at + 1).map(String::as_str)
}

/// Splits an `iptables -S` line into words: iptables quotes a comment with spaces in `"`, with
/// `\` before a `"` or `\` inside.
fn split_rule(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut quoted = false;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => {
                quoted = !quoted;
                in_word = true;
            }
            '\\' if quoted => word.extend(chars.next()),
            c if c.is_whitespace() && !quoted => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            c => {
                word.push(c);
                in_word = true;
            }
        }
    }
    if in_word {
        words.push(word);
    }
    words
}

fn effective_uid() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let uids = status.lines().find_map(|l| l.strip_prefix("Uid:"))?;
    uids.split_whitespace().nth(1)?.parse().ok()
}

/// Removes a network named like ours, left by an earlier process with our pid (networks outlive
/// reboots, pids do not), so Docker does not make a second network of the same name.
async fn remove_stale_namesake(docker: &Docker, network: &str) -> Result<()> {
    match docker.inspect_network(network, None).await {
        Ok(found) => {
            let labels = found.labels.unwrap_or_default();
            if !labels.contains_key(LABEL) {
                bail!("a Docker network named {network} exists that crater-at-home did not make");
            }
            if labels.get(LABEL_OWNER_HOST) != Some(&docker::hostname()) {
                bail!("the Docker network {network} belongs to an agent on another host");
            }
            tracing::info!(
                network,
                "removing a guarded network left by an earlier process"
            );
            if !remove_network(docker, network).await {
                bail!("cannot remove the leftover network {network}");
            }
            Ok(())
        }
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        }) => Ok(()),
        Err(e) => Err(e).context("asking Docker for networks"),
    }
}

async fn create_network(
    docker: &Docker,
    network: &str,
    bridge: &str,
    labels: HashMap<String, String>,
) -> Result<()> {
    let mut options = HashMap::from([(BRIDGE_NAME_OPTION.to_owned(), bridge.to_owned())]);
    // Docker's `mtu` setting (for a host whose link carries less than 1500 bytes, behind a tunnel
    // say) only applies to its default bridge: a new network would get 1500, and large packets
    // (TLS handshakes first) could go missing.
    let default_mtu = match docker.inspect_network("bridge", None).await {
        Ok(bridge) => bridge.options.and_then(|mut o| o.remove(MTU_OPTION)),
        Err(_) => None,
    };
    if let Some(mtu) = default_mtu {
        options.insert(MTU_OPTION.to_owned(), mtu);
    }
    let request = NetworkCreateRequest {
        name: network.to_owned(),
        driver: Some("bridge".to_owned()),
        enable_ipv6: Some(false),
        options: Some(options),
        labels: Some(labels),
        ..Default::default()
    };
    docker
        .create_network(request)
        .await
        .with_context(|| format!("creating the Docker network {network}"))?;
    Ok(())
}

/// Removes a network; true when it is gone (or was already). Errors are logged.
async fn remove_network(docker: &Docker, network: &str) -> bool {
    match docker.remove_network(network).await {
        Ok(()) => true,
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        }) => true,
        Err(e) => {
            tracing::warn!(network, "could not remove the network: {e}");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rule_listings_are_read_back() {
        let line = concat!(
            "-A DOCKER-USER -d 169.254.0.0/16 -i crtr123",
            r#" -m comment --comment "crater-at-home 123""#,
            " -j REJECT --reject-with icmp-port-unreachable"
        );
        let (rule, pid) = our_rule(line).expect("ours");
        assert_eq!(pid, 123);
        assert_eq!(rule.chain, "DOCKER-USER");
        assert_eq!(rule_arg(&rule, "-i"), Some("crtr123"));
        assert_eq!(rule.spec[7], "crater-at-home 123");
        assert_eq!(
            split_rule(r#"-A INPUT -m comment --comment "a \"b\" \\c" -j ACCEPT"#)[5],
            r#"a "b" \c"#
        );
        for other in [
            "-A INPUT -i eth0 -j ACCEPT",
            r#"-A INPUT -m comment --comment "someone else 1" -j ACCEPT"#,
            r#"-A FORWARD -m comment --comment "crater-at-home 1" -j REJECT"#,
            "-N DOCKER-USER",
            "-P INPUT ACCEPT",
        ] {
            assert!(our_rule(other).is_none(), "{other}");
        }
        // What we add is what a listing gives back, once split.
        for rule in rules_for("crtr9", 9) {
            assert!(rule.spec.iter().all(|w| !w.is_empty()));
            assert_eq!(rule_arg(&rule, "--comment"), Some("crater-at-home 9"));
        }
    }

    // What follows needs root, Docker and iptables: it guards a real network and sends real
    // packets at a fake metadata server, the host and crates.io.

    use std::io::{BufRead, BufReader, Write};
    use std::process::Command;
    use std::time::Duration;

    /// The fake metadata server lives in its own network namespace behind a veth pair, so the
    /// host routes to it (the FORWARD path, like a real metadata service) instead of delivering
    /// locally (INPUT, which the other rule guards).
    const MD_NETNS: &str = "crater-fake-md";
    const MD_HOST_LINK: &str = "crtrmdh";
    const MD_NS_LINK: &str = "crtrmdn";
    const MD_ADDR: &str = "169.254.169.254";
    const MD_ANSWER: &str = "metadata-secret";
    const HOST_ANSWER: &str = "host-secret";
    const SERVE_ENV: &str = "CRATER_FAKE_METADATA_SERVER";
    const LISTENING: &str = "fake metadata server listening";

    /// Serialises these tests, across processes too: they share the fake metadata server's names
    /// and addresses and the fake dead pid.
    fn test_lock() -> std::fs::File {
        let path = std::env::temp_dir().join("crater-at-home-netguard-tests.lock");
        let file = std::fs::File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .expect("the tests' lock file");
        file.lock().expect("locking the tests' lock file");
        file
    }

    fn must(program: &str, args: &[&str]) -> String {
        let output = Command::new(program).args(args).output().expect(program);
        assert!(
            output.status.success(),
            "{program} {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    fn quietly(program: &str, args: &[&str]) {
        let _ = Command::new(program)
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }

    /// Removes what a test made, however it ends.
    #[derive(Default)]
    struct Cleanup {
        containers: Vec<String>,
        networks: Vec<String>,
        rules: Vec<Rule>,
    }

    impl Drop for Cleanup {
        fn drop(&mut self) {
            for container in &self.containers {
                quietly("docker", &["rm", "-f", container]);
            }
            for network in &self.networks {
                quietly("docker", &["network", "rm", network]);
            }
            for rule in &self.rules {
                let mut args = vec!["-w", "-D", rule.chain];
                args.extend(rule.spec.iter().map(String::as_str));
                quietly("iptables", &args);
            }
        }
    }

    /// A TCP server on 169.254.169.254:80 that answers [`MD_ANSWER`], torn down on drop.
    struct FakeMetadata {
        server: Option<std::process::Child>,
    }

    impl FakeMetadata {
        fn start() -> FakeMetadata {
            Self::tear_down(); // what a killed earlier run left
            let mut fake = FakeMetadata { server: None };
            must("ip", &["netns", "add", MD_NETNS]);
            let veth = [
                "link",
                "add",
                MD_HOST_LINK,
                "type",
                "veth",
                "peer",
                "name",
                MD_NS_LINK,
            ];
            must("ip", &veth);
            must("ip", &["link", "set", MD_NS_LINK, "netns", MD_NETNS]);
            must(
                "ip",
                &["addr", "add", "169.254.169.253/30", "dev", MD_HOST_LINK],
            );
            must("ip", &["link", "set", MD_HOST_LINK, "up"]);
            let md_addr = format!("{MD_ADDR}/30");
            must(
                "ip",
                &["-n", MD_NETNS, "addr", "add", &md_addr, "dev", MD_NS_LINK],
            );
            must("ip", &["-n", MD_NETNS, "link", "set", MD_NS_LINK, "up"]);
            // This test binary again, inside the namespace, running only the server below.
            let mut server = Command::new("ip")
                .args(["netns", "exec", MD_NETNS])
                .arg(std::env::current_exe().expect("the test binary"))
                .args([
                    "netguard::tests::fake_metadata_server",
                    "--exact",
                    "--ignored",
                ])
                .args(["--nocapture", "--test-threads=1"])
                .env(SERVE_ENV, "1")
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()
                .expect("starting the fake metadata server");
            let stdout = server.stdout.take().expect("piped");
            fake.server = Some(server);
            let (tx, rx) = std::sync::mpsc::channel();
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    match line {
                        Ok(line) if line.contains(LISTENING) => drop(tx.send(())),
                        Ok(_) => {}
                        Err(_) => break,
                    }
                }
            });
            rx.recv_timeout(Duration::from_secs(30))
                .expect("the fake metadata server did not start");
            fake
        }

        fn tear_down() {
            quietly("ip", &["link", "del", MD_HOST_LINK]); // both ends of the pair
            quietly("ip", &["netns", "del", MD_NETNS]);
        }
    }

    impl Drop for FakeMetadata {
        fn drop(&mut self) {
            if let Some(mut server) = self.server.take() {
                let _ = server.kill();
                let _ = server.wait();
            }
            Self::tear_down();
        }
    }

    #[test]
    #[ignore = "a helper: guarded_network_refuses_metadata_and_host runs it in a network namespace"]
    fn fake_metadata_server() {
        if std::env::var_os(SERVE_ENV).is_none() {
            return;
        }
        let listener = std::net::TcpListener::bind((MD_ADDR, 80)).expect("binding port 80");
        println!("{LISTENING}");
        for mut stream in listener.incoming().flatten() {
            let _ = writeln!(stream, "{MD_ANSWER}");
        }
    }

    /// A service on every address of the host; returns its port.
    fn host_service() -> u16 {
        let listener = std::net::TcpListener::bind("0.0.0.0:0").expect("binding a host port");
        let port = listener.local_addr().expect("bound").port();
        std::thread::spawn(move || {
            for mut stream in listener.incoming().flatten() {
                let _ = writeln!(stream, "{HOST_ANSWER}");
            }
        });
        port
    }

    /// The host address that reaches the internet, if there is a route.
    fn uplink_address() -> Option<String> {
        let route = must("ip", &["-4", "route", "get", "1.1.1.1"]);
        let mut words = route.split_whitespace();
        words.find(|w| *w == "src")?;
        words.next().map(str::to_owned)
    }

    /// The host's IPv4 address on `interface`.
    fn interface_address(interface: &str) -> String {
        let listed = must("ip", &["-4", "-o", "addr", "show", "dev", interface]);
        let mut words = listed.split_whitespace();
        words.find(|w| *w == "inet");
        let address = words.next().and_then(|a| a.split('/').next());
        address.expect("an IPv4 address").to_owned()
    }

    /// What a container on `network` reaches, one `name=result` line each; a TCP result is
    /// `connected[: first line]`, `refused`, `timeout` or `failed: why`.
    const PROBE: &str = r#"
        tcp() {
            out=$(timeout 10 bash -c 'exec 3<>"/dev/tcp/$0/$1" || exit 1
                read -t 3 -r line <&3; echo "connected${line:+: $line}"' "$1" "$2" 2>&1)
            case $? in
                0) echo "$out" ;;
                124) echo timeout ;;
                *) case $out in
                    *refused*) echo refused ;;
                    *) echo "failed: ${out//$'\n'/ }" ;;
                esac ;;
            esac
        }
        echo "metadata=$(tcp 169.254.169.254 80)"
        echo "gateway=$(tcp "$GATEWAY" "$PORT")"
        echo "docker0=$(tcp "$DOCKER0" "$PORT")"
        [ -n "$UPLINK" ] && echo "uplink=$(tcp "$UPLINK" "$PORT")"
        echo "dns=$(getent hosts static.crates.io | head -n1 | cut -d' ' -f1)"
        echo "crates=$(tcp static.crates.io 443)"
        ca=(); [ -f /etc/crater/ca.crt ] && ca=(--cacert /etc/crater/ca.crt)
        echo "https=$(curl -sS --max-time 30 "${ca[@]}" -o /dev/null -w '%{http_code}' \
            https://static.crates.io/ 2>&1)"
        echo "ipv6-off=$(cat /proc/sys/net/ipv6/conf/all/disable_ipv6)"
    "#;

    async fn probe(
        image: &str,
        network: &str,
        env: &[(&str, String)],
        cleanup: &mut Cleanup,
    ) -> HashMap<String, String> {
        let name = format!("crater-netguard-probe-{}-{network}", std::process::id());
        cleanup.containers.push(name.clone());
        let mut command = tokio::process::Command::new("docker");
        command
            .args(["run", "--rm", "--name", &name, "--network", network])
            .args(["--user", "1000", "--entrypoint", "/bin/bash"])
            .kill_on_drop(true);
        for (key, value) in docker::owner_labels() {
            command.arg("--label").arg(format!("{key}={value}"));
        }
        for (key, value) in env {
            command.arg("--env").arg(format!("{key}={value}"));
        }
        let ca = std::path::Path::new("/etc/ssl/certs/ca-certificates.crt");
        if ca.is_file() {
            command
                .arg("--volume")
                .arg(format!("{}:/etc/crater/ca.crt:ro", ca.display()));
        }
        command.args([image, "-c", PROBE]);
        let output = tokio::time::timeout(Duration::from_secs(180), command.output())
            .await
            .expect("the probe container took too long")
            .expect("running docker");
        let stdout = String::from_utf8_lossy(&output.stdout);
        println!("on {network}:\n{stdout}");
        assert!(
            output.status.success(),
            "the probe on {network} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        (stdout.lines())
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect()
    }

    /// The lines of `chain` that name `bridge`.
    fn listed(chain: &str, bridge: &str) -> Vec<String> {
        let needle = format!("-i {bridge} ");
        (must("iptables", &["-w", "-S", chain]).lines())
            .filter(|l| l.contains(&needle))
            .map(str::to_owned)
            .collect()
    }

    #[tokio::test]
    async fn guarded_network_refuses_metadata_and_host() {
        let _lock = test_lock();
        let docker = docker::connect().await.expect("docker");
        let image = crate::image::ensure_local_image(&docker, false)
            .await
            .expect("the worker image");
        let _metadata = FakeMetadata::start();
        let port = host_service().to_string();

        let started = Instant::now();
        let guard = NetGuard::install(&docker).await.expect("install");
        let installed = started.elapsed();
        let mut cleanup = Cleanup::default();
        cleanup.networks.push(guard.network_name().to_owned());
        cleanup.rules = rules_for(guard.bridge_name(), std::process::id());
        let network = guard.network_name().to_owned();
        let bridge = guard.bridge_name().to_owned();
        assert!(
            std::path::Path::new("/sys/class/net")
                .join(&bridge)
                .exists()
        );

        // The rules, where they should be: ours above Docker's RETURN.
        let docker_user = must("iptables", &["-w", "-S", "DOCKER-USER"]);
        println!("DOCKER-USER:\n{docker_user}");
        println!("INPUT (ours): {:?}", listed("INPUT", &bridge));
        let ours = listed("DOCKER-USER", &bridge);
        assert_eq!(ours.len(), METADATA_DESTINATIONS.len());
        let position = |needle: &str| docker_user.lines().position(|l| l.contains(needle));
        let (first, docker_return) = (position(&ours[0]), position("-j RETURN"));
        assert!(first.expect("listed") < docker_return.expect("Docker's RETURN"));
        assert_eq!(listed("INPUT", &bridge).len(), 1);
        // The network: labelled as ours, with the default bridge's MTU.
        let inspected = docker.inspect_network(&network, None).await.expect("ours");
        let labels = inspected.labels.unwrap_or_default();
        let pid = std::process::id().to_string();
        assert_eq!(labels.get(LABEL_OWNER_PID), Some(&pid));
        let default_options = (docker.inspect_network("bridge", None).await)
            .expect("Docker's default bridge")
            .options
            .unwrap_or_default();
        let options = inspected.options.unwrap_or_default();
        assert_eq!(options.get(MTU_OPTION), default_options.get(MTU_OPTION));
        let docker0 = default_options.get(BRIDGE_NAME_OPTION).expect("its bridge");

        let env = [
            ("GATEWAY", interface_address(&bridge)),
            ("DOCKER0", interface_address(docker0)),
            ("UPLINK", uplink_address().unwrap_or_default()),
            ("PORT", port),
        ];
        let guarded = probe(&image, &network, &env, &mut cleanup).await;
        // The control: the same probe on Docker's default bridge reaches what ours refuses, so a
        // rule that does nothing would not pass.
        let control = probe(&image, "bridge", &env, &mut cleanup).await;

        let md_answer = format!("connected: {MD_ANSWER}");
        let host_answer = format!("connected: {HOST_ANSWER}");
        assert_eq!(control["metadata"], md_answer);
        assert_eq!(control["gateway"], host_answer);
        assert_eq!(guarded["metadata"], "refused");
        for host_address in ["gateway", "docker0", "uplink"] {
            if let Some(result) = guarded.get(host_address) {
                assert_eq!(result, "refused", "{host_address}");
            }
        }
        assert!(
            !guarded["dns"].is_empty(),
            "DNS works on the guarded network"
        );
        assert_eq!(guarded["crates"], "connected");
        assert_eq!(guarded["https"], "200", "HTTPS to crates.io works");
        assert_eq!(
            guarded["ipv6-off"], "1",
            "no IPv6 in the container: nothing to guard"
        );

        let started = Instant::now();
        guard.remove(&docker).await;
        let removed = started.elapsed();
        println!("install took {installed:?}, remove {removed:?}");
        match docker.inspect_network(&network, None).await {
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => {}
            other => panic!("the network is still there: {other:?}"),
        }
        assert!(
            !std::path::Path::new("/sys/class/net")
                .join(&bridge)
                .exists()
        );
        assert!(listed("DOCKER-USER", &bridge).is_empty());
        assert!(listed("INPUT", &bridge).is_empty());
        drop(cleanup);
    }

    #[tokio::test]
    async fn leftovers_of_dead_agents_are_removed() {
        let _lock = test_lock();
        let docker = docker::connect().await.expect("docker");
        let pid_max: u32 = std::fs::read_to_string("/proc/sys/kernel/pid_max")
            .expect("pid_max")
            .trim()
            .parse()
            .expect("pid_max");
        // No process ever has this pid: a dead agent's.
        let dead = pid_max + 1;
        let (dead_network, dead_bridge) = names(&dead.to_string());
        // An earlier process that had our pid: its bridge is none of our live guards.
        let me = std::process::id();
        let (_, reused_bridge) = names(&format!("{me}-999"));
        // A live agent's (pid 1 is always alive): it stays.
        let live_bridge = "crtrlive";
        let mut cleanup = Cleanup::default();
        cleanup.networks.push(dead_network.clone());
        for (bridge, pid) in [
            (&dead_bridge, dead),
            (&reused_bridge, me),
            (&live_bridge.to_owned(), 1),
        ] {
            for rule in rules_for(bridge, pid) {
                insert_rule(&rule).await.expect("adding a rule");
                cleanup.rules.push(rule);
            }
        }
        let mut labels = docker::owner_labels();
        labels.insert(LABEL_OWNER_PID.to_owned(), dead.to_string());
        create_network(&docker, &dead_network, &dead_bridge, labels)
            .await
            .expect("a dead agent's network");

        let removed = remove_leftovers(&docker).await.expect("remove_leftovers");
        println!("removed {removed} leftovers");
        // Another agent on this host may have removed some of them first: what counts is that
        // they are gone.
        assert!(
            docker.inspect_network(&dead_network, None).await.is_err(),
            "the dead agent's network is gone"
        );
        for bridge in [&dead_bridge, &reused_bridge] {
            assert!(listed("DOCKER-USER", bridge).is_empty(), "{bridge}");
            assert!(listed("INPUT", bridge).is_empty(), "{bridge}");
        }
        assert_eq!(
            listed("DOCKER-USER", live_bridge).len(),
            METADATA_DESTINATIONS.len()
        );
        assert_eq!(listed("INPUT", live_bridge).len(), 1);
        drop(cleanup);
    }
}
