//! Who is calling the public API: the API key from `X-API-Key` (StacyVM),
//! `X-Admin-API-Key` or `Authorization: Bearer`, checked against the store (through a
//! short-lived cache of key rows) and the scope the call needs.

use crate::api_keys::{ApiKeyCache, AuthError, Caller, Scope};
use crate::error::ApiError;
use crate::store::Store;

/// The key a request presents, from whichever header carries it.
pub fn presented_key<'a>(header: impl Fn(&str) -> Option<&'a str>) -> Option<&'a str> {
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

pub async fn authorize(
    keys: &ApiKeyCache,
    store: &Store,
    presented: Option<&str>,
    scope: Scope,
) -> Result<Caller, ApiError> {
    let key = presented.ok_or(AuthError::Missing)?;
    let caller = keys.authenticate(store, key).await?;
    if !caller.allows(scope) {
        return Err(AuthError::Forbidden(scope).into());
    }
    Ok(caller)
}

impl From<AuthError> for ApiError {
    fn from(err: AuthError) -> Self {
        match err {
            AuthError::Missing | AuthError::Invalid => ApiError::unauthorized(err.to_string()),
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
        assert_eq!(presented_key(headers(&[("x-api-key", "k1")])), Some("k1"));
        assert_eq!(
            presented_key(headers(&[("authorization", "Bearer k2")])),
            Some("k2")
        );
        assert_eq!(
            presented_key(headers(&[("x-admin-api-key", "k3")])),
            Some("k3")
        );
        assert_eq!(
            presented_key(headers(&[("authorization", "Basic xyz")])),
            None
        );
        assert_eq!(presented_key(headers(&[("x-api-key", "  ")])), None);
        assert_eq!(presented_key(headers(&[])), None);
    }
}
