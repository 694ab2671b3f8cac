//! Port connections into containers: the worker dials the container's address on the
//! sandbox's own network, from the host, like any process on the host may reach a
//! bridge network's containers. No port is published on the host, so nothing but the
//! worker (and whoever it hands the stream to, after the control plane's checks)
//! reaches it. The host firewall (`firewall`) only refuses connections a sandbox
//! starts towards the host; replies to the worker's own connections pass.
//!
//! The worker must run on the host (or in the host's network namespace): from inside
//! a container of its own it would first have to join each sandbox's network.

use std::net::{IpAddr, SocketAddr};

use bollard::models::ContainerInspectResponse;
use tokio::net::TcpStream;

use super::inventory;
use crate::provider::port::{CONNECT_TIMEOUT, PortConnection};
use crate::provider::{ProviderError, SandboxState};

/// A TCP connection to `port` of the sandbox's container.
pub async fn connect(
    container: &ContainerInspectResponse,
    sandbox_id: &str,
    port: u16,
) -> Result<PortConnection, ProviderError> {
    let closed = |reason: String| ProviderError::PortClosed {
        sandbox_id: sandbox_id.to_owned(),
        port,
        reason,
    };
    let state = inventory::info_of(sandbox_id, container).state;
    if state != SandboxState::Running {
        return Err(closed(format!(
            "the sandbox's container is {}",
            state.as_str()
        )));
    }
    let address = address_of(container).ok_or_else(|| {
        closed("the sandbox's container has no network address (docker.network: none)".into())
    })?;
    let target = SocketAddr::new(address, port);
    let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(target))
        .await
        .map_err(|_| {
            closed(format!(
                "{target} did not answer within {CONNECT_TIMEOUT:?}"
            ))
        })?
        .map_err(|err| closed(format!("{target}: {err}")))?;
    // interactive traffic (terminals, WebSocket frames) must not wait for Nagle
    let _ = stream.set_nodelay(true);
    Ok(Box::new(stream))
}

/// The container's first address on a network (a sandbox has one network).
fn address_of(container: &ContainerInspectResponse) -> Option<IpAddr> {
    let networks = container.network_settings.as_ref()?.networks.as_ref()?;
    let mut names: Vec<&String> = networks.keys().collect();
    names.sort();
    names.into_iter().find_map(|name| {
        networks[name]
            .ip_address
            .as_deref()
            .filter(|ip| !ip.is_empty())
            .and_then(|ip| ip.parse().ok())
    })
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use bollard::models::{EndpointSettings, NetworkSettings};

    use super::*;

    fn container_on(networks: &[(&str, &str)]) -> ContainerInspectResponse {
        let networks: HashMap<String, EndpointSettings> = networks
            .iter()
            .map(|(name, ip)| {
                let endpoint = EndpointSettings {
                    ip_address: Some((*ip).to_owned()),
                    ..Default::default()
                };
                ((*name).to_owned(), endpoint)
            })
            .collect();
        ContainerInspectResponse {
            network_settings: Some(NetworkSettings {
                networks: Some(networks),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn the_address_is_the_containers_on_its_network() {
        let container = container_on(&[("berth-sbx-1", "10.200.0.2")]);
        assert_eq!(address_of(&container), Some("10.200.0.2".parse().unwrap()));
        // `none` mode: an endpoint without an address
        assert_eq!(address_of(&container_on(&[("none", "")])), None);
        assert_eq!(address_of(&ContainerInspectResponse::default()), None);
    }
}
