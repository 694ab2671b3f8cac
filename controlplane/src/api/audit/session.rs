//! The audit records of an interactive session stream. A stream outlives the one
//! record the middleware makes of a call, and a WebSocket's request is a GET the
//! middleware does not record, so both edges (gRPC `Sandboxes.Session`, the exec
//! WebSocket) submit these themselves: the open (`session start` with the command line
//! and whether it has a terminal, or `session attach` with the session id and offset;
//! a refused open too, with its code) and how the stream ended (`session end` with the
//! exit code, or `session detach` with the reason). Stdin, output and resizes never go
//! in. The SSH gateway's shells and commands are recorded the same way.

use crate::api::ApiState;
use crate::api::auth::Granted;
use crate::audit::{AuditEntry, AuditLog};
use crate::error::ApiError;
use crate::sandboxes::{SessionOpen, SessionStream};
use crate::teams::Access;

/// How a session stream ended, for its last record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionEnd {
    /// The command ended.
    Exit {
        exit_code: i32,
        signal: Option<String>,
    },
    /// The worker detached this client (`detach`, `takeover`, `killed`).
    Detached { reason: String },
    /// The client went away (or broke the protocol) while attached.
    Left { reason: String },
    /// The stream broke; the command may run on.
    Failed { code: &'static str },
    /// Started in the background: nobody was attached.
    Background,
}

/// Who opened a session stream and where, for its records.
#[derive(Debug, Clone)]
pub struct SessionAudit {
    log: AuditLog,
    actor: String,
    team_id: String,
    user_id: String,
    sandbox_id: String,
    request_id: String,
    worker_id: String,
    session_id: String,
}

impl SessionAudit {
    fn new(
        state: &ApiState,
        actor: String,
        access: &Access,
        sandbox_id: &str,
        request_id: &str,
    ) -> Self {
        Self {
            log: state.audit.clone(),
            actor,
            team_id: access.team_filter().unwrap_or_default().to_owned(),
            user_id: access.user().unwrap_or_default().to_owned(),
            sandbox_id: sandbox_id.to_owned(),
            request_id: request_id.to_owned(),
            worker_id: String::new(),
            session_id: String::new(),
        }
    }

    /// Opens a session stream for `granted` on `sandbox_id` and records the open, or
    /// its refusal: what both doors (gRPC, WebSocket) do first. Nothing is opened
    /// that could not be recorded.
    pub async fn open(
        state: &ApiState,
        granted: &Granted,
        sandbox_id: &str,
        request_id: &str,
        open: SessionOpen,
    ) -> Result<(SessionStream, Self), ApiError> {
        let actor = format!("key:{}", granted.caller.key_id);
        Self::open_as(state, actor, &granted.access, sandbox_id, request_id, open).await
    }

    /// [`Self::open`] for a caller that is not an API key (an SSH login): `actor` as
    /// the records name it, `access` what it may touch.
    pub async fn open_as(
        state: &ApiState,
        actor: String,
        access: &Access,
        sandbox_id: &str,
        request_id: &str,
        open: SessionOpen,
    ) -> Result<(SessionStream, Self), ApiError> {
        state.audit.writable()?;
        let mut audit = Self::new(state, actor, access, sandbox_id, request_id);
        match state
            .sandboxes
            .session(access, sandbox_id, open.clone())
            .await
        {
            Ok(session) => {
                audit
                    .opened(&open, &session.worker_id, &session.started.session_id)
                    .await;
                Ok((session, audit))
            }
            Err(err) => {
                let err = ApiError::from(err);
                let worker_id = state
                    .sandboxes
                    .worker_of(sandbox_id)
                    .await
                    .unwrap_or_default();
                audit.refused(&open, worker_id, &err).await;
                Err(err)
            }
        }
    }

    /// Records an open the worker answered with `started`.
    async fn opened(&mut self, open: &SessionOpen, worker_id: &str, session_id: &str) {
        worker_id.clone_into(&mut self.worker_id);
        session_id.clone_into(&mut self.session_id);
        let (operation, detail) = describe_open(open);
        let detail = format!("{}: {detail}", self.session_id);
        self.submit(operation, detail, "ok").await;
    }

    /// Records an open that was refused (`worker_id`: the sandbox's, if known).
    async fn refused(&mut self, open: &SessionOpen, worker_id: String, err: &ApiError) {
        self.worker_id = worker_id;
        let (operation, detail) = describe_open(open);
        self.submit(operation, detail, err.code.as_str()).await;
    }

    /// Records how the stream ended.
    pub async fn ended(&self, end: SessionEnd) {
        let session = &self.session_id;
        let (operation, detail, outcome) = match end {
            SessionEnd::Background => return,
            SessionEnd::Exit {
                exit_code,
                signal: Some(signal),
            } => (
                "session end",
                format!("{session}: exit {exit_code} ({signal})"),
                "ok",
            ),
            SessionEnd::Exit {
                exit_code,
                signal: None,
            } => ("session end", format!("{session}: exit {exit_code}"), "ok"),
            SessionEnd::Detached { reason } | SessionEnd::Left { reason } => {
                ("session detach", format!("{session}: {reason}"), "ok")
            }
            SessionEnd::Failed { code } => (
                "session detach",
                format!("{session}: the stream broke"),
                code,
            ),
        };
        self.submit(operation, detail, outcome).await;
    }

    async fn submit(&self, operation: &str, detail: String, outcome: &str) {
        let entry = AuditEntry {
            actor: self.actor.clone(),
            operation: operation.to_owned(),
            worker_id: self.worker_id.clone(),
            sandbox_id: self.sandbox_id.clone(),
            detail,
            outcome: outcome.to_owned(),
            request_id: self.request_id.clone(),
            team_id: self.team_id.clone(),
            user_id: self.user_id.clone(),
        };
        if let Err(err) = self.log.submit(entry).await {
            tracing::error!(error = %err, "cannot append to the audit log");
        }
    }
}

/// The operation and detail of an open: the command line (and whether it has a
/// terminal, or runs in the background), or the session attached to and from where.
fn describe_open(open: &SessionOpen) -> (&'static str, String) {
    match open {
        SessionOpen::Start(start) => {
            let mut detail = start.describe();
            if start.tty.is_some() {
                detail.push_str(" [tty]");
            }
            if start.background {
                detail.push_str(" [background]");
            }
            ("session start", detail)
        }
        SessionOpen::Attach(attach) => {
            let mut detail = format!("{} from offset {}", attach.session_id, attach.offset);
            if attach.takeover {
                detail.push_str(" [takeover]");
            }
            ("session attach", detail)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sandboxes::{SessionAttach, SessionStart, TerminalSize};

    #[test]
    fn an_open_is_described_by_its_command_or_its_session() {
        let start = SessionOpen::Start(SessionStart {
            command: "echo".into(),
            args: vec!["a b".into()],
            argv: false,
            env: Default::default(),
            workdir: String::new(),
            timeout: None,
            tty: Some(TerminalSize::default()),
            background: true,
            stdin: true,
        });
        assert_eq!(
            describe_open(&start),
            ("session start", "echo 'a b' [tty] [background]".to_owned())
        );
        let attach = SessionOpen::Attach(SessionAttach {
            session_id: "ses-1".into(),
            offset: 12,
            takeover: false,
        });
        assert_eq!(
            describe_open(&attach),
            ("session attach", "ses-1 from offset 12".to_owned())
        );
    }
}
