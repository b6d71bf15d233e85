//! A running job's log, spooled to disk as its chunks arrive.
//!
//! The coordinator never holds a whole log in memory: chunks go straight to a file beside the
//! store (so publishing is a rename), with their length and SHA-256 kept to check against what
//! the agent says it sent. The file is opened for each chunk and closed again, so a thousand
//! running jobs need no thousand open files. Chunks must come in order (no gaps, so no sparse
//! files) and a job may send at most its cap (its `max_log_bytes` plus the kept tail): past it
//! the spool is broken and the result becomes an `error` that says so.

use sha2::{Digest, Sha256};
use std::path::PathBuf;
use tokio::io::AsyncWriteExt;

/// A running job's log on disk.
pub struct Spool {
    path: PathBuf,
    len: u64,
    cap: u64,
    sha: Sha256,
    /// Set when a write failed, a chunk came out of order or past the cap: the log is
    /// incomplete.
    pub broken: Option<String>,
}

impl Spool {
    pub async fn create(path: PathBuf, cap: u64) -> std::io::Result<Spool> {
        if let Some(dir) = path.parent() {
            tokio::fs::create_dir_all(dir).await?;
        }
        tokio::fs::File::create(&path).await?;
        Ok(Spool {
            path,
            len: 0,
            cap,
            sha: Sha256::new(),
            broken: None,
        })
    }

    pub async fn append(&mut self, offset: u64, data: &[u8]) -> std::io::Result<()> {
        if offset != self.len {
            // One stream delivers in order, so this is a broken agent; keep what we have.
            return Err(std::io::Error::other(format!(
                "log chunk at offset {offset}, expected {}",
                self.len
            )));
        }
        if self.len.saturating_add(data.len() as u64) > self.cap {
            return Err(std::io::Error::other(format!(
                "the agent sent more than {} log bytes, the job's --max-log-bytes and its kept \
                 tail",
                self.cap
            )));
        }
        let mut file = tokio::fs::OpenOptions::new()
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

    /// The log so far: (path, bytes, SHA-256, what went wrong while spooling).
    pub async fn finish(self) -> anyhow::Result<(PathBuf, u64, String, Option<String>)> {
        let sha = hex::encode(self.sha.finalize());
        Ok((self.path, self.len, sha, self.broken))
    }

    pub async fn discard(self) {
        let _ = tokio::fs::remove_file(&self.path).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn chunks_must_come_in_order_and_under_the_cap() {
        let dir = tempfile::tempdir().unwrap();
        let mut spool = Spool::create(dir.path().join("log"), 10).await.unwrap();
        spool.append(0, b"12345").await.unwrap();
        let gap = spool.append(1 << 40, b"x").await.unwrap_err();
        assert!(gap.to_string().contains("expected 5"), "{gap}");
        let over = spool.append(5, b"678901").await.unwrap_err();
        assert!(over.to_string().contains("more than 10"), "{over}");
        spool.append(5, b"67890").await.unwrap();
        let (path, len, _, _) = spool.finish().await.unwrap();
        assert_eq!(len, 10);
        assert_eq!(std::fs::read(path).unwrap(), b"1234567890");
    }
}
