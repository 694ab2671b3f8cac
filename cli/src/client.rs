//! The client commands' connection to the public API: where it is and which key and CA
//! to use (flag > environment > the current context > built-in defaults: see
//! [`Connection::resolve`]), two HTTP clients (short control calls with a total
//! timeout; streams and long calls with none), and turning `{"code","message"}` error
//! bodies into [`ApiError`]s.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::contexts::{self, ContextEntry};
use crate::output::Format;

/// Where nothing else says where the control plane is.
pub const DEFAULT_API_URL: &str = "http://127.0.0.1:7423";
/// The data dir whose admin.key and ca.pem are used when nothing else names a key or CA.
const DEFAULT_DATA_DIR: &str = "berth-data";
/// The total time a short control call (list, get, create, …) may take.
const CONTROL_CALL_TIMEOUT: Duration = Duration::from_secs(60);
/// Connecting may take this long, on every call, long or short.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// TCP keepalive on every connection, so a stream over a dead peer ends eventually
/// while a silent but live one (an exec printing nothing for minutes) does not.
const TCP_KEEPALIVE: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Args)]
pub struct ClientArgs {
    /// Public API URL [default: the context's, else http://127.0.0.1:7423].
    #[arg(long, env = "BERTH_API_URL")]
    pub api_url: Option<String>,
    /// API key (X-API-Key).
    #[arg(long, env = "BERTH_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// File holding the API key.
    #[arg(long, env = "BERTH_API_KEY_FILE", conflicts_with = "api_key")]
    pub api_key_file: Option<PathBuf>,
    /// A control plane's data dir; its admin.key and ca.pem are used when no key or CA
    /// is given [default: berth-data, after the context's].
    #[arg(long, env = "BERTH_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// CA certificate to trust for an https:// API URL (default: <data-dir>/ca.pem).
    #[arg(long, env = "BERTH_CA_FILE")]
    pub ca_file: Option<PathBuf>,
    /// Use this context of the client config instead of its current one.
    #[arg(long, env = "BERTH_CONTEXT")]
    pub context: Option<String>,
    /// Output format: table, wide (more columns), json or yaml.
    #[arg(short = 'o', long, default_value = "table", value_enum)]
    pub output: Format,
}

impl ClientArgs {
    /// Whether the output is for scripts (json or yaml) rather than a table.
    pub fn structured(&self) -> bool {
        matches!(self.output, Format::Json | Format::Yaml)
    }
}

/// Where the control plane is and how to authenticate to it, after precedence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connection {
    pub api_url: String,
    pub key: KeySource,
    /// The CA file for https, and whether it was asked for (a missing default is
    /// reported differently from a missing named file only in wording).
    pub ca_file: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    Literal(String),
    File(PathBuf),
    /// A data dir's admin.key, used only when it exists.
    DefaultFile(PathBuf),
}

impl Connection {
    /// Flag or environment (clap merges those two, the flag winning) > the chosen
    /// context (`--context`, else the config's current one) > built-in defaults.
    pub fn resolve(args: &ClientArgs, context: Option<&ContextEntry>) -> Self {
        let api_url = args
            .api_url
            .clone()
            .or_else(|| context.map(|c| c.api_url.clone()))
            .unwrap_or_else(|| DEFAULT_API_URL.to_owned());
        let default_dir = PathBuf::from(DEFAULT_DATA_DIR);
        let key = if let Some(key) = &args.api_key {
            KeySource::Literal(key.trim().to_owned())
        } else if let Some(file) = &args.api_key_file {
            KeySource::File(file.clone())
        } else if let Some(dir) = &args.data_dir {
            KeySource::DefaultFile(dir.join("admin.key"))
        } else if let Some(key) = context.and_then(|c| c.api_key.clone()) {
            KeySource::Literal(key.trim().to_owned())
        } else if let Some(file) = context.and_then(|c| c.api_key_file.clone()) {
            KeySource::File(file)
        } else {
            KeySource::DefaultFile(default_dir.join("admin.key"))
        };
        let ca_file = args
            .ca_file
            .clone()
            .or_else(|| args.data_dir.as_ref().map(|dir| dir.join("ca.pem")))
            .or_else(|| context.and_then(|c| c.ca_file.clone()))
            .unwrap_or_else(|| default_dir.join("ca.pem"));
        Self {
            api_url,
            key,
            ca_file,
        }
    }

    fn key(&self) -> anyhow::Result<Option<String>> {
        let path = match &self.key {
            KeySource::Literal(key) => return Ok(Some(key.clone())),
            KeySource::File(path) => path,
            KeySource::DefaultFile(path) if path.exists() => path,
            KeySource::DefaultFile(_) => return Ok(None),
        };
        let key = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read API key file {}", path.display()))?;
        Ok(Some(key.trim().to_owned()))
    }
}

/// An error answer of the API.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: u16,
    pub code: String,
    pub message: String,
    /// The sandbox a failed create made (its record stays, in state error).
    pub sandbox_id: Option<String>,
    hint: &'static str,
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} ({}): {}{}",
            self.code, self.status, self.message, self.hint
        )
    }
}

impl std::error::Error for ApiError {}

impl ApiError {
    fn from_body(status: reqwest::StatusCode, body: &[u8], has_key: bool) -> Self {
        let error: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
        let hint = if status == reqwest::StatusCode::UNAUTHORIZED && !has_key {
            " (no API key: pass --api-key, set BERTH_API_KEY, add a context, or run next to the control plane's data dir)"
        } else {
            ""
        };
        Self {
            status: status.as_u16(),
            code: error["code"].as_str().unwrap_or("ERROR").to_owned(),
            message: error["message"]
                .as_str()
                .map(str::to_owned)
                .unwrap_or_else(|| String::from_utf8_lossy(body).into_owned()),
            sandbox_id: error["sandbox_id"]
                .as_str()
                .filter(|id| !id.is_empty())
                .map(str::to_owned),
            hint,
        }
    }

    #[cfg(test)]
    pub fn for_test(status: u16, code: &str, sandbox_id: Option<&str>) -> Self {
        Self {
            status,
            code: code.to_owned(),
            message: "boom".to_owned(),
            sandbox_id: sandbox_id.map(str::to_owned),
            hint: "",
        }
    }

    /// An exec that ran out of its time (HTTP 408, code TIMEOUT).
    pub fn is_timeout(&self) -> bool {
        self.status == 408 || self.code == "TIMEOUT"
    }
}

/// Cheap to clone: the HTTP clients share their connection pools.
#[derive(Clone)]
pub struct ApiClient {
    /// Short control calls: a total timeout per request.
    control: reqwest::Client,
    /// Streams and long calls (exec, logs -f, cat, put): no total timeout, only the
    /// connect timeout and TCP keepalive; they last as long as the work does.
    long: reqwest::Client,
    base: String,
    key: Option<String>,
    /// The team every request acts for (`X-Tenant-ID`), when one is named.
    tenant: Option<String>,
    /// For an https:// API URL: the TLS settings (WebSocket connections use them too).
    tls: Option<Arc<rustls::ClientConfig>>,
}

impl ApiClient {
    pub fn new(args: &ClientArgs) -> anyhow::Result<Self> {
        let context = contexts::selected(args.context.as_deref())?;
        Self::connect(&Connection::resolve(args, context.as_ref()))
    }

    pub fn connect(connection: &Connection) -> anyhow::Result<Self> {
        let base = connection.api_url.trim_end_matches('/').to_owned();
        let tls = if base.starts_with("https://") {
            Some(tls_config(&connection.ca_file)?)
        } else if base.starts_with("http://") {
            None
        } else {
            bail!("api url {base:?} must start with http:// or https://");
        };
        let builder = || {
            let builder = reqwest::Client::builder()
                .connect_timeout(CONNECT_TIMEOUT)
                .tcp_keepalive(TCP_KEEPALIVE);
            match &tls {
                Some(config) => builder.use_preconfigured_tls(config.clone()),
                None => builder,
            }
        };
        Ok(Self {
            control: builder().timeout(CONTROL_CALL_TIMEOUT).build()?,
            long: builder().build()?,
            base,
            key: connection.key()?,
            tenant: None,
            tls: tls.map(Arc::new),
        })
    }

    /// Every request acts for `team` (`X-Tenant-ID`); `None`: the key's own team.
    pub fn for_team(self, team: Option<String>) -> Self {
        Self {
            tenant: team,
            ..self
        }
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    /// The API key and team headers every request carries.
    pub fn auth_headers(&self) -> Vec<(&'static str, String)> {
        let mut headers = Vec::new();
        if let Some(key) = &self.key {
            headers.push(("x-api-key", key.clone()));
        }
        if let Some(team) = &self.tenant {
            headers.push(("x-tenant-id", team.clone()));
        }
        headers
    }

    /// The TLS settings of an https:// API URL.
    pub fn tls(&self) -> Option<Arc<rustls::ClientConfig>> {
        self.tls.clone()
    }

    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        self.send(self.control.get(self.url(path))).await
    }

    pub async fn post<T: DeserializeOwned>(&self, path: &str, body: &Value) -> anyhow::Result<T> {
        self.send(self.control.post(self.url(path)).json(body))
            .await
    }

    /// A POST that may take as long as the work it starts (a whole exec).
    pub async fn post_long<T: DeserializeOwned>(
        &self,
        path: &str,
        body: &Value,
    ) -> anyhow::Result<T> {
        self.send(self.long.post(self.url(path)).json(body)).await
    }

    pub async fn patch<T: DeserializeOwned>(&self, path: &str, body: &Value) -> anyhow::Result<T> {
        self.send(self.control.patch(self.url(path)).json(body))
            .await
    }

    pub async fn put<T: DeserializeOwned>(&self, path: &str, body: &Value) -> anyhow::Result<T> {
        self.send(self.control.put(self.url(path)).json(body)).await
    }

    pub async fn delete<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        self.send(self.control.delete(self.url(path))).await
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
        Err(self.error(status, &body).into())
    }

    /// A request to `path` on the API, not yet sent, on the client without a total
    /// timeout (for streams and transfers).
    pub fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.long.request(method, self.url(path))
    }

    fn authorized(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        let request = match &self.tenant {
            Some(team) => request.header("X-Tenant-ID", team),
            None => request,
        };
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
        let response = self.authorized(request).send().await.map_err(|err| {
            let what = if err.is_timeout() {
                format!(
                    "the control plane at {} did not answer within {}s",
                    self.base,
                    CONTROL_CALL_TIMEOUT.as_secs()
                )
            } else {
                format!("cannot reach the control plane at {}", self.base)
            };
            anyhow::Error::new(err).context(what)
        })?;
        let status = response.status();
        let body = response
            .bytes()
            .await
            .context("the control plane's answer was cut off")?;
        if status.is_success() {
            return serde_json::from_slice(&body)
                .context("the control plane answered with unexpected JSON");
        }
        Err(self.error(status, &body).into())
    }

    fn error(&self, status: reqwest::StatusCode, body: &[u8]) -> ApiError {
        ApiError::from_body(status, body, self.key.is_some())
    }
}

/// `name` as one path segment of a URL: bytes other than letters, digits and `-._~@`
/// percent-encoded. `.` and `..` are refused: a URL would read them as "here" and
/// "up one", never as a name.
pub fn segment(name: &str) -> anyhow::Result<String> {
    if name.is_empty() || name == "." || name == ".." {
        bail!("{name:?} cannot be a name in a URL path");
    }
    let mut encoded = String::with_capacity(name.len());
    for byte in name.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~@".contains(&byte) {
            encoded.push(char::from(byte));
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    Ok(encoded)
}

fn tls_config(path: &std::path::Path) -> anyhow::Result<rustls::ClientConfig> {
    let pem = std::fs::read(path)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn args() -> ClientArgs {
        ClientArgs {
            api_url: None,
            api_key: None,
            api_key_file: None,
            data_dir: None,
            ca_file: None,
            context: None,
            output: Format::Table,
        }
    }

    fn context() -> ContextEntry {
        ContextEntry {
            api_url: "https://cp.example:7423".into(),
            api_key: None,
            api_key_file: Some("/keys/prod.key".into()),
            ca_file: Some("/keys/prod-ca.pem".into()),
        }
    }

    #[test]
    fn defaults_apply_without_flags_or_context() {
        let connection = Connection::resolve(&args(), None);
        assert_eq!(connection.api_url, DEFAULT_API_URL);
        assert_eq!(
            connection.key,
            KeySource::DefaultFile("berth-data/admin.key".into())
        );
        assert_eq!(connection.ca_file, PathBuf::from("berth-data/ca.pem"));
    }

    #[test]
    fn the_context_beats_the_defaults() {
        let connection = Connection::resolve(&args(), Some(&context()));
        assert_eq!(connection.api_url, "https://cp.example:7423");
        assert_eq!(connection.key, KeySource::File("/keys/prod.key".into()));
        assert_eq!(connection.ca_file, PathBuf::from("/keys/prod-ca.pem"));
    }

    #[test]
    fn flags_and_environment_beat_the_context() {
        let mut flags = args();
        flags.api_url = Some("http://127.0.0.1:9".into());
        flags.api_key = Some(" k \n".into());
        flags.ca_file = Some("/ca.pem".into());
        let connection = Connection::resolve(&flags, Some(&context()));
        assert_eq!(connection.api_url, "http://127.0.0.1:9");
        assert_eq!(connection.key, KeySource::Literal("k".into()));
        assert_eq!(connection.ca_file, PathBuf::from("/ca.pem"));

        let mut dir = args();
        dir.data_dir = Some("/cp".into());
        let connection = Connection::resolve(&dir, Some(&context()));
        assert_eq!(
            connection.key,
            KeySource::DefaultFile("/cp/admin.key".into())
        );
        assert_eq!(connection.ca_file, PathBuf::from("/cp/ca.pem"));
    }

    #[test]
    fn names_become_safe_path_segments() {
        assert_eq!(segment("alice@example.com").unwrap(), "alice@example.com");
        assert_eq!(segment("a b/c?d").unwrap(), "a%20b%2Fc%3Fd");
        assert_eq!(segment("é").unwrap(), "%C3%A9");
        for bad in ["", ".", ".."] {
            assert!(segment(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn error_bodies_carry_the_sandbox_id_and_timeouts_are_recognised() {
        let body = br#"{"code":"UNAVAILABLE","message":"spawn failed","sandbox_id":"sbx-1"}"#;
        let error = ApiError::from_body(reqwest::StatusCode::SERVICE_UNAVAILABLE, body, true);
        assert_eq!(error.sandbox_id.as_deref(), Some("sbx-1"));
        assert_eq!(error.to_string(), "UNAVAILABLE (503): spawn failed");
        assert!(!error.is_timeout());
        let timeout = ApiError::from_body(
            reqwest::StatusCode::REQUEST_TIMEOUT,
            br#"{"code":"TIMEOUT","message":"timed out"}"#,
            true,
        );
        assert!(timeout.is_timeout());
    }
}
