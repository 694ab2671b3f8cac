//! `berth serve` configuration: serde structs with working defaults, loaded from YAML
//! and checked by `validate()`. Environment variables and flags are applied on top by
//! the binary (`BERTH_*` through clap), so this module never reads the environment.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path} is not valid: {source}")]
    Parse {
        path: PathBuf,
        source: serde_yaml_ng::Error,
    },
    #[error("invalid config: {0}")]
    Invalid(String),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ControlPlaneConfig {
    /// Holds the SQLite database, admin.key and, unless `keys_dir` says otherwise, the
    /// CA and the token key.
    pub data_dir: PathBuf,
    /// Where the CA (`ca.pem`, `ca.key`) and the token key (`token.key`, `token.pub`)
    /// live; empty: the data dir. Replicas sharing one Postgres need the same files.
    pub keys_dir: Option<PathBuf>,
    /// Public API (HTTP/JSON and gRPC). Plain HTTP only on loopback; TLS otherwise.
    pub listen: SocketAddr,
    /// Worker mesh (mTLS gRPC).
    pub mesh_listen: SocketAddr,
    pub trust_domain: String,
    pub database: DatabaseConfig,
    #[serde(with = "humantime_serde")]
    pub heartbeat_interval: Duration,
    /// Heartbeats a worker may miss before it counts as unhealthy.
    pub missed_heartbeats: u32,
    pub certificates: CertificatesConfig,
    pub tokens: TokensConfig,
    pub sandboxes: SandboxesConfig,
    pub limits: LimitsConfig,
    pub api: ApiConfig,
    /// Preview URLs: `{port}-{sandbox_id}.{preview_domain}` reaches port `{port}` of
    /// the sandbox through the control plane (a wildcard DNS name pointing here);
    /// empty: no previews. May carry a port (`preview.example.com:8080`); sandboxes
    /// show it as their `preview_domain`, and links are built from it.
    pub preview_domain: String,
    /// Serve previews on a listener of their own as well as on `listen` (plain HTTP
    /// only on loopback, TLS otherwise, like `listen`).
    pub preview_listen: Option<SocketAddr>,
    /// The SSH gateway's address (`ssh -p 2222 TOKEN@host`, the usual port being
    /// 2222); none: no gateway. Its host key is kept in the data dir.
    pub ssh_listen: Option<SocketAddr>,
}

/// The public API's per-key limits.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ApiConfig {
    /// Calls a second each API key may make over HTTP and gRPC together (a token
    /// bucket per key); past it calls are answered 429 / `RESOURCE_EXHAUSTED` with
    /// when to retry. 0: no limit (the default).
    pub key_rate_limit: u32,
    /// How many calls a key may make at once above the rate (the bucket's size);
    /// 0: one second's worth (`key_rate_limit`). Ignored while the limit is off.
    pub key_rate_burst: u32,
}

/// How fast the mesh admits enrollments and heartbeats, so a fleet restarting at once
/// does not become a storm; callers over the limit are told to retry (they back off).
/// Each source address has its own small enrollment bucket; the shared enrollment
/// budget is spent only by requests whose credential verifies, the heartbeat budget
/// only by workers with a verified certificate.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    pub enrollments_per_second: u32,
    pub enrollment_burst: u32,
    /// Enrollment attempts one source address (an IPv6 /64) may make.
    pub enrollments_per_source_per_second: u32,
    pub enrollment_source_burst: u32,
    pub heartbeats_per_second: u32,
    pub heartbeat_burst: u32,
    /// Connections open at once on each of the API and mesh listeners (TLS handshakes
    /// included); past it new ones are closed at once.
    pub max_connections: usize,
    /// A new connection must send its first byte (after TLS) within this, or it is
    /// closed.
    #[serde(with = "humantime_serde")]
    pub first_byte_timeout: Duration,
    /// A mesh connection without a client certificate (it may only enroll) is closed
    /// after this long without sending a byte.
    #[serde(with = "humantime_serde")]
    pub anonymous_mesh_idle_timeout: Duration,
}

impl LimitsConfig {
    /// The API listener's connection limits (its clients may sit silent through a
    /// long stream, so no idle timeout).
    pub fn api_connections(&self) -> berth_pki::transport::ConnectionLimits {
        berth_pki::transport::ConnectionLimits {
            max_connections: self.max_connections,
            first_byte_timeout: self.first_byte_timeout,
            anonymous_idle_timeout: None,
        }
    }

    /// The mesh listener's connection limits.
    pub fn mesh_connections(&self) -> berth_pki::transport::ConnectionLimits {
        berth_pki::transport::ConnectionLimits {
            max_connections: self.max_connections,
            first_byte_timeout: self.first_byte_timeout,
            anonymous_idle_timeout: Some(self.anonymous_mesh_idle_timeout),
        }
    }
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            enrollments_per_second: 50,
            enrollment_burst: 100,
            enrollments_per_source_per_second: 5,
            enrollment_source_burst: 20,
            heartbeats_per_second: 5_000,
            heartbeat_burst: 10_000,
            max_connections: 4096,
            first_byte_timeout: Duration::from_secs(10),
            anonymous_mesh_idle_timeout: Duration::from_secs(60),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SandboxesConfig {
    /// Image for creates that name none; empty: each worker's provider default (the
    /// docker provider's `docker.default_image`).
    pub default_image: String,
    /// Empty: any healthy provider.
    pub default_provider: String,
    /// Whether sandboxes whose create says nothing may reach addresses outside their
    /// own network (the internet, the LAN). The host itself is never reachable
    /// (the docker provider's `host_firewall`).
    pub default_internet: bool,
    #[serde(with = "humantime_serde")]
    pub default_ttl: Duration,
    #[serde(with = "humantime_serde")]
    pub max_ttl: Duration,
    pub default_memory_mb: u64,
    pub max_memory_mb: u64,
    pub max_vcpus: u32,
    #[serde(with = "humantime_serde")]
    pub default_exec_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub max_exec_timeout: Duration,
    /// Most output (stdout and stderr together) a whole exec answers with; past it
    /// the rest is dropped and the answer says `truncated`. Streamed execs have none.
    pub max_exec_output_bytes: usize,
    #[serde(with = "humantime_serde")]
    pub spawn_timeout: Duration,
    /// How often sandboxes past their TTL are looked for and destroyed.
    #[serde(with = "humantime_serde")]
    pub reap_interval: Duration,
    /// How stale a sandbox's last activity may be in the store: a sandbox in use has
    /// it written at most this often, and one with an `auto_stop` is stopped once
    /// idle for its auto-stop plus this much (never early; the reap loop looks every
    /// `reap_interval`).
    #[serde(with = "humantime_serde")]
    pub activity_interval: Duration,
    /// What happens to the sandboxes of a worker that goes silent.
    pub disconnect: DisconnectConfig,
}

/// The disconnect policy: how long a silent worker's sandboxes are kept for it.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DisconnectConfig {
    /// How long after its last heartbeat a worker's sandboxes stay leased to it. A
    /// worker back within it (a network blip, a restart) finds them as they were; past
    /// it they are `lost` and a returning worker is told to destroy them. Never less
    /// than twice the heartbeat grace; `0s`: exactly that.
    #[serde(with = "humantime_serde")]
    pub lost_after: Duration,
}

impl Default for DisconnectConfig {
    fn default() -> Self {
        Self {
            lost_after: Duration::from_secs(5 * 60),
        }
    }
}

impl Default for SandboxesConfig {
    fn default() -> Self {
        Self {
            default_image: "alpine:latest".to_owned(),
            default_provider: String::new(),
            default_internet: true,
            default_ttl: Duration::from_secs(30 * 60),
            max_ttl: Duration::from_secs(24 * 3600),
            default_memory_mb: 512,
            max_memory_mb: 256 * 1024,
            max_vcpus: 64,
            default_exec_timeout: Duration::from_secs(60),
            max_exec_timeout: Duration::from_secs(6 * 3600),
            max_exec_output_bytes: 16 << 20,
            spawn_timeout: Duration::from_secs(120),
            reap_interval: Duration::from_secs(10),
            activity_interval: Duration::from_secs(30),
            disconnect: DisconnectConfig::default(),
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DatabaseConfig {
    /// Empty: `<data_dir>/berth.db`.
    pub url: String,
    /// Read the url from this file instead (it may carry a password).
    pub url_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CertificatesConfig {
    /// Lifetime of worker certificates; workers renew at about two thirds of it.
    #[serde(with = "humantime_serde")]
    pub worker_ttl: Duration,
    /// Lifetime of the control plane's own serving certificate; re-issued at two thirds.
    #[serde(with = "humantime_serde")]
    pub serving_ttl: Duration,
    /// DNS names put on the serving certificate (besides its spiffe:// identity).
    pub dns_names: Vec<String>,
    /// IP addresses put on the serving certificate.
    pub ip_addresses: Vec<IpAddr>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TokensConfig {
    /// Lifetime of a join token when `berth token create` names none.
    #[serde(with = "humantime_serde")]
    pub join_ttl: Duration,
    /// Longest join token lifetime accepted.
    #[serde(with = "humantime_serde")]
    pub join_max_ttl: Duration,
    /// Lifetime of the signed worker token used to re-enroll after a lapsed certificate.
    #[serde(with = "humantime_serde")]
    pub worker_token_ttl: Duration,
}

impl Default for ControlPlaneConfig {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("berth-data"),
            keys_dir: None,
            listen: SocketAddr::from(([127, 0, 0, 1], 7423)),
            mesh_listen: SocketAddr::from(([0, 0, 0, 0], 7443)),
            trust_domain: berth_pki::DEFAULT_TRUST_DOMAIN.to_owned(),
            database: DatabaseConfig::default(),
            heartbeat_interval: Duration::from_secs(5),
            missed_heartbeats: 3,
            certificates: CertificatesConfig::default(),
            tokens: TokensConfig::default(),
            sandboxes: SandboxesConfig::default(),
            limits: LimitsConfig::default(),
            api: ApiConfig::default(),
            preview_domain: String::new(),
            preview_listen: None,
            ssh_listen: None,
        }
    }
}

impl Default for CertificatesConfig {
    fn default() -> Self {
        Self {
            worker_ttl: Duration::from_secs(24 * 3600),
            serving_ttl: Duration::from_secs(24 * 3600),
            dns_names: vec!["localhost".to_owned()],
            ip_addresses: vec![IpAddr::from([127, 0, 0, 1])],
        }
    }
}

impl Default for TokensConfig {
    fn default() -> Self {
        Self {
            join_ttl: Duration::from_secs(3600),
            join_max_ttl: Duration::from_secs(7 * 24 * 3600),
            worker_token_ttl: Duration::from_secs(365 * 24 * 3600),
        }
    }
}

impl ControlPlaneConfig {
    /// Reads a YAML file of control-plane keys only; every key is optional. (`berth
    /// serve`'s own file also has a `local_worker` section, which the binary reads.)
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        serde_yaml_ng::from_str(&text).map_err(|source| ConfigError::Parse {
            path: path.to_owned(),
            source,
        })
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        berth_pki::validate_trust_domain(&self.trust_domain)
            .map_err(|err| ConfigError::Invalid(format!("trust_domain: {err}")))?;
        crate::api::preview::check_domain(&self.preview_domain)
            .map_err(|err| ConfigError::Invalid(format!("preview_domain: {err}")))?;
        if self.preview_listen.is_some() && self.preview_domain.is_empty() {
            return Err(ConfigError::Invalid(
                "preview_listen needs a preview_domain".into(),
            ));
        }
        if self.heartbeat_interval < Duration::from_millis(50) {
            return Err(ConfigError::Invalid(
                "heartbeat_interval must be at least 50ms".into(),
            ));
        }
        if self.missed_heartbeats == 0 {
            return Err(ConfigError::Invalid(
                "missed_heartbeats must be at least 1".into(),
            ));
        }
        if self.certificates.worker_ttl < Duration::from_secs(5) {
            return Err(ConfigError::Invalid(
                "certificates.worker_ttl must be at least 5s".into(),
            ));
        }
        if self.certificates.serving_ttl < Duration::from_secs(60) {
            return Err(ConfigError::Invalid(
                "certificates.serving_ttl must be at least 1m".into(),
            ));
        }
        if self.tokens.join_ttl > self.tokens.join_max_ttl {
            return Err(ConfigError::Invalid(
                "tokens.join_ttl is longer than tokens.join_max_ttl".into(),
            ));
        }
        let limits = &self.limits;
        if limits.enrollments_per_second == 0
            || limits.enrollment_burst == 0
            || limits.enrollments_per_source_per_second == 0
            || limits.enrollment_source_burst == 0
            || limits.heartbeats_per_second == 0
            || limits.heartbeat_burst == 0
        {
            return Err(ConfigError::Invalid(
                "limits: every rate and burst must be at least 1".into(),
            ));
        }
        let sandboxes = &self.sandboxes;
        if sandboxes.default_ttl.is_zero() || sandboxes.default_ttl > sandboxes.max_ttl {
            return Err(ConfigError::Invalid(
                "sandboxes.default_ttl must be more than 0 and at most sandboxes.max_ttl".into(),
            ));
        }
        if sandboxes.default_exec_timeout.is_zero()
            || sandboxes.default_exec_timeout > sandboxes.max_exec_timeout
        {
            return Err(ConfigError::Invalid(
                "sandboxes.default_exec_timeout must be more than 0 and at most sandboxes.max_exec_timeout".into(),
            ));
        }
        if !(1..=berth_proto::MAX_EXEC_OUTPUT).contains(&sandboxes.max_exec_output_bytes) {
            return Err(ConfigError::Invalid(format!(
                "sandboxes.max_exec_output_bytes must be within 1..={} (what fits one mesh message)",
                berth_proto::MAX_EXEC_OUTPUT
            )));
        }
        if sandboxes.reap_interval < Duration::from_millis(100) {
            return Err(ConfigError::Invalid(
                "sandboxes.reap_interval must be at least 100ms".into(),
            ));
        }
        if !(Duration::from_secs(1)..=Duration::from_secs(3600))
            .contains(&sandboxes.activity_interval)
        {
            return Err(ConfigError::Invalid(
                "sandboxes.activity_interval must be between 1s and 1h".into(),
            ));
        }
        if !(16..=sandboxes.max_memory_mb).contains(&sandboxes.default_memory_mb)
            || sandboxes.max_vcpus == 0
        {
            return Err(ConfigError::Invalid(
                "sandboxes: default_memory_mb must be within 16..=max_memory_mb and max_vcpus at least 1".into(),
            ));
        }
        let url = self.database.url.as_str();
        if !url.is_empty() {
            crate::store::Backend::of_url(url)
                .map_err(|err| ConfigError::Invalid(format!("database.url: {err}")))?;
        }
        Ok(())
    }

    /// The database url in force: the configured one, the one in `url_file`, or the
    /// SQLite file in the data dir.
    pub fn database_url(&self) -> Result<String, ConfigError> {
        if let Some(path) = &self.database.url_file {
            let url = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.clone(),
                source,
            })?;
            return Ok(url.trim().to_owned());
        }
        if !self.database.url.is_empty() {
            return Ok(self.database.url.clone());
        }
        Ok(format!(
            "sqlite://{}",
            self.data_dir.join("berth.db").display()
        ))
    }

    /// Where the CA and token key live: `keys_dir`, or the data dir.
    pub fn keys_dir(&self) -> PathBuf {
        match &self.keys_dir {
            Some(dir) if !dir.as_os_str().is_empty() => dir.clone(),
            _ => self.data_dir.clone(),
        }
    }

    /// The sandbox limits and defaults in force.
    pub fn sandbox_settings(&self) -> crate::sandboxes::SandboxSettings {
        crate::sandboxes::SandboxSettings {
            limits: self.sandboxes.clone(),
            heartbeat_grace: self.heartbeat_grace(),
            lease_duration: self.lease_duration(),
            preview_domain: self.preview_domain.clone(),
        }
    }

    /// How long a lease lasts from the heartbeat (or placement, or extend) that
    /// renewed it: the disconnect policy's `lost_after`, and at least twice the
    /// heartbeat grace (so one late heartbeat never costs a sandbox).
    pub fn lease_duration(&self) -> Duration {
        (self.heartbeat_grace() * 2).max(self.sandboxes.disconnect.lost_after)
    }

    /// How long after its last heartbeat a worker counts as unhealthy.
    pub fn heartbeat_grace(&self) -> Duration {
        self.heartbeat_interval * self.missed_heartbeats
    }

    /// How long after its placement a sandbox may still be `creating`: the spawn
    /// timeout, plus one heartbeat grace for the call's set-up, clock skew and the
    /// heartbeat that reports it. Past it the spawn is resolved by the worker's
    /// heartbeat: adopted if the worker holds the sandbox, destroyed otherwise.
    pub fn spawn_confirm_within(&self) -> Duration {
        self.sandboxes.spawn_timeout + self.heartbeat_grace()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_file_gives_the_defaults() {
        let config: ControlPlaneConfig = serde_yaml_ng::from_str("{}").unwrap();
        config.validate().unwrap();
        assert_eq!(config.listen.port(), 7423);
        assert_eq!(config.mesh_listen.port(), 7443);
        assert_eq!(config.trust_domain, "berth.local");
    }

    #[test]
    fn durations_are_human_readable() {
        let config: ControlPlaneConfig =
            serde_yaml_ng::from_str("heartbeat_interval: 2s\ncertificates:\n  worker_ttl: 1h\n")
                .unwrap();
        assert_eq!(config.heartbeat_interval, Duration::from_secs(2));
        assert_eq!(config.certificates.worker_ttl, Duration::from_secs(3600));
    }

    #[test]
    fn unknown_keys_and_bad_values_are_refused() {
        assert!(serde_yaml_ng::from_str::<ControlPlaneConfig>("listne: 1").is_err());
        let config: ControlPlaneConfig = serde_yaml_ng::from_str("missed_heartbeats: 0").unwrap();
        assert!(config.validate().is_err());
    }

    #[test]
    fn the_exec_output_limit_must_fit_a_mesh_message() {
        for bytes in [0, berth_proto::MAX_EXEC_OUTPUT + 1] {
            let yaml = format!("sandboxes:\n  max_exec_output_bytes: {bytes}\n");
            let config: ControlPlaneConfig = serde_yaml_ng::from_str(&yaml).unwrap();
            let err = config.validate().unwrap_err().to_string();
            assert!(err.contains("max_exec_output_bytes"), "{err}");
        }
        let yaml = format!(
            "sandboxes:\n  max_exec_output_bytes: {}\n",
            berth_proto::MAX_EXEC_OUTPUT
        );
        let config: ControlPlaneConfig = serde_yaml_ng::from_str(&yaml).unwrap();
        config.validate().unwrap();
    }

    #[test]
    fn key_rate_limits_are_off_unless_configured() {
        let config = ControlPlaneConfig::default();
        assert_eq!(config.api.key_rate_limit, 0);
        let config: ControlPlaneConfig =
            serde_yaml_ng::from_str("api:\n  key_rate_limit: 50\n  key_rate_burst: 100\n").unwrap();
        config.validate().unwrap();
        assert_eq!(
            (config.api.key_rate_limit, config.api.key_rate_burst),
            (50, 100)
        );
        assert!(serde_yaml_ng::from_str::<ControlPlaneConfig>("api:\n  rate: 1\n").is_err());
    }

    #[test]
    fn the_default_database_is_sqlite_in_the_data_dir() {
        let config = ControlPlaneConfig {
            data_dir: PathBuf::from("/var/lib/berth"),
            ..Default::default()
        };
        assert_eq!(
            config.database_url().unwrap(),
            "sqlite:///var/lib/berth/berth.db"
        );
    }

    #[test]
    fn keys_live_in_the_data_dir_unless_configured() {
        let mut config = ControlPlaneConfig {
            data_dir: PathBuf::from("/var/lib/berth"),
            ..Default::default()
        };
        assert_eq!(config.keys_dir(), PathBuf::from("/var/lib/berth"));
        config.keys_dir = Some(PathBuf::from("/etc/berth/keys"));
        assert_eq!(config.keys_dir(), PathBuf::from("/etc/berth/keys"));
    }

    #[test]
    fn a_database_url_of_another_kind_is_refused() {
        let config: ControlPlaneConfig =
            serde_yaml_ng::from_str("database:\n  url: mysql://db/berth").unwrap();
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("database.url"), "{err}");
        let config: ControlPlaneConfig =
            serde_yaml_ng::from_str("database:\n  url: postgres://berth@db/berth").unwrap();
        config.validate().unwrap();
    }

    #[test]
    fn a_lease_lasts_lost_after_and_never_less_than_two_graces() {
        // the default: five minutes of silence before sandboxes are given up
        let config = ControlPlaneConfig::default();
        assert_eq!(config.lease_duration(), Duration::from_secs(300));
        let config: ControlPlaneConfig = serde_yaml_ng::from_str(
            "heartbeat_interval: 5s\nmissed_heartbeats: 3\nsandboxes:\n  disconnect:\n    lost_after: 0s\n",
        )
        .unwrap();
        assert_eq!(config.lease_duration(), Duration::from_secs(30));
        let unknown: Result<ControlPlaneConfig, _> =
            serde_yaml_ng::from_str("sandboxes:\n  disconnect:\n    grace: 1s\n");
        assert!(unknown.is_err(), "an unknown disconnect key was accepted");
    }
}
