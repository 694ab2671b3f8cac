//! What keeps docker sandboxes apart, checked against the real engine: no route from
//! one sandbox to another's network (with a positive control, so the check can fail),
//! no engine socket inside and nothing listening at the engine's usual ports, and the
//! limits and hardening read back from the engine. Skipped visibly without an engine.

use std::time::Duration;

use bollard::Docker;

use berth_testkit::docker::{DockerCleanup, docker_or_skip, unique_worker_id};
use berth_testkit::{eventually, shell};
use berth_worker::provider::docker::DockerProvider;
use berth_worker::provider::output::DEFAULT_MAX_EXEC_OUTPUT as LIMIT;
use berth_worker::provider::{Provider, SandboxSpec};

fn spec(id: &str) -> SandboxSpec {
    SandboxSpec {
        memory_mb: 96,
        ..berth_testkit::spec(id)
    }
}

async fn run(provider: &DockerProvider, id: &str, line: &str) -> (i32, String) {
    let result = provider.exec(id, shell(line), LIMIT).await.unwrap();
    (
        result.exit_code,
        String::from_utf8_lossy(&result.stdout).into_owned(),
    )
}

/// (IP address, gateway) of a sandbox on its own network.
async fn address(id: &str) -> (String, String) {
    let docker = Docker::connect_with_unix_defaults().unwrap();
    let container = docker
        .inspect_container(&format!("berth-{id}"), None)
        .await
        .unwrap();
    let networks = container.network_settings.unwrap().networks.unwrap();
    let endpoint = &networks[&format!("berth-{id}")];
    (
        endpoint.ip_address.clone().unwrap(),
        endpoint.gateway.clone().unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sandbox_cannot_reach_another_sandbox_or_the_engine() {
    let Some(config) = docker_or_skip("a_sandbox_cannot_reach_another_sandbox").await else {
        return;
    };
    let worker_id = unique_worker_id("iso");
    let _cleanup = DockerCleanup::new(&config, &[&worker_id]);
    let provider = DockerProvider::new(config, &worker_id);
    let (a, b) = (unique_worker_id("a"), unique_worker_id("b"));
    provider.spawn(spec(&a)).await.unwrap();
    provider.spawn(spec(&b)).await.unwrap();
    let (b_ip, _) = address(&b).await;
    let (_, a_gateway) = address(&a).await;
    // a web server in B, kept running by the open stream
    let _server = provider
        .exec_stream(
            &b,
            shell("echo reachable > /tmp/index.html; exec httpd -f -p 8080 -h /tmp"),
        )
        .await
        .unwrap();
    let fetch = format!("printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 2 {b_ip} 8080");
    // positive control: B reaches its own server on that address
    eventually(
        "B's server answers on its address",
        Duration::from_secs(20),
        || async {
            run(&provider, &b, &fetch)
                .await
                .1
                .contains("reachable")
                .then_some(())
        },
    )
    .await;
    let (code, body) = run(&provider, &a, &fetch).await;
    assert!(!body.contains("reachable"), "A reached B: {body}");
    assert_ne!(code, 0);

    // no engine socket inside, nothing at the engine's TCP ports on the gateway
    let (code, listing) = run(
        &provider,
        &a,
        "ls /var/run/docker.sock /run/docker.sock /run/containerd/containerd.sock 2>/dev/null",
    )
    .await;
    assert_ne!(code, 0, "an engine socket is inside: {listing}");
    for port in [2375, 2376] {
        let (code, _) = run(
            &provider,
            &a,
            &format!("nc -w 2 {a_gateway} {port} </dev/null"),
        )
        .await;
        assert_ne!(code, 0, "the engine's port {port} answers from inside");
    }
    // and no capability to change that from inside
    let (code, _) = run(&provider, &a, "ip link add dummy0 type dummy 2>/dev/null").await;
    assert_ne!(code, 0, "a sandbox could change its network");
}

#[tokio::test]
async fn limits_and_hardening_are_applied_by_the_engine() {
    let Some(mut config) = docker_or_skip("limits_and_hardening_are_applied").await else {
        return;
    };
    config.read_only_rootfs = true;
    config.pids_limit = 64;
    let worker_id = unique_worker_id("lim");
    let _cleanup = DockerCleanup::new(&config, &[&worker_id]);
    let provider = DockerProvider::new(config, &worker_id);
    let id = unique_worker_id("sb");
    let mut wanted = spec(&id);
    wanted.memory_mb = 200;
    wanted.vcpus = 2;
    provider.spawn(wanted).await.unwrap();

    let docker = Docker::connect_with_unix_defaults().unwrap();
    let container = docker
        .inspect_container(&format!("berth-{id}"), None)
        .await
        .unwrap();
    let host = container.host_config.unwrap();
    assert_eq!(host.memory, Some(200 * 1024 * 1024));
    assert_eq!(host.memory_swap, Some(200 * 1024 * 1024));
    assert_eq!(host.nano_cpus, Some(2_000_000_000));
    assert_eq!(host.pids_limit, Some(64));
    assert_eq!(host.cap_drop, Some(vec!["ALL".to_owned()]));
    assert_eq!(
        host.security_opt,
        Some(vec!["no-new-privileges".to_owned()])
    );
    assert_eq!(host.readonly_rootfs, Some(true));
    assert_eq!(host.init, Some(true));
    assert_eq!(host.runtime.as_deref(), Some("runc"));
    assert!(host.port_bindings.unwrap_or_default().is_empty());
    assert_eq!(host.publish_all_ports, Some(false));
    assert_ne!(host.privileged, Some(true));

    // what the sandbox sees: no capabilities, a read-only root, writable /tmp and
    // /workspace, no new privileges
    let (_, status) = run(
        &provider,
        &id,
        "grep -E '^(CapEff|NoNewPrivs)' /proc/self/status",
    )
    .await;
    assert!(status.contains("CapEff:\t0000000000000000"), "{status}");
    assert!(status.contains("NoNewPrivs:\t1"), "{status}");
    assert_ne!(run(&provider, &id, "touch /etc/x 2>/dev/null").await.0, 0);
    assert_eq!(run(&provider, &id, "touch /tmp/x /workspace/x").await.0, 0);
    // the pids limit holds: far more sleepers than allowed cannot all start
    let (_, started) = run(
        &provider,
        &id,
        "n=0; for i in $(seq 100); do sleep 30 2>/dev/null & n=$((n+1)); done; sleep 0.5; ps -o args | grep -c '^sleep 30'",
    )
    .await;
    let started: u32 = started.trim().parse().unwrap_or(0);
    assert!(
        started < 64,
        "{started} processes started under a limit of 64"
    );
}
