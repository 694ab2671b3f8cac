//! Building a template's image ahead of its first create (`berth templates prebuild`):
//! the build runs on every worker a create of the team could land on (ready, fresh,
//! in the team's pools, offering the provider), all at once, and each worker's
//! progress comes back as it happens. A build already there answers `reused` at once.

use futures::Stream;
use serde::Serialize;
use tokio::sync::mpsc;
use tracing::Instrument;

use super::constraints;
use super::{SandboxError, Sandboxes, grace_ms};
use crate::clock::now_ms;
use crate::fleet::ProviderStatus;
use crate::fleet::labels::labels_from_json;
use crate::workers::model::ImageBuild;

/// How long one worker's build may take, as in a create.
const BUILD_CALL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(31 * 60);

/// One worker's progress (a line of the prebuild's NDJSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct PrebuildEvent {
    pub worker_id: String,
    /// `building`, then `built`, `reused` or `failed`.
    #[schema(example = "built")]
    pub status: String,
    /// The built image's tag (`berth/built:<hash>`), once known.
    #[serde(skip_serializing_if = "String::is_empty")]
    #[schema(required = false)]
    pub image: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(required = false)]
    pub build_ms: Option<u64>,
    #[serde(skip_serializing_if = "String::is_empty")]
    #[schema(required = false)]
    pub error: String,
}

impl Sandboxes {
    /// Builds `build` on every worker of `team` that offers `provider` (empty: any),
    /// or on those of `only` among them (ids); the events of each as they come.
    pub async fn prebuild(
        &self,
        team: &str,
        provider: &str,
        build: ImageBuild,
        only: &[String],
    ) -> Result<impl Stream<Item = PrebuildEvent> + Send + use<>, SandboxError> {
        let settings = self.settings_of_team(team).await?;
        let fresh_since = now_ms() - grace_ms(&self.settings);
        let rows = self.store.schedulable_workers(fresh_since, 0, 0).await?;
        let mut targets = Vec::new();
        for row in rows {
            let labels = labels_from_json(&row.labels);
            if !constraints::eligible(&settings.pools, &[], &row.pool, &labels) {
                continue;
            }
            if !only.is_empty() && !only.contains(&row.id) {
                continue;
            }
            let providers: Vec<ProviderStatus> =
                serde_json::from_str(&row.providers).unwrap_or_default();
            if providers
                .iter()
                .any(|p| p.healthy && (provider.is_empty() || p.name == provider))
            {
                targets.push((row.id, row.advertise_addr));
            }
        }
        if targets.is_empty() {
            return Err(SandboxError::NoCapacity(if only.is_empty() {
                format!(
                    "no ready worker of team {team:?} offers {}",
                    if provider.is_empty() {
                        "a provider".to_owned()
                    } else {
                        format!("provider {provider:?}")
                    }
                )
            } else {
                format!(
                    "none of the workers {} is ready, in team {team:?}'s pools and offers the provider",
                    only.join(", ")
                )
            }));
        }
        let (events, received) = mpsc::channel(targets.len() * 2);
        for (worker_id, address) in targets {
            let (sandboxes, build, events) = (self.clone(), build.clone(), events.clone());
            // a build runs to its end even when the caller stops reading
            self.tasks.spawn(
                async move {
                    let event = |status: &str| PrebuildEvent {
                        worker_id: worker_id.clone(),
                        status: status.to_owned(),
                        image: String::new(),
                        build_ms: None,
                        error: String::new(),
                    };
                    let _ = events.send(event("building")).await;
                    let built = match sandboxes.workers.client(&worker_id, &address) {
                        Ok(client) => client.build_image(build, BUILD_CALL_TIMEOUT).await,
                        Err(err) => Err(err),
                    };
                    let done = match built {
                        Ok(built) => PrebuildEvent {
                            image: built.image,
                            build_ms: Some(built.build_ms),
                            ..event(if built.built { "built" } else { "reused" })
                        },
                        Err(err) => PrebuildEvent {
                            error: err.to_string(),
                            ..event("failed")
                        },
                    };
                    let _ = events.send(done).await;
                }
                .in_current_span(),
            );
        }
        Ok(futures::stream::unfold(
            received,
            |mut received| async move { received.recv().await.map(|event| (event, received)) },
        ))
    }
}
