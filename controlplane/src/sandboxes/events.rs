//! A sandbox's event stream (`GET /api/v1/sandboxes/{id}/events`): each startup
//! phase as it starts and ends, and each change of state, read from the store, so a
//! stream on any replica follows a create running on another. What happened before
//! the stream began comes first; then, as [`Follow`] says, it polls for more until
//! the create has settled, or until the sandbox is destroyed, or not at all. A reader
//! that goes away ends it.

use std::collections::VecDeque;
use std::time::Duration;

use futures::Stream;
use serde::Serialize;

use super::phases::{self, PhaseRecord};
use super::view::rfc3339_millis;
use super::{SandboxError, Sandboxes};
use crate::clock::now_ms;
use crate::store::{SandboxRow, SandboxState, Store};
use crate::teams::Access;

/// How long a stream follows the sandbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Follow {
    /// What happened so far, then the end.
    No,
    /// Until the create has settled: the sandbox is out of `creating` (running and
    /// ready, or failed, or gone).
    Create,
    /// Until the sandbox is destroyed (stops and starts too).
    Destroyed,
}

/// How often a followed stream reads the sandbox again.
const POLL: Duration = Duration::from_millis(250);

/// One line of the stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct SandboxEvent {
    pub sandbox_id: String,
    /// `phase` or `state`.
    #[serde(rename = "type")]
    #[schema(example = "phase")]
    pub kind: String,
    /// When it happened (RFC 3339, milliseconds).
    pub at: String,
    /// The phase (`phase` events).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(required = false, example = "building image")]
    pub phase: Option<String>,
    /// `started`, `succeeded` or `failed` (`phase` events).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(required = false, example = "succeeded")]
    pub status: Option<String>,
    /// How long the phase took (an ended phase).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(required = false)]
    pub duration_ms: Option<u64>,
    #[serde(skip_serializing_if = "String::is_empty")]
    #[schema(required = false)]
    pub detail: String,
    /// Why the phase, or the sandbox, failed.
    #[serde(skip_serializing_if = "String::is_empty")]
    #[schema(required = false)]
    pub error: String,
    /// The sandbox's state (`state` events).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(required = false, example = "running")]
    pub state: Option<String>,
}

impl Sandboxes {
    /// The events of sandbox `id` (see the module docs); not found unless `access`
    /// sees it.
    pub async fn events(
        &self,
        access: &Access,
        id: &str,
        follow: Follow,
    ) -> Result<impl Stream<Item = SandboxEvent> + Send + use<>, SandboxError> {
        let row = self.row_seen_by(access, id).await?;
        let mut watch = Watch {
            store: self.store.clone(),
            sandbox_id: id.to_owned(),
            seen: Vec::new(),
            state: None,
            pending: VecDeque::new(),
            follow,
            ended: false,
        };
        watch.observe(&row);
        Ok(futures::stream::unfold(watch, |mut watch| async move {
            watch.next().await.map(|event| (event, watch))
        }))
    }
}

struct Watch {
    store: Store,
    sandbox_id: String,
    /// The status of each phase already told.
    seen: Vec<&'static str>,
    state: Option<SandboxState>,
    pending: VecDeque<SandboxEvent>,
    follow: Follow,
    /// Nothing more will be read: the sandbox is destroyed or gone, or followed as
    /// long as asked.
    ended: bool,
}

impl Watch {
    async fn next(&mut self) -> Option<SandboxEvent> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Some(event);
            }
            if self.ended || self.follow == Follow::No {
                return None;
            }
            tokio::time::sleep(POLL).await;
            match self.store.get_sandbox(&self.sandbox_id).await {
                Ok(Some(row)) => self.observe(&row),
                Ok(None) => self.ended = true,
                Err(err) => {
                    tracing::warn!(sandbox_id = %self.sandbox_id, error = %err, "the sandbox's event stream cannot read it");
                    self.ended = true;
                }
            }
        }
    }

    /// Queues what changed since the last look.
    fn observe(&mut self, row: &SandboxRow) {
        let records = phases::read(&row.phases);
        for (index, record) in records.iter().enumerate() {
            let status = record.status();
            match self.seen.get(index).copied() {
                None => {
                    self.pending.push_back(self.phase_event(record, "started"));
                    if status != "running" {
                        self.pending.push_back(self.phase_event(record, status));
                    }
                    self.seen.push(status);
                }
                Some("running") if status != "running" => {
                    self.pending.push_back(self.phase_event(record, status));
                    self.seen[index] = status;
                }
                Some(_) => {}
            }
        }
        if self.state != Some(row.state) {
            self.state = Some(row.state);
            let at = match row.state {
                SandboxState::Destroyed => row.destroyed_at.map_or_else(now_ms, |s| s * 1000),
                _ => now_ms(),
            };
            self.pending.push_back(SandboxEvent {
                sandbox_id: self.sandbox_id.clone(),
                kind: "state".into(),
                at: rfc3339_millis(at),
                phase: None,
                status: None,
                duration_ms: None,
                detail: String::new(),
                error: row.error.clone(),
                state: Some(row.state.to_string()),
            });
        }
        let settled = row.state != SandboxState::Creating;
        if row.state == SandboxState::Destroyed || (settled && self.follow == Follow::Create) {
            self.ended = true;
        }
    }

    fn phase_event(&self, record: &PhaseRecord, status: &str) -> SandboxEvent {
        let view = record.view();
        let started = status == "started";
        SandboxEvent {
            sandbox_id: self.sandbox_id.clone(),
            kind: "phase".into(),
            at: if started {
                view.started_at
            } else {
                view.ended_at.unwrap_or(view.started_at)
            },
            phase: Some(record.name.clone()),
            status: Some(status.to_owned()),
            duration_ms: if started { None } else { view.duration_ms },
            detail: if started { String::new() } else { view.detail },
            error: if started { String::new() } else { view.error },
            state: None,
        }
    }
}
