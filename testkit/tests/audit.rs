//! The audit log through the real API: every mutating call and every exec recorded
//! with its actor, sandbox, worker, command line and outcome; reads not recorded;
//! secrets never; and an edit or deletion made directly in the database found by
//! verification at that record.

use serde_json::{Value, json};

use berth_testkit::{TestControlPlane, TestFleet};

#[tokio::test]
async fn mutating_calls_and_execs_are_recorded_without_secrets() {
    let fleet = TestFleet::start().await;
    let (cp, worker, api) = (&fleet.cp, fleet.worker(0), &fleet.api);
    let (_, token) = api.post("/tokens", json!({"ttl": "5m"})).await;
    let join_token = token["token"].as_str().unwrap().to_owned();
    let sandbox = api.create_sandbox(json!({})).await;
    let id = sandbox["id"].as_str().unwrap().to_owned();
    let (status, _) = api
        .send(
            api.request(reqwest::Method::POST, &format!("/sandboxes/{id}/exec"))
                .header("X-Request-ID", "audit-req-1")
                .json(&json!({"command": "echo", "args": ["audited"]})),
        )
        .await;
    assert_eq!(status, 200);
    api.post(
        &format!("/sandboxes/{id}/files"),
        json!({"path": "a.txt", "content": "x"}),
    )
    .await;
    api.get(&format!("/sandboxes/{id}")).await;
    api.get("/sandboxes").await;
    let (status, _) = api
        .post("/sandboxes/sbx-nope/exec", json!({"command": "true"}))
        .await;
    assert_eq!(status, 404);
    api.delete(&format!("/sandboxes/{id}")).await;

    let (status, records) = api.get("/audit").await;
    assert_eq!(status, 200);
    let records = records.as_array().unwrap();
    let operations: Vec<&str> = records
        .iter()
        .map(|r| r["operation"].as_str().unwrap())
        .collect();
    assert_eq!(
        operations,
        vec![
            "POST /api/v1/tokens",
            "POST /api/v1/sandboxes",
            "POST /api/v1/sandboxes/{id}/exec",
            "POST /api/v1/sandboxes/{id}/files",
            "POST /api/v1/sandboxes/{id}/exec",
            "DELETE /api/v1/sandboxes/{id}",
        ],
        "reads are not recorded"
    );
    let admin_key_id = cp.admin_key.split('_').nth(1).unwrap();
    for record in records {
        assert_eq!(record["actor"], format!("key:{admin_key_id}"));
    }
    let exec = &records[2];
    assert_eq!(exec["sandbox_id"], id.as_str());
    assert_eq!(exec["worker_id"], worker.worker_id.as_str());
    assert_eq!(exec["detail"], "echo 'audited'");
    assert_eq!(exec["outcome"], "ok");
    assert_eq!(exec["request_id"], "audit-req-1");
    assert_eq!(records[1]["sandbox_id"], id.as_str());
    assert_eq!(records[4]["outcome"], "NOT_FOUND");
    assert_eq!(records[4]["sandbox_id"], "sbx-nope");

    let everything = serde_json::to_string(records).unwrap();
    assert!(
        !everything.contains(&join_token),
        "a join token leaked into the audit log"
    );
    assert!(
        !everything.contains(&cp.admin_key),
        "an API key leaked into the audit log"
    );
    let secret = cp.admin_key.rsplit('_').next().unwrap();
    assert!(!everything.contains(secret));

    let (_, verification) = api.get("/audit/verify").await;
    assert_eq!(verification["ok"], true, "{verification}");
    assert_eq!(verification["records"], 6);

    // a read-only key may not read the audit log
    let viewer = berth_controlplane::api_keys::create_api_key(
        cp.fleet.store(),
        "viewer",
        &[berth_controlplane::api_keys::Scope::Read],
    )
    .await
    .unwrap();
    let (status, _) = api
        .send(
            api.http
                .get(format!("{}/audit", api.base))
                .header("X-API-Key", viewer),
        )
        .await;
    assert_eq!(status, 403);
    fleet.stop().await;
}

async fn tamper(cp: &TestControlPlane, sql: &str) {
    let url = format!("sqlite://{}", cp.config.data_dir.join("berth.db").display());
    let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
    sqlx::query(sql).execute(&pool).await.unwrap();
    pool.close().await;
}

#[tokio::test]
async fn edits_and_deletions_in_the_database_fail_verification_at_that_record() {
    let fleet = TestFleet::start().await;
    let (cp, api) = (&fleet.cp, &fleet.api);
    let id = api.create_sandbox(json!({})).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    for word in ["one", "two", "three"] {
        api.post(
            &format!("/sandboxes/{id}/exec"),
            json!({"command": format!("echo {word}")}),
        )
        .await;
    }
    let (_, verification) = api.get("/audit/verify").await;
    assert_eq!(verification["ok"], true);

    tamper(
        cp,
        "UPDATE audit_events SET detail = 'echo harmless' WHERE seq = 3",
    )
    .await;
    let (_, verification) = api.get("/audit/verify").await;
    assert_eq!(verification["ok"], false, "{verification}");
    assert_eq!(verification["first_broken"]["seq"], 3);

    tamper(
        cp,
        "UPDATE audit_events SET detail = 'echo two' WHERE seq = 3",
    )
    .await;
    let (_, verification) = api.get("/audit/verify").await;
    assert_eq!(verification["ok"], true, "restored: {verification}");

    tamper(cp, "DELETE FROM audit_events WHERE seq = 2").await;
    let (_, verification) = api.get("/audit/verify").await;
    assert_eq!(verification["ok"], false);
    assert_eq!(verification["first_broken"]["seq"], 2);
    let reason: &Value = &verification["first_broken"]["reason"];
    assert!(reason.as_str().unwrap().contains("missing"), "{reason}");
    fleet.stop().await;
}
