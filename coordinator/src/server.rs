//! The coordinator's gRPC service: agents' `Work` streams and `Status`.
//!
//! Each agent stream gets its own task. It spools the logs of the jobs that agent runs to disk
//! (the coordinator never holds a whole log in memory), and when a job ends it checks the lease,
//! decides the verdict and commits the result to the [`Outbox`] in a task of its own, so a large
//! log never stalls the agent's stream. A stream that ends puts its unfinished jobs back in the
//! queue. While more results wait for the store than `--spool-max-gb` allows, free slots are
//! parked instead of given work, and get it once the uploads drain.

use crate::outbox::Outbox;
use crate::queue::{Assignment, ConnId, JobId, JobSource, JobSpec, Queue};
use crate::spool::Spool;
use crate::store::ResultRecord;
use crate::verdict::decide;
use crater_proto::pb::{
    self, agent_message::Msg as AgentMsg, coordinator_message::Msg as CoordMsg,
};
use crater_proto::verdict::Verdict;
use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

const HEARTBEAT_SECS: u32 = 10;

type ToAgent = mpsc::Sender<Result<pb::CoordinatorMessage, Status>>;

/// Something the person watching should hear about.
#[derive(Debug, Clone)]
pub enum Event {
    Finished {
        name: String,
        version: String,
        verdict: Verdict,
        duration: Duration,
        note: Option<String>,
    },
}

#[derive(Clone)]
pub struct Coordinator {
    inner: Arc<Inner>,
}

struct Inner {
    state: Mutex<State>,
    outbox: Outbox,
    limits: pb::Limits,
    events: mpsc::UnboundedSender<Event>,
    complete: watch::Sender<bool>,
    started: Instant,
}

#[derive(Default)]
struct State {
    queue: Queue,
    agents: HashMap<ConnId, Agent>,
    next_conn: ConnId,
    verdicts: BTreeMap<Verdict, u64>,
    /// Results that could not be stored: the harness failed.
    store_failures: u64,
    draining: bool,
    /// Free slots are parked because the outbox is over its bound (logged once per episode).
    backpressure: bool,
}

struct Agent {
    name: String,
    slots: u32,
    tools: HashSet<String>,
    /// The first is the agent's host target, used for jobs that name none.
    targets: Vec<String>,
    tx: ToAgent,
    connected: Instant,
}

impl Coordinator {
    pub fn new(
        outbox: Outbox,
        limits: pb::Limits,
        jobs: Vec<JobSpec>,
    ) -> (Coordinator, mpsc::UnboundedReceiver<Event>) {
        let (events, events_rx) = mpsc::unbounded_channel();
        let mut queue = Queue::default();
        for job in jobs {
            queue.push(job);
        }
        let (complete, _) = watch::channel(queue.is_complete());
        let inner = Inner {
            state: Mutex::new(State {
                queue,
                ..State::default()
            }),
            outbox,
            limits,
            events,
            complete,
            started: Instant::now(),
        };
        let coordinator = Coordinator {
            inner: Arc::new(inner),
        };
        tokio::spawn(coordinator.clone().resume_after_backpressure());
        (coordinator, events_rx)
    }

    /// Hands parked slots their work whenever the outbox drops back under its bound.
    async fn resume_after_backpressure(self) {
        let mut backlog = self.inner.outbox.backlog();
        while backlog.changed().await.is_ok() {
            if self.inner.outbox.over_bound() || !self.state().backpressure {
                continue;
            }
            tracing::info!("the spool is under its bound again: handing out work");
            let messages = {
                let mut state = self.state();
                state.backpressure = false;
                self.assign_waiting(&mut state)
            };
            for (tx, message) in messages {
                let _ = tx.send(Ok(message)).await;
            }
        }
    }

    pub fn service(&self) -> pb::coordinator_server::CoordinatorServer<Coordinator> {
        pb::coordinator_server::CoordinatorServer::new(self.clone())
            .max_decoding_message_size(crater_proto::MAX_MESSAGE_BYTES)
            .max_encoding_message_size(crater_proto::MAX_MESSAGE_BYTES)
    }

    /// Becomes true when every job has a stored result.
    pub fn completion(&self) -> watch::Receiver<bool> {
        self.inner.complete.subscribe()
    }

    pub fn store_failures(&self) -> u64 {
        self.state().store_failures
    }

    pub fn connected_agents(&self) -> usize {
        self.state().agents.len()
    }

    /// Tells every agent to finish its running jobs and take no more.
    pub async fn drain(&self) {
        let txs: Vec<ToAgent> = {
            let mut state = self.state();
            state.draining = true;
            state.agents.values().map(|a| a.tx.clone()).collect()
        };
        for tx in txs {
            let _ = tx.send(Ok(coord(CoordMsg::Drain(pb::Drain {})))).await;
        }
    }

    pub fn status(&self) -> pb::StatusReply {
        let state = self.state();
        let counts = state.queue.counts();
        let now = Instant::now();
        let mut agents: BTreeMap<ConnId, pb::AgentStatus> = state
            .agents
            .iter()
            .map(|(&conn, a)| {
                let status = pb::AgentStatus {
                    name: a.name.clone(),
                    slots: a.slots,
                    running: Vec::new(),
                    connected_secs: now.duration_since(a.connected).as_secs(),
                };
                (conn, status)
            })
            .collect();
        for (job, spec, lease) in state.queue.running() {
            if let Some(agent) = agents.get_mut(&lease.conn) {
                agent.running.push(pb::RunningJob {
                    slot: lease.slot,
                    job_id: job,
                    krate: spec.name.clone(),
                    version: spec.version.clone(),
                    tool: spec.tool.to_string(),
                    running_secs: now.duration_since(lease.since).as_secs(),
                    log_bytes: 0,
                });
            }
        }
        let minutes = self.inner.started.elapsed().as_secs_f64() / 60.0;
        let backlog = self.inner.outbox.backlog().borrow().clone();
        pb::StatusReply {
            unstored: backlog.entries as u64,
            unstored_bytes: backlog.bytes,
            store_error: backlog.failing.unwrap_or_default(),
            backpressure: state.backpressure,
            coordinator_version: env!("CARGO_PKG_VERSION").to_owned(),
            queued: counts.queued,
            running: counts.running,
            finished: counts.finished,
            total: counts.total,
            verdicts: state
                .verdicts
                .iter()
                .map(|(v, n)| (v.to_string(), *n))
                .collect(),
            agents: agents.into_values().collect(),
            crates_per_minute: if minutes > 0.0 {
                counts.finished as f64 / minutes
            } else {
                0.0
            },
            uptime_secs: self.inner.started.elapsed().as_secs(),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.inner.state.lock().expect("state lock poisoned")
    }

    fn assign_message(&self, state: &State, a: &Assignment) -> pb::CoordinatorMessage {
        let entry = state.queue.job(a.job).expect("assigned jobs exist");
        let spec = &entry.spec;
        let target = state
            .agents
            .get(&a.conn)
            .map_or(String::new(), |agent| job_target(spec, agent));
        let source = match &spec.source {
            JobSource::Registry { checksum } => {
                pb::crate_spec::Source::RegistryChecksum(checksum.clone())
            }
            JobSource::Local { archive, .. } => {
                pb::crate_spec::Source::LocalArchive(archive.to_vec())
            }
        };
        coord(CoordMsg::Assign(pb::Assign {
            job_id: a.job,
            attempt: a.attempt,
            slot: a.slot,
            krate: Some(pb::CrateSpec {
                name: spec.name.clone(),
                version: spec.version.clone(),
                source: Some(source),
            }),
            tool: spec.tool.to_string(),
            target,
            limits: Some(self.inner.limits),
        }))
    }

    async fn on_want_work(&self, conn: ConnId, slot: u32) {
        let message = {
            let mut state = self.state();
            if state.draining {
                return;
            }
            let Some(tools) = state.agents.get(&conn).map(|a| a.tools.clone()) else {
                return;
            };
            let full = self.inner.outbox.over_bound();
            if full && !state.backpressure {
                let backlog = self.inner.outbox.backlog().borrow().clone();
                tracing::warn!(
                    "{} results ({} MiB) wait in the spool for the store (--spool-max-gb): \
                     no new work until they are stored",
                    backlog.entries,
                    backlog.bytes >> 20
                );
                state.backpressure = true;
            }
            // Parked (remembered as waiting) when full; `resume_after_backpressure` assigns it.
            let assignment = state
                .queue
                .want_work(conn, slot, |s| !full && tools.contains(s.tool.name()));
            assignment.map(|a| {
                (
                    state.agents[&conn].tx.clone(),
                    self.assign_message(&state, &a),
                )
            })
        };
        if let Some((tx, message)) = message {
            let _ = tx.send(Ok(message)).await;
        }
    }

    fn spool_path(&self, job: JobId, attempt: u32) -> PathBuf {
        self.inner
            .outbox
            .spool_dir()
            .join(format!("{job}-{attempt}.log"))
    }

    async fn on_log_chunk(&self, conn: ConnId, spools: &mut Spools, chunk: pb::LogChunk) {
        if !self
            .state()
            .queue
            .holds_lease(chunk.job_id, conn, chunk.attempt)
        {
            tracing::debug!(
                job = chunk.job_id,
                "log for a job this agent no longer holds"
            );
            return;
        }
        let key = (chunk.job_id, chunk.attempt);
        let spool = match spools.entry(key) {
            Entry::Occupied(entry) => entry.into_mut(),
            Entry::Vacant(entry) => {
                match Spool::create(self.spool_path(chunk.job_id, chunk.attempt)).await {
                    Ok(spool) => entry.insert(spool),
                    Err(e) => {
                        tracing::error!("cannot spool a log: {e}");
                        return;
                    }
                }
            }
        };
        if let Err(e) = spool.append(chunk.offset, &chunk.data).await {
            tracing::error!(job = chunk.job_id, "writing the spooled log: {e}");
            spool.broken = Some(e.to_string());
        }
    }

    async fn on_job_done(&self, conn: ConnId, spools: &mut Spools, done: pb::JobDone) {
        let key = (done.job_id, done.attempt);
        let spool = spools.remove(&key);
        let lease_holder = {
            let mut state = self.state();
            if state.queue.begin_finish(done.job_id, conn, done.attempt) {
                let mut spec = state.queue.job(done.job_id).expect("exists").spec.clone();
                let agent = match state.agents.get(&conn) {
                    Some(agent) => {
                        spec.target = job_target(&spec, agent);
                        agent.name.clone()
                    }
                    None => String::new(),
                };
                Some((spec, agent))
            } else {
                None
            }
        };
        let Some((spec, agent)) = lease_holder else {
            tracing::debug!(job = done.job_id, "ignoring the result of a stale attempt");
            if let Some(spool) = spool {
                spool.discard().await;
            }
            return;
        };
        let spool = match spool {
            Some(spool) => spool,
            None => match Spool::create(self.spool_path(done.job_id, done.attempt)).await {
                Ok(spool) => spool,
                Err(e) => {
                    self.finished(done.job_id, &spec, Err(e.into()), Duration::ZERO);
                    return;
                }
            },
        };
        let this = self.clone();
        tokio::spawn(async move {
            let duration = Duration::from_millis(done.duration_ms);
            let published = this.publish(&spec, &agent, done, spool).await;
            this.finished(key.0, &spec, published, duration);
        });
    }

    /// Commits one result to the outbox; the verdict on success.
    async fn publish(
        &self,
        spec: &JobSpec,
        agent: &str,
        mut done: pb::JobDone,
        spool: Spool,
    ) -> anyhow::Result<(Verdict, Option<String>)> {
        let (path, received, sha, broken) = spool.finish().await?;
        let problem = match broken {
            Some(broken) => Some(format!("spooling the log failed: {broken}")),
            None => (received != done.log_bytes || sha != done.log_sha256).then(|| {
                format!(
                    "the log arrived incomplete ({received} of {} bytes)",
                    done.log_bytes
                )
            }),
        };
        if let Some(problem) = problem
            && done.harness_error.is_empty()
        {
            done.harness_error = problem;
        }
        let diagnosis = {
            let (path, name) = (path.clone(), spec.name.clone());
            tokio::task::spawn_blocking(move || {
                let log = std::io::BufReader::new(std::fs::File::open(path)?);
                crate::diagnose::diagnose(log, &name)
            })
            .await??
        };
        let verdict = decide(&done, &diagnosis);
        let mut causes = diagnosis.causes;
        causes.extend(crate::verdict::limit_causes(&done, verdict));
        let finished_at = time::OffsetDateTime::now_utc();
        let started_at = finished_at - Duration::from_millis(done.duration_ms);
        let record = ResultRecord {
            name: spec.name.clone(),
            version: spec.version.clone(),
            tool: spec.tool.to_string(),
            target: spec.target.clone(),
            status: verdict,
            source: match &spec.source {
                JobSource::Registry { .. } => "crates.io".to_owned(),
                JobSource::Local { path, .. } => path.display().to_string(),
            },
            failed_step: (!done.failed_step.is_empty()).then(|| done.failed_step.clone()),
            exit_code: done.exit_code,
            timed_out: done.timed_out,
            timeout_kind: (!done.timeout_kind.is_empty()).then(|| done.timeout_kind.clone()),
            oom: done.oom,
            log_truncated_bytes: done.log_truncated_bytes,
            causes,
            probable_false_positive: diagnosis.probable_false_positive,
            skip_reason: None,
            harness_error: (!done.harness_error.is_empty()).then(|| done.harness_error.clone()),
            duration_ms: done.duration_ms,
            peak_memory_bytes: done.peak_memory_bytes,
            started_at: rfc3339(started_at),
            finished_at: rfc3339(finished_at),
            attempt: done.attempt,
            tries: done.tries,
            agent: agent.to_owned(),
            slot: done.slot,
            log_bytes: received,
            log_sha256: sha,
        };
        let outbox = self.inner.outbox.clone();
        let tool = spec.tool;
        let note = record.harness_error.clone();
        tokio::task::spawn_blocking(move || outbox.commit(tool, &record, &path)).await??;
        Ok((verdict, note))
    }

    /// Books a job's end, whether its result was stored or not.
    fn finished(
        &self,
        job: JobId,
        spec: &JobSpec,
        published: anyhow::Result<(Verdict, Option<String>)>,
        duration: Duration,
    ) {
        let (verdict, note) = match published {
            Ok(v) => v,
            Err(e) => {
                tracing::error!(
                    "could not store the result of {} {}: {e:#}",
                    spec.name,
                    spec.version
                );
                self.state().store_failures += 1;
                (Verdict::Error, Some(format!("not stored: {e:#}")))
            }
        };
        let complete = {
            let mut state = self.state();
            state.queue.mark_done(job, verdict);
            *state.verdicts.entry(verdict).or_default() += 1;
            state.queue.is_complete()
        };
        let _ = self.inner.events.send(Event::Finished {
            name: spec.name.clone(),
            version: spec.version.clone(),
            verdict,
            duration,
            note,
        });
        if complete {
            self.inner.complete.send_replace(true);
        }
    }

    async fn on_disconnect(&self, conn: ConnId, spools: Spools) {
        for (_, spool) in spools {
            spool.discard().await;
        }
        let messages: Vec<(ToAgent, pb::CoordinatorMessage)> = {
            let mut state = self.state();
            let agent = state.agents.remove(&conn);
            let requeued = state.queue.drop_connection(conn);
            if !requeued.is_empty() {
                tracing::warn!(
                    agent = agent.as_ref().map_or("?", |a| a.name.as_str()),
                    "agent lost with {} running jobs; they go back to the queue",
                    requeued.len()
                );
            }
            self.assign_waiting(&mut state)
        };
        for (tx, message) in messages {
            let _ = tx.send(Ok(message)).await;
        }
    }

    /// Work for parked slots: after jobs were requeued, or the outbox drained.
    fn assign_waiting(&self, state: &mut State) -> Vec<(ToAgent, pb::CoordinatorMessage)> {
        if state.draining || self.inner.outbox.over_bound() {
            return Vec::new();
        }
        let tools: HashMap<ConnId, HashSet<String>> = state
            .agents
            .iter()
            .map(|(&c, a)| (c, a.tools.clone()))
            .collect();
        let assignments = state
            .queue
            .assign_waiting(|c, s| tools.get(&c).is_some_and(|t| t.contains(s.tool.name())));
        assignments
            .iter()
            .map(|a| {
                (
                    state.agents[&a.conn].tx.clone(),
                    self.assign_message(state, a),
                )
            })
            .collect()
    }

    async fn serve_agent(self, conn: ConnId, mut inbound: Streaming<pb::AgentMessage>) {
        let mut spools = Spools::new();
        loop {
            let message = match inbound.message().await {
                Ok(Some(m)) => m,
                Ok(None) => break,
                Err(status) => {
                    tracing::warn!(conn, "agent stream failed: {}", status.message());
                    break;
                }
            };
            match message.msg {
                Some(AgentMsg::WantWork(w)) => self.on_want_work(conn, w.slot).await,
                Some(AgentMsg::LogChunk(c)) => self.on_log_chunk(conn, &mut spools, c).await,
                Some(AgentMsg::JobDone(d)) => self.on_job_done(conn, &mut spools, d).await,
                Some(AgentMsg::Heartbeat(_)) | None => {}
                Some(AgentMsg::Hello(_)) => tracing::warn!(conn, "a second hello; ignored"),
            }
        }
        self.on_disconnect(conn, spools).await;
    }
}

#[tonic::async_trait]
impl pb::coordinator_server::Coordinator for Coordinator {
    type WorkStream = ReceiverStream<Result<pb::CoordinatorMessage, Status>>;

    async fn work(
        &self,
        request: Request<Streaming<pb::AgentMessage>>,
    ) -> Result<Response<Self::WorkStream>, Status> {
        let mut inbound = request.into_inner();
        let hello = match inbound.message().await? {
            Some(pb::AgentMessage {
                msg: Some(AgentMsg::Hello(hello)),
            }) => hello,
            _ => {
                return Err(Status::invalid_argument(
                    "the first message must be a Hello",
                ));
            }
        };
        if hello.protocol_version != crater_proto::PROTOCOL_VERSION {
            return Err(Status::failed_precondition(format!(
                "agent {} speaks protocol {} (version {}), this coordinator speaks protocol {} \
                 (version {}): run the same crater-at-home version on both",
                hello.agent_name,
                hello.protocol_version,
                hello.agent_version,
                crater_proto::PROTOCOL_VERSION,
                env!("CARGO_PKG_VERSION")
            )));
        }
        let (tx, rx) = mpsc::channel(64);
        let welcome = coord(CoordMsg::Welcome(pb::Welcome {
            coordinator_version: env!("CARGO_PKG_VERSION").to_owned(),
            heartbeat_interval_secs: HEARTBEAT_SECS,
        }));
        tx.send(Ok(welcome)).await.expect("the receiver is here");
        let conn = {
            let mut state = self.state();
            let conn = state.next_conn;
            state.next_conn += 1;
            state.agents.insert(
                conn,
                Agent {
                    name: hello.agent_name.clone(),
                    slots: hello.slots,
                    tools: hello.tools.iter().cloned().collect(),
                    targets: hello.targets.clone(),
                    tx: tx.clone(),
                    connected: Instant::now(),
                },
            );
            if state.draining {
                let _ = tx.try_send(Ok(coord(CoordMsg::Drain(pb::Drain {}))));
            }
            conn
        };
        tracing::info!(conn, agent = %hello.agent_name, slots = hello.slots, "agent connected");
        tokio::spawn(self.clone().serve_agent(conn, inbound));
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn status(
        &self,
        _request: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusReply>, Status> {
        Ok(Response::new(Coordinator::status(self)))
    }
}

/// The target a job runs for on `agent`: its own, or the agent's host target.
fn job_target(spec: &JobSpec, agent: &Agent) -> String {
    if spec.target.is_empty() {
        agent.targets.first().cloned().unwrap_or_default()
    } else {
        spec.target.clone()
    }
}

fn coord(m: CoordMsg) -> pb::CoordinatorMessage {
    pb::CoordinatorMessage { msg: Some(m) }
}

fn rfc3339(t: time::OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

type Spools = HashMap<(JobId, u32), Spool>;
