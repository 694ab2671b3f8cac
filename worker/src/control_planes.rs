//! The control planes a running worker talks to: one lazily connecting client per
//! configured URL, over mTLS as the worker itself, in the configured order. The
//! heartbeat loop sticks to one and moves to the next when it fails; one-off calls (a
//! drain's heartbeat, a certificate renewal) try each in turn until one answers.
//!
//! Enrollment does not come through here: it runs before the worker has an identity,
//! over its own bootstrap connections (`enroll`).

use std::future::Future;
use std::sync::Arc;

use berth_pki::transport::{DialOptions, mesh_channel};
use berth_proto::v1::control_plane_client::ControlPlaneClient;
use tonic::transport::Channel;
use tonic::{Response, Status};

use crate::WorkerError;

pub(crate) type Client = ControlPlaneClient<Channel>;

/// The configured control planes, in order; never empty (the config requires one).
#[derive(Debug)]
pub(crate) struct ControlPlanes {
    planes: Vec<ControlPlane>,
}

/// One control plane: where it is and a client for it (cheap to clone).
#[derive(Debug, Clone)]
pub(crate) struct ControlPlane {
    pub url: String,
    pub client: Client,
}

/// A call a control plane refused or never answered.
#[derive(Debug, thiserror::Error)]
#[error("{url}: {}", status_detail(.status))]
pub(crate) struct CallFailure {
    pub url: String,
    pub status: Status,
}

impl ControlPlanes {
    /// A client per URL; none connects before its first call.
    pub fn connect(urls: &[String], tls: Arc<rustls::ClientConfig>) -> Result<Self, WorkerError> {
        let mut planes = Vec::with_capacity(urls.len());
        for url in urls {
            let channel = mesh_channel(url, tls.clone(), DialOptions::default())?;
            planes.push(ControlPlane {
                url: url.clone(),
                client: ControlPlaneClient::new(channel),
            });
        }
        Ok(Self { planes })
    }

    /// The control plane at `index` (wrapping around).
    pub fn get(&self, index: usize) -> &ControlPlane {
        &self.planes[index % self.planes.len()]
    }

    /// The index of the control plane after `index`, wrapping around.
    pub fn next(&self, index: usize) -> usize {
        (index + 1) % self.planes.len()
    }

    /// Makes `call` on each control plane in turn until one answers; otherwise every
    /// failure, in the order they happened.
    pub async fn call_in_turn<T, F, Fut>(&self, mut call: F) -> Result<T, Vec<CallFailure>>
    where
        F: FnMut(Client) -> Fut,
        Fut: Future<Output = Result<Response<T>, Status>>,
    {
        let mut failures = Vec::new();
        for plane in &self.planes {
            match call(plane.client.clone()).await {
                Ok(response) => return Ok(response.into_inner()),
                Err(status) => failures.push(CallFailure {
                    url: plane.url.clone(),
                    status,
                }),
            }
        }
        Err(failures)
    }
}

/// A status message with its transport causes (TLS errors hide in the source chain).
pub(crate) fn status_detail(status: &Status) -> String {
    let mut detail = status.message().to_owned();
    let mut source = std::error::Error::source(status);
    while let Some(err) = source {
        let text = err.to_string();
        if !detail.contains(&text) {
            detail.push_str(": ");
            detail.push_str(&text);
        }
        source = err.source();
    }
    detail
}
