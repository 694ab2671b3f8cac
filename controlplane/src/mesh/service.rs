//! `berth.v1.ControlPlane`: thin handlers that authenticate the caller, convert the
//! request and hand it to the fleet.

use berth_proto::v1 as pb;
use berth_proto::v1::control_plane_server::ControlPlane;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Instant;

use tonic::{Request, Response, Status};
use tracing::Instrument;

use super::convert;
use super::peer::calling_worker;
use crate::config::LimitsConfig;
use crate::error::{ApiError, ErrorCode};
use crate::fleet::{EnrollmentRequest, Fleet, HeartbeatReport};
use crate::metrics::OutcomeLabels;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;

type Limiter = governor::DefaultDirectRateLimiter;

#[derive(Debug, Clone)]
pub struct MeshService {
    fleet: Fleet,
    enrollments: Arc<Limiter>,
    heartbeats: Arc<Limiter>,
}

fn limiter(per_second: u32, burst: u32) -> Limiter {
    let per_second = NonZeroU32::new(per_second).unwrap_or(NonZeroU32::MIN);
    let burst = NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN);
    governor::RateLimiter::direct(governor::Quota::per_second(per_second).allow_burst(burst))
}

/// Told to a caller over the limit; workers back off and retry.
fn slow_down(what: &str) -> ApiError {
    ApiError::new(
        ErrorCode::ResourceLimit,
        format!("too many {what} right now; retry shortly"),
    )
}

impl MeshService {
    pub fn new(fleet: Fleet, limits: &LimitsConfig) -> Self {
        Self {
            fleet,
            enrollments: Arc::new(limiter(
                limits.enrollments_per_second,
                limits.enrollment_burst,
            )),
            heartbeats: Arc::new(limiter(
                limits.heartbeats_per_second,
                limits.heartbeat_burst,
            )),
        }
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
        let result = if self.enrollments.check().is_err() {
            Err(slow_down("enrollments").into())
        } else {
            self.handle_enroll(request).await
        };
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
        let result = if self.heartbeats.check().is_err() {
            Err(slow_down("heartbeats").into())
        } else {
            self.handle_heartbeat(request).await
        };
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
        let enrollment = EnrollmentRequest::try_from(request.into_inner())?;
        let grant = self.fleet.enroll(enrollment).await.map_err(|err| {
            let err = ApiError::from(err);
            tracing::warn!(?remote, error = %err.message, "enrollment refused");
            self.count(&self.fleet.metrics().enrollments, "refused");
            err
        })?;
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
