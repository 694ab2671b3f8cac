//! One session: the pump that moves a process's output into the session's buffer,
//! and the attachments that read it out to clients.
//!
//! Nothing a client has not been sent leaves the buffer: when the buffer is full of
//! such bytes the pump waits, the provider's channel fills and the command blocks on
//! its next write, as on a full pipe. So a slow client, or none, holds the command
//! back instead of growing memory or losing output; bytes leave only once a client has
//! been sent them, and a client re-attaching from an older offset is told how many it
//! missed (a gap), never silently. One client at a time is attached; a second one
//! needs `takeover`, which detaches the first.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;

use super::SessionError;
use super::buffer::{OutputBuffer, Piece, Stream};
use crate::provider::{ExecEvent, ProcessInput, ProviderError, Signal};

/// Largest output piece handed to a client at once.
const MAX_PIECE: usize = 64 * 1024;
/// Least time an ended session nobody saw end is kept (a grace of 0 still lets a
/// background session's end be read).
const KEEP_ENDED: Duration = Duration::from_secs(60);
/// How long an attach waits for the client before it to go, before it is refused.
const ATTACH_WAIT: Duration = Duration::from_secs(2);

/// How a session's command ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum End {
    Exit {
        code: i32,
        /// The signal that ended it, when one sent through the session did.
        signal: Option<Signal>,
        duration: Duration,
    },
    Failed(ProviderError),
}

/// What an attached client gets, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Output(Piece),
    /// `bytes` from `offset` had already left the buffer.
    Gap {
        bytes: u64,
        offset: u64,
    },
    End(End),
    /// This client is no longer attached (another took over, or the session was
    /// collected).
    Detached(&'static str),
}

/// A session as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    pub session_id: String,
    pub sandbox_id: String,
    pub command: String,
    pub tty: bool,
    pub background: bool,
    pub started_at: SystemTime,
    pub ended_at: Option<SystemTime>,
    pub end: Option<End>,
    pub attached: u32,
    pub output_offset: u64,
    pub buffer_start: u64,
}

#[derive(Debug)]
struct State {
    buffer: OutputBuffer,
    /// One past the highest offset sent to any client: bytes from here on never
    /// leave the buffer.
    delivered: u64,
    end: Option<End>,
    ended_at: Option<SystemTime>,
    /// The attached client's token.
    attached: Option<u64>,
    next_token: u64,
    /// Since when no client is attached (the start, for a session started without).
    idle_since: Option<Instant>,
    /// An attached client was sent the end.
    end_seen: bool,
    stdin_closed: bool,
    /// The last signal sent through the session.
    signalled: Option<Signal>,
}

#[derive(Debug)]
pub struct Session {
    pub id: String,
    pub sandbox_id: String,
    /// The command line as started (for listings and the audit; never stdin).
    pub command: String,
    pub tty: bool,
    pub background: bool,
    started_at: SystemTime,
    started: Instant,
    state: Mutex<State>,
    /// Woken on every change: output added or read, a client come or gone, the end.
    changed: Notify,
    input: mpsc::Sender<ProcessInput>,
    /// Cancelled to end the command at once (grace expired, killed, sandbox gone,
    /// worker stopping): the pump drops the provider's receiver, which kills it.
    abort: CancellationToken,
    /// Cancelled when the session leaves the registry (sandbox destroyed, worker
    /// stopping): an ended session stops waiting for a client.
    collected: CancellationToken,
}

pub struct NewSession {
    pub id: String,
    pub sandbox_id: String,
    pub command: String,
    pub tty: bool,
    pub background: bool,
    pub stdin: bool,
    pub buffer_bytes: usize,
    pub input: mpsc::Sender<ProcessInput>,
}

impl Session {
    pub fn new(new: NewSession) -> Self {
        Self {
            id: new.id,
            sandbox_id: new.sandbox_id,
            command: new.command,
            tty: new.tty,
            background: new.background,
            started_at: SystemTime::now(),
            started: Instant::now(),
            state: Mutex::new(State {
                buffer: OutputBuffer::new(new.buffer_bytes),
                delivered: 0,
                end: None,
                ended_at: None,
                attached: None,
                next_token: 1,
                idle_since: Some(Instant::now()),
                end_seen: false,
                stdin_closed: !new.stdin,
                signalled: None,
            }),
            changed: Notify::new(),
            input: new.input,
            abort: CancellationToken::new(),
            collected: CancellationToken::new(),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn summary(&self) -> Summary {
        let state = self.state();
        Summary {
            session_id: self.id.clone(),
            sandbox_id: self.sandbox_id.clone(),
            command: self.command.clone(),
            tty: self.tty,
            background: self.background,
            started_at: self.started_at,
            ended_at: state.ended_at,
            end: state.end.clone(),
            attached: u32::from(state.attached.is_some()),
            output_offset: state.buffer.end(),
            buffer_start: state.buffer.start(),
        }
    }

    pub fn is_running(&self) -> bool {
        self.state().end.is_none()
    }

    /// Nobody attached, and ended or past its grace period: may be collected to make
    /// room.
    pub fn is_collectable(&self, grace: Duration) -> bool {
        let state = self.state();
        if state.attached.is_some() {
            return false;
        }
        state.end.is_some()
            || (!self.background
                && state
                    .idle_since
                    .is_some_and(|since| since.elapsed() >= grace))
    }

    pub fn ended_at(&self) -> Option<SystemTime> {
        self.state().ended_at
    }

    /// Ends the command now (the pump drops the provider's receiver).
    pub fn abort(&self) {
        self.abort.cancel();
    }

    /// Out of the registry: ends the command and stops keeping the session.
    pub fn collect(&self) {
        self.abort.cancel();
        self.collected.cancel();
    }

    /// Moves the process's events into the buffer until the command ends, killing it
    /// once it has run `grace` with no client (unless it is a background session),
    /// then keeps the ended session until it may be collected.
    pub async fn pump(self: Arc<Self>, mut events: mpsc::Receiver<ExecEvent>, grace: Duration) {
        let end = loop {
            let changed = self.changed.notified();
            let deadline = self.kill_deadline(grace);
            let event = tokio::select! {
                biased;
                () = self.abort.cancelled() => break self.killed(),
                () = sleep_until(deadline) => {
                    tracing::info!(session_id = %self.id, "no client came back within the grace period: killing the session's command");
                    self.abort.cancel();
                    continue;
                }
                event = events.recv() => event,
                () = changed => continue,
            };
            match event {
                Some(ExecEvent::Stdout(data)) => {
                    if !self.append(Stream::Stdout, data.into(), grace).await {
                        break self.killed();
                    }
                }
                Some(ExecEvent::Stderr(data)) => {
                    if !self.append(Stream::Stderr, data.into(), grace).await {
                        break self.killed();
                    }
                }
                Some(ExecEvent::Exit { code, duration }) => {
                    let signalled = self.state().signalled;
                    let signal = Signal::from_exit_code(code).filter(|s| Some(*s) == signalled);
                    break End::Exit {
                        code,
                        signal,
                        duration,
                    };
                }
                Some(ExecEvent::Failed(err)) => break End::Failed(err),
                None => {
                    break End::Failed(ProviderError::Internal(
                        "the command ended without an exit status".into(),
                    ));
                }
            }
        };
        // dropping the receiver ends a command still running (aborted)
        drop(events);
        {
            let mut state = self.state();
            state.end = Some(end);
            state.ended_at = Some(SystemTime::now());
        }
        self.changed.notify_waiters();
        self.linger(grace).await;
    }

    /// When the grace period of a command nobody is attached to runs out.
    fn kill_deadline(&self, grace: Duration) -> Option<tokio::time::Instant> {
        if self.background {
            return None;
        }
        let idle_since = self.state().idle_since?;
        Some(tokio::time::Instant::from_std(idle_since) + grace)
    }

    fn killed(&self) -> End {
        End::Exit {
            code: Signal::KILL.exit_code(),
            signal: Some(Signal::KILL),
            duration: self.started.elapsed(),
        }
    }

    /// Adds output once there is room for it without dropping a byte no client has
    /// been sent; `false` if the session was aborted meanwhile.
    async fn append(&self, stream: Stream, data: Bytes, grace: Duration) -> bool {
        let mut rest = data;
        while !rest.is_empty() {
            loop {
                let changed = self.changed.notified();
                {
                    let mut state = self.state();
                    let capacity = state.buffer.capacity();
                    let unsent =
                        usize::try_from(state.buffer.end() - state.delivered).unwrap_or(usize::MAX);
                    let room = capacity.saturating_sub(unsent);
                    if room > 0 {
                        let take = room.min(rest.len());
                        let piece = rest.split_to(take);
                        state.buffer.push(stream, piece);
                        drop(state);
                        self.changed.notify_waiters();
                        break;
                    }
                }
                let deadline = self.kill_deadline(grace);
                tokio::select! {
                    () = changed => {}
                    () = self.abort.cancelled() => return false,
                    () = sleep_until(deadline) => {
                        tracing::info!(session_id = %self.id, "no client came back within the grace period: killing the session's command");
                        self.abort.cancel();
                        return false;
                    }
                }
            }
        }
        true
    }

    /// Keeps an ended session for a client to come back to, until the grace period
    /// has passed with nobody attached, or at once when a client saw the end and left.
    async fn linger(&self, grace: Duration) {
        loop {
            let changed = self.changed.notified();
            let deadline = {
                let state = self.state();
                match (state.attached, state.idle_since) {
                    (Some(_), _) => None,
                    (None, _) if state.end_seen => return,
                    (None, idle_since) => {
                        let since = idle_since.unwrap_or_else(Instant::now);
                        Some(tokio::time::Instant::from_std(since) + grace.max(KEEP_ENDED))
                    }
                }
            };
            tokio::select! {
                () = changed => {}
                () = sleep_until(deadline) => return,
                () = self.collected.cancelled() => return,
            }
        }
    }

    /// Attaches a client from `offset`; see the module docs for `takeover`.
    pub async fn attach(
        self: &Arc<Self>,
        offset: u64,
        takeover: bool,
    ) -> Result<Attachment, SessionError> {
        let waited_until = Instant::now() + ATTACH_WAIT;
        loop {
            let changed = self.changed.notified();
            {
                let mut state = self.state();
                let end = state.buffer.end();
                if offset > end {
                    return Err(SessionError::OffsetBeyondEnd { offset, end });
                }
                if state.attached.is_none() || takeover {
                    let token = state.next_token;
                    state.next_token += 1;
                    state.attached = Some(token);
                    state.idle_since = None;
                    drop(state);
                    self.changed.notify_waiters();
                    return Ok(Attachment {
                        session: Arc::clone(self),
                        token,
                        cursor: offset,
                        done: false,
                    });
                }
            }
            let now = Instant::now();
            if now >= waited_until {
                return Err(SessionError::Attached(self.id.clone()));
            }
            // a client that just went may not have been noticed yet
            let _ = tokio::time::timeout(waited_until - now, changed).await;
        }
    }

    /// Sends `input` to the command on behalf of a signal from outside any client
    /// (kill).
    pub async fn signal(&self, signal: Signal) -> Result<(), SessionError> {
        if signal == Signal::KILL {
            self.abort();
            return Ok(());
        }
        self.state().signalled = Some(signal);
        self.input
            .send(ProcessInput::Signal(signal))
            .await
            .map_err(|_| SessionError::Ended(self.id.clone()))
    }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// An attached client's handle: output from its cursor on, and its input. Dropping
/// it detaches.
#[derive(Debug)]
pub struct Attachment {
    session: Arc<Session>,
    token: u64,
    cursor: u64,
    done: bool,
}

impl Attachment {
    pub fn session(&self) -> &Arc<Session> {
        &self.session
    }

    /// Where this client's input goes; usable beside `next`.
    pub fn input(&self) -> SessionInput {
        SessionInput {
            session: Arc::clone(&self.session),
            token: self.token,
        }
    }

    /// The next thing for the client; `None` after the end or a detach was returned.
    pub async fn next(&mut self) -> Option<Event> {
        if self.done {
            return None;
        }
        loop {
            let changed = self.session.changed.notified();
            {
                let mut state = self.session.state();
                if state.attached != Some(self.token) {
                    self.done = true;
                    return Some(Event::Detached("takeover"));
                }
                let start = state.buffer.start();
                if self.cursor < start {
                    let gap = Event::Gap {
                        bytes: start - self.cursor,
                        offset: self.cursor,
                    };
                    self.cursor = start;
                    return Some(gap);
                }
                if let Some(piece) = state.buffer.read(self.cursor, MAX_PIECE) {
                    self.cursor += piece.data.len() as u64;
                    state.delivered = state.delivered.max(self.cursor);
                    drop(state);
                    // the pump may be waiting for this room
                    self.session.changed.notify_waiters();
                    return Some(Event::Output(piece));
                }
                if let Some(end) = state.end.clone() {
                    state.end_seen = true;
                    self.done = true;
                    return Some(Event::End(end));
                }
            }
            changed.await;
        }
    }
}

/// An attached client's input to the command.
#[derive(Debug, Clone)]
pub struct SessionInput {
    session: Arc<Session>,
    token: u64,
}

impl SessionInput {
    /// Stdin bytes, a resize or a signal for the command.
    pub async fn send(&self, input: ProcessInput) -> Result<(), SessionError> {
        {
            let mut state = self.session.state();
            if state.attached != Some(self.token) {
                return Err(SessionError::NotAttached);
            }
            if state.end.is_some() {
                return Ok(());
            }
            match &input {
                ProcessInput::Stdin(_) if state.stdin_closed => {
                    return Err(SessionError::StdinClosed);
                }
                ProcessInput::Eof => {
                    if state.stdin_closed {
                        return Ok(());
                    }
                    state.stdin_closed = true;
                }
                ProcessInput::Signal(signal) => state.signalled = Some(*signal),
                ProcessInput::Stdin(_) | ProcessInput::Resize(_) => {}
            }
        }
        if let ProcessInput::Signal(Signal::KILL) = input {
            self.session.abort();
            return Ok(());
        }
        // a command that does not read holds the client back here (bounded)
        tokio::select! {
            sent = self.session.input.send(input) => sent.map_err(|_| SessionError::Ended(self.session.id.clone())),
            () = self.session.abort.cancelled() => Ok(()),
        }
    }
}

impl Drop for Attachment {
    fn drop(&mut self) {
        {
            let mut state = self.session.state();
            if state.attached == Some(self.token) {
                state.attached = None;
                state.idle_since = Some(Instant::now());
            }
        }
        self.session.changed.notify_waiters();
    }
}
