//! Public keys registered to an owner: the team (and user) of the API key that
//! registered them. A key logs in to the sandboxes its owner sees, as
//! `SANDBOX_ID@host`. Ed25519 and ECDSA keys are taken; RSA is not (the gateway is
//! built without an RSA implementation).

use russh::keys::{Algorithm, HashAlg, PublicKey};
use serde::Serialize;

use super::{Login, LoginRefusal, SshAccessError, check_sandbox};
use crate::api_keys::Caller;
use crate::clock::now_secs;
use crate::sandboxes::{Sandboxes, rfc3339};
use crate::store::{SshKeyRow, Store};
use crate::teams::Access;

/// The longest name a key may have.
const MAX_NAME_LEN: usize = 100;

/// A registered key as the API shows it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct SshKeyView {
    pub id: String,
    pub name: String,
    /// `SHA256:…`, as `ssh-keygen -l` prints it.
    pub fingerprint: String,
    /// The key in OpenSSH's one-line form.
    pub public_key: String,
    /// The team it logs in to (empty: every team, registered with a cluster key).
    pub team_id: String,
    /// The user it belongs to, if any.
    pub user_id: String,
    pub created_at: String,
    /// When it was removed (absent: it is live).
    #[serde(skip_serializing_if = "String::is_empty")]
    #[schema(required = false)]
    pub removed_at: String,
}

impl From<SshKeyRow> for SshKeyView {
    fn from(row: SshKeyRow) -> Self {
        Self {
            id: row.id,
            name: row.name,
            fingerprint: row.fingerprint,
            public_key: row.public_key,
            team_id: row.team_id.unwrap_or_default(),
            user_id: row.user_id.unwrap_or_default(),
            created_at: rfc3339(row.created_at),
            removed_at: row.revoked_at.map(rfc3339).unwrap_or_default(),
        }
    }
}

/// Parses one line of an `authorized_keys`/`.pub` file; answers the key and its
/// fingerprint.
pub fn parse_public_key(line: &str) -> Result<(PublicKey, String), SshAccessError> {
    let line = line.trim();
    if line.is_empty() {
        return Err(SshAccessError::BadKey(
            "public_key is empty (give the contents of e.g. ~/.ssh/id_ed25519.pub)".into(),
        ));
    }
    let key = PublicKey::from_openssh(line).map_err(|err| {
        SshAccessError::BadKey(format!(
            "public_key is not an OpenSSH public key ({err}); give one line such as \
             \"ssh-ed25519 AAAA… you@host\""
        ))
    })?;
    match key.algorithm() {
        Algorithm::Ed25519 | Algorithm::Ecdsa { .. } => {}
        other => {
            return Err(SshAccessError::BadKey(format!(
                "{} keys are not taken; use an ed25519 key (ssh-keygen -t ed25519) or ECDSA",
                other.as_str()
            )));
        }
    }
    let fingerprint = key.fingerprint(HashAlg::Sha256).to_string();
    Ok((key, fingerprint))
}

/// Registers `public_key` to the caller's owner (`access`'s team and user).
pub async fn register_key(
    store: &Store,
    caller: &Caller,
    access: &Access,
    name: &str,
    public_key: &str,
) -> Result<SshKeyView, SshAccessError> {
    let (key, fingerprint) = parse_public_key(public_key)?;
    let comment = key.comment().to_string();
    let name = match name.trim() {
        "" => comment.trim(),
        name => name,
    };
    if name.chars().count() > MAX_NAME_LEN || name.chars().any(char::is_control) {
        return Err(SshAccessError::BadName);
    }
    let mut bare = key.clone();
    bare.set_comment("");
    let line = bare
        .to_openssh()
        .map_err(|err| SshAccessError::BadKey(format!("cannot encode the key: {err}")))?;
    let row = SshKeyRow {
        id: format!("sshk-{}", &uuid::Uuid::new_v4().simple().to_string()[..16]),
        team_id: access.team_filter().map(str::to_owned),
        user_id: access.user().map(str::to_owned),
        name: name.to_owned(),
        fingerprint: fingerprint.clone(),
        public_key: line,
        created_by: caller.key_id.clone(),
        created_at: now_secs(),
        revoked_at: None,
    };
    if !store.insert_ssh_key(&row).await? {
        let existing = store
            .ssh_key_by_fingerprint(&fingerprint)
            .await?
            .map(|row| row.id)
            .unwrap_or_default();
        return Err(SshAccessError::KeyExists(existing));
    }
    Ok(row.into())
}

/// The keys `access` sees: its team's (every team's for a cluster key), and only its
/// user's when it acts as one.
pub async fn list_keys(
    store: &Store,
    access: &Access,
    removed: bool,
) -> Result<Vec<SshKeyView>, SshAccessError> {
    let rows = store
        .list_ssh_keys(access.team_filter(), access.user(), removed)
        .await?;
    Ok(rows.into_iter().map(SshKeyView::from).collect())
}

/// Removes a key `access` sees; logins with it are refused from then on.
pub async fn remove_key(
    store: &Store,
    access: &Access,
    id: &str,
) -> Result<SshKeyView, SshAccessError> {
    let row = store
        .get_ssh_key(id)
        .await?
        .filter(|row| visible(access, row))
        .ok_or_else(|| SshAccessError::UnknownKey(id.to_owned()))?;
    store.remove_ssh_key(id, now_secs()).await?;
    Ok(store.get_ssh_key(id).await?.unwrap_or(row).into())
}

fn visible(access: &Access, row: &SshKeyRow) -> bool {
    let team_ok = match access.team_filter() {
        None => true,
        Some(team) => row.team_id.as_deref() == Some(team),
    };
    let user_ok = match access.user() {
        None => true,
        Some(user) => row.user_id.as_deref() == Some(user),
    };
    team_ok && user_ok
}

/// Whether some key (live or removed) has `fingerprint`: a key nobody registered is
/// refused before the client proves it holds it, so the client tries its next one.
pub async fn known_fingerprint(store: &Store, fingerprint: &str) -> Result<bool, LoginRefusal> {
    match store.ssh_key_by_fingerprint(fingerprint).await {
        Ok(row) => Ok(row.is_some()),
        Err(err) => {
            tracing::warn!(error = %err, "cannot look up an SSH key");
            Err(LoginRefusal::Unavailable)
        }
    }
}

/// A login as `sandbox_id` with the key whose signature the client has proven.
pub async fn login_with_key(
    store: &Store,
    sandboxes: &Sandboxes,
    sandbox_id: &str,
    key: &PublicKey,
) -> Result<Login, LoginRefusal> {
    let fingerprint = key.fingerprint(HashAlg::Sha256).to_string();
    let row = match store.ssh_key_by_fingerprint(&fingerprint).await {
        Ok(Some(row)) => row,
        Ok(None) => {
            return Err(LoginRefusal::RemovedKey {
                fingerprint,
                actor: String::new(),
            });
        }
        Err(err) => {
            tracing::warn!(error = %err, "cannot look up an SSH key");
            return Err(LoginRefusal::Unavailable);
        }
    };
    let actor = format!("ssh-key:{}", row.id);
    if row.revoked_at.is_some() {
        return Err(LoginRefusal::RemovedKey { fingerprint, actor });
    }
    if !sandbox_id.starts_with("sbx-") {
        return Err(LoginRefusal::NoSandbox);
    }
    let access = Access::owner(row.team_id.as_deref(), row.user_id.as_deref());
    check_sandbox(sandboxes, &access, sandbox_id, &actor).await?;
    Ok(Login {
        sandbox_id: sandbox_id.to_owned(),
        access,
        actor,
        credential: fingerprint,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const ED25519: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJdG4C91NWtL3EkBque7pguyo0XmFws9dMr7rzxu0a1X me@laptop";

    #[test]
    fn an_ed25519_key_is_parsed_with_its_fingerprint() {
        let (key, fingerprint) = parse_public_key(ED25519).unwrap();
        assert_eq!(key.comment().to_string(), "me@laptop");
        assert!(fingerprint.starts_with("SHA256:"), "{fingerprint}");
    }

    #[test]
    fn garbage_and_empty_keys_are_refused_with_a_hint() {
        let err = parse_public_key("").unwrap_err().to_string();
        assert!(err.contains("empty"), "{err}");
        let err = parse_public_key("ssh-ed25519 not-base64")
            .unwrap_err()
            .to_string();
        assert!(err.contains("not an OpenSSH public key"), "{err}");
    }
}
