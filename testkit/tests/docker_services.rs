//! Companion services on the docker provider: a Podfile-style template with a busybox
//! `httpd` service; from inside the sandbox `wget -qO- http://web:8080/` reaches it
//! by name; it is stopped and started with the sandbox; destroying the sandbox
//! removes the service's container and the network (checked with the engine's own
//! listing, as `docker ps -a` shows it). A service whose sandbox is gone is removed
//! by the worker's next inventory pass. Each on a listening and a dial-out worker.

use std::collections::HashMap;
use std::time::Duration;

use berth_testkit::docker::{DockerCleanup, TEST_IMAGE, docker_or_skip, unique_worker_id};
use berth_testkit::{TestFleet, eventually, id_of};
use bollard::Docker;
use bollard::query_parameters::{
    InspectNetworkOptions, ListContainersOptions, RemoveContainerOptions,
};
use serde_json::json;

const PAGE: &str = "hello from the web service";

/// `(name, running)` of every container labelled as `sandbox_id`'s, as `docker ps -a
/// --filter label=berth.sandbox=ID` lists them.
async fn containers_of(engine: &Docker, sandbox_id: &str) -> Vec<(String, bool)> {
    let options = ListContainersOptions {
        all: true,
        filters: Some(HashMap::from([(
            "label".to_owned(),
            vec![format!("berth.sandbox={sandbox_id}")],
        )])),
        ..Default::default()
    };
    let mut found: Vec<(String, bool)> = engine
        .list_containers(Some(options))
        .await
        .unwrap()
        .into_iter()
        .map(|c| {
            let name = c.names.unwrap_or_default().join(",");
            let running = c.state.map(|s| s.to_string()) == Some("running".to_owned());
            (name, running)
        })
        .collect();
    found.sort();
    found
}

async fn fleet(dial_out: bool) -> Option<(TestFleet, DockerCleanup)> {
    let docker = docker_or_skip("docker_services").await?;
    let worker_id = unique_worker_id("svc");
    let cleanup = DockerCleanup::new(&docker, &[&worker_id]);
    let builder = TestFleet::builder()
        .docker(docker)
        .worker_ids(&[&worker_id]);
    let builder = if dial_out {
        builder.worker(|config| config.listen = None)
    } else {
        builder
    };
    Some((builder.start().await, cleanup))
}

async fn a_service_is_reached_by_name_and_goes_with_its_sandbox(dial_out: bool) {
    let Some((fleet, _cleanup)) = fleet(dial_out).await else {
        return;
    };
    let engine = Docker::connect_with_unix_defaults().expect("docker client");
    let api = &fleet.api;
    let (status, template) = api
        .post(
            "/templates",
            json!({
                "name": "web-app",
                "services": [{
                    "name": "web",
                    "image": TEST_IMAGE,
                    "command": format!("mkdir -p /www && echo '{PAGE}' > /www/index.html && exec httpd -f -p 8080 -h /www"),
                    "ports": [8080]
                }],
                "on_start": "for i in 1 2 3 4 5 6 7 8 9 10; do wget -qO- http://web:8080/ >/dev/null 2>&1 && exit 0; sleep 1; done; exit 1"
            }),
        )
        .await;
    assert_eq!(status, 201, "{template}");
    let sandbox = api
        .create_sandbox(json!({"template": "web-app", "ttl": "10m"}))
        .await;
    let id = id_of(&sandbox);
    // the services' start is a phase of its own, before the sandbox's container
    let phases: Vec<&str> = sandbox["phases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|phase| phase["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        phases,
        [
            "scheduled",
            "starting services",
            "creating",
            "on_start",
            "ready"
        ],
        "{sandbox}"
    );
    let services = &sandbox["phases"][1];
    assert_eq!(services["status"], "succeeded", "{sandbox}");
    assert_eq!(
        services["ended_at"], sandbox["phases"][2]["started_at"],
        "creating starts where the worker says the services were up: {sandbox}"
    );

    let (status, out) = api
        .exec(&id, json!({"command": "wget -qO- http://web:8080/"}))
        .await;
    assert_eq!(status, 200, "{out}");
    assert_eq!(out["stdout"], format!("{PAGE}\n"), "{out}");
    let listed = containers_of(&engine, &id).await;
    assert_eq!(
        listed,
        [
            (format!("/berth-{id}"), true),
            (format!("/berth-{id}-svc-web"), true)
        ],
        "the sandbox and its service"
    );
    // the service is no sandbox of the worker's
    let (_, sandboxes) = api.get("/sandboxes").await;
    assert_eq!(sandboxes.as_array().unwrap().len(), 1, "{sandboxes}");

    // stopped and started with its sandbox
    let (status, _) = api.post(&format!("/sandboxes/{id}/stop"), json!({})).await;
    assert_eq!(status, 200);
    assert!(
        containers_of(&engine, &id)
            .await
            .iter()
            .all(|(_, running)| !running),
        "both stopped"
    );
    let (status, body) = api.post(&format!("/sandboxes/{id}/start"), json!({})).await;
    assert_eq!(status, 200, "{body}");
    let (_, out) = api
        .exec(&id, json!({"command": "wget -qO- http://web:8080/"}))
        .await;
    assert_eq!(out["stdout"], format!("{PAGE}\n"), "after a start: {out}");

    // destroyed with it: no container, no network
    let (status, _) = api.delete(&format!("/sandboxes/{id}")).await;
    assert_eq!(status, 200);
    assert_eq!(containers_of(&engine, &id).await, []);
    let network = engine
        .inspect_network(&format!("berth-{id}"), None::<InspectNetworkOptions>)
        .await;
    assert!(network.is_err(), "the sandbox's network is gone");

    // a service left behind by a sandbox that vanished is removed by the worker
    let orphaned = id_of(&api.create_sandbox(json!({"template": "web-app"})).await);
    engine
        .remove_container(
            &format!("berth-{orphaned}"),
            Some(RemoveContainerOptions {
                force: true,
                ..Default::default()
            }),
        )
        .await
        .unwrap();
    eventually(
        "the orphaned service to be removed",
        Duration::from_secs(30),
        || async {
            containers_of(&engine, &orphaned)
                .await
                .is_empty()
                .then_some(())
        },
    )
    .await;
    fleet.stop().await;
}

#[tokio::test]
async fn a_service_is_reached_by_name_and_goes_with_its_sandbox_on_a_listening_worker() {
    a_service_is_reached_by_name_and_goes_with_its_sandbox(false).await;
}

#[tokio::test]
async fn a_service_is_reached_by_name_and_goes_with_its_sandbox_on_a_dial_out_worker() {
    a_service_is_reached_by_name_and_goes_with_its_sandbox(true).await;
}

#[tokio::test]
async fn the_mock_provider_refuses_services_by_name() {
    let fleet = TestFleet::builder().workers(1).start().await;
    let (status, _) = fleet
        .api
        .post(
            "/templates",
            json!({"name": "svc", "services": [{"name": "db", "image": "postgres:16"}]}),
        )
        .await;
    assert_eq!(status, 201);
    let (status, err) = fleet
        .api
        .post("/sandboxes", json!({"template": "svc"}))
        .await;
    assert_eq!(status, 400, "{err}");
    assert!(
        err["message"]
            .as_str()
            .unwrap()
            .contains("runs no companion services"),
        "{err}"
    );
    fleet.stop().await;
}

#[tokio::test]
async fn services_count_in_the_sandbox_footprint_and_the_team_quota() {
    let Some((fleet, _cleanup)) = fleet(false).await else {
        return;
    };
    let api = &fleet.api;
    // room for one sandbox of 128 MiB with one service of as much, not two
    api.create_team("svc", json!({"max_memory_mb": 384, "max_vcpus": 4}))
        .await;
    let member = api.with_key(&api.team_key("svc", &["read", "write", "exec"]).await);
    let (status, _) = member
        .post(
            "/templates",
            json!({"name": "with-db", "memory_mb": 128, "vcpus": 1,
                   "services": [{"name": "db", "image": TEST_IMAGE, "command": "exec sleep 600"}]}),
        )
        .await;
    assert_eq!(status, 201);
    let (status, sandbox) = member
        .post("/sandboxes", json!({"template": "with-db"}))
        .await;
    assert_eq!(status, 201, "{sandbox}");
    assert_eq!(
        (&sandbox["memory_mb"], &sandbox["vcpus"]),
        (&json!(256), &json!(2)),
        "the footprint: its container and its service"
    );
    let (status, team) = api.get("/teams/svc").await;
    assert_eq!(status, 200);
    assert_eq!(team["usage"]["memory_mb"], 256, "{team}");
    let (status, err) = member
        .post("/sandboxes", json!({"template": "with-db"}))
        .await;
    assert_eq!(status, 429, "{err}");
    assert!(
        err["message"].as_str().unwrap().contains("max_memory_mb"),
        "{err}"
    );
    // a sandbox without services still fits
    let (status, plain) = member
        .post("/sandboxes", json!({"memory_mb": 128, "vcpus": 1}))
        .await;
    assert_eq!(status, 201, "{plain}");
    fleet.stop().await;
}
