//! `{tool}/failures.html`: failing crates (every failure verdict but `ub`) grouped by why they
//! failed — compiler error codes, a missing system library, the linker, the network, an ICE, a
//! limit (timeout, oom, no-space), failing tests — so a person sees the twenty reasons behind
//! ten thousand failures. The causes are the verdicts' (see `results::failure_causes`).
//!
//! The table of causes is in the page; the crates of the cause or verdict chosen (kept in the
//! URL: `#cause=E0425`, `#verdict=build-fail`) are listed by the script from `data.js`, since a
//! large run has hundreds of thousands of them.

use super::data::Summary;
use super::html::{self, PageKind, attr, text};
use crater_proto::tool::Tool;
use crater_proto::verdict::Verdict;
use std::fmt::Write as _;

const SCRIPT: &str = concat!(
    include_str!("assets/crate_row.js"),
    include_str!("assets/failures.js")
);

pub fn page(tool: Tool, summary: &Summary, data_version: &str) -> String {
    let mut out = String::new();
    html::head(&mut out, tool, "Failures by cause", PageKind::Failures);
    let failing: usize = Verdict::ALL
        .iter()
        .filter(|v| super::context::is_failure(**v))
        .map(|v| summary.count(*v))
        .sum();
    let _ = writeln!(
        out,
        "<p class=\"lead\">{failing} of {} crates failed (undefined behaviour has \
         <a href=\"ub.html\">its own page</a>). A crate counts once under each of its causes.</p>",
        summary.crates
    );
    out.push_str("<p class=\"verdicts\">By verdict:");
    for verdict in Verdict::ALL
        .iter()
        .filter(|v| super::context::is_failure(**v))
    {
        let _ = write!(
            out,
            " <a href=\"#verdict={name}\">{tag} {count}</a>",
            name = verdict.name(),
            tag = html::verdict_tag(verdict.name()),
            count = summary.count(*verdict)
        );
    }
    out.push_str("</p>\n");
    if summary.failure_causes.is_empty() {
        out.push_str("<p>No crate failed.</p>\n");
    } else {
        out.push_str(
            "<table class=\"causes\">\n<thead><tr><th scope=\"col\">Cause</th>\
             <th scope=\"col\">What it is</th><th scope=\"col\">Crates</th>\
             <th scope=\"col\" class=\"example\">For example</th></tr></thead>\n<tbody>\n",
        );
        for cause in &summary.failure_causes {
            let mut params = String::from("cause=");
            params.push_str(&html::segment(&cause.kind));
            let _ = writeln!(
                out,
                "<tr><td class=\"kind\"><a href=\"#{href}\">{kind}</a></td><td>{what}</td>\
                 <td class=\"num\">{crates}</td><td class=\"example\">{example}</td></tr>",
                href = attr(&params),
                kind = text(&cause.kind),
                what = text(&describe(&cause.kind, &cause.detector)),
                crates = cause.crates,
                example = text(&cause.example),
            );
        }
        out.push_str("</tbody>\n</table>\n");
    }
    out.push_str(
        "<section id=\"chosen\" aria-live=\"polite\">\n<h2 id=\"chosen-title\">Choose a cause \
         or a verdict above to list its crates.</h2>\n<ol id=\"crates\" class=\"crates\"></ol>\n\
         </section>\n",
    );
    html::tail(&mut out, Some(data_version), SCRIPT);
    out
}

/// A few words on what a cause kind means.
pub fn describe(kind: &str, detector: &str) -> String {
    if kind.len() == 5 && kind.starts_with('E') && kind[1..].bytes().all(|b| b.is_ascii_digit()) {
        return format!("rustc error {kind}");
    }
    match kind {
        "rustc-error" => "a compiler error without a code",
        "ice" => "the compiler crashed (internal compiler error)",
        "linker" => "linking failed",
        "missing-system-library" => "a system library or header is not installed",
        "network" => "a download failed",
        "dependency-resolution" => "cargo could not choose versions of the dependencies",
        "manifest" => "Cargo.toml could not be read",
        "rust-version" => "the crate needs a newer Rust",
        "test-failure" => "tests failed",
        "timeout" => "a time limit ended the job",
        "oom" => "the kernel killed it for memory",
        "no-space" => "the job filled its disk",
        "harness-error" => "the harness failed, not the crate",
        "unknown" => "no known cause in the log",
        _ => return format!("reported by {detector}"),
    }
    .to_owned()
}
