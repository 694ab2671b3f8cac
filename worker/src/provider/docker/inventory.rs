//! Which containers and networks are this worker's: names, the labels that tie each
//! one to its sandbox and worker, finding a sandbox's container (never one of another
//! worker), listing them all, mapping engine states to sandbox states, and sweeping
//! networks a crashed spawn left behind.

use std::collections::{HashMap, HashSet};

use bollard::Docker;
use bollard::models::{
    ContainerInspectResponse, ContainerStateStatusEnum, ContainerSummaryStateEnum,
};
use bollard::query_parameters::{ListContainersOptions, ListNetworksOptions};

use super::engine::{engine_error, status_of};
use crate::provider::{ProviderError, SandboxInfo, SandboxState};

pub const LABEL_MANAGED: &str = "berth.managed";
pub const LABEL_SANDBOX: &str = "berth.sandbox";
pub const LABEL_WORKER: &str = "berth.worker";

/// The container (and per-sandbox network) of a sandbox.
pub fn resource_name(sandbox_id: &str) -> String {
    format!("berth-{sandbox_id}")
}

/// Sandbox ids become container and network names: keep to what the engine takes.
pub fn check_sandbox_id(sandbox_id: &str) -> Result<(), ProviderError> {
    let valid = !sandbox_id.is_empty()
        && sandbox_id.len() <= 128
        && sandbox_id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if valid {
        Ok(())
    } else {
        Err(ProviderError::InvalidArgument(format!(
            "sandbox id {sandbox_id:?} must be 1-128 letters, digits, '-', '_' or '.'"
        )))
    }
}

pub fn labels(worker_id: &str, sandbox_id: &str) -> HashMap<String, String> {
    HashMap::from([
        (LABEL_MANAGED.to_owned(), "true".to_owned()),
        (LABEL_SANDBOX.to_owned(), sandbox_id.to_owned()),
        (LABEL_WORKER.to_owned(), worker_id.to_owned()),
    ])
}

/// The engine's label filter for everything of `worker_id`.
pub fn worker_filter(worker_id: &str) -> HashMap<String, Vec<String>> {
    HashMap::from([(
        "label".to_owned(),
        vec![
            format!("{LABEL_MANAGED}=true"),
            format!("{LABEL_WORKER}={worker_id}"),
        ],
    )])
}

/// Whether labels say the resource is `sandbox_id` of `worker_id`.
pub fn owned_by(
    labels: Option<&HashMap<String, String>>,
    worker_id: &str,
    sandbox_id: &str,
) -> bool {
    labels.is_some_and(|labels| {
        labels.get(LABEL_MANAGED).map(String::as_str) == Some("true")
            && labels.get(LABEL_WORKER).map(String::as_str) == Some(worker_id)
            && labels.get(LABEL_SANDBOX).map(String::as_str) == Some(sandbox_id)
    })
}

/// The sandbox's container, if it exists and is this worker's.
pub async fn find(
    docker: &Docker,
    worker_id: &str,
    sandbox_id: &str,
) -> Result<Option<ContainerInspectResponse>, ProviderError> {
    if check_sandbox_id(sandbox_id).is_err() {
        return Ok(None);
    }
    match docker
        .inspect_container(&resource_name(sandbox_id), None)
        .await
    {
        Ok(container) => {
            let labels = container.config.as_ref().and_then(|c| c.labels.as_ref());
            Ok(owned_by(labels, worker_id, sandbox_id).then_some(container))
        }
        Err(err) if status_of(&err) == Some(404) => Ok(None),
        Err(err) => Err(engine_error("inspect the sandbox's container", err)),
    }
}

/// Like [`find`], with a missing sandbox as `SandboxNotFound`.
pub async fn resolve(
    docker: &Docker,
    worker_id: &str,
    sandbox_id: &str,
) -> Result<ContainerInspectResponse, ProviderError> {
    find(docker, worker_id, sandbox_id)
        .await?
        .ok_or_else(|| ProviderError::SandboxNotFound(sandbox_id.to_owned()))
}

/// A resolved container as the provider reports it.
pub fn info_of(sandbox_id: &str, container: &ContainerInspectResponse) -> SandboxInfo {
    let status = container.state.as_ref().and_then(|state| state.status);
    SandboxInfo {
        sandbox_id: sandbox_id.to_owned(),
        vm_id: container.id.clone().unwrap_or_default(),
        state: state_of(status),
        services_ms: 0,
    }
}

/// Running (or about to run again) is running; created, paused, exited or being
/// removed is stopped; dead is an error.
pub fn state_of(status: Option<ContainerStateStatusEnum>) -> SandboxState {
    match status {
        Some(ContainerStateStatusEnum::RUNNING | ContainerStateStatusEnum::RESTARTING) => {
            SandboxState::Running
        }
        Some(ContainerStateStatusEnum::DEAD) | None | Some(ContainerStateStatusEnum::EMPTY) => {
            SandboxState::Error
        }
        Some(_) => SandboxState::Stopped,
    }
}

fn summary_state(status: Option<ContainerSummaryStateEnum>) -> SandboxState {
    match status {
        Some(ContainerSummaryStateEnum::RUNNING | ContainerSummaryStateEnum::RESTARTING) => {
            SandboxState::Running
        }
        Some(ContainerSummaryStateEnum::DEAD) | None | Some(ContainerSummaryStateEnum::EMPTY) => {
            SandboxState::Error
        }
        Some(_) => SandboxState::Stopped,
    }
}

/// Every container labelled as this worker's, running or not, sorted by sandbox id.
pub async fn list(docker: &Docker, worker_id: &str) -> Result<Vec<SandboxInfo>, ProviderError> {
    let options = ListContainersOptions {
        all: true,
        filters: Some(worker_filter(worker_id)),
        ..Default::default()
    };
    let containers = docker
        .list_containers(Some(options))
        .await
        .map_err(|err| engine_error("list containers", err))?;
    let mut infos: Vec<SandboxInfo> = containers
        .into_iter()
        .filter_map(|container| {
            let labels = container.labels.as_ref()?;
            // the engine filtered on the labels; check again rather than trust it
            if labels.get(LABEL_WORKER).map(String::as_str) != Some(worker_id) {
                return None;
            }
            // a sandbox's companion service is not a sandbox
            if super::services::is_service(labels) {
                return None;
            }
            Some(SandboxInfo {
                sandbox_id: labels.get(LABEL_SANDBOX)?.clone(),
                vm_id: container.id.clone().unwrap_or_default(),
                state: summary_state(container.state),
                services_ms: 0,
            })
        })
        .collect();
    infos.sort_by(|a, b| a.sandbox_id.cmp(&b.sandbox_id));
    Ok(infos)
}

/// Removes this worker's sandbox networks that no container of it uses any more (a
/// spawn that died between creating the network and the container, a container
/// removed from outside). Returns how many. For start-up, when no spawn is in flight;
/// the inventory pass uses [`SandboxNetworks`] instead.
pub async fn sweep_networks(docker: &Docker, worker_id: &str) -> Result<usize, ProviderError> {
    let networks = SandboxNetworks::list(docker, worker_id).await?;
    let held = list(docker, worker_id).await?;
    Ok(networks.remove_strays(docker, &held, &HashSet::new()).await)
}

/// This worker's per-sandbox networks as the engine listed them, by sandbox id.
///
/// Sweeping them beside spawns that run concurrently takes an order: list the
/// networks, then note the spawns in flight, then list the containers. A network in
/// the first list whose sandbox has no container in the last and no spawn in flight
/// in between belongs to a spawn that died or a container that is gone: a spawn that
/// made it after the networks were listed is in flight when noted or has its container
/// in the last list.
pub struct SandboxNetworks {
    worker_id: String,
    /// `(sandbox id, network name)`.
    networks: Vec<(String, String)>,
}

impl SandboxNetworks {
    pub async fn list(docker: &Docker, worker_id: &str) -> Result<Self, ProviderError> {
        let options = ListNetworksOptions {
            filters: Some(worker_filter(worker_id)),
        };
        let listed = docker
            .list_networks(Some(options))
            .await
            .map_err(|err| engine_error("list networks", err))?;
        let networks = listed
            .into_iter()
            .filter_map(|network| {
                let labels = network.labels.as_ref()?;
                // the engine filtered on the labels; check again rather than trust it
                if labels.get(LABEL_WORKER).map(String::as_str) != Some(worker_id) {
                    return None;
                }
                Some((labels.get(LABEL_SANDBOX)?.clone(), network.name?))
            })
            .collect();
        Ok(Self {
            worker_id: worker_id.to_owned(),
            networks,
        })
    }

    /// Removes the networks of sandboxes that neither have a container in `held` nor
    /// a spawn in `spawning`; returns how many went. Failures are logged: the next
    /// pass tries again.
    pub async fn remove_strays(
        &self,
        docker: &Docker,
        held: &[SandboxInfo],
        spawning: &HashSet<String>,
    ) -> usize {
        let mut removed = 0;
        for (sandbox_id, name) in &self.networks {
            if spawning.contains(sandbox_id)
                || held.iter().any(|info| &info.sandbox_id == sandbox_id)
            {
                continue;
            }
            match docker.remove_network(name).await {
                Ok(()) => {
                    tracing::info!(worker_id = %self.worker_id, %sandbox_id, network = %name, "removed a sandbox network no container uses");
                    removed += 1;
                }
                Err(err) if status_of(&err) == Some(404) => {}
                Err(err) => {
                    tracing::warn!(worker_id = %self.worker_id, network = %name, error = %err, "cannot remove a stray sandbox network")
                }
            }
        }
        removed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ownership_needs_every_label() {
        let mine = labels("w1", "sb1");
        assert!(owned_by(Some(&mine), "w1", "sb1"));
        assert!(!owned_by(Some(&mine), "w2", "sb1"), "another worker's");
        assert!(!owned_by(Some(&mine), "w1", "sb2"));
        let mut unmanaged = mine.clone();
        unmanaged.remove(LABEL_MANAGED);
        assert!(!owned_by(Some(&unmanaged), "w1", "sb1"));
        assert!(!owned_by(None, "w1", "sb1"));
    }

    #[test]
    fn engine_states_map_to_sandbox_states() {
        use ContainerStateStatusEnum as S;
        assert_eq!(state_of(Some(S::RUNNING)), SandboxState::Running);
        assert_eq!(state_of(Some(S::EXITED)), SandboxState::Stopped);
        assert_eq!(state_of(Some(S::CREATED)), SandboxState::Stopped);
        assert_eq!(state_of(Some(S::PAUSED)), SandboxState::Stopped);
        assert_eq!(state_of(Some(S::DEAD)), SandboxState::Error);
    }

    #[test]
    fn sandbox_ids_are_checked_before_they_name_anything() {
        check_sandbox_id("sbx-0a1b_c.d").unwrap();
        for bad in ["", "a/b", "a b", "../x", &"x".repeat(129)] {
            assert!(check_sandbox_id(bad).is_err(), "{bad:?}");
        }
    }
}
