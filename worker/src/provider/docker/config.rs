//! The `docker:` section of a worker's config: which engine, which runtime, which
//! image when a spawn names none and whether to pull it, how sandboxes are networked
//! (and the address range their networks are carved from), the limits and hardening
//! every sandbox gets, and how much of its console the engine keeps. Checked by
//! `validate()`.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use super::subnets::Ipv4Net;

/// Where the engine listens when the config names nothing.
pub const DEFAULT_HOST: &str = "unix:///var/run/docker.sock";

/// 10.213.0.0/16: private, and outside the engine's default address pools
/// (172.17.0.0/16-172.31.0.0/16 and 192.168.0.0/16).
pub const DEFAULT_SUBNET_POOL: Ipv4Net = Ipv4Net::from_octets([10, 213, 0, 0], 16);

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DockerConfig {
    /// The engine: `unix:///path/docker.sock`, a bare socket path, or
    /// `tcp://host:2375` / `http://host:2375` (plain HTTP: keep it on a trusted link).
    pub host: String,
    /// OCI runtime for sandboxes: `runc`, `runsc` (gVisor), `kata`, ... as the engine
    /// names it.
    pub runtime: String,
    /// Image used when a spawn names none.
    pub default_image: String,
    pub pull_policy: PullPolicy,
    /// `per-sandbox` (a bridge network of its own for every sandbox), `none` (no
    /// network at all) or the name of an existing network.
    pub network: NetworkMode,
    /// The IPv4 range per-sandbox networks take their subnets from (a private range
    /// no other network of the engine or route of the host uses).
    pub subnet_pool: Ipv4Net,
    /// Prefix length of each per-sandbox network's subnet: 28 is a gateway and 13
    /// addresses; the pool holds `2^(subnet_prefix - pool prefix)` sandboxes.
    pub subnet_prefix: u8,
    /// Memory when a spawn asks for none (MiB; no swap beyond it).
    pub memory_mb: u64,
    /// CPUs when a spawn asks for none.
    pub vcpus: u32,
    /// Most processes (threads included) a sandbox may run at once.
    pub pids_limit: i64,
    /// Mount the image's filesystem read-only; `/tmp` (tmpfs) and `/workspace` (a
    /// volume) stay writable.
    pub read_only_rootfs: bool,
    /// Size of the `/tmp` tmpfs of a read-only sandbox, in MiB.
    pub tmp_size_mb: u64,
    /// Run sandbox processes as this user (`name`, `uid`, `uid:gid`); empty: the
    /// image's user.
    pub user: String,
    /// Size (MiB) at which the engine rotates a sandbox's console log (`json-file`
    /// driver's `max-size`).
    pub log_max_size_mb: u64,
    /// Console log files kept per sandbox, the one written included (`max-file`):
    /// a sandbox's log takes at most `log_max_size_mb × log_max_files` MiB.
    pub log_max_files: u32,
    /// Longest an ordinary engine call may take.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// Keep sandboxes on per-sandbox networks away from the host's own services with
    /// iptables rules (see `firewall`); needs root (CAP_NET_ADMIN) and `iptables`.
    /// Off: a sandbox reaches whatever listens on the host's addresses.
    pub host_firewall: bool,
    /// How often the host firewall's rules are checked and repaired.
    #[serde(with = "humantime_serde")]
    pub host_firewall_check_interval: Duration,
    /// Most a sandbox's `/workspace` may hold (MiB); past it the watchdog stops the
    /// sandbox (see `workspace_watch`). 0: no limit.
    pub workspace_max_mb: u64,
    /// How often the watchdog measures every running sandbox's `/workspace`.
    #[serde(with = "humantime_serde")]
    pub workspace_check_interval: Duration,
    /// Largest file one upload (`PUT` of a file) may bring; a larger one is refused
    /// (400) without anything reaching the sandbox.
    pub max_upload_mb: u64,
    /// Where uploads are spooled before they go into the container (the tar header
    /// needs their size): the worker sets `<data dir>/spool`; unset, the system's
    /// temp dir.
    #[serde(skip)]
    pub spool_dir: Option<std::path::PathBuf>,
}

impl Default for DockerConfig {
    fn default() -> Self {
        Self {
            host: DEFAULT_HOST.to_owned(),
            runtime: "runc".to_owned(),
            default_image: "debian:bookworm-slim".to_owned(),
            pull_policy: PullPolicy::IfNotPresent,
            network: NetworkMode::PerSandbox,
            subnet_pool: DEFAULT_SUBNET_POOL,
            subnet_prefix: 28,
            memory_mb: 512,
            vcpus: 1,
            pids_limit: 512,
            read_only_rootfs: false,
            tmp_size_mb: 256,
            user: String::new(),
            log_max_size_mb: 10,
            log_max_files: 3,
            request_timeout: Duration::from_secs(120),
            host_firewall: true,
            host_firewall_check_interval: Duration::from_secs(30),
            max_upload_mb: 1024,
            workspace_max_mb: 10 * 1024,
            workspace_check_interval: Duration::from_secs(60),
            spool_dir: None,
        }
    }
}

/// When an image is pulled from a registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PullPolicy {
    /// Only images already on the engine are used.
    Never,
    IfNotPresent,
    /// Pulled at every spawn.
    Always,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetworkMode {
    /// A bridge network of its own per sandbox (`berth-<sandbox id>`): no published
    /// ports, and the engine keeps bridges apart, so no route to other sandboxes.
    PerSandbox,
    /// A loopback interface only.
    None,
    /// An existing network the operator made (shared by every sandbox on it).
    Named(String),
}

impl NetworkMode {
    fn parse(value: &str) -> Self {
        match value {
            "per-sandbox" | "" => Self::PerSandbox,
            "none" => Self::None,
            name => Self::Named(name.to_owned()),
        }
    }
}

impl fmt::Display for NetworkMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::PerSandbox => f.write_str("per-sandbox"),
            Self::None => f.write_str("none"),
            Self::Named(name) => f.write_str(name),
        }
    }
}

impl<'de> Deserialize<'de> for NetworkMode {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Ok(Self::parse(&String::deserialize(deserializer)?))
    }
}

impl DockerConfig {
    pub fn validate(&self) -> Result<(), String> {
        if self.host.trim().is_empty() {
            return Err("docker.host is empty".into());
        }
        if self.host.starts_with("https://") || self.host.starts_with("ssh://") {
            return Err(format!(
                "docker.host {:?}: use unix://, a socket path, tcp:// or http://",
                self.host
            ));
        }
        let token = |value: &str| {
            !value.is_empty() && !value.chars().any(|c| c.is_whitespace() || c.is_control())
        };
        if !token(&self.runtime) {
            return Err(format!(
                "docker.runtime {:?} is not a runtime name",
                self.runtime
            ));
        }
        if !token(&self.default_image) {
            return Err(format!(
                "docker.default_image {:?} is not an image reference",
                self.default_image
            ));
        }
        if let NetworkMode::Named(name) = &self.network {
            if name == "host" || name.starts_with("container:") {
                return Err(format!(
                    "docker.network {name:?} would share a network namespace with the host or another container; use per-sandbox, none or a network name"
                ));
            }
            if !token(name) {
                return Err(format!("docker.network {name:?} is not a network name"));
            }
        }
        if !(6..=1 << 30).contains(&self.memory_mb) {
            return Err("docker.memory_mb must be at least 6".into());
        }
        if !(1..=1024).contains(&self.vcpus) {
            return Err("docker.vcpus must be between 1 and 1024".into());
        }
        if self.pids_limit < 16 {
            return Err("docker.pids_limit must be at least 16".into());
        }
        if self.tmp_size_mb == 0 {
            return Err("docker.tmp_size_mb must be more than 0".into());
        }
        if self
            .user
            .chars()
            .any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(format!("docker.user {:?} is not a user", self.user));
        }
        self.validate_subnets()?;
        if !(1..=1024).contains(&self.log_max_size_mb) {
            return Err("docker.log_max_size_mb must be between 1 and 1024".into());
        }
        if !(1..=100).contains(&self.log_max_files) {
            return Err("docker.log_max_files must be between 1 and 100".into());
        }
        if self.request_timeout < Duration::from_secs(1) {
            return Err("docker.request_timeout must be at least 1s".into());
        }
        if self.workspace_check_interval < Duration::from_millis(100) {
            return Err("docker.workspace_check_interval must be at least 100ms".into());
        }
        if self.max_upload_mb == 0 {
            return Err("docker.max_upload_mb must be at least 1".into());
        }
        if self.host_firewall_check_interval < Duration::from_millis(100) {
            return Err("docker.host_firewall_check_interval must be at least 100ms".into());
        }
        Ok(())
    }

    fn validate_subnets(&self) -> Result<(), String> {
        let pool = self.subnet_pool;
        // no sandbox network may shadow this host, link-local (cloud metadata) or
        // multicast addresses, or the "this network" and broadcast ranges
        for (reserved, what) in [
            ("0.0.0.0/8", "\"this network\""),
            ("127.0.0.0/8", "loopback"),
            ("169.254.0.0/16", "link-local"),
            ("224.0.0.0/3", "multicast and reserved"),
        ] {
            let reserved: Ipv4Net = reserved.parse()?;
            if pool.overlaps(reserved) {
                return Err(format!(
                    "docker.subnet_pool {pool} overlaps the {what} range {reserved}; use a private range like 10.213.0.0/16"
                ));
            }
        }
        if !(pool.prefix()..=30).contains(&self.subnet_prefix) {
            return Err(format!(
                "docker.subnet_prefix must be between the pool's /{} and /30, not /{}",
                pool.prefix(),
                self.subnet_prefix
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_hardened() {
        let config: DockerConfig = serde_yaml_ng::from_str("{}").unwrap();
        config.validate().unwrap();
        assert_eq!(config, DockerConfig::default());
        assert_eq!(config.network, NetworkMode::PerSandbox);
        assert_eq!(config.pull_policy, PullPolicy::IfNotPresent);
        assert_eq!(config.runtime, "runc");
        assert_eq!(config.subnet_pool.to_string(), "10.213.0.0/16");
        assert_eq!(config.subnet_pool.subnets(config.subnet_prefix), 4096);
        // clear of the engine's default address pools
        for engine_pool in ["172.16.0.0/12", "192.168.0.0/16"] {
            assert!(!config.subnet_pool.overlaps(engine_pool.parse().unwrap()));
        }
        assert_eq!((config.log_max_size_mb, config.log_max_files), (10, 3));
        assert!(config.host_firewall);
    }

    #[test]
    fn every_key_parses() {
        let config: DockerConfig = serde_yaml_ng::from_str(
            "host: /run/docker.sock\nruntime: runsc\ndefault_image: busybox:1\npull_policy: never\nnetwork: none\nmemory_mb: 64\nvcpus: 2\npids_limit: 100\nread_only_rootfs: true\ntmp_size_mb: 16\nuser: \"1000:1000\"\nrequest_timeout: 30s\nsubnet_pool: 172.30.128.0/20\nsubnet_prefix: 29\nlog_max_size_mb: 1\nlog_max_files: 5\nhost_firewall: false\nhost_firewall_check_interval: 5s\nmax_upload_mb: 8\n",
        )
        .unwrap();
        config.validate().unwrap();
        assert_eq!(config.subnet_pool.to_string(), "172.30.128.0/20");
        assert_eq!(config.subnet_prefix, 29);
        assert_eq!((config.log_max_size_mb, config.log_max_files), (1, 5));
        assert!(!config.host_firewall);
        assert_eq!(config.max_upload_mb, 8);
        assert_eq!(config.host_firewall_check_interval, Duration::from_secs(5));
        assert_eq!(config.pull_policy, PullPolicy::Never);
        assert_eq!(config.network, NetworkMode::None);
        assert_eq!(config.user, "1000:1000");
        let named: DockerConfig = serde_yaml_ng::from_str("network: sandboxes").unwrap();
        assert_eq!(named.network, NetworkMode::Named("sandboxes".into()));
    }

    #[test]
    fn unsafe_or_broken_settings_are_refused() {
        for yaml in [
            "network: host",
            "network: \"container:abc\"",
            "pull_policy: sometimes",
            "runtime: \"\"",
            "default_image: \"a b\"",
            "pids_limit: 0",
            "memory_mb: 1",
            "vcpus: 0",
            "host: \"\"",
            "user: \"a b\"",
            "colour: red",
            "subnet_pool: 10.213.0.1/16",
            "subnet_pool: 10.213.0.0",
            "subnet_pool: \"fd00::/64\"",
            "subnet_pool: 127.0.0.0/16",
            "subnet_pool: 169.254.0.0/16",
            "subnet_pool: 0.0.0.0/0",
            "subnet_pool: 230.0.0.0/16",
            "subnet_prefix: 31",
            "subnet_pool: 10.213.0.0/24\nsubnet_prefix: 20",
            "log_max_size_mb: 0",
            "log_max_files: 0",
            "host_firewall_check_interval: 0s",
            "max_upload_mb: 0",
        ] {
            let parsed: Result<DockerConfig, _> = serde_yaml_ng::from_str(yaml);
            assert!(
                parsed.map_or(true, |config| config.validate().is_err()),
                "{yaml}"
            );
        }
    }
}
