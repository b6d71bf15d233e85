//! The uploads: the task that moves finished results from the outbox to the store, and the wait
//! for it to finish when a run ends.
//!
//! Entries are claimed oldest first and stored `--upload-concurrency` at a time (at 20–50 ms a
//! request from EC2, one at a time would cap a fleet at a few crates a second). Each is stored
//! raw log, page, then JSON, the JSON last, and retried for as long as it takes (a result must
//! not be lost to an outage); an entry leaves the outbox only once the store has all of it, so a
//! restart stores every committed result, once. At the end of a run
//! the process waits until everything is stored (or the person interrupts), showing what waits
//! and why, and otherwise says where the unstored results are kept for the next run.

use crate::results::outbox::{Entry, Outbox};
use crate::results::record::ResultRecord;
use crate::results::store::Store;
use backon::{BackoffBuilder, ExponentialBuilder};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

/// Told of each result once the store has all of it: the live report pages, which must not
/// show a result whose log is not there yet (and the uploads must not know about pages).
pub type OnStored = tokio::sync::mpsc::UnboundedSender<ResultRecord>;

/// Results stored at once unless `--upload-concurrency` says otherwise.
pub const DEFAULT_CONCURRENCY: usize = 16;

/// The uploader: stores the outbox's entries in the background while the run goes on.
pub struct Uploads {
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Uploads {
    /// Stores up to `concurrency` results at once, telling `report` (the live report pages) of
    /// each one stored.
    pub fn start(
        outbox: &Outbox,
        store: &Store,
        concurrency: usize,
        report: Option<OnStored>,
    ) -> Uploads {
        let stop = CancellationToken::new();
        let task = tokio::spawn(upload(
            outbox.clone(),
            store.clone(),
            concurrency,
            report,
            stop.clone(),
        ));
        Uploads { stop, task }
    }

    /// Waits until every finished result is stored (showing what waits, and why, when it
    /// takes a while) or `interrupt` fires; with `patience`, also gives up once storing has
    /// failed with a permanent error (one that needs a person) for that long during this wait.
    pub async fn finish(
        self,
        outbox: &Outbox,
        store: &Store,
        interrupt: &CancellationToken,
        patience: Option<Duration>,
    ) -> Finish {
        let mut backlog = outbox.backlog();
        let waiting = backlog.borrow().clone();
        let began = tokio::time::Instant::now();
        let stored = if waiting.entries == 0 {
            Finish::Stored
        } else {
            let bar = indicatif::ProgressBar::new_spinner();
            bar.enable_steady_tick(Duration::from_millis(200));
            loop {
                let now = backlog.borrow_and_update().clone();
                if now.entries == 0 {
                    break Finish::Stored;
                }
                // Past its patience, a permanent failure ends the wait: the time it began, or
                // this wait's start if it began before.
                let give_up = match (patience, now.permanent, now.failing_since) {
                    (Some(patience), true, Some(since)) => {
                        Some(tokio::time::Instant::from_std(since).max(began) + patience)
                    }
                    _ => None,
                };
                if give_up.is_some_and(|at| at <= tokio::time::Instant::now()) {
                    bar.finish_and_clear();
                    break Finish::GaveUp(now.failing.clone().unwrap_or_default());
                }
                let mut message = format!(
                    "storing {} results ({} MiB) in {}",
                    now.entries,
                    now.bytes >> 20,
                    store.describe()
                );
                if let Some(error) = &now.failing {
                    message.push_str(&format!(" (failing, retrying: {error})"));
                }
                bar.set_message(message);
                let patience_ends = async {
                    match give_up {
                        Some(at) => tokio::time::sleep_until(at).await,
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    changed = backlog.changed() => if changed.is_err() {
                        break Finish::Interrupted
                    },
                    () = interrupt.cancelled() => break Finish::Interrupted,
                    () = patience_ends => {}
                }
            }
        };
        self.stop.cancel();
        let _ = self.task.await;
        stored
    }
}

/// How the wait for the uploads ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finish {
    /// Everything is stored.
    Stored,
    /// The person stopped it.
    Interrupted,
    /// Storing kept failing with this permanent error past the patience.
    GaveUp(String),
}

/// Says where results that could not be stored yet are kept.
pub fn unstored_note(outbox: &Outbox) {
    let backlog = outbox.backlog().borrow().clone();
    if backlog.entries > 0 {
        eprintln!(
            "{} finished results ({} MiB) are kept in {} and are stored by the next run with \
             the same --out",
            backlog.entries,
            backlog.bytes >> 20,
            outbox.spool_dir().display()
        );
    }
}

/// Stores entries, oldest first and up to `concurrency` at once, until `stop`; an entry leaves
/// the outbox only once stored.
pub async fn upload(
    outbox: Outbox,
    store: Store,
    concurrency: usize,
    report: Option<OnStored>,
    stop: CancellationToken,
) {
    let slots = Arc::new(Semaphore::new(concurrency.max(1)));
    let mut storing = tokio::task::JoinSet::new();
    loop {
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => slot.expect("never closed"),
            () = stop.cancelled() => break,
        };
        let entry = tokio::select! {
            entry = outbox.claim() => entry,
            () = stop.cancelled() => break,
        };
        let (outbox, store, report) = (outbox.clone(), store.clone(), report.clone());
        storing.spawn(async move {
            store_entry(&outbox, &store, &entry).await;
            if let Some(report) = report {
                let _ = report.send(entry.record.clone());
            }
            outbox.stored(&entry);
            drop(slot);
        });
        while storing.try_join_next().is_some() {}
    }
    // Unfinished uploads stay in the outbox for the next start.
    storing.shutdown().await;
}

/// Tries until it works: transient failures (throttling, 5xx, timeouts, connection errors)
/// with exponential backoff and jitter, permanent ones (access denied, a missing bucket, a
/// full disk) every minute, since they need a person and the result must not be lost.
async fn store_entry(outbox: &Outbox, store: &Store, entry: &Entry) {
    let what = format!(
        "{} {} ({})",
        entry.record.name, entry.record.version, entry.tool
    );
    loop {
        let mut delays = backoff();
        let error = loop {
            match store.publish(entry).await {
                Ok(()) => return,
                Err(e) if e.is_transient() => {
                    let delay = delays.next().expect("the backoff never ends");
                    failing(outbox, &what, &e.to_string(), false, delay);
                    tokio::time::sleep(delay).await;
                }
                Err(e) => break e,
            }
        };
        let delay = Duration::from_secs(60);
        failing(outbox, &what, &error.to_string(), true, delay);
        tokio::time::sleep(delay).await;
    }
}

/// Shows the failure in the backlog; says so loudly once per outage, quietly after that.
fn failing(outbox: &Outbox, what: &str, error: &str, permanent: bool, retry_in: Duration) {
    if outbox.failing(error, permanent) {
        tracing::warn!("storing {what} failed, retrying in {retry_in:.1?}: {error}");
    } else {
        tracing::debug!("storing {what} failed, retrying in {retry_in:.1?}: {error}");
    }
}

/// Exponential backoff with jitter: 1 s doubling to 30 s, forever.
fn backoff() -> impl Iterator<Item = Duration> {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_secs(1))
        .with_max_delay(Duration::from_secs(30))
        .with_jitter()
        .without_max_times()
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::results::outbox::Backlog;
    use crate::results::outbox::tests::commit;
    use crate::results::store::LocalStore;
    use crater_proto::tool::Tool;

    #[tokio::test]
    async fn a_run_gives_up_on_a_store_that_keeps_refusing_after_its_patience_and_loses_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let spool = dir.path().join(".spool");
        let outbox = Outbox::open(&spool, u64::MAX).unwrap();
        commit(&outbox, "first", "one\n");
        let root = dir.path().join("results");
        let store = Store::Local(LocalStore::open(&root).unwrap());
        // The store's directory is a file now: every publish fails, and not for a while.
        std::fs::remove_dir_all(&root).unwrap();
        std::fs::write(&root, b"not a directory").unwrap();
        let uploads = Uploads::start(&outbox, &store, 2, None);
        let patience = Duration::from_millis(300);
        let started = std::time::Instant::now();
        let finish = uploads
            .finish(&outbox, &store, &CancellationToken::new(), Some(patience))
            .await;
        let Finish::GaveUp(error) = finish else {
            panic!("{finish:?}")
        };
        assert!(started.elapsed() >= patience);
        assert!(!error.is_empty());
        let kept = crate::results::outbox::peek(&spool);
        assert_eq!(
            kept.len(),
            1,
            "the result waits in the spool for the next run"
        );
    }

    #[tokio::test]
    async fn the_uploader_stores_everything_and_empties_the_outbox() {
        let dir = tempfile::tempdir().unwrap();
        let outbox = Outbox::open(&dir.path().join(".spool"), u64::MAX).unwrap();
        commit(&outbox, "first", "one\n");
        let store = Store::Local(LocalStore::open(dir.path().join("results")).unwrap());
        let stop = CancellationToken::new();
        let uploader = tokio::spawn(upload(outbox.clone(), store.clone(), 4, None, stop.clone()));
        commit(&outbox, "second", "two\n");
        tokio::time::timeout(Duration::from_secs(10), outbox.drained())
            .await
            .expect("drained");
        stop.cancel();
        uploader.await.unwrap();
        let Store::Local(local) = store else {
            unreachable!()
        };
        for (name, log) in [("first", "one\n"), ("second", "two\n")] {
            assert!(local.result(Tool::Check, name, "1.0.0").unwrap().is_some());
            let raw = local.raw_path(Tool::Check, name, "1.0.0");
            assert_eq!(std::fs::read_to_string(raw).unwrap(), log);
        }
        assert!(crate::results::outbox::peek(&dir.path().join(".spool")).is_empty());
        assert_eq!(*outbox.backlog().borrow(), Backlog::default());
    }
}
