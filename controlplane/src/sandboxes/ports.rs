//! Port streams routed to the worker holding a sandbox's lease: a connection to a TCP
//! port inside the sandbox for the preview proxy, the WebSocket and gRPC tunnels
//! (`berth sandbox port-forward`) and the SSH gateway's forwards. Who may open one is
//! the caller's business at its edge (an exec-scope key, a preview link, a public
//! port, an SSH login); here the sandbox must be visible to `access`.

use super::calls::Use;
use super::{SandboxError, Sandboxes};
use crate::teams::Access;
use crate::workers::PortConnection;

impl Sandboxes {
    /// A connection to `port` inside `sandbox_id`, once the worker has made it. A
    /// refused cached route is tried once more on the lease in the store: nothing of
    /// the caller's has been sent yet.
    pub async fn open_port(
        &self,
        access: &Access,
        sandbox_id: &str,
        port: u32,
    ) -> Result<PortConnection, SandboxError> {
        let port = check_port(port)?;
        let mut connection = self
            .on_lease_holder(access, sandbox_id, Use::Work, |target| async move {
                target
                    .client
                    .open_port(sandbox_id, target.generation, port)
                    .await
            })
            .await?;
        // the sandbox is in use while the connection is open
        connection.io.hold(self.activity.hold(sandbox_id));
        Ok(connection)
    }
}

/// A TCP port number: 1 to 65535.
pub fn check_port(port: u32) -> Result<u16, SandboxError> {
    match u16::try_from(port) {
        Ok(port) if port != 0 => Ok(port),
        _ => Err(SandboxError::BadRequest(format!(
            "port {port} is not a TCP port (1-65535)"
        ))),
    }
}
