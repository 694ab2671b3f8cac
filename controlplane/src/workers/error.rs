//! The one place a worker's gRPC status becomes a domain error: the [`ErrorCode`] it
//! named in its metadata, or one derived from the gRPC code; transport failures mean
//! the worker is unreachable, whatever code the transport picked (a connection closed
//! by `GOAWAY(ENHANCE_YOUR_CALM)` comes back as `RESOURCE_EXHAUSTED`, a stream reset
//! with `INTERNAL_ERROR` as `INTERNAL`). Internal details stay in the log, never in the
//! answer.

use berth_proto::ErrorCode;
use berth_proto::error_code::is_route_refusal;
use tonic::Code;

/// A worker call that failed: refused by the worker, or never answered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct RemoteError {
    pub worker_id: String,
    pub code: ErrorCode,
    /// Safe to show a client.
    pub message: String,
    /// The worker said the caller's route is wrong: it does not hold the sandbox, or
    /// holds it under a newer lease generation.
    pub route_refused: bool,
    /// The call did not get through (connection refused or broken, call cancelled).
    pub unreachable: bool,
    /// The call never reached the worker: the connection to it was refused, so the
    /// worker did nothing and the call may be made again elsewhere.
    pub not_sent: bool,
}

impl RemoteError {
    pub fn new(worker_id: &str, code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            worker_id: worker_id.to_owned(),
            code,
            message: message.into(),
            route_refused: false,
            unreachable: false,
            not_sent: false,
        }
    }

    /// Logs `detail` in full and carries a plain message.
    pub fn internal(worker_id: &str, detail: &dyn std::fmt::Display) -> Self {
        tracing::error!(%worker_id, error = %detail, "internal error calling a worker");
        Self::new(worker_id, ErrorCode::Internal, "internal error")
    }

    /// Whether a route that led to this error should be dropped before the next call.
    pub fn discredits_route(&self) -> bool {
        self.route_refused || self.unreachable
    }

    /// Worker `worker_id`'s answer `status` as our error.
    pub fn from_status(worker_id: &str, status: &tonic::Status) -> Self {
        let route_refused = is_route_refusal(status);
        let unreachable = matches!(
            status.code(),
            Code::Unavailable | Code::Unknown | Code::Cancelled
        ) || is_transport_failure(status);
        let (code, message) = match ErrorCode::of_status(status) {
            Some(ErrorCode::Internal) => {
                tracing::error!(%worker_id, error = %status.message(), "worker failed");
                (
                    ErrorCode::Internal,
                    "internal error on the worker".to_owned(),
                )
            }
            Some(code) => (code, status.message().to_owned()),
            None => derived(worker_id, status),
        };
        Self {
            worker_id: worker_id.to_owned(),
            code,
            message,
            route_refused,
            unreachable,
            not_sent: is_connection_refused(status),
        }
    }
}

/// Whether `status` says the connection to the worker was refused (an I/O error of
/// that kind among its sources): nothing of the call was sent.
fn is_connection_refused(status: &tonic::Status) -> bool {
    use std::error::Error as _;
    let mut cause = status.source();
    while let Some(err) = cause {
        if let Some(io) = err.downcast_ref::<std::io::Error>()
            && io.kind() == std::io::ErrorKind::ConnectionRefused
        {
            return true;
        }
        cause = err.source();
    }
    false
}

/// Whether `status` was made on our side from a transport failure (the connection was
/// refused, reset, or closed by a `GOAWAY`) rather than answered by the worker: tonic
/// gives those a source error (h2, hyper, its own transport error); a status decoded
/// from the worker's trailers has none. A deadline that expired is not one.
pub(super) fn is_transport_failure(status: &tonic::Status) -> bool {
    use std::error::Error as _;
    let Some(source) = status.source() else {
        return false;
    };
    let mut cause = Some(source);
    while let Some(err) = cause {
        if err.is::<tonic::TimeoutExpired>() {
            return false;
        }
        cause = err.source();
    }
    true
}

/// The code of a status that names none (it did not come from our worker service:
/// a transport failure, a deadline, a proxy).
fn derived(worker_id: &str, status: &tonic::Status) -> (ErrorCode, String) {
    if is_transport_failure(status) && !matches!(status.code(), Code::DeadlineExceeded) {
        tracing::warn!(%worker_id, ?status, "worker call failed in the transport");
        return (
            ErrorCode::Unavailable,
            format!(
                "worker {worker_id:?} is unreachable: the connection failed ({})",
                status.message()
            ),
        );
    }
    match status.code() {
        Code::NotFound => (ErrorCode::NotFound, status.message().to_owned()),
        // OUT_OF_RANGE: a session's offset past the end of its output
        Code::InvalidArgument | Code::OutOfRange => {
            (ErrorCode::BadRequest, status.message().to_owned())
        }
        Code::ResourceExhausted => (ErrorCode::ResourceLimit, status.message().to_owned()),
        Code::DeadlineExceeded => (
            ErrorCode::Timeout,
            format!("worker {worker_id:?} did not answer in time"),
        ),
        Code::FailedPrecondition | Code::AlreadyExists => {
            (ErrorCode::Conflict, status.message().to_owned())
        }
        Code::Unavailable | Code::Unknown | Code::Cancelled => (
            ErrorCode::Unavailable,
            format!("worker {worker_id:?} is unreachable: {}", status.message()),
        ),
        _ => {
            tracing::error!(%worker_id, ?status, "unexpected answer from worker");
            (ErrorCode::Internal, "internal error".to_owned())
        }
    }
}

#[cfg(test)]
mod tests {
    use berth_proto::error_code::{coded_status_with, refuse_route};

    use super::*;

    fn coded(code: Code, name: &'static str) -> tonic::Status {
        coded_status_with(code, ErrorCode::from_name(name).unwrap(), "detail")
    }

    #[test]
    fn a_named_code_from_the_worker_wins() {
        let err = RemoteError::from_status("w1", &coded(Code::FailedPrecondition, "CONFLICT"));
        assert_eq!(err.code, ErrorCode::Conflict);
        assert_eq!(err.message, "detail");
        let err = RemoteError::from_status("w1", &coded(Code::DeadlineExceeded, "TIMEOUT"));
        assert_eq!(err.code.http_status(), 408);
    }

    #[test]
    fn internal_details_stay_on_the_server() {
        let err = RemoteError::from_status("w1", &coded(Code::Internal, "INTERNAL_ERROR"));
        assert_eq!(err.code, ErrorCode::Internal);
        assert!(!err.message.contains("detail"));
    }

    #[test]
    fn transport_failures_mean_the_worker_is_unreachable() {
        let err = RemoteError::from_status("w1", &tonic::Status::unavailable("connection refused"));
        assert_eq!(err.code, ErrorCode::Unavailable);
        assert!(err.message.contains("w1"));
        assert!(err.discredits_route());
        let err = RemoteError::from_status("w1", &tonic::Status::not_found("gone"));
        assert_eq!(err.code, ErrorCode::NotFound);
        assert!(!err.discredits_route());
        let err = RemoteError::from_status("w1", &tonic::Status::deadline_exceeded("slow"));
        assert_eq!(err.code, ErrorCode::Timeout);
    }

    #[test]
    fn session_refusals_without_a_named_code_keep_their_meaning() {
        let err = RemoteError::from_status("w1", &tonic::Status::out_of_range("offset 99"));
        assert_eq!(err.code, ErrorCode::BadRequest);
        assert_eq!(err.message, "offset 99");
        let err = RemoteError::from_status("w1", &tonic::Status::resource_exhausted("full"));
        assert_eq!(err.code, ErrorCode::ResourceLimit);
        let err = RemoteError::from_status("w1", &tonic::Status::failed_precondition("attached"));
        assert_eq!(err.code, ErrorCode::Conflict);
    }

    /// A status tonic made from a transport failure, with `code`.
    fn transport_failure(code: Code, message: &str) -> tonic::Status {
        let mut status = tonic::Status::new(code, message);
        status.set_source(std::sync::Arc::new(std::io::Error::other(
            "GoAway(too_many_internal_resets, ENHANCE_YOUR_CALM)",
        )));
        status
    }

    #[test]
    fn a_transport_failure_is_unavailable_whatever_its_code() {
        for code in [Code::ResourceExhausted, Code::Internal, Code::Unknown] {
            let status = transport_failure(code, "h2 protocol error: http2 error");
            assert!(is_transport_failure(&status));
            let err = RemoteError::from_status("w7", &status);
            assert_eq!(err.code, ErrorCode::Unavailable, "{code:?}");
            assert_eq!(err.code.http_status(), 503);
            assert!(err.message.contains("\"w7\""), "{}", err.message);
            assert!(err.unreachable);
        }
        // the same codes answered by a worker (no source) keep their meaning
        let answered = RemoteError::from_status("w7", &tonic::Status::internal("boom"));
        assert_eq!(answered.code, ErrorCode::Internal);
        assert!(!is_transport_failure(&tonic::Status::resource_exhausted(
            "full"
        )));
    }

    #[test]
    fn a_refused_connection_sent_nothing() {
        let mut status = tonic::Status::unavailable("connect error");
        status.set_source(std::sync::Arc::new(std::io::Error::from(
            std::io::ErrorKind::ConnectionRefused,
        )));
        let err = RemoteError::from_status("w1", &status);
        assert!(err.not_sent && err.unreachable);
        let broken = transport_failure(Code::Unavailable, "connection reset");
        assert!(!RemoteError::from_status("w1", &broken).not_sent);
    }

    #[test]
    fn an_expired_deadline_is_not_a_transport_failure() {
        let mut status = tonic::Status::cancelled("Timeout expired");
        status.set_source(std::sync::Arc::new(tonic::TimeoutExpired(())));
        assert!(!is_transport_failure(&status));
    }

    #[test]
    fn a_refused_route_is_noted() {
        let status = refuse_route(coded(Code::NotFound, "NOT_FOUND"));
        let err = RemoteError::from_status("w1", &status);
        assert_eq!(err.code, ErrorCode::NotFound);
        assert!(err.route_refused);
        assert!(err.discredits_route());
    }
}
