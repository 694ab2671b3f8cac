//! Opening one of the API's WebSockets (a session's, a port tunnel's) with the
//! client's key and TLS settings; a refusal before the upgrade is reported with the
//! API's error code and message.

use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::Value;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::client::ApiClient;
use crate::exit::Exit;
use crate::output;

/// Largest message accepted from the server.
pub const MAX_MESSAGE: usize = 4 * 1024 * 1024;
/// Longest the connection and upgrade may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

pub type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Opens the WebSocket at `path` (under the API's base URL); `what` names it in errors.
pub async fn open(api: &ApiClient, path: &str, what: &str) -> anyhow::Result<Socket> {
    let base = api.base();
    let url = match base.split_once("://") {
        Some(("https", rest)) => format!("wss://{rest}"),
        Some(("http", rest)) => format!("ws://{rest}"),
        _ => bail!("api url {base:?} must start with http:// or https://"),
    };
    let mut request = format!("{url}{path}").as_str().into_client_request()?;
    for (name, value) in api.auth_headers() {
        request.headers_mut().insert(name, value.parse()?);
    }
    let connector = api
        .tls()
        .map(tokio_tungstenite::Connector::Rustls)
        .unwrap_or(tokio_tungstenite::Connector::Plain);
    let config = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
        .max_message_size(Some(MAX_MESSAGE))
        .max_frame_size(Some(MAX_MESSAGE));
    let connected = tokio::time::timeout(
        CONNECT_TIMEOUT,
        tokio_tungstenite::connect_async_tls_with_config(
            request,
            Some(config),
            true,
            Some(connector),
        ),
    )
    .await
    .with_context(|| format!("connecting to {what} timed out"))?;
    match connected {
        Ok((socket, _)) => Ok(socket),
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            let body = response
                .body()
                .as_deref()
                .map(String::from_utf8_lossy)
                .unwrap_or_default();
            let error: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
            Err(Exit {
                code: 1,
                message: Some(format!(
                    "{} ({}): {}",
                    output::text(&error["code"]),
                    response.status().as_u16(),
                    error["message"].as_str().unwrap_or(&body)
                )),
            }
            .into())
        }
        Err(err) => Err(err).with_context(|| format!("cannot open {what}")),
    }
}
