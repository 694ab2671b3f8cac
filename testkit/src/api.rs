//! [`Api`]: a small HTTP client of a control plane's public API, authenticated with
//! the admin key, with the calls the tests make most (create a sandbox, exec in it,
//! wait until the control plane is ready).

use std::time::Duration;

use crate::{TestControlPlane, eventually};

/// A small HTTP client of a control plane's public API, authenticated as admin.
#[derive(Debug, Clone)]
pub struct Api {
    pub base: String,
    pub key: String,
    pub http: reqwest::Client,
}

impl Api {
    pub fn new(cp: &TestControlPlane) -> Self {
        Self {
            base: format!("{}/api/v1", cp.api_url()),
            key: cp.admin_key.clone(),
            http: reqwest::Client::new(),
        }
    }

    pub fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.base))
            .header("X-API-Key", &self.key)
    }

    /// Sends and returns the status and the JSON body (`Null` when not JSON).
    pub async fn send(&self, request: reqwest::RequestBuilder) -> (u16, serde_json::Value) {
        let response = request.send().await.expect("request sent");
        let status = response.status().as_u16();
        let body = response.json().await.unwrap_or(serde_json::Value::Null);
        (status, body)
    }

    pub async fn get(&self, path: &str) -> (u16, serde_json::Value) {
        self.send(self.request(reqwest::Method::GET, path)).await
    }

    pub async fn post(&self, path: &str, body: serde_json::Value) -> (u16, serde_json::Value) {
        self.send(self.request(reqwest::Method::POST, path).json(&body))
            .await
    }

    pub async fn delete(&self, path: &str) -> (u16, serde_json::Value) {
        self.send(self.request(reqwest::Method::DELETE, path)).await
    }

    /// Waits until `/ready` answers 200 (an online worker with a healthy provider).
    pub async fn wait_ready(&self) {
        eventually(
            "the control plane to be ready",
            Duration::from_secs(15),
            || async { (self.get("/ready").await.0 == 200).then_some(()) },
        )
        .await;
    }

    /// `POST /sandboxes/{id}/exec` with `body`.
    pub async fn exec(&self, id: &str, body: serde_json::Value) -> (u16, serde_json::Value) {
        self.post(&format!("/sandboxes/{id}/exec"), body).await
    }

    /// The same client presenting `key` instead.
    pub fn with_key(&self, key: &str) -> Api {
        Api {
            key: key.to_owned(),
            ..self.clone()
        }
    }

    /// Creates team `name`; `settings` holds the other fields of `POST /teams`
    /// (quotas, pools). Panics unless 201.
    pub async fn create_team(&self, name: &str, settings: serde_json::Value) {
        let mut body = serde_json::json!({ "name": name });
        if let (Some(body), Some(settings)) = (body.as_object_mut(), settings.as_object()) {
            body.extend(settings.clone());
        }
        let (status, answer) = self.post("/teams", body).await;
        assert_eq!(status, 201, "team {name} not created: {answer}");
    }

    /// Mints a key bound to `team` with `scopes` and returns it in full; panics
    /// unless 201.
    pub async fn team_key(&self, team: &str, scopes: &[&str]) -> String {
        let body =
            serde_json::json!({"name": format!("{team} key"), "team": team, "scopes": scopes});
        let (status, answer) = self.post("/keys", body).await;
        assert_eq!(status, 201, "key for team {team} not minted: {answer}");
        answer["key"].as_str().expect("the key").to_owned()
    }

    /// Creates a sandbox and returns its JSON; panics unless 201.
    pub async fn create_sandbox(&self, body: serde_json::Value) -> serde_json::Value {
        let (status, sandbox) = self.post("/sandboxes", body).await;
        assert_eq!(status, 201, "create failed: {sandbox}");
        sandbox
    }
}

/// The `id` of a sandbox's JSON.
pub fn id_of(sandbox: &serde_json::Value) -> String {
    sandbox["id"].as_str().expect("a sandbox id").to_owned()
}
