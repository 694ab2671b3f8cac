//! `berth workers revoke`: the worker's certificates are refused at once (new
//! handshakes and its open connections), its worker token no longer re-enrolls, our
//! channels to it are dropped and its sandboxes are marked lost.

use serde_json::json;

use berth_proto::v1 as pb;
use berth_testkit::TestFleet;

#[tokio::test]
async fn a_revoked_worker_is_refused_at_once_and_its_sandboxes_are_lost() {
    let mut fleet = TestFleet::builder().worker_ids(&["r1"]).start().await;
    let (cp, api) = (&fleet.cp, &fleet.api);
    let sandbox = api.create_sandbox(json!({})).await;
    let id = sandbox["id"].as_str().unwrap().to_owned();
    let stored = berth_worker::StoredIdentity::load(&fleet.worker_dir(0))
        .unwrap()
        .unwrap();
    // a mesh connection opened with the worker's certificate before the revocation
    let mut open = cp.mesh_client_as(&stored.cert_pem, &stored.key_pem);
    let heartbeat = || pb::HeartbeatRequest {
        worker_id: "r1".into(),
        info: Some(pb::WorkerInfo {
            hostname: "h".into(),
            advertise_addr: fleet.worker(0).listen_addr().to_string(),
            ..Default::default()
        }),
        ..Default::default()
    };
    open.heartbeat(heartbeat())
        .await
        .expect("accepted before the revocation");

    let (status, revoked) = api.post("/workers/r1/revoke", json!(null)).await;
    assert_eq!(status, 200, "{revoked}");
    assert_eq!(revoked["lost_sandboxes"], json!([id]));
    assert!(
        revoked["closed_connections"].as_u64().unwrap() >= 1,
        "{revoked}"
    );

    // the connection that was open is closed or refused; a new one fails the handshake
    assert!(
        open.heartbeat(heartbeat()).await.is_err(),
        "the open connection still works"
    );
    let refused = cp
        .mesh_client_as(&stored.cert_pem, &stored.key_pem)
        .heartbeat(heartbeat())
        .await
        .unwrap_err();
    assert!(
        format!("{refused:?}").contains("Revoked") || format!("{refused:?}").contains("revoked"),
        "{refused:?}"
    );

    let (_, view) = api.get("/workers/r1").await;
    assert_eq!(view["status"], "revoked");
    let (_, lost) = api.get(&format!("/sandboxes/{id}")).await;
    assert_eq!(lost["state"], "lost");
    let (status, body) = api
        .post(&format!("/sandboxes/{id}/exec"), json!({"command": "true"}))
        .await;
    assert_eq!(status, 409, "{body}");
    assert!(body["message"].as_str().unwrap().contains("lost"));
    let (status, _) = api.delete(&format!("/sandboxes/{id}")).await;
    assert_eq!(status, 200, "a lost sandbox can be cleared");
    let (status, body) = api.post("/sandboxes", json!({})).await;
    assert_eq!(status, 503, "a revoked worker takes no sandboxes: {body}");

    // the old credentials cannot come back: re-enrolling with the worker token fails
    fleet.stop_worker(0).await;
    let (cp, api) = (&fleet.cp, &fleet.api);
    let reenroll = cp
        .anonymous_mesh_client()
        .enroll(enrollment_of_r1(
            pb::enroll_request::Credential::WorkerToken(stored.worker_token.clone()),
        ))
        .await
        .unwrap_err();
    assert_eq!(reenroll.code(), tonic::Code::Unauthenticated);
    assert!(reenroll.message().contains("revoked"), "{reenroll:?}");
    // nor does a join token pinned to the id
    let pinned = cp.join_token(Some("r1")).await;
    let again = cp
        .anonymous_mesh_client()
        .enroll(enrollment_of_r1(pb::enroll_request::Credential::JoinToken(
            pinned,
        )))
        .await
        .unwrap_err();
    assert!(again.message().contains("revoked"), "{again:?}");

    let (status, body) = api.post("/workers/ghost/revoke", json!(null)).await;
    assert_eq!((status, body["code"].clone()), (404, json!("NOT_FOUND")));
    let (status, _) = api.post("/workers/r1/revoke", json!(null)).await;
    assert_eq!(status, 200, "revoking twice is harmless");
    fleet.stop().await;
}

#[tokio::test]
async fn revocation_survives_a_control_plane_restart() {
    let mut fleet = TestFleet::builder().worker_ids(&["r2"]).start().await;
    fleet.api.post("/workers/r2/revoke", json!(null)).await;
    fleet.stop_worker(0).await;
    let stored = berth_worker::StoredIdentity::load(&fleet.worker_dir(0))
        .unwrap()
        .unwrap();
    let again = fleet.restart_control_plane().await;
    let refused = again
        .cp
        .mesh_client_as(&stored.cert_pem, &stored.key_pem)
        .heartbeat(pb::HeartbeatRequest::default())
        .await
        .unwrap_err();
    assert!(
        format!("{refused:?}").to_lowercase().contains("revoked"),
        "{refused:?}"
    );
    again.stop().await;
}

#[tokio::test]
async fn cordon_blocks_new_work_only_and_survives_a_restart() {
    let fleet = TestFleet::builder().worker_ids(&["c1"]).start().await;
    let api = &fleet.api;
    let running = api.create_sandbox(json!({})).await;
    let id = running["id"].as_str().unwrap().to_owned();

    let (status, view) = api.post("/workers/c1/cordon", json!(null)).await;
    assert_eq!((status, view["cordoned"].clone()), (200, json!(true)));
    let (status, body) = api.post("/sandboxes", json!({})).await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("cordoned"),
        "{body}"
    );
    // what runs keeps running
    let (status, result) = api
        .post(
            &format!("/sandboxes/{id}/exec"),
            json!({"command": "echo still here"}),
        )
        .await;
    assert_eq!(
        (status, result["stdout"].clone()),
        (200, json!("still here\n"))
    );

    let (status, view) = api.post("/workers/c1/uncordon", json!(null)).await;
    assert_eq!((status, view["cordoned"].clone()), (200, json!(false)));
    api.create_sandbox(json!({})).await;

    // persisted: a restarted control plane still sees the cordon
    api.post("/workers/c1/cordon", json!(null)).await;
    let fleet = fleet.restart_control_plane().await;
    let api = &fleet.api;
    let (_, view) = api.get("/workers/c1").await;
    assert_eq!(view["cordoned"], true);
    let (status, _) = api.post("/workers/nobody/cordon", json!(null)).await;
    assert_eq!(status, 404);
    fleet.stop().await;
}

/// The enrollment `r1` would send with `credential`, on a fresh key.
fn enrollment_of_r1(credential: pb::enroll_request::Credential) -> pb::EnrollRequest {
    pb::EnrollRequest {
        credential: Some(credential),
        worker_id: "r1".into(),
        csr_pem: berth_pki::generate_key_and_csr("r1").unwrap().csr_pem,
        info: Some(pb::WorkerInfo {
            hostname: "h".into(),
            advertise_addr: "127.0.0.1:9".into(),
            ..Default::default()
        }),
    }
}
