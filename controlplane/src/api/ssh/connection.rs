//! One SSH connection: its login, then its channels.
//!
//! A one-time token is the user name, so its login is the `none` method: a token is
//! spent by the first login that presents it. Anything else logs in as
//! `SANDBOX_ID@host` with a public key: a key no one registered is refused before the
//! client proves it holds it (so the client goes on to its next key); a registered
//! one is checked after. A login that names a credential but is refused (a spent or
//! expired token, a removed key, a sandbox that is not the owner's or is not running)
//! is let through authentication only to be disconnected at once with the reason,
//! which OpenSSH prints ("Received disconnect from …: this SSH token was used
//! already"); no channel is opened on it.

use std::net::SocketAddr;
use std::sync::Arc;

use russh::keys::HashAlg;
use russh::server::{
    Auth, ChannelOpenHandle, Handler, Msg, PublicKeyOffer, Session, VerifiedPublicKey,
};
use russh::{Channel, ChannelId, ChannelOpenFailure, Disconnect};
use tokio_util::sync::CancellationToken;

use super::{Context, LOGIN_WITHIN, forward, shell};
use crate::api::ApiState;
use crate::audit::AuditEntry;
use crate::ssh_access::{self, Login, LoginRefusal, TOKEN_PREFIX};

/// What the control plane says to a connection it stops serving.
const SHUTTING_DOWN: &str =
    "the control plane is shutting down; connect again (sessions on the worker run on)";

/// Serves one accepted TCP connection to its end.
pub(super) async fn run(
    socket: tokio::net::TcpStream,
    peer: SocketAddr,
    state: ApiState,
    config: Arc<russh::server::Config>,
    shutdown: CancellationToken,
) {
    let connection = Connection {
        state,
        peer,
        connection_id: format!("ssh-{}", &uuid::Uuid::new_v4().simple().to_string()[..16]),
        login: None,
        refusal: None,
        shutdown: shutdown.clone(),
    };
    let session = match tokio::time::timeout(
        LOGIN_WITHIN,
        russh::server::run_stream(config, socket, connection),
    )
    .await
    {
        Ok(Ok(session)) => session,
        Ok(Err(err)) => {
            tracing::debug!(%peer, error = %err, "SSH connection ended before it began");
            return;
        }
        Err(_) => {
            tracing::debug!(%peer, "SSH client sent no version in time");
            return;
        }
    };
    let handle = session.handle();
    tokio::pin!(session);
    tokio::select! {
        ended = &mut session => {
            if let Err(err) = ended {
                tracing::debug!(%peer, error = %err, "SSH connection ended");
            }
        }
        () = shutdown.cancelled() => {
            let _ = handle
                .disconnect(Disconnect::ByApplication, SHUTTING_DOWN.into(), String::new())
                .await;
            let _ = tokio::time::timeout(std::time::Duration::from_secs(2), session).await;
        }
    }
}

struct Connection {
    state: ApiState,
    peer: SocketAddr,
    connection_id: String,
    /// Set once a login was accepted.
    login: Option<Context>,
    /// A login that named a credential and was refused: told at `auth_succeeded`.
    refusal: Option<LoginRefusal>,
    shutdown: CancellationToken,
}

#[derive(Debug, thiserror::Error)]
enum ConnectionError {
    #[error(transparent)]
    Ssh(#[from] russh::Error),
}

impl Connection {
    fn accept(&mut self, login: Login) -> Auth {
        self.login = Some(Context {
            state: self.state.clone(),
            login: Arc::new(login),
            connection_id: self.connection_id.clone(),
        });
        Auth::Accept
    }

    /// A refusal to be told: authentication passes, then the connection is closed
    /// with the reason before any channel opens.
    fn refuse(&mut self, refusal: LoginRefusal) -> Auth {
        self.refusal = Some(refusal);
        Auth::Accept
    }

    async fn record_login(&self, operation: &str, detail: String, outcome: &str) {
        if let Some(context) = &self.login {
            return context.record(operation, detail, outcome).await;
        }
        let (sandbox_id, actor) = self
            .refusal
            .as_ref()
            .map(LoginRefusal::subject)
            .unwrap_or_default();
        let entry = AuditEntry {
            actor: if actor.is_empty() {
                format!("ssh:{}", self.peer.ip())
            } else {
                actor.to_owned()
            },
            operation: operation.to_owned(),
            sandbox_id: sandbox_id.to_owned(),
            detail,
            outcome: outcome.to_owned(),
            request_id: self.connection_id.clone(),
            ..AuditEntry::default()
        };
        if let Err(err) = self.state.audit.submit(entry).await {
            tracing::error!(error = %err, "cannot append to the audit log");
        }
    }

    /// The context of an accepted login; a channel asked for on a refused one (which
    /// the disconnect should have prevented) is refused.
    fn context(&self) -> Option<Context> {
        self.login.clone().filter(|_| self.refusal.is_none())
    }
}

impl Handler for Connection {
    type Error = ConnectionError;

    async fn auth_none(&mut self, user: &str) -> Result<Auth, Self::Error> {
        if !user.starts_with(TOKEN_PREFIX) {
            return Ok(Auth::reject());
        }
        let state = &self.state;
        Ok(
            match ssh_access::login_with_token(&state.store, &state.sandboxes, user).await {
                Ok(login) => self.accept(login),
                Err(refusal) => self.refuse(refusal),
            },
        )
    }

    async fn auth_publickey_offered(
        &mut self,
        user: &str,
        offer: PublicKeyOffer<'_>,
    ) -> Result<Auth, Self::Error> {
        if user.starts_with(TOKEN_PREFIX) {
            return Ok(Auth::reject());
        }
        let fingerprint = offer.public_key.fingerprint(HashAlg::Sha256).to_string();
        Ok(
            match ssh_access::known_fingerprint(&self.state.store, &fingerprint).await {
                Ok(true) => Auth::Accept,
                Ok(false) | Err(_) => Auth::reject(),
            },
        )
    }

    async fn auth_publickey(
        &mut self,
        user: &str,
        key: VerifiedPublicKey<'_>,
    ) -> Result<Auth, Self::Error> {
        if user.starts_with(TOKEN_PREFIX) {
            return Ok(Auth::reject());
        }
        let state = &self.state;
        Ok(
            match ssh_access::login_with_key(&state.store, &state.sandboxes, user, key.public_key)
                .await
            {
                Ok(login) => self.accept(login),
                Err(refusal) => self.refuse(refusal),
            },
        )
    }

    async fn auth_succeeded(&mut self, session: &mut Session) -> Result<(), Self::Error> {
        let peer = self.peer;
        if let Some(refusal) = self.refusal.clone() {
            self.record_login("ssh login", format!("from {peer}: {refusal}"), "refused")
                .await;
            session.disconnect(
                Disconnect::NoMoreAuthMethodsAvailable,
                &refusal.to_string(),
                "",
            )?;
            return Ok(());
        }
        let credential = self
            .login
            .as_ref()
            .map(|context| context.login.credential.clone())
            .unwrap_or_default();
        self.record_login("ssh login", format!("from {peer} with {credential}"), "ok")
            .await;
        Ok(())
    }

    async fn channel_open_session(
        &mut self,
        channel: Channel<Msg>,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        let Some(context) = self.context() else {
            reply
                .reject(ChannelOpenFailure::AdministrativelyProhibited)
                .await;
            return Ok(());
        };
        reply.accept().await;
        let shutdown = self.shutdown.clone();
        self.state
            .tasks
            .spawn(shell::serve(context, channel, shutdown));
        Ok(())
    }

    async fn channel_open_direct_tcpip(
        &mut self,
        channel: Channel<Msg>,
        host_to_connect: &str,
        port_to_connect: u32,
        originator_address: &str,
        originator_port: u32,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        let Some(context) = self.context() else {
            reply
                .reject(ChannelOpenFailure::AdministrativelyProhibited)
                .await;
            return Ok(());
        };
        let request = forward::Request {
            host: host_to_connect.to_owned(),
            port: port_to_connect,
            originator: format!("{originator_address}:{originator_port}"),
        };
        // the port is opened in the channel's own task: a slow worker holds up this
        // forward only, not the connection
        self.state
            .tasks
            .spawn(forward::serve(context, channel, reply, request));
        Ok(())
    }

    // Channel requests reach the channel's task as messages (see `shell`); these
    // answer the client. A request for something the gateway does not do is refused.

    async fn pty_request(
        &mut self,
        channel: ChannelId,
        _term: &str,
        _col_width: u32,
        _row_height: u32,
        _pix_width: u32,
        _pix_height: u32,
        _modes: &[(russh::Pty, u32)],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        Ok(session.channel_success(channel)?)
    }

    async fn env_request(
        &mut self,
        channel: ChannelId,
        variable_name: &str,
        _variable_value: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        if shell::env_name_ok(variable_name) {
            session.channel_success(channel)?;
        } else {
            session.channel_failure(channel)?;
        }
        Ok(())
    }

    async fn shell_request(
        &mut self,
        channel: ChannelId,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        Ok(session.channel_success(channel)?)
    }

    async fn exec_request(
        &mut self,
        channel: ChannelId,
        _data: &[u8],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        Ok(session.channel_success(channel)?)
    }

    async fn subsystem_request(
        &mut self,
        channel: ChannelId,
        name: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        if name == shell::SFTP {
            session.channel_success(channel)?;
        } else {
            session.channel_failure(channel)?;
        }
        Ok(())
    }

    async fn window_change_request(
        &mut self,
        channel: ChannelId,
        _col_width: u32,
        _row_height: u32,
        _pix_width: u32,
        _pix_height: u32,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        Ok(session.channel_success(channel)?)
    }
}
