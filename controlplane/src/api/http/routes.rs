//! The HTTP routes as one table: the router is built from it and the route list
//! ([`route_list`]) is read from it, so the OpenAPI description can be checked against
//! exactly what is served.

use axum::extract::DefaultBodyLimit;
use axum::handler::Handler;
use axum::http::Method;
use axum::routing::{MethodFilter, MethodRouter, on};

use super::{
    audit, exec, exec_ws, files, health, images, keys, openapi, ports, providers, quotas,
    sandboxes, secrets, sessions, ssh, status, teams, templates, tokens, workers,
};
use crate::api::ApiState;

/// The JSON file write carries its content inline; larger files go through PUT.
const MAX_JSON_FILE_BODY: usize = 64 << 20;

/// One method on one path and the handler that answers it.
pub struct Route {
    pub method: Method,
    pub path: &'static str,
    pub handler: MethodRouter<ApiState>,
}

fn at<H, T>(method: Method, path: &'static str, handler: H) -> Route
where
    H: Handler<T, ApiState>,
    T: 'static,
{
    let filter = MethodFilter::try_from(method.clone()).expect("a method axum routes on");
    Route {
        method,
        path,
        handler: on(filter, handler),
    }
}

impl Route {
    fn body_limit(mut self, limit: DefaultBodyLimit) -> Self {
        self.handler = self.handler.layer(limit);
        self
    }
}

/// Every HTTP route the public API port serves.
pub fn routes() -> Vec<Route> {
    use Method as M;
    vec![
        at(M::GET, "/api/v1/openapi.json", openapi::serve),
        at(M::GET, "/api/v1/health", health::health),
        at(M::GET, "/api/v1/live", health::live),
        at(M::GET, "/api/v1/ready", health::ready),
        at(M::GET, "/api/v1/providers", providers::list),
        at(M::POST, "/api/v1/providers/test", providers::test),
        at(M::GET, "/api/v1/providers/{name}", providers::get),
        at(M::GET, "/api/v1/workers", workers::list),
        at(M::GET, "/api/v1/workers/{id}", workers::get),
        at(M::DELETE, "/api/v1/workers/{id}", workers::remove),
        at(M::POST, "/api/v1/workers/{id}/revoke", workers::revoke),
        at(M::POST, "/api/v1/workers/{id}/cordon", workers::cordon),
        at(M::POST, "/api/v1/workers/{id}/drain", workers::drain),
        at(M::POST, "/api/v1/workers/{id}/undrain", workers::undrain),
        at(M::POST, "/api/v1/workers/{id}/uncordon", workers::uncordon),
        at(M::POST, "/api/v1/tokens", tokens::create),
        at(M::POST, "/api/v1/keys", keys::create),
        at(M::GET, "/api/v1/keys", keys::list),
        at(M::GET, "/api/v1/keys/{id}", keys::get),
        at(M::DELETE, "/api/v1/keys/{id}", keys::revoke),
        at(M::GET, "/api/v1/ssh-keys", ssh::list),
        at(M::POST, "/api/v1/ssh-keys", ssh::add),
        at(M::DELETE, "/api/v1/ssh-keys/{id}", ssh::remove),
        at(M::POST, "/api/v1/teams", teams::create),
        at(M::GET, "/api/v1/teams", teams::list),
        at(M::GET, "/api/v1/teams/{name}", teams::get),
        at(M::PATCH, "/api/v1/teams/{name}", teams::update),
        at(M::DELETE, "/api/v1/teams/{name}", teams::delete),
        at(M::POST, "/api/v1/teams/{name}/users", teams::add_user),
        at(M::GET, "/api/v1/teams/{name}/users", teams::users),
        at(
            M::DELETE,
            "/api/v1/teams/{name}/users/{user}",
            teams::remove_user,
        ),
        at(M::GET, "/api/v1/secrets", secrets::list),
        at(M::PUT, "/api/v1/secrets/{name}", secrets::set),
        at(M::DELETE, "/api/v1/secrets/{name}", secrets::delete),
        at(M::GET, "/api/v1/templates", templates::list),
        at(M::POST, "/api/v1/templates", templates::save),
        at(M::GET, "/api/v1/templates/{name}", templates::get),
        at(M::PUT, "/api/v1/templates/{name}", templates::put),
        at(M::DELETE, "/api/v1/templates/{name}", templates::delete),
        at(M::POST, "/api/v1/templates/{name}/spawn", templates::spawn),
        at(
            M::POST,
            "/api/v1/templates/{name}/prebuild",
            templates::prebuild,
        ),
        // the archive streams through to the workers, bounded by the push itself
        at(M::POST, "/api/v1/images/push", images::push).body_limit(DefaultBodyLimit::disable()),
        at(M::GET, "/api/v1/quotas/summary", quotas::summary),
        at(M::GET, "/api/v1/pool/status", quotas::pool_status),
        at(M::GET, "/metrics", status::metrics),
        at(M::GET, "/api/v1/status", status::status),
        at(M::GET, "/api/v1/audit", audit::list),
        at(M::GET, "/api/v1/audit/verify", audit::verify),
        at(M::POST, "/api/v1/sandboxes", sandboxes::create),
        at(M::GET, "/api/v1/sandboxes", sandboxes::list),
        at(M::DELETE, "/api/v1/sandboxes", sandboxes::prune),
        at(M::POST, "/api/v1/sandboxes/admission", sandboxes::admission),
        at(M::GET, "/api/v1/sandboxes/{id}", sandboxes::get),
        at(M::DELETE, "/api/v1/sandboxes/{id}", sandboxes::destroy),
        at(M::POST, "/api/v1/sandboxes/{id}/extend", sandboxes::extend),
        at(M::POST, "/api/v1/sandboxes/{id}/stop", sandboxes::stop),
        at(M::POST, "/api/v1/sandboxes/{id}/start", sandboxes::start),
        at(M::GET, "/api/v1/sandboxes/{id}/events", sandboxes::events),
        at(M::POST, "/api/v1/sandboxes/{id}/exec", exec::exec),
        at(M::GET, "/api/v1/sandboxes/{id}/exec/ws", exec_ws::exec_ws),
        at(M::GET, "/api/v1/sandboxes/{id}/logs", exec::logs),
        at(M::GET, "/api/v1/sandboxes/{id}/sessions", sessions::list),
        at(
            M::GET,
            "/api/v1/sandboxes/{id}/sessions/{session_id}",
            sessions::get,
        ),
        at(
            M::DELETE,
            "/api/v1/sandboxes/{id}/sessions/{session_id}",
            sessions::kill,
        ),
        at(M::GET, "/api/v1/sandboxes/{id}/ports", ports::list),
        at(M::PUT, "/api/v1/sandboxes/{id}/ports/{port}", ports::update),
        at(
            M::GET,
            "/api/v1/sandboxes/{id}/ports/{port}/ws",
            ports::tunnel,
        ),
        at(
            M::POST,
            "/api/v1/sandboxes/{id}/ports/{port}/link",
            ports::link,
        ),
        at(M::POST, "/api/v1/sandboxes/{id}/ssh-token", ssh::token),
        at(M::POST, "/api/v1/sandboxes/{id}/files", files::write_json)
            .body_limit(DefaultBodyLimit::max(MAX_JSON_FILE_BODY)),
        at(M::PUT, "/api/v1/sandboxes/{id}/files", files::upload)
            .body_limit(DefaultBodyLimit::disable()),
        at(M::GET, "/api/v1/sandboxes/{id}/files", files::read),
        at(M::DELETE, "/api/v1/sandboxes/{id}/files", files::delete),
        at(M::GET, "/api/v1/sandboxes/{id}/files/list", files::list),
        at(M::GET, "/api/v1/sandboxes/{id}/files/stat", files::stat),
        at(M::GET, "/api/v1/sandboxes/{id}/files/glob", files::glob),
        at(
            M::POST,
            "/api/v1/sandboxes/{id}/files/move",
            files::move_file,
        ),
        at(M::POST, "/api/v1/sandboxes/{id}/files/chmod", files::chmod),
    ]
}

/// `(method, path)` of every route, in the table's order.
pub fn route_list() -> Vec<(Method, &'static str)> {
    routes()
        .into_iter()
        .map(|route| (route.method, route.path))
        .collect()
}
