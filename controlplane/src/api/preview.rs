//! Preview URLs: `http(s)://{port}-{sandbox_id}.{preview_domain}` reaches TCP port
//! `{port}` inside the sandbox through the control plane and a port stream to the
//! worker holding its lease; nothing is published on any host. Requests are told
//! apart from API calls by their `Host` (on the API listener, and on `preview_listen`,
//! which serves nothing else).
//!
//! Private by default: a request passes with one of
//! - a preview cookie (`berth_preview`, HttpOnly, scoped to that host) that a signed
//!   preview link set on its first use (`?berth_preview_token=…`, answered with a
//!   redirect to the same URL without it);
//! - an API key that sees the sandbox (`X-API-Key` or `Authorization: Bearer`, exec
//!   scope), which is then not passed on;
//! - or a port made public (`PUT /api/v1/sandboxes/{id}/ports/{port}`).
//!
//! What passes is forwarded as HTTP/1.1 (whatever the client spoke: HTTP/1.1 or
//! HTTP/2), streamed both ways; a WebSocket (or any) upgrade becomes a byte stream
//! both ways. A sandbox that does not exist is a 404 page, a port nothing listens on a
//! 502 page, a refused request a 401 page: an answer, never a hang.

mod access;
mod pages;
mod proxy;

use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, Uri, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use berth_pki::TokenSigner;

use super::ApiState;
use crate::clock::now_secs;
use crate::error::ApiError;

/// The query parameter a preview link carries its token in.
pub const LINK_PARAMETER: &str = "berth_preview_token";
/// The cookie a link's first use sets.
pub const COOKIE: &str = "berth_preview";
/// A link's lifetime when the caller names none.
pub const DEFAULT_LINK_TTL: Duration = Duration::from_secs(3600);
/// The longest a link may live.
pub const MAX_LINK_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

/// The preview domain and the signer of preview links.
#[derive(Debug, Clone)]
pub struct Previews {
    /// As configured (may carry a port); empty: previews are off.
    domain: String,
    /// Its host part, lowercase.
    host: Option<String>,
    signer: TokenSigner,
    /// Links are `http` rather than `https`.
    plain_text: bool,
}

/// Where a preview request goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub port: u16,
    pub sandbox_id: String,
}

/// A signed preview link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreviewLink {
    pub url: String,
    pub expires_at: i64,
}

impl Previews {
    pub fn new(domain: &str, signer: TokenSigner, plain_text: bool) -> Self {
        Self {
            domain: domain.to_owned(),
            host: domain_host(domain),
            signer,
            plain_text,
        }
    }

    /// The domain sandboxes show as `preview_domain` (empty: previews are off).
    pub fn domain(&self) -> &str {
        &self.domain
    }

    /// The preview target a `Host` names, if it is a preview host.
    pub fn target(&self, host: &str) -> Option<Target> {
        let domain = self.host.as_deref()?;
        let host = host.trim().to_ascii_lowercase();
        let host = strip_port(&host);
        let label = host.strip_suffix(domain)?.strip_suffix('.')?;
        if label.contains('.') {
            return None;
        }
        let (port, sandbox_id) = label.split_once('-')?;
        let port = port.parse::<u16>().ok().filter(|port| *port != 0)?;
        if sandbox_id.is_empty() {
            return None;
        }
        Some(Target {
            port,
            sandbox_id: sandbox_id.to_owned(),
        })
    }

    /// The preview URL of `port` of `sandbox_id` (without credentials).
    pub fn url(&self, sandbox_id: &str, port: u16) -> Result<String, ApiError> {
        if self.host.is_none() {
            return Err(ApiError::bad_request(
                "previews are off on this control plane: start it with --preview-domain",
            ));
        }
        let scheme = if self.plain_text { "http" } else { "https" };
        Ok(format!("{scheme}://{port}-{sandbox_id}.{}/", self.domain))
    }

    /// A signed link to `port` of `sandbox_id`, valid for `ttl`.
    pub fn link(
        &self,
        sandbox_id: &str,
        port: u16,
        ttl: Duration,
    ) -> Result<PreviewLink, ApiError> {
        if ttl.is_zero() || ttl > MAX_LINK_TTL {
            return Err(ApiError::bad_request(format!(
                "a preview link's ttl must be more than 0s and at most {}",
                humantime::format_duration(MAX_LINK_TTL)
            )));
        }
        let url = self.url(sandbox_id, port)?;
        let (token, claims) = self
            .signer
            .create_preview_token(sandbox_id, port, ttl)
            .map_err(|err| ApiError::internal(&format!("cannot sign a preview link: {err}")))?;
        Ok(PreviewLink {
            url: format!("{url}?{LINK_PARAMETER}={token}"),
            expires_at: claims.exp,
        })
    }

    /// Whether `token` lets its bearer reach `target` now; when it does, the second
    /// of its expiry.
    fn admits(&self, token: &str, target: &Target) -> Result<i64, String> {
        let claims = self
            .signer
            .verify_preview_token(token, now_secs(), 5)
            .map_err(|err| err.to_string())?;
        if claims.sub != target.sandbox_id || claims.port != target.port {
            return Err("the link is for another sandbox or port".into());
        }
        Ok(claims.exp)
    }
}

/// Checks a configured preview domain: a DNS name, optionally with a port.
pub fn check_domain(domain: &str) -> Result<(), String> {
    if domain.is_empty() {
        return Ok(());
    }
    let Some(host) = domain_host(domain) else {
        return Err(format!(
            "{domain:?} is not a DNS name (with an optional :port)"
        ));
    };
    let valid_label = |label: &str| {
        !label.is_empty()
            && label.len() <= 63
            && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            && !label.starts_with('-')
            && !label.ends_with('-')
    };
    if !host.split('.').all(valid_label) {
        return Err(format!(
            "{domain:?} is not a DNS name (with an optional :port)"
        ));
    }
    if let Some((_, port)) = domain.rsplit_once(':')
        && port.parse::<u16>().ok().filter(|port| *port != 0).is_none()
    {
        return Err(format!("{domain:?} has a port that is not one"));
    }
    Ok(())
}

/// The host part of a preview domain, lowercase; `None` for an empty one.
pub fn domain_host(domain: &str) -> Option<String> {
    let host = strip_port(domain.trim()).trim_end_matches('.');
    (!host.is_empty()).then(|| host.to_ascii_lowercase())
}

fn strip_port(host: &str) -> &str {
    match host.rsplit_once(':') {
        Some((name, port)) if port.chars().all(|c| c.is_ascii_digit()) => name,
        _ => host,
    }
}

/// The host a request is for: `Host` (HTTP/1.1), else the URI's authority (HTTP/2).
fn request_host(request: &Request) -> Option<String> {
    request
        .headers()
        .get(header::HOST)
        .and_then(|host| host.to_str().ok())
        .map(str::to_owned)
        .or_else(|| request.uri().authority().map(|a| a.as_str().to_owned()))
}

/// On the API listener: a preview host's requests go to the sandbox, every other
/// request on to the API.
pub async fn route_by_host(
    State(state): State<ApiState>,
    request: Request,
    next: Next,
) -> Response {
    let target = request_host(&request).and_then(|host| state.previews.target(&host));
    match target {
        Some(target) => serve(&state, target, request).await,
        None => next.run(request).await,
    }
}

/// `preview_listen`'s router: previews only.
pub fn router(state: ApiState) -> Router {
    Router::new().fallback(only_previews).with_state(state)
}

async fn only_previews(State(state): State<ApiState>, request: Request) -> Response {
    match request_host(&request).and_then(|host| state.previews.target(&host)) {
        Some(target) => serve(&state, target, request).await,
        None => pages::page(
            StatusCode::NOT_FOUND,
            "Not a preview address",
            &format!(
                "This listener serves preview URLs only: http(s)://PORT-SANDBOX.{}/",
                state.previews.domain()
            ),
        ),
    }
}

/// One preview request: a link's first use, or a request that may pass, forwarded.
async fn serve(state: &ApiState, target: Target, mut request: Request) -> Response {
    if let Some((token, rest)) = take_link_token(request.uri()) {
        return match state.previews.admits(&token, &target) {
            Ok(expires_at) => set_cookie_and_redirect(&token, expires_at, &rest, state),
            Err(why) => pages::page(
                StatusCode::UNAUTHORIZED,
                "This preview link does not open this page",
                &format!("{why}. Ask for a new one: berth sandbox preview-url SANDBOX PORT"),
            ),
        };
    }
    let access = match access::admit(state, &target, request.headers_mut()).await {
        Ok(access) => access,
        Err(refusal) => return refusal,
    };
    let connection = match state
        .sandboxes
        .open_port(&access, &target.sandbox_id, u32::from(target.port))
        .await
    {
        Ok(connection) => connection,
        Err(err) => return pages::for_error(&target, ApiError::from(err)),
    };
    let forwarded_proto = if state.previews.plain_text {
        "http"
    } else {
        "https"
    };
    proxy::forward(connection.io, request, forwarded_proto).await
}

/// A link's token and the URI's path and query without it.
fn take_link_token(uri: &Uri) -> Option<(String, String)> {
    let query = uri.query()?;
    let mut token = None;
    let mut kept = Vec::new();
    for pair in query.split('&') {
        match pair.split_once('=') {
            Some((LINK_PARAMETER, value)) => token = Some(value.to_owned()),
            _ => kept.push(pair),
        }
    }
    let token = token?;
    let path = uri.path();
    let rest = if kept.is_empty() {
        path.to_owned()
    } else {
        format!("{path}?{}", kept.join("&"))
    };
    Some((token, rest))
}

fn set_cookie_and_redirect(
    token: &str,
    expires_at: i64,
    location: &str,
    state: &ApiState,
) -> Response {
    let max_age = (expires_at - now_secs()).max(0);
    let secure = if state.previews.plain_text {
        ""
    } else {
        "; Secure"
    };
    let cookie =
        format!("{COOKIE}={token}; Path=/; Max-Age={max_age}; HttpOnly; SameSite=Lax{secure}");
    let mut response = StatusCode::SEE_OTHER.into_response();
    let headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        headers.insert(header::SET_COOKIE, value);
    }
    let location = HeaderValue::from_str(location).unwrap_or(HeaderValue::from_static("/"));
    headers.insert(header::LOCATION, location);
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn previews(domain: &str) -> Previews {
        Previews::new(domain, TokenSigner::generate("berth-test").unwrap(), true)
    }

    #[test]
    fn a_preview_host_names_a_port_and_a_sandbox() {
        let previews = previews("preview.localhost:8080");
        let target = previews
            .target("8000-sbx-0123456789abcdef.preview.localhost:8080")
            .unwrap();
        assert_eq!(target.port, 8000);
        assert_eq!(target.sandbox_id, "sbx-0123456789abcdef");
        // case and the port do not matter; other hosts are not previews
        assert!(previews.target("80-SBX-1.Preview.Localhost").is_some());
        assert!(previews.target("127.0.0.1:8080").is_none());
        assert!(previews.target("preview.localhost").is_none());
        assert!(previews.target("a.8000-sbx-1.preview.localhost").is_none());
        assert!(previews.target("0-sbx-1.preview.localhost").is_none());
        assert!(previews.target("99999-sbx-1.preview.localhost").is_none());
        assert!(previews.target("8000-.preview.localhost").is_none());
        assert!(
            previews
                .target("8000-sbx-1.evilpreview.localhost")
                .is_none()
        );
        assert!(
            Previews::new("", TokenSigner::generate("t").unwrap(), true)
                .target("8000-sbx-1.preview.localhost")
                .is_none()
        );
    }

    #[test]
    fn links_carry_a_token_for_their_sandbox_and_port_only() {
        let previews = previews("preview.localhost:8080");
        let link = previews
            .link("sbx-1", 8000, Duration::from_secs(60))
            .unwrap();
        assert!(
            link.url
                .starts_with("http://8000-sbx-1.preview.localhost:8080/?berth_preview_token=")
        );
        let uri: Uri = link.url.parse().unwrap();
        let (token, rest) = take_link_token(&uri).unwrap();
        assert_eq!(rest, "/");
        let target = |port, id: &str| Target {
            port,
            sandbox_id: id.to_owned(),
        };
        assert!(previews.admits(&token, &target(8000, "sbx-1")).is_ok());
        assert!(previews.admits(&token, &target(8001, "sbx-1")).is_err());
        assert!(previews.admits(&token, &target(8000, "sbx-2")).is_err());
        assert!(previews.link("sbx-1", 8000, Duration::ZERO).is_err());
        assert!(previews.link("sbx-1", 8000, MAX_LINK_TTL * 2).is_err());
    }

    #[test]
    fn the_link_parameter_is_taken_out_of_the_query() {
        let uri: Uri = "/a/b?x=1&berth_preview_token=t0k&y=2".parse().unwrap();
        assert_eq!(
            take_link_token(&uri),
            Some(("t0k".to_owned(), "/a/b?x=1&y=2".to_owned()))
        );
        assert_eq!(take_link_token(&"/a?x=1".parse().unwrap()), None);
    }

    #[test]
    fn preview_domains_are_dns_names_with_an_optional_port() {
        assert!(check_domain("").is_ok());
        assert!(check_domain("preview.example.com").is_ok());
        assert!(check_domain("preview.localhost:8080").is_ok());
        assert!(check_domain("https://preview.example.com").is_err());
        assert!(check_domain("preview.example.com:0").is_err());
        assert!(check_domain("pre view.example.com").is_err());
        assert_eq!(
            domain_host("Preview.Example.com:80").as_deref(),
            Some("preview.example.com")
        );
    }
}
