//! A crate as users name it: `name`, `name@version` or `name/version`, checked before any work.
//!
//! Names follow crates.io's rules (ASCII letters, digits, `-` and `_`, starting with a letter,
//! at most 64 characters), so a list line like `../etc` is refused here and never becomes a path
//! in the store or a URL.

use std::fmt;
use std::str::FromStr;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CrateRef {
    pub name: String,
    /// `None`: the newest non-yanked version.
    pub version: Option<semver::Version>,
}

/// A refused entry, naming it as the user wrote it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{entry}`: {problem}")]
pub struct CrateRefError {
    pub entry: String,
    pub problem: Problem,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    #[error("empty crate name")]
    EmptyName,
    #[error("invalid crate name `{name}`: {reason}")]
    BadName { name: String, reason: &'static str },
    #[error("invalid version `{version}`: {reason}")]
    BadVersion { version: String, reason: String },
}

pub const MAX_NAME_LEN: usize = 64;

/// Checks a crate name against crates.io's rules.
pub fn validate_name(name: &str) -> Result<(), Problem> {
    let bad = |reason| {
        Err(Problem::BadName {
            name: name.to_owned(),
            reason,
        })
    };
    let Some(first) = name.chars().next() else {
        return Err(Problem::EmptyName);
    };
    if name.len() > MAX_NAME_LEN {
        return bad("longer than 64 characters");
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return bad("only ASCII letters, digits, `-` and `_` are allowed");
    }
    if !first.is_ascii_alphabetic() {
        return bad("must start with an ASCII letter");
    }
    Ok(())
}

impl FromStr for CrateRef {
    type Err = CrateRefError;

    fn from_str(entry: &str) -> Result<Self, Self::Err> {
        let trimmed = entry.trim();
        let (name, version) = match trimmed.split_once(['@', '/']) {
            Some((name, version)) => (name, Some(version)),
            None => (trimmed, None),
        };
        let parse = || -> Result<CrateRef, Problem> {
            validate_name(name)?;
            let version = version
                .map(|v| {
                    semver::Version::parse(v).map_err(|e| Problem::BadVersion {
                        version: v.to_owned(),
                        reason: e.to_string(),
                    })
                })
                .transpose()?;
            Ok(CrateRef {
                name: name.to_owned(),
                version,
            })
        };
        parse().map_err(|problem| CrateRefError {
            entry: trimmed.to_owned(),
            problem,
        })
    }
}

impl fmt::Display for CrateRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.version {
            Some(v) => write!(f, "{}@{}", self.name, v),
            None => f.write_str(&self.name),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_three_forms() {
        let r: CrateRef = "itoa".parse().unwrap();
        assert_eq!((r.name.as_str(), r.version), ("itoa", None));
        for entry in ["semver@1.0.0", "semver/1.0.0", "  semver@1.0.0 "] {
            let r: CrateRef = entry.parse().unwrap();
            assert_eq!(r.name, "semver");
            assert_eq!(r.version, Some(semver::Version::new(1, 0, 0)));
        }
        let pre: CrateRef = "tokio_foo-2@0.1.0-alpha.1".parse().unwrap();
        assert_eq!(pre.version.unwrap().pre.as_str(), "alpha.1");
    }

    #[test]
    fn refuses_bad_entries_naming_them() {
        for (entry, needle) in [
            ("../etc", "../etc"),
            ("", "empty"),
            ("@1.0.0", "empty"),
            ("1abc", "start with"),
            ("a b", "only ASCII"),
            ("foo@not-a-version", "not-a-version"),
            ("foo@1.0", "foo"),
        ] {
            let err = entry.parse::<CrateRef>().unwrap_err().to_string();
            assert!(err.contains(needle), "{entry:?} gave {err:?}");
        }
        let long = "a".repeat(65);
        assert!(long.parse::<CrateRef>().is_err());
        assert!("a".repeat(64).parse::<CrateRef>().is_ok());
    }
}
