//! Writes a synthetic result store for the report's benchmark (bench/report.sh):
//! `synth-store DIR CRATES [BIG_LOG_BYTES] [--touch PERCENT]`.
//!
//! With `--touch PERCENT`, instead rewrites that share of an existing store's verdicts (their
//! JSON, with a new verdict), as a run that stored new results since the last report would.

use crater_coordinator::report::synth;
use crater_proto::tool::Tool;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: synth-store DIR CRATES [BIG_LOG_BYTES] [--touch PERCENT]";
    let dir = std::path::PathBuf::from(args.first().ok_or_else(|| anyhow::anyhow!(usage))?);
    let crates: usize = args.get(1).ok_or_else(|| anyhow::anyhow!(usage))?.parse()?;
    if let Some(at) = args.iter().position(|a| a == "--touch") {
        let percent: f64 = args
            .get(at + 1)
            .ok_or_else(|| anyhow::anyhow!(usage))?
            .parse()?;
        let touched = synth::touch(&dir, Tool::Check, crates, percent)?;
        eprintln!("rewrote {touched} verdicts in {}", dir.display());
        return Ok(());
    }
    let big: u64 = args.get(2).map(|s| s.parse()).transpose()?.unwrap_or(0);
    let records = synth::write_store(&dir, Tool::Check, crates, big)?;
    eprintln!("wrote {} results to {}", records.len(), dir.display());
    Ok(())
}
