//! Workers that dial out: no listener at all, the control plane calls them over the
//! connection they opened (HTTP/2 roles reversed on it). The whole API suite through
//! such workers; a fleet mixing both modes; a control plane restarted under an open
//! exec stream; two Postgres replicas, one of them killed; revocation closing the
//! connection; and a certificate that cannot stand in for another worker.

mod api_suite;

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::json;

use berth_pki::transport::{DialOptions, dial_out};
use berth_pki::{ReloadableIdentity, SpiffeId, dialout_client_config};
use berth_testkit::{Api, TestControlPlane, TestFleet, TestWorker, eventually, id_of};

use api_suite::Flavor;

const WAIT: Duration = Duration::from_secs(20);

macro_rules! dialout_suite {
    ($($name:ident),* $(,)?) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            api_suite::$name(&Flavor::mock_dialing_out()).await;
        }
    )*};
}

dialout_suite!(
    exec_answers_stacyvm_shapes,
    stream_chunks_arrive_before_the_command_ends_then_one_exit_line,
    files_round_trip_binary_and_large_content,
    bad_paths_and_bad_requests_are_refused_clearly,
    unknown_and_destroyed_sandboxes_are_404_and_destroy_races_act_once,
    logs_record_lifecycle_and_execs_and_can_be_followed,
    a_client_that_disconnects_mid_stream_leaves_no_command_running,
);

/// A mock fleet of `count` workers that dial out.
async fn dialing_fleet(count: usize) -> TestFleet {
    TestFleet::builder()
        .workers(count)
        .worker(|config| config.listen = None)
        .start()
        .await
}

async fn exec_ok(api: &Api, id: &str, command: &str) -> String {
    let (status, result) = api.exec(id, json!({"command": command})).await;
    assert_eq!(status, 200, "{result}");
    result["stdout"].as_str().unwrap_or_default().to_owned()
}

#[tokio::test]
async fn both_modes_serve_in_one_fleet_and_the_list_says_which_is_which() {
    let mut fleet = dialing_fleet(1).await;
    let listening = fleet
        .add_worker(|config| config.listen = Some("127.0.0.1:0".parse().unwrap()))
        .await;
    fleet.wait_online().await;
    assert!(fleet.worker(0).listen.is_none());
    assert!(fleet.worker(listening).listen.is_some());

    let (status, workers) = fleet.api.get("/workers").await;
    assert_eq!(status, 200, "{workers}");
    let mode_of = |id: &str| {
        let worker = workers
            .as_array()
            .unwrap()
            .iter()
            .find(|w| w["id"] == id)
            .unwrap_or_else(|| panic!("{id} listed: {workers}"));
        (
            worker["mode"].as_str().unwrap().to_owned(),
            worker["advertise_addr"].as_str().unwrap().to_owned(),
        )
    };
    assert_eq!(mode_of("w0"), ("dial-out".to_owned(), String::new()));
    let (mode, address) = mode_of("w1");
    assert_eq!(mode, "listen");
    assert_eq!(address, fleet.worker(listening).listen_addr().to_string());

    // sandboxes spread over both, and each answers through its own worker
    let mut on = std::collections::BTreeMap::new();
    for n in 0..4 {
        let sandbox = fleet.api.create_sandbox(json!({})).await;
        let id = id_of(&sandbox);
        exec_ok(&fleet.api, &id, &format!("echo {n} > n.txt")).await;
        assert_eq!(
            exec_ok(&fleet.api, &id, "cat n.txt").await,
            format!("{n}\n")
        );
        *on.entry(sandbox["worker_id"].as_str().unwrap().to_owned())
            .or_insert(0) += 1;
    }
    assert_eq!(on.len(), 2, "both workers took sandboxes: {on:?}");

    // the gRPC view says the same
    let channel = berth_testkit::api_channel(&fleet.cp.api_url()).await;
    let mut admin = berth_proto::v1::admin_client::AdminClient::new(channel);
    let listed = admin
        .list_workers(berth_testkit::keyed(
            berth_proto::v1::ListWorkersRequest {},
            &fleet.cp.admin_key,
        ))
        .await
        .unwrap()
        .into_inner();
    let modes: std::collections::BTreeMap<String, String> =
        listed.workers.into_iter().map(|w| (w.id, w.mode)).collect();
    assert_eq!(modes["w0"], "dial-out");
    assert_eq!(modes["w1"], "listen");
    fleet.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_control_plane_restart_under_an_open_stream_loses_nothing() {
    let fleet = dialing_fleet(1).await;
    let sandbox = fleet.api.create_sandbox(json!({"ttl": "10m"})).await;
    let id = id_of(&sandbox);
    exec_ok(&fleet.api, &id, "echo kept > kept.txt").await;

    // an exec stream still running when the control plane goes away
    let response = fleet
        .api
        .request(reqwest::Method::POST, &format!("/sandboxes/{id}/exec"))
        .json(&json!({"command": "generate --lines 600 --delay-ms 100", "stream": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let mut stream = response.bytes_stream();
    let first = stream.next().await.expect("a first chunk").unwrap();
    assert!(!first.is_empty());

    let mesh = fleet.cp.mesh_addr;
    let fleet = fleet
        .restart_control_plane_after(Duration::from_millis(500), move |config| {
            config.mesh_listen = mesh;
        })
        .await;
    // the stream ended with the control plane that carried it
    let rest = tokio::time::timeout(WAIT, async {
        while let Some(chunk) = stream.next().await {
            if chunk.is_err() {
                break;
            }
        }
    })
    .await;
    assert!(rest.is_ok(), "the old stream ended");

    fleet.wait_online().await;
    // the worker dialed the new control plane again; its sandbox and files survived
    let started = Instant::now();
    let kept = eventually("the sandbox answers again", WAIT, || async {
        let (status, result) = fleet
            .api
            .exec(&id, json!({"command": "cat kept.txt"}))
            .await;
        (status == 200).then(|| result["stdout"].as_str().unwrap_or_default().to_owned())
    })
    .await;
    assert_eq!(kept, "kept\n");
    println!("reachable again {:?} after the restart", started.elapsed());
    let (_, view) = fleet.api.get(&format!("/sandboxes/{id}")).await;
    assert_eq!(view["state"], "running", "{view}");
    assert_eq!(view["generation"], sandbox["generation"], "{view}");
    // and a new stream runs to its end
    let lines = api_suite::stream_lines(
        &fleet.api,
        &id,
        json!({"command": "generate --lines 3 --delay-ms 10", "stream": true}),
    )
    .await;
    assert_eq!(lines.last().unwrap().1["stream"], "exit", "{lines:?}");
    fleet.stop().await;
}

#[tokio::test]
async fn revoking_a_dial_out_worker_closes_its_connection_within_a_second() {
    let fleet = TestFleet::builder()
        .worker_ids(&["d1"])
        .worker(|config| config.listen = None)
        .start()
        .await;
    let id = id_of(&fleet.api.create_sandbox(json!({})).await);
    exec_ok(&fleet.api, &id, "true").await;
    let dialed = fleet.cp.fleet.workers().clone();
    assert!(dialed.dialed().is_connected("d1"));

    let started = Instant::now();
    let (status, revoked) = fleet.api.post("/workers/d1/revoke", json!(null)).await;
    assert_eq!(status, 200, "{revoked}");
    assert!(
        revoked["closed_connections"].as_u64().unwrap() >= 1,
        "{revoked}"
    );
    eventually(
        "the dial-out connection is gone",
        Duration::from_secs(1),
        || async { (!dialed.dialed().is_connected("d1")).then_some(()) },
    )
    .await;
    println!(
        "connection gone {:?} after the revoke call",
        started.elapsed()
    );
    // and it stays gone: the worker's redials are refused at the handshake
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(!dialed.dialed().is_connected("d1"));
    let (status, body) = fleet
        .api
        .post(&format!("/sandboxes/{id}/exec"), json!({"command": "true"}))
        .await;
    assert_eq!(status, 409, "its sandbox is lost: {body}");
    fleet.stop().await;
}

/// Opens a dial-out connection to `cp` with `cert_pem`/`key_pem` and serves only a
/// health service on it (an impostor worker).
async fn impostor(
    cp: &TestControlPlane,
    cert_pem: &str,
    key_pem: &str,
) -> tokio::task::JoinHandle<()> {
    let identity = Arc::new(ReloadableIdentity::from_pem(cert_pem, key_pem).unwrap());
    let tls = dialout_client_config(
        &cp.ca_der(),
        SpiffeId::control_plane(cp.trust_domain()),
        identity,
    )
    .unwrap();
    let (connection, _ended) = dial_out(&cp.mesh_url(), Arc::new(tls), DialOptions::default())
        .await
        .expect("the control plane takes a dial-out connection");
    let (_, health) = tonic_health::server::health_reporter();
    tokio::spawn(async move {
        let _ = tonic::transport::Server::builder()
            .add_service(health)
            .serve_with_incoming(futures::stream::iter([Ok::<_, std::io::Error>(connection)]))
            .await;
    })
}

#[tokio::test]
async fn one_workers_certificate_never_serves_another_workers_calls() {
    let mut fleet = TestFleet::builder()
        .worker_ids(&["a", "b"])
        .worker(|config| config.listen = None)
        .start()
        .await;
    // a sandbox on b, then b goes away
    let mut on_b = None;
    for _ in 0..4 {
        let sandbox = fleet.api.create_sandbox(json!({"ttl": "10m"})).await;
        if sandbox["worker_id"] == "b" {
            on_b = Some(id_of(&sandbox));
            break;
        }
    }
    let on_b = on_b.expect("a sandbox landed on b");
    fleet.stop_worker(1).await;
    let dialed = fleet.cp.fleet.workers().clone();
    eventually("b's connection is gone", WAIT, || async {
        (!dialed.dialed().is_connected("b")).then_some(())
    })
    .await;

    // a's certificate opens a connection: it is a's, whatever it serves
    let stored = berth_worker::StoredIdentity::load(&fleet.worker_dir(0))
        .unwrap()
        .unwrap();
    let impostor = impostor(&fleet.cp, &stored.cert_pem, &stored.key_pem).await;
    eventually("the impostor's connection is taken", WAIT, || async {
        (!dialed.dialed().is_connected("b") && dialed.dialed().is_connected("a")).then_some(())
    })
    .await;
    let (status, body) = fleet
        .api
        .post(
            &format!("/sandboxes/{on_b}/exec"),
            json!({"command": "true"}),
        )
        .await;
    assert_eq!(status, 503, "b's calls never reach a's connection: {body}");
    assert!(
        body["message"].as_str().unwrap().contains("\"b\""),
        "{body}"
    );
    impostor.abort();
    fleet.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dial_out_worker_is_reached_through_either_replica_and_survives_one_dying() {
    let Some(a) = TestControlPlane::start_on_postgres("dialout::replicas", |_| {}).await else {
        return;
    };
    let b = a.start_replica(|_| {}).await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = a.worker_config(&dir.path().join("d1"), Some(a.join_token(None).await));
    config.id = Some("d1".into());
    config.listen = None;
    config.control_plane = vec![a.mesh_url(), b.mesh_url()];
    let worker = TestWorker::start(config).await.expect("worker starts");
    let (api_a, api_b) = (Api::new(&a), Api::new(&b));
    for (api, cp) in [(&api_a, &a), (&api_b, &b)] {
        eventually("the worker is online and connected", WAIT, || async {
            let (_, ready) = api.get("/ready").await;
            (ready["workers_online"].as_u64() == Some(1)
                && cp.fleet.workers().dialed().is_connected("d1"))
            .then_some(())
        })
        .await;
    }
    let id = id_of(&api_a.create_sandbox(json!({"ttl": "10m"})).await);
    exec_ok(&api_a, &id, "echo made-on-a > f.txt").await;
    assert_eq!(exec_ok(&api_b, &id, "cat f.txt").await, "made-on-a\n");

    // A dies; B reaches the worker at once (it holds its own connection)
    a.stop().await;
    let started = Instant::now();
    let out = eventually(
        "the sandbox answers through B",
        Duration::from_secs(10),
        || async {
            let (status, result) = api_b.exec(&id, json!({"command": "cat f.txt"})).await;
            (status == 200).then(|| result["stdout"].as_str().unwrap_or_default().to_owned())
        },
    )
    .await;
    assert_eq!(out, "made-on-a\n");
    println!(
        "reachable through B {:?} after A stopped",
        started.elapsed()
    );
    let (_, view) = api_b.get(&format!("/sandboxes/{id}")).await;
    assert_eq!(view["state"], "running", "{view}");
    // heartbeats moved to B: the worker stays online there
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (_, ready) = api_b.get("/ready").await;
    assert_eq!(ready["workers_online"], 1, "{ready}");
    exec_ok(&api_b, &id, "true").await;
    worker.stop().await;
    b.stop().await;
}

/// The control plane's `/metrics` text.
async fn metrics(cp: &TestControlPlane) -> String {
    reqwest::get(format!("{}/metrics", cp.api_url()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renewal_moves_the_worker_to_a_new_connection_and_the_stream_on_the_old_one_finishes() {
    // a 20 s certificate: renewed at about 13 s; the stream (16 s from the start)
    // spans the renewal and ends before the first certificate expires
    let fleet = TestFleet::builder()
        .worker_ids(&["r1"])
        .worker(|config| config.listen = None)
        .control_plane(|config| config.certificates.worker_ttl = Duration::from_secs(20))
        .start()
        .await;
    let api = &fleet.api;
    let (_, before) = api.get("/workers/r1").await;
    let id = id_of(&api.create_sandbox(json!({})).await);
    let lines = api_suite::stream_lines(
        api,
        &id,
        json!({"command": "generate --lines 32 --delay-ms 500", "stream": true, "timeout": "60s"}),
    )
    .await;
    let last = &lines.last().unwrap().1;
    assert_eq!(last["stream"], "exit", "{lines:?}");
    assert_eq!(last["exit_code"], 0, "{lines:?}");
    assert_eq!(
        lines
            .iter()
            .filter(|(_, l)| l["stream"] == "stdout")
            .count(),
        32
    );
    let (_, after) = api.get("/workers/r1").await;
    assert_ne!(
        after["certificate"]["serial"], before["certificate"]["serial"],
        "the certificate was renewed during the stream"
    );
    // the worker is on its new connection; the old one closed once the stream was done
    eventually("one connection left", WAIT, || async {
        let text = metrics(&fleet.cp).await;
        let open = berth_testkit::sample(&text, "berth_dialout_connections{worker=\"r1\"}");
        let reconnects =
            berth_testkit::sample(&text, "berth_dialout_reconnects_total{worker=\"r1\"}");
        (open == Some(1.0) && reconnects >= Some(1.0)).then_some(())
    })
    .await;
    exec_ok(api, &id, "true").await;
    fleet.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_with_more_workers_than_the_mesh_admits_at_once_brings_every_one_back() {
    // after the restart the heartbeat budget admits one connection at once and three
    // a second: six workers reconnecting together are partly turned away and come
    // back by their jittered backoff
    let fleet = TestFleet::builder()
        .workers(6)
        .worker(|config| config.listen = None)
        .heartbeat_interval(Duration::from_secs(5))
        .start()
        .await;
    let mesh = fleet.cp.mesh_addr;
    let fleet = fleet
        .restart_control_plane_after(Duration::from_millis(200), move |config| {
            config.mesh_listen = mesh;
            config.limits.heartbeats_per_second = 3;
            config.limits.heartbeat_burst = 1;
        })
        .await;
    let workers = fleet.cp.fleet.workers().clone();
    eventually("every worker connected again", WAIT, || async {
        (0..6)
            .all(|n| workers.dialed().is_connected(&format!("w{n}")))
            .then_some(())
    })
    .await;
    fleet.wait_online().await;
    let text = metrics(&fleet.cp).await;
    println!(
        "turned away during the restart: {:?}",
        berth_testkit::sample(&text, "berth_dialout_turned_away_total")
    );
    for _ in 0..6 {
        let id = id_of(&fleet.api.create_sandbox(json!({})).await);
        exec_ok(&fleet.api, &id, "true").await;
    }
    fleet.stop().await;
}
