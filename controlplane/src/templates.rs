//! Templates: a team's named, versioned environments (`/api/v1/templates`, `berth
//! templates`). A create naming one takes its image, resources, TTL, provider and
//! metadata where the request leaves them out, and starts with its `env` and
//! `on_start`. A template belongs to the team a call creates in; another team's is not
//! found, like one that does not exist.

mod document;

use serde::Serialize;
use serde_json::Value;

pub use document::{ServiceDoc, TemplateSpec, valid_name};

use crate::clock::now_secs;
use crate::sandboxes::{
    CreateRequest, CreateSandbox, Launch, SandboxError, SandboxSettings, rfc3339,
};
use crate::secrets::{SecretError, Secrets};
use crate::store::{Store, StoreError, TemplateRow, TemplateSave};
use crate::teams::Access;

#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    #[error("{0}")]
    Invalid(String),
    /// Asked for by name (`/api/v1/templates/{name}`).
    #[error("template {name:?} not found in team {team:?}")]
    NotFound { name: String, team: String },
    /// Named by a create: the request is what is wrong.
    #[error(
        "template {name:?} not found in team {team:?} (`berth templates list` shows the \
         team's templates)"
    )]
    UnknownInCreate { name: String, team: String },
    /// A create named a template and another image than it sets.
    #[error(
        "template {name:?} sets image {template_image:?}; a create naming it cannot ask for {asked:?}"
    )]
    ImageConflict {
        name: String,
        template_image: String,
        asked: String,
    },
    #[error(transparent)]
    Sandbox(#[from] SandboxError),
    #[error(transparent)]
    Secret(#[from] SecretError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A template as the API shows it: its document, and its version.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct TemplateView {
    #[serde(flatten)]
    pub spec: TemplateSpec,
    /// The team it belongs to.
    pub team_id: String,
    /// 1 when made; one more for each change of content.
    pub version: i64,
    /// SHA-256 of the document's canonical JSON.
    pub content_hash: String,
    pub created_at: String,
    pub updated_at: String,
}

impl TemplateView {
    fn from_row(row: TemplateRow) -> Result<Self, TemplateError> {
        let spec = read_spec(&row)?;
        Ok(Self {
            spec,
            team_id: row.team_id,
            version: row.version,
            content_hash: row.content_hash,
            created_at: rfc3339(row.created_at),
            updated_at: rfc3339(row.updated_at),
        })
    }
}

fn read_spec(row: &TemplateRow) -> Result<TemplateSpec, TemplateError> {
    // written by `save` only, so a row that does not read back is a damaged store
    serde_json::from_str(&row.spec).map_err(|err| {
        TemplateError::Store(StoreError::Database(sqlx::Error::Decode(Box::new(err))))
    })
}

/// Whether a save made, changed or kept the template.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Saved {
    Created,
    Updated,
    Unchanged,
}

/// Saves `document` as a template of the team `access` creates in: new, a new
/// version when its content changed, or untouched when it did not.
pub async fn save(
    store: &Store,
    settings: &SandboxSettings,
    access: &Access,
    document: Value,
    name: Option<&str>,
) -> Result<(Saved, TemplateView), TemplateError> {
    let spec = TemplateSpec::parse(document, name, settings)?;
    let json = serde_json::to_string(&spec).unwrap_or_default();
    let saved = store
        .save_template(
            access.creating_team(),
            &spec.name,
            &spec.content_hash(),
            &json,
            now_secs(),
        )
        .await?;
    let (how, row) = match saved {
        TemplateSave::Created(row) => (Saved::Created, row),
        TemplateSave::Updated(row) => (Saved::Updated, row),
        TemplateSave::Unchanged(row) => (Saved::Unchanged, row),
    };
    Ok((how, TemplateView::from_row(row)?))
}

pub async fn get(
    store: &Store,
    access: &Access,
    name: &str,
) -> Result<TemplateView, TemplateError> {
    let team = access.creating_team();
    let row = store
        .get_template(team, name)
        .await?
        .ok_or_else(|| TemplateError::NotFound {
            name: name.to_owned(),
            team: team.to_owned(),
        })?;
    TemplateView::from_row(row)
}

pub async fn list(store: &Store, access: &Access) -> Result<Vec<TemplateView>, TemplateError> {
    store
        .list_templates(access.creating_team())
        .await?
        .into_iter()
        .map(TemplateView::from_row)
        .collect()
}

pub async fn delete(store: &Store, access: &Access, name: &str) -> Result<(), TemplateError> {
    let team = access.creating_team();
    if store.delete_template(team, name).await? {
        Ok(())
    } else {
        Err(TemplateError::NotFound {
            name: name.to_owned(),
            team: team.to_owned(),
        })
    }
}

/// A create request with its template (if it names one) applied: the template fills
/// what the request leaves out (its metadata under the request's), and its `env` and
/// `on_start` come back as the sandbox's [`Launch`]. The image is the template's:
/// a request may repeat it or send the default image (StacyVM's SDK always sends
/// `alpine:latest`), but not ask for another.
pub async fn resolve(
    store: &Store,
    secrets: &Secrets,
    settings: &SandboxSettings,
    access: &Access,
    mut request: CreateRequest,
) -> Result<(CreateRequest, Launch), TemplateError> {
    let Some(name) = request.template.clone().filter(|t| !t.is_empty()) else {
        return Ok((request, Launch::default()));
    };
    let team = access.creating_team();
    let row =
        store
            .get_template(team, &name)
            .await?
            .ok_or_else(|| TemplateError::UnknownInCreate {
                name: name.clone(),
                team: team.to_owned(),
            })?;
    let spec = read_spec(&row)?;
    let from = spec.as_create();
    if let Some(template_image) = &from.image {
        match request.image.as_deref().filter(|i| !i.is_empty()) {
            None => {}
            Some(asked) if asked == template_image || asked == settings.limits.default_image => {}
            Some(asked) => {
                return Err(TemplateError::ImageConflict {
                    name,
                    template_image: template_image.clone(),
                    asked: asked.to_owned(),
                });
            }
        }
        request.image = from.image;
    }
    let empty = |s: &Option<String>| s.as_deref().is_none_or(str::is_empty);
    if empty(&request.provider) {
        request.provider = from.provider;
    }
    if empty(&request.ttl) {
        request.ttl = from.ttl;
    }
    if empty(&request.auto_stop) {
        request.auto_stop = from.auto_stop;
    }
    if request.memory_mb.is_none_or(|m| m == 0) {
        request.memory_mb = from.memory_mb;
    }
    if request.vcpus.is_none_or(|v| v == 0) {
        request.vcpus = from.vcpus;
    }
    if request.internet.is_none() {
        request.internet = from.internet;
    }
    let mut metadata = from.metadata;
    metadata.append(&mut request.metadata);
    request.metadata = metadata;
    let secrets = secrets.reveal(team, &spec.secrets).await?;
    // the base is the create's final image, filled in by `create_request`
    let build = spec.build("");
    Ok((
        request,
        Launch {
            template_version: row.version,
            env: spec.env,
            on_start: spec.on_start,
            secrets,
            services: spec
                .services
                .into_iter()
                .map(|service| crate::workers::model::ServiceSpec {
                    name: service.name,
                    image: service.image,
                    env: service.env,
                    command: service.command,
                    ports: service.ports,
                })
                .collect(),
            build,
            workdir: spec.workdir,
            shell: spec.shell,
            ports: spec.ports,
        },
    ))
}

/// A create request as both API edges receive it, its template applied and checked
/// for a call with `access` ([`CreateRequest::validate_for`]).
pub async fn create_request(
    store: &Store,
    secrets: &Secrets,
    settings: &SandboxSettings,
    access: &Access,
    body: CreateRequest,
) -> Result<CreateSandbox, TemplateError> {
    let (body, launch) = resolve(store, secrets, settings, access, body).await?;
    let mut request = body.validate_for(settings, access)?;
    request.launch = launch;
    if let Some(build) = &mut request.launch.build {
        build.base.clone_from(&request.image);
    }
    Ok(request)
}

/// Builds template `name`'s image on the workers a create of the team could land on
/// (of `only` among them, when given); each worker's progress as it comes. A template
/// without `packages` or `on_create` has nothing to build.
pub async fn prebuild(
    store: &Store,
    sandboxes: &crate::sandboxes::Sandboxes,
    access: &Access,
    name: &str,
    only: &[String],
) -> Result<
    impl futures::Stream<Item = crate::sandboxes::PrebuildEvent> + Send + use<>,
    TemplateError,
> {
    let template = get(store, access, name).await?;
    let spec = template.spec;
    let base = if spec.image.is_empty() {
        sandboxes.settings().limits.default_image.clone()
    } else {
        spec.image.clone()
    };
    let build = spec.build(&base).ok_or_else(|| {
        TemplateError::Invalid(format!(
            "template {name:?} has no packages or on_create: its sandboxes run {base:?} as it is, \
             and there is nothing to build"
        ))
    })?;
    Ok(sandboxes
        .prebuild(access.creating_team(), &spec.provider, build, only)
        .await?)
}

/// The `on_start` a sandbox made from `template` (in `team`) runs when it is started
/// again: its template's as the template is now; none when it has no template or the
/// template was deleted.
pub async fn on_start_of(
    store: &Store,
    team: &str,
    template: &str,
) -> Result<String, TemplateError> {
    if template.is_empty() {
        return Ok(String::new());
    }
    match store.get_template(team, template).await? {
        Some(row) => Ok(read_spec(&row)?.on_start),
        None => Ok(String::new()),
    }
}
