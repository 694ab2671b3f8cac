//! Providers across the fleet: what the online workers' last heartbeats say of each
//! (`GET /api/v1/providers`), and a live test that asks every online worker now
//! (`POST /api/v1/providers/test`).

use std::collections::BTreeMap;
use std::time::Duration;

use super::{Fleet, FleetError, WorkerStatus, WorkerView};

/// How long a live test waits for one worker; the workers are asked in parallel.
pub const PROVIDER_TEST_TIMEOUT: Duration = Duration::from_secs(5);

/// One provider across the online workers, as their heartbeats report it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct ProviderSummary {
    pub name: String,
    /// Whether at least one online worker offers it healthily.
    pub healthy: bool,
    /// Online workers offering it.
    pub workers: usize,
    /// Online workers offering it healthily.
    pub healthy_workers: usize,
}

/// Each provider the online workers offer, by name.
pub fn summarize(workers: &[WorkerView]) -> Vec<ProviderSummary> {
    let mut providers: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
    for worker in workers.iter().filter(|w| w.status == WorkerStatus::Online) {
        for provider in &worker.capabilities {
            let entry = providers.entry(provider.name.as_str()).or_default();
            entry.0 += 1;
            if provider.healthy {
                entry.1 += 1;
            }
        }
    }
    providers
        .into_iter()
        .map(|(name, (workers, healthy))| ProviderSummary {
            name: name.to_owned(),
            healthy: healthy > 0,
            workers,
            healthy_workers: healthy,
        })
        .collect()
}

impl Fleet {
    pub async fn providers(&self) -> Result<Vec<ProviderSummary>, FleetError> {
        Ok(summarize(&self.list_workers().await?))
    }

    /// One provider, or `None` when no online worker offers it.
    pub async fn provider(&self, name: &str) -> Result<Option<ProviderSummary>, FleetError> {
        let providers = self.providers().await?;
        Ok(providers.into_iter().find(|p| p.name == name))
    }

    /// Asks every online worker now how its providers are, in parallel, each within
    /// [`PROVIDER_TEST_TIMEOUT`]. A provider is healthy when at least one worker's
    /// answers healthy; one offered (by heartbeat) only by workers that did not
    /// answer is unhealthy.
    pub async fn test_providers(&self) -> Result<BTreeMap<String, bool>, FleetError> {
        let workers = self.list_workers().await?;
        let online: Vec<&WorkerView> = workers
            .iter()
            .filter(|w| w.status == WorkerStatus::Online)
            .collect();
        let mut health: BTreeMap<String, bool> = BTreeMap::new();
        for worker in &online {
            for provider in &worker.providers {
                health.entry(provider.clone()).or_insert(false);
            }
        }
        let asked = online.iter().map(|worker| async move {
            let client = self.workers.client(&worker.id, &worker.advertise_addr)?;
            client.provider_health(PROVIDER_TEST_TIMEOUT).await
        });
        let answers = futures::future::join_all(asked).await;
        for (worker, answer) in online.iter().zip(answers) {
            match answer {
                Ok(providers) => {
                    for provider in providers {
                        if !provider.healthy {
                            tracing::info!(worker_id = %worker.id, provider = %provider.name, message = %provider.message, "provider unhealthy");
                        }
                        *health.entry(provider.name).or_insert(false) |= provider.healthy;
                    }
                }
                Err(err) => {
                    tracing::warn!(worker_id = %worker.id, error = %err, "provider test: the worker did not answer");
                }
            }
        }
        Ok(health)
    }
}
