//! Interactive sessions on the worker: commands started in a sandbox with stdin, an
//! optional terminal and signals, whose output is kept in a bounded buffer with byte
//! offsets so that a client may go and come back (`session`), registered here by id.
//!
//! A session outlives its client: when the last client detaches, its command runs on
//! for `session_grace` (0: it is killed at once), and a background session runs until
//! it ends. An ended session is kept for a client to read its end for the same grace
//! (at least a minute), or is collected at once when an attached client saw it. The
//! registry holds at most `max_sessions`; to make room it collects the sessions nobody
//! is attached to that ended or outlived their grace, oldest first, and otherwise
//! refuses.

mod buffer;
mod session;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio_util::task::TaskTracker;
use tracing::Instrument;

pub use buffer::{Piece, Stream};
pub use session::{Attachment, End, Event, Session, SessionInput, Summary};

use crate::provider::{ProcessSpec, Provider, ProviderError, Signal};
use session::NewSession;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    #[error(
        "session {0:?} not found (sessions live on the worker: one that restarted has lost them)"
    )]
    NotFound(String),
    #[error("offset {offset} is beyond the end of the session's output ({end} bytes so far)")]
    OffsetBeyondEnd { offset: u64, end: u64 },
    #[error(
        "session {0:?} already has a client attached: detach it first, or attach with takeover to detach it"
    )]
    Attached(String),
    #[error("this client is no longer attached (another client took the session over)")]
    NotAttached,
    #[error("stdin is closed")]
    StdinClosed,
    #[error("session {0:?} has ended")]
    Ended(String),
    #[error(
        "this worker holds {0} sessions, its most (max_sessions): end or kill some, or let them be collected"
    )]
    TooMany(usize),
    #[error(transparent)]
    Provider(#[from] ProviderError),
}

/// The registry's settings, from the worker's config.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionLimits {
    pub grace: Duration,
    pub buffer_bytes: usize,
    pub max_sessions: usize,
}

/// A new session's command and how to run it.
#[derive(Debug, Clone)]
pub struct Start {
    pub sandbox_id: String,
    pub spec: ProcessSpec,
    pub background: bool,
    /// The command line, for listings and the audit.
    pub command: String,
}

#[derive(Debug)]
pub struct Sessions {
    limits: SessionLimits,
    sessions: Mutex<HashMap<String, Arc<Session>>>,
    tasks: TaskTracker,
}

impl Sessions {
    pub fn new(limits: SessionLimits) -> Self {
        Self {
            limits,
            sessions: Mutex::default(),
            tasks: TaskTracker::new(),
        }
    }

    fn map(&self) -> MutexGuard<'_, HashMap<String, Arc<Session>>> {
        self.sessions.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Starts the command and registers its session.
    pub async fn start(
        self: &Arc<Self>,
        provider: &dyn Provider,
        start: Start,
    ) -> Result<Arc<Session>, SessionError> {
        self.make_room()?;
        let stdin = start.spec.stdin;
        let tty = start.spec.tty.is_some();
        let process = provider
            .start_process(&start.sandbox_id, start.spec)
            .await?;
        let id = format!("ses-{}", &uuid::Uuid::new_v4().simple().to_string()[..20]);
        let session = Arc::new(Session::new(NewSession {
            id: id.clone(),
            sandbox_id: start.sandbox_id,
            command: start.command,
            tty,
            background: start.background,
            stdin,
            buffer_bytes: self.limits.buffer_bytes,
            input: process.input,
        }));
        self.map().insert(id.clone(), Arc::clone(&session));
        let registry = Arc::clone(self);
        let pumped = Arc::clone(&session);
        let grace = self.limits.grace;
        let span =
            tracing::info_span!("session", session_id = %id, sandbox_id = %session.sandbox_id);
        self.tasks.spawn(
            async move {
                Arc::clone(&pumped).pump(process.events, grace).await;
                registry.remove(&pumped);
                tracing::debug!("session collected");
            }
            .instrument(span),
        );
        Ok(session)
    }

    fn remove(&self, session: &Arc<Session>) {
        let mut map = self.map();
        if map
            .get(&session.id)
            .is_some_and(|held| Arc::ptr_eq(held, session))
        {
            map.remove(&session.id);
        }
    }

    /// Collects ended, unattached sessions (oldest first) until one more fits.
    fn make_room(&self) -> Result<(), SessionError> {
        let mut map = self.map();
        if map.len() < self.limits.max_sessions {
            return Ok(());
        }
        let mut collectable: Vec<_> = map
            .values()
            .filter(|session| session.is_collectable(self.limits.grace))
            .map(|session| (session.ended_at(), session.id.clone()))
            .collect();
        collectable.sort();
        let excess = map.len() + 1 - self.limits.max_sessions;
        for (_, id) in collectable.into_iter().take(excess) {
            if let Some(session) = map.remove(&id) {
                session.collect();
            }
        }
        if map.len() < self.limits.max_sessions {
            Ok(())
        } else {
            Err(SessionError::TooMany(self.limits.max_sessions))
        }
    }

    /// The session `session_id` of `sandbox_id`.
    pub fn get(&self, sandbox_id: &str, session_id: &str) -> Result<Arc<Session>, SessionError> {
        self.map()
            .get(session_id)
            .filter(|session| session.sandbox_id == sandbox_id)
            .cloned()
            .ok_or_else(|| SessionError::NotFound(session_id.to_owned()))
    }

    /// The sandbox's sessions, oldest first.
    pub fn list(&self, sandbox_id: &str) -> Vec<Summary> {
        let mut sessions: Vec<_> = self
            .map()
            .values()
            .filter(|session| session.sandbox_id == sandbox_id)
            .map(|session| session.summary())
            .collect();
        sessions.sort_by(|a, b| (a.started_at, &a.session_id).cmp(&(b.started_at, &b.session_id)));
        sessions
    }

    /// Sends `signal` to the session's command (SIGKILL ends it at once).
    pub async fn kill(
        &self,
        sandbox_id: &str,
        session_id: &str,
        signal: Signal,
    ) -> Result<Summary, SessionError> {
        let session = self.get(sandbox_id, session_id)?;
        if session.is_running() {
            session.signal(signal).await?;
        }
        Ok(session.summary())
    }

    /// Sessions held now (running or kept).
    pub fn count(&self) -> usize {
        self.map().len()
    }

    /// The sandbox is gone: so are its sessions.
    pub fn forget_sandbox(&self, sandbox_id: &str) {
        let mut map = self.map();
        map.retain(|_, session| {
            let keep = session.sandbox_id != sandbox_id;
            if !keep {
                session.collect();
            }
            keep
        });
    }

    /// The worker stops: every session's command ends, and this returns when their
    /// pumps have.
    pub async fn shutdown(&self) {
        for (_, session) in self.map().drain() {
            session.collect();
        }
        self.tasks.close();
        self.tasks.wait().await;
    }
}

#[cfg(test)]
mod tests;
