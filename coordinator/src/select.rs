//! Choosing crates: which crates to run, from `--crate`, `--crate-list`, `--local-crate` and
//! the database dump (`--top`, `--all`), turned into jobs for the queue.
//!
//! The parts: [`index`] resolves names against crates.io's sparse index, [`dump`] reads the
//! database dump and [`crate_list`] caches what it chose, [`local_crate`] packs a directory like
//! a .crate file, and [`rerun`] says which selected crates need no run. This file joins them.
//!
//! Bad entries never stop the run: each becomes an [`InputError`] naming the entry (and the file
//! and line it came from), and every good entry still runs. Registry crates are resolved against
//! the sparse index here, before any container starts, so "no such crate" costs no build time.

pub mod crate_list;
pub mod dump;
pub mod index;
pub mod local_crate;
pub mod rerun;

use crate::serve::queue::{JobSource, JobSpec};
use crater_proto::crate_ref::CrateRef;
use crater_proto::tool::Tool;
use futures::StreamExt;
use index::{Index, IndexError};
use std::collections::HashSet;
use std::path::{Path, PathBuf};

/// An entry that cannot run, and why, in words for the user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputError(pub String);

impl std::fmt::Display for InputError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// What the user asked for, before resolution.
#[derive(Debug, Default, Clone)]
pub struct Inputs {
    pub crates: Vec<String>,
    pub crate_lists: Vec<PathBuf>,
    pub local_crates: Vec<PathBuf>,
    /// `--all` / `--top N`: crates from the database dump.
    pub dump: Option<DumpChoice>,
    /// Crates never to run (the built-in list and `--ignore-file`). Applied before `--top N`,
    /// so N crates run.
    pub ignore: HashSet<String>,
}

#[derive(Debug, Clone)]
pub struct DumpChoice {
    /// A path or a URL.
    pub source: String,
    pub refresh: bool,
    /// `None`: all of them.
    pub top: Option<usize>,
}

/// A crate version that is not run, with a `skipped` verdict saying why (no container needed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    pub name: String,
    pub version: String,
    pub reason: String,
}

/// The outcome of selection: jobs in input order (duplicates dropped), the versions that get a
/// `skipped` verdict, and the refused entries.
#[derive(Debug, Default)]
pub struct Selection {
    pub jobs: Vec<JobSpec>,
    pub skipped: Vec<Skipped>,
    pub errors: Vec<InputError>,
    /// Selected crates left out because they are on the ignore list.
    pub ignored: usize,
}

impl Selection {
    /// Adds a job, unless the same crate version is already selected.
    fn push(
        &mut self,
        seen: &mut HashSet<(String, String)>,
        tool: Tool,
        name: String,
        version: String,
        source: JobSource,
    ) {
        if seen.insert((name.clone(), version.clone())) {
            self.jobs.push(JobSpec {
                name,
                version,
                source,
                tool,
                target: String::new(),
            });
        }
    }
}

fn registry(checksum: String) -> JobSource {
    JobSource::Registry { checksum }
}

/// Reads a crate list: one `name`, `name@version` or `name/version` a line; `#` comments and
/// blank lines are skipped. Bad lines are reported with file and line number.
pub fn parse_crate_list(path: &Path, text: &str) -> (Vec<CrateRef>, Vec<InputError>) {
    let mut refs = Vec::new();
    let mut errors = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let entry = line.split('#').next().unwrap_or("").trim();
        if entry.is_empty() {
            continue;
        }
        match entry.parse::<CrateRef>() {
            Ok(r) => refs.push(r),
            Err(e) => errors.push(InputError(format!("{}:{}: {e}", path.display(), i + 1))),
        }
    }
    (refs, errors)
}

/// Turns the inputs into jobs for `tool`, resolving listed crates against `index` and taking
/// `--all`/`--top` from the dump (cached under `store_root`). Only an unreadable dump is an
/// error: bad entries are reported in the selection, and the rest runs.
pub async fn select(
    inputs: &Inputs,
    tool: Tool,
    index: &Index,
    store_root: &Path,
) -> anyhow::Result<Selection> {
    let mut selection = Selection::default();
    let mut refs = Vec::new();
    for entry in &inputs.crates {
        match entry.parse::<CrateRef>() {
            Ok(r) => refs.push(r),
            Err(e) => selection.errors.push(InputError(format!("--crate {e}"))),
        }
    }
    for path in &inputs.crate_lists {
        match std::fs::read_to_string(path) {
            Ok(text) => {
                let (r, e) = parse_crate_list(path, &text);
                refs.extend(r);
                selection.errors.extend(e);
            }
            Err(e) => selection.errors.push(InputError(format!(
                "--crate-list {}: cannot read it: {e}",
                path.display()
            ))),
        }
    }

    let mut seen = HashSet::new();
    // Listed crates on the ignore list are dropped before any index request.
    let before = refs.len();
    refs.retain(|r| !inputs.ignore.contains(&r.name));
    selection.ignored += before - refs.len();
    // A handful of index requests at a time: fast for a list, polite to crates.io.
    let mut resolved = futures::stream::iter(refs.iter().map(|r| index.resolve(r))).buffered(8);
    while let Some(result) = resolved.next().await {
        match result {
            Ok(r) if r.yanked => selection.skipped.push(Skipped {
                reason: format!("version {} is yanked", r.version),
                name: r.name,
                version: r.version,
            }),
            Err(IndexError::NoSuchVersion { name, version, .. }) => {
                selection.skipped.push(Skipped {
                    reason: format!("crates.io has no version {version} of {name}"),
                    name,
                    version,
                })
            }
            Ok(r) => selection.push(&mut seen, tool, r.name, r.version, registry(r.checksum)),
            Err(e) => selection.errors.push(InputError(e.to_string())),
        }
    }

    if let Some(dump) = &inputs.dump {
        let all = crate_list::all_crates(store_root, &dump.source, dump.refresh).await?;
        let take = dump.top.unwrap_or(all.len());
        let before = all.len();
        let wanted: Vec<_> = all
            .into_iter()
            .filter(|c| !inputs.ignore.contains(&c.name))
            .collect();
        if dump.top.is_none() {
            selection.ignored += before - wanted.len();
        }
        for c in wanted.into_iter().take(take) {
            selection.push(&mut seen, tool, c.name, c.version, registry(c.checksum));
        }
    }

    for dir in &inputs.local_crates {
        match local_crate::pack(dir) {
            Ok(local) if inputs.ignore.contains(&local.name) => selection.ignored += 1,
            Ok(local) => {
                let source = JobSource::Local {
                    path: dir.clone(),
                    archive: local.archive,
                };
                selection.push(&mut seen, tool, local.name, local.version, source);
            }
            Err(e) => selection.errors.push(InputError(format!(
                "--local-crate {}: {e:#}",
                dir.display()
            ))),
        }
    }
    Ok(selection)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crate_lists_report_bad_lines_with_their_number() {
        let text = "# my crates\nitoa\n\nsemver@1.0.0   # pinned\nserde/1.0.100\n../etc\nfoo@not-a-version\n  \nbad name\n";
        let (refs, errors) = parse_crate_list(Path::new("list.txt"), text);
        let names: Vec<String> = refs.iter().map(ToString::to_string).collect();
        assert_eq!(names, ["itoa", "semver@1.0.0", "serde@1.0.100"]);
        let errors: Vec<String> = errors.into_iter().map(|e| e.0).collect();
        assert_eq!(errors.len(), 3, "{errors:?}");
        assert!(
            errors[0].starts_with("list.txt:6: `../etc`"),
            "{}",
            errors[0]
        );
        assert!(
            errors[1].starts_with("list.txt:7: `foo@not-a-version`"),
            "{}",
            errors[1]
        );
        assert!(
            errors[2].starts_with("list.txt:9: `bad name`"),
            "{}",
            errors[2]
        );
    }
}
