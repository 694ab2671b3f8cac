//! `/api/v1/teams` and `/api/v1/teams/{name}/users`: teams with their quotas and
//! pools (cluster admins create, change and delete them; a team key sees its own),
//! and the users of a team (its admin, or a cluster admin, manages them).

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};

use super::schemas::ErrorBody;
use super::{Authorized, JsonBody, Path, Query, ReadScope, TeamAdminScope};
use crate::api::{ApiState, AuditSlot};
use crate::error::ApiError;
use crate::sandboxes::rfc3339;
use crate::store::{TeamUsage, UserRow};
use crate::teams::{Quota, TeamSettings, TeamView};

/// A team's quotas; `null`: no limit.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct QuotaView {
    pub max_sandboxes: Option<i64>,
    pub max_vcpus: Option<i64>,
    pub max_memory_mb: Option<i64>,
    /// A duration such as `2h`.
    pub max_ttl: Option<String>,
}

impl From<&Quota> for QuotaView {
    fn from(quota: &Quota) -> Self {
        Self {
            max_sandboxes: quota.max_sandboxes,
            max_vcpus: quota.max_vcpus,
            max_memory_mb: quota.max_memory_mb,
            max_ttl: quota
                .max_ttl
                .map(|ttl| humantime::format_duration(ttl).to_string()),
        }
    }
}

/// What a team's live sandboxes hold.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct UsageView {
    pub sandboxes: i64,
    pub vcpus: i64,
    pub memory_mb: i64,
}

impl From<&TeamUsage> for UsageView {
    fn from(usage: &TeamUsage) -> Self {
        Self {
            sandboxes: usage.sandboxes,
            vcpus: usage.vcpus,
            memory_mb: usage.memory_mb,
        }
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TeamBody {
    pub name: String,
    pub created_at: String,
    pub quota: QuotaView,
    /// The worker pools its sandboxes may use; empty: any.
    pub pools: Vec<String>,
    pub usage: UsageView,
    /// How many users it has.
    pub users: i64,
}

impl From<TeamView> for TeamBody {
    fn from(view: TeamView) -> Self {
        Self {
            created_at: rfc3339(view.created_at),
            quota: QuotaView::from(&view.settings.quota),
            usage: UsageView::from(&view.usage),
            pools: view.settings.pools,
            name: view.name,
            users: view.users,
        }
    }
}

/// A team to create: quotas absent mean no limit, pools absent any pool.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTeamBody {
    /// 1-63 lowercase letters, digits and '-'.
    pub name: String,
    #[serde(default)]
    pub max_sandboxes: Option<i64>,
    #[serde(default)]
    pub max_vcpus: Option<i64>,
    #[serde(default)]
    pub max_memory_mb: Option<i64>,
    /// The longest TTL (and extension) its sandboxes may have, e.g. `2h`.
    #[serde(default)]
    pub max_ttl: Option<String>,
    #[serde(default)]
    pub pools: Option<Vec<String>>,
}

/// Changes to a team: absent fields stay; `0` (or a `max_ttl` of `""` or `"0s"`)
/// clears a limit; `pools: []` allows any pool.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateTeamBody {
    #[serde(default)]
    pub max_sandboxes: Option<i64>,
    #[serde(default)]
    pub max_vcpus: Option<i64>,
    #[serde(default)]
    pub max_memory_mb: Option<i64>,
    #[serde(default)]
    pub max_ttl: Option<String>,
    #[serde(default)]
    pub pools: Option<Vec<String>>,
}

/// A `max_ttl` as given: empty or zero clears it.
pub fn parse_max_ttl(text: &str) -> Result<Option<Duration>, ApiError> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    let ttl = humantime::parse_duration(text)
        .map_err(|err| ApiError::bad_request(format!("invalid max_ttl {text:?}: {err}")))?;
    Ok((!ttl.is_zero()).then_some(ttl))
}

/// A counted limit as given: 0 clears it.
fn limit(value: i64) -> Option<i64> {
    (value != 0).then_some(value)
}

/// Creates a team (cluster admin).
#[utoipa::path(post, path = "/api/v1/teams", tag = "teams", security(("api_key" = []), ("bearer" = [])),
    request_body = CreateTeamBody, responses(
    (status = 201, description = "The team", body = TeamBody),
    (status = 400, description = "A bad name, quota or pool", body = ErrorBody),
    (status = 403, description = "Not a cluster admin key", body = ErrorBody),
    (status = 409, description = "A team of that name exists", body = ErrorBody),
))]
pub async fn create(
    Authorized { caller, .. }: Authorized<TeamAdminScope>,
    State(state): State<ApiState>,
    audit: AuditSlot,
    JsonBody(body): JsonBody<CreateTeamBody>,
) -> Result<(StatusCode, Json<TeamBody>), ApiError> {
    audit.detail(format!("team={}", body.name));
    let settings = TeamSettings {
        quota: Quota {
            max_sandboxes: body.max_sandboxes,
            max_vcpus: body.max_vcpus,
            max_memory_mb: body.max_memory_mb,
            max_ttl: body
                .max_ttl
                .as_deref()
                .map(parse_max_ttl)
                .transpose()?
                .flatten(),
        },
        pools: body.pools.unwrap_or_default(),
    };
    let view = state.teams.create(&caller, &body.name, settings).await?;
    Ok((StatusCode::CREATED, Json(view.into())))
}

/// The teams the caller sees: every team for a cluster key, its own for a team's.
#[utoipa::path(get, path = "/api/v1/teams", tag = "teams", security(("api_key" = []), ("bearer" = [])),
    responses((status = 200, description = "Teams", body = Vec<TeamBody>)))]
pub async fn list(
    Authorized { caller, .. }: Authorized<ReadScope>,
    State(state): State<ApiState>,
) -> Result<Json<Vec<TeamBody>>, ApiError> {
    let teams = state.teams.list(&caller).await?;
    Ok(Json(teams.into_iter().map(TeamBody::from).collect()))
}

/// One team, with its quotas and what its sandboxes use of them.
#[utoipa::path(get, path = "/api/v1/teams/{name}", tag = "teams", security(("api_key" = []), ("bearer" = [])),
    params(("name" = String, Path, description = "Team name")), responses(
    (status = 200, description = "The team", body = TeamBody),
    (status = 404, description = "No such team (or not the caller's)", body = ErrorBody),
))]
pub async fn get(
    Authorized { caller, .. }: Authorized<ReadScope>,
    State(state): State<ApiState>,
    Path(name): Path<String>,
) -> Result<Json<TeamBody>, ApiError> {
    Ok(Json(state.teams.get(&caller, &name).await?.into()))
}

/// Changes a team's quotas or pools (cluster admin).
#[utoipa::path(patch, path = "/api/v1/teams/{name}", tag = "teams", security(("api_key" = []), ("bearer" = [])),
    params(("name" = String, Path, description = "Team name")), request_body = UpdateTeamBody, responses(
    (status = 200, description = "The team", body = TeamBody),
    (status = 400, description = "A bad quota or pool", body = ErrorBody),
    (status = 403, description = "Not a cluster admin key", body = ErrorBody),
    (status = 404, description = "No such team", body = ErrorBody),
))]
pub async fn update(
    Authorized { caller, .. }: Authorized<TeamAdminScope>,
    State(state): State<ApiState>,
    audit: AuditSlot,
    Path(name): Path<String>,
    JsonBody(body): JsonBody<UpdateTeamBody>,
) -> Result<Json<TeamBody>, ApiError> {
    audit.detail(format!("team={name}"));
    let ttl = body.max_ttl.as_deref().map(parse_max_ttl).transpose()?;
    let view = state
        .teams
        .update(&caller, &name, |settings| {
            let quota = &mut settings.quota;
            if let Some(value) = body.max_sandboxes {
                quota.max_sandboxes = limit(value);
            }
            if let Some(value) = body.max_vcpus {
                quota.max_vcpus = limit(value);
            }
            if let Some(value) = body.max_memory_mb {
                quota.max_memory_mb = limit(value);
            }
            if let Some(ttl) = ttl {
                quota.max_ttl = ttl;
            }
            if let Some(pools) = body.pools {
                settings.pools = pools;
            }
        })
        .await?;
    Ok(Json(view.into()))
}

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ForceQuery {
    /// Destroy what the team (or user) still owns first, instead of refusing.
    #[serde(default)]
    pub force: Option<bool>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Deleted {
    /// `deleted` or `removed`.
    pub status: String,
    /// How many sandboxes were destroyed first (with `force`).
    pub destroyed: usize,
}

/// Deletes a team with its users, revoking its keys (cluster admin). A team that
/// still owns sandboxes is refused unless `force=true`: then they are destroyed first.
#[utoipa::path(delete, path = "/api/v1/teams/{name}", tag = "teams", security(("api_key" = []), ("bearer" = [])),
    params(("name" = String, Path, description = "Team name"), ForceQuery), responses(
    (status = 200, description = "Deleted", body = Deleted),
    (status = 400, description = "The default team", body = ErrorBody),
    (status = 404, description = "No such team", body = ErrorBody),
    (status = 409, description = "It still owns sandboxes", body = ErrorBody),
))]
pub async fn delete(
    Authorized { caller, .. }: Authorized<TeamAdminScope>,
    State(state): State<ApiState>,
    audit: AuditSlot,
    Path(name): Path<String>,
    Query(query): Query<ForceQuery>,
) -> Result<Json<Deleted>, ApiError> {
    let force = query.force.unwrap_or(false);
    audit.detail(format!("team={name} force={force}"));
    let destroyed = state.teams.delete(&caller, &name, force).await?;
    Ok(Json(Deleted {
        status: "deleted".into(),
        destroyed,
    }))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct UserBody {
    pub name: String,
    pub team: String,
    pub created_at: String,
}

impl From<UserRow> for UserBody {
    fn from(row: UserRow) -> Self {
        Self {
            name: row.name,
            team: row.team_id,
            created_at: rfc3339(row.created_at),
        }
    }
}

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddUserBody {
    /// 1-63 letters, digits, '.', '_', '@' and '-'.
    pub name: String,
}

/// Adds a user to a team (its admin, or a cluster admin).
#[utoipa::path(post, path = "/api/v1/teams/{name}/users", tag = "teams", security(("api_key" = []), ("bearer" = [])),
    params(("name" = String, Path, description = "Team name")), request_body = AddUserBody, responses(
    (status = 201, description = "The user", body = UserBody),
    (status = 400, description = "A bad name", body = ErrorBody),
    (status = 404, description = "No such team (or not the caller's)", body = ErrorBody),
    (status = 409, description = "The team has a user of that name", body = ErrorBody),
))]
pub async fn add_user(
    Authorized { caller, .. }: Authorized<TeamAdminScope>,
    State(state): State<ApiState>,
    audit: AuditSlot,
    Path(team): Path<String>,
    JsonBody(body): JsonBody<AddUserBody>,
) -> Result<(StatusCode, Json<UserBody>), ApiError> {
    audit.detail(format!("team={team} user={}", body.name));
    let user = state.teams.add_user(&caller, &team, &body.name).await?;
    Ok((StatusCode::CREATED, Json(user.into())))
}

/// The users of a team (its admin, or a cluster admin).
#[utoipa::path(get, path = "/api/v1/teams/{name}/users", tag = "teams", security(("api_key" = []), ("bearer" = [])),
    params(("name" = String, Path, description = "Team name")), responses(
    (status = 200, description = "Users", body = Vec<UserBody>),
    (status = 404, description = "No such team (or not the caller's)", body = ErrorBody),
))]
pub async fn users(
    Authorized { caller, .. }: Authorized<TeamAdminScope>,
    State(state): State<ApiState>,
    Path(team): Path<String>,
) -> Result<Json<Vec<UserBody>>, ApiError> {
    let users = state.teams.users(&caller, &team).await?;
    Ok(Json(users.into_iter().map(UserBody::from).collect()))
}

/// Removes a user and revokes its keys (its team's admin, or a cluster admin); one
/// that owns sandboxes is refused unless `force=true`, which destroys them first.
#[utoipa::path(delete, path = "/api/v1/teams/{name}/users/{user}", tag = "teams", security(("api_key" = []), ("bearer" = [])),
    params(("name" = String, Path, description = "Team name"), ("user" = String, Path, description = "User name"), ForceQuery), responses(
    (status = 200, description = "Removed", body = Deleted),
    (status = 404, description = "No such team or user", body = ErrorBody),
    (status = 409, description = "The user still owns sandboxes", body = ErrorBody),
))]
pub async fn remove_user(
    Authorized { caller, .. }: Authorized<TeamAdminScope>,
    State(state): State<ApiState>,
    audit: AuditSlot,
    Path((team, name)): Path<(String, String)>,
    Query(query): Query<ForceQuery>,
) -> Result<Json<Deleted>, ApiError> {
    let force = query.force.unwrap_or(false);
    audit.detail(format!("team={team} user={name} force={force}"));
    let destroyed = state
        .teams
        .remove_user(&caller, &team, &name, force)
        .await?;
    Ok(Json(Deleted {
        status: "removed".into(),
        destroyed,
    }))
}
