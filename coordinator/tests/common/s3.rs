//! A real S3-compatible server for the tests that store results in S3: moto's standalone
//! server, run from a Python venv this fixture installs once under the target directory, or
//! Garage ([`garage`](super::garage)), which is stricter.
//!
//! What the coordinator stored is read back through boto3 (`s3_client.py`), never through
//! the Rust AWS SDK the coordinator itself uses, so a mistake in how we drive that SDK
//! cannot hide itself by reading back its own output.
//!
//! Everything here panics with a message on failure: these are test helpers.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use super::Running;
use super::garage::{self, Garage};

/// What the venv holds; written into it, so a change here reinstalls it.
const REQUIREMENTS: &[&str] = &["moto[server]==5.2.5", "boto3"];

const CLIENT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/common/s3_client.py");

/// How long moto may take to answer after it is started: importing moto alone takes
/// seconds, more on a machine busy compiling other tests.
const STARTUP: Duration = Duration::from_secs(60);

/// One object as S3 lists it, with the content type from a HEAD (a listing omits it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Object {
    pub key: String,
    pub size: u64,
    pub content_type: String,
}

/// The server process.
enum Backend {
    Moto(Running),
    Garage(Garage),
}

/// A running moto or Garage server on a loopback port of its own, killed when dropped.
pub struct S3Server {
    backend: Backend,
    port: u16,
    access_key_id: String,
    secret_access_key: String,
    /// Whether moto checks credentials ([`S3Server::start_with_auth`]).
    checks_credentials: bool,
    /// Holds the server's log (a file rather than a pipe, which nobody reads and would fill
    /// up) and Garage's data.
    dir: tempfile::TempDir,
}

impl S3Server {
    /// A server that accepts any credentials (moto's default).
    pub fn start() -> S3Server {
        S3Server::launch()
    }

    /// A server that checks every request's signature against moto's IAM, so a process
    /// given [`S3Server::wrong_credentials_env`] is refused (403 `SignatureDoesNotMatch`).
    /// [`S3Server::env`] holds the key of an IAM user allowed `s3:*`.
    pub fn start_with_auth() -> S3Server {
        let mut server = S3Server::launch();
        // moto checks nothing until told to, so the user can be made without credentials;
        // the script then tells moto to check everything from its next request on.
        let out = server.client(&["setup-auth"], None);
        let key: serde_json::Value = serde_json::from_slice(&out).unwrap();
        server.access_key_id = key["access_key_id"].as_str().unwrap().to_owned();
        server.secret_access_key = key["secret_access_key"].as_str().unwrap().to_owned();
        server.checks_credentials = true;
        server
    }

    /// A Garage node (it checks every signature, and keys have per-bucket permissions).
    pub fn start_garage() -> S3Server {
        let dir = tempfile::tempdir().unwrap();
        let garage = Garage::start(dir.path());
        S3Server {
            port: garage.s3_port,
            backend: Backend::Garage(garage),
            access_key_id: garage::KEY_ID.to_owned(),
            secret_access_key: garage::SECRET.to_owned(),
            checks_credentials: true,
            dir,
        }
    }

    /// Which server this is, for messages.
    pub fn name(&self) -> &'static str {
        match self.backend {
            Backend::Moto(_) => "moto",
            Backend::Garage(_) => "garage",
        }
    }

    /// Garage only: credentials of a key that may read `bucket` but not write it.
    pub fn read_only_env(&self, bucket: &str) -> Vec<(String, String)> {
        let Backend::Garage(garage) = &self.backend else {
            panic!("moto has no per-bucket permissions: use S3Server::start_garage");
        };
        let (id, secret) = garage.read_only_key(bucket);
        aws_env(id, secret)
    }

    /// Garage only: whether the test key may write `bucket` from now on.
    pub fn set_write(&self, bucket: &str, allow: bool) {
        let Backend::Garage(garage) = &self.backend else {
            panic!("moto has no per-bucket permissions: use S3Server::start_garage");
        };
        garage.set_write(bucket, allow);
    }

    fn launch() -> S3Server {
        // On a fresh machine Garage is built first (minutes of compiling): the moto tests wait
        // for it too, rather than run their timed outages on two cores busy compiling.
        garage::binary();
        let python = venv().join("bin/python");
        let dir = tempfile::tempdir().unwrap();
        let log_path = dir.path().join("moto.log");
        // The port is free when picked but may be taken before moto binds it; moto then
        // exits, and another port is tried.
        for attempt in 1.. {
            let port = super::free_port();
            let log = File::create(&log_path).unwrap();
            let child = Command::new(&python)
                // `python -m`, not the venv's `moto_server` script: scripts name the
                // directory they were installed in, and the venv was installed elsewhere
                // and renamed.
                .args([
                    "-m",
                    "moto.server",
                    "-H",
                    "127.0.0.1",
                    "-p",
                    &port.to_string(),
                ])
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .unwrap_or_else(|e| panic!("starting {}: {e}", python.display()));
            let mut moto = Running(Some(child));
            let start = Instant::now();
            loop {
                if let Some(status) = moto.0.as_mut().unwrap().try_wait().unwrap() {
                    let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                    assert!(
                        attempt < 5,
                        "moto on port {port} exited ({status}) on each of {attempt} tries; its log:\n{log}"
                    );
                    eprintln!(
                        "moto on port {port} exited ({status}), trying another port; its log:\n{log}"
                    );
                    break;
                }
                if answers(port, Duration::from_secs(2)) {
                    return S3Server {
                        backend: Backend::Moto(moto),
                        port,
                        // Any pair will do while moto checks nothing, but the AWS chain
                        // needs one to sign with at all.
                        access_key_id: "crater-test-key".to_owned(),
                        secret_access_key: "crater-test-secret".to_owned(),
                        checks_credentials: false,
                        dir,
                    };
                }
                if start.elapsed() > STARTUP {
                    let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                    panic!(
                        "moto on port {port} did not answer within {STARTUP:?}; its log:\n{log}"
                    );
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        unreachable!()
    }

    /// `http://127.0.0.1:PORT`
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// What a process needs to reach this server through the standard AWS credential
    /// chain (the endpoint is not among them: pass [`S3Server::endpoint`] explicitly).
    /// Apply it with [`set_aws_env`], which also drops the host's own `AWS_*` variables.
    pub fn env(&self) -> Vec<(String, String)> {
        aws_env(&self.access_key_id, &self.secret_access_key)
    }

    /// [`S3Server::env`] with the right key id but a wrong secret, which moto refuses with
    /// 403 `SignatureDoesNotMatch`.
    pub fn wrong_credentials_env(&self) -> Vec<(String, String)> {
        assert!(
            self.checks_credentials,
            "this moto accepts any credentials: start it with S3Server::start_with_auth"
        );
        aws_env(&self.access_key_id, "not-the-secret-of-this-key")
    }

    pub fn create_bucket(&self, bucket: &str) {
        match &self.backend {
            Backend::Moto(_) => {
                self.client(&["create-bucket", bucket], None);
            }
            Backend::Garage(garage) => garage.create_bucket(bucket),
        }
    }

    pub fn enable_versioning(&self, bucket: &str) {
        assert!(
            matches!(self.backend, Backend::Moto(_)),
            "Garage has no versioning"
        );
        self.client(&["enable-versioning", bucket], None);
    }

    /// Lets anyone read `bucket`'s objects, as a bucket serving a website does (moto only).
    pub fn allow_public_reads(&self, bucket: &str) {
        assert!(matches!(self.backend, Backend::Moto(_)), "moto only");
        self.client(&["allow-public-reads", bucket], None);
    }

    /// Every object in `bucket`, sorted by key.
    pub fn objects(&self, bucket: &str) -> Vec<Object> {
        let out = self.client(&["objects", bucket], None);
        let list: Vec<serde_json::Value> = serde_json::from_slice(&out).unwrap();
        let mut objects: Vec<Object> = list
            .iter()
            .map(|o| Object {
                key: o["key"].as_str().unwrap().to_owned(),
                size: o["size"].as_u64().unwrap(),
                content_type: o["content_type"].as_str().unwrap().to_owned(),
            })
            .collect();
        objects.sort_by(|a, b| a.key.cmp(&b.key));
        objects
    }

    /// The object's bytes, exactly as stored.
    pub fn get(&self, bucket: &str, key: &str) -> Vec<u8> {
        self.client(&["get", bucket, key], None)
    }

    /// Stores `bytes` in one PUT (content type `binary/octet-stream`).
    pub fn put(&self, bucket: &str, key: &str, bytes: &[u8]) {
        self.client(&["put", bucket, key], Some(bytes));
    }

    /// Stores `bytes` as a multipart upload of `part_size`-byte parts (boto3's
    /// `upload_file`; S3 and moto refuse parts under 5 MiB but the last).
    pub fn put_multipart(&self, bucket: &str, key: &str, bytes: &[u8], part_size: usize) {
        self.client(
            &["put-multipart", bucket, key, &part_size.to_string()],
            Some(bytes),
        );
    }

    /// How many versions each key of a versioned `bucket` has (delete markers not
    /// counted): 1 shows an object was uploaded exactly once.
    pub fn version_counts(&self, bucket: &str) -> BTreeMap<String, usize> {
        let out = self.client(&["version-counts", bucket], None);
        serde_json::from_slice(&out).unwrap()
    }

    /// Puts many small objects at once (one Python process): `objects` is key → text.
    pub fn put_many(&self, bucket: &str, objects: &BTreeMap<String, String>) {
        let input = serde_json::to_vec(objects).unwrap();
        self.client(&["put-many", bucket], Some(&input));
    }

    /// Each key's versions in a versioned `bucket`, as SHA-256 digests of their bytes, oldest
    /// first: a retried upload shows as repeated identical digests, a second result as a
    /// different one.
    pub fn version_digests(&self, bucket: &str) -> BTreeMap<String, Vec<String>> {
        let out = self.client(&["version-digests", bucket], None);
        serde_json::from_slice(&out).unwrap()
    }

    /// The number of parts if the object was uploaded as multipart, `None` for a single
    /// PUT. Read from the ETag (`"<md5 of part md5s>-N"`), and checked against the
    /// `PartsCount` S3 gives on a HEAD of part 1.
    pub fn multipart_parts(&self, bucket: &str, key: &str) -> Option<u32> {
        let out = self.client(&["multipart-parts", bucket, key], None);
        serde_json::from_slice(&out).unwrap()
    }

    /// Freezes moto (SIGSTOP): connections are still accepted by the kernel but nothing
    /// answers, as with a server that hangs. The helpers above hang too until
    /// [`S3Server::resume`].
    pub fn pause(&self) {
        self.signal("STOP");
    }

    /// Undoes [`S3Server::pause`] (SIGCONT).
    pub fn resume(&self) {
        self.signal("CONT");
    }

    /// Whether the server answers an HTTP request within `timeout`.
    pub fn answers_within(&self, timeout: Duration) -> bool {
        match self.backend {
            Backend::Moto(_) => answers(self.port, timeout),
            Backend::Garage(_) => http_answers(self.port, timeout),
        }
    }

    /// What the server has written so far, for failure messages.
    pub fn log(&self) -> String {
        let path = match &self.backend {
            Backend::Moto(_) => self.dir.path().join("moto.log"),
            Backend::Garage(garage) => garage.log.clone(),
        };
        std::fs::read_to_string(path).unwrap_or_default()
    }

    fn signal(&self, signal: &str) {
        let pid = match &self.backend {
            Backend::Moto(moto) => moto.id(),
            Backend::Garage(garage) => garage.process.id(),
        }
        .to_string();
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &pid])
            .status()
            .unwrap();
        assert!(status.success(), "kill -{signal} {pid}: {status}");
    }

    /// Runs `s3_client.py` with this server's credentials, returning its stdout.
    fn client(&self, args: &[&str], stdin: Option<&[u8]>) -> Vec<u8> {
        let mut command = Command::new(venv().join("bin/python"));
        command
            .arg(CLIENT)
            .arg(self.endpoint())
            .args(args)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        set_aws_env(&mut command, &self.env());
        // boto3's own checksum trailers are what strict servers refuse; this client only has
        // to read back and set up (the coordinator, under test, gets no such setting).
        command.env("AWS_REQUEST_CHECKSUM_CALCULATION", "when_required");
        let mut child = command.spawn().unwrap();
        if let Some(bytes) = stdin {
            // The script reads all of its input before it answers, so writing it all
            // first cannot deadlock on the output pipes.
            let mut pipe = child.stdin.take().unwrap();
            pipe.write_all(bytes).unwrap();
        }
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "s3_client.py {args:?} failed ({}):\n{}\n{}'s log ends:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr),
            self.name(),
            tail(&self.log(), 40),
        );
        out.stdout
    }
}

/// Sets `env` (from [`S3Server::env`]) on `command`, first removing every `AWS_*`
/// variable it would inherit, so that no profile, token or endpoint of the host's mixes
/// in.
pub fn set_aws_env(command: &mut Command, env: &[(String, String)]) {
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("AWS_") {
            command.env_remove(&name);
        }
    }
    command.envs(env.iter().map(|(k, v)| (k, v)));
}

fn aws_env(access_key_id: &str, secret_access_key: &str) -> Vec<(String, String)> {
    [
        ("AWS_ACCESS_KEY_ID", access_key_id),
        ("AWS_SECRET_ACCESS_KEY", secret_access_key),
        ("AWS_REGION", "us-east-1"),
        // Else a credential chain that finds nothing asks the EC2 metadata address, and
        // waits for its timeout.
        ("AWS_EC2_METADATA_DISABLED", "true"),
        // So that ~/.aws of whoever runs the tests is never read.
        ("AWS_CONFIG_FILE", "/nonexistent/crater-test/aws-config"),
        (
            "AWS_SHARED_CREDENTIALS_FILE",
            "/nonexistent/crater-test/aws-credentials",
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

/// `GET path` on loopback `port`: the whole answer, status line first.
fn http_get(port: u16, path: &str, timeout: Duration) -> std::io::Result<String> {
    let mut stream = TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
    )?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer)?;
    Ok(answer)
}

/// Whether an HTTP server answers `GET /` on `port` within `timeout`, whatever its status (an
/// S3 server refuses an unsigned request, which is an answer).
pub fn http_answers(port: u16, timeout: Duration) -> bool {
    http_get(port, "/", timeout).is_ok_and(|answer| answer.starts_with("HTTP/1."))
}

/// Whether moto, and not some other server that took the port, answers within `timeout`.
fn answers(port: u16, timeout: Duration) -> bool {
    // A moto-only path that reads its settings and changes nothing (unlike `/`, which is S3's
    // ListBuckets and is counted and checked like any request).
    match http_get(port, "/moto-api/config", timeout) {
        // Any success: moto answers this GET with 201.
        Ok(answer) => answer.lines().next().is_some_and(|status| {
            status.starts_with("HTTP/1.")
                && status
                    .split(' ')
                    .nth(1)
                    .is_some_and(|code| code.starts_with('2'))
        }),
        Err(_) => false,
    }
}

/// The venv with moto and boto3, installed on first use by whichever test gets there
/// first; the others, in this process or another test binary, wait for it.
fn venv() -> &'static Path {
    static VENV: OnceLock<PathBuf> = OnceLock::new();
    VENV.get_or_init(|| super::install::venv("s3-venv", REQUIREMENTS))
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
