//! `crater-agent`: runs crates for a crater-at-home coordinator on this machine's Docker engine.

use anyhow::Result;
use clap::Parser;
use crater_agent::args::SlotArgs;
use crater_agent::{AgentConfig, run_agent};
use tokio_util::sync::CancellationToken;

/// Runs one pinned Docker container per slot and builds, checks or tests the crates a
/// crater-at-home coordinator hands out, streaming every log back to it.
#[derive(Parser, Debug)]
#[command(version, about, long_about = None)]
struct Args {
    /// The coordinator's address.
    #[arg(
        long,
        env = "CRATER_COORDINATOR",
        default_value = "http://127.0.0.1:7878"
    )]
    coordinator: String,
    #[command(flatten)]
    slot: SlotArgs,
    /// This agent's name in the coordinator's status. Default: the hostname.
    #[arg(long)]
    name: Option<String>,
}

#[tokio::main]
async fn main() -> Result<()> {
    init_tracing();
    let args = Args::parse();
    // Refuse a bad address before Docker, the image and the probe take their time.
    let uri: tonic::transport::Uri = args
        .coordinator
        .parse()
        .map_err(|e| anyhow::anyhow!("--coordinator {}: not an address: {e}", args.coordinator))?;
    if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.host().is_none() {
        anyhow::bail!(
            "--coordinator {}: give an http:// or https:// address, like http://127.0.0.1:7878",
            args.coordinator
        );
    }
    let mut config = AgentConfig::new(args.coordinator);
    args.slot.apply(&mut config);
    if let Some(name) = args.name {
        config.name = name;
    }
    let shutdown = CancellationToken::new();
    tokio::spawn(stop_on_signal(shutdown.clone()));
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

/// Ctrl-C or SIGTERM: stop taking jobs, remove the containers, exit.
async fn stop_on_signal(shutdown: CancellationToken) {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("installing a SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("stopping: removing containers");
    shutdown.cancel();
}
