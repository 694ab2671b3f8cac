//! `worker_certificates`: every certificate issued to a worker (serial and expiry).

use super::{Store, StoreError};

#[derive(Debug, Clone)]
pub struct NewCertificate {
    pub serial: String,
    pub worker_id: String,
    pub issued_at: i64,
    pub expires_at: i64,
    /// enroll | reenroll | renew
    pub reason: &'static str,
}

/// Records `$cert` (a [`NewCertificate`]) on `$conn`, a connection of either backend
/// inside the caller's transaction; evaluates to the statement's future.
macro_rules! insert_certificate {
    ($conn:expr, $cert:expr) => {
        sqlx::query(
            "INSERT INTO worker_certificates (serial, worker_id, issued_at, expires_at, reason) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&$cert.serial)
        .bind(&$cert.worker_id)
        .bind($cert.issued_at)
        .bind($cert.expires_at)
        .bind($cert.reason)
        .execute($conn)
    };
}
pub(super) use insert_certificate;

impl Store {
    /// Records a renewed certificate and makes it the worker's current one, unless the
    /// worker was revoked meanwhile.
    pub async fn record_renewal(&self, cert: &NewCertificate) -> Result<(), StoreError> {
        in_write_tx!(self, |tx| {
            let updated = sqlx::query(
                "UPDATE workers SET cert_serial = $1, cert_expires_at = $2 \
                 WHERE id = $3 AND state = 'active'",
            )
            .bind(&cert.serial)
            .bind(cert.expires_at)
            .bind(&cert.worker_id)
            .execute(&mut *tx)
            .await?;
            if updated.rows_affected() == 0 {
                return Err(StoreError::WorkerRevoked(cert.worker_id.clone()));
            }
            insert_certificate!(&mut *tx, cert).await?;
            tx.commit().await?;
            Ok(())
        })
    }

    /// Serials refused at the TLS handshake: revoked certificates and every certificate
    /// of a revoked worker.
    pub async fn revoked_serials(&self) -> Result<Vec<String>, StoreError> {
        let serials = with_pool!(self, |pool| {
            sqlx::query_scalar(
                "SELECT c.serial FROM worker_certificates c JOIN workers w ON w.id = c.worker_id \
                 WHERE c.revoked_at IS NOT NULL OR w.state = 'revoked' \
                 UNION SELECT serial FROM revoked_certificates",
            )
            .fetch_all(pool)
            .await?
        });
        Ok(serials)
    }
}
