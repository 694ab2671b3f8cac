//! `POST /sandboxes/{id}/exec` (whole, or NDJSON with `stream: true`) and
//! `GET /sandboxes/{id}/logs`.
//!
//! The stream answers `{"stream":"stdout"|"stderr","data":…}` lines as output arrives,
//! then exactly one terminal line: `{"stream":"exit","exit_code":…}` or
//! `{"stream":"error","code":…,"message":…}`. Its `stream` value is never stdout or
//! stderr, so StacyVM's parsers (which default a missing `stream` to stdout) do not
//! take it for output. A client that goes away drops the stream, which cancels the
//! worker call, which stops the command.

use std::borrow::Cow;
use std::collections::BTreeMap;

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::schemas::{ErrorBody, ExecStream, ExecStreamLine, LogLine};
use super::{Authorized, ExecScope, JsonBody, Path, Query, ReadScope};
use crate::api::{ApiState, AuditSlot};
use crate::error::ApiError;
use crate::sandboxes::{ExecCall, ExecEvent, ExecEvents, parse_timeout, rfc3339};

const NDJSON: &str = "application/x-ndjson";

#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct ExecBody {
    /// A shell command line, or the program with `mode: argv`.
    pub command: String,
    /// Arguments (with `mode: argv`).
    #[serde(default)]
    pub args: Vec<String>,
    /// `shell` (default) or `argv`.
    #[serde(default)]
    pub mode: Option<String>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    #[serde(default)]
    pub workdir: Option<String>,
    /// A Go-style duration ("30s") or a number of seconds.
    #[serde(default)]
    #[schema(schema_with = super::schemas::string_or_number, required = false)]
    pub timeout: Option<Value>,
    /// Answer NDJSON lines as output arrives.
    #[serde(default)]
    pub stream: bool,
}

impl TryFrom<ExecBody> for ExecCall {
    type Error = ApiError;

    fn try_from(body: ExecBody) -> Result<Self, ApiError> {
        Ok(Self {
            argv: argv_mode(body.mode.as_deref())?,
            command: body.command,
            args: body.args,
            env: body.env,
            workdir: body.workdir.unwrap_or_default(),
            timeout: parse_timeout(body.timeout.as_ref()).map_err(ApiError::from)?,
        })
    }
}

/// Whether `mode` (`shell`, the default, or `argv`) runs the command as argv.
pub fn argv_mode(mode: Option<&str>) -> Result<bool, ApiError> {
    match mode.unwrap_or("shell") {
        "shell" | "" => Ok(false),
        "argv" => Ok(true),
        other => Err(ApiError::bad_request(format!(
            "mode {other:?}: expected shell or argv"
        ))),
    }
}

/// Runs a command in a sandbox (exec scope): one JSON answer, or with `stream: true`
/// NDJSON lines as output arrives, the last one `exit` or `error`.
#[utoipa::path(post, path = "/api/v1/sandboxes/{id}/exec", tag = "exec", security(("api_key" = []), ("bearer" = [])), params(("id" = String, Path, description = "Sandbox id")),
    request_body = ExecBody, responses(
    (status = 200, description = "The command ran", content(
        (ExecAnswer = "application/json"),
        (ExecStreamLine = "application/x-ndjson"),
    )),
    (status = 400, description = "A bad body, mode or timeout", body = ErrorBody),
    (status = 404, description = "No such sandbox", body = ErrorBody),
    (status = 408, description = "The command timed out", body = ErrorBody),
    (status = 409, description = "The sandbox is not running", body = ErrorBody),
))]
pub async fn exec(
    Authorized { access, .. }: Authorized<ExecScope>,
    State(state): State<ApiState>,
    Path(id): Path<String>,
    audit: AuditSlot,
    JsonBody(body): JsonBody<ExecBody>,
) -> Result<Response, ApiError> {
    let stream = body.stream;
    let call = ExecCall::try_from(body)?;
    audit.detail(call.describe());
    if !stream {
        let outcome = state.sandboxes.exec(&access, &id, call).await?;
        return Ok(Json(ExecAnswer {
            exit_code: outcome.exit_code,
            stdout: String::from_utf8_lossy(&outcome.stdout),
            stderr: String::from_utf8_lossy(&outcome.stderr),
            duration: format!("{}ms", outcome.duration_ms),
            duration_ms: outcome.duration_ms,
            truncated: outcome.truncated,
        })
        .into_response());
    }
    let events = state.sandboxes.exec_stream(&access, &id, call).await?;
    let lines = ndjson_events(events);
    Ok((
        [
            (header::CONTENT_TYPE, NDJSON),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        Body::from_stream(lines.map(Ok::<_, std::convert::Infallible>)),
    )
        .into_response())
}

/// A whole exec's answer, serialized straight from the collected output (no copy into
/// a JSON value). `truncated` appears only when output was dropped; StacyVM clients
/// ignore fields they do not know.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ExecAnswer<'a> {
    exit_code: i32,
    #[schema(value_type = String)]
    stdout: Cow<'a, str>,
    #[schema(value_type = String)]
    stderr: Cow<'a, str>,
    /// e.g. `12ms`.
    duration: String,
    duration_ms: u64,
    /// Present (true) only when output was dropped.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    #[schema(required = false)]
    truncated: bool,
}

/// Exec events as NDJSON lines; the events end with exactly one terminal event, and
/// so do the lines.
fn ndjson_events(events: ExecEvents) -> impl futures::Stream<Item = Vec<u8>> + Send + 'static {
    struct State {
        events: ExecEvents,
        stdout: Utf8Carry,
        stderr: Utf8Carry,
    }
    let initial = State {
        events,
        stdout: Utf8Carry::default(),
        stderr: Utf8Carry::default(),
    };
    futures::stream::unfold(initial, |mut state| async move {
        loop {
            let line = match state.events.next().await? {
                ExecEvent::Stdout(data) => {
                    let text = state.stdout.push(data);
                    if text.is_empty() {
                        continue;
                    }
                    return Some((output_line(ExecStream::Stdout, &text), state));
                }
                ExecEvent::Stderr(data) => {
                    let text = state.stderr.push(data);
                    if text.is_empty() {
                        continue;
                    }
                    return Some((output_line(ExecStream::Stderr, &text), state));
                }
                ExecEvent::Exit {
                    exit_code,
                    duration_ms,
                } => ExecStreamLine {
                    stream: ExecStream::Exit,
                    exit_code: Some(exit_code),
                    duration: Some(format!("{duration_ms}ms")),
                    duration_ms: Some(duration_ms),
                    ..Default::default()
                },
                ExecEvent::Failed { code, message } => ExecStreamLine {
                    stream: ExecStream::Error,
                    code: Some(code.as_str().to_owned()),
                    message: Some(message),
                    ..Default::default()
                },
            };
            let mut bytes = serde_json::to_vec(&line).unwrap_or_default();
            bytes.push(b'\n');
            return Some((bytes, state));
        }
    })
}

/// Turns byte chunks into text without splitting a UTF-8 character across two lines:
/// an incomplete character at the end of a chunk waits for the next one. Valid text
/// (the usual case) becomes the `String` without a copy; only invalid bytes take the
/// lossy path.
#[derive(Debug, Default)]
pub struct Utf8Carry {
    pending: Vec<u8>,
}

impl Utf8Carry {
    pub fn push(&mut self, data: Vec<u8>) -> String {
        let joined = if self.pending.is_empty() {
            data
        } else {
            let mut joined = std::mem::take(&mut self.pending);
            joined.extend_from_slice(&data);
            joined
        };
        let mut bytes = match String::from_utf8(joined) {
            Ok(text) => return text,
            Err(err) => err.into_bytes(),
        };
        // an incomplete character at the very end waits for the next chunk; anything
        // else invalid is replaced now, so bad bytes never stall the stream
        self.pending = bytes.split_off(incomplete_tail(&bytes));
        match String::from_utf8(bytes) {
            Ok(text) => text,
            Err(err) => String::from_utf8_lossy(err.as_bytes()).into_owned(),
        }
    }
}

/// Where a character cut off by the end of `bytes` starts (`bytes.len()` when none is).
fn incomplete_tail(bytes: &[u8]) -> usize {
    let earliest = bytes.len().saturating_sub(3);
    for start in (earliest..bytes.len()).rev() {
        // the lead byte of a multi-byte character
        if bytes[start] >= 0xc0 {
            return match std::str::from_utf8(&bytes[start..]) {
                Err(err) if err.valid_up_to() == 0 && err.error_len().is_none() => start,
                _ => bytes.len(),
            };
        }
    }
    bytes.len()
}

/// One output line of the stream, serialized straight to bytes.
#[derive(Serialize)]
struct OutputLine<'a> {
    stream: ExecStream,
    data: &'a str,
}

pub fn output_line(stream: ExecStream, data: &str) -> Vec<u8> {
    let mut line = serde_json::to_vec(&OutputLine { stream, data }).unwrap_or_default();
    line.push(b'\n');
    line
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LogsQuery {
    /// The last this many lines (default 100, at most 10000).
    #[serde(default)]
    pub lines: Option<u32>,
    /// Keep streaming new lines as NDJSON.
    #[serde(default)]
    pub follow: Option<bool>,
}

const MAX_LOG_LINES: u32 = 10_000;

/// The last `lines` (default 100) console lines as an array of strings; with
/// `follow=true`, NDJSON `{"time","line"}` lines that keep coming.
#[utoipa::path(get, path = "/api/v1/sandboxes/{id}/logs", tag = "exec", security(("api_key" = []), ("bearer" = [])),
    params(("id" = String, Path, description = "Sandbox id"), LogsQuery), responses(
    (status = 200, description = "Console lines; NDJSON with follow=true", content(
        (Vec<String> = "application/json"),
        (LogLine = "application/x-ndjson"),
    )),
    (status = 400, description = "A bad query", body = ErrorBody),
    (status = 404, description = "No such sandbox", body = ErrorBody),
))]
pub async fn logs(
    Authorized { access, .. }: Authorized<ReadScope>,
    State(state): State<ApiState>,
    Path(id): Path<String>,
    Query(query): Query<LogsQuery>,
) -> Result<Response, ApiError> {
    let lines = query.lines.unwrap_or(100).min(MAX_LOG_LINES);
    let follow = query.follow.unwrap_or(false);
    let mut stream = state.sandboxes.logs(&access, &id, lines, follow).await?;
    if !follow {
        let mut collected = Vec::new();
        while let Some(line) = stream.next().await {
            let line = line.map_err(ApiError::from)?;
            collected.push(line.line);
        }
        return Ok(Json(collected).into_response());
    }
    let body = stream
        .take_while(|line| std::future::ready(line.is_ok()))
        .filter_map(|line| std::future::ready(line.ok()))
        .map(|line| {
            let line = LogLine {
                time: rfc3339(line.time_ms / 1000),
                line: line.line,
            };
            let mut bytes = serde_json::to_vec(&line).unwrap_or_default();
            bytes.push(b'\n');
            Ok::<_, std::convert::Infallible>(bytes)
        });
    Ok((
        [
            (header::CONTENT_TYPE, NDJSON),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        Body::from_stream(body),
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn characters_split_across_chunks_are_kept_whole() {
        let mut carry = Utf8Carry::default();
        let text = "héllo";
        let bytes = text.as_bytes();
        let first = carry.push(bytes[..2].to_vec());
        let second = carry.push(bytes[2..].to_vec());
        assert_eq!(first, "h");
        assert_eq!(format!("{first}{second}"), text);
        // invalid bytes do not stall the stream
        assert_eq!(carry.push(vec![0xff, b'a']), "\u{fffd}a");
        // a character cut after its first byte waits whole, even across two chunks
        let euro = "€".as_bytes();
        assert_eq!(carry.push(vec![b'x', euro[0]]), "x");
        assert_eq!(carry.push(vec![euro[1]]), "");
        assert_eq!(carry.push(vec![euro[2], b'!']), "€!");
        // an invalid byte before a cut character is replaced; the cut one waits
        assert_eq!(carry.push(vec![0xff, euro[0]]), "\u{fffd}");
        assert_eq!(carry.push(euro[1..].to_vec()), "€");
    }

    #[test]
    fn output_lines_are_one_json_object_each() {
        let line = output_line(ExecStream::Stdout, "a \"quoted\"\nline");
        let text = String::from_utf8(line).unwrap();
        assert!(text.ends_with('\n'));
        let value: Value = serde_json::from_str(text.trim_end()).unwrap();
        assert_eq!(
            value,
            json!({"stream": "stdout", "data": "a \"quoted\"\nline"})
        );
    }
}
