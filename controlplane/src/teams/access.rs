//! What one call may touch: the team whose sandboxes it sees and acts on, and the user
//! it acts as. A team's key is held to its team and, when bound to a user, to that
//! user; StacyVM's `X-Tenant-ID` and `X-User-ID` headers choose within that, never
//! beyond it. A cluster key (no team) sees every team, or the one it names.

use crate::api_keys::Caller;

/// The team that owns everything made before teams, and what a cluster key creates in
/// when it names no team.
pub const DEFAULT_TEAM: &str = "default";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Access {
    /// `None`: every team (a cluster key naming none, or the control plane itself).
    team: Option<String>,
    /// The user new sandboxes belong to, when the call names or is bound to one.
    user: Option<String>,
    /// Whether `user` is the key's own (not merely named by the call).
    user_bound: bool,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AccessError {
    #[error("this API key belongs to team {own:?}; it cannot act for team {asked:?}")]
    OtherTeam { own: String, asked: String },
    #[error("this API key acts as user {own:?}; it cannot act as {asked:?}")]
    OtherUser { own: String, asked: String },
}

impl Access {
    /// Everything: the control plane's own work (reconciliation, drains, the TTL).
    pub fn everything() -> Self {
        Self {
            team: None,
            user: None,
            user_bound: false,
        }
    }

    /// One team's sandboxes, as no particular user.
    pub fn team(team: &str) -> Self {
        Self {
            team: Some(team.to_owned()),
            user: None,
            user_bound: false,
        }
    }

    /// What an owner's credential may touch: `team`'s sandboxes (every team's for
    /// `None`), acting as `user` when it has one (an SSH key registered by a key
    /// bound to that user, or a token issued by one).
    pub fn owner(team: Option<&str>, user: Option<&str>) -> Self {
        Self {
            team: team.map(str::to_owned),
            user: user.map(str::to_owned),
            user_bound: user.is_some(),
        }
    }

    /// What `caller` may touch in a call that named `tenant` (`X-Tenant-ID`) and
    /// `user` (`X-User-ID`); naming another team or user than the key's is refused.
    pub fn for_call(
        caller: &Caller,
        tenant: Option<&str>,
        user: Option<&str>,
    ) -> Result<Self, AccessError> {
        let given = |v: Option<&str>| {
            v.map(str::trim)
                .filter(|v| !v.is_empty())
                .map(str::to_owned)
        };
        let (tenant, user) = (given(tenant), given(user));
        let team = match (&caller.team, tenant) {
            (Some(own), Some(asked)) if *own != asked => {
                return Err(AccessError::OtherTeam {
                    own: own.clone(),
                    asked,
                });
            }
            (Some(own), _) => Some(own.clone()),
            (None, asked) => asked,
        };
        let user = match (&caller.user, user) {
            (Some(own), Some(asked)) if *own != asked => {
                return Err(AccessError::OtherUser {
                    own: own.clone(),
                    asked,
                });
            }
            (Some(own), _) => Some(own.clone()),
            (None, asked) => asked,
        };
        Ok(Self {
            team,
            user,
            user_bound: caller.user.is_some(),
        })
    }

    /// Whether a sandbox of team `team` is visible to this call.
    pub fn sees(&self, team: &str) -> bool {
        self.team.as_deref().is_none_or(|own| own == team)
    }

    /// The team this call is limited to; `None`: every team.
    pub fn team_filter(&self) -> Option<&str> {
        self.team.as_deref()
    }

    /// The team a sandbox created by this call belongs to.
    pub fn creating_team(&self) -> &str {
        self.team.as_deref().unwrap_or(DEFAULT_TEAM)
    }

    /// The user the call names or is bound to.
    pub fn user(&self) -> Option<&str> {
        self.user.as_deref()
    }

    /// The user the key is bound to, if it is.
    pub fn bound_user(&self) -> Option<&str> {
        self.user.as_deref().filter(|_| self.user_bound)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api_keys::Scope;

    fn key(team: Option<&str>, user: Option<&str>) -> Caller {
        Caller {
            key_id: "k".into(),
            scopes: vec![Scope::Read],
            team: team.map(str::to_owned),
            user: user.map(str::to_owned),
        }
    }

    #[test]
    fn a_team_key_is_held_to_its_team() {
        let access = Access::for_call(&key(Some("a"), None), None, None).unwrap();
        assert!(access.sees("a"));
        assert!(!access.sees("b"));
        assert_eq!(access.creating_team(), "a");
        assert_eq!(
            Access::for_call(&key(Some("a"), None), Some("a"), None).unwrap(),
            access
        );
        let err = Access::for_call(&key(Some("a"), None), Some("b"), None).unwrap_err();
        assert_eq!(
            err.to_string(),
            "this API key belongs to team \"a\"; it cannot act for team \"b\""
        );
    }

    #[test]
    fn a_cluster_key_sees_every_team_or_the_one_it_names() {
        let all = Access::for_call(&key(None, None), None, None).unwrap();
        assert!(all.sees("a") && all.sees("b"));
        assert_eq!(all.creating_team(), DEFAULT_TEAM);
        assert_eq!(all.team_filter(), None);
        let one = Access::for_call(&key(None, None), Some("b"), Some("bob")).unwrap();
        assert!(!one.sees("a"));
        assert_eq!(one.creating_team(), "b");
        assert_eq!(one.user(), Some("bob"));
    }

    #[test]
    fn a_user_bound_key_acts_only_as_its_user() {
        let access = Access::for_call(&key(Some("a"), Some("alice")), None, Some(" ")).unwrap();
        assert_eq!(access.user(), Some("alice"));
        let err = Access::for_call(&key(Some("a"), Some("alice")), None, Some("bob")).unwrap_err();
        assert!(matches!(err, AccessError::OtherUser { .. }));
        let unbound = Access::for_call(&key(Some("a"), None), None, Some("bob")).unwrap();
        assert_eq!(unbound.user(), Some("bob"));
    }
}
