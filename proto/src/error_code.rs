//! The error vocabulary both sides of every Berth connection share: a small code enum
//! that knows its HTTP status and its gRPC code, and the metadata keys a worker's
//! status carries so the control plane reads the code back instead of guessing it.
//!
//! A worker answers a failed call with [`coded_status`]; the control plane reads the
//! answer with [`ErrorCode::of_status`] and [`is_route_refusal`]. The public API's
//! statuses carry the same key, so a gRPC client can tell `CONFLICT` from
//! `BAD_REQUEST` without parsing messages.

use tonic::metadata::MetadataValue;
use tonic::{Code, Status};

/// Metadata key whose value is an [`ErrorCode::as_str`] name.
pub const ERROR_CODE_KEY: &str = "berth-error-code";
/// Set on a worker's refusal that says the caller's route is wrong: the worker does
/// not hold the sandbox, or the caller's lease generation is stale. A control plane
/// routing from a cached route then asks its store where the sandbox is.
pub const ROUTE_REFUSED_KEY: &str = "berth-route-refused";
/// Set on the refusal of a create that recorded a sandbox before failing failing (it is left
/// in state `error`): the sandbox's id.
pub const SANDBOX_ID_KEY: &str = "berth-sandbox-id";

/// Machine-readable error codes; the HTTP body's `code` (StacyVM-compatible names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    NotFound,
    BadRequest,
    Unauthorized,
    Forbidden,
    Conflict,
    Unavailable,
    Timeout,
    ResourceLimit,
    /// The path exists but not with this method (HTTP 405, with `Allow`).
    MethodNotAllowed,
    /// The control plane's store has no room left (a full disk): 507.
    InsufficientStorage,
    /// Nothing inside the sandbox accepts connections on the port asked for (HTTP 502).
    BadGateway,
    Internal,
}

impl ErrorCode {
    pub const ALL: [Self; 12] = [
        Self::NotFound,
        Self::BadRequest,
        Self::Unauthorized,
        Self::Forbidden,
        Self::Conflict,
        Self::Unavailable,
        Self::Timeout,
        Self::ResourceLimit,
        Self::MethodNotAllowed,
        Self::InsufficientStorage,
        Self::BadGateway,
        Self::Internal,
    ];

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
            Self::MethodNotAllowed => "METHOD_NOT_ALLOWED",
            Self::InsufficientStorage => "INSUFFICIENT_STORAGE",
            Self::BadGateway => "BAD_GATEWAY",
            Self::Internal => "INTERNAL_ERROR",
        }
    }

    /// The code an [`Self::as_str`] name stands for.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|code| code.as_str() == name)
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
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::InsufficientStorage => StatusCode::INSUFFICIENT_STORAGE,
            Self::BadGateway => StatusCode::BAD_GATEWAY,
            Self::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn grpc_code(self) -> Code {
        match self {
            Self::NotFound => Code::NotFound,
            Self::BadRequest => Code::InvalidArgument,
            Self::Unauthorized => Code::Unauthenticated,
            Self::Forbidden => Code::PermissionDenied,
            Self::Conflict => Code::FailedPrecondition,
            Self::Unavailable => Code::Unavailable,
            Self::Timeout => Code::DeadlineExceeded,
            Self::ResourceLimit => Code::ResourceExhausted,
            Self::MethodNotAllowed => Code::Unimplemented,
            // gRPC's own example of RESOURCE_EXHAUSTED: "the entire file system is out
            // of space"
            Self::InsufficientStorage => Code::ResourceExhausted,
            Self::BadGateway => Code::Unavailable,
            Self::Internal => Code::Internal,
        }
    }

    /// The code a status names in its [`ERROR_CODE_KEY`] metadata, if any.
    pub fn of_status(status: &Status) -> Option<Self> {
        status
            .metadata()
            .get(ERROR_CODE_KEY)
            .and_then(|value| value.to_str().ok())
            .and_then(Self::from_name)
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A status with `code`'s gRPC code and its name in [`ERROR_CODE_KEY`].
pub fn coded_status(code: ErrorCode, message: impl Into<String>) -> Status {
    coded_status_with(code.grpc_code(), code, message)
}

/// Like [`coded_status`] with a gRPC code other than `code`'s own (a worker answers
/// an existing sandbox with `ALREADY_EXISTS` and the API code `CONFLICT`).
pub fn coded_status_with(grpc: Code, code: ErrorCode, message: impl Into<String>) -> Status {
    let mut status = Status::new(grpc, message);
    status
        .metadata_mut()
        .insert(ERROR_CODE_KEY, MetadataValue::from_static(code.as_str()));
    status
}

/// Marks `status` as a refusal of the caller's route (see [`ROUTE_REFUSED_KEY`]).
pub fn refuse_route(mut status: Status) -> Status {
    status
        .metadata_mut()
        .insert(ROUTE_REFUSED_KEY, MetadataValue::from_static("1"));
    status
}

/// Whether `status` refuses the caller's route (see [`ROUTE_REFUSED_KEY`]).
pub fn is_route_refusal(status: &Status) -> bool {
    status.metadata().contains_key(ROUTE_REFUSED_KEY)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_reads_back_as_its_code() {
        for code in ErrorCode::ALL {
            assert_eq!(ErrorCode::from_name(code.as_str()), Some(code));
        }
        assert_eq!(ErrorCode::from_name("NOPE"), None);
    }

    #[test]
    fn codes_map_to_matching_http_and_grpc_statuses() {
        assert_eq!(ErrorCode::NotFound.http_status(), 404);
        assert_eq!(ErrorCode::NotFound.grpc_code(), Code::NotFound);
        assert_eq!(ErrorCode::Timeout.http_status(), 408);
        assert_eq!(ErrorCode::ResourceLimit.http_status(), 429);
        assert_eq!(ErrorCode::MethodNotAllowed.http_status(), 405);
        assert_eq!(ErrorCode::MethodNotAllowed.grpc_code(), Code::Unimplemented);
        assert_eq!(ErrorCode::InsufficientStorage.http_status(), 507);
        assert_eq!(
            ErrorCode::InsufficientStorage.grpc_code(),
            Code::ResourceExhausted
        );
        assert_eq!(ErrorCode::Unavailable.grpc_code(), Code::Unavailable);
        assert_eq!(ErrorCode::BadGateway.http_status(), 502);
        assert_eq!(ErrorCode::Internal.as_str(), "INTERNAL_ERROR");
    }

    #[test]
    fn a_coded_status_names_its_code_and_a_refusal_says_so() {
        let status = coded_status_with(Code::AlreadyExists, ErrorCode::Conflict, "taken");
        assert_eq!(status.code(), Code::AlreadyExists);
        assert_eq!(ErrorCode::of_status(&status), Some(ErrorCode::Conflict));
        assert!(!is_route_refusal(&status));
        assert!(is_route_refusal(&refuse_route(status)));
        assert_eq!(ErrorCode::of_status(&Status::internal("x")), None);
    }
}
