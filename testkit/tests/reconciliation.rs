//! Reconciliation between the store's leases and what workers actually run: a sandbox
//! a worker runs without a lease is destroyed on it; a worker that stops heartbeating
//! loses its sandboxes when their leases run out; a worker that comes back without its
//! sandboxes gets them marked lost, not silently kept; leases that ran out while the
//! control plane was down are renewed by live workers, not taken as their death.

use std::time::Duration;

use berth_proto::v1 as pb;
use berth_testkit::{Api, TestControlPlane, TestWorker, eventually};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(15);

async fn fleet_with(
    missed_heartbeats: u32,
) -> (TestControlPlane, TestWorker, Api, tempfile::TempDir) {
    let cp = TestControlPlane::start_with(|config| {
        config.sandboxes.reap_interval = Duration::from_millis(200);
        config.missed_heartbeats = missed_heartbeats;
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = cp.worker_config(dir.path(), Some(cp.join_token(None).await));
    config.id = Some("k1".into());
    let worker = TestWorker::start(config).await.unwrap();
    let api = Api::new(&cp);
    api.wait_ready().await;
    (cp, worker, api, dir)
}

async fn fleet() -> (TestControlPlane, TestWorker, Api, tempfile::TempDir) {
    fleet_with(10).await
}

async fn state_of(api: &Api, id: &str) -> String {
    let (_, sandbox) = api.get(&format!("/sandboxes/{id}")).await;
    sandbox["state"].as_str().unwrap_or_default().to_owned()
}

#[tokio::test]
async fn a_sandbox_without_a_lease_is_destroyed_on_its_worker() {
    let (cp, worker, api, _dir) = fleet().await;
    let kept = api.create_sandbox(json!({})).await;
    let mut client = cp.worker_client(&worker);
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
    assert_eq!(state_of(&api, id).await, "running");
    let (status, _) = api
        .post(&format!("/sandboxes/{id}/exec"), json!({"command": "true"}))
        .await;
    assert_eq!(status, 200);
    worker.stop().await;
    cp.stop().await;
}

#[tokio::test]
async fn a_worker_that_stops_heartbeating_loses_its_sandboxes_then_comes_back_clean() {
    let (cp, worker, api, dir) = fleet().await;
    let sandbox = api.create_sandbox(json!({})).await;
    let id = sandbox["id"].as_str().unwrap().to_owned();
    let config = cp.worker_config(dir.path(), None);
    worker.stop().await;
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
        (state_of(&api, &id).await == "lost").then_some(())
    })
    .await;
    // the slot came back: the worker, when it returns, takes new work
    let mut config = config;
    config.id = Some("k1".into());
    let back = TestWorker::start(config).await.unwrap();
    api.wait_ready().await;
    let fresh = api.create_sandbox(json!({})).await;
    assert_eq!(fresh["worker_id"], "k1");
    back.stop().await;
    cp.stop().await;
}

#[tokio::test]
async fn a_worker_back_without_its_sandboxes_gets_them_marked_lost() {
    // leases long enough (2 x 50 x 200ms) that only reconciliation can mark it lost
    let (cp, worker, api, dir) = fleet_with(50).await;
    let sandbox = api.create_sandbox(json!({})).await;
    let id = sandbox["id"].as_str().unwrap().to_owned();
    // a restart of a mock worker loses its in-memory sandboxes, quicker than the lease
    worker.stop().await;
    let mut config = cp.worker_config(dir.path(), None);
    config.id = Some("k1".into());
    let back = TestWorker::start(config).await.unwrap();
    eventually("lost by reconciliation", WAIT, || async {
        (state_of(&api, &id).await == "lost").then_some(())
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
    back.stop().await;
    cp.stop().await;
}

/// Stops the control plane for longer than a lease (2 x 3 x 200ms) and starts it again
/// on the same data and mesh port, reaping every 100ms so a reaper that judged the
/// stale leases at once would beat the worker's first heartbeat.
async fn restart_after_the_leases_ran_out(cp: TestControlPlane) -> TestControlPlane {
    let mesh_addr = cp.mesh_addr;
    let (data, mut config) = cp.stop_keeping_data().await;
    tokio::time::sleep(Duration::from_millis(2_000)).await;
    config.mesh_listen = mesh_addr;
    config.sandboxes.reap_interval = Duration::from_millis(100);
    TestControlPlane::restart(data, config).await
}

#[tokio::test]
async fn leases_that_ran_out_while_the_control_plane_was_down_are_renewed_by_live_workers() {
    let (cp, worker, api, _dir) = fleet_with(3).await;
    let id = api.create_sandbox(json!({})).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let cp = restart_after_the_leases_ran_out(cp).await;
    let api = Api::new(&cp);
    api.wait_ready().await;
    // well past the heartbeat grace, so the reaper has judged the leases by now
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert_eq!(state_of(&api, &id).await, "running");
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
    worker.stop().await;
    cp.stop().await;
}

#[tokio::test]
async fn a_worker_that_stays_silent_after_a_control_plane_restart_loses_its_sandboxes() {
    let (cp, worker, api, _dir) = fleet_with(3).await;
    let id = api.create_sandbox(json!({})).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    worker.stop().await;
    let cp = restart_after_the_leases_ran_out(cp).await;
    let api = Api::new(&cp);
    // the reaper runs every 100ms, but judges leases only after the grace (600ms)
    let judged_from = tokio::time::Instant::now() + Duration::from_millis(400);
    while tokio::time::Instant::now() < judged_from {
        assert_eq!(
            state_of(&api, &id).await,
            "running",
            "judged before the grace"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    eventually("lost after the grace", WAIT, || async {
        (state_of(&api, &id).await == "lost").then_some(())
    })
    .await;
    cp.stop().await;
}
