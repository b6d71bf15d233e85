//! A running job's log, spooled to disk as its chunks arrive.
//!
//! The coordinator never holds a whole log in memory: chunks go straight to a file beside the
//! store (so publishing is a rename), with their length and SHA-256 kept to check against what
//! the agent says it sent.

use sha2::{Digest, Sha256};
use std::path::PathBuf;
use tokio::io::AsyncWriteExt;

/// A running job's log on disk.
pub struct Spool {
    path: PathBuf,
    file: tokio::io::BufWriter<tokio::fs::File>,
    len: u64,
    sha: Sha256,
    /// Set when a write failed or a chunk came out of order: the log is incomplete.
    pub broken: Option<String>,
}

impl Spool {
    pub async fn create(path: PathBuf) -> std::io::Result<Spool> {
        if let Some(dir) = path.parent() {
            tokio::fs::create_dir_all(dir).await?;
        }
        let file = tokio::fs::File::create(&path).await?;
        Ok(Spool {
            path,
            file: tokio::io::BufWriter::with_capacity(256 * 1024, file),
            len: 0,
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
        self.file.write_all(data).await?;
        self.sha.update(data);
        self.len += data.len() as u64;
        Ok(())
    }

    /// Closes the file: (path, bytes, SHA-256, what went wrong while spooling).
    pub async fn finish(mut self) -> anyhow::Result<(PathBuf, u64, String, Option<String>)> {
        self.file.flush().await?;
        let sha = hex::encode(self.sha.finalize());
        Ok((self.path, self.len, sha, self.broken))
    }

    pub async fn discard(self) {
        drop(self.file);
        let _ = tokio::fs::remove_file(&self.path).await;
    }
}
