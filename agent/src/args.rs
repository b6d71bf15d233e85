//! The flags that shape an agent's slots, shared by `crater-agent` and `crater-at-home run` (which
//! embeds an agent), so both take the same flags with the same defaults and help; and the flags
//! of a client of a remote coordinator, shared by `crater-agent` and `crater-at-home status`.

use crate::session::AgentConfig;
use crate::toolchain::ToolchainSource;
use crater_proto::auth::{Token, TokenFileError, client_token};
use std::path::PathBuf;

/// Whether crate code may use the network (`--network`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Network {
    /// Cargo downloads dependencies inside the build container, as the seed does; build scripts
    /// and tests reach the internet too (never the host itself or cloud metadata).
    On,
    /// A fetch container downloads the dependencies (running no crate code); the build and the
    /// tests run with no network at all.
    Off,
}

/// `--cpus`, parsed and checked against the CPUs this process may use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpuList(pub Vec<u32>);

#[derive(clap::Args, Debug, Clone)]
pub struct SlotArgs {
    /// How many containers (crates at a time); container i is pinned to CPU i. Default: one per
    /// CPU this process may use.
    #[arg(long)]
    pub slots: Option<u32>,
    /// The CPUs to pin the slots to, in the kernel's list format (`2-3`, `0,4-7`): slot i gets
    /// the i-th (round robin). Several agents on one machine each take their own. Default: the
    /// CPUs this process may use.
    #[arg(long, value_name = "LIST", value_parser = |l: &str| crate::slot::parse_cpus(l).map(CpuList))]
    pub cpus: Option<CpuList>,
    /// Memory limit of each container, in GiB (no swap).
    #[arg(long, default_value_t = 8)]
    pub memory_gb: u64,
    /// Process limit of each container.
    #[arg(long, default_value_t = 4096)]
    pub pids_limit: i64,
    /// Disk of each container for /build (and cargo's home, offline), in GiB: a filesystem of
    /// its own (loop-mounted, so the agent needs root). A crate that fills it fails with a
    /// `no-space` cause and the host keeps its free space. 0: no bound (a crate can fill the
    /// host's disk).
    #[arg(long, default_value_t = 20)]
    pub disk_gb: u64,
    /// Where the slots' filesystems live (sparse files: they take only what crates write).
    #[arg(long, default_value = crate::disk::DEFAULT_ROOT, hide_short_help = true)]
    pub disk_dir: PathBuf,
    /// A worker image to use instead of the registry-free one built from docker/.
    #[arg(long)]
    pub image: Option<String>,
    /// The containers' Rust toolchain: `host` (the host's nightly, else its default toolchain,
    /// mounted read-only), `image` (the image's own), or the path of a sysroot to mount.
    #[arg(long, default_value = "host")]
    pub toolchain: ToolchainSource,
    /// `off`: a short-lived container fetches each crate's dependencies (no crate code runs
    /// there) and the build and tests run with no network at all; a crate whose dependencies
    /// cannot be resolved is `prepare-fail`. `on`: cargo fetches inside the build container, as
    /// the seed does, and build scripts and tests may use the internet (never this host or cloud
    /// metadata). BENCHMARKS.md has what `off` costs.
    #[arg(long, value_enum, default_value = "off")]
    pub network: Network,
}

impl SlotArgs {
    /// Sets the slot settings of `config` from these flags.
    pub fn apply(&self, config: &mut AgentConfig) {
        if let Some(CpuList(cpus)) = &self.cpus {
            config.slots = cpus.len() as u32;
            config.cpus = Some(cpus.clone());
        }
        if let Some(slots) = self.slots {
            config.slots = slots.max(1);
        }
        config.memory_bytes = self.memory_gb << 30;
        config.pids_limit = self.pids_limit;
        config.disk_bytes = self.disk_gb << 30;
        config.disk_root = self.disk_dir.clone();
        config.image = self.image.clone();
        config.toolchain = self.toolchain.clone();
        config.network = self.network == Network::On;
    }
}

/// How a client reaches a coordinator on another machine, shared by `crater-agent` and
/// `crater-at-home status`: the fleet's CA and the client's token (see `crater-at-home tls init`).
#[derive(clap::Args, Debug, Clone, Default)]
pub struct ClientAuthArgs {
    /// The fleet's CA certificate (`ca.pem` from `crater-at-home tls init`), trusted besides the
    /// system's roots for an https:// coordinator.
    #[arg(long, value_name = "PATH")]
    pub ca_cert: Option<PathBuf>,
    /// A file with this client's token: an agent token for `crater-agent`, a status token for
    /// `status` (the first in the file; `#` comments). Without it, the token in the CRATER_TOKEN
    /// environment variable. Needed for a coordinator that is not on this machine.
    #[arg(long, value_name = "PATH")]
    pub token_file: Option<PathBuf>,
}

impl ClientAuthArgs {
    /// The token to send: from --token-file, else $CRATER_TOKEN, else none.
    pub fn token(&self) -> Result<Option<Token>, TokenFileError> {
        client_token(self.token_file.as_deref())
    }
}
