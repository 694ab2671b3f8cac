//! `berth.v1.Admin`: workers, join tokens and API keys for generated clients.

use berth_proto::v1 as pb;
use berth_proto::v1::admin_server::Admin;
use tonic::{Request, Response, Status};

use super::caller;
use crate::api::http::parse_optional_duration;
use crate::api::{ApiState, AuditSlot};
use crate::api_keys::{KeyView, NewKey, Scope, manage};
use crate::error::ApiError;
use crate::fleet::{JoinTokenRequest, WorkerView};

#[derive(Debug, Clone)]
pub struct AdminService {
    state: ApiState,
}

impl AdminService {
    pub fn new(state: ApiState) -> Self {
        Self { state }
    }
}

fn worker_message(view: WorkerView) -> pb::Worker {
    pb::Worker {
        status: view.status.as_str().to_owned(),
        providers: view
            .capabilities
            .into_iter()
            .map(|p| pb::ProviderHealth {
                name: p.name,
                healthy: p.healthy,
                message: p.message,
            })
            .collect(),
        capacity: Some(pb::Capacity {
            max_sandboxes: u32::try_from(view.capacity.max_sandboxes).unwrap_or(0),
            vcpus: u32::try_from(view.capacity.vcpus).unwrap_or(0),
            memory_mb: u64::try_from(view.capacity.memory_mb).unwrap_or(0),
        }),
        last_heartbeat_ms: view.last_heartbeat_ms.unwrap_or(0),
        certificate_serial: view.certificate.serial,
        certificate_expires_at: view.certificate.expires_at_unix,
        id: view.id,
        spiffe_id: view.spiffe_id,
        hostname: view.hostname,
        mode: view.mode.to_owned(),
        advertise_addr: view.advertise_addr,
        version: view.version,
        enrolled_at: view.enrolled_at_unix,
        pool: view.pool,
        labels: view.labels.into_iter().collect(),
    }
}

fn key_message(view: KeyView) -> pb::ApiKey {
    pb::ApiKey {
        scopes: view.scopes.iter().map(|s| s.as_str().to_owned()).collect(),
        id: view.id,
        name: view.name,
        created_at: view.created_at,
        expires_at: view.expires_at.unwrap_or(0),
        last_used_at: view.last_used_at.unwrap_or(0),
        revoked_at: view.revoked_at.unwrap_or(0),
        team: view.team.unwrap_or_default(),
        user: view.user.unwrap_or_default(),
        role: view.role.as_str().to_owned(),
    }
}

#[tonic::async_trait]
impl Admin for AdminService {
    async fn create_api_key(
        &self,
        request: Request<pb::CreateApiKeyRequest>,
    ) -> Result<Response<pb::CreatedApiKey>, Status> {
        let granted = caller(&self.state, &request, Scope::Admin).await?;
        let audit = request.extensions().get::<AuditSlot>().cloned();
        let body = request.into_inner();
        let new_key = NewKey::parse(Some(&body.name), &body.scopes, Some(&body.expires))
            .map_err(ApiError::from)?
            .for_owner(Some(&body.team), Some(&body.user));
        let created = manage::create(&self.state.store, &granted.caller, new_key)
            .await
            .map_err(ApiError::from)?;
        if let Some(audit) = audit {
            // the key is a secret: the record names its id
            audit.detail(format!("key={}", created.view.id));
        }
        Ok(Response::new(pb::CreatedApiKey {
            api_key: Some(key_message(created.view)),
            key: created.key,
        }))
    }

    async fn list_api_keys(
        &self,
        request: Request<pb::ListApiKeysRequest>,
    ) -> Result<Response<pb::ListApiKeysResponse>, Status> {
        let granted = caller(&self.state, &request, Scope::Admin).await?;
        let keys = manage::list(&self.state.store, &granted.caller)
            .await
            .map_err(ApiError::from)?;
        Ok(Response::new(pb::ListApiKeysResponse {
            keys: keys.into_iter().map(key_message).collect(),
        }))
    }

    async fn revoke_api_key(
        &self,
        request: Request<pb::RevokeApiKeyRequest>,
    ) -> Result<Response<pb::ApiKey>, Status> {
        let granted = caller(&self.state, &request, Scope::Admin).await?;
        let id = &request.get_ref().id;
        if let Some(audit) = request.extensions().get::<AuditSlot>() {
            audit.detail(format!("key={id}"));
        }
        let view = manage::revoke(&self.state.store, &self.state.api_keys, &granted.caller, id)
            .await
            .map_err(ApiError::from)?;
        Ok(Response::new(key_message(view)))
    }

    async fn list_workers(
        &self,
        request: Request<pb::ListWorkersRequest>,
    ) -> Result<Response<pb::ListWorkersResponse>, Status> {
        caller(&self.state, &request, Scope::Read).await?;
        let workers = self
            .state
            .fleet
            .list_workers()
            .await
            .map_err(crate::error::ApiError::from)?;
        Ok(Response::new(pb::ListWorkersResponse {
            workers: workers.into_iter().map(worker_message).collect(),
        }))
    }

    async fn get_worker(
        &self,
        request: Request<pb::GetWorkerRequest>,
    ) -> Result<Response<pb::Worker>, Status> {
        caller(&self.state, &request, Scope::Read).await?;
        let view = self
            .state
            .fleet
            .get_worker(&request.get_ref().id)
            .await
            .map_err(crate::error::ApiError::from)?;
        Ok(Response::new(worker_message(view)))
    }

    async fn create_join_token(
        &self,
        request: Request<pb::CreateJoinTokenRequest>,
    ) -> Result<Response<pb::JoinToken>, Status> {
        let caller = caller(&self.state, &request, Scope::Admin)
            .await?
            .cluster_admin()?
            .caller;
        let body = request.into_inner();
        let token_request = JoinTokenRequest {
            worker_id: Some(body.worker_id).filter(|id| !id.is_empty()),
            ttl: parse_optional_duration(Some(&body.ttl))?,
            uses: Some(body.uses).filter(|uses| *uses > 0),
            pool: Some(body.pool).filter(|pool| !pool.is_empty()),
            labels: body.labels.into_iter().collect(),
        };
        let issued = self
            .state
            .fleet
            .create_join_token(token_request, &caller.key_id)
            .await
            .map_err(crate::error::ApiError::from)?;
        Ok(Response::new(pb::JoinToken {
            token: issued.token,
            jti: issued.jti,
            expires_at: issued.expires_at,
            worker_id: issued.worker_id.unwrap_or_default(),
            uses: issued.uses,
            ca_sha256: issued.ca_sha256,
            pool: issued.pool,
            labels: issued.labels.into_iter().collect(),
        }))
    }
}
