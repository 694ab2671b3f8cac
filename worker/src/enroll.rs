//! Enrollment: first contact with a join token (the control plane is trusted only if
//! the CA it presents hashes to the token's pin), and re-enrollment with the worker's
//! own signed worker token after its certificate lapsed while it was offline. Either
//! way the worker makes its own key; only the CSR leaves the machine.

use std::sync::Arc;
use std::time::Duration;

use berth_pki::transport::{DialOptions, mesh_channel};
use berth_pki::{SpiffeId, bootstrap_client_config, generate_key_and_csr, mesh_client_config};
use berth_proto::v1 as pb;
use berth_proto::v1::control_plane_client::ControlPlaneClient;

use crate::control_planes::status_detail;
use crate::identity::{StoredIdentity, pem_to_der};
use crate::{WorkerConfig, WorkerError};

const ENROLL_TIMEOUT: Duration = Duration::from_secs(20);

/// First enrollment with a join token.
pub(crate) async fn with_join_token(
    config: &WorkerConfig,
    token: &str,
    info: pb::WorkerInfo,
) -> Result<StoredIdentity, WorkerError> {
    let claims = berth_pki::peek_join_claims(token)?;
    if let (Some(pinned), Some(id)) = (&claims.worker_id, &config.id)
        && pinned != id
    {
        return Err(WorkerError::Config(format!(
            "the join token is pinned to worker {pinned:?}, but this worker's id is {id:?}"
        )));
    }
    let (tls, pinned_ca) = bootstrap_client_config(&claims.ca_sha256)?;
    let common_name = config
        .id
        .clone()
        .or(claims.worker_id)
        .unwrap_or_else(|| "berth-worker".to_owned());
    let key = generate_key_and_csr(&common_name)?;
    let request = pb::EnrollRequest {
        credential: Some(pb::enroll_request::Credential::JoinToken(token.to_owned())),
        worker_id: config.id.clone().unwrap_or_default(),
        csr_pem: key.csr_pem,
        info: Some(info),
    };
    let response = call_enroll(&config.control_plane, Arc::new(tls), request).await?;
    let ca_der = pinned_ca.get().ok_or_else(|| {
        WorkerError::BadEnrollment("no CA was pinned during the handshake".into())
    })?;
    identity_from(response, key.key_pem, &ca_der)
}

/// Re-enrollment with the stored worker token (the certificate lapsed).
pub(crate) async fn with_worker_token(
    config: &WorkerConfig,
    stored: &StoredIdentity,
    info: pb::WorkerInfo,
) -> Result<StoredIdentity, WorkerError> {
    let ca_der = stored.ca_der()?;
    let tls = mesh_client_config(&ca_der, SpiffeId::control_plane(&stored.trust_domain), None)?;
    let key = generate_key_and_csr(&stored.worker_id)?;
    let request = pb::EnrollRequest {
        credential: Some(pb::enroll_request::Credential::WorkerToken(
            stored.worker_token.clone(),
        )),
        worker_id: stored.worker_id.clone(),
        csr_pem: key.csr_pem,
        info: Some(info),
    };
    let response = call_enroll(&config.control_plane, Arc::new(tls), request).await?;
    identity_from(response, key.key_pem, &ca_der)
}

/// Checks what the control plane granted before anything is stored.
fn identity_from(
    response: pb::EnrollResponse,
    key_pem: String,
    trusted_ca_der: &[u8],
) -> Result<StoredIdentity, WorkerError> {
    if pem_to_der(&response.ca_pem)? != trusted_ca_der {
        return Err(WorkerError::BadEnrollment(
            "the CA in the answer is not the CA the control plane presented".into(),
        ));
    }
    let cert = berth_pki::cert_info(&pem_to_der(&response.certificate_pem)?)?;
    let expected = SpiffeId::worker(&response.trust_domain, &response.worker_id);
    if cert.spiffe_id.as_ref() != Some(&expected) || cert.is_ca {
        return Err(WorkerError::BadEnrollment(format!(
            "the certificate does not carry the identity {expected}"
        )));
    }
    Ok(StoredIdentity {
        worker_id: response.worker_id,
        trust_domain: response.trust_domain,
        key_pem,
        cert_pem: response.certificate_pem,
        ca_pem: response.ca_pem,
        worker_token: response.worker_token,
    })
}

/// Rounds of retries while control planes answer "too many enrollments right now".
const BUSY_ROUNDS: u32 = 8;

/// Tries each control plane in turn; a refusal is final, an unreachable one is skipped,
/// and when they are busy (rate limited) the worker backs off with jitter and retries.
async fn call_enroll(
    urls: &[String],
    tls: Arc<rustls::ClientConfig>,
    request: pb::EnrollRequest,
) -> Result<pb::EnrollResponse, WorkerError> {
    let mut round = 0;
    loop {
        match enroll_once(urls, tls.clone(), request.clone()).await {
            Err(EnrollAttempt::Busy(detail)) if round < BUSY_ROUNDS => {
                round += 1;
                let delay = busy_delay(round);
                tracing::info!(?delay, %detail, "control plane busy; retrying enrollment");
                tokio::time::sleep(delay).await;
            }
            Err(EnrollAttempt::Busy(detail)) => return Err(WorkerError::Unreachable(detail)),
            Err(EnrollAttempt::Failed(err)) => return Err(err),
            Ok(response) => return Ok(response),
        }
    }
}

enum EnrollAttempt {
    Busy(String),
    Failed(WorkerError),
}

async fn enroll_once(
    urls: &[String],
    tls: Arc<rustls::ClientConfig>,
    request: pb::EnrollRequest,
) -> Result<pb::EnrollResponse, EnrollAttempt> {
    let mut failures = Vec::new();
    let mut busy = false;
    for url in urls {
        let channel = mesh_channel(url, tls.clone(), DialOptions::default())
            .map_err(|err| EnrollAttempt::Failed(err.into()))?;
        let mut client = ControlPlaneClient::new(channel);
        let mut call = tonic::Request::new(request.clone());
        call.set_timeout(ENROLL_TIMEOUT);
        match client.enroll(call).await {
            Ok(response) => return Ok(response.into_inner()),
            Err(status) if status.code() == tonic::Code::ResourceExhausted => {
                busy = true;
                failures.push(format!("{url}: {}", status.message()));
            }
            Err(status) if is_unreachable(&status) => {
                failures.push(format!("{url}: {}", status_detail(&status)));
            }
            Err(status) => {
                return Err(EnrollAttempt::Failed(WorkerError::EnrollmentRefused(
                    status_detail(&status),
                )));
            }
        }
    }
    let detail = failures.join("; ");
    if busy {
        return Err(EnrollAttempt::Busy(detail));
    }
    Err(EnrollAttempt::Failed(WorkerError::Unreachable(detail)))
}

/// 250ms doubling per round up to 8s, with ±50% jitter so a fleet spreads out.
fn busy_delay(round: u32) -> Duration {
    use rand::Rng;
    let base = Duration::from_millis(250)
        .saturating_mul(1 << round.min(5))
        .min(Duration::from_secs(8));
    base.mul_f64(rand::rng().random_range(0.5..1.5))
}

/// A control plane that could not be reached (or not trusted) rather than one that
/// refused: the next one is worth trying.
pub(crate) fn is_unreachable(status: &tonic::Status) -> bool {
    matches!(
        status.code(),
        tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::Unknown
    )
}
