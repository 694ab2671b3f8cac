//! Berth's wire vocabulary: the gRPC contracts of the worker mesh (`ControlPlane`,
//! `WorkerService`) and the public API (`Sandboxes`, `Admin`), generated from
//! `berth/v1/*.proto` at build time; the [`error_code`]s and metadata keys every
//! status carries; the [`shell`] quoting both sides of an exec agree on; the server's half of a
//! [`port_stream`]; the size of
//! the mesh's largest message, which bounds a whole exec's output; and the encoded
//! descriptor set server reflection answers from.

pub mod error_code;
pub mod port_stream;
pub mod shell;

pub use error_code::ErrorCode;

/// Largest message the control plane decodes from a worker; a whole exec's answer,
/// carrying its collected output, is the one that can grow.
pub const MAX_MESH_MESSAGE: usize = 64 << 20;

/// Most output (stdout and stderr together) a whole exec may collect: what fits one
/// mesh message with room to spare for the rest of the answer.
pub const MAX_EXEC_OUTPUT: usize = MAX_MESH_MESSAGE - (64 << 10);

/// The encoded `FileDescriptorSet` of `berth/v1/*.proto` (with their imports), for
/// gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/berth_descriptor.bin"));

#[allow(clippy::all, clippy::pedantic)]
pub mod v1 {
    tonic::include_proto!("berth.v1");
}
