//! A team's quotas as a create or an extend meets them. The counted quotas (sandboxes,
//! CPUs, memory) are enforced by the store in the statement that places a sandbox,
//! so concurrent creates through several replicas never exceed them; this file reads
//! the team's settings before placing (the TTL quota, the pools), explains a refusal
//! by naming the quota, and answers admission questions.

use std::time::Duration;

use super::request::CreateSandbox;
use super::{SandboxError, Sandboxes};
use crate::store::TeamUsage;
use crate::teams::{Quota, TeamSettings, team_settings};

/// How a team stands against its quotas, for an admission answer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TeamStanding {
    pub usage: TeamUsage,
    pub quota: Quota,
}

impl Sandboxes {
    /// Team `team`'s settings; an unknown team is refused (a cluster key naming a team
    /// in `X-Tenant-ID` that does not exist).
    pub(super) async fn settings_of_team(&self, team: &str) -> Result<TeamSettings, SandboxError> {
        team_settings(&self.store, team)
            .await?
            .ok_or_else(|| SandboxError::UnknownTeam(team.to_owned()))
    }

    /// Refuses a TTL over the team's `max_ttl`.
    pub(super) fn check_ttl(team: &str, quota: &Quota, ttl: Duration) -> Result<(), SandboxError> {
        match quota.max_ttl {
            Some(max) if ttl > max => Err(SandboxError::OverQuota(format!(
                "ttl {} is over team {team:?}'s max_ttl quota of {}",
                humantime::format_duration(ttl),
                humantime::format_duration(max)
            ))),
            _ => Ok(()),
        }
    }

    /// Which of team `team`'s counted quotas a sandbox of `memory_mb` MiB and `vcpus`
    /// CPUs would go over now, as an error naming it (or, when none does any more
    /// because something was destroyed meanwhile, a plain "try again").
    pub(super) async fn over_quota(
        &self,
        team: &str,
        memory_mb: i64,
        vcpus: i64,
    ) -> Result<SandboxError, SandboxError> {
        let TeamStanding { usage, quota } = self.standing(team).await?;
        Ok(SandboxError::OverQuota(
            exceeded(team, &quota, &usage, memory_mb, vcpus)
                .unwrap_or_else(|| format!("team {team:?} was at one of its quotas; try again")),
        ))
    }

    /// Team `team`'s usage and quotas now.
    pub async fn standing(&self, team: &str) -> Result<TeamStanding, SandboxError> {
        let quota = self.settings_of_team(team).await?.quota;
        let usage = self.store.team_usage(team).await?;
        Ok(TeamStanding { usage, quota })
    }

    /// Whether `request` fits its team's quotas now (nothing is reserved); answers the
    /// pools the team may use.
    pub(super) async fn admit_quota(
        &self,
        request: &CreateSandbox,
    ) -> Result<Vec<String>, SandboxError> {
        let settings = self.settings_of_team(&request.team).await?;
        let standing = TeamStanding {
            usage: self.store.team_usage(&request.team).await?,
            quota: settings.quota,
        };
        Self::check_ttl(&request.team, &standing.quota, request.ttl)?;
        let (memory_mb, vcpus) = request.footprint();
        match exceeded(
            &request.team,
            &standing.quota,
            &standing.usage,
            memory_mb,
            vcpus,
        ) {
            Some(message) => Err(SandboxError::OverQuota(message)),
            None => Ok(settings.pools),
        }
    }
}

/// The first counted quota one more sandbox would exceed, as a message naming it.
fn exceeded(
    team: &str,
    quota: &Quota,
    usage: &TeamUsage,
    memory_mb: i64,
    vcpus: i64,
) -> Option<String> {
    if let Some(max) = quota.max_sandboxes
        && usage.sandboxes >= max
    {
        return Some(format!(
            "team {team:?} is at its max_sandboxes quota ({} of {max})",
            usage.sandboxes
        ));
    }
    if let Some(max) = quota.max_vcpus
        && usage.vcpus.saturating_add(vcpus) > max
    {
        return Some(format!(
            "{vcpus} more vcpus would put team {team:?} over its max_vcpus quota ({} of {max} in use)",
            usage.vcpus
        ));
    }
    if let Some(max) = quota.max_memory_mb
        && usage.memory_mb.saturating_add(memory_mb) > max
    {
        return Some(format!(
            "{memory_mb} MiB more would put team {team:?} over its max_memory_mb quota ({} of {max} MiB in use)",
            usage.memory_mb
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_exceeded_quota_is_named() {
        let quota = Quota {
            max_sandboxes: Some(2),
            max_vcpus: Some(4),
            max_memory_mb: Some(1024),
            max_ttl: None,
        };
        let usage = |sandboxes, vcpus, memory_mb| TeamUsage {
            sandboxes,
            vcpus,
            memory_mb,
        };
        assert_eq!(exceeded("a", &quota, &usage(1, 1, 256), 256, 1), None);
        let full = exceeded("a", &quota, &usage(2, 2, 512), 256, 1).unwrap();
        assert_eq!(full, "team \"a\" is at its max_sandboxes quota (2 of 2)");
        let cpus = exceeded("a", &quota, &usage(1, 3, 256), 256, 2).unwrap();
        assert!(cpus.contains("max_vcpus"), "{cpus}");
        let memory = exceeded("a", &quota, &usage(1, 1, 900), 256, 1).unwrap();
        assert!(memory.contains("max_memory_mb"), "{memory}");
        assert_eq!(
            exceeded("a", &Quota::default(), &usage(99, 99, 99), 1 << 20, 64),
            None
        );
    }

    #[test]
    fn a_ttl_over_max_ttl_names_the_quota() {
        let quota = Quota {
            max_ttl: Some(Duration::from_secs(3600)),
            ..Quota::default()
        };
        Sandboxes::check_ttl("a", &quota, Duration::from_secs(3600)).unwrap();
        let err = Sandboxes::check_ttl("a", &quota, Duration::from_secs(7200)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "ttl 2h is over team \"a\"'s max_ttl quota of 1h"
        );
    }
}
