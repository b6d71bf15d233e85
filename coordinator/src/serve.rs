//! Serving agents: the job queue and its leases, the coordinator's state and decisions, and the
//! gRPC service agents talk to.
//!
//! Layered from the wire down: [`grpc`] reads each agent's stream and turns its messages into
//! calls on the [`Coordinator`] ([`coordinator`]), which joins the I/O-free [`state`] (agents,
//! verdict counts, draining, backpressure, and every rule about them) to the spooled logs and
//! the result path in [`crate::results`]; [`queue`] is the bookkeeping of jobs and leases under
//! the state, [`validate`] what is accepted from an agent at all. [`auth`] sits in front of it
//! all: TLS, and the token each method needs. Beside the gRPC port, `--metrics-listen` serves
//! Prometheus: [`metrics`] (what is measured, read from the state) behind [`metrics_server`]
//! (its own HTTP listener, with the same TLS and the status tokens).

pub mod auth;
pub mod coordinator;
pub mod grpc;
pub mod metrics;
pub mod metrics_server;
pub mod queue;
pub mod state;
pub mod validate;

pub use coordinator::{Coordinator, Event};
