//! Certificate rotation: at about two thirds of its life the worker makes a new key,
//! asks the control plane (over mTLS, as itself) to sign it, and swaps it into the
//! identity its server and client use. New handshakes use the new certificate;
//! established connections and streams carry on.

use std::sync::Arc;
use std::time::Duration;

use berth_pki::{cert_info, generate_key_and_csr};
use berth_proto::v1 as pb;
use tokio_util::sync::CancellationToken;

use crate::agent::{Runtime, now_secs};
use crate::enroll::status_detail;
use crate::identity::{StoredIdentity, pem_to_der};
use crate::WorkerError;

const RENEW_TIMEOUT: Duration = Duration::from_secs(20);
const MIN_RETRY: Duration = Duration::from_secs(5);
const MAX_RETRY: Duration = Duration::from_secs(300);

pub(crate) async fn run(runtime: Arc<Runtime>, shutdown: CancellationToken) {
    let mut retry = MIN_RETRY;
    loop {
        let wait = match time_until_renewal(&runtime) {
            Ok(wait) => wait,
            Err(err) => {
                tracing::error!(worker_id = %runtime.worker_id, error = %err, "cannot read the current certificate");
                return;
            }
        };
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(wait) => {}
        }
        let renewed = tokio::select! {
            () = shutdown.cancelled() => return,
            renewed = renew_once(&runtime) => renewed,
        };
        match renewed {
            Ok(not_after) => {
                retry = MIN_RETRY;
                tracing::info!(worker_id = %runtime.worker_id, not_after, "certificate renewed");
            }
            Err(err) => {
                tracing::warn!(worker_id = %runtime.worker_id, error = %err, retry_in = ?retry, "certificate renewal failed");
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep(retry) => {}
                }
                retry = (retry * 2).min(MAX_RETRY);
            }
        }
    }
}

/// Zero once two thirds of the current certificate's life have passed.
fn time_until_renewal(runtime: &Runtime) -> Result<Duration, WorkerError> {
    let info = cert_info(&runtime.identity.current_leaf_der())?;
    let lifetime = info.not_after.saturating_sub(info.not_before).max(0);
    let renew_at = info.not_before + lifetime * 2 / 3;
    let wait = renew_at.saturating_sub(now_secs()).max(0);
    Ok(Duration::from_secs(u64::try_from(wait).unwrap_or(0)))
}

/// One renewal; returns the new certificate's expiry.
async fn renew_once(runtime: &Runtime) -> Result<i64, WorkerError> {
    let key = generate_key_and_csr(&runtime.worker_id)?;
    let mut last_error = String::new();
    for (index, client) in runtime.control_planes.iter().enumerate() {
        let mut request = tonic::Request::new(pb::RenewCertificateRequest {
            worker_id: runtime.worker_id.clone(),
            csr_pem: key.csr_pem.clone(),
        });
        request.set_timeout(RENEW_TIMEOUT);
        let response = match client.clone().renew_certificate(request).await {
            Ok(response) => response.into_inner(),
            Err(status) => {
                last_error = format!(
                    "{}: {}",
                    runtime.config.control_plane[index],
                    status_detail(&status)
                );
                continue;
            }
        };
        let cert = cert_info(&pem_to_der(&response.certificate_pem)?)?;
        let current = cert_info(&runtime.identity.current_leaf_der())?;
        let expected = current.spiffe_id.clone();
        if cert.spiffe_id != expected || cert.is_ca {
            return Err(WorkerError::BadEnrollment(format!(
                "the renewed certificate does not carry {}",
                expected.map(|id| id.to_string()).unwrap_or_default()
            )));
        }
        runtime
            .identity
            .replace(&response.certificate_pem, &key.key_pem)?;
        StoredIdentity::save_renewed(
            &runtime.config.data_dir,
            &key.key_pem,
            &response.certificate_pem,
        )?;
        return Ok(cert.not_after);
    }
    Err(WorkerError::Unreachable(last_error))
}
