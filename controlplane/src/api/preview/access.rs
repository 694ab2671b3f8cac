//! Who may pass a preview URL: the holder of a link's cookie, a caller with an API key
//! that sees the sandbox, or anyone for a public port. The credentials that let a
//! request in are taken off it before it reaches the sandbox: the server inside never
//! sees a Berth key or preview token.

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;

use super::{COOKIE, Target, pages};
use crate::api::ApiState;
use crate::api::auth::{authorize, presented_key};
use crate::api_keys::Scope;
use crate::teams::Access;

/// The access the request's port stream is opened with, or the page refusing it.
pub async fn admit(
    state: &ApiState,
    target: &Target,
    headers: &mut HeaderMap,
) -> Result<Access, Response> {
    let cookies = preview_cookies(headers);
    if !cookies.is_empty() {
        strip_cookie(headers);
        // a link opens its own sandbox's port only: that is the whole of its access
        if cookies
            .iter()
            .any(|token| state.previews.admits(token, target).is_ok())
        {
            return Ok(Access::everything());
        }
    }
    let key_answer = {
        let header = |name: &str| headers.get(name).and_then(|value| value.to_str().ok());
        if presented_key(&header).is_some() {
            Some(authorize(state, header, Scope::Exec, None).await)
        } else {
            None
        }
    };
    let key_problem = match key_answer {
        Some(Ok(granted)) => {
            // the key let the request in: it goes no further
            for name in ["x-api-key", "x-admin-api-key", "authorization"] {
                headers.remove(name);
            }
            return Ok(granted.access);
        }
        // a key that is not ours may be the application's own: the port may be public
        Some(Err(err)) => Some(err.message),
        None => None,
    };
    match state
        .store
        .port_is_public(&target.sandbox_id, target.port)
        .await
    {
        Ok(true) => Ok(Access::everything()),
        Ok(false) => Err(refusal(key_problem)),
        Err(err) => Err(pages::for_error(target, err.into())),
    }
}

fn refusal(key_problem: Option<String>) -> Response {
    let mut detail = String::from(
        "This preview is private. Open it through a preview link (berth sandbox preview-url \
         SANDBOX PORT), send an API key that sees the sandbox, or make the port public.",
    );
    if let Some(problem) = key_problem {
        detail.push_str(&format!(" The API key sent was refused: {problem}."));
    }
    pages::page(StatusCode::UNAUTHORIZED, "This preview is private", &detail)
}

/// The values of every `berth_preview` cookie the request carries.
fn preview_cookies(headers: &HeaderMap) -> Vec<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .filter(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.to_owned())
        .collect()
}

/// Takes the `berth_preview` cookies out of the `Cookie` headers, keeping the rest.
fn strip_cookie(headers: &mut HeaderMap) {
    let kept: Vec<String> = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .map(str::trim)
        .filter(|pair| !pair.is_empty())
        .filter(|pair| pair.split_once('=').is_none_or(|(name, _)| name != COOKIE))
        .map(str::to_owned)
        .collect();
    headers.remove(header::COOKIE);
    if !kept.is_empty()
        && let Ok(value) = HeaderValue::from_str(&kept.join("; "))
    {
        headers.insert(header::COOKIE, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_preview_cookie_is_read_and_taken_out_and_the_others_stay() {
        let mut headers = HeaderMap::new();
        headers.append(
            header::COOKIE,
            HeaderValue::from_static("app=1; berth_preview=tok1"),
        );
        headers.append(
            header::COOKIE,
            HeaderValue::from_static("berth_preview=tok2"),
        );
        assert_eq!(preview_cookies(&headers), vec!["tok1", "tok2"]);
        strip_cookie(&mut headers);
        assert_eq!(headers.get(header::COOKIE).unwrap(), "app=1");
        assert!(preview_cookies(&headers).is_empty());
        let mut only_ours = HeaderMap::new();
        only_ours.insert(header::COOKIE, HeaderValue::from_static("berth_preview=x"));
        strip_cookie(&mut only_ours);
        assert!(only_ours.get(header::COOKIE).is_none());
    }
}
