//! Join tokens, enrollment and re-enrollment, alone and racing through replicas.

use super::*;

pub async fn enrollment_spends_the_token_and_records_worker_and_certificate(db: Db) {
    let store = db.open().await;
    token(&store, "j1", 1).await;
    store
        .enroll_worker(&enrollment("w1", join("j1", false), "s1"))
        .await
        .unwrap();
    let worker = store.get_worker("w1").await.unwrap().unwrap();
    assert_eq!(worker.cert_serial, "s1");
    assert_eq!(worker.cert_expires_at, 200);
    assert_eq!(worker.state, WorkerState::Active);
    assert_eq!(worker.reported_state, ReportedState::Ready);
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

pub async fn a_join_token_counts_its_uses_and_its_expiry(db: Db) {
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

pub async fn an_unpinned_token_cannot_take_over_an_enrolled_id_and_spends_nothing(db: Db) {
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

pub async fn a_pinned_token_takes_over_an_id_unless_it_is_revoked(db: Db) {
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

pub async fn only_the_newest_worker_token_reenrolls(db: Db) {
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

pub async fn enrollments_through_two_replicas_all_succeed(db: Db) {
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

pub async fn a_used_join_token_cannot_be_used_twice_through_two_replicas(db: Db) {
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

pub async fn racing_enrollments_of_one_id_admit_one_and_spend_only_its_token(db: Db) {
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

pub async fn racing_reenrollments_with_one_worker_token_admit_one(db: Db) {
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

async fn pooled_token(store: &Store, jti: &str, pool: &str, labels: &str) {
    store
        .insert_join_token(&NewJoinToken {
            jti: jti.into(),
            worker_id: None,
            max_uses: 1,
            created_at: 0,
            expires_at: 1_000,
            created_by: "test".into(),
            pool: pool.into(),
            labels: labels.into(),
        })
        .await
        .expect("insert join token");
}

pub async fn a_join_token_gives_its_worker_a_pool_and_labels_that_reenrolling_keeps(db: Db) {
    let store = db.open().await;
    pooled_token(&store, "j-eu", "eu", r#"{"region":"eu"}"#).await;
    pooled_token(&store, "j-us", "us", r#"{"region":"us"}"#).await;
    token(&store, "j-plain", 1).await;
    store
        .enroll_worker(&enrollment("w1", join("j-eu", false), "s1"))
        .await
        .unwrap();
    store
        .enroll_worker(&enrollment("w2", join("j-plain", false), "s2"))
        .await
        .unwrap();
    async fn placement_of(store: &Store, id: &str) -> (String, String) {
        let worker = store.get_worker(id).await.unwrap().unwrap();
        (worker.pool, worker.labels)
    }
    let placed = |id: &'static str| placement_of(&store, id);
    assert_eq!(
        placed("w1").await,
        ("eu".into(), r#"{"region":"eu"}"#.into())
    );
    assert_eq!(placed("w2").await, ("default".into(), "{}".into()));

    // heartbeats and a re-enrollment with the worker token keep them
    store
        .record_heartbeat(&heartbeat_of("w1", 4, 1_000))
        .await
        .unwrap();
    store
        .enroll_worker(&enrollment("w1", worker_token("wt-s1"), "s3"))
        .await
        .unwrap();
    assert_eq!(
        placed("w1").await,
        ("eu".into(), r#"{"region":"eu"}"#.into())
    );

    // the scheduler's candidates carry them
    store
        .record_heartbeat(&heartbeat_of("w1", 4, 1_000))
        .await
        .unwrap();
    let candidates = store.schedulable_workers(0, 0, 0).await.unwrap();
    let w1 = candidates.iter().find(|c| c.id == "w1").expect("w1 listed");
    assert_eq!(
        (w1.pool.as_str(), w1.labels.as_str()),
        ("eu", r#"{"region":"eu"}"#)
    );

    // a pinned token taking the id over brings its own
    store
        .enroll_worker(&enrollment("w1", join("j-us", true), "s4"))
        .await
        .unwrap();
    assert_eq!(
        placed("w1").await,
        ("us".into(), r#"{"region":"us"}"#.into())
    );
}
