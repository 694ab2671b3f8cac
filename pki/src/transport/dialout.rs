//! Dial-out connections: a worker behind a firewall opens the TLS connection to the
//! control plane's mesh port, and on it the HTTP/2 roles are reversed: the control
//! plane is the client and the worker serves `WorkerService`. The TLS roles stay as
//! they are (the worker verifies the control plane's identity like any mesh client,
//! the control plane verifies the worker's certificate like any mesh server), and
//! [`DIALOUT_ALPN`] tells the control plane which way round HTTP/2 goes.
//!
//! Reversed roles, not a tunnel RPC: the calls on a dial-out connection are the same
//! gRPC calls as on an inbound one, with HTTP/2's own flow control, deadlines,
//! cancellation and keepalives, and no second framing layer to copy through.
//!
//! - worker side: [`dial_out`] gives a connection tonic's server takes as incoming;
//! - control-plane side: [`channel_over`] turns an accepted connection into a tonic
//!   [`Channel`] bound to that one connection (it never dials anything).
//!
//! Both hand back a token that is cancelled once the connection has gone away, so each
//! side learns when to reconnect or forget it.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use hyper_util::rt::TokioIo;
use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_util::sync::{CancellationToken, DropGuard};
use tonic::transport::Channel;
use tonic::transport::server::Connected;

use super::{DialError, DialOptions, TlsConnection, authority_of, connect_tcp, mesh_endpoint};
use crate::tls::DIALOUT_ALPN;

#[derive(Debug, thiserror::Error)]
pub enum DialoutError {
    #[error(transparent)]
    Address(#[from] DialError),
    #[error("cannot connect to {address}: {source}")]
    Connect { address: String, source: io::Error },
    #[error("no connection to {0} within the connect timeout")]
    Timeout(String),
    #[error("{0} does not take dial-out workers (it agreed to {1:?}, not berth-dialout/1)")]
    NotAccepted(String, String),
    #[error("the HTTP/2 handshake over a dial-out connection failed: {0}")]
    Handshake(#[from] tonic::transport::Error),
}

/// The control plane at the other end of a dial-out connection, as tonic's server sees
/// it (its identity was verified in the handshake).
#[derive(Debug, Clone)]
pub struct DialoutPeer {
    pub remote_addr: SocketAddr,
}

/// A connection that cancels a token when whoever holds it (hyper) lets go of it: how
/// each side of a dial-out connection learns it is gone.
#[derive(Debug)]
pub struct EndsOnDrop<T> {
    inner: T,
    _ended: DropGuard,
}

impl<T> EndsOnDrop<T> {
    /// `inner`, and the token cancelled once it is dropped.
    fn new(inner: T) -> (Self, CancellationToken) {
        let ended = CancellationToken::new();
        let held = Self {
            inner,
            _ended: ended.clone().drop_guard(),
        };
        (held, ended)
    }
}

/// A worker's connection to a control plane, to be served by tonic's server.
pub type DialedConnection = EndsOnDrop<tokio_rustls::client::TlsStream<TcpStream>>;

/// Opens a dial-out connection to the control plane at `address` (`host:port` or
/// `https://host:port`) with `config` (which must ask for [`DIALOUT_ALPN`]). Returns
/// the connection and a token cancelled when it has gone away.
pub async fn dial_out(
    address: &str,
    config: Arc<rustls::ClientConfig>,
    options: DialOptions,
) -> Result<(DialedConnection, CancellationToken), DialoutError> {
    let authority = authority_of(address)?;
    let uri: http::Uri = format!("http://{authority}")
        .parse()
        .map_err(|_| DialError::InvalidAddress(address.to_owned()))?;
    let host = uri
        .host()
        .ok_or_else(|| DialError::InvalidAddress(address.to_owned()))?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let port = uri.port_u16().unwrap_or(443);
    let connect = async {
        let tcp = connect_tcp(&host, port, options.local_ip).await?;
        let server_name = ServerName::try_from(host.clone())
            .map_err(|err| io::Error::new(io::ErrorKind::InvalidInput, err))?;
        let stream = TlsConnector::from(config).connect(server_name, tcp).await?;
        Ok::<_, io::Error>(stream)
    };
    let stream = tokio::time::timeout(options.connect_timeout, connect)
        .await
        .map_err(|_| DialoutError::Timeout(authority.to_owned()))?
        .map_err(|source| DialoutError::Connect {
            address: authority.to_owned(),
            source,
        })?;
    let agreed = stream.get_ref().1.alpn_protocol();
    if agreed != Some(DIALOUT_ALPN) {
        let agreed = String::from_utf8_lossy(agreed.unwrap_or(b"nothing")).into_owned();
        return Err(DialoutError::NotAccepted(authority.to_owned(), agreed));
    }
    let (connection, ended) = EndsOnDrop::new(stream);
    Ok((connection, ended))
}

impl Connected for DialedConnection {
    type ConnectInfo = DialoutPeer;

    fn connect_info(&self) -> Self::ConnectInfo {
        let remote_addr = self
            .inner
            .get_ref()
            .0
            .peer_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
        DialoutPeer { remote_addr }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for EndsOnDrop<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for EndsOnDrop<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// A channel whose calls all go over `connection`, an accepted dial-out connection,
/// with the mesh's keepalives and stream settings. The HTTP/2 handshake is done before
/// this returns. The channel never dials: once the connection is gone its calls fail
/// as unavailable, and the returned token is cancelled.
pub async fn channel_over(
    connection: TlsConnection,
    options: DialOptions,
) -> Result<(Channel, CancellationToken), DialoutError> {
    let endpoint = mesh_endpoint(&connection.peer().remote_addr.to_string(), options)?;
    let (held, ended) = EndsOnDrop::new(connection);
    let once = Arc::new(Mutex::new(Some(held)));
    let connect = tower::service_fn(move |_: http::Uri| {
        let taken = once.lock().unwrap_or_else(|e| e.into_inner()).take();
        async move {
            taken.map(TokioIo::new).ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::NotConnected,
                    "the worker's dial-out connection is gone",
                )
            })
        }
    });
    let channel = endpoint.connect_with_connector(connect).await?;
    Ok((channel, ended))
}
