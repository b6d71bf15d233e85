//! The site of one tool, rendered from its catalog: which files there are and what is in them.
//!
//! Pure: a catalog (and what else is known: downloads, which archives exist, the time) in,
//! files out. Writing them, and not writing those that did not change, is [`super::publish`]'s.

use super::catalog::Catalog;
use super::{data, failures, landing, ub};
use crate::results::diagnose::Cause;
use crate::results::failure_causes::fact_causes;
use crate::results::record::ResultRecord;
use crater_proto::tool::Tool;
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

/// Every page of `catalog`'s tool.
pub fn render(catalog: &Catalog, context: &Context) -> Vec<Page> {
    let tool = catalog.tool;
    let newest = catalog.newest();
    let summary = data::Summary::of(catalog, &newest, context);
    let data_version = context.generated_at.as_str();
    let ub_page = ub::page(tool, &newest, &summary, context);
    vec![
        html(tool, "index.html", landing::page(tool, &summary, context)),
        html(tool, "ub.html", ub_page.clone()),
        // The seed's key for the same page.
        html(tool, "ub", ub_page),
        html(
            tool,
            "failures.html",
            failures::page(tool, &summary, data_version),
        ),
        Page {
            key: format!("{tool}/data.js"),
            bytes: data::data_js(tool, &newest, context).into_bytes(),
            content_type: "text/javascript; charset=utf-8",
        },
        Page {
            key: format!("{tool}/summary.json"),
            bytes: summary.to_json(),
            content_type: "application/json",
        },
        Page {
            key: format!("{tool}/{}", super::catalog::SNAPSHOT),
            bytes: catalog.to_jsonl(),
            content_type: "application/x-ndjson",
        },
    ]
}

fn html(tool: Tool, name: &str, page: String) -> Page {
    Page {
        key: format!("{tool}/{name}"),
        bytes: page.into_bytes(),
        content_type: "text/html; charset=utf-8",
    }
}
