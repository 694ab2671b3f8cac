//! Entry points for the fuzz targets in `fuzz/` (not an API: hidden from the docs and
//! free to change). They reach the parsers that read a client's request input without
//! a running server: the HTTP extractors the handlers use, the request bodies and
//! query strings of the routes, and what the handlers do with them before any state
//! is touched.

use axum::body::Body;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::header;
use serde::de::DeserializeOwned;

use crate::api::http::{JsonBody, Query};
use crate::error::ApiError;

pub use crate::api::http::audit::{AuditQuery, since_ms};
pub use crate::api::http::exec::{ExecBody, LogsQuery, Utf8Carry, output_line};
pub use crate::api::http::files::{
    ChmodBody, GlobQuery, MoveBody, PathQuery, WriteBody, decode_content, parse_mode, required,
};
pub use crate::api::http::parse_optional_duration;
pub use crate::api::http::sandboxes::ExtendBody;
pub use crate::api::http::schemas::ExecStream;
pub use crate::api::http::teams::{AddUserBody, CreateTeamBody, UpdateTeamBody, parse_max_ttl};
pub use crate::api::http::tokens::CreateTokenBody;
pub use crate::api::http::workers::DrainBody;
pub use crate::sandboxes::{
    CreateRequest, CreateSandbox, ExecCall, SandboxError, SandboxSettings, parse_timeout,
    parse_ttl, rfc3339,
};
pub use crate::templates::TemplateSpec;

/// A template document as `POST /api/v1/templates` reads it (JSON), checked.
pub fn template_document(
    body: &[u8],
    settings: &SandboxSettings,
) -> Result<TemplateSpec, ApiError> {
    let document = serde_json::from_slice(body)
        .map_err(|err| ApiError::bad_request(format!("the body is not JSON: {err}")))?;
    Ok(TemplateSpec::parse(document, None, settings)?)
}

/// `body` through the JSON extractor the handlers use ([`JsonBody`]), as a request
/// with `content-type: application/json` brings it.
pub fn json_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let request = Request::builder()
        .method("POST")
        .uri("/")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_vec()))
        .map_err(|err| ApiError::bad_request(err.to_string()))?;
    let JsonBody(value) = futures::executor::block_on(JsonBody::<T>::from_request(request, &()))?;
    Ok(value)
}

/// `query` (what follows `?`) through the query extractor the handlers use
/// ([`Query`]). A query the HTTP layer could not carry in a URI is an error here too.
pub fn query<T: DeserializeOwned>(query: &str) -> Result<T, ApiError> {
    let request = Request::builder()
        .uri(format!("/api/v1/sandboxes/sb/files?{query}"))
        .body(())
        .map_err(|err| ApiError::bad_request(err.to_string()))?;
    let (mut parts, ()) = request.into_parts();
    let Query(value) =
        futures::executor::block_on(Query::<T>::from_request_parts(&mut parts, &()))?;
    Ok(value)
}
