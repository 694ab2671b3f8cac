//! Port connections: a byte stream to a TCP port inside a sandbox, opened by the
//! worker for a port stream (`WorkerService.OpenPort`). Preview URLs, port forwarding
//! and SSH's `direct-tcpip` ride on them. Nothing is ever published on the host: the
//! docker provider dials the container's address on its own network, the mock hands
//! out an in-memory pipe to a builtin server (`serve`).

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};

use super::ProviderError;

/// Longest a connection to a port inside a sandbox may take to be accepted.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Both halves of a connection to a port.
pub trait PortIo: AsyncRead + AsyncWrite + Send + Unpin + 'static {}

impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> PortIo for T {}

/// An open connection to a port inside a sandbox; dropping it closes the connection.
pub type PortConnection = Box<dyn PortIo>;

/// A port number as the wire gives it (u32), checked: 1 to 65535.
pub fn parse_port(port: u32) -> Result<u16, ProviderError> {
    match u16::try_from(port) {
        Ok(port) if port != 0 => Ok(port),
        _ => Err(ProviderError::InvalidArgument(format!(
            "port {port} is not a TCP port (1-65535)"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_outside_tcps_range_are_refused() {
        assert_eq!(parse_port(8000).unwrap(), 8000);
        assert_eq!(parse_port(65535).unwrap(), 65535);
        assert!(parse_port(0).is_err());
        assert!(parse_port(65536).is_err());
    }
}
