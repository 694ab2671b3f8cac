//! Who is calling the public API: the API key from `X-API-Key` (StacyVM),
//! `X-Admin-API-Key` or `Authorization: Bearer`, checked against the store (through a
//! short-lived cache of key rows), the key's rate limit and the scope the call needs.

use super::{ApiState, AuditSlot};
use crate::api_keys::{AuthError, Caller, Role, Scope};
use crate::error::ApiError;
use crate::teams::Access;

/// StacyVM's headers naming the team and the user a call acts for.
const TENANT_HEADER: &str = "x-tenant-id";
const USER_HEADER: &str = "x-user-id";

/// An authenticated call: who made it and what it may touch.
#[derive(Debug, Clone)]
pub struct Granted {
    pub caller: Caller,
    pub access: Access,
}

/// The key a request presents, from whichever header carries it.
pub fn presented_key<'a>(header: &impl Fn(&str) -> Option<&'a str>) -> Option<&'a str> {
    header("x-api-key")
        .or_else(|| header("x-admin-api-key"))
        .or_else(|| {
            header("authorization").and_then(|value| {
                value
                    .strip_prefix("Bearer ")
                    .or_else(|| value.strip_prefix("bearer "))
            })
        })
        .map(str::trim)
        .filter(|key| !key.is_empty())
}

impl Granted {
    /// The same grant, if the caller is a cluster admin (the admin scope and no
    /// team): the fleet's own operations (workers, join tokens, the audit log) are not
    /// a team admin's.
    pub fn cluster_admin(self) -> Result<Self, ApiError> {
        if self.caller.role() == Role::ClusterAdmin {
            return Ok(self);
        }
        Err(ApiError::forbidden(
            "this call needs a cluster admin key (the admin scope, bound to no team)",
        ))
    }
}

/// Checks the key a request presents (read through `header`), spends one call of its
/// rate limit and checks that it has `scope`, then what the call may touch given the
/// team and user it names (`X-Tenant-ID`, `X-User-ID`). Notes the key, team and user
/// in the call's audit slot (if the call is audited): the caller's key, or the key of
/// a refusal that names one (expired, revoked), with the reason as the record's
/// detail. A call over the key's rate is left out of the log.
pub async fn authorize<'a>(
    state: &ApiState,
    header: impl Fn(&str) -> Option<&'a str>,
    scope: Scope,
    audit: Option<&AuditSlot>,
) -> Result<Granted, ApiError> {
    let key = presented_key(&header).ok_or(AuthError::Missing)?;
    let caller = match state.api_keys.authenticate(&state.store, key).await {
        Ok(caller) => caller,
        Err(err) => {
            if let (Some(slot), Some(key_id)) = (audit, err.key_id()) {
                slot.actor(key_id);
                slot.detail(err.to_string());
            }
            return Err(err.into());
        }
    };
    if let Some(slot) = audit {
        slot.actor(&caller.key_id);
    }
    if let Err(refusal) = state.key_rate_limits.check(&caller.key_id) {
        if let Some(slot) = audit {
            slot.leave_out();
        }
        return Err(refusal);
    }
    if !caller.allows(scope) {
        return Err(AuthError::Forbidden(scope).into());
    }
    let access = Access::for_call(&caller, header(TENANT_HEADER), header(USER_HEADER))?;
    if let Some(slot) = audit {
        slot.acting(
            access.team_filter().unwrap_or_default(),
            access.user().unwrap_or_default(),
        );
    }
    Ok(Granted { caller, access })
}

impl From<AuthError> for ApiError {
    fn from(err: AuthError) -> Self {
        match err {
            AuthError::Missing
            | AuthError::Invalid
            | AuthError::Expired { .. }
            | AuthError::Revoked { .. } => ApiError::unauthorized(err.to_string()),
            AuthError::Forbidden(_) => ApiError::forbidden(err.to_string()),
            AuthError::Store(err) => err.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<&'a str> {
        move |name| pairs.iter().find(|(n, _)| *n == name).map(|(_, v)| *v)
    }

    #[test]
    fn keys_come_from_any_supported_header() {
        assert_eq!(presented_key(&headers(&[("x-api-key", "k1")])), Some("k1"));
        assert_eq!(
            presented_key(&headers(&[("authorization", "Bearer k2")])),
            Some("k2")
        );
        assert_eq!(
            presented_key(&headers(&[("x-admin-api-key", "k3")])),
            Some("k3")
        );
        assert_eq!(
            presented_key(&headers(&[("authorization", "Basic xyz")])),
            None
        );
        assert_eq!(presented_key(&headers(&[("x-api-key", "  ")])), None);
        assert_eq!(presented_key(&headers(&[])), None);
    }
}
