//! `WorkerService.OpenPort`: the mesh's side of port streams (`crate::provider::port`).
//! The first message names the sandbox, its lease generation and the port; the worker
//! connects and answers `opened` (or fails the call), then bytes are copied both ways
//! by `berth_proto::port_stream` until both directions are done, the connection
//! breaks or the control plane cancels the call (the connection is then dropped).

use berth_proto::port_stream::{event, relay};
use berth_proto::v1 as pb;
use pb::port_event::Event as Out;
use pb::port_request::Message as In;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Status, Streaming};

use super::{ResponseStream, WorkerGrpc, status};
use crate::provider::port::parse_port;

/// Messages waiting for the control plane.
const EVENT_BUFFER: usize = 8;

impl WorkerGrpc {
    pub(super) async fn open_port_stream(
        &self,
        mut incoming: Streaming<pb::PortRequest>,
    ) -> Result<ResponseStream<pb::PortEvent>, Status> {
        let open = match incoming.message().await? {
            Some(pb::PortRequest {
                message: Some(In::Open(open)),
            }) => open,
            _ => return Err(status::bad_request("the first message must be `open`")),
        };
        tracing::Span::current().record("sandbox_id", tracing::field::display(&open.sandbox_id));
        let port = parse_port(open.port).map_err(status::from_provider)?;
        self.admit(&open.sandbox_id, open.generation).await?;
        let connection = self
            .runtime
            .provider
            .open_port(&open.sandbox_id, port)
            .await;
        self.count(&self.runtime.metrics.ports_opened, &connection);
        let connection = connection.map_err(status::from_provider)?;
        tracing::debug!(port, "port stream opened");
        let (tx, rx) = mpsc::channel(EVENT_BUFFER);
        let opened = event(Out::Opened(pb::PortOpened {
            sandbox_id: open.sandbox_id,
            port: u32::from(port),
        }));
        // room for it: the channel is new
        let _ = tx.try_send(Ok(opened));
        let open = self.runtime.metrics.ports_open.clone();
        open.inc();
        tokio::spawn(async move {
            relay(connection, incoming, tx).await;
            open.dec();
        });
        Ok(Box::pin(ReceiverStream::new(rx)))
    }
}
