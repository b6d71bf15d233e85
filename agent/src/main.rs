//! `crater-agent`: runs crates for a crater-at-home coordinator on this machine's Docker engine.

use anyhow::Result;
use clap::Parser;
use crater_agent::args::{ClientAuthArgs, SlotArgs};
use crater_agent::{AgentConfig, run_agent};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Runs one pinned Docker container per slot and builds, checks or tests the crates a
/// crater-at-home coordinator hands out, streaming every log back to it.
#[derive(Parser, Debug)]
#[command(version, about, long_about = None)]
struct Args {
    /// The coordinator's address: https://HOST:PORT, or http:// to this machine.
    #[arg(
        long,
        env = "CRATER_COORDINATOR",
        default_value = "http://127.0.0.1:7878"
    )]
    coordinator: String,
    #[command(flatten)]
    auth: ClientAuthArgs,
    #[command(flatten)]
    slot: SlotArgs,
    /// This agent's name in the coordinator's status. Default: the hostname.
    #[arg(long)]
    name: Option<String>,
    /// On SIGTERM or Ctrl-C: running jobs may finish for this long (no new ones are taken);
    /// then what still runs is given back to the coordinator, which hands it to another agent
    /// at once. A second signal gives them back at once. The default fits in EC2's two-minute
    /// spot interruption notice.
    #[arg(long, default_value = "100s", value_parser = humantime::parse_duration)]
    drain_timeout: Duration,
}

#[tokio::main]
async fn main() -> Result<()> {
    init_tracing();
    crater_proto::raise_open_file_limit();
    let args = Args::parse();
    // Refuse a bad address, CA or token (or a missing one) before Docker, the image and the
    // probe take their time.
    let token = args.auth.token()?;
    crater_proto::client::endpoint(
        &args.coordinator,
        args.auth.ca_cert.as_deref(),
        token.as_ref(),
    )?;
    let mut config = AgentConfig::new(args.coordinator);
    config.coordinator_ca = args.auth.ca_cert;
    config.coordinator_token = token;
    args.slot.apply(&mut config);
    if let Some(name) = args.name {
        config.name = name;
    }
    let shutdown = CancellationToken::new();
    tokio::spawn(drain_on_signal(
        config.drain.clone(),
        shutdown.clone(),
        args.drain_timeout,
    ));
    run_agent(config, shutdown).await
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

/// The first Ctrl-C or SIGTERM drains: no new jobs, the running ones may finish within
/// `timeout`. Past it, or at a second signal, the rest are given back and the agent stops; its
/// containers are removed on the way out.
async fn drain_on_signal(drain: CancellationToken, stop: CancellationToken, timeout: Duration) {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("installing a SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!(
        "draining: running jobs may finish within {timeout:?}; a second signal stops now"
    );
    drain.cancel();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => tracing::info!("stopping now: giving running jobs back"),
        _ = term.recv() => tracing::info!("stopping now: giving running jobs back"),
        () = tokio::time::sleep(timeout) => {
            tracing::info!("the drain timeout passed: giving running jobs back");
        }
    }
    stop.cancel();
}
