//! The crater-at-home wire protocol and the small domain types both sides share.
//!
//! # Layout
//! - [`pb`]: the generated gRPC and protobuf code for `proto/crater.proto`.
//! - [`tool`]: the tools a crate can be run through (`check`, `build`, `test`, ...).
//! - [`crate_ref`]: a crate name and optional version as users write them, validated.
//! - [`verdict`]: how a crate's run ended.
//! - [`auth`]: bearer tokens: token files, the client's header, the coordinator's check.
//! - [`client`]: how agents and `status` reach a coordinator (TLS, the loopback rule).
//! - [`text`]: text from the other side made safe to show (no escape sequences, bounded).

pub mod auth;
pub mod client;
pub mod crate_ref;
pub mod text;
pub mod tool;
pub mod verdict;

/// Generated from `proto/crater.proto`.
#[allow(clippy::all, missing_docs)]
pub mod pb {
    tonic::include_proto!("crater.v1");
}

/// Bumped on any incompatible change of the wire protocol; agents and coordinators of different
/// protocol versions refuse each other at Hello.
pub const PROTOCOL_VERSION: u32 = 2;

/// The largest gRPC message either side accepts (local crate archives travel inside `Assign`).
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

/// The largest message a coordinator accepts from an agent: log chunks are 64 KiB, everything
/// else is small, and nothing an agent sends may make the coordinator allocate much.
pub const MAX_AGENT_MESSAGE_BYTES: usize = 4 * 1024 * 1024;

/// Log bytes a job may send beyond its `max_log_bytes`: the kept tail (64 KiB) and the agent's
/// banners. The coordinator stores no more than that.
pub const LOG_SLACK_BYTES: u64 = 1024 * 1024;

/// Raises this process's soft limit of open files to its hard limit. A coordinator serving
/// hundreds of agents holds a connection each, and the inherited soft limit (often 1024) is far
/// below what the system allows. Returns the limit now in force.
pub fn raise_open_file_limit() -> Option<u64> {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut limit = getrlimit(Resource::Nofile);
    if limit.current < limit.maximum {
        limit.current = limit.maximum;
        if setrlimit(Resource::Nofile, limit).is_err() {
            return getrlimit(Resource::Nofile).current;
        }
    }
    limit.current
}
