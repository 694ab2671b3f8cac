//! The worker client: the one place the control plane talks to workers. Ask it for
//! "worker X" and get a [`WorkerClient`] whose calls take and return domain types
//! ([`model`]) with errors already mapped ([`RemoteError`]); nothing above this module
//! sees a mesh protobuf or a gRPC status.
//!
//! Channels are dialed from the worker's advertised address with the control plane's
//! identity and must reach exactly `spiffe://<td>/worker/<id>`; they are cached per
//! worker and reconnect on their own. A later mode can hand out a connection the
//! worker opened. Beside the channels it keeps [`Routes`]: which worker held a
//! sandbox's lease when this control plane last looked.

mod client;
mod error;
pub mod model;
mod routes;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use berth_pki::transport::{DialOptions, mesh_channel};
use berth_proto::ErrorCode;
use tonic::transport::Channel;

use crate::authority::Authority;

pub use client::{ExecEvents, FileChunks, LogLines, WorkerClient, WriteFileError};
pub use error::RemoteError;
pub use routes::{ROUTE_TTL, Route, Routes};

/// Channels to the fleet's workers, and the routes of recent calls.
#[derive(Debug)]
pub struct Workers {
    authority: Arc<Authority>,
    /// worker id -> (address dialed, channel)
    channels: Mutex<HashMap<String, (String, Channel)>>,
    routes: Routes,
}

impl Workers {
    pub fn new(authority: Arc<Authority>) -> Self {
        Self {
            authority,
            channels: Mutex::new(HashMap::new()),
            routes: Routes::default(),
        }
    }

    /// Where running sandboxes were last seen.
    pub fn routes(&self) -> &Routes {
        &self.routes
    }

    /// A client of worker `worker_id`, which listens on `address`.
    pub fn client(&self, worker_id: &str, address: &str) -> Result<WorkerClient, RemoteError> {
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
        self.routes.forget_worker(worker_id);
    }
}
