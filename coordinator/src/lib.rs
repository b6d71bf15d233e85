//! The crater-at-home coordinator: chooses the crates, hands them out to agents one at a time
//! over gRPC, and stores every result.
//!
//! # Layout
//! Three parts, each a folder, and a top that only wires them:
//! - [`select`]: choosing crates — from user input and crates.io's database dump to jobs:
//!   [`select::index`] (the sparse index: versions, checksums), [`select::dump`] and
//!   [`select::crate_list`] (every crate, most downloaded first, cached in the store),
//!   [`select::local_crate`] (directories packed like .crate files), [`select::rerun`] (which
//!   selected crates are left out: finished, not failed, ignored).
//! - [`serve`]: serving agents — [`serve::grpc`] (the tonic service and agent streams),
//!   [`serve::coordinator`] (the [`serve::Coordinator`]: state joined to spooling and
//!   publishing), [`serve::state`] (agents, verdict counts, draining, backpressure and the
//!   decisions, without I/O), [`serve::queue`] (jobs and leases), [`serve::metrics`] and
//!   [`serve::metrics_server`] (Prometheus metrics on `--metrics-listen`).
//! - [`results`]: keeping results — [`results::spool`] (a running job's log on disk),
//!   [`results::publish`] (spool → diagnose → verdict → outbox), [`results::diagnose`] (UB
//!   reports in a log), [`results::failure_causes`] (why a failure that is not UB failed: rustc,
//!   linker, system libraries, network, tests, limits), [`results::verdict`],
//!   [`results::record`] (the JSON verdict),
//!   [`results::outbox`] (finished results on disk until stored), [`results::uploads`] (the
//!   uploader and the wait for it at shutdown), [`results::store`] (local directory or S3, the
//!   seed's layout), [`results::render`] (a terminal log as HTML).
//! - [`report`]: the report site — each tool's landing page with search, UB page, failures by
//!   cause, `results.jsonl`, `summary.json` and log archives, rendered from a store by `report`
//!   and kept current during `run` and `serve`; and `diff` of two runs.
//! - The top: [`cli`] (the command line), [`run`] (`run`, `serve` and `list`: start-up, the
//!   plan, clean stop), [`status`] and [`progress`] (what people see), [`tls`] (`tls init`:
//!   a fleet's certificates and tokens).

pub mod cli;
pub mod progress;
pub mod report;
pub mod results;
pub mod run;
pub mod select;
pub mod serve;
pub mod status;
pub mod tls;
