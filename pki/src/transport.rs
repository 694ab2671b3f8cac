//! The mesh's wire: TLS listeners that hand tonic (or axum) connections whose peer
//! identity was verified during the handshake, and lazily connecting tonic channels
//! that dial through our own rustls client config.
//!
//! tonic's built-in TLS is not used: our verifiers (SPIFFE identity, CA pin, revocation)
//! and hot-swappable certificates live in the rustls configs built by [`crate::tls`].

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::{TlsAcceptor, TlsConnector};
use tokio_util::sync::CancellationToken;
use tonic::transport::server::Connected;
use tonic::transport::{Channel, Endpoint};

use crate::{SpiffeId, cert_info};

mod dialout;
mod limits;

pub use dialout::{
    DialedConnection, DialoutError, DialoutPeer, EndsOnDrop, channel_over, dial_out,
};
pub use limits::{ConnectionLimits, ConnectionSlots, Guarded};

/// A handshake that has not finished by then is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Established connections waiting for the server to pick them up.
const ACCEPT_BACKLOG: usize = 1024;
/// Streams a mesh channel remembers after cancelling them (h2's default is 50).
///
/// When the control plane drops a worker call (its client went away: an exec stream
/// left half read, an upload dropped), h2 sends `RST_STREAM` and remembers the stream
/// for a while, ignoring the frames the worker had already sent. A stream forgotten too
/// early makes each late frame a "local error reset", and the connection closes itself
/// with `GOAWAY(ENHANCE_YOUR_CALM, too_many_internal_resets)` once it made 1024 of
/// them (hyperium/h2#856). A relay cancels far more than 50 streams a second under
/// load, so it remembers this many (a few hundred bytes each).
pub const REMEMBERED_RESET_STREAMS: usize = 10_000;
/// How long a cancelled stream is remembered: the time for frames already in flight
/// to arrive, with room for a slow link.
pub const RESET_STREAM_MEMORY: Duration = Duration::from_secs(5);
/// The local error resets a mesh connection may make before it closes itself: no limit.
///
/// h2's budget (1024) counts over the connection's whole life, not per second, so on a
/// long-lived busy connection any finite number is eventually spent by the few late
/// frames that still arrive for forgotten streams. It guards against a hostile peer;
/// mesh peers are authenticated (CA, SPIFFE id) in the handshake, and each such reset
/// costs us one small frame. Servers whose every peer is authenticated (the worker's
/// port accepts only the control plane) pass this to tonic's `Server` too.
pub const MESH_LOCAL_ERROR_RESETS: Option<usize> = None;

/// Who is on the other end of an accepted connection, as its verified certificate says.
/// tonic puts it into every request's extensions.
#[derive(Debug, Clone)]
pub struct PeerInfo {
    pub remote_addr: SocketAddr,
    /// The identity of the verified client certificate; `None` when none was presented.
    pub spiffe_id: Option<SpiffeId>,
    pub serial_hex: Option<String>,
    /// When the client certificate expires (unix seconds).
    pub not_after: Option<i64>,
}

/// An established server-side TLS connection and its peer.
#[derive(Debug)]
pub struct TlsConnection {
    stream: Guarded<tokio_rustls::server::TlsStream<TcpStream>>,
    peer: PeerInfo,
    /// The protocol the handshake agreed on (ALPN).
    alpn: Option<Vec<u8>>,
    /// Cancelled to close the connection from our side.
    closer: CancellationToken,
    /// Resolves when the connection is closed from our side (its certificate revoked or
    /// expired, or shutdown).
    closed: Pin<Box<tokio_util::sync::WaitForCancellationFutureOwned>>,
    /// Marks the registry entry dead when the connection goes away.
    _entry: tokio_util::sync::DropGuard,
}

/// The live connections by client-certificate serial, so revoking a certificate can
/// close the connections it opened, not only refuse new ones.
#[derive(Debug, Clone, Default)]
pub struct Connections {
    by_serial: Arc<std::sync::Mutex<std::collections::HashMap<String, Vec<CancellationToken>>>>,
}

impl Connections {
    /// A token that closes the connection when cancelled, registered under `serial`.
    fn register(&self, serial: Option<&str>) -> CancellationToken {
        let token = CancellationToken::new();
        if let Some(serial) = serial {
            let mut map = self.by_serial.lock().unwrap_or_else(|e| e.into_inner());
            // entries of connections that ended are cancelled by their drop guard
            map.retain(|_, tokens| {
                tokens.retain(|t| !t.is_cancelled());
                !tokens.is_empty()
            });
            map.entry(serial.to_owned())
                .or_default()
                .push(token.clone());
        }
        token
    }

    /// Closes every live connection authenticated with one of `serials`; returns how many.
    pub fn close(&self, serials: &[String]) -> usize {
        let mut map = self.by_serial.lock().unwrap_or_else(|e| e.into_inner());
        let mut closed = 0;
        for serial in serials {
            for token in map.remove(serial).unwrap_or_default() {
                if !token.is_cancelled() {
                    closed += 1;
                }
                token.cancel();
            }
        }
        closed
    }
}

fn closed_error() -> io::Error {
    io::Error::new(
        io::ErrorKind::ConnectionAborted,
        "connection closed by this end: its certificate was revoked or expired, or the server is stopping",
    )
}

impl TlsConnection {
    pub fn peer(&self) -> &PeerInfo {
        &self.peer
    }

    /// Whether the peer opened this connection to serve calls on it rather than make
    /// them: a dial-out worker ([`crate::tls::DIALOUT_ALPN`]).
    pub fn is_dialout(&self) -> bool {
        self.alpn.as_deref() == Some(crate::tls::DIALOUT_ALPN)
    }

    /// A token that closes this connection when cancelled (reads and writes fail).
    pub fn closer(&self) -> CancellationToken {
        self.closer.clone()
    }
}

impl Connected for TlsConnection {
    type ConnectInfo = PeerInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.peer.clone()
    }
}

impl AsyncRead for TlsConnection {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.closed.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Err(closed_error()));
        }
        Pin::new(&mut this.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConnection {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.closed.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Err(closed_error()));
        }
        Pin::new(&mut this.stream).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

/// Accepts on `listener` until `shutdown`, completing TLS handshakes concurrently (a
/// slow or silent peer cannot stall the listener) and handing over only the connections
/// whose handshake succeeded: plaintext clients, unknown CAs, wrong identities and
/// revoked certificates never reach the server.
///
/// Connections are held to `limits`: past `max_connections` a new one is closed at
/// once, and one that sends nothing in time is closed (see [`ConnectionLimits`]).
pub fn accept_tls(
    listener: TcpListener,
    config: Arc<rustls::ServerConfig>,
    shutdown: CancellationToken,
    limits: ConnectionLimits,
) -> mpsc::Receiver<TlsConnection> {
    accept_tls_tracked(listener, config, shutdown, Connections::default(), limits)
}

/// [`accept_tls`], registering each connection in `connections` by its client
/// certificate's serial so it can be closed later.
pub fn accept_tls_tracked(
    listener: TcpListener,
    config: Arc<rustls::ServerConfig>,
    shutdown: CancellationToken,
    connections: Connections,
    limits: ConnectionLimits,
) -> mpsc::Receiver<TlsConnection> {
    let (tx, rx) = mpsc::channel(ACCEPT_BACKLOG);
    let acceptor = TlsAcceptor::from(config);
    let slots = ConnectionSlots::new(limits.max_connections);
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                () = shutdown.cancelled() => break,
                accepted = listener.accept() => accepted,
            };
            let (tcp, remote_addr) = match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    // e.g. out of file descriptors: back off instead of spinning
                    tracing::warn!(error = %err, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            // a slot from before the handshake: handshakes in progress count too
            let Some(slot) = slots.take("tls") else {
                drop(tcp);
                continue;
            };
            let _ = tcp.set_nodelay(true);
            let acceptor = acceptor.clone();
            let tx = tx.clone();
            let connections = connections.clone();
            tokio::spawn(async move {
                let stream =
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                        Ok(Ok(stream)) => stream,
                        Ok(Err(err)) => {
                            tracing::debug!(%remote_addr, error = %err, "tls handshake refused");
                            return;
                        }
                        Err(_) => {
                            tracing::debug!(%remote_addr, "tls handshake timed out");
                            return;
                        }
                    };
                let peer = peer_info(remote_addr, &stream);
                let token = connections.register(peer.serial_hex.as_deref());
                let anonymous = peer.serial_hex.is_none();
                let alpn = stream.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
                let connection = TlsConnection {
                    stream: Guarded::new(stream, &limits, slot, anonymous),
                    peer,
                    alpn,
                    closer: token.clone(),
                    closed: Box::pin(token.clone().cancelled_owned()),
                    _entry: token.drop_guard(),
                };
                let _ = tx.send(connection).await;
            });
        }
    });
    rx
}

fn peer_info(
    remote_addr: SocketAddr,
    stream: &tokio_rustls::server::TlsStream<TcpStream>,
) -> PeerInfo {
    let leaf = stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|certs| certs.first());
    let info = leaf.and_then(|der| cert_info(der.as_ref()).ok());
    PeerInfo {
        remote_addr,
        spiffe_id: info.as_ref().and_then(|info| info.spiffe_id.clone()),
        not_after: info.as_ref().map(|info| info.not_after),
        serial_hex: info.map(|info| info.serial_hex),
    }
}

/// [`accept_tls`] as the stream tonic's `serve_with_incoming` takes.
pub fn tls_incoming(
    listener: TcpListener,
    config: Arc<rustls::ServerConfig>,
    shutdown: CancellationToken,
    limits: ConnectionLimits,
) -> impl tokio_stream::Stream<Item = Result<TlsConnection, io::Error>> + Send + 'static {
    tls_incoming_tracked(listener, config, shutdown, Connections::default(), limits)
}

/// [`accept_tls_tracked`] as the stream tonic's `serve_with_incoming` takes.
pub fn tls_incoming_tracked(
    listener: TcpListener,
    config: Arc<rustls::ServerConfig>,
    shutdown: CancellationToken,
    connections: Connections,
    limits: ConnectionLimits,
) -> impl tokio_stream::Stream<Item = Result<TlsConnection, io::Error>> + Send + 'static {
    use tokio_stream::StreamExt;
    tokio_stream::wrappers::ReceiverStream::new(accept_tls_tracked(
        listener,
        config,
        shutdown,
        connections,
        limits,
    ))
    .map(Ok)
}

/// Keepalive and deadline settings of mesh channels: a dead peer is noticed, never
/// waited on for ever.
#[derive(Debug, Clone, Copy)]
pub struct DialOptions {
    pub connect_timeout: Duration,
    pub keepalive_interval: Duration,
    pub keepalive_timeout: Duration,
    /// The local address to dial from; `None`: the system chooses.
    pub local_ip: Option<std::net::IpAddr>,
}

impl Default for DialOptions {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(5),
            keepalive_interval: Duration::from_secs(10),
            keepalive_timeout: Duration::from_secs(10),
            local_ip: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DialError {
    #[error("invalid mesh address {0:?}: expected host:port or https://host:port")]
    InvalidAddress(String),
}

/// The `host:port` of a mesh address (`host:port` or `https://host:port`).
pub(crate) fn authority_of(address: &str) -> Result<&str, DialError> {
    let authority = address
        .strip_prefix("https://")
        .unwrap_or(address)
        .trim_end_matches('/');
    if authority.is_empty() || authority.contains('/') || authority.starts_with("http:") {
        return Err(DialError::InvalidAddress(address.to_owned()));
    }
    Ok(authority)
}

/// A tonic endpoint for `authority` with the mesh's keepalives, deadlines and stream
/// settings. The URI only carries the authority to a connector that does the TLS;
/// tonic itself never sees a TLS setting.
pub(crate) fn mesh_endpoint(authority: &str, options: DialOptions) -> Result<Endpoint, DialError> {
    Ok(Endpoint::from_shared(format!("http://{authority}"))
        .map_err(|_| DialError::InvalidAddress(authority.to_owned()))?
        .connect_timeout(options.connect_timeout)
        .http2_keep_alive_interval(options.keepalive_interval)
        .keep_alive_timeout(options.keepalive_timeout)
        .keep_alive_while_idle(true)
        .http2_max_concurrent_reset_streams(REMEMBERED_RESET_STREAMS)
        .http2_reset_stream_duration(RESET_STREAM_MEMORY)
        .http2_max_local_error_reset_streams(MESH_LOCAL_ERROR_RESETS)
        .tcp_nodelay(true))
}

/// A TCP connection to `host:port` (from `local_ip` when given), without delay.
pub(crate) async fn connect_tcp(
    host: &str,
    port: u16,
    local_ip: Option<std::net::IpAddr>,
) -> io::Result<TcpStream> {
    let tcp = match local_ip {
        None => TcpStream::connect((host, port)).await?,
        Some(local_ip) => connect_from(local_ip, host, port).await?,
    };
    tcp.set_nodelay(true)?;
    Ok(tcp)
}

/// A lazily connecting channel to `address` (`host:port` or `https://host:port`) that
/// always speaks TLS with `config`, whatever the scheme says.
pub fn mesh_channel(
    address: &str,
    config: Arc<rustls::ClientConfig>,
    options: DialOptions,
) -> Result<Channel, DialError> {
    let endpoint = mesh_endpoint(authority_of(address)?, options)?;
    let connector = TlsConnector::from(config);
    let local_ip = options.local_ip;
    let connect = tower::service_fn(move |uri: http::Uri| {
        let connector = connector.clone();
        async move {
            let host = uri
                .host()
                .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no host"))?;
            let port = uri.port_u16().unwrap_or(443);
            let host = host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned();
            let tcp = connect_tcp(&host, port, local_ip).await?;
            let server_name = ServerName::try_from(host)
                .map_err(|err| io::Error::new(io::ErrorKind::InvalidInput, err))?;
            let stream = connector.connect(server_name, tcp).await?;
            Ok::<_, io::Error>(TokioIo::new(stream))
        }
    });
    Ok(endpoint.connect_with_connector_lazy(connect))
}

/// A TCP connection to `host:port` from `local_ip` (any port).
async fn connect_from(local_ip: std::net::IpAddr, host: &str, port: u16) -> io::Result<TcpStream> {
    let mut last = io::Error::new(io::ErrorKind::NotFound, format!("{host} has no address"));
    for remote in tokio::net::lookup_host((host, port)).await? {
        if remote.is_ipv4() != local_ip.is_ipv4() {
            continue;
        }
        let socket = if remote.is_ipv4() {
            tokio::net::TcpSocket::new_v4()?
        } else {
            tokio::net::TcpSocket::new_v6()?
        };
        socket.bind(SocketAddr::new(local_ip, 0))?;
        match socket.connect(remote).await {
            Ok(stream) => return Ok(stream),
            Err(err) => last = err,
        }
    }
    Err(last)
}

/// Runs a server future that stops accepting when `shutdown` fires. Once it fired, open
/// connections get `grace` to drain; after that the server is dropped rather than
/// waited on for ever (a followed log or a long stream would otherwise hold shutdown).
pub async fn serve_with_grace<F>(
    server: F,
    shutdown: CancellationToken,
    grace: Duration,
) -> Option<F::Output>
where
    F: std::future::Future,
{
    tokio::pin!(server);
    tokio::select! {
        output = &mut server => return Some(output),
        () = shutdown.cancelled() => {}
    }
    match tokio::time::timeout(grace, server).await {
        Ok(output) => Some(output),
        Err(_) => {
            tracing::warn!(
                ?grace,
                "connections still open after the shutdown grace period; closing"
            );
            None
        }
    }
}
