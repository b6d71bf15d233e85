//! An agent's session with its coordinator: one `Work` stream, one loop per slot.
//!
//! Each slot loop asks for one job (`WantWork`), runs it, streams its log as `LogChunk`s and ends
//! it with `JobDone`, then asks again. A container lost mid-job is replaced and the job run again
//! in the new one, up to [`MAX_TRIES`] times, with a banner in the log saying so; after that the
//! job ends as a harness error with all the log it produced. The agent stops when the
//! coordinator drains it or `shutdown` fires, and removes its containers on the way out.

use crate::disk::{self, SlotDisk};
use crate::fetch::{DEFAULT_DOWNLOAD_URL, Downloader};
use crate::netguard::NetGuard;
use crate::probe::{Capabilities, probe_tools};
use crate::slot::{Job, JobError, LogSink, Slot, SlotConfig, allowed_cpus};
use crate::toolchain::{Toolchain, ToolchainSource};
use crate::{docker, image, netguard};
use anyhow::{Result, bail};
use backon::{ConstantBuilder, Retryable};
use crater_proto::client;
use crater_proto::pb::{
    self, agent_message::Msg as AgentMsg, coordinator_message::Msg as CoordMsg,
};
use sha2::{Digest, Sha256};
use std::collections::{BTreeSet, HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;

/// How many times a job is started before a lost container makes it a harness error.
pub const MAX_TRIES: u32 = 3;

/// How much of the end of a log is kept when it passes its size limit.
pub const LOG_TAIL_BYTES: usize = 64 * 1024;

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
    let mut client = connect(config).await?;
    let (tx, rx) = mpsc::channel::<pb::AgentMessage>(256);
    tx.send(msg(AgentMsg::Hello(pb::Hello {
        agent_name: config.name.clone(),
        protocol_version: crater_proto::PROTOCOL_VERSION,
        agent_version: env!("CARGO_PKG_VERSION").to_owned(),
        slots: config.slots,
        memory_per_slot_bytes: config.memory_bytes,
        tools: tools.to_vec(),
        targets: vec![toolchain.host_target.clone()],
    })))
    .await?;
    let mut inbound = client
        .work(ReceiverStream::new(rx))
        .await
        .map_err(|s| anyhow::anyhow!("the coordinator refused this agent: {}", s.message()))?
        .into_inner();
    let heartbeat_every = match inbound.message().await {
        Ok(Some(pb::CoordinatorMessage {
            msg: Some(CoordMsg::Welcome(welcome)),
        })) => Duration::from_secs(welcome.heartbeat_interval_secs.max(1).into()),
        Ok(other) => bail!("the coordinator answered hello with {other:?}"),
        Err(s) => bail!("the coordinator refused this agent: {}", s.message()),
    };
    tracing::info!(coordinator = %config.coordinator, slots = slots.len(), "connected");

    let stop = shutdown.child_token();
    let running = Arc::new(Mutex::new(BTreeSet::new()));
    let downloader = Downloader::new(config.download_url.clone())?;
    let mut assign_txs = HashMap::new();
    let mut slot_loops = Vec::new();
    for slot in slots.iter_mut() {
        let (assign_tx, assign_rx) = mpsc::channel(1);
        assign_txs.insert(slot.index, assign_tx);
        let ctx = SlotContext {
            tx: tx.clone(),
            downloader: downloader.clone(),
            running: running.clone(),
            stop: stop.clone(),
            draining: config.drain.clone(),
            host_target: toolchain.host_target.clone(),
        };
        slot_loops.push(slot_loop(slot, assign_rx, ctx));
    }

    let router = async {
        let mut drained = false;
        loop {
            let message = tokio::select! {
                m = inbound.message() => m,
                () = stop.cancelled() => return Ok(()),
                () = config.drain.cancelled(), if !drained => {
                    tracing::info!("draining: finishing running jobs, taking no new ones");
                    drained = true;
                    assign_txs.clear(); // slot loops end when their job is done
                    continue;
                }
            };
            match message {
                Ok(Some(pb::CoordinatorMessage { msg: Some(m) })) => match m {
                    CoordMsg::Assign(assign) => match assign_txs.get(&assign.slot) {
                        Some(slot_tx) => slot_tx.send(assign).await?,
                        // Draining (or a slot we do not have): give it back at once.
                        None => {
                            let release = pb::Release {
                                job_id: assign.job_id,
                                attempt: assign.attempt,
                            };
                            tx.send(msg(AgentMsg::Release(release))).await?;
                        }
                    },
                    CoordMsg::Drain(_) => {
                        tracing::info!("drained by the coordinator: finishing running jobs");
                        assign_txs.clear(); // slot loops end when their job is done
                    }
                    CoordMsg::Cancel(c) => {
                        tracing::warn!(job = c.job_id, "cancel is not supported yet")
                    }
                    CoordMsg::Welcome(_) => {}
                },
                Ok(Some(_)) => {}
                Ok(None) => {
                    if assign_txs.is_empty() {
                        return Ok(());
                    }
                    stop.cancel();
                    bail!("the coordinator closed the connection");
                }
                Err(status) => {
                    stop.cancel();
                    bail!("lost the coordinator: {}", status.message());
                }
            }
        }
    };
    let heartbeats = async {
        let mut tick = tokio::time::interval(heartbeat_every);
        loop {
            tick.tick().await;
            let ids = running.lock().unwrap().iter().copied().collect();
            let beat = msg(AgentMsg::Heartbeat(pb::Heartbeat {
                running_job_ids: ids,
            }));
            if tx.send(beat).await.is_err() {
                break;
            }
        }
    };
    let routed = {
        let slots_done = futures::future::join_all(slot_loops);
        tokio::pin!(router, slots_done);
        tokio::select! {
            _ = &mut slots_done => Ok(()),
            r = &mut router => {
                // Drained: let the running jobs finish. Otherwise they were stopped.
                slots_done.await;
                r
            }
            () = heartbeats => Ok(()),
        }
    };
    // Hang up politely: end our side of the stream and let the coordinator read what is still
    // on its way (the last JobDone, Releases) and close its side. Dropping the stream instead
    // would reset it and lose them.
    drop(tx);
    let closed = async { while let Ok(Some(_)) = inbound.message().await {} };
    if tokio::time::timeout(Duration::from_secs(10), closed)
        .await
        .is_err()
    {
        tracing::warn!("the coordinator did not close the stream within 10 s");
    }
    routed
}

async fn connect(config: &AgentConfig) -> Result<crater_proto::client::Client> {
    let url = &config.coordinator;
    let token = config.coordinator_token.as_ref();
    let endpoint = client::endpoint(url, config.coordinator_ca.as_deref(), token)?
        .connect_timeout(Duration::from_secs(10))
        // A coordinator that vanished (a partition, a dead host) is noticed in seconds.
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_timeout(Duration::from_secs(20))
        .keep_alive_while_idle(true);
    // A coordinator that is not up yet is worth waiting for; a TLS refusal (its certificate,
    // our CA) is not.
    let channel = (|| endpoint.connect())
        .retry(
            ConstantBuilder::default()
                .with_delay(Duration::from_millis(500))
                .with_max_times(20),
        )
        .when(|e| !client::is_tls_failure(e))
        .notify(|e, _| tracing::debug!("coordinator not reachable yet: {}", client::chain(e)))
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "cannot reach the coordinator at {url}: {}",
                client::chain(&e)
            )
        })?;
    Ok(client::client(channel, token))
}

struct SlotContext {
    /// Drained: ask for no more work.
    draining: CancellationToken,
    tx: mpsc::Sender<pb::AgentMessage>,
    downloader: Downloader,
    running: Arc<Mutex<BTreeSet<u64>>>,
    stop: CancellationToken,
    host_target: String,
}

async fn slot_loop(slot: &mut Slot, mut assigns: mpsc::Receiver<pb::Assign>, ctx: SlotContext) {
    loop {
        if ctx.draining.is_cancelled() {
            return;
        }
        let want = msg(AgentMsg::WantWork(pb::WantWork { slot: slot.index }));
        if ctx.tx.send(want).await.is_err() {
            return;
        }
        let assign = tokio::select! {
            a = assigns.recv() => match a {
                Some(a) => a,
                None => return, // drained
            },
            () = ctx.stop.cancelled() => return,
        };
        ctx.running.lock().unwrap().insert(assign.job_id);
        let (job_id, attempt) = (assign.job_id, assign.attempt);
        tokio::select! {
            done = run_assigned(slot, assign, &ctx) => {
                if ctx.tx.send(msg(AgentMsg::JobDone(done))).await.is_err() {
                    return;
                }
            }
            () = ctx.stop.cancelled() => {
                // Stopped mid-job (the drain ran out of time, a second signal): the job goes
                // back to the coordinator now, not after the lease timeout. Its container is
                // removed with the slot.
                tracing::info!(job = job_id, "giving the job back to the coordinator");
                let release = pb::Release { job_id, attempt };
                let _ = ctx.tx.try_send(msg(AgentMsg::Release(release)));
                return;
            }
        }
        ctx.running.lock().unwrap().remove(&job_id);
    }
}

async fn run_assigned(slot: &mut Slot, assign: pb::Assign, ctx: &SlotContext) -> pb::JobDone {
    let started = Instant::now();
    let limits = assign.limits.unwrap_or_default();
    let mut log = JobLog::new(
        ctx.tx.clone(),
        assign.job_id,
        assign.attempt,
        limits.max_log_bytes,
    );
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
    let (bytes, sha, truncated) = log.finish().await;
    done.log_bytes = bytes;
    done.log_sha256 = sha;
    done.log_truncated_bytes = truncated;
    done
}

/// A job's log on its way to the coordinator.
///
/// Past `max_bytes` (an output bomb) nothing more is sent; the last [`LOG_TAIL_BYTES`] are kept in
/// a ring and sent at the end after a marker, so memory stays bounded and the end of the log,
/// where the failure usually is, survives.
struct JobLog {
    tx: mpsc::Sender<pb::AgentMessage>,
    job_id: u64,
    attempt: u32,
    offset: u64,
    sha: Sha256,
    /// 0: no limit.
    max_bytes: u64,
    tail: VecDeque<u8>,
    dropped: u64,
}

impl JobLog {
    fn new(
        tx: mpsc::Sender<pb::AgentMessage>,
        job_id: u64,
        attempt: u32,
        max_bytes: u64,
    ) -> JobLog {
        JobLog {
            tx,
            job_id,
            attempt,
            offset: 0,
            sha: Sha256::new(),
            max_bytes,
            tail: VecDeque::new(),
            dropped: 0,
        }
    }

    /// A line from the harness itself, set apart from the crate's output.
    async fn banner(&mut self, text: &str) {
        tracing::warn!(job = self.job_id, "{text}");
        let line = format!("\r\n\x1b[1;31m[crater-at-home] {text}\x1b[0m\r\n");
        self.write(line.into_bytes()).await;
    }

    async fn send(&mut self, bytes: Vec<u8>) {
        self.sha.update(&bytes);
        let offset = self.offset;
        self.offset += bytes.len() as u64;
        let chunk = pb::LogChunk {
            job_id: self.job_id,
            attempt: self.attempt,
            offset,
            data: bytes,
        };
        // A closed channel means the session is ending; the job's result goes nowhere anyway.
        let _ = self.tx.send(msg(AgentMsg::LogChunk(chunk))).await;
    }

    /// Sends what the size limit held back; returns (bytes sent, their SHA-256, bytes dropped).
    async fn finish(mut self) -> (u64, String, u64) {
        if !self.tail.is_empty() || self.dropped > 0 {
            let marker = format!(
                "\r\n\x1b[1;31m[crater-at-home] log truncated: {} bytes omitted after the first {} \
                 (--max-log-bytes); the last {} bytes follow\x1b[0m\r\n",
                self.dropped,
                self.max_bytes,
                self.tail.len()
            );
            let tail: Vec<u8> = std::mem::take(&mut self.tail).into();
            self.send(marker.into_bytes()).await;
            self.send(tail).await;
        }
        (self.offset, hex::encode(self.sha.finalize()), self.dropped)
    }
}

impl LogSink for JobLog {
    async fn write(&mut self, mut bytes: Vec<u8>) {
        if self.max_bytes > 0 && self.offset + bytes.len() as u64 > self.max_bytes {
            let room = self.max_bytes.saturating_sub(self.offset) as usize;
            let over = bytes.split_off(room.min(bytes.len()));
            self.tail.extend(over);
            if self.tail.len() > LOG_TAIL_BYTES {
                let excess = self.tail.len() - LOG_TAIL_BYTES;
                self.tail.drain(..excess);
                self.dropped += excess as u64;
            }
        }
        if !bytes.is_empty() {
            self.send(bytes).await;
        }
    }
}

fn msg(m: AgentMsg) -> pb::AgentMessage {
    pb::AgentMessage { msg: Some(m) }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `pieces` through a JobLog limited to `max` and returns what reached the coordinator.
    async fn through_log(max: u64, pieces: Vec<Vec<u8>>) -> (Vec<u8>, u64, u64, String) {
        let (tx, mut rx) = mpsc::channel(1 << 16);
        let mut log = JobLog::new(tx, 7, 1, max);
        for piece in pieces {
            log.write(piece).await;
        }
        let (bytes, sha, dropped) = log.finish().await;
        let mut received = Vec::new();
        while let Ok(m) = rx.try_recv() {
            if let Some(AgentMsg::LogChunk(c)) = m.msg {
                assert_eq!(c.offset, received.len() as u64, "chunks are contiguous");
                received.extend(c.data);
            }
        }
        assert_eq!(hex::encode(Sha256::digest(&received)), sha);
        (received, bytes, dropped, sha)
    }

    #[tokio::test]
    async fn a_log_under_the_limit_passes_unchanged() {
        let (received, bytes, dropped, _) = through_log(1000, vec![b"abc".to_vec(); 10]).await;
        assert_eq!(received, b"abc".repeat(10));
        assert_eq!((bytes, dropped), (30, 0));
    }

    #[tokio::test]
    async fn an_output_bomb_keeps_the_head_a_marker_and_the_last_64_kib() {
        let mb = vec![b'x'; 1 << 20];
        let mut pieces = vec![b"HEAD".to_vec()];
        pieces.extend(std::iter::repeat_n(mb, 8));
        pieces.push(b"THE END".to_vec());
        let total = 4 + 8 * (1 << 20) + 7;
        let (received, bytes, dropped, _) = through_log(1 << 20, pieces).await;
        assert!(received.starts_with(b"HEAD"));
        assert!(received.ends_with(b"THE END"));
        let text = String::from_utf8_lossy(&received);
        assert!(text.contains("log truncated"), "a clear marker");
        let kept = (1 << 20) + LOG_TAIL_BYTES as u64;
        assert_eq!(dropped, total - kept);
        assert!(bytes < kept + 300, "head + marker + tail only: {bytes}");
        assert_eq!(bytes, received.len() as u64);
    }
}
