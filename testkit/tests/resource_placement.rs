//! Placement by memory and CPUs, through a real control plane and real workers: a
//! request no worker could ever hold is a 400 naming the largest worker (not a
//! sandbox the host cannot back), memory is a hard limit that frees up when a
//! sandbox ends, and a worker reporting its memory is placed by it.

use std::time::Duration;

use serde_json::json;

use berth_testkit::{TestFleet, eventually, id_of};

const WAIT: Duration = Duration::from_secs(10);

/// Two mock workers with 8 slots each: w0 with 1024 MiB and 2 CPUs, w1 with 2048 MiB
/// and 4 CPUs.
async fn fleet() -> TestFleet {
    let fleet = TestFleet::builder()
        .workers(2)
        .max_sandboxes(8)
        .worker(|config| {
            let big = config.id.as_deref() == Some("w1");
            config.capacity.memory_mb = if big { 2048 } else { 1024 };
            config.capacity.vcpus = if big { 4 } else { 2 };
        })
        .start()
        .await;
    // both have reported what they hold
    eventually("the workers report their memory", WAIT, || async {
        let (_, workers) = fleet.api.get("/workers").await;
        let memory: Vec<i64> = workers
            .as_array()?
            .iter()
            .filter_map(|w| w["capacity"]["memory_mb"].as_i64())
            .collect();
        (memory.len() == 2 && memory.contains(&1024) && memory.contains(&2048)).then_some(())
    })
    .await;
    fleet
}

#[tokio::test]
async fn more_than_any_worker_has_is_a_bad_request() {
    let fleet = fleet().await;
    for (body, names) in [
        (json!({"memory_mb": 4096}), "2048 MiB"),
        (json!({"vcpus": 8}), "has 4"),
    ] {
        let (status, answer) = fleet.api.post("/sandboxes", body.clone()).await;
        assert_eq!(status, 400, "{body} -> {answer}");
        assert_eq!(answer["code"], "BAD_REQUEST");
        let message = answer["message"].as_str().unwrap();
        assert!(message.contains(names), "{message}");
    }
    // what the largest worker can hold is placed there
    let sandbox = fleet
        .api
        .create_sandbox(json!({"memory_mb": 1536, "vcpus": 3}))
        .await;
    assert_eq!(sandbox["worker_id"], "w1");
    fleet.stop().await;
}

#[tokio::test]
async fn memory_is_a_hard_limit_given_back_when_a_sandbox_ends() {
    let fleet = fleet().await;
    // 3 GiB in all: three sandboxes of 1 GiB fill both workers (slots are left)
    let mut ids = Vec::new();
    for _ in 0..3 {
        let sandbox = fleet.api.create_sandbox(json!({"memory_mb": 1024})).await;
        ids.push(id_of(&sandbox));
    }
    let (status, answer) = fleet
        .api
        .post("/sandboxes", json!({"memory_mb": 1024}))
        .await;
    assert_eq!(status, 429, "{answer}");
    assert!(
        answer["message"].as_str().unwrap().contains("memory"),
        "{answer}"
    );
    // the admission check says the same without creating anything
    let (_, admission) = fleet
        .api
        .post("/sandboxes/admission", json!({"memory_mb": 1024}))
        .await;
    assert_eq!(admission["allowed"], false, "{admission}");
    assert_eq!(admission["queueable"], true, "{admission}");
    // a small one still fits nowhere: every MiB is taken
    let (status, _) = fleet.api.post("/sandboxes", json!({"memory_mb": 16})).await;
    assert_eq!(status, 429);

    let (status, _) = fleet.api.delete(&format!("/sandboxes/{}", ids[0])).await;
    assert_eq!(status, 200);
    let sandbox = fleet.api.create_sandbox(json!({"memory_mb": 1024})).await;
    assert_eq!(sandbox["state"], "running");
    fleet.stop().await;
}
