//! The job queue and its leases: which crate runs where, and which result counts.
//!
//! Jobs are handed out one at a time, to one free slot each, and a slot holds at most one job: a
//! slot that asks again while it holds one gets nothing. A job is leased to (connection, slot,
//! attempt); only a `JobDone` that matches the current lease finishes it, so a late answer from
//! an earlier attempt is ignored and a result is published at most once. When a connection is
//! given up (its agent fell silent past the lease timeout) its jobs go back to the *front* of the
//! queue with the attempt raised. An agent that comes back on a new connection takes its leases
//! with it ([`Queue::transfer`]); after a coordinator restart it finds its jobs by tool, crate and
//! version ([`Queue::reclaim`]). This module is pure bookkeeping (no I/O; the time is an
//! argument), so the rules are unit-tested directly.

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
    /// Jobs by what they are, for agents that held them across a coordinator restart.
    by_key: HashMap<JobKey, JobId>,
    /// Jobs that were running when an earlier coordinator stopped, held back until then for
    /// the agents running them to take back (see [`Queue::reserve`]).
    reserved: HashMap<JobId, Instant>,
}

/// What a job is, independent of any coordinator process: its tool, crate and version.
pub type JobKey = (Tool, String, String);

impl Queue {
    pub fn push(&mut self, spec: JobSpec) -> JobId {
        let id = self.jobs.len() as JobId;
        let key = (spec.tool, spec.name.clone(), spec.version.clone());
        self.by_key.entry(key).or_insert(id);
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
            .position(|&id| self.is_available(id, now) && can_run(&self.jobs[id as usize].spec));
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
        self.reserved.remove(&id);
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
            let found = self.pending.iter().position(|&id| {
                self.is_available(id, now) && can_run(conn, &self.jobs[id as usize].spec)
            });
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

    /// Moves the lease of `job`'s `attempt` from connection `from` to `to` (the same agent,
    /// connected again), into `slot`. A `running` job occupies the slot; a finished one (its
    /// JobDone still to come) does not. Returns the log bytes received so far, or `None` when
    /// `from` does not hold that lease or the slot already holds another running job.
    pub fn transfer(
        &mut self,
        job: JobId,
        attempt: u32,
        from: ConnId,
        to: ConnId,
        slot: u32,
        running: bool,
    ) -> Option<u64> {
        let old_slot = match self.job(job).map(|j| &j.state) {
            Some(JobState::Leased(l)) if l.conn == from && l.attempt == attempt => l.slot,
            _ => return None,
        };
        if running && self.busy.contains_key(&(to, slot)) {
            return None;
        }
        self.free_slot(from, old_slot, job);
        if running {
            self.busy.insert((to, slot), job);
        }
        let JobState::Leased(lease) = &mut self.jobs[job as usize].state else {
            unreachable!("matched above")
        };
        lease.conn = to;
        lease.slot = slot;
        Some(lease.log_bytes)
    }

    /// Leases the queued job `key` to `conn`'s `slot` at `now`, for an agent that has been running
    /// it since before this coordinator started. `None` when there is no such job, it is not
    /// queued (finished, or another agent has it), or a `running` job finds its slot taken.
    pub fn reclaim(
        &mut self,
        key: &JobKey,
        conn: ConnId,
        slot: u32,
        running: bool,
        now: Instant,
    ) -> Option<Assignment> {
        let &id = self.by_key.get(key)?;
        if !matches!(self.jobs[id as usize].state, JobState::Queued)
            || (running && self.busy.contains_key(&(conn, slot)))
        {
            return None;
        }
        let pos = self.pending.iter().position(|&p| p == id)?;
        self.pending.remove(pos);
        let assignment = self.lease(id, conn, slot, now, now);
        if !running {
            self.free_slot(conn, slot, id);
        }
        Some(assignment)
    }

    /// Holds the queued job `key` back from free slots until `until`: it was running when an
    /// earlier coordinator stopped, and its agent, reconnecting, takes it back
    /// ([`Queue::reclaim`]); if it is not back by then, the job goes to anyone. False when there
    /// is no such queued job.
    pub fn reserve(&mut self, key: &JobKey, until: Instant) -> bool {
        match self.by_key.get(key) {
            Some(&id) if matches!(self.jobs[id as usize].state, JobState::Queued) => {
                self.reserved.insert(id, until);
                true
            }
            _ => false,
        }
    }

    /// Ends the reservations that ran out by `now`; true if any did (their jobs are free now).
    pub fn lapse_reservations(&mut self, now: Instant) -> bool {
        let before = self.reserved.len();
        self.reserved.retain(|_, until| now < *until);
        self.reserved.len() < before
    }

    fn is_available(&self, id: JobId, now: Instant) -> bool {
        self.reserved.get(&id).is_none_or(|&until| now >= until)
    }

    /// Whether `job`'s result is stored or being stored.
    pub fn is_finished(&self, job: JobId) -> bool {
        matches!(
            self.job(job).map(|j| &j.state),
            Some(JobState::Finishing | JobState::Done(_))
        )
    }

    /// The job a key names, if this queue has it.
    pub fn find(&self, key: &JobKey) -> Option<JobId> {
        self.by_key.get(key).copied()
    }

    /// Frees `conn`'s `slot` if `job` is what occupies it.
    fn free_slot(&mut self, conn: ConnId, slot: u32, job: JobId) {
        if self.busy.get(&(conn, slot)) == Some(&job) {
            self.busy.remove(&(conn, slot));
        }
    }

    /// `conn`'s slots wait for work no longer (its stream ended); its leases stay.
    pub fn forget_waiting(&mut self, conn: ConnId) {
        self.waiting.retain(|&(c, _, _)| c != conn);
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
        self.free_slot(conn, slot, job);
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
        self.free_slot(conn, slot, job);
        self.jobs[job as usize].state = JobState::Queued;
        self.pending.push_front(job);
        true
    }

    /// A connection is given up: its leased jobs go back to the front of the queue (in their
    /// order), and its waiting slots are forgotten. Returns the requeued jobs with the attempt
    /// each had.
    pub fn drop_connection(&mut self, conn: ConnId) -> Vec<(JobId, u32)> {
        self.waiting.retain(|&(c, _, _)| c != conn);
        self.busy.retain(|&(c, _), _| c != conn);
        let mut requeued: Vec<(JobId, u32)> = self
            .running()
            .filter(|(_, _, lease)| lease.conn == conn)
            .map(|(id, _, lease)| (id, lease.attempt))
            .collect();
        for &(id, _) in requeued.iter().rev() {
            self.jobs[id as usize].state = JobState::Queued;
            self.pending.push_front(id);
        }
        requeued.sort();
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
mod tests;
