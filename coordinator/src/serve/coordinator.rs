//! The coordinator: its [`State`] behind a lock, joined to what does I/O — the agents' streams,
//! the spooled logs, the result path and the person watching.
//!
//! Each agent stream (see [`grpc`](super::grpc)) calls in here as its messages arrive. Logs of
//! the jobs an agent runs are spooled to disk as they come (the coordinator never holds a whole
//! log in memory); when a job ends and its lease is still current, its result is published
//! ([`publish()`]) in a task of its own, so a large log never stalls the agent's stream. A stream
//! that ends puts its unfinished jobs back in the queue. While more results wait for the store
//! than `--spool-max-gb` allows, free slots are parked instead of given work, and get it once
//! the uploads drain.

use crate::results::outbox::Outbox;
use crate::results::publish::{self, publish};
use crate::results::spool::Spool;
use crate::serve::metrics::Readings;
use crate::serve::queue::{ConnId, JobId, JobSource, JobSpec};
use crate::serve::state::{Agent, Sends, State, ToAgent, message};
use crate::serve::validate;
use crater_proto::pb::{self, coordinator_message::Msg as CoordMsg};
use crater_proto::verdict::Verdict;
use prometheus_client::metrics::histogram::Histogram;
use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};

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

/// The logs one agent stream is spooling, by (job, attempt).
pub(super) type Spools = HashMap<(JobId, u32), Spool>;

#[derive(Clone)]
pub struct Coordinator {
    inner: Arc<Inner>,
}

struct Inner {
    state: Mutex<State>,
    outbox: Outbox,
    events: mpsc::UnboundedSender<Event>,
    complete: watch::Sender<bool>,
    started: Instant,
    /// The most log bytes one job may send: its `max_log_bytes` plus the kept tail.
    log_cap: u64,
}

impl Coordinator {
    /// `lease_timeout`: how long an agent may be silent before its jobs go to others.
    pub fn new(
        outbox: Outbox,
        limits: pb::Limits,
        lease_timeout: Duration,
        jobs: Vec<JobSpec>,
    ) -> (Coordinator, mpsc::UnboundedReceiver<Event>) {
        let (events, events_rx) = mpsc::unbounded_channel();
        let log_cap = match limits.max_log_bytes {
            0 => u64::MAX,
            max => max.saturating_add(crater_proto::LOG_SLACK_BYTES),
        };
        let state = State::new(jobs, limits, lease_timeout);
        let (complete, _) = watch::channel(state.is_complete());
        let inner = Inner {
            state: Mutex::new(state),
            outbox,
            events,
            complete,
            started: Instant::now(),
            log_cap,
        };
        let coordinator = Coordinator {
            inner: Arc::new(inner),
        };
        tokio::spawn(coordinator.clone().resume_after_backpressure());
        tokio::spawn(coordinator.clone().expire_silent_agents());
        (coordinator, events_rx)
    }

    /// Once a second, takes the jobs of agents silent past the lease timeout and hands them to
    /// parked slots. Runs as long as the coordinator.
    async fn expire_silent_agents(self) {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let full = self.inner.outbox.over_bound();
            let (expired, sends) = self.state().expire(Instant::now(), full);
            for e in &expired {
                tracing::warn!(
                    agent = %e.agent,
                    "agent silent for {:?}, past the lease timeout: its {} jobs go to others",
                    e.silent_for,
                    e.requeued
                );
            }
            send_all(sends).await;
        }
    }

    /// A result from an agent whose leases expired: discarded, and counted.
    pub(super) fn late_result(&self, job: JobId) {
        tracing::warn!(job, "discarding a result from an expired lease");
        self.state().discard_late_result();
    }

    /// Any message from `conn` renews its leases; false when its leases already expired.
    pub(super) fn heard(&self, conn: ConnId) -> bool {
        self.state().heard(conn, Instant::now())
    }

    /// Hands parked slots their work whenever the outbox drops back under its bound.
    async fn resume_after_backpressure(self) {
        let mut backlog = self.inner.outbox.backlog();
        while backlog.changed().await.is_ok() {
            if self.inner.outbox.over_bound() {
                continue;
            }
            let Some(sends) = self.state().end_backpressure(Instant::now()) else {
                continue;
            };
            tracing::info!("the spool is under its bound again: handing out work");
            send_all(sends).await;
        }
    }

    /// Becomes true when every job has a stored result.
    pub fn completion(&self) -> watch::Receiver<bool> {
        self.inner.complete.subscribe()
    }

    pub fn store_failures(&self) -> u64 {
        self.state().store_failures()
    }

    pub fn connected_agents(&self) -> usize {
        self.state().connected_agents()
    }

    /// Tells every agent to finish its running jobs and take no more.
    pub async fn drain(&self) {
        let txs = self.state().drain();
        for tx in txs {
            // Not awaited: an agent that stopped reading must not hold up the others.
            let _ = tx.try_send(Ok(message(CoordMsg::Drain(pb::Drain {}))));
        }
    }

    pub fn status(&self) -> pb::StatusReply {
        let backlog = self.inner.outbox.backlog().borrow().clone();
        self.state()
            .status(Instant::now(), self.inner.started.elapsed(), &backlog)
    }

    /// What the metrics show, as of now.
    pub fn readings(&self) -> Readings {
        let backlog = self.inner.outbox.backlog().borrow().clone();
        self.state().readings(&backlog)
    }

    /// The histogram of slots' waits for work (a handle on the state's).
    pub fn assign_wait(&self) -> Histogram {
        self.state().assign_wait()
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.inner.state.lock().expect("state lock poisoned")
    }

    /// An agent said Hello; `tx` reaches its stream.
    pub(super) fn connect(&self, hello: &validate::Hello, tx: ToAgent) -> ConnId {
        let now = Instant::now();
        let agent = Agent {
            name: hello.name.clone(),
            slots: hello.slots,
            tools: hello.tools.iter().cloned().collect(),
            targets: hello.targets.clone(),
            tx: tx.clone(),
            connected: now,
            last_heard: now,
        };
        let (conn, draining) = self.state().connect(agent);
        if draining {
            let _ = tx.try_send(Ok(message(CoordMsg::Drain(pb::Drain {}))));
        }
        conn
    }

    pub(super) async fn on_want_work(&self, conn: ConnId, slot: u32) {
        let full = self.inner.outbox.over_bound();
        let answer = self.state().want_work(conn, slot, Instant::now(), full);
        if answer.backpressure_began {
            let backlog = self.inner.outbox.backlog().borrow().clone();
            tracing::warn!(
                "{} results ({} MiB) wait in the spool for the store (--spool-max-gb): \
                 no new work until they are stored",
                backlog.entries,
                backlog.bytes >> 20
            );
        }
        if let Some((tx, message)) = answer.assign {
            let _ = tx.send(Ok(message)).await;
        }
    }

    fn spool_path(&self, job: JobId, attempt: u32) -> PathBuf {
        self.inner
            .outbox
            .spool_dir()
            .join(format!("{job}-{attempt}.log"))
    }

    pub(super) async fn on_log_chunk(
        &self,
        conn: ConnId,
        spools: &mut Spools,
        chunk: pb::LogChunk,
    ) {
        if !self.state().holds_lease(chunk.job_id, conn, chunk.attempt) {
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
                let path = self.spool_path(chunk.job_id, chunk.attempt);
                match Spool::create(path, self.inner.log_cap).await {
                    Ok(spool) => entry.insert(spool),
                    Err(e) => {
                        tracing::error!("cannot spool a log: {e}");
                        return;
                    }
                }
            }
        };
        if spool.broken.is_some() {
            return; // said once; the result will be an error with the reason
        }
        if let Err(e) = spool.append(chunk.offset, &chunk.data).await {
            tracing::error!(job = chunk.job_id, "spooling the log: {e}");
            spool.broken = Some(e.to_string());
            return;
        }
        self.state().logged(chunk.job_id, chunk.data.len() as u64);
    }

    pub(super) async fn on_job_done(
        &self,
        conn: ConnId,
        spools: &mut Spools,
        mut done: pb::JobDone,
    ) {
        validate::job_done(&mut done);
        let key = (done.job_id, done.attempt);
        let spool = spools.remove(&key);
        let lease_holder = self.state().begin_finish(done.job_id, conn, done.attempt);
        let Some((spec, agent)) = lease_holder else {
            tracing::debug!(job = done.job_id, "ignoring the result of a stale attempt");
            if let Some(spool) = spool {
                spool.discard().await;
            }
            return;
        };
        let spool = match spool {
            Some(spool) => spool,
            None => match Spool::create(
                self.spool_path(done.job_id, done.attempt),
                self.inner.log_cap,
            )
            .await
            {
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
            let source = match &spec.source {
                JobSource::Registry { .. } => "crates.io".to_owned(),
                JobSource::Local { path, .. } => path.display().to_string(),
            };
            let job = publish::Job {
                name: &spec.name,
                version: &spec.version,
                tool: spec.tool,
                target: &spec.target,
                source: &source,
                agent: &agent,
            };
            let published = publish(&this.inner.outbox, job, done, spool).await;
            this.finished(key.0, &spec, published, duration);
        });
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
                self.state().store_failed();
                (Verdict::Error, Some(format!("not stored: {e:#}")))
            }
        };
        let complete = self.state().finish(job, verdict);
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

    /// The agent gave a job back unfinished: its log so far is dropped, the job goes to another.
    pub(super) async fn on_release(&self, conn: ConnId, spools: &mut Spools, release: pb::Release) {
        if let Some(spool) = spools.remove(&(release.job_id, release.attempt)) {
            spool.discard().await;
        }
        let full = self.inner.outbox.over_bound();
        let sends =
            (self.state()).release(release.job_id, conn, release.attempt, Instant::now(), full);
        tracing::info!(
            job = release.job_id,
            "an agent gave its job back: it goes to another"
        );
        send_all(sends).await;
    }

    pub(super) async fn on_disconnect(&self, conn: ConnId, spools: Spools) {
        for (_, spool) in spools {
            spool.discard().await;
        }
        let full = self.inner.outbox.over_bound();
        let lost = self.state().disconnect(conn, Instant::now(), full);
        if lost.requeued > 0 {
            tracing::warn!(
                agent = lost.agent.as_deref().unwrap_or("?"),
                "agent lost with {} running jobs; they go back to the queue",
                lost.requeued
            );
        }
        send_all(lost.sends).await;
    }
}

async fn send_all(sends: Sends) {
    for (tx, message) in sends {
        let _ = tx.send(Ok(message)).await;
    }
}
