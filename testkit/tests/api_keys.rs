//! Managed API keys through the real API: created, listed and revoked over HTTP and
//! gRPC (admin scope), scopes enforced on what the minted keys do, expiry and
//! revocation answered 401 naming the key (and recorded in the audit log), last use
//! recorded, the last usable admin key kept, and a revocation through one replica
//! refused by the other within the key cache window.

use std::time::Duration;

use serde_json::{Value, json};

use berth_proto::v1 as pb;
use berth_proto::v1::admin_client::AdminClient;
use berth_proto::v1::sandboxes_client::SandboxesClient;
use berth_testkit::{Api, TestControlPlane, TestFleet, api_channel, eventually, id_of, keyed};

/// Longer than the key cache's 5 s, with room for a slow machine.
const WAIT: Duration = Duration::from_secs(30);

fn as_key(api: &Api, key: &str) -> Api {
    Api {
        key: key.to_owned(),
        ..api.clone()
    }
}

/// Creates a key through the API and returns (its id, the key); panics unless 201.
async fn mint(api: &Api, scopes: &[&str]) -> (String, String) {
    let (status, body) = api
        .post("/keys", json!({"name": "test", "scopes": scopes}))
        .await;
    assert_eq!(status, 201, "{body}");
    (
        body["id"].as_str().unwrap().to_owned(),
        body["key"].as_str().unwrap().to_owned(),
    )
}

#[tokio::test]
async fn minted_keys_do_only_what_their_scopes_allow_over_http_and_grpc() {
    let fleet = TestFleet::start().await;
    let admin = &fleet.api;
    admin.wait_ready().await;
    let id = id_of(&admin.create_sandbox(json!({})).await);
    let exec = json!({"command": "echo", "args": ["hi"]});

    let (_, read) = mint(admin, &["read"]).await;
    let reader = as_key(admin, &read);
    let (status, listed) = reader.get("/sandboxes").await;
    assert_eq!(status, 200, "{listed}");
    assert!(listed.to_string().contains(&id));
    let (status, body) = reader.exec(&id, exec.clone()).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["code"], "FORBIDDEN");
    assert!(body["message"].as_str().unwrap().contains("exec"), "{body}");

    let mut sandboxes = SandboxesClient::new(api_channel(&fleet.cp.api_url()).await);
    let listed = sandboxes
        .list(keyed(pb::ListSandboxesRequest::default(), &read))
        .await
        .expect("a read key lists over gRPC");
    assert!(!listed.into_inner().sandboxes.is_empty());
    let refused = sandboxes
        .exec(keyed(
            pb::ExecRequest {
                sandbox_id: id.clone(),
                command: "echo".into(),
                ..Default::default()
            },
            &read,
        ))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{refused:?}");

    let (_, write) = mint(admin, &["write"]).await;
    let (status, body) = as_key(admin, &write).exec(&id, exec.clone()).await;
    assert_eq!(status, 403, "write cannot exec: {body}");

    let (_, exec_only) = mint(admin, &["exec"]).await;
    let exec_api = as_key(admin, &exec_only);
    let (status, body) = exec_api.exec(&id, exec.clone()).await;
    assert_eq!(status, 200, "exec can exec: {body}");
    let (status, body) = exec_api.post("/sandboxes", json!({})).await;
    assert_eq!(status, 403, "exec cannot create: {body}");

    let (_, everything_but_admin) = mint(admin, &["read", "write", "exec"]).await;
    let member = as_key(admin, &everything_but_admin);
    let (status, body) = member.post("/keys", json!({"scopes": ["read"]})).await;
    assert_eq!(status, 403, "only admin makes keys: {body}");
    let (status, _) = member.get("/keys").await;
    assert_eq!(status, 403);
    let mut admin_grpc = AdminClient::new(api_channel(&fleet.cp.api_url()).await);
    let refused = admin_grpc
        .create_api_key(keyed(
            pb::CreateApiKeyRequest {
                scopes: vec!["read".into()],
                ..Default::default()
            },
            &everything_but_admin,
        ))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::PermissionDenied);
    fleet.stop().await;
}

#[tokio::test]
async fn keys_are_listed_without_secrets_with_their_last_use() {
    let cp = TestControlPlane::start().await;
    let admin = Api::new(&cp);
    let (status, created) = admin
        .post(
            "/keys",
            json!({"name": "ci", "scopes": ["read", "exec"], "expires": "30d"}),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().unwrap().to_owned();
    let key = created["key"].as_str().unwrap().to_owned();
    assert!(key.starts_with(&format!("berth_{id}_")), "{key}");
    assert_eq!(created["name"], "ci");
    assert_eq!(created["scopes"], json!(["read", "exec"]));
    assert!(created["created_at"].as_str().unwrap().ends_with('Z'));
    assert!(created["expires_at"].as_str().unwrap().ends_with('Z'));

    let (_, view) = admin.get(&format!("/keys/{id}")).await;
    assert_eq!(view["last_used_at"], Value::Null, "not used yet");
    assert_eq!(as_key(&admin, &key).get("/workers").await.0, 200);
    let (status, view) = admin.get(&format!("/keys/{id}")).await;
    assert_eq!(status, 200);
    assert!(view["last_used_at"].is_string(), "{view}");
    assert_eq!(view["revoked_at"], Value::Null);

    let (status, listed) = admin.get("/keys").await;
    assert_eq!(status, 200);
    let keys = listed.as_array().unwrap();
    assert_eq!(keys.len(), 2, "the admin key and ci: {listed}");
    let secret = key.rsplit('_').next().unwrap();
    let text = listed.to_string();
    assert!(!text.contains(secret), "a secret in the list: {text}");
    for listed in keys {
        let mut fields: Vec<&str> = listed
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        fields.sort_unstable();
        assert_eq!(
            fields,
            [
                "created_at",
                "expires_at",
                "id",
                "last_used_at",
                "name",
                "revoked_at",
                "role",
                "scopes",
                "team",
                "user"
            ]
        );
    }
    let (status, body) = admin.get("/keys/nosuch").await;
    assert_eq!(status, 404, "{body}");

    // the audit record of the creation names the key, never the secret
    let (_, records) = admin.get("/audit").await;
    let text = records.to_string();
    assert!(!text.contains(secret), "a secret in the audit log: {text}");
    assert!(text.contains(&format!("key={id}")), "{text}");
    cp.stop().await;
}

#[tokio::test]
async fn an_expired_key_is_refused_naming_its_expiry_and_the_audit_names_it() {
    let cp = TestControlPlane::start().await;
    let admin = Api::new(&cp);
    let (status, created) = admin
        .post(
            "/keys",
            json!({"scopes": ["read", "write"], "expires": "1s"}),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().unwrap().to_owned();
    let user = as_key(&admin, created["key"].as_str().unwrap());
    let body = eventually("the key to expire", WAIT, || async {
        let (status, body) = user.get("/workers").await;
        (status == 401).then_some(body)
    })
    .await;
    assert_eq!(body["code"], "UNAUTHORIZED");
    let message = body["message"].as_str().unwrap();
    assert!(
        message.starts_with(&format!("API key {id} expired at ")),
        "{message}"
    );
    // a mutating call too
    let (status, _) = user.post("/sandboxes", json!({})).await;
    assert_eq!(status, 401);

    let (_, records) = admin.get("/audit").await;
    let refused: Vec<&Value> = records
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["outcome"] == "UNAUTHORIZED")
        .collect();
    let operations: Vec<&str> = refused
        .iter()
        .map(|r| r["operation"].as_str().unwrap())
        .collect();
    assert!(operations.contains(&"GET /api/v1/workers"), "{records}");
    assert!(operations.contains(&"POST /api/v1/sandboxes"), "{records}");
    for record in refused {
        assert_eq!(record["actor"], format!("key:{id}"), "{record}");
        assert!(
            record["detail"].as_str().unwrap().contains("expired at"),
            "{record}"
        );
    }
    // an unknown key is refused without a record
    let stranger = as_key(&admin, "berth_000000000000_abc");
    assert_eq!(stranger.get("/workers").await.0, 401);
    let (_, after) = admin.get("/audit").await;
    assert!(!after.to_string().contains("000000000000"), "{after}");
    cp.stop().await;
}

#[tokio::test]
async fn a_revoked_key_is_refused_at_once_and_the_last_admin_key_stays() {
    let cp = TestControlPlane::start().await;
    let admin = Api::new(&cp);
    let (id, key) = mint(&admin, &["read"]).await;
    let user = as_key(&admin, &key);
    assert_eq!(user.get("/workers").await.0, 200, "cached now");
    let (status, revoked) = admin.delete(&format!("/keys/{id}")).await;
    assert_eq!(status, 200, "{revoked}");
    assert!(revoked["revoked_at"].is_string(), "{revoked}");
    let (status, body) = user.get("/workers").await;
    assert_eq!(status, 401, "refused at once on this control plane: {body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .starts_with(&format!("API key {id} was revoked at ")),
        "{body}"
    );
    let (status, again) = admin.delete(&format!("/keys/{id}")).await;
    assert_eq!((status, &again), (200, &revoked), "revoking twice");
    let (status, body) = admin.delete("/keys/nosuch").await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["code"], "NOT_FOUND");

    // the admin key is the only admin key: it stays
    let admin_id = cp.admin_key.split('_').nth(1).unwrap().to_owned();
    let (status, body) = admin.delete(&format!("/keys/{admin_id}")).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["code"], "CONFLICT");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("last usable admin key"),
        "{body}"
    );
    // with another admin key it may go (itself included), and the other one stays
    let (second_id, second) = mint(&admin, &["admin"]).await;
    let (status, _) = admin.delete(&format!("/keys/{admin_id}")).await;
    assert_eq!(status, 200, "an admin key may revoke itself");
    assert_eq!(admin.get("/keys").await.0, 401);
    let second = as_key(&admin, &second);
    assert_eq!(second.delete(&format!("/keys/{second_id}")).await.0, 409);
    assert_eq!(second.get("/keys").await.0, 200);
    cp.stop().await;
}

#[tokio::test]
async fn bad_requests_name_what_is_wrong() {
    let cp = TestControlPlane::start().await;
    let admin = Api::new(&cp);
    for (body, expected) in [
        (
            json!({"scopes": ["read", "root"]}),
            "unknown scope \"root\"; the known scopes are read, write, exec and admin",
        ),
        (json!({"scopes": []}), "at least one scope"),
        (json!({"name": "x"}), "scopes"),
        (
            json!({"scopes": ["read"], "expires": "soon"}),
            "invalid expiry \"soon\"",
        ),
        (json!({"scopes": ["read"], "expires": "0s"}), "at least 1s"),
    ] {
        let (status, answer) = admin.post("/keys", body.clone()).await;
        assert_eq!(status, 400, "{body} → {answer}");
        assert_eq!(answer["code"], "BAD_REQUEST");
        assert!(
            answer["message"].as_str().unwrap().contains(expected),
            "{body} → {answer}"
        );
    }
    let mut grpc = AdminClient::new(api_channel(&cp.api_url()).await);
    let refused = grpc
        .create_api_key(keyed(
            pb::CreateApiKeyRequest {
                scopes: vec!["root".into()],
                ..Default::default()
            },
            &cp.admin_key,
        ))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);
    assert!(refused.message().contains("known scopes"), "{refused:?}");
    cp.stop().await;
}

#[tokio::test]
async fn keys_are_managed_over_grpc() {
    let cp = TestControlPlane::start().await;
    let mut grpc = AdminClient::new(api_channel(&cp.api_url()).await);
    let created = grpc
        .create_api_key(keyed(
            pb::CreateApiKeyRequest {
                name: "grpc".into(),
                scopes: vec!["read".into(), "exec".into()],
                expires: "720h".into(),
                ..Default::default()
            },
            &cp.admin_key,
        ))
        .await
        .unwrap()
        .into_inner();
    let view = created.api_key.unwrap();
    assert_eq!(view.scopes, ["read", "exec"]);
    assert_eq!(view.expires_at, view.created_at + 720 * 3_600);
    assert!(created.key.starts_with(&format!("berth_{}_", view.id)));
    let listed = grpc
        .list_api_keys(keyed(pb::ListApiKeysRequest {}, &cp.admin_key))
        .await
        .unwrap()
        .into_inner();
    assert!(
        listed
            .keys
            .iter()
            .any(|k| k.id == view.id && k.name == "grpc")
    );
    let revoked = grpc
        .revoke_api_key(keyed(
            pb::RevokeApiKeyRequest {
                id: view.id.clone(),
            },
            &cp.admin_key,
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(revoked.revoked_at > 0);
    let refused = grpc
        .list_api_keys(keyed(pb::ListApiKeysRequest {}, &created.key))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unauthenticated);
    assert!(refused.message().contains("was revoked"), "{refused:?}");
    let admin_id = cp.admin_key.split('_').nth(1).unwrap().to_owned();
    let refused = grpc
        .revoke_api_key(keyed(
            pb::RevokeApiKeyRequest { id: admin_id },
            &cp.admin_key,
        ))
        .await
        .unwrap_err();
    assert_eq!(
        refused.code(),
        tonic::Code::FailedPrecondition,
        "{refused:?}"
    );
    let refused = grpc
        .revoke_api_key(keyed(
            pb::RevokeApiKeyRequest {
                id: "nosuch".into(),
            },
            &cp.admin_key,
        ))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::NotFound);

    let (_, records) = Api::new(&cp).get("/audit").await;
    let operations = records.to_string();
    assert!(
        operations.contains("grpc /berth.v1.Admin/CreateApiKey"),
        "{records}"
    );
    assert!(
        operations.contains("grpc /berth.v1.Admin/RevokeApiKey"),
        "{records}"
    );
    let secret = created.key.rsplit('_').next().unwrap();
    assert!(!operations.contains(secret));
    cp.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_key_revoked_through_one_replica_is_refused_by_the_other() {
    let Some(a) =
        TestControlPlane::start_on_postgres("a_key_revoked_through_one_replica", |_| {}).await
    else {
        return;
    };
    let b = a.start_replica(|_| {}).await;
    let (api_a, api_b) = (Api::new(&a), Api::new(&b));
    let (id, key) = mint(&api_a, &["read"]).await;
    let (user_a, user_b) = (as_key(&api_a, &key), as_key(&api_b, &key));
    assert_eq!(user_b.get("/workers").await.0, 200, "b caches the key");
    assert_eq!(api_a.delete(&format!("/keys/{id}")).await.0, 200);
    assert_eq!(user_a.get("/workers").await.0, 401, "at once on a");
    let body = eventually("replica b to refuse the revoked key", WAIT, || async {
        let (status, body) = user_b.get("/workers").await;
        (status == 401).then_some(body)
    })
    .await;
    assert!(
        body["message"].as_str().unwrap().contains("was revoked"),
        "{body}"
    );
    // what b lists is what a wrote
    let (_, view) = api_b.get(&format!("/keys/{id}")).await;
    assert!(view["revoked_at"].is_string(), "{view}");
    b.stop().await;
    a.stop().await;
}
