//! Heartbeats, cordons, drains, scheduling candidates, revocation and renewal.

use super::*;

pub async fn heartbeats_update_active_workers_and_carry_drain_requests(db: Db) {
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

pub async fn cordons_and_drains_are_persisted_and_conditional(db: Db) {
    let store = db.open().await;
    worker(&store, "w1", 4).await;
    let fresh = |rows: Vec<berth_controlplane::store::CandidateRow>| {
        rows.into_iter().map(|row| row.id).collect::<Vec<_>>()
    };
    store.set_cordoned("w1", true).await.unwrap();
    assert!(store.get_worker("w1").await.unwrap().unwrap().cordoned);
    assert!(fresh(store.schedulable_workers(0, 0, 0).await.unwrap()).is_empty());
    store.set_cordoned("w1", false).await.unwrap();
    assert!(!store.get_worker("w1").await.unwrap().unwrap().cordoned);
    assert_eq!(
        fresh(store.schedulable_workers(0, 0, 0).await.unwrap()),
        vec!["w1"]
    );

    store.start_drain("w1", Some(5_000)).await.unwrap();
    let worker = store.get_worker("w1").await.unwrap().unwrap();
    assert_eq!(worker.drain_state, DrainState::Draining);
    assert_eq!(worker.drain_deadline_ms, Some(5_000));
    assert!(fresh(store.schedulable_workers(0, 0, 0).await.unwrap()).is_empty());
    assert!(store.mark_drained("w1").await.unwrap());
    assert!(!store.mark_drained("w1").await.unwrap(), "only once");
    assert_eq!(
        store.get_worker("w1").await.unwrap().unwrap().drain_state,
        DrainState::Drained
    );
    store.undrain("w1").await.unwrap();
    let worker = store.get_worker("w1").await.unwrap().unwrap();
    assert_eq!(worker.drain_state, DrainState::None);
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

pub async fn schedulable_workers_are_fresh_ready_roomy_and_least_loaded_first(db: Db) {
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
    let rows = store.schedulable_workers(500, 0, 0).await.unwrap();
    let w2 = rows.iter().find(|row| row.id == "w2").unwrap();
    assert_eq!((w2.reserved, w2.max_sandboxes), (1, 4));
    assert_eq!(w2.advertise_addr, "w2:1");
    assert_eq!(ids(rows), vec!["w1", "w3", "w2"]);
    assert_eq!(
        ids(store.schedulable_workers(0, 0, 0).await.unwrap()),
        vec!["stale", "w1", "w3", "w2"]
    );
    sandbox(&store, "b").await;
    place(&store, "b", "w3").await;
    assert_eq!(
        ids(store.schedulable_workers(500, 0, 0).await.unwrap()),
        vec!["w1", "w2"],
        "a full worker is no candidate"
    );
    let mut draining = heartbeat_of("w1", 2, 1_000);
    draining.reported_state = ReportedState::Draining;
    store.record_heartbeat(&draining).await.unwrap();
    assert_eq!(
        ids(store.schedulable_workers(500, 0, 0).await.unwrap()),
        vec!["w2"]
    );
}

pub async fn revoking_a_worker_loses_its_sandboxes_and_refuses_its_certificates(db: Db) {
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
    assert_eq!(worker.state, WorkerState::Revoked);
    assert_eq!(worker.reserved, 0);
    assert!(store.leases_of("w1").await.unwrap().is_empty());
    let a = store.get_sandbox("a").await.unwrap().unwrap();
    assert_eq!(a.state, SandboxState::Lost);
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

pub async fn a_renewal_becomes_the_current_certificate(db: Db) {
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

pub async fn removing_a_worker_needs_force_while_it_holds_sandboxes_and_keeps_refusing_it(db: Db) {
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
        .record_renewal(&NewCertificate {
            serial: "renewed".into(),
            worker_id: "w1".into(),
            issued_at: 150,
            expires_at: 400,
            reason: "renew",
        })
        .await
        .unwrap();

    let refused = store.remove_worker("w1", false, 300).await.unwrap_err();
    assert!(
        matches!(&refused, StoreError::WorkerHoldsSandboxes { worker_id, count: 2 } if worker_id == "w1"),
        "{refused:?}"
    );
    assert!(
        store.get_worker("w1").await.unwrap().is_some(),
        "refused: kept"
    );
    assert!(matches!(
        store.remove_worker("ghost", true, 300).await,
        Err(StoreError::UnknownWorker(_))
    ));

    let removal = store.remove_worker("w1", true, 300).await.unwrap();
    assert_eq!(removal.lost_sandboxes, vec!["a", "b"]);
    assert_eq!(removal.serials, vec!["renewed", "s-w1"]);
    assert!(store.get_worker("w1").await.unwrap().is_none());
    assert!(store.leases_of("w1").await.unwrap().is_empty());
    assert_eq!(
        store.get_sandbox("a").await.unwrap().unwrap().state,
        SandboxState::Lost
    );
    // its certificates stay refused with its record gone
    let mut refused = store.revoked_serials().await.unwrap();
    refused.sort();
    assert_eq!(refused, vec!["renewed", "s-w1"]);
    // the other worker is untouched; removed twice is not found
    assert_eq!(reserved(&store, "w2").await, 1);
    assert!(matches!(
        store.remove_worker("w1", true, 301).await,
        Err(StoreError::UnknownWorker(_))
    ));

    // once its sandboxes are gone a worker goes without force
    store
        .finish_sandbox("c", SandboxState::Destroyed, "", 400)
        .await
        .unwrap();
    let removal = store.remove_worker("w2", false, 500).await.unwrap();
    assert!(removal.lost_sandboxes.is_empty());
    assert!(store.list_workers().await.unwrap().is_empty());
}
