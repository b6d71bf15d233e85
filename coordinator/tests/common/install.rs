//! Installing what some tests run but this repository does not build (a Python venv, a Debian
//! package), once, by whichever test gets there first: the others, in this process or in another
//! test binary, wait on a lock file under the target directory.
//!
//! Everything here panics with a message on failure: these are test helpers.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

/// `<target>/debug/crater-at-home` is in it: what is installed here is shared by every test
/// binary of the target directory, and `cargo clean` removes it.
pub fn target_dir() -> PathBuf {
    super::coordinator_bin()
        .parent()
        .and_then(Path::parent)
        .expect("the coordinator binary is inside a target directory")
        .to_owned()
}

/// Holds `<target>/<name>.lock` until dropped (an exclusive lock, so across processes too).
pub fn lock(name: &str) -> File {
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(target_dir().join(format!("{name}.lock")))
        .unwrap();
    file.lock().unwrap();
    file
}

/// The venv `<target>/<name>` holding `requirements`, installed if missing or if it was made
/// from other requirements (they are written into it as `requirements.txt`). Callers should
/// remember the answer: this takes the lock each time.
pub fn venv(name: &str, requirements: &[&str]) -> PathBuf {
    let venv = target_dir().join(name);
    let _lock = lock(name);
    let wanted = requirements.join("\n");
    let installed = std::fs::read_to_string(venv.join("requirements.txt")).ok();
    if installed.as_deref() == Some(wanted.as_str()) {
        return venv;
    }
    // Installed into a scratch directory renamed into place when complete, so an install that
    // was interrupted (a killed test run) is never taken for a venv.
    let partial = venv.with_file_name(format!("{name}.partial"));
    let _ = std::fs::remove_dir_all(&partial);
    eprintln!(
        "installing {} into {} (once for this target directory, about a minute)",
        requirements.join(" "),
        venv.display()
    );
    let start = Instant::now();
    run(Command::new("python3").args(["-m", "venv"]).arg(&partial));
    run(Command::new(partial.join("bin/python"))
        .args(["-m", "pip", "install", "--no-input", "--quiet"])
        .args(requirements));
    std::fs::write(partial.join("requirements.txt"), &wanted).unwrap();
    // An outdated venv, if any.
    let _ = std::fs::remove_dir_all(&venv);
    std::fs::rename(&partial, &venv).unwrap();
    eprintln!("installed in {:?}", start.elapsed());
    venv
}

/// Makes sure every one of `commands` is on the PATH, installing the Debian `packages` that
/// provide them if not (once per machine: apt is what remembers it).
pub fn apt_install(commands: &[&str], packages: &[&str]) {
    let missing = || commands.iter().any(|c| on_path(c).is_none());
    if !missing() {
        return;
    }
    let _lock = lock("apt");
    // Another test may have installed them while this one waited.
    if !missing() {
        return;
    }
    let hint = format!(
        "{commands:?} missing: install the Debian packages {} (`apt-get install {}`)",
        packages.join(" "),
        packages.join(" ")
    );
    assert!(on_path("apt-get").is_some(), "{hint}: there is no apt-get");
    let uid = Command::new("id").arg("-u").output().unwrap().stdout;
    assert_eq!(
        uid, b"0\n",
        "{hint}: only root can, and the tests are not root"
    );
    eprintln!(
        "installing {} with apt-get (once per machine)",
        packages.join(" ")
    );
    let start = Instant::now();
    let install = || {
        let mut apt = Command::new("apt-get");
        apt.env("DEBIAN_FRONTEND", "noninteractive")
            // Waits for another apt (another target directory's tests, or a person) to finish
            // instead of failing at once.
            .args(["-o", "DPkg::Lock::Timeout=600", "install", "-y", "-q"])
            .args(["--no-install-recommends"])
            .args(packages);
        apt.output().unwrap()
    };
    let mut out = install();
    if !out.status.success() {
        // Package lists missing (a fresh container) or outdated (a version since removed from
        // the mirror): only then are they worth the time to fetch.
        run(Command::new("apt-get").args(["-o", "DPkg::Lock::Timeout=600", "update", "-q"]));
        out = install();
    }
    assert!(
        out.status.success(),
        "{hint}: apt-get install failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!missing(), "{hint}: still missing after apt-get install");
    eprintln!("installed in {:?}", start.elapsed());
}

/// Where `command` is on the PATH, if it is.
pub fn on_path(command: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(command))
        .find(|p| p.is_file())
}

/// Runs `command` to the end, failing the test with its output if it fails.
pub fn run(command: &mut Command) {
    let out = command
        .output()
        .unwrap_or_else(|e| panic!("{command:?}: {e}"));
    assert!(
        out.status.success(),
        "{command:?} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
}
