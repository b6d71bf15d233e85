//! Garage, a second and stricter S3-compatible server for the S3 tests: it checks signatures,
//! payload hashes and checksums as AWS does, and has real keys and per-bucket permissions.
//!
//! Built from crates.io once per target directory (`cargo install garage --locked`, about
//! 8 minutes on 2 cores; then cached beside the moto venv), and started on loopback ports of its
//! own with a generated config, a one-node layout and an imported key. Buckets are made with
//! Garage's own CLI: one made through the S3 API would be an alias of the key alone, which
//! permissions cannot name.

use super::Running;
use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

const VERSION: &str = "2.5.0";
/// Garage signs with its `s3_region`: the one our clients use.
const REGION: &str = "us-east-1";
/// Garage key ids are "GK" and 24 hex digits, secrets 64 hex digits.
pub const KEY_ID: &str = "GK0123456789abcdef01234567";
pub const SECRET: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
const READ_ONLY_KEY_ID: &str = "GKfedcba9876543210fedcba98";
const READ_ONLY_SECRET: &str = "fedcba9876543210fedcba9876543210fedcba9876543210fedcba9876543210";

/// A running Garage, killed when dropped (with its `Running`).
pub struct Garage {
    pub process: Running,
    pub s3_port: u16,
    config: PathBuf,
    pub log: PathBuf,
}

impl Garage {
    /// Starts a node in `dir`, lays it out, imports the test keys and waits until its S3 API
    /// answers.
    pub fn start(dir: &Path) -> Garage {
        let binary = binary();
        let (rpc, s3, admin) = (super::free_port(), super::free_port(), super::free_port());
        let config = dir.join("garage.toml");
        let secret: [u8; 32] = rand::random();
        std::fs::write(
            &config,
            format!(
                "metadata_dir = \"{meta}\"\ndata_dir = \"{data}\"\ndb_engine = \"lmdb\"\n\
                 replication_factor = 1\nrpc_bind_addr = \"127.0.0.1:{rpc}\"\n\
                 rpc_public_addr = \"127.0.0.1:{rpc}\"\nrpc_secret = \"{secret}\"\n\n\
                 [s3_api]\ns3_region = \"{REGION}\"\napi_bind_addr = \"127.0.0.1:{s3}\"\n\n\
                 [admin]\napi_bind_addr = \"127.0.0.1:{admin}\"\n",
                meta = dir.join("meta").display(),
                data = dir.join("data").display(),
                secret = hex::encode(secret),
            ),
        )
        .unwrap();
        let log = dir.join("garage.log");
        let log_file = std::fs::File::create(&log).unwrap();
        let child = Command::new(binary)
            .arg("-c")
            .arg(&config)
            .arg("server")
            .env("RUST_LOG", "garage=info")
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().unwrap())
            .stderr(log_file)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", binary.display()));
        let garage = Garage {
            process: Running(Some(child)),
            s3_port: s3,
            config,
            log,
        };
        let start = Instant::now();
        // `status` needs the server (over RPC); `node id` alone reads its key from disk.
        let node = loop {
            if garage.try_cli(&["status"]).is_some()
                && let Some(out) = garage.try_cli(&["node", "id", "-q"])
            {
                break out.trim().split('@').next().unwrap().to_owned();
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "garage did not start; its log:\n{}",
                std::fs::read_to_string(&garage.log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(200));
        };
        garage.cli(&["layout", "assign", "-z", "dc1", "-c", "1G", &node]);
        garage.cli(&["layout", "apply", "--version", "1"]);
        garage.cli(&[
            "key",
            "import",
            "--yes",
            "-n",
            "crater-test",
            KEY_ID,
            SECRET,
        ]);
        garage.cli(&[
            "key",
            "import",
            "--yes",
            "-n",
            "read-only",
            READ_ONLY_KEY_ID,
            READ_ONLY_SECRET,
        ]);
        while !super::s3::http_answers(s3, Duration::from_secs(2)) {
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "garage's S3 API does not answer; its log:\n{}",
                std::fs::read_to_string(&garage.log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        garage
    }

    /// Makes `bucket`, which the test key may read, write and own.
    pub fn create_bucket(&self, bucket: &str) {
        self.cli(&["bucket", "create", bucket]);
        self.cli(&[
            "bucket", "allow", "--read", "--write", "--owner", bucket, "--key", KEY_ID,
        ]);
    }

    /// Lets the read-only key read `bucket` and nothing else: its (key id, secret).
    pub fn read_only_key(&self, bucket: &str) -> (&'static str, &'static str) {
        self.cli(&[
            "bucket",
            "allow",
            "--read",
            bucket,
            "--key",
            READ_ONLY_KEY_ID,
        ]);
        (READ_ONLY_KEY_ID, READ_ONLY_SECRET)
    }

    /// Takes from the test key the right to write `bucket` (`allow`: gives it back).
    pub fn set_write(&self, bucket: &str, allow: bool) {
        let verb = if allow { "allow" } else { "deny" };
        self.cli(&["bucket", verb, "--write", bucket, "--key", KEY_ID]);
    }

    fn try_cli(&self, args: &[&str]) -> Option<String> {
        let out = Command::new(binary())
            .arg("-c")
            .arg(&self.config)
            .args(args)
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn cli(&self, args: &[&str]) -> String {
        let out = Command::new(binary())
            .arg("-c")
            .arg(&self.config)
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "garage {args:?} failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

/// The garage binary, installed on first use by whichever test gets there first.
pub fn binary() -> &'static Path {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(|| {
        let target = super::coordinator_bin()
            .parent()
            .and_then(Path::parent)
            .expect("the coordinator binary is inside a target directory")
            .to_owned();
        let root = target.join(format!("garage-{VERSION}"));
        let binary = root.join("bin/garage");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(target.join("garage.lock"))
            .unwrap();
        lock.lock().unwrap();
        if !binary.is_file() {
            // Into a scratch root renamed into place when complete, so an interrupted build
            // is never taken for an install.
            let partial = target.join(format!("garage-{VERSION}.partial"));
            let _ = std::fs::remove_dir_all(&partial);
            eprintln!(
                "building garage {VERSION} from crates.io into {} (once for this target \
                 directory, about 8 minutes on 2 cores)",
                root.display()
            );
            let start = Instant::now();
            let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
                .args([
                    "install",
                    &format!("garage@{VERSION}"),
                    "--locked",
                    "--root",
                ])
                .arg(&partial)
                // Not this test run's target directory or flags.
                .env_remove("CARGO_TARGET_DIR")
                .env_remove("RUSTFLAGS")
                .status()
                .unwrap();
            assert!(status.success(), "cargo install garage: {status}");
            std::fs::rename(&partial, &root).unwrap();
            eprintln!("built in {:?}", start.elapsed());
        }
        drop(lock);
        binary
    })
}
