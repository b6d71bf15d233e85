//! What a person watching `run` or `serve` sees: a progress bar with counts and rate, a line per
//! finished crate, and a summary table at the end.
//!
//! On a terminal the bar redraws in place; elsewhere (CI logs, tests) the same information comes
//! as plain lines, so nothing depends on a TTY.

use crate::serve::Event;
use crater_proto::pb;
use crater_proto::verdict::Verdict;
use indicatif::{ProgressBar, ProgressStyle};
use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::time::{Duration, Instant};

pub struct Progress {
    bar: Option<ProgressBar>,
    total: u64,
    finished: Vec<Finished>,
    started: Instant,
}

pub struct Finished {
    pub name: String,
    pub version: String,
    pub verdict: Verdict,
    pub note: Option<String>,
}

impl Progress {
    pub fn new(total: u64) -> Progress {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::new(total);
            bar.set_style(
                ProgressStyle::with_template(
                    "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} {msg}",
                )
                .expect("a valid template")
                .progress_chars("=> "),
            );
            bar.enable_steady_tick(Duration::from_millis(200));
            bar
        });
        Progress {
            bar,
            total,
            finished: Vec::new(),
            started: Instant::now(),
        }
    }

    pub fn on_event(&mut self, event: Event) {
        let Event::Finished {
            name,
            version,
            verdict,
            duration,
            note,
        } = event;
        let n = self.finished.len() + 1;
        let mut line = format!(
            "[{n}/{}] {:<12} {name} {version} ({:.1}s)",
            self.total,
            verdict.name(),
            duration.as_secs_f64()
        );
        if let Some(note) = &note {
            line.push_str(&format!(": {note}"));
        }
        match &self.bar {
            Some(bar) => {
                bar.println(line);
                bar.set_position(n as u64);
            }
            None => eprintln!("{line}"),
        }
        self.finished.push(Finished {
            name,
            version,
            verdict,
            note,
        });
    }

    pub fn on_status(&self, status: &pb::StatusReply) {
        if let Some(bar) = &self.bar {
            bar.set_message(status_line(status));
        }
    }

    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }

    pub fn finished(&self) -> &[Finished] {
        &self.finished
    }

    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }
}

/// `running 2 · queued 5 · pass 3 · build-fail 1 · 1.9/min`
pub fn status_line(status: &pb::StatusReply) -> String {
    let mut parts = vec![
        format!("running {}", status.running),
        format!("queued {}", status.queued),
    ];
    let verdicts: BTreeMap<&String, &u64> = status.verdicts.iter().collect();
    parts.extend(verdicts.iter().map(|(v, n)| format!("{v} {n}")));
    parts.push(format!("{:.1}/min", status.crates_per_minute));
    if status.unstored > 0 {
        let mut unstored = format!("{} unstored", status.unstored);
        if !status.store_error.is_empty() {
            unstored.push_str(" (store failing, retrying)");
        }
        if status.backpressure {
            unstored.push_str(", paused");
        }
        parts.push(unstored);
    }
    parts.join(" · ")
}

/// The table `run` ends with: counts by verdict, then every crate that did not pass.
pub fn summary(finished: &[Finished], elapsed: Duration, results_dir: &str) -> String {
    let mut counts: BTreeMap<Verdict, u64> = BTreeMap::new();
    for f in finished {
        *counts.entry(f.verdict).or_default() += 1;
    }
    let mut out = String::from("\n  verdict        crates\n  -------------  ------\n");
    for (verdict, n) in &counts {
        out.push_str(&format!("  {:<13}  {n:>6}\n", verdict.name()));
    }
    out.push_str(&format!(
        "  {:<13}  {:>6}   in {}\n",
        "total",
        finished.len(),
        humantime::format_duration(Duration::from_secs(elapsed.as_secs()))
    ));
    let failures: Vec<&Finished> = finished
        .iter()
        .filter(|f| f.verdict != Verdict::Pass)
        .collect();
    if !failures.is_empty() {
        out.push_str("\n  not passing:\n");
        for f in failures.iter().take(50) {
            out.push_str(&format!(
                "    {:<13} {} {}",
                f.verdict.name(),
                f.name,
                f.version
            ));
            if let Some(note) = &f.note {
                out.push_str(&format!("  ({note})"));
            }
            out.push('\n');
        }
        if failures.len() > 50 {
            out.push_str(&format!("    … and {} more\n", failures.len() - 50));
        }
    }
    out.push_str(&format!("\n  results: {results_dir}\n"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_counts_verdicts_and_lists_failures() {
        let f = |name: &str, verdict| Finished {
            name: name.into(),
            version: "1.0.0".into(),
            verdict,
            note: None,
        };
        let text = summary(
            &[
                f("a", Verdict::Pass),
                f("b", Verdict::BuildFail),
                f("c", Verdict::Pass),
            ],
            Duration::from_secs(75),
            "out/",
        );
        assert!(text.contains("pass                2"), "{text}");
        assert!(text.contains("build-fail          1"), "{text}");
        assert!(text.contains("total               3   in 1m 15s"), "{text}");
        assert!(text.contains("build-fail    b 1.0.0"), "{text}");
        assert!(!text.contains("pass          a"), "{text}");
    }
}
