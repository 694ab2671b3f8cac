//! The API-level sandbox suite, shared by the mock and docker test files: exec, streams,
//! files, logs, destroy and bad input through a real control plane and real workers
//! over mTLS. A `Flavor` says which provider the workers run and supplies the few
//! commands that differ between the mock's builtins and a real shell.

#![allow(dead_code)]

use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::{Value, json};

use berth_testkit::docker::docker_or_skip;
use berth_testkit::{Api, TestFleet, eventually, id_of};
use berth_worker::DockerConfig;

pub const WAIT: Duration = Duration::from_secs(20);

/// Which provider the fleet's workers run, and whether they listen or dial out.
pub struct Flavor {
    pub docker: Option<DockerConfig>,
    /// The workers listen nowhere: they dial out to the control plane.
    pub dial_out: bool,
}

impl Flavor {
    pub fn mock() -> Self {
        Self {
            docker: None,
            dial_out: false,
        }
    }

    /// Mock workers that dial out.
    pub fn mock_dialing_out() -> Self {
        Self {
            docker: None,
            dial_out: true,
        }
    }

    /// The docker flavor, or `None` (the test is skipped visibly) without an engine.
    pub async fn docker(test: &str) -> Option<Self> {
        Some(Self {
            docker: Some(docker_or_skip(test).await?),
            dial_out: false,
        })
    }

    /// A provider no worker of this fleet offers.
    pub fn other_provider(&self) -> &'static str {
        if self.docker.is_some() {
            "mock"
        } else {
            "docker"
        }
    }

    /// A command printing `count` lines `delay_ms` apart.
    pub fn slow_lines(&self, count: u32, delay_ms: u32) -> String {
        match self.docker {
            None => format!("generate --lines {count} --delay-ms {delay_ms}"),
            Some(_) => format!(
                "for i in $(seq {count}); do echo line $i; sleep {}; done",
                f64::from(delay_ms) / 1000.0
            ),
        }
    }

    /// A command that puts `text` into the sandbox's console log.
    pub fn console(&self, text: &str) -> String {
        match self.docker {
            // the mock logs every exec
            None => format!("echo {text}"),
            Some(_) => format!("echo {text} > /proc/1/fd/1"),
        }
    }

    /// What the console's first line says.
    pub fn start_line(&self) -> &'static str {
        if self.docker.is_some() {
            "started"
        } else {
            "created"
        }
    }

    /// Waits until no command `command` runs in the sandbox any more.
    pub async fn wait_command_gone(&self, api: &Api, id: &str, command: &str) {
        match self.docker {
            // the mock's exec record closes without an exit 0
            None => {
                eventually("the exec record closes", WAIT, || async {
                    let (_, lines) = api.get(&format!("/sandboxes/{id}/logs?lines=50")).await;
                    let lines: Vec<String> = serde_json::from_value(lines).ok()?;
                    lines
                        .iter()
                        .any(|l| l.contains(command) && !l.contains("exit 0"))
                        .then_some(())
                })
                .await;
            }
            Some(_) => {
                eventually("the command is killed", WAIT, || async {
                    let (_, result) = api.exec(id, json!({"command": "ps -o args"})).await;
                    let listing = result["stdout"].as_str()?.to_owned();
                    (!listing.lines().any(|l| l == command)).then_some(())
                })
                .await;
            }
        }
    }
}

/// A control plane and `count` online workers of `flavor` holding up to `max`
/// sandboxes each.
pub async fn fleet(flavor: &Flavor, count: usize, max: u32) -> TestFleet {
    let builder = TestFleet::builder()
        .workers(count)
        .max_sandboxes(max)
        .docker(flavor.docker.clone());
    let builder = if flavor.dial_out {
        builder.worker(|config| config.listen = None)
    } else {
        builder
    };
    builder.start().await
}

/// Reads an NDJSON exec stream, returning each line with the time it arrived.
pub async fn stream_lines(api: &Api, id: &str, body: Value) -> Vec<(Instant, Value)> {
    let response = api
        .request(reqwest::Method::POST, &format!("/sandboxes/{id}/exec"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/x-ndjson");
    let mut body = response.bytes_stream();
    let mut pending = Vec::new();
    let mut lines = Vec::new();
    while let Some(chunk) = body.next().await {
        pending.extend_from_slice(&chunk.unwrap());
        while let Some(end) = pending.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = pending.drain(..=end).collect();
            lines.push((Instant::now(), serde_json::from_slice(&line).unwrap()));
        }
    }
    lines
}

pub async fn exec_answers_stacyvm_shapes(flavor: &Flavor) {
    let fleet = fleet(flavor, 1, 4).await;
    let id = id_of(&fleet.api.create_sandbox(json!({})).await);
    let (status, result) = fleet
        .api
        .exec(&id, json!({"command": "echo", "args": ["a b", "it's"]}))
        .await;
    assert_eq!(status, 200);
    assert_eq!(result["exit_code"], 0);
    assert_eq!(result["stdout"], "a b it's\n");
    assert!(result["duration"].as_str().unwrap().ends_with("ms"));

    let (_, result) = fleet
        .api
        .exec(&id, json!({"command": "echo out; echo err >&2; exit 3"}))
        .await;
    assert_eq!(result["exit_code"], 3);
    assert_eq!(result["stdout"], "out\n");
    assert_eq!(result["stderr"], "err\n");

    let (_, result) = fleet
        .api
        .exec(&id, json!({"command": "no-such-tool"}))
        .await;
    assert_eq!(result["exit_code"], 127);
    assert!(result["stderr"].as_str().unwrap().contains("not found"));

    // argv mode does not interpret shell syntax
    let (_, result) = fleet
        .api
        .exec(
            &id,
            json!({"command": "echo", "args": ["a;", "$HOME"], "mode": "argv"}),
        )
        .await;
    assert_eq!(result["stdout"], "a; $HOME\n");

    let (_, result) = fleet
        .api
        .exec(&id, json!({"command": "pwd", "env": {"X": "1"}}))
        .await;
    assert_eq!(result["stdout"], "/workspace\n");
    let (_, result) = fleet
        .api
        .exec(
            &id,
            json!({"command": "echo $GREETING", "env": {"GREETING": "hi"}}),
        )
        .await;
    assert_eq!(result["stdout"], "hi\n");
    fleet.stop().await;
}

pub async fn stream_chunks_arrive_before_the_command_ends_then_one_exit_line(flavor: &Flavor) {
    let fleet = fleet(flavor, 1, 4).await;
    let id = id_of(&fleet.api.create_sandbox(json!({})).await);
    let lines = stream_lines(
        &fleet.api,
        &id,
        json!({"command": format!("{}; echo done >&2; exit 4", flavor.slow_lines(3, 300)), "stream": true}),
    )
    .await;
    let (first_at, first) = &lines[0];
    assert_eq!(first["stream"], "stdout");
    let (exit_at, exit) = lines.last().unwrap();
    assert_eq!(exit["stream"], "exit");
    assert_eq!(exit["exit_code"], 4);
    assert!(
        *exit_at - *first_at >= Duration::from_millis(400),
        "the first chunk came {:?} before the end",
        *exit_at - *first_at
    );
    let terminal = lines
        .iter()
        .filter(|(_, l)| l["stream"] != "stdout" && l["stream"] != "stderr")
        .count();
    assert_eq!(terminal, 1, "exactly one terminal line");
    let stdout: String = lines
        .iter()
        .filter(|(_, l)| l["stream"] == "stdout")
        .map(|(_, l)| l["data"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(stdout.lines().count(), 3);
    assert!(
        lines
            .iter()
            .any(|(_, l)| l["stream"] == "stderr" && l["data"] == "done\n")
    );

    // a timeout ends the stream with one error line
    let lines = stream_lines(
        &fleet.api,
        &id,
        json!({"command": "sleep 5", "stream": true, "timeout": "200ms"}),
    )
    .await;
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0].1["stream"], "error");
    assert_eq!(lines[0].1["code"], "TIMEOUT");
    fleet.stop().await;
}

pub async fn files_round_trip_binary_and_large_content(flavor: &Flavor) {
    use sha2::{Digest, Sha256};
    let fleet = fleet(flavor, 1, 4).await;
    let id = id_of(&fleet.api.create_sandbox(json!({})).await);
    let files = format!("/sandboxes/{id}/files");

    let (status, body) = fleet
        .api
        .post(&files, json!({"path": "notes/a.txt", "content": "x"}))
        .await;
    assert_eq!(status, 404, "parent missing: {body}");
    fleet
        .api
        .exec(&id, json!({"command": "mkdir -p notes"}))
        .await;
    let (status, body) = fleet
        .api
        .post(
            &files,
            json!({"path": "notes/a.txt", "content": "héllo\n", "mode": "0600"}),
        )
        .await;
    assert_eq!((status, body["status"].clone()), (200, json!("written")));
    let text = fleet
        .api
        .request(reqwest::Method::GET, &format!("{files}?path=notes/a.txt"))
        .send()
        .await
        .unwrap();
    assert_eq!(text.headers()["content-type"], "application/octet-stream");
    assert_eq!(text.text().await.unwrap(), "héllo\n");
    let (_, stat) = fleet
        .api
        .get(&format!("{files}/stat?path=/workspace/notes/a.txt"))
        .await;
    assert_eq!(stat["mode"], "0600");
    assert_eq!(stat["size"], 7);
    assert_eq!(stat["is_dir"], false);

    // binary content with NUL bytes, base64 in JSON and raw through PUT
    let binary: Vec<u8> = (0..=255u8).cycle().take(3000).collect();
    use base64::Engine;
    let encoded = base64::engine::general_purpose::STANDARD.encode(&binary);
    let (status, _) = fleet
        .api
        .post(
            &files,
            json!({"path": "bin.dat", "content": encoded, "encoding": "base64"}),
        )
        .await;
    assert_eq!(status, 200);
    let back = fleet
        .api
        .request(reqwest::Method::GET, &format!("{files}?path=bin.dat"))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(back.as_ref(), binary.as_slice());

    // 100 MB streamed through PUT, no size cap anywhere in the mesh
    let (big, digest) = tokio::task::spawn_blocking(|| {
        let big: Vec<u8> = (0..100 * 1024 * 1024)
            .map(|i: usize| (i % 251) as u8)
            .collect();
        let digest = Sha256::digest(&big);
        (big, digest)
    })
    .await
    .unwrap();
    let (status, body) = fleet
        .api
        .send(
            fleet
                .api
                .request(
                    reqwest::Method::PUT,
                    &format!("{files}?path=big.bin&mode=0640"),
                )
                .body(big),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["size"], 100 * 1024 * 1024);
    let mut download = fleet
        .api
        .request(reqwest::Method::GET, &format!("{files}?path=big.bin"))
        .send()
        .await
        .unwrap()
        .bytes_stream();
    let mut hasher = Sha256::new();
    let mut size = 0;
    while let Some(chunk) = download.next().await {
        let chunk = chunk.unwrap();
        size += chunk.len();
        hasher.update(&chunk);
    }
    assert_eq!(size, 100 * 1024 * 1024);
    assert_eq!(hasher.finalize(), digest);

    // list, glob, move, chmod, delete
    let (_, list) = fleet
        .api
        .get(&format!("{files}/list?path=/workspace"))
        .await;
    let names: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        vec![
            "/workspace/big.bin",
            "/workspace/bin.dat",
            "/workspace/notes"
        ]
    );
    let (_, globbed) = fleet
        .api
        .get(&format!("{files}/glob?pattern=**/*.txt"))
        .await;
    assert_eq!(globbed, json!(["/workspace/notes/a.txt"]));
    let (status, body) = fleet
        .api
        .post(
            &format!("{files}/move"),
            json!({"old_path": "notes", "new_path": "moved"}),
        )
        .await;
    assert_eq!((status, body["status"].clone()), (200, json!("moved")));
    let (status, body) = fleet
        .api
        .post(
            &format!("{files}/chmod"),
            json!({"path": "moved/a.txt", "mode": "0755"}),
        )
        .await;
    assert_eq!(
        (status, body["status"].clone()),
        (200, json!("chmod applied"))
    );
    let (_, stat) = fleet
        .api
        .get(&format!("{files}/stat?path=moved/a.txt"))
        .await;
    assert_eq!(stat["mode"], "0755");
    let (status, body) = fleet.api.delete(&format!("{files}?path=moved")).await;
    assert_eq!(status, 400, "a non-empty dir needs recursive: {body}");
    let (status, body) = fleet
        .api
        .delete(&format!("{files}?path=moved&recursive=true"))
        .await;
    assert_eq!((status, body["status"].clone()), (200, json!("deleted")));
    let (status, body) = fleet.api.get(&format!("{files}/stat?path=moved")).await;
    assert_eq!((status, body["code"].clone()), (404, json!("NOT_FOUND")));
    fleet.stop().await;
}

pub async fn bad_paths_and_bad_requests_are_refused_clearly(flavor: &Flavor) {
    let fleet = fleet(flavor, 1, 4).await;
    let id = id_of(&fleet.api.create_sandbox(json!({})).await);
    let files = format!("/sandboxes/{id}/files");
    for path in ["../etc/passwd", "/workspace/../../etc/shadow"] {
        let (status, body) = fleet.api.get(&format!("{files}?path={path}")).await;
        assert_eq!(status, 400, "{path}: {body}");
        assert!(body["message"].as_str().unwrap().contains(".."), "{body}");
        let (status, _) = fleet
            .api
            .post(&files, json!({"path": path, "content": "x"}))
            .await;
        assert_eq!(status, 400);
    }
    let (status, body) = fleet.api.get(&format!("{files}?path=")).await;
    assert_eq!((status, body["code"].clone()), (400, json!("BAD_REQUEST")));
    let (status, _) = fleet
        .api
        .post(
            &files,
            json!({"path": "x", "content": "!!", "encoding": "base64"}),
        )
        .await;
    assert_eq!(status, 400);
    let (status, _) = fleet
        .api
        .post(
            &format!("{files}/chmod"),
            json!({"path": "x", "mode": "99999"}),
        )
        .await;
    assert_eq!(status, 400);
    let (status, body) = fleet
        .api
        .exec(&id, json!({"command": "echo", "mode": "magic"}))
        .await;
    assert_eq!((status, body["code"].clone()), (400, json!("BAD_REQUEST")));
    let (status, _) = fleet.api.exec(&id, json!({"command": ""})).await;
    assert_eq!(status, 400);
    let (status, body) = fleet
        .api
        .exec(&id, json!({"command": "sleep 5", "timeout": "200ms"}))
        .await;
    assert_eq!(
        (status, body["code"].clone()),
        (408, json!("TIMEOUT")),
        "{body}"
    );
    let (status, _) = fleet
        .api
        .send(
            fleet
                .api
                .request(reqwest::Method::POST, &format!("/sandboxes/{id}/exec"))
                .body("{not json"),
        )
        .await;
    assert_eq!(status, 400);

    for body in [
        json!({"ttl": "forever"}),
        json!({"ttl": "-5m"}),
        json!({"ttl": "9999h"}),
        json!({"memory_mb": 100_000_000}),
        json!({"memory_mb": -1}),
        json!({"vcpus": 100_000}),
        json!({"image": "has space"}),
    ] {
        let (status, answer) = fleet.api.post("/sandboxes", body.clone()).await;
        assert_eq!(status, 400, "{body} -> {answer}");
        assert_eq!(answer["code"], "BAD_REQUEST");
    }
    let (_, list) = fleet.api.get("/sandboxes").await;
    assert_eq!(
        list.as_array().unwrap().len(),
        1,
        "refused creates leave nothing behind"
    );
    fleet.stop().await;
}

pub async fn unknown_and_destroyed_sandboxes_are_404_and_destroy_races_act_once(flavor: &Flavor) {
    let fleet = fleet(flavor, 1, 2).await;
    for (status, body) in [
        fleet.api.get("/sandboxes/sbx-nope").await,
        fleet.api.delete("/sandboxes/sbx-nope").await,
        fleet.api.exec("sbx-nope", json!({"command": "true"})).await,
        fleet.api.get("/sandboxes/sbx-nope/files/list").await,
        fleet.api.get("/sandboxes/sbx-nope/logs").await,
    ] {
        assert_eq!(status, 404, "{body}");
        assert_eq!(body["code"], "NOT_FOUND");
    }

    let id = id_of(&fleet.api.create_sandbox(json!({})).await);
    let path = format!("/sandboxes/{id}");
    let (a, b) = tokio::join!(fleet.api.delete(&path), fleet.api.delete(&path));
    let mut statuses = [a.0, b.0];
    statuses.sort();
    assert_eq!(statuses[0], 200, "{a:?} {b:?}");
    assert!(matches!(statuses[1], 404 | 409), "{a:?} {b:?}");
    let ok = if a.0 == 200 { &a.1 } else { &b.1 };
    assert_eq!(ok["status"], "destroyed");
    for (status, body) in [
        fleet.api.get(&path).await,
        fleet.api.delete(&path).await,
        fleet.api.exec(&id, json!({"command": "true"})).await,
    ] {
        assert_eq!(
            (status, body["code"].clone()),
            (404, json!("NOT_FOUND")),
            "{body}"
        );
    }
    // the slot came back: the worker holds 2 and takes 2 again
    for _ in 0..2 {
        fleet.api.create_sandbox(json!({})).await;
    }
    let (status, body) = fleet.api.post("/sandboxes", json!({})).await;
    assert_eq!(
        (status, body["code"].clone()),
        (429, json!("RESOURCE_LIMIT")),
        "{body}"
    );
    assert!(body["message"].as_str().unwrap().contains("capacity"));
    let (status, body) = fleet
        .api
        .post("/sandboxes", json!({"provider": flavor.other_provider()}))
        .await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains(flavor.other_provider())
    );
    fleet.stop().await;
}

pub async fn logs_record_lifecycle_and_execs_and_can_be_followed(flavor: &Flavor) {
    let fleet = fleet(flavor, 1, 4).await;
    let id = id_of(&fleet.api.create_sandbox(json!({})).await);
    fleet
        .api
        .exec(&id, json!({"command": flavor.console("first")}))
        .await;
    let (status, lines) = fleet
        .api
        .get(&format!("/sandboxes/{id}/logs?lines=10"))
        .await;
    assert_eq!(status, 200);
    let lines: Vec<String> = serde_json::from_value(lines).unwrap();
    assert!(
        lines.iter().any(|l| l.contains(flavor.start_line())),
        "{lines:?}"
    );
    assert!(lines.iter().any(|l| l.contains("first")), "{lines:?}");

    let response = fleet
        .api
        .request(
            reqwest::Method::GET,
            &format!("/sandboxes/{id}/logs?lines=0&follow=true"),
        )
        .send()
        .await
        .unwrap();
    let mut body = response.bytes_stream();
    fleet
        .api
        .exec(&id, json!({"command": flavor.console("second")}))
        .await;
    let mut seen = String::new();
    let found = tokio::time::timeout(WAIT, async {
        while let Some(chunk) = body.next().await {
            seen.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
            if seen.contains("second") {
                return true;
            }
        }
        false
    })
    .await
    .unwrap_or(false);
    drop(body);
    assert!(found, "followed log: {seen}");
    fleet.stop().await;
}

pub async fn a_client_that_disconnects_mid_stream_leaves_no_command_running(flavor: &Flavor) {
    let fleet = fleet(flavor, 1, 4).await;
    let id = id_of(&fleet.api.create_sandbox(json!({})).await);
    let response = fleet
        .api
        .request(reqwest::Method::POST, &format!("/sandboxes/{id}/exec"))
        .json(&json!({"command": "echo started; sleep 30; touch finished", "stream": true}))
        .send()
        .await
        .unwrap();
    let mut body = response.bytes_stream();
    let first = body.next().await.unwrap().unwrap();
    assert!(String::from_utf8_lossy(&first).contains("started"));
    drop(body);
    // the command is stopped on the worker, and `touch finished` never runs
    flavor.wait_command_gone(&fleet.api, &id, "sleep 30").await;
    let (status, _) = fleet
        .api
        .get(&format!("/sandboxes/{id}/files/stat?path=finished"))
        .await;
    assert_eq!(status, 404);
    fleet.stop().await;
}
