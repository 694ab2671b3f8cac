//! `berth sandbox create --wait`: the create answered as soon as the sandbox is
//! placed (`Prefer: respond-async`), then its startup phases followed on its event
//! stream and drawn on stderr as a stepper, `✓` or `✗` a phase with its time (on a
//! terminal, the phase in progress shows as `…` until it ends). Stdout gets what a
//! plain create prints, once the sandbox is ready.

use std::io::{IsTerminal, Write};

use anyhow::Context;
use serde_json::Value;

use crate::client::ApiClient;
use crate::exit::Exit;

/// Creates the sandbox `body` describes and follows it to `ready`; answers its JSON
/// as `GET /api/v1/sandboxes/{id}` shows it then. A failed phase is an exit 1 naming
/// the sandbox and the reason.
pub async fn create_and_follow(api: &ApiClient, body: &Value) -> anyhow::Result<Value> {
    let request = api
        .request(reqwest::Method::POST, "/api/v1/sandboxes")
        .header("Prefer", "respond-async")
        .json(body);
    let placed: Value = api
        .raw(request)
        .await?
        .json()
        .await
        .context("the control plane's answer to the create is not JSON")?;
    let id = placed["id"]
        .as_str()
        .context("the control plane's answer names no sandbox id")?
        .to_owned();
    let mut stepper = Stepper::new(std::io::stderr().is_terminal());
    let events = api
        .raw(api.request(
            reqwest::Method::GET,
            &format!("/api/v1/sandboxes/{id}/events"),
        ))
        .await?;
    let outcome = crate::sandbox::for_each_line(events, |line| {
        if line.is_empty() {
            return Ok(None);
        }
        let event: Value = serde_json::from_str(line)
            .with_context(|| format!("a line of the event stream is not JSON: {line}"))?;
        Ok(stepper.event(&event))
    })
    .await?;
    match outcome {
        Some(Outcome::Ready) => api.get(&format!("/api/v1/sandboxes/{id}")).await,
        Some(Outcome::Failed(reason)) => Err(Exit {
            code: 1,
            message: Some(format!("sandbox {id} failed: {reason}")),
        }
        .into()),
        None => Err(Exit {
            code: 1,
            message: Some(format!(
                "the event stream of sandbox {id} ended before it was ready (`berth sandbox get {id}` shows where it is)"
            )),
        }
        .into()),
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Ready,
    Failed(String),
}

/// Draws phases as their events come.
struct Stepper {
    terminal: bool,
    /// A `…` line is on screen, to be replaced by the phase's end.
    open: bool,
    out: Vec<u8>,
}

impl Stepper {
    fn new(terminal: bool) -> Self {
        Self {
            terminal,
            open: false,
            out: Vec::new(),
        }
    }

    /// Draws `event`; `Some` once the sandbox is ready or has failed.
    fn event(&mut self, event: &Value) -> Option<Outcome> {
        let text = |key: &str| event[key].as_str().unwrap_or_default().to_owned();
        let outcome = match text("type").as_str() {
            "phase" => {
                let phase = text("phase");
                match text("status").as_str() {
                    "started" if phase == "ready" => None,
                    "started" => {
                        if self.terminal {
                            self.line(&format!("  … {phase}"), false);
                        }
                        None
                    }
                    "succeeded" => {
                        self.line(&format!("  ✓ {phase}{}", tail(event)), true);
                        (phase == "ready").then_some(Outcome::Ready)
                    }
                    "failed" => {
                        self.line(&format!("  ✗ {phase}{}", tail(event)), true);
                        Some(Outcome::Failed(text("error")))
                    }
                    _ => None,
                }
            }
            "state" => match text("state").as_str() {
                "error" | "destroyed" | "lost" => Some(Outcome::Failed({
                    let error = text("error");
                    if error.is_empty() {
                        format!("it is {}", text("state"))
                    } else {
                        error
                    }
                })),
                _ => None,
            },
            _ => None,
        };
        let mut stderr = std::io::stderr();
        let _ = stderr.write_all(&self.out);
        let _ = stderr.flush();
        self.out.clear();
        outcome
    }

    /// Writes a line; an open `…` line is replaced. `done`: ends the line.
    fn line(&mut self, text: &str, done: bool) {
        if self.open {
            self.out.extend_from_slice(b"\r\x1b[2K");
            self.open = false;
        }
        self.out.extend_from_slice(text.as_bytes());
        if done {
            self.out.push(b'\n');
        } else {
            self.open = true;
        }
    }
}

/// `  1.2s  (detail)` and, for a failed phase, `: error`.
fn tail(event: &Value) -> String {
    let mut tail = String::new();
    if let Some(ms) = event["duration_ms"].as_u64() {
        tail.push_str(&format!("  {:.1}s", ms as f64 / 1000.0));
    }
    if let Some(detail) = event["detail"].as_str().filter(|d| !d.is_empty()) {
        tail.push_str(&format!("  ({detail})"));
    }
    if let Some(error) = event["error"].as_str().filter(|e| !e.is_empty()) {
        tail.push_str(&format!(": {error}"));
    }
    tail
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn drawn(stepper: &mut Stepper, event: Value) -> Option<Outcome> {
        stepper.event(&event)
    }

    #[test]
    fn phases_end_in_ticks_and_ready_ends_the_wait() {
        let mut stepper = Stepper::new(false);
        let outcome = drawn(
            &mut stepper,
            json!({"type": "phase", "phase": "scheduled", "status": "started"}),
        );
        assert_eq!(outcome, None);
        let outcome = drawn(
            &mut stepper,
            json!({"type": "phase", "phase": "building image", "status": "succeeded",
                   "duration_ms": 1234, "detail": "reused berth/built:abc"}),
        );
        assert_eq!(outcome, None);
        let outcome = drawn(
            &mut stepper,
            json!({"type": "phase", "phase": "ready", "status": "succeeded", "duration_ms": 0}),
        );
        assert_eq!(outcome, Some(Outcome::Ready));
    }

    #[test]
    fn a_failed_phase_or_an_error_state_ends_the_wait_with_the_reason() {
        let mut stepper = Stepper::new(false);
        let outcome = drawn(
            &mut stepper,
            json!({"type": "phase", "phase": "on_start", "status": "failed", "error": "exit 3"}),
        );
        assert_eq!(outcome, Some(Outcome::Failed("exit 3".into())));
        let outcome = drawn(
            &mut stepper,
            json!({"type": "state", "state": "error", "error": "no worker"}),
        );
        assert_eq!(outcome, Some(Outcome::Failed("no worker".into())));
        let outcome = drawn(&mut stepper, json!({"type": "state", "state": "running"}));
        assert_eq!(outcome, None);
    }

    #[test]
    fn on_a_terminal_the_phase_in_progress_is_replaced_by_its_end() {
        let mut stepper = Stepper::new(true);
        stepper.line("  … creating", false);
        stepper.line("  ✓ creating  0.3s", true);
        let text = String::from_utf8(stepper.out.clone()).unwrap();
        assert_eq!(text, "  … creating\r\x1b[2K  ✓ creating  0.3s\n");
        assert_eq!(
            tail(&json!({"duration_ms": 1500, "detail": "built x in 1.5s"})),
            "  1.5s  (built x in 1.5s)"
        );
        assert_eq!(
            tail(&json!({"duration_ms": 20, "error": "exit 1"})),
            "  0.0s: exit 1"
        );
    }
}
