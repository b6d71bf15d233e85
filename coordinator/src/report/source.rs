//! Reading results out of a store, and writing the site into it, for the report.
//!
//! The report only needs a few things of a store — list a tool's verdicts with their times, read
//! a verdict or any other object, write a page — and needs them the same for a local directory
//! and a bucket, so `report --out` and `report --bucket` are one code path.

use crate::results::record::ResultRecord;
use crate::results::store::local::write_atomically;
use crate::results::store::{Store, parse_result_key, result_key};
use anyhow::{Context, Result};
use crater_proto::tool::Tool;
use futures::{StreamExt, TryStreamExt};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// Verdicts read at once from a bucket (or from disk, in blocking batches).
const READ_CONCURRENCY: usize = 32;

/// One stored verdict, as listed.
#[derive(Debug, Clone)]
pub struct ListedResult {
    pub name: String,
    pub version: String,
    pub modified: Option<SystemTime>,
}

/// The tools that have results in the store.
pub async fn tools(store: &Store) -> Result<Vec<Tool>> {
    let mut found = Vec::new();
    for &tool in Tool::ALL {
        let has = match store {
            Store::Local(local) => local.root().join(tool.name()).join("results").is_dir(),
            Store::S3(s3) => s3.has_prefix(&format!("{tool}/results/")).await?,
        };
        if has {
            found.push(tool);
        }
    }
    Ok(found)
}

/// Every verdict of `tool` in the store, with when it was written.
pub async fn list_results(store: &Store, tool: Tool) -> Result<Vec<ListedResult>> {
    match store {
        Store::Local(local) => {
            let dir = local.root().join(tool.name()).join("results");
            tokio::task::spawn_blocking(move || list_local(&dir)).await?
        }
        Store::S3(s3) => Ok(s3
            .list(&format!("{tool}/results/"))
            .await?
            .into_iter()
            .filter_map(|listed| {
                let (name, version) = parse_result_key(&listed.relative)?;
                Some(ListedResult {
                    name,
                    version,
                    modified: listed.modified,
                })
            })
            .collect()),
    }
}

fn list_local(dir: &Path) -> Result<Vec<ListedResult>> {
    let mut found = Vec::new();
    let Ok(crates) = std::fs::read_dir(dir) else {
        return Ok(found);
    };
    for krate in crates {
        let krate = krate.with_context(|| format!("listing {}", dir.display()))?;
        let name = krate.file_name().to_string_lossy().into_owned();
        let Ok(versions) = std::fs::read_dir(krate.path()) else {
            continue;
        };
        for file in versions.flatten() {
            let file_name = file.file_name().to_string_lossy().into_owned();
            let Some((name, version)) = parse_result_key(&format!("{name}/{file_name}")) else {
                continue;
            };
            let modified = file.metadata().and_then(|m| m.modified()).ok();
            found.push(ListedResult {
                name,
                version,
                modified,
            });
        }
    }
    Ok(found)
}

/// The verdicts of `wanted`, read concurrently; one that cannot be read is skipped with a
/// warning naming it (a report of 200,000 crates is not lost to one bad file).
pub async fn read_results(
    store: &Store,
    tool: Tool,
    wanted: Vec<(String, String)>,
) -> Result<Vec<ResultRecord>> {
    let reads = futures::stream::iter(wanted.into_iter().map(|(name, version)| async move {
        let read = match store {
            Store::Local(local) => {
                let local = local.clone();
                let (n, v) = (name.clone(), version.clone());
                tokio::task::spawn_blocking(move || local.result(tool, &n, &v)).await?
            }
            Store::S3(s3) => s3.result(tool, &name, &version).await,
        };
        anyhow::Ok(match read {
            Ok(record) => record,
            Err(e) => {
                tracing::warn!(
                    "skipping {} in the report: {e:#}",
                    result_key(tool, &name, &version)
                );
                None
            }
        })
    }))
    .buffer_unordered(READ_CONCURRENCY);
    Ok(reads
        .try_collect::<Vec<_>>()
        .await?
        .into_iter()
        .flatten()
        .collect())
}

/// An object's bytes and when it was written, if it exists.
pub async fn read(store: &Store, key: &str) -> Result<Option<(Vec<u8>, Option<SystemTime>)>> {
    match store {
        Store::Local(local) => {
            let path = local.root().join(key);
            match std::fs::read(&path) {
                Ok(bytes) => {
                    let modified = std::fs::metadata(&path).and_then(|m| m.modified()).ok();
                    Ok(Some((bytes, modified)))
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
            }
        }
        Store::S3(s3) => Ok(s3
            .get(key)
            .await?
            .map(|(bytes, modified)| (bytes.to_vec(), modified))),
    }
}

/// Whether `key` exists.
pub async fn exists(store: &Store, key: &str) -> Result<bool> {
    match store {
        Store::Local(local) => Ok(local.root().join(key).is_file()),
        Store::S3(s3) => s3.has_prefix(key).await,
    }
}

/// Writes one object (whole, or not at all).
pub async fn write(store: &Store, key: &str, bytes: Vec<u8>, content_type: &str) -> Result<()> {
    match store {
        Store::Local(local) => {
            let path = local.root().join(key);
            tokio::task::spawn_blocking(move || {
                write_atomically(&path, |out| Ok(std::io::Write::write_all(out, &bytes)?))
            })
            .await?
        }
        Store::S3(s3) => s3
            .put_bytes(key, bytes, content_type)
            .await
            .map_err(|e| anyhow::anyhow!("storing s3://{}/{key}: {e}", s3.bucket())),
    }
}

/// Moves a file made elsewhere (an archive) to `key`: renamed into a local store when it can
/// be (a copy of gigabytes otherwise), uploaded to a bucket.
pub async fn write_file(store: &Store, key: &str, file: &Path, content_type: &str) -> Result<()> {
    match store {
        Store::Local(local) => {
            let path = local.root().join(key);
            let file = file.to_owned();
            tokio::task::spawn_blocking(move || -> Result<()> {
                if std::fs::rename(&file, &path).is_err() {
                    let partial = path.with_extension("partial");
                    std::fs::copy(&file, &partial)
                        .and_then(|_| std::fs::rename(&partial, &path))
                        .with_context(|| format!("writing {}", path.display()))?;
                }
                Ok(())
            })
            .await?
        }
        Store::S3(s3) => s3
            .put_file(key, file, content_type)
            .await
            .map_err(|e| anyhow::anyhow!("storing s3://{}/{key}: {e}", s3.bucket())),
    }
}

/// Where a log can be read from: its file in a local store, or a copy of the object made at
/// `copy`. `None` when there is no such log.
pub async fn fetch_to_file(store: &Store, key: &str, copy: &Path) -> Result<Option<PathBuf>> {
    match store {
        Store::Local(local) => {
            let path = local.root().join(key);
            Ok(path.is_file().then_some(path))
        }
        Store::S3(s3) => s3.download(key, copy).await,
    }
}
