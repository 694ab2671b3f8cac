//! The `berth serve` config file: the control plane's own settings
//! ([`ControlPlaneConfig`]) and, beside them, the `local_worker` section that only the
//! binary reads. Both refuse unknown keys.

use std::path::Path;

use anyhow::Context;
use berth_controlplane::ControlPlaneConfig;

use crate::local_worker::LocalWorkerConfig;

const LOCAL_WORKER_KEY: &str = "local_worker";

/// Everything `berth serve` is configured with.
#[derive(Debug, Clone, Default)]
pub struct ServeConfig {
    pub control_plane: ControlPlaneConfig,
    pub local_worker: LocalWorkerConfig,
}

impl ServeConfig {
    pub fn from_file(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config file {}", path.display()))?;
        Self::from_yaml(&text)
            .with_context(|| format!("config file {} is not valid", path.display()))
    }

    /// Parses YAML text; every key is optional.
    pub fn from_yaml(text: &str) -> anyhow::Result<Self> {
        let mut document: serde_yaml_ng::Value = serde_yaml_ng::from_str(text)?;
        if !document.is_null() && !document.is_mapping() {
            anyhow::bail!("the config file is not a mapping of keys");
        }
        let local_worker = document
            .as_mapping_mut()
            .and_then(|mapping| mapping.remove(LOCAL_WORKER_KEY));
        let control_plane = if document.is_null() {
            ControlPlaneConfig::default()
        } else {
            serde_yaml_ng::from_value(document)?
        };
        let local_worker = match local_worker {
            Some(section) if !section.is_null() => serde_yaml_ng::from_value(section)
                .with_context(|| format!("in section {LOCAL_WORKER_KEY}"))?,
            _ => LocalWorkerConfig::default(),
        };
        Ok(Self {
            control_plane,
            local_worker,
        })
    }

    pub fn validate(&self) -> anyhow::Result<()> {
        self.control_plane.validate()?;
        self.local_worker.validate()
    }

    /// `--default-image` / `BERTH_DEFAULT_IMAGE`: the image of a create that names
    /// none, for the control plane (`sandboxes.default_image`) and for the local
    /// docker worker (`local_worker.docker.default_image`) alike.
    pub fn set_default_image(&mut self, image: &str) {
        self.control_plane.sandboxes.default_image = image.to_owned();
        self.local_worker.docker.default_image = image.to_owned();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_file_gives_the_defaults() {
        let config = ServeConfig::from_yaml("").unwrap();
        config.validate().unwrap();
        assert!(!config.local_worker.enabled());
        assert_eq!(config.control_plane.listen.port(), 7423);
        ServeConfig::from_yaml("{}").unwrap().validate().unwrap();
    }

    #[test]
    fn the_local_worker_section_is_read_beside_the_control_plane() {
        let config = ServeConfig::from_yaml(
            "heartbeat_interval: 2s\nlocal_worker:\n  provider: mock\n  max_sandboxes: 3\n",
        )
        .unwrap();
        assert_eq!(
            config.control_plane.heartbeat_interval,
            std::time::Duration::from_secs(2)
        );
        assert_eq!(config.local_worker.provider, "mock");
        assert_eq!(config.local_worker.max_sandboxes, 3);
    }

    #[test]
    fn unknown_keys_and_bad_values_are_refused() {
        assert!(ServeConfig::from_yaml("listne: 1").is_err());
        assert!(ServeConfig::from_yaml("local_worker:\n  provder: mock").is_err());
        let config = ServeConfig::from_yaml("local_worker:\n  provider: vmware").unwrap();
        assert!(config.validate().is_err());
        let config = ServeConfig::from_yaml(
            "local_worker:\n  provider: docker\n  docker:\n    pull_policy: never\n",
        )
        .unwrap();
        config.validate().unwrap();
        let config = ServeConfig::from_yaml(
            "local_worker:\n  provider: docker\n  docker:\n    network: host\n",
        )
        .unwrap();
        assert!(config.validate().is_err());
    }

    #[test]
    fn the_example_config_parses_and_is_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/control-plane.yaml");
        let config = ServeConfig::from_file(&path).unwrap();
        config.validate().unwrap();
        assert_eq!(
            config.control_plane.certificates.worker_ttl,
            std::time::Duration::from_secs(24 * 3600)
        );
        assert_eq!(config.local_worker.max_sandboxes, 64);
    }
}
