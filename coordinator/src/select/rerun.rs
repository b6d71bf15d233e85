//! Which crates to leave out of a run: finished ones (by age), passing ones under
//! `--retry-failed`, and ignored ones.
//!
//! The store is the source of truth: a crate's last verdict there decides whether it runs again.
//! As in the seed, a result younger than `--max-age` days counts as finished; `--rerun` runs
//! everything; `--retry-failed` runs only crates whose last verdict is a failure.

use crate::results::store::Existing;
use anyhow::{Context, Result};
use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;
use time::OffsetDateTime;

/// Crates the seed found to print gigabytes of output and then not build.
pub const BUILTIN_IGNORE: &[&str] = &[
    "clacks_mtproto",
    "stdweb",
    "wayland-raw-protocol-bindings",
    "pleingres",
    "gdnative-bindings-lily",
];

#[derive(Debug, Clone, Copy)]
pub struct RerunPolicy {
    pub rerun: bool,
    pub retry_failed: bool,
    pub max_age: Duration,
}

/// Why a selected crate does not run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Leave {
    /// It has a result younger than `--max-age`.
    Finished,
    /// `--retry-failed`, and its last verdict is not a failure (or it has none).
    NotFailed,
}

impl RerunPolicy {
    /// `None`: run it. `existing` is what the store knows of the crate's last result, if any.
    pub fn leave_out(&self, existing: Option<&Existing>, now: OffsetDateTime) -> Option<Leave> {
        if self.rerun {
            return None;
        }
        if self.retry_failed {
            return match existing.and_then(|e| e.status) {
                Some(status) if status.is_failure() => None,
                _ => Some(Leave::NotFailed),
            };
        }
        match existing?.finished_at {
            // A result from the future (clock skew) is fresh, not stale.
            Some(at) if (now - at).unsigned_abs() < self.max_age || at > now => {
                Some(Leave::Finished)
            }
            Some(_) => None,
            // Unreadable timestamps: trust the verdict rather than redo the work.
            None => Some(Leave::Finished),
        }
    }
}

/// The crates never to run: the built-in list and the names in `files` (one a line, `#`
/// comments, blank lines ignored).
pub fn ignore_list(files: &[impl AsRef<Path>]) -> Result<HashSet<String>> {
    let mut names: HashSet<String> = BUILTIN_IGNORE.iter().map(|s| s.to_string()).collect();
    for file in files {
        let file = file.as_ref();
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("--ignore-file {}: cannot read it", file.display()))?;
        for (i, line) in text.lines().enumerate() {
            let name = line.split('#').next().unwrap_or("").trim();
            if name.is_empty() {
                continue;
            }
            crater_proto::crate_ref::validate_name(name)
                .with_context(|| format!("--ignore-file {}:{}: `{name}`", file.display(), i + 1))?;
            names.insert(name.to_owned());
        }
    }
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crater_proto::verdict::Verdict;

    const DAY: Duration = Duration::from_secs(24 * 3600);

    fn stored(status: Verdict, days_ago: i64, now: OffsetDateTime) -> Existing {
        let at = now - time::Duration::days(days_ago);
        let text = at
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap();
        let mut r: crate::results::record::ResultRecord =
            serde_json::from_value(serde_json::json!({
                "crate": "c", "version": "1.0.0", "tool": "check", "target": "t", "status": "pass",
                "source": "crates.io", "exit_code": 0, "timed_out": false, "duration_ms": 1,
                "peak_memory_bytes": 0, "started_at": text, "finished_at": text, "attempt": 1,
                "tries": 1, "agent": "a", "slot": 0, "log_bytes": 0, "log_sha256": ""
            }))
            .unwrap();
        r.status = status;
        Existing::from(&r)
    }

    #[test]
    fn by_default_results_younger_than_max_age_are_finished() {
        let now = OffsetDateTime::now_utc();
        let policy = RerunPolicy {
            rerun: false,
            retry_failed: false,
            max_age: 30 * DAY,
        };
        assert_eq!(policy.leave_out(None, now), None, "never ran: run it");
        let fresh = stored(Verdict::BuildFail, 29, now);
        assert_eq!(policy.leave_out(Some(&fresh), now), Some(Leave::Finished));
        let stale = stored(Verdict::Pass, 31, now);
        assert_eq!(
            policy.leave_out(Some(&stale), now),
            None,
            "older than --max-age"
        );
        let rerun = RerunPolicy {
            rerun: true,
            ..policy
        };
        assert_eq!(rerun.leave_out(Some(&fresh), now), None);
    }

    #[test]
    fn retry_failed_runs_exactly_the_failures() {
        let now = OffsetDateTime::now_utc();
        let policy = RerunPolicy {
            rerun: false,
            retry_failed: true,
            max_age: 30 * DAY,
        };
        for verdict in Verdict::ALL {
            let r = stored(*verdict, 1, now);
            let runs = policy.leave_out(Some(&r), now).is_none();
            let expected = matches!(
                verdict,
                Verdict::BuildFail
                    | Verdict::TestFail
                    | Verdict::Timeout
                    | Verdict::Oom
                    | Verdict::Error
                    | Verdict::Ub
            );
            assert_eq!(runs, expected, "{verdict}");
        }
        assert_eq!(
            policy.leave_out(None, now),
            Some(Leave::NotFailed),
            "no result: not a failure"
        );
    }

    #[test]
    fn the_ignore_list_is_builtin_plus_files() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("ignore.txt");
        std::fs::write(&file, "# noisy crates\nloud-crate\n\n  other_one  # why\n").unwrap();
        let names = ignore_list(&[&file]).unwrap();
        assert!(
            names.contains("stdweb") && names.contains("loud-crate") && names.contains("other_one")
        );
        assert_eq!(names.len(), BUILTIN_IGNORE.len() + 2);
        std::fs::write(&file, "fine\n../etc\n").unwrap();
        let err = format!("{:#}", ignore_list(&[&file]).unwrap_err());
        assert!(err.contains(":2: `../etc`"), "{err}");
    }
}
