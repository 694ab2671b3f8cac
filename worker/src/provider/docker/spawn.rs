//! Creating and destroying a sandbox's container: the image by pull policy, a bridge
//! network of its own (by default), and a container with the limits and hardening of
//! the config: memory (no extra swap), CPUs, pids, every capability dropped,
//! `no-new-privileges`, optionally a read-only root with a tmpfs `/tmp`, `/workspace`
//! on an anonymous volume, `docker-init` as PID 1 over a sleeper, no published ports.
//! A spawn that fails half-way removes what it made; destroy is idempotent.

use std::collections::HashMap;

use bollard::Docker;
use bollard::models::{
    ContainerCreateBody, HostConfig, HostConfigLogConfig, Ipam, IpamConfig, NetworkCreateRequest,
};
use bollard::query_parameters::{
    CreateContainerOptions, CreateImageOptions, InspectNetworkOptions, RemoveContainerOptions,
};
use futures::StreamExt;
use tokio::sync::Mutex;

use super::config::{DockerConfig, NetworkMode, PullPolicy};
use super::engine::{engine_error, message_of, status_of};
use super::inventory::{self, labels, owned_by, resource_name};
use super::scripts;
use super::services;
use super::subnets::{self, Ipv4Net};
use crate::provider::paths::WORKSPACE;
use crate::provider::{BUILT_REPOSITORY, ProviderError, SandboxInfo, SandboxSpec};

const MIB: i64 = 1024 * 1024;

/// Picks of a subnet a spawn makes before it gives up, when other workers on the
/// engine keep taking the one it picked.
const SUBNET_ATTEMPTS: usize = 8;

/// The engine's log driver for sandboxes: files it rotates at a size, read back by
/// the logs API.
const LOG_DRIVER: &str = "json-file";

/// What a spawn needs to know beyond the spec.
pub struct Spawn<'a> {
    pub docker: &'a Docker,
    pub config: &'a DockerConfig,
    pub worker_id: &'a str,
    /// Held while a sandbox network's subnet is picked and the network created.
    pub subnet_lock: &'a Mutex<()>,
}

impl Spawn<'_> {
    pub async fn spawn(&self, spec: &SandboxSpec) -> Result<SandboxInfo, ProviderError> {
        inventory::check_sandbox_id(&spec.sandbox_id)?;
        let sandbox_id = spec.sandbox_id.as_str();
        if inventory::find(self.docker, self.worker_id, sandbox_id)
            .await?
            .is_some()
        {
            return Err(ProviderError::SandboxExists(sandbox_id.to_owned()));
        }
        let image = if spec.image.is_empty() {
            self.config.default_image.as_str()
        } else {
            spec.image.as_str()
        };
        self.ensure_image(image).await?;
        if !spec.services.is_empty() && self.config.network != NetworkMode::PerSandbox {
            return Err(ProviderError::InvalidArgument(
                "companion services need a network of the sandbox's own; this worker runs \
                 sandboxes on a shared or no network (docker.network)"
                    .into(),
            ));
        }
        // the sandbox reaches its services over its own network, so traffic between
        // the containers on it is on when it has any
        let with_services = !spec.services.is_empty();
        let network = self
            .network(sandbox_id, spec.internet, with_services)
            .await?;
        let made = async {
            let began = std::time::Instant::now();
            self.start_services(spec, &network).await?;
            let services_ms = if spec.services.is_empty() {
                0
            } else {
                u64::try_from(began.elapsed().as_millis()).unwrap_or(u64::MAX)
            };
            let info = self.create_and_start(spec, image, &network).await?;
            Ok(SandboxInfo {
                services_ms,
                ..info
            })
        }
        .await;
        match made {
            Ok(info) => Ok(info),
            Err(err) => {
                // leave nothing behind but what belongs to a sandbox that already
                // existed; a per-sandbox network is this sandbox's whether this spawn
                // made it or a spawn that died half-way did
                if !matches!(err, ProviderError::SandboxExists(_)) {
                    self.remove_container(sandbox_id).await;
                    if let Err(err) =
                        services::remove_all(self.docker, self.worker_id, sandbox_id).await
                    {
                        tracing::warn!(sandbox_id, error = %err, "cannot remove the services of a failed spawn");
                    }
                    if self.config.network == NetworkMode::PerSandbox {
                        self.remove_network(sandbox_id).await;
                    }
                }
                Err(err)
            }
        }
    }

    async fn create_and_start(
        &self,
        spec: &SandboxSpec,
        image: &str,
        network: &str,
    ) -> Result<SandboxInfo, ProviderError> {
        let name = resource_name(&spec.sandbox_id);
        let body = container_body(self.config, self.worker_id, spec, image, network);
        let options = CreateContainerOptions {
            name: Some(name.clone()),
            ..Default::default()
        };
        let created = self
            .docker
            .create_container(Some(options), body)
            .await
            .map_err(|err| match status_of(&err) {
                Some(409) => ProviderError::SandboxExists(spec.sandbox_id.clone()),
                Some(404) => {
                    ProviderError::InvalidArgument(format!("image {image:?}: {}", message_of(&err)))
                }
                _ => engine_error("create the sandbox's container", err),
            })?;
        self.docker
            .start_container(&created.id, None)
            .await
            .map_err(|err| engine_error("start the sandbox's container", err))?;
        let container = inventory::resolve(self.docker, self.worker_id, &spec.sandbox_id).await?;
        Ok(inventory::info_of(&spec.sandbox_id, &container))
    }

    /// Makes `image` present as the pull policy says.
    pub(super) async fn ensure_image(&self, image: &str) -> Result<(), ProviderError> {
        if image.starts_with(BUILT_REPOSITORY) {
            // built here, never pulled: a missing one was removed since its build
            return match self.docker.inspect_image(image).await {
                Ok(_) => Ok(()),
                Err(err) if status_of(&err) == Some(404) => Err(self.image_unavailable(
                    image,
                    "a built image, removed since it was built; the next create from its \
                     template builds it again"
                        .into(),
                )),
                Err(err) => Err(engine_error("inspect the image", err)),
            };
        }
        if self.config.pull_policy != PullPolicy::Always {
            match self.docker.inspect_image(image).await {
                Ok(_) => return Ok(()),
                Err(err) if status_of(&err) == Some(404) => {}
                Err(err) => return Err(engine_error("inspect the image", err)),
            }
            if self.config.pull_policy == PullPolicy::Never {
                return Err(self.image_unavailable(image, "the pull policy is never".into()));
            }
        }
        self.pull(image).await
    }

    fn image_unavailable(&self, image: &str, reason: String) -> ProviderError {
        ProviderError::ImageUnavailable {
            image: image.to_owned(),
            worker_id: self.worker_id.to_owned(),
            reason,
        }
    }

    async fn pull(&self, image: &str) -> Result<(), ProviderError> {
        let options = CreateImageOptions {
            from_image: Some(image.to_owned()),
            ..Default::default()
        };
        let mut progress = self.docker.create_image(Some(options), None, None).boxed();
        while let Some(step) = progress.next().await {
            // the engine answered the inspect, so this is the image's pull failing
            // (unknown to the registry, no registry reachable, access denied): the
            // image has to come from elsewhere, trying again or elsewhere won't help
            if let Err(err) = step {
                return Err(self.image_unavailable(image, message_of(&err)));
            }
        }
        tracing::info!(image, "image pulled");
        Ok(())
    }

    /// The network mode of the container; a per-sandbox network is made (or one a
    /// spawn that died half-way left is taken). Without `internet` the per-sandbox
    /// network is internal: the engine routes nothing off it.
    async fn network(
        &self,
        sandbox_id: &str,
        internet: bool,
        icc: bool,
    ) -> Result<String, ProviderError> {
        match &self.config.network {
            NetworkMode::None => Ok("none".to_owned()),
            NetworkMode::Named(name) if !internet => Err(ProviderError::InvalidArgument(format!(
                "this worker puts every sandbox on the docker network {name:?}, which it cannot cut off from the internet; create the sandbox with internet allowed, or use a worker with docker.network: per-sandbox"
            ))),
            NetworkMode::Named(name) => {
                match self
                    .docker
                    .inspect_network(name, None::<InspectNetworkOptions>)
                    .await
                {
                    Ok(_) => Ok(name.clone()),
                    Err(err) if status_of(&err) == Some(404) => Err(ProviderError::Unavailable(
                        format!("the configured docker network {name:?} does not exist"),
                    )),
                    Err(err) => Err(engine_error("inspect the network", err)),
                }
            }
            NetworkMode::PerSandbox => {
                let name = resource_name(sandbox_id);
                match self
                    .docker
                    .inspect_network(&name, None::<InspectNetworkOptions>)
                    .await
                {
                    // left by a spawn that died before its container existed
                    Ok(network)
                        if owned_by(network.labels.as_ref(), self.worker_id, sandbox_id) =>
                    {
                        if network.internal.unwrap_or(false) != internet {
                            return Ok(name);
                        }
                        // made for other egress than this spawn asks for
                        self.remove_network(sandbox_id).await;
                    }
                    Ok(_) => {
                        return Err(ProviderError::SandboxExists(sandbox_id.to_owned()));
                    }
                    Err(err) if status_of(&err) == Some(404) => {}
                    Err(err) => return Err(engine_error("inspect the network", err)),
                }
                self.create_network(&name, sandbox_id, internet, icc)
                    .await?;
                Ok(name)
            }
        }
    }

    /// Makes the sandbox's own network on a free subnet of the pool (see the
    /// `subnets` module): one spawn of this worker at a time picks and creates, and a
    /// subnet the engine refuses as overlapping (another worker took it meanwhile) is
    /// left out of the next pick.
    async fn create_network(
        &self,
        name: &str,
        sandbox_id: &str,
        internet: bool,
        icc: bool,
    ) -> Result<(), ProviderError> {
        let (pool, prefix) = (self.config.subnet_pool, self.config.subnet_prefix);
        let _one_at_a_time = self.subnet_lock.lock().await;
        let mut refused: Vec<Ipv4Net> = Vec::new();
        for _ in 0..SUBNET_ATTEMPTS {
            let mut taken = subnets::in_use(self.docker).await?;
            taken.extend_from_slice(&refused);
            let Some(subnet) = subnets::pick(pool, prefix, &taken) else {
                return Err(ProviderError::Unavailable(format!(
                    "no free /{prefix} subnet left in docker.subnet_pool {pool} for another sandbox network; destroy sandboxes, or widen the pool or lengthen docker.subnet_prefix"
                )));
            };
            match self
                .docker
                .create_network(network_request(
                    self.worker_id,
                    sandbox_id,
                    name,
                    subnet,
                    internet,
                    icc,
                ))
                .await
            {
                Ok(_) => {
                    tracing::debug!(sandbox_id, network = name, %subnet, "sandbox network created");
                    return Ok(());
                }
                Err(err) if subnets::is_overlap(&err) => {
                    tracing::debug!(sandbox_id, %subnet, error = %err, "subnet taken meanwhile; picking another");
                    refused.push(subnet);
                }
                Err(err) => return Err(engine_error("create the sandbox's network", err)),
            }
        }
        Err(ProviderError::Unavailable(format!(
            "no subnet of docker.subnet_pool {pool} could be had for the sandbox's network after {SUBNET_ATTEMPTS} tries: other networks kept taking them"
        )))
    }

    /// Removes the sandbox's container and its network; `Ok` when they are gone
    /// already. Another worker's resources are never touched.
    pub async fn destroy(&self, sandbox_id: &str) -> Result<(), ProviderError> {
        if inventory::check_sandbox_id(sandbox_id).is_err() {
            return Ok(());
        }
        if inventory::find(self.docker, self.worker_id, sandbox_id)
            .await?
            .is_some()
        {
            let options = RemoveContainerOptions {
                force: true,
                v: true,
                ..Default::default()
            };
            match self
                .docker
                .remove_container(&resource_name(sandbox_id), Some(options))
                .await
            {
                Ok(()) => {}
                Err(err) if status_of(&err) == Some(404) => {}
                // another destroy is removing it right now
                Err(err) if status_of(&err) == Some(409) => {}
                Err(err) => return Err(engine_error("remove the sandbox's container", err)),
            }
        }
        // its services go with it (before its network, which they are on)
        services::remove_all(self.docker, self.worker_id, sandbox_id).await?;
        let name = resource_name(sandbox_id);
        match self
            .docker
            .inspect_network(&name, None::<InspectNetworkOptions>)
            .await
        {
            Ok(network) if owned_by(network.labels.as_ref(), self.worker_id, sandbox_id) => {
                match self.docker.remove_network(&name).await {
                    Ok(()) => {}
                    Err(err) if status_of(&err) == Some(404) => {}
                    Err(err) => return Err(engine_error("remove the sandbox's network", err)),
                }
            }
            Ok(_) => {}
            Err(err) if status_of(&err) == Some(404) => {}
            Err(err) => return Err(engine_error("inspect the sandbox's network", err)),
        }
        Ok(())
    }

    async fn remove_container(&self, sandbox_id: &str) {
        let options = RemoveContainerOptions {
            force: true,
            v: true,
            ..Default::default()
        };
        let name = resource_name(sandbox_id);
        if let Err(err) = self.docker.remove_container(&name, Some(options)).await
            && status_of(&err) != Some(404)
        {
            tracing::warn!(sandbox_id, error = %err, "cannot remove the container of a failed spawn");
        }
    }

    async fn remove_network(&self, sandbox_id: &str) {
        let name = resource_name(sandbox_id);
        if let Err(err) = self.docker.remove_network(&name).await
            && status_of(&err) != Some(404)
        {
            tracing::warn!(sandbox_id, error = %err, "cannot remove the network of a failed spawn");
        }
    }
}

/// A sandbox's own network: a bridge on `subnet` (gateway its first address),
/// with traffic between its containers off unless `icc` (it has companion services:
/// only its own containers are ever on it); internal (nothing routed off it, no
/// masquerading) when the sandbox may not reach the internet.
fn network_request(
    worker_id: &str,
    sandbox_id: &str,
    name: &str,
    subnet: Ipv4Net,
    internet: bool,
    icc: bool,
) -> NetworkCreateRequest {
    NetworkCreateRequest {
        name: name.to_owned(),
        driver: Some("bridge".to_owned()),
        internal: Some(!internet),
        attachable: Some(false),
        labels: Some(labels(worker_id, sandbox_id)),
        options: Some(HashMap::from([(
            "com.docker.network.bridge.enable_icc".to_owned(),
            icc.to_string(),
        )])),
        ipam: Some(Ipam {
            driver: Some("default".to_owned()),
            config: Some(vec![IpamConfig {
                subnet: Some(subnet.to_string()),
                gateway: Some(subnet.gateway().to_string()),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The container a sandbox runs in.
pub fn container_body(
    config: &DockerConfig,
    worker_id: &str,
    spec: &SandboxSpec,
    image: &str,
    network_mode: &str,
) -> ContainerCreateBody {
    let memory_mb = if spec.memory_mb > 0 {
        spec.memory_mb
    } else {
        config.memory_mb
    };
    let memory = i64::try_from(memory_mb)
        .unwrap_or(i64::MAX / MIB)
        .saturating_mul(MIB);
    let vcpus = if spec.vcpus > 0 {
        spec.vcpus
    } else {
        config.vcpus
    };
    let mut env: Vec<String> = Vec::new();
    if !spec.env.contains_key("HOME") {
        env.push(format!("HOME={WORKSPACE}"));
    }
    env.extend(spec.env.iter().map(|(key, value)| format!("{key}={value}")));
    env.push(format!("BERTH_SANDBOX_ID={}", spec.sandbox_id));
    let tmpfs = config.read_only_rootfs.then(|| {
        HashMap::from([(
            "/tmp".to_owned(),
            format!("rw,nosuid,nodev,size={}m,mode=1777", config.tmp_size_mb),
        )])
    });
    ContainerCreateBody {
        image: Some(image.to_owned()),
        entrypoint: Some(scripts::sleeper(&spec.sandbox_id)),
        env: Some(env),
        labels: Some(labels(worker_id, &spec.sandbox_id)),
        working_dir: Some(WORKSPACE.to_owned()),
        user: Some(config.user.clone()).filter(|user| !user.is_empty()),
        volumes: Some(vec![WORKSPACE.to_owned()]),
        tty: Some(false),
        open_stdin: Some(false),
        host_config: Some(HostConfig {
            memory: Some(memory),
            memory_swap: Some(memory),
            nano_cpus: Some(i64::from(vcpus) * 1_000_000_000),
            pids_limit: Some(config.pids_limit),
            cap_drop: Some(vec!["ALL".to_owned()]),
            security_opt: Some(vec!["no-new-privileges".to_owned()]),
            readonly_rootfs: Some(config.read_only_rootfs),
            tmpfs,
            init: Some(true),
            runtime: Some(config.runtime.clone()),
            network_mode: Some(network_mode.to_owned()),
            ipc_mode: Some("private".to_owned()),
            publish_all_ports: Some(false),
            privileged: Some(false),
            auto_remove: Some(false),
            log_config: Some(HostConfigLogConfig {
                typ: Some(LOG_DRIVER.to_owned()),
                config: Some(HashMap::from([
                    (
                        "max-size".to_owned(),
                        format!("{}m", config.log_max_size_mb),
                    ),
                    ("max-file".to_owned(), config.log_max_files.to_string()),
                ])),
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[cfg(test)]
pub(super) mod tests {
    use std::collections::BTreeMap;

    use super::*;

    /// A sandbox spec with one env var, for the container-body tests here and in
    /// `run_args.rs`.
    pub(in crate::provider::docker) fn spec(memory_mb: u64, vcpus: u32) -> SandboxSpec {
        SandboxSpec {
            sandbox_id: "sb1".into(),
            image: String::new(),
            vcpus,
            memory_mb,
            env: BTreeMap::from([("A".into(), "1".into())]),
            metadata: BTreeMap::new(),
            internet: true,
            services: Vec::new(),
        }
    }

    #[test]
    fn requests_and_config_become_limits_and_hardening() {
        let config = DockerConfig {
            read_only_rootfs: true,
            user: "1000:1000".into(),
            runtime: "runsc".into(),
            ..Default::default()
        };
        let body = container_body(&config, "w1", &spec(256, 2), "img:1", "berth-sb1");
        let host = body.host_config.unwrap();
        assert_eq!(host.memory, Some(256 * MIB));
        assert_eq!(host.memory_swap, Some(256 * MIB));
        assert_eq!(host.nano_cpus, Some(2_000_000_000));
        assert_eq!(host.pids_limit, Some(512));
        assert_eq!(host.cap_drop, Some(vec!["ALL".to_owned()]));
        assert_eq!(
            host.security_opt,
            Some(vec!["no-new-privileges".to_owned()])
        );
        assert_eq!(host.readonly_rootfs, Some(true));
        assert!(host.tmpfs.unwrap()["/tmp"].contains("size=256m"));
        assert_eq!(host.init, Some(true));
        assert_eq!(host.runtime.as_deref(), Some("runsc"));
        assert_eq!(host.network_mode.as_deref(), Some("berth-sb1"));
        assert!(host.port_bindings.is_none());
        let log = host.log_config.unwrap();
        assert_eq!(log.typ.as_deref(), Some("json-file"));
        let log_options = log.config.unwrap();
        assert_eq!(log_options["max-size"], "10m");
        assert_eq!(log_options["max-file"], "3");
        assert_eq!(body.user.as_deref(), Some("1000:1000"));
        assert_eq!(body.volumes, Some(vec!["/workspace".to_owned()]));
        let labels = body.labels.unwrap();
        assert_eq!(labels["berth.worker"], "w1");
        assert_eq!(labels["berth.sandbox"], "sb1");
        assert_eq!(labels["berth.managed"], "true");
        let env = body.env.unwrap();
        assert!(env.contains(&"A=1".to_owned()));
        assert!(env.contains(&"HOME=/workspace".to_owned()));
    }

    #[test]
    fn config_defaults_fill_what_a_request_leaves_out() {
        let config = DockerConfig {
            memory_mb: 128,
            vcpus: 3,
            ..Default::default()
        };
        let body = container_body(&config, "w1", &spec(0, 0), "img", "none");
        let host = body.host_config.unwrap();
        assert_eq!(host.memory, Some(128 * MIB));
        assert_eq!(host.nano_cpus, Some(3_000_000_000));
        assert_eq!(host.readonly_rootfs, Some(false));
        assert!(host.tmpfs.is_none());
        assert!(body.user.is_none());
    }

    #[test]
    fn a_sandbox_network_is_an_isolated_bridge_on_its_subnet() {
        let subnet: Ipv4Net = "10.213.0.48/28".parse().unwrap();
        let request = network_request("w1", "sb1", "berth-sb1", subnet, true, false);
        assert_eq!(request.name, "berth-sb1");
        assert_eq!(request.driver.as_deref(), Some("bridge"));
        assert_eq!(request.internal, Some(false));
        assert_eq!(request.attachable, Some(false));
        assert_eq!(
            request.options.unwrap()["com.docker.network.bridge.enable_icc"],
            "false"
        );
        assert_eq!(request.labels.unwrap()["berth.worker"], "w1");
        let ipam = request.ipam.unwrap().config.unwrap();
        assert_eq!(ipam.len(), 1);
        assert_eq!(ipam[0].subnet.as_deref(), Some("10.213.0.48/28"));
        assert_eq!(ipam[0].gateway.as_deref(), Some("10.213.0.49"));
    }

    #[test]
    fn a_sandbox_without_internet_gets_an_internal_network() {
        let subnet: Ipv4Net = "10.213.0.48/28".parse().unwrap();
        let request = network_request("w1", "sb1", "berth-sb1", subnet, false, false);
        assert_eq!(request.internal, Some(true));
        // still its own subnet and gateway, so the sandbox has an address
        let ipam = request.ipam.unwrap().config.unwrap();
        assert_eq!(ipam[0].subnet.as_deref(), Some("10.213.0.48/28"));
    }

    #[test]
    fn a_sandbox_with_services_lets_its_own_containers_talk() {
        let subnet: Ipv4Net = "10.213.0.48/28".parse().unwrap();
        let request = network_request("w1", "sb1", "berth-sb1", subnet, true, true);
        assert_eq!(
            request.options.unwrap()["com.docker.network.bridge.enable_icc"],
            "true"
        );
        // still no other container may join it
        assert_eq!(request.attachable, Some(false));
    }
}
