//! The archives: every raw log of a tool in `{tool}/raw.tar.zst`, every log page in
//! `{tool}/html.tar.zst`, as `{name}/{version}` inside (pages with `.html`).
//!
//! Logs can be a gigabyte each and there are hundreds of thousands, so an archive is streamed:
//! each log is read from the store (a bucket's object downloaded to a scratch file first) into
//! tar, zstd and a file on disk, and the file is then stored; nothing is held whole in memory.
//! zstd rather than the seed's xz: at level 3 it compresses logs many times faster, to a size
//! close to xz's (BENCHMARKS.md), and `tar --zstd -x` reads it.

use super::catalog::Catalog;
use super::source;
use crate::results::store::{Store, html_key, raw_key};
use anyhow::{Context, Result};
use futures::StreamExt;
use std::path::Path;

const LEVEL: i32 = 3;
/// Logs fetched from the store at once, ahead of the one being added.
const FETCH_CONCURRENCY: usize = 16;

/// Which logs an archive holds.
#[derive(Debug, Clone, Copy)]
pub enum Kind {
    Raw,
    Html,
}

impl Kind {
    pub fn file_name(self) -> &'static str {
        match self {
            Kind::Raw => "raw.tar.zst",
            Kind::Html => "html.tar.zst",
        }
    }
}

/// Builds one archive of `catalog`'s logs in `scratch` and stores it as `{tool}/{file name}`;
/// returns how many logs it holds. A log missing from the store is left out with a warning.
pub async fn write(store: &Store, catalog: &Catalog, kind: Kind, scratch: &Path) -> Result<u64> {
    let tool = catalog.tool;
    let path = scratch.join(kind.file_name());
    let file =
        std::fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?;
    let encoder = zstd::Encoder::new(std::io::BufWriter::new(file), LEVEL)?;
    let mut tar = tar::Builder::new(encoder);
    // Logs are fetched a few at a time (from a bucket each is a request: one at a time, 200,000
    // of them would take hours) and added in the catalog's order.
    let mut fetches = futures::stream::iter(catalog.all().enumerate().map(|(i, record)| {
        let (key, inside) = match kind {
            Kind::Raw => (
                raw_key(tool, &record.name, &record.version),
                format!("{}/{}", record.name, record.version),
            ),
            Kind::Html => (
                html_key(tool, &record.name, &record.version),
                format!("{}/{}.html", record.name, record.version),
            ),
        };
        let mtime = time::OffsetDateTime::parse(
            &record.finished_at,
            &time::format_description::well_known::Rfc3339,
        )
        .map(|t| t.unix_timestamp().max(0) as u64)
        .unwrap_or(0);
        let copy = scratch.join(format!("log-{i}"));
        async move {
            let fetched = source::fetch_to_file(store, &key, &copy).await;
            (key, inside, mtime, copy, fetched)
        }
    }))
    .buffered(FETCH_CONCURRENCY);
    let mut count = 0;
    while let Some((key, inside, mtime, copy, fetched)) = fetches.next().await {
        let Some(log) = fetched? else {
            tracing::warn!("{key} is missing: left out of {}", kind.file_name());
            continue;
        };
        let tar_ref = &mut tar;
        let added = tokio::task::block_in_place(|| -> Result<()> {
            let mut input = std::fs::File::open(&log)?;
            let mut header = tar::Header::new_gnu();
            header.set_size(input.metadata()?.len());
            header.set_mode(0o644);
            header.set_mtime(mtime);
            tar_ref
                .append_data(&mut header, &inside, &mut input)
                .with_context(|| format!("adding {key} to {}", kind.file_name()))
        });
        if log == copy {
            std::fs::remove_file(&copy).ok();
        }
        added?;
        count += 1;
    }
    let encoder = tar.into_inner()?;
    let mut out = encoder.finish()?;
    std::io::Write::flush(&mut out)?;
    drop(out);
    let key = format!("{tool}/{}", kind.file_name());
    source::write_file(store, &key, &path, "application/zstd").await?;
    std::fs::remove_file(&path).ok();
    Ok(count)
}
