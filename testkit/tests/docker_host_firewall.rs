//! A docker sandbox against the host it runs on and the world beyond it, with the real
//! engine and the real iptables: the host firewall keeps it off every service of the
//! host (with a positive control: the same sandbox reaches the service once the rule
//! is removed, until the heartbeat's reconcile puts it back), and `internet: false`
//! cuts it off from other hosts (one in a network namespace of the test's own, which
//! an `internet: true` sandbox reaches). Skipped visibly without an engine; needs root.

use std::net::Ipv4Addr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use bollard::Docker;
use serde_json::json;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;

use berth_testkit::docker::{DockerCleanup, docker_or_skip, unique_worker_id};
use berth_testkit::{TestFleet, eventually, shell};
use berth_worker::DockerConfig;
use berth_worker::provider::docker::{DockerProvider, FIREWALL_CHAIN};
use berth_worker::provider::output::DEFAULT_MAX_EXEC_OUTPUT as LIMIT;
use berth_worker::provider::{Provider, SandboxSpec};

const WAIT: Duration = Duration::from_secs(30);
/// What the test's host service answers.
const GREETING: &str = "host-service-reached";

fn spec(id: &str, internet: bool) -> SandboxSpec {
    SandboxSpec {
        memory_mb: 96,
        internet,
        ..berth_testkit::spec(id)
    }
}

/// The test config on a pool of its own (so removing its jump touches no other
/// test's sandboxes), the firewall checked often.
fn config(base: &DockerConfig, pool: &str, host_firewall: bool) -> DockerConfig {
    DockerConfig {
        subnet_pool: pool.parse().unwrap(),
        host_firewall,
        host_firewall_check_interval: Duration::from_millis(200),
        ..base.clone()
    }
}

async fn run(provider: &DockerProvider, id: &str, line: &str) -> String {
    let result = provider.exec(id, shell(line), LIMIT).await.unwrap();
    let mut out = String::from_utf8_lossy(&result.stdout).into_owned();
    out.push_str(&String::from_utf8_lossy(&result.stderr));
    out
}

/// The gateway of a sandbox's own network: the host's address on it.
async fn gateway(id: &str) -> String {
    let docker = Docker::connect_with_unix_defaults().unwrap();
    let container = docker
        .inspect_container(&format!("berth-{id}"), None)
        .await
        .unwrap();
    let networks = container.network_settings.unwrap().networks.unwrap();
    networks[&format!("berth-{id}")].gateway.clone().unwrap()
}

/// A TCP service on every address of the host, answering [`GREETING`].
async fn host_service() -> u16 {
    let listener = TcpListener::bind((Ipv4Addr::UNSPECIFIED, 0)).await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let _ = socket.write_all(GREETING.as_bytes()).await;
        }
    });
    port
}

fn iptables(args: &[&str]) -> bool {
    Command::new("iptables")
        .arg("-w")
        .arg("5")
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

/// Removes the `INPUT` jump of a test's pool when the test ends (the chain is shared
/// with every other worker on the host and stays).
struct JumpGuard(String);

impl Drop for JumpGuard {
    fn drop(&mut self) {
        while iptables(&["-D", "INPUT", "-s", &self.0, "-j", FIREWALL_CHAIN]) {}
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sandbox_cannot_reach_the_hosts_own_services() {
    let Some(base) = docker_or_skip("a_sandbox_cannot_reach_the_hosts_own_services").await else {
        return;
    };
    let port = host_service().await;
    let connect = |address: &str| format!("nc -w 3 {address} {port} </dev/null 2>&1; true");

    // positive control: on a pool without the firewall a sandbox reaches the service
    let open_pool = "10.214.0.0/24";
    let (open_worker, walled_worker) = (unique_worker_id("fw-open"), unique_worker_id("fw"));
    let walled_pool = "10.214.1.0/24";
    let _jump = JumpGuard(walled_pool.to_owned());
    let _cleanup = DockerCleanup::new(&base, &[&open_worker, &walled_worker]);
    let open = DockerProvider::new(config(&base, open_pool, false), &open_worker);
    let sandbox = unique_worker_id("open");
    open.spawn(spec(&sandbox, true)).await.unwrap();
    let open_gateway = gateway(&sandbox).await;
    let reached = run(&open, &sandbox, &connect(&open_gateway)).await;
    assert!(
        reached.contains(GREETING),
        "without the firewall the host service answers: {reached:?}"
    );

    // with it, neither the gateway nor another host address (the open sandbox's
    // gateway, on another bridge) answers, and the refusal is a reset
    let walled = DockerProvider::new(config(&base, walled_pool, true), &walled_worker);
    let sandbox = unique_worker_id("walled");
    walled.spawn(spec(&sandbox, true)).await.unwrap();
    let walled_gateway = gateway(&sandbox).await;
    for address in [&walled_gateway, &open_gateway] {
        let answer = run(&walled, &sandbox, &connect(address)).await;
        assert!(!answer.contains(GREETING), "{address}: {answer:?}");
        assert!(
            answer.contains("refused"),
            "{address}: the firewall answers with a reset: {answer:?}"
        );
    }
    assert!(walled.health().await.healthy);

    // someone removes the jump (a firewall reload): the hole is real ...
    assert!(iptables(&[
        "-D",
        "INPUT",
        "-s",
        walled_pool,
        "-j",
        FIREWALL_CHAIN
    ]));
    let answer = run(&walled, &sandbox, &connect(&walled_gateway)).await;
    assert!(answer.contains(GREETING), "{answer:?}");
    // ... and the heartbeat's inventory pass closes it again
    eventually("the firewall is repaired", WAIT, || async {
        walled.list().await.ok()?;
        let answer = run(&walled, &sandbox, &connect(&walled_gateway)).await;
        (!answer.contains(GREETING)).then_some(())
    })
    .await;
}

/// A network namespace with one address, `10.231.<n>.2`, on a veth pair whose host
/// end is `10.231.<n>.1`, serving HTTP there; torn down on drop.
struct OutsideHost {
    namespace: String,
    host_end: String,
    address: String,
    server: Option<Child>,
    _root: tempfile::TempDir,
}

impl OutsideHost {
    fn start() -> Option<Self> {
        let n = std::process::id() % 250 + 1;
        let namespace = format!("berth-egress-{n}");
        let (host_end, inner_end) = (format!("bveh{n}"), format!("bven{n}"));
        let address = format!("10.231.{n}.2");
        let root = tempfile::tempdir().unwrap();
        std::fs::write(root.path().join("marker"), "outside-reached").unwrap();
        let mut host = Self {
            namespace: namespace.clone(),
            host_end: host_end.clone(),
            address: address.clone(),
            server: None,
            _root: root,
        };
        let steps: [&[&str]; 7] = [
            &["netns", "add", &namespace],
            &[
                "link", "add", &host_end, "type", "veth", "peer", "name", &inner_end,
            ],
            &["link", "set", &inner_end, "netns", &namespace],
            &["addr", "add", &format!("10.231.{n}.1/30"), "dev", &host_end],
            &["link", "set", &host_end, "up"],
            &[
                "-n",
                &namespace,
                "addr",
                "add",
                &format!("{address}/30"),
                "dev",
                &inner_end,
            ],
            &["-n", &namespace, "link", "set", &inner_end, "up"],
        ];
        for step in steps {
            let done = Command::new("ip").args(step).status();
            if !done.is_ok_and(|status| status.success()) {
                eprintln!("cannot set up the outside host: ip {}", step.join(" "));
                return None;
            }
        }
        let server = Command::new("ip")
            .args(["netns", "exec", &namespace, "python3", "-m", "http.server"])
            .args(["8080", "--bind", &address, "--directory"])
            .arg(host._root.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        host.server = Some(server);
        Some(host)
    }

    /// A shell line fetching the marker (busybox's static wget crashes after some
    /// answers, so the request is written by hand).
    fn fetch(&self) -> String {
        format!(
            "printf 'GET /marker HTTP/1.0\\r\\n\\r\\n' | nc -w 3 {} 8080 2>&1; true",
            self.address
        )
    }
}

impl Drop for OutsideHost {
    fn drop(&mut self) {
        if let Some(mut server) = self.server.take() {
            let _ = server.kill();
            let _ = server.wait();
        }
        let _ = Command::new("ip")
            .args(["link", "del", &self.host_end])
            .status();
        let _ = Command::new("ip")
            .args(["netns", "del", &self.namespace])
            .status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sandbox_without_internet_reaches_no_other_host() {
    let Some(base) = docker_or_skip("a_sandbox_without_internet_reaches_no_other_host").await
    else {
        return;
    };
    let outside = match OutsideHost::start() {
        Some(outside) => outside,
        None if std::env::var("BERTH_REQUIRE_NETNS").as_deref() == Ok("1") => {
            panic!("BERTH_REQUIRE_NETNS=1 but no network namespace could be made")
        }
        None => {
            eprintln!("SKIPPED a_sandbox_without_internet_reaches_no_other_host: no netns");
            return;
        }
    };
    let pool = "10.214.2.0/24";
    let _jump = JumpGuard(pool.to_owned());
    let worker = unique_worker_id("egress");
    let _cleanup = DockerCleanup::new(&base, &[&worker]);
    let provider = DockerProvider::new(config(&base, pool, true), &worker);
    let fetch = outside.fetch();

    let online = unique_worker_id("online");
    provider.spawn(spec(&online, true)).await.unwrap();
    eventually(
        "a sandbox with internet reaches the other host",
        WAIT,
        || {
            let (provider, fetch, online) = (&provider, &fetch, &online);
            async move {
                run(provider, online, fetch)
                    .await
                    .contains("outside-reached")
                    .then_some(())
            }
        },
    )
    .await;

    let offline = unique_worker_id("offline");
    provider.spawn(spec(&offline, false)).await.unwrap();
    let answer = run(&provider, &offline, &fetch).await;
    assert!(!answer.contains("outside-reached"), "{answer:?}");
    assert!(
        answer.contains("nc:"),
        "nc failed, not the shell: {answer:?}"
    );
    // the one with internet still does: nothing about the other host changed
    let answer = run(&provider, &online, &fetch).await;
    assert!(answer.contains("outside-reached"), "{answer:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn internet_false_goes_from_the_api_to_an_internal_network() {
    let Some(base) = docker_or_skip("internet_false_goes_from_the_api").await else {
        return;
    };
    let pool = "10.214.3.0/24";
    let _jump = JumpGuard(pool.to_owned());
    let worker = unique_worker_id("egress-api");
    let _cleanup = DockerCleanup::new(&base, &[&worker]);
    let fleet = TestFleet::builder()
        .docker(config(&base, pool, true))
        .worker_ids(&[worker.as_str()])
        .start()
        .await;
    let docker = Docker::connect_with_unix_defaults().unwrap();
    for internet in [json!(false), json!(true), json!(null)] {
        let sandbox = fleet
            .api
            .create_sandbox(json!({"ttl": "10m", "internet": internet}))
            .await;
        let id = sandbox["id"].as_str().unwrap();
        let expected = internet.as_bool().unwrap_or(true);
        assert_eq!(sandbox["internet"], expected, "{sandbox}");
        let (_, got) = fleet.api.get(&format!("/sandboxes/{id}")).await;
        assert_eq!(got["internet"], expected, "{got}");
        let network = docker
            .inspect_network(&format!("berth-{id}"), None)
            .await
            .unwrap();
        assert_eq!(network.internal, Some(!expected), "{internet}");
    }
    let (status, body) = fleet
        .api
        .post("/sandboxes", json!({"internet": "no"}))
        .await;
    assert_eq!(status, 400, "{body}");
    fleet.stop().await;
}
