//! Docker workers in a fleet: orphan reconciliation (a labelled container of this
//! worker without a lease is removed, another worker's is left alone), a leased
//! sandbox adopted across a worker restart with its fence, and an engine that goes
//! away turning the provider unhealthy so the scheduler skips it, until it returns.
//! Skipped visibly without an engine.

use std::time::Duration;

use serde_json::json;

use berth_testkit::docker::{DockerCleanup, EngineProxy, docker_or_skip, unique_worker_id};
use berth_testkit::{TestFleet, eventually};
use berth_worker::DockerConfig;
use berth_worker::provider::docker::DockerProvider;
use berth_worker::provider::{Provider, SandboxSpec};

const WAIT: Duration = Duration::from_secs(30);

fn spec(id: &str) -> SandboxSpec {
    SandboxSpec {
        memory_mb: 64,
        ..berth_testkit::spec(id)
    }
}

/// A control plane and one docker worker `id`, online.
async fn fleet(docker: &DockerConfig, id: &str) -> TestFleet {
    TestFleet::builder()
        .docker(docker.clone())
        .worker_ids(&[id])
        .start()
        .await
}

#[tokio::test]
async fn orphans_are_removed_and_other_workers_containers_left_alone() {
    let Some(docker) = docker_or_skip("orphans_are_removed").await else {
        return;
    };
    let (mine, other) = (unique_worker_id("orph"), unique_worker_id("other"));
    let cleanup = DockerCleanup::new(&docker, &[&mine, &other]);
    let own_provider = DockerProvider::new(docker.clone(), &mine);
    let other_provider = DockerProvider::new(docker.clone(), &other);
    let orphan = unique_worker_id("orphan");
    let foreign = unique_worker_id("foreign");
    own_provider.spawn(spec(&orphan)).await.unwrap();
    other_provider.spawn(spec(&foreign)).await.unwrap();

    let fleet = fleet(&docker, &mine).await;
    eventually("the orphan is removed", WAIT, || async {
        own_provider.list().await.ok()?.is_empty().then_some(())
    })
    .await;
    // a few more heartbeats: the other worker's container is still there
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let left = other_provider.list().await.unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].sandbox_id, foreign);
    fleet.stop().await;
    assert_eq!(
        cleanup.run().await,
        1,
        "only the foreign container was left"
    );
}

#[tokio::test]
async fn a_leased_sandbox_is_adopted_across_a_worker_restart() {
    let Some(docker) = docker_or_skip("a_leased_sandbox_is_adopted").await else {
        return;
    };
    let id = unique_worker_id("adopt");
    let _cleanup = DockerCleanup::new(&docker, &[&id]);
    let mut fleet = fleet(&docker, &id).await;
    let sandbox = fleet.api.create_sandbox(json!({"ttl": "10m"})).await;
    let sandbox_id = sandbox["id"].as_str().unwrap().to_owned();
    let exec = format!("/sandboxes/{sandbox_id}/exec");
    let (status, _) = fleet
        .api
        .post(&exec, json!({"command": "echo kept > kept.txt"}))
        .await;
    assert_eq!(status, 200);
    fleet.stop_worker(0).await;

    // the fence was kept on disk
    let fences = std::fs::read_to_string(fleet.worker_dir(0).join("fences.json")).unwrap();
    assert!(fences.contains(&sandbox_id), "{fences}");
    fleet.restart_worker(0).await;
    let api = &fleet.api;
    eventually("the restarted worker serves the sandbox", WAIT, || async {
        let (status, result) = api.post(&exec, json!({"command": "cat kept.txt"})).await;
        (status == 200 && result["stdout"] == "kept\n").then_some(())
    })
    .await;
    // a few heartbeats later it is still leased and running, not reconciled away
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let (_, got) = api.get(&format!("/sandboxes/{sandbox_id}")).await;
    assert_eq!(got["state"], "running", "{got}");
    let (status, _) = api.delete(&format!("/sandboxes/{sandbox_id}")).await;
    assert_eq!(status, 200);
    fleet.stop().await;
}

#[tokio::test]
async fn an_unreachable_engine_makes_the_worker_unschedulable_until_it_returns() {
    let Some(mut docker) = docker_or_skip("an_unreachable_engine").await else {
        return;
    };
    let id = unique_worker_id("health");
    // straight to the engine: the proxy is gone when the guard runs
    let _cleanup = DockerCleanup::new(&docker, &[&id]);
    let proxy = EngineProxy::start(&docker.host).await;
    docker.host = proxy.host();
    let fleet = fleet(&docker, &id).await;
    let api = &fleet.api;

    proxy.cut();
    eventually("the provider turns unhealthy", WAIT, || async {
        let (_, got) = api.get(&format!("/workers/{id}")).await;
        (got["capabilities"][0]["healthy"] == false).then_some(())
    })
    .await;
    let (status, body) = api.post("/sandboxes", json!({})).await;
    assert_eq!(status, 503, "the scheduler skips the worker: {body}");

    proxy.restore();
    eventually("the provider recovers", WAIT, || async {
        let (_, got) = api.get(&format!("/workers/{id}")).await;
        (got["capabilities"][0]["healthy"] == true).then_some(())
    })
    .await;
    let sandbox = api.create_sandbox(json!({})).await;
    assert_eq!(sandbox["state"], "running");
    fleet.stop().await;
}

#[tokio::test]
async fn a_missing_image_is_a_bad_request_that_names_it_and_leaves_nothing() {
    let Some(docker) = docker_or_skip("a_missing_image_is_a_bad_request").await else {
        return;
    };
    let id = unique_worker_id("img");
    let fleet = fleet(&docker, &id).await;
    let (status, body) = fleet
        .api
        .post("/sandboxes", json!({"image": "berth-no-such-image:1"}))
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["code"], "BAD_REQUEST");
    let message = body["message"].as_str().unwrap();
    assert!(
        message.starts_with(&format!(
            "image \"berth-no-such-image:1\" is not on worker {id}'s docker engine and cannot be pulled"
        )),
        "{message}"
    );
    assert!(message.contains("docker build / docker load"), "{message}");
    assert!(message.contains("--default-image"), "{message}");
    // the create made a record: the error names it, and it is left in state error
    let sandbox_id = body["sandbox_id"]
        .as_str()
        .expect("the sandbox id")
        .to_owned();
    let (status, sandbox) = fleet.api.get(&format!("/sandboxes/{sandbox_id}")).await;
    assert_eq!(status, 200, "{sandbox}");
    assert_eq!(sandbox["state"], "error");

    // nothing runs and no network is left behind
    let provider = DockerProvider::new(docker.clone(), &id);
    assert!(provider.list().await.unwrap().is_empty());
    let engine = bollard::Docker::connect_with_unix_defaults().expect("engine");
    assert!(
        engine
            .inspect_network(&format!("berth-{sandbox_id}"), None)
            .await
            .is_err(),
        "a network was left behind"
    );
    let (status, body) = fleet.api.delete("/sandboxes?state=error").await;
    assert_eq!((status, body), (200, json!({"pruned": 1})));
    fleet.stop().await;
}
