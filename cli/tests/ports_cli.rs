//! `berth sandbox port-forward` as a user runs it: the real binary forwards a local
//! port to a port inside the sandbox, and 50 HTTP requests made at once each get
//! their own answer (the server echoes the path it was asked for). Against a mock
//! sandbox on a listening and on a dial-out worker, and against busybox `httpd` in a
//! docker sandbox. Also `sandbox preview-url` and `sandbox ports`.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use berth_testkit::docker::{DockerCleanup, docker_or_skip, unique_worker_id};
use berth_testkit::{TestFleet, id_of};
use serde_json::json;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

const CONCURRENT: usize = 50;

fn berth(fleet: &TestFleet, dir: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_berth"));
    command
        .current_dir(dir)
        .env("BERTH_API_URL", fleet.cp.api_url())
        .env("BERTH_API_KEY", &fleet.api.key)
        .env("BERTH_CLIENT_CONFIG", dir.join("client.yaml"))
        .env("NO_COLOR", "1")
        .env_remove("BERTH_CONTEXT")
        .kill_on_drop(true);
    command
}

/// Starts `port-forward ID :REMOTE` and returns it with the local port it printed.
async fn forward(fleet: &TestFleet, dir: &Path, id: &str, remote: u16) -> (Child, u16) {
    let mut child = berth(fleet, dir)
        .args(["sandbox", "port-forward", id, &format!(":{remote}")])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .expect("port-forward prints where it listens")
        .unwrap()
        .expect("a line");
    // "Forwarding from 127.0.0.1:PORT -> REMOTE"
    assert!(line.ends_with(&format!(" -> {remote}")), "{line}");
    let local = line
        .split_whitespace()
        .nth(2)
        .and_then(|addr| addr.rsplit_once(':'))
        .and_then(|(_, port)| port.parse().ok())
        .unwrap_or_else(|| panic!("no local port in {line:?}"));
    (child, local)
}

/// 50 GETs at once through the forward, each for its own path; every answer must be
/// the one for its request (`check` reads it).
async fn fifty_at_once(local: u16, check: impl Fn(usize, &str) -> bool) {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        // one connection per request: each a stream of its own
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let requests = (0..CONCURRENT).map(|i| {
        let client = client.clone();
        async move {
            let response = client
                .get(format!("http://127.0.0.1:{local}/r{i}"))
                .send()
                .await
                .unwrap_or_else(|err| panic!("request {i}: {err}"));
            (
                i,
                response.status().as_u16(),
                response.text().await.unwrap(),
            )
        }
    });
    let answers = futures_join_all(requests).await;
    assert_eq!(answers.len(), CONCURRENT);
    for (i, status, body) in answers {
        assert_eq!(status, 200, "request {i}: {body}");
        assert!(check(i, &body), "request {i} got another's answer: {body}");
    }
}

/// `futures::future::join_all` without the dependency: every request on its own task.
async fn futures_join_all<F, T>(futures: impl Iterator<Item = F>) -> Vec<T>
where
    F: std::future::Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    let handles: Vec<_> = futures.map(tokio::spawn).collect();
    let mut out = Vec::new();
    for handle in handles {
        out.push(handle.await.unwrap());
    }
    out
}

async fn port_forward_carries_fifty_concurrent_requests_to_a_mock_server(dial_out: bool) {
    let builder = TestFleet::builder()
        .workers(1)
        .control_plane(|config| config.preview_domain = "preview.localhost".into());
    let builder = if dial_out {
        builder.worker(|config| config.listen = None)
    } else {
        builder
    };
    let fleet = builder.start().await;
    let dir = tempfile::tempdir().unwrap();
    let id = id_of(&fleet.api.create_sandbox(json!({"ttl": "10m"})).await);
    let (status, out) = fleet
        .api
        .exec(&id, json!({"command": "serve --port 8000"}))
        .await;
    assert_eq!(status, 200, "{out}");
    let (mut child, local) = forward(&fleet, dir.path(), &id, 8000).await;
    fifty_at_once(local, |i, body| body.contains(&format!("GET /r{i} "))).await;
    child.kill().await.unwrap();

    // a link to the preview URL, and the public ports
    let out = berth(&fleet, dir.path())
        .args(["sandbox", "preview-url", &id, "8000", "--ttl", "5m"])
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let url = String::from_utf8(out.stdout).unwrap();
    assert!(
        url.starts_with(&format!(
            "http://8000-{id}.preview.localhost/?berth_preview_token="
        )),
        "{url}"
    );
    let out = berth(&fleet, dir.path())
        .args(["sandbox", "ports", &id, "--public", "8000"])
        .output()
        .await
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("public ports: 8000"), "{text}");
    fleet.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn port_forward_carries_fifty_concurrent_requests_from_a_listening_worker() {
    port_forward_carries_fifty_concurrent_requests_to_a_mock_server(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn port_forward_carries_fifty_concurrent_requests_from_a_dial_out_worker() {
    port_forward_carries_fifty_concurrent_requests_to_a_mock_server(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn port_forward_carries_fifty_concurrent_requests_to_httpd_in_docker() {
    let Some(docker) = docker_or_skip("port_forward_to_httpd_in_docker").await else {
        return;
    };
    let worker_id = unique_worker_id("pf");
    let _cleanup = DockerCleanup::new(&docker, &[&worker_id]);
    let fleet = TestFleet::builder()
        .docker(docker)
        .worker_ids(&[&worker_id])
        .start()
        .await;
    let dir = tempfile::tempdir().unwrap();
    let id = id_of(&fleet.api.create_sandbox(json!({"ttl": "10m"})).await);
    // one file per request, each naming itself
    let script = format!(
        "mkdir -p /tmp/www && for i in $(seq 0 {}); do echo \"answer $i\" > /tmp/www/r$i; done && httpd -p 8000 -h /tmp/www && echo up",
        CONCURRENT - 1
    );
    let (status, out) = fleet.api.exec(&id, json!({"command": script})).await;
    assert_eq!(
        (status, out["stdout"].as_str()),
        (200, Some("up\n")),
        "{out}"
    );
    let (mut child, local) = forward(&fleet, dir.path(), &id, 8000).await;
    fifty_at_once(local, |i, body| body == format!("answer {i}\n")).await;
    child.kill().await.unwrap();
    fleet.api.delete(&format!("/sandboxes/{id}")).await;
    fleet.stop().await;
}
