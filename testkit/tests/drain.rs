//! Drain: no new sandboxes; what runs keeps running until destroyed or until the
//! deadline, when it is destroyed; the drain completes only once the worker's provider
//! reports nothing left; undrain makes the worker schedulable again; the drain state
//! survives a control plane restart.

use std::time::{Duration, Instant};

use serde_json::json;

use berth_testkit::{Api, TestFleet, eventually, id_of};

const WAIT: Duration = Duration::from_secs(15);

/// One worker, `d1`, and a reaper every 100ms.
async fn fleet() -> TestFleet {
    TestFleet::builder()
        .reap_interval(Duration::from_millis(100))
        .worker_ids(&["d1"])
        .start()
        .await
}

async fn drain_state(api: &Api) -> String {
    let (_, worker) = api.get("/workers/d1").await;
    worker["drain"]["state"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test]
async fn a_drain_with_a_deadline_destroys_what_is_left_then_completes() {
    let fleet = fleet().await;
    let api = &fleet.api;
    let a = id_of(&api.create_sandbox(json!({})).await);
    let b = id_of(&api.create_sandbox(json!({})).await);
    let started = Instant::now();
    let (status, view) = api
        .post("/workers/d1/drain", json!({"deadline": "2s"}))
        .await;
    assert_eq!(status, 200, "{view}");
    assert_eq!(view["drain"]["state"], "draining");
    assert_eq!(view["status"], "draining");

    let (status, body) = api.post("/sandboxes", json!({})).await;
    assert_eq!(status, 503, "a draining worker takes nothing new: {body}");
    let (status, _) = api
        .post(&format!("/sandboxes/{a}/exec"), json!({"command": "true"}))
        .await;
    assert_eq!(status, 200, "what runs keeps running until the deadline");
    assert_eq!(drain_state(api).await, "draining");

    eventually("drained", WAIT, || async {
        (drain_state(api).await == "drained").then_some(())
    })
    .await;
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "not before the deadline"
    );
    for id in [&a, &b] {
        let (status, _) = api.get(&format!("/sandboxes/{id}")).await;
        assert_eq!(status, 404, "destroyed at the deadline");
    }
    let (_, view) = api.get("/workers/d1").await;
    assert_eq!(
        view["drain"]["remaining"], 0,
        "the provider confirmed none left"
    );

    let (status, view) = api.post("/workers/d1/undrain", json!(null)).await;
    assert_eq!(
        (status, view["drain"]["state"].clone()),
        (200, json!("none"))
    );
    api.create_sandbox(json!({})).await;
    fleet.stop().await;
}

#[tokio::test]
async fn a_drain_without_a_deadline_waits_for_the_sandboxes_and_survives_a_restart() {
    let fleet = fleet().await;
    let api = &fleet.api;
    let id = id_of(&api.create_sandbox(json!({})).await);
    api.post("/workers/d1/drain", json!({})).await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        drain_state(api).await,
        "draining",
        "nothing is destroyed without a deadline"
    );
    let (status, _) = api.delete(&format!("/sandboxes/{id}")).await;
    assert_eq!(status, 200);
    eventually("drained once its last sandbox is gone", WAIT, || async {
        (drain_state(api).await == "drained").then_some(())
    })
    .await;

    // the drain state is persisted: a restarted control plane carries on with it
    api.post("/workers/d1/drain", json!({"deadline": "1h"}))
        .await;
    let fleet = fleet.restart_control_plane().await;
    let api = &fleet.api;
    let (_, view) = api.get("/workers/d1").await;
    assert_eq!(view["drain"]["state"], "draining");
    assert!(view["drain"]["deadline"].as_str().is_some(), "{view}");
    let (status, body) = api.post("/workers/nobody/drain", json!({})).await;
    assert_eq!((status, body["code"].clone()), (404, json!("NOT_FOUND")));
    let (status, _) = api
        .post("/workers/d1/drain", json!({"deadline": "soon"}))
        .await;
    assert_eq!(status, 400);
    fleet.stop().await;
}

#[tokio::test]
async fn force_destroys_at_once() {
    let fleet = fleet().await;
    let api = &fleet.api;
    let id = id_of(&api.create_sandbox(json!({})).await);
    api.post("/workers/d1/drain", json!({"force": true})).await;
    eventually("drained", WAIT, || async {
        (drain_state(api).await == "drained").then_some(())
    })
    .await;
    let (status, _) = api.get(&format!("/sandboxes/{id}")).await;
    assert_eq!(status, 404);
    fleet.stop().await;
}

#[tokio::test]
async fn a_worker_drains_itself_on_request_of_its_own() {
    let fleet = fleet().await;
    let api = &fleet.api;
    let id = id_of(&api.create_sandbox(json!({})).await);
    let started = Instant::now();
    let destroyed = tokio::join!(fleet.worker(0).drain(Duration::from_secs(1)), async {
        eventually("draining by its own account", WAIT, || async {
            let (_, view) = api.get("/workers/d1").await;
            (view["status"] == "draining").then_some(())
        })
        .await;
        let (status, body) = api.post("/sandboxes", json!({})).await;
        assert_eq!(
            status, 503,
            "a self-draining worker takes nothing new: {body}"
        );
    })
    .0;
    assert_eq!(destroyed, 1, "what was left at the deadline was destroyed");
    assert!(started.elapsed() >= Duration::from_secs(1));
    let status = fleet
        .cp
        .worker_client(fleet.worker(0))
        .status(berth_proto::v1::StatusRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status.sandboxes, 0);
    eventually(
        "the control plane no longer counts the sandbox as running",
        WAIT,
        || async {
            let (_, sandbox) = api.get(&format!("/sandboxes/{id}")).await;
            (sandbox["state"] == "lost").then_some(())
        },
    )
    .await;
    fleet.stop().await;
}

#[tokio::test]
async fn a_worker_told_to_drain_says_so_in_its_status_and_metrics() {
    let fleet = TestFleet::builder()
        .worker_ids(&["d1"])
        .worker(|config| config.metrics_listen = Some("127.0.0.1:0".parse().unwrap()))
        .start()
        .await;
    let api = &fleet.api;
    let client = fleet.cp.worker_client(fleet.worker(0));
    let metrics = format!("http://{}/metrics", fleet.worker(0).metrics_addr.unwrap());
    // (the worker's Status state, its berth_worker_draining gauge)
    let seen = || {
        let mut client = client.clone();
        let metrics = metrics.clone();
        async move {
            let status = client
                .status(berth_proto::v1::StatusRequest::default())
                .await
                .unwrap()
                .into_inner();
            let text = reqwest::get(&metrics).await.unwrap().text().await.unwrap();
            let gauge = text
                .lines()
                .find_map(|line| line.strip_prefix("berth_worker_draining "))
                .map(|value| value.trim().to_owned());
            (status.state, gauge.unwrap_or_default())
        }
    };
    assert_eq!(seen().await, ("ready".to_owned(), "0".to_owned()));
    let id = id_of(&api.create_sandbox(json!({})).await);

    let (status, _) = api.post("/workers/d1/drain", json!({})).await;
    assert_eq!(status, 200);
    eventually("the worker says it drains", WAIT, || async {
        (seen().await == ("draining".to_owned(), "1".to_owned())).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    let (status, sandbox) = api.get(&format!("/sandboxes/{id}")).await;
    assert_eq!(
        (status, sandbox["state"].clone()),
        (200, json!("running")),
        "a worker told to drain destroys nothing itself"
    );

    let (status, _) = api.post("/workers/d1/undrain", json!(null)).await;
    assert_eq!(status, 200);
    api.create_sandbox(json!({})).await;
    eventually("the worker says it is ready again", WAIT, || async {
        (seen().await == ("ready".to_owned(), "0".to_owned())).then_some(())
    })
    .await;
    fleet.stop().await;
}
