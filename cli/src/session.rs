//! Interactive sessions from the command line, over the API's WebSocket
//! (`GET /api/v1/sandboxes/{id}/exec/ws`): `sandbox shell` (a terminal: raw mode, the
//! local size at start and on every SIGWINCH, `~.` after a newline detaches),
//! `sandbox attach` (back into a session, from an offset), `sandbox exec -i` (local
//! stdin to the command, e.g. `tar c . | berth sandbox exec -i ID -- tar x`) and
//! `sandbox sessions` (the list).

use std::io::{IsTerminal, Write};

use anyhow::{Context, bail};
use base64::Engine as _;
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

use crate::client::ApiClient;
use crate::exit::Exit;
use crate::outln;
use crate::output::{self, Table, TableStyle};
use crate::websocket;

/// Stdin read at once.
const STDIN_CHUNK: usize = 32 * 1024;

/// How the local terminal and stdin take part.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Local {
    /// A terminal in raw mode: keystrokes go as they are typed, the size follows the
    /// local window, `~.` detaches.
    Terminal,
    /// Local stdin goes to the command, end-of-file closes its stdin.
    Stdin,
    /// Nothing is sent; output is printed.
    Watch,
}

/// A new command's request (the WebSocket's first frame).
pub fn start_request(
    command: &[String],
    argv: bool,
    tty: bool,
    env: Vec<(String, String)>,
    workdir: Option<String>,
    timeout: Option<String>,
) -> anyhow::Result<Value> {
    let (program, args) = command.split_first().context("a command is required")?;
    let mut request = json!({
        "command": program,
        "args": args,
        "mode": if argv { "argv" } else { "shell" },
        "env": env.into_iter().collect::<std::collections::BTreeMap<_, _>>(),
        "tty": tty,
    });
    if let Some(workdir) = workdir {
        request["workdir"] = json!(workdir);
    }
    if let Some(timeout) = timeout {
        request["timeout"] = json!(timeout);
    }
    if tty && let Some((cols, rows)) = terminal::size() {
        request["cols"] = json!(cols);
        request["rows"] = json!(rows);
    }
    Ok(request)
}

/// An attach's request.
pub fn attach_request(session_id: &str, offset: u64, takeover: bool) -> Value {
    let mut request = json!({ "session_id": session_id, "offset": offset, "takeover": takeover });
    if let Some((cols, rows)) = terminal::size() {
        request["cols"] = json!(cols);
        request["rows"] = json!(rows);
    }
    request
}

/// Runs a session to its end (or a detach) and returns the exit status to end with.
pub async fn run(
    api: &ApiClient,
    sandbox_id: &str,
    request: Value,
    local: Local,
) -> anyhow::Result<i32> {
    let local = match local {
        Local::Terminal if !std::io::stdin().is_terminal() => Local::Stdin,
        other => other,
    };
    let path = format!("/api/v1/sandboxes/{sandbox_id}/exec/ws");
    let socket = websocket::open(api, &path, "the session's WebSocket").await?;
    let (mut sink, mut stream) = socket.split();
    sink.send(Message::text(request.to_string())).await?;
    let raw = match local {
        Local::Terminal => Some(terminal::Raw::enter()?),
        _ => None,
    };
    let (input_tx, mut input) = mpsc::channel::<Value>(16);
    if local != Local::Watch {
        tokio::spawn(read_stdin(input_tx.clone(), local == Local::Terminal));
    }
    if local == Local::Terminal {
        tokio::spawn(follow_window_size(input_tx.clone()));
    }
    drop(input_tx);
    let mut outcome = Outcome::default();
    let mut input_open = true;
    let result: anyhow::Result<()> = async {
        loop {
            tokio::select! {
                frame = stream.next() => {
                    let Some(frame) = frame else { break };
                    match frame.context("the session's connection broke")? {
                        Message::Text(text) => {
                            let event: Value = serde_json::from_str(text.as_str()).unwrap_or(Value::Null);
                            if outcome.take(&event, raw.is_some())? {
                                break;
                            }
                        }
                        Message::Close(_) => break,
                        _ => {}
                    }
                }
                message = input.recv(), if input_open => match message {
                    Some(message) => sink.send(Message::text(message.to_string())).await?,
                    None => input_open = false,
                },
            }
        }
        Ok(())
    }
    .await;
    drop(raw);
    let _ = sink.close().await;
    result?;
    outcome.finish(sandbox_id)
}

/// What the session said so far.
#[derive(Debug, Default)]
struct Outcome {
    session_id: String,
    offset: u64,
    exit: Option<i32>,
    detached: Option<String>,
    error: Option<String>,
}

impl Outcome {
    /// Acts on one server frame; `true` when the session is over for this client.
    fn take(&mut self, event: &Value, raw: bool) -> anyhow::Result<bool> {
        if let Some(stream) = event["stream"].as_str() {
            let data = match (event["data"].as_str(), event["data_b64"].as_str()) {
                (Some(text), _) => text.as_bytes().to_vec(),
                (None, Some(encoded)) => base64::engine::general_purpose::STANDARD
                    .decode(encoded)
                    .context("the server sent bad base64")?,
                (None, None) => Vec::new(),
            };
            self.offset = event["offset"].as_u64().unwrap_or(self.offset) + data.len() as u64;
            if stream == "stderr" {
                let mut err = std::io::stderr().lock();
                err.write_all(&translate(&data, raw))?;
                err.flush()?;
            } else {
                let mut out = std::io::stdout().lock();
                out.write_all(&data)?;
                out.flush()?;
            }
            return Ok(false);
        }
        match event["type"].as_str() {
            Some("started") => {
                self.session_id = output::text(&event["session_id"]);
                self.offset = event["offset"].as_u64().unwrap_or(0);
            }
            Some("gap") => {
                let bytes = event["bytes"].as_u64().unwrap_or(0);
                self.offset += bytes;
                let note = format!("[berth: {bytes} bytes of output were no longer kept]\n");
                std::io::stderr().write_all(&translate(note.as_bytes(), raw))?;
            }
            Some("exit") => {
                self.exit = Some(event["exit_code"].as_i64().map_or(1, |code| code as i32));
            }
            Some("detached") => self.detached = Some(output::text(&event["reason"])),
            Some("error") => {
                let message = format!(
                    "{}: {}",
                    output::text(&event["code"]),
                    output::text(&event["message"])
                );
                // a problem with one input message: the session goes on
                if self.session_id.is_empty() || event["fatal"].as_bool() == Some(true) {
                    self.error = Some(message);
                    return Ok(true);
                }
                let note = format!("[berth: {message}]\n");
                std::io::stderr().write_all(&translate(note.as_bytes(), raw))?;
            }
            Some("done") => return Ok(true),
            _ => {}
        }
        Ok(false)
    }

    fn finish(self, sandbox_id: &str) -> anyhow::Result<i32> {
        if let Some(error) = self.error {
            return Err(Exit {
                code: 1,
                message: Some(error),
            }
            .into());
        }
        if let Some(code) = self.exit {
            return Ok(code);
        }
        match self.detached {
            Some(reason) => {
                eprintln!(
                    "\r\ndetached ({reason}) from session {} at offset {}; back in with: berth sandbox attach {sandbox_id} {} --offset {}\r",
                    self.session_id, self.offset, self.session_id, self.offset
                );
                Ok(0)
            }
            None if !self.session_id.is_empty() => {
                eprintln!(
                    "\r\nthe connection ended; session {} may still run: berth sandbox attach {sandbox_id} {} --offset {}\r",
                    self.session_id, self.session_id, self.offset
                );
                Ok(1)
            }
            None => bail!("the connection ended before the session started"),
        }
    }
}

/// In raw mode a lone `\n` does not return the carriage: our own notes add it.
fn translate(data: &[u8], raw: bool) -> Vec<u8> {
    if !raw {
        return data.to_vec();
    }
    let mut out = Vec::with_capacity(data.len() + 8);
    for &byte in data {
        if byte == b'\n' {
            out.push(b'\r');
        }
        out.push(byte);
    }
    out
}

/// Local stdin to the session: as typed on a terminal (with the `~.` escape), or as
/// it comes, then `eof`.
async fn read_stdin(tx: mpsc::Sender<Value>, terminal: bool) {
    let mut stdin = tokio::io::stdin();
    let mut buffer = vec![0; STDIN_CHUNK];
    let mut escape = Escape::default();
    loop {
        let read = match stdin.read(&mut buffer).await {
            Ok(0) | Err(_) => {
                if !terminal {
                    let _ = tx.send(json!({"type": "eof"})).await;
                }
                return;
            }
            Ok(read) => read,
        };
        let (data, detach) = if terminal {
            escape.filter(&buffer[..read])
        } else {
            (buffer[..read].to_vec(), false)
        };
        if !data.is_empty() && tx.send(stdin_frame(&data)).await.is_err() {
            return;
        }
        if detach {
            let _ = tx.send(json!({"type": "detach"})).await;
            return;
        }
    }
}

fn stdin_frame(data: &[u8]) -> Value {
    match std::str::from_utf8(data) {
        Ok(text) => json!({"type": "stdin", "data": text}),
        Err(_) => json!({
            "type": "stdin",
            "data_b64": base64::engine::general_purpose::STANDARD.encode(data),
        }),
    }
}

/// ssh's escape: `~` right after a newline (or at the start) begins one; `~.`
/// detaches, `~~` sends one `~`, anything else sends both.
#[derive(Debug)]
struct Escape {
    line_start: bool,
    pending: bool,
}

impl Default for Escape {
    fn default() -> Self {
        Self {
            line_start: true,
            pending: false,
        }
    }
}

impl Escape {
    /// The bytes to send, and whether to detach.
    fn filter(&mut self, input: &[u8]) -> (Vec<u8>, bool) {
        let mut out = Vec::with_capacity(input.len());
        for &byte in input {
            if self.pending {
                self.pending = false;
                match byte {
                    b'.' => return (out, true),
                    b'~' => out.push(b'~'),
                    other => {
                        out.push(b'~');
                        out.push(other);
                    }
                }
                self.line_start = matches!(byte, b'\r' | b'\n');
                continue;
            }
            if self.line_start && byte == b'~' {
                self.pending = true;
                continue;
            }
            out.push(byte);
            self.line_start = matches!(byte, b'\r' | b'\n');
        }
        (out, false)
    }
}

/// The local window's size to the session, now and on every SIGWINCH.
async fn follow_window_size(tx: mpsc::Sender<Value>) {
    let Ok(mut changes) =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::window_change())
    else {
        return;
    };
    while changes.recv().await.is_some() {
        if let Some((cols, rows)) = terminal::size()
            && tx
                .send(json!({"type": "resize", "cols": cols, "rows": rows}))
                .await
                .is_err()
        {
            return;
        }
    }
}

/// `berth sandbox sessions ID`.
pub async fn list(
    api: &ApiClient,
    sandbox_id: &str,
    structured: Option<output::Format>,
) -> anyhow::Result<()> {
    let body: Value = api
        .get(&format!("/api/v1/sandboxes/{sandbox_id}/sessions"))
        .await?;
    if let Some(format) = structured {
        return output::structured(format, &body);
    }
    let mut table = Table::new(&[
        "SESSION", "STATE", "EXIT", "TTY", "ATTACHED", "OUTPUT", "COMMAND",
    ]);
    for session in body["sessions"].as_array().into_iter().flatten() {
        let state = output::text(&session["state"]);
        let exit = match (state.as_str(), session["signal"].as_str()) {
            ("running", _) => "-".to_owned(),
            (_, Some(signal)) if !signal.is_empty() => signal.to_owned(),
            _ => output::text(&session["exit_code"]),
        };
        table.row(vec![
            output::text(&session["session_id"]),
            state,
            exit,
            if session["tty"].as_bool() == Some(true) {
                "yes"
            } else {
                "no"
            }
            .to_owned(),
            output::text(&session["attached"]),
            output::text(&session["output_offset"]),
            output::text(&session["command"]),
        ]);
    }
    table.print(&TableStyle::default())?;
    if body["sessions"].as_array().is_none_or(Vec::is_empty) {
        outln!("(no sessions)")?;
    }
    Ok(())
}

/// The local terminal: its size, and raw mode for as long as a guard lives.
mod terminal {
    use rustix::termios::{self, OptionalActions, Termios};

    /// (cols, rows) of the terminal on stdin (or stdout), if there is one.
    pub fn size() -> Option<(u16, u16)> {
        let stdin = std::io::stdin();
        let stdout = std::io::stdout();
        let size = termios::tcgetwinsize(&stdin)
            .or_else(|_| termios::tcgetwinsize(&stdout))
            .ok()?;
        (size.ws_col > 0 && size.ws_row > 0).then_some((size.ws_col, size.ws_row))
    }

    /// Raw mode on stdin until dropped.
    pub struct Raw {
        saved: Termios,
    }

    impl Raw {
        pub fn enter() -> anyhow::Result<Self> {
            let stdin = std::io::stdin();
            let saved = termios::tcgetattr(&stdin)?;
            let mut raw = saved.clone();
            raw.make_raw();
            termios::tcsetattr(&stdin, OptionalActions::Now, &raw)?;
            Ok(Self { saved })
        }
    }

    impl Drop for Raw {
        fn drop(&mut self) {
            let _ = termios::tcsetattr(std::io::stdin(), OptionalActions::Now, &self.saved);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tilde_dot_after_a_newline_detaches() {
        let mut escape = Escape::default();
        assert_eq!(escape.filter(b"~."), (Vec::new(), true));
        let mut escape = Escape::default();
        assert_eq!(escape.filter(b"ls\r"), (b"ls\r".to_vec(), false));
        assert_eq!(escape.filter(b"~"), (Vec::new(), false));
        assert_eq!(escape.filter(b"."), (Vec::new(), true));
    }

    #[test]
    fn a_tilde_elsewhere_is_just_a_tilde() {
        let mut escape = Escape::default();
        assert_eq!(escape.filter(b"a~.b"), (b"a~.b".to_vec(), false));
        let mut escape = Escape::default();
        assert_eq!(escape.filter(b"~~x"), (b"~x".to_vec(), false));
        let mut escape = Escape::default();
        assert_eq!(escape.filter(b"~x"), (b"~x".to_vec(), false));
    }

    #[test]
    fn stdin_that_is_not_utf8_goes_as_base64() {
        assert_eq!(stdin_frame(b"hi")["data"], "hi");
        assert_eq!(stdin_frame(&[0xff, 0x00])["data_b64"], "/wA=");
    }

    #[test]
    fn raw_notes_return_the_carriage() {
        assert_eq!(translate(b"a\nb", true), b"a\r\nb");
        assert_eq!(translate(b"a\nb", false), b"a\nb");
    }
}
