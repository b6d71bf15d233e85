//! `crater-agent`: runs crates for a crater-at-home coordinator on this machine's Docker engine.

use anyhow::Result;
use clap::Parser;
use crater_agent::session::Network;
use crater_agent::toolchain::ToolchainSource;
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
    /// How many containers (jobs at a time); container i is pinned to CPU i. Default: one per CPU.
    #[arg(long)]
    slots: Option<u32>,
    /// Memory limit of each container, in GiB (no swap).
    #[arg(long, default_value_t = 8)]
    memory_gb: u64,
    /// Process limit of each container.
    #[arg(long, default_value_t = 4096)]
    pids_limit: i64,
    /// This agent's name in the coordinator's status. Default: the hostname.
    #[arg(long)]
    name: Option<String>,
    /// A worker image to use instead of the registry-free one built from docker/.
    #[arg(long)]
    image: Option<String>,
    /// The containers' Rust toolchain: `host` (the host's nightly, else its default toolchain,
    /// mounted read-only), `image` (the image's own), or the path of a sysroot to mount.
    #[arg(long, default_value = "host")]
    toolchain: ToolchainSource,
    /// `off`: dependencies are fetched by a short-lived container first and the build itself
    /// runs with no network at all; a crate whose dependencies cannot be resolved is then
    /// `prepare-fail`. `on`: cargo fetches inside the build container, as the seed does.
    #[arg(long, value_enum, default_value = "on")]
    network: Network,
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
    if let Some(slots) = args.slots {
        config.slots = slots.max(1);
    }
    config.memory_bytes = args.memory_gb << 30;
    config.pids_limit = args.pids_limit;
    config.image = args.image;
    config.toolchain = args.toolchain;
    config.network = args.network == Network::On;
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
