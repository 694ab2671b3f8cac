//! Companion services: containers a sandbox's template asks for (a database, a web
//! server), started on the sandbox's own network before the sandbox and reachable
//! from it by name (a network alias). Each runs with the sandbox's memory and CPU
//! limits, and the control plane counts them in the sandbox's footprint. They are labelled with their sandbox and the
//! service's name, so they are stopped, started and removed with the sandbox, are
//! never reported as sandboxes themselves, and one whose sandbox is gone (a spawn or
//! a destroy that died half-way) is removed by the inventory pass.

use std::collections::{HashMap, HashSet};

use bollard::Docker;
use bollard::models::{ContainerCreateBody, EndpointSettings, HostConfig, NetworkingConfig};
use bollard::query_parameters::{
    CreateContainerOptions, ListContainersOptions, RemoveContainerOptions, StartContainerOptions,
    StopContainerOptions,
};

use super::engine::{engine_error, message_of, status_of};
use super::inventory::{LABEL_SANDBOX, LABEL_WORKER, labels, worker_filter};
use super::spawn::Spawn;
use crate::provider::{ProviderError, SandboxInfo, SandboxSpec, ServiceSpec};

/// The label naming the service a container runs (its sandbox is `berth.sandbox`).
pub const LABEL_SERVICE: &str = "berth.service";

const MIB: i64 = 1024 * 1024;

/// A service's container: `berth-<sandbox>-svc-<name>`.
pub fn container_name(sandbox_id: &str, service: &str) -> String {
    format!("berth-{sandbox_id}-svc-{service}")
}

/// Whether a container's labels make it a service (not a sandbox).
pub fn is_service(labels: &HashMap<String, String>) -> bool {
    labels.contains_key(LABEL_SERVICE)
}

impl Spawn<'_> {
    /// Creates and starts `spec`'s services on `network`, in order; the first that
    /// fails fails the spawn (which removes what was made).
    pub(super) async fn start_services(
        &self,
        spec: &SandboxSpec,
        network: &str,
    ) -> Result<(), ProviderError> {
        for service in &spec.services {
            self.ensure_image(&service.image).await?;
            let name = container_name(&spec.sandbox_id, &service.name);
            let body = service_body(self.worker_id, spec, service, network);
            let options = CreateContainerOptions {
                name: Some(name.clone()),
                ..Default::default()
            };
            let created = self
                .docker
                .create_container(Some(options), body)
                .await
                .map_err(|err| match status_of(&err) {
                    Some(404) => ProviderError::InvalidArgument(format!(
                        "service {:?}: image {:?}: {}",
                        service.name,
                        service.image,
                        message_of(&err)
                    )),
                    _ => engine_error("create a service's container", err),
                })?;
            self.docker
                .start_container(&created.id, None::<StartContainerOptions>)
                .await
                .map_err(|err| {
                    ProviderError::InvalidArgument(format!(
                        "service {:?} did not start: {}",
                        service.name,
                        message_of(&err)
                    ))
                })?;
            tracing::debug!(sandbox_id = %spec.sandbox_id, service = %service.name, "service started");
        }
        Ok(())
    }
}

/// The container of one service: on the sandbox's network under its name, with the
/// sandbox's memory limit and no new privileges; its own command and environment.
fn service_body(
    worker_id: &str,
    spec: &SandboxSpec,
    service: &ServiceSpec,
    network: &str,
) -> ContainerCreateBody {
    let mut labels = labels(worker_id, &spec.sandbox_id);
    labels.insert(LABEL_SERVICE.to_owned(), service.name.clone());
    let memory = (spec.memory_mb > 0).then(|| {
        i64::try_from(spec.memory_mb)
            .unwrap_or(i64::MAX / MIB)
            .saturating_mul(MIB)
    });
    ContainerCreateBody {
        image: Some(service.image.clone()),
        cmd: Some(service.command.clone()).filter(|c| !c.is_empty()),
        env: Some(
            service
                .env
                .iter()
                .map(|(key, value)| format!("{key}={value}"))
                .collect(),
        ),
        labels: Some(labels),
        host_config: Some(HostConfig {
            memory,
            memory_swap: memory,
            nano_cpus: (spec.vcpus > 0).then(|| i64::from(spec.vcpus) * 1_000_000_000),
            security_opt: Some(vec!["no-new-privileges".to_owned()]),
            network_mode: Some(network.to_owned()),
            publish_all_ports: Some(false),
            privileged: Some(false),
            init: Some(true),
            ..Default::default()
        }),
        networking_config: Some(NetworkingConfig {
            endpoints_config: Some(HashMap::from([(
                network.to_owned(),
                EndpointSettings {
                    aliases: Some(vec![service.name.clone()]),
                    ..Default::default()
                },
            )])),
        }),
        ..Default::default()
    }
}

/// This worker's service containers: `(sandbox id, container id)`, those of one
/// sandbox when `sandbox_id` is given.
pub async fn list(
    docker: &Docker,
    worker_id: &str,
    sandbox_id: Option<&str>,
) -> Result<Vec<(String, String)>, ProviderError> {
    let mut filters = worker_filter(worker_id);
    let label = filters.entry("label".to_owned()).or_default();
    label.push(LABEL_SERVICE.to_owned());
    if let Some(sandbox_id) = sandbox_id {
        label.push(format!("{LABEL_SANDBOX}={sandbox_id}"));
    }
    let options = ListContainersOptions {
        all: true,
        filters: Some(filters),
        ..Default::default()
    };
    let containers = docker
        .list_containers(Some(options))
        .await
        .map_err(|err| engine_error("list service containers", err))?;
    Ok(containers
        .into_iter()
        .filter_map(|container| {
            let labels = container.labels.as_ref()?;
            // the engine filtered on the labels; check again rather than trust it
            if labels.get(LABEL_WORKER).map(String::as_str) != Some(worker_id)
                || !is_service(labels)
            {
                return None;
            }
            let sandbox = labels.get(LABEL_SANDBOX)?.clone();
            if sandbox_id.is_some_and(|wanted| wanted != sandbox) {
                return None;
            }
            Some((sandbox, container.id?))
        })
        .collect())
}

/// Removes a sandbox's services (all of them, whatever fails: the first error is
/// answered once every one was tried).
pub async fn remove_all(
    docker: &Docker,
    worker_id: &str,
    sandbox_id: &str,
) -> Result<(), ProviderError> {
    let mut first_error = None;
    for (_, container) in list(docker, worker_id, Some(sandbox_id)).await? {
        if let Err(err) = remove(docker, &container).await {
            first_error.get_or_insert(err);
        }
    }
    first_error.map_or(Ok(()), Err)
}

async fn remove(docker: &Docker, container: &str) -> Result<(), ProviderError> {
    let options = RemoveContainerOptions {
        force: true,
        v: true,
        ..Default::default()
    };
    match docker.remove_container(container, Some(options)).await {
        Ok(()) => Ok(()),
        Err(err) if matches!(status_of(&err), Some(404 | 409)) => Ok(()),
        Err(err) => Err(engine_error("remove a service's container", err)),
    }
}

/// Stops a sandbox's services (after the sandbox).
pub async fn stop_all(
    docker: &Docker,
    worker_id: &str,
    sandbox_id: &str,
    grace_secs: i32,
) -> Result<(), ProviderError> {
    for (_, container) in list(docker, worker_id, Some(sandbox_id)).await? {
        let options = StopContainerOptions {
            t: Some(grace_secs),
            ..Default::default()
        };
        match docker.stop_container(&container, Some(options)).await {
            Ok(()) => {}
            Err(err) if matches!(status_of(&err), Some(304 | 404)) => {}
            Err(err) => return Err(engine_error("stop a service's container", err)),
        }
    }
    Ok(())
}

/// Starts a sandbox's services again (before the sandbox).
pub async fn start_all(
    docker: &Docker,
    worker_id: &str,
    sandbox_id: &str,
) -> Result<(), ProviderError> {
    for (_, container) in list(docker, worker_id, Some(sandbox_id)).await? {
        match docker
            .start_container(&container, None::<StartContainerOptions>)
            .await
        {
            Ok(()) => {}
            Err(err) if status_of(&err) == Some(304) => {}
            Err(err) => return Err(engine_error("start a service's container", err)),
        }
    }
    Ok(())
}

/// Removes services whose sandbox has no container (listed in `held`) and no spawn in
/// flight (`spawning`, noted before `held` was listed); answers how many.
pub async fn remove_orphans(
    docker: &Docker,
    worker_id: &str,
    held: &[SandboxInfo],
    spawning: &HashSet<String>,
) -> usize {
    let services = match list(docker, worker_id, None).await {
        Ok(services) => services,
        Err(err) => {
            tracing::warn!(%worker_id, error = %err, "cannot list service containers");
            return 0;
        }
    };
    let sandboxes: HashSet<&str> = held.iter().map(|s| s.sandbox_id.as_str()).collect();
    let mut removed = 0;
    for (sandbox, container) in services {
        if sandboxes.contains(sandbox.as_str()) || spawning.contains(&sandbox) {
            continue;
        }
        match remove(docker, &container).await {
            Ok(()) => {
                removed += 1;
                tracing::info!(sandbox_id = %sandbox, "removed a service whose sandbox is gone");
            }
            Err(err) => {
                tracing::warn!(sandbox_id = %sandbox, error = %err, "cannot remove an orphaned service")
            }
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    #[test]
    fn a_service_joins_the_sandbox_network_under_its_name_and_is_labelled() {
        let spec = SandboxSpec {
            sandbox_id: "sbx-1".into(),
            image: "img".into(),
            vcpus: 1,
            memory_mb: 256,
            env: BTreeMap::new(),
            metadata: BTreeMap::new(),
            internet: true,
            services: Vec::new(),
        };
        let service = ServiceSpec {
            name: "web".into(),
            image: "busybox".into(),
            env: BTreeMap::from([("A".into(), "b".into())]),
            command: vec!["httpd".into(), "-f".into()],
            ports: vec![8080],
        };
        let body = service_body("w1", &spec, &service, "berth-sbx-1");
        let labels = body.labels.unwrap();
        assert_eq!(labels[LABEL_SERVICE], "web");
        assert_eq!(labels[LABEL_SANDBOX], "sbx-1");
        assert!(is_service(&labels));
        let endpoints = body.networking_config.unwrap().endpoints_config.unwrap();
        assert_eq!(
            endpoints["berth-sbx-1"].aliases.as_deref(),
            Some(&["web".to_owned()][..])
        );
        let host = body.host_config.unwrap();
        assert_eq!(host.network_mode.as_deref(), Some("berth-sbx-1"));
        assert_eq!(host.memory, Some(256 * MIB));
        assert_eq!(host.nano_cpus, Some(1_000_000_000));
        assert_eq!(body.cmd.unwrap(), ["httpd", "-f"]);
        assert_eq!(body.env.unwrap(), ["A=b"]);
        assert_eq!(container_name("sbx-1", "web"), "berth-sbx-1-svc-web");
    }
}
