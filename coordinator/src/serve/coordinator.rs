//! The coordinator: its [`State`] behind a lock, joined to what does I/O — the agents' streams,
//! the spooled logs, the result path and the person watching.
//!
//! Each agent stream (see [`grpc`](super::grpc)) calls in here as its messages arrive. Logs of
//! the jobs an agent runs are spooled to disk as they come (the coordinator never holds a whole
//! log in memory), one spool per lease, kept across the agent's reconnections; when a job ends
//! and its lease is still current, its result is published ([`publish()`]) in a task of its
//! own, so a large log never stalls the agent's stream, and the agent gets a `DoneAck` once the
//! result is committed. A stream that ends leaves its agent's leases in place until the lease
//! timeout: an agent back in time reclaims them and resends its logs from where the spools end.
//! While more results wait for the store than `--spool-max-gb` allows, free slots are parked
//! instead of given work, and get it once the uploads drain.

use crate::results::outbox::Outbox;
use crate::results::publish::{self, publish};
use crate::results::spool::{self, Spool};
use crate::serve::metrics::Readings;
use crate::serve::queue::{ConnId, JobId, JobKey, JobSource, JobSpec};
use crate::serve::state::{Agent, Sends, State, ToAgent, message};
use crate::serve::validate;
use crate::serve::validate::Hello;
use crater_proto::pb::{self, coordinator_message::Msg as CoordMsg};
use crater_proto::verdict::Verdict;
use prometheus_client::metrics::histogram::Histogram;
use std::collections::HashMap;
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

/// How often agents send a heartbeat when they have nothing else to say (the Welcome says so),
/// at most.
const HEARTBEAT_SECS: u64 = 10;

/// The heartbeat interval for `lease_timeout`: every 10 s, or three times a lease when the lease
/// is shorter than 30 s. A quiet agent (a build script printing nothing) is heard only through
/// its heartbeats, and with one heartbeat a lease it lost its jobs whenever the heartbeat came a
/// moment after the expiry check.
fn heartbeat_secs(lease_timeout: Duration) -> u32 {
    (lease_timeout.as_secs() / 3).clamp(1, HEARTBEAT_SECS) as u32
}

/// A lease's spooled log, shared by the streams of an agent that reconnects.
type SharedSpool = Arc<tokio::sync::Mutex<Spool>>;

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
    /// What the Welcome asks of agents (see [`heartbeat_secs`]).
    heartbeat_secs: u32,
    /// The log of every lease that sent some, by (job, attempt).
    spools: Mutex<HashMap<(JobId, u32), SharedSpool>>,
}

impl Coordinator {
    /// `lease_timeout`: how long an agent may be silent before its jobs go to others.
    /// `interrupted`: jobs an earlier coordinator was running when it stopped, held back for
    /// that long for their agents to take back.
    pub fn new(
        outbox: Outbox,
        limits: pb::Limits,
        lease_timeout: Duration,
        jobs: Vec<JobSpec>,
        interrupted: &[JobKey],
    ) -> (Coordinator, mpsc::UnboundedReceiver<Event>) {
        let (events, events_rx) = mpsc::unbounded_channel();
        let log_cap = match limits.max_log_bytes {
            0 => u64::MAX,
            max => max.saturating_add(crater_proto::LOG_SLACK_BYTES),
        };
        let mut state = State::new(jobs, limits, lease_timeout);
        let reserved = state.reserve(interrupted, Instant::now());
        if reserved > 0 {
            tracing::info!(
                "{reserved} crates were running when the last coordinator stopped: they wait \
                 {lease_timeout:?} for their agents to take them back"
            );
        }
        let (complete, _) = watch::channel(state.is_complete());
        let inner = Inner {
            state: Mutex::new(state),
            outbox,
            events,
            complete,
            started: Instant::now(),
            log_cap,
            heartbeat_secs: heartbeat_secs(lease_timeout),
            spools: Mutex::new(HashMap::new()),
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
            for e in expired {
                self.discard_logs(e.logs).await;
            }
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

    /// An agent said Hello; `tx` reaches its stream, which gets the Welcome with the answer
    /// for every job the agent holds before anything else.
    pub(super) async fn connect(&self, hello: &Hello, tx: ToAgent) -> ConnId {
        let now = Instant::now();
        let agent = Agent {
            id: hello.id.clone(),
            name: hello.name.clone(),
            slots: hello.slots,
            tools: hello.tools.iter().cloned().collect(),
            targets: hello.targets.clone(),
            toolchain: hello.toolchain.clone(),
            tx: Some(tx.clone()),
            connected: now,
            last_heard: now,
        };
        let full = self.inner.outbox.over_bound();
        let connected = {
            let mut state = self.state();
            let connected = state.connect(agent, &hello.held, now, full);
            // Under the lock, so no acknowledgement or Assign for this agent comes first. The
            // stream's channel is new and has room.
            let welcome = message(CoordMsg::Welcome(pb::Welcome {
                coordinator_version: env!("CARGO_PKG_VERSION").to_owned(),
                heartbeat_interval_secs: self.inner.heartbeat_secs,
                reclaimed: connected.reclaimed.clone(),
            }));
            let _ = tx.try_send(Ok(welcome));
            if connected.draining {
                let _ = tx.try_send(Ok(message(CoordMsg::Drain(pb::Drain {}))));
            }
            connected
        };
        let kept = connected.reclaimed.iter().filter(|r| r.keep).count();
        if !hello.held.is_empty() {
            tracing::info!(
                agent = %hello.name,
                "the agent holds {} jobs: {kept} reclaimed, {} dropped",
                hello.held.len(),
                hello.held.len() - kept
            );
        }
        send_all(connected.sends).await;
        self.discard_logs(connected.dropped_logs).await;
        connected.conn
    }

    fn spools(&self) -> std::sync::MutexGuard<'_, HashMap<(JobId, u32), SharedSpool>> {
        self.inner.spools.lock().expect("spools lock poisoned")
    }

    /// Deletes the spooled logs of leases that ended without a result.
    async fn discard_logs(&self, leases: impl IntoIterator<Item = (JobId, u32)>) {
        for lease in leases {
            let spool = self.spools().remove(&lease);
            if let Some(spool) = spool {
                spool.lock().await.discard().await;
            }
        }
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

    fn spool_path(&self, (tool, name, version): &JobKey, attempt: u32) -> PathBuf {
        let file = spool::file_name(*tool, name, version, attempt);
        self.inner.outbox.spool_dir().join(file)
    }

    pub(super) async fn on_log_chunk(&self, conn: ConnId, chunk: pb::LogChunk) {
        let Some(job) = self.state().leased_key(chunk.job_id, conn, chunk.attempt) else {
            tracing::debug!(
                job = chunk.job_id,
                "log for a job this agent no longer holds"
            );
            return;
        };
        let key = (chunk.job_id, chunk.attempt);
        let spool = self
            .spools()
            .entry(key)
            .or_insert_with(|| {
                let path = self.spool_path(&job, chunk.attempt);
                Arc::new(tokio::sync::Mutex::new(Spool::new(
                    path,
                    self.inner.log_cap,
                )))
            })
            .clone();
        let mut spool = spool.lock().await;
        if spool.broken.is_some() {
            return; // said once; the result will be an error with the reason
        }
        let before = spool.spooled();
        if let Err(e) = spool.append(chunk.offset, &chunk.data).await {
            tracing::error!(job = chunk.job_id, "spooling the log: {e}");
            spool.broken = Some(e.to_string());
            return;
        }
        self.state().logged(chunk.job_id, spool.spooled() - before);
    }

    pub(super) async fn on_job_done(&self, conn: ConnId, mut done: pb::JobDone) {
        validate::job_done(&mut done);
        let key = (done.job_id, done.attempt);
        let finishing = self.state().begin_finish(done.job_id, conn, done.attempt);
        let Some(finishing) = finishing else {
            // Its spool, if any, is not this connection's to touch: it may be the log of the
            // lease holder (a forged JobDone), and an ended lease's log goes when it ends.
            tracing::debug!(job = done.job_id, "ignoring the result of a stale attempt");
            // The agent may forget it: nothing will ever take it.
            let tx = self.state().conn_tx(conn);
            acknowledge(tx, key, false).await;
            return;
        };
        let spool = self.spools().remove(&key).unwrap_or_else(|| {
            let spec = &finishing.spec;
            let key = (spec.tool, spec.name.clone(), spec.version.clone());
            let path = self.spool_path(&key, done.attempt);
            Arc::new(tokio::sync::Mutex::new(Spool::new(
                path,
                self.inner.log_cap,
            )))
        });
        let this = self.clone();
        tokio::spawn(async move {
            let spec = &finishing.spec;
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
                agent: &finishing.agent_name,
                toolchain: &finishing.toolchain,
            };
            let log = spool.lock().await.finish().await;
            let published = match log {
                Ok(log) => publish(&this.inner.outbox, job, done, log).await,
                Err(e) => Err(e.into()),
            };
            let stored = published.is_ok();
            this.finished(key.0, spec, published, duration);
            // To the agent's current stream: it may have reconnected meanwhile.
            let tx = this.state().agent_tx(&finishing.agent_id);
            acknowledge(tx, key, stored).await;
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
    pub(super) async fn on_release(&self, conn: ConnId, release: pb::Release) {
        let full = self.inner.outbox.over_bound();
        let released =
            (self.state()).release(release.job_id, conn, release.attempt, Instant::now(), full);
        // Only the holder's Release ends the lease, and with it the log.
        let Some(sends) = released else { return };
        tracing::info!(
            job = release.job_id,
            "an agent gave its job back: it goes to another"
        );
        send_all(sends).await;
        self.discard_logs([(release.job_id, release.attempt)]).await;
    }

    /// `conn`'s stream ended. Its agent keeps its jobs for the lease timeout, in case it is back.
    pub(super) fn on_disconnect(&self, conn: ConnId) {
        if let Some((agent, keeps)) = self.state().disconnect(conn)
            && keeps > 0
        {
            tracing::warn!(
                agent = %agent,
                "lost the connection to an agent with {keeps} running jobs; they go to others \
                 if it is not back within the lease timeout"
            );
        }
    }
}

/// Tells an agent it may forget a job (its result committed, or of no use).
async fn acknowledge(tx: Option<ToAgent>, (job_id, attempt): (JobId, u32), stored: bool) {
    let Some(tx) = tx else { return };
    let ack = message(CoordMsg::DoneAck(pb::DoneAck {
        job_id,
        attempt,
        stored,
    }));
    // An agent that stopped reading does not hold this task for long; it asks again when it
    // reconnects.
    let _ = tokio::time::timeout(Duration::from_secs(10), tx.send(Ok(ack))).await;
}

async fn send_all(sends: Sends) {
    for (tx, message) in sends {
        let _ = tx.send(Ok(message)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_hears_at_least_three_heartbeats() {
        assert_eq!(
            heartbeat_secs(Duration::from_secs(45)),
            10,
            "the default lease"
        );
        assert_eq!(heartbeat_secs(Duration::from_secs(10)), 3);
        assert_eq!(heartbeat_secs(Duration::from_secs(2)), 1);
        assert_eq!(heartbeat_secs(Duration::from_secs(3600)), 10);
    }
}
