//! Request metrics and the request span for every call on the API port: a counter by
//! route and status code and a latency histogram by route. Routes are templates
//! (`/api/v1/sandboxes/{id}`) or our own gRPC methods, so label values stay few
//! whatever clients send. The span (`api_request`) names the route and, once known,
//! the `sandbox_id` and the `worker_id` that holds it, so every log line of the call
//! from here inward carries them.

use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument;

use super::ApiState;
use crate::metrics::{RequestLabels, RouteLabels};

/// The standard gRPC services served beside Berth's own, counted by service.
const STANDARD_GRPC: [&str; 3] = [
    "/grpc.health.v1.Health",
    "/grpc.reflection.v1.ServerReflection",
    "/grpc.reflection.v1alpha.ServerReflection",
];

fn route(request: &Request) -> (&'static str, String) {
    let path = request.uri().path();
    if let Some(method) = path
        .strip_prefix("/berth.v1.Sandboxes/")
        .or_else(|| path.strip_prefix("/berth.v1.Admin/"))
    {
        if method.len() <= 32 && method.bytes().all(|b| b.is_ascii_alphabetic()) {
            return ("grpc", path.to_owned());
        }
        return ("grpc", "unmatched".to_owned());
    }
    if let Some(service) = STANDARD_GRPC.iter().find(|service| {
        path.strip_prefix(**service)
            .is_some_and(|m| m.starts_with('/'))
    }) {
        return ("grpc", (*service).to_owned());
    }
    let template = request
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    ("http", template)
}

/// The span field and value of the `{id}` in the request's path: a sandbox route's
/// (`/api/v1/sandboxes/{id}/…`) names a sandbox, a worker route's a worker.
fn path_id<'a>(template: &str, path: &'a str) -> Option<(&'static str, &'a str)> {
    let field = if template.starts_with("/api/v1/sandboxes/") {
        "sandbox_id"
    } else if template.starts_with("/api/v1/workers/") {
        "worker_id"
    } else {
        return None;
    };
    let mut actual = path.split('/');
    for segment in template.split('/') {
        let value = actual.next()?;
        if segment == "{id}" {
            return Some((field, value));
        }
    }
    None
}

/// Names the sandbox a call is about on the current request span (the gRPC edge,
/// whose sandbox id is in the message rather than the path).
pub fn note_sandbox(sandbox_id: &str) {
    tracing::Span::current().record("sandbox_id", sandbox_id);
}

pub async fn observe(State(state): State<ApiState>, request: Request, next: Next) -> Response {
    let (protocol, route) = route(&request);
    let span = tracing::info_span!(
        "api_request",
        protocol,
        route = %route,
        sandbox_id = tracing::field::Empty,
        worker_id = tracing::field::Empty,
    );
    if let Some((field, id)) = path_id(&route, request.uri().path()) {
        span.record(field, id);
    }
    let started = Instant::now();
    let response = next.run(request).instrument(span).await;
    let code = if protocol == "grpc" {
        // errors answered at once carry grpc-status in the head; the rest succeed or
        // report in trailers, counted here as 0
        response
            .headers()
            .get("grpc-status")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("0")
            .to_owned()
    } else {
        response.status().as_u16().to_string()
    };
    let metrics = state.fleet.metrics();
    metrics
        .requests
        .get_or_create(&RequestLabels {
            protocol: protocol.to_owned(),
            route: route.clone(),
            code,
        })
        .inc();
    metrics
        .request_duration
        .get_or_create(&RouteLabels {
            protocol: protocol.to_owned(),
            route,
        })
        .observe(started.elapsed().as_secs_f64());
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_come_from_the_route_template() {
        assert_eq!(
            path_id("/api/v1/sandboxes/{id}/exec", "/api/v1/sandboxes/sb-1/exec"),
            Some(("sandbox_id", "sb-1"))
        );
        assert_eq!(
            path_id("/api/v1/sandboxes/{id}", "/api/v1/sandboxes/sb-2"),
            Some(("sandbox_id", "sb-2"))
        );
        assert_eq!(path_id("/api/v1/sandboxes", "/api/v1/sandboxes"), None);
        assert_eq!(
            path_id("/api/v1/workers/{id}/drain", "/api/v1/workers/w1/drain"),
            Some(("worker_id", "w1"))
        );
        assert_eq!(path_id("unmatched", "/x/y"), None);
    }
}
