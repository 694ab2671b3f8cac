//! What an operator meets at the API edge: refusals that say what to do (an unknown
//! provider, 405 and unknown gRPC services answered in the caller's protocol, a whole
//! exec too large for default gRPC clients), the providers' live test, removing a retired worker, pruning by
//! state, and the gRPC health service following the fleet.

use std::time::Duration;

use futures::StreamExt;
use serde_json::{Value, json};
use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use berth_controlplane::api_keys::{Scope, create_api_key};
use berth_proto::v1 as pb;
use berth_proto::v1::sandboxes_client::SandboxesClient;
use berth_testkit::{TestControlPlane, TestFleet, api_channel, eventually, id_of, keyed};

const WAIT: Duration = Duration::from_secs(15);

#[tokio::test]
async fn an_unknown_provider_is_a_bad_request_naming_the_known_ones() {
    let fleet = TestFleet::start().await;
    let (status, body) = fleet
        .api
        .post("/sandboxes", json!({"provider": "dokcer"}))
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["code"], "BAD_REQUEST");
    assert_eq!(
        body["message"],
        "unknown provider \"dokcer\"; known providers: docker, mock"
    );
    // a provider Berth ships but no worker offers stays "unavailable"
    let (status, body) = fleet
        .api
        .post("/sandboxes", json!({"provider": "docker"}))
        .await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["code"], "UNAVAILABLE");

    let mut sandboxes = SandboxesClient::new(api_channel(&fleet.cp.api_url()).await);
    let create = pb::CreateSandboxRequest {
        provider: "dokcer".into(),
        ..Default::default()
    };
    let refused = sandboxes
        .create(keyed(create, &fleet.cp.admin_key))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);
    assert_eq!(
        refused.message(),
        "unknown provider \"dokcer\"; known providers: docker, mock"
    );
    fleet.stop().await;
}

#[tokio::test]
async fn unknown_grpc_services_are_unimplemented_and_405_is_json() {
    let cp = TestControlPlane::start().await;
    let mut grpc = tonic::client::Grpc::new(api_channel(&cp.api_url()).await);
    grpc.ready().await.unwrap();
    let codec = tonic_prost::ProstCodec::<(), ()>::default();
    let refused = grpc
        .unary(
            tonic::Request::new(()),
            tonic::codegen::http::uri::PathAndQuery::from_static("/no.such.Service/Method"),
            codec,
        )
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unimplemented, "{refused:?}");
    // an unknown method of a known service too
    grpc.ready().await.unwrap();
    let refused = grpc
        .unary(
            tonic::Request::new(()),
            tonic::codegen::http::uri::PathAndQuery::from_static("/berth.v1.Sandboxes/NoSuchCall"),
            tonic_prost::ProstCodec::<(), ()>::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unimplemented, "{refused:?}");

    let response = reqwest::Client::new()
        .put(format!("{}/api/v1/sandboxes", cp.api_url()))
        .header("X-API-Key", &cp.admin_key)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 405);
    let allow = response.headers()["allow"].to_str().unwrap().to_owned();
    for method in ["GET", "POST", "DELETE"] {
        assert!(allow.contains(method), "Allow: {allow}");
    }
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["code"], "METHOD_NOT_ALLOWED");
    assert!(body["message"].as_str().unwrap().contains("PUT"), "{body}");
    cp.stop().await;
}

#[tokio::test]
async fn a_whole_grpc_exec_too_large_for_default_clients_points_at_exec_stream() {
    let fleet = TestFleet::start().await;
    let sandbox = fleet.api.create_sandbox(json!({})).await;
    let id = id_of(&sandbox);
    let mut sandboxes = SandboxesClient::new(api_channel(&fleet.cp.api_url()).await);
    let exec = |command: &str| pb::ExecRequest {
        sandbox_id: id.clone(),
        command: command.to_owned(),
        ..Default::default()
    };
    let small = sandboxes
        .exec(keyed(exec("generate --bytes 1000000"), &fleet.cp.admin_key))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(small.stdout.len(), 1_000_000);
    let refused = sandboxes
        .exec(keyed(exec("generate --bytes 5000000"), &fleet.cp.admin_key))
        .await
        .unwrap_err();
    assert_eq!(
        refused.code(),
        tonic::Code::ResourceExhausted,
        "{refused:?}"
    );
    assert!(refused.message().contains("ExecStream"), "{refused:?}");
    // the stream carries the same output
    let mut events = sandboxes
        .exec_stream(keyed(exec("generate --bytes 5000000"), &fleet.cp.admin_key))
        .await
        .unwrap()
        .into_inner();
    let mut bytes = 0;
    while let Some(event) = events.next().await {
        if let Some(pb::exec_event::Event::Stdout(data)) = event.unwrap().event {
            bytes += data.len();
        }
    }
    assert_eq!(bytes, 5_000_000);
    fleet.stop().await;
}

#[tokio::test]
async fn providers_are_tested_live_and_found_by_name() {
    let fleet = TestFleet::builder().workers(2).start().await;
    let (status, tested) = fleet.api.post("/providers/test", json!({})).await;
    assert_eq!(status, 200, "{tested}");
    assert_eq!(tested, json!({"mock": true}));

    let (status, mock) = fleet.api.get("/providers/mock").await;
    assert_eq!(status, 200, "{mock}");
    assert_eq!(
        mock,
        json!({"name": "mock", "healthy": true, "workers": 2, "healthy_workers": 2})
    );
    let (status, body) = fleet.api.get("/providers/docker").await;
    assert_eq!((status, body["code"].clone()), (404, json!("NOT_FOUND")));

    // the test needs a key (it calls every worker); a read key will do
    let response = reqwest::Client::new()
        .post(format!("{}/providers/test", fleet.api.base))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    let reader = create_api_key(fleet.cp.fleet.store(), "viewer", &[Scope::Read])
        .await
        .unwrap();
    let response = reqwest::Client::new()
        .post(format!("{}/providers/test", fleet.api.base))
        .header("X-API-Key", reader)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    fleet.stop().await;
}

#[tokio::test]
async fn a_provider_test_asks_the_workers_not_their_last_heartbeat() {
    // heartbeats so rare that the stopped worker still counts as online
    let mut fleet = TestFleet::builder()
        .heartbeat_interval(Duration::from_secs(30))
        .start()
        .await;
    fleet.stop_worker(0).await;
    let (_, providers) = fleet.api.get("/providers").await;
    assert_eq!(providers[0]["healthy"], true, "{providers}");
    let (status, tested) = fleet.api.post("/providers/test", json!({})).await;
    assert_eq!(status, 200, "{tested}");
    assert_eq!(tested, json!({"mock": false}));
    fleet.stop().await;
}

#[tokio::test]
async fn a_retired_worker_is_removed_and_its_credentials_refused() {
    let mut fleet = TestFleet::builder().worker_ids(&["r1", "r2"]).start().await;
    let sandbox = fleet.api.create_sandbox(json!({})).await;
    let id = id_of(&sandbox);
    let holder = sandbox["worker_id"].as_str().unwrap().to_owned();
    let (index, other) = if holder == "r1" { (0, "r2") } else { (1, "r1") };
    let stored = berth_worker::StoredIdentity::load(&fleet.worker_dir(index))
        .unwrap()
        .unwrap();

    let (status, body) = fleet.api.delete(&format!("/workers/{holder}")).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["code"], "CONFLICT");
    assert_eq!(
        body["message"],
        format!(
            "worker {holder} holds 1 sandboxes; pass force=true (berth workers rm --force) to mark them lost and remove it"
        )
    );
    let (status, body) = fleet.api.delete("/workers/nobody").await;
    assert_eq!((status, body["code"].clone()), (404, json!("NOT_FOUND")));
    let (status, body) = fleet
        .api
        .delete(&format!("/workers/{holder}?force=maybe"))
        .await;
    assert_eq!((status, body["code"].clone()), (400, json!("BAD_REQUEST")));

    // one holding nothing goes without force
    let (status, body) = fleet.api.delete(&format!("/workers/{other}")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, json!({"removed": other, "lost_sandboxes": []}));

    let (status, body) = fleet
        .api
        .delete(&format!("/workers/{holder}?force=true"))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, json!({"removed": holder, "lost_sandboxes": [id]}));
    let (status, _) = fleet.api.get(&format!("/workers/{holder}")).await;
    assert_eq!(status, 404);
    let (_, sandbox) = fleet.api.get(&format!("/sandboxes/{id}")).await;
    assert_eq!(sandbox["state"], "lost");
    let (status, _) = fleet.api.delete(&format!("/sandboxes/{id}")).await;
    assert_eq!(status, 200, "its lost sandbox can be cleared");

    // its certificate is refused on the mesh, after a restart too, and its worker
    // token names no worker any more
    fleet.stop_worker(0).await;
    fleet.stop_worker(1).await;
    let heartbeat = || pb::HeartbeatRequest {
        worker_id: holder.clone(),
        ..Default::default()
    };
    let refused = fleet
        .cp
        .mesh_client_as(&stored.cert_pem, &stored.key_pem)
        .heartbeat(heartbeat())
        .await
        .unwrap_err();
    assert!(
        format!("{refused:?}").to_lowercase().contains("revoked"),
        "{refused:?}"
    );
    let fleet = fleet.restart_control_plane().await;
    let refused = fleet
        .cp
        .mesh_client_as(&stored.cert_pem, &stored.key_pem)
        .heartbeat(heartbeat())
        .await
        .unwrap_err();
    assert!(
        format!("{refused:?}").to_lowercase().contains("revoked"),
        "{refused:?}"
    );
    let reenroll = fleet
        .cp
        .anonymous_mesh_client()
        .enroll(pb::EnrollRequest {
            credential: Some(pb::enroll_request::Credential::WorkerToken(
                stored.worker_token.clone(),
            )),
            worker_id: holder.clone(),
            csr_pem: berth_pki::generate_key_and_csr(&holder).unwrap().csr_pem,
            info: Some(pb::WorkerInfo {
                hostname: "h".into(),
                advertise_addr: "127.0.0.1:9".into(),
                ..Default::default()
            }),
        })
        .await
        .unwrap_err();
    assert_ne!(reenroll.code(), tonic::Code::Ok);
    assert!(
        reenroll.message().contains("not enrolled") || reenroll.message().contains("not found"),
        "{reenroll:?}"
    );
    let (status, _) = fleet.api.get(&format!("/workers/{holder}")).await;
    assert_eq!(status, 404);

    // every removal asked for is in the audit log, refused ones too
    eventually("the removals audited", WAIT, || async {
        let (_, audit) = fleet.api.get("/audit").await;
        let removals = audit
            .as_array()?
            .iter()
            .filter(|e| e["operation"] == "DELETE /api/v1/workers/{id}")
            .count();
        (removals == 5).then_some(())
    })
    .await;
    fleet.stop().await;
}

#[tokio::test]
async fn prune_takes_the_states_it_is_given() {
    let fleet = TestFleet::builder().worker_ids(&["p1"]).start().await;
    let lost = id_of(&fleet.api.create_sandbox(json!({})).await);
    let lost_too = id_of(&fleet.api.create_sandbox(json!({})).await);
    // the worker is revoked: its sandboxes become lost
    let (status, _) = fleet.api.post("/workers/p1/revoke", json!({})).await;
    assert_eq!(status, 200);
    let (_, sandbox) = fleet.api.get(&format!("/sandboxes/{lost}")).await;
    assert_eq!(sandbox["state"], "lost");

    let (status, body) = fleet.api.delete("/sandboxes?state=running").await;
    assert_eq!((status, body["code"].clone()), (400, json!("BAD_REQUEST")));

    // expired only: nothing has expired
    let (status, body) = fleet.api.delete("/sandboxes?state=expired").await;
    assert_eq!((status, body), (200, json!({"pruned": 0})));
    let (_, sandbox) = fleet.api.get(&format!("/sandboxes/{lost}")).await;
    assert_eq!(sandbox["state"], "lost");

    let (status, body) = fleet.api.delete("/sandboxes?state=error,lost").await;
    assert_eq!((status, body), (200, json!({"pruned": 2})));
    for id in [&lost, &lost_too] {
        let (status, _) = fleet.api.get(&format!("/sandboxes/{id}")).await;
        assert_eq!(status, 404);
    }
    fleet.stop().await;
}

#[tokio::test]
async fn prune_by_default_takes_lost_and_error_too() {
    let fleet = TestFleet::builder().worker_ids(&["p1"]).start().await;
    let lost = id_of(&fleet.api.create_sandbox(json!({})).await);
    fleet.api.post("/workers/p1/revoke", json!({})).await;
    let (status, body) = fleet.api.delete("/sandboxes").await;
    assert_eq!((status, body), (200, json!({"pruned": 1})));
    let (status, _) = fleet.api.get(&format!("/sandboxes/{lost}")).await;
    assert_eq!(status, 404);
    fleet.stop().await;
}

async fn health_of(client: &mut HealthClient<Channel>, service: &str) -> ServingStatus {
    let answer = client
        .check(HealthCheckRequest {
            service: service.to_owned(),
        })
        .await
        .unwrap()
        .into_inner();
    ServingStatus::try_from(answer.status).unwrap()
}

#[tokio::test]
async fn grpc_health_follows_the_fleet_without_a_key() {
    let mut fleet = TestFleet::builder()
        .heartbeat_interval(Duration::from_millis(200))
        .missed_heartbeats(3)
        .workers(0)
        .start()
        .await;
    let mut health = HealthClient::new(api_channel(&fleet.cp.api_url()).await);
    for service in ["", "berth.v1.Sandboxes", "berth.v1.Admin"] {
        assert_eq!(
            health_of(&mut health, service).await,
            ServingStatus::NotServing
        );
    }
    let mut watch = health
        .watch(HealthCheckRequest {
            service: "berth.v1.Sandboxes".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let first = watch.next().await.unwrap().unwrap();
    assert_eq!(first.status, ServingStatus::NotServing as i32);

    fleet.add_worker(|_| {}).await;
    let next = tokio::time::timeout(WAIT, watch.next())
        .await
        .expect("SERVING within the wait")
        .unwrap()
        .unwrap();
    assert_eq!(next.status, ServingStatus::Serving as i32);
    assert_eq!(health_of(&mut health, "").await, ServingStatus::Serving);

    // and back when the worker goes
    fleet.stop_worker(0).await;
    let next = tokio::time::timeout(WAIT, watch.next())
        .await
        .expect("NOT_SERVING within the wait")
        .unwrap()
        .unwrap();
    assert_eq!(next.status, ServingStatus::NotServing as i32);
    eventually("/ready to agree", WAIT, || async {
        (fleet.api.get("/ready").await.0 == 503).then_some(())
    })
    .await;
    let unknown = health
        .check(HealthCheckRequest {
            service: "no.such.Service".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), tonic::Code::NotFound);
    fleet.stop().await;
}
