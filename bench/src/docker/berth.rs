//! The Berth side of the timed calls: creating a sandbox on the docker worker through
//! the HTTP API (returning once it runs) and destroying it.

use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use serde_json::{Value, json};

use super::CLI_TIMEOUT;
use super::measure::Target;

/// Creates a Berth sandbox on the docker worker; returns once it runs.
pub(super) async fn create_sandbox(target: &Target<'_>) -> anyhow::Result<String> {
    let url = target.api.url("/sandboxes");
    let response = target
        .http
        .post(&url)
        .header("X-API-Key", &target.api.key)
        .json(&json!({ "provider": "docker", "image": target.image, "ttl": "10m" }))
        .send()
        .await?;
    let status = response.status();
    let body: Value = response.json().await?;
    ensure!(status.as_u16() == 201, "create answered {status}: {body}");
    let id = body["id"].as_str().context("no sandbox id")?.to_owned();
    // the create answers once the worker started the container; should that ever
    // change, wait for running here so the timing still means spawn-to-running
    let mut state = body["state"].as_str().unwrap_or_default().to_owned();
    let deadline = Instant::now() + CLI_TIMEOUT;
    while state != "running" {
        ensure!(
            matches!(
                state.as_str(),
                "pending" | "starting" | "scheduled" | "creating"
            ),
            "sandbox {id} is {state:?}, not running: {body}"
        );
        ensure!(
            Instant::now() < deadline,
            "sandbox {id} was not running within {CLI_TIMEOUT:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
        let response = target
            .http
            .get(format!("{url}/{id}"))
            .header("X-API-Key", &target.api.key)
            .send()
            .await?;
        let body: Value = response.json().await?;
        state = body["state"].as_str().unwrap_or_default().to_owned();
    }
    Ok(id)
}

pub(super) async fn destroy_sandbox(target: &Target<'_>, id: &str) -> anyhow::Result<()> {
    let response = target
        .http
        .delete(target.api.url(&format!("/sandboxes/{id}")))
        .header("X-API-Key", &target.api.key)
        .send()
        .await?;
    let status = response.status();
    ensure!(
        status.as_u16() == 200,
        "destroy answered {status}: {}",
        response.text().await.unwrap_or_default()
    );
    Ok(())
}
