//! The worker client: the one place the control plane talks to workers. Ask it for
//! "worker X" and get a [`WorkerClient`] whose calls take and return domain types
//! ([`model`]) with errors already mapped ([`RemoteError`]); nothing above this module
//! sees a mesh protobuf or a gRPC status.
//!
//! Two ways to a worker. A worker that dialed out (it advertises no address) is called
//! over the connection it opened to this control plane ([`Dialed`], filled by the mesh
//! port). A worker that listens is dialed at its advertised address with the control
//! plane's identity and must be exactly `spiffe://<td>/worker/<id>`; those channels are
//! cached per worker and reconnect on their own. Beside the channels it keeps
//! [`Routes`]: which worker held a sandbox's lease when this control plane last looked.

mod client;
mod dialed;
mod error;
pub mod model;
mod routes;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use berth_pki::transport::{DialOptions, mesh_channel};
use berth_proto::ErrorCode;
use tonic::transport::Channel;

use crate::authority::Authority;

pub use client::{
    ExecEvents, FileChunks, LogLines, PortConnection, PortIo, SessionEvents, SessionStream,
    WorkerClient, WriteFileError,
};
pub use dialed::{Dialed, Registered};
pub use error::RemoteError;
pub use routes::{ROUTE_TTL, Route, Routes};

/// Channels to the fleet's workers, and the routes of recent calls.
#[derive(Debug)]
pub struct Workers {
    authority: Arc<Authority>,
    /// worker id -> (address dialed, channel)
    channels: Mutex<HashMap<String, (String, Channel)>>,
    /// Connections dial-out workers opened to this control plane.
    dialed: Dialed,
    routes: Routes,
}

impl Workers {
    pub fn new(authority: Arc<Authority>) -> Self {
        Self {
            authority,
            channels: Mutex::new(HashMap::new()),
            dialed: Dialed::default(),
            routes: Routes::default(),
        }
    }

    /// Where running sandboxes were last seen.
    pub fn routes(&self) -> &Routes {
        &self.routes
    }

    /// The connections of dial-out workers.
    pub fn dialed(&self) -> &Dialed {
        &self.dialed
    }

    /// A client of worker `worker_id`: over the connection it opened to this control
    /// plane if it has one, else dialed at `address` (empty: the worker only dials out).
    pub fn client(&self, worker_id: &str, address: &str) -> Result<WorkerClient, RemoteError> {
        if let Some(channel) = self.dialed.channel(worker_id) {
            return Ok(WorkerClient::new(worker_id, channel));
        }
        if address.is_empty() {
            return Err(RemoteError {
                unreachable: true,
                ..RemoteError::new(
                    worker_id,
                    ErrorCode::Unavailable,
                    format!(
                        "worker {worker_id:?} dials out and has no connection to this control plane right now; retry shortly"
                    ),
                )
            });
        }
        let mut channels = self.channels.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((dialed, channel)) = channels.get(worker_id)
            && dialed == address
        {
            return Ok(WorkerClient::new(worker_id, channel.clone()));
        }
        let tls = self
            .authority
            .worker_client_config(worker_id)
            .map_err(|err| RemoteError::internal(worker_id, &err))?;
        let channel =
            mesh_channel(address, Arc::new(tls), DialOptions::default()).map_err(|err| {
                RemoteError::new(
                    worker_id,
                    ErrorCode::Unavailable,
                    format!("worker {worker_id:?} has an unusable address: {err}"),
                )
            })?;
        channels.insert(worker_id.to_owned(), (address.to_owned(), channel.clone()));
        Ok(WorkerClient::new(worker_id, channel))
    }

    /// Drops the cached channel to a worker (it was revoked), and every route through
    /// it; in-flight calls end.
    pub fn forget(&self, worker_id: &str) {
        let mut channels = self.channels.lock().unwrap_or_else(|e| e.into_inner());
        channels.remove(worker_id);
        drop(channels);
        self.dialed.close(worker_id);
        self.routes.forget_worker(worker_id);
    }
}
