//! The client commands' connection to the public API: URL, API key (flag, variable,
//! key file, or the admin.key of a control plane's data dir next to us), TLS trust, and
//! turning `{"code","message"}` error bodies into readable errors.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, bail};
use clap::Args;
use serde::de::DeserializeOwned;
use serde_json::Value;

#[derive(Debug, Clone, Args)]
pub struct ClientArgs {
    /// Public API URL.
    #[arg(long, env = "BERTH_API_URL", default_value = "http://127.0.0.1:7423")]
    pub api_url: String,
    /// API key (X-API-Key).
    #[arg(long, env = "BERTH_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// File holding the API key.
    #[arg(long, env = "BERTH_API_KEY_FILE", conflicts_with = "api_key")]
    pub api_key_file: Option<PathBuf>,
    /// A control plane's data dir; its admin.key and ca.pem are used when no key or CA is given.
    #[arg(long, env = "BERTH_DATA_DIR", default_value = "berth-data")]
    pub data_dir: PathBuf,
    /// CA certificate to trust for an https:// API URL (default: <data-dir>/ca.pem).
    #[arg(long, env = "BERTH_CA_FILE")]
    pub ca_file: Option<PathBuf>,
    /// Output format.
    #[arg(short = 'o', long, default_value = "table", value_parser = ["table", "json"])]
    pub output: String,
}

impl ClientArgs {
    pub fn json(&self) -> bool {
        self.output == "json"
    }
}

pub struct ApiClient {
    http: reqwest::Client,
    base: String,
    key: Option<String>,
}

impl ApiClient {
    pub fn new(args: &ClientArgs) -> anyhow::Result<Self> {
        let base = args.api_url.trim_end_matches('/').to_owned();
        let mut builder = reqwest::Client::builder().timeout(std::time::Duration::from_secs(60));
        if base.starts_with("https://") {
            builder = builder.use_preconfigured_tls(tls_config(args)?);
        } else if !base.starts_with("http://") {
            bail!("api url {base:?} must start with http:// or https://");
        }
        Ok(Self {
            http: builder.build()?,
            base,
            key: api_key(args)?,
        })
    }

    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        self.send(self.http.get(self.url(path))).await
    }

    pub async fn post<T: DeserializeOwned>(&self, path: &str, body: &Value) -> anyhow::Result<T> {
        self.send(self.http.post(self.url(path)).json(body)).await
    }

    pub async fn delete<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        self.send(self.http.delete(self.url(path))).await
    }

    /// Sends `request` (built on [`ApiClient::request`]) and returns the raw response
    /// when it succeeded, for streamed bodies.
    pub async fn raw(&self, request: reqwest::RequestBuilder) -> anyhow::Result<reqwest::Response> {
        let response = self
            .authorized(request)
            .send()
            .await
            .with_context(|| format!("cannot reach the control plane at {}", self.base))?;
        if response.status().is_success() {
            return Ok(response);
        }
        let status = response.status();
        let body = response.bytes().await?;
        Err(self.error(status, &body))
    }

    /// A request to `path` on the API, not yet sent.
    pub fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http.request(method, self.url(path))
    }

    fn authorized(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.key {
            Some(key) => request.header("X-API-Key", key),
            None => request,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn send<T: DeserializeOwned>(
        &self,
        request: reqwest::RequestBuilder,
    ) -> anyhow::Result<T> {
        let response = self
            .authorized(request)
            .send()
            .await
            .with_context(|| format!("cannot reach the control plane at {}", self.base))?;
        let status = response.status();
        let body = response.bytes().await?;
        if status.is_success() {
            return serde_json::from_slice(&body)
                .context("the control plane answered with unexpected JSON");
        }
        Err(self.error(status, &body))
    }

    fn error(&self, status: reqwest::StatusCode, body: &[u8]) -> anyhow::Error {
        let error: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
        let code = error["code"].as_str().unwrap_or("ERROR");
        let message = error["message"]
            .as_str()
            .map(str::to_owned)
            .unwrap_or_else(|| String::from_utf8_lossy(body).into_owned());
        let hint = if status == reqwest::StatusCode::UNAUTHORIZED && self.key.is_none() {
            " (no API key: pass --api-key, set BERTH_API_KEY, or run next to the control plane's data dir)"
        } else {
            ""
        };
        anyhow::anyhow!("{code} ({}): {message}{hint}", status.as_u16())
    }
}

fn api_key(args: &ClientArgs) -> anyhow::Result<Option<String>> {
    if let Some(key) = &args.api_key {
        return Ok(Some(key.trim().to_owned()));
    }
    let path = match &args.api_key_file {
        Some(path) => path.clone(),
        None => {
            let default = args.data_dir.join("admin.key");
            if !default.exists() {
                return Ok(None);
            }
            default
        }
    };
    let key = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read API key file {}", path.display()))?;
    Ok(Some(key.trim().to_owned()))
}

fn tls_config(args: &ClientArgs) -> anyhow::Result<rustls::ClientConfig> {
    let path = args
        .ca_file
        .clone()
        .unwrap_or_else(|| args.data_dir.join("ca.pem"));
    let pem = std::fs::read(&path)
        .with_context(|| format!("cannot read CA certificate {} (--ca-file)", path.display()))?;
    let mut roots = rustls::RootCertStore::empty();
    use rustls_pki_types::pem::PemObject;
    for cert in rustls_pki_types::CertificateDer::pem_slice_iter(&pem) {
        roots.add(cert.context("bad CA certificate")?)?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(config)
}
