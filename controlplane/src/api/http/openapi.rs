//! The OpenAPI 3.1 description of the HTTP API, derived from the handlers' annotations
//! and the types they answer with, served at `GET /api/v1/openapi.json` (no key).

use std::sync::LazyLock;

use axum::http::header;
use axum::response::IntoResponse;
use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::path::Operation;
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, Ref, RefOr, ResponseBuilder};
use utoipa::{Modify, OpenApi};

use super::{
    audit, exec, exec_ws, files, health, images, keys, ports, providers, quotas, sandboxes,
    secrets, sessions, ssh, status, teams, templates, tokens, workers,
};
use crate::error::ErrorCode;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Berth",
        description = "The Berth control plane's HTTP API (StacyVM-compatible). Keys go in \
            `X-API-Key`, `X-Admin-API-Key` or `Authorization: Bearer`; every error answers \
            `{\"code\",\"message\"}`."
    ),
    paths(
        serve,
        health::health,
        health::live,
        health::ready,
        providers::list,
        providers::test,
        providers::get,
        workers::list,
        workers::get,
        workers::remove,
        workers::revoke,
        workers::cordon,
        workers::drain,
        workers::undrain,
        workers::uncordon,
        tokens::create,
        keys::create,
        keys::list,
        keys::get,
        keys::revoke,
        teams::create,
        teams::list,
        teams::get,
        teams::update,
        teams::delete,
        teams::add_user,
        teams::users,
        teams::remove_user,
        secrets::list,
        secrets::set,
        secrets::delete,
        templates::list,
        templates::save,
        templates::get,
        templates::put,
        templates::delete,
        templates::spawn,
        templates::prebuild,
        images::push,
        quotas::summary,
        quotas::pool_status,
        status::metrics,
        status::status,
        audit::list,
        audit::verify,
        sandboxes::create,
        sandboxes::list,
        sandboxes::prune,
        sandboxes::admission,
        sandboxes::get,
        sandboxes::destroy,
        sandboxes::extend,
        sandboxes::stop,
        sandboxes::start,
        sandboxes::events,
        exec::exec,
        exec::logs,
        exec_ws::exec_ws,
        sessions::list,
        sessions::get,
        sessions::kill,
        ports::tunnel,
        ports::link,
        ports::list,
        ports::update,
        ssh::token,
        ssh::list,
        ssh::add,
        ssh::remove,
        files::write_json,
        files::upload,
        files::read,
        files::delete,
        files::list,
        files::stat,
        files::glob,
        files::move_file,
        files::chmod,
    ),
    modifiers(&Conventions),
)]
pub struct ApiDoc;

/// What every operation shares, added once here rather than on each handler: the key
/// schemes, 401/403 (and 429 for a key over its rate limit) on the operations that take
/// a key, and the error body for 500 and any status not listed (`default`).
struct Conventions;

const ERROR_BODY: &str = "ErrorBody";

impl Modify for Conventions {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "X-API-Key",
                "An API key (`X-Admin-API-Key` is accepted too)",
            ))),
        );
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("An API key as a bearer token"))
                    .build(),
            ),
        );
        if let Some(RefOr::T(Schema::Object(body))) = components.schemas.get_mut(ERROR_BODY) {
            let codes = ErrorCode::ALL.iter().map(|code| code.as_str());
            body.properties.insert(
                "code".to_owned(),
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .enum_values(Some(codes))
                    .description(Some("A machine-readable code"))
                    .into(),
            );
        }
        for item in openapi.paths.paths.values_mut() {
            for operation in [
                &mut item.get,
                &mut item.post,
                &mut item.put,
                &mut item.patch,
                &mut item.delete,
            ]
            .into_iter()
            .flatten()
            {
                add_error_responses(operation);
            }
        }
    }
}

fn error_response(description: &str) -> RefOr<utoipa::openapi::Response> {
    ResponseBuilder::new()
        .description(description)
        .content(
            "application/json",
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name(ERROR_BODY)))
                .build(),
        )
        .into()
}

fn add_error_responses(operation: &mut Operation) {
    let keyed = operation
        .security
        .as_ref()
        .is_some_and(|schemes| !schemes.is_empty());
    let mut errors = vec![("500", "An internal error"), ("default", "Any other error")];
    if keyed {
        errors.push(("401", "No API key, or an unknown, expired or revoked one"));
        errors.push(("403", "The key lacks the scope this call needs"));
    }
    for (status, description) in errors {
        operation
            .responses
            .responses
            .entry(status.to_owned())
            .or_insert_with(|| error_response(description));
    }
    if keyed {
        operation
            .responses
            .responses
            .entry("429".to_owned())
            .or_insert_with(rate_limited_response);
    }
}

/// 429 for a key over its rate limit (`api.key_rate_limit`), with `Retry-After`.
fn rate_limited_response() -> RefOr<utoipa::openapi::Response> {
    let retry_after = HeaderBuilder::new()
        .schema(ObjectBuilder::new().schema_type(Type::Integer))
        .description(Some("Whole seconds until the key may call again"))
        .build();
    ResponseBuilder::new()
        .description("The key is over its rate limit (when one is configured)")
        .header("Retry-After", retry_after)
        .content(
            "application/json",
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name(ERROR_BODY)))
                .build(),
        )
        .into()
}

static DOCUMENT: LazyLock<String> = LazyLock::new(|| {
    ApiDoc::openapi()
        .to_pretty_json()
        .expect("the OpenAPI description serializes")
});

/// This description (no key needed).
#[utoipa::path(get, path = "/api/v1/openapi.json", tag = "health", responses(
    (status = 200, description = "The OpenAPI description", body = Object),
))]
pub async fn serve() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/json")],
        DOCUMENT.as_str(),
    )
}
