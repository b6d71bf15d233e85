//! The agent's link to its coordinator: one `Work` stream at a time, and a new one whenever the
//! last is lost, for as long as the agent runs.
//!
//! Losing the coordinator (a partition, a coordinator restart, a reset connection) stops no job:
//! the slots keep running and their logs keep growing in [`Held`]. The link reconnects with
//! exponential backoff and jitter (capped at [`MAX_BACKOFF`]) and says in its Hello which jobs it
//! holds; the Welcome answers, for each, whether it is kept and from which offset to send its
//! log again. Only a refusal ends the link with an error (a token, certificate or protocol the
//! coordinator does not accept: retrying would not change its mind). The link ends cleanly when
//! the agent stops (running jobs are released on the way out) or when it is drained and every
//! result is acknowledged.
//!
//! On a connection, one loop sends whatever [`Held`] has new (releases, a WantWork per free
//! slot, log bytes read back from the job's file, a JobDone once its log is all sent) and
//! handles what arrives; a separate task reads the stream, so sending never stops reading.

use crate::held::{Held, LocalId, Ticket};
use anyhow::{Result, bail};
use backon::{BackoffBuilder, ExponentialBuilder};
use crater_proto::client;
use crater_proto::pb::{
    self, agent_message::Msg as AgentMsg, coordinator_message::Msg as CoordMsg,
};
use std::collections::{BTreeMap, HashSet};
use std::os::unix::fs::FileExt;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;

/// The longest wait between two attempts to reach the coordinator.
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// The most log bytes in one LogChunk.
const CHUNK_BYTES: u64 = 64 * 1024;

/// How long the coordinator has to close its side after the agent hung up.
const HANG_UP_WAIT: Duration = Duration::from_secs(10);

/// Where the coordinator is and what this agent shows it.
#[derive(Clone, Copy)]
pub struct Address<'a> {
    /// `https://HOST:PORT`, or `http://` on loopback.
    pub url: &'a str,
    /// The fleet's CA (`--ca-cert`), trusted besides the system's roots.
    pub ca: Option<&'a std::path::Path>,
    pub token: Option<&'a crater_proto::auth::Token>,
}

/// How a connection ended.
enum Ended {
    /// Nothing more to do: the agent stopped, or it is drained and idle.
    Done,
    /// The stream was lost, for this reason: connect again.
    Lost(String),
}

/// Keeps the agent linked to its coordinator until it stops or is drained and idle. `hello` is
/// the Hello to send, without its `held` (filled in on each connection).
pub async fn run(
    address: Address<'_>,
    held: &Held,
    hello: &pb::Hello,
    stop: &CancellationToken,
) -> Result<()> {
    // A bad address, CA or token is refused here, once, rather than on every attempt.
    client::endpoint(address.url, address.ca, address.token)?;
    let mut backoff = new_backoff();
    let mut connected_before = false;
    loop {
        if stop.is_cancelled() || held.idle() {
            return Ok(());
        }
        let why = match connect(address).await {
            Ok(client) => {
                let since = Instant::now();
                match connection(client, held, hello, stop, connected_before).await? {
                    Ended::Done => return Ok(()),
                    Ended::Lost(why) => {
                        connected_before = true;
                        // A connection that lasted was a success: start the backoff afresh.
                        if since.elapsed() > MAX_BACKOFF {
                            backoff = new_backoff();
                        }
                        why
                    }
                }
            }
            Err(e) if client::is_tls_failure(&e) => bail!(
                "the coordinator at {} cannot be trusted: {} (is --ca-cert the fleet's CA?)",
                address.url,
                client::chain(&e)
            ),
            Err(e) => format!("cannot reach it: {}", client::chain(&e)),
        };
        let delay = backoff.next().unwrap_or(MAX_BACKOFF);
        if connected_before {
            tracing::warn!(
                coordinator = %address.url,
                "coordinator lost ({why}); {} jobs kept running, trying again in {:.1}s",
                held.len(),
                delay.as_secs_f64()
            );
        } else {
            tracing::warn!(
                coordinator = %address.url,
                "coordinator not reachable yet ({why}); trying again in {:.1}s",
                delay.as_secs_f64()
            );
        }
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = stop.cancelled() => return Ok(()),
            () = idle(held) => return Ok(()),
        }
    }
}

fn new_backoff() -> impl Iterator<Item = Duration> {
    // backon's jitter adds up to as much again as the delay: half of each bound.
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(250))
        .with_max_delay(MAX_BACKOFF / 2)
        .with_jitter()
        .without_max_times()
        .build()
}

/// Completes when the agent is drained and holds nothing.
async fn idle(held: &Held) {
    while !held.idle() {
        held.changed().await;
    }
}

async fn connect(address: Address<'_>) -> Result<client::Client, tonic::transport::Error> {
    let token = address.token;
    let endpoint = client::endpoint(address.url, address.ca, token)
        .expect("checked when the link started")
        .connect_timeout(Duration::from_secs(10))
        // A coordinator that vanished (a partition, a dead host) is noticed in seconds.
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_timeout(Duration::from_secs(20))
        .keep_alive_while_idle(true);
    let channel = endpoint.connect().await?;
    Ok(client::client(channel, token))
}

/// Whether the coordinator refused this agent for good (not a transient failure).
fn refused(status: &tonic::Status) -> bool {
    use tonic::Code;
    matches!(
        status.code(),
        Code::Unauthenticated
            | Code::PermissionDenied
            | Code::FailedPrecondition
            | Code::InvalidArgument
    )
}

/// One `Work` stream, from Hello to its end.
async fn connection(
    mut client: client::Client,
    held: &Held,
    hello: &pb::Hello,
    stop: &CancellationToken,
    reconnecting: bool,
) -> Result<Ended> {
    let (tx, rx) = mpsc::channel::<pb::AgentMessage>(256);
    let hello = pb::Hello {
        held: held.hello_list(),
        ..hello.clone()
    };
    let holding = hello.held.len();
    tx.send(msg(AgentMsg::Hello(hello))).await?;
    let refusal = |s: tonic::Status| -> Result<Ended> {
        if refused(&s) {
            bail!("the coordinator refused this agent: {}", s.message())
        }
        Ok(Ended::Lost(s.message().to_owned()))
    };
    let mut inbound = match client.work(ReceiverStream::new(rx)).await {
        Ok(response) => response.into_inner(),
        Err(s) => return refusal(s),
    };
    let welcome = match inbound.message().await {
        Ok(Some(pb::CoordinatorMessage {
            msg: Some(CoordMsg::Welcome(welcome)),
        })) => welcome,
        Ok(None) => return Ok(Ended::Lost("it closed the stream at once".into())),
        Ok(Some(other)) => bail!("the coordinator answered hello with {other:?}"),
        Err(s) => return refusal(s),
    };
    let resend = held.reclaimed(&welcome.reclaimed);
    if reconnecting || holding > 0 {
        tracing::info!(
            "connected again: {} of the {holding} jobs held are kept",
            resend.len()
        );
    } else {
        tracing::info!("connected");
    }
    let heartbeat_every = Duration::from_secs(welcome.heartbeat_interval_secs.max(1).into());

    let (inbox_tx, mut inbox) = mpsc::unbounded_channel();
    let reader = tokio::spawn(async move {
        loop {
            let message = inbound.message().await;
            let end = !matches!(message, Ok(Some(_)));
            if inbox_tx.send(message).is_err() || end {
                return;
            }
        }
    });
    let mut pump = Pump {
        sent: resend,
        done_sent: HashSet::new(),
        asked: HashSet::new(),
    };
    let mut heartbeat = tokio::time::interval_at(
        tokio::time::Instant::now() + heartbeat_every,
        heartbeat_every,
    );
    let mut stopping = false;
    let ended = loop {
        if let Err(why) = pump.send_new(held, &tx, stopping).await {
            break Ended::Lost(why);
        }
        if (stopping && held.slots_ended()) || held.idle() {
            break Ended::Done;
        }
        tokio::select! {
            message = inbox.recv() => match message {
                Some(Ok(Some(pb::CoordinatorMessage { msg: Some(m) }))) => {
                    if let Err(why) = handle(m, held, &tx).await {
                        break Ended::Lost(why);
                    }
                }
                Some(Ok(Some(_))) => {}
                Some(Ok(None)) | None => {
                    break Ended::Lost("the coordinator closed the connection".into())
                }
                Some(Err(s)) => break Ended::Lost(s.message().to_owned()),
            },
            () = held.changed() => {}
            _ = heartbeat.tick() => {
                let beat = pb::Heartbeat { running_job_ids: held.running_job_ids() };
                if tx.send(msg(AgentMsg::Heartbeat(beat))).await.is_err() {
                    break Ended::Lost("the stream is closed".into());
                }
            }
            () = stop.cancelled(), if !stopping => stopping = true,
        }
    };
    if let Ended::Done = ended {
        // Hang up politely: end our side and let the coordinator read what is still on its way
        // (the last JobDone, Releases) and close its side. Dropping the stream instead would
        // reset it and lose them. Acknowledgements that still come are taken.
        drop(tx);
        let closed = async {
            while let Some(Ok(Some(m))) = inbox.recv().await {
                if let Some(CoordMsg::DoneAck(ack)) = m.msg {
                    held.acknowledged(ack.job_id, ack.attempt);
                }
            }
        };
        if tokio::time::timeout(HANG_UP_WAIT, closed).await.is_err() {
            tracing::warn!("the coordinator did not close the stream within {HANG_UP_WAIT:?}");
        }
        if !held.is_empty() {
            tracing::warn!(
                "stopping with {} results the coordinator has not acknowledged",
                held.len()
            );
        }
    }
    reader.abort();
    Ok(ended)
}

/// What one connection has sent so far.
struct Pump {
    /// Log bytes sent (or known to the coordinator) of each held job.
    sent: BTreeMap<LocalId, u64>,
    done_sent: HashSet<LocalId>,
    /// Free slots asked for on this connection.
    asked: HashSet<Ticket>,
}

impl Pump {
    /// Sends whatever is new; `Err` says why the stream is gone.
    async fn send_new(
        &mut self,
        held: &Held,
        tx: &mpsc::Sender<pb::AgentMessage>,
        stopping: bool,
    ) -> Result<(), String> {
        let gone = |_| "the stream is closed".to_owned();
        for release in held.take_releases() {
            tracing::info!(
                job = release.job_id,
                "giving the job back to the coordinator"
            );
            tx.send(msg(AgentMsg::Release(release)))
                .await
                .map_err(gone)?;
        }
        let pending = held.pending();
        self.sent
            .retain(|id, _| pending.iter().any(|p| p.id == *id));
        self.done_sent
            .retain(|id| pending.iter().any(|p| p.id == *id));
        for job in pending {
            let sent = self.sent.entry(job.id).or_insert(0);
            while *sent < job.written {
                let len = (job.written - *sent).min(CHUNK_BYTES);
                let data = match read_at(&job.path, *sent, len) {
                    Ok(data) => data,
                    // Forgotten meanwhile (acknowledged, dropped): nothing more to send.
                    Err(_) => break,
                };
                let chunk = pb::LogChunk {
                    job_id: job.job_id,
                    attempt: job.attempt,
                    offset: *sent,
                    data,
                };
                *sent += len;
                tx.send(msg(AgentMsg::LogChunk(chunk)))
                    .await
                    .map_err(gone)?;
            }
            if let Some(done) = job.done
                && *sent >= job.written
                && self.done_sent.insert(job.id)
            {
                tx.send(msg(AgentMsg::JobDone(done))).await.map_err(gone)?;
            }
        }
        // After the JobDones: until the coordinator has a slot's JobDone, the slot is busy there
        // and a WantWork for it would be ignored.
        if !stopping {
            for ticket in held.free_slots() {
                if self.asked.insert(ticket) {
                    let want = pb::WantWork { slot: ticket.slot };
                    tx.send(msg(AgentMsg::WantWork(want))).await.map_err(gone)?;
                }
            }
        }
        Ok(())
    }
}

fn read_at(path: &std::path::Path, offset: u64, len: u64) -> std::io::Result<Vec<u8>> {
    let file = std::fs::File::open(path)?;
    let mut data = vec![0; len as usize];
    file.read_exact_at(&mut data, offset)?;
    Ok(data)
}

/// Acts on one coordinator message; `Err` when the stream is gone.
async fn handle(
    message: CoordMsg,
    held: &Held,
    tx: &mpsc::Sender<pb::AgentMessage>,
) -> Result<(), String> {
    match message {
        CoordMsg::Assign(assign) => {
            // A slot that is not free (draining, or a slot we do not have) gives it back at once.
            let refused = match held.take_free(assign.slot) {
                Some(slot) => slot.send(assign).err(),
                None => Some(assign),
            };
            if let Some(assign) = refused {
                let release = pb::Release {
                    job_id: assign.job_id,
                    attempt: assign.attempt,
                };
                tx.send(msg(AgentMsg::Release(release)))
                    .await
                    .map_err(|_| "the stream is closed".to_owned())?;
            }
        }
        CoordMsg::DoneAck(ack) => {
            if !held.acknowledged(ack.job_id, ack.attempt) {
                tracing::debug!(job = ack.job_id, "an acknowledgement for no held job");
            }
        }
        CoordMsg::Cancel(cancel) => {
            if held.cancel(cancel.job_id) {
                tracing::info!(job = cancel.job_id, "the coordinator cancelled the job");
            }
        }
        CoordMsg::Drain(_) => {
            tracing::info!("drained by the coordinator: finishing running jobs");
            held.drain();
        }
        CoordMsg::Welcome(_) => {}
    }
    Ok(())
}

pub fn msg(m: AgentMsg) -> pb::AgentMessage {
    pb::AgentMessage { msg: Some(m) }
}
