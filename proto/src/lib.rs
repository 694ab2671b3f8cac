//! Berth's gRPC contracts: the worker mesh (`ControlPlane`, `WorkerService`) and the
//! public API (`Sandboxes`, `Admin`), generated from `berth/v1/*.proto` at build time.

#![allow(clippy::all, clippy::pedantic)]

pub mod v1 {
    tonic::include_proto!("berth.v1");
}
