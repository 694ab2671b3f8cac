//! Forwarding one preview request over a port stream: HTTP/1.1 to the server in the
//! sandbox, whatever the client spoke, with the body streamed both ways. An upgrade
//! (WebSocket, or any other protocol the server agrees to) is answered with the
//! server's `101` and then becomes a plain byte stream both ways until either side
//! closes. One port stream carries one request (no pooling): a browser's keep-alive
//! ends at the control plane.

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, Version, header};
use axum::response::Response;
use hyper_util::rt::TokioIo;

use super::pages;
use crate::sandboxes::PortIo;

/// Headers that belong to one connection, not to the request or response (RFC 9110
/// section 7.6.1); never forwarded, except `Connection: upgrade` and `Upgrade` on an
/// upgrade.
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
];

/// Sends `request` to the server at the end of `io` and answers its response.
pub async fn forward(io: PortIo, mut request: Request, proto: &'static str) -> Response {
    let upgrade = upgrade_asked(request.headers());
    let client_upgrade = upgrade.is_some().then(|| hyper::upgrade::on(&mut request));
    let (mut sender, connection) = match hyper::client::conn::http1::Builder::new()
        .handshake::<_, Body>(TokioIo::new(io))
        .await
    {
        Ok(handshake) => handshake,
        Err(err) => return bad_gateway(&err),
    };
    tokio::spawn(async move {
        if let Err(err) = connection.with_upgrades().await {
            tracing::debug!(error = %err, "preview connection ended");
        }
    });
    let outbound = outbound(request, upgrade, proto);
    let mut response = match sender.send_request(outbound).await {
        Ok(response) => response,
        Err(err) => return bad_gateway(&err),
    };
    if response.status() == StatusCode::SWITCHING_PROTOCOLS
        && let Some(client_upgrade) = client_upgrade
    {
        let server_upgrade = hyper::upgrade::on(&mut response);
        tokio::spawn(async move {
            let (Ok(client), Ok(server)) = tokio::join!(client_upgrade, server_upgrade) else {
                return;
            };
            let _ =
                tokio::io::copy_bidirectional(&mut TokioIo::new(client), &mut TokioIo::new(server))
                    .await;
        });
        return response.map(|_| Body::empty());
    }
    let (mut parts, body) = response.into_parts();
    remove_hop_by_hop(&mut parts.headers);
    Response::from_parts(parts, Body::new(body))
}

/// The `Upgrade` a request asks for (with `Connection: upgrade`), if any.
fn upgrade_asked(headers: &HeaderMap) -> Option<HeaderValue> {
    let connection_upgrade = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|token| token.trim().eq_ignore_ascii_case("upgrade"));
    connection_upgrade
        .then(|| headers.get(header::UPGRADE).cloned())
        .flatten()
}

/// The request as the server in the sandbox gets it: HTTP/1.1 in origin form, its
/// `Host` kept (the preview host), hop-by-hop headers dropped, `X-Forwarded-*` added.
fn outbound(request: Request, upgrade: Option<HeaderValue>, proto: &'static str) -> Request {
    let (mut parts, body) = request.into_parts();
    let host = parts.headers.get(header::HOST).cloned().or_else(|| {
        parts
            .uri
            .authority()
            .and_then(|authority| HeaderValue::from_str(authority.as_str()).ok())
    });
    let path = parts
        .uri
        .path_and_query()
        .map_or("/", |path| path.as_str())
        .to_owned();
    parts.uri = path
        .parse()
        .unwrap_or_else(|_| "/".parse().expect("a path"));
    parts.version = Version::HTTP_11;
    remove_hop_by_hop(&mut parts.headers);
    if let Some(host) = host {
        parts.headers.insert(header::HOST, host.clone());
        parts.headers.insert("x-forwarded-host", host);
    }
    parts
        .headers
        .insert("x-forwarded-proto", HeaderValue::from_static(proto));
    if let Some(upgrade) = upgrade {
        parts
            .headers
            .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        parts.headers.insert(header::UPGRADE, upgrade);
    }
    Request::from_parts(parts, body)
}

fn remove_hop_by_hop(headers: &mut HeaderMap) {
    // and whatever `Connection` names as such
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .filter_map(|token| HeaderName::from_bytes(token.trim().as_bytes()).ok())
        .collect();
    for name in HOP_BY_HOP.iter().chain(&named) {
        headers.remove(name);
    }
    headers.remove(header::UPGRADE);
}

fn bad_gateway(err: &hyper::Error) -> Response {
    pages::page(
        StatusCode::BAD_GATEWAY,
        "The server in the sandbox did not answer",
        &format!("The connection to it failed: {err}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_outbound_request_is_origin_form_http_1_1_without_hop_by_hop_headers() {
        let request = Request::builder()
            .uri("http://8000-sbx-1.preview.localhost/a?b=1")
            .version(Version::HTTP_2)
            .header("connection", "keep-alive, x-private")
            .header("x-private", "1")
            .header("te", "trailers")
            .header("x-kept", "yes")
            .body(Body::empty())
            .unwrap();
        let out = outbound(request, None, "http");
        assert_eq!(out.uri(), "/a?b=1");
        assert_eq!(out.version(), Version::HTTP_11);
        assert_eq!(out.headers()["host"], "8000-sbx-1.preview.localhost");
        assert_eq!(out.headers()["x-kept"], "yes");
        assert_eq!(out.headers()["x-forwarded-proto"], "http");
        assert!(out.headers().get("x-private").is_none());
        assert!(out.headers().get("te").is_none());
        assert!(out.headers().get("connection").is_none());
    }

    #[test]
    fn an_upgrade_keeps_its_connection_and_upgrade_headers() {
        let mut headers = HeaderMap::new();
        headers.insert(
            "connection",
            HeaderValue::from_static("keep-alive, Upgrade"),
        );
        headers.insert("upgrade", HeaderValue::from_static("websocket"));
        let upgrade = upgrade_asked(&headers);
        assert_eq!(upgrade.as_ref().unwrap(), "websocket");
        let mut request = Request::new(Body::empty());
        *request.headers_mut() = headers;
        let out = outbound(request, upgrade, "https");
        assert_eq!(out.headers()["connection"], "upgrade");
        assert_eq!(out.headers()["upgrade"], "websocket");
        let mut plain = HeaderMap::new();
        plain.insert("upgrade", HeaderValue::from_static("websocket"));
        assert!(upgrade_asked(&plain).is_none());
    }
}
