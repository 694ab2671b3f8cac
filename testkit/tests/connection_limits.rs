//! Limits at the control plane's edges: what one caller can make it hold or write.
//! A heartbeat's inventory is bounded and its unleased sandboxes are logged once per
//! heartbeat, not once each.

use std::sync::Once;
use std::sync::atomic::{AtomicUsize, Ordering};

use berth_proto::v1 as pb;
use berth_testkit::TestFleet;
use tracing_subscriber::Layer;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// WARN lines about sandboxes a worker holds no lease for, logged by this process.
static UNLEASED_WARNINGS: AtomicUsize = AtomicUsize::new(0);

/// Counts [`UNLEASED_WARNINGS`]; installed as the process's subscriber before any
/// fixture installs its own (every test here calls [`count_warnings`] first).
struct CountUnleased;

impl<S: tracing::Subscriber> Layer<S> for CountUnleased {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        struct Message(bool);
        impl tracing::field::Visit for Message {
            fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
                if field.name() == "message" && format!("{value:?}").contains("no lease") {
                    self.0 = true;
                }
            }
        }
        let mut message = Message(false);
        event.record(&mut message);
        if message.0 {
            UNLEASED_WARNINGS.fetch_add(1, Ordering::SeqCst);
        }
    }
}

fn count_warnings() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        tracing_subscriber::registry()
            .with(CountUnleased.with_filter(tracing_subscriber::filter::LevelFilter::WARN))
            .init();
    });
}

fn heartbeat(worker_id: &str, inventory: usize) -> pb::HeartbeatRequest {
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
        sandboxes: (0..inventory)
            .map(|n| pb::SandboxReport {
                sandbox_id: format!("fake-{n}"),
                generation: 1,
                state: "running".into(),
            })
            .collect(),
        sent_at_ms: 0,
    }
}

#[tokio::test]
async fn a_heartbeat_inventory_is_bounded_and_logged_once() {
    count_warnings();
    let fleet = TestFleet::start().await;
    let worker = fleet.worker(0);
    let identity = berth_worker::StoredIdentity::load(&worker.data_dir)
        .unwrap()
        .unwrap();
    let mut mesh = fleet
        .cp
        .mesh_client_as(&identity.cert_pem, &identity.key_pem);

    let Err(refused) = mesh.heartbeat(heartbeat(&worker.worker_id, 100_000)).await else {
        panic!("100,000 sandboxes in one heartbeat were accepted");
    };
    assert_eq!(refused.code(), tonic::Code::InvalidArgument, "{refused:?}");
    assert!(
        refused.message().contains("at most 10000 sandboxes"),
        "{refused:?}"
    );

    let before = UNLEASED_WARNINGS.load(Ordering::SeqCst);
    let ack = mesh
        .heartbeat(heartbeat(&worker.worker_id, 5_000))
        .await
        .expect("5,000 fit")
        .into_inner();
    assert_eq!(ack.destroy_sandboxes.len(), 5_000);
    assert_eq!(
        UNLEASED_WARNINGS.load(Ordering::SeqCst) - before,
        1,
        "one line for the whole heartbeat"
    );
    fleet.stop().await;
}
