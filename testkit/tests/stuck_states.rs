//! Every state has a way out. A control plane killed mid-spawn leaves sandboxes
//! `creating`, placed on a worker under a lease that nobody will confirm: a control
//! plane (this one restarted, or any replica) resolves them once they are older than
//! the spawn timeout plus a heartbeat grace, adopting those the worker holds at the
//! lease's generation and destroying the rest. A sandbox in any state can be
//! destroyed, and prune and the TTL reach every state. On the docker worker, sandbox
//! networks are reconciled like containers: none outlives its sandbox.
//!
//! The crash is played at the store: a sandbox is placed exactly as the scheduler
//! places it (row, lease and slot in one step) and nothing more happens, which is what
//! a `kill -9` between placement and the spawn's confirmation leaves; the worker takes
//! the spawn, or does not, through its own service with the lease's generation.
//! `smoke/smoke.sh` kills a real `berth serve` during parallel creates.

use std::time::Duration;

use bollard::Docker;
use bollard::models::NetworkCreateRequest;
use bollard::query_parameters::{InspectNetworkOptions, RemoveContainerOptions};
use serde_json::json;

use berth_controlplane::store::{NewSandbox, SandboxState, Store};
use berth_proto::v1 as pb;
use berth_testkit::docker::{DockerCleanup, docker_or_skip, unique_worker_id};
use berth_testkit::{Api, TestFleet, eventually};
use berth_worker::provider::Provider;
use berth_worker::provider::docker::{DockerProvider, LABEL_MANAGED, LABEL_SANDBOX, LABEL_WORKER};

const WAIT: Duration = Duration::from_secs(20);

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as i64
}

fn new_sandbox(id: &str, created_at: i64, expires_at: i64) -> NewSandbox {
    NewSandbox {
        id: id.into(),
        provider: "mock".into(),
        image: String::new(),
        memory_mb: 64,
        vcpus: 1,
        owner_id: String::new(),
        template: String::new(),
        metadata: "{}".into(),
        created_at,
        expires_at,
        internet: true,
        team_id: "default".into(),
        workdir: String::new(),
        shell: String::new(),
        ports: "[]".into(),
        auto_stop_secs: 0,
    }
}

/// Places `id` on `worker_id` the way the scheduler does and stops there, as a control
/// plane killed mid-spawn does: a `creating` row holding a lease (for a minute, so only
/// the resolution under test can end it) and a slot. Returns the lease's generation.
async fn placed_and_abandoned(
    store: &Store,
    id: &str,
    worker_id: &str,
    created_at: i64,
    expires_at: i64,
) -> i64 {
    let placed = store
        .create_placed_sandbox(
            &new_sandbox(id, created_at, expires_at),
            &[worker_id.to_owned()],
            0,
            now_ms() + 60_000,
            "no room",
        )
        .await
        .expect("place")
        .unwrap_or_else(|| panic!("{id} not placed on {worker_id}"));
    placed.placement.generation
}

/// Worker 0 of `fleet` takes the spawn of `id` at `generation`, as it did before the
/// control plane that asked for it died.
async fn spawned_on_worker(fleet: &TestFleet, id: &str, generation: i64) {
    fleet
        .cp
        .worker_client(fleet.worker(0))
        .spawn(pb::SpawnRequest {
            spec: Some(pb::SandboxSpec {
                sandbox_id: id.into(),
                ..Default::default()
            }),
            generation: generation as u64,
        })
        .await
        .expect("the worker takes the spawn");
}

/// Whether worker 0 of `fleet` holds `id`.
async fn worker_holds(fleet: &TestFleet, id: &str) -> bool {
    let status = fleet
        .cp
        .worker_client(fleet.worker(0))
        .status(pb::StatusRequest {
            sandbox_id: id.into(),
        })
        .await;
    match status {
        Ok(_) => true,
        Err(status) if status.code() == tonic::Code::NotFound => false,
        Err(status) => panic!("status of {id}: {status}"),
    }
}

async fn state_of(store: &Store, id: &str) -> SandboxState {
    store
        .get_sandbox(id)
        .await
        .expect("read sandbox")
        .unwrap_or_else(|| panic!("no sandbox {id}"))
        .state
}

async fn reserved(store: &Store, worker_id: &str) -> i64 {
    store
        .get_worker(worker_id)
        .await
        .expect("read worker")
        .expect("worker")
        .reserved
}

async fn api_state(api: &Api, id: &str) -> (u16, String) {
    let (status, sandbox) = api.get(&format!("/sandboxes/{id}")).await;
    (
        status,
        sandbox["state"].as_str().unwrap_or_default().to_owned(),
    )
}

#[tokio::test]
async fn spawns_a_crash_left_unconfirmed_are_adopted_or_destroyed_after_a_restart() {
    // a spawn is unconfirmed after 1s (spawn timeout) + 2s (heartbeat grace)
    let fleet = TestFleet::builder()
        .worker_ids(&["k1"])
        .control_plane(|config| config.sandboxes.spawn_timeout = Duration::from_secs(1))
        .start()
        .await;
    let store = fleet.cp.fleet.store().clone();
    let created_at = now_secs();
    let expires_at = created_at + 3_600;
    for id in ["held-1", "held-2", "gone-1", "gone-2"] {
        let generation = placed_and_abandoned(&store, id, "k1", created_at, expires_at).await;
        if id.starts_with("held") {
            spawned_on_worker(&fleet, id, generation).await;
        }
    }
    for id in ["held-1", "gone-1"] {
        assert_eq!(api_state(&fleet.api, id).await, (200, "creating".into()));
    }
    let (status, body) = fleet.api.exec("held-1", json!({"command": "true"})).await;
    assert_eq!(status, 409, "not usable while creating: {body}");

    // the control plane goes away and comes back on its data and mesh port
    let mesh_addr = fleet.cp.mesh_addr;
    let fleet = fleet
        .restart_control_plane_after(Duration::ZERO, |config| config.mesh_listen = mesh_addr)
        .await;
    let store = fleet.cp.fleet.store().clone();
    let api = &fleet.api;
    api.wait_ready().await;
    eventually("every unconfirmed spawn resolved", WAIT, || async {
        let mut states = Vec::new();
        for id in ["held-1", "held-2", "gone-1", "gone-2"] {
            states.push(state_of(&store, id).await);
        }
        (states
            == [
                SandboxState::Running,
                SandboxState::Running,
                SandboxState::Destroyed,
                SandboxState::Destroyed,
            ])
        .then_some(())
    })
    .await;
    for id in ["gone-1", "gone-2"] {
        let row = store.get_sandbox(id).await.unwrap().unwrap();
        assert!(row.error.contains("never confirmed"), "{row:?}");
        assert_eq!(row.generation, None, "its lease is released");
        assert_eq!(api_state(api, id).await.0, 404);
    }
    assert_eq!(
        reserved(&store, "k1").await,
        2,
        "only the adopted hold slots"
    );

    // the adopted ones are sandboxes like any other
    let (status, body) = api.exec("held-1", json!({"command": "echo adopted"})).await;
    assert_eq!((status, body["stdout"].clone()), (200, json!("adopted\n")));
    for id in ["held-1", "held-2"] {
        assert_eq!(api.delete(&format!("/sandboxes/{id}")).await.0, 200);
        assert!(!worker_holds(&fleet, id).await, "{id} still on the worker");
    }
    assert_eq!(reserved(&store, "k1").await, 0);
    fleet.stop().await;
}

#[tokio::test]
async fn a_sandbox_in_any_state_can_be_destroyed() {
    // the default spawn timeout and no reaper: nothing here is resolved behind the
    // test's back
    let fleet = TestFleet::builder()
        .worker_ids(&["k1"])
        .reap_interval(Duration::from_secs(3_600))
        .start()
        .await;
    let store = fleet.cp.fleet.store().clone();
    let api = &fleet.api;
    let (now, expires_at) = (now_secs(), now_secs() + 3_600);

    // still being created: held by the worker, or not (yet)
    let generation = placed_and_abandoned(&store, "creating-held", "k1", now, expires_at).await;
    spawned_on_worker(&fleet, "creating-held", generation).await;
    placed_and_abandoned(&store, "creating-gone", "k1", now, expires_at).await;
    // lost, and failed
    placed_and_abandoned(&store, "lost", "k1", now, expires_at).await;
    assert!(
        store
            .mark_sandbox_running("lost", "vm", now_ms())
            .await
            .unwrap()
    );
    assert!(
        store
            .mark_lost("lost", "k1", 1, "its worker no longer reports it")
            .await
            .unwrap()
    );
    let none = store
        .create_placed_sandbox(
            &new_sandbox("failed", now, expires_at),
            &[],
            0,
            0,
            "no room",
        )
        .await
        .unwrap();
    assert!(none.is_none());
    // a destroy whose claimer died long ago, and one in progress right now
    for id in ["stalled", "in-progress"] {
        placed_and_abandoned(&store, id, "k1", now, expires_at).await;
        assert!(
            store
                .mark_sandbox_running(id, "vm", now_ms())
                .await
                .unwrap()
        );
    }
    assert!(store.claim_destroy("stalled", 1).await.unwrap());
    assert!(store.claim_destroy("in-progress", now_ms()).await.unwrap());
    assert_eq!(reserved(&store, "k1").await, 4);

    for id in [
        "creating-held",
        "creating-gone",
        "lost",
        "failed",
        "stalled",
    ] {
        let (status, body) = api.delete(&format!("/sandboxes/{id}")).await;
        assert_eq!(status, 200, "destroy {id}: {body}");
        assert_eq!(state_of(&store, id).await, SandboxState::Destroyed, "{id}");
        let (status, body) = api.delete(&format!("/sandboxes/{id}")).await;
        assert_eq!(status, 404, "destroy {id} again: {body}");
    }
    assert!(!worker_holds(&fleet, "creating-held").await);
    let (status, body) = api.delete("/sandboxes/in-progress").await;
    assert_eq!(status, 409, "a destroy in progress is not raced: {body}");
    assert_eq!(
        reserved(&store, "k1").await,
        1,
        "every slot released once; the one being destroyed keeps its own"
    );
    fleet.stop().await;
}

#[tokio::test]
async fn prune_reaches_every_state_past_its_ttl() {
    // no reaper during the test: the prune call does it all
    let fleet = TestFleet::builder()
        .worker_ids(&["k1"])
        .reap_interval(Duration::from_secs(3_600))
        .start()
        .await;
    let store = fleet.cp.fleet.store().clone();
    let now = now_secs();
    let past = now - 10;
    for id in ["creating", "running", "lost", "young"] {
        let expires_at = if id == "young" { now + 3_600 } else { past };
        placed_and_abandoned(&store, id, "k1", now, expires_at).await;
    }
    for id in ["running", "lost"] {
        assert!(
            store
                .mark_sandbox_running(id, "vm", now_ms())
                .await
                .unwrap()
        );
    }
    assert!(store.mark_lost("lost", "k1", 1, "gone").await.unwrap());
    store
        .create_placed_sandbox(&new_sandbox("failed", now, past), &[], 0, 0, "no room")
        .await
        .unwrap();

    let (status, body) = fleet.api.delete("/sandboxes").await;
    assert_eq!((status, body), (200, json!({"pruned": 4})));
    for id in ["creating", "running", "lost", "failed"] {
        assert_eq!(state_of(&store, id).await, SandboxState::Destroyed, "{id}");
    }
    assert_eq!(state_of(&store, "young").await, SandboxState::Creating);
    assert_eq!(reserved(&store, "k1").await, 1, "only the young one's slot");
    fleet.stop().await;
}

#[tokio::test]
async fn the_ttl_reaper_destroys_a_sandbox_stuck_creating() {
    let fleet = TestFleet::builder()
        .worker_ids(&["k1"])
        .reap_interval(Duration::from_millis(200))
        .start()
        .await;
    let store = fleet.cp.fleet.store().clone();
    let now = now_secs();
    let generation = placed_and_abandoned(&store, "stuck", "k1", now, now - 1).await;
    spawned_on_worker(&fleet, "stuck", generation).await;
    eventually("the expired sandbox is destroyed", WAIT, || async {
        (state_of(&store, "stuck").await == SandboxState::Destroyed).then_some(())
    })
    .await;
    assert!(!worker_holds(&fleet, "stuck").await);
    assert_eq!(reserved(&store, "k1").await, 0);
    fleet.stop().await;
}

// ---------------------------------------------------------------- docker networks

fn engine() -> Docker {
    Docker::connect_with_unix_defaults().expect("engine")
}

/// Makes a network labelled as worker `worker_id`'s network of sandbox `sandbox_id`,
/// named as the provider names it: what a spawn cut off after making it leaves.
async fn stray_network(worker_id: &str, sandbox_id: &str) -> String {
    let name = format!("berth-{sandbox_id}");
    engine()
        .create_network(NetworkCreateRequest {
            name: name.clone(),
            driver: Some("bridge".into()),
            labels: Some(
                [
                    (LABEL_MANAGED.to_owned(), "true".to_owned()),
                    (LABEL_SANDBOX.to_owned(), sandbox_id.to_owned()),
                    (LABEL_WORKER.to_owned(), worker_id.to_owned()),
                ]
                .into(),
            ),
            ..Default::default()
        })
        .await
        .expect("create a network");
    name
}

async fn network_exists(name: &str) -> bool {
    engine()
        .inspect_network(name, None::<InspectNetworkOptions>)
        .await
        .is_ok()
}

#[tokio::test]
async fn a_stray_sandbox_network_is_removed_while_the_worker_runs() {
    let Some(docker) = docker_or_skip("a_stray_sandbox_network_is_removed").await else {
        return;
    };
    let worker_id = unique_worker_id("strays");
    let other = unique_worker_id("strays-other");
    let cleanup = DockerCleanup::new(&docker, &[&worker_id, &other]);
    let fleet = TestFleet::builder()
        .docker(docker.clone())
        .worker_ids(&[&worker_id])
        .start()
        .await;
    let kept = fleet.api.create_sandbox(json!({})).await;
    let kept_network = format!("berth-{}", kept["id"].as_str().unwrap());
    // after the worker's start-up sweep: only a sweep while it runs removes them
    let stray = stray_network(&worker_id, &unique_worker_id("sbx")).await;
    let foreign = stray_network(&other, &unique_worker_id("sbx")).await;
    eventually("the stray network is removed", WAIT, || async {
        (!network_exists(&stray).await).then_some(())
    })
    .await;
    assert!(
        network_exists(&kept_network).await,
        "a live sandbox's network"
    );
    assert!(network_exists(&foreign).await, "another worker's network");
    fleet.stop().await;
    cleanup.run().await;
}

#[tokio::test]
async fn a_destroyed_lost_sandbox_leaves_no_network() {
    let Some(docker) = docker_or_skip("a_destroyed_lost_sandbox_leaves_no_network").await else {
        return;
    };
    let worker_id = unique_worker_id("lostnet");
    let _cleanup = DockerCleanup::new(&docker, &[&worker_id]);
    let fleet = TestFleet::builder()
        .docker(docker.clone())
        .worker_ids(&[&worker_id])
        .start()
        .await;
    let api = &fleet.api;
    let id = api.create_sandbox(json!({})).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let network = format!("berth-{id}");
    assert!(network_exists(&network).await);
    // its container removed from outside: the worker stops reporting it
    engine()
        .remove_container(
            &network,
            Some(RemoveContainerOptions {
                force: true,
                ..Default::default()
            }),
        )
        .await
        .expect("remove the container");
    eventually("the sandbox is lost", WAIT, || async {
        (api_state(api, &id).await.1 == "lost").then_some(())
    })
    .await;
    assert_eq!(api.delete(&format!("/sandboxes/{id}")).await.0, 200);
    eventually("its network is gone", WAIT, || async {
        (!network_exists(&network).await).then_some(())
    })
    .await;
    fleet.stop().await;
}

#[tokio::test]
async fn a_spawn_failing_half_way_removes_the_network_a_dead_spawn_left() {
    let Some(docker) = docker_or_skip("a_spawn_failing_half_way_removes_the_network").await else {
        return;
    };
    let worker_id = unique_worker_id("halfway");
    let _cleanup = DockerCleanup::new(&docker, &[&worker_id]);
    let provider = DockerProvider::new(docker.clone(), &worker_id);
    let sandbox_id = unique_worker_id("sbx");
    let network = stray_network(&worker_id, &sandbox_id).await;
    // the engine refuses a container with 1 MiB of memory, after the network is taken
    let failed = provider
        .spawn(berth_worker::provider::SandboxSpec {
            memory_mb: 1,
            ..berth_testkit::spec(&sandbox_id)
        })
        .await;
    assert!(failed.is_err(), "{failed:?}");
    assert!(
        !network_exists(&network).await,
        "the failed spawn left its network"
    );
}
