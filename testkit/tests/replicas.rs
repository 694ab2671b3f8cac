//! Several control planes on one Postgres: real replicas in process, each with its own
//! ports and data dir, sharing the database and copies of one CA and token key, with
//! real workers that know every replica's mesh URL. A sandbox made through one replica
//! is used through the other; a replica stopping leaves the fleet working (heartbeats,
//! renewals and enrollments fail over); the reaper destroys once; join tokens are
//! spent once; replicas with other keys refuse to start. Skipped, visibly, when
//! Postgres is not installed.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use berth_controlplane::ControlPlaneConfig;
use berth_controlplane::authority::Authority;
use berth_controlplane::cluster::SHARED_KEY_FILES;
use berth_testkit::{Api, TestControlPlane, TestWorker, eventually, id_of, postgres};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(15);

/// Two replicas on one fresh database and workers that know both.
struct Cluster {
    a: TestControlPlane,
    b: TestControlPlane,
    workers: Vec<TestWorker>,
    dir: tempfile::TempDir,
}

/// Replica `a` (adjusted by `adjust`), replica `b` with a's keys, and `count` workers
/// listing a's mesh URL first, then b's; `None` without Postgres.
async fn cluster(
    test: &str,
    count: usize,
    adjust: impl FnOnce(&mut ControlPlaneConfig),
    worker_adjust: impl Fn(&mut berth_worker::WorkerConfig),
) -> Option<Cluster> {
    let a = TestControlPlane::start_on_postgres(test, adjust).await?;
    let b = a.start_replica(|_| {}).await;
    let dir = tempfile::tempdir().unwrap();
    let urls = [a.mesh_url(), b.mesh_url()];
    let mut workers = Vec::new();
    for index in 0..count {
        let token = a.join_token(None).await;
        workers
            .push(start_worker(&a, &urls, &dir, &format!("w{index}"), token, &worker_adjust).await);
    }
    for api in [Api::new(&a), Api::new(&b)] {
        wait_online(&api, count).await;
    }
    Some(Cluster { a, b, workers, dir })
}

/// A worker that knows `urls` (tried in turn) and enrolls with `token`.
async fn start_worker(
    cp: &TestControlPlane,
    urls: &[String],
    dir: &tempfile::TempDir,
    id: &str,
    token: String,
    adjust: impl Fn(&mut berth_worker::WorkerConfig),
) -> TestWorker {
    let mut config = cp.worker_config(&dir.path().join(id), Some(token));
    config.id = Some(id.to_owned());
    config.control_plane = urls.to_vec();
    adjust(&mut config);
    TestWorker::start(config).await.expect("worker starts")
}

async fn wait_online(api: &Api, count: usize) {
    eventually("workers online", WAIT, || async {
        let (_, ready) = api.get("/ready").await;
        (ready["workers_online"].as_u64() == Some(count as u64)).then_some(())
    })
    .await;
}

impl Cluster {
    async fn stop(self) {
        for worker in self.workers {
            worker.stop().await;
        }
        self.a.stop().await;
        self.b.stop().await;
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}

async fn exec(api: &Api, id: &str, command: &str) -> (u16, Value) {
    api.exec(id, json!({"command": command})).await
}

async fn listed(api: &Api) -> Vec<String> {
    let (status, list) = api.get("/sandboxes").await;
    assert_eq!(status, 200, "{list}");
    list.as_array().unwrap().iter().map(id_of).collect()
}

/// Every worker's (id, certificate serial) as `api` lists them.
async fn serials(api: &Api) -> Vec<(String, String)> {
    let (status, workers) = api.get("/workers").await;
    assert_eq!(status, 200, "{workers}");
    workers
        .as_array()
        .unwrap()
        .iter()
        .map(|w| {
            (
                w["id"].as_str().unwrap().to_owned(),
                w["certificate"]["serial"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[tokio::test]
async fn a_sandbox_made_through_one_replica_is_used_and_destroyed_through_the_other() {
    let Some(cluster) = cluster("a_sandbox_made_through_one_replica", 2, |_| {}, |_| {}).await
    else {
        return;
    };
    let (a, b) = (Api::new(&cluster.a), Api::new(&cluster.b));
    let sandbox = a
        .create_sandbox(json!({"provider": "mock", "ttl": "10m"}))
        .await;
    let id = id_of(&sandbox);
    assert!(listed(&b).await.contains(&id));
    let (status, got) = b.get(&format!("/sandboxes/{id}")).await;
    assert_eq!(status, 200, "{got}");
    assert_eq!(got["worker_id"], sandbox["worker_id"]);
    assert_eq!(got["generation"], sandbox["generation"]);

    let (status, out) = exec(&b, &id, "echo routed > note.txt; cat note.txt").await;
    assert_eq!(status, 200, "{out}");
    assert_eq!(out["stdout"], "routed\n");
    let (status, out) = exec(&a, &id, "cat note.txt").await;
    assert_eq!(status, 200, "{out}");
    assert_eq!(out["stdout"], "routed\n", "both replicas reach one sandbox");

    let (status, body) = b.delete(&format!("/sandboxes/{id}")).await;
    assert_eq!(status, 200, "{body}");
    // a still remembers where the sandbox ran: the worker's refusal sends it to the
    // store, which says what happened, instead of the worker's bare "not found"
    let (status, body) = exec(&a, &id, "echo stale").await;
    assert_eq!(status, 404, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("destroyed"),
        "{body}"
    );
    let (status, body) = a.get(&format!("/sandboxes/{id}")).await;
    assert_eq!(status, 404, "{body}");
    assert!(!listed(&a).await.contains(&id));

    let (status, about) = b.get("/status").await;
    assert_eq!(status, 200);
    assert_eq!(about["store"], "postgres");
    assert_eq!(about["workers"]["total"], 2);
    cluster.stop().await;
}

#[tokio::test]
async fn stopping_one_replica_leaves_the_fleet_working_through_the_other() {
    // short worker certificates, so renewals happen while only b is up
    let Some(cluster) = cluster(
        "stopping_one_replica",
        2,
        |config| config.certificates.worker_ttl = Duration::from_secs(9),
        |_| {},
    )
    .await
    else {
        return;
    };
    let Cluster {
        a,
        b: replica_b,
        mut workers,
        dir,
    } = cluster;
    let b = Api::new(&replica_b);
    let before = Api::new(&a)
        .create_sandbox(json!({"provider": "mock", "ttl": "10m"}))
        .await;
    let id = id_of(&before);
    let old_serials = serials(&b).await;

    // every worker lists a first, so their heartbeats and renewals must move on to b
    let a_url = a.mesh_url();
    a.stop().await;
    // RFC 3339 times (seconds) compare as strings: a heartbeat in a later second
    let stopped_at = berth_controlplane::sandboxes::rfc3339(now_ms() / 1000);
    eventually("heartbeats reach the remaining replica", WAIT, || async {
        let (_, workers) = b.get("/workers").await;
        workers
            .as_array()?
            .iter()
            .all(|w| {
                w["status"] == "online"
                    && w["last_heartbeat"]
                        .as_str()
                        .is_some_and(|t| t > stopped_at.as_str())
            })
            .then_some(())
    })
    .await;
    eventually(
        "certificates renewed through the remaining replica",
        WAIT,
        || async {
            let now = serials(&b).await;
            now.iter()
                .all(|current| !old_serials.contains(current))
                .then_some(())
        },
    )
    .await;

    let (status, out) = exec(&b, &id, "echo still here").await;
    assert_eq!(status, 200, "{out}");
    assert_eq!(out["stdout"], "still here\n");
    let fresh = b.create_sandbox(json!({"provider": "mock"})).await;
    let (status, out) = exec(&b, &id_of(&fresh), "echo new").await;
    assert_eq!(status, 200, "{out}");

    // a new worker that names the stopped replica first enrolls through the other
    let token = replica_b.join_token(None).await;
    let urls = [a_url, replica_b.mesh_url()];
    workers.push(start_worker(&replica_b, &urls, &dir, "late", token, |_| {}).await);
    wait_online(&b, 3).await;

    for sandbox in [id, id_of(&fresh)] {
        let (status, body) = b.delete(&format!("/sandboxes/{sandbox}")).await;
        assert_eq!(status, 200, "{body}");
    }
    for worker in workers {
        worker.stop().await;
    }
    replica_b.stop().await;
}

/// The value of the sample whose line starts with `series`, 0 when there is none.
fn sample(text: &str, series: &str) -> f64 {
    berth_testkit::sample(text, series).unwrap_or(0.0)
}

#[tokio::test]
async fn two_reapers_destroy_each_expired_sandbox_once() {
    let Some(cluster) = cluster(
        "two_reapers",
        1,
        |config| config.sandboxes.reap_interval = Duration::from_millis(100),
        |config| config.metrics_listen = Some("127.0.0.1:0".parse().unwrap()),
    )
    .await
    else {
        return;
    };
    let (a, b) = (Api::new(&cluster.a), Api::new(&cluster.b));
    let mut ids = Vec::new();
    for index in 0..6 {
        let api = if index % 2 == 0 { &a } else { &b };
        ids.push(id_of(
            &api.create_sandbox(json!({"provider": "mock", "ttl": "1s"}))
                .await,
        ));
    }
    eventually(
        "both reapers destroyed every expired sandbox",
        WAIT,
        || async { listed(&b).await.is_empty().then_some(()) },
    )
    .await;
    for id in &ids {
        let (status, body) = a.get(&format!("/sandboxes/{id}")).await;
        assert_eq!(status, 404, "{body}");
    }
    let metrics = format!(
        "http://{}/metrics",
        cluster.workers[0].metrics_addr.unwrap()
    );
    let text = reqwest::get(&metrics).await.unwrap().text().await.unwrap();
    assert_eq!(
        sample(&text, r#"berth_worker_destroys_total{outcome="ok"}"#),
        6.0,
        "{text}"
    );
    assert_eq!(
        sample(&text, r#"berth_worker_destroys_total{outcome="failed"}"#),
        0.0,
        "no sandbox was destroyed twice: {text}"
    );
    cluster.stop().await;
}

#[tokio::test]
async fn a_join_token_enrolls_once_across_replicas() {
    let Some(a) = TestControlPlane::start_on_postgres("a_join_token_enrolls_once", |_| {}).await
    else {
        return;
    };
    let b = a.start_replica(|_| {}).await;
    let dir = tempfile::tempdir().unwrap();
    let token = a.join_token(None).await;
    // two workers race with one token, one through each replica
    let config_for = |cp: &TestControlPlane, id: &str| {
        let mut config = cp.worker_config(&dir.path().join(id), Some(token.clone()));
        config.id = Some(id.to_owned());
        config
    };
    let (first, second) = tokio::join!(
        TestWorker::start(config_for(&a, "via-a")),
        TestWorker::start(config_for(&b, "via-b")),
    );
    let (winner, loser) = match (first, second) {
        (Ok(worker), Err(err)) | (Err(err), Ok(worker)) => (worker, err),
        (Ok(_), Ok(_)) => panic!("one join token enrolled two workers"),
        (Err(a_err), Err(b_err)) => panic!("neither enrolled: {a_err}; {b_err}"),
    };
    assert!(
        loser.to_string().contains("used up"),
        "the loser is told the token is spent: {loser}"
    );
    // and a third try, after the fact, through either replica
    for (cp, id) in [(&a, "late-a"), (&b, "late-b")] {
        let late = TestWorker::start(config_for(cp, id)).await;
        assert!(late.is_err(), "a spent token enrolled a worker");
    }
    let (_, workers) = Api::new(&b).get("/workers").await;
    assert_eq!(workers.as_array().unwrap().len(), 1);
    winner.stop().await;
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn a_replica_with_other_keys_or_none_refuses_to_start() {
    let Some(a) = TestControlPlane::start_on_postgres("a_replica_with_other_keys", |_| {}).await
    else {
        return;
    };
    let url = a.config.database.url.clone();

    // keys of its own: refused, naming both CA fingerprints
    let own = tempfile::tempdir().unwrap();
    let own_authority = Authority::load_or_create(
        own.path(),
        "berth.local",
        vec![],
        vec![],
        Duration::from_secs(3600),
    )
    .unwrap();
    let err = TestControlPlane::try_start_on(&url, |config| {
        config.keys_dir = Some(own.path().to_owned());
    })
    .await
    .err()
    .expect("a replica with other keys started");
    let message = format!("{err:#}");
    assert!(message.contains(&a.ca_fingerprint()), "{message}");
    assert!(
        message.contains(&own_authority.ca().fingerprint()),
        "{message}"
    );

    // no keys at all: refused before it makes any
    let empty = tempfile::tempdir().unwrap();
    let keys_dir = empty.path().join("keys");
    let err = TestControlPlane::try_start_on(&url, |config| {
        config.keys_dir = Some(keys_dir.clone());
    })
    .await
    .err()
    .expect("a replica without keys started");
    assert!(format!("{err:#}").contains("holds no keys"), "{err:#}");
    for file in SHARED_KEY_FILES {
        assert!(!keys_dir.join(file).exists(), "{file} was made");
    }

    // the same keys by path (a shared keys dir): starts
    let shared = TestControlPlane::try_start_on(&url, |config| {
        config.keys_dir = Some(a.config.keys_dir());
    })
    .await
    .expect("a replica on the shared keys dir starts");
    assert_eq!(shared.ca_fingerprint(), a.ca_fingerprint());
    assert!(shared.first_admin_key.is_none());
    shared.stop().await;
    a.stop().await;
}

#[tokio::test]
async fn replicas_starting_together_on_an_empty_database_make_one_admin_key() {
    let Some(url) = postgres::fresh_database("replicas_starting_together").await else {
        return;
    };
    // the operator's part: one set of keys, copied to every replica's data dir
    let keys = tempfile::tempdir().unwrap();
    Authority::load_or_create(
        keys.path(),
        "berth.local",
        vec![],
        vec![],
        Duration::from_secs(3600),
    )
    .unwrap();
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    for dir in &dirs {
        for file in SHARED_KEY_FILES {
            std::fs::copy(keys.path().join(file), dir.path().join(file)).unwrap();
        }
    }
    let start = |dir: &tempfile::TempDir| {
        let data_dir = dir.path().to_owned();
        let url = url.clone();
        async move {
            TestControlPlane::try_start_on(&url, move |config| config.data_dir = data_dir).await
        }
    };
    let (first, second, third) = tokio::join!(start(&dirs[0]), start(&dirs[1]), start(&dirs[2]));
    let replicas = [
        first.expect("replica 1 starts"),
        second.expect("replica 2 starts"),
        third.expect("replica 3 starts"),
    ];
    let made: Vec<&String> = replicas
        .iter()
        .filter_map(|cp| cp.first_admin_key.as_ref())
        .collect();
    assert_eq!(
        made.len(),
        1,
        "exactly one replica made the first admin key"
    );
    // that key works on every replica
    for cp in &replicas {
        let api = Api {
            base: format!("{}/api/v1", cp.api_url()),
            key: made[0].clone(),
            http: reqwest::Client::new(),
        };
        let (status, body) = api.get("/workers").await;
        assert_eq!(status, 200, "{body}");
    }
    for cp in replicas {
        cp.stop().await;
    }
}

#[tokio::test]
async fn replicas_with_their_own_keys_starting_together_leave_one_cluster() {
    let Some(url) =
        postgres::fresh_database("replicas_with_their_own_keys_starting_together").await
    else {
        return;
    };
    // nobody copied keys: each replica may make its own CA; the first to record its
    // identity wins and the other refuses
    let (first, second) = tokio::join!(
        TestControlPlane::try_start_on(&url, |_| {}),
        TestControlPlane::try_start_on(&url, |_| {}),
    );
    let (running, refused) = match (first, second) {
        (Ok(cp), Err(err)) | (Err(err), Ok(cp)) => (cp, err),
        (Ok(_), Ok(_)) => panic!("two control planes with different CAs share one database"),
        (Err(a), Err(b)) => panic!("neither started: {a:#}; {b:#}"),
    };
    // refused either way: its own keys lost the race to record the identity, or the
    // winner had recorded it before the loser looked, so it made no keys at all
    let message = format!("{refused:#}");
    assert!(
        message.contains("do not match the cluster") || message.contains("holds no keys"),
        "{message}"
    );
    assert!(message.contains(&running.ca_fingerprint()), "{message}");
    assert!(running.first_admin_key.is_some());
    running.stop().await;
}

#[tokio::test]
async fn two_replicas_placing_at_once_never_overfill_a_worker() {
    let Some(cluster) = cluster(
        "two_replicas_placing_at_once",
        1,
        |_| {},
        |config| config.capacity.max_sandboxes = 3,
    )
    .await
    else {
        return;
    };
    let (a, b) = (Api::new(&cluster.a), Api::new(&cluster.b));
    let creates = (0..10).map(|index| {
        let api = if index % 2 == 0 { a.clone() } else { b.clone() };
        async move {
            api.post("/sandboxes", json!({"provider": "mock", "ttl": "10m"}))
                .await
        }
    });
    let answers = futures::future::join_all(creates).await;
    let created = answers.iter().filter(|(status, _)| *status == 201).count();
    assert_eq!(created, 3, "{answers:?}");
    for (status, body) in &answers {
        assert!(
            *status == 201 || (*status == 429 && body["code"] == "RESOURCE_LIMIT"),
            "{status} {body}"
        );
    }
    let (_, all) = b.get("/sandboxes").await;
    let running = all
        .as_array()
        .unwrap()
        .iter()
        .filter(|sandbox| sandbox["state"] == "running")
        .count();
    assert_eq!(running, 3, "{all}");
    cluster.stop().await;
}

#[tokio::test]
async fn a_worker_revoked_through_one_replica_is_refused_by_the_other() {
    let Some(cluster) = cluster("a_worker_revoked_through_one_replica", 1, |_| {}, |_| {}).await
    else {
        return;
    };
    let worker = &cluster.workers[0];
    let stored = berth_worker::StoredIdentity::load(&worker.data_dir)
        .unwrap()
        .unwrap();
    let heartbeat = || berth_proto::v1::HeartbeatRequest {
        worker_id: worker.worker_id.clone(),
        info: Some(berth_proto::v1::WorkerInfo {
            hostname: "h".into(),
            advertise_addr: worker.listen_addr().to_string(),
            ..Default::default()
        }),
        ..Default::default()
    };
    // a connection to replica a with the worker's certificate, open before the revocation
    let mut open = cluster.a.mesh_client_as(&stored.cert_pem, &stored.key_pem);
    open.heartbeat(heartbeat()).await.expect("accepted before");

    let (status, body) = Api::new(&cluster.b)
        .post(
            &format!("/workers/{}/revoke", worker.worker_id),
            json!(null),
        )
        .await;
    assert_eq!(status, 200, "{body}");

    // replica a takes the revocation up: new handshakes fail, the open one is closed
    let refused = eventually(
        "replica a refuses the revoked certificate",
        WAIT,
        || async {
            let result = cluster
                .a
                .mesh_client_as(&stored.cert_pem, &stored.key_pem)
                .heartbeat(heartbeat())
                .await;
            let err = result.err()?;
            // refused by TLS, not only by the store's answer (which also says "revoked")
            let at_handshake = !matches!(
                err.code(),
                tonic::Code::Unauthenticated | tonic::Code::PermissionDenied
            );
            (at_handshake && format!("{err:?}").contains("Revoked")).then_some(err)
        },
    )
    .await;
    assert!(
        matches!(
            refused.code(),
            tonic::Code::Unavailable | tonic::Code::Unknown
        ),
        "{refused:?}"
    );
    assert!(
        open.heartbeat(heartbeat()).await.is_err(),
        "the connection opened before still works"
    );
    cluster.stop().await;
}

#[tokio::test]
async fn a_destroy_left_behind_by_a_dead_replica_is_finished_by_another() {
    let Some(cluster) = cluster(
        "a_destroy_left_behind",
        1,
        |config| config.sandboxes.reap_interval = Duration::from_millis(100),
        |config| config.metrics_listen = Some("127.0.0.1:0".parse().unwrap()),
    )
    .await
    else {
        return;
    };
    let Cluster {
        a,
        b: replica_b,
        workers,
        dir: _dir,
    } = cluster;
    let b = Api::new(&replica_b);
    let id = id_of(
        &b.create_sandbox(json!({"provider": "mock", "ttl": "10m"}))
            .await,
    );
    // replica a claims the destroy (ten minutes ago, as far as anyone can tell) and
    // dies before it reaches the worker
    let claimed = a
        .fleet
        .store()
        .claim_destroy(&id, now_ms() - 10 * 60 * 1000)
        .await
        .unwrap();
    assert!(claimed);
    a.stop().await;
    // the stalled claim is taken over by whichever comes first, b's reaper (it runs
    // every 100 ms; then the sandbox may be gone already, or still being destroyed)
    // or this call; exactly one of them acts, which the worker's destroy count below
    // confirms
    let (status, body) = b.delete(&format!("/sandboxes/{id}")).await;
    assert!(
        matches!(status, 200 | 404 | 409),
        "a stalled destroy is taken over once: {status} {body}"
    );

    eventually(
        "the remaining replica finishes the destroy",
        WAIT,
        || async { (b.get(&format!("/sandboxes/{id}")).await.0 == 404).then_some(()) },
    )
    .await;
    let metrics = format!("http://{}/metrics", workers[0].metrics_addr.unwrap());
    let text = reqwest::get(&metrics).await.unwrap().text().await.unwrap();
    assert_eq!(
        sample(&text, r#"berth_worker_destroys_total{outcome="ok"}"#),
        1.0,
        "{text}"
    );
    for worker in workers {
        worker.stop().await;
    }
    replica_b.stop().await;
}
