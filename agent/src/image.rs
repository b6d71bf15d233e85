//! The worker image: which one to use, and building it when it is missing.
//!
//! The files of `docker/` are embedded in the binary, so an installed `crater-at-home` can build
//! its image anywhere. The tag carries a hash of those files: editing the worker loop or the
//! package list gives a new tag, so a stale image is never used, and an existing one is never
//! rebuilt. The slow part (debootstrap) has its own tag hashed over the package list only, so
//! changing the worker loop rebuilds in seconds.

use anyhow::{Context, Result, bail};
use bollard::Docker;
use indicatif::{ProgressBar, ProgressStyle};
use sha2::{Digest, Sha256};
use std::collections::VecDeque;
use std::io::IsTerminal;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};

const BUILD_SCRIPT: &str = include_str!("../../docker/build-local-image.sh");
const PACKAGES: &str = include_str!("../../docker/packages.txt");
const WORKER_LOOP: &str = include_str!("../../docker/worker.sh");

/// The tags of the registry-free image: (base, worker).
pub fn local_image_tags() -> (String, String) {
    let base = short_hash(&[PACKAGES]);
    let worker = short_hash(&[PACKAGES, BUILD_SCRIPT, WORKER_LOOP]);
    (
        format!("crater-at-home-base:{base}"),
        format!("crater-at-home-worker:{worker}"),
    )
}

fn short_hash(parts: &[&str]) -> String {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update(part.as_bytes());
        hasher.update([0]);
    }
    hex::encode(&hasher.finalize()[..6])
}

pub async fn image_exists(docker: &Docker, tag: &str) -> Result<bool> {
    match docker.inspect_image(tag).await {
        Ok(_) => Ok(true),
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        }) => Ok(false),
        Err(e) => Err(e).context("asking Docker for the worker image"),
    }
}

/// Returns the worker image's tag, building it first when it does not exist (or `force`).
pub async fn ensure_local_image(docker: &Docker, force: bool) -> Result<String> {
    let (base, worker) = local_image_tags();
    if !force && image_exists(docker, &worker).await? {
        tracing::debug!(image = %worker, "worker image present");
        return Ok(worker);
    }
    if force {
        for tag in [&worker, &base] {
            let _ = docker
                .remove_image(
                    tag,
                    None::<bollard::query_parameters::RemoveImageOptions>,
                    None,
                )
                .await;
        }
    }
    build(&base, &worker).await?;
    Ok(worker)
}

async fn build(base: &str, worker: &str) -> Result<()> {
    let dir = tempfile_dir()?;
    for (name, text) in [
        ("build-local-image.sh", BUILD_SCRIPT),
        ("packages.txt", PACKAGES),
        ("worker.sh", WORKER_LOOP),
    ] {
        std::fs::write(dir.join(name), text)?;
    }
    let progress = Progress::new(worker);
    let mut child = tokio::process::Command::new("bash")
        .arg(dir.join("build-local-image.sh"))
        .args([base, worker])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null()) // the script sends its stderr to stdout
        .kill_on_drop(true)
        .spawn()
        .context("starting bash to build the worker image")?;
    let mut lines = BufReader::new(child.stdout.take().expect("piped")).lines();
    let mut tail = VecDeque::new();
    while let Some(line) = lines.next_line().await? {
        progress.line(&line);
        if tail.len() == 40 {
            tail.pop_front();
        }
        tail.push_back(line);
    }
    let status = child.wait().await?;
    let _ = std::fs::remove_dir_all(&dir);
    progress.finish(status.success());
    if !status.success() {
        let tail = Vec::from(tail).join("\n");
        bail!("building the worker image {worker} failed ({status}):\n{tail}");
    }
    Ok(())
}

fn tempfile_dir() -> Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!(
        "crater-at-home-image-{}-{}",
        std::process::id(),
        rand::random::<u32>()
    ));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// A spinner on a terminal, plain lines otherwise (CI logs, tests).
struct Progress {
    bar: Option<ProgressBar>,
}

impl Progress {
    fn new(tag: &str) -> Progress {
        eprintln!("building the worker image {tag} (once; a few minutes)");
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::new_spinner();
            bar.set_style(ProgressStyle::with_template("{spinner} [{elapsed}] {msg}").unwrap());
            bar.enable_steady_tick(Duration::from_millis(120));
            bar
        });
        Progress { bar }
    }

    fn line(&self, line: &str) {
        match &self.bar {
            Some(bar) if line.starts_with("==>") => bar.println(line),
            Some(bar) => bar.set_message(line.to_owned()),
            None => eprintln!("  {line}"),
        }
    }

    fn finish(&self, ok: bool) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
        if ok {
            eprintln!("worker image ready");
        }
    }
}
