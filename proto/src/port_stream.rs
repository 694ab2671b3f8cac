//! The server's half of a port stream (`ports.proto`), the same wherever one is
//! served (the worker, for the control plane; the control plane, for `Sandboxes`
//! clients): once `opened` is sent, bytes are copied between the client's messages
//! and a connection until both directions are done or either side hangs up.
//!
//! Client `data` is written to the connection before the next message is read;
//! the client's `eof` (or the end of its messages) shuts the connection's write half.
//! The connection's bytes go back as `data` messages of at most [`CHUNK`] bytes
//! through the caller's bounded channel, then `eof` at its end of file. A failed write
//! or a cancelled call hangs up both ways (the connection is dropped); a failed read
//! ends the call with `ABORTED`.

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tonic::{Status, Streaming};

use crate::v1::port_event::Event as Out;
use crate::v1::port_request::Message as In;
use crate::v1::{PortEof, PortEvent, PortRequest};

/// Largest `data` message sent back.
pub const CHUNK: usize = 32 * 1024;

/// Where a port stream's messages to its client go.
pub type PortEvents = mpsc::Sender<Result<PortEvent, Status>>;

/// How one direction ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ended {
    /// Closed cleanly (a half-close): the other direction may go on.
    Closed,
    /// Broken or abandoned: the whole stream ends.
    HungUp,
}

/// Copies between `connection` and the client until the stream is over.
pub async fn relay<C>(connection: C, incoming: Streaming<PortRequest>, events: PortEvents)
where
    C: AsyncRead + AsyncWrite + Send + Unpin,
{
    let (reader, writer) = tokio::io::split(connection);
    let upstream = to_connection(incoming, writer);
    let downstream = from_connection(reader, events);
    tokio::pin!(upstream, downstream);
    let (mut up, mut down) = (None, None);
    while up.is_none() || down.is_none() {
        tokio::select! {
            ended = &mut upstream, if up.is_none() => up = Some(ended),
            ended = &mut downstream, if down.is_none() => down = Some(ended),
        }
        if up == Some(Ended::HungUp) || down == Some(Ended::HungUp) {
            return;
        }
    }
}

/// An event carrying `out`.
pub fn event(out: Out) -> PortEvent {
    PortEvent { event: Some(out) }
}

async fn to_connection<W: AsyncWrite + Unpin>(
    mut incoming: Streaming<PortRequest>,
    mut writer: W,
) -> Ended {
    loop {
        match incoming.message().await {
            Ok(Some(PortRequest {
                message: Some(In::Data(data)),
            })) => {
                if writer.write_all(&data).await.is_err() {
                    return Ended::HungUp;
                }
            }
            Ok(Some(PortRequest {
                message: Some(In::Eof(_)),
            }))
            | Ok(None) => {
                let _ = writer.shutdown().await;
                return Ended::Closed;
            }
            // a second open, or an empty message: nothing to do with it
            Ok(Some(_)) => {}
            Err(_) => return Ended::HungUp,
        }
    }
}

async fn from_connection<R: AsyncRead + Unpin>(mut reader: R, events: PortEvents) -> Ended {
    let mut buffer = vec![0u8; CHUNK];
    loop {
        let out = match reader.read(&mut buffer).await {
            Ok(0) => {
                return match events.send(Ok(event(Out::Eof(PortEof {})))).await {
                    Ok(()) => Ended::Closed,
                    Err(_) => Ended::HungUp,
                };
            }
            Ok(n) => event(Out::Data(buffer[..n].to_vec())),
            Err(err) => {
                let _ = events
                    .send(Err(Status::aborted(format!(
                        "the connection to the port broke: {err}"
                    ))))
                    .await;
                return Ended::HungUp;
            }
        };
        if events.send(Ok(out)).await.is_err() {
            // the client went away
            return Ended::HungUp;
        }
    }
}
