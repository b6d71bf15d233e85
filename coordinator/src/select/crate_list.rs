//! Every crate on crates.io, most downloaded first: from the database dump, cached in the store.
//!
//! As the seed does, the selection is kept as `crates.json` (here `[name, version, checksum]`
//! triples, the seed's pairs plus the checksum the agent verifies downloads against) and
//! `downloads.json` (name → recent downloads) at the top of the store, and the dump (hundreds of
//! MiB) is only read again when they are older than a day or `--refresh-crates` asks for it.

use crate::select::dump::{self, DumpCrate};
use anyhow::{Context, Result};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};
use tokio::io::AsyncWriteExt;

/// Where crates.io publishes its database dump.
pub const DEFAULT_DUMP_URL: &str = "https://static.crates.io/db-dump.tar.gz";

/// The cached selection is read again from the dump past this age.
pub const MAX_CACHE_AGE: Duration = Duration::from_secs(24 * 3600);

/// The crates.io crate list, from the cache or the dump, most downloaded first.
pub async fn all_crates(
    store_root: &Path,
    dump_source: &str,
    refresh: bool,
) -> Result<Vec<DumpCrate>> {
    let crates_json = store_root.join("crates.json");
    let downloads_json = store_root.join("downloads.json");
    if !refresh && is_fresh(&crates_json) && downloads_json.exists() {
        match read_cache(&crates_json, &downloads_json) {
            Ok(crates) => {
                eprintln!(
                    "{} crates from the cached {}",
                    crates.len(),
                    crates_json.display()
                );
                return Ok(crates);
            }
            Err(e) => eprintln!("warning: ignoring the cached crate list: {e:#}"),
        }
    }
    let path = local_dump(store_root, dump_source).await?;
    eprintln!("reading the crates.io database dump {}", path.display());
    let (crates, stats) = tokio::task::spawn_blocking(move || dump::load(&path)).await??;
    eprintln!(
        "the dump lists {} crates and {} versions; {} crates have only yanked versions",
        stats.crates, stats.versions, stats.all_yanked
    );
    write_cache(&crates, &crates_json, &downloads_json)?;
    Ok(crates)
}

fn is_fresh(path: &Path) -> bool {
    std::fs::metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|modified| SystemTime::now().duration_since(modified).ok())
        .is_some_and(|age| age < MAX_CACHE_AGE)
}

fn read_cache(crates_json: &Path, downloads_json: &Path) -> Result<Vec<DumpCrate>> {
    let list: Vec<(String, String, String)> = serde_json::from_slice(&std::fs::read(crates_json)?)
        .with_context(|| format!("reading {}", crates_json.display()))?;
    let downloads: HashMap<String, u64> =
        serde_json::from_slice(&std::fs::read(downloads_json)?)
            .with_context(|| format!("reading {}", downloads_json.display()))?;
    Ok(list
        .into_iter()
        .map(|(name, version, checksum)| DumpCrate {
            downloads: downloads.get(&name).copied().unwrap_or(0),
            name,
            version,
            checksum,
        })
        .collect())
}

fn write_cache(crates: &[DumpCrate], crates_json: &Path, downloads_json: &Path) -> Result<()> {
    let list: Vec<(&str, &str, &str)> = crates
        .iter()
        .map(|c| (c.name.as_str(), c.version.as_str(), c.checksum.as_str()))
        .collect();
    let downloads: HashMap<&str, u64> = crates
        .iter()
        .map(|c| (c.name.as_str(), c.downloads))
        .collect();
    for (path, bytes) in [
        (crates_json, serde_json::to_vec(&list)?),
        (downloads_json, serde_json::to_vec(&downloads)?),
    ] {
        let tmp = path.with_extension("json.tmp");
        std::fs::write(&tmp, bytes).with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// A path as it is; a URL downloaded (streamed to disk) into the store's cache first.
async fn local_dump(store_root: &Path, source: &str) -> Result<PathBuf> {
    if !(source.starts_with("https://") || source.starts_with("http://")) {
        return Ok(PathBuf::from(source));
    }
    let dir = store_root.join(".cache");
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("db-dump.tar.gz");
    let tmp = dir.join("db-dump.tar.gz.part");
    eprintln!("downloading the crates.io database dump from {source}");
    let mut response = reqwest::get(source)
        .await
        .and_then(|r| r.error_for_status())
        .with_context(|| format!("--db-dump {source}: cannot download it"))?;
    let mut file = tokio::fs::File::create(&tmp).await?;
    while let Some(chunk) = response
        .chunk()
        .await
        .with_context(|| format!("--db-dump {source}: the download broke off"))?
    {
        file.write_all(&chunk).await?;
    }
    file.flush().await?;
    tokio::fs::rename(&tmp, &path).await?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cache_round_trips_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let crates = vec![
            DumpCrate {
                name: "serde".into(),
                version: "1.0.200".into(),
                checksum: "aa".into(),
                downloads: 900,
            },
            DumpCrate {
                name: "itoa".into(),
                version: "1.0.15".into(),
                checksum: "bb".into(),
                downloads: 800,
            },
        ];
        let (c, d) = (
            dir.path().join("crates.json"),
            dir.path().join("downloads.json"),
        );
        write_cache(&crates, &c, &d).unwrap();
        assert!(is_fresh(&c));
        assert_eq!(read_cache(&c, &d).unwrap(), crates);
        // The seed's shapes: a JSON list of entries starting [name, version], and name → count.
        let list: serde_json::Value = serde_json::from_slice(&std::fs::read(&c).unwrap()).unwrap();
        assert_eq!(list[0][0], "serde");
        assert_eq!(list[0][1], "1.0.200");
        let downloads: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&d).unwrap()).unwrap();
        assert_eq!(downloads["itoa"], 800);
    }
}
