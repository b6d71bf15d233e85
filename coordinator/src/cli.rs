//! The `crater-at-home` command line.

use crate::results::store::S3Options;
use clap::{Args, Parser, Subcommand};
use crater_proto::tool::Tool;
use std::path::PathBuf;
use std::time::Duration;

/// How a command ended, as its exit status.
pub mod exit {
    pub const OK: u8 = 0;
    pub const HARNESS_FAILED: u8 = 1;
    pub const INPUT_REFUSED: u8 = 2;
    /// `diff`: some crate regressed.
    pub const REGRESSED: u8 = 3;
    pub const INTERRUPTED: u8 = 130;
}

/// Builds, checks or tests crates from crates.io (or local directories) in locked-down Docker
/// containers, one pinned container per CPU, and keeps every log: raw, rendered HTML, and a JSON
/// verdict per crate.
#[derive(Parser, Debug)]
#[command(name = "crater-at-home", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run crates on this machine: a coordinator and a local agent in one process.
    ///
    /// Exits 0 when every selected crate got a result (whatever the crates' verdicts), 1 when the
    /// harness itself failed, 2 when some input entries were refused (the rest still ran), 130
    /// when interrupted (run the same command again to finish the rest).
    Run(RunArgs),
    /// Serve a coordinator for agents on other machines or processes (`crater-agent`).
    Serve(ServeArgs),
    /// Print the crates a run with these options would run, in order, one `name version` a line.
    List(SelectArgs),
    /// Show what a running coordinator is doing.
    Status(StatusArgs),
    /// (Re)render the report site from a store: per tool, index.html (search), ub.html,
    /// failures.html, results.jsonl, summary.json and the log archives.
    ///
    /// `run` and `serve` keep the pages current while they work; this rebuilds them from the
    /// stored verdicts alone, so results of older runs render too.
    Report(ReportArgs),
    /// Compare the verdicts of two runs: crates that regressed, were fixed, or changed cause.
    ///
    /// Exits 0 when nothing regressed, 3 when some crate did.
    Diff(DiffArgs),
    /// Manage the worker image.
    #[command(subcommand)]
    Image(ImageCommand),
    /// Certificates and tokens for a fleet.
    #[command(subcommand)]
    Tls(TlsCommand),
}

#[derive(Args, Debug, Clone)]
pub struct SelectArgs {
    /// What to run: check (cargo check), build (cargo test --no-run, optimised), test (cargo test).
    #[arg(long, default_value = "check")]
    pub tool: Tool,
    /// A crate from crates.io: `name` (newest non-yanked version) or `name@version`. Repeatable.
    #[arg(long = "crate", value_name = "NAME[@VERSION]")]
    pub crates: Vec<String>,
    /// A file with one `name`, `name@version` or `name/version` a line (`#` comments). Repeatable.
    #[arg(long, value_name = "FILE")]
    pub crate_list: Vec<PathBuf>,
    /// A crate in a local directory (its Cargo.toml names it). Repeatable.
    #[arg(long, value_name = "DIR")]
    pub local_crate: Vec<PathBuf>,
    /// Every crate on crates.io (from the database dump), most downloaded first.
    #[arg(long, conflicts_with = "top")]
    pub all: bool,
    /// The N most downloaded crates on crates.io (recent downloads, from the database dump).
    #[arg(long, value_name = "N")]
    pub top: Option<usize>,
    /// The crates.io database dump for --all and --top: a path or a URL. Its selection is cached
    /// as crates.json and downloads.json in --out for a day.
    #[arg(long, value_name = "PATH|URL", default_value = crate::select::crate_list::DEFAULT_DUMP_URL)]
    pub db_dump: String,
    /// Read the dump again even when the cached crate list is less than a day old.
    #[arg(long)]
    pub refresh_crates: bool,
    /// Where results go: {tool}/raw, {tool}/logs and {tool}/results under it. With --bucket it
    /// keeps only the spool (results waiting to be uploaded) and the crate-list cache.
    #[arg(long, default_value = "crater-results")]
    pub out: PathBuf,
    #[command(flatten)]
    pub store: StoreArgs,
    /// Run crates again even when they have a recent result in the output directory.
    #[arg(long)]
    pub rerun: bool,
    /// A result younger than this many days counts as finished and is not run again.
    #[arg(long, value_name = "DAYS", default_value_t = 30)]
    pub max_age: u64,
    /// Run only the crates whose last verdict in the output directory is a failure (build-fail,
    /// test-fail, timeout, oom, error, ub).
    #[arg(long, conflicts_with = "rerun")]
    pub retry_failed: bool,
    /// Never run the crates named in FILE (one a line, `#` comments); a built-in list of crates
    /// known to print gigabytes and not build always applies. Repeatable.
    #[arg(long, value_name = "FILE")]
    pub ignore_file: Vec<PathBuf>,
    /// Run the least downloaded first (the seed's --rev).
    #[arg(long)]
    pub reverse: bool,
    /// Run in a random order, the same for the same SEED (for sampling).
    #[arg(long, value_name = "SEED", conflicts_with = "reverse")]
    pub shuffle: Option<u64>,
    /// Wall-clock limit for each command a job runs (e.g. 3600, 90s, 20m, 1h).
    #[arg(long, default_value = "1h", value_parser = parse_duration)]
    pub timeout: Duration,
    /// A job is stopped (verdict `timeout`) when it prints nothing for this long. Miri is often
    /// silent for a long time, hence the generous default.
    #[arg(long, default_value = "30m", value_parser = parse_duration)]
    pub idle_timeout: Duration,
    /// Past this much output a log keeps only its last 64 KiB, behind a marker (e.g. 1GiB, 500MiB).
    #[arg(long, default_value = "1GiB", value_parser = parse_size)]
    pub max_log_bytes: u64,
    /// The registry index to resolve crates against.
    #[arg(long, default_value = crate::select::index::DEFAULT_INDEX_URL, hide = true)]
    pub index_url: String,
}

/// Where results are: the bucket, when not a local directory.
#[derive(Args, Debug, Clone)]
pub struct BucketArgs {
    /// Store results in this S3 bucket, under the same keys as --out, instead of a local
    /// directory. Region and credentials come from the standard AWS chain (AWS_REGION,
    /// AWS_ACCESS_KEY_ID..., AWS_PROFILE, the instance role). The bucket must exist and be
    /// writable; the run refuses to start otherwise.
    #[arg(long, value_name = "NAME")]
    pub bucket: Option<String>,
    /// The URL of an S3-compatible server (MinIO, Ceph, moto, ...) to use instead of AWS.
    #[arg(long, value_name = "URL", requires = "bucket")]
    pub s3_endpoint: Option<String>,
    /// Address objects as URL/bucket/key instead of bucket.host/key (most S3-compatible servers
    /// need this).
    #[arg(long, requires = "bucket")]
    pub s3_path_style: bool,
    /// How long to wait for S3 to connect or answer; a request that takes longer is retried.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub s3_timeout: Duration,
}

impl BucketArgs {
    /// The bucket to use, if one was given.
    pub fn s3_options(&self) -> Option<S3Options> {
        self.bucket.as_ref().map(|bucket| S3Options {
            bucket: bucket.clone(),
            endpoint: self.s3_endpoint.clone(),
            path_style: self.s3_path_style,
            timeout: self.s3_timeout,
        })
    }
}

#[derive(Args, Debug, Clone)]
pub struct StoreArgs {
    #[command(flatten)]
    pub bucket: BucketArgs,
    /// Disk that finished results waiting for the store (S3 slow or down) may use in the spool;
    /// past it no new work is handed out until they are stored.
    #[arg(long, value_name = "GB", default_value_t = 20.0, value_parser = parse_gb)]
    pub spool_max_gb: f64,
    /// Results stored at once (each its raw log, page and JSON, the JSON last). Many requests
    /// in flight are what keeps a fleet from waiting on S3's per-request latency.
    #[arg(long, value_name = "N", default_value_t = crate::results::uploads::DEFAULT_CONCURRENCY,
          value_parser = parse_concurrency)]
    pub upload_concurrency: usize,
}

/// 1 to 1024 uploads at once.
fn parse_concurrency(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n @ 1..=1024) => Ok(n),
        _ => Err(format!("`{s}`: give a number of uploads from 1 to 1024")),
    }
}

impl StoreArgs {
    pub fn spool_max_bytes(&self) -> u64 {
        (self.spool_max_gb * (1u64 << 30) as f64) as u64
    }
}

#[derive(Args, Debug, Clone)]
pub struct RunArgs {
    #[command(flatten)]
    pub select: SelectArgs,
    #[command(flatten)]
    pub agent: crater_agent::args::SlotArgs,
    /// When every crate has run but storing keeps failing with an error that needs a person
    /// (access denied, a request the server refuses), stop waiting after this long and exit
    /// non-zero; the results stay in the spool and the same command stores them later.
    /// Outages (timeouts, 5xx, throttling) are waited out. `serve` always waits.
    #[arg(long, default_value = "10m", value_parser = parse_duration)]
    pub store_patience: Duration,
    #[command(flatten)]
    pub pages: PagesArgs,
}

#[derive(Args, Debug, Clone)]
pub struct ServeArgs {
    #[command(flatten)]
    pub select: SelectArgs,
    /// The address agents and `status` connect to. Any address but loopback needs --tls-cert,
    /// --tls-key and --agent-token-file.
    #[arg(long, default_value = "127.0.0.1:7878")]
    pub listen: std::net::SocketAddr,
    #[command(flatten)]
    pub fleet: crate::serve::auth::FleetArgs,
    /// Serve Prometheus metrics at http://ADDR/metrics (https with --tls-cert). A scrape needs
    /// `authorization: Bearer <status token>` when --status-token-file is given; any address
    /// but loopback needs --tls-cert, --tls-key and --status-token-file.
    #[arg(long, value_name = "ADDR")]
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// Exit once every crate has a result (after draining the agents), instead of serving on.
    #[arg(long)]
    pub exit_when_done: bool,
    /// An agent not heard from for this long (agents send a heartbeat every 10 s) loses its
    /// running jobs: they go to other agents with the attempt raised, and a late result from
    /// the old lease is discarded.
    #[arg(long, default_value = "45s", value_parser = parse_duration)]
    pub lease_timeout: Duration,
    #[command(flatten)]
    pub pages: PagesArgs,
}

/// How `run` and `serve` keep the report pages current.
#[derive(Args, Debug, Clone)]
pub struct PagesArgs {
    /// Regenerate the report pages ({tool}/index.html, ub.html, failures.html, ...) from what is
    /// stored at most this often while crates run (and once at the end).
    #[arg(long, default_value = "2m", value_parser = parse_duration)]
    pub report_every: Duration,
    /// Do not write report pages while running (`crater-at-home report` makes them later).
    #[arg(long)]
    pub no_report: bool,
}

#[derive(Args, Debug, Clone)]
pub struct ReportArgs {
    /// The local store to read results from and write the pages into (ignored with --bucket).
    #[arg(long, default_value = "crater-results")]
    pub out: PathBuf,
    #[command(flatten)]
    pub bucket: BucketArgs,
    /// Only these tools (default: every tool with results). Repeatable.
    #[arg(long)]
    pub tool: Vec<Tool>,
    /// Read every verdict one by one instead of trusting {tool}/results.jsonl for those
    /// unchanged since it was written.
    #[arg(long)]
    pub full: bool,
    /// Skip the archives of every log ({tool}/raw.tar.zst, {tool}/html.tar.zst), which read
    /// every log in the store.
    #[arg(long)]
    pub no_archives: bool,
}

#[derive(Args, Debug, Clone)]
pub struct DiffArgs {
    /// The two local stores to compare, before then after: `--out A --out B`.
    #[arg(long, num_args = 1, required = true, value_name = "DIR")]
    pub out: Vec<PathBuf>,
    /// The tool whose verdicts are compared.
    #[arg(long, default_value = "check")]
    pub tool: Tool,
    /// Print JSON for scripts instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Also write the comparison as an HTML page to FILE.
    #[arg(long, value_name = "FILE")]
    pub html: Option<PathBuf>,
}

#[derive(Args, Debug, Clone)]
pub struct StatusArgs {
    /// The coordinator's address: https://HOST:PORT, or http:// to this machine.
    #[arg(long, default_value = "http://127.0.0.1:7878")]
    pub coordinator: String,
    #[command(flatten)]
    pub auth: crater_agent::args::ClientAuthArgs,
    /// Print JSON for scripts instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Refresh every two seconds until interrupted.
    #[arg(long, conflicts_with = "json")]
    pub watch: bool,
}

#[derive(Subcommand, Debug)]
pub enum ImageCommand {
    /// Build the registry-free worker image (debootstrap + docker import), if it is missing.
    Build {
        /// Rebuild it even if it exists.
        #[arg(long)]
        force: bool,
    },
    /// Print the worker image's tag.
    Tag,
    /// Print which tools the worker image and the host toolchain can run, and why not.
    Probe,
}

#[derive(Subcommand, Debug)]
pub enum TlsCommand {
    /// Make a CA, a server certificate it signs for every --host (and localhost, 127.0.0.1), an
    /// agent token and a status token. The CA's key is not kept.
    Init(TlsInitArgs),
}

#[derive(Args, Debug, Clone)]
pub struct TlsInitArgs {
    /// The folder to write ca.pem, server.pem, server-key.pem, agent-token and status-token to
    /// (made if missing; the private files get mode 0600).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// A DNS name or IP address agents use to reach the coordinator. Repeatable.
    #[arg(long, value_name = "NAME|IP", required = true)]
    pub host: Vec<String>,
    /// Replace existing files (agents then need the new ca.pem and agent token).
    #[arg(long)]
    pub force: bool,
}

/// Seconds (`3600`) or a human duration (`90s`, `20m`, `1h`).
fn parse_duration(s: &str) -> Result<Duration, String> {
    if let Ok(secs) = s.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    humantime::parse_duration(s).map_err(|e| format!("`{s}`: {e} (try 3600, 90s, 20m or 1h)"))
}

/// A non-negative number of GiB (fractions allowed).
fn parse_gb(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(gb) if gb.is_finite() && gb >= 0.0 => Ok(gb),
        _ => Err(format!("`{s}`: not a size in GB (try 20 or 0.5)")),
    }
}

/// Bytes (`1048576`) or with a binary unit (`64KiB`, `500MiB`, `1GiB`; `K`, `M`, `G` too).
fn parse_size(s: &str) -> Result<u64, String> {
    let digits = s.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    let unit = &s[digits.len()..];
    let shift = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kib" => 10,
        "m" | "mib" => 20,
        "g" | "gib" => 30,
        _ => {
            return Err(format!(
                "`{s}`: unknown unit `{unit}` (use KiB, MiB or GiB)"
            ));
        }
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("`{s}`: not a size (try 1GiB or 1048576)"))?;
    n.checked_shl(shift)
        .filter(|v| v >> shift == n)
        .ok_or_else(|| format!("`{s}`: too large"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("3600"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert!(parse_duration("soon").is_err());
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("1048576"), Ok(1 << 20));
        assert_eq!(parse_size("64KiB"), Ok(64 << 10));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_size("2g"), Ok(2 << 30));
        assert!(parse_size("1TB").is_err());
        assert!(parse_size("lots").is_err());
        assert!(parse_size("99999999999999G").is_err());
    }
}
