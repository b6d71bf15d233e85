//! The crater-at-home wire protocol and the small domain types both sides share.
//!
//! # Layout
//! - [`pb`]: the generated gRPC and protobuf code for `proto/crater.proto`.
//! - [`tool`]: the tools a crate can be run through (`check`, `build`, `test`, ...).
//! - [`crate_ref`]: a crate name and optional version as users write them, validated.
//! - [`verdict`]: how a crate's run ended.

pub mod crate_ref;
pub mod tool;
pub mod verdict;

/// Generated from `proto/crater.proto`.
#[allow(clippy::all, missing_docs)]
pub mod pb {
    tonic::include_proto!("crater.v1");
}

/// Bumped on any incompatible change of the wire protocol; agents and coordinators of different
/// protocol versions refuse each other at Hello.
pub const PROTOCOL_VERSION: u32 = 1;

/// The largest gRPC message either side accepts (local crate archives travel inside `Assign`).
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;
