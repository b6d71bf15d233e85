//! The report's data: `summary.json` (counts and causes, for scripts and for the pages' static
//! parts) and `data.js` (the newest verdict of every crate, which the pages' scripts search).
//!
//! `data.js` is a script, not JSON, because a page opened from a local folder (file://) may not
//! `fetch()` a file beside it, while `<script src>` works there and from a bucket alike. Each
//! crate is a short array rather than an object, and causes are numbered, so 200,000 crates stay
//! a few megabytes.

use super::catalog::Catalog;
use super::context::{Context, is_failure};
use crate::results::diagnose::Cause;
use crate::results::record::ResultRecord;
use crater_proto::tool::Tool;
use crater_proto::verdict::Verdict;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// Counts and causes of a tool's newest verdicts.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub tool: String,
    pub generated_at: String,
    /// Crates (their newest version each).
    pub crates: usize,
    /// Stored results, every version.
    pub results: usize,
    /// Crates by verdict, every verdict listed.
    pub verdicts: BTreeMap<String, usize>,
    /// The earliest start and latest end of any stored result.
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    pub targets: Vec<String>,
    /// The toolchains results were made with (more than one if it changed mid-run).
    pub toolchains: Vec<String>,
    pub agents: usize,
    /// Crates by UB cause, most first.
    pub ub_causes: Vec<CauseCount>,
    /// Failing crates (not UB) by cause, most first.
    pub failure_causes: Vec<CauseCount>,
}

/// How many crates share a cause.
#[derive(Debug, Clone, Serialize)]
pub struct CauseCount {
    pub kind: String,
    pub detector: String,
    pub crates: usize,
    /// One crate's message for it, to say what it is.
    pub example: String,
}

impl Summary {
    /// `causes[i]` are `newest[i]`'s (see [`causes_of`](super::context::causes_of)).
    pub fn of(
        catalog: &Catalog,
        newest: &[&ResultRecord],
        causes: &[Vec<Cause>],
        context: &Context,
    ) -> Summary {
        let mut verdicts: BTreeMap<String, usize> = Verdict::ALL
            .iter()
            .map(|v| (v.name().to_owned(), 0))
            .collect();
        let mut ub = Counter::default();
        let mut failures = Counter::default();
        for (record, causes) in newest.iter().zip(causes) {
            *verdicts.entry(record.status.name().to_owned()).or_default() += 1;
            if record.status == Verdict::Ub {
                ub.add(causes);
            } else if is_failure(record.status) {
                failures.add(causes);
            }
        }
        let all = || catalog.all();
        let targets: BTreeSet<&str> = all()
            .map(|r| r.target.as_str())
            .filter(|t| !t.is_empty())
            .collect();
        let toolchains: BTreeSet<&str> = all()
            .map(|r| r.toolchain.as_str())
            .filter(|t| !t.is_empty())
            .collect();
        let agents: BTreeSet<&str> = all()
            .map(|r| r.agent.as_str())
            .filter(|a| !a.is_empty())
            .collect();
        Summary {
            tool: catalog.tool.to_string(),
            generated_at: context.generated_at.clone(),
            crates: newest.len(),
            results: catalog.len(),
            verdicts,
            // RFC 3339 times in UTC sort as text.
            started_at: all().map(|r| r.started_at.clone()).min(),
            finished_at: all().map(|r| r.finished_at.clone()).max(),
            targets: targets.into_iter().map(str::to_owned).collect(),
            toolchains: toolchains.into_iter().map(str::to_owned).collect(),
            agents: agents.len(),
            ub_causes: ub.sorted(),
            failure_causes: failures.sorted(),
        }
    }

    pub fn count(&self, verdict: Verdict) -> usize {
        self.verdicts.get(verdict.name()).copied().unwrap_or(0)
    }

    pub fn to_json(&self) -> Vec<u8> {
        let mut json = serde_json::to_vec_pretty(self).expect("a summary serializes");
        json.push(b'\n');
        json
    }
}

/// Crates by (kind, detector), each crate once per kind.
#[derive(Default)]
struct Counter {
    counts: HashMap<(String, String), (usize, String)>,
}

impl Counter {
    fn add(&mut self, causes: &[Cause]) {
        let mut seen = BTreeSet::new();
        for cause in causes {
            let key = (cause.kind.clone(), cause.detector.clone());
            if seen.insert(key.clone()) {
                let entry = (self.counts.entry(key)).or_insert_with(|| (0, cause.message.clone()));
                entry.0 += 1;
            }
        }
    }

    fn sorted(self) -> Vec<CauseCount> {
        let mut counts: Vec<CauseCount> = self
            .counts
            .into_iter()
            .map(|((kind, detector), (crates, example))| CauseCount {
                kind,
                detector,
                crates,
                example,
            })
            .collect();
        counts.sort_by(|a, b| b.crates.cmp(&a.crates).then_with(|| a.kind.cmp(&b.kind)));
        counts
    }
}

/// `window.CRATER = {...}`: the tool, the verdict and cause names, and one
/// `[name, version, verdict, [causes], downloads]` per crate; `causes[i]` are `newest[i]`'s.
pub fn data_js(
    tool: Tool,
    newest: &[&ResultRecord],
    causes: &[Vec<Cause>],
    context: &Context,
) -> String {
    let mut cause_ids: HashMap<String, usize> = HashMap::new();
    let mut cause_names: Vec<String> = Vec::new();
    let crates: Vec<serde_json::Value> = (newest.iter().zip(causes))
        .map(|(record, record_causes)| {
            let verdict = Verdict::ALL
                .iter()
                .position(|v| *v == record.status)
                .expect("every verdict is in ALL");
            let mut causes: Vec<usize> = (record_causes.iter())
                .map(|cause| {
                    *cause_ids.entry(cause.kind.clone()).or_insert_with(|| {
                        cause_names.push(cause.kind.clone());
                        cause_names.len() - 1
                    })
                })
                .collect();
            causes.dedup();
            let downloads = context.downloads.get(&record.name).copied().unwrap_or(0);
            serde_json::json!([record.name, record.version, verdict, causes, downloads])
        })
        .collect();
    let verdicts: Vec<&str> = Verdict::ALL.iter().map(|v| v.name()).collect();
    let data = serde_json::json!({
        "tool": tool.name(),
        "generated_at": context.generated_at,
        "log_suffix": context.log_suffix,
        "verdicts": verdicts,
        "causes": cause_names,
        "crates": crates,
    });
    // JSON is a JavaScript expression (since ES2019 even with U+2028 inside a string), and a
    // file loaded by `<script src>` is not HTML, so a name holding `</script>` is harmless here.
    format!("window.CRATER = {data};\n")
}
