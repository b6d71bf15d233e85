//! A running job's log, spooled to disk as its chunks arrive.
//!
//! The coordinator never holds a whole log in memory: chunks go straight to a file beside the
//! store (so publishing is a rename), with their length and SHA-256 kept to check against what
//! the agent says it sent. The file is opened for each chunk and closed again, so a thousand
//! running jobs need no thousand open files. Chunks must come in order: a chunk that starts past
//! the end is a gap (no sparse files), and one that starts before it repeats what an agent that
//! reconnected sent again, so only its new part is kept. A job may send at most its cap (its
//! `max_log_bytes` plus the kept tail): past it the spool is broken and the result becomes an
//! `error` that says so.
//!
//! A spool's file is named after the job's tool, crate, version and attempt, so a coordinator
//! started again after a crash knows which crates were running ([`interrupted`]) and can hold
//! them for their agents to take back.

use crater_proto::tool::Tool;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use tokio::io::AsyncWriteExt;

/// Separates the parts of a spool's file name: neither crate names nor versions contain it.
const SEPARATOR: char = '@';

/// The file name of the spool of `tool`, `name`, `version`, `attempt`.
pub fn file_name(tool: Tool, name: &str, version: &str, attempt: u32) -> String {
    format!("{tool}{SEPARATOR}{name}{SEPARATOR}{version}{SEPARATOR}{attempt}.log")
}

/// The jobs (tool, crate, version) whose logs an earlier process left in `dir`: they were
/// running when it stopped. Read before the outbox clears them.
pub fn interrupted(dir: &Path) -> Vec<(Tool, String, String)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut jobs: Vec<_> = entries
        .filter_map(|e| {
            let name = e.ok()?.file_name().into_string().ok()?;
            let stem = name.strip_suffix(".log")?;
            let mut parts = stem.split(SEPARATOR);
            let tool = parts.next()?.parse().ok()?;
            let (krate, version, _attempt) = (parts.next()?, parts.next()?, parts.next()?);
            Some((tool, krate.to_owned(), version.to_owned()))
        })
        .collect();
    jobs.sort();
    jobs.dedup();
    jobs
}

/// A running job's log on disk.
pub struct Spool {
    path: PathBuf,
    len: u64,
    cap: u64,
    sha: Sha256,
    /// Set when a write failed, a chunk came out of order or past the cap: the log is
    /// incomplete.
    pub broken: Option<String>,
    /// Finished or discarded: nothing more is written.
    closed: bool,
}

/// A finished spool: the log's file, its length and SHA-256, and what went wrong while spooling.
pub struct SpooledLog {
    pub path: PathBuf,
    pub len: u64,
    pub sha256: String,
    pub broken: Option<String>,
}

impl Spool {
    /// A spool at `path` (in an existing directory); the file is made by the first chunk.
    pub fn new(path: PathBuf, cap: u64) -> Spool {
        Spool {
            path,
            len: 0,
            cap,
            sha: Sha256::new(),
            broken: None,
            closed: false,
        }
    }

    /// Bytes spooled so far: where an agent that reconnects resends from.
    pub fn spooled(&self) -> u64 {
        self.len
    }

    pub async fn append(&mut self, offset: u64, data: &[u8]) -> std::io::Result<()> {
        if self.closed {
            return Ok(());
        }
        if offset > self.len {
            // A gap: a broken agent; keep what we have.
            return Err(std::io::Error::other(format!(
                "log chunk at offset {offset}, expected {}",
                self.len
            )));
        }
        // Bytes before `len` were sent before (the agent resends from an offset it was told).
        let known = (self.len - offset).min(data.len() as u64) as usize;
        let data = &data[known..];
        if data.is_empty() {
            return Ok(());
        }
        if self.len.saturating_add(data.len() as u64) > self.cap {
            return Err(std::io::Error::other(format!(
                "the agent sent more than {} log bytes, the job's --max-log-bytes and its kept \
                 tail",
                self.cap
            )));
        }
        let mut file = tokio::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .await?;
        file.write_all(data).await?;
        // tokio's File finishes a write in the background: wait for it before the file closes.
        file.flush().await?;
        self.sha.update(data);
        self.len += data.len() as u64;
        Ok(())
    }

    /// The log so far; nothing more is appended.
    pub async fn finish(&mut self) -> std::io::Result<SpooledLog> {
        self.closed = true;
        if self.len == 0 {
            tokio::fs::File::create(&self.path).await?;
        }
        Ok(SpooledLog {
            path: self.path.clone(),
            len: self.len,
            sha256: hex::encode(std::mem::take(&mut self.sha).finalize()),
            broken: self.broken.clone(),
        })
    }

    /// Deletes what was spooled; nothing more is appended.
    pub async fn discard(&mut self) {
        self.closed = true;
        let _ = tokio::fs::remove_file(&self.path).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn chunks_must_come_in_order_and_under_the_cap() {
        let dir = tempfile::tempdir().unwrap();
        let mut spool = Spool::new(dir.path().join("log"), 10);
        spool.append(0, b"12345").await.unwrap();
        let gap = spool.append(1 << 40, b"x").await.unwrap_err();
        assert!(gap.to_string().contains("expected 5"), "{gap}");
        let over = spool.append(5, b"678901").await.unwrap_err();
        assert!(over.to_string().contains("more than 10"), "{over}");
        spool.append(5, b"67890").await.unwrap();
        let log = spool.finish().await.unwrap();
        assert_eq!(log.len, 10);
        assert_eq!(std::fs::read(log.path).unwrap(), b"1234567890");
    }

    #[tokio::test]
    async fn a_resent_chunk_adds_only_its_new_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let mut spool = Spool::new(dir.path().join("log"), 100);
        spool.append(0, b"hello ").await.unwrap();
        spool.append(0, b"hel").await.unwrap();
        spool.append(3, b"lo world").await.unwrap();
        assert_eq!(spool.spooled(), 11);
        let log = spool.finish().await.unwrap();
        assert_eq!(std::fs::read(&log.path).unwrap(), b"hello world");
        assert_eq!(log.sha256, hex::encode(Sha256::digest(b"hello world")));
        spool.append(11, b"late").await.unwrap();
        assert_eq!(std::fs::read(&log.path).unwrap(), b"hello world", "closed");
    }

    #[test]
    fn the_jobs_an_earlier_process_was_running_are_read_from_the_file_names() {
        let dir = tempfile::tempdir().unwrap();
        for (name, version, attempt) in [
            ("itoa", "1.0.11", 1),
            ("itoa", "1.0.11", 2),
            ("a-b_c", "0.1.0-rc.1+x", 1),
        ] {
            let file = file_name(Tool::Check, name, version, attempt);
            std::fs::write(dir.path().join(file), b"log").unwrap();
        }
        std::fs::write(dir.path().join("lock"), b"").unwrap();
        std::fs::write(dir.path().join("7-1.log"), b"an older name").unwrap();
        let v = |s: &str| s.to_owned();
        assert_eq!(
            interrupted(dir.path()),
            [
                (Tool::Check, v("a-b_c"), v("0.1.0-rc.1+x")),
                (Tool::Check, v("itoa"), v("1.0.11"))
            ]
        );
    }

    #[tokio::test]
    async fn an_empty_log_is_an_empty_file() {
        let dir = tempfile::tempdir().unwrap();
        let log = Spool::new(dir.path().join("log"), 10)
            .finish()
            .await
            .unwrap();
        assert_eq!(std::fs::read(log.path).unwrap(), b"");
    }
}
