//! Stop and start (`POST /api/v1/sandboxes/{id}/stop`, `/start`, gRPC `Stop`/`Start`):
//! a file written in `/workspace` survives; a stopped sandbox refuses commands, files
//! and ports with 409 saying it is stopped; its running commands and servers end;
//! start runs the template's `on_start` again; a stopped sandbox can be destroyed and
//! keeps its lease. Mock sandboxes on a listening and a dial-out worker, and a docker
//! one (skipped visibly without an engine).

use std::time::Duration;

use berth_proto::v1 as pb;
use berth_proto::v1::sandboxes_client::SandboxesClient;
use berth_testkit::docker::{DockerCleanup, docker_or_skip, unique_worker_id};
use berth_testkit::{TestFleet, api_channel, id_of, keyed};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

async fn post(fleet: &TestFleet, path: &str) -> (u16, Value) {
    fleet.api.post(path, json!({})).await
}

/// The must-show on any fleet: a file survives stop and start, and on_start runs at
/// each start.
async fn a_file_survives_stop_and_start(fleet: &TestFleet, image: Option<&str>) {
    let api = &fleet.api;
    let mut template = json!({"name": "resumable",
        "on_start": "mkdir -p /workspace/log && echo started >> /workspace/log/starts"});
    if let Some(image) = image {
        template["image"] = json!(image);
    }
    let (status, body) = api.post("/templates", template).await;
    assert_eq!(status, 201, "{body}");
    let sandbox = api
        .create_sandbox(json!({"template": "resumable", "ttl": "15m"}))
        .await;
    let id = id_of(&sandbox);
    let (status, out) = api
        .exec(
            &id,
            json!({"command": "echo kept across a stop > /workspace/notes.txt"}),
        )
        .await;
    assert_eq!(status, 200, "{out}");

    let (status, stopped) = post(fleet, &format!("/sandboxes/{id}/stop")).await;
    assert_eq!(
        (status, stopped["state"].as_str()),
        (200, Some("stopped")),
        "{stopped}"
    );
    // stopping again is no error
    let (status, again) = post(fleet, &format!("/sandboxes/{id}/stop")).await;
    assert_eq!(
        (status, again["state"].as_str()),
        (200, Some("stopped")),
        "{again}"
    );
    let (_, view) = api.get(&format!("/sandboxes/{id}")).await;
    assert_eq!(view["state"], "stopped");
    assert!(
        view["generation"].as_i64().unwrap() > 0,
        "the lease is kept: {view}"
    );

    // what needs it running is refused, saying so
    let (status, err) = api.exec(&id, json!({"command": "true"})).await;
    assert_eq!(
        (status, err["code"].as_str()),
        (409, Some("CONFLICT")),
        "{err}"
    );
    assert!(
        err["message"]
            .as_str()
            .unwrap()
            .contains("is stopped; start it with `berth sandbox start"),
        "{err}"
    );
    let (status, err) = api
        .get(&format!("/sandboxes/{id}/files?path=/workspace/notes.txt"))
        .await;
    assert_eq!(status, 409, "{err}");
    // the sandbox list shows it, stopped
    let (_, listed) = api.get("/sandboxes").await;
    assert!(
        listed
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["id"] == id.as_str() && s["state"] == "stopped"),
        "{listed}"
    );

    let (status, started) = post(fleet, &format!("/sandboxes/{id}/start")).await;
    assert_eq!(
        (status, started["state"].as_str()),
        (200, Some("running")),
        "{started}"
    );
    let (status, out) = api
        .exec(
            &id,
            json!({"command": "cat /workspace/notes.txt /workspace/log/starts"}),
        )
        .await;
    assert_eq!(status, 200, "{out}");
    assert_eq!(
        out["stdout"], "kept across a stop\nstarted\nstarted\n",
        "the file survived, and on_start ran at create and at start: {out}"
    );
    // starting a running sandbox is no error and runs nothing again
    let (status, _) = post(fleet, &format!("/sandboxes/{id}/start")).await;
    assert_eq!(status, 200);

    // a stopped sandbox can be destroyed
    let (status, _) = post(fleet, &format!("/sandboxes/{id}/stop")).await;
    assert_eq!(status, 200);
    let (status, body) = api.delete(&format!("/sandboxes/{id}")).await;
    assert_eq!(status, 200, "{body}");
    let (status, err) = post(fleet, &format!("/sandboxes/{id}/start")).await;
    assert_eq!(status, 404, "{err}");
}

async fn mock_fleet(dial_out: bool) -> TestFleet {
    TestFleet::builder()
        .workers(1)
        .worker(move |config| {
            if dial_out {
                config.listen = None;
            }
        })
        .start()
        .await
}

#[tokio::test]
async fn a_file_survives_stop_and_start_on_a_listening_worker() {
    let fleet = mock_fleet(false).await;
    a_file_survives_stop_and_start(&fleet, None).await;
    fleet.stop().await;
}

#[tokio::test]
async fn a_file_survives_stop_and_start_on_a_dial_out_worker() {
    let fleet = mock_fleet(true).await;
    a_file_survives_stop_and_start(&fleet, None).await;
    fleet.stop().await;
}

#[tokio::test]
async fn a_stop_ends_commands_and_servers_and_start_fails_cleanly() {
    let fleet = mock_fleet(false).await;
    let api = &fleet.api;
    let id = id_of(&api.create_sandbox(json!({})).await);
    // a server, and a command that would outlive the test
    let (status, out) = api.exec(&id, json!({"command": "serve --port 8000"})).await;
    assert_eq!(status, 200, "{out}");
    let sleeper = {
        let api = api.clone();
        let id = id.clone();
        tokio::spawn(async move { api.exec(&id, json!({"command": "sleep 600"})).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (status, _) = post(&fleet, &format!("/sandboxes/{id}/stop")).await;
    assert_eq!(status, 200);
    let (status, ended) = tokio::time::timeout(Duration::from_secs(10), sleeper)
        .await
        .expect("the stop ended the running command")
        .unwrap();
    assert_ne!(
        (status, ended["exit_code"].as_i64()),
        (200, Some(0)),
        "the command did not finish normally: {ended}"
    );
    // after a start the old server is gone: its port is free to serve again
    let (status, _) = post(&fleet, &format!("/sandboxes/{id}/start")).await;
    assert_eq!(status, 200);
    let (_, out) = api.exec(&id, json!({"command": "serve --port 8000"})).await;
    assert_eq!(
        out["exit_code"], 0,
        "the port is free again after the stop: {out}"
    );

    // an on_start that fails at a start leaves the sandbox stopped, saying why
    let (status, _) = api
        .post(
            "/templates",
            json!({"name": "flaky", "on_start": "cat /workspace/fail-next && exit 7 || true"}),
        )
        .await;
    assert_eq!(status, 201);
    let flaky = id_of(&api.create_sandbox(json!({"template": "flaky"})).await);
    let (status, _) = api
        .exec(
            &flaky,
            json!({"command": "echo broken > /workspace/fail-next"}),
        )
        .await;
    assert_eq!(status, 200);
    let (status, _) = post(&fleet, &format!("/sandboxes/{flaky}/stop")).await;
    assert_eq!(status, 200);
    let (status, err) = post(&fleet, &format!("/sandboxes/{flaky}/start")).await;
    assert_eq!(status, 400, "{err}");
    assert!(
        err["message"]
            .as_str()
            .unwrap()
            .contains("on_start exited with 7"),
        "{err}"
    );
    let (_, view) = api.get(&format!("/sandboxes/{flaky}")).await;
    assert_eq!(view["state"], "stopped", "{view}");
    let (status, _) = api.delete(&format!("/sandboxes/{flaky}")).await;
    assert_eq!(status, 200);

    // a sandbox that is neither running nor stopped
    let (status, _) = api
        .post(
            "/templates",
            json!({"name": "broken", "on_start": "exit 3"}),
        )
        .await;
    assert_eq!(status, 201);
    let (status, err) = api.post("/sandboxes", json!({"template": "broken"})).await;
    assert_eq!(status, 400, "{err}");
    let failed = err["sandbox_id"].as_str().unwrap();
    let (status, err) = post(&fleet, &format!("/sandboxes/{failed}/stop")).await;
    assert_eq!(status, 409, "{err}");
    assert!(
        err["message"].as_str().unwrap().contains("is error"),
        "{err}"
    );

    // gRPC: Stop and Start answer the sandbox; a call on a stopped one is
    // FAILED_PRECONDITION with the CONFLICT code
    let channel = api_channel(&fleet.cp.api_url()).await;
    let mut client = SandboxesClient::new(channel);
    let stopped = client
        .stop(keyed(pb::SandboxRef { id: id.clone() }, &api.key))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(stopped.state, "stopped");
    let err = client
        .exec(keyed(
            pb::ExecRequest {
                sandbox_id: id.clone(),
                command: "true".into(),
                ..Default::default()
            },
            &api.key,
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err:?}");
    assert!(err.message().contains("is stopped"), "{err:?}");
    let started = client
        .start(keyed(pb::SandboxRef { id: id.clone() }, &api.key))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(started.state, "running");
    fleet.stop().await;
}

async fn docker_keeps_a_file_across_stop_and_start(dial_out: bool) {
    let test = "docker_keeps_a_file_across_stop_and_start";
    let Some(docker) = docker_or_skip(test).await else {
        return;
    };
    let worker_id = unique_worker_id("power");
    let _cleanup = DockerCleanup::new(&docker, &[&worker_id]);
    let builder = TestFleet::builder()
        .docker(docker.clone())
        .worker_ids(&[&worker_id]);
    let builder = if dial_out {
        builder.worker(|config| config.listen = None)
    } else {
        builder
    };
    let fleet = builder.start().await;
    a_file_survives_stop_and_start(&fleet, None).await;

    // the container is stopped for real (not merely refused), and running again
    let id = id_of(&fleet.api.create_sandbox(json!({"ttl": "10m"})).await);
    let engine = bollard::Docker::connect_with_unix_defaults().expect("docker client");
    let running = |docker: &bollard::Docker, id: String| {
        let docker = docker.clone();
        async move {
            let inspect = docker
                .inspect_container(&format!("berth-{id}"), None)
                .await
                .unwrap();
            inspect.state.and_then(|s| s.running).unwrap_or(false)
        }
    };
    assert!(running(&engine, id.clone()).await);
    let (status, _) = post(&fleet, &format!("/sandboxes/{id}/stop")).await;
    assert_eq!(status, 200);
    assert!(
        !running(&engine, id.clone()).await,
        "the container is stopped"
    );
    let (status, _) = post(&fleet, &format!("/sandboxes/{id}/start")).await;
    assert_eq!(status, 200);
    assert!(
        running(&engine, id.clone()).await,
        "the container runs again"
    );
    fleet.stop().await;
}

#[tokio::test]
async fn docker_keeps_a_file_across_stop_and_start_on_a_listening_worker() {
    docker_keeps_a_file_across_stop_and_start(false).await;
}

#[tokio::test]
async fn docker_keeps_a_file_across_stop_and_start_on_a_dial_out_worker() {
    docker_keeps_a_file_across_stop_and_start(true).await;
}

#[tokio::test]
async fn a_stopped_sandbox_outlives_a_control_plane_restart_and_expires_like_any() {
    let fleet = TestFleet::builder()
        .workers(1)
        .reap_interval(Duration::from_millis(200))
        .start()
        .await;
    let api = fleet.api.clone();
    let kept = id_of(&api.create_sandbox(json!({"ttl": "1h"})).await);
    let (status, _) = api
        .exec(
            &kept,
            json!({"command": "echo still here > /workspace/kept"}),
        )
        .await;
    assert_eq!(status, 200);
    let short = id_of(&api.create_sandbox(json!({"ttl": "2s"})).await);
    for id in [&kept, &short] {
        let (status, _) = post(&fleet, &format!("/sandboxes/{id}/stop")).await;
        assert_eq!(status, 200);
    }
    // the TTL runs on while stopped: the reaper destroys it
    berth_testkit::eventually(
        "the expired stopped sandbox is destroyed",
        Duration::from_secs(20),
        || async { (api.get(&format!("/sandboxes/{short}")).await.0 == 404).then_some(()) },
    )
    .await;

    // the store holds `stopped`; heartbeats keep its lease through a restart (on the
    // same mesh address, which the worker keeps dialling)
    let mesh = fleet.cp.mesh_addr;
    let fleet = fleet
        .restart_control_plane_after(Duration::from_millis(200), move |config| {
            config.mesh_listen = mesh;
        })
        .await;
    fleet.wait_online().await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (_, view) = fleet.api.get(&format!("/sandboxes/{kept}")).await;
    assert_eq!(view["state"], "stopped", "{view}");
    let (status, started) = post(&fleet, &format!("/sandboxes/{kept}/start")).await;
    assert_eq!(status, 200, "{started}");
    let (_, out) = fleet
        .api
        .exec(&kept, json!({"command": "cat /workspace/kept"}))
        .await;
    assert_eq!(out["stdout"], "still here\n", "{out}");
    fleet.stop().await;
}

/// The state `id` is in.
async fn state_of(api: &berth_testkit::Api, id: &str) -> String {
    let (status, view) = api.get(&format!("/sandboxes/{id}")).await;
    assert_eq!(status, 200, "{view}");
    view["state"].as_str().unwrap_or_default().to_owned()
}

/// `auto_stop`: a sandbox nobody uses is stopped once its period (plus the activity
/// interval's slack) has passed, never before; execs, an attached session and an open
/// port connection each keep one running; a sandbox without it runs on; a start makes
/// the period count from the start, with `on_start` run again.
#[tokio::test]
async fn an_idle_sandbox_is_stopped_and_use_keeps_one_running() {
    let fleet = TestFleet::builder()
        .workers(1)
        .reap_interval(Duration::from_millis(200))
        .control_plane(|config| config.sandboxes.activity_interval = Duration::from_secs(1))
        .start()
        .await;
    let api = &fleet.api;
    let (status, body) = api
        .post(
            "/templates",
            json!({"name": "napper", "auto_stop": "3s",
                   "on_start": "echo up >> /workspace/starts"}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["auto_stop"], "3s", "{body}");
    // refused like any bad duration, on a create and in a template
    let (status, err) = api.post("/sandboxes", json!({"auto_stop": "soon"})).await;
    assert_eq!(status, 400, "{err}");
    assert!(
        err["message"].as_str().unwrap().contains("auto_stop"),
        "{err}"
    );
    let (status, err) = api
        .post("/templates", json!({"name": "bad", "auto_stop": "-1s"}))
        .await;
    assert_eq!(status, 400, "{err}");

    let created = std::time::Instant::now();
    let idle = api
        .create_sandbox(json!({"template": "napper", "ttl": "15m"}))
        .await;
    assert_eq!(idle["auto_stop"], "3s", "from the template: {idle}");
    assert!(idle["last_active_at"].is_string(), "{idle}");
    let idle = id_of(&idle);
    let with_auto_stop = json!({"auto_stop": "3s", "ttl": "15m"});
    let busy = id_of(&api.create_sandbox(with_auto_stop.clone()).await);
    let attached = id_of(&api.create_sandbox(with_auto_stop.clone()).await);
    let tunnelled = id_of(&api.create_sandbox(with_auto_stop).await);
    let never = api.create_sandbox(json!({"ttl": "15m"})).await;
    assert!(never.get("auto_stop").is_none(), "{never}");
    let never = id_of(&never);
    let (status, out) = api
        .exec(&tunnelled, json!({"command": "serve --port 8000"}))
        .await;
    assert_eq!(status, 200, "{out}");

    // a session attached, typing nothing
    let session = berth_testkit::GrpcSession::open(
        &fleet.cp.api_url(),
        &fleet.cp.admin_key,
        pb::SessionOpen {
            sandbox_id: attached.clone(),
            command: "cat".into(),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    // a port connection open, carrying nothing
    let mut request = format!(
        "ws://{}/api/v1/sandboxes/{tunnelled}/ports/8000/ws",
        fleet.cp.api_addr
    )
    .into_client_request()
    .unwrap();
    request
        .headers_mut()
        .insert("X-API-Key", fleet.cp.admin_key.parse().unwrap());
    let (tunnel, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    if created.elapsed() < Duration::from_secs(3) {
        assert_eq!(state_of(api, &idle).await, "running", "never early");
    }

    // execs in one, every half second, for well past the period and its slack
    while created.elapsed() < Duration::from_secs(9) {
        let (status, out) = api.exec(&busy, json!({"command": "true"})).await;
        assert_eq!(status, 200, "in use, so running: {out}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    berth_testkit::eventually(
        "the idle sandbox is stopped",
        Duration::from_secs(20),
        || async { (state_of(api, &idle).await == "stopped").then_some(()) },
    )
    .await;
    for id in [&busy, &attached, &tunnelled, &never] {
        assert_eq!(
            state_of(api, id).await,
            "running",
            "{id} is in use or has no auto_stop"
        );
    }
    let (_, idle_view) = api.get(&format!("/sandboxes/{idle}")).await;
    let (_, busy_view) = api.get(&format!("/sandboxes/{busy}")).await;
    assert!(
        busy_view["last_active_at"].as_str() > idle_view["last_active_at"].as_str(),
        "the busy one was used later: {busy_view} {idle_view}"
    );

    // nobody uses them any more: each is stopped; the one without auto_stop runs on
    drop(session);
    drop(tunnel);
    for id in [&busy, &attached, &tunnelled] {
        berth_testkit::eventually(
            "an idle sandbox is stopped",
            Duration::from_secs(20),
            || async { (state_of(api, id).await == "stopped").then_some(()) },
        )
        .await;
    }
    assert_eq!(state_of(api, &never).await, "running");

    // started again: running, on_start ran again, and idle from the start on
    let (status, view) = post(&fleet, &format!("/sandboxes/{idle}/start")).await;
    assert_eq!(
        (status, view["state"].as_str()),
        (200, Some("running")),
        "{view}"
    );
    let started = std::time::Instant::now();
    let (status, out) = api
        .exec(&idle, json!({"command": "cat /workspace/starts"}))
        .await;
    assert_eq!(
        (status, out["stdout"].as_str()),
        (200, Some("up\nup\n")),
        "{out}"
    );
    if started.elapsed() < Duration::from_secs(3) {
        assert_eq!(state_of(api, &idle).await, "running", "never early");
    }
    berth_testkit::eventually(
        "the started sandbox is stopped again once idle",
        Duration::from_secs(20),
        || async { (state_of(api, &idle).await == "stopped").then_some(()) },
    )
    .await;
    fleet.stop().await;
}
