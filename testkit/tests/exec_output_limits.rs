//! A whole (non-streamed) exec collects a bounded amount of output: the control
//! plane's `sandboxes.max_exec_output_bytes`, never more than a worker's own
//! `max_exec_output_bytes`. Past it the command runs on to its real end, the rest is
//! dropped, and the answer says `truncated` (HTTP and gRPC). Streamed execs carry
//! everything. The docker provider is checked against the real engine (skipped visibly
//! without one).

use std::time::Duration;

use serde_json::{Value, json};

use berth_proto::v1 as pb;
use berth_proto::v1::sandboxes_client::SandboxesClient;
use berth_testkit::docker::{DockerCleanup, docker_or_skip, unique_worker_id};
use berth_testkit::{TestFleet, id_of, shell, spec};
use berth_worker::provider::Provider;
use berth_worker::provider::docker::DockerProvider;

/// The control plane's limit in these tests.
const LIMIT: usize = 4096;

/// A mock fleet whose control plane keeps `LIMIT` bytes of a whole exec.
async fn fleet() -> TestFleet {
    TestFleet::builder()
        .control_plane(|config| config.sandboxes.max_exec_output_bytes = LIMIT)
        .start()
        .await
}

fn text<'a>(answer: &'a Value, stream: &str) -> &'a str {
    answer[stream].as_str().expect("a text field")
}

/// An exec answer without its output, which can be long, for assertion messages.
fn summary(answer: &Value) -> Value {
    let mut answer = answer.clone();
    for stream in ["stdout", "stderr"] {
        if let Some(text) = answer[stream].as_str() {
            answer[stream] = json!(format!("<{} bytes>", text.len()));
        }
    }
    answer
}

#[tokio::test]
async fn a_whole_exec_over_the_limit_is_truncated_over_http() {
    let fleet = fleet().await;
    let id = id_of(&fleet.api.create_sandbox(json!({})).await);

    // a hundred times the limit: the answer holds the limit, the exit code is real
    let (status, answer) = fleet
        .api
        .exec(
            &id,
            json!({"command": "generate --bytes 409600; touch after; exit 3"}),
        )
        .await;
    assert_eq!(status, 200, "{}", summary(&answer));
    assert_eq!(answer["truncated"], true, "{}", summary(&answer));
    assert_eq!(answer["exit_code"], 3);
    assert_eq!(text(&answer, "stdout").len(), LIMIT);
    assert!(text(&answer, "stdout").starts_with("0123456789"));
    assert_eq!(text(&answer, "stderr"), "");
    // the command ran past the limit to its end
    let (_, listing) = fleet.api.exec(&id, json!({"command": "ls after"})).await;
    assert_eq!(text(&listing, "stdout"), "after\n", "{listing}");

    // stdout and stderr share the limit, in the order they were written
    let (_, answer) = fleet
        .api
        .exec(
            &id,
            json!({"command": "generate --bytes 3000; generate --bytes 3000 --stderr"}),
        )
        .await;
    assert_eq!(answer["truncated"], true, "{}", summary(&answer));
    assert_eq!(text(&answer, "stdout").len(), 3000);
    assert_eq!(text(&answer, "stderr").len(), LIMIT - 3000);

    // within the limit: whole, and no truncated field for StacyVM clients to trip on
    let (_, answer) = fleet
        .api
        .exec(&id, json!({"command": format!("generate --bytes {LIMIT}")}))
        .await;
    assert_eq!(text(&answer, "stdout").len(), LIMIT);
    assert!(answer.get("truncated").is_none(), "{}", summary(&answer));
    fleet.stop().await;
}

#[tokio::test]
async fn a_whole_exec_over_the_limit_is_truncated_over_grpc() {
    let fleet = fleet().await;
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
    let id = id_of(&fleet.api.create_sandbox(json!({})).await);
    let exec = |command: &str| pb::ExecRequest {
        sandbox_id: id.clone(),
        command: command.to_owned(),
        ..Default::default()
    };

    let answer = client
        .exec(exec("generate --bytes 10000000 --stderr; exit 5"))
        .await
        .unwrap()
        .into_inner();
    assert!(answer.truncated);
    assert_eq!(answer.exit_code, 5);
    assert_eq!((answer.stdout.len(), answer.stderr.len()), (0, LIMIT));

    let answer = client.exec(exec("echo small")).await.unwrap().into_inner();
    assert!(!answer.truncated);
    assert_eq!(answer.stdout, b"small\n");
    fleet.stop().await;
}

#[tokio::test]
async fn a_worker_never_collects_more_than_its_own_limit() {
    // the control plane asks for the default (16 MiB); the worker allows 1000 bytes
    let fleet = TestFleet::builder()
        .worker(|config| config.max_exec_output_bytes = 1000)
        .start()
        .await;
    let sandbox = fleet.api.create_sandbox(json!({})).await;
    let id = id_of(&sandbox);
    let (_, answer) = fleet
        .api
        .exec(&id, json!({"command": "generate --bytes 100000"}))
        .await;
    assert_eq!(answer["truncated"], true, "{}", summary(&answer));
    assert_eq!(text(&answer, "stdout").len(), 1000);

    // straight on the mesh: more than the ceiling, nothing (0), and less than it
    let mut worker = fleet.cp.worker_client(fleet.worker(0));
    for (asked, kept) in [(u64::MAX, 1000), (0, 1000), (10, 10)] {
        let answer = worker
            .exec(pb::WorkerExecRequest {
                sandbox_id: id.clone(),
                generation: sandbox["generation"].as_u64().unwrap(),
                command: "generate --bytes 100000".into(),
                max_output_bytes: asked,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert!(answer.truncated, "asked for {asked}");
        assert_eq!(answer.stdout.len(), kept, "asked for {asked}");
    }
    fleet.stop().await;
}

#[tokio::test]
async fn a_streamed_exec_is_not_limited() {
    let fleet = fleet().await;
    let id = id_of(&fleet.api.create_sandbox(json!({})).await);
    let total = 50 * LIMIT;
    let response = fleet
        .api
        .request(reqwest::Method::POST, &format!("/sandboxes/{id}/exec"))
        .json(&json!({"command": format!("generate --bytes {total}"), "stream": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body = response.bytes().await.unwrap();
    let lines: Vec<Value> = body
        .split(|byte| *byte == b'\n')
        .filter(|line| !line.is_empty())
        .map(|line| serde_json::from_slice(line).unwrap())
        .collect();
    let stdout: usize = lines
        .iter()
        .filter(|line| line["stream"] == "stdout")
        .map(|line| line["data"].as_str().unwrap().len())
        .sum();
    assert_eq!(stdout, total);
    let exit = lines.last().unwrap();
    assert_eq!(exit["stream"], "exit", "{exit}");
    assert!(exit.get("truncated").is_none());
    fleet.stop().await;
}

#[tokio::test]
async fn the_docker_provider_keeps_its_limit_and_lets_the_command_finish() {
    let test = "the_docker_provider_keeps_its_limit_and_lets_the_command_finish";
    let Some(config) = docker_or_skip(test).await else {
        return;
    };
    let worker_id = unique_worker_id("limits");
    let _cleanup = DockerCleanup::new(&config, &[&worker_id]);
    let provider = DockerProvider::new(config, &worker_id);
    let id = unique_worker_id("sb");
    provider.spawn(spec(&id)).await.unwrap();

    // far more than the engine's pipe holds: a command blocked on it would never
    // reach the touch, and the exec would time out
    let mut line =
        shell("head -c 20000000 /dev/zero; head -c 100 /dev/zero >&2; touch after; exit 6");
    line.timeout = Duration::from_secs(60);
    let result = provider.exec(&id, line, 65536).await.unwrap();
    assert!(result.truncated);
    assert_eq!(result.exit_code, 6);
    assert_eq!(result.stdout.len(), 65536);
    assert!(result.stdout.iter().all(|byte| *byte == 0));
    assert!(result.stderr.is_empty());
    let after = provider
        .exec(&id, shell("ls /workspace/after"), 65536)
        .await
        .unwrap();
    assert_eq!(after.stdout, b"/workspace/after\n");
    assert!(!after.truncated);

    // a cut in the middle of a character ends the text before it
    let result = provider
        .exec(&id, shell("printf 'a\\303\\251\\303\\251'"), 4)
        .await
        .unwrap();
    assert!(result.truncated);
    assert_eq!(result.stdout, "aé".as_bytes());
    provider.destroy(&id).await.unwrap();
}
