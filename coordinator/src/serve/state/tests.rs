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
        id: String::new(),
        name: "a".into(),
        slots: 2,
        tools: tools.iter().map(|t| t.to_string()).collect(),
        targets: vec!["x86_64-unknown-linux-gnu".into()],
        toolchain: String::new(),
        tx: Some(tx),
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
    let connected = state.connect(agent, &[], Instant::now(), false);
    assert!(!connected.draining && connected.reclaimed.is_empty());
    let conn = connected.conn;
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
    let conn = state.join(agent);
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
fn a_lost_agent_keeps_its_job_for_the_lease_timeout_then_another_gets_it() {
    let start = Instant::now();
    let at = |secs: u64| start + Duration::from_secs(secs);
    let mut state = State::new(vec![job("a", Tool::Check)], pb::Limits::default(), LEASE);
    let (mut first, _rx1) = agent(&["check"]);
    let (mut second, _rx2) = agent(&["check"]);
    (first.connected, first.last_heard) = (start, start);
    (second.connected, second.last_heard) = (start, start);
    let one = state.join(first);
    let two = state.join(second);
    assert!(assigned(&state.want_work(one, 0, at(0), false)).is_some());
    assert!(
        assigned(&state.want_work(two, 0, at(0), false)).is_none(),
        "parked"
    );
    assert_eq!(state.disconnect(one), Some(("a".to_owned(), 1)));
    let status = state.status(at(1), Duration::from_secs(1), &Backlog::default());
    let lost = status
        .agents
        .iter()
        .find(|a| !a.running.is_empty())
        .unwrap();
    assert!(lost.lost, "shown as lost, with its job");
    assert_eq!(state.connected_agents(), 1);
    state.heard(two, at(40));
    assert!(
        state.expire(at(40), false).0.is_empty(),
        "within the lease timeout"
    );
    let (expired, sends) = state.expire(at(46), false);
    assert_eq!((expired.len(), expired[0].logs.clone()), (1, vec![(0, 1)]));
    assert_eq!(sends.len(), 1, "the parked slot gets it");
    assert!(state.begin_finish(0, one, 1).is_none(), "the stale attempt");
    let finishing = state.begin_finish(0, two, 2).expect("the current lease");
    assert_eq!(finishing.spec.target, "x86_64-unknown-linux-gnu");
    assert!(state.finish(0, Verdict::Pass));
    let status = state.status(at(50), Duration::from_secs(60), &Backlog::default());
    assert_eq!((status.finished, status.verdicts["pass"]), (1, 1));
}

fn held(job_id: JobId, attempt: u32, slot: u32, name: &str, finished: bool) -> HeldJob {
    HeldJob {
        job_id,
        attempt,
        slot,
        key: (Tool::Check, name.into(), "1.0.0".into()),
        finished,
    }
}

fn with_id(
    id: &str,
) -> (
    Agent,
    mpsc::Receiver<Result<pb::CoordinatorMessage, tonic::Status>>,
) {
    let (mut a, rx) = agent(&["check"]);
    a.id = id.into();
    (a, rx)
}

#[test]
fn an_agent_back_within_the_lease_takes_its_jobs_and_resends_from_what_arrived() {
    let now = Instant::now();
    let jobs = vec![
        job("a", Tool::Check),
        job("b", Tool::Check),
        job("c", Tool::Check),
    ];
    let mut state = State::new(jobs, pb::Limits::default(), LEASE);
    let (first, _rx1) = with_id("agent-x");
    let old = state.join(first);
    assert!(assigned(&state.want_work(old, 0, now, false)).is_some()); // a
    assert!(assigned(&state.want_work(old, 1, now, false)).is_some()); // b
    state.logged(0, 1000);
    state.disconnect(old);
    // It comes back holding a only: b was lost on its side (an Assign in flight, say).
    let (again, _rx2) = with_id("agent-x");
    let back = state.connect(again, &[held(0, 1, 0, "a", false)], now, false);
    let r = &back.reclaimed[0];
    assert!(r.keep);
    assert_eq!((r.job_id, r.attempt, r.resend_from), (0, 1, 1000));
    assert!(state.holds_lease(0, back.conn, 1) && !state.holds_lease(0, old, 1));
    assert_eq!(back.dropped_logs, vec![(1, 1)], "b went back to the queue");
    assert!(!state.heard(old, now), "the old connection is forgotten");
    assert_eq!(state.connected_agents(), 1);
    let b_again = state.want_work(back.conn, 1, now, false);
    assert_eq!(assigned(&b_again).map(|(j, _)| j), Some(1), "b, attempt 2");
    assert!(
        assigned(&state.want_work(back.conn, 0, now, false)).is_none(),
        "slot 0 runs a"
    );
    assert!(state.begin_finish(0, back.conn, 1).is_some());
    let status = state.status(now, Duration::from_secs(1), &Backlog::default());
    assert_eq!(status.leases_expired, 0);
    assert_eq!(state.readings(&Backlog::default()).leases_reclaimed, 1);
}

#[test]
fn another_agent_cannot_take_a_lost_agents_leases() {
    let now = Instant::now();
    let mut state = State::new(vec![job("a", Tool::Check)], pb::Limits::default(), LEASE);
    let (first, _rx1) = with_id("agent-x");
    let old = state.join(first);
    assert!(assigned(&state.want_work(old, 0, now, false)).is_some());
    state.disconnect(old);
    let (thief, _rx2) = with_id("agent-y");
    let thief = state.connect(thief, &[held(0, 1, 0, "a", true)], now, false);
    assert!(!thief.reclaimed[0].keep);
    assert!(state.holds_lease(0, old, 1), "still the lost agent's");
    let (anonymous, _rx3) = with_id("");
    let anonymous = state.connect(anonymous, &[held(0, 1, 0, "a", false)], now, false);
    assert!(!anonymous.reclaimed[0].keep, "no id, no reclaim");
}

#[test]
fn after_a_restart_held_jobs_are_found_by_what_they_are() {
    let now = Instant::now();
    // A restarted coordinator: its queue was rebuilt without what was already stored.
    let jobs = vec![
        job("a", Tool::Check),
        job("b", Tool::Check),
        job("c", Tool::Check),
    ];
    let mut state = State::new(jobs, pb::Limits::default(), LEASE);
    let (other, _rx) = with_id("agent-y");
    let other = state.join(other);
    assert!(assigned(&state.want_work(other, 0, now, false)).is_some()); // a, to another agent
    let (back, _rx2) = with_id("agent-x");
    let held = [
        held(40, 3, 0, "a", true),      // finished, but another agent has it now
        held(41, 1, 1, "b", false),     // running
        held(42, 1, 0, "c", true),      // finished: its JobDone was never seen
        held(43, 1, 0, "stored", true), // not in the queue: stored before the restart
    ];
    let back = state.connect(back, &held, now, false);
    let answers: Vec<(bool, u64, u32)> = (back.reclaimed.iter())
        .map(|r| (r.keep, r.job_id, r.attempt))
        .collect();
    assert_eq!(
        answers,
        [(false, 0, 0), (true, 1, 1), (true, 2, 1), (false, 0, 0)]
    );
    assert_eq!(
        back.reclaimed[1].held_job_id, 41,
        "answers say which held job they are for"
    );
    assert!(
        back.reclaimed.iter().all(|r| r.resend_from == 0),
        "a new spool"
    );
    assert!(
        assigned(&state.want_work(back.conn, 1, now, false)).is_none(),
        "b runs in slot 1"
    );
    assert!(
        assigned(&state.want_work(back.conn, 0, now, false)).is_none(),
        "nothing left"
    );
    let status = state.status(now, Duration::from_secs(1), &Backlog::default());
    assert_eq!(status.results_discarded, 1, "a's late result");
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
    let silent = state.join(silent);
    let talking = state.join(talking);
    let spare = state.join(spare);
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
    let conn = state.join(agent);
    assert!(assigned(&state.want_work(conn, 2, Instant::now(), false)).is_none());
    assert!(assigned(&state.want_work(conn, 1, Instant::now(), false)).is_some());
}

#[test]
fn only_the_lease_holder_can_release_or_finish_a_job() {
    let now = Instant::now();
    let mut state = State::new(vec![job("a", Tool::Check)], pb::Limits::default(), LEASE);
    let (holder, _rx1) = with_id("holder");
    let (forger, _rx2) = with_id("forger");
    let holder = state.join(holder);
    let forger = state.join(forger);
    assert!(assigned(&state.want_work(holder, 0, now, false)).is_some());
    assert!(
        state.release(0, forger, 1, now, false).is_none(),
        "not its lease"
    );
    assert!(state.begin_finish(0, forger, 1).is_none(), "not its result");
    assert!(state.holds_lease(0, holder, 1));
    assert!(state.release(0, holder, 1, now, false).is_some());
}
