//! Sandboxes end to end through a real control plane and two real workers (mock
//! provider) over mTLS: scheduling, routed exec and streams, files, logs, fencing, and
//! every bad input the API must refuse without leaking anything.

mod api_suite;

use std::time::Duration;

use serde_json::json;

use berth_proto::v1 as pb;
use berth_testkit::{TestFleet, eventually, id_of};

use api_suite::Flavor;

const WAIT: Duration = Duration::from_secs(10);

/// A mock fleet.
async fn fleet(count: usize, max: u32) -> TestFleet {
    api_suite::fleet(&Flavor::mock(), count, max).await
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
        let (status, _) = fleet
            .api
            .exec(id, json!({"command": format!("echo {id} > me.txt")}))
            .await;
        assert_eq!(status, 200);
    }
    for id in &ids {
        let (_, result) = fleet.api.exec(id, json!({"command": "cat me.txt"})).await;
        assert_eq!(result["stdout"], format!("{id}\n"));
    }
    let (_, listed) = fleet.api.get("/sandboxes").await;
    assert_eq!(listed.as_array().unwrap().len(), 6);
    fleet.stop().await;
}

#[tokio::test]
async fn exec_answers_stacyvm_shapes() {
    api_suite::exec_answers_stacyvm_shapes(&Flavor::mock()).await;
}

#[tokio::test]
async fn stream_chunks_arrive_before_the_command_ends_then_one_exit_line() {
    api_suite::stream_chunks_arrive_before_the_command_ends_then_one_exit_line(&Flavor::mock())
        .await;
}

#[tokio::test]
async fn a_stale_lease_generation_is_refused_by_the_worker() {
    let fleet = fleet(1, 4).await;
    let sandbox = fleet.api.create_sandbox(json!({})).await;
    let id = id_of(&sandbox);
    assert_eq!(sandbox["generation"], 1);
    let mut worker = fleet.cp.worker_client(fleet.worker(0));
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
    let (status, body) = fleet
        .api
        .exec(&id, json!({"command": "touch fenced"}))
        .await;
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
async fn exec_as_reader(fleet: &TestFleet, id: &str) -> (u16, i64) {
    let mut worker = fleet.cp.worker_client(fleet.worker(0));
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
    api_suite::files_round_trip_binary_and_large_content(&Flavor::mock()).await;
}

#[tokio::test]
async fn bad_paths_and_bad_requests_are_refused_clearly() {
    api_suite::bad_paths_and_bad_requests_are_refused_clearly(&Flavor::mock()).await;
}

#[tokio::test]
async fn unknown_and_destroyed_sandboxes_are_404_and_destroy_races_act_once() {
    api_suite::unknown_and_destroyed_sandboxes_are_404_and_destroy_races_act_once(&Flavor::mock())
        .await;
}

#[tokio::test]
async fn exec_on_a_sandbox_whose_worker_is_gone_is_unavailable() {
    let mut fleet = fleet(1, 4).await;
    let id = id_of(&fleet.api.create_sandbox(json!({})).await);
    fleet.stop_worker(0).await;
    let (status, body) = fleet.api.exec(&id, json!({"command": "true"})).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["code"], "UNAVAILABLE");
    let (status, body) = fleet.api.post("/sandboxes", json!({})).await;
    assert_eq!(status, 503, "{body}");
    fleet.stop().await;
}

#[tokio::test]
async fn logs_record_lifecycle_and_execs_and_can_be_followed() {
    api_suite::logs_record_lifecycle_and_execs_and_can_be_followed(&Flavor::mock()).await;
}

#[tokio::test]
async fn a_client_that_disconnects_mid_stream_leaves_no_command_running() {
    api_suite::a_client_that_disconnects_mid_stream_leaves_no_command_running(&Flavor::mock())
        .await;
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
    let fleet = TestFleet::builder()
        .reap_interval(Duration::from_millis(200))
        .start()
        .await;
    let api = &fleet.api;
    let short = id_of(&api.create_sandbox(json!({"ttl": "1s"})).await);
    let long = id_of(&api.create_sandbox(json!({"ttl": "1h"})).await);
    eventually("the expired sandbox is destroyed", WAIT, || async {
        (api.get(&format!("/sandboxes/{short}")).await.0 == 404).then_some(())
    })
    .await;
    assert_eq!(api.get(&format!("/sandboxes/{long}")).await.0, 200);
    // and it is gone from its worker too
    let missing = fleet
        .cp
        .worker_client(fleet.worker(0))
        .status(pb::StatusRequest { sandbox_id: short })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), tonic::Code::NotFound);
    fleet.stop().await;
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

#[tokio::test]
async fn a_create_or_destroy_whose_caller_goes_away_still_finishes() {
    use berth_controlplane::sandboxes::CreateRequest;
    let fleet = fleet(1, 4).await;
    let sandboxes = fleet.cp.sandboxes();
    let request = CreateRequest {
        provider: Some("mock".into()),
        ttl: Some("10m".into()),
        ..Default::default()
    }
    .validate(sandboxes.settings())
    .unwrap();
    // the caller gives up at its first wait, long before the worker has answered
    let mut create = Box::pin(sandboxes.create(request));
    assert!(futures::poll!(&mut create).is_pending());
    drop(create);
    let id = eventually("the abandoned create finishes", WAIT, || async {
        let (_, listed) = fleet.api.get("/sandboxes").await;
        let listed = listed.as_array().cloned().unwrap_or_default();
        listed.iter().find(|s| s["state"] == "running").map(id_of)
    })
    .await;
    let (status, out) = fleet.api.exec(&id, json!({"command": "echo usable"})).await;
    assert_eq!((status, out["stdout"].as_str()), (200, Some("usable\n")));

    let everything = berth_controlplane::teams::Access::everything();
    let mut destroy = Box::pin(sandboxes.destroy(&everything, &id));
    assert!(futures::poll!(&mut destroy).is_pending());
    drop(destroy);
    eventually("the abandoned destroy finishes", WAIT, || async {
        (fleet.api.get(&format!("/sandboxes/{id}")).await.0 == 404).then_some(())
    })
    .await;
    // its slot came back: the worker's four slots are all free again
    for _ in 0..4 {
        let sandbox = fleet
            .api
            .create_sandbox(json!({"provider": "mock", "ttl": "10m"}))
            .await;
        assert_eq!(sandbox["state"], "running");
    }
    fleet.stop().await;
}
