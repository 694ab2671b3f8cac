//! The connection to the Docker engine: a bollard client made on first use (so a
//! worker starts even while its engine is down), with the API version negotiated
//! down to what the engine speaks; the health probe behind heartbeats; and the one
//! mapping of engine errors to `ProviderError`s.

use std::time::Duration;

use bollard::errors::Error as EngineError;
use bollard::{API_DEFAULT_VERSION, Docker};
use tokio::sync::Mutex;

use super::config::DockerConfig;
use crate::provider::{ProviderError, ProviderHealth};

/// How long the health probe waits for the engine.
const PING_TIMEOUT: Duration = Duration::from_secs(3);

#[derive(Debug)]
pub struct Engine {
    host: String,
    timeout: Duration,
    runtime: String,
    /// The negotiated client, once the engine answered.
    client: Mutex<Option<Connected>>,
    /// The engine host's memory (MiB) as its last `info` said; 0 until then.
    memory_mb: std::sync::atomic::AtomicU64,
}

#[derive(Debug, Clone)]
struct Connected {
    docker: Docker,
    /// `docker 20.10.24, api 1.41`, for health messages.
    describe: String,
}

impl Engine {
    pub fn new(config: &DockerConfig) -> Self {
        Self {
            host: config.host.clone(),
            timeout: config.request_timeout,
            runtime: config.runtime.clone(),
            client: Mutex::new(None),
            memory_mb: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// The engine host's memory in MiB, learned by [`Engine::health`]; 0 before.
    pub fn memory_mb(&self) -> u64 {
        self.memory_mb.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Where the engine listens, for connections made without bollard.
    pub fn endpoint(&self) -> super::hijack::Endpoint {
        super::hijack::Endpoint {
            host: self.host.clone(),
            timeout: self.timeout,
        }
    }

    /// The client, connecting and negotiating the API version first if needed.
    pub async fn client(&self) -> Result<Docker, ProviderError> {
        Ok(self.connected().await?.docker)
    }

    async fn connected(&self) -> Result<Connected, ProviderError> {
        let mut client = self.client.lock().await;
        if let Some(connected) = client.as_ref() {
            return Ok(connected.clone());
        }
        let connected = tokio::time::timeout(PING_TIMEOUT * 2, self.connect())
            .await
            .map_err(|_| unreachable_engine(&self.host, "no answer"))??;
        tracing::info!(host = %self.host, engine = %connected.describe, "connected to the docker engine");
        *client = Some(connected.clone());
        Ok(connected)
    }

    async fn connect(&self) -> Result<Connected, ProviderError> {
        let secs = self.timeout.as_secs().max(1);
        let docker = if self.host.starts_with("tcp://") || self.host.starts_with("http://") {
            Docker::connect_with_http(&self.host, secs, API_DEFAULT_VERSION)
        } else {
            Docker::connect_with_unix(&self.host, secs, API_DEFAULT_VERSION)
        }
        .map_err(|err| unreachable_engine(&self.host, err))?;
        let docker = docker
            .negotiate_version()
            .await
            .map_err(|err| unreachable_engine(&self.host, err))?;
        let version = docker
            .version()
            .await
            .map_err(|err| unreachable_engine(&self.host, err))?;
        let api = docker.client_version();
        let describe = format!(
            "docker {}, api {}.{}",
            version.version.unwrap_or_else(|| "?".into()),
            api.major_version,
            api.minor_version
        );
        Ok(Connected { docker, describe })
    }

    /// Whether the engine answers a ping now, and offers the configured runtime.
    pub async fn health(&self) -> ProviderHealth {
        let connected = match self.connected().await {
            Ok(connected) => connected,
            Err(err) => return unhealthy(err.to_string()),
        };
        match tokio::time::timeout(PING_TIMEOUT, connected.docker.ping()).await {
            Ok(Ok(_)) => {}
            Ok(Err(err)) => return unhealthy(unreachable_engine(&self.host, err).to_string()),
            Err(_) => {
                return unhealthy(unreachable_engine(&self.host, "ping timed out").to_string());
            }
        }
        match tokio::time::timeout(PING_TIMEOUT, connected.docker.info()).await {
            Ok(Ok(info)) => {
                if let Some(total) = info.mem_total.and_then(|b| u64::try_from(b).ok()) {
                    self.memory_mb
                        .store(total >> 20, std::sync::atomic::Ordering::Relaxed);
                }
                let offered = info
                    .runtimes
                    .is_some_and(|runtimes| runtimes.contains_key(&self.runtime));
                if !offered {
                    return unhealthy(format!(
                        "the docker engine does not offer the runtime {:?}",
                        self.runtime
                    ));
                }
            }
            Ok(Err(err)) => return unhealthy(unreachable_engine(&self.host, err).to_string()),
            Err(_) => {
                return unhealthy(unreachable_engine(&self.host, "info timed out").to_string());
            }
        }
        ProviderHealth {
            healthy: true,
            message: format!("{} at {}", connected.describe, self.host),
        }
    }
}

fn unhealthy(message: String) -> ProviderHealth {
    ProviderHealth {
        healthy: false,
        message,
    }
}

fn unreachable_engine(host: &str, err: impl std::fmt::Display) -> ProviderError {
    ProviderError::Unavailable(format!("docker engine at {host} is unreachable: {err}"))
}

/// The HTTP status of an engine answer, if the engine answered.
pub fn status_of(err: &EngineError) -> Option<u16> {
    match err {
        EngineError::DockerResponseServerError { status_code, .. } => Some(*status_code),
        _ => None,
    }
}

/// The message of an engine answer (the error itself otherwise).
pub fn message_of(err: &EngineError) -> String {
    match err {
        EngineError::DockerResponseServerError { message, .. } => message.clone(),
        other => other.to_string(),
    }
}

/// Maps an engine error met while doing `context`. Callers handle the statuses that
/// mean something in their context (404 above all) before falling back on this.
pub fn engine_error(context: &str, err: EngineError) -> ProviderError {
    match &err {
        EngineError::DockerResponseServerError {
            status_code,
            message,
        } => match status_code {
            400 => ProviderError::InvalidArgument(format!("{context}: {message}")),
            503 => ProviderError::Unavailable(format!("{context}: {message}")),
            _ => ProviderError::Internal(format!(
                "{context}: the docker engine answered {status_code}: {message}"
            )),
        },
        EngineError::JsonDataError { .. }
        | EngineError::JsonSerdeError { .. }
        | EngineError::APIVersionParseError {}
        | EngineError::StrParseError { .. }
        | EngineError::URLEncodedError { .. }
        | EngineError::InvalidURIError { .. } => {
            ProviderError::Internal(format!("{context}: {err}"))
        }
        _ => ProviderError::Unavailable(format!("{context}: docker engine: {err}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn engine_answers_and_transport_failures_map_apart() {
        let bad = EngineError::DockerResponseServerError {
            status_code: 400,
            message: "invalid reference format".into(),
        };
        assert!(matches!(
            engine_error("create", bad),
            ProviderError::InvalidArgument(m) if m.contains("invalid reference")
        ));
        assert!(matches!(
            engine_error("create", EngineError::RequestTimeoutError),
            ProviderError::Unavailable(_)
        ));
        let boom = EngineError::DockerResponseServerError {
            status_code: 500,
            message: "boom".into(),
        };
        assert_eq!(status_of(&boom), Some(500));
        assert!(matches!(
            engine_error("start", boom),
            ProviderError::Internal(_)
        ));
    }

    #[tokio::test]
    async fn a_missing_engine_is_unhealthy_with_a_reason() {
        let dir = tempfile::tempdir().unwrap();
        let config = DockerConfig {
            host: format!("unix://{}", dir.path().join("no.sock").display()),
            ..Default::default()
        };
        let health = Engine::new(&config).health().await;
        assert!(!health.healthy);
        assert!(health.message.contains("unreachable"), "{}", health.message);
    }
}
