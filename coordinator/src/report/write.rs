//! Writing the site into the store, skipping the files that did not change.
//!
//! While a run goes on the pages are rendered again every few minutes; most renders change the
//! counts but, say, not the UB page, and re-uploading unchanged megabytes to S3 every time is
//! waste. The writer remembers the SHA-256 of what it wrote (and, in a local directory, compares
//! with what is on disk), and writes only what differs. `data.js` goes before the pages that
//! load it, so a reader never gets a page newer than its data.

use super::site::Page;
use super::source;
use crate::results::store::Store;
use anyhow::Result;
use sha2::{Digest, Sha256};
use std::collections::HashMap;

/// What one write did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Written {
    pub files: usize,
    pub unchanged: usize,
    pub bytes: u64,
}

/// Writes pages to one store, remembering what it wrote.
pub struct SiteWriter {
    store: Store,
    written: HashMap<String, [u8; 32]>,
}

impl SiteWriter {
    pub fn new(store: Store) -> SiteWriter {
        SiteWriter {
            store,
            written: HashMap::new(),
        }
    }

    /// Writes the pages that changed.
    pub async fn write(&mut self, mut pages: Vec<Page>) -> Result<Written> {
        // Data first, then the pages that read it.
        pages.sort_by_key(|p| !p.key.ends_with(".js"));
        let mut done = Written::default();
        for page in pages {
            let digest: [u8; 32] = Sha256::digest(&page.bytes).into();
            if self.written.get(&page.key) == Some(&digest) || self.on_disk(&page.key, &digest) {
                self.written.insert(page.key, digest);
                done.unchanged += 1;
                continue;
            }
            done.files += 1;
            done.bytes += page.bytes.len() as u64;
            source::write(&self.store, &page.key, page.bytes, page.content_type).await?;
            self.written.insert(page.key, digest);
        }
        Ok(done)
    }

    /// A local store's file that already holds these bytes.
    fn on_disk(&self, key: &str, digest: &[u8; 32]) -> bool {
        let Store::Local(local) = &self.store else {
            return false;
        };
        std::fs::read(local.root().join(key))
            .is_ok_and(|bytes| <[u8; 32]>::from(Sha256::digest(&bytes)) == *digest)
    }
}
