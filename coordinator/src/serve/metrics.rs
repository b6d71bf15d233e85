//! What `serve --metrics-listen` shows Prometheus: the coordinator's gauges, counters and the
//! wait for work, named `crater_…`, in the Prometheus text format by `prometheus-client`.
//!
//! Nothing is counted twice: the gauges and counters are read from the [`State`] at scrape time
//! ([`State::readings`], the numbers `status` shows too), through a collector that locks it for
//! the moment it takes to copy them. Only the wait for work is a live metric: a histogram the
//! state observes into whenever a slot gets a job, shared with the registry. How the listener is
//! reached (TLS, tokens) is [`metrics_server`](super::metrics_server)'s business.
//!
//! [`State`]: super::state::State
//! [`State::readings`]: super::state::State::readings

use crate::serve::Coordinator;
use crater_proto::verdict::Verdict;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::collections::BTreeMap;

/// The upper bounds of `crater_assign_wait_seconds`' buckets: from a slot served at once (well
/// under 1 ms) to one parked for ten minutes behind a full spool or an empty queue.
const ASSIGN_WAIT_BUCKETS: [f64; 18] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    120.0, 300.0, 600.0,
];

/// A fresh `crater_assign_wait_seconds` histogram, for the state to observe into.
pub fn assign_wait_histogram() -> Histogram {
    Histogram::new(ASSIGN_WAIT_BUCKETS)
}

/// The coordinator's numbers at one moment, as the metrics show them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Readings {
    pub queued: u64,
    /// Leased, or finished and being stored.
    pub running: u64,
    pub total: u64,
    pub agents_connected: u64,
    pub store_backlog_results: u64,
    pub store_backlog_bytes: u64,
    /// Seconds storing has been failing (0: it works).
    pub store_failing_secs: u64,
    pub verdicts: BTreeMap<Verdict, u64>,
    pub leases_expired: u64,
    pub leases_released: u64,
    pub leases_reclaimed: u64,
    pub results_discarded: u64,
    pub log_bytes_received: u64,
}

/// The registry a scrape encodes: `coordinator`'s readings and its wait histogram.
pub fn registry(coordinator: &Coordinator) -> Registry {
    let reader = coordinator.clone();
    registry_of(
        Box::new(move || reader.readings()),
        coordinator.assign_wait(),
    )
}

/// Reads the numbers at scrape time.
type Read = Box<dyn Fn() -> Readings + Send + Sync>;

/// The registry of `read`'s numbers and the `assign_wait` histogram, every name under `crater_`.
fn registry_of(read: Read, assign_wait: Histogram) -> Registry {
    let mut registry = Registry::with_prefix("crater");
    registry.register(
        "assign_wait_seconds",
        "Seconds from a slot's WantWork to the job assigned to it: about 0 when a job was \
         queued for it, longer when the slot was parked (an empty queue, draining, or a full \
         spool)",
        assign_wait,
    );
    registry.register_collector(Box::new(ReadAtScrape(read)));
    registry
}

/// Encodes the readings of the moment as constant gauges and counters.
struct ReadAtScrape(Read);

impl std::fmt::Debug for ReadAtScrape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ReadAtScrape")
    }
}

impl Collector for ReadAtScrape {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let r = (self.0)();
        let gauges = [
            (
                "queue_depth",
                "Jobs queued, waiting for a free slot",
                r.queued,
            ),
            (
                "jobs_running",
                "Jobs leased to agents, or finished and being stored",
                r.running,
            ),
            (
                "jobs_total",
                "Jobs this coordinator was started with",
                r.total,
            ),
            (
                "agents_connected",
                "Agents connected (said Hello and not lost)",
                r.agents_connected,
            ),
            (
                "store_backlog_results",
                "Finished results in the spool, waiting for the store",
                r.store_backlog_results,
            ),
            (
                "store_backlog_bytes",
                "Bytes of finished results in the spool, waiting for the store",
                r.store_backlog_bytes,
            ),
            (
                "store_failing_seconds",
                "How long storing results has been failing (0 while it works); `status` says why",
                r.store_failing_secs,
            ),
        ];
        for (name, help, value) in gauges {
            let gauge = ConstGauge::new(value as i64);
            gauge.encode(encoder.encode_descriptor(name, help, None, gauge.metric_type())?)?;
        }
        // Every verdict is shown, 0 until it happens, so rates start from a known zero.
        let finished = ConstCounter::new(0u64);
        let mut family = encoder.encode_descriptor(
            "jobs_finished",
            "Jobs finished, by verdict (results that could not be stored count as error)",
            None,
            finished.metric_type(),
        )?;
        for &verdict in Verdict::ALL {
            let count = r.verdicts.get(&verdict).copied().unwrap_or(0);
            ConstCounter::new(count)
                .encode(family.encode_family(&[("verdict", verdict.name())])?)?;
        }
        let counters = [
            (
                "leases_expired",
                "Jobs taken from agents silent past --lease-timeout and queued again",
                r.leases_expired,
            ),
            (
                "leases_released",
                "Jobs agents gave back unfinished (Release, when draining) and queued again",
                r.leases_released,
            ),
            (
                "leases_reclaimed",
                "Jobs an agent kept running and took back when it connected again, to this \
                 coordinator or to a restarted one",
                r.leases_reclaimed,
            ),
            (
                "results_discarded",
                "JobDone messages for leases the agent no longer held (expired, released or \
                 stale attempts): their results were dropped",
                r.results_discarded,
            ),
            (
                "log_bytes_received",
                "Log bytes received from agents and spooled for current leases",
                r.log_bytes_received,
            ),
        ];
        for (name, help, value) in counters {
            let counter = ConstCounter::new(value);
            counter.encode(encoder.encode_descriptor(
                name,
                help,
                None,
                counter.metric_type(),
            )?)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::results::outbox::Backlog;
    use crate::serve::queue::{JobSource, JobSpec};
    use crate::serve::state::{Agent, State};
    use crater_proto::pb;
    use crater_proto::tool::Tool;
    use prometheus_client::encoding::prometheus_text;
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, Instant};

    fn job(name: &str) -> JobSpec {
        JobSpec {
            name: name.into(),
            version: "1.0.0".into(),
            source: JobSource::Registry {
                checksum: "sum".into(),
            },
            tool: Tool::Check,
            target: String::new(),
        }
    }

    fn agent(name: &str, at: Instant) -> Agent {
        // The receiver is dropped: State only clones the sender into the messages it returns.
        let (tx, _) = tokio::sync::mpsc::channel(8);
        Agent {
            id: name.into(),
            name: name.into(),
            slots: 1,
            tools: ["check".to_owned()].into(),
            targets: vec!["x86_64-unknown-linux-gnu".into()],
            toolchain: String::new(),
            tx: Some(tx),
            connected: at,
            last_heard: at,
        }
    }

    /// The value of the sample `series` (name and labels, as exposed) in `text`.
    fn sample(text: &str, series: &str) -> f64 {
        let line = text
            .lines()
            .find(|line| {
                line.strip_prefix(series)
                    .is_some_and(|r| r.starts_with(' '))
            })
            .unwrap_or_else(|| panic!("no {series} in:\n{text}"));
        line[series.len()..].trim().parse().unwrap()
    }

    #[test]
    fn a_parked_slot_observes_its_wait_and_the_counters_come_from_the_state() {
        let start = Instant::now();
        let at = |secs| start + Duration::from_secs(secs);
        let state = State::new(
            vec![job("a"), job("b")],
            pb::Limits::default(),
            Duration::from_secs(45),
        );
        let histogram = state.assign_wait();
        let state = Arc::new(Mutex::new(state));
        let reader = state.clone();
        let registry = registry_of(
            Box::new(move || reader.lock().unwrap().readings(&Backlog::default())),
            histogram,
        );
        let mut s = state.lock().unwrap();
        let one = s.join(agent("one", at(0)));
        let two = s.join(agent("two", at(0)));
        let three = s.join(agent("three", at(0)));
        assert!(
            s.want_work(one, 0, at(0), false).assign.is_some(),
            "a at once"
        );
        assert!(
            s.want_work(two, 0, at(0), false).assign.is_some(),
            "b at once"
        );
        assert!(
            s.want_work(three, 0, at(10), false).assign.is_none(),
            "parked"
        );
        s.logged(0, 300);
        // Agent one gives a back 30 s later: the parked slot gets it, having waited 30 s.
        assert_eq!(s.release(0, one, 1, at(40), false).unwrap().len(), 1);
        assert!(
            s.begin_finish(0, one, 1).is_none(),
            "a late result of the released lease"
        );
        assert!(s.begin_finish(1, two, 1).is_some());
        s.finish(1, Verdict::BuildFail);
        drop(s);

        let mut text = String::new();
        prometheus_text::encode(&mut text, &registry).unwrap();
        let wait = "crater_assign_wait_seconds";
        assert_eq!(sample(&text, &format!("{wait}_count")), 3.0);
        assert!(
            (sample(&text, &format!("{wait}_sum")) - 30.0).abs() < 1e-9,
            "{text}"
        );
        let bucket = |le: &str| sample(&text, &format!("{wait}_bucket{{le=\"{le}\"}}"));
        assert_eq!(bucket("0.001"), 2.0, "the immediate ones");
        assert_eq!(bucket("10"), 2.0);
        assert_eq!(bucket("30"), 3.0, "the parked one");

        for (series, value) in [
            ("crater_queue_depth", 0.0),
            ("crater_jobs_running", 1.0),
            ("crater_jobs_total", 2.0),
            ("crater_agents_connected", 3.0),
            ("crater_store_backlog_results", 0.0),
            ("crater_jobs_finished_total{verdict=\"build-fail\"}", 1.0),
            ("crater_jobs_finished_total{verdict=\"pass\"}", 0.0),
            ("crater_leases_released_total", 1.0),
            ("crater_leases_expired_total", 0.0),
            ("crater_leases_reclaimed_total", 0.0),
            ("crater_results_discarded_total", 1.0),
            ("crater_log_bytes_received_total", 300.0),
        ] {
            assert_eq!(sample(&text, series), value, "{series} in:\n{text}");
        }
        for name in ["crater_queue_depth", "crater_leases_released_total", wait] {
            assert!(text.contains(&format!("# HELP {name} ")), "{name}:\n{text}");
        }
        assert!(text.contains("# TYPE crater_assign_wait_seconds histogram"));
        assert!(text.contains("# TYPE crater_jobs_finished_total counter"));
        assert!(text.contains("# TYPE crater_agents_connected gauge"));
    }
}
