//! Ways into a sandbox's ports, on mock sandboxes (the builtin `serve`): preview URLs
//! routed by `Host` (private by default; an API key, a signed link's cookie or a
//! public port opens them; clear 404 and 502 answers), the WebSocket tunnel `berth
//! sandbox port-forward` uses, the gRPC `Sandboxes.OpenPort`, and a WebSocket echo
//! through a preview URL from Python's `websockets`. Each case runs against a
//! listening worker and a worker that dials out.

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use berth_proto::v1 as pb;
use berth_proto::v1::sandboxes_client::SandboxesClient;

use berth_testkit::python::{python, run, skip_or_fail};
use berth_testkit::{TestFleet, api_channel, id_of, keyed};
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

const DOMAIN: &str = "preview.localhost";

/// A mock fleet with previews on, one worker (listening or dialing out), a sandbox
/// serving echo answers on port 8000.
async fn fleet_serving(dial_out: bool) -> (TestFleet, String) {
    let builder = TestFleet::builder()
        .workers(1)
        .control_plane(|config| config.preview_domain = DOMAIN.into());
    let fleet = builder
        .worker(move |config| {
            if dial_out {
                config.listen = None;
            }
            config.metrics_listen = Some("127.0.0.1:0".parse().unwrap());
        })
        .start()
        .await;
    let sandbox = fleet.api.create_sandbox(json!({"ttl": "10m"})).await;
    assert_eq!(sandbox["preview_domain"], DOMAIN, "{sandbox}");
    let id = id_of(&sandbox);
    let (status, out) = fleet
        .api
        .exec(&id, json!({"command": "serve --port 8000"}))
        .await;
    assert_eq!((status, out["exit_code"].as_i64()), (200, Some(0)), "{out}");
    (fleet, id)
}

fn host(id: &str, port: u16) -> String {
    format!("{port}-{id}.{DOMAIN}")
}

/// A client that reaches preview hosts of `id` on the control plane's API listener,
/// follows no redirects and keeps no cookies (the tests look at both).
fn preview_client(api: SocketAddr, hosts: &[String]) -> reqwest::Client {
    hosts
        .iter()
        .fold(reqwest::Client::builder(), |builder, host| {
            builder.resolve(host, api)
        })
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

fn url(api: SocketAddr, host: &str, path: &str) -> String {
    format!("http://{host}:{}{path}", api.port())
}

/// The preview link's URL on the test's listener (links name the domain without a
/// port, as configured).
fn on_listener(link: &str, api: SocketAddr) -> String {
    link.replacen(
        &format!(".{DOMAIN}/"),
        &format!(".{DOMAIN}:{}/", api.port()),
        1,
    )
}

async fn previews_are_private_and_open_with_a_key_a_link_or_as_public(dial_out: bool) {
    let (fleet, id) = fleet_serving(dial_out).await;
    let api = fleet.cp.api_addr;
    let (h8000, h8001) = (host(&id, 8000), host(&id, 8001));
    let client = preview_client(api, &[h8000.clone(), h8001.clone()]);
    let key = fleet.cp.admin_key.clone();

    // no credentials: refused with a page that says how to get in
    let response = client.get(url(api, &h8000, "/hello")).send().await.unwrap();
    assert_eq!(response.status(), 401);
    let page = response.text().await.unwrap();
    assert!(page.contains("preview link"), "{page}");

    // the owner's key: through to the server, which sees the preview host and not the key
    let response = client
        .get(url(api, &h8000, "/hello?x=1"))
        .header("X-API-Key", &key)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body = response.text().await.unwrap();
    assert!(
        body.contains(&format!("GET /hello host={h8000}:{}", api.port())),
        "{body}"
    );

    // a request body streams through and back
    let payload: Vec<u8> = (0..2_000_000u32).map(|i| (i % 251) as u8).collect();
    let response = client
        .post(url(api, &h8000, "/upload"))
        .header("Authorization", format!("Bearer {key}"))
        .body(payload.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.bytes().await.unwrap().as_ref(), payload.as_slice());

    // a link: its first use sets an HttpOnly cookie for that host and redirects
    // to the same URL without the token
    let (status, link) = fleet
        .api
        .post(
            &format!("/sandboxes/{id}/ports/8000/link"),
            json!({"ttl": "10m"}),
        )
        .await;
    assert_eq!(status, 201, "{link}");
    let link_url = on_listener(link["url"].as_str().unwrap(), api);
    assert!(
        link_url.starts_with(&url(api, &h8000, "/?berth_preview_token=")),
        "{link_url}"
    );
    let response = client.get(&link_url).send().await.unwrap();
    assert_eq!(response.status(), 303);
    assert_eq!(response.headers()["location"], "/");
    let cookie = response.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(cookie.contains("HttpOnly"), "{cookie}");
    assert!(!cookie.contains("Domain="), "a host-only cookie: {cookie}");
    let cookie = cookie.split(';').next().unwrap().to_owned();
    let response = client
        .get(url(api, &h8000, "/"))
        .header("Cookie", format!("theme=dark; {cookie}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    // the link opens its own port only
    let response = client
        .get(url(api, &h8001, "/"))
        .header("Cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    // nor does it act as an API key
    let (status, _) = fleet
        .api
        .with_key(cookie.trim_start_matches("berth_preview="))
        .get(&format!("/sandboxes/{id}"))
        .await;
    assert_eq!(status, 401);

    // an expired link opens nothing
    let (_, short) = fleet
        .api
        .post(
            &format!("/sandboxes/{id}/ports/8000/link"),
            json!({"ttl": "1s"}),
        )
        .await;
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let response = client
        .get(on_listener(short["url"].as_str().unwrap(), api))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);

    // a public port opens without anything; private again, it does not
    let put = |public: bool| {
        fleet
            .api
            .request(reqwest::Method::PUT, &format!("/sandboxes/{id}/ports/8000"))
            .json(&json!({ "public": public }))
    };
    let (status, port) = fleet.api.send(put(true)).await;
    assert_eq!(status, 200, "{port}");
    assert_eq!(port["public"], true);
    let (_, ports) = fleet.api.get(&format!("/sandboxes/{id}/ports")).await;
    assert_eq!(ports["public"], json!([8000]), "{ports}");
    let response = client.get(url(api, &h8000, "/open")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    fleet.api.send(put(false)).await;
    let response = client.get(url(api, &h8000, "/open")).send().await.unwrap();
    assert_eq!(response.status(), 401);

    // nothing listening: 502; no such sandbox: 404; both with the code in a header
    let h9000 = host(&id, 9000);
    let missing = host("sbx-0000000000000000", 8000);
    let client = preview_client(api, &[h9000.clone(), missing.clone(), h8000.clone()]);
    let response = client
        .get(url(api, &h9000, "/"))
        .header("X-API-Key", &key)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 502);
    assert_eq!(response.headers()["x-berth-error-code"], "BAD_GATEWAY");
    let response = client
        .get(url(api, &missing, "/"))
        .header("X-API-Key", &key)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);

    // a destroyed sandbox: 404, link or not
    fleet.api.delete(&format!("/sandboxes/{id}")).await;
    let response = client
        .get(url(api, &h8000, "/"))
        .header("Cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    fleet.stop().await;
}

async fn another_teams_key_opens_no_preview(dial_out: bool) {
    let (fleet, id) = fleet_serving(dial_out).await;
    fleet.api.create_team("other", json!({})).await;
    let other = fleet
        .api
        .team_key("other", &["exec", "read", "write"])
        .await;
    let api = fleet.cp.api_addr;
    let h8000 = host(&id, 8000);
    let client = preview_client(api, std::slice::from_ref(&h8000));
    let response = client
        .get(url(api, &h8000, "/"))
        .header("X-API-Key", &other)
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.status(),
        404,
        "another team's sandbox does not exist for it"
    );
    let (status, _) = fleet
        .api
        .with_key(&other)
        .post(&format!("/sandboxes/{id}/ports/8000/link"), json!({}))
        .await;
    assert_eq!(status, 404);
    fleet.stop().await;
}

/// An HTTP/1.1 request for `path` that asks the server to close after answering.
fn http_get(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: tunnel\r\nConnection: close\r\n\r\n").into_bytes()
}

async fn the_websocket_tunnel_carries_a_connection_both_ways(dial_out: bool) {
    let (fleet, id) = fleet_serving(dial_out).await;
    let ws_url = format!(
        "ws://{}/api/v1/sandboxes/{id}/ports/8000/ws",
        fleet.cp.api_addr
    );
    let mut request = ws_url.as_str().into_client_request().unwrap();
    request
        .headers_mut()
        .insert("X-API-Key", fleet.cp.admin_key.parse().unwrap());
    let (mut socket, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    socket
        .send(Message::Binary(http_get("/through-the-tunnel").into()))
        .await
        .unwrap();
    socket
        .send(Message::Text(json!({"type": "eof"}).to_string().into()))
        .await
        .unwrap();
    let mut answer = Vec::new();
    let mut saw_eof = false;
    while let Some(frame) = socket.next().await {
        match frame.unwrap() {
            Message::Binary(data) => answer.extend_from_slice(&data),
            Message::Text(text) => {
                let message: Value = serde_json::from_str(text.as_str()).unwrap();
                assert_eq!(message["type"], "eof", "{message}");
                saw_eof = true;
            }
            Message::Close(_) => break,
            _ => {}
        }
    }
    let answer = String::from_utf8(answer).unwrap();
    assert!(saw_eof);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("GET /through-the-tunnel"), "{answer}");

    // refused before the upgrade: 502 for a closed port, 404 for an unknown sandbox
    let (status, body) = fleet
        .api
        .get(&format!("/sandboxes/{id}/ports/9000/ws"))
        .await;
    assert_eq!(status, 400, "not an upgrade: {body}");
    for (path, want) in [
        (format!("/api/v1/sandboxes/{id}/ports/9000/ws"), 502),
        ("/api/v1/sandboxes/sbx-nope/ports/8000/ws".to_owned(), 404),
        (format!("/api/v1/sandboxes/{id}/ports/0/ws"), 400),
    ] {
        let mut request = format!("ws://{}{path}", fleet.cp.api_addr)
            .into_client_request()
            .unwrap();
        request
            .headers_mut()
            .insert("X-API-Key", fleet.cp.admin_key.parse().unwrap());
        match tokio_tungstenite::connect_async(request).await {
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                assert_eq!(response.status().as_u16(), want, "{path}");
            }
            other => panic!("{path}: {other:?}"),
        }
    }

    // each tunnel is a way in: recorded, with its port and how it ended
    let tunnels = audited(&fleet, "GET /api/v1/sandboxes/{id}/ports/{port}/ws", 5).await;
    assert_eq!(tunnels[0]["sandbox_id"], id.as_str());
    assert_eq!(tunnels[0]["detail"], "port 8000");
    let outcomes: Vec<&str> = tunnels
        .iter()
        .map(|record| record["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(
        outcomes,
        [
            "ok",
            "BAD_REQUEST",
            "BAD_GATEWAY",
            "NOT_FOUND",
            "BAD_REQUEST"
        ]
    );
    fleet.stop().await;
}

/// The audit records of `operation`, once there are `count` of them.
async fn audited(fleet: &TestFleet, operation: &str, count: usize) -> Vec<Value> {
    berth_testkit::eventually("the audit records", Duration::from_secs(10), || async {
        let (_, records) = fleet.api.get("/audit?limit=1000").await;
        let found: Vec<Value> = records
            .as_array()?
            .iter()
            .filter(|record| record["operation"] == operation)
            .cloned()
            .collect();
        (found.len() >= count).then_some(found)
    })
    .await
}

async fn grpc_open_port_carries_a_connection_both_ways(dial_out: bool) {
    use pb::port_event::Event;
    use pb::port_request::Message as In;
    let (fleet, id) = fleet_serving(dial_out).await;
    let mut client = SandboxesClient::new(api_channel(&fleet.cp.api_url()).await);
    let open = |port| pb::PortRequest {
        message: Some(In::Open(pb::PortOpen {
            sandbox_id: id.clone(),
            port,
            generation: 0,
        })),
    };
    let requests = vec![
        open(8000),
        pb::PortRequest {
            message: Some(In::Data(http_get("/over-grpc"))),
        },
        pb::PortRequest {
            message: Some(In::Eof(pb::PortEof {})),
        },
    ];
    let mut events = client
        .open_port(keyed(tokio_stream::iter(requests), &fleet.cp.admin_key))
        .await
        .unwrap()
        .into_inner();
    let mut answer = Vec::new();
    let mut opened = false;
    let mut eof = false;
    while let Some(event) = events.message().await.unwrap() {
        match event.event.unwrap() {
            Event::Opened(open) => {
                assert_eq!(open.port, 8000);
                opened = true;
            }
            Event::Data(data) => answer.extend_from_slice(&data),
            Event::Eof(_) => eof = true,
        }
    }
    let answer = String::from_utf8(answer).unwrap();
    assert!(opened && eof);
    assert!(answer.contains("GET /over-grpc"), "{answer}");

    let refused = client
        .open_port(keyed(
            tokio_stream::iter(vec![open(9000)]),
            &fleet.cp.admin_key,
        ))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unavailable, "{refused:?}");
    assert_eq!(
        refused.metadata().get("berth-error-code").unwrap(),
        "BAD_GATEWAY"
    );
    let opened = audited(&fleet, "grpc /berth.v1.Sandboxes/OpenPort", 2).await;
    assert_eq!(opened[0]["sandbox_id"], id.as_str());
    assert_eq!(opened[0]["detail"], "port 8000");
    assert_eq!(opened[1]["detail"], "port 9000");
    fleet.stop().await;
}

async fn python_websockets_echo_through_a_preview_url(dial_out: bool) {
    let test = "python_websockets_echo_through_a_preview_url";
    let python = match tokio::task::spawn_blocking(python).await.unwrap() {
        Ok(python) => python,
        Err(why) => return skip_or_fail(test, &why),
    };
    let (fleet, id) = fleet_serving(dial_out).await;
    let api = fleet.cp.api_addr;
    let script = r#"
import asyncio, sys
import websockets

async def main(host, port, uri, key):
    # the preview host resolves to the control plane: connect there, ask for the host
    async with websockets.connect(
        uri, host=host, port=int(port), additional_headers={"X-API-Key": key}
    ) as ws:
        for message in ["hello", "x" * 100000]:
            await ws.send(message)
            assert await ws.recv() == message
        await ws.send(b"\x00\x01binary")
        assert await ws.recv() == b"\x00\x01binary"
    try:
        async with websockets.connect(uri, host=host, port=int(port)) as ws:
            print("FAIL: opened without a key")
            return
    except websockets.exceptions.InvalidStatus as refused:
        assert refused.response.status_code == 401, refused
    print("OK")

asyncio.run(main(*sys.argv[1:]))
"#;
    let uri = format!("ws://{}:{}/echo", host(&id, 8000), api.port());
    let args = [
        api.ip().to_string(),
        api.port().to_string(),
        uri,
        fleet.cp.admin_key.clone(),
    ];
    let out = tokio::task::spawn_blocking(move || {
        run(Command::new(&python).arg("-c").arg(script).args(args))
    })
    .await
    .unwrap()
    .unwrap_or_else(|err| panic!("the python client failed: {err}"));
    assert!(out.trim_end().ends_with("OK"), "{out}");
    fleet.stop().await;
}

/// The worker's count of open port streams.
async fn ports_open(fleet: &TestFleet) -> Option<f64> {
    let url = format!("http://{}/metrics", fleet.worker(0).metrics_addr?);
    let text = reqwest::get(url).await.ok()?.text().await.ok()?;
    berth_testkit::sample(&text, "berth_worker_ports_open")
}

async fn a_client_that_goes_away_ends_the_stream_on_the_worker(dial_out: bool) {
    let (fleet, id) = fleet_serving(dial_out).await;
    let url = format!(
        "ws://{}/api/v1/sandboxes/{id}/ports/8000/ws",
        fleet.cp.api_addr
    );
    let mut request = url.as_str().into_client_request().unwrap();
    request
        .headers_mut()
        .insert("X-API-Key", fleet.cp.admin_key.parse().unwrap());
    let (mut socket, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    // a keep-alive request: the server inside keeps the connection open after answering
    let keep_alive = b"GET /kept HTTP/1.1\r\nHost: tunnel\r\n\r\n".to_vec();
    socket
        .send(Message::Binary(keep_alive.into()))
        .await
        .unwrap();
    let mut answer = Vec::new();
    while !String::from_utf8_lossy(&answer).contains("GET /kept") {
        match socket.next().await.unwrap().unwrap() {
            Message::Binary(data) => answer.extend_from_slice(&data),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(ports_open(&fleet).await, Some(1.0));
    // gone without a close frame or an eof: the connection just drops
    drop(socket);
    berth_testkit::eventually(
        "the worker's port stream ends",
        Duration::from_secs(20),
        || async { (ports_open(&fleet).await == Some(0.0)).then_some(()) },
    )
    .await;
    fleet.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_preview_listener_serves_previews_and_nothing_else() {
    let fleet = TestFleet::builder()
        .control_plane(|config| {
            config.preview_domain = DOMAIN.into();
            config.preview_listen = Some("127.0.0.1:0".parse().unwrap());
        })
        .start()
        .await;
    let id = id_of(&fleet.api.create_sandbox(json!({"ttl": "10m"})).await);
    fleet
        .api
        .exec(&id, json!({"command": "serve --port 3000"}))
        .await;
    let listener = fleet.cp.preview_addr().expect("the preview listener");
    let h3000 = host(&id, 3000);
    let client = preview_client(listener, std::slice::from_ref(&h3000));
    let response = client
        .get(url(listener, &h3000, "/app"))
        .header("X-API-Key", &fleet.cp.admin_key)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.text().await.unwrap().contains("GET /app"));
    // the API is not on it, and a host that is no preview's gets a page saying so
    let response = client
        .get(format!("http://{listener}/api/v1/health"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    assert!(
        response
            .text()
            .await
            .unwrap()
            .contains("Not a preview address")
    );
    // an HTTP/2 client (h2c with prior knowledge, as curl speaks it) is answered too
    let out = Command::new("curl")
        .args([
            "-sS",
            "--http2-prior-knowledge",
            "-o",
            "-",
            "-w",
            "\n%{http_version}",
        ])
        .args(["-H", &format!("X-API-Key: {}", fleet.cp.admin_key)])
        .args([
            "--resolve",
            &format!("{h3000}:{}:127.0.0.1", listener.port()),
        ])
        .arg(url(listener, &h3000, "/over-h2"))
        .output()
        .expect("curl runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("GET /over-h2"), "{text}");
    assert!(text.trim_end().ends_with('2'), "spoken over HTTP/2: {text}");
    // previews are still served on the API listener too
    let api = fleet.cp.api_addr;
    let response = preview_client(api, std::slice::from_ref(&h3000))
        .get(url(api, &h3000, "/app"))
        .header("X-API-Key", &fleet.cp.admin_key)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    fleet.stop().await;
}

#[tokio::test]
async fn a_revoked_key_opens_no_preview_and_previews_off_refuse_links() {
    let (fleet, id) = fleet_serving(false).await;
    let (status, minted) = fleet
        .api
        .post(
            "/keys",
            json!({"name": "short-lived", "scopes": ["exec", "read"]}),
        )
        .await;
    assert_eq!(status, 201, "{minted}");
    let key = minted["key"].as_str().unwrap().to_owned();
    let api = fleet.cp.api_addr;
    let h8000 = host(&id, 8000);
    let client = preview_client(api, std::slice::from_ref(&h8000));
    let get = || {
        client
            .get(url(api, &h8000, "/"))
            .header("X-API-Key", &key)
            .send()
    };
    assert_eq!(get().await.unwrap().status(), 200);
    let (status, _) = fleet
        .api
        .delete(&format!("/keys/{}", minted["id"].as_str().unwrap()))
        .await;
    assert!(status < 300);
    let refused = berth_testkit::eventually(
        "the revoked key is refused",
        Duration::from_secs(15),
        || async {
            let response = get().await.ok()?;
            (response.status() == 401).then_some(response)
        },
    )
    .await;
    let page = refused.text().await.unwrap();
    assert!(page.contains("refused"), "{page}");
    fleet.stop().await;

    // without a preview domain, links are refused with a reason
    let fleet = TestFleet::start().await;
    let id = id_of(&fleet.api.create_sandbox(json!({})).await);
    let (status, body) = fleet
        .api
        .post(&format!("/sandboxes/{id}/ports/8000/link"), json!({}))
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("--preview-domain"),
        "{body}"
    );
    fleet.stop().await;
}

macro_rules! both_worker_modes {
    ($($name:ident),* $(,)?) => {
        mod listening {
            $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                super::$name(false).await;
            }
            )*
        }
        mod dialing_out {
            $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                super::$name(true).await;
            }
            )*
        }
    };
}

both_worker_modes!(
    previews_are_private_and_open_with_a_key_a_link_or_as_public,
    another_teams_key_opens_no_preview,
    the_websocket_tunnel_carries_a_connection_both_ways,
    grpc_open_port_carries_a_connection_both_ways,
    python_websockets_echo_through_a_preview_url,
    a_client_that_goes_away_ends_the_stream_on_the_worker,
);
