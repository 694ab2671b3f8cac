//! Team secrets (`/api/v1/secrets`, `berth secrets set|list|delete`): write-only
//! values sealed at rest with the key in `secrets.key`, handed to a sandbox as
//! environment variables when its template names them. No API answers a value; the
//! only way out is the sandbox's own environment.

use std::collections::BTreeMap;
use std::sync::Arc;

use berth_pki::sealing::SealingKey;
use serde::Serialize;

use crate::clock::now_secs;
use crate::sandboxes::rfc3339;
use crate::store::{SecretRow, Store, StoreError};
use crate::teams::Access;
use crate::workers::model::SecretEnv;

/// The longest value a secret holds.
pub const MAX_VALUE: usize = 64 << 10;
/// The most secrets one template names.
pub const MAX_PER_TEMPLATE: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error(
        "secret name {0:?}: letters, digits and '_', not starting with a digit, at most 128 \
         (it becomes an environment variable of that name)"
    )]
    BadName(String),
    #[error("a secret's value is at most {MAX_VALUE} bytes, without NUL")]
    BadValue,
    #[error("secret {name:?} not found in team {team:?}")]
    NotFound { name: String, team: String },
    #[error(
        "team {team:?} has no secret {names} (set it with `berth secrets set NAME`)",
        names = .names.join(", ")
    )]
    Missing { team: String, names: Vec<String> },
    /// Sealed by another key: a replica without the cluster's `secrets.key`.
    #[error(
        "secret {name:?} was sealed with key {sealed_with} but this control plane holds \
         {ours}; every replica needs the same secrets.key"
    )]
    OtherKey {
        name: String,
        sealed_with: String,
        ours: String,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A secret as the API shows it: never its value.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct SecretView {
    pub name: String,
    pub team_id: String,
    pub created_at: String,
    pub updated_at: String,
}

impl From<SecretRow> for SecretView {
    fn from(row: SecretRow) -> Self {
        Self {
            name: row.name,
            team_id: row.team_id,
            created_at: rfc3339(row.created_at),
            updated_at: rfc3339(row.updated_at),
        }
    }
}

/// Whether `name` can be a secret's (and so an environment variable's) name.
pub fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && name.len() <= 128
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// What binds a sealed value to its row: a value copied to another team or name does
/// not open there.
fn associated(team: &str, name: &str) -> Vec<u8> {
    format!("{team}\0{name}").into_bytes()
}

#[derive(Debug, Clone)]
pub struct Secrets {
    store: Store,
    key: Arc<SealingKey>,
}

impl Secrets {
    pub fn new(store: Store, key: Arc<SealingKey>) -> Self {
        Self { store, key }
    }

    /// Sets secret `name` of the team `access` creates in; true when it is new.
    pub async fn set(
        &self,
        access: &Access,
        name: &str,
        value: &str,
    ) -> Result<(bool, SecretView), SecretError> {
        if !valid_name(name) {
            return Err(SecretError::BadName(name.to_owned()));
        }
        if value.len() > MAX_VALUE || value.contains('\0') {
            return Err(SecretError::BadValue);
        }
        let team = access.creating_team();
        let now = now_secs();
        let row = SecretRow {
            team_id: team.to_owned(),
            name: name.to_owned(),
            key_id: self.key.id().to_owned(),
            sealed: self.key.seal(&associated(team, name), value.as_bytes()),
            created_at: now,
            updated_at: now,
        };
        let (created, stored) = self.store.put_secret(&row).await?;
        Ok((created, stored.into()))
    }

    pub async fn list(&self, access: &Access) -> Result<Vec<SecretView>, SecretError> {
        let rows = self.store.list_secrets(access.creating_team()).await?;
        Ok(rows.into_iter().map(SecretView::from).collect())
    }

    pub async fn delete(&self, access: &Access, name: &str) -> Result<(), SecretError> {
        let team = access.creating_team();
        if self.store.delete_secret(team, name).await? {
            Ok(())
        } else {
            Err(SecretError::NotFound {
                name: name.to_owned(),
                team: team.to_owned(),
            })
        }
    }

    /// The values of `team`'s secrets `names`, for a sandbox's environment; every one
    /// must exist.
    pub async fn reveal(&self, team: &str, names: &[String]) -> Result<SecretEnv, SecretError> {
        if names.is_empty() {
            return Ok(SecretEnv::default());
        }
        let rows: BTreeMap<String, SecretRow> = self
            .store
            .list_secrets(team)
            .await?
            .into_iter()
            .map(|row| (row.name.clone(), row))
            .collect();
        let missing: Vec<String> = names
            .iter()
            .filter(|n| !rows.contains_key(*n))
            .cloned()
            .collect();
        if !missing.is_empty() {
            return Err(SecretError::Missing {
                team: team.to_owned(),
                names: missing,
            });
        }
        let mut env = BTreeMap::new();
        for name in names {
            let row = &rows[name];
            let other_key = || SecretError::OtherKey {
                name: name.clone(),
                sealed_with: row.key_id.clone(),
                ours: self.key.id().to_owned(),
            };
            let value = self
                .key
                .open(&associated(team, name), &row.sealed)
                .map_err(|_| other_key())?;
            // sealed from a `&str`, so it is UTF-8 unless the row was tampered with
            let value = String::from_utf8(value).map_err(|_| other_key())?;
            env.insert(name.clone(), value);
        }
        Ok(SecretEnv(env))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testing::temp_store;

    #[tokio::test]
    async fn a_replica_with_another_key_names_both_keys_and_no_value() {
        let (_dir, store) = temp_store().await;
        let ours_dir = tempfile::tempdir().unwrap();
        let theirs_dir = tempfile::tempdir().unwrap();
        let ours = Secrets::new(
            store.clone(),
            Arc::new(SealingKey::load_or_create(ours_dir.path()).unwrap()),
        );
        let theirs = Secrets::new(
            store,
            Arc::new(SealingKey::load_or_create(theirs_dir.path()).unwrap()),
        );
        let team = Access::team("red");
        let (created, view) = ours.set(&team, "TOKEN", "value-1").await.unwrap();
        assert!(created && view.name == "TOKEN");
        let names = ["TOKEN".to_owned()];
        assert_eq!(
            ours.reveal("red", &names).await.unwrap().0["TOKEN"],
            "value-1"
        );
        let err = theirs.reveal("red", &names).await.unwrap_err().to_string();
        assert!(
            err.contains("sealed with key sk-") && err.contains("same secrets.key"),
            "{err}"
        );
        assert!(!err.contains("value-1"), "{err}");
        // another team's name is missing, not readable
        let err = ours.reveal("blue", &names).await.unwrap_err().to_string();
        assert!(err.contains("has no secret TOKEN"), "{err}");
        assert!(matches!(
            ours.set(&team, "TOKEN", "a\0b").await,
            Err(SecretError::BadValue)
        ));
        assert!(matches!(
            ours.set(&team, "NOT-A-NAME", "x").await,
            Err(SecretError::BadName(_))
        ));
    }
}
