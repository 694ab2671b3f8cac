//! Who may log in through the SSH gateway, and to which sandbox. Two credentials:
//! a public key registered to an owner (`berth ssh-keys add`), which logs in as
//! `SANDBOX_ID@host` to that owner's sandboxes only, and a one-time token
//! (`berth sandbox ssh-token ID`), which is the SSH user name itself and opens one
//! login to one sandbox before it expires. No passwords. Every refusal says why, in
//! words the gateway hands to the client.

mod keys;
mod tokens;

use crate::sandboxes::{SandboxError, Sandboxes};
use crate::store::StoreError;
use crate::teams::Access;

pub use keys::{
    SshKeyView, known_fingerprint, list_keys, login_with_key, parse_public_key, register_key,
    remove_key,
};
pub use tokens::{
    DEFAULT_TOKEN_TTL, IssuedToken, MAX_TOKEN_TTL, TOKEN_PREFIX, issue_token, login_with_token,
    purge_spent_tokens,
};

#[derive(Debug, thiserror::Error)]
pub enum SshAccessError {
    #[error("{0}")]
    BadKey(String),
    #[error("a key's name is at most 100 characters, without control characters")]
    BadName,
    #[error("this public key is registered already (as {0}); remove it first")]
    KeyExists(String),
    #[error("SSH key {0:?} not found")]
    UnknownKey(String),
    #[error("{0}")]
    BadTtl(String),
    #[error(transparent)]
    Sandbox(#[from] SandboxError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// An accepted login: the sandbox it reaches and what it may touch, and who it is
/// for the audit log.
#[derive(Debug, Clone)]
pub struct Login {
    pub sandbox_id: String,
    pub access: Access,
    /// `ssh-token:<issuer key>` or `ssh-key:<key id>`.
    pub actor: String,
    /// The credential as the audit log names it: the token's issuer, or the key's
    /// fingerprint.
    pub credential: String,
}

/// Why a login was refused; the text goes to the client as it is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LoginRefusal {
    #[error("this SSH token is not valid (ask for one with `berth sandbox ssh-token SANDBOX_ID`)")]
    UnknownToken,
    #[error("this SSH token was used already: a token opens one login; ask for a new one")]
    UsedToken { sandbox_id: String, actor: String },
    #[error("this SSH token expired; ask for a new one")]
    ExpiredToken { sandbox_id: String, actor: String },
    #[error("the API key that issued this SSH token was revoked or has expired")]
    IssuerRevoked { sandbox_id: String, actor: String },
    #[error("SSH key {fingerprint} was removed; register it again with `berth ssh-keys add`")]
    RemovedKey { fingerprint: String, actor: String },
    #[error(
        "log in as SANDBOX_ID@host with a registered key, or as TOKEN@host with a token \
         from `berth sandbox ssh-token`"
    )]
    NoSandbox,
    #[error("sandbox {sandbox_id:?} not found")]
    NotFound { sandbox_id: String, actor: String },
    #[error("sandbox {sandbox_id:?} is {state}; only a running sandbox takes logins")]
    NotRunning {
        sandbox_id: String,
        state: String,
        actor: String,
    },
    #[error("the control plane cannot check this login right now; try again")]
    Unavailable,
}

impl LoginRefusal {
    /// The sandbox and actor a refusal is about, for its audit record.
    pub fn subject(&self) -> (&str, &str) {
        match self {
            Self::UsedToken { sandbox_id, actor }
            | Self::ExpiredToken { sandbox_id, actor }
            | Self::IssuerRevoked { sandbox_id, actor }
            | Self::NotFound { sandbox_id, actor }
            | Self::NotRunning {
                sandbox_id, actor, ..
            } => (sandbox_id, actor),
            Self::RemovedKey { actor, .. } => ("", actor),
            Self::UnknownToken | Self::NoSandbox | Self::Unavailable => ("", ""),
        }
    }
}

/// Checks that `sandbox_id` is visible to `access` and running: what both
/// credentials need at login (and again when a channel opens a command).
pub async fn check_sandbox(
    sandboxes: &Sandboxes,
    access: &Access,
    sandbox_id: &str,
    actor: &str,
) -> Result<(), LoginRefusal> {
    match sandboxes.get(access, sandbox_id).await {
        Ok(view) if view.state == "running" => Ok(()),
        Ok(view) => Err(LoginRefusal::NotRunning {
            sandbox_id: sandbox_id.to_owned(),
            state: view.state,
            actor: actor.to_owned(),
        }),
        Err(SandboxError::NotFound(_)) => Err(LoginRefusal::NotFound {
            sandbox_id: sandbox_id.to_owned(),
            actor: actor.to_owned(),
        }),
        Err(SandboxError::Destroyed(_)) => Err(LoginRefusal::NotRunning {
            sandbox_id: sandbox_id.to_owned(),
            state: "destroyed".into(),
            actor: actor.to_owned(),
        }),
        Err(err) => {
            tracing::warn!(error = %err, sandbox_id, "cannot check an SSH login's sandbox");
            Err(LoginRefusal::Unavailable)
        }
    }
}
