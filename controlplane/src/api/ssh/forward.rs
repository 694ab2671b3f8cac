//! `direct-tcpip` channels (`ssh -L LOCAL:localhost:PORT`): each is a port stream to
//! `PORT` inside the login's sandbox. The sandbox is the only host there is: the
//! host asked for must name it (`localhost`, a loopback address, or the sandbox id).
//! The channel is accepted once the worker has connected to the port, and refused
//! (`connect failed`, which OpenSSH reports as such) when nothing listens there.

use russh::server::{ChannelOpenHandle, Msg};
use russh::{Channel, ChannelOpenFailure};

use super::Context;
use crate::error::ApiError;
use crate::sandboxes::check_port;

/// A forward as the client asked for it.
#[derive(Debug, Clone)]
pub(super) struct Request {
    pub host: String,
    pub port: u32,
    /// Where the client's listener took the connection from (`addr:port`).
    pub originator: String,
}

/// Whether `host` names the sandbox itself.
fn names_the_sandbox(host: &str, sandbox_id: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    matches!(host, "localhost" | "127.0.0.1" | "::1" | "0.0.0.0" | "")
        || host.eq_ignore_ascii_case(sandbox_id)
}

pub(super) async fn serve(
    context: Context,
    channel: Channel<Msg>,
    reply: ChannelOpenHandle,
    request: Request,
) {
    let login = &context.login;
    let detail = format!(
        "{}:{} for {}",
        request.host, request.port, request.originator
    );
    if !names_the_sandbox(&request.host, &login.sandbox_id) {
        return refuse(
            &context,
            reply,
            &detail,
            format!(
                "only the sandbox's own ports are reachable (localhost:PORT), not {}",
                request.host
            ),
        )
        .await;
    }
    let port = match check_port(request.port) {
        Ok(port) => port,
        Err(err) => return refuse(&context, reply, &detail, err.to_string()).await,
    };
    let opened = context
        .state
        .sandboxes
        .open_port(&login.access, &login.sandbox_id, u32::from(port))
        .await;
    let connection = match opened {
        Ok(connection) => connection,
        Err(err) => {
            let message = ApiError::from(err).message;
            return refuse(&context, reply, &detail, message).await;
        }
    };
    context
        .record(
            "ssh forward",
            format!("{detail} via {}", connection.worker_id),
            "ok",
        )
        .await;
    reply.accept().await;
    let mut client = channel.into_stream();
    let mut sandbox = connection.io;
    // ends when both directions are closed, or either breaks
    let _ = tokio::io::copy_bidirectional(&mut client, &mut sandbox).await;
}

async fn refuse(context: &Context, reply: ChannelOpenHandle, detail: &str, message: String) {
    context
        .record("ssh forward", format!("{detail}: {message}"), "refused")
        .await;
    reply.reject(ChannelOpenFailure::ConnectFailed).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_sandbox_itself_is_a_host() {
        assert!(names_the_sandbox("localhost", "sbx-1"));
        assert!(names_the_sandbox("127.0.0.1", "sbx-1"));
        assert!(names_the_sandbox("[::1]", "sbx-1"));
        assert!(names_the_sandbox("SBX-1", "sbx-1"));
        assert!(!names_the_sandbox("example.com", "sbx-1"));
        assert!(!names_the_sandbox("10.0.0.1", "sbx-1"));
    }
}
