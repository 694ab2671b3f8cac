//! One-time SSH tokens: `POST /api/v1/sandboxes/{id}/ssh-token` hands one out, shown
//! once; the token is the SSH user name (`ssh -p 2222 TOKEN@host`) and the
//! credential, so its login needs no key or password. The first login spends it;
//! only its SHA-256 is stored.

use std::time::Duration;

use rand::RngCore;
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::{Login, LoginRefusal, SshAccessError, check_sandbox};
use crate::api_keys::Caller;
use crate::clock::now_secs;
use crate::sandboxes::{Sandboxes, rfc3339};
use crate::store::{SshTokenRow, Store, TokenSpend};
use crate::teams::Access;

/// What every token starts with (a sandbox id starts with `sbx-`).
pub const TOKEN_PREFIX: &str = "bst-";
pub const DEFAULT_TOKEN_TTL: Duration = Duration::from_secs(5 * 60);
pub const MAX_TOKEN_TTL: Duration = Duration::from_secs(24 * 3600);
/// How long spent and expired tokens are kept (a refusal can name them meanwhile).
const KEEP_EXPIRED: Duration = Duration::from_secs(24 * 3600);

/// A token just issued: shown once.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct IssuedToken {
    pub token: String,
    pub sandbox_id: String,
    pub expires_at: String,
}

/// Issues a token for `sandbox_id`, which `access` must see and which must not be
/// destroyed; it lives `ttl` (default 5 minutes, at most a day).
pub async fn issue_token(
    store: &Store,
    sandboxes: &Sandboxes,
    caller: &Caller,
    access: &Access,
    sandbox_id: &str,
    ttl: Option<Duration>,
) -> Result<IssuedToken, SshAccessError> {
    let ttl = ttl.unwrap_or(DEFAULT_TOKEN_TTL);
    if ttl.is_zero() || ttl > MAX_TOKEN_TTL {
        return Err(SshAccessError::BadTtl(format!(
            "ttl must be more than 0 and at most {}",
            humantime::format_duration(MAX_TOKEN_TTL)
        )));
    }
    let sandbox = sandboxes.get(access, sandbox_id).await?;
    let mut secret = [0u8; 20];
    rand::rng().fill_bytes(&mut secret);
    let token = format!("{TOKEN_PREFIX}{}", hex::encode(secret));
    let now = now_secs();
    let expires_at = now + i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX / 2);
    store
        .insert_ssh_token(&SshTokenRow {
            token_hash: token_hash(&token),
            sandbox_id: sandbox.id.clone(),
            team_id: sandbox.tenant_id.clone(),
            user_id: access.user().map(str::to_owned),
            created_by: caller.key_id.clone(),
            created_at: now,
            expires_at,
            used_at: None,
        })
        .await?;
    Ok(IssuedToken {
        token,
        sandbox_id: sandbox.id,
        expires_at: rfc3339(expires_at),
    })
}

/// A login presenting `token` as its user name: spends it, then checks its sandbox.
pub async fn login_with_token(
    store: &Store,
    sandboxes: &Sandboxes,
    token: &str,
) -> Result<Login, LoginRefusal> {
    let spent = store
        .spend_ssh_token(&token_hash(token), now_secs())
        .await
        .map_err(|err| {
            tracing::warn!(error = %err, "cannot spend an SSH token");
            LoginRefusal::Unavailable
        })?;
    let row = match spent {
        TokenSpend::Spent(row) => row,
        TokenSpend::Used(row) => {
            return Err(LoginRefusal::UsedToken {
                actor: actor(&row),
                sandbox_id: row.sandbox_id,
            });
        }
        TokenSpend::Expired(row) => {
            return Err(LoginRefusal::ExpiredToken {
                actor: actor(&row),
                sandbox_id: row.sandbox_id,
            });
        }
        TokenSpend::Unknown => return Err(LoginRefusal::UnknownToken),
    };
    let actor = actor(&row);
    // a token is as good as the key that issued it
    let issuer = store.find_api_key(&row.created_by).await.map_err(|err| {
        tracing::warn!(error = %err, "cannot look up an SSH token's issuer");
        LoginRefusal::Unavailable
    })?;
    let now = now_secs();
    let issuer_valid = issuer
        .is_some_and(|key| key.revoked_at.is_none() && key.expires_at.is_none_or(|at| at > now));
    if !issuer_valid {
        return Err(LoginRefusal::IssuerRevoked {
            sandbox_id: row.sandbox_id,
            actor,
        });
    }
    let access = Access::owner(Some(&row.team_id), row.user_id.as_deref());
    check_sandbox(sandboxes, &access, &row.sandbox_id, &actor).await?;
    Ok(Login {
        sandbox_id: row.sandbox_id,
        access,
        credential: format!("one-time token from key {}", row.created_by),
        actor,
    })
}

/// Forgets tokens that expired more than a day ago.
pub async fn purge_spent_tokens(store: &Store) -> Result<u64, SshAccessError> {
    let before = now_secs() - i64::try_from(KEEP_EXPIRED.as_secs()).unwrap_or(0);
    Ok(store.purge_ssh_tokens(before).await?)
}

fn actor(row: &SshTokenRow) -> String {
    format!("ssh-token:{}", row.created_by)
}

fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_hash_is_stable_and_not_the_token() {
        let token = "bst-0123";
        assert_eq!(token_hash(token), token_hash(token));
        assert_ne!(token_hash(token), token);
        assert_ne!(token_hash(token), token_hash("bst-0124"));
    }
}
