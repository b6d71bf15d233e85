//! The crater-at-home coordinator: chooses the crates, hands them out to agents one at a time
//! over gRPC, and stores every result.
//!
//! # Layout
//! - [`cli`]: the command line.
//! - [`run`]: `run` (coordinator + local agent) and `serve` (coordinator alone), clean stop.
//! - [`select`], [`index`], [`local_crate`]: from user input to jobs (crates.io versions and
//!   checksums; local directories packed like .crate files).
//! - [`dump`]: crates.io's database dump read: each crate's version to run, recent downloads.
//! - [`crate_list`]: every crate, most downloaded first, from the dump; cached in the store.
//! - [`rerun`]: which selected crates are left out (finished, not failed, ignored).
//! - [`queue`]: the job queue and leases (pure bookkeeping, unit-tested).
//! - [`server`]: the gRPC service: agent streams, leases, publishing results.
//! - [`spool`]: a running job's log on disk.
//! - [`verdict`]: the facts an agent reports, judged into a verdict.
//! - [`outbox`]: finished results on disk until the store has them (outages, restarts,
//!   backpressure).
//! - [`store`]: the result store (local directory or S3 bucket; the seed's layout) and the JSON
//!   record.
//! - [`render`]: a raw terminal log as an HTML page.
//! - [`diagnose`]: UB reports (Miri, ASan, ...) found in a log, and the crate they come from.
//! - [`progress`], [`status`]: what people see: progress, summary, `status`.

pub mod cli;
pub mod crate_list;
pub mod diagnose;
pub mod dump;
pub mod index;
pub mod local_crate;
pub mod outbox;
pub mod progress;
pub mod queue;
pub mod render;
pub mod rerun;
pub mod run;
pub mod select;
pub mod server;
pub mod spool;
pub mod status;
pub mod store;
pub mod verdict;
