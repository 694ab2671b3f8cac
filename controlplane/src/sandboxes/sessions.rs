//! Interactive sessions routed to the worker holding a sandbox's lease: open a
//! session stream (a new command, fenced by the lease's generation, or an attach),
//! list a sandbox's sessions, kill one. Same access rule as exec: the caller must see
//! the sandbox's team, with a key that has the exec scope (checked at the edge).

use futures::StreamExt;

use super::calls::Use;
use super::{SandboxError, Sandboxes};
use crate::teams::Access;
use crate::workers::SessionStream;
use crate::workers::model::{SessionInfo, SessionOpen};

/// What a kill sends when the caller names no signal.
pub const DEFAULT_KILL_SIGNAL: &str = "SIGKILL";

/// What a client attached through this control plane is told when it shuts down (the
/// session runs on, on its worker).
pub const SHUTTING_DOWN: &str =
    "the control plane is shutting down; the session runs on: attach again from your offset";

impl Sandboxes {
    /// Opens a session on the lease holder; answers once the worker said `started`.
    /// The sandbox is in use while the stream is held (see `activity`).
    /// A refused cached route is tried once more on the lease in the store: nothing
    /// of the client's has been sent yet.
    pub async fn session(
        &self,
        access: &Access,
        sandbox_id: &str,
        open: SessionOpen,
    ) -> Result<SessionStream, SandboxError> {
        check_open(&open)?;
        let stream = self
            .on_lease_holder(access, sandbox_id, Use::Work, |target| {
                let mut open = open.clone();
                // a session that names no working directory starts in the sandbox's own
                if let SessionOpen::Start(start) = &mut open {
                    start.workdir = super::calls::workdir_in(
                        std::mem::take(&mut start.workdir),
                        &target.workdir,
                    );
                }
                async move {
                    target
                        .client
                        .session(sandbox_id, target.generation, open)
                        .await
                }
            })
            .await?;
        // attached is in use, typing or not, until the stream is dropped
        let held = self.activity.hold(sandbox_id);
        Ok(SessionStream {
            events: stream
                .events
                .map(move |event| {
                    let _held = &held;
                    event
                })
                .boxed(),
            ..stream
        })
    }

    pub async fn list_sessions(
        &self,
        access: &Access,
        sandbox_id: &str,
    ) -> Result<Vec<SessionInfo>, SandboxError> {
        self.on_lease_holder(access, sandbox_id, Use::Look, |target| async move {
            target.client.list_sessions(sandbox_id).await
        })
        .await
    }

    /// One session of the sandbox, from its list.
    pub async fn get_session(
        &self,
        access: &Access,
        sandbox_id: &str,
        session_id: &str,
    ) -> Result<SessionInfo, SandboxError> {
        self.list_sessions(access, sandbox_id)
            .await?
            .into_iter()
            .find(|session| session.session_id == session_id)
            .ok_or_else(|| unknown_session(session_id))
    }

    /// Sends `signal` (empty: SIGKILL) to a session's command; answers the session.
    pub async fn kill_session(
        &self,
        access: &Access,
        sandbox_id: &str,
        session_id: &str,
        signal: &str,
    ) -> Result<SessionInfo, SandboxError> {
        if session_id.trim().is_empty() {
            return Err(SandboxError::BadRequest("session_id is empty".into()));
        }
        let signal = match signal.trim() {
            "" => DEFAULT_KILL_SIGNAL,
            signal => signal,
        };
        self.on_lease_holder(access, sandbox_id, Use::Work, |target| async move {
            target
                .client
                .kill_session(sandbox_id, target.generation, session_id, signal)
                .await
        })
        .await
    }
}

/// What the caller gets for a session the sandbox does not have.
pub fn unknown_session(session_id: &str) -> SandboxError {
    SandboxError::SessionNotFound(session_id.to_owned())
}

fn check_open(open: &SessionOpen) -> Result<(), SandboxError> {
    match open {
        SessionOpen::Start(start) if start.command.trim().is_empty() => Err(
            SandboxError::BadRequest("command is empty (or give a session_id to attach)".into()),
        ),
        SessionOpen::Attach(attach) if attach.session_id.trim().is_empty() => {
            Err(SandboxError::BadRequest("session_id is empty".into()))
        }
        _ => Ok(()),
    }
}
