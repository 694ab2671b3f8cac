//! What an interactive mock command has beyond a plain exec: stdin its builtins can
//! read (`cat`, `read`, an interactive `sh`), a terminal size (`stty size`), and
//! signals. Resizes and signals are written to the sandbox's console log
//! (`session: terminal resized to 100x30`, `session: signal SIGINT`) so tests can see
//! them arrive. The terminal does not echo what is typed; Ctrl-C (byte 3) on a
//! terminal's stdin is SIGINT and Enter (`\r`) ends a line, as a line discipline
//! would make them.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::{mpsc, watch};

use super::Sandbox;
use crate::provider::{ProcessInput, Signal, TermSize};

/// Capacity of the stdin pipe, in writes.
const STDIN_BUFFER: usize = 16;
/// Longest line `read_line` gathers before it hands over what it has.
const MAX_LINE: usize = 64 * 1024;
/// Ctrl-C.
const INTERRUPT: u8 = 3;

/// The reading end of a command's stdin.
#[derive(Debug)]
pub struct StdinPipe {
    rx: mpsc::Receiver<Vec<u8>>,
    pending: Vec<u8>,
}

impl StdinPipe {
    /// The next bytes, `None` at end-of-file.
    pub async fn read(&mut self) -> Option<Vec<u8>> {
        if !self.pending.is_empty() {
            return Some(std::mem::take(&mut self.pending));
        }
        self.rx.recv().await
    }

    /// The next line with its newline (the last one may lack it), `None` at
    /// end-of-file.
    pub async fn read_line(&mut self) -> Option<Vec<u8>> {
        loop {
            if let Some(end) = self.pending.iter().position(|byte| *byte == b'\n') {
                return Some(self.pending.drain(..=end).collect());
            }
            if self.pending.len() >= MAX_LINE {
                return Some(std::mem::take(&mut self.pending));
            }
            match self.rx.recv().await {
                Some(data) => self.pending.extend_from_slice(&data),
                None if self.pending.is_empty() => return None,
                None => return Some(std::mem::take(&mut self.pending)),
            }
        }
    }
}

/// What a terminal's line discipline does with Enter (ICRNL): a client in raw mode
/// (OpenSSH's `ssh -t`, tmux) sends `\r`, which a command reads as `\n`; a `\r\n`
/// pair stays one line end.
fn carriage_returns_end_lines(data: &mut Vec<u8>) {
    let mut out = Vec::with_capacity(data.len());
    let mut bytes = data.iter().peekable();
    while let Some(&byte) = bytes.next() {
        if byte == b'\r' {
            if bytes.peek() != Some(&&b'\n') {
                out.push(b'\n');
            }
        } else {
            out.push(byte);
        }
    }
    *data = out;
}

/// Signals sent to a command, for whoever waits on them.
#[derive(Debug, Clone)]
pub struct Signals {
    raised: Arc<watch::Sender<Option<Signal>>>,
    /// Subscribed when the command was wired: sees every signal since.
    origin: watch::Receiver<Option<Signal>>,
    /// Interactive shells running now: they take SIGINT for their current line.
    shells: Arc<AtomicUsize>,
}

impl Default for Signals {
    fn default() -> Self {
        let (raised, origin) = watch::channel(None);
        Self {
            raised: Arc::new(raised),
            origin,
            shells: Arc::default(),
        }
    }
}

/// Signals that end a command (the others are recorded only).
fn is_fatal(signal: Signal) -> bool {
    matches!(signal.number(), 1 | 2 | 3 | 9 | 10 | 12 | 15)
}

impl Signals {
    pub fn raise(&self, signal: Signal) {
        self.raised.send_replace(Some(signal));
    }

    /// Signals raised from now on.
    pub fn subscribe(&self) -> watch::Receiver<Option<Signal>> {
        self.raised.subscribe()
    }

    /// Signals raised since the command was wired (the command's own task may start
    /// after its first signal came).
    pub fn subscribe_from_start(&self) -> watch::Receiver<Option<Signal>> {
        self.origin.clone()
    }

    /// The next signal raised after `receiver` last looked.
    pub async fn next(receiver: &mut watch::Receiver<Option<Signal>>) -> Signal {
        loop {
            if receiver.changed().await.is_err() {
                return std::future::pending().await;
            }
            if let Some(signal) = *receiver.borrow_and_update() {
                return signal;
            }
        }
    }

    /// The next signal that ends the whole command: any fatal one, but SIGINT only
    /// when no interactive shell is there to take it.
    pub async fn next_fatal(&self, receiver: &mut watch::Receiver<Option<Signal>>) -> Signal {
        loop {
            let signal = Self::next(receiver).await;
            if !is_fatal(signal) {
                continue;
            }
            if signal == Signal::INT && self.shells.load(Ordering::SeqCst) > 0 {
                continue;
            }
            return signal;
        }
    }

    /// Marks an interactive shell running until the guard drops.
    pub fn shell(&self) -> ShellGuard {
        self.shells.fetch_add(1, Ordering::SeqCst);
        ShellGuard(Arc::clone(&self.shells))
    }
}

pub struct ShellGuard(Arc<AtomicUsize>);

impl Drop for ShellGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A command's stdin, terminal and signals; all empty for a plain exec.
#[derive(Debug, Default)]
pub struct Io {
    pub stdin: Option<StdinPipe>,
    pub terminal: Option<Arc<Mutex<TermSize>>>,
    pub signals: Signals,
}

impl Io {
    pub fn terminal_size(&self) -> Option<TermSize> {
        self.terminal
            .as_ref()
            .map(|size| *size.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

/// Builds a command's `Io` and the task body that feeds it from the session's
/// input: stdin bytes into the pipe, resizes into the size, signals raised.
pub fn wire(
    sandbox: Arc<Sandbox>,
    tty: Option<TermSize>,
    stdin: bool,
    mut input: mpsc::Receiver<ProcessInput>,
) -> (Io, impl Future<Output = ()> + Send + 'static) {
    let (stdin_tx, stdin_rx) = mpsc::channel(STDIN_BUFFER);
    let terminal = tty.map(|size| Arc::new(Mutex::new(size)));
    let io = Io {
        stdin: Some(StdinPipe {
            rx: stdin_rx,
            pending: Vec::new(),
        }),
        terminal: terminal.clone(),
        signals: Signals::default(),
    };
    let signals = io.signals.clone();
    let mut stdin_tx = stdin.then_some(stdin_tx);
    let feed = async move {
        while let Some(message) = input.recv().await {
            match message {
                ProcessInput::Stdin(mut data) => {
                    if terminal.is_some() && data.contains(&INTERRUPT) {
                        data.retain(|byte| *byte != INTERRUPT);
                        sandbox.console.append("session: signal SIGINT (Ctrl-C)");
                        signals.raise(Signal::INT);
                    }
                    if terminal.is_some() {
                        carriage_returns_end_lines(&mut data);
                    }
                    if let Some(tx) = &stdin_tx
                        && !data.is_empty()
                        && tx.send(data).await.is_err()
                    {
                        // the command is gone
                        stdin_tx = None;
                    }
                }
                ProcessInput::Eof => stdin_tx = None,
                ProcessInput::Resize(size) => {
                    if let Some(terminal) = &terminal {
                        *terminal.lock().unwrap_or_else(PoisonError::into_inner) = size;
                        sandbox
                            .console
                            .append(format!("session: terminal resized to {size}"));
                    }
                }
                ProcessInput::Signal(signal) => {
                    sandbox.console.append(format!("session: signal {signal}"));
                    signals.raise(signal);
                }
            }
        }
    };
    (io, feed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enter_ends_a_line_once() {
        let mut data = b"stty size\rls\r\necho\n".to_vec();
        carriage_returns_end_lines(&mut data);
        assert_eq!(data, b"stty size\nls\necho\n");
    }
}
