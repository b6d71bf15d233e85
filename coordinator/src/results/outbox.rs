//! The outbox: finished results on local disk, waiting for the store to take them.
//!
//! A job's result is *finished* once it is committed here (its log moved in, then its JSON
//! record written, both on the spool's filesystem); the uploader
//! ([`uploads`](super::uploads)) then claims entries, oldest first, several at once, and stores
//! each, retrying with backoff for as long as it takes; an entry leaves the outbox only once the
//! store has all of it. So an
//! unreachable bucket costs disk, not results, and a coordinator killed at any moment finds its
//! committed results here at the next start and stores them instead of running those crates
//! again. The size of what waits is bounded by `--spool-max-gb`: past it the coordinator hands
//! out no new work (backpressure) until the uploads drain.
//!
//! The outbox knows nothing of stores: it is the on-disk queue between the result path and the
//! uploader, so the stores can read its entries without it depending on them.
//!
//! The spool directory is locked for the life of the process, so two coordinators never share
//! one; running-job logs left there by a dead process are deleted at open (those jobs have no
//! result and simply run again).

use crate::results::record::ResultRecord;
use anyhow::{Context, Result, bail};
use crater_proto::tool::Tool;
use std::collections::{HashSet, VecDeque};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::{Notify, watch};

const RECORD_FILE: &str = "result.json";
const RAW_FILE: &str = "raw";

/// One committed result.
#[derive(Debug, Clone)]
pub struct Entry {
    pub dir: PathBuf,
    pub tool: Tool,
    pub record: ResultRecord,
    pub bytes: u64,
}

impl Entry {
    /// The raw log.
    pub fn raw_path(&self) -> PathBuf {
        self.dir.join(RAW_FILE)
    }

    /// Scratch space for the HTML page, for stores that upload it.
    pub fn html_path(&self) -> PathBuf {
        self.dir.join("page.html")
    }
}

/// What waits to be stored.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Backlog {
    pub entries: usize,
    pub bytes: u64,
    /// Why the last attempt to store an entry failed, while storing keeps failing.
    pub failing: Option<String>,
    /// That failure needs a person (access denied, a request the server refuses), not time.
    pub permanent: bool,
    /// When storing began to fail (since the last entry stored).
    pub failing_since: Option<std::time::Instant>,
}

#[derive(Clone)]
pub struct Outbox {
    inner: Arc<Inner>,
}

struct Inner {
    spool: PathBuf,
    dir: PathBuf,
    max_bytes: u64,
    queue: Mutex<Queue>,
    wake: Notify,
    backlog: watch::Sender<Backlog>,
    last_seq: AtomicU64,
    /// Held (locked) for the life of the process.
    _lock: std::fs::File,
}

impl Outbox {
    /// Opens (and locks) the spool at `spool`, recovering the entries an earlier process
    /// committed and deleting what it left half-done.
    pub fn open(spool: &Path, max_bytes: u64) -> Result<Outbox> {
        let dir = spool.join("outbox");
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let lock_path = spool.join("lock");
        let lock = std::fs::File::create(&lock_path)
            .with_context(|| format!("creating {}", lock_path.display()))?;
        if lock.try_lock().is_err() {
            bail!(
                "another crater-at-home process is using the spool {} (the same --out); \
                 wait for it or give this one another --out",
                spool.display()
            );
        }
        remove_stale_logs(spool)?;
        let mut entries = Vec::new();
        let mut names: Vec<PathBuf> = std::fs::read_dir(&dir)?
            .map(|e| e.map(|e| e.path()))
            .collect::<std::io::Result<_>>()?;
        names.sort();
        for path in names {
            match read_entry(&path) {
                Some(entry) => entries.push(entry),
                None => {
                    tracing::info!("removing a half-committed result {}", path.display());
                    let _ = std::fs::remove_dir_all(&path);
                }
            }
        }
        let backlog = Backlog {
            entries: entries.len(),
            bytes: entries.iter().map(|e| e.bytes).sum(),
            ..Backlog::default()
        };
        Ok(Outbox {
            inner: Arc::new(Inner {
                spool: spool.to_owned(),
                dir,
                max_bytes,
                queue: Mutex::new(Queue {
                    entries: entries.into(),
                    claimed: HashSet::new(),
                }),
                wake: Notify::new(),
                backlog: watch::channel(backlog).0,
                last_seq: AtomicU64::new(0),
                _lock: lock,
            }),
        })
    }

    /// Where running jobs' logs are spooled (the outbox's filesystem, so committing renames).
    pub fn spool_dir(&self) -> &Path {
        &self.inner.spool
    }

    /// The entries waiting now, oldest first.
    pub fn entries(&self) -> Vec<Entry> {
        self.queue().entries.iter().cloned().collect()
    }

    pub fn backlog(&self) -> watch::Receiver<Backlog> {
        self.inner.backlog.subscribe()
    }

    /// More is waiting than `--spool-max-gb` allows: hand out no new work.
    pub fn over_bound(&self) -> bool {
        self.inner.backlog.borrow().bytes > self.inner.max_bytes
    }

    /// Commits a finished result: `log` is moved in, then the record written. Blocking I/O.
    pub fn commit(&self, tool: Tool, record: &ResultRecord, log: &Path) -> Result<()> {
        let seq = self.next_seq();
        let dir = self.inner.dir.join(format!(
            "{seq:020}-{tool}-{}-{}",
            record.name, record.version
        ));
        let result = (|| -> Result<Entry> {
            std::fs::create_dir(&dir)?;
            let raw = dir.join(RAW_FILE);
            std::fs::rename(log, &raw)
                .with_context(|| format!("moving {} into the outbox", log.display()))?;
            let tmp = dir.join("result.json.tmp");
            let mut file = std::fs::File::create(&tmp)?;
            serde_json::to_writer_pretty(&mut file, record)?;
            file.write_all(b"\n")?;
            file.sync_all()?;
            std::fs::File::open(&raw)?.sync_all()?;
            std::fs::rename(&tmp, dir.join(RECORD_FILE))?;
            std::fs::File::open(&dir)?.sync_all()?;
            Ok(Entry {
                bytes: std::fs::metadata(&raw)?.len(),
                dir: dir.clone(),
                tool,
                record: record.clone(),
            })
        })();
        let entry = match result {
            Ok(entry) => entry,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&dir);
                return Err(e.context(format!("committing the result to {}", dir.display())));
            }
        };
        let bytes = entry.bytes;
        self.queue().entries.push_back(entry);
        self.inner.backlog.send_modify(|b| {
            b.entries += 1;
            b.bytes += bytes;
        });
        self.inner.wake.notify_one();
        Ok(())
    }

    /// Commits a result whose whole log is `text` (a `skipped` verdict).
    pub fn commit_text(&self, tool: Tool, record: &ResultRecord, text: &str) -> Result<()> {
        let log = self
            .inner
            .spool
            .join(format!("text-{}.log", self.next_seq()));
        std::fs::write(&log, text).with_context(|| format!("writing {}", log.display()))?;
        self.commit(tool, record, &log)
    }

    /// The oldest entry nobody is storing yet, once there is one: it is the caller's to store.
    /// It stays in the outbox until [`Outbox::stored`]. Meant for one caller at a time (the
    /// uploader's loop).
    pub async fn claim(&self) -> Entry {
        loop {
            {
                let mut queue = self.queue();
                let Queue { entries, claimed } = &mut *queue;
                if let Some(entry) = entries.iter().find(|e| !claimed.contains(&e.dir)) {
                    claimed.insert(entry.dir.clone());
                    return entry.clone();
                }
            }
            // A commit between the check and here leaves a permit, so no wake-up is lost.
            self.inner.wake.notified().await;
        }
    }

    /// The store has all of `entry` (a claimed one): it leaves the outbox.
    pub fn stored(&self, entry: &Entry) {
        if let Err(e) = std::fs::remove_dir_all(&entry.dir) {
            // Stored all the same; a leftover directory is re-published (harmlessly) at the
            // next start.
            tracing::warn!("removing {}: {e}", entry.dir.display());
        }
        {
            let mut queue = self.queue();
            queue.claimed.remove(&entry.dir);
            queue.entries.retain(|e| e.dir != entry.dir);
        }
        self.inner.backlog.send_modify(|b| {
            b.entries -= 1;
            b.bytes -= entry.bytes;
            b.failing = None;
            b.permanent = false;
            b.failing_since = None;
        });
    }

    /// Storing an entry failed with `error` (`permanent`: retrying alone will not help); shown
    /// in the backlog until an entry is stored. True when it was working until now.
    pub fn failing(&self, error: &str, permanent: bool) -> bool {
        let first = self.inner.backlog.borrow().failing.is_none();
        self.inner.backlog.send_modify(|b| {
            b.failing = Some(error.to_owned());
            b.permanent = permanent;
            b.failing_since.get_or_insert_with(std::time::Instant::now);
        });
        first
    }

    /// Resolves when nothing waits to be stored.
    pub async fn drained(&self) {
        let mut backlog = self.backlog();
        let _ = backlog.wait_for(|b| b.entries == 0).await;
    }

    fn queue(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.inner.queue.lock().expect("outbox lock poisoned")
    }

    /// Increasing across restarts (it starts from the clock), so entries sort oldest first.
    fn next_seq(&self) -> u64 {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        // Two commits in the same nanosecond (or after a clock step back) still get distinct,
        // increasing numbers.
        let next = |last: u64| (last + 1).max(now);
        let last = self
            .inner
            .last_seq
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |last| Some(next(last)))
            .expect("the update always succeeds");
        next(last)
    }
}

/// The entries in commit order, and those the uploader is storing now.
struct Queue {
    entries: VecDeque<Entry>,
    claimed: HashSet<PathBuf>,
}

fn read_entry(dir: &Path) -> Option<Entry> {
    let bytes = std::fs::read(dir.join(RECORD_FILE)).ok()?;
    let record: ResultRecord = serde_json::from_slice(&bytes).ok()?;
    let tool: Tool = record.tool.parse().ok()?;
    Some(Entry {
        bytes: std::fs::metadata(dir.join(RAW_FILE)).map_or(0, |m| m.len()),
        dir: dir.to_owned(),
        tool,
        record,
    })
}

/// Running-job logs of a dead process: their jobs have no result, so they run again.
fn remove_stale_logs(spool: &Path) -> Result<()> {
    for entry in std::fs::read_dir(spool)? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "log") {
            let _ = std::fs::remove_file(&path);
        }
    }
    Ok(())
}

/// The entries waiting in the spool at `spool`, read without taking it over (for `list`).
pub fn peek(spool: &Path) -> Vec<Entry> {
    let Ok(dir) = std::fs::read_dir(spool.join("outbox")) else {
        return Vec::new();
    };
    let mut entries: Vec<Entry> = dir.filter_map(|e| read_entry(&e.ok()?.path())).collect();
    entries.sort_by(|a, b| a.dir.cmp(&b.dir));
    entries
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::results::record::sample_record;

    /// Commits a `check` result of `name` 1.0.0 with `log` (also used by the uploader's tests).
    pub(crate) fn commit(outbox: &Outbox, name: &str, log: &str) {
        let path = outbox.spool_dir().join(format!("{name}.log"));
        std::fs::write(&path, log).unwrap();
        outbox
            .commit(Tool::Check, &sample_record(name, "1.0.0"), &path)
            .unwrap();
    }

    #[test]
    fn uploads_claim_distinct_entries_and_each_leaves_when_stored() {
        let dir = tempfile::tempdir().unwrap();
        let outbox = Outbox::open(&dir.path().join(".spool"), u64::MAX).unwrap();
        for name in ["a", "b", "c"] {
            commit(&outbox, name, "log\n");
        }
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        let (a, b) = rt.block_on(async { (outbox.claim().await, outbox.claim().await) });
        assert_eq!((a.record.name.as_str(), b.record.name.as_str()), ("a", "b"));
        outbox.stored(&b);
        let names: Vec<String> = outbox
            .entries()
            .iter()
            .map(|e| e.record.name.clone())
            .collect();
        assert_eq!(names, ["a", "c"], "b left, a is still being stored");
        let c = rt.block_on(outbox.claim());
        assert_eq!(c.record.name, "c", "a is claimed already");
        let nothing = rt.block_on(async {
            tokio::time::timeout(std::time::Duration::from_millis(50), outbox.claim()).await
        });
        assert!(nothing.is_err(), "everything is claimed: wait for a commit");
        outbox.stored(&a);
        outbox.stored(&c);
        assert_eq!(outbox.backlog().borrow().entries, 0);
    }

    #[test]
    fn committed_results_survive_a_restart_half_committed_ones_do_not() {
        let dir = tempfile::tempdir().unwrap();
        let spool = dir.path().join(".spool");
        {
            let outbox = Outbox::open(&spool, 10).unwrap();
            commit(&outbox, "first", "0123456789");
            commit(&outbox, "second", "abc");
            assert_eq!(outbox.backlog().borrow().entries, 2);
            assert_eq!(outbox.backlog().borrow().bytes, 13);
            assert!(outbox.over_bound(), "13 bytes wait, 10 allowed");
            let err = Outbox::open(&spool, 10).err().unwrap().to_string();
            assert!(err.contains("another crater-at-home process"), "{err}");
        }
        // What a crash leaves: a running job's log, and an entry without its record.
        std::fs::write(spool.join("7-0.log"), "partial").unwrap();
        let torn = spool.join("outbox/99999999999999999999-check-torn-1.0.0");
        std::fs::create_dir(&torn).unwrap();
        std::fs::write(torn.join(RAW_FILE), "log without a verdict").unwrap();

        assert_eq!(peek(&spool).len(), 2, "peek reads without the lock");
        let outbox = Outbox::open(&spool, 10).unwrap();
        let names: Vec<String> = outbox
            .entries()
            .iter()
            .map(|e| e.record.name.clone())
            .collect();
        assert_eq!(names, ["first", "second"], "oldest first");
        assert_eq!(outbox.backlog().borrow().bytes, 13);
        assert!(!torn.exists(), "the half-committed entry is gone");
        assert!(!spool.join("7-0.log").exists(), "so is the stale log");
    }

    #[test]
    fn entry_numbers_are_distinct_and_increasing_across_threads() {
        let dir = tempfile::tempdir().unwrap();
        let outbox = Outbox::open(dir.path(), u64::MAX).unwrap();
        let per_thread: Vec<Vec<u64>> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..4)
                .map(|_| scope.spawn(|| (0..1000).map(|_| outbox.next_seq()).collect()))
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for seqs in &per_thread {
            assert!(
                seqs.windows(2).all(|w| w[0] < w[1]),
                "increasing per thread"
            );
        }
        let mut all: Vec<u64> = per_thread.concat();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), 4000, "no number handed out twice");
    }
}
