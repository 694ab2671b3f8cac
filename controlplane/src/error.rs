//! The one place errors become wire statuses: a small code enum that knows both its
//! HTTP status and its gRPC code, and `ApiError`, which every edge answers with.
//! Domain errors convert into `ApiError` here and nowhere else.

use crate::store::StoreError;

pub use berth_proto::ErrorCode;

/// What a client is told. Internal errors carry a plain message; the detail is logged
/// where the error is turned into a response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
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
        berth_proto::error_code::coded_status(err.code, err.message)
    }
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> Self {
        match &err {
            StoreError::JoinTokenUsedUp
            | StoreError::WorkerRevoked(_)
            | StoreError::StaleWorkerToken(_) => Self::unauthorized(err.to_string()),
            StoreError::WorkerIdTaken(_) => Self::new(ErrorCode::Conflict, err.to_string()),
            StoreError::UnknownWorker(_) => Self::not_found(err.to_string()),
            StoreError::Closed => Self::new(ErrorCode::Unavailable, err.to_string()),
            StoreError::UnsupportedUrl(_)
            | StoreError::Database(_)
            | StoreError::GroupedWrite(_)
            | StoreError::Migrate(_) => Self::internal(&err),
        }
    }
}

impl From<crate::audit::AuditError> for ApiError {
    fn from(err: crate::audit::AuditError) -> Self {
        Self::internal(&err)
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
}
