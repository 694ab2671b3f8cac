//! Serving the API router on a listener: plain HTTP/1.1 + h2c on loopback, TLS
//! elsewhere, HTTP/2 keepalives on every connection, graceful shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use berth_pki::transport::{ConnectionLimits, ConnectionSlots, Guarded};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// How long in-flight requests may take to finish after shutdown begins.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("refusing to serve plain HTTP on non-loopback address {0}; TLS is required")]
    PlaintextOffLoopback(SocketAddr),
}

/// Serves `router` on `listener` until `shutdown`. `tls` must be given unless the
/// listener is on a loopback address. Connections are held to `limits` (a cap, and a
/// first byte in time).
pub async fn serve(
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    router: axum::Router,
    limits: ConnectionLimits,
    shutdown: CancellationToken,
) -> Result<(), ServeError> {
    let graceful = GracefulShutdown::new();
    let builder = connection_builder();
    match tls {
        Some(tls) => {
            let mut incoming =
                berth_pki::transport::accept_tls(listener, tls, shutdown.clone(), limits);
            loop {
                let conn = tokio::select! {
                    () = shutdown.cancelled() => break,
                    conn = incoming.recv() => match conn {
                        Some(conn) => conn,
                        None => break,
                    },
                };
                serve_connection(&builder, &graceful, conn, router.clone());
            }
        }
        None => {
            let local = listener.local_addr().ok();
            if let Some(addr) = local
                && !addr.ip().is_loopback()
            {
                return Err(ServeError::PlaintextOffLoopback(addr));
            }
            let slots = ConnectionSlots::new(limits.max_connections);
            loop {
                let accepted = tokio::select! {
                    () = shutdown.cancelled() => break,
                    accepted = listener.accept() => accepted,
                };
                match accepted {
                    Ok((tcp, _)) => {
                        let Some(slot) = slots.take("api") else {
                            continue;
                        };
                        let _ = tcp.set_nodelay(true);
                        let tcp = Guarded::new(tcp, &limits, slot, true);
                        serve_connection(&builder, &graceful, tcp, router.clone());
                    }
                    Err(err) => {
                        tracing::warn!(error = %err, "api accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        }
    }
    if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("api connections still open after the shutdown grace period");
    }
    Ok(())
}

fn connection_builder() -> Builder<TokioExecutor> {
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(30));
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(Duration::from_secs(20)))
        .keep_alive_timeout(Duration::from_secs(20));
    builder
}

fn serve_connection<IO>(
    builder: &Builder<TokioExecutor>,
    graceful: &GracefulShutdown,
    io: IO,
    router: axum::Router,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = TowerToHyperService::new(router);
    let conn = builder
        .serve_connection_with_upgrades(TokioIo::new(io), service)
        .into_owned();
    let conn = graceful.watch(conn);
    tokio::spawn(async move {
        if let Err(err) = conn.await {
            tracing::debug!(error = %err, "api connection ended with an error");
        }
    });
}
