//! The SSH gateway (`ssh_listen`, default port 2222): people reach a sandbox with the
//! SSH tools they already use, through the control plane and the mesh, so it works on
//! any replica and for workers that dial out. Built on russh and russh-sftp.
//!
//! - Logins ([`connection`]): `TOKEN@host` with a one-time token (the `none` method,
//!   for a valid token and nothing else), or `SANDBOX_ID@host` with a public key
//!   registered to the sandbox's owner. No passwords. A refused login is told why in
//!   the disconnect message, which OpenSSH prints.
//! - Session channels ([`shell`]): `shell` (with `pty-req` and `window-change`: an
//!   interactive session on the worker), `exec` (the exit status goes back), `env`,
//!   and the `sftp` subsystem ([`sftp`], on the sandbox's file calls; modern `scp`
//!   uses it too).
//! - `direct-tcpip` channels ([`forward`]: `ssh -L`) to ports inside the sandbox, over
//!   a port stream.
//!
//! Every login, channel and forward is audited, refusals too.

mod connection;
mod forward;
pub mod host_key;
mod sftp;
mod shell;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use russh::keys::PrivateKey;
use russh::server::Config;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use super::ApiState;
use crate::audit::AuditEntry;
use crate::ssh_access::Login;

/// What the gateway says it is.
const SERVER_ID: &str = "SSH-2.0-Berth";
/// Connections served at once; more wait in the listen backlog.
const MAX_CONNECTIONS: usize = 1024;
/// A client must have said its version and logged in within this.
const LOGIN_WITHIN: Duration = Duration::from_secs(30);
/// An idle connection (no traffic either way) is closed after this.
const IDLE_TIMEOUT: Duration = Duration::from_secs(3600);
/// Keepalives find a client that vanished without closing its connection.
const KEEPALIVE_EVERY: Duration = Duration::from_secs(30);

/// What `berth status` shows of the gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshGatewayInfo {
    pub address: SocketAddr,
    /// The host key's `SHA256:…` fingerprint.
    pub fingerprint: String,
    /// The host key's public half, one OpenSSH line (`ssh-ed25519 AAAA…`): what a
    /// `known_hosts` entry for the gateway holds.
    pub public_key: String,
}

/// The gateway's russh settings around `host_key`.
pub fn server_config(host_key: PrivateKey) -> Config {
    Config {
        server_id: russh::SshId::Standard(SERVER_ID.into()),
        methods: russh::MethodSet::from(&[russh::MethodKind::PublicKey][..]),
        keys: vec![host_key],
        auth_rejection_time: Duration::from_millis(300),
        auth_rejection_time_initial: Some(Duration::ZERO),
        inactivity_timeout: Some(IDLE_TIMEOUT),
        keepalive_interval: Some(KEEPALIVE_EVERY),
        keepalive_max: 4,
        max_auth_attempts: 6,
        nodelay: true,
        ..Config::default()
    }
}

/// Serves SSH on `listener` until `shutdown`; each connection runs in its own task
/// and is told to go when the control plane stops.
pub async fn serve(
    listener: TcpListener,
    state: ApiState,
    config: Config,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let config = Arc::new(config);
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let permit = tokio::select! {
            permit = slots.clone().acquire_owned() => permit.expect("never closed"),
            () = shutdown.cancelled() => return Ok(()),
        };
        let (socket, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    // out of descriptors and the like: wait, then go on
                    tracing::warn!(error = %err, "cannot accept an SSH connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = shutdown.cancelled() => return Ok(()),
        };
        let (state, config, shutdown) = (state.clone(), config.clone(), shutdown.clone());
        state.tasks.clone().spawn(async move {
            let _permit = permit;
            connection::run(socket, peer, state, config, shutdown).await;
        });
    }
}

/// One login's reach, shared by its channels: what they act on and how they record.
#[derive(Debug, Clone)]
struct Context {
    state: ApiState,
    login: Arc<Login>,
    /// Names the connection in the audit log (`ssh-…`), as a request id would.
    connection_id: String,
}

impl Context {
    /// Queues an audit record of this login; a log that cannot take it is logged.
    async fn record(&self, operation: &str, detail: String, outcome: &str) {
        let entry = AuditEntry {
            actor: self.login.actor.clone(),
            operation: operation.to_owned(),
            worker_id: String::new(),
            sandbox_id: self.login.sandbox_id.clone(),
            detail,
            outcome: outcome.to_owned(),
            request_id: self.connection_id.clone(),
            team_id: self
                .login
                .access
                .team_filter()
                .unwrap_or_default()
                .to_owned(),
            user_id: self.login.access.user().unwrap_or_default().to_owned(),
        };
        if let Err(err) = self.state.audit.submit(entry).await {
            tracing::error!(error = %err, "cannot append to the audit log");
        }
    }
}
