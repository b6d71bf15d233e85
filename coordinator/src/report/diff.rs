//! `crater-at-home diff --out A --out B`: the crates whose verdict changed between two runs —
//! what crater reports for a toolchain comparison, for two runs of ours.
//!
//! Each crate's newest version is compared (runs weeks apart may have tested different
//! versions; the table says so). A pass (or flaky) that became a crate failure regressed; the
//! reverse is fixed; a failure that became another failure, or kept its verdict with other
//! causes, changed. `error` (the harness failed) and `skipped` on either side are inconclusive,
//! never a regression.

use super::catalog::{self, Catalog};
use super::context::causes_of;
use super::html::{self, crate_path, text};
use crate::cli::{DiffArgs, exit};
use crate::results::record::ResultRecord;
use crate::results::store::local::HTML_SUFFIX;
use crate::results::store::{LocalStore, Store};
use anyhow::{Context, Result};
use crater_proto::text::printable;
use crater_proto::verdict::Verdict;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

/// How a crate's verdict moved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Change {
    Regressed,
    Fixed,
    Changed,
    Inconclusive,
}

impl Change {
    fn name(self) -> &'static str {
        match self {
            Change::Regressed => "regressed",
            Change::Fixed => "fixed",
            Change::Changed => "changed",
            Change::Inconclusive => "inconclusive",
        }
    }
}

/// One crate whose verdict moved.
#[derive(Debug, Clone, Serialize)]
pub struct Moved {
    #[serde(rename = "crate")]
    pub name: String,
    pub change: Change,
    pub before_version: String,
    pub before: Verdict,
    pub before_causes: Vec<String>,
    pub after_version: String,
    pub after: Verdict,
    pub after_causes: Vec<String>,
}

/// The comparison of two runs.
#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    pub moved: Vec<Moved>,
    /// Crates with the same verdict (and causes) in both.
    pub same: usize,
    /// Crates only one run has.
    pub only_before: usize,
    pub only_after: usize,
}

enum Side {
    Good,
    Bad,
    Unknown,
}

fn side(verdict: Verdict) -> Side {
    match verdict {
        Verdict::Pass | Verdict::Flaky => Side::Good,
        Verdict::Error | Verdict::Skipped => Side::Unknown,
        _ => Side::Bad,
    }
}

fn cause_kinds(record: &ResultRecord) -> Vec<String> {
    let kinds: BTreeSet<String> = causes_of(record).into_iter().map(|c| c.kind).collect();
    kinds.into_iter().collect()
}

/// Compares the newest verdict of each crate in `before` and `after`.
pub fn compare(before: &Catalog, after: &Catalog) -> Comparison {
    let by_name = |catalog: &Catalog| -> BTreeMap<String, ResultRecord> {
        (catalog.newest().into_iter())
            .map(|r| (r.name.clone(), r.clone()))
            .collect()
    };
    let (before, mut after) = (by_name(before), by_name(after));
    let mut comparison = Comparison {
        moved: Vec::new(),
        same: 0,
        only_before: 0,
        only_after: 0,
    };
    for (name, old) in before {
        let Some(new) = after.remove(&name) else {
            comparison.only_before += 1;
            continue;
        };
        let (old_causes, new_causes) = (cause_kinds(&old), cause_kinds(&new));
        let change = match (side(old.status), side(new.status)) {
            (Side::Unknown, _) | (_, Side::Unknown) if old.status != new.status => {
                Change::Inconclusive
            }
            (Side::Good, Side::Bad) => Change::Regressed,
            (Side::Bad, Side::Good) => Change::Fixed,
            (Side::Bad, Side::Bad) if old.status != new.status || old_causes != new_causes => {
                Change::Changed
            }
            _ => {
                comparison.same += 1;
                continue;
            }
        };
        comparison.moved.push(Moved {
            name,
            change,
            before_version: old.version,
            before: old.status,
            before_causes: old_causes,
            after_version: new.version,
            after: new.status,
            after_causes: new_causes,
        });
    }
    comparison.only_after = after.len();
    comparison
        .moved
        .sort_by(|a, b| (a.change, &a.name).cmp(&(b.change, &b.name)));
    comparison
}

impl Comparison {
    pub fn count(&self, change: Change) -> usize {
        self.moved.iter().filter(|m| m.change == change).count()
    }

    /// A plain table, one crate a line.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let width = self
            .moved
            .iter()
            .map(|m| m.name.len())
            .max()
            .unwrap_or(5)
            .max(5);
        let _ = writeln!(out, "{:<12} {:<width$} BEFORE -> AFTER", "CHANGE", "CRATE");
        for m in &self.moved {
            let _ = writeln!(
                out,
                "{:<12} {:<width$} {} -> {}",
                m.change.name(),
                printable(&m.name, 200),
                describe(&m.before_version, m.before, &m.before_causes),
                describe(&m.after_version, m.after, &m.after_causes),
            );
        }
        let _ = writeln!(
            out,
            "{} regressed, {} fixed, {} changed, {} inconclusive, {} the same; {} only before, \
             {} only after",
            self.count(Change::Regressed),
            self.count(Change::Fixed),
            self.count(Change::Changed),
            self.count(Change::Inconclusive),
            self.same,
            self.only_before,
            self.only_after
        );
        out
    }

    /// The same as a page: each crate's two versions link to their log pages, given the paths
    /// of the two stores' tool folders relative to the page (or absolute).
    pub fn page(&self, tool: &str, before: &str, after: &str) -> String {
        let mut out = String::new();
        out.push_str(
            "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
             <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
             <title>crater-at-home diff</title>\n<style>\n",
        );
        out.push_str(include_str!("assets/site.css"));
        let _ = write!(
            out,
            "</style>\n</head>\n<body>\n<header>\n<h1>{tool}: what changed \
             <small>crater-at-home diff</small></h1>\n</header>\n<main>\n<p class=\"lead\">",
            tool = text(tool)
        );
        out.push_str(&text(self.table().lines().last().unwrap_or_default()));
        out.push_str(
            "</p>\n<table class=\"causes\">\n<thead><tr><th scope=\"col\">Change</th>\
             <th scope=\"col\">Crate</th><th scope=\"col\">Before</th><th scope=\"col\">After</th>\
             </tr></thead>\n<tbody>\n",
        );
        for m in &self.moved {
            let side = |root: &str, version: &str, verdict: Verdict, causes: &[String]| {
                format!(
                    "<a href=\"{root}/{log}\">{version}</a> {tag} {causes}",
                    root = html::attr(root),
                    log = html::attr(&(crate_path("logs", &m.name, version) + HTML_SUFFIX)),
                    version = text(version),
                    tag = html::verdict_tag(verdict.name()),
                    causes = text(&causes.join(", ")),
                )
            };
            let _ = writeln!(
                out,
                "<tr><td>{change}</td><td>{name}</td><td>{before}</td><td>{after}</td></tr>",
                change = m.change.name(),
                name = text(&m.name),
                before = side(before, &m.before_version, m.before, &m.before_causes),
                after = side(after, &m.after_version, m.after, &m.after_causes),
            );
        }
        out.push_str("</tbody>\n</table>\n</main>\n</body>\n</html>\n");
        out
    }
}

fn describe(version: &str, verdict: Verdict, causes: &[String]) -> String {
    let version = printable(version, 100);
    if causes.is_empty() {
        format!("{version} {verdict}")
    } else {
        let causes = printable(&causes.join(","), 300);
        format!("{version} {verdict} ({causes})")
    }
}

/// `crater-at-home diff`.
pub async fn diff(args: DiffArgs) -> Result<u8> {
    let [before_dir, after_dir] = args.out.as_slice() else {
        anyhow::bail!(
            "diff compares two runs: give --out twice (before, then after), not {} times",
            args.out.len()
        );
    };
    let load = async |dir: &std::path::Path| -> Result<Catalog> {
        anyhow::ensure!(
            dir.join(args.tool.name()).join("results").is_dir(),
            "{} has no {} results",
            dir.display(),
            args.tool
        );
        let store = Store::Local(LocalStore::open(dir)?);
        Ok(catalog::load(&store, args.tool, false).await?.0)
    };
    let before = load(before_dir).await?;
    let after = load(after_dir).await?;
    let comparison = compare(&before, &after);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&comparison)?);
    } else {
        print!("{}", comparison.table());
    }
    if let Some(path) = &args.html {
        let root = |dir: &std::path::Path| -> String {
            let dir = std::path::absolute(dir).unwrap_or_else(|_| dir.to_owned());
            format!("file://{}", dir.join(args.tool.name()).display())
        };
        let page = comparison.page(args.tool.name(), &root(before_dir), &root(after_dir));
        std::fs::write(path, page).with_context(|| format!("writing {}", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    Ok(if comparison.count(Change::Regressed) > 0 {
        exit::REGRESSED
    } else {
        exit::OK
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::results::diagnose::Cause;
    use crate::results::record::sample_record;
    use crater_proto::tool::Tool;

    fn record(name: &str, version: &str, status: Verdict, cause: Option<&str>) -> ResultRecord {
        let mut record = sample_record(name, version);
        record.status = status;
        record.causes = cause
            .map(|kind| Cause {
                kind: kind.into(),
                detector: "rustc".into(),
                source_crate: None,
                message: String::new(),
            })
            .into_iter()
            .collect();
        record
    }

    #[test]
    fn regressions_fixes_changes_and_harness_errors_are_told_apart() {
        let mut before = Catalog::new(Tool::Check);
        let mut after = Catalog::new(Tool::Check);
        for (name, old, new) in [
            (
                "regresses",
                (Verdict::Pass, None),
                (Verdict::BuildFail, Some("E0425")),
            ),
            (
                "fixed",
                (Verdict::TestFail, Some("test-failure")),
                (Verdict::Pass, None),
            ),
            (
                "new-cause",
                (Verdict::BuildFail, Some("E0425")),
                (Verdict::BuildFail, Some("E0599")),
            ),
            (
                "harness",
                (Verdict::Pass, None),
                (Verdict::Error, Some("harness-error")),
            ),
            (
                "same",
                (Verdict::BuildFail, Some("E0425")),
                (Verdict::BuildFail, Some("E0425")),
            ),
        ] {
            before.insert(record(name, "1.0.0", old.0, old.1));
            after.insert(record(name, "1.0.0", new.0, new.1));
        }
        before.insert(record("gone", "1.0.0", Verdict::Pass, None));
        after.insert(record("arrived", "1.0.0", Verdict::Pass, None));

        let comparison = compare(&before, &after);
        let changes: Vec<(&str, Change)> = comparison
            .moved
            .iter()
            .map(|m| (m.name.as_str(), m.change))
            .collect();
        assert_eq!(
            changes,
            [
                ("regresses", Change::Regressed),
                ("fixed", Change::Fixed),
                ("new-cause", Change::Changed),
                ("harness", Change::Inconclusive),
            ]
        );
        assert_eq!(
            (
                comparison.same,
                comparison.only_before,
                comparison.only_after
            ),
            (1, 1, 1)
        );
        let table = comparison.table();
        assert!(
            table.contains("regresses") && table.contains("1.0.0 pass -> 1.0.0 build-fail (E0425)"),
            "{table}"
        );
    }
}
