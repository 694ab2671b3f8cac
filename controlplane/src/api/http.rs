//! The HTTP/JSON API under `/api/v1`: routes, the caller extractor, request ids and the
//! `{"code","message"}` error body, which every extractor's rejection answers too (the
//! handlers take [`JsonBody`], [`Query`] and [`Path`] from here, not axum's).

pub(crate) mod audit;
pub(crate) mod exec;
mod exec_ws;
pub(crate) mod files;
mod health;
mod images;
pub(crate) mod keys;
mod ndjson;
pub mod openapi;
mod ports;
mod providers;
mod quotas;
mod routes;
pub(crate) mod sandboxes;
pub(crate) mod schemas;
mod secrets;
pub(crate) mod sessions;
mod ssh;
mod status;
pub(crate) mod teams;
mod templates;
pub(crate) mod tokens;
pub(crate) mod workers;

use axum::extract::{FromRequestParts, Request};
use axum::http::{HeaderValue, Method, header, request::Parts};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::MethodRouter;
use axum::{Json, Router};

pub use routes::route_list;
pub use tokens::parse_optional_duration;

use super::auth::authorize;
use super::{ApiState, AuditSlot};
use crate::api_keys::{Caller, Scope};
use crate::error::ApiError;
use crate::teams::Access;

pub fn router(state: ApiState) -> Router {
    // the methods of one path in one method router, so that a method the path does
    // not take gets our error body (axum keeps the `Allow` header)
    let mut paths: Vec<(&'static str, MethodRouter<ApiState>)> = Vec::new();
    for route in routes::routes() {
        match paths.iter_mut().find(|(path, _)| *path == route.path) {
            Some((_, methods)) => *methods = std::mem::take(methods).merge(route.handler),
            None => paths.push((route.path, route.handler)),
        }
    }
    paths
        .into_iter()
        .fold(Router::new(), |router, (path, methods)| {
            router.route(path, methods.fallback(method_not_allowed))
        })
        .with_state(state)
}

/// Anything no route matched. A gRPC call (to a service this port does not serve)
/// is answered the gRPC way: `UNIMPLEMENTED` in the `grpc-status` header.
pub async fn not_found(request: Request) -> Response {
    let grpc = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"));
    if grpc {
        let path = request.uri().path();
        return tonic::Status::unimplemented(format!("no gRPC service answers {path}")).into_http();
    }
    ApiError::not_found("no such route").into_response()
}

/// A method the path does not take (axum adds the `Allow` header).
async fn method_not_allowed(method: Method) -> ApiError {
    ApiError::new(
        crate::error::ErrorCode::MethodNotAllowed,
        format!("this path does not take {method}"),
    )
}

tokio::task_local! {
    /// The id of the request being answered, for error bodies.
    static REQUEST_ID_IN_FLIGHT: String;
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let retry_after = self.retry_after_secs();
        let body = schemas::ErrorBody {
            code: self.code.as_str(),
            message: self.message,
            request_id: REQUEST_ID_IN_FLIGHT.try_with(Clone::clone).ok(),
            sandbox_id: self.sandbox_id,
        };
        let mut response = (self.code.http_status(), Json(body)).into_response();
        if let Some(secs) = retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

const REQUEST_ID: &str = "x-request-id";

/// Echoes `X-Request-ID`, or makes one, and keeps it in the request's span.
pub async fn request_id(mut request: Request, next: Next) -> Response {
    let id = request
        .headers()
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128)
        .map(str::to_owned)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let value = HeaderValue::from_str(&id).unwrap_or_else(|_| HeaderValue::from_static("-"));
    request.headers_mut().insert(REQUEST_ID, value.clone());
    let span = tracing::info_span!("http", request_id = %id, method = %request.method(), path = %request.uri().path());
    let handled = REQUEST_ID_IN_FLIGHT.scope(id, next.run(request));
    let mut response = tracing::Instrument::instrument(handled, span).await;
    response.headers_mut().insert(REQUEST_ID, value);
    response
}

/// An authenticated caller with at least scope `S`, and what its call may touch.
pub struct Authorized<S: RequiredScope> {
    pub caller: Caller,
    pub access: Access,
    scope: std::marker::PhantomData<S>,
}

pub trait RequiredScope: Send + Sync + 'static {
    const SCOPE: Scope;
    /// Only a cluster admin key (the admin scope, no team) may call.
    const CLUSTER_ADMIN: bool = false;
}

pub struct ReadScope;
impl RequiredScope for ReadScope {
    const SCOPE: Scope = Scope::Read;
}

pub struct WriteScope;
impl RequiredScope for WriteScope {
    const SCOPE: Scope = Scope::Write;
}

pub struct ExecScope;
impl RequiredScope for ExecScope {
    const SCOPE: Scope = Scope::Exec;
}

/// The fleet's own operations: workers, join tokens, the audit log, teams.
pub struct AdminScope;
impl RequiredScope for AdminScope {
    const SCOPE: Scope = Scope::Admin;
    const CLUSTER_ADMIN: bool = true;
}

/// A team's administration (its keys and users): a cluster admin, or the team's admin.
pub struct TeamAdminScope;
impl RequiredScope for TeamAdminScope {
    const SCOPE: Scope = Scope::Admin;
}

impl<S: RequiredScope> FromRequestParts<ApiState> for Authorized<S> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &ApiState) -> Result<Self, ApiError> {
        let header = |name: &str| parts.headers.get(name).and_then(|v| v.to_str().ok());
        let slot = parts.extensions.get::<AuditSlot>();
        let mut granted = authorize(state, header, S::SCOPE, slot).await?;
        if S::CLUSTER_ADMIN {
            granted = granted.cluster_admin()?;
        }
        Ok(Self {
            caller: granted.caller,
            access: granted.access,
            scope: std::marker::PhantomData,
        })
    }
}

/// A JSON body whose rejection is our `{"code","message"}` error.
pub struct JsonBody<T>(pub T);

impl<T, S> axum::extract::FromRequest<S> for JsonBody<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        let Json(value) = Json::<T>::from_request(request, state)
            .await
            .map_err(|rejection| ApiError::bad_request(rejection.body_text()))?;
        Ok(Self(value))
    }
}

/// A query string whose rejection (`?lines=abc`) is our `{"code","message"}` error.
pub struct Query<T>(pub T);

impl<T, S> FromRequestParts<S> for Query<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let axum::extract::Query(value) =
            axum::extract::Query::<T>::from_request_parts(parts, state)
                .await
                .map_err(|rejection| ApiError::bad_request(rejection.body_text()))?;
        Ok(Self(value))
    }
}

/// Path parameters whose rejection is our `{"code","message"}` error.
pub struct Path<T>(pub T);

impl<T, S> FromRequestParts<S> for Path<T>
where
    T: serde::de::DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let axum::extract::Path(value) = axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map_err(|rejection| ApiError::bad_request(rejection.body_text()))?;
        Ok(Self(value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    struct Lines {
        #[allow(dead_code)]
        lines: Option<u32>,
    }

    #[test]
    fn a_retry_hint_is_answered_as_retry_after() {
        let refusal = ApiError::new(crate::error::ErrorCode::ResourceLimit, "slow down")
            .with_retry_after(std::time::Duration::from_secs(3));
        let response = refusal.into_response();
        assert_eq!(response.status(), 429);
        assert_eq!(response.headers()[header::RETRY_AFTER], "3");
        let plain = ApiError::not_found("no").into_response();
        assert!(!plain.headers().contains_key(header::RETRY_AFTER));
    }

    #[tokio::test]
    async fn a_bad_query_string_answers_the_json_error_body() {
        let request = axum::http::Request::builder()
            .uri("/api/v1/sandboxes/sb/logs?lines=abc")
            .body(())
            .unwrap();
        let (mut parts, ()) = request.into_parts();
        let Err(rejected) = Query::<Lines>::from_request_parts(&mut parts, &()).await else {
            panic!("lines=abc was accepted");
        };
        let response = rejected.into_response();
        assert_eq!(response.status(), 400);
        assert_eq!(
            response.headers()[axum::http::header::CONTENT_TYPE],
            "application/json"
        );
        let body = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .unwrap();
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["code"], "BAD_REQUEST");
        assert!(
            body["message"].as_str().unwrap().contains("lines"),
            "{body}"
        );
    }
}
