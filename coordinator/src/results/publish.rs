//! The result path of one finished job: its spooled log checked, diagnosed, judged into a
//! verdict, a failure's causes found, and committed with its JSON record to the outbox.
//!
//! This is where a job becomes a result; serving agents only hands over what the agent said
//! ([`pb::JobDone`]) and the log it sent. It runs in a task of its own per job, so a large log
//! never stalls the agent's stream; diagnosing and committing are blocking I/O and go to the
//! blocking pool.

use crate::results::diagnose::diagnose;
use crate::results::failure_causes::{diagnose_and_explain, explained_by_log, fact_causes};
use crate::results::outbox::Outbox;
use crate::results::record::ResultRecord;
use crate::results::spool::SpooledLog;
use crate::results::verdict::{decide, limit_causes};
use crater_proto::pb;
use crater_proto::tool::Tool;
use crater_proto::verdict::Verdict;
use std::time::Duration;

/// What a result is of: the job as it ran.
#[derive(Debug, Clone, Copy)]
pub struct Job<'a> {
    pub name: &'a str,
    pub version: &'a str,
    pub tool: Tool,
    pub target: &'a str,
    /// `crates.io` or the local directory the crate came from.
    pub source: &'a str,
    /// The agent that ran it.
    pub agent: &'a str,
    /// The toolchain it ran with, as `rustc -V` says it.
    pub toolchain: &'a str,
}

/// Commits one result to `outbox`: the verdict, and the harness error (if any) as a note for
/// the person watching.
pub async fn publish(
    outbox: &Outbox,
    job: Job<'_>,
    mut done: pb::JobDone,
    log: SpooledLog,
) -> anyhow::Result<(Verdict, Option<String>)> {
    let SpooledLog {
        path,
        len: received,
        sha256: sha,
        broken,
    } = log;
    let problem = match broken {
        Some(broken) => Some(format!("spooling the log failed: {broken}")),
        None => (received != done.log_bytes || sha != done.log_sha256).then(|| {
            format!(
                "the log arrived incomplete ({received} of {} bytes)",
                done.log_bytes
            )
        }),
    };
    if let Some(problem) = problem
        && done.harness_error.is_empty()
    {
        done.harness_error = problem;
    }
    // A job that did not fail can only be `pass` or `error`, whose causes are not in the log:
    // only a failed one's log is also searched for failure causes (in the same pass).
    let failed = done.timed_out || !done.failed_step.is_empty() || done.exit_code != 0;
    let (diagnosis, log_causes) = {
        let (path, name) = (path.clone(), job.name.to_owned());
        tokio::task::spawn_blocking(move || {
            let log = std::io::BufReader::new(std::fs::File::open(path)?);
            if failed {
                diagnose_and_explain(log, &name)
            } else {
                Ok((diagnose(log, &name)?, Vec::new()))
            }
        })
        .await??
    };
    let verdict = decide(&done, &diagnosis);
    let mut causes = diagnosis.causes;
    causes.extend(limit_causes(&done, verdict));
    if explained_by_log(verdict) {
        causes.extend(log_causes);
    }
    let finished_at = time::OffsetDateTime::now_utc();
    let started_at = finished_at - Duration::from_millis(done.duration_ms);
    let mut record = ResultRecord {
        name: job.name.to_owned(),
        version: job.version.to_owned(),
        tool: job.tool.to_string(),
        target: job.target.to_owned(),
        status: verdict,
        source: job.source.to_owned(),
        failed_step: (!done.failed_step.is_empty()).then(|| done.failed_step.clone()),
        exit_code: done.exit_code,
        timed_out: done.timed_out,
        timeout_kind: (!done.timeout_kind.is_empty()).then(|| done.timeout_kind.clone()),
        oom: done.oom,
        log_truncated_bytes: done.log_truncated_bytes,
        causes,
        probable_false_positive: diagnosis.probable_false_positive,
        skip_reason: None,
        harness_error: (!done.harness_error.is_empty()).then(|| done.harness_error.clone()),
        duration_ms: done.duration_ms,
        peak_memory_bytes: done.peak_memory_bytes,
        started_at: rfc3339(started_at),
        finished_at: rfc3339(finished_at),
        attempt: done.attempt,
        tries: done.tries,
        agent: job.agent.to_owned(),
        toolchain: job.toolchain.to_owned(),
        slot: done.slot,
        log_bytes: received,
        log_sha256: sha,
    };
    // A timeout, an OOM kill, a harness error, or a failure nothing explained.
    let facts = fact_causes(&record);
    record.causes.extend(facts);
    let outbox = outbox.clone();
    let tool = job.tool;
    let note = record.harness_error.clone();
    tokio::task::spawn_blocking(move || outbox.commit(tool, &record, &path)).await??;
    Ok((verdict, note))
}

fn rfc3339(t: time::OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}
