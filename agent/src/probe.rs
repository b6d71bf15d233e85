//! What this agent can run: every tool's probe, asked once at start of the worker image with the
//! slots' own mounts, so the answer is about the containers that will do the work.
//!
//! The coordinator gives a job only to an agent that can run its tool, and `run` refuses a tool
//! the local agent lacks at once, with the reason, instead of failing every crate.

use crate::slot::{SlotConfig, run_once};
use anyhow::Result;
use bollard::Docker;
use std::collections::BTreeMap;

/// Tool name → `Ok(())` or why it cannot run here.
pub type Capabilities = BTreeMap<String, Result<(), String>>;

pub async fn probe_tools(docker: &Docker, config: &SlotConfig) -> Result<Capabilities> {
    let output = run_once(docker, config, &["--probe"]).await?;
    let capabilities = parse_probe(&output);
    if capabilities.is_empty() {
        anyhow::bail!("the worker image answered the tool probe with {output:?}");
    }
    Ok(capabilities)
}

/// Parses the worker's `NAME ok` / `NAME missing REASON` lines.
pub fn parse_probe(output: &str) -> Capabilities {
    output
        .lines()
        .filter_map(|line| {
            let mut words = line.trim().splitn(3, ' ');
            let tool = words.next()?.to_owned();
            match (words.next()?, words.next()) {
                ("ok", _) => Some((tool, Ok(()))),
                ("missing", reason) => Some((tool, Err(reason.unwrap_or("").to_owned()))),
                _ => None,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_probe_lines() {
        let caps =
            parse_probe("check ok\nmiri missing cargo-miri is not in the toolchain\r\nnoise\n");
        assert_eq!(caps.len(), 2);
        assert_eq!(caps["check"], Ok(()));
        assert_eq!(
            caps["miri"],
            Err("cargo-miri is not in the toolchain".to_owned())
        );
    }
}
