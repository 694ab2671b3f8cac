//! The pages a preview URL answers with when it cannot show the sandbox's own: small
//! HTML a browser shows and a script can read (the API's error code is in the
//! `x-berth-error-code` header).

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::Target;
use crate::error::{ApiError, ErrorCode};

/// The page for a failed port open.
pub fn for_error(target: &Target, err: ApiError) -> Response {
    let (status, title) = match err.code {
        ErrorCode::NotFound => (StatusCode::NOT_FOUND, "No such sandbox"),
        ErrorCode::BadGateway => (StatusCode::BAD_GATEWAY, "Nothing is listening on this port"),
        ErrorCode::Conflict => (StatusCode::BAD_GATEWAY, "The sandbox is not running"),
        ErrorCode::Unavailable | ErrorCode::Timeout => (
            StatusCode::SERVICE_UNAVAILABLE,
            "The sandbox cannot be reached",
        ),
        ErrorCode::BadRequest => (StatusCode::BAD_REQUEST, "Bad preview address"),
        ErrorCode::Unauthorized | ErrorCode::Forbidden => {
            (StatusCode::UNAUTHORIZED, "This preview is private")
        }
        _ => (StatusCode::BAD_GATEWAY, "The preview failed"),
    };
    let detail = format!(
        "Port {} of sandbox {}: {}",
        target.port, target.sandbox_id, err.message
    );
    let mut response = page(status, title, &detail);
    if let Ok(code) = HeaderValue::from_str(err.code.as_str()) {
        response.headers_mut().insert("x-berth-error-code", code);
    }
    response
}

/// A page with `title` and `detail`.
pub fn page(status: StatusCode, title: &str, detail: &str) -> Response {
    let body = format!(
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>{title}</title></head>\n\
         <body><h1>{status} {title}</h1>\n<p>{}</p>\n<p><small>berth preview</small></p></body></html>\n",
        escape(detail),
        status = status.as_u16(),
        title = escape(title),
    );
    let mut response = (status, body).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_become_pages_with_their_status_and_code() {
        let target = Target {
            port: 8000,
            sandbox_id: "sbx-1".into(),
        };
        let missing = for_error(&target, ApiError::not_found("sandbox \"sbx-1\" not found"));
        assert_eq!(missing.status(), StatusCode::NOT_FOUND);
        assert_eq!(missing.headers()["x-berth-error-code"], "NOT_FOUND");
        let closed = for_error(&target, ApiError::new(ErrorCode::BadGateway, "refused"));
        assert_eq!(closed.status(), StatusCode::BAD_GATEWAY);
        assert_eq!(escape("<b>&"), "&lt;b&gt;&amp;");
    }
}
