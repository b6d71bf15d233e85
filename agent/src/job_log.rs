//! A job's log on its way to the coordinator: written to the job's file in [`Held`], from which
//! the [`link`](crate::link) sends it, with its length and SHA-256 kept for the `JobDone`.
//!
//! An output bomb cannot fill the agent's disk or memory: past the job's `max_log_bytes` nothing
//! more is written, and only the last [`LOG_TAIL_BYTES`] are kept in a ring, written at the end
//! after a marker, because the end of a log is where the failure usually is.

use crate::held::{Held, LogFile};
use crate::slot::LogSink;
use sha2::{Digest, Sha256};
use std::collections::VecDeque;
use std::sync::Arc;

/// How much of the end of a log is kept when it passes its size limit.
pub const LOG_TAIL_BYTES: usize = 64 * 1024;

/// A job's log on its way to the coordinator, through its file in [`Held`].
///
/// Past `max_bytes` (an output bomb) nothing more is written; the last [`LOG_TAIL_BYTES`] are
/// kept in a ring and written at the end after a marker, so memory stays bounded and the end of
/// the log, where the failure usually is, survives.
pub struct JobLog {
    held: Arc<Held>,
    file: LogFile,
    offset: u64,
    sha: Sha256,
    /// 0: no limit.
    max_bytes: u64,
    tail: VecDeque<u8>,
    dropped: u64,
    /// Writing the file failed (the agent's disk is full): the log is cut there.
    failed: Option<String>,
}

/// What a finished [`JobLog`] kept.
pub struct KeptLog {
    pub bytes: u64,
    pub sha256: String,
    /// Bytes dropped from the middle by the size limit.
    pub dropped: u64,
    pub failed: Option<String>,
}

impl JobLog {
    pub fn new(held: Arc<Held>, file: LogFile, max_bytes: u64) -> JobLog {
        JobLog {
            held,
            file,
            offset: 0,
            sha: Sha256::new(),
            max_bytes,
            tail: VecDeque::new(),
            dropped: 0,
            failed: None,
        }
    }

    /// A line from the harness itself, set apart from the crate's output.
    pub async fn banner(&mut self, text: &str) {
        tracing::warn!(job = self.file.id, "{text}");
        let line = format!("\r\n\x1b[1;31m[crater-at-home] {text}\x1b[0m\r\n");
        self.write(line.into_bytes()).await;
    }

    fn keep(&mut self, bytes: &[u8]) {
        if self.failed.is_some() {
            return;
        }
        match self.held.write(&mut self.file, bytes) {
            Ok(()) => {
                self.sha.update(bytes);
                self.offset += bytes.len() as u64;
            }
            Err(e) => {
                tracing::error!("cannot write a job's log: {e}");
                self.failed = Some(e.to_string());
            }
        }
    }

    /// Writes what the size limit held back.
    pub async fn finish(mut self) -> KeptLog {
        if !self.tail.is_empty() || self.dropped > 0 {
            let marker = format!(
                "\r\n\x1b[1;31m[crater-at-home] log truncated: {} bytes omitted after the first {} \
                 (--max-log-bytes); the last {} bytes follow\x1b[0m\r\n",
                self.dropped,
                self.max_bytes,
                self.tail.len()
            );
            let tail: Vec<u8> = std::mem::take(&mut self.tail).into();
            self.keep(marker.as_bytes());
            self.keep(&tail);
        }
        KeptLog {
            bytes: self.offset,
            sha256: hex::encode(self.sha.finalize()),
            dropped: self.dropped,
            failed: self.failed,
        }
    }
}

impl LogSink for JobLog {
    async fn write(&mut self, mut bytes: Vec<u8>) {
        if self.max_bytes > 0 && self.offset + bytes.len() as u64 > self.max_bytes {
            let room = self.max_bytes.saturating_sub(self.offset) as usize;
            let over = bytes.split_off(room.min(bytes.len()));
            self.tail.extend(over);
            if self.tail.len() > LOG_TAIL_BYTES {
                let excess = self.tail.len() - LOG_TAIL_BYTES;
                self.tail.drain(..excess);
                self.dropped += excess as u64;
            }
        }
        if !bytes.is_empty() {
            self.keep(&bytes);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crater_proto::pb;

    /// Feeds `pieces` through a JobLog limited to `max` and returns what its file holds.
    async fn through_log(max: u64, pieces: Vec<Vec<u8>>) -> (Vec<u8>, u64, u64, String) {
        let held = Arc::new(Held::new().unwrap());
        let file = held.start(&pb::Assign::default()).unwrap();
        let mut log = JobLog::new(held.clone(), file, max);
        for piece in pieces {
            log.write(piece).await;
        }
        let kept = log.finish().await;
        let pending = held.pending();
        assert_eq!(pending[0].written, kept.bytes, "the file has every byte");
        let received = std::fs::read(&pending[0].path).unwrap();
        assert_eq!(hex::encode(Sha256::digest(&received)), kept.sha256);
        (received, kept.bytes, kept.dropped, kept.sha256)
    }

    #[tokio::test]
    async fn a_log_under_the_limit_passes_unchanged() {
        let (received, bytes, dropped, _) = through_log(1000, vec![b"abc".to_vec(); 10]).await;
        assert_eq!(received, b"abc".repeat(10));
        assert_eq!((bytes, dropped), (30, 0));
    }

    #[tokio::test]
    async fn an_output_bomb_keeps_the_head_a_marker_and_the_last_64_kib() {
        let mb = vec![b'x'; 1 << 20];
        let mut pieces = vec![b"HEAD".to_vec()];
        pieces.extend(std::iter::repeat_n(mb, 8));
        pieces.push(b"THE END".to_vec());
        let total = 4 + 8 * (1 << 20) + 7;
        let (received, bytes, dropped, _) = through_log(1 << 20, pieces).await;
        assert!(received.starts_with(b"HEAD"));
        assert!(received.ends_with(b"THE END"));
        let text = String::from_utf8_lossy(&received);
        assert!(text.contains("log truncated"), "a clear marker");
        let kept = (1 << 20) + LOG_TAIL_BYTES as u64;
        assert_eq!(dropped, total - kept);
        assert!(bytes < kept + 300, "head + marker + tail only: {bytes}");
        assert_eq!(bytes, received.len() as u64);
    }
}
