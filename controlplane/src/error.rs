//! The one place errors become wire statuses: a small code enum that knows both its
//! HTTP status and its gRPC code, and `ApiError`, which every edge answers with.
//! Domain errors convert into `ApiError` here and nowhere else.

use crate::store::StoreError;

/// Machine-readable error codes; the HTTP body's `code` (StacyVM-compatible names).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    NotFound,
    BadRequest,
    Unauthorized,
    Forbidden,
    Conflict,
    Unavailable,
    Timeout,
    ResourceLimit,
    Internal,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NotFound => "NOT_FOUND",
            Self::BadRequest => "BAD_REQUEST",
            Self::Unauthorized => "UNAUTHORIZED",
            Self::Forbidden => "FORBIDDEN",
            Self::Conflict => "CONFLICT",
            Self::Unavailable => "UNAVAILABLE",
            Self::Timeout => "TIMEOUT",
            Self::ResourceLimit => "RESOURCE_LIMIT",
            Self::Internal => "INTERNAL_ERROR",
        }
    }

    /// The code an `as_str` name stands for (as carried in `berth-error-code`).
    pub fn from_name(name: &str) -> Option<Self> {
        let code = match name {
            "NOT_FOUND" => Self::NotFound,
            "BAD_REQUEST" => Self::BadRequest,
            "UNAUTHORIZED" => Self::Unauthorized,
            "FORBIDDEN" => Self::Forbidden,
            "CONFLICT" => Self::Conflict,
            "UNAVAILABLE" => Self::Unavailable,
            "TIMEOUT" => Self::Timeout,
            "RESOURCE_LIMIT" => Self::ResourceLimit,
            "INTERNAL_ERROR" => Self::Internal,
            _ => return None,
        };
        Some(code)
    }

    pub fn http_status(self) -> http::StatusCode {
        use http::StatusCode;
        match self {
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::BadRequest => StatusCode::BAD_REQUEST,
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::Forbidden => StatusCode::FORBIDDEN,
            Self::Conflict => StatusCode::CONFLICT,
            Self::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            Self::Timeout => StatusCode::REQUEST_TIMEOUT,
            Self::ResourceLimit => StatusCode::TOO_MANY_REQUESTS,
            Self::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn grpc_code(self) -> tonic::Code {
        use tonic::Code;
        match self {
            Self::NotFound => Code::NotFound,
            Self::BadRequest => Code::InvalidArgument,
            Self::Unauthorized => Code::Unauthenticated,
            Self::Forbidden => Code::PermissionDenied,
            Self::Conflict => Code::FailedPrecondition,
            Self::Unavailable => Code::Unavailable,
            Self::Timeout => Code::DeadlineExceeded,
            Self::ResourceLimit => Code::ResourceExhausted,
            Self::Internal => Code::Internal,
        }
    }
}

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
        let mut status = tonic::Status::new(err.code.grpc_code(), err.message);
        if let Ok(value) = err.code.as_str().parse() {
            status.metadata_mut().insert("berth-error-code", value);
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
    fn codes_map_to_matching_http_and_grpc_statuses() {
        assert_eq!(ErrorCode::NotFound.http_status(), 404);
        assert_eq!(ErrorCode::NotFound.grpc_code(), tonic::Code::NotFound);
        assert_eq!(ErrorCode::Timeout.http_status(), 408);
        assert_eq!(ErrorCode::ResourceLimit.http_status(), 429);
        assert_eq!(ErrorCode::Unavailable.grpc_code(), tonic::Code::Unavailable);
        assert_eq!(ErrorCode::Internal.as_str(), "INTERNAL_ERROR");
    }

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
