//! Sandboxes, placement and leases, alone and racing through replicas.

use super::*;

pub async fn a_sandbox_goes_from_creating_to_destroyed(db: Db) {
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
                internet: true,
                team_id: "default".into(),
                workdir: String::new(),
                shell: String::new(),
                ports: "[]".into(),
                auto_stop_secs: 0,
            })
            .await,
        Err(StoreError::Database(_))
    ));
    let row = store.get_sandbox("a").await.unwrap().unwrap();
    assert_eq!(row.state, SandboxState::Creating);
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
        (row.state, row.vm_id.as_str()),
        (SandboxState::Running, "vm-1")
    );
    assert_eq!(
        store.leases_of("w1").await.unwrap(),
        vec![HeldLease {
            sandbox_id: "a".to_owned(),
            generation: 1,
            state: SandboxState::Running,
            started_at_ms: Some(5_000)
        }]
    );
    assert_eq!(store.list_sandboxes().await.unwrap().len(), 1);

    store
        .finish_sandbox("a", SandboxState::Destroyed, "", 7)
        .await
        .unwrap();
    let row = store.get_sandbox("a").await.unwrap().unwrap();
    assert_eq!(row.state, SandboxState::Destroyed);
    assert_eq!(row.destroyed_at, Some(7));
    assert_eq!(row.generation, None);
    assert_eq!(reserved(&store, "w1").await, 0);
    assert!(store.list_sandboxes().await.unwrap().is_empty());
    assert!(store.leases_of("w1").await.unwrap().is_empty());
}

pub async fn sandboxes_are_listed_oldest_first_with_errors_kept(db: Db) {
    let store = db.open().await;
    worker(&store, "w1", 4).await;
    for id in ["c", "a", "b"] {
        sandbox(&store, id).await;
    }
    store
        .finish_sandbox("b", SandboxState::Error, "spawn failed", 3)
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
            ("a".to_owned(), SandboxState::Creating, String::new()),
            (
                "b".to_owned(),
                SandboxState::Error,
                "spawn failed".to_owned()
            ),
            ("c".to_owned(), SandboxState::Creating, String::new()),
        ]
    );
}

pub async fn placement_reserves_capacity_and_never_overfills(db: Db) {
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
    store
        .finish_sandbox("a", SandboxState::Destroyed, "", 5)
        .await
        .unwrap();
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

pub async fn two_replicas_scheduling_at_once_never_overfill_a_worker(db: Db) {
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

pub async fn a_moved_lease_has_a_higher_generation_and_old_holders_lose_it(db: Db) {
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

pub async fn tasks_racing_for_one_lease_have_exactly_one_winner(db: Db) {
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

pub async fn transitions_are_conditional_and_racing_ones_have_one_winner(db: Db) {
    let [a, b] = db.replicas().await;
    sandbox(&a, "s").await;
    assert!(
        a.transition_sandbox("s", &[SandboxState::Creating], SandboxState::Running)
            .await
            .unwrap()
    );
    assert!(
        !a.transition_sandbox("s", &[SandboxState::Creating], SandboxState::Running)
            .await
            .unwrap()
    );
    assert!(
        !a.transition_sandbox("nope", &[SandboxState::Creating], SandboxState::Running)
            .await
            .unwrap()
    );
    let mut tasks: Vec<std::pin::Pin<Box<dyn std::future::Future<Output = _> + Send>>> = Vec::new();
    for i in 0..8 {
        let store = if i % 2 == 0 { a.clone() } else { b.clone() };
        tasks.push(Box::pin(async move {
            store
                .transition_sandbox("s", &[SandboxState::Running], SandboxState::Destroying)
                .await
                .unwrap()
        }));
    }
    let won = race(tasks).await.into_iter().filter(|won| *won).count();
    assert_eq!(won, 1);
    assert!(
        a.transition_sandbox(
            "s",
            &[SandboxState::Creating, SandboxState::Destroying],
            SandboxState::Running
        )
        .await
        .unwrap()
    );
    assert_eq!(
        b.get_sandbox("s").await.unwrap().unwrap().state,
        SandboxState::Running
    );
}

pub async fn finishing_one_sandbox_twice_returns_its_slot_once(db: Db) {
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
            store
                .finish_sandbox("x", SandboxState::Destroyed, "", 9)
                .await
        }));
    }
    for result in race(tasks).await {
        result.unwrap();
    }
    assert_eq!(reserved(&a, "w1").await, 1, "y still holds its slot");
}

pub async fn expiry_moves_only_for_live_sandboxes_and_never_shortens_the_lease(db: Db) {
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
    store
        .finish_sandbox("a", SandboxState::Destroyed, "", 1)
        .await
        .unwrap();
    assert!(!store.set_sandbox_expiry("a", 700, 30_000).await.unwrap());
    assert_eq!(
        store.get_sandbox("a").await.unwrap().unwrap().expires_at,
        600
    );
}

/// Every state has a way out: a TTL reaches running, creating, failed and lost
/// sandboxes alike; destroyed ones are done and destroying ones are finished (or taken
/// over) by their own path.
pub async fn expired_sandboxes_are_live_or_failed_ones_past_their_ttl(db: Db) {
    let store = db.open().await;
    for id in [
        "old", "young", "creating", "gone", "failed", "lost", "claimed",
    ] {
        let expires_at = if id == "young" { 1_000 } else { 100 };
        sandbox_expiring(&store, id, expires_at).await;
    }
    for id in ["old", "young", "gone", "claimed"] {
        assert!(
            store
                .transition_sandbox(id, &[SandboxState::Creating], SandboxState::Running)
                .await
                .unwrap()
        );
    }
    store
        .finish_sandbox("gone", SandboxState::Destroyed, "", 5)
        .await
        .unwrap();
    store
        .finish_sandbox("failed", SandboxState::Error, "spawn failed", 5)
        .await
        .unwrap();
    assert!(
        store
            .transition_sandbox("lost", &[SandboxState::Creating], SandboxState::Lost)
            .await
            .unwrap()
    );
    assert!(store.claim_destroy("claimed", 5).await.unwrap());
    assert_eq!(
        store.expired_sandboxes(500).await.unwrap(),
        vec!["creating", "failed", "lost", "old"]
    );
    assert_eq!(
        store.expired_sandboxes(2_000).await.unwrap(),
        vec!["creating", "failed", "lost", "old", "young"]
    );
}

/// Spawns nobody confirmed (their control plane died mid-spawn): found by worker and
/// age, and each ended exactly once, by a destroy claim or by being abandoned, never
/// once it was confirmed.
pub async fn unconfirmed_spawns_are_found_and_ended_once(db: Db) {
    let [a, b] = db.replicas().await;
    worker(&a, "w1", 8).await;
    worker(&a, "w2", 8).await;
    // created at 1, except "late" (at 7)
    for id in ["s", "t", "confirmed", "elsewhere"] {
        sandbox(&a, id).await;
    }
    a.insert_sandbox(&new_sandbox("late")).await.unwrap();
    for id in ["s", "t", "confirmed", "late"] {
        place(&a, id, "w1").await;
    }
    place(&a, "elsewhere", "w2").await;
    assert!(a.mark_sandbox_running("confirmed", "vm", 5).await.unwrap());
    let found = |spawns: Vec<berth_controlplane::store::UnconfirmedSpawn>| {
        spawns
            .into_iter()
            .map(|spawn| (spawn.sandbox_id, spawn.generation))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        found(a.unconfirmed_spawns("w1", 5).await.unwrap()),
        vec![("s".to_owned(), 1), ("t".to_owned(), 1)]
    );
    assert_eq!(
        found(a.unconfirmed_spawns("w1", 8).await.unwrap()),
        vec![
            ("late".to_owned(), 1),
            ("s".to_owned(), 1),
            ("t".to_owned(), 1)
        ]
    );
    assert_eq!(a.unconfirmed_spawns("w1", 1).await.unwrap(), vec![]);
    assert_eq!(found(a.unconfirmed_spawns("w2", 5).await.unwrap()).len(), 1);
    assert_eq!(reserved(&a, "w1").await, 4);

    // abandoning takes the lease as it was seen, of a sandbox still being created
    assert!(
        !a.abandon_spawn("s", "w1", 2, "x", 9).await.unwrap(),
        "other generation"
    );
    assert!(
        !a.abandon_spawn("s", "w2", 1, "x", 9).await.unwrap(),
        "other worker"
    );
    assert!(
        !a.abandon_spawn("confirmed", "w1", 1, "x", 9).await.unwrap(),
        "confirmed meanwhile"
    );
    let confirmed = a.get_sandbox("confirmed").await.unwrap().unwrap();
    assert_eq!(
        (confirmed.state, confirmed.generation),
        (SandboxState::Running, Some(1))
    );
    let mut tasks: Vec<std::pin::Pin<Box<dyn std::future::Future<Output = _> + Send>>> = Vec::new();
    for i in 0..8 {
        let store = if i % 2 == 0 { a.clone() } else { b.clone() };
        tasks.push(Box::pin(async move {
            store
                .abandon_spawn("s", "w1", 1, "its spawn was never confirmed", 9)
                .await
                .unwrap()
        }));
    }
    assert_eq!(race(tasks).await.into_iter().filter(|won| *won).count(), 1);
    let row = a.get_sandbox("s").await.unwrap().unwrap();
    assert_eq!(row.state, SandboxState::Destroyed);
    assert_eq!(row.error, "its spawn was never confirmed");
    assert_eq!((row.destroyed_at, row.generation), (Some(9), None));
    assert_eq!(reserved(&a, "w1").await, 3);
    assert!(
        !a.mark_sandbox_running("s", "vm", 10).await.unwrap(),
        "no way back"
    );

    // a destroy claims one still being created, once, and only while it is
    assert!(!a.claim_destroy_creating("confirmed", 1_000).await.unwrap());
    let mut tasks: Vec<std::pin::Pin<Box<dyn std::future::Future<Output = _> + Send>>> = Vec::new();
    for i in 0..8 {
        let store = if i % 2 == 0 { a.clone() } else { b.clone() };
        tasks.push(Box::pin(async move {
            store.claim_destroy_creating("t", 1_000).await.unwrap()
        }));
    }
    assert_eq!(race(tasks).await.into_iter().filter(|won| *won).count(), 1);
    let row = a.get_sandbox("t").await.unwrap().unwrap();
    assert_eq!(
        (row.state, row.generation),
        (SandboxState::Destroying, Some(1))
    );
    assert!(!a.mark_sandbox_running("t", "vm", 10).await.unwrap());
    assert!(
        !a.abandon_spawn("t", "w1", 1, "x", 9).await.unwrap(),
        "claimed"
    );
    assert_eq!(a.stalled_destroys(1_001).await.unwrap(), vec!["t"]);
    assert_eq!(
        found(a.unconfirmed_spawns("w1", 8).await.unwrap()),
        vec![("late".to_owned(), 1)]
    );
}

pub async fn leases_renew_only_for_their_holder_and_generation(db: Db) {
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
            ExpiredLease {
                sandbox_id: "a".to_owned(),
                worker_id: "w1".to_owned(),
                generation: 1
            },
            ExpiredLease {
                sandbox_id: "b".to_owned(),
                worker_id: "w1".to_owned(),
                generation: 1
            }
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

pub async fn mark_lost_is_conditional_and_racing_ones_have_one_winner(db: Db) {
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
    assert_eq!(row.state, SandboxState::Lost);
    assert_eq!(row.error, "its worker stopped heartbeating");
    assert_eq!(row.generation, None);
    assert_eq!(reserved(&a, "w1").await, 0);
}

pub async fn destroy_claims_have_one_winner_and_stalled_ones_one_taker(db: Db) {
    let [a, b] = db.replicas().await;
    sandbox(&a, "s").await;
    assert!(
        !a.claim_destroy("s", 1_000).await.unwrap(),
        "not running yet"
    );
    assert!(
        a.transition_sandbox("s", &[SandboxState::Creating], SandboxState::Running)
            .await
            .unwrap()
    );
    let mut tasks: Vec<std::pin::Pin<Box<dyn std::future::Future<Output = _> + Send>>> = Vec::new();
    for i in 0..8 {
        let store = if i % 2 == 0 { a.clone() } else { b.clone() };
        tasks.push(Box::pin(async move {
            store.claim_destroy("s", 1_000).await.unwrap()
        }));
    }
    assert_eq!(race(tasks).await.into_iter().filter(|won| *won).count(), 1);
    assert_eq!(
        a.get_sandbox("s").await.unwrap().unwrap().state,
        SandboxState::Destroying
    );
    assert!(!a.claim_destroy("nope", 1_000).await.unwrap());

    // a claim made at 1000 is stalled for anyone looking past it, not before
    assert!(a.stalled_destroys(1_000).await.unwrap().is_empty());
    assert_eq!(a.stalled_destroys(1_001).await.unwrap(), vec!["s"]);
    assert!(
        !a.reclaim_destroy("s", 1_000, 5_000).await.unwrap(),
        "not stalled yet"
    );
    let mut tasks: Vec<std::pin::Pin<Box<dyn std::future::Future<Output = _> + Send>>> = Vec::new();
    for i in 0..8 {
        let store = if i % 2 == 0 { a.clone() } else { b.clone() };
        tasks.push(Box::pin(async move {
            store.reclaim_destroy("s", 2_000, 5_000).await.unwrap()
        }));
    }
    assert_eq!(race(tasks).await.into_iter().filter(|won| *won).count(), 1);
    assert!(
        a.stalled_destroys(2_000).await.unwrap().is_empty(),
        "the taker's claim is fresh"
    );
    a.finish_sandbox("s", SandboxState::Destroyed, "", 6)
        .await
        .unwrap();
    assert!(a.stalled_destroys(i64::MAX).await.unwrap().is_empty());
    assert!(!a.reclaim_destroy("s", i64::MAX, 7_000).await.unwrap());
}

/// Many sandboxes changing state at once (on SQLite these share batches): each change
/// lands as it would alone: every mark and claim is answered for its own sandbox, one
/// claimer per sandbox wins, and finishing gives back exactly the slots taken.
pub async fn a_burst_of_state_changes_lands_each_as_alone(db: Db) {
    let [a, b] = db.replicas().await;
    worker(&a, "w1", 64).await;
    let ids: Vec<String> = (0..24).map(|i| format!("s{i}")).collect();
    for id in &ids {
        sandbox(&a, id).await;
        place(&a, id, "w1").await;
    }
    assert_eq!(reserved(&a, "w1").await, 24);
    // every even one is marked running, twice over; the odd ones stay creating
    let mut marks: Vec<std::pin::Pin<Box<dyn std::future::Future<Output = _> + Send>>> = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        for round in 0..2 {
            let (store, id) = (if round == 0 { a.clone() } else { b.clone() }, id.clone());
            let wanted = i % 2 == 0;
            marks.push(Box::pin(async move {
                if wanted {
                    let vm = format!("vm-{id}");
                    (
                        id.clone(),
                        store.mark_sandbox_running(&id, &vm, 5).await.unwrap(),
                    )
                } else {
                    (id.clone(), false)
                }
            }));
        }
    }
    let mut winners: std::collections::HashMap<String, usize> = Default::default();
    for (id, marked) in race(marks).await {
        *winners.entry(id).or_default() += usize::from(marked);
    }
    for (i, id) in ids.iter().enumerate() {
        assert_eq!(winners[id], usize::from(i % 2 == 0), "marks of {id}");
        let row = a.get_sandbox(id).await.unwrap().unwrap();
        let want = if i % 2 == 0 {
            SandboxState::Running
        } else {
            SandboxState::Creating
        };
        assert_eq!(row.state, want, "{id}");
        if i % 2 == 0 {
            assert_eq!(row.vm_id, format!("vm-{id}"));
        }
    }
    // three claimers for every sandbox, and finishes of the creating ones among them
    let mut claims: Vec<std::pin::Pin<Box<dyn std::future::Future<Output = _> + Send>>> =
        Vec::new();
    for (i, id) in ids.iter().enumerate() {
        for round in 0..3 {
            let (store, id) = (if round == 1 { b.clone() } else { a.clone() }, id.clone());
            let creating = i % 2 == 1;
            claims.push(Box::pin(async move {
                if creating && round == 0 {
                    store
                        .finish_sandbox(&id, SandboxState::Error, "spawn failed", 8)
                        .await
                        .unwrap();
                    (id, false)
                } else {
                    let claimed = store.claim_destroy(&id, 1_000).await.unwrap();
                    (id, claimed)
                }
            }));
        }
    }
    let mut claimed: std::collections::HashMap<String, usize> = Default::default();
    for (id, won) in race(claims).await {
        *claimed.entry(id).or_default() += usize::from(won);
    }
    for (i, id) in ids.iter().enumerate() {
        assert_eq!(claimed[id], usize::from(i % 2 == 0), "claims of {id}");
    }
    assert_eq!(
        reserved(&a, "w1").await,
        12,
        "the running ones still hold theirs"
    );
    let mut finishes: Vec<std::pin::Pin<Box<dyn std::future::Future<Output = _> + Send>>> =
        Vec::new();
    for id in ids.iter().step_by(2) {
        for store in [a.clone(), b.clone()] {
            let id = id.clone();
            finishes.push(Box::pin(async move {
                store
                    .finish_sandbox(&id, SandboxState::Destroyed, "", 9)
                    .await
            }));
        }
    }
    for finished in race(finishes).await {
        finished.unwrap();
    }
    assert_eq!(reserved(&a, "w1").await, 0);
    assert!(a.leases_of("w1").await.unwrap().is_empty());
    for (i, id) in ids.iter().enumerate() {
        let row = b.get_sandbox(id).await.unwrap().unwrap();
        let (state, error) = if i % 2 == 0 {
            (SandboxState::Destroyed, "")
        } else {
            (SandboxState::Error, "spawn failed")
        };
        assert_eq!((row.state, row.error.as_str()), (state, error), "{id}");
    }
}

fn new_sandbox(id: &str) -> NewSandbox {
    NewSandbox {
        id: id.into(),
        provider: "mock".into(),
        image: "img".into(),
        memory_mb: 64,
        vcpus: 1,
        owner_id: "owner".into(),
        template: String::new(),
        metadata: "{}".into(),
        created_at: 7,
        expires_at: 100,
        internet: true,
        team_id: "default".into(),
        workdir: String::new(),
        shell: String::new(),
        ports: "[]".into(),
        auto_stop_secs: 0,
    }
}

fn names(ids: &[&str]) -> Vec<String> {
    ids.iter().map(|id| (*id).to_owned()).collect()
}

pub async fn a_new_sandbox_is_placed_on_the_first_eligible_candidate_in_one_step(db: Db) {
    let store = db.open().await;
    worker(&store, "w1", 1).await;
    worker(&store, "w2", 2).await;
    worker(&store, "cordoned", 5).await;
    worker(&store, "draining", 5).await;
    store.set_cordoned("cordoned", true).await.unwrap();
    store.start_drain("draining", None).await.unwrap();
    let order = names(&["cordoned", "draining", "w1", "w2"]);
    let create = |id: &'static str, fresh_since: i64| {
        let (store, order) = (store.clone(), order.clone());
        async move {
            store
                .create_placed_sandbox(&new_sandbox(id), &order, fresh_since, 10_000, "full")
                .await
                .unwrap()
        }
    };

    // cordoned and draining workers are passed over even when listed first
    let first = create("a", 1_000).await.expect("placed");
    assert_eq!(first.placement.worker_id, "w1");
    assert_eq!(first.placement.advertise_addr, "w1:1");
    assert_eq!(first.placement.generation, 1);
    assert_eq!(first.last_heartbeat_ms, 1_000);
    let row = store.get_sandbox("a").await.unwrap().unwrap();
    assert_eq!(row.state, SandboxState::Creating);
    assert_eq!(
        (row.worker_id.as_deref(), row.generation),
        (Some("w1"), Some(1))
    );
    assert_eq!((row.owner_id.as_str(), row.created_at), ("owner", 7));
    assert_eq!(reserved(&store, "w1").await, 1);

    // w1 is full: the next one goes to w2
    let second = create("b", 1_000).await.expect("placed");
    assert_eq!(second.placement.worker_id, "w2");
    assert_eq!(
        (reserved(&store, "w1").await, reserved(&store, "w2").await),
        (1, 1)
    );

    // a heartbeat older than the caller's freshness bound places nothing
    assert!(create("c", 1_001).await.is_none());
    let row = store.get_sandbox("c").await.unwrap().unwrap();
    assert_eq!(
        (row.state, row.error.as_str()),
        (SandboxState::Error, "full")
    );
    assert_eq!((row.worker_id, row.generation), (None, None));
    assert_eq!(
        reserved(&store, "w2").await,
        1,
        "a failed placement holds no slot"
    );
    assert_eq!(reserved(&store, "cordoned").await, 0);
    assert_eq!(reserved(&store, "draining").await, 0);

    // an id that exists already fails whole: no slot stays reserved
    let again = store
        .create_placed_sandbox(&new_sandbox("a"), &names(&["w2"]), 1_000, 10_000, "full")
        .await;
    assert!(matches!(again, Err(StoreError::Database(_))), "{again:?}");
    assert_eq!(reserved(&store, "w2").await, 1);
    assert!(create("d", 1_000).await.is_some());
    assert!(create("e", 1_000).await.is_none(), "w1 and w2 are full");
}

pub async fn replicas_creating_at_once_fill_a_worker_exactly(db: Db) {
    let [a, b] = db.replicas().await;
    worker(&a, "w1", 5).await;
    let mut tasks: Vec<std::pin::Pin<Box<dyn std::future::Future<Output = _> + Send>>> = Vec::new();
    for i in 0..20 {
        let store = if i % 2 == 0 { a.clone() } else { b.clone() };
        tasks.push(Box::pin(async move {
            store
                .create_placed_sandbox(
                    &new_sandbox(&format!("s{i}")),
                    &names(&["w1"]),
                    1_000,
                    10_000,
                    "full",
                )
                .await
                .unwrap()
        }));
    }
    let placed = race(tasks).await.into_iter().flatten().count();
    assert_eq!(placed, 5);
    assert_eq!(reserved(&a, "w1").await, 5);
    assert_eq!(a.leases_of("w1").await.unwrap().len(), 5);
    let errors = a
        .list_sandboxes()
        .await
        .unwrap()
        .into_iter()
        .filter(|row| row.state == SandboxState::Error)
        .count();
    assert_eq!(errors, 15);
}

pub async fn placement_counts_memory_and_cpus_and_gives_them_back(db: Db) {
    let store = db.open().await;
    // 4 slots, 1024 MiB, 2 CPUs
    worker(&store, "w1", 4).await;
    let only = names(&["w1"]);
    let create = |id: &'static str, memory_mb: i64, vcpus: i64| {
        let (store, only) = (store.clone(), only.clone());
        async move {
            let sandbox = NewSandbox {
                memory_mb,
                vcpus,
                ..new_sandbox(id)
            };
            store
                .create_placed_sandbox(&sandbox, &only, 1_000, 10_000, "full")
                .await
                .unwrap()
        }
    };
    let held = |store: Store| async move {
        let rows = store.schedulable_workers(0, 0, 0).await.unwrap();
        let row = rows.iter().find(|row| row.id == "w1").expect("w1 listed");
        (row.reserved, row.reserved_memory_mb, row.reserved_vcpus)
    };

    assert!(create("big", 600, 1).await.is_some());
    // a slot is free, the memory is not
    assert!(create("too-big", 600, 1).await.is_none());
    assert!(
        store
            .schedulable_workers(0, 600, 1)
            .await
            .unwrap()
            .is_empty(),
        "a worker without the memory is no candidate"
    );
    // more CPUs than the worker has, however empty it is
    assert!(create("too-wide", 64, 3).await.is_none());
    assert!(create("small", 424, 2).await.is_some());
    assert_eq!(held(store.clone()).await, (2, 1024, 3));
    let row = store.schedulable_workers(0, 0, 0).await.unwrap().remove(0);
    // CPUs may be shared past the worker's count (3 of 2): they weigh in the load
    assert_eq!(row.load(), 1.5);

    // every way out gives the memory back: finishing, and losing
    store
        .finish_sandbox("big", SandboxState::Destroyed, "", 9)
        .await
        .unwrap();
    assert_eq!(held(store.clone()).await, (1, 424, 2));
    assert!(create("again", 600, 1).await.is_some());
    assert!(
        store
            .mark_lost("small", "w1", 1, "its worker stopped heartbeating")
            .await
            .unwrap()
    );
    assert_eq!(held(store.clone()).await, (1, 600, 1));
    store.revoke_worker("w1", 10).await.unwrap();
    let worker_row = store.get_worker("w1").await.unwrap().unwrap();
    assert_eq!(worker_row.reserved, 0);
}

/// The idle sandboxes at `now` with `slack` as (id, last use).
async fn idle(store: &Store, now: i64, slack: i64) -> Vec<(String, i64)> {
    store
        .idle_sandboxes(now, slack)
        .await
        .unwrap()
        .into_iter()
        .map(|row| (row.id, row.active_at))
        .collect()
}

pub async fn idle_sandboxes_are_found_from_their_last_use_and_stopped_once(db: Db) {
    let [a, b] = db.replicas().await;
    for (id, auto_stop_secs) in [("napper", 60), ("busy", 60), ("never", 0), ("new", 60)] {
        a.insert_sandbox(&NewSandbox {
            auto_stop_secs,
            ..new_sandbox(id)
        })
        .await
        .unwrap();
    }
    // started at 1000 s (unix ms below); "new" is still being created
    for id in ["napper", "busy", "never"] {
        assert!(a.mark_sandbox_running(id, "vm", 1_000_000).await.unwrap());
    }
    let row = a.get_sandbox("napper").await.unwrap().unwrap();
    assert_eq!(
        (row.auto_stop_secs, row.active_at),
        (60, 1000),
        "use counts from the start"
    );
    assert_eq!(a.get_sandbox("new").await.unwrap().unwrap().active_at, 0);
    // used at 1050; a second touch within the interval writes nothing
    assert!(b.touch_sandbox("busy", 1050, 30).await.unwrap());
    assert!(!a.touch_sandbox("busy", 1060, 30).await.unwrap());
    assert_eq!(
        a.get_sandbox("busy").await.unwrap().unwrap().active_at,
        1050
    );

    // idle means: last use + auto_stop + slack before now
    assert!(idle(&a, 1060, 0).await.is_empty(), "not yet");
    assert_eq!(idle(&a, 1065, 0).await, vec![("napper".to_owned(), 1000)]);
    assert!(idle(&a, 1065, 10).await.is_empty(), "the slack waits");
    assert_eq!(
        idle(&a, 2000, 0).await,
        vec![("busy".to_owned(), 1050), ("napper".to_owned(), 1000)]
    );

    // a use written after the sweep read it keeps it running
    assert!(a.touch_sandbox("busy", 1990, 0).await.unwrap());
    assert!(!b.stop_idle_sandbox("busy", 1050).await.unwrap());
    // replicas stopping at once: one does
    let (first, second) = tokio::join!(
        a.stop_idle_sandbox("napper", 1000),
        b.stop_idle_sandbox("napper", 1000)
    );
    assert_eq!(
        [first.unwrap(), second.unwrap()]
            .iter()
            .filter(|s| **s)
            .count(),
        1
    );
    let state = |id: &'static str| {
        let a = a.clone();
        async move { a.get_sandbox(id).await.unwrap().unwrap().state }
    };
    assert_eq!(state("napper").await, SandboxState::Stopped);
    assert_eq!(state("busy").await, SandboxState::Running);
    // a stopped one is not idle; started again (use noted first) it counts from then
    assert_eq!(idle(&a, 2000, 0).await, Vec::<(String, i64)>::new());
    assert!(a.touch_sandbox("napper", 2000, 0).await.unwrap());
    assert!(
        a.move_sandbox_state("napper", SandboxState::Stopped, SandboxState::Running)
            .await
            .unwrap()
    );
    assert!(idle(&a, 2050, 0).await.is_empty());
    assert_eq!(
        idle(&a, 2061, 0).await,
        vec![("busy".to_owned(), 1990), ("napper".to_owned(), 2000)]
    );
}
