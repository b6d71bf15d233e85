//! Dispatch at scale: simulated agents against one coordinator storing to a local directory.
//!
//!   cargo run --release --example dispatch-bench -- DIR JOBS AGENTS SLOTS
//!
//! This process is the load generator: AGENTS gRPC `Work` streams of SLOTS slots each (Hello,
//! one WantWork per slot; on every Assign at once a 64 KiB LogChunk, a JobDone with the right
//! log_bytes and log_sha256, and WantWork again). The coordinator is this same binary re-run
//! as a child (`--coordinator DIR JOBS`), so its CPU time and peak RSS are its own: the library's
//! `Coordinator` with JOBS registry jobs (made up names, a fake checksum: nobody downloads
//! them), an `Outbox` in DIR/out/.spool and a `LocalStore` in DIR/out with its uploader, as
//! `serve` sets them up, served by tonic on loopback without TLS.
//!
//! The child reports when every job had a committed result (in the outbox) and when every result
//! was stored (the outbox drained into DIR/out), both from the moment it listened, with its CPU
//! seconds over that time and its VmHWM; the generator adds the WantWork → Assign latencies its
//! slots saw. One line, `key=value` pairs; `bench/dispatch.sh` runs it.

#[path = "bench_common/rss.rs"]
mod rss;

use crater_coordinator::results::outbox::Outbox;
use crater_coordinator::results::store::{LocalStore, Store};
use crater_coordinator::results::uploads::Uploads;
use crater_coordinator::serve::Coordinator;
use crater_coordinator::serve::queue::{JobSource, JobSpec};
use crater_proto::pb::{
    self, agent_message::Msg as AgentMsg, coordinator_message::Msg as CoordMsg,
};
use crater_proto::tool::Tool;
use rss::peak_rss_kib;
use sha2::{Digest, Sha256};
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};

const LOG_BYTES: usize = 64 * 1024;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.as_slice() {
        [role, dir, jobs] if role == "--coordinator" => {
            let rt = tokio::runtime::Runtime::new()?;
            rt.block_on(coordinator(PathBuf::from(dir), jobs.parse()?))
        }
        [dir, jobs, agents, slots] => generator(
            Path::new(dir),
            jobs.parse()?,
            agents.parse()?,
            slots.parse()?,
        ),
        _ => anyhow::bail!("usage: dispatch-bench DIR JOBS AGENTS SLOTS"),
    }
}

/// The coordinator side, in a process of its own.
async fn coordinator(dir: PathBuf, jobs: usize) -> anyhow::Result<()> {
    let out = dir.join("out");
    let store = Store::Local(LocalStore::open(&out)?);
    // `serve`'s default --spool-max-gb: the backlog here stays far below it.
    let outbox = Outbox::open(&out.join(".spool"), 20 << 30)?;
    let concurrency = std::env::var("UPLOAD_CONCURRENCY")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(crater_coordinator::results::uploads::DEFAULT_CONCURRENCY);
    let uploads = Uploads::start(&outbox, &store, concurrency, None);
    let jobs = (0..jobs)
        .map(|i| JobSpec {
            name: format!("bench-crate-{i:06}"),
            version: "1.0.0".to_owned(),
            source: JobSource::Registry {
                checksum: "0".repeat(64),
            },
            tool: Tool::Check,
            target: String::new(),
        })
        .collect();
    let limits = pb::Limits {
        timeout_secs: 3600,
        idle_timeout_secs: 600,
        max_log_bytes: 1 << 30,
    };
    let (coordinator, mut events) =
        Coordinator::new(outbox.clone(), limits, Duration::from_secs(45), jobs, &[]);
    tokio::spawn(async move { while events.recv().await.is_some() {} });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(coordinator.service())
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );
    let cpu_start = cpu_secs();
    let start = Instant::now();
    println!("listening {addr}");
    std::io::stdout().flush()?;

    coordinator.completion().wait_for(|done| *done).await?;
    let committed = start.elapsed();
    outbox.backlog().wait_for(|b| b.entries == 0).await?;
    let stored = start.elapsed();
    let cpu = cpu_secs() - cpu_start;
    let failures = coordinator.store_failures();
    coordinator.drain().await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while coordinator.connected_agents() > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(uploads);
    println!(
        "result committed_s={:.3} stored_s={:.3} cpu_s={cpu:.2} peak_rss_kib={} store_failures={failures}",
        committed.as_secs_f64(),
        stored.as_secs_f64(),
        peak_rss_kib()
    );
    std::io::stdout().flush()?;
    std::process::exit(0)
}

/// The load generator; starts the coordinator and prints the run's line.
fn generator(dir: &Path, jobs: usize, agents: usize, slots: u32) -> anyhow::Result<()> {
    let mut child = std::process::Command::new(std::env::current_exe()?)
        .args([
            "--coordinator",
            &dir.display().to_string(),
            &jobs.to_string(),
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()?;
    let mut lines = std::io::BufReader::new(child.stdout.take().expect("piped")).lines();
    let first = lines.next().transpose()?.unwrap_or_default();
    let Some(addr) = first.strip_prefix("listening ") else {
        anyhow::bail!("the coordinator did not start: {first:?}");
    };
    let url = format!("http://{addr}");

    let log = bytes::Bytes::from(fake_log());
    let sha = hex::encode(Sha256::digest(&log));
    let rt = tokio::runtime::Runtime::new()?;
    let latencies = rt.block_on(async {
        let tasks: Vec<_> = (0..agents)
            .map(|i| {
                tokio::spawn(agent(
                    url.clone(),
                    format!("sim-{i}"),
                    slots,
                    log.clone(),
                    sha.clone(),
                ))
            })
            .collect();
        let mut all = Vec::new();
        for task in tasks {
            all.extend(task.await??);
        }
        anyhow::Ok(all)
    })?;
    let result = lines.next().transpose()?.unwrap_or_default();
    child.wait()?;
    let Some(result) = result.strip_prefix("result ") else {
        anyhow::bail!("the coordinator did not finish: {result:?}");
    };
    let value = |key: &str| -> f64 {
        result
            .split_whitespace()
            .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
            .and_then(|v| v.parse().ok())
            .unwrap_or(f64::NAN)
    };
    let mut ms: Vec<f64> = latencies.iter().map(|d| d.as_secs_f64() * 1e3).collect();
    ms.sort_by(f64::total_cmp);
    let pct = |p: f64| ms[((ms.len() as f64 - 1.0) * p).round() as usize];
    let (stored_s, cpu_s) = (value("stored_s"), value("cpu_s"));
    println!(
        "jobs={jobs} agents={agents} slots={slots} assigns={} committed_s={:.3} stored_s={stored_s:.3} \
         stored_per_s={:.1} p50_ms={:.2} p99_ms={:.2} cpu_s={cpu_s:.2} cpu_s_per_1000={:.2} \
         peak_rss_mib={:.1} store_failures={}",
        ms.len(),
        value("committed_s"),
        jobs as f64 / stored_s,
        pct(0.50),
        pct(0.99),
        cpu_s * 1000.0 / jobs as f64,
        value("peak_rss_kib") / 1024.0,
        value("store_failures"),
    );
    Ok(())
}

/// One simulated agent: its WantWork → Assign latencies.
async fn agent(
    url: String,
    name: String,
    slots: u32,
    log: bytes::Bytes,
    sha: String,
) -> anyhow::Result<Vec<Duration>> {
    let channel = tonic::transport::Endpoint::from_shared(url)?
        .connect_timeout(Duration::from_secs(10))
        .connect()
        .await?;
    let mut client = pb::coordinator_client::CoordinatorClient::new(channel)
        .max_decoding_message_size(crater_proto::MAX_MESSAGE_BYTES)
        .max_encoding_message_size(crater_proto::MAX_AGENT_MESSAGE_BYTES);
    let (tx, rx) = tokio::sync::mpsc::channel(4 * slots as usize + 16);
    let msg = |m| pb::AgentMessage { msg: Some(m) };
    tx.send(msg(AgentMsg::Hello(pb::Hello {
        agent_name: name,
        protocol_version: crater_proto::PROTOCOL_VERSION,
        agent_version: "0.0.0-bench".to_owned(),
        slots,
        memory_per_slot_bytes: 2 << 30,
        tools: vec!["check".into()],
        targets: vec!["x86_64-unknown-linux-gnu".into()],
        ..Default::default()
    })))
    .await?;
    let mut inbound = client.work(ReceiverStream::new(rx)).await?.into_inner();
    // Slots ask once the stream is up (after the Welcome), so setup is not counted as waiting.
    let mut asked = vec![Instant::now(); slots as usize];
    let mut latencies = Vec::new();
    while let Some(message) = inbound.message().await? {
        match message.msg {
            Some(CoordMsg::Welcome(_)) => {
                for slot in 0..slots {
                    asked[slot as usize] = Instant::now();
                    tx.send(msg(AgentMsg::WantWork(pb::WantWork { slot })))
                        .await?;
                }
            }
            Some(CoordMsg::Assign(a)) => {
                latencies.push(asked[a.slot as usize].elapsed());
                tx.send(msg(AgentMsg::LogChunk(pb::LogChunk {
                    job_id: a.job_id,
                    attempt: a.attempt,
                    offset: 0,
                    data: log.clone().into(),
                })))
                .await?;
                tx.send(msg(AgentMsg::JobDone(pb::JobDone {
                    job_id: a.job_id,
                    attempt: a.attempt,
                    duration_ms: 1,
                    log_bytes: log.len() as u64,
                    log_sha256: sha.clone(),
                    tries: 1,
                    slot: a.slot,
                    ..Default::default()
                })))
                .await?;
                asked[a.slot as usize] = Instant::now();
                tx.send(msg(AgentMsg::WantWork(pb::WantWork { slot: a.slot })))
                    .await?;
            }
            Some(CoordMsg::Drain(_)) => break,
            Some(CoordMsg::Cancel(_) | CoordMsg::DoneAck(_)) | None => {}
        }
    }
    Ok(latencies)
}

/// 64 KiB of build-log lines.
fn fake_log() -> Vec<u8> {
    let mut log = Vec::with_capacity(LOG_BYTES + 128);
    let mut i = 0u64;
    while log.len() < LOG_BYTES {
        let line = format!("{i:>8}   Compiling dep-{i} v0.1.{} (registry)\n", i % 97);
        log.extend_from_slice(line.as_bytes());
        i += 1;
    }
    log.truncate(LOG_BYTES);
    log
}

/// User + system CPU seconds of this process (all its threads), from /proc/self/stat.
fn cpu_secs() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which ends with the last ')'): utime is the 12th, stime 13th.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // Clock ticks are 100 per second on Linux (USER_HZ).
    (ticks(11) + ticks(12)) / 100.0
}
