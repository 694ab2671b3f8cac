//! `workers`: enrolled workers, their current certificate and what their last heartbeat said.

use super::certificates::insert_certificate;
use super::join_tokens::consume_join_token;
use super::{DrainState, NewCertificate, ReportedState, Store, StoreError, WorkerState};

const WORKER_COLUMNS: &str = "id, spiffe_id, hostname, advertise_addr, providers, max_sandboxes, \
     vcpus, memory_mb, version, state, reported_state, worker_token_jti, enrolled_at, \
     last_heartbeat_ms, cert_serial, cert_expires_at, cordoned, drain_state, drain_deadline_ms, \
     reported_sandboxes, reserved, reserved_memory_mb, reserved_vcpus, pool, labels";

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct WorkerRow {
    pub id: String,
    pub spiffe_id: String,
    pub hostname: String,
    pub advertise_addr: String,
    /// JSON array of provider health records.
    pub providers: String,
    pub max_sandboxes: i64,
    pub vcpus: i64,
    pub memory_mb: i64,
    pub version: String,
    #[sqlx(try_from = "String")]
    pub state: WorkerState,
    #[sqlx(try_from = "String")]
    pub reported_state: ReportedState,
    pub worker_token_jti: String,
    pub enrolled_at: i64,
    pub last_heartbeat_ms: Option<i64>,
    pub cert_serial: String,
    pub cert_expires_at: i64,
    /// Takes no new sandboxes (SQLite keeps booleans as integers).
    pub cordoned: bool,
    #[sqlx(try_from = "String")]
    pub drain_state: DrainState,
    pub drain_deadline_ms: Option<i64>,
    /// Sandboxes the provider reported in the last heartbeat.
    pub reported_sandboxes: i64,
    /// Slots held by sandboxes placed on it (at most `max_sandboxes`).
    pub reserved: i64,
    /// Memory the sandboxes placed on it reserve.
    pub reserved_memory_mb: i64,
    /// CPUs the sandboxes placed on it reserve.
    pub reserved_vcpus: i64,
    /// The pool its join token named.
    pub pool: String,
    /// The labels its join token gave it (a JSON object).
    pub labels: String,
}

/// What lets a worker enroll.
#[derive(Debug, Clone)]
pub enum EnrollmentCredential {
    /// A join token; `pinned` when it names this worker id, which lets it take over an
    /// id that is already enrolled (a re-provisioned machine).
    JoinToken { jti: String, pinned: bool },
    /// The worker's own signed worker token; only the newest one issued counts.
    WorkerToken { jti: String },
}

#[derive(Debug, Clone)]
pub struct Enrollment {
    pub worker_id: String,
    pub spiffe_id: String,
    pub credential: EnrollmentCredential,
    pub hostname: String,
    pub advertise_addr: String,
    pub providers: String,
    pub max_sandboxes: i64,
    pub vcpus: i64,
    pub memory_mb: i64,
    pub version: String,
    pub new_worker_token_jti: String,
    pub certificate: NewCertificate,
    pub now: i64,
}

/// What revoking a worker touched.
#[derive(Debug, Clone, Default)]
pub struct Revocation {
    /// Every certificate serial the worker was ever issued.
    pub serials: Vec<String>,
    pub lost_sandboxes: Vec<String>,
}

/// What removing a worker's record touched.
#[derive(Debug, Clone, Default)]
pub struct Removal {
    /// Every certificate serial the worker was ever issued, refused from now on.
    pub serials: Vec<String>,
    /// Sandboxes it held, now lost (only when forced).
    pub lost_sandboxes: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct HeartbeatUpdate {
    pub worker_id: String,
    pub reported_state: ReportedState,
    pub hostname: String,
    pub advertise_addr: String,
    pub providers: String,
    pub max_sandboxes: i64,
    pub vcpus: i64,
    pub memory_mb: i64,
    pub version: String,
    pub reported_sandboxes: i64,
    pub now_ms: i64,
}

/// A worker row as enrollment writes it; the conflict clause decides who may write.
const INSERT_WORKER: &str = "INSERT INTO workers (id, spiffe_id, hostname, advertise_addr, \
         providers, max_sandboxes, vcpus, memory_mb, version, state, reported_state, \
         worker_token_jti, enrolled_at, last_heartbeat_ms, cert_serial, cert_expires_at, pool, \
         labels) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 'active', 'ready', $10, $11, NULL, $12, $13, $14, \
         $15)";

/// What a (re-)enrollment of an existing id changes. Its pool and labels stay: only a
/// join token gives them ([`TOKEN_PLACEMENT`]).
const ENROLLED_AGAIN: &str = "spiffe_id = excluded.spiffe_id, hostname = excluded.hostname, \
     advertise_addr = excluded.advertise_addr, providers = excluded.providers, \
     max_sandboxes = excluded.max_sandboxes, vcpus = excluded.vcpus, \
     memory_mb = excluded.memory_mb, version = excluded.version, \
     worker_token_jti = excluded.worker_token_jti, enrolled_at = excluded.enrolled_at, \
     cert_serial = excluded.cert_serial, cert_expires_at = excluded.cert_expires_at";

/// What a pinned join token taking over an existing id changes besides
/// [`ENROLLED_AGAIN`]: the pool and labels of the new token.
const TOKEN_PLACEMENT: &str = "pool = excluded.pool, labels = excluded.labels";

impl Store {
    /// Spends the credential, writes the worker and records its certificate, all in one
    /// transaction: a refused enrollment spends nothing. Every check that matters is
    /// part of a conditional write (the token's use count, `ON CONFLICT … DO NOTHING`
    /// for a new id, `DO UPDATE … WHERE` an active worker still holds the presented
    /// worker token), so two enrollments racing through two replicas cannot both pass
    /// a check that only one may pass.
    pub async fn enroll_worker(&self, enrollment: &Enrollment) -> Result<(), StoreError> {
        let worker_id = &enrollment.worker_id;
        let (sql, current_worker_token) = match &enrollment.credential {
            EnrollmentCredential::JoinToken { pinned: false, .. } => (
                format!("{INSERT_WORKER} ON CONFLICT (id) DO NOTHING RETURNING id"),
                None,
            ),
            EnrollmentCredential::JoinToken { pinned: true, .. } => (
                format!(
                    "{INSERT_WORKER} ON CONFLICT (id) DO UPDATE SET {ENROLLED_AGAIN}, \
                     {TOKEN_PLACEMENT} WHERE workers.state = 'active' RETURNING id"
                ),
                None,
            ),
            EnrollmentCredential::WorkerToken { jti } => (
                format!(
                    "{INSERT_WORKER} ON CONFLICT (id) DO UPDATE SET {ENROLLED_AGAIN} \
                     WHERE workers.state = 'active' AND workers.worker_token_jti = $16 \
                     RETURNING id"
                ),
                Some(jti),
            ),
        };
        in_write_tx!(self, |tx| {
            // which refusal to give when one is due; the writes below decide
            let current: Option<(String, String, String)> =
                sqlx::query_as("SELECT state, pool, labels FROM workers WHERE id = $1")
                    .bind(worker_id)
                    .fetch_optional(&mut *tx)
                    .await?;
            let state = current.as_ref().map(|(state, _, _)| state.as_str());
            if state == Some(WorkerState::Revoked.as_str()) {
                return Err(StoreError::WorkerRevoked(worker_id.clone()));
            }
            // a join token gives the worker its pool and labels; its worker token
            // keeps what it has
            let (pool, labels) = match &enrollment.credential {
                EnrollmentCredential::JoinToken { jti, pinned } => {
                    if state.is_some() && !pinned {
                        return Err(StoreError::WorkerIdTaken(worker_id.clone()));
                    }
                    consume_join_token!(&mut *tx, jti, enrollment.now)?
                }
                EnrollmentCredential::WorkerToken { .. } => {
                    // a removed worker's token names no worker any more
                    let Some((_, pool, labels)) = current else {
                        return Err(StoreError::UnknownWorker(worker_id.clone()));
                    };
                    (pool, labels)
                }
            };
            let mut insert = sqlx::query_scalar(&sql)
                .bind(worker_id)
                .bind(&enrollment.spiffe_id)
                .bind(&enrollment.hostname)
                .bind(&enrollment.advertise_addr)
                .bind(&enrollment.providers)
                .bind(enrollment.max_sandboxes)
                .bind(enrollment.vcpus)
                .bind(enrollment.memory_mb)
                .bind(&enrollment.version)
                .bind(&enrollment.new_worker_token_jti)
                .bind(enrollment.now)
                .bind(&enrollment.certificate.serial)
                .bind(enrollment.certificate.expires_at)
                .bind(&pool)
                .bind(&labels);
            if let Some(jti) = current_worker_token {
                insert = insert.bind(jti);
            }
            let written: Option<String> = insert.fetch_optional(&mut *tx).await?;
            if written.is_none() {
                // a concurrent enrollment or revocation got there first
                let state: Option<String> =
                    sqlx::query_scalar("SELECT state FROM workers WHERE id = $1")
                        .bind(worker_id)
                        .fetch_optional(&mut *tx)
                        .await?;
                return Err(refusal(&enrollment.credential, state.as_deref(), worker_id));
            }
            insert_certificate!(&mut *tx, &enrollment.certificate).await?;
            tx.commit().await?;
            Ok(())
        })
    }

    /// Records a heartbeat of an active worker; returns whether a drain was asked of it.
    pub async fn record_heartbeat(&self, update: &HeartbeatUpdate) -> Result<bool, StoreError> {
        let drain_state: Option<String> = with_write_pool!(self, |pool| {
            sqlx::query_scalar(
                "UPDATE workers SET reported_state = $1, hostname = $2, advertise_addr = $3, \
                     providers = $4, max_sandboxes = $5, vcpus = $6, memory_mb = $7, version = $8, \
                     last_heartbeat_ms = $9, reported_sandboxes = $10 \
                 WHERE id = $11 AND state = 'active' \
                 RETURNING drain_state",
            )
            .bind(update.reported_state.as_str())
            .bind(&update.hostname)
            .bind(&update.advertise_addr)
            .bind(&update.providers)
            .bind(update.max_sandboxes)
            .bind(update.vcpus)
            .bind(update.memory_mb)
            .bind(&update.version)
            .bind(update.now_ms)
            .bind(update.reported_sandboxes)
            .bind(&update.worker_id)
            .fetch_optional(pool)
            .await?
        });
        if let Some(drain_state) = drain_state {
            return Ok(drain_state == DrainState::Draining.as_str());
        }
        match self.get_worker(&update.worker_id).await? {
            Some(_) => Err(StoreError::WorkerRevoked(update.worker_id.clone())),
            None => Err(StoreError::UnknownWorker(update.worker_id.clone())),
        }
    }

    /// Revokes a worker: its state, every certificate it holds, its leases and slots;
    /// its live sandboxes become `lost`. One transaction; revoking twice is harmless.
    pub async fn revoke_worker(&self, id: &str, now: i64) -> Result<Revocation, StoreError> {
        in_write_tx!(self, |tx| {
            let found: Option<String> = sqlx::query_scalar(
                "UPDATE workers SET state = 'revoked', reserved = 0, reserved_memory_mb = 0, \
                     reserved_vcpus = 0 WHERE id = $1 RETURNING id",
            )
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
            if found.is_none() {
                return Err(StoreError::UnknownWorker(id.to_owned()));
            }
            sqlx::query(
                "UPDATE worker_certificates SET revoked_at = $1 \
                 WHERE worker_id = $2 AND revoked_at IS NULL",
            )
            .bind(now)
            .bind(id)
            .execute(&mut *tx)
            .await?;
            let serials: Vec<String> =
                sqlx::query_scalar("SELECT serial FROM worker_certificates WHERE worker_id = $1")
                    .bind(id)
                    .fetch_all(&mut *tx)
                    .await?;
            let lost: Vec<String> = sqlx::query_scalar(
                "UPDATE sandboxes SET state = 'lost', error = 'its worker was revoked' \
                 WHERE worker_id = $1 AND state IN ('creating', 'running', 'stopped', 'destroying') \
                 RETURNING id",
            )
            .bind(id)
            .fetch_all(&mut *tx)
            .await?;
            sqlx::query("DELETE FROM leases WHERE worker_id = $1")
                .bind(id)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok(Revocation {
                serials,
                lost_sandboxes: lost,
            })
        })
    }

    /// Forgets a worker: its record goes, its certificates stay refused (moved to
    /// `revoked_certificates`), its worker token no longer names a known worker. While
    /// it holds sandboxes this is refused unless `force`, which marks them lost and
    /// drops their leases, as a revocation does. One transaction.
    pub async fn remove_worker(
        &self,
        id: &str,
        force: bool,
        now: i64,
    ) -> Result<Removal, StoreError> {
        in_write_tx!(self, |tx| {
            let found: Option<String> = sqlx::query_scalar("SELECT id FROM workers WHERE id = $1")
                .bind(id)
                .fetch_optional(&mut *tx)
                .await?;
            if found.is_none() {
                return Err(StoreError::UnknownWorker(id.to_owned()));
            }
            let held: Vec<String> = sqlx::query_scalar(
                "SELECT id FROM sandboxes \
                 WHERE worker_id = $1 AND state IN ('creating', 'running', 'stopped', 'destroying') \
                 ORDER BY id",
            )
            .bind(id)
            .fetch_all(&mut *tx)
            .await?;
            if !held.is_empty() && !force {
                return Err(StoreError::WorkerHoldsSandboxes {
                    worker_id: id.to_owned(),
                    count: held.len(),
                });
            }
            let lost: Vec<String> = sqlx::query_scalar(
                "UPDATE sandboxes SET state = 'lost', error = 'its worker was removed' \
                 WHERE worker_id = $1 AND state IN ('creating', 'running', 'stopped', 'destroying') \
                 RETURNING id",
            )
            .bind(id)
            .fetch_all(&mut *tx)
            .await?;
            sqlx::query("DELETE FROM leases WHERE worker_id = $1")
                .bind(id)
                .execute(&mut *tx)
                .await?;
            sqlx::query(
                "INSERT INTO revoked_certificates (serial, worker_id, revoked_at) \
                 SELECT serial, worker_id, $1 FROM worker_certificates WHERE worker_id = $2 \
                 ON CONFLICT (serial) DO NOTHING",
            )
            .bind(now)
            .bind(id)
            .execute(&mut *tx)
            .await?;
            let serials: Vec<String> = sqlx::query_scalar(
                "SELECT serial FROM revoked_certificates WHERE worker_id = $1 ORDER BY serial",
            )
            .bind(id)
            .fetch_all(&mut *tx)
            .await?;
            sqlx::query("DELETE FROM worker_certificates WHERE worker_id = $1")
                .bind(id)
                .execute(&mut *tx)
                .await?;
            sqlx::query("DELETE FROM workers WHERE id = $1")
                .bind(id)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            let mut lost = lost;
            lost.sort();
            Ok(Removal {
                serials,
                lost_sandboxes: lost,
            })
        })
    }

    /// Cordons or uncordons a worker; persisted, so it survives restarts of either side.
    pub async fn set_cordoned(&self, id: &str, cordoned: bool) -> Result<(), StoreError> {
        let updated = with_write_pool!(self, |pool| {
            sqlx::query("UPDATE workers SET cordoned = $1 WHERE id = $2")
                .bind(cordoned)
                .bind(id)
                .execute(pool)
                .await?
                .rows_affected()
        });
        if updated == 0 {
            return Err(StoreError::UnknownWorker(id.to_owned()));
        }
        Ok(())
    }

    /// Starts draining a worker (or moves its deadline); persisted.
    pub async fn start_drain(&self, id: &str, deadline_ms: Option<i64>) -> Result<(), StoreError> {
        let updated = with_write_pool!(self, |pool| {
            sqlx::query(
                "UPDATE workers SET drain_state = 'draining', drain_deadline_ms = $1 \
                 WHERE id = $2 AND state = 'active'",
            )
            .bind(deadline_ms)
            .bind(id)
            .execute(pool)
            .await?
            .rows_affected()
        });
        if updated == 0 {
            return Err(StoreError::UnknownWorker(id.to_owned()));
        }
        Ok(())
    }

    pub async fn undrain(&self, id: &str) -> Result<(), StoreError> {
        let updated = with_write_pool!(self, |pool| {
            sqlx::query(
                "UPDATE workers SET drain_state = '', drain_deadline_ms = NULL WHERE id = $1",
            )
            .bind(id)
            .execute(pool)
            .await?
            .rows_affected()
        });
        if updated == 0 {
            return Err(StoreError::UnknownWorker(id.to_owned()));
        }
        Ok(())
    }

    /// Finishes a drain, unless it was cancelled meanwhile (or another replica finished
    /// it first).
    pub async fn mark_drained(&self, id: &str) -> Result<bool, StoreError> {
        let updated = with_write_pool!(self, |pool| {
            sqlx::query(
                "UPDATE workers SET drain_state = 'drained' \
                 WHERE id = $1 AND drain_state = 'draining'",
            )
            .bind(id)
            .execute(pool)
            .await?
            .rows_affected()
        });
        Ok(updated == 1)
    }

    pub async fn get_worker(&self, id: &str) -> Result<Option<WorkerRow>, StoreError> {
        let sql = format!("SELECT {WORKER_COLUMNS} FROM workers WHERE id = $1");
        let row = with_pool!(self, |pool| {
            sqlx::query_as(&sql).bind(id).fetch_optional(pool).await?
        });
        Ok(row)
    }

    pub async fn list_workers(&self) -> Result<Vec<WorkerRow>, StoreError> {
        let sql = format!("SELECT {WORKER_COLUMNS} FROM workers ORDER BY id");
        let rows = with_pool!(self, |pool| sqlx::query_as(&sql).fetch_all(pool).await?);
        Ok(rows)
    }
}

/// Why an enrollment whose write was refused is refused, given the worker's state now.
fn refusal(credential: &EnrollmentCredential, state: Option<&str>, worker_id: &str) -> StoreError {
    match (credential, state) {
        (_, Some(state)) if state == WorkerState::Revoked.as_str() => {
            StoreError::WorkerRevoked(worker_id.to_owned())
        }
        (_, None) => StoreError::UnknownWorker(worker_id.to_owned()),
        (EnrollmentCredential::WorkerToken { .. }, Some(_)) => {
            StoreError::StaleWorkerToken(worker_id.to_owned())
        }
        (EnrollmentCredential::JoinToken { .. }, Some(_)) => {
            StoreError::WorkerIdTaken(worker_id.to_owned())
        }
    }
}
