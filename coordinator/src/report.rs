//! The report site: pages people browse and files scripts read, rendered from the stored
//! verdicts of each tool.
//!
//! # Layout
//! - [`catalog`]: every verdict of a tool, loaded from the store (through the snapshot
//!   `{tool}/results.jsonl` where it is current).
//! - [`site`]: the catalog rendered into files (pure), from the [`context`] they share: [`data`]
//!   (`summary.json`, `data.js`), [`landing`] (`index.html`), [`ub`] (`ub.html`, `ub`),
//!   [`failures`] (`failures.html`), and [`html`] (the frame and escaping of every page); their
//!   style and scripts are in `assets/`.
//! - [`write`]: into the store, skipping unchanged files; [`archive`]: the log archives.
//! - [`live`]: the pages kept current during `run` and `serve`; [`diff`]: two runs compared.
//! - [`source`]: what the report reads and writes of a store, alike for a directory and a bucket;
//!   [`synth`]: synthetic stores for tests and benchmarks.
//!
//! Every file is relative to the tool's folder and links only relatively, so the site works
//! from a local folder (file://), a bucket's website endpoint, or any static server.

pub mod archive;
pub mod catalog;
pub mod context;
pub mod data;
pub mod diff;
pub mod failures;
pub mod html;
pub mod landing;
pub mod live;
pub mod site;
pub mod source;
pub mod synth;
pub mod ub;
pub mod write;

use crate::cli::{ReportArgs, exit};
use crate::results::store::Store;
use anyhow::Result;
use crater_proto::tool::Tool;
use std::collections::HashMap;
use std::time::Instant;

/// What the pages are drawn from beside the catalog: downloads from the crate list in the
/// store, the archives that exist, and the time.
pub async fn context(store: &Store, tool: Tool) -> context::Context {
    let downloads: HashMap<String, u64> = match source::read(store, "downloads.json").await {
        Ok(Some((bytes, _))) => serde_json::from_slice(&bytes).unwrap_or_default(),
        _ => HashMap::new(),
    };
    let mut archives = Vec::new();
    for kind in [archive::Kind::Raw, archive::Kind::Html] {
        if source::exists(store, &format!("{tool}/{}", kind.file_name()))
            .await
            .unwrap_or(false)
        {
            archives.push(kind.file_name().to_owned());
        }
    }
    let log_suffix = match store {
        Store::Local(_) => crate::results::store::local::HTML_SUFFIX,
        Store::S3(_) => "",
    };
    context::Context {
        downloads,
        archives,
        generated_at: now(),
        log_suffix,
    }
}

fn now() -> String {
    time::OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .unwrap_or_else(|_| time::OffsetDateTime::now_utc())
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// `crater-at-home report`: every page of every tool (or the chosen ones), rebuilt from the
/// store, then the archives.
pub async fn report(args: ReportArgs) -> Result<u8> {
    let store = Store::open(args.bucket.s3_options(), &args.out, true).await?;
    let tools = if args.tool.is_empty() {
        source::tools(&store).await?
    } else {
        args.tool.clone()
    };
    if tools.is_empty() {
        eprintln!("{} holds no results: nothing to report", store.describe());
        return Ok(exit::OK);
    }
    let scratch = tempfile::tempdir()?;
    for tool in tools {
        let started = Instant::now();
        let (catalog, loaded) = catalog::load(&store, tool, args.full).await?;
        eprintln!(
            "{tool}: {} results ({} from {}/{}, {} read one by one)",
            loaded.listed,
            loaded.from_snapshot,
            tool,
            catalog::SNAPSHOT,
            loaded.read
        );
        if let Store::Local(local) = &store {
            // Stores written before log pages had their `.html` name.
            for record in catalog.all() {
                let page = local.html_path(tool, &record.name, &record.version);
                if page.is_file() {
                    crate::results::store::local::link_html_name(&page)?;
                }
            }
        }
        if !args.no_archives {
            for kind in [archive::Kind::Raw, archive::Kind::Html] {
                let logs = archive::write(&store, &catalog, kind, scratch.path()).await?;
                eprintln!("{tool}: {} holds {logs} logs", kind.file_name());
            }
        }
        let context = context(&store, tool).await;
        let pages = tokio::task::spawn_blocking(move || site::render(&catalog, &context)).await?;
        let written = write::SiteWriter::new(store.clone()).write(pages).await?;
        eprintln!(
            "{tool}: {} files written ({} KiB), {} unchanged, in {:.1?}: {}",
            written.files,
            written.bytes >> 10,
            written.unchanged,
            started.elapsed(),
            index_location(&store, tool)
        );
    }
    Ok(exit::OK)
}

/// Where a person opens the landing page.
fn index_location(store: &Store, tool: Tool) -> String {
    match store {
        Store::Local(local) => local
            .root()
            .join(tool.name())
            .join("index.html")
            .display()
            .to_string(),
        Store::S3(s3) => format!("s3://{}/{tool}/index.html", s3.bucket()),
    }
}
