//! Enrollment: a join token (or a worker's own worker token) plus a CSR become a
//! short-lived certificate and a fresh worker token. Every check runs before anything
//! is spent; the store then spends the credential and records the worker in one
//! transaction.

use std::net::SocketAddr;

use serde::Serialize;

use super::{Fleet, FleetError, ProviderStatus, duration_ms};
use crate::clock::now_secs;
use crate::store::{Enrollment, EnrollmentCredential, NewCertificate};

#[derive(Debug, Clone)]
pub enum Credential {
    JoinToken(String),
    WorkerToken(String),
}

/// What a worker says about itself; validated on receipt.
#[derive(Debug, Clone, Default)]
pub struct WorkerDescription {
    pub hostname: String,
    pub advertise_addr: String,
    pub providers: Vec<ProviderStatus>,
    pub max_sandboxes: u32,
    pub vcpus: u32,
    pub memory_mb: u64,
    pub version: String,
}

impl WorkerDescription {
    pub fn validate(&self) -> Result<(), FleetError> {
        let bad = |message: String| Err(FleetError::BadRequest(message));
        if self.hostname.len() > 253 {
            return bad("hostname is longer than 253 characters".into());
        }
        if self.version.len() > 64 {
            return bad("version is longer than 64 characters".into());
        }
        // empty: the worker dials out and is called over the connection it opens
        if !self.advertise_addr.is_empty() && !is_host_port(&self.advertise_addr) {
            return bad(format!(
                "advertise address {:?} is not host:port (or empty, for a worker that dials out)",
                self.advertise_addr
            ));
        }
        if self.providers.len() > 16 {
            return bad("more than 16 providers".into());
        }
        for provider in &self.providers {
            let name_ok = !provider.name.is_empty()
                && provider.name.len() <= 32
                && provider
                    .name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
            if !name_ok {
                return bad(format!("provider name {:?} is not valid", provider.name));
            }
        }
        Ok(())
    }

    pub(super) fn providers_json(&self) -> String {
        serde_json::to_string(&self.providers).unwrap_or_else(|_| "[]".to_owned())
    }
}

fn is_host_port(value: &str) -> bool {
    if value.parse::<SocketAddr>().is_ok() {
        return true;
    }
    let Some((host, port)) = value.rsplit_once(':') else {
        return false;
    };
    port.parse::<u16>().is_ok_and(|p| p != 0)
        && !host.is_empty()
        && host.len() <= 253
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
}

#[derive(Debug, Clone)]
pub struct EnrollmentRequest {
    pub credential: Credential,
    /// Empty lets a pinned token or the control plane decide.
    pub requested_id: Option<String>,
    pub csr_pem: String,
    pub description: WorkerDescription,
}

#[derive(Debug, Clone, Serialize)]
pub struct EnrollmentGrant {
    pub worker_id: String,
    pub certificate_pem: String,
    pub ca_pem: String,
    pub worker_token: String,
    pub certificate_expires_at: i64,
    pub heartbeat_interval_ms: u32,
    pub trust_domain: String,
}

/// An enrollment whose credential and description passed every check that costs no
/// more than a signature verification; what [`Fleet::grant_enrollment`] spends.
#[derive(Debug, Clone)]
pub struct CheckedEnrollment {
    request: EnrollmentRequest,
    worker_id: String,
    credential: EnrollmentCredential,
}

impl CheckedEnrollment {
    pub fn worker_id(&self) -> &str {
        &self.worker_id
    }
}

impl Fleet {
    /// Checks and grants an enrollment ([`Self::check_enrollment`], then
    /// [`Self::grant_enrollment`]).
    pub async fn enroll(&self, request: EnrollmentRequest) -> Result<EnrollmentGrant, FleetError> {
        let checked = self.check_enrollment(request)?;
        self.grant_enrollment(checked).await
    }

    /// The cheap checks of an enrollment: the description, the credential's signature,
    /// claims and pin, and the worker id. Nothing is written and no certificate is
    /// signed, so the mesh runs these before it spends its shared enrollment budget.
    pub fn check_enrollment(
        &self,
        request: EnrollmentRequest,
    ) -> Result<CheckedEnrollment, FleetError> {
        request.description.validate()?;
        let now = now_secs();
        let leeway = self.settings.token_leeway.as_secs();
        let tokens = self.authority.tokens();
        let (worker_id, credential) = match &request.credential {
            Credential::JoinToken(token) => {
                let claims = tokens.verify_join_token(
                    token,
                    &self.authority.ca().fingerprint(),
                    now,
                    leeway,
                )?;
                let worker_id = match (&claims.worker_id, &request.requested_id) {
                    (Some(pinned), Some(asked)) if pinned != asked => {
                        return Err(FleetError::Forbidden(format!(
                            "join token is pinned to worker {pinned:?}, not {asked:?}"
                        )));
                    }
                    (Some(pinned), _) => pinned.clone(),
                    (None, Some(asked)) => asked.clone(),
                    (None, None) => generated_worker_id(),
                };
                let pinned = claims.worker_id.is_some();
                let credential = EnrollmentCredential::JoinToken {
                    jti: claims.jti,
                    pinned,
                };
                (worker_id, credential)
            }
            Credential::WorkerToken(token) => {
                let claims = tokens.verify_worker_token(token, now, leeway)?;
                if let Some(asked) = &request.requested_id
                    && asked != &claims.sub
                {
                    return Err(FleetError::Forbidden(format!(
                        "worker token belongs to worker {:?}, not {asked:?}",
                        claims.sub
                    )));
                }
                let credential = EnrollmentCredential::WorkerToken { jti: claims.jti };
                (claims.sub, credential)
            }
        };
        berth_pki::validate_worker_id(&worker_id)
            .map_err(|err| FleetError::BadRequest(err.to_string()))?;
        Ok(CheckedEnrollment {
            request,
            worker_id,
            credential,
        })
    }

    /// Signs the certificate and worker token of a checked enrollment and records the
    /// worker, spending its credential, in one store transaction.
    pub async fn grant_enrollment(
        &self,
        checked: CheckedEnrollment,
    ) -> Result<EnrollmentGrant, FleetError> {
        let CheckedEnrollment {
            request,
            worker_id,
            credential,
        } = checked;
        let now = now_secs();
        let tokens = self.authority.tokens();
        let issued = self
            .authority
            .ca()
            .sign_worker_csr(&request.csr_pem, &worker_id, self.settings.worker_cert_ttl)
            .map_err(|err| FleetError::BadRequest(format!("certificate request refused: {err}")))?;
        let (worker_token, worker_claims) =
            tokens.create_worker_token(&worker_id, self.settings.worker_token_ttl)?;
        let reason = match credential {
            EnrollmentCredential::JoinToken { .. } => "enroll",
            EnrollmentCredential::WorkerToken { .. } => "reenroll",
        };
        let description = &request.description;
        self.store
            .enroll_worker(&Enrollment {
                spiffe_id: berth_pki::SpiffeId::worker(self.authority.trust_domain(), &worker_id)
                    .to_string(),
                credential,
                hostname: description.hostname.clone(),
                advertise_addr: description.advertise_addr.clone(),
                providers: description.providers_json(),
                max_sandboxes: i64::from(description.max_sandboxes),
                vcpus: i64::from(description.vcpus),
                memory_mb: i64::try_from(description.memory_mb).unwrap_or(i64::MAX),
                version: description.version.clone(),
                new_worker_token_jti: worker_claims.jti,
                certificate: NewCertificate {
                    serial: issued.serial_hex.clone(),
                    worker_id: worker_id.clone(),
                    issued_at: now,
                    expires_at: issued.not_after,
                    reason,
                },
                now,
                worker_id: worker_id.clone(),
            })
            .await?;
        tracing::info!(%worker_id, serial = %issued.serial_hex, reason, "worker enrolled");
        Ok(EnrollmentGrant {
            worker_id,
            certificate_pem: issued.cert_pem,
            ca_pem: self.authority.ca().cert_pem().to_owned(),
            worker_token,
            certificate_expires_at: issued.not_after,
            heartbeat_interval_ms: duration_ms(self.settings.heartbeat_interval),
            trust_domain: self.authority.trust_domain().to_owned(),
        })
    }

    /// A fresh certificate for `worker_id`, which the caller took from the verified
    /// client certificate.
    pub async fn renew_certificate(
        &self,
        worker_id: &str,
        csr_pem: &str,
    ) -> Result<berth_pki::IssuedCert, FleetError> {
        let issued = self
            .authority
            .ca()
            .sign_worker_csr(csr_pem, worker_id, self.settings.worker_cert_ttl)
            .map_err(|err| FleetError::BadRequest(format!("certificate request refused: {err}")))?;
        self.store
            .record_renewal(&NewCertificate {
                serial: issued.serial_hex.clone(),
                worker_id: worker_id.to_owned(),
                issued_at: now_secs(),
                expires_at: issued.not_after,
                reason: "renew",
            })
            .await?;
        tracing::info!(%worker_id, serial = %issued.serial_hex, "worker certificate renewed");
        Ok(issued)
    }
}

fn generated_worker_id() -> String {
    format!("w-{}", &uuid::Uuid::new_v4().simple().to_string()[..12])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advertise_addresses_must_be_host_and_port() {
        for ok in ["127.0.0.1:7444", "[::1]:7444", "worker-1.example:7444"] {
            assert!(is_host_port(ok), "{ok}");
        }
        for bad in [
            "",
            "127.0.0.1",
            "host:0",
            "host:99999",
            ":7444",
            "a b:1",
            "x/y:1",
        ] {
            assert!(!is_host_port(bad), "{bad}");
        }
    }

    #[test]
    fn generated_ids_are_valid_worker_ids() {
        berth_pki::validate_worker_id(&generated_worker_id()).unwrap();
    }
}
