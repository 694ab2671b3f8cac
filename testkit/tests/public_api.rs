//! The public API port: HTTP/JSON with StacyVM-style errors and scoped keys, and the
//! gRPC Admin service on the same listener.

use std::time::Duration;

use serde_json::{Value, json};

use berth_controlplane::api_keys::{Scope, create_api_key};
use berth_proto::v1 as pb;
use berth_proto::v1::admin_client::AdminClient;
use berth_testkit::{TestControlPlane, TestFleet, eventually};

const WAIT: Duration = Duration::from_secs(10);

async fn call(
    method: reqwest::Method,
    url: String,
    key: Option<&str>,
    body: Option<Value>,
) -> (reqwest::StatusCode, reqwest::header::HeaderMap, Value) {
    let mut request = reqwest::Client::new().request(method, url);
    if let Some(key) = key {
        request = request.header("X-API-Key", key);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let body = response.json().await.unwrap_or(Value::Null);
    (status, headers, body)
}

#[tokio::test]
async fn keys_are_required_and_scoped() {
    let cp = TestControlPlane::start().await;
    let workers = format!("{}/api/v1/workers", cp.api_url());
    let tokens = format!("{}/api/v1/tokens", cp.api_url());

    let (status, _, body) = call(reqwest::Method::GET, workers.clone(), None, None).await;
    assert_eq!(status, 401);
    assert_eq!(body["code"], "UNAUTHORIZED");
    assert!(body["message"].as_str().unwrap().contains("API key"));

    let (status, _, body) = call(
        reqwest::Method::GET,
        workers.clone(),
        Some("berth_nope_nope"),
        None,
    )
    .await;
    assert_eq!(status, 401);
    assert_eq!(body["code"], "UNAUTHORIZED");

    let read_only = create_api_key(cp.fleet.store(), "viewer", &[Scope::Read])
        .await
        .unwrap();
    let (status, _, body) = call(
        reqwest::Method::GET,
        workers.clone(),
        Some(&read_only),
        None,
    )
    .await;
    assert_eq!(status, 200);
    assert!(body.as_array().unwrap().is_empty());
    let (status, _, body) = call(
        reqwest::Method::POST,
        tokens.clone(),
        Some(&read_only),
        Some(json!({})),
    )
    .await;
    assert_eq!(status, 403);
    assert_eq!(body["code"], "FORBIDDEN");

    // Authorization: Bearer works as well as X-API-Key
    let response = reqwest::Client::new()
        .get(&workers)
        .bearer_auth(&cp.admin_key)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    cp.stop().await;
}

#[tokio::test]
async fn errors_are_json_with_codes_and_request_ids_are_echoed() {
    let cp = TestControlPlane::start().await;
    let response = reqwest::Client::new()
        .get(format!("{}/api/v1/workers/ghost", cp.api_url()))
        .header("X-API-Key", &cp.admin_key)
        .header("X-Request-ID", "req-123")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    assert_eq!(response.headers()["x-request-id"], "req-123");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["code"], "NOT_FOUND");
    assert!(body["message"].as_str().unwrap().contains("ghost"));
    assert_eq!(
        body["request_id"], "req-123",
        "error bodies carry the request id"
    );

    let (status, headers, body) = call(
        reqwest::Method::GET,
        format!("{}/api/v1/nothing-here", cp.api_url()),
        None,
        None,
    )
    .await;
    assert_eq!(status, 404);
    assert_eq!(body["code"], "NOT_FOUND");
    assert!(
        !headers["x-request-id"].is_empty(),
        "a request id is made when none is sent"
    );
    cp.stop().await;
}

#[tokio::test]
async fn join_tokens_are_created_with_validated_settings() {
    let cp = TestControlPlane::start().await;
    let tokens = format!("{}/api/v1/tokens", cp.api_url());
    let key = Some(cp.admin_key.as_str());
    for (body, words) in [
        (json!({"ttl": "forever"}), "invalid duration"),
        (json!({"ttl": "9999h"}), "ttl"),
        (json!({"uses": 0}), "uses"),
        (json!({"worker_id": "Bad Id!"}), "worker id"),
        (json!({"colour": "red"}), "unknown field"),
    ] {
        let (status, _, answer) = call(
            reqwest::Method::POST,
            tokens.clone(),
            key,
            Some(body.clone()),
        )
        .await;
        assert_eq!(status, 400, "{body}");
        assert_eq!(answer["code"], "BAD_REQUEST");
        assert!(
            answer["message"].as_str().unwrap().contains(words),
            "{body} -> {answer}"
        );
    }
    let (status, _, issued) = call(
        reqwest::Method::POST,
        tokens,
        key,
        Some(json!({"worker_id": "w9", "ttl": "10m", "uses": 2})),
    )
    .await;
    assert_eq!(status, 201);
    assert_eq!(issued["worker_id"], "w9");
    assert_eq!(issued["uses"], 2);
    assert_eq!(issued["ca_sha256"], cp.ca_fingerprint());
    let claims = berth_pki::peek_join_claims(issued["token"].as_str().unwrap()).unwrap();
    assert_eq!(claims.worker_id.as_deref(), Some("w9"));
    assert_eq!(claims.uses, 2);
    cp.stop().await;
}

#[tokio::test]
async fn ready_needs_an_online_worker() {
    let mut fleet = TestFleet::builder().workers(0).start().await;
    let cp = &fleet.cp;
    let ready = format!("{}/api/v1/ready", cp.api_url());
    let (status, _, body) = call(reqwest::Method::GET, ready.clone(), None, None).await;
    assert_eq!(status, 503);
    assert_eq!(body["code"], "UNAVAILABLE");
    let (status, _, body) = call(
        reqwest::Method::GET,
        format!("{}/api/v1/health", cp.api_url()),
        None,
        None,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(body["status"], "ok");

    fleet.add_worker(|_| {}).await;
    eventually("ready", WAIT, || async {
        let (status, _, _) = call(reqwest::Method::GET, ready.clone(), None, None).await;
        (status == 200).then_some(())
    })
    .await;
    fleet.stop().await;
}

#[tokio::test]
async fn the_admin_grpc_service_shares_the_api_port() {
    let fleet = TestFleet::builder().worker_ids(&["g1"]).start().await;
    let cp = &fleet.cp;

    let channel = tonic::transport::Endpoint::from_shared(cp.api_url())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut admin = AdminClient::new(channel);
    let refused = admin
        .list_workers(pb::ListWorkersRequest {})
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unauthenticated);

    let mut request = tonic::Request::new(pb::GetWorkerRequest { id: "g1".into() });
    request
        .metadata_mut()
        .insert("x-api-key", cp.admin_key.parse().unwrap());
    let found = admin.get_worker(request).await.unwrap().into_inner();
    assert_eq!(found.spiffe_id, "spiffe://berth.local/worker/g1");

    let mut request = tonic::Request::new(pb::GetWorkerRequest { id: "ghost".into() });
    request
        .metadata_mut()
        .insert("x-api-key", cp.admin_key.parse().unwrap());
    let missing = admin.get_worker(request).await.unwrap_err();
    assert_eq!(missing.code(), tonic::Code::NotFound);
    assert_eq!(
        missing.metadata().get("berth-error-code").unwrap(),
        "NOT_FOUND"
    );

    let mut request = tonic::Request::new(pb::CreateJoinTokenRequest {
        worker_id: String::new(),
        ttl: "5m".into(),
        uses: 1,
        ..Default::default()
    });
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {}", cp.admin_key).parse().unwrap(),
    );
    let token = admin.create_join_token(request).await.unwrap().into_inner();
    assert_eq!(token.ca_sha256, cp.ca_fingerprint());
    fleet.stop().await;
}

/// Every test above again, on a Postgres store: this test binary re-runs itself with
/// `BERTH_TEST_DATABASE=postgres` (skipped, visibly, when Postgres is not installed).
#[test]
fn on_postgres() {
    berth_testkit::rerun_on_postgres("on_postgres");
}
