//! A template's document as clients write it (YAML or JSON; the API takes JSON, the
//! CLI converts YAML): StacyVM's fields plus the environment a sandbox starts with.
//! Checked here, once, for both the save and the spawn.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::TemplateError;
use crate::sandboxes::{CreateRequest, SandboxSettings};

/// Fields the template does not serialise when they are empty (so documents saved
/// before they existed keep their content hash), or at all (`base` is `image`).
const QUIET_WHEN_EMPTY: &[&str] = &[
    "base",
    "auto_stop",
    "internet",
    "packages",
    "on_create",
    "workdir",
    "shell",
    "ports",
];

/// The most packages a template installs.
const MAX_PACKAGES: usize = 128;

/// The most companion services a template has.
const MAX_SERVICES: usize = 8;

/// The most environment variables a template sets.
const MAX_ENV: usize = 128;
/// The longest value of one.
const MAX_ENV_VALUE: usize = 8 << 10;
/// The longest `on_start` script.
const MAX_SCRIPT: usize = 64 << 10;

/// A template: StacyVM's `{name, image, memory_mb, vcpus, ttl, provider, metadata}`,
/// plus what a sandbox made from it starts with. Empty and zero fields take the
/// control plane's defaults at spawn, as a create's do.
// not `deny_unknown_fields`: the schema would then forbid the view's added fields;
// `parse` refuses unknown ones itself
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TemplateSpec {
    /// 1-63 characters: letters, digits, `.`, `_` and `-`, starting with a letter or
    /// digit.
    #[schema(example = "web")]
    pub name: String,
    /// The image (Podfile: `base`).
    #[serde(default, alias = "base", deserialize_with = "or_default")]
    #[schema(example = "alpine:latest")]
    pub image: String,
    #[serde(default, deserialize_with = "or_default")]
    pub memory_mb: u64,
    #[serde(default, deserialize_with = "or_default")]
    pub vcpus: u32,
    /// A Go-style duration (`30m`); empty: the control plane's default.
    #[serde(default, deserialize_with = "or_default")]
    pub ttl: String,
    /// Stop a sandbox made from it after this long with no exec, file, session or
    /// port traffic (`30m`); empty or `0s`: never. Started again with `berth sandbox
    /// start`, its files kept.
    #[serde(
        default,
        deserialize_with = "or_default",
        skip_serializing_if = "String::is_empty"
    )]
    #[schema(required = false, example = "30m")]
    pub auto_stop: String,
    #[serde(default, deserialize_with = "or_default")]
    pub provider: String,
    #[serde(default, deserialize_with = "or_default")]
    pub metadata: BTreeMap<String, String>,
    /// Environment variables of the sandbox's processes (numbers and booleans are
    /// taken as their text).
    #[serde(default, deserialize_with = "scalar_map")]
    pub env: BTreeMap<String, String>,
    /// Companion containers started on the sandbox's own network before it,
    /// reachable from it by name, and stopped, started and removed with it (docker
    /// workers only).
    #[serde(default, deserialize_with = "or_default")]
    pub services: Vec<ServiceDoc>,
    /// Packages installed into the image by the image's own package manager (apk,
    /// apt-get, dnf, microdnf or yum), named as it spells them. With `on_create`, the
    /// worker builds the image once and reuses it (see `on_create`).
    #[serde(
        default,
        deserialize_with = "or_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    #[schema(required = false)]
    pub packages: Vec<String>,
    /// A shell script run as root when the image is built, after `packages`: the
    /// worker commits the result as an image named by the hash of the base, the
    /// packages and this script, builds it at the first create on that worker and
    /// reuses it after (a change to any of the three builds again).
    #[serde(
        default,
        deserialize_with = "or_default",
        skip_serializing_if = "String::is_empty"
    )]
    #[schema(required = false)]
    pub on_create: String,
    /// A shell script run in the sandbox after it is made, before it is running; a
    /// non-zero exit fails the create.
    #[serde(default, deserialize_with = "or_default")]
    pub on_start: String,
    /// Names of team secrets (`berth secrets set`) the sandbox gets as environment
    /// variables of those names; every one must exist when a sandbox is made.
    #[serde(default, deserialize_with = "or_default")]
    pub secrets: Vec<String>,
    /// Where commands, sessions and `on_start` start when they name no directory (an
    /// absolute path, made at create); empty: `/workspace`.
    #[serde(
        default,
        deserialize_with = "or_default",
        skip_serializing_if = "String::is_empty"
    )]
    #[schema(required = false, example = "/workspace/api")]
    pub workdir: String,
    /// What an interactive session with no command runs (`berth sandbox shell`, SSH):
    /// a program name or absolute path, e.g. `/bin/bash`; empty: `sh`.
    #[serde(
        default,
        deserialize_with = "or_default",
        skip_serializing_if = "String::is_empty"
    )]
    #[schema(required = false, example = "/bin/bash")]
    pub shell: String,
    /// The ports the sandbox serves previews on: listed with their preview URLs by
    /// `GET /api/v1/sandboxes/{id}/ports` (private unless made public).
    #[serde(
        default,
        deserialize_with = "or_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    #[schema(required = false, example = json!([8080]))]
    pub ports: Vec<u16>,
    /// Egress (see the create request); absent: the control plane's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub internet: Option<bool>,
}

/// A companion service (podspawn's `services:` entry).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ServiceDoc {
    /// The name the sandbox reaches it by (a DNS label: `web`, `postgres`).
    #[schema(example = "web")]
    pub name: String,
    #[schema(example = "postgres:16")]
    pub image: String,
    #[serde(default, deserialize_with = "scalar_map")]
    pub env: BTreeMap<String, String>,
    /// Its command: a list (argv) or a string (run by `sh -c`); empty: the image's.
    #[serde(default, deserialize_with = "command")]
    #[schema(value_type = Vec<String>)]
    pub command: Vec<String>,
    /// The ports it listens on, for the record (the sandbox reaches every port).
    #[serde(default, deserialize_with = "or_default")]
    pub ports: Vec<u16>,
}

/// A command as a list, or a string run by the shell.
fn command<'de, D>(deserializer: D) -> Result<Vec<String>, D::Error>
where
    D: Deserializer<'de>,
{
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Command {
        Line(String),
        Argv(Vec<String>),
    }
    Ok(match Option::<Command>::deserialize(deserializer)? {
        None => Vec::new(),
        Some(Command::Line(line)) if line.trim().is_empty() => Vec::new(),
        Some(Command::Line(line)) => vec!["sh".into(), "-c".into(), line],
        Some(Command::Argv(argv)) => argv,
    })
}

/// `null` as the type's default (StacyVM's clients send `"metadata": null`).
fn or_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

/// A map of strings that also takes numbers and booleans (`PORT: 8080` in YAML).
fn scalar_map<'de, D>(deserializer: D) -> Result<BTreeMap<String, String>, D::Error>
where
    D: Deserializer<'de>,
{
    let raw = Option::<BTreeMap<String, Value>>::deserialize(deserializer)?.unwrap_or_default();
    raw.into_iter()
        .map(|(key, value)| match value {
            Value::String(text) => Ok((key, text)),
            Value::Number(n) => Ok((key, n.to_string())),
            Value::Bool(b) => Ok((key, b.to_string())),
            other => Err(serde::de::Error::custom(format!(
                "env {key:?} is {other}; a value is a string, number or boolean"
            ))),
        })
        .collect()
}

impl TemplateSpec {
    /// Reads and checks a document against `settings` (the same limits a create
    /// meets). `name`, when given, is the template's name whatever the document says
    /// (the URL's, or `berth templates apply --name`).
    pub fn parse(
        document: Value,
        name: Option<&str>,
        settings: &SandboxSettings,
    ) -> Result<Self, TemplateError> {
        let Value::Object(mut fields) = document else {
            return Err(TemplateError::Invalid(
                "a template is an object (a mapping in YAML)".into(),
            ));
        };
        if let Some(name) = name {
            fields.insert("name".into(), Value::String(name.to_owned()));
        }
        let spec: Self = serde_json::from_value(Value::Object(fields.clone()))
            .map_err(|err| TemplateError::Invalid(format!("not a template: {err}")))?;
        // what the document holds beyond what the template serialises is unknown
        let known = serde_json::to_value(&spec).unwrap_or_default();
        if let Some(unknown) = fields.keys().find(|field| {
            known.get(field.as_str()).is_none() && !QUIET_WHEN_EMPTY.contains(&field.as_str())
        }) {
            return Err(TemplateError::Invalid(format!(
                "not a template: unknown field `{unknown}`"
            )));
        }
        spec.check(settings)?;
        Ok(spec)
    }

    fn check(&self, settings: &SandboxSettings) -> Result<(), TemplateError> {
        let bad = |message: String| Err(TemplateError::Invalid(message));
        if !valid_name(&self.name) {
            return bad(format!(
                "template name {:?}: 1-63 letters, digits, '.', '_' or '-', starting with a \
                 letter or digit",
                self.name
            ));
        }
        // the fields a create takes are held to a create's limits
        self.as_create()
            .validate(settings)
            .map_err(|err| TemplateError::Invalid(format!("template {:?}: {err}", self.name)))?;
        if self.env.len() > MAX_ENV {
            return bad(format!("env has more than {MAX_ENV} variables"));
        }
        for (key, value) in &self.env {
            if !valid_env_name(key) {
                return bad(format!(
                    "env name {key:?}: letters, digits and '_', not starting with a digit, \
                     at most 128"
                ));
            }
            if value.len() > MAX_ENV_VALUE || value.contains('\0') {
                return bad(format!(
                    "env {key:?}: a value is at most {MAX_ENV_VALUE} bytes, without NUL"
                ));
            }
        }
        if self.secrets.len() > crate::secrets::MAX_PER_TEMPLATE {
            return bad(format!(
                "secrets names more than {} secrets",
                crate::secrets::MAX_PER_TEMPLATE
            ));
        }
        for name in &self.secrets {
            if !crate::secrets::valid_name(name) {
                return Err(TemplateError::Invalid(
                    crate::secrets::SecretError::BadName(name.clone()).to_string(),
                ));
            }
            if self.env.contains_key(name) {
                return bad(format!(
                    "{name:?} is both an env variable and a secret; keep one"
                ));
            }
        }
        if self.services.len() > MAX_SERVICES {
            return bad(format!("a template has at most {MAX_SERVICES} services"));
        }
        let mut names = std::collections::HashSet::new();
        for service in &self.services {
            let name = &service.name;
            if !valid_service_name(name) {
                return bad(format!(
                    "service name {name:?}: 1-63 lowercase letters, digits and '-', starting \
                     with a letter (it is a host name in the sandbox)"
                ));
            }
            if !names.insert(name.as_str()) {
                return bad(format!("two services are named {name:?}"));
            }
            let image = &service.image;
            if image.is_empty()
                || image.len() > 256
                || image.chars().any(|c| c.is_whitespace() || c.is_control())
            {
                return bad(format!(
                    "service {name:?}: image {image:?} is not an image reference"
                ));
            }
            if service.env.len() > MAX_ENV
                || service
                    .env
                    .iter()
                    .any(|(k, v)| !valid_env_name(k) || v.len() > MAX_ENV_VALUE || v.contains('\0'))
            {
                return bad(format!(
                    "service {name:?}: env names are letters, digits and '_'; at most \
                     {MAX_ENV} of at most {MAX_ENV_VALUE} bytes"
                ));
            }
            if service.command.len() > 256
                || service.command.iter().map(String::len).sum::<usize>() > MAX_SCRIPT
                || service.command.iter().any(|a| a.contains('\0'))
            {
                return bad(format!(
                    "service {name:?}: a command is at most {MAX_SCRIPT} bytes"
                ));
            }
            if service.ports.len() > 64 || service.ports.contains(&0) {
                return bad(format!("service {name:?}: ports are 1-65535, at most 64"));
            }
        }
        if self.on_start.len() > MAX_SCRIPT || self.on_start.contains('\0') {
            return bad(format!(
                "on_start is at most {MAX_SCRIPT} bytes, without NUL"
            ));
        }
        if self.on_create.len() > MAX_SCRIPT || self.on_create.contains('\0') {
            return bad(format!(
                "on_create is at most {MAX_SCRIPT} bytes, without NUL"
            ));
        }
        if !self.workdir.is_empty()
            && (!self.workdir.starts_with('/')
                || self.workdir.len() > 4096
                || self.workdir.contains(['\0', '\n'])
                || self.workdir.split('/').any(|part| part == ".."))
        {
            return bad(format!(
                "workdir {:?}: an absolute path without `..`, at most 4096 bytes",
                self.workdir
            ));
        }
        if !self.shell.is_empty()
            && (self.shell.len() > 256
                || self
                    .shell
                    .chars()
                    .any(|c| c.is_whitespace() || c.is_control())
                || self
                    .shell
                    .contains(['\'', '"', '$', '`', ';', '&', '|', '<', '>']))
        {
            return bad(format!(
                "shell {:?}: a program name or absolute path (e.g. /bin/bash), without \
                 spaces or shell syntax",
                self.shell
            ));
        }
        if self.ports.len() > 64 || self.ports.contains(&0) {
            return bad("ports are 1-65535, at most 64".to_owned());
        }
        if self.packages.len() > MAX_PACKAGES {
            return bad(format!(
                "a template installs at most {MAX_PACKAGES} packages"
            ));
        }
        if let Some(package) = self.packages.iter().find(|p| !valid_package(p)) {
            return bad(format!(
                "package {package:?}: letters, digits and + - . _ : = ~ @ /, starting with a \
                 letter or digit"
            ));
        }
        Ok(())
    }

    /// The image a worker builds for this template on `base`, if it installs packages
    /// or has an `on_create`.
    pub fn build(&self, base: &str) -> Option<crate::workers::model::ImageBuild> {
        (!self.packages.is_empty() || !self.on_create.is_empty()).then(|| {
            crate::workers::model::ImageBuild {
                base: base.to_owned(),
                packages: self.packages.clone(),
                on_create: self.on_create.clone(),
            }
        })
    }

    /// The create fields this template sets, as a create request naming them would.
    pub fn as_create(&self) -> CreateRequest {
        let text = |s: &str| Some(s.to_owned()).filter(|s| !s.is_empty());
        CreateRequest {
            image: text(&self.image),
            provider: text(&self.provider),
            memory_mb: Some(self.memory_mb).filter(|m| *m > 0),
            vcpus: Some(self.vcpus).filter(|v| *v > 0),
            ttl: text(&self.ttl),
            auto_stop: text(&self.auto_stop),
            template: Some(self.name.clone()),
            metadata: self.metadata.clone(),
            internet: self.internet,
            ..CreateRequest::default()
        }
    }

    /// SHA-256 (hex) of the document's canonical JSON (maps are sorted): equal for
    /// equal content, so saving it again is no new version.
    pub fn content_hash(&self) -> String {
        let canonical = serde_json::to_vec(self).unwrap_or_default();
        hex::encode(Sha256::digest(&canonical))
    }
}

pub fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && name.len() <= 63
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

/// A package name as package managers spell them, and nothing a shell would read
/// (the worker checks it again).
fn valid_package(name: &str) -> bool {
    name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.len() <= 200
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "+-._:=~@/".contains(c))
}

fn valid_service_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && name.len() <= 63
        && !name.ends_with('-')
        && name != "localhost"
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

fn valid_env_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && name.len() <= 128
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use serde_json::json;

    use super::*;
    use crate::config::SandboxesConfig;

    fn settings() -> SandboxSettings {
        SandboxSettings {
            limits: SandboxesConfig::default(),
            heartbeat_grace: Duration::from_secs(30),
            ..SandboxSettings::default()
        }
    }

    #[test]
    fn a_podfile_base_is_the_image_and_scalars_are_env_text() {
        let spec = TemplateSpec::parse(
            json!({"name": "api", "base": "ubuntu:24.04", "env": {"PORT": 8080, "DEBUG": true, "A": "b"},
                   "on_start": "echo ready\n"}),
            None,
            &settings(),
        )
        .unwrap();
        assert_eq!(spec.image, "ubuntu:24.04");
        assert_eq!(spec.env["PORT"], "8080");
        assert_eq!(spec.env["DEBUG"], "true");
        assert_eq!(spec.on_start, "echo ready\n");
    }

    #[test]
    fn stacyvm_nulls_are_defaults_and_the_url_name_wins() {
        let spec = TemplateSpec::parse(
            json!({"name": "x", "image": "alpine:latest", "memory_mb": 256, "vcpus": 1, "ttl": "30m",
                   "provider": "", "metadata": null}),
            Some("y"),
            &settings(),
        )
        .unwrap();
        assert_eq!(spec.name, "y");
        assert!(spec.metadata.is_empty());
    }

    #[test]
    fn unknown_fields_are_refused_by_name_and_empty_known_ones_are_not() {
        let err = TemplateSpec::parse(json!({"name": "x", "on_star": "x"}), None, &settings())
            .unwrap_err();
        assert!(err.to_string().contains("on_star"), "{err}");
        // null or empty is as good as absent, for fields left out when empty too
        for (field, empty) in [
            ("ports", json!(null)),
            ("ports", json!([])),
            ("packages", json!([])),
            ("on_create", json!("")),
            ("workdir", json!(null)),
            ("shell", json!("")),
        ] {
            let mut document = json!({"name": "x"});
            document[field] = empty;
            TemplateSpec::parse(document.clone(), None, &settings())
                .unwrap_or_else(|err| panic!("{document}: {err}"));
        }
        let spec = TemplateSpec::parse(
            json!({"name": "x", "ports": [3000, 8080]}),
            None,
            &settings(),
        )
        .unwrap();
        assert_eq!(spec.ports, [3000, 8080]);
    }

    #[test]
    fn create_limits_names_and_env_are_checked() {
        for (document, needle) in [
            (json!({"name": "x", "memory_mb": 1}), "memory_mb"),
            (json!({"name": "x", "ttl": "forever"}), "ttl"),
            (json!({"name": "-x"}), "template name"),
            (json!({"name": "a/b"}), "template name"),
            (json!({"name": "x", "env": {"1A": "b"}}), "env name"),
            (
                json!({"name": "x", "env": {"A": [1]}}),
                "string, number or boolean",
            ),
            (json!(["x"]), "an object"),
            (json!({"name": "x", "secrets": ["1A"]}), "secret name"),
            (
                json!({"name": "x", "services": [{"name": "Web", "image": "i"}]}),
                "service name",
            ),
            (
                json!({"name": "x", "services": [{"name": "db", "image": "i"}, {"name": "db", "image": "j"}]}),
                "two services",
            ),
            (
                json!({"name": "x", "services": [{"name": "db", "image": ""}]}),
                "image",
            ),
            (
                json!({"name": "x", "services": [{"name": "db", "image": "i", "volumes": []}]}),
                "volumes",
            ),
            (
                json!({"name": "x", "env": {"A": "1"}, "secrets": ["A"]}),
                "both an env",
            ),
            (json!({"name": "x", "packages": ["git; reboot"]}), "package"),
            (json!({"name": "x", "workdir": "src"}), "absolute path"),
            (json!({"name": "x", "ports": [0]}), "ports are"),
            (json!({"name": "x", "ports": [70000]}), "not a template"),
            (
                json!({"name": "x", "workdir": "/a/../etc"}),
                "absolute path",
            ),
            (json!({"name": "x", "shell": "bash -l"}), "shell"),
            (json!({"name": "x", "shell": "$(id)"}), "shell"),
            (json!({"name": "x", "packages": ["-y"]}), "package"),
            (json!({"name": "x", "packages": "git"}), "not a template"),
        ] {
            let err = TemplateSpec::parse(document.clone(), None, &settings()).unwrap_err();
            assert!(err.to_string().contains(needle), "{document}: {err}");
        }
    }

    #[test]
    fn a_service_command_is_argv_or_a_shell_line() {
        let spec = TemplateSpec::parse(
            json!({"name": "x", "services": [
                {"name": "web", "image": "busybox", "command": "httpd -f -p 8080", "ports": [8080]},
                {"name": "db", "image": "postgres:16", "command": ["postgres", "-c", "fsync=off"],
                 "env": {"POSTGRES_PASSWORD": "dev", "PGPORT": 5432}}]}),
            None,
            &settings(),
        )
        .unwrap();
        assert_eq!(spec.services[0].command, ["sh", "-c", "httpd -f -p 8080"]);
        assert_eq!(spec.services[1].command, ["postgres", "-c", "fsync=off"]);
        assert_eq!(spec.services[1].env["PGPORT"], "5432");
    }

    #[test]
    fn packages_or_on_create_make_a_build_and_leave_older_hashes_alone() {
        let plain = TemplateSpec::parse(json!({"name": "x", "image": "alpine"}), None, &settings())
            .unwrap();
        assert_eq!(plain.build("alpine"), None);
        // absent build fields do not serialise: a template saved before they existed
        // keeps its content hash
        assert!(!serde_json::to_string(&plain).unwrap().contains("packages"));
        let built = TemplateSpec::parse(
            json!({"name": "x", "packages": ["git", "nodejs@22"], "on_create": "make\n"}),
            None,
            &settings(),
        )
        .unwrap();
        let build = built.build("ubuntu:24.04").unwrap();
        assert_eq!(build.base, "ubuntu:24.04");
        assert_eq!(build.packages, ["git", "nodejs@22"]);
        assert_eq!(build.on_create, "make\n");
        assert_ne!(plain.content_hash(), built.content_hash());
    }

    #[test]
    fn the_content_hash_follows_content_only() {
        let one = TemplateSpec::parse(
            json!({"name": "x", "env": {"A": "1", "B": "2"}}),
            None,
            &settings(),
        )
        .unwrap();
        let same = TemplateSpec::parse(
            json!({"env": {"B": "2", "A": 1}, "name": "x"}),
            None,
            &settings(),
        )
        .unwrap();
        let other = TemplateSpec::parse(json!({"name": "x", "env": {"A": "1"}}), None, &settings())
            .unwrap();
        assert_eq!(one.content_hash(), same.content_hash());
        assert_ne!(one.content_hash(), other.content_hash());
    }
}
