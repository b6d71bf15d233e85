//! The gRPC face of the coordinator: the tonic service, each agent's `Work` stream read and
//! turned into calls on the [`Coordinator`], and `Status`.
//!
//! Only the wire is handled here: the Hello is checked (the first message, within
//! [`HELLO_TIMEOUT`], the same protocol version, sane fields: [`validate`](super::validate)), the
//! stream gets a task of its own, and every later message becomes one call; what the messages
//! mean is decided in [`coordinator`](super::coordinator) and [`state`](super::state). Every
//! message renews the agent's leases; a stream whose agent expired (or came back on a newer
//! stream) is closed, and a second Hello ends the stream.

use crate::serve::coordinator::Coordinator;
use crate::serve::queue::ConnId;
use crate::serve::validate;
use crater_proto::pb::{self, agent_message::Msg as AgentMsg};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

/// A connection that has not said Hello by then is closed.
pub const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

impl Coordinator {
    /// The service to add to a tonic server.
    pub fn service(&self) -> pb::coordinator_server::CoordinatorServer<Coordinator> {
        pb::coordinator_server::CoordinatorServer::new(self.clone())
            .max_decoding_message_size(crater_proto::MAX_AGENT_MESSAGE_BYTES)
            .max_encoding_message_size(crater_proto::MAX_MESSAGE_BYTES)
    }

    /// Reads one agent's stream until it ends.
    async fn serve_agent(self, conn: ConnId, mut inbound: Streaming<pb::AgentMessage>) {
        loop {
            let message = match inbound.message().await {
                Ok(Some(m)) => m,
                Ok(None) => break,
                Err(status) => {
                    tracing::warn!(conn, "agent stream failed: {}", status.message());
                    break;
                }
            };
            if !self.heard(conn) {
                if let Some(AgentMsg::JobDone(done)) = &message.msg {
                    self.late_result(done.job_id);
                }
                tracing::warn!(
                    conn,
                    "a message from an agent whose leases expired: closing"
                );
                break;
            }
            match message.msg {
                Some(AgentMsg::WantWork(w)) => self.on_want_work(conn, w.slot).await,
                Some(AgentMsg::LogChunk(c)) => self.on_log_chunk(conn, c).await,
                Some(AgentMsg::JobDone(d)) => self.on_job_done(conn, d).await,
                Some(AgentMsg::Release(r)) => self.on_release(conn, r).await,
                Some(AgentMsg::Heartbeat(_)) | None => {}
                Some(AgentMsg::Hello(_)) => {
                    tracing::warn!(conn, "a second Hello: closing the stream");
                    break;
                }
            }
        }
        self.on_disconnect(conn);
    }
}

#[tonic::async_trait]
impl pb::coordinator_server::Coordinator for Coordinator {
    type WorkStream = ReceiverStream<Result<pb::CoordinatorMessage, Status>>;

    async fn work(
        &self,
        request: Request<Streaming<pb::AgentMessage>>,
    ) -> Result<Response<Self::WorkStream>, Status> {
        let mut inbound = request.into_inner();
        let first = tokio::time::timeout(HELLO_TIMEOUT, inbound.message())
            .await
            .map_err(|_| {
                Status::deadline_exceeded(format!("no Hello within {HELLO_TIMEOUT:?}"))
            })??;
        let hello = match first {
            Some(pb::AgentMessage {
                msg: Some(AgentMsg::Hello(hello)),
            }) => hello,
            _ => {
                return Err(Status::invalid_argument(
                    "the first message must be a Hello",
                ));
            }
        };
        if hello.protocol_version != crater_proto::PROTOCOL_VERSION {
            return Err(Status::failed_precondition(format!(
                "agent {} speaks protocol {} (version {}), this coordinator speaks protocol {} \
                 (version {}): run the same crater-at-home version on both",
                crater_proto::text::printable(&hello.agent_name, 64),
                hello.protocol_version,
                crater_proto::text::printable(&hello.agent_version, 32),
                crater_proto::PROTOCOL_VERSION,
                env!("CARGO_PKG_VERSION")
            )));
        }
        let hello = validate::hello(&hello).map_err(|why| {
            Status::invalid_argument(format!("this agent's Hello is refused: {why}"))
        })?;
        // Room for an Assign to every slot and then some: an agent whose queue still fills up has
        // stopped reading.
        let (tx, rx) = mpsc::channel(2 * hello.slots as usize + 16);
        let conn = self.connect(&hello, tx).await;
        tracing::info!(conn, agent = %hello.name, slots = hello.slots, "agent connected");
        tokio::spawn(self.clone().serve_agent(conn, inbound));
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn status(
        &self,
        _request: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusReply>, Status> {
        Ok(Response::new(Coordinator::status(self)))
    }
}
