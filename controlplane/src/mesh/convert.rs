//! Mesh wire messages into validated fleet types, on receipt.

use berth_proto::v1 as pb;

use crate::error::ApiError;
use crate::fleet::{Credential, EnrollmentRequest, ProviderStatus, WorkerDescription};
use crate::store::ReportedState;

pub fn description(info: Option<pb::WorkerInfo>) -> Result<WorkerDescription, ApiError> {
    let info = info.ok_or_else(|| ApiError::bad_request("worker info is missing"))?;
    let capacity = info.capacity.unwrap_or_default();
    let description = WorkerDescription {
        hostname: info.hostname,
        advertise_addr: info.advertise_addr,
        providers: info
            .providers
            .into_iter()
            .map(|p| ProviderStatus {
                name: p.name,
                healthy: p.healthy,
                message: p.message,
            })
            .collect(),
        max_sandboxes: capacity.max_sandboxes,
        vcpus: capacity.vcpus,
        memory_mb: capacity.memory_mb,
        version: info.version,
    };
    Ok(description)
}

impl TryFrom<pb::EnrollRequest> for EnrollmentRequest {
    type Error = ApiError;

    fn try_from(request: pb::EnrollRequest) -> Result<Self, Self::Error> {
        let credential = match request.credential {
            Some(pb::enroll_request::Credential::JoinToken(token)) if !token.is_empty() => {
                Credential::JoinToken(token)
            }
            Some(pb::enroll_request::Credential::WorkerToken(token)) if !token.is_empty() => {
                Credential::WorkerToken(token)
            }
            _ => {
                return Err(ApiError::unauthorized(
                    "a join token or a worker token is required",
                ));
            }
        };
        if request.csr_pem.is_empty() {
            return Err(ApiError::bad_request("csr_pem is missing"));
        }
        Ok(Self {
            credential,
            requested_id: Some(request.worker_id).filter(|id| !id.is_empty()),
            csr_pem: request.csr_pem,
            description: description(request.info)?,
        })
    }
}

pub fn reported_state(state: i32) -> ReportedState {
    match pb::WorkerState::try_from(state) {
        Ok(pb::WorkerState::Draining) => ReportedState::Draining,
        Ok(pb::WorkerState::Drained) => ReportedState::Drained,
        _ => ReportedState::Ready,
    }
}
