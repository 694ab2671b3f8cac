//! Who may talk on the mesh: only certificates of our CA, only as themselves, never in
//! plaintext; and a worker's service answers only the control plane.

use std::sync::Arc;
use std::time::Duration;

use berth_pki::transport::{DialOptions, mesh_channel};
use berth_pki::{CertificateAuthority, ReloadableIdentity, SpiffeId, generate_key_and_csr};
use berth_proto::v1 as pb;
use berth_proto::v1::worker_service_client::WorkerServiceClient;
use berth_testkit::{TestControlPlane, TestWorker, eventually};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::Code;

const WAIT: Duration = Duration::from_secs(10);

fn heartbeat(worker_id: &str) -> pb::HeartbeatRequest {
    pb::HeartbeatRequest {
        worker_id: worker_id.to_owned(),
        state: pb::WorkerState::Ready as i32,
        info: Some(pb::WorkerInfo {
            hostname: "h".into(),
            advertise_addr: "127.0.0.1:9".into(),
            providers: vec![],
            capacity: None,
            version: "t".into(),
        }),
        sandboxes: vec![],
        sent_at_ms: 0,
    }
}

async fn started_worker(cp: &TestControlPlane, dir: &std::path::Path, id: &str) -> TestWorker {
    let mut config = cp.worker_config(dir, Some(cp.join_token(None).await));
    config.id = Some(id.to_owned());
    TestWorker::start(config).await.expect("worker starts")
}

/// The status and its transport causes, where TLS alerts show up.
fn detail(status: &tonic::Status) -> String {
    format!("{status:?}")
}

fn stored(worker: &TestWorker) -> berth_worker::StoredIdentity {
    berth_worker::StoredIdentity::load(&worker.data_dir)
        .unwrap()
        .unwrap()
}

#[tokio::test]
async fn a_worker_certificate_cannot_heartbeat_as_another_worker() {
    let cp = TestControlPlane::start().await;
    let dir = tempfile::tempdir().unwrap();
    let a = started_worker(&cp, &dir.path().join("a"), "a").await;
    let b = started_worker(&cp, &dir.path().join("b"), "b").await;
    b.stop().await;
    let b_before = cp.fleet.get_worker("b").await.unwrap().last_heartbeat_ms;

    let identity = stored(&a);
    let mut as_a = cp.mesh_client_as(&identity.cert_pem, &identity.key_pem);
    let refused = as_a.heartbeat(heartbeat("b")).await.unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied);
    assert!(
        refused.message().contains("cannot act as worker \"b\""),
        "{refused:?}"
    );
    assert_eq!(
        cp.fleet.get_worker("b").await.unwrap().last_heartbeat_ms,
        b_before
    );
    // renewing someone else's certificate is refused the same way
    let csr = generate_key_and_csr("b").unwrap().csr_pem;
    let refused = as_a
        .renew_certificate(pb::RenewCertificateRequest {
            worker_id: "b".into(),
            csr_pem: csr,
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied);
    // as itself it is fine
    as_a.heartbeat(heartbeat("a")).await.expect("own heartbeat");
    a.stop().await;
    cp.stop().await;
}

#[tokio::test]
async fn calls_other_than_enroll_need_a_client_certificate() {
    let cp = TestControlPlane::start().await;
    let refused = cp
        .anonymous_mesh_client()
        .heartbeat(heartbeat("anyone"))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated);
    assert!(
        refused.message().contains("client certificate"),
        "{refused:?}"
    );
    cp.stop().await;
}

#[tokio::test]
async fn a_client_certificate_from_another_ca_is_refused_at_the_handshake() {
    let cp = TestControlPlane::start().await;
    let rogue_ca = CertificateAuthority::generate("berth.local").unwrap();
    let key = generate_key_and_csr("w1").unwrap();
    let cert = rogue_ca
        .sign_worker_csr(&key.csr_pem, "w1", Duration::from_secs(3600))
        .unwrap();
    let refused = cp
        .mesh_client_as(&cert.cert_pem, &key.key_pem)
        .heartbeat(heartbeat("w1"))
        .await
        .unwrap_err();
    // TLS 1.3: the server's refusal of the client certificate shows up on the first call
    assert!(detail(&refused).contains("UnknownCA"), "{refused:?}");
    assert!(cp.fleet.get_worker("w1").await.is_err(), "nothing recorded");
    cp.stop().await;
}

#[tokio::test]
async fn plaintext_connections_to_the_mesh_port_are_refused() {
    let cp = TestControlPlane::start().await;
    // a plaintext gRPC client
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", cp.mesh_addr))
        .unwrap()
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(2))
        .connect_lazy();
    let refused = berth_proto::v1::control_plane_client::ControlPlaneClient::new(channel)
        .enroll(pb::EnrollRequest::default())
        .await
        .unwrap_err();
    assert_ne!(refused.code(), Code::Ok);
    assert!(
        !refused.message().contains("join token"),
        "never reached the service: {refused:?}"
    );

    // plain HTTP/1.1 bytes get no HTTP answer
    let mut tcp = tokio::net::TcpStream::connect(cp.mesh_addr).await.unwrap();
    tcp.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut answer)).await;
    assert!(
        !answer.starts_with(b"HTTP/"),
        "got an HTTP answer: {answer:?}"
    );
    cp.stop().await;
}

#[tokio::test]
async fn a_worker_service_answers_only_the_control_plane() {
    let cp = TestControlPlane::start().await;
    let dir = tempfile::tempdir().unwrap();
    let a = started_worker(&cp, &dir.path().join("a"), "a").await;
    let b = started_worker(&cp, &dir.path().join("b"), "b").await;

    let status = cp
        .worker_client(&b)
        .status(pb::StatusRequest::default())
        .await
        .expect("the control plane may call the worker")
        .into_inner();
    assert_eq!(status.worker_id, "b");

    // worker a's certificate is from the same CA, but it is not the control plane
    let identity = stored(&a);
    let tls = berth_pki::mesh_client_config(
        &cp.ca_der(),
        SpiffeId::worker(cp.trust_domain(), "b"),
        Some(Arc::new(
            ReloadableIdentity::from_pem(&identity.cert_pem, &identity.key_pem).unwrap(),
        )),
    )
    .unwrap();
    let channel = mesh_channel(
        &b.listen_addr().to_string(),
        Arc::new(tls),
        DialOptions::default(),
    )
    .unwrap();
    let refused = WorkerServiceClient::new(channel)
        .status(pb::StatusRequest::default())
        .await
        .unwrap_err();
    assert!(
        detail(&refused).contains("CertificateUnknown"),
        "{refused:?}"
    );

    // the control plane refuses to talk to a worker that is not who it dialed for
    let tls = cp.fleet.authority().worker_client_config("a").unwrap();
    let channel = mesh_channel(
        &b.listen_addr().to_string(),
        Arc::new(tls),
        DialOptions::default(),
    )
    .unwrap();
    let refused = WorkerServiceClient::new(channel)
        .status(pb::StatusRequest::default())
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::Unavailable);
    assert!(
        detail(&refused).contains("expected spiffe://berth.local/worker/a"),
        "{refused:?}"
    );
    eventually("both still online", WAIT, || async {
        let workers = cp.fleet.list_workers().await.ok()?;
        workers
            .iter()
            .all(|w| w.status == berth_controlplane::fleet::WorkerStatus::Online)
            .then_some(())
    })
    .await;
    a.stop().await;
    b.stop().await;
    cp.stop().await;
}
