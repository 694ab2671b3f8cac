//! `berth serve --local-worker`: the in-process worker enrolls through the mesh with a
//! join token, like any other worker, and keeps its identity across restarts.

use std::time::Duration;

use berth_cli::local_worker::{self, LOCAL_WORKER_ID, LocalWorkerConfig};
use berth_controlplane::fleet::{WorkerStatus, WorkerView};
use berth_testkit::{TestControlPlane, eventually};
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(10);

async fn online(cp: &TestControlPlane, id: &str) -> Option<WorkerView> {
    let view = cp.fleet.get_worker(id).await.ok()?;
    (view.status == WorkerStatus::Online).then_some(view)
}

#[tokio::test]
async fn the_local_worker_enrolls_through_the_mesh_like_any_other() {
    let cp = TestControlPlane::start().await;
    let local = LocalWorkerConfig {
        provider: "mock".into(),
        ..Default::default()
    };
    let shutdown = CancellationToken::new();
    let start = |shutdown: CancellationToken| {
        local_worker::start(
            &local,
            &cp.config.data_dir,
            cp.config.heartbeat_interval,
            &cp.fleet,
            cp.mesh_addr,
            shutdown,
        )
    };
    let worker = start(shutdown.clone()).await.expect("local worker started");
    assert_eq!(worker.worker_id, LOCAL_WORKER_ID);
    let view = eventually("local worker online", WAIT, || online(&cp, LOCAL_WORKER_ID)).await;
    assert_eq!(view.spiffe_id, "spiffe://berth.local/worker/local");
    shutdown.cancel();
    worker.wait().await;

    // a second start uses the stored identity: no join token is needed (a used one
    // would be refused)
    let shutdown = CancellationToken::new();
    let again = start(shutdown.clone())
        .await
        .expect("local worker restarted");
    assert_eq!(again.worker_id, LOCAL_WORKER_ID);
    eventually("local worker online again", WAIT, || {
        online(&cp, LOCAL_WORKER_ID)
    })
    .await;
    shutdown.cancel();
    again.wait().await;
    cp.stop().await;
}
