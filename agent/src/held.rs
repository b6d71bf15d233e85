//! What an agent holds for its coordinator, whatever happens to the connection: the jobs it runs
//! or has finished, each with its log in a file, until the coordinator acknowledges the result;
//! and the slots waiting for work.
//!
//! The slot loops write here (a job starts, its log grows, it ends); the [`link`](crate::link)
//! reads here to know what to send on the current connection, and what to say it holds when it
//! connects again. Keeping the logs on disk rather than in the stream is what lets a job outlive
//! a partition or a coordinator restart: whatever the coordinator did not get is sent again from
//! the file, from the offset it asks for. Nothing here does network I/O; [`Held::changed`] wakes
//! the link whenever there is something new to send.

use crater_proto::pb;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Mutex;
use tokio::sync::{Notify, oneshot};
use tokio_util::sync::CancellationToken;

/// This agent's own number for a job it holds: stable while the coordinator's job id and
/// attempt may change (a restarted coordinator gives new ones).
pub type LocalId = u64;

/// Which lease a held job runs under, and what it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobMeta {
    pub job_id: u64,
    pub attempt: u32,
    pub slot: u32,
    pub tool: String,
    pub krate: String,
    pub version: String,
}

struct Entry {
    meta: JobMeta,
    path: PathBuf,
    /// Log bytes in the file.
    written: u64,
    done: Option<pb::JobDone>,
    /// Cancelled when the coordinator takes the job away: the slot stops running it.
    dropped: CancellationToken,
}

/// A held job as the link sees it at one moment: what it has to send.
#[derive(Debug, Clone)]
pub struct Pending {
    pub id: LocalId,
    pub job_id: u64,
    pub attempt: u32,
    pub path: PathBuf,
    pub written: u64,
    /// Set once the job ended and the whole log is written.
    pub done: Option<pb::JobDone>,
}

/// A free slot's request for work, numbered so a new connection knows to ask again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ticket {
    pub slot: u32,
    pub number: u64,
}

#[derive(Default)]
struct Inner {
    next_id: LocalId,
    next_ticket: u64,
    jobs: BTreeMap<LocalId, Entry>,
    /// Slots waiting for work, and where their job goes.
    free: BTreeMap<u32, (u64, oneshot::Sender<pb::Assign>)>,
    /// No new work: free slots stop waiting.
    draining: bool,
    /// Slot loops still running.
    active_slots: usize,
    /// Jobs given back unfinished, to tell the coordinator on this connection.
    releases: Vec<pb::Release>,
}

pub struct Held {
    dir: tempfile::TempDir,
    inner: Mutex<Inner>,
    changed: Notify,
}

/// A job's log file, written by its slot.
pub struct LogFile {
    pub id: LocalId,
    file: std::fs::File,
    /// Cancelled when the coordinator takes the job away.
    pub dropped: CancellationToken,
}

impl Held {
    /// An empty set, with its logs in a fresh temporary directory (removed when dropped).
    pub fn new() -> std::io::Result<Held> {
        let dir = tempfile::Builder::new()
            .prefix("crater-agent-logs-")
            .tempdir()?;
        Ok(Held {
            dir,
            inner: Mutex::new(Inner::default()),
            changed: Notify::new(),
        })
    }

    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().expect("held lock poisoned")
    }

    /// Completes when something changed since the last call: a log grew, a job ended, a slot
    /// became free, a slot loop ended.
    pub async fn changed(&self) {
        self.changed.notified().await;
    }

    fn touch(&self) {
        self.changed.notify_one();
    }

    /// A slot loop starts; [`Held::slot_ended`] when it returns.
    pub fn slot_started(&self) {
        self.inner().active_slots += 1;
    }

    pub fn slot_ended(&self) {
        self.inner().active_slots -= 1;
        self.touch();
    }

    /// `slot` is free: its job will come through the receiver. `None` when draining.
    pub fn want_work(&self, slot: u32) -> Option<oneshot::Receiver<pb::Assign>> {
        let mut inner = self.inner();
        if inner.draining {
            return None;
        }
        let (tx, rx) = oneshot::channel();
        let number = inner.next_ticket;
        inner.next_ticket += 1;
        inner.free.insert(slot, (number, tx));
        drop(inner);
        self.touch();
        Some(rx)
    }

    /// The free slots, each with its ticket.
    pub fn free_slots(&self) -> Vec<Ticket> {
        (self.inner().free.iter())
            .map(|(&slot, &(number, _))| Ticket { slot, number })
            .collect()
    }

    /// Where a job for `slot` goes, if the slot is free (it is not any more).
    pub fn take_free(&self, slot: u32) -> Option<oneshot::Sender<pb::Assign>> {
        self.inner().free.remove(&slot).map(|(_, tx)| tx)
    }

    /// No new work: free slots stop waiting, and their loops end.
    pub fn drain(&self) {
        let mut inner = self.inner();
        inner.draining = true;
        inner.free.clear();
        drop(inner);
        self.touch();
    }

    /// Draining, every slot loop ended and every result acknowledged: nothing left to do.
    pub fn idle(&self) -> bool {
        let inner = self.inner();
        inner.draining && inner.active_slots == 0 && inner.jobs.is_empty()
    }

    /// Every slot loop ended.
    pub fn slots_ended(&self) -> bool {
        self.inner().active_slots == 0
    }

    /// Starts holding the job of `assign`, with an empty log file.
    pub fn start(&self, assign: &pb::Assign) -> std::io::Result<LogFile> {
        let mut inner = self.inner();
        let id = inner.next_id;
        inner.next_id += 1;
        let path = self.dir.path().join(format!("{id}.log"));
        let file = std::fs::File::create(&path)?;
        let krate = assign.krate.clone().unwrap_or_default();
        let dropped = CancellationToken::new();
        inner.jobs.insert(
            id,
            Entry {
                meta: JobMeta {
                    job_id: assign.job_id,
                    attempt: assign.attempt,
                    slot: assign.slot,
                    tool: assign.tool.clone(),
                    krate: krate.name,
                    version: krate.version,
                },
                path,
                written: 0,
                done: None,
                dropped: dropped.clone(),
            },
        );
        Ok(LogFile { id, file, dropped })
    }

    /// Appends to a job's log.
    pub fn write(&self, log: &mut LogFile, bytes: &[u8]) -> std::io::Result<()> {
        log.file.write_all(bytes)?;
        if let Some(entry) = self.inner().jobs.get_mut(&log.id) {
            entry.written += bytes.len() as u64;
        }
        self.touch();
        Ok(())
    }

    /// The job ended: its log is whole, `done` follows it. It is sent under the job's lease as
    /// it is now, which a reconnection may have changed since the job started.
    pub fn finish(&self, id: LocalId, mut done: pb::JobDone) {
        if let Some(entry) = self.inner().jobs.get_mut(&id) {
            done.job_id = entry.meta.job_id;
            done.attempt = entry.meta.attempt;
            entry.done = Some(done);
        }
        self.touch();
    }

    /// The job is given back unfinished (the agent is stopping): forgotten, and the coordinator
    /// is told on this connection, if there is one.
    pub fn release(&self, id: LocalId) {
        let mut inner = self.inner();
        if let Some(entry) = inner.jobs.remove(&id) {
            let _ = std::fs::remove_file(&entry.path);
            inner.releases.push(pb::Release {
                job_id: entry.meta.job_id,
                attempt: entry.meta.attempt,
            });
        }
        drop(inner);
        self.touch();
    }

    /// Gives back a job that never started (it could not be held).
    pub fn give_back(&self, job_id: u64, attempt: u32) {
        self.inner().releases.push(pb::Release { job_id, attempt });
        self.touch();
    }

    /// Releases to send now.
    pub fn take_releases(&self) -> Vec<pb::Release> {
        std::mem::take(&mut self.inner().releases)
    }

    /// The coordinator is done with the result of this lease: the job is forgotten. False when
    /// no finished job has that lease.
    pub fn acknowledged(&self, job_id: u64, attempt: u32) -> bool {
        let mut inner = self.inner();
        let found = (inner.jobs.iter())
            .find(|(_, e)| e.done.is_some() && e.meta.job_id == job_id && e.meta.attempt == attempt)
            .map(|(&id, _)| id);
        if let Some(id) = found {
            let entry = inner.jobs.remove(&id).expect("found above");
            let _ = std::fs::remove_file(&entry.path);
        }
        drop(inner);
        self.touch();
        found.is_some()
    }

    /// The coordinator takes `job_id` away (Cancel): the slot stops it, its result goes nowhere.
    pub fn cancel(&self, job_id: u64) -> bool {
        let id = (self.inner().jobs.iter())
            .find(|(_, e)| e.meta.job_id == job_id)
            .map(|(&id, _)| id);
        if let Some(id) = id {
            self.drop_job(id);
        }
        id.is_some()
    }

    fn drop_job(&self, id: LocalId) {
        if let Some(entry) = self.inner().jobs.remove(&id) {
            entry.dropped.cancel();
            let _ = std::fs::remove_file(&entry.path);
        }
        self.touch();
    }

    /// What to tell a coordinator on connecting: every job held, with its lease as known so far.
    pub fn hello_list(&self) -> Vec<pb::HeldJob> {
        (self.inner().jobs.values())
            .map(|e| pb::HeldJob {
                job_id: e.meta.job_id,
                attempt: e.meta.attempt,
                slot: e.meta.slot,
                tool: e.meta.tool.clone(),
                krate: e.meta.krate.clone(),
                version: e.meta.version.clone(),
                log_bytes: e.written,
                finished: e.done.is_some(),
            })
            .collect()
    }

    /// Applies a Welcome's answers: kept jobs take their (maybe new) lease, the others are
    /// stopped and forgotten. Returns, for each kept job, where its log is sent again from.
    /// Releases of an earlier connection are dropped: the new one knows only what is held.
    pub fn reclaimed(&self, answers: &[pb::Reclaim]) -> BTreeMap<LocalId, u64> {
        let mut resend = BTreeMap::new();
        let mut dropped = Vec::new();
        {
            let mut inner = self.inner();
            inner.releases.clear();
            for answer in answers {
                let found = (inner.jobs.iter_mut()).find(|(_, e)| {
                    e.meta.job_id == answer.held_job_id && e.meta.attempt == answer.held_attempt
                });
                let Some((&id, entry)) = found else { continue };
                if answer.keep {
                    entry.meta.job_id = answer.job_id;
                    entry.meta.attempt = answer.attempt;
                    if let Some(done) = &mut entry.done {
                        done.job_id = answer.job_id;
                        done.attempt = answer.attempt;
                    }
                    resend.insert(id, answer.resend_from.min(entry.written));
                } else {
                    dropped.push(id);
                }
            }
        }
        for id in dropped {
            self.drop_job(id);
        }
        resend
    }

    /// Every held job and what it has to send.
    pub fn pending(&self) -> Vec<Pending> {
        (self.inner().jobs.iter())
            .map(|(&id, e)| Pending {
                id,
                job_id: e.meta.job_id,
                attempt: e.meta.attempt,
                path: e.path.clone(),
                written: e.written,
                done: e.done.clone(),
            })
            .collect()
    }

    /// Lease ids of the jobs still running, for heartbeats.
    pub fn running_job_ids(&self) -> Vec<u64> {
        (self.inner().jobs.values())
            .filter(|e| e.done.is_none())
            .map(|e| e.meta.job_id)
            .collect()
    }

    /// How many jobs are held (running or waiting for their acknowledgement).
    pub fn len(&self) -> usize {
        self.inner().jobs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assign(job_id: u64, slot: u32, name: &str) -> pb::Assign {
        pb::Assign {
            job_id,
            attempt: 1,
            slot,
            krate: Some(pb::CrateSpec {
                name: name.into(),
                version: "1.0.0".into(),
                source: None,
            }),
            tool: "check".into(),
            ..Default::default()
        }
    }

    #[test]
    fn a_job_is_held_with_its_log_until_its_result_is_acknowledged() {
        let held = Held::new().unwrap();
        let mut log = held.start(&assign(5, 0, "a")).unwrap();
        held.write(&mut log, b"hello ").unwrap();
        held.write(&mut log, b"world").unwrap();
        let pending = held.pending();
        assert_eq!(pending[0].written, 11);
        assert_eq!(std::fs::read(&pending[0].path).unwrap(), b"hello world");
        assert_eq!(held.running_job_ids(), [5]);
        assert!(!held.acknowledged(5, 1), "not finished yet");
        held.finish(
            log.id,
            pb::JobDone {
                job_id: 5,
                attempt: 1,
                ..Default::default()
            },
        );
        assert!(held.running_job_ids().is_empty());
        let listed = held.hello_list();
        assert_eq!(
            (
                listed[0].krate.as_str(),
                listed[0].log_bytes,
                listed[0].finished
            ),
            ("a", 11, true)
        );
        assert!(!held.acknowledged(5, 2), "another attempt");
        assert!(held.acknowledged(5, 1));
        assert!(held.is_empty());
        assert!(!pending[0].path.exists(), "its log is deleted");
    }

    #[test]
    fn a_welcome_relabels_kept_jobs_and_stops_the_others() {
        let held = Held::new().unwrap();
        let kept = held.start(&assign(5, 0, "a")).unwrap();
        let mut lost = held.start(&assign(6, 1, "b")).unwrap();
        held.write(&mut lost, b"xyz").unwrap();
        held.finish(
            kept.id,
            pb::JobDone {
                job_id: 5,
                attempt: 1,
                ..Default::default()
            },
        );
        let resend = held.reclaimed(&[
            pb::Reclaim {
                held_job_id: 5,
                held_attempt: 1,
                keep: true,
                job_id: 90,
                attempt: 1,
                resend_from: 1 << 40,
            },
            pb::Reclaim {
                held_job_id: 6,
                held_attempt: 1,
                ..Default::default()
            },
        ]);
        assert_eq!(resend.get(&kept.id), Some(&0), "never past what is written");
        assert!(lost.dropped.is_cancelled() && !kept.dropped.is_cancelled());
        let pending = held.pending();
        assert_eq!(pending.len(), 1);
        assert_eq!(
            (pending[0].job_id, pending[0].done.as_ref().unwrap().job_id),
            (90, 90)
        );
    }

    #[test]
    fn a_job_relabelled_while_running_ends_under_its_new_lease() {
        let held = Held::new().unwrap();
        let log = held.start(&assign(5, 0, "a")).unwrap();
        let answer = pb::Reclaim {
            held_job_id: 5,
            held_attempt: 1,
            keep: true,
            job_id: 0,
            attempt: 1,
            resend_from: 0,
        };
        held.reclaimed(&[answer]);
        held.finish(
            log.id,
            pb::JobDone {
                job_id: 5,
                attempt: 1,
                ..Default::default()
            },
        );
        let done = held.pending()[0].done.clone().unwrap();
        assert_eq!((done.job_id, done.attempt), (0, 1));
        assert!(held.acknowledged(0, 1));
    }

    #[test]
    fn free_slots_get_their_job_until_the_agent_drains() {
        let held = Held::new().unwrap();
        held.slot_started();
        let mut rx = held.want_work(3).unwrap();
        let ticket = held.free_slots()[0];
        assert_eq!(ticket.slot, 3);
        assert!(held.take_free(2).is_none(), "not free");
        held.take_free(3).unwrap().send(assign(1, 3, "a")).unwrap();
        assert_eq!(rx.try_recv().unwrap().job_id, 1);
        let again = held.want_work(3).unwrap();
        assert_ne!(held.free_slots()[0].number, ticket.number, "a new ticket");
        held.drain();
        assert!(held.want_work(3).is_none());
        drop(again);
        assert!(!held.idle(), "a slot loop still runs");
        held.slot_ended();
        assert!(held.idle());
    }

    #[test]
    fn a_released_job_is_forgotten_and_told_once() {
        let held = Held::new().unwrap();
        let log = held.start(&assign(7, 0, "a")).unwrap();
        held.release(log.id);
        assert!(held.is_empty());
        let releases = held.take_releases();
        assert_eq!((releases[0].job_id, releases[0].attempt), (7, 1));
        assert!(held.take_releases().is_empty());
    }
}
