//! `berth.v1.ControlPlane`: thin handlers that authenticate the caller, convert the
//! request and hand it to the fleet.

use berth_proto::v1 as pb;
use berth_proto::v1::control_plane_server::ControlPlane;
use std::sync::Arc;
use std::time::Instant;

use tonic::{Request, Response, Status};
use tracing::Instrument;

use super::admission::Admission;
use super::convert;
use super::peer::calling_worker;
use crate::config::LimitsConfig;
use crate::error::ApiError;
use crate::fleet::{EnrollmentRequest, Fleet, HeartbeatReport};
use crate::metrics::OutcomeLabels;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;

#[derive(Debug, Clone)]
pub struct MeshService {
    fleet: Fleet,
    admission: Arc<Admission>,
}

impl MeshService {
    pub fn new(fleet: Fleet, limits: &LimitsConfig) -> Self {
        Self {
            fleet,
            admission: Arc::new(Admission::new(limits)),
        }
    }

    /// The mesh's admission budgets, shared with the dial-out acceptor.
    pub(super) fn admission(&self) -> Arc<Admission> {
        self.admission.clone()
    }

    fn count(&self, family: &Family<OutcomeLabels, Counter>, outcome: &str) {
        family
            .get_or_create(&OutcomeLabels {
                outcome: outcome.to_owned(),
            })
            .inc();
    }
}

#[tonic::async_trait]
impl ControlPlane for MeshService {
    async fn enroll(
        &self,
        request: Request<pb::EnrollRequest>,
    ) -> Result<Response<pb::EnrollResponse>, Status> {
        let started = Instant::now();
        let result = self.handle_enroll(request).await;
        self.fleet
            .metrics()
            .observe_mesh("Enroll", started, &result);
        result
    }

    async fn heartbeat(
        &self,
        request: Request<pb::HeartbeatRequest>,
    ) -> Result<Response<pb::HeartbeatResponse>, Status> {
        let started = Instant::now();
        let result = self.handle_heartbeat(request).await;
        self.fleet
            .metrics()
            .observe_mesh("Heartbeat", started, &result);
        result
    }

    async fn renew_certificate(
        &self,
        request: Request<pb::RenewCertificateRequest>,
    ) -> Result<Response<pb::RenewCertificateResponse>, Status> {
        let started = Instant::now();
        let result = self.handle_renew(request).await;
        self.fleet
            .metrics()
            .observe_mesh("RenewCertificate", started, &result);
        result
    }
}

impl MeshService {
    async fn handle_enroll(
        &self,
        request: Request<pb::EnrollRequest>,
    ) -> Result<Response<pb::EnrollResponse>, Status> {
        let remote = request
            .extensions()
            .get::<berth_pki::transport::PeerInfo>()
            .map(|peer| peer.remote_addr);
        // the caller's own bucket first, then the cheap checks; only a request that
        // passed them spends the shared budget
        self.admission
            .enrollment_from(remote.map(|addr| addr.ip()))?;
        let refused = |err: ApiError| {
            tracing::warn!(?remote, error = %err.message, "enrollment refused");
            self.count(&self.fleet.metrics().enrollments, "refused");
            err
        };
        let enrollment = EnrollmentRequest::try_from(request.into_inner()).map_err(refused)?;
        let checked = self
            .fleet
            .check_enrollment(enrollment)
            .map_err(|err| refused(err.into()))?;
        self.admission.enrollment()?;
        let grant = self
            .fleet
            .grant_enrollment(checked)
            .await
            .map_err(|err| refused(err.into()))?;
        self.count(&self.fleet.metrics().enrollments, "ok");
        Ok(Response::new(pb::EnrollResponse {
            worker_id: grant.worker_id,
            certificate_pem: grant.certificate_pem,
            ca_pem: grant.ca_pem,
            worker_token: grant.worker_token,
            certificate_expires_at: grant.certificate_expires_at,
            heartbeat_interval_ms: grant.heartbeat_interval_ms,
            trust_domain: grant.trust_domain,
        }))
    }

    async fn handle_heartbeat(
        &self,
        request: Request<pb::HeartbeatRequest>,
    ) -> Result<Response<pb::HeartbeatResponse>, Status> {
        let worker_id = calling_worker(&request, &request.get_ref().worker_id)?;
        self.admission.heartbeat()?;
        let request = request.into_inner();
        let report = HeartbeatReport {
            state: convert::reported_state(request.state),
            sent_at_ms: request.sent_at_ms,
            inventory: request
                .sandboxes
                .iter()
                .map(|s| {
                    (
                        s.sandbox_id.clone(),
                        i64::try_from(s.generation).unwrap_or(i64::MAX),
                    )
                })
                .collect(),
            description: convert::description(request.info)?,
        };
        let metrics = self.fleet.metrics();
        let ack = self
            .fleet
            .heartbeat(&worker_id, report)
            .instrument(tracing::info_span!("heartbeat", %worker_id))
            .await
            .map_err(|err| {
                self.count(&metrics.heartbeats, "refused");
                ApiError::from(err)
            })?;
        self.count(&metrics.heartbeats, "ok");
        Ok(Response::new(pb::HeartbeatResponse {
            heartbeat_interval_ms: ack.heartbeat_interval_ms,
            server_time_ms: ack.server_time_ms,
            drain_requested: ack.drain_requested,
            destroy_sandboxes: ack.destroy,
        }))
    }

    async fn handle_renew(
        &self,
        request: Request<pb::RenewCertificateRequest>,
    ) -> Result<Response<pb::RenewCertificateResponse>, Status> {
        let worker_id = calling_worker(&request, &request.get_ref().worker_id)?;
        let metrics = self.fleet.metrics();
        let issued = self
            .fleet
            .renew_certificate(&worker_id, &request.get_ref().csr_pem)
            .instrument(tracing::info_span!("renew_certificate", %worker_id))
            .await
            .map_err(|err| {
                self.count(&metrics.certificate_renewals, "refused");
                ApiError::from(err)
            })?;
        self.count(&metrics.certificate_renewals, "ok");
        Ok(Response::new(pb::RenewCertificateResponse {
            certificate_pem: issued.cert_pem,
            ca_pem: self.fleet.authority().ca().cert_pem().to_owned(),
            expires_at: issued.not_after,
        }))
    }
}
