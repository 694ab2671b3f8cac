//! A sandbox's startup phases: `scheduled`, `building image`, `starting services`,
//! `creating`, `on_start`, `ready`. The replica that creates a sandbox records each
//! phase's start and end (and the error of one that failed) in the store as it goes,
//! so the sandbox JSON of any replica shows them, and the event stream
//! (`GET /api/v1/sandboxes/{id}/events`) follows them live.

use serde::{Deserialize, Serialize};

use super::view::rfc3339_millis;
use crate::clock::now_ms;
use crate::store::Store;

pub const SCHEDULED: &str = "scheduled";
pub const BUILDING_IMAGE: &str = "building image";
pub const STARTING_SERVICES: &str = "starting services";
pub const CREATING: &str = "creating";
pub const ON_START: &str = "on_start";
pub const READY: &str = "ready";

/// The longest error a phase keeps (the sandbox's own `error` has the whole).
const MAX_PHASE_ERROR: usize = 2048;

/// One phase as the store holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PhaseRecord {
    pub name: String,
    pub started_ms: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_ms: Option<i64>,
    /// What happened, in a few words (`built in 12.3s`, `reused berth/built:…`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub detail: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub error: String,
}

/// One phase as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PhaseView {
    #[schema(example = "building image")]
    pub name: String,
    /// `running` (not ended yet), `succeeded` or `failed`.
    #[schema(example = "succeeded")]
    pub status: String,
    pub started_at: String,
    /// Absent while it runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(required = false)]
    pub ended_at: Option<String>,
    /// Absent while it runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(required = false)]
    pub duration_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    #[schema(required = false)]
    pub detail: String,
    /// Why it failed; absent when it did not.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    #[schema(required = false)]
    pub error: String,
}

impl PhaseRecord {
    pub fn status(&self) -> &'static str {
        match (self.ended_ms, self.error.is_empty()) {
            (_, false) => "failed",
            (None, true) => "running",
            (Some(_), true) => "succeeded",
        }
    }

    pub fn view(&self) -> PhaseView {
        PhaseView {
            name: self.name.clone(),
            status: self.status().to_owned(),
            started_at: rfc3339_millis(self.started_ms),
            ended_at: self.ended_ms.map(rfc3339_millis),
            duration_ms: self
                .ended_ms
                .map(|end| u64::try_from(end - self.started_ms).unwrap_or(0)),
            detail: self.detail.clone(),
            error: self.error.clone(),
        }
    }
}

/// The phases a store column holds; a column that does not read (written by hand)
/// shows none rather than failing the sandbox's JSON.
pub fn read(column: &str) -> Vec<PhaseRecord> {
    serde_json::from_str(column).unwrap_or_default()
}

/// The phases of a sandbox whose create ended without finishing them (its control
/// plane died mid-create and reconciliation failed it, or it was destroyed while
/// creating): a phase still `running` then ended with the sandbox, failed with its
/// error.
pub fn settle(
    mut records: Vec<PhaseRecord>,
    state: &str,
    error: &str,
    destroyed_ms: Option<i64>,
) -> Vec<PhaseRecord> {
    let ended = matches!(state, "error" | "lost" | "destroyed");
    if let Some(last) = records.last_mut().filter(|r| ended && r.ended_ms.is_none()) {
        // when it stopped is not known, except for a destroy
        last.ended_ms = destroyed_ms.map(|at| at.max(last.started_ms));
        last.error = if error.is_empty() {
            format!("the sandbox is {state}")
        } else {
            bounded(error)
        };
    }
    records
}

/// The phase a sandbox is in: its last recorded one (`ready` once made), or for a
/// sandbox with none recorded (made before phases were), what its state says.
pub fn current(phases: &[PhaseRecord], state: &str) -> String {
    match phases.last() {
        Some(last) => last.name.clone(),
        None if state == "creating" => SCHEDULED.to_owned(),
        None => READY.to_owned(),
    }
}

/// The phases of one create, written through to the store as each begins and ends.
/// A write that fails is logged and the create goes on: the phases describe the
/// create, they do not decide it.
pub struct PhaseLog {
    store: Store,
    sandbox_id: String,
    records: Vec<PhaseRecord>,
}

impl PhaseLog {
    /// Starts with `scheduled`, begun when the sandbox was asked for.
    pub fn scheduled(store: Store, sandbox_id: &str, asked_at_ms: i64) -> Self {
        Self {
            store,
            sandbox_id: sandbox_id.to_owned(),
            records: vec![PhaseRecord {
                name: SCHEDULED.to_owned(),
                started_ms: asked_at_ms,
                ended_ms: None,
                detail: String::new(),
                error: String::new(),
            }],
        }
    }

    /// Ends the phase in progress (if any) and begins `name`.
    pub async fn begin(&mut self, name: &str) {
        let now = now_ms();
        self.close(now);
        self.records.push(PhaseRecord {
            name: name.to_owned(),
            started_ms: now,
            ended_ms: None,
            detail: String::new(),
            error: String::new(),
        });
        self.save().await;
    }

    /// Ends the phase in progress and begins `name`, both at `at_ms` (a boundary a
    /// worker reported after the fact); recorded with the next write.
    pub fn begin_at(&mut self, name: &str, at_ms: i64) {
        self.close(at_ms);
        self.records.push(PhaseRecord {
            name: name.to_owned(),
            started_ms: at_ms,
            ended_ms: None,
            detail: String::new(),
            error: String::new(),
        });
    }

    /// Says what the phase in progress did (shown once it ends).
    pub fn detail(&mut self, detail: impl Into<String>) {
        if let Some(last) = self.records.last_mut() {
            last.detail = detail.into();
        }
    }

    /// Fails the phase in progress with `error`.
    pub async fn fail(&mut self, error: &str) {
        let now = now_ms();
        if let Some(last) = self.records.last_mut().filter(|r| r.ended_ms.is_none()) {
            last.ended_ms = Some(now);
            last.error = bounded(error);
        }
        self.save().await;
    }

    /// Ends the phase in progress and records `ready`.
    pub async fn ready(&mut self) {
        let now = now_ms();
        self.close(now);
        self.records.push(PhaseRecord {
            name: READY.to_owned(),
            started_ms: now,
            ended_ms: Some(now),
            detail: String::new(),
            error: String::new(),
        });
        self.save().await;
    }

    pub fn json(&self) -> String {
        serde_json::to_string(&self.records).unwrap_or_else(|_| "[]".to_owned())
    }

    fn close(&mut self, now: i64) {
        if let Some(last) = self.records.last_mut().filter(|r| r.ended_ms.is_none()) {
            last.ended_ms = Some(now);
        }
    }

    async fn save(&self) {
        if let Err(err) = self
            .store
            .set_sandbox_phases(&self.sandbox_id, &self.json())
            .await
        {
            tracing::warn!(sandbox_id = %self.sandbox_id, error = %err, "recording the sandbox's phases failed");
        }
    }
}

fn bounded(error: &str) -> String {
    if error.len() <= MAX_PHASE_ERROR {
        return error.to_owned();
    }
    let mut end = MAX_PHASE_ERROR;
    while !error.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &error[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(name: &str, ended: Option<i64>, error: &str) -> PhaseRecord {
        PhaseRecord {
            name: name.into(),
            started_ms: 1_000,
            ended_ms: ended,
            detail: String::new(),
            error: error.into(),
        }
    }

    #[test]
    fn a_phase_is_running_until_it_ends_and_failed_when_it_has_an_error() {
        assert_eq!(record(CREATING, None, "").status(), "running");
        assert_eq!(record(CREATING, Some(1_500), "").status(), "succeeded");
        assert_eq!(record(ON_START, Some(1_500), "exit 1").status(), "failed");
        let view = record(CREATING, Some(1_500), "").view();
        assert_eq!(view.duration_ms, Some(500));
        assert_eq!(view.started_at, "1970-01-01T00:00:01.000Z");
        assert_eq!(record(CREATING, None, "").view().ended_at, None);
    }

    #[test]
    fn the_current_phase_is_the_last_or_what_the_state_says() {
        assert_eq!(current(&[], "creating"), SCHEDULED);
        assert_eq!(current(&[], "running"), READY);
        let phases = [record(SCHEDULED, Some(1), ""), record(CREATING, None, "")];
        assert_eq!(current(&phases, "creating"), CREATING);
    }

    #[test]
    fn a_phase_left_running_by_a_create_that_ended_is_failed_with_the_sandbox() {
        let left = vec![
            record(SCHEDULED, Some(1_200), ""),
            record(CREATING, None, ""),
        ];
        let settled = settle(left.clone(), "error", "the control plane restarted", None);
        assert_eq!(settled[1].status(), "failed");
        assert_eq!(settled[1].error, "the control plane restarted");
        assert_eq!(settled[1].ended_ms, None, "when it stopped is not known");
        let destroyed = settle(left.clone(), "destroyed", "", Some(5_000));
        assert_eq!(destroyed[1].error, "the sandbox is destroyed");
        assert_eq!(destroyed[1].ended_ms, Some(5_000));
        // a create still going is left be
        assert_eq!(settle(left.clone(), "creating", "", None), left);
    }

    #[test]
    fn a_damaged_column_reads_as_no_phases_and_long_errors_are_cut() {
        assert!(read("not json").is_empty());
        let records = vec![record(SCHEDULED, Some(2_000), "")];
        assert_eq!(read(&serde_json::to_string(&records).unwrap()), records);
        let long = "é".repeat(MAX_PHASE_ERROR);
        let cut = bounded(&long);
        assert!(cut.len() <= MAX_PHASE_ERROR + '…'.len_utf8());
        assert!(cut.ends_with('…'));
    }
}
