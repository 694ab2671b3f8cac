//! Who is calling on the mesh: the worker id of the verified client certificate, never
//! a request field.

use berth_pki::transport::PeerInfo;
use berth_pki::{Role, SpiffeId};
use tonic::Request;

use crate::error::ApiError;

/// The worker behind the call, after checking that `claimed_id` (a request field, may be
/// empty) names that same worker.
pub fn calling_worker<T>(request: &Request<T>, claimed_id: &str) -> Result<String, ApiError> {
    let peer = request
        .extensions()
        .get::<PeerInfo>()
        .ok_or_else(|| ApiError::unauthorized("a client certificate is required"))?;
    let spiffe_id = peer
        .spiffe_id
        .as_ref()
        .ok_or_else(|| ApiError::unauthorized("a client certificate is required"))?;
    worker_of(spiffe_id, claimed_id)
}

fn worker_of(spiffe_id: &SpiffeId, claimed_id: &str) -> Result<String, ApiError> {
    let Role::Worker(worker_id) = &spiffe_id.role else {
        return Err(ApiError::forbidden(format!(
            "{spiffe_id} is not a worker identity"
        )));
    };
    if !claimed_id.is_empty() && claimed_id != worker_id {
        return Err(ApiError::forbidden(format!(
            "the certificate of worker {worker_id:?} cannot act as worker {claimed_id:?}"
        )));
    }
    Ok(worker_id.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_worker_acts_only_as_itself() {
        let a = SpiffeId::worker("berth.local", "a");
        assert_eq!(worker_of(&a, "").unwrap(), "a");
        assert_eq!(worker_of(&a, "a").unwrap(), "a");
        let refused = tonic::Status::from(worker_of(&a, "b").unwrap_err());
        assert_eq!(refused.code(), tonic::Code::PermissionDenied);
        let cp = SpiffeId::control_plane("berth.local");
        assert_eq!(
            tonic::Status::from(worker_of(&cp, "").unwrap_err()).code(),
            tonic::Code::PermissionDenied
        );
    }

    #[test]
    fn no_certificate_is_unauthenticated() {
        let request = Request::new(());
        let refused = tonic::Status::from(calling_worker(&request, "").unwrap_err());
        assert_eq!(refused.code(), tonic::Code::Unauthenticated);
    }
}
