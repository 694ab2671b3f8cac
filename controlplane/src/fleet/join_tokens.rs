//! Issuing join tokens: sign, then record the jti so each use is counted in the store.

use std::time::Duration;

use serde::Serialize;

use super::labels::{self, DEFAULT_POOL, Labels};
use super::{Fleet, FleetError};
use crate::clock::now_secs;
use crate::store::NewJoinToken;

#[derive(Debug, Clone, Default)]
pub struct JoinTokenRequest {
    pub worker_id: Option<String>,
    /// `None`: the configured default.
    pub ttl: Option<Duration>,
    /// `None`: one use.
    pub uses: Option<u32>,
    /// The pool of the worker that enrolls with it; `None`: `default`.
    pub pool: Option<String>,
    /// The labels of the worker that enrolls with it.
    pub labels: Labels,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct IssuedJoinToken {
    pub token: String,
    pub jti: String,
    /// Unix seconds; RFC 3339 in JSON.
    #[serde(serialize_with = "as_rfc3339")]
    #[schema(value_type = String)]
    pub expires_at: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(required = false, nullable = false)]
    pub worker_id: Option<String>,
    pub uses: u32,
    pub ca_sha256: String,
    /// The pool the enrolled worker joins.
    pub pool: String,
    /// The labels the enrolled worker carries.
    pub labels: Labels,
}

const MAX_USES: u32 = 10_000;

fn as_rfc3339<S: serde::Serializer>(unix_secs: &i64, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&crate::sandboxes::rfc3339(*unix_secs))
}

impl Fleet {
    /// Creates a join token; `actor` (an API key id) is recorded as its creator.
    pub async fn create_join_token(
        &self,
        request: JoinTokenRequest,
        actor: &str,
    ) -> Result<IssuedJoinToken, FleetError> {
        let ttl = request.ttl.unwrap_or(self.settings.join_default_ttl);
        if ttl.is_zero() || ttl > self.settings.join_max_ttl {
            return Err(FleetError::BadRequest(format!(
                "join token ttl must be more than 0s and at most {}",
                humantime::format_duration(self.settings.join_max_ttl)
            )));
        }
        let uses = request.uses.unwrap_or(1);
        if uses == 0 || uses > MAX_USES {
            return Err(FleetError::BadRequest(format!(
                "join token uses must be between 1 and {MAX_USES}"
            )));
        }
        if let Some(id) = &request.worker_id {
            berth_pki::validate_worker_id(id)
                .map_err(|err| FleetError::BadRequest(err.to_string()))?;
        }
        let pool = request.pool.unwrap_or_else(|| DEFAULT_POOL.to_owned());
        labels::validate_pool(&pool).map_err(FleetError::BadRequest)?;
        labels::validate_labels(&request.labels).map_err(FleetError::BadRequest)?;
        let spec = berth_pki::JoinTokenSpec {
            ttl,
            uses,
            worker_id: request.worker_id.clone(),
            not_before: None,
        };
        let ca_sha256 = self.authority.ca().fingerprint();
        let (token, claims) = self
            .authority
            .tokens()
            .create_join_token(&spec, &ca_sha256)?;
        self.store
            .insert_join_token(&NewJoinToken {
                jti: claims.jti.clone(),
                worker_id: claims.worker_id.clone(),
                max_uses: uses,
                created_at: now_secs(),
                expires_at: claims.exp,
                created_by: actor.to_owned(),
                pool: pool.clone(),
                labels: labels::labels_to_json(&request.labels),
            })
            .await?;
        tracing::info!(
            jti = %claims.jti, worker_id = ?claims.worker_id, uses, %pool, actor,
            "join token created"
        );
        Ok(IssuedJoinToken {
            token,
            jti: claims.jti,
            expires_at: claims.exp,
            worker_id: claims.worker_id,
            uses,
            ca_sha256,
            pool,
            labels: request.labels,
        })
    }
}
