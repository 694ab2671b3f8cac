//! `workers`: enrolled workers, their current certificate and what their last heartbeat said.

use super::{NewCertificate, Store, StoreError, certificates, join_tokens};

const WORKER_COLUMNS: &str = "id, spiffe_id, hostname, advertise_addr, providers, max_sandboxes, \
     vcpus, memory_mb, version, state, reported_state, worker_token_jti, enrolled_at, \
     last_heartbeat_ms, cert_serial, cert_expires_at, cordoned, drain_state, drain_deadline_ms, \
     reported_sandboxes";

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
    pub state: String,
    pub reported_state: String,
    pub worker_token_jti: String,
    pub enrolled_at: i64,
    pub last_heartbeat_ms: Option<i64>,
    pub cert_serial: String,
    pub cert_expires_at: i64,
    /// Takes no new sandboxes (SQLite keeps booleans as integers).
    pub cordoned: bool,
    /// '' | draining | drained
    pub drain_state: String,
    pub drain_deadline_ms: Option<i64>,
    /// Sandboxes the provider reported in the last heartbeat.
    pub reported_sandboxes: i64,
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

#[derive(Debug, Clone)]
pub struct HeartbeatUpdate {
    pub worker_id: String,
    pub reported_state: String,
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

impl Store {
    /// Spends the credential, upserts the worker and records its certificate, all in one
    /// transaction: a refused enrollment spends nothing.
    pub async fn enroll_worker(&self, enrollment: &Enrollment) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        let existing: Option<(String, String)> =
            sqlx::query_as("SELECT state, worker_token_jti FROM workers WHERE id = $1")
                .bind(&enrollment.worker_id)
                .fetch_optional(&mut *tx)
                .await?;
        if let Some((state, _)) = &existing
            && state == "revoked"
        {
            return Err(StoreError::WorkerRevoked(enrollment.worker_id.clone()));
        }
        match &enrollment.credential {
            EnrollmentCredential::JoinToken { jti, pinned } => {
                if existing.is_some() && !pinned {
                    return Err(StoreError::WorkerIdTaken(enrollment.worker_id.clone()));
                }
                join_tokens::consume(&mut tx, jti, enrollment.now).await?;
            }
            EnrollmentCredential::WorkerToken { jti } => match &existing {
                None => return Err(StoreError::UnknownWorker(enrollment.worker_id.clone())),
                Some((_, current)) if current != jti => {
                    return Err(StoreError::StaleWorkerToken(enrollment.worker_id.clone()));
                }
                Some(_) => {}
            },
        }
        sqlx::query(
            "INSERT INTO workers (id, spiffe_id, hostname, advertise_addr, providers, max_sandboxes, \
                 vcpus, memory_mb, version, state, reported_state, worker_token_jti, enrolled_at, \
                 last_heartbeat_ms, cert_serial, cert_expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 'active', 'ready', $10, $11, NULL, $12, $13) \
             ON CONFLICT (id) DO UPDATE SET spiffe_id = excluded.spiffe_id, \
                 hostname = excluded.hostname, advertise_addr = excluded.advertise_addr, \
                 providers = excluded.providers, max_sandboxes = excluded.max_sandboxes, \
                 vcpus = excluded.vcpus, memory_mb = excluded.memory_mb, version = excluded.version, \
                 worker_token_jti = excluded.worker_token_jti, enrolled_at = excluded.enrolled_at, \
                 cert_serial = excluded.cert_serial, cert_expires_at = excluded.cert_expires_at",
        )
        .bind(&enrollment.worker_id)
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
        .execute(&mut *tx)
        .await?;
        certificates::insert(&mut tx, &enrollment.certificate).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Records a heartbeat of an active worker; returns whether a drain was asked of it.
    pub async fn record_heartbeat(&self, update: &HeartbeatUpdate) -> Result<bool, StoreError> {
        let drain_state: Option<String> = sqlx::query_scalar(
            "UPDATE workers SET reported_state = $1, hostname = $2, advertise_addr = $3, \
                 providers = $4, max_sandboxes = $5, vcpus = $6, memory_mb = $7, version = $8, \
                 last_heartbeat_ms = $9, reported_sandboxes = $10 \
             WHERE id = $11 AND state = 'active' \
             RETURNING drain_state",
        )
        .bind(&update.reported_state)
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
        .fetch_optional(&self.pool)
        .await?;
        if let Some(drain_state) = drain_state {
            return Ok(drain_state == "draining");
        }
        match self.get_worker(&update.worker_id).await? {
            Some(_) => Err(StoreError::WorkerRevoked(update.worker_id.clone())),
            None => Err(StoreError::UnknownWorker(update.worker_id.clone())),
        }
    }

    /// Revokes a worker: its state, every certificate it holds, its leases and slots;
    /// its live sandboxes become `lost`. One transaction; revoking twice is harmless.
    pub async fn revoke_worker(&self, id: &str, now: i64) -> Result<Revocation, StoreError> {
        let mut tx = self.begin_write().await?;
        let found: Option<String> = sqlx::query_scalar(
            "UPDATE workers SET state = 'revoked', reserved = 0 WHERE id = $1 RETURNING id",
        )
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
        if found.is_none() {
            return Err(StoreError::UnknownWorker(id.to_owned()));
        }
        sqlx::query(
            "UPDATE worker_certificates SET revoked_at = $1 WHERE worker_id = $2 AND revoked_at IS NULL",
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
            "UPDATE sandboxes SET state = 'lost', error = 'its worker was revoked'              WHERE worker_id = $1 AND state IN ('creating', 'running', 'destroying')              RETURNING id",
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
    }

    /// Cordons or uncordons a worker; persisted, so it survives restarts of either side.
    pub async fn set_cordoned(&self, id: &str, cordoned: bool) -> Result<(), StoreError> {
        let updated = sqlx::query("UPDATE workers SET cordoned = $1 WHERE id = $2")
            .bind(cordoned)
            .bind(id)
            .execute(&self.pool)
            .await?;
        if updated.rows_affected() == 0 {
            return Err(StoreError::UnknownWorker(id.to_owned()));
        }
        Ok(())
    }

    /// Starts draining a worker (or moves its deadline); persisted.
    pub async fn start_drain(&self, id: &str, deadline_ms: Option<i64>) -> Result<(), StoreError> {
        let updated = sqlx::query(
            "UPDATE workers SET drain_state = 'draining', drain_deadline_ms = $1 \
             WHERE id = $2 AND state = 'active'",
        )
        .bind(deadline_ms)
        .bind(id)
        .execute(&self.pool)
        .await?;
        if updated.rows_affected() == 0 {
            return Err(StoreError::UnknownWorker(id.to_owned()));
        }
        Ok(())
    }

    pub async fn undrain(&self, id: &str) -> Result<(), StoreError> {
        let updated = sqlx::query(
            "UPDATE workers SET drain_state = '', drain_deadline_ms = NULL WHERE id = $1",
        )
        .bind(id)
        .execute(&self.pool)
        .await?;
        if updated.rows_affected() == 0 {
            return Err(StoreError::UnknownWorker(id.to_owned()));
        }
        Ok(())
    }

    /// Finishes a drain, unless it was cancelled meanwhile.
    pub async fn mark_drained(&self, id: &str) -> Result<bool, StoreError> {
        let updated = sqlx::query(
            "UPDATE workers SET drain_state = 'drained' WHERE id = $1 AND drain_state = 'draining'",
        )
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(updated.rows_affected() == 1)
    }

    pub async fn get_worker(&self, id: &str) -> Result<Option<WorkerRow>, StoreError> {
        let row = sqlx::query_as(&format!(
            "SELECT {WORKER_COLUMNS} FROM workers WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row)
    }

    pub async fn list_workers(&self) -> Result<Vec<WorkerRow>, StoreError> {
        let rows = sqlx::query_as(&format!("SELECT {WORKER_COLUMNS} FROM workers ORDER BY id"))
            .fetch_all(&self.pool)
            .await?;
        Ok(rows)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::NewJoinToken;
    use crate::store::testing::temp_store;

    fn enrollment(worker_id: &str, credential: EnrollmentCredential, serial: &str) -> Enrollment {
        Enrollment {
            worker_id: worker_id.into(),
            spiffe_id: format!("spiffe://berth.local/worker/{worker_id}"),
            credential,
            hostname: "host".into(),
            advertise_addr: "127.0.0.1:1".into(),
            providers: "[]".into(),
            max_sandboxes: 4,
            vcpus: 2,
            memory_mb: 1024,
            version: "test".into(),
            new_worker_token_jti: format!("wt-{serial}"),
            certificate: NewCertificate {
                serial: serial.into(),
                worker_id: worker_id.into(),
                issued_at: 100,
                expires_at: 200,
                reason: "enroll",
            },
            now: 100,
        }
    }

    async fn token(store: &Store, jti: &str, uses: u32) {
        store
            .insert_join_token(&NewJoinToken {
                jti: jti.into(),
                worker_id: None,
                max_uses: uses,
                created_at: 0,
                expires_at: 1_000,
                created_by: "test".into(),
            })
            .await
            .unwrap();
    }

    fn join(jti: &str, pinned: bool) -> EnrollmentCredential {
        EnrollmentCredential::JoinToken {
            jti: jti.into(),
            pinned,
        }
    }

    #[tokio::test]
    async fn enrollment_spends_the_token_and_records_worker_and_certificate() {
        let (_dir, store) = temp_store().await;
        token(&store, "j1", 1).await;
        store
            .enroll_worker(&enrollment("w1", join("j1", false), "s1"))
            .await
            .unwrap();
        let worker = store.get_worker("w1").await.unwrap().unwrap();
        assert_eq!(worker.cert_serial, "s1");
        assert_eq!(worker.state, "active");
        assert!(worker.last_heartbeat_ms.is_none());
        let again = store
            .enroll_worker(&enrollment("w2", join("j1", false), "s2"))
            .await;
        assert!(matches!(again, Err(StoreError::JoinTokenUsedUp)));
    }

    #[tokio::test]
    async fn an_unpinned_token_cannot_take_over_an_enrolled_id_and_spends_nothing() {
        let (_dir, store) = temp_store().await;
        token(&store, "j1", 1).await;
        token(&store, "j2", 1).await;
        store
            .enroll_worker(&enrollment("w1", join("j1", false), "s1"))
            .await
            .unwrap();
        let takeover = store
            .enroll_worker(&enrollment("w1", join("j2", false), "s2"))
            .await;
        assert!(matches!(takeover, Err(StoreError::WorkerIdTaken(_))));
        // j2 was not spent by the refused attempt
        store
            .enroll_worker(&enrollment("w2", join("j2", false), "s3"))
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn only_the_newest_worker_token_reenrolls() {
        let (_dir, store) = temp_store().await;
        token(&store, "j1", 1).await;
        store
            .enroll_worker(&enrollment("w1", join("j1", false), "s1"))
            .await
            .unwrap();
        let reenroll = |jti: &str, serial: &str| {
            enrollment(
                "w1",
                EnrollmentCredential::WorkerToken { jti: jti.into() },
                serial,
            )
        };
        store.enroll_worker(&reenroll("wt-s1", "s2")).await.unwrap();
        let stale = store.enroll_worker(&reenroll("wt-s1", "s3")).await;
        assert!(matches!(stale, Err(StoreError::StaleWorkerToken(_))));
        let unknown = store
            .enroll_worker(&enrollment(
                "nobody",
                EnrollmentCredential::WorkerToken { jti: "x".into() },
                "s4",
            ))
            .await;
        assert!(matches!(unknown, Err(StoreError::UnknownWorker(_))));
    }

    #[tokio::test]
    async fn concurrent_enrollments_all_succeed() {
        let (_dir, store) = temp_store().await;
        let mut tasks = Vec::new();
        for i in 0..16 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                let jti = format!("j{i}");
                token(&store, &jti, 1).await;
                store
                    .enroll_worker(&enrollment(
                        &format!("w{i}"),
                        join(&jti, false),
                        &format!("s{i}"),
                    ))
                    .await
            }));
        }
        for task in tasks {
            task.await
                .unwrap()
                .expect("no enrollment fails on a busy database");
        }
        assert_eq!(store.list_workers().await.unwrap().len(), 16);
    }

    #[tokio::test]
    async fn heartbeats_update_known_workers_only() {
        let (_dir, store) = temp_store().await;
        token(&store, "j1", 1).await;
        store
            .enroll_worker(&enrollment("w1", join("j1", false), "s1"))
            .await
            .unwrap();
        let mut update = HeartbeatUpdate {
            worker_id: "w1".into(),
            reported_state: "ready".into(),
            hostname: "h2".into(),
            advertise_addr: "127.0.0.1:2".into(),
            providers: "[]".into(),
            max_sandboxes: 8,
            vcpus: 2,
            memory_mb: 512,
            version: "v".into(),
            reported_sandboxes: 0,
            now_ms: 123_456,
        };
        store.record_heartbeat(&update).await.unwrap();
        let worker = store.get_worker("w1").await.unwrap().unwrap();
        assert_eq!(worker.last_heartbeat_ms, Some(123_456));
        assert_eq!(worker.hostname, "h2");
        update.worker_id = "ghost".into();
        assert!(matches!(
            store.record_heartbeat(&update).await,
            Err(StoreError::UnknownWorker(_))
        ));
    }
}
