//! `Sandboxes.OpenPort`: a byte stream to a TCP port inside a sandbox for generated
//! clients (exec scope, like exec), as `berth sandbox port-forward` makes over its
//! WebSocket twin. The first message names the sandbox and the port; the answer is
//! `opened` once the worker holding the lease has connected (a refusal is the call's
//! status: NOT_FOUND, UNAVAILABLE with code BAD_GATEWAY when nothing listens), then
//! bytes both ways (`berth_proto::port_stream`) until both sides closed, the
//! connection broke or the client cancelled.

use berth_proto::port_stream::{event, relay};
use berth_proto::v1 as pb;
use pb::port_event::Event as Out;
use pb::port_request::Message as In;
use tokio::sync::mpsc;
use tonic::{Request, Status, Streaming};

use super::caller;
use super::sandboxes::ResponseStream;
use crate::api::observe::note_sandbox;
use crate::api::{ApiState, AuditSlot};
use crate::api_keys::Scope;
use crate::error::ApiError;

/// Messages waiting for a client that reads slowly.
const EVENT_BUFFER: usize = 8;

pub async fn open_port(
    state: &ApiState,
    request: Request<Streaming<pb::PortRequest>>,
) -> Result<ResponseStream<pb::PortEvent>, Status> {
    let granted = caller(state, &request, Scope::Exec).await?;
    let audit = request.extensions().get::<AuditSlot>().cloned();
    let mut incoming = request.into_inner();
    let open = match incoming.message().await? {
        Some(pb::PortRequest {
            message: Some(In::Open(open)),
        }) => open,
        _ => return Err(ApiError::bad_request("the first message must be open").into()),
    };
    note_sandbox(&open.sandbox_id);
    if let Some(slot) = &audit {
        slot.sandbox(&open.sandbox_id);
        slot.detail(format!("port {}", open.port));
    }
    let connection = state
        .sandboxes
        .open_port(&granted.access, &open.sandbox_id, open.port)
        .await
        .map_err(ApiError::from)?;
    tracing::info!(sandbox_id = %open.sandbox_id, port = open.port, key_id = %granted.caller.key_id, "port stream opened");
    let (tx, rx) = mpsc::channel(EVENT_BUFFER);
    let opened = event(Out::Opened(pb::PortOpened {
        sandbox_id: open.sandbox_id,
        port: open.port,
    }));
    // room for it: the channel is new
    let _ = tx.try_send(Ok(opened));
    let shutdown = state.shutdown.clone();
    tokio::spawn(async move {
        tokio::select! {
            () = relay(connection.io, incoming, tx) => {}
            () = shutdown.cancelled() => {}
        }
    });
    let events = futures::stream::unfold(rx, |mut rx| async move {
        let event = rx.recv().await?;
        Some((event, rx))
    });
    Ok(Box::pin(events))
}
