//! How many sandboxes a docker worker holds: as many as its capacity says, not as
//! many as the engine's default address pools have room for. A hundred sandboxes on
//! one worker, on an engine with its default settings, each on a network of its own
//! with a small subnet carved from `docker.subnet_pool`, and none of those networks
//! left once they are destroyed; subnets picked around networks that are not
//! Berth's, a full pool answered clearly, and two workers on one engine never on
//! the same subnet; and a sandbox's console log capped on disk. Skipped visibly
//! without an engine.

use std::collections::HashSet;
use std::time::Duration;

use bollard::Docker;
use bollard::query_parameters::ListNetworksOptions;
use futures::StreamExt;
use serde_json::json;

use berth_testkit::docker::{DockerCleanup, docker_or_skip, unique_worker_id};
use berth_testkit::{TestFleet, eventually, id_of, shell};
use berth_worker::DockerConfig;
use berth_worker::provider::docker::{DockerProvider, Ipv4Net, LABEL_MANAGED, LABEL_WORKER};
use berth_worker::provider::output::DEFAULT_MAX_EXEC_OUTPUT;
use berth_worker::provider::{Provider, ProviderError, SandboxSpec};

const SANDBOXES: usize = 100;
/// Creates and destroys in flight at once.
const PARALLEL: usize = 4;
const WAIT: Duration = Duration::from_secs(60);

/// The names and IPv4 subnets of the networks the engine holds for `worker_id`.
async fn networks_of(docker: &Docker, worker_id: &str) -> Vec<(String, Vec<String>)> {
    let filters = std::collections::HashMap::from([(
        "label".to_owned(),
        vec![
            format!("{LABEL_MANAGED}=true"),
            format!("{LABEL_WORKER}={worker_id}"),
        ],
    )]);
    let networks = docker
        .list_networks(Some(ListNetworksOptions {
            filters: Some(filters),
        }))
        .await
        .expect("list networks");
    networks
        .into_iter()
        .map(|network| {
            let subnets = network
                .ipam
                .and_then(|ipam| ipam.config)
                .unwrap_or_default()
                .into_iter()
                .filter_map(|config| config.subnet)
                .collect();
            (network.name.unwrap_or_default(), subnets)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_holds_a_hundred_sandboxes_on_an_engine_with_default_pools() {
    let Some(config) = docker_or_skip("a_worker_holds_a_hundred_sandboxes").await else {
        return;
    };
    let worker_id = unique_worker_id("cap");
    // heartbeats at an operator's pace rather than the suite's 200 ms: a hundred
    // containers on a busy two-core machine can hold one inventory pass for seconds,
    // and a lease that runs out meanwhile is not what this test is about
    let fleet = TestFleet::builder()
        .docker(config)
        .worker_ids(&[&worker_id])
        .max_sandboxes(SANDBOXES as u32 + 10)
        .heartbeat_interval(Duration::from_secs(1))
        .missed_heartbeats(10)
        .start()
        .await;
    let api = &fleet.api;
    let engine = Docker::connect_with_unix_defaults().expect("docker client");

    let created: Vec<(u16, serde_json::Value)> = futures::stream::iter(0..SANDBOXES)
        .map(|_| async {
            api.post("/sandboxes", json!({"ttl": "10m", "memory_mb": 32}))
                .await
        })
        .buffer_unordered(PARALLEL)
        .collect()
        .await;
    let ids: Vec<String> = created
        .iter()
        .filter(|(status, _)| *status == 201)
        .map(|(_, sandbox)| id_of(sandbox))
        .collect();
    let first_failure = created.iter().find(|(status, _)| *status != 201);
    assert_eq!(
        ids.len(),
        SANDBOXES,
        "created {} of {SANDBOXES} sandboxes; the first refusal: {first_failure:?}",
        ids.len()
    );

    // every one is usable, and on a subnet of its own
    for id in ids.iter().take(3).chain(ids.iter().rev().take(3)) {
        let (status, result) = api
            .exec(id, json!({"command": format!("echo hello {id}")}))
            .await;
        assert_eq!(status, 200, "{result}");
        assert_eq!(result["stdout"], format!("hello {id}\n"), "{result}");
    }
    let networks = networks_of(&engine, &worker_id).await;
    assert_eq!(networks.len(), SANDBOXES, "one network per sandbox");
    let subnets: HashSet<String> = networks
        .iter()
        .flat_map(|(_, subnets)| subnets.iter().cloned())
        .collect();
    assert_eq!(subnets.len(), SANDBOXES, "a subnet each: {networks:?}");

    let destroyed: Vec<(String, u16, serde_json::Value)> = futures::stream::iter(ids.iter())
        .map(|id| async move {
            let (status, body) = api.delete(&format!("/sandboxes/{id}")).await;
            (id.clone(), status, body)
        })
        .buffer_unordered(PARALLEL)
        .collect()
        .await;
    for (id, status, body) in &destroyed {
        assert_eq!(*status, 200, "destroy {id}: {body}");
    }
    eventually("no network of the worker is left", WAIT, || async {
        networks_of(&engine, &worker_id)
            .await
            .is_empty()
            .then_some(())
    })
    .await;
    fleet.stop().await;
}

fn spec(id: &str) -> SandboxSpec {
    SandboxSpec {
        memory_mb: 32,
        ..berth_testkit::spec(id)
    }
}

/// A pool of `subnets` /28s that no other test of this process uses.
fn private_pool(subnets: u32) -> Ipv4Net {
    let random = uuid::Uuid::new_v4().as_u128();
    let third = (random % 256) as u8;
    let fourth = ((random >> 8) % 2) as u8 * 128;
    let prefix = 28 - subnets.ilog2() as u8;
    format!("10.214.{third}.{fourth}/{prefix}")
        .parse()
        .expect("a pool")
}

/// The subnet of a sandbox's own network.
async fn subnet_of(engine: &Docker, sandbox_id: &str) -> String {
    let network = engine
        .inspect_network(
            &format!("berth-{sandbox_id}"),
            None::<bollard::query_parameters::InspectNetworkOptions>,
        )
        .await
        .expect("the sandbox's network");
    let config = network
        .ipam
        .and_then(|ipam| ipam.config)
        .unwrap_or_default();
    config
        .into_iter()
        .find_map(|config| config.subnet)
        .expect("a subnet")
}

/// A network the test made outside Berth, removed when dropped.
struct ForeignNetwork(String);

impl Drop for ForeignNetwork {
    fn drop(&mut self) {
        let _ = std::process::Command::new("docker")
            .args(["network", "rm", &self.0])
            .output();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subnets_avoid_other_networks_and_a_full_pool_is_refused_clearly() {
    let Some(config) = docker_or_skip("subnets_avoid_other_networks").await else {
        return;
    };
    let pool = private_pool(4);
    let worker_id = unique_worker_id("pool");
    let _cleanup = DockerCleanup::new(&config, &[&worker_id]);
    let engine = Docker::connect_with_unix_defaults().expect("docker client");
    // someone else's network on the pool's first /28
    let first = format!("{}/28", pool.network());
    let foreign = ForeignNetwork(unique_worker_id("foreign-net"));
    let made = std::process::Command::new("docker")
        .args(["network", "create", "--subnet", &first, &foreign.0])
        .output()
        .expect("docker network create");
    assert!(made.status.success(), "{made:?}");
    let provider = DockerProvider::new(
        DockerConfig {
            subnet_pool: pool,
            ..config
        },
        &worker_id,
    );

    let ids: Vec<String> = (0..3).map(|i| unique_worker_id(&format!("s{i}"))).collect();
    let mut subnets = Vec::new();
    for id in &ids {
        provider
            .spawn(spec(id))
            .await
            .expect("a spawn within the pool");
        subnets.push(subnet_of(&engine, id).await);
    }
    let base = u32::from(pool.network());
    let expected: Vec<String> = [16, 32, 48]
        .map(|offset| format!("{}/28", std::net::Ipv4Addr::from(base + offset)))
        .to_vec();
    assert_eq!(
        subnets, expected,
        "the free /28s, in order, around the foreign one"
    );

    let extra = unique_worker_id("extra");
    let refused = provider.spawn(spec(&extra)).await;
    match refused {
        Err(ProviderError::Unavailable(message)) => {
            assert!(message.contains("docker.subnet_pool"), "{message}");
        }
        other => panic!("a spawn past the pool's end: {other:?}"),
    }
    assert!(
        networks_of(&engine, &worker_id).await.len() == 3,
        "the refused spawn left no network"
    );

    // a destroyed sandbox's subnet is free again
    provider.destroy(&ids[1]).await.unwrap();
    provider
        .spawn(spec(&extra))
        .await
        .expect("a spawn on the freed subnet");
    assert_eq!(subnet_of(&engine, &extra).await, expected[1]);
    let result = provider
        .exec(&extra, shell("echo on its subnet"), DEFAULT_MAX_EXEC_OUTPUT)
        .await
        .unwrap();
    assert_eq!(result.stdout, b"on its subnet\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_sharing_an_engine_never_share_a_subnet() {
    let Some(config) = docker_or_skip("workers_sharing_an_engine").await else {
        return;
    };
    let config = DockerConfig {
        subnet_pool: private_pool(8),
        ..config
    };
    let (one, two) = (unique_worker_id("share"), unique_worker_id("share"));
    let _cleanup = DockerCleanup::new(&config, &[&one, &two]);
    let engine = Docker::connect_with_unix_defaults().expect("docker client");
    let providers = [
        DockerProvider::new(config.clone(), &one),
        DockerProvider::new(config.clone(), &two),
    ];
    // both workers fill the same pool at once: the engine refuses a subnet the other
    // took meanwhile, and the spawn picks another
    let spawns = providers.iter().flat_map(|provider| {
        (0..4).map(move |i| async move {
            let id = unique_worker_id(&format!("p{i}"));
            provider.spawn(spec(&id)).await.map(|_| id)
        })
    });
    let ids: Vec<String> = futures::future::join_all(spawns)
        .await
        .into_iter()
        .collect::<Result<_, _>>()
        .expect("every spawn finds a subnet");
    let mut subnets = HashSet::new();
    for id in &ids {
        let subnet: Ipv4Net = subnet_of(&engine, id).await.parse().unwrap();
        assert!(subnet.overlaps(config.subnet_pool), "{subnet} in the pool");
        assert!(subnets.insert(subnet), "{subnet} twice");
    }
    assert_eq!(subnets.len(), 8);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sandboxs_console_log_is_capped_on_disk() {
    let Some(config) = docker_or_skip("a_sandboxs_console_log_is_capped").await else {
        return;
    };
    let config = DockerConfig {
        log_max_size_mb: 1,
        log_max_files: 2,
        ..config
    };
    let worker_id = unique_worker_id("logcap");
    let _cleanup = DockerCleanup::new(&config, &[&worker_id]);
    let engine = Docker::connect_with_unix_defaults().expect("docker client");
    let provider = DockerProvider::new(config, &worker_id);
    let id = unique_worker_id("flood");
    provider.spawn(spec(&id)).await.unwrap();

    let container = engine
        .inspect_container(&format!("berth-{id}"), None)
        .await
        .unwrap();
    let log = container.host_config.unwrap().log_config.unwrap();
    assert_eq!(log.typ.as_deref(), Some("json-file"));
    let options = log.config.unwrap_or_default();
    assert_eq!(options.get("max-size").map(String::as_str), Some("1m"));
    assert_eq!(options.get("max-file").map(String::as_str), Some("2"));

    // about 3 MB onto the console, more than twice the cap, then a marker
    let line = "x".repeat(100);
    let flood =
        format!("yes {line} | head -n 30000 > /proc/1/fd/1; echo end-of-flood > /proc/1/fd/1");
    let result = provider
        .exec(&id, shell(&flood), DEFAULT_MAX_EXEC_OUTPUT)
        .await
        .unwrap();
    assert_eq!(result.exit_code, 0, "{result:?}");
    let log_path = std::path::PathBuf::from(container.log_path.expect("a log file"));
    eventually("the marker reaches the log", WAIT, || async {
        let text = std::fs::read_to_string(&log_path).ok()?;
        text.contains("end-of-flood").then_some(())
    })
    .await;
    let dir = log_path.parent().unwrap();
    let name = log_path.file_name().unwrap().to_string_lossy().into_owned();
    let mut total = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        if entry.file_name().to_string_lossy().starts_with(&name) {
            total += entry.metadata().unwrap().len();
        }
    }
    // two files of at most 1 MiB and one line each
    assert!(
        total <= 2 * (1024 * 1024 + 1024),
        "the console log takes {total} bytes on disk"
    );
}
