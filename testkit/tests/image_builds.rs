//! Images built on the worker for templates with `packages` or `on_create`, and the
//! startup phases that show it: the first create of a template on a worker builds
//! (phase `building image`, "built …"), the second reuses the image ("reused …", no
//! build), an edit of the template builds once more. A failing build leaves the
//! sandbox in `error` at that phase with the reason and nothing on the worker. The
//! phases arrive on the sandbox's event stream (NDJSON), live for a create answered
//! early (`Prefer: respond-async`). On the mock and on docker (skipped visibly without
//! an engine), where the engine's own listing shows the one image and no build
//! container left behind.

use std::collections::HashMap;
use std::time::Duration;

use berth_testkit::docker::{DockerCleanup, TEST_IMAGE, docker_or_skip, unique_worker_id};
use berth_testkit::{TestFleet, eventually, id_of};
use bollard::Docker;
use bollard::query_parameters::{ListContainersOptions, ListImagesOptions, RemoveImageOptions};
use serde_json::{Value, json};

/// `(name, status, detail)` of each of a sandbox's phases.
fn phases_of(sandbox: &Value) -> Vec<(String, String, String)> {
    sandbox["phases"]
        .as_array()
        .unwrap_or_else(|| panic!("no phases: {sandbox}"))
        .iter()
        .map(|phase| {
            let text = |key: &str| phase[key].as_str().unwrap_or_default().to_owned();
            (text("name"), text("status"), text("detail"))
        })
        .collect()
}

fn names(phases: &[(String, String, String)]) -> Vec<&str> {
    phases.iter().map(|(name, _, _)| name.as_str()).collect()
}

/// The detail of the `building image` phase.
fn build_detail(sandbox: &Value) -> String {
    let phases = phases_of(sandbox);
    let (_, status, detail) = phases
        .iter()
        .find(|(name, _, _)| name == "building image")
        .unwrap_or_else(|| panic!("no building image phase: {sandbox}"));
    assert_eq!(status, "succeeded", "{sandbox}");
    detail.clone()
}

/// The sandbox's events so far (`follow=false`), one JSON object a line.
async fn events_of(fleet: &TestFleet, id: &str) -> Vec<Value> {
    let response = fleet
        .api
        .request(
            reqwest::Method::GET,
            &format!("/sandboxes/{id}/events?follow=false"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"],
        "application/x-ndjson",
        "an NDJSON stream"
    );
    let text = response.text().await.unwrap();
    text.lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

/// `phase:status` of each phase event, in order.
fn phase_steps(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .filter(|e| e["type"] == "phase")
        .map(|e| {
            format!(
                "{}:{}",
                e["phase"].as_str().unwrap(),
                e["status"].as_str().unwrap()
            )
        })
        .collect()
}

/// Builds once, reuses, rebuilds once after an edit; `marker` is a file on_create
/// writes and `image` the template's (None: the default).
async fn a_template_builds_once_per_content(
    fleet: &TestFleet,
    image: Option<&str>,
    tag: &str,
) -> Vec<String> {
    let api = &fleet.api;
    let mut template = json!({"name": "built", "ttl": "10m",
        "on_create": format!("mkdir -p /opt/berth && echo {tag}-v1 > /opt/berth/marker"),
        "on_start": "cat /opt/berth/marker > /workspace/seen"});
    if let Some(image) = image {
        template["image"] = json!(image);
    }
    let (status, body) = api.post("/templates", template.clone()).await;
    assert_eq!(status, 201, "{body}");

    let first = api.create_sandbox(json!({"template": "built"})).await;
    let phases = phases_of(&first);
    assert_eq!(
        names(&phases),
        [
            "scheduled",
            "building image",
            "creating",
            "on_start",
            "ready"
        ],
        "{first}"
    );
    assert!(
        phases.iter().all(|(_, status, _)| status == "succeeded"),
        "{first}"
    );
    assert_eq!(first["phase"], "ready");
    let detail = build_detail(&first);
    assert!(detail.starts_with("built berth/built:"), "{detail}");
    let built_tag = detail
        .trim_start_matches("built ")
        .split(' ')
        .next()
        .unwrap()
        .to_owned();
    let (status, out) = api
        .exec(&id_of(&first), json!({"command": "cat /opt/berth/marker"}))
        .await;
    assert_eq!(
        (status, out["stdout"].as_str()),
        (200, Some(&*format!("{tag}-v1\n"))),
        "{out}"
    );

    // the second spawn finds the image: no build
    let second = api.create_sandbox(json!({"template": "built"})).await;
    assert_eq!(
        build_detail(&second),
        format!("reused {built_tag}"),
        "{second}"
    );
    let (status, out) = api
        .exec(&id_of(&second), json!({"command": "cat /workspace/seen"}))
        .await;
    assert_eq!(
        (status, out["stdout"].as_str()),
        (200, Some(&*format!("{tag}-v1\n"))),
        "{out}"
    );
    // the phases of a sandbox as GET shows them, and on its event stream
    let (_, fetched) = api.get(&format!("/sandboxes/{}", id_of(&second))).await;
    assert_eq!(phases_of(&fetched), phases_of(&second));
    let events = events_of(fleet, &id_of(&second)).await;
    assert_eq!(
        phase_steps(&events),
        [
            "scheduled:started",
            "scheduled:succeeded",
            "building image:started",
            "building image:succeeded",
            "creating:started",
            "creating:succeeded",
            "on_start:started",
            "on_start:succeeded",
            "ready:started",
            "ready:succeeded"
        ],
        "{events:?}"
    );
    assert!(
        events
            .iter()
            .any(|e| e["type"] == "state" && e["state"] == "running"),
        "{events:?}"
    );

    // an edit builds once more, then that is reused too
    template["on_create"] = json!(format!(
        "mkdir -p /opt/berth && echo {tag}-v2 > /opt/berth/marker"
    ));
    let (status, body) = api.post("/templates", template).await;
    assert_eq!((status, body["version"].as_i64()), (200, Some(2)), "{body}");
    let third = api.create_sandbox(json!({"template": "built"})).await;
    let rebuilt = build_detail(&third);
    assert!(rebuilt.starts_with("built berth/built:"), "{rebuilt}");
    assert!(
        !rebuilt.contains(&built_tag),
        "a new content hash: {rebuilt}"
    );
    let fourth = api.create_sandbox(json!({"template": "built"})).await;
    assert!(build_detail(&fourth).starts_with("reused "), "{fourth}");
    let (status, out) = api
        .exec(&id_of(&fourth), json!({"command": "cat /opt/berth/marker"}))
        .await;
    assert_eq!(
        (status, out["stdout"].as_str()),
        (200, Some(&*format!("{tag}-v2\n"))),
        "{out}"
    );
    for sandbox in [&first, &second, &third, &fourth] {
        let (status, _) = api.delete(&format!("/sandboxes/{}", id_of(sandbox))).await;
        assert_eq!(status, 200);
    }
    let new_tag = rebuilt
        .trim_start_matches("built ")
        .split(' ')
        .next()
        .unwrap()
        .to_owned();
    vec![built_tag, new_tag]
}

/// A failing on_create fails the create at `building image`, with the reason.
async fn a_failed_build_leaves_the_sandbox_in_error(
    fleet: &TestFleet,
    image: Option<&str>,
) -> String {
    let api = &fleet.api;
    let mut template = json!({"name": "broken",
        "on_create": "echo the build broke here >&2; exit 3"});
    if let Some(image) = image {
        template["image"] = json!(image);
    }
    let (status, body) = api.post("/templates", template).await;
    assert_eq!(status, 201, "{body}");
    let (status, err) = api.post("/sandboxes", json!({"template": "broken"})).await;
    assert_eq!(status, 400, "the template's to fix: {err}");
    let message = err["message"].as_str().unwrap();
    assert!(message.contains("exited with 3"), "{err}");
    assert!(message.contains("the build broke here"), "{err}");
    let id = err["sandbox_id"]
        .as_str()
        .expect("the failed sandbox is named")
        .to_owned();
    let (_, sandbox) = api.get(&format!("/sandboxes/{id}")).await;
    assert_eq!(sandbox["state"], "error", "{sandbox}");
    assert_eq!(sandbox["phase"], "building image", "{sandbox}");
    let phases = phases_of(&sandbox);
    assert_eq!(names(&phases), ["scheduled", "building image"], "{sandbox}");
    assert_eq!(phases[1].1, "failed");
    assert!(
        sandbox["phases"][1]["error"]
            .as_str()
            .unwrap()
            .contains("exited with 3"),
        "{sandbox}"
    );
    let events = events_of(fleet, &id).await;
    assert!(
        phase_steps(&events).contains(&"building image:failed".to_owned()),
        "{events:?}"
    );
    id
}

#[tokio::test]
async fn the_mock_builds_a_template_once_and_reuses_it() {
    let fleet = TestFleet::builder().workers(1).start().await;
    a_template_builds_once_per_content(&fleet, None, "mock").await;
    a_failed_build_leaves_the_sandbox_in_error(&fleet, None).await;
    // the mock cannot install packages, and says so at the phase
    let (status, _) = fleet
        .api
        .post("/templates", json!({"name": "pkgs", "packages": ["git"]}))
        .await;
    assert_eq!(status, 201);
    let (status, err) = fleet
        .api
        .post("/sandboxes", json!({"template": "pkgs"}))
        .await;
    assert_eq!(status, 400, "{err}");
    assert!(
        err["message"]
            .as_str()
            .unwrap()
            .contains("installs no packages"),
        "{err}"
    );
}

#[tokio::test]
async fn a_create_answered_early_is_followed_live_on_its_event_stream() {
    let fleet = TestFleet::builder()
        .workers(1)
        .worker(|config| config.listen = None)
        .start()
        .await;
    let api = &fleet.api;
    let (status, _) = api
        .post(
            "/templates",
            json!({"name": "slow", "on_create": "mkdir -p /etc && echo hi > /etc/hi", "on_start": "sleep 1"}),
        )
        .await;
    assert_eq!(status, 201);
    let (status, placed) = api
        .send(
            api.request(reqwest::Method::POST, "/sandboxes")
                .header("Prefer", "respond-async")
                .json(&json!({"template": "slow"})),
        )
        .await;
    assert_eq!(status, 202, "{placed}");
    assert_eq!(placed["state"], "creating", "{placed}");
    assert_eq!(placed["phase"], "scheduled", "{placed}");
    let id = id_of(&placed);

    // follow the stream until ready: each phase starts before it ends, in order
    let response = api
        .request(reqwest::Method::GET, &format!("/sandboxes/{id}/events"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let mut body = response;
    let mut text = String::new();
    let mut events = Vec::new();
    let followed = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(chunk) = body.chunk().await.unwrap() {
            text.push_str(&String::from_utf8_lossy(&chunk));
            while let Some(end) = text.find('\n') {
                let line: String = text.drain(..=end).collect();
                let event: Value = serde_json::from_str(line.trim()).unwrap();
                let ready = event["phase"] == "ready" && event["status"] == "succeeded";
                events.push(event);
                if ready {
                    return;
                }
            }
        }
        panic!("the stream ended before ready");
    })
    .await;
    assert!(followed.is_ok(), "not ready in 30 s: {events:?}");
    let steps = phase_steps(&events);
    assert_eq!(
        steps,
        [
            "scheduled:started",
            "scheduled:succeeded",
            "building image:started",
            "building image:succeeded",
            "creating:started",
            "creating:succeeded",
            "on_start:started",
            "on_start:succeeded",
            "ready:started",
            "ready:succeeded"
        ],
        "{events:?}"
    );
    let on_start = events
        .iter()
        .find(|e| e["phase"] == "on_start" && e["status"] == "succeeded")
        .unwrap();
    assert!(
        on_start["duration_ms"].as_u64().unwrap() >= 1000,
        "{on_start}"
    );
    let (_, sandbox) = api.get(&format!("/sandboxes/{id}")).await;
    assert_eq!(
        (sandbox["state"].as_str(), sandbox["phase"].as_str()),
        (Some("running"), Some("ready"))
    );

    // followed by default until the create settled: a stream of a ready sandbox ends
    // after what happened
    let settled = tokio::time::timeout(
        Duration::from_secs(10),
        api.request(reqwest::Method::GET, &format!("/sandboxes/{id}/events"))
            .send()
            .await
            .unwrap()
            .text(),
    )
    .await
    .expect("the stream of a settled create ends")
    .unwrap();
    let settled: Vec<Value> = settled
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(phase_steps(&settled), steps, "{settled:?}");
    assert_eq!(settled.last().unwrap()["state"], "running", "{settled:?}");

    // follow=true: until the sandbox is destroyed
    let stream = api
        .request(
            reqwest::Method::GET,
            &format!("/sandboxes/{id}/events?follow=true"),
        )
        .send()
        .await
        .unwrap();
    let (status, _) = api.delete(&format!("/sandboxes/{id}")).await;
    assert_eq!(status, 200);
    let rest = tokio::time::timeout(Duration::from_secs(10), stream.text())
        .await
        .expect("the stream ends once the sandbox is destroyed")
        .unwrap();
    assert!(
        rest.trim_end().ends_with(r#""state":"destroyed"}"#)
            || rest.contains(r#""state":"destroyed""#),
        "{rest}"
    );

    // a refused create is still the answer, not a 202
    let (status, err) = api
        .send(
            api.request(reqwest::Method::POST, "/sandboxes")
                .header("Prefer", "respond-async")
                .json(&json!({"template": "no-such-template"})),
        )
        .await;
    assert_eq!(status, 400, "{err}");
    let (status, _) = api.get("/sandboxes/sbx-0000000000000000/events").await;
    assert_eq!(status, 404);
}

async fn built_images(engine: &Docker, tags: &[String]) -> Vec<String> {
    let options = ListImagesOptions {
        filters: Some(HashMap::from([(
            "label".to_owned(),
            vec!["berth.built".to_owned()],
        )])),
        ..Default::default()
    };
    let mut found: Vec<String> = engine
        .list_images(Some(options))
        .await
        .unwrap()
        .into_iter()
        .flat_map(|image| image.repo_tags)
        .filter(|tag| tags.contains(tag))
        .collect();
    found.sort();
    found
}

async fn build_containers(engine: &Docker, worker_id: &str) -> usize {
    let options = ListContainersOptions {
        all: true,
        filters: Some(HashMap::from([(
            "label".to_owned(),
            vec![
                "berth.built".to_owned(),
                format!("berth.worker={worker_id}"),
            ],
        )])),
        ..Default::default()
    };
    engine.list_containers(Some(options)).await.unwrap().len()
}

#[tokio::test]
async fn docker_builds_a_template_once_and_reuses_it() {
    let Some(docker) = docker_or_skip("image_builds").await else {
        return;
    };
    let worker_id = unique_worker_id("build");
    let _cleanup = DockerCleanup::new(&docker, &[&worker_id]);
    let fleet = TestFleet::builder()
        .docker(docker)
        .worker_ids(&[&worker_id])
        .start()
        .await;
    let engine = Docker::connect_with_unix_defaults().expect("docker client");
    // the worker id in the script makes this run's images its own
    let tags = a_template_builds_once_per_content(&fleet, None, &worker_id).await;
    let mut sorted = tags.clone();
    sorted.sort();
    assert_eq!(
        built_images(&engine, &tags).await,
        sorted,
        "one image for each content, as `docker images berth/built` lists them"
    );
    // the built image runs what its base runs, not the build's script
    let base = engine
        .inspect_image(TEST_IMAGE)
        .await
        .unwrap()
        .config
        .unwrap();
    let built = engine
        .inspect_image(&tags[0])
        .await
        .unwrap()
        .config
        .unwrap();
    assert_eq!(
        (built.entrypoint.unwrap_or_default(), built.cmd),
        (base.entrypoint.unwrap_or_default(), base.cmd)
    );
    assert!(built.labels.unwrap_or_default().contains_key("berth.built"));
    a_failed_build_leaves_the_sandbox_in_error(&fleet, None).await;
    assert_eq!(
        build_containers(&engine, &worker_id).await,
        0,
        "no build container left"
    );
    // the failed sandbox holds nothing on the worker either
    eventually(
        "the failed sandbox's container to go",
        Duration::from_secs(20),
        || async {
            let options = ListContainersOptions {
                all: true,
                filters: Some(HashMap::from([(
                    "label".to_owned(),
                    vec![format!("berth.worker={worker_id}")],
                )])),
                ..Default::default()
            };
            engine
                .list_containers(Some(options))
                .await
                .unwrap()
                .is_empty()
                .then_some(())
        },
    )
    .await;
    for tag in tags {
        let _ = engine
            .remove_image(&tag, None::<RemoveImageOptions>, None)
            .await;
    }
}
