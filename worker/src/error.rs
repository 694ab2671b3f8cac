//! What can stop a worker from starting or staying in the mesh.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("invalid worker config: {0}")]
    Config(String),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Pki(#[from] berth_pki::PkiError),
    #[error(transparent)]
    Token(#[from] berth_pki::TokenError),
    #[error(
        "no stored identity in {0} and no join token given (--join-token or --join-token-file)"
    )]
    NoCredential(PathBuf),
    #[error("cannot reach any control plane: {0}")]
    Unreachable(String),
    #[error("enrollment refused by the control plane: {0}")]
    EnrollmentRefused(String),
    #[error("the control plane answered with an unusable enrollment: {0}")]
    BadEnrollment(String),
    #[error("{0}")]
    Transport(#[from] berth_pki::transport::DialError),
    #[error("serving the worker service failed: {0}")]
    Serve(#[from] tonic::transport::Error),
}

impl WorkerError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }
}
