//! The StacyVM-shaped views the API answers with: a sandbox as a caller sees it, a
//! file's info, and times as RFC 3339.

use std::collections::BTreeMap;
use std::time::{Duration, UNIX_EPOCH};

use serde::Serialize;

use crate::store::SandboxRow;
use crate::workers::model::FileInfo;

/// A sandbox as the API shows it (StacyVM's fields, plus `generation`).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct SandboxView {
    pub id: String,
    pub state: String,
    pub provider: String,
    pub image: String,
    pub memory_mb: i64,
    pub vcpus: i64,
    pub owner_id: String,
    /// The team that owns it.
    pub tenant_id: String,
    pub vm_id: String,
    pub worker_id: String,
    pub created_at: String,
    pub expires_at: String,
    pub metadata: BTreeMap<String, String>,
    pub preview_domain: String,
    /// The lease generation in force; 0 without a lease.
    pub generation: i64,
    /// Whether the sandbox may reach addresses outside its own network.
    pub internet: bool,
    /// Why the sandbox failed; absent when it did not.
    #[serde(skip_serializing_if = "String::is_empty")]
    #[schema(required = false)]
    pub error: String,
    /// The template it was made from; absent when none.
    #[serde(skip_serializing_if = "String::is_empty")]
    #[schema(required = false)]
    pub template: String,
    /// Where its commands and sessions start when they name none (its template's
    /// `workdir`); absent: `/workspace`.
    #[serde(skip_serializing_if = "String::is_empty")]
    #[schema(required = false)]
    pub workdir: String,
    /// What an interactive session with no command runs (its template's `shell`);
    /// absent: `sh`.
    #[serde(skip_serializing_if = "String::is_empty")]
    #[schema(required = false)]
    pub shell: String,
    /// The ports it serves previews on (its template's `ports`; `GET
    /// /api/v1/sandboxes/{id}/ports` gives their URLs); absent: none declared.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    #[schema(required = false)]
    pub ports: Vec<u16>,
    /// How long it may go without exec, file, session or port traffic before it is
    /// stopped (`30m`); absent: never.
    #[serde(skip_serializing_if = "String::is_empty")]
    #[schema(required = false, example = "30m")]
    pub auto_stop: String,
    /// When it last had exec, file, session or port traffic, or started running
    /// (RFC 3339; recorded at most once per `sandboxes.activity_interval`, 30s by
    /// default); absent: it never ran.
    #[serde(skip_serializing_if = "String::is_empty")]
    #[schema(required = false)]
    pub last_active_at: String,
    /// The startup phase it is in (`scheduled`, `building image`, `starting
    /// services`, `creating`, `on_start`, `ready`); a failed create stays at the
    /// phase that failed.
    #[schema(example = "ready")]
    pub phase: String,
    /// Its startup phases so far, oldest first, with their times.
    pub phases: Vec<super::phases::PhaseView>,
    /// The phases as recorded (for the gRPC edge's times in milliseconds).
    #[serde(skip)]
    pub phase_records: Vec<super::phases::PhaseRecord>,
    #[serde(skip)]
    pub created_at_unix: i64,
    #[serde(skip)]
    pub expires_at_unix: i64,
    #[serde(skip)]
    pub last_active_at_unix: i64,
}

impl From<SandboxRow> for SandboxView {
    fn from(row: SandboxRow) -> Self {
        let phases = super::phases::settle(
            super::phases::read(&row.phases),
            row.state.as_str(),
            &row.error,
            row.destroyed_at.map(|at| at.saturating_mul(1000)),
        );
        Self {
            phase: super::phases::current(&phases, row.state.as_str()),
            phases: phases
                .iter()
                .map(super::phases::PhaseRecord::view)
                .collect(),
            phase_records: phases,
            metadata: serde_json::from_str(&row.metadata).unwrap_or_default(),
            created_at: rfc3339(row.created_at),
            expires_at: rfc3339(row.expires_at),
            created_at_unix: row.created_at,
            expires_at_unix: row.expires_at,
            generation: row.generation.unwrap_or(0),
            worker_id: row.worker_id.unwrap_or_default(),
            id: row.id,
            state: row.state.to_string(),
            provider: row.provider,
            image: row.image,
            memory_mb: row.memory_mb,
            vcpus: row.vcpus,
            owner_id: row.owner_id,
            tenant_id: row.team_id,
            vm_id: row.vm_id,
            preview_domain: String::new(),
            error: row.error,
            internet: row.internet,
            template: row.template,
            workdir: row.workdir,
            shell: row.shell,
            ports: serde_json::from_str(&row.ports).unwrap_or_default(),
            auto_stop: u64::try_from(row.auto_stop_secs)
                .ok()
                .filter(|secs| *secs > 0)
                .map(|secs| humantime::format_duration(Duration::from_secs(secs)).to_string())
                .unwrap_or_default(),
            last_active_at_unix: row.active_at,
            last_active_at: match row.active_at {
                0 => String::new(),
                at => rfc3339(at),
            },
        }
    }
}

/// `{path, size, mode, is_dir, mod_time}` with the mode as an octal string and the
/// time in RFC 3339.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct FileInfoView {
    pub path: String,
    pub size: u64,
    pub mode: String,
    pub is_dir: bool,
    pub mod_time: String,
}

impl From<FileInfo> for FileInfoView {
    fn from(info: FileInfo) -> Self {
        Self {
            path: info.path,
            size: info.size,
            mode: format!("{:04o}", info.mode),
            is_dir: info.is_dir,
            mod_time: rfc3339(info.mod_time),
        }
    }
}

/// The last second RFC 3339 can write: 9999-12-31T23:59:59Z.
const LAST_RFC3339_SECOND: u64 = 253_402_300_799;

/// Unix seconds as RFC 3339 (UTC). Times come from workers too (a file's mtime is what
/// `stat` in the sandbox says), so any value renders: before 1970 as the epoch, past
/// year 9999 (which humantime refuses to format, a panic in `to_string`) as its last
/// second.
pub fn rfc3339(unix_secs: i64) -> String {
    let secs = u64::try_from(unix_secs)
        .unwrap_or(0)
        .min(LAST_RFC3339_SECOND);
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(secs)).to_string()
}

/// Unix milliseconds as RFC 3339 with milliseconds (UTC), clamped like [`rfc3339`].
pub fn rfc3339_millis(unix_ms: i64) -> String {
    let ms = u64::try_from(unix_ms)
        .unwrap_or(0)
        .min(LAST_RFC3339_SECOND * 1000 + 999);
    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_time_a_worker_reports_renders() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(-5), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_767_225_600), "2026-01-01T00:00:00Z");
        // year 10000 made `to_string` panic (a stat in the sandbox can report it)
        assert_eq!(rfc3339(253_402_300_800), "9999-12-31T23:59:59Z");
        assert_eq!(rfc3339(i64::MAX), "9999-12-31T23:59:59Z");
        assert_eq!(
            rfc3339_millis(1_767_225_600_123),
            "2026-01-01T00:00:00.123Z"
        );
        assert_eq!(rfc3339_millis(-1), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339_millis(i64::MAX), "9999-12-31T23:59:59.999Z");
    }

    #[test]
    fn times_are_rfc3339() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
    }
}
