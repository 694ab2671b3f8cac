//! Reconciliation between the store's leases and what workers actually run: a sandbox
//! a worker runs without a lease is destroyed on it; a worker that stops heartbeating
//! loses its sandboxes when their leases run out; a worker that comes back without its
//! sandboxes gets them marked lost, not silently kept; leases that ran out while the
//! control plane was down are renewed by live workers, not taken as their death.

use std::time::Duration;

use serde_json::json;

use berth_proto::v1 as pb;
use berth_testkit::{Api, TestFleet, eventually, id_of};

const WAIT: Duration = Duration::from_secs(15);

/// One worker, `k1`, a reaper every 200ms, and `missed_heartbeats` of grace.
async fn fleet_with(missed_heartbeats: u32) -> TestFleet {
    TestFleet::builder()
        .reap_interval(Duration::from_millis(200))
        .missed_heartbeats(missed_heartbeats)
        .worker_ids(&["k1"])
        .start()
        .await
}

async fn fleet() -> TestFleet {
    fleet_with(10).await
}

async fn state_of(api: &Api, id: &str) -> String {
    let (_, sandbox) = api.get(&format!("/sandboxes/{id}")).await;
    sandbox["state"].as_str().unwrap_or_default().to_owned()
}

#[tokio::test]
async fn a_sandbox_without_a_lease_is_destroyed_on_its_worker() {
    let fleet = fleet().await;
    let api = &fleet.api;
    let kept = api.create_sandbox(json!({})).await;
    let mut client = fleet.cp.worker_client(fleet.worker(0));
    client
        .spawn(pb::SpawnRequest {
            spec: Some(pb::SandboxSpec {
                sandbox_id: "orphan-1".into(),
                ..Default::default()
            }),
            generation: 1,
        })
        .await
        .expect("the worker takes the orphan");
    eventually("the orphan is destroyed", WAIT, || {
        let mut client = client.clone();
        async move {
            let status = client
                .status(pb::StatusRequest {
                    sandbox_id: "orphan-1".into(),
                })
                .await;
            matches!(status, Err(s) if s.code() == tonic::Code::NotFound).then_some(())
        }
    })
    .await;
    // the leased one is untouched
    let id = kept["id"].as_str().unwrap();
    assert_eq!(state_of(api, id).await, "running");
    let (status, _) = api
        .post(&format!("/sandboxes/{id}/exec"), json!({"command": "true"}))
        .await;
    assert_eq!(status, 200);
    fleet.stop().await;
}

#[tokio::test]
async fn a_worker_that_stops_heartbeating_loses_its_sandboxes_then_comes_back_clean() {
    let mut fleet = fleet().await;
    let sandbox = fleet.api.create_sandbox(json!({})).await;
    let id = sandbox["id"].as_str().unwrap().to_owned();
    fleet.stop_worker(0).await;
    let api = &fleet.api;
    eventually("unhealthy", WAIT, || async {
        let (_, view) = api.get("/workers/k1").await;
        (view["status"] == "unhealthy").then_some(())
    })
    .await;
    let (status, body) = api
        .post(&format!("/sandboxes/{id}/exec"), json!({"command": "true"}))
        .await;
    assert_eq!(status, 503, "{body}");
    eventually("lost once the lease ran out", WAIT, || async {
        (state_of(api, &id).await == "lost").then_some(())
    })
    .await;
    // the slot came back: the worker, when it returns, takes new work
    fleet.restart_worker(0).await;
    let api = &fleet.api;
    api.wait_ready().await;
    let fresh = api.create_sandbox(json!({})).await;
    assert_eq!(fresh["worker_id"], "k1");
    fleet.stop().await;
}

#[tokio::test]
async fn a_worker_back_without_its_sandboxes_gets_them_marked_lost() {
    // leases long enough (2 x 50 x 200ms) that only reconciliation can mark it lost
    let mut fleet = fleet_with(50).await;
    let sandbox = fleet.api.create_sandbox(json!({})).await;
    let id = sandbox["id"].as_str().unwrap().to_owned();
    // a restart of a mock worker loses its in-memory sandboxes, quicker than the lease
    fleet.stop_worker(0).await;
    fleet.restart_worker(0).await;
    let api = &fleet.api;
    eventually("lost by reconciliation", WAIT, || async {
        (state_of(api, &id).await == "lost").then_some(())
    })
    .await;
    let (_, lost) = api.get(&format!("/sandboxes/{id}")).await;
    assert!(
        lost["error"]
            .as_str()
            .unwrap()
            .contains("no longer reports"),
        "{lost}"
    );
    fleet.stop().await;
}

/// Stops the control plane for longer than a lease (2 x 3 x 200ms) and starts it again
/// on the same data and mesh port, reaping every 100ms so a reaper that judged the
/// stale leases at once would beat the worker's first heartbeat.
async fn restart_after_the_leases_ran_out(fleet: TestFleet) -> TestFleet {
    let mesh_addr = fleet.cp.mesh_addr;
    fleet
        .restart_control_plane_after(Duration::from_millis(2_000), |config| {
            config.mesh_listen = mesh_addr;
            config.sandboxes.reap_interval = Duration::from_millis(100);
        })
        .await
}

#[tokio::test]
async fn leases_that_ran_out_while_the_control_plane_was_down_are_renewed_by_live_workers() {
    let fleet = fleet_with(3).await;
    let id = id_of(&fleet.api.create_sandbox(json!({})).await);
    let fleet = restart_after_the_leases_ran_out(fleet).await;
    let api = &fleet.api;
    api.wait_ready().await;
    // well past the heartbeat grace, so the reaper has judged the leases by now
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert_eq!(state_of(api, &id).await, "running");
    let (status, body) = api
        .post(
            &format!("/sandboxes/{id}/exec"),
            json!({"command": "echo kept"}),
        )
        .await;
    assert_eq!(
        (status, body["stdout"].clone()),
        (200, json!("kept\n")),
        "{body}"
    );
    fleet.stop().await;
}

#[tokio::test]
async fn a_worker_that_stays_silent_after_a_control_plane_restart_loses_its_sandboxes() {
    let mut fleet = fleet_with(3).await;
    let id = id_of(&fleet.api.create_sandbox(json!({})).await);
    fleet.stop_worker(0).await;
    let fleet = restart_after_the_leases_ran_out(fleet).await;
    let api = &fleet.api;
    // the reaper runs every 100ms, but judges leases only after the grace (600ms)
    let judged_from = tokio::time::Instant::now() + Duration::from_millis(400);
    while tokio::time::Instant::now() < judged_from {
        assert_eq!(
            state_of(api, &id).await,
            "running",
            "judged before the grace"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    eventually("lost after the grace", WAIT, || async {
        (state_of(api, &id).await == "lost").then_some(())
    })
    .await;
    fleet.stop().await;
}
