//! Ports inside a sandbox from the command line: `sandbox port-forward` (local TCP
//! ports to ports inside the sandbox, kubectl's habit: `8080:80`, `80`, `:80`, each
//! local connection its own WebSocket tunnel, `GET …/ports/{port}/ws`), `sandbox
//! preview-url` (a signed preview link) and `sandbox ports` (the preview domain and
//! public ports; `--public`/`--private` change one).

use std::net::{IpAddr, SocketAddr};

use anyhow::{Context, bail};
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::Message;

use crate::client::ApiClient;
use crate::output::Format;
use crate::websocket;
use crate::{outln, output};

/// Bytes read from a local connection for one frame.
const CHUNK: usize = 32 * 1024;

/// One `[LOCAL:]REMOTE` of `port-forward`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Forward {
    /// 0: any free port.
    pub local: u16,
    pub remote: u16,
}

/// Reads `8080:80` (local 8080), `80` (local 80) or `:80` (any free local port).
pub fn parse_forward(spec: &str) -> Result<Forward, String> {
    let port = |text: &str, zero_ok: bool| match text.parse::<u16>() {
        Ok(0) if !zero_ok => Err(format!("{spec:?}: 0 is not a port")),
        Ok(port) => Ok(port),
        Err(_) => Err(format!("{spec:?}: {text:?} is not a port (1-65535)")),
    };
    match spec.split_once(':') {
        Some(("", remote)) => Ok(Forward {
            local: 0,
            remote: port(remote, false)?,
        }),
        Some((local, remote)) => Ok(Forward {
            local: port(local, true)?,
            remote: port(remote, false)?,
        }),
        None => {
            let remote = port(spec, false)?;
            Ok(Forward {
                local: remote,
                remote,
            })
        }
    }
}

/// Listens on each local port and forwards every connection until Ctrl-C.
pub async fn port_forward(
    api: &ApiClient,
    sandbox_id: &str,
    forwards: &[Forward],
    address: IpAddr,
) -> anyhow::Result<()> {
    let mut listeners = Vec::new();
    for forward in forwards {
        let listener = TcpListener::bind(SocketAddr::new(address, forward.local))
            .await
            .with_context(|| format!("cannot listen on {address}:{}", forward.local))?;
        let local = listener.local_addr()?;
        outln!("Forwarding from {local} -> {}", forward.remote)?;
        listeners.push((listener, forward.remote));
    }
    let mut accepting = tokio::task::JoinSet::new();
    for (listener, remote) in listeners {
        let api = api.clone();
        let sandbox_id = sandbox_id.to_owned();
        accepting.spawn(async move { accept(listener, api, sandbox_id, remote).await });
    }
    tokio::select! {
        result = tokio::signal::ctrl_c() => result.context("cannot wait for Ctrl-C"),
        Some(ended) = accepting.join_next() => match ended {
            Ok(result) => result,
            Err(err) => Err(err.into()),
        },
    }
}

async fn accept(
    listener: TcpListener,
    api: ApiClient,
    sandbox_id: String,
    remote: u16,
) -> anyhow::Result<()> {
    loop {
        let (connection, peer) = listener.accept().await.context("cannot accept")?;
        let _ = connection.set_nodelay(true);
        let (api, sandbox_id) = (api.clone(), sandbox_id.clone());
        tokio::spawn(async move {
            if let Err(err) = forward(&api, &sandbox_id, remote, connection).await {
                eprintln!("port {remote}: connection from {peer}: {err:#}");
            }
        });
    }
}

/// One local connection through its own tunnel.
async fn forward(
    api: &ApiClient,
    sandbox_id: &str,
    remote: u16,
    connection: TcpStream,
) -> anyhow::Result<()> {
    let path = format!("/api/v1/sandboxes/{sandbox_id}/ports/{remote}/ws");
    let socket = websocket::open(api, &path, &format!("a tunnel to port {remote}")).await?;
    let (mut sink, mut source) = socket.split();
    let (mut reader, mut writer) = connection.into_split();
    let upstream = async move {
        let mut buffer = vec![0u8; CHUNK];
        loop {
            let frame = match reader.read(&mut buffer).await {
                Ok(0) | Err(_) => Message::Text(json!({"type": "eof"}).to_string().into()),
                Ok(n) => Message::Binary(buffer[..n].to_vec().into()),
            };
            let last = matches!(frame, Message::Text(_));
            if sink.send(frame).await.is_err() || last {
                // the sink stays open (a half-close) until the tunnel ends
                return sink;
            }
        }
    };
    let downstream = async move {
        while let Some(frame) = source.next().await {
            match frame.context("the tunnel broke")? {
                Message::Binary(data) => writer.write_all(&data).await?,
                Message::Text(text) => {
                    let message: Value = serde_json::from_str(text.as_str()).unwrap_or_default();
                    match message["type"].as_str() {
                        Some("eof") => writer.shutdown().await?,
                        Some("error") => bail!(
                            "{}: {}",
                            output::text(&message["code"]),
                            output::text(&message["message"])
                        ),
                        _ => {}
                    }
                }
                Message::Close(_) => break,
                _ => {}
            }
        }
        let _ = writer.shutdown().await;
        anyhow::Ok(())
    };
    let upstream = tokio::spawn(upstream);
    let result = downstream.await;
    upstream.abort();
    result
}

/// Prints a signed preview link to `port`.
pub async fn preview_url(
    api: &ApiClient,
    sandbox_id: &str,
    port: u16,
    ttl: Option<&str>,
    format: Option<Format>,
) -> anyhow::Result<()> {
    let body = match ttl {
        Some(ttl) => json!({ "ttl": ttl }),
        None => json!({}),
    };
    let link: Value = api
        .post(
            &format!("/api/v1/sandboxes/{sandbox_id}/ports/{port}/link"),
            &body,
        )
        .await?;
    match format {
        Some(format) => output::structured(format, &link),
        None => {
            outln!("{}", output::text(&link["url"]))?;
            Ok(())
        }
    }
}

/// Shows the sandbox's preview domain and public ports, after making `public` ports
/// public and `private` ones private.
pub async fn ports(
    api: &ApiClient,
    sandbox_id: &str,
    public: &[u16],
    private: &[u16],
    format: Option<Format>,
) -> anyhow::Result<()> {
    for (ports, open) in [(public, true), (private, false)] {
        for port in ports {
            let _: Value = api
                .put(
                    &format!("/api/v1/sandboxes/{sandbox_id}/ports/{port}"),
                    &json!({ "public": open }),
                )
                .await?;
        }
    }
    let view: Value = api
        .get(&format!("/api/v1/sandboxes/{sandbox_id}/ports"))
        .await?;
    if let Some(format) = format {
        return output::structured(format, &view);
    }
    let domain = view["preview_domain"].as_str().unwrap_or_default();
    if domain.is_empty() {
        outln!("previews: off (berth serve --preview-domain)")?;
    } else {
        outln!("previews: http(s)://PORT-{sandbox_id}.{domain}/")?;
    }
    let public: Vec<String> = view["public"]
        .as_array()
        .map(|ports| ports.iter().map(|port| port.to_string()).collect())
        .unwrap_or_default();
    if public.is_empty() {
        outln!("public ports: none (every port needs a key or a preview link)")?;
    } else {
        outln!("public ports: {}", public.join(", "))?;
    }
    // the ports its template serves previews on
    for port in view["declared"].as_array().into_iter().flatten() {
        let url = port["url"].as_str().filter(|url| !url.is_empty());
        outln!(
            "port {}: {}{}",
            port["port"],
            url.unwrap_or("(previews off)"),
            if port["public"] == true {
                " (public)"
            } else {
                ""
            }
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwards_read_like_kubectls() {
        assert_eq!(
            parse_forward("8080:80"),
            Ok(Forward {
                local: 8080,
                remote: 80
            })
        );
        assert_eq!(
            parse_forward("3000"),
            Ok(Forward {
                local: 3000,
                remote: 3000
            })
        );
        assert_eq!(
            parse_forward(":80"),
            Ok(Forward {
                local: 0,
                remote: 80
            })
        );
        assert_eq!(
            parse_forward("0:80"),
            Ok(Forward {
                local: 0,
                remote: 80
            })
        );
        assert!(parse_forward("80:0").is_err());
        assert!(parse_forward("http").is_err());
        assert!(parse_forward("8080:99999").is_err());
    }
}
