//! The one place the control plane's errors become wire statuses: `ApiError` (an
//! [`ErrorCode`] from `berth-proto`, which knows its HTTP status and gRPC code, and a
//! message safe to show), which every edge answers with: the HTTP API, the public
//! gRPC API and the worker mesh alike. Domain errors convert into `ApiError` here and
//! nowhere else. (The other direction, a worker's status becoming a domain error, is
//! the worker client's: `workers/error.rs`.)

use crate::store::StoreError;

pub use berth_proto::ErrorCode;

/// The gRPC metadata key of [`ApiError::retry_after`] (HTTP's `Retry-After`, lowercased
/// as metadata keys are).
pub const RETRY_AFTER_KEY: &str = "retry-after";

/// What a client is told. Internal errors carry a plain message; the detail is logged
/// where the error is turned into a response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
    /// The sandbox a failed create recorded (in state `error`), so the caller can
    /// look at it or destroy it.
    pub sandbox_id: Option<String>,
    /// When the caller may try again (whole seconds on the wire): HTTP answers it as
    /// `Retry-After`, gRPC as `retry-after` metadata.
    pub retry_after: Option<std::time::Duration>,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            sandbox_id: None,
            retry_after: None,
        }
    }

    /// The same refusal, telling the caller to retry after `wait`.
    pub fn with_retry_after(self, wait: std::time::Duration) -> Self {
        Self {
            retry_after: Some(wait),
            ..self
        }
    }

    /// [`ApiError::retry_after`] as the whole seconds a `Retry-After` header carries,
    /// rounded up and at least 1.
    pub fn retry_after_secs(&self) -> Option<u64> {
        let wait = self.retry_after?;
        let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        Some(secs.max(1))
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::BadRequest, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::NotFound, message)
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Unauthorized, message)
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Forbidden, message)
    }

    /// The store refused a write for want of space: logged in full (an operator must
    /// free space), answered 507 with a message that says so.
    pub fn disk_full(detail: &dyn std::fmt::Display) -> Self {
        tracing::error!(error = %detail, "the store is out of disk space");
        Self::new(
            ErrorCode::InsufficientStorage,
            "the control plane's database is out of disk space; \
             writes are refused until space is freed",
        )
    }

    /// Logs `detail` in full and answers with a plain message.
    pub fn internal(detail: &dyn std::fmt::Display) -> Self {
        tracing::error!(error = %detail, "internal error");
        Self::new(ErrorCode::Internal, "internal error")
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code.as_str(), self.message)
    }
}

impl From<ApiError> for tonic::Status {
    fn from(err: ApiError) -> Self {
        let retry_after = err.retry_after_secs();
        let mut status = berth_proto::error_code::coded_status(err.code, err.message);
        if let Some(secs) = retry_after {
            status
                .metadata_mut()
                .insert(RETRY_AFTER_KEY, tonic::metadata::MetadataValue::from(secs));
        }
        if let Some(id) = err.sandbox_id
            && let Ok(value) = id.parse()
        {
            status
                .metadata_mut()
                .insert(berth_proto::error_code::SANDBOX_ID_KEY, value);
        }
        status
    }
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> Self {
        match &err {
            StoreError::JoinTokenUsedUp
            | StoreError::WorkerRevoked(_)
            | StoreError::StaleWorkerToken(_) => Self::unauthorized(err.to_string()),
            StoreError::WorkerIdTaken(_)
            | StoreError::WorkerHoldsSandboxes { .. }
            | StoreError::LastAdminKey(_) => Self::new(ErrorCode::Conflict, err.to_string()),
            StoreError::UnknownWorker(_)
            | StoreError::UnknownApiKey(_)
            | StoreError::UnknownTeam(_) => Self::not_found(err.to_string()),
            StoreError::OverQuota(_) => Self::new(ErrorCode::ResourceLimit, err.to_string()),
            StoreError::Closed => Self::new(ErrorCode::Unavailable, err.to_string()),
            StoreError::DiskFull(_) => Self::disk_full(&err),
            StoreError::UnsupportedUrl(_)
            | StoreError::Database(_)
            | StoreError::GroupedWrite(_)
            | StoreError::Migrate(_) => Self::internal(&err),
        }
    }
}

impl From<crate::api_keys::KeyError> for ApiError {
    fn from(err: crate::api_keys::KeyError) -> Self {
        use crate::api_keys::KeyError;
        match err {
            KeyError::Store(err) => err.into(),
            KeyError::UnknownScope(_)
            | KeyError::NoScopes
            | KeyError::BadExpiry { .. }
            | KeyError::UserWithoutTeam
            | KeyError::BadName => Self::bad_request(err.to_string()),
            KeyError::UnknownTeam(_) | KeyError::UnknownUser { .. } => {
                Self::not_found(err.to_string())
            }
            KeyError::NotYourTeam { .. } => Self::forbidden(err.to_string()),
        }
    }
}

impl From<crate::ssh_access::SshAccessError> for ApiError {
    fn from(err: crate::ssh_access::SshAccessError) -> Self {
        use crate::ssh_access::SshAccessError;
        match err {
            SshAccessError::Sandbox(err) => err.into(),
            SshAccessError::Store(err) => err.into(),
            SshAccessError::BadKey(_) | SshAccessError::BadName | SshAccessError::BadTtl(_) => {
                Self::bad_request(err.to_string())
            }
            SshAccessError::KeyExists(_) => Self::new(ErrorCode::Conflict, err.to_string()),
            SshAccessError::UnknownKey(_) => Self::not_found(err.to_string()),
        }
    }
}

impl From<crate::templates::TemplateError> for ApiError {
    fn from(err: crate::templates::TemplateError) -> Self {
        use crate::templates::TemplateError;
        match err {
            TemplateError::Sandbox(err) => err.into(),
            TemplateError::Secret(err) => err.into(),
            TemplateError::Store(err) => err.into(),
            TemplateError::Invalid(_)
            | TemplateError::UnknownInCreate { .. }
            | TemplateError::ImageConflict { .. } => Self::bad_request(err.to_string()),
            TemplateError::NotFound { .. } => Self::not_found(err.to_string()),
        }
    }
}

impl From<crate::secrets::SecretError> for ApiError {
    fn from(err: crate::secrets::SecretError) -> Self {
        use crate::secrets::SecretError;
        match err {
            SecretError::Store(err) => err.into(),
            SecretError::BadName(_) | SecretError::BadValue | SecretError::Missing { .. } => {
                Self::bad_request(err.to_string())
            }
            SecretError::NotFound { .. } => Self::not_found(err.to_string()),
            SecretError::OtherKey { .. } => {
                // an operator's to fix; the message names keys by id, never a value
                tracing::error!(error = %err, "a secret does not open");
                Self::new(ErrorCode::Internal, err.to_string())
            }
        }
    }
}

impl From<crate::sandboxes::SandboxError> for ApiError {
    fn from(err: crate::sandboxes::SandboxError) -> Self {
        use crate::sandboxes::SandboxError;
        let message = err.to_string();
        match err {
            SandboxError::NotFound(_)
            | SandboxError::Destroyed(_)
            | SandboxError::SessionNotFound(_) => Self::not_found(message),
            SandboxError::BadRequest(_) => Self::bad_request(message),
            SandboxError::Conflict(_) => Self::new(ErrorCode::Conflict, message),
            SandboxError::NoCapacity(_) | SandboxError::OverQuota(_) => {
                Self::new(ErrorCode::ResourceLimit, message)
            }
            SandboxError::UnknownTeam(_) => Self::not_found(message),
            SandboxError::Forbidden(_) => Self::forbidden(message),
            SandboxError::Unavailable(_) => Self::new(ErrorCode::Unavailable, message),
            SandboxError::Remote(err) => err.into(),
            SandboxError::Store(err) => err.into(),
            SandboxError::CreateFailed { sandbox_id, cause } => Self {
                sandbox_id: Some(sandbox_id),
                ..Self::from(*cause)
            },
        }
    }
}

impl From<crate::teams::TeamError> for ApiError {
    fn from(err: crate::teams::TeamError) -> Self {
        use crate::teams::TeamError;
        let message = err.to_string();
        match err {
            TeamError::UnknownTeam(_) | TeamError::UnknownUser { .. } => Self::not_found(message),
            TeamError::TeamExists(_)
            | TeamError::UserExists { .. }
            | TeamError::TeamOwnsSandboxes { .. }
            | TeamError::UserOwnsSandboxes { .. } => Self::new(ErrorCode::Conflict, message),
            TeamError::BadTeamName(_)
            | TeamError::BadUserName(_)
            | TeamError::BadQuota(_)
            | TeamError::DefaultTeam => Self::bad_request(message),
            TeamError::NotClusterAdmin(_) => Self::forbidden(message),
            TeamError::Sandbox(err) => err.into(),
            TeamError::Store(err) => err.into(),
        }
    }
}

impl From<crate::teams::AccessError> for ApiError {
    fn from(err: crate::teams::AccessError) -> Self {
        Self::forbidden(err.to_string())
    }
}

/// A worker's refusal, already mapped by the worker client (internal details were
/// logged there and left out of the message).
impl From<crate::workers::RemoteError> for ApiError {
    fn from(err: crate::workers::RemoteError) -> Self {
        Self::new(err.code, err.message)
    }
}

impl From<crate::audit::AuditError> for ApiError {
    fn from(err: crate::audit::AuditError) -> Self {
        use crate::audit::AuditError;
        match &err {
            AuditError::Behind { cause, .. } => {
                tracing::error!(error = %err, "refusing a call the audit log cannot record");
                let why = match **cause {
                    StoreError::DiskFull(_) => (
                        ErrorCode::InsufficientStorage,
                        "the control plane's database is out of disk space",
                    ),
                    _ => (ErrorCode::Unavailable, "the store refuses writes"),
                };
                Self::new(
                    why.0,
                    format!(
                        "the audit log cannot be written ({}); changes are refused until it can",
                        why.1
                    ),
                )
            }
            AuditError::Read(StoreError::DiskFull(_)) => Self::disk_full(&err),
            AuditError::Append(cause) if matches!(**cause, StoreError::DiskFull(_)) => {
                Self::disk_full(&err)
            }
            AuditError::Append(_) | AuditError::Read(_) | AuditError::Stopped => {
                Self::internal(&err)
            }
        }
    }
}

impl From<berth_pki::TokenError> for ApiError {
    fn from(err: berth_pki::TokenError) -> Self {
        Self::unauthorized(err.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_status_carries_the_machine_readable_code() {
        let status = tonic::Status::from(ApiError::not_found("no such worker"));
        assert_eq!(status.code(), tonic::Code::NotFound);
        assert_eq!(
            status.metadata().get("berth-error-code").unwrap(),
            "NOT_FOUND"
        );
    }

    #[test]
    fn a_retry_hint_reaches_grpc_metadata_in_whole_seconds() {
        let err = ApiError::new(ErrorCode::ResourceLimit, "slow down")
            .with_retry_after(std::time::Duration::from_millis(1500));
        assert_eq!(err.retry_after_secs(), Some(2));
        let status = tonic::Status::from(err);
        assert_eq!(status.code(), tonic::Code::ResourceExhausted);
        assert_eq!(status.metadata().get(RETRY_AFTER_KEY).unwrap(), "2");
        let soon = ApiError::new(ErrorCode::ResourceLimit, "slow down")
            .with_retry_after(std::time::Duration::ZERO);
        assert_eq!(soon.retry_after_secs(), Some(1));
        assert_eq!(ApiError::not_found("x").retry_after_secs(), None);
    }

    #[test]
    fn a_failed_create_names_its_sandbox() {
        use crate::sandboxes::SandboxError;
        let err = ApiError::from(SandboxError::CreateFailed {
            sandbox_id: "sbx-1".into(),
            cause: Box::new(SandboxError::BadRequest("no such image".into())),
        });
        assert_eq!(err.code, ErrorCode::BadRequest);
        assert_eq!(err.message, "no such image");
        assert_eq!(err.sandbox_id.as_deref(), Some("sbx-1"));
        let status = tonic::Status::from(err);
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        assert_eq!(status.metadata().get("berth-sandbox-id").unwrap(), "sbx-1");
    }

    #[test]
    fn a_full_disk_is_insufficient_storage_with_a_plain_message() {
        let err = ApiError::from(StoreError::DiskFull(
            "error returned from database: (code: 13) database or disk is full".into(),
        ));
        assert_eq!(err.code, ErrorCode::InsufficientStorage);
        assert_eq!(err.code.http_status(), 507);
        assert!(err.message.contains("out of disk space"), "{err}");
        assert!(!err.message.contains("code: 13"), "{err}");
    }
}
