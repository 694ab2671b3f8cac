//! Sandboxes end to end through a real control plane and two real workers (mock
//! provider) over mTLS: scheduling, routed exec and streams, files, logs, fencing, and
//! every bad input the API must refuse without leaking anything.

use std::time::{Duration, Instant};

use berth_proto::v1 as pb;
use berth_testkit::{Api, TestControlPlane, TestWorker, eventually};
use futures::StreamExt;
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(10);

struct Fleet {
    cp: TestControlPlane,
    workers: Vec<TestWorker>,
    api: Api,
    _dir: tempfile::TempDir,
}

/// A control plane and `count` online workers holding up to `max` sandboxes each.
async fn fleet(count: usize, max: u32) -> Fleet {
    let cp = TestControlPlane::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut workers = Vec::new();
    for index in 0..count {
        let mut config = cp.worker_config(
            &dir.path().join(format!("w{index}")),
            Some(cp.join_token(None).await),
        );
        config.id = Some(format!("w{index}"));
        config.capacity.max_sandboxes = max;
        workers.push(TestWorker::start(config).await.unwrap());
    }
    let api = Api::new(&cp);
    eventually("workers online", WAIT, || async {
        let (_, ready) = api.get("/ready").await;
        (ready["workers_online"].as_u64() == Some(count as u64)).then_some(())
    })
    .await;
    Fleet {
        cp,
        workers,
        api,
        _dir: dir,
    }
}

impl Fleet {
    async fn stop(self) {
        for worker in self.workers {
            worker.stop().await;
        }
        self.cp.stop().await;
    }
}

async fn exec(api: &Api, id: &str, body: Value) -> (u16, Value) {
    api.post(&format!("/sandboxes/{id}/exec"), body).await
}

fn id_of(sandbox: &Value) -> String {
    sandbox["id"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn spawns_spread_across_workers_and_run_on_their_lease_holder() {
    let fleet = fleet(2, 16).await;
    let mut per_worker = std::collections::BTreeMap::new();
    let mut ids = Vec::new();
    for _ in 0..6 {
        let sandbox = fleet
            .api
            .create_sandbox(json!({"provider": "mock", "ttl": "10m"}))
            .await;
        assert_eq!(sandbox["state"], "running");
        assert_eq!(sandbox["generation"], 1);
        *per_worker
            .entry(sandbox["worker_id"].as_str().unwrap().to_owned())
            .or_insert(0) += 1;
        ids.push(id_of(&sandbox));
    }
    assert_eq!(per_worker.get("w0"), Some(&3), "{per_worker:?}");
    assert_eq!(per_worker.get("w1"), Some(&3), "{per_worker:?}");
    // each exec reaches the sandbox's own filesystem on its own worker
    for id in &ids {
        let (status, _) = exec(
            &fleet.api,
            id,
            json!({"command": format!("echo {id} > me.txt")}),
        )
        .await;
        assert_eq!(status, 200);
    }
    for id in &ids {
        let (_, result) = exec(&fleet.api, id, json!({"command": "cat me.txt"})).await;
        assert_eq!(result["stdout"], format!("{id}\n"));
    }
    let (_, listed) = fleet.api.get("/sandboxes").await;
    assert_eq!(listed.as_array().unwrap().len(), 6);
    fleet.stop().await;
}

#[tokio::test]
async fn exec_answers_stacyvm_shapes() {
    let fleet = fleet(1, 4).await;
    let id = id_of(&fleet.api.create_sandbox(json!({})).await);
    let (status, result) = exec(
        &fleet.api,
        &id,
        json!({"command": "echo", "args": ["a b", "it's"]}),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(result["exit_code"], 0);
    assert_eq!(result["stdout"], "a b it's\n");
    assert!(result["duration"].as_str().unwrap().ends_with("ms"));

    let (_, result) = exec(
        &fleet.api,
        &id,
        json!({"command": "echo out; echo err >&2; exit 3"}),
    )
    .await;
    assert_eq!(result["exit_code"], 3);
    assert_eq!(result["stdout"], "out\n");
    assert_eq!(result["stderr"], "err\n");

    let (_, result) = exec(&fleet.api, &id, json!({"command": "no-such-tool"})).await;
    assert_eq!(result["exit_code"], 127);
    assert!(result["stderr"].as_str().unwrap().contains("not found"));

    // argv mode does not interpret shell syntax
    let (_, result) = exec(
        &fleet.api,
        &id,
        json!({"command": "echo", "args": ["a;", "$HOME"], "mode": "argv"}),
    )
    .await;
    assert_eq!(result["stdout"], "a; $HOME\n");

    let (_, result) = exec(
        &fleet.api,
        &id,
        json!({"command": "pwd", "env": {"X": "1"}}),
    )
    .await;
    assert_eq!(result["stdout"], "/workspace\n");
    let (_, result) = exec(
        &fleet.api,
        &id,
        json!({"command": "echo $GREETING", "env": {"GREETING": "hi"}}),
    )
    .await;
    assert_eq!(result["stdout"], "hi\n");
    fleet.stop().await;
}

/// Reads an NDJSON exec stream, returning each line with the time it arrived.
async fn stream_lines(api: &Api, id: &str, body: Value) -> Vec<(Instant, Value)> {
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

#[tokio::test]
async fn stream_chunks_arrive_before_the_command_ends_then_one_exit_line() {
    let fleet = fleet(1, 4).await;
    let id = id_of(&fleet.api.create_sandbox(json!({})).await);
    let lines = stream_lines(
        &fleet.api,
        &id,
        json!({"command": "generate --lines 3 --delay-ms 300; echo done >&2; exit 4", "stream": true}),
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

#[tokio::test]
async fn a_stale_lease_generation_is_refused_by_the_worker() {
    let fleet = fleet(1, 4).await;
    let sandbox = fleet.api.create_sandbox(json!({})).await;
    let id = id_of(&sandbox);
    assert_eq!(sandbox["generation"], 1);
    let mut worker = fleet.cp.worker_client(&fleet.workers[0]);
    // a newer control plane (generation 2) has acted on the sandbox...
    worker
        .exec(pb::WorkerExecRequest {
            sandbox_id: id.clone(),
            generation: 2,
            command: "true".into(),
            ..Default::default()
        })
        .await
        .expect("generation 2 is admitted");
    // ...so calls carrying generation 1 are fenced out
    let refused = worker
        .exec(pb::WorkerExecRequest {
            sandbox_id: id.clone(),
            generation: 1,
            command: "touch fenced".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition);
    assert!(refused.message().contains("stale lease generation"));
    // and through the API the stale control plane gets a conflict, not a silent success
    let (status, body) = exec(&fleet.api, &id, json!({"command": "touch fenced"})).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["code"], "CONFLICT");
    // a call without a generation is refused too
    let missing = worker
        .destroy(pb::DestroyRequest {
            sandbox_id: id.clone(),
            generation: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), tonic::Code::InvalidArgument);
    let (_, result) = exec_as_reader(&fleet, &id).await;
    assert_eq!(result, 1, "the fenced touch never ran");
    fleet.stop().await;
}

/// Checks through the worker (a read, not fenced) whether `fenced` exists: returns
/// `ls`'s exit code.
async fn exec_as_reader(fleet: &Fleet, id: &str) -> (u16, i64) {
    let mut worker = fleet.cp.worker_client(&fleet.workers[0]);
    let stat = worker
        .stat_file(pb::WorkerFileRequest {
            sandbox_id: id.to_owned(),
            generation: 0,
            path: "fenced".into(),
        })
        .await;
    (200, if stat.is_ok() { 0 } else { 1 })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_round_trip_binary_and_large_content() {
    use sha2::{Digest, Sha256};
    let fleet = fleet(1, 4).await;
    let id = id_of(&fleet.api.create_sandbox(json!({})).await);
    let files = format!("/sandboxes/{id}/files");

    let (status, body) = fleet
        .api
        .post(&files, json!({"path": "notes/a.txt", "content": "x"}))
        .await;
    assert_eq!(status, 404, "parent missing: {body}");
    exec(&fleet.api, &id, json!({"command": "mkdir -p notes"})).await;
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

#[tokio::test]
async fn bad_paths_and_bad_requests_are_refused_clearly() {
    let fleet = fleet(1, 4).await;
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
    let (status, body) = exec(&fleet.api, &id, json!({"command": "echo", "mode": "magic"})).await;
    assert_eq!((status, body["code"].clone()), (400, json!("BAD_REQUEST")));
    let (status, _) = exec(&fleet.api, &id, json!({"command": ""})).await;
    assert_eq!(status, 400);
    let (status, body) = exec(
        &fleet.api,
        &id,
        json!({"command": "sleep 5", "timeout": "200ms"}),
    )
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

#[tokio::test]
async fn unknown_and_destroyed_sandboxes_are_404_and_destroy_races_act_once() {
    let fleet = fleet(1, 2).await;
    for (status, body) in [
        fleet.api.get("/sandboxes/sbx-nope").await,
        fleet.api.delete("/sandboxes/sbx-nope").await,
        exec(&fleet.api, "sbx-nope", json!({"command": "true"})).await,
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
        exec(&fleet.api, &id, json!({"command": "true"})).await,
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
        .post("/sandboxes", json!({"provider": "docker"}))
        .await;
    assert_eq!(status, 503, "{body}");
    assert!(body["message"].as_str().unwrap().contains("docker"));
    fleet.stop().await;
}

#[tokio::test]
async fn exec_on_a_sandbox_whose_worker_is_gone_is_unavailable() {
    let mut fleet = fleet(1, 4).await;
    let id = id_of(&fleet.api.create_sandbox(json!({})).await);
    fleet.workers.pop().unwrap().stop().await;
    let (status, body) = exec(&fleet.api, &id, json!({"command": "true"})).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["code"], "UNAVAILABLE");
    let (status, body) = fleet.api.post("/sandboxes", json!({})).await;
    assert_eq!(status, 503, "{body}");
    fleet.stop().await;
}

#[tokio::test]
async fn logs_record_lifecycle_and_execs_and_can_be_followed() {
    let fleet = fleet(1, 4).await;
    let id = id_of(&fleet.api.create_sandbox(json!({})).await);
    exec(&fleet.api, &id, json!({"command": "echo first"})).await;
    let (status, lines) = fleet
        .api
        .get(&format!("/sandboxes/{id}/logs?lines=10"))
        .await;
    assert_eq!(status, 200);
    let lines: Vec<String> = serde_json::from_value(lines).unwrap();
    assert!(lines.iter().any(|l| l.contains("created")), "{lines:?}");
    assert!(lines.iter().any(|l| l.contains("echo first")), "{lines:?}");

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
    exec(&fleet.api, &id, json!({"command": "echo second"})).await;
    let mut seen = String::new();
    let found = tokio::time::timeout(WAIT, async {
        while let Some(chunk) = body.next().await {
            seen.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
            if seen.contains("echo second") {
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

#[tokio::test]
async fn a_client_that_disconnects_mid_stream_leaves_no_command_running() {
    let fleet = fleet(1, 4).await;
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
    // the command is stopped on the worker: its exec record ends without an exit 0,
    // and `touch finished` never runs
    eventually("the exec record closes", WAIT, || async {
        let (_, lines) = fleet
            .api
            .get(&format!("/sandboxes/{id}/logs?lines=50"))
            .await;
        let lines: Vec<String> = serde_json::from_value(lines).ok()?;
        lines
            .iter()
            .any(|l| l.contains("sleep 30") && !l.contains("exit 0"))
            .then_some(())
    })
    .await;
    let (status, _) = fleet
        .api
        .get(&format!("/sandboxes/{id}/files/stat?path=finished"))
        .await;
    assert_eq!(status, 404);
    fleet.stop().await;
}

#[tokio::test]
async fn extend_and_prune_follow_the_ttl() {
    let fleet = fleet(1, 4).await;
    let sandbox = fleet.api.create_sandbox(json!({"ttl": "1s"})).await;
    let keep = fleet.api.create_sandbox(json!({"ttl": "1s"})).await;
    let (status, extended) = fleet
        .api
        .post(
            &format!("/sandboxes/{}/extend", id_of(&keep)),
            json!({"ttl": "1h"}),
        )
        .await;
    assert_eq!(status, 200);
    assert!(extended["expires_at"].as_str().unwrap() > keep["expires_at"].as_str().unwrap());
    let (status, _) = fleet
        .api
        .post(
            &format!("/sandboxes/{}/extend", id_of(&keep)),
            json!({"ttl": "soon"}),
        )
        .await;
    assert_eq!(status, 400);
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let (status, pruned) = fleet.api.delete("/sandboxes").await;
    assert_eq!(status, 200);
    assert_eq!(pruned["pruned"], 1);
    let (status, _) = fleet
        .api
        .get(&format!("/sandboxes/{}", id_of(&sandbox)))
        .await;
    assert_eq!(status, 404);
    let (status, _) = fleet.api.get(&format!("/sandboxes/{}", id_of(&keep))).await;
    assert_eq!(status, 200);
    fleet.stop().await;
}

#[tokio::test]
async fn the_reaper_destroys_sandboxes_past_their_ttl() {
    let cp = TestControlPlane::start_with(|config| {
        config.sandboxes.reap_interval = Duration::from_millis(200);
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let worker = TestWorker::start(cp.worker_config(dir.path(), Some(cp.join_token(None).await)))
        .await
        .unwrap();
    let api = Api::new(&cp);
    api.wait_ready().await;
    let short = id_of(&api.create_sandbox(json!({"ttl": "1s"})).await);
    let long = id_of(&api.create_sandbox(json!({"ttl": "1h"})).await);
    eventually("the expired sandbox is destroyed", WAIT, || async {
        (api.get(&format!("/sandboxes/{short}")).await.0 == 404).then_some(())
    })
    .await;
    assert_eq!(api.get(&format!("/sandboxes/{long}")).await.0, 200);
    // and it is gone from its worker too
    let missing = cp
        .worker_client(&worker)
        .status(pb::StatusRequest { sandbox_id: short })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), tonic::Code::NotFound);
    worker.stop().await;
    cp.stop().await;
}

#[tokio::test]
async fn the_grpc_sandboxes_service_does_the_same() {
    use berth_proto::v1::sandboxes_client::SandboxesClient;
    let fleet = fleet(1, 4).await;
    let channel = tonic::transport::Endpoint::from_shared(fleet.cp.api_url())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let key: tonic::metadata::MetadataValue<_> = fleet.cp.admin_key.parse().unwrap();
    let mut client =
        SandboxesClient::with_interceptor(channel, move |mut request: tonic::Request<()>| {
            request.metadata_mut().insert("x-api-key", key.clone());
            Ok(request)
        });
    let sandbox = client
        .create(pb::CreateSandboxRequest {
            ttl: "5m".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(sandbox.state, "running");
    let result = client
        .exec(pb::ExecRequest {
            sandbox_id: sandbox.id.clone(),
            command: "printf '%s-%s' a b".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(result.stdout, b"a-b");
    let mut events = client
        .exec_stream(pb::ExecRequest {
            sandbox_id: sandbox.id.clone(),
            command: "echo one; exit 2".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut exit = None;
    while let Some(event) = events.message().await.unwrap() {
        if let Some(pb::exec_event::Event::Exit(e)) = event.event {
            exit = Some(e.exit_code);
        }
    }
    assert_eq!(exit, Some(2));
    let missing = client
        .get(pb::SandboxRef {
            id: "sbx-nope".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), tonic::Code::NotFound);
    client
        .destroy(pb::SandboxRef {
            id: sandbox.id.clone(),
        })
        .await
        .unwrap();
    fleet.stop().await;
}

/// Every test above again, on a Postgres store: this test binary re-runs itself with
/// `BERTH_TEST_DATABASE=postgres` (skipped, visibly, when Postgres is not installed).
#[test]
fn on_postgres() {
    berth_testkit::rerun_on_postgres("on_postgres");
}
