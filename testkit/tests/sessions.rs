//! Interactive sessions through the control plane's front doors, against mock workers
//! over real mTLS: the public gRPC `Sandboxes.Session` from the generated client (cat
//! and eof; detach and re-attach from the offset, nothing lost or repeated; unknown
//! sessions), `ListSessions`/`KillSession` and their HTTP routes, the exec WebSocket
//! (its request frame refused clearly, a whole run), who may open a session, and the
//! audit records a session leaves. The stream cases run again with workers that dial
//! out.

use std::time::Duration;

use base64::Engine;
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message as Frame;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use berth_proto::v1 as pb;
use berth_proto::v1::sandboxes_client::SandboxesClient;
use berth_testkit::{Api, GrpcSession, TestFleet, api_channel, eventually, id_of, keyed};
use pb::session_request::Message;

const WAIT: Duration = Duration::from_secs(20);

/// A mock fleet of one worker, listening or dialing out, and a sandbox on it.
async fn fleet_with_sandbox(dial_out: bool) -> (TestFleet, String) {
    let builder = TestFleet::builder().workers(1);
    let builder = if dial_out {
        builder.worker(|config| config.listen = None)
    } else {
        builder
    };
    let fleet = builder.start().await;
    let id = id_of(&fleet.api.create_sandbox(json!({"ttl": "10m"})).await);
    (fleet, id)
}

fn start(sandbox_id: &str, command: &str) -> pb::SessionOpen {
    pb::SessionOpen {
        sandbox_id: sandbox_id.to_owned(),
        command: command.to_owned(),
        ..Default::default()
    }
}

fn attach(sandbox_id: &str, session_id: &str, offset: u64) -> pb::SessionOpen {
    pb::SessionOpen {
        sandbox_id: sandbox_id.to_owned(),
        session_id: session_id.to_owned(),
        offset,
        ..Default::default()
    }
}

fn lines(range: std::ops::RangeInclusive<u32>) -> String {
    range.map(|i| format!("line {i}\n")).collect()
}

// ---------------------------------------------------------------- gRPC

async fn grpc_cat_echoes_stdin_and_exits_0_after_eof(dial_out: bool) {
    let (fleet, id) = fleet_with_sandbox(dial_out).await;
    let (url, key) = (fleet.cp.api_url(), fleet.cp.admin_key.clone());
    let mut session = GrpcSession::open(&url, &key, start(&id, "cat"))
        .await
        .unwrap();
    assert!(!session.session_id.is_empty());
    session.send(Message::Stdin(b"hello\n".to_vec())).await;
    session.read_until("hello\n").await;
    session.send(Message::Stdin(vec![0, 0xff, b'\n'])).await;
    session.send(Message::Eof(pb::SessionEof {})).await;
    session.drain().await.unwrap();
    assert_eq!(session.output, b"hello\n\x00\xff\n");
    let exit = session.exit.expect("an exit");
    assert_eq!((exit.exit_code, exit.signal.as_str()), (0, ""));
    fleet.stop().await;
}

async fn grpc_detach_and_reattach_lose_and_repeat_nothing(dial_out: bool) {
    let (fleet, id) = fleet_with_sandbox(dial_out).await;
    let (url, key) = (fleet.cp.api_url(), fleet.cp.admin_key.clone());
    let command = "generate --lines 120 --delay-ms 10; echo generated";
    let mut first = GrpcSession::open(&url, &key, start(&id, command))
        .await
        .unwrap();
    first.read_until("line 20\n").await;
    first.send(Message::Detach(pb::SessionDetach {})).await;
    first.drain().await.unwrap();
    assert_eq!(first.detached.as_deref(), Some("detach"));
    assert!(first.exit.is_none(), "detached before the end");

    // the command ran on while nobody was attached; take the rest from the offset
    let mut second = GrpcSession::open(&url, &key, attach(&id, &first.session_id, first.offset))
        .await
        .unwrap();
    assert_eq!(second.session_id, first.session_id);
    second.drain().await.unwrap();
    assert_eq!(second.exit.as_ref().map(|e| e.exit_code), Some(0));
    let mut output = first.output.clone();
    output.extend_from_slice(&second.output);
    let expected = format!("{}generated\n", lines(1..=120));
    assert_eq!(
        String::from_utf8(output).unwrap(),
        expected,
        "every byte once"
    );

    // a finished session can be read again from the start until it is collected
    let again = GrpcSession::open(&url, &key, attach(&id, &first.session_id, 0)).await;
    if let Ok(mut again) = again {
        again.drain().await.unwrap();
        assert_eq!(String::from_utf8(again.output).unwrap(), expected);
    }
    fleet.stop().await;
}

async fn grpc_a_background_session_is_attached_later(dial_out: bool) {
    let (fleet, id) = fleet_with_sandbox(dial_out).await;
    let (url, key) = (fleet.cp.api_url(), fleet.cp.admin_key.clone());
    let open = pb::SessionOpen {
        background: true,
        ..start(&id, "echo one; sleep 0.3; echo two")
    };
    let mut started = GrpcSession::open(&url, &key, open).await.unwrap();
    assert!(
        started.next().await.unwrap().is_none(),
        "nothing after started"
    );
    let mut later = GrpcSession::open(&url, &key, attach(&id, &started.session_id, 0))
        .await
        .unwrap();
    later.drain().await.unwrap();
    assert_eq!(later.output, b"one\ntwo\n");
    assert_eq!(later.exit.map(|e| e.exit_code), Some(0));
    fleet.stop().await;
}

macro_rules! both_modes {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn listening_worker() {
                super::$name(false).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn dial_out_worker() {
                super::$name(true).await;
            }
        }
    )*};
}

both_modes!(
    grpc_cat_echoes_stdin_and_exits_0_after_eof,
    grpc_detach_and_reattach_lose_and_repeat_nothing,
    grpc_a_background_session_is_attached_later,
    websocket_runs_a_session_to_done,
);

#[tokio::test]
async fn unknown_sessions_are_not_found_on_every_door() {
    let (fleet, id) = fleet_with_sandbox(false).await;
    let (url, key, api) = (fleet.cp.api_url(), fleet.cp.admin_key.clone(), &fleet.api);

    let refused = GrpcSession::open(&url, &key, attach(&id, "ses-nope", 0))
        .await
        .err()
        .expect("no such session");
    assert_eq!(refused.code(), tonic::Code::NotFound, "{refused:?}");
    assert_eq!(
        refused.metadata().get("berth-error-code").unwrap(),
        "NOT_FOUND"
    );
    // an unknown sandbox too, and a bad open
    let refused = GrpcSession::open(&url, &key, start("sbx-nope", "cat"))
        .await
        .err()
        .expect("no such sandbox");
    assert_eq!(refused.code(), tonic::Code::NotFound);
    let refused = GrpcSession::open(&url, &key, start(&id, "  "))
        .await
        .err()
        .expect("no command");
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);

    let mut sandboxes = SandboxesClient::new(api_channel(&url).await);
    let kill = pb::KillSessionRequest {
        sandbox_id: id.clone(),
        session_id: "ses-nope".into(),
        ..Default::default()
    };
    let refused = sandboxes.kill_session(keyed(kill, &key)).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::NotFound);

    for (status, body) in [
        api.get(&format!("/sandboxes/{id}/sessions/ses-nope")).await,
        api.delete(&format!("/sandboxes/{id}/sessions/ses-nope"))
            .await,
        api.get("/sandboxes/sbx-nope/sessions").await,
    ] {
        assert_eq!(status, 404, "{body}");
        assert_eq!(body["code"], "NOT_FOUND", "{body}");
    }

    let mut ws = WsClient::connect(api, &id).await;
    ws.send_json(json!({"session_id": "ses-nope", "offset": 0}))
        .await;
    let error = ws.next_json().await;
    assert_eq!(error["type"], "error", "{error}");
    assert_eq!(error["code"], "NOT_FOUND", "{error}");
    assert_eq!(error["fatal"], true);
    ws.expect_close().await;
    fleet.stop().await;
}

#[tokio::test]
async fn sessions_are_listed_and_killed_over_grpc_and_http() {
    let (fleet, id) = fleet_with_sandbox(false).await;
    let (url, key, api) = (fleet.cp.api_url(), fleet.cp.admin_key.clone(), &fleet.api);
    let background = |command: &str| pb::SessionOpen {
        background: true,
        ..start(&id, command)
    };
    let first = GrpcSession::open(&url, &key, background("sleep 60"))
        .await
        .unwrap()
        .session_id;
    let second = GrpcSession::open(&url, &key, background("sleep 61"))
        .await
        .unwrap()
        .session_id;

    let mut sandboxes = SandboxesClient::new(api_channel(&url).await);
    let list = pb::ListSessionsRequest {
        sandbox_id: id.clone(),
    };
    let listed = sandboxes
        .list_sessions(keyed(list.clone(), &key))
        .await
        .unwrap()
        .into_inner()
        .sessions;
    let ids: Vec<&str> = listed.iter().map(|s| s.session_id.as_str()).collect();
    assert!(
        ids.contains(&first.as_str()) && ids.contains(&second.as_str()),
        "{ids:?}"
    );
    let one = listed.iter().find(|s| s.session_id == first).unwrap();
    assert_eq!(
        (one.state.as_str(), one.sandbox_id.as_str()),
        ("running", id.as_str())
    );
    assert!(
        one.background && one.command.contains("sleep 60"),
        "{one:?}"
    );

    // gRPC kill, default signal
    let kill = pb::KillSessionRequest {
        sandbox_id: id.clone(),
        session_id: first.clone(),
        ..Default::default()
    };
    let killed = sandboxes.kill_session(keyed(kill, &key)).await.unwrap();
    assert_eq!(killed.into_inner().session_id, first);

    // HTTP: list and get
    let (status, body) = api.get(&format!("/sandboxes/{id}/sessions")).await;
    assert_eq!(status, 200, "{body}");
    let sessions = body["sessions"].as_array().unwrap();
    assert!(
        sessions.iter().any(|s| s["session_id"] == second.as_str()),
        "{body}"
    );
    for field in [
        "session_id",
        "sandbox_id",
        "command",
        "tty",
        "state",
        "exit_code",
        "signal",
        "started_at_ms",
        "ended_at_ms",
        "attached",
        "output_offset",
        "buffer_start",
        "background",
    ] {
        assert!(sessions[0].get(field).is_some(), "{field} in {body}");
    }
    let (status, body) = api.get(&format!("/sandboxes/{id}/sessions/{second}")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["state"], "running", "{body}");

    // HTTP kill: an unknown signal is refused, SIGTERM is sent
    let (status, body) = api
        .delete(&format!("/sandboxes/{id}/sessions/{second}?signal=SIGNOPE"))
        .await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = api
        .delete(&format!("/sandboxes/{id}/sessions/{second}?signal=SIGTERM"))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["session_id"], second.as_str());

    for (session, signal) in [(&first, "SIGKILL"), (&second, "SIGTERM")] {
        let path = format!("/sandboxes/{id}/sessions/{session}");
        let ended = eventually("the killed session has exited", WAIT, || async {
            let (_, body) = api.get(&path).await;
            (body["state"] == "exited").then_some(body)
        })
        .await;
        assert_eq!(ended["signal"], signal, "{ended}");
    }
    fleet.stop().await;
}

#[tokio::test]
async fn only_exec_keys_of_the_sandbox_team_open_sessions() {
    let (fleet, id) = fleet_with_sandbox(false).await;
    let (url, api) = (fleet.cp.api_url(), &fleet.api);
    api.create_team("others", json!({})).await;
    let other_team = api.team_key("others", &["read", "write", "exec"]).await;
    let read_only = api.team_key("default", &["read"]).await;

    let refused = GrpcSession::open(&url, &other_team, start(&id, "cat"))
        .await
        .err()
        .expect("another team's sandbox");
    assert_eq!(refused.code(), tonic::Code::NotFound, "{refused:?}");
    let refused = GrpcSession::open(&url, &read_only, start(&id, "cat"))
        .await
        .err()
        .expect("no exec scope");
    assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{refused:?}");
    let (status, _) = api
        .with_key(&other_team)
        .get(&format!("/sandboxes/{id}/sessions"))
        .await;
    assert_eq!(status, 404);
    let (status, _) = api
        .with_key(&read_only)
        .get(&format!("/sandboxes/{id}/sessions"))
        .await;
    assert_eq!(status, 403);
    let refused = WsClient::try_connect(&api.with_key(&other_team), &id)
        .await
        .err();
    assert_eq!(refused, Some(404), "another team's sandbox");
    // the WebSocket's key is checked before the upgrade
    let refused = WsClient::try_connect(&api.with_key(&read_only), &id)
        .await
        .err()
        .expect("refused before the upgrade");
    assert_eq!(refused, 403);
    fleet.stop().await;
}

#[tokio::test]
async fn a_session_is_audited_from_start_to_end_without_its_stdin() {
    let (fleet, id) = fleet_with_sandbox(false).await;
    let (url, key, api) = (fleet.cp.api_url(), fleet.cp.admin_key.clone(), &fleet.api);
    let secret = "hunter2-typed-into-stdin";
    let mut first = GrpcSession::open(&url, &key, start(&id, "cat"))
        .await
        .unwrap();
    first
        .send(Message::Stdin(format!("{secret}\n").into_bytes()))
        .await;
    first.read_until(secret).await;
    first.send(Message::Detach(pb::SessionDetach {})).await;
    first.drain().await.unwrap();
    let mut second = GrpcSession::open(&url, &key, attach(&id, &first.session_id, first.offset))
        .await
        .unwrap();
    second.send(Message::Eof(pb::SessionEof {})).await;
    second.drain().await.unwrap();
    let session = first.session_id.clone();

    let mut ws = WsClient::connect(api, &id).await;
    ws.send_json(json!({"command": "exit 3", "tty": true}))
        .await;
    let ws_session = ws.until_done().await.session_id;
    let _ = GrpcSession::open(&url, &key, attach(&id, "ses-nope", 0)).await;

    let records = eventually("the last record is in", WAIT, || async {
        let (_, records) = api.get("/audit").await;
        let records = records.as_array()?.clone();
        records
            .iter()
            .any(|r| {
                r["operation"] == "session end" && r["detail"] == format!("{ws_session}: exit 3")
            })
            .then_some(records)
    })
    .await;
    let sessions: Vec<(String, String, String)> = records
        .iter()
        .filter(|r| r["operation"].as_str().unwrap().starts_with("session "))
        .map(|r| {
            (
                r["operation"].as_str().unwrap().to_owned(),
                r["detail"].as_str().unwrap().to_owned(),
                r["outcome"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let expected = [
        ("session start", format!("{session}: cat"), "ok"),
        ("session detach", format!("{session}: detach"), "ok"),
        (
            "session attach",
            format!("{session}: {session} from offset {}", first.offset),
            "ok",
        ),
        ("session end", format!("{session}: exit 0"), "ok"),
        ("session start", format!("{ws_session}: exit 3 [tty]"), "ok"),
        ("session end", format!("{ws_session}: exit 3"), "ok"),
        (
            "session attach",
            "ses-nope from offset 0".to_owned(),
            "NOT_FOUND",
        ),
    ];
    let expected: Vec<(String, String, String)> = expected
        .into_iter()
        .map(|(op, detail, outcome)| (op.to_owned(), detail, outcome.to_owned()))
        .collect();
    assert_eq!(sessions, expected);
    let worker_id = &fleet.worker(0).worker_id;
    for record in records.iter().filter(|r| r["operation"] == "session start") {
        assert_eq!(record["sandbox_id"], id.as_str());
        assert_eq!(record["worker_id"], worker_id.as_str());
        assert!(record["actor"].as_str().unwrap().starts_with("key:"));
    }
    let everything = serde_json::to_string(&records).unwrap();
    assert!(
        !everything.contains(secret),
        "stdin leaked into the audit log"
    );
    let (_, verification) = api.get("/audit/verify").await;
    assert_eq!(verification["ok"], true, "{verification}");
    fleet.stop().await;
}

// ---------------------------------------------------------------- WebSocket

/// A client of the exec WebSocket.
struct WsClient {
    socket: tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
}

/// What a WebSocket run said.
#[derive(Debug, Default)]
struct WsRun {
    session_id: String,
    stdout: Vec<u8>,
    exit: Option<Value>,
    detached: Option<String>,
}

impl WsClient {
    async fn try_connect(api: &Api, sandbox_id: &str) -> Result<Self, u16> {
        let url = format!(
            "{}/sandboxes/{sandbox_id}/exec/ws",
            api.base.replacen("http://", "ws://", 1)
        );
        let mut request = url.into_client_request().unwrap();
        request
            .headers_mut()
            .insert("x-api-key", api.key.parse().unwrap());
        match tokio_tungstenite::connect_async(request).await {
            Ok((socket, _)) => Ok(Self { socket }),
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                Err(response.status().as_u16())
            }
            Err(err) => panic!("cannot connect: {err}"),
        }
    }

    async fn connect(api: &Api, sandbox_id: &str) -> Self {
        Self::try_connect(api, sandbox_id)
            .await
            .unwrap_or_else(|status| panic!("the upgrade was refused with {status}"))
    }

    async fn send_json(&mut self, frame: Value) {
        self.socket
            .send(Frame::text(frame.to_string()))
            .await
            .unwrap();
    }

    async fn next_frame(&mut self) -> Option<Frame> {
        loop {
            let frame = tokio::time::timeout(WAIT, self.socket.next())
                .await
                .expect("a frame in time")?
                .ok()?;
            if !matches!(frame, Frame::Ping(_) | Frame::Pong(_)) {
                return Some(frame);
            }
        }
    }

    async fn next_json(&mut self) -> Value {
        match self.next_frame().await {
            Some(Frame::Text(text)) => serde_json::from_str(text.as_str()).unwrap(),
            other => panic!("a text frame, not {other:?}"),
        }
    }

    async fn expect_close(&mut self) {
        match self.next_frame().await {
            None | Some(Frame::Close(_)) => {}
            other => panic!("the close, not {other:?}"),
        }
    }

    /// Reads frames until the output so far holds `text`.
    async fn read_until(&mut self, text: &str) {
        let mut output = String::new();
        while !output.contains(text) {
            let frame = self.next_json().await;
            if let Some(data) = frame["data"].as_str() {
                output.push_str(data);
            }
            assert!(frame["type"] != "done", "{text:?} never came: {output:?}");
        }
    }

    /// Reads frames up to `done` and the close, checking offsets.
    async fn until_done(&mut self) -> WsRun {
        let mut run = WsRun::default();
        let mut offset = 0;
        loop {
            let frame = self.next_json().await;
            if let Some(stream) = frame["stream"].as_str() {
                let data = match (frame["data"].as_str(), frame["data_b64"].as_str()) {
                    (Some(text), _) => text.as_bytes().to_vec(),
                    (None, Some(encoded)) => base64::engine::general_purpose::STANDARD
                        .decode(encoded)
                        .unwrap(),
                    _ => panic!("no data in {frame}"),
                };
                assert_eq!(frame["offset"], offset, "{frame}");
                assert!(frame.get("type").is_none(), "{frame}");
                offset += data.len() as u64;
                if stream == "stdout" {
                    run.stdout.extend_from_slice(&data);
                }
                continue;
            }
            match frame["type"].as_str() {
                Some("started") => {
                    run.session_id = frame["session_id"].as_str().unwrap().to_owned();
                    offset = frame["offset"].as_u64().unwrap();
                }
                Some("exit") => run.exit = Some(frame),
                Some("detached") => run.detached = frame["reason"].as_str().map(str::to_owned),
                Some("done") => break,
                _ => panic!("unexpected frame {frame}"),
            }
        }
        self.expect_close().await;
        run
    }
}

async fn websocket_runs_a_session_to_done(dial_out: bool) {
    let (fleet, id) = fleet_with_sandbox(dial_out).await;
    let api = &fleet.api;
    let mut ws = WsClient::connect(api, &id).await;
    ws.send_json(json!({"command": "cat", "tty": false})).await;
    let started = ws.next_json().await;
    assert_eq!(started["type"], "started", "{started}");
    assert_eq!(started["offset"], 0);
    let session_id = started["session_id"].as_str().unwrap().to_owned();
    // a frame the session cannot take is answered, and the session goes on
    ws.send_json(json!({"type": "launch"})).await;
    let problem = ws.next_json().await;
    assert_eq!(problem["type"], "error", "{problem}");
    assert_eq!(problem["code"], "BAD_REQUEST");
    assert_eq!(problem["fatal"], false);
    ws.send_json(json!({"type": "stdin", "data": "text\n"}))
        .await;
    ws.send_json(json!({"type": "stdin", "data_b64": "/wA="}))
        .await;
    ws.socket
        .send(Frame::binary(b"\nbinary\n".to_vec()))
        .await
        .unwrap();
    ws.send_json(json!({"type": "resize", "cols": 100, "rows": 40}))
        .await;
    ws.send_json(json!({"type": "eof"})).await;
    let mut run = ws.until_done().await;
    run.session_id = session_id;
    assert_eq!(run.stdout, b"text\n\xff\x00\nbinary\n");
    let exit = run.exit.expect("an exit frame");
    assert_eq!(exit["exit_code"], 0, "{exit}");
    assert!(exit.get("signal").is_none(), "{exit}");

    // a signal ends a command, and the exit frame names it
    let mut ws = WsClient::connect(api, &id).await;
    ws.send_json(json!({"command": "sleep 30"})).await;
    assert_eq!(ws.next_json().await["type"], "started");
    ws.send_json(json!({"type": "signal", "signal": "SIGINT"}))
        .await;
    let run = ws.until_done().await;
    let exit = run.exit.expect("an exit frame");
    assert_eq!(exit["signal"], "SIGINT", "{exit}");
    assert_eq!(exit["exit_code"], 130, "{exit}");

    // detach, then attach again over gRPC: the same session
    let mut ws = WsClient::connect(api, &id).await;
    ws.send_json(json!({"command": "cat"})).await;
    let started = ws.next_json().await;
    let session_id = started["session_id"].as_str().unwrap().to_owned();
    ws.send_json(json!({"type": "detach"})).await;
    let run = ws.until_done().await;
    assert_eq!(run.detached.as_deref(), Some("detach"));
    let mut again = GrpcSession::open(
        &fleet.cp.api_url(),
        &fleet.cp.admin_key,
        attach(&id, &session_id, 0),
    )
    .await
    .unwrap();
    again.send(Message::Stdin(b"back\n".to_vec())).await;
    again.send(Message::Eof(pb::SessionEof {})).await;
    again.drain().await.unwrap();
    assert_eq!(again.output, b"back\n");

    // attaching to a terminal session gives it the size of the client's terminal
    let mut ws = WsClient::connect(api, &id).await;
    ws.send_json(json!({"command": "sh", "tty": true, "cols": 80, "rows": 24}))
        .await;
    let started = ws.next_json().await;
    assert_eq!(started["tty"], true, "{started}");
    let session_id = started["session_id"].as_str().unwrap().to_owned();
    ws.send_json(json!({"type": "detach"})).await;
    ws.until_done().await;
    let mut ws = WsClient::connect(api, &id).await;
    ws.send_json(json!({"session_id": session_id, "offset": 0, "cols": 132, "rows": 43}))
        .await;
    assert_eq!(ws.next_json().await["type"], "started");
    ws.send_json(json!({"type": "stdin", "data": "stty size\n"}))
        .await;
    ws.read_until("43 132").await;
    ws.send_json(json!({"type": "stdin", "data": "exit 0\n"}))
        .await;
    fleet.stop().await;
}

#[tokio::test]
async fn the_websocket_refuses_a_plain_get_and_bad_request_frames_clearly() {
    let (fleet, id) = fleet_with_sandbox(false).await;
    let api = &fleet.api;

    // not an upgrade: a 4xx with the API's error body
    let (status, body) = api.get(&format!("/sandboxes/{id}/exec/ws")).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["code"], "BAD_REQUEST");
    assert!(
        body["message"].as_str().unwrap().contains("WebSocket"),
        "{body}"
    );
    let (status, _) = api
        .send(api.http.get(format!("{}/sandboxes/{id}/exec/ws", api.base)))
        .await;
    assert_eq!(status, 401, "the key first");

    for bad in [
        Frame::text("not json"),
        Frame::text(r#"{"command": "ls", "mode": "fish"}"#),
        Frame::text(r#"{"command": "ls", "timeout": "soon"}"#),
        Frame::text(r#"{"command": ""}"#),
        Frame::text(r#"{"command": "ls", "session_id": "ses-1"}"#),
        Frame::binary(b"{\"command\": \"ls\"}".to_vec()),
    ] {
        let mut ws = WsClient::connect(api, &id).await;
        ws.socket.send(bad.clone()).await.unwrap();
        let error = ws.next_json().await;
        assert_eq!(error["type"], "error", "{bad:?}: {error}");
        assert_eq!(error["code"], "BAD_REQUEST", "{bad:?}: {error}");
        assert_eq!(error["fatal"], true);
        assert!(!error["message"].as_str().unwrap().is_empty());
        ws.expect_close().await;
    }

    // an unknown sandbox is refused before the upgrade
    let refused = WsClient::try_connect(api, "sbx-nope").await.err();
    assert_eq!(refused, Some(404));
    let (status, body) = api.get("/sandboxes/sbx-nope/exec/ws").await;
    assert_eq!((status, body["code"].as_str()), (404, Some("NOT_FOUND")));

    // a frame past the size limit ends the connection rather than being buffered
    let mut ws = WsClient::connect(api, &id).await;
    ws.send_json(json!({"command": "cat"})).await;
    assert_eq!(ws.next_json().await["type"], "started");
    let _ = ws
        .socket
        .send(Frame::binary(vec![b'x'; (1 << 20) + 1]))
        .await;
    loop {
        match tokio::time::timeout(WAIT, ws.socket.next())
            .await
            .expect("the server ends the connection")
        {
            None | Some(Err(_)) | Some(Ok(Frame::Close(_))) => break,
            Some(Ok(_)) => {}
        }
    }
    // the control plane is fine
    assert_eq!(api.get(&format!("/sandboxes/{id}/sessions")).await.0, 200);
    fleet.stop().await;
}
