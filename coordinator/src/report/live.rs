//! Keeping the pages current while `run` or `serve` works.
//!
//! The live report holds the tool's catalog in memory: loaded from the store once at start (in
//! the background: the run does not wait for it; tried again at each tick if the store cannot
//! be read, and nothing is drawn until it is), then told of each result as the uploader stores
//! it. Every `--report-every` it renders the pages if anything changed and writes the
//! files that differ, on the blocking pool, off the path of results; and once more at the end.
//! `results.jsonl`, the one large file, is rewritten at most every [`SNAPSHOT_EVERY`].
//! A failed write is logged and tried at the next tick: the pages are never worth a result.

use super::catalog::{self, Catalog, SNAPSHOT};
use super::site;
use super::write::SiteWriter;
use crate::results::record::ResultRecord;
use crate::results::store::Store;
use crate::results::uploads::OnStored;
use crater_proto::tool::Tool;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// `results.jsonl` holds every verdict (115 MB for 200,000): while a run goes on it is rewritten
/// at most this often, the pages at every tick; at the end it is written with them.
const SNAPSHOT_EVERY: Duration = Duration::from_secs(30 * 60);

/// The task that keeps the pages current.
pub struct LiveReport {
    recorder: OnStored,
    finish: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl LiveReport {
    pub fn start(store: Store, tool: Tool, every: Duration) -> LiveReport {
        let (sender, receiver) = mpsc::unbounded_channel();
        let finish = CancellationToken::new();
        let task = tokio::spawn(keep_current(store, tool, every, receiver, finish.clone()));
        LiveReport {
            recorder: sender,
            finish,
            task,
        }
    }

    /// What the uploads tell of each stored result.
    pub fn recorder(&self) -> OnStored {
        self.recorder.clone()
    }

    /// Renders the pages a last time with every result recorded so far, and ends.
    pub async fn finish(self) {
        self.finish.cancel();
        let _ = self.task.await;
    }
}

async fn keep_current(
    store: Store,
    tool: Tool,
    every: Duration,
    mut stored: mpsc::UnboundedReceiver<ResultRecord>,
    finish: CancellationToken,
) {
    // Until the store's catalog is loaded, results wait here: pages drawn from this run's results
    // alone would replace complete ones with a partial view.
    let mut pending: Vec<ResultRecord> = Vec::new();
    let mut catalog: Option<Arc<Catalog>> = None;
    let mut writer = SiteWriter::new(store.clone());
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut changed = true;
    let mut snapshot_due = tokio::time::Instant::now();
    loop {
        tokio::select! {
            Some(record) = stored.recv() => {
                match &mut catalog {
                    Some(catalog) => Arc::make_mut(catalog).insert(record),
                    None => pending.push(record),
                }
                changed = true;
            }
            _ = tick.tick() => {
                load_once(&store, tool, &mut catalog, &mut pending).await;
                if let Some(catalog) = &catalog && changed {
                    changed = false;
                    let with_snapshot = tokio::time::Instant::now() >= snapshot_due;
                    if with_snapshot {
                        snapshot_due = tokio::time::Instant::now() + SNAPSHOT_EVERY;
                    }
                    render(catalog, &store, &mut writer, with_snapshot).await;
                }
            }
            () = finish.cancelled() => break,
        }
    }
    while let Ok(record) = stored.try_recv() {
        pending.push(record);
        changed = true;
    }
    load_once(&store, tool, &mut catalog, &mut pending).await;
    match &mut catalog {
        Some(catalog) => {
            for record in pending.drain(..) {
                Arc::make_mut(catalog).insert(record);
            }
            if changed {
                render(catalog, &store, &mut writer, true).await;
            }
        }
        None => tracing::warn!(
            "the report pages were not updated (the store's results could not be read); \
             `crater-at-home report` makes them"
        ),
    }
}

/// Loads the catalog if it is not loaded yet, adding the results that waited for it.
async fn load_once(
    store: &Store,
    tool: Tool,
    catalog: &mut Option<Arc<Catalog>>,
    pending: &mut Vec<ResultRecord>,
) {
    if catalog.is_some() {
        return;
    }
    match catalog::load(store, tool, false).await {
        Ok((mut loaded, _)) => {
            for record in pending.drain(..) {
                loaded.insert(record);
            }
            *catalog = Some(Arc::new(loaded));
        }
        Err(e) => {
            tracing::warn!("reading the results for the report pages (tried again later): {e:#}")
        }
    }
}

/// Renders and writes the pages; `results.jsonl` too when `with_snapshot`.
async fn render(
    catalog: &Arc<Catalog>,
    store: &Store,
    writer: &mut SiteWriter,
    with_snapshot: bool,
) {
    let catalog = catalog.clone();
    let context = super::context(store, catalog.tool).await;
    let pages = tokio::task::spawn_blocking(move || {
        let mut pages = site::render(&catalog, &context);
        if !with_snapshot {
            pages.retain(|page| !page.key.ends_with(SNAPSHOT));
        }
        pages
    })
    .await;
    let written = match pages {
        Ok(pages) => writer.write(pages).await,
        Err(e) => Err(e.into()),
    };
    match written {
        Ok(written) => tracing::debug!(
            "report pages: {} written ({} bytes), {} unchanged",
            written.files,
            written.bytes,
            written.unchanged
        ),
        Err(e) => tracing::warn!("updating the report pages failed (tried again later): {e:#}"),
    }
}
