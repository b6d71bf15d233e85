//! The queue's rules: one job a slot, leases, requeueing, reclaiming.

use super::*;

fn spec(name: &str) -> JobSpec {
    JobSpec {
        name: name.into(),
        version: "1.0.0".into(),
        source: JobSource::Registry {
            checksum: "00".into(),
        },
        tool: Tool::Check,
        target: String::new(),
    }
}

fn any(_: &JobSpec) -> bool {
    true
}

fn now() -> Instant {
    Instant::now()
}

#[test]
fn hands_out_one_job_per_free_slot_in_order() {
    let mut q = Queue::default();
    let a = q.push(spec("a"));
    let b = q.push(spec("b"));
    let first = q.want_work(1, 0, now(), any).unwrap();
    let second = q.want_work(1, 1, now(), any).unwrap();
    assert_eq!((first.job, first.slot, first.attempt), (a, 0, 1));
    assert_eq!((second.job, second.slot), (b, 1));
    assert_eq!(
        q.want_work(2, 0, now(), any),
        None,
        "nothing left: the slot waits"
    );
    assert_eq!(
        q.counts(),
        Counts {
            queued: 0,
            running: 2,
            finished: 0,
            total: 2
        }
    );
}

#[test]
fn only_the_current_lease_finishes_a_job_and_only_once() {
    let mut q = Queue::default();
    let a = q.push(spec("a"));
    let lease = q.want_work(1, 0, now(), any).unwrap();
    assert!(!q.begin_finish(a, 2, lease.attempt), "another connection");
    assert!(!q.begin_finish(a, 1, lease.attempt + 1), "another attempt");
    assert!(q.begin_finish(a, 1, lease.attempt));
    assert!(!q.begin_finish(a, 1, lease.attempt), "a duplicate JobDone");
    q.mark_done(a, Verdict::Pass);
    q.mark_done(a, Verdict::Pass);
    assert!(q.is_complete());
    assert_eq!(q.counts().finished, 1, "done once, counted once");
}

#[test]
fn a_lost_connection_requeues_its_jobs_at_the_front_with_a_new_attempt() {
    let mut q = Queue::default();
    let a = q.push(spec("a"));
    let b = q.push(spec("b"));
    let c = q.push(spec("c"));
    q.want_work(1, 0, now(), any).unwrap(); // a on conn 1
    q.want_work(2, 0, now(), any).unwrap(); // b on conn 2
    q.want_work(1, 1, now(), any).unwrap(); // c on conn 1
    assert_eq!(q.drop_connection(1), vec![(a, 1), (c, 1)]);
    // The late answer of the dead attempt is ignored.
    assert!(!q.begin_finish(a, 1, 1));
    let again = q.want_work(2, 1, now(), any).unwrap();
    assert_eq!((again.job, again.attempt), (a, 2));
    let next = q.want_work(3, 0, now(), any).unwrap();
    assert_eq!(next.job, c);
    assert!(q.holds_lease(b, 2, 1));
}

#[test]
fn waiting_slots_get_requeued_jobs() {
    let mut q = Queue::default();
    let a = q.push(spec("a"));
    q.want_work(1, 0, now(), any).unwrap();
    assert_eq!(q.want_work(2, 0, now(), any), None);
    assert_eq!(
        q.want_work(2, 0, now(), any),
        None,
        "asking twice waits once"
    );
    q.drop_connection(1);
    let handed = q.assign_waiting(now(), |_, _| true);
    assert_eq!(
        handed
            .iter()
            .map(|h| (h.conn, h.slot, h.job, h.attempt))
            .collect::<Vec<_>>(),
        vec![(2, 0, a, 2)]
    );
    assert!(q.assign_waiting(now(), |_, _| true).is_empty());
}

#[test]
fn an_assignment_says_when_its_slot_first_asked() {
    let start = now();
    let at = |secs| start + std::time::Duration::from_secs(secs);
    let mut q = Queue::default();
    let a = q.push(spec("a"));
    let b = q.push(spec("b"));
    assert_eq!(
        q.want_work(1, 0, at(0), any).unwrap().asked,
        at(0),
        "at once"
    );
    q.want_work(2, 0, at(1), any).unwrap();
    assert_eq!(q.want_work(3, 0, at(2), any), None);
    assert_eq!(q.want_work(3, 0, at(7), any), None, "asking again");
    assert!(q.release(a, 1, 1));
    let handed = q.assign_waiting(at(32), |_, _| true);
    assert_eq!((handed[0].job, handed[0].asked), (a, at(2)));
    assert!(q.holds_lease(b, 2, 1));
}

#[test]
fn a_released_job_goes_first_to_the_next_slot_with_a_new_attempt() {
    let mut q = Queue::default();
    let a = q.push(spec("a"));
    let b = q.push(spec("b"));
    let lease = q.want_work(1, 0, now(), any).unwrap();
    assert!(!q.release(a, 2, lease.attempt), "not the holder");
    assert!(q.release(a, 1, lease.attempt));
    assert!(!q.release(a, 1, lease.attempt), "once");
    let again = q.want_work(2, 0, now(), any).unwrap();
    assert_eq!((again.job, again.attempt), (a, 2), "before b");
    assert!(
        !q.begin_finish(a, 1, 1),
        "the released attempt cannot finish it"
    );
    assert_eq!(
        q.want_work(1, 0, now(), any).unwrap().job,
        b,
        "the slot is free"
    );
}

#[test]
fn a_slot_holds_one_job_however_often_it_asks() {
    let mut q = Queue::default();
    for name in ["a", "b", "c"] {
        q.push(spec(name));
    }
    let first = q.want_work(1, 0, now(), any).unwrap();
    for _ in 0..600 {
        assert_eq!(q.want_work(1, 0, now(), any), None);
    }
    assert_eq!(q.counts().running, 1, "600 asks, one lease");
    assert!(q.begin_finish(first.job, 1, first.attempt));
    assert!(
        q.want_work(1, 0, now(), any).is_some(),
        "free again once done"
    );
}

#[test]
fn a_slot_only_gets_jobs_its_agent_can_run() {
    let mut q = Queue::default();
    let mut test_job = spec("t");
    test_job.tool = Tool::Test;
    let t = q.push(test_job);
    let c = q.push(spec("c"));
    let only_check = |s: &JobSpec| s.tool == Tool::Check;
    assert_eq!(q.want_work(1, 0, now(), only_check).unwrap().job, c);
    assert_eq!(q.want_work(1, 1, now(), only_check), None);
    assert_eq!(q.want_work(2, 0, now(), any).unwrap().job, t);
}

#[test]
fn a_lease_moves_to_the_agents_new_connection_with_its_log_so_far() {
    let mut q = Queue::default();
    let a = q.push(spec("a"));
    let b = q.push(spec("b"));
    let lease = q.want_work(1, 0, now(), any).unwrap();
    assert_eq!(q.logged(a, 100), 100);
    assert_eq!(
        q.transfer(a, lease.attempt, 2, 3, 0, true),
        None,
        "not from 2"
    );
    assert_eq!(
        q.transfer(a, lease.attempt + 1, 1, 3, 0, true),
        None,
        "another attempt"
    );
    assert_eq!(q.transfer(a, lease.attempt, 1, 3, 0, true), Some(100));
    assert!(q.holds_lease(a, 3, 1) && !q.holds_lease(a, 1, 1));
    assert_eq!(
        q.want_work(3, 0, now(), any),
        None,
        "its slot is busy on the new connection"
    );
    assert_eq!(
        q.want_work(1, 0, now(), any).unwrap().job,
        b,
        "and free on the old one"
    );
    assert!(
        q.drop_connection(1).iter().all(|&(j, _)| j != a),
        "the old connection lost b only"
    );
    assert!(q.begin_finish(a, 3, 1));
}

#[test]
fn a_finished_job_moves_without_taking_its_slot() {
    let mut q = Queue::default();
    let a = q.push(spec("a"));
    let b = q.push(spec("b"));
    let c = q.push(spec("c"));
    let first = q.want_work(1, 0, now(), any).unwrap();
    let second = q.want_work(1, 1, now(), any).unwrap();
    // The agent finished a in slot 0 and took no new job; b runs in slot 1.
    assert_eq!(q.transfer(b, second.attempt, 1, 2, 1, true), Some(0));
    assert_eq!(q.transfer(a, first.attempt, 1, 2, 1, false), Some(0));
    assert_eq!(q.want_work(2, 0, now(), any).unwrap().job, c);
    assert_eq!(q.want_work(2, 1, now(), any), None, "b holds slot 1");
    assert!(q.begin_finish(a, 2, 1));
    assert_eq!(
        q.want_work(2, 1, now(), any),
        None,
        "a's JobDone does not free b's slot"
    );
}

#[test]
fn after_a_restart_a_held_job_is_found_by_what_it_is_if_still_queued() {
    let mut q = Queue::default();
    let a = q.push(spec("a"));
    let b = q.push(spec("b"));
    let key = |name: &str| (Tool::Check, name.to_owned(), "1.0.0".to_owned());
    let got = q.reclaim(&key("b"), 7, 2, true, now()).unwrap();
    assert_eq!((got.job, got.conn, got.slot, got.attempt), (b, 7, 2, 1));
    assert!(
        q.reclaim(&key("b"), 8, 0, true, now()).is_none(),
        "leased now"
    );
    assert!(
        q.reclaim(&key("zzz"), 7, 0, true, now()).is_none(),
        "not in this queue"
    );
    let other_tool = (Tool::Miri, "a".to_owned(), "1.0.0".to_owned());
    assert!(q.reclaim(&other_tool, 7, 0, true, now()).is_none());
    assert!(
        q.reclaim(&key("a"), 7, 2, true, now()).is_none(),
        "slot 2 runs b"
    );
    assert_eq!(
        q.want_work(9, 0, now(), any).unwrap().job,
        a,
        "a was left queued"
    );
    assert!(q.begin_finish(a, 9, 1));
    q.mark_done(a, Verdict::Pass);
    assert!(q.reclaim(&key("a"), 7, 0, false, now()).is_none(), "done");
}

#[test]
fn a_reserved_job_waits_for_its_agent_until_the_reservation_lapses() {
    let start = now();
    let at = |secs| start + std::time::Duration::from_secs(secs);
    let mut q = Queue::default();
    let a = q.push(spec("a"));
    let b = q.push(spec("b"));
    let key = |name: &str| (Tool::Check, name.to_owned(), "1.0.0".to_owned());
    assert!(q.reserve(&key("a"), at(45)));
    assert!(!q.reserve(&key("zzz"), at(45)), "not in this queue");
    assert_eq!(
        q.want_work(1, 0, at(0), any).unwrap().job,
        b,
        "a is held back"
    );
    assert_eq!(q.want_work(2, 0, at(1), any), None, "the slot waits");
    assert!(q.assign_waiting(at(44), |_, _| true).is_empty());
    assert!(!q.lapse_reservations(at(44)));
    assert!(q.lapse_reservations(at(45)));
    let handed = q.assign_waiting(at(45), |_, _| true);
    assert_eq!(
        (handed[0].job, handed[0].conn),
        (a, 2),
        "then anyone may have it"
    );
}

#[test]
fn its_agent_takes_a_reserved_job_back_at_once() {
    let mut q = Queue::default();
    q.push(spec("a"));
    let key = (Tool::Check, "a".to_owned(), "1.0.0".to_owned());
    let later = now() + std::time::Duration::from_secs(45);
    assert!(q.reserve(&key, later));
    assert_eq!(q.reclaim(&key, 3, 0, true, now()).unwrap().attempt, 1);
    assert!(
        !q.lapse_reservations(later),
        "the lease ended the reservation"
    );
}
