//! What every report page shares: the frame (head, style, navigation), escaping, and links to a
//! crate's files.
//!
//! Everything that came from a crate (names, versions, messages) goes through [`text`] or
//! [`attr`]; links to a crate's files go through [`crate_path`], whose segments are
//! percent-encoded (a version's `+` would otherwise read as a space on S3's website endpoint).
//! Pages are self-contained: the style and scripts are inline, nothing comes from a CDN.

use crater_proto::tool::Tool;
use std::fmt::Write as _;

const STYLE: &str = include_str!("assets/site.css");

/// Escaped for an element's text.
pub fn text(s: &str) -> std::borrow::Cow<'_, str> {
    html_escape::encode_text(s)
}

/// Escaped for a double-quoted attribute value.
pub fn attr(s: &str) -> std::borrow::Cow<'_, str> {
    html_escape::encode_double_quoted_attribute(s)
}

pub use crate::results::render::path_segment as segment;

/// `{kind}/{name}/{version}` relative to the tool's folder: `logs` (the HTML page), `raw`, or
/// `results` (the JSON, with its extension).
pub fn crate_path(kind: &str, name: &str, version: &str) -> String {
    let ext = if kind == "results" { ".json" } else { "" };
    format!("{kind}/{}/{}{ext}", segment(name), segment(version))
}

/// Which page is being drawn, for the navigation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PageKind {
    Landing,
    Ub,
    Failures,
}

/// The top of a page, through the opening `<main>`.
pub fn head(out: &mut String, tool: Tool, title: &str, page: PageKind) {
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>{title} — crater-at-home {tool}</title>\n<style>\n{STYLE}</style>\n</head>\n\
         <body>\n<header>\n<h1>{title} <small>crater-at-home · {tool}</small></h1>\n<nav>",
        title = text(title),
    );
    for (kind, href, label) in [
        (PageKind::Landing, "index.html", "All crates"),
        (PageKind::Ub, "ub.html", "Undefined behaviour"),
        (PageKind::Failures, "failures.html", "Failures by cause"),
    ] {
        let current = if kind == page {
            " aria-current=\"page\""
        } else {
            ""
        };
        let _ = write!(out, "<a href=\"{href}\"{current}>{label}</a>");
    }
    out.push_str("</nav>\n</header>\n<main>\n");
}

/// The end of a page: the data file when the page's script needs it, then the script.
pub fn tail(out: &mut String, data_version: Option<&str>, script: &str) {
    out.push_str("</main>\n");
    if let Some(version) = data_version {
        let _ = writeln!(
            out,
            "<script src=\"data.js?v={}\"></script>",
            attr(&segment(version))
        );
    }
    if !script.is_empty() {
        let _ = write!(out, "<script>\n{script}</script>\n");
    }
    out.push_str("</body>\n</html>\n");
}

/// A verdict as a coloured tag.
pub fn verdict_tag(verdict: &str) -> String {
    format!("<span class=\"v v-{0}\">{0}</span>", text(verdict))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crate_links_are_encoded_and_text_escaped() {
        assert_eq!(
            crate_path("logs", "serde", "1.0.0+build.1"),
            "logs/serde/1.0.0%2Bbuild.1"
        );
        assert_eq!(
            crate_path("results", "a b", "1.0.0"),
            "results/a%20b/1.0.0.json"
        );
        assert_eq!(text("<b>&"), "&lt;b&gt;&amp;");
        assert_eq!(attr("\"x\""), "&quot;x&quot;");
    }
}
