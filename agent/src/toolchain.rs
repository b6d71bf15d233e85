//! The Rust toolchain the containers build with.
//!
//! On machines without a registry the worker image carries no Rust: the host's toolchain is
//! bind-mounted read-only at `/opt/rust` instead (as rustwide does). Nightly is preferred when
//! rustup has it, because the seed's flags and Miri need it; otherwise the default toolchain.

use anyhow::{Context, Result, bail};
use std::path::PathBuf;
use std::process::Command;

/// Where the toolchain is mounted inside every slot container (its `bin/` is on the PATH).
pub const MOUNT_POINT: &str = "/opt/rust";

/// Where the containers' toolchain comes from (`--toolchain`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToolchainSource {
    /// The host's nightly, else its default toolchain, mounted read-only.
    Host,
    /// This sysroot, mounted read-only.
    Path(PathBuf),
    /// The image's own (the registry Dockerfile's image has one); nothing is mounted.
    Image,
}

impl std::str::FromStr for ToolchainSource {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "host" => ToolchainSource::Host,
            "image" => ToolchainSource::Image,
            path => ToolchainSource::Path(PathBuf::from(path)),
        })
    }
}

#[derive(Debug, Clone)]
pub struct Toolchain {
    /// The sysroot on the host to mount (holds `bin/cargo`, `bin/rustc`, `lib/`); `None` when
    /// the image brings its own.
    pub sysroot: Option<PathBuf>,
    /// The host target triple, the default `--target`.
    pub host_target: String,
    /// What `rustc -V` says ("rustc 1.93.0-nightly (abc123 2026-11-01)"), for the results.
    pub version: String,
}

impl Toolchain {
    pub fn detect(source: &ToolchainSource) -> Result<Toolchain> {
        let sysroot = match source {
            ToolchainSource::Path(dir) => dir.clone(),
            ToolchainSource::Host => sysroot_of(&["+nightly"]).or_else(|_| sysroot_of(&[]))?,
            ToolchainSource::Image => {
                return Ok(Toolchain {
                    sysroot: None,
                    host_target: format!("{}-unknown-linux-gnu", std::env::consts::ARCH),
                    version: "the image's".to_owned(),
                });
            }
        };
        let rustc = sysroot.join("bin/rustc");
        if !rustc.is_file() || !sysroot.join("bin/cargo").is_file() {
            bail!(
                "{} is not a Rust toolchain (no bin/rustc and bin/cargo in it)",
                sysroot.display()
            );
        }
        let verbose = run(Command::new(&rustc).arg("-vV"))?;
        let host_target = verbose
            .lines()
            .find_map(|l| l.strip_prefix("host: "))
            .context("`rustc -vV` printed no host target")?
            .to_owned();
        let version = verbose.lines().next().unwrap_or_default().trim().to_owned();
        Ok(Toolchain {
            sysroot: Some(sysroot),
            host_target,
            version,
        })
    }
}

fn sysroot_of(extra: &[&str]) -> Result<PathBuf> {
    let out = run(Command::new("rustc")
        .args(extra)
        .args(["--print", "sysroot"]))?;
    Ok(PathBuf::from(out.trim()))
}

fn run(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .env("RUSTUP_AUTO_INSTALL", "0")
        .output()
        .with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8(out.stdout)?)
}
