//! Creating a sandbox, phase by phase: `scheduled` (quota, placement and lease),
//! `building image` (a template's packages and `on_create`, built on the worker or
//! found built), `starting services`, `creating` (the spawn), `on_start`, `ready`.
//! Each phase is recorded as it begins and ends (see `phases.rs`); a phase that fails
//! leaves the sandbox in `error` with the reason, and what the worker made is dropped.
//!
//! No lock is held across a worker call, and the work runs in a task of its own, so a
//! caller that goes away mid-create (an HTTP client disconnecting drops the handler)
//! does not leave a sandbox half made: placed and holding a slot but never marked
//! running.

use std::time::Duration;

use tokio::sync::oneshot;
use tracing::Instrument;

use super::calls::note_worker;
use super::lifecycle::{finish_detached, new_sandbox_id};
use super::phases::{self, PhaseLog};
use super::{CreateSandbox, SandboxError, SandboxView, Sandboxes};
use crate::clock::{now_ms, now_secs};
use crate::store::{CreatedPlacement, NewSandbox, SandboxRow, SandboxState, StoreError};
use crate::teams::Access;
use crate::workers::Route;
use crate::workers::model::SpawnSpec;

/// How long the control plane waits for a worker's image build: the worker's own
/// bound (30 minutes) and a margin.
const BUILD_CALL_TIMEOUT: Duration = Duration::from_secs(31 * 60);

/// A sandbox with a worker and a lease, not spawned yet.
struct Placed {
    request: CreateSandbox,
    sandbox: NewSandbox,
    provider: String,
    placed: CreatedPlacement,
    phases: PhaseLog,
}

impl Sandboxes {
    /// Creates a sandbox and answers once it is running (or has failed).
    pub async fn create(&self, request: CreateSandbox) -> Result<SandboxView, SandboxError> {
        let sandboxes = self.clone();
        finish_detached(
            self.tasks.spawn(
                async move {
                    let placed = sandboxes.place_new(request).await?;
                    sandboxes.launch(placed).await
                }
                .in_current_span(),
            ),
        )
        .await
    }

    /// Creates a sandbox and answers as soon as it is placed (state `creating`, phase
    /// `scheduled`); the rest goes on in the background, followed through the
    /// sandbox's phases and its event stream. A refusal (quota, no capacity, a bad
    /// request) is still the answer.
    pub async fn create_in_background(
        &self,
        request: CreateSandbox,
    ) -> Result<SandboxView, SandboxError> {
        let (placed_tx, placed_rx) = oneshot::channel();
        let sandboxes = self.clone();
        self.tasks.spawn(
            async move {
                let placed = match sandboxes.place_new(request).await {
                    Ok(placed) => placed,
                    Err(err) => {
                        let _ = placed_tx.send(Err(err));
                        return;
                    }
                };
                let view = sandboxes.view(placed.row(SandboxState::Creating, String::new()));
                let _ = placed_tx.send(Ok(view));
                // a failure is in the sandbox's state, error and phases (and logged)
                let _ = sandboxes.launch(placed).await;
            }
            .in_current_span(),
        );
        placed_rx.await.unwrap_or_else(|_| {
            Err(SandboxError::Unavailable(
                "the control plane could not finish the call".into(),
            ))
        })
    }

    /// The `scheduled` phase: the team's TTL and pools, a worker, a lease.
    async fn place_new(&self, request: CreateSandbox) -> Result<Placed, SandboxError> {
        let asked_at = now_ms();
        let team = self.settings_of_team(&request.team).await?;
        Self::check_ttl(&request.team, &team.quota, request.ttl)?;
        // the team's pools bound where it may go, whatever the request asked
        let request = CreateSandbox {
            pools: team.pools,
            ..request
        };
        let candidates = self.candidates(&request).await?;
        let provider = candidates[0].1.clone();
        let id = new_sandbox_id();
        let now = now_secs();
        let ttl = i64::try_from(request.ttl.as_secs()).unwrap_or(i64::MAX);
        let sandbox = NewSandbox {
            id: id.clone(),
            provider: provider.clone(),
            image: request.image.clone(),
            // what it holds on its worker and counts in its team's quota: its own
            // container and each companion service's
            memory_mb: request.footprint().0,
            vcpus: request.footprint().1,
            owner_id: request.owner_id.clone(),
            template: request.template.clone(),
            metadata: serde_json::to_string(&request.metadata).unwrap_or_default(),
            created_at: now,
            expires_at: now.saturating_add(ttl),
            internet: request.internet,
            team_id: request.team.clone(),
            workdir: request.launch.workdir.clone(),
            shell: request.launch.shell.clone(),
            ports: serde_json::to_string(&request.launch.ports).unwrap_or_else(|_| "[]".into()),
            auto_stop_secs: i64::try_from(request.auto_stop.as_secs()).unwrap_or(i64::MAX),
        };
        let placed = match self.place(&sandbox, &candidates).await {
            Err(SandboxError::Store(StoreError::OverQuota(team))) => {
                return Err(self
                    .over_quota(&team, sandbox.memory_mb, sandbox.vcpus)
                    .await?);
            }
            Err(SandboxError::Store(StoreError::UnknownTeam(team))) => {
                return Err(SandboxError::UnknownTeam(team));
            }
            placed => placed?,
        };
        Ok(Placed {
            phases: PhaseLog::scheduled(self.store.clone(), &id, asked_at),
            request,
            sandbox,
            provider,
            placed,
        })
    }

    /// Every phase after `scheduled`, to `ready` or to the one that fails.
    async fn launch(&self, mut placed: Placed) -> Result<SandboxView, SandboxError> {
        let id = placed.sandbox.id.clone();
        let placement = placed.placed.placement.clone();
        let worker_id = placement.worker_id.clone();
        tracing::Span::current().record("sandbox_id", &id);
        note_worker(&worker_id);
        let generation = u64::try_from(placement.generation).unwrap_or(0);
        let spawned = async {
            let client = self.workers.client(&worker_id, &placement.advertise_addr)?;
            let request = &placed.request;
            let mut image = request.image.clone();
            if let Some(build) = &request.launch.build {
                placed.phases.begin(phases::BUILDING_IMAGE).await;
                let built = client
                    .build_image(build.clone(), BUILD_CALL_TIMEOUT)
                    .await?;
                placed.phases.detail(if built.built {
                    format!(
                        "built {} in {:.1}s",
                        built.image,
                        built.build_ms as f64 / 1e3
                    )
                } else {
                    format!("reused {}", built.image)
                });
                image = built.image;
            }
            let with_services = !request.launch.services.is_empty();
            placed
                .phases
                .begin(if with_services {
                    phases::STARTING_SERVICES
                } else {
                    phases::CREATING
                })
                .await;
            let spawn_began = now_ms();
            let spec = SpawnSpec {
                sandbox_id: id.clone(),
                image,
                provider: placed.provider.clone(),
                vcpus: request.vcpus,
                memory_mb: request.memory_mb,
                metadata: request.metadata.clone(),
                env: request.launch.env.clone(),
                secrets: request.launch.secrets.clone(),
                services: request.launch.services.clone(),
                internet: request.internet,
            };
            let spawned = client
                .spawn(spec, generation, self.settings.limits.spawn_timeout)
                .await?;
            if with_services {
                // the worker says where in its spawn the services were up
                let services_ms = i64::try_from(spawned.services_ms).unwrap_or(0);
                placed
                    .phases
                    .begin_at(phases::CREATING, spawn_began.saturating_add(services_ms));
            }
            if !request.launch.workdir.is_empty() {
                // part of making it: the directory its commands start in
                self.make_workdir(&client, &id, generation, &request.launch.workdir)
                    .await?;
            }
            if !request.launch.on_start.is_empty() {
                placed.phases.begin(phases::ON_START).await;
                self.run_on_start(
                    &client,
                    &id,
                    generation,
                    &request.launch.on_start,
                    &request.launch.workdir,
                )
                .await?;
            }
            Ok::<_, SandboxError>(spawned)
        }
        .await;
        let answer = match spawned {
            Ok(answer) => answer,
            Err(err) => {
                tracing::warn!(sandbox_id = %id, %worker_id, error = %err, "spawn failed");
                placed.phases.fail(&err.to_string()).await;
                self.store
                    .finish_sandbox(&id, SandboxState::Error, &err.to_string(), now_secs())
                    .await?;
                // a spawn that timed out may still have created the sandbox: ask the
                // worker to drop it (idempotent) so nothing runs without a lease
                self.abandon_on_worker(
                    &id,
                    &worker_id,
                    &placement.advertise_addr,
                    placement.generation,
                );
                return Err(SandboxError::CreateFailed {
                    sandbox_id: id,
                    cause: Box::new(err),
                });
            }
        };
        // recorded before the state moves, so whoever sees `running` sees `ready`
        placed.phases.ready().await;
        let running = self
            .store
            .mark_sandbox_running(&id, &answer.vm_id, now_ms())
            .await?;
        tracing::info!(sandbox_id = %id, %worker_id, generation = placement.generation, "sandbox created");
        if !running {
            // something else (a destroy, a lost worker, reconciliation) moved it on
            // meanwhile; unless that adopted it, the worker must not keep it
            let row = self.store.get_sandbox(&id).await?;
            if row.is_none_or(|row| row.state != SandboxState::Running) {
                self.abandon_on_worker(
                    &id,
                    &worker_id,
                    &placement.advertise_addr,
                    placement.generation,
                );
            }
            return self.get(&Access::everything(), &id).await;
        }
        self.routes().remember(
            &id,
            Route {
                worker_id,
                address: placement.advertise_addr.clone(),
                generation,
                last_heartbeat_ms: placed.placed.last_heartbeat_ms,
                team_id: placed.sandbox.team_id.clone(),
                workdir: placed.sandbox.workdir.clone(),
            },
        );
        // what the store now holds, without reading it back
        Ok(self.view(placed.row(SandboxState::Running, answer.vm_id)))
    }
}

impl Placed {
    /// The sandbox's row as the store holds it now.
    fn row(&self, state: SandboxState, vm_id: String) -> SandboxRow {
        let sandbox = &self.sandbox;
        let placement = &self.placed.placement;
        SandboxRow {
            id: sandbox.id.clone(),
            state,
            provider: self.provider.clone(),
            image: sandbox.image.clone(),
            memory_mb: sandbox.memory_mb,
            vcpus: sandbox.vcpus,
            owner_id: sandbox.owner_id.clone(),
            template: sandbox.template.clone(),
            metadata: sandbox.metadata.clone(),
            worker_id: Some(placement.worker_id.clone()),
            vm_id,
            created_at: sandbox.created_at,
            expires_at: sandbox.expires_at,
            destroyed_at: None,
            error: String::new(),
            internet: sandbox.internet,
            team_id: sandbox.team_id.clone(),
            generation: Some(placement.generation),
            advertise_addr: Some(placement.advertise_addr.clone()),
            last_heartbeat_ms: Some(self.placed.last_heartbeat_ms),
            phases: self.phases.json(),
            workdir: sandbox.workdir.clone(),
            shell: sandbox.shell.clone(),
            ports: sandbox.ports.clone(),
            auto_stop_secs: sandbox.auto_stop_secs,
            // it started running just now, or has not
            active_at: match state {
                SandboxState::Running => now_secs(),
                _ => 0,
            },
        }
    }
}
