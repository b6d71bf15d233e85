//! The coordinator's state and its decisions, without I/O: the queue, the connected agents and
//! their liveness, verdict counts, draining and backpressure.
//!
//! Every rule of serving agents lives here: which slot gets which job (the agent must have the
//! tool), when free slots are parked (draining, or the outbox over its bound) and when they get
//! work again, whose result counts, what `status` and the metrics report. It awaits nothing and
//! touches no file: a call changes the state and answers with the messages to send, which the
//! caller sends once the state's lock is released. So the rules read in one place and can be
//! tested without a network or a disk.

use crate::results::outbox::Backlog;
use crate::serve::metrics::{self, Readings};
use crate::serve::queue::{Assignment, ConnId, JobId, JobKey, JobSource, JobSpec, Queue};
use crate::serve::validate::HeldJob;
use crater_proto::pb::{self, coordinator_message::Msg as CoordMsg};
use crater_proto::verdict::Verdict;
use prometheus_client::metrics::histogram::Histogram;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// Where messages to one agent go: its `Work` stream's outbound half.
pub type ToAgent = mpsc::Sender<Result<pb::CoordinatorMessage, tonic::Status>>;

/// Messages to send, each to its agent.
pub type Sends = Vec<(ToAgent, pb::CoordinatorMessage)>;

/// A connected agent, as its Hello described it.
pub struct Agent {
    /// Its `agent_id`: the same on every connection of one agent process. Empty in a Hello: the
    /// state gives it one of its own, so nobody can take its leases.
    pub id: String,
    pub name: String,
    pub slots: u32,
    pub tools: HashSet<String>,
    /// The first is the agent's host target, used for jobs that name none.
    pub targets: Vec<String>,
    /// What `rustc -V` says of the toolchain its containers build with.
    pub toolchain: String,
    /// `None` once its stream ended: it is lost, and keeps its leases until the lease timeout
    /// passes, in case it comes back on a new connection.
    pub tx: Option<ToAgent>,
    pub connected: Instant,
    /// The agent's last message; every message renews its leases.
    pub last_heard: Instant,
}

pub struct State {
    queue: Queue,
    agents: HashMap<ConnId, Agent>,
    next_conn: ConnId,
    limits: pb::Limits,
    verdicts: BTreeMap<Verdict, u64>,
    /// Results that could not be stored: the harness failed.
    store_failures: u64,
    draining: bool,
    /// Free slots are parked because the outbox is over its bound (logged once per episode).
    backpressure: bool,
    /// An agent not heard from for this long loses its connection and its jobs.
    lease_timeout: Duration,
    leases_expired: u64,
    results_discarded: u64,
    /// Jobs their agents gave back unfinished (`Release`).
    leases_released: u64,
    /// Jobs an agent took back when it connected again, or after a coordinator restart.
    leases_reclaimed: u64,
    /// Log bytes spooled for current leases.
    log_bytes_received: u64,
    /// How long free slots waited for their jobs. Shared with the metrics registry, which reads
    /// it at scrape time; observing it is a few additions under its own lock, no I/O.
    assign_wait: Histogram,
}

/// The answer to a free slot.
pub struct WantWork {
    /// Its job, if it gets one now (else it is parked, or there is no work for it).
    pub assign: Option<(ToAgent, pb::CoordinatorMessage)>,
    /// This request found the outbox over its bound first: backpressure begins.
    pub backpressure_began: bool,
}

/// An agent that fell silent past the lease timeout, and lost its jobs.
pub struct Expired {
    pub agent: String,
    pub requeued: usize,
    pub silent_for: Duration,
    /// The (job, attempt) of each lease it lost: their spooled logs are of no use now.
    pub logs: Vec<(JobId, u32)>,
}

/// A job an agent holds that the job's lease was done with: its result, if any, goes nowhere.
pub struct Finishing {
    pub spec: JobSpec,
    pub agent_name: String,
    pub toolchain: String,
    pub agent_id: String,
}

/// What an agent's Hello changed.
pub struct Connected {
    pub conn: ConnId,
    /// The coordinator is draining: tell the agent at once.
    pub draining: bool,
    /// One answer for each job it said it holds, in the Hello's order; `resend_from` is what
    /// the state counted, which the caller may correct from the spooled log.
    pub reclaimed: Vec<pb::Reclaim>,
    /// Leases of its earlier connection it no longer has: their spooled logs are of no use.
    pub dropped_logs: Vec<(JobId, u32)>,
    /// Work for parked slots, if jobs went back to the queue.
    pub sends: Sends,
}

impl State {
    pub fn new(jobs: Vec<JobSpec>, limits: pb::Limits, lease_timeout: Duration) -> State {
        let mut queue = Queue::default();
        for job in jobs {
            queue.push(job);
        }
        State {
            queue,
            agents: HashMap::new(),
            next_conn: 0,
            limits,
            verdicts: BTreeMap::new(),
            store_failures: 0,
            draining: false,
            backpressure: false,
            lease_timeout,
            leases_expired: 0,
            results_discarded: 0,
            leases_released: 0,
            leases_reclaimed: 0,
            log_bytes_received: 0,
            assign_wait: metrics::assign_wait_histogram(),
        }
    }

    /// Holds back the jobs `keys` until the lease timeout from `now` has passed: they were
    /// running when an earlier coordinator stopped, and their agents may come back for them.
    /// Returns how many of them are queued here.
    pub fn reserve(&mut self, keys: &[JobKey], now: Instant) -> usize {
        let until = now + self.lease_timeout;
        keys.iter()
            .filter(|key| self.queue.reserve(key, until))
            .count()
    }

    /// A message from `conn` arrived: its agent is alive and its leases are renewed. False when
    /// the connection is no longer an agent of ours (its leases expired): ignore the message.
    pub fn heard(&mut self, conn: ConnId, now: Instant) -> bool {
        match self.agents.get_mut(&conn) {
            Some(agent) => {
                agent.last_heard = agent.last_heard.max(now);
                true
            }
            None => false,
        }
    }

    /// Takes the connections and jobs of agents silent for longer than the lease timeout (a
    /// partition, a hung host: their TCP connection may look open for ever). Their jobs go back
    /// to the front of the queue with the attempt raised, parked slots may get them, and the
    /// agent is forgotten: whatever it sends later is ignored, and dropping its sender ends its
    /// stream.
    pub fn expire(&mut self, now: Instant, full: bool) -> (Vec<Expired>, Sends) {
        let silent: Vec<ConnId> = (self.agents.iter())
            .filter(|(_, a)| now.saturating_duration_since(a.last_heard) > self.lease_timeout)
            .map(|(&conn, _)| conn)
            .collect();
        let mut expired = Vec::new();
        for conn in silent {
            let agent = self.agents.remove(&conn).expect("listed above");
            let logs = self.queue.drop_connection(conn);
            self.leases_expired += logs.len() as u64;
            expired.push(Expired {
                agent: agent.name,
                requeued: logs.len(),
                silent_for: now.saturating_duration_since(agent.last_heard),
                logs,
            });
        }
        let lapsed = self.queue.lapse_reservations(now);
        let sends = if expired.is_empty() && !lapsed {
            Vec::new()
        } else {
            self.assign_waiting(now, full)
        };
        (expired, sends)
    }

    /// `conn`'s agent said Hello, holding `held` from an earlier connection or an earlier
    /// coordinator. The same agent's earlier connection (its stream ended, or not noticed yet)
    /// is replaced: the leases the agent still holds move to `conn`, the rest go back to the
    /// queue. A held job that is not leased here (a coordinator restart, or its lease expired)
    /// is taken back if it is still queued. Anything else the agent must drop.
    pub fn connect(
        &mut self,
        mut agent: Agent,
        held: &[HeldJob],
        now: Instant,
        full: bool,
    ) -> Connected {
        let conn = self.next_conn;
        self.next_conn += 1;
        if agent.id.is_empty() {
            agent.id = format!("connection {conn}");
        }
        let earlier: Vec<ConnId> = (self.agents.iter())
            .filter(|(_, a)| a.id == agent.id)
            .map(|(&c, _)| c)
            .collect();
        self.agents.insert(conn, agent);
        // Running jobs first, so a slot is theirs before a finished job of the same slot moves.
        let mut order: Vec<usize> = (0..held.len()).collect();
        order.sort_by_key(|&i| held[i].finished);
        let mut reclaimed = vec![pb::Reclaim::default(); held.len()];
        for i in order {
            let h = &held[i];
            let running = !h.finished;
            let moved = (earlier.iter()).find_map(|&old| {
                let bytes = self
                    .queue
                    .transfer(h.job_id, h.attempt, old, conn, h.slot, running)?;
                Some((h.job_id, h.attempt, bytes))
            });
            let kept = moved.or_else(|| {
                let a = self.queue.reclaim(&h.key, conn, h.slot, running, now)?;
                Some((a.job, a.attempt, 0))
            });
            if kept.is_some() {
                self.leases_reclaimed += 1;
            } else if h.finished
                && (self.queue.find(&h.key)).is_some_and(|j| !self.queue.is_finished(j))
            {
                // A result for a lease another agent holds now: never stored.
                self.results_discarded += 1;
            }
            let (job_id, attempt, resend_from) = kept.unwrap_or_default();
            reclaimed[i] = pb::Reclaim {
                held_job_id: h.job_id,
                held_attempt: h.attempt,
                keep: kept.is_some(),
                job_id,
                attempt,
                resend_from,
            };
        }
        let mut dropped_logs = Vec::new();
        for old in earlier {
            self.agents.remove(&old);
            dropped_logs.extend(self.queue.drop_connection(old));
        }
        let sends = if dropped_logs.is_empty() {
            Vec::new()
        } else {
            self.assign_waiting(now, full)
        };
        Connected {
            conn,
            draining: self.draining,
            reclaimed,
            dropped_logs,
            sends,
        }
    }

    /// Connects `agent` holding nothing, at its `connected` time: tests' shorthand.
    #[cfg(test)]
    pub fn join(&mut self, agent: Agent) -> ConnId {
        let now = agent.connected;
        self.connect(agent, &[], now, false).conn
    }

    /// The sender of the agent `id`, while it is connected: where its acknowledgements go.
    pub fn agent_tx(&self, id: &str) -> Option<ToAgent> {
        (self.agents.values())
            .filter(|a| a.id == id)
            .find_map(|a| a.tx.clone())
    }

    /// The sender of connection `conn`, while it is open.
    pub fn conn_tx(&self, conn: ConnId) -> Option<ToAgent> {
        self.agents.get(&conn).and_then(|a| a.tx.clone())
    }

    /// `conn` gave `job` back unfinished (it is draining): the job goes to the next free slot
    /// with the attempt raised, now rather than after the lease timeout. `None` when `conn` did
    /// not hold that lease (nothing changes).
    pub fn release(
        &mut self,
        job: JobId,
        conn: ConnId,
        attempt: u32,
        now: Instant,
        full: bool,
    ) -> Option<Sends> {
        if !self.queue.release(job, conn, attempt) {
            return None;
        }
        self.leases_released += 1;
        Some(self.assign_waiting(now, full))
    }

    /// A result arrived on a connection whose leases had expired: never stored, but counted.
    pub fn discard_late_result(&mut self) {
        self.results_discarded += 1;
    }

    /// `bytes` more log arrived for `job`'s current lease; its total so far.
    pub fn logged(&mut self, job: JobId, bytes: u64) -> u64 {
        self.log_bytes_received += bytes;
        self.queue.logged(job, bytes)
    }

    /// Every job has its result.
    pub fn is_complete(&self) -> bool {
        self.queue.is_complete()
    }

    pub fn store_failures(&self) -> u64 {
        self.store_failures
    }

    /// Agents with a stream open (not the lost ones).
    pub fn connected_agents(&self) -> usize {
        self.agents.values().filter(|a| a.tx.is_some()).count()
    }

    /// No more work for anyone: the agents to tell.
    pub fn drain(&mut self) -> Vec<ToAgent> {
        self.draining = true;
        self.agents.values().filter_map(|a| a.tx.clone()).collect()
    }

    /// A free slot of `conn` asks for work; `full`: the outbox is over its bound, so the slot
    /// is parked (remembered as waiting) until [`State::end_backpressure`]. A slot the agent did
    /// not declare, or one that still holds a job, gets nothing.
    pub fn want_work(&mut self, conn: ConnId, slot: u32, now: Instant, full: bool) -> WantWork {
        let mut answer = WantWork {
            assign: None,
            backpressure_began: false,
        };
        if self.draining {
            return answer;
        }
        let Some(tools) = (self.agents.get(&conn))
            .filter(|a| slot < a.slots)
            .map(|a| a.tools.clone())
        else {
            return answer;
        };
        if full && !self.backpressure {
            self.backpressure = true;
            answer.backpressure_began = true;
        }
        let assignment = self
            .queue
            .want_work(conn, slot, now, |s| !full && tools.contains(s.tool.name()));
        answer.assign = assignment.and_then(|a| {
            self.observe_wait(&a, now);
            Some((self.agents[&conn].tx.clone()?, self.assign_message(&a)))
        });
        answer
    }

    /// The outbox is under its bound again: work for the parked slots, or `None` when there was
    /// no backpressure.
    pub fn end_backpressure(&mut self, now: Instant) -> Option<Sends> {
        if !self.backpressure {
            return None;
        }
        self.backpressure = false;
        Some(self.assign_waiting(now, false))
    }

    /// Whether `conn` holds the lease of `job`'s `attempt` (only then is its log kept).
    pub fn holds_lease(&self, job: JobId, conn: ConnId, attempt: u32) -> bool {
        self.queue.holds_lease(job, conn, attempt)
    }

    /// What `job` is, if `conn` holds the lease of its `attempt`.
    pub fn leased_key(&self, job: JobId, conn: ConnId, attempt: u32) -> Option<JobKey> {
        if !self.queue.holds_lease(job, conn, attempt) {
            return None;
        }
        let spec = &self.queue.job(job)?.spec;
        Some((spec.tool, spec.name.clone(), spec.version.clone()))
    }

    /// A job ended on `conn`: if that was the current lease, the job (with the target it ran
    /// for) and its agent, and its result is to be published; `None` for a stale attempt.
    pub fn begin_finish(&mut self, job: JobId, conn: ConnId, attempt: u32) -> Option<Finishing> {
        if !self.queue.begin_finish(job, conn, attempt) {
            self.results_discarded += 1;
            return None;
        }
        let mut spec = self.queue.job(job).expect("exists").spec.clone();
        let (agent_name, agent_id, toolchain) = match self.agents.get(&conn) {
            Some(agent) => {
                spec.target = job_target(&spec, agent);
                (
                    agent.name.clone(),
                    agent.id.clone(),
                    agent.toolchain.clone(),
                )
            }
            None => Default::default(),
        };
        Some(Finishing {
            spec,
            agent_name,
            agent_id,
            toolchain,
        })
    }

    /// A result could not be stored.
    pub fn store_failed(&mut self) {
        self.store_failures += 1;
    }

    /// Books a job's verdict; true when that was the last job.
    pub fn finish(&mut self, job: JobId, verdict: Verdict) -> bool {
        self.queue.mark_done(job, verdict);
        *self.verdicts.entry(verdict).or_default() += 1;
        self.queue.is_complete()
    }

    /// `conn`'s stream ended. An agent with leases is kept as lost until the lease timeout
    /// passes (it may come back on a new connection); one without is forgotten. Returns the
    /// agent's name and how many jobs it keeps, if it was still ours.
    pub fn disconnect(&mut self, conn: ConnId) -> Option<(String, usize)> {
        self.queue.forget_waiting(conn);
        let keeps = self
            .queue
            .running()
            .filter(|(_, _, l)| l.conn == conn)
            .count();
        if keeps == 0 {
            return self.agents.remove(&conn).map(|a| (a.name, 0));
        }
        let agent = self.agents.get_mut(&conn)?;
        agent.tx = None;
        Some((agent.name.clone(), keeps))
    }

    /// What `status` shows; `uptime` since the coordinator started, `backlog` what waits for
    /// the store.
    pub fn status(&self, now: Instant, uptime: Duration, backlog: &Backlog) -> pb::StatusReply {
        let counts = self.queue.counts();
        let mut agents: BTreeMap<ConnId, pb::AgentStatus> = self
            .agents
            .iter()
            .map(|(&conn, a)| {
                let status = pb::AgentStatus {
                    name: a.name.clone(),
                    slots: a.slots,
                    running: Vec::new(),
                    connected_secs: now.saturating_duration_since(a.connected).as_secs(),
                    last_contact_secs: now.saturating_duration_since(a.last_heard).as_secs(),
                    lost: a.tx.is_none(),
                };
                (conn, status)
            })
            .collect();
        for (job, spec, lease) in self.queue.running() {
            if let Some(agent) = agents.get_mut(&lease.conn) {
                agent.running.push(pb::RunningJob {
                    slot: lease.slot,
                    job_id: job,
                    krate: spec.name.clone(),
                    version: spec.version.clone(),
                    tool: spec.tool.to_string(),
                    running_secs: now.saturating_duration_since(lease.since).as_secs(),
                    log_bytes: lease.log_bytes,
                });
            }
        }
        let minutes = uptime.as_secs_f64() / 60.0;
        let per_minute = if minutes > 0.0 {
            counts.finished as f64 / minutes
        } else {
            0.0
        };
        let left = (counts.queued + counts.running) as f64;
        pb::StatusReply {
            eta_secs: if per_minute > 0.0 {
                (left / per_minute * 60.0) as u64
            } else {
                0
            },
            leases_expired: self.leases_expired,
            results_discarded: self.results_discarded,
            lease_timeout_secs: self.lease_timeout.as_secs(),
            leases_reclaimed: self.leases_reclaimed,
            unstored: backlog.entries as u64,
            unstored_bytes: backlog.bytes,
            store_error: backlog.failing.clone().unwrap_or_default(),
            backpressure: self.backpressure,
            coordinator_version: env!("CARGO_PKG_VERSION").to_owned(),
            queued: counts.queued,
            running: counts.running,
            finished: counts.finished,
            total: counts.total,
            verdicts: self
                .verdicts
                .iter()
                .map(|(v, n)| (v.to_string(), *n))
                .collect(),
            agents: agents.into_values().collect(),
            crates_per_minute: per_minute,
            uptime_secs: uptime.as_secs(),
        }
    }

    /// Work for parked slots: after jobs were requeued, or the outbox drained.
    fn assign_waiting(&mut self, now: Instant, full: bool) -> Sends {
        if self.draining || full {
            return Vec::new();
        }
        let tools: HashMap<ConnId, HashSet<String>> = self
            .agents
            .iter()
            .map(|(&c, a)| (c, a.tools.clone()))
            .collect();
        let assignments = self.queue.assign_waiting(now, |c, s| {
            tools.get(&c).is_some_and(|t| t.contains(s.tool.name()))
        });
        assignments
            .iter()
            .filter_map(|a| {
                self.observe_wait(a, now);
                Some((self.agents[&a.conn].tx.clone()?, self.assign_message(a)))
            })
            .collect()
    }

    /// Books how long `a`'s slot waited for it, from its WantWork to `now`.
    fn observe_wait(&self, a: &Assignment, now: Instant) {
        let waited = now.saturating_duration_since(a.asked);
        self.assign_wait.observe(waited.as_secs_f64());
    }

    /// The histogram of slots' waits for work, to register with the metrics (a shared handle).
    pub fn assign_wait(&self) -> Histogram {
        self.assign_wait.clone()
    }

    /// What the metrics show, as of now; `backlog` what waits for the store.
    pub fn readings(&self, backlog: &Backlog) -> Readings {
        let counts = self.queue.counts();
        Readings {
            queued: counts.queued,
            running: counts.running,
            total: counts.total,
            agents_connected: self.agents.values().filter(|a| a.tx.is_some()).count() as u64,
            store_backlog_results: backlog.entries as u64,
            store_backlog_bytes: backlog.bytes,
            store_failing_secs: backlog.failing_since.map_or(0, |t| t.elapsed().as_secs()),
            verdicts: self.verdicts.clone(),
            leases_expired: self.leases_expired,
            leases_released: self.leases_released,
            leases_reclaimed: self.leases_reclaimed,
            results_discarded: self.results_discarded,
            log_bytes_received: self.log_bytes_received,
        }
    }

    fn assign_message(&self, a: &Assignment) -> pb::CoordinatorMessage {
        let entry = self.queue.job(a.job).expect("assigned jobs exist");
        let spec = &entry.spec;
        let target = self
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
        message(CoordMsg::Assign(pb::Assign {
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
            limits: Some(self.limits),
        }))
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

pub fn message(m: CoordMsg) -> pb::CoordinatorMessage {
    pb::CoordinatorMessage { msg: Some(m) }
}

#[cfg(test)]
mod tests;
