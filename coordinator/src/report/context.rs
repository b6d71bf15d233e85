//! What every page is drawn from beside the verdicts, and what the pages share about them:
//! the [`Context`] (downloads, archives, the time), a rendered [`Page`], which verdicts are
//! failures and each failure's causes.
//!
//! Its own module so the pages ([`super::landing`], [`super::ub`], [`super::failures`],
//! [`super::data`]) and the site that assembles them all depend on it, and not on each other.

use crate::results::diagnose::Cause;
use crate::results::failure_causes::fact_causes;
use crate::results::record::ResultRecord;
use crater_proto::verdict::Verdict;
use std::collections::HashMap;

/// One file of the site, relative to the store's root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    pub key: String,
    pub bytes: Vec<u8>,
    pub content_type: &'static str,
}

/// What the pages are drawn from beside the verdicts.
#[derive(Debug, Clone, Default)]
pub struct Context {
    /// Recent downloads by crate name (the crate list's `downloads.json`), when known.
    pub downloads: HashMap<String, u64>,
    /// The archives that exist (`raw.tar.zst`, ...), to link to.
    pub archives: Vec<String>,
    /// When the pages were made (RFC 3339).
    pub generated_at: String,
    /// What links add to a log page's key: `.html` in a local folder, whose pages have that
    /// second name for browsers that go by the extension; nothing in a bucket.
    pub log_suffix: &'static str,
}

/// The verdicts a failures page groups: the crate (or the harness) failed, other than UB, which
/// has its own page.
pub fn is_failure(verdict: Verdict) -> bool {
    matches!(
        verdict,
        Verdict::PrepareFail
            | Verdict::BuildFail
            | Verdict::TestFail
            | Verdict::Timeout
            | Verdict::Oom
            | Verdict::Error
    )
}

/// Why a crate failed: the verdict's causes, with what its facts say (timeout, oom, a harness
/// error, or "unknown") for verdicts stored before failures had causes of their own.
pub fn causes_of(record: &ResultRecord) -> Vec<Cause> {
    if record.status == Verdict::Ub {
        return record.causes.clone();
    }
    if !is_failure(record.status) {
        return Vec::new();
    }
    let mut causes = record.causes.clone();
    causes.extend(fact_causes(record));
    causes
}
