//! The control plane's public HTTP API as the bench uses it for set-up and checks:
//! health, join tokens, sandboxes, the worker list and `/metrics`, with the admin key.

use std::time::Duration;

use anyhow::{Context, bail, ensure};
use serde_json::{Value, json};

/// A sandbox as the bench needs it.
#[derive(Debug, Clone)]
pub struct SandboxRef {
    pub id: String,
    pub generation: u64,
    /// The worker it was placed on.
    pub worker_id: String,
}

#[derive(Debug, Clone)]
pub struct Api {
    /// `http://host:port`
    pub base_url: String,
    pub key: String,
    http: reqwest::Client,
}

impl Api {
    pub fn new(base_url: &str, key: &str) -> Self {
        Self {
            base_url: base_url.to_owned(),
            key: key.to_owned(),
            http: reqwest::Client::new(),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}/api/v1{path}", self.base_url)
    }

    /// Sends and returns the status and the JSON body (`Null` when not JSON).
    async fn send(&self, request: reqwest::RequestBuilder) -> anyhow::Result<(u16, Value)> {
        let response = request.header("X-API-Key", &self.key).send().await?;
        let status = response.status().as_u16();
        let body = response.json().await.unwrap_or(Value::Null);
        Ok((status, body))
    }

    pub async fn wait_healthy(&self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Ok((200, _)) = self.send(self.http.get(self.url("/health"))).await {
                return Ok(());
            }
            ensure!(
                tokio::time::Instant::now() < deadline,
                "the control plane did not answer /health within {timeout:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// A join token good for `uses` enrollments, giving the workers `labels`.
    pub async fn create_join_token(
        &self,
        uses: u32,
        labels: Option<&Value>,
    ) -> anyhow::Result<String> {
        let mut body = json!({ "uses": uses, "ttl": "2h" });
        if let Some(labels) = labels {
            body["labels"] = labels.clone();
        }
        let (status, body) = self
            .send(self.http.post(self.url("/tokens")).json(&body))
            .await?;
        ensure!(
            status == 201,
            "creating a join token answered {status}: {body}"
        );
        body["token"]
            .as_str()
            .map(str::to_owned)
            .context("no token in the answer")
    }

    /// Waits until the worker shows as online.
    pub async fn wait_worker_online(
        &self,
        worker_id: &str,
        timeout: Duration,
    ) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let (status, body) = self
                .send(self.http.get(self.url(&format!("/workers/{worker_id}"))))
                .await?;
            if status == 200 && body["status"] == "online" {
                return Ok(());
            }
            ensure!(
                tokio::time::Instant::now() < deadline,
                "worker {worker_id} was not online within {timeout:?} (last answer {status}: {body})"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until the worker's heartbeats report `provider` healthy (the scheduler
    /// skips it until then).
    pub async fn wait_provider_healthy(
        &self,
        worker_id: &str,
        provider: &str,
        timeout: Duration,
    ) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let (status, body) = self
                .send(self.http.get(self.url(&format!("/workers/{worker_id}"))))
                .await?;
            let capability = body["capabilities"]
                .as_array()
                .and_then(|list| list.iter().find(|c| c["name"] == provider))
                .cloned();
            if status == 200 && capability.as_ref().is_some_and(|c| c["healthy"] == true) {
                return Ok(());
            }
            ensure!(
                tokio::time::Instant::now() < deadline,
                "the {provider} provider of worker {worker_id} was not healthy within {timeout:?} \
                 (last answer {status}: {})",
                capability.unwrap_or(body)
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn create_sandbox(&self, provider: &str) -> anyhow::Result<SandboxRef> {
        self.create_sandbox_where(provider, &[]).await
    }

    /// A sandbox on a worker whose labels meet every one of `constraints`
    /// (`key=value`, `key!=value`).
    pub async fn create_sandbox_where(
        &self,
        provider: &str,
        constraints: &[&str],
    ) -> anyhow::Result<SandboxRef> {
        let (status, body) = self
            .send(self.http.post(self.url("/sandboxes")).json(&json!({
                "provider": provider,
                "ttl": "1h",
                "constraints": constraints,
            })))
            .await?;
        if status != 201 {
            bail!("creating a sandbox answered {status}: {body}");
        }
        Ok(SandboxRef {
            id: body["id"].as_str().context("no sandbox id")?.to_owned(),
            generation: body["generation"].as_u64().context("no lease generation")?,
            worker_id: body["worker_id"]
                .as_str()
                .context("no worker id")?
                .to_owned(),
        })
    }

    /// `GET /workers`: (id, status) of every worker.
    pub async fn worker_statuses(&self) -> anyhow::Result<Vec<(String, String)>> {
        let (status, body) = self.send(self.http.get(self.url("/workers"))).await?;
        ensure!(status == 200, "listing workers answered {status}: {body}");
        let list = body
            .as_array()
            .or_else(|| body["workers"].as_array())
            .context("the worker list is not an array")?;
        Ok(list
            .iter()
            .map(|w| {
                (
                    w["id"].as_str().unwrap_or_default().to_owned(),
                    w["status"].as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect())
    }

    /// The Prometheus text of `/metrics`.
    pub async fn metrics(&self) -> anyhow::Result<String> {
        let response = self
            .http
            .get(format!("{}/metrics", self.base_url))
            .send()
            .await?;
        ensure!(
            response.status().is_success(),
            "/metrics answered {}",
            response.status()
        );
        Ok(response.text().await?)
    }
}
