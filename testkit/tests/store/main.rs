//! The store conformance suite: every store operation's semantics, failure paths
//! included, on both backends. Each test is one async fn taking a [`Db`], in the
//! module of its tables; the `conformance!` list below runs it as `sqlite::<name>` on a
//! temp SQLite file and as `postgres::<name>` on a fresh database of the throwaway
//! Postgres (skipped, visibly, when Postgres is not installed). Tests that race open
//! several store handles on one database, the way replicas share one; the
//! Postgres-only tests at the end cover what only Postgres has (concurrent migration,
//! deadlock victims).

use std::collections::HashSet;

use berth_controlplane::store::{
    ApiKeyInfo, ApiKeyRow, AuditHead, AuditRow, Backend, ClusterIdentity, DrainState, Enrollment,
    EnrollmentCredential, ExpiredLease, HeartbeatUpdate, HeldLease, NewCertificate, NewJoinToken,
    NewSandbox, PlaceOutcome, Placement, ReportedState, SandboxState, Store, StoreError,
    WorkerState,
};
use berth_testkit::postgres as throwaway;

/// One test's database; opens as many store handles on it as the test wants.
struct Db {
    url: String,
    backend: Backend,
    _dir: Option<tempfile::TempDir>,
}

impl Db {
    fn sqlite() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        Self {
            url: format!("sqlite://{}", dir.path().join("berth.db").display()),
            backend: Backend::Sqlite,
            _dir: Some(dir),
        }
    }

    async fn postgres(test: &str) -> Option<Self> {
        Some(Self {
            url: throwaway::fresh_database(test).await?,
            backend: Backend::Postgres,
            _dir: None,
        })
    }

    async fn open(&self) -> Store {
        Store::open_url(&self.url).await.expect("open store")
    }

    /// Two handles on the database, like two replicas (opened one after the other:
    /// concurrent opening is a Postgres property, tested below).
    async fn replicas(&self) -> [Store; 2] {
        let first = self.open().await;
        [first, self.open().await]
    }
}

mod api_keys;
mod cluster;
mod enrollment;
mod sandboxes;
mod workers;

pub(crate) async fn token(store: &Store, jti: &str, uses: u32) {
    token_until(store, jti, uses, 1_000).await;
}

pub(crate) async fn token_until(store: &Store, jti: &str, uses: u32, expires_at: i64) {
    store
        .insert_join_token(&NewJoinToken {
            jti: jti.into(),
            worker_id: None,
            max_uses: uses,
            created_at: 0,
            expires_at,
            created_by: "test".into(),
            pool: "default".into(),
            labels: "{}".into(),
        })
        .await
        .expect("insert join token");
}

pub(crate) fn enrollment(
    worker_id: &str,
    credential: EnrollmentCredential,
    serial: &str,
) -> Enrollment {
    Enrollment {
        worker_id: worker_id.into(),
        spiffe_id: format!("spiffe://berth.local/worker/{worker_id}"),
        credential,
        hostname: "host".into(),
        advertise_addr: format!("{worker_id}:1"),
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

pub(crate) fn join(jti: &str, pinned: bool) -> EnrollmentCredential {
    EnrollmentCredential::JoinToken {
        jti: jti.into(),
        pinned,
    }
}

pub(crate) fn worker_token(jti: &str) -> EnrollmentCredential {
    EnrollmentCredential::WorkerToken { jti: jti.into() }
}

pub(crate) fn heartbeat_of(worker_id: &str, max_sandboxes: i64, now_ms: i64) -> HeartbeatUpdate {
    HeartbeatUpdate {
        worker_id: worker_id.into(),
        reported_state: ReportedState::Ready,
        hostname: "host".into(),
        advertise_addr: format!("{worker_id}:1"),
        providers: "[]".into(),
        max_sandboxes,
        vcpus: 2,
        memory_mb: 1024,
        version: "test".into(),
        reported_sandboxes: 0,
        now_ms,
    }
}

/// An enrolled worker holding up to `max` sandboxes that heartbeated at 1000.
pub(crate) async fn worker(store: &Store, id: &str, max: i64) {
    token(store, &format!("j-{id}"), 1).await;
    store
        .enroll_worker(&enrollment(
            id,
            join(&format!("j-{id}"), false),
            &format!("s-{id}"),
        ))
        .await
        .expect("enroll");
    store
        .record_heartbeat(&heartbeat_of(id, max, 1_000))
        .await
        .expect("heartbeat");
}

pub(crate) async fn sandbox(store: &Store, id: &str) {
    sandbox_expiring(store, id, 100).await;
}

pub(crate) async fn sandbox_expiring(store: &Store, id: &str, expires_at: i64) {
    store
        .insert_sandbox(&NewSandbox {
            id: id.into(),
            provider: "mock".into(),
            image: "img".into(),
            memory_mb: 64,
            vcpus: 1,
            owner_id: "owner".into(),
            template: String::new(),
            metadata: "{}".into(),
            created_at: 1,
            expires_at,
            internet: true,
            team_id: "default".into(),
            workdir: String::new(),
            shell: String::new(),
            ports: "[]".into(),
            auto_stop_secs: 0,
        })
        .await
        .expect("insert sandbox");
}

pub(crate) async fn place(store: &Store, sandbox_id: &str, worker_id: &str) -> Placement {
    match store
        .place_sandbox(sandbox_id, worker_id, 10_000, None)
        .await
        .expect("place")
    {
        PlaceOutcome::Placed(placement) => placement,
        other => panic!("{sandbox_id} not placed on {worker_id}: {other:?}"),
    }
}

pub(crate) async fn reserved(store: &Store, worker_id: &str) -> i64 {
    store
        .get_worker(worker_id)
        .await
        .unwrap()
        .expect("worker")
        .reserved
}

pub(crate) fn identity(name: &str) -> ClusterIdentity {
    ClusterIdentity {
        trust_domain: "berth.local".into(),
        ca_sha256: format!("ca-{name}"),
        token_key_sha256: format!("tk-{name}"),
    }
}

pub(crate) fn api_key(id: &str) -> ApiKeyRow {
    ApiKeyRow {
        id: id.into(),
        name: format!("key {id}"),
        secret_hash: format!("hash-{id}"),
        scopes: "read,exec".into(),
        created_at: 42,
        expires_at: None,
        last_used_at: None,
        revoked_at: None,
        team_id: None,
        user_id: None,
    }
}

pub(crate) fn admin_key(id: &str) -> ApiKeyRow {
    ApiKeyRow {
        scopes: "admin".into(),
        ..api_key(id)
    }
}

/// Runs `tasks` futures at once and returns their results in order.
pub(crate) async fn race<T: Send + 'static>(
    tasks: Vec<std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send>>>,
) -> Vec<T> {
    let handles: Vec<_> = tasks.into_iter().map(tokio::spawn).collect();
    let mut results = Vec::new();
    for handle in handles {
        results.push(handle.await.expect("task"));
    }
    results
}

// ---------------------------------------------------------------- both backends

macro_rules! conformance {
    ($($module:ident :: $test:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $test() {
                    super::$module::$test(super::Db::sqlite()).await;
                }
            )*
        }

        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $test() {
                    if let Some(db) = super::Db::postgres(concat!("postgres::", stringify!($test))).await {
                        super::$module::$test(db).await;
                    }
                }
            )*
        }
    };
}

conformance!(
    cluster::the_store_answers_and_names_its_backend,
    cluster::api_keys_are_found_by_id_and_counted,
    api_keys::keys_are_listed_without_their_hash_with_expiry_and_last_use,
    api_keys::revoking_is_idempotent_and_unknown_keys_are_named,
    api_keys::the_last_usable_admin_key_cannot_be_revoked,
    api_keys::replicas_revoking_the_last_two_admin_keys_leave_one,
    api_keys::a_use_is_written_at_most_once_per_interval,
    cluster::the_first_writer_sets_the_cluster_identity,
    cluster::the_first_admin_key_is_made_once,
    cluster::an_existing_key_means_no_first_admin_key,
    cluster::replicas_starting_together_agree_on_one_identity_and_one_admin_key,
    cluster::the_audit_chain_moves_only_from_its_head,
    cluster::templates_move_their_version_only_on_new_content,
    cluster::secrets_are_kept_sealed_per_team,
    cluster::appends_through_two_replicas_form_one_chain,
    enrollment::enrollment_spends_the_token_and_records_worker_and_certificate,
    enrollment::a_join_token_counts_its_uses_and_its_expiry,
    enrollment::an_unpinned_token_cannot_take_over_an_enrolled_id_and_spends_nothing,
    enrollment::a_pinned_token_takes_over_an_id_unless_it_is_revoked,
    enrollment::only_the_newest_worker_token_reenrolls,
    enrollment::enrollments_through_two_replicas_all_succeed,
    enrollment::a_used_join_token_cannot_be_used_twice_through_two_replicas,
    enrollment::racing_enrollments_of_one_id_admit_one_and_spend_only_its_token,
    enrollment::racing_reenrollments_with_one_worker_token_admit_one,
    enrollment::a_join_token_gives_its_worker_a_pool_and_labels_that_reenrolling_keeps,
    workers::heartbeats_update_active_workers_and_carry_drain_requests,
    workers::cordons_and_drains_are_persisted_and_conditional,
    workers::schedulable_workers_are_fresh_ready_roomy_and_least_loaded_first,
    workers::revoking_a_worker_loses_its_sandboxes_and_refuses_its_certificates,
    workers::a_renewal_becomes_the_current_certificate,
    workers::removing_a_worker_needs_force_while_it_holds_sandboxes_and_keeps_refusing_it,
    sandboxes::a_sandbox_goes_from_creating_to_destroyed,
    sandboxes::sandboxes_are_listed_oldest_first_with_errors_kept,
    sandboxes::placement_reserves_capacity_and_never_overfills,
    sandboxes::two_replicas_scheduling_at_once_never_overfill_a_worker,
    sandboxes::a_moved_lease_has_a_higher_generation_and_old_holders_lose_it,
    sandboxes::tasks_racing_for_one_lease_have_exactly_one_winner,
    sandboxes::transitions_are_conditional_and_racing_ones_have_one_winner,
    sandboxes::finishing_one_sandbox_twice_returns_its_slot_once,
    sandboxes::a_burst_of_state_changes_lands_each_as_alone,
    sandboxes::expiry_moves_only_for_live_sandboxes_and_never_shortens_the_lease,
    sandboxes::expired_sandboxes_are_live_or_failed_ones_past_their_ttl,
    sandboxes::unconfirmed_spawns_are_found_and_ended_once,
    sandboxes::leases_renew_only_for_their_holder_and_generation,
    sandboxes::mark_lost_is_conditional_and_racing_ones_have_one_winner,
    sandboxes::destroy_claims_have_one_winner_and_stalled_ones_one_taker,
    sandboxes::a_new_sandbox_is_placed_on_the_first_eligible_candidate_in_one_step,
    sandboxes::replicas_creating_at_once_fill_a_worker_exactly,
    sandboxes::placement_counts_memory_and_cpus_and_gives_them_back,
    sandboxes::idle_sandboxes_are_found_from_their_last_use_and_stopped_once,
);

/// Replicas starting together on an empty database: sqlx's advisory lock lets one
/// migrate while the others wait, so every start succeeds and each migration is
/// applied once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replicas_opening_an_empty_postgres_together_migrate_it_once() {
    let Some(url) = throwaway::fresh_database("replicas_opening_an_empty_postgres_together").await
    else {
        return;
    };
    let mut opening = Vec::new();
    for _ in 0..6 {
        let url = url.clone();
        opening.push(tokio::spawn(async move { Store::open_url(&url).await }));
    }
    let mut stores = Vec::new();
    for task in opening {
        stores.push(task.await.unwrap().expect("every replica starts"));
    }
    let pool = sqlx::PgPool::connect(&url).await.unwrap();
    let versions: Vec<(i64, bool)> =
        sqlx::query_as("SELECT version, success FROM _sqlx_migrations ORDER BY version")
            .fetch_all(&pool)
            .await
            .unwrap();
    let migrations = std::fs::read_dir(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../controlplane/migrations/postgres"),
    )
    .unwrap()
    .count();
    assert_eq!(versions.len(), migrations);
    assert!(versions.iter().all(|(_, success)| *success));
    for store in &stores {
        store.ping().await.unwrap();
    }
}

/// A transaction Postgres picks as a deadlock victim is run again instead of failing
/// the caller. The test holds a worker row, lets `finish_sandbox` take the lease row
/// and wait for the worker row, then asks for the lease row itself: a deadlock, which
/// the store's side (the shorter `deadlock_timeout`) loses, retries and completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_postgres_deadlock_victim_is_run_again() {
    use sqlx::Connection;
    let Some(url) = throwaway::fresh_database("a_postgres_deadlock_victim_is_run_again").await
    else {
        return;
    };
    let mut admin = sqlx::PgConnection::connect(&url).await.unwrap();
    let database: String = sqlx::query_scalar("SELECT current_database()")
        .fetch_one(&mut admin)
        .await
        .unwrap();
    // the store's connections (opened after this) detect deadlocks after 2s
    sqlx::query(&format!(
        "ALTER DATABASE {database} SET deadlock_timeout = '2s'"
    ))
    .execute(&mut admin)
    .await
    .unwrap();
    let store = Store::open_url(&url).await.unwrap();
    worker(&store, "w1", 4).await;
    sandbox(&store, "s").await;
    place(&store, "s", "w1").await;

    let mut other = sqlx::PgConnection::connect(&url).await.unwrap();
    sqlx::query("BEGIN").execute(&mut other).await.unwrap();
    sqlx::query("SET LOCAL deadlock_timeout = '60s'")
        .execute(&mut other)
        .await
        .unwrap();
    sqlx::query("UPDATE workers SET hostname = hostname WHERE id = 'w1'")
        .execute(&mut other)
        .await
        .unwrap();
    let finishing = {
        let store = store.clone();
        tokio::spawn(async move {
            store
                .finish_sandbox("s", SandboxState::Destroyed, "", 9)
                .await
        })
    };
    berth_testkit::eventually(
        "finish_sandbox to wait for the worker row",
        std::time::Duration::from_secs(10),
        || {
            let url = url.clone();
            async move {
                let mut probe = sqlx::PgConnection::connect(&url).await.ok()?;
                let waiting: i64 = sqlx::query_scalar(
                    "SELECT COUNT(*) FROM pg_stat_activity \
                     WHERE datname = current_database() AND wait_event_type = 'Lock'",
                )
                .fetch_one(&mut probe)
                .await
                .ok()?;
                (waiting > 0).then_some(())
            }
        },
    )
    .await;
    // closes the cycle; returns once the store's transaction was rolled back
    sqlx::query("DELETE FROM leases WHERE sandbox_id = 's'")
        .execute(&mut other)
        .await
        .unwrap();
    sqlx::query("COMMIT").execute(&mut other).await.unwrap();
    finishing
        .await
        .unwrap()
        .expect("the deadlock victim was run again and finished");
    let row = store.get_sandbox("s").await.unwrap().unwrap();
    assert_eq!(row.state, SandboxState::Destroyed);
    assert_eq!(row.generation, None);
}

/// A self-signed CA certificate (PEM) and the issuer it makes.
fn test_ca(name: &str) -> (String, rcgen::Issuer<'static, rcgen::KeyPair>) {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    let cert = params.self_signed(&key).unwrap();
    (cert.pem(), rcgen::Issuer::new(params, key))
}

/// The TLS settings of a `postgres://` url are honoured: `sslmode=verify-full` with
/// `sslrootcert` talks TLS to a server whose certificate chains to that CA, and
/// refuses a server whose certificate does not.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_postgres_url_with_verify_full_speaks_tls_to_the_right_server_only() {
    let test = "a_postgres_url_with_verify_full_speaks_tls";
    if !throwaway::available(test) {
        return;
    }
    let (ca_pem, issuer) = test_ca("berth test database ca");
    let server_key = rcgen::KeyPair::generate().unwrap();
    let server_cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()])
        .unwrap()
        .signed_by(&server_key, &issuer)
        .unwrap();
    let server = throwaway::start_with_tls(&server_cert.pem(), &server_key.serialize_pem())
        .expect("postgres binaries were found");
    let dir = tempfile::tempdir().unwrap();
    let (right, wrong) = (dir.path().join("right.pem"), dir.path().join("wrong.pem"));
    std::fs::write(&right, &ca_pem).unwrap();
    std::fs::write(&wrong, test_ca("another ca").0).unwrap();
    let url_with = |root: &std::path::Path| {
        format!(
            "{}?sslmode=verify-full&sslrootcert={}",
            server.url("postgres"),
            root.display()
        )
    };

    let store = Store::open_url(&url_with(&right))
        .await
        .expect("the store connects over verified TLS");
    store.ping().await.unwrap();
    let pool = sqlx::PgPool::connect(&url_with(&right)).await.unwrap();
    let encrypted: bool =
        sqlx::query_scalar("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert!(encrypted, "the connection is not encrypted");

    let refused = Store::open_url(&url_with(&wrong)).await;
    assert!(refused.is_err(), "a server the CA did not sign was trusted");
}
