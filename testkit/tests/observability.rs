//! What the control plane and workers tell operators: Prometheus metrics that are
//! present and move with spawn/exec/destroy, and `/api/v1/status`.

use std::time::Duration;

use serde_json::json;

use berth_testkit::{TestFleet, eventually, sample};

const WAIT: Duration = Duration::from_secs(10);

async fn scrape(url: &str) -> String {
    let response = reqwest::get(url).await.unwrap();
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/openmetrics-text")
    );
    response.text().await.unwrap()
}

#[tokio::test]
async fn metrics_are_present_and_move_with_spawn_exec_and_destroy() {
    let fleet = TestFleet::builder()
        .worker_ids(&["m1"])
        .worker(|config| config.metrics_listen = Some("127.0.0.1:0".parse().unwrap()))
        .start()
        .await;
    let api = &fleet.api;
    let cp_metrics = format!("{}/metrics", fleet.cp.api_url());
    let worker_metrics = format!("http://{}/metrics", fleet.worker(0).metrics_addr.unwrap());

    // enrollment alone shows the worker online; wait for its first heartbeat too
    let before = eventually(
        "worker online and heartbeating in metrics",
        WAIT,
        || async {
            let text = scrape(&cp_metrics).await;
            let online = sample(&text, r#"berth_workers{status="online"}"#) == Some(1.0);
            let heartbeats = sample(&text, r#"berth_heartbeats_total{outcome="ok"}"#);
            (online && heartbeats.is_some_and(|n| n >= 1.0)).then_some(text)
        },
    )
    .await;
    assert_eq!(
        sample(&before, r#"berth_enrollments_total{outcome="ok"}"#),
        Some(1.0)
    );
    assert!(sample(&before, r#"berth_heartbeats_total{outcome="ok"}"#).unwrap() >= 1.0);
    assert!(sample(&before, "berth_ca_expiry_days").unwrap() > 3000.0);
    assert!(
        sample(
            &before,
            r#"berth_worker_certificate_expiry_days{worker="m1"}"#
        )
        .unwrap()
            > 0.9
    );
    assert_eq!(
        sample(
            &before,
            r#"berth_provider_healthy{worker="m1",provider="mock"}"#
        ),
        Some(1.0)
    );
    assert_eq!(sample(&before, "berth_leases"), Some(0.0));
    assert!(before.contains("berth_heartbeat_lag_seconds_bucket"));
    assert_eq!(
        sample(
            &before,
            r#"berth_mesh_requests_total{method="Enroll",code="Ok"}"#
        ),
        Some(1.0)
    );
    assert!(
        sample(
            &before,
            r#"berth_mesh_request_duration_seconds_count{method="Heartbeat"}"#
        )
        .unwrap()
            >= 1.0
    );

    let sandbox = api.create_sandbox(json!({})).await;
    let id = sandbox["id"].as_str().unwrap();
    api.post(
        &format!("/sandboxes/{id}/exec"),
        json!({"command": "echo hi"}),
    )
    .await;
    api.post(&format!("/sandboxes/{id}/exec"), json!({"command": "true"}))
        .await;
    let during = eventually("lease renewed by a heartbeat", WAIT, || async {
        let text = scrape(&cp_metrics).await;
        (sample(&text, "berth_lease_renewals_total").unwrap_or(0.0) >= 1.0).then_some(text)
    })
    .await;
    assert_eq!(
        sample(&during, r#"berth_sandboxes{state="running",worker="m1"}"#),
        Some(1.0)
    );
    assert_eq!(sample(&during, "berth_leases"), Some(1.0));
    assert_eq!(
        sample(
            &during,
            r#"berth_api_requests_total{protocol="http",route="/api/v1/sandboxes/{id}/exec",code="200"}"#
        ),
        Some(2.0)
    );
    assert_eq!(
        sample(
            &during,
            r#"berth_api_request_duration_seconds_count{protocol="http",route="/api/v1/sandboxes/{id}/exec"}"#
        ),
        Some(2.0)
    );
    let worker_text = scrape(&worker_metrics).await;
    assert_eq!(
        sample(&worker_text, r#"berth_worker_spawns_total{outcome="ok"}"#),
        Some(1.0)
    );
    assert_eq!(
        sample(&worker_text, r#"berth_worker_execs_total{outcome="ok"}"#),
        Some(2.0)
    );
    assert_eq!(sample(&worker_text, "berth_worker_sandboxes"), Some(1.0));
    assert_eq!(
        sample(
            &worker_text,
            r#"berth_worker_provider_healthy{provider="mock"}"#
        ),
        Some(1.0)
    );

    api.delete(&format!("/sandboxes/{id}")).await;
    let (status, _) = api.get("/sandboxes/sbx-missing").await;
    assert_eq!(status, 404);
    let after = scrape(&cp_metrics).await;
    assert_eq!(
        sample(&after, r#"berth_sandboxes{state="running",worker="m1"}"#),
        None
    );
    assert_eq!(sample(&after, "berth_leases"), Some(0.0));
    assert_eq!(
        sample(
            &after,
            r#"berth_api_requests_total{protocol="http",route="/api/v1/sandboxes/{id}",code="404"}"#
        ),
        Some(1.0)
    );
    let worker_text = scrape(&worker_metrics).await;
    assert_eq!(
        sample(&worker_text, r#"berth_worker_destroys_total{outcome="ok"}"#),
        Some(1.0)
    );
    assert_eq!(sample(&worker_text, "berth_worker_sandboxes"), Some(0.0));
    fleet.stop().await;
}

#[tokio::test]
async fn status_shows_the_fleet_at_a_glance() {
    let fleet = TestFleet::start().await;
    let api = &fleet.api;
    api.create_sandbox(json!({})).await;
    let (status, body) = api.get("/status").await;
    assert_eq!(status, 200);
    assert_eq!(body["store"], "sqlite");
    assert_eq!(body["workers"]["total"], 1);
    assert_eq!(body["workers"]["by_status"]["online"], 1);
    assert_eq!(body["sandboxes"]["by_state"]["running"], 1);
    assert_eq!(body["ca"]["fingerprint"], fleet.cp.ca_fingerprint());
    assert_eq!(body["capacity"], 64);
    fleet.stop().await;
}
