//! Connections that say nothing are closed, and each listener holds a bounded number:
//! a TCP connection to the API that never sends a byte, a mesh connection that
//! finishes its TLS handshake without a certificate and then sends nothing (or only
//! the HTTP/2 preface), and more connections than the cap allows. Before these bounds
//! every one of them stayed open for ever.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use berth_controlplane::ControlPlaneConfig;
use berth_testkit::TestControlPlane;

/// How long a test waits for the server to close a connection: well past the
/// timeouts set below, well short of anything that would close it otherwise (the
/// mesh's HTTP/2 keepalive takes 20 s).
const PATIENCE: Duration = Duration::from_secs(8);

fn short_timeouts(config: &mut ControlPlaneConfig) {
    config.limits.first_byte_timeout = Duration::from_secs(1);
    config.limits.anonymous_mesh_idle_timeout = Duration::from_secs(2);
}

/// Reads until the server closes the connection; how long that took, or `None` if
/// it was still open after [`PATIENCE`].
async fn closed_after(mut io: impl AsyncRead + Unpin) -> Option<Duration> {
    let started = Instant::now();
    let mut buf = [0u8; 4096];
    let until = tokio::time::Instant::now() + PATIENCE;
    loop {
        match tokio::time::timeout_at(until, io.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => return Some(started.elapsed()),
            Ok(Ok(_)) => continue,
        }
    }
}

#[tokio::test]
async fn an_api_connection_that_sends_nothing_is_closed() {
    let cp = TestControlPlane::start_with(short_timeouts).await;
    let silent = TcpStream::connect(cp.api_addr).await.unwrap();
    let closed = closed_after(silent).await;
    assert!(closed.is_some(), "a silent API connection stayed open");

    // a connection that talks is served as ever
    let mut talking = TcpStream::connect(cp.api_addr).await.unwrap();
    talking
        .write_all(b"GET /api/v1/health HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = String::new();
    talking.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    cp.stop().await;
}

#[tokio::test]
async fn past_the_cap_new_api_connections_are_closed_at_once() {
    let cp = TestControlPlane::start_with(|config| {
        config.limits.max_connections = 3;
        config.limits.first_byte_timeout = Duration::from_secs(60);
    })
    .await;
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(TcpStream::connect(cp.api_addr).await.unwrap());
    }
    // the kernel accepts it; the server closes it without waiting for anything
    let refused = TcpStream::connect(cp.api_addr).await.unwrap();
    let closed = closed_after(refused).await;
    assert!(
        closed.is_some_and(|took| took < Duration::from_secs(5)),
        "a connection past the cap was kept: {closed:?}"
    );
    // a slot given back is a connection served
    held.pop();
    let served = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let mut client = TcpStream::connect(cp.api_addr).await.unwrap();
            let request = b"GET /api/v1/health HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n";
            if client.write_all(request).await.is_ok() {
                let mut answer = String::new();
                let _ = client.read_to_string(&mut answer).await;
                if answer.starts_with("HTTP/1.1 200") {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(served.is_ok(), "a freed slot was not reused");
    cp.stop().await;
}

/// A TLS connection to the mesh port with no client certificate, handshake done.
async fn anonymous_mesh_connection(
    cp: &TestControlPlane,
) -> tokio_rustls::client::TlsStream<TcpStream> {
    let (mut tls, _) = berth_pki::bootstrap_client_config(&cp.ca_fingerprint()).unwrap();
    tls.alpn_protocols = vec![b"h2".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(tls));
    let tcp = TcpStream::connect(cp.mesh_addr).await.unwrap();
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    connector
        .connect(name, tcp)
        .await
        .expect("the handshake without a certificate succeeds (enrollment needs it)")
}

#[tokio::test]
async fn a_mesh_connection_without_a_certificate_that_sends_nothing_is_closed() {
    let cp = TestControlPlane::start_with(short_timeouts).await;
    let silent = anonymous_mesh_connection(&cp).await;
    assert!(
        closed_after(silent).await.is_some(),
        "a silent anonymous mesh connection stayed open"
    );

    // one that opens HTTP/2 and then idles is closed by the anonymous idle timeout
    let mut idle = anonymous_mesh_connection(&cp).await;
    idle.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0")
        .await
        .unwrap();
    let closed = closed_after(idle).await;
    assert!(
        closed.is_some(),
        "an idle anonymous HTTP/2 connection stayed open"
    );
    cp.stop().await;
}
