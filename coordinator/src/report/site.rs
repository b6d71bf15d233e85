//! The site of one tool, rendered from its catalog: which files there are and what is in them.
//!
//! Pure: a catalog (and the [`Context`]: downloads, which archives exist, the time) in, files
//! out. Writing them, and not writing those that did not change, is [`super::write`]'s.

use super::catalog::Catalog;
use super::context::causes_of;
pub use super::context::{Context, Page};
use super::{data, failures, landing, ub};
use crater_proto::tool::Tool;

/// Every page of `catalog`'s tool.
pub fn render(catalog: &Catalog, context: &Context) -> Vec<Page> {
    let tool = catalog.tool;
    let newest = catalog.newest();
    // Each crate's causes, once for the counts and the data file both.
    let causes: Vec<_> = newest.iter().map(|record| causes_of(record)).collect();
    let summary = data::Summary::of(catalog, &newest, &causes, context);
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
            bytes: data::data_js(tool, &newest, &causes, context).into_bytes(),
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
