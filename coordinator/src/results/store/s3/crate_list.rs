//! The crate list cache in the bucket: `crates.json` and `downloads.json` at its top, as the seed
//! keeps them, so a coordinator on another host selects from them instead of the dump (hundreds
//! of MiB, read again only when the cache is older than a day).

use super::{JSON_CONTENT_TYPE, S3Store};
use anyhow::{Context, Result, anyhow};
use std::path::Path;
use std::time::SystemTime;

/// The cache's files, at the top of the store (the seed's names).
const CRATE_LIST_FILES: [&str; 2] = ["crates.json", "downloads.json"];

impl S3Store {
    /// Brings the bucket's `crates.json` and `downloads.json` (the crate list cache) into
    /// `dir`, with the time they were stored as their modification time, so the cache's age
    /// rule applies to them. Returns that time, to tell later whether they were rewritten.
    pub async fn download_crate_list(&self, dir: &Path) -> Result<Option<SystemTime>> {
        let mut stored_at = None;
        for name in CRATE_LIST_FILES {
            let Some((bytes, stored)) = self.get(name).await? else {
                return Ok(None);
            };
            let modified = stored.unwrap_or_else(SystemTime::now);
            std::fs::create_dir_all(dir)?;
            let path = dir.join(name);
            std::fs::write(&path, &bytes).with_context(|| format!("writing {}", path.display()))?;
            std::fs::File::options()
                .write(true)
                .open(&path)?
                .set_modified(modified)?;
            stored_at = Some(stored_at.map_or(modified, |t: SystemTime| t.min(modified)));
        }
        Ok(stored_at)
    }

    /// Puts `dir`'s crate list cache into the bucket when the selection wrote it anew (it is
    /// newer than `downloaded`, what [`S3Store::download_crate_list`] found).
    pub async fn upload_crate_list(
        &self,
        dir: &Path,
        downloaded: Option<SystemTime>,
    ) -> Result<()> {
        let modified = |name: &str| {
            std::fs::metadata(dir.join(name))
                .and_then(|m| m.modified())
                .ok()
        };
        let Some(written) = modified(CRATE_LIST_FILES[0]) else {
            return Ok(()); // no dump was read
        };
        if downloaded.is_some_and(|at| written <= at) {
            return Ok(());
        }
        for name in CRATE_LIST_FILES {
            self.put_file(name, &dir.join(name), JSON_CONTENT_TYPE)
                .await
                .map_err(|e| {
                    anyhow!("storing the crate list in s3://{}/{name}: {e}", self.bucket)
                })?;
        }
        eprintln!("the crate list is cached in s3://{}/", self.bucket);
        Ok(())
    }
}
