//! Port streams on one worker: `WorkerService.OpenPort`, a byte stream to a TCP port
//! inside a sandbox. The caller gets a [`PortConnection`], an in-memory socket (both
//! halves of an `AsyncRead + AsyncWrite`) that a task bridges to the call, so every
//! front door (preview proxy, WebSocket tunnel, gRPC, SSH forwards) reads and writes
//! it like a TCP stream.
//!
//! The connection is not handed out before the worker answered `opened`: a refusal
//! (no such sandbox, a stale lease, nothing listening) is the call's error, so a
//! refused route can be tried on the lease in the store. Then a shutdown of the
//! caller's write half is sent as `eof` (a half-close), the worker's `eof` becomes end
//! of file for the caller's reads, and dropping the connection cancels the call at
//! once (the worker closes its connection in the sandbox), whatever the server inside
//! is doing. Each direction holds at most [`PIPE_BUFFER`] bytes plus
//! [`REQUEST_BUFFER`] messages.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use berth_proto::ErrorCode;
use berth_proto::v1 as pb;
use futures::{StreamExt, stream};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream, ReadBuf};
use tokio::sync::mpsc;
use tokio_util::sync::{CancellationToken, DropGuard};

use super::WorkerClient;
use crate::workers::RemoteError;

/// Bytes in flight in each direction between the caller and the bridging task.
const PIPE_BUFFER: usize = 64 * 1024;
/// Largest `data` message sent to the worker.
const CHUNK: usize = 32 * 1024;
/// Messages waiting for the worker to take them.
const REQUEST_BUFFER: usize = 8;

/// An open connection to a port inside a sandbox, through its worker.
#[derive(Debug)]
pub struct PortConnection {
    pub worker_id: String,
    /// The caller's end: reads what the port sends, writes what it receives.
    pub io: PortIo,
}

/// The caller's end of a port connection; dropping it ends the call.
#[derive(Debug)]
pub struct PortIo {
    pipe: DuplexStream,
    _hang_up: DropGuard,
    /// Dropped with the connection (the caller's: what keeps the sandbox in use).
    _held: Option<DropGuard>,
}

impl PortIo {
    /// Keeps `guard` until the connection is dropped.
    pub fn hold(&mut self, guard: DropGuard) {
        self._held = Some(guard);
    }
}

impl AsyncRead for PortIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.pipe).poll_read(cx, buf)
    }
}

impl AsyncWrite for PortIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.pipe).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.pipe).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.pipe).poll_shutdown(cx)
    }
}

impl WorkerClient {
    /// Opens a connection to `port` of `sandbox_id` (fenced by `generation`). No
    /// deadline: the stream lives as long as the connection.
    pub async fn open_port(
        &self,
        sandbox_id: &str,
        generation: u64,
        port: u16,
    ) -> Result<PortConnection, RemoteError> {
        use pb::port_event::Event;
        use pb::port_request::Message;
        let open = pb::PortRequest {
            message: Some(Message::Open(pb::PortOpen {
                sandbox_id: sandbox_id.to_owned(),
                generation,
                port: u32::from(port),
            })),
        };
        let (requests, pending) = mpsc::channel(REQUEST_BUFFER);
        let pending = stream::unfold(pending, |mut pending| async move {
            let request = pending.recv().await?;
            Some((request, pending))
        });
        let mut events = self
            .inner
            .clone()
            .open_port(tonic::Request::new(stream::iter([open]).chain(pending)))
            .await
            .map_err(|status| self.error(&status))?
            .into_inner();
        match events.message().await {
            Ok(Some(pb::PortEvent {
                event: Some(Event::Opened(_)),
            })) => {}
            Ok(Some(other)) => {
                return Err(RemoteError::internal(
                    &self.worker_id,
                    &format!("the worker answered a port's open with {other:?}"),
                ));
            }
            Ok(None) => {
                return Err(RemoteError::new(
                    &self.worker_id,
                    ErrorCode::Unavailable,
                    "the worker ended the port's stream before it opened",
                ));
            }
            Err(status) => return Err(self.error(&status)),
        }
        let (pipe, bridged) = tokio::io::duplex(PIPE_BUFFER);
        let hang_up = CancellationToken::new();
        let cancelled = hang_up.clone();
        tokio::spawn(async move {
            tokio::select! {
                () = bridge(bridged, requests, events) => {}
                () = cancelled.cancelled() => {}
            }
        });
        Ok(PortConnection {
            worker_id: self.worker_id.clone(),
            io: PortIo {
                pipe,
                _hang_up: hang_up.drop_guard(),
                _held: None,
            },
        })
    }
}

/// Copies between the pipe's far end and the call until both directions are done or
/// either side hangs up.
async fn bridge(
    pipe: DuplexStream,
    requests: mpsc::Sender<pb::PortRequest>,
    mut events: tonic::Streaming<pb::PortEvent>,
) {
    use pb::port_event::Event;
    use pb::port_request::Message;
    let (mut reader, mut writer) = tokio::io::split(pipe);
    let upstream = async move {
        let mut buffer = vec![0u8; CHUNK];
        loop {
            let message = match reader.read(&mut buffer).await {
                Ok(0) | Err(_) => Message::Eof(pb::PortEof {}),
                Ok(n) => Message::Data(buffer[..n].to_vec()),
            };
            let last = matches!(message, Message::Eof(_));
            let request = pb::PortRequest {
                message: Some(message),
            };
            if requests.send(request).await.is_err() || last {
                // the request stream stays open until the call ends
                return requests;
            }
        }
    };
    let downstream = async move {
        loop {
            match events.message().await {
                Ok(Some(pb::PortEvent {
                    event: Some(Event::Data(data)),
                })) => {
                    if writer.write_all(&data).await.is_err() {
                        // the caller dropped its end: cancel the call
                        return;
                    }
                }
                Ok(Some(pb::PortEvent {
                    event: Some(Event::Eof(_)),
                })) => {
                    let _ = writer.shutdown().await;
                }
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => {
                    let _ = writer.shutdown().await;
                    return;
                }
            }
        }
    };
    // the call ends with the downstream (the worker's answer); the upstream's sender
    // is held until then so the worker does not read an early end of the requests
    let downstream = tokio::spawn(downstream);
    let upstream = tokio::spawn(upstream);
    let _ = downstream.await;
    upstream.abort();
}
