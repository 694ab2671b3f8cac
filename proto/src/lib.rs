//! Berth's wire vocabulary: the gRPC contracts of the worker mesh (`ControlPlane`,
//! `WorkerService`) and the public API (`Sandboxes`, `Admin`), generated from
//! `berth/v1/*.proto` at build time; the [`error_code`]s and metadata keys every
//! status carries; and the [`shell`] quoting both sides of an exec agree on.

pub mod error_code;
pub mod shell;

pub use error_code::ErrorCode;

#[allow(clippy::all, clippy::pedantic)]
pub mod v1 {
    tonic::include_proto!("berth.v1");
}
