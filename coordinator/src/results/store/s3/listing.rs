//! Reading the bucket in bulk: listing a prefix, every page of it (resuming a run needs which
//! crates are finished; the report, which results exist and which changed since its last
//! snapshot), and downloading an object to a file (a raw log for the report's archive can be a
//! gigabyte, so it is streamed to disk, never held in memory). A large listing takes a while,
//! so progress goes to a spinner on stderr.

use super::{ErrorChain, S3Store};
use anyhow::{Context, Result, anyhow};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};
use tokio::io::AsyncWriteExt;

/// One listed object.
#[derive(Debug, Clone)]
pub struct Listed {
    /// The key, without the listed prefix.
    pub relative: String,
    pub modified: Option<SystemTime>,
}

impl S3Store {
    /// Every object under `prefix`, page after page.
    pub async fn list(&self, prefix: &str) -> Result<Vec<Listed>> {
        let spinner = indicatif::ProgressBar::new_spinner()
            .with_message(format!("listing s3://{}/{prefix}", self.bucket));
        spinner.enable_steady_tick(Duration::from_millis(200));
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(prefix)
            .into_paginator()
            .send();
        let mut listed = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| {
                anyhow!("listing s3://{}/{prefix}: {}", self.bucket, ErrorChain(&e))
            })?;
            for object in page.contents() {
                let Some(relative) = object.key().and_then(|k| k.strip_prefix(prefix)) else {
                    continue;
                };
                let modified = object
                    .last_modified()
                    .and_then(|t| SystemTime::try_from(*t).ok());
                listed.push(Listed {
                    relative: relative.to_owned(),
                    modified,
                });
            }
            spinner.set_message(format!(
                "listing s3://{}/{prefix}: {}",
                self.bucket,
                listed.len()
            ));
        }
        spinner.finish_and_clear();
        Ok(listed)
    }

    /// Whether anything is stored under `prefix`.
    pub async fn has_prefix(&self, prefix: &str) -> Result<bool> {
        let page = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(prefix)
            .max_keys(1)
            .send()
            .await
            .map_err(|e| anyhow!("listing s3://{}/{prefix}: {}", self.bucket, ErrorChain(&e)))?;
        Ok(!page.contents().is_empty())
    }

    /// Streams an object into `path`; `None` when there is no such key.
    pub async fn download(&self, key: &str, path: &Path) -> Result<Option<PathBuf>> {
        let Some(object) = self.get_object(key).await? else {
            return Ok(None);
        };
        let mut body = object.body.into_async_read();
        let mut file = tokio::fs::File::create(path)
            .await
            .with_context(|| format!("creating {}", path.display()))?;
        tokio::io::copy(&mut body, &mut file)
            .await
            .with_context(|| format!("reading s3://{}/{key}", self.bucket))?;
        file.flush().await?;
        Ok(Some(path.to_owned()))
    }
}
