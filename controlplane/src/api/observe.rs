//! Request metrics for every call on the API port: a counter by route and status
//! code and a latency histogram by route. Routes are templates (`/api/v1/sandboxes/{id}`)
//! or our own gRPC methods, so label values stay few whatever clients send.

use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;

use super::ApiState;
use crate::metrics::{RequestLabels, RouteLabels};

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
    let template = request
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    ("http", template)
}

pub async fn observe(State(state): State<ApiState>, request: Request, next: Next) -> Response {
    let (protocol, route) = route(&request);
    let started = Instant::now();
    let response = next.run(request).await;
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
