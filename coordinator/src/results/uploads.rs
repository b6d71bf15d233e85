//! The uploads: the one task that moves finished results from the outbox to the store, and the
//! wait for it to finish when a run ends.
//!
//! Entries go oldest first, each retried for as long as it takes (a result must not be lost to
//! an outage); an entry leaves the outbox only once the store has all of it. At the end of a run
//! the process waits until everything is stored (or the person interrupts), showing what waits
//! and why, and otherwise says where the unstored results are kept for the next run.

use crate::results::outbox::{Entry, Outbox};
use crate::results::store::Store;
use backon::{BackoffBuilder, ExponentialBuilder};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// The uploader: stores the outbox's entries in the background while the run goes on.
pub struct Uploads {
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Uploads {
    pub fn start(outbox: &Outbox, store: &Store) -> Uploads {
        let stop = CancellationToken::new();
        let task = tokio::spawn(upload(outbox.clone(), store.clone(), stop.clone()));
        Uploads { stop, task }
    }

    /// Waits until every finished result is stored (showing what waits, and why, when it
    /// takes a while) or `interrupt` fires. True when all were stored.
    pub async fn finish(
        self,
        outbox: &Outbox,
        store: &Store,
        interrupt: &CancellationToken,
    ) -> bool {
        let mut backlog = outbox.backlog();
        let waiting = backlog.borrow().clone();
        let stored = if waiting.entries == 0 {
            true
        } else {
            let bar = indicatif::ProgressBar::new_spinner();
            bar.enable_steady_tick(Duration::from_millis(200));
            loop {
                let now = backlog.borrow_and_update().clone();
                if now.entries == 0 {
                    break true;
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
                tokio::select! {
                    changed = backlog.changed() => if changed.is_err() { break false },
                    () = interrupt.cancelled() => break false,
                }
            }
        };
        self.stop.cancel();
        let _ = self.task.await;
        stored
    }
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

/// Stores entries, oldest first, until `stop`; an entry leaves the outbox only once stored.
pub async fn upload(outbox: Outbox, store: Store, stop: CancellationToken) {
    loop {
        let entry = tokio::select! {
            entry = outbox.oldest() => entry,
            () = stop.cancelled() => return,
        };
        tokio::select! {
            () = store_entry(&outbox, &store, &entry) => {}
            () = stop.cancelled() => return,
        }
        outbox.stored(&entry);
    }
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
                    failing(outbox, &what, &e.to_string(), delay);
                    tokio::time::sleep(delay).await;
                }
                Err(e) => break e,
            }
        };
        let delay = Duration::from_secs(60);
        failing(outbox, &what, &error.to_string(), delay);
        tokio::time::sleep(delay).await;
    }
}

/// Shows the failure in the backlog; says so loudly once per outage, quietly after that.
fn failing(outbox: &Outbox, what: &str, error: &str, retry_in: Duration) {
    if outbox.failing(error) {
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
    async fn the_uploader_stores_everything_and_empties_the_outbox() {
        let dir = tempfile::tempdir().unwrap();
        let outbox = Outbox::open(&dir.path().join(".spool"), u64::MAX).unwrap();
        commit(&outbox, "first", "one\n");
        let store = Store::Local(LocalStore::open(dir.path().join("results")).unwrap());
        let stop = CancellationToken::new();
        let uploader = tokio::spawn(upload(outbox.clone(), store.clone(), stop.clone()));
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
