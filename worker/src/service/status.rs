//! The one mapping of worker-side errors to gRPC statuses. Each status also carries the
//! API [`ErrorCode`] in its metadata (`berth_proto::error_code`), so the control plane
//! passes the right code on to clients instead of guessing from the gRPC code.

use berth_proto::ErrorCode;
use berth_proto::error_code::{coded_status, coded_status_with, refuse_route};
use tonic::{Code, Status};

use crate::fencing::FenceError;
use crate::provider::ProviderError;
use crate::sessions::SessionError;

/// (gRPC code, API code) of a provider error.
pub fn provider_codes(err: &ProviderError) -> (Code, ErrorCode) {
    match err {
        ProviderError::SandboxNotFound(_) | ProviderError::FileNotFound(_) => {
            (Code::NotFound, ErrorCode::NotFound)
        }
        ProviderError::SandboxExists(_) | ProviderError::FileExists(_) => {
            (Code::AlreadyExists, ErrorCode::Conflict)
        }
        ProviderError::IsADirectory(_)
        | ProviderError::NotADirectory(_)
        | ProviderError::DirectoryNotEmpty(_)
        | ProviderError::InvalidPath { .. }
        | ProviderError::InvalidArgument(_)
        | ProviderError::BuildFailed(_)
        | ProviderError::ImageUnavailable { .. } => (Code::InvalidArgument, ErrorCode::BadRequest),
        ProviderError::Timeout(_) => (Code::DeadlineExceeded, ErrorCode::Timeout),
        ProviderError::Stopped(_) => (Code::FailedPrecondition, ErrorCode::Conflict),
        // not UNAVAILABLE on the mesh: that would say the worker itself is unreachable
        ProviderError::PortClosed { .. } => (Code::FailedPrecondition, ErrorCode::BadGateway),
        ProviderError::Unavailable(_) => (Code::Unavailable, ErrorCode::Unavailable),
        ProviderError::Internal(_) => (Code::Internal, ErrorCode::Internal),
    }
}

pub(crate) fn from_provider(err: ProviderError) -> Status {
    let (code, api_code) = provider_codes(&err);
    if code == Code::Internal {
        tracing::error!(error = %err, "provider failed");
    }
    let route_refused = matches!(err, ProviderError::SandboxNotFound(_));
    let status = coded_status_with(code, api_code, err.to_string());
    if route_refused {
        return refuse_route(status);
    }
    status
}

pub(crate) fn from_fence(err: FenceError) -> Status {
    match err {
        FenceError::Missing => coded_status(ErrorCode::BadRequest, err.to_string()),
        FenceError::Stale { .. } => {
            refuse_route(coded_status(ErrorCode::Conflict, err.to_string()))
        }
    }
}

pub(crate) fn from_session(err: SessionError) -> Status {
    let code = match err {
        SessionError::Provider(err) => return from_provider(err),
        SessionError::NotFound(_) => ErrorCode::NotFound,
        SessionError::OffsetBeyondEnd { .. } | SessionError::StdinClosed => ErrorCode::BadRequest,
        SessionError::Attached(_) | SessionError::NotAttached | SessionError::Ended(_) => {
            ErrorCode::Conflict
        }
        SessionError::TooMany(_) => ErrorCode::ResourceLimit,
    };
    let grpc = match err {
        SessionError::OffsetBeyondEnd { .. } => Code::OutOfRange,
        SessionError::Attached(_) | SessionError::NotAttached | SessionError::Ended(_) => {
            Code::FailedPrecondition
        }
        _ => code.grpc_code(),
    };
    coded_status_with(grpc, code, err.to_string())
}

pub(crate) fn bad_request(message: impl Into<String>) -> Status {
    coded_status(ErrorCode::BadRequest, message)
}

#[cfg(test)]
mod tests {
    use berth_proto::error_code::is_route_refusal;

    use super::*;

    #[test]
    fn provider_errors_keep_their_meaning() {
        let status = from_provider(ProviderError::SandboxNotFound("x".into()));
        assert_eq!(status.code(), Code::NotFound);
        assert_eq!(ErrorCode::of_status(&status), Some(ErrorCode::NotFound));
        let status = from_provider(ProviderError::Timeout(std::time::Duration::from_secs(1)));
        assert_eq!(status.code(), Code::DeadlineExceeded);
        let status = from_provider(ProviderError::ImageUnavailable {
            image: "alpine:latest".into(),
            worker_id: "w1".into(),
            reason: "no registry".into(),
        });
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(ErrorCode::of_status(&status), Some(ErrorCode::BadRequest));
        assert!(
            status
                .message()
                .starts_with("image \"alpine:latest\" is not on worker w1's docker engine"),
            "{status:?}"
        );
        let status = from_fence(FenceError::Stale {
            sandbox_id: "a".into(),
            presented: 1,
            seen: 2,
        });
        assert_eq!(status.code(), Code::FailedPrecondition);
        assert!(status.message().contains("stale lease generation"));
        assert!(is_route_refusal(&status));
    }

    #[test]
    fn only_a_wrong_route_is_a_route_refusal() {
        let refused = from_provider(ProviderError::SandboxNotFound("x".into()));
        assert!(is_route_refusal(&refused));
        let missing_file = from_provider(ProviderError::FileNotFound("/a".into()));
        assert_eq!(missing_file.code(), Code::NotFound);
        assert!(!is_route_refusal(&missing_file));
    }
}
