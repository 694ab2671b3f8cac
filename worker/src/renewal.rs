//! Certificate rotation: at about two thirds of its life the worker makes a new key,
//! asks the control plane (over mTLS, as itself) to sign it, and swaps it into the
//! identity its server and client use. New handshakes use the new certificate;
//! established connections and streams carry on.

use std::sync::Arc;
use std::time::Duration;

use berth_pki::{cert_info, generate_key_and_csr};
use berth_proto::v1 as pb;
use tokio_util::sync::CancellationToken;

use crate::WorkerError;
use crate::clock::now_secs;
use crate::identity::{StoredIdentity, pem_to_der};
use crate::metrics::WorkerMetrics;
use crate::runtime::Runtime;

const RENEW_TIMEOUT: Duration = Duration::from_secs(20);
const MIN_RETRY: Duration = Duration::from_secs(5);
const MAX_RETRY: Duration = Duration::from_secs(300);

pub(crate) async fn run(runtime: Arc<Runtime>, shutdown: CancellationToken) {
    let mut retry = MIN_RETRY;
    // When the worker got hold of its current certificate. Certificates are backdated
    // for clock skew, so their own not_before says little about when they arrived.
    let mut received_at = now_secs();
    loop {
        let wait = match time_until_renewal(&runtime, received_at) {
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
                WorkerMetrics::count(&runtime.metrics.certificate_renewals, "ok");
                retry = MIN_RETRY;
                received_at = now_secs();
                runtime.renewals.send_modify(|renewals| *renewals += 1);
                tracing::info!(worker_id = %runtime.worker_id, not_after, "certificate renewed");
            }
            Err(err) => {
                WorkerMetrics::count(&runtime.metrics.certificate_renewals, "failed");
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

/// Time left until two thirds of the certificate's life (counted from when the worker
/// received it) have passed.
fn time_until_renewal(runtime: &Runtime, received_at: i64) -> Result<Duration, WorkerError> {
    let info = cert_info(&runtime.identity.current_leaf_der())?;
    Ok(renewal_delay(received_at, info.not_after, now_secs()))
}

fn renewal_delay(received_at: i64, not_after: i64, now: i64) -> Duration {
    let life = not_after.saturating_sub(received_at).max(0);
    let renew_at = received_at + life * 2 / 3;
    let wait = renew_at.saturating_sub(now).max(0);
    Duration::from_secs(u64::try_from(wait).unwrap_or(0))
}

/// One renewal; returns the new certificate's expiry.
async fn renew_once(runtime: &Runtime) -> Result<i64, WorkerError> {
    let key = generate_key_and_csr(&runtime.worker_id)?;
    let response = runtime
        .control_planes
        .call_in_turn(|mut client| {
            let mut request = tonic::Request::new(pb::RenewCertificateRequest {
                worker_id: runtime.worker_id.clone(),
                csr_pem: key.csr_pem.clone(),
            });
            request.set_timeout(RENEW_TIMEOUT);
            async move { client.renew_certificate(request).await }
        })
        .await
        .map_err(|failures| {
            let last = failures.last().map(ToString::to_string);
            WorkerError::Unreachable(last.unwrap_or_default())
        })?;
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
    Ok(cert.not_after)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renewal_comes_at_two_thirds_of_the_life_left_at_receipt() {
        // a 24h certificate received at t=1000
        assert_eq!(
            renewal_delay(1000, 1000 + 86_400, 1000),
            Duration::from_secs(57_600)
        );
        assert_eq!(renewal_delay(1000, 1000 + 86_400, 58_600), Duration::ZERO);
        // already past: renew at once
        assert_eq!(renewal_delay(1000, 900, 1000), Duration::ZERO);
    }
}
