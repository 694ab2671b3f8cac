//! Teams, users and roles through the real API: a cluster admin makes teams; a team
//! admin manages its own users and keys and nothing beyond; a key bound to a user
//! creates as that user only; `X-User-ID` names the owner within what the key may do;
//! a team that owns sandboxes is deleted only by force, which destroys them first and
//! revokes its keys; audit records carry the team and user.

use std::time::Duration;

use serde_json::json;

use berth_testkit::{Api, TestFleet, eventually, id_of};

async fn fleet() -> TestFleet {
    let fleet = TestFleet::start().await;
    fleet.api.wait_ready().await;
    fleet
}

/// Mints a key through `api` with `body`; (status, answer).
async fn mint(api: &Api, body: serde_json::Value) -> (u16, serde_json::Value) {
    api.post("/keys", body).await
}

#[tokio::test]
async fn a_team_admin_manages_its_own_team_and_nothing_beyond() {
    let fleet = fleet().await;
    let admin = &fleet.api;
    admin.create_team("a", json!({})).await;
    admin.create_team("b", json!({})).await;
    let team_admin = admin.with_key(&admin.team_key("a", &["admin"]).await);

    // users of its own team, not of another
    let (status, body) = team_admin
        .post("/teams/a/users", json!({"name": "alice"}))
        .await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = team_admin
        .post("/teams/b/users", json!({"name": "mallory"}))
        .await;
    assert_eq!(status, 404, "{body}");
    let (status, body) = team_admin
        .post("/teams/a/users", json!({"name": "alice"}))
        .await;
    assert_eq!(status, 409, "{body}");
    let (status, body) = team_admin
        .post("/teams/a/users", json!({"name": "no spaces"}))
        .await;
    assert_eq!(status, 400, "{body}");

    // keys of its own team only: never a cluster key, never another team's
    let (status, body) = mint(&team_admin, json!({"scopes": ["read"], "user": "alice"})).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(
        (body["team"].as_str(), body["role"].as_str()),
        (Some("a"), Some("member"))
    );
    let (status, body) = mint(&team_admin, json!({"scopes": ["admin"], "team": "b"})).await;
    assert_eq!(status, 403, "{body}");
    let (status, body) = mint(&team_admin, json!({"scopes": ["read"], "user": "nobody"})).await;
    assert_eq!(status, 404, "{body}");
    let (status, body) = mint(admin, json!({"scopes": ["read"], "team": "zz"})).await;
    assert_eq!(status, 404, "{body}");
    let (status, body) = mint(admin, json!({"scopes": ["root"], "team": "a"})).await;
    assert_eq!(status, 400, "{body}");
    let (status, listed) = team_admin.get("/keys").await;
    assert_eq!(status, 200);
    assert!(
        listed.as_array().unwrap().iter().all(|k| k["team"] == "a"),
        "{listed}"
    );

    // the fleet is a cluster admin's: teams, join tokens, workers, the audit log
    let (status, body) = team_admin.post("/teams", json!({"name": "c"})).await;
    assert_eq!(status, 403, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("cluster admin"),
        "{body}"
    );
    let (status, _) = team_admin.post("/tokens", json!({})).await;
    assert_eq!(status, 403);
    let (status, _) = team_admin.get("/audit").await;
    assert_eq!(status, 403);
    let worker = fleet.worker(0).worker_id.clone();
    let (status, _) = team_admin
        .post(&format!("/workers/{worker}/cordon"), json!({}))
        .await;
    assert_eq!(status, 403);
    let (status, teams) = team_admin.get("/teams").await;
    assert_eq!(status, 200);
    let names: Vec<&str> = teams
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["a"]);
    fleet.stop().await;
}

#[tokio::test]
async fn owners_come_from_the_key_or_within_it_from_x_user_id() {
    let fleet = fleet().await;
    let admin = &fleet.api;
    admin.create_team("a", json!({})).await;
    for user in ["alice", "bob"] {
        let (status, body) = admin.post("/teams/a/users", json!({"name": user})).await;
        assert_eq!(status, 201, "{body}");
    }
    let (status, minted) = mint(
        admin,
        json!({"scopes": ["read", "write"], "team": "a", "user": "alice"}),
    )
    .await;
    assert_eq!(status, 201, "{minted}");
    let alice = admin.with_key(minted["key"].as_str().unwrap());
    let sandbox = alice.create_sandbox(json!({"provider": "mock"})).await;
    assert_eq!(sandbox["owner_id"], "alice");
    assert_eq!(sandbox["tenant_id"], "a");
    let (status, body) = alice
        .post("/sandboxes", json!({"provider": "mock", "owner_id": "bob"}))
        .await;
    assert_eq!(status, 403, "{body}");
    let (status, body) = alice
        .send(
            alice
                .request(reqwest::Method::POST, "/sandboxes")
                .header("X-User-ID", "bob")
                .json(&json!({"provider": "mock"})),
        )
        .await;
    assert_eq!(status, 403, "{body}");

    // an unbound member key names the owner with X-User-ID
    let member = admin.with_key(&admin.team_key("a", &["read", "write"]).await);
    let (status, body) = member
        .send(
            member
                .request(reqwest::Method::POST, "/sandboxes")
                .header("X-User-ID", "bob")
                .json(&json!({"provider": "mock"})),
        )
        .await;
    assert_eq!(
        (status, body["owner_id"].as_str()),
        (201, Some("bob")),
        "{body}"
    );

    // a cluster key creates into the team X-Tenant-ID names, which must exist
    let (status, body) = admin
        .send(
            admin
                .request(reqwest::Method::POST, "/sandboxes")
                .header("X-Tenant-ID", "a")
                .json(&json!({"provider": "mock"})),
        )
        .await;
    assert_eq!(
        (status, body["tenant_id"].as_str()),
        (201, Some("a")),
        "{body}"
    );
    let (status, body) = admin
        .send(
            admin
                .request(reqwest::Method::POST, "/sandboxes")
                .header("X-Tenant-ID", "nosuch")
                .json(&json!({"provider": "mock"})),
        )
        .await;
    assert_eq!(status, 404, "{body}");

    // removing a user who owns sandboxes: refused, then forced
    let (status, body) = admin.delete("/teams/a/users/alice").await;
    assert_eq!(status, 409, "{body}");
    let (status, body) = admin.delete("/teams/a/users/alice?force=true").await;
    assert_eq!(
        (status, body["destroyed"].as_u64()),
        (200, Some(1)),
        "{body}"
    );
    let (status, _) = alice.get("/sandboxes").await;
    assert_eq!(status, 401, "a removed user's key still works");
    let (status, _) = admin.get(&format!("/sandboxes/{}", id_of(&sandbox))).await;
    assert_eq!(status, 404);

    // the audit log names the team and user a call acted for
    let (_, records) = admin.get("/audit?limit=1000").await;
    let create = records
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["operation"] == "POST /api/v1/sandboxes" && r["user"] == "bob")
        .unwrap_or_else(|| panic!("no audit record of bob's create: {records}"));
    assert_eq!(create["team"], "a", "{create}");
    let (_, verified) = admin.get("/audit/verify").await;
    assert_eq!(verified["ok"], true, "{verified}");
    fleet.stop().await;
}

#[tokio::test]
async fn a_team_with_sandboxes_is_deleted_only_by_force() {
    let fleet = fleet().await;
    let admin = &fleet.api;
    admin.create_team("gone", json!({"max_sandboxes": 5})).await;
    let key = admin.team_key("gone", &["read", "write"]).await;
    let member = admin.with_key(&key);
    let first = id_of(&member.create_sandbox(json!({"provider": "mock"})).await);
    member.create_sandbox(json!({"provider": "mock"})).await;

    let (status, body) = admin.delete("/teams/gone").await;
    assert_eq!(status, 409, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("2 sandbox"),
        "{body}"
    );
    let (status, body) = admin.delete("/teams/default").await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = admin.delete("/teams/gone?force=true").await;
    assert_eq!(
        (status, body["destroyed"].as_u64()),
        (200, Some(2)),
        "{body}"
    );

    let (status, _) = admin.get(&format!("/sandboxes/{first}")).await;
    assert_eq!(status, 404);
    // its keys are revoked, at once on this control plane
    eventually(
        "the deleted team's key to be refused",
        Duration::from_secs(10),
        || async { (member.get("/sandboxes").await.0 == 401).then_some(()) },
    )
    .await;
    let (status, _) = admin.get("/teams/gone").await;
    assert_eq!(status, 404);
    // the name can be used again, with nothing carried over
    admin.create_team("gone", json!({})).await;
    let (_, team) = admin.get("/teams/gone").await;
    assert_eq!(team["usage"]["sandboxes"], 0, "{team}");
    fleet.stop().await;
}
