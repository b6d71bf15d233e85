//! How a crate's run ended.

use serde::{Deserialize, Serialize};
use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    Pass,
    /// The manifest or the dependencies could not be resolved or fetched.
    PrepareFail,
    BuildFail,
    TestFail,
    Timeout,
    Oom,
    /// Undefined behaviour found (Miri, ASan).
    Ub,
    /// A failure that passed on re-run.
    Flaky,
    /// Not run, on purpose (yanked, ignored); the reason is in the result.
    Skipped,
    /// The harness failed, not the crate. Never merged with the crate's own failures.
    Error,
}

impl Verdict {
    pub const ALL: &[Verdict] = &[
        Verdict::Pass,
        Verdict::PrepareFail,
        Verdict::BuildFail,
        Verdict::TestFail,
        Verdict::Timeout,
        Verdict::Oom,
        Verdict::Ub,
        Verdict::Flaky,
        Verdict::Skipped,
        Verdict::Error,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Verdict::Pass => "pass",
            Verdict::PrepareFail => "prepare-fail",
            Verdict::BuildFail => "build-fail",
            Verdict::TestFail => "test-fail",
            Verdict::Timeout => "timeout",
            Verdict::Oom => "oom",
            Verdict::Ub => "ub",
            Verdict::Flaky => "flaky",
            Verdict::Skipped => "skipped",
            Verdict::Error => "error",
        }
    }

    /// The verdicts `--retry-failed` runs again: the crate (or the harness) failed.
    pub fn is_failure(self) -> bool {
        matches!(
            self,
            Verdict::BuildFail
                | Verdict::TestFail
                | Verdict::Timeout
                | Verdict::Oom
                | Verdict::Error
                | Verdict::Ub
        )
    }

    /// The verdict a failing worker step earns: the step names are the worker loop's.
    pub fn for_failed_step(step: &str) -> Verdict {
        match step {
            "prepare" => Verdict::PrepareFail,
            "test" => Verdict::TestFail,
            _ => Verdict::BuildFail,
        }
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serde_names_match_display() {
        for &v in Verdict::ALL {
            let json = serde_json::to_string(&v).unwrap();
            assert_eq!(json, format!("\"{}\"", v.name()));
            assert_eq!(serde_json::from_str::<Verdict>(&json).unwrap(), v);
        }
    }

    #[test]
    fn failed_steps_map_to_verdicts() {
        assert_eq!(Verdict::for_failed_step("prepare"), Verdict::PrepareFail);
        assert_eq!(Verdict::for_failed_step("build"), Verdict::BuildFail);
        assert_eq!(Verdict::for_failed_step("test"), Verdict::TestFail);
    }
}
