//! Team quotas through real control planes: 64 creates at once against a quota of 10,
//! through two replicas sharing one store (Postgres, and SQLite shared by two
//! processes' worth of connections), place exactly 10 and answer the rest 429 naming
//! the quota; TTL, CPU and memory quotas refuse by name; a quota is per team; and the
//! StacyVM-shaped admission, quota summary and pool status answer for the caller's team.

use serde_json::{Value, json};

use berth_testkit::{Api, TestControlPlane, TestWorker, eventually, id_of};

const CREATES: usize = 64;
const QUOTA: usize = 10;

/// Replica `b` of `a` on the same store, one worker with room for every create that
/// knows both, and a team `q` with `max_sandboxes` 10 and a member key for it.
async fn race(a: TestControlPlane) {
    let b = a.start_replica(|_| {}).await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = a.worker_config(&dir.path().join("w0"), Some(a.join_token(None).await));
    config.id = Some("w0".into());
    config.control_plane = vec![a.mesh_url(), b.mesh_url()];
    config.capacity.max_sandboxes = 100;
    let worker = TestWorker::start(config).await.expect("worker starts");
    let admin = Api::new(&a);
    admin.wait_ready().await;
    Api::new(&b).wait_ready().await;
    admin
        .create_team("q", json!({"max_sandboxes": QUOTA}))
        .await;
    let key = admin.team_key("q", &["read", "write"]).await;
    let (via_a, via_b) = (Api::new(&a).with_key(&key), Api::new(&b).with_key(&key));

    let creates = (0..CREATES).map(|index| {
        let api = if index % 2 == 0 {
            via_a.clone()
        } else {
            via_b.clone()
        };
        async move {
            api.post("/sandboxes", json!({"provider": "mock", "ttl": "10m"}))
                .await
        }
    });
    let answers = futures::future::join_all(creates).await;
    let created = answers.iter().filter(|(status, _)| *status == 201).count();
    assert_eq!(created, QUOTA, "{answers:?}");
    for (status, body) in &answers {
        if *status == 201 {
            continue;
        }
        assert_eq!(*status, 429, "{body}");
        assert_eq!(body["code"], "RESOURCE_LIMIT", "{body}");
        assert_eq!(
            body["message"], "team \"q\" is at its max_sandboxes quota (10 of 10)",
            "{body}"
        );
    }
    // nothing half-made: the refused creates left no sandbox behind
    let (_, listed) = via_b.get("/sandboxes").await;
    let listed = listed.as_array().unwrap();
    assert_eq!(listed.len(), QUOTA, "{listed:?}");
    assert!(listed.iter().all(|s| s["state"] == "running"), "{listed:?}");

    // a destroy frees room at once, on either replica
    let (status, _) = via_a
        .delete(&format!("/sandboxes/{}", id_of(&listed[0])))
        .await;
    assert_eq!(status, 200);
    via_b
        .create_sandbox(json!({"provider": "mock", "ttl": "10m"}))
        .await;
    let (status, body) = via_a.post("/sandboxes", json!({"provider": "mock"})).await;
    assert_eq!(status, 429, "{body}");

    // the quota is the team's: another team (and the default one) is not held by it
    Api::new(&b)
        .create_sandbox(json!({"provider": "mock"}))
        .await;
    worker.stop().await;
    b.stop().await;
    a.stop().await;
}

#[tokio::test]
async fn concurrent_creates_through_two_replicas_never_exceed_a_quota_on_postgres() {
    let Some(a) = TestControlPlane::start_on_postgres("quota_race", |_| {}).await else {
        return;
    };
    race(a).await;
}

#[tokio::test]
async fn concurrent_creates_through_two_replicas_never_exceed_a_quota_on_sqlite() {
    // one database file both replicas open (the replica copies the configured url)
    let store = tempfile::tempdir().unwrap();
    let shared = format!("sqlite://{}", store.path().join("berth.db").display());
    let a = TestControlPlane::try_start_on(&shared, |_| {})
        .await
        .expect("a control plane on the shared file");
    race(a).await;
}

/// A fleet of one mock worker with a team `t` limited by `quota`, and its member key.
async fn team_with(quota: Value) -> (berth_testkit::TestFleet, Api) {
    let fleet = berth_testkit::TestFleet::builder()
        .max_sandboxes(20)
        .start()
        .await;
    fleet.api.wait_ready().await;
    fleet.api.create_team("t", quota).await;
    let key = fleet.api.team_key("t", &["read", "write"]).await;
    let member = fleet.api.with_key(&key);
    (fleet, member)
}

#[tokio::test]
async fn ttl_cpu_and_memory_quotas_refuse_by_name() {
    let (fleet, member) = team_with(json!({
        "max_ttl": "1h", "max_vcpus": 3, "max_memory_mb": 1024
    }))
    .await;
    let (status, body) = member
        .post("/sandboxes", json!({"provider": "mock", "ttl": "2h"}))
        .await;
    assert_eq!(
        (status, &body["code"]),
        (429, &json!("RESOURCE_LIMIT")),
        "{body}"
    );
    assert_eq!(
        body["message"],
        "ttl 2h is over team \"t\"'s max_ttl quota of 1h"
    );

    let first = member
        .create_sandbox(json!({"provider": "mock", "vcpus": 2, "memory_mb": 256}))
        .await;
    let (status, body) = member
        .post(
            "/sandboxes",
            json!({"provider": "mock", "vcpus": 2, "memory_mb": 256}),
        )
        .await;
    assert_eq!(status, 429, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("max_vcpus"),
        "{body}"
    );
    let (status, body) = member
        .post(
            "/sandboxes",
            json!({"provider": "mock", "vcpus": 1, "memory_mb": 1024}),
        )
        .await;
    assert_eq!(status, 429, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("max_memory_mb"),
        "{body}"
    );
    // extending past max_ttl is refused too, within it allowed
    let id = id_of(&first);
    let (status, body) = member
        .post(&format!("/sandboxes/{id}/extend"), json!({"ttl": "90m"}))
        .await;
    assert_eq!(status, 429, "{body}");
    let (status, body) = member
        .post(&format!("/sandboxes/{id}/extend"), json!({"ttl": "50m"}))
        .await;
    assert_eq!(status, 200, "{body}");

    // admission answers for the team, in StacyVM's fields and no others
    let (status, body) = member
        .post(
            "/sandboxes/admission",
            json!({"provider": "mock", "vcpus": 2}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let mut fields: Vec<&str> = body
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    fields.sort_unstable();
    assert_eq!(
        fields,
        [
            "active_owner_sandboxes",
            "active_sandboxes",
            "allowed",
            "max_owner_sandboxes",
            "max_sandboxes",
            "max_ttl",
            "queueable",
            "reason"
        ]
    );
    assert_eq!(body["allowed"], false);
    assert_eq!(body["active_sandboxes"], 1);
    assert_eq!(body["max_ttl"], "1h");
    assert!(
        body["reason"].as_str().unwrap().contains("max_vcpus"),
        "{body}"
    );

    // a cluster admin lifts the limit: the same create passes
    let (status, body) = fleet
        .api
        .send(
            fleet
                .api
                .request(reqwest::Method::PATCH, "/teams/t")
                .json(&json!({"max_vcpus": 0})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["quota"]["max_vcpus"], Value::Null, "{body}");
    member
        .create_sandbox(json!({"provider": "mock", "vcpus": 2, "memory_mb": 256}))
        .await;
    let (status, team) = member.get("/teams/t").await;
    assert_eq!(status, 200, "{team}");
    assert_eq!(team["usage"]["sandboxes"], 2, "{team}");
    assert_eq!(team["usage"]["vcpus"], 4, "{team}");
    fleet.stop().await;
}

#[tokio::test]
async fn quota_summary_and_pool_status_answer_for_the_callers_team() {
    let (fleet, member) = team_with(json!({"max_sandboxes": 4, "max_ttl": "2h"})).await;
    fleet.api.create_team("open", json!({})).await;
    member.create_sandbox(json!({"provider": "mock"})).await;

    // a cluster key counts every team; a team's key its own
    let (status, all) = fleet.api.get("/quotas/summary").await;
    assert_eq!(status, 200, "{all}");
    assert_eq!(
        all,
        json!({"total": 3, "with_max_sandboxes": 1, "with_max_ttl": 1, "with_max_exec_timeout": 3})
    );
    let (_, own) = member.get("/quotas/summary").await;
    assert_eq!(
        own,
        json!({"total": 1, "with_max_sandboxes": 1, "with_max_ttl": 1, "with_max_exec_timeout": 1})
    );

    let (status, pool) = member.get("/pool/status").await;
    assert_eq!(status, 200, "{pool}");
    assert_eq!(pool["team"], "t");
    assert_eq!(pool["quota"]["max_sandboxes"], 4);
    assert_eq!(pool["usage"]["sandboxes"], 1);
    let pools = pool["pools"].as_array().unwrap();
    assert_eq!(pools.len(), 1, "{pool}");
    assert_eq!(pools[0]["name"], "default");
    assert_eq!(pools[0]["online"], 1);
    assert_eq!(pools[0]["capacity"]["sandboxes"], 20);
    eventually(
        "the worker's allocation to show",
        std::time::Duration::from_secs(10),
        || async {
            let (_, pool) = member.get("/pool/status").await;
            (pool["pools"][0]["used"]["sandboxes"] == 1).then_some(())
        },
    )
    .await;

    // a team key cannot see another team's quota, nor act for it
    let (status, _) = member.get("/teams/open").await;
    assert_eq!(status, 404);
    let (status, body) = member
        .send(
            member
                .request(reqwest::Method::GET, "/pool/status")
                .header("X-Tenant-ID", "open"),
        )
        .await;
    assert_eq!(status, 403, "{body}");
    fleet.stop().await;
}
