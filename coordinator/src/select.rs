//! Which crates to run: `--crate`, `--crate-list` and `--local-crate` turned into jobs.
//!
//! Bad entries never stop the run: each becomes an [`InputError`] naming the entry (and the file
//! and line it came from), and every good entry still runs. Registry crates are resolved against
//! the sparse index here, before any container starts, so "no such crate" costs no build time.

use crate::index::Index;
use crate::local_crate;
use crate::queue::{JobSource, JobSpec};
use crater_proto::crate_ref::CrateRef;
use crater_proto::tool::Tool;
use futures::StreamExt;
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
}

/// The outcome of selection: jobs in input order (duplicates dropped) and the refused entries.
#[derive(Debug, Default)]
pub struct Selection {
    pub jobs: Vec<JobSpec>,
    pub errors: Vec<InputError>,
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

/// Turns the inputs into jobs for `tool`, resolving registry crates against `index`.
pub async fn select(inputs: &Inputs, tool: Tool, index: &Index) -> Selection {
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
    // A handful of index requests at a time: fast for a list, polite to crates.io.
    let mut resolved = futures::stream::iter(refs.iter().map(|r| index.resolve(r))).buffered(8);
    while let Some(result) = resolved.next().await {
        match result {
            Ok(r) => {
                if seen.insert((r.name.clone(), r.version.clone())) {
                    selection.jobs.push(JobSpec {
                        name: r.name,
                        version: r.version,
                        source: JobSource::Registry {
                            checksum: r.checksum,
                        },
                        tool,
                        target: String::new(),
                    });
                }
            }
            Err(e) => selection.errors.push(InputError(e.to_string())),
        }
    }

    for dir in &inputs.local_crates {
        match local_crate::pack(dir) {
            Ok(local) => {
                if seen.insert((local.name.clone(), local.version.clone())) {
                    selection.jobs.push(JobSpec {
                        name: local.name,
                        version: local.version,
                        source: JobSource::Local {
                            path: dir.clone(),
                            archive: local.archive,
                        },
                        tool,
                        target: String::new(),
                    });
                }
            }
            Err(e) => selection.errors.push(InputError(format!(
                "--local-crate {}: {e:#}",
                dir.display()
            ))),
        }
    }
    selection
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
