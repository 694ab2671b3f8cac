//! `berth worker` configuration: serde structs with working defaults, loaded from YAML
//! and checked by `validate()`. Environment variables and flags are applied on top by
//! the binary, so this module never reads the environment.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::WorkerError;
use crate::provider::docker::DockerConfig;
use crate::provider::output::DEFAULT_MAX_EXEC_OUTPUT;

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WorkerConfig {
    /// Holds the worker's key, certificate, CA and worker token.
    pub data_dir: PathBuf,
    /// Mesh URLs of the control planes (`https://host:7443`), tried in turn.
    pub control_plane: Vec<String>,
    /// Join token for the first enrollment.
    pub join_token: Option<String>,
    /// Read the join token from this file instead.
    pub join_token_file: Option<PathBuf>,
    /// Requested worker id; a pinned join token or the control plane decides otherwise.
    pub id: Option<String>,
    /// Where the WorkerService listens (mTLS, control plane only). Unset (the
    /// default): the worker listens nowhere and dials out to every control plane in
    /// `control_plane`, which call it over those connections.
    pub listen: Option<SocketAddr>,
    /// host:port the control plane dials; default: the listen address. Only with
    /// `listen`.
    pub advertise: Option<String>,
    /// mock | docker
    pub provider: String,
    /// Heartbeat interval until the control plane says otherwise.
    #[serde(with = "humantime_serde")]
    pub heartbeat_interval: Duration,
    pub capacity: CapacityConfig,
    /// Where `/metrics` is served (plain HTTP); unset: not served.
    pub metrics_listen: Option<SocketAddr>,
    /// How long SIGTERM's self-drain lets sandboxes run before destroying them.
    #[serde(with = "humantime_serde")]
    pub drain_deadline: Duration,
    /// The docker provider's engine, images, network and limits.
    pub docker: DockerConfig,
    /// Most output (stdout and stderr together) a whole exec collects, whatever the
    /// control plane asks for; the rest is dropped and the answer says so.
    pub max_exec_output_bytes: usize,
    /// How long a session's command runs on after its last client detached (0: it is
    /// killed at once, as a plain exec is); an ended session is kept as long for a
    /// client to read its end.
    #[serde(with = "humantime_serde")]
    pub session_grace: Duration,
    /// Output each session keeps for clients that come back (bytes).
    pub session_buffer_bytes: usize,
    /// Most sessions this worker holds, running or kept.
    pub max_sessions: usize,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CapacityConfig {
    pub max_sandboxes: u32,
    /// 0: the machine's CPU count.
    pub vcpus: u32,
    pub memory_mb: u64,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("berth-worker-data"),
            control_plane: vec!["https://127.0.0.1:7443".to_owned()],
            join_token: None,
            join_token_file: None,
            id: None,
            listen: None,
            advertise: None,
            provider: "mock".to_owned(),
            heartbeat_interval: Duration::from_secs(5),
            capacity: CapacityConfig::default(),
            metrics_listen: None,
            drain_deadline: Duration::from_secs(300),
            docker: DockerConfig::default(),
            max_exec_output_bytes: DEFAULT_MAX_EXEC_OUTPUT,
            session_grace: Duration::from_secs(300),
            session_buffer_bytes: 1024 * 1024,
            max_sessions: 4096,
        }
    }
}

impl Default for CapacityConfig {
    fn default() -> Self {
        Self {
            max_sandboxes: 64,
            vcpus: 0,
            memory_mb: 0,
        }
    }
}

impl WorkerConfig {
    pub fn from_file(path: &Path) -> Result<Self, WorkerError> {
        let text = std::fs::read_to_string(path).map_err(|err| WorkerError::io(path, err))?;
        serde_yaml_ng::from_str(&text).map_err(|err| {
            WorkerError::Config(format!(
                "config file {} is not valid: {err}",
                path.display()
            ))
        })
    }

    pub fn validate(&self) -> Result<(), WorkerError> {
        if self.control_plane.is_empty() {
            return Err(WorkerError::Config(
                "at least one control_plane url is required".into(),
            ));
        }
        for url in &self.control_plane {
            if url.starts_with("http://") {
                return Err(WorkerError::Config(format!(
                    "control plane url {url:?} is plaintext; the mesh is TLS only (https://)"
                )));
            }
        }
        if let Some(id) = &self.id {
            berth_pki::validate_worker_id(id)
                .map_err(|err| WorkerError::Config(format!("id: {err}")))?;
        }
        match self.provider.as_str() {
            "mock" => {}
            "docker" => self.docker.validate().map_err(WorkerError::Config)?,
            other => {
                return Err(WorkerError::Config(format!(
                    "provider {other:?} is not available: use mock or docker"
                )));
            }
        }
        if self.heartbeat_interval < Duration::from_millis(50) {
            return Err(WorkerError::Config(
                "heartbeat_interval must be at least 50ms".into(),
            ));
        }
        if !(64 * 1024..=256 * 1024 * 1024).contains(&self.session_buffer_bytes) {
            return Err(WorkerError::Config(
                "session_buffer_bytes must be within 64 KiB..=256 MiB".into(),
            ));
        }
        if self.max_sessions == 0 {
            return Err(WorkerError::Config(
                "max_sessions must be at least 1".into(),
            ));
        }
        if !(1..=berth_proto::MAX_EXEC_OUTPUT).contains(&self.max_exec_output_bytes) {
            return Err(WorkerError::Config(format!(
                "max_exec_output_bytes must be within 1..={} (what fits one mesh message)",
                berth_proto::MAX_EXEC_OUTPUT
            )));
        }
        match self.listen {
            None if self.advertise.is_some() => {
                return Err(WorkerError::Config(
                    "advertise is set but listen is not: a worker without listen dials out and is never dialed; set listen too, or drop advertise".into(),
                ));
            }
            Some(listen) if listen.ip().is_unspecified() && self.advertise.is_none() => {
                return Err(WorkerError::Config(format!(
                    "listen address {listen} is unspecified: set advertise to the host:port the control plane should dial"
                )));
            }
            _ => {}
        }
        Ok(())
    }

    /// The join token in force, from the config or its file.
    pub fn join_token(&self) -> Result<Option<String>, WorkerError> {
        if let Some(path) = &self.join_token_file {
            let token = std::fs::read_to_string(path).map_err(|err| WorkerError::io(path, err))?;
            return Ok(Some(token.trim().to_owned()).filter(|t| !t.is_empty()));
        }
        Ok(self.join_token.clone().filter(|t| !t.is_empty()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        let config: WorkerConfig = serde_yaml_ng::from_str("{}").unwrap();
        config.validate().unwrap();
        assert_eq!(
            config.listen, None,
            "a worker dials out unless told to listen"
        );
    }

    #[test]
    fn advertise_without_listen_is_refused() {
        let config: WorkerConfig = serde_yaml_ng::from_str("advertise: w1.internal:7444").unwrap();
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("listen"), "{err}");
        let config: WorkerConfig =
            serde_yaml_ng::from_str("listen: 127.0.0.1:7444\nadvertise: w1.internal:7444").unwrap();
        config.validate().unwrap();
    }

    #[test]
    fn plaintext_control_planes_and_unknown_providers_are_refused() {
        let config: WorkerConfig =
            serde_yaml_ng::from_str("control_plane: [\"http://127.0.0.1:7443\"]").unwrap();
        assert!(config.validate().is_err());
        let config: WorkerConfig = serde_yaml_ng::from_str("provider: vmware").unwrap();
        assert!(config.validate().is_err());
    }

    #[test]
    fn the_docker_provider_is_checked_with_its_section() {
        let config: WorkerConfig = serde_yaml_ng::from_str(
            "provider: docker\ndocker:\n  default_image: busybox:1\n  pull_policy: never\n",
        )
        .unwrap();
        config.validate().unwrap();
        assert_eq!(config.docker.default_image, "busybox:1");
        let config: WorkerConfig =
            serde_yaml_ng::from_str("provider: docker\ndocker:\n  network: host\n").unwrap();
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("docker.network"), "{err}");
    }

    #[test]
    fn an_unspecified_listen_address_needs_an_advertise_address() {
        let config: WorkerConfig = serde_yaml_ng::from_str("listen: 0.0.0.0:7444").unwrap();
        assert!(config.validate().is_err());
        let config: WorkerConfig =
            serde_yaml_ng::from_str("listen: 0.0.0.0:7444\nadvertise: w1.internal:7444").unwrap();
        config.validate().unwrap();
    }

    #[test]
    fn the_exec_output_limit_must_fit_a_mesh_message() {
        for bytes in [0, berth_proto::MAX_EXEC_OUTPUT + 1] {
            let config: WorkerConfig =
                serde_yaml_ng::from_str(&format!("max_exec_output_bytes: {bytes}")).unwrap();
            let err = config.validate().unwrap_err().to_string();
            assert!(err.contains("max_exec_output_bytes"), "{err}");
        }
        let config: WorkerConfig = serde_yaml_ng::from_str("max_exec_output_bytes: 1024").unwrap();
        config.validate().unwrap();
    }

    #[test]
    fn the_join_token_file_wins_and_is_trimmed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "abc\n").unwrap();
        let config = WorkerConfig {
            join_token: Some("inline".into()),
            join_token_file: Some(path),
            ..Default::default()
        };
        assert_eq!(config.join_token().unwrap().as_deref(), Some("abc"));
    }

    #[test]
    fn the_example_config_parses_and_is_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/worker.yaml");
        let config = WorkerConfig::from_file(&path).unwrap();
        config.validate().unwrap();
        assert_eq!(
            config.control_plane,
            vec!["https://127.0.0.1:7443".to_owned()]
        );
    }
}
