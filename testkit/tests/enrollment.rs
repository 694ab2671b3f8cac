//! Workers enroll with join tokens over the real mesh, heartbeat, keep their identity
//! across restarts, renew their certificates and re-enroll after a lapsed one.

use std::time::Duration;

use berth_controlplane::fleet::WorkerStatus;
use berth_testkit::{TestControlPlane, TestFleet, TestWorker, eventually};

const WAIT: Duration = Duration::from_secs(10);

async fn online(cp: &TestControlPlane, id: &str) -> Option<berth_controlplane::fleet::WorkerView> {
    let view = cp.fleet.get_worker(id).await.ok()?;
    (view.status == WorkerStatus::Online).then_some(view)
}

#[tokio::test]
async fn two_workers_enroll_heartbeat_and_are_listed_online_with_their_spiffe_ids() {
    let cp = TestControlPlane::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut workers = Vec::new();
    for name in ["alpha", "beta"] {
        let mut config = cp.worker_config(&dir.path().join(name), Some(cp.join_token(None).await));
        config.id = Some(name.to_owned());
        workers.push(TestWorker::start(config).await.expect("worker starts"));
    }
    for worker in &workers {
        let view = eventually("worker online", WAIT, || online(&cp, &worker.worker_id)).await;
        assert_eq!(
            view.spiffe_id,
            format!("spiffe://berth.local/worker/{}", worker.worker_id)
        );
        assert_eq!(view.advertise_addr, worker.listen_addr().to_string());
        assert_eq!(view.providers, vec!["mock".to_owned()]);
        assert!(view.last_heartbeat_ms.is_some());
    }

    // the operator sees the same through the public API
    let listed: serde_json::Value = reqwest::Client::new()
        .get(format!("{}/api/v1/workers", cp.api_url()))
        .header("X-API-Key", &cp.admin_key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let listed = listed.as_array().unwrap();
    assert_eq!(listed.len(), 2);
    for worker in listed {
        assert_eq!(worker["status"], "online");
        let id = worker["id"].as_str().unwrap();
        assert_eq!(
            worker["spiffe_id"],
            format!("spiffe://berth.local/worker/{id}")
        );
    }
    for worker in workers {
        worker.stop().await;
    }
    cp.stop().await;
}

#[tokio::test]
async fn a_restarted_worker_keeps_its_identity_without_a_new_token() {
    let mut fleet = TestFleet::start().await;
    let id = fleet.worker(0).worker_id.clone();
    let before = eventually("online", WAIT, || online(&fleet.cp, &id)).await;
    fleet.stop_worker(0).await;

    // no token this time: the stored identity is reused, nothing is re-issued
    fleet.restart_worker(0).await;
    assert_eq!(fleet.worker(0).worker_id, id);
    let after = eventually("online again", WAIT, || async {
        let view = online(&fleet.cp, &id).await?;
        (view.last_heartbeat_ms > before.last_heartbeat_ms).then_some(view)
    })
    .await;
    assert_eq!(after.certificate.serial, before.certificate.serial);
    assert_eq!(after.spiffe_id, before.spiffe_id);
    fleet.stop().await;
}

#[tokio::test]
async fn a_worker_without_identity_or_token_refuses_to_start() {
    let cp = TestControlPlane::start().await;
    let dir = tempfile::tempdir().unwrap();
    let err = TestWorker::start(cp.worker_config(dir.path(), None))
        .await
        .err()
        .expect("no credential");
    assert!(err.to_string().contains("no join token"), "{err}");
    cp.stop().await;
}

#[tokio::test]
async fn certificates_are_renewed_before_they_expire() {
    let fleet = TestFleet::builder()
        .control_plane(|config| config.certificates.worker_ttl = Duration::from_secs(6))
        .start()
        .await;
    let (cp, worker) = (&fleet.cp, fleet.worker(0));
    let first = eventually("online", WAIT, || online(cp, &worker.worker_id)).await;
    eventually("renewed certificate", WAIT, || async {
        let view = online(cp, &worker.worker_id).await?;
        (view.certificate.serial != first.certificate.serial).then_some(view)
    })
    .await;
    // the renewed certificate (with its new key) is what the worker keeps on disk
    eventually("stored certificate is the current one", WAIT, || async {
        let stored = berth_worker::StoredIdentity::load(&worker.data_dir).ok()??;
        let on_disk = berth_pki::cert_info(&rustls_pem_to_der(&stored.cert_pem)).ok()?;
        let view = cp.fleet.get_worker(&worker.worker_id).await.ok()?;
        (on_disk.serial_hex == view.certificate.serial
            && on_disk.serial_hex != first.certificate.serial)
            .then_some(())
    })
    .await;
    // and the worker keeps heartbeating past the first certificate's expiry
    let expiry_ms = first.certificate.expires_at_unix * 1000;
    eventually(
        "heartbeat after the first certificate expired",
        WAIT,
        || async {
            let view = online(cp, &worker.worker_id).await?;
            (view.last_heartbeat_ms? > expiry_ms + 500).then_some(())
        },
    )
    .await;
    fleet.stop().await;
}

#[tokio::test]
async fn a_worker_whose_certificate_lapsed_offline_reenrolls_with_its_worker_token() {
    let mut fleet = TestFleet::builder()
        .control_plane(|config| config.certificates.worker_ttl = Duration::from_secs(5))
        .start()
        .await;
    let id = fleet.worker(0).worker_id.clone();
    let first = eventually("online", WAIT, || online(&fleet.cp, &id)).await;
    fleet.stop_worker(0).await;
    // offline until the certificate has lapsed (plus the expiry margin of a minute
    // makes any 5s certificate count as lapsed at once); back without a join token,
    // it re-enrolls with the worker token
    fleet.restart_worker(0).await;
    assert_eq!(fleet.worker(0).worker_id, id);
    let view = eventually("online after re-enrollment", WAIT, || async {
        let view = online(&fleet.cp, &id).await?;
        (view.certificate.serial != first.certificate.serial).then_some(view)
    })
    .await;
    assert_eq!(view.spiffe_id, first.spiffe_id);
    fleet.stop().await;
}

fn rustls_pem_to_der(pem: &str) -> Vec<u8> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    CertificateDer::from_pem_slice(pem.as_bytes())
        .unwrap()
        .to_vec()
}

#[tokio::test]
async fn a_stream_keeps_running_while_the_certificate_is_renewed() {
    use futures::StreamExt;
    let fleet = TestFleet::builder()
        .control_plane(|config| config.certificates.worker_ttl = Duration::from_secs(6))
        .start()
        .await;
    let (cp, worker, api) = (&fleet.cp, fleet.worker(0), &fleet.api);
    let first = eventually("online", WAIT, || online(cp, &worker.worker_id)).await;
    let sandbox = api.create_sandbox(serde_json::json!({})).await;
    let id = sandbox["id"].as_str().unwrap();
    // 16 lines, 500ms apart: the stream outlives the first certificate (6s)
    let response = api
        .request(reqwest::Method::POST, &format!("/sandboxes/{id}/exec"))
        .json(&serde_json::json!({
            "command": "generate --lines 16 --delay-ms 500",
            "stream": true,
            "timeout": "60s",
        }))
        .send()
        .await
        .unwrap();
    let mut body = response.bytes_stream();
    let mut text = String::new();
    while let Some(chunk) = body.next().await {
        text.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
    }
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    let last = lines.last().unwrap();
    assert_eq!(last["stream"], "exit", "{text}");
    assert_eq!(last["exit_code"], 0);
    assert_eq!(lines.iter().filter(|l| l["stream"] == "stdout").count(), 16);
    let now = cp.fleet.get_worker(&worker.worker_id).await.unwrap();
    assert_ne!(
        now.certificate.serial, first.certificate.serial,
        "the certificate was renewed during the stream"
    );
    fleet.stop().await;
}

#[tokio::test]
async fn rotating_the_control_plane_certificate_does_not_disconnect_the_fleet() {
    let fleet = TestFleet::start().await;
    let (cp, worker) = (&fleet.cp, fleet.worker(0));
    let before = eventually("online", WAIT, || online(cp, &worker.worker_id)).await;
    let old_serving = cp.fleet.authority().serving_certificate_der();
    cp.fleet
        .authority()
        .rotate_serving_certificate()
        .expect("rotation");
    assert_ne!(cp.fleet.authority().serving_certificate_der(), old_serving);
    // heartbeats carry on over the open connection...
    let after = eventually("heartbeats after the rotation", WAIT, || async {
        let view = online(cp, &worker.worker_id).await?;
        (view.last_heartbeat_ms > before.last_heartbeat_ms).then_some(view)
    })
    .await;
    assert_eq!(after.certificate.serial, before.certificate.serial);
    // ...and a new connection verifies the new certificate against the same CA
    let stored = berth_worker::StoredIdentity::load(&worker.data_dir)
        .unwrap()
        .unwrap();
    let mut fresh = cp.mesh_client_as(&stored.cert_pem, &stored.key_pem);
    fresh
        .heartbeat(berth_proto::v1::HeartbeatRequest {
            worker_id: worker.worker_id.clone(),
            info: Some(berth_proto::v1::WorkerInfo {
                hostname: "h".into(),
                advertise_addr: worker.listen_addr().to_string(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .expect("a new handshake with the rotated certificate");
    fleet.stop().await;
}
