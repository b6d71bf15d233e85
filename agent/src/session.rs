//! An agent's session with its coordinator: its slots set up, one loop per slot, and the
//! [`link`](crate::link) that carries their work to and from the coordinator.
//!
//! Each slot loop waits for one job, runs it, writes its log into [`Held`] (a file per job, sent
//! on by the link) and ends it with its `JobDone`, then waits again. A container lost mid-job is
//! replaced and the job run again in the new one, up to [`MAX_TRIES`] times, with a banner in the
//! log saying so; after that the job ends as a harness error with all the log it produced. The
//! slots do not notice the coordinator coming and going. The agent stops when it is drained and
//! every result is acknowledged, or when `shutdown` fires (running jobs are given back); it
//! removes its containers on the way out.

use crate::disk::{self, SlotDisk};
use crate::fetch::{DEFAULT_DOWNLOAD_URL, Downloader};
use crate::held::Held;
use crate::job_log::JobLog;
use crate::link;
use crate::netguard::NetGuard;
use crate::probe::{Capabilities, probe_tools};
use crate::slot::{Job, JobError, Slot, SlotConfig, allowed_cpus};
use crate::toolchain::{Toolchain, ToolchainSource};
use crate::{docker, image, netguard};
use anyhow::{Context, Result};
use crater_proto::pb;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// How many times a job is started before a lost container makes it a harness error.
pub const MAX_TRIES: u32 = 3;

/// The idle limit when the coordinator sets none.
const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(30 * 60);

#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// The coordinator's URL, e.g. `http://127.0.0.1:7878`.
    pub coordinator: String,
    /// The fleet's CA, trusted besides the system's roots (`--ca-cert`).
    pub coordinator_ca: Option<PathBuf>,
    /// The agent token sent with `Work` (`--token-file`, `CRATER_TOKEN`); redacted in `Debug`.
    pub coordinator_token: Option<crater_proto::auth::Token>,
    pub name: String,
    pub slots: u32,
    pub memory_bytes: u64,
    pub pids_limit: i64,
    /// The CPUs slot containers are pinned to (`--cpus`); `None`: those this process may use.
    pub cpus: Option<Vec<u32>>,
    /// Cancelled to drain: no new work; running jobs finish (until `shutdown` stops them, and
    /// they are given back to the coordinator).
    pub drain: CancellationToken,
    /// Each slot's own filesystem for /build and cargo's home, in bytes (`--disk-gb`); 0: none.
    pub disk_bytes: u64,
    /// Where the slots' filesystems are made ([`disk::DEFAULT_ROOT`]).
    pub disk_root: PathBuf,
    /// The worker image; `None` uses the registry-free image, built when missing.
    pub image: Option<String>,
    pub toolchain: ToolchainSource,
    /// The CA bundle to give the containers; `None` leaves them the image's own.
    pub ca_bundle: Option<PathBuf>,
    pub download_url: String,
    /// Whether builds may use the network (`--network on|off`).
    pub network: bool,
    /// What the image and toolchain can run, when the caller already asked ([`probe`]); `None`
    /// probes at start.
    pub capabilities: Option<Capabilities>,
}

impl AgentConfig {
    pub fn new(coordinator: impl Into<String>) -> AgentConfig {
        let ca = PathBuf::from("/etc/ssl/certs/ca-certificates.crt");
        AgentConfig {
            coordinator: coordinator.into(),
            coordinator_ca: None,
            coordinator_token: None,
            name: docker::hostname(),
            slots: allowed_cpus().len() as u32,
            memory_bytes: 8 << 30,
            pids_limit: 4096,
            cpus: None,
            drain: CancellationToken::new(),
            disk_bytes: 20 << 30,
            disk_root: PathBuf::from(disk::DEFAULT_ROOT),
            image: None,
            toolchain: ToolchainSource::Host,
            ca_bundle: ca.is_file().then_some(ca),
            download_url: DEFAULT_DOWNLOAD_URL.to_owned(),
            network: false,
            capabilities: None,
        }
    }
}

/// The settings every slot container shares, with the toolchain found and the image ready.
async fn slot_config(config: &AgentConfig, docker: &bollard::Docker) -> Result<SlotConfig> {
    let image = match &config.image {
        Some(image) => image.clone(),
        None => image::ensure_local_image(docker, false).await?,
    };
    let toolchain = Toolchain::detect(&config.toolchain)?;
    // cargo-nextest lives beside rustup's proxies, not in the toolchain: mount it when the
    // toolchain comes from the host too.
    let extra_tools = match config.toolchain {
        ToolchainSource::Image => Vec::new(),
        _ => find_in_path("cargo-nextest").into_iter().collect(),
    };
    Ok(SlotConfig {
        image,
        toolchain,
        ca_bundle: config.ca_bundle.clone(),
        memory_bytes: config.memory_bytes,
        pids_limit: config.pids_limit,
        env: proxy_env(),
        extra_tools,
        network: config.network,
        network_name: None,
    })
}

/// Which tools an agent with `config` can run, asked of its image and toolchain.
pub async fn probe(config: &AgentConfig) -> Result<Capabilities> {
    let docker = docker::connect().await?;
    let slot_config = slot_config(config, &docker).await?;
    probe_tools(&docker, &slot_config).await
}

/// Runs an agent until its coordinator drains it, its stream ends, or `shutdown` fires.
pub async fn run_agent(config: AgentConfig, shutdown: CancellationToken) -> Result<()> {
    let docker = docker::connect().await?;
    // Refuse a disk bound that cannot be had before anything is set up.
    if config.disk_bytes > 0
        && let Some(warning) = disk::preflight(&config.disk_root, config.slots, config.disk_bytes)?
    {
        tracing::warn!("{warning}");
    }
    let removed = docker::remove_leftovers(&docker).await?;
    if removed > 0 {
        tracing::info!("removed {removed} containers left behind by earlier agents");
    }
    let removed = netguard::remove_leftovers(&docker).await?;
    if config.disk_bytes > 0 {
        let disks = disk::remove_leftovers(&config.disk_root).await?;
        if removed + disks > 0 {
            tracing::info!(
                "removed {removed} networks and firewall rules and {disks} slot disks of earlier agents"
            );
        }
    }
    let mut slot_config = slot_config(&config, &docker).await?;
    // Containers with a network get the guarded one. Without it crate code could reach the host
    // and cloud metadata: with `--network on` that is refused; offline, only the fetch
    // containers have a network and they run no crate code, so Docker's bridge will do.
    let guard = match NetGuard::install(&docker).await {
        Ok(guard) => Some(guard),
        Err(e) if config.network => return Err(e),
        Err(e) => {
            tracing::warn!("fetch containers use Docker's default bridge: {e:#}");
            None
        }
    };
    slot_config.network_name = guard.as_ref().map(|g| g.network_name().to_owned());
    let slot_config = Arc::new(slot_config);
    let result = run_slots(&config, &docker, slot_config, shutdown).await;
    if let Some(guard) = guard {
        guard.remove(&docker).await;
    }
    result
}

/// Makes the slots (their disks and containers), runs the session, and removes them all again.
async fn run_slots(
    config: &AgentConfig,
    docker: &bollard::Docker,
    slot_config: Arc<SlotConfig>,
    shutdown: CancellationToken,
) -> Result<()> {
    let toolchain = slot_config.toolchain.clone();
    let capabilities = match &config.capabilities {
        Some(known) => known.clone(),
        None => probe_tools(docker, &slot_config).await?,
    };
    for (tool, reason) in capabilities
        .iter()
        .filter_map(|(t, c)| Some((t, c.as_ref().err()?)))
    {
        tracing::info!("tool {tool} is not available here: {reason}");
    }
    let tools: Vec<String> = capabilities
        .iter()
        .filter(|(_, c)| c.is_ok())
        .map(|(t, _)| t.clone())
        .collect();
    let cpus = config.cpus.clone().unwrap_or_else(allowed_cpus);
    let mut slots = Vec::new();
    for i in 0..config.slots {
        let disk = match config.disk_bytes {
            0 => Ok(None),
            bytes => SlotDisk::create(&config.disk_root, i, bytes)
                .await
                .map(Some),
        };
        let disk = match disk {
            Ok(disk) => disk,
            Err(e) => {
                shutdown_slots(&mut slots).await;
                return Err(e.context(format!("making slot {i}'s disk (--disk-gb)")));
            }
        };
        let cpu = cpus[i as usize % cpus.len()];
        slots.push(Slot::new(i, cpu, docker.clone(), slot_config.clone(), disk));
    }
    // Start every container before saying hello, so a broken image fails here, loudly.
    let started = futures::future::join_all(slots.iter_mut().map(|s| s.ensure_container())).await;
    if let Some(e) = started.into_iter().find_map(Result::err) {
        shutdown_slots(&mut slots).await;
        return Err(e.context("starting the slot containers"));
    }
    let result = session(config, &toolchain, &tools, &mut slots, shutdown).await;
    // A fetch container whose job was interrupted (Ctrl-C, a lost coordinator) was dropped
    // mid-flight with nobody left to remove it: every container of this process goes, before
    // the slots' disks are unmounted from under them.
    match docker::labelled_containers(docker, Some(std::process::id())).await {
        Ok(left) => {
            for id in left {
                docker::remove(docker, &id).await;
            }
        }
        Err(e) => tracing::warn!("could not list this agent's containers: {e:#}"),
    }
    shutdown_slots(&mut slots).await;
    result
}

async fn shutdown_slots(slots: &mut [Slot]) {
    futures::future::join_all(slots.iter_mut().map(Slot::shutdown)).await;
}

async fn session(
    config: &AgentConfig,
    toolchain: &Toolchain,
    tools: &[String],
    slots: &mut [Slot],
    shutdown: CancellationToken,
) -> Result<()> {
    let held = Arc::new(Held::new().context("making a directory for the jobs' logs")?);
    let hello = pb::Hello {
        agent_name: config.name.clone(),
        protocol_version: crater_proto::PROTOCOL_VERSION,
        agent_version: env!("CARGO_PKG_VERSION").to_owned(),
        slots: config.slots,
        memory_per_slot_bytes: config.memory_bytes,
        tools: tools.to_vec(),
        targets: vec![toolchain.host_target.clone()],
        // The same for this process's life, so a coordinator knows it when it comes back.
        agent_id: hex::encode(rand::random::<[u8; 16]>()),
        held: Vec::new(),
        toolchain: toolchain.version.clone(),
    };
    tracing::info!(coordinator = %config.coordinator, slots = slots.len(), "agent ready");

    let stop = shutdown.child_token();
    let downloader = Downloader::new(config.download_url.clone())?;
    let ctx = SlotContext {
        held: held.clone(),
        downloader,
        stop: stop.clone(),
        host_target: toolchain.host_target.clone(),
    };
    let slot_loops = futures::future::join_all(slots.iter_mut().map(|slot| {
        held.slot_started();
        slot_loop(slot, &ctx)
    }));
    let linked = async {
        let address = link::Address {
            url: &config.coordinator,
            ca: config.coordinator_ca.as_deref(),
            token: config.coordinator_token.as_ref(),
        };
        let linked = link::run(address, &held, &hello, &stop).await;
        // A refusal, or the end: either way the slots stop (giving back what runs).
        stop.cancel();
        linked
    };
    let drain = async {
        tokio::select! {
            () = config.drain.cancelled() => {
                tracing::info!("draining: finishing running jobs, taking no new ones");
                held.drain();
            }
            () = stop.cancelled() => {}
        }
    };
    let (linked, _, ()) = tokio::join!(linked, slot_loops, drain);
    linked
}

struct SlotContext {
    held: Arc<Held>,
    downloader: Downloader,
    stop: CancellationToken,
    host_target: String,
}

/// How a slot's job ended.
enum Outcome {
    Done(pb::JobDone),
    /// The coordinator took it away.
    Dropped,
    /// The agent is stopping.
    Stopped,
}

async fn slot_loop(slot: &mut Slot, ctx: &SlotContext) {
    loop {
        let Some(next) = ctx.held.want_work(slot.index) else {
            break; // drained
        };
        let assign = tokio::select! {
            a = next => match a {
                Ok(a) => a,
                Err(_) => break, // drained
            },
            () = ctx.stop.cancelled() => break,
        };
        let file = match ctx.held.start(&assign) {
            Ok(file) => file,
            Err(e) => {
                tracing::error!(
                    job = assign.job_id,
                    "cannot keep the job's log on this machine ({e}): giving it back"
                );
                ctx.held.give_back(assign.job_id, assign.attempt);
                tokio::time::sleep(Duration::from_secs(10)).await;
                continue;
            }
        };
        let (id, dropped) = (file.id, file.dropped.clone());
        let max_log_bytes = assign.limits.unwrap_or_default().max_log_bytes;
        let log = JobLog::new(ctx.held.clone(), file, max_log_bytes);
        let outcome = tokio::select! {
            done = run_assigned(slot, assign, ctx, log) => Outcome::Done(done),
            () = dropped.cancelled() => Outcome::Dropped,
            () = ctx.stop.cancelled() => Outcome::Stopped,
        };
        match outcome {
            Outcome::Done(done) => ctx.held.finish(id, done),
            Outcome::Dropped => {
                tracing::info!(
                    slot = slot.index,
                    "the coordinator took the job away: stopping it"
                );
                slot.abandon_job().await;
            }
            Outcome::Stopped => {
                // Stopped mid-job (the drain ran out of time, a second signal): the job goes
                // back to the coordinator now, not after the lease timeout. Its container is
                // removed with the slot.
                ctx.held.release(id);
                break;
            }
        }
    }
    ctx.held.slot_ended();
}

async fn run_assigned(
    slot: &mut Slot,
    assign: pb::Assign,
    ctx: &SlotContext,
    mut log: JobLog,
) -> pb::JobDone {
    let started = Instant::now();
    let limits = assign.limits.unwrap_or_default();
    let mut done = pb::JobDone {
        job_id: assign.job_id,
        attempt: assign.attempt,
        slot: slot.index,
        ..Default::default()
    };
    let krate = assign.krate.unwrap_or_default();
    tracing::info!(
        slot = slot.index,
        "{} {} ({})",
        krate.name,
        krate.version,
        assign.tool
    );
    let archive = match krate.source {
        Some(pb::crate_spec::Source::RegistryChecksum(checksum)) => ctx
            .downloader
            .download(&krate.name, &krate.version, &checksum)
            .await
            .map_err(|e| e.to_string()),
        Some(pb::crate_spec::Source::LocalArchive(archive)) => Ok(archive.into()),
        None => Err("the coordinator sent no crate source".to_owned()),
    };
    match archive {
        Err(e) => {
            log.banner(&format!("could not get the crate: {e}")).await;
            done.harness_error = e;
        }
        Ok(archive) => {
            let target = if assign.target.is_empty() {
                &ctx.host_target
            } else {
                &assign.target
            };
            let secs = |s: u64, default: Duration| {
                if s == 0 {
                    default
                } else {
                    Duration::from_secs(s)
                }
            };
            let job = Job {
                tool: &assign.tool,
                target,
                timeout: secs(limits.timeout_secs, Duration::from_secs(3600)),
                idle_timeout: secs(limits.idle_timeout_secs, DEFAULT_IDLE_TIMEOUT),
                archive: &archive,
            };
            for try_no in 1..=MAX_TRIES {
                done.tries = try_no;
                match slot.run_job(&job, &mut log).await {
                    Ok(end) => {
                        done.failed_step = end.failed_step.unwrap_or_default();
                        done.exit_code = end.exit_code;
                        done.timed_out = end.timed_out;
                        if end.timed_out {
                            done.timeout_kind = "wall".to_owned();
                        }
                        done.oom = end.oom;
                        done.no_space = end.no_space;
                        done.peak_memory_bytes = end.peak_memory_bytes;
                        break;
                    }
                    Err(e @ (JobError::ContainerLost(_) | JobError::Docker(_)))
                        if try_no < MAX_TRIES =>
                    {
                        let again = try_no + 1;
                        log.banner(&format!("{e}; running the job again in a new container (try {again} of {MAX_TRIES})")).await;
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                    Err(e @ (JobError::Idle(_) | JobError::Backstop(_))) => {
                        log.banner(&e.to_string()).await;
                        done.timed_out = true;
                        done.timeout_kind = match e {
                            JobError::Idle(_) => "idle",
                            _ => "backstop",
                        }
                        .to_owned();
                        break;
                    }
                    Err(e) => {
                        log.banner(&e.to_string()).await;
                        done.harness_error = e.to_string();
                        break;
                    }
                }
            }
        }
    }
    done.duration_ms = started.elapsed().as_millis() as u64;
    let kept = log.finish().await;
    done.log_bytes = kept.bytes;
    done.log_sha256 = kept.sha256;
    done.log_truncated_bytes = kept.dropped;
    if let Some(e) = kept.failed
        && done.harness_error.is_empty()
    {
        done.harness_error = format!("the agent could not keep the log on its disk: {e}");
    }
    done
}

fn find_in_path(program: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(program))
        .find(|path| path.is_file())
}

/// Proxy settings of the agent's own environment, passed on so cargo in the container uses them.
fn proxy_env() -> Vec<String> {
    [
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "NO_PROXY",
        "http_proxy",
        "https_proxy",
        "no_proxy",
    ]
    .iter()
    .filter_map(|k| std::env::var(k).ok().map(|v| format!("{k}={v}")))
    .collect()
}
