//! The store conformance suite: every store operation's semantics, failure paths
//! included, on both backends. Each test is one async fn taking a [`Db`]; the
//! `conformance!` list at the bottom runs it as `sqlite::<name>` on a temp SQLite file
//! and as `postgres::<name>` on a fresh database of the throwaway Postgres (skipped,
//! visibly, when Postgres is not installed). Tests that race open several store
//! handles on one database, the way replicas share one; the Postgres-only tests at the
//! end cover what only Postgres has (concurrent migration, deadlock victims).

use std::collections::HashSet;

use berth_controlplane::store::{
    ApiKeyRow, AuditRow, Backend, ClusterIdentity, Enrollment, EnrollmentCredential,
    HeartbeatUpdate, NewCertificate, NewJoinToken, NewSandbox, PlaceOutcome, Placement, Store,
    StoreError,
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

// ---------------------------------------------------------------- fixtures

async fn token(store: &Store, jti: &str, uses: u32) {
    token_until(store, jti, uses, 1_000).await;
}

async fn token_until(store: &Store, jti: &str, uses: u32, expires_at: i64) {
    store
        .insert_join_token(&NewJoinToken {
            jti: jti.into(),
            worker_id: None,
            max_uses: uses,
            created_at: 0,
            expires_at,
            created_by: "test".into(),
        })
        .await
        .expect("insert join token");
}

fn enrollment(worker_id: &str, credential: EnrollmentCredential, serial: &str) -> Enrollment {
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

fn join(jti: &str, pinned: bool) -> EnrollmentCredential {
    EnrollmentCredential::JoinToken {
        jti: jti.into(),
        pinned,
    }
}

fn worker_token(jti: &str) -> EnrollmentCredential {
    EnrollmentCredential::WorkerToken { jti: jti.into() }
}

fn heartbeat_of(worker_id: &str, max_sandboxes: i64, now_ms: i64) -> HeartbeatUpdate {
    HeartbeatUpdate {
        worker_id: worker_id.into(),
        reported_state: "ready".into(),
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
async fn worker(store: &Store, id: &str, max: i64) {
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

async fn sandbox(store: &Store, id: &str) {
    sandbox_expiring(store, id, 100).await;
}

async fn sandbox_expiring(store: &Store, id: &str, expires_at: i64) {
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
        })
        .await
        .expect("insert sandbox");
}

async fn place(store: &Store, sandbox_id: &str, worker_id: &str) -> Placement {
    match store
        .place_sandbox(sandbox_id, worker_id, 10_000, None)
        .await
        .expect("place")
    {
        PlaceOutcome::Placed(placement) => placement,
        other => panic!("{sandbox_id} not placed on {worker_id}: {other:?}"),
    }
}

async fn reserved(store: &Store, worker_id: &str) -> i64 {
    store
        .get_worker(worker_id)
        .await
        .unwrap()
        .expect("worker")
        .reserved
}

fn identity(name: &str) -> ClusterIdentity {
    ClusterIdentity {
        trust_domain: "berth.local".into(),
        ca_sha256: format!("ca-{name}"),
        token_key_sha256: format!("tk-{name}"),
    }
}

fn api_key(id: &str) -> ApiKeyRow {
    ApiKeyRow {
        id: id.into(),
        name: format!("key {id}"),
        secret_hash: format!("hash-{id}"),
        scopes: "read,exec".into(),
        created_at: 42,
        revoked_at: None,
    }
}

/// Runs `tasks` futures at once and returns their results in order.
async fn race<T: Send + 'static>(
    tasks: Vec<std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send>>>,
) -> Vec<T> {
    let handles: Vec<_> = tasks.into_iter().map(tokio::spawn).collect();
    let mut results = Vec::new();
    for handle in handles {
        results.push(handle.await.expect("task"));
    }
    results
}

// ---------------------------------------------------------------- basics

async fn the_store_answers_and_names_its_backend(db: Db) {
    let store = db.open().await;
    store.ping().await.unwrap();
    assert_eq!(store.backend(), db.backend);
    store.close().await;
    assert!(
        store.ping().await.is_err(),
        "a closed store answers nothing"
    );
}

// ---------------------------------------------------------------- api keys, cluster

async fn api_keys_are_found_by_id_and_counted(db: Db) {
    let store = db.open().await;
    assert_eq!(store.count_api_keys().await.unwrap(), 0);
    store.insert_api_key(&api_key("k1")).await.unwrap();
    store.insert_api_key(&api_key("k2")).await.unwrap();
    let found = store.find_api_key("k1").await.unwrap().expect("k1");
    assert_eq!(found.name, "key k1");
    assert_eq!(found.secret_hash, "hash-k1");
    assert_eq!(found.scopes, "read,exec");
    assert_eq!(found.created_at, 42);
    assert_eq!(found.revoked_at, None);
    assert!(store.find_api_key("nope").await.unwrap().is_none());
    assert!(matches!(
        store.insert_api_key(&api_key("k1")).await,
        Err(StoreError::Database(_))
    ));
    assert_eq!(store.count_api_keys().await.unwrap(), 2);
}

async fn the_first_writer_sets_the_cluster_identity(db: Db) {
    let store = db.open().await;
    assert_eq!(store.cluster_identity().await.unwrap(), None);
    let first = store
        .claim_cluster_identity(&identity("a"), 1)
        .await
        .unwrap();
    assert_eq!(first, identity("a"));
    let second = store
        .claim_cluster_identity(&identity("b"), 2)
        .await
        .unwrap();
    assert_eq!(second, identity("a"), "the recorded identity stays");
    assert_eq!(store.cluster_identity().await.unwrap(), Some(identity("a")));
}

async fn the_first_admin_key_is_made_once(db: Db) {
    let store = db.open().await;
    assert!(
        !store
            .insert_first_admin_key(&api_key("early"))
            .await
            .unwrap(),
        "nothing before the cluster identity is recorded"
    );
    store
        .claim_cluster_identity(&identity("a"), 1)
        .await
        .unwrap();
    assert!(store.insert_first_admin_key(&api_key("k1")).await.unwrap());
    assert!(!store.insert_first_admin_key(&api_key("k2")).await.unwrap());
    assert_eq!(store.count_api_keys().await.unwrap(), 1);
    assert!(store.find_api_key("k1").await.unwrap().is_some());
    assert!(store.find_api_key("k2").await.unwrap().is_none());
}

async fn an_existing_key_means_no_first_admin_key(db: Db) {
    // a database from before the cluster row: keys exist, the identity is new
    let store = db.open().await;
    store.insert_api_key(&api_key("old")).await.unwrap();
    store
        .claim_cluster_identity(&identity("a"), 1)
        .await
        .unwrap();
    assert!(!store.insert_first_admin_key(&api_key("new")).await.unwrap());
    assert_eq!(store.count_api_keys().await.unwrap(), 1);
}

async fn replicas_starting_together_agree_on_one_identity_and_one_admin_key(db: Db) {
    let [a, b] = db.replicas().await;
    let mut tasks: Vec<std::pin::Pin<Box<dyn std::future::Future<Output = _> + Send>>> = Vec::new();
    for i in 0..8 {
        let store = if i % 2 == 0 { a.clone() } else { b.clone() };
        tasks.push(Box::pin(async move {
            let recorded = store
                .claim_cluster_identity(&identity(&format!("r{i}")), i)
                .await
                .unwrap();
            let made = store
                .insert_first_admin_key(&api_key(&format!("k{i}")))
                .await
                .unwrap();
            (recorded, made)
        }));
    }
    let results = race(tasks).await;
    let identities: HashSet<_> = results.iter().map(|(id, _)| id.ca_sha256.clone()).collect();
    assert_eq!(identities.len(), 1, "one identity for all: {identities:?}");
    assert_eq!(results.iter().filter(|(_, made)| *made).count(), 1);
    assert_eq!(a.count_api_keys().await.unwrap(), 1);
}

// ---------------------------------------------------------------- audit

fn audit_row(seq: i64, prev_hash: &str, hash: &str) -> AuditRow {
    AuditRow {
        seq,
        at_ms: 1_000 + seq,
        actor: "key:k1".into(),
        operation: "POST /api/v1/sandboxes".into(),
        worker_id: "w1".into(),
        sandbox_id: "sbx".into(),
        detail: format!("call {seq}"),
        outcome: "ok".into(),
        request_id: format!("req-{seq}"),
        prev_hash: prev_hash.into(),
        hash: hash.into(),
    }
}

async fn the_audit_chain_moves_only_from_its_head(db: Db) {
    let store = db.open().await;
    assert_eq!(store.audit_head().await.unwrap(), (0, String::new()));
    assert!(store.append_audit(&audit_row(1, "", "h1")).await.unwrap());
    assert_eq!(store.audit_head().await.unwrap(), (1, "h1".into()));
    assert!(
        !store.append_audit(&audit_row(1, "", "h1b")).await.unwrap(),
        "a second record at the same place"
    );
    assert!(
        !store
            .append_audit(&audit_row(2, "wrong", "h2"))
            .await
            .unwrap(),
        "a record naming another predecessor"
    );
    assert!(
        !store.append_audit(&audit_row(3, "h1", "h3")).await.unwrap(),
        "a gap"
    );
    assert!(store.append_audit(&audit_row(2, "h1", "h2")).await.unwrap());
    assert!(store.append_audit(&audit_row(3, "h2", "h3")).await.unwrap());

    let all = store.list_audit(0, 100).await.unwrap();
    assert_eq!(all.len(), 3);
    assert_eq!(all[0], audit_row(1, "", "h1"));
    let since = store.list_audit(1_002, 100).await.unwrap();
    assert_eq!(since.iter().map(|r| r.seq).collect::<Vec<_>>(), vec![2, 3]);
    let limited = store.list_audit(0, 2).await.unwrap();
    assert_eq!(limited.len(), 2);
    let page = store.audit_page(1, 1).await.unwrap();
    assert_eq!(page, vec![audit_row(2, "h1", "h2")]);
    assert!(store.audit_page(3, 10).await.unwrap().is_empty());
}

async fn appends_through_two_replicas_form_one_chain(db: Db) {
    let [a, b] = db.replicas().await;
    let mut tasks: Vec<std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>> =
        Vec::new();
    for i in 0..8 {
        let store = if i % 2 == 0 { a.clone() } else { b.clone() };
        tasks.push(Box::pin(async move {
            for j in 0..3 {
                loop {
                    let (seq, prev) = store.audit_head().await.unwrap();
                    let row = audit_row(seq + 1, &prev, &format!("h-{i}-{j}"));
                    if store.append_audit(&row).await.unwrap() {
                        break;
                    }
                }
            }
        }));
    }
    race(tasks).await;
    let chain = a.audit_page(0, 100).await.unwrap();
    assert_eq!(chain.len(), 24);
    let mut prev = String::new();
    for (index, row) in chain.iter().enumerate() {
        assert_eq!(row.seq, index as i64 + 1);
        assert_eq!(
            row.prev_hash, prev,
            "record {} links to its predecessor",
            row.seq
        );
        prev = row.hash.clone();
    }
    assert_eq!(b.audit_head().await.unwrap(), (24, prev));
}

// ---------------------------------------------------------------- enrollment

async fn enrollment_spends_the_token_and_records_worker_and_certificate(db: Db) {
    let store = db.open().await;
    token(&store, "j1", 1).await;
    store
        .enroll_worker(&enrollment("w1", join("j1", false), "s1"))
        .await
        .unwrap();
    let worker = store.get_worker("w1").await.unwrap().unwrap();
    assert_eq!(worker.cert_serial, "s1");
    assert_eq!(worker.cert_expires_at, 200);
    assert_eq!(worker.state, "active");
    assert_eq!(worker.reported_state, "ready");
    assert_eq!(worker.worker_token_jti, "wt-s1");
    assert_eq!(worker.spiffe_id, "spiffe://berth.local/worker/w1");
    assert_eq!(worker.enrolled_at, 100);
    assert!(worker.last_heartbeat_ms.is_none());
    assert!(!worker.cordoned);
    assert_eq!(worker.reserved, 0);
    let again = store
        .enroll_worker(&enrollment("w2", join("j1", false), "s2"))
        .await;
    assert!(
        matches!(again, Err(StoreError::JoinTokenUsedUp)),
        "{again:?}"
    );
    assert!(store.get_worker("w2").await.unwrap().is_none());
    assert!(store.revoked_serials().await.unwrap().is_empty());
}

async fn a_join_token_counts_its_uses_and_its_expiry(db: Db) {
    let store = db.open().await;
    token(&store, "twice", 2).await;
    token_until(&store, "expired", 5, 100).await;
    for (id, serial) in [("a", "s1"), ("b", "s2")] {
        store
            .enroll_worker(&enrollment(id, join("twice", false), serial))
            .await
            .unwrap();
    }
    for credential in [
        join("twice", false),
        join("expired", false),
        join("unknown", false),
    ] {
        let refused = store
            .enroll_worker(&enrollment("c", credential, "s3"))
            .await;
        assert!(
            matches!(refused, Err(StoreError::JoinTokenUsedUp)),
            "{refused:?}"
        );
    }
    assert_eq!(store.list_workers().await.unwrap().len(), 2);
}

async fn an_unpinned_token_cannot_take_over_an_enrolled_id_and_spends_nothing(db: Db) {
    let store = db.open().await;
    token(&store, "j1", 1).await;
    token(&store, "j2", 1).await;
    store
        .enroll_worker(&enrollment("w1", join("j1", false), "s1"))
        .await
        .unwrap();
    let takeover = store
        .enroll_worker(&enrollment("w1", join("j2", false), "s2"))
        .await;
    assert!(
        matches!(takeover, Err(StoreError::WorkerIdTaken(_))),
        "{takeover:?}"
    );
    assert_eq!(
        store.get_worker("w1").await.unwrap().unwrap().cert_serial,
        "s1"
    );
    // j2 was not spent by the refused attempt
    store
        .enroll_worker(&enrollment("w2", join("j2", false), "s3"))
        .await
        .unwrap();
}

async fn a_pinned_token_takes_over_an_id_unless_it_is_revoked(db: Db) {
    let store = db.open().await;
    for jti in ["j1", "j2", "j3"] {
        token(&store, jti, 1).await;
    }
    store
        .enroll_worker(&enrollment("w1", join("j1", false), "s1"))
        .await
        .unwrap();
    store
        .enroll_worker(&enrollment("w1", join("j2", true), "s2"))
        .await
        .unwrap();
    let worker = store.get_worker("w1").await.unwrap().unwrap();
    assert_eq!(worker.cert_serial, "s2");
    assert_eq!(worker.worker_token_jti, "wt-s2");
    store.revoke_worker("w1", 300).await.unwrap();
    let refused = store
        .enroll_worker(&enrollment("w1", join("j3", true), "s3"))
        .await;
    assert!(
        matches!(refused, Err(StoreError::WorkerRevoked(_))),
        "{refused:?}"
    );
    // j3 was not spent
    store
        .enroll_worker(&enrollment("w9", join("j3", false), "s4"))
        .await
        .unwrap();
}

async fn only_the_newest_worker_token_reenrolls(db: Db) {
    let store = db.open().await;
    token(&store, "j1", 1).await;
    store
        .enroll_worker(&enrollment("w1", join("j1", false), "s1"))
        .await
        .unwrap();
    store
        .enroll_worker(&enrollment("w1", worker_token("wt-s1"), "s2"))
        .await
        .unwrap();
    assert_eq!(
        store.get_worker("w1").await.unwrap().unwrap().cert_serial,
        "s2"
    );
    let stale = store
        .enroll_worker(&enrollment("w1", worker_token("wt-s1"), "s3"))
        .await;
    assert!(
        matches!(stale, Err(StoreError::StaleWorkerToken(_))),
        "{stale:?}"
    );
    let unknown = store
        .enroll_worker(&enrollment("nobody", worker_token("x"), "s4"))
        .await;
    assert!(
        matches!(unknown, Err(StoreError::UnknownWorker(_))),
        "{unknown:?}"
    );
    assert!(store.get_worker("nobody").await.unwrap().is_none());
    store.revoke_worker("w1", 300).await.unwrap();
    let revoked = store
        .enroll_worker(&enrollment("w1", worker_token("wt-s2"), "s5"))
        .await;
    assert!(
        matches!(revoked, Err(StoreError::WorkerRevoked(_))),
        "{revoked:?}"
    );
}

async fn enrollments_through_two_replicas_all_succeed(db: Db) {
    let [a, b] = db.replicas().await;
    let mut tasks: Vec<std::pin::Pin<Box<dyn std::future::Future<Output = _> + Send>>> = Vec::new();
    for i in 0..16 {
        let store = if i % 2 == 0 { a.clone() } else { b.clone() };
        tasks.push(Box::pin(async move {
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
    for result in race(tasks).await {
        result.expect("no enrollment fails on a busy database");
    }
    assert_eq!(a.list_workers().await.unwrap().len(), 16);
}

async fn a_used_join_token_cannot_be_used_twice_through_two_replicas(db: Db) {
    let [a, b] = db.replicas().await;
    token(&a, "once", 1).await;
    let mut tasks: Vec<std::pin::Pin<Box<dyn std::future::Future<Output = _> + Send>>> = Vec::new();
    for i in 0..8 {
        let store = if i % 2 == 0 { a.clone() } else { b.clone() };
        tasks.push(Box::pin(async move {
            store
                .enroll_worker(&enrollment(
                    &format!("w{i}"),
                    join("once", false),
                    &format!("s{i}"),
                ))
                .await
        }));
    }
    let results = race(tasks).await;
    assert_eq!(
        results.iter().filter(|r| r.is_ok()).count(),
        1,
        "{results:?}"
    );
    for result in &results {
        if let Err(err) = result {
            assert!(matches!(err, StoreError::JoinTokenUsedUp), "{err:?}");
        }
    }
    assert_eq!(b.list_workers().await.unwrap().len(), 1);
}

async fn racing_enrollments_of_one_id_admit_one_and_spend_only_its_token(db: Db) {
    let [a, b] = db.replicas().await;
    for i in 0..8 {
        token(&a, &format!("j{i}"), 1).await;
    }
    let mut tasks: Vec<std::pin::Pin<Box<dyn std::future::Future<Output = _> + Send>>> = Vec::new();
    for i in 0..8 {
        let store = if i % 2 == 0 { a.clone() } else { b.clone() };
        tasks.push(Box::pin(async move {
            store
                .enroll_worker(&enrollment(
                    "same",
                    join(&format!("j{i}"), false),
                    &format!("s{i}"),
                ))
                .await
        }));
    }
    let results = race(tasks).await;
    let winners: Vec<usize> = (0..8).filter(|i| results[*i].is_ok()).collect();
    assert_eq!(winners.len(), 1, "{results:?}");
    for (i, result) in results.iter().enumerate() {
        if let Err(err) = result {
            assert!(matches!(err, StoreError::WorkerIdTaken(_)), "{err:?}");
            // the loser's token is still good
            a.enroll_worker(&enrollment(
                &format!("other{i}"),
                join(&format!("j{i}"), false),
                &format!("t{i}"),
            ))
            .await
            .unwrap();
        }
    }
    let worker = a.get_worker("same").await.unwrap().unwrap();
    assert_eq!(worker.cert_serial, format!("s{}", winners[0]));
}

async fn racing_reenrollments_with_one_worker_token_admit_one(db: Db) {
    let [a, b] = db.replicas().await;
    token(&a, "j1", 1).await;
    a.enroll_worker(&enrollment("w1", join("j1", false), "s0"))
        .await
        .unwrap();
    let mut tasks: Vec<std::pin::Pin<Box<dyn std::future::Future<Output = _> + Send>>> = Vec::new();
    for i in 1..=8 {
        let store = if i % 2 == 0 { a.clone() } else { b.clone() };
        tasks.push(Box::pin(async move {
            store
                .enroll_worker(&enrollment("w1", worker_token("wt-s0"), &format!("s{i}")))
                .await
        }));
    }
    let results = race(tasks).await;
    assert_eq!(
        results.iter().filter(|r| r.is_ok()).count(),
        1,
        "{results:?}"
    );
    for result in &results {
        if let Err(err) = result {
            assert!(matches!(err, StoreError::StaleWorkerToken(_)), "{err:?}");
        }
    }
}

// ---------------------------------------------------------------- workers

async fn heartbeats_update_active_workers_and_carry_drain_requests(db: Db) {
    let store = db.open().await;
    token(&store, "j1", 1).await;
    store
        .enroll_worker(&enrollment("w1", join("j1", false), "s1"))
        .await
        .unwrap();
    let mut update = heartbeat_of("w1", 8, 123_456);
    update.hostname = "h2".into();
    update.advertise_addr = "127.0.0.1:2".into();
    update.reported_sandboxes = 3;
    assert!(!store.record_heartbeat(&update).await.unwrap());
    let worker = store.get_worker("w1").await.unwrap().unwrap();
    assert_eq!(worker.last_heartbeat_ms, Some(123_456));
    assert_eq!(worker.hostname, "h2");
    assert_eq!(worker.advertise_addr, "127.0.0.1:2");
    assert_eq!(worker.max_sandboxes, 8);
    assert_eq!(worker.reported_sandboxes, 3);
    store.start_drain("w1", None).await.unwrap();
    assert!(
        store.record_heartbeat(&update).await.unwrap(),
        "drain asked"
    );
    store.revoke_worker("w1", 1).await.unwrap();
    assert!(matches!(
        store.record_heartbeat(&update).await,
        Err(StoreError::WorkerRevoked(_))
    ));
    update.worker_id = "ghost".into();
    assert!(matches!(
        store.record_heartbeat(&update).await,
        Err(StoreError::UnknownWorker(_))
    ));
}

async fn cordons_and_drains_are_persisted_and_conditional(db: Db) {
    let store = db.open().await;
    worker(&store, "w1", 4).await;
    let fresh = |rows: Vec<berth_controlplane::store::CandidateRow>| {
        rows.into_iter().map(|row| row.id).collect::<Vec<_>>()
    };
    store.set_cordoned("w1", true).await.unwrap();
    assert!(store.get_worker("w1").await.unwrap().unwrap().cordoned);
    assert!(fresh(store.schedulable_workers(0).await.unwrap()).is_empty());
    store.set_cordoned("w1", false).await.unwrap();
    assert!(!store.get_worker("w1").await.unwrap().unwrap().cordoned);
    assert_eq!(
        fresh(store.schedulable_workers(0).await.unwrap()),
        vec!["w1"]
    );

    store.start_drain("w1", Some(5_000)).await.unwrap();
    let worker = store.get_worker("w1").await.unwrap().unwrap();
    assert_eq!(worker.drain_state, "draining");
    assert_eq!(worker.drain_deadline_ms, Some(5_000));
    assert!(fresh(store.schedulable_workers(0).await.unwrap()).is_empty());
    assert!(store.mark_drained("w1").await.unwrap());
    assert!(!store.mark_drained("w1").await.unwrap(), "only once");
    assert_eq!(
        store.get_worker("w1").await.unwrap().unwrap().drain_state,
        "drained"
    );
    store.undrain("w1").await.unwrap();
    let worker = store.get_worker("w1").await.unwrap().unwrap();
    assert_eq!(worker.drain_state, "");
    assert_eq!(worker.drain_deadline_ms, None);
    assert!(!store.mark_drained("w1").await.unwrap(), "not draining");
    store.start_drain("w1", None).await.unwrap();
    store.undrain("w1").await.unwrap();
    assert!(!store.mark_drained("w1").await.unwrap(), "cancelled");

    for result in [
        store.set_cordoned("ghost", true).await,
        store.start_drain("ghost", None).await,
        store.undrain("ghost").await,
    ] {
        assert!(
            matches!(result, Err(StoreError::UnknownWorker(_))),
            "{result:?}"
        );
    }
    store.revoke_worker("w1", 1).await.unwrap();
    assert!(matches!(
        store.start_drain("w1", None).await,
        Err(StoreError::UnknownWorker(_))
    ));
}

async fn schedulable_workers_are_fresh_ready_roomy_and_least_loaded_first(db: Db) {
    let store = db.open().await;
    worker(&store, "w1", 2).await;
    worker(&store, "w2", 4).await;
    worker(&store, "w3", 1).await;
    worker(&store, "stale", 4).await;
    store
        .record_heartbeat(&heartbeat_of("stale", 4, 10))
        .await
        .unwrap();
    sandbox(&store, "a").await;
    place(&store, "a", "w2").await;
    let ids = |rows: Vec<berth_controlplane::store::CandidateRow>| {
        rows.into_iter().map(|row| row.id).collect::<Vec<_>>()
    };
    let rows = store.schedulable_workers(500).await.unwrap();
    let w2 = rows.iter().find(|row| row.id == "w2").unwrap();
    assert_eq!((w2.reserved, w2.max_sandboxes), (1, 4));
    assert_eq!(w2.advertise_addr, "w2:1");
    assert_eq!(ids(rows), vec!["w1", "w3", "w2"]);
    assert_eq!(
        ids(store.schedulable_workers(0).await.unwrap()),
        vec!["stale", "w1", "w3", "w2"]
    );
    sandbox(&store, "b").await;
    place(&store, "b", "w3").await;
    assert_eq!(
        ids(store.schedulable_workers(500).await.unwrap()),
        vec!["w1", "w2"],
        "a full worker is no candidate"
    );
    let mut draining = heartbeat_of("w1", 2, 1_000);
    draining.reported_state = "draining".into();
    store.record_heartbeat(&draining).await.unwrap();
    assert_eq!(
        ids(store.schedulable_workers(500).await.unwrap()),
        vec!["w2"]
    );
}

async fn revoking_a_worker_loses_its_sandboxes_and_refuses_its_certificates(db: Db) {
    let store = db.open().await;
    worker(&store, "w1", 4).await;
    worker(&store, "w2", 4).await;
    for id in ["a", "b", "c"] {
        sandbox(&store, id).await;
    }
    place(&store, "a", "w1").await;
    place(&store, "b", "w1").await;
    place(&store, "c", "w2").await;
    store
        .mark_sandbox_running("a", "vm-a", 2_000)
        .await
        .unwrap();
    store
        .record_renewal(&NewCertificate {
            serial: "renewed".into(),
            worker_id: "w1".into(),
            issued_at: 150,
            expires_at: 400,
            reason: "renew",
        })
        .await
        .unwrap();
    let revocation = store.revoke_worker("w1", 300).await.unwrap();
    let mut serials = revocation.serials.clone();
    serials.sort();
    assert_eq!(serials, vec!["renewed", "s-w1"]);
    let mut lost = revocation.lost_sandboxes.clone();
    lost.sort();
    assert_eq!(lost, vec!["a", "b"]);
    let mut refused = store.revoked_serials().await.unwrap();
    refused.sort();
    assert_eq!(refused, vec!["renewed", "s-w1"]);
    let worker = store.get_worker("w1").await.unwrap().unwrap();
    assert_eq!(worker.state, "revoked");
    assert_eq!(worker.reserved, 0);
    assert!(store.leases_of("w1").await.unwrap().is_empty());
    let a = store.get_sandbox("a").await.unwrap().unwrap();
    assert_eq!(a.state, "lost");
    assert_eq!(a.generation, None);
    // the other worker is untouched
    assert_eq!(
        store.get_sandbox("c").await.unwrap().unwrap().generation,
        Some(1)
    );
    assert_eq!(reserved(&store, "w2").await, 1);
    // twice is harmless; an unknown worker is not found
    store.revoke_worker("w1", 301).await.unwrap();
    assert!(matches!(
        store.revoke_worker("ghost", 1).await,
        Err(StoreError::UnknownWorker(_))
    ));
    let renewal = store
        .record_renewal(&NewCertificate {
            serial: "late".into(),
            worker_id: "w1".into(),
            issued_at: 310,
            expires_at: 500,
            reason: "renew",
        })
        .await;
    assert!(
        matches!(renewal, Err(StoreError::WorkerRevoked(_))),
        "{renewal:?}"
    );
    assert!(
        !store
            .revoked_serials()
            .await
            .unwrap()
            .contains(&"late".to_owned())
    );
}

async fn a_renewal_becomes_the_current_certificate(db: Db) {
    let store = db.open().await;
    worker(&store, "w1", 4).await;
    store
        .record_renewal(&NewCertificate {
            serial: "r1".into(),
            worker_id: "w1".into(),
            issued_at: 150,
            expires_at: 999,
            reason: "renew",
        })
        .await
        .unwrap();
    let worker = store.get_worker("w1").await.unwrap().unwrap();
    assert_eq!(
        (worker.cert_serial.as_str(), worker.cert_expires_at),
        ("r1", 999)
    );
    let duplicate = store
        .record_renewal(&NewCertificate {
            serial: "r1".into(),
            worker_id: "w1".into(),
            issued_at: 160,
            expires_at: 999,
            reason: "renew",
        })
        .await;
    assert!(
        matches!(duplicate, Err(StoreError::Database(_))),
        "{duplicate:?}"
    );
}

// ---------------------------------------------------------------- sandboxes, leases

async fn a_sandbox_goes_from_creating_to_destroyed(db: Db) {
    let store = db.open().await;
    worker(&store, "w1", 2).await;
    sandbox(&store, "a").await;
    assert!(matches!(
        store
            .insert_sandbox(&NewSandbox {
                id: "a".into(),
                provider: "mock".into(),
                image: "img".into(),
                memory_mb: 1,
                vcpus: 1,
                owner_id: String::new(),
                template: String::new(),
                metadata: "{}".into(),
                created_at: 1,
                expires_at: 2,
            })
            .await,
        Err(StoreError::Database(_))
    ));
    let row = store.get_sandbox("a").await.unwrap().unwrap();
    assert_eq!(row.state, "creating");
    assert_eq!((row.provider.as_str(), row.image.as_str()), ("mock", "img"));
    assert_eq!((row.memory_mb, row.vcpus, row.expires_at), (64, 1, 100));
    assert_eq!(row.owner_id, "owner");
    assert_eq!((row.worker_id, row.generation), (None, None));
    assert!(store.get_sandbox("nope").await.unwrap().is_none());

    let placement = place(&store, "a", "w1").await;
    assert_eq!(placement.generation, 1);
    assert_eq!(placement.advertise_addr, "w1:1");
    let row = store.get_sandbox("a").await.unwrap().unwrap();
    assert_eq!(row.worker_id.as_deref(), Some("w1"));
    assert_eq!(row.generation, Some(1));
    assert_eq!(row.advertise_addr.as_deref(), Some("w1:1"));
    assert_eq!(row.last_heartbeat_ms, Some(1_000));
    assert_eq!(reserved(&store, "w1").await, 1);

    store
        .mark_sandbox_running("a", "vm-1", 5_000)
        .await
        .unwrap();
    store
        .mark_sandbox_running("a", "vm-2", 6_000)
        .await
        .unwrap();
    let row = store.get_sandbox("a").await.unwrap().unwrap();
    assert_eq!(
        (row.state.as_str(), row.vm_id.as_str()),
        ("running", "vm-1")
    );
    assert_eq!(
        store.leases_of("w1").await.unwrap(),
        vec![("a".to_owned(), 1, "running".to_owned(), Some(5_000))]
    );
    assert_eq!(store.list_sandboxes().await.unwrap().len(), 1);

    store.finish_sandbox("a", "destroyed", "", 7).await.unwrap();
    let row = store.get_sandbox("a").await.unwrap().unwrap();
    assert_eq!(row.state, "destroyed");
    assert_eq!(row.destroyed_at, Some(7));
    assert_eq!(row.generation, None);
    assert_eq!(reserved(&store, "w1").await, 0);
    assert!(store.list_sandboxes().await.unwrap().is_empty());
    assert!(store.leases_of("w1").await.unwrap().is_empty());
}

async fn sandboxes_are_listed_oldest_first_with_errors_kept(db: Db) {
    let store = db.open().await;
    worker(&store, "w1", 4).await;
    for id in ["c", "a", "b"] {
        sandbox(&store, id).await;
    }
    store
        .finish_sandbox("b", "error", "spawn failed", 3)
        .await
        .unwrap();
    let listed: Vec<_> = store
        .list_sandboxes()
        .await
        .unwrap()
        .into_iter()
        .map(|row| (row.id, row.state, row.error))
        .collect();
    assert_eq!(
        listed,
        vec![
            ("a".to_owned(), "creating".to_owned(), String::new()),
            (
                "b".to_owned(),
                "error".to_owned(),
                "spawn failed".to_owned()
            ),
            ("c".to_owned(), "creating".to_owned(), String::new()),
        ]
    );
}

async fn placement_reserves_capacity_and_never_overfills(db: Db) {
    let store = db.open().await;
    worker(&store, "w1", 2).await;
    for id in ["a", "b", "c"] {
        sandbox(&store, id).await;
    }
    place(&store, "a", "w1").await;
    place(&store, "b", "w1").await;
    assert!(matches!(
        store.place_sandbox("c", "w1", 10, None).await.unwrap(),
        PlaceOutcome::WorkerFull
    ));
    assert_eq!(
        store.get_sandbox("c").await.unwrap().unwrap().generation,
        None
    );
    store.finish_sandbox("a", "destroyed", "", 5).await.unwrap();
    let placed = place(&store, "c", "w1").await;
    assert_eq!(placed.generation, 1);
    assert_eq!(reserved(&store, "w1").await, 2);
    assert!(matches!(
        store
            .place_sandbox("c", "ghost", 10, Some(1))
            .await
            .unwrap(),
        PlaceOutcome::WorkerFull
    ));
    store.revoke_worker("w1", 1).await.unwrap();
    sandbox(&store, "d").await;
    assert!(matches!(
        store.place_sandbox("d", "w1", 10, None).await.unwrap(),
        PlaceOutcome::WorkerFull
    ));
}

async fn two_replicas_scheduling_at_once_never_overfill_a_worker(db: Db) {
    let [a, b] = db.replicas().await;
    worker(&a, "w1", 5).await;
    let mut tasks: Vec<std::pin::Pin<Box<dyn std::future::Future<Output = _> + Send>>> = Vec::new();
    for i in 0..20 {
        let store = if i % 2 == 0 { a.clone() } else { b.clone() };
        tasks.push(Box::pin(async move {
            let id = format!("s{i}");
            sandbox(&store, &id).await;
            store.place_sandbox(&id, "w1", 10, None).await.unwrap()
        }));
    }
    let placed = race(tasks)
        .await
        .into_iter()
        .filter(|outcome| matches!(outcome, PlaceOutcome::Placed(_)))
        .count();
    assert_eq!(placed, 5);
    assert_eq!(reserved(&b, "w1").await, 5);
    assert_eq!(a.leases_of("w1").await.unwrap().len(), 5);
}

async fn a_moved_lease_has_a_higher_generation_and_old_holders_lose_it(db: Db) {
    let store = db.open().await;
    worker(&store, "w1", 5).await;
    worker(&store, "w2", 5).await;
    sandbox(&store, "a").await;
    let first = place(&store, "a", "w1").await;
    let PlaceOutcome::Placed(second) = store
        .place_sandbox("a", "w2", 10_000, Some(first.generation))
        .await
        .unwrap()
    else {
        panic!("the lease did not move");
    };
    assert!(second.generation > first.generation);
    assert_eq!(
        reserved(&store, "w1").await,
        0,
        "the old holder's slot came back"
    );
    assert_eq!(reserved(&store, "w2").await, 1);
    assert!(matches!(
        store
            .place_sandbox("a", "w1", 10_000, Some(first.generation))
            .await
            .unwrap(),
        PlaceOutcome::LeaseTaken
    ));
    assert!(matches!(
        store.place_sandbox("a", "w1", 10_000, None).await.unwrap(),
        PlaceOutcome::LeaseTaken
    ));
    assert_eq!(
        reserved(&store, "w1").await,
        0,
        "a lost race reserves nothing"
    );
    let stale = store
        .renew_leases("w1", &[("a".into(), first.generation)], 99_999)
        .await
        .unwrap();
    assert_eq!(stale, 0);
    let current = store
        .renew_leases("w2", &[("a".into(), second.generation)], 99_999)
        .await
        .unwrap();
    assert_eq!(current, 1);
}

async fn tasks_racing_for_one_lease_have_exactly_one_winner(db: Db) {
    let [a, b] = db.replicas().await;
    worker(&a, "w1", 100).await;
    worker(&a, "w2", 100).await;
    sandbox(&a, "contested").await;
    let mut seen: Option<i64> = None;
    for round in 0..5 {
        let mut tasks: Vec<std::pin::Pin<Box<dyn std::future::Future<Output = _> + Send>>> =
            Vec::new();
        for i in 0..8 {
            let store = if i % 2 == 0 { a.clone() } else { b.clone() };
            let worker_id = if (i + round) % 2 == 0 { "w1" } else { "w2" };
            tasks.push(Box::pin(async move {
                store
                    .place_sandbox("contested", worker_id, 10_000, seen)
                    .await
                    .unwrap()
            }));
        }
        let outcomes = race(tasks).await;
        let winners: Vec<&Placement> = outcomes
            .iter()
            .filter_map(|outcome| match outcome {
                PlaceOutcome::Placed(placement) => Some(placement),
                _ => None,
            })
            .collect();
        assert_eq!(winners.len(), 1, "round {round}: {outcomes:?}");
        assert!(
            outcomes
                .iter()
                .all(|o| matches!(o, PlaceOutcome::Placed(_) | PlaceOutcome::LeaseTaken))
        );
        let generation = winners[0].generation;
        assert!(
            seen.is_none_or(|previous| generation > previous),
            "generation {generation} after {seen:?}"
        );
        seen = Some(generation);
        let row = a.get_sandbox("contested").await.unwrap().unwrap();
        assert_eq!(row.generation, Some(generation));
        assert_eq!(
            row.worker_id.as_deref(),
            Some(winners[0].worker_id.as_str())
        );
        let held = reserved(&a, "w1").await + reserved(&a, "w2").await;
        assert_eq!(held, 1, "one slot for one lease after round {round}");
    }
}

async fn transitions_are_conditional_and_racing_ones_have_one_winner(db: Db) {
    let [a, b] = db.replicas().await;
    sandbox(&a, "s").await;
    assert!(
        a.transition_sandbox("s", &["creating"], "running")
            .await
            .unwrap()
    );
    assert!(
        !a.transition_sandbox("s", &["creating"], "running")
            .await
            .unwrap()
    );
    assert!(
        !a.transition_sandbox("nope", &["creating"], "running")
            .await
            .unwrap()
    );
    let mut tasks: Vec<std::pin::Pin<Box<dyn std::future::Future<Output = _> + Send>>> = Vec::new();
    for i in 0..8 {
        let store = if i % 2 == 0 { a.clone() } else { b.clone() };
        tasks.push(Box::pin(async move {
            store
                .transition_sandbox("s", &["running"], "destroying")
                .await
                .unwrap()
        }));
    }
    let won = race(tasks).await.into_iter().filter(|won| *won).count();
    assert_eq!(won, 1);
    assert!(
        a.transition_sandbox("s", &["creating", "destroying"], "running")
            .await
            .unwrap()
    );
    assert_eq!(b.get_sandbox("s").await.unwrap().unwrap().state, "running");
}

async fn finishing_one_sandbox_twice_returns_its_slot_once(db: Db) {
    let [a, b] = db.replicas().await;
    worker(&a, "w1", 4).await;
    sandbox(&a, "x").await;
    sandbox(&a, "y").await;
    place(&a, "x", "w1").await;
    place(&a, "y", "w1").await;
    let mut tasks: Vec<std::pin::Pin<Box<dyn std::future::Future<Output = _> + Send>>> = Vec::new();
    for i in 0..6 {
        let store = if i % 2 == 0 { a.clone() } else { b.clone() };
        tasks.push(Box::pin(async move {
            store.finish_sandbox("x", "destroyed", "", 9).await
        }));
    }
    for result in race(tasks).await {
        result.unwrap();
    }
    assert_eq!(reserved(&a, "w1").await, 1, "y still holds its slot");
}

async fn expiry_moves_only_for_live_sandboxes_and_never_shortens_the_lease(db: Db) {
    let store = db.open().await;
    worker(&store, "w1", 4).await;
    sandbox(&store, "a").await;
    place(&store, "a", "w1").await; // lease until 10_000
    assert!(store.set_sandbox_expiry("a", 500, 5_000).await.unwrap());
    assert_eq!(
        store.get_sandbox("a").await.unwrap().unwrap().expires_at,
        500
    );
    assert!(
        store.expired_leases(9_999).await.unwrap().is_empty(),
        "not shortened"
    );
    assert!(store.set_sandbox_expiry("a", 600, 20_000).await.unwrap());
    assert!(
        store.expired_leases(19_999).await.unwrap().is_empty(),
        "extended"
    );
    assert_eq!(store.expired_leases(20_001).await.unwrap().len(), 1);
    assert!(!store.set_sandbox_expiry("nope", 1, 1).await.unwrap());
    store.finish_sandbox("a", "destroyed", "", 1).await.unwrap();
    assert!(!store.set_sandbox_expiry("a", 700, 30_000).await.unwrap());
    assert_eq!(
        store.get_sandbox("a").await.unwrap().unwrap().expires_at,
        600
    );
}

async fn expired_sandboxes_are_running_ones_past_their_ttl(db: Db) {
    let store = db.open().await;
    sandbox_expiring(&store, "old", 100).await;
    sandbox_expiring(&store, "young", 1_000).await;
    sandbox_expiring(&store, "creating", 100).await;
    sandbox_expiring(&store, "gone", 100).await;
    for id in ["old", "young", "gone"] {
        assert!(
            store
                .transition_sandbox(id, &["creating"], "running")
                .await
                .unwrap()
        );
    }
    store
        .finish_sandbox("gone", "destroyed", "", 5)
        .await
        .unwrap();
    assert_eq!(store.expired_sandboxes(500).await.unwrap(), vec!["old"]);
    assert_eq!(
        store.expired_sandboxes(2_000).await.unwrap(),
        vec!["old", "young"]
    );
}

async fn leases_renew_only_for_their_holder_and_generation(db: Db) {
    let store = db.open().await;
    worker(&store, "w1", 4).await;
    worker(&store, "w2", 4).await;
    for id in ["a", "b"] {
        sandbox(&store, id).await;
        place(&store, id, "w1").await;
    }
    assert_eq!(store.expired_leases(10_000).await.unwrap(), vec![]);
    assert_eq!(
        store.expired_leases(10_001).await.unwrap(),
        vec![
            ("a".to_owned(), "w1".to_owned(), 1),
            ("b".to_owned(), "w1".to_owned(), 1)
        ]
    );
    let renewed = store
        .renew_leases(
            "w1",
            &[
                ("b".into(), 1),
                ("a".into(), 1),
                ("a".into(), 7),
                ("zzz".into(), 1),
            ],
            50_000,
        )
        .await
        .unwrap();
    assert_eq!(renewed, 2);
    assert_eq!(
        store
            .renew_leases("w2", &[("a".into(), 1)], 90_000)
            .await
            .unwrap(),
        0,
        "not its lease"
    );
    assert!(store.expired_leases(49_999).await.unwrap().is_empty());
    assert_eq!(store.expired_leases(50_001).await.unwrap().len(), 2);
    assert_eq!(store.renew_leases("w1", &[], 1).await.unwrap(), 0);
}

async fn mark_lost_is_conditional_and_racing_ones_have_one_winner(db: Db) {
    let [a, b] = db.replicas().await;
    worker(&a, "w1", 4).await;
    sandbox(&a, "s").await;
    place(&a, "s", "w1").await;
    a.mark_sandbox_running("s", "vm", 1).await.unwrap();
    assert!(
        !a.mark_lost("s", "w1", 2, "x").await.unwrap(),
        "other generation"
    );
    assert!(
        !a.mark_lost("s", "w2", 1, "x").await.unwrap(),
        "other worker"
    );
    let mut tasks: Vec<std::pin::Pin<Box<dyn std::future::Future<Output = _> + Send>>> = Vec::new();
    for i in 0..8 {
        let store = if i % 2 == 0 { a.clone() } else { b.clone() };
        tasks.push(Box::pin(async move {
            store
                .mark_lost("s", "w1", 1, "its worker stopped heartbeating")
                .await
                .unwrap()
        }));
    }
    let won = race(tasks).await.into_iter().filter(|won| *won).count();
    assert_eq!(won, 1);
    let row = a.get_sandbox("s").await.unwrap().unwrap();
    assert_eq!(row.state, "lost");
    assert_eq!(row.error, "its worker stopped heartbeating");
    assert_eq!(row.generation, None);
    assert_eq!(reserved(&a, "w1").await, 0);
}

// ---------------------------------------------------------------- both backends

macro_rules! conformance {
    ($($test:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $test() {
                    super::$test(super::Db::sqlite()).await;
                }
            )*
        }

        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $test() {
                    if let Some(db) = super::Db::postgres(concat!("postgres::", stringify!($test))).await {
                        super::$test(db).await;
                    }
                }
            )*
        }
    };
}

conformance!(
    the_store_answers_and_names_its_backend,
    api_keys_are_found_by_id_and_counted,
    the_first_writer_sets_the_cluster_identity,
    the_first_admin_key_is_made_once,
    an_existing_key_means_no_first_admin_key,
    replicas_starting_together_agree_on_one_identity_and_one_admin_key,
    the_audit_chain_moves_only_from_its_head,
    appends_through_two_replicas_form_one_chain,
    enrollment_spends_the_token_and_records_worker_and_certificate,
    a_join_token_counts_its_uses_and_its_expiry,
    an_unpinned_token_cannot_take_over_an_enrolled_id_and_spends_nothing,
    a_pinned_token_takes_over_an_id_unless_it_is_revoked,
    only_the_newest_worker_token_reenrolls,
    enrollments_through_two_replicas_all_succeed,
    a_used_join_token_cannot_be_used_twice_through_two_replicas,
    racing_enrollments_of_one_id_admit_one_and_spend_only_its_token,
    racing_reenrollments_with_one_worker_token_admit_one,
    heartbeats_update_active_workers_and_carry_drain_requests,
    cordons_and_drains_are_persisted_and_conditional,
    schedulable_workers_are_fresh_ready_roomy_and_least_loaded_first,
    revoking_a_worker_loses_its_sandboxes_and_refuses_its_certificates,
    a_renewal_becomes_the_current_certificate,
    a_sandbox_goes_from_creating_to_destroyed,
    sandboxes_are_listed_oldest_first_with_errors_kept,
    placement_reserves_capacity_and_never_overfills,
    two_replicas_scheduling_at_once_never_overfill_a_worker,
    a_moved_lease_has_a_higher_generation_and_old_holders_lose_it,
    tasks_racing_for_one_lease_have_exactly_one_winner,
    transitions_are_conditional_and_racing_ones_have_one_winner,
    finishing_one_sandbox_twice_returns_its_slot_once,
    expiry_moves_only_for_live_sandboxes_and_never_shortens_the_lease,
    expired_sandboxes_are_running_ones_past_their_ttl,
    leases_renew_only_for_their_holder_and_generation,
    mark_lost_is_conditional_and_racing_ones_have_one_winner,
);

// ---------------------------------------------------------------- Postgres only

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
        tokio::spawn(async move { store.finish_sandbox("s", "destroyed", "", 9).await })
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
    assert_eq!(row.state, "destroyed");
    assert_eq!(row.generation, None);
}
