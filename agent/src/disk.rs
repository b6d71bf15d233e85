//! A disk bound per slot (`--disk-gb`): each slot's /build and cargo home live on an ext4
//! filesystem of their own, so a crate that writes without end gets ENOSPC inside its container
//! and the host keeps its free space.
//!
//! Why a loop-mounted image: `docker run --storage-opt size=` only works on a few storage drivers
//! (overlay2 on xfs with project quotas, devicemapper, btrfs, zfs), not on fuse-overlayfs nor on
//! the ext4 most hosts have, and a volume has no size at all. An ext4 filesystem in a sparse file
//! works wherever the agent is root. The file takes only what is written to it, and after every
//! job the slot trims the filesystem ([`SlotDisk::trim`], `fstrim`), so what a crate deleted is
//! given back too (the loop device punches holes in the file): an idle 20 GiB slot costs a few
//! megabytes of the host. Not the `discard` mount option: it punches a hole per deleted file as
//! the crate deletes, and made small crates measurably slower (`cargo` deletes a lot).
//!
//! Each disk is a folder `<root>/<host>-<pid>-slot<index>` holding `disk.img`, its mount point
//! `mnt` and an `owner` file. The host name and process id say which agent owns it, as the
//! container labels of [`crate::docker`] do, so an agent at start unmounts and deletes the disks
//! of dead agents on this host ([`remove_leftovers`]) and never touches a live one's. The `owner`
//! file holds the boot id and the owner's start time, so that a pid used again by another
//! process (after a reboot, typically) does not keep a dead agent's disk forever.
//!
//! On the filesystem the crate sees two directories, `build` and `cargo`, bound by the slot at
//! /build and /cargo. They are root's with mode 1777, like /tmp: the unprivileged crate user
//! creates and deletes its own entries in them but cannot remove them or change their mode.

use anyhow::{Context, Result, bail, ensure};
use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStringExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;

/// Where the slot disks go by default.
pub const DEFAULT_ROOT: &str = "/var/lib/crater-agent/disks";

/// The sparse image inside a disk's folder.
const IMAGE: &str = "disk.img";
/// The mount point inside a disk's folder.
const MOUNT_POINT: &str = "mnt";
/// Who made the disk: boot id and process start time, see [`owner_token`].
const OWNER_FILE: &str = "owner";

/// No `noexec`: build scripts and test binaries run from /build. `noatime` spares a write per
/// read. No `discard`: [`SlotDisk::trim`] gives deleted blocks back in one batch instead.
const MOUNT_OPTIONS: &str = "loop,nosuid,nodev,noatime";

/// What `--disk-gb` needs and tells when the agent is not root.
const NOT_ROOT: &str = "--disk-gb needs root to loop-mount a filesystem per slot; run the agent \
                        as root, or pass --disk-gb 0 to run without a disk bound (a crate can \
                        then fill this host's disk)";

/// One slot's filesystem, mounted. It is not unmounted when dropped: call [`SlotDisk::remove`]
/// (a crash leaves it to [`remove_leftovers`]).
#[derive(Debug)]
pub struct SlotDisk {
    /// The disk's folder, `<root>/<host>-<pid>-slot<index>`, with the real path of `root`
    /// (mount points in /proc/self/mountinfo are real paths).
    dir: PathBuf,
    size_bytes: u64,
}

impl SlotDisk {
    /// Makes slot `index`'s disk of `size_bytes` under `root` and mounts it: a sparse
    /// `disk.img`, an ext4 filesystem on it and the `build` and `cargo` directories. A folder of
    /// the same name left by this process is removed first.
    pub async fn create(root: &Path, index: u32, size_bytes: u64) -> Result<SlotDisk> {
        tokio::fs::create_dir_all(root)
            .await
            .with_context(|| format!("cannot create {}", root.display()))?;
        let root = tokio::fs::canonicalize(root)
            .await
            .with_context(|| format!("cannot resolve {}", root.display()))?;
        let pid = std::process::id();
        let dir = root.join(folder_name(&crate::docker::hostname(), pid, index));
        if tokio::fs::try_exists(&dir).await.unwrap_or(true) {
            release(&dir)
                .await
                .with_context(|| format!("cannot remove the old {}", dir.display()))?;
        }
        tokio::fs::create_dir(&dir)
            .await
            .with_context(|| format!("cannot create {}", dir.display()))?;
        let owner = owner_token(pid).unwrap_or_default();
        let disk = SlotDisk { dir, size_bytes };
        let made = async {
            tokio::fs::write(disk.dir.join(OWNER_FILE), owner).await?;
            disk.make().await
        };
        match made.await {
            Ok(()) => Ok(disk),
            Err(e) => {
                let e = e.context(format!("cannot make the disk of slot {index}"));
                disk.remove().await;
                Err(e)
            }
        }
    }

    /// Makes and mounts the filesystem in the (existing) folder.
    async fn make(&self) -> Result<()> {
        let image = self.image();
        let mnt = self.mount_point();
        // Only root needs to reach the files on the host; the containers get bind mounts.
        set_mode(&self.dir, 0o700).await?;
        tokio::fs::create_dir(&mnt).await?;
        let file = tokio::fs::File::create_new(&image).await?;
        file.set_len(self.size_bytes).await?; // sparse: takes no space yet
        drop(file);
        // No journal: the filesystem is thrown away at the next start, there is nothing to
        // recover. No reserved blocks: they are root's, and the crate is not root.
        // `nodiscard`: the file is new and sparse, discarding it would do nothing.
        run(command("mkfs.ext4")
            .args(["-q", "-F", "-O", "^has_journal", "-m", "0"])
            .args(["-E", "nodiscard,root_owner=0:0"])
            .arg(&image))
        .await?;
        run(command("mount")
            .args(["-t", "ext4", "-o", MOUNT_OPTIONS])
            .arg(&image)
            .arg(&mnt))
        .await?;
        // lost+found is for fsck, which a throw-away filesystem never sees.
        match tokio::fs::remove_dir(mnt.join("lost+found")).await {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e.into()),
            _ => {}
        }
        set_mode(&mnt, 0o755).await?;
        for path in [self.build_dir(), self.cargo_dir()] {
            tokio::fs::create_dir(&path).await?;
            std::os::unix::fs::chown(&path, Some(0), Some(0))?;
            set_mode(&path, 0o1777).await?;
        }
        Ok(())
    }

    /// The host path the slot binds at /build.
    pub fn build_dir(&self) -> PathBuf {
        self.mount_point().join("build")
    }

    /// The host path the slot binds at /cargo (cargo home).
    pub fn cargo_dir(&self) -> PathBuf {
        self.mount_point().join("cargo")
    }

    /// The disk's folder (image, mount point, owner file).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn image(&self) -> PathBuf {
        self.dir.join(IMAGE)
    }

    pub fn mount_point(&self) -> PathBuf {
        self.dir.join(MOUNT_POINT)
    }

    pub fn size_bytes(&self) -> u64 {
        self.size_bytes
    }

    /// Bytes the crate may still write (what `df` shows as available), to tell "the job filled
    /// its disk" from other failures.
    pub fn available_bytes(&self) -> std::io::Result<u64> {
        available_bytes(&self.mount_point())
    }

    /// Gives the blocks of deleted files back to the host (`fstrim`): the loop device punches
    /// them out of the sparse image. Called after every job; errors are logged, not returned.
    pub async fn trim(&self) {
        let mount = self.mount_point();
        if let Err(e) = run(command("fstrim").arg(&mount)).await {
            tracing::warn!("could not trim {}: {e:#}", mount.display());
        }
    }

    /// Unmounts the filesystem (lazily when it is busy), detaches its loop device and deletes the
    /// folder. Errors are logged, not returned: removal is clean-up, like
    /// [`crate::docker::remove`].
    pub async fn remove(self) {
        if let Err(e) = release(&self.dir).await {
            tracing::warn!(disk = %self.dir.display(), "could not remove a slot disk: {e:#}");
        }
    }
}

/// Unmounts and deletes the slot disks under `root` whose owning agent on this host is gone
/// (killed, crashed, or before a reboot). Returns how many it removed; one that cannot be removed
/// is logged and left. Run it at agent start, after [`crate::docker::remove_leftovers`]: a
/// leftover container still running would hold its disk's filesystem until it is removed.
pub async fn remove_leftovers(root: &Path) -> Result<usize> {
    let root = match tokio::fs::canonicalize(root).await {
        Ok(root) => root,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e).with_context(|| format!("cannot resolve {}", root.display())),
    };
    let host = crate::docker::hostname();
    let mut entries = tokio::fs::read_dir(&root)
        .await
        .with_context(|| format!("cannot list {}", root.display()))?;
    let mut removed = 0;
    while let Some(entry) = entries.next_entry().await? {
        let name = entry.file_name();
        let Some((owner_host, pid, _)) = name.to_str().and_then(parse_folder_name) else {
            continue;
        };
        let dir = entry.path();
        if owner_host != host || owned_by_live_process(&dir, pid) {
            continue;
        }
        tracing::info!(disk = %dir.display(), "removing a leftover slot disk");
        match release(&dir).await {
            Ok(()) => removed += 1,
            Err(e) => {
                tracing::warn!(disk = %dir.display(), "could not remove a leftover slot disk: {e:#}")
            }
        }
    }
    Ok(removed)
}

/// Checks that slot disks can be made here, with an error that says what to do when not:
/// root, `mkfs.ext4`, `mount`, `umount`, `losetup` and a free loop device. Returns a warning
/// when `slots` full disks would not fit in the free space of `root`'s filesystem (the images
/// are sparse, so this only bites when crates really fill them).
pub fn preflight(root: &Path, slots: u32, size_bytes: u64) -> Result<Option<String>> {
    if !rustix::process::geteuid().is_root() {
        bail!(NOT_ROOT);
    }
    for (tool, package) in [
        ("mkfs.ext4", "e2fsprogs"),
        ("mount", "util-linux (Debian: mount)"),
        ("umount", "util-linux (Debian: mount)"),
        ("losetup", "util-linux (Debian: mount)"),
    ] {
        if find_tool(tool).is_none() {
            bail!(
                "--disk-gb needs `{tool}`, which is neither on PATH nor in /usr/sbin or /sbin: \
                 install {package}, or pass --disk-gb 0 to run without a disk bound"
            );
        }
    }
    let free_loop = std::process::Command::new(tool_path("losetup"))
        .arg("--find")
        .stdin(Stdio::null())
        .output()
        .context("cannot run `losetup --find`")?;
    if !free_loop.status.success() {
        bail!(
            "--disk-gb needs a loop device, and `losetup --find` found none ({}): load the loop \
             module (`modprobe loop`); in a container the agent needs /dev/loop-control and the \
             /dev/loop* devices (e.g. --privileged); or pass --disk-gb 0 to run without a disk \
             bound",
            String::from_utf8_lossy(&free_loop.stderr).trim()
        );
    }
    // `root` may not exist yet: its nearest existing ancestor is on the same filesystem.
    let existing = root
        .ancestors()
        .find(|p| p.exists())
        .unwrap_or(Path::new("/"));
    let free = available_bytes(existing)
        .with_context(|| format!("cannot read the free space of {}", existing.display()))?;
    let needed = u64::from(slots).saturating_mul(size_bytes);
    Ok((needed > free).then(|| {
        format!(
            "{slots} slot disks of {} each could take {}, more than the {} free on the \
             filesystem of {}; the images are sparse and only grow as crates write, but crates \
             that fill them would fill this host's disk: lower --disk-gb or --slots, or free \
             space",
            gib(size_bytes),
            gib(needed),
            gib(free),
            existing.display()
        )
    }))
}

/// `<host>-<pid>-slot<index>`.
fn folder_name(host: &str, pid: u32, index: u32) -> String {
    format!("{host}-{pid}-slot{index}")
}

/// The host, pid and slot index of a folder name; the host may itself contain dashes.
fn parse_folder_name(name: &str) -> Option<(&str, u32, u32)> {
    let (rest, index) = name.rsplit_once("-slot")?;
    let (host, pid) = rest.rsplit_once('-')?;
    if host.is_empty() {
        return None;
    }
    Some((host, pid.parse().ok()?, index.parse().ok()?))
}

/// What tells one process from another that gets the same pid later: the boot id and the
/// process's start time (in clock ticks since boot). None when there is no such process.
fn owner_token(pid: u32) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may contain anything; the start time is
    // field 22, the 20th after the name.
    let (_, after_name) = stat.rsplit_once(')')?;
    let start = after_name.split_whitespace().nth(19)?;
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap_or_default();
    Some(format!("{} {start}", boot.trim()))
}

/// Whether the agent that made the disk in `dir` as process `pid` still runs.
fn owned_by_live_process(dir: &Path, pid: u32) -> bool {
    let Some(now) = owner_token(pid) else {
        return false;
    };
    match std::fs::read_to_string(dir.join(OWNER_FILE)) {
        Ok(recorded) => recorded.trim() == now,
        // Not written yet (the agent is making the disk right now): judged by the pid alone.
        Err(_) => true,
    }
}

/// Unmounts whatever is mounted in `dir`, detaches loop devices still bound to its image and
/// deletes it. Refuses to delete while something is still mounted there: that would delete
/// the files of the mounted filesystem.
async fn release(dir: &Path) -> Result<()> {
    let mut mounts = mounts_under(dir)?;
    // Deepest first, in case something was mounted inside the disk.
    mounts.sort_by_key(|m| std::cmp::Reverse(m.components().count()));
    for mount in &mounts {
        if let Err(e) = run(command("umount").arg(mount)).await {
            tracing::warn!(
                "{e:#}; unmounting {} lazily: it goes when its last user does",
                mount.display()
            );
            run(command("umount").arg("-l").arg(mount)).await?;
        }
    }
    // `mount -o loop` sets the loop device to detach itself when unmounted; this catches one
    // left by a mount that failed half-way or made by hand.
    let image = dir.join(IMAGE);
    if tokio::fs::try_exists(&image).await.unwrap_or(false) {
        let listed = run(command("losetup").arg("--associated").arg(&image)).await?;
        for device in listed
            .lines()
            .filter_map(|l| l.split_once(": "))
            .map(|l| l.0)
        {
            if let Err(e) = run(command("losetup").arg("--detach").arg(device)).await {
                tracing::warn!("{e:#}");
            }
        }
    }
    let left = mounts_under(dir)?;
    ensure!(
        left.is_empty(),
        "{} is still mounted, so it is not deleted",
        left[0].display()
    );
    match tokio::fs::remove_dir_all(dir).await {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(e).with_context(|| format!("cannot delete {}", dir.display()))
        }
        _ => Ok(()),
    }
}

/// Mount points at or under `dir`, from /proc/self/mountinfo.
fn mounts_under(dir: &Path) -> Result<Vec<PathBuf>> {
    let info = std::fs::read("/proc/self/mountinfo").context("cannot read /proc/self/mountinfo")?;
    Ok(info
        .split(|&b| b == b'\n')
        .filter_map(|line| line.split(|&b| b == b' ').nth(4))
        .map(unescape_mount_path)
        .filter(|mount| mount.starts_with(dir))
        .collect())
}

/// Mountinfo writes space, tab, newline and backslash in paths as `\ooo` octal escapes.
fn unescape_mount_path(escaped: &[u8]) -> PathBuf {
    let mut bytes = Vec::with_capacity(escaped.len());
    let mut i = 0;
    while i < escaped.len() {
        let octal = escaped
            .get(i + 1..i + 4)
            .filter(|d| escaped[i] == b'\\' && d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match octal {
            Some(d) => {
                bytes.push((d[0] - b'0') << 6 | (d[1] - b'0') << 3 | (d[2] - b'0'));
                i += 4;
            }
            None => {
                bytes.push(escaped[i]);
                i += 1;
            }
        }
    }
    PathBuf::from(OsString::from_vec(bytes))
}

fn available_bytes(path: &Path) -> std::io::Result<u64> {
    let stat = rustix::fs::statvfs(path)?;
    Ok(stat.f_bavail.saturating_mul(stat.f_frsize))
}

async fn set_mode(path: &Path, mode: u32) -> std::io::Result<()> {
    tokio::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).await
}

/// Where a system tool is: PATH, then the sbin directories a non-login PATH often lacks.
fn find_tool(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

fn tool_path(name: &str) -> PathBuf {
    find_tool(name).unwrap_or_else(|| PathBuf::from(name))
}

fn command(tool: &str) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(tool_path(tool));
    command.stdin(Stdio::null()).kill_on_drop(true);
    command
}

/// Runs a command to its end; an error names the command and carries its stderr. Returns stdout.
async fn run(command: &mut tokio::process::Command) -> Result<String> {
    let shown = {
        let std = command.as_std();
        let program = Path::new(std.get_program());
        let name = program.file_name().unwrap_or(program.as_os_str());
        std::iter::once(name)
            .chain(std.get_args())
            .map(OsStr::to_string_lossy)
            .collect::<Vec<_>>()
            .join(" ")
    };
    let output = command
        .output()
        .await
        .with_context(|| format!("cannot run `{shown}`"))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        bail!("`{shown}` failed ({}): {}", output.status, stderr.trim());
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

fn gib(bytes: u64) -> String {
    format!("{:.1} GiB", bytes as f64 / (1u64 << 30) as f64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::unix::fs::MetadataExt;
    use std::os::unix::process::CommandExt;
    use std::time::{Duration, Instant};

    const MIB: u64 = 1 << 20;
    /// The unprivileged user crate code runs as in the worker image.
    const CRATE_UID: u32 = 1000;

    fn needs_root() -> bool {
        if rustix::process::geteuid().is_root() {
            return false;
        }
        eprintln!("skipped: needs root");
        true
    }

    /// A temporary root for disks; whatever a failed test left mounted in it is unmounted
    /// (lazily) before it is deleted, so a failure does not delete into a mounted filesystem.
    struct TestRoot {
        path: PathBuf,
        _tmp: tempfile::TempDir,
    }

    impl TestRoot {
        fn new() -> TestRoot {
            let tmp = tempfile::tempdir().unwrap();
            let path = tmp.path().canonicalize().unwrap();
            TestRoot { path, _tmp: tmp }
        }
    }

    impl Drop for TestRoot {
        fn drop(&mut self) {
            for mount in mounts_under(&self.path).unwrap_or_default() {
                let _ = std::process::Command::new(tool_path("umount"))
                    .arg("-l")
                    .arg(mount)
                    .status();
            }
        }
    }

    /// A child process that is killed when the test ends, passed or failed.
    struct KillOnDrop(std::process::Child);

    impl Drop for KillOnDrop {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    /// Allocated bytes of a (sparse) file.
    fn allocated(path: &Path) -> u64 {
        std::fs::metadata(path).unwrap().blocks() * 512
    }

    /// Per-mount and per-filesystem options of the mount at `mount`.
    fn mount_options(mount: &Path) -> String {
        let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        for line in info.lines() {
            let fields: Vec<&str> = line.split(' ').collect();
            if unescape_mount_path(fields[4].as_bytes()) == mount {
                let sep = fields.iter().position(|f| *f == "-").unwrap();
                return format!("{},{}", fields[5], fields[sep + 3]);
            }
        }
        panic!("{} is not mounted", mount.display());
    }

    /// Runs `args` in `dir` as the crate's unprivileged user.
    fn as_crate_user(dir: &Path, args: &[&str]) -> std::process::Output {
        std::process::Command::new(args[0])
            .args(&args[1..])
            .current_dir(dir)
            .uid(CRATE_UID)
            .gid(CRATE_UID)
            .output()
            .unwrap()
    }

    /// Whether `args` succeed in `dir` as the crate's unprivileged user.
    fn crate_user_may(dir: &Path, args: &[&str]) -> bool {
        as_crate_user(dir, args).status.success()
    }

    /// A disk in `dir` as an agent with another pid would have made it.
    async fn disk_at(dir: PathBuf, owner: Option<&str>) -> SlotDisk {
        tokio::fs::create_dir(&dir).await.unwrap();
        if let Some(owner) = owner {
            tokio::fs::write(dir.join(OWNER_FILE), owner).await.unwrap();
        }
        let disk = SlotDisk {
            dir,
            size_bytes: 16 * MIB,
        };
        disk.make().await.unwrap();
        disk
    }

    #[test]
    fn folder_names_round_trip() {
        let name = folder_name("ip-10-0-0-1.eu-west-1", 4242, 7);
        assert_eq!(name, "ip-10-0-0-1.eu-west-1-4242-slot7");
        assert_eq!(
            parse_folder_name(&name),
            Some(("ip-10-0-0-1.eu-west-1", 4242, 7))
        );
        assert_eq!(
            parse_folder_name("a-slot-b-12-slot3"),
            Some(("a-slot-b", 12, 3))
        );
        assert_eq!(parse_folder_name("my-slot-host-slot0"), None);
        assert_eq!(parse_folder_name("-1-slot0"), None);
        assert_eq!(parse_folder_name("host-12-slotx"), None);
        assert_eq!(parse_folder_name("lost+found"), None);
    }

    #[test]
    fn mount_paths_are_unescaped() {
        assert_eq!(
            unescape_mount_path(br"/a\040b\011c\\d\134e\12"),
            PathBuf::from("/a b\tc\\\\d\\e\\12")
        );
    }

    #[test]
    fn owner_tokens_tell_processes_apart() {
        let own = owner_token(std::process::id()).unwrap();
        assert_eq!(owner_token(std::process::id()).as_ref(), Some(&own));
        assert_ne!(owner_token(1), Some(own));
        assert_eq!(owner_token(u32::MAX), None);
    }

    #[tokio::test]
    async fn a_disk_bounds_writes_and_gives_deleted_space_back() {
        if needs_root() {
            return;
        }
        let root = TestRoot::new();
        let disk = SlotDisk::create(&root.path, 3, 64 * MIB).await.unwrap();
        let pid = std::process::id();
        let name = folder_name(&crate::docker::hostname(), pid, 3);
        assert_eq!(disk.dir(), root.path.join(name));
        assert_eq!(mounts_under(disk.dir()).unwrap(), [disk.mount_point()]);
        let options = mount_options(&disk.mount_point());
        for option in ["nosuid", "nodev"] {
            assert!(options.split(',').any(|o| o == option), "{options}");
        }

        // The layout the crate sees.
        let top = std::fs::metadata(disk.mount_point()).unwrap();
        assert_eq!((top.mode() & 0o7777, top.uid(), top.gid()), (0o755, 0, 0));
        let mut names: Vec<_> = std::fs::read_dir(disk.mount_point())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        names.sort();
        assert_eq!(names, ["build", "cargo"]);
        for dir in [disk.build_dir(), disk.cargo_dir()] {
            let meta = std::fs::metadata(&dir).unwrap();
            assert!(meta.is_dir());
            assert_eq!(
                (meta.mode() & 0o7777, meta.uid(), meta.gid()),
                (0o1777, 0, 0)
            );
        }

        // Deleted data goes back to the host: fstrim discards the freed blocks, and the loop
        // device punches them out of the image.
        let image = disk.image();
        let empty = allocated(&image);
        let big = disk.build_dir().join("big");
        let mut file = std::fs::File::create(&big).unwrap();
        for _ in 0..40 {
            file.write_all(&[0x5a; MIB as usize]).unwrap();
        }
        file.sync_all().unwrap();
        drop(file);
        // The loop device writes to the image behind the filesystem's back: give it a moment.
        let deadline = Instant::now() + Duration::from_secs(10);
        while allocated(&image) < empty + 38 * MIB && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let written = allocated(&image);
        std::fs::remove_file(&big).unwrap();
        std::fs::File::open(disk.build_dir())
            .unwrap()
            .sync_all()
            .unwrap();
        disk.trim().await;
        let deadline = Instant::now() + Duration::from_secs(10);
        while allocated(&image) > empty + 4 * MIB && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let deleted = allocated(&image);
        eprintln!(
            "image allocated: {} KiB empty, {} KiB with 40 MiB written, {} KiB after deleting it",
            empty / 1024,
            written / 1024,
            deleted / 1024
        );
        assert!(written >= empty + 38 * MIB, "{written} vs {empty}");
        assert!(deleted <= empty + 4 * MIB, "{deleted} vs {empty}");

        // Past the bound: ENOSPC, and nothing left.
        let available = disk.available_bytes().unwrap();
        assert!(available > 56 * MIB, "{available}");
        let mut file = std::fs::File::create(disk.build_dir().join("fill")).unwrap();
        let mut written = 0;
        let error = loop {
            match file.write_all(&[0xa5; MIB as usize]) {
                Ok(()) => written += MIB,
                Err(e) => break e,
            }
            assert!(
                written <= 64 * MIB,
                "wrote {written} bytes to a 64 MiB disk"
            );
        };
        assert_eq!(error.raw_os_error(), Some(28), "{error}");
        assert_eq!(error.kind(), std::io::ErrorKind::StorageFull);
        let left = disk.available_bytes().unwrap();
        eprintln!(
            "64 MiB disk: {} KiB available when empty, ENOSPC after {} MiB, {} KiB available then",
            available / 1024,
            written / MIB,
            left / 1024
        );
        assert!(left < MIB, "{left} bytes still available");
        drop(file);
        assert!(allocated(&image) <= 64 * MIB);

        // What the crate's user may do: its own entries, not the directories nor root's files.
        set_mode(&root.path, 0o755).await.unwrap();
        set_mode(disk.dir(), 0o755).await.unwrap();
        let mnt = disk.mount_point();
        assert!(crate_user_may(&mnt, &["touch", "build/mine", "cargo/mine"]));
        assert!(crate_user_may(&mnt, &["rm", "build/mine", "cargo/mine"]));
        assert!(!crate_user_may(&mnt, &["rm", "-f", "build/fill"]));
        assert!(!crate_user_may(&mnt, &["chmod", "700", "build"]));
        assert!(!crate_user_may(&mnt, &["chmod", "700", "cargo"]));
        assert!(!crate_user_may(&mnt, &["rmdir", "cargo"]));
        assert!(!crate_user_may(&mnt, &["mv", "build", "elsewhere"]));
        assert!(!crate_user_may(&mnt, &["touch", "beside"]));
        // The crate's user gets ENOSPC too: nothing is kept back for root.
        std::fs::remove_file(disk.build_dir().join("fill")).unwrap();
        let dd = as_crate_user(&mnt, &["dd", "if=/dev/zero", "of=cargo/fill", "bs=1M"]);
        let stderr = String::from_utf8_lossy(&dd.stderr);
        assert!(!dd.status.success());
        assert!(stderr.contains("No space left on device"), "{stderr}");
        let filled = std::fs::metadata(disk.cargo_dir().join("fill"))
            .unwrap()
            .len();
        assert!(filled > 56 * MIB, "{filled}");

        let dir = disk.dir().to_owned();
        disk.remove().await;
        assert!(mounts_under(&dir).unwrap().is_empty());
        assert!(!dir.exists());
        let loops = run(command("losetup").arg("--list")).await.unwrap();
        assert!(!loops.contains(dir.to_str().unwrap()), "{loops}");
    }

    #[tokio::test]
    async fn a_20_gib_disk_is_made_in_moments() {
        if needs_root() {
            return;
        }
        let root = TestRoot::new();
        let started = Instant::now();
        let disk = SlotDisk::create(&root.path, 0, 20 << 30).await.unwrap();
        let made = started.elapsed();
        let available = disk.available_bytes().unwrap();
        let allocated = allocated(&disk.image());
        let started = Instant::now();
        disk.remove().await;
        let removed = started.elapsed();
        eprintln!(
            "20 GiB disk: made (mkfs.ext4 and mount) in {made:?}, {:.2} GiB available, image \
             takes {} KiB of the host, removed in {removed:?}",
            available as f64 / (1u64 << 30) as f64,
            allocated / 1024
        );
        assert!(made < Duration::from_secs(10), "{made:?}");
        assert!(available > 19 << 30, "{available}");
        assert!(allocated < 64 * MIB, "{allocated}");
        assert!(mounts_under(&root.path).unwrap().is_empty());
    }

    #[test]
    fn preflight_passes_here_and_warns_when_full_disks_would_not_fit() {
        if needs_root() {
            return;
        }
        let root = TestRoot::new();
        let disks = root.path.join("not/made/yet");
        assert_eq!(preflight(&disks, 2, 16 * MIB).unwrap(), None);
        let warning = preflight(&disks, 1000, 1 << 40).unwrap().unwrap();
        assert!(
            warning.contains("1000 slot disks of 1024.0 GiB"),
            "{warning}"
        );
        assert!(
            warning.contains(&root.path.display().to_string()),
            "{warning}"
        );
        assert!(!disks.exists());
    }

    #[tokio::test]
    async fn create_replaces_a_disk_of_the_same_slot() {
        if needs_root() {
            return;
        }
        let root = TestRoot::new();
        let first = SlotDisk::create(&root.path, 5, 16 * MIB).await.unwrap();
        std::fs::write(first.build_dir().join("old"), "old").unwrap();
        let second = SlotDisk::create(&root.path, 5, 16 * MIB).await.unwrap();
        assert_eq!(first.dir(), second.dir());
        assert_eq!(mounts_under(second.dir()).unwrap(), [second.mount_point()]);
        assert!(!second.build_dir().join("old").exists());
        second.remove().await;
        assert!(!first.dir().exists());
    }

    #[tokio::test]
    async fn leftovers_of_dead_agents_on_this_host_are_removed() {
        if needs_root() {
            return;
        }
        assert_eq!(
            remove_leftovers(Path::new("/nonexistent/crater-disks"))
                .await
                .unwrap(),
            0
        );
        let root = TestRoot::new();
        let host = crate::docker::hostname();
        let mut gone = std::process::Command::new("true").spawn().unwrap();
        let dead = gone.id();
        gone.wait().unwrap();
        assert_eq!(owner_token(dead), None);
        let sleeper = KillOnDrop(
            std::process::Command::new("sleep")
                .arg("600")
                .spawn()
                .unwrap(),
        );
        let live = sleeper.0.id();

        let dead_disk = disk_at(root.path.join(folder_name(&host, dead, 0)), None).await;
        let live_token = owner_token(live).unwrap();
        let live_disk = disk_at(
            root.path.join(folder_name(&host, live, 1)),
            Some(&live_token),
        )
        .await;
        // The pid runs, but it is not the process that made the disk (it was used again).
        let reused_disk = disk_at(
            root.path.join(folder_name(&host, live, 2)),
            Some("another-boot 12345"),
        )
        .await;
        let own_disk = SlotDisk::create(&root.path, 3, 16 * MIB).await.unwrap();
        let other_host = root.path.join(folder_name("another-host", dead, 4));
        let unrelated = root.path.join("not-a-slot-disk");
        for dir in [&other_host, &unrelated] {
            std::fs::create_dir(dir).unwrap();
        }

        assert_eq!(remove_leftovers(&root.path).await.unwrap(), 2);
        for gone in [&dead_disk, &reused_disk] {
            assert!(!gone.dir().exists(), "{}", gone.dir().display());
            assert!(mounts_under(gone.dir()).unwrap().is_empty());
        }
        for kept in [&live_disk, &own_disk] {
            assert_eq!(mounts_under(kept.dir()).unwrap(), [kept.mount_point()]);
        }
        assert!(other_host.exists() && unrelated.exists());

        drop(sleeper);
        assert_eq!(remove_leftovers(&root.path).await.unwrap(), 1);
        assert!(!live_disk.dir().exists());
        assert_eq!(mounts_under(&root.path).unwrap(), [own_disk.mount_point()]);
        own_disk.remove().await;
        assert!(other_host.exists() && unrelated.exists());
    }
}
