//! `{tool}/index.html`: the landing page. Counts by verdict, the run's span, and a search over
//! every crate that answers as you type (prefix matches first, then substrings, most downloaded
//! first), filtered by verdict, each hit linking to the crate's log page and JSON.
//!
//! The counts are in the page itself; the crates come from `data.js` (see [`super::data`]).

use super::context::Context;
use super::data::Summary;
use super::html::{self, PageKind, attr, text};
use crater_proto::tool::Tool;
use crater_proto::verdict::Verdict;
use std::fmt::Write as _;

const SCRIPT: &str = concat!(
    include_str!("assets/crate_row.js"),
    include_str!("assets/landing.js")
);

pub fn page(tool: Tool, summary: &Summary, context: &Context) -> String {
    let mut out = String::new();
    html::head(
        &mut out,
        tool,
        &format!("{tool} results"),
        PageKind::Landing,
    );
    out.push_str(
        "<section class=\"search\" aria-labelledby=\"search-title\">\n\
         <h2 id=\"search-title\">Find a crate</h2>\n\
         <input id=\"q\" type=\"search\" autocomplete=\"off\" spellcheck=\"false\" \
         placeholder=\"crate name or part of it\" aria-label=\"Crate name\" \
         aria-controls=\"results\">\n<fieldset id=\"filters\">\n<legend>Verdicts</legend>\n",
    );
    for verdict in Verdict::ALL {
        let count = summary.count(*verdict);
        let _ = writeln!(
            out,
            "<label><input type=\"checkbox\" value=\"{v}\" checked{disabled}> {tag} {count}</label>",
            v = verdict.name(),
            tag = html::verdict_tag(verdict.name()),
            disabled = if count == 0 { " disabled" } else { "" },
        );
    }
    out.push_str(
        "</fieldset>\n<p id=\"count\" aria-live=\"polite\">Loading the crate list…</p>\n\
         <ol id=\"results\"></ol>\n\
         <noscript><p>The search needs JavaScript; every verdict is also in \
         <a href=\"results.jsonl\">results.jsonl</a>.</p></noscript>\n</section>\n",
    );
    counts(&mut out, summary);
    run_facts(&mut out, tool, summary);
    downloads(&mut out, context);
    html::tail(&mut out, Some(&summary.generated_at), SCRIPT);
    out
}

fn run_facts(out: &mut String, tool: Tool, summary: &Summary) {
    let when = |t: &Option<String>| t.clone().unwrap_or_else(|| "—".to_owned());
    let _ = write!(
        out,
        "<section class=\"facts\">\n<dl>\n<dt>Tool</dt><dd>{tool}</dd>\n\
         <dt>Crates</dt><dd>{crates} ({results} results, every version)</dd>\n\
         <dt>Run</dt><dd><time>{start}</time> to <time>{end}</time></dd>\n\
         <dt>Toolchain</dt><dd>{toolchains}</dd>\n\
         <dt>Target</dt><dd>{targets}</dd>\n<dt>Agents</dt><dd>{agents}</dd>\n\
         <dt>Updated</dt><dd><time>{generated}</time></dd>\n</dl>\n</section>\n",
        crates = summary.crates,
        results = summary.results,
        start = text(&when(&summary.started_at)),
        end = text(&when(&summary.finished_at)),
        targets = text(&summary.targets.join(", ")),
        toolchains = text(&if summary.toolchains.is_empty() {
            "not recorded".to_owned()
        } else {
            summary.toolchains.join(", ")
        }),
        agents = summary.agents,
        generated = text(&summary.generated_at),
    );
}

fn counts(out: &mut String, summary: &Summary) {
    out.push_str(
        "<section aria-labelledby=\"counts-title\">\n<h2 id=\"counts-title\">Verdicts</h2>\n\
         <table class=\"counts\">\n<thead><tr><th scope=\"col\">Verdict</th>\
         <th scope=\"col\">Crates</th><th scope=\"col\">Share</th></tr></thead>\n<tbody>\n",
    );
    for verdict in Verdict::ALL {
        let count = summary.count(*verdict);
        let share = if summary.crates == 0 {
            0.0
        } else {
            100.0 * count as f64 / summary.crates as f64
        };
        let name = verdict.name();
        let link = match verdict {
            Verdict::Ub => format!("<a href=\"ub.html\">{}</a>", html::verdict_tag(name)),
            v if super::context::is_failure(*v) => format!(
                "<a href=\"failures.html#verdict={name}\">{}</a>",
                html::verdict_tag(name)
            ),
            _ => html::verdict_tag(name),
        };
        let _ = writeln!(
            out,
            "<tr><td>{link}</td><td class=\"num\">{count}</td><td class=\"num\">{share:.1}%</td></tr>"
        );
    }
    out.push_str("</tbody>\n</table>\n</section>\n");
}

fn downloads(out: &mut String, context: &Context) {
    out.push_str(
        "<section aria-labelledby=\"data-title\">\n<h2 id=\"data-title\">Data</h2>\n<ul>\n\
         <li><a href=\"results.jsonl\">results.jsonl</a>: every verdict, one JSON a line</li>\n\
         <li><a href=\"summary.json\">summary.json</a>: the counts and causes</li>\n",
    );
    for archive in &context.archives {
        let what = if archive.starts_with("raw") {
            "every raw log"
        } else {
            "every log page"
        };
        let _ = writeln!(
            out,
            "<li><a href=\"{}\">{}</a>: {what}</li>",
            attr(archive),
            text(archive)
        );
    }
    out.push_str("</ul>\n</section>\n");
}
