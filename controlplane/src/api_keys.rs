//! API keys for the public API: `berth_<id>_<secret>`, shown once, stored as the
//! SHA-256 of the secret (the secret is 256 random bits, so a fast hash is enough), and
//! scoped: read, write, exec, admin (admin allows everything).

use std::fmt;
use std::str::FromStr;

use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::clock::now_secs;
use crate::store::{ApiKeyRow, Store, StoreError};

mod cache;

pub use cache::ApiKeyCache;

const PREFIX: &str = "berth_";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Read,
    Write,
    Exec,
    Admin,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Read => "read",
            Self::Write => "write",
            Self::Exec => "exec",
            Self::Admin => "admin",
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Scope {
    type Err = String;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        match value {
            "read" => Ok(Self::Read),
            "write" => Ok(Self::Write),
            "exec" => Ok(Self::Exec),
            "admin" => Ok(Self::Admin),
            other => Err(format!("unknown scope {other:?}")),
        }
    }
}

/// An authenticated caller of the public API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub key_id: String,
    pub scopes: Vec<Scope>,
}

impl Caller {
    pub fn allows(&self, scope: Scope) -> bool {
        self.scopes.contains(&Scope::Admin) || self.scopes.contains(&scope)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("an API key is required (X-API-Key or Authorization: Bearer)")]
    Missing,
    #[error("invalid API key")]
    Invalid,
    #[error("this API key lacks the {0} scope")]
    Forbidden(Scope),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Creates a key with `scopes` and returns it in full; only its hash is kept.
pub async fn create_api_key(
    store: &Store,
    name: &str,
    scopes: &[Scope],
) -> Result<String, StoreError> {
    let (key, row) = new_api_key(name, scopes);
    store.insert_api_key(&row).await?;
    Ok(key)
}

/// Makes the cluster's first admin key, unless the store has keys already or another
/// control plane (a replica starting at the same time) made it; returns it in full
/// when this call made it.
pub async fn create_first_admin_key(store: &Store) -> Result<Option<String>, StoreError> {
    let (key, row) = new_api_key("admin", &[Scope::Admin]);
    Ok(store.insert_first_admin_key(&row).await?.then_some(key))
}

/// A fresh key in full and the row that stores its hash.
fn new_api_key(name: &str, scopes: &[Scope]) -> (String, ApiKeyRow) {
    let mut id = [0u8; 6];
    let mut secret = [0u8; 32];
    rand::rng().fill_bytes(&mut id);
    rand::rng().fill_bytes(&mut secret);
    let id = hex::encode(id);
    let secret = hex::encode(secret);
    let scopes = scopes
        .iter()
        .map(|s| s.as_str())
        .collect::<Vec<_>>()
        .join(",");
    let row = ApiKeyRow {
        id: id.clone(),
        name: name.to_owned(),
        secret_hash: hash_secret(&secret),
        scopes,
        created_at: now_secs(),
        revoked_at: None,
    };
    (format!("{PREFIX}{id}_{secret}"), row)
}

/// Checks a presented key and returns who it belongs to.
pub async fn authenticate(store: &Store, presented: &str) -> Result<Caller, AuthError> {
    let (id, secret) = split_presented(presented).ok_or(AuthError::Invalid)?;
    let row = store.find_api_key(id).await?.ok_or(AuthError::Invalid)?;
    verify(&row, secret)
}

/// A presented key as (key id, secret); `None` when it is not shaped like one of ours.
fn split_presented(presented: &str) -> Option<(&str, &str)> {
    presented
        .trim()
        .strip_prefix(PREFIX)
        .and_then(|rest| rest.split_once('_'))
}

/// Checks `secret` against the stored key `row` (in constant time).
fn verify(row: &ApiKeyRow, secret: &str) -> Result<Caller, AuthError> {
    let matches: bool = hash_secret(secret)
        .as_bytes()
        .ct_eq(row.secret_hash.as_bytes())
        .into();
    if !matches || row.revoked_at.is_some() {
        return Err(AuthError::Invalid);
    }
    let scopes = row
        .scopes
        .split(',')
        .filter_map(|s| s.parse().ok())
        .collect();
    Ok(Caller {
        key_id: row.id.clone(),
        scopes,
    })
}

fn hash_secret(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testing::temp_store;

    #[tokio::test]
    async fn a_created_key_authenticates_with_its_scopes() {
        let (_dir, store) = temp_store().await;
        let key = create_api_key(&store, "ci", &[Scope::Read, Scope::Exec])
            .await
            .unwrap();
        let caller = authenticate(&store, &key).await.unwrap();
        assert!(caller.allows(Scope::Read));
        assert!(caller.allows(Scope::Exec));
        assert!(!caller.allows(Scope::Admin));
        assert!(!caller.allows(Scope::Write));
    }

    #[tokio::test]
    async fn admin_allows_everything() {
        let caller = Caller {
            key_id: "k".into(),
            scopes: vec![Scope::Admin],
        };
        for scope in [Scope::Read, Scope::Write, Scope::Exec, Scope::Admin] {
            assert!(caller.allows(scope));
        }
    }

    #[tokio::test]
    async fn wrong_secrets_and_garbage_are_invalid() {
        let (_dir, store) = temp_store().await;
        let key = create_api_key(&store, "ci", &[Scope::Admin]).await.unwrap();
        let (head, _) = key.rsplit_once('_').unwrap();
        let wrong = format!("{head}_{}", "0".repeat(64));
        for presented in [wrong.as_str(), "", "berth_", "nonsense", "berth_abc_def"] {
            assert!(
                matches!(
                    authenticate(&store, presented).await,
                    Err(AuthError::Invalid)
                ),
                "{presented:?}"
            );
        }
    }

    #[tokio::test]
    async fn only_the_hash_is_stored() {
        let (_dir, store) = temp_store().await;
        let key = create_api_key(&store, "ci", &[Scope::Admin]).await.unwrap();
        let (_, secret) = key.rsplit_once('_').unwrap();
        let id = key.strip_prefix(PREFIX).unwrap().split('_').next().unwrap();
        let row = store.find_api_key(id).await.unwrap().unwrap();
        assert_ne!(row.secret_hash, secret);
        assert!(!row.secret_hash.contains(secret));
    }
}
