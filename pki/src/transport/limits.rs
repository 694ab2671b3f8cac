//! What one listener's connections may hold: how many are open at once, how soon a
//! new one must say something, and how long one without a client certificate may
//! stay silent. A peer that opens connections and sends nothing (before or after the
//! TLS handshake) gets them closed, not kept for ever; past the cap a new connection
//! is closed at once, so a flood cannot take every file descriptor of the process.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Sleep;

/// Bounds for the connections of one listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Connections open at once, TLS handshakes in progress included.
    pub max_connections: usize,
    /// A new connection must send its first byte of application data (after its TLS
    /// handshake, if any) within this.
    pub first_byte_timeout: Duration,
    /// A connection whose peer presented no client certificate is closed after this
    /// long without sending a byte; `None`: never. (Only for listeners whose anonymous
    /// callers make short calls: the mesh, where they only enroll; not the API, whose
    /// clients legitimately sit silent through a long stream.)
    pub anonymous_idle_timeout: Option<Duration>,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self {
            max_connections: 4096,
            first_byte_timeout: Duration::from_secs(10),
            anonymous_idle_timeout: None,
        }
    }
}

/// The open-connection budget of one listener.
#[derive(Debug, Clone)]
pub struct ConnectionSlots {
    slots: Arc<Semaphore>,
    max: usize,
    /// Refusals since the last warning, and when that was.
    refused: Arc<std::sync::Mutex<(u64, Option<Instant>)>>,
}

/// Refusals are logged at most this often (a flood must not flood the log).
const WARN_EVERY: Duration = Duration::from_secs(10);

impl ConnectionSlots {
    pub fn new(max: usize) -> Self {
        Self {
            slots: Arc::new(Semaphore::new(max.max(1))),
            max: max.max(1),
            refused: Arc::default(),
        }
    }

    /// A slot for a new connection, or `None` (logged, rate-limited) when all are taken.
    pub fn take(&self, what: &str) -> Option<OwnedSemaphorePermit> {
        match self.slots.clone().try_acquire_owned() {
            Ok(permit) => Some(permit),
            Err(_) => {
                let mut refused = self.refused.lock().unwrap_or_else(|e| e.into_inner());
                refused.0 += 1;
                if refused.1.is_none_or(|at| at.elapsed() >= WARN_EVERY) {
                    tracing::warn!(
                        listener = what,
                        max_connections = self.max,
                        refused = refused.0,
                        "connection limit reached; closing new connections"
                    );
                    *refused = (0, Some(Instant::now()));
                }
                None
            }
        }
    }
}

/// A connection under [`ConnectionLimits`]: holds its slot while open, and fails its
/// reads (which closes it) when the peer has been silent past its deadline.
#[derive(Debug)]
pub struct Guarded<IO> {
    io: IO,
    /// The first-byte deadline until the first byte, then the idle deadline (if any).
    deadline: Option<Pin<Box<Sleep>>>,
    idle: Option<Duration>,
    _slot: OwnedSemaphorePermit,
}

impl<IO> Guarded<IO> {
    /// `anonymous`: the peer presented no client certificate.
    pub fn new(
        io: IO,
        limits: &ConnectionLimits,
        slot: OwnedSemaphorePermit,
        anonymous: bool,
    ) -> Self {
        Self {
            io,
            deadline: Some(Box::pin(tokio::time::sleep(limits.first_byte_timeout))),
            idle: limits.anonymous_idle_timeout.filter(|_| anonymous),
            _slot: slot,
        }
    }

    pub fn get_ref(&self) -> &IO {
        &self.io
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Guarded<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.io).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    match this.idle {
                        Some(idle) => {
                            let at = tokio::time::Instant::now() + idle;
                            match this.deadline.as_mut() {
                                Some(deadline) => deadline.as_mut().reset(at),
                                None => {
                                    this.deadline = Some(Box::pin(tokio::time::sleep_until(at)))
                                }
                            }
                        }
                        None => this.deadline = None,
                    }
                }
                Poll::Ready(Ok(()))
            }
            Poll::Pending => {
                let expired = this
                    .deadline
                    .as_mut()
                    .is_some_and(|deadline| deadline.as_mut().poll(cx).is_ready());
                if expired {
                    Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "the peer sent nothing in time",
                    )))
                } else {
                    Poll::Pending
                }
            }
            other => other,
        }
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Guarded<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn limits(first_byte_ms: u64, idle_ms: Option<u64>) -> ConnectionLimits {
        ConnectionLimits {
            max_connections: 2,
            first_byte_timeout: Duration::from_millis(first_byte_ms),
            anonymous_idle_timeout: idle_ms.map(Duration::from_millis),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_peer_is_timed_out_and_a_talking_one_is_not() {
        let slots = ConnectionSlots::new(2);
        let (client, server) = tokio::io::duplex(64);
        let mut guarded = Guarded::new(server, &limits(1000, None), slots.take("t").unwrap(), true);
        let mut byte = [0u8; 1];
        let err = guarded.read(&mut byte).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        drop(client);

        // one byte in time lifts the deadline (no idle timeout configured)
        let (mut client, server) = tokio::io::duplex(64);
        let mut guarded = Guarded::new(server, &limits(1000, None), slots.take("t").unwrap(), true);
        client.write_all(b"x").await.unwrap();
        guarded.read_exact(&mut byte).await.unwrap();
        let silent = tokio::time::timeout(Duration::from_secs(3600), guarded.read(&mut byte)).await;
        assert!(
            silent.is_err(),
            "no deadline after the first byte: {silent:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_anonymous_peer_is_closed_when_idle_a_certified_one_is_not() {
        let slots = ConnectionSlots::new(2);
        let (mut client, server) = tokio::io::duplex(64);
        let mut anonymous = Guarded::new(
            server,
            &limits(1000, Some(5000)),
            slots.take("t").unwrap(),
            true,
        );
        let mut byte = [0u8; 1];
        for _ in 0..3 {
            // talking every 4 s keeps it open
            tokio::time::sleep(Duration::from_secs(4)).await;
            client.write_all(b"x").await.unwrap();
            anonymous.read_exact(&mut byte).await.unwrap();
        }
        let err = anonymous.read(&mut byte).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);

        let (mut client, server) = tokio::io::duplex(64);
        let mut certified = Guarded::new(
            server,
            &limits(1000, Some(5000)),
            slots.take("t").unwrap(),
            false,
        );
        client.write_all(b"x").await.unwrap();
        certified.read_exact(&mut byte).await.unwrap();
        let silent =
            tokio::time::timeout(Duration::from_secs(3600), certified.read(&mut byte)).await;
        assert!(silent.is_err(), "{silent:?}");
    }

    #[tokio::test]
    async fn slots_are_capped_and_given_back_on_close() {
        let slots = ConnectionSlots::new(2);
        let first = slots.take("t").unwrap();
        let _second = slots.take("t").unwrap();
        assert!(slots.take("t").is_none());
        drop(first);
        assert!(slots.take("t").is_some());
    }
}
