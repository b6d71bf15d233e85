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

#[derive(Debug, Clone)]
pub struct Toolchain {
    /// The sysroot on the host (holds `bin/cargo`, `bin/rustc`, `lib/`).
    pub sysroot: PathBuf,
    /// The host target triple, the default `--target`.
    pub host_target: String,
}

impl Toolchain {
    /// `explicit` (from `--toolchain`) or the host's nightly, else its default toolchain.
    pub fn detect(explicit: Option<PathBuf>) -> Result<Toolchain> {
        let sysroot = match explicit {
            Some(dir) => dir,
            None => sysroot_of(&["+nightly"]).or_else(|_| sysroot_of(&[]))?,
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
        Ok(Toolchain {
            sysroot,
            host_target,
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
