//! Keeping results: from a finished job's log to its verdict, committed on local disk, then
//! stored (local directory or S3) and rendered.
//!
//! The path of one result: [`spool`] (its log on disk as it arrives) → [`publish`] (checked,
//! [`diagnose`]d, judged by [`verdict`], a failure's [`failure_causes`] found, written as a
//! [`record`] and committed to the [`outbox`]) → [`uploads`] (the one task that moves outbox
//! entries to the [`store`], which [`render`]s each log as HTML). Nothing here knows about
//! agents or the queue.

pub mod diagnose;
pub mod failure_causes;
pub mod outbox;
pub mod publish;
pub mod record;
pub mod render;
pub mod spool;
pub mod store;
pub mod uploads;
pub mod verdict;
