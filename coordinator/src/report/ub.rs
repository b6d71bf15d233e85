//! `{tool}/ub.html` (and the seed's `{tool}/ub`): every crate whose newest verdict is `ub`, most
//! downloaded first, with each report's kind, detector, the crate it came from and its message;
//! a count of crates per kind above; the selected crate's log beside the list (the log page
//! scrolls itself to the first report), and the selection in the URL.
//!
//! The list is in the page itself (UB is rare: thousands at most, not hundreds of thousands),
//! so it reads without JavaScript too; the script only keeps the log frame and the URL in step.

use super::context::Context;
use super::data::{CauseCount, Summary};
use super::html::{self, PageKind, attr, crate_path, text};
use crate::results::record::ResultRecord;
use crater_proto::tool::Tool;
use crater_proto::verdict::Verdict;
use std::fmt::Write as _;

const SCRIPT: &str = include_str!("assets/ub.js");

pub fn page(tool: Tool, newest: &[&ResultRecord], summary: &Summary, context: &Context) -> String {
    let mut ub: Vec<&ResultRecord> = newest
        .iter()
        .copied()
        .filter(|r| r.status == Verdict::Ub)
        .collect();
    let downloads = |r: &ResultRecord| context.downloads.get(&r.name).copied().unwrap_or(0);
    ub.sort_by(|a, b| downloads(b).cmp(&downloads(a)).then(a.name.cmp(&b.name)));

    let mut out = String::new();
    html::head(&mut out, tool, "Undefined behaviour", PageKind::Ub);
    let _ = writeln!(
        out,
        "<p class=\"lead\">{} of {} crates have undefined behaviour.</p>",
        ub.len(),
        summary.crates
    );
    cause_table(&mut out, &summary.ub_causes);
    if ub.is_empty() {
        out.push_str("<p>No crate has undefined behaviour.</p>\n");
        html::tail(&mut out, None, "");
        return out;
    }
    out.push_str("<div class=\"split\">\n<ol id=\"ub-list\" class=\"crates\">\n");
    for record in ub {
        let id = format!("{}@{}", record.name, record.version);
        let _ = write!(
            out,
            "<li data-crate=\"{id}\"><a class=\"name\" href=\"{log}\" target=\"log\">{name} {version}</a>",
            id = attr(&id),
            log = attr(&(crate_path("logs", &record.name, &record.version) + context.log_suffix)),
            name = text(&record.name),
            version = text(&record.version),
        );
        let count = downloads(record);
        if count > 0 {
            let _ = write!(out, " <span class=\"downloads\">{count} downloads</span>");
        }
        let _ = write!(
            out,
            " <a class=\"json\" href=\"{}\">JSON</a>\n<ul class=\"reports\">\n",
            attr(&crate_path("results", &record.name, &record.version))
        );
        for cause in &record.causes {
            let from = cause
                .source_crate
                .as_deref()
                .map(|c| format!(" in <code>{}</code>", text(c)))
                .unwrap_or_default();
            let _ = writeln!(
                out,
                "<li><span class=\"kind\">{kind}</span> ({detector}){from}: {message}</li>",
                kind = text(&cause.kind),
                detector = text(&cause.detector),
                message = text(&cause.message),
            );
        }
        out.push_str("</ul>\n</li>\n");
    }
    out.push_str(
        "</ol>\n<iframe id=\"log\" name=\"log\" title=\"The selected crate's log\"></iframe>\n\
         </div>\n",
    );
    html::tail(&mut out, None, SCRIPT);
    out
}

/// Crates per cause, most first.
pub fn cause_table(out: &mut String, causes: &[CauseCount]) {
    if causes.is_empty() {
        return;
    }
    out.push_str(
        "<table class=\"causes\">\n<thead><tr><th scope=\"col\">Cause</th>\
         <th scope=\"col\">Detector</th><th scope=\"col\">Crates</th>\
         <th scope=\"col\" class=\"example\">For example</th></tr></thead>\n<tbody>\n",
    );
    for cause in causes {
        let _ = writeln!(
            out,
            "<tr><td class=\"kind\">{kind}</td><td>{detector}</td><td class=\"num\">{crates}</td>\
             <td class=\"example\">{example}</td></tr>",
            kind = text(&cause.kind),
            detector = text(&cause.detector),
            crates = cause.crates,
            example = text(&cause.example),
        );
    }
    out.push_str("</tbody>\n</table>\n");
}
