//! Placement by pool and labels, through a real control plane and real workers: a
//! join token names the pool and labels its worker carries; a create's constraints
//! keep it on the workers whose labels meet them, over HTTP and gRPC; a team's pools
//! keep it in those pools; and when they leave no worker the 503 names what excluded
//! what, while a full eligible worker is still a 429.

use std::time::Duration;

use serde_json::json;

use berth_proto::v1 as pb;
use berth_proto::v1::admin_client::AdminClient;
use berth_proto::v1::sandboxes_client::SandboxesClient;
use berth_testkit::{TestFleet, api_channel, eventually, keyed};

const WAIT: Duration = Duration::from_secs(10);

/// Two mock workers of 3 slots each: w0 in pool `eu` (region=eu, disk=ssd) and w1 in
/// pool `us` (region=us, disk=hdd).
async fn fleet() -> TestFleet {
    let mut fleet = TestFleet::builder()
        .workers(0)
        .max_sandboxes(3)
        .start()
        .await;
    fleet
        .add_worker_in_pool("eu", &[("region", "eu"), ("disk", "ssd")])
        .await;
    fleet
        .add_worker_in_pool("us", &[("region", "us"), ("disk", "hdd")])
        .await;
    fleet.wait_online().await;
    fleet
}

/// Creates over HTTP with `constraints`; the worker each landed on.
async fn placed(fleet: &TestFleet, constraints: &[&str], count: usize) -> Vec<String> {
    let mut workers = Vec::new();
    for _ in 0..count {
        let sandbox = fleet
            .api
            .create_sandbox(json!({"provider": "mock", "constraints": constraints}))
            .await;
        workers.push(sandbox["worker_id"].as_str().unwrap().to_owned());
    }
    workers
}

#[tokio::test]
async fn workers_carry_the_pool_and_labels_of_their_join_token() {
    let fleet = fleet().await;
    let (status, workers) = fleet.api.get("/workers").await;
    assert_eq!(status, 200);
    let workers = workers.as_array().unwrap();
    assert_eq!(workers[0]["id"], "w0");
    assert_eq!(workers[0]["pool"], "eu");
    assert_eq!(workers[0]["labels"], json!({"region": "eu", "disk": "ssd"}));
    let (_, one) = fleet.api.get("/workers/w1").await;
    assert_eq!(one["pool"], "us");
    assert_eq!(one["labels"], json!({"region": "us", "disk": "hdd"}));

    // the gRPC view too
    let mut admin = AdminClient::new(api_channel(&fleet.cp.api_url()).await);
    let worker = admin
        .get_worker(keyed(
            pb::GetWorkerRequest { id: "w0".into() },
            &fleet.cp.admin_key,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(worker.pool, "eu");
    assert_eq!(worker.labels.get("disk").map(String::as_str), Some("ssd"));
    fleet.stop().await;
}

#[tokio::test]
async fn join_tokens_check_their_pool_and_labels() {
    let fleet = TestFleet::builder().workers(0).start().await;
    let (status, token) = fleet
        .api
        .post("/tokens", json!({"pool": "eu", "labels": {"region": "eu"}}))
        .await;
    assert_eq!(status, 201, "{token}");
    assert_eq!(token["pool"], "eu");
    assert_eq!(token["labels"], json!({"region": "eu"}));
    let (status, token) = fleet.api.post("/tokens", json!({})).await;
    assert_eq!(status, 201, "{token}");
    assert_eq!(token["pool"], "default");
    assert_eq!(token["labels"], json!({}));

    let many: serde_json::Map<String, serde_json::Value> =
        (0..33).map(|i| (format!("k{i}"), json!("v"))).collect();
    for (body, names) in [
        (json!({"pool": "EU"}), "\"EU\""),
        (json!({"pool": "-eu"}), "\"-eu\""),
        (json!({"labels": {"bad key": "x"}}), "\"bad key\""),
        (json!({"labels": {"region": "e/u"}}), "\"e/u\""),
        (json!({"labels": many}), "33 labels"),
    ] {
        let (status, answer) = fleet.api.post("/tokens", body.clone()).await;
        assert_eq!(status, 400, "{body} -> {answer}");
        assert_eq!(answer["code"], "BAD_REQUEST");
        let message = answer["message"].as_str().unwrap();
        assert!(message.contains(names), "{body}: {message}");
    }

    // a worker enrolled with an unpooled token is in the default pool
    let mut fleet = fleet;
    fleet.add_worker(|_| {}).await;
    fleet.wait_online().await;
    let (_, worker) = fleet.api.get("/workers/w0").await;
    assert_eq!(worker["pool"], "default");
    assert_eq!(worker["labels"], json!({}));
    fleet.stop().await;
}

#[tokio::test]
async fn constraints_keep_sandboxes_on_the_workers_that_meet_them() {
    let fleet = fleet().await;
    assert_eq!(placed(&fleet, &["region=eu"], 2).await, ["w0", "w0"]);
    assert_eq!(placed(&fleet, &["disk!=ssd"], 2).await, ["w1", "w1"]);
    assert_eq!(placed(&fleet, &["region=eu", "disk=ssd"], 1).await, ["w0"]);

    // w0 is full now; w1 has room but does not meet the constraint: wait, not
    // "nobody could"
    let (status, answer) = fleet
        .api
        .post(
            "/sandboxes",
            json!({"provider": "mock", "constraints": ["region=eu"]}),
        )
        .await;
    assert_eq!(status, 429, "{answer}");
    assert_eq!(answer["code"], "RESOURCE_LIMIT");
    // without the constraint the free slot is used
    assert_eq!(placed(&fleet, &[], 1).await, ["w1"]);
    fleet.stop().await;
}

#[tokio::test]
async fn a_constraint_no_worker_meets_is_unavailable_and_named() {
    let fleet = fleet().await;
    let (status, answer) = fleet
        .api
        .post(
            "/sandboxes",
            json!({"provider": "mock", "constraints": ["region=asia"]}),
        )
        .await;
    assert_eq!(status, 503, "{answer}");
    assert_eq!(answer["code"], "UNAVAILABLE");
    assert_eq!(
        answer["message"],
        "no eligible worker: constraint region=asia excluded 2 workers \
         (region=eu on w0; region=us on w1)"
    );
    let (status, answer) = fleet
        .api
        .post(
            "/sandboxes",
            json!({"constraints": ["region=eu", "gpu=true"]}),
        )
        .await;
    assert_eq!(status, 503, "{answer}");
    let message = answer["message"].as_str().unwrap();
    assert!(
        message.contains("constraint gpu=true excluded 2 workers (no gpu on w0, w1)"),
        "{message}"
    );
    assert!(
        message.contains("constraint region=eu excluded 1 worker (region=us on w1)"),
        "{message}"
    );

    // bad syntax is the caller's to fix
    for bad in ["region", "region=e u", "=eu"] {
        let (status, answer) = fleet
            .api
            .post("/sandboxes", json!({"constraints": [bad]}))
            .await;
        assert_eq!(status, 400, "{bad}: {answer}");
        assert_eq!(answer["code"], "BAD_REQUEST");
    }

    // admission answers the same without creating anything
    let (status, decision) = fleet
        .api
        .post(
            "/sandboxes/admission",
            json!({"constraints": ["region=asia"]}),
        )
        .await;
    assert_eq!(status, 200, "{decision}");
    assert_eq!(decision["allowed"], false);
    assert_eq!(decision["queueable"], false);
    assert!(
        decision["reason"]
            .as_str()
            .unwrap()
            .contains("constraint region=asia"),
        "{decision}"
    );
    let (_, decision) = fleet
        .api
        .post(
            "/sandboxes/admission",
            json!({"constraints": ["region=us"]}),
        )
        .await;
    assert_eq!(decision["allowed"], true, "{decision}");
    let (_, listed) = fleet.api.get("/sandboxes").await;
    assert_eq!(listed.as_array().map(Vec::len), Some(0), "{listed}");
    fleet.stop().await;
}

#[tokio::test]
async fn a_team_s_pools_keep_its_sandboxes_in_them() {
    let fleet = fleet().await;
    let admin = &fleet.api;
    let member = |team: &'static str, pools: &'static [&'static str]| async move {
        admin.create_team(team, json!({"pools": pools})).await;
        admin.with_key(&admin.team_key(team, &["read", "write"]).await)
    };
    let europe = member("europe", &["eu"]).await;
    for _ in 0..3 {
        let view = europe.create_sandbox(json!({"provider": "mock"})).await;
        assert_eq!(view["worker_id"], "w0", "{view}");
        assert_eq!(view["tenant_id"], "europe");
    }
    let spread = member("spread", &["us", "asia"]).await;
    let view = spread.create_sandbox(json!({"provider": "mock"})).await;
    assert_eq!(view["worker_id"], "w1", "{view}");

    let asia = member("asia", &["asia"]).await;
    let (status, body) = asia.post("/sandboxes", json!({"provider": "mock"})).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(
        body["message"],
        "no eligible worker: team pools [asia] excluded 2 workers (w0 in pool eu; w1 in pool us)"
    );
    // its pool full is a wait, not a refusal
    let (status, body) = europe.post("/sandboxes", json!({"provider": "mock"})).await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["code"], "RESOURCE_LIMIT");

    // pools and constraints together: each named, in admission too
    let us = member("us", &["us"]).await;
    let (status, body) = us
        .post(
            "/sandboxes/admission",
            json!({"provider": "mock", "constraints": ["disk=ssd"]}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["allowed"], false);
    assert_eq!(
        body["reason"],
        "no eligible worker: team pools [us] excluded 1 worker (w0 in pool eu); \
         constraint disk=ssd excluded 1 worker (disk=hdd on w1)"
    );
    // a cluster admin's change of a team's pools applies to its next create
    let (status, body) = admin
        .send(
            admin
                .request(reqwest::Method::PATCH, "/teams/asia")
                .json(&json!({"pools": ["us"]})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let view = asia.create_sandbox(json!({"provider": "mock"})).await;
    assert_eq!(view["worker_id"], "w1", "{view}");
    fleet.stop().await;
}

#[tokio::test]
async fn grpc_creates_take_constraints() {
    let fleet = fleet().await;
    let mut client = SandboxesClient::new(api_channel(&fleet.cp.api_url()).await);
    for _ in 0..2 {
        let sandbox = client
            .create(keyed(
                pb::CreateSandboxRequest {
                    provider: "mock".into(),
                    constraints: vec!["region=us".into()],
                    ..Default::default()
                },
                &fleet.cp.admin_key,
            ))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(sandbox.worker_id, "w1");
    }
    let refused = client
        .create(keyed(
            pb::CreateSandboxRequest {
                constraints: vec!["disk=nvme".into()],
                ..Default::default()
            },
            &fleet.cp.admin_key,
        ))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unavailable);
    assert!(
        refused
            .message()
            .contains("constraint disk=nvme excluded 2 workers"),
        "{}",
        refused.message()
    );
    let refused = client
        .create(keyed(
            pb::CreateSandboxRequest {
                constraints: vec!["disk".into()],
                ..Default::default()
            },
            &fleet.cp.admin_key,
        ))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);
    fleet.stop().await;
}

#[tokio::test]
async fn a_restarted_worker_keeps_its_pool_and_labels() {
    let mut fleet = fleet().await;
    fleet.stop_worker(0).await;
    fleet.restart_worker(0).await;
    fleet.wait_online().await;
    eventually("w0 back in its pool", WAIT, || async {
        let (_, worker) = fleet.api.get("/workers/w0").await;
        (worker["status"] == "online" && worker["pool"] == "eu").then_some(())
    })
    .await;
    let (_, worker) = fleet.api.get("/workers/w0").await;
    assert_eq!(worker["labels"], json!({"region": "eu", "disk": "ssd"}));
    assert_eq!(placed(&fleet, &["region=eu"], 1).await, ["w0"]);
    fleet.stop().await;
}

/// Every test above again, on a Postgres store: this test binary re-runs itself with
/// `BERTH_TEST_DATABASE=postgres` (skipped, visibly, when Postgres is not installed).
#[test]
fn on_postgres() {
    berth_testkit::rerun_on_postgres("on_postgres");
}
