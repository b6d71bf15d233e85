//! The job queue and its leases: which crate runs where, and which result counts.
//!
//! Jobs are handed out one at a time, to one free slot each, and a slot holds at most one job: a
//! slot that asks again while it holds one gets nothing. A job is leased to (connection, slot,
//! attempt); only a `JobDone` that matches the current lease finishes it, so a late answer from
//! an earlier attempt is ignored and a result is published at most once. When a connection goes
//! away (its stream ended, or its agent fell silent past the lease timeout) its jobs go back to
//! the *front* of the queue with the attempt raised. This module is pure bookkeeping (no I/O;
//! the time is an argument), so the rules are unit-tested directly.

use bytes::Bytes;
use crater_proto::tool::Tool;
use crater_proto::verdict::Verdict;
use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::time::Instant;

pub type JobId = u64;
/// One agent's `Work` stream.
pub type ConnId = u64;

#[derive(Debug, Clone)]
pub enum JobSource {
    /// From crates.io; the checksum is the index's SHA-256 of the .crate.
    Registry { checksum: String },
    /// A directory on the coordinator's disk, packed as a gzip'd tar.
    Local { path: PathBuf, archive: Bytes },
}

#[derive(Debug, Clone)]
pub struct JobSpec {
    pub name: String,
    pub version: String,
    pub source: JobSource,
    pub tool: Tool,
    /// Empty: the agent's host target.
    pub target: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub conn: ConnId,
    pub slot: u32,
    pub attempt: u32,
    pub since: Instant,
    /// Log bytes received for this attempt so far.
    pub log_bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobState {
    Queued,
    Leased(Lease),
    /// Its result is being stored.
    Finishing,
    Done(Verdict),
}

#[derive(Debug)]
pub struct JobEntry {
    pub spec: JobSpec,
    /// The attempt the next lease gets (1 for the first).
    pub attempt: u32,
    pub state: JobState,
}

/// A job handed to a slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assignment {
    pub conn: ConnId,
    pub slot: u32,
    pub job: JobId,
    pub attempt: u32,
    /// When the slot asked for work (its WantWork): the time it waited is the assignment's
    /// time less this, which the `crater_assign_wait_seconds` metric observes.
    pub asked: Instant,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    pub queued: u64,
    pub running: u64,
    pub finished: u64,
    pub total: u64,
}

#[derive(Debug, Default)]
pub struct Queue {
    jobs: Vec<JobEntry>,
    pending: VecDeque<JobId>,
    /// Free slots with no job yet, in the order they asked, with the time they (first) asked.
    waiting: VecDeque<(ConnId, u32, Instant)>,
    /// Jobs in `Done`, so completion is O(1) after each of hundreds of thousands of jobs.
    done: usize,
    /// The job each busy slot holds, so "one job a slot" is O(1) too.
    busy: HashMap<(ConnId, u32), JobId>,
}

impl Queue {
    pub fn push(&mut self, spec: JobSpec) -> JobId {
        let id = self.jobs.len() as JobId;
        self.jobs.push(JobEntry {
            spec,
            attempt: 1,
            state: JobState::Queued,
        });
        self.pending.push_back(id);
        id
    }

    pub fn job(&self, id: JobId) -> Option<&JobEntry> {
        self.jobs.get(id as usize)
    }

    /// A slot is free. Returns its job, or remembers the slot until one is queued. A slot that
    /// still holds a job gets nothing (one job a slot, whatever an agent asks).
    pub fn want_work(
        &mut self,
        conn: ConnId,
        slot: u32,
        now: Instant,
        can_run: impl Fn(&JobSpec) -> bool,
    ) -> Option<Assignment> {
        if self.busy.contains_key(&(conn, slot)) {
            return None;
        }
        let found = self
            .pending
            .iter()
            .position(|&id| can_run(&self.jobs[id as usize].spec));
        match found {
            Some(pos) => {
                let id = self.pending.remove(pos).expect("position is in range");
                Some(self.lease(id, conn, slot, now, now))
            }
            None => {
                // A slot that asks again while parked keeps its place and its first ask's time.
                if !self.waiting.iter().any(|&(c, s, _)| (c, s) == (conn, slot)) {
                    self.waiting.push_back((conn, slot, now));
                }
                None
            }
        }
    }

    /// Leases job `id` to `conn`'s `slot` at `now`; the slot asked for work at `asked`.
    fn lease(
        &mut self,
        id: JobId,
        conn: ConnId,
        slot: u32,
        asked: Instant,
        now: Instant,
    ) -> Assignment {
        let job = &mut self.jobs[id as usize];
        let attempt = job.attempt;
        job.attempt += 1;
        job.state = JobState::Leased(Lease {
            conn,
            slot,
            attempt,
            since: now,
            log_bytes: 0,
        });
        self.busy.insert((conn, slot), id);
        Assignment {
            conn,
            slot,
            job: id,
            attempt,
            asked,
        }
    }

    /// Hands queued jobs to waiting slots (after jobs were requeued).
    pub fn assign_waiting(
        &mut self,
        now: Instant,
        can_run: impl Fn(ConnId, &JobSpec) -> bool,
    ) -> Vec<Assignment> {
        let mut out = Vec::new();
        let mut still_waiting = VecDeque::new();
        while let Some((conn, slot, asked)) = self.waiting.pop_front() {
            let found = self
                .pending
                .iter()
                .position(|&id| can_run(conn, &self.jobs[id as usize].spec));
            match found {
                Some(pos) => {
                    let id = self.pending.remove(pos).expect("position is in range");
                    out.push(self.lease(id, conn, slot, asked, now));
                }
                None => still_waiting.push_back((conn, slot, asked)),
            }
        }
        self.waiting = still_waiting;
        out
    }

    /// Whether `job` is leased to exactly this connection and attempt.
    pub fn holds_lease(&self, job: JobId, conn: ConnId, attempt: u32) -> bool {
        matches!(self.job(job), Some(JobEntry { state: JobState::Leased(l), .. })
            if l.conn == conn && l.attempt == attempt)
    }

    /// A `JobDone` arrived. True if it is the current lease's, which moves the job to
    /// `Finishing`; false for a stale or unknown one, which changes nothing.
    pub fn begin_finish(&mut self, job: JobId, conn: ConnId, attempt: u32) -> bool {
        let slot = match self.job(job).map(|j| &j.state) {
            Some(JobState::Leased(l)) if l.conn == conn && l.attempt == attempt => l.slot,
            _ => return false,
        };
        self.busy.remove(&(conn, slot));
        self.jobs[job as usize].state = JobState::Finishing;
        true
    }

    /// `bytes` more of the current lease's log arrived; its total so far.
    pub fn logged(&mut self, job: JobId, bytes: u64) -> u64 {
        match self.jobs.get_mut(job as usize).map(|j| &mut j.state) {
            Some(JobState::Leased(lease)) => {
                lease.log_bytes += bytes;
                lease.log_bytes
            }
            _ => 0,
        }
    }

    /// The job's result is stored (or, for `Verdict::Error` from a failed store, given up on).
    pub fn mark_done(&mut self, job: JobId, verdict: Verdict) {
        if let Some(entry) = self.jobs.get_mut(job as usize) {
            if !matches!(entry.state, JobState::Done(_)) {
                self.done += 1;
            }
            entry.state = JobState::Done(verdict);
        }
    }

    /// The lease holder gave `job` back without a result: it goes back to the front of the
    /// queue (the next lease gets the next attempt). False when `conn` did not hold that lease.
    pub fn release(&mut self, job: JobId, conn: ConnId, attempt: u32) -> bool {
        let slot = match self.job(job).map(|j| &j.state) {
            Some(JobState::Leased(l)) if l.conn == conn && l.attempt == attempt => l.slot,
            _ => return false,
        };
        self.busy.remove(&(conn, slot));
        self.jobs[job as usize].state = JobState::Queued;
        self.pending.push_front(job);
        true
    }

    /// A connection is gone: its leased jobs go back to the front of the queue (in their order),
    /// and its waiting slots are forgotten. Returns the requeued jobs.
    pub fn drop_connection(&mut self, conn: ConnId) -> Vec<JobId> {
        self.waiting.retain(|&(c, _, _)| c != conn);
        self.busy.retain(|&(c, _), _| c != conn);
        let mut requeued: Vec<JobId> = self
            .jobs
            .iter()
            .enumerate()
            .filter(|(_, j)| matches!(&j.state, JobState::Leased(l) if l.conn == conn))
            .map(|(id, _)| id as JobId)
            .collect();
        requeued.sort_by_key(|&id| std::cmp::Reverse(id));
        for &id in &requeued {
            self.jobs[id as usize].state = JobState::Queued;
            self.pending.push_front(id);
        }
        requeued.reverse();
        requeued
    }

    pub fn running(&self) -> impl Iterator<Item = (JobId, &JobSpec, &Lease)> {
        self.jobs
            .iter()
            .enumerate()
            .filter_map(|(id, j)| match &j.state {
                JobState::Leased(l) => Some((id as JobId, &j.spec, l)),
                _ => None,
            })
    }

    pub fn counts(&self) -> Counts {
        let mut counts = Counts {
            total: self.jobs.len() as u64,
            ..Counts::default()
        };
        for job in &self.jobs {
            match job.state {
                JobState::Queued => counts.queued += 1,
                JobState::Leased(_) | JobState::Finishing => counts.running += 1,
                JobState::Done(_) => counts.finished += 1,
            }
        }
        counts
    }

    pub fn is_complete(&self) -> bool {
        self.done == self.jobs.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(name: &str) -> JobSpec {
        JobSpec {
            name: name.into(),
            version: "1.0.0".into(),
            source: JobSource::Registry {
                checksum: "00".into(),
            },
            tool: Tool::Check,
            target: String::new(),
        }
    }

    fn any(_: &JobSpec) -> bool {
        true
    }

    fn now() -> Instant {
        Instant::now()
    }

    #[test]
    fn hands_out_one_job_per_free_slot_in_order() {
        let mut q = Queue::default();
        let a = q.push(spec("a"));
        let b = q.push(spec("b"));
        let first = q.want_work(1, 0, now(), any).unwrap();
        let second = q.want_work(1, 1, now(), any).unwrap();
        assert_eq!((first.job, first.slot, first.attempt), (a, 0, 1));
        assert_eq!((second.job, second.slot), (b, 1));
        assert_eq!(
            q.want_work(2, 0, now(), any),
            None,
            "nothing left: the slot waits"
        );
        assert_eq!(
            q.counts(),
            Counts {
                queued: 0,
                running: 2,
                finished: 0,
                total: 2
            }
        );
    }

    #[test]
    fn only_the_current_lease_finishes_a_job_and_only_once() {
        let mut q = Queue::default();
        let a = q.push(spec("a"));
        let lease = q.want_work(1, 0, now(), any).unwrap();
        assert!(!q.begin_finish(a, 2, lease.attempt), "another connection");
        assert!(!q.begin_finish(a, 1, lease.attempt + 1), "another attempt");
        assert!(q.begin_finish(a, 1, lease.attempt));
        assert!(!q.begin_finish(a, 1, lease.attempt), "a duplicate JobDone");
        q.mark_done(a, Verdict::Pass);
        q.mark_done(a, Verdict::Pass);
        assert!(q.is_complete());
        assert_eq!(q.counts().finished, 1, "done once, counted once");
    }

    #[test]
    fn a_lost_connection_requeues_its_jobs_at_the_front_with_a_new_attempt() {
        let mut q = Queue::default();
        let a = q.push(spec("a"));
        let b = q.push(spec("b"));
        let c = q.push(spec("c"));
        q.want_work(1, 0, now(), any).unwrap(); // a on conn 1
        q.want_work(2, 0, now(), any).unwrap(); // b on conn 2
        q.want_work(1, 1, now(), any).unwrap(); // c on conn 1
        assert_eq!(q.drop_connection(1), vec![a, c]);
        // The late answer of the dead attempt is ignored.
        assert!(!q.begin_finish(a, 1, 1));
        let again = q.want_work(2, 1, now(), any).unwrap();
        assert_eq!((again.job, again.attempt), (a, 2));
        let next = q.want_work(3, 0, now(), any).unwrap();
        assert_eq!(next.job, c);
        assert!(q.holds_lease(b, 2, 1));
    }

    #[test]
    fn waiting_slots_get_requeued_jobs() {
        let mut q = Queue::default();
        let a = q.push(spec("a"));
        q.want_work(1, 0, now(), any).unwrap();
        assert_eq!(q.want_work(2, 0, now(), any), None);
        assert_eq!(
            q.want_work(2, 0, now(), any),
            None,
            "asking twice waits once"
        );
        q.drop_connection(1);
        let handed = q.assign_waiting(now(), |_, _| true);
        assert_eq!(
            handed
                .iter()
                .map(|h| (h.conn, h.slot, h.job, h.attempt))
                .collect::<Vec<_>>(),
            vec![(2, 0, a, 2)]
        );
        assert!(q.assign_waiting(now(), |_, _| true).is_empty());
    }

    #[test]
    fn an_assignment_says_when_its_slot_first_asked() {
        let start = now();
        let at = |secs| start + std::time::Duration::from_secs(secs);
        let mut q = Queue::default();
        let a = q.push(spec("a"));
        let b = q.push(spec("b"));
        assert_eq!(
            q.want_work(1, 0, at(0), any).unwrap().asked,
            at(0),
            "at once"
        );
        q.want_work(2, 0, at(1), any).unwrap();
        assert_eq!(q.want_work(3, 0, at(2), any), None);
        assert_eq!(q.want_work(3, 0, at(7), any), None, "asking again");
        assert!(q.release(a, 1, 1));
        let handed = q.assign_waiting(at(32), |_, _| true);
        assert_eq!((handed[0].job, handed[0].asked), (a, at(2)));
        assert!(q.holds_lease(b, 2, 1));
    }

    #[test]
    fn a_released_job_goes_first_to_the_next_slot_with_a_new_attempt() {
        let mut q = Queue::default();
        let a = q.push(spec("a"));
        let b = q.push(spec("b"));
        let lease = q.want_work(1, 0, now(), any).unwrap();
        assert!(!q.release(a, 2, lease.attempt), "not the holder");
        assert!(q.release(a, 1, lease.attempt));
        assert!(!q.release(a, 1, lease.attempt), "once");
        let again = q.want_work(2, 0, now(), any).unwrap();
        assert_eq!((again.job, again.attempt), (a, 2), "before b");
        assert!(
            !q.begin_finish(a, 1, 1),
            "the released attempt cannot finish it"
        );
        assert_eq!(
            q.want_work(1, 0, now(), any).unwrap().job,
            b,
            "the slot is free"
        );
    }

    #[test]
    fn a_slot_holds_one_job_however_often_it_asks() {
        let mut q = Queue::default();
        for name in ["a", "b", "c"] {
            q.push(spec(name));
        }
        let first = q.want_work(1, 0, now(), any).unwrap();
        for _ in 0..600 {
            assert_eq!(q.want_work(1, 0, now(), any), None);
        }
        assert_eq!(q.counts().running, 1, "600 asks, one lease");
        assert!(q.begin_finish(first.job, 1, first.attempt));
        assert!(
            q.want_work(1, 0, now(), any).is_some(),
            "free again once done"
        );
    }

    #[test]
    fn a_slot_only_gets_jobs_its_agent_can_run() {
        let mut q = Queue::default();
        let mut test_job = spec("t");
        test_job.tool = Tool::Test;
        let t = q.push(test_job);
        let c = q.push(spec("c"));
        let only_check = |s: &JobSpec| s.tool == Tool::Check;
        assert_eq!(q.want_work(1, 0, now(), only_check).unwrap().job, c);
        assert_eq!(q.want_work(1, 1, now(), only_check), None);
        assert_eq!(q.want_work(2, 0, now(), any).unwrap().job, t);
    }
}
