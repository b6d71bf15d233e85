//! Turning the facts an agent reports about a job into its verdict.
//!
//! The agent says what happened (which step failed, exit status, limits hit, harness trouble);
//! only the coordinator decides what that means, so every agent's results are judged alike.

use crate::results::diagnose::{Cause, Diagnosis};
use crater_proto::pb;
use crater_proto::verdict::Verdict;

/// The `detector` of causes that are a limit the job ran into, not a report in its log.
pub const LIMIT_DETECTOR: &str = "limit";

/// The causes the facts alone give a verdict, beside the log's UB reports: a failed job that
/// filled its disk failed for that (`no-space`), whatever step it was in.
pub fn limit_causes(done: &pb::JobDone, verdict: Verdict) -> Vec<Cause> {
    let mut causes = Vec::new();
    if done.no_space && verdict.is_failure() {
        causes.push(Cause {
            kind: "no-space".to_owned(),
            detector: LIMIT_DETECTOR.to_owned(),
            source_crate: None,
            message: "the job filled its disk (the agent's --disk-gb per slot) or its /tmp"
                .to_owned(),
        });
    }
    causes
}

/// `diagnosis` is what the log says: a failure with UB reports in its log is `ub`. A passing
/// job stays `pass` whatever its log says (a test may print such words, or expect the panic).
pub fn decide(done: &pb::JobDone, diagnosis: &Diagnosis) -> Verdict {
    let failed = done.timed_out || !done.failed_step.is_empty() || done.exit_code != 0;
    if done.oom && failed {
        // The kernel killed part of the job for memory: whatever failed after that is spurious.
        Verdict::Oom
    } else if done.timed_out {
        // Before `error`: a job that outlived even the agent's backstop did time out.
        Verdict::Timeout
    } else if !done.harness_error.is_empty() {
        Verdict::Error
    } else if !failed {
        Verdict::Pass
    } else if !diagnosis.causes.is_empty() {
        Verdict::Ub
    } else {
        Verdict::for_failed_step(&done.failed_step)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::results::diagnose::Cause;

    fn decide(done: &pb::JobDone) -> Verdict {
        super::decide(done, &Diagnosis::default())
    }

    #[test]
    fn a_failure_with_ub_reports_is_ub_a_pass_stays_a_pass() {
        let ub = Diagnosis {
            causes: vec![Cause {
                kind: "heap-buffer-overflow".into(),
                detector: "asan".into(),
                source_crate: Some("foo".into()),
                message: "ERROR: AddressSanitizer: heap-buffer-overflow".into(),
            }],
            probable_false_positive: false,
        };
        assert_eq!(super::decide(&done("test", 101), &ub), Verdict::Ub);
        assert_eq!(super::decide(&done("", 0), &ub), Verdict::Pass);
        let oom = pb::JobDone {
            oom: true,
            ..done("test", 137)
        };
        assert_eq!(super::decide(&oom, &ub), Verdict::Oom);
    }

    fn done(step: &str, exit: i32) -> pb::JobDone {
        pb::JobDone {
            failed_step: step.into(),
            exit_code: exit,
            ..Default::default()
        }
    }

    #[test]
    fn a_failure_that_filled_the_disk_says_so_and_keeps_its_steps_verdict() {
        let full = pb::JobDone {
            no_space: true,
            ..done("build", 101)
        };
        let verdict = decide(&full);
        assert_eq!(verdict, Verdict::BuildFail);
        let causes = limit_causes(&full, verdict);
        assert_eq!(causes.len(), 1);
        assert_eq!(causes[0].kind, "no-space");
        assert_eq!(causes[0].detector, LIMIT_DETECTOR);
        let passed = pb::JobDone {
            no_space: true,
            ..done("", 0)
        };
        assert!(
            limit_causes(&passed, decide(&passed)).is_empty(),
            "a job that passed with a full disk did not fail for it"
        );
        assert!(limit_causes(&done("test", 101), Verdict::TestFail).is_empty());
    }

    #[test]
    fn each_outcome_gets_its_verdict() {
        assert_eq!(decide(&done("", 0)), Verdict::Pass);
        assert_eq!(decide(&done("prepare", 101)), Verdict::PrepareFail);
        assert_eq!(decide(&done("build", 101)), Verdict::BuildFail);
        assert_eq!(decide(&done("test", 101)), Verdict::TestFail);
        let timed_out = pb::JobDone {
            timed_out: true,
            ..done("test", 124)
        };
        assert_eq!(decide(&timed_out), Verdict::Timeout);
        let oom = pb::JobDone {
            oom: true,
            ..done("build", 137)
        };
        assert_eq!(decide(&oom), Verdict::Oom);
        let oom_timeout = pb::JobDone {
            oom: true,
            timed_out: true,
            ..done("test", 124)
        };
        assert_eq!(decide(&oom_timeout), Verdict::Oom);
        let survived = pb::JobDone {
            oom: true,
            ..done("", 0)
        };
        assert_eq!(
            decide(&survived),
            Verdict::Pass,
            "a test may OOM-kill a child and pass"
        );
        let harness = pb::JobDone {
            harness_error: "container lost".into(),
            ..done("", 0)
        };
        assert_eq!(decide(&harness), Verdict::Error, "never a pass");
    }
}
