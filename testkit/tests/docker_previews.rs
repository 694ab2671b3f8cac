//! Preview URLs and port streams into docker sandboxes, with real clients: headless
//! Chromium opens a page that busybox `httpd` serves inside a container, through a
//! signed preview link (the link's redirect and cookie included), and the test reads
//! the page's text from the DOM; without a key or link the same URL is refused; and
//! `docker inspect` shows the container publishes no port on the host. Runs against a
//! listening worker and one that dials out.
//!
//! Skips visibly without docker or Chromium (fails instead with
//! `BERTH_REQUIRE_DOCKER=1` / `BERTH_REQUIRE_BROWSER=1`, as CI sets).

use std::process::Command;
use std::time::Duration;

use berth_testkit::docker::{DockerCleanup, docker_or_skip, unique_worker_id};
use berth_testkit::{TestFleet, id_of};
use serde_json::{Value, json};

const DOMAIN: &str = "preview.localhost";
const PAGE_TEXT: &str = "hello from httpd in a berth sandbox";

/// The Chromium binary, or why there is none.
fn chromium() -> Result<String, String> {
    for name in ["chromium", "chromium-browser", "google-chrome"] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {name}")])
            .output()
            .map_err(|err| err.to_string())?;
        if found.status.success() {
            return Ok(String::from_utf8_lossy(&found.stdout).trim().to_owned());
        }
    }
    Err("no chromium on PATH (apt-get install chromium)".into())
}

fn skip_or_fail(test: &str, why: &str) {
    if std::env::var("BERTH_REQUIRE_BROWSER").as_deref() == Ok("1") {
        panic!("{test}: BERTH_REQUIRE_BROWSER=1 but {why}");
    }
    eprintln!("SKIPPED {test}: {why}");
}

/// The page's DOM after Chromium loaded `url` (every `*.preview.localhost` name
/// resolving to loopback).
fn dump_dom(chromium: &str, url: &str) -> String {
    let profile = tempfile::tempdir().unwrap();
    let out = Command::new("timeout")
        .arg("90")
        .arg(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            &format!("--user-data-dir={}", profile.path().display()),
            &format!("--host-resolver-rules=MAP *.{DOMAIN} 127.0.0.1"),
            "--dump-dom",
            url,
        ])
        .output()
        .expect("chromium runs");
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

async fn chromium_loads_an_httpd_page_through_a_preview_link(dial_out: bool) {
    let test = "chromium_loads_an_httpd_page_through_a_preview_link";
    let Some(docker) = docker_or_skip(test).await else {
        return;
    };
    let chromium = match chromium() {
        Ok(chromium) => chromium,
        Err(why) => return skip_or_fail(test, &why),
    };
    let worker_id = unique_worker_id("pv");
    let _cleanup = DockerCleanup::new(&docker, &[&worker_id]);
    let builder = TestFleet::builder()
        .docker(docker)
        .worker_ids(&[&worker_id])
        .control_plane(|config| config.preview_domain = DOMAIN.into());
    let builder = if dial_out {
        builder.worker(|config| config.listen = None)
    } else {
        builder
    };
    let fleet = builder.start().await;
    let sandbox = fleet.api.create_sandbox(json!({"ttl": "10m"})).await;
    let id = id_of(&sandbox);
    let script = format!(
        "mkdir -p /tmp/site && printf '%s' '<html><head><title>berth</title></head><body><h1 id=\"t\">{PAGE_TEXT}</h1></body></html>' > /tmp/site/index.html && httpd -p 8000 -h /tmp/site && echo up"
    );
    let (status, out) = fleet.api.exec(&id, json!({"command": script})).await;
    assert_eq!(
        (status, out["stdout"].as_str()),
        (200, Some("up\n")),
        "{out}"
    );

    let api = fleet.cp.api_addr;
    let (status, link) = fleet
        .api
        .post(&format!("/sandboxes/{id}/ports/8000/link"), json!({}))
        .await;
    assert_eq!(status, 201, "{link}");
    let link = link["url"].as_str().unwrap().replacen(
        &format!(".{DOMAIN}/"),
        &format!(".{DOMAIN}:{}/", api.port()),
        1,
    );
    let dom = tokio::task::spawn_blocking({
        let (chromium, link) = (chromium.clone(), link.clone());
        move || dump_dom(&chromium, &link)
    })
    .await
    .unwrap();
    assert!(dom.contains(PAGE_TEXT), "the page through the link: {dom}");

    // the same URL without the link: refused
    let bare = link.split('?').next().unwrap().to_owned();
    let dom = tokio::task::spawn_blocking(move || dump_dom(&chromium, &bare))
        .await
        .unwrap();
    assert!(!dom.contains(PAGE_TEXT), "{dom}");
    assert!(dom.contains("This preview is private"), "{dom}");

    // nothing is published on the host
    let container = sandbox["vm_id"].as_str().unwrap().to_owned();
    let inspect = Command::new("docker")
        .args(["inspect", &container])
        .output()
        .unwrap();
    assert!(inspect.status.success());
    let inspect: Value = serde_json::from_slice(&inspect.stdout).unwrap();
    let ports = &inspect[0]["NetworkSettings"]["Ports"];
    assert!(
        ports.is_null()
            || ports
                .as_object()
                .is_some_and(|ports| ports.values().all(Value::is_null)),
        "published ports: {ports}"
    );
    let bindings = &inspect[0]["HostConfig"]["PortBindings"];
    assert!(
        bindings.is_null() || bindings.as_object().is_some_and(|b| b.is_empty()),
        "port bindings: {bindings}"
    );
    assert_eq!(inspect[0]["HostConfig"]["PublishAllPorts"], false);

    fleet.api.delete(&format!("/sandboxes/{id}")).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    fleet.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_loads_an_httpd_page_through_a_preview_link_from_a_listening_worker() {
    chromium_loads_an_httpd_page_through_a_preview_link(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_loads_an_httpd_page_through_a_preview_link_from_a_dial_out_worker() {
    chromium_loads_an_httpd_page_through_a_preview_link(true).await;
}
