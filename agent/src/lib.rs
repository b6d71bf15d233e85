//! The crater-at-home agent: connects to a coordinator, runs one long-lived Docker container per
//! slot, feeds each container one job at a time and streams its log back.
//!
//! It is a library as well as the `crater-agent` binary so that `crater-at-home run` can embed it:
//! the embedded agent still talks to its coordinator over real gRPC, the same path a remote one
//! takes.
//!
//! # Layout
//! - [`docker`]: connecting to the engine (API version negotiated), labels, leftover clean-up.
//! - [`image`]: the worker image: its files are embedded, it is built when missing.
//! - [`toolchain`]: the host Rust toolchain that is mounted read-only into the containers.
//! - [`probe`]: which tools this agent's image and toolchain can run.
//! - [`disk`]: a loop-mounted ext4 filesystem per slot for /build and cargo home (`--disk-gb`).
//! - [`args`]: the slot flags `crater-agent` and `crater-at-home run` share.
//! - [`netguard`]: the agent's own Docker network, walled off from this host and cloud metadata.
//! - [`slot`]: one pinned, locked-down container and the job protocol spoken over its stdin/stdout.
//! - [`end_marker`]: finding a job's unforgeable end line in the container's output.
//! - [`fetch`]: downloading a crate from crates.io and checking it against the index checksum.
//! - [`held`]: the jobs the agent holds, their logs on disk until the coordinator acknowledges them.
//! - [`job_log`]: a job's log written to its held file, bounded against output bombs.
//! - [`link`]: the `Work` stream to the coordinator, connected again for ever when lost.
//! - [`session`]: the agent's run: its slots, one loop per slot, and the link.

pub mod args;
pub mod disk;
pub mod docker;
pub mod end_marker;
pub mod fetch;
pub mod held;
pub mod image;
pub mod job_log;
pub mod link;
pub mod netguard;
pub mod probe;
pub mod session;
pub mod slot;
pub mod toolchain;

pub use session::{AgentConfig, run_agent};
