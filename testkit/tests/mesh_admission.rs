//! Who may spend the mesh's budgets: a flood of anonymous callers from one address
//! (junk join tokens, heartbeats without a certificate) neither keeps a real worker
//! from enrolling nor from heartbeating. The flooders dial from 127.0.0.2, the real
//! worker from 127.0.0.1, both loopback.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use berth_controlplane::fleet::WorkerStatus;
use berth_pki::transport::{DialOptions, mesh_channel};
use berth_proto::v1 as pb;
use berth_proto::v1::control_plane_client::ControlPlaneClient;
use berth_testkit::{TestControlPlane, TestWorker, eventually, sample};
use tokio::task::JoinSet;

const WAIT: Duration = Duration::from_secs(30);
const FLOODERS: usize = 64;

fn noisy_source() -> IpAddr {
    "127.0.0.2".parse().unwrap()
}

/// A mesh client without a certificate, dialing from the noisy address.
fn anonymous_from_noisy_source(
    cp: &TestControlPlane,
) -> ControlPlaneClient<tonic::transport::Channel> {
    let (tls, _) = berth_pki::bootstrap_client_config(&cp.ca_fingerprint()).unwrap();
    let options = DialOptions {
        local_ip: Some(noisy_source()),
        ..DialOptions::default()
    };
    ControlPlaneClient::new(mesh_channel(&cp.mesh_url(), Arc::new(tls), options).unwrap())
}

/// Starts `FLOODERS` tasks sending `call` until `stop`; counts the answers.
fn flood<F, Fut>(
    cp: &TestControlPlane,
    stop: &Arc<AtomicBool>,
    sent: &Arc<AtomicU64>,
    call: F,
) -> JoinSet<()>
where
    F: Fn(ControlPlaneClient<tonic::transport::Channel>) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let mut tasks = JoinSet::new();
    for _ in 0..FLOODERS {
        let client = anonymous_from_noisy_source(cp);
        let (stop, sent, call) = (stop.clone(), sent.clone(), call.clone());
        tasks.spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                call(client.clone()).await;
                sent.fetch_add(1, Ordering::Relaxed);
            }
        });
    }
    tasks
}

async fn tight_limits() -> TestControlPlane {
    TestControlPlane::start_with(|config| {
        config.limits.enrollments_per_second = 5;
        config.limits.enrollment_burst = 5;
        config.limits.enrollments_per_source_per_second = 2;
        config.limits.enrollment_source_burst = 4;
        config.limits.heartbeats_per_second = 20;
        config.limits.heartbeat_burst = 20;
    })
    .await
}

#[tokio::test]
async fn junk_join_tokens_from_one_address_do_not_starve_a_real_enrollment() {
    let cp = tight_limits().await;
    let (stop, sent) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicU64::new(0)),
    );
    let mut flooders = flood(&cp, &stop, &sent, |mut client| async move {
        let junk = pb::EnrollRequest {
            credential: Some(pb::enroll_request::Credential::JoinToken("junk".into())),
            csr_pem: "junk".into(),
            ..Default::default()
        };
        let refused = client.enroll(junk).await.unwrap_err();
        assert!(
            matches!(
                refused.code(),
                tonic::Code::ResourceExhausted
                    | tonic::Code::Unauthenticated
                    | tonic::Code::InvalidArgument
            ),
            "{refused:?}"
        );
    });
    eventually("the flood is under way", WAIT, || async {
        (sent.load(Ordering::Relaxed) > 200).then_some(())
    })
    .await;

    let dir = tempfile::tempdir().unwrap();
    let config = cp.worker_config(dir.path(), Some(cp.join_token(None).await));
    let worker = tokio::time::timeout(WAIT, TestWorker::start(config))
        .await
        .expect("the real worker enrolled while the flood went on")
        .expect("enrollment succeeded");
    eventually("the real worker is online", WAIT, || async {
        let view = cp.fleet.get_worker(&worker.worker_id).await.ok()?;
        (view.status == WorkerStatus::Online).then_some(())
    })
    .await;

    stop.store(true, Ordering::Relaxed);
    while let Some(done) = flooders.join_next().await {
        done.unwrap();
    }
    worker.stop().await;
    cp.stop().await;
}

#[tokio::test]
async fn heartbeats_without_a_certificate_do_not_spend_the_workers_budget() {
    let cp = tight_limits().await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = cp.worker_config(dir.path(), Some(cp.join_token(None).await));
    config.metrics_listen = Some("127.0.0.1:0".parse().unwrap());
    let worker = TestWorker::start(config).await.unwrap();
    let metrics = format!("http://{}/metrics", worker.metrics_addr.unwrap());
    let failures = || async {
        let text = reqwest::get(&metrics).await.unwrap().text().await.unwrap();
        sample(&text, "berth_worker_heartbeat_failures_total").unwrap_or(0.0)
    };
    let last_heartbeat = || async {
        let view = cp.fleet.get_worker(&worker.worker_id).await.ok()?;
        view.last_heartbeat_ms
    };
    let before = eventually("a first heartbeat", WAIT, last_heartbeat).await;

    let (stop, sent) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicU64::new(0)),
    );
    let mut flooders = flood(&cp, &stop, &sent, |mut client| async move {
        let refused = client
            .heartbeat(pb::HeartbeatRequest::default())
            .await
            .unwrap_err();
        assert!(
            matches!(
                refused.code(),
                tonic::Code::ResourceExhausted | tonic::Code::Unauthenticated
            ),
            "{refused:?}"
        );
    });
    // many times the budget's burst later, the worker's heartbeats still land
    let flood_started = sent.load(Ordering::Relaxed);
    eventually("the flood is well past the budget", WAIT, || async {
        (sent.load(Ordering::Relaxed) > flood_started + 500).then_some(())
    })
    .await;
    let during = eventually("heartbeats land during the flood", WAIT, || async {
        let now = last_heartbeat().await?;
        (now > before && sent.load(Ordering::Relaxed) > flood_started + 500).then_some(now)
    })
    .await;
    let mut later = during;
    for _ in 0..3 {
        later = eventually("heartbeats keep landing", WAIT, || async {
            let now = last_heartbeat().await?;
            (now > later).then_some(now)
        })
        .await;
    }
    let view = cp.fleet.get_worker(&worker.worker_id).await.unwrap();
    assert_eq!(view.status, WorkerStatus::Online);
    assert_eq!(
        failures().await,
        0.0,
        "no heartbeat of the worker was refused"
    );

    stop.store(true, Ordering::Relaxed);
    while let Some(done) = flooders.join_next().await {
        done.unwrap();
    }
    worker.stop().await;
    cp.stop().await;
}
