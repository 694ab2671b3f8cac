//! Grouped sandbox state changes (flat combining; why: `store/sqlite.rs`, part 3):
//! the queue, the one batch that applies every queued change, and the answers to
//! their callers.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use serde_json::json;
use sqlx::Row;
use tokio::sync::oneshot;

use super::SqliteConnections;
use crate::store::{SandboxState, StoreError};

/// One change of a sandbox's row.
#[derive(Debug)]
pub(crate) enum SandboxChange {
    /// `creating` → `running` with the worker's id for it.
    MarkRunning {
        id: String,
        vm_id: String,
        at_ms: i64,
    },
    /// `running` → `destroying`, for one destroyer.
    ClaimDestroy { id: String, at_ms: i64 },
    /// Ends the sandbox in `state` (destroyed, error, lost): lease deleted, the lease
    /// holder's slot given back.
    Finish {
        id: String,
        state: SandboxState,
        error: String,
        at: i64,
    },
}

/// Changes waiting for the writer, each with its caller's answer: whether the change
/// applied (a finish always does), or why the batch holding it failed.
#[derive(Debug, Default)]
pub(crate) struct GroupedChanges {
    pending: Mutex<Vec<Queued>>,
}

#[derive(Debug)]
struct Queued {
    change: SandboxChange,
    answer: oneshot::Sender<Result<bool, Failed>>,
}

/// Why the batch holding a change failed, as each of its callers is told.
#[derive(Debug, Clone)]
enum Failed {
    /// Refused for want of space ([`StoreError::DiskFull`]).
    DiskFull(String),
    Other(String),
}

impl GroupedChanges {
    fn push(&self, queued: Queued) {
        self.pending
            .lock()
            .expect("grouped changes poisoned")
            .push(queued);
    }

    /// Everything queued so far, leaving the queue empty.
    fn take(&self) -> Vec<Queued> {
        std::mem::take(&mut *self.pending.lock().expect("grouped changes poisoned"))
    }
}

const BATCH: &str = "BEGIN IMMEDIATE; \
     UPDATE sandboxes SET state = 'running', vm_id = c.value ->> 1, \
       started_at_ms = c.value ->> 2 \
     FROM json_each($1) AS c \
     WHERE sandboxes.id = c.value ->> 0 AND sandboxes.state = 'creating' \
     RETURNING 0, sandboxes.id; \
     UPDATE sandboxes SET state = 'destroying', destroying_since_ms = c.value ->> 1 \
     FROM json_each($2) AS c \
     WHERE sandboxes.id = c.value ->> 0 AND sandboxes.state = 'running' \
     RETURNING 1, sandboxes.id; \
     UPDATE workers SET reserved = reserved - min(reserved, released.n), \
       reserved_memory_mb = max(0, reserved_memory_mb - released.memory_mb), \
       reserved_vcpus = max(0, reserved_vcpus - released.vcpus) \
     FROM (SELECT l.worker_id, COUNT(*) AS n, SUM(s.memory_mb) AS memory_mb, \
             SUM(s.vcpus) AS vcpus \
           FROM leases l JOIN sandboxes s ON s.id = l.sandbox_id \
           WHERE l.sandbox_id IN (SELECT value ->> 0 FROM json_each($3)) \
           GROUP BY l.worker_id) AS released \
     WHERE workers.id = released.worker_id; \
     DELETE FROM leases WHERE sandbox_id IN (SELECT value ->> 0 FROM json_each($3)); \
     UPDATE sandboxes SET state = c.value ->> 1, error = c.value ->> 2, \
       destroyed_at = c.value ->> 3 \
     FROM json_each($3) AS c WHERE sandboxes.id = c.value ->> 0; \
     COMMIT";

/// What the statement of a kind returned: `0` marked running, `1` claimed.
const MARKED: i64 = 0;
const CLAIMED: i64 = 1;

impl SqliteConnections {
    /// Applies `change` in the next batch on the writer; whether it applied.
    pub(crate) async fn change_sandbox(&self, change: SandboxChange) -> Result<bool, StoreError> {
        let (answer, mut answered) = oneshot::channel();
        self.grouped().push(Queued { change, answer });
        let mut held = tokio::select! {
            biased;
            outcome = &mut answered => return settle(outcome),
            held = self.writer() => held,
        };
        // holding the writer: no other batch runs, so whatever is queued now (ours, unless
        // an earlier holder already answered it) goes into this one
        let queued = self.grouped().take();
        if !queued.is_empty() {
            let rows = match held.connection() {
                Ok(connection) => run_batch(self, connection, &queued).await,
                Err(err) => Err(err),
            };
            answer_all(queued, rows);
        }
        drop(held);
        settle(answered.await)
    }
}

/// Runs `queued` as one batch; `(kind, id)` of every row a conditional change moved.
async fn run_batch(
    connections: &SqliteConnections,
    connection: &mut sqlx::SqliteConnection,
    queued: &[Queued],
) -> Result<HashSet<(i64, String)>, StoreError> {
    let mut marks = Vec::new();
    let mut claims = Vec::new();
    // of two finishes of one sandbox in a batch the later wins, as it would one by one
    let mut finishes: HashMap<&str, serde_json::Value> = HashMap::new();
    for queued in queued {
        match &queued.change {
            SandboxChange::MarkRunning { id, vm_id, at_ms } => {
                marks.push(json!([id, vm_id, at_ms]));
            }
            SandboxChange::ClaimDestroy { id, at_ms } => claims.push(json!([id, at_ms])),
            SandboxChange::Finish {
                id,
                state,
                error,
                at,
            } => {
                finishes.insert(id, json!([id, state.as_str(), error, at]));
            }
        }
    }
    let finishes: Vec<_> = finishes.into_values().collect();
    let rows = connections
        .batch_on(
            connection,
            sqlx::query(BATCH)
                .bind(serde_json::Value::from(marks).to_string())
                .bind(serde_json::Value::from(claims).to_string())
                .bind(serde_json::Value::from(finishes).to_string()),
        )
        .await?;
    rows.iter()
        .map(|row| Ok((row.try_get::<i64, _>(0)?, row.try_get::<String, _>(1)?)))
        .collect()
}

/// Answers every caller of a batch: a conditional change applied if its row came back,
/// and then for its first caller only (two claims of one sandbox: one destroyer).
fn answer_all(queued: Vec<Queued>, rows: Result<HashSet<(i64, String)>, StoreError>) {
    let mut moved = match rows {
        Ok(moved) => moved,
        Err(err) => {
            let failed = match err {
                StoreError::DiskFull(message) => Failed::DiskFull(message),
                other => Failed::Other(other.to_string()),
            };
            for queued in queued {
                let _ = queued.answer.send(Err(failed.clone()));
            }
            return;
        }
    };
    for queued in queued {
        let applied = match queued.change {
            SandboxChange::MarkRunning { id, .. } => moved.remove(&(MARKED, id)),
            SandboxChange::ClaimDestroy { id, .. } => moved.remove(&(CLAIMED, id)),
            SandboxChange::Finish { .. } => true,
        };
        let _ = queued.answer.send(Ok(applied));
    }
}

fn settle(
    outcome: Result<Result<bool, Failed>, oneshot::error::RecvError>,
) -> Result<bool, StoreError> {
    match outcome {
        Ok(Ok(applied)) => Ok(applied),
        Ok(Err(Failed::DiskFull(message))) => Err(StoreError::DiskFull(message)),
        Ok(Err(Failed::Other(message))) => Err(StoreError::GroupedWrite(message)),
        // the caller running the batch went away mid-batch (the runtime is stopping)
        Err(_) => Err(StoreError::GroupedWrite(
            "the batch holding this change was interrupted; its outcome is unknown".into(),
        )),
    }
}
