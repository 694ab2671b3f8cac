//! Starting an exec with a terminal on a connection of our own. The engine answers
//! `POST /exec/{id}/start` by taking the connection over ("hijacking" it): what the
//! command writes comes back raw (a terminal merges stdout and stderr, so there is no
//! stream header), what is written goes to its stdin, and shutting down the write half
//! closes its stdin.
//!
//! bollard's attach reader cannot be used for terminal output: it takes any read that
//! starts with byte 0, 1 or 2 for a multiplexed stream's 8-byte header, so such output
//! loses bytes, and the length it reads from them (up to 4 GiB) is then buffered
//! before anything is passed on. A command in a sandbox must not be able to make the
//! worker hold that much, so terminal output is read here, in chunks of bounded size.
//! Execs without a terminal keep bollard's reader: their stream is always framed.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bollard::Docker;
use bollard::container::LogOutput;
use bytes::Bytes;
use futures::StreamExt;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpStream, UnixStream};
use tokio_util::io::ReaderStream;

use super::exec::{EngineInput, EngineOutput};

/// Most bytes of an answer's status line and headers (and of an error's body).
const MAX_HEAD: usize = 16 * 1024;

/// Where the engine listens, as `docker.host` says, and how long it may take to answer.
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub host: String,
    pub timeout: Duration,
}

/// Starts exec `exec_id` (created with a terminal) attached on a new connection;
/// output comes in chunks of at most `chunk` bytes, as `LogOutput::Console`.
/// `console_size` is `[rows, cols]`, which engines from API 1.42 take here.
pub async fn start_tty(
    endpoint: &Endpoint,
    docker: &Docker,
    exec_id: &str,
    console_size: [u16; 2],
    chunk: usize,
) -> Result<(EngineOutput, EngineInput), bollard::errors::Error> {
    let version = docker.client_version();
    let mut body = serde_json::json!({ "Detach": false, "Tty": true });
    if (version.major_version, version.minor_version) >= (1, 42) {
        body["ConsoleSize"] = serde_json::json!(console_size);
    }
    let body = body.to_string();
    let request = format!(
        "POST /v{}.{}/exec/{exec_id}/start HTTP/1.1\r\n\
         Host: docker\r\n\
         Content-Type: application/json\r\n\
         Content-Length: {}\r\n\
         Connection: Upgrade\r\n\
         Upgrade: tcp\r\n\
         \r\n\
         {body}",
        version.major_version,
        version.minor_version,
        body.len(),
    );
    let (stream, rest) = tokio::time::timeout(endpoint.timeout, async {
        let mut stream = connect(&endpoint.host).await?;
        stream.write_all(request.as_bytes()).await?;
        stream.flush().await?;
        let rest = read_answer(&mut stream).await?;
        Ok::<_, bollard::errors::Error>((stream, rest))
    })
    .await
    .map_err(|_| {
        io_error(
            std::io::ErrorKind::TimedOut,
            "the docker engine did not answer the exec start in time",
        )
    })??;
    let (read, write) = tokio::io::split(stream);
    let first = (!rest.is_empty()).then(|| Ok(LogOutput::Console { message: rest }));
    let output =
        futures::stream::iter(first).chain(ReaderStream::with_capacity(read, chunk).map(|read| {
            match read {
                Ok(message) => Ok(LogOutput::Console { message }),
                Err(err) => Err(err.into()),
            }
        }));
    Ok((Box::pin(output), Box::pin(write)))
}

/// Reads the engine's answer up to the end of its headers; returns the bytes after
/// them (the first output), or the engine's error.
async fn read_answer(
    stream: &mut (impl AsyncRead + Unpin),
) -> Result<Bytes, bollard::errors::Error> {
    let mut head = Vec::with_capacity(1024);
    let end = loop {
        if let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") {
            break end + 4;
        }
        if head.len() >= MAX_HEAD {
            return Err(io_error(
                std::io::ErrorKind::InvalidData,
                "the docker engine's answer to an exec start has no end of headers",
            ));
        }
        let mut buf = [0u8; 4096];
        let read = stream.read(&mut buf).await?;
        if read == 0 {
            return Err(io_error(
                std::io::ErrorKind::UnexpectedEof,
                "the docker engine closed the connection of an exec start",
            ));
        }
        head.extend_from_slice(&buf[..read]);
    };
    let status = std::str::from_utf8(&head[..end])
        .ok()
        .and_then(|head| head.split_whitespace().nth(1))
        .and_then(|code| code.parse::<u16>().ok())
        .ok_or_else(|| {
            io_error(
                std::io::ErrorKind::InvalidData,
                "the docker engine's answer to an exec start has no status",
            )
        })?;
    let mut rest = head.split_off(end);
    if matches!(status, 101 | 200) {
        return Ok(Bytes::from(rest));
    }
    // an error: its body (JSON with a message) follows; read a bounded part of it
    let _ = tokio::time::timeout(Duration::from_millis(500), async {
        let mut buf = [0u8; 4096];
        while rest.len() < MAX_HEAD && !rest.ends_with(b"}\n") && !rest.ends_with(b"}") {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(read) => rest.extend_from_slice(&buf[..read]),
            }
        }
    })
    .await;
    let text = String::from_utf8_lossy(&rest);
    let message = text
        .find('{')
        .and_then(|start| serde_json::from_str::<serde_json::Value>(text[start..].trim()).ok())
        .and_then(|json| json["message"].as_str().map(str::to_owned))
        .unwrap_or_else(|| text.trim().to_owned());
    Err(bollard::errors::Error::DockerResponseServerError {
        status_code: status,
        message,
    })
}

fn io_error(kind: std::io::ErrorKind, message: &str) -> bollard::errors::Error {
    std::io::Error::new(kind, message.to_owned()).into()
}

/// A connection to the engine: its unix socket or a TCP port.
enum Connection {
    Unix(UnixStream),
    Tcp(TcpStream),
}

async fn connect(host: &str) -> std::io::Result<Connection> {
    if let Some(address) = host
        .strip_prefix("tcp://")
        .or_else(|| host.strip_prefix("http://"))
    {
        let address = address.trim_end_matches('/');
        let stream = TcpStream::connect(address).await?;
        stream.set_nodelay(true)?;
        Ok(Connection::Tcp(stream))
    } else {
        let path = host.strip_prefix("unix://").unwrap_or(host);
        Ok(Connection::Unix(UnixStream::connect(path).await?))
    }
}

impl AsyncRead for Connection {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Self::Unix(stream) => Pin::new(stream).poll_read(cx, buf),
            Self::Tcp(stream) => Pin::new(stream).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Connection {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Self::Unix(stream) => Pin::new(stream).poll_write(cx, buf),
            Self::Tcp(stream) => Pin::new(stream).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Self::Unix(stream) => Pin::new(stream).poll_flush(cx),
            Self::Tcp(stream) => Pin::new(stream).poll_flush(cx),
        }
    }

    /// Shuts down the write half only: the engine reads end-of-file and closes the
    /// command's stdin, and output keeps coming.
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Self::Unix(stream) => Pin::new(stream).poll_shutdown(cx),
            Self::Tcp(stream) => Pin::new(stream).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::engine::{message_of, status_of};
    use super::*;

    async fn answer(text: &[u8]) -> Result<Bytes, bollard::errors::Error> {
        let (mut engine, mut client) = tokio::io::duplex(64 * 1024);
        engine.write_all(text).await.unwrap();
        drop(engine);
        read_answer(&mut client).await
    }

    #[tokio::test]
    async fn an_upgrade_passes_the_bytes_after_the_headers_on() {
        let rest = answer(
            b"HTTP/1.1 101 UPGRADED\r\nContent-Type: application/vnd.docker.raw-stream\r\n\
              Connection: Upgrade\r\nUpgrade: tcp\r\n\r\n\x01\x00prompt$ ",
        )
        .await
        .unwrap();
        assert_eq!(&rest[..], b"\x01\x00prompt$ ");
        assert!(answer(b"HTTP/1.1 200 OK\r\n\r\n").await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn an_error_keeps_its_status_and_message() {
        let err = answer(
            b"HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\n\
              Content-Length: 44\r\n\r\n{\"message\":\"No such exec instance: abc\"}\n",
        )
        .await
        .unwrap_err();
        assert_eq!(status_of(&err), Some(404));
        assert_eq!(message_of(&err), "No such exec instance: abc");
        let err = answer(b"HTTP/1.1 409 Conflict\r\n\r\ncontainer is not running")
            .await
            .unwrap_err();
        assert_eq!(status_of(&err), Some(409));
        assert_eq!(message_of(&err), "container is not running");
    }

    #[tokio::test]
    async fn a_broken_answer_is_an_error_not_a_wait() {
        assert!(answer(b"HTTP/1.1 101 UPGRADED\r\n").await.is_err());
        assert!(answer(b"garbage\r\n\r\n").await.is_err());
        let endless = [b'x'; MAX_HEAD + 10];
        let (mut engine, mut client) = tokio::io::duplex(64 * 1024);
        engine.write_all(&endless).await.unwrap();
        // the engine stays connected: the bound, not an end of stream, stops the read
        assert!(read_answer(&mut client).await.is_err());
        drop(engine);
    }
}
