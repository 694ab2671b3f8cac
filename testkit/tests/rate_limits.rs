//! Per-key rate limits (`api.key_rate_limit`, `api.key_rate_burst`) through the real
//! API: a key past its burst is answered 429 with `Retry-After` over HTTP and
//! `RESOURCE_EXHAUSTED` with `retry-after` metadata over gRPC, while another key is
//! still served and the routes that need no key are never limited; after waiting what
//! it was told, the key is served again.

use std::time::Duration;

use serde_json::{Value, json};

use berth_proto::v1 as pb;
use berth_proto::v1::sandboxes_client::SandboxesClient;
use berth_testkit::{Api, TestControlPlane, api_channel, keyed};

/// Calls a key may make at once; the rate is 1 a second, so within one test step (a
/// few milliseconds of calls) a key gets at most this many and one or two more.
const BURST: u32 = 5;

/// How many calls may pass before the first refusal: the burst, plus what refills
/// while a slow machine makes them.
const PASSED_AT_MOST: usize = BURST as usize + 3;

fn as_key(api: &Api, key: &str) -> Api {
    Api {
        key: key.to_owned(),
        ..api.clone()
    }
}

/// Creates a read key through the API and returns (its id, the key).
async fn mint(admin: &Api, name: &str) -> (String, String) {
    let (status, body) = admin
        .post("/keys", json!({"name": name, "scopes": ["read"]}))
        .await;
    assert_eq!(status, 201, "{body}");
    (
        body["id"].as_str().unwrap().to_owned(),
        body["key"].as_str().unwrap().to_owned(),
    )
}

/// Lists sandboxes over HTTP with `api`'s key until refused; returns the refusal's
/// Retry-After and body after checking that at least the burst was served first.
async fn spend_http(api: &Api) -> (u64, Value) {
    for call in 0..=PASSED_AT_MOST {
        let response = api
            .request(reqwest::Method::GET, "/sandboxes")
            .send()
            .await
            .expect("request sent");
        if response.status() == 200 {
            continue;
        }
        assert_eq!(response.status(), 429, "call {call}");
        assert!(
            call >= BURST as usize,
            "refused at call {call}, within the burst"
        );
        let retry_after = response.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse::<u64>()
            .expect("Retry-After is whole seconds");
        return (retry_after, response.json().await.unwrap());
    }
    panic!(
        "{} calls were served, past a burst of {BURST}",
        PASSED_AT_MOST + 1
    );
}

/// Lists sandboxes over gRPC with `key` until refused; returns the refusal.
async fn spend_grpc(
    client: &mut SandboxesClient<tonic::transport::Channel>,
    key: &str,
) -> tonic::Status {
    for _ in 0..=PASSED_AT_MOST {
        match client
            .list(keyed(pb::ListSandboxesRequest::default(), key))
            .await
        {
            Ok(_) => continue,
            Err(status) => return status,
        }
    }
    panic!(
        "{} gRPC calls were served, past a burst of {BURST}",
        PASSED_AT_MOST + 1
    );
}

fn expected_message(key_id: &str) -> String {
    format!("API key {key_id} is over its rate limit of 1 requests/s; retry in ")
}

#[tokio::test]
async fn a_key_past_its_burst_waits_while_another_key_is_served() {
    let cp = TestControlPlane::start_with(|config| {
        config.api.key_rate_limit = 1;
        config.api.key_rate_burst = BURST;
    })
    .await;
    let admin = Api::new(&cp);
    let (busy_id, busy_key) = mint(&admin, "busy").await;
    let (_, calm_key) = mint(&admin, "calm").await;
    let busy = as_key(&admin, &busy_key);
    let calm = as_key(&admin, &calm_key);
    let mut grpc = SandboxesClient::new(api_channel(&cp.api_url()).await);

    // HTTP: 429 RESOURCE_LIMIT naming the key, with Retry-After
    let (retry_after, body) = spend_http(&busy).await;
    assert_eq!(body["code"], "RESOURCE_LIMIT", "{body}");
    let message = body["message"].as_str().unwrap();
    assert!(
        message.starts_with(&expected_message(&busy_id)),
        "{message}"
    );
    assert_eq!(retry_after, 1, "one token a second: retry in 1 s");
    assert!(
        message.ends_with(&format!("retry in {retry_after} s")),
        "{message}"
    );

    // another key has a bucket of its own, over HTTP and gRPC
    let (status, listed) = calm.get("/sandboxes").await;
    assert_eq!(status, 200, "{listed}");
    grpc.list(keyed(pb::ListSandboxesRequest::default(), &calm_key))
        .await
        .expect("the calm key is served over gRPC");

    // routes that need no key are never limited, whatever key comes along
    for path in ["/health", "/live", "/openapi.json"] {
        for _ in 0..BURST * 2 {
            let (status, _) = busy.get(path).await;
            assert_eq!(status, 200, "{path}");
        }
    }

    // gRPC: RESOURCE_EXHAUSTED with the same message and retry-after metadata
    let refused = spend_grpc(&mut grpc, &busy_key).await;
    assert_eq!(
        refused.code(),
        tonic::Code::ResourceExhausted,
        "{refused:?}"
    );
    assert!(
        refused.message().starts_with(&expected_message(&busy_id)),
        "{refused:?}"
    );
    let grpc_retry_after: u64 = refused
        .metadata()
        .get("retry-after")
        .expect("retry-after metadata")
        .to_str()
        .unwrap()
        .parse()
        .expect("retry-after is whole seconds");
    assert!(grpc_retry_after >= 1, "{refused:?}");
    assert_eq!(
        refused.metadata().get("berth-error-code").unwrap(),
        "RESOURCE_LIMIT"
    );

    // waiting what it was told, the key is served again
    tokio::time::sleep(Duration::from_secs(grpc_retry_after)).await;
    let (status, listed) = busy.get("/sandboxes").await;
    assert_eq!(status, 200, "after Retry-After: {listed}");
    cp.stop().await;
}

#[tokio::test]
async fn no_limit_is_kept_unless_configured() {
    let cp = TestControlPlane::start().await;
    let admin = Api::new(&cp);
    for call in 0..200 {
        let (status, body) = admin.get("/sandboxes").await;
        assert_eq!(status, 200, "call {call}: {body}");
    }
    cp.stop().await;
}
