//! Keeping the pages current while `run` or `serve` works.
//!
//! The live report holds the tool's catalog in memory: loaded from the store once at start (in
//! the background: the run does not wait for it), then told of each result as the uploader
//! stores it. Every `--report-every` it renders the pages if anything changed and writes the
//! files that differ, on the blocking pool, off the path of results; and once more at the end.
//! A failed write is logged and tried at the next tick: the pages are never worth a result.

use super::catalog::{self, Catalog};
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
    let mut catalog = Arc::new(match catalog::load(&store, tool, false).await {
        Ok((catalog, _)) => catalog,
        Err(e) => {
            tracing::warn!("the report pages show only this run's results: {e:#}");
            Catalog::new(tool)
        }
    });
    let mut writer = SiteWriter::new(store.clone());
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut changed = true;
    loop {
        tokio::select! {
            Some(record) = stored.recv() => {
                Arc::make_mut(&mut catalog).insert(record);
                changed = true;
            }
            _ = tick.tick() => if changed {
                changed = false;
                render(&catalog, &store, &mut writer).await;
            },
            () = finish.cancelled() => break,
        }
    }
    while let Ok(record) = stored.try_recv() {
        Arc::make_mut(&mut catalog).insert(record);
        changed = true;
    }
    if changed {
        render(&catalog, &store, &mut writer).await;
    }
}

async fn render(catalog: &Arc<Catalog>, store: &Store, writer: &mut SiteWriter) {
    let catalog = catalog.clone();
    let context = super::context(store, catalog.tool).await;
    let pages = tokio::task::spawn_blocking(move || site::render(&catalog, &context)).await;
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
