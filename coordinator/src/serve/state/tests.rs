//! The state's rules, on a fake clock: assignment, backpressure, lost and silent agents.

use super::*;
use crater_proto::tool::Tool;

const LEASE: Duration = Duration::from_secs(45);

fn job(name: &str, tool: Tool) -> JobSpec {
    JobSpec {
        name: name.into(),
        version: "1.0.0".into(),
        source: JobSource::Registry {
            checksum: "sum".into(),
        },
        tool,
        target: String::new(),
    }
}

fn agent(
    tools: &[&str],
) -> (
    Agent,
    mpsc::Receiver<Result<pb::CoordinatorMessage, tonic::Status>>,
) {
    let (tx, rx) = mpsc::channel(8);
    let agent = Agent {
        name: "a".into(),
        slots: 2,
        tools: tools.iter().map(|t| t.to_string()).collect(),
        targets: vec!["x86_64-unknown-linux-gnu".into()],
        tx,
        connected: Instant::now(),
        last_heard: Instant::now(),
    };
    (agent, rx)
}

fn assigned(answer: &WantWork) -> Option<(JobId, String)> {
    let (_, message) = answer.assign.as_ref()?;
    match &message.msg {
        Some(CoordMsg::Assign(a)) => Some((a.job_id, a.target.clone())),
        _ => None,
    }
}

#[test]
fn a_slot_gets_a_job_for_a_tool_its_agent_has_on_its_host_target() {
    let mut state = State::new(
        vec![job("a", Tool::Miri), job("b", Tool::Check)],
        pb::Limits::default(),
        LEASE,
    );
    let (agent, _rx) = agent(&["check"]);
    let (conn, draining) = state.connect(agent);
    assert!(!draining);
    let answer = state.want_work(conn, 0, Instant::now(), false);
    assert_eq!(
        assigned(&answer),
        Some((1, "x86_64-unknown-linux-gnu".into())),
        "not the miri job"
    );
    assert!(assigned(&state.want_work(conn, 1, Instant::now(), false)).is_none());
}

#[test]
fn backpressure_parks_free_slots_until_it_ends() {
    let mut state = State::new(vec![job("a", Tool::Check)], pb::Limits::default(), LEASE);
    let (agent, _rx) = agent(&["check"]);
    let (conn, _) = state.connect(agent);
    let answer = state.want_work(conn, 0, Instant::now(), true);
    assert!(answer.backpressure_began && answer.assign.is_none());
    assert!(
        !state
            .want_work(conn, 1, Instant::now(), true)
            .backpressure_began,
        "once per episode"
    );
    let sends = state
        .end_backpressure(Instant::now())
        .expect("there was backpressure");
    assert_eq!(sends.len(), 1, "a parked slot gets the job");
    assert!(state.end_backpressure(Instant::now()).is_none());
}

#[test]
fn a_lost_agents_job_goes_to_another_and_only_the_new_lease_counts() {
    let mut state = State::new(vec![job("a", Tool::Check)], pb::Limits::default(), LEASE);
    let (first, _rx1) = agent(&["check"]);
    let (second, _rx2) = agent(&["check"]);
    let (one, _) = state.connect(first);
    let (two, _) = state.connect(second);
    assert!(assigned(&state.want_work(one, 0, Instant::now(), false)).is_some());
    assert!(
        assigned(&state.want_work(two, 0, Instant::now(), false)).is_none(),
        "parked"
    );
    let lost = state.disconnect(one, Instant::now(), false);
    assert_eq!(
        (lost.agent.as_deref(), lost.requeued, lost.sends.len()),
        (Some("a"), 1, 1)
    );
    assert!(state.begin_finish(0, one, 1).is_none(), "the stale attempt");
    let (spec, _) = state.begin_finish(0, two, 2).expect("the current lease");
    assert_eq!(spec.target, "x86_64-unknown-linux-gnu");
    assert!(state.finish(0, Verdict::Pass));
    let status = state.status(Instant::now(), Duration::from_secs(60), &Backlog::default());
    assert_eq!((status.finished, status.verdicts["pass"]), (1, 1));
}

#[test]
fn a_silent_agent_loses_its_jobs_past_the_lease_timeout_and_a_talking_one_keeps_them() {
    let start = Instant::now();
    let at = |secs: u64| start + Duration::from_secs(secs);
    let jobs = vec![job("a", Tool::Check), job("b", Tool::Check)];
    let mut state = State::new(jobs, pb::Limits::default(), LEASE);
    let (mut silent, _rx1) = agent(&["check"]);
    let (mut talking, _rx2) = agent(&["check"]);
    let (mut spare, _rx3) = agent(&["check"]);
    for a in [&mut silent, &mut talking, &mut spare] {
        (a.connected, a.last_heard) = (start, start);
    }
    silent.name = "silent".into();
    let (silent, _) = state.connect(silent);
    let (talking, _) = state.connect(talking);
    let (spare, _) = state.connect(spare);
    assert!(assigned(&state.want_work(silent, 0, at(0), false)).is_some());
    assert!(assigned(&state.want_work(talking, 0, at(0), false)).is_some());
    assert!(
        assigned(&state.want_work(spare, 0, at(0), false)).is_none(),
        "parked"
    );
    // The talking agent's heartbeats renew its lease; the silent one says nothing.
    for secs in (10..=40).step_by(10) {
        assert!(state.heard(talking, at(secs)));
        assert!(state.heard(spare, at(secs)));
        assert!(state.expire(at(secs), false).0.is_empty());
    }
    assert!(
        state.expire(at(45), false).0.is_empty(),
        "not past the timeout yet"
    );
    let (expired, sends) = state.expire(at(46), false);
    assert_eq!(expired.len(), 1);
    assert_eq!(
        (expired[0].agent.as_str(), expired[0].requeued),
        ("silent", 1)
    );
    assert_eq!(expired[0].silent_for, Duration::from_secs(46));
    assert_eq!(sends.len(), 1, "the parked slot gets the job at once");
    assert!(
        !state.heard(silent, at(50)),
        "an expired agent is not heard"
    );
    assert!(
        state.begin_finish(0, silent, 1).is_none(),
        "its late result"
    );
    assert!(
        state.begin_finish(0, spare, 2).is_some(),
        "attempt 2 counts"
    );
    let status = state.status(at(50), Duration::from_secs(50), &Backlog::default());
    assert_eq!((status.leases_expired, status.results_discarded), (1, 1));
    assert_eq!(status.agents.len(), 2);
    assert!(state.heard(talking, at(80)));
    let (expired, _) = state.expire(at(90), false);
    assert_eq!(expired.len(), 1, "the spare fell silent after 40 s");
    assert_eq!(expired[0].requeued, 0, "its job had already ended");
}

#[test]
fn undeclared_slots_get_nothing() {
    let mut state = State::new(vec![job("a", Tool::Check)], pb::Limits::default(), LEASE);
    let (agent, _rx) = agent(&["check"]); // 2 slots
    let (conn, _) = state.connect(agent);
    assert!(assigned(&state.want_work(conn, 2, Instant::now(), false)).is_none());
    assert!(assigned(&state.want_work(conn, 1, Instant::now(), false)).is_some());
}
