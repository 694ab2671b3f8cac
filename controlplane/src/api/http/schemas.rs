//! The shapes of the HTTP answers that have no domain type of their own: the handlers
//! serialize these, and the OpenAPI description is derived from the same types.

use std::collections::BTreeMap;

use serde::Serialize;
use utoipa::ToSchema;

/// Every error answer: `{"code","message"}`, plus the request id when one is known.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// A machine-readable code, e.g. `NOT_FOUND`.
    #[schema(value_type = String)]
    pub code: &'static str,
    pub message: String,
    /// The request's `X-Request-ID`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(required = false, nullable = false)]
    pub request_id: Option<String>,
    /// A failed create's sandbox, recorded in state `error`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(required = false, nullable = false)]
    pub sandbox_id: Option<String>,
}

/// `{"status": …}`: what was done (`destroyed`, `deleted`, `moved`, …) or `ok`.
#[derive(Debug, Serialize, ToSchema)]
pub struct StatusBody {
    #[schema(value_type = String)]
    pub status: &'static str,
}

impl StatusBody {
    pub fn new(status: &'static str) -> Self {
        Self { status }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct HealthBody {
    /// Always `ok`.
    #[schema(value_type = String)]
    pub status: &'static str,
    pub version: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ReadyBody {
    /// Always `ready`.
    #[schema(value_type = String)]
    pub status: &'static str,
    /// Online workers with a healthy provider.
    pub workers_online: usize,
}

/// What `DELETE /api/v1/workers/{id}` did.
#[derive(Debug, Serialize, ToSchema)]
pub struct RemovedWorker {
    /// The id of the worker whose record is gone.
    pub removed: String,
    /// Sandboxes it held, now lost (only with `force`).
    pub lost_sandboxes: Vec<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RevokedBody {
    /// Always `revoked`.
    #[schema(value_type = String)]
    pub status: &'static str,
    pub worker_id: String,
    /// Sandboxes that were on the worker, now lost.
    pub lost_sandboxes: Vec<String>,
    /// Mesh connections of the worker that were closed.
    pub closed_connections: usize,
}

/// The fleet at a glance.
#[derive(Debug, Serialize, ToSchema)]
pub struct FleetStatus {
    pub version: String,
    pub trust_domain: String,
    /// `sqlite` or `postgres`.
    pub store: String,
    pub ca: CaStatus,
    pub workers: WorkerTally,
    pub sandboxes: SandboxTally,
    /// Sandboxes the fresh, active workers may hold in all.
    pub capacity: i64,
    /// The SSH gateway; absent when it is off.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(required = false, nullable = false)]
    pub ssh: Option<SshStatus>,
}

/// Where the SSH gateway listens and which host key it shows.
#[derive(Debug, Serialize, ToSchema)]
pub struct SshStatus {
    /// `host:port`.
    pub address: String,
    /// The host key's `SHA256:…` fingerprint, as OpenSSH shows it on a first connection.
    pub host_key_fingerprint: String,
    /// The host key itself (`ssh-ed25519 AAAA…`), for a `known_hosts` entry.
    pub host_key: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CaStatus {
    pub fingerprint: String,
    /// RFC 3339.
    pub expires_at: String,
}

/// How many workers there are, by status.
#[derive(Debug, Serialize, ToSchema)]
pub struct WorkerTally {
    pub total: usize,
    pub by_status: BTreeMap<String, usize>,
}

/// How many sandboxes there are, by state.
#[derive(Debug, Serialize, ToSchema)]
pub struct SandboxTally {
    pub total: usize,
    pub by_state: BTreeMap<String, usize>,
}

/// Whether a create would be admitted now.
#[derive(Debug, Serialize, ToSchema)]
pub struct Admission {
    pub allowed: bool,
    /// Refused for want of capacity only: it may pass later.
    pub queueable: bool,
    /// Why not; empty when allowed.
    pub reason: String,
    /// The caller's team's live sandboxes.
    pub active_sandboxes: usize,
    /// The most the team may have: its quota, or the fleet's capacity if smaller.
    pub max_sandboxes: i64,
    /// The owner's live sandboxes (the user the key is bound to, the body's
    /// `owner_id`, or `X-User-ID`); 0 when none is named.
    pub active_owner_sandboxes: usize,
    /// Berth has no per-owner quota: always 0 (none).
    pub max_owner_sandboxes: i64,
    /// The longest ttl a sandbox may have, e.g. `24h`.
    pub max_ttl: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Pruned {
    /// How many sandboxes were destroyed.
    pub pruned: usize,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Written {
    /// Always `written`.
    #[schema(value_type = String)]
    pub status: &'static str,
    /// Bytes written.
    pub size: u64,
}

/// One line of an exec stream (`application/x-ndjson`): `stdout`/`stderr` lines carry
/// `data`; the last line is `exit` (with `exit_code`, `duration`, `duration_ms`) or
/// `error` (with `code`, `message`).
#[derive(Debug, Default, Serialize, ToSchema)]
pub struct ExecStreamLine {
    pub stream: ExecStream,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(required = false, nullable = false)]
    pub data: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(required = false, nullable = false)]
    pub exit_code: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(required = false, nullable = false)]
    pub duration: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(required = false, nullable = false)]
    pub duration_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(required = false, nullable = false)]
    pub code: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(required = false, nullable = false)]
    pub message: Option<String>,
}

#[derive(Debug, Default, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ExecStream {
    #[default]
    Stdout,
    Stderr,
    Exit,
    Error,
}

/// One line of a followed console log (`application/x-ndjson`).
#[derive(Debug, Serialize, ToSchema)]
pub struct LogLine {
    /// RFC 3339.
    pub time: String,
    pub line: String,
}

/// A string or a number (or null): exec timeouts (`"30s"` or seconds) and file modes
/// (`"0644"` or permission bits).
pub fn string_or_number() -> utoipa::openapi::schema::Schema {
    use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, Type};
    OneOfBuilder::new()
        .item(ObjectBuilder::new().schema_type(Type::String))
        .item(ObjectBuilder::new().schema_type(Type::Number))
        .item(ObjectBuilder::new().schema_type(Type::Null))
        .into()
}
