//! `GET /metrics` (Prometheus text, no key) and `GET /api/v1/status` (the fleet at a
//! glance, read scope).

use std::collections::BTreeMap;

use super::schemas::{CaStatus, FleetStatus, SandboxTally, SshStatus, WorkerTally};
use super::{Authorized, ReadScope};
use crate::api::ApiState;
use crate::error::ApiError;
use crate::sandboxes::rfc3339;
use axum::Json;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;

/// Prometheus metrics (OpenMetrics text); no key needed.
#[utoipa::path(get, path = "/metrics", tag = "status", responses(
    (status = 200, description = "Metrics", body = String,
        content_type = "application/openmetrics-text"),
))]
pub async fn metrics(State(state): State<ApiState>) -> Result<impl IntoResponse, ApiError> {
    let workers = state.fleet.list_workers().await?;
    let ca_not_after = state.fleet.authority().ca().not_after();
    let text = state
        .fleet
        .metrics()
        .render(&state.store, &workers, ca_not_after)
        .await?;
    Ok((
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    ))
}

/// The fleet at a glance (read scope).
#[utoipa::path(get, path = "/api/v1/status", tag = "status", security(("api_key" = []), ("bearer" = [])),
    responses((status = 200, description = "Status", body = FleetStatus)))]
pub async fn status(
    Authorized { access, .. }: Authorized<ReadScope>,
    State(state): State<ApiState>,
) -> Result<Json<FleetStatus>, ApiError> {
    let workers = state.fleet.list_workers().await?;
    let mut by_status: BTreeMap<String, usize> = BTreeMap::new();
    for worker in &workers {
        *by_status
            .entry(worker.status.as_str().to_owned())
            .or_default() += 1;
    }
    let sandboxes = state.sandboxes.list(&access).await?;
    let mut by_state: BTreeMap<String, usize> = BTreeMap::new();
    for sandbox in &sandboxes {
        *by_state.entry(sandbox.state.clone()).or_default() += 1;
    }
    let ca = state.fleet.authority().ca();
    Ok(Json(FleetStatus {
        version: state.version.to_string(),
        trust_domain: ca.trust_domain().to_owned(),
        store: state.store.backend().as_str().to_owned(),
        ca: CaStatus {
            fingerprint: ca.fingerprint(),
            expires_at: rfc3339(ca.not_after()),
        },
        workers: WorkerTally {
            total: workers.len(),
            by_status,
        },
        sandboxes: SandboxTally {
            total: sandboxes.len(),
            by_state,
        },
        capacity: state.sandboxes.total_capacity().await?,
        ssh: state.ssh.as_ref().map(|gateway| SshStatus {
            address: gateway.address.to_string(),
            host_key_fingerprint: gateway.fingerprint.clone(),
            host_key: gateway.public_key.clone(),
        }),
    }))
}
