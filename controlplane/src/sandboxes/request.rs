//! Sandbox requests as both API edges receive them, checked into validated domain
//! values here (so the HTTP and gRPC edges parse alike): a create, a prune's selection,
//! and the durations they carry (TTL, auto-stop, exec timeout).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;

use super::constraints::Constraint;
use super::{SandboxError, SandboxSettings};

/// A create request as a client sends it (StacyVM's body; unknown fields are ignored
/// as StacyVM does). Absent and empty fields take the defaults.
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
pub struct CreateRequest {
    pub image: Option<String>,
    pub provider: Option<String>,
    pub memory_mb: Option<u64>,
    pub vcpus: Option<u32>,
    pub ttl: Option<String>,
    /// Stop the sandbox after this long with no exec, file, session or port traffic
    /// (a duration, `30m`); absent, empty or `0s`: never. A stopped sandbox keeps its
    /// files and is started again with `POST /api/v1/sandboxes/{id}/start`.
    #[schema(example = "30m")]
    pub auto_stop: Option<String>,
    pub template: Option<String>,
    pub owner_id: Option<String>,
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    /// Egress: `false` cuts the sandbox off from every address outside its own
    /// network; absent takes `sandboxes.default_internet`.
    pub internet: Option<bool>,
    /// Placement on workers' labels, each `key=value` (the worker's label `key` is
    /// `value`) or `key!=value` (it is not, or the worker has no label `key`); every
    /// one must hold. At most 32.
    #[serde(default)]
    // the example must be met by a worker without labels: schemathesis sends it to a
    // fleet of one such worker, where anything else is a (correct) 503
    #[schema(example = json!(["disk!=hdd"]))]
    pub constraints: Vec<String>,
}

impl CreateRequest {
    /// Checks the request against `settings` for a call with `access`: the sandbox
    /// goes to the caller's team, and belongs to the user the key is bound to (a body
    /// naming another owner is refused), else the body's `owner_id`, else the user the
    /// call names (`X-User-ID`).
    pub fn validate_for(
        mut self,
        settings: &SandboxSettings,
        access: &crate::teams::Access,
    ) -> Result<CreateSandbox, SandboxError> {
        if let Some(bound) = access.bound_user() {
            match self.owner_id.as_deref() {
                Some(owner) if !owner.is_empty() && owner != bound => {
                    return Err(SandboxError::Forbidden(format!(
                        "this API key acts as user {bound:?}; it cannot create sandboxes for {owner:?}"
                    )));
                }
                _ => self.owner_id = Some(bound.to_owned()),
            }
        }
        if self.owner_id.as_deref().is_none_or(str::is_empty) {
            self.owner_id = access.user().map(str::to_owned);
        }
        let mut request = self.validate(settings)?;
        request.team = access.creating_team().to_owned();
        Ok(request)
    }

    /// Checks the request against `settings` and fills in the defaults.
    pub fn validate(self, settings: &SandboxSettings) -> Result<CreateSandbox, SandboxError> {
        let auto_stop = parse_auto_stop(self.auto_stop.as_deref(), settings.limits.max_ttl)?;
        let request = CreateSandbox::validate(
            settings,
            self.image,
            self.provider,
            self.memory_mb,
            self.vcpus,
            self.ttl.as_deref(),
            self.template,
            self.owner_id,
            self.metadata,
            self.internet,
            &self.constraints,
        )?;
        Ok(CreateSandbox {
            auto_stop,
            ..request
        })
    }
}

/// Which sandboxes a prune destroys (`DELETE /api/v1/sandboxes?state=…`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PruneSelection {
    /// Those whose TTL ran out, in any state.
    pub expired: bool,
    /// Those whose worker went away (`lost`).
    pub lost: bool,
    /// Those whose create or destroy failed (`error`).
    pub error: bool,
}

impl PruneSelection {
    pub const EXPIRED: Self = Self {
        expired: true,
        lost: false,
        error: false,
    };
    pub const ALL: Self = Self {
        expired: true,
        lost: true,
        error: true,
    };

    /// A comma list of `expired`, `lost` and `error`; none (or empty): all three.
    pub fn parse(states: Option<&str>) -> Result<Self, SandboxError> {
        let Some(states) = states.map(str::trim).filter(|s| !s.is_empty()) else {
            return Ok(Self::ALL);
        };
        let mut selection = Self {
            expired: false,
            lost: false,
            error: false,
        };
        for state in states.split(',').map(str::trim) {
            match state {
                "expired" => selection.expired = true,
                "lost" => selection.lost = true,
                "error" => selection.error = true,
                other => {
                    return Err(SandboxError::BadRequest(format!(
                        "cannot prune state {other:?}; the states are expired, lost and error"
                    )));
                }
            }
        }
        Ok(selection)
    }
}

/// A create request after validation, defaults filled in.
#[derive(Debug, Clone)]
pub struct CreateSandbox {
    pub image: String,
    /// Empty: any healthy provider.
    pub provider: String,
    pub memory_mb: u64,
    pub vcpus: u32,
    pub ttl: Duration,
    /// Stopped after this long without activity; zero: never.
    pub auto_stop: Duration,
    pub template: String,
    pub owner_id: String,
    pub metadata: BTreeMap<String, String>,
    /// Whether the sandbox may reach addresses outside its own network.
    pub internet: bool,
    /// The team it will belong to: the edge sets it from the caller's access
    /// ([`crate::teams::Access::creating_team`]).
    pub team: String,
    /// Only workers whose labels meet every one.
    pub constraints: Vec<Constraint>,
    /// Only workers in one of these pools (the pools the caller's team may use);
    /// empty: any pool. Never taken from the request body: the edge fills it in from
    /// the caller.
    pub pools: Vec<String>,
    /// What the sandbox starts with, from its template (none without one).
    pub launch: Launch,
}

/// What a sandbox starts with beyond its image and limits: its template's environment
/// and start script.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Launch {
    /// The template's version the sandbox was made from (0: no template).
    pub template_version: i64,
    /// Environment variables of every process in the sandbox.
    pub env: BTreeMap<String, String>,
    /// A shell script run once the sandbox is made; empty: none.
    pub on_start: String,
    /// The team secrets the template names, with their values.
    pub secrets: crate::workers::model::SecretEnv,
    /// Companion containers on the sandbox's network.
    pub services: Vec<crate::workers::model::ServiceSpec>,
    /// The image to build on the worker first (packages, on_create); the spawn then
    /// runs the built image.
    pub build: Option<crate::workers::model::ImageBuild>,
    /// Where commands and sessions start when they name none ("": `/workspace`).
    pub workdir: String,
    /// What an interactive session with no command runs ("": `sh`).
    pub shell: String,
    /// The ports it serves previews on (listed with their preview URLs).
    pub ports: Vec<u16>,
}

impl CreateSandbox {
    /// The memory (MiB) and CPUs the sandbox holds on its worker and in its team's
    /// quota: its container's, and as much again for each companion service (each
    /// runs with the sandbox's limits).
    pub fn footprint(&self) -> (i64, i64) {
        let containers = i64::try_from(self.launch.services.len())
            .unwrap_or(i64::MAX)
            .saturating_add(1);
        (
            i64::try_from(self.memory_mb)
                .unwrap_or(i64::MAX)
                .saturating_mul(containers),
            i64::from(self.vcpus).saturating_mul(containers),
        )
    }

    /// Checks raw request fields against `settings`; absent fields take defaults.
    #[allow(clippy::too_many_arguments)]
    fn validate(
        settings: &SandboxSettings,
        image: Option<String>,
        provider: Option<String>,
        memory_mb: Option<u64>,
        vcpus: Option<u32>,
        ttl: Option<&str>,
        template: Option<String>,
        owner_id: Option<String>,
        metadata: BTreeMap<String, String>,
        internet: Option<bool>,
        constraints: &[String],
    ) -> Result<Self, SandboxError> {
        let bad = |message: String| Err(SandboxError::BadRequest(message));
        let image = image
            .filter(|i| !i.is_empty())
            .unwrap_or_else(|| settings.limits.default_image.clone());
        if image.len() > 256 || image.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return bad(format!("image {image:?} is not a valid image reference"));
        }
        let provider = provider
            .filter(|p| !p.is_empty())
            .unwrap_or_else(|| settings.limits.default_provider.clone());
        if provider.len() > 32 {
            return bad("provider name is too long".into());
        }
        let memory_mb = memory_mb
            .filter(|m| *m > 0)
            .unwrap_or(settings.limits.default_memory_mb);
        if !(16..=settings.limits.max_memory_mb).contains(&memory_mb) {
            return bad(format!(
                "memory_mb must be between 16 and {}",
                settings.limits.max_memory_mb
            ));
        }
        let vcpus = vcpus.filter(|v| *v > 0).unwrap_or(1);
        if vcpus > settings.limits.max_vcpus {
            return bad(format!(
                "vcpus must be between 1 and {}",
                settings.limits.max_vcpus
            ));
        }
        let ttl = match ttl.map(str::trim).filter(|t| !t.is_empty()) {
            None => settings.limits.default_ttl,
            Some(text) => parse_ttl(text, settings.limits.max_ttl)?,
        };
        let owner_id = owner_id.unwrap_or_default();
        if owner_id.len() > 128 {
            return bad("owner_id is longer than 128 characters".into());
        }
        let template = template.unwrap_or_default();
        if template.len() > 128 {
            return bad("template is longer than 128 characters".into());
        }
        if metadata.len() > 64 {
            return bad("metadata has more than 64 entries".into());
        }
        for (key, value) in &metadata {
            if key.is_empty() || key.len() > 128 || value.len() > 1024 {
                return bad(format!(
                    "metadata entry {key:?}: keys are 1-128 characters, values at most 1024"
                ));
            }
        }
        let constraints = Constraint::parse_all(constraints).map_err(SandboxError::BadRequest)?;
        Ok(Self {
            image,
            provider,
            memory_mb,
            vcpus,
            ttl,
            auto_stop: Duration::ZERO,
            template,
            owner_id,
            metadata,
            internet: internet.unwrap_or(settings.limits.default_internet),
            team: crate::teams::DEFAULT_TEAM.to_owned(),
            constraints,
            pools: Vec::new(),
            launch: Launch::default(),
        })
    }
}

/// A Go-style duration (`30m`, `1h30m`) between 1s and `max`.
pub fn parse_ttl(text: &str, max: Duration) -> Result<Duration, SandboxError> {
    let ttl = humantime::parse_duration(text)
        .map_err(|err| SandboxError::BadRequest(format!("invalid ttl {text:?}: {err}")))?;
    if ttl < Duration::from_secs(1) || ttl > max {
        return Err(SandboxError::BadRequest(format!(
            "ttl must be between 1s and {}",
            humantime::format_duration(max)
        )));
    }
    Ok(ttl)
}

/// An auto-stop period (`30m`, `1h`): none, empty or zero is never; otherwise at least
/// 1s and at most `max` (the longest TTL: a sandbox idle for longer has expired).
pub fn parse_auto_stop(text: Option<&str>, max: Duration) -> Result<Duration, SandboxError> {
    let Some(text) = text.map(str::trim).filter(|t| !t.is_empty()) else {
        return Ok(Duration::ZERO);
    };
    let period = humantime::parse_duration(text)
        .map_err(|err| SandboxError::BadRequest(format!("invalid auto_stop {text:?}: {err}")))?;
    if period.is_zero() {
        return Ok(Duration::ZERO);
    }
    if period < Duration::from_secs(1) || period > max {
        return Err(SandboxError::BadRequest(format!(
            "auto_stop must be 0 (never) or between 1s and {}",
            humantime::format_duration(max)
        )));
    }
    Ok(period)
}

/// An exec timeout as either edge receives it: `"30s"`, `"1m30s"`, `30`, `"30"`,
/// `0.5`; null, 0 and "" mean the default.
pub fn parse_timeout(value: Option<&Value>) -> Result<Option<Duration>, SandboxError> {
    let bad = |v: &Value| {
        SandboxError::BadRequest(format!(
            "invalid timeout {v}: expected a duration like \"30s\" or seconds"
        ))
    };
    let duration = match value {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Number(n)) => {
            let secs = n
                .as_f64()
                .filter(|s| s.is_finite() && *s >= 0.0)
                .ok_or_else(|| bad(value.unwrap_or(&Value::Null)))?;
            Duration::try_from_secs_f64(secs).map_err(|_| bad(value.unwrap_or(&Value::Null)))?
        }
        Some(v @ Value::String(text)) => {
            let text = text.trim();
            if text.is_empty() {
                return Ok(None);
            }
            match text.parse::<f64>() {
                // `try_`: seconds past what a Duration holds ("1e300") are refused, not
                // a panic
                Ok(secs) if secs.is_finite() && secs >= 0.0 => {
                    Duration::try_from_secs_f64(secs).map_err(|_| bad(v))?
                }
                Ok(_) => return Err(bad(v)),
                Err(_) => humantime::parse_duration(text).map_err(|_| bad(v))?,
            }
        }
        Some(other) => return Err(bad(other)),
    };
    Ok(Some(duration).filter(|d| !d.is_zero()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prune_states_are_a_comma_list_defaulting_to_all() {
        assert_eq!(PruneSelection::parse(None).unwrap(), PruneSelection::ALL);
        assert_eq!(
            PruneSelection::parse(Some("")).unwrap(),
            PruneSelection::ALL
        );
        assert_eq!(
            PruneSelection::parse(Some("lost, error")).unwrap(),
            PruneSelection {
                expired: false,
                lost: true,
                error: true
            }
        );
        assert_eq!(
            PruneSelection::parse(Some("expired")).unwrap(),
            PruneSelection::EXPIRED
        );
        let err = PruneSelection::parse(Some("expired,running")).unwrap_err();
        assert!(err.to_string().contains("\"running\""), "{err}");
    }

    fn validate(
        memory: Option<u64>,
        vcpus: Option<u32>,
        ttl: Option<&str>,
    ) -> Result<CreateSandbox, SandboxError> {
        CreateSandbox::validate(
            &SandboxSettings::default(),
            None,
            None,
            memory,
            vcpus,
            ttl,
            None,
            None,
            BTreeMap::new(),
            None,
            &[],
        )
    }

    #[test]
    fn constraints_are_parsed_and_pools_never_come_from_the_body() {
        let body: CreateRequest = serde_json::from_value(
            serde_json::json!({"constraints": ["region=eu", "disk!=hdd"], "pools": ["x"]}),
        )
        .unwrap();
        let request = body.validate(&SandboxSettings::default()).unwrap();
        let shown: Vec<String> = request
            .constraints
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(shown, ["region=eu", "disk!=hdd"]);
        assert!(request.pools.is_empty());
        let err = CreateRequest {
            constraints: vec!["region".into()],
            ..Default::default()
        }
        .validate(&SandboxSettings::default())
        .unwrap_err();
        assert!(matches!(err, SandboxError::BadRequest(_)), "{err:?}");
        assert!(err.to_string().contains("\"region\""), "{err}");
        assert!(validate(None, None, None).unwrap().constraints.is_empty());
    }

    #[test]
    fn defaults_follow_stacyvm() {
        let request = validate(None, None, None).unwrap();
        assert_eq!(request.image, "alpine:latest");
        assert_eq!(request.vcpus, 1);
        assert_eq!(request.ttl, Duration::from_secs(1800));
        assert!(
            request.internet,
            "sandboxes reach the internet unless told not to"
        );
    }

    #[test]
    fn egress_follows_the_request_then_the_default() {
        let mut settings = SandboxSettings::default();
        let create = |internet: Option<bool>, settings: &SandboxSettings| {
            CreateRequest {
                internet,
                ..Default::default()
            }
            .validate(settings)
            .unwrap()
            .internet
        };
        assert!(!create(Some(false), &settings));
        settings.limits.default_internet = false;
        assert!(!create(None, &settings));
        assert!(create(Some(true), &settings));
    }

    #[test]
    fn absurd_sizes_and_bad_ttls_are_refused() {
        assert!(validate(Some(10_000_000), None, None).is_err());
        assert!(validate(Some(1), None, None).is_err());
        assert!(validate(None, Some(100_000), None).is_err());
        assert!(validate(None, None, Some("forever")).is_err());
        assert!(validate(None, None, Some("0s")).is_err());
        assert!(validate(None, None, Some("1000h")).is_err());
        assert_eq!(
            validate(None, None, Some("1h30m")).unwrap().ttl,
            Duration::from_secs(5400)
        );
    }

    #[test]
    fn auto_stop_is_never_by_default_and_held_to_the_longest_ttl() {
        let max = Duration::from_secs(24 * 3600);
        for never in [None, Some(""), Some(" "), Some("0s"), Some("0")] {
            assert_eq!(
                parse_auto_stop(never, max).unwrap(),
                Duration::ZERO,
                "{never:?}"
            );
        }
        assert_eq!(
            parse_auto_stop(Some("15m"), max).unwrap(),
            Duration::from_secs(900)
        );
        for bad in ["soon", "-1s", "500ms", "25h"] {
            let err = parse_auto_stop(Some(bad), max).unwrap_err().to_string();
            assert!(err.contains("auto_stop"), "{bad}: {err}");
        }
        // a create takes it from its body
        let request = CreateRequest {
            auto_stop: Some("30m".into()),
            ..CreateRequest::default()
        }
        .validate(&SandboxSettings {
            limits: crate::config::SandboxesConfig::default(),
            ..SandboxSettings::default()
        })
        .unwrap();
        assert_eq!(request.auto_stop, Duration::from_secs(1800));
    }

    #[test]
    fn timeouts_take_durations_and_seconds() {
        use serde_json::json;
        assert_eq!(
            parse_timeout(Some(&json!("30s"))).unwrap(),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            parse_timeout(Some(&json!(5))).unwrap(),
            Some(Duration::from_secs(5))
        );
        assert_eq!(
            parse_timeout(Some(&json!("2.5"))).unwrap(),
            Some(Duration::from_millis(2500))
        );
        assert_eq!(parse_timeout(Some(&json!(0))).unwrap(), None);
        assert_eq!(parse_timeout(None).unwrap(), None);
        assert!(parse_timeout(Some(&json!("soon"))).is_err());
        assert!(parse_timeout(Some(&json!(-1))).is_err());
        assert!(parse_timeout(Some(&json!([1]))).is_err());
    }

    #[test]
    fn timeouts_beyond_a_duration_are_refused_not_a_panic() {
        use serde_json::json;
        for value in [json!("1e300"), json!("1e20"), json!(1e300), json!("inf")] {
            assert!(parse_timeout(Some(&value)).is_err(), "{value}");
        }
    }
}
