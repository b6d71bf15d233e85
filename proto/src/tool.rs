//! The tools a crate can be run through.
//!
//! A tool's commands live in the worker loop (`docker/worker.sh`, function `tool_NAME`), next to
//! the container they run in; this enum is the list both sides agree on. Adding a tool is a
//! variant here and a function there.

use std::fmt;
use std::str::FromStr;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Tool {
    /// `cargo check`.
    Check,
    /// `cargo test --no-run`, optimised with debug assertions (as the seed).
    Build,
    /// `cargo test --no-fail-fast`, after building the tests.
    Test,
    /// The tests under Miri (nextest, one interpreter per test), then the doc tests.
    Miri,
    /// The tests built and run with AddressSanitizer.
    Asan,
}

impl Tool {
    pub const ALL: &[Tool] = &[Tool::Check, Tool::Build, Tool::Test, Tool::Miri, Tool::Asan];

    pub fn name(self) -> &'static str {
        match self {
            Tool::Check => "check",
            Tool::Build => "build",
            Tool::Test => "test",
            Tool::Miri => "miri",
            Tool::Asan => "asan",
        }
    }
}

impl fmt::Display for Tool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[derive(Debug, thiserror::Error)]
#[error("unknown tool `{0}` (known tools: check, build, test, miri, asan)")]
pub struct UnknownTool(String);

impl FromStr for Tool {
    type Err = UnknownTool;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Tool::ALL
            .iter()
            .copied()
            .find(|t| t.name() == s)
            .ok_or_else(|| UnknownTool(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for &tool in Tool::ALL {
            assert_eq!(tool.name().parse::<Tool>().unwrap(), tool);
        }
        let err = "miri2".parse::<Tool>().unwrap_err().to_string();
        assert!(err.contains("miri2"), "{err}");
    }
}
