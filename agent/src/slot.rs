//! One slot: a long-lived container pinned to one CPU, and the job protocol over its stdin/stdout.
//!
//! The container is created once and reused for job after job (the worker loop empties /build
//! between them), because starting a container per crate costs more than many small crates take
//! to check. It is locked down as ARCHITECTURE.md says: read-only root; the worker loop as root
//! with only the capabilities of [`LOOP_CAPABILITIES`] and crate code as an unprivileged user
//! (docker/worker.sh explains the split); `no-new-privileges`; a pids limit; memory without
//! swap; /build and cargo's home on the slot's own bounded filesystem ([`crate::disk`]) or, with
//! no disk bound, an anonymous volume and a tmpfs; no network, or the agent's guarded one
//! ([`crate::netguard`]); no Docker log (output only goes to us, so gigabytes of it never fill
//! the engine's disk). A container that dies or stops answering is thrown away; the next job gets
//! a new one.

use crate::disk::SlotDisk;
use crate::docker;
use crate::end_marker::{EndLine, EndScanner};
use crate::toolchain::{MOUNT_POINT, Toolchain};
use bollard::Docker;
use bollard::container::LogOutput;
use bollard::models::{ContainerCreateBody, HostConfig, HostConfigLogConfig};
use bollard::query_parameters::{AttachContainerOptionsBuilder, CreateContainerOptionsBuilder};
use futures::{FutureExt, Stream, StreamExt};
use std::collections::HashMap;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncWrite, AsyncWriteExt};

/// The unprivileged user the worker image runs as (`crater`, made by the image build).
pub const CONTAINER_UID: u32 = 1000;

/// Log pieces are gathered up to this size before they are handed on, so a chatty build is not
/// one message per line.
const MAX_PIECE: usize = 64 * 1024;

/// Where the host's CA bundle is mounted; the worker loop points cargo at it.
const CA_MOUNT: &str = "/etc/crater/ca-certificates.crt";

/// The capabilities the worker loop (root in the container) keeps; all others are dropped. The
/// header of docker/worker.sh says what each is for.
pub const LOOP_CAPABILITIES: &[&str] = &["SETUID", "SETGID", "KILL"];

/// What every slot container of an agent shares.
#[derive(Debug, Clone)]
pub struct SlotConfig {
    pub image: String,
    pub toolchain: Toolchain,
    /// The host's CA bundle, so a TLS-inspecting proxy is trusted inside (None: the image's own).
    pub ca_bundle: Option<PathBuf>,
    pub memory_bytes: u64,
    pub pids_limit: i64,
    /// Extra `KEY=value` environment (proxy settings).
    pub env: Vec<String>,
    /// Host binaries (cargo-nextest) mounted read-only into `/opt/crater-tools`.
    pub extra_tools: Vec<PathBuf>,
    /// Whether builds may use the network. Without it, a short-lived fetch container with the
    /// network downloads each crate's dependencies first, and the slot container has none.
    pub network: bool,
    /// The Docker network of containers that have a network (`--network on` slots, fetch
    /// containers): the agent's guarded one, which reaches neither the host nor cloud metadata.
    /// `None`: Docker's default bridge.
    pub network_name: Option<String>,
}

/// A job as the container sees it.
pub struct Job<'a> {
    pub tool: &'a str,
    pub target: &'a str,
    pub timeout: Duration,
    /// The job is stopped when its output stays silent this long.
    pub idle_timeout: Duration,
    /// A gzip'd tar whose one top directory is the crate.
    pub archive: &'a [u8],
}

#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// The container died or its stream broke in the middle of the job.
    #[error("the container was lost: {0}")]
    ContainerLost(String),
    /// The job printed nothing for this long; its container was removed with all it ran.
    #[error("the job printed nothing for {0:?}; it was stopped and its container replaced")]
    Idle(Duration),
    /// No end line came long after the job's own limits should have ended it.
    #[error(
        "the job did not end within {0:?}, long past its time limit; its container was removed"
    )]
    Backstop(Duration),
    /// Docker would not give us a container.
    #[error("could not start a container: {0:#}")]
    Docker(anyhow::Error),
    /// The worker loop said something that is not the protocol.
    #[error("{0}")]
    Protocol(String),
}

/// Where a job's log goes while it runs.
pub trait LogSink {
    fn write(&mut self, bytes: Vec<u8>) -> impl std::future::Future<Output = ()> + Send;
}

type Output = Pin<Box<dyn Stream<Item = Result<LogOutput, bollard::errors::Error>> + Send>>;

struct Container {
    id: String,
    input: Pin<Box<dyn AsyncWrite + Send>>,
    output: Output,
}

pub struct Slot {
    pub index: u32,
    pub cpu: u32,
    docker: Docker,
    config: Arc<SlotConfig>,
    container: Option<Container>,
    generation: u32,
    /// The slot's own filesystem for /build and cargo's home (`--disk-gb`), if it has one.
    disk: Option<SlotDisk>,
}

impl Slot {
    pub fn new(
        index: u32,
        cpu: u32,
        docker: Docker,
        config: Arc<SlotConfig>,
        disk: Option<SlotDisk>,
    ) -> Slot {
        Slot {
            index,
            cpu,
            docker,
            config,
            container: None,
            generation: 0,
            disk,
        }
    }

    pub fn container_id(&self) -> Option<&str> {
        self.container.as_ref().map(|c| c.id.as_str())
    }

    /// Starts the slot's container unless it has a live one.
    pub async fn ensure_container(&mut self) -> anyhow::Result<()> {
        if self.container.is_none() {
            self.container = Some(self.start_container().await?);
        }
        Ok(())
    }

    async fn start_container(&mut self) -> anyhow::Result<Container> {
        self.generation += 1;
        let name = format!(
            "crater-slot{}-{}-{}",
            self.index,
            std::process::id(),
            self.generation
        );
        let body = container_body(&self.config, self.index, Some(self.cpu), self.disk.as_ref());
        let options = CreateContainerOptionsBuilder::default().name(&name).build();
        let id = self.docker.create_container(Some(options), body).await?.id;
        // Attach before start, so not a byte of output is missed.
        let attached = match self
            .docker
            .attach_container(&id, Some(attach_options(true)))
            .await
        {
            Ok(attached) => attached,
            Err(e) => {
                docker::remove(&self.docker, &id).await;
                return Err(e.into());
            }
        };
        if let Err(e) = self.docker.start_container(&id, None).await {
            docker::remove(&self.docker, &id).await;
            return Err(e.into());
        }
        tracing::debug!(slot = self.index, cpu = self.cpu, container = %id, "container started");
        Ok(Container {
            id,
            input: attached.input,
            output: attached.output,
        })
    }

    /// Runs one job in the slot's container, streaming its log into `log`.
    ///
    /// On any error but [`JobError::Docker`] the container has been removed; the caller decides
    /// whether to run the job again in a new one.
    pub async fn run_job(
        &mut self,
        job: &Job<'_>,
        log: &mut impl LogSink,
    ) -> Result<EndLine, JobError> {
        self.ensure_container().await.map_err(JobError::Docker)?;
        let prepared = !self.config.network;
        if prepared {
            let code = self.fetch(job, log).await?;
            if code != 0 {
                return Ok(EndLine {
                    failed_step: Some("prepare".to_owned()),
                    exit_code: code,
                    timed_out: false,
                    oom: false,
                    peak_memory_bytes: 0,
                    no_space: false,
                });
            }
        }
        let nonce = hex::encode(rand::random::<[u8; 16]>());
        let backstop = job.timeout * 4 + Duration::from_secs(120);
        let exchange = self.exchange(&nonce, job, prepared, log);
        let result = tokio::time::timeout(backstop, exchange).await;
        if let Some(disk) = &self.disk {
            // The worker emptied /build and cargo's home: their blocks go back to the host.
            disk.trim().await;
        }
        match result {
            Ok(Ok(end)) => Ok(end),
            Ok(Err(e)) => {
                let why = self.discard_container().await;
                Err(match e {
                    JobError::ContainerLost(msg) => JobError::ContainerLost(format!("{msg}{why}")),
                    e => e,
                })
            }
            Err(_) => {
                self.discard_container().await;
                Err(JobError::Backstop(backstop))
            }
        }
    }

    async fn exchange(
        &mut self,
        nonce: &str,
        job: &Job<'_>,
        prepared: bool,
        log: &mut impl LogSink,
    ) -> Result<EndLine, JobError> {
        let container = self.container.as_mut().expect("ensured");
        // A prepared crate is already in /build: no archive follows.
        let archive: &[u8] = if prepared { &[] } else { job.archive };
        let header = format!(
            "job {nonce} {} {} {} {} {}\n",
            job.tool,
            job.target,
            job.timeout.as_secs().max(1),
            archive.len(),
            u8::from(prepared)
        );
        let lost = |e: std::io::Error| JobError::ContainerLost(format!("writing the job: {e}"));
        container
            .input
            .write_all(header.as_bytes())
            .await
            .map_err(lost)?;
        container.input.write_all(archive).await.map_err(lost)?;
        container.input.flush().await.map_err(lost)?;

        let mut scanner = EndScanner::new(nonce);
        loop {
            let next = tokio::time::timeout(job.idle_timeout, next_piece(&mut container.output));
            let Ok(next) = next.await else {
                return Err(JobError::Idle(job.idle_timeout));
            };
            let piece = match next {
                Ok(Some(piece)) => piece,
                Ok(None) => {
                    let rest = scanner.into_remainder();
                    if !rest.is_empty() {
                        log.write(rest).await;
                    }
                    return Err(JobError::ContainerLost("its output ended".into()));
                }
                Err(e) => return Err(JobError::ContainerLost(e.to_string())),
            };
            let scanned = scanner.feed(&piece);
            if !scanned.log.is_empty() {
                log.write(scanned.log).await;
            }
            if let Some(end) = scanned.end {
                return end.map_err(JobError::Protocol);
            }
        }
    }

    /// The networked half of an offline build: a fetch container sharing the slot's /build and
    /// cargo home unpacks the crate and downloads its dependencies. Returns its exit status.
    async fn fetch(&mut self, job: &Job<'_>, log: &mut impl LogSink) -> Result<i32, JobError> {
        let slot_id = self.container_id().expect("ensured").to_owned();
        let mut body = container_body(&self.config, self.index, Some(self.cpu), self.disk.as_ref());
        let host = body.host_config.as_mut().expect("set");
        host.network_mode = self.config.network_name.clone();
        host.volumes_from = Some(vec![slot_id]);
        host.tmpfs.as_mut().expect("set").remove("/cargo");
        body.volumes = None;
        body.stdin_once = Some(true);
        body.cmd = Some(vec![
            "--fetch".to_owned(),
            job.timeout.as_secs().max(1).to_string(),
            job.archive.len().to_string(),
        ]);
        let docker = self.docker.clone();
        let id = docker
            .create_container(None, body)
            .await
            .map_err(|e| JobError::Docker(e.into()))?
            .id;
        let result = async {
            let mut attached = docker
                .attach_container(&id, Some(attach_options(true)))
                .await?;
            docker.start_container(&id, None).await?;
            attached.input.write_all(job.archive).await?;
            attached.input.shutdown().await?;
            loop {
                let next = tokio::time::timeout(job.idle_timeout, next_piece(&mut attached.output));
                match next.await {
                    Err(_) => return Ok(Err(JobError::Idle(job.idle_timeout))),
                    Ok(piece) => match piece? {
                        Some(piece) => log.write(piece).await,
                        None => break,
                    },
                }
            }
            let info = docker.inspect_container(&id, None).await?;
            let code = info.state.and_then(|s| s.exit_code).unwrap_or(-1);
            anyhow::Ok(Ok(i32::try_from(code).unwrap_or(-1)))
        }
        .await;
        docker::remove(&docker, &id).await;
        result.map_err(JobError::Docker)?
    }

    /// Removes the container and says how it ended, for the log.
    async fn discard_container(&mut self) -> String {
        let Some(container) = self.container.take() else {
            return String::new();
        };
        let why = match self.docker.inspect_container(&container.id, None).await {
            Ok(info) => info
                .state
                .map(|s| {
                    format!(
                        " (container {}: running {}, exit code {}, OOM-killed {})",
                        &container.id[..12.min(container.id.len())],
                        s.running.unwrap_or(false),
                        s.exit_code.unwrap_or(-1),
                        s.oom_killed.unwrap_or(false)
                    )
                })
                .unwrap_or_default(),
            Err(_) => " (the container is gone)".to_owned(),
        };
        docker::remove(&self.docker, &container.id).await;
        why
    }

    /// Stops whatever job the container was running, mid-way (the coordinator took it away):
    /// the container goes, and the next job gets a new one, which starts from a clean /build.
    pub async fn abandon_job(&mut self) {
        self.discard_container().await;
        if let Some(disk) = &self.disk {
            disk.trim().await;
        }
    }

    /// Removes the slot's container, if any, and then its disk.
    pub async fn shutdown(&mut self) {
        if let Some(container) = self.container.take() {
            docker::remove(&self.docker, &container.id).await;
        }
        if let Some(disk) = self.disk.take() {
            disk.remove().await;
        }
    }
}

/// The container every slot runs: see the module documentation for why each setting.
fn container_body(
    config: &SlotConfig,
    index: u32,
    cpu: Option<u32>,
    disk: Option<&SlotDisk>,
) -> ContainerCreateBody {
    let mut binds: Vec<String> = (config.toolchain.sysroot.iter())
        .map(|sysroot| format!("{}:{MOUNT_POINT}:ro", sysroot.display()))
        .collect();
    if let Some(ca) = &config.ca_bundle {
        binds.push(format!("{}:{CA_MOUNT}:ro", ca.display()));
    }
    for tool in &config.extra_tools {
        if let Some(name) = tool.file_name() {
            let name = name.to_string_lossy();
            binds.push(format!("{}:/opt/crater-tools/{name}:ro", tool.display()));
        }
    }
    let memory = i64::try_from(config.memory_bytes).unwrap_or(i64::MAX);
    let mut labels = docker::owner_labels();
    labels.insert("org.crater-at-home.slot-index".into(), index.to_string());
    // /run/crater is root's alone (0700): the loop's bookkeeping and the cargo home and scratch
    // of Miri's sysroot build (whose build scripts must be able to run: exec).
    let mut tmpfs = HashMap::from([
        (
            "/tmp".to_owned(),
            "rw,exec,nosuid,nodev,mode=1777".to_owned(),
        ),
        (
            "/run/crater".to_owned(),
            "rw,exec,nosuid,nodev,mode=0700".to_owned(),
        ),
        (
            "/opt/miri-sysroot".to_owned(),
            "rw,exec,nosuid,nodev,mode=0755".to_owned(),
        ),
    ]);
    let mut volumes = Vec::new();
    match disk {
        Some(disk) => binds.push(format!("{}:/build", disk.build_dir().display())),
        None => volumes.push("/build".to_owned()),
    }
    if config.network {
        // A tmpfs, as the seed: faster than the slot's disk for cargo's many small files, and
        // bounded all the same (by the memory limit: tmpfs pages are the container's).
        tmpfs.insert(
            "/cargo".to_owned(),
            "rw,exec,nosuid,nodev,mode=1777".to_owned(),
        );
    } else {
        // Shared with the fetch container, which a tmpfs could not be.
        match disk {
            Some(disk) => binds.push(format!("{}:/cargo", disk.cargo_dir().display())),
            None => volumes.push("/cargo".to_owned()),
        }
    }
    let mut env = vec![format!("CRATER_SLOT={index}")];
    env.extend(config.env.iter().cloned());
    let network_mode = if config.network {
        config.network_name.clone()
    } else {
        Some("none".to_owned())
    };
    ContainerCreateBody {
        image: Some(config.image.clone()),
        user: Some("0:0".to_owned()),
        env: Some(env),
        labels: Some(labels),
        attach_stdin: Some(true),
        attach_stdout: Some(true),
        attach_stderr: Some(true),
        open_stdin: Some(true),
        // Stdin closes when the agent's attachment does: a container whose agent died (kill -9)
        // reads EOF after its current job, and the worker loop ends instead of idling forever.
        stdin_once: Some(true),
        tty: Some(false),
        volumes: Some(volumes),
        host_config: Some(HostConfig {
            cpuset_cpus: cpu.map(|c| c.to_string()),
            memory: Some(memory),
            memory_swap: Some(memory), // equal to memory: no swap
            pids_limit: Some(config.pids_limit),
            readonly_rootfs: Some(true),
            cap_drop: Some(vec!["ALL".to_owned()]),
            cap_add: Some(LOOP_CAPABILITIES.iter().map(|c| c.to_string()).collect()),
            security_opt: Some(vec!["no-new-privileges".to_owned()]),
            tmpfs: Some(tmpfs),
            network_mode,
            binds: Some(binds),
            log_config: Some(HostConfigLogConfig {
                typ: Some("none".to_owned()),
                config: None,
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Runs the worker image once with `args` (in a container locked down like a slot's) and returns
/// what it printed.
pub async fn run_once(
    docker: &Docker,
    config: &SlotConfig,
    args: &[&str],
) -> anyhow::Result<String> {
    let mut body = container_body(config, u32::MAX, None, None);
    body.host_config.as_mut().expect("set").network_mode = Some("none".to_owned());
    body.cmd = Some(args.iter().map(|a| a.to_string()).collect());
    body.open_stdin = Some(false);
    body.attach_stdin = Some(false);
    let id = docker.create_container(None, body).await?.id;
    let result = async {
        let mut output = docker
            .attach_container(&id, Some(attach_options(false)))
            .await?
            .output;
        docker.start_container(&id, None).await?;
        let mut text = Vec::new();
        let collect = async {
            while let Some(piece) = output.next().await {
                text.extend_from_slice(&payload(piece?));
            }
            anyhow::Ok(())
        };
        tokio::time::timeout(Duration::from_secs(120), collect)
            .await
            .map_err(|_| anyhow::anyhow!("the worker image did not answer {args:?} in time"))??;
        Ok(String::from_utf8_lossy(&text).into_owned())
    }
    .await;
    docker::remove(docker, &id).await;
    result
}

/// Attaching to a container's output (and its input, if `stdin`), as a stream. Done before the
/// container starts, so not a byte of output is missed.
fn attach_options(stdin: bool) -> bollard::query_parameters::AttachContainerOptions {
    AttachContainerOptionsBuilder::default()
        .stdin(stdin)
        .stdout(true)
        .stderr(true)
        .stream(true)
        .build()
}

/// The next output, with whatever more is already waiting appended (up to [`MAX_PIECE`]).
async fn next_piece(output: &mut Output) -> Result<Option<Vec<u8>>, bollard::errors::Error> {
    let Some(first) = output.next().await else {
        return Ok(None);
    };
    let mut piece = Vec::from(payload(first?).as_ref());
    while piece.len() < MAX_PIECE {
        match output.next().now_or_never() {
            Some(Some(more)) => piece.extend_from_slice(&payload(more?)),
            _ => break,
        }
    }
    Ok(Some(piece))
}

fn payload(output: LogOutput) -> bytes::Bytes {
    match output {
        LogOutput::StdOut { message }
        | LogOutput::StdErr { message }
        | LogOutput::Console { message } => message,
        LogOutput::StdIn { .. } => bytes::Bytes::new(),
    }
}

/// The CPUs this process may run on, from the kernel's view of its affinity.
pub fn allowed_cpus() -> Vec<u32> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let list = status
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        .unwrap_or("");
    match cpulist::parse(list.trim()) {
        Ok(cpus) if !cpus.is_empty() => cpus,
        _ => {
            let n = std::thread::available_parallelism().map_or(1, |n| n.get() as u32);
            (0..n).collect()
        }
    }
}

/// `--cpus`: a CPU list in the kernel's format (`0-3,8,10-11`), each of them one this process
/// may use.
pub fn parse_cpus(list: &str) -> Result<Vec<u32>, String> {
    let cpus = cpulist::parse(list).map_err(|e| format!("not a CPU list like 0-3,8: {e}"))?;
    if cpus.is_empty() {
        return Err("names no CPU".to_owned());
    }
    let allowed = allowed_cpus();
    if let Some(cpu) = cpus.iter().find(|c| !allowed.contains(c)) {
        return Err(format!(
            "CPU {cpu} is not one this process may use ({})",
            cpulist::emit(allowed)
        ));
    }
    Ok(cpus)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists() {
        let allowed = allowed_cpus();
        assert!(!allowed.is_empty());
        let first = allowed[0];
        assert_eq!(parse_cpus(&first.to_string()), Ok(vec![first]));
        assert_eq!(parse_cpus(&cpulist::emit(allowed.clone())), Ok(allowed));
        assert!(
            parse_cpus("100000")
                .unwrap_err()
                .contains("not one this process may use")
        );
        assert!(parse_cpus("2-").unwrap_err().contains("not a CPU list"));
        assert!(parse_cpus("").is_err());
    }
}
