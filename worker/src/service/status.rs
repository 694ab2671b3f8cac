//! The one mapping of worker-side errors to gRPC statuses. Each status also carries a
//! `berth-error-code` trailer with the API error code, so the control plane passes the
//! right code on to clients.

use tonic::{Code, Status};

use crate::fencing::FenceError;
use crate::provider::ProviderError;

pub const ERROR_CODE_KEY: &str = "berth-error-code";
/// Set on a refusal that says the caller's route is wrong: this worker does not hold
/// the sandbox, or the caller's lease generation is stale. A control plane routing
/// from a cached route then asks its store where the sandbox is.
pub const ROUTE_REFUSED_KEY: &str = "berth-route-refused";

pub(crate) fn coded(code: Code, api_code: &'static str, message: String) -> Status {
    let mut status = Status::new(code, message);
    status.metadata_mut().insert(
        ERROR_CODE_KEY,
        tonic::metadata::MetadataValue::from_static(api_code),
    );
    status
}

/// (gRPC code, API code) of a provider error.
pub fn provider_codes(err: &ProviderError) -> (Code, &'static str) {
    match err {
        ProviderError::SandboxNotFound(_) | ProviderError::FileNotFound(_) => {
            (Code::NotFound, "NOT_FOUND")
        }
        ProviderError::SandboxExists(_) | ProviderError::FileExists(_) => {
            (Code::AlreadyExists, "CONFLICT")
        }
        ProviderError::IsADirectory(_)
        | ProviderError::NotADirectory(_)
        | ProviderError::DirectoryNotEmpty(_)
        | ProviderError::InvalidPath { .. }
        | ProviderError::InvalidArgument(_) => (Code::InvalidArgument, "BAD_REQUEST"),
        ProviderError::Timeout(_) => (Code::DeadlineExceeded, "TIMEOUT"),
        ProviderError::Unavailable(_) => (Code::Unavailable, "UNAVAILABLE"),
        ProviderError::Internal(_) => (Code::Internal, "INTERNAL_ERROR"),
    }
}

pub(crate) fn from_provider(err: ProviderError) -> Status {
    let (code, api_code) = provider_codes(&err);
    if code == Code::Internal {
        tracing::error!(error = %err, "provider failed");
    }
    let route_refused = matches!(err, ProviderError::SandboxNotFound(_));
    let status = coded(code, api_code, err.to_string());
    if route_refused {
        return refused_route(status);
    }
    status
}

fn refused_route(mut status: Status) -> Status {
    status.metadata_mut().insert(
        ROUTE_REFUSED_KEY,
        tonic::metadata::MetadataValue::from_static("1"),
    );
    status
}

pub(crate) fn from_fence(err: FenceError) -> Status {
    match err {
        FenceError::Missing => coded(Code::InvalidArgument, "BAD_REQUEST", err.to_string()),
        FenceError::Stale { .. } => {
            refused_route(coded(Code::FailedPrecondition, "CONFLICT", err.to_string()))
        }
    }
}

pub(crate) fn bad_request(message: impl Into<String>) -> Status {
    coded(Code::InvalidArgument, "BAD_REQUEST", message.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn provider_errors_keep_their_meaning() {
        let status = from_provider(ProviderError::SandboxNotFound("x".into()));
        assert_eq!(status.code(), Code::NotFound);
        assert_eq!(status.metadata().get(ERROR_CODE_KEY).unwrap(), "NOT_FOUND");
        let status = from_provider(ProviderError::Timeout(std::time::Duration::from_secs(1)));
        assert_eq!(status.code(), Code::DeadlineExceeded);
        let status = from_fence(FenceError::Stale {
            sandbox_id: "a".into(),
            presented: 1,
            seen: 2,
        });
        assert_eq!(status.code(), Code::FailedPrecondition);
        assert!(status.message().contains("stale lease generation"));
        assert!(status.metadata().contains_key(ROUTE_REFUSED_KEY));
    }

    #[test]
    fn only_a_wrong_route_is_a_route_refusal() {
        let refused = from_provider(ProviderError::SandboxNotFound("x".into()));
        assert!(refused.metadata().contains_key(ROUTE_REFUSED_KEY));
        let missing_file = from_provider(ProviderError::FileNotFound("/a".into()));
        assert_eq!(missing_file.code(), Code::NotFound);
        assert!(!missing_file.metadata().contains_key(ROUTE_REFUSED_KEY));
    }
}
